//! The four paths (sweep, follow, challenges, enroll) and their per-database state
//! (`audius_indexer.paths`): nothing acts until the DBA turns a path on, and a path that finds the
//! rows it owns moved by another writer stops itself and waits for the DBA (`sql/paths.sql` has the
//! states). `enroll` has no worker: it is the enrollment triggers (`src/enrollment.rs`), which do
//! nothing while it is off.
//!
//! Rows a path owns, and so what it can detect:
//! - follow: the `audio_transfers` row of `eth_indexer_checkpoints` (`follow_state.written_checkpoint`
//!   holds the value it last stored);
//! - challenges: the `challenges:<id>:last_blocknumber` rows of `indexing_checkpoints`
//!   (`challenge_processor_state.ue_checkpoint` holds the value each processor last stored);
//! - sweep: none it can tell apart. The Go eth-indexer's stale sweep writes `eth_wallet_balances`
//!   rows exactly as ours does, so a second sweep is not detectable (and harmless: the block guard
//!   keeps newer rows; an older Go read can still overwrite a newer row, as it always could).

use crate::errors::{raise, spi_error};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Path {
    Sweep,
    Follow,
    Challenges,
    Enroll,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum State {
    Off,
    On,
    Stopped,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::Sweep => "sweep",
            Path::Follow => "follow",
            Path::Challenges => "challenges",
            Path::Enroll => "enroll",
        }
    }

    pub fn parse(s: &str) -> Path {
        match s {
            "sweep" => Path::Sweep,
            "follow" => Path::Follow,
            "challenges" => Path::Challenges,
            "enroll" => Path::Enroll,
            other => raise(
                ERRCODE_INVALID_PARAMETER_VALUE,
                format!(
                    "unknown path {other:?}: expected 'sweep', 'follow', 'challenges' or 'enroll'"
                ),
                None,
                None,
            ),
        }
    }
}

/// The state of `path` and why it stopped (the extension's own table; any role that may call the
/// path's functions runs this as the extension owner).
pub fn state(path: Path) -> (State, Option<String>) {
    let row = Spi::connect(|c| {
        let t = c.select(
            "SELECT p.state, p.stopped_reason FROM audius_indexer.paths p WHERE p.path OPERATOR(pg_catalog.=) $1",
            Some(1),
            &[path.name().into()],
        )?;
        if t.is_empty() {
            return Ok((None, None));
        }
        let r = t.first();
        Ok::<_, pgrx::spi::Error>((r.get::<String>(1)?, r.get::<String>(2)?))
    })
    .unwrap_or_else(|e| spi_error(e));
    let s = match row.0.as_deref() {
        Some("on") => State::On,
        Some("stopped") => State::Stopped,
        _ => State::Off,
    };
    (s, row.1)
}

/// ERROR 55000 when `path` was stopped by a detected second writer: nothing of it runs (SQL and
/// pg_cron calls included) until the DBA decides.
pub fn ensure_not_stopped(path: Path) {
    if let (State::Stopped, reason) = state(path) {
        raise(
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "audius_indexer: the {} path is stopped: {}",
                path.name(),
                reason.unwrap_or_default()
            ),
            None,
            Some(format!(
                "Stop the other writer and SELECT audius_indexer.enable('{0}') to take over again, or SELECT audius_indexer.disable('{0}') to hand over.",
                path.name()
            )),
        );
    }
}

/// A second writer moved rows `path` owns: the path stops (state `stopped`, the reason recorded,
/// one WARNING) and waits for the DBA.
pub fn stop(path: Path, reason: &str) {
    Spi::run_with_args(
        "SELECT audius_indexer._stop_path($1, $2)",
        &[path.name().into(), reason.into()],
    )
    .unwrap_or_else(|e| spi_error(e));
    warning!(
        "audius_indexer: the {} path stopped itself: {reason}; it waits for the DBA (audius_indexer.enable('{0}') to take over again, audius_indexer.disable('{0}') to hand over)",
        path.name()
    );
}

pub fn set_state(path: Path, state: &str) {
    Spi::run_with_args(
        "UPDATE audius_indexer.paths SET state = $2, changed_at = pg_catalog.clock_timestamp(), \
                changed_by = pg_catalog.session_user()::pg_catalog.text, stopped_reason = NULL, stopped_at = NULL \
          WHERE path OPERATOR(pg_catalog.=) $1",
        &[path.name().into(), state.into()],
    )
    .unwrap_or_else(|e| spi_error(e));
}

/// Records the `audio_transfers` value the follower stored (or adopted).
pub fn record_written_checkpoint(block: Option<i64>) {
    Spi::run_with_args(
        "UPDATE audius_indexer.follow_state SET written_checkpoint = $1",
        &[block.into()],
    )
    .unwrap_or_else(|e| spi_error(e));
}

/// The `audio_transfers` value the follower last stored.
pub fn written_checkpoint() -> Option<i64> {
    crate::privilege::first_row::<i64>(
        "SELECT s.written_checkpoint FROM audius_indexer.follow_state s",
        &[],
    )
}

pub fn lock_xact(key: (i32, i32)) {
    Spi::run_with_args(
        "SELECT pg_catalog.pg_advisory_xact_lock($1, $2)",
        &[key.0.into(), key.1.into()],
    )
    .unwrap_or_else(|e| spi_error(e));
}
