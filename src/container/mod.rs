//! Container runtime: real OCI containers with youki's `libcontainer`, from local OCI image
//! layouts. A leaf library: sync code, no tokio, no actors.
//!
//! libcontainer forks and clones, so it must never run inside the multi-threaded node. The
//! node re-executes itself as a single-threaded helper, `omnicloud __container VERB`, built
//! with [`helper_command`]; the helper calls [`runtime::Runtime`] and prints one line of JSON
//! on stdout ([`RunOutput`], [`runtime::ContainerState`]) or one line of error on stderr with
//! a nonzero exit status.
//!
//! ```text
//! omnicloud __container run    --root DIR  < spec.json     create + start, prints {"pid":N}
//! omnicloud __container state  --root DIR ID               {"id","status","pid",...}
//! omnicloud __container kill   --root DIR ID [--signal TERM] [--all]
//! omnicloud __container delete --root DIR ID [--force]
//! omnicloud __container list   --root DIR                  [{"id","status",...}, ...]
//! ```
//!
//! `--root` (say `<data-dir>/containers`) holds `state/` (libcontainer's state, one dir per
//! container), `bundles/<id>/` (config.json, the rootfs overlay mount and its upper dir) and
//! `layers/<digest>/` (each image layer unpacked once, shared read-only by all containers).
//!
//! The container's init process is a child of the helper; when the helper exits it is
//! re-parented to the nearest child subreaper. A caller that wants exit codes makes itself
//! one ([`runtime::become_subreaper`]) and reaps with [`runtime::try_reap`].
//!
//! Files: `image` (OCI layouts, rootfs), `layer` (unpacking layers into the cache),
//! `store` (the node's image store), `registry` (pulls with oci-client: TLS, tokens,
//! mirrors, pull secrets; peers' stores; push), `import` (`image import`), `archive` (reading untrusted import
//! archives and directories), `limits` (size, ratio and entry caps), `testkit` and
//! `proptests` (hostile archives for tests), `spec` ([`spec::ContainerSpec`] and the
//! OCI runtime spec built from it), `runtime` (libcontainer calls), `helper` (the verbs),
//! `volume` (ConfigMap and Secret files written atomically, tmpfs volumes), `security` (user, capabilities,
//! read-only root), `sandbox` (the
//! `__pause` process holding a multi-container instance's network namespace).
//! May call: only the crate root's `error_chain`, `model::Subnet` (pure data) and
//! `config::RegistrySettings` (the `[registries]` settings, pure data). `registry::pull`
//! is async (oci-client) but spawns nothing: the caller's runtime runs it. Unsafe
//! code: mount/umount, mknod, setns, ioctl, prctl, waitpid (each with a `// SAFETY:` note).

pub mod archive;
pub mod exec;
pub mod helper;
pub mod image;
mod import;
pub mod layer;
pub mod limits;
pub mod network;
#[cfg(test)]
mod proptests;
pub mod registry;
pub mod runtime;
pub mod sandbox;
pub mod security;
pub mod spec;
pub mod store;
#[cfg(test)]
mod testkit;
pub mod volume;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

pub use helper::{HelperArgs, Verb};
pub use runtime::{ContainerState, Runtime, Status};
pub use spec::{BindMount, ContainerSpec, EnvVar, ImageRef, Network, Resources};

/// Everything that can go wrong in this module.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("image {reference} not found in {layout}")]
    ImageNotFound { reference: String, layout: PathBuf },
    #[error("bad image layout {layout}: {message}")]
    BadImage { layout: PathBuf, message: String },
    /// An image, layer or archive past one of the [`limits`].
    #[error("{what} {why}")]
    Limit { what: String, why: String },
    #[error("blob {digest} is corrupt: {message}")]
    Digest { digest: String, message: String },
    #[error("invalid container spec: {0}")]
    InvalidSpec(String),
    #[error("container {0} does not exist")]
    NotFound(String),
    #[error("container {0} already exists")]
    AlreadyExists(String),
    #[error("container {id} is {status}: {message}")]
    WrongStatus {
        id: String,
        status: String,
        message: String,
    },
    #[error("{what}")]
    Runtime {
        what: String,
        #[source]
        source: libcontainer::error::LibcontainerError,
    },
    #[error("building the OCI runtime spec")]
    Oci(#[from] oci_spec::OciSpecError),
    #[error("{0}")]
    Helper(String),
    #[error("network: {action}: {message}")]
    Network { action: String, message: String },
}

impl ContainerError {
    /// An I/O error with what was being done.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        ContainerError::Io {
            what: what.into(),
            source,
        }
    }

    /// The message with every source in the chain, on one line.
    pub fn one_line(&self) -> String {
        crate::error_chain(self)
    }
}

pub type Result<T, E = ContainerError> = std::result::Result<T, E>;

/// What `run` prints on success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOutput {
    /// The container's init process, in the host's pid namespace.
    pub pid: i32,
}

/// The command line that runs one helper verb: this executable (`current_exe`) with
/// `__container VERB ... --root ROOT`. stdout and stderr are piped; for [`Verb::Run`] stdin
/// is piped too (write the [`ContainerSpec`] JSON to it and close it), else it is null.
/// Works with `tokio::process::Command::from`.
pub fn helper_command(root: &Path, verb: &Verb) -> std::io::Result<Command> {
    Ok(helper_command_with(&std::env::current_exe()?, root, verb))
}

/// [`helper_command`] with an explicit `omnicloud` executable (tests, other binaries).
pub fn helper_command_with(exe: &Path, root: &Path, verb: &Verb) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg("__container");
    cmd.args(verb.to_args());
    cmd.arg("--root").arg(root);
    cmd.stdin(if matches!(verb, Verb::Run) {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// The command line of [`Verb::Exec`]: run `command` in the container whose init is
/// `pid` (its environment from `bundle`'s config.json, [`exec`]). stdin is piped (write [`exec::Input`] frames to it), stdout and
/// stderr are piped; a caller that wants neither sets them to null.
pub fn exec_command(
    exe: &Path,
    pid: i32,
    bundle: Option<&Path>,
    tty: Option<(u16, u16)>,
    command: &[String],
) -> Command {
    let verb = Verb::Exec {
        pid,
        bundle: bundle.map(Path::to_path_buf),
        tty: tty.is_some(),
        cols: tty.map(|t| t.0),
        rows: tty.map(|t| t.1),
        command: command.to_vec(),
    };
    let mut cmd = Command::new(exe);
    cmd.arg("__container").args(verb.to_args());
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_command_line() {
        let verb = Verb::Kill {
            id: "web-1".into(),
            signal: "KILL".into(),
            all: true,
        };
        let cmd = helper_command_with(Path::new("/bin/omnicloud"), Path::new("/data/c"), &verb);
        let args: Vec<_> = cmd.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(cmd.get_program(), "/bin/omnicloud");
        assert_eq!(
            args,
            [
                "__container",
                "kill",
                "web-1",
                "--signal",
                "KILL",
                "--all",
                "--root",
                "/data/c"
            ]
        );
    }

    #[test]
    fn one_line_errors_carry_their_sources() {
        let e = ContainerError::io(
            "opening /x",
            std::io::Error::new(std::io::ErrorKind::NotFound, "gone\nreally"),
        );
        assert_eq!(e.one_line(), "opening /x: gone really");
    }
}
