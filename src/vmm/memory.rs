//! Guest RAM: anonymous private mappings in this process (vm-memory's `GuestMemoryMmap`),
//! one per range of [`layout::ram_ranges`], each registered with KVM as a memory slot. Pages
//! are only backed when the guest (or the loader) touches them, so an idle VM costs little
//! more than what it used.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::layout;
use super::{Result, VmmError};

/// The guest's physical memory.
pub type GuestMemory = GuestMemoryMmap<()>;

/// Maps `mem_bytes` of guest RAM and registers it with the VM.
pub fn create(vm: &VmFd, mem_bytes: u64) -> Result<GuestMemory> {
    let memory =
        GuestMemoryMmap::from_ranges(&layout::ram_ranges(mem_bytes)).map_err(VmmError::Memory)?;
    for (slot, region) in memory.iter().enumerate() {
        let host = memory
            .get_host_address(region.start_addr())
            .map_err(|_| VmmError::GuestMemory(region.start_addr().raw_value()))?;
        let mem_region = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mapping of exactly `memory_size` bytes owned by
        // `memory`, which the VM (and every vCPU) holds for as long as the VM exists.
        unsafe { vm.set_user_memory_region(mem_region) }
            .map_err(|e| VmmError::kvm(format!("registering guest memory slot {slot}"), e))?;
    }
    Ok(memory)
}

/// The host address range of each RAM region: (host start, length). For RSS accounting.
pub fn host_ranges(memory: &GuestMemory) -> Vec<(usize, usize)> {
    memory
        .iter()
        .filter_map(|r| {
            let host = memory.get_host_address(r.start_addr()).ok()?;
            Some((host as usize, r.len() as usize))
        })
        .collect()
}
