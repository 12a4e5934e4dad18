//! Node networking: cross-node routes to every peer's instance subnet, so that every
//! instance reaches every other instance by IP, whatever node runs it, and every node
//! reaches every instance.
//!
//! - `routes`: the pure decision: this node and its peers (advertised address, leased
//!   subnet, whether on a directly connected subnet) -> routes (host-gw or VXLAN), the
//!   overlay device and its FDB/neighbour entries. Tested without root.
//! - `netlink`: the thin, idempotent glue that makes the kernel hold a plan (rtnetlink).
//! - `reconcile`: the task each node runs: re-plans on membership events, committed
//!   `NodeSubnet` changes and every second, applies when the plan changed (and a full
//!   resync every few seconds, repairing anything changed behind its back), and removes
//!   everything it owns when the node stops.
//!
//! - `service`: the Services data plane as a pure function (Services, Endpoints and
//!   hostPorts -> one `iptables-restore` payload over omnicloud's chains). Tested
//!   without root.
//! - `dataplane`: the thin glue that applies it on every node in one step per change,
//!   idempotent across restarts, and removes it all on purge.
//!
//! - `lb`: which node announces each LoadBalancer address (rendezvous hashing over the
//!   agent nodes gossip does not hold down); `announce`: the address on the interface
//!   plus gratuitous ARP; `announce_task`: the task each agent node runs for it.
//!
//! - `dns`: the embedded cluster DNS server (hickory-server on every agent or director
//!   node); `dns_records`: the records it answers (pure); `dns_feed`: builds them from the
//!   store.
//!
//! Threads/actors: one tokio task per node for routing (`reconcile::spawn`), one for the
//! Services data plane (`dataplane::spawn`). May call: `orchestrator`
//! (the local replica, read only), `cluster` (membership), `config`, `model`.

pub mod announce;
pub mod announce_task;
pub mod dataplane;
pub mod dns;
pub mod dns_feed;
pub mod dns_records;
pub mod lb;
pub mod netlink;
pub mod reconcile;
pub mod routes;
pub mod service;

pub use reconcile::{purge, spawn, RoutingArgs};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("opening a netlink socket")]
    Socket(#[source] std::io::Error),
    #[error("netlink: {action}")]
    Netlink {
        action: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{0} vanished while being configured")]
    Gone(String),
    #[error("starting a runtime for netlink")]
    Runtime(#[source] std::io::Error),
}

/// Members gossip does not hold down, with their advertised IPv4 address (routes point at
/// it, LoadBalancer announcers are chosen by it); members advertising IPv6 are left out.
pub(crate) async fn live_members(
    gossip: &crate::cluster::Gossip,
) -> Vec<(crate::cluster::MemberView, std::net::Ipv4Addr)> {
    gossip
        .members()
        .await
        .into_iter()
        .filter(|m| m.status != crate::cluster::MemberStatus::Down)
        .filter_map(|m| {
            let addr: std::net::SocketAddr = m.meta.gossip_addr.parse().ok()?;
            match addr.ip() {
                std::net::IpAddr::V4(ip) => Some((m, ip)),
                std::net::IpAddr::V6(_) => None,
            }
        })
        .collect()
}
