//! What a workload kind (containers, VMs) plugs into the one supervisor: the [`Workload`]
//! trait (select its instances, start, probe, sample usage, inspect an end, stop, remove
//! what a previous node process left), the node-wide [`Node`] every instance task of a kind
//! shares, and the local [`Record`] that lets a restarted node process adopt what still
//! runs.

use std::collections::HashMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::network::{free_address, NodeNet, ADDRESS_LOCK};
use super::CpuRate;
use super::{Reporter, Run, Unit};
use crate::config::AgentSettings;
use crate::container::network::NodeNetwork;
use crate::model::instance::InstanceStatus;
use crate::model::{InstanceSpec, Kind};
use crate::orchestrator::ControlPlane;
use crate::store::{ObjectKey, Store};

/// What the node keeps about a supervised instance in its local table
/// (`<prefix><namespace>/<name>`), so a restarted node process can adopt the process and
/// keep its address and restart count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub uid: String,
    pub pid: Option<i32>,
    /// Start time of `pid` (see [`super::start_ticks`]).
    pub ticks: Option<u64>,
    pub restarts: u32,
    pub started_at: String,
    /// The instance's address in the node subnet (instances on the node network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
}

/// An instance placed on this node that a kind runs: its key, incarnation and spec.
pub struct Wanted<S> {
    pub key: ObjectKey,
    pub uid: String,
    pub spec: S,
}

/// Why a start did not produce a running process.
pub struct StartError {
    pub reason: &'static str,
    pub message: String,
    /// Tried again with backoff (else the instance stays Failed until it is replaced).
    pub retry: bool,
    /// Waiting for something outside the instance (a ConfigMap or Secret key): Pending,
    /// tried again every [`WAIT_POLL`] without backoff or a restart counted.
    pub wait: bool,
}

/// How often a start that waits for something outside the instance is tried again.
pub const WAIT_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// How one run was seen to end, before the kind inspects it.
pub enum Exit {
    /// The process ended: its exit code when it was our child.
    Code(Option<i32>),
    /// Its liveness probe failed (it still runs).
    Unhealthy(String),
}

/// How one run ended, as the kind tells it.
pub struct Ended {
    pub reason: &'static str,
    pub exit_code: Option<i32>,
    pub message: String,
    /// A clean end: Succeeded when not restarted, and not restarted under `OnFailure`.
    pub succeeded: bool,
    /// A reboot the workload asked for: started again at once, without backoff.
    pub reboot: bool,
}

/// What a probe found.
pub enum Probe {
    /// Nothing that changes the status.
    Nothing,
    /// Ready or not (with why not).
    Ready { ready: bool, message: String },
    /// The liveness probe failed for good: the run ends.
    Failed(String),
}

/// A workload kind, implemented by the kind's node-wide part (what its instances share).
/// The generic [`Unit`] supervisor calls these; the kind never copies the reconcile loop,
/// the records, adoption or restart with backoff.
pub trait Workload: Sized + Send + Sync + 'static {
    /// What the kind needs of an instance's spec.
    type Spec: Send + Sync + 'static;
    /// What the kind keeps per instance beside the common [`Unit`] fields.
    type State: Send + Sync + 'static;
    /// The probes of one run, and what they time.
    type Probes: Send + 'static;
    type Due: Copy + Send + 'static;

    /// Local record key prefix, e.g. `agent/`.
    const RECORD_PREFIX: &'static str;
    /// What the logs call one of these ("container", "VM").
    const NOUN: &'static str;

    /// This kind's part of an instance spec; None for instances of another kind.
    fn select(spec: InstanceSpec) -> Option<Self::Spec>;
    fn revision(spec: &Self::Spec) -> String;
    /// Whether the instance needs the node network (and an address in the node subnet).
    fn needs_network(spec: &Self::Spec) -> bool;
    /// `Always` (the default), `OnFailure` or `Never`.
    fn restart_policy(spec: &Self::Spec) -> Option<&str>;
    /// The kind's part of an instance incarnation; it may fill the kind's fields of the
    /// status (a container's id).
    fn state(
        node: &Node<Self>,
        key: &ObjectKey,
        uid: &str,
        status: &mut InstanceStatus,
    ) -> Self::State;

    /// Before the first start of an instance that was not adopted.
    fn prepare(_unit: &mut Unit<Self>) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// Starts one run: its pid and start ticks. On failure nothing is left behind.
    fn start(unit: &mut Unit<Self>) -> impl Future<Output = Result<(i32, u64), StartError>> + Send;
    /// The probes of a run just started (or adopted) and whether it is ready at once.
    fn probes(unit: &mut Unit<Self>, run: &Run) -> (Self::Probes, bool);
    /// When the next probe is due, and which.
    fn next_probe(probes: &Self::Probes) -> Option<(tokio::time::Instant, Self::Due)>;
    fn probe(
        unit: &mut Unit<Self>,
        probes: &mut Self::Probes,
        due: Self::Due,
    ) -> impl Future<Output = Probe> + Send;
    /// A usage sample (cpu millicores, memory bytes), recorded in the kind's metrics.
    fn usage(unit: &mut Unit<Self>, pid: i32, cpu: &mut CpuRate) -> Option<(u64, u64)>;
    /// Why the run ended; cleans up what the run leaves (the next start makes it anew).
    fn inspect(unit: &mut Unit<Self>, exit: Exit) -> impl Future<Output = Ended> + Send;
    /// The instance left: end its run and remove the kind's traces (the log and the
    /// record are the supervisor's).
    fn stop(unit: &mut Unit<Self>) -> impl Future<Output = ()> + Send;
    /// What a previous node process ran for an instance no longer here (the log and the
    /// record are the reconciler's).
    fn remove_leftover(
        node: &Node<Self>,
        key: &ObjectKey,
        record: &Record,
    ) -> impl Future<Output = ()> + Send;
    /// Before the first pass: what no record names (left by a crash mid-start).
    fn clean_unrecorded(
        _node: &Node<Self>,
        _records: &HashMap<ObjectKey, Record>,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// The instance left: its series go.
    fn forget(&self, key: &ObjectKey);
}

/// What every instance task of one kind shares: the node's name, settings, network,
/// records and status reporter, and the kind's own part (`Deref`s to it).
pub struct Node<W> {
    pub node: String,
    /// Log rotation and the usage period (the agent's settings, for VMs too).
    pub settings: AgentSettings,
    /// Instance logs, `<logs>/<namespace>/<name>.log`.
    pub logs: PathBuf,
    pub network: NodeNet,
    pub counters: Counters,
    store: Store,
    reporter: Arc<Reporter>,
    kind: W,
}

impl<W> std::ops::Deref for Node<W> {
    type Target = W;

    fn deref(&self) -> &W {
        &self.kind
    }
}

/// What [`Node::new`] takes beside the kind's part.
pub struct NodeParts {
    pub node: String,
    pub settings: AgentSettings,
    pub logs: PathBuf,
    pub network: NodeNet,
    pub counters: Counters,
}

/// The kind's series the supervisor keeps (registered by the kind under its own names).
#[derive(Clone, Default)]
pub struct Counters {
    /// Restarts of instances by the supervisor.
    pub restarts: Counter,
    /// Instances supervised on this node.
    pub supervised: Gauge,
}

impl<W: Workload> Node<W> {
    /// The shared part of a kind; starts its status reporter (until `stop`).
    pub fn new(
        control: &ControlPlane,
        parts: NodeParts,
        kind: W,
        stop: watch::Receiver<bool>,
    ) -> Node<W> {
        let reporter = Arc::new(Reporter::default());
        tokio::spawn(reporter.clone().run(control.clone(), stop));
        Node {
            node: parts.node,
            settings: parts.settings,
            logs: parts.logs,
            network: parts.network,
            counters: parts.counters,
            store: control.store().clone(),
            reporter,
            kind,
        }
    }

    /// Reports the status of the incarnation `uid` of the instance at `key`.
    pub fn report(&self, key: &ObjectKey, uid: &str, status: &InstanceStatus) {
        self.reporter.submit(key, uid, status);
    }

    pub fn log_path(&self, key: &ObjectKey) -> PathBuf {
        super::logs::log_path(&self.logs, &key.namespace, &key.name)
    }

    fn record_key(key: &ObjectKey) -> String {
        format!("{}{}/{}", W::RECORD_PREFIX, key.namespace, key.name)
    }

    pub(super) fn records(&self) -> Vec<(ObjectKey, Record)> {
        let entries = self.store.local_scan(W::RECORD_PREFIX).unwrap_or_default();
        entries
            .into_iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(W::RECORD_PREFIX)?;
                let (ns, name) = rest.split_once('/')?;
                let record = serde_json::from_slice(&v).ok()?;
                Some((ObjectKey::new(Kind::Instance, ns, name), record))
            })
            .collect()
    }

    /// A record for a new instance. On the node network it takes the lowest free address
    /// of the node subnet and is saved before it is returned (so no two instances get one
    /// address); None when the subnet is full.
    pub(super) fn new_record(
        &self,
        key: &ObjectKey,
        uid: &str,
        network: Option<&NodeNetwork>,
    ) -> Option<Record> {
        let mut record = Record {
            uid: uid.to_string(),
            pid: None,
            ticks: None,
            restarts: 0,
            started_at: String::new(),
            ip: None,
        };
        if let Some(network) = network {
            let _guard = ADDRESS_LOCK.lock().unwrap();
            record.ip = Some(free_address(&self.store, network.subnet)?);
            self.save_record(key, &record);
        }
        Some(record)
    }

    pub fn save_record(&self, key: &ObjectKey, record: &Record) {
        let bytes = serde_json::to_vec(record).expect("JSON");
        if let Err(e) = self.store.local_put(&Self::record_key(key), &bytes) {
            tracing::error!(instance = %key, error = %e, "saving the instance record");
        }
    }

    /// The instance left this node for good: its log, record, pending status and series.
    pub(super) async fn forget(&self, key: &ObjectKey) {
        let (log, keep) = (self.log_path(key), self.settings.log_keep);
        let _ = tokio::task::spawn_blocking(move || super::logs::remove(&log, keep)).await;
        let _ = self.store.local_delete(&Self::record_key(key));
        self.reporter.drop_pending(key);
        self.kind.forget(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_the_agent_and_the_director_wrote_before_are_adopted() {
        // The agent's record named its container and always held an address; the
        // container id is now derived from the key and uid, and the field is ignored.
        let agent = r#"{"uid":"u1","container_id":"default.web-0.u1","ip":"10.1.0.7",
            "pid":42,"ticks":9,"restarts":2,"started_at":"2026-01-01T00:00:00Z"}"#;
        let r: Record = serde_json::from_str(agent).unwrap();
        assert_eq!((r.pid, r.ticks, r.restarts), (Some(42), Some(9), 2));
        assert_eq!(r.ip, Some(Ipv4Addr::new(10, 1, 0, 7)));
        // A VM off the node network had no address.
        let vm = r#"{"uid":"u2","pid":null,"ticks":null,"restarts":0,"started_at":""}"#;
        let r: Record = serde_json::from_str(vm).unwrap();
        assert_eq!(r.ip, None);
        // Written back: `ip` only when there is one (`used_addresses` reads that field).
        let v = serde_json::to_value(&r).unwrap();
        assert!(v.get("ip").is_none(), "{v}");
        let with = Record {
            ip: Some(Ipv4Addr::new(10, 1, 0, 8)),
            ..r
        };
        assert_eq!(serde_json::to_value(&with).unwrap()["ip"], "10.1.0.8");
    }
}
