//! Observability routes: `/api/v1/stats`, the original service's
//! `/api/v1/performance` and `/api/v1/concurrent-status`, `/metrics`, and
//! the health endpoints (which sit outside auth and every limit).

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::codec::SUPPORTED_RATES;
use crate::stats::{self, round2};
use opusgate_cache::{SharedTier, StoreStats};

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| round2(d.as_secs_f64()))
        .unwrap_or(0.0)
}

/// `GET /api/v1/stats`: cache and conversion figures.
pub async fn stats(State(app): State<AppState>) -> Json<Value> {
    Json(stats_snapshot(&app).await)
}

/// The object `GET /api/v1/stats` serves, as of now; also each point of
/// the stats history ([`crate::console::history`]).
pub async fn stats_snapshot(app: &AppState) -> Value {
    // Makes moka's entry and byte figures exact before reading them.
    app.service.store().run_pending_tasks().await;
    let s = app.service.store().stats();
    let (lookups, hit_rate) = lookups_and_hit_rate(&s);
    let service = &app.service;
    let mut conversions = json!(service
        .conversions()
        .snapshot(service.max_concurrent(), service.workers()));
    if let Some(c) = conversions.as_object_mut() {
        // The wait queue's size, next to `queued`.
        c.insert("max_queued".into(), json!(service.max_queued()));
    }
    json!({
        "cache": {
            "lookups": lookups,
            "hits_memory": s.hits_memory,
            "hits_disk": s.hits_disk,
            "hits_shared": s.hits_shared,
            "coalesced": s.coalesced,
            "coalesced_remote": s.coalesced_remote,
            "misses": s.misses,
            "hit_rate": hit_rate,
            "memory": {
                "entries": s.memory.entries,
                "bytes": s.memory.bytes,
                "capacity_bytes": s.memory.capacity_bytes,
            },
            "disk": {
                "enabled": s.disk_enabled,
                "entries": s.disk.entries,
                "bytes": s.disk.bytes,
                "capacity_bytes": s.disk.capacity_bytes,
                "size_on_disk_bytes": s.disk_size_on_disk_bytes,
            },
            "evictions": {"memory": s.evictions_memory, "disk": s.evictions_disk},
            "corrupt_records": s.corrupt_records,
            "disk_write_failures": s.disk_write_failures,
            "computations_started": s.computations_started,
            "computations_failed": s.computations_failed,
            "in_flight": s.in_flight,
        },
        "conversions": conversions,
        "upstream": upstream_stats(app),
        "shared": shared_stats(app),
        "memory": memory_stats(app),
        "uptime_seconds": app.service.requests().uptime().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
    })
}

/// The upload budget (`limits.max_inflight_upload_bytes`): its size, the
/// bytes of request bodies held now and at most, and the uploads refused;
/// the answer budget (`limits.max_inflight_answer_bytes`): its size, the
/// bytes of WAV held by answers being sent now and at most, the answers
/// streamed from disk for it and those refused.
fn memory_stats(app: &AppState) -> Value {
    let b = app.uploads.snapshot();
    let a = app.answers.snapshot();
    json!({
        "upload_budget_bytes": b.budget_bytes,
        "inflight_upload_bytes": b.inflight_bytes,
        "inflight_upload_bytes_peak": b.peak_bytes,
        "rejected_over_budget": b.rejected,
        "answer_budget_bytes": a.budget_bytes,
        "inflight_answer_bytes": a.inflight_bytes,
        "inflight_answer_bytes_peak": a.peak_bytes,
        "answers_streamed": a.streamed,
        "answers_rejected_over_budget": a.rejected,
    })
}

/// Lookups of a store (every `get_or_compute` call counts once) and the
/// share of them answered without computing here, to 4 decimals.
fn lookups_and_hit_rate(s: &StoreStats) -> (u64, f64) {
    let hits = s.hits_memory + s.hits_disk + s.hits_shared + s.coalesced + s.coalesced_remote;
    let lookups = hits + s.misses;
    let rate = if lookups == 0 {
        0.0
    } else {
        hits as f64 / lookups as f64
    };
    (lookups, (rate * 10_000.0).round() / 10_000.0)
}

fn upstream_stats(app: &AppState) -> Value {
    let calls = app.upstream.snapshot();
    let s = app.upstream.store().stats();
    let (lookups, hit_rate) = lookups_and_hit_rate(&s);
    json!({
        "configured": calls.configured,
        "calls": calls.calls,
        "errors": calls.errors,
        "avg_ms": calls.avg_ms,
        "cache": {
            "lookups": lookups,
            "hits_memory": s.hits_memory,
            "hits_disk": s.hits_disk,
            "hits_shared": s.hits_shared,
            "coalesced": s.coalesced,
            "coalesced_remote": s.coalesced_remote,
            "misses": s.misses,
            "hit_rate": hit_rate,
            "memory": {"entries": s.memory.entries, "bytes": s.memory.bytes},
            "disk": {
                "enabled": s.disk_enabled,
                "entries": s.disk.entries,
                "bytes": s.disk.bytes,
                "capacity_bytes": s.disk.capacity_bytes,
            },
        },
    })
}

/// The shared tier's state and counters (all zero and `enabled: false`
/// without one).
fn shared_stats(app: &AppState) -> Value {
    let s = app
        .shared
        .as_ref()
        .map(SharedTier::stats)
        .unwrap_or_default();
    json!({
        "enabled": s.enabled,
        "up": s.up,
        "url": app.config.shared.redacted_url(),
        "errors": s.errors,
        "fallbacks": s.fallbacks,
        "lock_takeovers": s.lock_takeovers,
        "lease_lost": s.lease_lost,
        "skipped_too_large": s.skipped_too_large,
        "corrupt_values": s.corrupt_values,
        "bytes_read": s.bytes_read,
        "bytes_written": s.bytes_written,
        "open_circuits": s.open_circuits,
    })
}

/// `GET /api/v1/performance`: the original service's field names.
pub async fn performance(State(app): State<AppState>) -> Json<Value> {
    let sys = app.system.latest();
    let service = &app.service;
    let conversions = service.conversions();
    Json(json!({
        "timestamp": unix_seconds(),
        "system": {
            "cpu_percent": sys.cpu_percent,
            "memory": {
                "total_gb": sys.total_gb,
                "available_gb": sys.available_gb,
                "used_percent": sys.used_percent,
            },
        },
        "process": {
            "memory_mb": sys.process_memory_mb,
            "cpu_percent": sys.process_cpu_percent,
            "threads": sys.process_threads,
        },
        "audio_processing": {
            "total_requests": service.requests().conversion_requests(),
            "average_processing_time": conversions.avg_ms().round() / 1000.0,
            "conversion_stats": {
                "active_conversions": conversions.active(),
                "total_conversions": conversions.total(),
            },
            "config": {
                "max_concurrent_conversions": service.max_concurrent(),
                "max_converter_workers": service.workers(),
                "max_upload_size_mb": round2(app.config.limits.max_upload_bytes as f64 / 1024.0 / 1024.0),
                "supported_formats": ["ogg", "opus"],
                "supported_rates": SUPPORTED_RATES,
            },
        },
    }))
}

/// `GET /api/v1/concurrent-status`: the original service's field names.
pub async fn concurrent_status(State(app): State<AppState>) -> Json<Value> {
    let service = &app.service;
    let c = service
        .conversions()
        .snapshot(service.max_concurrent(), service.workers());
    Json(json!({
        "timestamp": unix_seconds(),
        "concurrent_processing": {
            "active_conversions": c.active,
            "max_concurrent_conversions": c.max_concurrent,
            "utilization_percent": c.utilization_percent,
            "total_conversions": c.completed + c.failed,
            "queued_conversions": c.queued,
            "queue_available_slots": (service.max_queued() as u64).saturating_sub(c.queued),
        },
        "worker_pool": {"max_workers": c.workers},
        "performance_metrics": {
            "total_requests_processed": service.requests().conversion_requests(),
            "average_processing_time_seconds": c.avg_ms.round() / 1000.0,
        },
    }))
}

/// `GET /api/v1/health`.
pub async fn health(State(app): State<AppState>) -> Json<Value> {
    Json(json!({
        "status": "healthy",
        "timestamp": unix_seconds(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime": app.service.requests().uptime().as_secs_f64(),
    }))
}

/// `GET /healthz`: the process answers.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the store is open and the server is not shutting down.
pub async fn readyz(State(app): State<AppState>) -> Response {
    if app.shutdown.is_shutting_down() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting_down"})),
        )
            .into_response()
    } else {
        Json(json!({"status": "ready"})).into_response()
    }
}

/// `GET /metrics`: Prometheus text format. The stores' and the shared
/// tier's figures and the `process_*` metrics are read now.
pub async fn metrics(State(app): State<AppState>) -> Response {
    app.service.store().run_pending_tasks().await;
    app.upstream.store().run_pending_tasks().await;
    stats::record_store("audio", &app.service.store().stats());
    stats::record_store("upstream", &app.upstream.store().stats());
    stats::record_shared(
        &app.shared
            .as_ref()
            .map(SharedTier::stats)
            .unwrap_or_default(),
    );
    stats::collect_process();
    app.metrics.run_upkeep();
    let mut response = app.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
