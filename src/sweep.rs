//! Refreshing `eth_wallet_balances`: the core shared by the event path (`refresh_wallets`), the
//! sweep tick (`refresh_stale`, `CALL sweep()`) and the background worker.
//!
//! A refresh has three phases:
//! 1. **claim** (SQL): which wallets, under the single-flight lock;
//! 2. **read** (network only, no SPI): every wallet over RPC, in wallet order, up to
//!    `rpc_concurrency` chunks in flight;
//! 3. **write** (SQL): per chunk as it arrives — one upsert, failure bookkeeping — while the next
//!    chunks are still on the wire; then the tick record.
//!
//! The read and write phases overlap: the backend's thread writes chunk k while helper threads
//! wait for chunks k+1…. Rows are written in wallet order across the whole tick, so a tick's
//! upserts lock in the same order as every other writer's. In the worker and `CALL sweep()` each
//! write commits on its own and no transaction or snapshot is open while the backend waits for an
//! answer (docs/reliability.md, "No snapshot across RPC"), so a slow node never holds back
//! vacuum. The functions (`refresh_wallets`, `refresh_stale`) run all phases in the caller's
//! transaction.

use crate::config::Config;
use crate::errors::spi_error;
use crate::eth::address::{is_normal_form, normalize, parse_address};
use crate::gucs;
use crate::reader::{self, Purpose};
use alloy_primitives::Address;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode::*;
use std::collections::{HashMap, HashSet};

/// Advisory lock key (two int4s) of the sweep's single flight: "AUDI", 1.
pub const LOCK_KEY: (i32, i32) = (0x4155_4449, 1);
/// Largest batch `refresh_stale` accepts.
pub const MAX_BATCH: i32 = 100_000;

/// What one refresh did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Distinct wallets asked for.
    pub requested: i32,
    /// Rows written to eth_wallet_balances.
    pub updated: i32,
    /// Wallets whose reads failed (recorded in audius_indexer.wallet_failures, backed off).
    pub failed: i32,
    /// Reads that succeeded but were not written: the row holds a newer block (the row is then
    /// marked checked: `updated_at = now()`, balance and block untouched), or (event path) the
    /// read is older than the wallet's min_block (left as it is, to be read again).
    pub skipped: i32,
}

/// One wallet to refresh: the key written in eth_wallet_balances, the parsed address (or why it
/// is not one), and the block the read must not be older than.
pub struct Entry {
    pub key: String,
    pub address: Result<Address, String>,
    pub min_block: Option<i64>,
}

/// The read phase's outcome: what to write and whom to blame.
pub struct Read {
    requested: i32,
    keys: Vec<String>,
    balances: Vec<String>,
    blocks: Vec<i64>,
    failures: Vec<(String, String)>,
    /// Reads older than the block that asked for them (a lagging node): key and that block.
    lagging: Vec<(String, i64)>,
}

impl Read {
    /// What the event path must try again: lagging reads (with the block they must reach) and
    /// failed reads (with their reason).
    pub fn retries(&self) -> (Vec<(String, i64)>, Vec<(String, String)>) {
        (self.lagging.clone(), self.failures.clone())
    }
}

/// ERROR 25006 on a standby: the write paths need a primary.
pub fn ensure_primary(what: &str) {
    if unsafe { pg_sys::RecoveryInProgress() } {
        crate::errors::raise(
            ERRCODE_READ_ONLY_SQL_TRANSACTION,
            format!("audius_indexer.{what} cannot run on a standby: recovery is in progress"),
            None,
            Some(
                "Run it on the primary; the background worker starts sweeping there after promotion. \
                 multicall_total_audio_balances() works on a standby."
                    .into(),
            ),
        );
    }
}

impl Read {
    fn empty() -> Read {
        Read {
            requested: 0,
            keys: Vec::new(),
            balances: Vec::new(),
            blocks: Vec::new(),
            failures: Vec::new(),
            lagging: Vec::new(),
        }
    }

    fn append(&mut self, mut other: Read) {
        self.requested += other.requested;
        self.keys.append(&mut other.keys);
        self.balances.append(&mut other.balances);
        self.blocks.append(&mut other.blocks);
        self.failures.append(&mut other.failures);
        self.lagging.append(&mut other.lagging);
    }
}

/// The read phase: reads every entry (network only: no SPI, no snapshot needed). ERRORs, without
/// anything written, when the RPC call as a whole fails: that is not the wallets' fault.
pub fn read(entries: Vec<Entry>) -> Read {
    let mut all = Read::empty();
    read_streaming(entries, &mut |part, _| all.append(part));
    all
}

/// The read phase in parts: `on_part(part, next_is_ready)` gets the entries of each chunk as soon
/// as the chunk is read, in entry order, while later chunks are still on the wire (see
/// `reader::read_balances_streaming`). Entries that are not addresses come with the first part.
pub fn read_streaming(mut entries: Vec<Entry>, on_part: &mut dyn FnMut(Read, bool)) {
    // One holder per distinct address; `owner` is the entry of each holder's first key, `more`
    // the further entries of an address (none in practice: callers pass distinct addresses).
    let mut holders: Vec<Address> = Vec::with_capacity(entries.len());
    let mut holder_of: HashMap<Address, usize> = HashMap::with_capacity(entries.len());
    let mut owner: Vec<usize> = Vec::with_capacity(entries.len());
    let mut more: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut invalid = Read::empty();
    for (i, e) in entries.iter().enumerate() {
        match &e.address {
            Ok(a) => match holder_of.get(a) {
                Some(&h) => more.entry(h).or_default().push(i),
                None => {
                    holder_of.insert(*a, holders.len());
                    holders.push(*a);
                    owner.push(i);
                }
            },
            Err(reason) => {
                invalid.requested += 1;
                invalid.failures.push((e.key.clone(), reason.clone()));
            }
        }
    }
    if holders.is_empty() {
        on_part(invalid, false);
        return;
    }
    let mut first = Some(invalid);
    let cfg = Config::from_settings();
    reader::read_balances_streaming(&cfg, &holders, Purpose::Write, &mut |values, next_ready| {
        let mut out = first.take().unwrap_or_else(Read::empty);
        out.keys.reserve(values.len());
        out.balances.reserve(values.len());
        out.blocks.reserve(values.len());
        for h in &values {
            let hi = holder_of[&h.wallet];
            let extra = more.get(&hi).map(Vec::as_slice).unwrap_or_default();
            let outcome = match h.total() {
                Some(total) => Ok(decimal(total)),
                None => Err(h.error().unwrap_or_else(|| "read failed".into())),
            };
            // in entry order: the holder's first key, then any further keys of its address
            if extra.is_empty() {
                answer(&mut out, &mut entries[owner[hi]], h.block, outcome);
            } else {
                for &i in std::iter::once(&owner[hi]).chain(extra) {
                    answer(&mut out, &mut entries[i], h.block, outcome.clone());
                }
            }
        }
        on_part(out, next_ready);
    });
}

/// Files one entry's answer (its key moves into the part: each entry is answered once).
fn answer(out: &mut Read, e: &mut Entry, block: i64, outcome: Result<String, String>) {
    let key = std::mem::take(&mut e.key);
    out.requested += 1;
    match outcome {
        // lagging node: older than the event that asked
        Ok(_) if e.min_block.is_some_and(|m| block < m) => {
            out.lagging.push((key, e.min_block.unwrap_or_default()))
        }
        Ok(total) => {
            out.keys.push(key);
            out.balances.push(total);
            out.blocks.push(block);
        }
        Err(why) => out.failures.push((key, why)),
    }
}

/// A total in decimal (the common case, below 2^128, without 512-bit division).
fn decimal(total: alloy_primitives::ruint::aliases::U512) -> String {
    match u128::try_from(total) {
        Ok(v) => v.to_string(),
        Err(_) => total.to_string(),
    }
}

/// Reads `entries` in wallet order and writes each chunk (`write`, run through `sql`) while the
/// next chunks are on the wire; chunks whose answers are already there are written together.
/// Rows are locked in wallet order across the whole call (no deadlock with other writers that
/// lock in wallet order), whatever order the entries came in.
fn read_and_write(mut entries: Vec<Entry>, sql: &mut dyn FnMut(Read) -> Counts) -> Counts {
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    let mut total = Counts::default();
    let mut pending: Option<Read> = None;
    read_streaming(entries, &mut |part, next_ready| {
        let buf = match pending.take() {
            Some(mut p) => {
                p.append(part);
                p
            }
            None => part,
        };
        if next_ready {
            pending = Some(buf);
        } else {
            total.add(sql(buf));
        }
    });
    if let Some(buf) = pending {
        total.add(sql(buf));
    }
    total
}

impl Counts {
    fn add(&mut self, c: Counts) {
        self.requested += c.requested;
        self.updated += c.updated;
        self.failed += c.failed;
        self.skipped += c.skipped;
    }
}

/// The write phase: one upsert (block guard on), then the failure bookkeeping.
pub fn write(r: Read) -> Counts {
    let mut counts = Counts {
        requested: r.requested,
        failed: r.failures.len() as i32,
        skipped: r.lagging.len() as i32,
        ..Counts::default()
    };
    if !r.keys.is_empty() {
        let n = r.keys.len() as i32;
        // keys built by normalize(): already in the stored form, no check needed
        let written = crate::audius_tables::upsert_balances(
            r.keys.iter().map(String::as_str).collect(),
            r.balances.iter().map(|b| Some(b.as_str())).collect(),
            r.blocks.iter().map(|&b| Some(b)).collect(),
            true,
        )
        .len() as i32;
        counts.updated = written;
        counts.skipped += n - written;
    }
    Spi::connect_mut(|c| {
        // Successful reads clear their failure records: probed once, since the table is nearly
        // always empty (then no array of every key is built for it).
        let succeeded = r.keys.len() + r.lagging.len();
        let clear = succeeded > 0
            && c.select(
                "SELECT EXISTS (SELECT FROM audius_indexer.wallet_failures)",
                None,
                &[],
            )
            .and_then(|t| t.first().get_one::<bool>())
            .unwrap_or_else(|e| spi_error(e))
            .unwrap_or(true);
        if clear {
            let keys: Vec<&str> = (r.keys.iter())
                .chain(r.lagging.iter().map(|(k, _)| k))
                .map(String::as_str)
                .collect();
            c.update(
                "SELECT audius_indexer._clear_failures($1)",
                None,
                &[keys.into()],
            )
            .unwrap_or_else(|e| spi_error(e));
        }
        if !r.failures.is_empty() {
            let (w, why): (Vec<String>, Vec<String>) = r.failures.into_iter().unzip();
            c.update(
                "SELECT audius_indexer._record_failures($1, $2, $3, $4)",
                None,
                &[
                    w.into(),
                    why.into(),
                    gucs::FAILURE_BACKOFF_BASE_S.get().into(),
                    gucs::FAILURE_BACKOFF_MAX_S.get().into(),
                ],
            )
            .unwrap_or_else(|e| spi_error(e));
        }
    });
    counts
}

/// The event path: explicit wallets (invalid input is an ERROR naming it), optional per-wallet
/// minimum blocks (same length as `wallets`; NULL entries mean no minimum).
pub fn refresh_wallets(
    wallets: Vec<Option<String>>,
    min_blocks: Option<Vec<Option<i64>>>,
) -> Counts {
    ensure_primary("refresh_wallets");
    if let Some(m) = &min_blocks {
        if m.len() != wallets.len() {
            crate::errors::raise(
                ERRCODE_INVALID_PARAMETER_VALUE,
                format!(
                    "min_blocks has {} entries but wallets has {}",
                    m.len(),
                    wallets.len()
                ),
                None,
                Some("Pass one min_block per wallet (NULL for none), or omit min_blocks.".into()),
            );
        }
    }
    let mut by_key: Vec<Entry> = Vec::new();
    let mut index: HashMap<Address, usize> = HashMap::new();
    for (i, w) in wallets.iter().enumerate() {
        let a = reader::parse_wallet(i + 1, w.as_deref());
        let min = min_blocks.as_ref().and_then(|m| m[i]);
        match index.get(&a) {
            Some(&j) => {
                let e: &mut Entry = &mut by_key[j];
                e.min_block = match (e.min_block, min) {
                    (Some(x), Some(y)) => Some(x.max(y)),
                    (x, y) => x.or(y),
                };
            }
            None => {
                index.insert(a, by_key.len());
                by_key.push(Entry {
                    key: normalize(&a),
                    address: Ok(a),
                    min_block: min,
                });
            }
        }
    }
    // The event path reads everything before its one upsert: no row lock of the caller's
    // transaction is ever held across a round trip (wallet sets here are small anyway).
    write(read(by_key))
}

/// How long the sweep's single-flight lock is held.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum LockScope {
    /// Until the end of the transaction (`refresh_stale`, one transaction).
    Transaction,
    /// Until `release_session_lock()` (the worker and `CALL sweep()`, which commit in between).
    Session,
}

pub fn validate_batch(batch: i32) {
    if !(1..=MAX_BATCH).contains(&batch) {
        crate::errors::raise(
            ERRCODE_INVALID_PARAMETER_VALUE,
            format!("batch must be between 1 and {MAX_BATCH}, got {batch}"),
            None,
            None,
        );
    }
}

/// Takes a single-flight lock; false when another holder has it.
pub fn take_lock(key: (i32, i32), scope: LockScope) -> bool {
    let lock_sql = match scope {
        LockScope::Transaction => "SELECT pg_catalog.pg_try_advisory_xact_lock($1, $2)",
        LockScope::Session => "SELECT pg_catalog.pg_try_advisory_lock($1, $2)",
    };
    Spi::get_one_with_args::<bool>(lock_sql, &[key.0.into(), key.1.into()])
        .unwrap_or_else(|e| spi_error(e))
        .unwrap_or(false)
}

/// The stalest `batch` wallets not in back-off (the lock must be held).
fn claim_batch(batch: i32) -> Vec<Entry> {
    // Backed-off wallets come from the extension's own table (nearly always none); the stalest
    // rows from eth_wallet_balances, read as its owner.
    let backed_off: Vec<String> = Spi::connect(|c| {
        c.select(
            "SELECT f.wallet FROM audius_indexer.wallet_failures f \
             WHERE f.next_attempt OPERATOR(pg_catalog.>) pg_catalog.now()",
            None,
            &[],
        )
        .map(|t| {
            t.filter_map(|row| row.get::<String>(1).ok().flatten())
                .collect()
        })
        .unwrap_or_else(|e| spi_error(e))
    });
    let wallets = crate::audius_tables::stale_batch(batch, &backed_off);
    wallets
        .into_iter()
        .map(|key| {
            let address = parse_address(&key)
                .map_err(|e| format!("stored wallet {key:?} is not a valid address: it {e}"))
                .and_then(|a| {
                    // Keys are lowercase; a mixed-case key is a row no writer will ever update.
                    if is_normal_form(&key) {
                        Ok(a)
                    } else {
                        Err(format!(
                            "stored wallet {key:?} is not in the lowercase form {:?}",
                            normalize(&a)
                        ))
                    }
                });
            Entry {
                key,
                address,
                min_block: None,
            }
        })
        .collect()
}

/// How a tick's SQL steps run: in a transaction with a snapshot, committed after it when the
/// runner commits between steps. The reads between SQL steps then run with no snapshot held.
pub trait Steps {
    fn sql<R>(&mut self, f: impl FnOnce() -> R) -> R;
}

/// Reads and writes made by the block guard's refills: rows the guard leaves alone (stamped newer
/// than the node's answer) are marked checked and replaced by the next stalest rows, at most this
/// many rounds per tick, so a tick writes up to `batch` rows even behind ahead-of-node rows.
const MAX_ROUNDS: usize = 4;

/// One sweep tick: lock, then rounds of claim → read → write, then the tick record. None when
/// another sweep holds the single flight. Errors propagate (the runner records them); `started`
/// is set as soon as the tick has started.
pub fn tick<S: Steps>(
    steps: &mut S,
    batch: i32,
    scope: LockScope,
    started: &mut Option<TimestampWithTimeZone>,
) -> Option<Counts> {
    validate_batch(batch);
    let first = steps.sql(|| {
        if !take_lock(LOCK_KEY, scope) {
            return None;
        }
        let t = Spi::get_one::<TimestampWithTimeZone>("SELECT pg_catalog.clock_timestamp()")
            .unwrap_or_else(|e| spi_error(e))
            .expect("clock_timestamp() is never NULL");
        Some((t, claim_batch(batch)))
    });
    let (t, mut entries) = first?;
    *started = Some(t);
    let mut total = Counts::default();
    // keys read in this tick: a refill never reads a row twice
    let mut done: HashSet<String> = HashSet::new();
    // Refills only when each write commits on its own (worker, CALL sweep()): within one
    // transaction a second upsert would lock rows out of wallet order (deadlock risk).
    let rounds = if scope == LockScope::Session {
        MAX_ROUNDS
    } else {
        1
    };
    for round in 0..rounds {
        if entries.is_empty() {
            break;
        }
        done.extend(entries.iter().map(|e| e.key.clone()));
        let batch_entries = std::mem::take(&mut entries);
        let c = read_and_write(batch_entries, &mut |part| {
            steps.sql(move || {
                if scope == LockScope::Session {
                    // Each chunk commits on its own here; a commit lost in a crash only means
                    // those rows are read again by a later tick, so none waits for a WAL flush.
                    Spi::run("SET LOCAL synchronous_commit = off").unwrap_or_else(|e| spi_error(e));
                }
                write(part)
            })
        });
        total.add(c);
        if c.skipped == 0 || round + 1 == rounds {
            break;
        }
        let want = c.skipped as usize;
        let more = steps.sql(|| claim_batch(c.skipped.saturating_add(done.len() as i32)));
        entries = more
            .into_iter()
            .filter(|e| !done.contains(&e.key))
            .take(want)
            .collect();
    }
    steps.sql(|| {
        record_tick(t, total);
        if scope == LockScope::Session {
            release_session_lock();
        }
    });
    Some(total)
}

/// Releases the session-level single-flight lock of the sweep (no-op when not held).
pub fn release_session_lock() {
    release_lock(LOCK_KEY);
}

/// Releases a session-level advisory lock taken by `take_lock` (no-op when not held).
pub fn release_lock(key: (i32, i32)) {
    Spi::run_with_args(
        "SELECT pg_catalog.pg_advisory_unlock($1, $2) FROM pg_catalog.pg_locks \
         WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid() \
           AND classid = $3::oid AND objid = $4::oid AND objsubid = 2",
        &[
            key.0.into(),
            key.1.into(),
            (key.0 as i64).into(),
            (key.1 as i64).into(),
        ],
    )
    .unwrap_or_else(|e| spi_error(e));
}

/// Records a finished tick in `sweep_state`.
pub fn record_tick(started: TimestampWithTimeZone, c: Counts) {
    Spi::run_with_args(
        "SELECT audius_indexer._record_tick($1, $2, $3, $4, $5)",
        &[
            started.into(),
            c.requested.into(),
            c.updated.into(),
            c.failed.into(),
            c.skipped.into(),
        ],
    )
    .unwrap_or_else(|e| spi_error(e));
}

/// Records a failed tick (after its transaction was rolled back) in `sweep_state.last_error`.
pub fn record_tick_error(started: Option<TimestampWithTimeZone>, message: &str) {
    Spi::run_with_args(
        "SELECT audius_indexer._record_tick_error(coalesce($1, pg_catalog.clock_timestamp()), $2)",
        &[started.into(), message.into()],
    )
    .unwrap_or_else(|e| spi_error(e));
}

/// Steps of a function call: everything in the caller's transaction.
pub struct InCallersTransaction;

impl Steps for InCallersTransaction {
    fn sql<R>(&mut self, f: impl FnOnce() -> R) -> R {
        f()
    }
}

/// One sweep tick in the caller's transaction (`refresh_stale`). None when another sweep holds
/// the single-flight lock.
pub fn refresh_stale(batch: i32) -> Option<Counts> {
    validate_batch(batch);
    ensure_primary("refresh_stale");
    tick(
        &mut InCallersTransaction,
        batch,
        LockScope::Transaction,
        &mut None,
    )
}
