//! Which container and codec an upload holds, from its first bytes: never
//! from its file name or Content-Type, which clients get wrong.
//!
//! [`detect`] answers one [`Format`] per accepted kind, or
//! [`CodecError::UnsupportedFormat`] naming what the bytes look like and
//! listing what is accepted. It reads at most the first few Ogg pages' headers
//! and a few dozen bytes otherwise; whether the stream inside is whole and
//! decodable is for the demuxer of that format to find out.

use super::error::CodecError;

/// The formats opusgate decodes, as named in messages.
pub const ACCEPTED: &str = "Ogg (Opus, Vorbis, FLAC), WebM/Matroska (Opus), WAV (PCM and float, \
                            RF64), FLAC, MP3 and MP4/M4A (AAC-LC)";

/// An accepted input format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// Ogg with an Opus stream (RFC 7845): decoded by libopus.
    OggOpus,
    /// Ogg with a Vorbis stream.
    OggVorbis,
    /// Ogg with a FLAC stream (the Ogg mapping of FLAC).
    OggFlac,
    /// Matroska or WebM (EBML header); only Opus tracks are decoded.
    Matroska,
    /// RIFF/WAVE or RF64/WAVE.
    Wav,
    /// Native FLAC (`fLaC`).
    Flac,
    /// MPEG audio layer III, with or without an ID3v2 tag.
    Mp3,
    /// ISO base media (MP4, M4A, `ftyp` box), AAC-LC inside.
    Mp4,
}

impl Format {
    /// A short name for logs and messages (`ogg-opus`, `webm`, `wav`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::OggOpus => "ogg-opus",
            Format::OggVorbis => "ogg-vorbis",
            Format::OggFlac => "ogg-flac",
            Format::Matroska => "matroska",
            Format::Wav => "wav",
            Format::Flac => "flac",
            Format::Mp3 => "mp3",
            Format::Mp4 => "mp4",
        }
    }

    /// Whether the audio inside is Opus, decoded by libopus at the output
    /// rate (no resampling). Matroska counts: only its Opus tracks decode.
    pub fn is_opus(self) -> bool {
        matches!(self, Format::OggOpus | Format::Matroska)
    }
}

/// Ogg beginning-of-stream pages looked at for a known codec: a grouped Ogg
/// file (Skeleton, video, ...) opens with one BOS page per stream.
const MAX_BOS_PAGES: usize = 16;

/// Names the format of `input` from its first bytes.
pub fn detect(input: &[u8]) -> Result<Format, CodecError> {
    if input.is_empty() {
        return Err(unsupported("the upload is empty"));
    }
    if input.starts_with(b"OggS") {
        return ogg_codec(input);
    }
    if input.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        return Ok(Format::Matroska);
    }
    if (input.starts_with(b"RIFF") || input.starts_with(b"RF64"))
        && input.get(8..12) == Some(b"WAVE")
    {
        return Ok(Format::Wav);
    }
    if input.starts_with(b"fLaC") {
        return Ok(Format::Flac);
    }
    if input.get(4..8) == Some(b"ftyp") {
        return Ok(Format::Mp4);
    }
    if input.starts_with(b"ID3") || is_mp3_frame(input) {
        return Ok(Format::Mp3);
    }
    Err(unsupported(&format!(
        "the upload looks like {}",
        describe(input)
    )))
}

fn unsupported(what: &str) -> CodecError {
    CodecError::UnsupportedFormat(format!("{what}; accepted are {ACCEPTED}"))
}

/// The codec of the first recognised beginning-of-stream page.
fn ogg_codec(input: &[u8]) -> Result<Format, CodecError> {
    let mut offset = 0usize;
    let mut seen: Vec<&'static str> = Vec::new();
    for _ in 0..MAX_BOS_PAGES {
        if offset >= input.len() {
            break;
        }
        let Some(header) = input.get(offset..offset + 27) else {
            // Cut off among its first pages: the Opus demuxer says so.
            return Ok(Format::OggOpus);
        };
        if &header[..4] != b"OggS" || header[5] & 0x02 == 0 {
            break; // past the beginning-of-stream pages
        }
        let segments = usize::from(header[26]);
        let Some(table) = input.get(offset + 27..offset + 27 + segments) else {
            return Ok(Format::OggOpus);
        };
        let body = offset + 27 + segments;
        let body_len: usize = table.iter().map(|&s| usize::from(s)).sum();
        let first = input
            .get(body..input.len().min(body + body_len))
            .unwrap_or(&[]);
        match ogg_packet_codec(first) {
            Some(Ok(format)) => return Ok(format),
            Some(Err(name)) => seen.push(name),
            None => seen.push("an unknown codec"),
        }
        offset = body + body_len;
    }
    if seen.is_empty() || seen.len() == MAX_BOS_PAGES {
        // Not even one whole BOS page, or more streams than are looked at:
        // the Opus demuxer says what is wrong (cut off, bad header, too many
        // streams, ...) in its own words.
        return Ok(Format::OggOpus);
    }
    Err(unsupported(&format!(
        "the upload is Ogg holding {}, not Opus, Vorbis or FLAC",
        seen.join(", ")
    )))
}

/// The codec a BOS packet announces: `Ok` for a decoded one, `Err(name)` for
/// one recognised but not decoded, `None` when unknown.
fn ogg_packet_codec(packet: &[u8]) -> Option<Result<Format, &'static str>> {
    let known: [(&[u8], Result<Format, &'static str>); 8] = [
        (b"OpusHead", Ok(Format::OggOpus)),
        (b"\x01vorbis", Ok(Format::OggVorbis)),
        (b"\x7fFLAC", Ok(Format::OggFlac)),
        (b"Speex   ", Err("Speex")),
        (b"\x80theora", Err("Theora video")),
        (b"fishead\0", Err("a Skeleton index")),
        (b"\x80kate", Err("Kate text")),
        (b"PCM     ", Err("raw PCM")),
    ];
    known
        .into_iter()
        .find(|(magic, _)| packet.starts_with(magic))
        .map(|(_, format)| format)
}

/// An MPEG-1/2/2.5 layer III frame header at the start (no ID3 tag).
fn is_mp3_frame(input: &[u8]) -> bool {
    let [a, b, c, ..] = *input else {
        return false;
    };
    let sync = a == 0xFF && b & 0xE0 == 0xE0;
    let version_ok = (b >> 3) & 0x03 != 0x01;
    let layer_iii = (b >> 1) & 0x03 == 0x01;
    let bitrate_ok = c >> 4 != 0x0F;
    let rate_ok = (c >> 2) & 0x03 != 0x03;
    sync && version_ok && layer_iii && bitrate_ok && rate_ok
}

/// What an unaccepted upload looks like, for the 415 message.
fn describe(input: &[u8]) -> &'static str {
    let starts = |magic: &[u8]| input.starts_with(magic);
    let at = |offset: usize, magic: &[u8]| input.get(offset..offset + magic.len()) == Some(magic);
    if input.len() > 1 && input[0] == 0xFF && input[1] & 0xF6 == 0xF0 {
        "AAC in ADTS frames (not in an MP4 container)"
    } else if input.len() > 1 && input[0] == 0xFF && input[1] & 0xE0 == 0xE0 {
        "MPEG audio layer I or II"
    } else if starts(b"FORM") && (at(8, b"AIFF") || at(8, b"AIFC")) {
        "an AIFF file"
    } else if starts(b"caff") {
        "a Core Audio (CAF) file"
    } else if starts(b"#!AMR") {
        "an AMR file"
    } else if starts(&[0x30, 0x26, 0xB2, 0x75]) {
        "a Windows Media (ASF) file"
    } else if starts(b"RIFF") {
        "a RIFF file that is not WAVE (AVI, WebP, ...)"
    } else if starts(b"\x89PNG") {
        "a PNG image"
    } else if starts(&[0xFF, 0xD8, 0xFF]) {
        "a JPEG image"
    } else if starts(b"%PDF") {
        "a PDF document"
    } else if starts(b"PK\x03\x04") {
        "a ZIP archive"
    } else if starts(&[0x1F, 0x8B]) {
        "gzip-compressed data"
    } else if input.len() > 188 && input[0] == 0x47 && input[188] == 0x47 {
        "an MPEG transport stream"
    } else if starts(b"--")
        && input
            .windows(19)
            .take(256)
            .any(|w| w == b"Content-Disposition")
    {
        "a multipart form body sent as the raw upload (send the file itself, or use \
         multipart/form-data with a field named file)"
    } else if looks_like_text(input) {
        "text, not audio"
    } else {
        "none of the accepted formats (unknown binary data)"
    }
}

fn looks_like_text(input: &[u8]) -> bool {
    let head = &input[..input.len().min(512)];
    std::str::from_utf8(head).is_ok_and(|s| {
        s.chars()
            .all(|c| !c.is_control() || c.is_ascii_whitespace())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ogg_bos(packet: &[u8]) -> Vec<u8> {
        let mut page = b"OggS\0\x02".to_vec();
        page.extend_from_slice(&[0; 20]);
        page.push(1);
        page.push(packet.len() as u8);
        page.extend_from_slice(packet);
        page
    }

    #[test]
    fn names_each_accepted_format() {
        assert_eq!(detect(&ogg_bos(b"OpusHead\x01")), Ok(Format::OggOpus));
        assert_eq!(detect(&ogg_bos(b"\x01vorbis\0")), Ok(Format::OggVorbis));
        assert_eq!(detect(&ogg_bos(b"\x7fFLAC\x01")), Ok(Format::OggFlac));
        assert_eq!(detect(b"\x1A\x45\xDF\xA3\x9f"), Ok(Format::Matroska));
        assert_eq!(detect(b"RIFF\0\0\0\0WAVEfmt "), Ok(Format::Wav));
        assert_eq!(detect(b"RF64\xff\xff\xff\xffWAVEds64"), Ok(Format::Wav));
        assert_eq!(detect(b"fLaC\0\0\0\x22"), Ok(Format::Flac));
        assert_eq!(detect(b"ID3\x04\0\0\0\0\0\0"), Ok(Format::Mp3));
        assert_eq!(detect(&[0xFF, 0xFB, 0x90, 0x64]), Ok(Format::Mp3));
        assert_eq!(detect(b"\0\0\0\x20ftypM4A \0\0\0\0"), Ok(Format::Mp4));
    }

    #[test]
    fn a_grouped_ogg_file_is_named_by_its_audio_stream() {
        let mut input = ogg_bos(b"fishead\0\x03\0");
        input.extend(ogg_bos(b"OpusHead\x01"));
        assert_eq!(detect(&input), Ok(Format::OggOpus));
    }

    #[test]
    fn refusals_say_what_the_bytes_are_and_what_is_accepted() {
        let cases: [(&[u8], &str); 6] = [
            (b"", "empty"),
            (b"{\"text\": 1}", "text"),
            (b"\x89PNG\r\n\x1a\n", "PNG"),
            (b"FORM\0\0\0\0AIFF", "AIFF"),
            (&[0xFF, 0xF1, 0x50, 0x80], "ADTS"),
            (&ogg_bos(b"Speex   \x01"), "Speex"),
        ];
        for (input, what) in cases {
            let Err(CodecError::UnsupportedFormat(message)) = detect(input) else {
                panic!("{what}: not refused");
            };
            assert!(message.contains(what), "{message}");
            assert!(message.contains(ACCEPTED), "{message}");
            assert!(!message.contains("ffmpeg"), "{message}");
        }
    }
}
