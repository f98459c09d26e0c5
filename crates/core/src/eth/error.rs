//! What can go wrong with one RPC request, and how each failure is classified: transient (retry,
//! fail over), deterministic (return at once), a refused range (bisect), too large (halve the
//! chunk), a bad answer (the endpoint's failure). Messages name `host[:port]` only.

use crate::eth::endpoint::Endpoint;
use std::fmt;
use std::time::Duration;

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
            host: ep.host().to_string(),
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

    /// SQLSTATE class the glue reports this with (docs/sql-reference.md, "Errors").
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

pub(crate) fn classify_jsonrpc(code: i64, message: String) -> RpcErrorKind {
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

/// `s` cut to at most `max` bytes (on a character boundary), with `…` when cut: node text quoted
/// in messages stays bounded.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
