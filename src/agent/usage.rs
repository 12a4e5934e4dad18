//! Per-instance cpu and memory from the container's cgroup (v1 or v2): cpu time (made
//! millicores by [`crate::supervise::CpuRate`]), memory as the working set (usage minus inactive file
//! cache, as the kubelet reports it).

use std::fs;
use std::path::{Path, PathBuf};

use crate::container::{runtime::memory_cgroup_dir, spec::cgroup_path};

/// Cumulative cpu time of the container, in nanoseconds.
pub fn cpu_nanos(id: &str) -> Option<u64> {
    let rel = cgroup_path(id);
    let rel = rel.trim_start_matches('/');
    for dir in ["cpuacct", "cpu,cpuacct", "cpu"] {
        let p = Path::new("/sys/fs/cgroup").join(dir).join(rel);
        if let Some(n) = read_u64(&p.join("cpuacct.usage")) {
            return Some(n);
        }
    }
    let stat = fs::read_to_string(Path::new("/sys/fs/cgroup").join(rel).join("cpu.stat")).ok()?;
    stat_field(&stat, "usage_usec").map(|us| us * 1000)
}

/// The container's memory working set in bytes.
pub fn memory_working_set(id: &str) -> Option<u64> {
    let dir: PathBuf = memory_cgroup_dir(id)?;
    let stat = fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
    let (usage, inactive) = match read_u64(&dir.join("memory.usage_in_bytes")) {
        Some(u) => (u, stat_field(&stat, "total_inactive_file")),
        None => (
            read_u64(&dir.join("memory.current"))?,
            stat_field(&stat, "inactive_file"),
        ),
    };
    Some(usage.saturating_sub(inactive.unwrap_or(0)))
}

fn read_u64(p: &Path) -> Option<u64> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn stat_field(stat: &str, name: &str) -> Option<u64> {
    stat.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields() {
        let stat = "cache 10\ntotal_inactive_file 4096\ninactive_file 7\n";
        assert_eq!(stat_field(stat, "total_inactive_file"), Some(4096));
        assert_eq!(stat_field(stat, "inactive_file"), Some(7));
        assert_eq!(stat_field(stat, "missing"), None);
        assert_eq!(cpu_nanos("no-such-container"), None);
    }
}
