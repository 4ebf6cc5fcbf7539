//! Proxy mode's routes: `POST /v1/audio/transcriptions` (OpenAI-compatible
//! pass-through with Opus converted to WAV) and `POST /api/v1/translate_audio`
//! (the original service's endpoint, over the backend's chat completions).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::convert::{read_body, read_multipart, FormField, AUDIO_FIELD};
use super::error::ApiError;
use super::AppState;
use crate::upstream::answer::request_key;
use crate::upstream::{RequestBuilder, Served, UpstreamError};

/// The original service's default instruction to the model.
pub const DEFAULT_USER_PROMPT: &str = "请处理下面的音频。";

/// Whether the bytes are an Ogg stream whose first packet is an OpusHead.
fn is_ogg_opus(data: &[u8]) -> bool {
    data.starts_with(b"OggS")
        && data[..data.len().min(512)]
            .windows(8)
            .any(|w| w == b"OpusHead")
}

async fn form(app: &AppState, headers: &HeaderMap, body: Body) -> Result<Vec<FormField>, ApiError> {
    app.upstream.ensure_configured()?;
    let raw = read_body(app, headers, body).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = multer::parse_boundary(content_type)
        .map_err(|_| ApiError::bad_request("this route takes a multipart/form-data body"))?;
    read_multipart(raw, boundary).await
}

fn one_field(fields: &mut Vec<FormField>, name: &str) -> Result<FormField, ApiError> {
    let mut matching = fields.iter().filter(|f| f.name == name);
    match (matching.next(), matching.next()) {
        (Some(_), None) => {
            let index = fields.iter().position(|f| f.name == name).unwrap_or(0);
            Ok(fields.remove(index))
        }
        (None, _) => Err(ApiError::bad_request(format!(
            "the form has no `{name}` field"
        ))),
        (Some(_), Some(_)) => Err(ApiError::bad_request(format!(
            "the form has more than one `{name}` field"
        ))),
    }
}

fn text(field: &FormField) -> String {
    String::from_utf8_lossy(&field.data).into_owned()
}

/// A response with the backend's body and content type.
fn with_content_type(status: StatusCode, body: Bytes, content_type: &str) -> Response {
    let mut response = (status, body).into_response();
    if let Ok(ct) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    response
}

fn answer_response(
    served: Served,
    status_override: Option<StatusCode>,
    body: Bytes,
    content_type: &str,
) -> Response {
    let status = status_override
        .or_else(|| StatusCode::from_u16(served.answer.status).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = with_content_type(status, body, content_type);
    if let Some(outcome) = served.outcome {
        response.headers_mut().insert(
            "x-upstream-cache",
            HeaderValue::from_static(outcome.as_str()),
        );
    }
    response
}

/// `POST /v1/audio/transcriptions`: the OpenAI form, with an Ogg Opus `file`
/// converted to 16 kHz mono WAV; the backend's answer comes back as it is.
pub async fn transcriptions(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut fields = form(&app, &headers, body).await?;
    let file = one_field(&mut fields, "file")?;
    let (data, file_name, content_type, identity) = if is_ogg_opus(&file.data) {
        let params = app.service.params(Some(16_000), Some(1))?;
        let conversion = app.service.convert(file.data, params).await?;
        let identity = format!("converted:{}", conversion.key).into_bytes();
        (
            conversion.wav,
            "audio.wav".to_owned(),
            "audio/wav".to_owned(),
            identity,
        )
    } else {
        let name = file.file_name.clone().unwrap_or_else(|| "audio".into());
        let ct = file
            .content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into());
        let digest = opusgate_cache::Key::derive(&file.data, b"").to_hex();
        let identity = format!("raw:{digest};name={name};type={ct}").into_bytes();
        (file.data, name, ct, identity)
    };
    let config = app.upstream.config();
    if !fields.iter().any(|f| f.name == "model") {
        fields.push(FormField {
            name: "model".into(),
            file_name: None,
            content_type: None,
            data: Bytes::from(config.model.clone()),
        });
    }
    let deterministic = fields
        .iter()
        .filter(|f| f.name == "temperature")
        .all(|f| text(f).trim().parse::<f64>().is_ok_and(|t| t == 0.0));
    let mut parts: Vec<(String, Vec<u8>)> = fields
        .iter()
        .map(|f| (f.name.clone(), f.data.to_vec()))
        .collect();
    parts.push(("file".into(), identity));
    parts.push((
        "backend".into(),
        app.upstream.url("/audio/transcriptions").into_bytes(),
    ));
    let key = deterministic.then(|| request_key("transcriptions", parts));

    let request: RequestBuilder = Arc::new(move |client, base| {
        let mut form = reqwest::multipart::Form::new();
        for f in &fields {
            let mut part = reqwest::multipart::Part::bytes(f.data.to_vec());
            if let Some(name) = &f.file_name {
                part = part.file_name(name.clone());
            }
            form = form.part(f.name.clone(), part);
        }
        let file = reqwest::multipart::Part::bytes(data.to_vec()).file_name(file_name.clone());
        let file = match file.mime_str(&content_type) {
            Ok(part) => part,
            Err(_) => reqwest::multipart::Part::bytes(data.to_vec()).file_name(file_name.clone()),
        };
        client
            .post(format!(
                "{}/audio/transcriptions",
                base.trim_end_matches('/')
            ))
            .multipart(form.part("file", file))
    });
    match app.upstream.serve(key, request).await {
        Ok(served) => {
            let body = served.answer.body.clone();
            let ct = served.answer.content_type.clone();
            Ok(answer_response(served, None, body, &ct))
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

/// Target languages from repeated fields or one comma-separated value.
fn languages(fields: &[FormField], default: &[String]) -> Vec<String> {
    let given: Vec<String> = fields
        .iter()
        .filter(|f| f.name == "target_languages" || f.name == "target_languages[]")
        .flat_map(|f| {
            text(f)
                .split([',', '，'])
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        })
        .collect();
    if given.is_empty() {
        default.to_vec()
    } else {
        given
    }
}

/// Splits each line of the model's reply at its first `:` or `：`.
pub fn parse_reply(reply: &str) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert("raw_text".into(), Value::String(reply.to_owned()));
    for line in reply.lines() {
        let Some(at) = line.find([':', '：']) else {
            continue;
        };
        let key = line[..at].trim().trim_start_matches(['-', '*', ' ']).trim();
        let sep_len = line[at..].chars().next().map_or(1, char::len_utf8);
        let value = line[at + sep_len..].trim();
        if !key.is_empty() {
            data.insert(key.to_owned(), Value::String(value.to_owned()));
        }
    }
    data
}

/// `POST /api/v1/translate_audio`: transcribe and translate through the
/// backend's chat completions with audio input.
pub async fn translate_audio(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut fields = form(&app, &headers, body).await?;
    let audio = one_field(&mut fields, AUDIO_FIELD)?;
    let config = app.upstream.config();
    let prompt = fields
        .iter()
        .find(|f| f.name == "user_prompt")
        .map(text)
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_USER_PROMPT.to_owned());
    let languages = languages(&fields, &config.target_languages);
    let params = app.service.params(Some(16_000), Some(1))?;
    let conversion = app.service.convert(audio.data, params).await?;

    let format: Vec<String> = std::iter::once("原文：<原文转写>".to_owned())
        .chain(languages.iter().map(|l| format!("{l}：<{l}翻译>")))
        .collect();
    let system = config
        .system_prompt
        .replace("{languages}", &languages.join("、"))
        .replace("{format}", &format.join("\n"));
    let model = config.model.clone();
    let wav_base64 = base64::engine::general_purpose::STANDARD.encode(&conversion.wav);
    let payload = json!({
        "model": model,
        "temperature": 0,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": [
                {"type": "text", "text": prompt},
                {"type": "input_audio", "input_audio": {"data": wav_base64, "format": "wav"}},
            ]},
        ],
    });
    let key = request_key(
        "translate_audio",
        vec![
            ("audio".into(), conversion.key.to_hex().into_bytes()),
            ("prompt".into(), prompt.into_bytes()),
            ("system".into(), system.into_bytes()),
            ("model".into(), model.into_bytes()),
            (
                "backend".into(),
                app.upstream.url("/chat/completions").into_bytes(),
            ),
        ],
    );
    let payload = Arc::new(payload);
    let request: RequestBuilder = Arc::new(move |client, base| {
        client
            .post(format!("{}/chat/completions", base.trim_end_matches('/')))
            .json(&*payload)
    });
    let served = app.upstream.serve(Some(key), request).await?;
    let reply: Value = serde_json::from_slice(&served.answer.body)
        .map_err(|e| ApiError::from(UpstreamError::BadAnswer(format!("not JSON: {e}"))))?;
    let content = reply["choices"][0]["message"]["content"]
        .as_str()
        .ok_or_else(|| {
            ApiError::from(UpstreamError::BadAnswer(
                "no choices[0].message.content".into(),
            ))
        })?;
    let answer = json!({
        "status": "success",
        "duration_seconds": (served.answer.backend_seconds * 1000.0).round() / 1000.0,
        "data": parse_reply(content),
    });
    let body = Bytes::from(answer.to_string());
    Ok(answer_response(
        served,
        Some(StatusCode::OK),
        body,
        "application/json",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_split_at_the_first_colon_of_either_width() {
        let data =
            parse_reply("原文：你好：世界\n英文: Hello: world\n\n日文：こんにちは\nno separator");
        assert_eq!(data["原文"], "你好：世界");
        assert_eq!(data["英文"], "Hello: world");
        assert_eq!(data["日文"], "こんにちは");
        assert_eq!(data.len(), 4, "{data:?}");
        assert!(data["raw_text"].as_str().unwrap().starts_with("原文"));
    }

    #[test]
    fn languages_come_repeated_or_comma_separated() {
        let f = |v: &str| FormField {
            name: "target_languages".into(),
            file_name: None,
            content_type: None,
            data: Bytes::from(v.to_owned()),
        };
        let default = vec!["英文".to_owned()];
        assert_eq!(
            languages(&[f("英文"), f("日文")], &default),
            ["英文", "日文"]
        );
        assert_eq!(languages(&[f("英文, 日文")], &default), ["英文", "日文"]);
        assert_eq!(languages(&[], &default), ["英文"]);
    }
}
