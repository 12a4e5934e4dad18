//! The foca identity of a node: its name, its gossip address and its incarnation.
//!
//! Job: decide when two identities are "the same node". The node *name* is foca's unique
//! address (`Identity::Addr`): a node restarted under the same name, even on new ports,
//! supersedes its old self instead of living beside it until the old one is declared down.
//! Conflicts between identities with the same name go to the higher incarnation (ties, which
//! only happen when two processes are misconfigured with one name, go to the higher socket
//! address so every member decides the same way).
//!
//! The incarnation starts at the wall-clock milliseconds of the process start, so a restart
//! always wins; `renew()` (foca calls it when the cluster declared us down) adds one.
//!
//! [`ClusterId`]: which cluster a node's data belongs to. Made once by the node that
//! bootstraps a cluster; a joiner with an empty data dir adopts it from the first seed that
//! answers (and persists it before anything else of that cluster reaches it); from then on
//! every gossip datagram and every RPC connection carries it, and a peer of another cluster
//! is refused by name before any of its messages is handled.
//! Threads: none. Pure data. May call: nothing.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Who a gossip member is. Kept small: it travels in every foca message.
///
/// `name` is an `Arc<str>` because foca asks for `Identity::addr()` (the name) very often;
/// cloning an `Arc` does not allocate.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Cluster-unique node name (foca's unique address).
    #[serde(with = "arc_str")]
    pub name: Arc<str>,
    /// Where this incarnation receives gossip datagrams.
    pub addr: SocketAddr,
    /// Restart generation: wall-clock ms at process start, +1 per renewal.
    pub incarnation: u64,
}

impl NodeIdentity {
    pub fn new(name: impl Into<Arc<str>>, addr: SocketAddr, incarnation: u64) -> Self {
        Self {
            name: name.into(),
            addr,
            incarnation,
        }
    }

    /// A fresh identity for a starting process: incarnation = now in ms since the epoch.
    pub fn starting_now(name: impl Into<Arc<str>>, addr: SocketAddr) -> Self {
        Self::new(name, addr, now_ms())
    }

    /// True when `self` should replace `other` (same name assumed).
    fn supersedes(&self, other: &Self) -> bool {
        (self.incarnation, self.addr) > (other.incarnation, other.addr)
    }
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.name, self.addr, self.incarnation)
    }
}

impl fmt::Display for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl foca::Identity for NodeIdentity {
    type Addr = Arc<str>;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            name: self.name.clone(),
            addr: self.addr,
            incarnation: self.incarnation.saturating_add(1),
        })
    }

    fn addr(&self) -> Arc<str> {
        self.name.clone()
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.supersedes(adversary)
    }
}

/// Bytes of a cluster id on the wire; all zero means "not known yet" (a fresh joiner).
pub type ClusterTag = [u8; 16];

/// Called once when a joiner adopts its cluster's id; an error refuses the adoption.
pub type PersistHook = Arc<dyn Fn(&ClusterTag) -> Result<(), String> + Send + Sync>;

/// The identity of the cluster this node belongs to, shared by gossip and RPC.
#[derive(Clone)]
pub struct ClusterId {
    id: Arc<OnceLock<ClusterTag>>,
    persist: Option<PersistHook>,
}

impl ClusterId {
    /// A cluster whose id this node already holds (its own bootstrap, or persisted).
    pub fn known(id: ClusterTag) -> Self {
        let cell = OnceLock::new();
        let _ = cell.set(id);
        Self {
            id: Arc::new(cell),
            persist: None,
        }
    }

    /// A joiner that has not heard from its cluster yet; `persist` records the id once
    /// adopted.
    pub fn unknown(persist: Option<PersistHook>) -> Self {
        Self {
            id: Arc::new(OnceLock::new()),
            persist,
        }
    }

    /// A new random id for a cluster being bootstrapped.
    pub fn generate() -> ClusterTag {
        loop {
            let id: ClusterTag = rand::random();
            if id != [0; 16] {
                return id;
            }
        }
    }

    pub fn get(&self) -> Option<ClusterTag> {
        self.id.get().copied()
    }

    /// What goes on the wire: the id, or zeros while unknown.
    pub fn tag(&self) -> ClusterTag {
        self.get().unwrap_or([0; 16])
    }

    /// Adopts `id` if none is held yet (persisting it first). True when `id` is now ours.
    pub fn adopt(&self, id: &ClusterTag) -> Result<bool, String> {
        if *id == [0; 16] {
            return Ok(false);
        }
        if let Some(mine) = self.get() {
            return Ok(mine == *id);
        }
        if let Some(persist) = &self.persist {
            persist(id)?;
        }
        let _ = self.id.set(*id);
        Ok(self.get() == Some(*id))
    }

    /// Decides whether a peer that sent `theirs` may talk to us; the error names both.
    pub fn check_peer(&self, theirs: &ClusterTag) -> Result<(), String> {
        match (self.get(), *theirs == [0; 16]) {
            (Some(mine), false) if mine == *theirs => Ok(()),
            (Some(mine), false) => Err(format!(
                "it belongs to cluster {}, this node to cluster {} (a data dir belongs to one cluster: to move a node to another cluster, start it with an empty --data-dir)",
                hex_id(theirs),
                hex_id(&mine)
            )),
            (Some(_), true) => Err("it has not joined any cluster yet".into()),
            (None, _) => Err("this node has not joined its cluster yet".into()),
        }
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.get() {
            Some(id) => f.write_str(&hex_id(&id)),
            None => f.write_str("(not joined yet)"),
        }
    }
}

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A cluster id as 32 hex digits.
pub fn hex_id(id: &ClusterTag) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// serde for `Arc<str>` without serde's `rc` feature.
mod arc_str {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
        Ok(String::deserialize(d)?.into())
    }
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn same_name_is_same_node_even_on_new_address() {
        let old = NodeIdentity::new("n1", addr(1000), 5);
        let new = NodeIdentity::new("n1", addr(2000), 6);
        assert_eq!(old.addr(), new.addr());
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
    }

    #[test]
    fn different_names_are_different_nodes() {
        let a = NodeIdentity::new("a", addr(1000), 5);
        let b = NodeIdentity::new("b", addr(1000), 5);
        assert_ne!(a.addr(), b.addr());
    }

    #[test]
    fn renew_wins_over_the_old_identity() {
        let id = NodeIdentity::new("n1", addr(1000), 41);
        let renewed = id.renew().expect("always renews");
        assert_eq!(renewed.incarnation, 42);
        assert_eq!(renewed.addr, id.addr);
        assert!(renewed.win_addr_conflict(&id));
    }

    #[test]
    fn ties_are_decided_the_same_way_by_both_sides() {
        let a = NodeIdentity::new("n", addr(1000), 7);
        let b = NodeIdentity::new("n", addr(1001), 7);
        assert_ne!(a.win_addr_conflict(&b), b.win_addr_conflict(&a));
    }

    #[test]
    fn cluster_ids_are_adopted_once_and_compared() {
        let a = ClusterId::generate();
        let b = ClusterId::generate();
        let joiner = ClusterId::unknown(None);
        assert!(joiner.check_peer(&a).is_err(), "unknown refuses everyone");
        assert!(joiner.adopt(&a).unwrap());
        assert!(!joiner.adopt(&b).unwrap(), "adopted once");
        assert!(joiner.check_peer(&a).is_ok());
        let err = joiner.check_peer(&b).unwrap_err();
        assert!(
            err.contains(&hex_id(&a)) && err.contains(&hex_id(&b)),
            "{err}"
        );
        assert!(joiner.check_peer(&[0; 16]).is_err());
        let refusing = ClusterId::unknown(Some(Arc::new(|_: &ClusterTag| Err("disk".to_string()))));
        assert!(refusing.adopt(&a).is_err());
        assert_eq!(
            refusing.get(),
            None,
            "not adopted when it cannot be persisted"
        );
    }

    #[test]
    fn restart_incarnation_beats_many_renewals() {
        let first = NodeIdentity::starting_now("n", addr(1));
        let mut renewed = first.clone();
        for _ in 0..3 {
            renewed = renewed.renew().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        let restarted = NodeIdentity::starting_now("n", addr(1));
        assert!(restarted.win_addr_conflict(&renewed));
    }
}
