//! Cluster membership and node-to-node communication: gossip (which nodes exist, whether
//! they are alive, what they offer) and the authenticated RPC `transport`.
//!
//! Built on `foca` (a SWIM core that does no I/O). The pieces, in the order a packet meets them:
//!
//! 1. [`wire`]: every UDP datagram is `kind || body || HMAC-SHA256(key, kind || body)`; the key
//!    is derived from the join token ([`derive_key`]), so a node with the wrong token is never
//!    heard. Also the foca [`foca::Codec`] (bincode 2).
//!    [`admission`] then decides whether the sender may take part: its cluster id (a node of
//!    another cluster is refused by name) and the node name it speaks for (owned by one
//!    node id).
//! 2. [`identity`]: [`NodeIdentity`] = name + gossip address + incarnation. The name is foca's
//!    unique "address", so a restarted node (same name, higher incarnation, maybe new ports)
//!    supersedes its old self.
//! 3. [`meta`]: [`MemberMeta`] records travel as foca custom broadcasts (versioned by
//!    incarnation + counter) and by direct push/pull between members, so late joiners learn
//!    every member's metadata too.
//! 4. [`engine`]: [`GossipCore`], the whole protocol as a synchronous state machine: inputs
//!    (packet, timer, join, meta update, leave, current time) in, outputs (datagrams, timer
//!    requests, [`MembershipEvent`]s) out. No clocks, sockets or threads of its own.
//! 5. [`runtime`]: the foca `Runtime` impl (queues only) and the ordered [`TimerQueue`].
//! 6. [`actor`]: the thin async shell. One ractor actor owns the `GossipCore`; a socket reader
//!    task and ONE timer task feed it messages. [`Gossip`] is the public handle.
//! 7. [`transport`]: request/response over TCP between nodes (Raft, forwarded writes),
//!    HMAC-tagged per connection with a key derived from the same join token.
//! 8. [`sim`]: deterministic simulation (virtual time, seeded RNG, loss, delay, no sockets)
//!    driving many `GossipCore`s through the same code the actor uses.
//!
//! Threads/actors: one `GossipActor` per node plus two tokio tasks (socket reader, timer queue).
//! May call: `foca`, the UDP socket, `tokio::sync::broadcast` for events. It never calls the
//! orchestrator or any other module of the crate: higher layers subscribe to events.

pub mod actor;
pub mod admission;
pub mod engine;
pub mod host;
pub mod identity;
pub mod join;
pub mod member;
pub mod meta;
pub mod pki;
#[cfg(test)]
mod proptests;
pub mod runtime;
pub mod sim;
pub mod transport;
pub mod wire;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

pub use actor::{Gossip, GossipConfig};
pub use engine::{CoreConfig, GossipCore, Outputs};
pub use identity::{ClusterId, NodeIdentity};
pub use member::{MemberMeta, MemberStatus, MemberView, MembershipEvent};
pub use runtime::{TimerEvent, TimerQueue};
pub use wire::derive_key;

/// Everything that can go wrong in the gossip layer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot bind the gossip socket on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the local address of the gossip socket")]
    LocalAddr(#[source] std::io::Error),
    #[error("cannot spawn the gossip actor")]
    Spawn(#[source] ractor::SpawnErr),
    #[error("cannot encode a gossip message")]
    Encode(#[source] bincode::error::EncodeError),
    #[error("cannot decode a gossip message")]
    Decode(#[source] bincode::error::DecodeError),
    #[error("not enough room in the buffer to encode a gossip item")]
    BufferFull,
    #[error("packet of {0} bytes is too short to carry a tag")]
    ShortPacket(usize),
    #[error("packet tag does not match (wrong join token?)")]
    BadTag,
    #[error("unknown packet kind {0}")]
    UnknownKind(u8),
    #[error("foca rejected the operation")]
    Foca(#[source] foca::Error),
}

/// Counters of one gossip node, readable at any time without asking the actor.
#[derive(Debug, Default)]
pub struct GossipStats {
    /// Datagrams received (authenticated or not).
    pub packets_in: AtomicU64,
    /// Datagrams handed to the socket.
    pub packets_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Datagrams dropped because their tag was bad or missing.
    pub rejected_packets: AtomicU64,
    /// Authenticated datagrams that foca or our decoder refused.
    pub decode_errors: AtomicU64,
    /// Datagrams the socket failed to send.
    pub send_errors: AtomicU64,
    /// Member counts, self included in `members_alive`.
    pub members_alive: AtomicU64,
    pub members_suspect: AtomicU64,
    pub members_down: AtomicU64,
    /// Metadata records accepted (broadcast or direct).
    pub meta_updates: AtomicU64,
    /// Times this node renewed its identity after being declared down.
    pub rejoins: AtomicU64,
}

impl GossipStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter (shorthand for a relaxed load).
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
