//! The one reconcile loop of every workload kind: on each change of the local replica (and
//! every second) it compares the instances of its kind placed on this node with the
//! [`Unit`](super::Unit) tasks it runs, and starts or stops them. It acts only after the
//! node's first linearizable read through the leader (so a node that was away sees that its
//! instances moved); it sets up the shared node network when the first instance needs it;
//! after a node restart it hands each task the record its previous incarnation left
//! (adoption) and, after its first pass, removes what the records of instances no longer
//! here name.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use super::workload::{Node, Record, Wanted, Workload};
use super::{placed_on, spawn_leader_contact, unit, Supervised, TICK};
use crate::orchestrator::ControlPlane;
use crate::store::ObjectKey;

/// Pause before a pass, so a burst of changes costs one pass, not one each.
const SETTLE: Duration = Duration::from_millis(50);

/// Narrows the wanted instances before a pass, given when the node last reached the leader
/// (ms since the epoch): the agent's fence.
pub trait Gate<S>: Send + 'static {
    fn pass(&mut self, wanted: &mut Vec<Wanted<S>>, last_contact_ms: u64);
}

/// No gate: every instance placed here runs.
pub struct Open;

impl<S> Gate<S> for Open {
    fn pass(&mut self, _: &mut Vec<Wanted<S>>, _: u64) {}
}

/// The reconciler of one workload kind on this node.
pub struct Reconciler<W: Workload, G> {
    control: ControlPlane,
    node: Arc<Node<W>>,
    gate: G,
    tasks: Supervised,
    /// Records a previous node process left, not claimed yet.
    leftover: HashMap<ObjectKey, Record>,
}

impl<W: Workload, G: Gate<W::Spec>> Reconciler<W, G> {
    pub fn new(control: ControlPlane, node: Arc<Node<W>>, gate: G) -> Reconciler<W, G> {
        Reconciler {
            control,
            node,
            gate,
            tasks: Supervised::default(),
            leftover: HashMap::new(),
        }
    }

    /// The instances of this kind placed on this node.
    fn assigned(&self) -> Vec<Wanted<W::Spec>> {
        placed_on(&self.control, &self.node.node)
            .into_iter()
            .filter_map(|(key, uid, spec)| {
                Some(Wanted {
                    key,
                    uid,
                    spec: W::select(spec)?,
                })
            })
            .collect()
    }

    /// Adopts what a previous node process left, then reconciles until `stop`.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        self.leftover = self.node.records().into_iter().collect();
        W::clean_unrecorded(&self.node, &self.leftover).await;
        let mut changes = self.control.subscribe();
        let mut tick = tokio::time::interval(TICK);
        let mut first_pass = true;
        let last_contact = spawn_leader_contact(self.control.clone(), stop.clone());
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                c = changes.recv() => match c {
                    Err(broadcast::error::RecvError::Closed) => return,
                    _ => while changes.try_recv().is_ok() {},
                },
                _ = stop.changed() => return,
            }
            // A write burst is one pass: let it settle, then drop what queued meanwhile.
            tokio::time::sleep(SETTLE).await;
            while changes.try_recv().is_ok() {}
            self.tasks.reap();
            let contact = last_contact.load(Ordering::Relaxed);
            if contact == 0 {
                continue;
            }
            self.pass(contact).await;
            if first_pass {
                first_pass = false;
                // Records of instances no longer here: clean up what they left.
                for (key, record) in std::mem::take(&mut self.leftover) {
                    self.remove_leftover(&key, &record).await;
                }
            }
            (self.node.counters.supervised).set(self.tasks.len() as i64);
        }
    }

    async fn pass(&mut self, contact: u64) {
        let mut wanted = self.assigned();
        self.gate.pass(&mut wanted, contact);
        // The network comes up with the first instance that needs it: a node that runs
        // none changes nothing.
        if self.node.network.get().is_none() && wanted.iter().any(|i| W::needs_network(&i.spec)) {
            self.node
                .network
                .ensure(&self.control, &self.node.node)
                .await;
        }
        self.tasks
            .stop_unwanted(wanted.iter().map(|i| (&i.key, i.uid.as_str())));
        for inst in wanted {
            if self.tasks.busy(&inst.key) {
                continue;
            }
            let adopted = match self.leftover.remove(&inst.key) {
                Some(r) if r.uid == inst.uid => Some(r),
                Some(old) => {
                    self.remove_leftover(&inst.key, &old).await;
                    None
                }
                None => None,
            };
            let node = self.node.clone();
            let (key, uid) = (inst.key.clone(), inst.uid.clone());
            self.tasks
                .start(key, uid, move |stop| unit::run(node, inst, adopted, stop));
        }
    }

    /// What a previous node process ran for an instance that is no longer here.
    async fn remove_leftover(&self, key: &ObjectKey, record: &Record) {
        W::remove_leftover(&self.node, key, record).await;
        self.node.forget(key).await;
    }
}
