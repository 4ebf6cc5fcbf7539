//! The Tracks element of a WebM/Matroska file: each TrackEntry's fields as
//! they stream by, and the choice of the track to decode (the first with
//! CodecID `A_OPUS`, its CodecPrivate parsed as the OpusHead).

use super::super::error::CodecError;
use super::super::head::OpusHead;

/// Most TrackEntry elements read from one file.
const MAX_TRACKS: usize = 128;
/// Longest CodecID quoted in a message.
const MAX_QUOTED_ID: usize = 32;
/// The Matroska CodecID of Opus.
const OPUS: &str = "A_OPUS";

/// One TrackEntry's fields of interest.
#[derive(Debug, Default, Clone)]
struct Entry {
    number: Option<u64>,
    codec_id: Option<String>,
    private: Option<Vec<u8>>,
    /// Whether it has ContentEncodings (compressed or encrypted frames).
    encoded: bool,
}

/// The TrackEntries read so far.
#[derive(Debug, Default)]
pub(super) struct Tracks {
    entries: Vec<Entry>,
    current: Option<Entry>,
}

/// The track chosen for decoding.
#[derive(Debug, Clone)]
pub(super) struct Chosen {
    /// Its TrackNumber, as blocks name it.
    pub(super) number: u64,
    /// Its OpusHead (from CodecPrivate).
    pub(super) head: OpusHead,
}

impl Tracks {
    /// A TrackEntry starts.
    pub(super) fn start_entry(&mut self) {
        self.current = Some(Entry::default());
    }

    /// A TrackEntry ends.
    pub(super) fn end_entry(&mut self) -> Result<(), CodecError> {
        if let Some(entry) = self.current.take() {
            if self.entries.len() >= MAX_TRACKS {
                return Err(CodecError::InvalidStream(format!(
                    "the file lists more than {MAX_TRACKS} tracks"
                )));
            }
            self.entries.push(entry);
        }
        Ok(())
    }

    /// TrackNumber of the open TrackEntry.
    pub(super) fn number(&mut self, n: u64) {
        if let Some(e) = self.current.as_mut() {
            e.number = Some(n);
        }
    }

    /// CodecID of the open TrackEntry.
    pub(super) fn codec_id(&mut self, id: String) {
        if let Some(e) = self.current.as_mut() {
            e.codec_id = Some(id);
        }
    }

    /// CodecPrivate of the open TrackEntry (bounded by the input's size).
    pub(super) fn private(&mut self, data: Vec<u8>) {
        if let Some(e) = self.current.as_mut() {
            e.private = Some(data);
        }
    }

    /// The open TrackEntry has ContentEncodings.
    pub(super) fn encoded(&mut self) {
        if let Some(e) = self.current.as_mut() {
            e.encoded = true;
        }
    }

    /// At the end of Tracks: the first Opus track, or `unsupported_format`
    /// naming the codecs found.
    pub(super) fn choose(mut self) -> Result<Chosen, CodecError> {
        self.end_entry()?;
        let Some(opus) = self
            .entries
            .iter()
            .find(|e| e.codec_id.as_deref() == Some(OPUS))
        else {
            return Err(CodecError::UnsupportedFormat(format!(
                "the WebM/Matroska file holds no Opus track (found: {}); only Opus audio is \
                 decoded from WebM/Matroska (record with audio/webm;codecs=opus)",
                self.found()
            )));
        };
        let number = opus
            .number
            .filter(|&n| n > 0)
            .ok_or_else(|| CodecError::InvalidStream("the Opus track has no TrackNumber".into()))?;
        if opus.encoded {
            return Err(CodecError::UnsupportedFormat(
                "the Opus track's frames are compressed or encrypted (ContentEncodings), which \
                 is not supported"
                    .into(),
            ));
        }
        let private = opus.private.as_deref().ok_or_else(|| {
            CodecError::InvalidStream(
                "the Opus track has no CodecPrivate, which must hold its OpusHead".into(),
            )
        })?;
        Ok(Chosen {
            number,
            head: OpusHead::parse(private)?,
        })
    }

    /// The CodecIDs of the tracks, for a message: `A_VORBIS, V_VP8`.
    fn found(&self) -> String {
        let mut ids: Vec<String> = Vec::new();
        for e in &self.entries {
            let id = match e.codec_id.as_deref() {
                Some(id) => id
                    .chars()
                    .take(MAX_QUOTED_ID)
                    .flat_map(char::escape_default)
                    .collect(),
                None => "a track without CodecID".to_string(),
            };
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        if ids.is_empty() {
            "no tracks".into()
        } else {
            ids.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(t: &mut Tracks, n: u64, id: &str, private: Option<&[u8]>) {
        t.start_entry();
        t.number(n);
        t.codec_id(id.into());
        if let Some(p) = private {
            t.private(p.to_vec());
        }
        t.end_entry().expect("room for a track");
    }

    fn opus_head() -> Vec<u8> {
        let mut h = b"OpusHead\x01\x02".to_vec();
        h.extend_from_slice(&312u16.to_le_bytes());
        h.extend_from_slice(&48000u32.to_le_bytes());
        h.extend_from_slice(&[0, 0, 0]);
        h
    }

    #[test]
    fn chooses_the_first_opus_track() {
        let mut t = Tracks::default();
        track(&mut t, 1, "V_VP8", None);
        track(&mut t, 2, "A_OPUS", Some(&opus_head()));
        track(&mut t, 3, "A_OPUS", Some(b"junk"));
        let c = t.choose().expect("an Opus track");
        assert_eq!((c.number, c.head.channels, c.head.pre_skip), (2, 2, 312));
    }

    #[test]
    fn names_what_it_found() {
        let mut t = Tracks::default();
        track(&mut t, 1, "A_VORBIS", Some(b"x"));
        track(&mut t, 2, "V_VP8", None);
        track(&mut t, 3, "A_VORBIS", None);
        let e = t.choose().unwrap_err();
        assert_eq!(e.code(), "unsupported_format");
        assert!(e.to_string().contains("found: A_VORBIS, V_VP8"), "{e}");
        let e = Tracks::default().choose().unwrap_err();
        assert!(e.to_string().contains("found: no tracks"), "{e}");
        let mut t = Tracks::default();
        track(&mut t, 1, "A_\n\"odd\"", None);
        let e = t.choose().unwrap_err().to_string();
        assert!(e.contains(r#"A_\n\"odd\""#), "{e}");
    }

    #[test]
    fn refuses_broken_opus_tracks() {
        let mut t = Tracks::default();
        track(&mut t, 1, "A_OPUS", None);
        assert_eq!(t.choose().unwrap_err().code(), "invalid_stream");
        let mut t = Tracks::default();
        track(&mut t, 0, "A_OPUS", Some(&opus_head()));
        assert_eq!(t.choose().unwrap_err().code(), "invalid_stream");
        let mut t = Tracks::default();
        track(&mut t, 1, "A_OPUS", Some(b"OpusHead"));
        assert_eq!(t.choose().unwrap_err().code(), "invalid_stream");
        let mut t = Tracks::default();
        t.start_entry();
        t.number(1);
        t.codec_id("A_OPUS".into());
        t.private(opus_head());
        t.encoded();
        assert_eq!(t.choose().unwrap_err().code(), "unsupported_format");
        let mut t = Tracks::default();
        for n in 0..MAX_TRACKS as u64 {
            track(&mut t, n + 1, "A_OPUS", Some(&opus_head()));
        }
        t.start_entry();
        assert_eq!(t.end_entry().unwrap_err().code(), "invalid_stream");
    }
}
