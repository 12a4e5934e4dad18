//! One task per VM instance on this node: check the spec against this host, start
//! `omnicloud __vmm run` (or adopt the VMM a previous node process left running), mark it
//! ready at the guest's first serial byte, sample its usage, restart it by the restart
//! policy with backoff, and report every change of status. It ends when the director asks
//! it to stop (the instance was deleted or moved), after ending the VMM and removing its
//! files, log and record.
//!
//! Restart policy (the VirtualMachine's `restartPolicy`): `Always` (default) boots the VM
//! again whatever ended it; `OnFailure` not after a poweroff; `Never` not at all. A guest
//! reset is a reboot: booted again at once unless the policy is `Never`.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use super::Shared;
use crate::model::instance::{InstanceStatus, Phase, Termination, Usage};
use crate::model::VirtualMachineSpec;
use crate::store::ObjectKey;
use crate::supervise::{self, Backoff};
use crate::vmm::VmSpec;

/// What the director keeps about a running VM in its local table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub uid: String,
    pub pid: Option<i32>,
    /// Start time of `pid` (see `supervise::start_ticks`).
    pub ticks: Option<u64>,
    pub restarts: u32,
    pub started_at: String,
    /// The VM's address in the node subnet (VMs with `network.bridge: true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<std::net::Ipv4Addr>,
}

pub struct VmInstance {
    pub key: ObjectKey,
    pub uid: String,
    pub revision: String,
    pub vm: VirtualMachineSpec,
}

/// How one run of the VMM ended.
struct Ended {
    /// poweroff, reset, crashed, killed, error, unknown.
    reason: &'static str,
    exit_code: Option<i32>,
    message: String,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The VMM's spec for this VM: the VirtualMachine's fields, the serial console to the
/// instance log. A worker VM boots the director's worker image with what it needs to join
/// on the command line (before the user's part).
pub fn vmm_spec(
    vm: &VirtualMachineSpec,
    serial_log: &Path,
    worker: Option<&Worker>,
    net: Option<&VmNet>,
) -> VmSpec {
    let disk = vm.disks.iter().flatten().next();
    let mut spec = VmSpec {
        vcpus: vm.cpu.cores.clamp(0, u32::MAX as i64) as u32,
        memory_mib: vm.memory.guest.bytes() >> 20,
        kernel: vm.kernel.clone().into(),
        initrd: vm.initrd.clone().map(Into::into),
        cmdline: vm.cmdline.clone().unwrap_or_default(),
        disk: disk.map(|d| d.image.clone().into()),
        disk_read_only: disk.and_then(|d| d.read_only).unwrap_or(false),
        serial_log: Some(serial_log.to_path_buf()),
        serial_stdout: false,
        serial_socket: None,
        net: None,
        agent_socket: None,
    };
    if let (Some(w), true) = (worker, vm.worker == Some(true)) {
        if vm.kernel.is_empty() {
            spec.kernel = w.kernel.clone();
        }
        if vm.initrd.is_none() {
            spec.initrd = Some(w.initrd.clone());
        }
        let join = crate::appliance::init::worker_cmdline(
            &w.name,
            std::slice::from_ref(&w.join_addr),
            &w.token,
            net.map(|n| (n.cidr(), n.gateway)),
        );
        spec.cmdline = [join.as_str(), w.extra.trim(), spec.cmdline.trim()]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
    } else if let Some(n) = net {
        // Linux's own IP autoconfiguration: ip=client::gateway:netmask::eth0:off.
        let mask = std::net::Ipv4Addr::from(u32::MAX << (32 - n.prefix as u32));
        let ip = format!("ip={}::{}:{mask}::eth0:off", n.ip, n.gateway);
        spec.cmdline = format!("{} {ip}", spec.cmdline).trim().to_string();
    }
    if let Some(n) = net {
        spec.net = Some(crate::vmm::spec::NetSpec {
            tap: n.tap.clone(),
            mac: n.mac(),
            bridge: Some(n.bridge.clone()),
        });
    }
    spec
}

/// A VM's place on the node network: a tap on the node bridge and an address.
pub struct VmNet {
    pub tap: String,
    pub bridge: String,
    pub ip: std::net::Ipv4Addr,
    pub prefix: u8,
    pub gateway: std::net::Ipv4Addr,
}

impl VmNet {
    /// Locally administered, derived from the address (unique in the cluster as it is).
    pub fn mac(&self) -> String {
        let o = self.ip.octets();
        format!("02:0c:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
    }

    pub fn cidr(&self) -> String {
        format!("{}/{}", self.ip, self.prefix)
    }
}

/// A tap name per VM incarnation, within Linux's 15 bytes.
pub fn tap_name(key: &ObjectKey, uid: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("{}/{}/{uid}", key.namespace, key.name));
    format!(
        "ovm{}",
        d.iter()
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// What a worker VM is booted with.
pub struct Worker {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The guest's node name: the instance name.
    pub name: String,
    pub join_addr: String,
    pub token: String,
    /// The director's `worker_cmdline`, after the join arguments.
    pub extra: String,
}

/// A VMM spec error in the VirtualMachine's own field names.
fn spec_error(e: &crate::vmm::VmmError) -> String {
    match e {
        crate::vmm::VmmError::InvalidSpec { field, message } => {
            let field = match field.as_str() {
                "vcpus" => "spec.cpu.cores",
                "memory_mib" => "spec.memory.guest",
                "kernel" => "spec.kernel",
                "initrd" => "spec.initrd",
                "disk" => "spec.disks[0].image",
                "cmdline" => "spec.cmdline",
                other => other,
            };
            format!("{field}: {message}")
        }
        other => other.one_line(),
    }
}

pub async fn run(
    shared: Arc<Shared>,
    inst: VmInstance,
    adopted: Option<Record>,
    mut stop: watch::Receiver<bool>,
) {
    let mut sup = Supervisor::new(shared, inst, adopted);
    sup.main(&mut stop).await;
    sup.teardown().await;
}

struct Supervisor {
    shared: Arc<Shared>,
    key: ObjectKey,
    vm: VirtualMachineSpec,
    record: Record,
    status: InstanceStatus,
    backoff: Backoff,
    adopted: Option<(i32, u64)>,
    dir: PathBuf,
    log: PathBuf,
    /// The serial log's size just before the VMM started: the first byte after it means
    /// the guest runs.
    serial_mark: u64,
}

impl Supervisor {
    fn new(shared: Arc<Shared>, inst: VmInstance, adopted: Option<Record>) -> Supervisor {
        let VmInstance {
            key,
            uid,
            revision,
            vm,
        } = inst;
        let mut status = InstanceStatus {
            node: shared.node.clone(),
            revision,
            ..Default::default()
        };
        let (record, live) = match adopted {
            Some(r) => {
                let live = match (r.pid, r.ticks) {
                    (Some(pid), Some(t)) if supervise::alive(pid, t) => Some((pid, t)),
                    _ => None,
                };
                if live.is_none() {
                    status.last_termination = Some(Termination {
                        exit_code: None,
                        reason: "Unknown".into(),
                        message: "the VM ended while the node process was down".into(),
                        finished_at: now_rfc3339(),
                    });
                }
                (r, live)
            }
            None => (
                Record {
                    uid,
                    pid: None,
                    ticks: None,
                    restarts: 0,
                    started_at: String::new(),
                    ip: None,
                },
                None,
            ),
        };
        status.restarts = record.restarts;
        Supervisor {
            dir: shared.vm_dir(&key),
            log: crate::agent::logs::log_path(&shared.logs, &key.namespace, &key.name),
            shared,
            key,
            vm,
            record,
            status,
            backoff: Backoff::default(),
            adopted: live,
            serial_mark: 0,
        }
    }

    fn report(&self) {
        self.shared
            .report(&self.key, &self.record.uid, &self.status);
    }

    async fn main(&mut self, stop: &mut watch::Receiver<bool>) {
        let mut first = true;
        loop {
            let started = Instant::now();
            let adopted = self.adopted.is_some();
            let pid = match self.adopted.take() {
                Some(p) => {
                    tracing::info!(instance = %self.key, pid = p.0, "adopted a running VM");
                    Ok(p)
                }
                None => {
                    if !first || self.status.last_termination.is_some() {
                        self.record.restarts += 1;
                        self.status.restarts = self.record.restarts;
                        self.shared.metrics.restarts.inc();
                    }
                    self.start().await
                }
            };
            first = false;
            let (pid, ticks) = match pid {
                Ok(p) => p,
                Err(message) => {
                    // A spec this host refuses: nothing was started; say why and wait for a
                    // new spec (a new instance) rather than retry the same refusal.
                    tracing::warn!(instance = %self.key, %message, "VM refused");
                    self.status.phase = Phase::Failed;
                    self.status.ready = false;
                    self.status.reason = "InvalidSpec".into();
                    self.status.message = message;
                    self.report();
                    stopped(stop).await;
                    return;
                }
            };
            self.record.pid = Some(pid);
            self.record.ticks = Some(ticks);
            self.shared.save_record(&self.key, &self.record);
            self.status.phase = Phase::Running;
            self.status.pid = Some(pid);
            self.status.started_at = self.record.started_at.clone();
            self.status.reason.clear();
            self.status.message.clear();
            self.report();
            self.shared
                .metrics
                .running(&self.key, self.vm.memory.guest.bytes());
            let Some(ended) = self.monitor(pid, ticks, started, adopted, stop).await else {
                return;
            };
            self.record.pid = None;
            self.record.ticks = None;
            self.shared.save_record(&self.key, &self.record);
            tracing::info!(instance = %self.key, reason = ended.reason, message = %ended.message, "VM ended");
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
            let policy = self.vm.restart_policy.as_deref().unwrap_or("Always");
            let restart = match policy {
                "Never" => false,
                "OnFailure" => ended.reason != "poweroff",
                _ => true,
            };
            if !restart {
                self.status.phase = if ended.reason == "poweroff" {
                    Phase::Succeeded
                } else {
                    Phase::Failed
                };
                self.report();
                stopped(stop).await;
                return;
            }
            // A reboot the guest asked for is not a failure: no backoff.
            let delay = if ended.reason == "reset" {
                Duration::ZERO
            } else {
                self.backoff.next_delay(started.elapsed())
            };
            if self.backoff.crash_looping() {
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

    /// Checks the spec against this host, then starts the VMM. On a refusal nothing was
    /// started.
    async fn start(&mut self) -> Result<(i32, u64), String> {
        let worker = Worker {
            kernel: self.shared.worker.worker_kernel.clone(),
            initrd: self.shared.worker.worker_initrd.clone(),
            name: self.key.name.clone(),
            join_addr: self.shared.join_addr.clone(),
            token: self.shared.join_token.clone(),
            extra: self.shared.worker.worker_cmdline.clone(),
        };
        let net = match self.vm.network.as_ref().and_then(|n| n.bridge) {
            Some(true) => Some(self.net().ok_or_else(|| {
                "no free address in the node subnet for the VM's network".to_string()
            })?),
            _ => None,
        };
        if let Some(n) = &net {
            self.status.ip = n.ip.to_string();
        }
        let spec = vmm_spec(&self.vm, &self.log, Some(&worker), net.as_ref());
        let (dir, log) = (self.dir.clone(), self.log.clone());
        let checked = tokio::task::spawn_blocking(move || -> Result<PathBuf, String> {
            for d in [Some(dir.as_path()), log.parent()].into_iter().flatten() {
                std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
            }
            spec.validate().map_err(|e| spec_error(&e))?;
            let path = dir.join("spec.json");
            let json = serde_json::to_vec_pretty(&spec).expect("JSON");
            // A worker VM's command line holds the cluster token: owner-only.
            let written = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(&json));
            written.map_err(|e| format!("writing {}: {e}", path.display()))?;
            Ok(path)
        })
        .await
        .map_err(|e| e.to_string())??;
        let out = |name: &str| {
            File::options()
                .create(true)
                .append(true)
                .open(self.dir.join(name))
                .map_err(|e| format!("opening {name}: {e}"))
        };
        self.serial_mark = log_size(&self.log);
        // The VMM prints a JSON line at start and one at exit (with its exit counters);
        // kept in a file, not a pipe, so an adopted VMM's end can still be read.
        let child = std::process::Command::new(&self.shared.exe)
            .args(["__vmm", "run", "--spec"])
            .arg(&checked)
            .stdin(Stdio::null())
            .stdout(out("vmm.jsonl")?)
            .stderr(out("vmm.err")?)
            .spawn()
            .map_err(|e| format!("starting the VMM: {e}"))?;
        let pid = child.id() as i32;
        // Reaped by supervise::wait_exit (waitpid on the pid), not through this handle.
        drop(child);
        let ticks = supervise::start_ticks(pid).unwrap_or(0);
        self.record.started_at = now_rfc3339();
        Ok((pid, ticks))
    }

    /// The VM's tap and address (allocated on its first start, kept across restarts).
    fn net(&mut self) -> Option<VmNet> {
        let network = self.shared.network()?;
        let ip = match self.record.ip {
            Some(ip) => ip,
            None => self
                .shared
                .allocate(&self.key, &mut self.record, network.subnet)?,
        };
        Some(VmNet {
            tap: tap_name(&self.key, &self.record.uid),
            bridge: network.bridge.clone(),
            ip,
            prefix: network.subnet.prefix,
            gateway: network.subnet.gateway(),
        })
    }

    /// Runs until the VMM ends (Some) or a stop is asked for (None).
    async fn monitor(
        &mut self,
        pid: i32,
        ticks: u64,
        started: Instant,
        adopted: bool,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Ended> {
        // Measured before the VMM was started: a guest may print all it has before this.
        let serial_at_start = self.serial_mark;
        // An adopted VM booted under the previous node process.
        let mut booted = false;
        if adopted {
            booted = true;
            self.status.ready = true;
            self.status.ready_since = now_rfc3339();
            self.report();
        }
        let mut boot_poll = tokio::time::interval(Duration::from_millis(2));
        let mut usage_tick = tokio::time::interval(self.shared.settings.usage_report);
        let mut cpu = crate::agent::usage::CpuRate::default();
        let exit = supervise::wait_exit(pid, ticks);
        tokio::pin!(exit);
        loop {
            tokio::select! {
                biased;
                code = &mut exit => return Some(self.ended(code)),
                _ = stopped(stop) => return None,
                // Ready at the first serial byte: the guest runs (an adopted VM already had).
                _ = boot_poll.tick(), if !booted => {
                    if log_size(&self.log) > serial_at_start {
                        booted = true;
                        self.shared.metrics.boot_duration.observe(started.elapsed().as_secs_f64());
                        self.status.ready = true;
                        self.status.ready_since = now_rfc3339();
                        self.report();
                    } else if started.elapsed() > Duration::from_secs(1) {
                        boot_poll = tokio::time::interval(Duration::from_millis(100));
                        boot_poll.tick().await;
                    }
                }
                _ = usage_tick.tick() => {
                    let millis = supervise::cpu_nanos(pid).and_then(|n| cpu.sample(Instant::now(), n));
                    if let (Some(cpu_millis), Some(memory_bytes)) = (millis, supervise::rss_bytes(pid)) {
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
                    let _ = tokio::task::spawn_blocking(move || crate::agent::logs::rotate_if_needed(&log, max, keep)).await;
                }
            }
        }
    }

    /// Why the VMM ended: its exit status when it was our child, else its last JSON line.
    fn ended(&self, code: Option<i32>) -> Ended {
        let last = last_json_line(&self.dir.join("vmm.jsonl"));
        let exit = last
            .as_ref()
            .and_then(|v| v["exit"].as_str().map(str::to_string));
        let counter = |k: &str| {
            last.as_ref()
                .and_then(|v| v["metrics"][k].as_u64())
                .unwrap_or(0)
        };
        let stderr = last_line(&self.dir.join("vmm.err"));
        let (reason, message) = match (code, exit.as_deref()) {
            (Some(0), _) | (None, Some("poweroff")) => ("poweroff", "the guest powered off".into()),
            (Some(crate::vmm::helper::EXIT_RESET), _) | (None, Some("reset")) => {
                ("reset", "the guest reset itself".into())
            }
            (Some(c), _) if c > 128 => (
                "killed",
                format!("the VMM was killed by signal {}", c - 128),
            ),
            (_, Some("crashed")) => ("crashed", stderr),
            (Some(c), _) => ("error", format!("exit code {c}: {stderr}")),
            (None, _) => (
                "unknown",
                "the VMM ended; it was not this node's child".into(),
            ),
        };
        self.shared
            .metrics
            .exited(reason, counter("pio_exits"), counter("mmio_exits"));
        Ended {
            reason,
            exit_code: code,
            message,
        }
    }

    /// The VM is gone from this node: end the VMM, then remove every trace.
    async fn teardown(&mut self) {
        if let (Some(pid), Some(ticks)) = (self.record.pid, self.record.ticks) {
            end_vmm(pid, ticks).await;
        }
        let (dir, log, keep) = (
            self.dir.clone(),
            self.log.clone(),
            self.shared.settings.log_keep,
        );
        let _ = tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(dir);
            crate::agent::logs::remove(&log, keep);
        })
        .await;
        self.shared.forget(&self.key);
        tracing::info!(instance = %self.key, "VM removed from this node");
    }
}

/// SIGTERM, then SIGKILL after a grace period (the guest has no shutdown channel yet).
async fn end_vmm(pid: i32, ticks: u64) {
    if !supervise::alive(pid, ticks) {
        let _ = supervise::wait_exit(pid, ticks).await;
        return;
    }
    // SAFETY: kill(2) with a pid we started and checked by its start time.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let waited = tokio::time::timeout(Duration::from_secs(5), supervise::wait_exit(pid, ticks));
    if waited.await.is_err() && supervise::alive(pid, ticks) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = supervise::wait_exit(pid, ticks).await;
    }
}

/// A VM a previous node process ran for an instance that is no longer here.
pub async fn remove_leftover(shared: &Shared, key: &ObjectKey, record: &Record) {
    tracing::info!(instance = %key, "removing a VM no longer assigned here");
    if let (Some(pid), Some(ticks)) = (record.pid, record.ticks) {
        end_vmm(pid, ticks).await;
    }
    let _ = std::fs::remove_dir_all(shared.vm_dir(key));
    crate::agent::logs::remove(
        &crate::agent::logs::log_path(&shared.logs, &key.namespace, &key.name),
        shared.settings.log_keep,
    );
    shared.forget(key);
}

fn log_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn last_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        })
        .unwrap_or_default()
}

fn last_json_line(path: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().rev().find_map(|l| {
        serde_json::from_str::<Value>(l)
            .ok()
            .filter(|v| v.get("exit").is_some())
    })
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(yaml: &str) -> VirtualMachineSpec {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn the_vmm_spec_follows_the_virtual_machine() {
        let v = vm(
            "cpu: {cores: 2}\nmemory: {guest: 256Mi}\nkernel: /k\ncmdline: console=ttyS0\n\
                    disks: [{name: root, image: /d.raw, readOnly: true}]\n",
        );
        let s = vmm_spec(&v, Path::new("/logs/x.log"), None, None);
        assert_eq!((s.vcpus, s.memory_mib), (2, 256));
        assert_eq!(s.kernel, PathBuf::from("/k"));
        assert_eq!(s.disk, Some(PathBuf::from("/d.raw")));
        assert!(s.disk_read_only);
        assert_eq!(s.cmdline, "console=ttyS0");
        assert_eq!(s.serial_log, Some(PathBuf::from("/logs/x.log")));
    }

    #[test]
    fn a_worker_vm_boots_the_worker_image_and_joins_this_cluster() {
        let v = vm("worker: true\ncpu: {cores: 2}\nmemory: {guest: 1Gi}\ncmdline: quiet\n");
        let w = Worker {
            kernel: "/data/worker/vmlinuz".into(),
            initrd: "/data/worker/initramfs.cpio.gz".into(),
            name: "workers-3".into(),
            join_addr: "10.0.0.1:7946".into(),
            token: "tok".into(),
            extra: "loglevel=3".into(),
        };
        let s = vmm_spec(&v, Path::new("/l.log"), Some(&w), None);
        assert_eq!(s.kernel, PathBuf::from("/data/worker/vmlinuz"));
        assert_eq!(
            s.initrd,
            Some(PathBuf::from("/data/worker/initramfs.cpio.gz"))
        );
        let plan = crate::appliance::init::plan(&s.cmdline, "x").unwrap();
        assert_eq!(plan.name, "workers-3");
        assert_eq!(plan.join, ["10.0.0.1:7946"]);
        assert_eq!(plan.token.as_deref(), Some("tok"));
        assert_eq!(plan.roles, ["agent"]);
        assert!(s.cmdline.ends_with(" loglevel=3 quiet"), "{}", s.cmdline);
        // Not a worker: the image is not used.
        let plain = vm("cpu: {cores: 1}\nmemory: {guest: 64Mi}\nkernel: /k\n");
        assert_eq!(
            vmm_spec(&plain, Path::new("/l.log"), Some(&w), None).cmdline,
            ""
        );
    }

    #[test]
    fn refusals_name_the_virtual_machine_field() {
        let v = vm("cpu: {cores: 1}\nmemory: {guest: 64Mi}\nkernel: /no/such/kernel\n");
        let e = vmm_spec(&v, Path::new("/tmp/x.log"), None, None)
            .validate()
            .unwrap_err();
        let msg = spec_error(&e);
        assert!(msg.starts_with("spec.kernel: /no/such/kernel"), "{msg}");
    }
}
