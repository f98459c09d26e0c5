//! SPI glue of the challenge processors: one run of the four, each in its own subtransaction.

use super::statements as sql;
use super::{Position, Processor};
use crate::triggers::subxact::{in_subtransaction, Failed};
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, SpiResult};

/// The outcome of one processor in one run (one row of `process_user_event_challenges`).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub challenge_id: &'static str,
    /// `user_events` rows scanned, plus `users` rows for `r`/`rv`.
    pub dirty_rows: i32,
    /// Distinct users whose challenges were re-derived.
    pub users: i32,
    /// Rows passed to the upsert (one per challenge and specifier).
    pub upserts: i32,
    pub checkpoint_before: Option<i64>,
    pub checkpoint_after: Option<i64>,
    pub error: Option<String>,
}

impl Outcome {
    /// Nothing done yet.
    fn empty(p: Processor) -> Outcome {
        Outcome {
            challenge_id: p.id(),
            dirty_rows: 0,
            users: 0,
            upserts: 0,
            checkpoint_before: None,
            checkpoint_after: None,
            error: None,
        }
    }
}

/// Runs the four processors in order (m, r, rv, rd) inside the caller's transaction. Each one runs
/// in a subtransaction: a failure rolls back only its own work and checkpoint and is reported;
/// the others still run. Waits for a concurrent run to finish first (one run at a time).
pub fn run_all(batch: i32) -> Vec<Outcome> {
    if batch < 1 {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("batch must be at least 1, got {batch}")
        );
    }
    Spi::connect_mut(|client| {
        client
            .update(sql::LOCK, None, &[])
            .unwrap_or_else(|e| spi_failed(e));
        super::ALL
            .iter()
            .map(|&p| {
                let mut counts = Outcome::empty(p);
                let result = in_subtransaction(|| process(client, p, batch as usize));
                match result {
                    Ok(c) => counts = c,
                    Err(Failed { sqlstate, message }) => {
                        counts.error = Some(format!("{sqlstate}: {message}"));
                        // Its own work is rolled back: the checkpoint is where it was.
                        let cp = current_checkpoint(client, p);
                        counts.checkpoint_before = cp;
                        counts.checkpoint_after = cp;
                    }
                }
                record(client, &counts);
                counts
            })
            .collect()
    })
}

fn spi_failed(e: pgrx::spi::Error) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("audius_indexer: {e}")
    );
}

/// Records the outcome in `challenge_processor_state` (outside the processor's subtransaction).
fn record(client: &mut SpiClient<'_>, o: &Outcome) {
    client
        .update(
            sql::RECORD_RUN,
            None,
            &[
                o.challenge_id.into(),
                o.dirty_rows.into(),
                o.users.into(),
                o.upserts.into(),
                o.checkpoint_before.into(),
                o.checkpoint_after.into(),
                o.error.clone().into(),
            ],
        )
        .unwrap_or_else(|e| spi_failed(e));
}

/// The checkpoint of `p` as it stands (None when it cannot be read, e.g. no such table).
fn current_checkpoint(client: &mut SpiClient<'_>, p: Processor) -> Option<i64> {
    let key = p.checkpoint_key();
    in_subtransaction(|| -> SpiResult<Option<i64>> {
        let t = client.update(sql::READ_CHECKPOINT, Some(1), &[key.as_str().into()])?;
        Ok(if t.is_empty() {
            Some(0)
        } else {
            t.first().get::<i64>(1)?.or(Some(0))
        })
    })
    .ok()
    .flatten()
}

/// The stored positions of one processor.
struct State {
    ue: Option<(i64, i64)>,
    ue_checkpoint: Option<i64>,
    users: Option<Position<(i32, String)>>,
}

fn load_state(client: &mut SpiClient<'_>, p: Processor) -> SpiResult<State> {
    let table = client.update(sql::LOAD_STATE, Some(1), &[p.id().into()])?;
    if table.is_empty() {
        return Ok(State {
            ue: None,
            ue_checkpoint: None,
            users: None,
        });
    }
    let row = table.first();
    let ue_block: Option<i64> = row.get(1)?;
    let ue_id: Option<i64> = row.get(2)?;
    let users_block: Option<i64> = row.get(4)?;
    let users_user: Option<i32> = row.get(5)?;
    let users_tx: Option<String> = row.get(6)?;
    Ok(State {
        ue: ue_block.zip(ue_id),
        ue_checkpoint: row.get(3)?,
        users: users_block.map(|block| Position {
            block,
            after: users_user.zip(users_tx),
        }),
    })
}

/// One processor: load the catalog row, scan what is dirty, re-derive, upsert, move the
/// checkpoint and the positions. Runs inside its subtransaction.
fn process(client: &mut SpiClient<'_>, p: Processor, batch: usize) -> SpiResult<Outcome> {
    let mut out = Outcome::empty(p);
    let key = p.checkpoint_key();
    let prev: i64 = {
        let t = client.update(sql::READ_CHECKPOINT, Some(1), &[key.as_str().into()])?;
        if t.is_empty() {
            0
        } else {
            t.first().get::<i64>(1)?.unwrap_or(0)
        }
    };
    out.checkpoint_before = Some(prev);
    out.checkpoint_after = Some(prev);

    let challenge = client.update(sql::LOAD_CHALLENGE, Some(1), &[p.id().into()])?;
    let (active, amount) = if challenge.is_empty() {
        (false, 0)
    } else {
        let row = challenge.first();
        let active: Option<bool> = row.get(1)?;
        let amount: Option<String> = row.get(2)?;
        (
            active.unwrap_or(false),
            super::amount_int(amount.as_deref().unwrap_or("")),
        )
    };
    if !active {
        return Ok(out);
    }

    let state = load_state(client, p)?;
    let mut pairs: Vec<(i32, i32)> = Vec::new();
    let mut touched: Vec<i32> = Vec::new();

    // 1. user_events past the position (the seed's dirty set, without its skip).
    let start = super::resume_from(prev, state.ue, state.ue_checkpoint);
    let dirty_sql = match p {
        Processor::MobileInstall => sql::DIRTY_MOBILE,
        _ => sql::DIRTY_REFERRAL,
    };
    let rows: Vec<(i64, i32, i64)> = client
        .update(
            dirty_sql,
            None,
            &[
                start.block.into(),
                start.after.into(),
                (batch as i64).into(),
            ],
        )?
        .map(|r| {
            Ok((
                r.get::<i64>(1)?.unwrap_or(0),
                r.get::<i32>(2)?.unwrap_or(0),
                r.get::<i64>(3)?.unwrap_or(0),
            ))
        })
        .collect::<SpiResult<_>>()?;
    if !rows.is_empty() {
        out.dirty_rows += rows.len() as i32;
        let ids = super::first_seen(rows.iter().map(|r| r.1));
        touched.extend(&ids);
        pairs.extend(recompute(client, p, &ids)?);
    }
    // Where the scan ends: its last row, or (nothing new) where it started.
    let end = rows
        .last()
        .map(|&(id, _, block)| (block, id))
        .or(start.after.map(|id| (start.block, id)));
    let max_bn = rows.iter().map(|r| r.2).max();
    if let Some((end_block, end_id)) = end {
        // A scan that returned fewer rows than the batch saw every row up to its end: as the seed
        // (which would re-scan that block and find it finished), the checkpoint may reach it.
        let max_bn = max_bn.unwrap_or(end_block).max(end_block);
        let checkpoint = match super::high_water(prev, max_bn, rows.len(), batch) {
            Some(cp) => {
                client.update(
                    sql::WRITE_CHECKPOINT,
                    None,
                    &[key.as_str().into(), (cp as i32).into()],
                )?;
                cp
            }
            None => prev,
        };
        out.checkpoint_after = Some(checkpoint);
        if !rows.is_empty() || checkpoint != prev {
            client.update(
                sql::SAVE_UE_POSITION,
                None,
                &[
                    p.id().into(),
                    end_block.into(),
                    end_id.into(),
                    checkpoint.into(),
                ],
            )?;
        }
    }

    // 2. r / rv: users rows past their own position (referrers whose verification may have
    //    changed) → every pair they referred. Starts, the first time, at the user_events
    //    checkpoint (the same block clock).
    if let Some(verified) = p.referrer_verified() {
        let start = state.users.clone().unwrap_or(Position {
            block: prev,
            after: None,
        });
        let (after_user, after_tx) = match &start.after {
            Some((u, t)) => (Some(*u), Some(t.clone())),
            None => (None, None),
        };
        let rows: Vec<(i32, i64, String)> = client
            .update(
                sql::DIRTY_USERS,
                None,
                &[
                    start.block.into(),
                    after_user.into(),
                    after_tx.into(),
                    (batch as i64).into(),
                ],
            )?
            .map(|r| {
                Ok((
                    r.get::<i32>(1)?.unwrap_or(0),
                    r.get::<i64>(2)?.unwrap_or(0),
                    r.get::<String>(3)?.unwrap_or_default(),
                ))
            })
            .collect::<SpiResult<_>>()?;
        let saved = match rows.last() {
            Some((user, block, tx)) => {
                out.dirty_rows += rows.len() as i32;
                let referrers = super::first_seen(rows.iter().map(|r| r.0));
                touched.extend(&referrers);
                // Only pairs the user_events scan has passed: the others it derives itself.
                let (passed_block, passed_id) = end.unwrap_or((prev, i64::MAX));
                let t = client.update(
                    sql::RECOMPUTE_BY_REFERRER,
                    None,
                    &[
                        referrers.into(),
                        verified.into(),
                        passed_block.into(),
                        passed_id.into(),
                    ],
                )?;
                for r in t {
                    pairs.push((r.get::<i32>(1)?.unwrap_or(0), r.get::<i32>(2)?.unwrap_or(0)));
                }
                Some(Position {
                    block: *block,
                    after: Some((*user, tx.clone())),
                })
            }
            // Pin the starting point the first time, so later checkpoint moves cannot pass it.
            None if state.users.is_none() => Some(start),
            None => None,
        };
        if let Some(pos) = saved {
            let (u, t) = match pos.after {
                Some((u, t)) => (Some(u), Some(t)),
                None => (None, None),
            };
            client.update(
                sql::SAVE_USERS_POSITION,
                None,
                &[p.id().into(), pos.block.into(), u.into(), t.into()],
            )?;
        }
    }

    out.users = super::first_seen(touched).len() as i32;
    if pairs.is_empty() {
        return Ok(out);
    }
    // One upsert per (challenge, specifier), in first-seen order.
    let mut seen = std::collections::HashSet::new();
    let (recipients, specifiers): (Vec<i32>, Vec<String>) = pairs
        .into_iter()
        .map(|(user, referrer)| p.completion(user, referrer))
        .filter(|(_, spec)| seen.insert(spec.clone()))
        .unzip();
    out.upserts = recipients.len() as i32;
    let Ok(amount) = i32::try_from(amount) else {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
            format!(
                "challenge {:?}: amount {amount} is out of range for user_challenges.amount (integer)",
                p.id()
            )
        );
    };
    client.update(
        sql::UPSERT,
        None,
        &[
            p.id().into(),
            amount.into(),
            recipients.into(),
            specifiers.into(),
            super::STEP.into(),
            super::is_complete(super::STEP, super::STEP).into(),
        ],
    )?;
    Ok(out)
}

/// The seed's recompute for dirty `user_events` users: `(user, referrer)` pairs to upsert.
fn recompute(client: &mut SpiClient<'_>, p: Processor, ids: &[i32]) -> SpiResult<Vec<(i32, i32)>> {
    let ids: Vec<i32> = ids.to_vec();
    let table = match p.referrer_verified() {
        _ if p == Processor::MobileInstall => {
            client.update(sql::RECOMPUTE_MOBILE, None, &[ids.into()])?
        }
        Some(verified) => client.update(
            sql::RECOMPUTE_REFERRALS,
            None,
            &[ids.into(), verified.into()],
        )?,
        None => client.update(sql::RECOMPUTE_REFERRED, None, &[ids.into()])?,
    };
    table
        .map(|r| Ok((r.get::<i32>(1)?.unwrap_or(0), r.get::<i32>(2)?.unwrap_or(0))))
        .collect()
}
