//! The event path: following, from the checkpoint, every on-chain change to a wallet's total:
//! AUDIO `Transfer` (as the Go eth-indexer's `eth_indexer.go` does: backfill + `processLogs` +
//! `filterTracked` + `refreshAddresses`) and the staking, delegation, claim and slash events of the
//! Staking and DelegateManager contracts (`eth::events` has the table), all in one `eth_getLogs`
//! per range. A claim or a slash also re-reads every delegator of the SP (`getDelegatorsList`).
//!
//! The staking events share the `audio_transfers` checkpoint: one request per range covers every
//! contract, so one checkpoint says how far it got. The Go eth-indexer reads the same row and follows
//! `Transfer` only; handed back to it, staking changes reach the table through the stale sweep again,
//! as before audius_indexer (docs/operations.md, "What reaches the table within one follow step").
//!
//! One step, in phases like the sweep (SQL steps in transactions, network with none open when
//! the runner commits between steps — the worker does):
//! 1. **state** (SQL): the single-flight lock, the checkpoint (`eth_indexer_checkpoints`, name
//!    `audio_transfers`, the row the Go indexer writes), the stored block hashes;
//! 2. **head and reorg check** (network): `eth_blockNumber`; the hash of the checkpoint block
//!    against the stored one; on a mismatch the newest stored block the node still agrees with
//!    (within `max_reorg_depth`) is the common ancestor: every row stamped above it is re-read
//!    and the checkpoint goes back to it;
//! 3. **pending** wallets of earlier steps (a lagging node's reads, failed reads) are read again;
//! 4. **ranges** of `log_range_blocks` up to `head - confirmations`: one `eth_getLogs` for the three
//!    contracts (a range the node refuses is bisected down to one block), the wallets the logs
//!    change with their highest block, the delegators of claimed or slashed SPs (one aggregate3 of
//!    `getDelegatorsList`, at the claim's block), the tracked ones (SQL), their balances with those
//!    blocks as minimums (network), then one write transaction: upsert, pending wallets,
//!    checkpoint (`GREATEST`) and the range end's hash.
//!
//! A checkpoint only passes ranges whose writes commit with it. A read older than its event is
//! never dropped: the wallet is queued in `follow_pending` with the block it must reach, and read
//! again at the next step (the checkpoint moves on; the queue carries the debt).

use crate::config::Config;
use crate::eth::abi;
use crate::eth::address::normalize;
use crate::eth::error::{RpcError, RpcErrorKind};
use crate::eth::events::{self, Watched};
use crate::eth::jsonrpc;
use crate::eth::logs::{self, Header};
use crate::eth::retry::ExecError;
use crate::gucs;
use crate::paths::{self, Path};
use crate::reader;
use crate::sweep::{self, Entry, LockScope, Steps};
use alloy_primitives::{Address, B256};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode::*;

/// Advisory lock key of the follower's single flight ("AUDI", 4).
pub const LOCK_KEY: (i32, i32) = (0x4155_4449, 4);
pub const CHECKPOINT_NAME: &str = "audio_transfers";
/// Pending wallets read again per step at most.
const PENDING_PER_STEP: i64 = 10_000;

/// What one step did (one row of `follow_transfers`).
#[derive(Debug, Clone, Default)]
pub struct StepCounts {
    pub from_block: Option<i64>,
    pub to_block: Option<i64>,
    pub logs: i32,
    pub candidates: i32,
    pub tracked: i32,
    pub updated: i32,
    pub skipped: i32,
    pub failed: i32,
    pub checkpoint: Option<i64>,
}

impl StepCounts {
    fn add(&mut self, c: sweep::Counts) {
        self.updated += c.updated;
        self.skipped += c.skipped;
        self.failed += c.failed;
    }
}

fn spi<T>(r: Result<T, pgrx::spi::Error>) -> T {
    r.unwrap_or_else(|e| crate::errors::spi_error(e))
}

/// The node's header of block `number`: refused (08P01 naming the host and the field, the next
/// endpoint asked) unless it is that block, with a well-formed hash and timestamp.
fn header(cfg: &Config, number: u64) -> Header {
    reader::request(
        cfg,
        |id| logs::get_block_body(id, number),
        move |ep, v| logs::parse_header(ep, v, number),
    )
    .unwrap_or_else(|e| reader::raise_exec(e, "eth_getBlockByNumber failed"))
}

/// The three contracts whose logs are followed (the configured addresses: proxies on mainnet).
fn watched(cfg: &Config) -> Watched {
    Watched {
        token: cfg.contracts.token,
        staking: cfg.contracts.staking,
        delegate_manager: cfg.contracts.delegate_manager,
    }
}

/// The one `eth_getLogs` of `[from, to]` (every watched contract and event): Ok(logs), or the
/// refusal to bisect, or an ERROR. Every log must be of the asked range, one of the asked addresses
/// and topics (`logs::parse_logs`), else 08P01.
fn get_logs(cfg: &Config, from: u64, to: u64) -> Result<Vec<logs::Log>, RpcError> {
    let query = watched(cfg).query(from, to);
    let asked = query.clone();
    match reader::request(
        cfg,
        |id| logs::get_logs_body(id, &query),
        move |ep, v| logs::parse_logs(ep, v, &asked),
    ) {
        Ok(l) => Ok(l),
        Err(ExecError::Rpc(e)) if e.refuses_range() => Err(e),
        Err(e) => reader::raise_exec(e, "eth_getLogs failed"),
    }
}

/// SPs per `getDelegatorsList` aggregate3 (Audius caps an SP at 175 delegators: 100 lists stay far
/// below any response limit).
const LISTS_PER_CALL: usize = 100;

/// The delegators of each SP in `sps` (claims and slashes), read with `getDelegatorsList` on the
/// DelegateManager through Multicall3, one `eth_call` per `LISTS_PER_CALL` SPs, at the latest
/// block: a delegator who left after the claim is named by its own event, one who joined had no
/// share. A list the contract does not give (a reverted sub-call) is a WARNING: those delegators
/// reach the table through the stale sweep. An answer that is not a well-formed list is the node's
/// failure (08P01, the next endpoint is asked).
fn delegator_lists(cfg: &Config, sps: &[(Address, u64)]) -> Vec<Vec<Address>> {
    let to = normalize(&cfg.contracts.multicall);
    let dm = cfg.contracts.delegate_manager;
    let mut out = Vec::with_capacity(sps.len());
    for chunk in sps.chunks(LISTS_PER_CALL) {
        let addrs: Vec<Address> = chunk.iter().map(|(a, _)| *a).collect();
        let calldata = abi::encode_delegator_lists(dm, &addrs);
        let n = addrs.len();
        let lists = reader::request(
            cfg,
            |id| jsonrpc::eth_call_body(id, &to, &calldata),
            move |ep, v| {
                let raw = jsonrpc::decode_hex_result(ep, v)?;
                abi::decode_delegator_lists(&raw, n).map_err(|e| {
                    RpcError::new(
                        ep,
                        RpcErrorKind::BadResponse(format!("getDelegatorsList aggregate3: {e}")),
                    )
                })
            },
        )
        .unwrap_or_else(|e| reader::raise_exec(e, "getDelegatorsList eth_call failed"));
        for (&(sp, block), list) in chunk.iter().zip(lists) {
            out.push(list.unwrap_or_else(|f| {
                warning!(
                    "audius_indexer follow: getDelegatorsList({}) on the DelegateManager {} {f}: the delegators of that SP (claim or slash at block {block}) are left to the stale sweep",
                    normalize(&sp),
                    normalize(&dm)
                );
                Vec::new()
            }));
        }
    }
    out
}

/// The wallets the logs of a range change, delegators of claimed and slashed SPs included, each
/// with the highest block it changed in.
fn changed_wallets(cfg: &Config, found: &[logs::Log]) -> Vec<(Address, u64)> {
    let affected = events::affected(found, &watched(cfg));
    let lists = if affected.delegators_of.is_empty() {
        Vec::new()
    } else {
        delegator_lists(cfg, &affected.delegators_of)
    };
    events::with_delegators(&affected, &lists)
}

/// The checkpoint row (None on first boot), read as the owner of `eth_indexer_checkpoints`.
fn load_checkpoint() -> Option<i64> {
    crate::audius_tables::load_checkpoint(CHECKPOINT_NAME)
}

/// The Go eth-indexer's `saveCheckpoint` (`GREATEST(existing, new)`, as the owner of
/// `eth_indexer_checkpoints`), plus the block's hash and time for the next step's reorg check.
/// `h` is a header the node showed for exactly the block asked for (`logs::parse_header`).
fn save_checkpoint(h: &Header) {
    crate::audius_tables::save_checkpoint(CHECKPOINT_NAME, h.number as i64);
    crate::paths::record_written_checkpoint(Some(h.number as i64));
    spi(Spi::run_with_args(
        "SELECT audius_indexer._follow_save_block($1, $2, $3)",
        &[
            (h.number as i64).into(),
            format!("{:#x}", h.hash).into(),
            (h.timestamp as i64).into(),
        ],
    ));
}

/// Stored hashes within `depth` below `checkpoint` and the checkpoint's own, newest first.
fn stored_hashes(checkpoint: i64, depth: i64) -> Vec<(u64, B256)> {
    Spi::connect(|c| {
        let t = c.select(
            "SELECT block, hash FROM audius_indexer.follow_blocks \
             WHERE block <= $1 AND block >= $1 - $2 ORDER BY block DESC",
            None,
            &[checkpoint.into(), depth.into()],
        )?;
        let mut out = Vec::new();
        for row in t {
            let (Some(b), Some(h)) = (row.get::<i64>(1)?, row.get::<String>(2)?) else {
                continue;
            };
            if let Ok(hash) = h.parse::<B256>() {
                out.push((b as u64, hash));
            }
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .unwrap_or_else(|e| crate::errors::spi_error(e))
}

/// The Go eth-indexer's `filterTracked` (src/audius_tables.rs: each Audius table asked as its
/// owner, a missing `users` or `associated_wallets` left out). Returns the tracked candidates in
/// the given order.
fn filter_tracked(candidates: &[(Address, u64)]) -> Vec<(String, i64)> {
    if candidates.is_empty() {
        return Vec::new();
    }
    let keys: Vec<String> = candidates.iter().map(|(a, _)| normalize(a)).collect();
    crate::audius_tables::tracked(&keys)
        .into_iter()
        .map(|i| (keys[i].clone(), candidates[i].1 as i64))
        .collect()
}

fn entries(wallets: Vec<(String, Option<i64>)>) -> Vec<Entry> {
    wallets
        .into_iter()
        .map(|(key, min_block)| Entry {
            address: crate::eth::address::parse_address(&key)
                .map_err(|e| format!("wallet {key:?} is not a valid address: it {e}")),
            key,
            min_block,
        })
        .collect()
}

/// Reads `wallets` (network) and writes them with the pending-queue bookkeeping (SQL); `after`
/// runs in the same write transaction (checkpoint, hashes).
fn refresh<S: Steps>(
    steps: &mut S,
    wallets: Vec<(String, Option<i64>)>,
    after: impl FnOnce(),
) -> sweep::Counts {
    let keys: Vec<String> = wallets.iter().map(|(k, _)| k.clone()).collect();
    let min_blocks: std::collections::HashMap<String, Option<i64>> =
        wallets.iter().cloned().collect();
    let read = if wallets.is_empty() {
        None
    } else {
        Some(sweep::read(entries(wallets)))
    };
    steps.sql(move || {
        let counts = match read {
            Some(r) => {
                let (lagging, failed) = r.retries();
                let c = sweep::write(r);
                record_pending(&keys, &lagging, &failed, &min_blocks);
                c
            }
            None => sweep::Counts::default(),
        };
        after();
        counts
    })
}

/// Pending-queue bookkeeping: lagging and failed reads queued (with the block they must reach:
/// `min_blocks` of the wallets asked for), every other wallet of `keys` done.
fn record_pending(
    keys: &[String],
    lagging: &[(String, i64)],
    failed: &[(String, String)],
    min_blocks: &std::collections::HashMap<String, Option<i64>>,
) {
    let (lag_w, lag_b): (Vec<String>, Vec<i64>) = lagging.iter().cloned().unzip();
    let (fail_w, fail_why): (Vec<String>, Vec<String>) = failed.iter().cloned().unzip();
    let fail_b: Vec<Option<i64>> = fail_w
        .iter()
        .map(|w| min_blocks.get(w).copied().flatten())
        .collect();
    spi(Spi::run_with_args(
        "SELECT audius_indexer._follow_pending($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            keys.to_vec().into(),
            lag_w.into(),
            lag_b.into(),
            fail_w.into(),
            fail_b.into(),
            fail_why.into(),
            gucs::FAILURE_BACKOFF_BASE_S.get().into(),
            gucs::FAILURE_BACKOFF_MAX_S.get().into(),
        ],
    ));
}

/// One step of the follower. None when another step holds the single flight.
pub fn step<S: Steps>(
    steps: &mut S,
    max_blocks: Option<i64>,
    scope: LockScope,
) -> Option<StepCounts> {
    if let Some(m) = max_blocks.filter(|m| *m < 1) {
        crate::errors::raise(
            ERRCODE_INVALID_PARAMETER_VALUE,
            format!("max_blocks must be at least 1 (or NULL for no limit), got {m}"),
            None,
            None,
        );
    }
    sweep::ensure_primary("follow_transfers");
    let state = steps.sql(|| {
        paths::ensure_not_stopped(Path::Follow);
        if !sweep::take_lock(LOCK_KEY, scope) {
            return None;
        }
        let checkpoint = load_checkpoint();
        // On, the follower owns the audio_transfers row: another value than the one it stored
        // means a second writer (the Go eth-indexer) moved it. It stops before doing anything.
        if paths::state(Path::Follow).0 == paths::State::On {
            let written = paths::written_checkpoint();
            if written.is_some() && written != checkpoint {
                let reason = format!(
                    "the audio_transfers checkpoint moved from {} to {} without audius_indexer (is the Go eth-indexer still running?)",
                    written.unwrap_or_default(),
                    checkpoint.map_or("none".to_string(), |c| c.to_string())
                );
                paths::stop(Path::Follow, &reason);
                if scope == LockScope::Session {
                    sweep::release_lock(LOCK_KEY);
                }
                return Some(Err(checkpoint));
            }
        }
        spi(Spi::run("SELECT audius_indexer._follow_step_started()"));
        Some(Ok(checkpoint))
    });
    let checkpoint = match state? {
        Ok(c) => c,
        Err(c) => {
            return Some(StepCounts {
                checkpoint: c,
                ..StepCounts::default()
            })
        }
    };
    let result = run_step(steps, checkpoint, max_blocks);
    steps.sql(|| {
        spi(Spi::run_with_args(
            "SELECT audius_indexer._follow_step_finished($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                result.from_block.into(),
                result.to_block.into(),
                result.logs.into(),
                result.candidates.into(),
                result.tracked.into(),
                result.updated.into(),
                result.skipped.into(),
                result.failed.into(),
                result.checkpoint.into(),
            ],
        ));
        if scope == LockScope::Session {
            sweep::release_lock(LOCK_KEY);
        }
    });
    Some(result)
}

fn run_step<S: Steps>(
    steps: &mut S,
    checkpoint: Option<i64>,
    max_blocks: Option<i64>,
) -> StepCounts {
    let cfg = Config::from_settings();
    let confirmations = i64::from(gucs::CONFIRMATIONS.get().max(0));
    let range_size = gucs::LOG_RANGE_BLOCKS.get().max(1) as u64;
    let depth = i64::from(gucs::MAX_REORG_DEPTH.get().max(0));
    let head = reader::chain_head(&cfg)
        .unwrap_or_else(|e| reader::raise_exec(e, "eth_blockNumber failed"));
    let target = (head - confirmations).max(0);
    steps.sql(|| {
        spi(Spi::run_with_args(
            "SELECT audius_indexer._follow_head($1)",
            &[head.into()],
        ))
    });
    let mut out = StepCounts::default();

    // First boot: start at the head, as the Go eth-indexer does (no history replay), unless
    // follow_from_block says otherwise.
    let mut checkpoint = match checkpoint {
        Some(c) => c,
        None => {
            let from = i64::from(gucs::FOLLOW_FROM_BLOCK.get());
            if from >= 0 {
                (from - 1).max(-1)
            } else {
                let h = header(&cfg, target as u64);
                steps.sql(|| save_checkpoint(&h));
                out.checkpoint = Some(target);
                return out;
            }
        }
    };

    // Reorg check: the checkpoint block's stored hash against the node's.
    if checkpoint >= 0 && checkpoint <= head {
        let stored = steps.sql(|| stored_hashes(checkpoint, depth));
        if let Some((b, h)) = stored
            .first()
            .copied()
            .filter(|(b, _)| *b as i64 == checkpoint)
        {
            let node = header(&cfg, b);
            if node.hash != h {
                let older: Vec<(u64, B256)> = stored[1..].to_vec();
                let ancestor = logs::common_ancestor(&older, |n| Ok::<_, ()>(header(&cfg, n).hash))
                    .unwrap_or(None)
                    .map(|a| a as i64)
                    .unwrap_or_else(|| {
                        let a = (checkpoint - depth).max(0);
                        warning!(
                            "audius_indexer follow: reorg at block {checkpoint}: no stored block hash within max_reorg_depth ({depth}) agrees with the node; re-processing from block {a}"
                        );
                        a
                    });
                checkpoint = reorg(steps, checkpoint, ancestor);
            }
        }
    } else if checkpoint > head {
        // The node is behind our checkpoint (a lagging node, or a shorter fork): wait for it.
        out.checkpoint = Some(checkpoint);
        return out;
    }

    // Wallets of earlier steps still owed a read.
    let pending: Vec<(String, Option<i64>)> = steps.sql(|| {
        Spi::connect(|c| {
            c.select(
                "SELECT wallet, min_block FROM audius_indexer.follow_pending \
                 WHERE next_attempt <= pg_catalog.now() ORDER BY next_attempt, wallet LIMIT $1",
                None,
                &[PENDING_PER_STEP.into()],
            )?
            .map(|r| Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<i64>(2)?)))
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })
        .unwrap_or_else(|e| crate::errors::spi_error(e))
    });
    if !pending.is_empty() {
        out.tracked += pending.len() as i32;
        let c = refresh(steps, pending, || ());
        out.add(c);
    }

    let from = checkpoint + 1;
    let mut to = target;
    if let Some(m) = max_blocks {
        to = to.min(checkpoint.saturating_add(m));
    }
    out.checkpoint = (checkpoint >= 0).then_some(checkpoint);
    if from > to {
        return out;
    }
    // At most MAX_RANGES_PER_STEP ranges per step; the next step continues from the checkpoint.
    let to = logs::step_end(from as u64, to as u64, range_size) as i64;
    out.from_block = Some(from);
    out.to_block = Some(to);
    // Progress for follow_status while the step runs (the worker commits per range).
    steps.sql(|| {
        spi(Spi::run_with_args(
            "SELECT audius_indexer._follow_step_range($1, $2)",
            &[from.into(), to.into()],
        ))
    });
    // Ranges planned lazily; the halves of a refused range (bisected) go on `work` and are done
    // before the next planned range, in block order.
    let mut planned = logs::plan_ranges(from as u64, to as u64, range_size);
    let mut work: Vec<(u64, u64)> = Vec::new();
    while let Some((a, b)) = work.pop().or_else(|| planned.next()) {
        let found = match get_logs(&cfg, a, b) {
            Ok(l) => l,
            Err(e) => match logs::bisect(a, b) {
                Some((left, right)) => {
                    work.push(right);
                    work.push(left);
                    continue;
                }
                None => crate::errors::raise(
                    crate::errors::errcode(e.sqlstate()),
                    format!("eth_getLogs refused even the single block {a}: {e}"),
                    None,
                    Some(
                        "Check the node (audius_indexer.rpc_max_response_bytes, provider limits)."
                            .into(),
                    ),
                ),
            },
        };
        let cands = changed_wallets(&cfg, &found);
        out.logs += found.len() as i32;
        out.candidates += cands.len() as i32;
        let end = header(&cfg, b);
        let tracked = steps.sql(|| filter_tracked(&cands));
        out.tracked += tracked.len() as i32;
        let wallets = tracked.into_iter().map(|(w, blk)| (w, Some(blk))).collect();
        let c = refresh(steps, wallets, || {
            save_checkpoint(&end);
            spi(Spi::run_with_args(
                "SELECT audius_indexer._follow_step_done($1)",
                &[(b as i64).into()],
            ));
        });
        out.add(c);
        out.checkpoint = Some(b as i64);
        // One line per range for a psql caller (client_min_messages = notice, the default).
        notice!(
            "audius_indexer follow: blocks {a}..{b} of {from}..{to}: {} log(s), {} tracked, {} updated; checkpoint {b}",
            found.len(),
            c.requested,
            c.updated
        );
    }
    out
}

/// A reorg below `checkpoint`: re-read every row stamped above `ancestor` (their values may come
/// from the abandoned blocks), move the checkpoint back to `ancestor`, forget hashes above it.
/// Returns the new checkpoint.
fn reorg<S: Steps>(steps: &mut S, checkpoint: i64, ancestor: i64) -> i64 {
    log!("audius_indexer follow: reorg detected at block {checkpoint}; common ancestor {ancestor}");
    let stamped: Vec<String> = steps.sql(|| crate::audius_tables::stamped_above(ancestor));
    let wallets: Vec<(String, Option<i64>)> = stamped.iter().map(|w| (w.clone(), None)).collect();
    let keys = stamped.clone();
    // Stamps go back to the ancestor first, so the block guard lets the new chain's values in
    // even where the new chain is still shorter than the abandoned one.
    let read = if wallets.is_empty() {
        None
    } else {
        Some(sweep::read(entries(wallets)))
    };
    steps.sql(move || {
        crate::audius_tables::rewind_stamps(&keys, ancestor);
        crate::audius_tables::rewind_checkpoint(CHECKPOINT_NAME, ancestor);
        crate::paths::record_written_checkpoint(Some(ancestor));
        spi(Spi::run_with_args(
            "SELECT audius_indexer._follow_reorg($1, $2)",
            &[checkpoint.into(), ancestor.into()],
        ));
        if let Some(r) = read {
            let (lagging, failed) = r.retries();
            sweep::write(r);
            record_pending(&keys, &lagging, &failed, &std::collections::HashMap::new());
        }
    });
    ancestor
}
