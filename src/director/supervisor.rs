//! VMs as a workload kind of the one supervisor ([`crate::supervise`]): check a VM
//! instance's spec against this host and start `omnicloud __vmm run` with it, mark it
//! ready at the guest's first serial byte, sample the VMM's usage, tell why it ended (the
//! VMM's exit and its last JSON line), and on stop end the VMM and remove its files.
//! Adoption, restart with backoff, records and statuses are the supervisor's.
//!
//! Restart policy (the VirtualMachine's `restartPolicy`): `Always` (default) boots the VM
//! again whatever ended it; `OnFailure` not after a poweroff; `Never` not at all. A guest
//! reset is a reboot: booted again at once unless the policy is `Never`.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::time::Instant as Tick;

use super::{Director, Shared};
use crate::model::instance::reasons;
use crate::model::{InstanceSpec, InstanceStatus, VirtualMachineSpec};
use crate::store::ObjectKey;
use crate::supervise::{
    self, CpuRate, Ended, Exit, Probe, Record, Run, StartError, Unit, Workload,
};
use crate::vmm::VmSpec;

/// A VM instance's part the director runs: its revision and VirtualMachine spec.
pub struct Vm {
    pub revision: String,
    pub vm: VirtualMachineSpec,
}

/// What the director keeps per VM beside the supervisor's fields.
pub struct VmFiles {
    /// `<vms>/<namespace>/<name>/`: the VMM's spec, stdout and stderr.
    dir: PathBuf,
    /// The serial log's size just before the VMM started: the first byte after it means
    /// the guest runs.
    serial_mark: u64,
}

/// Readiness of one run: at the guest's first serial byte.
pub struct Boot {
    booted: bool,
    next: Tick,
    period: Duration,
    started: Instant,
    serial_at_start: u64,
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
fn spec_error(e: crate::vmm::VmmError) -> VmStartError {
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
            let field = field.to_string();
            VmStartError::InvalidSpec { field, message }
        }
        other => VmStartError::Vmm(other),
    }
}

impl Workload for Director {
    type Spec = Vm;
    type State = VmFiles;
    type Probes = Boot;
    type Due = ();

    const RECORD_PREFIX: &'static str = super::RECORD_PREFIX;
    const NOUN: &'static str = "VM";

    /// The VM instances.
    fn select(spec: InstanceSpec) -> Option<Vm> {
        Some(Vm {
            revision: spec.revision.unwrap_or_default(),
            vm: spec.vm?,
        })
    }

    fn revision(spec: &Vm) -> String {
        spec.revision.clone()
    }

    /// VMs with `network.bridge: true` get a tap on the node bridge and an address.
    fn needs_network(spec: &Vm) -> bool {
        spec.vm.network.as_ref().and_then(|n| n.bridge) == Some(true)
    }

    fn restart_policy(spec: &Vm) -> Option<&str> {
        spec.vm.restart_policy.as_deref()
    }

    fn state(node: &Shared, key: &ObjectKey, _: &str, _: &mut InstanceStatus) -> VmFiles {
        VmFiles {
            dir: node.vm_dir(key),
            serial_mark: 0,
        }
    }

    /// Checks the spec against this host, then starts the VMM. On a refusal nothing was
    /// started (and it is not tried again: a new spec is a new instance).
    async fn start(unit: &mut Unit<Director>) -> Result<(i32, u64), StartError> {
        start_vmm(unit).await.map_err(|e| StartError {
            wait: false,
            reason: reasons::INVALID_SPEC,
            message: crate::error_chain(&e),
            retry: false,
        })
    }

    /// An adopted VM booted under the previous node process: ready at once.
    fn probes(unit: &mut Unit<Director>, run: &Run) -> (Boot, bool) {
        let guest = unit.spec.vm.memory.guest.bytes();
        unit.node.metrics.running(&unit.key, guest);
        let boot = Boot {
            booted: run.adopted,
            next: Tick::now(),
            period: Duration::from_millis(2),
            started: run.started,
            // Measured before the VMM was started: a guest may print all it has before this.
            serial_at_start: unit.state.serial_mark,
        };
        (boot, run.adopted)
    }

    fn next_probe(boot: &Boot) -> Option<(Tick, ())> {
        (!boot.booted).then_some((boot.next, ()))
    }

    /// Ready at the first serial byte: the guest runs.
    async fn probe(unit: &mut Unit<Director>, boot: &mut Boot, _: ()) -> Probe {
        if log_size(&unit.log) > boot.serial_at_start {
            boot.booted = true;
            let took = boot.started.elapsed().as_secs_f64();
            unit.node.metrics.boot_duration.observe(took);
            return Probe::Ready {
                ready: true,
                message: String::new(),
            };
        }
        if boot.started.elapsed() > Duration::from_secs(1) {
            boot.period = Duration::from_millis(100);
        }
        boot.next = Tick::now() + boot.period;
        Probe::Nothing
    }

    /// Of the VMM process (vCPU threads and touched guest memory included).
    fn usage(unit: &mut Unit<Director>, pid: i32, cpu: &mut CpuRate) -> Option<(u64, u64)> {
        let millis = supervise::cpu_nanos(pid).and_then(|n| cpu.sample(Instant::now(), n))?;
        let rss = supervise::rss_bytes(pid)?;
        unit.node.metrics.record_usage(&unit.key, millis, rss);
        Some((millis, rss))
    }

    /// Why the VMM ended: its exit status when it was our child, else its last JSON line.
    async fn inspect(unit: &mut Unit<Director>, exit: Exit) -> Ended {
        let code = match exit {
            Exit::Code(code) => code,
            Exit::Unhealthy(_) => None,
        };
        let dir = &unit.state.dir;
        let last = last_json_line(&dir.join("vmm.jsonl"));
        let exit = last
            .as_ref()
            .and_then(|v| v["exit"].as_str().map(str::to_string));
        let counter = |k: &str| {
            last.as_ref()
                .and_then(|v| v["metrics"][k].as_u64())
                .unwrap_or(0)
        };
        let stderr = last_line(&dir.join("vmm.err"));
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
        (unit.node.metrics).exited(reason, counter("pio_exits"), counter("mmio_exits"));
        Ended {
            reason,
            exit_code: code,
            message,
            succeeded: reason == "poweroff",
            reboot: reason == "reset",
        }
    }

    /// Ends the VMM, then removes its files.
    async fn stop(unit: &mut Unit<Director>) {
        if let (Some(pid), Some(ticks)) = (unit.record.pid, unit.record.ticks) {
            end_vmm(pid, ticks).await;
        }
        let dir = unit.state.dir.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    }

    async fn remove_leftover(node: &Shared, key: &ObjectKey, record: &Record) {
        tracing::info!(instance = %key, "removing a VM no longer assigned here");
        if let (Some(pid), Some(ticks)) = (record.pid, record.ticks) {
            end_vmm(pid, ticks).await;
        }
        let _ = std::fs::remove_dir_all(node.vm_dir(key));
    }

    fn forget(&self, key: &ObjectKey) {
        self.metrics.forget(key);
    }
}

/// Why a VM was not started (it is not tried again: a new spec is a new instance).
#[derive(Debug, thiserror::Error)]
pub enum VmStartError {
    #[error("no free address in the node subnet for the VM's network")]
    NoAddress,
    /// The spec does not fit this host: the VirtualMachine's field.
    #[error("{field}: {message}")]
    InvalidSpec { field: String, message: String },
    #[error(transparent)]
    Vmm(crate::vmm::VmmError),
    #[error("creating {0}")]
    Dir(PathBuf, #[source] std::io::Error),
    #[error("writing {0}")]
    Write(PathBuf, #[source] std::io::Error),
    #[error("opening {0}")]
    Open(String, #[source] std::io::Error),
    #[error("starting the VMM")]
    Spawn(#[source] std::io::Error),
    #[error("checking the spec")]
    Check(#[source] tokio::task::JoinError),
}

/// Writes the VMM's spec (checked against this host) and starts the VMM.
async fn start_vmm(unit: &mut Unit<Director>) -> Result<(i32, u64), VmStartError> {
    let node = unit.node.clone();
    let worker = Worker {
        kernel: node.worker.worker_kernel.clone(),
        initrd: node.worker.worker_initrd.clone(),
        name: unit.key.name.clone(),
        join_addr: node.join_addr.clone(),
        token: node.join_token.clone(),
        extra: node.worker.worker_cmdline.clone(),
    };
    let net = match Director::needs_network(&unit.spec) {
        true => Some(vm_net(unit).ok_or(VmStartError::NoAddress)?),
        false => None,
    };
    let spec = vmm_spec(&unit.spec.vm, &unit.log, Some(&worker), net.as_ref());
    let (dir, log) = (unit.state.dir.clone(), unit.log.clone());
    let checked = tokio::task::spawn_blocking(move || -> Result<PathBuf, VmStartError> {
        for d in [Some(dir.as_path()), log.parent()].into_iter().flatten() {
            std::fs::create_dir_all(d).map_err(|e| VmStartError::Dir(d.to_path_buf(), e))?;
        }
        spec.validate().map_err(spec_error)?;
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
        written.map_err(|e| VmStartError::Write(path.clone(), e))?;
        Ok(path)
    })
    .await
    .map_err(VmStartError::Check)??;
    let dir = &unit.state.dir;
    let out = |name: &str| {
        File::options()
            .create(true)
            .append(true)
            .open(dir.join(name))
            .map_err(|e| VmStartError::Open(name.to_string(), e))
    };
    unit.state.serial_mark = log_size(&unit.log);
    // The VMM prints a JSON line at start and one at exit (with its exit counters); kept
    // in a file, not a pipe, so an adopted VMM's end can still be read.
    let child = std::process::Command::new(&node.exe)
        .args(["__vmm", "run", "--spec"])
        .arg(&checked)
        .stdin(Stdio::null())
        .stdout(out("vmm.jsonl")?)
        .stderr(out("vmm.err")?)
        .spawn()
        .map_err(VmStartError::Spawn)?;
    let pid = child.id() as i32;
    // Reaped by supervise::wait_exit (waitpid on the pid), not through this handle.
    drop(child);
    Ok((pid, supervise::start_ticks(pid).unwrap_or(0)))
}

/// The VM's tap and address (the address came with its record).
fn vm_net(unit: &Unit<Director>) -> Option<VmNet> {
    let network = unit.node.network.get()?;
    Some(VmNet {
        tap: tap_name(&unit.key, &unit.record.uid),
        bridge: network.bridge.clone(),
        ip: unit.record.ip?,
        prefix: network.subnet.prefix,
        gateway: network.subnet.gateway(),
    })
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
        let msg = spec_error(e).to_string();
        assert!(msg.starts_with("spec.kernel: /no/such/kernel"), "{msg}");
    }
}
