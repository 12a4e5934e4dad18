//! The fencing watchdog: at most one live instance per StatefulSet identity, even when the
//! node process dies. Containers outlive their node process (so a restarted node adopts
//! them), and the orchestrator replaces a dead node's StatefulSet instances after
//! 2 x [`super::FENCE_AFTER`]. The agent fences itself while it runs, but a killed agent
//! cannot; so each node keeps one small watchdog process (`omnicloud __fence`) beside it.
//!
//! The agent writes, under `<data>/fence/`: `heartbeat` (ms since the epoch of its last
//! contact with the Raft leader, refreshed every second while it has contact) and `ids`
//! (the container ids of its StatefulSet instances). The watchdog checks every 250 ms; once
//! the heartbeat is older than [`super::FENCE_AFTER`] (the node process died, hung, or lost
//! the leader) it SIGKILLs those containers, well before the orchestrator replaces them.
//! A new node process starts a new watchdog and ends the old one (`watchdog.pid`).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Args;

use crate::supervise;

const CHECK_EVERY: Duration = Duration::from_millis(250);

/// `omnicloud __fence`
#[derive(Debug, Clone, Args)]
pub struct FenceArgs {
    /// The fence dir (`<data>/fence`).
    #[arg(long)]
    pub dir: PathBuf,
    /// The container runtime root (`<data>/containers`).
    #[arg(long)]
    pub root: PathBuf,
    #[arg(long)]
    pub after_ms: u64,
}

fn now_ms() -> u64 {
    crate::orchestrator::membership::now_ms()
}

/// Why the fencing watchdog did not start.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("creating {0}")]
    Dir(PathBuf, #[source] std::io::Error),
    #[error("opening the fence log")]
    Log(#[source] std::io::Error),
    #[error("finding this executable")]
    Exe(#[source] std::io::Error),
    #[error("starting the fencing watchdog")]
    Spawn(#[source] std::io::Error),
    #[error("writing the fence pid file")]
    PidFile(#[source] std::io::Error),
}

/// The agent's side: where it writes and how it starts the watchdog.
pub struct Fence {
    dir: PathBuf,
    last_ids: Option<Vec<String>>,
}

impl Fence {
    /// Ends a watchdog a previous node process left, starts this process's one.
    pub fn start(data_dir: &Path, containers: &Path) -> Result<Fence, FenceError> {
        let dir = data_dir.join("fence");
        std::fs::create_dir_all(&dir).map_err(|e| FenceError::Dir(dir.clone(), e))?;
        if let Some((pid, ticks)) = read_pid(&dir) {
            if supervise::alive(pid, ticks) {
                // SAFETY: kill(2) on the process named by our pid file and start time.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(dir.join("watchdog.log"))
            .map_err(FenceError::Log)?;
        // A fresh heartbeat first: the new watchdog must not fence what this node adopts.
        let fence = Fence {
            dir: dir.clone(),
            last_ids: None,
        };
        fence.beat_at(now_ms());
        let exe = std::env::current_exe().map_err(FenceError::Exe)?;
        let child = Command::new(exe)
            .arg("__fence")
            .arg("--dir")
            .arg(&dir)
            .arg("--root")
            .arg(containers)
            .arg("--after-ms")
            .arg(super::FENCE_AFTER.as_millis().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(FenceError::Spawn)?;
        let pid = child.id() as i32;
        // Reaped by the node's subreaper loop if it ever exits; it outlives a killed node.
        drop(child);
        let ticks = supervise::start_ticks(pid).unwrap_or(0);
        std::fs::write(dir.join("watchdog.pid"), format!("{pid} {ticks}\n"))
            .map_err(FenceError::PidFile)?;
        Ok(fence)
    }

    /// The agent last reached the leader at `ms` (since the epoch): the watchdog fences
    /// `FENCE_AFTER` later, as the agent itself would.
    pub fn beat_at(&self, ms: u64) {
        write_atomic(&self.dir.join("heartbeat"), &ms.to_string());
    }

    /// The containers to end if the heartbeat stops.
    pub fn set_ids(&mut self, mut ids: Vec<String>) {
        ids.sort();
        if self.last_ids.as_ref() != Some(&ids) {
            write_atomic(&self.dir.join("ids"), &ids.join("\n"));
            self.last_ids = Some(ids);
        }
    }
}

fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

fn read_pid(dir: &Path) -> Option<(i32, u64)> {
    let text = std::fs::read_to_string(dir.join("watchdog.pid")).ok()?;
    let mut parts = text.split_whitespace();
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Ends the watchdog of the node whose data dir this is (the node is being removed).
pub fn stop_watchdog(data_dir: &Path) {
    if let Some((pid, ticks)) = read_pid(&data_dir.join("fence")) {
        if supervise::alive(pid, ticks) {
            // SAFETY: kill(2) on the process named by the pid file and its start time.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// The watchdog process. Returns when a newer watchdog has taken over or the node's data
/// dir is gone.
pub fn watchdog(args: FenceArgs) {
    let me = std::process::id() as i32;
    let runtime = crate::container::runtime::Runtime::new(&args.root);
    let mut fenced: Vec<String> = Vec::new();
    let mut released = false;
    loop {
        std::thread::sleep(CHECK_EVERY);
        if !args.dir.is_dir() {
            return;
        }
        match read_pid(&args.dir) {
            Some((pid, _)) if pid == me => {}
            // Not written yet by the node that started us: keep watching.
            None => {}
            Some(_) => return,
        }
        let heartbeat: u64 = std::fs::read_to_string(args.dir.join("heartbeat"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        if now_ms().saturating_sub(heartbeat) <= args.after_ms {
            fenced.clear();
            released = false;
            continue;
        }
        if !released {
            // LoadBalancer addresses: another node takes them over; this one must stop
            // answering for them.
            if let Err(e) = crate::net::announce::release_all_blocking() {
                eprintln!("fence: releasing LoadBalancer addresses: {e}");
            }
            released = true;
        }
        let ids = std::fs::read_to_string(args.dir.join("ids")).unwrap_or_default();
        for id in ids.lines().filter(|l| !l.is_empty()) {
            let Ok(state) = runtime.state(id) else {
                continue;
            };
            let Some(pid) = state.pid else { continue };
            if state.status != crate::container::runtime::Status::Running {
                continue;
            }
            // SAFETY: kill(2) on the init process libcontainer recorded for this container;
            // ending a pid namespace's init ends the whole container.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            if !fenced.iter().any(|f| f == id) {
                eprintln!(
                    "fence: no leader contact for {} ms: killed StatefulSet container {id}",
                    now_ms().saturating_sub(heartbeat)
                );
                fenced.push(id.to_string());
            }
        }
    }
}
