//! `POST /api/v1/convert` and `GET|HEAD /api/v1/audio/{key}`: reading the
//! upload under its limits, and answering with WAV and cache headers, the
//! WAV held whole or streamed from disk under the answer budget
//! ([`super::answer_body`]).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use opusgate_cache::{Found, Key, Outcome};

use super::answer_body::{self, Prepared};
use super::error::ApiError;
use super::form::{
    multipart_boundary, own, read_multipart, read_upload, take_field, ReadBody, AUDIO_FIELD,
};
use super::log::{key_hex, mark_audio};
use super::range::{self, Selection};
use super::AppState;
use crate::service::FoundConversion;

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
    // Whole, not a `HeaderMap` extractor (which clones the headers).
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let (head, body) = request.into_parts();
    let headers = &head.headers;
    // Every pair, unknown and repeated names too, form-decoded (nothing to
    // decode without a query, the usual request).
    let pairs = match head.uri.query() {
        None => Vec::new(),
        Some(_) => {
            Query::<Vec<(String, String)>>::try_from_uri(&head.uri)
                .map_err(|e| ApiError::bad_parameter(e.body_text()))?
                .0
        }
    };
    let query = ConvertQuery::from_pairs(pairs)?;
    let rate = parse_param::<u32>("rate", query.rate.as_deref())?;
    let channels = parse_param::<u8>("channels", query.channels.as_deref())?;
    let params = app.service.params(rate, channels)?;
    let raw = read_upload(&app, headers, body).await?;
    // A WAV on disk is read whole only in bytes reserved for it first.
    let mut reserved = None;
    let answers = &app.answers;
    let whole = |key: &Key, len| answers.admit(key, len, &mut reserved);
    let service = &app.service;
    let found = match (multipart_boundary(headers)?, raw) {
        (Some(boundary), raw) => {
            let form = &mut read_multipart(raw.into_owned(), boundary).await?;
            service
                .convert_found(take_field(form, AUDIO_FIELD)?.data, params, whole)
                .await?
        }
        // Hashed where it lies; copied only to be converted (a miss).
        (None, ReadBody::Lent { data, reservation }) => {
            let hold = |data: &[u8]| own(data, reservation);
            service
                .convert_found_lent(data, hold, params, whole)
                .await?
        }
        (None, ReadBody::Owned(upload)) => service.convert_found(upload, params, whole).await?,
    };
    let FoundConversion {
        key,
        found,
        outcome,
    } = found;
    let answer = answer_body::prepare(&app, &key, found, reserved).await?;
    Ok(wav_response(&app, key, outcome, answer))
}

/// `"<key>"`, written in place (no `format!`).
fn etag(key: &Key) -> HeaderValue {
    let mut hex = [0u8; 64];
    let mut tag = [b'"'; 66];
    tag[1..65].copy_from_slice(key_hex(key, &mut hex).as_bytes());
    HeaderValue::from_bytes(&tag).expect("64 hex digits between quotes are a valid header value")
}

/// `/api/v1/audio/<key>`, written in place (no `format!`).
fn audio_location(key: &Key) -> HeaderValue {
    const PREFIX: &[u8] = b"/api/v1/audio/";
    let mut hex = [0u8; 64];
    let mut path = [0u8; PREFIX.len() + 64];
    path[..PREFIX.len()].copy_from_slice(PREFIX);
    path[PREFIX.len()..].copy_from_slice(key_hex(key, &mut hex).as_bytes());
    HeaderValue::from_bytes(&path).expect("a path with 64 hex digits is a valid header value")
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

/// `X-Audio-Duration-Ms`.
const X_AUDIO_DURATION_MS: HeaderName = HeaderName::from_static("x-audio-duration-ms");

/// Headers of a WAV answer: the four of [`wav_headers`], the duration,
/// `Location` and `X-Cache`, room made for at once.
const WAV_ANSWER_HEADERS: usize = 7;

fn wav_headers(app: &AppState, headers: &mut HeaderMap, key: &Key, duration_ms: Option<u64>) {
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    headers.insert(header::ETAG, etag(key));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CACHE_CONTROL, cache_control(app));
    if let Some(ms) = duration_ms {
        headers.insert(X_AUDIO_DURATION_MS, HeaderValue::from(ms));
    }
}

/// 200 with the WAV and its cache headers.
fn wav_response(app: &AppState, key: Key, outcome: Outcome, answer: Prepared) -> Response {
    let mut response = Response::new(Body::empty());
    response.headers_mut().reserve(WAV_ANSWER_HEADERS);
    wav_headers(app, response.headers_mut(), &key, answer.duration_ms);
    response
        .headers_mut()
        .insert(header::LOCATION, audio_location(&key));
    mark_audio(&mut response, key, Some(outcome));
    let total = answer.total;
    *response.body_mut() = answer.body(0..total, &app.answers);
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
    // An answer in flight for the key lends its buffer; otherwise a WAV on
    // disk is read whole only in bytes reserved for it first.
    let mut reserved = None;
    let answers = &app.answers;
    let lookup = match answers.shared(&key) {
        Some(held) => Lookup::InFlight(answer_body::held_answer(held)),
        None => Lookup::Stored(
            app.service
                .audio_found(&key, |len| answers.admit(&key, len, &mut reserved))
                .await
                .ok_or_else(|| ApiError::not_found(format!("no stored audio has the key {key}")))?,
        ),
    };
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
    let total = usize::try_from(lookup.len())
        .map_err(|_| ApiError::internal("a stored WAV longer than this platform can address"))?;
    let part = match range::select(&headers, &etag(&key), total) {
        Selection::Whole => None,
        Selection::Part(part) => Some(part),
        Selection::Unsatisfiable => {
            let mut response = range::not_satisfiable(total);
            mark_audio(&mut response, key, None);
            return Ok(response);
        }
    };
    let answer = match lookup {
        Lookup::InFlight(answer) => answer,
        Lookup::Stored(found) => answer_body::prepare(&app, &key, found, reserved).await?,
    };
    let mut response = Response::new(Body::empty());
    wav_headers(&app, response.headers_mut(), &key, answer.duration_ms);
    mark_audio(&mut response, key, None);
    let part = match part {
        Some(part) => {
            range::make_partial(&mut response, &part, total);
            part
        }
        None => 0..total,
    };
    *response.body_mut() = answer.body(part.start as u64..part.end as u64, &app.answers);
    Ok(response)
}

/// What `GET /api/v1/audio/{key}` found.
enum Lookup {
    /// The buffer an answer in flight holds for the key.
    InFlight(Prepared),
    /// What the store has.
    Stored(Found),
}

impl Lookup {
    fn len(&self) -> u64 {
        match self {
            Lookup::InFlight(answer) => answer.total,
            Lookup::Stored(found) => found.len(),
        }
    }
}
