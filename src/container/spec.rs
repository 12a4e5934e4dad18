//! What to run: [`ContainerSpec`] (the JSON the agent hands the helper) and the OCI runtime
//! [`Spec`] built from it and an image's config.
//!
//! Kubernetes semantics: `command` replaces the image's Entrypoint, `args` replace its Cmd,
//! `env` is merged over the image's Env by name, `working_dir` overrides WorkingDir. The OCI
//! spec follows runc's defaults (namespaces, masked and read-only paths, device cgroup) with
//! containerd's default capability set and no_new_privileges. No seccomp profile yet.
//!
//! Pure apart from reading the image's /etc/passwd and checking that the executable exists
//! in the rootfs. May call: `image` (its config type).

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount,
    MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use serde::{Deserialize, Serialize};

use super::image::ImageConfig;
use super::{ContainerError, Result};

/// Containers' cgroups live under this parent (`/sys/fs/cgroup/<controller>/omnicloud/<id>`).
pub const CGROUP_PARENT: &str = "omnicloud";
/// PATH when neither the image nor the spec sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// CFS period for CPU limits, in microseconds (as Kubernetes).
pub const CPU_PERIOD_US: u64 = 100_000;

/// One container to create, as the agent describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// Unique on the node: letters, digits, `_ + - .`, at most 64 characters.
    pub id: String,
    pub image: ImageRef,
    /// Replaces the image's Entrypoint (and drops its Cmd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Replaces the image's Cmd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Merged over the image's Env, by name; later entries win.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Default: the id. Also exported as $HOSTNAME unless `env` sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<BindMount>,
    #[serde(default)]
    pub network: Network,
    /// The container's stdout goes to this file (appended, created if missing).
    pub stdout_path: PathBuf,
    /// Default: the stdout file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Security::is_default")]
    pub security: Security,
}

pub use super::security::Security;

/// An image in a local OCI image layout directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRef {
    /// The layout directory (holding `oci-layout` and `index.json`).
    pub layout: PathBuf,
    /// `name:tag` as in the `org.opencontainers.image.ref.name` annotation; no tag = latest.
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU limit in millicores: a CFS quota of millis/1000 CPUs per 100 ms period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit_millis: Option<u64>,
    /// CPU request in millicores: cgroup cpu shares (1000 millis = 1024 shares).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_request_millis: Option<u64>,
    /// Memory limit; the kernel OOM-kills inside the container beyond it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
}

/// A host path bind-mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindMount {
    pub host_path: PathBuf,
    pub container_path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// The container's network namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// A new, empty namespace with only loopback (up).
    #[default]
    None,
    /// The host's namespace.
    Host,
    /// A new namespace with an `eth0` on the node bridge, wired between create and start
    /// (the process never runs without its address).
    Bridge {
        bridge: String,
        /// e.g. 10.88.3.7/24; the first address of the subnet is the gateway.
        address: String,
    },
    /// Joins the network namespace at this path (`/proc/PID/ns/net` of an instance's
    /// sandbox): the containers of one instance share its address and loopback.
    Join { netns: PathBuf },
}

impl Network {
    /// Whether the container gets a network namespace of its own.
    pub fn isolated(&self) -> bool {
        !matches!(self, Network::Host)
    }
}

impl ContainerSpec {
    /// A spec with defaults for everything but id, image and log file.
    pub fn new(id: &str, layout: &Path, image: &str, stdout_path: &Path) -> ContainerSpec {
        ContainerSpec {
            id: id.to_string(),
            image: ImageRef {
                layout: layout.to_path_buf(),
                name: image.to_string(),
            },
            command: None,
            args: None,
            env: Vec::new(),
            working_dir: None,
            hostname: None,
            resources: Resources::default(),
            mounts: Vec::new(),
            network: Network::None,
            stdout_path: stdout_path.to_path_buf(),
            stderr_path: None,
            security: Security::default(),
        }
    }

    /// Checks everything that can be checked without the image.
    pub fn validate(&self) -> Result<()> {
        validate_id(&self.id)?;
        let bad = |m: String| Err(ContainerError::InvalidSpec(m));
        if self.image.name.is_empty() {
            return bad("image.name is empty".into());
        }
        for (what, p) in [
            ("image.layout", Some(&self.image.layout)),
            ("stdout_path", Some(&self.stdout_path)),
            ("stderr_path", self.stderr_path.as_ref()),
        ] {
            if let Some(p) = p {
                if !p.is_absolute() {
                    return bad(format!("{what} must be an absolute path, got {p:?}"));
                }
            }
        }
        for e in &self.env {
            if e.name.is_empty() || e.name.contains('=') || e.name.contains('\0') {
                return bad(format!("env name {:?} is not valid", e.name));
            }
        }
        if let Some(dir) = &self.working_dir {
            if !dir.starts_with('/') {
                return bad(format!("working_dir must be absolute, got {dir:?}"));
            }
        }
        if let Some(h) = &self.hostname {
            let ok = !h.is_empty()
                && h.len() <= 64
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if !ok {
                return bad(format!("hostname {h:?} is not a valid host name"));
            }
        }
        for m in &self.mounts {
            if !m.host_path.is_absolute() {
                return bad(format!(
                    "mount host_path {:?} must be absolute",
                    m.host_path
                ));
            }
            if !m.container_path.starts_with('/') || m.container_path == "/" {
                return bad(format!(
                    "mount container_path {:?} must be an absolute path other than /",
                    m.container_path
                ));
            }
        }
        if let Some(bytes) = self.resources.memory_limit_bytes {
            if bytes < 1 << 20 {
                return bad(format!(
                    "memory_limit_bytes {bytes} is below 1 MiB (the unit is bytes)"
                ));
            }
        }
        if self.resources.cpu_limit_millis == Some(0) {
            return bad("cpu_limit_millis must be positive".into());
        }
        Ok(())
    }

    /// The host name inside the container.
    pub fn hostname(&self) -> &str {
        self.hostname.as_deref().unwrap_or(&self.id)
    }

    /// The process's argv: `command` replaces Entrypoint, `args` replace Cmd.
    pub fn argv(&self, image: &ImageConfig) -> Result<Vec<String>> {
        let argv: Vec<String> = match (&self.command, &self.args) {
            (Some(cmd), args) => cmd.iter().chain(args.iter().flatten()).cloned().collect(),
            (None, Some(args)) => image.entrypoint.iter().chain(args).cloned().collect(),
            (None, None) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
        };
        if argv.is_empty() || argv[0].is_empty() {
            return Err(ContainerError::InvalidSpec(
                "no command: the image has no Entrypoint or Cmd and the spec gives none".into(),
            ));
        }
        Ok(argv)
    }

    /// The process's environment: the image's, then the spec's by name, then HOSTNAME and
    /// PATH if still missing.
    pub fn environment(&self, image: &ImageConfig) -> Vec<String> {
        let mut vars: Vec<(String, String)> = Vec::new();
        let mut set = |name: &str, value: &str| match vars.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value.to_string(),
            None => vars.push((name.to_string(), value.to_string())),
        };
        for kv in &image.env {
            let (n, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            set(n, v);
        }
        for e in &self.env {
            set(&e.name, &e.value);
        }
        if !vars.iter().any(|(n, _)| n == "HOSTNAME") {
            vars.push(("HOSTNAME".into(), self.hostname().to_string()));
        }
        if !vars.iter().any(|(n, _)| n == "PATH") {
            vars.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
        }
        vars.into_iter().map(|(n, v)| format!("{n}={v}")).collect()
    }
}

/// libcontainer's id rules, plus a length bound (the id names cgroups and directories).
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ContainerError::InvalidSpec(format!(
            "id {id:?} must be 1-64 letters, digits, '_', '+', '-' or '.'"
        )))
    }
}

/// The cgroup path of a container, relative to each hierarchy's root. A container of a
/// multi-container instance (`PARENT+NAME`, see [`member_id`]) sits under its instance's
/// cgroup, `/omnicloud/PARENT/NAME`, so the instance's usage is its parent's.
pub fn cgroup_path(id: &str) -> String {
    match id.split_once('+') {
        Some((parent, name)) => format!("/{CGROUP_PARENT}/{parent}/{name}"),
        None => format!("/{CGROUP_PARENT}/{id}"),
    }
}

pub use super::sandbox::member_id;

/// containerd's default capabilities (what `docker run` and Kubernetes give a container).
pub fn default_capabilities() -> Vec<Capability> {
    use Capability::*;
    vec![
        Chown,
        DacOverride,
        Fsetid,
        Fowner,
        Mknod,
        NetRaw,
        Setgid,
        Setuid,
        Setfcap,
        Setpcap,
        NetBindService,
        SysChroot,
        Kill,
        AuditWrite,
    ]
}

/// runc's masked paths (read as empty inside the container).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// runc's read-only paths.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Builds the OCI runtime spec for `spec` running `image` on the unpacked `rootfs`.
pub fn oci_spec(spec: &ContainerSpec, image: &ImageConfig, rootfs: &Path) -> Result<Spec> {
    spec.validate()?;
    let argv = spec.argv(image)?;
    let env = spec.environment(image);
    let cwd = spec
        .working_dir
        .clone()
        .or_else(|| image.working_dir.clone().filter(|d| d.starts_with('/')))
        .unwrap_or_else(|| "/".into());
    let (uid, gid) = resolve_user(image.user.as_deref().unwrap_or(""), rootfs)?;
    let sec = &spec.security;
    let (uid, gid) = (sec.uid.unwrap_or(uid), sec.gid.unwrap_or(gid));
    let caps: oci_spec::runtime::Capabilities = sec.capabilities()?.into_iter().collect();
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(uid).gid(gid).build()?)
        .args(argv)
        .env(env)
        .cwd(cwd)
        .no_new_privileges(true)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                .inheritable(oci_spec::runtime::Capabilities::new())
                .ambient(oci_spec::runtime::Capabilities::new())
                .build()?,
        )
        .build()?;

    let namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    let mut namespaces = namespaces
        .into_iter()
        .map(|t| LinuxNamespaceBuilder::default().typ(t).build())
        .collect::<std::result::Result<Vec<_>, _>>()?;
    match &spec.network {
        Network::Host => {}
        Network::Join { netns } => namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(netns)
                .build()?,
        ),
        _ => namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .build()?,
        ),
    }

    let mut resources = LinuxResourcesBuilder::default().devices(vec![
        // Deny every device; libcontainer then allows its defaults (null, zero, tty, ...).
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()?,
    ]);
    let r = &spec.resources;
    if let Some(bytes) = r.memory_limit_bytes {
        let limit = i64::try_from(bytes).unwrap_or(i64::MAX);
        resources = resources.memory(LinuxMemoryBuilder::default().limit(limit).build()?);
    }
    if r.cpu_limit_millis.is_some() || r.cpu_request_millis.is_some() {
        let mut cpu = LinuxCpuBuilder::default();
        if let Some(millis) = r.cpu_limit_millis {
            cpu = cpu.quota(cpu_quota(millis)).period(CPU_PERIOD_US);
        }
        if let Some(millis) = r.cpu_request_millis {
            cpu = cpu.shares(cpu_shares(millis));
        }
        resources = resources.cpu(cpu.build()?);
    }

    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(cgroup_path(&spec.id)))
        .resources(resources.build()?)
        .masked_paths(
            (MASKED_PATHS.iter().filter(|_| !sec.privileged))
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .readonly_paths(
            (READONLY_PATHS.iter().filter(|_| !sec.privileged))
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .build()?;

    let mut mounts: Vec<Mount> = oci_spec::runtime::get_default_mounts();
    for m in &spec.mounts {
        let mode = if m.read_only { "ro" } else { "rw" };
        mounts.push(
            MountBuilder::default()
                .destination(&m.container_path)
                .typ("bind")
                .source(&m.host_path)
                .options(vec!["rbind".into(), "rprivate".into(), mode.into()])
                .build()?,
        );
    }

    Ok(SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(rootfs)
                .readonly(sec.read_only_rootfs)
                .build()?,
        )
        .hostname(spec.hostname())
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()?)
}

/// CFS quota in microseconds per [`CPU_PERIOD_US`], at least the kernel's 1 ms.
pub fn cpu_quota(millis: u64) -> i64 {
    let quota = millis.saturating_mul(CPU_PERIOD_US) / 1000;
    i64::try_from(quota.max(1000)).unwrap_or(i64::MAX)
}

/// cgroup v1 cpu.shares for a CPU request, as the kubelet computes them (at least 2).
pub fn cpu_shares(millis: u64) -> u64 {
    (millis.saturating_mul(1024) / 1000).max(2)
}

/// uid and gid for an image's `User` ("", "uid", "uid:gid", "name" or "name:group"),
/// looking names up in the image's /etc/passwd and /etc/group.
pub fn resolve_user(user: &str, rootfs: &Path) -> Result<(u32, u32)> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let lookup = |file: &str, name: &str| -> Option<(u32, Option<u32>)> {
        let text = std::fs::read_to_string(rootfs.join(file)).ok()?;
        text.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() >= 3 && f[0] == name)
                .then(|| Some((f[2].parse().ok()?, f.get(3).and_then(|g| g.parse().ok()))))
                .flatten()
        })
    };
    let unknown = |what: &str, name: &str| {
        ContainerError::InvalidSpec(format!("image user {what} {name:?} is not in the image"))
    };
    let (uid, passwd_gid) = match u.parse::<u32>() {
        Ok(uid) => (uid, lookup("etc/passwd", u).and_then(|(_, g)| g)),
        Err(_) => lookup("etc/passwd", u).ok_or_else(|| unknown("name", u))?,
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup("etc/group", g).ok_or_else(|| unknown("group", g))?.0,
        },
        None => passwd_gid.unwrap_or(0),
    };
    Ok((uid, gid))
}

/// Checks that `argv[0]` names an executable in the rootfs (absolute, or found in PATH), so
/// a typo fails with a clear error before any container exists. Paths under a bind mount
/// are not checked.
pub fn check_executable(spec: &Spec, rootfs: &Path, mounts: &[BindMount]) -> Result<()> {
    let Some(process) = spec.process() else {
        return Ok(());
    };
    let argv0 = process
        .args()
        .as_ref()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or_default();
    let path_var = process
        .env()
        .iter()
        .flatten()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    let candidates: Vec<String> = if argv0.contains('/') {
        let cwd = process.cwd().to_string_lossy().into_owned();
        vec![if argv0.starts_with('/') {
            argv0.clone()
        } else {
            format!("{cwd}/{argv0}")
        }]
    } else {
        path_var
            .split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| format!("{}/{argv0}", d.trim_end_matches('/')))
            .collect()
    };
    for c in &candidates {
        if mounts
            .iter()
            .any(|m| Path::new(c).starts_with(&m.container_path))
        {
            return Ok(());
        }
        if executable_in_root(rootfs, c, 0) {
            return Ok(());
        }
    }
    let where_ = if argv0.contains('/') {
        "in the image".to_string()
    } else {
        format!("in the image's PATH ({path_var})")
    };
    Err(ContainerError::InvalidSpec(format!(
        "executable {argv0:?} not found {where_}"
    )))
}

/// Whether `path` (absolute, inside the container) is an executable file in `rootfs`,
/// following symlinks inside the rootfs.
fn executable_in_root(rootfs: &Path, path: &str, depth: u32) -> bool {
    use std::os::unix::fs::PermissionsExt;
    if depth > 16 {
        return false;
    }
    let host = rootfs.join(path.trim_start_matches('/'));
    let Ok(meta) = std::fs::symlink_metadata(&host) else {
        return false;
    };
    if meta.file_type().is_symlink() {
        let Ok(target) = std::fs::read_link(&host) else {
            return false;
        };
        let target = if target.is_absolute() {
            target
        } else {
            Path::new(path)
                .parent()
                .unwrap_or(Path::new("/"))
                .join(target)
        };
        return executable_in_root(rootfs, &target.to_string_lossy(), depth + 1);
    }
    meta.is_file() && meta.permissions().mode() & 0o111 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into(), "--port=80".into()],
            env: vec!["PATH=/bin".into(), "A=image".into(), "B=image".into()],
            working_dir: Some("/srv".into()),
            user: None,
        }
    }

    fn spec() -> ContainerSpec {
        ContainerSpec::new(
            "web-1",
            Path::new("/images"),
            "busybox",
            Path::new("/logs/web-1.log"),
        )
    }

    #[test]
    fn command_and_args_override_like_kubernetes() {
        let mut s = spec();
        assert_eq!(s.argv(&image()).unwrap(), ["/entry", "serve", "--port=80"]);
        s.args = Some(vec!["check".into()]);
        assert_eq!(s.argv(&image()).unwrap(), ["/entry", "check"]);
        s.command = Some(vec!["sh".into(), "-c".into()]);
        s.args = None;
        assert_eq!(s.argv(&image()).unwrap(), ["sh", "-c"]);
        s.args = Some(vec!["echo hi".into()]);
        assert_eq!(s.argv(&image()).unwrap(), ["sh", "-c", "echo hi"]);
        let empty = ImageConfig::default();
        assert!(spec().argv(&empty).is_err());
    }

    #[test]
    fn env_merges_over_the_image() {
        let mut s = spec();
        s.env = vec![EnvVar {
            name: "B".into(),
            value: "spec".into(),
        }];
        let env = s.environment(&image());
        assert_eq!(env, ["PATH=/bin", "A=image", "B=spec", "HOSTNAME=web-1"]);
        let env = spec().environment(&ImageConfig::default());
        assert_eq!(env[0], format!("PATH={DEFAULT_PATH}"));
    }

    #[test]
    fn validation_names_the_problem() {
        let mut s = spec();
        s.validate().unwrap();
        s.id = "bad/id".into();
        assert!(s.validate().unwrap_err().to_string().contains("id"));
        let mut s = spec();
        s.resources.memory_limit_bytes = Some(16);
        assert!(s.validate().unwrap_err().to_string().contains("bytes"));
        let mut s = spec();
        s.mounts.push(BindMount {
            host_path: "/data".into(),
            container_path: "data".into(),
            read_only: true,
        });
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("container_path"));
        let mut s = spec();
        s.stdout_path = "relative.log".into();
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("stdout_path"));
    }

    #[test]
    fn spec_json_defaults_and_unknown_fields() {
        let s: ContainerSpec = serde_json::from_str(
            r#"{"id":"a","image":{"layout":"/l","name":"busybox"},"stdout_path":"/o"}"#,
        )
        .unwrap();
        assert_eq!(s.network, Network::None);
        assert_eq!(s.resources, Resources::default());
        let back: ContainerSpec =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert!(serde_json::from_str::<ContainerSpec>(
            r#"{"id":"a","image":{"layout":"/l","name":"b"},"stdout_path":"/o","cpu":1}"#
        )
        .is_err());
    }

    #[test]
    fn oci_spec_carries_limits_namespaces_and_mounts() {
        let mut s = spec();
        s.resources = Resources {
            cpu_limit_millis: Some(500),
            cpu_request_millis: Some(250),
            memory_limit_bytes: Some(16 << 20),
        };
        s.mounts.push(BindMount {
            host_path: "/srv/data".into(),
            container_path: "/data".into(),
            read_only: true,
        });
        let oci = oci_spec(&s, &image(), Path::new("/nonexistent/rootfs")).unwrap();
        let linux = oci.linux().as_ref().unwrap();
        let res = linux.resources().as_ref().unwrap();
        assert_eq!(res.memory().as_ref().unwrap().limit(), Some(16 << 20));
        let cpu = res.cpu().as_ref().unwrap();
        assert_eq!((cpu.quota(), cpu.period()), (Some(50_000), Some(100_000)));
        assert_eq!(cpu.shares(), Some(256));
        let ns: Vec<_> = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        assert!(ns.contains(&LinuxNamespaceType::Network));
        assert!(ns.contains(&LinuxNamespaceType::Pid));
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/omnicloud/web-1"))
        );
        let bind = oci.mounts().as_ref().unwrap().last().unwrap();
        assert_eq!(bind.destination(), Path::new("/data"));
        assert!(bind.options().as_ref().unwrap().contains(&"ro".to_string()));
        let p = oci.process().as_ref().unwrap();
        assert_eq!(p.cwd(), Path::new("/srv"));
        assert_eq!(p.no_new_privileges(), Some(true));
        assert_eq!(oci.hostname().as_deref(), Some("web-1"));

        s.network = Network::Host;
        let oci = oci_spec(&s, &image(), Path::new("/r")).unwrap();
        let ns = oci.linux().as_ref().unwrap().namespaces().clone().unwrap();
        assert!(!ns.iter().any(|n| n.typ() == LinuxNamespaceType::Network));
    }

    #[test]
    fn cpu_arithmetic() {
        assert_eq!(cpu_quota(1000), 100_000);
        assert_eq!(cpu_quota(1), 1000);
        assert_eq!(cpu_shares(1000), 1024);
        assert_eq!(cpu_shares(1), 2);
    }

    #[test]
    fn users_and_executables_resolve_inside_the_rootfs() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::write(
            r.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nweb:x:33:44::/:/x\n",
        )
        .unwrap();
        std::fs::write(r.join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(resolve_user("", r).unwrap(), (0, 0));
        assert_eq!(resolve_user("web", r).unwrap(), (33, 44));
        assert_eq!(resolve_user("1000:7", r).unwrap(), (1000, 7));
        assert_eq!(resolve_user("web:staff", r).unwrap(), (33, 50));
        assert!(resolve_user("nobody", r).is_err());

        use std::os::unix::fs::PermissionsExt;
        std::fs::write(r.join("bin/busybox"), "#!").unwrap();
        std::fs::set_permissions(
            r.join("bin/busybox"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("/bin/busybox", r.join("bin/sh")).unwrap();
        let mut s = spec();
        s.command = Some(vec!["sh".into()]);
        let oci = oci_spec(&s, &image(), r).unwrap();
        check_executable(&oci, r, &[]).unwrap();
        s.command = Some(vec!["nosuch".into()]);
        let oci = oci_spec(&s, &image(), r).unwrap();
        let e = check_executable(&oci, r, &[]).unwrap_err().to_string();
        assert!(e.contains("\"nosuch\" not found"), "{e}");
        s.command = Some(vec!["/opt/tool".into()]);
        let oci = oci_spec(&s, &image(), r).unwrap();
        let mounts = [BindMount {
            host_path: "/x".into(),
            container_path: "/opt".into(),
            read_only: true,
        }];
        check_executable(&oci, r, &mounts).unwrap();
    }
}
