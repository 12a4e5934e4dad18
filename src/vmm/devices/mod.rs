//! The VM's devices and the two buses the vCPU run loop hands its exits to.
//!
//! Port I/O: COM1 serial (0x3f8..0x3ff, the console) and, when the VM has an agent channel,
//! COM2 (0x2f8..0x2ff) ([`serial`]); the i8042 controller (0x60, 0x64: only its CPU reset
//! command), the poweroff port (0x604) and the reset control register (0xcf9) ([`legacy`]).
//! Reads of other ports return all ones; writes to them are dropped (Linux probes many, and
//! uses 0x80 for delays).
//!
//! MMIO: virtio-mmio devices from [`layout::MMIO_GAP_START`], 4 KiB apart ([`virtio`]).
//!
//! Every device sits behind its own mutex; a vCPU thread holds it only while one access is
//! emulated, and the block device does its disk I/O right there (the request is complete
//! when the notify write returns, which keeps the VMM free of an I/O thread). The net device
//! also has an event thread that takes the same mutex when frames arrive on its tap.
//! Interrupts go through [`IrqLine`], an edge on an in-kernel IOAPIC pin.

pub mod legacy;
pub mod serial;
pub mod virtio;

use std::sync::{Arc, Mutex};

use kvm_ioctls::VmFd;

use super::layout;
use super::vm::VmMetrics;
use legacy::{Legacy, LegacyAction};
use serial::SerialDevice;
use virtio::mmio::MmioTransport;

/// What an emulated access asks of the VM as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusAction {
    Continue,
    Poweroff,
    Reset,
}

/// One interrupt line of the in-kernel IOAPIC (a GSI), raised as an edge.
#[derive(Debug, Clone)]
pub struct IrqLine {
    vm: Arc<VmFd>,
    gsi: u32,
}

impl IrqLine {
    pub fn new(vm: Arc<VmFd>, gsi: u32) -> IrqLine {
        IrqLine { vm, gsi }
    }

    /// Raises and lowers the line: one edge-triggered interrupt.
    pub fn pulse(&self) -> std::io::Result<()> {
        self.vm
            .set_irq_line(self.gsi, true)
            .and_then(|()| self.vm.set_irq_line(self.gsi, false))
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }
}

impl vm_superio::Trigger for IrqLine {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.pulse()
    }
}

const COM1_BASE: u16 = 0x3f8;
const COM1_END: u16 = COM1_BASE + 8;
const COM2_BASE: u16 = 0x2f8;
const COM2_END: u16 = COM2_BASE + 8;

/// All devices of one VM.
pub struct Devices {
    pub serial: Arc<Mutex<SerialDevice>>,
    /// COM2, the guest-agent channel, if the VM has one.
    pub agent: Option<Arc<Mutex<SerialDevice>>>,
    legacy: Mutex<Legacy>,
    virtio: Vec<Arc<Mutex<MmioTransport>>>,
    metrics: Arc<VmMetrics>,
}

impl Devices {
    pub fn new(
        serial: Arc<Mutex<SerialDevice>>,
        agent: Option<Arc<Mutex<SerialDevice>>>,
        virtio: Vec<Arc<Mutex<MmioTransport>>>,
        metrics: Arc<VmMetrics>,
    ) -> Devices {
        Devices {
            serial,
            agent,
            legacy: Mutex::new(Legacy::new()),
            virtio,
            metrics,
        }
    }

    /// (base address, IRQ) of each virtio-mmio device, for the command line.
    pub fn mmio_announcements(virtio_count: usize) -> Vec<(u64, u32)> {
        (0..virtio_count)
            .map(|i| {
                (
                    layout::mmio_device_base(i as u64),
                    layout::MMIO_FIRST_IRQ + i as u32,
                )
            })
            .collect()
    }

    /// The UART behind a port, and the register offset.
    fn uart_at(&self, port: u16) -> Option<(&Arc<Mutex<SerialDevice>>, u8)> {
        match port {
            COM1_BASE..COM1_END => Some((&self.serial, (port - COM1_BASE) as u8)),
            COM2_BASE..COM2_END => self.agent.as_ref().map(|a| (a, (port - COM2_BASE) as u8)),
            _ => None,
        }
    }

    pub fn pio_read(&self, port: u16, data: &mut [u8]) {
        self.metrics.count_pio();
        if let Some((uart, offset)) = self.uart_at(port) {
            let value = lock(uart).read(offset);
            data.fill(0);
            data[0] = value;
        } else if !lock(&self.legacy).read(port, data) {
            data.fill(0xff);
        }
    }

    pub fn pio_write(&self, port: u16, data: &[u8]) -> BusAction {
        self.metrics.count_pio();
        if let Some((uart, offset)) = self.uart_at(port) {
            lock(uart).write(offset, data[0]);
            return BusAction::Continue;
        }
        match lock(&self.legacy).write(port, data) {
            LegacyAction::None => BusAction::Continue,
            LegacyAction::Poweroff => BusAction::Poweroff,
            LegacyAction::Reset => BusAction::Reset,
        }
    }

    fn virtio_at(&self, addr: u64) -> Option<(&Arc<Mutex<MmioTransport>>, u64)> {
        let offset = addr.checked_sub(layout::MMIO_GAP_START)?;
        let index = offset / layout::MMIO_DEVICE_SIZE;
        let dev = self.virtio.get(index as usize)?;
        Some((dev, offset % layout::MMIO_DEVICE_SIZE))
    }

    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        self.metrics.count_mmio();
        match self.virtio_at(addr) {
            Some((dev, offset)) => lock(dev).read(offset, data),
            None => data.fill(0xff),
        }
    }

    pub fn mmio_write(&self, addr: u64, data: &[u8]) {
        self.metrics.count_mmio();
        if let Some((dev, offset)) = self.virtio_at(addr) {
            lock(dev).write(offset, data);
        }
    }
}

/// Locks a device mutex; a panic while emulating one access leaves the device usable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
