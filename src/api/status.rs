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
