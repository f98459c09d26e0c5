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
    /// Highest `eth_blockNumber` this backend has seen (0 = none yet): reads stamped within
    /// `max_block_ahead` of it need no new head check.
    static HEAD_SEEN: Cell<i64> = const { Cell::new(0) };
    /// Contract addresses this backend has seen code at (checked only when a read came back empty).
    static CODE_SEEN: RefCell<std::collections::HashSet<Address>> = RefCell::new(std::collections::HashSet::new());
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
pub fn caught_message(e: &pgrx::pg_sys::panic::CaughtError) -> String {
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

/// Where the endpoints come from: `rpc_urls_file`, else `rpc_urls`, else `rpc_url`.
enum EndpointSource {
    File(String),
    Setting(&'static str, String),
    None,
}

fn endpoint_source() -> EndpointSource {
    let file = gucs::string(&gucs::RPC_URLS_FILE);
    if !file.trim().is_empty() {
        return EndpointSource::File(file.trim().to_string());
    }
    let urls = gucs::string(&gucs::RPC_URLS);
    if !urls.trim().is_empty() {
        return EndpointSource::Setting("rpc_urls", urls);
    }
    let url = gucs::string(&gucs::RPC_URL);
    if !url.trim().is_empty() {
        return EndpointSource::Setting("rpc_url", url);
    }
    EndpointSource::None
}

/// Reads and parses the endpoints file. Errors name the path (which is not a secret), never the
/// file's content.
fn read_endpoint_file(path: &str) -> Result<Vec<Endpoint>, EndpointError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let code = match e.kind() {
            std::io::ErrorKind::NotFound => ERRCODE_UNDEFINED_FILE,
            std::io::ErrorKind::PermissionDenied => ERRCODE_INSUFFICIENT_PRIVILEGE,
            _ => ERRCODE_IO_ERROR,
        };
        let msg = format!("cannot read audius_indexer.rpc_urls_file {path:?}: {e}");
        (code, msg, None)
    })?;
    rpc::parse_endpoint_file(&text).map_err(|e| {
        let msg = format!("audius_indexer.rpc_urls_file {path:?} is invalid: {e}");
        (ERRCODE_INVALID_PARAMETER_VALUE, msg, None)
    })
}

/// Why the configured endpoints cannot be used: SQLSTATE, message, hint. Never the URL itself.
type EndpointError = (PgSqlErrorCode, String, Option<String>);

/// The configured endpoints, or why there are none usable.
fn resolve_endpoints() -> Result<Vec<Endpoint>, EndpointError> {
    match endpoint_source() {
        EndpointSource::None => Err((
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "no Ethereum RPC endpoint configured: audius_indexer.rpc_url is not set".into(),
            Some(
                "As a superuser: write the URL into a file only the server can read and ALTER SYSTEM SET \
                 audius_indexer.rpc_urls_file = '/path'; SELECT pg_reload_conf(); (or set audius_indexer.rpc_url)"
                    .into(),
            ),
        )),
        EndpointSource::File(path) => read_endpoint_file(&path),
        // Never echo the value: it may carry an API key.
        EndpointSource::Setting(name, list) => rpc::parse_endpoint_list(&list).map_err(|e| {
            (
                ERRCODE_INVALID_PARAMETER_VALUE,
                format!("setting audius_indexer.{name} is invalid: {e}"),
                Some("Only http:// and https:// URLs are accepted.".into()),
            )
        }),
    }
}

/// The configured endpoints; ERROR when none is configured or the configuration is unusable.
pub fn configured_endpoints() -> Vec<Endpoint> {
    resolve_endpoints().unwrap_or_else(|(code, msg, hint)| raise(code, msg, None, hint))
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

/// What a read is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `multicall_total_audio_balances`: report what the node says; any chunk failure is an ERROR.
    Report,
    /// The refresh paths (values are written, blocks are stamped on rows): failing chunks are
    /// isolated down to one holder; a block further than `max_block_ahead` above the node's
    /// `eth_blockNumber` is refused; an empty answer from a configured contract is checked for
    /// missing code (a configuration error, not the wallets').
    Write,
}

/// Chunk errors the refresh paths isolate (split down to one holder, then blame that holder):
/// answers about this request — JSON-RPC errors (EVM execution timeout, revert of the batch…),
/// HTTP error statuses after the retries, out-of-gas or too-large for a single holder, unusable
/// answers. Never isolated: connection failures and client-side timeouts (the node, not a wallet),
/// rate limits, redirects, a cancelled or shutting-down backend, and configuration errors
/// (no code at Multicall3, its getBlockNumber() failing or out of range).
fn isolatable(e: &ChunkError<ExecError>) -> bool {
    use rpc::RpcErrorKind::*;
    match e {
        ChunkError::Fetch(ExecError::Rpc(r)) => matches!(
            r.kind,
            JsonRpc { .. } | HttpStatus { .. } | OutOfGas(_) | TooLarge(_) | BadResponse(_)
        ),
        ChunkError::Fetch(ExecError::Interrupted) => false,
        ChunkError::Decode(DecodeError::NoCode) => false,
        ChunkError::Decode(_) => true,
        ChunkError::BlockNumber(_) | ChunkError::BlockOutOfRange(_) => false,
    }
}

/// Reads the three balances of every holder (already parsed and de-duplicated), in order.
/// ERRORs on any chunk failure that is not isolated: never a partial result.
pub fn read_balances(
    cfg: &Config,
    holders: &[Address],
    purpose: Purpose,
) -> (Vec<HolderBalance>, ReadStats) {
    let mut stats = ReadStats::default();
    let to = normalize(&cfg.contracts.multicall);
    let isolate: &dyn Fn(&ChunkError<ExecError>) -> bool = &isolatable;
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
        (purpose == Purpose::Write).then_some(isolate),
        &mut stats,
    );
    let values = match result {
        Ok(v) => v,
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
        Err(e) => raise(
            ERRCODE_PROTOCOL_VIOLATION,
            format!("RPC host {}: {e}", hosts(cfg)),
            None,
            None,
        ),
    };
    if purpose == Purpose::Write {
        check_contract_code(cfg, &values);
        check_block_ahead(cfg, &values);
    }
    (values, stats)
}

/// One JSON-RPC call with a hex quantity answer (eth_blockNumber, eth_chainId).
pub fn quantity(ep: &Endpoint, v: &serde_json::Value) -> Result<u64, RpcError> {
    let s = v.as_str().unwrap_or_default();
    let digits = s.strip_prefix("0x").unwrap_or("zz");
    u64::from_str_radix(digits, 16).map_err(|_| {
        RpcError::new(
            ep,
            rpc::RpcErrorKind::BadResponse(format!("not a hex quantity: {s:.40}")),
        )
    })
}

/// The node's head (`eth_blockNumber`); remembered as the highest head this backend has seen.
pub fn chain_head(cfg: &Config) -> Result<i64, ExecError> {
    let head = request(
        cfg,
        |id| rpc::request_body(id, "eth_blockNumber", serde_json::json!([])),
        quantity,
    )?;
    let head = i64::try_from(head).unwrap_or(i64::MAX);
    HEAD_SEEN.with(|h| h.set(h.get().max(head)));
    Ok(head)
}

/// Refuses reads stamped further than `max_block_ahead` above the node's head: such a stamp would
/// make the rows unwritable for every honest read after it. Costs an `eth_blockNumber` only when
/// a block is beyond the highest head this backend has already seen (plus the distance).
fn check_block_ahead(cfg: &Config, values: &[HolderBalance]) {
    let Some(max_block) = values
        .iter()
        .filter(|h| h.failure.is_none())
        .map(|h| h.block)
        .max()
    else {
        return;
    };
    let ahead = i64::from(gucs::MAX_BLOCK_AHEAD.get().max(0));
    if max_block <= HEAD_SEEN.with(Cell::get).saturating_add(ahead) {
        return;
    }
    let head = chain_head(cfg).unwrap_or_else(|e| raise_exec(e, "eth_blockNumber failed"));
    if max_block > head.saturating_add(ahead) {
        raise(
            ERRCODE_PROTOCOL_VIOLATION,
            format!(
                "RPC host {}: Multicall3 getBlockNumber() answered block {max_block}, {} blocks above the node's eth_blockNumber {head}: refused, nothing written",
                hosts(cfg),
                max_block - head
            ),
            None,
            Some(format!(
                "audius_indexer.max_block_ahead = {ahead}. Check the node (a lagging replica behind a load balancer?) and audius_indexer.multicall_address."
            )),
        );
    }
}

/// When a configured contract answered "success, no data" for some holder, checks it has code at
/// all: no code is a configuration error (55000 naming the setting), never the wallets' fault.
fn check_contract_code(cfg: &Config, values: &[HolderBalance]) {
    use crate::eth::abi::SubcallFailure::Empty;
    let contracts = [
        ("token_address", cfg.contracts.token, 0usize),
        ("staking_address", cfg.contracts.staking, 1),
        (
            "delegate_manager_address",
            cfg.contracts.delegate_manager,
            2,
        ),
    ];
    for (setting, address, which) in contracts {
        let empty = values.iter().any(|h| {
            let r = [&h.token, &h.staked, &h.delegated][which];
            matches!(r, Err(Empty))
        });
        if !empty || CODE_SEEN.with(|c| c.borrow().contains(&address)) {
            continue;
        }
        let a = normalize(&address);
        let code = request(
            cfg,
            |id| rpc::request_body(id, "eth_getCode", serde_json::json!([a, "latest"])),
            rpc::decode_hex_result,
        )
        .unwrap_or_else(|e| raise_exec(e, "eth_getCode failed"));
        if code.is_empty() {
            raise(
                ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "no contract code at audius_indexer.{setting} ({a}) on RPC host {}: nothing read, nothing recorded against wallets",
                    hosts(cfg)
                ),
                None,
                Some(format!(
                    "Check audius_indexer.{setting} and that the node serves the right chain (doctor() checks every contract)."
                )),
            );
        }
        CODE_SEEN.with(|c| c.borrow_mut().insert(address));
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
    let configured = resolve_endpoints().unwrap_or_default();
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
