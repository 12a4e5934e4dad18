//! `omnicloud`: parse the command line and dispatch. Nothing else lives here.

use std::process::ExitCode;

use clap::Parser;
use omnicloud::cli::{Cli, Command};

fn main() -> ExitCode {
    // The kernel starts a worker VM's or USB stick's /init as PID 1 with no arguments (a
    // container's entrypoint may be PID 1 too, but runs a subcommand).
    let argv: Vec<String> = std::env::args().collect();
    if std::process::id() == 1 && (argv.len() == 1 || argv[0] == "/init") {
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
