//! The Intel MultiProcessor Specification 1.4 table, as Firecracker writes it: without ACPI
//! this is how a Linux guest finds its CPUs (one processor entry per vCPU, vCPU 0 the boot
//! processor), the IOAPIC, and how ISA IRQs 0..23 route to it. It sits in the last KiB of
//! base memory (the EBDA, [`layout::EBDA_START`]), where Linux scans for the `_MP_`
//! floating pointer, outside the e820 RAM map.

use vm_memory::{Bytes, GuestAddress};

use super::layout;
use super::memory::GuestMemory;
use super::{Result, VmmError};

const APIC_DEFAULT_BASE: u32 = 0xfee0_0000;
const IOAPIC_DEFAULT_BASE: u32 = 0xfec0_0000;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
const CPU_STEPPING: u32 = 0x600;
const CPU_FEATURE_APIC: u32 = 0x200;
const CPU_FEATURE_FPU: u32 = 0x001;
const IOAPIC_USABLE: u8 = 1;
const IRQ_COUNT: u8 = 24;

const MP_PROCESSOR: u8 = 0;
const MP_BUS: u8 = 1;
const MP_IOAPIC: u8 = 2;
const MP_INTSRC: u8 = 3;
const MP_LINTSRC: u8 = 4;
const MP_INT: u8 = 0;
const MP_NMI: u8 = 1;
const MP_EXTINT: u8 = 3;

const FLOATING_POINTER_LEN: usize = 16;
const HEADER_LEN: usize = 44;

/// The table's bytes for `vcpus` CPUs, to be placed at `base`.
pub fn table(vcpus: u8, base: u64) -> Vec<u8> {
    let ioapic_id = vcpus + 1;
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..vcpus {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOTPROCESSOR } else { 0 };
        entries.extend_from_slice(&[MP_PROCESSOR, cpu, APIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_STEPPING.to_le_bytes());
        entries.extend_from_slice(&(CPU_FEATURE_APIC | CPU_FEATURE_FPU).to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[MP_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[MP_IOAPIC, ioapic_id, IOAPIC_VERSION, IOAPIC_USABLE]);
    entries.extend_from_slice(&IOAPIC_DEFAULT_BASE.to_le_bytes());
    count += 1;
    for irq in 0..IRQ_COUNT {
        // type, irq type, flags (u16: conforming polarity/trigger), bus, bus irq, apic, pin
        entries.extend_from_slice(&[MP_INTSRC, MP_INT, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    // LINT0 of every LAPIC is ExtINT (the PIC), LINT1 is NMI.
    entries.extend_from_slice(&[MP_LINTSRC, MP_EXTINT, 0, 0, 0, 0, 0, 0]);
    entries.extend_from_slice(&[MP_LINTSRC, MP_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_addr = base + FLOATING_POINTER_LEN as u64;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&((HEADER_LEN + entries.len()) as u16).to_le_bytes());
    header.push(4); // spec 1.4
    header.push(0); // checksum, below
    header.extend_from_slice(b"OMNICLOU"); // OEM id
    header.extend_from_slice(b"omnicloud   "); // product id
    header.extend_from_slice(&0u32.to_le_bytes()); // OEM table
    header.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    header.extend_from_slice(&count.to_le_bytes());
    header.extend_from_slice(&APIC_DEFAULT_BASE.to_le_bytes());
    header.extend_from_slice(&[0; 4]); // extended table length, checksum, reserved
    let mut config = header;
    config.extend_from_slice(&entries);
    config[7] = checksum(&config);

    let mut out = Vec::with_capacity(FLOATING_POINTER_LEN + config.len());
    out.extend_from_slice(b"_MP_");
    out.extend_from_slice(&(table_addr as u32).to_le_bytes());
    out.push(1); // length in 16-byte units
    out.push(4); // spec 1.4
    out.push(0); // checksum, below
    out.extend_from_slice(&[0; 5]); // features: 0 = the configuration table is present
    out[10] = checksum(&out);
    out.extend_from_slice(&config);
    out
}

/// The byte that makes `bytes` sum to zero.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// Writes the table for `vcpus` CPUs at the start of the EBDA.
pub fn write(memory: &GuestMemory, vcpus: u8) -> Result<()> {
    let bytes = table(vcpus, layout::EBDA_START);
    if layout::EBDA_START + bytes.len() as u64 > 0xa_0000 {
        return Err(VmmError::Boot(format!(
            "the MP table for {vcpus} vCPUs does not fit below 640 KiB"
        )));
    }
    memory
        .write_slice(&bytes, GuestAddress(layout::EBDA_START))
        .map_err(|_| VmmError::GuestMemory(layout::EBDA_START))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_checks_out() {
        let t = table(32, 0x9fc00);
        assert!(t.len() <= 1024, "{}", t.len());
        assert_eq!(&t[..4], b"_MP_");
        assert_eq!(t[..16].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let ptr = u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize - 0x9fc00;
        let config = &t[ptr..];
        assert_eq!(&config[..4], b"PCMP");
        let len = u16::from_le_bytes([config[4], config[5]]) as usize;
        assert_eq!(len, config.len());
        assert_eq!(config.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let entries = u16::from_le_bytes([config[34], config[35]]);
        assert_eq!(entries, 32 + 1 + 1 + 24 + 2);
        // Processor entries first, the boot processor flagged.
        assert_eq!(config[HEADER_LEN..HEADER_LEN + 4], [0, 0, 0x14, 3]);
        assert_eq!(config[HEADER_LEN + 20..HEADER_LEN + 24], [0, 1, 0x14, 1]);
    }
}
