//! The owner node's side of `omnicloud exec`: which running container an exec goes to
//! ([`running_container`], the one place that maps (instance, container name) to a
//! container of this node's runtime) and the `__container exec` helper process that runs
//! the command there ([`spawn`]; the helper itself is [`crate::container::exec`], shared
//! with exec probes). The API streams the helper's stdin, stdout and stderr.
//!
//! May call: `container`, `model`, `agent::supervisor` (container ids).

use std::path::Path;

use super::containers::Containers;
use super::supervisor::container_id;
use crate::container::Status;
use crate::model::{Resource, Spec};

/// Why an exec has no container to go to (the API maps each to a status).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{instance} is not a container instance")]
    NotContainers { instance: String },
    #[error("container {name:?} is not in instance {instance}; it has: {}", have.join(", "))]
    NoSuchContainer {
        instance: String,
        name: String,
        have: Vec<String>,
    },
    #[error("container {name:?} of {instance} is not running ({why})")]
    NotRunning {
        instance: String,
        name: String,
        why: String,
    },
    #[error("starting the exec helper")]
    Spawn(#[source] std::io::Error),
}

impl ExecError {
    /// Whether the caller named something that does not exist (404) rather than something
    /// that exists but cannot take an exec now.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ExecError::NoSuchContainer { .. })
    }
}

/// A container an exec can enter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    /// Its name in the instance's spec.
    pub name: String,
    /// The runtime's container id.
    pub id: String,
    /// Its init process, in the host's pid namespace.
    pub pid: i32,
    /// Its OCI bundle (config.json: the environment the exec gets).
    pub bundle: std::path::PathBuf,
}

/// The container named `container` (the first of the spec when None, as kubectl picks
/// the default container) of `instance`, running on this node.
pub async fn running_container(
    containers: &Containers,
    instance: &Resource,
    container: Option<&str>,
) -> Result<Running, ExecError> {
    let meta = &instance.metadata;
    let ns = meta.namespace.as_deref().unwrap_or("default");
    let label = format!("{ns}/{}", meta.name);
    let spec = match &instance.spec {
        Some(Spec::Instance(s)) if !s.pod.containers.is_empty() => s,
        _ => return Err(ExecError::NotContainers { instance: label }),
    };
    let names: Vec<String> = spec.pod.containers.iter().map(|c| c.name.clone()).collect();
    let name = pick(&names, container).map_err(|name| ExecError::NoSuchContainer {
        instance: label.clone(),
        name,
        have: names.clone(),
    })?;
    // A single-container instance's runtime id is the instance's; a pod's containers
    // are members under it.
    let parent = container_id(ns, &meta.name, &meta.uid);
    let id = if crate::agent::translate::is_pod(spec) {
        crate::container::spec::member_id(&parent, &name)
    } else {
        parent
    };
    let not_running = |why: String| ExecError::NotRunning {
        instance: label.clone(),
        name: name.clone(),
        why,
    };
    let state = containers
        .state(&id)
        .await
        .map_err(|e| not_running(crate::error_chain(&e)))?;
    match (state.status, state.pid) {
        (Status::Running, Some(pid)) => Ok(Running {
            name,
            id,
            pid,
            bundle: state.bundle,
        }),
        (status, _) => Err(not_running(format!("{status:?}").to_lowercase())),
    }
}

/// The container name an exec asked for, checked against the spec's; Err(the name) when
/// the spec has no such container.
fn pick(names: &[String], wanted: Option<&str>) -> Result<String, String> {
    match wanted {
        None => names.first().cloned().ok_or_else(String::new),
        Some(w) if names.iter().any(|n| n == w) => Ok(w.to_string()),
        Some(w) => Err(w.to_string()),
    }
}

/// Starts the helper that runs `command` in `target` (`tty`: its initial columns and
/// rows); killed when dropped.
pub fn spawn(
    exe: &Path,
    target: &Running,
    tty: Option<(u16, u16)>,
    command: &[String],
) -> Result<tokio::process::Child, ExecError> {
    let cmd = crate::container::exec_command(exe, target.pid, Some(&target.bundle), tty, command);
    tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .map_err(ExecError::Spawn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_container_is_the_first_and_others_are_checked_by_name() {
        let names = vec!["web".to_string(), "sidecar".to_string()];
        assert_eq!(pick(&names, None), Ok("web".into()));
        assert_eq!(pick(&names, Some("sidecar")), Ok("sidecar".into()));
        assert_eq!(pick(&names, Some("db")), Err("db".into()));
        let e = ExecError::NoSuchContainer {
            instance: "default/web-0".into(),
            name: "db".into(),
            have: names,
        };
        assert_eq!(
            e.to_string(),
            "container \"db\" is not in instance default/web-0; it has: web, sidecar"
        );
        assert!(e.is_not_found());
    }
}
