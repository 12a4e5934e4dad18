//! The container lifecycle with youki's libcontainer: run (create + start), state, kill,
//! delete, list, under one runtime root (`state/`, `bundles/`, `layers/`).
//!
//! Call [`Runtime`] only from a single-threaded process (the helper): libcontainer clones,
//! and after a clone in a multi-threaded process only async-signal-safe code may run. The
//! node uses [`super::helper_command`] instead. [`become_subreaper`] and [`try_reap`] are
//! for the caller's side: they let it collect a container's exit status.
//!
//! May call: `image`, `spec`, libcontainer, libc.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::error::LibcontainerError;
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;
use serde::{Deserialize, Serialize};

use super::image;
use super::network::{NodeNetwork, Subnet};
use super::spec::{self, ContainerSpec, Network};
use super::{ContainerError, Result};

/// A container's lifecycle status, as libcontainer records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Stopped,
    Paused,
}

impl From<ContainerStatus> for Status {
    fn from(s: ContainerStatus) -> Self {
        match s {
            ContainerStatus::Creating => Status::Creating,
            ContainerStatus::Created => Status::Created,
            ContainerStatus::Running => Status::Running,
            ContainerStatus::Stopped => Status::Stopped,
            ContainerStatus::Paused => Status::Paused,
        }
    }
}

/// What `state` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    pub status: Status,
    /// The init process in the host pid namespace (also once it has exited).
    pub pid: Option<i32>,
    pub bundle: PathBuf,
    /// RFC 3339.
    pub created: Option<String>,
    /// OOM kills in the container's memory cgroup so far, where the kernel counts them.
    pub oom_kills: Option<u64>,
}

/// The runtime root and the operations on the containers under it.
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
}

fn runtime_err(what: impl Into<String>) -> impl FnOnce(LibcontainerError) -> ContainerError {
    let what = what.into();
    move |source| ContainerError::Runtime { what, source }
}

impl Runtime {
    pub fn new(root: impl Into<PathBuf>) -> Runtime {
        Runtime { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// libcontainer's state root; one directory per container.
    pub fn state_root(&self) -> PathBuf {
        self.root.join("state")
    }

    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        self.root.join("bundles").join(id)
    }

    fn container_dir(&self, id: &str) -> Result<PathBuf> {
        spec::validate_id(id)?;
        Ok(self.state_root().join(id))
    }

    fn load(&self, id: &str) -> Result<Container> {
        let dir = self.container_dir(id)?;
        if !dir.join("state.json").exists() {
            return Err(ContainerError::NotFound(id.to_string()));
        }
        Container::load(dir).map_err(runtime_err(format!("loading container {id}")))
    }

    /// Creates and starts a container; returns its init pid. On any failure everything
    /// created so far (state, cgroup, rootfs mount, bundle) is removed again.
    pub fn run(&self, spec: &ContainerSpec) -> Result<i32> {
        spec.validate()?;
        let id = spec.id.as_str();
        let state_root = self.state_root();
        let bundles = self.root.join("bundles");
        for d in [&state_root, &bundles] {
            fs::create_dir_all(d)
                .map_err(|e| ContainerError::io(format!("creating {}", d.display()), e))?;
        }
        if state_root.join(id).exists() {
            return Err(ContainerError::AlreadyExists(id.to_string()));
        }
        let image = image::open(&spec.image.layout, &spec.image.name)?;
        let layers = image::unpack_layers(&self.root, &spec.image.layout, &image)?;
        let bundle = self.bundle_dir(id);
        match fs::create_dir(&bundle) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(ContainerError::AlreadyExists(id.to_string()))
            }
            Err(e) => {
                return Err(ContainerError::io(
                    format!("creating {}", bundle.display()),
                    e,
                ))
            }
        }
        let result = self.create_and_start(spec, &image.config, &layers, &bundle);
        if result.is_err() {
            if let Ok(Some((net, _))) = bridge_of(&spec.network) {
                net.detach(id);
            }
            if let Ok(mut c) = self.load(id) {
                let _ = c.delete(true);
            }
            let _ = fs::remove_dir_all(state_root.join(id));
            let _ = image::remove_bundle(&bundle);
        }
        result
    }

    fn create_and_start(
        &self,
        spec: &ContainerSpec,
        image: &image::ImageConfig,
        layers: &[PathBuf],
        bundle: &Path,
    ) -> Result<i32> {
        let id = spec.id.as_str();
        let (rootfs, kind) = image::mount_rootfs(layers, bundle)?;
        tracing::debug!(id, ?kind, "rootfs ready");
        let oci = spec::oci_spec(spec, image, &rootfs)?;
        spec::check_executable(&oci, &rootfs, &spec.mounts)?;
        let config = bundle.join("config.json");
        oci.save(&config).map_err(|e| {
            ContainerError::InvalidSpec(format!("writing {}: {e}", config.display()))
        })?;

        let stdout = open_log(&spec.stdout_path)?;
        let stderr = match &spec.stderr_path {
            Some(p) if p != &spec.stdout_path => open_log(p)?,
            _ => stdout
                .try_clone()
                .map_err(|e| ContainerError::io("duplicating the log fd", e))?,
        };
        let stdin =
            File::open("/dev/null").map_err(|e| ContainerError::io("opening /dev/null", e))?;

        let mut container = ContainerBuilder::new(id.to_string(), SyscallType::default())
            .with_root_path(self.state_root())
            .map_err(runtime_err("setting the state root"))?
            .validate_id()
            .map_err(runtime_err("checking the container id"))?
            .with_stdin(stdin)
            .with_stdout(stdout)
            .with_stderr(stderr)
            .as_init(bundle)
            .with_systemd(false)
            // pivot_root(2) refuses the initramfs root (a worker VM, the USB image):
            // there the container's root is entered with MS_MOVE + chroot, as runc
            // --no-pivot does.
            .with_no_pivot(root_is_initramfs())
            .with_detach(true)
            .build()
            .map_err(runtime_err(format!("creating container {id}")))?;
        let pid = container
            .pid()
            .map(|p| p.as_raw())
            .ok_or_else(|| ContainerError::Helper(format!("container {id} has no init pid")))?;
        if spec.network.isolated() {
            loopback_up(pid).map_err(|e| ContainerError::io("bringing up loopback", e))?;
        }
        if let Some((net, ip)) = bridge_of(&spec.network)? {
            net.attach(id, pid, ip)?;
        }
        container
            .start()
            .map_err(runtime_err(format!("starting container {id}")))?;
        Ok(pid)
    }

    /// The container's state, its status refreshed from /proc.
    pub fn state(&self, id: &str) -> Result<ContainerState> {
        let c = self.load(id)?;
        Ok(ContainerState {
            id: id.to_string(),
            status: c.status().into(),
            pid: c.pid().map(|p| p.as_raw()),
            bundle: c.bundle().clone(),
            created: c.created().map(|t| t.to_rfc3339()),
            oom_kills: oom_kills(id),
        })
    }

    /// Every container under the root.
    pub fn list(&self) -> Result<Vec<ContainerState>> {
        let dir = self.state_root();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ContainerError::io(format!("listing {}", dir.display()), e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if let Ok(s) = self.state(&id) {
                out.push(s);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Sends `signal` (TERM, SIGKILL, 9, ...) to the init process, or with `all` to every
    /// process in the container's cgroup.
    pub fn kill(&self, id: &str, signal: &str, all: bool) -> Result<()> {
        let sig = Signal::try_from(signal)
            .map_err(|_| ContainerError::InvalidSpec(format!("unknown signal {signal:?}")))?;
        let mut c = self.load(id)?;
        if c.status() == ContainerStatus::Stopped {
            return Err(ContainerError::WrongStatus {
                id: id.to_string(),
                status: "stopped".into(),
                message: "nothing to signal".into(),
            });
        }
        c.kill(sig, all)
            .map_err(runtime_err(format!("signalling container {id}")))
    }

    /// Removes the container: state, cgroup, rootfs mount and bundle. A running container
    /// needs `force` (it is killed with SIGKILL first).
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let bundle = self.bundle_dir(id);
        match self.load(id) {
            Ok(mut c) => {
                let status = c.status();
                if !force && matches!(status, ContainerStatus::Running | ContainerStatus::Paused) {
                    return Err(ContainerError::WrongStatus {
                        id: id.to_string(),
                        status: Status::from(status).name().into(),
                        message: "kill it first or delete with --force".into(),
                    });
                }
                c.delete(force || status != ContainerStatus::Stopped)
                    .map_err(runtime_err(format!("deleting container {id}")))?;
            }
            // A bundle without state: a crash between the two; clean it up.
            Err(ContainerError::NotFound(_)) if bundle.exists() => {}
            Err(e) => return Err(e),
        }
        let dir = self.container_dir(id)?;
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .map_err(|e| ContainerError::io(format!("removing {}", dir.display()), e))?;
        }
        if bundle.exists() {
            image::remove_bundle(&bundle)?;
        }
        Ok(())
    }
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
            Status::Paused => "paused",
        }
    }
}

/// The bridge and address of a `Network::Bridge`.
fn bridge_of(network: &Network) -> Result<Option<(NodeNetwork, std::net::Ipv4Addr)>> {
    let Network::Bridge { bridge, address } = network else {
        return Ok(None);
    };
    let bad =
        || ContainerError::InvalidSpec(format!("network address {address:?} is not IPV4/PREFIX"));
    let subnet = Subnet::parse(address).ok_or_else(bad)?;
    let ip = address
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(bad)?;
    Ok(Some((
        NodeNetwork {
            bridge: bridge.clone(),
            subnet,
            cluster: subnet,
            degraded: None,
        },
        ip,
    )))
}

fn open_log(path: &Path) -> Result<OwnedFd> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| ContainerError::io(format!("creating {}", parent.display()), e))?;
    }
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| ContainerError::io(format!("opening log file {}", path.display()), e))?;
    Ok(f.into())
}

/// The container's memory cgroup dir (v1 memory hierarchy, or the v2 unified one).
pub fn memory_cgroup_dir(id: &str) -> Option<PathBuf> {
    let rel = spec::cgroup_path(id);
    let rel = rel.trim_start_matches('/');
    [
        Path::new("/sys/fs/cgroup/memory").join(rel),
        Path::new("/sys/fs/cgroup").join(rel),
    ]
    .into_iter()
    .find(|d| d.join("memory.limit_in_bytes").exists() || d.join("memory.max").exists())
}

/// The oom_kill counter of the container's memory cgroup.
pub fn oom_kills(id: &str) -> Option<u64> {
    let dir = memory_cgroup_dir(id)?;
    ["memory.oom_control", "memory.events"]
        .iter()
        .filter_map(|f| fs::read_to_string(dir.join(f)).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
                .collect::<Vec<u64>>()
        })
        .next()
}

/// Sets IFF_UP on `lo` in the network namespace of `pid`, from a short-lived thread (setns
/// changes only the calling thread's namespace, so the helper's own stays as it was).
fn loopback_up(pid: i32) -> io::Result<()> {
    let ns = File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::spawn(move || -> io::Result<()> {
        // SAFETY: `ns` is an open namespace fd; setns affects only this thread, which ends
        // right after.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh socket nobody else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS reads the name and writes the flags member of `req`.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: after SIOCGIFFLAGS the union holds the flags.
        unsafe {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        }
        // SAFETY: SIOCSIFFLAGS reads `req` (name and flags).
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    })
    .join()
    .map_err(|_| io::Error::other("loopback thread panicked"))?
}

/// Makes this process a child subreaper: container init processes whose helper has exited
/// are re-parented to it, so it can collect their exit status with [`try_reap`].
pub fn become_subreaper() -> Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and touches no memory.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(ContainerError::io(
            "becoming a child subreaper",
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Reaps `pid` if it has exited: `Some(code)`, where a signal N reads as 128+N (137 for
/// SIGKILL, as a shell reports it); `None` while it runs. Only for children (see
/// [`become_subreaper`]).
pub fn try_reap(pid: i32) -> Result<Option<i32>> {
    let mut status = 0;
    // SAFETY: waitpid writes only to `status`, which outlives the call.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if rc < 0 {
        return Err(ContainerError::io(
            format!("waiting for pid {pid}"),
            io::Error::last_os_error(),
        ));
    }
    if rc == 0 {
        return Ok(None);
    }
    if libc::WIFEXITED(status) {
        Ok(Some(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Ok(Some(128 + libc::WTERMSIG(status)))
    } else {
        Ok(None)
    }
}

/// Whether `/` is the kernel's initial rootfs (an initramfs that never switched root),
/// from the root mount's filesystem type in /proc/self/mountinfo.
fn root_is_initramfs() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| root_fstype(&m) == Some("rootfs"))
        .unwrap_or(false)
}

fn root_fstype(mountinfo: &str) -> Option<&str> {
    mountinfo.lines().find_map(|line| {
        let mut fields = line.split(' ');
        let mount_point = fields.nth(4)?;
        let fstype = line.split(" - ").nth(1)?.split(' ').next()?;
        (mount_point == "/").then_some(fstype)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_containers_are_not_found() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = Runtime::new(tmp.path());
        assert!(matches!(rt.state("nope"), Err(ContainerError::NotFound(_))));
        assert!(matches!(
            rt.delete("nope", true),
            Err(ContainerError::NotFound(_))
        ));
        assert!(matches!(
            rt.kill("nope", "TERM", false),
            Err(ContainerError::NotFound(_))
        ));
        assert!(matches!(
            rt.state("../x"),
            Err(ContainerError::InvalidSpec(_))
        ));
        assert!(rt.list().unwrap().is_empty());
    }

    #[test]
    fn bad_signals_are_refused_before_anything_else() {
        let rt = Runtime::new("/nonexistent");
        let e = rt.kill("a", "SIGNOPE", false).unwrap_err().to_string();
        assert!(e.contains("unknown signal"), "{e}");
    }

    #[test]
    fn a_missing_image_fails_cleanly() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = Runtime::new(tmp.path().join("rt"));
        let spec = ContainerSpec::new("c1", tmp.path(), "busybox", &tmp.path().join("c1.log"));
        let e = rt.run(&spec).unwrap_err().to_string();
        assert!(e.contains("not an OCI image layout"), "{e}");
        assert!(!rt.state_root().join("c1").exists());
        assert!(!rt.bundle_dir("c1").exists());
    }

    #[test]
    fn status_names_match_serde() {
        for s in [Status::Creating, Status::Running, Status::Stopped] {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.name())
            );
        }
    }

    #[test]
    #[allow(clippy::zombie_processes)] // try_reap is the wait under test
    fn reaping_children_reports_shell_style_codes() {
        let child = std::process::Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let code = loop {
            if let Some(c) = try_reap(pid).unwrap() {
                break c;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(code, 137);
        assert!(try_reap(pid).is_err(), "already reaped");
    }

    #[test]
    fn an_initramfs_root_is_told_from_a_disk_root() {
        let initramfs = "1 1 0:2 / / rw - rootfs rootfs rw,size=486772k\n20 1 0:5 / /dev rw - devtmpfs devtmpfs rw\n";
        assert_eq!(super::root_fstype(initramfs), Some("rootfs"));
        let disk = "25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n";
        assert_eq!(super::root_fstype(disk), Some("ext4"));
    }
}
