//! `omnicloud`: parse the command line and dispatch. Nothing else lives here.

use std::process::ExitCode;

use clap::Parser;
use omnicloud::cli::{Cli, Command};

fn main() -> ExitCode {
    // As PID 1 (a worker VM's or USB stick's /init) there are no arguments to parse.
    if std::process::id() == 1 {
        return omnicloud::appliance::init_main(omnicloud::appliance::InitArgs {
            dry_run: false,
            cmdline: None,
        });
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Node(flags) => omnicloud::run_node(flags),
        Command::Init(args) => omnicloud::appliance::init_main(args),
        other => omnicloud::cli::run(other),
    }
}
