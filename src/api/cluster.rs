//! Cluster views: `GET /v1/nodes` and `GET /v1/nodes/{name}` (gossip membership joined
//! with Raft roles and each node's conditions) and `GET /v1/cluster/status` (the leader's
//! Raft view, voter lag, role counts vs policy).
//!
//! A node condition is a fault of the node that the instances placed on it feel (its
//! instance network, image store, container runtime, KVM). It comes from what the node
//! announces about itself (a role it holds but cannot serve) and from the Warning events
//! about the node (`involvedObject.kind: Node`) written since the node process started,
//! unless a later Normal event from the same source says it recovered. A restart of the
//! node clears its conditions: it reports them again if they persist.

use std::collections::BTreeMap;

use actix_web::web::{self, Data};
use actix_web::HttpResponse;
use serde_json::{json, Value};

use super::{ApiError, ApiState};
use crate::cluster::{MemberMeta, MemberStatus, MemberView};
use crate::model::{Kind, Role};
use crate::orchestrator::membership::orchestrator_eligible;
use crate::orchestrator::RaftStatus;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/nodes", web::get().to(nodes))
        .route("/nodes/{name}", web::get().to(node))
        .route("/cluster/status", web::get().to(status));
}

fn status_str(s: MemberStatus) -> &'static str {
    match s {
        MemberStatus::Alive => "alive",
        MemberStatus::Suspect => "suspect",
        MemberStatus::Down => "down",
    }
}

/// Roles a node holds now: orchestrator when it votes, plus its capability roles.
fn roles_of(m: &MemberView, raft_role: &str) -> Vec<&'static str> {
    let mut roles = Vec::new();
    if matches!(raft_role, "leader" | "voter") {
        roles.push(Role::Orchestrator.as_str());
    }
    for role in [Role::Director, Role::Agent] {
        if m.meta.roles.contains(&role) {
            roles.push(role.as_str());
        }
    }
    roles
}

/// The conditions of the node `meta` describes: roles it holds but cannot serve, and the
/// standing Warning events about it (`events`: Event objects, any).
fn conditions(meta: &MemberMeta, events: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    let holds = |role: Role| meta.roles.contains(&role);
    if holds(Role::Agent) && !meta.containers {
        out.push(json!({
            "reason": "ContainerRuntimeUnavailable",
            "message": "containers cannot run here: the node needs root and a cgroup hierarchy at /sys/fs/cgroup",
            "source": "node",
        }));
    }
    if holds(Role::Director) && !meta.kvm {
        out.push(json!({
            "reason": "KvmUnavailable",
            "message": "VMs cannot run here: /dev/kvm does not open",
            "source": "node",
        }));
    }
    let started_secs = meta.started_at_ms / 1000;
    let at = |s: &Value| -> Option<u64> {
        let t = humantime::parse_rfc3339_weak(s["lastTimestamp"].as_str()?).ok()?;
        Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs())
    };
    let about: Vec<(&Value, u64)> = events
        .iter()
        .map(|e| &e["spec"])
        .filter(|s| {
            s["involvedObject"]["kind"] == "Node"
                && s["involvedObject"]["name"] == meta.name.as_str()
        })
        .filter_map(|s| Some((s, at(s)?)))
        .filter(|(_, t)| *t >= started_secs)
        .collect();
    // The newest Warning per reason, unless its source has said Normal since.
    let mut warnings: BTreeMap<&str, (&Value, u64)> = BTreeMap::new();
    for (s, t) in about.iter().filter(|(s, _)| s["type"] == "Warning") {
        let reason = s["reason"].as_str().unwrap_or_default();
        if warnings.get(reason).is_none_or(|(_, seen)| *seen < *t) {
            warnings.insert(reason, (s, *t));
        }
    }
    for (reason, (s, t)) in warnings {
        let recovered = about
            .iter()
            .any(|(n, nt)| n["type"] == "Normal" && n["source"] == s["source"] && *nt > t);
        if !recovered {
            out.push(json!({
                "reason": reason,
                "message": s["message"],
                "source": s["source"],
                "since": s["lastTimestamp"],
            }));
        }
    }
    out
}

fn node_rows(members: &[MemberView], raft: &RaftStatus, events: &[Value]) -> Vec<Value> {
    let raft_roles: BTreeMap<&str, &str> = raft
        .members
        .iter()
        .map(|m| (m.id.as_str(), m.role.as_str()))
        .collect();
    let mut rows: Vec<Value> = members
        .iter()
        .map(|m| {
            let id = m.meta.node_id.to_string();
            let raft_role = raft_roles.get(id.as_str()).copied().unwrap_or("-");
            json!({
                "name": m.meta.name,
                "nodeId": id,
                "address": m.meta.api_addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(&m.meta.api_addr),
                "apiAddr": m.meta.api_addr,
                "rpcAddr": m.meta.rpc_addr,
                "gossipAddr": m.meta.gossip_addr,
                "roles": roles_of(m, raft_role),
                "eligibleRoles": m.meta.roles,
                "status": status_str(m.status),
                "raft": raft_role,
                "kvm": m.meta.kvm,
                "containers": m.meta.containers,
                "cpuMillis": m.meta.cpu_millis,
                "memoryBytes": m.meta.memory_bytes,
                "labels": m.meta.labels,
                "startedAtMs": m.meta.started_at_ms,
                "incarnation": m.incarnation,
                "conditions": conditions(&m.meta, events),
            })
        })
        .collect();
    rows.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    rows
}

/// Every node's row, sorted by name.
async fn rows(state: &ApiState) -> Result<Vec<Value>, ApiError> {
    let members = state.gossip.members().await;
    let raft = state.control.local_status();
    // Node events live in the default namespace (`supervise::announce_degraded`).
    let (objects, _) = state.control.reader().list(
        Kind::Event,
        Some(crate::store::state_machine::DEFAULT_NAMESPACE),
    )?;
    let events: Vec<Value> = objects
        .iter()
        .filter_map(|b| serde_json::from_slice(b).ok())
        .collect();
    Ok(node_rows(&members, &raft, &events))
}

async fn nodes(state: Data<ApiState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({"items": rows(&state).await?})))
}

async fn node(state: Data<ApiState>, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    rows(&state)
        .await?
        .into_iter()
        .find(|n| n["name"] == name.as_str())
        .map(|n| HttpResponse::Ok().json(n))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "node {name} not found (omnicloud nodes lists them)"
            ))
        })
}

async fn status(state: Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let members = state.gossip.members().await;
    let raft = state.control.status().await?;
    let alive: Vec<&MemberView> = members
        .iter()
        .filter(|m| m.status != MemberStatus::Down)
        .collect();
    let voters = raft.members.iter().filter(|m| m.role != "learner").count();
    let eligible = alive
        .iter()
        .filter(|m| orchestrator_eligible(&m.meta.roles))
        .count();
    let count = |role: Role| {
        alive
            .iter()
            .filter(|m| m.meta.roles.contains(&role))
            .count()
    };
    Ok(HttpResponse::Ok().json(json!({
        "clusterId": state.cluster.to_string(),
        "raft": raft,
        "roles": {
            "orchestrators": {"voters": voters, "wanted": state.policy.orchestrators, "eligibleAlive": eligible},
            "directors": count(Role::Director),
            "agents": count(Role::Agent),
        },
        "policy": {
            "orchestrators": state.policy.orchestrators,
            "orchestratorReplaceAfterSeconds": state.policy.replace_after.as_secs(),
        },
        "members": {
            "alive": members.iter().filter(|m| m.status == MemberStatus::Alive).count(),
            "suspect": members.iter().filter(|m| m.status == MemberStatus::Suspect).count(),
            "down": members.iter().filter(|m| m.status == MemberStatus::Down).count(),
        },
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(node: &str, kind: &str, reason: &str, source: &str, at: &str) -> Value {
        json!({"kind": "Event", "spec": {"type": kind, "reason": reason, "message": format!("{reason} text"),
               "source": source, "lastTimestamp": at,
               "involvedObject": {"kind": "Node", "name": node, "namespace": "default"}}})
    }

    fn meta(roles: &[&str], started: &str) -> MemberMeta {
        let t = humantime::parse_rfc3339(started).unwrap();
        MemberMeta {
            name: "n1".into(),
            roles: roles.iter().map(|r| r.parse().unwrap()).collect(),
            containers: true,
            kvm: true,
            started_at_ms: t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64,
            ..MemberMeta::default()
        }
    }

    fn reasons(c: &[Value]) -> Vec<&str> {
        c.iter().map(|c| c["reason"].as_str().unwrap()).collect()
    }

    #[test]
    fn warnings_about_the_node_since_it_started_are_its_conditions() {
        let m = meta(&["auto", "agent"], "2026-01-01T00:00:10Z");
        let events = [
            event(
                "n1",
                "Warning",
                "NoOutboundNAT",
                "node-network",
                "2026-01-01T00:00:12Z",
            ),
            // Before this process started: an earlier run's.
            event(
                "n1",
                "Warning",
                "ImageStoreUnreadable",
                "node-images",
                "2026-01-01T00:00:09Z",
            ),
            // Another node's.
            event(
                "n2",
                "Warning",
                "NetworkSetupFailed",
                "node-network",
                "2026-01-01T00:00:12Z",
            ),
        ];
        let c = conditions(&m, &events);
        assert_eq!(reasons(&c), ["NoOutboundNAT"]);
        assert_eq!(c[0]["message"], "NoOutboundNAT text");
        assert_eq!(c[0]["since"], "2026-01-01T00:00:12Z");
    }

    #[test]
    fn a_later_normal_event_from_the_same_source_clears_it() {
        let m = meta(&["agent"], "2026-01-01T00:00:10Z");
        let failed = event(
            "n1",
            "Warning",
            "NetworkSetupFailed",
            "node-network",
            "2026-01-01T00:00:11Z",
        );
        let ready = event(
            "n1",
            "Normal",
            "NetworkReady",
            "node-network",
            "2026-01-01T00:00:20Z",
        );
        let other = event(
            "n1",
            "Normal",
            "Pulled",
            "node-images",
            "2026-01-01T00:00:30Z",
        );
        assert!(conditions(&m, &[failed.clone(), ready]).is_empty());
        assert_eq!(
            reasons(&conditions(&m, &[failed, other])),
            ["NetworkSetupFailed"]
        );
    }

    #[test]
    fn a_role_the_host_cannot_serve_is_a_condition() {
        let mut m = meta(&["agent", "director"], "2026-01-01T00:00:10Z");
        assert!(conditions(&m, &[]).is_empty());
        m.containers = false;
        m.kvm = false;
        assert_eq!(
            reasons(&conditions(&m, &[])),
            ["ContainerRuntimeUnavailable", "KvmUnavailable"]
        );
        m.roles = vec![Role::Auto];
        assert!(
            conditions(&m, &[]).is_empty(),
            "auto takes only what the host can do"
        );
    }
}
