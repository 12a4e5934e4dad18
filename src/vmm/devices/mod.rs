//! The VM's devices and the two buses the vCPU run loop hands its exits to.
//!
//! Port I/O: COM1 serial (0x3f8..0x3ff, [`serial`]), the i8042 controller (0x60, 0x64: only
//! its CPU reset command), the poweroff port (0x604) and the reset control register (0xcf9)
//! ([`legacy`]). Reads of other ports return all ones; writes to them are dropped (Linux
//! probes many, and uses 0x80 for delays).
//!
//! MMIO: virtio-mmio devices from [`layout::MMIO_GAP_START`], 4 KiB apart ([`virtio`]).
//!
//! Every device sits behind its own mutex; a vCPU thread holds it only while one access is
//! emulated, and the block device does its disk I/O right there (the request is complete
//! when the notify write returns, which keeps the VMM free of an I/O thread). Interrupts go
//! through [`IrqLine`], an edge on an in-kernel IOAPIC pin.

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

/// All devices of one VM.
pub struct Devices {
    pub serial: Arc<Mutex<SerialDevice>>,
    legacy: Mutex<Legacy>,
    virtio: Vec<Mutex<MmioTransport>>,
    metrics: Arc<VmMetrics>,
}

impl Devices {
    pub fn new(
        serial: Arc<Mutex<SerialDevice>>,
        virtio: Vec<MmioTransport>,
        metrics: Arc<VmMetrics>,
    ) -> Devices {
        Devices {
            serial,
            legacy: Mutex::new(Legacy::new()),
            virtio: virtio.into_iter().map(Mutex::new).collect(),
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

    pub fn pio_read(&self, port: u16, data: &mut [u8]) {
        self.metrics.count_pio();
        match port {
            COM1_BASE..COM1_END => {
                let value = lock(&self.serial).read((port - COM1_BASE) as u8);
                data.fill(0);
                data[0] = value;
            }
            _ => {
                if !lock(&self.legacy).read(port, data) {
                    data.fill(0xff);
                }
            }
        }
    }

    pub fn pio_write(&self, port: u16, data: &[u8]) -> BusAction {
        self.metrics.count_pio();
        match port {
            COM1_BASE..COM1_END => {
                lock(&self.serial).write((port - COM1_BASE) as u8, data[0]);
                BusAction::Continue
            }
            _ => match lock(&self.legacy).write(port, data) {
                LegacyAction::None => BusAction::Continue,
                LegacyAction::Poweroff => BusAction::Poweroff,
                LegacyAction::Reset => BusAction::Reset,
            },
        }
    }

    fn virtio_at(&self, addr: u64) -> Option<(&Mutex<MmioTransport>, u64)> {
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
