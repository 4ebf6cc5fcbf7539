//! The sample encoder: its default clip is shaped like the real client's
//! stream (16 kHz mono VOIP, 20 ms VBR packets with DTX, one packet per page,
//! pre-skip 312), round-trips through the converter to the exact length and
//! in time with the source, agrees with opusdec, and is deterministic per seed.

mod support;

use opusgate::codec::head::packet_samples_48k;
use opusgate::codec::sample::speech_pcm;
use opusgate::codec::{encode_sample, SampleOptions, SUPPORTED_RATES};
use support::clips::{clip, diff, to_wav};
use support::ogg::{packets, pages};
use support::tools::{opusdec, require_tool};

#[test]
fn default_sample_is_shaped_like_the_real_client_stream() {
    let opts = SampleOptions {
        seconds: 6.0,
        ..SampleOptions::default()
    };
    let bytes = encode_sample(&opts).expect("sample");
    let p = pages(&bytes);
    let head = &p[0].body;
    assert_eq!(&head[..8], b"OpusHead");
    assert_eq!(head[9], 1, "mono");
    assert_eq!(u16::from_le_bytes([head[10], head[11]]), 312, "pre-skip");
    assert_eq!(
        u32::from_le_bytes([head[12], head[13], head[14], head[15]]),
        16000
    );
    for page in &p[2..] {
        assert_eq!(
            page.lacing.iter().filter(|&&l| l < 255).count(),
            1,
            "one packet per page"
        );
    }
    assert!(
        p.last().is_some_and(|l| l.flags & 4 != 0),
        "EOS on the last page"
    );
    let audio = &packets(&bytes)[2..];
    assert!(
        audio
            .iter()
            .all(|(x, _)| packet_samples_48k(x) == Some(960)),
        "20 ms packets"
    );
    // SILK wideband (TOC configs 8-11): what VOIP mode picks for 16 kHz speech.
    assert!(audio
        .iter()
        .filter(|(x, _)| x.len() > 3)
        .all(|(x, _)| (8..=11).contains(&(x[0] >> 3))));
    let dtx = audio.iter().filter(|(x, _)| x.len() <= 3).count();
    assert!(
        dtx * 8 > audio.len(),
        "only {dtx} of {} packets are DTX (1-3 bytes)",
        audio.len()
    );
    let active: Vec<usize> = audio
        .iter()
        .map(|(x, _)| x.len())
        .filter(|&n| n > 3)
        .collect();
    let kbps = active.iter().sum::<usize>() as f64 * 8.0 / (active.len() as f64 * 0.02) / 1000.0;
    assert!(
        (12.0..=32.0).contains(&kbps),
        "{kbps:.1} kbit/s while speaking"
    );
    let sizes: Vec<usize> = audio.iter().map(|(x, _)| x.len()).collect();
    assert!(
        sizes
            .windows(2)
            .any(|w| w[0] != w[1] && w[0] > 3 && w[1] > 3),
        "VBR"
    );
}

#[test]
fn client_shaped_clip_round_trips_to_the_exact_length_in_time_with_its_source() {
    let opts = SampleOptions {
        seconds: 4.0,
        seed: 21,
        ..SampleOptions::default()
    };
    let bytes = encode_sample(&opts).expect("sample");
    for rate in SUPPORTED_RATES {
        assert_eq!(
            to_wav(&bytes, rate, 1).frames(),
            4 * rate as usize,
            "at {rate} Hz"
        );
    }
    // The decoded audio lines up with the synthetic source: the best
    // cross-correlation is at lag 0, so pre-skip was applied exactly.
    let source = speech_pcm(64_000, 16000, 1, 21);
    let decoded = to_wav(&bytes, 16000, 1).samples;
    let corr = |lag: i64| -> f64 {
        (0..source.len() as i64)
            .filter_map(|i| {
                let j = i + lag;
                (j >= 0 && (j as usize) < decoded.len())
                    .then(|| f64::from(source[i as usize]) * f64::from(decoded[j as usize]))
            })
            .sum()
    };
    let best = (-40..=40)
        .max_by(|&a, &b| corr(a).total_cmp(&corr(b)))
        .expect("lags");
    assert_eq!(best, 0, "decoded audio is {best} samples off its source");
    let energy: f64 = source.iter().map(|&s| f64::from(s).powi(2)).sum();
    assert!(
        corr(0) > 0.5 * energy,
        "decoded audio barely resembles its source"
    );
}

#[test]
fn sample_decodes_like_opusdec() {
    require_tool("opusdec");
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, opts) in [
        SampleOptions {
            seconds: 2.5,
            ..SampleOptions::default()
        },
        SampleOptions {
            seconds: 1.7,
            rate: 48000,
            channels: 2,
            bitrate: 64000,
            frame_ms: 60.0,
            ..SampleOptions::default()
        },
        SampleOptions {
            seconds: 1.3,
            rate: 8000,
            vbr: false,
            dtx: false,
            frame_ms: 10.0,
            packets_per_page: 50,
            ..SampleOptions::default()
        },
    ]
    .into_iter()
    .enumerate()
    {
        let f = dir.path().join(format!("s{i}.opus"));
        std::fs::write(&f, encode_sample(&opts).expect("sample")).expect("write");
        let frames48 = (opts.seconds * 48000.0).round() as usize;
        let reference = opusdec(&f, 48000);
        assert_eq!(reference.frames(), frames48, "{opts:?}");
        let mine = to_wav(&std::fs::read(&f).expect("read"), 48000, opts.channels);
        let (max, snr) = diff(&reference.samples, &mine.samples);
        assert!(max <= 1, "{opts:?}: {max} LSB from opusdec ({snr:.1} dB)");
    }
}

#[test]
fn seeds_make_different_clips_and_the_same_seed_the_same_bytes() {
    let a = clip(1.0, 1);
    let a2 = clip(1.0, 1);
    let b = clip(1.0, 2);
    assert_eq!(a, a2);
    assert_ne!(
        packets(&a)[2..],
        packets(&b)[2..],
        "different seeds gave the same audio"
    );
    assert_ne!(
        pages(&a)[0].serial,
        pages(&b)[0].serial,
        "different seeds share a serial number"
    );
    assert_ne!(to_wav(&a, 16000, 1), to_wav(&b, 16000, 1));
    // Conversion is deterministic too.
    assert_eq!(to_wav(&a, 24000, 2), to_wav(&a, 24000, 2));
}

#[test]
fn bitrate_option_changes_the_size() {
    let size = |bitrate| {
        let bytes = encode_sample(&SampleOptions {
            seconds: 3.0,
            bitrate,
            dtx: false,
            ..SampleOptions::default()
        })
        .expect("s");
        packets(&bytes)[2..]
            .iter()
            .map(|(p, _)| p.len())
            .sum::<usize>()
    };
    let (low, high) = (size(8000), size(40000));
    assert!(
        high > 2 * low,
        "8 kbit/s gave {low} bytes, 40 kbit/s {high}"
    );
}

#[test]
fn bad_sample_options_are_bad_parameter() {
    let d = SampleOptions::default;
    for opts in [
        SampleOptions {
            seconds: 0.0,
            ..d()
        },
        SampleOptions {
            seconds: f64::NAN,
            ..d()
        },
        SampleOptions {
            seconds: 1e9,
            ..d()
        },
        SampleOptions { rate: 44100, ..d() },
        SampleOptions { channels: 3, ..d() },
        SampleOptions {
            bitrate: 100,
            ..d()
        },
        SampleOptions {
            frame_ms: 7.0,
            ..d()
        },
        SampleOptions {
            packets_per_page: 0,
            ..d()
        },
    ] {
        assert_eq!(
            encode_sample(&opts).expect_err("bad").code(),
            "bad_parameter",
            "{opts:?}"
        );
    }
}
