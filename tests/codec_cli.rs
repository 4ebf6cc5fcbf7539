//! The `opusgate convert` and `opusgate sample` subcommands, run as the real
//! binary: outputs equal the library's, every failure is reported with its
//! file name, exit codes say what happened, stdin/stdout work.

mod support;

use std::path::Path;
use std::process::Output;

use opusgate::codec::convert;
use support::clips::{self, fresh_wav, options};
use support::process::run_cli;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn sample_then_convert_matches_the_library() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clip = dir.path().join("clip.opus");
    let o = run_cli(
        &["sample", "--seconds", "1.5", "--seed", "3", "-o", p(&clip)],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&clip).expect("clip");
    let expected = clips::clip(1.5, 3);
    assert_eq!(bytes, expected);

    let wav = dir.path().join("out.wav");
    let o = run_cli(
        &[
            "convert",
            p(&clip),
            "-o",
            p(&wav),
            "--rate",
            "24000",
            "--channels",
            "2",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let lib = convert(&bytes, &options(24000, 2)).expect("lib");
    assert_eq!(std::fs::read(&wav).expect("wav"), lib.wav);

    // Without -o or --out-dir the WAV goes next to the input.
    let o = run_cli(&["convert", p(&clip)], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let beside = std::fs::read(dir.path().join("clip.wav")).expect("clip.wav");
    assert_eq!(beside, fresh_wav(&bytes));
}

#[test]
fn many_files_report_each_failure_by_name_and_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("out dir");
    let mut inputs = Vec::new();
    for seed in 0..4 {
        let f = dir.path().join(format!("good{seed}.opus"));
        std::fs::write(&f, clips::clip(0.5, seed)).expect("write");
        inputs.push(f);
    }
    let broken = dir.path().join("broken.opus");
    std::fs::write(&broken, b"this is not an Ogg file").expect("write");
    let cut = dir.path().join("cut.opus");
    let whole = std::fs::read(&inputs[0]).expect("read");
    std::fs::write(&cut, &whole[..whole.len() - 7]).expect("write");
    let missing = dir.path().join("missing.opus");
    let mut args = vec!["convert", "--out-dir", p(&out), "-j", "2"];
    args.extend(inputs.iter().map(|f| p(f)));
    args.extend([p(&broken), p(&cut), p(&missing)]);
    let o = run_cli(&args, None);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("broken.opus") && err.contains("unsupported_format"),
        "{err}"
    );
    assert!(
        err.contains("cut.opus") && err.contains("truncated_stream"),
        "{err}"
    );
    assert!(
        err.contains("missing.opus") && err.contains("cannot read"),
        "{err}"
    );
    assert!(err.contains("converted 4 of 7 files"), "{err}");
    let mut written: Vec<String> = std::fs::read_dir(&out)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(
        written,
        ["good0.wav", "good1.wav", "good2.wav", "good3.wav"],
        "failed conversions must leave nothing"
    );

    // --lenient decodes the cut file.
    let o = run_cli(
        &["convert", "--lenient", "--out-dir", p(&out), p(&cut)],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.join("cut.wav").exists());
}

#[test]
fn stdin_to_stdout() {
    let bytes = clips::clip(0.7, 9);
    let o = run_cli(&["convert", "-", "--rate", "8000"], Some(&bytes));
    assert!(o.status.success(), "{}", stderr(&o));
    let lib = convert(&bytes, &options(8000, 1)).expect("lib");
    assert_eq!(o.stdout, lib.wav);

    let o = run_cli(
        &["sample", "--seconds", "0.7", "--seed", "9", "-o", "-"],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, bytes);
    let other = run_cli(
        &["sample", "--seconds", "0.7", "--seed", "10", "-o", "-"],
        None,
    );
    assert_ne!(other.stdout, bytes, "different seeds gave the same clip");
}

#[test]
fn unusable_arguments_exit_2_with_the_allowed_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("a.opus");
    std::fs::write(&f, clips::clip(0.3, 1)).expect("w");
    let o = run_cli(&["convert", p(&f), "--rate", "44100"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("8000, 12000, 16000, 24000, 48000"),
        "{}",
        stderr(&o)
    );
    let o = run_cli(&["convert", p(&f), p(&f), "-o", "x.wav"], None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = run_cli(&["convert", p(&f), "--channels", "6"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("1 or 2"), "{}", stderr(&o));
    let o = run_cli(&["sample", "--rate", "22050", "-o", "-"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("[8000, 12000, 16000, 24000, 48000]"),
        "{}",
        stderr(&o)
    );
    let wav = dir.path().join("a.wav");
    std::fs::write(&wav, b"RIFF").expect("w");
    let o = run_cli(&["convert", p(&wav)], None);
    assert_eq!(
        o.status.code(),
        Some(2),
        "converting a.wav next to itself must be refused: {}",
        stderr(&o)
    );
}

#[test]
fn out_dir_is_created_with_its_parents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.opus");
    let b = dir.path().join("b.opus");
    std::fs::write(&a, clips::clip(0.4, 1)).expect("write");
    std::fs::write(&b, clips::clip(0.4, 2)).expect("write");
    let out = dir.path().join("wav").join("nested");
    assert!(!dir.path().join("wav").exists());
    let o = run_cli(&["convert", p(&a), p(&b), "--out-dir", p(&out)], None);
    assert!(o.status.success(), "{}", stderr(&o));
    for (input, name) in [(&a, "a.wav"), (&b, "b.wav")] {
        let wav = std::fs::read(out.join(name)).expect(name);
        assert_eq!(wav, fresh_wav(&std::fs::read(input).expect("read")));
    }

    // A DIR that cannot be a directory is refused before converting anything.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let o = run_cli(&["convert", p(&a), "--out-dir", p(&file)], None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot create"), "{}", stderr(&o));
}
