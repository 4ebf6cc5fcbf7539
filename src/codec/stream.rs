//! One Ogg Opus logical stream being read: packet assembly across pages,
//! the header packets, page sequence and continuation checks, packet
//! durations, and the granule bookkeeping of RFC 7845 section 4 (start
//! granule, end trimming) with the duration limit checked on every page,
//! including the granule positions that disagree with their packets and are
//! decoded past as ffmpeg does (counted as repairs). See the rules listed in
//! [`super::demux`].

use std::borrow::Cow;

use super::budget::Budget;
use super::error::CodecError;
use super::head::{packet_samples_48k, OpusHead, TagsCheck, MAX_PACKET_SAMPLES_48K, TAGS_MAGIC};
use super::page::{Page, NO_GRANULE};

/// Largest audio packet accepted (family 1 allows at most 8 streams of at most
/// 6 x 1275 bytes each, about 61 KB).
const MAX_AUDIO_PACKET_BYTES: usize = 128 * 1024;

/// Largest granule position a disagreeing page may have and still be
/// repaired: ffmpeg refuses any above 2^62 ("Unsupported huge granule pos"),
/// which includes every negative one read as signed.
const MAX_REPAIRABLE_GRANULE: u64 = 1 << 62;

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
    /// Granule position of the previous page that completed audio packets,
    /// as written (the start for the first page).
    prev_granule: u64,
    pub(crate) keep: Option<u64>,
    pub(crate) ended: bool,
    /// Pages whose granule position disagreed with their packets and was
    /// decoded past as ffmpeg does.
    pub(crate) repaired_pages: u32,
    /// The first of them, described.
    pub(crate) first_repair: Option<String>,
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
            repaired_pages: 0,
            first_repair: None,
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
    ///
    /// The output is what the packets decode to, as ffmpeg's Ogg demuxer has
    /// it: a granule position only sets the start (first page) and the end
    /// trimming (end-of-stream page, against the previous page's granule as
    /// written). A page whose granule disagrees with its packets (a first
    /// page claiming fewer samples than it holds, a later page not
    /// `previous + samples`, an end-of-stream page before the previous one or
    /// beyond its packets) is decoded past and counted as a repair.
    fn on_granule(
        &mut self,
        page: &Page<'_>,
        samples: u64,
        budget: &mut Budget,
    ) -> Result<(), CodecError> {
        let (at, gp, eos) = (page.offset, page.granule, page.eos());
        if gp == NO_GRANULE {
            return Err(invalid(format!(
                "bad granule position: the page at byte {at} completes audio packets but has \
                 granule position -1"
            )));
        }
        let first = self.start.is_none();
        let (start, prev) = match self.start {
            Some(start) => (start, self.prev_granule),
            None => {
                // RFC 7845 4.5: `granule - samples`; below 0 is allowed only
                // on a page that also ends the stream (it trims the end).
                let start = gp.saturating_sub(samples);
                self.start = Some(start);
                (start, start)
            }
        };
        let end = prev.saturating_add(samples);
        let repair = if first && gp < samples && !eos {
            Some(format!(
                "the first audio page (byte {at}) has granule {gp}, less than the {samples} \
                 samples its packets hold"
            ))
        } else if eos && gp < prev {
            Some(format!(
                "the end-of-stream page (byte {at}) has granule {gp}, before the previous \
                 page's {prev}: its {samples} samples are dropped"
            ))
        } else if eos && gp > end {
            Some(format!(
                "the end-of-stream page (byte {at}) has granule {gp}, beyond the {end} its \
                 packets reach: nothing is trimmed"
            ))
        } else if !first && !eos && gp != end {
            Some(format!(
                "the page at byte {at} has granule {gp} where its packets end at {end}"
            ))
        } else {
            None
        };
        if let Some(what) = repair {
            if gp > MAX_REPAIRABLE_GRANULE || prev > MAX_REPAIRABLE_GRANULE {
                return Err(invalid(format!(
                    "bad granule position: {what}, and a granule past 2^62 (negative as a \
                     signed number) cannot be repaired"
                )));
            }
            self.repaired_pages = self.repaired_pages.saturating_add(1);
            self.first_repair.get_or_insert(what);
        }
        if eos {
            let kept = gp.saturating_sub(prev).min(samples);
            self.keep = Some(self.decoded.saturating_add(kept));
        }
        self.decoded = self.decoded.saturating_add(samples);
        self.prev_granule = gp;
        let pre_skip = u64::from(self.head.pre_skip);
        if self.repaired_pages == 0 {
            // Granules that agree with the packets give the length up to
            // here; exact only on the last page of the input (after an EOS
            // page further links of a chain may follow).
            let last = eos && budget.is_last_page(page);
            budget.check_length(gp.saturating_sub(start).saturating_sub(pre_skip), 0, !last)?;
        }
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
