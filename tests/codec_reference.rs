//! Reference comparison against the independent decoders from Debian: for
//! clips made here by `opusenc` and `ffmpeg -c:a libopus`, the converter's
//! sample count equals `opusdec`'s at every output rate (and ffmpeg's where the
//! 48 kHz length divides evenly), and at 48 kHz the samples match
//! `opusdec --rate 48000 --no-dither` to within 1 LSB. Also 5.1 (family 1),
//! chained files, large OpusTags, 60/120 ms packets, output gain, and streams
//! whose first granule position is not the one their packets imply.
//!
//! opusenc, opusdec and ffmpeg are required (CI installs them); a missing tool
//! fails the test with a message saying so.

mod support;

use std::path::Path;
use std::process::Command;

use opusgate::codec::head::packet_samples_48k;
use opusgate::codec::sample::speech_pcm;
use opusgate::codec::SUPPORTED_RATES;
use support::clips::{diff, music, ours};
use support::ogg::{packets, pages, set_output_gain, write_pages};
use support::tools::{ffmpeg_enc, ffmpeg_frames, opusdec, opusenc, require_tool, run};

fn tools() {
    for t in ["opusenc", "opusdec", "ffmpeg"] {
        require_tool(t);
    }
}

/// Compares a mono or stereo file with opusdec at every rate (and ffmpeg where
/// exact), and checks the other channel count has the same length. Returns the
/// 48 kHz length.
fn check_against_references(path: &Path, src_channels: u16) -> usize {
    let len48 = opusdec(path, 48000).frames();
    for rate in SUPPORTED_RATES {
        let reference = opusdec(path, rate);
        assert_eq!(reference.channels, src_channels);
        let mine = ours(path, rate, src_channels as u8);
        assert_eq!(
            mine.frames(),
            reference.frames(),
            "{} at {rate} Hz: frame count differs from opusdec",
            path.display()
        );
        if rate == 48000 {
            let (max, snr) = diff(&reference.samples, &mine.samples);
            assert!(
                max <= 1,
                "{}: differs from opusdec by up to {max} LSB (SNR {snr:.1} dB)",
                path.display()
            );
        }
        let scale = (48000 / rate) as usize;
        if reference.frames() * scale == len48 {
            assert_eq!(
                ffmpeg_frames(path, rate),
                mine.frames(),
                "{} at {rate} Hz: frame count differs from ffmpeg",
                path.display()
            );
        }
        let other = ours(path, rate, if src_channels == 1 { 2 } else { 1 });
        assert_eq!(
            other.frames(),
            mine.frames(),
            "{} at {rate} Hz: length depends on channel count",
            path.display()
        );
        if src_channels == 1 {
            // Mono to stereo: both channels carry the mono signal.
            let left: Vec<i16> = other.samples.chunks(2).map(|f| f[0]).collect();
            assert!(
                other.samples.chunks(2).all(|f| f[0] == f[1]),
                "mono upmix: channels differ"
            );
            assert_eq!(left, mine.samples, "mono upmix differs from mono output");
        } else {
            // Stereo to mono: close to the mean of the two channels.
            let mean: Vec<i16> = mine
                .samples
                .chunks(2)
                .map(|f| ((i32::from(f[0]) + i32::from(f[1])) / 2) as i16)
                .collect();
            let (_, snr) = diff(&mean, &other.samples);
            assert!(
                snr > 20.0,
                "stereo to mono downmix is off: SNR {snr:.1} dB against (L+R)/2"
            );
        }
    }
    len48
}

#[test]
fn opusenc_speech_16k_mono_20ms() {
    tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let pcm = speech_pcm(41_117, 16000, 1, 11);
    let f = opusenc(dir.path(), "speech16", 16000, 1, &pcm, &["--bitrate", "24"]);
    assert_eq!(check_against_references(&f, 1), 41_117 * 3);
}

#[test]
fn ffmpeg_speech_8k_mono_60ms() {
    tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let pcm = speech_pcm(17_203, 8000, 1, 12);
    let f = ffmpeg_enc(
        dir.path(),
        "speech8",
        8000,
        1,
        &pcm,
        &[
            "-b:a",
            "16k",
            "-application",
            "voip",
            "-frame_duration",
            "60",
        ],
    );
    assert!(packets(&std::fs::read(&f).expect("fixture"))[2..]
        .iter()
        .all(|(p, _)| packet_samples_48k(p) == Some(2880)));
    assert_eq!(check_against_references(&f, 1), 17_203 * 6);
}

#[test]
fn opusenc_music_48k_stereo_20ms() {
    tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let pcm = music(96_001, 48000, 2, 1);
    let f = opusenc(dir.path(), "music48", 48000, 2, &pcm, &["--bitrate", "96"]);
    assert_eq!(check_against_references(&f, 2), 96_001);
}

#[test]
fn ffmpeg_music_48k_stereo_with_minus_6_db_output_gain() {
    tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let pcm = music(72_013, 48000, 2, 2);
    let plain = ffmpeg_enc(dir.path(), "music48f", 48000, 2, &pcm, &["-b:a", "96k"]);
    let gained = dir.path().join("gain.opus");
    std::fs::write(
        &gained,
        set_output_gain(&std::fs::read(&plain).expect("fixture"), -1536),
    )
    .expect("write");
    assert_eq!(check_against_references(&gained, 2), 72_013);
    let (loud, quiet) = (ours(&plain, 48000, 2), ours(&gained, 48000, 2));
    let rms =
        |s: &[i16]| (s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len() as f64).sqrt();
    let ratio = rms(&quiet.samples) / rms(&loud.samples);
    assert!(
        (ratio - 0.501).abs() < 0.01,
        "-6 dB gain gave an amplitude ratio of {ratio}"
    );
}

#[test]
fn opusenc_music_16k_mono_60ms_packets() {
    tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let pcm = music(50_003, 16000, 1, 3);
    let f = opusenc(
        dir.path(),
        "music16",
        16000,
        1,
        &pcm,
        &["--bitrate", "32", "--framesize", "60"],
    );
    let all = packets(&std::fs::read(&f).expect("fixture"));
    // libopusenc flushes with one shorter packet; the rest are 60 ms.
    assert!(all[2..all.len() - 1]
        .iter()
        .all(|(p, _)| packet_samples_48k(p) == Some(2880)));
    assert_eq!(check_against_references(&f, 1), 50_003 * 3);
}

#[test]
fn ffmpeg_speech_48k_stereo_120ms_packets() {
    tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let pcm = speech_pcm(100_007, 48000, 2, 4);
    // opusenc stops at 60 ms frames; ffmpeg (like browsers) goes to 120 ms.
    let f = ffmpeg_enc(
        dir.path(),
        "speech48",
        48000,
        2,
        &pcm,
        &["-b:a", "48k", "-frame_duration", "120"],
    );
    assert!(packets(&std::fs::read(&f).expect("fixture"))[2..]
        .iter()
        .all(|(p, _)| packet_samples_48k(p) == Some(5760)));
    assert_eq!(check_against_references(&f, 2), 100_007);
}

/// 5.1 input: six distinct tones in WAV order (FL FR FC LFE BL BR).
fn surround(frames: usize) -> Vec<i16> {
    let freqs = [300.0, 500.0, 700.0, 60.0, 900.0, 1100.0];
    let mut s = Vec::with_capacity(frames * 6);
    for i in 0..frames {
        let t = i as f64 / 48000.0;
        for f in freqs {
            s.push((8000.0 * (2.0 * std::f64::consts::PI * f * t).sin()) as i16);
        }
    }
    s
}

/// ITU downmix of opusdec's 5.1 output (WAV order) computed independently here.
fn itu_stereo(wav_order: &[i16]) -> Vec<i16> {
    let h = std::f64::consts::FRAC_1_SQRT_2;
    let k = 1.0 / (1.0 + 2.0 * h);
    let mut out = Vec::new();
    for f in wav_order.chunks(6) {
        let [fl, fr, fc, _lfe, bl, br] = [f[0], f[1], f[2], f[3], f[4], f[5]].map(f64::from);
        out.push((k * (fl + h * fc + h * bl)).round() as i16);
        out.push((k * (fr + h * fc + h * br)).round() as i16);
    }
    out
}

#[test]
fn five_point_one_family_1_from_opusenc_and_ffmpeg() {
    tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let pcm = surround(96_005);
    let files = [
        opusenc(
            dir.path(),
            "surround_e",
            48000,
            6,
            &pcm,
            &["--bitrate", "192"],
        ),
        ffmpeg_enc(
            dir.path(),
            "surround_f",
            48000,
            6,
            &pcm,
            &["-b:a", "192k", "-mapping_family", "1"],
        ),
    ];
    for f in &files {
        let head = &packets(&std::fs::read(f).expect("fixture"))[0].0;
        assert_eq!(
            (head[9], head[18]),
            (6, 1),
            "{}: expected a 6-channel family 1 head",
            f.display()
        );
        for rate in SUPPORTED_RATES {
            let reference = opusdec(f, rate);
            assert_eq!(reference.channels, 6);
            for channels in [1, 2] {
                assert_eq!(
                    ours(f, rate, channels).frames(),
                    reference.frames(),
                    "{} at {rate} Hz",
                    f.display()
                );
            }
        }
        let stereo = ours(f, 48000, 2);
        let (max, snr) = diff(&itu_stereo(&opusdec(f, 48000).samples), &stereo.samples);
        assert!(
            max <= 2,
            "{}: downmix differs from opusdec's channels downmixed here by {max} LSB ({snr:.1} dB)",
            f.display()
        );
        let ff = run(Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-c:a",
                "libopus",
                "-i",
            ])
            .arg(f)
            .args(["-ac", "2", "-f", "s16le", "-"]))
        .stdout;
        let ff: Vec<i16> = ff
            .chunks(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        let (max, snr) = diff(&ff, &stereo.samples);
        assert!(
            max <= 2,
            "{}: downmix differs from ffmpeg's by {max} LSB ({snr:.1} dB)",
            f.display()
        );
        let mono = ours(f, 48000, 1);
        let mean: Vec<i16> = stereo
            .samples
            .chunks(2)
            .map(|s| ((i32::from(s[0]) + i32::from(s[1])) / 2) as i16)
            .collect();
        assert!(
            diff(&mean, &mono.samples).0 <= 1,
            "mono is not the mean of the stereo downmix"
        );
    }
}

#[test]
fn chained_streams_decode_as_one_and_round_each_link_like_opusdec() {
    tools();
    let dir = tempfile::tempdir().expect("tempdir");
    // Link lengths at 48 kHz: 3 * 40_001 (= 3 mod 6) and 48_004 (= 4 mod 6),
    // so at 8 kHz flooring per link gives one frame less than flooring the sum.
    let a = opusenc(
        dir.path(),
        "link_a",
        16000,
        1,
        &speech_pcm(40_001, 16000, 1, 5),
        &["--bitrate", "20"],
    );
    let b = ffmpeg_enc(
        dir.path(),
        "link_b",
        48000,
        2,
        &music(48_004, 48000, 2, 6),
        &["-b:a", "64k"],
    );
    let mut chained = std::fs::read(&a).expect("a");
    chained.extend(std::fs::read(&b).expect("b"));
    let f = dir.path().join("chained.opus");
    std::fs::write(&f, &chained).expect("write");
    for rate in SUPPORTED_RATES {
        // opusdec decodes a chain with different channel counts as stereo.
        let reference = opusdec(&f, rate);
        let scale = (48000 / rate) as usize;
        let per_link = 3 * 40_001 / scale + 48_004 / scale;
        assert_eq!(reference.frames(), per_link, "opusdec at {rate} Hz");
        let stereo = ours(&f, rate, 2);
        assert_eq!(stereo.frames(), per_link, "ours at {rate} Hz");
        assert_eq!(ours(&f, rate, 1).frames(), per_link);
        if rate == 48000 {
            let (max, snr) = diff(&reference.samples, &stereo.samples);
            assert!(max <= 1, "chained: {max} LSB from opusdec ({snr:.1} dB)");
            // The chain is the two files' outputs back to back.
            let mut parts = ours(&a, rate, 2).samples;
            parts.extend(ours(&b, rate, 2).samples);
            assert_eq!(parts, stereo.samples);
        }
    }
}

#[test]
fn large_opustags_with_a_picture_spanning_many_pages() {
    tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let picture = dir.path().join("cover.png");
    run(Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg("nullsrc=s=400x400,geq=r='random(1)*255':g='random(2)*255':b='random(3)*255'")
        .args(["-frames:v", "1"])
        .arg(&picture));
    let size = std::fs::metadata(&picture).expect("picture").len();
    assert!(
        size > 200_000,
        "picture of {size} bytes is too small for this test"
    );
    let pcm = speech_pcm(32_009, 16000, 1, 7);
    let plain = opusenc(dir.path(), "plain", 16000, 1, &pcm, &["--bitrate", "24"]);
    let pic_arg = picture.to_str().expect("utf-8 path");
    let tagged = opusenc(
        dir.path(),
        "tagged",
        16000,
        1,
        &pcm,
        &["--bitrate", "24", "--picture", pic_arg],
    );
    let bytes = std::fs::read(&tagged).expect("fixture");
    // Pages before the first audio page: the OpusHead page, then OpusTags
    // pages (granule -1 until the one where the packet ends, granule 0).
    let tag_pages = pages(&bytes)
        .iter()
        .take_while(|p| p.granule == 0 || p.granule == u64::MAX)
        .count()
        - 1;
    assert!(tag_pages >= 4, "OpusTags spans only {tag_pages} pages");
    check_against_references(&tagged, 1);
    assert_eq!(
        ours(&tagged, 16000, 1),
        ours(&plain, 16000, 1),
        "the picture changed the audio"
    );
}

/// Adds `delta` to the granule position of every audio page.
fn shift_audio_granules(bytes: &[u8], delta: u64) -> Vec<u8> {
    let mut p = pages(bytes);
    for page in p.iter_mut().skip(2).filter(|p| p.granule != u64::MAX) {
        page.granule += delta;
    }
    write_pages(&p)
}

#[test]
fn stream_cut_from_a_live_recording_starts_at_its_first_granule() {
    tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let f = opusenc(
        dir.path(),
        "live",
        16000,
        1,
        &speech_pcm(48_011, 16000, 1, 8),
        &["--bitrate", "24"],
    );
    let original = std::fs::read(&f).expect("fixture");
    assert!(
        pages(&original).len() >= 5,
        "expected headers and several audio pages"
    );
    // RFC 7845 4.5: a first granule above the page's samples means the stream
    // starts later; pre-skip still applies and the length is unchanged.
    let shifted_path = dir.path().join("shifted.opus");
    std::fs::write(
        &shifted_path,
        shift_audio_granules(&original, 3 * 48000 + 17),
    )
    .expect("write");
    for rate in SUPPORTED_RATES {
        let mine = ours(&shifted_path, rate, 1);
        assert_eq!(
            mine,
            ours(&f, rate, 1),
            "live-cut stream decodes differently at {rate} Hz"
        );
        assert_eq!(
            mine.frames(),
            opusdec(&shifted_path, rate).frames(),
            "opusdec disagrees at {rate} Hz"
        );
    }
}

#[test]
fn single_page_stream_with_end_trimming_on_its_first_page() {
    tools();
    let dir = tempfile::tempdir().expect("tempdir");
    // 0.15 s fits on one page, which is also the EOS page, with a granule
    // smaller than its packets' samples: the start is 0 and the end is trimmed.
    let f = opusenc(
        dir.path(),
        "short",
        16000,
        1,
        &speech_pcm(2_401, 16000, 1, 9),
        &["--bitrate", "24"],
    );
    let p = pages(&std::fs::read(&f).expect("fixture"));
    assert_eq!(p.len(), 3);
    let samples: u32 = packets(&std::fs::read(&f).expect("fixture"))[2..]
        .iter()
        .filter_map(|(x, _)| packet_samples_48k(x))
        .sum();
    assert!(
        p[2].granule < u64::from(samples),
        "the fixture does not trim on its first page"
    );
    assert_eq!(check_against_references(&f, 1), 2_401 * 3);
}
