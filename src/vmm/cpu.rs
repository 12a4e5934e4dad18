//! vCPU setup, the register half of the Linux 64-bit boot protocol (Firecracker's
//! `arch::x86_64::regs`/`cpuid`/`interrupts`, in small):
//!
//! - every vCPU: CPUID as KVM supports it with this vCPU's APIC id, a few MSRs Linux expects,
//!   LAPIC LINT0 = ExtINT (the PIC) and LINT1 = NMI;
//! - the boot vCPU: a GDT with flat 64-bit code at selector 0x10 and data at 0x18 (the
//!   `__BOOT_CS`/`__BOOT_DS` the boot protocol asks for), page tables identity-mapping the
//!   low 4 GiB with 2 MiB pages, CR0.PE|PG, CR4.PAE, EFER.LME|LMA, `%rip` = entry,
//!   `%rsi` = zero page, interrupts off.
//!
//! The other vCPUs wait in the in-kernel LAPIC for the guest's INIT/SIPI, as on hardware.

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, CpuId, Msrs};
use kvm_ioctls::{Kvm, VcpuFd};
use vm_memory::{Bytes, GuestAddress};

use super::layout;
use super::memory::GuestMemory;
use super::{Result, VmmError};

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_IA32_MISC_ENABLE_FAST_STRING: u64 = 0x1;

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// GDT entries: null, null, code (0x10), data (0x18), TSS (0x20).
const GDT: [u64; 5] = [
    0,
    0,
    gdt_entry(0xa09b, 0, 0xfffff), // 64-bit code, present, ring 0
    gdt_entry(0xc093, 0, 0xfffff), // data, read/write
    gdt_entry(0x808b, 0, 0xfffff), // TSS (busy)
];
const CODE_INDEX: u8 = 2;
const DATA_INDEX: u8 = 3;
const TSS_INDEX: u8 = 4;

/// A GDT descriptor from access/flags bits (`flags` as 0xF0FF: flags nibble, access byte).
const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The segment register value KVM wants for a GDT entry.
fn segment(entry: u64, index: u8) -> kvm_segment {
    let g = ((entry >> 55) & 1) as u8;
    let raw_limit = (((entry >> 32) & 0xf_0000) | (entry & 0xffff)) as u32;
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

/// CPUID as KVM supports it on this host, read once and patched per vCPU.
pub fn supported_cpuid(kvm: &Kvm) -> Result<CpuId> {
    kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| VmmError::kvm("reading the supported CPUID", e))
}

/// Everything every vCPU needs: CPUID (with its APIC id and the vCPU count), MSRs, LINT0/1.
pub fn configure_vcpu(vcpu: &VcpuFd, index: u8, vcpus: u8, base_cpuid: &CpuId) -> Result<()> {
    let mut cpuid = base_cpuid.clone();
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            // EBX[31:24] initial APIC id, EBX[23:16] logical processors; EDX bit 28 HTT.
            1 => {
                entry.ebx =
                    (entry.ebx & 0x0000_ffff) | (u32::from(index) << 24) | (u32::from(vcpus) << 16);
                if vcpus > 1 {
                    entry.edx |= 1 << 28;
                }
            }
            // x2APIC id of this logical processor.
            0xb | 0x1f => entry.edx = u32::from(index),
            _ => {}
        }
    }
    vcpu.set_cpuid2(&cpuid)
        .map_err(|e| VmmError::kvm(format!("setting the CPUID of vCPU {index}"), e))?;

    let entries = [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MSR_IA32_MISC_ENABLE_FAST_STRING),
    ]
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    });
    let msrs = Msrs::from_entries(&entries)
        .map_err(|e| VmmError::Boot(format!("building the MSR list: {e:?}")))?;
    let written = vcpu
        .set_msrs(&msrs)
        .map_err(|e| VmmError::kvm(format!("setting the MSRs of vCPU {index}"), e))?;
    if written != entries.len() {
        return Err(VmmError::Boot(format!(
            "KVM took {written} of {} boot MSRs for vCPU {index} (MSR {:#x} refused)",
            entries.len(),
            entries[written].index
        )));
    }

    let mut lapic = vcpu
        .get_lapic()
        .map_err(|e| VmmError::kvm(format!("reading the LAPIC of vCPU {index}"), e))?;
    set_lvt_mode(&mut lapic.regs, APIC_LVT0, APIC_MODE_EXTINT);
    set_lvt_mode(&mut lapic.regs, APIC_LVT1, APIC_MODE_NMI);
    vcpu.set_lapic(&lapic)
        .map_err(|e| VmmError::kvm(format!("setting the LAPIC of vCPU {index}"), e))?;
    Ok(())
}

/// Sets the delivery mode (bits 8..10) of a LAPIC LVT register.
fn set_lvt_mode(regs: &mut [std::os::raw::c_char; 1024], offset: usize, mode: u32) {
    let mut bytes = [0u8; 4];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = regs[offset + i] as u8;
    }
    let value = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
    for (i, b) in value.to_le_bytes().iter().enumerate() {
        regs[offset + i] = *b as std::os::raw::c_char;
    }
}

/// Writes the GDT, an empty IDT and the identity-mapping page tables into guest memory.
pub fn write_boot_tables(memory: &GuestMemory) -> Result<()> {
    let write = |value: u64, addr: u64| {
        memory
            .write_obj(value, GuestAddress(addr))
            .map_err(|_| VmmError::GuestMemory(addr))
    };
    for (i, entry) in GDT.iter().enumerate() {
        write(*entry, layout::GDT_START + i as u64 * 8)?;
    }
    write(0, layout::IDT_START)?;
    // PML4[0] -> PDPT; PDPT[i] -> PD i; PD i maps GiB i with 2 MiB pages.
    write(layout::PDPTE_START | 0x03, layout::PML4_START)?;
    for i in 0..layout::PDE_TABLES {
        let pd = layout::PDE_START + i * 0x1000;
        write(pd | 0x03, layout::PDPTE_START + i * 8)?;
        for j in 0..512u64 {
            // present | writable | page size (2 MiB)
            write(((i * 512 + j) << 21) | 0x83, pd + j * 8)?;
        }
    }
    Ok(())
}

/// The boot vCPU's entry state: long mode, flat segments, `%rip` = entry, `%rsi` = zero
/// page. Call [`write_boot_tables`] first.
pub fn configure_boot_vcpu(vcpu: &VcpuFd, entry: u64) -> Result<()> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu)
        .map_err(|e| VmmError::kvm("setting the boot vCPU's FPU", e))?;

    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| VmmError::kvm("reading the boot vCPU's special registers", e))?;
    let code = segment(GDT[CODE_INDEX as usize], CODE_INDEX);
    let data = segment(GDT[DATA_INDEX as usize], DATA_INDEX);
    let tss = segment(GDT[TSS_INDEX as usize], TSS_INDEX);
    sregs.gdt.base = layout::GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&GDT) - 1) as u16;
    sregs.idt.base = layout::IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.cr3 = layout::PML4_START;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.cr0 |= X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs)
        .map_err(|e| VmmError::kvm("setting the boot vCPU's special registers", e))?;

    let regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        rsp: layout::BOOT_STACK_POINTER,
        rbp: layout::BOOT_STACK_POINTER,
        rsi: layout::ZERO_PAGE_START,
        ..Default::default()
    };
    vcpu.set_regs(&regs)
        .map_err(|e| VmmError::kvm("setting the boot vCPU's registers", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_decode_the_gdt() {
        let code = segment(GDT[2], 2);
        assert_eq!(code.selector, 0x10);
        assert_eq!(
            (code.l, code.db, code.present, code.s, code.type_),
            (1, 0, 1, 1, 0xb)
        );
        assert_eq!(code.limit, 0xffff_ffff);
        let data = segment(GDT[3], 3);
        assert_eq!(data.selector, 0x18);
        assert_eq!((data.db, data.type_, data.unusable), (1, 3, 0));
        assert_eq!(segment(0, 0).unusable, 1);
    }

    #[test]
    fn lvt_mode_keeps_the_other_bits() {
        let mut regs = [0 as std::os::raw::c_char; 1024];
        regs[APIC_LVT0 + 2] = 1; // bit 16, the mask
        set_lvt_mode(&mut regs, APIC_LVT0, APIC_MODE_EXTINT);
        assert_eq!(regs[APIC_LVT0 + 1] as u8, 0x07);
        assert_eq!(regs[APIC_LVT0 + 2], 1);
    }
}
