//! Prometheus metrics (OpenMetrics text at `/metrics`): API requests by route, method and
//! status, latency histograms by route, and Raft health read from openraft at scrape time.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::{Error, HttpResponse};
use openraft::ServerState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::ApiState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

pub struct ApiMetrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    raft_term: Gauge,
    raft_commit_index: Gauge,
    raft_last_applied: Gauge,
    raft_last_log_index: Gauge,
    raft_snapshot_index: Gauge,
    raft_purged_index: Gauge,
    raft_is_leader: Gauge,
    /// f64: node ids are 64-bit, and an integer gauge printed the upper half negative.
    raft_leader_id: Gauge<f64, AtomicU64>,
    raft_voters: Gauge,
    gossip_members: Family<StatusLabels, Gauge>,
    gossip_rejected: Gauge<u64, AtomicU64>,
    gossip_packets_in: Gauge<u64, AtomicU64>,
    rpc_rejected: Gauge<u64, AtomicU64>,
    host: super::host_metrics::HostMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: &'static str,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ApiMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ])
        });
        registry.register(
            "api_requests",
            "API requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "api_request_duration_seconds",
            "API request latency by route",
            latency.clone(),
        );
        let host = super::host_metrics::HostMetrics::new(&mut registry);
        let m = ApiMetrics {
            registry: Mutex::new(registry),
            requests,
            latency,
            raft_term: Gauge::default(),
            raft_commit_index: Gauge::default(),
            raft_last_applied: Gauge::default(),
            raft_last_log_index: Gauge::default(),
            raft_snapshot_index: Gauge::default(),
            raft_purged_index: Gauge::default(),
            raft_is_leader: Gauge::default(),
            raft_leader_id: Gauge::default(),
            raft_voters: Gauge::default(),
            gossip_members: Family::default(),
            gossip_rejected: Gauge::default(),
            gossip_packets_in: Gauge::default(),
            rpc_rejected: Gauge::default(),
            host,
        };
        {
            let mut r = m.registry.lock().unwrap();
            r.register("raft_term", "Current Raft term", m.raft_term.clone());
            r.register(
                "raft_commit_index",
                "Highest committed log index",
                m.raft_commit_index.clone(),
            );
            r.register(
                "raft_last_applied",
                "Last log index applied to the state machine",
                m.raft_last_applied.clone(),
            );
            r.register(
                "raft_last_log_index",
                "Last log index in this node's log",
                m.raft_last_log_index.clone(),
            );
            r.register(
                "raft_snapshot_index",
                "Last log index in the current snapshot",
                m.raft_snapshot_index.clone(),
            );
            r.register(
                "raft_purged_index",
                "Last log index removed by compaction",
                m.raft_purged_index.clone(),
            );
            r.register(
                "raft_is_leader",
                "1 if this node is the Raft leader",
                m.raft_is_leader.clone(),
            );
            r.register(
                "raft_leader_id",
                "Node id of the current leader (0 if none; a float, so the last digits are rounded)",
                m.raft_leader_id.clone(),
            );
            r.register(
                "raft_voters",
                "Voters in the current Raft membership",
                m.raft_voters.clone(),
            );
            r.register(
                "gossip_members",
                "Gossip members by status, self included",
                m.gossip_members.clone(),
            );
            r.register(
                "gossip_rejected_packets",
                "Gossip datagrams dropped for a bad tag (wrong join token)",
                m.gossip_rejected.clone(),
            );
            r.register(
                "gossip_packets_in",
                "Gossip datagrams received",
                m.gossip_packets_in.clone(),
            );
            r.register(
                "rpc_rejected_frames",
                "Internal RPC frames that failed authentication (wrong join token)",
                m.rpc_rejected.clone(),
            );
        }
        m
    }

    /// Lets other subsystems register their metrics in the same exposition.
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self.registry.lock().unwrap())
    }

    fn observe(&self, route: String, method: String, status: u16, seconds: f64) {
        self.latency
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .observe(seconds);
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
    }

    fn refresh_raft(&self, state: &ApiState) {
        let m = state.control.raft.metrics().borrow().clone();
        self.raft_term.set(m.current_term as i64);
        self.raft_last_applied
            .set(m.last_applied.map(|l| l.index as i64).unwrap_or(0));
        // openraft 0.9 does not report the commit index; everything applied is committed and
        // the state machine applies as soon as the leader's commit reaches this node.
        let committed = m.last_applied.map(|l| l.index).unwrap_or(0);
        self.raft_commit_index.set(committed as i64);
        self.raft_last_log_index
            .set(m.last_log_index.unwrap_or(0) as i64);
        self.raft_snapshot_index
            .set(m.snapshot.map(|l| l.index as i64).unwrap_or(0));
        self.raft_purged_index
            .set(m.purged.map(|l| l.index as i64).unwrap_or(0));
        self.raft_is_leader
            .set((m.state == ServerState::Leader) as i64);
        self.raft_leader_id
            .set(m.current_leader.unwrap_or(0) as f64);
        self.raft_voters
            .set(m.membership_config.membership().voter_ids().count() as i64);
    }

    fn refresh_cluster(&self, state: &ApiState) {
        use crate::cluster::GossipStats;
        let g = state.gossip.stats();
        for (status, counter) in [
            ("alive", &g.members_alive),
            ("suspect", &g.members_suspect),
            ("down", &g.members_down),
        ] {
            self.gossip_members
                .get_or_create(&StatusLabels { status })
                .set(GossipStats::get(counter) as i64);
        }
        self.gossip_rejected
            .set(GossipStats::get(&g.rejected_packets));
        self.gossip_packets_in.set(GossipStats::get(&g.packets_in));
        self.rpc_rejected.set(
            state
                .rpc_stats
                .rejected
                .load(std::sync::atomic::Ordering::Relaxed),
        );
    }

    pub fn encode(&self, state: &ApiState) -> String {
        self.refresh_raft(state);
        self.refresh_cluster(state);
        self.host.refresh();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry.lock().unwrap())
            .expect("encoding metrics into a String cannot fail");
        out
    }
}

/// Middleware: counts and times every request by its route pattern (not the raw path, so
/// object names do not explode the label space).
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let start = Instant::now();
    let state = req.app_data::<Data<ApiState>>().cloned();
    let method = req.method().to_string();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let res = next.call(req).await;
    if let Some(state) = state {
        let status = match &res {
            Ok(r) => r.status().as_u16(),
            Err(e) => e.as_response_error().status_code().as_u16(),
        };
        state
            .metrics
            .observe(route, method, status, start.elapsed().as_secs_f64());
    }
    res
}

pub async fn metrics(state: Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.encode(&state))
}
