//! Fixtures in every accepted non-Opus format, made during the run by the
//! independent tools (sox, ffmpeg, opusdec) from the project's speech-like
//! clips and the synthetic music, and the references they are compared
//! against: sox's resampling (`sox in -r R -c C out`, its default
//! high-quality `rate`) and ffmpeg's own decode of lossy files.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::clips::{clip, music, write_wav};
use super::tools::{require_tool, run};

/// Fails the test unless sox, ffmpeg and opusdec run.
pub fn tools() {
    for t in ["sox", "ffmpeg", "opusdec"] {
        require_tool(t);
    }
}

/// A WAV sample format as sox names it: (encoding, bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleFormat {
    U8,
    S16,
    S24,
    S32,
    F32,
    F64,
}

impl SampleFormat {
    pub const ALL: [SampleFormat; 6] = [
        SampleFormat::U8,
        SampleFormat::S16,
        SampleFormat::S24,
        SampleFormat::S32,
        SampleFormat::F32,
        SampleFormat::F64,
    ];

    fn sox_args(self) -> [&'static str; 4] {
        match self {
            SampleFormat::U8 => ["-e", "unsigned-integer", "-b", "8"],
            SampleFormat::S16 => ["-e", "signed-integer", "-b", "16"],
            SampleFormat::S24 => ["-e", "signed-integer", "-b", "24"],
            SampleFormat::S32 => ["-e", "signed-integer", "-b", "32"],
            SampleFormat::F32 => ["-e", "floating-point", "-b", "32"],
            SampleFormat::F64 => ["-e", "floating-point", "-b", "64"],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SampleFormat::U8 => "u8",
            SampleFormat::S16 => "s16",
            SampleFormat::S24 => "s24",
            SampleFormat::S32 => "s32",
            SampleFormat::F32 => "f32",
            SampleFormat::F64 => "f64",
        }
    }
}

/// A 16-bit mono WAV of speech-like audio at `rate`: the project's sample
/// clip (Ogg Opus) decoded by `opusdec` at 48 kHz, then resampled by sox.
pub fn speech_wav(dir: &Path, seconds: f64, seed: u64, rate: u32) -> PathBuf {
    let opus = dir.join(format!("speech-{seed}.opus"));
    std::fs::write(&opus, clip(seconds, seed)).expect("write clip");
    let wav48 = dir.join(format!("speech-{seed}-48000.wav"));
    if !wav48.exists() {
        run(Command::new("opusdec")
            .args(["--quiet", "--rate", "48000"])
            .arg(&opus)
            .arg(&wav48));
    }
    if rate == 48000 {
        return wav48;
    }
    let out = dir.join(format!("speech-{seed}-{rate}.wav"));
    sox(&wav48, &out, &["-r", &rate.to_string()]);
    out
}

/// A 16-bit WAV of the synthetic music at `rate` with `channels` (in WAVE
/// order; each channel has its own phases).
pub fn music_wav(dir: &Path, seconds: f64, seed: u64, rate: u32, channels: u16) -> PathBuf {
    let out = dir.join(format!("music-{seed}-{rate}-{channels}.wav"));
    let frames = (seconds * f64::from(rate)) as usize;
    write_wav(&out, rate, channels, &music(frames, rate, channels, seed));
    out
}

/// `src` rewritten by sox in sample format `format` (no dither).
pub fn as_format(src: &Path, format: SampleFormat) -> PathBuf {
    let stem = src.file_stem().and_then(|s| s.to_str()).unwrap_or("x");
    let out = src.with_file_name(format!("{stem}-{}.wav", format.name()));
    run(Command::new("sox")
        .arg("-D")
        .arg(src)
        .args(format.sox_args())
        .arg(&out));
    out
}

/// Runs `sox src <output format options> dst`.
pub fn sox(src: &Path, dst: &Path, output_args: &[&str]) {
    run(Command::new("sox").arg(src).args(output_args).arg(dst));
}

/// Encodes `src` with ffmpeg into `dst` with `args` (codec options).
pub fn ffmpeg_encode(src: &Path, dst: &Path, args: &[&str]) -> PathBuf {
    run(Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(src)
        .args(args)
        .arg(dst));
    dst.to_path_buf()
}

/// Interleaved samples of a WAV file, in full scale 1.0, with its rate and
/// channel count (any PCM or float WAV hound reads).
pub fn read_f32(path: &Path) -> (Vec<f32>, u32, u16) {
    let reader = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = reader.spec();
    let samples = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .into_samples::<f32>()
            .collect::<Result<Vec<_>, _>>()
            .expect("float samples"),
        hound::SampleFormat::Int => {
            let scale = (1u64 << (spec.bits_per_sample - 1)) as f64;
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| (f64::from(v) / scale) as f32))
                .collect::<Result<Vec<_>, _>>()
                .expect("integer samples")
        }
    };
    (samples, spec.sample_rate, spec.channels)
}

/// sox's conversion of `src` to `rate` and `channels` (its default
/// high-quality resampler; channels mixed by averaging), as 32-bit float so
/// that no dither or rounding of its own is compared.
pub fn sox_reference(src: &Path, rate: u32, channels: u16) -> Vec<f32> {
    let stem = src.file_name().and_then(|s| s.to_str()).unwrap_or("x");
    let out = src.with_file_name(format!("{stem}.sox-{rate}-{channels}.wav"));
    sox(
        src,
        &out,
        &[
            "-e",
            "floating-point",
            "-b",
            "32",
            "-r",
            &rate.to_string(),
            "-c",
            &channels.to_string(),
        ],
    );
    read_f32(&out).0
}

/// ffmpeg's decode of `src` at its own rate and channels, as a float WAV
/// next to it (path, rate, channels, frames).
pub fn ffmpeg_decode(src: &Path) -> (PathBuf, u32, u16, usize) {
    let stem = src.file_name().and_then(|s| s.to_str()).unwrap_or("x");
    let out = src.with_file_name(format!("{stem}.ffmpeg.wav"));
    ffmpeg_encode(src, &out, &["-c:a", "pcm_f32le"]);
    let (samples, rate, channels) = read_f32(&out);
    let frames = samples.len() / usize::from(channels);
    (out, rate, channels, frames)
}

/// Samples per channel of the stream as ffprobe reads its container
/// (`duration_ts` in a timebase of 1/rate, as MP4 audio tracks have).
pub fn ffprobe_duration_ts(src: &Path) -> u64 {
    let out = run(Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "a:0",
            "-show_entries",
            "stream=duration_ts",
            "-of",
            "default=noprint_wrappers=1:nokey=1",
        ])
        .arg(src));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("ffprobe duration_ts")
}

/// SNR (dB) of 16-bit interleaved `ours` against the float `reference`
/// (both of `channels`) when `ours` is shifted by `shift` frames (positive:
/// ours later), over the overlap away from the two ends.
pub fn snr_shifted(reference: &[f32], ours: &[i16], channels: usize, shift: i64) -> f64 {
    let n = (reference.len().min(ours.len()) / channels) as i64;
    let (mut sig, mut err) = (0f64, 0f64);
    for i in 8..n - 8 {
        let j = i + shift;
        if j < 0 || j >= (ours.len() / channels) as i64 {
            continue;
        }
        for c in 0..channels {
            let r = f64::from(reference[i as usize * channels + c]);
            let o = f64::from(ours[j as usize * channels + c]) / 32768.0;
            sig += r * r;
            err += (r - o) * (r - o);
        }
    }
    10.0 * (sig / err.max(1e-20)).log10()
}

/// SNR at no shift, and the shift in -3..=3 frames with the best SNR.
pub fn snr_and_best_shift(reference: &[f32], ours: &[i16], channels: usize) -> (f64, i64) {
    let at_zero = snr_shifted(reference, ours, channels, 0);
    let best = (-3..=3)
        .map(|s| (s, snr_shifted(reference, ours, channels, s)))
        .fold((0, f64::MIN), |a, b| if b.1 > a.1 { b } else { a });
    (at_zero, best.0)
}

/// A FLAC file of STREAMINFO and audio frames only (the encoder's padding
/// and comment blocks dropped), its total sample count set to `total`.
pub fn flac_claiming(flac: &[u8], total: u64) -> Vec<u8> {
    assert!(flac.starts_with(b"fLaC"));
    let mut at = 4;
    let mut out = b"fLaC".to_vec();
    loop {
        let header = flac[at];
        let len = u32::from_be_bytes([0, flac[at + 1], flac[at + 2], flac[at + 3]]) as usize;
        if header & 0x7f == 0 {
            let mut info = flac[at + 4..at + 4 + len].to_vec();
            // Bytes 13..18: 4 low bits of byte 13 and bytes 14..18 are the
            // 36-bit total sample count.
            info[13] = (info[13] & 0xf0) | ((total >> 32) as u8 & 0x0f);
            info[14..18].copy_from_slice(&(total as u32).to_be_bytes());
            out.push(0x80);
            out.extend_from_slice(&flac[at + 1..at + 4]);
            out.extend_from_slice(&info);
        }
        at += 4 + len;
        if header & 0x80 != 0 {
            break;
        }
    }
    out.extend_from_slice(&flac[at..]);
    out
}

/// An MP3 file whose Xing/Info header announces `frames` MPEG frames.
pub fn mp3_claiming(mp3: &[u8], frames: u32) -> Vec<u8> {
    let mut out = mp3.to_vec();
    let at = find(&out, b"Info")
        .or_else(|| find(&out, b"Xing"))
        .expect("an MP3 with a Xing/Info header");
    let flags = u32::from_be_bytes(out[at + 4..at + 8].try_into().expect("flags"));
    assert!(flags & 1 != 0, "the Xing header has a frame count");
    out[at + 8..at + 12].copy_from_slice(&frames.to_be_bytes());
    out
}

/// An MP4 file whose `mvhd`, `mdhd` and edit list announce `seconds`.
pub fn mp4_claiming(mp4: &[u8], seconds: u32) -> Vec<u8> {
    let mut out = mp4.to_vec();
    for kind in [b"mvhd", b"mdhd"] {
        let at = find(&out, kind).expect("a version 0 header box");
        assert_eq!(out[at + 4], 0, "version 0");
        let scale = u32::from_be_bytes(out[at + 16..at + 20].try_into().expect("timescale"));
        out[at + 20..at + 24].copy_from_slice(&(scale * seconds).to_be_bytes());
    }
    if let Some(at) = find(&out, b"elst") {
        let mvhd = find(&out, b"mvhd").expect("mvhd");
        let scale = u32::from_be_bytes(out[mvhd + 16..mvhd + 20].try_into().expect("timescale"));
        out[at + 12..at + 16].copy_from_slice(&(scale * seconds).to_be_bytes());
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The WAVE format tag of a WAV file (1 PCM, 3 float, 0xFFFE extensible)
/// and whether it starts `RF64`.
pub fn wave_format_tag(path: &Path) -> (u16, bool) {
    let bytes = std::fs::read(path).expect("fixture");
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        if id == b"fmt " {
            let tag = u16::from_le_bytes([bytes[at + 8], bytes[at + 9]]);
            return (tag, bytes.starts_with(b"RF64"));
        }
        at += 8 + size + (size & 1);
    }
    panic!("{}: no fmt chunk", path.display());
}
