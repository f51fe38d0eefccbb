//! `warroom bench …`: benchmarks that print numbers.

use clap::Subcommand;

use super::{CommandResult, Exit, Failure};

/// Benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Lock contention benchmark and correctness checker.
    Lock,
}

/// Runs a benchmark command.
pub fn run(cmd: BenchCommand) -> CommandResult {
    match cmd {
        BenchCommand::Lock => Err(Failure::msg(Exit::Failed, "bench lock: being written")),
    }
}
