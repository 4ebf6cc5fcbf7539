//! What an MP4/M4A file's `moov` box says of one track's timing, read
//! directly from the bytes (symphonia parses edit lists but does not
//! expose them): the media duration (`mdhd`, or `mehd` for a fragmented
//! file) for the duration limit, and the first edit (`elst`) for trimming
//! the encoder delay and padding the way ffmpeg does.
//!
//! Only box headers are trusted as far as the input reaches: every length
//! is checked against the bytes present, nothing is allocated from a box
//! field, and a malformed box just ends the walk (symphonia then reports
//! the file's defects in its own words).

/// Timing of one track, in its own units.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct TrackTiming {
    /// `mdhd` timescale (units per second of the media).
    pub media_timescale: u32,
    /// `mdhd` duration in media units (0 when unknown, as in fragmented files).
    pub media_duration: u64,
    /// The first edit that plays media: where it starts in media units and
    /// how long it lasts in movie units (0: to the end).
    pub edit: Option<Edit>,
}

/// One `elst` entry that plays media.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Edit {
    /// Start in the media, in media units (the encoder delay).
    pub media_time: u64,
    /// Length in movie units (`mvhd` timescale); 0 means to the end.
    pub duration: u64,
}

/// What the `moov` box says of the track with id `track_id`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Timing {
    /// `mvhd` timescale (units per second of the movie).
    pub movie_timescale: u32,
    /// `mehd` fragment duration in movie units (fragmented files), 0 if absent.
    pub fragment_duration: u64,
    /// The track's own timing, if a `trak` with that id was found.
    pub track: Option<TrackTiming>,
}

/// Reads the timing of track `track_id` from the top-level `moov` box of
/// `input`. Missing or malformed boxes leave their fields at their defaults.
pub(super) fn timing(input: &[u8], track_id: u32) -> Timing {
    let mut out = Timing::default();
    let Some(moov) = boxes(input).find(|(kind, _)| kind == b"moov").map(|b| b.1) else {
        return out;
    };
    for (kind, body) in boxes(moov) {
        match &kind {
            b"mvhd" => {
                if let Some((timescale, _)) = header_times(body) {
                    out.movie_timescale = timescale;
                }
            }
            b"mvex" => {
                if let Some(mehd) = child(body, b"mehd") {
                    out.fragment_duration = full_box_u32_or_u64(mehd).unwrap_or(0);
                }
            }
            b"trak" if track_id_of(body) == Some(track_id) => out.track = Some(track_timing(body)),
            _ => {}
        }
    }
    out
}

/// Whether the file is cut off: a top-level box announces more bytes than
/// follow its header (an `mdat` or `moof` cut short, or `moov` missing
/// after a cut `mdat`).
pub(super) fn cut_off(input: &[u8]) -> bool {
    let mut rest = input;
    while rest.len() >= 8 {
        let Some(size) = be_u32(rest, 0).map(u64::from) else {
            return false;
        };
        let size = match size {
            0 => return false,
            1 => match be_u64(rest, 8) {
                Some(large) => large,
                None => return true,
            },
            n => n,
        };
        match usize::try_from(size) {
            Ok(n) if n >= 8 && n <= rest.len() => rest = &rest[n..],
            Ok(n) if n < 8 => return false,
            _ => return true,
        }
    }
    !rest.is_empty()
}

/// The `tkhd` track id of a `trak` body.
fn track_id_of(trak: &[u8]) -> Option<u32> {
    let tkhd = child(trak, b"tkhd")?;
    let at = if *tkhd.first()? == 1 { 4 + 16 } else { 4 + 8 };
    be_u32(tkhd, at)
}

fn track_timing(trak: &[u8]) -> TrackTiming {
    let mut out = TrackTiming::default();
    if let Some((timescale, duration)) = child(trak, b"mdia")
        .and_then(|mdia| child(mdia, b"mdhd"))
        .and_then(header_times)
    {
        out.media_timescale = timescale;
        out.media_duration = duration;
    }
    out.edit = child(trak, b"edts")
        .and_then(|edts| child(edts, b"elst"))
        .and_then(first_edit);
    out
}

/// The first `elst` entry with a media time (empty edits, -1, are skipped).
fn first_edit(elst: &[u8]) -> Option<Edit> {
    let version = *elst.first()?;
    let count = be_u32(elst, 4)?;
    let entry_len = if version == 1 { 20 } else { 12 };
    for i in 0..count as usize {
        let at = 8usize.checked_add(i.checked_mul(entry_len)?)?;
        let (duration, media_time) = if version == 1 {
            (be_u64(elst, at)?, be_u64(elst, at + 8)? as i64)
        } else {
            (
                u64::from(be_u32(elst, at)?),
                i64::from(be_u32(elst, at + 4)? as i32),
            )
        };
        if media_time >= 0 {
            return Some(Edit {
                media_time: media_time as u64,
                duration,
            });
        }
    }
    None
}

/// `(timescale, duration)` of an `mvhd` or `mdhd` body (both versions).
fn header_times(body: &[u8]) -> Option<(u32, u64)> {
    if *body.first()? == 1 {
        Some((be_u32(body, 4 + 16)?, be_u64(body, 4 + 20)?))
    } else {
        Some((be_u32(body, 4 + 8)?, u64::from(be_u32(body, 4 + 12)?)))
    }
}

/// The one value of a full box holding a u32 (version 0) or u64 (version 1).
fn full_box_u32_or_u64(body: &[u8]) -> Option<u64> {
    if *body.first()? == 1 {
        be_u64(body, 4)
    } else {
        be_u32(body, 4).map(u64::from)
    }
}

/// The body of the first child box of type `kind`.
fn child<'a>(body: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(body).find(|(k, _)| k == kind).map(|(_, b)| b)
}

/// The boxes laid end to end in `data`: `(type, body)`, stopping at the
/// first header that does not fit.
fn boxes(data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut rest = data;
    std::iter::from_fn(move || {
        let size = u64::from(be_u32(rest, 0)?);
        let kind: [u8; 4] = rest.get(4..8)?.try_into().ok()?;
        let (header, size) = match size {
            0 => (8, rest.len() as u64),
            1 => (16, be_u64(rest, 8)?),
            n => (8, n),
        };
        let size = usize::try_from(size).ok()?;
        if size < header || size > rest.len() {
            rest = &[];
            return None;
        }
        let body = &rest[header..size];
        rest = &rest[size..];
        Some((kind, body))
    })
}

fn be_u32(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

fn be_u64(data: &[u8], at: usize) -> Option<u64> {
    let bytes = data.get(at..at.checked_add(8)?)?;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    fn full(kind: &[u8; 4], version: u8, fields: &[u8]) -> Vec<u8> {
        let mut body = vec![version, 0, 0, 0];
        body.extend_from_slice(fields);
        make(kind, &body)
    }

    #[test]
    fn reads_the_edit_and_durations_of_the_named_track() {
        let mvhd = full(
            b"mvhd",
            0,
            &[[0; 8].as_slice(), &1000u32.to_be_bytes(), &[0; 4]].concat(),
        );
        let tkhd = |id: u32| full(b"tkhd", 0, &[[0; 8].as_slice(), &id.to_be_bytes()].concat());
        let mdhd = full(
            b"mdhd",
            0,
            &[
                [0; 8].as_slice(),
                &44100u32.to_be_bytes(),
                &45124u32.to_be_bytes(),
            ]
            .concat(),
        );
        let mut elst_fields = 2u32.to_be_bytes().to_vec();
        elst_fields.extend_from_slice(&500u32.to_be_bytes()); // empty edit
        elst_fields.extend_from_slice(&(-1i32).to_be_bytes());
        elst_fields.extend_from_slice(&[0, 1, 0, 0]);
        elst_fields.extend_from_slice(&1000u32.to_be_bytes());
        elst_fields.extend_from_slice(&1024u32.to_be_bytes());
        elst_fields.extend_from_slice(&[0, 1, 0, 0]);
        let edts = make(b"edts", &full(b"elst", 0, &elst_fields));
        let trak = |id: u32| {
            make(
                b"trak",
                &[tkhd(id), edts.clone(), make(b"mdia", &mdhd)].concat(),
            )
        };
        let moov = make(b"moov", &[mvhd, trak(1), trak(2)].concat());
        let file = [make(b"ftyp", b"M4A \0\0\0\0"), moov].concat();
        let t = timing(&file, 2);
        assert_eq!(t.movie_timescale, 1000);
        let track = t.track.expect("track 2");
        assert_eq!(
            (track.media_timescale, track.media_duration),
            (44100, 45124)
        );
        assert_eq!(
            track.edit,
            Some(Edit {
                media_time: 1024,
                duration: 1000
            })
        );
        assert_eq!(timing(&file, 3).track, None);
        assert!(!cut_off(&file));
        assert!(cut_off(&file[..file.len() - 1]));
        // Cut anywhere, it never panics and keeps what it read.
        for cut in 0..file.len() {
            let _ = timing(&file[..cut], 2);
        }
    }
}
