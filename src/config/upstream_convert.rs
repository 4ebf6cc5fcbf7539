//! `upstream.convert`: which uploads proxy mode's `/v1/audio/transcriptions`
//! and `/v1/audio/translations` convert to 16 kHz mono WAV before
//! forwarding them, by the format [`crate::codec::detect`] finds in their
//! bytes. (`/api/v1/translate_audio` always sends WAV: the backend's chat
//! completions take it as `input_audio`.)

use serde::{Deserialize, Serialize};

use crate::codec::Format;

/// `upstream.convert`: `"all"`, `"opus"` or `"none"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamConvert {
    /// Every accepted format is converted, so that a backend that takes
    /// only WAV takes anything; an upload no format is detected in is
    /// refused (415 `unsupported_format`), never forwarded.
    #[default]
    All,
    /// Only Opus (Ogg Opus, and WebM/Matroska, which is decoded only when it
    /// holds Opus) is converted; the other accepted formats are forwarded as
    /// they came, for a backend that takes them; an upload no format is
    /// detected in is refused (415 `unsupported_format`).
    Opus,
    /// Nothing is converted or even looked at: every upload is forwarded as
    /// it came, with its file name and content type.
    None,
}

impl UpstreamConvert {
    /// Whether an upload of `format` is converted to WAV before it is
    /// forwarded (otherwise it is forwarded as it came).
    pub fn converts(self, format: Format) -> bool {
        match self {
            UpstreamConvert::All => true,
            UpstreamConvert::Opus => matches!(format, Format::OggOpus | Format::Matroska),
            UpstreamConvert::None => false,
        }
    }

    /// Whether uploads are looked at at all ([`crate::codec::detect`]);
    /// when not, every upload is forwarded as it came.
    pub fn detects(self) -> bool {
        self != UpstreamConvert::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_converts_its_formats() {
        let all = [
            Format::OggOpus,
            Format::OggVorbis,
            Format::OggFlac,
            Format::Matroska,
            Format::Wav,
            Format::Flac,
            Format::Mp3,
            Format::Mp4,
        ];
        for format in all {
            assert!(UpstreamConvert::All.converts(format), "{format:?}");
            assert!(!UpstreamConvert::None.converts(format), "{format:?}");
            assert_eq!(
                UpstreamConvert::Opus.converts(format),
                format == Format::OggOpus || format == Format::Matroska,
                "{format:?}"
            );
        }
        assert_eq!(UpstreamConvert::default(), UpstreamConvert::All);
        assert!(!UpstreamConvert::None.detects());
        assert!(UpstreamConvert::Opus.detects());
    }
}
