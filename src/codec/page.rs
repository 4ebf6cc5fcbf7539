//! Ogg page framing (RFC 3533) over an in-memory input: reads one page at a
//! byte offset, checks its version and CRC, and hands out borrowed slices of
//! its lacing table and body. Nothing is copied and nothing is allocated.
//!
//! The `ogg` crate's `PacketReader` is not used for reading: it copies every
//! packet, silently skips up to 150 KB of garbage looking for the next
//! capture pattern (hiding corruption this converter must report), and its
//! errors do not say where the input went wrong or whether it was merely cut
//! off. The sample encoder does use the crate's `PacketWriter`.
//!
//! Writing is [`write_page`], with the CRC by [`crc32`]: both public (as
//! `codec::write_page` and `codec::crc32`) so that the tests and benches build
//! and edit Ogg streams with this same CRC rather than a copy of it.

/// The capture pattern every Ogg page starts with.
pub(crate) const CAPTURE: &[u8; 4] = b"OggS";

/// Length of the fixed part of a page header.
pub(crate) const HEADER_LEN: usize = 27;

/// Granule position meaning "no packet completes on this page" (-1).
pub(crate) const NO_GRANULE: u64 = u64::MAX;

const FLAG_CONTINUED: u8 = 0x01;
const FLAG_BOS: u8 = 0x02;
const FLAG_EOS: u8 = 0x04;

/// One checked Ogg page, borrowing from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Page<'a> {
    /// Byte offset of the page in the input.
    pub offset: usize,
    /// Header type flags.
    pub flags: u8,
    /// Granule position ([`NO_GRANULE`] when no packet completes here).
    pub granule: u64,
    /// Logical stream serial number.
    pub serial: u32,
    /// Page sequence number within its logical stream.
    pub sequence: u32,
    /// Lacing values (segment table).
    pub lacing: &'a [u8],
    /// Page body: the concatenated segments.
    pub body: &'a [u8],
}

impl Page<'_> {
    /// The first packet on this page continues one from the previous page.
    pub fn continued(&self) -> bool {
        self.flags & FLAG_CONTINUED != 0
    }
    /// First page of its logical stream.
    pub fn bos(&self) -> bool {
        self.flags & FLAG_BOS != 0
    }
    /// Last page of its logical stream.
    pub fn eos(&self) -> bool {
        self.flags & FLAG_EOS != 0
    }
    /// Total length of the page in bytes.
    pub fn len(&self) -> usize {
        HEADER_LEN + self.lacing.len() + self.body.len()
    }
}

/// Why no page could be read at an offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PageError {
    /// The input ends inside the page; `missing` bytes of it are absent
    /// (at least that many: a cut lacing table hides the body length).
    Truncated { missing: usize },
    /// The bytes at the offset are not the capture pattern.
    NotAPage,
    /// The stream structure version is not 0.
    BadVersion(u8),
    /// The stored CRC does not match the page content.
    BadCrc { stored: u32, computed: u32 },
}

/// Reads the page that starts at `offset`.
pub(crate) fn read_page(input: &[u8], offset: usize) -> Result<Page<'_>, PageError> {
    let rest = input.get(offset..).unwrap_or(&[]);
    if rest.len() < HEADER_LEN {
        // A partial header that starts like a page is a cut-off page; anything
        // else is not a page at all.
        let n = rest.len().min(CAPTURE.len());
        return if rest[..n] == CAPTURE[..n] && !rest.is_empty() {
            Err(PageError::Truncated {
                missing: HEADER_LEN - rest.len(),
            })
        } else {
            Err(PageError::NotAPage)
        };
    }
    if &rest[..4] != CAPTURE {
        return Err(PageError::NotAPage);
    }
    if rest[4] != 0 {
        return Err(PageError::BadVersion(rest[4]));
    }
    let nseg = usize::from(rest[26]);
    let lacing_end = HEADER_LEN + nseg;
    if rest.len() < lacing_end {
        return Err(PageError::Truncated {
            missing: lacing_end - rest.len(),
        });
    }
    let lacing = &rest[HEADER_LEN..lacing_end];
    let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
    let page_end = lacing_end + body_len;
    if rest.len() < page_end {
        return Err(PageError::Truncated {
            missing: page_end - rest.len(),
        });
    }
    let body = &rest[lacing_end..page_end];
    let stored = u32::from_le_bytes([rest[22], rest[23], rest[24], rest[25]]);
    let mut crc = crc32(0, &rest[..22]);
    crc = crc32(crc, &[0, 0, 0, 0]);
    crc = crc32(crc, &rest[26..page_end]);
    if crc != stored {
        return Err(PageError::BadCrc {
            stored,
            computed: crc,
        });
    }
    Ok(Page {
        offset,
        flags: rest[5],
        granule: u64::from_le_bytes(le8(&rest[6..14])),
        serial: u32::from_le_bytes([rest[14], rest[15], rest[16], rest[17]]),
        sequence: u32::from_le_bytes([rest[18], rest[19], rest[20], rest[21]]),
        lacing,
        body,
    })
}

fn le8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    a
}

/// Lookup table of the Ogg CRC-32 (polynomial 0x04C11DB7, MSB first, no
/// reflection, initial value 0, no final XOR).
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            r = if r & 0x8000_0000 != 0 {
                (r << 1) ^ 0x04C1_1DB7
            } else {
                r << 1
            };
            bit += 1;
        }
        table[i] = r;
        i += 1;
    }
    table
};

/// Continues the Ogg CRC-32 `crc` over `data` (start with 0).
///
/// A page's checksum is this over the whole page with its checksum field
/// (bytes 22 to 25) set to zero, stored little-endian in that field.
pub fn crc32(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = (crc << 8) ^ CRC_TABLE[usize::from((crc >> 24) as u8 ^ b)];
    }
    crc
}

/// Appends one Ogg page to `out`: version 0, the given header fields, the
/// lacing table and the body as they are (not checked against each other,
/// so broken pages can be built too), and a correct CRC.
///
/// # Panics
///
/// If `lacing` has more than 255 entries.
pub fn write_page(
    out: &mut Vec<u8>,
    flags: u8,
    granule: u64,
    serial: u32,
    sequence: u32,
    lacing: &[u8],
    body: &[u8],
) {
    let start = out.len();
    out.extend_from_slice(CAPTURE);
    out.push(0);
    out.push(flags);
    out.extend_from_slice(&granule.to_le_bytes());
    out.extend_from_slice(&serial.to_le_bytes());
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(u8::try_from(lacing.len()).expect("at most 255 lacing values"));
    out.extend_from_slice(lacing);
    out.extend_from_slice(body);
    let crc = crc32(0, &out[start..]);
    out[start + 22..start + 26].copy_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a page with a correct CRC.
    fn page(flags: u8, gp: u64, serial: u32, seq: u32, lacing: &[u8], body: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        write_page(&mut p, flags, gp, serial, seq, lacing, body);
        p
    }

    #[test]
    fn crc_matches_known_value() {
        // CRC-32/MPEG-2 style check value with init 0 and no final xor
        // ("CRC-32/BZIP2" without reflection/xor): the Ogg variant of "123456789".
        assert_eq!(crc32(0, b"123456789"), 0x89A1_897F);
    }

    #[test]
    fn reads_a_page_and_checks_it() {
        let bytes = page(FLAG_BOS, 7, 42, 0, &[3, 2], b"abcde");
        let p = read_page(&bytes, 0).expect("valid page");
        assert!(p.bos() && !p.eos() && !p.continued());
        assert_eq!((p.granule, p.serial, p.sequence), (7, 42, 0));
        assert_eq!(p.body, b"abcde");
        assert_eq!(p.len(), bytes.len());

        let mut bad = bytes.clone();
        bad[30] ^= 1;
        assert!(matches!(read_page(&bad, 0), Err(PageError::BadCrc { .. })));
        assert_eq!(
            read_page(&bytes[..bytes.len() - 2], 0),
            Err(PageError::Truncated { missing: 2 })
        );
        assert_eq!(
            read_page(&bytes[..10], 0),
            Err(PageError::Truncated { missing: 17 })
        );
        assert_eq!(read_page(b"RIFF....", 0), Err(PageError::NotAPage));
        assert_eq!(read_page(&bytes, bytes.len()), Err(PageError::NotAPage));
    }
}
