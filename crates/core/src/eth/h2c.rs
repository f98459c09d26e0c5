//! HTTP/2 over cleartext TCP with prior knowledge (RFC 9113 §3.3) for `http://` endpoints: the
//! pipelined chunks of a read travel as concurrent streams of **one** TCP connection per endpoint,
//! where HTTP/1.1 needs one connection per request in flight.
//!
//! Nothing here decides policy: `rpc.rs` chooses between this and HTTP/1.1, remembers servers that
//! do not speak HTTP/2, and applies the retry rules. This module connects, exchanges one request
//! and classifies what went wrong.
//!
//! The connection is driven by a small tokio runtime (one worker thread per backend, started with
//! every signal blocked so PostgreSQL's handlers keep running on the backend's thread only). The
//! helper threads that send requests wait for their answers with `Handle::block_on`.

use crate::eth::blocking::with_signals_blocked;
use crate::eth::rpc::{Answer, PostError, RpcErrorKind};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Receive window per stream: a whole aggregate3 answer (about 1 MB for 1,000 holders) flows
/// without waiting for window updates.
const STREAM_WINDOW: u32 = 16 << 20;
/// Receive window of the connection: room for several streams' answers at once.
const CONNECTION_WINDOW: u32 = 64 << 20;
/// Largest frame the server may send us.
const MAX_FRAME: u32 = 1 << 20;

/// The runtime that drives this backend's HTTP/2 connections.
pub(crate) struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    pub(crate) fn start() -> std::io::Result<Runtime> {
        with_signals_blocked(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("audius_indexer h2")
                .enable_all()
                .build()
        })
        .map(|rt| Runtime(Some(rt)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("present until dropped").handle()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // never wait for the worker: an abandoned exchange may still be in flight
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Where and how to reach one endpoint over HTTP/2: `None` when it cannot be (not `http://`, or
/// the URL carries user info, which HTTP/1.1 sends as the URL says).
pub(crate) fn target(url: &str) -> Option<(http::Uri, url::Url)> {
    let u = url::Url::parse(url).ok()?;
    if u.scheme() != "http" || !u.username().is_empty() || u.password().is_some() {
        return None;
    }
    let uri: http::Uri = u.as_str().parse().ok()?;
    Some((uri, u))
}

/// One HTTP/2 connection. Clones share it.
#[derive(Clone)]
pub(crate) struct Conn {
    send: h2::client::SendRequest<Bytes>,
    uri: http::Uri,
    /// The connection task ended (closed by either side, or broken): it takes no new request.
    closed: Arc<AtomicBool>,
    /// The server answered at least one request on it: it does speak HTTP/2.
    answered: Arc<AtomicBool>,
}

fn h2_kind(e: &h2::Error) -> RpcErrorKind {
    match e.get_io() {
        Some(io) => RpcErrorKind::ConnectionLost(io.to_string()),
        None => RpcErrorKind::ConnectionLost(format!("HTTP/2: {e}")),
    }
}

impl Conn {
    /// Resolves, connects and sends the connection preface, within `timeout`.
    pub(crate) fn connect(
        rt: &Runtime,
        uri: http::Uri,
        url: &url::Url,
        timeout: Duration,
    ) -> Result<Conn, PostError> {
        let start = Instant::now();
        // resolved here, on the helper thread: the runtime never runs a blocking resolver
        let addrs: Vec<SocketAddr> = url
            .socket_addrs(|| Some(80))
            .ok()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| PostError::before(RpcErrorKind::Connect("host not found".into())))?;
        let left = timeout.saturating_sub(start.elapsed());
        let closed = Arc::new(AtomicBool::new(false));
        let handle = rt.handle().clone();
        let send = rt.handle().block_on(async {
            let connect = async {
                let mut last = None;
                for a in &addrs {
                    match tokio::net::TcpStream::connect(a).await {
                        Ok(s) => return Ok(s),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.expect("at least one address"))
            };
            let tcp = match tokio::time::timeout(left, connect).await {
                Err(_) => return Err(PostError::before(RpcErrorKind::Timeout(timeout))),
                Ok(Err(e)) => {
                    let kind = match e.kind() {
                        std::io::ErrorKind::TimedOut => RpcErrorKind::Timeout(timeout),
                        std::io::ErrorKind::ConnectionRefused => {
                            RpcErrorKind::Connect("connection refused".into())
                        }
                        _ => RpcErrorKind::Connect(e.to_string()),
                    };
                    return Err(PostError::before(kind));
                }
                Ok(Ok(s)) => s,
            };
            let _ = tcp.set_nodelay(true);
            let handshake = h2::client::Builder::new()
                .initial_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .max_frame_size(MAX_FRAME)
                .enable_push(false)
                .handshake::<_, Bytes>(tcp);
            let left = timeout.saturating_sub(start.elapsed());
            let (send, conn) = match tokio::time::timeout(left, handshake).await {
                Err(_) => return Err(PostError::before(RpcErrorKind::Timeout(timeout))),
                Ok(r) => r.map_err(|e| PostError::before(h2_kind(&e)))?,
            };
            let flag = closed.clone();
            handle.spawn(async move {
                let _ = conn.await;
                flag.store(true, Ordering::SeqCst);
            });
            Ok(send)
        })?;
        Ok(Conn {
            send,
            uri,
            closed,
            answered: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Whether `other` is a clone of this connection.
    pub(crate) fn same(&self, other: &Conn) -> bool {
        Arc::ptr_eq(&self.closed, &other.closed)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Whether the server has ever answered on this connection (so it speaks HTTP/2).
    pub(crate) fn has_answered(&self) -> bool {
        self.answered.load(Ordering::SeqCst)
    }

    /// One POST of `body` as a new stream: status, `Retry-After`, `Location` and the body
    /// (at most `max_response_bytes`), all within `timeout`. The exchange runs on the runtime's
    /// thread, next to the connection: the caller wakes once, when it is over.
    pub(crate) fn exchange(
        &self,
        rt: &Runtime,
        body: &str,
        user_agent: &'static str,
        timeout: Duration,
        max_response_bytes: u64,
    ) -> Result<Answer, PostError> {
        let conn = self.clone();
        let body = Bytes::copy_from_slice(body.as_bytes());
        let task = rt.handle().spawn(async move {
            tokio::time::timeout(
                timeout,
                conn.exchange_async(body, user_agent, max_response_bytes),
            )
            .await
        });
        match rt.handle().block_on(task) {
            Ok(Ok(r)) => r,
            Ok(Err(_elapsed)) => Err(PostError::before(RpcErrorKind::Timeout(timeout))),
            Err(e) => Err(PostError::before(RpcErrorKind::ConnectionLost(format!(
                "HTTP/2 exchange ended: {e}"
            )))),
        }
    }

    async fn exchange_async(
        self,
        body: Bytes,
        user_agent: &'static str,
        max_response_bytes: u64,
    ) -> Result<Answer, PostError> {
        let mut send = self
            .send
            .clone()
            .ready()
            .await
            .map_err(|e| PostError::before(h2_kind(&e)))?;
        let req = http::Request::post(self.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, user_agent)
            .body(())
            .expect("a valid request head");
        let (response, mut stream) = send
            .send_request(req, false)
            .map_err(|e| PostError::before(h2_kind(&e)))?;
        // h2 buffers what the server's window does not take yet and sends it as it opens
        stream
            .send_data(body, true)
            .map_err(|e| PostError::before(h2_kind(&e)))?;
        let response = response.await.map_err(|e| PostError::before(h2_kind(&e)))?;
        self.answered.store(true, Ordering::SeqCst);
        let (head, mut recv) = response.into_parts();
        let header = |name: http::header::HeaderName| {
            head.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let retry_after = header(http::header::RETRY_AFTER);
        let location = header(http::header::LOCATION);
        let expected = header(http::header::CONTENT_LENGTH)
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
            .min(max_response_bytes)
            .min(16 << 20);
        let mut buf = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.map_err(|e| PostError::after(h2_kind(&e)))?;
            if (buf.len() + chunk.len()) as u64 > max_response_bytes {
                return Err(PostError::too_large(max_response_bytes));
            }
            buf.extend_from_slice(&chunk);
            let _ = recv.flow_control().release_capacity(chunk.len());
        }
        Ok((head.status.as_u16(), retry_after, location, buf))
    }
}
