//! `opusgate serve` (the default subcommand): load the configuration, set
//! up logging, bind, and run the server until SIGINT/SIGTERM.

use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat, Overrides};
use crate::server;

/// Arguments of `opusgate serve`.
#[derive(Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// Configuration file (default: ./config.toml if it exists).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Address to bind (server.host).
    #[arg(long)]
    pub host: Option<IpAddr>,
    /// Port to bind (server.port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Directory of the on-disk cache tier (cache.dir).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// `text` or `json` (log.format).
    #[arg(long, value_parser = parse_log_format)]
    pub log_format: Option<LogFormat>,
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!(
            "`{other}` is not a log format: use `text` or `json`"
        )),
    }
}

/// Sets up tracing on standard error: level from `RUST_LOG` (default
/// `info`), text or JSON. Text is coloured only for a person watching (see
/// [`colour`]); JSON never is.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Without `Stderr`'s lock (see log_writer).
        .with_writer(super::log_writer::LogWriter::stderr());
    let colour = format == LogFormat::Text && colour();
    let installed = match format {
        LogFormat::Text => builder.with_ansi(colour).try_init(),
        LogFormat::Json => builder
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .try_init(),
    };
    // The request lines, the same bytes written directly (see request_line).
    if installed.is_ok() && !colour {
        super::request_line::install(format);
    }
}

/// Whether text logs get ANSI colour: only when standard error is a terminal,
/// `NO_COLOR` is unset or empty (<https://no-color.org>) and `TERM` is not
/// `dumb`. A log redirected to a file or a pipe has no escape codes.
fn colour() -> bool {
    std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_none_or(|term| term != "dumb")
}

/// Runs `opusgate serve`.
pub fn run(args: ServeArgs) -> ExitCode {
    let (file, required) = match &args.config {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from("config.toml"), false),
    };
    let overrides = Overrides {
        host: args.host,
        port: args.port,
        cache_dir: args.cache_dir.clone(),
        log_format: args.log_format,
    };
    let config = match Config::load(&file, required, &overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("opusgate: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log.format);
    let addr = config.bind_addr();
    if let Err(e) = config.check_exposure(&addr) {
        eprintln!("opusgate: refusing to start: {e}");
        return ExitCode::from(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Workers gather their request lines and write them on parking.
        .on_thread_park(super::log_writer::park)
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("opusgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        server::run(listener, config, server::shutdown_signal())
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "opusgate stopped with an error");
            eprintln!("opusgate: {e}");
            ExitCode::FAILURE
        }
    }
}
