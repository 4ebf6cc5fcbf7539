//! WebM fixtures, independent of the codec's demuxer: a small EBML reader
//! (enough for the files ffmpeg writes, whose sizes are known), the Opus
//! track of such a file (OpusHead, frames, DiscardPadding), and a muxer that
//! writes those frames again the way a browser does (unknown-size Segment
//! and Clusters, no Duration, no Cues), in BlockGroups, or laced (Xiph, EBML,
//! fixed), which ffmpeg's muxer never does.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::clips::write_wav;
use super::tools::run;

pub const EBML: u32 = 0x1A45_DFA3;
pub const SEGMENT: u32 = 0x1853_8067;
pub const INFO: u32 = 0x1549_A966;
pub const DURATION: u32 = 0x4489;
pub const TRACKS: u32 = 0x1654_AE6B;
pub const TRACK_ENTRY: u32 = 0xAE;
pub const CODEC_PRIVATE: u32 = 0x63A2;
pub const CLUSTER: u32 = 0x1F43_B675;
pub const TIMESTAMP: u32 = 0xE7;
pub const SIMPLE_BLOCK: u32 = 0xA3;
pub const BLOCK_GROUP: u32 = 0xA0;
pub const BLOCK: u32 = 0xA1;
pub const DISCARD_PADDING: u32 = 0x75A2;
pub const CUES: u32 = 0x1C53_BB6B;

/// The masters the reader descends into.
const MASTERS: [u32; 6] = [SEGMENT, INFO, TRACKS, TRACK_ENTRY, CLUSTER, BLOCK_GROUP];

/// One element found by [`elements`].
#[derive(Debug, Clone)]
pub struct Element {
    pub id: u32,
    /// Where its header starts.
    pub start: usize,
    /// Its data.
    pub data: Range<usize>,
}

/// An EBML variable-size integer at `at`: (value, length, all value bits set).
fn vint(b: &[u8], at: usize) -> (u64, usize, bool) {
    let first = b[at];
    assert!(first != 0, "not a vint at byte {at}");
    let len = first.leading_zeros() as usize + 1;
    let mut v = u64::from(first) & (0xFF >> len);
    for &x in &b[at + 1..at + len] {
        v = (v << 8) | u64::from(x);
    }
    (v, len, v == (1u64 << (7 * len)) - 1)
}

/// Every element of a file with known sizes, in file order (masters before
/// their children).
pub fn elements(b: &[u8]) -> Vec<Element> {
    let mut out = Vec::new();
    walk(b, 0..b.len(), &mut out);
    out
}

fn walk(b: &[u8], range: Range<usize>, out: &mut Vec<Element>) {
    let mut at = range.start;
    while at < range.end {
        let (id, id_len, _) = vint(b, at);
        let id = (id | (1 << (7 * id_len))) as u32;
        let (size, size_len, unknown) = vint(b, at + id_len);
        let data_start = at + id_len + size_len;
        let end = if unknown {
            range.end
        } else {
            data_start + size as usize
        };
        out.push(Element {
            id,
            start: at,
            data: data_start..end.min(b.len()),
        });
        if MASTERS.contains(&id) {
            walk(b, data_start..end.min(range.end), out);
        }
        at = end;
    }
}

/// How many elements of `id` the file has.
pub fn count(b: &[u8], id: u32) -> usize {
    elements(b).iter().filter(|e| e.id == id).count()
}

/// The Opus track of a WebM file written by ffmpeg (one track, no lacing).
#[derive(Debug, Clone)]
pub struct OpusTrack {
    /// The CodecPrivate (OpusHead).
    pub head: Vec<u8>,
    pub frames: Vec<Vec<u8>>,
    /// The DiscardPadding (ns) of the last block, if any.
    pub last_padding: Option<i64>,
}

impl OpusTrack {
    /// Reads the track of `b`.
    pub fn read(b: &[u8]) -> OpusTrack {
        let els = elements(b);
        let head = els
            .iter()
            .find(|e| e.id == CODEC_PRIVATE)
            .map(|e| b[e.data.clone()].to_vec())
            .expect("a CodecPrivate");
        let mut frames = Vec::new();
        let mut last_padding = None;
        for e in &els {
            match e.id {
                SIMPLE_BLOCK | BLOCK => {
                    let d = &b[e.data.clone()];
                    let (_, track_len, _) = vint(d, 0);
                    assert_eq!(d[track_len + 2] & 0x06, 0, "ffmpeg does not lace");
                    frames.push(d[track_len + 3..].to_vec());
                    last_padding = None;
                }
                DISCARD_PADDING => {
                    let mut v = 0i64;
                    for (i, &x) in b[e.data.clone()].iter().enumerate() {
                        v = if i == 0 {
                            i64::from(x as i8)
                        } else {
                            (v << 8) | i64::from(x)
                        };
                    }
                    last_padding = Some(v);
                }
                _ => {}
            }
        }
        OpusTrack {
            head,
            frames,
            last_padding,
        }
    }

    /// Channels from the OpusHead.
    pub fn channels(&self) -> u8 {
        self.head[9]
    }
}

/// Samples at 48 kHz of an Opus packet, from its TOC (RFC 6716 3.1).
fn toc_samples(p: &[u8]) -> u64 {
    let config = p[0] >> 3;
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config & 3)],
        12..=15 => [480, 960][usize::from(config & 1)],
        _ => [120, 240, 480, 960][usize::from(config & 3)],
    };
    let count = match p[0] & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u64::from(p[1] & 0x3F),
    };
    frame * count
}

/// Block lacing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lacing {
    None,
    Xiph,
    Ebml,
    Fixed,
}

/// How [`Mux::write`] lays a track out.
#[derive(Clone, Debug)]
pub struct Mux {
    /// Segment and Clusters of unknown size (what a live recorder writes).
    pub unknown_sizes: bool,
    /// Info's Duration, in ms.
    pub duration_ms: Option<f64>,
    /// Every block in a BlockGroup rather than a SimpleBlock.
    pub block_groups: bool,
    pub lacing: Lacing,
    /// Frames per block (1 unless laced).
    pub frames_per_block: usize,
    /// Blocks per Cluster.
    pub blocks_per_cluster: usize,
    /// A DiscardPadding (ns) on the last frame (alone in a BlockGroup).
    pub last_padding: Option<i64>,
}

impl Mux {
    /// Chrome's MediaRecorder layout: unknown sizes, no Duration, no Cues,
    /// SimpleBlocks, no DiscardPadding, a Cluster per second or so.
    pub fn browser() -> Mux {
        Mux {
            unknown_sizes: true,
            duration_ms: None,
            block_groups: false,
            lacing: Lacing::None,
            frames_per_block: 1,
            blocks_per_cluster: 50,
            last_padding: None,
        }
    }

    /// Writes `track` as a WebM file.
    pub fn write(&self, track: &OpusTrack) -> Vec<u8> {
        let mut out = el(
            EBML,
            &[
                uint(0x4286, 1),
                uint(0x42F7, 1),
                uint(0x42F2, 4),
                uint(0x42F3, 8),
                el(0x4282, b"webm"),
                uint(0x4287, 4),
                uint(0x4285, 2),
            ]
            .concat(),
        );
        let mut info = vec![uint(0x2AD7B1, 1_000_000), el(0x4D80, b"opusgate-tests")];
        if let Some(d) = self.duration_ms {
            info.push(el(DURATION, &d.to_be_bytes()));
        }
        let entry = [
            uint(0xD7, 1),
            uint(0x73C5, 0x5EED),
            uint(0x83, 2),
            el(0x86, b"A_OPUS"),
            uint(0x56AA, 6_500_000),
            uint(0x56BB, 80_000_000),
            el(
                0xE1,
                &[
                    uint(0x9F, u64::from(track.channels())),
                    el(0xB5, &48000f64.to_be_bytes()),
                ]
                .concat(),
            ),
            el(CODEC_PRIVATE, &track.head),
        ]
        .concat();
        let mut body = [
            el(INFO, &info.concat()),
            el(TRACKS, &el(TRACK_ENTRY, &entry)),
        ]
        .concat();
        // A DiscardPadding goes on a block of the last frame alone: ffmpeg
        // would trim it from every frame of a laced block.
        let alone = usize::from(self.last_padding.is_some()).min(track.frames.len());
        let (body_frames, last) = track.frames.split_at(track.frames.len() - alone);
        let mut blocks: Vec<&[Vec<u8>]> = body_frames.chunks(self.frames_per_block).collect();
        if !last.is_empty() {
            blocks.push(last);
        }
        let mut t48 = 0u64;
        for (c, cluster_blocks) in blocks.chunks(self.blocks_per_cluster).enumerate() {
            let cluster_ms = t48 / 48;
            let mut cluster = uint(TIMESTAMP, cluster_ms);
            for (i, frames) in cluster_blocks.iter().enumerate() {
                let last = c * self.blocks_per_cluster + i + 1 == blocks.len();
                let rel = i16::try_from(t48 / 48 - cluster_ms).expect("block timestamp");
                let data = block(rel, self.lacing, frames);
                let padding = self.last_padding.filter(|_| last);
                if self.block_groups || padding.is_some() {
                    let mut group = el(BLOCK, &data);
                    if let Some(p) = padding {
                        group.extend(el(DISCARD_PADDING, &p.to_be_bytes()));
                    }
                    cluster.extend(el(BLOCK_GROUP, &group));
                } else {
                    cluster.extend(el(SIMPLE_BLOCK, &data));
                }
                t48 += frames.iter().map(|f| toc_samples(f)).sum::<u64>();
            }
            body.extend(if self.unknown_sizes {
                [unknown(CLUSTER), cluster].concat()
            } else {
                el(CLUSTER, &cluster)
            });
        }
        out.extend(if self.unknown_sizes {
            [unknown(SEGMENT), body].concat()
        } else {
            el(SEGMENT, &body)
        });
        out
    }
}

/// Block data of track 1: header, lacing, frames.
fn block(timestamp: i16, lacing: Lacing, frames: &[Vec<u8>]) -> Vec<u8> {
    let lacing = if frames.len() == 1 {
        Lacing::None
    } else {
        lacing
    };
    let flags = match lacing {
        Lacing::None => 0x80,
        Lacing::Xiph => 0x82,
        Lacing::Fixed => 0x84,
        Lacing::Ebml => 0x86,
    };
    let mut d = vec![0x81];
    d.extend_from_slice(&timestamp.to_be_bytes());
    d.push(flags);
    let sizes: Vec<usize> = frames.iter().map(Vec::len).collect();
    if lacing != Lacing::None {
        d.push((frames.len() - 1) as u8);
    }
    match lacing {
        Lacing::None => {}
        Lacing::Xiph => {
            for &s in &sizes[..sizes.len() - 1] {
                d.extend(std::iter::repeat_n(255u8, s / 255));
                d.push((s % 255) as u8);
            }
        }
        Lacing::Ebml => {
            d.extend(size_vint(sizes[0] as u64));
            for w in sizes[..sizes.len() - 1].windows(2) {
                d.extend(signed_vint(w[1] as i64 - w[0] as i64));
            }
        }
        Lacing::Fixed => assert!(
            sizes.iter().all(|&s| s == sizes[0]),
            "fixed lacing needs frames of one size (encode with -vbr off)"
        ),
    }
    for f in frames {
        d.extend_from_slice(f);
    }
    d
}

/// The shortest vint for `v` (never the all-ones "unknown" pattern).
fn size_vint(v: u64) -> Vec<u8> {
    let len = (1..=8)
        .find(|&l| v < (1u64 << (7 * l)) - 1)
        .expect("size fits");
    let marked = v | (1u64 << (7 * len));
    marked.to_be_bytes()[8 - len..].to_vec()
}

/// Matroska's signed vint (EBML lacing): the value plus half the range.
fn signed_vint(v: i64) -> Vec<u8> {
    let len = (1..=8)
        .find(|&l| v.abs() < (1i64 << (7 * l - 1)) - 1)
        .expect("difference fits");
    let raw = (v + (1i64 << (7 * len - 1)) - 1) as u64 | (1u64 << (7 * len));
    raw.to_be_bytes()[8 - len..].to_vec()
}

/// An element with `payload`.
pub fn el(id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = id
        .to_be_bytes()
        .into_iter()
        .skip_while(|&b| b == 0)
        .collect();
    out.extend(size_vint(payload.len() as u64));
    out.extend_from_slice(payload);
    out
}

/// An unsigned integer element.
pub fn uint(id: u32, v: u64) -> Vec<u8> {
    let bytes: Vec<u8> = v
        .to_be_bytes()
        .into_iter()
        .skip_while(|&b| b == 0)
        .collect();
    el(id, if bytes.is_empty() { &[0] } else { &bytes })
}

/// The header of a master element of unknown size.
pub fn unknown(id: u32) -> Vec<u8> {
    let mut out: Vec<u8> = id
        .to_be_bytes()
        .into_iter()
        .skip_while(|&b| b == 0)
        .collect();
    out.extend_from_slice(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
    out
}

/// Writes `samples` as a WAV input and encodes it to `<dir>/<name>.webm`
/// with ffmpeg's libopus and `args`.
pub fn ffmpeg_webm(
    dir: &Path,
    name: &str,
    rate: u32,
    channels: u16,
    samples: &[i16],
    args: &[&str],
) -> PathBuf {
    let wav = dir.join(format!("{name}.wav"));
    write_wav(&wav, rate, channels, samples);
    let out = dir.join(format!("{name}.webm"));
    run(Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(&wav)
        .args(["-c:a", "libopus"])
        .args(args)
        .arg(&out));
    out
}

/// ffmpeg's libopus decoding of a file at 48 kHz, interleaved s16, with
/// `-ac channels` when given.
pub fn ffmpeg_libopus_48k(input: &Path, channels: Option<u8>) -> Vec<i16> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-hide_banner",
        "-loglevel",
        "error",
        "-c:a",
        "libopus",
        "-i",
    ])
    .arg(input)
    .args(["-ar", "48000"]);
    if let Some(c) = channels {
        cmd.args(["-ac", &c.to_string()]);
    }
    let out = run(cmd.args(["-f", "s16le", "-"])).stdout;
    out.chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}
