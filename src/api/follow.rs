//! The Transfer-log follower from SQL.

use crate::follow;
use crate::sweep::{InCallersTransaction, LockScope};
use pgrx::prelude::*;

/// One step of the event path: AUDIO `Transfer` logs from the `audio_transfers` checkpoint + 1 up
/// to `head - confirmations` (at most `max_blocks`), the tracked `from`/`to` wallets refreshed with
/// their transfer's block as the minimum, the checkpoint advanced over the ranges processed. In
/// the caller's transaction; single flight (an overlapping call returns no row at once).
#[pg_extern(volatile, parallel_unsafe)]
fn follow_transfers(
    max_blocks: default!(Option<i64>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(from_block, Option<i64>),
        name!(to_block, Option<i64>),
        name!(logs, i32),
        name!(candidates, i32),
        name!(tracked, i32),
        name!(updated, i32),
        name!(skipped, i32),
        name!(failed, i32),
        name!(checkpoint, Option<i64>),
    ),
> {
    crate::catalog_version::ensure_current("follow_transfers");
    let Some(c) = follow::step(
        &mut InCallersTransaction,
        max_blocks,
        LockScope::Transaction,
    ) else {
        pgrx::notice!("audius_indexer.follow_transfers: another step is running; nothing done");
        return TableIterator::new(Vec::new());
    };
    TableIterator::once((
        c.from_block,
        c.to_block,
        c.logs,
        c.candidates,
        c.tracked,
        c.updated,
        c.skipped,
        c.failed,
        c.checkpoint,
    ))
}
