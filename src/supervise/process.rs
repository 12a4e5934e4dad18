//! Process liveness that survives a node restart: a pid plus its start time names one
//! process for good, so a restarted node process can tell its old children (containers'
//! inits, VMMs) from strangers that reused their pids; their cpu and memory from /proc; and
//! waiting for one to end, whether it is our child or was adopted; cpu samples made rates.

use std::time::{Duration, Instant};

use crate::container;

/// The start time of `pid` (clock ticks since boot, field 22 of /proc/PID/stat): with the
/// pid it names one process for good, even after the pid is reused.
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// CPU time `pid` has used (user + system), in nanoseconds.
pub fn cpu_nanos(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 2..].split_whitespace();
    // Fields 14 and 15 (utime, stime); the state (field 3) is the first after the name.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some((utime + stime) * 1_000_000_000 / hz)
}

/// Resident memory of `pid` in bytes.
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf reads a constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    Some(pages * page)
}

/// Whether `pid` still is the process that started at `ticks` and has not exited.
pub fn alive(pid: i32, ticks: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    let mut fields = stat[close + 2..].split_whitespace();
    let state = fields.next().unwrap_or("X");
    let started = fields.nth(18).and_then(|t| t.parse::<u64>().ok());
    started == Some(ticks) && state != "Z" && state != "X"
}

/// Waits for the process `pid` (a container init, a VMM) to end. A child of ours (we are
/// its subreaper) is reaped and its shell-style exit code returned; an adopted one (left by
/// a previous node process) is watched through /proc and ends with no code.
pub async fn wait_exit(pid: i32, ticks: u64) -> Option<i32> {
    let mut ours = true;
    loop {
        if ours {
            match container::runtime::try_reap(pid) {
                Ok(Some(code)) => return Some(code),
                Ok(None) => {}
                Err(_) => ours = false,
            }
        }
        if !ours && !alive(pid, ticks) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Turns cumulative cpu samples into a rate.
#[derive(Debug, Default)]
pub struct CpuRate {
    last: Option<(Instant, u64)>,
}

impl CpuRate {
    /// Millicores used since the previous sample (None on the first).
    pub fn sample(&mut self, now: Instant, cpu_nanos: u64) -> Option<u64> {
        let prev = self.last.replace((now, cpu_nanos));
        let (then, before) = prev?;
        let wall = now.duration_since(then).as_nanos() as u64;
        if wall == 0 {
            return None;
        }
        Some(cpu_nanos.saturating_sub(before) * 1000 / wall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_rates_are_millicores_between_samples() {
        let mut r = CpuRate::default();
        let t = Instant::now();
        assert_eq!(r.sample(t, 1_000_000_000), None);
        // Half a cpu second over one wall second: 500 millicores.
        assert_eq!(
            r.sample(t + Duration::from_secs(1), 1_500_000_000),
            Some(500)
        );
    }

    #[tokio::test]
    #[allow(clippy::zombie_processes)] // wait_exit reaps it
    async fn exits_of_children_and_strangers_are_seen() {
        let child = std::process::Command::new("sh")
            .args(["-c", "sleep 0.2; exit 3"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let ticks = start_ticks(pid).unwrap();
        assert!(alive(pid, ticks));
        assert!(
            !alive(pid, ticks + 1),
            "another start time is another process"
        );
        assert_eq!(wait_exit(pid, ticks).await, Some(3));
        assert!(!alive(pid, ticks));
        assert_eq!(start_ticks(-5), None);
        let me = std::process::id() as i32;
        assert!(rss_bytes(me).unwrap() > 1 << 20);
        assert!(cpu_nanos(me).is_some());
        assert_eq!(cpu_nanos(-5), None);
    }
}
