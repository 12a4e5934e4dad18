//! `omnicloud`: parse the command line and dispatch. Nothing else lives here.

use std::process::ExitCode;

use clap::Parser;
use omnicloud::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Node(flags) => omnicloud::run_node(flags),
        other => omnicloud::cli::run(other),
    }
}
