//! virtio-blk over a raw image file: one request queue; reads, writes (unless read-only),
//! flush and get-id. Requests run synchronously when the driver notifies the queue.
//!
//! A request is a chain: a 16-byte header (type, reserved, sector) the device reads, data
//! buffers, and a one-byte status the device writes last.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress};

use super::{Chain, Queue, VirtioDevice};
use crate::vmm::memory::GuestMemory;
use crate::vmm::vm::VmMetrics;
use crate::vmm::{Result, VmmError};

pub const VIRTIO_ID_BLOCK: u32 = 2;
pub const SECTOR_SIZE: u64 = 512;
const QUEUE_SIZE: u16 = 256;

const VIRTIO_BLK_F_RO: u64 = 1 << 5;
const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;

pub const VIRTIO_BLK_T_IN: u32 = 0;
pub const VIRTIO_BLK_T_OUT: u32 = 1;
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;

pub const VIRTIO_BLK_S_OK: u8 = 0;
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

/// The length of the id string GET_ID returns.
const ID_BYTES: usize = 20;

pub struct Block {
    file: File,
    sectors: u64,
    read_only: bool,
    id: [u8; ID_BYTES],
    max_sizes: [u16; 1],
    metrics: Arc<VmMetrics>,
}

impl Block {
    /// Opens the image (read-only if asked); its size in whole sectors is the capacity.
    pub fn open(path: &Path, read_only: bool, metrics: Arc<VmMetrics>) -> Result<Block> {
        let file = File::options()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|e| VmmError::io(format!("opening the disk {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| VmmError::io(format!("reading the disk {}", path.display()), e))?
            .len();
        let mut id = [0u8; ID_BYTES];
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        let n = name.len().min(ID_BYTES);
        id[..n].copy_from_slice(&name.as_bytes()[..n]);
        Ok(Block {
            file,
            sectors: len / SECTOR_SIZE,
            read_only,
            id,
            max_sizes: [QUEUE_SIZE],
            metrics,
        })
    }

    /// Runs one request; returns (status, bytes written into the driver's buffers, without
    /// the status byte).
    fn execute(&mut self, chain: &Chain, mem: &GuestMemory) -> (u8, u32) {
        let descs = &chain.descriptors;
        let header = descs[0];
        if header.is_write_only() || header.len < 16 {
            return (VIRTIO_BLK_S_IOERR, 0);
        }
        let read_header = || -> Option<(u32, u64)> {
            let kind: u32 = mem.read_obj(GuestAddress(header.addr)).ok()?;
            let sector: u64 = mem.read_obj(GuestAddress(header.addr + 8)).ok()?;
            Some((kind, sector))
        };
        let Some((kind, sector)) = read_header() else {
            return (VIRTIO_BLK_S_IOERR, 0);
        };
        let data = &descs[1..descs.len() - 1];
        match kind {
            VIRTIO_BLK_T_IN | VIRTIO_BLK_T_OUT => {
                let write = kind == VIRTIO_BLK_T_OUT;
                if write && self.read_only {
                    return (VIRTIO_BLK_S_IOERR, 0);
                }
                let total: u64 = data.iter().map(|d| u64::from(d.len)).sum();
                let end = sector
                    .checked_mul(SECTOR_SIZE)
                    .and_then(|start| start.checked_add(total));
                if end.is_none_or(|end| end > self.sectors * SECTOR_SIZE) {
                    return (VIRTIO_BLK_S_IOERR, 0);
                }
                let mut offset = sector * SECTOR_SIZE;
                let mut done = 0u32;
                for d in data {
                    if d.is_write_only() == write {
                        return (VIRTIO_BLK_S_IOERR, done);
                    }
                    let mut buf = vec![0u8; d.len as usize];
                    let ok = if write {
                        mem.read_slice(&mut buf, GuestAddress(d.addr)).is_ok()
                            && self.file.write_all_at(&buf, offset).is_ok()
                    } else {
                        self.file.read_exact_at(&mut buf, offset).is_ok()
                            && mem.write_slice(&buf, GuestAddress(d.addr)).is_ok()
                    };
                    if !ok {
                        return (VIRTIO_BLK_S_IOERR, done);
                    }
                    offset += u64::from(d.len);
                    if write {
                        self.metrics.count_block_write(u64::from(d.len));
                    } else {
                        done += d.len;
                        self.metrics.count_block_read(u64::from(d.len));
                    }
                }
                (VIRTIO_BLK_S_OK, done)
            }
            VIRTIO_BLK_T_FLUSH => {
                if self.read_only || self.file.sync_all().is_ok() {
                    (VIRTIO_BLK_S_OK, 0)
                } else {
                    (VIRTIO_BLK_S_IOERR, 0)
                }
            }
            VIRTIO_BLK_T_GET_ID => match data.first() {
                Some(d) if d.is_write_only() => {
                    let n = (d.len as usize).min(ID_BYTES);
                    match mem.write_slice(&self.id[..n], GuestAddress(d.addr)) {
                        Ok(()) => (VIRTIO_BLK_S_OK, n as u32),
                        Err(_) => (VIRTIO_BLK_S_IOERR, 0),
                    }
                }
                _ => (VIRTIO_BLK_S_IOERR, 0),
            },
            _ => (VIRTIO_BLK_S_UNSUPP, 0),
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn features(&self) -> u64 {
        let ro = if self.read_only { VIRTIO_BLK_F_RO } else { 0 };
        VIRTIO_BLK_F_FLUSH | ro
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.max_sizes
    }

    /// Config space: capacity in 512-byte sectors (u64) at 0; the rest reads as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = [0u8; 8];
        config.copy_from_slice(&self.sectors.to_le_bytes());
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| config.get(o + i))
                .copied()
                .unwrap_or(0);
        }
    }

    fn process_queue(&mut self, _index: usize, queue: &mut Queue, mem: &GuestMemory) -> bool {
        let mut used = false;
        while let Some(chain) = queue.pop(mem) {
            let Ok(chain) = chain else {
                // A broken chain cannot be returned (its head may be garbage): stop here.
                break;
            };
            let (status, written) = if chain.descriptors.len() < 2 {
                (VIRTIO_BLK_S_IOERR, 0)
            } else {
                self.execute(&chain, mem)
            };
            let status_desc = chain.descriptors[chain.descriptors.len() - 1];
            if status_desc.is_write_only() && status_desc.len >= 1 {
                let _ = mem.write_obj(status, GuestAddress(status_desc.addr));
            }
            queue.add_used(mem, chain.head, written + 1);
            used = true;
        }
        used
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Descriptor, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn disk(read_only: bool) -> (tempfile::NamedTempFile, Block) {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut content = vec![0u8; 4 * 512];
        content[512..517].copy_from_slice(b"hello");
        std::fs::write(f.path(), &content).unwrap();
        let b = Block::open(f.path(), read_only, Arc::default()).unwrap();
        (f, b)
    }

    fn request(mem: &GuestMemory, kind: u32, sector: u64, data_flags: u16) -> Chain {
        mem.write_obj(kind, GuestAddress(0x100)).unwrap();
        mem.write_obj(sector, GuestAddress(0x108)).unwrap();
        Chain {
            head: 0,
            descriptors: vec![
                Descriptor {
                    addr: 0x100,
                    len: 16,
                    flags: VIRTQ_DESC_F_NEXT,
                },
                Descriptor {
                    addr: 0x1000,
                    len: 512,
                    flags: data_flags | VIRTQ_DESC_F_NEXT,
                },
                Descriptor {
                    addr: 0x200,
                    len: 1,
                    flags: VIRTQ_DESC_F_WRITE,
                },
            ],
        }
    }

    #[test]
    fn reads_and_writes_sectors() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x4000)]).unwrap();
        let (f, mut b) = disk(false);
        let (status, n) = b.execute(&request(&mem, VIRTIO_BLK_T_IN, 1, VIRTQ_DESC_F_WRITE), &mem);
        assert_eq!((status, n), (VIRTIO_BLK_S_OK, 512));
        let mut got = [0u8; 5];
        mem.read_slice(&mut got, GuestAddress(0x1000)).unwrap();
        assert_eq!(&got, b"hello");

        mem.write_slice(b"world", GuestAddress(0x1000)).unwrap();
        let (status, _) = b.execute(&request(&mem, VIRTIO_BLK_T_OUT, 3, 0), &mem);
        assert_eq!(status, VIRTIO_BLK_S_OK);
        assert_eq!(&std::fs::read(f.path()).unwrap()[1536..1541], b"world");

        // past the end, unknown type
        let (status, _) = b.execute(&request(&mem, VIRTIO_BLK_T_IN, 4, VIRTQ_DESC_F_WRITE), &mem);
        assert_eq!(status, VIRTIO_BLK_S_IOERR);
        let (status, _) = b.execute(&request(&mem, 99, 0, VIRTQ_DESC_F_WRITE), &mem);
        assert_eq!(status, VIRTIO_BLK_S_UNSUPP);
    }

    #[test]
    fn read_only_disks_refuse_writes() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x4000)]).unwrap();
        let (_f, mut b) = disk(true);
        assert_ne!(b.features() & VIRTIO_BLK_F_RO, 0);
        let (status, _) = b.execute(&request(&mem, VIRTIO_BLK_T_OUT, 0, 0), &mem);
        assert_eq!(status, VIRTIO_BLK_S_IOERR);
        let mut cap = [0u8; 8];
        b.read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 4);
    }
}
