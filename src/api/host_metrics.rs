//! Node cpu and memory in `/metrics`, read from `/proc` at scrape time: capacity (as the
//! node announces it to the scheduler), memory available, and cpu in use across the machine
//! since the previous scrape (since boot on the first). Instances have their own series
//! (`agent_instance_*`); these say how full the node is as a whole.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub struct HostMetrics {
    cpu_capacity: Gauge,
    cpu_usage: Gauge<f64, AtomicU64>,
    memory_capacity: Gauge,
    memory_available: Gauge,
    /// (busy, total) jiffies at the previous scrape.
    last_cpu: Mutex<Option<(u64, u64)>>,
}

impl HostMetrics {
    pub fn new(registry: &mut Registry) -> HostMetrics {
        let m = HostMetrics {
            cpu_capacity: Gauge::default(),
            cpu_usage: Gauge::default(),
            memory_capacity: Gauge::default(),
            memory_available: Gauge::default(),
            last_cpu: Mutex::new(None),
        };
        registry.register(
            "node_cpu_capacity_millicores",
            "CPUs this node offers, in millicores",
            m.cpu_capacity.clone(),
        );
        registry.register(
            "node_cpu_usage_millicores",
            "CPU in use on the machine since the previous scrape, in millicores",
            m.cpu_usage.clone(),
        );
        registry.register(
            "node_memory_capacity_bytes",
            "Memory of the machine (MemTotal)",
            m.memory_capacity.clone(),
        );
        registry.register(
            "node_memory_available_bytes",
            "Memory available for new work (MemAvailable)",
            m.memory_available.clone(),
        );
        m
    }

    pub fn refresh(&self) {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
        self.cpu_capacity.set(cpus * 1000);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        self.memory_capacity
            .set(meminfo_bytes(&meminfo, "MemTotal:"));
        self.memory_available
            .set(meminfo_bytes(&meminfo, "MemAvailable:"));
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        if let Some((busy, total)) = cpu_jiffies(&stat) {
            let mut last = self.last_cpu.lock().unwrap();
            let (b0, t0) = last.unwrap_or((0, 0));
            if total > t0 {
                let share = busy.saturating_sub(b0) as f64 / (total - t0) as f64;
                // The aggregate line counts every online CPU: scale the share to all of them.
                self.cpu_usage
                    .set(share * cpu_count(&stat).max(1) as f64 * 1000.0);
            }
            *last = Some((busy, total));
        }
    }
}

fn meminfo_bytes(meminfo: &str, key: &str) -> i64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<i64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// (busy, total) jiffies from the aggregate `cpu` line; idle and iowait are not busy.
fn cpu_jiffies(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    if fields.len() < 5 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields[3] + fields[4];
    Some((total - idle, total))
}

fn cpu_count(stat: &str) -> usize {
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read_as_the_kernel_writes_them() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n\
                    cpu1 50 0 25 400 25 0 0 0 0 0\nintr 1 2 3\n";
        assert_eq!(cpu_jiffies(stat), Some((150, 1000)));
        assert_eq!(cpu_count(stat), 2);
        let meminfo =
            "MemTotal:        2048 kB\nMemFree:          512 kB\nMemAvailable:    1024 kB\n";
        assert_eq!(meminfo_bytes(meminfo, "MemTotal:"), 2048 * 1024);
        assert_eq!(meminfo_bytes(meminfo, "MemAvailable:"), 1024 * 1024);
    }
}
