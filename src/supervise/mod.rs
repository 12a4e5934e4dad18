//! The one supervisor of the workloads a node runs as child processes (containers,
//! VMs). A workload kind implements [`Workload`] (start, probe, usage, inspect, stop) and
//! plugs into the generic [`Reconciler`] (one reconcile loop per kind) and [`Unit`] (one
//! task per instance: local records, adoption after a node restart, restart with
//! [`Backoff`], status changes); both kinds share one node-network handle ([`NodeNet`]).
//! Here too: the [`Reporter`] that carries instance statuses to the Raft leader, the
//! leader-contact clock that gates acting and fencing, and the task set [`Supervised`].
//!
//! Files: `workload` (the trait, the kind's node-wide part, records), `reconciler` (the
//! loop), `unit` (one instance), `network` (the node network and addresses), `process`
//! (process liveness that survives a node restart, /proc usage, cpu rates), `logs`
//! (instance log files: rotation, tail/follow).
//! May call: `orchestrator` (writes, read barrier), `store`, `model`, `container` (reaping,
//! the node network), `config`.

pub mod logs;
mod network;
mod process;
mod reconciler;
mod unit;
mod workload;

pub use network::{announce_degraded, node_subnet, used_addresses, NodeNet, ADDRESS_LOCK};
pub use process::{alive, cpu_nanos, rss_bytes, start_ticks, wait_exit, CpuRate};
pub use reconciler::{Gate, Open, Reconciler};
pub use unit::{now_rfc3339, stopped, Run, Unit};
pub use workload::{
    Counters, Ended, Exit, Node, NodeParts, Probe, Record, StartError, Wanted, Workload,
};

/// Why a workload kind could not begin supervising on this node.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("becoming the subreaper of the node's children")]
    Subreaper(#[source] Box<crate::container::ContainerError>),
    #[error("creating {0}")]
    Dir(std::path::PathBuf, #[source] std::io::Error),
    #[error("finding this executable")]
    Exe(#[source] std::io::Error),
}

/// What a kind does before it supervises: becomes the subreaper of the node's children (an
/// adopted process is still reaped) and creates `dirs`; returns this executable's path
/// (the kinds' helper processes re-execute it).
pub fn setup(dirs: &[&std::path::Path]) -> Result<std::path::PathBuf, SetupError> {
    crate::container::runtime::become_subreaper()
        .map_err(|e| SetupError::Subreaper(Box::new(e)))?;
    for d in dirs {
        std::fs::create_dir_all(d).map_err(|e| SetupError::Dir(d.to_path_buf(), e))?;
    }
    std::env::current_exe().map_err(SetupError::Exe)
}

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::model::instance::InstanceStatus;
use crate::orchestrator::ControlPlane;
use crate::store::{Command, ObjectKey, Rejection};

pub(crate) const TICK: Duration = Duration::from_secs(1);

/// The supervisor tasks of a reconcile loop (agent or director): one per instance
/// incarnation (key and uid), and the ones asked to stop that have not ended yet (an
/// instance is not started again until its old task is gone).
#[derive(Default)]
pub struct Supervised {
    running: HashMap<ObjectKey, (String, watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
    stopping: HashMap<ObjectKey, tokio::task::JoinHandle<()>>,
}

impl Supervised {
    /// Forgets the stopped tasks that have ended.
    pub fn reap(&mut self) {
        self.stopping.retain(|_, task| !task.is_finished());
    }

    /// Asks every task whose (key, uid) is not in `wanted` to stop.
    pub fn stop_unwanted<'a>(
        &mut self,
        wanted: impl IntoIterator<Item = (&'a ObjectKey, &'a str)>,
    ) {
        let wanted: std::collections::HashSet<(&ObjectKey, &str)> = wanted.into_iter().collect();
        let gone: Vec<ObjectKey> = self
            .running
            .iter()
            .filter(|(k, (uid, _, _))| !wanted.contains(&(*k, uid.as_str())))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            let (_, stop, task) = self.running.remove(&key).expect("listed above");
            let _ = stop.send(true);
            self.stopping.insert(key, task);
        }
    }

    /// Running, or still stopping: not to be started now.
    pub fn busy(&self, key: &ObjectKey) -> bool {
        self.running.contains_key(key) || self.stopping.contains_key(key)
    }

    /// Starts the task `run(stop)` for the incarnation `uid` of `key`.
    pub fn start<F>(
        &mut self,
        key: ObjectKey,
        uid: String,
        run: impl FnOnce(watch::Receiver<bool>) -> F,
    ) where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(run(rx));
        self.running.insert(key, (uid, tx, task));
    }

    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }
}

/// The instances placed on `node`, from the local replica: (key, uid, spec) each. The
/// agent keeps the container ones, the director the VM ones.
pub fn placed_on(
    control: &ControlPlane,
    node: &str,
) -> Vec<(ObjectKey, String, crate::model::InstanceSpec)> {
    use crate::model::{Kind, Spec};
    let Ok(instances) = control.reader().resources(Kind::Instance) else {
        return Vec::new();
    };
    instances
        .into_iter()
        .filter_map(|r| {
            let Some(Spec::Instance(spec)) = r.spec else {
                return None;
            };
            let key = ObjectKey::new(
                Kind::Instance,
                r.metadata.namespace.unwrap_or_default(),
                r.metadata.name,
            );
            (spec.node_name.as_deref() == Some(node)).then_some((key, r.metadata.uid, spec))
        })
        .collect()
}

/// Coalesces status writes per instance and retries them until the leader takes them.
#[derive(Default)]
pub struct Reporter {
    /// Latest status per instance, with the uid it describes.
    pending: Mutex<HashMap<ObjectKey, (String, InstanceStatus)>>,
    wake: Notify,
}

impl Reporter {
    pub fn submit(&self, key: &ObjectKey, uid: &str, status: &InstanceStatus) {
        self.pending
            .lock()
            .unwrap()
            .insert(key.clone(), (uid.to_string(), status.clone()));
        self.wake.notify_one();
    }

    pub fn drop_pending(&self, key: &ObjectKey) {
        self.pending.lock().unwrap().remove(key);
    }

    pub async fn run(self: Arc<Self>, control: ControlPlane, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = stop.changed() => return,
            }
            let batch: Vec<(ObjectKey, (String, InstanceStatus))> =
                self.pending.lock().unwrap().drain().collect();
            let mut failed = false;
            for (key, (uid, status)) in batch {
                let command = Command::SetStatus {
                    key: key.clone(),
                    status: serde_json::to_vec(&status).expect("JSON"),
                    uid: Some(uid.clone()),
                };
                match control.write(command).await {
                    Ok(r) => {
                        if let Some(Rejection::NotFound { .. }) = r.rejection {
                            tracing::debug!(instance = %key, "status for a deleted instance dropped");
                        }
                    }
                    Err(e) => {
                        tracing::debug!(instance = %key, error = %e, "status write failed; retrying");
                        // Keep it unless a newer status arrived meanwhile.
                        self.pending
                            .lock()
                            .unwrap()
                            .entry(key)
                            .or_insert((uid, status));
                        failed = true;
                    }
                }
            }
            if failed {
                tokio::time::sleep(Duration::from_secs(1)).await;
                self.wake.notify_one();
            }
        }
    }
}

/// When this node last got a linearizable read point from the Raft leader (ms since the
/// epoch), checked every second: the fencing clock.
pub fn spawn_leader_contact(
    control: ControlPlane,
    mut stop: watch::Receiver<bool>,
) -> Arc<std::sync::atomic::AtomicU64> {
    use std::sync::atomic::Ordering;
    // Zero until the first contact: a restarted node acts only on a view at least as new
    // as the leader's (it may have been down while its instances were moved away).
    let last = Arc::new(AtomicU64::new(0));
    let out = last.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let ok = tokio::time::timeout(Duration::from_secs(2), control.read_barrier()).await;
            if matches!(ok, Ok(Ok(()))) {
                last.store(crate::orchestrator::membership::now_ms(), Ordering::Relaxed);
            }
        }
    });
    out
}

/// Restart delays: at once, then 10s doubling to 5 minutes; reset after 10 minutes of clean
/// running.
#[derive(Clone, Debug, Default)]
pub struct Backoff {
    restarts: u32,
}

impl Backoff {
    pub const RESET_AFTER: Duration = Duration::from_secs(600);
    const BASE: Duration = Duration::from_secs(10);
    const CAP: Duration = Duration::from_secs(300);

    /// The delay before the next restart, given how long the last run lasted.
    pub fn next_delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= Self::RESET_AFTER {
            self.restarts = 0;
        }
        let delay = match self.restarts {
            0 => Duration::ZERO,
            n => Self::BASE
                .saturating_mul(1 << (n - 1).min(10))
                .min(Self::CAP),
        };
        self.restarts += 1;
        delay
    }

    /// Shown as CrashLoopBackOff once an instance has been restarted more than once in a row.
    pub fn crash_looping(&self) -> bool {
        self.restarts > 1
    }

    pub fn restarts(&self) -> u32 {
        self.restarts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::default();
        let quick = Duration::from_secs(1);
        let delays: Vec<u64> = (0..8).map(|_| b.next_delay(quick).as_secs()).collect();
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300, 300]);
        assert!(b.crash_looping());
        assert_eq!(b.next_delay(Backoff::RESET_AFTER).as_secs(), 0);
    }
}
