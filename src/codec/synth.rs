//! A deterministic speech-like test signal: syllables of harmonic "vowels"
//! (a gliding pitch through three formant resonators) with noisy
//! "consonant" onsets, grouped into utterances separated by digital silence
//! (so DTX engages there). Everything is drawn from a seeded generator:
//! the same seed gives the same clip, different seeds give different voices,
//! vowels and timing.

use std::f64::consts::PI;

/// SplitMix64: tiny, seedable, good enough for test signals.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[lo, hi)`.
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
    }
    fn chance(&mut self, p: f64) -> bool {
        self.range(0.0, 1.0) < p
    }
}

/// Formant frequencies (Hz) of a few vowels.
const VOWELS: [[f64; 3]; 6] = [
    [730.0, 1090.0, 2440.0], // a
    [530.0, 1840.0, 2480.0], // e
    [270.0, 2290.0, 3010.0], // i
    [570.0, 840.0, 2410.0],  // o
    [300.0, 870.0, 2240.0],  // u
    [660.0, 1720.0, 2410.0], // ae
];

/// Two-pole resonator (one formant).
struct Resonator {
    a1: f64,
    a2: f64,
    y1: f64,
    y2: f64,
}

impl Resonator {
    fn new(freq: f64, bandwidth: f64, rate: f64) -> Resonator {
        let r = (-PI * bandwidth / rate).exp();
        let theta = 2.0 * PI * freq / rate;
        Resonator {
            a1: 2.0 * r * theta.cos(),
            a2: -r * r,
            y1: 0.0,
            y2: 0.0,
        }
    }
    fn run(&mut self, x: f64) -> f64 {
        let y = x + self.a1 * self.y1 + self.a2 * self.y2;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }
}

/// Raised-cosine fade in over `attack` samples and out over `release`.
fn envelope(i: usize, len: usize, attack: usize, release: usize) -> f64 {
    let rise = if i < attack {
        0.5 - 0.5 * (PI * i as f64 / attack as f64).cos()
    } else {
        1.0
    };
    let left = len - i;
    let fall = if left < release {
        0.5 - 0.5 * (PI * left as f64 / release as f64).cos()
    } else {
        1.0
    };
    rise * fall
}

/// Writes one voiced syllable into `out` (peak about `level`), its harmonic
/// excitation mixed with some breath noise.
fn vowel(
    out: &mut [f32],
    rng: &mut Rng,
    rate: f64,
    f0: (f64, f64),
    formants: [f64; 3],
    level: f64,
) {
    let len = out.len();
    if len == 0 {
        return;
    }
    let mut res: Vec<Resonator> = formants
        .iter()
        .zip([90.0, 110.0, 160.0])
        .filter(|(f, _)| **f < 0.45 * rate)
        .map(|(&f, bw)| Resonator::new(f, bw, rate))
        .collect();
    let top = (0.45 * rate).min(3800.0);
    let mut phase = 0.0f64;
    let mut peak = 1e-9f64;
    for (i, o) in out.iter_mut().enumerate() {
        let t = i as f64 / len as f64;
        let f = f0.0 + (f0.1 - f0.0) * t;
        phase = (phase + 2.0 * PI * f / rate) % (2.0 * PI);
        // Harmonics k*f0 below `top` with 1/k amplitudes, by the Chebyshev
        // recurrence sin(k x) = 2 cos(x) sin((k-1) x) - sin((k-2) x).
        let harmonics = (top / f).floor().max(1.0) as usize;
        let (s1, c) = (phase.sin(), phase.cos());
        let (mut prev, mut cur, mut acc) = (0.0f64, s1, s1);
        for k in 2..=harmonics {
            let next = 2.0 * c * cur - prev;
            (prev, cur) = (cur, next);
            acc += cur / k as f64;
        }
        // Breath noise in the excitation, as in real voices.
        let mut y = acc + 0.35 * rng.range(-1.0, 1.0);
        for r in res.iter_mut() {
            y = r.run(y) * 0.05;
        }
        *o = y as f32;
        peak = peak.max(y.abs());
    }
    let (attack, release) = ((0.015 * rate) as usize + 1, (0.03 * rate) as usize + 1);
    for (i, o) in out.iter_mut().enumerate() {
        *o = (f64::from(*o) * level / peak * envelope(i, len, attack, release)) as f32;
    }
}

/// Writes a noise burst (a fricative) into `out`.
fn fricative(out: &mut [f32], rng: &mut Rng, level: f64) {
    let len = out.len();
    let mut last = 0.0;
    let edge = len / 4 + 1;
    for (i, o) in out.iter_mut().enumerate() {
        let white = rng.range(-1.0, 1.0);
        *o = ((white - 0.9 * last) * level * envelope(i, len, edge, edge)) as f32;
        last = white;
    }
}

/// `frames` frames of speech-like audio at `rate` Hz, interleaved for
/// `channels` (1 or 2; the right channel is a delayed, quieter copy).
pub(crate) fn speech_like(frames: usize, rate: u32, channels: u8, seed: u64) -> Vec<i16> {
    let rate_f = f64::from(rate);
    let secs = |s: f64| (s * rate_f) as usize;
    let mut rng = Rng::new(seed ^ 0x0905_6A7E_5EED_0001);
    let f0_base = rng.range(95.0, 230.0);
    let mut x = vec![0.0f32; frames];
    let mut pos = secs(rng.range(0.1, 0.3));
    while pos < frames {
        let syllables = 2 + (rng.next_u64() % 5) as usize;
        for _ in 0..syllables {
            if pos >= frames {
                break;
            }
            let level = rng.range(0.2, 0.45);
            if rng.chance(0.4) {
                let len = secs(rng.range(0.04, 0.09)).min(frames - pos);
                fricative(&mut x[pos..pos + len], &mut rng, level * 0.25);
                pos += len;
            }
            let len = secs(rng.range(0.09, 0.26)).min(frames - pos);
            let v = VOWELS[(rng.next_u64() % VOWELS.len() as u64) as usize];
            let formants = v.map(|f| f * rng.range(0.92, 1.08));
            let f0 = (
                f0_base * rng.range(0.9, 1.15),
                f0_base * rng.range(0.85, 1.05),
            );
            vowel(
                &mut x[pos..pos + len],
                &mut rng,
                rate_f,
                f0,
                formants,
                level,
            );
            pos += len + secs(rng.range(0.02, 0.06));
        }
        pos += secs(rng.range(0.25, 0.7));
    }
    let to_i16 = |v: f64| (v * 32767.0).round().clamp(-32768.0, 32767.0) as i16;
    if channels < 2 {
        return x.into_iter().map(|v| to_i16(f64::from(v))).collect();
    }
    let delay = 1 + (rng.next_u64() % 24) as usize;
    let gain = rng.range(0.6, 0.9);
    let mut out = Vec::with_capacity(frames * 2);
    for i in 0..frames {
        out.push(to_i16(f64::from(x[i])));
        out.push(to_i16(if i >= delay {
            f64::from(x[i - delay]) * gain
        } else {
            0.0
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_seed_dependent() {
        let a = speech_like(16000, 16000, 1, 7);
        assert_eq!(a, speech_like(16000, 16000, 1, 7));
        assert_ne!(a, speech_like(16000, 16000, 1, 8));
        assert!(a.iter().any(|&s| s.unsigned_abs() > 3000), "audible");
        assert!(a.iter().filter(|&&s| s == 0).count() > 1000, "has silence");
        let st = speech_like(4800, 48000, 2, 1);
        assert_eq!(st.len(), 9600);
    }
}
