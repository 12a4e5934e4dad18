//! Infrastructure kinds: VirtualMachine (a microVM workload run by directors), NodeClass
//! (a worker VM size), PriorityClass and Namespace.
//!
//! VirtualMachine, OmniCloud form:
//! ```yaml
//! spec:
//!   replicas: 2            # optional, VMs named <name>-<index>
//!   running: true
//!   cpu: {cores: 2}
//!   memory: {guest: 512Mi}
//!   kernel: /var/lib/omnicloud/images/vmlinux
//!   initrd: /var/lib/omnicloud/images/initrd.img
//!   cmdline: "console=ttyS0"
//!   disks: [{name: root, image: /path/disk.raw, readOnly: false}]
//!   network: {bridge: true}
//!   worker: false          # true: boot the director's worker image, join as an agent
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::limits::{self, MAX_CPU_MILLIS, MAX_MEMORY_BYTES, MIN_PRIORITY};
use super::quantity::{CpuQuantity, MemoryQuantity};
use super::{invalid, ModelError};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespaceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalizers: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VirtualMachineSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<bool>,
    pub cpu: VmCpu,
    pub memory: VmMemory,
    /// A kernel file on the director; may be left out with `worker: true`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kernel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disks: Option<Vec<VmDisk>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<VmNetwork>,
    /// Always (default), OnFailure, Never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// A worker VM: the director boots its worker image (kernel and initramfs holding this
    /// binary) with its own join address and the cluster token on the command line, and
    /// the guest joins the cluster as an agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VmCpu {
    pub cores: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedicated_cpu_placement: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VmMemory {
    pub guest: MemoryQuantity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugepages: Option<Hugepages>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Hugepages {
    pub page_size: MemoryQuantity,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VmDisk {
    pub name: String,
    /// A raw disk image file on the director.
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VmNetwork {
    /// Attach a tap device on the node bridge (virtio-net).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// The built-in VMM's vCPU limit (`vmm::spec::MAX_VCPUS`, Firecracker's too).
pub const MAX_VM_CORES: i64 = 32;

impl VirtualMachineSpec {
    pub fn replicas(&self) -> i64 {
        self.replicas.unwrap_or(1)
    }

    pub fn running(&self) -> bool {
        self.running.unwrap_or(true)
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        limits::replicas("spec.replicas", self.replicas)?;
        if self.cpu.cores < 1 {
            return Err(invalid(
                "spec.cpu.cores",
                format!("must be >= 1, got {}", self.cpu.cores),
            ));
        }
        if self.cpu.cores > MAX_VM_CORES {
            return Err(invalid(
                "spec.cpu.cores",
                format!(
                    "{} is more than the maximum of {MAX_VM_CORES}",
                    self.cpu.cores
                ),
            ));
        }
        limits::opt_range("spec.cpu.sockets", self.cpu.sockets, 1, MAX_VM_CORES)?;
        limits::opt_range("spec.cpu.threads", self.cpu.threads, 1, MAX_VM_CORES)?;
        let guest = self.memory.guest.bytes();
        limits::amount("spec.memory.guest", guest, MAX_MEMORY_BYTES, " bytes")?;
        if let Some(h) = &self.memory.hugepages {
            limits::amount(
                "spec.memory.hugepages.pageSize",
                h.page_size.bytes(),
                1 << 30,
                " bytes",
            )?;
        }
        if guest < 2 << 20 {
            return Err(invalid(
                "spec.memory.guest",
                "must be at least 2Mi (the kernel loads at 1 MiB)",
            ));
        }
        if self.disks.as_ref().is_some_and(|d| d.len() > 1) {
            return Err(invalid(
                "spec.disks",
                "the built-in VMM attaches one disk (virtio-blk); give at most one",
            ));
        }
        if let Some(mac) = self.network.as_ref().and_then(|n| n.mac.as_ref()) {
            return Err(invalid(
                "spec.network.mac",
                format!("\"{mac}\": the director derives each replica's MAC from its address; leave it out"),
            ));
        }
        if self.kernel.trim().is_empty() && self.worker != Some(true) {
            return Err(invalid(
                "spec.kernel",
                "is required (path to a kernel image on the director) unless worker: true",
            ));
        }
        for (i, d) in self.disks.iter().flatten().enumerate() {
            super::validate_name(&format!("spec.disks[{i}].name"), &d.name)?;
            if d.image.trim().is_empty() {
                return Err(invalid(
                    &format!("spec.disks[{i}].image"),
                    "is required (path to a raw disk image)",
                ));
            }
        }
        if let Some(r) = &self.restart_policy {
            if !["Always", "OnFailure", "Never"].contains(&r.as_str()) {
                return Err(invalid(
                    "spec.restartPolicy",
                    format!("\"{r}\" is not Always, OnFailure or Never"),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeClassSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sizing_policy: Option<SizingPolicyRef>,
    pub resources: NodeClassResources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taints: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SizingPolicyRef {
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeClassResources {
    pub cpu: CpuQuantity,
    pub memory: MemoryQuantity,
}

impl NodeClassSpec {
    pub(super) fn validate(&self) -> Result<(), ModelError> {
        if self.resources.cpu.millis() < 100 {
            return Err(invalid("spec.resources.cpu", "must be at least 100m"));
        }
        if self.resources.memory.bytes() < 16 << 20 {
            return Err(invalid("spec.resources.memory", "must be at least 16Mi"));
        }
        let cpu = self.resources.cpu.millis();
        limits::amount("spec.resources.cpu", cpu, MAX_CPU_MILLIS, "m")?;
        let memory = self.resources.memory.bytes();
        limits::amount("spec.resources.memory", memory, MAX_MEMORY_BYTES, " bytes")?;
        if let Some(labels) = &self.labels {
            super::validate_label_map("spec.labels", labels)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PriorityClassSpec {
    pub value: i64,
    /// Unlimited, Limited or None: how far this priority may push platform components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_effect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_default: Option<bool>,
    /// PreemptLowerPriority (default) or Never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preemption_policy: Option<String>,
}

impl PriorityClassSpec {
    pub(super) fn validate(&self) -> Result<(), ModelError> {
        if self.value < MIN_PRIORITY {
            return Err(invalid(
                "spec.value",
                format!("must be >= {MIN_PRIORITY}, got {}", self.value),
            ));
        }
        if self.value > 1_000_000_000 {
            return Err(invalid(
                "spec.value",
                "must be <= 1000000000 (higher values are reserved for the platform)",
            ));
        }
        if let Some(e) = &self.bootstrap_effect {
            if !["Unlimited", "Limited", "None"].contains(&e.as_str()) {
                return Err(invalid(
                    "spec.bootstrapEffect",
                    format!("\"{e}\" is not Unlimited, Limited or None"),
                ));
            }
        }
        if let Some(p) = &self.preemption_policy {
            if p != "PreemptLowerPriority" && p != "Never" {
                return Err(invalid(
                    "spec.preemptionPolicy",
                    format!("\"{p}\" is not PreemptLowerPriority or Never"),
                ));
            }
        }
        Ok(())
    }
}
