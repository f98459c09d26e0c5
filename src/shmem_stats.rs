//! Server-wide RPC endpoint counters in shared memory (only when the library is preloaded).
//!
//! Every backend and the sweep worker add to the same counters, so `rpc_endpoint_stats_server()`
//! shows the worker's traffic too. Fixed size: up to `MAX_ENDPOINTS` hosts (least recently used
//! evicted), host and last error truncated. Updated on the backend's own thread after each attempt.
//! Failures are also counted per kind (`ERROR_KINDS`, `rpc_endpoint_errors_server()`).

use crate::eth::error::RpcErrorKind;
use pgrx::lwlock::PgLwLock;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;
use pgrx::PgAtomic;
use pgrx::{pg_shmem_init, pg_sys};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

const MAX_ENDPOINTS: usize = 16;
const HOST_LEN: usize = 96;
const ERR_LEN: usize = 240;

/// The kinds failures are counted by, per endpoint (the label `kind` of the Prometheus counter
/// `audius_indexer_rpc_errors_total`); one per `RpcErrorKind` variant, in its order.
pub const ERROR_KINDS: [&str; 11] = [
    "connect",
    "timeout",
    "connection_lost",
    "rate_limited",
    "http_status",
    "redirect",
    "bad_response",
    "jsonrpc",
    "out_of_gas",
    "too_large",
    "range_refused",
];

/// The index of `k` in `ERROR_KINDS`.
pub fn kind_index(k: &RpcErrorKind) -> usize {
    match k {
        RpcErrorKind::Connect(_) => 0,
        RpcErrorKind::Timeout(_) => 1,
        RpcErrorKind::ConnectionLost(_) => 2,
        RpcErrorKind::RateLimited { .. } => 3,
        RpcErrorKind::HttpStatus { .. } => 4,
        RpcErrorKind::Redirect { .. } => 5,
        RpcErrorKind::BadResponse(_) => 6,
        RpcErrorKind::JsonRpc { .. } => 7,
        RpcErrorKind::OutOfGas(_) => 8,
        RpcErrorKind::TooLarge(_) => 9,
        RpcErrorKind::RangeRefused(_) => 10,
    }
}

#[derive(Clone, Copy)]
#[repr(C)]
pub struct Slot {
    host: [u8; HOST_LEN],
    host_len: u16,
    err_len: u16,
    requests: u64,
    failures: u64,
    last_latency_us: u64,
    total_latency_us: u64,
    last_used_at: pg_sys::TimestampTz,
    last_error_at: pg_sys::TimestampTz,
    last_error: [u8; ERR_LEN],
    kind_failures: [u64; ERROR_KINDS.len()],
}

#[derive(Clone, Copy)]
#[repr(C)]
pub struct Stats {
    slots: [Slot; MAX_ENDPOINTS],
}

impl Default for Stats {
    fn default() -> Self {
        // SAFETY: all-zero is a valid Slot (empty host, zero counters).
        unsafe { std::mem::zeroed() }
    }
}

unsafe impl PGRXSharedMemory for Stats {}

static STATS: PgLwLock<Stats> = unsafe { PgLwLock::new(c"audius_indexer_endpoint_stats") };
/// Consecutive worker starts that did not reach a connected database, per worker (survives the
/// worker's restarts; reset when it connects, and by a crash restart of the server).
static SWEEP_CONNECT_ATTEMPTS: PgAtomic<AtomicU32> =
    unsafe { PgAtomic::new(c"audius_indexer_worker_connect_attempts") };
static CHALLENGES_CONNECT_ATTEMPTS: PgAtomic<AtomicU32> =
    unsafe { PgAtomic::new(c"audius_indexer_challenges_connect_attempts") };
static FOLLOW_CONNECT_ATTEMPTS: PgAtomic<AtomicU32> =
    unsafe { PgAtomic::new(c"audius_indexer_follow_connect_attempts") };
static READY: AtomicBool = AtomicBool::new(false);

/// Called from `_PG_init` while shared_preload_libraries is processed.
pub fn init() {
    pg_shmem_init!(STATS);
    pg_shmem_init!(SWEEP_CONNECT_ATTEMPTS = AtomicU32::new(0));
    pg_shmem_init!(CHALLENGES_CONNECT_ATTEMPTS = AtomicU32::new(0));
    pg_shmem_init!(FOLLOW_CONNECT_ATTEMPTS = AtomicU32::new(0));
    READY.store(true, Ordering::Relaxed);
}

pub fn available() -> bool {
    READY.load(Ordering::Relaxed)
}

/// The counter of worker `which` (0 sweep, 1 challenges, 2 follow).
fn connect_attempts(which: usize) -> &'static AtomicU32 {
    match which {
        1 => CHALLENGES_CONNECT_ATTEMPTS.get(),
        2 => FOLLOW_CONNECT_ATTEMPTS.get(),
        _ => SWEEP_CONNECT_ATTEMPTS.get(),
    }
}

/// Counts one more connection attempt of a worker; returns how many failed before it.
pub fn worker_connect_attempt(which: usize) -> u32 {
    connect_attempts(which).fetch_add(1, Ordering::SeqCst)
}

/// The worker connected: its next failure starts the back-off from the beginning.
pub fn worker_connected(which: usize) {
    connect_attempts(which).store(0, Ordering::SeqCst);
}

fn copy_into(dst: &mut [u8], s: &str) -> u16 {
    let mut n = s.len().min(dst.len());
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    dst[..n].copy_from_slice(&s.as_bytes()[..n]);
    n as u16
}

/// Adds one attempt's outcome for `host`: its error's kind (`kind_index`) and message.
pub fn record(host: &str, latency: Duration, error: Option<(usize, &str)>) {
    if !available() {
        return;
    }
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let mut stats = STATS.exclusive();
    let hb = &host.as_bytes()[..host.len().min(HOST_LEN)];
    let idx = stats
        .slots
        .iter()
        .position(|s| s.host_len > 0 && &s.host[..s.host_len as usize] == hb)
        .or_else(|| stats.slots.iter().position(|s| s.host_len == 0))
        .unwrap_or_else(|| {
            let (i, _) = stats
                .slots
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.last_used_at)
                .expect("slots");
            i
        });
    let slot = &mut stats.slots[idx];
    if slot.host_len == 0 || &slot.host[..slot.host_len as usize] != hb {
        *slot = unsafe { std::mem::zeroed() };
        slot.host_len = copy_into(&mut slot.host, host);
    }
    let us = latency.as_micros().min(u64::MAX as u128) as u64;
    slot.requests += 1;
    slot.last_latency_us = us;
    slot.total_latency_us = slot.total_latency_us.saturating_add(us);
    slot.last_used_at = now;
    if let Some((kind, e)) = error {
        slot.failures += 1;
        slot.kind_failures[kind.min(ERROR_KINDS.len() - 1)] += 1;
        slot.last_error_at = now;
        slot.err_len = copy_into(&mut slot.last_error, e);
    }
}

/// One row of the server-wide view.
pub struct Row {
    pub host: String,
    pub requests: u64,
    pub failures: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<pg_sys::TimestampTz>,
    pub last_latency: Duration,
    pub total_latency: Duration,
    pub last_used_at: pg_sys::TimestampTz,
    /// Failures per kind, in `ERROR_KINDS` order (they add up to `failures`).
    pub kind_failures: [u64; ERROR_KINDS.len()],
}

pub fn snapshot() -> Vec<Row> {
    let stats = STATS.share();
    let mut rows: Vec<Row> = stats
        .slots
        .iter()
        .filter(|s| s.host_len > 0)
        .map(|s| Row {
            host: String::from_utf8_lossy(&s.host[..s.host_len as usize]).into_owned(),
            requests: s.requests,
            failures: s.failures,
            last_error: (s.err_len > 0)
                .then(|| String::from_utf8_lossy(&s.last_error[..s.err_len as usize]).into_owned()),
            last_error_at: (s.last_error_at != 0).then_some(s.last_error_at),
            last_latency: Duration::from_micros(s.last_latency_us),
            total_latency: Duration::from_micros(s.total_latency_us),
            last_used_at: s.last_used_at,
            kind_failures: s.kind_failures,
        })
        .collect();
    rows.sort_by(|a, b| a.host.cmp(&b.host));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as D;

    #[test]
    fn every_error_kind_has_its_own_counter() {
        let kinds = [
            RpcErrorKind::Connect(String::new()),
            RpcErrorKind::Timeout(D::ZERO),
            RpcErrorKind::ConnectionLost(String::new()),
            RpcErrorKind::RateLimited {
                detail: String::new(),
                retry_after: None,
            },
            RpcErrorKind::HttpStatus {
                status: 500,
                retry_after: None,
            },
            RpcErrorKind::Redirect {
                status: 302,
                location_host: None,
            },
            RpcErrorKind::BadResponse(String::new()),
            RpcErrorKind::JsonRpc {
                code: -32000,
                message: String::new(),
            },
            RpcErrorKind::OutOfGas(String::new()),
            RpcErrorKind::TooLarge(String::new()),
            RpcErrorKind::RangeRefused(String::new()),
        ];
        let idx: Vec<usize> = kinds.iter().map(kind_index).collect();
        assert_eq!(idx, (0..ERROR_KINDS.len()).collect::<Vec<_>>());
        assert_eq!(ERROR_KINDS[kind_index(&kinds[3])], "rate_limited");
        let mut names = ERROR_KINDS.to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ERROR_KINDS.len());
    }
}
