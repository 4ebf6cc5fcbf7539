//! The `opusgate` binary: parses the command line and runs the chosen subcommand.

use std::process::ExitCode;

fn main() -> ExitCode {
    opusgate::cli::main()
}
