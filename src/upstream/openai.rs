//! The OpenAI wire protocol of proxy mode: the calls opusgate makes to the
//! backend (`POST {url}/audio/transcriptions` and `POST
//! {url}/audio/translations` with the client's form, `GET {url}/models`,
//! `POST {url}/chat/completions` with audio input for `translate_audio`),
//! their payloads, the content address of each request, and reading the
//! model's reply. The transport (permits, retries, the answer store,
//! streams) is [`Upstream`]'s.

use base64::Engine as _;
use bytes::Bytes;
use opusgate_cache::Key;
use serde_json::{json, Map, Value};

use super::answer::request_key;
use super::{Reply, Served, Upstream, UpstreamError, Via};
use crate::config::UpstreamConfig;

/// The backend path of chat completions, after `upstream.url`.
pub const CHAT_PATH: &str = "/chat/completions";

/// The backend path of the model list, after `upstream.url`.
pub const MODELS_PATH: &str = "/models";

/// The two audio endpoints that take OpenAI's form: the same request, the
/// same handling, their own backend path and their own request keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/audio/transcriptions`: text in the audio's language.
    Transcriptions,
    /// `/audio/translations`: text in English.
    Translations,
}

impl Endpoint {
    /// The backend path, after `upstream.url`.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Transcriptions => "/audio/transcriptions",
            Endpoint::Translations => "/audio/translations",
        }
    }

    /// The route name in its request keys.
    fn route(self) -> &'static str {
        match self {
            Endpoint::Transcriptions => "transcriptions",
            Endpoint::Translations => "translations",
        }
    }
}

/// The original service's default instruction to the model.
pub const DEFAULT_USER_PROMPT: &str = "请处理下面的音频。";

/// A form field forwarded to the backend as the client sent it.
#[derive(Debug, Clone)]
pub struct Field {
    /// The field name.
    pub name: String,
    /// The file name, for file fields.
    pub file_name: Option<String>,
    /// The field's bytes.
    pub data: Bytes,
}

/// The audio of a transcription request.
#[derive(Debug, Clone)]
pub enum Audio {
    /// Converted by opusgate to 16 kHz mono WAV: sent as `audio.wav`, and
    /// known to the request key by its content address.
    Converted {
        /// The conversion's content address.
        key: Key,
        /// The WAV.
        wav: Bytes,
    },
    /// Any other upload, forwarded as it came.
    Passthrough {
        /// The bytes.
        data: Bytes,
        /// The client's file name.
        file_name: Option<String>,
        /// The client's Content-Type for the part.
        content_type: Option<String>,
    },
}

/// The file part of a multipart request.
#[derive(Debug, Clone)]
pub(crate) struct FilePart {
    data: Bytes,
    file_name: String,
    content_type: String,
}

/// A backend request, complete but for authentication; built again for
/// each retry.
#[derive(Debug, Clone)]
pub(crate) enum Request {
    /// A multipart form (transcriptions, translations).
    Form {
        url: String,
        fields: Vec<Field>,
        file: FilePart,
    },
    /// A JSON body (chat completions).
    Json { url: String, body: Value },
    /// A GET (the model list).
    Get { url: String },
}

impl Request {
    /// The reqwest request for one attempt.
    pub(crate) fn build(&self, client: &reqwest::Client) -> reqwest::RequestBuilder {
        match self {
            Request::Form { url, fields, file } => {
                let mut form = reqwest::multipart::Form::new();
                for f in fields {
                    let mut part = reqwest::multipart::Part::bytes(f.data.to_vec());
                    if let Some(name) = &f.file_name {
                        part = part.file_name(name.clone());
                    }
                    form = form.part(f.name.clone(), part);
                }
                let part = || {
                    reqwest::multipart::Part::bytes(file.data.to_vec())
                        .file_name(file.file_name.clone())
                };
                // A Content-Type that is not a MIME type is not forwarded.
                let part = part()
                    .mime_str(&file.content_type)
                    .unwrap_or_else(|_| part());
                client.post(url).multipart(form.part("file", part))
            }
            Request::Json { url, body } => client.post(url).json(body),
            Request::Get { url } => client.get(url),
        }
    }
}

/// A `translate_audio` answer: the model's reply split into fields.
#[derive(Debug, Clone)]
pub struct Translation {
    /// `raw_text` and one entry per `name: value` line of the reply.
    pub data: Map<String, Value>,
    /// How the answer was served (store outcome, backend time).
    pub served: Served,
}

/// Whether the form asks for a stream (`stream=true`).
fn asks_for_stream(fields: &[Field]) -> bool {
    fields.iter().filter(|f| f.name == "stream").any(|f| {
        let value = String::from_utf8_lossy(&f.data);
        let value = value.trim();
        value.eq_ignore_ascii_case("true") || value == "1"
    })
}

/// Whether the form is deterministic: no `temperature`, or 0.
fn deterministic(fields: &[Field]) -> bool {
    fields.iter().filter(|f| f.name == "temperature").all(|f| {
        String::from_utf8_lossy(&f.data)
            .trim()
            .parse::<f64>()
            .is_ok_and(|t| t == 0.0)
    })
}

impl Upstream {
    /// `POST /audio/transcriptions` or `/audio/translations` (`endpoint`)
    /// with the client's `fields` (`upstream.transcription_model` added when
    /// they name no `model`) and `audio` as `file`. A request that asks for a
    /// stream (`stream=true`) is passed straight through; otherwise the
    /// answer is stored when the request is deterministic (no
    /// `temperature`, or 0).
    pub async fn transcribe(
        &self,
        endpoint: Endpoint,
        mut fields: Vec<Field>,
        audio: Audio,
    ) -> Result<Reply, UpstreamError> {
        let config = self.config();
        if !fields.iter().any(|f| f.name == "model") {
            fields.push(Field {
                name: "model".into(),
                file_name: None,
                data: Bytes::from(config.effective_transcription_model().to_owned()),
            });
        }
        let (file, identity) = match audio {
            Audio::Converted { key, wav } => (
                FilePart {
                    data: wav,
                    file_name: "audio.wav".into(),
                    content_type: "audio/wav".into(),
                },
                format!("converted:{key}"),
            ),
            Audio::Passthrough {
                data,
                file_name,
                content_type,
            } => {
                let name = file_name.unwrap_or_else(|| "audio".into());
                let ct = content_type.unwrap_or_else(|| "application/octet-stream".into());
                let digest = Key::derive(&data, b"").to_hex();
                let identity = format!("raw:{digest};name={name};type={ct}");
                let part = FilePart {
                    data,
                    file_name: name,
                    content_type: ct,
                };
                (part, identity)
            }
        };
        let url = self.url(endpoint.path());
        let via = if asks_for_stream(&fields) {
            Via::Stream
        } else if deterministic(&fields) {
            let mut parts: Vec<(String, Vec<u8>)> = fields
                .iter()
                .map(|f| (f.name.clone(), f.data.to_vec()))
                .collect();
            parts.push(("file".into(), identity.into_bytes()));
            parts.push(("backend".into(), url.clone().into_bytes()));
            Via::Store(request_key(endpoint.route(), parts))
        } else {
            Via::Direct
        };
        self.serve(via, Request::Form { url, fields, file }).await
    }

    /// `GET /models` with opusgate's backend key; never stored (the list is
    /// small, and must show what the backend serves now).
    pub async fn models(&self) -> Result<Reply, UpstreamError> {
        let url = self.url(MODELS_PATH);
        self.serve(Via::Direct, Request::Get { url }).await
    }

    /// `translate_audio` over `POST /chat/completions` with
    /// `upstream.chat_model`: the converted `wav`
    /// (content address `wav_key`) as audio input, `prompt` (the default
    /// instruction when empty) as the user's text, and a system message
    /// asking for the transcript and one line per language of `languages`
    /// (`upstream.target_languages` when empty). Always stored (temperature 0).
    pub async fn translate(
        &self,
        wav_key: Key,
        wav: &[u8],
        prompt: Option<String>,
        languages: &[String],
    ) -> Result<Translation, UpstreamError> {
        let config = self.config();
        let prompt = prompt
            .filter(|p| !p.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_USER_PROMPT.to_owned());
        let languages = if languages.is_empty() {
            &config.target_languages[..]
        } else {
            languages
        };
        let system = system_prompt(config, languages);
        let model = config.chat_model.clone();
        let url = self.url(CHAT_PATH);
        let key = request_key(
            "translate_audio",
            vec![
                ("audio".into(), wav_key.to_hex().into_bytes()),
                ("prompt".into(), prompt.clone().into_bytes()),
                ("system".into(), system.clone().into_bytes()),
                ("model".into(), model.clone().into_bytes()),
                ("backend".into(), url.clone().into_bytes()),
            ],
        );
        let wav_base64 = base64::engine::general_purpose::STANDARD.encode(wav);
        let body = json!({
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
        let served = self
            .serve(Via::Store(key), Request::Json { url, body })
            .await?
            .into_served()
            .await?;
        let reply: Value = serde_json::from_slice(&served.answer.body)
            .map_err(|e| UpstreamError::BadAnswer(format!("not JSON: {e}")))?;
        let content = reply["choices"][0]["message"]["content"]
            .as_str()
            .ok_or_else(|| UpstreamError::BadAnswer("no choices[0].message.content".into()))?;
        Ok(Translation {
            data: parse_reply(content),
            served,
        })
    }
}

/// `upstream.system_prompt` with `{languages}` and `{format}` filled in.
fn system_prompt(config: &UpstreamConfig, languages: &[String]) -> String {
    let format: Vec<String> = std::iter::once("原文：<原文转写>".to_owned())
        .chain(languages.iter().map(|l| format!("{l}：<{l}翻译>")))
        .collect();
    config
        .system_prompt
        .replace("{languages}", &languages.join("、"))
        .replace("{format}", &format.join("\n"))
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
    fn forms_ask_for_streams_and_sampling_by_their_fields() {
        let f = |name: &str, value: &str| Field {
            name: name.into(),
            file_name: None,
            data: Bytes::from(value.to_owned()),
        };
        assert!(asks_for_stream(&[f("stream", "true")]));
        assert!(asks_for_stream(&[f("stream", " True ")]));
        assert!(!asks_for_stream(&[f("stream", "false")]));
        assert!(!asks_for_stream(&[f("model", "true")]));
        assert!(deterministic(&[]));
        assert!(deterministic(&[f("temperature", "0")]));
        assert!(deterministic(&[f("temperature", "0.0")]));
        assert!(!deterministic(&[f("temperature", "0.2")]));
        assert!(!deterministic(&[f("temperature", "hot")]));
        assert_ne!(
            Endpoint::Transcriptions.route(),
            Endpoint::Translations.route()
        );
    }

    #[test]
    fn the_system_prompt_lists_the_languages_and_their_lines() {
        let config = UpstreamConfig {
            system_prompt: "[{languages}]\n{format}".into(),
            ..UpstreamConfig::default()
        };
        let prompt = system_prompt(&config, &["英文".into(), "日文".into()]);
        assert_eq!(
            prompt,
            "[英文、日文]\n原文：<原文转写>\n英文：<英文翻译>\n日文：<日文翻译>"
        );
    }
}
