//! Cluster views: `GET /v1/nodes` (gossip membership joined with Raft roles) and
//! `GET /v1/cluster/status` (the leader's Raft view, voter lag, role counts vs policy).

use std::collections::BTreeMap;

use actix_web::web::{self, Data};
use actix_web::HttpResponse;
use serde_json::{json, Value};

use super::{ApiError, ApiState};
use crate::cluster::{MemberStatus, MemberView};
use crate::orchestrator::membership::orchestrator_eligible;
use crate::orchestrator::RaftStatus;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/nodes", web::get().to(nodes))
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
        roles.push("orchestrator");
    }
    if m.meta.roles.iter().any(|r| r == "director") {
        roles.push("director");
    }
    if m.meta.roles.iter().any(|r| r == "agent") {
        roles.push("agent");
    }
    roles
}

fn node_rows(members: &[MemberView], raft: &RaftStatus) -> Vec<Value> {
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
            })
        })
        .collect();
    rows.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    rows
}

async fn nodes(state: Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let members = state.gossip.members().await;
    let raft = state.control.local_status();
    Ok(HttpResponse::Ok().json(json!({"items": node_rows(&members, &raft)})))
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
    let count = |role: &str| {
        alive
            .iter()
            .filter(|m| m.meta.roles.iter().any(|r| r == role))
            .count()
    };
    Ok(HttpResponse::Ok().json(json!({
        "clusterId": state.cluster.to_string(),
        "raft": raft,
        "roles": {
            "orchestrators": {"voters": voters, "wanted": state.policy.orchestrators, "eligibleAlive": eligible},
            "directors": count("director"),
            "agents": count("agent"),
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
