//! `refresh_wallets` (event path) and `refresh_stale` (sweep tick).

use crate::sweep::{self, Counts};
use pgrx::prelude::*;

type CountsRow = (
    name!(requested, i32),
    name!(updated, i32),
    name!(failed, i32),
    name!(skipped, i32),
);

fn row(c: Counts) -> CountsRow {
    (c.requested, c.updated, c.failed, c.skipped)
}

/// Reads the given wallets through Multicall3 and upserts those whose three reads succeeded.
/// `min_blocks[i]` (optional) is the event block the read of `wallets[i]` must not be older than.
#[pg_extern(volatile, parallel_unsafe)]
fn refresh_wallets(
    wallets: Option<Array<'_, &str>>,
    min_blocks: default!(Option<Array<'_, i64>>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(requested, i32),
        name!(updated, i32),
        name!(failed, i32),
        name!(skipped, i32),
    ),
> {
    crate::catalog_version::ensure_current("refresh_wallets");
    let Some(wallets) = wallets else {
        return TableIterator::once(row(Counts::default()));
    };
    let w: Vec<Option<String>> = wallets.iter().map(|s| s.map(str::to_string)).collect();
    let m: Option<Vec<Option<i64>>> = min_blocks.map(|a| a.iter().collect());
    TableIterator::once(row(sweep::refresh_wallets(w, m)))
}

/// One sweep tick: the `batch` stalest wallets by `updated_at` (skipping backed-off ones), read
/// and upserted. When another call holds the sweep, returns zeros at once (with a NOTICE).
/// (The columns are spelled out as refresh_wallets()'s: pgrx cannot read a type alias in a
/// `#[pg_extern]` signature, pgcentralfoundation/pgrx#2067.)
#[pg_extern(volatile, parallel_unsafe)]
fn refresh_stale(
    batch: default!(i32, 50),
) -> TableIterator<
    'static,
    (
        name!(requested, i32),
        name!(updated, i32),
        name!(failed, i32),
        name!(skipped, i32),
    ),
> {
    crate::catalog_version::ensure_current("refresh_stale");
    match sweep::refresh_stale(batch) {
        Some(c) => TableIterator::once(row(c)),
        None => {
            notice!("audius_indexer: another refresh_stale is running; nothing done");
            TableIterator::once(row(Counts::default()))
        }
    }
}

// ------------------------------------------------------------------------------------------------
// CALL audius_indexer.sweep(batch): a sweep tick that commits around its RPC (for pg_cron).
// ------------------------------------------------------------------------------------------------
//
// A C-language procedure (pgrx has no procedure support): it needs SPI_commit, which only a
// procedure called by CALL outside a transaction block may use. Claim (transaction 1, committed),
// read with no snapshot, write (transaction 2); the outcome, counts or error, is recorded in
// sweep_status like the worker's. The SQL phases run as the extension's owner, as the SECURITY
// DEFINER refresh functions do (a procedure that commits cannot be SECURITY DEFINER): each in a
// security-restricted operation with search_path = pg_catalog, pg_temp (src/privilege.rs), and the
// statements on Audius tables inside them as those tables' owners.

extension_sql!(
    r#"
CREATE PROCEDURE audius_indexer.sweep(batch integer DEFAULT NULL)
LANGUAGE c AS 'MODULE_PATHNAME', 'audius_indexer_sweep_procedure';
COMMENT ON PROCEDURE audius_indexer.sweep(integer) IS
  'One sweep tick that commits around its RPC reads (no snapshot held while waiting for the node): the batch stalest wallets (NULL = audius_indexer.sweep_batch_size). The pg_cron command. Outcome recorded in sweep_status.';
"#,
    name = "sweep_procedure",
    requires = ["sweep"]
);

#[unsafe(no_mangle)]
#[doc(hidden)]
pub extern "C" fn pg_finfo_audius_indexer_sweep_procedure() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

/// Runs `f` with a fresh active snapshot, as `owner`, in a security-restricted operation with
/// the search_path pinned (`privilege::run_as`): the procedure cannot be SECURITY DEFINER, so
/// this is where it gets what a SECURITY DEFINER ... SET search_path function would have.
fn as_owner_with_snapshot<R>(owner: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
    let r = crate::privilege::run_as(owner, crate::privilege::OWN_SEARCH_PATH, f);
    unsafe { pg_sys::PopActiveSnapshot() };
    r
}

/// The procedure's steps: each SQL step as the extension owner with a fresh snapshot, then
/// committed (SPI_commit starts the next transaction, which takes no snapshot until the next SQL
/// step); the reads run in that snapshot-less transaction.
struct CommitBetweenSteps {
    owner: pg_sys::Oid,
}

impl sweep::Steps for CommitBetweenSteps {
    fn sql<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let r = as_owner_with_snapshot(self.owner, f);
        unsafe { pg_sys::SPI_commit() };
        r
    }
}

/// # Safety
/// Called by PostgreSQL's fmgr for `CALL audius_indexer.sweep(...)`.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn audius_indexer_sweep_procedure(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let (nonatomic, batch) = unsafe {
        let ctx = (*fcinfo).context;
        let nonatomic = !ctx.is_null()
            && (*ctx).type_ == pg_sys::NodeTag::T_CallContext
            && !(*(ctx as *mut pg_sys::CallContext)).atomic;
        let arg = (*fcinfo).args.as_slice(1)[0];
        let batch = (!arg.isnull).then(|| arg.value.value() as i32);
        (nonatomic, batch)
    };
    if !nonatomic {
        crate::errors::raise(
            pgrx::PgSqlErrorCode::ERRCODE_INVALID_TRANSACTION_TERMINATION,
            "audius_indexer.sweep() commits between its steps and cannot run inside a transaction block or a function",
            None,
            Some("Run CALL audius_indexer.sweep() on its own (as pg_cron does), or use SELECT audius_indexer.refresh_stale(batch) inside a transaction.".into()),
        );
    }
    crate::catalog_version::ensure_current("sweep");
    sweep::ensure_primary("sweep");
    let batch = batch.unwrap_or_else(|| crate::gucs::SWEEP_BATCH_SIZE.get());
    sweep::validate_batch(batch);
    if unsafe { pg_sys::SPI_connect_ext(pg_sys::SPI_OPT_NONATOMIC as i32) }
        != pg_sys::SPI_OK_CONNECT as i32
    {
        crate::errors::raise(
            pgrx::PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "audius_indexer.sweep(): SPI_connect_ext failed",
            None,
            None,
        );
    }
    // Looked up as the caller, with the search_path pinned like every other step.
    let owner = as_owner_with_snapshot(
        unsafe { pg_sys::GetUserId() },
        crate::privilege::extension_owner,
    );
    let mut started = None;
    let outcome = PgTryBuilder::new(std::panic::AssertUnwindSafe(|| {
        Ok(sweep::tick(
            &mut CommitBetweenSteps { owner },
            batch,
            sweep::LockScope::Session,
            &mut started,
        ))
    }))
    .catch_others(Err)
    .execute();
    match outcome {
        Ok(Some(c)) => {
            unsafe { pg_sys::SPI_finish() };
            notice!(
                "audius_indexer.sweep: requested={} updated={} failed={} skipped={}",
                c.requested,
                c.updated,
                c.failed,
                c.skipped
            );
        }
        Ok(None) => {
            unsafe { pg_sys::SPI_finish() };
            notice!("audius_indexer: another sweep is running; nothing done");
        }
        Err(e) => {
            // Roll the failed work back, record the error and free the single flight in a
            // transaction of their own (committed), then report the error to the caller.
            let msg = crate::errors::caught_message(&e);
            unsafe { pg_sys::SPI_rollback() };
            as_owner_with_snapshot(owner, || {
                sweep::record_tick_error(started, &msg);
                sweep::release_session_lock();
            });
            unsafe {
                pg_sys::SPI_commit();
                pg_sys::SPI_finish();
            }
            e.rethrow();
        }
    }
    pg_sys::Datum::from(0)
}

/// The balance upsert for `upsert_wallet_balances()` (which checks the keys first): the Go
/// eth-indexer's NULLIF/GREATEST block rules, `only_if_not_older` leaving rows stamped with a newer
/// block alone (only marked checked). Runs as the owner of `eth_wallet_balances`
/// (src/audius_tables.rs). Returns the wallets written.
#[pg_extern(name = "_upsert_balances", volatile, parallel_unsafe)]
fn upsert_balances_as_owner(
    wallets: Array<'_, &str>,
    balances: Array<'_, AnyNumeric>,
    blocks: Array<'_, i64>,
    only_if_not_older: bool,
) -> SetOfIterator<'static, String> {
    crate::catalog_version::ensure_current("_upsert_balances");
    let keys: Vec<&str> = wallets.iter().map(|w| w.unwrap_or_default()).collect();
    let values: Vec<Option<String>> = balances.iter().map(|b| b.map(|n| n.to_string())).collect();
    let written = crate::audius_tables::upsert_balances(
        keys,
        values.iter().map(Option::as_deref).collect(),
        blocks.iter().collect(),
        only_if_not_older,
    );
    SetOfIterator::new(written)
}
