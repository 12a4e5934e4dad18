//! Admission: who may take part in this cluster's gossip, decided per authenticated datagram
//! before foca or our handlers see its body.
//!
//! Holding the join token is not enough:
//! 1. **Cluster.** The sender's cluster id (in every datagram's header) must be ours. A
//!    joiner that has not learned it yet (zeros) may only say `Hello`; it adopts the id from
//!    the seed's `HelloAck`. A node whose data dir belongs to another cluster is refused by
//!    both sides, with both ids named, so it can never install its state here.
//! 2. **Name.** A node name is owned by one node id (made once per data dir): this node's
//!    own name by us, a member's name by the node id in its metadata while the member is
//!    alive or suspect, and any name by the node id that last spoke under it within
//!    [`NAME_LEASE_MS`]. A second claimant is refused and told why; a name whose owner has
//!    been silent that long (a machine reinstalled under its old name) is taken over.
//!
//! A refused sender gets one `Refused { reason }` per [`REFUSE_LOG_WINDOW_MS`]; so does our
//! log. Threads: none; owned by the `GossipCore`. May call: `identity`, `tracing`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tracing::{error, warn};

use crate::cluster::identity::ClusterId;
use crate::cluster::wire::{Control, Sender};

/// A name that nobody claimed for this long may be claimed by another node id.
pub const NAME_LEASE_MS: u64 = 60_000;
/// At most one refusal (sent and logged) per peer address in this window.
pub const REFUSE_LOG_WINDOW_MS: u64 = 10_000;
/// Bound on the remembered names and addresses.
const MAX_ENTRIES: usize = 8192;

/// What a datagram claims about its sender, taken from its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub name: String,
    pub node_id: u64,
    /// The claim comes from the sender itself (a header), not from a relayed record.
    pub direct: bool,
}

pub struct Admission {
    pub cluster: ClusterId,
    own_name: String,
    own_id: u64,
    /// name -> (node id, last heard in ms) of direct claims.
    leases: BTreeMap<String, (u64, u64)>,
    /// Last refusal sent to / received from an address.
    sent: BTreeMap<SocketAddr, u64>,
    heard: BTreeMap<SocketAddr, u64>,
}

impl Admission {
    pub fn new(cluster: ClusterId, own_name: &str, own_id: u64) -> Self {
        Self {
            cluster,
            own_name: own_name.to_string(),
            own_id,
            leases: BTreeMap::new(),
            sent: BTreeMap::new(),
            heard: BTreeMap::new(),
        }
    }

    /// The header of our own datagrams.
    pub fn sender(&self) -> Sender {
        Sender {
            cluster: self.cluster.tag(),
            node_id: self.own_id,
        }
    }

    /// Decides one datagram. `owner_of(name)` is the node id of a member we hold alive or
    /// suspect under that name. On success a direct claim renews the sender's lease.
    pub fn admit(
        &mut self,
        sender: &Sender,
        msg: Option<&Control>,
        claim: Option<&Claim>,
        owner_of: impl Fn(&str) -> Option<u64>,
        now_ms: u64,
    ) -> Result<(), String> {
        match msg {
            // A joiner says hello before it knows the cluster; so may a node that has not
            // joined anything (zeros). It gets our id in the answer's header.
            Some(Control::Hello { .. }) if sender.cluster == [0; 16] => {
                if self.cluster.get().is_none() {
                    return Err("this node has not joined its cluster yet".into());
                }
            }
            _ => self.cluster.check_peer(&sender.cluster)?,
        }
        if let Some(c) = claim {
            self.check_name(c, owner_of, now_ms)?;
            if c.direct {
                if self.leases.len() >= MAX_ENTRIES {
                    self.leases
                        .retain(|_, (_, t)| now_ms.saturating_sub(*t) < NAME_LEASE_MS);
                }
                self.leases.insert(c.name.clone(), (c.node_id, now_ms));
            }
        }
        Ok(())
    }

    fn check_name(
        &self,
        c: &Claim,
        owner_of: impl Fn(&str) -> Option<u64>,
        now_ms: u64,
    ) -> Result<(), String> {
        let owner = if c.name == self.own_name {
            Some(self.own_id)
        } else {
            owner_of(&c.name).or_else(|| {
                self.leases
                    .get(&c.name)
                    .filter(|(_, t)| now_ms.saturating_sub(*t) < NAME_LEASE_MS)
                    .map(|(id, _)| *id)
            })
        };
        match owner {
            Some(id) if id != c.node_id => Err(format!(
                "node name {:?} belongs to another node (node id {id:016x}, alive); node id {:016x} may not use it: give this node another --name, or stop the other one",
                c.name, c.node_id
            )),
            _ => Ok(()),
        }
    }

    /// True when a refusal to `to` should be sent (and logged) now.
    pub fn should_refuse_loudly(&mut self, to: SocketAddr, now_ms: u64) -> bool {
        Self::once_per_window(&mut self.sent, to, now_ms)
    }

    /// A peer refused us: say so in our log (once per window per peer).
    pub fn note_refused(&mut self, from: SocketAddr, reason: &str, now_ms: u64) {
        if Self::once_per_window(&mut self.heard, from, now_ms) {
            error!(peer = %from, "refused by the cluster: {reason}");
        }
    }

    /// Adopts the cluster id a seed answered with, if we had none.
    pub fn adopt_from(&mut self, sender: &Sender) {
        match self.cluster.adopt(&sender.cluster) {
            Ok(true) => {}
            Ok(false) => {}
            Err(e) => warn!(error = %e, "cannot record the cluster id; not joining yet"),
        }
    }

    fn once_per_window(map: &mut BTreeMap<SocketAddr, u64>, addr: SocketAddr, now: u64) -> bool {
        if map
            .get(&addr)
            .is_some_and(|last| now.saturating_sub(*last) < REFUSE_LOG_WINDOW_MS)
        {
            return false;
        }
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, last| now.saturating_sub(*last) < REFUSE_LOG_WINDOW_MS);
        }
        map.insert(addr, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::identity::NodeIdentity;

    const A: [u8; 16] = [1; 16];
    const B: [u8; 16] = [2; 16];

    fn hello() -> Control {
        Control::Hello {
            from: NodeIdentity::new("j", SocketAddr::from(([127, 0, 0, 1], 1)), 1),
        }
    }

    fn claim(name: &str, node_id: u64) -> Claim {
        Claim {
            name: name.into(),
            node_id,
            direct: true,
        }
    }

    fn none(_: &str) -> Option<u64> {
        None
    }

    #[test]
    fn another_clusters_node_is_refused_with_both_ids() {
        let mut adm = Admission::new(ClusterId::known(A), "seed", 1);
        let them = Sender {
            cluster: B,
            node_id: 9,
        };
        let err = adm.admit(&them, Some(&hello()), None, none, 0).unwrap_err();
        assert!(
            err.contains(&"01".repeat(16)) && err.contains(&"02".repeat(16)),
            "{err}"
        );
        assert!(adm.admit(&them, None, None, none, 0).is_err());
        let ours = Sender {
            cluster: A,
            node_id: 9,
        };
        assert!(adm.admit(&ours, None, None, none, 0).is_ok());
    }

    #[test]
    fn a_joiner_may_only_say_hello_until_it_knows_the_cluster() {
        let mut adm = Admission::new(ClusterId::known(A), "seed", 1);
        let joiner = Sender {
            cluster: [0; 16],
            node_id: 9,
        };
        assert!(adm.admit(&joiner, Some(&hello()), None, none, 0).is_ok());
        assert!(adm.admit(&joiner, None, None, none, 0).is_err());
        // And a node that knows no cluster answers nobody.
        let mut fresh = Admission::new(ClusterId::unknown(None), "j", 2);
        assert!(fresh.admit(&joiner, Some(&hello()), None, none, 0).is_err());
        fresh.adopt_from(&Sender {
            cluster: A,
            node_id: 1,
        });
        assert_eq!(fresh.cluster.get(), Some(A));
    }

    #[test]
    fn a_name_belongs_to_one_node_id() {
        let mut adm = Admission::new(ClusterId::known(A), "me", 1);
        let s = |node_id| Sender {
            cluster: A,
            node_id,
        };
        // Our own name, claimed by someone else.
        assert!(adm
            .admit(&s(5), None, Some(&claim("me", 5)), none, 0)
            .is_err());
        // A member's name while it is alive (from the member table).
        let owner = |n: &str| (n == "web").then_some(7);
        assert!(adm
            .admit(&s(8), None, Some(&claim("web", 8)), owner, 0)
            .is_err());
        assert!(adm
            .admit(&s(7), None, Some(&claim("web", 7)), owner, 0)
            .is_ok());
        // A name first heard directly: leased to its node id.
        assert!(adm
            .admit(&s(3), None, Some(&claim("db", 3)), none, 0)
            .is_ok());
        let err = adm
            .admit(&s(4), None, Some(&claim("db", 4)), none, 1000)
            .unwrap_err();
        assert!(err.contains("\"db\"") && err.contains("--name"), "{err}");
        // ... until its owner has been silent for the lease.
        assert!(adm
            .admit(&s(4), None, Some(&claim("db", 4)), none, NAME_LEASE_MS + 1)
            .is_ok());
    }

    #[test]
    fn refusals_are_rate_limited_per_peer() {
        let mut adm = Admission::new(ClusterId::known(A), "me", 1);
        let p = SocketAddr::from(([127, 0, 0, 1], 9));
        assert!(adm.should_refuse_loudly(p, 0));
        assert!(!adm.should_refuse_loudly(p, 1));
        assert!(adm.should_refuse_loudly(p, REFUSE_LOG_WINDOW_MS + 1));
    }
}
