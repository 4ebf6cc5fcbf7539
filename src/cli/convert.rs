//! `opusgate convert`: converts Ogg Opus files (or standard input) to WAV with
//! the same converter as the service, many files in parallel on all cores,
//! with a progress bar when standard error is a terminal.
//!
//! Where each output goes: `-o OUT` (single input; `-` is standard output),
//! `--out-dir DIR` (`DIR/<input stem>.wav`; DIR and its parents are created
//! if missing), otherwise next to the input as
//! `<input stem>.wav`, or standard output for standard input. Files are written
//! to a temporary name and renamed, so a failed conversion leaves nothing.
//! Every failure is reported with its file name; the exit code is 1 if any
//! conversion failed and 2 for unusable arguments.

use std::collections::HashSet;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::codec::{self, ConvertOptions};

/// Arguments of `opusgate convert`.
#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// Ogg Opus files to convert; `-` reads standard input.
    #[arg(required = true, value_name = "IN")]
    pub inputs: Vec<PathBuf>,
    /// Output file for a single input; `-` writes standard output.
    #[arg(
        short = 'o',
        long = "output",
        value_name = "OUT",
        conflicts_with = "out_dir"
    )]
    pub output: Option<PathBuf>,
    /// Write each output to DIR/<input stem>.wav (DIR is created if missing).
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Output sample rate in Hz: 8000, 12000, 16000, 24000 or 48000.
    #[arg(long, default_value_t = 16000)]
    pub rate: u32,
    /// Output channels: 1 or 2.
    #[arg(long, default_value_t = 1)]
    pub channels: u8,
    /// Decode the intact part of cut-off streams instead of failing.
    #[arg(long)]
    pub lenient: bool,
    /// Longest accepted audio, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub max_seconds: u64,
    /// Conversions run at once (default: one per core).
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<usize>,
}

/// Where one conversion reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Stdio,
    File(PathBuf),
}

struct Job {
    input: Target,
    output: Target,
    name: String,
}

/// Runs `opusgate convert`.
pub fn run(args: ConvertArgs) -> ExitCode {
    let opts = ConvertOptions {
        rate: args.rate,
        channels: args.channels,
        max_duration: Duration::from_secs(args.max_seconds),
        lenient: args.lenient,
        deadline: None,
    };
    let jobs = match opts
        .validate()
        .map_err(|e| e.to_string())
        .and_then(|()| plan(&args))
    {
        Ok(jobs) => jobs,
        Err(msg) => {
            eprintln!("opusgate convert: {msg}");
            return ExitCode::from(2);
        }
    };
    if let Some(dir) = &args.out_dir {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("opusgate convert: cannot create {}: {e}", dir.display());
            return ExitCode::from(2);
        }
    }
    let workers = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .clamp(1, jobs.len());
    let bar = if jobs.len() > 1 && std::io::stderr().is_terminal() {
        let style = ProgressStyle::with_template(
            "{bar:40} {pos}/{len} files, {elapsed} elapsed, {eta} left",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        ProgressBar::new(jobs.len() as u64).with_style(style)
    } else {
        ProgressBar::hidden()
    };
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while let Some(job) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if let Err(msg) = convert_one(job, &opts) {
                        failed.fetch_add(1, Ordering::Relaxed);
                        bar.suspend(|| eprintln!("opusgate convert: {}: {msg}", job.name));
                    }
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish_and_clear();
    let failed = failed.into_inner();
    if jobs.len() > 1 {
        eprintln!("converted {} of {} files", jobs.len() - failed, jobs.len());
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Works out every input's output, refusing ambiguous or clashing requests.
fn plan(args: &ConvertArgs) -> Result<Vec<Job>, String> {
    if args.output.is_some() && args.inputs.len() > 1 {
        return Err("-o takes a single input; use --out-dir DIR for several".into());
    }
    let stdin_uses = args.inputs.iter().filter(|p| p.as_os_str() == "-").count();
    if stdin_uses > 1 {
        return Err("standard input (-) can be read only once".into());
    }
    let mut jobs = Vec::with_capacity(args.inputs.len());
    let mut seen = HashSet::new();
    for input in &args.inputs {
        let is_stdin = input.as_os_str() == "-";
        let stem = if is_stdin {
            "stdin".into()
        } else {
            stem_wav(input)?
        };
        let output = match (&args.output, &args.out_dir) {
            (Some(out), _) if out.as_os_str() == "-" => Target::Stdio,
            (Some(out), _) => Target::File(out.clone()),
            (None, Some(dir)) => Target::File(dir.join(stem)),
            (None, None) if is_stdin => Target::Stdio,
            (None, None) => Target::File(input.with_file_name(stem)),
        };
        if let Target::File(out) = &output {
            if !is_stdin && out == input {
                return Err(format!(
                    "{}: the output would overwrite the input; use -o or --out-dir",
                    input.display()
                ));
            }
            if !seen.insert(out.clone()) {
                return Err(format!(
                    "two inputs would both write {}; use -o or separate runs",
                    out.display()
                ));
            }
        } else if !seen.insert(PathBuf::from("-")) {
            return Err("only one conversion can write standard output".into());
        }
        let name = if is_stdin {
            "<stdin>".to_string()
        } else {
            input.display().to_string()
        };
        let input = if is_stdin {
            Target::Stdio
        } else {
            Target::File(input.clone())
        };
        jobs.push(Job {
            input,
            output,
            name,
        });
    }
    Ok(jobs)
}

/// `<file stem>.wav` of an input path.
fn stem_wav(input: &Path) -> Result<PathBuf, String> {
    let stem = input
        .file_stem()
        .ok_or_else(|| format!("{}: not a file name", input.display()))?;
    let mut name = stem.to_os_string();
    name.push(".wav");
    Ok(PathBuf::from(name))
}

/// Reads, converts and writes one input; the error is a full message.
fn convert_one(job: &Job, opts: &ConvertOptions) -> Result<(), String> {
    let data = match &job.input {
        Target::Stdio => {
            let mut buf = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut buf)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            buf
        }
        Target::File(path) => std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?,
    };
    let converted = codec::convert(&data, opts).map_err(|e| format!("{e} [{}]", e.code()))?;
    match &job.output {
        Target::Stdio => {
            let mut out = std::io::stdout().lock();
            out.write_all(&converted.wav)
                .and_then(|()| out.flush())
                .map_err(|e| format!("cannot write standard output: {e}"))
        }
        Target::File(path) => write_atomically(path, &converted.wav),
    }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut tmp_name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}
