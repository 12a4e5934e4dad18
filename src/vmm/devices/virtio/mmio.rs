//! The virtio-mmio transport, register layout version 2 (virtio 1.x, "modern"): 32-bit
//! registers in a 4 KiB window, device config space from offset 0x100. Linux finds the
//! window from `virtio_mmio.device=4K@0xd0000000:5` on its command line.
//!
//! A write to QueueNotify processes that queue at once, in the vCPU thread that wrote it;
//! a device with its own event thread (net) also calls [`MmioTransport::process_io`]. Used
//! buffers set bit 0 of InterruptStatus and pulse the device's IRQ line.

use super::{Queue, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::vmm::devices::IrqLine;
use crate::vmm::memory::GuestMemory;

const MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x4f4d_4e49; // "OMNI"

pub const REG_MAGIC: u64 = 0x000;
pub const REG_VERSION: u64 = 0x004;
pub const REG_DEVICE_ID: u64 = 0x008;
pub const REG_VENDOR_ID: u64 = 0x00c;
pub const REG_DEVICE_FEATURES: u64 = 0x010;
pub const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
pub const REG_DRIVER_FEATURES: u64 = 0x020;
pub const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
pub const REG_QUEUE_SEL: u64 = 0x030;
pub const REG_QUEUE_NUM_MAX: u64 = 0x034;
pub const REG_QUEUE_NUM: u64 = 0x038;
pub const REG_QUEUE_READY: u64 = 0x044;
pub const REG_QUEUE_NOTIFY: u64 = 0x050;
pub const REG_INTERRUPT_STATUS: u64 = 0x060;
pub const REG_INTERRUPT_ACK: u64 = 0x064;
pub const REG_STATUS: u64 = 0x070;
pub const REG_QUEUE_DESC_LOW: u64 = 0x080;
pub const REG_QUEUE_DESC_HIGH: u64 = 0x084;
pub const REG_QUEUE_DRIVER_LOW: u64 = 0x090;
pub const REG_QUEUE_DRIVER_HIGH: u64 = 0x094;
pub const REG_QUEUE_DEVICE_LOW: u64 = 0x0a0;
pub const REG_QUEUE_DEVICE_HIGH: u64 = 0x0a4;
pub const REG_CONFIG_GENERATION: u64 = 0x0fc;
pub const CONFIG_SPACE: u64 = 0x100;

pub const STATUS_ACKNOWLEDGE: u32 = 1;
pub const STATUS_DRIVER: u32 = 2;
pub const STATUS_DRIVER_OK: u32 = 4;
pub const STATUS_FEATURES_OK: u32 = 8;
pub const STATUS_FAILED: u32 = 0x80;

const INT_USED_RING: u32 = 1;

/// One virtio device in its MMIO window.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemory,
    irq: IrqLine,
    queues: Vec<Queue>,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    status: u32,
    interrupt_status: u32,
}

impl MmioTransport {
    pub fn new(device: Box<dyn VirtioDevice>, mem: GuestMemory, irq: IrqLine) -> MmioTransport {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|m| Queue::new(*m))
            .collect();
        MmioTransport {
            device,
            mem,
            irq,
            queues,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            status: 0,
            interrupt_status: 0,
        }
    }

    fn queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn reset(&mut self) {
        for q in &mut self.queues {
            q.reset();
        }
        self.queue_sel = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.status = 0;
        self.interrupt_status = 0;
    }

    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE {
            self.device.read_config(offset - CONFIG_SPACE, data);
            return;
        }
        if data.len() != 4 {
            data.fill(0);
            return;
        }
        let value = match offset {
            REG_MAGIC => MAGIC_VALUE,
            REG_VERSION => VERSION,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => {
                let features = self.device.features() | VIRTIO_F_VERSION_1;
                match self.device_features_sel {
                    0 => features as u32,
                    1 => (features >> 32) as u32,
                    _ => 0,
                }
            }
            REG_QUEUE_NUM_MAX => self.queue().map_or(0, |q| u32::from(q.max_size)),
            REG_QUEUE_READY => self.queue().map_or(0, |q| u32::from(q.ready)),
            REG_INTERRUPT_STATUS => self.interrupt_status,
            REG_STATUS => self.status,
            REG_CONFIG_GENERATION => 0,
            _ => 0,
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE {
            return; // no writable config fields
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        let value = u32::from_le_bytes(bytes);
        let set_low = |field: &mut u64| *field = (*field & !0xffff_ffff) | u64::from(value);
        let set_high = |field: &mut u64| *field = (*field & 0xffff_ffff) | (u64::from(value) << 32);
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            // Features are fixed once FEATURES_OK is set.
            REG_DRIVER_FEATURES if self.status & STATUS_FEATURES_OK == 0 => {
                match self.driver_features_sel {
                    0 => set_low(&mut self.driver_features),
                    1 => set_high(&mut self.driver_features),
                    _ => {}
                }
            }
            REG_QUEUE_SEL => self.queue_sel = value,
            REG_QUEUE_NUM => {
                if let Some(q) = self.queue() {
                    q.size = value as u16;
                }
            }
            REG_QUEUE_READY => {
                let mem = self.mem.clone();
                if let Some(q) = self.queue() {
                    q.ready = value == 1 && q.is_valid(&mem);
                }
            }
            REG_QUEUE_DESC_LOW => self
                .queue()
                .into_iter()
                .for_each(|q| set_low(&mut q.desc_table)),
            REG_QUEUE_DESC_HIGH => self
                .queue()
                .into_iter()
                .for_each(|q| set_high(&mut q.desc_table)),
            REG_QUEUE_DRIVER_LOW => self
                .queue()
                .into_iter()
                .for_each(|q| set_low(&mut q.avail_ring)),
            REG_QUEUE_DRIVER_HIGH => self
                .queue()
                .into_iter()
                .for_each(|q| set_high(&mut q.avail_ring)),
            REG_QUEUE_DEVICE_LOW => self
                .queue()
                .into_iter()
                .for_each(|q| set_low(&mut q.used_ring)),
            REG_QUEUE_DEVICE_HIGH => self
                .queue()
                .into_iter()
                .for_each(|q| set_high(&mut q.used_ring)),
            REG_QUEUE_NOTIFY => self.notify(value as usize),
            REG_INTERRUPT_ACK => self.interrupt_status &= !value,
            REG_STATUS => self.set_status(value),
            _ => {}
        }
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let mut value = value;
        let newly = value & !self.status;
        if newly & STATUS_FEATURES_OK != 0 {
            let offered = self.device.features() | VIRTIO_F_VERSION_1;
            let acceptable = self.driver_features & !offered == 0
                && self.driver_features & VIRTIO_F_VERSION_1 != 0;
            if !acceptable {
                value &= !STATUS_FEATURES_OK;
            }
        }
        self.status = value;
        if newly & STATUS_DRIVER_OK != 0 {
            // I/O that waited for the driver (frames queued on a tap) can go now.
            self.process_io();
        }
    }

    /// Lets the device process I/O that became ready outside a notification, once the
    /// driver is ready; raises the interrupt if buffers were used.
    pub fn process_io(&mut self) {
        if self.status & STATUS_DRIVER_OK == 0 || self.status & STATUS_FAILED != 0 {
            return;
        }
        if self.device.process_io(&mut self.queues, &self.mem) {
            self.used_buffers();
        }
    }

    fn used_buffers(&mut self) {
        self.interrupt_status |= INT_USED_RING;
        let _ = self.irq.pulse();
    }

    fn notify(&mut self, index: usize) {
        if self.status & STATUS_DRIVER_OK == 0 || self.status & STATUS_FAILED != 0 {
            return;
        }
        let Some(queue) = self.queues.get_mut(index) else {
            return;
        };
        if !queue.ready {
            return;
        }
        if self.device.process_queue(index, queue, &self.mem) {
            self.used_buffers();
        }
    }
}
