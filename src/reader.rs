//! Glue between the pure read path (`eth::balances`, `eth::rpc`) and PostgreSQL: settings, the
//! per-backend endpoint state, interrupt polling, and turning failures into ERRORs with SQLSTATEs.

use crate::eth::abi::{Contracts, DecodeError};
use crate::eth::address::{normalize, parse_address};
use crate::eth::balances::{self, ChunkError, HolderBalance, ReadStats};
use crate::eth::blocking::{run_interruptible, sleep_interruptible};
use crate::eth::rpc::{self, Endpoint, Endpoints, ExecError, Interrupted, RetryPolicy, RpcError};
use crate::gucs;
use alloy_primitives::Address;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{PgSqlErrorCode, PgSqlErrorCode::*};
use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

thread_local! {
    /// Endpoint health and counters of this backend (backends are single-threaded).
    static ENDPOINTS: RefCell<Endpoints> = RefCell::new(Endpoints::new(Vec::new(), Duration::ZERO));
    /// Set by the background worker: interrupt polling then also watches for SIGTERM.
    static IN_WORKER: Cell<bool> = const { Cell::new(false) };
    static REQUEST_ID: Cell<u64> = const { Cell::new(1) };
}

pub fn mark_worker() {
    IN_WORKER.with(|w| w.set(true));
}

/// Raises an ERROR with `code`, a message, and optional detail/hint. Never returns.
pub fn raise(
    code: PgSqlErrorCode,
    message: impl Into<String>,
    detail: Option<String>,
    hint: Option<String>,
) -> ! {
    let mut r = pgrx::pg_sys::panic::ErrorReport::new(code, message.into(), "audius_indexer");
    if let Some(d) = detail {
        r = r.set_detail(d);
    }
    if let Some(h) = hint {
        r = r.set_hint(h);
    }
    r.report(PgLogLevel::ERROR);
    unreachable!("ERROR returned")
}

/// The message of an ERROR or panic caught with `PgTryBuilder`.
pub fn caught_message(e: pgrx::pg_sys::panic::CaughtError) -> String {
    use pgrx::pg_sys::panic::CaughtError::*;
    match e {
        PostgresError(r) | ErrorReport(r) => r.message().to_string(),
        RustPanic { ereport, .. } => ereport.message().to_string(),
    }
}

/// SQLSTATE string (from the pure code) → pgrx error code.
pub fn errcode(sqlstate: &str) -> PgSqlErrorCode {
    match sqlstate {
        "08001" => ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
        "08006" => ERRCODE_CONNECTION_FAILURE,
        "08P01" => ERRCODE_PROTOCOL_VIOLATION,
        "38000" => ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
        "53400" => ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
        "54000" => ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        "55000" => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        "22023" => ERRCODE_INVALID_PARAMETER_VALUE,
        _ => ERRCODE_INTERNAL_ERROR,
    }
}

/// Everything one read needs, taken from the settings at call time.
pub struct Config {
    pub endpoints: Vec<Endpoint>,
    pub contracts: Contracts,
    pub chunk_size: usize,
    pub max_request_bytes: usize,
    pub attempt_timeout: Duration,
    pub policy: RetryPolicy,
    pub cooldown: Duration,
    pub max_response_bytes: u64,
}

fn address_setting(name: &str, setting: &pgrx::GucSetting<Option<std::ffi::CString>>) -> Address {
    let v = gucs::string(setting);
    parse_address(&v).unwrap_or_else(|e| {
        raise(
            ERRCODE_INVALID_PARAMETER_VALUE,
            format!("setting audius_indexer.{name} = {v:?} is not a valid address: it {e}"),
            None,
            Some(format!("SET audius_indexer.{name} = '0x…' (40 hex digits)")),
        )
    })
}

/// The configured endpoints (`rpc_urls` if set, else `rpc_url`); ERROR when none is set.
pub fn configured_endpoints() -> Vec<Endpoint> {
    let urls = gucs::string(&gucs::RPC_URLS);
    let (name, list) = if !urls.trim().is_empty() {
        ("rpc_urls", urls)
    } else {
        ("rpc_url", gucs::string(&gucs::RPC_URL))
    };
    if list.trim().is_empty() {
        raise(
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "no Ethereum RPC endpoint configured: audius_indexer.rpc_url is not set",
            None,
            Some(
                "As a superuser: ALTER SYSTEM SET audius_indexer.rpc_url = 'https://…'; SELECT pg_reload_conf(); \
                 (or audius_indexer.rpc_urls for an ordered failover list)"
                    .into(),
            ),
        );
    }
    // Never echo the value: it may carry an API key.
    rpc::parse_endpoint_list(&list).unwrap_or_else(|e| {
        raise(
            ERRCODE_INVALID_PARAMETER_VALUE,
            format!("setting audius_indexer.{name} is invalid: {e}"),
            None,
            Some("Only http:// and https:// URLs are accepted.".into()),
        )
    })
}

impl Config {
    pub fn from_settings() -> Config {
        let ms = |v: i32| Duration::from_millis(v.max(0) as u64);
        let max_retries = gucs::RPC_MAX_RETRIES.get().max(0) as u32;
        Config {
            endpoints: configured_endpoints(),
            contracts: Contracts {
                multicall: address_setting("multicall_address", &gucs::MULTICALL_ADDRESS),
                token: address_setting("token_address", &gucs::TOKEN_ADDRESS),
                staking: address_setting("staking_address", &gucs::STAKING_ADDRESS),
                delegate_manager: address_setting(
                    "delegate_manager_address",
                    &gucs::DELEGATE_MANAGER_ADDRESS,
                ),
            },
            chunk_size: gucs::MULTICALL_CHUNK_SIZE.get().max(1) as usize,
            max_request_bytes: gucs::MULTICALL_MAX_REQUEST_BYTES.get().max(0) as usize,
            attempt_timeout: ms(gucs::RPC_TIMEOUT_MS.get()),
            policy: RetryPolicy {
                max_retries,
                base: Duration::from_millis(250),
                cap: Duration::from_secs(10),
                budget: ms(gucs::RPC_RETRY_BUDGET_MS.get()),
            },
            cooldown: ms(gucs::RPC_FAILOVER_COOLDOWN_MS.get()),
            max_response_bytes: gucs::RPC_MAX_RESPONSE_BYTES.get().max(1024) as u64,
        }
    }
}

/// Interrupt polling while waiting on the network: query cancel, statement_timeout, and for the
/// worker SIGTERM / postmaster death.
fn poll_interrupts() -> Result<(), Interrupted> {
    if IN_WORKER.with(Cell::get) && crate::worker::should_stop() {
        return Err(Interrupted);
    }
    pg_sys::check_for_interrupts!();
    Ok(())
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// One JSON-RPC request with failover + retries; `parse` turns the `result` value into `T` on the
/// helper thread (so a malformed answer names the endpoint that sent it).
pub fn request<T: Send + 'static>(
    cfg: &Config,
    body_for: impl Fn(u64) -> String,
    parse: fn(&Endpoint, &serde_json::Value) -> Result<T, RpcError>,
) -> Result<T, ExecError> {
    ENDPOINTS.with(|cell| {
        let mut eps = cell.borrow_mut();
        eps.reconfigure(cfg.endpoints.clone(), cfg.cooldown);
        let max_resp = cfg.max_response_bytes;
        rpc::execute(
            &mut eps,
            &cfg.policy,
            cfg.attempt_timeout,
            |ep, timeout| {
                let id = REQUEST_ID.with(|c| {
                    let v = c.get();
                    c.set(v + 1);
                    v
                });
                let body = body_for(id);
                let ep = ep.clone();
                let host = ep.host().to_string();
                let t = Instant::now();
                let r = run_interruptible(
                    move || {
                        rpc::http_post(&ep, &body, timeout, max_resp).and_then(|v| parse(&ep, &v))
                    },
                    &mut poll_interrupts,
                );
                if let Ok(outcome) = &r {
                    let err = outcome.as_ref().err().map(ToString::to_string);
                    crate::shmem_stats::record(&host, t.elapsed(), err.as_deref());
                }
                r
            },
            |d| sleep_interruptible(d, &mut poll_interrupts),
            Instant::now,
            random_u64,
        )
    })
}

/// Reports an RPC failure as an ERROR (or the worker's shutdown as a terminating ERROR).
pub fn raise_exec(e: ExecError, what: &str) -> ! {
    match e {
        ExecError::Interrupted => raise(
            ERRCODE_ADMIN_SHUTDOWN,
            "audius_indexer: RPC request abandoned because the worker is shutting down",
            None,
            None,
        ),
        ExecError::Rpc(e) => raise_rpc(&e, what),
    }
}

fn raise_rpc(e: &RpcError, what: &str) -> ! {
    raise(errcode(e.sqlstate()), format!("{what}: {e}"), None, None)
}

/// Reads the three balances of every holder (already parsed and de-duplicated), in order.
/// ERRORs on any chunk failure: never a partial result.
pub fn read_balances(cfg: &Config, holders: &[Address]) -> (Vec<HolderBalance>, ReadStats) {
    let mut stats = ReadStats::default();
    let to = normalize(&cfg.contracts.multicall);
    let result = balances::read_all(
        &cfg.contracts,
        holders,
        cfg.chunk_size,
        cfg.max_request_bytes,
        |calldata, _n| {
            request(
                cfg,
                |id| rpc::eth_call_body(id, &to, calldata),
                rpc::decode_hex_result,
            )
        },
        |e| matches!(e, ExecError::Rpc(r) if r.wants_smaller_chunk()),
        &mut stats,
    );
    match result {
        Ok(v) => (v, stats),
        Err(ChunkError::Fetch(e)) => raise_exec(e, "multicall eth_call failed"),
        Err(ChunkError::Decode(DecodeError::NoCode)) => raise(
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "no Multicall3 code answers at {} on RPC host {} (eth_call returned 0x)",
                normalize(&cfg.contracts.multicall),
                hosts(cfg)
            ),
            None,
            Some(
                "Check audius_indexer.multicall_address and that the node serves the right chain."
                    .into(),
            ),
        ),
        Err(ChunkError::Decode(e)) => raise(
            ERRCODE_PROTOCOL_VIOLATION,
            format!("RPC host {}: {e}", hosts(cfg)),
            None,
            None,
        ),
        Err(e @ ChunkError::BlockNumber(_)) => raise(
            ERRCODE_PROTOCOL_VIOLATION,
            format!("RPC host {}: {e}", hosts(cfg)),
            None,
            None,
        ),
    }
}

fn hosts(cfg: &Config) -> String {
    // The endpoint that answered last is the first healthy one; name all when several.
    cfg.endpoints
        .iter()
        .map(|e| e.host().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses and de-duplicates wallet strings (first-seen order). ERROR 22023 names the value and
/// its 1-based position.
pub fn parse_wallets<'a>(items: impl Iterator<Item = Option<&'a str>>) -> Vec<Address> {
    let mut seen = std::collections::HashSet::new();
    items
        .enumerate()
        .map(|(i, item)| parse_wallet(i + 1, item))
        .filter(|a| seen.insert(*a))
        .collect()
}

/// Parses the wallet at 1-based `pos`; ERROR 22023 naming the value and position when it is NULL
/// or not an address.
pub fn parse_wallet(pos: usize, item: Option<&str>) -> Address {
    let s = item.unwrap_or_else(|| {
        raise(
            ERRCODE_INVALID_PARAMETER_VALUE,
            format!("wallet at position {pos} is NULL"),
            None,
            None,
        )
    });
    parse_address(s).unwrap_or_else(|e| {
        raise(
            ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "wallet at position {pos} ({:?}) is not a valid address: it {e}",
                truncate(s, 80)
            ),
            None,
            Some("Expected 0x followed by 40 hex digits (any case).".into()),
        )
    })
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

/// Snapshot of this backend's per-endpoint counters (for `rpc_endpoint_stats()`).
pub fn endpoint_stats() -> Vec<(String, rpc::EndpointStats)> {
    // Show configured endpoints even before the first request.
    let configured = {
        let urls = gucs::string(&gucs::RPC_URLS);
        let list = if urls.trim().is_empty() {
            gucs::string(&gucs::RPC_URL)
        } else {
            urls
        };
        rpc::parse_endpoint_list(&list).unwrap_or_default()
    };
    ENDPOINTS.with(|cell| {
        let mut eps = cell.borrow_mut();
        if !configured.is_empty() {
            let cooldown = eps.cooldown;
            eps.reconfigure(configured, cooldown);
        }
        eps.list
            .iter()
            .map(|e| e.host().to_string())
            .zip(eps.stats.iter().cloned())
            .collect()
    })
}
