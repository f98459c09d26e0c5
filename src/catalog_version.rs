//! The version gate: this library acts only on the catalog of its own version.
//!
//! With the library in `shared_preload_libraries`, every backend inherits the library the postmaster
//! loaded, and PostgreSQL finds an already loaded library by its file name. So an upgrade is, in this
//! order (README, "Install from the package, upgrade in place"): install the new package (nothing
//! changes: the running server keeps the old library mapped), restart (the new library is loaded,
//! the catalog is still the old one), `ALTER EXTENSION audius_indexer UPDATE` (the catalog catches
//! up). Between the restart and the UPDATE the new library meets the old catalog; this module is
//! what it does then:
//! - the workers idle, with one LOG line each, until `pg_extension.extversion` equals this library's
//!   `CARGO_PKG_VERSION` (src/worker.rs asks [`mismatch`] on every tick);
//! - every SQL entry point of the library raises ERROR 55000 with the command to run
//!   ([`ensure_current`]); doctor() and health() report it as their only (failed) check instead;
//! - not gated: the update script (and CREATE EXTENSION), which run with `creating_extension` set
//!   and must call the new functions against a catalog that is still being built; CREATE OR REPLACE
//!   FUNCTION ... LANGUAGE c, which only looks the symbol up (it never calls the function); the Rust
//!   triggers, which fire on the Audius application's own writes (an ERROR there would fail the
//!   application's INSERT) and read nothing of the extension's catalog; trigger_statements() and
//!   trigger_plans_cached() (constants and this backend's counter).
//!
//! The reverse (the catalog newer than the library: an UPDATE run before the restart) is refused
//! the same way, with "restart the server" as the remedy. A leaf above `errors`: it imports nothing
//! else of ours.

use crate::errors::raise;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE;
use std::sync::atomic::{AtomicU32, Ordering};

/// The version this library was built as (Cargo.toml), the one its catalog must have.
pub const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The local transaction id in which the check last passed (0 = never): one catalog read per
/// transaction, however many rows call a gated function.
static CHECKED_IN: AtomicU32 = AtomicU32::new(0);

/// `extversion` of audius_indexer in this database (None: not installed). Read-only SPI (no
/// transaction id is assigned); a snapshot is pushed when none is active (e.g. a CALL).
pub fn catalog_version() -> Option<String> {
    let pushed = unsafe {
        if pg_sys::ActiveSnapshotSet() {
            false
        } else {
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
            true
        }
    };
    let v = Spi::connect(|c| {
        let t = c.select(
            "SELECT e.extversion::pg_catalog.text FROM pg_catalog.pg_extension e \
              WHERE e.extname OPERATOR(pg_catalog.=) 'audius_indexer'",
            Some(1),
            &[],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        t.first().get::<String>(1)
    });
    if pushed {
        unsafe { pg_sys::PopActiveSnapshot() };
    }
    v.unwrap_or_else(|e| crate::errors::spi_error(e))
}

fn numbers(v: &str) -> Vec<u64> {
    v.split(['.', '-'])
        .map(|p| p.parse::<u64>().unwrap_or(0))
        .collect()
}

/// What is wrong when the catalog's version is not this library's: (message, what to do).
pub fn describe(catalog: Option<&str>) -> Option<(String, String)> {
    let catalog = catalog?;
    if catalog == LIBRARY_VERSION {
        return None;
    }
    let msg = format!(
        "the extension audius_indexer in this database is version {catalog}, the loaded library is {LIBRARY_VERSION}"
    );
    let todo = if numbers(catalog) < numbers(LIBRARY_VERSION) {
        "run ALTER EXTENSION audius_indexer UPDATE in this database".to_string()
    } else {
        format!("restart the server: it still runs the library of {LIBRARY_VERSION} (README: upgrade in place)")
    };
    Some((msg, todo))
}

/// The mismatch in this database, if any (None also when the extension is not installed).
pub fn mismatch() -> Option<(String, String)> {
    describe(catalog_version().as_deref())
}

/// Raises ERROR 55000 when this database's extension is not at this library's version. Called first
/// by every SQL entry point (see the module comment for what is not gated). `what` names the
/// function in the message.
pub fn ensure_current(what: &str) {
    if unsafe { pg_sys::creating_extension } {
        return; // CREATE EXTENSION / ALTER EXTENSION UPDATE: the script knows what it calls
    }
    let lxid = unsafe { pg_sys::MyProc.as_ref().map_or(0, |p| p.lxid) };
    if lxid != 0 && CHECKED_IN.load(Ordering::Relaxed) == lxid {
        return;
    }
    match mismatch() {
        None => CHECKED_IN.store(lxid, Ordering::Relaxed),
        Some((msg, todo)) => raise(
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("audius_indexer.{what}: {msg}: {todo}"),
            None,
            Some(
                "After installing a new package: restart, then ALTER EXTENSION audius_indexer UPDATE in every database that has the extension (README: upgrade in place)."
                    .into(),
            ),
        ),
    }
}

/// For doctor() and health(), which never raise: the one failed check to report instead of the
/// others, when the catalog is not this library's.
pub fn check_row() -> Option<(String, bool, String)> {
    mismatch().map(|(msg, todo)| {
        (
            "extension version".to_string(),
            false,
            format!("{msg}: {todo}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_version_is_no_mismatch() {
        assert!(describe(Some(LIBRARY_VERSION)).is_none());
        assert!(describe(None).is_none()); // not installed: nothing to gate
    }

    #[test]
    fn older_catalog_asks_for_the_update_newer_one_for_a_restart() {
        let (msg, todo) = describe(Some("0.0.1")).unwrap();
        assert!(
            msg.contains("version 0.0.1") && msg.contains(LIBRARY_VERSION),
            "{msg}"
        );
        assert_eq!(
            todo,
            "run ALTER EXTENSION audius_indexer UPDATE in this database"
        );
        let (_, todo) = describe(Some("999.0.0")).unwrap();
        assert!(todo.starts_with("restart the server"), "{todo}");
    }

    #[test]
    fn versions_compare_as_numbers() {
        assert!(numbers("0.10.0") > numbers("0.9.0"));
        assert!(numbers("0.2.0") < numbers("0.3.0"));
        assert!(numbers("1.0.0") > numbers("0.99.99"));
    }
}
