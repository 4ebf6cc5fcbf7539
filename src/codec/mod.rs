//! The in-process converter: Ogg Opus bytes in, RIFF/WAVE PCM s16le bytes out,
//! exact like the reference decoder (`opusdec`), plus a synthetic sample
//! encoder.
//!
//! codec owns, in pipeline order:
//! - `page`: Ogg page framing and CRC over the in-memory input;
//! - [`mod@demux`]: links (chained streams), headers, packets, granule positions,
//!   pre-skip, end trimming (RFC 7845 section 4) and the duration limit, all
//!   before decoding;
//! - `stream` (inside demux): one logical stream's packets and granules;
//! - `budget`: the duration limit and deadline both of them spend;
//! - [`head`]: the OpusHead and packet durations from the TOC;
//! - [`decode`]: libopus decoding at the output rate (single-stream through
//!   audiopus, multistream through a small FFI wrapper), output gain;
//! - [`downmix`]: surround (Vorbis order) to stereo or mono;
//! - [`wav`]: the WAV header and sample data;
//! - [`media`]: every other format (WAV, FLAC, MP3, Ogg Vorbis/FLAC, MP4
//!   AAC-LC) through symphonia, mixed with [`downmix`]'s matrices and
//!   resampled by rubato;
//! - [`sample`] (with `synth`): a speech-like Ogg Opus clip for newcomers and
//!   tests.
//!
//! Lengths: each link yields exactly `kept - pre-skip` samples at 48 kHz
//! (`kept` from the final granule position), scaled to the output rate and
//! rounded down per link, as `opusdec` does. The pre-skip is scaled to the
//! output rate and rounded to nearest. The output buffer is allocated once
//! from that length. Same input and options always give the same bytes.

mod budget;
pub mod decode;
pub mod demux;
pub mod detect;
pub mod downmix;
pub mod error;
pub mod head;
pub mod media;
mod page;
pub mod sample;
mod stream;
mod synth;
pub mod wav;
pub mod webm;

use std::time::{Duration, Instant};

pub use demux::{demux, demux_repairing, Demuxed, Link, Repaired};
pub use detect::{detect, Format};
pub use error::CodecError;
pub use head::OpusHead;
pub use page::{crc32, write_page};
pub use sample::{encode_sample, SampleOptions};

use decode::LinkDecoder;
use head::packet_samples_48k;

/// Version of the conversion rules; bump whenever output bytes could change
/// for some input. Part of cache keys.
pub const CONVERTER_REVISION: u32 = 2;

/// Output sample rates, the ones libopus decodes to natively.
pub const SUPPORTED_RATES: [u32; 5] = [8000, 12000, 16000, 24000, 48000];

/// Output channel counts.
pub const SUPPORTED_CHANNELS: [u8; 2] = [1, 2];

/// How to convert.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    /// Output sample rate: one of [`SUPPORTED_RATES`].
    pub rate: u32,
    /// Output channels: 1 or 2.
    pub channels: u8,
    /// Longest accepted output; longer inputs fail with `audio_too_long`
    /// before anything is decoded.
    pub max_duration: Duration,
    /// Decode the intact prefix of a cut-off stream instead of failing with
    /// `truncated_stream`.
    pub lenient: bool,
    /// Give up with `conversion_timeout` once this instant passes (checked
    /// every few packets).
    pub deadline: Option<Instant>,
}

impl Default for ConvertOptions {
    /// 16 kHz mono, at most 10 minutes, strict, no deadline.
    fn default() -> Self {
        ConvertOptions {
            rate: 16000,
            channels: 1,
            max_duration: Duration::from_secs(600),
            lenient: false,
            deadline: None,
        }
    }
}

impl ConvertOptions {
    /// Checks rate, channels and the duration limit; the `bad_parameter`
    /// message lists the allowed values.
    pub fn validate(&self) -> Result<(), CodecError> {
        if !SUPPORTED_RATES.contains(&self.rate) {
            return Err(CodecError::BadParameter(format!(
                "output rate {} Hz is not supported; use one of 8000, 12000, 16000, 24000, 48000",
                self.rate
            )));
        }
        if !SUPPORTED_CHANNELS.contains(&self.channels) {
            return Err(CodecError::BadParameter(format!(
                "output channels must be 1 or 2, got {}",
                self.channels
            )));
        }
        if self.max_duration.is_zero() {
            return Err(CodecError::BadParameter(
                "the maximum duration must be more than 0".into(),
            ));
        }
        Ok(())
    }
}

/// A finished conversion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Converted {
    /// The complete WAV file (44-byte header, then s16le samples).
    pub wav: Vec<u8>,
    /// Samples per channel.
    pub frames: u64,
    /// Sample rate of `wav`.
    pub rate: u32,
    /// Channels of `wav`.
    pub channels: u8,
    /// Granule positions of an Ogg Opus input that disagreed with its
    /// packets and were decoded as ffmpeg decodes them; `None` for an
    /// intact input and for every other format.
    pub repaired: Option<Repaired>,
}

impl Converted {
    /// Duration in milliseconds, rounded down.
    pub fn duration_ms(&self) -> u64 {
        wav::frames_ms(self.frames, self.rate)
    }
}

/// Where one link's output comes from in its decoded samples at the output rate.
struct LinkPlan {
    /// Decoded frames to drop first (the pre-skip at the output rate).
    skip: u64,
    /// Frames to output.
    frames: u64,
}

impl LinkPlan {
    fn new(link: &Link<'_>, rate: u32) -> LinkPlan {
        let scale = u64::from(48_000 / rate);
        let pre_skip = u64::from(link.head.pre_skip);
        LinkPlan {
            skip: (pre_skip + scale / 2) / scale,
            frames: link.output_samples_48k() / scale,
        }
    }
}

/// Converts a whole upload (any [`Format`], detected from its bytes) into a
/// complete RIFF/WAVE PCM s16le file. CPU-bound and synchronous: run it on a
/// worker thread.
pub fn convert(input: &[u8], opts: &ConvertOptions) -> Result<Converted, CodecError> {
    opts.validate()?;
    let started = Instant::now();
    match detect(input)? {
        Format::OggOpus => {
            let (demuxed, repaired) = demux_repairing(input, opts)?;
            let converted = convert_opus(&demuxed, opts, started)?;
            Ok(Converted {
                repaired,
                ..converted
            })
        }
        Format::Matroska => convert_opus(&webm::demux(input, opts)?, opts, started),
        other => media::convert(input, other, opts),
    }
}

/// Decodes demuxed Opus links (from Ogg or Matroska) with libopus at the
/// output rate into a complete WAV file.
fn convert_opus(
    demuxed: &Demuxed<'_>,
    opts: &ConvertOptions,
    started: Instant,
) -> Result<Converted, CodecError> {
    let plans: Vec<LinkPlan> = demuxed
        .links
        .iter()
        .map(|l| LinkPlan::new(l, opts.rate))
        .collect();
    let frames = plans
        .iter()
        .try_fold(0u64, |acc, p| acc.checked_add(p.frames));
    let frames = frames.ok_or_else(|| CodecError::Internal("frame count overflow".into()))?;
    let data_len = wav::data_len(frames, opts.channels, opts.rate)?;
    let mut out = Vec::with_capacity(wav::HEADER_LEN + data_len);
    wav::write_header(&mut out, opts.rate, opts.channels, data_len as u32);
    for (index, (link, plan)) in demuxed.links.iter().zip(&plans).enumerate() {
        decode_link(link, plan, index, opts, started, &mut out)?;
    }
    if out.len() != wav::HEADER_LEN + data_len {
        return Err(CodecError::Internal(format!(
            "wrote {} bytes of samples where {data_len} were planned",
            out.len().saturating_sub(wav::HEADER_LEN)
        )));
    }
    Ok(Converted {
        wav: out,
        frames,
        rate: opts.rate,
        channels: opts.channels,
        repaired: None,
    })
}

/// Decodes one link, appending its planned frames to `out`.
fn decode_link(
    link: &Link<'_>,
    plan: &LinkPlan,
    index: usize,
    opts: &ConvertOptions,
    started: Instant,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    if plan.frames == 0 {
        return Ok(());
    }
    let mut dec = LinkDecoder::new(&link.head, opts.rate, opts.channels)?;
    let ch = usize::from(opts.channels);
    let scale = 48_000 / opts.rate;
    let mut pcm = vec![0i16; dec.max_frames() * ch];
    let (mut skip, mut remaining) = (plan.skip, plan.frames);
    for (i, packet) in link.packets.iter().enumerate() {
        if remaining == 0 {
            break;
        }
        if i % 32 == 0 {
            budget::check_deadline(opts.deadline, started)?;
        }
        let n = dec
            .decode(packet, &mut pcm)
            .map_err(|why| rejected(i, index, &why))?;
        let expected = packet_samples_48k(packet).map_or(0, |s| (s / scale) as usize);
        if n != expected {
            return Err(rejected(
                i,
                index,
                &format!("decoded {n} samples where its TOC says {expected}"),
            ));
        }
        let dropped = skip.min(n as u64);
        skip -= dropped;
        let kept = &pcm[dropped as usize * ch..n * ch];
        let take = (kept.len() / ch).min(usize::try_from(remaining).unwrap_or(usize::MAX));
        wav::push_samples(out, &kept[..take * ch]);
        remaining -= take as u64;
    }
    if remaining > 0 {
        return Err(CodecError::Internal(format!(
            "link {index} decoded {remaining} frames short of its plan"
        )));
    }
    Ok(())
}

fn rejected(packet: usize, link: usize, why: &str) -> CodecError {
    CodecError::InvalidStream(format!(
        "audio packet {} of stream {} is rejected by the Opus decoder ({why}): the file is corrupted",
        packet + 1,
        link + 1
    ))
}

/// The benchmark baseline, "pure libopus decode loop of the same packets": one
/// decoder per link set up exactly as [`convert`] does, every packet of
/// `demuxed` decoded into one reused buffer, nothing trimmed, copied or
/// written. Returns the number of frames decoded.
pub fn decode_only(demuxed: &Demuxed<'_>, rate: u32, channels: u8) -> Result<u64, CodecError> {
    let mut total = 0u64;
    for (index, link) in demuxed.links.iter().enumerate() {
        let mut dec = LinkDecoder::new(&link.head, rate, channels)?;
        let mut pcm = vec![0i16; dec.max_frames() * usize::from(channels)];
        for (i, packet) in link.packets.iter().enumerate() {
            total += dec
                .decode(packet, &mut pcm)
                .map_err(|why| rejected(i, index, &why))? as u64;
        }
    }
    Ok(total)
}
