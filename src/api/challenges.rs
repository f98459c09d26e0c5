//! The incremental challenge processors from SQL.

use crate::challenges::run;
use crate::privilege::{as_owner_of, exists, INDEXING_CHECKPOINTS, USERS, USER_EVENTS};
use pgrx::prelude::*;

/// One run of the challenge processors m, r, rv, rd (one row each, in that order): each rescans the
/// `user_events` rows past its checkpoint (at most `batch`), re-derives the affected users'
/// `user_challenges` rows and moves its checkpoint. Each runs in its own subtransaction: a failure
/// rolls back only that processor and is reported in `error`.
#[pg_extern(volatile, parallel_unsafe)]
fn process_user_event_challenges(
    batch: default!(i32, 5000),
) -> TableIterator<
    'static,
    (
        name!(challenge_id, String),
        name!(dirty_rows, i32),
        name!(users, i32),
        name!(upserts, i32),
        name!(checkpoint_before, Option<i64>),
        name!(checkpoint_after, Option<i64>),
        name!(error, Option<String>),
    ),
> {
    crate::catalog_version::ensure_current("process_user_event_challenges");
    let rows: Vec<_> = run::run_all(batch)
        .into_iter()
        .map(|o| {
            (
                o.challenge_id.to_string(),
                o.dirty_rows,
                o.users,
                o.upserts,
                o.checkpoint_before,
                o.checkpoint_after,
                o.error,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// The four processors' checkpoint keys in `indexing_checkpoints`, in the order m, r, rv, rd.
fn checkpoint_keys() -> Vec<(String, String)> {
    crate::challenges::ALL
        .iter()
        .map(|p| (p.id().to_string(), p.checkpoint_key()))
        .collect()
}

/// `max(blocknumber)` of an Audius table, read as its owner (None when the table is empty).
fn max_blocknumber(table: &str) -> Option<i64> {
    as_owner_of(table, || {
        crate::privilege::first_row::<i64>(
            &format!("SELECT pg_catalog.max(t.blocknumber)::pg_catalog.int8 FROM {table} t"),
            &[],
        )
    })
}

/// Checkpoint and head per processor for `challenge_processor_status`, read at query time as the
/// owners of `indexing_checkpoints` and `user_events` (NULLs while those tables are missing).
#[pg_extern(name = "_challenge_checkpoints", stable, parallel_unsafe)]
pub fn challenge_checkpoints() -> TableIterator<
    'static,
    (
        name!(challenge_id, String),
        name!(checkpoint, Option<i64>),
        name!(head, Option<i64>),
    ),
> {
    crate::catalog_version::ensure_current("_challenge_checkpoints");
    let keys = checkpoint_keys();
    if !exists(USER_EVENTS) || !exists(INDEXING_CHECKPOINTS) {
        return TableIterator::new(
            keys.into_iter()
                .map(|(id, _)| (id, None, None))
                .collect::<Vec<_>>(),
        );
    }
    let head = max_blocknumber(USER_EVENTS);
    let rows: Vec<_> = run::current_checkpoints()
        .into_iter()
        .map(|(id, cp)| (id.to_string(), cp, head))
        .collect();
    TableIterator::new(rows)
}

/// Cutover "start from now" (Audius migration 0211): the m, r, rv, rd checkpoints set to the
/// current `max(user_events.blocknumber)` where absent (never moved where present), and the r/rv
/// verification scan pinned to `max(users.blocknumber)` where it has no position yet. Returns the
/// four checkpoints. Each Audius table is read or written as its owner.
#[pg_extern(volatile, parallel_unsafe)]
fn seed_challenge_checkpoints() -> TableIterator<
    'static,
    (
        name!(tablename, String),
        name!(last_checkpoint, Option<i64>),
    ),
> {
    crate::catalog_version::ensure_current("seed_challenge_checkpoints");
    // not while a run is in progress
    Spi::run("SELECT pg_catalog.pg_advisory_xact_lock(1635083621, 3)")
        .unwrap_or_else(|e| crate::errors::spi_error(e));
    let keys = checkpoint_keys();
    let head = max_blocknumber(USER_EVENTS).unwrap_or(0);
    let names: Vec<String> = keys.iter().map(|(_, k)| k.clone()).collect();
    as_owner_of(INDEXING_CHECKPOINTS, || {
        Spi::run_with_args(
            "INSERT INTO public.indexing_checkpoints AS ic (tablename, last_checkpoint) \
             SELECT k.name, $2 FROM pg_catalog.unnest($1::pg_catalog.text[]) AS k(name) \
             ON CONFLICT ON CONSTRAINT indexing_checkpoints_pkey DO NOTHING",
            &[names.into(), head.into()],
        )
        .unwrap_or_else(|e| crate::errors::spi_error(e))
    });
    let users_head = max_blocknumber(USERS).unwrap_or(0);
    Spi::run_with_args(
        "UPDATE audius_indexer.challenge_processor_state s \
            SET users_block = $1, users_user_id = NULL, users_txhash = NULL \
          WHERE s.challenge_id OPERATOR(pg_catalog.=) ANY (ARRAY['r', 'rv']::pg_catalog.text[]) \
            AND s.users_block IS NULL",
        &[users_head.into()],
    )
    .unwrap_or_else(|e| crate::errors::spi_error(e));
    let rows: Vec<_> = keys
        .into_iter()
        .zip(run::current_checkpoints())
        .filter_map(|((_, key), (_, cp))| cp.map(|cp| (key, Some(cp))))
        .collect();
    TableIterator::new(rows)
}
