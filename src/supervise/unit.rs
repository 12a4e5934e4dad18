//! One task per instance of a workload kind: adopt the process a previous node process
//! left running (or start it), probe it, sample its usage, restart it by the restart policy
//! with backoff, and report every change of its status. It ends when the reconciler asks
//! it to stop (the instance was deleted or moved), after the kind has stopped the process
//! and removed its traces, and the log and local record are gone.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::workload::{Exit, Node, Probe, Record, Wanted, Workload};
use super::CpuRate;
use super::{alive, wait_exit, Backoff};
use crate::model::instance::reasons;
use crate::model::instance::{InstanceStatus, Phase, StatusWarning, Termination, Usage};
use crate::store::ObjectKey;

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Resolves once a stop is asked for (or the reconciler is gone); holds no borrow of the
/// value.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// One supervised instance incarnation: what the kind's hooks read and change.
pub struct Unit<W: Workload> {
    pub node: Arc<Node<W>>,
    pub key: ObjectKey,
    pub spec: W::Spec,
    pub record: Record,
    pub status: InstanceStatus,
    /// The instance log (a container's output, a VM's serial console).
    pub log: PathBuf,
    pub state: W::State,
    /// Set when a stop is asked for: a kind's long start (an init container) watches it.
    pub stop: watch::Receiver<bool>,
    backoff: Backoff,
    /// The live process a previous node process left (pid, start ticks).
    adopted: Option<(i32, u64)>,
}

/// Supervises `inst` until `stop`; `adopted` is the record a previous node process left.
pub async fn run<W: Workload>(
    node: Arc<Node<W>>,
    inst: Wanted<W::Spec>,
    adopted: Option<Record>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(mut unit) = Unit::new(node, inst, adopted, &mut stop).await else {
        // Nothing was created (it said why in its status): wait to be stopped.
        stopped(&mut stop).await;
        return;
    };
    unit.main(&mut stop).await;
    unit.teardown().await;
}

/// Waits for the node network; while its setup fails, the instance is Pending with the
/// reason (reported once per distinct reason), so `--wait` and `describe` can say why.
async fn wait_network<W: Workload>(
    node: &Node<W>,
    key: &ObjectKey,
    uid: &str,
    status: &mut InstanceStatus,
    stop: &mut watch::Receiver<bool>,
) -> Option<crate::container::network::NodeNetwork> {
    let mut said: Option<String> = None;
    loop {
        if let Some(n) = node.network.get() {
            if said.is_some() {
                status.reason.clear();
                status.message.clear();
            }
            return Some(n);
        }
        if let Some(why) = node.network.failure().filter(|w| said.as_ref() != Some(w)) {
            status.phase = Phase::Pending;
            status.reason = reasons::NETWORK_SETUP_FAILED.into();
            status.message = why.clone();
            node.report(key, uid, status);
            said = Some(why);
        }
        tokio::select! {
            n = node.network.wait(stop) => return n,
            _ = tokio::time::sleep(super::TICK) => {}
        }
    }
}

impl<W: Workload> Unit<W> {
    async fn new(
        node: Arc<Node<W>>,
        inst: Wanted<W::Spec>,
        adopted: Option<Record>,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Unit<W>> {
        let Wanted { key, uid, spec } = inst;
        let mut status = InstanceStatus {
            node: node.node.clone(),
            revision: W::revision(&spec),
            ..Default::default()
        };
        let network = match W::needs_network(&spec) {
            true => Some(wait_network(&node, &key, &uid, &mut status, stop).await?),
            false => None,
        };
        status.warnings = (network.as_ref().and_then(|n| n.degraded))
            .map(|d| StatusWarning {
                reason: d.reason().into(),
                message: d.message().into(),
            })
            .into_iter()
            .collect();
        let (record, adopted) = match adopted {
            Some(r) => {
                let live = match (r.pid, r.ticks) {
                    (Some(pid), Some(t)) if alive(pid, t) => Some((pid, t)),
                    _ => None,
                };
                if live.is_none() {
                    status.last_termination = Some(Termination {
                        exit_code: None,
                        reason: "Unknown".into(),
                        message: format!("the {} ended while the node process was down", W::NOUN),
                        finished_at: now_rfc3339(),
                    });
                }
                (r, live)
            }
            None => match node.new_record(&key, &uid, network.as_ref()) {
                Some(r) => (r, None),
                None => {
                    let subnet = network.expect("only addresses run out").subnet;
                    status.phase = Phase::Pending;
                    status.reason = reasons::NO_ADDRESS.into();
                    status.message = format!("node subnet {subnet} is full");
                    node.report(&key, &uid, &status);
                    return None;
                }
            },
        };
        status.ip = record.ip.map(|ip| ip.to_string()).unwrap_or_default();
        status.restarts = record.restarts;
        // An instance that was restarted before waits before its next restart.
        let mut backoff = Backoff::default();
        for _ in 0..record.restarts.min(1) {
            backoff.next_delay(Duration::ZERO);
        }
        Some(Unit {
            stop: stop.clone(),
            log: node.log_path(&key),
            state: W::state(&node, &key, &uid, &mut status),
            node,
            key,
            spec,
            record,
            status,
            backoff,
            adopted,
        })
    }

    pub fn report(&self) {
        self.node.report(&self.key, &self.record.uid, &self.status);
    }

    /// Sets readiness; reports a change.
    pub fn set_ready(&mut self, ready: bool, message: String) {
        if ready == self.status.ready {
            return;
        }
        self.status.ready = ready;
        self.status.ready_since = if ready { now_rfc3339() } else { String::new() };
        self.status.reason = if ready {
            String::new()
        } else {
            reasons::READINESS_PROBE_FAILED.into()
        };
        self.status.message = message;
        self.report();
    }

    /// Runs, restarts by policy, until a stop is asked for.
    async fn main(&mut self, stop: &mut watch::Receiver<bool>) {
        let mut first = true;
        // The last start waited (a ConfigMap or Secret): trying again is no restart.
        let mut waited = false;
        if self.adopted.is_none() {
            W::prepare(self).await;
        }
        loop {
            let started = Instant::now();
            let adopted = self.adopted.is_some();
            let pid = match self.adopted.take() {
                Some(p) => {
                    tracing::info!(instance = %self.key, pid = p.0, "adopted a running {}", W::NOUN);
                    Ok(p)
                }
                None => {
                    // Not the first start, or the first after it died while the node was
                    // down: a restart.
                    if !waited && (!first || self.status.last_termination.is_some()) {
                        self.record.restarts += 1;
                        self.status.restarts = self.record.restarts;
                        self.node.counters.restarts.inc();
                    }
                    let pid = W::start(self).await;
                    if pid.is_ok() {
                        self.record.started_at = now_rfc3339();
                    }
                    pid
                }
            };
            first = false;
            waited = matches!(&pid, Err(e) if e.wait);
            let delay = match pid {
                Ok((pid, ticks)) => {
                    let run = Run {
                        pid,
                        ticks,
                        started,
                        adopted,
                    };
                    match self.run_once(&run, stop).await {
                        After::Stop => return,
                        After::Stay => {
                            stopped(stop).await;
                            return;
                        }
                        // A reboot the workload asked for is not a failure: no backoff.
                        After::Reboot => Duration::ZERO,
                        After::Restart => self.backoff.next_delay(started.elapsed()),
                    }
                }
                Err(e) if e.wait => {
                    // Not a failed start: nothing ran. Report once per distinct message.
                    if self.status.reason != e.reason || self.status.message != e.message {
                        tracing::info!(instance = %self.key, reason = e.reason, message = %e.message, "{} waits", W::NOUN);
                        self.status.phase = Phase::Pending;
                        self.status.ready = false;
                        self.status.reason = e.reason.into();
                        self.status.message = e.message;
                        self.report();
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(super::workload::WAIT_POLL) => {}
                        _ = stopped(stop) => return,
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(instance = %self.key, reason = e.reason, message = %e.message, "{} did not start", W::NOUN);
                    self.status.phase = Phase::Failed;
                    self.status.ready = false;
                    self.status.ready_since.clear();
                    self.status.pid = None;
                    self.status.reason = e.reason.into();
                    self.status.message = e.message;
                    if !e.retry {
                        // Refused: wait for a new spec (a new instance), not the same refusal.
                        self.report();
                        stopped(stop).await;
                        return;
                    }
                    self.backoff.next_delay(Duration::ZERO)
                }
            };
            if self.backoff.crash_looping() && self.status.phase != Phase::Failed {
                self.status.phase = Phase::CrashLoopBackOff;
                self.status.reason = reasons::CRASH_LOOP_BACK_OFF.into();
                self.status.message = format!("back-off {}s restarting", delay.as_secs());
            }
            self.report();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stopped(stop) => return,
            }
        }
    }

    /// One run of the process `pid`: Running until it ends (or a stop is asked for), then
    /// its end recorded and what the restart policy says.
    async fn run_once(&mut self, run: &Run, stop: &mut watch::Receiver<bool>) -> After {
        self.record.pid = Some(run.pid);
        self.record.ticks = Some(run.ticks);
        self.node.save_record(&self.key, &self.record);
        self.status.phase = Phase::Running;
        self.status.pid = Some(run.pid);
        self.status.started_at = self.record.started_at.clone();
        self.status.reason.clear();
        self.status.message.clear();
        self.report();
        let Some(exit) = self.monitor(run, stop).await else {
            return After::Stop;
        };
        let ended = W::inspect(self, exit).await;
        self.record.pid = None;
        self.record.ticks = None;
        self.node.save_record(&self.key, &self.record);
        tracing::info!(instance = %self.key, reason = ended.reason, message = %ended.message, "{} ended", W::NOUN);
        self.status.last_termination = Some(Termination {
            exit_code: ended.exit_code,
            reason: ended.reason.into(),
            message: ended.message,
            finished_at: now_rfc3339(),
        });
        self.status.pid = None;
        self.status.ready = false;
        self.status.ready_since.clear();
        self.status.usage = None;
        let restart = match W::restart_policy(&self.spec).unwrap_or("Always") {
            "Never" => false,
            "OnFailure" => !ended.succeeded,
            _ => true,
        };
        if !restart {
            self.status.phase = if ended.succeeded {
                Phase::Succeeded
            } else {
                Phase::Failed
            };
            self.report();
            return After::Stay;
        }
        if ended.reboot {
            After::Reboot
        } else {
            After::Restart
        }
    }

    /// Runs until the process ends or fails its liveness probe (Some), or a stop is asked
    /// for (None).
    async fn monitor(&mut self, run: &Run, stop: &mut watch::Receiver<bool>) -> Option<Exit> {
        let (mut probes, ready) = W::probes(self, run);
        if ready {
            self.set_ready(true, String::new());
        }
        let mut cpu = CpuRate::default();
        let mut usage_tick = tokio::time::interval(self.node.settings.usage_report);
        let exit = wait_exit(run.pid, run.ticks);
        tokio::pin!(exit);
        let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
        loop {
            let next = W::next_probe(&probes);
            // Biased: an exit that is already known wins over a probe that is also due (a
            // dead server would otherwise be reported as a failed liveness probe).
            tokio::select! {
                biased;
                code = &mut exit => return Some(Exit::Code(code)),
                _ = stopped(stop) => return None,
                _ = tokio::time::sleep_until(next.map_or(far, |(at, _)| at)) => {
                    let (_, due) = next.expect("scheduled only when due");
                    match W::probe(self, &mut probes, due).await {
                        Probe::Nothing => {}
                        Probe::Ready { ready, message } => self.set_ready(ready, message),
                        Probe::Failed(message) => return Some(Exit::Unhealthy(message)),
                    }
                }
                _ = usage_tick.tick() => self.sample_usage(run.pid, &mut cpu).await,
            }
        }
    }

    /// Reports a usage sample and rotates the log when it grew past its limit.
    async fn sample_usage(&mut self, pid: i32, cpu: &mut CpuRate) {
        if let Some((cpu_millis, memory_bytes)) = W::usage(self, pid, cpu) {
            self.status.usage = Some(Usage {
                cpu_millis,
                memory_bytes,
                timestamp: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                window_ms: self.node.settings.usage_report.as_millis() as u64,
            });
            self.report();
        }
        let settings = &self.node.settings;
        let (log, max, keep) = (self.log.clone(), settings.log_max_bytes, settings.log_keep);
        let _ = tokio::task::spawn_blocking(move || super::logs::rotate_if_needed(&log, max, keep))
            .await;
    }

    /// The instance is gone from this node: the kind stops it and removes its traces, then
    /// its log and record go.
    async fn teardown(&mut self) {
        W::stop(self).await;
        self.node.forget(&self.key).await;
        tracing::info!(instance = %self.key, "{} removed from this node", W::NOUN);
    }
}

/// One run of an instance's process.
pub struct Run {
    pub pid: i32,
    /// The process's start time (see [`super::start_ticks`]).
    pub ticks: u64,
    /// When the supervisor began to start it (or adopted it).
    pub started: Instant,
    /// Left running by a previous node process.
    pub adopted: bool,
}

/// What follows one run.
enum After {
    /// A stop was asked for.
    Stop,
    /// Not restarted (by policy): stays as it ended until it is stopped.
    Stay,
    Restart,
    Reboot,
}
