//! Virtio 1.x devices over virtio-mmio (version 2 of the register layout, [`mmio`]), with
//! split virtqueues ([`Queue`]). Only what Linux's drivers and the test guest need: no
//! indirect descriptors, no event index, so every used buffer raises an interrupt.
//!
//! A device implements [`VirtioDevice`]: its type, features, config space, and how to
//! process a queue when the driver notifies it, and (for a device with its own event thread)
//! how to process I/O that became ready outside any notification. The devices: [`block`]
//! and [`net`].

pub mod block;
pub mod mmio;
pub mod net;

use std::num::Wrapping;
use std::sync::atomic::{fence, Ordering};

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::vmm::memory::GuestMemory;

/// Feature bit: the device follows virtio 1.0 or later (required by virtio-mmio v2).
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

pub const VIRTQ_DESC_F_NEXT: u16 = 1;
pub const VIRTQ_DESC_F_WRITE: u16 = 2;

/// A virtio device behind a transport.
pub trait VirtioDevice: Send {
    /// Virtio device id (1 = net, 2 = block).
    fn device_type(&self) -> u32;
    /// Features offered to the driver.
    fn features(&self) -> u64;
    /// The maximum size of each queue.
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads the device's config space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Processes the available buffers of queue `index`; true if any were used.
    fn process_queue(&mut self, index: usize, queue: &mut Queue, mem: &GuestMemory) -> bool;
    /// I/O became ready outside any notification (the device's own event thread says so),
    /// or the driver just set DRIVER_OK: process it against the queues (each may not be
    /// ready yet); true if any buffers were used.
    fn process_io(&mut self, _queues: &mut [Queue], _mem: &GuestMemory) -> bool {
        false
    }
}

/// One buffer of a descriptor chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
}

impl Descriptor {
    pub fn is_write_only(&self) -> bool {
        self.flags & VIRTQ_DESC_F_WRITE != 0
    }
}

/// A descriptor chain taken from the available ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub head: u16,
    pub descriptors: Vec<Descriptor>,
}

/// Why a chain could not be read: the driver broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadChain(pub String);

/// A split virtqueue as the driver configured it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    pub max_size: u16,
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
    next_avail: Wrapping<u16>,
    next_used: Wrapping<u16>,
}

impl Queue {
    pub fn new(max_size: u16) -> Queue {
        Queue {
            max_size,
            size: max_size,
            ready: false,
            desc_table: 0,
            avail_ring: 0,
            used_ring: 0,
            next_avail: Wrapping(0),
            next_used: Wrapping(0),
        }
    }

    /// Back to the state after a device reset.
    pub fn reset(&mut self) {
        *self = Queue::new(self.max_size);
    }

    /// A size the driver may set (a power of two, at most `max_size`) and rings inside
    /// guest memory.
    pub fn is_valid(&self, mem: &GuestMemory) -> bool {
        let size = u64::from(self.size);
        let fits = |addr: u64, len: u64| mem.checked_offset(GuestAddress(addr), len as usize);
        self.size > 0
            && self.size <= self.max_size
            && self.size.is_power_of_two()
            && self.desc_table.is_multiple_of(16)
            && self.avail_ring.is_multiple_of(2)
            && self.used_ring.is_multiple_of(4)
            && fits(self.desc_table, 16 * size).is_some()
            && fits(self.avail_ring, 6 + 2 * size).is_some()
            && fits(self.used_ring, 6 + 8 * size).is_some()
    }

    /// The next available chain, if the driver made one available.
    pub fn pop(&mut self, mem: &GuestMemory) -> Option<Result<Chain, BadChain>> {
        let avail_idx: u16 = mem
            .load(GuestAddress(self.avail_ring + 2), Ordering::Acquire)
            .ok()?;
        if Wrapping(avail_idx) == self.next_avail {
            return None;
        }
        let slot = u64::from(self.next_avail.0 % self.size);
        self.next_avail += 1;
        let head: u16 = match mem.read_obj(GuestAddress(self.avail_ring + 4 + 2 * slot)) {
            Ok(h) => h,
            Err(_) => return Some(Err(BadChain("available ring unreadable".into()))),
        };
        Some(self.read_chain(mem, head))
    }

    /// Puts the chain [`Queue::pop`] last returned back: the device could not use it now.
    pub fn undo_pop(&mut self) {
        self.next_avail -= 1;
    }

    fn read_chain(&self, mem: &GuestMemory, head: u16) -> Result<Chain, BadChain> {
        let mut descriptors = Vec::new();
        let mut index = head;
        loop {
            if index >= self.size {
                return Err(BadChain(format!("descriptor index {index} out of range")));
            }
            if descriptors.len() >= usize::from(self.size) {
                return Err(BadChain("descriptor chain loops".into()));
            }
            let at = self.desc_table + 16 * u64::from(index);
            let read = |off: u64| GuestAddress(at + off);
            let (addr, len, flags, next): (u64, u32, u16, u16) = (|| {
                Ok::<_, vm_memory::GuestMemoryError>((
                    mem.read_obj(read(0))?,
                    mem.read_obj(read(8))?,
                    mem.read_obj(read(12))?,
                    mem.read_obj(read(14))?,
                ))
            })()
            .map_err(|_| BadChain("descriptor table unreadable".into()))?;
            descriptors.push(Descriptor { addr, len, flags });
            if flags & VIRTQ_DESC_F_NEXT == 0 {
                return Ok(Chain { head, descriptors });
            }
            index = next;
        }
    }

    /// Returns a chain to the driver with `len` bytes written into its buffers.
    pub fn add_used(&mut self, mem: &GuestMemory, head: u16, len: u32) {
        let slot = u64::from(self.next_used.0 % self.size);
        let elem = self.used_ring + 4 + 8 * slot;
        let _ = mem.write_obj(u32::from(head), GuestAddress(elem));
        let _ = mem.write_obj(len, GuestAddress(elem + 4));
        self.next_used += 1;
        fence(Ordering::Release);
        let _ = mem.store(
            self.next_used.0,
            GuestAddress(self.used_ring + 2),
            Ordering::Release,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn mem() -> GuestMemory {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    fn desc(mem: &GuestMemory, table: u64, i: u64, d: Descriptor, next: u16) {
        let at = table + 16 * i;
        mem.write_obj(d.addr, GuestAddress(at)).unwrap();
        mem.write_obj(d.len, GuestAddress(at + 8)).unwrap();
        mem.write_obj(d.flags, GuestAddress(at + 12)).unwrap();
        mem.write_obj(next, GuestAddress(at + 14)).unwrap();
    }

    fn queue() -> Queue {
        let mut q = Queue::new(8);
        q.size = 4;
        q.desc_table = 0x1000;
        q.avail_ring = 0x2000;
        q.used_ring = 0x3000;
        q
    }

    #[test]
    fn chains_come_out_in_order_and_go_back_used() {
        let m = mem();
        let mut q = queue();
        assert!(q.is_valid(&m));
        let a = Descriptor {
            addr: 0x4000,
            len: 16,
            flags: VIRTQ_DESC_F_NEXT,
        };
        let b = Descriptor {
            addr: 0x5000,
            len: 512,
            flags: VIRTQ_DESC_F_WRITE,
        };
        desc(&m, 0x1000, 2, a, 3);
        desc(&m, 0x1000, 3, b, 0);
        assert!(q.pop(&m).is_none());
        m.write_obj(2u16, GuestAddress(0x2004)).unwrap(); // ring[0] = 2
        m.write_obj(1u16, GuestAddress(0x2002)).unwrap(); // idx = 1
        let chain = q.pop(&m).unwrap().unwrap();
        assert_eq!(
            chain,
            Chain {
                head: 2,
                descriptors: vec![a, b]
            }
        );
        assert!(q.pop(&m).is_none());
        q.add_used(&m, 2, 513);
        assert_eq!(m.read_obj::<u16>(GuestAddress(0x3002)).unwrap(), 1);
        assert_eq!(m.read_obj::<u32>(GuestAddress(0x3004)).unwrap(), 2);
        assert_eq!(m.read_obj::<u32>(GuestAddress(0x3008)).unwrap(), 513);
    }

    #[test]
    fn broken_chains_are_refused() {
        let m = mem();
        let mut q = queue();
        let looped = Descriptor {
            addr: 0x4000,
            len: 1,
            flags: VIRTQ_DESC_F_NEXT,
        };
        desc(&m, 0x1000, 0, looped, 0);
        m.write_obj(1u16, GuestAddress(0x2002)).unwrap();
        assert!(q.pop(&m).unwrap().is_err());
        let mut q = queue();
        desc(&m, 0x1000, 0, looped, 9);
        assert!(q.pop(&m).unwrap().is_err());
        q.size = 3;
        assert!(!q.is_valid(&m));
    }
}
