//! `opusgate loadtest`: drives a running server, or a fleet of instances
//! (requests round robin over the `--url`s), with many simultaneous uploads,
//! checks every answer against a local conversion of the same clip, and
//! reports the original load script's figures plus percentiles, cache
//! outcomes and the servers' counters over the run, summed over the fleet.
//!
//! This module owns the arguments, the clips and the run itself; [`fleet`]
//! owns the instances and the arithmetic on their stats, [`workload`] which
//! clip each request sends, and [`report`] what is measured and printed.

pub mod fleet;
pub mod report;
pub mod workload;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::codec::{self, ConvertOptions, SampleOptions};
use fleet::Fleet;
use report::{Report, Sample};
use workload::{Mix, Workload};

/// Arguments of `opusgate loadtest`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadtestArgs {
    /// Base URL of a server instance. Repeat it (or separate URLs with
    /// commas) to load a fleet: request i goes to URL i % n, and the server
    /// figures are summed over the instances.
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:5000",
        value_delimiter = ','
    )]
    pub url: Vec<String>,
    /// API key, sent as X-API-Key.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Simultaneous clients.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Requests in all (default: one per client, as the original script did).
    #[arg(long, conflicts_with = "duration")]
    pub requests: Option<usize>,
    /// Run for this many seconds instead of a request count.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Output sample rate asked for.
    #[arg(long, default_value_t = 16_000)]
    pub rate: u32,
    /// Output channels asked for.
    #[arg(long, default_value_t = 1)]
    pub channels: u8,
    /// Ogg Opus file to send (repeatable).
    #[arg(long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Generate this many distinct clips with the sample encoder.
    #[arg(long, default_value_t = 1)]
    pub generate: usize,
    /// Length of each generated clip, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// First seed of the generated clips (default: from the clock, so a run's clips are new to the server).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Probability that a request repeats a clip already sent, else it sends a fresh one.
    #[arg(long, conflicts_with = "zipf")]
    pub repeat_ratio: Option<f64>,
    /// Pick clips by a Zipf law with this exponent (e.g. 1.0).
    #[arg(long)]
    pub zipf: Option<f64>,
    /// Send the clip as multipart field `audio_file` (as the original clients do) instead of a raw body.
    #[arg(long)]
    pub multipart: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A load-test run that could not be started or measured.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A clip could not be read, generated or converted locally.
    #[error("preparing clips: {0}")]
    Clips(String),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// The `--url`s do not name an instance.
    #[error("--url: {0}")]
    Url(String),
}

/// One clip and what the server must answer for it.
#[derive(Debug, Clone)]
pub struct Clip {
    /// The upload.
    pub upload: Bytes,
    /// SHA-256 of the WAV a correct server returns.
    pub expected_sha256: [u8; 32],
}

impl Clip {
    /// Prepares a clip: converts it locally to know the exact expected answer.
    pub fn new(upload: Vec<u8>, rate: u32, channels: u8) -> Result<Clip, LoadError> {
        let options = ConvertOptions {
            rate,
            channels,
            ..ConvertOptions::default()
        };
        let converted =
            codec::convert(&upload, &options).map_err(|e| LoadError::Clips(e.to_string()))?;
        Ok(Clip {
            upload: Bytes::from(upload),
            expected_sha256: Sha256::digest(&converted.wav).into(),
        })
    }
}

/// The clips of a run: the files given, or `generate` new ones.
pub fn prepare_clips(args: &LoadtestArgs) -> Result<Vec<Clip>, LoadError> {
    let uploads: Vec<Vec<u8>> = if args.files.is_empty() {
        let first = args.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
        (0..args.generate.max(1) as u64)
            .map(|i| {
                codec::encode_sample(&SampleOptions {
                    seconds: args.seconds,
                    seed: first.wrapping_add(i),
                    ..SampleOptions::default()
                })
                .map_err(|e| LoadError::Clips(e.to_string()))
            })
            .collect::<Result<_, _>>()?
    } else {
        args.files
            .iter()
            .map(|f| {
                std::fs::read(f).map_err(|e| LoadError::Clips(format!("{}: {e}", f.display())))
            })
            .collect::<Result<_, _>>()?
    };
    uploads
        .into_iter()
        .map(|u| Clip::new(u, args.rate, args.channels))
        .collect()
}

async fn send_one(
    client: &reqwest::Client,
    args: &LoadtestArgs,
    (instance, url): (usize, &str),
    clip: &Clip,
) -> Sample {
    let started = Instant::now();
    let mut request = client.post(url);
    if let Some(key) = &args.api_key {
        request = request.header("X-API-Key", key);
    }
    request = if args.multipart {
        let part =
            reqwest::multipart::Part::stream(clip.upload.clone()).file_name("segment_0001.ogg");
        let part = part.mime_str("audio/ogg").unwrap_or_else(|_| {
            reqwest::multipart::Part::stream(clip.upload.clone()).file_name("segment_0001.ogg")
        });
        request.multipart(reqwest::multipart::Form::new().part("audio_file", part))
    } else {
        request.body(clip.upload.clone())
    };
    let (status, cache, ok) = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let cache = response
                .headers()
                .get("x-cache")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            let ok = match response.bytes().await {
                Ok(body) => {
                    status == 200 && <[u8; 32]>::from(Sha256::digest(&body)) == clip.expected_sha256
                }
                Err(_) => false,
            };
            (status, cache, ok)
        }
        Err(_) => (0, "-".to_owned(), false),
    };
    Sample {
        status,
        cache,
        latency: started.elapsed(),
        ok,
        instance,
    }
}

/// Runs the load against the instances of `args.url` with prepared clips.
pub async fn run_load(
    args: &LoadtestArgs,
    clips: Vec<Clip>,
    progress: bool,
) -> Result<Report, LoadError> {
    let fleet = Fleet::new(&args.url).map_err(LoadError::Url)?;
    let concurrency = args.concurrency.max(1);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let mix = match (args.zipf, args.repeat_ratio) {
        (Some(s), _) => Mix::Zipf(s),
        (None, Some(p)) => Mix::Repeat(p.clamp(0.0, 1.0)),
        (None, None) => Mix::RoundRobin,
    };
    let total = match (args.requests, args.duration) {
        (Some(n), _) => Some(n),
        (None, Some(_)) => None,
        (None, None) => Some(concurrency),
    };
    let deadline = args.duration.map(|s| Duration::from_secs_f64(s.max(0.0)));
    let workload = Arc::new(Mutex::new((
        Workload::new(mix, clips.len(), args.seed.unwrap_or(0x5eed)),
        0usize,
    )));
    let clips = Arc::new(clips);
    let bar = if progress {
        let bar = total.map_or_else(ProgressBar::new_spinner, |n| ProgressBar::new(n as u64));
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} {bar:40} {pos}/{len} {per_sec} {elapsed}")
        {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let urls: Arc<Vec<String>> = Arc::new(
        fleet
            .urls
            .iter()
            .map(|u| {
                format!(
                    "{u}/api/v1/convert?rate={}&channels={}",
                    args.rate, args.channels
                )
            })
            .collect(),
    );
    let api_key = args.api_key.as_deref();
    let before = fleet::read_all(&client, &fleet, api_key).await;
    let started = Instant::now();
    let workers = (0..concurrency).map(|_| {
        let (client, args, fleet, urls, clips, workload, bar) = (
            client.clone(),
            args.clone(),
            fleet.clone(),
            Arc::clone(&urls),
            Arc::clone(&clips),
            Arc::clone(&workload),
            bar.clone(),
        );
        tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let next = {
                    let mut guard = workload.lock().unwrap_or_else(|e| e.into_inner());
                    let (workload, issued) = &mut *guard;
                    let more = total.is_none_or(|n| *issued < n)
                        && deadline.is_none_or(|d| started.elapsed() < d);
                    more.then(|| {
                        *issued += 1;
                        (fleet.instance_of(*issued - 1), workload.next_clip())
                    })
                };
                let Some((instance, index)) = next else { break };
                let target = (instance, urls[instance].as_str());
                samples.push(send_one(&client, &args, target, &clips[index]).await);
                bar.inc(1);
            }
            samples
        })
    });
    let mut samples = Vec::new();
    for worker in futures::future::join_all(workers).await {
        samples.extend(worker.unwrap_or_default());
    }
    let wall = started.elapsed();
    bar.finish_and_clear();
    let after = fleet::read_all(&client, &fleet, api_key).await;
    let stats = fleet
        .urls
        .iter()
        .zip(before.into_iter().zip(after))
        .map(|(url, (before, after))| {
            let delta = match (before, after) {
                (Ok(b), Ok(a)) => Ok(fleet::delta(&b, &a)),
                (Err(e), _) => Err(format!("before the run: {e}")),
                (_, Err(e)) => Err(format!("after the run: {e}")),
            };
            (url.clone(), delta)
        })
        .collect();
    Ok(Report::new(concurrency, wall, &samples, stats))
}

/// Runs `opusgate loadtest`: exit 0 unless a clip could not be prepared or a
/// 200 carried the wrong audio (503s and timeouts are reported, not fatal).
pub fn run(args: LoadtestArgs) -> ExitCode {
    let clips = match prepare_clips(&args) {
        Ok(clips) => clips,
        Err(e) => {
            eprintln!("opusgate loadtest: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("opusgate loadtest: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let progress = !args.json && std::io::stderr().is_terminal();
    match runtime.block_on(run_load(&args, clips, progress)) {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(json) => println!("{json}"),
                    Err(e) => eprintln!("opusgate loadtest: {e}"),
                }
            } else {
                print!("{}", report.text());
            }
            if report.wrong_bodies > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("opusgate loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LoadtestArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadtestArgs,
    }

    fn urls(argv: &[&str]) -> Vec<String> {
        let argv = std::iter::once("loadtest").chain(argv.iter().copied());
        Cli::try_parse_from(argv)
            .map(|c| c.args.url)
            .unwrap_or_default()
    }

    #[test]
    fn url_is_repeatable_and_comma_separated() {
        assert_eq!(urls(&[]), ["http://127.0.0.1:5000"]);
        assert_eq!(
            urls(&["--url", "http://a:1", "--url", "http://b:2,http://c:3"]),
            ["http://a:1", "http://b:2", "http://c:3"]
        );
    }
}
