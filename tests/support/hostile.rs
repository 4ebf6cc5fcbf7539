//! Hostile inputs, built once for both places that send them: the codec's
//! own tests (`codec_hostile`, `codec_alloc`) and the corpus sent to the
//! real server (`hostile_corpus`). Foreign formats, a good stream rebuilt
//! with one part replaced, a page with a wrong CRC, packets libopus
//! refuses, crowds of streams, long chains and streams too long to decode.

use super::ogg::{
    mux, opus_head, opus_tags, packets, page_offset, pages, write_pages, End, Page, HEADER_LEN,
};

/// The start of a WebM (EBML) file.
pub const WEBM: [u8; 8] = [0x1A, 0x45, 0xDF, 0xA3, 0x9F, 0x42, 0x86, 0x81];

/// A PNG signature and the start of its IHDR chunk.
pub const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0\x90wS\xde";

/// Code 1 (two equal frames) with an odd payload: libopus refuses it.
pub const ODD_CBR_PACKET: [u8; 2] = [(9 << 3) | 1, 0xAA];

/// Code 3 with a frame count of 0: not an Opus packet at all.
pub const ZERO_FRAMES_PACKET: [u8; 2] = [(9 << 3) | 3, 0];

/// A good stream taken apart, to be muxed again (one packet per page, under
/// `serial`, with a minimal OpusTags) with one part replaced.
#[derive(Debug, Clone)]
pub struct Parts {
    pub serial: u32,
    /// The OpusHead packet.
    pub head: Vec<u8>,
    /// The audio packets, each with the granule of its page.
    pub audio: Vec<(Vec<u8>, u64)>,
}

impl Parts {
    /// The OpusHead and audio packets of a good single-stream file.
    pub fn of(bytes: &[u8], serial: u32) -> Parts {
        let mut all = packets(bytes);
        let audio = all.split_off(2);
        Parts {
            serial,
            head: all.swap_remove(0).0,
            audio,
        }
    }

    /// Muxes the given packets under this serial, one audio packet per page.
    pub fn build(&self, head: &[u8], tags: &[u8], audio: &[(Vec<u8>, u64)], end: End) -> Vec<u8> {
        mux(self.serial, head, tags, audio, 1, end)
    }

    /// The stream with another OpusHead.
    pub fn with_head(&self, head: &[u8]) -> Vec<u8> {
        self.build(head, &opus_tags(), &self.audio, End::Eos)
    }

    /// The stream with another OpusTags.
    pub fn with_tags(&self, tags: &[u8]) -> Vec<u8> {
        self.build(&self.head, tags, &self.audio, End::Eos)
    }

    /// The stream with other audio packets.
    pub fn with_audio(&self, audio: &[(Vec<u8>, u64)]) -> Vec<u8> {
        self.build(&self.head, &opus_tags(), audio, End::Eos)
    }

    /// The whole stream with no EOS flag on its last page.
    pub fn without_eos(&self) -> Vec<u8> {
        self.build(&self.head, &opus_tags(), &self.audio, End::NoEos)
    }
}

/// `bytes` with byte `at` of page `k`'s body XORed with `mask` and the
/// page's CRC left as it was, so wrong.
pub fn bad_crc(bytes: &[u8], k: usize, at: usize, mask: u8) -> Vec<u8> {
    let p = pages(bytes);
    let mut out = bytes.to_vec();
    out[page_offset(&p, k) + HEADER_LEN + p[k].lacing.len() + at] ^= mask;
    out
}

/// An Ogg Vorbis-like stream (no Opus in it): an identification header of
/// 30 bytes starting `\x01vorbis` and `fields`, a `\x03vorbis` comment
/// header, then `audio`.
pub fn vorbis_stream(serial: u32, fields: &[u8], audio: &[(Vec<u8>, u64)]) -> Vec<u8> {
    let mut head = b"\x01vorbis".to_vec();
    head.extend_from_slice(fields);
    head.resize(30, 0);
    mux(serial, &head, b"\x03vorbis", audio, 1, End::Eos)
}

/// `streams` junk streams (a BOS page each, serials from 1000) multiplexed
/// into one link before the pages of `link`.
pub fn crowded(streams: u32, link: &[Page]) -> Vec<u8> {
    let mut crowd: Vec<Page> = (0..streams)
        .map(|i| Page {
            flags: 0x02,
            granule: 0,
            serial: 1000 + i,
            sequence: 0,
            lacing: vec![4],
            body: b"junk".to_vec(),
        })
        .collect();
    crowd.extend(link.iter().cloned());
    write_pages(&crowd)
}

/// A complete mono link holding one audio packet (no pre-skip), to chain
/// many of: `link.repeat(n)`.
pub fn one_packet_link(packet: &[u8], granule: u64) -> Vec<u8> {
    mux(
        5,
        &opus_head(1, 1, 0, 0, 0, &[]),
        &opus_tags(),
        &[(packet.to_vec(), granule)],
        1,
        End::Eos,
    )
}

/// `n` packets of 120 ms each (two 60 ms SILK frames, CBR, one odd byte)
/// that libopus would refuse, muxed with honest granules (the last one
/// replaced by `last_granule` if given), 255 per page: a stream whose length
/// is known long before anything is decoded.
pub fn long_stream(n: usize, last_granule: Option<u64>) -> Vec<u8> {
    let packet = vec![(11 << 3) | 3, 2, 0xFF];
    let mut a: Vec<(Vec<u8>, u64)> = (0..n)
        .map(|i| (packet.clone(), (i as u64 + 1) * 5760))
        .collect();
    if let (Some(gp), Some(last)) = (last_granule, a.last_mut()) {
        last.1 = gp;
    }
    mux(
        77,
        &opus_head(1, 1, 312, 0, 0, &[]),
        &opus_tags(),
        &a,
        255,
        End::Eos,
    )
}

/// `bytes` (a valid Ogg file) with page `k` marked as continuing a packet
/// from the page before it (header flag 0x01) and its CRC made right. On a
/// BOS page: a stream claiming to start in the middle of a packet.
pub fn continued_page(bytes: &[u8], k: usize) -> Vec<u8> {
    let mut p = pages(bytes);
    p[k].flags |= 0x01;
    write_pages(&p)
}
