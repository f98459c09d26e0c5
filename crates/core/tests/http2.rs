//! The HTTP clients of `Agents` against real servers started in the test: an HTTP/2 server (the
//! `h2` crate on tokio) and a bare HTTP/1.1 server that refuses the HTTP/2 preface as HTTP/1.1
//! servers do. No PostgreSQL, no node: the JSON-RPC answers are canned.

use audius_indexer_core::eth::rpc::{Agents, Endpoint, RpcErrorKind};
use bytes::Bytes;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
struct Counts {
    connections: AtomicUsize,
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    /// bytes of the largest request body received
    largest_body: AtomicUsize,
}

/// Answers every POST with `{"result": "0x" + <result_hex_chars> zeros}` after `delay`; closes
/// each connection (GOAWAY) after `close_after` requests when given, as servers close idle ones.
fn h2_server(
    result_hex_chars: usize,
    delay: Duration,
    close_after: Option<usize>,
) -> (String, Arc<Counts>) {
    h2_server_with_status(result_hex_chars, delay, close_after, 200)
}

/// `h2_server` answering with `status` (429 comes with `Retry-After: 7`).
fn h2_server_with_status(
    result_hex_chars: usize,
    delay: Duration,
    close_after: Option<usize>,
    status: u16,
) -> (String, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let (sock, _) = listener.accept().await.unwrap();
                c.connections.fetch_add(1, Ordering::SeqCst);
                let c = c.clone();
                tokio::spawn(async move {
                    let mut conn = h2::server::Builder::new()
                        .initial_window_size(1 << 20)
                        .handshake::<_, Bytes>(sock)
                        .await
                        .unwrap();
                    let mut served = 0;
                    while let Some(r) = conn.accept().await {
                        let Ok((req, mut respond)) = r else { break };
                        served += 1;
                        let c = c.clone();
                        tokio::spawn(async move {
                            let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            c.peak_in_flight.fetch_max(now, Ordering::SeqCst);
                            c.requests.fetch_add(1, Ordering::SeqCst);
                            let mut body = req.into_body();
                            let mut n = 0;
                            while let Some(d) = body.data().await {
                                let d = d.unwrap();
                                n += d.len();
                                let _ = body.flow_control().release_capacity(d.len());
                            }
                            c.largest_body.fetch_max(n, Ordering::SeqCst);
                            tokio::time::sleep(delay).await;
                            let json = format!(
                                r#"{{"jsonrpc":"2.0","id":1,"result":"0x{}"}}"#,
                                "0".repeat(result_hex_chars)
                            );
                            let head = http::Response::builder()
                                .status(status)
                                .header("retry-after", "7")
                                .header("content-type", "application/json")
                                .header("content-length", json.len())
                                .body(())
                                .unwrap();
                            let mut send = respond.send_response(head, false).unwrap();
                            send.send_data(Bytes::from(json), true).unwrap();
                            c.in_flight.fetch_sub(1, Ordering::SeqCst);
                        });
                        if close_after.is_some_and(|n| served == n) {
                            // GOAWAY: the answers in flight still go out, then the server closes
                            conn.graceful_shutdown();
                        }
                    }
                });
            }
        });
    });
    let addr = rx.recv().unwrap();
    (format!("http://{addr}/"), counts)
}

/// An HTTP/1.1-only server: the HTTP/2 preface gets `505` and a close (as Python's http.server,
/// nginx and others answer it); POSTs get a JSON-RPC answer on a kept-alive connection.
fn h1_server() -> (String, Arc<Counts>, Arc<AtomicUsize>) {
    let counts = Arc::new(Counts::default());
    let probes = Arc::new(AtomicUsize::new(0));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let (c, p) = (counts.clone(), probes.clone());
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let sock = sock.unwrap();
            c.connections.fetch_add(1, Ordering::SeqCst);
            let (c, p) = (c.clone(), p.clone());
            std::thread::spawn(move || {
                let mut w = sock.try_clone().unwrap();
                let mut r = BufReader::new(sock);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line.starts_with("PRI * HTTP/2.0") {
                        p.fetch_add(1, Ordering::SeqCst);
                        let _ = w.write_all(
                            b"HTTP/1.1 505 HTTP Version Not Supported\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                        );
                        return;
                    }
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        r.read_line(&mut h).unwrap();
                        if h == "\r\n" || h.is_empty() {
                            break;
                        }
                        let l = h.to_ascii_lowercase();
                        if let Some(v) = l.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).unwrap();
                    c.requests.fetch_add(1, Ordering::SeqCst);
                    let json = r#"{"jsonrpc":"2.0","id":1,"result":"0x01"}"#;
                    let _ = write!(
                        w,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
                        json.len()
                    );
                }
            });
        }
    });
    (url, counts, probes)
}

fn agents(http2: bool) -> Agents {
    let a = Agents::new(Duration::from_secs(30), 4);
    a.configure(Duration::from_secs(30), 4, http2);
    a
}

const T: Duration = Duration::from_secs(10);

#[test]
fn http2_carries_every_request_in_flight_on_one_connection() {
    let (url, counts) = h2_server(64, Duration::from_millis(100), None);
    let ep = Endpoint::parse(&url).unwrap();
    let a = Arc::new(agents(true));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (a, ep) = (a.clone(), ep.clone());
            std::thread::spawn(move || {
                for _ in 0..3 {
                    let v = a.post(&ep, r#"{"x":1}"#, T, 1 << 20).unwrap();
                    assert_eq!(v.as_str().unwrap().len(), 66);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(counts.requests.load(Ordering::SeqCst), 12);
    assert_eq!(counts.connections.load(Ordering::SeqCst), 1);
    assert!(
        counts.peak_in_flight.load(Ordering::SeqCst) >= 2,
        "requests were not multiplexed: peak {}",
        counts.peak_in_flight.load(Ordering::SeqCst)
    );
}

#[test]
fn http2_large_bodies_both_ways_and_the_answer_limit() {
    // 3 MB up (beyond the server's 1 MB window), 5 MB down (beyond the default 64 KB window)
    let (url, counts) = h2_server(5 << 20, Duration::ZERO, None);
    let ep = Endpoint::parse(&url).unwrap();
    let a = agents(true);
    let body = format!(r#"{{"pad":"{}"}}"#, "a".repeat(3 << 20));
    let v = a.post(&ep, &body, T, 64 << 20).unwrap();
    assert_eq!(v.as_str().unwrap().len(), (5 << 20) + 2);
    assert_eq!(counts.largest_body.load(Ordering::SeqCst), body.len());
    let e = a.post(&ep, "{}", T, 1 << 20).unwrap_err();
    assert!(matches!(e.kind, RpcErrorKind::TooLarge(_)), "{e}");
    // a too-large answer breaks off its stream, not the connection
    a.post(&ep, "{}", T, 64 << 20).unwrap();
    assert_eq!(counts.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn http2_connection_closed_by_the_server_is_replaced_without_an_error() {
    let (url, counts) = h2_server(4, Duration::ZERO, Some(1));
    let ep = Endpoint::parse(&url).unwrap();
    let a = agents(true);
    for _ in 0..3 {
        a.post(&ep, "{}", T, 1 << 20).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(counts.requests.load(Ordering::SeqCst), 3);
    assert_eq!(counts.connections.load(Ordering::SeqCst), 3);
}

#[test]
fn http1_only_server_is_probed_once_then_spoken_to_over_http1() {
    let (url, counts, probes) = h1_server();
    let ep = Endpoint::parse(&url).unwrap();
    let a = agents(true);
    for _ in 0..3 {
        assert_eq!(a.post(&ep, "{}", T, 1 << 20).unwrap(), "0x01");
    }
    assert_eq!(probes.load(Ordering::SeqCst), 1);
    assert_eq!(counts.requests.load(Ordering::SeqCst), 3);
    // the probe's connection and one kept-alive HTTP/1.1 connection
    assert_eq!(counts.connections.load(Ordering::SeqCst), 2);
    // changed settings forget what was learnt: one more probe
    a.configure(Duration::from_secs(31), 4, true);
    a.post(&ep, "{}", T, 1 << 20).unwrap();
    assert_eq!(probes.load(Ordering::SeqCst), 2);
}

#[test]
fn http2_off_or_no_keepalive_never_probes() {
    let (url, counts, probes) = h1_server();
    let ep = Endpoint::parse(&url).unwrap();
    let a = agents(false);
    a.post(&ep, "{}", T, 1 << 20).unwrap();
    a.configure(Duration::ZERO, 4, true);
    a.post(&ep, "{}", T, 1 << 20).unwrap();
    assert_eq!(probes.load(Ordering::SeqCst), 0);
    assert_eq!(counts.requests.load(Ordering::SeqCst), 2);
}

#[test]
fn http2_connection_refused_is_a_connect_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ep = Endpoint::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    let e = agents(true).post(&ep, "{}", T, 1 << 20).unwrap_err();
    assert!(matches!(e.kind, RpcErrorKind::Connect(_)), "{e}");
}

#[test]
fn http2_timeout_is_a_timeout() {
    let (url, _) = h2_server(4, Duration::from_secs(3), None);
    let ep = Endpoint::parse(&url).unwrap();
    let t = std::time::Instant::now();
    let e = agents(true)
        .post(&ep, "{}", Duration::from_millis(300), 1 << 20)
        .unwrap_err();
    assert!(matches!(e.kind, RpcErrorKind::Timeout(_)), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn http2_status_and_retry_after_reach_the_classifier() {
    let (url, _) = h2_server_with_status(4, Duration::ZERO, None, 429);
    let ep = Endpoint::parse(&url).unwrap();
    let e = agents(true).post(&ep, "{}", T, 1 << 20).unwrap_err();
    match e.kind {
        RpcErrorKind::RateLimited { retry_after, .. } => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)))
        }
        other => panic!("expected a rate limit, got {other:?}"),
    }
    let (url, _) = h2_server_with_status(4, Duration::ZERO, None, 503);
    let e = agents(true)
        .post(&Endpoint::parse(&url).unwrap(), "{}", T, 1 << 20)
        .unwrap_err();
    assert!(
        matches!(e.kind, RpcErrorKind::HttpStatus { status: 503, .. }),
        "{e}"
    );
}
