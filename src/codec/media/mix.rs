//! Channel mixing of decoded planes to the requested 1 or 2 channels with
//! the Opus path's matrices ([`crate::codec::downmix::matrix`]: ITU-R
//! BS.775 for surround, LFE dropped, normalised so nothing clips).
//!
//! Those matrices are in Vorbis channel order; symphonia hands planes in its
//! canonical order (the WAVE channel-mask bit order: FL, FR, FC, LFE, BL, BR,
//! ..., SL, SR). [`Mixer`] finds, for each Vorbis slot, the plane holding
//! that speaker; the sum runs over the slots in Vorbis order with the same
//! f32 operations as [`crate::codec::downmix::apply`], so that a file mixed
//! here gives exactly the samples the Opus path's matrix gives. Side and
//! rear pairs stand in for each other (5.1 "side" and 5.1 "back" mix alike,
//! as their gains are equal); a layout matching no Vorbis layout of its
//! channel count (or without positions) is taken in the order stored.

use std::ops::Range;

use symphonia::core::audio::{Channels, Position};

use crate::codec::downmix;
use crate::codec::error::CodecError;

/// Most input channels mixed (Vorbis order defines layouts up to 7.1).
pub(super) const MAX_CHANNELS: usize = 8;

/// A downmix from one decoded layout to the output channels.
#[derive(Debug, Clone)]
pub(super) struct Mixer {
    /// Plane index of each Vorbis slot.
    planes: Vec<usize>,
    /// `out x in` gains, row-major, in Vorbis order.
    matrix: Vec<f32>,
    out: usize,
    /// The matrix is the identity with planes in order (a copy).
    identity: bool,
}

impl Mixer {
    /// The mixer from `channels` (symphonia's layout of the decoded planes)
    /// to `out` (1 or 2) channels.
    pub(super) fn new(channels: &Channels, out: usize, name: &str) -> Result<Mixer, CodecError> {
        let n = channels.count();
        if n == 0 || n > MAX_CHANNELS {
            return Err(CodecError::UnsupportedFormat(format!(
                "the {name} file has {n} audio channels; 1 to {MAX_CHANNELS} are accepted"
            )));
        }
        let planes = match channels {
            Channels::Positioned(mask) => {
                vorbis_planes(*mask, n).unwrap_or_else(|| (0..n).collect())
            }
            _ => (0..n).collect(),
        };
        let matrix = downmix::matrix(n, out)
            .ok_or_else(|| CodecError::Internal(format!("no downmix from {n} to {out}")))?;
        let identity = n == out && planes.iter().enumerate().all(|(i, &p)| i == p);
        Ok(Mixer {
            planes,
            matrix,
            out,
            identity,
        })
    }

    /// Mixes frames `range` of `planes` onto the end of `out` (interleaved).
    pub(super) fn mix(&self, planes: &[Vec<f32>], range: Range<usize>, out: &mut Vec<f32>) {
        let frames = range.len();
        let start = out.len();
        out.resize(start + frames * self.out, 0.0);
        let dst = &mut out[start..];
        if self.identity {
            for (c, plane) in planes.iter().enumerate().take(self.out) {
                for (d, &x) in dst
                    .iter_mut()
                    .skip(c)
                    .step_by(self.out)
                    .zip(&plane[range.clone()])
                {
                    *d = x;
                }
            }
            return;
        }
        let n = self.planes.len();
        for (f, frame) in dst.chunks_exact_mut(self.out).enumerate() {
            let i = range.start + f;
            for (row, sample) in self.matrix.chunks_exact(n).zip(frame.iter_mut()) {
                let mut acc = 0.0f32;
                for (gain, &p) in row.iter().zip(&self.planes) {
                    acc += gain * planes[p][i];
                }
                *sample = acc;
            }
        }
    }
}

/// Plane index of each Vorbis slot for a positioned layout, or `None` when
/// it matches no Vorbis layout of `n` channels.
fn vorbis_planes(mask: Position, n: usize) -> Option<Vec<usize>> {
    use Position as P;
    const FL: P = P::FRONT_LEFT;
    const FR: P = P::FRONT_RIGHT;
    const FC: P = P::FRONT_CENTER;
    const LFE: P = P::LFE1;
    const RC: P = P::REAR_CENTER;
    let rears = [P::REAR_LEFT, P::REAR_RIGHT];
    let sides = [P::SIDE_LEFT, P::SIDE_RIGHT];
    // The surround pair of 4.0, 5.0 and 5.1: rear or side.
    let pair = if mask.contains(P::REAR_LEFT | P::REAR_RIGHT) {
        rears
    } else {
        sides
    };
    let slots: Vec<P> = match n {
        1 => return Some(vec![0]),
        2 => vec![FL, FR],
        3 => vec![FL, FC, FR],
        4 => vec![FL, FR, pair[0], pair[1]],
        5 => vec![FL, FC, FR, pair[0], pair[1]],
        6 => vec![FL, FC, FR, pair[0], pair[1], LFE],
        7 => vec![FL, FC, FR, sides[0], sides[1], RC, LFE],
        8 => vec![FL, FC, FR, sides[0], sides[1], rears[0], rears[1], LFE],
        _ => return None,
    };
    let wanted = slots.iter().fold(P::empty(), |acc, &p| acc | p);
    if wanted != mask {
        return None;
    }
    // Planes are in mask bit order: a position's plane is the number of
    // positions below it.
    Some(
        slots
            .iter()
            .map(|p| (mask.bits() & (p.bits() - 1)).count_ones() as usize)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wave_51_is_put_in_vorbis_order() {
        // WAVE 5.1: FL FR FC LFE BL BR -> Vorbis FL FC FR RL RR LFE.
        let mask = Position::from_count(6).expect("mask");
        assert_eq!(vorbis_planes(mask, 6), Some(vec![0, 2, 1, 4, 5, 3]));
        // 5.1 with side channels: FL FR FC LFE SL SR.
        let side = Position::FRONT_LEFT
            | Position::FRONT_RIGHT
            | Position::FRONT_CENTER
            | Position::LFE1
            | Position::SIDE_LEFT
            | Position::SIDE_RIGHT;
        assert_eq!(vorbis_planes(side, 6), Some(vec![0, 2, 1, 4, 5, 3]));
        // 3 channels FL FR LFE match no Vorbis layout.
        let odd = Position::FRONT_LEFT | Position::FRONT_RIGHT | Position::LFE1;
        assert_eq!(vorbis_planes(odd, 3), None);
    }

    #[test]
    fn mixing_matches_the_opus_paths_apply() {
        let mask = Position::from_count(6).expect("mask");
        let mixer = Mixer::new(&Channels::Positioned(mask), 1, "WAV").expect("mixer");
        // Canonical planes FL FR FC LFE BL BR with distinct values.
        let values = [0.1f32, -0.25, 0.3, 0.9, -0.05, 0.7];
        let planes: Vec<Vec<f32>> = values.iter().map(|&v| vec![v; 3]).collect();
        let mut out = Vec::new();
        mixer.mix(&planes, 1..3, &mut out);
        let vorbis = [0.1f32, 0.3, -0.25, -0.05, 0.7, 0.9];
        let m = downmix::matrix(6, 1).expect("matrix");
        let mut want = [0i16; 1];
        downmix::apply(&m, 6, 1, &vorbis, &mut want);
        assert_eq!(out.len(), 2);
        assert_eq!(downmix::to_i16(out[0]), want[0]);
        assert_eq!(out[0], out[1]);
    }

    #[test]
    fn stereo_copies_and_refuses_too_many_channels() {
        let mixer = Mixer::new(&Channels::Discrete(2), 2, "WAV").expect("mixer");
        let mut out = Vec::new();
        mixer.mix(&[vec![1.0, 2.0], vec![3.0, 4.0]], 0..2, &mut out);
        assert_eq!(out, [1.0, 3.0, 2.0, 4.0]);
        let e = Mixer::new(&Channels::Discrete(9), 1, "WAV").expect_err("9 channels");
        assert_eq!(e.code(), "unsupported_format");
    }
}
