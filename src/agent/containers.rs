//! The agent's side of the container helper: each call runs `omnicloud __container VERB`
//! as a child process (libcontainer must not run inside the multi-threaded node) and
//! parses its one line of JSON.

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
