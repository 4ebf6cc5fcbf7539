//! A stand-in OpenAI-protocol backend on 127.0.0.1:0: records what it
//! receives and answers like the real API, or fails as told.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

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
        };
        let app = Router::new()
            .route("/v1/audio/transcriptions", post(transcriptions))
            .route("/v1/chat/completions", post(chat))
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

async fn transcriptions(
    State(b): State<Backend>,
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
    b.received.lock().unwrap().push(Received {
        path: "/v1/audio/transcriptions",
        headers,
        fields,
        json: None,
    });
    if let Some(failure) = b.behave().await {
        return failure;
    }
    let n = b.calls();
    Json(json!({"text": format!("transcript number {n}")})).into_response()
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
