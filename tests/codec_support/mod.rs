//! Helpers shared by the `codec_*` integration tests: running the reference
//! tools (opusenc, opusdec, ffmpeg, which CI installs and these tests require),
//! WAV reading and writing, synthetic music, and a small Ogg page editor
//! (with its own CRC) for building broken inputs.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ogg::writing::{PacketWriteEndInfo, PacketWriter};
use opusgate::codec::{convert, ConvertOptions};

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

/// A decoded WAV file.
#[derive(Debug, Clone, PartialEq)]
pub struct Wav {
    pub rate: u32,
    pub channels: u16,
    pub samples: Vec<i16>,
}

impl Wav {
    pub fn frames(&self) -> usize {
        self.samples.len() / usize::from(self.channels)
    }
}

/// Parses WAV bytes (PCM or extensible PCM, 16-bit).
pub fn parse_wav(bytes: &[u8]) -> Wav {
    let reader = hound::WavReader::new(std::io::Cursor::new(bytes)).expect("a readable WAV file");
    let spec = reader.spec();
    assert_eq!(spec.bits_per_sample, 16, "16-bit WAV expected");
    let samples = reader
        .into_samples::<i16>()
        .collect::<Result<Vec<_>, _>>()
        .expect("WAV samples");
    Wav {
        rate: spec.sample_rate,
        channels: spec.channels,
        samples,
    }
}

/// Writes a 16-bit WAV file.
pub fn write_wav(path: &Path, rate: u32, channels: u16, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("create WAV");
    for &s in samples {
        w.write_sample(s).expect("write sample");
    }
    w.finalize().expect("finish WAV");
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

/// Converts a file with the library at `rate` and `channels`.
pub fn ours(path: &Path, rate: u32, channels: u8) -> Wav {
    let input = std::fs::read(path).expect("fixture");
    let opts = ConvertOptions {
        rate,
        channels,
        ..ConvertOptions::default()
    };
    let out = convert(&input, &opts).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let wav = parse_wav(&out.wav);
    assert_eq!((wav.rate, wav.channels), (rate, u16::from(channels)));
    assert_eq!(wav.frames() as u64, out.frames);
    wav
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
    let wav = dir.join(format!("{name}.wav"));
    write_wav(&wav, rate, ch, samples);
    let out = dir.join(format!("{name}.opus"));
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
    let wav = dir.join(format!("{name}.wav"));
    write_wav(&wav, rate, ch, samples);
    let out = dir.join(format!("{name}.opus"));
    run(Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(&wav)
        .args(["-c:a", "libopus"])
        .args(args)
        .arg(&out));
    out
}

/// A deterministic music-like signal: a few decaying plucked chords over a
/// sustained pad, interleaved for `channels` (the right channel has other
/// phases).
pub fn music(frames: usize, rate: u32, channels: u16, seed: u64) -> Vec<i16> {
    let notes = [220.0, 277.18, 329.63, 440.0, 554.37, 659.25, 146.83, 392.0];
    let mut out = Vec::with_capacity(frames * usize::from(channels));
    for i in 0..frames {
        let t = i as f64 / f64::from(rate);
        for c in 0..channels {
            let mut v = 0.0;
            for (k, f) in notes.iter().enumerate() {
                let start = ((k as u64 + seed) % 5) as f64 * 0.37;
                let age = (t - start).rem_euclid(1.85);
                let phase = f64::from(c) * 0.7 + k as f64;
                v += 0.06 * (2.0 * std::f64::consts::PI * f * t + phase).sin() * (-2.5 * age).exp();
                v += 0.015
                    * (2.0 * std::f64::consts::PI * f * 0.5 * t * (1.0 + 0.002 * (5.0 * t).sin()))
                        .sin();
            }
            out.push((v * 32767.0).round().clamp(-32768.0, 32767.0) as i16);
        }
    }
    out
}

/// Largest absolute sample difference and the SNR (dB) of `b` against `a`.
pub fn diff(a: &[i16], b: &[i16]) -> (i32, f64) {
    assert_eq!(a.len(), b.len(), "sample counts differ");
    let mut max = 0;
    let (mut sig, mut err) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let d = i32::from(x) - i32::from(y);
        max = max.max(d.abs());
        sig += f64::from(x) * f64::from(x);
        err += f64::from(d) * f64::from(d);
    }
    (max, 10.0 * (sig / err.max(1.0)).log10())
}

// ---------------------------------------------------------------- Ogg pages

/// One Ogg page, editable.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub flags: u8,
    pub granule: u64,
    pub serial: u32,
    pub sequence: u32,
    pub lacing: Vec<u8>,
    pub body: Vec<u8>,
}

/// Splits a valid Ogg file into pages.
pub fn pages(bytes: &[u8]) -> Vec<Page> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        assert_eq!(&bytes[i..i + 4], b"OggS", "page at {i}");
        let n = usize::from(bytes[i + 26]);
        let lacing = bytes[i + 27..i + 27 + n].to_vec();
        let len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
        let body_at = i + 27 + n;
        out.push(Page {
            flags: bytes[i + 5],
            granule: u64::from_le_bytes(bytes[i + 6..i + 14].try_into().expect("8 bytes")),
            serial: u32::from_le_bytes(bytes[i + 14..i + 18].try_into().expect("4 bytes")),
            sequence: u32::from_le_bytes(bytes[i + 18..i + 22].try_into().expect("4 bytes")),
            lacing,
            body: bytes[body_at..body_at + len].to_vec(),
        });
        i = body_at + len;
    }
    out
}

/// Serializes pages, computing each CRC.
pub fn write_pages(pages: &[Page]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pages {
        let start = out.len();
        out.extend_from_slice(b"OggS\0");
        out.push(p.flags);
        out.extend_from_slice(&p.granule.to_le_bytes());
        out.extend_from_slice(&p.serial.to_le_bytes());
        out.extend_from_slice(&p.sequence.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.push(u8::try_from(p.lacing.len()).expect("at most 255 segments"));
        out.extend_from_slice(&p.lacing);
        out.extend_from_slice(&p.body);
        let crc = ogg_crc(&out[start..]);
        out[start + 22..start + 26].copy_from_slice(&crc.to_le_bytes());
    }
    out
}

/// The Ogg CRC-32 (polynomial 0x04C11DB7, unreflected, init 0).
pub fn ogg_crc(data: &[u8]) -> u32 {
    let mut crc = 0u32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The packets of a single-stream Ogg file, with the granule of the page each
/// completes on, as the `ogg` crate reads them.
pub fn packets(bytes: &[u8]) -> Vec<(Vec<u8>, u64)> {
    let mut r = ogg::reading::PacketReader::new(std::io::Cursor::new(bytes));
    let mut out = Vec::new();
    while let Some(p) = r.read_packet().expect("valid Ogg") {
        let gp = p.absgp_page();
        out.push((p.data, gp));
    }
    out
}

/// How a built stream ends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The last page has the EOS flag.
    Eos,
    /// No EOS flag anywhere.
    NoEos,
}

/// Muxes header and audio packets (each with its granule) into one stream:
/// headers on their own pages, `per_page` audio packets per page.
pub fn mux(
    serial: u32,
    head: &[u8],
    tags: &[u8],
    audio: &[(Vec<u8>, u64)],
    per_page: usize,
    end: End,
) -> Vec<u8> {
    let mut w = PacketWriter::new(Vec::new());
    w.write_packet(head.to_vec(), serial, PacketWriteEndInfo::EndPage, 0)
        .expect("mux head");
    w.write_packet(tags.to_vec(), serial, PacketWriteEndInfo::EndPage, 0)
        .expect("mux tags");
    for (i, (p, gp)) in audio.iter().enumerate() {
        let last = i + 1 == audio.len();
        let info = match (last, end) {
            (true, End::Eos) => PacketWriteEndInfo::EndStream,
            (true, End::NoEos) => PacketWriteEndInfo::EndPage,
            _ if (i + 1) % per_page == 0 => PacketWriteEndInfo::EndPage,
            _ => PacketWriteEndInfo::NormalPacket,
        };
        w.write_packet(p.clone(), serial, info, *gp)
            .expect("mux audio");
    }
    w.into_inner()
}

/// An OpusHead (family 0 unless a mapping table is given).
pub fn opus_head(
    version: u8,
    channels: u8,
    pre_skip: u16,
    gain_q8: i16,
    family: u8,
    table: &[u8],
) -> Vec<u8> {
    let mut h = b"OpusHead".to_vec();
    h.extend_from_slice(&[version, channels]);
    h.extend_from_slice(&pre_skip.to_le_bytes());
    h.extend_from_slice(&48000u32.to_le_bytes());
    h.extend_from_slice(&gain_q8.to_le_bytes());
    h.push(family);
    h.extend_from_slice(table);
    h
}

/// A minimal OpusTags.
pub fn opus_tags() -> Vec<u8> {
    let mut t = b"OpusTags".to_vec();
    t.extend_from_slice(&4u32.to_le_bytes());
    t.extend_from_slice(b"test");
    t.extend_from_slice(&0u32.to_le_bytes());
    t
}

/// Replaces the OpusHead output gain of a file (first page) and fixes the CRC.
pub fn set_output_gain(bytes: &[u8], gain_q8: i16) -> Vec<u8> {
    let mut p = pages(bytes);
    assert!(p[0].body.starts_with(b"OpusHead"));
    p[0].body[16..18].copy_from_slice(&gain_q8.to_le_bytes());
    write_pages(&p)
}
