//! `Agents` (the HTTP transport: ureq, a keep-alive pool per endpoint) against a real HTTP/1.1
//! server started in the test. No PostgreSQL, no node: the JSON-RPC answers are canned.

use audius_indexer_core::eth::endpoint::Endpoint;
use audius_indexer_core::eth::error::RpcErrorKind;
use audius_indexer_core::eth::transport::Agents;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Counts {
    connections: AtomicUsize,
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    largest_body: AtomicUsize,
}

/// How the test server answers.
#[derive(Clone)]
struct Answer {
    status: u16,
    /// hex digits of the result (`"0x" + zeros`)
    result_hex: usize,
    delay: Duration,
    /// close each connection after this many requests, silently (no `Connection: close`): the
    /// client learns it when it reuses the connection, as with a server closing idle ones
    close_after: Option<usize>,
    /// drop the next request of a connection after this many answers, unanswered: the close of an
    /// idle connection crossing the client's next request on the wire
    drop_after: Option<usize>,
}

fn answer(result_hex: usize) -> Answer {
    Answer {
        status: 200,
        result_hex,
        delay: Duration::ZERO,
        close_after: None,
        drop_after: None,
    }
}

/// An HTTP/1.1 server (a thread per connection, keep-alive) answering every POST with `a`.
fn server(a: Answer) -> (String, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let c = counts.clone();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let sock = sock.unwrap();
            c.connections.fetch_add(1, Ordering::SeqCst);
            let (c, a) = (c.clone(), a.clone());
            std::thread::spawn(move || serve(sock, &c, &a));
        }
    });
    (url, counts)
}

fn serve(sock: std::net::TcpStream, c: &Counts, a: &Answer) {
    let mut w = sock.try_clone().unwrap();
    let mut r = BufReader::new(sock);
    let mut served = 0;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        if a.drop_after.is_some_and(|n| served >= n) {
            return;
        }
        c.largest_body.fetch_max(len, Ordering::SeqCst);
        let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        c.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(a.delay);
        c.requests.fetch_add(1, Ordering::SeqCst);
        served += 1;
        let close = a.close_after.is_some_and(|n| served >= n);
        let json = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":"0x{}"}}"#,
            "0".repeat(a.result_hex)
        );
        let extra = if a.status == 429 {
            "Retry-After: 7\r\n"
        } else {
            ""
        };
        let _ = write!(
            w,
            "HTTP/1.1 {} X\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{json}",
            a.status,
            json.len()
        );
        c.in_flight.fetch_sub(1, Ordering::SeqCst);
        if close {
            return;
        }
    }
}

fn agents(idle: Duration) -> Agents {
    let a = Agents::new(idle, 4);
    a.configure(idle, 4, None).unwrap();
    a
}

const T: Duration = Duration::from_secs(10);
const KEEP: Duration = Duration::from_secs(30);

#[test]
fn requests_in_flight_use_at_most_per_host_kept_alive_connections() {
    let (url, counts) = server(Answer {
        delay: Duration::from_millis(100),
        ..answer(64)
    });
    let ep = Endpoint::parse(&url).unwrap();
    let a = Arc::new(agents(KEEP));
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
    // four requests in flight at once, each on its own connection, every one kept alive and reused
    assert_eq!(counts.peak_in_flight.load(Ordering::SeqCst), 4);
    assert_eq!(counts.connections.load(Ordering::SeqCst), 4);
}

#[test]
fn no_keepalive_opens_a_connection_per_request() {
    let (url, counts) = server(answer(2));
    let ep = Endpoint::parse(&url).unwrap();
    let a = agents(Duration::ZERO);
    for _ in 0..3 {
        assert_eq!(a.post(&ep, "{}", T, 1 << 20).unwrap(), "0x00");
    }
    assert_eq!(counts.connections.load(Ordering::SeqCst), 3);
}

#[test]
fn large_bodies_both_ways_and_the_answer_limit() {
    let (url, counts) = server(answer(5 << 20));
    let ep = Endpoint::parse(&url).unwrap();
    let a = agents(KEEP);
    let body = format!(r#"{{"pad":"{}"}}"#, "a".repeat(3 << 20));
    let v = a.post(&ep, &body, T, 64 << 20).unwrap();
    assert_eq!(v.as_str().unwrap().len(), (5 << 20) + 2);
    assert_eq!(counts.largest_body.load(Ordering::SeqCst), body.len());
    let e = a.post(&ep, "{}", T, 1 << 20).unwrap_err();
    assert!(matches!(e.kind, RpcErrorKind::TooLarge(_)), "{e}");
}

#[test]
fn a_connection_closed_by_the_server_is_replaced_without_an_error() {
    let (url, counts) = server(Answer {
        close_after: Some(1),
        ..answer(4)
    });
    let ep = Endpoint::parse(&url).unwrap();
    let a = agents(KEEP);
    for _ in 0..3 {
        a.post(&ep, "{}", T, 1 << 20).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(counts.requests.load(Ordering::SeqCst), 3);
    assert_eq!(counts.connections.load(Ordering::SeqCst), 3);
}

#[test]
fn a_kept_alive_connection_dropped_under_a_request_is_resent_once_on_a_fresh_one() {
    let (url, counts) = server(Answer {
        drop_after: Some(1),
        ..answer(4)
    });
    let ep = Endpoint::parse(&url).unwrap();
    let a = agents(KEEP);
    for _ in 0..3 {
        a.post(&ep, "{}", T, 1 << 20).unwrap();
    }
    // each connection answered once and dropped the next request; every drop was resent
    assert_eq!(counts.requests.load(Ordering::SeqCst), 3);
    assert_eq!(counts.connections.load(Ordering::SeqCst), 3);
    // a fresh connection that drops the request is the endpoint's failure, not resent
    let (url, counts) = server(Answer {
        drop_after: Some(0),
        ..answer(4)
    });
    let e = agents(KEEP)
        .post(&Endpoint::parse(&url).unwrap(), "{}", T, 1 << 20)
        .unwrap_err();
    assert!(matches!(e.kind, RpcErrorKind::ConnectionLost(_)), "{e}");
    assert_eq!(counts.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn changed_settings_drop_the_pooled_connections() {
    let (url, counts) = server(answer(2));
    let ep = Endpoint::parse(&url).unwrap();
    let a = agents(KEEP);
    a.post(&ep, "{}", T, 1 << 20).unwrap();
    a.post(&ep, "{}", T, 1 << 20).unwrap();
    assert_eq!(counts.connections.load(Ordering::SeqCst), 1);
    a.configure(Duration::from_secs(31), 4, None).unwrap();
    a.post(&ep, "{}", T, 1 << 20).unwrap();
    assert_eq!(counts.connections.load(Ordering::SeqCst), 2);
}

#[test]
fn connection_refused_is_a_connect_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ep = Endpoint::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    let e = agents(KEEP).post(&ep, "{}", T, 1 << 20).unwrap_err();
    assert!(matches!(e.kind, RpcErrorKind::Connect(_)), "{e}");
}

#[test]
fn a_slow_answer_is_a_timeout_at_the_deadline() {
    let (url, _) = server(Answer {
        delay: Duration::from_secs(3),
        ..answer(4)
    });
    let ep = Endpoint::parse(&url).unwrap();
    let t = Instant::now();
    let e = agents(KEEP)
        .post(&ep, "{}", Duration::from_millis(300), 1 << 20)
        .unwrap_err();
    assert!(matches!(e.kind, RpcErrorKind::Timeout(_)), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn status_and_retry_after_reach_the_classifier() {
    let (url, _) = server(Answer {
        status: 429,
        ..answer(4)
    });
    let e = agents(KEEP)
        .post(&Endpoint::parse(&url).unwrap(), "{}", T, 1 << 20)
        .unwrap_err();
    match e.kind {
        RpcErrorKind::RateLimited { retry_after, .. } => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)))
        }
        other => panic!("expected a rate limit, got {other:?}"),
    }
    let (url, _) = server(Answer {
        status: 503,
        ..answer(4)
    });
    let e = agents(KEEP)
        .post(&Endpoint::parse(&url).unwrap(), "{}", T, 1 << 20)
        .unwrap_err();
    assert!(
        matches!(e.kind, RpcErrorKind::HttpStatus { status: 503, .. }),
        "{e}"
    );
}

#[test]
fn a_ca_file_must_hold_certificates_and_errors_name_only_its_path() {
    let dir = std::env::temp_dir().join(format!("audius_indexer_ca_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = agents(KEEP);
    let missing = dir.join("missing.pem");
    let e = a
        .configure(KEEP, 4, Some(missing.to_str().unwrap()))
        .unwrap_err();
    assert!(
        e.contains("cannot read") && e.contains("missing.pem"),
        "{e}"
    );
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "SECRET-NOT-A-CERT\n").unwrap();
    let e = a
        .configure(KEEP, 4, Some(junk.to_str().unwrap()))
        .unwrap_err();
    assert!(e.contains("no PEM certificate"), "{e}");
    assert!(!e.contains("SECRET"), "{e}");
    // the previous settings stay usable after a refused file
    let (url, _) = server(answer(2));
    a.post(&Endpoint::parse(&url).unwrap(), "{}", T, 1 << 20)
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
