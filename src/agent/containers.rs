//! The agent's side of the container helper: each call runs `omnicloud __container VERB`
//! as a child process (libcontainer must not run inside the multi-threaded node) and
//! parses its one line of JSON. Plus the process-level facts the supervisor needs: is a
//! container's init still alive, and how did it end.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::container::{self, ContainerSpec, ContainerState, RunOutput, Verb};

/// How long one helper call may take (creating a container unpacks image layers once).
const HELPER_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Debug)]
pub struct Containers {
    exe: PathBuf,
    root: PathBuf,
}

impl Containers {
    pub fn new(root: &Path) -> std::io::Result<Containers> {
        Ok(Containers {
            exe: std::env::current_exe()?,
            root: root.to_path_buf(),
        })
    }

    async fn call(&self, verb: Verb, stdin: Option<Vec<u8>>) -> Result<String, String> {
        let cmd = container::helper_command_with(&self.exe, &self.root, &verb);
        let mut child = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting the container helper: {e}"))?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin is piped for run");
            pipe.write_all(&input)
                .await
                .map_err(|e| format!("writing the spec to the helper: {e}"))?;
        }
        let out = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| format!("the container helper took longer than {HELPER_TIMEOUT:?}"))?
            .map_err(|e| format!("waiting for the container helper: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            let line = err.trim().lines().last().unwrap_or("").trim();
            Err(line.strip_prefix("error: ").unwrap_or(line).to_string())
        }
    }

    /// Creates and starts a container; its init pid.
    pub async fn run(&self, spec: &ContainerSpec) -> Result<i32, String> {
        let json = serde_json::to_vec(spec).expect("specs serialize");
        let line = self.call(Verb::Run, Some(json)).await?;
        serde_json::from_str::<RunOutput>(&line)
            .map(|o| o.pid)
            .map_err(|e| format!("unexpected helper output {line:?}: {e}"))
    }

    pub async fn state(&self, id: &str) -> Result<ContainerState, String> {
        let line = self.call(Verb::State { id: id.into() }, None).await?;
        serde_json::from_str(&line).map_err(|e| format!("unexpected helper output: {e}"))
    }

    pub async fn list(&self) -> Result<Vec<ContainerState>, String> {
        let line = self.call(Verb::List, None).await?;
        serde_json::from_str(&line).map_err(|e| format!("unexpected helper output: {e}"))
    }

    pub async fn kill(&self, id: &str, signal: &str) -> Result<(), String> {
        let verb = Verb::Kill {
            id: id.into(),
            signal: signal.into(),
            all: true,
        };
        self.call(verb, None).await.map(|_| ())
    }

    /// Removes the container (killing what still runs); a missing one is fine.
    pub async fn remove(&self, id: &str) -> Result<(), String> {
        let verb = Verb::Delete {
            id: id.into(),
            force: true,
        };
        match self.call(verb, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.contains("does not exist") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The start time of `pid` (clock ticks since boot, field 22 of /proc/PID/stat): with the
/// pid it names one process for good, even after the pid is reused.
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
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

/// Waits for the container init `pid` to end. A child of ours (we are its subreaper) is
/// reaped and its shell-style exit code returned; an adopted one (left by a previous node
/// process) is watched through /proc and ends with no code.
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
