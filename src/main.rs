//! The `warroom` binary: argument parsing and exit codes only.
//!
//! Everything the commands do lives in the library; this file and `cli/` turn
//! arguments into library calls and library errors into messages and exit codes.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
