//! `POST /api/v1/convert` and `GET|HEAD /api/v1/audio/{key}`: reading the
//! upload under its limits, and answering with WAV and cache headers.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use opusgate_cache::Key;
use serde::Deserialize;

use super::error::ApiError;
use super::AppState;
use crate::service::{wav_duration_ms, Conversion};

/// The multipart field that carries the audio, as the original service's clients send it.
pub const AUDIO_FIELD: &str = "audio_file";

/// Query parameters of `/api/v1/convert`, kept as text so that a bad value
/// gets our own `bad_parameter` answer.
#[derive(Debug, Default, Deserialize)]
pub struct ConvertQuery {
    rate: Option<String>,
    channels: Option<String>,
}

fn parse_param<T: std::str::FromStr>(
    name: &str,
    value: Option<&str>,
) -> Result<Option<T>, ApiError> {
    value
        .map(|v| {
            v.trim().parse::<T>().map_err(|_| {
                ApiError::bad_parameter(format!("`{name}` must be a whole number, got `{v}`"))
            })
        })
        .transpose()
}

/// `POST /api/v1/convert?rate=R&channels=C`: raw Ogg Opus body or
/// multipart with the file in `audio_file`; answers the WAV.
pub async fn convert(
    State(app): State<AppState>,
    query: Result<Query<ConvertQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_parameter(e.body_text()))?;
    let rate = parse_param::<u32>("rate", query.rate.as_deref())?;
    let channels = parse_param::<u8>("channels", query.channels.as_deref())?;
    let params = app.service.params(rate, channels)?;
    let raw = read_body(&app, &headers, body).await?;
    let upload = match multipart_boundary(&headers)? {
        Some(boundary) => audio_from_multipart(raw, boundary).await?,
        None => raw,
    };
    let conversion = app.service.convert(upload, params).await?;
    Ok(wav_response(conversion))
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

/// The boundary if the body is `multipart/form-data`.
fn multipart_boundary(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
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

/// The bytes of the one `audio_file` field of a multipart body.
pub async fn audio_from_multipart(raw: Bytes, boundary: String) -> Result<Bytes, ApiError> {
    let fields = read_multipart(raw, boundary).await?;
    let mut audio = fields.into_iter().filter(|f| f.name == AUDIO_FIELD);
    match (audio.next(), audio.next()) {
        (Some(field), None) => Ok(field.data),
        (None, _) => Err(ApiError::bad_request(format!(
            "the multipart body has no `{AUDIO_FIELD}` field: send the audio in a field named `{AUDIO_FIELD}`"
        ))),
        (Some(_), Some(_)) => Err(ApiError::bad_request(format!(
            "the multipart body has more than one `{AUDIO_FIELD}` field: send one file per request"
        ))),
    }
}

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

fn etag(key: &Key) -> HeaderValue {
    // 64 hex digits between quotes: always a valid header value.
    HeaderValue::from_str(&format!("\"{key}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

fn audio_location(key: &Key) -> HeaderValue {
    HeaderValue::from_str(&format!("/api/v1/audio/{key}"))
        .unwrap_or_else(|_| HeaderValue::from_static("/api/v1/audio"))
}

fn wav_headers(headers: &mut HeaderMap, key: &Key, wav: &[u8]) {
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    headers.insert(header::ETAG, etag(key));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    if let Some(ms) = wav_duration_ms(wav) {
        headers.insert("x-audio-duration-ms", HeaderValue::from(ms));
    }
}

/// 200 with the WAV and its cache headers.
fn wav_response(conversion: Conversion) -> Response {
    let Conversion { key, wav, outcome } = conversion;
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    wav_headers(headers, &key, &wav);
    headers.insert("x-cache", HeaderValue::from_static(outcome.as_str()));
    headers.insert(header::LOCATION, audio_location(&key));
    *response.body_mut() = Body::from(wav);
    response
}

/// Whether an `If-None-Match` header names this key (or `*`).
fn matches_etag(headers: &HeaderMap, key: &Key) -> bool {
    let hex = key.to_hex();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|tag| tag == "*" || tag == hex)
}

/// `GET|HEAD /api/v1/audio/{key}`: a stored WAV by its content address.
pub async fn audio(
    State(app): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = Key::from_hex(&key).ok_or_else(|| {
        ApiError::bad_parameter("the key must be 64 lowercase hexadecimal characters")
    })?;
    let wav = app
        .service
        .audio(&key)
        .await
        .ok_or_else(|| ApiError::not_found(format!("no stored audio has the key {key}")))?;
    if matches_etag(&headers, &key) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response.headers_mut().insert(header::ETAG, etag(&key));
        return Ok(response);
    }
    let mut response = Response::new(Body::empty());
    wav_headers(response.headers_mut(), &key, &wav);
    *response.body_mut() = Body::from(wav);
    Ok(response)
}
