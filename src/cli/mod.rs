//! Command line: the subcommands of the `opusgate` binary and their dispatch.

pub mod convert;
pub mod log_writer;
pub mod request_line;
pub mod sample;
pub mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// opusgate: Ogg Opus to WAV, converted once and served from cache.
#[derive(Debug, Parser)]
#[command(name = "opusgate", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What the binary does; with no subcommand it serves HTTP.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve(serve::ServeArgs),
    /// Convert Ogg Opus files to WAV, on all cores.
    Convert(convert::ConvertArgs),
    /// Drive a running server with simultaneous uploads and report the figures.
    Loadtest(crate::loadtest::LoadtestArgs),
    /// Write a synthetic speech-like Ogg Opus clip, to try the service or make fixtures.
    Sample(sample::SampleArgs),
}

/// Parses the command line and runs the chosen subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Convert(args)) => convert::run(args),
        Some(Command::Sample(args)) => sample::run(args),
        Some(Command::Serve(args)) => serve::run(args),
        Some(Command::Loadtest(args)) => crate::loadtest::run(args),
        None => serve::run(serve::ServeArgs::default()),
    }
}
