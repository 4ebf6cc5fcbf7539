//! Conversion speed, in times real time, next to the pure libopus decode loop
//! of the same packets (so the cost of demuxing, trimming and WAV writing is
//! the difference): 10 s and 60 s speech clips from `encode_sample`, 16 kHz
//! mono and 48 kHz stereo, converted at their own rate and channel count.
//!
//! Throughput is declared as the clip's seconds, so criterion's `elem/s`
//! figure reads directly as "x real time". After the criterion groups a short
//! summary runs both loops interleaved and keeps each one's best time, which
//! holds up better on a shared machine, and prints the overhead.
//!
//! Run: `cargo bench --bench convert` (about a minute).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use opusgate::codec::{convert, decode_only, demux, encode_sample, ConvertOptions, SampleOptions};

/// One benchmark clip.
struct Clip {
    name: String,
    seconds: u64,
    bytes: Vec<u8>,
    opts: ConvertOptions,
}

fn clips() -> Vec<Clip> {
    let mut out = Vec::new();
    for (label, rate, channels, bitrate) in [
        ("16k_mono", 16000, 1, 24000),
        ("48k_stereo", 48000, 2, 64000),
    ] {
        for seconds in [10u64, 60] {
            let sample = SampleOptions {
                seconds: seconds as f64,
                rate,
                channels,
                bitrate,
                ..SampleOptions::default()
            };
            out.push(Clip {
                name: format!("{label}_{seconds}s"),
                seconds,
                bytes: encode_sample(&sample).expect("sample clip"),
                opts: ConvertOptions {
                    rate,
                    channels,
                    ..ConvertOptions::default()
                },
            });
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    for clip in clips() {
        let demuxed = demux(&clip.bytes, &clip.opts).expect("demux");
        let (rate, channels) = (clip.opts.rate, clip.opts.channels);
        let mut group = c.benchmark_group(&clip.name);
        group.throughput(Throughput::Elements(clip.seconds));
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(3));
        group.bench_function("convert", |b| {
            b.iter(|| convert(black_box(&clip.bytes), &clip.opts).expect("convert"))
        });
        group.bench_function("decode_only", |b| {
            b.iter(|| decode_only(black_box(&demuxed), rate, channels).expect("decode"))
        });
        group.finish();
    }
}

/// Best-of-N times of both loops, interleaved, as x real time.
fn summary() {
    println!("\nbest of 15 interleaved runs (x real time):");
    println!(
        "{:<16} {:>10} {:>12} {:>9}",
        "clip", "convert", "decode_only", "overhead"
    );
    for clip in clips() {
        let demuxed = demux(&clip.bytes, &clip.opts).expect("demux");
        let (mut conv, mut dec) = (Duration::MAX, Duration::MAX);
        for _ in 0..15 {
            let t = Instant::now();
            black_box(convert(black_box(&clip.bytes), &clip.opts).expect("convert"));
            conv = conv.min(t.elapsed());
            let t = Instant::now();
            black_box(
                decode_only(black_box(&demuxed), clip.opts.rate, clip.opts.channels)
                    .expect("decode"),
            );
            dec = dec.min(t.elapsed());
        }
        let x = |d: Duration| clip.seconds as f64 / d.as_secs_f64();
        let overhead = (conv.as_secs_f64() / dec.as_secs_f64() - 1.0) * 100.0;
        println!(
            "{:<16} {:>9.0}x {:>11.0}x {:>8.1}%",
            clip.name,
            x(conv),
            x(dec),
            overhead
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo bench` passes --bench; a `cargo test --benches` smoke run does not.
    if std::env::args().any(|a| a == "--bench") {
        summary();
    }
}
