//! `GET /v1/namespaces/{ns}/instances/{name}/log?tail=N&follow=true`: an instance's
//! stdout and stderr as plain text. Any node answers: the node that runs the instance reads
//! its log file; another node forwards the request to it (its API address from gossip,
//! with this node's own credential) and streams the answer back.

use std::path::PathBuf;
use std::time::Duration;

use actix_web::web::{self, Bytes, Data, Path, Query};
use actix_web::HttpResponse;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::error::ApiError;
use super::ApiState;
use crate::agent::logs;
use crate::model::{Kind, Resource, Spec};
use crate::store::ObjectKey;

/// Marks a request one node forwarded to another, so it is never forwarded twice.
pub(super) const FORWARDED: &str = "x-omnicloud-forwarded";
const FOLLOW_POLL: Duration = Duration::from_millis(200);

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/namespaces/{ns}/instances/{name}/log",
        web::get().to(instance_log),
    );
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LogQuery {
    /// Only the last N lines (then follow from there).
    tail: Option<usize>,
    follow: bool,
    /// One container of a multi-container instance (default: its first).
    container: Option<String>,
}

fn streaming(rx: mpsc::Receiver<Bytes>) -> HttpResponse {
    let body = futures::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, actix_web::Error>(chunk), rx))
    });
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .streaming(body)
}

async fn instance_log(
    state: Data<ApiState>,
    path: Path<(String, String)>,
    q: Query<LogQuery>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (ns, name) = path.into_inner();
    let (object, node) = placed(&state, &ns, &name, "no logs")?;
    let container = match &object.spec {
        Some(Spec::Instance(s)) => which_container(s, q.container.as_deref(), &ns, &name)?,
        _ => None,
    };
    if node == state.node_name {
        let dir = state.data_dir.join("logs");
        let file = match &container {
            Some(c) => logs::container_log_path(&dir, &ns, &name, c),
            None => logs::log_path(&dir, &ns, &name),
        };
        return local(file, q.into_inner()).await;
    }
    let api_addr = owner_api(&state, &req, &node, &ns, &name).await?;
    let mut url = format!(
        "{}/v1/namespaces/{ns}/instances/{name}/log?follow={}",
        crate::cluster::pki::peer_api_url(&api_addr),
        q.follow
    );
    if let Some(n) = q.tail {
        url.push_str(&format!("&tail={n}"));
    }
    if let Some(c) = &container {
        url.push_str(&format!("&container={c}"));
    }
    forward(url, state.node_token.clone(), node).await
}

/// The stored instance and the node it is placed on (`what`: what the caller cannot have
/// while it is not placed, for the message).
pub(super) fn placed(
    state: &ApiState,
    ns: &str,
    name: &str,
    what: &str,
) -> Result<(Resource, String), ApiError> {
    let key = ObjectKey::new(Kind::Instance, ns.to_string(), name.to_string());
    let bytes = state
        .control
        .reader()
        .get(&key)?
        .ok_or_else(|| ApiError::not_found(format!("instance {ns}/{name} not found")))?;
    let object = serde_json::from_slice(&bytes)
        .ok()
        .and_then(|v| Resource::from_stored(v).ok())
        .ok_or_else(|| ApiError::internal("stored instance does not parse"))?;
    let node = match &object.spec {
        Some(Spec::Instance(s)) => s.node_name.clone(),
        _ => None,
    }
    .ok_or_else(|| {
        ApiError::bad_request(format!(
            "instance {ns}/{name} is not placed on a node yet: {what}"
        ))
    })?;
    Ok((object, node))
}

/// The API address of `node`, which runs `ns/name`, for a request to forward there
/// (refused when the request was already forwarded once).
pub(super) async fn owner_api(
    state: &ApiState,
    req: &actix_web::HttpRequest,
    node: &str,
    ns: &str,
    name: &str,
) -> Result<String, ApiError> {
    if req.headers().contains_key(FORWARDED) {
        return Err(ApiError::not_found(format!(
            "instance {ns}/{name} does not run on node {}",
            state.node_name
        )));
    }
    let owner = state
        .gossip
        .members()
        .await
        .into_iter()
        .find(|m| m.meta.name == node)
        .ok_or_else(|| {
            ApiError::new(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                format!("node {node}, which runs {ns}/{name}, is not a known member"),
            )
        })?;
    Ok(owner.meta.api_addr.to_string())
}

fn which_container(
    spec: &crate::model::InstanceSpec,
    asked: Option<&str>,
    ns: &str,
    name: &str,
) -> Result<Option<String>, ApiError> {
    let names: Vec<&str> = (spec.pod.containers_with_paths(""))
        .map(|(_, c)| c.name.as_str())
        .collect();
    let pod = crate::agent::translate::is_pod(spec);
    match asked {
        Some(c) if !names.contains(&c) => Err(ApiError::bad_request(format!(
            "container: instance {ns}/{name} has no container \"{c}\" (it has: {})",
            names.join(", ")
        ))),
        _ if !pod => Ok(None),
        Some(c) => Ok(Some(c.to_string())),
        None => Ok(spec.pod.containers.first().map(|c| c.name.clone())),
    }
}

async fn local(file: PathBuf, q: LogQuery) -> Result<HttpResponse, ApiError> {
    let path = file.clone();
    let (head, offset) = tokio::task::spawn_blocking(move || logs::tail(&path, q.tail))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                ApiError::not_found("the instance has not written a log yet")
            }
            _ => ApiError::internal(format!("reading {}: {e}", file.display())),
        })?;
    if !q.follow {
        return Ok(HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(head));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        if tx.send(Bytes::from(head)).await.is_err() {
            return;
        }
        let mut offset = offset;
        loop {
            tokio::time::sleep(FOLLOW_POLL).await;
            if tx.is_closed() {
                return;
            }
            let path = file.clone();
            let read = tokio::task::spawn_blocking(move || logs::read_from(&path, offset)).await;
            match read {
                Ok(Ok((bytes, next))) => {
                    offset = next;
                    if !bytes.is_empty() && tx.send(Bytes::from(bytes)).await.is_err() {
                        return;
                    }
                }
                // The instance (and its log) was removed: the stream ends.
                _ => return,
            }
        }
    });
    Ok(streaming(rx))
}

async fn forward(url: String, token: String, node: String) -> Result<HttpResponse, ApiError> {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<Result<(), ApiError>>();
    tokio::task::spawn_blocking(move || {
        let builder = ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(5));
        let response = crate::cluster::pki::peer_agent(builder)
            .get(&url)
            .set("Authorization", &format!("Bearer {token}"))
            .set(FORWARDED, "1")
            .call();
        let reader = match response {
            Ok(r) => r.into_reader(),
            Err(ureq::Error::Status(code, r)) => {
                let body: serde_json::Value = r.into_json().unwrap_or_default();
                let msg = body["message"].as_str().unwrap_or("").to_string();
                let status = actix_web::http::StatusCode::from_u16(code)
                    .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
                let _ = first_tx.send(Err(ApiError::new(status, "Forwarded", msg)));
                return;
            }
            Err(e) => {
                let _ = first_tx.send(Err(ApiError::new(
                    actix_web::http::StatusCode::BAD_GATEWAY,
                    "Unavailable",
                    format!("node {node} did not answer: {e}"),
                )));
                return;
            }
        };
        let _ = first_tx.send(Ok(()));
        let mut reader = reader;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match std::io::Read::read(&mut reader, &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                        return;
                    }
                }
            }
        }
    });
    first_rx
        .await
        .map_err(|_| ApiError::internal("log forwarding ended early"))??;
    Ok(streaming(rx))
}
