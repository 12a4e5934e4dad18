//! One task per instance on this node: start the container (or adopt the one a previous
//! node process left running), give it its veth and stable address, probe it, sample its
//! usage, restart it by the restart policy with backoff, and report every change of its
//! status. It ends when the agent asks it to stop (the instance was deleted or moved),
//! after removing the container, its veth, scratch volumes, logs and local record.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::health::{self, Health, ProbeSettings, ProbeTracker, Target};
use super::{logs, translate, usage, Shared};
use crate::model::instance::{
    InstanceSpec, InstanceStatus, Phase, StatusWarning, Termination, Usage,
};
use crate::store::ObjectKey;
use crate::supervise::{self, Backoff};

/// What the agent keeps about a running instance in its local table, so a restarted node
/// process can adopt the container and keep its address and restart count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub uid: String,
    pub container_id: String,
    pub ip: Ipv4Addr,
    pub pid: Option<i32>,
    /// Start time of `pid` (see `supervise::start_ticks`).
    pub ticks: Option<u64>,
    pub restarts: u32,
    pub started_at: String,
}

/// Why a start did not produce a running container.
struct StartError {
    reason: &'static str,
    message: String,
}

enum Ended {
    Exited(Option<i32>),
    LivenessFailed(String),
    Stop,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The container id: unique per instance incarnation, readable, at most 64 characters.
pub fn container_id(namespace: &str, name: &str, uid: &str) -> String {
    let uid: String = uid.chars().filter(|c| *c != '-').take(8).collect();
    let mut base = format!("{namespace}.{name}");
    base.truncate(64 - 1 - uid.len());
    format!("{base}.{uid}")
}

pub struct Instance {
    pub key: ObjectKey,
    pub uid: String,
    pub spec: InstanceSpec,
}

pub async fn run(
    shared: Arc<Shared>,
    inst: Instance,
    adopted: Option<Record>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(mut sup) = Supervisor::new(shared, inst, adopted).await else {
        // Nothing was created (it said why in its status): wait to be stopped.
        stopped(&mut stop).await;
        return;
    };
    sup.main(&mut stop).await;
    sup.teardown().await;
}

struct Supervisor {
    shared: Arc<Shared>,
    key: ObjectKey,
    spec: InstanceSpec,
    record: Record,
    status: InstanceStatus,
    backoff: Backoff,
    adopted_pid: Option<(i32, u64)>,
    log: std::path::PathBuf,
    scratch: std::path::PathBuf,
}

impl Supervisor {
    async fn new(
        shared: Arc<Shared>,
        inst: Instance,
        adopted: Option<Record>,
    ) -> Option<Supervisor> {
        let Instance { key, uid, spec } = inst;
        let mut status = InstanceStatus {
            node: shared.node.clone(),
            revision: spec.revision.clone().unwrap_or_default(),
            ..Default::default()
        };
        let network = shared.wait_network().await?;
        status.warnings = network
            .degraded
            .map(|d| StatusWarning {
                reason: d.reason().into(),
                message: d.message().into(),
            })
            .into_iter()
            .collect();
        let (record, adopted_pid) = match adopted {
            Some(r) => {
                let live = match (r.pid, r.ticks) {
                    (Some(pid), Some(t)) if supervise::alive(pid, t) => Some((pid, t)),
                    _ => None,
                };
                if live.is_none() {
                    status.last_termination = Some(Termination {
                        exit_code: None,
                        reason: "Unknown".into(),
                        message: "the container ended while the node process was down".into(),
                        finished_at: now_rfc3339(),
                    });
                }
                (r, live)
            }
            None => {
                let id = container_id(&key.namespace, &key.name, &uid);
                match shared.new_record(&key, &uid, &id, &network) {
                    Some(r) => (r, None),
                    None => {
                        status.phase = Phase::Pending;
                        status.reason = "NoAddress".into();
                        status.message = format!("node subnet {} is full", network.subnet);
                        shared.report(&key, &uid, &status);
                        return None;
                    }
                }
            }
        };
        status.ip = record.ip.to_string();
        status.container_id = record.container_id.clone();
        status.restarts = record.restarts;
        let mut backoff = Backoff::default();
        for _ in 0..record.restarts.min(1) {
            backoff.next_delay(Duration::ZERO);
        }
        Some(Supervisor {
            log: logs::log_path(&shared.dirs.logs, &key.namespace, &key.name),
            scratch: shared.dirs.volumes.join(&key.namespace).join(&key.name),
            shared,
            key,
            spec,
            record,
            status,
            backoff,
            adopted_pid,
        })
    }

    fn report(&self) {
        self.shared
            .report(&self.key, &self.record.uid, &self.status);
    }

    /// The claims this instance mounts.
    fn claims(&self) -> Vec<String> {
        self.spec
            .pod
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| Some(v.persistent_volume_claim.as_ref()?.claim_name.clone()))
            .collect()
    }

    async fn main(&mut self, stop: &mut watch::Receiver<bool>) {
        let mut first = true;
        if self.adopted_pid.is_none() {
            let claims = self.claims();
            if !claims.is_empty() {
                super::claims::restore(&self.shared, &self.key.namespace, &claims).await;
            }
        }
        loop {
            let started = Instant::now();
            let pid = match self.adopted_pid.take() {
                Some(p) => {
                    tracing::info!(instance = %self.key, pid = p.0, "adopted a running container");
                    Ok(p)
                }
                None => {
                    // Not the first start, or the first after it died while the node was
                    // down: a restart.
                    if !first || self.status.last_termination.is_some() {
                        self.record.restarts += 1;
                        self.status.restarts = self.record.restarts;
                        self.shared.metrics.restarts.inc();
                    }
                    self.start().await
                }
            };
            first = false;
            let ended = match pid {
                Ok((pid, ticks)) => {
                    self.record.pid = Some(pid);
                    self.record.ticks = Some(ticks);
                    self.shared.save_record(&self.key, &self.record);
                    self.status.phase = Phase::Running;
                    self.status.pid = Some(pid);
                    self.status.started_at = self.record.started_at.clone();
                    self.status.reason.clear();
                    self.status.message.clear();
                    self.report();
                    let ended = self.monitor(pid, ticks, stop).await;
                    if matches!(ended, Ended::Stop) {
                        return;
                    }
                    let code = match &ended {
                        Ended::Exited(code) => *code,
                        _ => None,
                    };
                    let oom = crate::container::runtime::oom_kills(&self.record.container_id)
                        .unwrap_or(0)
                        > 0;
                    self.remove_container().await;
                    self.record.pid = None;
                    self.record.ticks = None;
                    self.shared.save_record(&self.key, &self.record);
                    let (reason, message) = match &ended {
                        _ if oom => ("OOMKilled", "the memory limit was exceeded".to_string()),
                        Ended::LivenessFailed(m) => ("LivenessProbeFailed", m.clone()),
                        Ended::Exited(Some(0)) => ("Completed", String::new()),
                        Ended::Exited(Some(c)) => ("Error", format!("exit code {c}")),
                        Ended::Exited(None) => ("Error", "the container ended".to_string()),
                        Ended::Stop => unreachable!("returned above"),
                    };
                    tracing::info!(instance = %self.key, reason, %message, "instance ended");
                    self.status.last_termination = Some(Termination {
                        exit_code: code,
                        reason: reason.into(),
                        message,
                        finished_at: now_rfc3339(),
                    });
                    self.status.pid = None;
                    self.status.ready = false;
                    self.status.ready_since.clear();
                    let policy = self.spec.pod.restart_policy.as_deref().unwrap_or("Always");
                    let restart = match policy {
                        "Never" => false,
                        "OnFailure" => code != Some(0) || reason != "Completed",
                        _ => true,
                    };
                    if !restart {
                        self.status.phase = if reason == "Completed" {
                            Phase::Succeeded
                        } else {
                            Phase::Failed
                        };
                        self.report();
                        stopped(stop).await;
                        return;
                    }
                    started.elapsed()
                }
                Err(e) => {
                    tracing::warn!(instance = %self.key, reason = e.reason, message = %e.message, "instance did not start");
                    self.status.phase = Phase::Failed;
                    self.status.ready = false;
                    self.status.ready_since.clear();
                    self.status.pid = None;
                    self.status.reason = e.reason.into();
                    self.status.message = e.message;
                    Duration::ZERO
                }
            };
            let delay = self.backoff.next_delay(ended);
            if self.backoff.crash_looping() && self.status.phase != Phase::Failed {
                self.status.phase = Phase::CrashLoopBackOff;
                self.status.reason = "CrashLoopBackOff".into();
                self.status.message = format!("back-off {}s restarting", delay.as_secs());
            }
            self.report();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stopped(stop) => return,
            }
        }
    }

    /// Creates, starts and wires up the container. On failure nothing is left behind.
    async fn start(&mut self) -> Result<(i32, u64), StartError> {
        let name = self.key.name.clone();
        let paths = translate::Paths {
            images: self.shared.dirs.images.clone(),
            log: self.log.clone(),
            scratch: self.scratch.clone(),
            claims: self.shared.dirs.claims.join(&self.key.namespace),
        };
        let network = self.shared.network().expect("waited for in new()");
        let bridge = crate::container::Network::Bridge {
            bridge: network.bridge.clone(),
            address: format!("{}/{}", self.record.ip, network.subnet.prefix),
        };
        let spec =
            translate::container_spec(&self.record.container_id, &name, &self.spec, &paths, bridge)
                .map_err(|message| StartError {
                    reason: "InvalidSpec",
                    message,
                })?;
        if let Err((reason, message)) = super::images::ensure(&self.shared, &spec.image.name).await
        {
            return Err(StartError { reason, message });
        }
        for m in &spec.mounts {
            if m.host_path.starts_with(&self.shared.dirs.volumes)
                || m.host_path.starts_with(&self.shared.dirs.claims)
            {
                let _ = std::fs::create_dir_all(&m.host_path);
            }
        }
        let _permit = self.shared.starts.acquire().await.expect("never closed");
        let t0 = Instant::now();
        // A container of ours left from a crash mid-start has the same id.
        self.remove_container().await;
        let pid = self
            .shared
            .containers
            .run(&spec)
            .await
            .map_err(|message| StartError {
                reason: "ContainerCannotRun",
                message,
            })?;
        let ticks = supervise::start_ticks(pid).unwrap_or(0);
        self.record.started_at = now_rfc3339();
        self.shared
            .metrics
            .start_duration
            .observe(t0.elapsed().as_secs_f64());
        Ok((pid, ticks))
    }

    /// Runs until the container ends, its liveness probe fails or a stop is asked for.
    async fn monitor(&mut self, pid: i32, ticks: u64, stop: &mut watch::Receiver<bool>) -> Ended {
        let c = translate::main_container(&self.spec).ok();
        let ports = c.map(translate::named_ports).unwrap_or_default();
        let probe = |p: &Option<crate::model::workload::Probe>| -> Option<ProbeSettings> {
            health::settings(p.as_ref()?, &ports).ok()
        };
        let liveness = c.and_then(|c| probe(&c.liveness_probe));
        let readiness = c.and_then(|c| probe(&c.readiness_probe));
        let target = Target {
            ip: IpAddr::V4(self.record.ip),
            pid,
        };
        let start = tokio::time::Instant::now();
        let mut live_tracker = liveness.as_ref().map(ProbeTracker::new);
        let mut ready_tracker = readiness.as_ref().map(ProbeTracker::new);
        let mut next_live = liveness.as_ref().map(|s| start + s.initial_delay);
        let mut next_ready = readiness.as_ref().map(|s| start + s.initial_delay);
        if readiness.is_none() && !self.status.ready {
            self.status.ready = true;
            self.status.ready_since = now_rfc3339();
            self.report();
        }
        let claims = self.claims();
        let mut claim_prints = std::collections::HashMap::new();
        let mut claim_tick = tokio::time::interval(super::claims::SYNC_EVERY);
        let mut cpu = usage::CpuRate::default();
        let mut usage_tick = tokio::time::interval(self.shared.settings.usage_report);
        let exit = supervise::wait_exit(pid, ticks);
        tokio::pin!(exit);
        let far = start + Duration::from_secs(86400 * 365);
        loop {
            // Biased: an exit that is already known wins over a probe that is also due (a
            // dead server would otherwise be reported as a failed liveness probe).
            tokio::select! {
                biased;
                code = &mut exit => return Ended::Exited(code),
                _ = stopped(stop) => return Ended::Stop,
                _ = tokio::time::sleep_until(next_live.unwrap_or(far)) => {
                    let s = liveness.clone().expect("scheduled only with a probe");
                    next_live = Some(tokio::time::Instant::now() + s.period);
                    let result = run_probe(target, &s).await;
                    let tracker = live_tracker.as_mut().expect("with the probe");
                    if tracker.record(result.is_ok()) == Health::Failing {
                        let why = result.err().unwrap_or_default();
                        return Ended::LivenessFailed(format!(
                            "liveness probe failed {} times: {why}", s.failure_threshold
                        ));
                    }
                }
                _ = tokio::time::sleep_until(next_ready.unwrap_or(far)) => {
                    let s = readiness.clone().expect("scheduled only with a probe");
                    next_ready = Some(tokio::time::Instant::now() + s.period);
                    let result = run_probe(target, &s).await;
                    let tracker = ready_tracker.as_mut().expect("with the probe");
                    let ready = tracker.record(result.is_ok()) == Health::Passing;
                    if ready != self.status.ready {
                        self.status.ready = ready;
                        self.status.ready_since = if ready { now_rfc3339() } else { String::new() };
                        self.status.reason = if ready { String::new() } else { "ReadinessProbeFailed".into() };
                        self.status.message = result.err().unwrap_or_default();
                        self.report();
                    }
                }
                _ = claim_tick.tick(), if !claims.is_empty() => {
                    super::claims::push_changed(&self.shared, &self.key.namespace, &claims, &mut claim_prints).await;
                }
                _ = usage_tick.tick() => {
                    let id = &self.record.container_id;
                    let millis = usage::cpu_nanos(id).and_then(|n| cpu.sample(std::time::Instant::now(), n));
                    if let (Some(cpu_millis), Some(memory_bytes)) = (millis, usage::memory_working_set(id)) {
                        self.shared.metrics.record_usage(&self.key, cpu_millis, memory_bytes);
                        self.status.usage = Some(Usage {
                            cpu_millis,
                            memory_bytes,
                            timestamp: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                            window_ms: self.shared.settings.usage_report.as_millis() as u64,
                        });
                        self.report();
                    }
                    let (log, max, keep) = (self.log.clone(), self.shared.settings.log_max_bytes, self.shared.settings.log_keep);
                    let _ = tokio::task::spawn_blocking(move || logs::rotate_if_needed(&log, max, keep)).await;
                }
            }
        }
    }

    async fn remove_container(&self) {
        let id = &self.record.container_id;
        if let Err(e) = self.shared.containers.remove(id).await {
            tracing::warn!(instance = %self.key, error = %e, "removing the container");
        }
        if let Some(n) = self.shared.network() {
            let id = id.clone();
            let _ = tokio::task::spawn_blocking(move || n.detach(&id)).await;
        }
    }

    /// The instance is gone from this node: stop politely, then remove every trace.
    async fn teardown(&mut self) {
        if let (Some(pid), Some(ticks)) = (self.record.pid, self.record.ticks) {
            let grace = self
                .spec
                .pod
                .termination_grace_period_seconds
                .unwrap_or(30)
                .clamp(0, 300) as u64;
            let _ = self
                .shared
                .containers
                .kill(&self.record.container_id, "TERM")
                .await;
            let _ =
                tokio::time::timeout(Duration::from_secs(grace), supervise::wait_exit(pid, ticks))
                    .await;
        }
        self.remove_container().await;
        let (scratch, log, keep) = (
            self.scratch.clone(),
            self.log.clone(),
            self.shared.settings.log_keep,
        );
        let _ = tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(scratch);
            logs::remove(&log, keep);
        })
        .await;
        self.shared.forget(&self.key);
        tracing::info!(instance = %self.key, "instance removed from this node");
    }
}

/// Resolves once a stop is asked for (or the agent is gone); holds no borrow of the value.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn run_probe(target: Target, s: &ProbeSettings) -> Result<(), String> {
    let s = s.clone();
    tokio::task::spawn_blocking(move || health::check(target, &s))
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_unique_per_incarnation_and_short() {
        let a = container_id("default", "web-0", "0123abcd-ef01-...");
        assert_eq!(a, "default.web-0.0123abcd");
        assert_ne!(a, container_id("default", "web-0", "99999999-0000"));
        let long = container_id(&"n".repeat(63), &"x".repeat(200), "deadbeef-1");
        assert_eq!(long.len(), 64);
        assert!(long.ends_with(".deadbeef"));
        crate::container::spec::validate_id(&long).unwrap();
    }
}
