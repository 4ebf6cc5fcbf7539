//! Every accepted format, in process against an ffmpeg subprocess: the same
//! 10 s mono speech clip (the sample encoder's, decoded at 48 kHz and
//! re-encoded by ffmpeg) as WAV 48 kHz, FLAC 44.1 kHz, MP3 44.1 kHz, Ogg
//! Vorbis 48 kHz, AAC-LC M4A 48 kHz, Ogg Opus and WebM Opus, each converted
//! to 16 kHz mono by `opusgate::codec::convert` and by
//! `ffmpeg -i in -ar 16000 -ac 1 out.wav`, interleaved, best of a few runs
//! each (the steadiest figure on a shared machine). Also the resampler's own
//! time on the decoded audio (its share of the conversion).
//!
//! Run: `cargo bench --bench formats` (ffmpeg must be installed; under a
//! minute).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use opusgate::codec::{convert, detect, encode_sample, media, ConvertOptions, SampleOptions};

/// Seconds of audio in each clip.
const SECONDS: f64 = 10.0;
/// Runs of each side per format.
const RUNS: usize = 7;

fn ffmpeg(args: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .status()
        .expect("ffmpeg must be installed");
    assert!(status.success(), "ffmpeg {args:?}");
}

/// The clips: (name, path).
fn clips(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let opus = encode_sample(&SampleOptions {
        seconds: SECONDS,
        seed: 7,
        ..SampleOptions::default()
    })
    .expect("sample clip");
    let ogg = dir.join("clip.opus");
    std::fs::write(&ogg, &opus).expect("write clip");
    let pcm = convert(
        &opus,
        &ConvertOptions {
            rate: 48000,
            ..ConvertOptions::default()
        },
    )
    .expect("decode clip");
    let wav = dir.join("clip-48k.wav");
    std::fs::write(&wav, &pcm.wav).expect("write wav");
    let w = wav.to_str().expect("utf-8 path");
    let encode = |name: &str, args: &[&str]| {
        let out = dir.join(name);
        let mut all = vec!["-i", w];
        all.extend_from_slice(args);
        all.push(out.to_str().expect("utf-8 path"));
        ffmpeg(&all);
        out
    };
    let webm = dir.join("clip.webm");
    ffmpeg(&[
        "-i",
        ogg.to_str().expect("utf-8 path"),
        "-c:a",
        "copy",
        webm.to_str().expect("utf-8 path"),
    ]);
    vec![
        ("WAV 48k s16", wav.clone()),
        (
            "FLAC 44.1k",
            encode("clip.flac", &["-ar", "44100", "-c:a", "flac"]),
        ),
        (
            "MP3 44.1k 64k",
            encode(
                "clip.mp3",
                &["-ar", "44100", "-c:a", "libmp3lame", "-b:a", "64k"],
            ),
        ),
        (
            "Vorbis 48k q4",
            encode("clip.ogg", &["-c:a", "libvorbis", "-q:a", "4"]),
        ),
        (
            "AAC M4A 48k 64k",
            encode("clip.m4a", &["-c:a", "aac", "-b:a", "64k"]),
        ),
        ("Ogg Opus 16k", ogg),
        ("WebM Opus 16k", webm),
    ]
}

fn best(times: &[Duration]) -> f64 {
    times.iter().min().map_or(f64::NAN, |d| d.as_secs_f64())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = ConvertOptions::default();
    println!(
        "10 s mono clips to 16 kHz mono, best of {RUNS} interleaved runs \
         (x real time = 10 s / time)\n"
    );
    println!(
        "| format | in process | x real time | ffmpeg subprocess | x real time | ratio | resampler |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, path) in clips(dir.path()) {
        let bytes = std::fs::read(&path).expect("clip");
        let out = dir.path().join("out.wav");
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            let t = Instant::now();
            let converted = convert(std::hint::black_box(&bytes), &opts).expect("convert");
            ours.push(t.elapsed());
            std::hint::black_box(converted);
            let t = Instant::now();
            ffmpeg(&[
                "-i",
                path.to_str().expect("utf-8 path"),
                "-ar",
                "16000",
                "-ac",
                "1",
                out.to_str().expect("utf-8 path"),
            ]);
            theirs.push(t.elapsed());
        }
        let (ours, theirs) = (best(&ours), best(&theirs));
        let resampler = resampler_time(&bytes);
        let share = match resampler {
            Some((r, plan)) => format!("{:.1} ms ({:.0}%; {plan})", r * 1e3, 100.0 * r / ours),
            None => "none (libopus decodes at 16 kHz)".to_owned(),
        };
        println!(
            "| {name} | {:.1} ms | {:.0}x | {:.1} ms | {:.0}x | {:.1}x | {share} |",
            ours * 1e3,
            SECONDS / ours,
            theirs * 1e3,
            SECONDS / theirs,
            theirs / ours,
        );
    }
}

/// Best time of the resampler alone on the clip's audio at its own rate
/// (decoded by the converter itself at that rate when it is an output rate,
/// else at 48 kHz and taken as if at the file's rate: same amount of work),
/// or `None` for Opus, which libopus decodes at the output rate; with the
/// resampler's stages.
fn resampler_time(bytes: &[u8]) -> Option<(f64, String)> {
    let format = detect(bytes).ok()?;
    if format.is_opus() {
        return None;
    }
    let rate = file_rate(bytes)?;
    let decode_rate = if rate == 44100 { 48000 } else { rate };
    let decoded = convert(
        bytes,
        &ConvertOptions {
            rate: decode_rate,
            ..ConvertOptions::default()
        },
    )
    .ok()?;
    let samples: Vec<f32> = decoded.wav[44..]
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect();
    let input = &samples[..samples.len().min((SECONDS * f64::from(rate)) as usize)];
    let stages = media::resampler_stages(rate, 16000).ok()?;
    let times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(media::resample_mono(input, rate, 16000).expect("resample"));
            t.elapsed()
        })
        .collect();
    let plan: Vec<String> = stages
        .iter()
        .map(|(a, b, fa, fb)| format!("{a}->{b} Hz, blocks {fa}/{fb}"))
        .collect();
    Some((best(&times), plan.join(" then ")))
}

/// The sample rate ffprobe reads from the file.
fn file_rate(bytes: &[u8]) -> Option<u32> {
    let dir = tempfile::tempdir().ok()?;
    let path = dir.path().join("probe");
    std::fs::write(&path, bytes).ok()?;
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "a:0",
            "-show_entries",
            "stream=sample_rate",
            "-of",
            "default=noprint_wrappers=1:nokey=1",
        ])
        .arg(&path)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}
