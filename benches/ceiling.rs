//! The hot path against its honest ceiling (PERFORMANCE.md, "Hot path
//! against its ceiling"): POST memory hits of one cached 10 s clip at 50
//! connections, measured with `wrk -t2 -c50 -d10s` side by side with two bare
//! axum handlers in the same run:
//!
//! - `ceiling+sha256`: reads the upload, SHA-256s it exactly as opusgate's
//!   content address does (`Key::derive`) and answers the same 320 kB WAV;
//! - `ceiling`: the same without the hash.
//!
//! opusgate is the release binary as a child process (default settings,
//! `RUST_LOG=info`, JSON log to a file, as a deployment writes it), and once
//! more with `RUST_LOG=warn,opusgate::server=info` (no per-request log line).
//! The handlers are child processes too, on the same footing: this bench
//! binary run again with `CEILING_SERVE=sha256|bare`, each handler on its own
//! tokio runtime (2 workers). The hashing handler runs once more inside this
//! process (`ceiling+sha256, in the bench process`), as the first passes
//! measured it: there its heap, grown by the bench's own preparations, is
//! trimmed less often, which makes it faster than the same handler as a
//! server of its own (PERFORMANCE.md). Targets are alternated within each
//! round so that drift hits all alike; every round first checks that
//! opusgate answers `X-Cache: hit-memory`.
//!
//! Then the same targets with `opusgate loadtest --concurrency 50` as the
//! client instead of wrk, to compare what the two clients measure. For every
//! run the client's CPU (from this process's reaped-children times) and the
//! server's CPU (from /proc) are printed per request.
//!
//! `cargo bench --bench ceiling` (needs `wrk` on the PATH; about 5 minutes).
//! `CEILING_BASELINE=/path/to/opusgate` adds another build of opusgate (an
//! earlier commit's, say) as one more target, `RUST_LOG=info` like the first.
//! `CEILING_SECONDS` (default 10) and `CEILING_ROUNDS` (default 3) change the
//! length; `cargo bench --bench ceiling -- wrk` or `-- loadtest` runs one part.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Bytes;

use opusgate::codec::{convert, ConvertOptions, CONVERTER_REVISION};
use serde_json::Value;
use support::background::Background;
use support::clips::clip;
use support::http::header;
use support::process::BINARY;

/// The clip every request sends (fixed seed: the same bytes every run).
const SEED: u64 = 20_261_212;

/// What opusgate's default parameters hash besides the upload
/// (`Service::key_params` for rate 16000, channels 1, not lenient).
fn key_params() -> Vec<u8> {
    format!("opusgate/convert;rev={CONVERTER_REVISION};rate=16000;channels=1;lenient=false")
        .into_bytes()
}

/// Clock ticks per second of /proc's times (100 on Linux).
const TICK_S: f64 = 0.01;

/// utime + stime, and cutime + cstime (reaped children), of a process, in seconds.
fn cpu_of(pid: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // rest[0] is field 3 (state); utime is field 14, so index 11.
    if f.len() < 15 {
        return (0.0, 0.0);
    }
    ((f[11] + f[12]) * TICK_S, (f[13] + f[14]) * TICK_S)
}

/// The opusgate release binary as a child process, its log in a file.
struct Opusgate {
    child: Child,
    base: String,
}

impl Opusgate {
    fn start(binary: &Path, dir: &Path, rust_log: &str) -> Opusgate {
        std::fs::create_dir_all(dir).expect("dir");
        let log = dir.join("server.log");
        let child = Command::new(binary)
            .args(["serve", "--port", "0", "--log-format", "json"])
            .current_dir(dir)
            .env("OPUSGATE_CACHE__DIR", dir.join("store"))
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start opusgate");
        // Owned at once, so that a failed start below kills and reaps it.
        let mut server = Opusgate {
            child,
            base: String::new(),
        };
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let addr = text.lines().find_map(|line| {
                let v: Value = serde_json::from_str(line).ok()?;
                (v["message"] == "opusgate listening")
                    .then(|| v["addr"].as_str().map(str::to_owned))?
            });
            if let Some(addr) = addr {
                server.base = format!("http://{addr}");
                return server;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "opusgate did not start: {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Opusgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment variable that makes this binary a handler (`sha256` or
/// `bare`), serving the WAV at `CEILING_WAV` until its standard input closes.
const SERVE: &str = "CEILING_SERVE";

/// Runs as a handler (see [`SERVE`]): prints its base URL, serves until
/// standard input is closed.
fn serve_ceiling(mode: &str) {
    let wav = std::env::var_os("CEILING_WAV").expect("CEILING_WAV");
    let wav = Bytes::from(std::fs::read(wav).expect("read the WAV"));
    let server = Background::ceiling(wav, (mode == "sha256").then(key_params));
    println!("{}", server.base);
    // Serves until the bench drops its end of the pipe (or dies).
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    drop(server);
}

/// A handler as a child process (see [`SERVE`]).
struct Ceiling {
    child: Child,
    base: String,
}

impl Ceiling {
    fn start(mode: &str, wav: &Path) -> Ceiling {
        let mut child = Command::new(std::env::current_exe().expect("this bench binary"))
            .env(SERVE, mode)
            .env("CEILING_WAV", wav)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a handler");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("the handler's address");
        assert!(line.starts_with("http://"), "handler said {line:?}");
        Ceiling {
            child,
            base: line.trim().to_owned(),
        }
    }
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// One measured run.
#[derive(Clone, Copy, Default)]
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: f64,
    errors: f64,
    client_cpu_s: f64,
    server_cpu_s: f64,
    wall_s: f64,
}

/// One target: where it listens and whose CPU is the server's.
struct Target {
    name: &'static str,
    base: String,
    /// The server's pid (`self` for the handlers in this process).
    pid: String,
}

fn wrk_ms(text: &str) -> f64 {
    let t = text.trim();
    let (num, factor) = if let Some(n) = t.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (t, 1.0)
    };
    num.parse::<f64>().unwrap_or(f64::NAN) * factor
}

fn measure(target: &Target, client: &mut Command) -> (Run, String) {
    let (server0, _) = cpu_of(&target.pid);
    let (_, client0) = cpu_of("self");
    let started = Instant::now();
    let output = client.output().expect("run the client");
    let wall_s = started.elapsed().as_secs_f64();
    let (server1, _) = cpu_of(&target.pid);
    let (_, client1) = cpu_of("self");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "client failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let run = Run {
        client_cpu_s: client1 - client0,
        server_cpu_s: server1 - server0,
        wall_s,
        ..Run::default()
    };
    (run, text)
}

fn wrk(target: &Target, lua: &Path, seconds: u64) -> Run {
    let mut command = Command::new("wrk");
    command
        .args(["-t2", "-c50", &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(lua)
        .arg(format!("{}/api/v1/convert", target.base));
    let (mut run, text) = measure(target, &mut command);
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", n] => run.rps = n.parse().unwrap_or(0.0),
            ["50.000%", v] | ["50%", v] => run.p50_ms = wrk_ms(v),
            ["99.000%", v] | ["99%", v] => run.p99_ms = wrk_ms(v),
            [n, "requests", "in", ..] => run.requests = n.parse().unwrap_or(0.0),
            ["Non-2xx", "or", "3xx", "responses:", n] => run.errors += n.parse().unwrap_or(0.0),
            ["Socket", "errors:", ..] => run.errors += 1.0,
            _ => {}
        }
    }
    run
}

fn loadtest(target: &Target, clip: &Path, seconds: u64) -> Run {
    let mut command = Command::new(BINARY);
    command
        .args(["loadtest", "--url", &target.base, "--concurrency", "50"])
        .args(["--duration", &seconds.to_string(), "--json", "--file"])
        .arg(clip)
        .stderr(Stdio::null());
    let (mut run, text) = measure(target, &mut command);
    let v: Value = serde_json::from_str(&text).expect("loadtest JSON");
    run.rps = v["throughput_rps"].as_f64().unwrap_or(0.0);
    run.p50_ms = v["latency_ms"]["p50"].as_f64().unwrap_or(0.0);
    run.p99_ms = v["latency_ms"]["p99"].as_f64().unwrap_or(0.0);
    let requests = v["total_requests"]
        .as_f64()
        .or_else(|| v["requests"].as_f64())
        .unwrap_or(0.0);
    let success = v["success"].as_f64().unwrap_or(0.0);
    run.requests = requests;
    run.errors = requests - success;
    run
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn range(xs: &[f64]) -> (f64, f64) {
    xs.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        })
}

/// Checks that opusgate answers the clip from memory.
async fn x_cache(client: &reqwest::Client, base: &str, upload: &[u8]) -> String {
    let response = client
        .post(format!("{base}/api/v1/convert"))
        .body(upload.to_vec())
        .send()
        .await
        .expect("probe");
    assert_eq!(response.status(), 200);
    let cache = header(&response, "x-cache").to_owned();
    let _ = response.bytes().await;
    cache
}

/// Runs every target once per round, alternating, and prints the table.
fn part(
    title: &str,
    targets: &[Target],
    rounds: usize,
    probe: &dyn Fn(),
    mut run: impl FnMut(&Target) -> Run,
) {
    println!("\n### {title}\n");
    println!("| round | server | requests/s | p50 ms | p99 ms | requests | errors | client CPU ms/request | server CPU ms/request | cores busy (client + server) |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut all: Vec<Vec<Run>> = vec![Vec::new(); targets.len()];
    for round in 1..=rounds {
        for (i, target) in targets.iter().enumerate() {
            probe();
            let r = run(target);
            let per = |cpu: f64| cpu / r.requests.max(1.0) * 1000.0;
            println!(
                "| {round} | {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} | {:.3} | {:.3} | {:.2} + {:.2} |",
                target.name,
                r.rps,
                r.p50_ms,
                r.p99_ms,
                r.requests,
                r.errors,
                per(r.client_cpu_s),
                per(r.server_cpu_s),
                r.client_cpu_s / r.wall_s,
                r.server_cpu_s / r.wall_s,
            );
            all[i].push(r);
        }
    }
    println!("\n| server | requests/s median (range) | p50 ms median | p99 ms median |");
    println!("| --- | --- | --- | --- |");
    for (target, runs) in targets.iter().zip(&all) {
        let rps: Vec<f64> = runs.iter().map(|r| r.rps).collect();
        let (lo, hi) = range(&rps);
        println!(
            "| {} | {:.0} ({lo:.0}-{hi:.0}) | {:.2} | {:.2} |",
            target.name,
            median(rps.clone()),
            median(runs.iter().map(|r| r.p50_ms).collect()),
            median(runs.iter().map(|r| r.p99_ms).collect()),
        );
    }
    // Ratios of each opusgate target to each handler, round by round.
    println!("\n| ratio | per round | median (range) |");
    println!("| --- | --- | --- |");
    for (a, ta) in targets.iter().enumerate() {
        if !ta.name.starts_with("opusgate") {
            continue;
        }
        for (b, tb) in targets.iter().enumerate() {
            if tb.name.starts_with("opusgate") {
                continue;
            }
            let ratios: Vec<f64> = all[a]
                .iter()
                .zip(&all[b])
                .map(|(x, y)| x.rps / y.rps)
                .collect();
            let (lo, hi) = range(&ratios);
            let each: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
            println!(
                "| {} / {} | {} | {:.3} ({lo:.3}-{hi:.3}) |",
                ta.name,
                tb.name,
                each.join(", "),
                median(ratios.clone())
            );
        }
    }
}

fn main() {
    if let Ok(mode) = std::env::var(SERVE) {
        return serve_ceiling(&mode);
    }
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let seconds = env("CEILING_SECONDS", 10);
    let rounds = env("CEILING_ROUNDS", 3) as usize;

    let tmp = tempfile::tempdir().expect("tempdir");
    let upload = clip(10.0, SEED);
    let wav = Bytes::from(
        convert(&upload, &ConvertOptions::default())
            .expect("convert")
            .wav,
    );
    let clip_path: PathBuf = tmp.path().join("clip.opus");
    std::fs::write(&clip_path, &upload).expect("write clip");
    let lua = tmp.path().join("post.lua");
    std::fs::write(
        &lua,
        format!(
            "wrk.method = \"POST\"\n\
             wrk.headers[\"Content-Type\"] = \"audio/ogg\"\n\
             local f = assert(io.open(\"{}\", \"rb\"))\n\
             wrk.body = f:read(\"*a\")\n\
             f:close()\n",
            clip_path.display()
        ),
    )
    .expect("write post.lua");

    let binary = Path::new(BINARY);
    let info = Opusgate::start(binary, &tmp.path().join("info"), "info");
    // `opusgate::server=info` only for the "listening" line; no request lines.
    let warn = Opusgate::start(
        binary,
        &tmp.path().join("warn"),
        "warn,opusgate::server=info",
    );
    // Another build (an earlier commit's, say) measured beside this one.
    let baseline = std::env::var_os("CEILING_BASELINE")
        .map(|path| Opusgate::start(Path::new(&path), &tmp.path().join("baseline"), "info"));
    let wav_path = tmp.path().join("answer.wav");
    std::fs::write(&wav_path, &wav).expect("write the WAV");
    let hashing = Ceiling::start("sha256", &wav_path);
    let bare = Ceiling::start("bare", &wav_path);
    let in_process = Background::ceiling(wav.clone(), Some(key_params()));
    let me = std::process::id().to_string();
    let mut targets = vec![
        Target {
            name: "opusgate (RUST_LOG=info)",
            base: info.base.clone(),
            pid: info.child.id().to_string(),
        },
        Target {
            name: "ceiling+sha256",
            base: hashing.base.clone(),
            pid: hashing.child.id().to_string(),
        },
        Target {
            name: "ceiling",
            base: bare.base.clone(),
            pid: bare.child.id().to_string(),
        },
        Target {
            name: "opusgate (RUST_LOG=warn,opusgate::server=info)",
            base: warn.base.clone(),
            pid: warn.child.id().to_string(),
        },
    ];
    targets.push(Target {
        name: "ceiling+sha256, in the bench process",
        base: in_process.base.clone(),
        pid: me,
    });
    if let Some(baseline) = &baseline {
        targets.push(Target {
            name: "opusgate baseline (RUST_LOG=info)",
            base: baseline.base.clone(),
            pid: baseline.child.id().to_string(),
        });
    }
    let opusgates: Vec<&Opusgate> = [&info, &warn].into_iter().chain(&baseline).collect();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // No pooled connection: opusgate closes idle ones (header read timeout).
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    // Warm both opusgates: the first POST converts, the second must be a memory hit.
    for server in &opusgates {
        let _ = runtime.block_on(x_cache(&client, &server.base, &upload));
        let cache = runtime.block_on(x_cache(&client, &server.base, &upload));
        assert_eq!(
            cache, "hit-memory",
            "{} is not answering from memory",
            server.base
        );
    }
    let probe = || {
        for server in &opusgates {
            let cache = runtime.block_on(x_cache(&client, &server.base, &upload));
            assert_eq!(cache, "hit-memory");
        }
    };

    println!(
        "hot path against its ceiling on {} cores: upload {} bytes, WAV {} bytes, {seconds} s per run, {rounds} rounds",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        upload.len(),
        wav.len()
    );
    if want("wrk") {
        part(
            &format!("wrk -t2 -c50 -d{seconds}s --latency -s post.lua"),
            &targets,
            rounds,
            &probe,
            |t| wrk(t, &lua, seconds),
        );
    }
    if want("loadtest") {
        part(
            &format!("opusgate loadtest --concurrency 50 --duration {seconds} --file clip.opus"),
            &targets,
            rounds,
            &probe,
            |t| loadtest(t, &clip_path, seconds),
        );
    }
    probe();
}
