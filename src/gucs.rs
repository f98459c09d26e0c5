//! Every `audius_indexer.*` setting, in one place.
//!
//! Contexts are chosen deliberately:
//! - Endpoints are `SIGHUP` + superuser-only, so a session can never point them elsewhere:
//!   - `rpc_urls_file` names a file only the server can read, holding the URLs: the secret part
//!     (API keys in the path or query) never becomes a setting value. The recommended form.
//!   - `rpc_url` / `rpc_urls` hold the URLs themselves. `GUC_SUPERUSER_ONLY` hides them from
//!     ordinary roles, but PostgreSQL 15 shows them to members of `pg_read_all_settings` (and so
//!     `pg_monitor`) in `SHOW`, `pg_settings` and `current_setting`: for those who accept that.
//!   All three are validated when set (check hooks; 22023 without echoing the value).
//! - Contract addresses are `SUSET`: only a superuser may redirect the reads (they decide what is
//!   written into `eth_wallet_balances`), but a superuser may do so per session (tests, forks).
//! - Tuning knobs of a request (chunk size, request bytes, timeouts, retries, the idle timeout)
//!   are `USERSET`, within bounds, except those that size the server's memory:
//!   `rpc_max_response_bytes` and `rpc_concurrency` are `SUSET`, and their product is capped at
//!   256 MB whatever they say (a failed allocation aborts the backend, which restarts the cluster).
//! - `rpc_tls_ca_file` is `SUSET`: which CAs the server trusts is the superuser's choice.
//! - The rest is `SIGHUP` (the workers reload on SIGHUP): the request budget
//!   (`rpc_max_requests_per_second`), `rpc_failover_cooldown_ms`, the three workers' intervals and
//!   batch sizes and `sweep_enabled`, the follower's `confirmations`, `log_range_blocks`,
//!   `follow_from_block` and `max_reorg_depth`, the failing wallets' back-off and
//!   `max_block_ahead`; the database the workers connect to and their role are `POSTMASTER`
//!   (defined only when the library is preloaded).
//!
//! docs/settings.md lists every setting with its default and context; keep them in sync.

use pgrx::pg_sys::GucContext::{PGC_POSTMASTER, PGC_SIGHUP, PGC_SUSET, PGC_USERSET};
use pgrx::prelude::*;
use pgrx::{pg_sys, GucFlags, GucSetting};
use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};

/// `audius_indexer.rpc_url`: the JSON-RPC endpoint (http/https). Unset by default.
pub static RPC_URL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// `audius_indexer.rpc_urls`: ordered failover list (comma-separated); overrides `rpc_url` when set.
pub static RPC_URLS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// `audius_indexer.rpc_urls_file`: absolute path of a file (readable by the server only) with one
/// URL per line; overrides `rpc_urls` and `rpc_url` when set.
pub static RPC_URLS_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// `audius_indexer.max_block_ahead`: how far Multicall3's `getBlockNumber()` may be above the
/// node's `eth_blockNumber` before the answer is refused (08P01) instead of stamped on rows.
pub static MAX_BLOCK_AHEAD: GucSetting<i32> = GucSetting::<i32>::new(100);
/// `audius_indexer.token_address`: AUDIO token (`balanceOf`).
pub static TOKEN_ADDRESS: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"0x18aAA7115705e8be94bfFEbDE57Af9BFc265B998"));
/// `audius_indexer.staking_address`: Staking (`totalStakedFor`).
pub static STAKING_ADDRESS: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"0xe6D97B2099F142513be7A2a068bE040656Ae4591"));
/// `audius_indexer.delegate_manager_address`: DelegateManager (`getTotalDelegatorStake`).
pub static DELEGATE_MANAGER_ADDRESS: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"0x4d7968ebfD390D5E7926Cb3587C39eFf2F9FB225"));
/// `audius_indexer.multicall_address`: Multicall3.
pub static MULTICALL_ADDRESS: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"0xcA11bde05977b3631167028862bE2a173976CA11"));
/// `audius_indexer.multicall_chunk_size`: holders per aggregate3 call (3 sub-calls each, +1).
pub static MULTICALL_CHUNK_SIZE: GucSetting<i32> = GucSetting::<i32>::new(200);
/// `audius_indexer.multicall_max_request_bytes`: request body budget per aggregate3 (0 = none).
pub static MULTICALL_MAX_REQUEST_BYTES: GucSetting<i32> = GucSetting::<i32>::new(1024 * 1024);
/// `audius_indexer.rpc_timeout_ms`: timeout of one HTTP attempt.
pub static RPC_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
/// `audius_indexer.rpc_max_retries`: retries of transient failures per request.
pub static RPC_MAX_RETRIES: GucSetting<i32> = GucSetting::<i32>::new(3);
/// `audius_indexer.rpc_retry_budget_ms`: total time for one request's attempts and waits.
pub static RPC_RETRY_BUDGET_MS: GucSetting<i32> = GucSetting::<i32>::new(30_000);
/// `audius_indexer.rpc_failover_cooldown_ms`: how long a failing endpoint is skipped (doubles
/// per consecutive failure, up to 64×).
pub static RPC_FAILOVER_COOLDOWN_MS: GucSetting<i32> = GucSetting::<i32>::new(30_000);
/// `audius_indexer.rpc_max_response_bytes`: largest answer accepted (1 kB – 256 MB). `SUSET`: an
/// answer buffer is memory of the server process, and a failed allocation aborts it (and so
/// restarts the cluster). The limit applied is `min(setting, 256 MB / rpc_concurrency)`
/// (`audius_indexer_core::settings::effective_max_response_bytes`), so the answers one backend
/// may be receiving at once never total more than 256 MB.
pub static RPC_MAX_RESPONSE_BYTES: GucSetting<i32> = GucSetting::<i32>::new(64 * 1024 * 1024);
/// `audius_indexer.rpc_concurrency`: aggregate3 chunks of one read in flight at once (1 = one
/// after the other). Halved for the rest of the session's reads while the provider rate-limits,
/// grown back by one after a run of good answers. `SUSET` (1 – 32): each chunk in flight may hold
/// an answer of up to the effective `rpc_max_response_bytes`, whose cap it lowers (256 MB /
/// concurrency).
pub static RPC_CONCURRENCY: GucSetting<i32> = GucSetting::<i32>::new(4);
/// `audius_indexer.rpc_idle_timeout_ms`: a keep-alive connection idle this long is closed at
/// its next use instead of being reused (0 = no keep-alive: a new connection per request).
pub static RPC_IDLE_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(30_000);
/// `audius_indexer.rpc_tls_ca_file`: a PEM file of the CA certificates that `https://` endpoints are
/// verified against **instead of** the built-in web PKI roots (as `curl --cacert`): a private CA, or
/// the test CA of a local TLS terminator. Empty (the default): the web PKI roots. `SUSET`: which CAs
/// the server trusts is the superuser's choice. An unreadable file, or one without a certificate, is
/// an ERROR (22023) at the next request, naming the path.
pub static RPC_TLS_CA_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// `audius_indexer.rpc_max_requests_per_second`: the request budget — HTTP attempts per second
/// per endpoint host, server-wide (0 = no cap, the default). `SIGHUP`: every backend and the three
/// workers share one value (and, when the library is preloaded, one token bucket per host in shared
/// memory; without preload each backend has a bucket of its own). Burst: one second's worth. An
/// attempt without a token waits for one (interruptibly), it never fails because of the budget.
/// Its assign hook writes the value into the buckets' table (`request_budget::set_rate`): a
/// reload applies at once everywhere, to a worker's step in progress too.
pub static RPC_MAX_REQUESTS_PER_SECOND: GucSetting<i32> = GucSetting::<i32>::new(0);

/// `audius_indexer.database`: database the three background workers connect to (postmaster
/// setting).
pub static DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
/// `audius_indexer.worker_role`: the role the three background workers connect as (postmaster
/// setting). Empty (the default): the bootstrap superuser. Set it to a non-superuser LOGIN role
/// that is a member of `audius_indexer_operator`: the workers then have exactly an operator's
/// rights (the same entry points and internal switches as `CALL audius_indexer.sweep()`,
/// `follow_transfers()` and `process_user_event_challenges()`). Checked when a worker starts: a
/// missing, superuser or non-operator role makes the worker idle with a WARNING.
pub static WORKER_ROLE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// `audius_indexer.sweep_enabled`: whether the worker sweeps.
pub static SWEEP_ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
/// `audius_indexer.sweep_interval`: time between worker ticks.
pub static SWEEP_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(30_000);
/// `audius_indexer.sweep_batch_size`: wallets per worker tick.
pub static SWEEP_BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(50);
/// `audius_indexer.challenges_interval`: time between runs of the challenge processors by the
/// background worker (ms; 0 = the worker does not run them).
pub static CHALLENGES_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(30_000);
/// `audius_indexer.challenges_batch_size`: `user_events` rows per processor per worker run.
pub static CHALLENGES_BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(5000);
/// `audius_indexer.follow_interval`: time between steps of the Transfer-log follower run by the
/// background worker (ms; 0 = the worker does not follow).
pub static FOLLOW_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(5_000);
/// `audius_indexer.confirmations`: blocks below the head the follower stays.
pub static CONFIRMATIONS: GucSetting<i32> = GucSetting::<i32>::new(0);
/// `audius_indexer.log_range_blocks`: blocks per `eth_getLogs` request (the Go eth-indexer's
/// 9,000).
pub static LOG_RANGE_BLOCKS: GucSetting<i32> = GucSetting::<i32>::new(9000);
/// `audius_indexer.follow_from_block`: first block on first boot (-1 = the head, as the Go
/// eth-indexer).
pub static FOLLOW_FROM_BLOCK: GucSetting<i32> = GucSetting::<i32>::new(-1);
/// `audius_indexer.max_reorg_depth`: how far back the follower looks for a common ancestor.
pub static MAX_REORG_DEPTH: GucSetting<i32> = GucSetting::<i32>::new(64);
/// `audius_indexer.failure_backoff_base`: first back-off of a wallet whose reads fail.
pub static FAILURE_BACKOFF_BASE_S: GucSetting<i32> = GucSetting::<i32>::new(60);
/// `audius_indexer.failure_backoff_max`: longest back-off of a failing wallet.
pub static FAILURE_BACKOFF_MAX_S: GucSetting<i32> = GucSetting::<i32>::new(6 * 3600);

/// True in processes of a server that loaded the library through `shared_preload_libraries`
/// (set in `_PG_init` of the postmaster, inherited by every forked backend).
static PRELOADED: AtomicBool = AtomicBool::new(false);

pub fn preloaded() -> bool {
    PRELOADED.load(Ordering::Relaxed)
}

/// One setting as `init` defines it: name, descriptions (`short_desc`, `extra_desc` in
/// `pg_settings`), context, flags, and its type with its variable and hooks. The default is the
/// variable's initial value.
struct Decl {
    name: &'static CStr,
    short: &'static CStr,
    long: &'static CStr,
    context: pg_sys::GucContext::Type,
    flags: GucFlags,
    kind: Kind,
}

/// The type of a setting, with its variable, bounds and hooks.
enum Kind {
    Int {
        setting: &'static GucSetting<i32>,
        min: i32,
        max: i32,
        assign: Option<IntAssign>,
    },
    Bool {
        setting: &'static GucSetting<bool>,
    },
    String {
        setting: &'static GucSetting<Option<CString>>,
        check: pg_sys::GucStringCheckHook,
    },
}

/// An assign hook of an int setting, supplied by a module above this one through [`Hooks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IntAssign {
    /// [`Hooks::max_requests_per_second`].
    MaxRequestsPerSecond,
}

/// An int setting without hooks.
const fn int(setting: &'static GucSetting<i32>, min: i32, max: i32) -> Kind {
    Kind::Int {
        setting,
        min,
        max,
        assign: None,
    }
}

/// A string setting, with its check hook if it has one.
const fn text(
    setting: &'static GucSetting<Option<CString>>,
    check: pg_sys::GucStringCheckHook,
) -> Kind {
    Kind::String { setting, check }
}

/// The long description of the address settings.
const ADDRESS_FORMAT: &CStr = c"0x-prefixed 20-byte address (any case).";

/// Every setting, in the order `init` defines them.
static SETTINGS: &[Decl] = &[
    // Endpoints: validated when set (check hooks), never echoed.
    Decl {
        name: c"audius_indexer.rpc_url",
        short: c"Ethereum JSON-RPC endpoint (http/https) used for eth_call.",
        long: c"Superuser-only; members of pg_read_all_settings can still read it. Prefer rpc_urls_file for URLs with API keys.",
        context: PGC_SIGHUP,
        flags: GucFlags::SUPERUSER_ONLY,
        kind: text(&RPC_URL, Some(check_rpc_url)),
    },
    Decl {
        name: c"audius_indexer.rpc_urls",
        short: c"Ordered, comma-separated failover list of JSON-RPC endpoints; overrides rpc_url when set.",
        long: c"A failing endpoint is skipped for rpc_failover_cooldown_ms and the next one is used.",
        context: PGC_SIGHUP,
        flags: GucFlags::SUPERUSER_ONLY,
        kind: text(&RPC_URLS, Some(check_rpc_urls)),
    },
    Decl {
        name: c"audius_indexer.rpc_urls_file",
        short: c"File with the JSON-RPC endpoints, one URL per line (failover order); overrides rpc_urls and rpc_url.",
        long: c"Absolute path; keep the file owned by the server's OS user, mode 0600. Only the path is a setting.",
        context: PGC_SIGHUP,
        flags: GucFlags::SUPERUSER_ONLY,
        kind: text(&RPC_URLS_FILE, Some(check_rpc_urls_file)),
    },
    // Addresses are validated when set (SET, ALTER SYSTEM, postgresql.conf), not only when used.
    Decl {
        name: c"audius_indexer.token_address",
        short: c"AUDIO token contract (balanceOf).",
        long: ADDRESS_FORMAT,
        context: PGC_SUSET,
        flags: GucFlags::empty(),
        kind: text(&TOKEN_ADDRESS, Some(check_address)),
    },
    Decl {
        name: c"audius_indexer.staking_address",
        short: c"Staking contract (totalStakedFor).",
        long: ADDRESS_FORMAT,
        context: PGC_SUSET,
        flags: GucFlags::empty(),
        kind: text(&STAKING_ADDRESS, Some(check_address)),
    },
    Decl {
        name: c"audius_indexer.delegate_manager_address",
        short: c"DelegateManager contract (getTotalDelegatorStake).",
        long: ADDRESS_FORMAT,
        context: PGC_SUSET,
        flags: GucFlags::empty(),
        kind: text(&DELEGATE_MANAGER_ADDRESS, Some(check_address)),
    },
    Decl {
        name: c"audius_indexer.multicall_address",
        short: c"Multicall3 contract (aggregate3, getBlockNumber).",
        long: ADDRESS_FORMAT,
        context: PGC_SUSET,
        flags: GucFlags::empty(),
        kind: text(&MULTICALL_ADDRESS, Some(check_address)),
    },
    Decl {
        name: c"audius_indexer.multicall_chunk_size",
        short: c"Holders per aggregate3 eth_call (each holder is 3 sub-calls, plus 1 getBlockNumber).",
        long: c"",
        context: PGC_USERSET,
        flags: GucFlags::empty(),
        kind: int(&MULTICALL_CHUNK_SIZE, 1, 10_000),
    },
    Decl {
        name: c"audius_indexer.multicall_max_request_bytes",
        short: c"Request body budget per aggregate3 eth_call; chunks are made smaller to fit (0 = no budget).",
        long: c"",
        context: PGC_USERSET,
        flags: GucFlags::UNIT_BYTE,
        kind: int(&MULTICALL_MAX_REQUEST_BYTES, 0, i32::MAX),
    },
    Decl {
        name: c"audius_indexer.rpc_timeout_ms",
        short: c"Timeout of one HTTP attempt to the RPC endpoint.",
        long: c"statement_timeout and query cancel still apply at any time.",
        context: PGC_USERSET,
        flags: GucFlags::UNIT_MS,
        kind: int(&RPC_TIMEOUT_MS, 100, 3_600_000),
    },
    Decl {
        name: c"audius_indexer.rpc_concurrency",
        short: c"Aggregate3 chunks of one balance read in flight at once (1 = one after the other).",
        long: c"Superuser-only. Halved while the provider answers rate-limit errors, grown back by one after a run of good answers. Answers are applied in wallet order either way. Lowers the per-answer limit to 256MB / rpc_concurrency.",
        context: PGC_SUSET,
        flags: GucFlags::empty(),
        kind: int(&RPC_CONCURRENCY, 1, 32),
    },
    Decl {
        name: c"audius_indexer.rpc_idle_timeout_ms",
        short: c"How long an idle keep-alive connection to an RPC endpoint may be reused.",
        long: c"Older connections are closed at their next use and a new one is opened. 0 = no keep-alive: a new connection per request.",
        context: PGC_USERSET,
        flags: GucFlags::UNIT_MS,
        kind: int(&RPC_IDLE_TIMEOUT_MS, 0, 3_600_000),
    },
    Decl {
        name: c"audius_indexer.rpc_tls_ca_file",
        short: c"PEM file of the CA certificates https:// RPC endpoints are verified against, instead of the web PKI roots.",
        long: c"Empty: the built-in web PKI roots. For a private CA or a test CA (as curl --cacert). Superuser-only.",
        context: PGC_SUSET,
        flags: GucFlags::empty(),
        kind: text(&RPC_TLS_CA_FILE, None),
    },
    // The assign hook puts the value into the request budget's table (shared memory when
    // preloaded): the postmaster applies a reload first, so every process, mid-step or mid-wait,
    // follows at once.
    Decl {
        name: c"audius_indexer.rpc_max_requests_per_second",
        short: c"Request budget: HTTP attempts per second to each RPC endpoint host, server-wide (0 = no cap).",
        long: c"A token bucket per host (burst: one second's worth) shared by every backend and the workers when the library is preloaded, per backend otherwise. An attempt without a token waits for one; cancel and statement_timeout still apply.",
        context: PGC_SIGHUP,
        flags: GucFlags::empty(),
        kind: Kind::Int {
            setting: &RPC_MAX_REQUESTS_PER_SECOND,
            min: 0,
            max: 1_000_000,
            assign: Some(IntAssign::MaxRequestsPerSecond),
        },
    },
    Decl {
        name: c"audius_indexer.rpc_max_retries",
        short: c"Retries of transient RPC failures (connect errors, timeouts, 429, 502-504, rate-limit errors).",
        long: c"",
        context: PGC_USERSET,
        flags: GucFlags::empty(),
        kind: int(&RPC_MAX_RETRIES, 0, 100),
    },
    Decl {
        name: c"audius_indexer.rpc_retry_budget_ms",
        short: c"Total time for all attempts and backoff waits of one RPC request.",
        long: c"",
        context: PGC_USERSET,
        flags: GucFlags::UNIT_MS,
        kind: int(&RPC_RETRY_BUDGET_MS, 100, 3_600_000),
    },
    Decl {
        name: c"audius_indexer.rpc_failover_cooldown_ms",
        short: c"How long a failing endpoint is skipped before it is tried again (doubles per consecutive failure).",
        long: c"",
        context: PGC_SIGHUP,
        flags: GucFlags::UNIT_MS,
        kind: int(&RPC_FAILOVER_COOLDOWN_MS, 0, 3_600_000),
    },
    Decl {
        name: c"audius_indexer.rpc_max_response_bytes",
        short: c"Largest RPC answer accepted; a larger one is treated as too large and the chunk is split.",
        long: c"Superuser-only. The limit applied is the smaller of this and 256MB / rpc_concurrency, so the answers in flight never total more than 256MB.",
        context: PGC_SUSET,
        flags: GucFlags::UNIT_BYTE,
        kind: int(&RPC_MAX_RESPONSE_BYTES, 1024, 256 * 1024 * 1024),
    },
    // The workers' database and role are fixed at postmaster start (defined only when the library
    // is preloaded: see `init`).
    Decl {
        name: c"audius_indexer.database",
        short: c"Database the sweep background worker connects to.",
        long: c"",
        context: PGC_POSTMASTER,
        flags: GucFlags::empty(),
        kind: text(&DATABASE, None),
    },
    Decl {
        name: c"audius_indexer.worker_role",
        short: c"Role the background workers connect as (empty: the bootstrap superuser).",
        long: c"A non-superuser LOGIN role that is a member of audius_indexer_operator.",
        context: PGC_POSTMASTER,
        flags: GucFlags::empty(),
        kind: text(&WORKER_ROLE, None),
    },
    Decl {
        name: c"audius_indexer.sweep_enabled",
        short: c"Whether the background worker runs the stale sweep.",
        long: c"Turn it off when pg_cron drives refresh_stale().",
        context: PGC_SIGHUP,
        flags: GucFlags::empty(),
        kind: Kind::Bool {
            setting: &SWEEP_ENABLED,
        },
    },
    Decl {
        name: c"audius_indexer.sweep_interval",
        short: c"Time between background sweep ticks.",
        long: c"",
        context: PGC_SIGHUP,
        flags: GucFlags::UNIT_MS,
        kind: int(&SWEEP_INTERVAL_MS, 100, 86_400_000),
    },
    Decl {
        name: c"audius_indexer.sweep_batch_size",
        short: c"Wallets refreshed per background sweep tick.",
        long: c"",
        context: PGC_SIGHUP,
        flags: GucFlags::empty(),
        kind: int(&SWEEP_BATCH_SIZE, 1, 100_000),
    },
    Decl {
        name: c"audius_indexer.challenges_interval",
        short: c"Time between runs of the challenge processors (m, r, rv, rd) by the background worker.",
        long: c"0 switches them off (pg_cron can call process_user_event_challenges() instead).",
        context: PGC_SIGHUP,
        flags: GucFlags::UNIT_MS,
        kind: int(&CHALLENGES_INTERVAL_MS, 0, 86_400_000),
    },
    Decl {
        name: c"audius_indexer.challenges_batch_size",
        short: c"user_events rows each challenge processor scans per background run.",
        long: c"",
        context: PGC_SIGHUP,
        flags: GucFlags::empty(),
        kind: int(&CHALLENGES_BATCH_SIZE, 1, 1_000_000),
    },
    Decl {
        name: c"audius_indexer.follow_interval",
        short: c"Time between steps of the Transfer-log follower run by the background worker.",
        long: c"0 switches it off (pg_cron can call follow_transfers() instead).",
        context: PGC_SIGHUP,
        flags: GucFlags::UNIT_MS,
        kind: int(&FOLLOW_INTERVAL_MS, 0, 86_400_000),
    },
    Decl {
        name: c"audius_indexer.confirmations",
        short: c"Blocks below the chain head the Transfer-log follower stays (0 = follow the head; reorgs are detected by block hash).",
        long: c"",
        context: PGC_SIGHUP,
        flags: GucFlags::empty(),
        kind: int(&CONFIRMATIONS, 0, 10_000),
    },
    Decl {
        name: c"audius_indexer.log_range_blocks",
        short: c"Blocks per eth_getLogs request of the Transfer-log follower (a refused range is bisected).",
        long: c"",
        context: PGC_SIGHUP,
        flags: GucFlags::empty(),
        kind: int(&LOG_RANGE_BLOCKS, 1, 1_000_000),
    },
    Decl {
        name: c"audius_indexer.follow_from_block",
        short: c"First block the Transfer-log follower reads when there is no audio_transfers checkpoint yet.",
        long: c"-1 (default): start at the head, as the Go eth-indexer (no history replay).",
        context: PGC_SIGHUP,
        flags: GucFlags::empty(),
        kind: int(&FOLLOW_FROM_BLOCK, -1, i32::MAX),
    },
    Decl {
        name: c"audius_indexer.max_reorg_depth",
        short: c"How many blocks below its checkpoint the Transfer-log follower looks for the common ancestor after a reorg.",
        long: c"",
        context: PGC_SIGHUP,
        flags: GucFlags::empty(),
        kind: int(&MAX_REORG_DEPTH, 1, 100_000),
    },
    Decl {
        name: c"audius_indexer.failure_backoff_base",
        short: c"First back-off of a wallet whose reads fail (doubles per failure).",
        long: c"",
        context: PGC_SIGHUP,
        flags: GucFlags::UNIT_S,
        kind: int(&FAILURE_BACKOFF_BASE_S, 1, 86_400 * 30),
    },
    Decl {
        name: c"audius_indexer.failure_backoff_max",
        short: c"Longest back-off of a failing wallet.",
        long: c"",
        context: PGC_SIGHUP,
        flags: GucFlags::UNIT_S,
        kind: int(&FAILURE_BACKOFF_MAX_S, 1, 86_400 * 365),
    },
    Decl {
        name: c"audius_indexer.max_block_ahead",
        short: c"Largest distance a read's block (Multicall3 getBlockNumber) may be above the node's eth_blockNumber.",
        long: c"A read stamped further ahead is refused (08P01) and nothing is written: a wrong stamp would block the row for good.",
        context: PGC_SIGHUP,
        flags: GucFlags::empty(),
        kind: int(&MAX_BLOCK_AHEAD, 0, 1_000_000),
    },
];

/// Defines every setting of [`SETTINGS`], in order, then reserves the `audius_indexer.` prefix.
pub fn init(hooks: Hooks) {
    let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    if preloading {
        PRELOADED.store(true, Ordering::Relaxed);
    }
    for decl in SETTINGS {
        // POSTMASTER settings can only be defined while shared_preload_libraries is being
        // processed.
        if decl.context == PGC_POSTMASTER && !preloading {
            continue;
        }
        decl.define(&hooks);
    }
    unsafe { pg_sys::MarkGUCPrefixReserved(c"audius_indexer".as_ptr()) };
}

impl Decl {
    fn define(&self, hooks: &Hooks) {
        let (name, short, long) = (self.name.as_ptr(), self.short.as_ptr(), self.long.as_ptr());
        let (context, flags) = (self.context, self.flags.bits());
        // Every DefineCustom*Variable takes the name, the descriptions, the variable and its boot
        // value first; then what its kind needs, the context, the flags and the hooks.
        macro_rules! define {
            ($define:ident, $setting:expr, $($rest:expr),+) => {
                pg_sys::$define(name, short, long, $setting.as_ptr(), *$setting.as_ptr(), $($rest),+)
            };
        }
        // SAFETY: the name and descriptions are 'static C strings and the variable a 'static
        // GucSetting, as PostgreSQL requires; every hook is #[pg_guard]ed.
        unsafe {
            match self.kind {
                Kind::Int {
                    setting,
                    min,
                    max,
                    assign,
                } => {
                    let assign = assign.and_then(|a| hooks.int_assign(a));
                    define!(
                        DefineCustomIntVariable,
                        setting,
                        min,
                        max,
                        context,
                        flags,
                        None,
                        assign,
                        None
                    )
                }
                Kind::Bool { setting } => {
                    define!(
                        DefineCustomBoolVariable,
                        setting,
                        context,
                        flags,
                        None,
                        None,
                        None
                    )
                }
                Kind::String { setting, check } => {
                    define!(
                        DefineCustomStringVariable,
                        setting,
                        context,
                        flags,
                        check,
                        None,
                        None
                    )
                }
            }
        }
    }
}

/// What `init` needs from the modules above this one (this module imports none of them).
pub struct Hooks {
    /// Assign hook of `rpc_max_requests_per_second` (`request_budget::assign_rate`).
    pub max_requests_per_second: pg_sys::GucIntAssignHook,
}

impl Hooks {
    fn int_assign(&self, hook: IntAssign) -> pg_sys::GucIntAssignHook {
        match hook {
            IntAssign::MaxRequestsPerSecond => self.max_requests_per_second,
        }
    }
}

/// GUC check hook of the address settings: refuses anything `parse_address` refuses, with the
/// reason as the error's DETAIL (PostgreSQL reports SQLSTATE 22023).
#[pg_guard]
unsafe extern "C-unwind" fn check_address(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    let value = unsafe {
        if newval.is_null() || (*newval).is_null() {
            return true;
        }
        CStr::from_ptr(*newval).to_string_lossy().into_owned()
    };
    match crate::eth::address::parse_address(&value) {
        Ok(_) => true,
        Err(e) => {
            let detail = CString::new(format!(
                "{value:?} {e}; expected 0x followed by 40 hex digits"
            ))
            .unwrap_or_else(|_| CString::from(c"not a valid address"));
            unsafe { pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(detail.as_ptr()) };
            false
        }
    }
}

/// Reports a refused value: the message names the setting and the reason, never the value (URLs
/// carry API keys; PostgreSQL would otherwise print the value in the error and the server log).
unsafe fn refuse(name: &str, reason: &str) -> bool {
    let msg = CString::new(format!("invalid value for parameter \"{name}\": {reason}"))
        .unwrap_or_else(|_| CString::from(c"invalid value"));
    let hint = CString::new("Only http:// and https:// URLs; separate several with commas (rpc_urls). The value is not shown because URLs carry API keys.")
        .unwrap_or_default();
    unsafe {
        pg_sys::GUC_check_errmsg_string = pg_sys::pstrdup(msg.as_ptr());
        pg_sys::GUC_check_errhint_string = pg_sys::pstrdup(hint.as_ptr());
    }
    false
}

/// The new value of a string check hook (None for NULL).
unsafe fn new_value(newval: *mut *mut std::ffi::c_char) -> Option<String> {
    unsafe {
        if newval.is_null() || (*newval).is_null() {
            return None;
        }
        Some(CStr::from_ptr(*newval).to_string_lossy().into_owned())
    }
}

/// Check hooks of the endpoint settings: NULL and '' (unset) are accepted; anything else must
/// pass `check`, whose error becomes the refusal's reason (never the value).
unsafe fn check_endpoint_setting(
    name: &str,
    newval: *mut *mut std::ffi::c_char,
    check: impl FnOnce(&str) -> Result<(), String>,
) -> bool {
    match unsafe { new_value(newval) } {
        None => true,
        Some(v) if v.is_empty() => true,
        Some(v) => match check(&v) {
            Ok(()) => true,
            Err(reason) => unsafe { refuse(name, &reason) },
        },
    }
}

/// A check hook with the C signature PostgreSQL calls, running `check_endpoint_setting` for the
/// setting `$name` with `$check`.
macro_rules! endpoint_check_hook {
    ($hook:ident, $name:literal, $check:expr) => {
        #[pg_guard]
        unsafe extern "C-unwind" fn $hook(
            newval: *mut *mut std::ffi::c_char,
            _extra: *mut *mut std::ffi::c_void,
            _source: pg_sys::GucSource::Type,
        ) -> bool {
            unsafe { check_endpoint_setting($name, newval, $check) }
        }
    };
}

endpoint_check_hook!(check_rpc_url, "audius_indexer.rpc_url", |v: &str| {
    crate::eth::endpoint::Endpoint::parse(v.trim())
        .map(drop)
        .map_err(|e| format!("the URL {e}"))
});
endpoint_check_hook!(check_rpc_urls, "audius_indexer.rpc_urls", |v: &str| {
    crate::eth::endpoint::parse_endpoint_list(v).map(drop)
});
endpoint_check_hook!(
    check_rpc_urls_file,
    "audius_indexer.rpc_urls_file",
    |v: &str| {
        if v.starts_with('/') && !v.contains('\n') {
            Ok(())
        } else {
            Err("the path is not absolute (it names a file with one URL per line)".into())
        }
    }
);

/// A string setting's value, or "" when unset.
pub fn string(setting: &GucSetting<Option<CString>>) -> String {
    setting
        .get()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default()
}
