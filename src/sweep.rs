//! Refreshing `eth_wallet_balances`: the core shared by the event path (`refresh_wallets`), the
//! sweep tick (`refresh_stale`) and the background worker.
//!
//! Order of work inside one call: read every wallet over RPC first, then write everything with one
//! upsert, so row locks on `eth_wallet_balances` are held only from the upsert to commit — never
//! across a network round trip. That is what keeps event-path writes from waiting on a sweep.

use crate::eth::address::{normalize, parse_address};
use crate::gucs;
use crate::reader::{self, Config};
use alloy_primitives::Address;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode::*;
use std::collections::{HashMap, HashSet};

/// Advisory lock key (two int4s) taken by `refresh_stale` for single flight: "AUDI", 1.
const LOCK_KEY: (i32, i32) = (0x4155_4449, 1);
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
    /// Reads that succeeded but were not written: the row holds a newer block, or (event path)
    /// the read is older than the wallet's min_block.
    pub skipped: i32,
}

/// One wallet to refresh: the key written in eth_wallet_balances, the parsed address (or why it
/// is not one), and the block the read must not be older than.
pub struct Entry {
    pub key: String,
    pub address: Result<Address, String>,
    pub min_block: Option<i64>,
}

/// Reads every entry and upserts the ones whose three reads succeeded. ERRORs (without writing
/// anything) when the RPC call as a whole fails: that is not the wallets' fault.
pub fn refresh(entries: Vec<Entry>) -> Counts {
    let mut counts = Counts {
        requested: entries.len() as i32,
        ..Counts::default()
    };
    let mut failures: Vec<(String, String)> = Vec::new();
    let mut holders: Vec<Address> = Vec::new();
    let mut seen: HashSet<Address> = HashSet::new();
    for e in &entries {
        match &e.address {
            Ok(a) => {
                if seen.insert(*a) {
                    holders.push(*a);
                }
            }
            Err(reason) => failures.push((e.key.clone(), reason.clone())),
        }
    }
    let values = if holders.is_empty() {
        HashMap::new()
    } else {
        let cfg = Config::from_settings();
        let (read, _) = reader::read_balances(&cfg, &holders);
        read.into_iter()
            .map(|h| (h.wallet, h))
            .collect::<HashMap<_, _>>()
    };

    let (mut keys, mut balances, mut blocks) = (Vec::new(), Vec::new(), Vec::new());
    let mut succeeded: Vec<String> = Vec::new();
    for e in &entries {
        let Ok(a) = &e.address else { continue };
        let h = &values[a];
        match (h.total(), h.error()) {
            (Some(total), _) => {
                succeeded.push(e.key.clone());
                let block = i64::try_from(h.block).unwrap_or(i64::MAX);
                if e.min_block.is_some_and(|m| block < m) {
                    counts.skipped += 1; // lagging node: older than the event that asked
                } else {
                    keys.push(e.key.clone());
                    balances.push(total.to_string());
                    blocks.push(block);
                }
            }
            (None, err) => {
                failures.push((e.key.clone(), err.unwrap_or_else(|| "read failed".into())))
            }
        }
    }
    counts.failed = failures.len() as i32;

    Spi::connect_mut(|c| {
        if !keys.is_empty() {
            let n = keys.len() as i32;
            let written = c
                .update(
                    "SELECT count(*)::int4 FROM audius_indexer.upsert_wallet_balances($1, $2::text[]::numeric[], $3, true)",
                    None,
                    &[keys.into(), balances.into(), blocks.into()],
                )
                .and_then(|t| t.first().get_one::<i32>())
                .unwrap_or_else(|e| spi_error(e))
                .unwrap_or(0);
            counts.updated = written;
            counts.skipped += n - written;
        }
        if !succeeded.is_empty() {
            c.update(
                "SELECT audius_indexer._clear_failures($1)",
                None,
                &[succeeded.into()],
            )
            .unwrap_or_else(|e| spi_error(e));
        }
        if !failures.is_empty() {
            let (w, r): (Vec<String>, Vec<String>) = failures.into_iter().unzip();
            c.update(
                "SELECT audius_indexer._record_failures($1, $2, $3, $4)",
                None,
                &[
                    w.into(),
                    r.into(),
                    gucs::FAILURE_BACKOFF_BASE_S.get().into(),
                    gucs::FAILURE_BACKOFF_MAX_S.get().into(),
                ],
            )
            .unwrap_or_else(|e| spi_error(e));
        }
    });
    counts
}

fn spi_error(e: pgrx::spi::Error) -> ! {
    reader::raise(
        ERRCODE_INTERNAL_ERROR,
        format!("audius_indexer: SPI failed: {e}"),
        None,
        None,
    )
}

/// The event path: explicit wallets (invalid input is an ERROR naming it), optional per-wallet
/// minimum blocks (same length as `wallets`; NULL entries mean no minimum).
pub fn refresh_wallets(
    wallets: Vec<Option<String>>,
    min_blocks: Option<Vec<Option<i64>>>,
) -> Counts {
    if let Some(m) = &min_blocks {
        if m.len() != wallets.len() {
            reader::raise(
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
    refresh(by_key)
}

/// One sweep tick. Returns None when another refresh_stale holds the single-flight lock.
pub fn refresh_stale(batch: i32) -> Option<Counts> {
    if !(1..=MAX_BATCH).contains(&batch) {
        reader::raise(
            ERRCODE_INVALID_PARAMETER_VALUE,
            format!("batch must be between 1 and {MAX_BATCH}, got {batch}"),
            None,
            None,
        );
    }
    let got = Spi::get_one_with_args::<bool>(
        "SELECT pg_try_advisory_xact_lock($1, $2)",
        &[LOCK_KEY.0.into(), LOCK_KEY.1.into()],
    )
    .unwrap_or_else(|e| spi_error(e))
    .unwrap_or(false);
    if !got {
        return None;
    }
    let started = Spi::get_one::<pgrx::datum::TimestampWithTimeZone>("SELECT clock_timestamp()")
        .unwrap_or_else(|e| spi_error(e));
    let wallets: Vec<String> = Spi::connect(|c| {
        c.select(
            "SELECT w FROM audius_indexer._stale_batch($1) AS w",
            None,
            &[batch.into()],
        )
        .map(|t| {
            t.filter_map(|row| row.get::<String>(1).ok().flatten())
                .collect()
        })
        .unwrap_or_else(|e| spi_error(e))
    });
    let entries = wallets
        .into_iter()
        .map(|key| {
            let address = parse_address(&key)
                .map_err(|e| format!("stored wallet {key:?} is not a valid address: it {e}"))
                .and_then(|a| {
                    // Keys are lowercase; a mixed-case key is a row no writer will ever update.
                    if normalize(&a) == key {
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
        .collect();
    let counts = refresh(entries);
    Spi::run_with_args(
        "SELECT audius_indexer._record_tick($1, $2, $3, $4, $5)",
        &[
            started.into(),
            counts.requested.into(),
            counts.updated.into(),
            counts.failed.into(),
            counts.skipped.into(),
        ],
    )
    .unwrap_or_else(|e| spi_error(e));
    Some(counts)
}
