//! `flotilla completions` and `flotilla man`: shell completions and manual
//! pages generated from the command definitions in `main.rs`, so they never
//! drift from `--help`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use clap_complete::Shell;

#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: CompletionShell,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

impl CompletionShell {
    fn shell(self) -> Shell {
        match self {
            CompletionShell::Bash => Shell::Bash,
            CompletionShell::Zsh => Shell::Zsh,
            CompletionShell::Fish => Shell::Fish,
        }
    }
}

#[derive(Args)]
pub struct ManArgs {
    /// Write flotilla.1 and one page per subcommand (flotilla-run.1, flotilla-coordinator-start.1,
    /// ...) into this directory instead of printing flotilla.1.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// Prints the completion script for `args.shell` to stdout.
pub fn completions(args: CompletionsArgs, mut command: clap::Command) -> anyhow::Result<i32> {
    let name = command.get_name().to_string();
    clap_complete::generate(
        args.shell.shell(),
        &mut command,
        name,
        &mut std::io::stdout(),
    );
    Ok(0)
}

/// Prints the top-level manual page, or writes every page into a directory.
pub fn man(args: ManArgs, command: clap::Command) -> anyhow::Result<i32> {
    match args.out_dir {
        None => {
            clap_mangen::Man::new(command).render(&mut std::io::stdout())?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
            clap_mangen::generate_to(command, &dir)
                .map_err(|e| anyhow::anyhow!("cannot write pages into {}: {e}", dir.display()))?;
            eprintln!(
                "manual pages written to {} (read one with `man {}/flotilla.1`)",
                dir.display(),
                dir.display()
            );
        }
    }
    Ok(0)
}
