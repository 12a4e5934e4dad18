//! VMM processes a test's director node started: found by their spec path under the node's
//! data dir, and ended when the test is done (VMs outlive their node process by design).

use std::path::{Path, PathBuf};

/// Whether `pid` runs (and is not a zombie).
pub fn alive(pid: i64) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

/// Live `__vmm run` processes whose spec lives under `dir`.
pub fn vmm_processes(dir: &Path) -> Vec<i64> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i64>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("__vmm run") && cmd.contains(dir.to_str().unwrap()) && alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

/// On drop: SIGKILL the VMMs of the data dir, and delete the named links (bridges).
pub struct KillVmms {
    pub dir: PathBuf,
    pub links: Vec<String>,
}

impl Drop for KillVmms {
    fn drop(&mut self) {
        for pid in vmm_processes(&self.dir) {
            // SAFETY: kill(2) on a VMM process this test's node started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        for link in &self.links {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", link])
                .output();
        }
    }
}
