//! Fuzzes the non-Opus formats through the whole conversion,
//! `codec::convert`: format detection, symphonia's WAV, FLAC, MP3, Ogg and
//! MP4 readers and decoders, the container limits, the MP4 edit list, the
//! channel mix and the resampler. Seed it with small files of each format
//! (`.ci/run` makes them with ffmpeg). The options come from the input's
//! length, so every rate, channel count and leniency gets inputs. It must
//! never panic or report an internal error, and a WAV it returns must be
//! exactly as long as it says and within the duration limit.
#![no_main]

mod check;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The limit is on the source's frames; resampling rounds (one frame).
    check::convert_checked(data, 10, 1);
});
