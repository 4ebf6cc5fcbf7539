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
use crate::stats::{names, round2};

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| round2(d.as_secs_f64()))
        .unwrap_or(0.0)
}

/// `GET /api/v1/stats`: cache and conversion figures.
pub async fn stats(State(app): State<AppState>) -> Json<Value> {
    // Makes moka's entry and byte figures exact before reading them.
    app.service.store().run_pending_tasks().await;
    let s = app.service.store().stats();
    let lookups = s.hits_memory + s.hits_disk + s.coalesced + s.misses;
    let hit_rate = if lookups == 0 {
        0.0
    } else {
        (s.hits_memory + s.hits_disk + s.coalesced) as f64 / lookups as f64
    };
    let service = &app.service;
    let conversions = service
        .conversions()
        .snapshot(service.max_concurrent(), service.workers());
    Json(json!({
        "cache": {
            "lookups": lookups,
            "hits_memory": s.hits_memory,
            "hits_disk": s.hits_disk,
            "coalesced": s.coalesced,
            "misses": s.misses,
            "hit_rate": (hit_rate * 10_000.0).round() / 10_000.0,
            "memory": {
                "entries": s.memory.entries,
                "bytes": s.memory.bytes,
                "capacity_bytes": s.memory.capacity_bytes,
            },
            "disk": {
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
        "upstream": upstream_stats(&app),
        "uptime_seconds": app.service.requests().uptime().as_secs(),
    }))
}

fn upstream_stats(app: &AppState) -> Value {
    let calls = app.upstream.snapshot();
    let s = app.upstream.store().stats();
    json!({
        "configured": calls.configured,
        "calls": calls.calls,
        "errors": calls.errors,
        "avg_ms": calls.avg_ms,
        "cache": {
            "hits_memory": s.hits_memory,
            "hits_disk": s.hits_disk,
            "coalesced": s.coalesced,
            "misses": s.misses,
            "memory": {"entries": s.memory.entries, "bytes": s.memory.bytes},
            "disk": {"entries": s.disk.entries, "bytes": s.disk.bytes},
        },
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

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(app): State<AppState>) -> Response {
    app.service.store().run_pending_tasks().await;
    let s = app.service.store().stats();
    for (tier, t, evictions) in [
        ("memory", s.memory, s.evictions_memory),
        ("disk", s.disk, s.evictions_disk),
    ] {
        metrics::gauge!(names::STORE_BYTES, "tier" => tier).set(t.bytes as f64);
        metrics::gauge!(names::STORE_ENTRIES, "tier" => tier).set(t.entries as f64);
        metrics::gauge!(names::STORE_CAPACITY, "tier" => tier).set(t.capacity_bytes as f64);
        metrics::gauge!(names::STORE_EVICTIONS, "tier" => tier).set(evictions as f64);
    }
    metrics::gauge!(names::STORE_CORRUPT).set(s.corrupt_records as f64);
    metrics::gauge!(names::STORE_WRITE_FAILURES).set(s.disk_write_failures as f64);
    metrics::gauge!(names::STORE_SIZE_ON_DISK).set(s.disk_size_on_disk_bytes as f64);
    app.metrics.run_upkeep();
    let mut response = app.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
