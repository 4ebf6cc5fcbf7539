//! Demuxing WebM files written here with webm-iterable's writer (the
//! conversions against ffmpeg are in tests/webm.rs).

use std::borrow::Cow;
use std::time::Duration;

use webm_iterable::matroska_spec::{Master, MatroskaSpec as M};
use webm_iterable::{WebmWriter, WriteOptions};

use super::*;

/// A 20 ms SILK packet (960 samples at 48 kHz).
const P20: &[u8] = &[9 << 3, 0xAA, 0xBB];
/// A 60 ms SILK packet (2880 samples).
const P60: &[u8] = &[11 << 3, 0xCC];

/// How the test file is laid out.
#[derive(Clone, Copy)]
struct Layout {
    unknown_sizes: bool,
    duration_ms: Option<f64>,
    pre_skip: u16,
}

const FFMPEG_LIKE: Layout = Layout {
    unknown_sizes: false,
    duration_ms: Some(100.0),
    pre_skip: 312,
};

const BROWSER_LIKE: Layout = Layout {
    unknown_sizes: true,
    duration_ms: None,
    pre_skip: 0,
};

/// One block of the test file.
enum B<'p> {
    /// A SimpleBlock of a track with its frames (Xiph-laced when several).
    Simple(u64, Vec<&'p [u8]>),
    /// A BlockGroup of track 1 with one frame and a DiscardPadding (ns).
    Group(&'p [u8], Option<i64>),
    /// A new Cluster.
    Cluster,
    /// A SimpleBlock with this data.
    Raw(Vec<u8>),
}

fn opus_head(pre_skip: u16) -> Vec<u8> {
    let mut h = b"OpusHead\x01\x01".to_vec();
    h.extend_from_slice(&pre_skip.to_le_bytes());
    h.extend_from_slice(&48000u32.to_le_bytes());
    h.extend_from_slice(&[0, 0, 0]);
    h
}

/// Block data: track, timestamp 0, flags, Xiph lacing when several frames.
fn block_data(track: u64, frames: &[&[u8]]) -> Vec<u8> {
    let laced = frames.len() > 1;
    let mut d = vec![0x80 | track as u8, 0, 0, if laced { 0x82 } else { 0x80 }];
    if laced {
        d.push((frames.len() - 1) as u8);
        for f in &frames[..frames.len() - 1] {
            d.extend(std::iter::repeat_n(255u8, f.len() / 255));
            d.push((f.len() % 255) as u8);
        }
    }
    for f in frames {
        d.extend_from_slice(f);
    }
    d
}

/// Writes a WebM file: the tracks as (number, CodecID, CodecPrivate), then
/// the blocks in one Cluster per `B::Cluster` (and one at the start).
fn webm(layout: Layout, tracks: &[(u64, &str, Option<Vec<u8>>)], blocks: &[B<'_>]) -> Vec<u8> {
    let mut w = WebmWriter::new(Vec::new());
    let open = |w: &mut WebmWriter<Vec<u8>>, tag: M| {
        if layout.unknown_sizes {
            w.write_advanced(&tag, WriteOptions::is_unknown_sized_element())
        } else {
            w.write(&tag)
        }
        .expect("open")
    };
    let put = |w: &mut WebmWriter<Vec<u8>>, tag: M| w.write(&tag).expect("write");
    put(&mut w, M::Ebml(Master::Start));
    put(&mut w, M::DocType("webm".into()));
    put(&mut w, M::Ebml(Master::End));
    open(&mut w, M::Segment(Master::Start));
    put(&mut w, M::Info(Master::Start));
    put(&mut w, M::TimestampScale(1_000_000));
    if let Some(d) = layout.duration_ms {
        put(&mut w, M::Duration(d));
    }
    put(&mut w, M::Info(Master::End));
    put(&mut w, M::Tracks(Master::Start));
    for (n, id, private) in tracks {
        put(&mut w, M::TrackEntry(Master::Start));
        put(&mut w, M::TrackNumber(*n));
        put(&mut w, M::CodecID((*id).into()));
        put(&mut w, M::CodecDelay(6_500_000));
        if let Some(p) = private {
            put(&mut w, M::CodecPrivate(p.clone()));
        }
        put(&mut w, M::TrackEntry(Master::End));
    }
    put(&mut w, M::Tracks(Master::End));
    open(&mut w, M::Cluster(Master::Start));
    put(&mut w, M::Timestamp(0));
    for b in blocks {
        match b {
            B::Simple(track, frames) => put(&mut w, M::SimpleBlock(block_data(*track, frames))),
            B::Group(frame, padding) => {
                put(&mut w, M::BlockGroup(Master::Start));
                put(&mut w, M::Block(block_data(1, &[frame])));
                if let Some(p) = padding {
                    put(&mut w, M::DiscardPadding(*p));
                }
                put(&mut w, M::BlockGroup(Master::End));
            }
            B::Raw(data) => put(&mut w, M::SimpleBlock(data.clone())),
            B::Cluster => {
                put(&mut w, M::Cluster(Master::End));
                open(&mut w, M::Cluster(Master::Start));
                put(&mut w, M::Timestamp(1000));
            }
        }
    }
    put(&mut w, M::Cluster(Master::End));
    put(&mut w, M::Segment(Master::End));
    w.into_inner().expect("written")
}

fn opus_file(layout: Layout, blocks: &[B<'_>]) -> Vec<u8> {
    webm(
        layout,
        &[(1, "A_OPUS", Some(opus_head(layout.pre_skip)))],
        blocks,
    )
}

fn opts() -> ConvertOptions {
    ConvertOptions::default()
}

fn lenient() -> ConvertOptions {
    ConvertOptions {
        lenient: true,
        ..ConvertOptions::default()
    }
}

fn one_link<'a>(input: &'a [u8], opts: &ConvertOptions) -> Link<'a> {
    let mut d = demux(input, opts).expect("demuxed");
    assert_eq!(d.links.len(), 1);
    d.links.remove(0)
}

fn code(input: &[u8], opts: &ConvertOptions) -> &'static str {
    demux(input, opts).map(|_| ()).unwrap_err().code()
}

/// 4 x 20 ms, the last in a BlockGroup with 10 ms of padding, in 2 Clusters.
fn four_blocks() -> Vec<B<'static>> {
    vec![
        B::Simple(1, vec![P20]),
        B::Simple(1, vec![P20]),
        B::Cluster,
        B::Simple(1, vec![P20]),
        B::Group(P20, Some(10_000_000)),
    ]
}

#[test]
fn ffmpeg_and_browser_layouts_give_the_same_packets() {
    for layout in [FFMPEG_LIKE, BROWSER_LIKE] {
        let file = opus_file(layout, &four_blocks());
        let link = one_link(&file, &opts());
        assert_eq!(link.packets.len(), 4);
        assert!(link.packets.iter().all(|p| p.as_ref() == P20));
        assert!(link.packets.iter().all(|p| matches!(p, Cow::Borrowed(_))));
        assert_eq!(link.decoded_samples_48k, 4 * 960);
        assert_eq!(link.kept_samples_48k, 4 * 960 - 480);
        assert_eq!(link.head.pre_skip, layout.pre_skip);
        assert_eq!(
            link.output_samples_48k(),
            4 * 960 - 480 - u64::from(layout.pre_skip)
        );
        assert!(link.complete);
        assert_eq!((link.serial, link.start_granule), (1, 0));
    }
}

#[test]
fn laced_frames_and_other_tracks() {
    let file = webm(
        BROWSER_LIKE,
        &[
            (1, "V_VP8", None),
            (2, "A_OPUS", Some(opus_head(0))),
            (3, "A_VORBIS", Some(vec![2, 1, 1])),
        ],
        &[
            B::Simple(1, vec![b"video"]),
            B::Simple(2, vec![P20, P60, &[], P20]),
            B::Simple(3, vec![b"vorbis"]),
            B::Simple(2, vec![P60]),
        ],
    );
    let link = one_link(&file, &opts());
    let packets: Vec<&[u8]> = link.packets.iter().map(|p| p.as_ref()).collect();
    assert_eq!(
        packets,
        vec![P20, P60, P20, P60],
        "empty frames are skipped"
    );
    assert_eq!(link.decoded_samples_48k, 2 * 960 + 2 * 2880);
    assert_eq!(link.serial, 2);
}

#[test]
fn discard_padding_trims_only_the_last_frame() {
    let cases: [(Vec<B<'_>>, u64); 5] = [
        // More than the frame holds: ignored, as ffmpeg does.
        (vec![B::Group(P20, Some(30_000_000))], 960),
        // Negative: ignored.
        (vec![B::Group(P20, Some(-5_000_000))], 960),
        // On a block that is not the last: ignored.
        (
            vec![B::Group(P20, Some(10_000_000)), B::Simple(1, vec![P20])],
            1920,
        ),
        // Rounded to nearest sample: 1 208 333 ns is 58 samples.
        (
            vec![B::Simple(1, vec![P60]), B::Group(P20, Some(1_208_333))],
            3840 - 58,
        ),
        // The whole frame.
        (
            vec![B::Simple(1, vec![P20]), B::Group(P20, Some(20_000_000))],
            960,
        ),
    ];
    for (blocks, kept) in cases {
        let file = opus_file(BROWSER_LIKE, &blocks);
        assert_eq!(one_link(&file, &opts()).kept_samples_48k, kept);
    }
}

#[test]
fn no_opus_track_names_what_was_found() {
    let file = webm(
        FFMPEG_LIKE,
        &[(1, "A_VORBIS", Some(vec![2, 1, 1]))],
        &[B::Simple(1, vec![b"vorbis"])],
    );
    let e = demux(&file, &opts()).unwrap_err();
    assert_eq!(e.code(), "unsupported_format");
    assert!(e.to_string().contains("found: A_VORBIS"), "{e}");
    let file = webm(FFMPEG_LIKE, &[], &[]);
    let e = demux(&file, &opts()).unwrap_err();
    assert!(e.to_string().contains("found: no tracks"), "{e}");
}

#[test]
fn a_duration_over_the_limit_is_refused_before_any_block() {
    let mut layout = FFMPEG_LIKE;
    layout.duration_ms = Some(10.0 * 3600.0 * 1000.0);
    // The block is corrupt: refused for its length before it is read.
    let file = opus_file(layout, &[B::Simple(1, vec![&[0xFF, 0xFF, 0xFF, 0xFF]])]);
    assert!(file.len() < 1024);
    match demux(&file, &opts()) {
        Err(CodecError::AudioTooLong { found_ms, .. }) => assert_eq!(found_ms, 36_000_000),
        other => panic!("expected audio_too_long, got {other:?}"),
    }
    // Within the limit plus 120 ms of slack: read on.
    layout.duration_ms = Some(600_100.0);
    let file = opus_file(layout, &[B::Simple(1, vec![P20])]);
    assert_eq!(one_link(&file, &opts()).decoded_samples_48k, 960);
}

#[test]
fn the_limit_holds_without_a_duration() {
    let limited = ConvertOptions {
        max_duration: Duration::from_secs(1),
        ..ConvertOptions::default()
    };
    let file = |n: usize| {
        let blocks: Vec<B<'_>> = (0..n).map(|_| B::Simple(1, vec![P20])).collect();
        opus_file(BROWSER_LIKE, &blocks)
    };
    // Exactly 1 s.
    assert_eq!(one_link(&file(50), &limited).output_samples_48k(), 48_000);
    // One frame over: refused at the end, with the exact length.
    match demux(&file(51), &limited) {
        Err(CodecError::AudioTooLong {
            found_ms, at_least, ..
        }) => assert_eq!((found_ms, at_least), (1020, false)),
        other => panic!("expected audio_too_long, got {other:?}"),
    }
    // Far over: refused while reading, past the limit and 120 ms of slack
    // for a DiscardPadding to come.
    match demux(&file(500), &limited) {
        Err(CodecError::AudioTooLong {
            found_ms, at_least, ..
        }) => assert_eq!((found_ms, at_least), (1140, true)),
        other => panic!("expected audio_too_long, got {other:?}"),
    }
}

#[test]
fn cuts_between_and_inside_elements() {
    let whole = opus_file(FFMPEG_LIKE, &four_blocks());
    // Without its last Cluster (the Segment's size says more follows).
    let second = whole
        .windows(4)
        .rposition(|w| w == [0x1F, 0x43, 0xB6, 0x75])
        .expect("a second Cluster");
    let link = one_link(&whole[..second], &opts());
    assert_eq!((link.packets.len(), link.complete), (2, false));
    assert_eq!(link.kept_samples_48k, 1920);
    // Inside the last block: truncated, unless lenient.
    let cut = &whole[..whole.len() - 8];
    assert_eq!(code(cut, &opts()), "truncated_stream");
    let link = one_link(cut, &lenient());
    assert_eq!((link.packets.len(), link.complete), (3, false));
    // A browser recording stopped after a block: whole.
    let live = opus_file(BROWSER_LIKE, &four_blocks()[..3]);
    let link = one_link(&live, &opts());
    assert_eq!((link.packets.len(), link.complete), (2, true));
    // Cut before any audio: truncated in any mode.
    let cluster = |f: &[u8]| {
        f.windows(4)
            .position(|w| w == [0x1F, 0x43, 0xB6, 0x75])
            .expect("a Cluster")
    };
    let head_only = &whole[..cluster(&whole)];
    assert_eq!(code(head_only, &opts()), "truncated_stream");
    assert_eq!(code(head_only, &lenient()), "truncated_stream");
    // A browser recording stopped before its first Cluster: nothing to cut
    // (the sizes are unknown), an empty track.
    let empty = &live[..cluster(&live)];
    let link = one_link(empty, &opts());
    assert_eq!((link.packets.len(), link.output_samples_48k()), (0, 0));
}

#[test]
fn hostile_inputs_are_clean_errors() {
    let good = opus_file(BROWSER_LIKE, &four_blocks());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"RIFF....WAVE".to_vec(), "unsupported_format"),
        (vec![0x1A, 0x45, 0xDF], "unsupported_format"),
        (vec![0x1A, 0x45, 0xDF, 0xA3], "truncated_stream"),
        // An EBML header claiming 2^56 bytes.
        (
            vec![
                0x1A, 0x45, 0xDF, 0xA3, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE, 0x42,
            ],
            "invalid_stream",
        ),
        // A size field of 0 bytes' length (no marker bit).
        (vec![0x1A, 0x45, 0xDF, 0xA3, 0x00, 0x42], "invalid_stream"),
        // Another EBML document type.
        (
            {
                let mut w = WebmWriter::new(Vec::new());
                w.write(&M::Ebml(Master::Start)).expect("w");
                w.write(&M::DocType("mkvx".into())).expect("w");
                w.write(&M::Ebml(Master::End)).expect("w");
                w.into_inner().expect("w")
            },
            "unsupported_format",
        ),
        // A block before the Tracks.
        (
            {
                let mut w = WebmWriter::new(Vec::new());
                for tag in [
                    M::Ebml(Master::Start),
                    M::Ebml(Master::End),
                    M::Segment(Master::Start),
                    M::Cluster(Master::Start),
                    M::SimpleBlock(block_data(1, &[P20])),
                    M::Cluster(Master::End),
                    M::Segment(Master::End),
                ] {
                    w.write(&tag).expect("w");
                }
                w.into_inner().expect("w")
            },
            "invalid_stream",
        ),
        // A frame whose TOC says 0 frames.
        (
            opus_file(BROWSER_LIKE, &[B::Simple(1, vec![&[(11 << 3) | 3, 0]])]),
            "invalid_stream",
        ),
        // A block of the Opus track whose lacing runs past its end.
        (
            opus_file(BROWSER_LIKE, &[B::Raw(vec![0x81, 0, 0, 0x82, 1, 200, 1])]),
            "invalid_stream",
        ),
        // A block of another track is not looked into beyond its number.
        (
            opus_file(BROWSER_LIKE, &[B::Raw(vec![0x82, 0, 0, 0x82, 1, 200, 1])]),
            "",
        ),
    ];
    for (input, expected) in &cases {
        for o in [opts(), lenient()] {
            let got = demux(input, &o).map(|_| ()).map_err(|e| e.code());
            let want = if expected.is_empty() {
                Ok(())
            } else {
                Err(*expected)
            };
            assert_eq!(got, want, "{input:02x?}");
        }
    }
    // Every prefix of a good file: a clean answer, never a panic.
    for len in 0..good.len() {
        for o in [opts(), lenient()] {
            if let Err(e) = demux(&good[..len], &o) {
                assert_ne!(e.code(), "internal", "prefix {len}: {e}");
            }
        }
    }
}
