//! The HTTP API (actix-web), served by every node on `--api-port`:
//!
//! - `/v1/...` resources: list, get, create, replace, delete, the `scale` subresource,
//!   multi-document `apply`, and `watch` (newline-delimited JSON). Bearer token required:
//!   every request passes `access::check` (authentication, per-user rate limit, RBAC,
//!   audit) before its handler.
//! - `/v1/auth/tokens`, `/v1/auth/whoami`, `/v1/audit`: users' tokens and the audit log.
//! - `/v1/nodes`, `/v1/cluster/status`: membership and the Raft group.
//! - `/healthz`, `/readyz`, `/metrics`: open, for probes and Prometheus.
//! - `/ui/`: the web dashboard (embedded static files; it logs in with the API token).
//!
//! Handlers parse and validate, build a `store::Command` and hand it to the
//! `ControlPlane`; they hold no logic of their own.
//! Threads: actix workers. May call: `model`, `store` (reads, command types), `orchestrator`.

mod access;
mod auth;
mod claims;
mod cluster;
mod dashboard;
pub mod error;
pub mod exec;
mod host_metrics;
mod logs;
pub mod metrics;
mod pod_security;
mod registry;
mod resources;
mod scrape;
mod services;
pub mod tls;
mod watch;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::web::{self, Data};
use actix_web::{App, Error, HttpResponse, HttpServer, ResponseError};

pub use error::ApiError;
pub use metrics::ApiMetrics;

use crate::cluster::transport::TransportStats;
use crate::cluster::Gossip;
use crate::orchestrator::voters::VoterPolicy;
use crate::orchestrator::ControlPlane;

/// Everything handlers need, shared by all workers.
pub struct ApiState {
    pub control: ControlPlane,
    pub gossip: Gossip,
    pub policy: VoterPolicy,
    pub rpc_stats: Arc<TransportStats>,
    /// The cluster this node belongs to (shown in `/v1/cluster/status`).
    pub cluster: crate::cluster::ClusterId,
    /// Decides who is calling and what they may do.
    pub auth: crate::auth::Authorizer,
    pub limiter: crate::auth::limit::RateLimiter,
    pub audit: crate::auth::audit::AuditLog,
    /// This node's own credential, for the requests it forwards to other nodes.
    pub node_token: String,
    pub metrics: ApiMetrics,
    pub max_body_bytes: usize,
    /// Where Services' cluster IPs and node ports are allocated from.
    pub services: crate::model::service::ServiceRanges,
    /// The Pod Security level of a namespace without the enforce label.
    pub pod_security_default: crate::model::pod_security::Level,
    pub node_name: String,
    /// The node's data dir (instance logs live under it).
    pub data_dir: std::path::PathBuf,
    pub started: Instant,
}

/// Starts serving on an already-bound listener; the returned server runs until stopped.
/// With `tls`, HTTPS only: see [`tls`] (plain HTTP gets a refusal).
pub async fn serve(
    listener: TcpListener,
    state: Data<ApiState>,
    workers: usize,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<Server> {
    let clients = tls::Clients::default();
    let app_clients = Data::new(clients.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(app_clients.clone())
            .wrap(from_fn(body_deadline))
            .wrap(from_fn(access::check))
            .wrap(from_fn(metrics::track))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics::metrics))
            .configure(dashboard::routes)
            .service(
                web::scope("/v1")
                    .configure(auth::routes)
                    .configure(watch::routes)
                    .configure(cluster::routes)
                    .configure(logs::routes)
                    .configure(exec::routes)
                    .configure(scrape::routes)
                    .configure(claims::routes)
                    .configure(registry::routes)
                    .configure(resources::routes),
            )
            .default_service(web::to(|| async {
                ApiError::not_found(
                    "no such route; the API lives under /v1/, the dashboard under /ui/",
                )
                .error_response()
            }))
    })
    .workers(workers)
    .disable_signals()
    .shutdown_timeout(5);
    let server = match tls {
        None => server.listen(listener)?,
        Some(config) => {
            let inner = TcpListener::bind("127.0.0.1:0")?;
            let inner_addr = inner.local_addr()?;
            listener.set_nonblocking(true)?;
            tls::front(
                tokio::net::TcpListener::from_std(listener)?,
                inner_addr,
                clients,
            );
            // actix's default (3 s) closed handshakes on a busy 2-core node.
            server
                .tls_handshake_timeout(Duration::from_secs(10))
                .listen_rustls_0_23(inner, (*config).clone())?
        }
    };
    Ok(server.run())
}

/// A request body must arrive whole within this (registry blob uploads: [`BLOB_TIMEOUT`]),
/// and no gap between two chunks may exceed [`BODY_IDLE`]: a slow body is not held forever.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);
pub const BLOB_TIMEOUT: Duration = Duration::from_secs(600);
pub const BODY_IDLE: Duration = Duration::from_secs(15);

/// Wraps the request body in the deadlines above; a body that misses one ends in an error
/// the handler reports (the request fails, the worker is free again).
async fn body_deadline(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    use actix_web::error::PayloadError;
    use actix_web::HttpMessage;
    use futures::StreamExt;
    // An exec's WebSocket stays open as long as its command runs.
    let exec = req.match_pattern().is_some_and(|p| p.ends_with("/exec"));
    let whole = match req.match_pattern() {
        _ if exec => Duration::MAX,
        Some(p) if p.contains("/registry/") => BLOB_TIMEOUT,
        _ => BODY_TIMEOUT,
    };
    let deadline = tokio::time::Instant::now() + whole.min(BLOB_TIMEOUT);
    let payload = req.take_payload();
    let timed = futures::stream::unfold(Some(payload), move |state| async move {
        let mut payload = state?;
        if exec {
            return payload.next().await.map(|item| (item, Some(payload)));
        }
        let idle = (tokio::time::Instant::now() + BODY_IDLE).min(deadline);
        match tokio::time::timeout_at(idle, payload.next()).await {
            Ok(Some(item)) => Some((item, Some(payload))),
            Ok(None) => None,
            Err(_) => {
                let why = format!(
                    "the request body did not arrive in time (whole body within {}s, no pause over {}s)",
                    whole.as_secs(),
                    BODY_IDLE.as_secs()
                );
                let err = std::io::Error::new(std::io::ErrorKind::TimedOut, why);
                Some((Err(PayloadError::Io(err)), None))
            }
        }
    });
    type Boxed =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<actix_web::web::Bytes, PayloadError>>>>;
    let boxed: Boxed = Box::pin(timed);
    req.set_payload(actix_web::dev::Payload::from(boxed));
    next.call(req).await
}

/// Paths served without a token: probes, Prometheus and the dashboard's static files.
/// Compared with the raw request path, byte for byte: a percent-encoded spelling of one of
/// them is not open (it needs the token), and nothing else is.
fn is_open(method: &actix_web::http::Method, raw_path: &str) -> bool {
    const PROBES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];
    (method == actix_web::http::Method::GET || method == actix_web::http::Method::HEAD)
        && (PROBES.contains(&raw_path) || dashboard::OPEN_PATHS.contains(&raw_path))
}

/// Live unless Raft has stopped for good on this node (its storage failed, as when the
/// disk is full): then the node must be restarted, and says why.
async fn healthz(state: Data<ApiState>) -> HttpResponse {
    let m = state.control.raft.metrics().borrow().clone();
    match &m.running_state {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({"status": "ok"})),
        Err(fatal) => HttpResponse::ServiceUnavailable().json(serde_json::json!({
            "status": "failed",
            "reason": format!("raft stopped: {fatal}"),
        })),
    }
}

/// Ready when Raft runs, a leader is known and this node's state machine has applied
/// something.
async fn readyz(state: Data<ApiState>) -> HttpResponse {
    let m = state.control.raft.metrics().borrow().clone();
    let failed = m
        .running_state
        .as_ref()
        .err()
        .map(|f| format!("raft stopped: {f}"));
    let ready = failed.is_none() && m.current_leader.is_some() && m.last_applied.is_some();
    let body = serde_json::json!({
        "ready": ready,
        "leader": m.current_leader,
        "term": m.current_term,
        "lastApplied": m.last_applied.map(|l| l.index),
        "reason": failed,
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
