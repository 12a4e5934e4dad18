//! Raft transport between orchestrators.
//!
//! A single-node cluster never sends a Raft RPC. The multi-node transport (internal RPC on
//! `--rpc-port`, authenticated with the join token) belongs to the cluster layer; until it
//! is wired in, every peer is reported unreachable, which openraft treats as a network
//! failure and retries — it never corrupts state.

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};

use crate::store::{NodeId, RaftNode, TypeConfig};

#[derive(Debug, thiserror::Error)]
#[error("no Raft transport to {0}: multi-node Raft is not wired in this build")]
pub struct NoTransport(String);

#[derive(Clone, Default)]
pub struct Network;

pub struct Peer {
    target: RaftNode,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, _target: NodeId, node: &RaftNode) -> Peer {
        Peer { target: node.clone() }
    }
}

impl Peer {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<NodeId, RaftNode, E> {
        RPCError::Network(NetworkError::new(&NoTransport(self.target.to_string())))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, RaftNode, RaftError<NodeId>>> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, RaftNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, RaftNode, RaftError<NodeId>>> {
        Err(self.unreachable())
    }
}
