//! One Ogg Opus logical stream being read: packet assembly across pages,
//! the header packets, page sequence and continuation checks, packet
//! durations, and the granule bookkeeping of RFC 7845 section 4 (start
//! granule, end trimming) with the duration limit checked on every page. See
//! the rules listed in [`super::demux`].

use std::borrow::Cow;

use super::budget::Budget;
use super::error::CodecError;
use super::head::{packet_samples_48k, OpusHead, TagsCheck, MAX_PACKET_SAMPLES_48K, TAGS_MAGIC};
use super::page::{Page, NO_GRANULE};

/// Largest audio packet accepted (family 1 allows at most 8 streams of at most
/// 6 x 1275 bytes each, about 61 KB).
const MAX_AUDIO_PACKET_BYTES: usize = 128 * 1024;

/// The Opus stream being read.
pub(crate) struct Stream<'a> {
    pub(crate) serial: u32,
    pub(crate) head: OpusHead,
    next_seq: u32,
    /// The OpusTags packet has been read.
    tags_done: bool,
    /// Data of a packet continued on the next page (only the first 8 bytes of
    /// the OpusTags packet are kept).
    pending: Vec<u8>,
    pending_open: bool,
    /// Framing check of the OpusTags packet, fed as its pieces arrive.
    tags: TagsCheck,
    pub(crate) packets: Vec<Cow<'a, [u8]>>,
    pub(crate) decoded: u64,
    pub(crate) start: Option<u64>,
    prev_granule: u64,
    pub(crate) keep: Option<u64>,
    pub(crate) ended: bool,
}

impl<'a> Stream<'a> {
    /// Starts a stream from its BOS page, which must hold the OpusHead alone
    /// and cannot continue a packet (nothing of the stream comes before it).
    pub(crate) fn open(page: &Page<'a>) -> Result<Stream<'a>, CodecError> {
        if page.continued() {
            // libogg drops the first packet of such a page, so `opusdec`
            // finds no OpusHead and refuses the file, as ffmpeg does.
            return Err(invalid(format!(
                "the first page of stream {} (BOS, at byte {}) is marked as continuing a packet \
                 from a page before it, which a stream cannot have: the file is corrupted",
                page.serial, page.offset
            )));
        }
        let complete = page.lacing.iter().filter(|&&l| l < 255).count();
        if complete != 1 || page.lacing.last().is_some_and(|&l| l == 255) {
            return Err(CodecError::InvalidStream(format!(
                "bad OpusHead: the identification header must be alone on the first page of the \
                 stream (page at byte {})",
                page.offset
            )));
        }
        let head = OpusHead::parse(page.body)?;
        if page.eos() {
            return Err(invalid(format!(
                "the stream ends on its first page (byte {}), before its OpusTags comment header",
                page.offset
            )));
        }
        Ok(Stream {
            serial: page.serial,
            head,
            next_seq: page.sequence.wrapping_add(1),
            tags_done: false,
            pending: Vec::new(),
            pending_open: false,
            tags: TagsCheck::default(),
            packets: Vec::new(),
            decoded: 0,
            start: None,
            prev_granule: 0,
            keep: None,
            ended: false,
        })
    }

    fn append_pending(&mut self, data: &[u8], at: usize) -> Result<(), CodecError> {
        if !self.tags_done {
            self.tags.feed(data);
            let room = 8usize.saturating_sub(self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..room]);
        } else {
            if self.pending.len() + data.len() > MAX_AUDIO_PACKET_BYTES {
                return Err(invalid(format!(
                    "an audio packet continued on the page at byte {at} grows beyond \
                     {MAX_AUDIO_PACKET_BYTES} bytes, far more than Opus allows"
                )));
            }
            self.pending.extend_from_slice(data);
        }
        Ok(())
    }

    /// Takes in one page of this stream.
    pub(crate) fn on_page(
        &mut self,
        page: &Page<'a>,
        budget: &mut Budget,
        lenient: bool,
    ) -> Result<(), CodecError> {
        let at = page.offset;
        if page.sequence != self.next_seq {
            return Err(invalid(format!(
                "pages are missing from the Opus stream: the page at byte {at} has sequence \
                 number {} where {} was expected",
                page.sequence, self.next_seq
            )));
        }
        self.next_seq = page.sequence.wrapping_add(1);
        if page.continued() != self.pending_open {
            return Err(invalid(if page.continued() {
                format!("the page at byte {at} continues a packet, but no packet was left open")
            } else {
                format!("a packet left open by the previous page is not continued on the page at byte {at}")
            }));
        }
        let (mut page_samples, mut page_packets) = (0u64, 0usize);
        let (mut start, mut len) = (0usize, 0usize);
        let mut after_tags = false;
        for &lace in page.lacing {
            len += usize::from(lace);
            if lace == 255 {
                continue;
            }
            if after_tags {
                return Err(audio_on_tags_page(at));
            }
            let data = &page.body[start..start + len];
            let packet: Cow<'a, [u8]> = if self.pending_open {
                self.append_pending(data, at)?;
                self.pending_open = false;
                Cow::Owned(std::mem::take(&mut self.pending))
            } else {
                if !self.tags_done {
                    self.tags.feed(data);
                }
                Cow::Borrowed(data)
            };
            (start, len) = (start + len, 0);
            if !self.tags_done {
                if !packet.starts_with(TAGS_MAGIC) {
                    return Err(invalid(format!(
                        "the second packet of the stream (ending on the page at byte {at}) is not \
                         an OpusTags comment header"
                    )));
                }
                self.tags.finish()?;
                self.tags_done = true;
                after_tags = true;
            } else if !packet.is_empty() {
                let Some(samples) = packet_samples_48k(&packet) else {
                    return Err(invalid(format!(
                        "audio packet {} (ending on the page at byte {at}) is not a valid Opus \
                         packet: its TOC byte gives no frames or more than 120 ms",
                        self.packets.len() + 1
                    )));
                };
                page_samples += u64::from(samples);
                page_packets += 1;
                self.packets.push(packet);
            }
        }
        if page.lacing.last() == Some(&255) {
            if after_tags {
                return Err(audio_on_tags_page(at));
            }
            self.append_pending(&page.body[start..], at)?;
            self.pending_open = true;
        }
        if page_packets > 0 {
            self.on_granule(page, page_samples, budget)?;
        }
        if page.eos() {
            self.ended = true;
            if !self.tags_done {
                return Err(invalid(
                    "the stream ends before its OpusTags comment header".into(),
                ));
            }
            if self.pending_open && !lenient {
                return Err(CodecError::TruncatedStream(format!(
                    "the last packet of the stream is cut off: the end-of-stream page at byte {at} \
                     leaves it unfinished"
                )));
            }
        }
        Ok(())
    }

    /// Granule bookkeeping for a page that completes `samples` of audio.
    fn on_granule(
        &mut self,
        page: &Page<'_>,
        samples: u64,
        budget: &mut Budget,
    ) -> Result<(), CodecError> {
        let (at, gp) = (page.offset, page.granule);
        if gp == NO_GRANULE {
            return Err(invalid(format!(
                "bad granule position: the page at byte {at} completes audio packets but has \
                 granule position -1"
            )));
        }
        let start = match self.start {
            Some(start) => start,
            None => {
                let start = match gp.checked_sub(samples) {
                    Some(start) => start,
                    None if page.eos() => 0,
                    None => {
                        return Err(invalid(format!(
                            "bad granule position: the first audio page (byte {at}) has granule \
                             {gp}, less than the {samples} samples its packets hold (RFC 7845 4.5)"
                        )))
                    }
                };
                self.start = Some(start);
                self.prev_granule = start;
                start
            }
        };
        let prev = self.prev_granule;
        let Some(advance) = gp.checked_sub(prev) else {
            return Err(invalid(format!(
                "bad granule position: the page at byte {at} has granule {gp}, before the \
                 previous page's {prev}"
            )));
        };
        if page.eos() {
            self.keep = Some(self.decoded.saturating_add(samples.min(advance)));
        }
        self.decoded = self.decoded.saturating_add(samples);
        self.prev_granule = gp;
        let pre_skip = u64::from(self.head.pre_skip);
        // Exact only on the last page of the input: after an EOS page
        // further links of a chain may follow.
        let last = page.eos() && budget.is_last_page(page);
        budget.check_length((gp - start).saturating_sub(pre_skip), 0, !last)?;
        budget.check_length(
            self.decoded.saturating_sub(pre_skip),
            u64::from(MAX_PACKET_SAMPLES_48K),
            true,
        )
    }
}

fn invalid(msg: String) -> CodecError {
    CodecError::InvalidStream(msg)
}

fn audio_on_tags_page(at: usize) -> CodecError {
    invalid(format!(
        "audio data starts on the page that ends the OpusTags header (byte {at}); RFC 7845 \
         requires it to start on a new page"
    ))
}
