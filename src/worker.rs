//! The three background workers, one process each so a slow run of one never delays the others:
//! the stale sweep ("audius_indexer sweep"), the Transfer-log follower ("audius_indexer follow") and
//! the challenge processors ("audius_indexer challenges").
//!
//! - The sweep runs one tick of `audius_indexer.sweep_batch_size` wallets every
//!   `audius_indexer.sweep_interval`, in three steps: claim the batch (a transaction, committed),
//!   read over RPC with **no transaction or snapshot open**, then write in a new transaction.
//! - The follower runs one `follow::step` every `audius_indexer.follow_interval` (0 = off), its SQL
//!   phases in transactions of their own, its network phases with none open.
//! - The challenge worker runs `process_user_event_challenges(challenges_batch_size)` every
//!   `audius_indexer.challenges_interval` (0 = off) in a transaction of its own; it idles while
//!   `user_events` is missing.
//!
//! A failing tick or step is caught, rolled back, logged and recorded in its status view; the loop
//! goes on. Registered from `_PG_init` when the library is in `shared_preload_libraries`; started
//! by the postmaster once recovery is finished (so on a standby they do not run; after
//! `pg_promote()` they start at once). They connect to `audius_indexer.database` as
//! `audius_indexer.worker_role` (empty: the bootstrap superuser), pin the session's search_path,
//! and idle while the extension is missing or the role is not an `audius_indexer_operator`; each
//! SQL step switches as `CALL audius_indexer.sweep()` does (src/privilege.rs).
//! SIGHUP reloads settings (a new interval applies at once). SIGTERM is PostgreSQL's `die` plus the
//! shutdown flag: it ends the worker within a poll slice even mid-RPC or inside a lock wait, with
//! exit code 1 so the postmaster restarts it after `RESTART_AFTER`. When the database cannot be
//! connected to (it does not exist yet, or the role cannot log in), each restart waits longer
//! before trying again (exponential, up to `MAX_CONNECT_BACKOFF`): a few log lines, not a flood.

use crate::interrupts::should_stop;
use crate::paths::Path;
use crate::{gucs, sweep};
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::time::{Duration, Instant};

pub const WORKER_TYPE: &str = "audius_indexer sweep";
pub const CHALLENGES_WORKER_TYPE: &str = "audius_indexer challenges";
pub const FOLLOW_WORKER_TYPE: &str = "audius_indexer follow";
/// How long the postmaster waits before restarting a worker that exited or crashed.
const RESTART_AFTER: Duration = Duration::from_secs(5);
/// Longest wait before a new attempt to connect to a database that was missing.
const MAX_CONNECT_BACKOFF: Duration = Duration::from_secs(300);

pub fn register() {
    for (name, function) in [
        (WORKER_TYPE, "audius_indexer_sweep_main"),
        (CHALLENGES_WORKER_TYPE, "audius_indexer_challenges_main"),
        (FOLLOW_WORKER_TYPE, "audius_indexer_follow_main"),
    ] {
        BackgroundWorkerBuilder::new(name)
            .set_type(name)
            .set_library("audius_indexer")
            .set_function(function)
            .enable_spi_access()
            .set_start_time(BgWorkerStartTime::RecoveryFinished)
            .set_restart_time(Some(RESTART_AFTER))
            .load();
    }
}

/// Which job a worker process runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Job {
    Sweep,
    Challenges,
    Follow,
}

impl Job {
    fn name(self) -> &'static str {
        match self {
            Job::Sweep => WORKER_TYPE,
            Job::Challenges => CHALLENGES_WORKER_TYPE,
            Job::Follow => FOLLOW_WORKER_TYPE,
        }
    }

    /// Index of its connect-attempt counter in shared memory.
    fn index(self) -> usize {
        self as usize
    }

    /// Time between runs; `None` when the job is switched off.
    fn interval(self) -> Option<Duration> {
        match self {
            Job::Sweep => gucs::SWEEP_ENABLED
                .get()
                .then(|| Duration::from_millis(gucs::SWEEP_INTERVAL_MS.get().max(100) as u64)),
            Job::Challenges => {
                let ms = gucs::CHALLENGES_INTERVAL_MS.get();
                (ms > 0).then(|| Duration::from_millis(ms.max(100) as u64))
            }
            Job::Follow => {
                let ms = gucs::FOLLOW_INTERVAL_MS.get();
                (ms > 0).then(|| Duration::from_millis(ms.max(100) as u64))
            }
        }
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn audius_indexer_sweep_main(_arg: pg_sys::Datum) {
    worker_main(Job::Sweep)
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn audius_indexer_challenges_main(_arg: pg_sys::Datum) {
    worker_main(Job::Challenges)
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn audius_indexer_follow_main(_arg: pg_sys::Datum) {
    worker_main(Job::Follow)
}

fn worker_main(job: Job) {
    let name = job.name();
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP);
    // SIGTERM as PostgreSQL's worker_spi handles it (`die`), so that pg_terminate_backend()
    // also ends a statement waiting on a lock, plus the flag the loops and network waits watch.
    unsafe { pg_sys::pqsignal(pg_sys::SIGTERM as i32, Some(on_sigterm)) };
    let db = gucs::string(&gucs::DATABASE);
    // A failed connection is FATAL (the process exits and is restarted): count attempts in
    // shared memory and wait longer before each new one.
    let failed_before = crate::shmem_stats::worker_connect_attempt(job.index());
    if failed_before > 0 {
        let wait = RESTART_AFTER
            .saturating_mul(1u32 << (failed_before - 1).min(16))
            .min(MAX_CONNECT_BACKOFF);
        log!(
            "{name}: could not connect to database {db:?} ({failed_before} failed attempt(s)); next attempt in {} s",
            wait.as_secs()
        );
        if !sleep_unless_stopped(wait) {
            unsafe { pg_sys::proc_exit(1) };
        }
    }
    // audius_indexer.worker_role, or (empty) the bootstrap superuser. A role that does not exist
    // or may not log in makes the connection FATAL: retried with the back-off above.
    let role = gucs::string(&gucs::WORKER_ROLE).trim().to_string();
    let role = (!role.is_empty()).then_some(role);
    BackgroundWorker::connect_worker_to_spi(Some(&db), role.as_deref());
    crate::shmem_stats::worker_connected(job.index());
    crate::interrupts::mark_worker();
    let app = std::ffi::CString::new(name).expect("no NUL in a worker name");
    unsafe {
        pg_sys::SetConfigOption(
            c"application_name".as_ptr(),
            app.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
        );
        // The session's search_path is pinned over whatever ALTER DATABASE / ALTER ROLE ... SET
        // say (PGC_S_OVERRIDE): no "$user" schema, no public domain shadowing pg_catalog. Every
        // step also pins it again (src/privilege.rs).
        pg_sys::SetConfigOption(
            c"search_path".as_ptr(),
            crate::privilege::OWN_SEARCH_PATH.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_OVERRIDE,
        );
    }
    log!(
        "{name} worker started (database {db:?}, role {})",
        role.as_deref().unwrap_or("bootstrap superuser")
    );

    let mut last_tick: Option<Instant> = None;
    let mut warned_missing = false;
    let mut last_error: Option<(String, Instant)> = None;
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
        // Off: look again after a while (SIGHUP sets the latch and wakes us at once).
        let interval = job.interval();
        let period = interval.unwrap_or(Duration::from_secs(60));
        let due = last_tick.is_none_or(|t| t.elapsed() >= period);
        if due {
            last_tick = Some(Instant::now());
            if interval.is_some() {
                match job {
                    Job::Sweep => tick(&db, &mut warned_missing),
                    Job::Challenges => challenges_tick(&db, &mut warned_missing),
                    Job::Follow => follow_tick(&db, &mut warned_missing, &mut last_error),
                }
            }
        }
        if should_stop() {
            break;
        }
        let wait = last_tick
            .map_or(period, |t| period.saturating_sub(t.elapsed()))
            .max(Duration::from_millis(1));
        wait_latch(wait);
        // Service interrupts while idle, as PostgreSQL's own workers do: without this a
        // ProcSignalBarrier (e.g. DROP DATABASE) would wait for the next tick, or forever.
        pg_sys::check_for_interrupts!();
    }
    log!("{name} worker stopping (SIGTERM)");
    // Exit code 1: the postmaster restarts us after RESTART_AFTER unless it is shutting down.
    unsafe { pg_sys::proc_exit(1) };
}

/// SIGTERM: PostgreSQL's `die` (query cancel of whatever statement runs, the process exits at the
/// next interrupt check, even inside a lock wait) plus `ShutdownRequestPending` for the loops.
unsafe extern "C-unwind" fn on_sigterm(arg: i32) {
    unsafe {
        (&raw mut pg_sys::ShutdownRequestPending).write_volatile(1);
        pg_sys::die(arg);
    }
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
    /// As the extension owner, search_path pinned, security-restricted (src/privilege.rs): the
    /// worker's role (an operator, `worker_role`) gets what `CALL audius_indexer.sweep()` gives.
    fn sql<R>(&mut self, f: impl FnOnce() -> R) -> R {
        raw_transaction(|| crate::privilege::as_extension_owner(f))
    }
}

/// `f` in a transaction of its own with a snapshot, committed; as the worker's own role.
fn raw_transaction<R>(f: impl FnOnce() -> R) -> R {
    {
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
            Err(crate::errors::caught_message(&e))
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
    match extension_installed(WORKER_TYPE, db, warned_missing) {
        Ok(true) => {}
        Ok(false) => return,
        Err(msg) => return tick_failed(None, &msg),
    }
    if !path_on(Path::Sweep) {
        return;
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

thread_local! {
    /// Whether this worker said it waits for the catalog of its version (one LOG line when it
    /// starts waiting, one when it acts again).
    static WAITING_FOR_CATALOG: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the extension is installed in the worker's database, at this library's version
/// (src/catalog_version.rs), and the worker's role may act; while not, the worker idles and says so
/// once (`warned_missing`; the version wait has a LOG line of its own).
fn extension_installed(name: &str, db: &str, warned_missing: &mut bool) -> Result<bool, String> {
    let (installed, operator, version) = catching(|| {
        raw_transaction(|| {
            Spi::get_three::<bool, bool, String>(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'audius_indexer'), \
                        EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) 'audius_indexer_operator') \
                    AND pg_catalog.pg_has_role('audius_indexer_operator', 'MEMBER'), \
                        (SELECT e.extversion::pg_catalog.text FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'audius_indexer')",
            )
            .map(|(a, b, v)| (a.unwrap_or(false), b.unwrap_or(false), v))
            .unwrap_or((false, false, None))
        })
    })?;
    if !installed {
        if !*warned_missing {
            log!("{name}: extension not installed in database {db:?}; idle until it is");
            *warned_missing = true;
        }
        return Ok(false);
    }
    // The catalog of another version: between the restart onto a new library and ALTER EXTENSION
    // UPDATE (README: upgrade in place). Nothing of this library may run against it.
    let waiting = WAITING_FOR_CATALOG.with(std::cell::Cell::get);
    if let Some((msg, todo)) = crate::catalog_version::describe(version.as_deref()) {
        if !waiting {
            log!("{name}: database {db:?}: {msg}; idle until the versions match ({todo})");
            WAITING_FOR_CATALOG.with(|w| w.set(true));
        }
        return Ok(false);
    }
    if waiting {
        log!(
            "{name}: the extension in database {db:?} is at version {} now; acting",
            crate::catalog_version::LIBRARY_VERSION
        );
        WAITING_FOR_CATALOG.with(|w| w.set(false));
    }
    if !operator {
        if !*warned_missing {
            warning!(
                "{name}: audius_indexer.worker_role {:?} is not a member of audius_indexer_operator in database {db:?}; idle until it is (GRANT audius_indexer_operator TO ...)",
                gucs::string(&gucs::WORKER_ROLE)
            );
            *warned_missing = true;
        }
        return Ok(false);
    }
    *warned_missing = false;
    Ok(true)
}

/// Whether the DBA turned `path` on in this database (`audius_indexer.enable()`): off or stopped,
/// the worker does nothing (no RPC, no write).
fn path_on(path: Path) -> bool {
    in_transaction(|| crate::paths::state(path).0 == crate::paths::State::On).unwrap_or(false)
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

/// One run of the challenge processors in a transaction of its own, through the SQL function
/// (same privileges and search_path as a psql or pg_cron call). Idle while the extension or the
/// Audius `user_events` table is missing; a failing run is logged, the loop goes on.
fn challenges_tick(db: &str, warned_missing: &mut bool) {
    if unsafe { pg_sys::RecoveryInProgress() } {
        return;
    }
    let batch = gucs::CHALLENGES_BATCH_SIZE.get();
    if extension_installed(CHALLENGES_WORKER_TYPE, db, warned_missing) != Ok(true)
        || !path_on(Path::Challenges)
    {
        return;
    }
    // As the worker's role, an operator: process_user_event_challenges() is SECURITY DEFINER.
    let outcome = catching(|| {
        raw_transaction(|| {
            // Read-only SPI throughout: pgrx's read-write path gives the transaction an id, and
            // the processors take their reference point only in a transaction that has none.
            let ready = crate::privilege::exists("public.user_events")
                && crate::privilege::exists("public.indexing_checkpoints");
            if !ready {
                return None;
            }
            let rows = Spi::connect(|client| {
                client
                .select(
                    "SELECT challenge_id, upserts, error FROM audius_indexer.process_user_event_challenges($1)",
                    None,
                    &[batch.into()],
                )?
                .map(|r| {
                    Ok((
                        r.get::<String>(1)?.unwrap_or_default(),
                        r.get::<i32>(2)?.unwrap_or(0),
                        r.get::<String>(3)?,
                    ))
                })
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
            });
            let rows = rows.unwrap_or_else(|e| {
                crate::errors::raise(
                    PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                    format!("process_user_event_challenges: {e}"),
                    None,
                    None,
                )
            });
            // The run found a second writer and stopped the path: that said its one WARNING.
            let stopped = crate::privilege::first_row::<String>(
                "SELECT p.state FROM audius_indexer.path_status p WHERE p.path OPERATOR(pg_catalog.=) 'challenges'",
                &[],
            )
            .as_deref()
                == Some("stopped");
            Some((rows, stopped))
        })
    });
    match outcome {
        Ok(None) => {
            if !*warned_missing {
                log!("{CHALLENGES_WORKER_TYPE}: extension or tables user_events/indexing_checkpoints missing in database {db:?}; idle until they exist");
                *warned_missing = true;
            }
        }
        Ok(Some((rows, stopped))) => {
            *warned_missing = false;
            for (id, upserts, error) in rows {
                if stopped {
                    continue;
                }
                if let Some(e) = error {
                    warning!("{CHALLENGES_WORKER_TYPE}: processor {id} failed: {e}");
                } else if upserts > 0 {
                    log!("{CHALLENGES_WORKER_TYPE}: processor {id}: {upserts} upserts");
                }
            }
        }
        Err(msg) => {
            if !should_stop() {
                warning!("{CHALLENGES_WORKER_TYPE} run failed: {msg}");
            }
        }
    }
}

/// One follower step: its SQL phases in transactions of their own, its network phases with none
/// open. A failing step is rolled back, recorded in `follow_status.last_error` and logged (the
/// same message at most once a minute: a node down for an hour is not 720 WARNINGs).
fn follow_tick(db: &str, warned_missing: &mut bool, last_error: &mut Option<(String, Instant)>) {
    if unsafe { pg_sys::RecoveryInProgress() } {
        return;
    }
    if extension_installed(FOLLOW_WORKER_TYPE, db, warned_missing) != Ok(true)
        || !path_on(Path::Follow)
    {
        return;
    }
    let outcome =
        catching(|| crate::follow::step(&mut OwnTransactions, None, sweep::LockScope::Session));
    match outcome {
        Ok(Some(c)) => {
            *last_error = None;
            if c.logs + c.updated + c.failed > 0 {
                log!(
                    "{FOLLOW_WORKER_TYPE}: blocks {}..{} logs={} tracked={} updated={} skipped={} failed={} checkpoint={}",
                    c.from_block.unwrap_or(0),
                    c.to_block.unwrap_or(0),
                    c.logs,
                    c.tracked,
                    c.updated,
                    c.skipped,
                    c.failed,
                    c.checkpoint.unwrap_or(0)
                );
            }
        }
        Ok(None) => {}
        Err(msg) => {
            let stopping = should_stop();
            let repeat = last_error
                .as_ref()
                .is_some_and(|(m, at)| *m == msg && at.elapsed() < Duration::from_secs(60));
            if !stopping && !repeat {
                warning!("{FOLLOW_WORKER_TYPE} step failed: {msg}");
                *last_error = Some((msg.clone(), Instant::now()));
            }
            let _ = in_transaction(move || {
                if !stopping {
                    Spi::run_with_args(
                        "SELECT audius_indexer._follow_record_error($1)",
                        &[msg.as_str().into()],
                    )
                    .ok();
                }
                sweep::release_lock(crate::follow::LOCK_KEY);
            });
        }
    }
}
