//! Hostile and broken inputs: each gets its typed error (never a panic), the
//! lenient mode decodes the intact prefix of cut-off streams, and odd but
//! valid layouts (multiplexed non-Opus streams, empty packets, several packets
//! per page) decode like the plain stream.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use opusgate::codec::head::packet_samples_48k;
use opusgate::codec::{convert, encode_sample, ConvertOptions, Converted, SampleOptions};
use support::clips::{clip, options};
use support::hostile::{
    bad_crc, continued_page, crowded, long_stream, one_packet_link, vorbis_stream, Parts,
    ODD_CBR_PACKET, WEBM, ZERO_FRAMES_PACKET,
};
use support::ogg::{mux, opus_head, pages, reserial, write_pages, End, Page};
use support::rng::XorShift;
use support::tools::require_tool;

fn strict(input: &[u8]) -> Result<Converted, opusgate::codec::CodecError> {
    convert(input, &ConvertOptions::default())
}

fn lenient(input: &[u8]) -> Result<Converted, opusgate::codec::CodecError> {
    convert(
        input,
        &ConvertOptions {
            lenient: true,
            ..ConvertOptions::default()
        },
    )
}

fn code(r: Result<Converted, opusgate::codec::CodecError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.code(),
    }
}

fn samples_of(audio: &[(Vec<u8>, u64)]) -> u64 {
    audio
        .iter()
        .map(|(p, _)| u64::from(packet_samples_48k(p).unwrap_or(0)))
        .sum()
}

#[test]
fn inputs_of_no_accepted_format_are_unsupported_format() {
    let aiff = b"FORM\0\0\0\x20AIFFCOMM".to_vec();
    for input in [
        &b""[..],
        b"hello, this is text",
        &aiff,
        &[0xFF, 0xF1, 0x50, 0x80, 0x02, 0x1F, 0xFC],
        &[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A],
    ] {
        let err = strict(input).expect_err("refused");
        assert_eq!(err.code(), "unsupported_format", "{input:?}");
        let msg = err.to_string();
        assert!(msg.contains("accepted are"), "{msg}");
        assert!(!msg.contains("ffmpeg"), "suggests a command: {msg}");
    }
}

#[test]
fn headers_of_accepted_formats_alone_are_broken_streams_not_unsupported() {
    let mut wav = b"RIFF\x24\0\0\0WAVEfmt ".to_vec();
    wav.resize(64, 0);
    for input in [
        &wav[..],
        &WEBM,
        &[0xFF, 0xFB, 0x90, 0x00],
        b"fLaC\0\0\0\x22",
    ] {
        let code = code(strict(input));
        assert!(
            code == "truncated_stream" || code == "invalid_stream",
            "{input:?}: {code}"
        );
    }
}

#[test]
fn ogg_without_a_decodable_stream_is_unsupported_format() {
    let speex = mux(
        7,
        b"Speex   1.2",
        b"tags",
        &[(vec![0; 20], 320)],
        1,
        End::Eos,
    );
    let err = strict(&speex).expect_err("speex only");
    assert_eq!(err.code(), "unsupported_format");
    assert!(err.to_string().contains("Speex"), "{err}");
    // Vorbis is decoded, so broken Vorbis headers are a broken stream.
    let vorbis = vorbis_stream(7, &[], &[(vec![0; 20], 1024)]);
    let err = strict(&vorbis).expect_err("broken vorbis");
    assert_ne!(err.code(), "unsupported_format", "{err}");
    assert!(err.to_string().contains("Vorbis"), "{err}");
}

#[test]
fn bad_opus_heads_are_invalid_stream_or_unsupported_mapping() {
    let parts = Parts::of(&clip(0.5, 1), 9);
    let build = |head: Vec<u8>| parts.with_head(&head);
    assert_eq!(code(strict(&build(opus_head(1, 1, 312, 0, 0, &[])))), "ok");
    assert_eq!(
        code(strict(&build(opus_head(16, 1, 312, 0, 0, &[])))),
        "invalid_stream"
    );
    assert_eq!(
        code(strict(&build(opus_head(1, 0, 312, 0, 0, &[])))),
        "invalid_stream"
    );
    assert_eq!(
        code(strict(&build(opus_head(1, 3, 312, 0, 0, &[])))),
        "invalid_stream"
    );
    assert_eq!(
        code(strict(&build(b"OpusHead\x01\x01\x38".to_vec()))),
        "invalid_stream"
    );
    assert_eq!(
        code(strict(&build(opus_head(1, 6, 312, 0, 1, &[4, 2, 0, 4])))),
        "invalid_stream"
    );
    assert_eq!(
        code(strict(&build(opus_head(1, 2, 312, 0, 2, &[1, 1, 0, 1])))),
        "unsupported_channel_mapping"
    );
    assert_eq!(
        code(strict(&build(opus_head(1, 2, 312, 0, 255, &[1, 1, 0, 1])))),
        "unsupported_channel_mapping"
    );
    // Pre-skip longer than the half second of audio in the stream.
    let err = strict(&build(opus_head(1, 1, 60_000, 0, 0, &[]))).expect_err("pre-skip");
    assert_eq!(err.code(), "invalid_stream");
    assert!(err.to_string().contains("pre-skip"), "{err}");
    // The OpusTags header must follow.
    let no_tags = parts.build(
        &opus_head(1, 1, 312, 0, 0, &[]),
        b"NotTags!",
        &parts.audio,
        End::Eos,
    );
    assert_eq!(code(strict(&no_tags)), "invalid_stream");
}

#[test]
fn a_page_failing_its_crc_is_invalid_stream() {
    let good = clip(1.0, 2);
    // Flip a bit in the body of a page in the middle of the stream.
    let p = pages(&good);
    let k = p.len() / 2;
    let bytes = bad_crc(&good, k, p[k].body.len() / 2, 0x40);
    let err = strict(&bytes).expect_err("corrupt");
    assert_eq!(err.code(), "invalid_stream");
    assert!(err.to_string().contains("CRC"), "{err}");
    assert_eq!(
        code(lenient(&bytes)),
        "invalid_stream",
        "lenient mode only forgives truncation"
    );
}

#[test]
fn packets_the_decoder_rejects_are_invalid_stream() {
    let parts = Parts::of(&clip(1.0, 3), 5);
    let mut a = parts.audio.clone();
    // Code 1 (two equal frames) with an odd payload: libopus refuses it.
    a[10].0 = ODD_CBR_PACKET.to_vec();
    let err = strict(&parts.with_audio(&a)).expect_err("bad packet");
    assert_eq!(err.code(), "invalid_stream");
    assert!(
        err.to_string().contains("rejected by the Opus decoder"),
        "{err}"
    );
    // Code 3 with a frame count of 0: not an Opus packet at all.
    a[10].0 = ZERO_FRAMES_PACKET.to_vec();
    let err = strict(&parts.with_audio(&a)).expect_err("bad toc");
    assert_eq!(err.code(), "invalid_stream");
    assert!(err.to_string().contains("not a valid Opus packet"), "{err}");
}

#[test]
fn bad_granule_positions_are_invalid_stream() {
    let parts = Parts::of(&clip(1.0, 4), 5);
    type Edit<'a> = &'a dyn Fn(&mut Vec<(Vec<u8>, u64)>);
    let with = |f: Edit| {
        let mut x = parts.audio.clone();
        f(&mut x);
        strict(&parts.with_audio(&x))
    };
    assert_eq!(code(with(&|_| {})), "ok");
    assert_eq!(
        code(with(&|x| x[7].1 = u64::MAX)),
        "invalid_stream",
        "audio page without granule"
    );
    // Disagreeing granules past 2^62 (negative as signed numbers) are not
    // repaired: ffmpeg refuses them too.
    assert_eq!(
        code(with(&|x| x[20].1 = 0u64.wrapping_sub(960))),
        "invalid_stream",
        "granule going negative"
    );
    assert_eq!(
        code(with(&|x| x[0].1 = 0u64.wrapping_sub(5))),
        "invalid_stream",
        "negative first granule"
    );
    // The final granule may trim, but not below the pre-skip (a stream of
    // one page, which is also its last).
    let one_page = parts.with_audio(&[(parts.audio[0].0.clone(), 100)]);
    assert_eq!(code(strict(&one_page)), "invalid_stream");
}

#[test]
fn granules_disagreeing_with_their_packets_are_decoded_as_ffmpeg_does() {
    // What ffmpeg's Ogg demuxer does with them (tests/ogg_repair.rs compares
    // with ffmpeg itself): the packets are decoded, minus the pre-skip, and
    // only the end-of-stream page is trimmed, against the previous page's
    // granule as written.
    let parts = Parts::of(&clip(1.0, 4), 5);
    let intact = strict(&parts.with_audio(&parts.audio)).expect("intact");
    assert_eq!(intact.repaired, None);
    let all = samples_of(&parts.audio);
    let n = parts.audio.len();
    let last = u64::from(packet_samples_48k(&parts.audio[n - 1].0).unwrap_or(0));
    let trimmed = all - (parts.audio[n - 2].1 + last - parts.audio[n - 1].1);
    assert_eq!(intact.frames, (trimmed - 312) / 3);
    type Edit<'a> = &'a dyn Fn(&mut Vec<(Vec<u8>, u64)>);
    // (what, edit, samples kept, pages counted: the edited one and the one
    // after it unless it is the last, what the description says)
    let cases: [(&str, Edit, u64, u64, &str); 6] = [
        (
            "first granule below its samples",
            &|x| x[0].1 = 100,
            trimmed,
            2,
            "first audio page",
        ),
        (
            "first granule 0",
            &|x| x[0].1 = 0,
            trimmed,
            2,
            "first audio page",
        ),
        (
            "granule going backwards",
            &|x| x[20].1 = x[5].1,
            trimmed,
            2,
            "where its packets end",
        ),
        (
            "granule 1 ms ahead",
            &|x| x[20].1 += 48,
            trimmed,
            2,
            "where its packets end",
        ),
        (
            "final granule before the previous one",
            &|x| x[n - 1].1 = 100,
            all - last,
            1,
            "dropped",
        ),
        (
            "final granule beyond its packets",
            &|x| x[n - 1].1 += 3 * 86_400 * 48_000,
            all,
            1,
            "nothing is trimmed",
        ),
    ];
    for (what, edit, samples, pages, says) in cases {
        let mut audio = parts.audio.clone();
        edit(&mut audio);
        let out = strict(&parts.with_audio(&audio)).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(out.frames, (samples - 312) / 3, "{what}");
        let repaired = out
            .repaired
            .unwrap_or_else(|| panic!("{what}: not counted as repaired"));
        assert_eq!((repaired.streams, repaired.pages), (1, pages), "{what}");
        assert!(repaired.first.contains(says), "{what}: {repaired}");
        // The audio before the repaired page is the intact stream's.
        assert_eq!(out.wav[44..2044], intact.wav[44..2044], "{what}");
    }
    // Every later page of a stream shifted by 3 days disagrees once (the
    // first of them); the granules claim 3 days, the packets 1 s.
    let mut audio = parts.audio.clone();
    for (_, gp) in &mut audio[30..] {
        *gp += 3 * 86_400 * 48_000;
    }
    let out = strict(&parts.with_audio(&audio)).expect("3 days");
    assert_eq!(out.wav, intact.wav);
    assert_eq!(out.repaired.map(|r| r.pages), Some(1));
}

#[test]
fn a_stream_without_eos_is_truncated_unless_lenient() {
    let base = clip(1.0, 5);
    let parts = Parts::of(&base, 5);
    let no_eos = parts.without_eos();
    let err = strict(&no_eos).expect_err("no eos");
    assert_eq!(err.code(), "truncated_stream");
    assert!(err.to_string().contains("lenient"), "{err}");
    // Lenient: every decoded sample after the pre-skip (nothing to end-trim by).
    let out = lenient(&no_eos).expect("lenient");
    assert_eq!(out.frames, (samples_of(&parts.audio) - 312) / 3);
    let full = strict(&base).expect("full");
    assert!(out.frames > full.frames);
    assert_eq!(
        &out.wav[44..full.wav.len()],
        &full.wav[44..],
        "lenient output must start like the full one"
    );
}

#[test]
fn cut_off_files_are_truncated_unless_lenient_which_decodes_the_intact_prefix() {
    let full_bytes = clip(2.0, 6);
    let full = strict(&full_bytes).expect("full");
    let p = pages(&full_bytes);
    let page_ends: Vec<usize> = p
        .iter()
        .scan(0, |at, pg| {
            *at += pg.len();
            Some(*at)
        })
        .collect();
    let cuts = [
        full_bytes.len() - 3,
        page_ends[p.len() - 2] + 10,
        full_bytes.len() / 2,
        page_ends[1],
        page_ends[1] + 5,
    ];
    for cut in cuts {
        let input = &full_bytes[..cut];
        let err = strict(input).expect_err("cut");
        assert_eq!(err.code(), "truncated_stream", "cut at {cut}: {err}");
        let out = lenient(input).unwrap_or_else(|e| panic!("lenient at {cut}: {e}"));
        assert!(out.frames < full.frames, "cut at {cut}");
        assert_eq!(out.wav.len(), 44 + out.frames as usize * 2);
        assert_eq!(
            &out.wav[44..],
            &full.wav[44..out.wav.len()],
            "cut at {cut}: not a prefix of the full output"
        );
        // Exactly the complete pages before the cut, minus the pre-skip.
        let complete = page_ends.iter().filter(|&&e| e <= cut).count();
        let audio_pages = complete.saturating_sub(2) as u64;
        assert_eq!(
            out.frames,
            (audio_pages * 960).saturating_sub(312) / 3,
            "cut at {cut}"
        );
    }
}

#[test]
fn audio_too_long_is_refused_from_granules_before_decoding() {
    // 12 hours in 360 000 packets: refused as too long, although every packet
    // would make the decoder fail, so nothing was decoded.
    let twelve_hours = long_stream(12 * 3600 * 1000 / 120, None);
    let err = strict(&twelve_hours).expect_err("12 h");
    assert_eq!(err.code(), "audio_too_long");
    assert!(err.to_string().contains("at least"), "{err}");
    // The same with a limit above its length reaches the decoder.
    let short = long_stream(100, None);
    assert_eq!(code(strict(&short)), "invalid_stream");
    let opts = ConvertOptions {
        max_duration: Duration::from_secs(5),
        ..ConvertOptions::default()
    };
    assert_eq!(
        code(convert(&long_stream(60, None), &opts)),
        "audio_too_long"
    );
    // Granules that claim little audio do not hide the packets' real length.
    let lying = long_stream(10_000, Some(48_000));
    assert_eq!(code(strict(&lying)), "audio_too_long");
}

#[test]
fn a_passed_deadline_is_a_conversion_timeout() {
    let bytes = clip(1.0, 7);
    let opts = ConvertOptions {
        deadline: Some(Instant::now()),
        ..ConvertOptions::default()
    };
    assert_eq!(code(convert(&bytes, &opts)), "conversion_timeout");
    let later = ConvertOptions {
        deadline: Some(Instant::now() + Duration::from_secs(600)),
        ..ConvertOptions::default()
    };
    assert_eq!(code(convert(&bytes, &later)), "ok");
}

#[test]
fn bad_parameters_name_the_allowed_values() {
    let bytes = clip(0.5, 8);
    for (rate, channels) in [(44100, 1), (0, 1), (16000, 0), (16000, 3)] {
        let err = convert(&bytes, &options(rate, channels)).expect_err("bad");
        assert_eq!(err.code(), "bad_parameter");
        let msg = err.to_string();
        assert!(
            msg.contains("8000, 12000, 16000, 24000, 48000") || msg.contains("1 or 2"),
            "{msg}"
        );
    }
}

#[test]
fn no_panic_on_any_prefix_or_corruption() {
    let bytes = clip(0.3, 9);
    for cut in 0..bytes.len() {
        for out in [strict(&bytes[..cut]), lenient(&bytes[..cut])]
            .into_iter()
            .flatten()
        {
            assert_eq!(out.wav.len(), 44 + out.frames as usize * 2);
        }
    }
    // Random edits with valid CRCs, so they reach the demuxer and decoder.
    let base = pages(&bytes);
    let mut rng = XorShift(0x1234_5678_9abc_def0);
    let mut next = |m: usize| rng.index(m);
    for _ in 0..1500 {
        let mut p = base.clone();
        for _ in 0..1 + next(3) {
            let i = next(p.len());
            match next(6) {
                0 if !p[i].body.is_empty() => {
                    let j = next(p[i].body.len());
                    p[i].body[j] = next(256) as u8;
                }
                1 => p[i].granule = [0, u64::MAX, 1 << 40, p[i].granule.wrapping_sub(960)][next(4)],
                2 => p[i].flags = next(8) as u8,
                3 => p[i].sequence = p[i].sequence.wrapping_add(1),
                4 if !p[i].lacing.is_empty() => {
                    let j = next(p[i].lacing.len());
                    p[i].lacing[j] = next(256) as u8;
                }
                _ => p[i].serial ^= 1,
            }
        }
        let input = write_pages(&p);
        for out in [strict(&input), lenient(&input)].into_iter().flatten() {
            assert_eq!(out.wav.len(), 44 + out.frames as usize * 2);
        }
    }
}

#[test]
fn other_logical_streams_are_skipped() {
    let bytes = clip(1.0, 10);
    let plain = strict(&bytes).expect("plain");
    // Interleave a fake Vorbis stream's pages with the Opus pages.
    let vorbis = pages(&vorbis_stream(
        4242,
        &[],
        &[(vec![1; 300], 100), (vec![2; 300], 200)],
    ));
    let opus = pages(&bytes);
    let mut mixed = vec![opus[0].clone(), vorbis[0].clone()];
    let mut rest_v = vorbis[1..].iter();
    for (i, page) in opus[1..].iter().enumerate() {
        mixed.push(page.clone());
        if i % 7 == 0 {
            if let Some(v) = rest_v.next() {
                mixed.push(v.clone());
            }
        }
    }
    assert_eq!(strict(&write_pages(&mixed)).expect("multiplexed"), plain);
    // A chain with a Vorbis-only link between two Opus links.
    let other = clip(0.5, 11);
    let mut chain = bytes.clone();
    chain.extend(write_pages(&vorbis));
    chain.extend(&other);
    let out = strict(&chain).expect("chain");
    let mut expected = plain.wav[44..].to_vec();
    expected.extend(&strict(&other).expect("other").wav[44..]);
    assert_eq!(&out.wav[44..], &expected[..]);
}

#[test]
fn empty_packets_and_packing_do_not_change_the_output() {
    let bytes = clip(1.0, 12);
    let plain = strict(&bytes).expect("plain");
    let parts = Parts::of(&bytes, 1);
    let mut a = parts.audio.clone();
    let gp = a[3].1;
    a.insert(4, (Vec::new(), gp));
    assert_eq!(strict(&parts.with_audio(&a)).expect("empty packet"), plain);
    let packed = encode_sample(&SampleOptions {
        seconds: 1.0,
        seed: 12,
        packets_per_page: 17,
        ..SampleOptions::default()
    })
    .expect("packed");
    assert!(pages(&packed).len() * 5 < pages(&bytes).len());
    assert_eq!(strict(&packed).expect("packed"), plain);
}

#[test]
fn absurd_stream_counts_are_refused() {
    let opus = pages(&clip(0.2, 13));
    // 70 streams multiplexed into one link.
    assert_eq!(code(strict(&crowded(70, &opus))), "invalid_stream");
    // 10 001 tiny chained links.
    let link = one_packet_link(&[9 << 3], 960);
    let chain = link.repeat(10_001);
    assert_eq!(code(strict(&chain)), "invalid_stream");
    let chain = link.repeat(100);
    assert_eq!(strict(&chain).expect("100 links").frames, 100 * 320);
}

#[test]
fn audio_too_long_says_at_least_when_more_links_may_follow() {
    // A link whose EOS page is the first to cross a 5 s limit: on its own
    // its length is exact, with another link after it only a lower bound.
    let opts = ConvertOptions {
        max_duration: Duration::from_secs(5),
        ..ConvertOptions::default()
    };
    let first = clip(5.01, 3);
    let alone = convert(&first, &opts).expect_err("over the limit");
    assert_eq!(alone.code(), "audio_too_long");
    assert!(
        alone.to_string().contains("holds 5.010 s of audio"),
        "{alone}"
    );
    let mut chain = first.clone();
    chain.extend_from_slice(&clip(1.0, 4));
    let chained = convert(&chain, &opts).expect_err("over the limit");
    assert!(
        chained
            .to_string()
            .contains("holds at least 5.010 s of audio"),
        "{chained}"
    );
}

/// Runs a reference decoder on the file at `path`: `opusdec` (to a WAV file
/// beside it), or ffmpeg with `-xerror` (stop at the first decoding error
/// instead of logging it and going on) to standard output.
fn reference_decode(tool: &str, path: &Path) -> Output {
    let mut cmd = Command::new(tool);
    if tool == "opusdec" {
        cmd.args(["--quiet", "--no-dither", "--rate", "16000"])
            .arg(path)
            .arg(path.with_extension("opusdec.wav"));
    } else {
        cmd.args(["-hide_banner", "-loglevel", "error", "-xerror", "-i"])
            .arg(path)
            .args(["-ac", "1", "-ar", "16000", "-f", "s16le", "-"]);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"))
}

#[test]
fn a_bos_page_continuing_a_packet_is_invalid_stream_as_for_opusdec_and_ffmpeg() {
    for tool in ["opusdec", "ffmpeg"] {
        require_tool(tool);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let first = clip(1.0, 14);
    let serial = pages(&first)[0].serial;
    let second = reserial(&clip(0.5, 15), serial ^ 1);
    let mut chain = first.clone();
    chain.extend_from_slice(&second);
    // The first page of the file, and the first page of a chain's second
    // link: every BOS page starts a logical stream, none can continue a
    // packet.
    let mut chain_bad = first.clone();
    chain_bad.extend(continued_page(&second, 0));
    let cases = [
        ("first", first.clone(), continued_page(&first, 0), serial, 0),
        ("chained", chain, chain_bad, serial ^ 1, first.len()),
    ];
    for (name, good, bad, serial, at) in cases {
        let good_path = dir.path().join(format!("{name}-good.opus"));
        let bad_path = dir.path().join(format!("{name}-continued-bos.opus"));
        std::fs::write(&good_path, &good).expect("write");
        std::fs::write(&bad_path, &bad).expect("write");
        assert_eq!(code(strict(&good)), "ok", "{name}");
        for err in [strict(&bad), lenient(&bad)] {
            let err = err.expect_err(name);
            assert_eq!(err.code(), "invalid_stream", "{name}: {err}");
            let msg = err.to_string();
            assert!(
                msg.contains(&format!(
                    "the first page of stream {serial} (BOS, at byte {at}) is marked as \
                     continuing a packet"
                )),
                "{name}: {msg}"
            );
        }
        // The reference decoders refuse it too (the same commands decode the
        // file without the flag). Without `-xerror`, ffmpeg refuses the first
        // case as well, but on the chained one only logs "Error parsing the
        // packet header" and exits with status 0.
        for tool in ["opusdec", "ffmpeg"] {
            let ok = reference_decode(tool, &good_path);
            assert!(
                ok.status.success(),
                "{tool} on {name} without the flag: {}",
                String::from_utf8_lossy(&ok.stderr)
            );
            let refused = reference_decode(tool, &bad_path);
            assert!(
                !refused.status.success(),
                "{tool} decodes {name} with a continued BOS page: {}",
                String::from_utf8_lossy(&refused.stderr)
            );
        }
    }
}

#[test]
fn a_skipped_stream_continuing_on_its_bos_page_is_ignored_as_opusdec_does() {
    // Pages of streams that are not decoded are not checked (libopusfile
    // ignores them too): opusdec decodes this file exactly like the plain one.
    require_tool("opusdec");
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = clip(1.0, 16);
    let plain = strict(&bytes).expect("plain");
    let opus = pages(&bytes);
    let vorbis = pages(&vorbis_stream(4242, &[], &[(vec![1; 300], 100)]));
    let mut mixed = vec![
        opus[0].clone(),
        Page {
            flags: vorbis[0].flags | 0x01,
            ..vorbis[0].clone()
        },
    ];
    mixed.extend(opus[1..].iter().cloned());
    let mixed = write_pages(&mixed);
    assert_eq!(strict(&mixed).expect("skipped stream"), plain);
    let plain_path = dir.path().join("plain.opus");
    let mixed_path = dir.path().join("mixed.opus");
    std::fs::write(&plain_path, &bytes).expect("write");
    std::fs::write(&mixed_path, &mixed).expect("write");
    for path in [&plain_path, &mixed_path] {
        let out = reference_decode("opusdec", path);
        assert!(
            out.status.success(),
            "opusdec on {path:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let read = |p: &Path| std::fs::read(p.with_extension("opusdec.wav")).expect("opusdec output");
    assert_eq!(read(&mixed_path), read(&plain_path));
}
