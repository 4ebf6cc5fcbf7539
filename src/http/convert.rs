//! `POST /api/v1/convert` and `GET|HEAD /api/v1/audio/{key}`: reading the
//! upload under its limits, and answering with WAV and cache headers.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use opusgate_cache::Key;

use super::error::ApiError;
use super::form::{multipart_boundary, read_body, read_multipart, take_field, AUDIO_FIELD};
use super::log::mark_audio;
use super::range::{self, Selection};
use super::AppState;
use crate::codec;
use crate::service::Conversion;

/// Query parameters of `/api/v1/convert`, kept as text so that a bad value
/// gets our own `bad_parameter` answer.
#[derive(Debug, Default)]
pub struct ConvertQuery {
    rate: Option<String>,
    channels: Option<String>,
}

/// The query parameters `/api/v1/convert` accepts, each at most once.
const CONVERT_PARAMETERS: &str = "`rate` and `channels`, each at most once";

impl ConvertQuery {
    /// From the form-decoded pairs of the query string, in order: any other
    /// name (names are case-sensitive) or a name given twice is refused, so
    /// that a misspelt parameter is not silently replaced by its default.
    fn from_pairs(pairs: Vec<(String, String)>) -> Result<ConvertQuery, ApiError> {
        let mut query = ConvertQuery::default();
        for (name, value) in pairs {
            let slot = match name.as_str() {
                "rate" => &mut query.rate,
                "channels" => &mut query.channels,
                _ => {
                    return Err(ApiError::bad_parameter(format!(
                        "unknown query parameter `{name}`: /api/v1/convert accepts {CONVERT_PARAMETERS}"
                    )))
                }
            };
            if slot.replace(value).is_some() {
                return Err(ApiError::bad_parameter(format!(
                    "query parameter `{name}` is given more than once: /api/v1/convert accepts {CONVERT_PARAMETERS}"
                )));
            }
        }
        Ok(query)
    }
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
    // Every pair, unknown and repeated names too, form-decoded.
    pairs: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(pairs) = pairs.map_err(|e| ApiError::bad_parameter(e.body_text()))?;
    let query = ConvertQuery::from_pairs(pairs)?;
    let rate = parse_param::<u32>("rate", query.rate.as_deref())?;
    let channels = parse_param::<u8>("channels", query.channels.as_deref())?;
    let params = app.service.params(rate, channels)?;
    let raw = read_body(&app, &headers, body).await?;
    let upload = match multipart_boundary(&headers)? {
        Some(boundary) => take_field(&mut read_multipart(raw, boundary).await?, AUDIO_FIELD)?.data,
        None => raw,
    };
    let conversion = app.service.convert(upload, params).await?;
    Ok(wav_response(&app, conversion))
}

fn etag(key: &Key) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{key}\""))
        .expect("64 hex digits between quotes are a valid header value")
}

fn audio_location(key: &Key) -> HeaderValue {
    HeaderValue::from_str(&format!("/api/v1/audio/{key}"))
        .expect("a path with 64 hex digits is a valid header value")
}

/// `Cache-Control` of a stored WAV (also on its 304): a year and immutable
/// (a key names its bytes forever), `private` when API keys are configured,
/// so that a shared cache in front never hands key-protected audio to a
/// client without a key; `public` otherwise.
fn cache_control(app: &AppState) -> HeaderValue {
    HeaderValue::from_static(if app.config.auth.api_keys.is_empty() {
        "public, max-age=31536000, immutable"
    } else {
        "private, max-age=31536000, immutable"
    })
}

fn wav_headers(app: &AppState, headers: &mut HeaderMap, key: &Key, wav: &[u8]) {
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    headers.insert(header::ETAG, etag(key));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CACHE_CONTROL, cache_control(app));
    if let Some(ms) = codec::wav::duration_ms(wav) {
        headers.insert("x-audio-duration-ms", HeaderValue::from(ms));
    }
}

/// 200 with the WAV and its cache headers.
fn wav_response(app: &AppState, conversion: Conversion) -> Response {
    let Conversion { key, wav, outcome } = conversion;
    let mut response = Response::new(Body::empty());
    wav_headers(app, response.headers_mut(), &key, &wav);
    response
        .headers_mut()
        .insert(header::LOCATION, audio_location(&key));
    mark_audio(&mut response, key, Some(outcome));
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

/// `GET|HEAD /api/v1/audio/{key}`: a stored WAV by its content address,
/// all of it or the one byte range asked for (see [`range`]).
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
        // RFC 9110 15.4.5: a 304 carries the Cache-Control of the 200.
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, cache_control(&app));
        mark_audio(&mut response, key, None);
        return Ok(response);
    }
    let total = wav.len();
    let part = match range::select(&headers, &etag(&key), total) {
        Selection::Whole => None,
        Selection::Part(part) => Some(part),
        Selection::Unsatisfiable => {
            let mut response = range::not_satisfiable(total);
            mark_audio(&mut response, key, None);
            return Ok(response);
        }
    };
    let mut response = Response::new(Body::empty());
    wav_headers(&app, response.headers_mut(), &key, &wav);
    mark_audio(&mut response, key, None);
    *response.body_mut() = match part {
        Some(part) => {
            range::make_partial(&mut response, &part, total);
            // A view into the same buffer, not a copy.
            Body::from(wav.slice(part))
        }
        None => Body::from(wav),
    };
    Ok(response)
}
