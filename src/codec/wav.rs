//! RIFF/WAVE output: the canonical 44-byte header of a 16-bit PCM file and the
//! little-endian sample data after it, written into one buffer sized up front.

use super::error::CodecError;

/// Length of the header written by [`write_header`].
pub const HEADER_LEN: usize = 44;

/// Bytes of sample data for `frames` frames of `channels` 16-bit samples, or
/// `audio_too_long` when the file would not fit the 4 GiB RIFF size fields.
pub fn data_len(frames: u64, channels: u8, rate: u32) -> Result<usize, CodecError> {
    let bytes = frames.checked_mul(u64::from(channels) * 2);
    match bytes {
        Some(b) if b <= u64::from(u32::MAX) - 36 => usize::try_from(b)
            .map_err(|_| CodecError::Internal("output does not fit in memory".into())),
        _ => {
            let limit_frames = (u64::from(u32::MAX) - 36) / (u64::from(channels) * 2);
            Err(CodecError::AudioTooLong {
                found_ms: frames.saturating_mul(1000).div_ceil(u64::from(rate.max(1))),
                at_least: false,
                limit_ms: limit_frames.saturating_mul(1000) / u64::from(rate.max(1)),
            })
        }
    }
}

/// Appends the header of a PCM s16le WAV file holding `data_len` bytes.
pub fn write_header(out: &mut Vec<u8>, rate: u32, channels: u8, data_len: u32) {
    let block_align = u16::from(channels) * 2;
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36u32.saturating_add(data_len)).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&u16::from(channels).to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * u32::from(block_align)).to_le_bytes());
    out.extend_from_slice(&block_align.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
}

/// Duration in milliseconds (rounded down) of `frames` frames at `rate`.
pub fn frames_ms(frames: u64, rate: u32) -> u64 {
    frames.saturating_mul(1000) / u64::from(rate.max(1))
}

/// Duration in milliseconds of a WAV written by this module, read from the
/// fixed fields of its 44-byte header (no parsing of chunks); `None` if
/// `wav` does not start with such a header.
pub fn duration_ms(wav: &[u8]) -> Option<u64> {
    let header = wav.get(..HEADER_LEN)?;
    if &header[0..4] != b"RIFF" || &header[8..16] != b"WAVEfmt " || &header[36..40] != b"data" {
        return None;
    }
    let le16 = |at: usize| u16::from_le_bytes([header[at], header[at + 1]]);
    let le32 = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let block_align = u64::from(le16(32));
    let rate = le32(24);
    if block_align == 0 {
        return None;
    }
    Some(frames_ms(u64::from(le32(40)) / block_align, rate))
}

/// Appends samples as little-endian 16-bit values.
pub fn push_samples(out: &mut Vec<u8>, samples: &[i16]) {
    let start = out.len();
    out.resize(start + samples.len() * 2, 0);
    for (dst, s) in out[start..].chunks_exact_mut(2).zip(samples) {
        dst.copy_from_slice(&s.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_readable_by_hound() {
        let mut wav = Vec::new();
        write_header(&mut wav, 16000, 2, 8);
        push_samples(&mut wav, &[1, -1, i16::MAX, i16::MIN]);
        assert_eq!(wav.len(), HEADER_LEN + 8);
        let reader = hound::WavReader::new(std::io::Cursor::new(&wav)).expect("valid wav");
        let spec = reader.spec();
        assert_eq!(
            (spec.channels, spec.sample_rate, spec.bits_per_sample),
            (2, 16000, 16)
        );
        let samples: Vec<i16> = reader
            .into_samples()
            .collect::<Result<_, _>>()
            .expect("samples");
        assert_eq!(samples, [1, -1, i16::MAX, i16::MIN]);
    }

    #[test]
    fn duration_comes_from_the_header() {
        let mut wav = Vec::new();
        // 1.5 s of 16 kHz stereo.
        write_header(&mut wav, 16000, 2, 16000 * 3 / 2 * 4);
        assert_eq!(duration_ms(&wav), Some(1500));
        assert_eq!(duration_ms(&wav[..40]), None);
        wav[0] = b'X';
        assert_eq!(duration_ms(&wav), None);
    }

    #[test]
    fn refuses_files_over_4_gib() {
        assert_eq!(data_len(10, 2, 48000), Ok(40));
        let e = data_len(1 << 31, 2, 48000).expect_err("too big");
        assert_eq!(e.code(), "audio_too_long");
    }
}
