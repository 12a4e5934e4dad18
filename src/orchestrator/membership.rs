//! The membership loop: on every node it keeps the RPC address book current from gossip;
//! on the leader it also turns the gossip view into Raft membership changes
//! (`voters::plan`) and applies them one at a time. Ticks every `TICK` and on every gossip event.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::ChangeMembers;
use tokio::sync::{broadcast, watch};

use super::voters::{self, Candidate, Membership, MembershipChange, VoterPolicy};
use super::ControlPlane;
use crate::cluster::{Gossip, MemberStatus, MemberView};
use crate::model::Role;
use crate::store::{NodeId, RaftNode};

const TICK: Duration = Duration::from_millis(500);
/// A membership change that cannot commit (quorum lost) is abandoned after this long.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// A learner this close to the leader's log may be promoted without stalling commits.
const CAUGHT_UP_ENTRIES: u64 = 100;

/// The wall clock lives with the gossip layer, which stamps membership with it; kept here
/// so the agent, `supervise`, `node` and the CLI reach it by their old path.
pub use crate::cluster::identity::now_ms;

/// Whether a member may become an orchestrator: `auto` or an explicit `orchestrator` role.
pub fn orchestrator_eligible(roles: &[Role]) -> bool {
    roles
        .iter()
        .any(|r| matches!(r, Role::Orchestrator | Role::Auto))
}

pub fn raft_node_of(m: &MemberView) -> RaftNode {
    RaftNode {
        name: m.meta.name.clone(),
        rpc_addr: m.meta.rpc_addr.clone(),
        api_addr: m.meta.api_addr.clone(),
    }
}

fn candidates(
    members: &[MemberView],
    replication: &BTreeMap<NodeId, u64>,
    last_log: u64,
) -> Vec<Candidate> {
    let now = now_ms();
    members
        .iter()
        .map(|m| {
            let alive = m.status != MemberStatus::Down;
            Candidate {
                id: m.meta.node_id,
                node: raft_node_of(m),
                eligible: orchestrator_eligible(&m.meta.roles),
                alive,
                down_for: if alive {
                    Duration::ZERO
                } else {
                    Duration::from_millis(now.saturating_sub(m.since_ms))
                },
                started_at_ms: m.meta.started_at_ms,
                caught_up: replication
                    .get(&m.meta.node_id)
                    .is_some_and(|i| i + CAUGHT_UP_ENTRIES >= last_log),
            }
        })
        .collect()
}

pub fn spawn(
    control: ControlPlane,
    gossip: Gossip,
    policy: VoterPolicy,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut events = gossip.subscribe();
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                e = events.recv() => if let Err(broadcast::error::RecvError::Closed) = e { return },
                _ = stop.changed() => return,
            }
            let members = gossip.members().await;
            for m in members.iter().filter(|m| m.status != MemberStatus::Down) {
                control.addresses.set(m.meta.node_id, &m.meta.rpc_addr);
            }
            if !control.is_leader() {
                continue;
            }
            // A PredictiveBootstrapScaler's active window may raise the voter target.
            let scalers = super::controllers::load_all(
                &control,
                crate::model::Kind::PredictiveBootstrapScaler,
            );
            let mut policy = policy.clone();
            if let Some(n) = super::autoscaler::schedule::orchestrators_target(&scalers) {
                policy.orchestrators = policy.orchestrators.max(n);
            }
            reconcile(&control, &members, &policy).await;
        }
    });
}

async fn reconcile(control: &ControlPlane, members: &[MemberView], policy: &VoterPolicy) {
    let m = control.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
    let nodes: BTreeMap<NodeId, RaftNode> =
        membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
    let replication: BTreeMap<NodeId, u64> = m
        .replication
        .as_ref()
        .map(|r| {
            r.iter()
                .map(|(id, l)| (*id, l.map(|l| l.index).unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    let last_log = m.last_log_index.unwrap_or(0);
    let current = Membership {
        voters: &voters,
        learners: &learners,
        nodes: &nodes,
        leader: control.node_id,
    };
    for change in voters::plan(
        &current,
        &candidates(members, &replication, last_log),
        policy,
    ) {
        tracing::info!(?change, "raft membership change");
        let raft = &control.raft;
        let result = tokio::time::timeout(CHANGE_TIMEOUT, async {
            match change {
                MembershipChange::AddLearner(id, node) => {
                    raft.add_learner(id, node, false).await.map(|_| ())
                }
                MembershipChange::UpdateNodes(nodes) => raft
                    .change_membership(ChangeMembers::SetNodes(nodes.into_iter().collect()), false)
                    .await
                    .map(|_| ()),
                MembershipChange::RemoveLearners(ids) => raft
                    .change_membership(ChangeMembers::RemoveNodes(ids), false)
                    .await
                    .map(|_| ()),
                MembershipChange::SetVoters(ids) => {
                    raft.change_membership(ids, false).await.map(|_| ())
                }
            }
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "membership change refused");
                return;
            }
            Err(_) => {
                tracing::warn!("membership change did not commit in {CHANGE_TIMEOUT:?}");
                return;
            }
        }
    }
}
