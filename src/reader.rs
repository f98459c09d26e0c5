//! Glue between the pure read path (`eth::balances`, `eth::retry`, `eth::transport`) and PostgreSQL: settings, the
//! per-backend endpoint state, interrupt polling, and turning failures into ERRORs with SQLSTATEs.

use crate::config::Config;
use crate::errors::{errcode, raise};
use crate::eth::abi::DecodeError;
use crate::eth::address::{normalize, parse_address};
use crate::eth::balances::{self, ChunkError, HolderBalance, ReadStats};
use crate::eth::blocking::{run_interruptible, sleep_interruptible};
use crate::eth::endpoint::Endpoint;
use crate::eth::error::RpcError;
use crate::eth::pipeline::{Limiter, Pipeline, StopFlag, TakeError};
use crate::eth::retry::{Endpoints, ExecError};
use crate::eth::transport::Agents;
use crate::eth::untrusted::{self, SeenHead};
use crate::eth::{blocking, error, jsonrpc, retry};
use crate::gucs;
use crate::request_budget::Budget;
use alloy_primitives::Address;
use pgrx::PgSqlErrorCode::*;
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The network state of this backend, shared with its helper threads: endpoint health, one
/// keep-alive HTTP agent per endpoint, and the pipelining limit (halved on rate limits).
#[derive(Clone)]
struct Net {
    endpoints: Arc<Mutex<Endpoints>>,
    agents: Arc<Agents>,
    limiter: Arc<Limiter>,
}

thread_local! {
    static NET: Net = Net {
        endpoints: Arc::new(Mutex::new(Endpoints::new(Vec::new(), Duration::ZERO))),
        agents: Arc::new(Agents::new(Duration::ZERO, 1)),
        limiter: Arc::new(Limiter::new(1)),
    };
    /// The latest validated `eth_blockNumber` of this backend and when it was seen, trusted for
    /// `untrusted::HEAD_TRUST` only: reads stamped within `max_block_ahead` of a fresh head need no
    /// new head check; after that the node is asked again (one absurd head cannot disable the
    /// check for the rest of the session).
    static HEAD_SEEN: Cell<SeenHead> = const { Cell::new(SeenHead::NONE) };
    /// Contract addresses this backend has seen code at (checked only when a read came back empty).
    static CODE_SEEN: RefCell<std::collections::HashSet<Address>> = RefCell::new(std::collections::HashSet::new());
}

static REQUEST_ID: AtomicU64 = AtomicU64::new(1);

/// This backend's network state, brought up to date with the settings in `cfg`.
fn net(cfg: &Config) -> Net {
    NET.with(|n| {
        n.endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reconfigure(cfg.endpoints.clone(), cfg.cooldown);
        if let Err(e) =
            n.agents
                .configure(cfg.idle_timeout, cfg.concurrency, cfg.tls_ca_file.as_deref())
        {
            raise(
                ERRCODE_INVALID_PARAMETER_VALUE,
                format!("audius_indexer.rpc_tls_ca_file: {e}"),
                None,
                Some("Give a PEM file of CA certificates readable by the server, or set it empty for the web PKI roots.".into()),
            );
        }
        n.limiter.set_max(cfg.concurrency);
        n.clone()
    })
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// One HTTP attempt as the statistics record it: host, latency, error (its kind's index in
/// `shmem_stats::ERROR_KINDS` and its message).
type Attempt = (String, Duration, Option<(usize, String)>);

/// One attempt on a helper thread: the POST, `parse` of the result, the limiter told how it went.
/// The caller has taken a token of the request budget for `ep` before (`request_budget`).
fn attempt<T>(
    net: &Net,
    ep: &Endpoint,
    body: &str,
    timeout: Duration,
    max_resp: u64,
    parse: impl Fn(&Endpoint, &serde_json::Value) -> Result<T, RpcError>,
) -> (Result<T, RpcError>, Attempt) {
    let t = Instant::now();
    let r = net
        .agents
        .post(ep, body, timeout, max_resp)
        .and_then(|v| parse(ep, &v));
    match &r {
        Ok(_) => net.limiter.succeeded(),
        Err(e) if matches!(e.kind, error::RpcErrorKind::RateLimited { .. }) => {
            net.limiter.rate_limited()
        }
        Err(_) => {}
    }
    let err = r
        .as_ref()
        .err()
        .map(|e| (crate::shmem_stats::kind_index(&e.kind), e.to_string()));
    (r, (ep.host().to_string(), t.elapsed(), err))
}

fn record_attempts(attempts: &[Attempt]) {
    for (host, latency, err) in attempts {
        crate::shmem_stats::record(host, *latency, err.as_ref().map(|(k, e)| (*k, e.as_str())));
    }
}

/// One JSON-RPC request with failover + retries; `parse` validates the `result` value and turns it
/// into `T` on the helper thread (so a malformed answer names the endpoint that sent it, and counts
/// as that endpoint's failure: the next endpoint is tried, see `retry::execute`). `parse` may
/// capture what was asked (a block number, a log query) to check the answer against it.
pub fn request<T: Send + 'static, P>(
    cfg: &Config,
    body_for: impl Fn(u64) -> String,
    parse: P,
) -> Result<T, ExecError>
where
    P: Fn(&Endpoint, &serde_json::Value) -> Result<T, RpcError> + Clone + Send + 'static,
{
    let net = net(cfg);
    let max_resp = cfg.max_response_bytes;
    let budget = Budget::current();
    retry::execute(
        &net.endpoints,
        &cfg.policy,
        cfg.attempt_timeout,
        |ep, timeout| {
            // A token of the request budget before the attempt is sent: waited for on this
            // thread, cancel / statement_timeout / SIGTERM honoured every POLL_SLICE.
            budget.acquire(ep.host(), &mut |d| {
                sleep_interruptible(d, &mut crate::interrupts::poll)
            })?;
            let body = body_for(REQUEST_ID.fetch_add(1, Ordering::Relaxed));
            let (ep, n, parse) = (ep.clone(), net.clone(), parse.clone());
            let r = run_interruptible(
                move || attempt(&n, &ep, &body, timeout, max_resp, parse),
                &mut crate::interrupts::poll,
            );
            r.map(|(outcome, a)| {
                record_attempts(std::slice::from_ref(&a));
                outcome
            })
        },
        |d| sleep_interruptible(d, &mut crate::interrupts::poll),
        Instant::now,
        random_u64,
    )
}

/// The `result` of a chunk's aggregate3 eth_call for `holders` holders: hex, then checked as it
/// arrives (`balances::check_answer`), so an unusable answer is that endpoint's failure.
fn aggregate3_result(
    holders: usize,
) -> impl Fn(&Endpoint, &serde_json::Value) -> Result<Vec<u8>, RpcError> + Clone + Send + 'static {
    move |ep, v| {
        let raw = jsonrpc::decode_hex_result(ep, v)?;
        balances::check_answer(ep, &raw, holders)?;
        Ok(raw)
    }
}

/// A chunk's aggregate3 eth_call on a helper thread (pipelined): failover, retries and back-off
/// as `request`, waits abandoned when the pipeline stops. The attempts are recorded by the
/// backend's thread when it takes the answer.
fn pipelined_eth_call(
    net: &Net,
    cfg: &PipelineCfg,
    calldata: &[u8],
    holders: usize,
    stop: &StopFlag,
) -> (Result<Vec<u8>, ExecError>, Vec<Attempt>) {
    let mut attempts = Vec::new();
    let r = retry::execute(
        &net.endpoints,
        &cfg.policy,
        cfg.attempt_timeout,
        |ep, timeout| {
            if stop.stopped() {
                return Err(blocking::Interrupted);
            }
            // A token of the request budget (atomics in shared memory, no PostgreSQL call): the
            // wait ends as soon as the pipeline stops (cancel, statement_timeout, SIGTERM).
            cfg.budget.acquire(ep.host(), &mut |d| stop.sleep(d))?;
            let body = jsonrpc::eth_call_body(
                REQUEST_ID.fetch_add(1, Ordering::Relaxed),
                &cfg.to,
                calldata,
            );
            let (r, a) = attempt(
                net,
                ep,
                &body,
                timeout,
                cfg.max_resp,
                aggregate3_result(holders),
            );
            attempts.push(a);
            Ok(r)
        },
        |d| stop.sleep(d),
        Instant::now,
        random_u64,
    );
    (r, attempts)
}

/// What a helper thread needs of the configuration.
struct PipelineCfg {
    policy: retry::RetryPolicy,
    attempt_timeout: Duration,
    max_resp: u64,
    to: String,
    contracts: crate::eth::abi::Contracts,
    budget: Budget,
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
    use error::RpcErrorKind::*;
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
    let mut out = Vec::with_capacity(holders.len());
    let stats = read_balances_streaming(cfg, holders, purpose, &mut |mut v, _| out.append(&mut v));
    (out, stats)
}

/// Reads the holders chunk by chunk, up to `rpc_concurrency` chunks in flight (on helper
/// threads, ahead of the backend's thread, whenever there is more than one chunk), and hands each
/// chunk's holders to `emit(holders, next_is_ready)` in holder order as soon as it is complete,
/// so the caller can write it while later chunks are on the wire (`next_is_ready`: the next
/// chunk's answer is already there, a caller may wait for it and write both at once). ERRORs on
/// any chunk failure that is not isolated; chunks emitted before it stay emitted (a caller in one
/// transaction rolls them back with the ERROR). With `Purpose::Write` every chunk passes the
/// contract-code and block-ahead checks before it is emitted.
pub fn read_balances_streaming(
    cfg: &Config,
    holders: &[Address],
    purpose: Purpose,
    emit: &mut dyn FnMut(Vec<HolderBalance>, bool),
) -> ReadStats {
    let mut stats = ReadStats::default();
    let to = normalize(&cfg.contracts.multicall);
    let isolate: &dyn Fn(&ChunkError<ExecError>) -> bool = &isolatable;
    let size = balances::effective_chunk_size(cfg.chunk_size, cfg.max_request_bytes);
    let chunks = balances::plan_chunks(holders, size);
    // With more than one chunk the reads run on helper threads, ahead of the backend's thread:
    // even at rpc_concurrency = 1 the next chunk is on the wire while this one is written.
    let workers = cfg.concurrency.min(chunks.len());
    if chunks.len() > 1
        && purpose == Purpose::Write
        && HEAD_SEEN.with(Cell::get).fresh(Instant::now()).is_none()
    {
        // The block-ahead check needs a fresh head (see HEAD_SEEN): ask before the helpers start,
        // so the backend's own request does not run beside them (one connection at concurrency 1).
        chain_head(cfg).unwrap_or_else(|e| raise_exec(e, "eth_blockNumber failed"));
    }
    let pipeline = (chunks.len() > 1).then(|| {
        let n = net(cfg);
        let pc = PipelineCfg {
            policy: cfg.policy,
            attempt_timeout: cfg.attempt_timeout,
            max_resp: cfg.max_response_bytes,
            to: to.clone(),
            contracts: cfg.contracts,
            budget: Budget::current(),
        };
        let owned: Vec<Vec<Address>> = chunks.iter().map(|c| c.to_vec()).collect();
        let limiter = n.limiter.clone();
        Pipeline::start(
            chunks.len(),
            workers,
            limiter,
            Arc::new(move |i: usize, stop: &StopFlag| {
                let calldata = crate::eth::abi::encode_chunk(&pc.contracts, &owned[i]);
                pipelined_eth_call(&n, &pc, &calldata, owned[i].len(), stop)
            }),
        )
    });
    let n_chunks = chunks.len();
    let mut first = |i: usize| {
        let p = pipeline.as_ref()?;
        Some(match p.take(i, &mut crate::interrupts::poll) {
            Ok((r, attempts)) => {
                record_attempts(&attempts);
                r
            }
            Err(TakeError::Interrupted) => Err(ExecError::Interrupted),
            // A bug on a helper thread: the whole read fails (the pipeline is stopped and
            // dropped by the ERROR's unwinding), never a wait for an answer that cannot come.
            Err(TakeError::Panicked { job, message }) => raise(
                ERRCODE_INTERNAL_ERROR,
                format!(
                    "audius_indexer: RPC helper thread panicked reading aggregate3 chunk {} of {n_chunks}: {message}",
                    job + 1
                ),
                None,
                None,
            ),
        })
    };
    let result = balances::read_chunks(
        &cfg.contracts,
        &chunks,
        &mut first,
        |calldata, n| {
            request(
                cfg,
                |id| jsonrpc::eth_call_body(id, &to, calldata),
                aggregate3_result(n),
            )
        },
        |e| matches!(e, ExecError::Rpc(r) if r.wants_smaller_chunk()),
        (purpose == Purpose::Write).then_some(isolate),
        &mut stats,
        &mut |i, values| {
            if purpose == Purpose::Write {
                check_contract_code(cfg, &values);
                check_block_ahead(cfg, &values);
            }
            let next_ready = pipeline.as_ref().is_some_and(|p| p.ready(i + 1));
            emit(values, next_ready)
        },
    );
    drop(pipeline);
    match result {
        Ok(()) => stats,
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
    }
}

/// The `result` of a call answering a hex quantity (eth_chainId): strict, see
/// `untrusted::quantity`. For block numbers use `untrusted::parse_head`.
pub fn quantity(ep: &Endpoint, v: &serde_json::Value) -> Result<u64, RpcError> {
    untrusted::parse_quantity(ep, v)
}

/// The node's head (`eth_blockNumber`), validated (a strict quantity, at most
/// `untrusted::MAX_PLAUSIBLE_BLOCK`; otherwise 08P01 naming the host and the field, and the next
/// endpoint is asked); remembered with the time it was seen (HEAD_SEEN).
pub fn chain_head(cfg: &Config) -> Result<i64, ExecError> {
    let head = request(
        cfg,
        |id| jsonrpc::request_body(id, "eth_blockNumber", serde_json::json!([])),
        untrusted::parse_head,
    )?;
    HEAD_SEEN.with(|h| {
        let mut seen = h.get();
        seen.record(head, Instant::now());
        h.set(seen)
    });
    Ok(i64::try_from(head).expect("at most MAX_PLAUSIBLE_BLOCK"))
}

/// Refuses reads stamped further than `max_block_ahead` above the node's head: such a stamp would
/// make the rows unwritable for every honest read after it. Costs an `eth_blockNumber` only when
/// there is no head younger than `untrusted::HEAD_TRUST` or a block is beyond it (plus the
/// distance).
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
    let fresh = HEAD_SEEN.with(Cell::get).fresh(Instant::now());
    if fresh.is_some_and(|head| max_block <= (head as i64).saturating_add(ahead)) {
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
            |id| jsonrpc::request_body(id, "eth_getCode", serde_json::json!([a, "latest"])),
            jsonrpc::decode_hex_result,
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
                error::truncate(s, 80)
            ),
            None,
            Some("Expected 0x followed by 40 hex digits (any case).".into()),
        )
    })
}

/// Snapshot of this backend's per-endpoint counters (for `rpc_endpoint_stats()`).
pub fn endpoint_stats() -> Vec<(String, retry::EndpointStats)> {
    // Show configured endpoints even before the first request.
    let configured = crate::config::resolve_endpoints().unwrap_or_default();
    NET.with(|n| {
        let mut eps = n.endpoints.lock().unwrap_or_else(|p| p.into_inner());
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
