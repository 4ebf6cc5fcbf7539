//! Fuzzes the whole conversion of arbitrary bytes: `codec::convert`, i.e.
//! demux, libopus decoding (single and multistream), downmix and WAV
//! writing. The options come from the input's length, so every rate,
//! channel count and leniency gets inputs. It must never panic or report an
//! internal error, and a WAV it returns must be exactly as long as it says.
#![no_main]

mod check;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check::convert_checked(data, 60, 0);
});
