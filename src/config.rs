//! Node configuration: the TOML file (`config/node.toml` is the commented default and is
//! compiled in), `OMNICLOUD_*` environment variables and command-line flags, merged in
//! that order of increasing precedence, then checked.
//!
//! It owns the settings types it hands each room (`RaftSettings`, `AutoscalerSettings`,
//! `NetworkSettings`, ...), so the rooms depend on it and it depends on `model` alone.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

mod api;
mod network;
mod registries;

use api::FileApi;
pub use api::{ApiSettings, RateSettings};
use network::FileNetwork;
pub use network::{NetworkSettings, RoutingBackend};
pub use registries::{load_registries, Endpoint, HostAuth, HostSettings, RegistrySettings};

/// The default configuration file, also the documentation of every key.
pub const DEFAULT_CONFIG: &str = include_str!("../config/node.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_string(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    name: String,
    data_dir: String,
    bind: String,
    advertise: String,
    api_port: u16,
    rpc_port: u16,
    gossip_port: u16,
    join: Vec<String>,
    token: String,
    token_file: String,
    roles: Vec<String>,
    labels: BTreeMap<String, String>,
    log: String,
    cluster: FileCluster,
    raft: FileRaft,
    api: FileApi,
    network: FileNetwork,
    agent: FileAgent,
    director: FileDirector,
    autoscaler: FileAutoscaler,
    registries: registries::FileRegistries,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAutoscaler {
    sync_period_ms: u64,
    metric_window_ms: u64,
    cpu_initialization_period_ms: u64,
    initial_readiness_delay_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAgent {
    log_max_bytes: u64,
    log_keep: u32,
    usage_report_ms: u64,
    #[serde(default)]
    allow_privileged: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDirector {
    worker_kernel: String,
    worker_initrd: String,
    worker_cmdline: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCluster {
    orchestrators: usize,
    orchestrator_replace_after: String,
    gossip_probe_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRaft {
    heartbeat_ms: u64,
    election_timeout_min_ms: u64,
    election_timeout_max_ms: u64,
    snapshot_after_logs: u64,
    keep_logs_after_snapshot: u64,
}

/// Flags of `omnicloud node`. Each also reads `OMNICLOUD_<NAME>` from the environment.
#[derive(Debug, Clone, Default, Args)]
pub struct NodeFlags {
    /// Configuration file (TOML); see config/node.toml for every key.
    #[arg(long, env = "OMNICLOUD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Node name, unique in the cluster (default: hostname).
    #[arg(long, env = "OMNICLOUD_NAME")]
    pub name: Option<String>,
    /// Directory holding all node state.
    #[arg(long, env = "OMNICLOUD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to bind listeners to.
    #[arg(long, env = "OMNICLOUD_BIND")]
    pub bind: Option<IpAddr>,
    /// Address peers and clients use to reach this node.
    #[arg(long, env = "OMNICLOUD_ADVERTISE")]
    pub advertise: Option<IpAddr>,
    /// Public API port (0 picks a free port; see <data-dir>/endpoints.json).
    #[arg(long, env = "OMNICLOUD_API_PORT")]
    pub api_port: Option<u16>,
    /// Internal RPC port.
    #[arg(long, env = "OMNICLOUD_RPC_PORT")]
    pub rpc_port: Option<u16>,
    /// Gossip (UDP) port.
    #[arg(long, env = "OMNICLOUD_GOSSIP_PORT")]
    pub gossip_port: Option<u16>,
    /// Seed to join, HOST:PORT (repeatable).
    #[arg(long, env = "OMNICLOUD_JOIN", value_delimiter = ',')]
    pub join: Vec<String>,
    /// Cluster join token.
    #[arg(long, env = "OMNICLOUD_TOKEN", conflicts_with = "token_file")]
    pub token: Option<String>,
    /// File holding the cluster join token.
    #[arg(long, env = "OMNICLOUD_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Roles: auto, or a comma-separated list of orchestrator, director, agent.
    #[arg(long, env = "OMNICLOUD_ROLES", value_delimiter = ',')]
    pub roles: Vec<String>,
    /// Node label KEY=VALUE (repeatable), e.g. zone=rack-1.
    #[arg(long = "label", env = "OMNICLOUD_LABELS", value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Log filter, e.g. info or omnicloud=debug.
    /// Registries a name without a host (`nginx`) is looked for in, over the config's
    /// `registries.unqualified_search`; `none` for only the store and the peers.
    #[arg(long, env = "OMNICLOUD_UNQUALIFIED_SEARCH", value_delimiter = ',')]
    pub unqualified_search: Vec<String>,
    #[arg(long, env = "OMNICLOUD_LOG")]
    pub log: Option<String>,
}

/// The checked configuration a node runs with.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub data_dir: PathBuf,
    pub bind: IpAddr,
    pub advertise: IpAddr,
    pub api_port: u16,
    pub rpc_port: u16,
    pub gossip_port: u16,
    pub join: Vec<String>,
    /// The join token, if one was given (a new cluster generates its own).
    pub token: Option<String>,
    pub roles: Vec<crate::model::Role>,
    pub labels: BTreeMap<String, String>,
    pub log: String,
    pub raft: RaftSettings,
    pub max_body_bytes: usize,
    /// TLS on the API and the RPC (`[api] tls`).
    pub tls: bool,
    /// `[api]` per-user request rate limit.
    pub rate: RateSettings,
    /// `[api] audit_max_bytes`.
    pub audit_max_bytes: u64,
    /// `[api] pod_security_default`: the level of a namespace without the enforce label.
    pub pod_security_default: crate::model::pod_security::Level,
    pub orchestrators: usize,
    pub orchestrator_replace_after: Duration,
    pub gossip_probe: Duration,
    pub network: NetworkSettings,
    pub agent: AgentSettings,
    pub director: DirectorSettings,
    pub autoscaler: AutoscalerSettings,
    pub registries: RegistrySettings,
}

/// Raft tuning from the node config.
#[derive(Clone, Debug)]
pub struct RaftSettings {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot (and purge the log before it) after this many applied entries.
    pub snapshot_after_logs: u64,
    /// Entries kept in the log behind the snapshot, for lagging followers.
    pub keep_logs_after_snapshot: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            heartbeat_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            snapshot_after_logs: 5000,
            keep_logs_after_snapshot: 1000,
        }
    }
}

/// `[autoscaler]` of the node config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoscalerSettings {
    /// How often every HPA is evaluated (Kubernetes' `--horizontal-pod-autoscaler-sync-period`).
    pub sync_period: Duration,
    /// Samples are averaged over this window.
    pub metric_window: Duration,
    /// Kubernetes' `--horizontal-pod-autoscaler-cpu-initialization-period`.
    pub cpu_initialization_period: Duration,
    /// Kubernetes' `--horizontal-pod-autoscaler-initial-readiness-delay`.
    pub initial_readiness_delay: Duration,
}

impl Default for AutoscalerSettings {
    fn default() -> Self {
        AutoscalerSettings {
            sync_period: Duration::from_secs(15),
            metric_window: Duration::from_secs(15),
            cpu_initialization_period: Duration::from_secs(300),
            initial_readiness_delay: Duration::from_secs(30),
        }
    }
}

/// The worker VM image a director boots for `VirtualMachine`s with `worker: true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectorSettings {
    pub worker_kernel: PathBuf,
    pub worker_initrd: PathBuf,
    /// Appended to every worker VM's kernel command line (after the join arguments).
    pub worker_cmdline: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    /// An instance's log file is rotated past this size...
    pub log_max_bytes: u64,
    /// ...keeping this many rotated files (`.1` newest).
    pub log_keep: u32,
    /// How often running instances' cpu and memory are sampled and reported.
    pub usage_report: Duration,
    /// Whether containers with `securityContext.privileged: true` may run here.
    pub allow_privileged: bool,
}

impl NodeConfig {
    pub fn load(flags: &NodeFlags) -> Result<NodeConfig, ConfigError> {
        let mut file = parse_file("<built-in>", DEFAULT_CONFIG)?;
        if let Some(path) = &flags.config {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let user: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Parse {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    })?;
            let mut merged: toml::Table = DEFAULT_CONFIG.parse().expect("built-in config parses");
            merge(&mut merged, user);
            file = parse_file(
                &path.display().to_string(),
                &toml::to_string(&merged).expect("toml"),
            )?;
        }
        Self::from_parts(file, flags)
    }

    /// The merged file under the flags, checked: first who the node is and whom it joins
    /// (flags over the file), then each section of the file on its own.
    fn from_parts(file: FileConfig, flags: &NodeFlags) -> Result<NodeConfig, ConfigError> {
        let name = flags.name.clone().unwrap_or(file.name);
        let name = if name.is_empty() { hostname() } else { name };
        crate::model::validate_name("name", &name).map_err(|e| invalid("name", e.message))?;
        let data_dir = match &flags.data_dir {
            Some(d) => d.clone(),
            None if !file.data_dir.is_empty() => PathBuf::from(&file.data_dir),
            None => default_data_dir(),
        };
        let (bind, advertise) = addresses(&file.bind, &file.advertise, flags)?;
        let join = list(file.join, &flags.join, |seed| match seed.contains(':') {
            true => Ok(()),
            false => Err(invalid("join", format!("\"{seed}\" is not HOST:PORT"))),
        })?;
        let token = match (&flags.token, &flags.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(path)) => Some(read_token(path)?),
            (None, None) if !file.token.is_empty() => Some(file.token),
            (None, None) if !file.token_file.is_empty() => {
                Some(read_token(Path::new(&file.token_file))?)
            }
            _ => None,
        };
        let roles = list(file.roles, &flags.roles, |_| Ok(()))?
            .iter()
            .map(|role| {
                role.parse()
                    .map_err(|e: crate::model::role::UnknownRole| invalid("roles", e.to_string()))
            })
            .collect::<Result<Vec<crate::model::Role>, _>>()?;
        let mut labels = file.labels;
        for pair in &flags.labels {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| invalid("label", format!("\"{pair}\" is not KEY=VALUE")))?;
            labels.insert(k.to_string(), v.to_string());
        }
        let raft = file.raft.settings()?;
        let (orchestrators, orchestrator_replace_after, gossip_probe) = file.cluster.checked()?;
        let network = file.network.settings()?;
        let agent = file.agent.settings()?;
        let autoscaler = file.autoscaler.settings()?;
        let registries = file.registries.settings(
            (!flags.unqualified_search.is_empty()).then_some(&flags.unqualified_search[..]),
        )?;
        let api = file.api.settings()?;
        let director = DirectorSettings {
            worker_kernel: data_dir.join(&file.director.worker_kernel),
            worker_initrd: data_dir.join(&file.director.worker_initrd),
            worker_cmdline: file.director.worker_cmdline.clone(),
        };
        Ok(NodeConfig {
            name,
            data_dir,
            bind,
            advertise,
            api_port: flags.api_port.unwrap_or(file.api_port),
            rpc_port: flags.rpc_port.unwrap_or(file.rpc_port),
            gossip_port: flags.gossip_port.unwrap_or(file.gossip_port),
            join,
            token,
            roles,
            labels,
            log: flags.log.clone().unwrap_or(file.log),
            raft,
            max_body_bytes: api.max_body_bytes,
            tls: api.tls,
            rate: api.rate,
            audit_max_bytes: api.audit_max_bytes,
            pod_security_default: api.pod_security_default,
            orchestrators,
            orchestrator_replace_after,
            gossip_probe,
            network,
            agent,
            director,
            autoscaler,
            registries,
        })
    }
}

/// The bind address and the address peers reach (derived from the bind address when
/// neither the flag nor the file gives one).
fn addresses(
    bind: &str,
    advertise: &str,
    flags: &NodeFlags,
) -> Result<(IpAddr, IpAddr), ConfigError> {
    let bind = match flags.bind {
        Some(b) => b,
        None => bind
            .parse()
            .map_err(|_| invalid("bind", format!("\"{bind}\" is not an IP address")))?,
    };
    let advertise = match flags.advertise {
        Some(a) => a,
        None if !advertise.is_empty() => advertise
            .parse()
            .map_err(|_| invalid("advertise", format!("\"{advertise}\" is not an IP address")))?,
        None => derive_advertise(bind),
    };
    Ok((bind, advertise))
}

/// A list setting: the flags' over the file's, each item checked.
fn list(
    file: Vec<String>,
    flags: &[String],
    check: impl Fn(&str) -> Result<(), ConfigError>,
) -> Result<Vec<String>, ConfigError> {
    let items = if flags.is_empty() {
        file
    } else {
        flags.to_vec()
    };
    items.iter().try_for_each(|i| check(i))?;
    Ok(items)
}

impl FileRaft {
    fn settings(&self) -> Result<RaftSettings, ConfigError> {
        let raft = RaftSettings {
            heartbeat_ms: self.heartbeat_ms,
            election_timeout_min_ms: self.election_timeout_min_ms,
            election_timeout_max_ms: self.election_timeout_max_ms,
            snapshot_after_logs: self.snapshot_after_logs,
            keep_logs_after_snapshot: self.keep_logs_after_snapshot,
        };
        if raft.election_timeout_min_ms <= raft.heartbeat_ms
            || raft.election_timeout_max_ms <= raft.election_timeout_min_ms
        {
            return Err(invalid(
                "raft.election_timeout_min_ms",
                "need heartbeat_ms < election_timeout_min_ms < election_timeout_max_ms",
            ));
        }
        if raft.snapshot_after_logs == 0 {
            return Err(invalid("raft.snapshot_after_logs", "must be > 0"));
        }
        Ok(raft)
    }
}

impl FileCluster {
    /// (orchestrators, orchestrator_replace_after, gossip probe interval).
    fn checked(&self) -> Result<(usize, Duration, Duration), ConfigError> {
        let orchestrators = self.orchestrators;
        if orchestrators == 0 || orchestrators.is_multiple_of(2) {
            return Err(invalid(
                "cluster.orchestrators",
                format!("must be odd (1, 3, 5, ...), got {orchestrators}"),
            ));
        }
        let replace_after =
            humantime::parse_duration(&self.orchestrator_replace_after).map_err(|e| {
                invalid(
                    "cluster.orchestrator_replace_after",
                    format!("\"{}\": {e}", self.orchestrator_replace_after),
                )
            })?;
        if !(50..=60_000).contains(&self.gossip_probe_ms) {
            return Err(invalid(
                "cluster.gossip_probe_ms",
                "must be between 50 and 60000",
            ));
        }
        Ok((
            orchestrators,
            replace_after,
            Duration::from_millis(self.gossip_probe_ms),
        ))
    }
}

impl FileAgent {
    fn settings(&self) -> Result<AgentSettings, ConfigError> {
        if self.log_max_bytes < 4096 {
            return Err(invalid("agent.log_max_bytes", "must be at least 4096"));
        }
        if !(100..=600_000).contains(&self.usage_report_ms) {
            return Err(invalid(
                "agent.usage_report_ms",
                "must be between 100 and 600000",
            ));
        }
        Ok(AgentSettings {
            log_max_bytes: self.log_max_bytes,
            log_keep: self.log_keep,
            usage_report: Duration::from_millis(self.usage_report_ms),
            allow_privileged: self.allow_privileged,
        })
    }
}

impl FileAutoscaler {
    fn settings(&self) -> Result<AutoscalerSettings, ConfigError> {
        for (field, v, range) in [
            (
                "autoscaler.sync_period_ms",
                self.sync_period_ms,
                100..=600_000,
            ),
            (
                "autoscaler.metric_window_ms",
                self.metric_window_ms,
                100..=3_600_000,
            ),
        ] {
            if !range.contains(&v) {
                return Err(invalid(
                    field,
                    format!(
                        "must be between {} and {}, got {v}",
                        range.start(),
                        range.end()
                    ),
                ));
            }
        }
        let ms = Duration::from_millis;
        Ok(AutoscalerSettings {
            sync_period: ms(self.sync_period_ms),
            metric_window: ms(self.metric_window_ms),
            cpu_initialization_period: ms(self.cpu_initialization_period_ms),
            initial_readiness_delay: ms(self.initial_readiness_delay_ms),
        })
    }
}

fn parse_file(path: &str, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_string(),
        message: e.to_string(),
    })
}

/// Overlays `user` onto `base`, recursing into tables so a file may set only `[raft] heartbeat_ms`.
fn merge(base: &mut toml::Table, user: toml::Table) {
    for (k, v) in user {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(u)) if k != "labels" => merge(b, u),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn read_token(path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(invalid(
            "token_file",
            format!("{} is empty", path.display()),
        ));
    }
    Ok(token)
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "omnicloud".into())
}

/// `/var/lib/omnicloud` for root, `~/.local/share/omnicloud` otherwise.
pub fn default_data_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/omnicloud");
    }
    match std::env::var_os("XDG_DATA_HOME") {
        Some(d) => PathBuf::from(d).join("omnicloud"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into()))
            .join(".local/share/omnicloud"),
    }
}

/// Whether this process runs as root (`/proc/self` is owned by the effective uid).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// The address peers should use when bound to a wildcard: the source address of the
/// default route (no packet is sent by connecting a UDP socket).
fn derive_advertise(bind: IpAddr) -> IpAddr {
    if !bind.is_unspecified() {
        return bind;
    }
    UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect(SocketAddr::from(([10, 255, 255, 255], 9)))
                .map(|_| s)
        })
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> NodeFlags {
        NodeFlags {
            name: Some("n1".into()),
            data_dir: Some("/tmp/x".into()),
            ..Default::default()
        }
    }

    #[test]
    fn built_in_defaults_parse() {
        let c = NodeConfig::load(&flags()).unwrap();
        assert_eq!((c.api_port, c.rpc_port, c.gossip_port), (7070, 7071, 7946));
        assert_eq!(c.roles, vec!["auto"]);
        assert_eq!(c.raft.snapshot_after_logs, 5000);
    }

    #[test]
    fn file_then_flags_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.toml");
        std::fs::write(
            &path,
            "api_port = 9000\nrpc_port = 9001\n[raft]\nheartbeat_ms = 50\n",
        )
        .unwrap();
        let mut f = flags();
        f.config = Some(path);
        f.rpc_port = Some(9101);
        let c = NodeConfig::load(&f).unwrap();
        assert_eq!(c.api_port, 9000);
        assert_eq!(c.rpc_port, 9101);
        assert_eq!(c.raft.heartbeat_ms, 50);
        assert_eq!(
            c.raft.election_timeout_min_ms, 400,
            "unset keys keep their defaults"
        );
    }

    #[test]
    fn unknown_key_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.toml");
        std::fs::write(&path, "api_prot = 9000\n").unwrap();
        let mut f = flags();
        f.config = Some(path.clone());
        let err = NodeConfig::load(&f).unwrap_err().to_string();
        assert!(err.contains("api_prot"), "{err}");

        let mut f = flags();
        f.roles = vec!["captain".into()];
        let err = NodeConfig::load(&f).unwrap_err().to_string();
        assert!(
            err.starts_with("roles:") && err.contains("captain"),
            "{err}"
        );

        std::fs::write(&path, "[autoscaler]\nsync_period_ms = 5\n").unwrap();
        let mut f = flags();
        f.config = Some(path.clone());
        let err = NodeConfig::load(&f).unwrap_err().to_string();
        assert!(
            err.starts_with("autoscaler.sync_period_ms: must be between 100"),
            "{err}"
        );

        let mut f = flags();
        f.join = vec!["seed-without-port".into()];
        assert!(NodeConfig::load(&f)
            .unwrap_err()
            .to_string()
            .starts_with("join:"));
    }

    #[test]
    fn every_section_names_the_field_it_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.toml");
        let cases = [
            (
                "bind = \"nowhere\"",
                "bind: \"nowhere\" is not an IP address",
            ),
            ("advertise = \"x\"", "advertise: \"x\" is not an IP address"),
            (
                "[raft]\nheartbeat_ms = 500",
                "raft.election_timeout_min_ms: need",
            ),
            (
                "[raft]\nsnapshot_after_logs = 0",
                "raft.snapshot_after_logs: must be > 0",
            ),
            (
                "[cluster]\norchestrators = 2",
                "cluster.orchestrators: must be odd",
            ),
            (
                "[cluster]\norchestrator_replace_after = \"soon\"",
                "cluster.orchestrator_replace_after: \"soon\"",
            ),
            (
                "[cluster]\ngossip_probe_ms = 5",
                "cluster.gossip_probe_ms: must be between",
            ),
            (
                "[network]\ncluster_cidr = \"10.88.0.0/33\"",
                "network.cluster_cidr:",
            ),
            (
                "[network]\nnode_prefix = 30",
                "network.node_prefix: must be between",
            ),
            ("[network]\nbridge = \"a bridge\"", "network.bridge:"),
            (
                "[network]\nbackend = \"flannel\"",
                "network.backend: \"flannel\" is not a backend: expected \"auto\"",
            ),
            (
                "[network]\nservice_cidr = \"10.88.128.0/20\"",
                "network.service_cidr: 10.88.128.0/20 overlaps the cluster CIDR",
            ),
            (
                "[network]\nnode_port_range = \"32767-30000\"",
                "network.node_port_range:",
            ),
            (
                "[network]\ncluster_domain = \"my_cluster.local\"",
                "network.cluster_domain:",
            ),
            (
                "[network]\ndns_upstreams = [\"dns.example\"]",
                "network.dns_upstreams:",
            ),
            (
                "[network]\ndns_listen = \"127.0.0.1\"",
                "network.dns_listen:",
            ),
            (
                "[agent]\nlog_max_bytes = 10",
                "agent.log_max_bytes: must be at least",
            ),
            (
                "[agent]\nusage_report_ms = 1",
                "agent.usage_report_ms: must be between",
            ),
            (
                "[autoscaler]\nmetric_window_ms = 1",
                "autoscaler.metric_window_ms: must be between 100 and 3600000, got 1",
            ),
            (
                "[api]\nmax_body_bytes = 10",
                "api.max_body_bytes: must be at least 1024",
            ),
            (
                "[api]\nrate_per_user = 0.0",
                "api.rate_per_user: must be a number of requests per second above 0",
            ),
            (
                "[api]\npod_security_default = \"open\"",
                "api.pod_security_default: \"open\" is not a Pod Security level",
            ),
        ];
        for (text, want) in cases {
            std::fs::write(&path, text).unwrap();
            let mut f = flags();
            f.config = Some(path.clone());
            let err = NodeConfig::load(&f).unwrap_err().to_string();
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
        std::fs::write(&path, "[network]\ncluster_cidr = \"10.0.0.0/8\"\nnode_prefix = 20\nservice_cidr = \"172.30.0.0/16\"\nnode_port_range = \"31000-31999\"\n[agent]\nusage_report_ms = 250\n[autoscaler]\nsync_period_ms = 1000\n").unwrap();
        let mut f = flags();
        f.config = Some(path);
        let c = NodeConfig::load(&f).unwrap();
        assert_eq!(c.network.cluster_cidr.to_string(), "10.0.0.0/8");
        assert_eq!(c.network.node_prefix, 20);
        assert_eq!(c.network.services.cidr.to_string(), "172.30.0.0/16");
        assert_eq!(c.network.services.node_ports, (31000, 31999));
        assert_eq!(c.network.cluster_domain, "cluster.local");
        assert!(c.network.dns_upstreams.is_empty() && c.network.dns_listen.is_none());
        assert_eq!(c.agent.usage_report, Duration::from_millis(250));
        assert_eq!(c.autoscaler.sync_period, Duration::from_secs(1));
    }
}
