//! What the conversion targets (`convert`, `media`) check of one input.

use std::time::Duration;

use opusgate::codec::{convert, CodecError, ConvertOptions, SUPPORTED_RATES};

/// Converts `data` with options picked from its length (so every rate,
/// channel count and leniency gets inputs) under a limit of `max_seconds`.
/// It must never panic or report an internal error, and a WAV it returns
/// must be exactly as long as it says, at the rate and channels asked, with
/// at most `max_seconds` x rate + `slack` frames.
pub fn convert_checked(data: &[u8], max_seconds: u64, slack: u64) {
    let pick = data.len();
    let opts = ConvertOptions {
        rate: SUPPORTED_RATES[pick % SUPPORTED_RATES.len()],
        channels: 1 + (pick / 5 % 2) as u8,
        lenient: pick / 10 % 2 == 1,
        max_duration: Duration::from_secs(max_seconds),
        deadline: None,
    };
    match convert(data, &opts) {
        Ok(out) => {
            let bytes_per_frame = 2 * u64::from(opts.channels);
            assert_eq!(out.wav.len() as u64, 44 + out.frames * bytes_per_frame);
            assert!(out.frames <= max_seconds * u64::from(opts.rate) + slack);
            assert_eq!((out.rate, out.channels), (opts.rate, opts.channels));
        }
        Err(CodecError::Internal(why)) => panic!("internal error on client input: {why}"),
        Err(_) => {}
    }
}
