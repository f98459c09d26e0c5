//! Observability from SQL.

use crate::reader;
use pgrx::prelude::*;
use std::time::Instant;

/// Per-endpoint RPC counters of *this session* (each backend, and the worker, keeps its own):
/// requests, failures, the last error, latencies, and how long the endpoint is still skipped.
#[pg_extern(volatile, parallel_unsafe)]
fn rpc_endpoint_stats() -> TableIterator<
    'static,
    (
        name!(position, i32),
        name!(host, String),
        name!(requests, i64),
        name!(failures, i64),
        name!(consecutive_failures, i32),
        name!(last_error, Option<String>),
        name!(last_latency_ms, Option<f64>),
        name!(avg_latency_ms, Option<f64>),
        name!(cooling_down_ms, f64),
    ),
> {
    crate::catalog_version::ensure_current("rpc_endpoint_stats");
    let now = Instant::now();
    let rows: Vec<_> = reader::endpoint_stats()
        .into_iter()
        .enumerate()
        .map(|(i, (host, s))| {
            (
                i as i32 + 1,
                host,
                s.requests as i64,
                s.failures as i64,
                s.consecutive_failures as i32,
                s.last_error,
                s.last_latency.map(|d| d.as_secs_f64() * 1000.0),
                (s.requests > 0)
                    .then(|| s.total_latency.as_secs_f64() * 1000.0 / s.requests as f64),
                s.cooldown_until.map_or(0.0, |t| {
                    t.saturating_duration_since(now).as_secs_f64() * 1000.0
                }),
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// Server-wide per-endpoint RPC counters (all sessions and the sweep worker, since server start).
/// Needs `audius_indexer` in `shared_preload_libraries`.
#[pg_extern(volatile, parallel_unsafe)]
fn rpc_endpoint_stats_server() -> TableIterator<
    'static,
    (
        name!(host, String),
        name!(requests, i64),
        name!(failures, i64),
        name!(last_error, Option<String>),
        name!(last_error_at, Option<TimestampWithTimeZone>),
        name!(last_latency_ms, f64),
        name!(avg_latency_ms, Option<f64>),
        name!(last_used_at, TimestampWithTimeZone),
    ),
> {
    crate::catalog_version::ensure_current("rpc_endpoint_stats_server");
    require_server_counters();
    let ts = |t: pgrx::pg_sys::TimestampTz| unsafe {
        TimestampWithTimeZone::from_datum(pgrx::pg_sys::Datum::from(t), false).expect("timestamp")
    };
    let rows: Vec<_> = crate::shmem_stats::snapshot()
        .into_iter()
        .map(|r| {
            (
                r.host,
                r.requests as i64,
                r.failures as i64,
                r.last_error,
                r.last_error_at.map(ts),
                r.last_latency.as_secs_f64() * 1000.0,
                (r.requests > 0)
                    .then(|| r.total_latency.as_secs_f64() * 1000.0 / r.requests as f64),
                ts(r.last_used_at),
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// Server-wide RPC failures per host and kind (`shmem_stats::ERROR_KINDS`: connect, timeout,
/// connection_lost, rate_limited, http_status, redirect, bad_response, jsonrpc, out_of_gas,
/// too_large, range_refused), since server start. Every kind of every host is listed, zeros
/// included, so a Prometheus counter exists before its first increment; per host they add up to
/// `rpc_endpoint_stats_server().failures`. Needs `audius_indexer` in `shared_preload_libraries`.
/// Reads shared memory only: no RPC, no table.
#[pg_extern(volatile, parallel_unsafe)]
fn rpc_endpoint_errors_server() -> TableIterator<
    'static,
    (
        name!(host, String),
        name!(kind, String),
        name!(failures, i64),
    ),
> {
    crate::catalog_version::ensure_current("rpc_endpoint_errors_server");
    require_server_counters();
    let rows: Vec<_> = crate::shmem_stats::snapshot()
        .into_iter()
        .flat_map(|r| {
            crate::shmem_stats::ERROR_KINDS
                .iter()
                .zip(r.kind_failures)
                .map(move |(k, n)| (r.host.clone(), (*k).to_string(), n as i64))
                .collect::<Vec<_>>()
        })
        .collect();
    TableIterator::new(rows)
}

/// ERROR 55000 when the server-wide counters are not there (the library is not preloaded).
fn require_server_counters() {
    if !crate::shmem_stats::available() {
        crate::errors::raise(
            pgrx::PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "server-wide RPC counters need audius_indexer in shared_preload_libraries",
            None,
            Some("Use rpc_endpoint_stats() for this session's counters.".into()),
        );
    }
}
