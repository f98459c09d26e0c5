//! SPI glue of the challenge processors: one run of the four, each in its own subtransaction.

use super::statements as sql;
use super::{Position, Processor, Reference, ScannedRow, SnapshotXids};
use crate::errors::{raise, spi_error};
use crate::paths::{self, Path};
use crate::privilege::{
    as_owner_of, run_as, INDEXING_CHECKPOINTS, OWN_SEARCH_PATH, USER_CHALLENGES,
};
use crate::subxact::{in_subtransaction, Failed};
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, SpiResult};
use pgrx::PgSqlErrorCode::*;

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
        raise(
            ERRCODE_INVALID_PARAMETER_VALUE,
            format!("batch must be at least 1, got {batch}"),
            None,
            None,
        );
    }
    // The run's reference point for the settled rule, before anything gives the transaction an
    // id: pgrx's Spi::connect_mut below assigns one, and then no reference can be taken.
    take_reference();
    let ext_owner = crate::privilege::extension_owner();
    Spi::connect_mut(|client| {
        client
            .update(sql::LOCK, None, &[])
            .unwrap_or_else(|e| spi_error(e));
        // A stopped path runs nothing; an enabled one first checks that no other writer (the Go
        // challenge job) moved its checkpoints since it last stored them.
        paths::ensure_not_stopped(Path::Challenges);
        if paths::state(Path::Challenges).0 == paths::State::On {
            if let Some(reason) = second_writer() {
                paths::stop(Path::Challenges, &reason);
                return super::ALL
                    .iter()
                    .map(|&p| Outcome {
                        error: Some(format!("55000: {reason}")),
                        ..Outcome::empty(p)
                    })
                    .collect();
            }
        }
        super::ALL
            .iter()
            .map(|&p| {
                let mut counts = Outcome::empty(p);
                // The Audius tables are read and user_challenges written as the owner of
                // user_challenges (the on_user_challenge trigger then runs with that role's rights);
                // the processor's own positions as the extension owner.
                let result = in_subtransaction(|| {
                    as_owner_of(USER_CHALLENGES, || {
                        process(client, p, batch as usize, ext_owner)
                    })
                });
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

/// The m/r/rv/rd checkpoints as they stand in `indexing_checkpoints` (read as its owner), in the
/// order m, r, rv, rd; None where the row (or the table) is missing.
pub fn current_checkpoints() -> Vec<(&'static str, Option<i64>)> {
    let found: std::collections::HashMap<String, i64> = if crate::privilege::exists(
        INDEXING_CHECKPOINTS,
    ) {
        let keys: Vec<String> = super::ALL.iter().map(|p| p.checkpoint_key()).collect();
        as_owner_of(INDEXING_CHECKPOINTS, || {
            Spi::connect(|c| {
                c.select(
                    "SELECT ic.tablename::pg_catalog.text, ic.last_checkpoint::pg_catalog.int8 \
                       FROM public.indexing_checkpoints ic \
                      WHERE ic.tablename::pg_catalog.text OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[])",
                    None,
                    &[keys.into()],
                )?
                .map(|r| Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<i64>(2)?.unwrap_or(0))))
                .collect::<Result<_, pgrx::spi::Error>>()
            })
            .unwrap_or_else(|e| spi_error(e))
        })
    } else {
        Default::default()
    };
    super::ALL
        .iter()
        .map(|p| (p.id(), found.get(&p.checkpoint_key()).copied()))
        .collect()
}

/// Whether another writer moved a checkpoint since a processor last stored it (the value stored
/// with its position, `ue_checkpoint`): the reason, naming the processor and both values.
fn second_writer() -> Option<String> {
    let stored: std::collections::HashMap<String, i64> = Spi::connect(|c| {
        c.select(
            "SELECT s.challenge_id, s.ue_checkpoint FROM audius_indexer.challenge_processor_state s \
              WHERE s.ue_checkpoint IS NOT NULL",
            None,
            &[],
        )?
        .map(|r| Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<i64>(2)?.unwrap_or(0))))
        .collect::<Result<_, pgrx::spi::Error>>()
    })
    .unwrap_or_else(|e| spi_error(e));
    current_checkpoints().into_iter().find_map(|(id, now)| {
        let was = *stored.get(id)?;
        let now = now.unwrap_or(0);
        (now != was).then(|| {
            format!(
                "indexing_checkpoints challenges:{id}:last_blocknumber moved from {was} to {now} without audius_indexer (is the Go challenge job still running?)"
            )
        })
    })
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
        .unwrap_or_else(|e| spi_error(e));
}

/// The checkpoint of `p` as it stands (None when it cannot be read, e.g. no such table).
fn current_checkpoint(client: &mut SpiClient<'_>, p: Processor) -> Option<i64> {
    let key = p.checkpoint_key();
    in_subtransaction(|| -> SpiResult<Option<i64>> {
        if !crate::privilege::exists(INDEXING_CHECKPOINTS) {
            return Ok(None);
        }
        as_owner_of(INDEXING_CHECKPOINTS, || {
            let t = client.update(sql::READ_CHECKPOINT, Some(1), &[key.as_str().into()])?;
            Ok(if t.is_empty() {
                Some(0)
            } else {
                t.first().get::<i64>(1)?.or(Some(0))
            })
        })
    })
    .ok()
    .flatten()
}

thread_local! {
    /// Reference points this backend's runs took (one per run, oldest first): the references of
    /// the settled rule (`challenge_rules::settled_bound`). In the worker they reach back
    /// `MAX_REFERENCES` runs, so only a transaction open that long holds a position back.
    static REFERENCES: std::cell::RefCell<Vec<Reference>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// References kept (one per run).
const MAX_REFERENCES: usize = 32;

/// Takes this run's reference point, when its transaction has no transaction id yet (the
/// statement gives it one, which marks the moment). Once per transaction: later calls find the
/// id assigned and take none.
fn take_reference() {
    // A read-only SPI statement: pgrx's read-write path (connect_mut) would give the transaction
    // its id before pg_current_xact_id_if_assigned() could see that it had none.
    let got = Spi::connect(|c| {
        let t = c.select(sql::REFERENCE, Some(1), &[])?;
        let row = t.first();
        Ok::<_, pgrx::spi::Error>((row.get::<i64>(1)?, row.get::<i64>(2)?))
    })
    .unwrap_or_else(|e| spi_error(e));
    if let (Some(marker), Some(settled_below)) = got {
        REFERENCES.with(|r| {
            let mut r = r.borrow_mut();
            r.push(Reference {
                marker,
                settled_below,
            });
            let excess = r.len().saturating_sub(MAX_REFERENCES);
            r.drain(..excess);
        });
    }
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

/// One processor's run as its steps see it.
struct Job {
    p: Processor,
    batch: usize,
    /// Its positions are read and written as this role (the extension owner).
    ext_owner: pg_sys::Oid,
    /// Its `indexing_checkpoints` key.
    key: String,
    /// The checkpoint as the run found it.
    prev: i64,
}

/// What the steps found: `(user, referrer)` pairs to upsert and the users they touched.
#[derive(Default)]
struct Found {
    pairs: Vec<(i32, i32)>,
    touched: Vec<i32>,
}

/// One processor: load the catalog row, scan what is dirty, re-derive, upsert, move the
/// checkpoint and the positions. Runs inside its subtransaction.
fn process(
    client: &mut SpiClient<'_>,
    p: Processor,
    batch: usize,
    ext_owner: pg_sys::Oid,
) -> SpiResult<Outcome> {
    let mut out = Outcome::empty(p);
    let key = p.checkpoint_key();
    let prev = read_checkpoint(client, &key)?;
    out.checkpoint_before = Some(prev);
    out.checkpoint_after = Some(prev);

    let (active, amount) = load_challenge(client, p)?;
    if !active {
        return Ok(out);
    }

    let state = run_as(ext_owner, OWN_SEARCH_PATH, || load_state(client, p))?;
    let job = Job {
        p,
        batch,
        ext_owner,
        key,
        prev,
    };
    let mut found = Found::default();

    // 1. user_events past the position.
    let end = scan_user_events(client, &job, &state, &mut out, &mut found)?;

    // 2. r / rv: users rows past their own position.
    if let Some(verified) = p.referrer_verified() {
        scan_referrers(client, &job, verified, &state, end, &mut out, &mut found)?;
    }

    out.users = super::first_seen(found.touched).len() as i32;
    if found.pairs.is_empty() {
        return Ok(out);
    }
    upsert(client, &job, amount, found.pairs, &mut out)?;
    Ok(out)
}

/// The processor's checkpoint in `indexing_checkpoints` (0 when the row is missing).
fn read_checkpoint(client: &mut SpiClient<'_>, key: &str) -> SpiResult<i64> {
    let t = client.update(sql::READ_CHECKPOINT, Some(1), &[key.into()])?;
    Ok(if t.is_empty() {
        0
    } else {
        t.first().get::<i64>(1)?.unwrap_or(0)
    })
}

/// Whether the challenge is active, and its amount (inactive and 0 when the row is missing).
fn load_challenge(client: &mut SpiClient<'_>, p: Processor) -> SpiResult<(bool, i64)> {
    let challenge = client.update(sql::LOAD_CHALLENGE, Some(1), &[p.id().into()])?;
    Ok(if challenge.is_empty() {
        (false, 0)
    } else {
        let row = challenge.first();
        let active: Option<bool> = row.get(1)?;
        let amount: Option<String> = row.get(2)?;
        (
            active.unwrap_or(false),
            super::amount_int(amount.as_deref().unwrap_or("")),
        )
    })
}

/// Step 1: `user_events` rows past the position (the Go challenge job's dirty set, without its
/// skip) → the pairs their users qualify for; then moves the checkpoint and the position. Returns
/// where the scan ended (`None` when the position does not move).
fn scan_user_events(
    client: &mut SpiClient<'_>,
    job: &Job,
    state: &State,
    out: &mut Outcome,
    found: &mut Found,
) -> SpiResult<Option<(i64, i64)>> {
    let (p, prev) = (job.p, job.prev);
    let start = super::resume_from(prev, state.ue, state.ue_checkpoint);
    let dirty_sql = match p {
        Processor::MobileInstall => sql::DIRTY_MOBILE,
        _ => sql::DIRTY_REFERRAL,
    };
    // (id, user_id, blocknumber, xmin, the scan's snapshot)
    let rows: Vec<(i64, i32, i64, i64, SnapshotXids)> = client
        .update(
            dirty_sql,
            None,
            &[
                start.block.into(),
                start.after.into(),
                (job.batch as i64).into(),
            ],
        )?
        .map(|r| {
            Ok((
                r.get::<i64>(1)?.unwrap_or(0),
                r.get::<i32>(2)?.unwrap_or(0),
                r.get::<i64>(3)?.unwrap_or(0),
                r.get::<i64>(4)?.unwrap_or(0),
                SnapshotXids {
                    xmax: r.get::<i64>(5)?.unwrap_or(0),
                    oldest_running: r.get::<i64>(6)?.unwrap_or(0),
                },
            ))
        })
        .collect::<SpiResult<_>>()?;
    if !rows.is_empty() {
        out.dirty_rows += rows.len() as i32;
        let ids = super::first_seen(rows.iter().map(|r| r.1));
        found.touched.extend(&ids);
        found.pairs.extend(recompute(client, p, &ids)?);
    }
    // Where the position may go: past the settled rows only (a transaction still in progress
    // may yet commit a row before the others; they are scanned again by the next run), and the
    // checkpoint by the Go challenge job's high-water rule over them
    // (`challenge_rules::scan_advance`).
    let bound = rows.first().and_then(|&(.., now)| {
        REFERENCES.with(|r| super::settled_bound(now.oldest_running, &r.borrow()))
    });
    let scanned: Vec<ScannedRow> = rows
        .iter()
        .map(|&(id, _, block, xmin, now)| ScannedRow {
            block,
            id,
            settled: super::xmin_settled(xmin, now.xmax, bound),
        })
        .collect();
    let advance = super::scan_advance(prev, &start, &scanned, job.batch);
    let end = advance.end;
    if let Some((end_block, end_id)) = end {
        let checkpoint = match advance.checkpoint {
            Some(cp) => {
                // indexing_checkpoints.last_checkpoint is integer in Audius: never wrapped.
                let stored = match super::checkpoint_int4(cp) {
                    Ok(v) => v,
                    Err(msg) => raise(
                        ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
                        format!("challenge {:?}: {msg}", p.id()),
                        None,
                        None,
                    ),
                };
                client.update(
                    sql::WRITE_CHECKPOINT,
                    None,
                    &[job.key.as_str().into(), stored.into()],
                )?;
                cp
            }
            None => prev,
        };
        out.checkpoint_after = Some(checkpoint);
        if !rows.is_empty() || checkpoint != prev {
            run_as(job.ext_owner, OWN_SEARCH_PATH, || {
                client.update(
                    sql::SAVE_UE_POSITION,
                    None,
                    &[
                        p.id().into(),
                        end_block.into(),
                        end_id.into(),
                        checkpoint.into(),
                    ],
                )
            })?;
        }
    }
    Ok(end)
}

/// Step 2 (r / rv): `users` rows past their own position (referrers whose verification may
/// have changed) → every pair they referred that the `user_events` scan has passed (`end`: where
/// step 1 ended); then moves the position. Starts, the first time, at the `user_events`
/// checkpoint (the same block clock).
fn scan_referrers(
    client: &mut SpiClient<'_>,
    job: &Job,
    verified: bool,
    state: &State,
    end: Option<(i64, i64)>,
    out: &mut Outcome,
    found: &mut Found,
) -> SpiResult<()> {
    let (p, prev) = (job.p, job.prev);
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
                (job.batch as i64).into(),
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
            found.touched.extend(&referrers);
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
                found
                    .pairs
                    .push((r.get::<i32>(1)?.unwrap_or(0), r.get::<i32>(2)?.unwrap_or(0)));
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
        run_as(job.ext_owner, OWN_SEARCH_PATH, || {
            client.update(
                sql::SAVE_USERS_POSITION,
                None,
                &[p.id().into(), pos.block.into(), u.into(), t.into()],
            )
        })?;
    }
    Ok(())
}

/// Step 3: one upsert per (challenge, specifier), in first-seen order.
fn upsert(
    client: &mut SpiClient<'_>,
    job: &Job,
    amount: i64,
    pairs: Vec<(i32, i32)>,
    out: &mut Outcome,
) -> SpiResult<()> {
    let p = job.p;
    let mut seen = std::collections::HashSet::new();
    let (recipients, specifiers): (Vec<i32>, Vec<String>) = pairs
        .into_iter()
        .map(|(user, referrer)| p.completion(user, referrer))
        .filter(|(_, spec)| seen.insert(spec.clone()))
        .unzip();
    out.upserts = recipients.len() as i32;
    let Ok(amount) = i32::try_from(amount) else {
        raise(
            ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
            format!(
                "challenge {:?}: amount {amount} is out of range for user_challenges.amount (integer)",
                p.id()
            ),
            None,
            None,
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
    Ok(())
}

/// The Go challenge job's recompute for dirty `user_events` users: `(user, referrer)` pairs to
/// upsert.
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
