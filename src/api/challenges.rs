//! The incremental challenge processors from SQL.

use crate::challenges::run;
use pgrx::prelude::*;

/// One run of the Phase 3 processors m, r, rv, rd (one row each, in that order): each rescans the
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
