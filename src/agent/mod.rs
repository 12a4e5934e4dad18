//! The agent role: runs the instances the orchestrator placed on this node as real
//! containers, as a workload kind of the one supervisor ([`crate::supervise`]): its
//! reconcile loop compares the container instances assigned to this node (its local
//! replica of the store) with the supervisors it runs, and each supervisor owns one
//! instance's container for its whole life; this module supplies what is particular to
//! containers ([`supervisor`]: start, probes, usage, why it ended, stop).
//!
//! Containers outlive the node process: the node is their child subreaper while it runs,
//! and records in the local redb table (`agent/<namespace>/<name>`) let a restarted node
//! adopt what still runs and restart what died meanwhile. The agent acts only after its
//! first linearizable read through the leader (so a node that was away sees that its
//! instances moved), and it fences itself — stops its StatefulSet instances — when it
//! has not reached the leader for [`FENCE_AFTER`], and a watchdog process ([`fence`]) does
//! the same if the node process dies. Statuses go to the Raft leader through the
//! supervisor's reporter, each tied to the instance's uid.
//!
//! Files: `supervisor` (the container workload kind), `pod` (several containers, init
//! containers: the sandbox holding their network namespace, per-container restarts), `containers` (the `__container`
//! helper, process liveness), `translate` (pod spec -> container spec), `health` (probes),
//! `images` (pulls: peers, registries, pull policy, events), `configs` (ConfigMaps and Secrets: env, volume files,
//! pull credentials), `claims` (per-replica claims copied to peers), `exec` (which container an
//! exec enters, its helper process), `fence` (the
//! watchdog), `logs` (files, rotation, tail/follow), `usage` (cgroup cpu and memory),
//! `workload` (the demo workloads the toolbox image runs).
//! May call: `supervise`, `container`, `model`, `store`, `orchestrator` (writes), `config`.

pub mod claims;
pub mod configs;
pub mod containers;
pub mod exec;
pub mod fence;
/// Instance log files: the supervisor's (containers and VMs write them alike).
pub use crate::supervise::logs;
pub mod health;
pub mod images;
pub mod pod;
pub mod supervisor;
pub mod translate;
pub mod usage;
pub mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::cluster::Gossip;
use crate::config::AgentSettings;
use crate::model::InstanceSpec;
use crate::orchestrator::ControlPlane;
use crate::store::ObjectKey;
use crate::supervise::{Counters, Gate, Node, NodeNet, NodeParts, Reconciler, Wanted};

const RECORD_PREFIX: &str = "agent/";
/// Defined with the instance model, which the orchestrator shares.
pub use crate::model::instance::FENCE_AFTER;

/// Where the agent keeps things under the node's data dir.
#[derive(Clone, Debug)]
pub struct Dirs {
    /// The container runtime root (`__container --root`).
    pub containers: PathBuf,
    pub images: PathBuf,
    pub logs: PathBuf,
    /// emptyDir volumes, `<namespace>/<instance>/<volume>`.
    pub volumes: PathBuf,
    /// Persistent claims, `<namespace>/<claim>`.
    pub claims: PathBuf,
}

impl Dirs {
    pub fn under(data_dir: &Path) -> Dirs {
        Dirs {
            containers: data_dir.join("containers"),
            images: data_dir.join("images"),
            logs: data_dir.join("logs"),
            volumes: data_dir.join("volumes"),
            claims: data_dir.join("claims"),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    pub namespace: String,
    pub instance: String,
}

/// The agent's series in `/metrics`.
#[derive(Clone)]
pub struct AgentMetrics {
    pub start_duration: Histogram,
    pub restarts: Counter,
    cpu: Family<InstanceLabels, Gauge>,
    memory: Family<InstanceLabels, Gauge>,
    pub instances: Gauge,
}

impl AgentMetrics {
    pub fn new(registry: &mut Registry) -> AgentMetrics {
        let m = AgentMetrics {
            start_duration: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            restarts: Counter::default(),
            cpu: Family::default(),
            memory: Family::default(),
            instances: Gauge::default(),
        };
        registry.register(
            "agent_container_start_duration_seconds",
            "From create to running with its network, per container start",
            m.start_duration.clone(),
        );
        registry.register(
            "agent_container_restarts",
            "Container restarts by the agent",
            m.restarts.clone(),
        );
        registry.register(
            "agent_instance_cpu_millicores",
            "Instance cpu use over the last sample period",
            m.cpu.clone(),
        );
        registry.register(
            "agent_instance_memory_working_set_bytes",
            "Instance memory working set",
            m.memory.clone(),
        );
        registry.register(
            "agent_instances",
            "Instances supervised on this node",
            m.instances.clone(),
        );
        m
    }

    fn labels(key: &ObjectKey) -> InstanceLabels {
        InstanceLabels {
            namespace: key.namespace.clone(),
            instance: key.name.clone(),
        }
    }

    pub fn record_usage(&self, key: &ObjectKey, cpu_millis: u64, memory_bytes: u64) {
        let l = Self::labels(key);
        self.cpu.get_or_create(&l).set(cpu_millis as i64);
        self.memory.get_or_create(&l).set(memory_bytes as i64);
    }

    fn forget(&self, key: &ObjectKey) {
        let l = Self::labels(key);
        self.cpu.remove(&l);
        self.memory.remove(&l);
    }
}

/// The agent's part of what every container supervisor shares (the rest is the
/// supervisor's [`Node`]).
pub struct Agent {
    pub dirs: Dirs,
    pub metrics: AgentMetrics,
    pub containers: containers::Containers,
    /// The local replica of the store: ConfigMaps and Secrets instances read.
    pub control: ControlPlane,
    /// Peers to fetch images from, and the token their APIs take.
    pub peers: Gossip,
    pub node_token: String,
    /// One image pull at a time.
    pub pulls: tokio::sync::Mutex<()>,
    /// Where images are pulled from (`[registries]`).
    pub registries: crate::config::RegistrySettings,
    /// For the image pull events.
    pub events: std::sync::Mutex<crate::orchestrator::controllers::events::Recorder>,
    /// Container creations in flight: a burst of new instances starts a few at a time, so
    /// the first are ready early and a new image's layers are unpacked once.
    pub starts: tokio::sync::Semaphore,
    /// The cluster domain, for the containers' /etc/resolv.conf search path.
    pub cluster_domain: String,
}

/// What every container supervisor shares.
pub type Shared = Node<Agent>;

/// Everything the agent needs from the node.
pub struct AgentConfig {
    pub node: String,
    pub data_dir: PathBuf,
    /// The node network (bridge and subnet), shared with the director.
    pub network: NodeNet,
    pub settings: AgentSettings,
    pub peers: Gossip,
    pub node_token: String,
    /// `[network] cluster_domain`.
    pub cluster_domain: String,
    pub registries: crate::config::RegistrySettings,
}

/// Why the agent did not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Setup(#[from] crate::supervise::SetupError),
    #[error(transparent)]
    Fence(#[from] fence::FenceError),
}

/// Starts the agent: adopts what a previous node process left, then reconciles.
pub fn spawn(
    control: ControlPlane,
    config: AgentConfig,
    metrics: AgentMetrics,
    stop: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let dirs = Dirs::under(&config.data_dir);
    let exe = crate::supervise::setup(&[&dirs.containers, &dirs.images, &dirs.logs])?;
    let agent = Agent {
        containers: containers::Containers::new(exe, &dirs.containers),
        control: control.clone(),
        peers: config.peers,
        node_token: config.node_token,
        pulls: tokio::sync::Mutex::new(()),
        registries: config.registries,
        events: Default::default(),
        starts: tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
        ),
        metrics,
        dirs,
        cluster_domain: config.cluster_domain,
    };
    let fence = fence::Fence::start(&config.data_dir, &agent.dirs.containers)?;
    let parts = NodeParts {
        node: config.node,
        settings: config.settings,
        logs: agent.dirs.logs.clone(),
        network: config.network,
        counters: Counters {
            restarts: agent.metrics.restarts.clone(),
            supervised: agent.metrics.instances.clone(),
        },
    };
    let shared = Arc::new(Node::new(&control, parts, agent, stop.clone()));
    let gate = Fenced {
        fence,
        fenced: false,
    };
    tokio::spawn(Reconciler::new(control, shared, gate).run(stop));
    Ok(())
}

/// The agent's fence on each pass: the watchdog fences the StatefulSet containers if this
/// process stops beating, and the agent stops them itself while it has not reached the
/// Raft leader for [`FENCE_AFTER`].
struct Fenced {
    fence: fence::Fence,
    fenced: bool,
}

fn stateful(spec: &InstanceSpec) -> bool {
    spec.owner
        .as_ref()
        .is_some_and(|o| o.kind == crate::model::Kind::StatefulSet)
}

impl Gate<InstanceSpec> for Fenced {
    fn pass(&mut self, wanted: &mut Vec<Wanted<InstanceSpec>>, contact: u64) {
        let silent = crate::orchestrator::membership::now_ms().saturating_sub(contact);
        self.fence.beat_at(contact);
        self.fence.set_ids(
            wanted
                .iter()
                .filter(|i| stateful(&i.spec))
                .flat_map(|i| {
                    let id = supervisor::container_id(&i.key.namespace, &i.key.name, &i.uid);
                    let mut ids = pod::Pod::all_ids(&i.spec, &id);
                    ids.push(id);
                    ids
                })
                .collect(),
        );
        if (silent > FENCE_AFTER.as_millis() as u64) != self.fenced {
            self.fenced = !self.fenced;
            if self.fenced {
                tracing::warn!(
                    silent_ms = silent,
                    "lost the Raft leader: stopping StatefulSet instances (fenced)"
                );
            } else {
                tracing::info!("reached the Raft leader again: StatefulSet instances may run");
            }
        }
        if self.fenced {
            wanted.retain(|i| !stateful(&i.spec));
        }
    }
}
