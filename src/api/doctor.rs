//! `audius_indexer.doctor()`: one row per health check, for a DBA at psql.

use crate::config::Config;
use crate::eth::abi::hex;
use crate::eth::address::normalize;
use crate::eth::jsonrpc;
use crate::eth::retry::ExecError;
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
    TableIterator::new(report(doctor_rows))
}

/// The checks of `doctor()` in order: settings, every endpoint, the contracts' code, the database.
fn doctor_rows() -> Vec<Row> {
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
                |id| jsonrpc::request_body(id, "eth_chainId", json!([])),
                quantity,
            );
            let head = reader::request(
                &cfg,
                |id| jsonrpc::request_body(id, "eth_blockNumber", json!([])),
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
                    |id| jsonrpc::request_body(id, "eth_getCode", json!([a, "latest"])),
                    jsonrpc::decode_hex_result,
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
    rows.extend(database_checks(head_block.map(|h| h as i64), false));
    rows
}

/// The rows `checks` produces, or, under the catalog of another version (between the restart and
/// ALTER EXTENSION UPDATE), that one check alone: the others would read objects of this library's
/// version.
fn report(checks: impl FnOnce() -> Vec<Row>) -> Vec<Row> {
    match crate::catalog_version::check_row() {
        Some(row) => vec![row],
        None => checks(),
    }
}

/// The database-side checks of `doctor()` without any RPC call and without a scan of
/// `eth_wallet_balances`: its row count is `sweep_status.wallets` (the estimate from
/// `pg_class.reltuples`), and the "rows stamped above the chain head" check, which needs the node's
/// head and a full scan, is left out. For monitoring (`audius_indexer_monitor`): cheap enough for
/// every scrape. Never raises for a failed check: it reports it. (Its columns are spelled out as
/// doctor()'s: pgrx cannot read a type alias in a `#[pg_extern]` signature, pgcentralfoundation/pgrx#2067.)
#[pg_extern(volatile, parallel_unsafe)]
fn health() -> TableIterator<
    'static,
    (
        name!(check_name, String),
        name!(ok, bool),
        name!(detail, String),
    ),
> {
    TableIterator::new(report(|| database_checks(None, true)))
}

/// The row count of `eth_wallet_balances` as `sweep_status.wallets` shows it (an estimate from
/// the catalog: no scan); None when the table is missing.
fn balances_estimate() -> Option<i64> {
    if !crate::privilege::exists(crate::privilege::ETH_WALLET_BALANCES) {
        return None;
    }
    Spi::get_one::<i64>("SELECT wallets FROM audius_indexer.sweep_status")
        .ok()
        .flatten()
}

thread_local! {
    /// The plan of sql/doctor_checks.sql, kept for the life of the backend: an exporter calls
    /// health() on every scrape over one connection, and planning the checks (the three status
    /// views inlined) cost ~7 ms of the ~8 ms a call took. Leaked on purpose, like the triggers'
    /// plans (src/triggers/statements.rs): no destructor may run SPI_freeplan at process exit. A
    /// failed prepare is not kept. PostgreSQL re-plans it when an object it uses changes.
    static CHECKS_PLAN: std::cell::Cell<Option<&'static pgrx::spi::OwnedPreparedStatement>> =
        const { std::cell::Cell::new(None) };
}

fn checks_plan(
    c: &pgrx::spi::SpiClient<'_>,
) -> pgrx::spi::Result<&'static pgrx::spi::OwnedPreparedStatement> {
    if let Some(plan) = CHECKS_PLAN.with(std::cell::Cell::get) {
        return Ok(plan);
    }
    use pgrx::pg_sys::{PgOid, BOOLOID, INT8OID};
    let types = [BOOLOID, INT8OID, INT8OID, INT8OID, INT8OID, BOOLOID].map(PgOid::from);
    let kept = c.prepare(CHECKS_SQL, &types)?.keep();
    let kept: &'static pgrx::spi::OwnedPreparedStatement = Box::leak(Box::new(kept));
    CHECKS_PLAN.with(|p| p.set(Some(kept)));
    Ok(kept)
}

/// The checks, one row each: sql/doctor_checks.sql ($1 preloaded, $2 head, $3 rows, $4 rows above
/// the head, $5 their highest stamp, $6 whether $3 is an estimate).
const CHECKS_SQL: &str = include_str!("../../sql/doctor_checks.sql");

/// `estimate`: the row count of eth_wallet_balances is `sweep_status.wallets` (catalog statistics)
/// instead of a count(*) as that table's owner, and no row is compared with a head.
fn database_checks(head: Option<i64>, estimate: bool) -> Vec<Row> {
    // Everything here is readable by audius_indexer_operator: no superuser-only setting is read
    // (whether the library is preloaded comes from the library itself). eth_wallet_balances is
    // read as its owner (src/audius_tables.rs); the rest are catalogs and the extension's tables.
    let overview = crate::subxact::in_subtransaction(|| {
        Ok::<_, String>(if estimate {
            balances_estimate().map(|r| (r, 0, None))
        } else {
            crate::audius_tables::balances_overview(head)
        })
    });
    let (rows, above, max_above) = match overview {
        Ok(Some((r, a, m))) => (Some(r), Some(a), m),
        _ => (None, None, None),
    };
    Spi::connect(|c| {
        checks_plan(&c)
            .and_then(|plan| {
                c.select(
                    plan,
                    None,
                    &[
                        crate::gucs::preloaded().into(),
                        head.into(),
                        rows.into(),
                        above.into(),
                        max_above.into(),
                        estimate.into(),
                    ],
                )
            })
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
