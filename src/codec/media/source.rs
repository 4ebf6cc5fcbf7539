//! Opening an upload with symphonia: the in-memory byte source (with the
//! header patches that let symphonia's WAV reader read RF64), the format
//! reader of each detected [`Format`], the audio track, and what the
//! container says of its length and of the samples to trim.
//!
//! What is taken from the container, before any decoding:
//!
//! | format | length announced | trimming |
//! |---|---|---|
//! | WAV / RF64 | `data` size (or `ds64`) / block align | none |
//! | FLAC | STREAMINFO total samples (0: unknown) | none |
//! | MP3 | Xing/Info or VBRI frame count | LAME delay + padding (symphonia) |
//! | Ogg Vorbis / FLAC | last granule position (symphonia) | granules (symphonia) |
//! | MP4 / M4A | first edit, else `mdhd`, else `mehd` | first edit (`elst`), here |
//!
//! ID3v2 tags at the start of an MP3, and ID3v1 and APEv2 tags at its end,
//! are cut off before symphonia reads it, so that no tag byte is ever taken
//! for a frame.

use std::io::{Read, Seek, SeekFrom};

use symphonia::core::codecs::audio::AudioCodecParameters;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream, MediaSourceStreamOptions};
use symphonia::default::formats::{FlacReader, IsoMp4Reader, MpaReader, OggReader, WavReader};

use super::mix::MAX_CHANNELS;
use super::mp4;
use crate::codec::detect::Format;
use crate::codec::error::CodecError;

/// Lowest and highest input sample rates accepted.
pub(super) const RATES: std::ops::RangeInclusive<u32> = 1000..=384_000;

/// An opened upload, ready to decode.
pub(super) struct Opened<'a> {
    /// The format reader, positioned at the first packet.
    pub reader: Box<dyn FormatReader + 'a>,
    /// The audio track decoded.
    pub track_id: u32,
    /// Its codec parameters.
    pub params: AudioCodecParameters,
    /// Its sample rate.
    pub rate: u32,
    /// Frames (after trimming) the container announces, if it does.
    pub claimed: Option<u64>,
    /// Whether `claimed` is exact, so that fewer decoded frames mean the file
    /// is cut off or damaged (all but MP4).
    pub claimed_exact: bool,
    /// The file's last box is incomplete (MP4 only): it is cut off.
    pub cut_off: bool,
    /// Frames to drop at the start and keep after that (MP4 edit list).
    pub skip: u64,
    /// Frames to keep after `skip`, when the container says.
    pub keep: Option<u64>,
    /// The format's name for messages ("WAV", "MP3", ...).
    pub name: &'static str,
}

/// Opens `input` (of the detected `format`) and picks its audio track.
pub(super) fn open(input: &[u8], format: Format) -> Result<Opened<'_>, CodecError> {
    let name = name(format);
    let mut claimed = None;
    let mut claimed_exact = true;
    let reader: Box<dyn FormatReader + '_> = match format {
        Format::Wav => {
            let scan = scan_wav(input);
            match scan.channels {
                Some(0) => {
                    return Err(CodecError::InvalidStream(
                        "the WAV file's format chunk says it has 0 channels".into(),
                    ))
                }
                Some(n) if usize::from(n) > MAX_CHANNELS => {
                    return Err(CodecError::UnsupportedFormat(format!(
                        "the WAV file has {n} audio channels; 1 to {MAX_CHANNELS} are accepted"
                    )))
                }
                _ => {}
            }
            claimed = scan.frames;
            Box::new(
                WavReader::try_new(stream(input, scan.patches, true), opts())
                    .map_err(|e| header_error(e, name))?,
            )
        }
        Format::Flac => Box::new(
            FlacReader::try_new(stream(input, Vec::new(), true), opts())
                .map_err(|e| header_error(e, name))?,
        ),
        Format::Mp3 => {
            // Not seekable: symphonia then reads no bitrate estimate of the
            // length into the track, which it would trim the audio to.
            let frames = strip_mp3_tags(input);
            Box::new(
                MpaReader::try_new(stream(frames, Vec::new(), false), opts())
                    .map_err(|e| header_error(e, name))?,
            )
        }
        Format::OggVorbis | Format::OggFlac => Box::new(
            OggReader::try_new(stream(input, Vec::new(), true), opts())
                .map_err(|e| header_error(e, name))?,
        ),
        Format::Mp4 => {
            claimed_exact = false;
            let reader = IsoMp4Reader::try_new(stream(input, Vec::new(), true), opts());
            Box::new(reader.map_err(|e| {
                if mp4::cut_off(input) {
                    CodecError::TruncatedStream(format!(
                        "the {name} file is cut off before its audio can be read (its last box \
                         is incomplete)"
                    ))
                } else {
                    header_error(e, name)
                }
            })?)
        }
        Format::OggOpus | Format::Matroska => {
            return Err(CodecError::Internal(format!(
                "{} is decoded by the Opus path, not by codec::media",
                format.as_str()
            )))
        }
    };
    let track = reader.default_track(TrackType::Audio).ok_or_else(|| {
        CodecError::UnsupportedFormat(format!("the {name} file holds no audio track"))
    })?;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .cloned()
        .ok_or_else(|| {
            CodecError::UnsupportedFormat(format!(
                "the {name} file's audio track has no codec this converter knows"
            ))
        })?;
    let rate = params.sample_rate.ok_or_else(|| {
        CodecError::InvalidStream(format!("the {name} file does not say its sample rate"))
    })?;
    if !RATES.contains(&rate) {
        return Err(CodecError::UnsupportedFormat(format!(
            "the {name} file's sample rate is {rate} Hz; rates from {} to {} Hz are accepted",
            RATES.start(),
            RATES.end()
        )));
    }
    let track_id = track.id;
    let (mut skip, mut keep) = (0, None);
    match format {
        Format::Wav => {}
        Format::Mp4 => {
            let t = mp4::timing(input, track_id);
            (skip, keep, claimed) = mp4_trim(&t, rate);
        }
        // FLAC's STREAMINFO says 0 when it does not know.
        _ => claimed = track.num_frames.filter(|&n| n > 0),
    }
    Ok(Opened {
        reader,
        track_id,
        params,
        rate,
        claimed,
        claimed_exact,
        cut_off: format == Format::Mp4 && mp4::cut_off(input),
        skip,
        keep,
        name,
    })
}

/// The format's name in messages.
pub(super) fn name(format: Format) -> &'static str {
    match format {
        Format::Wav => "WAV",
        Format::Flac => "FLAC",
        Format::Mp3 => "MP3",
        Format::OggVorbis => "Ogg Vorbis",
        Format::OggFlac => "Ogg FLAC",
        Format::Mp4 => "MP4",
        Format::OggOpus => "Ogg Opus",
        Format::Matroska => "WebM/Matroska",
    }
}

fn opts() -> FormatOptions {
    FormatOptions::default()
}

fn stream(data: &[u8], patches: Vec<(u64, [u8; 4])>, seekable: bool) -> MediaSourceStream<'_> {
    let source = Bytes {
        data,
        patches,
        pos: 0,
        seekable,
    };
    MediaSourceStream::new(Box::new(source), MediaSourceStreamOptions::default())
}

/// Maps an error from opening a file (reading its headers).
fn header_error(e: SymError, name: &str) -> CodecError {
    match e {
        SymError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            CodecError::TruncatedStream(format!(
                "the {name} file ends inside its headers, before any audio"
            ))
        }
        // What symphonia calls unsupported when a part every such file has
        // is absent ("missing data chunk", "missing moov atom"): the file is
        // incomplete, not of another kind.
        SymError::Unsupported(what) if what.contains("missing") => CodecError::TruncatedStream(
            format!("the {name} file is incomplete: it ends before its audio ({what})"),
        ),
        other => map_error(other, name),
    }
}

/// Maps a symphonia error met while reading `name` to the codec's error.
pub(super) fn map_error(e: SymError, name: &str) -> CodecError {
    match e {
        SymError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            CodecError::TruncatedStream(format!(
                "the {name} file is cut off: its last frame or block is incomplete"
            ))
        }
        SymError::IoError(io) => {
            CodecError::InvalidStream(format!("the {name} file cannot be read: {io}"))
        }
        SymError::DecodeError(why) => {
            CodecError::InvalidStream(format!("the {name} file is malformed or corrupted ({why})"))
        }
        SymError::Unsupported(what) => CodecError::UnsupportedFormat(format!(
            "the {name} file uses something this converter does not decode ({what})"
        )),
        SymError::LimitError(what) => {
            CodecError::InvalidStream(format!("the {name} file exceeds a decoder limit ({what})"))
        }
        SymError::SeekError(_) => {
            CodecError::InvalidStream(format!("the {name} file's index points outside the file"))
        }
        SymError::ResetRequired => CodecError::UnsupportedFormat(format!(
            "the {name} file changes its stream layout midway (chained streams are not decoded)"
        )),
        other => CodecError::InvalidStream(format!("the {name} file cannot be decoded ({other})")),
    }
}

/// Skip, keep and announced length (frames at `rate`) of an MP4 track.
fn mp4_trim(t: &mp4::Timing, rate: u32) -> (u64, Option<u64>, Option<u64>) {
    let to_frames = |units: u64, scale: u32| -> Option<u64> {
        if scale == 0 {
            return None;
        }
        let f = (u128::from(units) * u128::from(rate) + u128::from(scale) / 2) / u128::from(scale);
        u64::try_from(f).ok()
    };
    let Some(track) = &t.track else {
        return (0, None, to_frames(t.fragment_duration, t.movie_timescale));
    };
    let skip = track
        .edit
        .and_then(|e| to_frames(e.media_time, track.media_timescale))
        .unwrap_or(0);
    let keep = track
        .edit
        .filter(|e| e.duration > 0)
        .and_then(|e| to_frames(e.duration, t.movie_timescale));
    let media = to_frames(track.media_duration, track.media_timescale)
        .filter(|&n| n > 0)
        .map(|n| n.saturating_sub(skip));
    let claimed = keep
        .or(media)
        .or_else(|| to_frames(t.fragment_duration, t.movie_timescale).filter(|&n| n > 0));
    (skip, keep, claimed)
}

/// What the RIFF/RF64 chunk headers of a WAV file say.
struct WavScan {
    /// Frames the `data` chunk (or `ds64`) announces.
    frames: Option<u64>,
    /// Byte patches that turn an RF64 header into one symphonia reads.
    patches: Vec<(u64, [u8; 4])>,
    /// The channel count of the `fmt ` chunk.
    channels: Option<u16>,
}

/// Walks the chunk headers up to `data`. RF64 becomes RIFF with unknown
/// sizes (the `ds64` chunk is then skipped as unknown), its data size put
/// back in the `data` header when it fits in 32 bits.
fn scan_wav(input: &[u8]) -> WavScan {
    let mut scan = WavScan {
        frames: None,
        patches: Vec::new(),
        channels: None,
    };
    let rf64 = input.starts_with(b"RF64");
    if rf64 {
        scan.patches.push((0, *b"RIFF"));
        scan.patches.push((4, u32::MAX.to_le_bytes()));
    }
    let (mut at, mut block_align, mut ds64_data) = (12usize, 0u64, None);
    while let (Some(id), Some(size)) = (input.get(at..at + 4), le_u32(input, at + 4)) {
        let body = at + 8;
        match id {
            b"ds64" => ds64_data = le_u64(input, body + 8),
            b"fmt " => {
                if size < 16 {
                    break; // symphonia refuses it in its own words
                }
                block_align = le_u16(input, body + 12).map_or(0, u64::from);
                scan.channels = le_u16(input, body + 2);
                // An extensible format's channel mask with another count of
                // speakers than channels: symphonia's repair of it can
                // overflow (a panic in debug builds), so it gets none and
                // the default layout for the count.
                let mask = le_u32(input, body + 20).filter(|_| size >= 24);
                if let (Some(0xFFFE), Some(mask), Some(ch)) =
                    (le_u16(input, body), mask, scan.channels)
                {
                    if mask.count_ones() != u32::from(ch) || mask >> 18 != 0 {
                        scan.patches.push(((body + 20) as u64, [0; 4]));
                    }
                }
            }
            b"data" => {
                // Unknown sizes (0xFFFFFFFF, as ffmpeg writes to a pipe):
                // the audio is what the file holds.
                let present = (input.len() - body) as u64;
                let bytes = match (size, ds64_data) {
                    (u32::MAX, Some(d)) if rf64 => d,
                    (u32::MAX, _) => present,
                    (n, _) => u64::from(n),
                };
                // Symphonia reads what the header says: give it the whole
                // frames present (a file cut off is then found short of its
                // announced length by the decode loop).
                let whole = present - present.checked_rem(block_align).unwrap_or(0);
                if let Ok(readable) = u32::try_from(bytes.min(whole)) {
                    if readable != u32::MAX && readable != size {
                        scan.patches.push(((at + 4) as u64, readable.to_le_bytes()));
                    }
                }
                let bytes = Some(bytes);
                scan.frames = bytes.and_then(|b| b.checked_div(block_align));
                break;
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        let next = (body as u64) + u64::from(size) + u64::from(size & 1);
        match usize::try_from(next) {
            Ok(next) if next <= input.len() => at = next,
            _ => break,
        }
    }
    scan
}

/// The MPEG frames of an MP3 file: without its leading ID3v2 tags and its
/// trailing ID3v1 and APEv2 tags.
fn strip_mp3_tags(mut input: &[u8]) -> &[u8] {
    while input.starts_with(b"ID3") && input.len() >= 10 {
        let size = input[6..10]
            .iter()
            .fold(0usize, |acc, &b| (acc << 7) | usize::from(b & 0x7f));
        let footer = if input[5] & 0x10 != 0 { 10 } else { 0 };
        input = input.get(10 + size + footer..).unwrap_or(&[]);
    }
    if input.len() >= 128 && input[input.len() - 128..].starts_with(b"TAG") {
        input = &input[..input.len() - 128];
    }
    if input.len() >= 32 && input[input.len() - 32..].starts_with(b"APETAGEX") {
        let footer = &input[input.len() - 32..];
        let size = le_u32(footer, 12).map_or(0, |s| s as usize);
        let header = if le_u32(footer, 20).is_some_and(|f| f & (1 << 31) != 0) {
            32
        } else {
            0
        };
        let tag = size.saturating_add(header);
        input = &input[..input.len().saturating_sub(tag)];
    }
    input
}

fn le_u16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

fn le_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn le_u64(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

/// The upload as symphonia's media source: a cursor over borrowed bytes,
/// with a few 4-byte patches laid over them.
struct Bytes<'a> {
    data: &'a [u8],
    patches: Vec<(u64, [u8; 4])>,
    pos: u64,
    seekable: bool,
}

impl Read for Bytes<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let start = usize::try_from(self.pos)
            .unwrap_or(usize::MAX)
            .min(self.data.len());
        let n = buf.len().min(self.data.len() - start);
        buf[..n].copy_from_slice(&self.data[start..start + n]);
        for (at, bytes) in &self.patches {
            for (i, &b) in bytes.iter().enumerate() {
                let p = *at + i as u64;
                if p >= self.pos && p < self.pos + n as u64 {
                    buf[(p - self.pos) as usize] = b;
                }
            }
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Bytes<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let len = self.data.len() as u64;
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let target = target.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        self.pos = target;
        Ok(target)
    }
}

impl MediaSource for Bytes<'_> {
    fn is_seekable(&self) -> bool {
        self.seekable
    }

    fn byte_len(&self) -> Option<u64> {
        Some(self.data.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mp3_tags_are_cut_off() {
        let mut file = b"ID3\x04\0\0\0\0\0\x05hello".to_vec();
        file.extend_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
        file.extend_from_slice(b"TAG");
        file.extend_from_slice(&[0; 125]);
        assert_eq!(strip_mp3_tags(&file), &[0xFF, 0xFB, 0x90, 0x64]);
        // A tag claiming more than the file holds leaves nothing.
        assert_eq!(strip_mp3_tags(b"ID3\x04\0\0\x7f\x7f\x7f\x7f"), b"");
    }

    #[test]
    fn rf64_becomes_riff_with_its_data_size() {
        let mut file = b"RF64\xff\xff\xff\xffWAVEds64".to_vec();
        file.extend_from_slice(&28u32.to_le_bytes());
        file.extend_from_slice(&0u64.to_le_bytes());
        file.extend_from_slice(&8u64.to_le_bytes()); // data size
        file.extend_from_slice(&4u64.to_le_bytes());
        file.extend_from_slice(&0u32.to_le_bytes());
        file.extend_from_slice(b"fmt \x10\0\0\0\x01\0\x01\0\x80\x3e\0\0\0\x7d\0\0\x02\0\x10\0");
        file.extend_from_slice(b"data\xff\xff\xff\xff");
        let data_at = file.len() - 4;
        file.extend_from_slice(&[1, 0, 2, 0, 3, 0, 4, 0]);
        let scan = scan_wav(&file);
        assert_eq!(scan.frames, Some(4));
        let mut src = Bytes {
            data: &file,
            patches: scan.patches,
            pos: 0,
            seekable: true,
        };
        let mut read = Vec::new();
        src.read_to_end(&mut read).expect("read");
        assert_eq!(&read[..8], b"RIFF\xff\xff\xff\xff");
        assert_eq!(&read[data_at..data_at + 4], &8u32.to_le_bytes());
        assert_eq!(read.len(), file.len());
    }
}
