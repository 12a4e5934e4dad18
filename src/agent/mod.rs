//! The agent role: runs the instances the orchestrator placed on this node as real
//! containers. One reconcile loop compares the instances assigned to this node (its local
//! replica of the store) with the supervisors it runs, and starts or stops
//! [`supervisor`]s; each supervisor owns one instance's container for its whole life.
//!
//! Containers outlive the node process: the node is their child subreaper while it runs,
//! and records in the local redb table (`agent/<namespace>/<name>`) let a restarted node
//! adopt what still runs and restart what died meanwhile. The agent acts only after its
//! first linearizable read through the leader (so a node that was away sees that its
//! instances moved), and it fences itself — stops its StatefulSet instances — when it
//! has not reached the leader for [`FENCE_AFTER`], and a watchdog process ([`fence`]) does
//! the same if the node process dies. Statuses go to the Raft leader through
//! one [`Reporter`] that coalesces and retries, each tied to the instance's uid.
//!
//! Files: `supervisor` (one instance), `containers` (the `__container` helper, process
//! liveness), `translate` (pod spec -> container spec), `health` (probes, backoff), `logs`
//! (files, rotation, tail/follow), `usage` (cgroup cpu and memory), `workload` (the demo
//! workloads the toolbox image runs).
//! May call: `container`, `model`, `store`, `orchestrator` (writes), `config`.

pub mod claims;
pub mod containers;
pub mod fence;
pub mod health;
pub mod images;
pub mod logs;
pub mod supervisor;
pub mod translate;
pub mod usage;
pub mod workload;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::{broadcast, watch};

use crate::cluster::Gossip;
use crate::config::AgentSettings;
use crate::container::network::NodeNetwork;
use crate::model::instance::InstanceStatus;
use crate::model::Kind;
use crate::orchestrator::ControlPlane;
use crate::store::{ObjectKey, Store};
use crate::supervise::{spawn_leader_contact, Reporter};
use supervisor::Record;

const RECORD_PREFIX: &str = "agent/";
/// Defined with the instance model, which the orchestrator shares.
pub use crate::model::instance::FENCE_AFTER;
const TICK: Duration = Duration::from_secs(1);
/// Pause before a pass, so a burst of changes costs one pass, not one each.
const SETTLE: Duration = Duration::from_millis(50);

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

/// What every supervisor shares.
pub struct Shared {
    pub node: String,
    pub dirs: Dirs,
    pub settings: AgentSettings,
    pub metrics: AgentMetrics,
    pub containers: containers::Containers,
    /// Peers to fetch images from, and the token their APIs take.
    pub peers: Gossip,
    pub admin_token: String,
    /// One image pull at a time.
    pub pulls: tokio::sync::Mutex<()>,
    /// Container creations in flight: a burst of new instances starts a few at a time, so
    /// the first are ready early and a new image's layers are unpacked once.
    pub starts: tokio::sync::Semaphore,
    store: Store,
    reporter: Arc<Reporter>,
    network: watch::Sender<Option<NodeNetwork>>,
    stopping: watch::Receiver<bool>,
}

fn record_key(key: &ObjectKey) -> String {
    format!("{RECORD_PREFIX}{}/{}", key.namespace, key.name)
}

impl Shared {
    /// Reports the status of the incarnation `uid` of the instance at `key`.
    pub fn report(&self, key: &ObjectKey, uid: &str, status: &InstanceStatus) {
        self.reporter.submit(key, uid, status);
    }

    pub fn network(&self) -> Option<NodeNetwork> {
        self.network.borrow().clone()
    }

    /// Waits until the orchestrator has leased this node a subnet and the bridge is up;
    /// None when the agent is stopping first.
    pub async fn wait_network(&self) -> Option<NodeNetwork> {
        let mut rx = self.network.subscribe();
        let mut stopping = self.stopping.clone();
        tokio::select! {
            n = rx.wait_for(|n| n.is_some()) => n.ok().and_then(|n| n.clone()),
            _ = stopping.wait_for(|s| *s) => None,
        }
    }

    fn records(&self) -> Vec<(ObjectKey, Record)> {
        let entries = self.store.local_scan(RECORD_PREFIX).unwrap_or_default();
        entries
            .into_iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(RECORD_PREFIX)?;
                let (ns, name) = rest.split_once('/')?;
                let record = serde_json::from_slice(&v).ok()?;
                Some((ObjectKey::new(Kind::Instance, ns, name), record))
            })
            .collect()
    }

    /// A record for a new instance with the lowest free address of the node subnet, saved
    /// before it is returned (so no two instances get one address).
    pub fn new_record(
        &self,
        key: &ObjectKey,
        uid: &str,
        container_id: &str,
        network: &NodeNetwork,
    ) -> Option<Record> {
        let _guard = crate::supervise::ADDRESS_LOCK.lock().unwrap();
        let used = crate::supervise::used_addresses(&self.store);
        let record = Record {
            uid: uid.to_string(),
            container_id: container_id.to_string(),
            ip: network.subnet.allocate(&used)?,
            pid: None,
            ticks: None,
            restarts: 0,
            started_at: String::new(),
        };
        self.save_record(key, &record);
        Some(record)
    }

    pub fn save_record(&self, key: &ObjectKey, record: &Record) {
        let bytes = serde_json::to_vec(record).expect("JSON");
        if let Err(e) = self.store.local_put(&record_key(key), &bytes) {
            tracing::error!(instance = %key, error = %e, "saving the instance record");
        }
    }

    /// The instance left this node for good.
    pub fn forget(&self, key: &ObjectKey) {
        let _ = self.store.local_delete(&record_key(key));
        self.reporter.drop_pending(key);
        self.metrics.forget(key);
    }
}

/// Everything the agent needs from the node.
pub struct AgentConfig {
    pub node: String,
    pub data_dir: PathBuf,
    pub bridge: String,
    pub settings: AgentSettings,
    pub peers: Gossip,
    pub admin_token: String,
}

/// Starts the agent: adopts what a previous node process left, then reconciles.
pub fn spawn(
    control: ControlPlane,
    config: AgentConfig,
    metrics: AgentMetrics,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    crate::container::runtime::become_subreaper().map_err(|e| e.one_line())?;
    let dirs = Dirs::under(&config.data_dir);
    for d in [&dirs.containers, &dirs.images, &dirs.logs] {
        std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    let reporter = Arc::new(Reporter::default());
    tokio::spawn(reporter.clone().run(control.clone(), stop.clone()));
    let shared = Arc::new(Shared {
        node: config.node,
        containers: containers::Containers::new(&dirs.containers)
            .map_err(|e| format!("finding this executable: {e}"))?,
        dirs,
        peers: config.peers,
        admin_token: config.admin_token,
        pulls: tokio::sync::Mutex::new(()),
        starts: tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
        ),
        settings: config.settings,
        metrics,
        store: control.store().clone(),
        reporter,
        network: watch::channel(None).0,
        stopping: stop.clone(),
    });
    let fence = fence::Fence::start(&config.data_dir, &shared.dirs.containers)?;
    tokio::spawn(reconcile_loop(control, shared, config.bridge, fence, stop));
    Ok(())
}

/// The container instances placed on `node` (VM instances are the director's).
fn assigned(control: &ControlPlane, node: &str) -> Vec<supervisor::Instance> {
    crate::supervise::placed_on(control, node)
        .into_iter()
        .filter(|(_, _, spec)| !spec.is_vm())
        .map(|(key, uid, spec)| supervisor::Instance { key, uid, spec })
        .collect()
}

async fn reconcile_loop(
    control: ControlPlane,
    shared: Arc<Shared>,
    bridge: String,
    mut fence: fence::Fence,
    mut stop: watch::Receiver<bool>,
) {
    let mut leftover: HashMap<ObjectKey, Record> = shared.records().into_iter().collect();
    remove_unrecorded_containers(&shared, &leftover).await;
    let mut tasks = crate::supervise::Supervised::default();
    let mut changes = control.subscribe();
    let mut tick = tokio::time::interval(TICK);
    let mut first_pass = true;
    let last_contact = spawn_leader_contact(control.clone(), stop.clone());
    let mut fenced = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            c = changes.recv() => match c {
                Err(broadcast::error::RecvError::Closed) => return,
                _ => while changes.try_recv().is_ok() {},
            },
            _ = stop.changed() => return,
        }
        // A write burst is one pass: let it settle, then drop what queued meanwhile.
        tokio::time::sleep(SETTLE).await;
        while changes.try_recv().is_ok() {}
        tasks.reap();
        if last_contact.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            continue;
        }
        let mut wanted = assigned(&control, &shared.node);
        let contact = last_contact.load(std::sync::atomic::Ordering::Relaxed);
        let silent = crate::orchestrator::membership::now_ms().saturating_sub(contact);
        // The watchdog fences the StatefulSet containers if this process stops beating.
        fence.beat_at(contact);
        fence.set_ids(
            wanted
                .iter()
                .filter(|i| {
                    i.spec
                        .owner
                        .as_ref()
                        .is_some_and(|o| o.kind == "StatefulSet")
                })
                .map(|i| supervisor::container_id(&i.key.namespace, &i.key.name, &i.uid))
                .collect(),
        );
        if (silent > FENCE_AFTER.as_millis() as u64) != fenced {
            fenced = !fenced;
            if fenced {
                tracing::warn!(
                    silent_ms = silent,
                    "lost the Raft leader: stopping StatefulSet instances (fenced)"
                );
            } else {
                tracing::info!("reached the Raft leader again: StatefulSet instances may run");
            }
        }
        if fenced {
            wanted.retain(|i| {
                i.spec
                    .owner
                    .as_ref()
                    .is_none_or(|o| o.kind != "StatefulSet")
            });
        }
        // The bridge comes up with the first instance: a node that runs none changes nothing.
        if shared.network().is_none() && !wanted.is_empty() {
            if let Some(subnet) = crate::supervise::node_subnet(&control, &shared.node) {
                let b = bridge.clone();
                match tokio::task::spawn_blocking(move || NodeNetwork::ensure(&b, subnet)).await {
                    Ok(Ok(n)) => {
                        tracing::info!(bridge = %n.bridge, subnet = %n.subnet, "instance network ready");
                        if let Some(d) = n.degraded {
                            crate::supervise::announce_degraded(&control, &shared.node, d);
                        }
                        shared.network.send_replace(Some(n));
                    }
                    Ok(Err(e)) => tracing::error!(error = %e, "setting up the instance network"),
                    Err(e) => tracing::error!(error = %e, "network setup panicked"),
                }
            }
        }
        tasks.stop_unwanted(wanted.iter().map(|i| (&i.key, i.uid.as_str())));
        for inst in wanted {
            if tasks.busy(&inst.key) {
                continue;
            }
            let adopted = match leftover.remove(&inst.key) {
                Some(r) if r.uid == inst.uid => Some(r),
                Some(old) => {
                    remove_leftover(&shared, &inst.key, &old).await;
                    None
                }
                None => None,
            };
            let shared = shared.clone();
            let (key, uid) = (inst.key.clone(), inst.uid.clone());
            tasks.start(key, uid, move |stop| {
                supervisor::run(shared, inst, adopted, stop)
            });
        }
        if first_pass {
            first_pass = false;
            // Records of instances no longer here: clean up what they left.
            for (key, record) in leftover.drain() {
                remove_leftover(&shared, &key, &record).await;
            }
        }
        shared.metrics.instances.set(tasks.len() as i64);
    }
}

/// A container a previous node process ran for an instance that is no longer here.
async fn remove_leftover(shared: &Shared, key: &ObjectKey, record: &Record) {
    tracing::info!(instance = %key, container = %record.container_id, "removing a container no longer assigned here");
    if let Err(e) = shared.containers.remove(&record.container_id).await {
        tracing::warn!(instance = %key, error = %e, "removing a leftover container");
    }
    if let Some(n) = shared.network() {
        n.detach(&record.container_id);
    }
    logs::remove(
        &logs::log_path(&shared.dirs.logs, &key.namespace, &key.name),
        shared.settings.log_keep,
    );
    shared.forget(key);
}

/// Containers under our runtime root with no record were left by a crash mid-start.
async fn remove_unrecorded_containers(shared: &Shared, records: &HashMap<ObjectKey, Record>) {
    let known: BTreeSet<&str> = records.values().map(|r| r.container_id.as_str()).collect();
    match shared.containers.list().await {
        Ok(list) => {
            for c in list.iter().filter(|c| !known.contains(c.id.as_str())) {
                tracing::info!(container = %c.id, "removing an unrecorded container");
                let _ = shared.containers.remove(&c.id).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "listing containers"),
    }
}
