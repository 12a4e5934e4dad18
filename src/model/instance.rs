//! `Instance` (one running copy of a workload, named `<workload>-<index>`, placed on one
//! node) and `NodeSubnet` (the instance subnet the orchestrator leased to a node from the
//! cluster CIDR). Controllers create both; users read them (`omnicloud get instances`).
//!
//! An instance's `status` is written only by the agent that runs it ([`InstanceStatus`]).

use serde::{Deserialize, Serialize};

use super::infra::VirtualMachineSpec;
use super::limits::{self, MAX_REPLICAS};
use super::pod_validation::validate_pod_spec;
use super::workload::PodSpec;
use super::{invalid, ModelError};

/// Label every controller-made instance carries: the workload that owns it.
pub const OWNER_LABEL: &str = "omnicloud.io/owner";
/// An agent that has not reached the Raft leader for this long stops its StatefulSet
/// instances: the orchestrator may be replacing them elsewhere (at most one per identity).
/// Shared by the agent (which fences) and the orchestrator (which waits twice this long).
pub const FENCE_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InstanceSpec {
    /// The node that runs it; unset while it waits for placement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<OwnerRef>,
    /// The replica index within its owner (`web-3` has index 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<i64>,
    /// Hash of the owner's pod template this instance was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// A container instance (run by an agent); empty for a VM instance.
    #[serde(default, skip_serializing_if = "PodSpec::is_empty")]
    pub pod: PodSpec,
    /// A VM instance (run by a director), a replica of a VirtualMachine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VirtualMachineSpec>,
}

/// What a VM costs its director beyond guest memory: the VMM process (measured ~9 MiB
/// RSS, `cargo bench --bench vmm`), rounded up.
pub const VM_OVERHEAD_BYTES: u64 = 16 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OwnerRef {
    /// Serialized as the kind's name ("Deployment"); a name that is no kind is refused.
    pub kind: super::Kind,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

impl InstanceSpec {
    pub(super) fn validate(&self) -> Result<(), ModelError> {
        if let Some(n) = &self.node_name {
            super::validate_name("spec.nodeName", n)?;
        }
        limits::opt_range("spec.index", self.index, 0, MAX_REPLICAS)?;
        match &self.vm {
            Some(_) if !self.pod.is_empty() => Err(invalid(
                "spec.vm",
                format!(
                    "an instance runs a pod or a VM, not both (spec.pod has {} containers)",
                    self.pod.containers.len()
                ),
            )),
            Some(vm) => vm.validate(),
            None => validate_pod_spec("spec.pod", &self.pod),
        }
    }

    /// A VM instance (a director runs it) rather than a container one (an agent does).
    pub fn is_vm(&self) -> bool {
        self.vm.is_some()
    }

    /// What it asks of its node: (cpu millicores, memory bytes).
    pub fn requests(&self) -> (u64, u64) {
        match &self.vm {
            Some(vm) => (
                vm.cpu.cores.max(1) as u64 * 1000,
                vm.memory.guest.bytes() + VM_OVERHEAD_BYTES,
            ),
            None => self.pod.requests(),
        }
    }
}

/// Where an instance is in its life, as `omnicloud get instances` shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Not yet running: waiting for a node, an image or the container to start.
    #[default]
    Pending,
    Running,
    /// Exited and waiting out its restart backoff.
    CrashLoopBackOff,
    /// Cannot start as specified (unknown image, bad command); retried with backoff.
    Failed,
    /// Ran to completion and is not restarted (restartPolicy Never/OnFailure).
    Succeeded,
    /// Being stopped and removed.
    Terminating,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::CrashLoopBackOff => "CrashLoopBackOff",
            Phase::Failed => "Failed",
            Phase::Succeeded => "Succeeded",
            Phase::Terminating => "Terminating",
        }
    }
}

/// How the last run of an instance ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Termination {
    /// Shell style: 137 for SIGKILL; None when the process was not ours to reap (adopted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// OOMKilled, Error, Completed, LivenessProbeFailed, Killed.
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    pub finished_at: String,
}

/// Cgroup usage sampled by the agent: cpu averaged over the `window_ms` that ended at
/// `timestamp`, memory at `timestamp` (the autoscalers' samples).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    /// RFC 3339 with milliseconds; empty from agents that predate it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub window_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The reasons an instance's status gives (`status.reason`), written by the scheduler and
/// the node supervisors and read by the cluster autoscaler and the CLI's why-not-ready line.
pub mod reasons {
    /// No node fits it (the scheduler's explanation is the message).
    pub const UNSCHEDULABLE: &str = "Unschedulable";
    /// Its node's instance network is not up.
    pub const NETWORK_SETUP_FAILED: &str = "NetworkSetupFailed";
    /// No free address in its node's subnet.
    pub const NO_ADDRESS: &str = "NoAddress";
    /// Running, its readiness probe failing.
    pub const READINESS_PROBE_FAILED: &str = "ReadinessProbeFailed";
    /// Exited, waiting out its restart backoff.
    pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
    /// Its spec cannot run on this node as written.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The container could not be created or started.
    pub const CONTAINER_CANNOT_RUN: &str = "ContainerCannotRun";
    /// Its image could not be fetched.
    pub const ERR_IMAGE_PULL: &str = "ErrImagePull";
    /// Its image is nowhere: not in the node's store nor on any peer.
    pub const ERR_IMAGE_NOT_FOUND: &str = "ErrImageNotFound";
    /// Its image pull failed again: waiting out the backoff.
    pub const IMAGE_PULL_BACK_OFF: &str = "ImagePullBackOff";
    /// `imagePullPolicy: Never` and the image is not on the node.
    pub const ERR_IMAGE_NEVER_PULL: &str = "ErrImageNeverPull";
    /// Its image reference does not parse.
    pub const INVALID_IMAGE_NAME: &str = "InvalidImageName";
    /// A ConfigMap, Secret or key it needs is missing (it starts once there).
    pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";
}

/// Written by the agent that runs the instance (and by the scheduler while it waits for a
/// node). Every field reads with its default, so any part of one reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct InstanceStatus {
    pub phase: Phase,
    pub ready: bool,
    /// When it last became ready (minReadySeconds counts from here).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ready_since: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container_id: String,
    pub restarts: u32,
    /// Why it is not running or not ready (ErrImageNotFound, ContainerCannotRun, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_termination: Option<Termination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The revision (spec.revision) this status describes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revision: String,
    /// What it runs without but is otherwise fine (e.g. no outbound NAT on its node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<StatusWarning>,
    /// One per app container of a multi-container instance (or one with init containers),
    /// in spec order; empty for a single-container instance (its fields above say it all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_statuses: Vec<ContainerStatus>,
    /// One per init container, in spec order, as far as they got.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_container_statuses: Vec<ContainerStatus>,
}

/// One container of an instance, as Kubernetes' `containerStatuses[]` says it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ContainerStatus {
    pub name: String,
    pub ready: bool,
    pub restart_count: u32,
    pub state: ContainerState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_termination: Option<Termination>,
    /// The runtime's id of its current (or last) run.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub container_id: String,
}

/// Where one container is: exactly one of the three, as Kubernetes' `ContainerState`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ContainerState {
    Waiting {
        reason: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        message: String,
    },
    #[serde(rename_all = "camelCase")]
    Running {
        #[serde(default)]
        started_at: String,
    },
    #[serde(rename_all = "camelCase")]
    Terminated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        reason: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        message: String,
        #[serde(default)]
        finished_at: String,
    },
}

impl Default for ContainerState {
    fn default() -> Self {
        ContainerState::Waiting {
            reason: "ContainerCreating".into(),
            message: String::new(),
        }
    }
}

impl ContainerState {
    /// Running, Waiting or Terminated, with the reason when there is one (for tables).
    pub fn summary(&self) -> String {
        match self {
            ContainerState::Waiting { reason, .. } => format!("Waiting ({reason})"),
            ContainerState::Running { .. } => "Running".into(),
            ContainerState::Terminated { reason, .. } => format!("Terminated ({reason})"),
        }
    }
}

/// A degraded part of an instance's environment it runs without.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StatusWarning {
    /// CamelCase, e.g. NoOutboundNAT.
    pub reason: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeSubnetSpec {
    /// e.g. 10.88.3.0/24, inside the cluster CIDR, disjoint from every other node's.
    pub cidr: String,
}

impl NodeSubnetSpec {
    pub(super) fn validate(&self) -> Result<(), ModelError> {
        // The same parse the node uses: a lease it would drop must not be stored.
        match super::Subnet::parse(&self.cidr) {
            Some(_) => Ok(()),
            None => Err(invalid(
                "spec.cidr",
                format!(
                    "\"{}\" is not an IPv4 CIDR with a prefix of /8 to /30, like 10.88.3.0/24",
                    self.cidr
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lease the node's own parse would drop (a /0 to /7 prefix) is refused when written,
    /// naming the field, instead of being stored and silently ignored by the node.
    #[test]
    fn node_subnet_cidrs_are_what_the_node_can_use() {
        let spec = |cidr: &str| NodeSubnetSpec { cidr: cidr.into() };
        assert!(spec("10.88.3.0/24").validate().is_ok());
        for bad in [
            "10.0.0.0/4",
            "0.0.0.0/0",
            "10.88.3.0/31",
            "10.88.3.0",
            "x/24",
        ] {
            let err = spec(bad).validate().unwrap_err();
            assert_eq!(err.field, "spec.cidr", "{bad}");
        }
    }
}
