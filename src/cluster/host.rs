//! What this machine offers, probed once at start: whether KVM opens, whether containers
//! can run (root and a cgroup hierarchy), CPU and memory capacity. Roles follow from it.

use std::path::Path;

use crate::model::Role;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFacts {
    pub kvm: bool,
    pub containers: bool,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl HostFacts {
    pub fn probe() -> HostFacts {
        let kvm = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        let containers = crate::config::is_root() && Path::new("/sys/fs/cgroup").is_dir();
        let cpu_millis = std::thread::available_parallelism()
            .map(|n| n.get() as u64 * 1000)
            .unwrap_or(1000);
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map(|kb| kb * 1024)
            .unwrap_or(0);
        HostFacts {
            kvm,
            containers,
            cpu_millis,
            memory_bytes,
        }
    }
}

/// The roles a node announces. `auto` keeps `auto` (orchestrator by election) and adds
/// agent and director where the host can; explicit roles are taken as given.
pub fn resolve_roles(configured: &[Role], facts: &HostFacts) -> Vec<Role> {
    if !configured.contains(&Role::Auto) {
        return configured.to_vec();
    }
    let mut roles = vec![Role::Auto];
    if facts.containers {
        roles.push(Role::Agent);
    }
    if facts.kvm {
        roles.push(Role::Director);
    }
    roles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_capabilities_explicit_is_kept() {
        let facts = HostFacts {
            kvm: true,
            containers: false,
            cpu_millis: 2000,
            memory_bytes: 1 << 30,
        };
        assert_eq!(resolve_roles(&[Role::Auto], &facts), ["auto", "director"]);
        assert_eq!(resolve_roles(&[Role::Agent], &facts), ["agent"]);
        let probed = HostFacts::probe();
        assert!(probed.cpu_millis >= 1000 && probed.memory_bytes > 0);
    }
}
