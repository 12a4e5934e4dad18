//! The control plane: the Raft node (openraft over the redb store) and, on the leader, the
//! control loops. `ControlPlane` is the one door for writes: the API turns a request into a
//! `Command` and hands it here.
//!
//! Tasks: openraft's own core, replication and state-machine tasks.
//! May call: `model`, `store`, `cluster` (membership events, RPC transport, the clock),
//! `config` (the settings types it is handed). Nothing else: the agent and the director
//! call it, never the other way round (`cargo test` aside).

pub mod autoscaler;
pub mod controllers;
pub mod membership;
pub mod network;
pub mod rpc;
pub mod scheduler;
pub mod voters;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{Config as RaftConfig, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::cluster::transport::Client;
/// The Raft tuning is read from the node config (`[raft]`), which owns the type.
pub use crate::config::RaftSettings;
use crate::store::{
    Change, Command, CommandResult, NodeId, Raft, RaftNode, StateMachine, Store, StoreReader,
};

/// A write not committed by then is reported as unavailable (no quorum reachable). Its
/// outcome is unknown to the client: it may still commit later.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a follower waits for the leader to answer a forwarded request.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("invalid raft configuration")]
    Config(#[source] openraft::ConfigError),
    #[error("raft failed to start")]
    Start(#[source] openraft::error::Fatal<NodeId>),
    #[error("raft initialization failed: {0}")]
    Initialize(String),
    #[error("this node is not the leader{}", leader_hint(.0))]
    NotLeader(Option<RaftNode>),
    #[error("raft is shutting down or failed: {0}")]
    Fatal(String),
    #[error("no leader elected yet; retry shortly")]
    NoLeader,
    #[error(
        "the write was not committed within {0:?} (no quorum reachable?); its outcome is unknown"
    )]
    Timeout(Duration),
    #[error("forwarding to the leader {leader} failed: {message}")]
    Forward { leader: String, message: String },
    #[error("raft failed while the write was in flight ({0}); its outcome is unknown: read the object back before retrying")]
    UnknownOutcome(String),
}

fn leader_hint(leader: &Option<RaftNode>) -> String {
    match leader {
        Some(n) => format!("; the leader is {} (api {})", n.name, n.api_addr),
        None => String::new(),
    }
}

/// The Raft group as its leader sees it (`omnicloud bootstrap status`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RaftStatus {
    pub leader_id: Option<String>,
    pub leader: Option<String>,
    pub term: u64,
    pub last_log_index: u64,
    pub commit_index: u64,
    pub members: Vec<RaftMemberStatus>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RaftMemberStatus {
    pub id: String,
    pub name: String,
    /// leader, voter or learner.
    pub role: String,
    /// Highest log index known replicated to it (leader's view).
    pub matched: Option<u64>,
    /// Entries behind the leader's log.
    pub lag: Option<u64>,
}

#[derive(Clone)]
pub struct ControlPlane {
    pub node_id: NodeId,
    pub raft: Raft,
    reader: StoreReader,
    changes: broadcast::Sender<Arc<Change>>,
    store: Store,
    rpc: Arc<Client>,
    /// Current RPC addresses of peers, fed from gossip.
    pub addresses: network::AddressBook,
}

impl ControlPlane {
    /// Starts the Raft node on `store`. With `bootstrap`, a node that has never been part
    /// of a cluster initializes a cluster of one with itself as the only voter.
    pub async fn start(
        store: Store,
        node_id: NodeId,
        me: RaftNode,
        settings: &RaftSettings,
        bootstrap: bool,
        rpc: Arc<Client>,
    ) -> Result<ControlPlane, ControlError> {
        let config = RaftConfig {
            cluster_name: "omnicloud".into(),
            heartbeat_interval: settings.heartbeat_ms,
            election_timeout_min: settings.election_timeout_min_ms,
            election_timeout_max: settings.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_after_logs),
            max_in_snapshot_log_to_keep: settings.keep_logs_after_snapshot,
            ..Default::default()
        }
        .validate()
        .map_err(ControlError::Config)?;
        let log_store = store.log_store();
        let fresh = !log_store
            .is_initialized()
            .map_err(|e| ControlError::Initialize(e.to_string()))?;
        let addresses = network::AddressBook::default();
        let state_machine = StateMachine::new(store.clone());
        let changes = state_machine.change_feed();
        let raft = Raft::new(
            node_id,
            Arc::new(config),
            network::Network::new(rpc.clone(), addresses.clone()),
            log_store,
            state_machine,
        )
        .await
        .map_err(ControlError::Start)?;
        if bootstrap && fresh {
            let members = BTreeMap::from([(node_id, me)]);
            raft.initialize(members)
                .await
                .map_err(|e| ControlError::Initialize(e.to_string()))?;
        }
        Ok(ControlPlane {
            node_id,
            raft,
            reader: store.reader(),
            changes,
            store,
            rpc,
            addresses,
        })
    }

    pub fn reader(&self) -> &StoreReader {
        &self.reader
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }

    /// Proposes a command and waits until it is committed and applied; a follower forwards
    /// it to the leader.
    pub async fn write(&self, command: Command) -> Result<CommandResult, ControlError> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.write_routed(command)).await {
            Ok(r) => r,
            Err(_) => Err(ControlError::Timeout(WRITE_TIMEOUT)),
        }
    }

    async fn write_routed(&self, command: Command) -> Result<CommandResult, ControlError> {
        match self.write_local(command.clone()).await {
            Err(ControlError::NotLeader(Some(leader))) => {
                match self.forward(&leader, &rpc::Request::Write(command)).await? {
                    rpc::Response::Write(r) => r.map_err(|e| refusal(e, &leader)),
                    other => Err(unexpected(&leader, other)),
                }
            }
            other => other,
        }
    }

    /// Proposes on this node only; fails with `NotLeader` on a follower.
    pub async fn write_local(&self, command: Command) -> Result<CommandResult, ControlError> {
        match self.raft.client_write(command).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(match f.leader_node {
                    Some(n) => ControlError::NotLeader(Some(n)),
                    None => ControlError::NoLeader,
                })
            }
            // Proposed and perhaps appended (even committed) before the failure.
            Err(RaftError::Fatal(e)) => Err(ControlError::UnknownOutcome(e.to_string())),
            Err(e) => Err(ControlError::Fatal(e.to_string())),
        }
    }

    /// Waits until this node's state machine reflects everything committed before the call
    /// (a linearizable read point), asking the leader for the point when this is a follower.
    pub async fn read_barrier(&self) -> Result<(), ControlError> {
        if stale_follower_reads() && !self.is_leader() {
            // The deliberate break (test only): a follower answers from its local state.
            return Ok(());
        }
        let index = match self.local_read_barrier().await {
            Err(ControlError::NotLeader(Some(leader))) => {
                match self.forward(&leader, &rpc::Request::ReadBarrier).await? {
                    rpc::Response::ReadBarrier(r) => r.map_err(|e| refusal(e, &leader))?,
                    other => return Err(unexpected(&leader, other)),
                }
            }
            other => other?,
        };
        let mut rx = self.raft.metrics();
        let applied = |m: &openraft::RaftMetrics<NodeId, RaftNode>| {
            m.last_applied.map(|l| l.index).unwrap_or(0) >= index
        };
        tokio::time::timeout(FORWARD_TIMEOUT, rx.wait_for(applied))
            .await
            .map_err(|_| ControlError::Fatal("timed out catching up with the leader".into()))?
            .map_err(|e| ControlError::Fatal(e.to_string()))?;
        Ok(())
    }

    /// On the leader: confirms leadership and returns the log index a read must observe.
    pub async fn local_read_barrier(&self) -> Result<u64, ControlError> {
        match self.raft.ensure_linearizable().await {
            Ok(id) => Ok(id.map(|l| l.index).unwrap_or(0)),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(ControlError::NotLeader(f.leader_node))
            }
            Err(other) => Err(ControlError::Fatal(other.to_string())),
        }
    }

    fn leader_rpc_addr(&self, leader: &RaftNode) -> String {
        let id = self.raft.metrics().borrow().current_leader;
        match id {
            Some(id) => self.addresses.resolve(id, leader),
            None => leader.rpc_addr.clone(),
        }
    }

    async fn forward(
        &self,
        leader: &RaftNode,
        request: &rpc::Request,
    ) -> Result<rpc::Response, ControlError> {
        rpc::call(
            &self.rpc,
            &self.leader_rpc_addr(leader),
            request,
            FORWARD_TIMEOUT,
        )
        .await
        .map_err(|e| ControlError::Forward {
            leader: leader.to_string(),
            message: e.to_string(),
        })
    }

    /// This node's Raft view; on the leader it includes each member's replication lag.
    pub fn local_status(&self) -> RaftStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        let last_log = m.last_log_index.unwrap_or(0);
        let matched = |id: &NodeId| -> Option<u64> {
            m.replication
                .as_ref()
                .and_then(|r| r.get(id))
                .map(|l| l.map(|l| l.index).unwrap_or(0))
        };
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let role = if Some(*id) == m.current_leader {
                    "leader"
                } else if voters.contains(id) {
                    "voter"
                } else {
                    "learner"
                };
                let matched = if Some(*id) == m.current_leader {
                    Some(last_log)
                } else {
                    matched(id)
                };
                RaftMemberStatus {
                    id: id.to_string(),
                    name: node.name.clone(),
                    role: role.into(),
                    matched,
                    lag: matched.map(|i| last_log.saturating_sub(i)),
                }
            })
            .collect();
        let leader = m
            .current_leader
            .and_then(|l| membership.get_node(&l).map(|n| n.name.clone()));
        RaftStatus {
            leader_id: m.current_leader.map(|l| l.to_string()),
            leader,
            term: m.current_term,
            last_log_index: last_log,
            commit_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            members,
        }
    }

    /// The last log index this node's state machine has applied.
    pub fn applied_index(&self) -> u64 {
        let m = self.raft.metrics().borrow().clone();
        m.last_applied.map(|l| l.index).unwrap_or(0)
    }

    /// Waits until every Raft member has applied everything committed before the call (so
    /// a revocation holds on every node when this returns). The names of the members that
    /// did not confirm within `timeout` (down, partitioned) are returned.
    pub async fn wait_applied_everywhere(
        &self,
        timeout: Duration,
    ) -> Result<Vec<String>, ControlError> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.read_barrier().await?;
        let index = self.applied_index();
        let m = self.raft.metrics().borrow().clone();
        let members: Vec<(NodeId, RaftNode)> = m
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != self.node_id)
            .map(|(id, n)| (*id, n.clone()))
            .collect();
        let mut waits = Vec::new();
        for (id, node) in members {
            let this = self.clone();
            waits.push(async move {
                let addr = this.addresses.resolve(id, &node);
                loop {
                    let asked =
                        rpc::call(&this.rpc, &addr, &rpc::Request::Applied, FORWARD_TIMEOUT);
                    if let Ok(Ok(rpc::Response::Applied(i))) =
                        tokio::time::timeout_at(deadline, asked).await
                    {
                        if i >= index {
                            return None;
                        }
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Some(node.name.clone());
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        }
        Ok(futures::future::join_all(waits)
            .await
            .into_iter()
            .flatten()
            .collect())
    }

    /// The leader's view, asked of the leader when this node follows.
    pub async fn status(&self) -> Result<RaftStatus, ControlError> {
        let m = self.raft.metrics().borrow().clone();
        match m.current_leader {
            Some(l) if l == self.node_id => Ok(self.local_status()),
            Some(l) => {
                let Some(leader) = m.membership_config.membership().get_node(&l).cloned() else {
                    return Ok(self.local_status());
                };
                match self.forward(&leader, &rpc::Request::Status).await? {
                    rpc::Response::Status(s) => Ok(s),
                    other => Err(unexpected(&leader, other)),
                }
            }
            None => Ok(self.local_status()),
        }
    }

    /// Waits until a leader is known (at most `timeout`).
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, ControlError> {
        let mut rx = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(leader) = rx.borrow().current_leader {
                return Ok(leader);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return Err(ControlError::NoLeader);
            }
        }
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

fn refusal(e: rpc::RemoteRefusal, leader: &RaftNode) -> ControlError {
    match e {
        // Leadership moved while the request was in flight: the caller may retry.
        rpc::RemoteRefusal::NotLeader(_) => ControlError::NoLeader,
        rpc::RemoteRefusal::Failed(message) => ControlError::Forward {
            leader: leader.to_string(),
            message,
        },
    }
}

fn unexpected(leader: &RaftNode, resp: rpc::Response) -> ControlError {
    ControlError::Forward {
        leader: leader.to_string(),
        message: format!("unexpected response {resp:?}"),
    }
}

/// Test only, never in production: `OMNICLOUD_TEST_STALE_FOLLOWER_READS=1` makes a
/// follower serve consistent (`?consistent=true`) reads from its local state without a
/// read index, the bug Jepsen found in etcd and Consul. `omnicloud chaos
/// --break-stale-reads` sets it to prove that its linearizability checker catches it.
pub fn stale_follower_reads() -> bool {
    static SET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SET.get_or_init(|| {
        let on = std::env::var("OMNICLOUD_TEST_STALE_FOLLOWER_READS").is_ok_and(|v| v == "1");
        if on {
            tracing::warn!(
                "OMNICLOUD_TEST_STALE_FOLLOWER_READS=1: consistent reads on followers are NOT linearizable (a deliberate break for testing the chaos checker)"
            );
        }
        on
    })
}
