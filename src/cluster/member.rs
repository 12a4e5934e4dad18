//! Member data (metadata, status, views, events) and the member table.
//!
//! Job: turn foca's view (identity + Alive/Suspect/Down per name) plus the metadata store
//! into the table higher layers read ([`MemberView`]) and the events they subscribe to
//! ([`MembershipEvent`]). A member becomes visible only once its metadata for its current
//! incarnation is known, so every published view is complete. Down members stay in the table
//! as Down (with the time they went down) so higher layers can act on "down longer than X".
//! Threads: none; owned by the `GossipCore`. May call: nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cluster::identity::NodeIdentity;
use crate::cluster::meta::MetaRecord;

/// What a node tells the cluster about itself. Spread to every member.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MemberMeta {
    pub name: String,
    pub node_id: u64,
    pub api_addr: String,
    pub rpc_addr: String,
    pub gossip_addr: String,
    /// The node's configured/derived roles: orchestrator | director | agent.
    pub roles: Vec<crate::model::Role>,
    pub kvm: bool,
    pub containers: bool,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    /// Free-form labels, including "zone".
    pub labels: BTreeMap<String, String>,
    pub started_at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberStatus {
    Alive,
    Suspect,
    Down,
}

impl From<foca::State> for MemberStatus {
    fn from(s: foca::State) -> Self {
        match s {
            foca::State::Alive => Self::Alive,
            foca::State::Suspect => Self::Suspect,
            foca::State::Down => Self::Down,
        }
    }
}

/// One member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub meta: MemberMeta,
    pub status: MemberStatus,
    /// The member's identity incarnation (restart generation).
    pub incarnation: u64,
    /// When `status` last changed, wall-clock ms.
    pub since_ms: u64,
}

/// A change in the membership of *other* nodes (the local node never produces events about
/// itself; `members()` lists it as Alive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipEvent {
    /// First time this member is seen alive with its metadata.
    Joined(MemberView),
    /// Metadata changed, or a suspect member proved alive again.
    Updated(MemberView),
    /// The member failed a probe; it may still refute.
    Suspect(String),
    /// The member is down (failed, or left).
    Down(String),
    /// A member that was down, or restarted (higher incarnation), is alive again.
    Rejoined(MemberView),
}

/// What the table knows about one other member.
#[derive(Debug, Clone)]
struct Entry {
    /// The latest identity foca holds for this name and its foca state.
    identity: NodeIdentity,
    state: foca::State,
    /// What subscribers were last told, with the meta version it carried.
    published: Option<(MemberView, (u64, u64))>,
}

/// The member table: reconciled after every input of the `GossipCore`.
#[derive(Debug, Default)]
pub struct MemberTable {
    entries: BTreeMap<String, Entry>,
}

/// Counts of published members by status (self not included).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatusCounts {
    pub alive: u64,
    pub suspect: u64,
    pub down: u64,
}

impl MemberTable {
    /// Records what foca currently says about one member (by name).
    pub fn observe(&mut self, identity: &NodeIdentity, state: foca::State) {
        match self.entries.get_mut(&*identity.name) {
            Some(e) => {
                if e.identity != *identity {
                    e.identity = identity.clone();
                }
                e.state = state;
            }
            None => {
                self.entries.insert(
                    identity.name.to_string(),
                    Entry {
                        identity: identity.clone(),
                        state,
                        published: None,
                    },
                );
            }
        }
    }

    /// Compares foca's view and the metadata with what was published; updates the published
    /// views and returns the events, in name order.
    pub fn reconcile<'m>(
        &mut self,
        meta_of: impl Fn(&str) -> Option<&'m MetaRecord>,
        now_ms: u64,
    ) -> Vec<MembershipEvent> {
        let mut events = Vec::new();
        for (name, e) in self.entries.iter_mut() {
            let status = MemberStatus::from(e.state);
            let ready = meta_of(name).filter(|r| r.incarnation >= e.identity.incarnation);
            match (&mut e.published, status) {
                (None, MemberStatus::Down) => {}
                (None, _) => {
                    if let Some(r) = ready {
                        let view = view_of(r, status, e.identity.incarnation, now_ms);
                        events.push(MembershipEvent::Joined(view.clone()));
                        e.published = Some((view, r.version_key()));
                    }
                }
                (Some((view, _)), MemberStatus::Down) => {
                    if view.status != MemberStatus::Down {
                        view.status = MemberStatus::Down;
                        view.since_ms = now_ms;
                        events.push(MembershipEvent::Down(name.clone()));
                    }
                }
                (Some((view, key)), _) => {
                    // A member alive under a new incarnation stays as published until its
                    // fresh metadata arrives: views are always complete.
                    let Some(r) = ready else { continue };
                    let restarted = e.identity.incarnation > view.incarnation;
                    if view.status == MemberStatus::Down || restarted {
                        *view = view_of(r, status, e.identity.incarnation, now_ms);
                        *key = r.version_key();
                        events.push(MembershipEvent::Rejoined(view.clone()));
                    } else if view.status != status {
                        view.status = status;
                        view.since_ms = now_ms;
                        if r.version_key() != *key {
                            view.meta = r.meta.clone();
                            *key = r.version_key();
                        }
                        events.push(match status {
                            MemberStatus::Suspect => MembershipEvent::Suspect(name.clone()),
                            _ => MembershipEvent::Updated(view.clone()),
                        });
                    } else if r.version_key() != *key {
                        view.meta = r.meta.clone();
                        *key = r.version_key();
                        events.push(MembershipEvent::Updated(view.clone()));
                    }
                }
            }
        }
        events
    }

    /// Published views of other members, in name order.
    pub fn views(&self) -> impl Iterator<Item = &MemberView> {
        self.entries
            .values()
            .filter_map(|e| e.published.as_ref().map(|(v, _)| v))
    }

    /// Names foca holds as active whose metadata for the current incarnation is missing.
    pub fn missing_meta(&self, meta_of: impl Fn(&str) -> Option<(u64, u64)>) -> Vec<NodeIdentity> {
        self.entries
            .iter()
            .filter(|(_, e)| e.state != foca::State::Down)
            .filter(|(name, e)| meta_of(name).is_none_or(|(inc, _)| inc < e.identity.incarnation))
            .map(|(_, e)| e.identity.clone())
            .collect()
    }

    /// Identities that foca holds as Down and that went down at or after `since_ms`.
    pub fn recent_down(&self, since_ms: u64) -> Vec<NodeIdentity> {
        self.entries
            .values()
            .filter(|e| e.state == foca::State::Down)
            .filter(|e| {
                e.published
                    .as_ref()
                    .is_some_and(|(v, _)| v.status == MemberStatus::Down && v.since_ms >= since_ms)
            })
            .map(|e| e.identity.clone())
            .collect()
    }

    pub fn counts(&self) -> StatusCounts {
        let mut c = StatusCounts::default();
        for v in self.views() {
            match v.status {
                MemberStatus::Alive => c.alive += 1,
                MemberStatus::Suspect => c.suspect += 1,
                MemberStatus::Down => c.down += 1,
            }
        }
        c
    }
}

fn view_of(r: &MetaRecord, status: MemberStatus, incarnation: u64, now_ms: u64) -> MemberView {
    MemberView {
        meta: r.meta.clone(),
        status,
        incarnation,
        since_ms: now_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn id(name: &str, inc: u64) -> NodeIdentity {
        NodeIdentity::new(name, SocketAddr::from(([127, 0, 0, 1], 9000)), inc)
    }

    fn rec(name: &str, inc: u64, version: u64, zone: &str) -> MetaRecord {
        let mut meta = MemberMeta {
            name: name.into(),
            ..Default::default()
        };
        meta.labels.insert("zone".into(), zone.into());
        MetaRecord {
            incarnation: inc,
            version,
            meta,
        }
    }

    #[test]
    fn member_is_published_only_with_metadata() {
        let mut t = MemberTable::default();
        t.observe(&id("a", 1), foca::State::Alive);
        assert!(t.reconcile(|_| None, 10).is_empty());
        assert_eq!(t.views().count(), 0);
        assert_eq!(t.missing_meta(|_| None).len(), 1);

        let r = rec("a", 1, 1, "z1");
        let ev = t.reconcile(|_| Some(&r), 20);
        assert!(matches!(&ev[..], [MembershipEvent::Joined(v)] if v.since_ms == 20));
        assert!(t.missing_meta(|_| Some((1, 1))).is_empty());
    }

    #[test]
    fn lifecycle_suspect_alive_down_rejoined() {
        let mut t = MemberTable::default();
        let r1 = rec("a", 1, 1, "z1");
        t.observe(&id("a", 1), foca::State::Alive);
        t.reconcile(|_| Some(&r1), 1);

        t.observe(&id("a", 1), foca::State::Suspect);
        let ev = t.reconcile(|_| Some(&r1), 2);
        assert_eq!(ev, vec![MembershipEvent::Suspect("a".into())]);

        t.observe(&id("a", 1), foca::State::Alive);
        let ev = t.reconcile(|_| Some(&r1), 3);
        assert!(
            matches!(&ev[..], [MembershipEvent::Updated(v)] if v.status == MemberStatus::Alive)
        );

        t.observe(&id("a", 1), foca::State::Down);
        let ev = t.reconcile(|_| Some(&r1), 4);
        assert_eq!(ev, vec![MembershipEvent::Down("a".into())]);
        let v = t.views().next().unwrap();
        assert_eq!((v.status, v.since_ms), (MemberStatus::Down, 4));
        assert_eq!(t.recent_down(4), vec![id("a", 1)]);
        assert!(t.recent_down(5).is_empty());

        // Restarted: alive under incarnation 2, but its metadata is still the old one.
        t.observe(&id("a", 2), foca::State::Alive);
        assert!(t.reconcile(|_| Some(&r1), 5).is_empty());
        let r2 = rec("a", 2, 1, "z2");
        let ev = t.reconcile(|_| Some(&r2), 6);
        assert!(
            matches!(&ev[..], [MembershipEvent::Rejoined(v)] if v.incarnation == 2 && v.meta.labels["zone"] == "z2")
        );
    }

    #[test]
    fn restart_without_being_seen_down_is_a_rejoin() {
        let mut t = MemberTable::default();
        t.observe(&id("a", 1), foca::State::Alive);
        let (r1, r9) = (rec("a", 1, 1, "z"), rec("a", 9, 1, "z"));
        t.reconcile(|_| Some(&r1), 1);
        t.observe(&id("a", 9), foca::State::Alive);
        let ev = t.reconcile(|_| Some(&r9), 2);
        assert!(matches!(&ev[..], [MembershipEvent::Rejoined(_)]));
    }

    #[test]
    fn metadata_change_is_an_update() {
        let mut t = MemberTable::default();
        t.observe(&id("a", 1), foca::State::Alive);
        let (r1, r2) = (rec("a", 1, 1, "z1"), rec("a", 1, 2, "z2"));
        t.reconcile(|_| Some(&r1), 1);
        assert!(t.reconcile(|_| Some(&r1), 2).is_empty());
        let ev = t.reconcile(|_| Some(&r2), 3);
        assert!(
            matches!(&ev[..], [MembershipEvent::Updated(v)] if v.meta.labels["zone"] == "z2" && v.since_ms == 1)
        );
    }

    #[test]
    fn never_alive_down_member_is_not_published() {
        let mut t = MemberTable::default();
        t.observe(&id("ghost", 1), foca::State::Down);
        let r = rec("ghost", 1, 1, "z");
        assert!(t.reconcile(|_| Some(&r), 1).is_empty());
        assert_eq!(t.counts(), StatusCounts::default());
    }
}
