//! Every statement the extension runs on an Audius table, each run as that table's owner
//! (`privilege::as_owner_of`): the triggers Audius keeps on them (`on_eth_wallet_balance_changes`
//! → `update_eth_user_balance()` → `eth_user_balances`, …) then run with the rights of the role
//! that owns them, never with the extension owner's. Names are schema-qualified; optional tables
//! (`users`, `associated_wallets`) are detected with `to_regclass('public.…')`.

use crate::errors::spi_error;
use crate::privilege::{
    as_owner_of, exists, ASSOCIATED_WALLETS, ETH_INDEXER_CHECKPOINTS, ETH_WALLET_BALANCES, USERS,
};
use pgrx::prelude::*;

fn spi<T>(r: Result<T, pgrx::spi::Error>) -> T {
    r.unwrap_or_else(|e| spi_error(e))
}

fn texts(sql: &str, args: &[pgrx::datum::DatumWithOid]) -> Vec<String> {
    spi(Spi::connect(|c| {
        c.select(sql, None, args)?
            .map(|r| Ok(r.get::<String>(1)?.unwrap_or_default()))
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    }))
}

/// The stalest `batch` wallets by `updated_at` (`eth_wallet_balances_updated_at_idx`), leaving
/// out `backed_off` (wallets whose reads failed recently: read from the extension's own table by
/// the caller). With none backed off (the usual case) the stalest rows come straight off the index.
pub fn stale_batch(batch: i32, backed_off: &[String]) -> Vec<String> {
    as_owner_of(ETH_WALLET_BALANCES, || {
        if backed_off.is_empty() {
            texts(
                "SELECT w.wallet FROM public.eth_wallet_balances w ORDER BY w.updated_at LIMIT $1",
                &[batch.into()],
            )
        } else {
            texts(
                "SELECT w.wallet FROM public.eth_wallet_balances w \
                 WHERE w.wallet OPERATOR(pg_catalog.<>) ALL ($2::pg_catalog.text[]) \
                 ORDER BY w.updated_at LIMIT $1",
                &[batch.into(), backed_off.to_vec().into()],
            )
        }
    })
}

/// The Go eth-indexer's upsert (`eth/indexer/eth_indexer.go`, upsertBalanceUpdates), kept
/// exactly: insert `NULLIF(block, 0)`; on conflict `balance = new`, `blocknumber = existing when
/// the new one is NULL, else GREATEST(COALESCE(existing, 0), new)`, `updated_at = now()`.
/// With `only_if_not_older` a row already stamped with a newer block than the read is left alone
/// and only marked checked (`updated_at = now()`), so it leaves the head of the sweep queue.
/// Rows are written in wallet order (no deadlock between writers). Returns the wallets written.
const UPSERT: &str = "\
INSERT INTO public.eth_wallet_balances AS e (wallet, balance, blocknumber, updated_at)
SELECT u.w, u.b, CASE WHEN u.bl OPERATOR(pg_catalog.=) 0::pg_catalog.int8 THEN NULL ELSE u.bl END, pg_catalog.now()
  FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[]::pg_catalog.numeric[]),
                  pg_catalog.unnest($3::pg_catalog.int8[])) AS u(w, b, bl)
 ORDER BY u.w
ON CONFLICT (wallet) DO UPDATE SET
  balance     = EXCLUDED.balance,
  blocknumber = CASE WHEN EXCLUDED.blocknumber IS NULL THEN e.blocknumber
                     ELSE pg_catalog.int8larger(COALESCE(e.blocknumber, 0::pg_catalog.int8), EXCLUDED.blocknumber) END,
  updated_at  = pg_catalog.now()
WHERE NOT $4::pg_catalog.bool
   OR e.blocknumber IS NULL
   OR EXCLUDED.blocknumber IS NULL
   OR e.blocknumber OPERATOR(pg_catalog.<=) EXCLUDED.blocknumber
RETURNING e.wallet";

/// The rows the block guard left alone (already locked by the upsert, in wallet order): marked
/// checked.
const MARK_CHECKED: &str = "\
UPDATE public.eth_wallet_balances AS e SET updated_at = pg_catalog.now()
  FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.int8[])) AS u(w, bl)
 WHERE e.wallet OPERATOR(pg_catalog.=) u.w AND u.bl OPERATOR(pg_catalog.>) 0::pg_catalog.int8
   AND e.blocknumber OPERATOR(pg_catalog.>) u.bl";

/// Upserts balances (decimal text) as the owner of `eth_wallet_balances`; returns the wallets
/// written. Keys must already be in the stored form (lowercase `0x` + 40 hex).
pub fn upsert_balances(
    keys: Vec<&str>,
    balances: Vec<Option<&str>>,
    blocks: Vec<Option<i64>>,
    only_if_not_older: bool,
) -> Vec<String> {
    let n = keys.len();
    as_owner_of(ETH_WALLET_BALANCES, || {
        spi(Spi::connect_mut(|c| {
            let written: Vec<String> = c
                .update(
                    UPSERT,
                    None,
                    &[
                        keys.clone().into(),
                        balances.into(),
                        blocks.clone().into(),
                        only_if_not_older.into(),
                    ],
                )?
                .map(|r| Ok(r.get::<String>(1)?.unwrap_or_default()))
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()?;
            if only_if_not_older && written.len() < n {
                c.update(MARK_CHECKED, None, &[keys.into(), blocks.into()])?;
            }
            Ok::<_, pgrx::spi::Error>(written)
        }))
    })
}

/// The checkpoint row `name` of `eth_indexer_checkpoints` (None when absent).
pub fn load_checkpoint(name: &str) -> Option<i64> {
    as_owner_of(ETH_INDEXER_CHECKPOINTS, || {
        crate::privilege::first_row::<i64>(
            "SELECT c.last_block FROM public.eth_indexer_checkpoints c WHERE c.name OPERATOR(pg_catalog.=) $1",
            &[name.into()],
        )
    })
}

/// The Go eth-indexer's `saveCheckpoint`: `last_block = GREATEST(existing, new)`, `updated_at = now()`.
pub fn save_checkpoint(name: &str, block: i64) {
    as_owner_of(ETH_INDEXER_CHECKPOINTS, || {
        spi(Spi::run_with_args(
            "INSERT INTO public.eth_indexer_checkpoints AS c (name, last_block, updated_at) \
             VALUES ($1, $2, pg_catalog.now()) \
             ON CONFLICT (name) DO UPDATE \
             SET last_block = pg_catalog.int8larger(c.last_block, EXCLUDED.last_block), updated_at = pg_catalog.now()",
            &[name.into(), block.into()],
        ))
    })
}

/// A reorg: the checkpoint goes back to `ancestor` (the only place it ever moves backwards).
pub fn rewind_checkpoint(name: &str, ancestor: i64) {
    as_owner_of(ETH_INDEXER_CHECKPOINTS, || {
        spi(Spi::run_with_args(
            "UPDATE public.eth_indexer_checkpoints SET last_block = $2, updated_at = pg_catalog.now() \
             WHERE name OPERATOR(pg_catalog.=) $1 AND last_block OPERATOR(pg_catalog.>) $2",
            &[name.into(), ancestor.into()],
        ))
    })
}

/// Wallets stamped above `block` (a reorg's ancestor), in wallet order.
pub fn stamped_above(block: i64) -> Vec<String> {
    as_owner_of(ETH_WALLET_BALANCES, || {
        texts(
            "SELECT e.wallet FROM public.eth_wallet_balances e \
             WHERE e.blocknumber OPERATOR(pg_catalog.>) $1 ORDER BY e.wallet",
            &[block.into()],
        )
    })
}

/// A reorg: the rows about to be re-read go back to the ancestor's stamp, so the block guard lets
/// the new chain's values in even where the new chain is still shorter than the abandoned one.
pub fn rewind_stamps(wallets: &[String], ancestor: i64) {
    as_owner_of(ETH_WALLET_BALANCES, || {
        spi(Spi::run_with_args(
            "UPDATE public.eth_wallet_balances SET blocknumber = $2 \
             WHERE wallet OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[]) \
               AND blocknumber OPERATOR(pg_catalog.>) $2",
            &[wallets.to_vec().into(), ancestor.into()],
        ))
    })
}

/// The subset of `keys` (lowercase) found by `sql` ($1 = the keys), as that table's owner.
fn members(table: &str, sql: &str, keys: &[String]) -> std::collections::HashSet<String> {
    as_owner_of(table, || texts(sql, &[keys.to_vec().into()]))
        .into_iter()
        .collect()
}

/// The Go eth-indexer's `filterTracked`: lowercased `users.wallet` ∪ `associated_wallets` with
/// `chain = 'eth'` and `is_delete = false` (no `is_current` filter), plus wallets already in
/// `eth_wallet_balances`. Each table is asked as its own owner; a missing `users` or
/// `associated_wallets` is left out. Returns the tracked keys' positions in `keys`.
pub fn tracked(keys: &[String]) -> Vec<usize> {
    let mut found = members(
        ETH_WALLET_BALANCES,
        "SELECT e.wallet FROM public.eth_wallet_balances e \
         WHERE e.wallet OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[])",
        keys,
    );
    if exists(USERS) {
        found.extend(members(
            USERS,
            "SELECT DISTINCT pg_catalog.lower(u.wallet) FROM public.users u \
             WHERE pg_catalog.lower(u.wallet) OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[])",
            keys,
        ));
    }
    if exists(ASSOCIATED_WALLETS) {
        found.extend(members(
            ASSOCIATED_WALLETS,
            "SELECT DISTINCT pg_catalog.lower(a.wallet) FROM public.associated_wallets a \
             WHERE a.chain OPERATOR(pg_catalog.=) 'eth' AND a.is_delete OPERATOR(pg_catalog.=) false \
               AND pg_catalog.lower(a.wallet) OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[])",
            keys,
        ));
    }
    (0..keys.len())
        .filter(|&i| found.contains(&keys[i]))
        .collect()
}

/// Enrollment (`src/enrollment.rs`): the row of a newly linked wallet, exactly as Audius's migration
/// `0204_backfill_eth_wallet_balances_tracked.sql` seeds one (balance 0, no block,
/// `updated_at = '1970-01-01'` so every stale sweep reads it first), as the owner of
/// `eth_wallet_balances`. An existing row is left as it is. True when the row is new.
pub fn ensure_row(wallet: &str) -> bool {
    as_owner_of(ETH_WALLET_BALANCES, || {
        spi(Spi::connect_mut(|c| {
            let t = c.update(
                "INSERT INTO public.eth_wallet_balances AS e (wallet, balance, blocknumber, updated_at) \
                 VALUES ($1, 0, NULL, '1970-01-01'::pg_catalog.timestamp) \
                 ON CONFLICT (wallet) DO NOTHING RETURNING true",
                None,
                &[wallet.into()],
            )?;
            Ok::<_, pgrx::spi::Error>(!t.is_empty())
        }))
    })
}

/// For doctor(): rows of `eth_wallet_balances`, and the rows stamped above `head` with their
/// highest stamp. None when the table is missing.
pub fn balances_overview(head: Option<i64>) -> Option<(i64, i64, Option<i64>)> {
    if !exists(ETH_WALLET_BALANCES) {
        return None;
    }
    as_owner_of(ETH_WALLET_BALANCES, || {
        let t = spi(Spi::get_three_with_args::<i64, i64, i64>(
            "SELECT pg_catalog.count(*), \
                    pg_catalog.count(*) FILTER (WHERE e.blocknumber OPERATOR(pg_catalog.>) $1), \
                    pg_catalog.max(e.blocknumber) FILTER (WHERE e.blocknumber OPERATOR(pg_catalog.>) $1) \
               FROM public.eth_wallet_balances e",
            &[head.into()],
        ));
        Some((t.0.unwrap_or(0), t.1.unwrap_or(0), t.2))
    })
}

/// Hands wallets to the stale sweep (`disable('follow')`): `updated_at = '1970-01-01'` puts them at
/// the head of every sweep's queue, ours or the Go eth-indexer's (`ORDER BY updated_at`).
pub fn hand_back(wallets: &[String]) {
    as_owner_of(ETH_WALLET_BALANCES, || {
        spi(Spi::run_with_args(
            "UPDATE public.eth_wallet_balances SET updated_at = '1970-01-01'::pg_catalog.timestamp \
             WHERE wallet OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[])",
            &[wallets.to_vec().into()],
        ))
    })
}
