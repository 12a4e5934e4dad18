//! The director role: runs the VM instances the orchestrator placed on this node, each in
//! its own `omnicloud __vmm run` process (the [`crate::vmm`] library), as Firecracker runs
//! one VM per process, as a workload kind of the one supervisor ([`crate::supervise`]):
//! its reconcile loop compares the VM instances assigned here with the supervisors it runs,
//! and each supervisor owns one VM for its whole life; this module supplies what is
//! particular to VMs ([`supervisor`]: check the spec and start the VMM, readiness at the
//! first serial byte, usage, why it ended, stop).
//!
//! VMs outlive the node process, like containers: records in the local redb table
//! (`director/<namespace>/<name>`) let a restarted node adopt a VMM that still runs. The
//! serial console goes to the instance log, so `omnicloud logs` / `vms logs` read it.
//!
//! Files: `supervisor` (the VM workload kind), `metrics` (the director's series in
//! `/metrics`).
//! May call: `vmm` (spec checks), `supervise`, `agent` (the instance metric labels),
//! `model`, `store`, `orchestrator` (writes).

pub mod metrics;
pub mod supervisor;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::{AgentSettings, DirectorSettings};
use crate::orchestrator::ControlPlane;
use crate::store::ObjectKey;
use crate::supervise::{Counters, Node, NodeNet, NodeParts, Open, Reconciler};
pub use metrics::DirectorMetrics;

const RECORD_PREFIX: &str = "director/";

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
    /// The node network (bridge and subnet) VMs with `network.bridge: true` get a tap
    /// and an address on, shared with the agent.
    pub network: NodeNet,
}

/// The director's part of what every VM supervisor shares (the rest is the supervisor's
/// [`Node`]).
pub struct Director {
    /// `<data>/vms/<namespace>/<name>/`: the VMM's spec and its stdout/stderr.
    pub vms: PathBuf,
    pub worker: DirectorSettings,
    pub join_addr: String,
    pub join_token: String,
    pub metrics: DirectorMetrics,
    /// This executable, re-run as `__vmm`.
    pub exe: PathBuf,
}

/// What every VM supervisor shares.
pub type Shared = Node<Director>;

impl Director {
    pub fn vm_dir(&self, key: &ObjectKey) -> PathBuf {
        self.vms.join(&key.namespace).join(&key.name)
    }
}

/// Starts the director: adopts the VMs a previous node process left, then reconciles.
pub fn spawn(
    control: ControlPlane,
    config: DirectorConfig,
    metrics: DirectorMetrics,
    stop: watch::Receiver<bool>,
) -> Result<(), crate::supervise::SetupError> {
    let vms = config.data_dir.join("vms");
    // Serial console logs, beside the containers' (`<data>/logs/<namespace>/<name>.log`).
    let logs = config.data_dir.join("logs");
    let exe = crate::supervise::setup(&[&vms, &logs])?;
    let director = Director {
        vms,
        worker: config.worker,
        join_addr: config.join_addr,
        join_token: config.join_token,
        metrics,
        exe,
    };
    let parts = NodeParts {
        node: config.node,
        settings: config.settings,
        logs,
        network: config.network,
        counters: Counters {
            restarts: director.metrics.restarts.clone(),
            supervised: director.metrics.vms.clone(),
        },
    };
    let shared = Arc::new(Node::new(&control, parts, director, stop.clone()));
    tokio::spawn(Reconciler::new(control, shared, Open).run(stop));
    Ok(())
}
