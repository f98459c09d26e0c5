//! JSON-RPC over HTTP(S): endpoints, the wire call, error classification, retries and failover.
//!
//! Nothing here touches PostgreSQL. Blocking I/O runs on a helper thread (see `blocking.rs`) so the
//! backend can keep answering cancel and `statement_timeout`; the retry loop takes its clock and its
//! (interruptible) sleep as arguments so it can be tested without a network or real time.
//!
//! Egress rules: only `http`/`https`; redirects are never followed; no proxy from the environment;
//! error messages name `host[:port]` only — URLs carry API keys in their path or query.

use crate::eth::h2c;
use serde_json::{json, Value};
use std::fmt;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One RPC endpoint. `Display` shows only the host, never the path, query or userinfo.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    url: String,
    host: String,
}

impl Endpoint {
    /// Parses an endpoint URL with the `url` crate (WHATWG rules: host lowercased, IDNA, IPv6).
    /// Refused: schemes other than http/https, no host, whitespace or control characters
    /// anywhere (the parser would silently drop tabs and newlines). Messages never quote the URL.
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("contains whitespace".to_string());
        }
        let u = url::Url::parse(text)
            .map_err(|_| "is not a URL (expected http://host[:port]/…)".to_string())?;
        if u.scheme() != "http" && u.scheme() != "https" {
            return Err(format!(
                "uses scheme {:?}; only http and https are allowed",
                u.scheme()
            ));
        }
        // `http:///x` would parse with host "x": an empty authority is no host.
        let authority_empty = text
            .split_once("://")
            .is_none_or(|(_, rest)| rest.starts_with(['/', '?', '#']));
        let host = match u.host_str() {
            Some(h) if !h.is_empty() && !authority_empty => h,
            _ => return Err("has no host".to_string()),
        };
        let host = match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Ok(Endpoint {
            url: text.to_string(),
            host,
        })
    }

    /// `host[:port]`: what messages and statistics show.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({})", self.host)
    }
}

/// Parses the `rpc_urls` list: entries separated by commas, surrounding whitespace ignored, in
/// order. An empty entry (`a,,b`, a trailing comma, `,`) is an error, as is a list with no entry.
/// Messages name the entry's position, never its text (URLs carry API keys).
pub fn parse_endpoint_list(list: &str) -> Result<Vec<Endpoint>, String> {
    if list.trim().is_empty() {
        return Err("no endpoint in the list".to_string());
    }
    list.split(',')
        .map(str::trim)
        .enumerate()
        .map(|(i, u)| {
            if u.is_empty() {
                Err(format!("entry {} is empty", i + 1))
            } else {
                Endpoint::parse(u).map_err(|e| format!("entry {} {e}", i + 1))
            }
        })
        .collect()
}

/// Parses an endpoints file (`rpc_urls_file`): one URL per line, in failover order; blank lines
/// and lines starting with `#` are ignored. At least one endpoint is required.
pub fn parse_endpoint_file(text: &str) -> Result<Vec<Endpoint>, String> {
    let eps = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(n, u)| Endpoint::parse(u).map_err(|e| format!("line {n}: {}", file_line_reason(&e))))
        .collect::<Result<Vec<_>, _>>()?;
    if eps.is_empty() {
        return Err("has no endpoint (one URL per line; # starts a comment)".to_string());
    }
    Ok(eps)
}

/// The reason a line of the endpoints file is refused, without any of its text: `Endpoint::parse`
/// quotes the scheme (the text before the first `:`), which in a file may be part of a secret
/// (a key pasted on its own line, `KEY:…`). Only reasons known to be fixed text pass through.
fn file_line_reason(parse_error: &str) -> &'static str {
    const FIXED: [&str; 3] = [
        "contains whitespace",
        "is not a URL (expected http://host[:port]/…)",
        "has no host",
    ];
    match FIXED.iter().find(|f| **f == parse_error) {
        Some(f) => f,
        None if parse_error.starts_with("uses scheme") => "uses a scheme other than http or https",
        None => "is not an http or https URL",
    }
}

/// What went wrong with one RPC request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcErrorKind {
    /// Could not connect (refused, unreachable, DNS).
    Connect(String),
    /// No complete answer within the per-attempt timeout.
    Timeout(Duration),
    /// The connection broke or the body ended early.
    ConnectionLost(String),
    /// Rate limited: HTTP 429 or a provider's rate-limit error.
    RateLimited {
        detail: String,
        retry_after: Option<Duration>,
    },
    /// An HTTP status other than 200 (429 is `RateLimited`, 3xx is `Redirect`).
    HttpStatus {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// A 3xx answer; redirects are never followed.
    Redirect {
        status: u16,
        location_host: Option<String>,
    },
    /// The body is not a JSON-RPC answer, or the result is not well-formed hex.
    BadResponse(String),
    /// The node answered with a JSON-RPC error object.
    JsonRpc { code: i64, message: String },
    /// The node ran out of gas executing the call (a smaller chunk may pass).
    OutOfGas(String),
    /// Request or response too large for the node (a smaller chunk may pass).
    TooLarge(String),
    /// The node refused an `eth_getLogs` block range (too many blocks or results); a smaller
    /// range may pass.
    RangeRefused(String),
}

/// An RPC failure, with the host it happened on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub host: String,
    pub kind: RpcErrorKind,
}

impl RpcError {
    pub fn new(ep: &Endpoint, kind: RpcErrorKind) -> RpcError {
        RpcError {
            host: ep.host.clone(),
            kind,
        }
    }

    /// Worth retrying (possibly elsewhere): network trouble, rate limits, gateway errors.
    /// Never: reverts, invalid params, garbage answers, out-of-gas (that is split instead).
    pub fn is_transient(&self) -> bool {
        match &self.kind {
            RpcErrorKind::Connect(_)
            | RpcErrorKind::Timeout(_)
            | RpcErrorKind::ConnectionLost(_)
            | RpcErrorKind::RateLimited { .. } => true,
            RpcErrorKind::HttpStatus { status, .. } => matches!(status, 502..=504),
            RpcErrorKind::JsonRpc { code, message } => is_transient_jsonrpc(*code, message),
            _ => false,
        }
    }

    /// The chunk may succeed if split into smaller requests.
    pub fn wants_smaller_chunk(&self) -> bool {
        matches!(
            self.kind,
            RpcErrorKind::OutOfGas(_) | RpcErrorKind::TooLarge(_)
        )
    }

    /// An `eth_getLogs` range the node refuses as too wide or too heavy: bisect it.
    pub fn refuses_range(&self) -> bool {
        matches!(
            self.kind,
            RpcErrorKind::RangeRefused(_) | RpcErrorKind::TooLarge(_)
        )
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match &self.kind {
            RpcErrorKind::RateLimited { retry_after, .. }
            | RpcErrorKind::HttpStatus { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// SQLSTATE class the glue reports this with (see README "Errors").
    pub fn sqlstate(&self) -> &'static str {
        match &self.kind {
            RpcErrorKind::Connect(_) => "08001",
            RpcErrorKind::Timeout(_) | RpcErrorKind::ConnectionLost(_) => "08006",
            RpcErrorKind::JsonRpc { .. } | RpcErrorKind::OutOfGas(_) => "38000",
            RpcErrorKind::RateLimited { .. } => "53400",
            RpcErrorKind::TooLarge(_) | RpcErrorKind::RangeRefused(_) => "54000",
            RpcErrorKind::HttpStatus { .. }
            | RpcErrorKind::Redirect { .. }
            | RpcErrorKind::BadResponse(_) => "08P01",
        }
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.host;
        match &self.kind {
            RpcErrorKind::Connect(d) => write!(f, "cannot connect to RPC host {h}: {d}"),
            RpcErrorKind::Timeout(t) => {
                write!(f, "RPC host {h} did not answer within {} ms", t.as_millis())
            }
            RpcErrorKind::ConnectionLost(d) => write!(f, "connection to RPC host {h} lost: {d}"),
            RpcErrorKind::RateLimited { detail, .. } => {
                write!(f, "RPC host {h} rate-limited the request: {detail}")
            }
            RpcErrorKind::HttpStatus { status, .. } => {
                write!(f, "RPC host {h} answered HTTP {status}")
            }
            RpcErrorKind::Redirect {
                status,
                location_host,
            } => write!(
                f,
                "RPC host {h} answered HTTP {status} redirect{}; redirects are not followed",
                location_host
                    .as_ref()
                    .map(|l| format!(" to {l}"))
                    .unwrap_or_default()
            ),
            RpcErrorKind::BadResponse(d) => write!(f, "RPC host {h} sent an unusable answer: {d}"),
            RpcErrorKind::JsonRpc { code, message } => {
                write!(f, "RPC host {h} answered JSON-RPC error {code}: {message}")
            }
            RpcErrorKind::OutOfGas(m) => write!(f, "RPC host {h}: eth_call ran out of gas: {m}"),
            RpcErrorKind::TooLarge(m) => {
                write!(f, "RPC host {h}: request or response too large: {m}")
            }
            RpcErrorKind::RangeRefused(m) => {
                write!(f, "RPC host {h} refused the eth_getLogs block range: {m}")
            }
        }
    }
}

impl std::error::Error for RpcError {}

fn is_transient_jsonrpc(code: i64, message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    // -32005 limit exceeded (EIP-1474), -32007 QuickNode, -32090 Ankr-style, 429 as a code;
    // "header not found"/"missing trie node" = a lagging node behind a load balancer.
    matches!(code, -32005 | -32007 | -32090 | 429)
        || [
            "rate limit",
            "too many requests",
            "exceeded its compute units",
            "request rate exceeded",
            "capacity",
            "throughput",
            "header not found",
            "try again",
            "temporarily unavailable",
        ]
        .iter()
        .any(|p| m.contains(p))
}

/// Providers' ways of refusing an `eth_getLogs` range (Infura -32005 "query returned more than
/// 10000 results", "query exceeds max block range 1000", Alchemy, QuickNode, Ankr wordings).
fn is_range_refusal(m: &str) -> bool {
    [
        "block range",
        "max range",
        "range is too",
        "range too large",
        "returned more than",
        "more than 10000 results",
        "too many blocks",
        "too many logs",
        "logs limit",
        "limited to a",
        "exceeds max results",
        "query timeout exceeded",
    ]
    .iter()
    .any(|p| m.contains(p))
}

fn classify_jsonrpc(code: i64, message: String) -> RpcErrorKind {
    let m = message.to_ascii_lowercase();
    // geth: "out of gas"; anvil/revm: "EVM error OutOfGas"; others: "gas required exceeds allowance".
    let squashed: String = m.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    if squashed.contains("outofgas")
        || m.contains("gas required exceeds")
        || m.contains("gas limit reached")
    {
        RpcErrorKind::OutOfGas(message)
    } else if [
        "response size",
        "response too large",
        "result too large",
        "request too large",
        "request entity too large",
        "payload too large",
        "too many sub-calls",
    ]
    .iter()
    .any(|p| m.contains(p))
    {
        RpcErrorKind::TooLarge(message)
    } else if is_range_refusal(&m) {
        RpcErrorKind::RangeRefused(format!("JSON-RPC error {code}: {message}"))
    } else if matches!(code, -32005 | -32007 | -32090 | 429)
        || m.contains("rate limit")
        || m.contains("too many requests")
        || m.contains("exceeded its compute units")
        || m.contains("request rate exceeded")
    {
        RpcErrorKind::RateLimited {
            detail: format!("JSON-RPC error {code}: {message}"),
            retry_after: None,
        }
    } else {
        RpcErrorKind::JsonRpc { code, message }
    }
}

/// Parses a `Retry-After` header: delta-seconds only (HTTP dates are treated as absent), capped.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

/// Turns one HTTP answer into the `result` string of a JSON-RPC response, or an error.
pub fn parse_http_answer(
    ep: &Endpoint,
    status: u16,
    retry_after: Option<&str>,
    location: Option<&str>,
    body: &[u8],
) -> Result<Value, RpcError> {
    let retry_after = retry_after.and_then(parse_retry_after);
    let err = |kind| Err(RpcError::new(ep, kind));
    match status {
        200 => {}
        429 => {
            return err(RpcErrorKind::RateLimited {
                detail: "HTTP 429".into(),
                retry_after,
            })
        }
        413 => return err(RpcErrorKind::TooLarge("HTTP 413".into())),
        300..=399 => {
            let location_host = location
                .and_then(|l| Endpoint::parse(l).ok())
                .map(|e| e.host().to_string());
            return err(RpcErrorKind::Redirect {
                status,
                location_host,
            });
        }
        _ => {
            return err(RpcErrorKind::HttpStatus {
                status,
                retry_after,
            })
        }
    }
    let mut v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return err(RpcErrorKind::BadResponse(format!(
                "body is not JSON ({e}; {} bytes, starts {:?})",
                body.len(),
                String::from_utf8_lossy(&body[..body.len().min(40)])
            )))
        }
    };
    if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
        let code = e.get("code").and_then(Value::as_i64).unwrap_or(0);
        let mut message = e
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if let Some(data) = e.get("data").filter(|d| !d.is_null()) {
            let data = data
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| data.to_string());
            message.push_str(&format!(" (data: {})", truncate(&data, 300)));
        }
        return err(classify_jsonrpc(code, truncate(&message, 500)));
    }
    // taken, not cloned: an aggregate3 answer is a string of up to a few MB
    match v.get_mut("result") {
        Some(r) => Ok(r.take()),
        None => err(RpcErrorKind::BadResponse(
            "JSON without result or error".into(),
        )),
    }
}

/// Decodes a `0x…` hex quantity/data string.
pub fn decode_hex_result(ep: &Endpoint, v: &Value) -> Result<Vec<u8>, RpcError> {
    let bad = |d: String| RpcError::new(ep, RpcErrorKind::BadResponse(d));
    let s = v.as_str().ok_or_else(|| {
        bad(format!(
            "result is not a hex string: {}",
            truncate(&v.to_string(), 60)
        ))
    })?;
    let digits = s
        .strip_prefix("0x")
        .ok_or_else(|| bad(format!("malformed hex result (no 0x): {}", truncate(s, 60))))?;
    if digits.len() % 2 != 0 {
        return Err(bad(format!(
            "malformed hex result (odd length {})",
            digits.len()
        )));
    }
    alloy_primitives::hex::decode(digits).map_err(|e| bad(format!("malformed hex result: {e}")))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The JSON-RPC request body of `eth_call(to, data, "latest")`, built in one buffer: the calldata
/// is hex-encoded (vectorised) straight into it. `to` is JSON-escaped like any string.
pub fn eth_call_body(id: u64, to: &str, data: &[u8]) -> String {
    let to = Value::String(to.to_string()).to_string();
    let head = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"eth_call","params":[{{"to":{to},"data":"0x"#
    );
    let tail = r#""},"latest"]}"#;
    let mut buf = Vec::with_capacity(head.len() + 2 * data.len() + tail.len());
    buf.extend_from_slice(head.as_bytes());
    let start = buf.len();
    buf.resize(start + 2 * data.len(), 0);
    alloy_primitives::hex::encode_to_slice(data, &mut buf[start..])
        .expect("the slice is exactly twice the input");
    buf.extend_from_slice(tail.as_bytes());
    String::from_utf8(buf).expect("JSON text and hex digits are UTF-8")
}

/// Generic request body.
pub fn request_body(id: u64, method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

/// How long a backend remembers that an endpoint does not speak HTTP/2 before trying again.
const H1_MEMORY: Duration = Duration::from_secs(600);

const USER_AGENT: &str = concat!("audius_indexer/", env!("CARGO_PKG_VERSION"));

/// The HTTP clients of one backend, shared by every request of the backend (and its helper
/// threads), so consecutive chunks, calls and worker ticks reuse their connections.
///
/// With `http2` on, an `http://` endpoint is spoken to over HTTP/2 with prior knowledge: one TCP
/// connection per endpoint carries every request in flight as its own stream. A server that does
/// not speak HTTP/2 (its first connection fails before any answer, e.g. an HTTP/1.1 server
/// answering the preface with 400/505 and closing) is remembered for `H1_MEMORY` and the request
/// is sent at once over HTTP/1.1; that switch is not a failed attempt. `https://` endpoints (and
/// every endpoint with `http2` off) use HTTP/1.1 with keep-alive: one HTTP agent per endpoint URL,
/// one pooled connection per request in flight.
///
/// A connection idle for `idle` or longer is closed at its next use instead of being reused
/// (`idle` = 0: no keep-alive, a new HTTP/1.1 connection per request). A request that fails on a
/// connection that may have been reused, before any answer arrived (the server closed it while it
/// was idle), is sent once more on a fresh connection; that resend is not a failed attempt.
pub struct Agents {
    inner: std::sync::Mutex<AgentsInner>,
    runtime: std::sync::OnceLock<Option<h2c::Runtime>>,
}

struct AgentsInner {
    idle: Duration,
    per_host: usize,
    http2: bool,
    by_url: std::collections::HashMap<String, AgentSlot>,
    /// HTTP/2 state by endpoint URL; `None`: the URL cannot be spoken to over HTTP/2 (https, or
    /// user info in it).
    h2: std::collections::HashMap<String, Option<Arc<H2Endpoint>>>,
    /// Endpoints that did not speak HTTP/2, and since when.
    h1_only: std::collections::HashMap<String, Instant>,
}

struct AgentSlot {
    agent: ureq::Agent,
    /// When a request on this agent last got an answer: a connection may be pooled since then.
    last_answer: Option<Instant>,
}

/// One endpoint's HTTP/2 connection. The mutex is held while connecting, so helpers that need
/// the connection at the same time wait for it instead of opening their own.
struct H2Endpoint {
    uri: http::Uri,
    url: url::Url,
    slot: std::sync::Mutex<H2Slot>,
}

#[derive(Default)]
struct H2Slot {
    conn: Option<h2c::Conn>,
    last_answer: Option<Instant>,
}

/// How one HTTP exchange went wrong, and whether the failure came before any answer arrived.
pub(crate) struct PostError {
    pub(crate) kind: RpcErrorKind,
    pub(crate) before_answer: bool,
}

impl PostError {
    /// Failed before any answer arrived (the request may be sent again on a fresh connection).
    pub(crate) fn before(kind: RpcErrorKind) -> PostError {
        PostError {
            kind,
            before_answer: true,
        }
    }

    /// Failed while the answer was arriving.
    pub(crate) fn after(kind: RpcErrorKind) -> PostError {
        PostError {
            kind,
            before_answer: false,
        }
    }

    /// The answer grew past `max_response_bytes`.
    pub(crate) fn too_large(max_response_bytes: u64) -> PostError {
        PostError::after(RpcErrorKind::TooLarge(format!(
            "response larger than {max_response_bytes} bytes"
        )))
    }
}

/// What is left of `timeout` since `start`: a timeout (before any answer) when nothing is.
fn time_left(start: Instant, timeout: Duration) -> Result<Duration, PostError> {
    match timeout.saturating_sub(start.elapsed()) {
        left if left.is_zero() => Err(PostError::before(RpcErrorKind::Timeout(timeout))),
        left => Ok(left),
    }
}

/// An HTTP/2 exchange either ends, or shows that the server does not speak HTTP/2.
enum H2Outcome {
    Done(Result<Answer, PostError>),
    NotH2,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Agents {
    pub fn new(idle: Duration, per_host: usize) -> Agents {
        Agents {
            inner: std::sync::Mutex::new(AgentsInner {
                idle,
                per_host,
                http2: false,
                by_url: std::collections::HashMap::new(),
                h2: std::collections::HashMap::new(),
                h1_only: std::collections::HashMap::new(),
            }),
            runtime: std::sync::OnceLock::new(),
        }
    }

    /// Applies changed settings; clients built with the old ones (and their connections) are
    /// dropped, and what was learnt about endpoints' HTTP/2 support is forgotten.
    pub fn configure(&self, idle: Duration, per_host: usize, http2: bool) {
        let mut g = lock(&self.inner);
        if g.idle != idle || g.per_host != per_host || g.http2 != http2 {
            g.idle = idle;
            g.per_host = per_host;
            g.http2 = http2;
            g.by_url.clear();
            g.h2.clear();
            g.h1_only.clear();
        }
    }

    /// The agent for `ep` and whether a pooled connection may be reused by the next request.
    fn checkout(&self, ep: &Endpoint) -> (ureq::Agent, bool) {
        let mut g = lock(&self.inner);
        let (idle, per_host) = (g.idle, g.per_host);
        let slot = g
            .by_url
            .entry(ep.url().to_string())
            .or_insert_with(|| AgentSlot {
                agent: new_agent(idle, per_host),
                last_answer: None,
            });
        let maybe_reused = !idle.is_zero() && slot.last_answer.is_some_and(|t| t.elapsed() < idle);
        (slot.agent.clone(), maybe_reused)
    }

    fn answered(&self, ep: &Endpoint) {
        if let Some(s) = lock(&self.inner).by_url.get_mut(ep.url()) {
            s.last_answer = Some(Instant::now());
        }
    }

    /// Drops the agent of `ep` (and its pooled connections): the next request connects anew.
    fn discard(&self, ep: &Endpoint) {
        lock(&self.inner).by_url.remove(ep.url());
    }

    /// The HTTP/2 state of `ep`, when this request should go over HTTP/2, and the idle limit.
    fn h2_endpoint(&self, ep: &Endpoint) -> Option<(Arc<H2Endpoint>, Duration)> {
        let mut g = lock(&self.inner);
        if !g.http2 || g.idle.is_zero() {
            return None;
        }
        match g.h1_only.get(ep.url()) {
            Some(t) if t.elapsed() < H1_MEMORY => return None,
            Some(_) => {
                g.h1_only.remove(ep.url());
            }
            None => {}
        }
        let idle = g.idle;
        let e =
            g.h2.entry(ep.url().to_string())
                .or_insert_with(|| {
                    h2c::target(ep.url()).map(|(uri, url)| {
                        Arc::new(H2Endpoint {
                            uri,
                            url,
                            slot: std::sync::Mutex::new(H2Slot::default()),
                        })
                    })
                })
                .clone()?;
        Some((e, idle))
    }

    fn runtime(&self) -> Option<&h2c::Runtime> {
        self.runtime
            .get_or_init(|| h2c::Runtime::start().ok())
            .as_ref()
    }

    /// One HTTP POST of a JSON-RPC body. Blocking: call it off the backend's thread (see
    /// `blocking.rs`).
    pub fn post(
        &self,
        ep: &Endpoint,
        body: &str,
        timeout: Duration,
        max_response_bytes: u64,
    ) -> Result<Value, RpcError> {
        let start = Instant::now();
        let h2 = self
            .h2_endpoint(ep)
            .and_then(|(e, idle)| self.runtime().map(|rt| (e, idle, rt)));
        let r = match h2 {
            Some((e, idle, rt)) => {
                match self.post_h2(rt, &e, idle, body, timeout, max_response_bytes) {
                    H2Outcome::Done(r) => r,
                    H2Outcome::NotH2 => {
                        lock(&self.inner)
                            .h1_only
                            .insert(ep.url().to_string(), Instant::now());
                        time_left(start, timeout)
                            .and_then(|left| self.post_h1(ep, body, left, max_response_bytes))
                    }
                }
            }
            None => self.post_h1(ep, body, timeout, max_response_bytes),
        };
        match r {
            Ok((status, retry_after, location, buf)) => parse_http_answer(
                ep,
                status,
                retry_after.as_deref(),
                location.as_deref(),
                &buf,
            ),
            Err(e) => Err(RpcError::new(ep, e.kind)),
        }
    }

    /// One exchange over the endpoint's HTTP/2 connection (connected first if there is none, it
    /// closed, or it idled `idle` or longer).
    fn post_h2(
        &self,
        rt: &h2c::Runtime,
        e: &H2Endpoint,
        idle: Duration,
        body: &str,
        timeout: Duration,
        max_response_bytes: u64,
    ) -> H2Outcome {
        let start = Instant::now();
        let checkout = |fresh: bool| -> Result<(h2c::Conn, bool), PostError> {
            let mut s = lock(&e.slot);
            let usable = !fresh
                && s.conn.as_ref().is_some_and(|c| !c.is_closed())
                && s.last_answer.is_none_or(|t| t.elapsed() < idle);
            if !usable {
                s.conn = None;
                s.last_answer = None;
                let left = timeout.saturating_sub(start.elapsed());
                s.conn = Some(h2c::Conn::connect(rt, e.uri.clone(), &e.url, left)?);
            }
            let conn = s.conn.clone().expect("just checked or connected");
            Ok((conn, usable && s.last_answer.is_some()))
        };
        let forget = |conn: &h2c::Conn| {
            let mut s = lock(&e.slot);
            if s.conn.as_ref().is_some_and(|c| c.same(conn)) {
                s.conn = None;
            }
        };
        let exchange = |conn: &h2c::Conn| {
            let left = timeout.saturating_sub(start.elapsed());
            let r = conn.exchange(rt, body, USER_AGENT, left, max_response_bytes);
            match &r {
                Ok(_) => lock(&e.slot).last_answer = Some(Instant::now()),
                // a broken or stuck connection is not handed to the next request
                Err(err) => {
                    if matches!(
                        err.kind,
                        RpcErrorKind::ConnectionLost(_) | RpcErrorKind::Timeout(_)
                    ) {
                        forget(conn)
                    }
                }
            }
            r
        };
        let (conn, maybe_reused) = match checkout(false) {
            Ok(c) => c,
            Err(err) => return H2Outcome::Done(Err(err)),
        };
        match exchange(&conn) {
            Err(err)
                if err.before_answer
                    && !conn.has_answered()
                    && matches!(err.kind, RpcErrorKind::ConnectionLost(_)) =>
            {
                // the server broke off before answering anything on this connection
                H2Outcome::NotH2
            }
            Err(err)
                if maybe_reused
                    && err.before_answer
                    && matches!(err.kind, RpcErrorKind::ConnectionLost(_)) =>
            {
                // a stale connection: once more on a fresh one, within the same timeout
                H2Outcome::Done(
                    time_left(start, timeout)
                        .and_then(|_| checkout(true))
                        .and_then(|(conn, _)| exchange(&conn)),
                )
            }
            r => H2Outcome::Done(r),
        }
    }

    /// One exchange over HTTP/1.1 (keep-alive through the endpoint's agent).
    fn post_h1(
        &self,
        ep: &Endpoint,
        body: &str,
        timeout: Duration,
        max_response_bytes: u64,
    ) -> Result<Answer, PostError> {
        let start = Instant::now();
        let (agent, maybe_reused) = self.checkout(ep);
        let r = match post_once(&agent, ep, body, timeout, max_response_bytes) {
            Err(e)
                if maybe_reused
                    && e.before_answer
                    && matches!(e.kind, RpcErrorKind::ConnectionLost(_)) =>
            {
                // A stale keep-alive connection: once more on a fresh one, within the same timeout.
                self.discard(ep);
                let (agent, _) = self.checkout(ep);
                time_left(start, timeout)
                    .and_then(|left| post_once(&agent, ep, body, left, max_response_bytes))
            }
            r => r,
        };
        if r.is_ok() {
            self.answered(ep);
        }
        r
    }
}

fn new_agent(idle: Duration, per_host: usize) -> ureq::Agent {
    let pooled = if idle.is_zero() { 0 } else { per_host.max(1) };
    ureq::Agent::config_builder()
        .max_redirects(0)
        .max_redirects_will_error(false)
        .http_status_as_error(false)
        .proxy(None)
        .max_idle_connections(pooled)
        .max_idle_connections_per_host(pooled)
        .max_idle_age(idle.max(Duration::from_millis(1)))
        .user_agent(USER_AGENT)
        .build()
        .into()
}

/// Status, `Retry-After`, `Location` and body of one HTTP answer.
pub(crate) type Answer = (u16, Option<String>, Option<String>, Vec<u8>);

fn post_once(
    agent: &ureq::Agent,
    ep: &Endpoint,
    body: &str,
    timeout: Duration,
    max_response_bytes: u64,
) -> Result<Answer, PostError> {
    let resp = agent
        .post(ep.url())
        .config()
        .timeout_global(Some(timeout))
        .build()
        .header("content-type", "application/json")
        .send(body)
        .map_err(|e| PostError::before(classify_transport_error(e, timeout)))?;
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let retry_after = header("retry-after");
    let location = header("location");
    // sized once from Content-Length (within the limit, and at most 16 MiB up front whatever a
    // server claims): no regrowth copies of a large answer
    let expected = header("content-length")
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0)
        .min(max_response_bytes)
        .min(16 << 20);
    let mut buf = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
    let read = resp
        .into_body()
        .into_with_config()
        .limit(max_response_bytes)
        .reader()
        .read_to_end(&mut buf);
    if let Err(e) = read {
        let kind = match e.kind() {
            std::io::ErrorKind::TimedOut => RpcErrorKind::Timeout(timeout),
            _ => {
                let msg = e.to_string();
                if msg.to_ascii_lowercase().contains("timeout") {
                    RpcErrorKind::Timeout(timeout)
                } else if msg.contains("limit") || msg.contains("exceeds") {
                    RpcErrorKind::TooLarge(format!(
                        "response larger than {max_response_bytes} bytes"
                    ))
                } else {
                    RpcErrorKind::ConnectionLost(format!("reading the answer failed: {msg}"))
                }
            }
        };
        return Err(PostError::after(kind));
    }
    Ok((status, retry_after, location, buf))
}

fn classify_transport_error(e: ureq::Error, timeout: Duration) -> RpcErrorKind {
    use ureq::Error as E;
    match e {
        E::Timeout(_) => RpcErrorKind::Timeout(timeout),
        E::HostNotFound => RpcErrorKind::Connect("host not found".into()),
        E::ConnectionFailed => RpcErrorKind::Connect("connection failed".into()),
        E::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                RpcErrorKind::Connect("connection refused".into())
            }
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                RpcErrorKind::Timeout(timeout)
            }
            std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::NotFound => {
                RpcErrorKind::Connect(io.to_string())
            }
            _ => RpcErrorKind::ConnectionLost(io.to_string()),
        },
        E::BadUri(u) => RpcErrorKind::Connect(format!("bad URL: {}", truncate(&u, 0))),
        E::BodyExceedsLimit(n) => RpcErrorKind::TooLarge(format!("response larger than {n} bytes")),
        E::TooManyRedirects | E::RedirectFailed => RpcErrorKind::Redirect {
            status: 0,
            location_host: None,
        },
        other => RpcErrorKind::ConnectionLost(other.to_string()),
    }
}

/// Exponential backoff with full jitter, bounded by a retry count and a total time budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff step.
    pub base: Duration,
    /// Largest single backoff (also caps `Retry-After`).
    pub cap: Duration,
    /// Total time for all attempts and waits of one logical request.
    pub budget: Duration,
}

impl RetryPolicy {
    /// Delay before retry number `retry` (1-based). `Retry-After` wins when given (capped);
    /// otherwise a uniformly jittered value in [step/2, step] with step = base·2^(retry-1) ≤ cap.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>, random: u64) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(self.cap);
        }
        let step = self
            .base
            .saturating_mul(1u32 << (retry.saturating_sub(1)).min(20))
            .min(self.cap);
        let half = step / 2;
        let span = step.saturating_sub(half).as_micros() as u64;
        half + Duration::from_micros(if span == 0 { 0 } else { random % (span + 1) })
    }
}

/// Per-endpoint health, for failover and for the SQL statistics view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointStats {
    pub requests: u64,
    pub failures: u64,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub last_latency: Option<Duration>,
    pub total_latency: Duration,
    pub cooldown_until: Option<Instant>,
}

/// Ordered endpoints with cool-downs: a failing endpoint is skipped until its cool-down ends.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub list: Vec<Endpoint>,
    pub stats: Vec<EndpointStats>,
    pub cooldown: Duration,
}

impl Endpoints {
    pub fn new(list: Vec<Endpoint>, cooldown: Duration) -> Endpoints {
        let stats = vec![EndpointStats::default(); list.len()];
        Endpoints {
            list,
            stats,
            cooldown,
        }
    }

    /// Keeps statistics for endpoints that stay when the configured list changes.
    pub fn reconfigure(&mut self, list: Vec<Endpoint>, cooldown: Duration) {
        if list != self.list {
            let stats = list
                .iter()
                .map(|e| {
                    self.list
                        .iter()
                        .position(|o| o == e)
                        .map(|i| self.stats[i].clone())
                        .unwrap_or_default()
                })
                .collect();
            self.list = list;
            self.stats = stats;
        }
        self.cooldown = cooldown;
    }

    /// First endpoint (in configured order) not cooling down; if all are, the one whose cool-down
    /// ends first — a request is never refused just because everything failed recently.
    pub fn pick(&self, now: Instant, skip: &[usize]) -> Option<usize> {
        let candidates = (0..self.list.len()).filter(|i| !skip.contains(i));
        let mut best: Option<(usize, Instant)> = None;
        for i in candidates {
            match self.stats[i].cooldown_until {
                Some(t) if t > now => {
                    if best.is_none_or(|(_, bt)| t < bt) {
                        best = Some((i, t));
                    }
                }
                _ => return Some(i),
            }
        }
        best.map(|(i, _)| i)
    }

    pub fn record(
        &mut self,
        i: usize,
        now: Instant,
        latency: Duration,
        outcome: Result<(), &RpcError>,
    ) {
        let s = &mut self.stats[i];
        s.requests += 1;
        s.last_latency = Some(latency);
        s.total_latency += latency;
        match outcome {
            Ok(()) => {
                s.consecutive_failures = 0;
                s.cooldown_until = None;
            }
            Err(e) => {
                s.failures += 1;
                s.last_error = Some(e.to_string());
                // Only endpoint trouble cools an endpoint down; a revert is the request's fault.
                if e.is_transient()
                    || matches!(
                        e.kind,
                        RpcErrorKind::HttpStatus { .. }
                            | RpcErrorKind::BadResponse(_)
                            | RpcErrorKind::Redirect { .. }
                    )
                {
                    s.consecutive_failures += 1;
                    let factor = 1u32 << (s.consecutive_failures - 1).min(6);
                    s.cooldown_until = Some(now + self.cooldown.saturating_mul(factor));
                }
            }
        }
    }
}

/// The request was abandoned because the session was cancelled / is shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted;

/// Outcome of `execute`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecError {
    Rpc(RpcError),
    Interrupted,
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::Rpc(e) => write!(f, "{e}"),
            ExecError::Interrupted => write!(f, "interrupted"),
        }
    }
}

impl From<Interrupted> for ExecError {
    fn from(_: Interrupted) -> Self {
        ExecError::Interrupted
    }
}

/// Sends one logical request with failover and retries.
///
/// `send(endpoint, attempt_timeout)` performs one attempt; `sleep(d)` waits interruptibly;
/// `now()` is the clock; `random()` feeds the jitter. A transient failure moves on to the next
/// healthy endpoint right away when there is one, and otherwise waits the backoff first.
/// Deterministic failures return at once. The budget bounds attempts and waits together; each
/// attempt's timeout is the smaller of `attempt_timeout` and what is left of the budget.
///
/// An unusable answer (`BadResponse`: not JSON-RPC, or a value that fails validation — the node is
/// not trusted) is a failure of the endpoint that sent it: recorded against it (cool-down), and the
/// next endpoint that has not sent this request an unusable answer is asked at once (no backoff:
/// it answered; within the retry count and budget). That endpoint is not asked again by this
/// request; when none is left, the error returns.
pub fn execute<T>(
    endpoints: &std::sync::Mutex<Endpoints>,
    policy: &RetryPolicy,
    attempt_timeout: Duration,
    mut send: impl FnMut(&Endpoint, Duration) -> Result<Result<T, RpcError>, Interrupted>,
    mut sleep: impl FnMut(Duration) -> Result<(), Interrupted>,
    now: impl Fn() -> Instant,
    mut random: impl FnMut() -> u64,
) -> Result<T, ExecError> {
    // The lock is held only to pick and to record, never across an attempt or a wait: requests
    // pipelined on other threads share the endpoints' health.
    let eps = || endpoints.lock().unwrap_or_else(|p| p.into_inner());
    let start = now();
    let deadline = start + policy.budget;
    let mut retries = 0u32;
    let mut tried_since_wait: Vec<usize> = Vec::new();
    // Endpoints that sent this request an unusable answer: not asked again by it.
    let mut refused: Vec<usize> = Vec::new();
    let skipping = |tried: &[usize], refused: &[usize]| -> Vec<usize> {
        tried.iter().chain(refused).copied().collect()
    };
    loop {
        let t = now();
        let (i, ep) = {
            let g = eps();
            let i = match g.pick(t, &skipping(&tried_since_wait, &refused)) {
                Some(i) => i,
                None => {
                    tried_since_wait.clear();
                    g.pick(t, &refused)
                        .or_else(|| g.pick(t, &[]))
                        .expect("at least one endpoint")
                }
            };
            (i, g.list[i].clone())
        };
        let left = deadline.saturating_duration_since(t);
        let timeout = attempt_timeout.min(left.max(Duration::from_millis(1)));
        let result = send(&ep, timeout)?;
        let elapsed = now().saturating_duration_since(t);
        match result {
            Ok(v) => {
                eps().record(i, now(), elapsed, Ok(()));
                return Ok(v);
            }
            Err(e) => {
                eps().record(i, now(), elapsed, Err(&e));
                if matches!(e.kind, RpcErrorKind::BadResponse(_)) {
                    refused.push(i);
                    let another = eps().pick(now(), &refused).is_some();
                    if !another || retries >= policy.max_retries || now() >= deadline {
                        return Err(ExecError::Rpc(e));
                    }
                    retries += 1;
                    continue;
                }
                if !e.is_transient() || retries >= policy.max_retries {
                    return Err(ExecError::Rpc(e));
                }
                retries += 1;
                tried_since_wait.push(i);
                let another_healthy = {
                    let g = eps();
                    g.pick(now(), &skipping(&tried_since_wait, &refused))
                        .is_some_and(|j| g.stats[j].cooldown_until.is_none_or(|c| c <= now()))
                };
                if !another_healthy {
                    let wait = policy.delay(retries, e.retry_after(), random());
                    if now() + wait >= deadline {
                        return Err(ExecError::Rpc(e));
                    }
                    sleep(wait)?;
                    tried_since_wait.clear();
                }
                if now() >= deadline {
                    return Err(ExecError::Rpc(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn ep(s: &str) -> Endpoint {
        Endpoint::parse(s).unwrap()
    }

    #[test]
    fn eth_call_body_is_the_json_it_says() {
        let data: Vec<u8> = (0..=255u8).chain([0, 1, 0xab]).collect();
        let body = eth_call_body(7, "0xca11bde05977b3631167028862be2a173976ca11", &data);
        let v: Value = serde_json::from_str(&body).unwrap();
        let want = json!({"jsonrpc": "2.0", "id": 7, "method": "eth_call",
            "params": [{"to": "0xca11bde05977b3631167028862be2a173976ca11",
                        "data": alloy_primitives::hex::encode_prefixed(&data)}, "latest"]});
        assert_eq!(v, want);
        let odd: Value = serde_json::from_str(&eth_call_body(1, "a\"b", &[])).unwrap();
        assert_eq!(odd["params"][0]["to"], "a\"b");
        assert_eq!(odd["params"][0]["data"], "0x");
    }

    #[test]
    fn endpoints_show_only_host() {
        let e = ep("https://user:pw@Mainnet.Example.com:8545/v2/SECRETKEY?apikey=zzz");
        assert_eq!(e.to_string(), "mainnet.example.com:8545");
        assert_eq!(format!("{e:?}"), "Endpoint(mainnet.example.com:8545)");
        let err = RpcError::new(
            &e,
            RpcErrorKind::HttpStatus {
                status: 500,
                retry_after: None,
            },
        );
        assert!(!err.to_string().contains("SECRET") && !err.to_string().contains("zzz"));
        assert!(Endpoint::parse("file:///etc/passwd")
            .unwrap_err()
            .contains("only http and https"));
        assert!(Endpoint::parse("gopher://x").is_err());
        assert!(Endpoint::parse("localhost:8545").is_err());
        assert!(Endpoint::parse("http:///x").is_err());
        assert_eq!(
            parse_endpoint_list(" http://a:1, https://b/k ")
                .unwrap()
                .len(),
            2
        );
        assert!(parse_endpoint_list("http://a, ftp://b")
            .unwrap_err()
            .starts_with("entry 2"));
    }

    #[test]
    fn endpoint_lists_refuse_empty_entries() {
        for bad in [
            ",",
            " , ",
            "http://a,",
            ",http://a",
            "http://a,,http://b",
            "",
            "  ",
        ] {
            let e = parse_endpoint_list(bad).unwrap_err();
            assert!(
                e.contains("empty") || e.contains("no endpoint"),
                "{bad:?}: {e}"
            );
        }
        let e = parse_endpoint_list("http://a/k1 http://b/k2").unwrap_err();
        assert!(e.contains("whitespace") && !e.contains("k1"), "{e}");
        let f = parse_endpoint_file("# primary\nhttps://a/KEY\n\n  http://b:8545/x  \n").unwrap();
        assert_eq!(
            f.iter().map(|e| e.host()).collect::<Vec<_>>(),
            ["a", "b:8545"]
        );
        assert!(parse_endpoint_file("# nothing\n\n").is_err());
        let e = parse_endpoint_file("https://a/KEY\nftp://b/KEY2").unwrap_err();
        assert!(e.starts_with("line 2") && !e.contains("KEY"), "{e}");
    }

    #[test]
    fn endpoint_file_errors_never_quote_the_file() {
        // The text before the first ':' of a bad line (here a pasted key) is never quoted.
        for (text, want) in [
            (
                "https://a/x\nsk-SECRETKEY123:abc",
                "line 2: uses a scheme other than http or https",
            ),
            (
                "SECRET-KEY-only",
                "line 1: is not a URL (expected http://host[:port]/…)",
            ),
            (
                "# c\n\nhttp://\n",
                "line 3: is not a URL (expected http://host[:port]/…)",
            ),
            ("http:///SECRET", "line 1: has no host"),
            ("https://a/SE\u{7}CRET", "line 1: contains whitespace"),
        ] {
            let e = parse_endpoint_file(text).unwrap_err();
            assert_eq!(e, want, "{text:?}");
            assert!(!e.to_lowercase().contains("secret"), "{e}");
        }
        assert_eq!(
            file_line_reason("uses scheme \"KEY\"; only http and https are allowed"),
            "uses a scheme other than http or https"
        );
        assert_eq!(
            file_line_reason("some new message quoting \"KEY\""),
            "is not an http or https URL"
        );
    }

    #[test]
    fn http_answers_are_classified() {
        let e = ep("http://h:1/key");
        let ok = parse_http_answer(
            &e,
            200,
            None,
            None,
            br#"{"jsonrpc":"2.0","id":1,"result":"0x01"}"#,
        );
        assert_eq!(ok.unwrap(), Value::String("0x01".into()));
        let r429 = parse_http_answer(&e, 429, Some("1"), None, b"").unwrap_err();
        assert!(r429.is_transient());
        assert_eq!(r429.retry_after(), Some(Duration::from_secs(1)));
        assert!(parse_http_answer(&e, 503, None, None, b"")
            .unwrap_err()
            .is_transient());
        let r500 = parse_http_answer(&e, 500, None, None, b"").unwrap_err();
        assert!(!r500.is_transient());
        assert_eq!(r500.sqlstate(), "08P01");
        let redirect =
            parse_http_answer(&e, 302, None, Some("http://evil:9/x?k=1"), b"").unwrap_err();
        assert_eq!(
            redirect.kind,
            RpcErrorKind::Redirect {
                status: 302,
                location_host: Some("evil:9".into())
            }
        );
        let garbage = parse_http_answer(&e, 200, None, None, b"<html>").unwrap_err();
        assert_eq!(garbage.sqlstate(), "08P01");
        let revert = parse_http_answer(&e, 200, None, None,
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":3,"message":"execution reverted","data":"0x08c3"}}"#).unwrap_err();
        assert!(!revert.is_transient());
        assert_eq!(revert.sqlstate(), "38000");
        assert!(revert.to_string().contains("execution reverted"));
        let limited = parse_http_answer(
            &e,
            200,
            None,
            None,
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32005,"message":"limit exceeded"}}"#,
        )
        .unwrap_err();
        assert!(limited.is_transient());
        let alchemy = parse_http_answer(&e, 200, None, None,
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":429,"message":"Your app has exceeded its compute units per second capacity"}}"#).unwrap_err();
        assert!(alchemy.is_transient());
        let oog = parse_http_answer(
            &e,
            200,
            None,
            None,
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"out of gas"}}"#,
        )
        .unwrap_err();
        assert!(oog.wants_smaller_chunk() && !oog.is_transient());
        let anvil_oog = parse_http_answer(
            &e,
            200,
            None,
            None,
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"EVM error OutOfGas"}}"#,
        )
        .unwrap_err();
        assert!(anvil_oog.wants_smaller_chunk(), "{anvil_oog:?}");
        assert!(parse_http_answer(&e, 413, None, None, b"")
            .unwrap_err()
            .wants_smaller_chunk());
        let invalid = parse_http_answer(
            &e,
            200,
            None,
            None,
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"invalid params"}}"#,
        )
        .unwrap_err();
        assert!(!invalid.is_transient());
    }

    #[test]
    fn hex_results_are_checked() {
        let e = ep("http://h");
        assert_eq!(
            decode_hex_result(&e, &json!("0x")).unwrap(),
            Vec::<u8>::new()
        );
        assert_eq!(
            decode_hex_result(&e, &json!("0x0aFF")).unwrap(),
            vec![0x0a, 0xff]
        );
        for bad in [
            json!("0x123"),
            json!("12"),
            json!("0xzz"),
            json!(5),
            json!(null),
        ] {
            let err = decode_hex_result(&e, &bad).unwrap_err();
            assert_eq!(err.sqlstate(), "08P01", "{bad}");
        }
    }

    #[test]
    fn retry_after_parsing() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(
            parse_retry_after("99999999"),
            Some(Duration::from_secs(3600))
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let p = RetryPolicy {
            max_retries: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
            budget: Duration::from_secs(30),
        };
        for r in 1..=8u32 {
            let step = Duration::from_millis(100 * (1u64 << (r - 1))).min(Duration::from_secs(2));
            for rnd in [0u64, 1, 12345, u64::MAX] {
                let d = p.delay(r, None, rnd);
                assert!(
                    d >= step / 2 && d <= step,
                    "retry {r}: {d:?} not in [{:?}, {step:?}]",
                    step / 2
                );
            }
        }
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(1)), 7),
            Duration::from_secs(1)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(99)), 7),
            Duration::from_secs(2)
        );
    }

    /// A fake clock and scripted answers per endpoint.
    struct Sim {
        t: Cell<Instant>,
        sleeps: Cell<Duration>,
    }

    fn run(
        eps: &mut Endpoints,
        policy: RetryPolicy,
        script: &mut dyn FnMut(&Endpoint) -> Result<u32, RpcErrorKind>,
    ) -> (Result<u32, ExecError>, Duration, Vec<String>) {
        let sim = Sim {
            t: Cell::new(Instant::now()),
            sleeps: Cell::new(Duration::ZERO),
        };
        let mut log = Vec::new();
        let shared = std::sync::Mutex::new(eps.clone());
        let r = execute(
            &shared,
            &policy,
            Duration::from_secs(1),
            |e, _| {
                log.push(e.host().to_string());
                sim.t.set(sim.t.get() + Duration::from_millis(10));
                Ok(script(e).map_err(|k| RpcError::new(e, k)))
            },
            |d| {
                sim.t.set(sim.t.get() + d);
                sim.sleeps.set(sim.sleeps.get() + d);
                Ok(())
            },
            || sim.t.get(),
            || 42,
        );
        *eps = shared.into_inner().unwrap();
        (r, sim.sleeps.get(), log)
    }

    fn policy(max_retries: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(5),
            budget: Duration::from_secs(20),
        }
    }

    #[test]
    fn retry_after_is_honoured_then_success() {
        let mut eps = Endpoints::new(vec![ep("http://a:1")], Duration::from_secs(5));
        let mut n = 0;
        let (r, slept, log) = run(&mut eps, policy(3), &mut |_| {
            n += 1;
            if n == 1 {
                Err(RpcErrorKind::RateLimited {
                    detail: "429".into(),
                    retry_after: Some(Duration::from_secs(1)),
                })
            } else {
                Ok(7)
            }
        });
        assert_eq!(r, Ok(7));
        assert_eq!(slept, Duration::from_secs(1));
        assert_eq!(log.len(), 2);
        assert_eq!(eps.stats[0].requests, 2);
        assert_eq!(eps.stats[0].failures, 1);
    }

    #[test]
    fn deterministic_errors_are_not_retried() {
        let mut eps = Endpoints::new(
            vec![ep("http://a:1"), ep("http://b:1")],
            Duration::from_secs(5),
        );
        let (r, slept, log) = run(&mut eps, policy(5), &mut |_| {
            Err(RpcErrorKind::JsonRpc {
                code: 3,
                message: "execution reverted".into(),
            })
        });
        assert!(matches!(r, Err(ExecError::Rpc(_))));
        assert_eq!((slept, log.len()), (Duration::ZERO, 1));
    }

    #[test]
    fn failover_skips_a_refusing_endpoint_without_waiting() {
        let mut eps = Endpoints::new(
            vec![ep("http://a:1"), ep("http://b:1")],
            Duration::from_secs(5),
        );
        let (r, slept, log) = run(&mut eps, policy(3), &mut |e| {
            if e.host() == "a:1" {
                Err(RpcErrorKind::Connect("connection refused".into()))
            } else {
                Ok(1)
            }
        });
        assert_eq!(r, Ok(1));
        assert_eq!(slept, Duration::ZERO);
        assert_eq!(log, ["a:1", "b:1"]);
        // a is cooling down: the next request goes straight to b
        let (_, _, log2) = run(&mut eps, policy(3), &mut |_| Ok(2));
        assert_eq!(log2, ["b:1"]);
        assert_eq!(eps.stats[0].failures, 1);
        assert_eq!(eps.stats[1].requests, 2);
    }

    #[test]
    fn a_bad_answer_is_that_endpoints_failure_and_the_next_is_asked() {
        let bad =
            || RpcErrorKind::BadResponse("eth_blockNumber result 0x7fffffffffffffff …".into());
        let mut eps = Endpoints::new(
            vec![ep("http://a:1"), ep("http://b:1"), ep("http://c:1")],
            Duration::from_secs(5),
        );
        let (r, slept, log) = run(&mut eps, policy(3), &mut |e| {
            if e.host() == "a:1" {
                Err(bad())
            } else {
                Ok(9)
            }
        });
        assert_eq!(r, Ok(9));
        assert_eq!(
            (slept, log),
            (Duration::ZERO, vec!["a:1".to_string(), "b:1".into()])
        );
        assert_eq!(eps.stats[0].failures, 1);
        assert!(eps.stats[0].cooldown_until.is_some(), "a cools down");
        assert!(eps.stats[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("RPC host a:1"));
        assert_eq!(eps.stats[1].failures, 0);
        // a is cooling down: the next request goes to b first
        let (_, _, log) = run(&mut eps, policy(3), &mut |_| Ok(1));
        assert_eq!(log, ["b:1"]);

        // every endpoint answers nonsense: each asked once, no waiting, the error returns
        let mut eps = Endpoints::new(
            vec![ep("http://a:1"), ep("http://b:1")],
            Duration::from_secs(5),
        );
        let (r, slept, log) = run(&mut eps, policy(5), &mut |_| Err(bad()));
        assert!(
            matches!(r, Err(ExecError::Rpc(RpcError { ref host, kind: RpcErrorKind::BadResponse(_) })) if host == "b:1"),
            "{r:?}"
        );
        assert_eq!((slept, log.len()), (Duration::ZERO, 2));
        assert_eq!((eps.stats[0].failures, eps.stats[1].failures), (1, 1));

        // one endpoint: asked once
        let mut eps = Endpoints::new(vec![ep("http://a:1")], Duration::from_secs(5));
        let (r, _, log) = run(&mut eps, policy(5), &mut |_| Err(bad()));
        assert!(r.is_err());
        assert_eq!(log, ["a:1"]);

        // a bad answer, then a connection failure: the refusing endpoint is not asked again
        let mut eps = Endpoints::new(
            vec![ep("http://a:1"), ep("http://b:1")],
            Duration::from_millis(1),
        );
        let (r, _, log) = run(&mut eps, policy(4), &mut |e| {
            if e.host() == "a:1" {
                Err(bad())
            } else {
                Err(RpcErrorKind::Connect("refused".into()))
            }
        });
        assert!(matches!(
            r,
            Err(ExecError::Rpc(RpcError {
                kind: RpcErrorKind::Connect(_),
                ..
            }))
        ));
        assert_eq!(log[0], "a:1");
        assert!(log[1..].iter().all(|h| h == "b:1"), "{log:?}");

        // retries = 0: no second endpoint either
        let mut eps = Endpoints::new(
            vec![ep("http://a:1"), ep("http://b:1")],
            Duration::from_secs(5),
        );
        let (_, _, log) = run(&mut eps, policy(0), &mut |_| Err(bad()));
        assert_eq!(log, ["a:1"]);
    }

    #[test]
    fn retries_are_bounded_by_count_and_budget() {
        let mut eps = Endpoints::new(vec![ep("http://a:1")], Duration::from_millis(1));
        let (r, _, log) = run(&mut eps, policy(3), &mut |_| {
            Err(RpcErrorKind::HttpStatus {
                status: 503,
                retry_after: None,
            })
        });
        assert!(matches!(r, Err(ExecError::Rpc(_))));
        assert_eq!(log.len(), 4);
        let tight = RetryPolicy {
            budget: Duration::from_millis(500),
            ..policy(100)
        };
        let mut eps = Endpoints::new(vec![ep("http://a:1")], Duration::from_millis(1));
        let (r, slept, _) = run(&mut eps, tight, &mut |_| {
            Err(RpcErrorKind::Timeout(Duration::from_secs(1)))
        });
        assert!(matches!(r, Err(ExecError::Rpc(_))));
        assert!(slept <= Duration::from_millis(500));
    }

    #[test]
    fn all_cooling_down_still_tries_the_soonest() {
        let mut eps = Endpoints::new(
            vec![ep("http://a:1"), ep("http://b:1")],
            Duration::from_secs(60),
        );
        let now = Instant::now();
        eps.stats[0].cooldown_until = Some(now + Duration::from_secs(30));
        eps.stats[1].cooldown_until = Some(now + Duration::from_secs(10));
        assert_eq!(eps.pick(now, &[]), Some(1));
        eps.reconfigure(vec![ep("http://b:1")], Duration::from_secs(1));
        assert_eq!(eps.stats.len(), 1);
        assert!(eps.stats[0].cooldown_until.is_some());
    }
}
