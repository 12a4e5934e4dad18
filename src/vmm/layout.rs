//! Guest physical memory layout, x86-64, chosen as Firecracker does so a vmlinux built for
//! Firecracker boots here unchanged:
//!
//! ```text
//! 0x0000_0500  GDT (5 entries: null, null, code 0x10, data 0x18, TSS 0x20)
//! 0x0000_0520  IDT (empty; the kernel loads its own)
//! 0x0000_7000  zero page (struct boot_params), %rsi at entry
//! 0x0000_8ff0  initial stack pointer
//! 0x0000_9000  PML4, 0xa000 PDPT, 0xb000..0xf000 four page directories: 0..4 GiB
//!              identity-mapped with 2 MiB pages (so MMIO below 4 GiB is reachable too)
//! 0x0002_0000  kernel command line (CMDLINE_MAX bytes)
//! 0x0009_fc00  EBDA: first e820 RAM entry ends here
//! 0x0010_0000  kernel (HIMEM_START); RAM up to the MMIO gap
//! 0xd000_0000  MMIO gap: virtio-mmio devices, 4 KiB each, then IOAPIC/LAPIC at the top
//! 4 GiB        RAM above the gap when the guest has more than 3.25 GiB
//! ```

use vm_memory::GuestAddress;

pub const GDT_START: u64 = 0x500;
pub const IDT_START: u64 = 0x520;
pub const ZERO_PAGE_START: u64 = 0x7000;
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
/// Page directories (2 MiB pages) in the boot page tables: 4 x 1 GiB.
pub const PDE_TABLES: u64 = 4;
pub const CMDLINE_START: u64 = 0x20000;
pub const EBDA_START: u64 = 0x9fc00;
pub const HIMEM_START: u64 = 0x10_0000;

/// Start of the 32-bit MMIO gap (768 MiB below 4 GiB).
pub const MMIO_GAP_START: u64 = 0xd000_0000;
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// Each virtio-mmio device gets one 4 KiB window from the start of the gap.
pub const MMIO_DEVICE_SIZE: u64 = 0x1000;
/// The first virtio-mmio device interrupt (GSI); COM1 uses 4, COM2 3.
pub const MMIO_FIRST_IRQ: u32 = 5;
/// Legacy IRQ of the serial port COM1 (the console).
pub const SERIAL_IRQ: u32 = 4;
/// Legacy IRQ of the serial port COM2 (the guest-agent channel).
pub const AGENT_IRQ: u32 = 3;

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;

/// Guest RAM ranges (start, length) for `mem_bytes` of memory, split around the MMIO gap.
pub fn ram_ranges(mem_bytes: u64) -> Vec<(GuestAddress, usize)> {
    if mem_bytes <= MMIO_GAP_START {
        vec![(GuestAddress(0), mem_bytes as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START as usize),
            (
                GuestAddress(MMIO_GAP_END),
                (mem_bytes - MMIO_GAP_START) as usize,
            ),
        ]
    }
}

/// The e820 map the guest sees: (addr, size, type). Low memory up to the EBDA, then from
/// 1 MiB to the end of RAM (or the gap), then RAM above 4 GiB if any.
pub fn e820_entries(mem_bytes: u64) -> Vec<(u64, u64, u32)> {
    let mut out = vec![(0, EBDA_START, E820_RAM)];
    if mem_bytes <= MMIO_GAP_START {
        out.push((HIMEM_START, mem_bytes - HIMEM_START, E820_RAM));
    } else {
        out.push((HIMEM_START, MMIO_GAP_START - HIMEM_START, E820_RAM));
        out.push((MMIO_GAP_END, mem_bytes - MMIO_GAP_START, E820_RAM));
    }
    out
}

/// The end of RAM below the MMIO gap.
pub fn low_mem_end(mem_bytes: u64) -> u64 {
    mem_bytes.min(MMIO_GAP_START)
}

/// Base address of the `index`-th virtio-mmio device.
pub fn mmio_device_base(index: u64) -> u64 {
    MMIO_GAP_START + index * MMIO_DEVICE_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guests_have_one_ram_range() {
        let mib = 1 << 20;
        assert_eq!(
            ram_ranges(64 * mib),
            vec![(GuestAddress(0), 64 * mib as usize)]
        );
        assert_eq!(
            e820_entries(64 * mib),
            vec![(0, 0x9fc00, 1), (0x100000, 64 * mib - 0x100000, 1)]
        );
    }

    #[test]
    fn big_guests_skip_the_mmio_gap() {
        let gib = 1u64 << 30;
        let ranges = ram_ranges(4 * gib);
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[1].0, GuestAddress(4 * gib));
        let total: usize = ranges.iter().map(|r| r.1).sum();
        assert_eq!(total as u64, 4 * gib);
        let e820 = e820_entries(4 * gib);
        assert_eq!(e820[2], (4 * gib, 4 * gib - MMIO_GAP_START, 1));
        assert_eq!(low_mem_end(4 * gib), MMIO_GAP_START);
    }
}
