//! `omnicloud completion bash|zsh|fish|...`: a completion script for the shell, generated
//! from the clap definition by clap_complete (so it never goes stale). Install with e.g.
//! `omnicloud completion bash > /etc/bash_completion.d/omnicloud`, or for one shell session
//! `source <(omnicloud completion bash)`.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;
use crate::client::ClientError;

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The command line without its hidden helpers (`__container`, `__vmm`): clap_complete
/// offers hidden subcommands, and `clap::Command` has no way to remove one, so the root is
/// put together again from the visible ones.
fn visible() -> clap::Command {
    let full = Cli::command();
    let mut root = clap::Command::new("omnicloud")
        .version(env!("CARGO_PKG_VERSION"))
        .about(full.get_about().cloned().unwrap_or_default());
    for sub in full.get_subcommands().filter(|s| !s.is_hide_set()) {
        root = root.subcommand(sub.clone());
    }
    root
}

pub fn run(args: CompletionArgs) -> Result<(), ClientError> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut visible(), "omnicloud", &mut script);
    // A closed stdout (`| head`) ends quietly.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
    Ok(())
}
