//! Settings → what one call needs: the RPC endpoints (from `rpc_urls_file`, `rpc_urls` or
//! `rpc_url`), contract addresses, chunking, timeouts and the retry policy. Read at call time, next
//! to the settings themselves (`gucs.rs`).

use crate::errors::raise;
use crate::eth::abi::Contracts;
use crate::eth::address::parse_address;
use crate::eth::endpoint;
use crate::eth::endpoint::Endpoint;
use crate::eth::retry::RetryPolicy;
use crate::gucs;
use alloy_primitives::Address;
use audius_indexer_core::settings;
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
    /// Largest answer: `min(rpc_max_response_bytes, 256 MB / concurrency)`.
    pub max_response_bytes: u64,
    /// Chunks in flight per read (`rpc_concurrency`).
    pub concurrency: usize,
    /// Keep-alive connections idle longer than this are not reused (`rpc_idle_timeout_ms`).
    pub idle_timeout: Duration,
    /// The CA certificates `https://` endpoints are verified against (`rpc_tls_ca_file`); None:
    /// the web PKI roots.
    pub tls_ca_file: Option<String>,
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

/// How an `rpc_urls_file` must be, for the hint of every refusal.
const ENDPOINT_FILE_HINT: &str = "The file must be a regular file (not a symbolic link) of at most 64 kB, owned by \
     the server's OS user or root, not writable by group or others: chown postgres FILE; chmod 0600 FILE.";

/// Reads and parses the endpoints file, with checks like PostgreSQL's on `ssl_key_file`: opened
/// with `O_NOFOLLOW | O_NONBLOCK` (a symbolic link is refused, a FIFO or device cannot block the
/// open), then `fstat` of the opened file must show a regular file of at most 64 kB owned by the
/// server's OS user (`geteuid`) or root and not writable by group or others
/// (`audius_indexer_core::settings::check_endpoint_file`); at most 64 kB + 1 bytes are read.
/// Errors name the path (which is not a secret) and the rule that failed, never the file's
/// content: 58P01 missing, 42501 not readable / a symbolic link / wrong owner / writable by
/// others, 22023 not a regular file / too large / not UTF-8 / a bad line, 58030 other I/O errors.
fn read_endpoint_file(path: &str) -> Result<Vec<Endpoint>, EndpointError> {
    use audius_indexer_core::settings::{self as rules, FileFacts, FileRefusal};
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
    let hint = || Some(ENDPOINT_FILE_HINT.to_string());
    let refused = |r: FileRefusal| {
        let code = match r.sqlstate() {
            "42501" => ERRCODE_INSUFFICIENT_PRIVILEGE,
            _ => ERRCODE_INVALID_PARAMETER_VALUE,
        };
        let msg = format!("audius_indexer.rpc_urls_file {path:?} is refused: {r}");
        (code, msg, hint())
    };
    let io_failed = |what: &str, e: std::io::Error| {
        let code = match e.kind() {
            std::io::ErrorKind::NotFound => ERRCODE_UNDEFINED_FILE,
            std::io::ErrorKind::PermissionDenied => ERRCODE_INSUFFICIENT_PRIVILEGE,
            _ => ERRCODE_IO_ERROR,
        };
        let msg = format!("cannot {what} audius_indexer.rpc_urls_file {path:?}: {e}");
        (code, msg, None)
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            // O_NOFOLLOW on a path whose last component is a symbolic link.
            Some(libc::ELOOP) => refused(FileRefusal::Symlink),
            _ => io_failed("open", e),
        })?;
    let meta = file.metadata().map_err(|e| io_failed("fstat", e))?;
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    let facts = FileFacts {
        regular: ft.is_file(),
        kind,
        size: meta.size(),
        uid: meta.uid(),
        mode: meta.mode() & 0o7777,
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let server_uid = unsafe { libc::geteuid() };
    rules::check_endpoint_file(&facts, server_uid).map_err(refused)?;
    let mut bytes = Vec::with_capacity(facts.size as usize);
    (&mut file)
        .take(rules::MAX_ENDPOINT_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_failed("read", e))?;
    let text = rules::endpoint_file_text(bytes).map_err(|why| {
        let msg = format!("audius_indexer.rpc_urls_file {path:?} is refused: {why}");
        (ERRCODE_INVALID_PARAMETER_VALUE, msg, hint())
    })?;
    endpoint::parse_endpoint_file(&text).map_err(|e| {
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
        EndpointSource::Setting(name, list) => endpoint::parse_endpoint_list(&list).map_err(|e| {
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
        // The answers in flight are bounded (256 MB) whatever the two settings say.
        let concurrency = settings::effective_concurrency(gucs::RPC_CONCURRENCY.get().into());
        let max_response_bytes = settings::effective_max_response_bytes(
            gucs::RPC_MAX_RESPONSE_BYTES.get().into(),
            concurrency,
        );
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
            max_response_bytes,
            concurrency,
            idle_timeout: ms(gucs::RPC_IDLE_TIMEOUT_MS.get()),
            tls_ca_file: Some(gucs::string(&gucs::RPC_TLS_CA_FILE)).filter(|s| !s.is_empty()),
        }
    }
}
