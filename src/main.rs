//! `omnicloud`: parse the command line and dispatch. Nothing else lives here.

use std::process::ExitCode;

use clap::Parser;
use omnicloud::cli::{Cli, Command};

fn main() -> ExitCode {
    // As PID 1 of a worker VM or USB stick (/init) the kernel passes no command of ours. A
    // container whose entrypoint is this binary (the toolbox image: `omnicloud workload
    // http`) is PID 1 too, with a command: that one runs.
    let parsed = Cli::try_parse();
    if std::process::id() == 1 && parsed.is_err() {
        return omnicloud::appliance::init_main(omnicloud::appliance::InitArgs {
            dry_run: false,
            cmdline: None,
        });
    }
    let cli = parsed.unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Node(flags) => omnicloud::run_node(flags),
        Command::Init(args) => omnicloud::appliance::init_main(args),
        other => omnicloud::cli::run(other),
    }
}
