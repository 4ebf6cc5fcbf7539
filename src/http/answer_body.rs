//! Where a WAV answer's bytes come from, under the answer budget
//! ([`super::answers`]): a whole value held in memory, or the verified disk
//! record streamed in chunks.
//!
//! [`prepare`] turns what the store found into a [`Source`]: a value in
//! memory is held whole if the budget has room (or an answer in flight
//! holds its key already), and a record on disk is read whole only if its
//! length was reserved in the budget first ([`AnswerBudget::admit`], asked
//! by the store before the read, so that concurrent answers cannot all
//! decide to read whole at once); otherwise the answer is streamed from
//! its record file ([`opusgate_cache::ValueReader`], checked whole before the first
//! byte goes out, so a damaged record is deleted, counted in
//! `corrupt_records`, and never served). Only a value with no disk record
//! (the disk tier off, a value larger than it, a failed write) waits for
//! room, and is refused with 503 `overloaded` if none comes.
//!
//! A streamed answer reads one chunk at a time on tokio's blocking pool,
//! each counted in the budget from its read until the server has written
//! it, with at most [`WINDOW`] of one answer's chunks alive at once: a slow
//! reader holds about two chunks, whatever the WAV's size. A read that
//! fails mid-answer ends the body with an error, and the server aborts the
//! connection (the client sees fewer bytes than `Content-Length`).

use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use opusgate_cache::{Found, Key, ValueReader};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::answers::{AnswerBudget, Grant, HeldValue, ANSWER_WAIT};
use super::error::ApiError;
use super::AppState;
use crate::codec::wav;
use crate::service::RETRY_AFTER_SECONDS;

/// Chunks of one streamed answer alive at once: one being written while
/// the next is read.
pub const WINDOW: usize = 2;

/// An answer's bytes.
pub enum Source {
    /// A whole value, held in the budget.
    Held(Arc<HeldValue>),
    /// A verified disk record, streamed in chunks.
    File(ValueReader),
}

/// An answer ready to be sent: its bytes, total length and the duration
/// its WAV header says.
pub struct Prepared {
    /// Where the bytes come from.
    pub source: Source,
    /// The WAV's length in bytes.
    pub total: u64,
    /// `X-Audio-Duration-Ms`, if the WAV header is readable.
    pub duration_ms: Option<u64>,
}

/// 503 `overloaded`: the answer could neither be held in the budget nor
/// streamed from disk.
fn over_answer_budget() -> ApiError {
    ApiError {
        retry_after: Some(RETRY_AFTER_SECONDS),
        ..ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!(
                "too many answers are being sent at once (limits.max_inflight_answer_bytes); retry after {RETRY_AFTER_SECONDS} s"
            ),
        )
    }
}

/// Holds the answer of `key` whole (in the bytes `reserved` for it when
/// the store asked [`AnswerBudget::admit`]) or sets it up to stream from
/// disk (see the module comment).
pub async fn prepare(
    app: &AppState,
    key: &Key,
    found: Found,
    reserved: Option<Grant>,
) -> Result<Prepared, ApiError> {
    let answers = &app.answers;
    let value = match found {
        Found::File(reader) => return Ok(streamed(answers, reader)),
        Found::Value(value) => value,
    };
    let value = match answers.hold(*key, value, reserved) {
        Ok(held) => return Ok(held_answer(held)),
        Err(value) => value,
    };
    if let Some(reader) = app.service.audio_file(key).await {
        drop(value);
        return Ok(streamed(answers, reader));
    }
    match answers.hold_within(*key, value, ANSWER_WAIT).await {
        Ok(held) => Ok(held_answer(held)),
        Err(_) => {
            answers.count_rejected();
            Err(over_answer_budget())
        }
    }
}

/// The answer of a key an answer in flight holds already.
pub fn held_answer(held: Arc<HeldValue>) -> Prepared {
    Prepared {
        total: held.value().len() as u64,
        duration_ms: wav::duration_ms(held.value()),
        source: Source::Held(held),
    }
}

/// A streamed answer, with the duration its WAV header says.
fn streamed(answers: &AnswerBudget, reader: ValueReader) -> Prepared {
    answers.count_streamed();
    Prepared {
        total: reader.len(),
        duration_ms: wav::duration_ms(reader.head()),
        source: Source::File(reader),
    }
}

impl Prepared {
    /// The response body of `part` (all of it: `0..total`), checked by the
    /// caller to be within the answer.
    pub fn body(self, part: Range<u64>, answers: &AnswerBudget) -> Body {
        match self.source {
            Source::Held(held) => {
                let range = usize::try_from(part.start).unwrap_or(usize::MAX)
                    ..usize::try_from(part.end).unwrap_or(usize::MAX);
                // A view into the held buffer, not a copy.
                held.view(range).map(Body::from).unwrap_or_default()
            }
            Source::File(reader) => Body::new(FileBody::new(reader, part, answers.clone())),
        }
    }
}

/// A range of a verified disk record, read chunk by chunk as the server
/// asks for it; its exact length is its size hint.
struct FileBody {
    chunks: BoxStream<'static, io::Result<Bytes>>,
    remaining: u64,
}

/// What the chunk reader carries from one chunk to the next.
struct Cursor {
    reader: ValueReader,
    next: u64,
    end: u64,
    budget: AnswerBudget,
    window: Arc<Semaphore>,
}

/// One chunk's bytes, its share of the budget and its place in the window,
/// all given back when the server drops it.
struct Chunk {
    data: Vec<u8>,
    _grant: Grant,
    _window: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl FileBody {
    fn new(reader: ValueReader, part: Range<u64>, budget: AnswerBudget) -> FileBody {
        let cursor = Cursor {
            reader,
            next: part.start,
            end: part.end,
            budget,
            window: Arc::new(Semaphore::new(WINDOW)),
        };
        FileBody {
            chunks: futures::stream::unfold(Some(cursor), next_chunk).boxed(),
            remaining: part.end.saturating_sub(part.start),
        }
    }
}

/// Reads the next chunk: a place in the window, then room in the budget,
/// then the bytes, on a blocking thread. After an error, the stream ends.
async fn next_chunk(cursor: Option<Cursor>) -> Option<(io::Result<Bytes>, Option<Cursor>)> {
    let cursor = cursor?;
    if cursor.next >= cursor.end {
        return None;
    }
    let len = (cursor.end - cursor.next).min(cursor.budget.chunk_bytes());
    let window = Arc::clone(&cursor.window).acquire_owned().await.ok()?;
    let grant = cursor.budget.take(len).await;
    let Cursor {
        mut reader,
        next,
        end,
        budget,
        window: slots,
    } = cursor;
    let read = tokio::task::spawn_blocking(move || {
        let mut data = vec![0u8; len as usize];
        let read = reader.read_exact_at(next, &mut data);
        (reader, read.map(|()| data))
    })
    .await;
    let error = match read {
        Ok((reader, Ok(data))) => {
            let chunk = Bytes::from_owner(Chunk {
                data,
                _grant: grant,
                _window: window,
            });
            let cursor = Cursor {
                reader,
                next: next + len,
                end,
                budget,
                window: slots,
            };
            return Some((Ok(chunk), Some(cursor)));
        }
        Ok((_, Err(error))) => error,
        Err(error) => io::Error::other(error),
    };
    tracing::warn!(%error, offset = next, "reading a stored WAV from disk failed mid-answer; the connection is aborted");
    Some((Err(error), None))
}

impl HttpBody for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match ready!(self.chunks.poll_next_unpin(cx)) {
            Some(Ok(chunk)) => {
                self.remaining = self.remaining.saturating_sub(chunk.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Some(Err(error)) => Poll::Ready(Some(Err(error))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
