//! The built-in minimal VMM: one microVM per process on Linux KVM, in Firecracker's shape
//! (one thread per vCPU, devices emulated in the VMM process). A leaf library: sync code, no
//! tokio, no actors. The director runs each VM in its own helper process,
//! `omnicloud __vmm run` ([`helper`]), so a VM that crashes or is killed takes nothing else
//! with it.
//!
//! Building a VM, in order ([`builder::build`] does it in one function):
//!
//! 1. [`spec::VmSpec::validate`] refuses a bad spec before anything is created, naming the
//!    field (vCPUs, memory size, kernel/initrd/disk files, command line, `net.tap`,
//!    `net.mac`, `net.bridge`, socket paths).
//! 2. Open `/dev/kvm`, create the VM, its in-kernel interrupt controllers (PIC, IOAPIC,
//!    LAPICs) and PIT, as Firecracker does.
//! 3. [`memory`]: guest RAM as anonymous mappings (vm-memory), registered as KVM memory
//!    slots, with a hole below 4 GiB for device MMIO ([`layout`]).
//! 4. [`boot`]: load the kernel with linux-loader (ELF vmlinux, or a bzImage with a 64-bit
//!    entry point), the initrd, the command line (plus one `virtio_mmio.device=` entry per
//!    device), and the Linux "zero page" (`boot_params`) with the e820 map.
//! 5. [`cpu`]: per vCPU, CPUID, MSRs, LAPIC LINT0/LINT1; on the boot vCPU the 64-bit entry
//!    state of the Linux boot protocol: GDT, identity-mapped page tables, long mode,
//!    `%rip` = kernel entry, `%rsi` = zero page. [`mptable`] tells the guest its CPUs and
//!    IOAPIC (there is no ACPI).
//! 6. [`devices`]: the port-I/O bus (16550 serial COM1, the agent channel COM2, i8042
//!    reset, a poweroff port) and the MMIO bus (virtio-mmio block and net devices; the net
//!    device opens or creates its tap, puts it on a bridge, and starts its event thread).
//! 7. [`vcpu`]: one thread per vCPU runs `KVM_RUN` and hands each I/O or MMIO exit to the
//!    buses; [`vm::Vm::wait`] returns when the guest powers off, resets or crashes.
//!
//! Guest-visible contract (what the purpose-built test guest in `images/test-guest` checks):
//!
//! - serial console COM1 at port 0x3f8 (IRQ 4) (Linux: `console=ttyS0`);
//! - poweroff = a write with bit 13 set (0x2000) to port 0x604 (the PM1a control port
//!   QEMU's q35 uses); reset = 0xfe to the i8042 command port 0x64 (as Firecracker) or
//!   0x06/0x0e to 0xcf9. A Linux guest halts the VM with `reboot` (i8042) just as under
//!   Firecracker;
//! - virtio-mmio (register layout v2, virtio 1.x) devices from 0xd000_0000, 4 KiB apart,
//!   IRQs from 5, in this order: block (id 2) if the spec has a disk, then net (id 1) if it
//!   has `net`; each announced on the command line as `virtio_mmio.device=4K@<base>:<irq>`;
//! - virtio-net: queue 0 receive, queue 1 transmit, features `VIRTIO_F_VERSION_1` and
//!   `VIRTIO_NET_F_MAC` (the MAC from the spec in config space); every buffer starts with
//!   the 12-byte `virtio_net_hdr`; no offloads, no mergeable buffers (receive buffers must
//!   hold header + whole frame, 1526 bytes at the tap's default MTU). Frames go to and come
//!   from the host's tap interface `net.tap`;
//! - the guest-agent channel (when the spec has `agent_socket`): a second 16550, COM2 at
//!   port 0x2f8 (IRQ 3) (Linux: `/dev/ttyS1`), whose bytes are those of the host's Unix
//!   socket; by convention one JSON object per line each way.
//!
//! Threads: one per vCPU; per Unix socket (console, agent) an accept loop and a reader per
//! client; one event thread per net device (epoll on its tap).
//!
//! Files: `spec` (the VM spec), `layout` (guest physical addresses), `memory`, `boot`, `cpu`,
//! `mptable`, `devices/` (buses, serial, legacy ports, `virtio/` block and `net/` with its
//! tap), `vcpu` (threads and their run loop), `vm` (a running VM), `builder` (assembles
//! one), `helper` (the `__vmm` process).
//! May call: only the crate root's `error_chain`. Unsafe code (each with a `// SAFETY:`
//! note): KVM memory slots, the vCPU kick signal handler, `pthread_kill`, non-blocking
//! socket sends, the tap and interface ioctls.

pub mod boot;
pub mod builder;
pub mod cpu;
pub mod devices;
pub mod helper;
pub mod layout;
pub mod memory;
pub mod mptable;
pub mod spec;
pub mod vcpu;
pub mod vm;

pub use builder::build;
pub use helper::HelperArgs;
pub use spec::VmSpec;
pub use vm::{ExitReason, Vm, VmMetrics};

/// Everything that can go wrong in this module.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// A spec field is wrong; `field` names it (`memory_mib`, `kernel`, ...).
    #[error("invalid VM spec: {field}: {message}")]
    InvalidSpec { field: String, message: String },
    #[error("{what}")]
    Kvm {
        what: String,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("creating guest memory")]
    Memory(#[source] vm_memory::mmap::FromRangesError),
    #[error("guest memory access at {0:#x}")]
    GuestMemory(u64),
    #[error("loading {what}")]
    Load {
        what: String,
        #[source]
        source: linux_loader::loader::Error,
    },
    #[error("{0}")]
    Boot(String),
    #[error("the guest crashed: {0}")]
    GuestCrashed(String),
    #[error("{0}")]
    Helper(String),
}

impl VmmError {
    pub(crate) fn kvm(what: impl Into<String>, source: kvm_ioctls::Error) -> Self {
        VmmError::Kvm {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        VmmError::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn spec(field: impl Into<String>, message: impl Into<String>) -> Self {
        VmmError::InvalidSpec {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The message with every source in the chain, on one line.
    pub fn one_line(&self) -> String {
        crate::error_chain(self)
    }
}

pub type Result<T, E = VmmError> = std::result::Result<T, E>;
