//! The sample encoder: a synthetic speech-like clip (see `synth`) encoded
//! with libopus (through audiopus) and muxed into Ogg with the `ogg` crate's
//! `PacketWriter`, shaped by default like the streams real clients send:
//! 16 kHz mono, VOIP application, 20 ms frames, VBR with DTX (1-3 byte packets
//! in the silences), one packet per page, about 24 kbit/s, pre-skip from the
//! encoder's lookahead (312 at 48 kHz for 16 kHz input), and an exact end
//! (the final granule position trims the padding of the last frame).

use std::borrow::Cow;

use audiopus::coder::Encoder;
use audiopus::{Application, Bitrate, Channels, SampleRate};
use ogg::writing::{PacketWriteEndInfo, PacketWriter};

use super::error::CodecError;
use super::synth::{speech_like, Rng};
use super::SUPPORTED_RATES;

/// Frame durations libopus can encode, in milliseconds.
pub const SAMPLE_FRAME_MS: [f32; 9] = [2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 120.0];

/// Longest clip [`encode_sample`] makes, in seconds (the converter's default
/// limit; a clip this long at 48 kHz stereo needs about 250 MB while encoding).
pub const MAX_SAMPLE_SECONDS: f64 = 600.0;

/// How to make a sample clip.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleOptions {
    /// Length in seconds (more than 0, at most [`MAX_SAMPLE_SECONDS`]).
    pub seconds: f64,
    /// Encoder input sample rate: one of [`SUPPORTED_RATES`].
    pub rate: u32,
    /// 1 or 2.
    pub channels: u8,
    /// Target bitrate in bits per second (6000 to 510000).
    pub bitrate: i32,
    /// Seed of the synthetic signal and of the stream serial number.
    pub seed: u64,
    /// Frame duration in milliseconds: one of [`SAMPLE_FRAME_MS`].
    pub frame_ms: f32,
    /// Variable bitrate (true) or hard CBR (false).
    pub vbr: bool,
    /// Discontinuous transmission: tiny packets during silence.
    pub dtx: bool,
    /// Packets per Ogg page (1 to 255); the real client sends 1.
    pub packets_per_page: u16,
}

impl Default for SampleOptions {
    /// 5 s, 16 kHz mono, 24 kbit/s VBR with DTX, 20 ms frames, one packet per page, seed 1.
    fn default() -> Self {
        SampleOptions {
            seconds: 5.0,
            rate: 16000,
            channels: 1,
            bitrate: 24000,
            seed: 1,
            frame_ms: 20.0,
            vbr: true,
            dtx: true,
            packets_per_page: 1,
        }
    }
}

impl SampleOptions {
    /// Checks every field, naming the allowed values on failure.
    pub fn validate(&self) -> Result<(), CodecError> {
        let bad = |m: String| Err(CodecError::BadParameter(m));
        if !(self.seconds.is_finite() && self.seconds > 0.0 && self.seconds <= MAX_SAMPLE_SECONDS) {
            return bad(format!(
                "seconds must be more than 0 and at most {MAX_SAMPLE_SECONDS}, got {}",
                self.seconds
            ));
        }
        if !SUPPORTED_RATES.contains(&self.rate) {
            return bad(format!(
                "sample rate {} Hz is not supported; use one of {SUPPORTED_RATES:?}",
                self.rate
            ));
        }
        if !(1..=2).contains(&self.channels) {
            return bad(format!("channels must be 1 or 2, got {}", self.channels));
        }
        if !(6000..=510_000).contains(&self.bitrate) {
            return bad(format!(
                "bitrate must be 6000 to 510000 bits per second, got {}",
                self.bitrate
            ));
        }
        if !SAMPLE_FRAME_MS.contains(&self.frame_ms) {
            return bad(format!(
                "frame duration {} ms is not supported; use one of {SAMPLE_FRAME_MS:?}",
                self.frame_ms
            ));
        }
        if !(1..=255).contains(&self.packets_per_page) {
            return bad(format!(
                "packets per page must be 1 to 255, got {}",
                self.packets_per_page
            ));
        }
        Ok(())
    }
}

/// The synthetic speech-like signal that [`encode_sample`] encodes: `frames`
/// frames at `rate` Hz, interleaved for `channels` (1 or 2), 16-bit. For making
/// test fixtures with other encoders. Deterministic for a given seed.
pub fn speech_pcm(frames: usize, rate: u32, channels: u8, seed: u64) -> Vec<i16> {
    speech_like(frames, rate, channels, seed)
}

fn encoder_error(e: audiopus::Error) -> CodecError {
    CodecError::Internal(format!("libopus encoder: {e}"))
}

/// Makes a complete Ogg Opus file from a synthetic speech-like signal.
/// Deterministic: the same options give the same bytes.
pub fn encode_sample(opts: &SampleOptions) -> Result<Vec<u8>, CodecError> {
    opts.validate()?;
    let rate = opts.rate;
    let ch = usize::from(opts.channels);
    let scale = u64::from(48_000 / rate);
    let frames_in = ((opts.seconds * f64::from(rate)).round() as usize).max(1);
    let frame = (f64::from(rate) * f64::from(opts.frame_ms) / 1000.0).round() as usize;

    let sample_rate =
        <SampleRate as audiopus::TryFrom<i32>>::try_from(rate as i32).map_err(encoder_error)?;
    let channels = if ch == 1 {
        Channels::Mono
    } else {
        Channels::Stereo
    };
    let mut enc = Encoder::new(sample_rate, channels, Application::Voip).map_err(encoder_error)?;
    enc.set_bitrate(Bitrate::BitsPerSecond(opts.bitrate))
        .map_err(encoder_error)?;
    enc.set_vbr(opts.vbr).map_err(encoder_error)?;
    enc.set_encoder_ctl_request(audiopus_sys::OPUS_SET_DTX_REQUEST, i32::from(opts.dtx))
        .map_err(encoder_error)?;
    let lookahead = enc.lookahead().map_err(encoder_error)? as usize;
    let pre_skip = u16::try_from(lookahead as u64 * scale)
        .map_err(|_| CodecError::Internal(format!("encoder lookahead {lookahead} too large")))?;

    // The signal, then silence: the lookahead and the padding of the last frame.
    let mut pcm = speech_like(frames_in, rate, opts.channels, opts.seed);
    let packets = (frames_in + lookahead).div_ceil(frame);
    pcm.resize(packets * frame * ch, 0);

    let serial = Rng::new(opts.seed ^ 0x5E71_A100).next_u64() as u32;
    let mut w = PacketWriter::new(Vec::with_capacity(
        opts.bitrate as usize / 8 * (opts.seconds as usize + 1),
    ));
    let io = |e: std::io::Error| CodecError::Internal(format!("Ogg muxing: {e}"));
    w.write_packet(
        opus_head(opts.channels, pre_skip, rate),
        serial,
        PacketWriteEndInfo::EndPage,
        0,
    )
    .map_err(io)?;
    w.write_packet(opus_tags(opts), serial, PacketWriteEndInfo::EndPage, 0)
        .map_err(io)?;
    let final_granule = u64::from(pre_skip) + frames_in as u64 * scale;
    let mut buf = vec![0u8; 1275 * 6 * ch];
    for (i, chunk) in pcm.chunks_exact(frame * ch).enumerate() {
        let len = enc.encode(chunk, &mut buf).map_err(encoder_error)?;
        let last = i + 1 == packets;
        let granule = if last {
            final_granule
        } else {
            (i as u64 + 1) * frame as u64 * scale
        };
        let info = if last {
            PacketWriteEndInfo::EndStream
        } else if (i + 1) % usize::from(opts.packets_per_page) == 0 {
            PacketWriteEndInfo::EndPage
        } else {
            PacketWriteEndInfo::NormalPacket
        };
        w.write_packet(Cow::Owned(buf[..len].to_vec()), serial, info, granule)
            .map_err(io)?;
    }
    Ok(w.into_inner())
}

/// An OpusHead for channel mapping family 0.
fn opus_head(channels: u8, pre_skip: u16, input_rate: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(19);
    h.extend_from_slice(b"OpusHead");
    h.extend_from_slice(&[1, channels]);
    h.extend_from_slice(&pre_skip.to_le_bytes());
    h.extend_from_slice(&input_rate.to_le_bytes());
    h.extend_from_slice(&0i16.to_le_bytes());
    h.push(0);
    h
}

/// An OpusTags header naming this encoder and its settings.
fn opus_tags(opts: &SampleOptions) -> Vec<u8> {
    let vendor = b"opusgate sample";
    let comment = format!(
        "ENCODER=opusgate sample seed={} rate={} channels={} bitrate={} frame_ms={}",
        opts.seed, opts.rate, opts.channels, opts.bitrate, opts.frame_ms
    );
    let mut t = Vec::new();
    t.extend_from_slice(b"OpusTags");
    t.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    t.extend_from_slice(vendor);
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(&(comment.len() as u32).to_le_bytes());
    t.extend_from_slice(comment.as_bytes());
    t
}
