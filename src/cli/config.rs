//! `warroom config check [FILE]`: validates the console configuration the
//! way playbooks are validated (every problem as file:line:col).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{CommandResult, Exit, Failure};

/// `warroom config` subcommands.
#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file (default: config/warroom.yaml).
    Check(CheckArgs),
}

/// `warroom config check` arguments.
#[derive(Args)]
pub struct CheckArgs {
    /// The file to check.
    #[arg(default_value = super::console::DEFAULT_CONFIG)]
    file: PathBuf,
}

/// Runs a `warroom config` subcommand.
pub fn run(command: ConfigCommand) -> CommandResult {
    match command {
        ConfigCommand::Check(args) => {
            let settings = warroom::console::config::load(&args.file)
                .map_err(|e| Failure::msg(Exit::Invalid, e))?;
            println!(
                "{}: valid (exporter {}, prometheus {}, poll {} ms, errors line {}/min, {} \
                 read-only and {} typed-confirmation contexts)",
                args.file.display(),
                settings
                    .exporter
                    .as_deref()
                    .map_or("none".into(), warroom::redact::redact_text),
                settings
                    .prometheus
                    .as_deref()
                    .map_or("none".into(), warroom::redact::redact_text),
                settings.poll_ms,
                settings.error_threshold,
                settings.read_only_contexts.len(),
                settings.typed_contexts.len()
            );
            Ok(Exit::Done)
        }
    }
}
