//! A small Ogg page editor and muxer for building test streams: split a file
//! into editable pages and write them back, fix one page's CRC in place,
//! read a stream's packets, mux packets into a stream, and the two Opus
//! header packets. Checksums are the codec's own ([`write_page`],
//! [`crc32`]), not a copy.

use ogg::writing::{PacketWriteEndInfo, PacketWriter};
use opusgate::codec::{crc32, write_page};

/// Length of the fixed part of a page header.
pub const HEADER_LEN: usize = 27;

/// One Ogg page, editable.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub flags: u8,
    pub granule: u64,
    pub serial: u32,
    pub sequence: u32,
    pub lacing: Vec<u8>,
    pub body: Vec<u8>,
}

impl Page {
    /// Serialized length: header, lacing table and body.
    pub fn len(&self) -> usize {
        HEADER_LEN + self.lacing.len() + self.body.len()
    }
}

/// Splits a valid Ogg file into pages.
pub fn pages(bytes: &[u8]) -> Vec<Page> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        assert_eq!(&bytes[i..i + 4], b"OggS", "page at {i}");
        let n = usize::from(bytes[i + 26]);
        let lacing = bytes[i + HEADER_LEN..i + HEADER_LEN + n].to_vec();
        let len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
        let body_at = i + HEADER_LEN + n;
        out.push(Page {
            flags: bytes[i + 5],
            granule: u64::from_le_bytes(bytes[i + 6..i + 14].try_into().expect("8 bytes")),
            serial: u32::from_le_bytes(bytes[i + 14..i + 18].try_into().expect("4 bytes")),
            sequence: u32::from_le_bytes(bytes[i + 18..i + 22].try_into().expect("4 bytes")),
            lacing,
            body: bytes[body_at..body_at + len].to_vec(),
        });
        i = body_at + len;
    }
    out
}

/// Serializes pages, each with a correct CRC.
pub fn write_pages(pages: &[Page]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pages {
        write_page(
            &mut out, p.flags, p.granule, p.serial, p.sequence, &p.lacing, &p.body,
        );
    }
    out
}

/// Byte offset of page `k` in the serialization of `pages`.
pub fn page_offset(pages: &[Page], k: usize) -> usize {
    pages[..k].iter().map(Page::len).sum()
}

/// Recomputes the CRC of the page at `off` in `bytes`, over the extent its
/// (possibly edited) lacing table claims.
pub fn fix_crc(bytes: &mut [u8], off: usize) {
    let nseg = usize::from(bytes[off + 26]);
    let body: usize = bytes[off + HEADER_LEN..off + HEADER_LEN + nseg]
        .iter()
        .map(|&l| usize::from(l))
        .sum();
    let end = off + HEADER_LEN + nseg + body;
    bytes[off + 22..off + 26].fill(0);
    let crc = crc32(0, &bytes[off..end]);
    bytes[off + 22..off + 26].copy_from_slice(&crc.to_le_bytes());
}

/// Gives every page of a valid Ogg file the serial number `serial`: other
/// bytes, same audio.
pub fn reserial(ogg: &[u8], serial: u32) -> Vec<u8> {
    let mut p = pages(ogg);
    for page in &mut p {
        page.serial = serial;
    }
    write_pages(&p)
}

/// The packets of a single-stream Ogg file, with the granule of the page each
/// completes on, as the `ogg` crate reads them.
pub fn packets(bytes: &[u8]) -> Vec<(Vec<u8>, u64)> {
    let mut r = ogg::reading::PacketReader::new(std::io::Cursor::new(bytes));
    let mut out = Vec::new();
    while let Some(p) = r.read_packet().expect("valid Ogg") {
        let gp = p.absgp_page();
        out.push((p.data, gp));
    }
    out
}

/// How a built stream ends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The last page has the EOS flag.
    Eos,
    /// No EOS flag anywhere.
    NoEos,
}

/// Muxes header and audio packets (each with its granule) into one stream:
/// headers on their own pages, `per_page` audio packets per page.
pub fn mux(
    serial: u32,
    head: &[u8],
    tags: &[u8],
    audio: &[(Vec<u8>, u64)],
    per_page: usize,
    end: End,
) -> Vec<u8> {
    let mut w = PacketWriter::new(Vec::new());
    w.write_packet(head.to_vec(), serial, PacketWriteEndInfo::EndPage, 0)
        .expect("mux head");
    w.write_packet(tags.to_vec(), serial, PacketWriteEndInfo::EndPage, 0)
        .expect("mux tags");
    for (i, (p, gp)) in audio.iter().enumerate() {
        let last = i + 1 == audio.len();
        let info = match (last, end) {
            (true, End::Eos) => PacketWriteEndInfo::EndStream,
            (true, End::NoEos) => PacketWriteEndInfo::EndPage,
            _ if (i + 1) % per_page == 0 => PacketWriteEndInfo::EndPage,
            _ => PacketWriteEndInfo::NormalPacket,
        };
        w.write_packet(p.clone(), serial, info, *gp)
            .expect("mux audio");
    }
    w.into_inner()
}

/// An OpusHead (family 0 unless a mapping table is given).
pub fn opus_head(
    version: u8,
    channels: u8,
    pre_skip: u16,
    gain_q8: i16,
    family: u8,
    table: &[u8],
) -> Vec<u8> {
    let mut h = b"OpusHead".to_vec();
    h.extend_from_slice(&[version, channels]);
    h.extend_from_slice(&pre_skip.to_le_bytes());
    h.extend_from_slice(&48000u32.to_le_bytes());
    h.extend_from_slice(&gain_q8.to_le_bytes());
    h.push(family);
    h.extend_from_slice(table);
    h
}

/// A minimal OpusTags: vendor "test", no comments.
pub fn opus_tags() -> Vec<u8> {
    opus_tags_raw(4, b"test", 0, b"")
}

/// An OpusTags packet with the given vendor length field, vendor bytes,
/// comment count field and raw comment area (which need not agree).
pub fn opus_tags_raw(vendor_len: u32, vendor: &[u8], count: u32, comments: &[u8]) -> Vec<u8> {
    let mut t = b"OpusTags".to_vec();
    t.extend_from_slice(&vendor_len.to_le_bytes());
    t.extend_from_slice(vendor);
    t.extend_from_slice(&count.to_le_bytes());
    t.extend_from_slice(comments);
    t
}

/// Replaces the OpusHead output gain of a file (first page) and fixes the CRC.
pub fn set_output_gain(bytes: &[u8], gain_q8: i16) -> Vec<u8> {
    let mut p = pages(bytes);
    assert!(p[0].body.starts_with(b"OpusHead"));
    p[0].body[16..18].copy_from_slice(&gain_q8.to_le_bytes());
    write_pages(&p)
}
