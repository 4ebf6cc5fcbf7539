//! Fuzzes the container parser: `codec::demux` (Ogg pages, CRCs, links,
//! OpusHead and OpusTags, packets, granule positions, the duration limit)
//! on arbitrary bytes, strict and lenient. It must never panic, and what it
//! accepts must be consistent: non-empty packets with a valid TOC, and an
//! output length within the limit.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use opusgate::codec::head::packet_samples_48k;
use opusgate::codec::{demux, ConvertOptions};

fuzz_target!(|data: &[u8]| {
    for lenient in [false, true] {
        let opts = ConvertOptions {
            lenient,
            max_duration: Duration::from_secs(60),
            ..ConvertOptions::default()
        };
        let Ok(demuxed) = demux(data, &opts) else {
            continue;
        };
        assert!(!demuxed.links.is_empty());
        assert!(demuxed.output_samples_48k() <= 60 * 48_000);
        for link in &demuxed.links {
            assert!(link.head.channels >= 1);
            assert!(link.kept_samples_48k <= link.decoded_samples_48k || !link.complete);
            let mut decoded = 0u64;
            for packet in &link.packets {
                let samples = packet_samples_48k(packet).expect("a kept packet has a valid TOC");
                decoded += u64::from(samples);
            }
            assert_eq!(decoded, link.decoded_samples_48k);
        }
    }
});
