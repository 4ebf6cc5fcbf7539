//! The decode loop: packets of the chosen track through symphonia's decoder,
//! the MP4 edit trimmed, the duration limit and deadline enforced as the
//! audio comes, and every kept frame handed to the [`Pipeline`] (mix,
//! resample, 16-bit WAV).
//!
//! Errors: strict conversion fails on the first unreadable packet
//! (`invalid_stream`, or `truncated_stream` where the file is cut off,
//! including a file holding fewer frames than its header announces);
//! lenient conversion keeps every frame decoded before it and stops there.

use std::time::Instant;

use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};

use super::source::{map_error, Opened};
use super::Pipeline;
use crate::codec::budget::check_deadline;
use crate::codec::error::CodecError;
use crate::codec::ConvertOptions;

/// Packets decoded between deadline checks.
const DEADLINE_EVERY: usize = 16;

/// Decodes `opened` into `pipeline`; returns the source frames kept.
pub(super) fn run(
    opened: &mut Opened<'_>,
    opts: &ConvertOptions,
    started: Instant,
    limit: u64,
    pipeline: &mut Pipeline,
) -> Result<u64, CodecError> {
    let name = opened.name;
    let mut decoder: Box<dyn AudioDecoder> = symphonia::default::get_codecs()
        .make_audio_decoder(&opened.params, &AudioDecoderOptions::default())
        .map_err(|e| map_error(e, name))?;
    let end = opened.keep.map(|k| opened.skip.saturating_add(k));
    let mut planes: Vec<Vec<f32>> = Vec::new();
    let (mut decoded, mut kept) = (0u64, 0u64);
    for packets in 0usize.. {
        if packets % DEADLINE_EVERY == 0 {
            check_deadline(opts.deadline, started)?;
        }
        if end.is_some_and(|e| decoded >= e) {
            break;
        }
        let packet = match opened.reader.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            Err(e) => {
                stop(map_error(e, name), opts.lenient, kept)?;
                break;
            }
        };
        if packet.track_id != opened.track_id {
            continue;
        }
        let buf = match decoder.decode(&packet) {
            Ok(buf) => buf,
            Err(e) => {
                stop(map_error(e, name), opts.lenient, kept)?;
                break;
            }
        };
        if buf.spec().rate() != opened.rate {
            return Err(CodecError::InvalidStream(format!(
                "the {name} file changes its sample rate midway, from {} Hz to {} Hz",
                opened.rate,
                buf.spec().rate()
            )));
        }
        pipeline.layout(buf.spec().channels(), name)?;
        let n = buf.frames() as u64;
        buf.copy_to_vecs_planar::<f32>(&mut planes);
        let first = decoded;
        decoded += n;
        // This packet's frames inside [skip, end).
        let lo = opened.skip.saturating_sub(first).min(n);
        let hi = end.map_or(n, |e| e.saturating_sub(first).min(n));
        if hi <= lo {
            continue;
        }
        let total = kept + (hi - lo);
        if total > limit {
            return Err(too_long(total, opened.rate, true, opts));
        }
        pipeline.feed(&planes, lo as usize..hi as usize)?;
        kept = total;
    }
    if opts.lenient {
        return Ok(kept);
    }
    if let Some(claimed) = opened.claimed.filter(|_| opened.claimed_exact) {
        if kept < claimed {
            return Err(CodecError::TruncatedStream(format!(
                "the {name} file holds only {kept} of the {claimed} sample frames its header \
                 announces: it is cut off or damaged"
            )));
        }
    }
    if opened.cut_off {
        return Err(CodecError::TruncatedStream(format!(
            "the {name} file is cut off: its last box is incomplete"
        )));
    }
    Ok(kept)
}

/// Whether decoding may stop with what it has (lenient, and something
/// decoded) or must fail with `error`.
fn stop(error: CodecError, lenient: bool, kept: u64) -> Result<(), CodecError> {
    if lenient && kept > 0 {
        Ok(())
    } else {
        Err(error)
    }
}

/// Frames at `rate` allowed by the duration limit.
pub(super) fn limit_frames(opts: &ConvertOptions, rate: u32) -> u64 {
    let n = opts
        .max_duration
        .as_nanos()
        .saturating_mul(u128::from(rate))
        / 1_000_000_000;
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// `audio_too_long` for `frames` at `rate`.
pub(super) fn too_long(
    frames: u64,
    rate: u32,
    at_least: bool,
    opts: &ConvertOptions,
) -> CodecError {
    let found = u128::from(frames) * 1000;
    CodecError::AudioTooLong {
        found_ms: u64::try_from(found.div_ceil(u128::from(rate.max(1)))).unwrap_or(u64::MAX),
        at_least,
        limit_ms: u64::try_from(opts.max_duration.as_millis()).unwrap_or(u64::MAX),
    }
}
