//! The Linux x86-64 boot protocol, loading half: the kernel image (linux-loader's ELF or
//! bzImage loader), the initrd, the command line and the zero page (`boot_params`) with the
//! e820 map. Setting the vCPU registers for the 64-bit entry is [`super::cpu`]'s job, as in
//! rust-vmm, where loading (`KernelLoader`) is separate from configuring boot
//! (`BootConfigurator`).
//!
//! ELF: loaded at its physical addresses (at or above 1 MiB), entered at `e_entry` in 64-bit
//! mode, as Firecracker boots a vmlinux (a PVH note, if any, is ignored). bzImage: the
//! protected-mode kernel is loaded at 1 MiB and entered at its 64-bit entry point, load
//! address + 0x200 (the kernel must set `XLF_KERNEL_64`).

use std::fs::File;
use std::path::Path;

use linux_loader::bootparam::boot_params;
use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::{self, bzimage::BzImage, elf::Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress};

use super::layout;
use super::memory::GuestMemory;
use super::spec::CMDLINE_MAX;
use super::{Result, VmmError};

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x100_0000;
/// `xloadflags` bit: the kernel has a 64-bit entry point at load address + 0x200.
const XLF_KERNEL_64: u16 = 1;
/// The ELF magic, to tell a vmlinux from a bzImage.
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

/// What the vCPU setup needs from the loaded kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootInfo {
    /// Where the boot vCPU starts, in 64-bit mode.
    pub entry: u64,
    /// The first byte after the kernel image.
    pub kernel_end: u64,
}

/// Loads the kernel and its initrd, writes the command line and the zero page.
pub fn load(
    memory: &GuestMemory,
    mem_bytes: u64,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &Cmdline,
) -> Result<BootInfo> {
    let mut image = File::open(kernel)
        .map_err(|e| VmmError::io(format!("opening the kernel {}", kernel.display()), e))?;
    let mut magic = [0u8; 4];
    use std::io::Read;
    image
        .read_exact(&mut magic)
        .map_err(|e| VmmError::io(format!("reading the kernel {}", kernel.display()), e))?;
    let what = || format!("the kernel {}", kernel.display());
    let himem = Some(GuestAddress(layout::HIMEM_START));
    let (loaded, entry) = if &magic == ELF_MAGIC {
        let r = Elf::load(memory, None, &mut image, himem).map_err(|source| VmmError::Load {
            what: what(),
            source,
        })?;
        (r, r.kernel_load.0)
    } else {
        let r =
            BzImage::load(memory, None, &mut image, himem).map_err(|source| VmmError::Load {
                what: what(),
                source,
            })?;
        let hdr = r.setup_header.expect("a bzImage has a setup header");
        if hdr.xloadflags & XLF_KERNEL_64 == 0 {
            return Err(VmmError::Boot(format!(
                "{}: the bzImage has no 64-bit entry point (xloadflags)",
                what()
            )));
        }
        (r, r.kernel_load.0 + 0x200)
    };
    if loaded.kernel_end > layout::low_mem_end(mem_bytes) {
        return Err(VmmError::Boot(format!(
            "{} ends at {:#x}, past the end of guest memory",
            what(),
            loaded.kernel_end
        )));
    }

    loader::load_cmdline(memory, GuestAddress(layout::CMDLINE_START), cmdline).map_err(
        |source| VmmError::Load {
            what: "the command line".into(),
            source,
        },
    )?;
    let cmdline_len = cmdline
        .as_cstring()
        .map(|c| c.as_bytes().len())
        .map_err(|_| VmmError::Boot("the command line is not a C string".into()))?;

    let mut params = boot_params::default();
    if let Some(hdr) = loaded.setup_header {
        params.hdr = hdr;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.cmd_line_ptr = layout::CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;

    if let Some(initrd) = initrd {
        let (addr, size) = load_initrd(memory, mem_bytes, loaded.kernel_end, initrd)?;
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }

    let e820 = layout::e820_entries(mem_bytes);
    for (i, (addr, size, kind)) in e820.iter().enumerate() {
        params.e820_table[i].addr = *addr;
        params.e820_table[i].size = *size;
        params.e820_table[i].r#type = *kind;
    }
    params.e820_entries = e820.len() as u8;

    LinuxBootConfigurator::write_bootparams::<GuestMemory>(
        &BootParams::new::<boot_params>(&params, GuestAddress(layout::ZERO_PAGE_START)),
        memory,
    )
    .map_err(|e| VmmError::Boot(format!("writing the zero page: {e}")))?;

    Ok(BootInfo {
        entry,
        kernel_end: loaded.kernel_end,
    })
}

/// Copies the initrd to the top of low memory, page-aligned; returns (address, size).
fn load_initrd(
    memory: &GuestMemory,
    mem_bytes: u64,
    kernel_end: u64,
    path: &Path,
) -> Result<(u64, u64)> {
    let mut file = File::open(path)
        .map_err(|e| VmmError::io(format!("opening the initrd {}", path.display()), e))?;
    let size = file
        .metadata()
        .map_err(|e| VmmError::io(format!("reading the initrd {}", path.display()), e))?
        .len();
    let top = layout::low_mem_end(mem_bytes);
    let addr = top
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|a| *a >= kernel_end)
        .ok_or_else(|| {
            VmmError::Boot(format!(
                "the initrd {} ({size} bytes) does not fit in guest memory after the kernel",
                path.display()
            ))
        })?;
    memory
        .read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|_| VmmError::Boot(format!("copying the initrd {}", path.display())))?;
    Ok((addr, size))
}

/// The command line the guest gets: the spec's, then one entry per virtio-mmio device
/// (`virtio_mmio.device=4K@0xd0000000:5`), as Firecracker announces its devices.
pub fn cmdline(spec_cmdline: &str, mmio_devices: &[(u64, u32)]) -> Result<Cmdline> {
    let bad = |e: linux_loader::cmdline::Error| VmmError::spec("cmdline", e.to_string());
    let mut cmdline = Cmdline::try_from(spec_cmdline.trim(), CMDLINE_MAX).map_err(bad)?;
    for (base, irq) in mmio_devices {
        cmdline
            .add_virtio_mmio_device(layout::MMIO_DEVICE_SIZE, GuestAddress(*base), *irq, None)
            .map_err(bad)?;
    }
    Ok(cmdline)
}

/// Reads back the zero page (tests).
pub fn read_boot_params(memory: &GuestMemory) -> Result<boot_params> {
    memory
        .read_obj(GuestAddress(layout::ZERO_PAGE_START))
        .map_err(|_| VmmError::GuestMemory(layout::ZERO_PAGE_START))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_announced_on_the_command_line() {
        let c = cmdline("console=ttyS0 ", &[(0xd000_0000, 5), (0xd000_1000, 6)]).unwrap();
        assert_eq!(
            c.as_cstring().unwrap().to_str().unwrap(),
            "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6"
        );
        assert!(cmdline(&"x".repeat(CMDLINE_MAX), &[]).is_err());
    }
}
