//! What the agent and the director share to supervise workloads they run as child
//! processes: the [`Reporter`] that carries instance statuses to the Raft leader, the
//! leader-contact clock that gates acting and fencing, restart [`Backoff`], and process
//! liveness that survives a node restart (a pid plus its start time names one process).
//! May call: `orchestrator` (writes, read barrier), `store`, `model`, `container` (reaping).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::container;
use crate::model::instance::InstanceStatus;
use crate::orchestrator::ControlPlane;
use crate::store::{Command, ObjectKey, Rejection};

const TICK: Duration = Duration::from_secs(1);

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

/// Serializes instance address allocation on this node (agent and director draw from one
/// node subnet) with the record write that claims the address.
pub static ADDRESS_LOCK: Mutex<()> = Mutex::new(());

/// The instances placed on `node`, from the local replica: (key, uid, spec) each. The
/// agent keeps the container ones, the director the VM ones.
pub fn placed_on(
    control: &ControlPlane,
    node: &str,
) -> Vec<(ObjectKey, String, crate::model::InstanceSpec)> {
    use crate::model::{Kind, Resource, Spec};
    let Ok((objects, _)) = control.reader().list(Kind::Instance, None) else {
        return Vec::new();
    };
    objects
        .iter()
        .filter_map(|b| serde_json::from_slice(b).ok())
        .filter_map(|v| Resource::from_stored(v).ok())
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

/// The instance subnet the orchestrator leased this node, from the local replica.
pub fn node_subnet(
    control: &ControlPlane,
    node: &str,
) -> Option<crate::container::network::Subnet> {
    use crate::model::{Kind, Resource, Spec};
    let bytes = control
        .reader()
        .get(&ObjectKey::new(Kind::NodeSubnet, "", node))
        .ok()??;
    let r = Resource::from_stored(serde_json::from_slice(&bytes).ok()?).ok()?;
    match r.spec {
        Some(Spec::NodeSubnet(s)) => crate::container::network::Subnet::parse(&s.cidr),
        _ => None,
    }
}

/// Says once, when this node's instance network came up without something instances can
/// run without (e.g. outbound NAT): a warning in the node log and a Warning event about the
/// node (`omnicloud get events`). The network is set up once per node process when complete
/// or degraded, so this runs once, not on every pass.
pub fn announce_degraded(
    control: &ControlPlane,
    node: &str,
    degraded: container::network::Degraded,
) {
    use crate::orchestrator::controllers::events::{EventDraft, Recorder};
    let draft = EventDraft {
        namespace: crate::store::state_machine::DEFAULT_NAMESPACE.into(),
        kind: "Node".into(),
        name: node.to_string(),
        warning: true,
        reason: degraded.reason().into(),
        message: degraded.message().into(),
        source: "node-network".into(),
    };
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    // Logs the warning (once) and makes the event's write.
    let writes = Recorder::default().commands(vec![draft], &now);
    let control = control.clone();
    tokio::spawn(async move {
        for command in writes {
            for _ in 0..30 {
                match control.write(command.clone()).await {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "writing the network warning event; retrying");
                        tokio::time::sleep(TICK).await;
                    }
                }
            }
        }
    });
}

/// Local record prefixes whose records hold an `ip` field: every address in use here.
const ADDRESS_RECORDS: [&str; 2] = ["agent/", "director/"];

/// The instance addresses this node's agent and director hold (hold [`ADDRESS_LOCK`]).
pub fn used_addresses(
    store: &crate::store::Store,
) -> std::collections::BTreeSet<std::net::Ipv4Addr> {
    ADDRESS_RECORDS
        .iter()
        .flat_map(|p| store.local_scan(p).unwrap_or_default())
        .filter_map(|(_, v)| {
            let v: serde_json::Value = serde_json::from_slice(&v).ok()?;
            v["ip"].as_str()?.parse().ok()
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

/// The start time of `pid` (clock ticks since boot, field 22 of /proc/PID/stat): with the
/// pid it names one process for good, even after the pid is reused.
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// CPU time `pid` has used (user + system), in nanoseconds.
pub fn cpu_nanos(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 2..].split_whitespace();
    // Fields 14 and 15 (utime, stime); the state (field 3) is the first after the name.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some((utime + stime) * 1_000_000_000 / hz)
}

/// Resident memory of `pid` in bytes.
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf reads a constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    Some(pages * page)
}

/// Whether `pid` still is the process that started at `ticks` and has not exited.
pub fn alive(pid: i32, ticks: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    let mut fields = stat[close + 2..].split_whitespace();
    let state = fields.next().unwrap_or("X");
    let started = fields.nth(18).and_then(|t| t.parse::<u64>().ok());
    started == Some(ticks) && state != "Z" && state != "X"
}

/// Waits for the container init `pid` to end. A child of ours (we are its subreaper) is
/// reaped and its shell-style exit code returned; an adopted one (left by a previous node
/// process) is watched through /proc and ends with no code.
pub async fn wait_exit(pid: i32, ticks: u64) -> Option<i32> {
    let mut ours = true;
    loop {
        if ours {
            match container::runtime::try_reap(pid) {
                Ok(Some(code)) => return Some(code),
                Ok(None) => {}
                Err(_) => ours = false,
            }
        }
        if !ours && !alive(pid, ticks) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
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

    #[tokio::test]
    #[allow(clippy::zombie_processes)] // wait_exit reaps it
    async fn exits_of_children_and_strangers_are_seen() {
        let child = std::process::Command::new("sh")
            .args(["-c", "sleep 0.2; exit 3"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let ticks = start_ticks(pid).unwrap();
        assert!(alive(pid, ticks));
        assert!(
            !alive(pid, ticks + 1),
            "another start time is another process"
        );
        assert_eq!(wait_exit(pid, ticks).await, Some(3));
        assert!(!alive(pid, ticks));
        assert_eq!(start_ticks(-5), None);
        let me = std::process::id() as i32;
        assert!(rss_bytes(me).unwrap() > 1 << 20);
        assert!(cpu_nanos(me).is_some());
        assert_eq!(cpu_nanos(-5), None);
    }
}
