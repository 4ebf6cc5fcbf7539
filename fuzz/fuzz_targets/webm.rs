//! Fuzzes the WebM/Matroska demuxer: `codec::webm::demux` (EBML elements of
//! known and unknown size, tracks and the OpusHead, blocks and their lacing,
//! DiscardPadding, cuts, the duration limit) on arbitrary bytes, strict and
//! lenient. It must never panic, and what it accepts must be consistent:
//! one link of non-empty packets with a valid TOC, end trimming within the
//! decoded samples, and an output length within the limit.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use opusgate::codec::head::packet_samples_48k;
use opusgate::codec::{webm, ConvertOptions};

fuzz_target!(|data: &[u8]| {
    for lenient in [false, true] {
        let opts = ConvertOptions {
            lenient,
            max_duration: Duration::from_secs(60),
            ..ConvertOptions::default()
        };
        let Ok(demuxed) = webm::demux(data, &opts) else {
            continue;
        };
        assert_eq!(demuxed.links.len(), 1);
        assert!(demuxed.output_samples_48k() <= 60 * 48_000);
        let link = &demuxed.links[0];
        assert!(link.head.channels >= 1);
        assert!(link.kept_samples_48k <= link.decoded_samples_48k);
        let mut decoded = 0u64;
        for packet in &link.packets {
            assert!(!packet.is_empty());
            let samples = packet_samples_48k(packet).expect("a kept packet has a valid TOC");
            decoded += u64::from(samples);
        }
        assert_eq!(decoded, link.decoded_samples_48k);
    }
});
