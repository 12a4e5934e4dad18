//! The director's series in `/metrics`: VM boots, exits by reason, KVM exits by kind, guest
//! memory and VMM usage per VM.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::agent::InstanceLabels;
use crate::store::ObjectKey;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone)]
pub struct DirectorMetrics {
    /// VMM process start to the guest's first serial byte.
    pub boot_duration: Histogram,
    /// Why VMs ended: poweroff, reset, crashed, killed, error.
    pub exits: Family<ReasonLabels, Counter>,
    /// KVM exits the VMMs handled (pio, mmio), counted when each VM ends.
    pub kvm_exits: Family<ReasonLabels, Counter>,
    pub restarts: Counter,
    pub vms: Gauge,
    guest_memory: Family<InstanceLabels, Gauge>,
    cpu: Family<InstanceLabels, Gauge>,
    rss: Family<InstanceLabels, Gauge>,
}

impl DirectorMetrics {
    pub fn new(registry: &mut Registry) -> DirectorMetrics {
        let m = DirectorMetrics {
            boot_duration: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            exits: Family::default(),
            kvm_exits: Family::default(),
            restarts: Counter::default(),
            vms: Gauge::default(),
            guest_memory: Family::default(),
            cpu: Family::default(),
            rss: Family::default(),
        };
        registry.register(
            "director_vm_boot_duration_seconds",
            "From starting the VMM process to the guest's first serial byte",
            m.boot_duration.clone(),
        );
        registry.register(
            "director_vm_exits",
            "VMs that ended, by reason (poweroff, reset, crashed, killed, error)",
            m.exits.clone(),
        );
        registry.register(
            "director_vm_kvm_exits",
            "KVM exits handled by the VMMs of VMs that ended, by kind (pio, mmio)",
            m.kvm_exits.clone(),
        );
        registry.register(
            "director_vm_restarts",
            "VM restarts by the director",
            m.restarts.clone(),
        );
        registry.register("director_vms", "VMs supervised on this node", m.vms.clone());
        registry.register(
            "director_vm_guest_memory_bytes",
            "Guest memory of each running VM",
            m.guest_memory.clone(),
        );
        registry.register(
            "director_vm_cpu_millicores",
            "CPU use of each VM's VMM process (vCPU threads included)",
            m.cpu.clone(),
        );
        registry.register(
            "director_vm_rss_bytes",
            "Resident memory of each VM's VMM process (touched guest memory included)",
            m.rss.clone(),
        );
        m
    }

    fn labels(key: &ObjectKey) -> InstanceLabels {
        InstanceLabels {
            namespace: key.namespace.clone(),
            instance: key.name.clone(),
        }
    }

    pub fn running(&self, key: &ObjectKey, guest_bytes: u64) {
        self.guest_memory
            .get_or_create(&Self::labels(key))
            .set(guest_bytes as i64);
    }

    pub fn record_usage(&self, key: &ObjectKey, cpu_millis: u64, rss_bytes: u64) {
        let l = Self::labels(key);
        self.cpu.get_or_create(&l).set(cpu_millis as i64);
        self.rss.get_or_create(&l).set(rss_bytes as i64);
    }

    pub fn exited(&self, reason: &str, pio: u64, mmio: u64) {
        self.exits
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
        for (kind, n) in [("pio", pio), ("mmio", mmio)] {
            self.kvm_exits
                .get_or_create(&ReasonLabels {
                    reason: kind.into(),
                })
                .inc_by(n);
        }
    }

    pub fn forget(&self, key: &ObjectKey) {
        let l = Self::labels(key);
        self.guest_memory.remove(&l);
        self.cpu.remove(&l);
        self.rss.remove(&l);
    }
}
