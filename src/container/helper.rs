//! The helper process, `omnicloud __container VERB`: parses the verb, calls [`Runtime`] and
//! prints one line of JSON on stdout. Single-threaded until libcontainer has forked; errors
//! go back to `cli::run`, which prints them as one line on stderr and exits nonzero.
//!
//! May call: `runtime`, `spec`. Set `OMNICLOUD_CONTAINER_LOG=debug` to see libcontainer's
//! own tracing on stderr.

use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::runtime::Runtime;
use super::spec::ContainerSpec;
use super::{ContainerError, Result, RunOutput};

/// `omnicloud __container ...`
#[derive(Debug, Clone, Args)]
pub struct HelperArgs {
    /// Runtime root: state/, bundles/ and layers/ live under it.
    #[arg(long, global = true)]
    pub root: Option<PathBuf>,
    #[command(subcommand)]
    pub verb: Verb,
}

/// One helper verb; [`super::helper_command`] turns it back into a command line.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Verb {
    /// Create and start a container from a ContainerSpec (JSON on stdin); prints {"pid":N}.
    Run,
    /// Prints {"id","status","pid","bundle","created","oom_kills"}.
    State { id: String },
    /// Sends a signal to the init process (or, with --all, every process in the container).
    Kill {
        id: String,
        /// Name or number: TERM, SIGKILL, 9, ...
        #[arg(long, default_value = "TERM")]
        signal: String,
        #[arg(long)]
        all: bool,
    },
    /// Removes the container's state, cgroup, rootfs and bundle (--force: kill it first).
    Delete {
        id: String,
        #[arg(long)]
        force: bool,
    },
    /// Prints the state of every container under --root as a JSON array.
    List,
    /// Runs a command in the container whose init process is --pid (see `exec`); exits
    /// with the command's exit code. stdin carries `exec::Input` frames.
    Exec {
        #[arg(long)]
        pid: i32,
        /// The container's bundle: the command's environment comes from its config.json
        /// (else from the init process's, which a program may have overwritten).
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// A terminal (pty) in the container for the command.
        #[arg(long)]
        tty: bool,
        #[arg(long)]
        cols: Option<u16>,
        #[arg(long)]
        rows: Option<u16>,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

impl Verb {
    /// The arguments after `__container`, without `--root`.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = Vec::new();
        match self {
            Verb::Run => out.push("run".into()),
            Verb::State { id } => out.extend(["state".into(), id.into()]),
            Verb::Kill { id, signal, all } => {
                out.extend(["kill".into(), id.into(), "--signal".into(), signal.into()]);
                if *all {
                    out.push("--all".into());
                }
            }
            Verb::Delete { id, force } => {
                out.extend(["delete".into(), id.into()]);
                if *force {
                    out.push("--force".into());
                }
            }
            Verb::List => out.push("list".into()),
            Verb::Exec {
                pid,
                bundle,
                tty,
                cols,
                rows,
                command,
            } => {
                out.extend(["exec".into(), "--pid".into(), pid.to_string().into()]);
                if let Some(b) = bundle {
                    out.extend(["--bundle".into(), b.into()]);
                }
                if *tty {
                    out.push("--tty".into());
                }
                for (flag, v) in [("--cols", cols), ("--rows", rows)] {
                    if let Some(v) = v {
                        out.extend([flag.into(), v.to_string().into()]);
                    }
                }
                out.push("--".into());
                out.extend(command.iter().map(OsString::from));
            }
        }
        out
    }
}

/// Runs one verb in this (helper) process.
pub fn main(args: HelperArgs) -> Result<()> {
    if let Verb::Exec {
        pid,
        bundle,
        tty,
        cols,
        rows,
        command,
    } = &args.verb
    {
        let size = cols.zip(*rows);
        let code = super::exec::run(*pid, bundle.as_deref(), *tty, size, command);
        std::process::exit(code);
    }
    if let Ok(filter) = std::env::var("OMNICLOUD_CONTAINER_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let root = args
        .root
        .ok_or_else(|| ContainerError::Helper("--root DIR is required".into()))?;
    let runtime = Runtime::new(root);
    let line = match args.verb {
        Verb::Run => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| ContainerError::io("reading the container spec from stdin", e))?;
            let spec = parse_spec(&text)?;
            let pid = runtime.run(&spec)?;
            serde_json::to_string(&RunOutput { pid })
        }
        Verb::State { id } => serde_json::to_string(&runtime.state(&id)?),
        Verb::Kill { id, signal, all } => {
            runtime.kill(&id, &signal, all)?;
            return Ok(());
        }
        Verb::Delete { id, force } => {
            runtime.delete(&id, force)?;
            return Ok(());
        }
        Verb::List => serde_json::to_string(&runtime.list()?),
        Verb::Exec { .. } => unreachable!("handled above"),
    };
    println!("{}", line.expect("state serializes"));
    Ok(())
}

/// A ContainerSpec from JSON, naming the offending field on error.
pub fn parse_spec(text: &str) -> Result<ContainerSpec> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ContainerError::InvalidSpec(inner.to_string())
        } else {
            ContainerError::InvalidSpec(format!("{path}: {inner}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: HelperArgs,
    }

    #[test]
    fn verbs_round_trip_through_the_command_line() {
        let verbs = [
            Verb::Run,
            Verb::State { id: "a".into() },
            Verb::Kill {
                id: "a".into(),
                signal: "KILL".into(),
                all: false,
            },
            Verb::Kill {
                id: "b".into(),
                signal: "9".into(),
                all: true,
            },
            Verb::Delete {
                id: "a".into(),
                force: true,
            },
            Verb::List,
            Verb::Exec {
                pid: 42,
                bundle: Some("/r/bundles/a".into()),
                tty: true,
                cols: Some(80),
                rows: Some(24),
                command: vec!["sh".into(), "-c".into(), "echo --x".into()],
            },
        ];
        for verb in verbs {
            // `--root` first: an exec's command runs to the end of the line.
            let mut argv: Vec<OsString> = vec!["x".into(), "--root".into(), "/r".into()];
            argv.extend(verb.to_args());
            let parsed = Wrapper::try_parse_from(argv).unwrap();
            assert_eq!(parsed.args.verb, verb);
            assert_eq!(parsed.args.root, Some(PathBuf::from("/r")));
        }
        let parsed = Wrapper::try_parse_from(["x", "kill", "c1"]).unwrap();
        assert_eq!(
            parsed.args.verb,
            Verb::Kill {
                id: "c1".into(),
                signal: "TERM".into(),
                all: false
            }
        );
    }

    #[test]
    fn spec_errors_name_the_field() {
        let e = parse_spec(r#"{"id": "a", "image": {"layout": "/x"}}"#).unwrap_err();
        assert!(e.to_string().contains("image"), "{e}");
        let e = parse_spec("not json").unwrap_err();
        assert!(e.to_string().starts_with("invalid container spec"), "{e}");
    }
}
