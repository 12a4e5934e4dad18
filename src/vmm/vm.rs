//! A built VM ([`Vm`]): owns the KVM VM, guest memory, devices and the vCPU threads, and
//! turns their reports into one answer, [`Vm::wait`]: how the VM ended. Also [`VmMetrics`],
//! the counters the helper reports.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

use super::devices::Devices;
use super::memory::GuestMemory;
use super::vcpu::{Vcpu, VcpuEvent, VcpuHandle, VcpuResponse};
use super::Result;

/// How a VM ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "exit", content = "reason")]
pub enum ExitReason {
    /// The guest powered off (port 0x604, or a KVM shutdown system event).
    Poweroff,
    /// The guest asked for a reset (i8042 0xfe, 0xcf9): the VM ends, and whoever runs it
    /// decides whether to boot it again (as Firecracker does).
    Reset,
    /// The guest crashed: triple fault, emulation failure, a failed VM entry.
    Crashed(String),
    /// The VMM failed (an ioctl that should not fail did).
    Failed(String),
    /// [`Vm::stop`] was called.
    Stopped,
}

/// Counters of one VM, updated by the vCPU threads.
#[derive(Debug, Default)]
pub struct VmMetrics {
    pio_exits: AtomicU64,
    mmio_exits: AtomicU64,
    serial_out_bytes: AtomicU64,
    serial_lost_bytes: AtomicU64,
    block_read_bytes: AtomicU64,
    block_write_bytes: AtomicU64,
    net_rx_bytes: AtomicU64,
    net_rx_frames: AtomicU64,
    net_rx_dropped: AtomicU64,
    net_tx_bytes: AtomicU64,
    net_tx_frames: AtomicU64,
    net_tx_dropped: AtomicU64,
    agent_out_bytes: AtomicU64,
    agent_lost_bytes: AtomicU64,
}

/// A copy of [`VmMetrics`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    pub pio_exits: u64,
    pub mmio_exits: u64,
    pub serial_out_bytes: u64,
    pub serial_lost_bytes: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    /// Frames (and their bytes, Ethernet header on, virtio header off) the guest received
    /// from its tap, and frames dropped on the way in (no buffer big enough, tap errors).
    pub net_rx_bytes: u64,
    pub net_rx_frames: u64,
    pub net_rx_dropped: u64,
    /// The same for frames the guest sent.
    pub net_tx_bytes: u64,
    pub net_tx_frames: u64,
    pub net_tx_dropped: u64,
    /// Bytes the guest wrote to the agent channel (COM2), and bytes lost there.
    pub agent_out_bytes: u64,
    pub agent_lost_bytes: u64,
}

impl VmMetrics {
    pub fn count_pio(&self) {
        self.pio_exits.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_mmio(&self) {
        self.mmio_exits.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_serial_out(&self, n: usize) {
        self.serial_out_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
    pub fn count_serial_lost(&self) {
        self.serial_lost_bytes.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_block_read(&self, n: u64) {
        self.block_read_bytes.fetch_add(n, Ordering::Relaxed);
    }
    pub fn count_block_write(&self, n: u64) {
        self.block_write_bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub fn count_net_rx(&self, bytes: u64) {
        self.net_rx_frames.fetch_add(1, Ordering::Relaxed);
        self.net_rx_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    pub fn count_net_rx_dropped(&self) {
        self.net_rx_dropped.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_net_tx(&self, bytes: u64) {
        self.net_tx_frames.fetch_add(1, Ordering::Relaxed);
        self.net_tx_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    pub fn count_net_tx_dropped(&self) {
        self.net_tx_dropped.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_agent_out(&self, n: usize) {
        self.agent_out_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
    pub fn count_agent_lost(&self, n: usize) {
        self.agent_lost_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            pio_exits: get(&self.pio_exits),
            mmio_exits: get(&self.mmio_exits),
            serial_out_bytes: get(&self.serial_out_bytes),
            serial_lost_bytes: get(&self.serial_lost_bytes),
            block_read_bytes: get(&self.block_read_bytes),
            block_write_bytes: get(&self.block_write_bytes),
            net_rx_bytes: get(&self.net_rx_bytes),
            net_rx_frames: get(&self.net_rx_frames),
            net_rx_dropped: get(&self.net_rx_dropped),
            net_tx_bytes: get(&self.net_tx_bytes),
            net_tx_frames: get(&self.net_tx_frames),
            net_tx_dropped: get(&self.net_tx_dropped),
            agent_out_bytes: get(&self.agent_out_bytes),
            agent_lost_bytes: get(&self.agent_lost_bytes),
        }
    }
}

/// A VM: built by [`super::build`], running once [`Vm::start`] is called.
pub struct Vm {
    // Field order is drop order: vCPU threads end before the devices, memory and VM go.
    handles: Vec<VcpuHandle>,
    pending: Vec<Vcpu>,
    responses: Receiver<VcpuResponse>,
    responses_tx: Sender<VcpuResponse>,
    /// An exit that arrived while waiting for something else.
    early_exit: Mutex<Option<ExitReason>>,
    pub devices: Arc<Devices>,
    pub memory: GuestMemory,
    pub metrics: Arc<VmMetrics>,
    pub vm: Arc<VmFd>,
    /// The command line the guest was given (with the VMM's device entries).
    pub cmdline: String,
}

impl Vm {
    pub(crate) fn new(
        vm: Arc<VmFd>,
        memory: GuestMemory,
        devices: Arc<Devices>,
        vcpus: Vec<Vcpu>,
        metrics: Arc<VmMetrics>,
        cmdline: String,
    ) -> Vm {
        let (responses_tx, responses) = std::sync::mpsc::channel();
        Vm {
            handles: Vec::new(),
            pending: vcpus,
            responses,
            responses_tx,
            early_exit: Mutex::new(None),
            devices,
            memory,
            metrics,
            vm,
            cmdline,
        }
    }

    /// Starts one thread per vCPU; the boot vCPU enters the kernel at once.
    pub fn start(&mut self) -> Result<()> {
        for vcpu in self.pending.drain(..) {
            let handle = VcpuHandle::spawn(vcpu, self.responses_tx.clone())?;
            self.handles.push(handle);
        }
        Ok(())
    }

    pub fn vcpu_count(&self) -> usize {
        self.handles.len() + self.pending.len()
    }

    /// Waits until the guest ends the VM (or a vCPU fails), then stops every vCPU thread.
    pub fn wait(&mut self) -> ExitReason {
        let early = self
            .early_exit
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let reason = match early {
            Some(reason) => reason,
            None => loop {
                match self.responses.recv() {
                    Ok(VcpuResponse::Exited(_, reason)) => break reason,
                    Ok(_) => {}
                    Err(_) => break ExitReason::Stopped,
                }
            },
        };
        self.stop_threads();
        reason
    }

    /// Pauses every vCPU and waits until all are paused.
    pub fn pause(&self) {
        self.broadcast_and_wait(VcpuEvent::Pause, |r| matches!(r, VcpuResponse::Paused(_)));
    }

    /// Resumes every vCPU and waits until all run again.
    pub fn resume(&self) {
        self.broadcast_and_wait(VcpuEvent::Resume, |r| matches!(r, VcpuResponse::Resumed(_)));
    }

    fn broadcast_and_wait(&self, event: VcpuEvent, done: impl Fn(&VcpuResponse) -> bool) {
        for h in &self.handles {
            h.send(event);
        }
        let mut left = self.handles.len();
        while left > 0 {
            match self.responses.recv() {
                Ok(r) if done(&r) => left -= 1,
                Ok(VcpuResponse::Exited(_, reason)) => {
                    // This vCPU has stopped and will not answer; keep the reason for wait().
                    left -= 1;
                    let mut early = self.early_exit.lock().unwrap_or_else(|p| p.into_inner());
                    early.get_or_insert(reason);
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }

    /// A handle that stops the VM from another thread: [`Vm::wait`] then returns
    /// [`ExitReason::Stopped`] unless the guest ended the VM first.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.responses_tx.clone())
    }

    fn stop_threads(&mut self) {
        for h in &mut self.handles {
            h.join();
        }
        self.handles.clear();
    }
}

/// Stops a [`Vm`] from any thread.
#[derive(Debug, Clone)]
pub struct StopHandle(Sender<VcpuResponse>);

impl StopHandle {
    pub fn stop(&self) {
        let _ = self
            .0
            .send(VcpuResponse::Exited(u8::MAX, ExitReason::Stopped));
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop_threads();
    }
}
