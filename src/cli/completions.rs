//! `warroom completions SHELL` and `warroom man`: what a shell and `man` need so
//! that a person at 3 a.m. can tab through commands and read the flags.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, CommandFactory, ValueEnum};

use super::{Cli, CommandResult, Exit, Failure};

/// Shells with a completion script.
#[derive(Clone, Copy, ValueEnum)]
pub enum Shell {
    /// `source <(warroom completions bash)`
    Bash,
    /// `warroom completions zsh > "${fpath[1]}/_warroom"`
    Zsh,
    /// `warroom completions fish > ~/.config/fish/completions/warroom.fish`
    Fish,
}

/// `warroom completions`.
#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell to write a completion script for.
    #[arg(value_enum)]
    shell: Shell,
}

/// `warroom man`.
#[derive(Args)]
pub struct ManArgs {
    /// Write one page per command (`warroom.1`, `warroom-run.1`, …) into this
    /// directory instead of printing `warroom.1` to standard output.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Prints the completion script for `args.shell`.
pub fn completions(args: CompletionsArgs) -> CommandResult {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "warroom", &mut out);
    write_stdout(&out)
}

/// Prints the man page, or writes every command's page into a directory.
pub fn man(args: ManArgs) -> CommandResult {
    let command = Cli::command();
    match args.dir {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut out)
                .map_err(|err| {
                    Failure::msg(Exit::Failed, format!("rendering the man page: {err}"))
                })?;
            write_stdout(&out)
        }
        Some(dir) => {
            if !dir.is_dir() {
                return Err(Failure::msg(
                    Exit::Invalid,
                    format!("{} is not a directory; create it first", dir.display()),
                ));
            }
            clap_mangen::generate_to(command, &dir).map_err(|err| {
                Failure::msg(
                    Exit::Failed,
                    format!("writing man pages into {}: {err}", dir.display()),
                )
            })?;
            println!("man pages written to {}", dir.display());
            Ok(Exit::Done)
        }
    }
}

fn write_stdout(bytes: &[u8]) -> CommandResult {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(Exit::Done),
        // `warroom completions bash | head` closes the pipe early: not an error.
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(Exit::Done),
        Err(err) => Err(Failure::msg(
            Exit::Failed,
            format!("writing to standard output: {err}"),
        )),
    }
}
