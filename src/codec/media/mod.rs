//! Everything but Opus: WAV (8/16/24/32-bit integer, 32/64-bit float,
//! WAVE_FORMAT_EXTENSIBLE, RF64), FLAC, MP3, Ogg Vorbis, Ogg FLAC and
//! AAC-LC in MP4/M4A, decoded in process by symphonia, mixed to the output
//! channels with the Opus path's matrices, resampled by rubato, and written
//! as the same 16-bit WAV.
//!
//! - `source`: opening the bytes per format, the track, what the container
//!   announces (length, trimming);
//! - `mp4`: the MP4 edit list and durations, read directly;
//! - `decode`: the decode loop with the limits;
//! - `mix`: channel layouts to the Vorbis order the downmix matrices use;
//! - `resample`: the streamed FFT resampler, delay-free and of exact length.
//!
//! Limits before work: a length the container announces over the duration
//! limit is refused before any decoding (a 1 kB WAV whose `data` header
//! claims ten hours); the limit is enforced again on the frames decoded.
//! Memory is bounded by the output: buffers are a few packets and FFT
//! blocks, and the output buffer is sized from the announced length only as
//! far as the limit allows. Same input and options always give the same
//! bytes.

mod decode;
mod mix;
mod mp4;
mod resample;
mod source;

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use symphonia::core::audio::Channels;

use super::detect::Format;
use super::downmix::to_i16;
use super::error::CodecError;
use super::{wav, ConvertOptions, Converted};
use mix::Mixer;
use resample::{out_len, Resampler};

/// Decodes `input`, detected as `format` (any but Ogg Opus and Matroska),
/// into a complete 16-bit WAV at the rate and channels of `opts`.
/// CPU-bound and synchronous: run it on a worker thread.
pub fn convert(
    input: &[u8],
    format: Format,
    opts: &ConvertOptions,
) -> Result<Converted, CodecError> {
    opts.validate()?;
    // A decoder bug met on a hostile file must not take the worker down:
    // it is reported as a file the decoder cannot read.
    catch_unwind(AssertUnwindSafe(|| convert_inner(input, format, opts))).unwrap_or_else(|_| {
        Err(CodecError::InvalidStream(format!(
            "the {} decoder failed on this file; it is probably corrupted",
            source::name(format)
        )))
    })
}

/// The resampler's stages for `from` Hz to `to` Hz as (rate in, rate out,
/// FFT block in, FFT block out), for the benches and the documentation.
pub fn resampler_stages(
    from: u32,
    to: u32,
) -> Result<Vec<(usize, usize, usize, usize)>, CodecError> {
    Ok(Resampler::new(from, to, 1)?.stages())
}

/// Resamples mono `input` from `from` Hz to `to` Hz exactly as [`convert`]
/// does (for the benches: the resampler's share of the time).
pub fn resample_mono(input: &[f32], from: u32, to: u32) -> Result<Vec<f32>, CodecError> {
    let mut r = Resampler::new(from, to, 1)?;
    let mut out = Vec::new();
    r.push(input, &mut out)?;
    r.finish(&mut out)?;
    Ok(out)
}

fn convert_inner(
    input: &[u8],
    format: Format,
    opts: &ConvertOptions,
) -> Result<Converted, CodecError> {
    let started = Instant::now();
    let mut opened = source::open(input, format)?;
    let rate = opened.rate;
    let limit = decode::limit_frames(opts, rate);
    if let Some(claimed) = opened.claimed.filter(|&c| c > limit) {
        return Err(decode::too_long(claimed, rate, false, opts));
    }
    // Room for the announced length, as far as the limit and a generous
    // bound from the input's size allow; the buffer grows past it if needed.
    let expected = out_len(opened.claimed.unwrap_or(0).min(limit), rate, opts.rate);
    let bytes = expected.saturating_mul(2 * u64::from(opts.channels));
    let capacity = bytes.min(input.len() as u64 * 64);
    let mut pipeline = Pipeline::new(rate, opts, usize::try_from(capacity).unwrap_or(0))?;
    decode::run(&mut opened, opts, started, limit, &mut pipeline)?;
    pipeline.finish()
}

/// Mixed and resampled frames on their way into the WAV.
struct Pipeline {
    out_channels: usize,
    rate: u32,
    /// The layout the mixer was made for, and the mixer.
    layout: Option<(Channels, Mixer)>,
    resampler: Option<Resampler>,
    mixed: Vec<f32>,
    resampled: Vec<f32>,
    wav: Vec<u8>,
}

impl Pipeline {
    fn new(from: u32, opts: &ConvertOptions, capacity: usize) -> Result<Pipeline, CodecError> {
        let out_channels = usize::from(opts.channels);
        let resampler = if from == opts.rate {
            None
        } else {
            Some(Resampler::new(from, opts.rate, out_channels)?)
        };
        let mut wav = Vec::with_capacity(wav::HEADER_LEN + capacity);
        wav.resize(wav::HEADER_LEN, 0);
        Ok(Pipeline {
            out_channels,
            rate: opts.rate,
            layout: None,
            resampler,
            mixed: Vec::new(),
            resampled: Vec::new(),
            wav,
        })
    }

    /// Makes the mixer for the decoded planes' `channels` (again when a
    /// stream changes its layout midway).
    fn layout(&mut self, channels: &Channels, name: &str) -> Result<(), CodecError> {
        if self.layout.as_ref().is_none_or(|(c, _)| c != channels) {
            let mixer = Mixer::new(channels, self.out_channels, name)?;
            self.layout = Some((channels.clone(), mixer));
        }
        Ok(())
    }

    /// Takes frames `range` of the decoded `planes`.
    fn feed(&mut self, planes: &[Vec<f32>], range: Range<usize>) -> Result<(), CodecError> {
        let Some((_, mixer)) = &self.layout else {
            return Err(CodecError::Internal(
                "audio before its channel layout".into(),
            ));
        };
        self.mixed.clear();
        mixer.mix(planes, range, &mut self.mixed);
        // Float files may hold anything: NaN and infinities become silence
        // and huge values are bounded (they clip in the output anyway), so
        // that the resampler's FFT only ever sees finite numbers.
        for x in &mut self.mixed {
            *x = if x.is_finite() {
                x.clamp(-64.0, 64.0)
            } else {
                0.0
            };
        }
        match &mut self.resampler {
            None => push_i16(&mut self.wav, &self.mixed),
            Some(r) => {
                self.resampled.clear();
                r.push(&self.mixed, &mut self.resampled)?;
                push_i16(&mut self.wav, &self.resampled);
            }
        }
        Ok(())
    }

    /// Flushes the resampler and writes the WAV header.
    fn finish(mut self) -> Result<Converted, CodecError> {
        if let Some(r) = &mut self.resampler {
            self.resampled.clear();
            r.finish(&mut self.resampled)?;
            push_i16(&mut self.wav, &self.resampled);
        }
        let data = self.wav.len() - wav::HEADER_LEN;
        let frames = (data / (2 * self.out_channels)) as u64;
        let channels = self.out_channels as u8;
        let data_len = wav::data_len(frames, channels, self.rate)?;
        let mut header = Vec::with_capacity(wav::HEADER_LEN);
        wav::write_header(&mut header, self.rate, channels, data_len as u32);
        self.wav[..wav::HEADER_LEN].copy_from_slice(&header);
        Ok(Converted {
            wav: self.wav,
            frames,
            rate: self.rate,
            channels,
            repaired: None,
        })
    }
}

/// Appends float samples as 16-bit little-endian ones (rounded, clamped).
fn push_i16(out: &mut Vec<u8>, samples: &[f32]) {
    out.reserve(samples.len() * 2);
    for &s in samples {
        out.extend_from_slice(&to_i16(s).to_le_bytes());
    }
}
