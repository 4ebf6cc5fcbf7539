//! A backend answer as stored in the cache, and the canonical key of the
//! request that produced it.

use bytes::{BufMut, Bytes, BytesMut};
use opusgate_cache::Key;

/// Version tag of the stored answer layout.
const MAGIC: &[u8; 4] = b"OGU1";

/// A successful backend answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The backend's status (2xx).
    pub status: u16,
    /// The backend's content type.
    pub content_type: String,
    /// The backend's body.
    pub body: Bytes,
    /// How long the backend took, seconds (of the call that produced it).
    pub backend_seconds: f64,
}

impl Answer {
    /// `MAGIC | status u16 | seconds f64 | content-type length u32 | content type | body`, big-endian.
    pub fn encode(&self) -> Bytes {
        let ct = self.content_type.as_bytes();
        let mut out = BytesMut::with_capacity(18 + ct.len() + self.body.len());
        out.put_slice(MAGIC);
        out.put_u16(self.status);
        out.put_f64(self.backend_seconds);
        let ct_len = u32::try_from(ct.len()).expect(
            "a header value is far shorter than 4 GiB (hyper caps a response head far below that)",
        );
        out.put_u32(ct_len);
        out.put_slice(ct);
        out.put_slice(&self.body);
        out.freeze()
    }

    /// The inverse of [`Answer::encode`]; `None` for anything else.
    pub fn decode(bytes: &Bytes) -> Option<Answer> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let status = u16::from_be_bytes(rest.get(0..2)?.try_into().ok()?);
        let seconds = f64::from_be_bytes(rest.get(2..10)?.try_into().ok()?);
        let ct_len = u32::from_be_bytes(rest.get(10..14)?.try_into().ok()?) as usize;
        let ct_end = 14usize.checked_add(ct_len)?;
        let content_type = std::str::from_utf8(rest.get(14..ct_end)?).ok()?.to_owned();
        let body_start = MAGIC.len() + ct_end;
        Some(Answer {
            status,
            content_type,
            body: bytes.slice(body_start..),
            backend_seconds: seconds,
        })
    }
}

/// The content address of a backend request: every part, sorted by name
/// and length-framed, so that the same request always gets the same key and
/// no two different requests share one.
pub fn request_key(route: &str, mut parts: Vec<(String, Vec<u8>)>) -> Key {
    parts.sort();
    let mut canonical = Vec::new();
    for (name, value) in &parts {
        canonical.extend_from_slice(&(name.len() as u64).to_be_bytes());
        canonical.extend_from_slice(name.as_bytes());
        canonical.extend_from_slice(&(value.len() as u64).to_be_bytes());
        canonical.extend_from_slice(value);
    }
    Key::derive(
        &canonical,
        format!("opusgate/upstream;route={route}").as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip() {
        let a = Answer {
            status: 200,
            content_type: "application/json".into(),
            body: Bytes::from_static(b"{\"text\":\"hi\"}"),
            backend_seconds: 0.25,
        };
        assert_eq!(Answer::decode(&a.encode()), Some(a));
        assert_eq!(Answer::decode(&Bytes::from_static(b"OGU1\0")), None);
        assert_eq!(Answer::decode(&Bytes::from_static(b"nope")), None);
    }

    #[test]
    fn request_keys_are_canonical_and_framed() {
        let p = |n: &str, v: &str| (n.to_owned(), v.as_bytes().to_vec());
        let a = request_key("t", vec![p("model", "m"), p("language", "en")]);
        let b = request_key("t", vec![p("language", "en"), p("model", "m")]);
        assert_eq!(a, b);
        assert_ne!(
            a,
            request_key("t", vec![p("model", "ml"), p("anguage", "en")])
        );
        assert_ne!(
            a,
            request_key("u", vec![p("model", "m"), p("language", "en")])
        );
    }
}
