//! `BEGIN … EXCEPTION WHEN OTHERS THEN RAISE WARNING …` for Rust trigger bodies, and the
//! subtransaction under it ([`in_subtransaction`]) for any body: the trigger functions
//! (src/triggers/), the enrollment trigger, each challenge processor's run and `doctor()`.
//!
//! The disbursement triggers must never make the disbursement insert fail: any error inside them
//! becomes `WARNING:  An error occurred in <tg_name>: <message>` and none of their partial work may
//! remain. This is what PL/pgSQL does for a block with an EXCEPTION clause (pl_exec.c,
//! `exec_stmt_block`), reproduced here:
//!
//! 1. remember `CurrentMemoryContext` and `CurrentResourceOwner`;
//! 2. `BeginInternalSubTransaction`, switch back to the caller's memory context;
//! 3. run the body; on success `ReleaseCurrentSubTransaction` and restore context and owner;
//! 4. on a PostgreSQL error, a Rust panic or an `Err` from the body:
//!    `RollbackAndReleaseCurrentSubTransaction`, restore context and owner, then emit the WARNING.
//!
//! Like `WHEN OTHERS`, this does not swallow `query_canceled` (statement timeout, cancel request) or
//! `assert_failure`: those roll the subtransaction back and are re-thrown.
//!
//! The SPI connection must be opened *before* calling [`run_catching`] (as PL/pgSQL does): an aborted
//! subtransaction then only resets the executor state of that connection (`AtEOSubXact_SPI`), and the
//! connection stays usable.

use std::panic::AssertUnwindSafe;

use pgrx::pg_sys::{self, panic::CaughtError, PgTryBuilder};
use pgrx::PgSqlErrorCode;

/// Why a guarded body failed.
enum Failure {
    /// The body returned an error value (not a PostgreSQL error).
    Returned(String),
    /// A PostgreSQL error or a Rust panic.
    Caught(Box<CaughtError>),
}

/// Runs `body` in an internal subtransaction; errors become a WARNING naming `tg_name`.
///
/// Returns `true` when the body completed and its work was kept.
pub fn run_catching<E, F>(tg_name: &str, body: F) -> bool
where
    E: std::fmt::Display,
    F: FnOnce() -> Result<(), E>,
{
    match in_subtransaction(body) {
        Ok(()) => true,
        Err(failure) => {
            pgrx::warning!("An error occurred in {}: {}", tg_name, failure.message);
            false
        }
    }
}

/// What [`in_subtransaction`] reports for a body that failed (its work is already rolled back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// SQLSTATE of a PostgreSQL error; `XX000` for a Rust panic or an `Err` of the body.
    pub sqlstate: String,
    pub message: String,
}

/// Runs `body` in an internal subtransaction (PL/pgSQL's `BEGIN … EXCEPTION WHEN OTHERS`): kept
/// on success; on an error, panic or `Err` rolled back and reported. Cancel and `assert_failure`
/// are rolled back and re-thrown.
pub fn in_subtransaction<T, E, F>(body: F) -> Result<T, Failed>
where
    E: std::fmt::Display,
    F: FnOnce() -> Result<T, E>,
{
    // SAFETY: plain reads of backend globals; we are on the backend's main thread inside a
    // transaction, where BeginInternalSubTransaction is allowed.
    let (old_cxt, old_owner) =
        unsafe { (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner) };
    unsafe {
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::CurrentMemoryContext = old_cxt;
    }
    let restore = move || unsafe {
        pg_sys::CurrentMemoryContext = old_cxt;
        pg_sys::CurrentResourceOwner = old_owner;
    };

    let outcome: Result<T, Failure> = PgTryBuilder::new(AssertUnwindSafe(|| match body() {
        Ok(value) => {
            // SAFETY: the subtransaction begun above is the current one.
            unsafe { pg_sys::ReleaseCurrentSubTransaction() };
            restore();
            Ok(value)
        }
        Err(e) => Err(Failure::Returned(e.to_string())),
    }))
    .catch_others(|cause| Err(Failure::Caught(Box::new(cause))))
    .execute();

    let failure = match outcome {
        Ok(value) => return Ok(value),
        Err(f) => f,
    };

    // Abort the inner transaction: undoes every row the body wrote, any pg_notify it queued,
    // and releases its locks and buffers. The error state was already flushed by pgrx.
    unsafe {
        pg_sys::CurrentMemoryContext = old_cxt;
        pg_sys::RollbackAndReleaseCurrentSubTransaction();
    }
    restore();

    Err(match failure {
        Failure::Returned(message) => Failed {
            sqlstate: "XX000".into(),
            message,
        },
        Failure::Caught(cause) => match &*cause {
            CaughtError::PostgresError(report) | CaughtError::ErrorReport(report) => {
                let code = report.sql_error_code();
                if code == PgSqlErrorCode::ERRCODE_QUERY_CANCELED
                    || code == PgSqlErrorCode::ERRCODE_ASSERT_FAILURE
                {
                    (*cause).rethrow();
                }
                Failed {
                    sqlstate: sqlstate_text(code),
                    message: report.message().to_owned(),
                }
            }
            CaughtError::RustPanic { ereport, .. } => Failed {
                sqlstate: "XX000".into(),
                message: ereport.message().to_owned(),
            },
        },
    })
}

/// The five-character SQLSTATE of an error code (MAKE_SQLSTATE packs 6 bits per character).
fn sqlstate_text(code: PgSqlErrorCode) -> String {
    let v = code as i32;
    (0..5)
        .map(|i| ((((v >> (6 * i)) & 0x3F) as u8) + b'0') as char)
        .collect()
}
