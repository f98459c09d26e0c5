//! Settings → what one call needs: the RPC endpoints (from `rpc_urls_file`, `rpc_urls` or
//! `rpc_url`), contract addresses, chunking, timeouts and the retry policy. Read at call time, next
//! to the settings themselves (`gucs.rs`).

use crate::errors::raise;
use crate::eth::abi::Contracts;
use crate::eth::address::parse_address;
use crate::eth::rpc::{self, Endpoint, RetryPolicy};
use crate::gucs;
use alloy_primitives::Address;
use pgrx::{PgSqlErrorCode, PgSqlErrorCode::*};
use std::time::Duration;

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
    /// Chunks in flight per read (`rpc_concurrency`).
    pub concurrency: usize,
    /// Keep-alive connections idle longer than this are not reused (`rpc_idle_timeout_ms`).
    pub idle_timeout: Duration,
    /// HTTP/2 with prior knowledge to `http://` endpoints (`rpc_http2`).
    pub http2: bool,
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
pub(crate) fn resolve_endpoints() -> Result<Vec<Endpoint>, EndpointError> {
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
            concurrency: gucs::RPC_CONCURRENCY.get().clamp(1, 32) as usize,
            idle_timeout: ms(gucs::RPC_IDLE_TIMEOUT_MS.get()),
            http2: gucs::RPC_HTTP2.get(),
        }
    }
}
