//! openraft's network: each Raft RPC becomes one request on the internal RPC transport.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::rpc::{self, Request, Response};
use crate::cluster::transport::{Client, TransportError};
use crate::store::{NodeId, RaftNode, TypeConfig};

/// Where each node's RPC listener is now, as gossip last reported it. Raft's membership
/// holds addresses too, but a node restarted on new ports must stay reachable before the
/// leader has committed its new address (or when that leader just died).
#[derive(Clone, Default)]
pub struct AddressBook(Arc<RwLock<HashMap<NodeId, String>>>);

impl AddressBook {
    pub fn set(&self, id: NodeId, rpc_addr: &str) {
        let mut map = self.0.write().expect("address book lock");
        if map.get(&id).map(String::as_str) != Some(rpc_addr) {
            map.insert(id, rpc_addr.to_string());
        }
    }

    /// The gossip-reported address, else the one in the Raft membership.
    pub fn resolve(&self, id: NodeId, node: &RaftNode) -> String {
        self.0
            .read()
            .expect("address book lock")
            .get(&id)
            .cloned()
            .unwrap_or_else(|| node.rpc_addr.clone())
    }
}

#[derive(Clone)]
pub struct Network {
    client: Arc<Client>,
    book: AddressBook,
}

impl Network {
    pub fn new(client: Arc<Client>, book: AddressBook) -> Self {
        Network { client, book }
    }
}

pub struct Peer {
    client: Arc<Client>,
    book: AddressBook,
    id: NodeId,
    node: RaftNode,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &RaftNode) -> Peer {
        Peer {
            client: self.client.clone(),
            book: self.book.clone(),
            id: target,
            node: node.clone(),
        }
    }
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, RaftNode, E>>;

impl Peer {
    async fn send<E: std::error::Error>(
        &self,
        req: Request,
        option: &RPCOption,
    ) -> RpcResult<Response, E> {
        // Leave openraft room to act on the timeout itself.
        let timeout = option.hard_ttl().max(Duration::from_millis(50));
        rpc::call(
            &self.client,
            &self.book.resolve(self.id, &self.node),
            &req,
            timeout,
        )
        .await
        .map_err(|e| match e {
            TransportError::Connect { .. } => RPCError::Unreachable(Unreachable::new(&e)),
            other => RPCError::Network(NetworkError::new(&other)),
        })
    }

    fn remote<E: std::error::Error>(&self, e: E) -> RPCError<NodeId, RaftNode, E> {
        RPCError::RemoteError(RemoteError::new_with_node(self.id, self.node.clone(), e))
    }

    fn unexpected<E: std::error::Error>(
        &self,
        what: &str,
        resp: Response,
    ) -> RPCError<NodeId, RaftNode, E> {
        let msg = format!("{what}: unexpected response {resp:?}");
        RPCError::Network(NetworkError::new(&std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            msg,
        )))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        match self.send(Request::AppendEntries(rpc), &option).await? {
            Response::AppendEntries(r) => r.map_err(|e| self.remote(e)),
            other => Err(self.unexpected("append_entries", other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        match self.send(Request::InstallSnapshot(rpc), &option).await? {
            Response::InstallSnapshot(r) => r.map_err(|e| self.remote(e)),
            other => Err(self.unexpected("install_snapshot", other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, RaftError<NodeId>> {
        match self.send(Request::Vote(rpc), &option).await? {
            Response::Vote(r) => r.map_err(|e| self.remote(e)),
            other => Err(self.unexpected("vote", other)),
        }
    }
}
