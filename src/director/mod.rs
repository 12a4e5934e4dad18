//! The director role: runs the VM instances the orchestrator placed on this node, each in
//! its own `omnicloud __vmm run` process (the [`crate::vmm`] library), as Firecracker runs
//! one VM per process. One reconcile loop compares the VM instances assigned here with the
//! [`supervisor`]s it runs; each supervisor owns one VM for its whole life: it checks the
//! spec, starts the VMM, records its boot time (first serial byte), samples its usage,
//! restarts it by `restartPolicy` with backoff, and reports every change of status.
//!
//! VMs outlive the node process, like containers: records in the local redb table
//! (`director/<namespace>/<name>`) let a restarted node adopt a VMM that still runs. The
//! serial console goes to the instance log, so `omnicloud logs` / `vms logs` read it.
//!
//! Files: `supervisor` (one VM), `metrics` (the director's series in `/metrics`).
//! May call: `vmm` (spec checks), `supervise`, `agent` (log files, cpu rates), `model`,
//! `store`, `orchestrator` (writes).

pub mod metrics;
pub mod supervisor;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use crate::config::{AgentSettings, DirectorSettings};
use crate::container::network::{NodeNetwork, Subnet};
use crate::model::Kind;
use crate::orchestrator::ControlPlane;
use crate::store::{ObjectKey, Store};
use crate::supervise::{spawn_leader_contact, Reporter};
pub use metrics::DirectorMetrics;
use supervisor::Record;

const RECORD_PREFIX: &str = "director/";
const TICK: Duration = Duration::from_secs(1);
const SETTLE: Duration = Duration::from_millis(50);

/// Everything the director needs from the node.
pub struct DirectorConfig {
    pub node: String,
    pub data_dir: PathBuf,
    /// Log rotation and the usage sampling period are the agent's settings.
    pub settings: AgentSettings,
    pub worker: DirectorSettings,
    /// What a worker VM joins: this node's gossip address, and the cluster's join token.
    pub join_addr: String,
    pub join_token: String,
    /// The node bridge VMs with `network.bridge: true` get a tap on.
    pub bridge: String,
}

/// What every VM supervisor shares.
pub struct Shared {
    pub node: String,
    /// `<data>/vms/<namespace>/<name>/`: the VMM's spec and its stdout/stderr.
    pub vms: PathBuf,
    /// Serial console logs, beside the containers' (`<data>/logs/<namespace>/<name>.log`).
    pub logs: PathBuf,
    pub settings: AgentSettings,
    pub worker: DirectorSettings,
    pub join_addr: String,
    pub join_token: String,
    pub metrics: DirectorMetrics,
    /// The node bridge and subnet, once leased and set up (by this or the agent).
    network: std::sync::Mutex<Option<NodeNetwork>>,
    /// This executable, re-run as `__vmm`.
    pub exe: PathBuf,
    store: Store,
    reporter: Arc<Reporter>,
}

fn record_key(key: &ObjectKey) -> String {
    format!("{RECORD_PREFIX}{}/{}", key.namespace, key.name)
}

impl Shared {
    pub fn network(&self) -> Option<NodeNetwork> {
        self.network.lock().unwrap().clone()
    }

    /// The lowest free address of the node subnet for `record`, saved with it before it is
    /// returned (agent and director share the subnet).
    pub fn allocate(
        &self,
        key: &ObjectKey,
        record: &mut Record,
        subnet: Subnet,
    ) -> Option<Ipv4Addr> {
        let _guard = crate::supervise::ADDRESS_LOCK.lock().unwrap();
        let ip = subnet.allocate(&crate::supervise::used_addresses(&self.store))?;
        record.ip = Some(ip);
        self.save_record(key, record);
        Some(ip)
    }

    pub fn report(&self, key: &ObjectKey, uid: &str, status: &crate::model::InstanceStatus) {
        self.reporter.submit(key, uid, status);
    }

    pub fn vm_dir(&self, key: &ObjectKey) -> PathBuf {
        self.vms.join(&key.namespace).join(&key.name)
    }

    fn records(&self) -> Vec<(ObjectKey, Record)> {
        let entries = self.store.local_scan(RECORD_PREFIX).unwrap_or_default();
        entries
            .into_iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(RECORD_PREFIX)?;
                let (ns, name) = rest.split_once('/')?;
                Some((
                    ObjectKey::new(Kind::Instance, ns, name),
                    serde_json::from_slice(&v).ok()?,
                ))
            })
            .collect()
    }

    pub fn save_record(&self, key: &ObjectKey, record: &Record) {
        let bytes = serde_json::to_vec(record).expect("JSON");
        if let Err(e) = self.store.local_put(&record_key(key), &bytes) {
            tracing::error!(instance = %key, error = %e, "saving the VM record");
        }
    }

    /// The VM left this node for good.
    pub fn forget(&self, key: &ObjectKey) {
        let _ = self.store.local_delete(&record_key(key));
        self.reporter.drop_pending(key);
        self.metrics.forget(key);
    }
}

/// Starts the director: adopts the VMs a previous node process left, then reconciles.
pub fn spawn(
    control: ControlPlane,
    config: DirectorConfig,
    metrics: DirectorMetrics,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    crate::container::runtime::become_subreaper().map_err(|e| e.one_line())?;
    let vms = config.data_dir.join("vms");
    let logs = config.data_dir.join("logs");
    for d in [&vms, &logs] {
        std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    let reporter = Arc::new(Reporter::default());
    tokio::spawn(reporter.clone().run(control.clone(), stop.clone()));
    let shared = Arc::new(Shared {
        node: config.node,
        vms,
        logs,
        settings: config.settings,
        worker: config.worker,
        join_addr: config.join_addr,
        join_token: config.join_token,
        metrics,
        network: std::sync::Mutex::new(None),
        exe: std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?,
        store: control.store().clone(),
        reporter,
    });
    tokio::spawn(reconcile_loop(control, shared, config.bridge, stop));
    Ok(())
}

/// The VM instances placed on `node`.
fn assigned(control: &ControlPlane, node: &str) -> Vec<supervisor::VmInstance> {
    crate::supervise::placed_on(control, node)
        .into_iter()
        .filter_map(|(key, uid, spec)| {
            Some(supervisor::VmInstance {
                key,
                uid,
                revision: spec.revision.unwrap_or_default(),
                vm: spec.vm?,
            })
        })
        .collect()
}

async fn reconcile_loop(
    control: ControlPlane,
    shared: Arc<Shared>,
    bridge: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut leftover: HashMap<ObjectKey, Record> = shared.records().into_iter().collect();
    let mut tasks = crate::supervise::Supervised::default();
    let mut changes = control.subscribe();
    let mut tick = tokio::time::interval(TICK);
    let mut first_pass = true;
    let last_contact = spawn_leader_contact(control.clone(), stop.clone());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            c = changes.recv() => match c {
                Err(broadcast::error::RecvError::Closed) => return,
                _ => while changes.try_recv().is_ok() {},
            },
            _ = stop.changed() => return,
        }
        tokio::time::sleep(SETTLE).await;
        while changes.try_recv().is_ok() {}
        tasks.reap();
        // Act only on a view at least as new as the leader's (see the agent).
        if last_contact.load(Ordering::Relaxed) == 0 {
            continue;
        }
        let mut wanted = assigned(&control, &shared.node);
        let wants_net =
            |v: &supervisor::VmInstance| v.vm.network.as_ref().and_then(|n| n.bridge) == Some(true);
        if shared.network().is_none() && wanted.iter().any(wants_net) {
            if let Some(subnet) = crate::supervise::node_subnet(&control, &shared.node) {
                let b = bridge.clone();
                match tokio::task::spawn_blocking(move || NodeNetwork::ensure(&b, subnet)).await {
                    Ok(Ok(n)) => {
                        if let Some(d) = n.degraded {
                            crate::supervise::announce_degraded(&control, &shared.node, d);
                        }
                        *shared.network.lock().unwrap() = Some(n);
                    }
                    Ok(Err(e)) => tracing::error!(error = %e, "setting up the VM network"),
                    Err(e) => tracing::error!(error = %e, "network setup panicked"),
                }
            }
        }
        // A networked VM waits for the node's subnet lease and bridge.
        if shared.network().is_none() {
            wanted.retain(|v| !wants_net(v));
        }
        tasks.stop_unwanted(wanted.iter().map(|i| (&i.key, i.uid.as_str())));
        for inst in wanted {
            if tasks.busy(&inst.key) {
                continue;
            }
            let adopted = match leftover.remove(&inst.key) {
                Some(r) if r.uid == inst.uid => Some(r),
                Some(old) => {
                    supervisor::remove_leftover(&shared, &inst.key, &old).await;
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
            for (key, record) in leftover.drain() {
                supervisor::remove_leftover(&shared, &key, &record).await;
            }
        }
        shared.metrics.vms.set(tasks.len() as i64);
    }
}
