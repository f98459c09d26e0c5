//! `audius_indexer.multicall_total_audio_balances(wallets text[])`.

use crate::config::Config;
use crate::eth::address::normalize;
use crate::reader;
use alloy_primitives::U256;
use pgrx::prelude::*;

pub fn numeric(decimal: &str) -> AnyNumeric {
    AnyNumeric::try_from(decimal).expect("a decimal integer is a valid numeric")
}

fn part(r: &Result<U256, crate::eth::abi::SubcallFailure>) -> Option<AnyNumeric> {
    r.as_ref().ok().map(|v| numeric(&v.to_string()))
}

/// Reads, for every distinct wallet, AUDIO `balanceOf` + Staking `totalStakedFor` +
/// DelegateManager `getTotalDelegatorStake` through Multicall3 `aggregate3` (one eth_call per
/// chunk of `audius_indexer.multicall_chunk_size` holders), with the block each chunk was read at.
/// `balance` is NULL when any of the three failed; `error` then says which and why.
#[pg_extern(volatile, parallel_unsafe, name = "multicall_total_audio_balances")]
fn multicall_total_audio_balances(
    wallets: Option<Array<'_, &str>>,
) -> TableIterator<
    'static,
    (
        name!(wallet, String),
        name!(balance, Option<AnyNumeric>),
        name!(token_balance, Option<AnyNumeric>),
        name!(staked, Option<AnyNumeric>),
        name!(delegated, Option<AnyNumeric>),
        name!(block_number, i64),
        name!(error, Option<String>),
    ),
> {
    crate::catalog_version::ensure_current("multicall_total_audio_balances");
    let Some(wallets) = wallets else {
        return TableIterator::new(Vec::new());
    };
    let holders = reader::parse_wallets(wallets.iter());
    if holders.is_empty() {
        return TableIterator::new(Vec::new());
    }
    let cfg = Config::from_settings();
    let (values, _) = reader::read_balances(&cfg, &holders, reader::Purpose::Report);
    let rows: Vec<_> = values
        .iter()
        .map(|h| {
            (
                normalize(&h.wallet),
                h.total().map(|t| numeric(&t.to_string())),
                part(&h.token),
                part(&h.staked),
                part(&h.delegated),
                h.block,
                h.error(),
            )
        })
        .collect();
    TableIterator::new(rows)
}
