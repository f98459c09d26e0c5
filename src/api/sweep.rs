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
    let Some(wallets) = wallets else {
        return TableIterator::once(row(Counts::default()));
    };
    let w: Vec<Option<String>> = wallets.iter().map(|s| s.map(str::to_string)).collect();
    let m: Option<Vec<Option<i64>>> = min_blocks.map(|a| a.iter().collect());
    TableIterator::once(row(sweep::refresh_wallets(w, m)))
}

/// One sweep tick: the `batch` stalest wallets by `updated_at` (skipping backed-off ones), read
/// and upserted. When another call holds the sweep, returns zeros at once (with a NOTICE).
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
    match sweep::refresh_stale(batch) {
        Some(c) => TableIterator::once(row(c)),
        None => {
            notice!("audius_indexer: another refresh_stale is running; nothing done");
            TableIterator::once(row(Counts::default()))
        }
    }
}
