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
    fn refuses_files_over_4_gib() {
        assert_eq!(data_len(10, 2, 48000), Ok(40));
        let e = data_len(1 << 31, 2, 48000).expect_err("too big");
        assert_eq!(e.code(), "audio_too_long");
    }
}
