//! Fuzzes the whole conversion of arbitrary bytes: `codec::convert`, i.e.
//! demux, libopus decoding (single and multistream), downmix and WAV
//! writing. The options come from the input's length, so every rate,
//! channel count and leniency gets inputs. It must never panic or report an
//! internal error, and a WAV it returns must be exactly as long as it says.
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
        max_duration: Duration::from_secs(60),
        deadline: None,
    };
    match convert(data, &opts) {
        Ok(out) => {
            let bytes_per_frame = 2 * u64::from(opts.channels);
            assert_eq!(out.wav.len() as u64, 44 + out.frames * bytes_per_frame);
            assert!(out.frames <= 60 * u64::from(opts.rate));
            assert_eq!((out.rate, out.channels), (opts.rate, opts.channels));
        }
        Err(CodecError::Internal(why)) => panic!("internal error on client input: {why}"),
        Err(_) => {}
    }
});
