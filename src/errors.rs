//! Errors for SQL: raising an ERROR with a SQLSTATE, mapping the pure code's SQLSTATE strings, and
//! the message of a caught ERROR. A leaf module: it imports nothing of ours.

use pgrx::prelude::*;
use pgrx::{PgSqlErrorCode, PgSqlErrorCode::*};

/// Raises an ERROR with `code`, a message, and optional detail/hint. Never returns. Every ERROR of
/// the extension goes through here; its reported location is the caller's.
#[track_caller]
pub fn raise(
    code: PgSqlErrorCode,
    message: impl Into<String>,
    detail: Option<String>,
    hint: Option<String>,
) -> ! {
    let mut r = pgrx::pg_sys::panic::ErrorReport::new(code, message.into(), "audius_indexer");
    if let Some(d) = detail {
        r = r.set_detail(d);
    }
    if let Some(h) = hint {
        r = r.set_hint(h);
    }
    r.report(PgLogLevel::ERROR);
    unreachable!("ERROR returned")
}

/// The message of an ERROR or panic caught with `PgTryBuilder`.
pub fn caught_message(e: &pgrx::pg_sys::panic::CaughtError) -> String {
    use pgrx::pg_sys::panic::CaughtError::*;
    match e {
        PostgresError(r) | ErrorReport(r) => r.message().to_string(),
        RustPanic { ereport, .. } => ereport.message().to_string(),
    }
}

/// SQLSTATE string (from the pure code) → pgrx error code.
pub fn errcode(sqlstate: &str) -> PgSqlErrorCode {
    match sqlstate {
        "08001" => ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
        "08006" => ERRCODE_CONNECTION_FAILURE,
        "08P01" => ERRCODE_PROTOCOL_VIOLATION,
        "38000" => ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
        "53400" => ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
        "54000" => ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        "55000" => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        "22023" => ERRCODE_INVALID_PARAMETER_VALUE,
        _ => ERRCODE_INTERNAL_ERROR,
    }
}

/// An SPI failure (never expected: our statements are fixed) as an ERROR.
#[track_caller]
pub fn spi_error(e: pgrx::spi::Error) -> ! {
    raise(
        ERRCODE_INTERNAL_ERROR,
        format!("audius_indexer: SPI failed: {e}"),
        None,
        None,
    )
}
