//! The VM process, `omnicloud __vmm VERB`: one VM per process, as Firecracker runs one VM
//! per process, so the director's node never shares an address space with guest memory or
//! vCPU threads, and killing the process is all it takes to end the VM.
//!
//! ```text
//! omnicloud __vmm run   [--spec FILE]   (else the VmSpec JSON on stdin)
//! omnicloud __vmm check [--spec FILE]   validate only; prints {"ok":true}
//! ```
//!
//! `run` prints one JSON line on stdout as the vCPUs start
//! (`{"pid":N,"vcpus":N,"memory_mib":N,"cmdline":"..."}`) and one when the VM ends
//! (`{"exit":"poweroff","metrics":{...}}`). Exit status: 0 when the guest powered off, 3
//! when it asked for a reset (the caller decides whether to boot it again), 1 with one
//! `error: ...` line on stderr when the spec is refused, the VM cannot be built, or the
//! guest crashed. A refused spec leaves nothing behind: it is checked before anything is
//! created. The process has no other state: SIGKILL ends the VM cleanly.

use std::io::{Read, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;

use super::spec::VmSpec;
use super::vm::ExitReason;
use super::{Result, VmmError};

/// Exit status of `__vmm run` when the guest reset itself.
pub const EXIT_RESET: i32 = 3;

/// `omnicloud __vmm ...`
#[derive(Debug, Clone, Args)]
pub struct HelperArgs {
    #[command(subcommand)]
    pub verb: Verb,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Verb {
    /// Boot a VM from a VmSpec and run it until the guest powers off.
    Run {
        /// The VmSpec JSON file ("-" or absent: stdin).
        #[arg(long)]
        spec: Option<PathBuf>,
    },
    /// Validate a VmSpec against this host without creating anything.
    Check {
        #[arg(long)]
        spec: Option<PathBuf>,
    },
}

fn read_spec(path: Option<&PathBuf>) -> Result<VmSpec> {
    let text = match path {
        Some(p) if p.as_os_str() != "-" => std::fs::read_to_string(p)
            .map_err(|e| VmmError::io(format!("reading the VM spec {}", p.display()), e))?,
        _ => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| VmmError::io("reading the VM spec from stdin", e))?;
            text
        }
    };
    VmSpec::from_json(&text)
}

fn print_line(value: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

/// Runs one verb in this process.
pub fn main(args: HelperArgs) -> Result<()> {
    match args.verb {
        Verb::Check { spec } => {
            read_spec(spec.as_ref())?.validate()?;
            print_line(&json!({"ok": true}));
            Ok(())
        }
        Verb::Run { spec } => {
            let spec = read_spec(spec.as_ref())?;
            let mut vm = super::build(&spec)?;
            // Printed before the vCPUs start, so this line always comes before any serial
            // output the guest sends to stdout.
            print_line(&json!({
                "pid": std::process::id(),
                "vcpus": vm.vcpu_count(),
                "memory_mib": spec.memory_mib,
                "cmdline": vm.cmdline,
            }));
            vm.start()?;
            let reason = vm.wait();
            let metrics = vm.metrics.snapshot();
            drop(vm);
            for path in [&spec.serial_socket, &spec.agent_socket]
                .into_iter()
                .flatten()
            {
                let _ = std::fs::remove_file(path);
            }
            let mut line = serde_json::to_value(&reason).expect("exit reasons serialize");
            line["metrics"] = serde_json::to_value(metrics).expect("metrics serialize");
            print_line(&line);
            match reason {
                ExitReason::Poweroff | ExitReason::Stopped => Ok(()),
                ExitReason::Reset => std::process::exit(EXIT_RESET),
                ExitReason::Crashed(why) => Err(VmmError::GuestCrashed(why)),
                ExitReason::Failed(why) => Err(VmmError::Helper(why)),
            }
        }
    }
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
    fn verbs_parse() {
        let w = Wrapper::try_parse_from(["x", "run", "--spec", "/s.json"]).unwrap();
        assert_eq!(
            w.args.verb,
            Verb::Run {
                spec: Some("/s.json".into())
            }
        );
        let w = Wrapper::try_parse_from(["x", "check"]).unwrap();
        assert_eq!(w.args.verb, Verb::Check { spec: None });
    }

    #[test]
    fn exit_reasons_serialize_as_one_field() {
        let v = serde_json::to_value(ExitReason::Poweroff).unwrap();
        assert_eq!(v, json!({"exit": "poweroff"}));
        let v = serde_json::to_value(ExitReason::Crashed("x".into())).unwrap();
        assert_eq!(v, json!({"exit": "crashed", "reason": "x"}));
    }
}
