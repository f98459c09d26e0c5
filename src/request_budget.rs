//! The request budget (`audius_indexer.rpc_max_requests_per_second`): one token bucket per
//! endpoint host, server-wide, that every HTTP attempt takes a token from before it is sent.
//!
//! The buckets and the rate are `audius_indexer_core::eth::budget::Buckets`, a fixed table of
//! atomics: in shared memory when the library is preloaded (every backend, their helper threads
//! and the three workers share one bucket per host), else a static of this process (each backend
//! then has a budget of its own). Taking a token is a compare-and-swap on one `AtomicU64` and reads
//! `CLOCK_MONOTONIC`: nothing of PostgreSQL's, so the pipeline's helper threads take tokens too.
//! Whoever waits does it through its own interruptible sleep (see `reader.rs`): the backend's
//! thread polls query cancel / `statement_timeout` / a worker's SIGTERM, a helper thread watches
//! its pipeline's stop flag. The wait never fails a request.
//!
//! The rate lives in the table, written by the setting's assign hook ([`set_rate`]) whenever a
//! process applies the configuration: the postmaster does it first at `pg_reload_conf()`, so a new
//! value applies at once to every process — to a worker in the middle of a long step, and to waits
//! in progress, too — not only when each process gets to its own reload.
//! This module is below `gucs.rs` (which calls [`set_rate`]); it reads no setting itself.

use crate::eth::blocking::Interrupted;
use crate::eth::budget::Buckets;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;
use pgrx::PgAtomic;
use pgrx::{pg_shmem_init, pg_sys};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The table as it sits in shared memory (all atomics, `#[repr(C)]`, all-zero = empty, no cap).
#[repr(transparent)]
pub struct SharedBuckets(Buckets);

// SAFETY: only atomics, no pointers; valid in any process that maps the segment.
unsafe impl PGRXSharedMemory for SharedBuckets {}

static SHARED: PgAtomic<SharedBuckets> = unsafe { PgAtomic::new(c"audius_indexer_request_budget") };
/// Set once the shared table exists (after the shmem startup hook; inherited by every child).
static IN_SHMEM: AtomicBool = AtomicBool::new(false);
/// This process's own table: the one used without `shared_preload_libraries`; its rate always
/// holds this process's value of the setting (copied into shared memory when it is created).
static LOCAL: Buckets = Buckets::new();
static mut PREV_SHMEM_STARTUP_HOOK: pg_sys::shmem_startup_hook_type = None;

/// Called from `_PG_init` while shared_preload_libraries is processed.
pub fn init() {
    pg_shmem_init!(SHARED = SharedBuckets(Buckets::new()));
    // After pgrx's hook (installed just now, so called by ours first): the table exists.
    unsafe {
        PREV_SHMEM_STARTUP_HOOK = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(after_shmem_startup);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn after_shmem_startup() {
    unsafe {
        if let Some(prev) = PREV_SHMEM_STARTUP_HOOK {
            prev();
        }
    }
    // Also after a crash restart (the segment is new): the rate the postmaster holds.
    SHARED.get().0.set_rate(LOCAL.per_second());
    IN_SHMEM.store(true, Ordering::Release);
}

/// Whether the buckets are server-wide (the library is preloaded).
pub fn server_wide() -> bool {
    IN_SHMEM.load(Ordering::Acquire)
}

fn buckets() -> &'static Buckets {
    if server_wide() {
        &SHARED.get().0
    } else {
        &LOCAL
    }
}

/// The assign hook's work: the new rate (requests per second per host; 0 = no cap) for this
/// process, and for the server-wide table when there is one. Atomic stores only.
pub fn set_rate(per_second: i32) {
    let v = per_second.max(0) as u32;
    LOCAL.set_rate(v);
    if server_wide() {
        SHARED.get().0.set_rate(v);
    }
}

/// What an attempt needs to take a token: the table (plain data that helper threads may use).
#[derive(Clone, Copy)]
pub struct Budget {
    buckets: &'static Buckets,
}

impl Budget {
    /// The budget of this process: server-wide when preloaded. Backend thread only.
    pub fn current() -> Budget {
        Budget { buckets: buckets() }
    }

    /// Takes a token of `host`'s bucket, waiting through `wait` until one has refilled; only
    /// `wait` giving up ends it early. Returns at once without a cap.
    pub fn acquire(
        &self,
        host: &str,
        wait: &mut dyn FnMut(Duration) -> Result<(), Interrupted>,
    ) -> Result<Duration, Interrupted> {
        self.buckets.acquire(host, wait)
    }
}

/// Assign hook of `audius_indexer.rpc_max_requests_per_second` (registered by `gucs::init`):
/// atomic stores only, so it cannot fail.
#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn assign_rate(
    newval: std::ffi::c_int,
    _extra: *mut std::ffi::c_void,
) {
    set_rate(newval);
}
