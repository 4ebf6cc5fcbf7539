//! Inputs and expected outputs: speech-like clips from the project's sample
//! encoder, the WAV a fresh conversion gives, WAV reading and writing, a
//! synthetic music signal, and sample comparison.

use std::path::Path;

use opusgate::codec::{convert, encode_sample, ConvertOptions, SampleOptions};

/// A speech-like Ogg Opus clip from the project's sample encoder (16 kHz
/// mono, the real client's shape); distinct seeds give distinct clips.
pub fn clip(seconds: f64, seed: u64) -> Vec<u8> {
    encode_sample(&SampleOptions {
        seconds,
        seed,
        ..SampleOptions::default()
    })
    .expect("sample clip")
}

/// The WAV the server must answer for `upload` at the default 16 kHz mono.
pub fn fresh_wav(upload: &[u8]) -> Vec<u8> {
    convert(upload, &ConvertOptions::default())
        .expect("a fresh conversion of a good clip")
        .wav
}

/// Frames per channel, rate and channels of a 16-bit integer WAV body.
pub fn wav_info(body: &[u8]) -> (u64, u32, u16) {
    let reader = hound::WavReader::new(std::io::Cursor::new(body)).expect("a WAV body");
    let spec = reader.spec();
    assert_eq!(spec.bits_per_sample, 16);
    assert_eq!(spec.sample_format, hound::SampleFormat::Int);
    (
        u64::from(reader.duration()),
        spec.sample_rate,
        spec.channels,
    )
}

/// A decoded WAV file.
#[derive(Debug, Clone, PartialEq)]
pub struct Wav {
    pub rate: u32,
    pub channels: u16,
    pub samples: Vec<i16>,
}

impl Wav {
    /// Frames (samples per channel).
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

/// Conversion options for `rate` and `channels`, the rest default.
pub fn options(rate: u32, channels: u8) -> ConvertOptions {
    ConvertOptions {
        rate,
        channels,
        ..ConvertOptions::default()
    }
}

/// Converts `bytes` with the library at `rate` and `channels` and parses the
/// WAV.
pub fn to_wav(bytes: &[u8], rate: u32, channels: u8) -> Wav {
    parse_wav(
        &convert(bytes, &options(rate, channels))
            .expect("convert")
            .wav,
    )
}

/// Converts a file with the library at `rate` and `channels`, checking the
/// WAV's format and length against what the converter reported.
pub fn ours(path: &Path, rate: u32, channels: u8) -> Wav {
    let input = std::fs::read(path).expect("fixture");
    let out = convert(&input, &options(rate, channels))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let wav = parse_wav(&out.wav);
    assert_eq!((wav.rate, wav.channels), (rate, u16::from(channels)));
    assert_eq!(wav.frames() as u64, out.frames);
    wav
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
