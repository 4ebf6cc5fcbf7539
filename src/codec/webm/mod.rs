//! WebM/Matroska demultiplexing: from the input bytes to the packets of the
//! first Opus audio track, with the sample counts its OpusHead and
//! DiscardPadding give, as one [`Link`] that [`super::convert`] decodes
//! exactly like an Ogg Opus one. Browsers record this (Chrome's
//! MediaRecorder writes only `audio/webm;codecs=opus`).
//!
//! The EBML elements are read by ebml-iterable's sans-IO [`TagDecoder`] with
//! webm-iterable's Matroska element table ([`MatroskaSpec`]), chosen over
//! - symphonia-format-mkv, which reads DiscardPadding but drops it before
//!   its packets reach the caller, so end trimming is lost;
//! - matroska-demuxer, which exposes no DiscardPadding either, and takes any
//!   read error for the end of the file, so a cut file looks whole.
//!
//! The decoder closes an unknown-size element (a browser's Segment and
//! Clusters) at the next element that cannot be its child, from the
//! element table's hierarchy (RFC 8794 section 6.2); it says where the input
//! ends inside an element; and it allocates nothing from a size field (it
//! waits for the bytes, which are all in memory: its buffer is the one copy
//! of the input made here). Frames are borrowed from the input. [`block`]
//! splits blocks and their lacing; [`tracks`] chooses the track.
//!
//! Rules, as ffmpeg (`ffmpeg -c:a libopus`) does unless said otherwise:
//! - The first track with CodecID `A_OPUS` is decoded; its CodecPrivate is
//!   its OpusHead (pre-skip, output gain, channel mapping families 0 and 1).
//!   No Opus track is `unsupported_format` naming the CodecIDs found.
//! - The pre-skip comes from the OpusHead; CodecDelay only shifts
//!   timestamps, which are not used (ffmpeg trims nothing for it either).
//! - SimpleBlocks and BlockGroups, with any lacing, in file order; empty
//!   frames hold no audio and are skipped; a frame whose TOC is invalid is
//!   `invalid_stream`.
//! - The DiscardPadding of the block holding the track's last frame trims
//!   the end: nanoseconds to 48 kHz samples rounded to nearest, ignored when
//!   longer than that frame (as ffmpeg's decoder ignores it). ffmpeg would
//!   also cut a DiscardPadding of an earlier block out of the middle, and
//!   trim each frame of a laced one; muxers write it only on the last block,
//!   and here it applies to the last frame only.
//! - Only the first Segment is read; what follows its end is ignored.
//! - The input ending where no element is cut (a live recording stopped,
//!   whose Segment and Clusters have unknown sizes, or a file missing its
//!   last Clusters) keeps every complete block. Ending inside an element
//!   (a block cut in the middle) is `truncated_stream`, and lenient
//!   conversion keeps the complete blocks; corrupt data is `invalid_stream`,
//!   and lenient conversion stops there likewise. Before the track is
//!   chosen, both are errors in any mode.
//! - The duration limit: Info's Duration is checked as soon as Info ends
//!   (120 ms of slack for its rounding), so a small file claiming hours is
//!   refused before any block is read; the sum of packet durations is
//!   checked on every frame and the exact output length at the end.

mod block;
mod tracks;

use std::borrow::Cow;

use bytes::BytesMut;
use ebml_iterable::error::{CorruptedFileError, TagIteratorError};
use ebml_iterable::iterator::AllowableErrors;
use ebml_iterable::TagDecoder;
use webm_iterable::matroska_spec::{Master, MatroskaSpec};

use super::budget::Budget;
use super::demux::{Demuxed, Link};
use super::error::CodecError;
use super::head::{packet_samples_48k, MAX_PACKET_SAMPLES_48K};
use super::ConvertOptions;
use tracks::{Chosen, Tracks};

/// The EBML header's ID, the first four bytes of every WebM/Matroska file.
const EBML_MAGIC: [u8; 4] = [0x1A, 0x45, 0xDF, 0xA3];
/// Nanoseconds per Segment tick when Info has no TimestampScale.
const DEFAULT_TIMESTAMP_SCALE: u64 = 1_000_000;
/// The largest size an element may claim (a larger one is corrupt data).
const MAX_ELEMENT_BYTES: usize = u32::MAX as usize;
/// Elements read between two deadline checks.
const DEADLINE_EVERY: u32 = 256;

/// Splits `input`, a WebM/Matroska file, into the packets of its first Opus
/// track, checking structure, the duration limit and the deadline of `opts`.
/// Decodes nothing.
pub fn demux<'a>(input: &'a [u8], opts: &ConvertOptions) -> Result<Demuxed<'a>, CodecError> {
    if !input.starts_with(&EBML_MAGIC) {
        return Err(CodecError::UnsupportedFormat(
            "the input is not a WebM/Matroska file: it does not start with an EBML header".into(),
        ));
    }
    let mut reader = Reader::new(input, opts);
    let mut buf = BytesMut::from(input);
    let mut decoder: TagDecoder<MatroskaSpec> = TagDecoder::new(&[]);
    // Elements the table does not know are skipped, as ffmpeg skips them.
    decoder.allow_errors(&[AllowableErrors::InvalidTagIds]);
    // A bound on sizes, not an allocation: elements are read from `buf`.
    decoder.set_max_allowable_tag_size(Some(MAX_ELEMENT_BYTES));
    let (mut at_eof, mut count) = (false, 0u32);
    let end = loop {
        count = count.wrapping_add(1);
        if count.is_multiple_of(DEADLINE_EVERY) {
            reader.budget.check_deadline()?;
        }
        let step = if at_eof {
            decoder.decode_eof(&mut buf)
        } else {
            match decoder.decode(&mut buf) {
                Ok(None) => {
                    at_eof = true;
                    continue;
                }
                step => step,
            }
        };
        match step {
            Ok(Some(tag)) => {
                if reader.on_tag(tag.tag, tag.offset, decoder.position())? {
                    break End::Whole;
                }
            }
            Ok(None) => break End::Whole,
            Err(e) => break End::from(e),
        }
    };
    reader.finish(end)
}

/// How reading stopped.
enum End {
    /// At the end of the Segment, or of the input with every element whole.
    Whole,
    /// The input ends where a known-size element says more follows, but no
    /// element is cut (whole Clusters are missing).
    Short,
    /// The input ends inside the element at this offset.
    Cut(usize),
    /// The data is corrupt; the message says where.
    Corrupt(String),
}

impl From<TagIteratorError> for End {
    fn from(e: TagIteratorError) -> End {
        match e {
            TagIteratorError::UnexpectedEOF {
                partial_data: None, ..
            } => End::Short,
            TagIteratorError::UnexpectedEOF { tag_start, .. } => End::Cut(tag_start),
            TagIteratorError::CorruptedFileData(e) => End::Corrupt(match e {
                CorruptedFileError::InvalidTagId { position, tag_id } => {
                    format!("the element ID 0x{tag_id:X} at byte {position} is not a known one")
                }
                CorruptedFileError::InvalidTagData { position, tag_id } => {
                    format!("the element 0x{tag_id:X} at byte {position} has an invalid size")
                }
                CorruptedFileError::HierarchyError {
                    found_tag_id,
                    current_parent_id,
                } => format!(
                    "the element 0x{found_tag_id:X} cannot be inside {}",
                    current_parent_id.map_or("the file's top level".into(), |p| format!(
                        "the element 0x{p:X}"
                    ))
                ),
                CorruptedFileError::OversizedChildElement {
                    position, tag_id, ..
                } => format!(
                    "the element 0x{tag_id:X} at byte {position} runs past the end of the \
                     element holding it"
                ),
                CorruptedFileError::InvalidTagSize {
                    position,
                    tag_id,
                    size,
                } => format!(
                    "the element 0x{tag_id:X} at byte {position} claims {size} bytes, more than \
                     the 4 GiB an element may hold"
                ),
            }),
            TagIteratorError::CorruptedTagData { tag_id, .. } => End::Corrupt(format!(
                "the value of an element 0x{tag_id:X} does not fit its type (a float that \
                 is not 4 or 8 bytes, or text that is not UTF-8)"
            )),
            TagIteratorError::ReadError { .. } => {
                End::Corrupt("the EBML reader failed to read the input".into())
            }
        }
    }
}

/// The state of one input being read.
struct Reader<'a> {
    input: &'a [u8],
    lenient: bool,
    budget: Budget,
    timestamp_scale: u64,
    duration: Option<f64>,
    /// TrackEntries while Tracks is open; `None` before and after.
    tracks: Option<Tracks>,
    chosen: Option<Chosen>,
    /// The open BlockGroup.
    group: Option<Group<'a>>,
    packets: Vec<Cow<'a, [u8]>>,
    decoded: u64,
    /// The end trim the last frame read carries, in 48 kHz samples.
    trim: u64,
}

/// A BlockGroup being read.
#[derive(Default)]
struct Group<'a> {
    /// Its (first) Block and that element's offset.
    block: Option<(Cow<'a, [u8]>, usize)>,
    /// Its DiscardPadding in nanoseconds (0 when absent).
    padding: i64,
}

impl<'a> Reader<'a> {
    fn new(input: &'a [u8], opts: &ConvertOptions) -> Reader<'a> {
        Reader {
            input,
            lenient: opts.lenient,
            budget: Budget::new(opts, input.len()),
            timestamp_scale: DEFAULT_TIMESTAMP_SCALE,
            duration: None,
            tracks: None,
            chosen: None,
            group: None,
            packets: Vec::new(),
            decoded: 0,
            trim: 0,
        }
    }

    /// Takes in one element (`at` its offset, `end` where it ends when it
    /// holds data). True at the end of the first Segment.
    fn on_tag(&mut self, tag: MatroskaSpec, at: usize, end: usize) -> Result<bool, CodecError> {
        match tag {
            MatroskaSpec::DocType(t) if t != "webm" && t != "matroska" => {
                return Err(CodecError::UnsupportedFormat(format!(
                    "the EBML document type is {:?}, neither webm nor matroska",
                    t.chars().take(32).collect::<String>()
                )));
            }
            MatroskaSpec::Segment(Master::End) => return Ok(true),
            MatroskaSpec::TimestampScale(s) if s > 0 => self.timestamp_scale = s,
            MatroskaSpec::Duration(d) => self.duration = Some(d),
            MatroskaSpec::Info(Master::End) => self.check_duration()?,
            MatroskaSpec::Tracks(Master::Start) if self.chosen.is_none() => {
                self.tracks = Some(Tracks::default());
            }
            MatroskaSpec::Tracks(Master::End) => {
                if let Some(tracks) = self.tracks.take() {
                    self.chosen = Some(tracks.choose()?);
                }
            }
            MatroskaSpec::TrackEntry(Master::Start) => self.with_tracks(Tracks::start_entry),
            MatroskaSpec::TrackEntry(Master::End) => {
                if let Some(t) = self.tracks.as_mut() {
                    t.end_entry()?;
                }
            }
            MatroskaSpec::TrackNumber(n) => self.with_tracks(|t| t.number(n)),
            MatroskaSpec::CodecID(id) => self.with_tracks(|t| t.codec_id(id)),
            MatroskaSpec::CodecPrivate(p) => self.with_tracks(|t| t.private(p)),
            MatroskaSpec::ContentEncodings(Master::Start) => self.with_tracks(Tracks::encoded),
            MatroskaSpec::SimpleBlock(data) => {
                let block = self.borrow(&data, end);
                self.on_block(block, at, 0)?;
            }
            MatroskaSpec::BlockGroup(Master::Start) => self.group = Some(Group::default()),
            MatroskaSpec::Block(data) => {
                let block = self.borrow(&data, end);
                if let Some(group @ Group { block: None, .. }) = self.group.as_mut() {
                    group.block = Some((block, at));
                }
            }
            MatroskaSpec::DiscardPadding(p) => {
                if let Some(group) = self.group.as_mut() {
                    group.padding = p;
                }
            }
            MatroskaSpec::BlockGroup(Master::End) => self.end_group()?,
            _ => {}
        }
        Ok(false)
    }

    fn with_tracks(&mut self, f: impl FnOnce(&mut Tracks)) {
        if let Some(t) = self.tracks.as_mut() {
            f(t);
        }
    }

    /// Refuses a file whose Info Duration is over the limit.
    fn check_duration(&self) -> Result<(), CodecError> {
        let Some(d) = self.duration.filter(|d| d.is_finite() && *d > 0.0) else {
            return Ok(());
        };
        // Ticks of `timestamp_scale` ns to 48 kHz samples (saturating).
        let samples = (d * self.timestamp_scale as f64 * 48e-6) as u64;
        self.budget
            .check_length(samples, u64::from(MAX_PACKET_SAMPLES_48K), false)
    }

    /// The element data ending at `end`, borrowed from the input.
    fn borrow(&self, data: &[u8], end: usize) -> Cow<'a, [u8]> {
        let input: &'a [u8] = self.input;
        end.checked_sub(data.len())
            .and_then(|start| input.get(start..end))
            .filter(|slice| *slice == data)
            .map_or_else(|| Cow::Owned(data.to_vec()), Cow::Borrowed)
    }

    fn end_group(&mut self) -> Result<(), CodecError> {
        if let Some(Group {
            block: Some((block, at)),
            padding,
        }) = self.group.take()
        {
            self.on_block(block, at, padding)?;
        }
        Ok(())
    }

    /// Takes in one block at byte `at`, its DiscardPadding in nanoseconds.
    fn on_block(&mut self, data: Cow<'a, [u8]>, at: usize, padding: i64) -> Result<(), CodecError> {
        let Some(chosen) = self.chosen.as_ref() else {
            return Err(CodecError::InvalidStream(format!(
                "the block at byte {at} comes before the Tracks element"
            )));
        };
        let frames = block::frames_of(&data, chosen.number).map_err(|why| {
            CodecError::InvalidStream(format!("the block at byte {at} is malformed: {why}"))
        })?;
        let pre_skip = u64::from(chosen.head.pre_skip);
        for range in frames {
            let frame: Cow<'a, [u8]> = match &data {
                Cow::Borrowed(b) => Cow::Borrowed(&b[range]),
                Cow::Owned(v) => Cow::Owned(v[range].to_vec()),
            };
            if frame.is_empty() {
                continue;
            }
            let Some(samples) = packet_samples_48k(&frame) else {
                return Err(CodecError::InvalidStream(format!(
                    "audio frame {} (in the block at byte {at}) is not a valid Opus packet: its \
                     TOC byte gives no frames or more than 120 ms",
                    self.packets.len() + 1
                )));
            };
            self.packets.push(frame);
            self.decoded = self.decoded.saturating_add(u64::from(samples));
            self.budget.check_length(
                self.decoded.saturating_sub(pre_skip),
                u64::from(MAX_PACKET_SAMPLES_48K),
                true,
            )?;
            self.trim = discard_samples(padding, samples);
        }
        Ok(())
    }

    /// Closes the file into its one link.
    fn finish(mut self, end: End) -> Result<Demuxed<'a>, CodecError> {
        let complete = matches!(end, End::Whole);
        let stopped = match end {
            End::Whole | End::Short => None,
            End::Cut(at) => Some(CodecError::TruncatedStream(format!(
                "the file ends inside the element at byte {at}: it was cut off (lenient \
                 conversion decodes the complete blocks)"
            ))),
            End::Corrupt(why) => Some(CodecError::InvalidStream(format!(
                "the WebM/Matroska data is corrupt: {why}"
            ))),
        };
        match stopped {
            Some(e) if !self.lenient || self.chosen.is_none() => return Err(e),
            _ => self.end_group()?,
        }
        if let Some(tracks) = self.tracks.take() {
            // Tracks is cut (or open to the end): choose from what was read.
            self.chosen = Some(tracks.choose()?);
        }
        let Some(chosen) = self.chosen else {
            return Err(if complete {
                CodecError::UnsupportedFormat(
                    "the WebM/Matroska file holds no Opus track (found: no Tracks element)".into(),
                )
            } else {
                CodecError::TruncatedStream(
                    "the WebM/Matroska file ends before its Tracks element: it was cut off".into(),
                )
            });
        };
        if self.packets.is_empty() && !complete {
            return Err(CodecError::TruncatedStream(
                "the WebM/Matroska file ends before its first audio block: it was cut off".into(),
            ));
        }
        let kept = self.decoded - self.trim;
        let pre_skip = u64::from(chosen.head.pre_skip);
        if complete && kept < pre_skip {
            return Err(CodecError::InvalidStream(format!(
                "bad OpusHead: the pre-skip of {pre_skip} samples is longer than the whole track \
                 ({kept} samples at 48 kHz)"
            )));
        }
        let link = Link {
            serial: u32::try_from(chosen.number).unwrap_or(u32::MAX),
            head: chosen.head,
            packets: self.packets,
            start_granule: 0,
            decoded_samples_48k: self.decoded,
            kept_samples_48k: kept,
            complete,
        };
        self.budget
            .check_length(link.output_samples_48k(), 0, false)?;
        Ok(Demuxed { links: vec![link] })
    }
}

/// A DiscardPadding of `padding_ns` on a frame of `samples` (48 kHz) as
/// samples to drop from its end: rounded to nearest; none when it is not
/// positive or longer than the frame.
fn discard_samples(padding_ns: i64, samples: u32) -> u64 {
    let Ok(ns) = u64::try_from(padding_ns) else {
        return 0;
    };
    let trim = (u128::from(ns) * 48 + 500_000) / 1_000_000;
    u64::try_from(trim)
        .ok()
        .filter(|&t| t <= u64::from(samples))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
