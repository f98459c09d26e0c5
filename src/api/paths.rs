//! Turning the four paths on and off for this database (`src/paths.rs`).

use crate::paths::{self, Path};
use pgrx::prelude::*;

/// Turns a path on in this database ('sweep', 'follow', 'challenges' or 'enroll'): its worker starts
/// acting on its next interval, and it owns its rows from now on (a second writer stops it). Also
/// the way back after a path stopped itself. Waits for a step or run in progress. 'enroll' needs
/// the enrollment triggers installed (`install_enrollment()`), else 55000.
#[pg_extern(volatile, parallel_unsafe)]
fn enable(path: &str) -> String {
    crate::catalog_version::ensure_current("enable");
    crate::sweep::ensure_primary("enable");
    enable_path(Path::parse(path))
}

/// Turns a path off in this database: its worker stops acting (SQL and pg_cron calls still run).
/// For 'follow', the wallets still owed a read are handed to the stale sweep
/// (`updated_at = '1970-01-01'`). The way to hand over to the Go services.
#[pg_extern(volatile, parallel_unsafe)]
fn disable(path: &str) -> String {
    crate::catalog_version::ensure_current("disable");
    crate::sweep::ensure_primary("disable");
    disable_path(Path::parse(path))
}

/// `enable(path)`: the path owns its rows from now on. Waits for a step or run in progress.
fn enable_path(path: Path) -> String {
    match path {
        Path::Sweep => {}
        Path::Follow => {
            paths::lock_xact(crate::follow::LOCK_KEY);
            let cp = crate::audius_tables::load_checkpoint(crate::follow::CHECKPOINT_NAME);
            paths::record_written_checkpoint(cp);
        }
        Path::Challenges => {
            paths::lock_xact(crate::challenges::RUN_LOCK_KEY);
            crate::challenges::adopt_checkpoints();
        }
        Path::Enroll => crate::enrollment::ensure_installed(),
    }
    paths::set_state(path, "on");
    format!("{} path on", path.name())
}

/// `disable(path)`: the path stops acting and hands its state back. For follow, the wallets still
/// owed a read (`follow_pending`) are handed to the stale sweep: their `eth_wallet_balances` rows
/// get `updated_at = '1970-01-01'`, so whichever sweep runs next (ours or the Go eth-indexer's)
/// reads them first. Waits for a step or run in progress.
fn disable_path(path: Path) -> String {
    let mut note = String::new();
    if path == Path::Follow {
        paths::lock_xact(crate::follow::LOCK_KEY);
        let pending: Vec<String> = Spi::connect(|c| {
            c.select(
                "SELECT f.wallet FROM audius_indexer.follow_pending f ORDER BY f.wallet",
                None,
                &[],
            )?
            .map(|r| Ok(r.get::<String>(1)?.unwrap_or_default()))
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })
        .unwrap_or_else(|e| crate::errors::spi_error(e));
        if !pending.is_empty() {
            crate::audius_tables::hand_back(&pending);
            Spi::run_with_args(
                "DELETE FROM audius_indexer.follow_pending f WHERE f.wallet OPERATOR(pg_catalog.=) ANY ($1)",
                &[pending.clone().into()],
            )
            .unwrap_or_else(|e| crate::errors::spi_error(e));
        }
        note = format!(
            "; {} pending wallet(s) handed to the stale sweep (updated_at = 1970-01-01)",
            pending.len()
        );
    }
    if path == Path::Challenges {
        paths::lock_xact(crate::challenges::RUN_LOCK_KEY);
    }
    paths::set_state(path, "off");
    format!("{} path off{note}", path.name())
}
