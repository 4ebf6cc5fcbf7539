//! Demultiplexing: from the input bytes to the audio packets of each Ogg Opus
//! stream (each link of a chain), with the sample counts that pre-skip and the
//! granule positions give, all worked out before anything is decoded.
//!
//! Rules, following RFC 7845 section 4 and libopusfile (the library behind
//! `opusdec`):
//! - A link is a group of streams whose BOS pages come first; the first stream
//!   in a group whose BOS page holds an OpusHead is decoded, every other
//!   logical stream (Vorbis, Theora, Skeleton, a second Opus stream) is skipped.
//!   Links follow each other in the file (chaining).
//! - The OpusHead must be alone on the BOS page, the OpusTags packet (of any
//!   size, spanning any number of pages; it is not kept in memory) must be the
//!   second packet with its vendor and comment lengths inside it (as
//!   libopusfile checks), and audio starts on a fresh page.
//! - The BOS page of the decoded stream, in every link, cannot be marked as
//!   continuing a packet (`opusdec` and ffmpeg refuse such a file); the pages
//!   of skipped streams are not checked, as libopusfile ignores them too.
//! - Start granule (section 4.5): on the first page with completed audio
//!   packets, `start = granule - samples completed on that page`. A start above
//!   0 (a stream cut from a live recording) is accepted and pre-skip still
//!   applies; a granule smaller than the page's samples on a page that is
//!   also the last one means a start of 0 and an end trimmed.
//! - End trimming (section 4.4): on the end-of-stream page only
//!   `granule - previous page's granule` of the page's samples are kept (none
//!   when that is negative, all when it is more than they hold).
//! - Granule positions that disagree with the packets, as in ffmpeg's stream
//!   copy of a browser's (MediaRecorder) WebM, whose timestamps jitter by a
//!   millisecond, are decoded as ffmpeg decodes them and counted as repairs
//!   ([`Repaired`]): a first page claiming fewer samples than it holds (a
//!   start before 0; RFC 7845 and `opusdec` refuse it) starts at 0; the
//!   granule of a later page that is not `previous + samples`, forwards or
//!   backwards, is ignored (it only serves for the end trimming that
//!   follows); an end-of-stream page before the previous page's granule or
//!   beyond its packets is trimmed by the rule above. A disagreeing granule
//!   past 2^62 (negative as a signed number) is invalid, as ffmpeg refuses it.
//! - The link's output is `kept samples - pre-skip` at 48 kHz; fewer kept
//!   samples than the pre-skip is invalid.
//! - Empty packets are skipped (they hold no audio); a packet whose TOC is
//!   invalid, a page with completed packets but no granule (-1; ffmpeg stops
//!   there), missing pages (sequence gap) and CRC failures are invalid.
//! - A stream without an end-of-stream page, or a cut-off last page or
//!   packet, is `truncated_stream`; in lenient mode the intact pages are kept
//!   (without end trimming).
//! - At most 10 000 links and 64 multiplexed streams per link are accepted.
//! - The duration limit is checked on the running sum of packet durations
//!   and, while they agree with the packets, on every granule position, so an
//!   over-long file is refused after reading at most the limit's worth of
//!   pages, and the packet list stays bounded by the limit.

use std::borrow::Cow;

use super::budget::Budget;
use super::detect::detect;
use super::error::CodecError;
use super::head::{OpusHead, HEAD_MAGIC};
use super::page::{read_page, PageError, CAPTURE};
use super::stream::Stream;
use super::ConvertOptions;

/// Most links (chained streams) accepted in one input.
const MAX_LINKS: usize = 10_000;
/// Most logical streams multiplexed in one link.
const MAX_GROUP_STREAMS: usize = 64;

/// The Opus streams of an input, ready to decode.
#[derive(Debug, Clone)]
pub struct Demuxed<'a> {
    /// The decoded links, in file order (one unless the file is chained).
    pub links: Vec<Link<'a>>,
}

impl Demuxed<'_> {
    /// Total output length at 48 kHz, summed over links.
    pub fn output_samples_48k(&self) -> u64 {
        self.links.iter().map(Link::output_samples_48k).sum()
    }
}

/// One Ogg Opus logical stream (one link of a chain).
#[derive(Debug, Clone)]
pub struct Link<'a> {
    /// Its serial number.
    pub serial: u32,
    /// Its identification header.
    pub head: OpusHead,
    /// Its non-empty audio packets in order (borrowed unless they span pages).
    pub packets: Vec<Cow<'a, [u8]>>,
    /// Granule position before the first sample (above 0 for a stream cut
    /// from a live recording).
    pub start_granule: u64,
    /// Samples at 48 kHz all packets decode to.
    pub decoded_samples_48k: u64,
    /// Samples at 48 kHz to keep from the decoder output after end trimming,
    /// pre-skip included.
    pub kept_samples_48k: u64,
    /// Whether the stream ended with an end-of-stream page (false only in
    /// lenient mode).
    pub complete: bool,
}

impl Link<'_> {
    /// Output length of this link at 48 kHz: kept samples minus pre-skip.
    pub fn output_samples_48k(&self) -> u64 {
        self.kept_samples_48k
            .saturating_sub(u64::from(self.head.pre_skip))
    }
}

/// What [`demux_repairing`] decoded past in an input: its streams whose
/// granule positions disagree with their packets (see the module's rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    /// Streams (links) with at least one such page.
    pub streams: u32,
    /// Pages whose granule position disagreed with their packets.
    pub pages: u64,
    /// The first such page, described.
    pub first: String,
}

impl std::fmt::Display for Repaired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "granule positions disagreeing with the packets on {} page(s) of {} stream(s), \
             decoded as ffmpeg does; first: {}",
            self.pages, self.streams, self.first
        )
    }
}

impl Repaired {
    /// Adds the repairs of a finished stream.
    fn note(acc: &mut Option<Repaired>, stream: &mut Stream<'_>) {
        let Some(first) = stream.first_repair.take() else {
            return;
        };
        let pages = u64::from(stream.repaired_pages);
        match acc {
            Some(r) => {
                r.streams = r.streams.saturating_add(1);
                r.pages = r.pages.saturating_add(pages);
            }
            None => {
                *acc = Some(Repaired {
                    streams: 1,
                    pages,
                    first,
                })
            }
        }
    }
}

/// Splits `input` into its Opus links and works out their lengths, checking
/// structure, CRCs, granule positions, the duration limit and the deadline of
/// `opts`. Decodes nothing.
pub fn demux<'a>(input: &'a [u8], opts: &ConvertOptions) -> Result<Demuxed<'a>, CodecError> {
    demux_repairing(input, opts).map(|(demuxed, _)| demuxed)
}

/// [`demux`], also saying which granule positions that disagree with their
/// packets were decoded past (`None` when every one agrees).
pub fn demux_repairing<'a>(
    input: &'a [u8],
    opts: &ConvertOptions,
) -> Result<(Demuxed<'a>, Option<Repaired>), CodecError> {
    if input.is_empty() {
        return Err(CodecError::UnsupportedFormat("the input is empty".into()));
    }
    if !input.starts_with(CAPTURE) {
        // What it is instead, in the words of the format detection.
        return Err(match detect(input) {
            Err(e) => e,
            Ok(format) => CodecError::UnsupportedFormat(format!(
                "the input is {}, not Ogg Opus; codec::convert decodes it",
                format.as_str()
            )),
        });
    }
    let mut budget = Budget::new(opts, input.len());
    let mut links: Vec<Link<'a>> = Vec::new();
    let mut cur: Option<Stream<'a>> = None;
    let mut repaired: Option<Repaired> = None;
    let mut group_open = false;
    let mut group_serials: Vec<u32> = Vec::new();
    let mut skipped: Vec<&'static str> = Vec::new();
    let mut offset = 0usize;
    let mut pages = 0u32;
    while offset < input.len() {
        let page = match read_page(input, offset) {
            Ok(page) => page,
            Err(PageError::Truncated { missing }) => {
                if opts.lenient {
                    break;
                }
                return Err(CodecError::TruncatedStream(format!(
                    "the file ends inside the Ogg page at byte {offset} ({missing} or more bytes \
                     missing); the upload was cut off (lenient conversion decodes the intact part)"
                )));
            }
            Err(PageError::NotAPage) => {
                if opts.lenient || cur.as_ref().is_none_or(|s| s.ended) {
                    break; // trailing bytes after the last stream ended
                }
                return Err(CodecError::InvalidStream(format!(
                    "the bytes at offset {offset} are not an Ogg page while the Opus stream is \
                     still open: the file is corrupted or has foreign data spliced into it"
                )));
            }
            Err(PageError::BadVersion(v)) => {
                return Err(CodecError::InvalidStream(format!(
                    "the Ogg page at byte {offset} has stream structure version {v} (only 0 \
                     exists): the file is corrupted"
                )));
            }
            Err(PageError::BadCrc { stored, computed }) => {
                return Err(CodecError::InvalidStream(format!(
                    "the Ogg page at byte {offset} fails its CRC check (stored {stored:08x}, \
                     computed {computed:08x}): the file was damaged or edited"
                )));
            }
        };
        offset += page.len();
        pages = pages.wrapping_add(1);
        if pages.is_multiple_of(256) {
            budget.check_deadline()?;
        }
        if page.bos() {
            if !group_open {
                if let Some(mut stream) = cur.take() {
                    Repaired::note(&mut repaired, &mut stream);
                    links.push(finish(
                        &mut budget,
                        stream,
                        opts.lenient,
                        Some(page.offset),
                    )?);
                    if links.len() >= MAX_LINKS {
                        return Err(CodecError::InvalidStream(format!(
                            "more than {MAX_LINKS} chained streams in one file are not supported"
                        )));
                    }
                }
                group_serials.clear();
                group_open = true;
            }
            if group_serials.len() >= MAX_GROUP_STREAMS {
                return Err(CodecError::InvalidStream(format!(
                    "more than {MAX_GROUP_STREAMS} logical streams multiplexed together at byte {}",
                    page.offset
                )));
            }
            if group_serials.contains(&page.serial) {
                return Err(CodecError::InvalidStream(format!(
                    "two logical streams at the start of the link at byte {} share serial number {}",
                    page.offset, page.serial
                )));
            }
            group_serials.push(page.serial);
            if cur.is_none() && page.body.starts_with(HEAD_MAGIC) {
                cur = Some(Stream::open(&page)?);
            } else {
                let name = codec_name(page.body);
                if !skipped.contains(&name) {
                    skipped.push(name);
                }
            }
            continue;
        }
        group_open = false;
        if let Some(stream) = cur.as_mut() {
            if stream.serial == page.serial && !stream.ended {
                stream.on_page(&page, &mut budget, opts.lenient)?;
            }
        }
    }
    if let Some(mut stream) = cur.take() {
        Repaired::note(&mut repaired, &mut stream);
        links.push(finish(&mut budget, stream, opts.lenient, None)?);
    }
    if links.is_empty() {
        let found = if skipped.is_empty() {
            "no logical stream".to_string()
        } else {
            skipped.join(", ")
        };
        return Err(CodecError::UnsupportedFormat(format!(
            "the Ogg file holds no Opus stream (found: {found}); only Ogg Opus is accepted"
        )));
    }
    Ok((Demuxed { links }, repaired))
}

/// Closes a stream into a link, counting its length against `budget`;
/// `next_link` is where the next link starts.
fn finish<'a>(
    budget: &mut Budget,
    s: Stream<'a>,
    lenient: bool,
    next_link: Option<usize>,
) -> Result<Link<'a>, CodecError> {
    if !s.ended && !lenient {
        return Err(CodecError::TruncatedStream(match next_link {
                Some(at) => format!(
                    "the Opus stream has no end-of-stream page before the next chained stream \
                     starts at byte {at}: it was cut off (lenient conversion decodes the intact part)"
                ),
                None => "the Opus stream ends without an end-of-stream page: the file was cut off \
                         (lenient conversion decodes the intact part)"
                    .to_string(),
            }));
    }
    let kept = if s.ended {
        s.keep.unwrap_or(s.decoded)
    } else {
        s.decoded
    };
    let pre_skip = u64::from(s.head.pre_skip);
    if kept < pre_skip && s.ended {
        return Err(CodecError::InvalidStream(format!(
            "bad OpusHead: the pre-skip of {pre_skip} samples is longer than the whole stream \
                 ({kept} samples at 48 kHz)"
        )));
    }
    let link = Link {
        serial: s.serial,
        head: s.head,
        packets: s.packets,
        start_granule: s.start.unwrap_or(0),
        decoded_samples_48k: s.decoded,
        kept_samples_48k: kept,
        complete: s.ended,
    };
    budget.check_length(link.output_samples_48k(), 0, next_link.is_some())?;
    budget.add_done(link.output_samples_48k());
    Ok(link)
}

/// Names the codec of a logical stream from its first packet.
fn codec_name(first_packet: &[u8]) -> &'static str {
    const KNOWN: [(&[u8], &str); 9] = [
        (b"\x01vorbis", "Vorbis"),
        (b"Speex   ", "Speex"),
        (b"\x7fFLAC", "FLAC"),
        (b"\x80theora", "Theora"),
        (b"fishead\0", "Skeleton"),
        (b"OpusHead", "a second Opus stream"),
        (b"\x80kate", "Kate"),
        (b"BBCD", "Dirac"),
        (b"PCM     ", "PCM"),
    ];
    KNOWN
        .iter()
        .find(|(magic, _)| first_packet.starts_with(magic))
        .map_or("an unknown codec", |k| k.1)
}
