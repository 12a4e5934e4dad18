//! Versioned member metadata: the store and foca's custom-broadcast handler for it.
//!
//! Job: keep the newest [`MetaRecord`] per member name. A record is ordered by
//! `(incarnation, version)`: the identity incarnation (restart generation) first, then a
//! counter the owner bumps on every `update_meta`. Records spread two ways:
//! - as foca custom broadcasts (epidemic, piggybacked on SWIM traffic): [`MetaBroadcasts`];
//! - point to point, pushed to and pulled from members by the `GossipCore` (late joiners,
//!   lost packets), which also writes into the same [`SharedMetaStore`].
//!
//! The store is shared between the broadcast handler (owned by `Foca`) and the core through
//! an `Arc<Mutex<_>>`; both live on the one thread that owns the core, so the lock is never
//! contended. Threads: none. May call: nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::cluster::identity::NodeIdentity;
use crate::cluster::member::MemberMeta;
use crate::cluster::wire;
use crate::cluster::ClusterError;

/// One member's metadata at one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaRecord {
    /// Identity incarnation of the member when it published this record.
    pub incarnation: u64,
    /// Bumped by the owner on every metadata change within one incarnation.
    pub version: u64,
    pub meta: MemberMeta,
}

impl MetaRecord {
    /// The ordering key: newer records have larger keys.
    pub fn version_key(&self) -> (u64, u64) {
        (self.incarnation, self.version)
    }
}

/// Newest record per member name.
#[derive(Debug, Default)]
pub struct MetaStore {
    records: BTreeMap<String, MetaRecord>,
    /// Our own name: records about ourselves from the network are ignored.
    local: String,
}

impl MetaStore {
    pub fn new(local: &str) -> Self {
        Self {
            local: local.to_string(),
            ..Default::default()
        }
    }

    /// Stores `r` if it is newer than what we hold. Returns true when it was stored.
    pub fn offer(&mut self, r: MetaRecord) -> bool {
        if r.meta.name == self.local {
            return false;
        }
        if self
            .records
            .get(&r.meta.name)
            .is_some_and(|old| old.version_key() >= r.version_key())
        {
            return false;
        }
        self.records.insert(r.meta.name.clone(), r);
        true
    }

    /// Replaces our own record (always accepted).
    pub fn set_local(&mut self, r: MetaRecord) {
        self.records.insert(r.meta.name.clone(), r);
    }

    pub fn get(&self, name: &str) -> Option<&MetaRecord> {
        self.records.get(name)
    }

    pub fn version_of(&self, name: &str) -> Option<(u64, u64)> {
        self.records.get(name).map(MetaRecord::version_key)
    }

    pub fn iter(&self) -> impl Iterator<Item = &MetaRecord> {
        self.records.values()
    }
}

/// The store shared by the broadcast handler and the core.
#[derive(Debug, Clone)]
pub struct SharedMetaStore(Arc<Mutex<MetaStore>>);

impl SharedMetaStore {
    pub fn new(local: &str) -> Self {
        Self(Arc::new(Mutex::new(MetaStore::new(local))))
    }

    pub fn lock(&self) -> MutexGuard<'_, MetaStore> {
        // A panic while holding the lock cannot leave the map half-written in a way that
        // matters (whole records are inserted), so a poisoned lock is still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Key under which foca holds one record while disseminating it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaKey {
    name: String,
    version: (u64, u64),
}

impl foca::Invalidates for MetaKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.name == other.name && self.version >= other.version
    }
}

/// foca's custom broadcast handler for metadata records.
pub struct MetaBroadcasts {
    store: SharedMetaStore,
}

impl MetaBroadcasts {
    pub fn new(store: SharedMetaStore) -> Self {
        Self { store }
    }
}

impl foca::BroadcastHandler<NodeIdentity> for MetaBroadcasts {
    type Key = MetaKey;
    type Error = ClusterError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&NodeIdentity>,
    ) -> Result<Option<MetaKey>, ClusterError> {
        let record: MetaRecord = wire::decode(data)?;
        let key = MetaKey {
            name: record.meta.name.clone(),
            version: record.version_key(),
        };
        if sender.is_none() {
            // Our own record, added by the core through `Foca::add_broadcast`.
            return Ok(Some(key));
        }
        Ok(self.store.lock().offer(record).then_some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::{BroadcastHandler, Invalidates};
    use std::net::SocketAddr;

    fn rec(name: &str, inc: u64, version: u64) -> MetaRecord {
        MetaRecord {
            incarnation: inc,
            version,
            meta: MemberMeta {
                name: name.into(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn store_keeps_only_newer_records() {
        let mut s = MetaStore::new("me");
        assert!(s.offer(rec("a", 1, 1)));
        assert!(!s.offer(rec("a", 1, 1)));
        assert!(s.offer(rec("a", 1, 2)));
        assert!(!s.offer(rec("a", 0, 9)));
        assert!(s.offer(rec("a", 2, 0)));
        assert_eq!(s.version_of("a"), Some((2, 0)));
        assert!(
            !s.offer(rec("me", 9, 9)),
            "records about ourselves are ignored"
        );
    }

    #[test]
    fn keys_invalidate_older_versions_of_the_same_member() {
        let k = |n: &str, v| MetaKey {
            name: n.into(),
            version: v,
        };
        assert!(k("a", (1, 2)).invalidates(&k("a", (1, 1))));
        assert!(k("a", (1, 2)).invalidates(&k("a", (1, 2))));
        assert!(!k("a", (1, 1)).invalidates(&k("a", (1, 2))));
        assert!(!k("a", (1, 2)).invalidates(&k("b", (1, 1))));
    }

    #[test]
    fn handler_disseminates_only_new_information() {
        let store = SharedMetaStore::new("me");
        let mut h = MetaBroadcasts::new(store.clone());
        let sender = NodeIdentity::new("x", SocketAddr::from(([127, 0, 0, 1], 1)), 1);
        let data = wire::encode(&rec("a", 1, 1)).unwrap();
        assert!(h.receive_item(&data, Some(&sender)).unwrap().is_some());
        assert!(h.receive_item(&data, Some(&sender)).unwrap().is_none());
        assert!(h.receive_item(&data, None).unwrap().is_some());
        assert!(h.receive_item(b"\xff\xff", Some(&sender)).is_err());
        assert_eq!(store.lock().version_of("a"), Some((1, 1)));
    }
}
