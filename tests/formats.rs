//! Every accepted non-Opus format through the real server, against
//! independent references made during the run:
//!
//! - WAV in every sample format (u8, s16, s24, s32, f32, f64) at 8, 22.05,
//!   44.1, 48 and 96 kHz, mono, stereo and 5.1 (WAVE_FORMAT_EXTENSIBLE, RF64
//!   too): resampled output against `sox in -r R -c C out` (sox's default
//!   high-quality resampler): the length within one frame, the SNR at least
//!   40 dB with no shift (the best alignment in -3..=3 frames is 0). At the
//!   file's own rate and channels the samples come back unchanged.
//! - 5.1 mixes with exactly the Opus path's matrix (`codec::downmix`).
//! - FLAC (16 and 24 bit) and Ogg FLAC: lossless, so against the WAV they
//!   were made from.
//! - MP3 (CBR with ID3v2 and a LAME Info header, VBR, and neither tag),
//!   Ogg Vorbis, AAC-LC in MP4 (plain with an edit list, and fragmented as
//!   browsers record it): against ffmpeg's decode of the same file, at the
//!   file's rate (lengths) and resampled by sox to 16 kHz (SNR).
//! - Hostile uploads: small files whose headers claim ten hours answer 413
//!   `audio_too_long`; cut-off and damaged files a 4xx with a code; never
//!   500.
//!
//! sox, ffmpeg and opusdec are required (CI installs them).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use opusgate::codec::{convert, downmix, ConvertOptions};
use serde_json::Value;
use support::clips::{parse_wav, Wav};
use support::formats::{
    as_format, ffmpeg_decode, ffmpeg_encode, ffprobe_duration_ts, flac_claiming, mp3_claiming,
    mp4_claiming, music_wav, read_f32, snr_and_best_shift, sox_reference, speech_wav, tools,
    wave_format_tag, SampleFormat,
};
use support::http::Api as _;
use support::server::{config_in, data_dir, TestServer};

/// Least SNR against the reference, in dB. Two good resamplers with
/// slightly different transition bands differ by about 58 dB on speech and
/// music here; a resampler shifted by even one frame falls below 30 dB.
const MIN_SNR_DB: f64 = 40.0;

/// POSTs the file at `path` for `rate` and `channels`; the 200 WAV.
async fn post(server: &TestServer, path: &Path, rate: u32, channels: u16) -> Wav {
    let body = std::fs::read(path).expect("fixture");
    let client = reqwest::Client::new();
    let response = server
        .post_convert(&client, &format!("?rate={rate}&channels={channels}"), body)
        .await;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body");
    assert_eq!(
        status,
        200,
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&bytes)
    );
    let wav = parse_wav(&bytes);
    assert_eq!(
        (wav.rate, wav.channels),
        (rate, channels),
        "{}",
        path.display()
    );
    wav
}

/// Asserts `ours` matches `reference` (interleaved floats of the same
/// channels): length within one frame, SNR >= [`MIN_SNR_DB`], no shift.
/// Returns the SNR.
fn assert_close(what: &str, reference: &[f32], ours: &Wav) -> f64 {
    let ch = usize::from(ours.channels);
    let frames = reference.len() / ch;
    assert!(
        ours.frames().abs_diff(frames) <= 1,
        "{what}: {} frames, the reference has {frames}",
        ours.frames()
    );
    let (snr, best) = snr_and_best_shift(reference, &ours.samples, ch);
    assert!(snr >= MIN_SNR_DB, "{what}: SNR {snr:.1} dB");
    assert_eq!(
        best, 0,
        "{what}: best aligned when shifted by {best} frames"
    );
    snr
}

async fn start() -> (TestServer, tempfile::TempDir) {
    let data = data_dir();
    (TestServer::start(config_in(data.path())).await, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wav_in_every_sample_format_and_rate_matches_sox() {
    tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, _data) = start().await;
    let mut table = Vec::new();
    for rate in [8000, 22050, 44100, 48000, 96000] {
        let speech = speech_wav(dir.path(), 2.0, 11, rate);
        for format in SampleFormat::ALL {
            let file = as_format(&speech, format);
            let ours = post(&server, &file, 16000, 1).await;
            let what = format!("speech {rate} Hz {} mono -> 16 kHz", format.name());
            let snr = assert_close(&what, &sox_reference(&file, 16000, 1), &ours);
            table.push(format!("{what}: {snr:.1} dB"));
        }
    }
    // Other output rates, up and down.
    for (rate, out) in [(8000, 24000), (22050, 8000), (44100, 48000), (96000, 12000)] {
        let file = speech_wav(dir.path(), 2.0, 12, rate);
        let ours = post(&server, &file, out, 1).await;
        let what = format!("speech {rate} Hz -> {out} Hz");
        let snr = assert_close(&what, &sox_reference(&file, out, 1), &ours);
        table.push(format!("{what}: {snr:.1} dB"));
    }
    println!("{}", table.join("\n"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stereo_and_upmixed_wav_match_sox() {
    tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, _data) = start().await;
    for rate in [22050, 44100, 96000] {
        let music = music_wav(dir.path(), 2.0, 3, rate, 2);
        for format in [SampleFormat::S16, SampleFormat::F32] {
            let file = as_format(&music, format);
            for channels in [1, 2] {
                let ours = post(&server, &file, 16000, channels).await;
                let what = format!(
                    "music {rate} Hz {} stereo -> 16 kHz x{channels}",
                    format.name()
                );
                assert_close(&what, &sox_reference(&file, 16000, channels), &ours);
            }
        }
    }
    // Mono to stereo: both channels carry it (sox duplicates too).
    let speech = speech_wav(dir.path(), 2.0, 13, 8000);
    let ours = post(&server, &speech, 24000, 2).await;
    assert_close(
        "speech 8 kHz -> 24 kHz stereo",
        &sox_reference(&speech, 24000, 2),
        &ours,
    );
    assert!(ours.samples.chunks(2).all(|f| f[0] == f[1]));
    // RF64 (ffmpeg -rf64 always): the same audio as the WAV it was made from.
    let music = music_wav(dir.path(), 2.0, 4, 44100, 2);
    let rf64 = ffmpeg_encode(
        &music,
        &dir.path().join("music.rf64.wav"),
        &["-rf64", "always"],
    );
    assert!(wave_format_tag(&rf64).1, "ffmpeg wrote RF64");
    let ours = post(&server, &rf64, 16000, 1).await;
    assert_close(
        "RF64 44.1 kHz stereo",
        &sox_reference(&music, 16000, 1),
        &ours,
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wav_at_the_output_rate_comes_back_unchanged() {
    tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, _data) = start().await;
    let speech = speech_wav(dir.path(), 2.0, 21, 16000);
    let source = parse_wav(&std::fs::read(&speech).expect("speech"));
    for format in SampleFormat::ALL {
        let file = as_format(&speech, format);
        let ours = post(&server, &file, 16000, 1).await;
        if format == SampleFormat::U8 {
            // 8 bits hold less: each sample is the 8-bit value scaled up.
            let (u8s, _, _) = read_f32(&file);
            let want: Vec<i16> = u8s.iter().map(|&x| (x * 32768.0) as i16).collect();
            assert_eq!(ours.samples, want, "u8 at its own rate");
        } else {
            // sox wrote the 16-bit values exactly in the wider formats.
            assert_eq!(
                ours.samples,
                source.samples,
                "{} at its own rate",
                format.name()
            );
        }
    }
    let music = music_wav(dir.path(), 2.0, 22, 48000, 2);
    let ours = post(&server, &music, 48000, 2).await;
    assert_eq!(
        ours.samples,
        parse_wav(&std::fs::read(&music).expect("music")).samples
    );
    server.stop().await;
}

/// WAVE 5.1 order (FL FR FC LFE BL BR) to Vorbis order (FL C FR RL RR LFE).
const WAVE_TO_VORBIS_51: [usize; 6] = [0, 2, 1, 4, 5, 3];

/// The Opus path's downmix of interleaved WAVE-order 5.1 floats.
fn opus_path_mix(source: &[f32], out: usize) -> Vec<i16> {
    let vorbis: Vec<f32> = source
        .chunks_exact(6)
        .flat_map(|f| WAVE_TO_VORBIS_51.map(|i| f[i]))
        .collect();
    let matrix = downmix::matrix(6, out).expect("5.1 matrix");
    let mut mixed = vec![0i16; vorbis.len() / 6 * out];
    downmix::apply(&matrix, 6, out, &vorbis, &mut mixed);
    mixed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surround_wav_mixes_with_the_opus_paths_matrix() {
    tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, _data) = start().await;
    // 5.1 at the output rate: exactly the matrix applied to the samples.
    let music = music_wav(dir.path(), 2.0, 31, 48000, 6);
    assert_eq!(
        wave_format_tag(&music).0,
        0xFFFE,
        "a WAVE_FORMAT_EXTENSIBLE file"
    );
    let (source, _, _) = read_f32(&music);
    for out in [1u16, 2] {
        let ours = post(&server, &music, 48000, out).await;
        assert_eq!(
            ours.samples,
            opus_path_mix(&source, usize::from(out)),
            "5.1 -> {out}"
        );
    }
    // 5.1 float at 96 kHz to 16 kHz stereo: the matrix, then sox's resampling.
    let music = as_format(&music_wav(dir.path(), 2.0, 32, 96000, 6), SampleFormat::F32);
    let (source, _, _) = read_f32(&music);
    let mixed: Vec<i16> = opus_path_mix(&source, 2);
    let stereo = dir.path().join("mixed-96k.wav");
    support::clips::write_wav(&stereo, 96000, 2, &mixed);
    let ours = post(&server, &music, 16000, 2).await;
    assert_close(
        "5.1 96 kHz f32 -> 16 kHz stereo",
        &sox_reference(&stereo, 16000, 2),
        &ours,
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flac_is_lossless_at_16_and_24_bits() {
    tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, _data) = start().await;
    let d = dir.path();
    // 16-bit stereo music at 44.1 kHz, and Ogg FLAC of it.
    let music = music_wav(d, 2.0, 41, 44100, 2);
    for (name, args) in [
        ("music.flac", &["-c:a", "flac"][..]),
        ("music.oga", &["-c:a", "flac"][..]),
    ] {
        let flac = ffmpeg_encode(&music, &d.join(name), args);
        let ours = post(&server, &flac, 16000, 2).await;
        assert_close(name, &sox_reference(&music, 16000, 2), &ours);
    }
    // 24-bit speech at 48 kHz: unchanged at 48 kHz, like sox at 16 kHz.
    let speech = speech_wav(d, 2.0, 42, 48000);
    let s24 = as_format(&speech, SampleFormat::S24);
    let flac = ffmpeg_encode(&s24, &d.join("speech24.flac"), &["-c:a", "flac"]);
    let (probe, _, _, _) = ffmpeg_decode(&flac);
    assert_eq!(
        read_f32(&probe).0,
        read_f32(&s24).0,
        "ffmpeg: the FLAC is lossless"
    );
    let ours = post(&server, &flac, 48000, 1).await;
    assert_eq!(
        ours.samples,
        parse_wav(&std::fs::read(&speech).expect("speech")).samples
    );
    let ours = post(&server, &flac, 16000, 1).await;
    assert_close(
        "24-bit FLAC -> 16 kHz",
        &sox_reference(&s24, 16000, 1),
        &ours,
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_formats_match_ffmpegs_decode() {
    tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, _data) = start().await;
    let d = dir.path();
    let speech = speech_wav(d, 3.0, 51, 48000);
    let music = music_wav(d, 3.0, 52, 44100, 2);
    let cases: [(&str, &Path, &[&str]); 8] = [
        // ffmpeg's defaults: an ID3v2 tag and a LAME Info header (gapless).
        ("cbr.mp3", &speech, &["-c:a", "libmp3lame", "-b:a", "64k"]),
        ("vbr.mp3", &music, &["-c:a", "libmp3lame", "-q:a", "4"]),
        (
            "bare.mp3",
            &speech,
            &[
                "-c:a",
                "libmp3lame",
                "-b:a",
                "64k",
                "-id3v2_version",
                "0",
                "-write_xing",
                "0",
            ],
        ),
        ("speech.ogg", &speech, &["-c:a", "libvorbis", "-q:a", "4"]),
        ("music.ogg", &music, &["-c:a", "libvorbis", "-q:a", "4"]),
        ("speech.m4a", &speech, &["-c:a", "aac", "-b:a", "96k"]),
        ("music.m4a", &music, &["-c:a", "aac", "-b:a", "128k"]),
        (
            "fragmented.m4a",
            &speech,
            &[
                "-c:a",
                "aac",
                "-b:a",
                "64k",
                "-movflags",
                "+frag_keyframe+empty_moov+default_base_moof",
            ],
        ),
    ];
    let mut table = Vec::new();
    for (name, source, args) in cases {
        let file = ffmpeg_encode(source, &d.join(name), args);
        let (decoded, rate, channels, frames) = ffmpeg_decode(&file);
        // The file's own length. An MP4 with an edit list is trimmed to it
        // (ffmpeg 5 keeps the encoder's padding at the end: it decodes
        // more, starting at the same sample).
        let edit = name.ends_with(".m4a") && !name.starts_with("fragmented");
        let length = if edit {
            let listed = ffprobe_duration_ts(&file) as usize;
            assert!(listed < frames, "{name}: ffmpeg keeps the padding");
            listed
        } else {
            frames
        };
        if opusgate::codec::SUPPORTED_RATES.contains(&rate) {
            let ours = post(&server, &file, rate, channels).await;
            assert!(
                ours.frames().abs_diff(length) <= 1,
                "{name}: {} frames at {rate} Hz, ffmpeg's decode has {length}",
                ours.frames()
            );
        }
        let ours = post(&server, &file, 16000, 1).await;
        let mut reference = sox_reference(&decoded, 16000, 1);
        if edit {
            let at_16k = (length as u64 * 32000).div_ceil(2 * u64::from(rate)) as usize;
            assert!(
                ours.frames().abs_diff(at_16k) <= 1,
                "{name}: {} frames",
                ours.frames()
            );
            reference.truncate(ours.frames());
        }
        let snr = assert_close(&format!("{name} -> 16 kHz"), &reference, &ours);
        table.push(format!("{name} ({rate} Hz x{channels}): {snr:.1} dB"));
    }
    println!("{}", table.join("\n"));
    server.stop().await;
}

/// POSTs `body`; asserts a 4xx JSON error and returns (status, code, message).
async fn refused(server: &TestServer, what: &str, body: Vec<u8>) -> (u16, String, String) {
    let client = reqwest::Client::new();
    let response = server.post_convert(&client, "", body).await;
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    assert!((400..500).contains(&status), "{what}: {status} {text}");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: {text}"));
    let code = v["code"].as_str().unwrap_or_default().to_owned();
    let message = v["message"].as_str().unwrap_or_default().to_owned();
    assert!(!code.is_empty() && !message.is_empty(), "{what}: {text}");
    (status, code, message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_files_get_a_4xx_with_a_code() {
    tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, _data) = start().await;
    let d = dir.path();
    let ten_hours = 10 * 3600;
    // About 1 kB each, their headers claiming ten hours.
    let mut wav = Vec::new();
    opusgate::codec::wav::write_header(&mut wav, 16000, 1, ten_hours * 16000 * 2);
    wav.extend_from_slice(&[0u8; 980]);
    let short = speech_wav(d, 0.05, 61, 16000);
    let flac = std::fs::read(ffmpeg_encode(
        &short,
        &d.join("short.flac"),
        &["-c:a", "flac"],
    ))
    .expect("flac");
    let flac = flac_claiming(&flac, u64::from(ten_hours) * 16000);
    let mp3 = std::fs::read(ffmpeg_encode(
        &short,
        &d.join("short.mp3"),
        &["-c:a", "libmp3lame"],
    ))
    .expect("mp3");
    let mp3 = mp3_claiming(&mp3, ten_hours * 16000 / 576 + 10);
    let m4a = std::fs::read(ffmpeg_encode(
        &short,
        &d.join("short.m4a"),
        &["-c:a", "aac"],
    ))
    .expect("m4a");
    let m4a = mp4_claiming(&m4a, ten_hours);
    for (what, body) in [("wav", wav), ("flac", flac), ("mp3", mp3), ("m4a", m4a)] {
        assert!(body.len() < 2048, "{what}: {} bytes", body.len());
        let (status, code, message) = refused(&server, what, body).await;
        assert_eq!(
            (status, code.as_str()),
            (413, "audio_too_long"),
            "{what}: {message}"
        );
        assert!(message.contains("10 h 00 min"), "{what}: {message}");
    }
    // Cut off at 60%: each format says so.
    let speech = speech_wav(d, 2.0, 62, 44100);
    let files = [
        speech.clone(),
        as_format(&speech, SampleFormat::F32),
        ffmpeg_encode(&speech, &d.join("cut.flac"), &["-c:a", "flac"]),
        ffmpeg_encode(&speech, &d.join("cut.mp3"), &["-c:a", "libmp3lame"]),
        ffmpeg_encode(&speech, &d.join("cut.ogg"), &["-c:a", "libvorbis"]),
        ffmpeg_encode(&speech, &d.join("cut.oga"), &["-c:a", "flac"]),
        ffmpeg_encode(&speech, &d.join("cut.m4a"), &["-c:a", "aac"]),
        ffmpeg_encode(
            &speech,
            &d.join("cut-frag.m4a"),
            &[
                "-c:a",
                "aac",
                "-movflags",
                "+frag_keyframe+empty_moov+default_base_moof",
            ],
        ),
    ];
    for file in &files {
        let bytes = std::fs::read(file).expect("fixture");
        let what = format!("{} cut off", file.display());
        let (status, code, _) =
            refused(&server, &what, bytes[..bytes.len() * 6 / 10].to_vec()).await;
        assert_eq!((status, code.as_str()), (422, "truncated_stream"), "{what}");
        // Garbage over the start of the audio: refused or decoded, never a 5xx.
        let mut damaged = bytes.clone();
        let start = (bytes.len() / 3).max(64);
        for (i, b) in damaged[start..start + 4000].iter_mut().enumerate() {
            *b = (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0];
        }
        let client = reqwest::Client::new();
        let r = server.post_convert(&client, "", damaged).await;
        assert!(
            r.status().as_u16() < 500,
            "{} damaged: {}",
            file.display(),
            r.status()
        );
    }
    // Only a format's magic, then garbage or nothing.
    for (what, magic) in [
        ("riff", &b"RIFF\x24\0\0\0WAVEfmt "[..]),
        ("flac", b"fLaC"),
        ("id3", b"ID3\x04\0\0\0\0\0\x10"),
        ("ftyp", b"\0\0\0\x18ftypM4A \0\0\0\0M4A mp42"),
    ] {
        for tail in [0usize, 3000] {
            let mut body = magic.to_vec();
            body.extend((0..tail).map(|i| (i * 7919 % 251) as u8));
            refused(&server, &format!("{what} + {tail} bytes"), body).await;
        }
    }
    server.stop().await;
}

#[test]
fn library_conversion_is_deterministic_lenient_and_timely() {
    tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let speech = speech_wav(dir.path(), 2.0, 71, 44100);
    let mp3 = ffmpeg_encode(&speech, &dir.path().join("d.mp3"), &["-c:a", "libmp3lame"]);
    let opts = ConvertOptions::default();
    for file in [&speech, &mp3] {
        let bytes = std::fs::read(file).expect("fixture");
        let a = convert(&bytes, &opts).expect("convert");
        let b = convert(&bytes, &opts).expect("convert again");
        assert_eq!(a, b, "{}: same input, same bytes", file.display());
    }
    // Lenient: a WAV cut off gives the intact prefix, sample for sample.
    let s16k = std::fs::read(speech_wav(dir.path(), 2.0, 72, 16000)).expect("16 kHz");
    let whole = convert(&s16k, &opts).expect("whole");
    let cut = &s16k[..s16k.len() / 2 + 1];
    let e = convert(cut, &opts).expect_err("strict refuses a cut file");
    assert_eq!(e.code(), "truncated_stream", "{e}");
    let lenient = ConvertOptions {
        lenient: true,
        ..ConvertOptions::default()
    };
    let prefix = convert(cut, &lenient).expect("lenient");
    let n = prefix.wav.len();
    assert_eq!(prefix.frames, (cut.len() as u64 - 44) / 2);
    assert_eq!(prefix.wav[44..], whole.wav[44..n]);
    // The deadline is checked while decoding.
    let late = ConvertOptions {
        deadline: Some(Instant::now()),
        ..ConvertOptions::default()
    };
    let e = convert(&std::fs::read(&mp3).expect("mp3"), &late).expect_err("past its deadline");
    assert_eq!(e.code(), "conversion_timeout", "{e}");
    // The limit holds where the container says nothing (an MP3 without a
    // Xing header): 3 s against a 2 s limit stops while decoding.
    let bare = ffmpeg_encode(
        &speech_wav(dir.path(), 3.0, 73, 16000),
        &dir.path().join("bare.mp3"),
        &[
            "-c:a",
            "libmp3lame",
            "-write_xing",
            "0",
            "-id3v2_version",
            "0",
        ],
    );
    let short = ConvertOptions {
        max_duration: Duration::from_secs(2),
        ..ConvertOptions::default()
    };
    let e = convert(&std::fs::read(&bare).expect("bare"), &short).expect_err("over the limit");
    assert!(
        matches!(
            e,
            opusgate::codec::CodecError::AudioTooLong { at_least: true, .. }
        ),
        "{e}"
    );
    // A streamed WAV (sizes 0xFFFFFFFF, as ffmpeg writes to a pipe) is read
    // to its end.
    let mut streamed = std::fs::read(speech_wav(dir.path(), 3.0, 74, 16000)).expect("3 s");
    streamed[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    streamed[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        convert(&streamed, &opts).expect("within 10 min").frames,
        48000
    );
}
