//! HTTP transport: one backend's HTTP client (ureq: a keep-alive pool per endpoint, HTTP/1.1 over
//! `http://` and `https://`), one POST with its timeout and response-size limit, transport errors
//! classified. Redirects are never followed and no proxy is taken from the environment. The
//! project writes no HTTP protocol code of its own (docs/performance.md: why ureq alone).

use crate::eth::endpoint::Endpoint;
use crate::eth::error::{truncate, RpcError, RpcErrorKind};
use crate::eth::jsonrpc::parse_http_answer;
use serde_json::Value;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

const USER_AGENT: &str = concat!("audius_indexer/", env!("CARGO_PKG_VERSION"));

/// The HTTP client of one backend, shared by every request of the backend (and its helper
/// threads), so consecutive chunks, calls and worker ticks reuse their connections: one ureq
/// agent per endpoint URL, whose pool keeps up to `per_host` (`rpc_concurrency`) idle HTTP/1.1
/// connections, one per request in flight. `http://` and `https://` are spoken to alike; https
/// trusts the web PKI roots, or instead, when given, only the certificates of `ca_file`
/// (`rpc_tls_ca_file`, as `curl --cacert`: a private CA, a test CA).
///
/// A connection idle for `idle` or longer is closed by the pool instead of being reused (`idle` = 0:
/// no keep-alive, a new connection per request). A request that fails on a connection that may have
/// been reused, before any answer arrived (the server closed it while it was idle), is sent once
/// more on a fresh connection; that resend is not a failed attempt. JSON-RPC reads are safe to
/// resend.
pub struct Agents {
    inner: std::sync::Mutex<AgentsInner>,
}

struct AgentsInner {
    idle: Duration,
    per_host: usize,
    ca_file: Option<String>,
    /// Root certificates for https: `None` = the web PKI roots.
    roots: Option<Arc<Vec<ureq::tls::Certificate<'static>>>>,
    by_url: std::collections::HashMap<String, AgentSlot>,
}

struct AgentSlot {
    agent: ureq::Agent,
    /// When a request on this agent last got an answer: a connection may be pooled since then.
    last_answer: Option<Instant>,
}

/// How one HTTP exchange went wrong, and whether the failure came before any answer arrived.
struct PostError {
    kind: RpcErrorKind,
    before_answer: bool,
}

/// Status, `Retry-After`, `Location` and body of one HTTP answer.
type Answer = (u16, Option<String>, Option<String>, Vec<u8>);

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The certificates of a PEM file (`rpc_tls_ca_file`): at least one, every one well-formed. Errors
/// name the file's path, never its content.
fn read_roots(path: &str) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(format!("{path} is not a PEM file of certificates: {e}")),
        }
    }
    if certs.is_empty() {
        return Err(format!("{path} holds no PEM certificate"));
    }
    Ok(certs)
}

impl Agents {
    pub fn new(idle: Duration, per_host: usize) -> Agents {
        Agents {
            inner: std::sync::Mutex::new(AgentsInner {
                idle,
                per_host,
                ca_file: None,
                roots: None,
                by_url: std::collections::HashMap::new(),
            }),
        }
    }

    /// Applies changed settings; agents built with the old ones (and their connections) are
    /// dropped. `ca_file` is read again whenever it is given anew; an unreadable file is an error
    /// and the previous settings stay.
    pub fn configure(
        &self,
        idle: Duration,
        per_host: usize,
        ca_file: Option<&str>,
    ) -> Result<(), String> {
        let mut g = lock(&self.inner);
        let ca_changed = g.ca_file.as_deref() != ca_file;
        if g.idle == idle && g.per_host == per_host && !ca_changed {
            return Ok(());
        }
        if ca_changed {
            g.roots = ca_file.map(read_roots).transpose()?.map(Arc::new);
            g.ca_file = ca_file.map(str::to_string);
        }
        g.idle = idle;
        g.per_host = per_host;
        g.by_url.clear();
        Ok(())
    }

    /// The agent for `ep` and whether a pooled connection may be reused by the next request.
    fn checkout(&self, ep: &Endpoint) -> (ureq::Agent, bool) {
        let mut g = lock(&self.inner);
        let (idle, per_host, roots) = (g.idle, g.per_host, g.roots.clone());
        let slot = g
            .by_url
            .entry(ep.url().to_string())
            .or_insert_with(|| AgentSlot {
                agent: new_agent(idle, per_host, roots),
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

    /// One HTTP POST of a JSON-RPC body: the `result` of the answer, or the classified error.
    /// Blocking: call it off the backend's thread (see `blocking.rs`).
    pub fn post(
        &self,
        ep: &Endpoint,
        body: &str,
        timeout: Duration,
        max_response_bytes: u64,
    ) -> Result<Value, RpcError> {
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
                match timeout.saturating_sub(start.elapsed()) {
                    left if left.is_zero() => Err(PostError {
                        kind: RpcErrorKind::Timeout(timeout),
                        before_answer: true,
                    }),
                    left => post_once(&agent, ep, body, left, max_response_bytes),
                }
            }
            r => r,
        };
        match r {
            Ok((status, retry_after, location, buf)) => {
                self.answered(ep);
                parse_http_answer(
                    ep,
                    status,
                    retry_after.as_deref(),
                    location.as_deref(),
                    &buf,
                )
            }
            Err(e) => Err(RpcError::new(ep, e.kind)),
        }
    }
}

fn new_agent(
    idle: Duration,
    per_host: usize,
    roots: Option<Arc<Vec<ureq::tls::Certificate<'static>>>>,
) -> ureq::Agent {
    let pooled = if idle.is_zero() { 0 } else { per_host.max(1) };
    let tls = match roots {
        Some(certs) => ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
            .build(),
        None => ureq::tls::TlsConfig::default(),
    };
    ureq::Agent::config_builder()
        .tls_config(tls)
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
        .map_err(|e| PostError {
            kind: classify_transport_error(e, timeout),
            before_answer: true,
        })?;
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
        return Err(PostError {
            kind,
            before_answer: false,
        });
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
