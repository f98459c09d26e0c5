//! `audius_indexer.doctor()`: one row per health check, for a DBA at psql.

use crate::config::Config;
use crate::eth::abi::hex;
use crate::eth::address::normalize;
use crate::eth::rpc::{self, ExecError};
use crate::reader::{self, quantity};
use alloy_primitives::keccak256;
use pgrx::prelude::*;
use serde_json::json;

/// keccak256 of the canonical Multicall3 runtime (tests/fixtures/multicall3-runtime.hex).
const MULTICALL3_CODE_HASH: &str =
    "d5c15df687b16f2ff992fc8d767b4216323184a2bbc6ee2f9c398c318e770891";

type Row = (String, bool, String);

fn describe(e: &ExecError) -> String {
    e.to_string()
}

/// Checks settings, every RPC endpoint (reachable, chain id, head), the code at the four contract
/// addresses (and that Multicall3's code hash is the canonical one), the tables and indexes the
/// extension relies on, and the sweep worker. Never raises for a failed check: it reports it.
#[pg_extern(volatile, parallel_unsafe)]
fn doctor() -> TableIterator<
    'static,
    (
        name!(check_name, String),
        name!(ok, bool),
        name!(detail, String),
    ),
> {
    let mut rows: Vec<Row> = Vec::new();
    let settings = PgTryBuilder::new(|| Ok(Config::from_settings()))
        .catch_others(|e| Err(crate::errors::caught_message(&e)))
        .execute();
    if let Err(msg) = &settings {
        rows.push(("settings".into(), false, msg.clone()));
    }
    let mut head_block: Option<u64> = None;
    if let Ok(mut cfg) = settings {
        let hosts: Vec<_> = cfg.endpoints.iter().map(|e| e.host().to_string()).collect();
        rows.push((
            "settings".into(),
            true,
            format!(
                "{} endpoint(s): {}; chunk {} holders, request budget {} bytes, timeout {:?}, {} retries",
                hosts.len(),
                hosts.join(", "),
                cfg.chunk_size,
                cfg.max_request_bytes,
                cfg.attempt_timeout,
                cfg.policy.max_retries
            ),
        ));
        let all = std::mem::take(&mut cfg.endpoints);
        cfg.policy.max_retries = 0;
        let mut reachable = None;
        for ep in &all {
            cfg.endpoints = vec![ep.clone()];
            let chain = reader::request(
                &cfg,
                |id| rpc::request_body(id, "eth_chainId", json!([])),
                quantity,
            );
            let head = reader::request(
                &cfg,
                |id| rpc::request_body(id, "eth_blockNumber", json!([])),
                crate::eth::untrusted::parse_head,
            );
            match (chain, head) {
                (Ok(c), Ok(h)) => {
                    rows.push((
                        format!("rpc {}", ep.host()),
                        true,
                        format!("chain id {c}, head block {h}"),
                    ));
                    reachable.get_or_insert(ep.clone());
                    head_block.get_or_insert(h);
                }
                (Err(e), _) | (_, Err(e)) => {
                    rows.push((format!("rpc {}", ep.host()), false, describe(&e)))
                }
            }
        }
        if let Some(ep) = reachable {
            cfg.endpoints = vec![ep];
            let contracts = [
                ("multicall3", cfg.contracts.multicall),
                ("token", cfg.contracts.token),
                ("staking", cfg.contracts.staking),
                ("delegate_manager", cfg.contracts.delegate_manager),
            ];
            for (name, addr) in contracts {
                let a = normalize(&addr);
                let code = reader::request(
                    &cfg,
                    |id| rpc::request_body(id, "eth_getCode", json!([a, "latest"])),
                    rpc::decode_hex_result,
                );
                let row = match code {
                    Err(e) => (false, describe(&e)),
                    Ok(c) if c.is_empty() => (false, format!("no code at {a}")),
                    Ok(c) if name == "multicall3" => {
                        let h = hex(keccak256(&c).as_slice());
                        if h == MULTICALL3_CODE_HASH {
                            (
                                true,
                                format!("canonical Multicall3 at {a} (code hash 0x{h})"),
                            )
                        } else {
                            (
                                false,
                                format!(
                                    "code at {a} is not the canonical Multicall3 (code hash 0x{h})"
                                ),
                            )
                        }
                    }
                    Ok(c) => (true, format!("{} bytes of code at {a}", c.len())),
                };
                rows.push((format!("contract {name}"), row.0, row.1));
            }
        }
    }
    rows.extend(database_checks(head_block.map(|h| h as i64)));
    TableIterator::new(rows)
}

fn database_checks(head: Option<i64>) -> Vec<Row> {
    // Everything here is readable by audius_indexer_operator: no superuser-only setting is read
    // (whether the library is preloaded comes from the library itself). eth_wallet_balances is
    // read as its owner (src/audius_tables.rs); the rest are catalogs and the extension's tables.
    const SQL: &str = include_str!("../../sql/doctor_checks.sql");
    let overview = crate::triggers::subxact::in_subtransaction(|| {
        Ok::<_, String>(crate::audius_tables::balances_overview(head))
    });
    let (rows, above, max_above) = match overview {
        Ok(Some((r, a, m))) => (Some(r), Some(a), m),
        _ => (None, None, None),
    };
    Spi::connect(|c| {
        c.select(
            SQL,
            None,
            &[
                crate::gucs::preloaded().into(),
                head.into(),
                rows.into(),
                above.into(),
                max_above.into(),
            ],
        )
        .map(|t| {
            t.map(|r| {
                (
                    r.get::<String>(1).ok().flatten().unwrap_or_default(),
                    r.get::<bool>(2).ok().flatten().unwrap_or(false),
                    r.get::<String>(3).ok().flatten().unwrap_or_default(),
                )
            })
            .collect()
        })
        .unwrap_or_else(|e| vec![("database".into(), false, e.to_string())])
    })
}
