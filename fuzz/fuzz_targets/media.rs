//! Fuzzes the non-Opus formats through the whole conversion,
//! `codec::convert`: format detection, symphonia's WAV, FLAC, MP3, Ogg and
//! MP4 readers and decoders, the container limits, the MP4 edit list, the
//! channel mix and the resampler. Seed it with small files of each format
//! (`.ci/run` makes them with ffmpeg). The options come from the input's
//! length, so every rate, channel count and leniency gets inputs. It must
//! never panic or report an internal error, and a WAV it returns must be
//! exactly as long as it says and within the duration limit.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use opusgate::codec::{convert, CodecError, ConvertOptions, SUPPORTED_RATES};

fuzz_target!(|data: &[u8]| {
    let pick = data.len();
    let opts = ConvertOptions {
        rate: SUPPORTED_RATES[pick % SUPPORTED_RATES.len()],
        channels: 1 + (pick / 5 % 2) as u8,
        lenient: pick / 10 % 2 == 1,
        max_duration: Duration::from_secs(10),
        deadline: None,
    };
    match convert(data, &opts) {
        Ok(out) => {
            let bytes_per_frame = 2 * u64::from(opts.channels);
            assert_eq!(out.wav.len() as u64, 44 + out.frames * bytes_per_frame);
            // The limit is on the source's frames; resampling rounds.
            assert!(out.frames <= 10 * u64::from(opts.rate) + 1);
            assert_eq!((out.rate, out.channels), (opts.rate, opts.channels));
        }
        Err(CodecError::Internal(why)) => panic!("internal error on client input: {why}"),
        Err(_) => {}
    }
});
