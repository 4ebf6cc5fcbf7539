//! One Matroska Block or SimpleBlock of the decoded track split into the byte
//! ranges of its frames: no lacing, Xiph, EBML and fixed-size lacing
//! (Matroska, RFC 9559 section 10), every size checked against the block.
//!
//! The EBML variable-size integers are read with ebml-iterable's
//! [`read_vint`]; the rest is here because webm-iterable's own block helpers
//! index without bounds checks (a block shorter than its header, or
//! EBML-laced sizes that go negative, make them panic).

use std::ops::Range;

use ebml_iterable::tools::read_vint;

/// Most frames one laced block holds (its frame count is one byte).
const MAX_LACED_FRAMES: usize = 256;

/// The frames of a Block or SimpleBlock element of track `track`: each
/// frame's bytes within `data`, in order (empty frames included); none when
/// the block belongs to another track, whose lacing is not read. The error
/// says what is wrong with the block.
pub(super) fn frames_of(data: &[u8], track: u64) -> Result<Vec<Range<usize>>, String> {
    let (number, track_len) = vint(data, 0, "track number")?;
    if number != track {
        return Ok(Vec::new());
    }
    let flags_at = track_len + 2;
    let Some(&flags) = data.get(flags_at) else {
        return Err(format!(
            "it is {} bytes long, shorter than its header",
            data.len()
        ));
    };
    let mut pos = flags_at + 1;
    let lacing = (flags >> 1) & 0b11;
    if lacing == 0 {
        return Ok(std::iter::once(pos..data.len()).collect());
    }
    let Some(&count) = data.get(pos) else {
        return Err("its lacing header is missing".into());
    };
    pos += 1;
    let frames = usize::from(count) + 1;
    let mut sizes: Vec<usize> = Vec::with_capacity(frames.min(MAX_LACED_FRAMES));
    match lacing {
        // Xiph: each size as a run of 255s and a final byte below 255.
        0b01 => {
            while sizes.len() < frames - 1 {
                let mut size = 0usize;
                loop {
                    let Some(&b) = data.get(pos) else {
                        return Err("its Xiph lacing sizes run past its end".into());
                    };
                    pos += 1;
                    size += usize::from(b);
                    if b != 255 {
                        break;
                    }
                }
                sizes.push(size);
            }
        }
        // EBML: the first size unsigned, each next one a signed difference.
        0b11 => {
            let mut size = 0u64;
            while sizes.len() < frames - 1 {
                let (raw, len) = vint(data, pos, "EBML lacing size")?;
                pos += len;
                size = if sizes.is_empty() {
                    raw
                } else {
                    // Signed: the raw value minus half its range.
                    let bias = (1i64 << (7 * len - 1)) - 1;
                    let diff = i64::try_from(raw).unwrap_or(i64::MAX) - bias;
                    size.checked_add_signed(diff)
                        .ok_or("its EBML lacing gives a negative frame size")?
                };
                sizes.push(usize::try_from(size).unwrap_or(usize::MAX));
            }
        }
        // Fixed: the rest split evenly.
        _ => {
            let rest = data.len() - pos;
            if !rest.is_multiple_of(frames) {
                return Err(format!(
                    "its {rest} bytes of fixed-size laced data do not split into {frames} frames"
                ));
            }
            sizes.resize(frames - 1, rest / frames);
        }
    }
    let mut ranges = Vec::with_capacity(frames);
    for size in sizes {
        let end = pos
            .checked_add(size)
            .filter(|&end| end <= data.len())
            .ok_or("its laced frame sizes add up to more than the block holds")?;
        ranges.push(pos..end);
        pos = end;
    }
    ranges.push(pos..data.len());
    Ok(ranges)
}

/// Reads an EBML variable-size integer at `at`: its value and length.
fn vint(data: &[u8], at: usize, what: &str) -> Result<(u64, usize), String> {
    match read_vint(data.get(at..).unwrap_or(&[])) {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(format!("its {what} runs past its end")),
        Err(_) => Err(format!("its {what} is not a valid EBML number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(data: &[u8]) -> Result<Vec<Range<usize>>, String> {
        frames_of(data, 1)
    }

    fn frames(data: &[u8]) -> Vec<&[u8]> {
        let ranges = split(data).expect("a valid block");
        ranges.iter().map(|r| &data[r.clone()]).collect()
    }

    #[test]
    fn unlaced() {
        let b = [0x81, 0x00, 0x10, 0x80, 1, 2, 3];
        assert_eq!(frames(&b), vec![&[1u8, 2, 3][..]]);
        // Two-byte track number 0x4001 = 1.
        let b = [0x40, 0x01, 0x00, 0x00, 0x00, 9];
        assert_eq!(frames(&b), vec![&[9u8][..]]);
        // Another track's block: no frames, its lacing unread.
        assert_eq!(frames_of(&[0x82, 0, 0, 0x02, 9, 255], 1), Ok(vec![]));
    }

    #[test]
    fn xiph_lacing() {
        // 3 frames: 2 bytes, 256 bytes (255 + 1), the rest (1 byte).
        let mut b = vec![0x81, 0, 0, 0b0000_0010, 2, 2, 255, 1];
        b.extend_from_slice(&[7, 7]);
        b.extend(std::iter::repeat_n(8, 256));
        b.push(9);
        let f = frames(&b);
        assert_eq!(f.len(), 3);
        assert_eq!(f[0], &[7, 7]);
        assert_eq!(f[1].len(), 256);
        assert_eq!(f[2], &[9]);
    }

    #[test]
    fn ebml_lacing() {
        // 3 frames: 3 bytes, 3 - 1 = 2 bytes (signed 0xBE = 62 - 63), rest.
        let b = [0x81, 0, 0, 0b0000_0110, 2, 0x83, 0xBE, 1, 1, 1, 2, 2, 3];
        assert_eq!(frames(&b), vec![&[1u8, 1, 1][..], &[2, 2], &[3]]);
        // A difference that makes a size negative.
        let b = [0x81, 0, 0, 0b0000_0110, 2, 0x81, 0x80, 1, 1];
        assert!(split(&b).unwrap_err().contains("negative"));
        // 8-byte sizes far past the block.
        let mut b = vec![0x81, 0, 0, 0b0000_0110, 1, 0x01];
        b.extend_from_slice(&[0xFF; 7]);
        assert!(split(&b).unwrap_err().contains("more than the block"));
    }

    #[test]
    fn fixed_lacing() {
        let b = [0x81, 0, 0, 0b0000_0100, 2, 1, 1, 2, 2, 3, 3];
        assert_eq!(frames(&b), vec![&[1u8, 1][..], &[2, 2], &[3, 3]]);
        let b = [0x81, 0, 0, 0b0000_0100, 1, 1, 1, 2];
        assert!(split(&b).unwrap_err().contains("do not split"));
    }

    #[test]
    fn broken_blocks_are_errors_not_panics() {
        for b in [
            &[][..],
            &[0x81],
            &[0x81, 0],
            &[0x81, 0, 0],
            &[0x00, 0, 0, 0],
            &[0x40],
            &[0x81, 0, 0, 0b10],
            &[0x81, 0, 0, 0b10, 3, 255, 255],
            &[0x81, 0, 0, 0b110, 3],
            &[0x81, 0, 0, 0b110, 1, 0x00],
            &[0x81, 0, 0, 0b10, 1, 200, 1],
        ] {
            assert!(split(b).is_err(), "{b:?}");
        }
        // A laced block whose last frame is empty is well-formed.
        assert_eq!(frames(&[0x81, 0, 0, 0b10, 1, 2, 1, 1]).len(), 2);
    }
}
