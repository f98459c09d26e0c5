//! The stale-sweep background worker ("audius_indexer sweep").
//!
//! Registered from `_PG_init` when the library is in `shared_preload_libraries`; started by the
//! postmaster once recovery is finished (so on a standby it does not run; after `pg_promote()` it
//! starts at once). It connects to `audius_indexer.database`, and every
//! `audius_indexer.sweep_interval` runs one sweep tick of `audius_indexer.sweep_batch_size`
//! wallets in three steps: claim the batch (a transaction, committed), read over RPC with **no
//! transaction or snapshot open**, then write in a new transaction. A failing tick is caught,
//! rolled back, logged and recorded in `sweep_status.last_error`; the loop goes on.
//! SIGHUP reloads settings (a new interval applies at once); SIGTERM ends the worker within a
//! poll slice even mid-RPC, with exit code 1 so the postmaster restarts it after `RESTART_AFTER`.
//! When the database cannot be connected to (it does not exist yet), each restart waits longer
//! before trying again (exponential, up to `MAX_CONNECT_BACKOFF`): a few log lines, not a flood.

use crate::{gucs, reader, sweep};
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::time::{Duration, Instant};

pub const WORKER_TYPE: &str = "audius_indexer sweep";
/// How long the postmaster waits before restarting a worker that exited or crashed.
const RESTART_AFTER: Duration = Duration::from_secs(5);
/// Longest wait before a new attempt to connect to a database that was missing.
const MAX_CONNECT_BACKOFF: Duration = Duration::from_secs(300);

pub fn register() {
    BackgroundWorkerBuilder::new(WORKER_TYPE)
        .set_type(WORKER_TYPE)
        .set_library("audius_indexer")
        .set_function("audius_indexer_sweep_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(RESTART_AFTER))
        .load();
}

/// True once SIGTERM arrived (the flag PostgreSQL's own loops use; never reset).
pub fn should_stop() -> bool {
    unsafe { pg_sys::ShutdownRequestPending != 0 }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn audius_indexer_sweep_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = gucs::string(&gucs::DATABASE);
    // A failed connection is FATAL (the process exits and is restarted): count attempts in
    // shared memory and wait longer before each new one.
    let failed_before = crate::shmem_stats::worker_connect_attempt();
    if failed_before > 0 {
        let wait = RESTART_AFTER
            .saturating_mul(1u32 << (failed_before - 1).min(16))
            .min(MAX_CONNECT_BACKOFF);
        log!(
            "audius_indexer sweep: could not connect to database {db:?} ({failed_before} failed attempt(s)); next attempt in {} s",
            wait.as_secs()
        );
        if !sleep_unless_stopped(wait) {
            unsafe { pg_sys::proc_exit(1) };
        }
    }
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    crate::shmem_stats::worker_connected();
    reader::mark_worker();
    unsafe {
        pg_sys::SetConfigOption(
            c"application_name".as_ptr(),
            c"audius_indexer sweep".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
        );
    }
    log!("audius_indexer sweep worker started (database {db:?})");

    let mut last_tick: Option<Instant> = None;
    let mut warned_missing = false;
    loop {
        if should_stop() {
            break;
        }
        if unsafe { pg_sys::ConfigReloadPending != 0 } {
            unsafe {
                pg_sys::ConfigReloadPending = 0;
                pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP);
            }
        }
        let interval = Duration::from_millis(gucs::SWEEP_INTERVAL_MS.get().max(100) as u64);
        let due = last_tick.is_none_or(|t| t.elapsed() >= interval);
        if due {
            last_tick = Some(Instant::now());
            if gucs::SWEEP_ENABLED.get() {
                tick(&db, &mut warned_missing);
            }
        }
        if should_stop() {
            break;
        }
        let wait = last_tick
            .map_or(interval, |t| interval.saturating_sub(t.elapsed()))
            .max(Duration::from_millis(1));
        wait_latch(wait);
        // Service interrupts while idle, as PostgreSQL's own workers do: without this a
        // ProcSignalBarrier (e.g. DROP DATABASE) would wait for the next tick, or forever.
        pg_sys::check_for_interrupts!();
    }
    log!("audius_indexer sweep worker stopping (SIGTERM)");
    // Exit code 1: the postmaster restarts us after RESTART_AFTER unless it is shutting down.
    unsafe { pg_sys::proc_exit(1) };
}

/// Waits `d` (interruptibly); false when SIGTERM arrived meanwhile.
fn sleep_unless_stopped(d: Duration) -> bool {
    let until = Instant::now() + d;
    while !should_stop() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        wait_latch(left);
    }
    false
}

/// Waits on the process latch up to `d` (a signal wakes it). WL_EXIT_ON_PM_DEATH: the worker
/// exits by itself if the postmaster dies.
fn wait_latch(d: Duration) {
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            d.as_millis().min(i32::MAX as u128) as libc::c_long,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
}

/// The worker's steps: each SQL step in a transaction of its own (committed); the reads between
/// them run with no transaction open. An ERROR unwinds to `catching`, which aborts whatever is open.
struct OwnTransactions;

impl sweep::Steps for OwnTransactions {
    fn sql<R>(&mut self, f: impl FnOnce() -> R) -> R {
        unsafe {
            pg_sys::SetCurrentStatementStartTimestamp();
            pg_sys::StartTransactionCommand();
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        }
        let r = f();
        unsafe {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommitTransactionCommand();
            pg_sys::pgstat_report_stat(false);
        }
        r
    }
}

/// Runs `f`; an ERROR or panic rolls back whatever transaction is open (a no-op when none is)
/// and comes back as its message. The backend shows as idle afterwards.
fn catching<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    let result = PgTryBuilder::new(std::panic::AssertUnwindSafe(move || Ok(f())))
        .catch_others(|e| {
            unsafe { pg_sys::AbortCurrentTransaction() };
            Err(reader::caught_message(&e))
        })
        .execute();
    unsafe { pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_IDLE, std::ptr::null()) };
    result
}

/// Runs `f` in a fresh transaction with a snapshot; on ERROR/panic aborts and returns the message.
fn in_transaction<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catching(|| sweep::Steps::sql(&mut OwnTransactions, f))
}

/// One tick: claim (transaction 1, committed) → read (no transaction) → write (transaction 2),
/// refilled when the block guard leaves rows alone. Any ERROR or panic is caught, rolled back,
/// logged and recorded; the single-flight lock is always released.
fn tick(db: &str, warned_missing: &mut bool) {
    let batch = gucs::SWEEP_BATCH_SIZE.get();
    if unsafe { pg_sys::RecoveryInProgress() } {
        return; // never started during recovery; belt and braces
    }
    let installed = in_transaction(|| {
        Spi::get_one::<bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'audius_indexer')",
        )
        .ok()
        .flatten()
        .unwrap_or(false)
    });
    match installed {
        Ok(true) => *warned_missing = false,
        Ok(false) => {
            if !*warned_missing {
                log!("audius_indexer sweep: extension not installed in database {db:?}; idle until it is");
                *warned_missing = true;
            }
            return;
        }
        Err(msg) => return tick_failed(None, &msg),
    }
    let mut started = None;
    let outcome = catching(|| {
        sweep::tick(
            &mut OwnTransactions,
            batch,
            sweep::LockScope::Session,
            &mut started,
        )
    });
    match outcome {
        Ok(None) => {} // another sweep (e.g. pg_cron) holds the single flight
        Ok(Some(c)) => {
            if c.updated + c.failed + c.skipped > 0 {
                log!(
                    "audius_indexer sweep: requested={} updated={} failed={} skipped={}",
                    c.requested,
                    c.updated,
                    c.failed,
                    c.skipped
                );
            }
        }
        Err(msg) => tick_failed(started, &msg),
    }
}

/// Logs a failed tick, records it in `sweep_status` and releases the single-flight lock.
fn tick_failed(started: Option<pgrx::datum::TimestampWithTimeZone>, msg: &str) {
    let stopping = should_stop();
    if !stopping {
        warning!("audius_indexer sweep tick failed: {msg}");
    }
    let msg = msg.to_string();
    let _ = in_transaction(move || {
        if !stopping {
            sweep::record_tick_error(started, &msg);
        }
        sweep::release_session_lock();
    });
}
