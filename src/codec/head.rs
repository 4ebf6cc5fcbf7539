//! The Ogg Opus identification header (OpusHead, RFC 7845 section 5.1) and
//! the duration of an Opus packet from its TOC byte (RFC 6716 section 3.1).

use super::error::CodecError;

/// Magic signature of the identification header.
pub(crate) const HEAD_MAGIC: &[u8; 8] = b"OpusHead";
/// Magic signature of the comment header.
pub(crate) const TAGS_MAGIC: &[u8; 8] = b"OpusTags";

/// The most samples (at 48 kHz) one Opus packet can hold: 120 ms.
pub const MAX_PACKET_SAMPLES_48K: u32 = 5760;

/// A parsed and validated OpusHead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusHead {
    /// Encapsulation version (accepted: 0 to 15).
    pub version: u8,
    /// Output channel count (1 to 8).
    pub channels: u8,
    /// Samples at 48 kHz to discard from the start of the decoded output.
    pub pre_skip: u16,
    /// Sample rate of the original input, informational only (0 if unknown).
    pub input_rate: u32,
    /// Output gain in Q7.8 dB, applied by the decoder.
    pub output_gain: i16,
    /// Channel mapping family (0 or 1; others are refused while parsing).
    pub mapping_family: u8,
    /// Number of Opus streams in each packet.
    pub streams: u8,
    /// How many of those streams are coupled (stereo).
    pub coupled: u8,
    /// Decoded channel index for each output channel (`channels` entries).
    pub mapping: Vec<u8>,
}

impl OpusHead {
    /// Parses an OpusHead packet. Refuses what RFC 7845 forbids with
    /// `invalid_stream` and mapping families other than 0 and 1 with
    /// `unsupported_channel_mapping`.
    pub fn parse(packet: &[u8]) -> Result<OpusHead, CodecError> {
        let bad = |why: String| CodecError::InvalidStream(format!("bad OpusHead: {why}"));
        if packet.len() < 19 || &packet[..8] != HEAD_MAGIC {
            return Err(bad(format!(
                "the identification header is {} bytes long or lacks the OpusHead signature; it needs at least 19",
                packet.len()
            )));
        }
        let version = packet[8];
        if version > 15 {
            return Err(bad(format!(
                "encapsulation version {version} is not supported (versions 0 to 15 are; the file was \
                 written for an incompatible future format)"
            )));
        }
        let channels = packet[9];
        if channels == 0 {
            return Err(bad("channel count is 0".into()));
        }
        let pre_skip = u16::from_le_bytes([packet[10], packet[11]]);
        let input_rate = u32::from_le_bytes([packet[12], packet[13], packet[14], packet[15]]);
        let output_gain = i16::from_le_bytes([packet[16], packet[17]]);
        let mapping_family = packet[18];
        let (streams, coupled, mapping) = match mapping_family {
            0 => {
                if channels > 2 {
                    return Err(bad(format!(
                        "channel mapping family 0 allows 1 or 2 channels, the header says {channels}"
                    )));
                }
                (1, channels - 1, (0..channels).collect())
            }
            1 => {
                if channels > 8 {
                    return Err(bad(format!(
                        "channel mapping family 1 allows at most 8 channels, the header says {channels}"
                    )));
                }
                let table_end = 21 + usize::from(channels);
                if packet.len() < table_end {
                    return Err(bad(format!(
                        "the channel mapping table is cut short ({} bytes, {table_end} needed)",
                        packet.len()
                    )));
                }
                let (streams, coupled) = (packet[19], packet[20]);
                if streams == 0
                    || coupled > streams
                    || u16::from(streams) + u16::from(coupled) > 255
                {
                    return Err(bad(format!(
                        "impossible stream counts: {streams} streams of which {coupled} coupled"
                    )));
                }
                let mapping = packet[21..table_end].to_vec();
                let decoded = streams + coupled;
                if let Some(&m) = mapping.iter().find(|&&m| m != 255 && m >= decoded) {
                    return Err(bad(format!(
                        "channel mapping refers to decoded channel {m}, but there are only {decoded}"
                    )));
                }
                (streams, coupled, mapping)
            }
            family => return Err(CodecError::UnsupportedChannelMapping { family, channels }),
        };
        Ok(OpusHead {
            version,
            channels,
            pre_skip,
            input_rate,
            output_gain,
            mapping_family,
            streams,
            coupled,
            mapping,
        })
    }
}

/// Checks the framing of an OpusTags packet (RFC 7845 section 5.2) fed in
/// pieces, without keeping it: the vendor string length, the comment count
/// and every comment length must stay within the packet, as libopusfile
/// (and so `opusdec`) requires. Bytes after the last comment are allowed.
/// Each length field takes 4 bytes of input, so the work is bounded by the
/// packet's size whatever the fields claim.
#[derive(Debug, Clone)]
pub(crate) struct TagsCheck {
    /// Bytes fed so far.
    pos: u64,
    /// What the next length field is, or `None` once the last comment is
    /// framed.
    next: Option<TagsField>,
    /// Where the next length field starts.
    field_at: u64,
    /// Bytes of the next length field gathered so far.
    field: [u8; 4],
    have: usize,
    /// Comments still to frame after the count was read.
    comments_left: u32,
    /// Where the packet must not end before.
    required_end: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TagsField {
    VendorLength,
    CommentCount,
    CommentLength,
}

impl Default for TagsCheck {
    fn default() -> Self {
        TagsCheck {
            pos: 0,
            next: Some(TagsField::VendorLength),
            field_at: TAGS_MAGIC.len() as u64,
            field: [0; 4],
            have: 0,
            comments_left: 0,
            required_end: 0,
        }
    }
}

impl TagsCheck {
    /// Takes in the next piece of the packet.
    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        while let Some(field) = self.next {
            if data.is_empty() {
                return;
            }
            if self.pos < self.field_at {
                let skip = usize::try_from(self.field_at - self.pos)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.pos += skip as u64;
                data = &data[skip..];
                continue;
            }
            let take = (4 - self.have).min(data.len());
            self.field[self.have..self.have + take].copy_from_slice(&data[..take]);
            self.have += take;
            self.pos += take as u64;
            data = &data[take..];
            if self.have == 4 {
                self.have = 0;
                self.on_field(field, u32::from_le_bytes(self.field));
            }
        }
        self.pos += data.len() as u64;
    }

    fn on_field(&mut self, field: TagsField, value: u32) {
        let len = u64::from(value);
        match field {
            TagsField::VendorLength => {
                self.field_at = self.pos + len;
                self.next = Some(TagsField::CommentCount);
            }
            TagsField::CommentCount => {
                self.comments_left = value;
                self.field_at = self.pos;
                self.required_end = self.pos;
                self.next = (value > 0).then_some(TagsField::CommentLength);
            }
            TagsField::CommentLength => {
                self.comments_left = self.comments_left.saturating_sub(1);
                self.field_at = self.pos + len;
                self.required_end = self.pos + len;
                if self.comments_left == 0 {
                    self.next = None;
                }
            }
        }
    }

    /// After the last piece: whether every length stayed within the packet.
    pub(crate) fn finish(&self) -> Result<(), CodecError> {
        if self.next.is_none() && self.pos >= self.required_end {
            return Ok(());
        }
        Err(CodecError::InvalidStream(format!(
            "bad OpusTags: the comment header is {} bytes long, but its {} points past its end \
             (opusdec refuses such a file too): the file is corrupted",
            self.pos,
            match self.next {
                Some(TagsField::VendorLength) => "length (at least 16 bytes are needed)",
                Some(TagsField::CommentCount) => "vendor string length",
                Some(TagsField::CommentLength) => "comment count",
                None => "last comment length",
            }
        )))
    }
}

/// Number of samples at 48 kHz that `packet` decodes to, read from its TOC
/// byte (and frame count byte for code 3), or `None` when the packet is empty,
/// its frame count is 0, or it would exceed 120 ms. The decoder checks the
/// rest of the packet.
pub fn packet_samples_48k(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    let frame: u32 = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config & 3)],
        12..=15 => [480, 960][usize::from(config & 1)],
        _ => [120, 240, 480, 960][usize::from(config & 3)],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3F),
    };
    let total = frame * frames;
    (frames > 0 && total <= MAX_PACKET_SAMPLES_48K).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(version: u8, channels: u8, family: u8, table: &[u8]) -> Vec<u8> {
        let mut h = b"OpusHead".to_vec();
        h.extend_from_slice(&[version, channels]);
        h.extend_from_slice(&312u16.to_le_bytes());
        h.extend_from_slice(&16000u32.to_le_bytes());
        h.extend_from_slice(&(-1536i16).to_le_bytes());
        h.push(family);
        h.extend_from_slice(table);
        h
    }

    #[test]
    fn parses_family_0_and_1() {
        let h = OpusHead::parse(&head(1, 2, 0, &[])).expect("stereo head");
        assert_eq!(
            (h.channels, h.pre_skip, h.output_gain, h.streams, h.coupled),
            (2, 312, -1536, 1, 1)
        );
        let h = OpusHead::parse(&head(1, 6, 1, &[4, 2, 0, 4, 1, 2, 3, 5])).expect("5.1 head");
        assert_eq!((h.streams, h.coupled, h.mapping.len()), (4, 2, 6));
    }

    #[test]
    fn refuses_bad_heads() {
        let code = |p: &[u8]| OpusHead::parse(p).map(|_| ()).map_err(|e| e.code());
        assert_eq!(code(&head(16, 1, 0, &[])), Err("invalid_stream"));
        assert_eq!(code(&head(1, 0, 0, &[])), Err("invalid_stream"));
        assert_eq!(code(&head(1, 3, 0, &[])), Err("invalid_stream"));
        assert_eq!(code(&head(1, 6, 1, &[4, 2, 0, 4])), Err("invalid_stream"));
        assert_eq!(code(&head(1, 2, 1, &[1, 0, 0, 1])), Err("invalid_stream"));
        assert_eq!(code(&head(1, 2, 1, &[0, 0, 0, 0])), Err("invalid_stream"));
        assert_eq!(
            code(&head(1, 4, 2, &[])),
            Err("unsupported_channel_mapping")
        );
        assert_eq!(
            code(&head(1, 4, 255, &[])),
            Err("unsupported_channel_mapping")
        );
        assert_eq!(code(b"OpusHead\x01\x01"), Err("invalid_stream"));
    }

    fn tags_ok(packet: &[u8], piece: usize) -> bool {
        let mut check = TagsCheck::default();
        for chunk in packet.chunks(piece.max(1)) {
            check.feed(chunk);
        }
        check.finish().is_ok()
    }

    #[test]
    fn tags_framing_is_checked_in_any_pieces() {
        let tags = |vendor_len: u32, count: u32, comments: &[u8]| {
            let mut t = b"OpusTags".to_vec();
            t.extend_from_slice(&vendor_len.to_le_bytes());
            t.extend_from_slice(b"test");
            t.extend_from_slice(&count.to_le_bytes());
            t.extend_from_slice(comments);
            t
        };
        let mut two = 3u32.to_le_bytes().to_vec();
        two.extend_from_slice(b"A=b");
        two.extend_from_slice(&0u32.to_le_bytes());
        for piece in [1, 2, 3, 5, 7, 1000] {
            assert!(tags_ok(&tags(4, 0, b""), piece));
            assert!(tags_ok(&tags(4, 2, &two), piece));
            assert!(tags_ok(&tags(4, 0, b"\x01binary padding"), piece));
            assert!(!tags_ok(&tags(4, 3, &two), piece), "count past the end");
            assert!(!tags_ok(&tags(5, 0, b""), piece), "vendor past the end");
            assert!(!tags_ok(&tags(u32::MAX, 0, b""), piece));
            assert!(!tags_ok(&tags(4, 1, &two[..5]), piece), "comment cut");
            assert!(!tags_ok(&tags(4, 0, b"")[..15], piece), "too short");
            assert!(!tags_ok(&tags(4, u32::MAX, b""), piece));
        }
    }

    #[test]
    fn packet_durations() {
        assert_eq!(packet_samples_48k(&[]), None);
        assert_eq!(packet_samples_48k(&[(9 << 3)]), Some(960)); // SILK WB 20 ms
        assert_eq!(packet_samples_48k(&[(11 << 3)]), Some(2880)); // SILK WB 60 ms
        assert_eq!(packet_samples_48k(&[(31 << 3) | 1, 0, 0]), Some(1920)); // CELT 20 ms x2
        assert_eq!(packet_samples_48k(&[(11 << 3) | 3, 2]), Some(5760)); // 2 x 60 ms
        assert_eq!(packet_samples_48k(&[(11 << 3) | 3, 3]), None); // 180 ms
        assert_eq!(packet_samples_48k(&[(11 << 3) | 3, 0]), None); // 0 frames
        assert_eq!(packet_samples_48k(&[(11 << 3) | 3]), None); // code 3 without count
        assert_eq!(packet_samples_48k(&[(16 << 3) | 3, 48]), Some(5760)); // 48 x 2.5 ms
    }
}
