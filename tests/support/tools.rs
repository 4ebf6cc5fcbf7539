//! The reference tools from Debian, which CI installs and the tests using
//! them require: opusenc and ffmpeg's libopus to make fixtures, opusdec and
//! ffmpeg to decode them independently.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::clips::{parse_wav, write_wav, Wav};

/// Fails the test with a clear message unless `tool` runs.
pub fn require_tool(tool: &str) {
    let arg = if tool == "ffmpeg" {
        "-version"
    } else {
        "--version"
    };
    let ok = Command::new(tool)
        .arg(arg)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "`{tool}` is required by this test but cannot be run; install it \
         (apt-get install opus-tools ffmpeg) -- .ci/run does"
    );
}

/// Runs a command, failing the test with its stderr unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `opusdec --rate R --no-dither` of a file.
pub fn opusdec(input: &Path, rate: u32) -> Wav {
    let out = input.with_extension(format!("opusdec{rate}.wav"));
    run(Command::new("opusdec")
        .args(["--quiet", "--no-dither", "--rate", &rate.to_string()])
        .arg(input)
        .arg(&out));
    parse_wav(&std::fs::read(&out).expect("opusdec output"))
}

/// Frames ffmpeg decodes from a file when resampling to `rate`.
pub fn ffmpeg_frames(input: &Path, rate: u32) -> usize {
    let out = run(Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(input)
        .args(["-ac", "1", "-ar", &rate.to_string(), "-f", "s16le", "-"]));
    out.stdout.len() / 2
}

/// Writes `samples` as a WAV input and encodes it with opusenc `args`.
pub fn opusenc(
    dir: &Path,
    name: &str,
    rate: u32,
    ch: u16,
    samples: &[i16],
    args: &[&str],
) -> PathBuf {
    let (wav, out) = wav_input(dir, name, rate, ch, samples);
    run(Command::new("opusenc")
        .arg("--quiet")
        .args(args)
        .arg(&wav)
        .arg(&out));
    out
}

/// Writes `samples` as a WAV input and encodes it with ffmpeg's libopus.
pub fn ffmpeg_enc(
    dir: &Path,
    name: &str,
    rate: u32,
    ch: u16,
    samples: &[i16],
    args: &[&str],
) -> PathBuf {
    let (wav, out) = wav_input(dir, name, rate, ch, samples);
    run(Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(&wav)
        .args(["-c:a", "libopus"])
        .args(args)
        .arg(&out));
    out
}

/// Writes `<dir>/<name>.wav` for an encoder and names its output
/// `<dir>/<name>.opus`.
fn wav_input(dir: &Path, name: &str, rate: u32, ch: u16, samples: &[i16]) -> (PathBuf, PathBuf) {
    let wav = dir.join(format!("{name}.wav"));
    write_wav(&wav, rate, ch, samples);
    (wav, dir.join(format!("{name}.opus")))
}
