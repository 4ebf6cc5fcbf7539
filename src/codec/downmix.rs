//! Channel matrices from a decoded channel layout to the requested 1 or 2
//! output channels, and the float to 16-bit conversion used after them.
//!
//! Inputs are in Vorbis channel order (RFC 7845 section 5.1.1.2), which is
//! what channel mapping family 1 decodes to:
//!
//! | channels | order |
//! |---|---|
//! | 1 | mono |
//! | 2 | L, R |
//! | 3 | L, C, R |
//! | 4 | FL, FR, RL, RR |
//! | 5 | FL, C, FR, RL, RR |
//! | 6 | FL, C, FR, RL, RR, LFE (5.1) |
//! | 7 | FL, C, FR, SL, SR, RC, LFE (6.1) |
//! | 8 | FL, C, FR, SL, SR, RL, RR, LFE (7.1) |
//!
//! The stereo downmix is the ITU-R BS.775 one: front channels go to their side
//! at full level, centre and each surround (side or rear) channel at -3 dB
//! (1/sqrt 2), a rear centre at -6 dB to both sides, the LFE is dropped. The
//! matrix is then scaled so that no output can exceed full scale (the largest
//! row sum becomes 1), as ffmpeg's default rematrixing does. Mono output is the
//! mean of that stereo pair; mono input to stereo is duplicated.

use std::f32::consts::FRAC_1_SQRT_2;

/// Stereo (left, right) gains of each input channel in Vorbis order, before
/// normalisation. `None` for unsupported channel counts (0 or above 8).
fn stereo_gains(in_channels: usize) -> Option<Vec<(f32, f32)>> {
    const L: (f32, f32) = (1.0, 0.0);
    const R: (f32, f32) = (0.0, 1.0);
    const C: (f32, f32) = (FRAC_1_SQRT_2, FRAC_1_SQRT_2);
    const SL: (f32, f32) = (FRAC_1_SQRT_2, 0.0);
    const SR: (f32, f32) = (0.0, FRAC_1_SQRT_2);
    const RC: (f32, f32) = (0.5, 0.5);
    const LFE: (f32, f32) = (0.0, 0.0);
    Some(match in_channels {
        1 => vec![(1.0, 1.0)],
        2 => vec![L, R],
        3 => vec![L, C, R],
        4 => vec![L, R, SL, SR],
        5 => vec![L, C, R, SL, SR],
        6 => vec![L, C, R, SL, SR, LFE],
        7 => vec![L, C, R, SL, SR, RC, LFE],
        8 => vec![L, C, R, SL, SR, SL, SR, LFE],
        _ => return None,
    })
}

/// The `out_channels x in_channels` matrix (row-major: one row per output
/// channel) from `in_channels` in Vorbis order to `out_channels` (1 or 2).
pub fn matrix(in_channels: usize, out_channels: usize) -> Option<Vec<f32>> {
    let gains = stereo_gains(in_channels)?;
    let left: f32 = gains.iter().map(|g| g.0).sum();
    let right: f32 = gains.iter().map(|g| g.1).sum();
    let scale = if in_channels == 1 {
        1.0
    } else {
        1.0 / left.max(right).max(1.0)
    };
    match out_channels {
        2 => Some(
            gains
                .iter()
                .map(|g| g.0 * scale)
                .chain(gains.iter().map(|g| g.1 * scale))
                .collect(),
        ),
        1 => Some(gains.iter().map(|g| (g.0 + g.1) * 0.5 * scale).collect()),
        _ => None,
    }
}

/// Applies `matrix` to interleaved `input` frames of `in_channels`, writing
/// interleaved 16-bit frames of `out_channels` to `out`.
pub fn apply(
    matrix: &[f32],
    in_channels: usize,
    out_channels: usize,
    input: &[f32],
    out: &mut [i16],
) {
    for (frame, dst) in input
        .chunks_exact(in_channels)
        .zip(out.chunks_exact_mut(out_channels))
    {
        for (row, sample) in matrix.chunks_exact(in_channels).zip(dst.iter_mut()) {
            let mut acc = 0.0f32;
            for (gain, x) in row.iter().zip(frame) {
                acc += gain * x;
            }
            *sample = to_i16(acc);
        }
    }
}

/// Float sample (full scale 1.0) to 16 bits: scaled by 32768, rounded to
/// nearest (ties to even, like `lrintf`), clamped. NaN becomes 0.
pub fn to_i16(x: f32) -> i16 {
    (x * 32768.0).round_ties_even().clamp(-32768.0, 32767.0) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trivial_layouts() {
        assert_eq!(matrix(1, 1), Some(vec![1.0]));
        assert_eq!(matrix(1, 2), Some(vec![1.0, 1.0]));
        assert_eq!(matrix(2, 2), Some(vec![1.0, 0.0, 0.0, 1.0]));
        assert_eq!(matrix(2, 1), Some(vec![0.5, 0.5]));
        assert_eq!(matrix(9, 2), None);
        assert_eq!(matrix(6, 3), None);
    }

    #[test]
    fn surround_downmix_never_clips() {
        for n in 3..=8 {
            let m = matrix(n, 2).expect("supported");
            for row in m.chunks(n) {
                let sum: f32 = row.iter().sum();
                assert!(sum <= 1.0 + 1e-6, "{n} channels: row sum {sum}");
            }
        }
        // 5.1: left = (FL + C/sqrt2 + RL/sqrt2) / (1 + sqrt2), LFE dropped.
        let m = matrix(6, 2).expect("5.1");
        let k = 1.0 / (1.0 + 2.0 * FRAC_1_SQRT_2);
        assert!((m[0] - k).abs() < 1e-6 && (m[1] - k * FRAC_1_SQRT_2).abs() < 1e-6);
        assert_eq!((m[2], m[5]), (0.0, 0.0));
        let mut out = [0i16; 2];
        apply(&m, 6, 2, &[1.0, 1.0, 1.0, 1.0, 1.0, 1.0], &mut out);
        assert_eq!(out, [32767, 32767]);
    }

    #[test]
    fn conversion_rounds_and_clamps() {
        assert_eq!(to_i16(0.5), 16384);
        assert_eq!(to_i16(-1.5), -32768);
        assert_eq!(to_i16(2.0), 32767);
        assert_eq!(to_i16(f32::NAN), 0);
        assert_eq!(to_i16(1.5 / 32768.0), 2);
        assert_eq!(to_i16(2.5 / 32768.0), 2);
    }
}
