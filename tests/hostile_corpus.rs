//! The hostile-input corpus against the real binary: every broken, foreign or
//! malicious upload (generated here, never committed as binaries) answers its
//! expected 4xx status and error code within a second, none answers 500, the
//! server's RSS after the whole corpus is within 20 MB of before, and a
//! normal request still gets the exact WAV afterwards.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::clips::clip;
use support::hostile::{
    bad_crc, continued_page, crowded, one_packet_link, vorbis_stream, Parts, ODD_CBR_PACKET, PNG,
    WEBM, ZERO_FRAMES_PACKET,
};
use support::http::Api as _;
use support::ogg::{
    fix_crc, mux, opus_head, opus_tags, opus_tags_raw, page_offset, pages, write_pages, End, Page,
};
use support::process::{store_dir, ServerProcess};
use support::rng::noise;

/// Upload limit of the server under test (and so of the two limit cases).
const LIMIT: usize = 2 * 1024 * 1024;
/// Audio limit of the server under test, in seconds.
const MAX_SECONDS: u64 = 60;

/// One request of the corpus and the answer it must get.
struct Case {
    name: String,
    query: &'static str,
    content_type: Option<String>,
    body: Body,
    status: u16,
    code: &'static str,
}

enum Body {
    Bytes(Vec<u8>),
    /// Sent chunked, without a Content-Length.
    Chunked(Vec<u8>),
}

fn case(name: impl Into<String>, body: Vec<u8>, status: u16, code: &'static str) -> Case {
    Case {
        name: name.into(),
        query: "",
        content_type: None,
        body: Body::Bytes(body),
        status,
        code,
    }
}

const UNSUPPORTED: (u16, &str) = (415, "unsupported_format");
const INVALID: (u16, &str) = (422, "invalid_stream");
const TRUNCATED: (u16, &str) = (422, "truncated_stream");
const TOO_LONG: (u16, &str) = (413, "audio_too_long");

fn add(cases: &mut Vec<Case>, name: impl Into<String>, body: Vec<u8>, expect: (u16, &'static str)) {
    cases.push(case(name, body, expect.0, expect.1));
}

/// A multipart/form-data body with the given (field name, bytes) parts.
fn multipart(boundary: &str, parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, data) in parts {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; \
                 filename=\"clip.ogg\"\r\nContent-Type: audio/ogg\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

fn multipart_case(
    name: &str,
    content_type: &str,
    body: Vec<u8>,
    expect: (u16, &'static str),
) -> Case {
    Case {
        content_type: Some(content_type.to_owned()),
        ..case(name, body, expect.0, expect.1)
    }
}

/// The corpus, built from one good clip (`good`, 6 s) and its pieces.
fn corpus(good: &[u8]) -> Vec<Case> {
    let mut c = Vec::new();
    let parts = Parts::of(good, 0x0BAD_CAFE);
    let audio = &parts.audio;
    let with_head = |h: Vec<u8>| parts.with_head(&h);
    let with_tags = |t: Vec<u8>| parts.with_tags(&t);
    let with_audio = |a: &[(Vec<u8>, u64)]| parts.with_audio(a);
    let good_pages = pages(good);

    // No accepted format at all.
    add(&mut c, "empty body", Vec::new(), UNSUPPORTED);
    add(&mut c, "4 KB of random bytes", noise(4096, 7), UNSUPPORTED);
    let png = PNG.to_vec();
    add(&mut c, "PNG", png, UNSUPPORTED);
    let mut gz = vec![0x1F, 0x8B, 0x08, 0, 0, 0, 0, 0, 0, 3];
    gz.extend(noise(500, 12));
    add(&mut c, "gzip", gz, UNSUPPORTED);

    // The other accepted containers, broken: each is refused by its own
    // demuxer with a 422, not with a 415 (they are the formats they claim).
    let fmt = b"RIFF\x24\x10\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x80\x3e\0\0\0\x7d\0\0\x02\0";
    let mut wav = fmt.to_vec();
    wav.extend_from_slice(b"\x07\0data\0\x10\0\0");
    wav.extend(noise(4096, 8));
    add(&mut c, "RIFF/WAVE with 7-bit samples", wav, INVALID);
    let mut wav = fmt.to_vec();
    wav.extend_from_slice(b"\x10\0");
    add(&mut c, "RIFF/WAVE without a data chunk", wav, TRUNCATED);
    let mut flac = b"fLaC\x80\0\0\x22".to_vec();
    flac.extend(noise(1000, 9));
    add(&mut c, "FLAC with a noise STREAMINFO", flac, INVALID);
    let mut mp3 = b"ID3\x04\0\0\0\0\0\x0a".to_vec();
    mp3.extend(noise(1000, 10));
    add(&mut c, "MP3: an ID3 tag, then noise", mp3, TRUNCATED);
    let mut mp3 = vec![0xFF, 0xFB, 0x90, 0x64];
    mp3.extend(noise(1000, 11));
    add(&mut c, "MP3: one frame header, then noise", mp3, TRUNCATED);
    let mut webm = WEBM.to_vec();
    webm.extend(noise(500, 13));
    add(&mut c, "WebM: an EBML header, then noise", webm, INVALID);
    add(
        &mut c,
        "\"Ogg\" without the S",
        b"Ogg".to_vec(),
        UNSUPPORTED,
    );

    // Ogg without Opus: Vorbis with broken headers goes to the Vorbis
    // decoder; a Skeleton alone holds no audio at all.
    let vorbis_audio = [(noise(200, 14), 1024), (noise(200, 15), 2048)];
    add(
        &mut c,
        "Ogg Vorbis with broken headers",
        vorbis_stream(3, &[0, 0, 0, 0, 1, 0x44, 0xAC, 0, 0], &vorbis_audio),
        TRUNCATED,
    );
    add(
        &mut c,
        "Ogg with only a Skeleton stream",
        mux(4, b"fishead\0\0\x03", b"fisbone\0", &[], 1, End::Eos),
        UNSUPPORTED,
    );
    add(
        &mut c,
        "a lone capture pattern",
        b"OggS".to_vec(),
        TRUNCATED,
    );

    // OpusHead.
    add(
        &mut c,
        "OpusHead version 255",
        with_head(opus_head(255, 1, 312, 0, 0, &[])),
        INVALID,
    );
    add(
        &mut c,
        "OpusHead version 16",
        with_head(opus_head(16, 1, 312, 0, 0, &[])),
        INVALID,
    );
    add(
        &mut c,
        "OpusHead with 0 channels",
        with_head(opus_head(1, 0, 312, 0, 0, &[])),
        INVALID,
    );
    add(
        &mut c,
        "OpusHead with 255 channels, family 0",
        with_head(opus_head(1, 255, 312, 0, 0, &[])),
        INVALID,
    );
    let mut table = vec![255, 0];
    table.extend((0..255).map(|i| (i % 255) as u8));
    add(
        &mut c,
        "OpusHead with 255 channels, family 1",
        with_head(opus_head(1, 255, 312, 0, 1, &table)),
        INVALID,
    );
    add(
        &mut c,
        "OpusHead with 255 channels, family 255",
        with_head(opus_head(1, 255, 312, 0, 255, &table)),
        (422, "unsupported_channel_mapping"),
    );
    add(
        &mut c,
        "family 1 with 0 streams",
        with_head(opus_head(1, 2, 312, 0, 1, &[0, 0, 0, 1])),
        INVALID,
    );
    add(
        &mut c,
        "family 1 with more coupled streams than streams",
        with_head(opus_head(1, 2, 312, 0, 1, &[1, 2, 0, 1])),
        INVALID,
    );
    add(
        &mut c,
        "family 1 mapping a channel past the decoded ones",
        with_head(opus_head(1, 2, 312, 0, 1, &[1, 0, 0, 5])),
        INVALID,
    );
    add(
        &mut c,
        "family 1 declaring 2 streams over single-stream packets",
        with_head(opus_head(1, 2, 312, 0, 1, &[2, 0, 0, 1])),
        INVALID,
    );
    add(
        &mut c,
        "OpusHead cut to 10 bytes",
        with_head(b"OpusHead\x01\x01".to_vec()),
        INVALID,
    );
    add(
        &mut c,
        "pre-skip larger than the stream",
        parts.build(
            &opus_head(1, 1, 65_535, 0, 0, &[]),
            &opus_tags(),
            &audio[..20],
            End::Eos,
        ),
        INVALID,
    );
    add(
        &mut c,
        "the stream ends on its OpusHead page",
        write_pages(&[Page {
            flags: 0x02 | 0x04,
            ..good_pages[0].clone()
        }]),
        INVALID,
    );

    // OpusTags.
    add(
        &mut c,
        "OpusTags missing: audio as the second packet",
        {
            let mut p = good_pages.clone();
            p.remove(1);
            for (i, page) in p.iter_mut().enumerate() {
                page.sequence = i as u32;
            }
            write_pages(&p)
        },
        INVALID,
    );
    add(
        &mut c,
        "OpusTags comment count pointing past the end",
        with_tags(opus_tags_raw(4, b"test", 1_000_000, b"")),
        INVALID,
    );
    add(
        &mut c,
        "OpusTags vendor length pointing past the end",
        with_tags(opus_tags_raw(u32::MAX, b"test", 0, b"")),
        INVALID,
    );
    let mut comment = 1_000_000u32.to_le_bytes().to_vec();
    comment.extend_from_slice(b"TITLE=x");
    add(
        &mut c,
        "OpusTags comment length pointing past the end",
        with_tags(opus_tags_raw(4, b"test", 1, &comment)),
        INVALID,
    );

    // Page framing.
    add(
        &mut c,
        "a page with a bad CRC",
        bad_crc(good, good_pages.len() / 2, 0, 0x10),
        INVALID,
    );
    {
        let mut bytes = good.to_vec();
        let k = good_pages.len() / 2;
        let off = page_offset(&good_pages, k);
        bytes[off + 4] = 1;
        fix_crc(&mut bytes, off);
        add(&mut c, "a page with structure version 1", bytes, INVALID);
    }
    {
        // A lacing value made larger: the page swallows the start of the
        // next one (its CRC made right), leaving no page where one must be.
        let mut bytes = good.to_vec();
        let k = good_pages.len() / 2;
        let off = page_offset(&good_pages, k);
        let lace = &mut bytes[off + 27];
        assert!(*lace < 200, "a short audio packet to grow");
        *lace += 40;
        fix_crc(&mut bytes, off);
        add(
            &mut c,
            "bad lacing: a page swallowing the next",
            bytes,
            INVALID,
        );
    }
    {
        // The EOS page's last lacing value says the packet goes on.
        let mut p = good_pages.clone();
        let last = p.len() - 1;
        p[last].lacing = vec![255];
        p[last].body = noise(255, 16);
        add(
            &mut c,
            "bad lacing: a packet left open on the EOS page",
            write_pages(&p),
            TRUNCATED,
        );
    }
    {
        let mut p = good_pages.clone();
        p[10].flags |= 0x01;
        add(
            &mut c,
            "a page continuing a packet nobody opened",
            write_pages(&p),
            INVALID,
        );
    }
    {
        let mut p = good_pages.clone();
        for page in &mut p[20..] {
            page.sequence += 1;
        }
        add(
            &mut c,
            "a gap in the page sequence",
            write_pages(&p),
            INVALID,
        );
    }
    {
        // Headers, then a page whose lacing table claims 255 x 255 bytes of
        // segments, in a file of about 1 kB.
        let mut bytes = write_pages(&good_pages[..2]);
        let claim = write_pages(&[Page {
            flags: 0,
            granule: 960,
            serial: good_pages[0].serial,
            sequence: 2,
            lacing: vec![255; 255],
            body: Vec::new(),
        }]);
        bytes.extend_from_slice(&claim);
        bytes.extend(noise(1024usize.saturating_sub(bytes.len()), 17));
        assert!(bytes.len() <= 1024);
        add(
            &mut c,
            "a page claiming 64 kB of segments in a 1 kB file",
            bytes,
            TRUNCATED,
        );
    }
    {
        let mut bytes = good.to_vec();
        let k = good_pages.len() / 2;
        let off = page_offset(&good_pages, k);
        bytes.splice(off..off, noise(100, 18));
        add(&mut c, "garbage spliced between two pages", bytes, INVALID);
    }

    // Granule positions. Those that merely disagree with the packets
    // (backwards, a first one below its page's samples, jumps of days) are
    // decoded as ffmpeg decodes them (tests/ogg_repair.rs); past 2^62, which
    // is negative as a signed number, ffmpeg refuses them, and so do we.
    {
        let mut a = audio.clone();
        a[40].1 = 0u64.wrapping_sub(960);
        add(
            &mut c,
            "a granule position going negative (-960)",
            with_audio(&a),
            INVALID,
        );
    }
    {
        let mut a = audio.clone();
        a[40].1 = u64::MAX;
        add(
            &mut c,
            "granule -1 on a non-final audio page",
            with_audio(&a),
            INVALID,
        );
    }
    {
        let mut a = audio.clone();
        a[0].1 = 0u64.wrapping_sub(5);
        add(
            &mut c,
            "a negative first granule (-5)",
            with_audio(&a),
            INVALID,
        );
    }
    {
        let mut a = audio.clone();
        for (_, gp) in &mut a[30..] {
            *gp += 1 << 63;
        }
        add(
            &mut c,
            "granules jumping past 2^62",
            with_audio(&a),
            INVALID,
        );
    }
    {
        let mut a = audio.clone();
        let last = a.len() - 1;
        a[last].1 = 0u64.wrapping_sub(2);
        add(
            &mut c,
            "a negative final granule (-2)",
            with_audio(&a),
            INVALID,
        );
    }

    // Packets.
    {
        let mut a = audio.clone();
        a[30].0 = ZERO_FRAMES_PACKET.to_vec();
        add(
            &mut c,
            "invalid TOC: code 3 with 0 frames",
            with_audio(&a),
            INVALID,
        );
        a[30].0 = vec![(16 << 3) | 3, 49];
        add(
            &mut c,
            "invalid TOC: 49 frames of 2.5 ms (over 120 ms)",
            with_audio(&a),
            INVALID,
        );
        a[30].0 = ODD_CBR_PACKET.to_vec();
        add(
            &mut c,
            "invalid packet: two CBR frames of odd total length",
            with_audio(&a),
            INVALID,
        );
        let mut big = vec![31 << 3];
        big.extend(noise(1400, 19));
        a[30].0 = big;
        add(
            &mut c,
            "a frame over the 1275-byte limit",
            with_audio(&a),
            INVALID,
        );
    }
    {
        let empty: Vec<(Vec<u8>, u64)> = audio.iter().map(|(_, gp)| (Vec::new(), *gp)).collect();
        add(
            &mut c,
            "only zero-length audio packets",
            with_audio(&empty),
            INVALID,
        );
    }
    {
        let mut p = good_pages[..2].to_vec();
        add(
            &mut c,
            "only header pages, no EOS",
            write_pages(&p),
            TRUNCATED,
        );
        p[1].flags |= 0x04;
        add(
            &mut c,
            "only header pages, EOS on the OpusTags page",
            write_pages(&p),
            INVALID,
        );
    }
    {
        // 10 000 pages of 1-byte packets (20 ms each, 200 s): refused for
        // the 60 s limit long before the end.
        let tiny: Vec<(Vec<u8>, u64)> = (0..10_000u64)
            .map(|i| (vec![9 << 3], 312 + (i + 1) * 960))
            .collect();
        add(
            &mut c,
            "10 000 tiny audio pages (200 s)",
            with_audio(&tiny),
            TOO_LONG,
        );
        // 10 000 pages holding one empty packet each: no audio at all.
        let empty: Vec<(Vec<u8>, u64)> = (0..10_000u64).map(|_| (Vec::new(), 0)).collect();
        add(
            &mut c,
            "10 000 tiny pages of empty packets",
            with_audio(&empty),
            INVALID,
        );
    }

    // Streams and chains.
    {
        let chain = one_packet_link(&[16 << 3], 120).repeat(10_001);
        assert!(chain.len() < LIMIT);
        add(&mut c, "10 001 chained links", chain, INVALID);
        add(
            &mut c,
            "70 streams multiplexed in one link",
            crowded(70, &good_pages),
            INVALID,
        );
        let mut twins = vec![good_pages[0].clone(), good_pages[0].clone()];
        twins.extend(good_pages[1..].iter().cloned());
        add(
            &mut c,
            "two BOS pages with one serial",
            write_pages(&twins),
            INVALID,
        );
        let mut chained = Parts::of(good, 6).without_eos();
        chained.extend_from_slice(good);
        add(
            &mut c,
            "a chain whose first link has no EOS",
            chained,
            TRUNCATED,
        );
        // One packet continued over 600 pages of 255 x 255 bytes.
        let mut p = good_pages[..2].to_vec();
        for i in 0..3u32 {
            p.push(Page {
                flags: if i == 0 { 0 } else { 0x01 },
                granule: u64::MAX,
                serial: good_pages[0].serial,
                sequence: 2 + i,
                lacing: vec![255; 255],
                body: vec![0x55; 255 * 255],
            });
        }
        add(
            &mut c,
            "one packet continued past 128 KB",
            write_pages(&p),
            INVALID,
        );
    }

    // The same clip cut at every 1000th byte.
    for cut in (1000..good.len()).step_by(1000) {
        add(
            &mut c,
            format!("cut at byte {cut}"),
            good[..cut].to_vec(),
            TRUNCATED,
        );
    }

    // The upload limit.
    add(
        &mut c,
        "a body exactly at the upload limit",
        vec![0; LIMIT],
        UNSUPPORTED,
    );
    add(
        &mut c,
        "a body one byte over the upload limit",
        vec![0; LIMIT + 1],
        (413, "payload_too_large"),
    );
    c.push(Case {
        body: Body::Chunked(vec![0; LIMIT + 1]),
        ..case(
            "one byte over the limit, chunked",
            Vec::new(),
            413,
            "payload_too_large",
        )
    });

    // Multipart.
    let ct = |b: &str| format!("multipart/form-data; boundary={b}");
    c.push(multipart_case(
        "multipart without an audio_file field",
        &ct("XyZ"),
        multipart("XyZ", &[("file", good)]),
        (400, "bad_request"),
    ));
    c.push(multipart_case(
        "multipart with two audio_file fields",
        &ct("XyZ"),
        multipart("XyZ", &[("audio_file", good), ("audio_file", good)]),
        (400, "bad_request"),
    ));
    c.push(multipart_case(
        "multipart with a wrong boundary",
        &ct("NotTheOne"),
        multipart("XyZ", &[("audio_file", good)]),
        (400, "bad_request"),
    ));
    c.push(multipart_case(
        "multipart without a boundary",
        "multipart/form-data",
        multipart("XyZ", &[("audio_file", good)]),
        (400, "bad_request"),
    ));
    c.push(multipart_case(
        "multipart with a PNG in audio_file",
        &ct("XyZ"),
        multipart("XyZ", &[("audio_file", b"\x89PNG\r\n\x1a\n")]),
        UNSUPPORTED,
    ));
    c.push(Case {
        query: "?rate=44100",
        ..case(
            "a rate libopus does not decode to",
            good.to_vec(),
            400,
            "bad_parameter",
        )
    });

    // Appended last, so the numbers of the cases above stay as listed.
    // A short stream (20 audio pages, a fuzzer seed) whose first page, the
    // BOS page, is marked as continuing a packet.
    add(
        &mut c,
        "a BOS page continuing a packet",
        continued_page(
            &parts.build(&parts.head, &opus_tags(), &audio[..20], End::Eos),
            0,
        ),
        INVALID,
    );
    c
}

#[tokio::test]
async fn every_hostile_upload_gets_its_4xx_quickly_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(
        &store_dir(dir.path()),
        &[
            ("OPUSGATE_LIMITS__MAX_UPLOAD_BYTES", LIMIT.to_string()),
            (
                "OPUSGATE_LIMITS__MAX_DURATION_SECONDS",
                MAX_SECONDS.to_string(),
            ),
            ("OPUSGATE_CONVERSION__WORKERS", "2".into()),
        ],
    );
    let client = reqwest::Client::new();
    let good = clip(6.0, 11);
    let cases = corpus(&good);
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    // HOSTILE_CORPUS_DUMP=DIR writes the bodies out (to seed the fuzzers).
    if let Ok(d) = std::env::var("HOSTILE_CORPUS_DUMP") {
        let mut list = String::new();
        for (i, c) in cases.iter().enumerate() {
            if let Body::Bytes(b) = &c.body {
                std::fs::write(format!("{d}/{i:03}.opus"), b).expect("dump a case");
            }
            list.push_str(&format!("{i:03}\t{} {}\t{}\n", c.status, c.code, c.name));
        }
        std::fs::write(format!("{d}/cases.tsv"), list).expect("dump the list");
    }

    // A valid OpusHead version below 16 is accepted (RFC 7845 5.1: versions
    // 0 to 15 share the format), so version 2 is a 200, not a hostile case.
    let v2 = Parts::of(&good, 1).with_head(&opus_head(2, 1, 312, 0, 0, &[]));
    let r = server.post_convert(&client, "", v2).await;
    assert_eq!(r.status(), 200, "OpusHead version 2 must be accepted");

    // Warm up (buffers, worker threads), then measure.
    for body in [good.clone(), noise(2000, 1), vec![0; LIMIT + 1]] {
        let _ = client
            .post(server.url("/api/v1/convert"))
            .body(body)
            .send()
            .await;
    }
    let rss_before = server.rss_kb();

    let mut failures = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    for case in &cases {
        let mut request = client.post(server.url(&format!("/api/v1/convert{}", case.query)));
        if let Some(ct) = &case.content_type {
            request = request.header("content-type", ct);
        }
        let started = Instant::now();
        let (status, body) = match &case.body {
            Body::Bytes(b) => match request.body(b.clone()).send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    // Refused before the body was read: the server closes
                    // the connection and must say so.
                    let closes = r.headers().get("connection").is_some_and(|v| v == "close");
                    if (status == 413 && case.code == "payload_too_large") != closes {
                        failures.push(format!("{}: Connection: close is {closes}", case.name));
                    }
                    (status, r.bytes().await.unwrap_or_default().to_vec())
                }
                Err(e) => {
                    failures.push(format!("{}: no answer: {e}", case.name));
                    continue;
                }
            },
            Body::Chunked(b) => chunked_post(&server.addr(), b).await,
        };
        let took = started.elapsed();
        if took > slowest.0 {
            slowest = (took, case.name.clone());
        }
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let code = v["code"].as_str().unwrap_or("(no JSON code)");
        if status != case.status || code != case.code {
            failures.push(format!(
                "{}: expected {} {}, got {status} {code}: {}",
                case.name,
                case.status,
                case.code,
                v["message"].as_str().unwrap_or("")
            ));
        } else if v["message"].as_str().is_none_or(str::is_empty) {
            failures.push(format!("{}: no message", case.name));
        }
        if took > Duration::from_secs(1) {
            failures.push(format!("{}: answered after {took:?}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} hostile cases, slowest {:?} ({})",
        cases.len(),
        slowest.0,
        slowest.1
    );

    // Nothing is left running, and memory did not grow.
    let stats = server.stats(&client).await;
    assert_eq!(stats["conversions"]["active"], 0, "{stats}");
    assert_eq!(stats["conversions"]["queued"], 0, "{stats}");
    assert_eq!(stats["cache"]["in_flight"], 0, "{stats}");
    let rss_after = server.rss_kb();
    eprintln!("RSS before the corpus {rss_before} KiB, after {rss_after} KiB");
    assert!(
        rss_after <= rss_before + 20 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB over the corpus"
    );
    assert_eq!(server.log_count("panicked"), 0, "{}", server.log_text());

    // A normal request still gets the exact WAV.
    server.still_serves(&client, 12).await;
    server.kill9();
}

/// POSTs `body` to `/api/v1/convert` with chunked transfer encoding (no
/// Content-Length) over a raw connection; returns the status and body.
async fn chunked_post(addr: &str, body: &[u8]) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = addr.to_owned();
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let (mut read, mut write) = stream.into_split();
    let mut request = format!(
        "POST /api/v1/convert HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(64 * 1024) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before it has read everything.
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&request).await;
        write
    });
    let mut answer = Vec::new();
    let _ = read.read_to_end(&mut answer).await;
    drop(writer.await);
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.as_bytes().to_vec())
        .unwrap_or_default();
    (status, body)
}
