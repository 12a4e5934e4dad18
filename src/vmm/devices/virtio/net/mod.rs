//! virtio-net (device id 1) on a Linux tap interface ([`tap`]): queue 0 receives (frames
//! from the tap into the driver's buffers), queue 1 transmits (the driver's frames onto the
//! tap). The only feature besides `VIRTIO_F_VERSION_1` is `VIRTIO_NET_F_MAC`: the guest
//! reads its MAC from config space (6 bytes at offset 0). No offloads, no mergeable
//! buffers: every frame travels whole, behind the 12-byte `virtio_net_hdr` the device
//! writes (all zero, `num_buffers` = 1) or skips.
//!
//! Threads: transmitting runs in the vCPU thread that notifies queue 1, as virtio-blk does.
//! Receiving runs wherever a frame can meet a buffer: in the vCPU thread that notifies
//! queue 0 (new buffers), and in this device's event thread ([`RxWaker`], `vmm-net`), which
//! waits in epoll for the tap to become readable (edge-triggered) or for the device to be
//! dropped, and then drains the tap into the posted buffers under the transport's lock.
//! Either way used buffers raise the device's interrupt through the transport. A frame
//! that does not fit the buffer at the head of the queue is dropped and counted.

pub mod tap;

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, Weak};

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::mmio::MmioTransport;
use super::{Chain, Queue, VirtioDevice};
use crate::vmm::devices::lock;
use crate::vmm::memory::GuestMemory;
use crate::vmm::vm::VmMetrics;
use crate::vmm::{Result, VmmError};
pub use tap::Tap;

pub const VIRTIO_ID_NET: u32 = 1;
/// Feature bit: the device has a MAC address in its config space.
pub const VIRTIO_NET_F_MAC: u64 = 1 << 5;
/// The virtio 1.x `virtio_net_hdr` (with `num_buffers`): flags, gso_type, hdr_len,
/// gso_size, csum_start, csum_offset, num_buffers.
pub const NET_HDR_LEN: usize = 12;
/// Offset of `num_buffers` in the header.
const NUM_BUFFERS: usize = 10;
pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
const QUEUE_SIZE: u16 = 256;
/// The largest frame moved either way (a tap's MTU can be raised to 64 KiB).
const MAX_FRAME: usize = 65_536;

/// epoll data of the event thread's two sources.
const EVENT_TAP: u64 = 1;
const EVENT_STOP: u64 = 2;

pub struct Net {
    tap: Tap,
    mac: [u8; 6],
    max_sizes: [u16; 2],
    /// One frame with its virtio-net header in front.
    buf: Vec<u8>,
    /// Ends the event thread when the device goes.
    stop: EventFd,
    metrics: Arc<VmMetrics>,
}

impl Net {
    /// Opens (or creates) the tap, enslaved to `bridge` if given, for a guest with `mac`.
    pub fn open(
        tap: &str,
        bridge: Option<&str>,
        mac: [u8; 6],
        metrics: Arc<VmMetrics>,
    ) -> Result<Net> {
        let tap = Tap::open(tap, bridge)?;
        let stop = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
            .map_err(|e| VmmError::io("creating the net device's stop eventfd", e))?;
        Ok(Net {
            tap,
            mac,
            max_sizes: [QUEUE_SIZE; 2],
            buf: vec![0; NET_HDR_LEN + MAX_FRAME],
            stop,
            metrics,
        })
    }

    pub fn tap(&self) -> &Tap {
        &self.tap
    }

    /// What the event thread needs, registered now, while the tap is surely open.
    pub fn rx_waker(&self) -> Result<RxWaker> {
        let err = |e| VmmError::io("setting up the net device's epoll", e);
        let epoll = Epoll::new().map_err(err)?;
        let stop = self.stop.try_clone().map_err(err)?;
        let tap_events = EventSet::IN | EventSet::EDGE_TRIGGERED;
        epoll
            .ctl(
                ControlOperation::Add,
                self.tap.raw_fd(),
                EpollEvent::new(tap_events, EVENT_TAP),
            )
            .map_err(err)?;
        epoll
            .ctl(
                ControlOperation::Add,
                stop.as_raw_fd(),
                EpollEvent::new(EventSet::IN, EVENT_STOP),
            )
            .map_err(err)?;
        Ok(RxWaker { epoll, _stop: stop })
    }

    /// Moves frames from the tap into the receive queue while both last.
    fn receive(&mut self, queue: &mut Queue, mem: &GuestMemory) -> bool {
        if !queue.ready {
            return false;
        }
        let mut used = false;
        // Until no buffer is left (frames wait in the tap) or a chain is broken.
        while let Some(Ok(chain)) = queue.pop(mem) {
            let n = match self.tap.read_frame(&mut self.buf[NET_HDR_LEN..]) {
                Ok(n) => n,
                Err(e) => {
                    queue.undo_pop();
                    if e.kind() != ErrorKind::WouldBlock && e.kind() != ErrorKind::Interrupted {
                        self.metrics.count_net_rx_dropped();
                    }
                    break;
                }
            };
            self.buf[..NET_HDR_LEN].fill(0);
            self.buf[NUM_BUFFERS..NUM_BUFFERS + 2].copy_from_slice(&1u16.to_le_bytes());
            match write_chain(&chain, &self.buf[..NET_HDR_LEN + n], mem) {
                Some(written) => {
                    queue.add_used(mem, chain.head, written);
                    self.metrics.count_net_rx(n as u64);
                    used = true;
                }
                None => {
                    // Too small or not writable: keep the buffer, drop the frame.
                    queue.undo_pop();
                    self.metrics.count_net_rx_dropped();
                }
            }
        }
        used
    }

    /// Sends every frame the driver queued for transmission.
    fn transmit(&mut self, queue: &mut Queue, mem: &GuestMemory) -> bool {
        let mut used = false;
        while let Some(chain) = queue.pop(mem) {
            let Ok(chain) = chain else {
                break; // a broken chain cannot be returned
            };
            match read_chain(&chain, &mut self.buf, mem) {
                Some(len) if len > NET_HDR_LEN => {
                    let frame = &self.buf[NET_HDR_LEN..len];
                    match self.tap.write_frame(frame) {
                        Ok(_) => self.metrics.count_net_tx(frame.len() as u64),
                        Err(_) => self.metrics.count_net_tx_dropped(),
                    }
                }
                _ => self.metrics.count_net_tx_dropped(),
            }
            queue.add_used(mem, chain.head, 0);
            used = true;
        }
        used
    }
}

/// Copies `data` into the chain's buffers, which must all be device-writable and hold it
/// all; the bytes written, or None.
fn write_chain(chain: &Chain, data: &[u8], mem: &GuestMemory) -> Option<u32> {
    let room: u64 = chain.descriptors.iter().map(|d| u64::from(d.len)).sum();
    if chain.descriptors.iter().any(|d| !d.is_write_only()) || room < data.len() as u64 {
        return None;
    }
    let mut rest = data;
    for d in &chain.descriptors {
        if rest.is_empty() {
            break;
        }
        let n = rest.len().min(d.len as usize);
        mem.write_slice(&rest[..n], GuestAddress(d.addr)).ok()?;
        rest = &rest[n..];
    }
    Some(data.len() as u32)
}

/// Gathers the chain's (driver-written) buffers into `buf`; the length, or None when a
/// buffer is device-writable, unreadable or the whole does not fit.
fn read_chain(chain: &Chain, buf: &mut [u8], mem: &GuestMemory) -> Option<usize> {
    let mut len = 0usize;
    for d in &chain.descriptors {
        if d.is_write_only() {
            return None;
        }
        let end = len
            .checked_add(d.len as usize)
            .filter(|e| *e <= buf.len())?;
        mem.read_slice(&mut buf[len..end], GuestAddress(d.addr))
            .ok()?;
        len = end;
    }
    Some(len)
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn features(&self) -> u64 {
        VIRTIO_NET_F_MAC
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.max_sizes
    }

    /// Config space: the MAC (6 bytes) at 0; the rest reads as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| self.mac.get(o + i))
                .copied()
                .unwrap_or(0);
        }
    }

    fn process_queue(&mut self, index: usize, queue: &mut Queue, mem: &GuestMemory) -> bool {
        match index {
            RX_QUEUE => self.receive(queue, mem),
            TX_QUEUE => self.transmit(queue, mem),
            _ => false,
        }
    }

    fn process_io(&mut self, queues: &mut [Queue], mem: &GuestMemory) -> bool {
        match queues.get_mut(RX_QUEUE) {
            Some(rx) => self.receive(rx, mem),
            None => false,
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
    }
}

/// The net device's event thread, before it starts: an epoll set holding the tap
/// (readable, edge-triggered) and the stop eventfd.
pub struct RxWaker {
    epoll: Epoll,
    /// Kept open here: epoll forgets a file once its last descriptor closes, and the
    /// device closes its own right after signalling.
    _stop: EventFd,
}

impl RxWaker {
    /// Starts the thread. It holds the transport weakly (a dropped VM is not kept alive)
    /// and ends when the device is dropped.
    pub fn spawn(self, transport: Weak<Mutex<MmioTransport>>) -> Result<()> {
        std::thread::Builder::new()
            .name("vmm-net".into())
            .stack_size(64 * 1024)
            .spawn(move || self.run(transport))
            .map_err(|e| VmmError::io("starting the net device thread", e))?;
        Ok(())
    }

    fn run(self, transport: Weak<Mutex<MmioTransport>>) {
        let mut events = [EpollEvent::default(); 2];
        loop {
            let n = match self.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            for event in &events[..n] {
                if event.data() == EVENT_STOP {
                    return;
                }
                let Some(transport) = transport.upgrade() else {
                    return;
                };
                lock(&transport).process_io();
            }
        }
    }
}

/// Parses `aa:bb:cc:dd:ee:ff` (hex, either case).
pub fn parse_mac(text: &str) -> std::result::Result<[u8; 6], String> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != 6 {
        return Err(format!(
            "{text:?} is not six hex bytes like 02:00:00:00:00:01"
        ));
    }
    for (byte, part) in mac.iter_mut().zip(&parts) {
        if part.len() != 2 {
            return Err(format!("{text:?}: {part:?} is not one hex byte"));
        }
        *byte = u8::from_str_radix(part, 16)
            .map_err(|_| format!("{text:?}: {part:?} is not one hex byte"))?;
    }
    if mac[0] & 1 != 0 {
        return Err(format!("{text:?} is a multicast address"));
    }
    if mac == [0; 6] {
        return Err(format!("{text:?} is all zeroes"));
    }
    Ok(mac)
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

#[cfg(test)]
mod tests {
    use super::super::{Descriptor, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
    use super::*;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn macs_parse_and_print() {
        let mac = parse_mac("02:AB:00:10:ff:7e").unwrap();
        assert_eq!(mac, [2, 0xab, 0, 0x10, 0xff, 0x7e]);
        assert_eq!(format_mac(&mac), "02:ab:00:10:ff:7e");
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "02:00:00:00:00:0g",
            "2:00:00:00:00:01",
            "03:00:00:00:00:01",
            "00:00:00:00:00:00",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn frames_are_scattered_into_and_gathered_from_chains() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x4000)]).unwrap();
        let w = |addr, len| Descriptor {
            addr,
            len,
            flags: VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT,
        };
        let chain = Chain {
            head: 0,
            descriptors: vec![w(0x1000, 4), w(0x2000, 8)],
        };
        assert_eq!(write_chain(&chain, b"0123456789", &mem), Some(10));
        let mut got = [0u8; 6];
        mem.read_slice(&mut got, GuestAddress(0x2000)).unwrap();
        assert_eq!(&got, b"456789");
        assert_eq!(write_chain(&chain, &[0; 13], &mem), None, "too big");

        let r = |addr, len| Descriptor {
            addr,
            len,
            flags: VIRTQ_DESC_F_NEXT,
        };
        let out = Chain {
            head: 0,
            descriptors: vec![r(0x1000, 4), r(0x2000, 6)],
        };
        let mut buf = [0u8; 16];
        assert_eq!(read_chain(&out, &mut buf, &mem), Some(10));
        assert_eq!(&buf[..10], b"0123456789");
        assert_eq!(read_chain(&out, &mut buf[..8], &mem), None, "does not fit");
        assert_eq!(read_chain(&chain, &mut buf, &mem), None, "device-writable");
    }
}
