//! The one error type of the converter, [`CodecError`], and its stable codes.
//!
//! Every variant carries only owned strings and numbers, so the type is `Clone`
//! and one failure can be handed to every request waiting on the same
//! conversion. The [`CodecError::code`] strings are part of the HTTP API and
//! must not change; the messages are for people and say what to do.

use std::time::Duration;

/// Why a conversion (or a sample encoding) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A parameter (output rate, channel count, sample option) is out of range.
    /// The message lists the allowed values.
    #[error("bad parameter: {0}")]
    BadParameter(String),

    /// The input is none of the accepted formats (see `detect`), or holds no
    /// audio stream opusgate decodes (Ogg with only Speex, WebM without Opus).
    #[error("unsupported format: {0}")]
    UnsupportedFormat(String),

    /// The input is an accepted format but broken: a bad OpusHead, an Ogg page
    /// that fails its CRC, a corrupt WebM element or WAV header, a packet the
    /// decoder rejects, ...
    #[error("invalid stream: {0}")]
    InvalidStream(String),

    /// The stream stops before its end: no end-of-stream page, or the last
    /// page or packet is cut off. Lenient conversion decodes the intact part.
    #[error("truncated stream: {0}")]
    TruncatedStream(String),

    /// The OpusHead names a channel mapping family this converter does not
    /// decode (only families 0 and 1 are supported).
    #[error(
        "unsupported channel mapping: family {family} with {channels} channels; \
         only family 0 (mono/stereo) and family 1 (1 to 8 channels in Vorbis order) are supported"
    )]
    UnsupportedChannelMapping {
        /// The mapping family from the OpusHead.
        family: u8,
        /// The channel count from the OpusHead.
        channels: u8,
    },

    /// The audio is longer than the configured limit. `found_ms` is a lower
    /// bound when the input was refused before it was read to the end.
    #[error(
        "audio too long: the stream holds {}{} of audio, the limit is {}",
        if *at_least { "at least " } else { "" },
        fmt_ms(*found_ms),
        fmt_ms(*limit_ms)
    )]
    AudioTooLong {
        /// Duration found (at least this much when `at_least`), in milliseconds.
        found_ms: u64,
        /// Whether `found_ms` is only a lower bound (refused early).
        at_least: bool,
        /// The configured limit in milliseconds.
        limit_ms: u64,
    },

    /// The deadline given in the options passed before the conversion finished.
    #[error("conversion timed out after {} (deadline reached); try a shorter file or retry later", fmt_ms(*elapsed_ms))]
    ConversionTimeout {
        /// Time spent in the conversion before it gave up, in milliseconds.
        elapsed_ms: u64,
    },

    /// libopus failed in a way the input cannot explain (for example it could
    /// not allocate an encoder). Not expected in practice.
    #[error("internal codec error: {0}")]
    Internal(String),
}

impl CodecError {
    /// The stable machine-readable code of this error, used as the HTTP error
    /// code: `bad_parameter`, `unsupported_format`, `invalid_stream`,
    /// `truncated_stream`, `unsupported_channel_mapping`, `audio_too_long`,
    /// `conversion_timeout` or `internal` (the same code as every other bug
    /// has in the HTTP API).
    pub fn code(&self) -> &'static str {
        match self {
            CodecError::BadParameter(_) => "bad_parameter",
            CodecError::UnsupportedFormat(_) => "unsupported_format",
            CodecError::InvalidStream(_) => "invalid_stream",
            CodecError::TruncatedStream(_) => "truncated_stream",
            CodecError::UnsupportedChannelMapping { .. } => "unsupported_channel_mapping",
            CodecError::AudioTooLong { .. } => "audio_too_long",
            CodecError::ConversionTimeout { .. } => "conversion_timeout",
            CodecError::Internal(_) => "internal",
        }
    }

    /// Builds [`CodecError::AudioTooLong`] from sample counts at 48 kHz.
    /// The duration found is rounded up to the millisecond, so that audio
    /// one sample over a limit in whole milliseconds reads as longer.
    pub(crate) fn too_long(found_48k: u64, at_least: bool, limit: Duration) -> CodecError {
        CodecError::AudioTooLong {
            found_ms: found_48k.div_ceil(48),
            at_least,
            limit_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// Formats milliseconds as `1 h 02 min 03.400 s`, `2 min 05.020 s` or
/// `3.250 s`: always to the millisecond, so that two different durations
/// never print the same.
fn fmt_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let millis = ms % 1000;
    if h > 0 {
        format!("{h} h {m:02} min {s:02}.{millis:03} s")
    } else if m > 0 {
        format!("{m} min {s:02}.{millis:03} s")
    } else {
        format!("{secs}.{millis:03} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        assert_eq!(
            CodecError::BadParameter(String::new()).code(),
            "bad_parameter"
        );
        assert_eq!(
            CodecError::UnsupportedChannelMapping {
                family: 2,
                channels: 4
            }
            .code(),
            "unsupported_channel_mapping"
        );
        assert_eq!(
            CodecError::ConversionTimeout { elapsed_ms: 5 }.code(),
            "conversion_timeout"
        );
    }

    #[test]
    fn too_long_message_is_readable() {
        let e = CodecError::too_long(12 * 3600 * 48000, true, Duration::from_secs(600));
        let msg = e.to_string();
        assert!(
            msg.contains("holds at least 12 h 00 min 00.000 s of audio"),
            "{msg}"
        );
        assert!(msg.contains("limit is 10 min 00.000 s"), "{msg}");
        assert_eq!(fmt_ms(3250), "3.250 s");
        assert_eq!(fmt_ms(3_723_400), "1 h 02 min 03.400 s");
    }

    #[test]
    fn one_sample_over_the_limit_reads_as_longer() {
        let msg = CodecError::too_long(60 * 48_000 + 1, false, Duration::from_secs(60)).to_string();
        assert!(
            msg.contains("holds 1 min 00.001 s of audio, the limit is 1 min 00.000 s"),
            "{msg}"
        );
    }
}
