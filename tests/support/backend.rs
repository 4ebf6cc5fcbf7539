//! A stand-in OpenAI-protocol backend on 127.0.0.1:0: records what it
//! receives and answers like the real API, or fails as told.
//!
//! `/v1/audio/transcriptions` and `/v1/audio/translations` answer in the
//! form's `response_format` (`json`, `text`, `verbose_json`, `srt`, `vtt`),
//! and with `stream=true` as server-sent events: [`STREAM_EVENTS`] events,
//! [`STREAM_SPACING`] apart, the time each was sent kept in
//! [`Backend::sent`]. `GET /v1/models` lists [`MODELS`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures::StreamExt as _;
use serde_json::{json, Value};

/// Events in a streamed answer: three text deltas and the done event.
pub const STREAM_EVENTS: usize = 4;

/// Time between two events of a streamed answer (the first is sent at once).
pub const STREAM_SPACING: Duration = Duration::from_millis(500);

/// The models `GET /v1/models` lists.
pub const MODELS: [&str; 2] = ["whisper-test", "gpt-4o-audio-test"];

/// How the backend answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Ok,
    Fail500,
    Slow(Duration),
}

/// One multipart field as received.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub file_name: Option<String>,
    pub content_type: Option<String>,
    pub data: Vec<u8>,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: &'static str,
    pub headers: HeaderMap,
    pub fields: Vec<Field>,
    pub json: Option<Value>,
}

#[derive(Clone)]
pub struct Backend {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub mode: Arc<Mutex<Mode>>,
    calls: Arc<AtomicU64>,
    pub reply: Arc<Mutex<String>>,
    /// When each event of every streamed answer was sent, in order.
    pub sent: Arc<Mutex<Vec<Instant>>>,
}

impl Backend {
    pub async fn start() -> Backend {
        let backend = Backend {
            url: String::new(),
            received: Arc::default(),
            mode: Arc::new(Mutex::new(Mode::Ok)),
            calls: Arc::default(),
            reply: Arc::new(Mutex::new(
                "原文：你好，世界\n英文：Hello, world\n日文：こんにちは、世界".into(),
            )),
            sent: Arc::default(),
        };
        let app = Router::new()
            .route("/v1/audio/transcriptions", post(transcriptions))
            .route("/v1/audio/translations", post(translations))
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .layer(DefaultBodyLimit::disable())
            .with_state(backend.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Backend {
            url: format!("http://{addr}/v1"),
            ..backend
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn last(&self) -> Received {
        self.received
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the backend received nothing")
    }

    /// The times the events of every streamed answer so far were sent.
    pub fn sent(&self) -> Vec<Instant> {
        self.sent.lock().unwrap().clone()
    }

    async fn behave(&self) -> Option<Response> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::Ok => None,
            Mode::Fail500 => Some(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({"error": {"message": "model exploded", "type": "server_error"}})),
                )
                    .into_response(),
            ),
            Mode::Slow(d) => {
                tokio::time::sleep(d).await;
                None
            }
        }
    }
}

async fn transcriptions(State(b): State<Backend>, headers: HeaderMap, form: Multipart) -> Response {
    audio(b, "/v1/audio/transcriptions", "transcript", headers, form).await
}

async fn translations(State(b): State<Backend>, headers: HeaderMap, form: Multipart) -> Response {
    audio(b, "/v1/audio/translations", "translation", headers, form).await
}

/// Both audio endpoints: records the form, then answers `"{what} number N"`
/// (N the call count) in the form's `response_format`, or as events.
async fn audio(
    b: Backend,
    path: &'static str,
    what: &str,
    headers: HeaderMap,
    mut form: Multipart,
) -> Response {
    let mut fields = Vec::new();
    while let Ok(Some(field)) = form.next_field().await {
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(str::to_owned);
        let data = field.bytes().await.unwrap_or_default().to_vec();
        fields.push(Field {
            name,
            file_name,
            content_type,
            data,
        });
    }
    let text_field = |name: &str| {
        fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| String::from_utf8_lossy(&f.data).into_owned())
    };
    let format = text_field("response_format").unwrap_or_else(|| "json".into());
    let stream = text_field("stream").is_some_and(|s| s.eq_ignore_ascii_case("true"));
    b.received.lock().unwrap().push(Received {
        path,
        headers,
        fields,
        json: None,
    });
    if let Some(failure) = b.behave().await {
        return failure;
    }
    let n = b.calls();
    let text = format!("{what} number {n}");
    if stream {
        return events(b, text);
    }
    let plain = |body: String| {
        ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
    };
    match format.as_str() {
        "text" => plain(format!("{text}\n")),
        "srt" => plain(format!("1\n00:00:00,000 --> 00:00:01,500\n{text}\n\n")),
        "vtt" => plain(format!(
            "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\n{text}\n\n"
        )),
        "verbose_json" => Json(json!({
            "task": if what == "translation" { "translate" } else { "transcribe" },
            "language": "english",
            "duration": 1.5,
            "text": text,
            "segments": [{
                "id": 0, "seek": 0, "start": 0.0, "end": 1.5, "text": text,
                "tokens": [50364, 1, 2, 3], "temperature": 0.0, "avg_logprob": -0.25,
                "compression_ratio": 1.1, "no_speech_prob": 0.01,
            }],
        }))
        .into_response(),
        _ => Json(json!({"text": text})).into_response(),
    }
}

/// `text` as server-sent events, one every [`STREAM_SPACING`], the first at
/// once: `transcript.text.delta` per word, then `transcript.text.done`.
fn events(b: Backend, text: String) -> Response {
    let words: Vec<String> = text.split(' ').map(str::to_owned).collect();
    assert_eq!(
        words.len() + 1,
        STREAM_EVENTS,
        "one event per word and one done"
    );
    let mut payloads: Vec<Value> = words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let delta = if i + 1 < words.len() {
                format!("{w} ")
            } else {
                w.clone()
            };
            json!({"type": "transcript.text.delta", "delta": delta})
        })
        .collect();
    payloads.push(json!({"type": "transcript.text.done", "text": text}));
    let sent = Arc::clone(&b.sent);
    let body = futures::stream::iter(payloads.into_iter().enumerate()).then(move |(i, event)| {
        let sent = Arc::clone(&sent);
        async move {
            if i > 0 {
                tokio::time::sleep(STREAM_SPACING).await;
            }
            sent.lock().unwrap().push(Instant::now());
            Ok::<_, std::convert::Infallible>(Bytes::from(format!("data: {event}\n\n")))
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

async fn models(State(b): State<Backend>, headers: HeaderMap) -> Response {
    b.received.lock().unwrap().push(Received {
        path: "/v1/models",
        headers,
        fields: Vec::new(),
        json: None,
    });
    if let Some(failure) = b.behave().await {
        return failure;
    }
    let data: Vec<Value> = MODELS
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 1700000000, "owned_by": "stand-in"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

async fn chat(State(b): State<Backend>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    b.received.lock().unwrap().push(Received {
        path: "/v1/chat/completions",
        headers,
        fields: Vec::new(),
        json: Some(body),
    });
    if let Some(failure) = b.behave().await {
        return failure;
    }
    let reply = b.reply.lock().unwrap().clone();
    Json(json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
    }))
    .into_response()
}
