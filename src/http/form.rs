//! Request bodies for every route: reading a body under the upload limit and
//! the read deadline, and multipart forms (the original service's
//! `audio_file` upload and proxy mode's OpenAI forms).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::error::ApiError;
use super::AppState;

/// The multipart field that carries the audio, as the original service's
/// clients send it (`/api/v1/convert`, `/api/v1/translate_audio`).
pub const AUDIO_FIELD: &str = "audio_file";

/// One field of a multipart body, already read.
#[derive(Debug, Clone)]
pub struct FormField {
    /// The field name.
    pub name: String,
    /// The file name, for file fields.
    pub file_name: Option<String>,
    /// The field's Content-Type, if given.
    pub content_type: Option<String>,
    /// The field's bytes.
    pub data: Bytes,
}

impl FormField {
    /// The field's bytes as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// Reads the whole body, refusing with 413 as soon as it crosses the limit
/// and with 408 if the client takes longer than the read timeout.
pub async fn read_body(app: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let limit = app.config.limits.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::payload_too_large(limit));
    }
    // Never trust the declared length for more than the limit.
    let capacity = declared.unwrap_or(0).min(limit) as usize;
    let timeout = Duration::from_secs(app.config.server.request_read_timeout_seconds);
    let read = async {
        let mut buffer = BytesMut::with_capacity(capacity);
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
            if (buffer.len() + chunk.len()) as u64 > limit {
                return Err(ApiError::payload_too_large(limit));
            }
            buffer.extend_from_slice(&chunk);
        }
        Ok(buffer.freeze())
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ApiError::request_timeout(timeout.as_secs()))?
}

/// The boundary if the body is `multipart/form-data`, `None` for any other
/// (or no) Content-Type.
pub fn multipart_boundary(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(content_type) = headers.get(header::CONTENT_TYPE) else {
        return Ok(None);
    };
    let content_type = content_type.to_str().unwrap_or_default();
    if !content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/")
    {
        return Ok(None);
    }
    multer::parse_boundary(content_type)
        .map(Some)
        .map_err(|e| ApiError::bad_request(format!("malformed multipart Content-Type: {e}")))
}

/// Reads a body that must be a multipart form (proxy mode's routes).
pub async fn read_form(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<FormField>, ApiError> {
    let raw = read_body(app, headers, body).await?;
    let boundary = multipart_boundary(headers)?
        .ok_or_else(|| ApiError::bad_request("this route takes a multipart/form-data body"))?;
    read_multipart(raw, boundary).await
}

/// Parses a multipart body that is already in memory (and so already
/// bounded by the upload limit).
pub async fn read_multipart(raw: Bytes, boundary: String) -> Result<Vec<FormField>, ApiError> {
    let stream = futures::stream::once(async move { Ok::<Bytes, Infallible>(raw) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let malformed =
        |e: multer::Error| ApiError::bad_request(format!("malformed multipart body: {e}"));
    let mut fields = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(|m| m.to_string());
        let data = field.bytes().await.map_err(malformed)?;
        fields.push(FormField {
            name,
            file_name,
            content_type,
            data,
        });
    }
    Ok(fields)
}

/// Takes the one field named `name` out of `fields`: 400 `bad_request` if
/// there is none or more than one.
pub fn take_field(fields: &mut Vec<FormField>, name: &str) -> Result<FormField, ApiError> {
    let mut positions = fields
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name == name)
        .map(|(i, _)| i);
    match (positions.next(), positions.next()) {
        (Some(i), None) => Ok(fields.remove(i)),
        (None, _) => Err(ApiError::bad_request(format!(
            "the form has no `{name}` field: send it in a field named `{name}`"
        ))),
        (Some(_), Some(_)) => Err(ApiError::bad_request(format!(
            "the form has more than one `{name}` field: send one per request"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str) -> FormField {
        FormField {
            name: name.into(),
            file_name: None,
            content_type: None,
            data: Bytes::from(name.to_owned()),
        }
    }

    #[test]
    fn take_field_takes_exactly_one() {
        let mut fields = vec![field("a"), field("b"), field("c")];
        assert_eq!(
            take_field(&mut fields, "b").map(|f| f.text()).ok(),
            Some("b".into())
        );
        assert_eq!(fields.len(), 2);
        assert!(take_field(&mut fields, "b").is_err());
        fields.push(field("a"));
        assert!(take_field(&mut fields, "a").is_err());
        assert_eq!(fields.len(), 3, "a refused take leaves the fields alone");
    }
}
