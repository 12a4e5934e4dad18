//! Resource routes: parse the request into a `Command` (or a read), hand it on, shape the
//! answer. Paths follow Kubernetes: `/v1/{plural}[/{name}]` for cluster-scoped kinds (and
//! cross-namespace lists), `/v1/namespaces/{ns}/{plural}[/{name}[/scale]]` for namespaced.

use actix_web::http::StatusCode;
use actix_web::web::{self, Data, Path, Payload, Query};
use actix_web::{HttpRequest, HttpResponse};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, ApiState};
use crate::auth::Attributes;
use crate::model::{self, Kind, Resource};
use crate::store::state_machine::DEFAULT_NAMESPACE;
use crate::store::{Applied, ChangeType, Command, ObjectKey, PutMode};

pub fn routes(cfg: &mut web::ServiceConfig) {
    // Namespaced paths carry `{ns}`; the short forms take `?namespace=` (default: default,
    // and for lists: all namespaces).
    cfg.route("/version", web::get().to(version))
        .route("/apply", web::post().to(apply))
        .route(
            "/namespaces/{ns}/{plural}/{name}/scale",
            web::get().to(get_scale),
        )
        .route(
            "/namespaces/{ns}/{plural}/{name}/scale",
            web::put().to(put_scale),
        );
    for prefix in ["/namespaces/{ns}", ""] {
        cfg.route(&format!("{prefix}/{{plural}}"), web::get().to(list_handler))
            .route(
                &format!("{prefix}/{{plural}}"),
                web::post().to(create_handler),
            )
            .route(
                &format!("{prefix}/{{plural}}/{{name}}"),
                web::get().to(get_handler),
            )
            .route(
                &format!("{prefix}/{{plural}}/{{name}}"),
                web::put().to(replace_handler),
            )
            .route(
                &format!("{prefix}/{{plural}}/{{name}}"),
                web::delete().to(delete_handler),
            );
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct ReadQuery {
    /// kubectl-style selector, e.g. `app=web,tier!=db`.
    label_selector: Option<String>,
    /// Read through the leader (linearizable) instead of this node's state.
    consistent: bool,
    /// Default namespace for `apply` documents without one.
    namespace: Option<String>,
    /// Precondition for delete.
    resource_version: Option<u64>,
}

async fn version(state: Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "node": state.node_name,
        "nodeId": state.control.node_id.to_string(),
        "uptimeSeconds": state.started.elapsed().as_secs(),
    }))
}

fn parse_kind(plural: &str) -> Result<Kind, ApiError> {
    Kind::parse(plural).ok_or_else(|| {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.plural()).collect();
        ApiError::not_found(format!(
            "unknown resource type \"{plural}\"; known: {}",
            known.join(", ")
        ))
    })
}

/// Reads the body, refusing more than the configured limit with 413.
async fn read_body(mut payload: Payload, limit: usize) -> Result<String, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "TooLarge",
            format!("request body is larger than the limit of {limit} bytes (api.max_body_bytes)"),
        )
    };
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match &e {
            actix_web::error::PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                ApiError::new(StatusCode::REQUEST_TIMEOUT, "Timeout", io.to_string())
            }
            _ => ApiError::bad_request(format!("reading body: {e}")),
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body.to_vec()).map_err(|_| ApiError::bad_request("request body is not UTF-8"))
}

/// Where a parsed object goes: fills in the namespace and checks it against the URL.
fn place(resource: &mut Resource, url_namespace: Option<&str>) -> Result<ObjectKey, ApiError> {
    let kind = resource.kind;
    if kind.namespaced() {
        let ns = match (&resource.metadata.namespace, url_namespace) {
            (Some(body), Some(url)) if body != url => {
                return Err(ApiError::invalid(
                    "metadata.namespace",
                    format!(
                        "\"{body}\" does not match the namespace \"{url}\" in the request path"
                    ),
                ))
            }
            (Some(body), _) => body.clone(),
            (None, Some(url)) => url.to_string(),
            (None, None) => DEFAULT_NAMESPACE.to_string(),
        };
        model::validate_name("metadata.namespace", &ns)?;
        resource.metadata.namespace = Some(ns.clone());
        Ok(ObjectKey::new(kind, ns, resource.metadata.name.clone()))
    } else {
        if resource.metadata.namespace.is_some() {
            return Err(ApiError::invalid(
                "metadata.namespace",
                format!("{kind} is cluster-scoped and takes no namespace"),
            ));
        }
        Ok(ObjectKey::new(kind, "", resource.metadata.name.clone()))
    }
}

/// The handler's own check of an object whose place came from the body.
fn may(state: &ApiState, req: &HttpRequest, verb: &str, key: &ObjectKey) -> Result<(), ApiError> {
    let a = Attributes::object(verb, key.kind, &key.namespace, Some(&key.name));
    super::access::authorize_object(state, req, &a)
}

fn expected_version(resource: &Resource) -> Result<Option<u64>, ApiError> {
    let rv = &resource.metadata.resource_version;
    if rv.is_empty() {
        return Ok(None);
    }
    rv.parse().map(Some).map_err(|_| {
        ApiError::invalid(
            "metadata.resourceVersion",
            format!("\"{rv}\" is not a resource version (a number)"),
        )
    })
}

pub(super) fn put_command(
    resource: &Resource,
    key: ObjectKey,
    mode: PutMode,
) -> Result<Command, ApiError> {
    Ok(Command::put(
        key,
        &resource.to_value(),
        mode,
        expected_version(resource)?,
    ))
}

/// Proposes `cmd` and turns a rejection into its HTTP error.
async fn submit(state: &ApiState, cmd: Command) -> Result<Vec<Applied>, ApiError> {
    let result = state.control.write(cmd).await?;
    match result.rejection {
        Some(r) => Err(r.into()),
        None => Ok(result.applied),
    }
}

fn object_response(status: StatusCode, bytes: &[u8]) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(bytes.to_vec())
}

/// Longest a body may take to parse. Parsing is linear in the body (nesting and aliases
/// are bounded before it starts), so this only fires under extreme load; it keeps a
/// request from holding its caller forever all the same.
const PARSE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Parses and validates a body on the blocking pool, not on the request worker (the API
/// has few workers, and a slow parse there would stall every other request).
async fn parse(body: String) -> Result<Vec<Resource>, ApiError> {
    let parsing = web::block(move || model::parse_manifests(&body));
    match tokio::time::timeout(PARSE_DEADLINE, parsing).await {
        Ok(Ok(parsed)) => Ok(parsed?),
        Ok(Err(e)) => Err(ApiError::internal(format!("parsing the body: {e}"))),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Timeout",
            format!(
                "parsing the body took longer than {}s; the node is overloaded or the manifest is too complex",
                PARSE_DEADLINE.as_secs()
            ),
        )),
    }
}

async fn single_document(body: String) -> Result<Resource, ApiError> {
    let mut docs = parse(body).await?;
    if docs.len() != 1 {
        return Err(ApiError::bad_request(format!(
            "expected exactly one object, got {}; use POST /v1/apply for several",
            docs.len()
        )));
    }
    Ok(docs.remove(0))
}

async fn create(
    state: &ApiState,
    req: &HttpRequest,
    kind: Kind,
    ns: Option<&str>,
    body: String,
) -> Result<HttpResponse, ApiError> {
    let mut resource = single_document(body).await?;
    if resource.kind != kind {
        return Err(ApiError::invalid(
            "kind",
            format!("{} posted to {}", resource.kind, kind.plural()),
        ));
    }
    let key = place(&mut resource, ns)?;
    may(state, req, "create", &key)?;
    let applied = super::services::submit_puts(
        state,
        vec![(resource, key)],
        PutMode::Create,
        false,
        |e, _| e,
    )
    .await?;
    Ok(object_response(StatusCode::CREATED, &applied[0].object))
}

async fn replace(
    state: &ApiState,
    req: &HttpRequest,
    kind: Kind,
    ns: Option<&str>,
    name: &str,
    body: String,
) -> Result<HttpResponse, ApiError> {
    let mut resource = single_document(body).await?;
    if resource.kind != kind {
        return Err(ApiError::invalid(
            "kind",
            format!("{} sent to {}", resource.kind, kind.plural()),
        ));
    }
    if resource.metadata.name != name {
        return Err(ApiError::invalid(
            "metadata.name",
            format!(
                "\"{}\" does not match \"{name}\" in the request path",
                resource.metadata.name
            ),
        ));
    }
    let key = place(&mut resource, ns)?;
    may(state, req, "update", &key)?;
    let applied = super::services::submit_puts(
        state,
        vec![(resource, key)],
        PutMode::Update,
        false,
        |e, _| e,
    )
    .await?;
    Ok(object_response(StatusCode::OK, &applied[0].object))
}

async fn get(state: &ApiState, key: ObjectKey, q: &ReadQuery) -> Result<HttpResponse, ApiError> {
    if q.consistent {
        state.control.read_barrier().await?;
    }
    match state.control.reader().get(&key)? {
        Some(bytes) => Ok(object_response(StatusCode::OK, &bytes)),
        None => Err(ApiError::not_found(format!("{key} not found"))),
    }
}

async fn list(
    state: &ApiState,
    kind: Kind,
    ns: Option<&str>,
    q: &ReadQuery,
) -> Result<HttpResponse, ApiError> {
    if q.consistent {
        state.control.read_barrier().await?;
    }
    let selector = match q.label_selector.as_deref() {
        Some(s) if !s.is_empty() => Some(model::parse_label_selector(s)?),
        _ => None,
    };
    let (objects, revision) = state.control.reader().list(kind, ns)?;
    let mut items = Vec::with_capacity(objects.len());
    for bytes in objects {
        let object: Value =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::internal(e.to_string()))?;
        if let Some(sel) = &selector {
            if !model::selector_matches(sel, &labels_of(&object)) {
                continue;
            }
        }
        items.push(object);
    }
    Ok(HttpResponse::Ok().json(json!({
        "apiVersion": model::API_VERSION,
        "kind": format!("{}List", kind.as_str()),
        "metadata": {"revision": revision.to_string()},
        "items": items,
    })))
}

pub(super) fn labels_of(object: &Value) -> std::collections::BTreeMap<String, String> {
    object["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

async fn delete(state: &ApiState, key: ObjectKey, q: &ReadQuery) -> Result<HttpResponse, ApiError> {
    let applied = submit(
        state,
        Command::Delete {
            key: key.clone(),
            expected_version: q.resource_version,
        },
    )
    .await?;
    let last = applied
        .iter()
        .rev()
        .find(|a| a.key == key)
        .expect("delete reports the deleted object");
    Ok(object_response(StatusCode::OK, &last.object))
}

/// What a resource path names: the kind, the namespace (from the path, else the query)
/// and, for object paths, the name.
struct Target {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
}

impl Target {
    fn from(req: &HttpRequest, q: &ReadQuery) -> Result<Target, ApiError> {
        let path = req.match_info();
        Ok(Target {
            kind: parse_kind(path.get("plural").unwrap_or_default())?,
            namespace: path
                .get("ns")
                .map(str::to_string)
                .or_else(|| q.namespace.clone()),
            name: path.get("name").map(str::to_string),
        })
    }

    fn key(&self) -> ObjectKey {
        let ns = self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
        ObjectKey::new(self.kind, ns, self.name.clone().unwrap_or_default())
    }
}

async fn list_handler(
    state: Data<ApiState>,
    req: HttpRequest,
    q: Query<ReadQuery>,
) -> Result<HttpResponse, ApiError> {
    let t = Target::from(&req, &q)?;
    list(&state, t.kind, t.namespace.as_deref(), &q).await
}

async fn create_handler(
    state: Data<ApiState>,
    req: HttpRequest,
    q: Query<ReadQuery>,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    let t = Target::from(&req, &q)?;
    let body = read_body(payload, state.max_body_bytes).await?;
    create(&state, &req, t.kind, t.namespace.as_deref(), body).await
}

async fn get_handler(
    state: Data<ApiState>,
    req: HttpRequest,
    q: Query<ReadQuery>,
) -> Result<HttpResponse, ApiError> {
    get(&state, Target::from(&req, &q)?.key(), &q).await
}

async fn replace_handler(
    state: Data<ApiState>,
    req: HttpRequest,
    q: Query<ReadQuery>,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    let t = Target::from(&req, &q)?;
    let body = read_body(payload, state.max_body_bytes).await?;
    replace(
        &state,
        &req,
        t.kind,
        t.namespace.as_deref(),
        t.name.as_deref().unwrap_or_default(),
        body,
    )
    .await
}

async fn delete_handler(
    state: Data<ApiState>,
    req: HttpRequest,
    q: Query<ReadQuery>,
) -> Result<HttpResponse, ApiError> {
    delete(&state, Target::from(&req, &q)?.key(), &q).await
}

fn scale_body(object: &Value) -> Value {
    json!({
        "apiVersion": model::API_VERSION,
        "kind": "Scale",
        "metadata": {
            "name": object["metadata"]["name"],
            "namespace": object["metadata"]["namespace"],
            "resourceVersion": object["metadata"]["resourceVersion"],
        },
        "spec": {"replicas": object["spec"]["replicas"]},
        "status": {"replicas": object["status"]["replicas"]},
    })
}

async fn get_scale(
    state: Data<ApiState>,
    path: Path<(String, String, String)>,
    q: Query<ReadQuery>,
) -> Result<HttpResponse, ApiError> {
    let (ns, plural, name) = path.into_inner();
    let key = ObjectKey::new(parse_kind(&plural)?, ns, name);
    if q.consistent {
        state.control.read_barrier().await?;
    }
    let bytes = state
        .control
        .reader()
        .get(&key)?
        .ok_or_else(|| ApiError::not_found(format!("{key} not found")))?;
    let object: Value =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(HttpResponse::Ok().json(scale_body(&object)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleRequest {
    spec: ScaleSpec,
    #[serde(default)]
    metadata: Option<ScaleMeta>,
    #[serde(default, rename = "apiVersion")]
    _api_version: Option<String>,
    #[serde(default, rename = "kind")]
    _kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleSpec {
    replicas: i64,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ScaleMeta {
    #[serde(default)]
    resource_version: Option<String>,
}

async fn put_scale(
    state: Data<ApiState>,
    path: Path<(String, String, String)>,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    let (ns, plural, name) = path.into_inner();
    let kind = parse_kind(&plural)?;
    if !kind.has_replicas() {
        return Err(ApiError::not_found(format!(
            "{} has no scale subresource",
            kind.plural()
        )));
    }
    let body = read_body(payload, state.max_body_bytes).await?;
    let de = &mut serde_json::Deserializer::from_str(&body);
    let req: ScaleRequest = serde_path_to_error::deserialize(de)
        .map_err(|e| ApiError::invalid(&e.path().to_string(), e.inner().to_string()))?;
    model::limits::range(
        "spec.replicas",
        req.spec.replicas,
        0,
        model::limits::MAX_REPLICAS,
    )?;
    let expected_version = match req.metadata.and_then(|m| m.resource_version) {
        Some(rv) => Some(rv.parse().map_err(|_| {
            ApiError::invalid(
                "metadata.resourceVersion",
                format!("\"{rv}\" is not a resource version (a number)"),
            )
        })?),
        None => None,
    };
    let key = ObjectKey::new(kind, ns, name);
    let applied = submit(
        &state,
        Command::Scale {
            key,
            replicas: req.spec.replicas,
            expected_version,
        },
    )
    .await?;
    let object: Value = serde_json::from_slice(&applied[0].object)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(HttpResponse::Ok().json(scale_body(&object)))
}

/// Create-or-update of every document in the body, in one Raft entry: all or nothing.
async fn apply(
    state: Data<ApiState>,
    req: HttpRequest,
    q: Query<ReadQuery>,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, state.max_body_bytes).await?;
    let resources = parse(body).await?;
    if resources.is_empty() {
        return Err(ApiError::bad_request("the request holds no objects"));
    }
    let mut items = Vec::with_capacity(resources.len());
    let mut warnings = Vec::new();
    for (i, mut resource) in resources.into_iter().enumerate() {
        let key = place(&mut resource, q.namespace.as_deref()).map_err(|e| in_document(e, i))?;
        // Apply creates what is absent and updates what is there.
        let verb = if state.control.reader().get(&key)?.is_some() {
            "update"
        } else {
            "create"
        };
        may(&state, &req, verb, &key).map_err(|e| in_document(e, i))?;
        let mut said = resource.warnings();
        if resource.kind == Kind::Namespace {
            said.extend(super::pod_security::relabel_warnings(&state, &resource));
        }
        warnings.push((key.clone(), said));
        items.push((resource, key));
    }
    let applied =
        super::services::submit_puts(&state, items, PutMode::Apply, true, in_document).await?;
    let items: Vec<Value> = applied
        .iter()
        .map(|a| {
            let action = match a.change {
                ChangeType::Added => "created",
                ChangeType::Modified => "configured",
                ChangeType::Unchanged => "unchanged",
                ChangeType::Deleted => "deleted",
            };
            let mut item = json!({
                "kind": a.key.kind.as_str(),
                "namespace": a.key.namespace,
                "name": a.key.name,
                "action": action,
                "resourceVersion": a.revision.to_string(),
            });
            let said = warnings.iter().find(|(k, _)| *k == a.key).map(|(_, w)| w);
            if let Some(w) = said.filter(|w| !w.is_empty()) {
                item["warnings"] = json!(w);
            }
            item
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

fn in_document(mut e: ApiError, index: usize) -> ApiError {
    e.message = format!("document {}: {}", index + 1, e.message);
    e
}
