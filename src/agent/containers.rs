//! The agent's side of the container helper: each call runs `omnicloud __container VERB`
//! as a child process (libcontainer must not run inside the multi-threaded node) and
//! parses its one line of JSON.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::container::{self, ContainerSpec, ContainerState, RunOutput, Verb};

/// How long one helper call may take (creating a container unpacks image layers once).
const HELPER_TIMEOUT: Duration = Duration::from_secs(120);

/// A container helper call that failed.
#[derive(Debug, thiserror::Error)]
pub enum ContainersError {
    #[error("starting the container helper")]
    Spawn(#[source] std::io::Error),
    #[error("writing the spec to the helper")]
    WriteSpec(#[source] std::io::Error),
    #[error("the container helper took longer than {0:?}")]
    Timeout(Duration),
    #[error("waiting for the container helper")]
    Wait(#[source] std::io::Error),
    /// The helper's own error: the last line it wrote.
    #[error("{0}")]
    Helper(String),
    #[error("unexpected helper output {line:?}")]
    Output {
        line: String,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Clone, Debug)]
pub struct Containers {
    exe: PathBuf,
    root: PathBuf,
}

impl Containers {
    /// `exe`: this executable (the helper is `exe __container`).
    pub fn new(exe: PathBuf, root: &Path) -> Containers {
        Containers {
            exe,
            root: root.to_path_buf(),
        }
    }

    /// This executable (the helpers re-execute it).
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    async fn call(&self, verb: Verb, stdin: Option<Vec<u8>>) -> Result<String, ContainersError> {
        let cmd = container::helper_command_with(&self.exe, &self.root, &verb);
        let mut child = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .spawn()
            .map_err(ContainersError::Spawn)?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin is piped for run");
            pipe.write_all(&input)
                .await
                .map_err(ContainersError::WriteSpec)?;
        }
        let out = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| ContainersError::Timeout(HELPER_TIMEOUT))?
            .map_err(ContainersError::Wait)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            let line = err.trim().lines().last().unwrap_or("").trim();
            let line = line.strip_prefix("error: ").unwrap_or(line);
            Err(ContainersError::Helper(line.to_string()))
        }
    }

    /// Creates and starts a container; its init pid.
    pub async fn run(&self, spec: &ContainerSpec) -> Result<i32, ContainersError> {
        let json = serde_json::to_vec(spec).expect("specs serialize");
        let line = self.call(Verb::Run, Some(json)).await?;
        parse::<RunOutput>(line).map(|o| o.pid)
    }

    pub async fn state(&self, id: &str) -> Result<ContainerState, ContainersError> {
        parse(self.call(Verb::State { id: id.into() }, None).await?)
    }

    pub async fn list(&self) -> Result<Vec<ContainerState>, ContainersError> {
        parse(self.call(Verb::List, None).await?)
    }

    pub async fn kill(&self, id: &str, signal: &str) -> Result<(), ContainersError> {
        let verb = Verb::Kill {
            id: id.into(),
            signal: signal.into(),
            all: true,
        };
        self.call(verb, None).await.map(|_| ())
    }

    /// Removes the container (killing what still runs); a missing one is fine.
    pub async fn remove(&self, id: &str) -> Result<(), ContainersError> {
        let verb = Verb::Delete {
            id: id.into(),
            force: true,
        };
        match self.call(verb, None).await {
            Ok(_) => Ok(()),
            Err(ContainersError::Helper(e)) if e.contains("does not exist") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The helper's one line of JSON.
fn parse<T: serde::de::DeserializeOwned>(line: String) -> Result<T, ContainersError> {
    serde_json::from_str(&line).map_err(|source| ContainersError::Output { line, source })
}
