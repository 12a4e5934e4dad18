//! Internal RPC between nodes: Raft messages and forwarded writes, encoded with bincode
//! and carried by the authenticated `cluster::transport`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use super::{ControlError, ControlPlane};
use crate::cluster::transport::{Client, TransportError};
use crate::store::{Command, CommandResult, NodeId, RaftNode, TypeConfig};

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A client write forwarded by a follower to the leader.
    Write(Command),
    /// A linearizable read point, asked of the leader by a follower.
    ReadBarrier,
    /// The leader's view of the Raft group.
    Status,
    /// The last log index this node's state machine has applied.
    Applied,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Write(Result<CommandResult, RemoteRefusal>),
    ReadBarrier(Result<u64, RemoteRefusal>),
    Status(super::RaftStatus),
    /// The request could not be decoded (version skew).
    Malformed(String),
    /// Appended last, so older nodes decode the variants before it unchanged.
    Applied(u64),
}

/// Why the leader did not take a forwarded request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RemoteRefusal {
    NotLeader(Option<RaftNode>),
    Failed(String),
}

impl From<ControlError> for RemoteRefusal {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NotLeader(n) => RemoteRefusal::NotLeader(n),
            ControlError::NoLeader => RemoteRefusal::NotLeader(None),
            other => RemoteRefusal::Failed(other.to_string()),
        }
    }
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
        .expect("encoding in memory cannot fail")
}

/// Decodes at most this many bytes of claimed lengths (a frame is at most 64 MiB).
const MAX_DECODE: usize = 2 * crate::cluster::transport::MAX_FRAME;

pub(crate) fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    let config = bincode::config::standard().with_limit::<MAX_DECODE>();
    bincode::serde::decode_from_slice(b, config)
        .map(|(v, _)| v)
        .map_err(|e| e.to_string())
}

/// Serves one decoded request against the local Raft node.
pub async fn handle(control: ControlPlane, body: Vec<u8>) -> Vec<u8> {
    let request: Request = match decode(&body) {
        Ok(r) => r,
        Err(e) => return encode(&Response::Malformed(e)),
    };
    let response = match request {
        Request::AppendEntries(r) => Response::AppendEntries(control.raft.append_entries(r).await),
        Request::Vote(r) => Response::Vote(control.raft.vote(r).await),
        Request::InstallSnapshot(r) => {
            Response::InstallSnapshot(control.raft.install_snapshot(r).await)
        }
        Request::Write(cmd) => Response::Write(control.write_local(cmd).await.map_err(Into::into)),
        Request::ReadBarrier => {
            Response::ReadBarrier(control.local_read_barrier().await.map_err(Into::into))
        }
        Request::Status => Response::Status(control.local_status()),
        Request::Applied => Response::Applied(control.applied_index()),
    };
    encode(&response)
}

/// Sends `request` to the node at `addr`.
pub async fn call(
    client: &Arc<Client>,
    addr: &str,
    request: &Request,
    timeout: Duration,
) -> Result<Response, TransportError> {
    let addr: SocketAddr = addr.parse().map_err(|_| {
        TransportError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("bad rpc address {addr}"),
        ))
    })?;
    let body = client.call(addr, &encode(request), timeout).await?;
    decode(&body)
        .map_err(|e| TransportError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever an authenticated peer sends as a request body decodes or is refused;
        /// it never panics.
        #[test]
        fn arbitrary_request_bodies_decode_or_are_refused(
            body in proptest::collection::vec(any::<u8>(), 0..4096),
        ) {
            let _ = decode::<Request>(&body);
        }

        /// Real requests with bytes changed: the same.
        #[test]
        fn mutated_requests_decode_or_are_refused(
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut body = encode(&Request::Write(Command::Batch(vec![Command::Barrier])));
            let i = at.index(body.len());
            body[i] ^= byte;
            let _ = decode::<Request>(&body);
        }
    }
}
