//! `GET /v1/namespaces/NS/instances/NAME/scrape?port=P&path=/metrics`: a workload's
//! Prometheus endpoint, fetched by the node that runs the instance. Instance addresses are
//! routed only on their own node, so the Raft leader's autoscaler reads the custom metrics
//! of instances elsewhere through their node's API.

use actix_web::web::{self, Data, Path, Query};
use actix_web::HttpResponse;
use serde::Deserialize;

use super::{ApiError, ApiState};
use crate::model::{Kind, Resource, Spec};
use crate::store::ObjectKey;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/namespaces/{ns}/instances/{name}/scrape",
        web::get().to(scrape),
    );
}

#[derive(Deserialize)]
struct ScrapeQuery {
    port: u16,
    #[serde(default = "default_path")]
    path: String,
}

fn default_path() -> String {
    "/metrics".into()
}

async fn scrape(
    state: Data<ApiState>,
    path: Path<(String, String)>,
    q: Query<ScrapeQuery>,
) -> Result<HttpResponse, ApiError> {
    let (ns, name) = path.into_inner();
    if !q.path.starts_with('/') {
        return Err(ApiError::bad_request(format!(
            "path: \"{}\" must start with /",
            q.path
        )));
    }
    let key = ObjectKey::new(Kind::Instance, ns.clone(), name.clone());
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
        Some(Spec::Instance(s)) => s.node_name.clone().unwrap_or_default(),
        _ => String::new(),
    };
    if node != state.node_name {
        return Err(ApiError::not_found(format!(
            "instance {ns}/{name} does not run on node {}",
            state.node_name
        )));
    }
    let ip = object
        .status
        .as_ref()
        .and_then(|s| s["ip"].as_str().map(str::to_string))
        .filter(|ip| !ip.is_empty())
        .ok_or_else(|| ApiError::not_found(format!("instance {ns}/{name} has no address yet")))?;
    let url = format!("http://{ip}:{}{}", q.port, q.path);
    let text = tokio::task::spawn_blocking(move || {
        ureq::get(&url)
            .timeout(std::time::Duration::from_secs(2))
            .call()
            .map_err(|e| format!("scraping {url}: {e}"))?
            .into_string()
            .map_err(|e| format!("reading {url}: {e}"))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::new(actix_web::http::StatusCode::BAD_GATEWAY, "BadGateway", e))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text))
}
