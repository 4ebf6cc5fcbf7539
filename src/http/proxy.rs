//! Proxy mode's routes: `POST /v1/audio/transcriptions` and `POST
//! /v1/audio/translations` (OpenAI-compatible pass-through with uploads
//! converted to WAV as `upstream.convert` says), `GET /v1/models` (the backend's list), and `POST
//! /api/v1/translate_audio` (the original service's endpoint, over the
//! backend's chat completions).
//!
//! Handlers here parse the form and shape the answer; what is sent to the
//! backend, and how it is stored or streamed, is [`crate::upstream`]'s.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use opusgate_cache::{Key, Outcome};
use serde_json::json;

use super::error::ApiError;
use super::form::{read_form, take_field, FormField, AUDIO_FIELD};
use super::log::{mark_answer, mark_audio};
use super::AppState;
use crate::codec;
use crate::config::UpstreamConvert;
use crate::upstream::openai::{Audio, Endpoint, Field};
use crate::upstream::{Reply, Served, UpstreamError};

/// Whether `upload` is converted to WAV before it is forwarded, by the
/// format detected in its bytes and `upstream.convert`: under `none`
/// nothing is looked at; under `all` and `opus` an upload in no accepted
/// format is refused (415 `unsupported_format`), never forwarded.
fn converts(mode: UpstreamConvert, upload: &[u8]) -> Result<bool, ApiError> {
    if !mode.detects() {
        return Ok(false);
    }
    Ok(mode.converts(codec::detect(upload)?))
}

/// The form of a proxy route: 503 `upstream_not_configured` before the body
/// is read when proxy mode is off.
async fn form(app: &AppState, headers: &HeaderMap, body: Body) -> Result<Vec<FormField>, ApiError> {
    app.upstream.ensure_configured()?;
    read_form(app, headers, body).await
}

/// A response with the given body and content type.
fn with_content_type(status: StatusCode, body: Bytes, content_type: &str) -> Response {
    let mut response = (status, body).into_response();
    if let Ok(ct) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    response
}

/// `status` (the backend's own when `None`) with `body`, and the answer
/// store's outcome when the answer went through it.
fn answer_response(
    served: &Served,
    status: Option<StatusCode>,
    body: Bytes,
    content_type: &str,
) -> Response {
    let status = status
        .or_else(|| StatusCode::from_u16(served.answer.status).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = with_content_type(status, body, content_type);
    if let Some(outcome) = served.outcome {
        mark_answer(&mut response, outcome);
    }
    response
}

/// A backend reply as the client's answer: a whole answer with the answer
/// store's outcome, or a stream passed through chunk by chunk; a backend's
/// refusal handed back as it is; anything else as opusgate's error.
fn pass_through(result: Result<Reply, UpstreamError>) -> Result<Response, ApiError> {
    match result {
        Ok(Reply::Whole(served)) => {
            let body = served.answer.body.clone();
            Ok(answer_response(
                &served,
                None,
                body,
                &served.answer.content_type,
            ))
        }
        Ok(Reply::Stream(streamed)) => {
            let status = StatusCode::from_u16(streamed.status).unwrap_or(StatusCode::OK);
            let mut response = Response::new(Body::from_stream(streamed.body));
            *response.status_mut() = status;
            if let Ok(ct) = HeaderValue::from_str(&streamed.content_type) {
                response.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            Ok(response)
        }
        // The backend's own refusal goes back to the client as it is.
        Err(UpstreamError::Status {
            status,
            content_type,
            body,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            Ok(with_content_type(status, body, &content_type))
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /v1/audio/transcriptions`: see [`audio_endpoint`].
pub async fn transcriptions(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    audio_endpoint(&app, Endpoint::Transcriptions, &headers, body).await
}

/// `POST /v1/audio/translations`: see [`audio_endpoint`].
pub async fn translations(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    audio_endpoint(&app, Endpoint::Translations, &headers, body).await
}

/// The OpenAI form, with its `file` converted to 16 kHz mono WAV (sent as
/// `audio.wav`) when `upstream.convert` says so ([`converts`]), else
/// forwarded as it came; the backend's answer comes back as it is (a
/// stream as it comes). The answer store keys a converted upload by its
/// conversion's key and another by its own bytes, name and type, so the two
/// never share an answer. A converted upload's key and conversion outcome
/// are marked for the log.
async fn audio_endpoint(
    app: &AppState,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut fields = form(app, headers, body).await?;
    let file = take_field(&mut fields, "file")?;
    let mut converted: Option<(Key, Outcome)> = None;
    let audio = if converts(app.config.upstream.convert, &file.data)? {
        let params = app.service.params(Some(16_000), Some(1))?;
        let conversion = app.service.convert(file.data, params).await?;
        converted = Some((conversion.key, conversion.outcome));
        Audio::Converted {
            key: conversion.key,
            wav: conversion.wav,
        }
    } else {
        Audio::Passthrough {
            data: file.data,
            file_name: file.file_name,
            content_type: file.content_type,
        }
    };
    let fields = fields
        .into_iter()
        .map(|f| Field {
            name: f.name,
            file_name: f.file_name,
            data: f.data,
        })
        .collect();
    let result = pass_through(app.upstream.transcribe(endpoint, fields, audio).await);
    // The log shows the audio's key whatever the backend did.
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    if let Some((key, outcome)) = converted {
        mark_audio(&mut response, key, Some(outcome));
    }
    Ok(response)
}

/// `GET /v1/models`: the backend's model list, asked with opusgate's backend
/// key, handed back as it is (never stored).
pub async fn models(State(app): State<AppState>) -> Result<Response, ApiError> {
    app.upstream.ensure_configured()?;
    pass_through(app.upstream.models().await)
}

/// Target languages from repeated fields or one comma-separated value
/// (empty when the form names none).
fn languages(fields: &[FormField]) -> Vec<String> {
    fields
        .iter()
        .filter(|f| f.name == "target_languages" || f.name == "target_languages[]")
        .flat_map(|f| {
            f.text()
                .split([',', '，'])
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `POST /api/v1/translate_audio`: transcribe and translate through the
/// backend's chat completions with audio input.
pub async fn translate_audio(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut fields = form(&app, &headers, body).await?;
    let audio = take_field(&mut fields, AUDIO_FIELD)?;
    let prompt = fields
        .iter()
        .find(|f| f.name == "user_prompt")
        .map(FormField::text);
    let languages = languages(&fields);
    let params = app.service.params(Some(16_000), Some(1))?;
    let conversion = app.service.convert(audio.data, params).await?;
    let result = app
        .upstream
        .translate(conversion.key, &conversion.wav, prompt, &languages)
        .await;
    // The log shows the audio's key whatever the backend did.
    let mut response = match result {
        Ok(translation) => {
            let served = &translation.served;
            let answer = json!({
                "status": "success",
                "duration_seconds": (served.answer.backend_seconds * 1000.0).round() / 1000.0,
                "data": translation.data,
            });
            let body = Bytes::from(answer.to_string());
            answer_response(served, Some(StatusCode::OK), body, "application/json")
        }
        Err(e) => ApiError::from(e).into_response(),
    };
    mark_audio(&mut response, conversion.key, Some(conversion.outcome));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_come_repeated_or_comma_separated() {
        let f = |v: &str| FormField {
            name: "target_languages".into(),
            file_name: None,
            content_type: None,
            data: Bytes::from(v.to_owned()),
        };
        assert_eq!(languages(&[f("英文"), f("日文")]), ["英文", "日文"]);
        assert_eq!(languages(&[f("英文, 日文")]), ["英文", "日文"]);
        assert!(languages(&[]).is_empty());
    }
}
