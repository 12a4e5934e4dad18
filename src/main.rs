//! `omnicloud`: parse the command line and dispatch. Nothing else lives here.

use std::process::ExitCode;

use clap::Parser;
use omnicloud::cli::{Cli, Command};

fn main() -> ExitCode {
    // The kernel starts a worker VM's or USB stick's image as PID 1 through its `/init`
    // (this binary). A container whose entrypoint is this binary is PID 1 too, but runs as
    // `omnicloud ...` with its command (even `--version`, which clap reports as an error).
    let argv0 = std::env::args().next().unwrap_or_default();
    let as_init = std::path::Path::new(&argv0).file_name() == Some("init".as_ref());
    if std::process::id() == 1 && as_init {
        return omnicloud::appliance::init_main(omnicloud::appliance::InitArgs {
            dry_run: false,
            cmdline: None,
            config_file: None,
        });
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Node(flags) => omnicloud::run_node(flags),
        Command::Init(args) => omnicloud::appliance::init_main(args),
        other => omnicloud::cli::run(other),
    }
}
