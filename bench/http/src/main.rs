//! HTTP client comparison for the RPC transport (bench/http/README.md).
//!
//! (a) the extension's own transport: `audius_indexer_core::eth::transport::Agents` (ureq,
//!     HTTP/1.1 keep-alive pool per endpoint), one `Agents` shared by up to 4 helper threads that
//!     each do a blocking `post`; the threads are started per read, as the extension's pipeline
//!     starts its helpers per call.
//! (b) hyper-util's legacy `Client` with hyper-rustls (HTTP/1.1 + HTTP/2, ALPN `h2,http/1.1`),
//!     pool of <= 4 idle connections per host, on a tokio multi-thread runtime; <= 4 requests in
//!     flight (a semaphore; one task per chunk).
//!     (b-h2pk) the same client with `http2_only` (HTTP/2 with prior knowledge, no ALPN needed): over
//!     http:// that is h2c; over https:// through stunnel (which negotiates no ALPN) it is HTTP/2
//!     over TLS forced by the client. Informational: not the configuration the rule is about.
//! (a*) diagnostic: the same `Agents` on 4 helper threads started once and kept, fed through a
//!     channel: what the client costs apart from starting threads per read.
//!
//! Work shape (the extension's): aggregate3 chunks of 200 holders (`abi::encode_chunk`) sent as
//! eth_call to Multicall3, every answer read whole, its JSON parsed
//! (`jsonrpc::parse_http_answer`, the code `Agents::post` uses), the hex result decoded and the
//! aggregate3 decoded and checked (`abi::decode_aggregate3`, 601 results, every one a success).
//! The request bodies are built once up front: only transport + answer handling is timed.
//!
//! P2: one read of N = 200 / 2,000 / 20,000 wallets (1 / 10 / 100 chunks), <= 4 chunks in flight.
//! P4: a sweep pass over 20,000 wallets in batches of 2,000 (10 chunks per batch, batches one after
//!     another, <= 4 chunks in flight within a batch).
//! Each (load, N) cell: one warm-up run per variant, then --reps rounds; in each round every
//! variant runs once, in an order rotated per round (a VM's speed drifts over minutes: interleaved
//! runs see the same machine). Medians reported.

use alloy_primitives::{keccak256, Address};
use audius_indexer_core::eth::abi::{self, Contracts};
use audius_indexer_core::eth::endpoint::Endpoint;
use audius_indexer_core::eth::jsonrpc;
use audius_indexer_core::eth::transport::Agents;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HOLDERS_PER_CHUNK: usize = 200;
const WALLETS: usize = 20_000;
const CONCURRENCY: usize = 4; // audius_indexer.rpc_concurrency's default
const IDLE: Duration = Duration::from_secs(30); // rpc_idle_timeout_ms's default
const TIMEOUT: Duration = Duration::from_secs(60);
const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024; // rpc_max_response_bytes's default
const MULTICALL3: &str = "0xcA11bde05977b3631167028862bE2a173976CA11";
const USER_AGENT: &str = "audius_indexer_bench_http";

struct Args {
    http: String,
    https: Option<String>,
    ca: Option<String>,
    token: Address,
    staking: Address,
    delegate: Address,
    reps: usize,
    p4_reps: usize,
    /// Only the cells matching one of these `scheme:load:N` patterns (`*` = any part).
    only: Vec<String>,
}

/// Small reads are cheap and noisier: 4x the repetitions for N = 200, 2x for N = 2,000.
fn p2_reps(reps: usize, n: usize) -> usize {
    if n <= 200 {
        4 * reps
    } else if n <= 2_000 {
        2 * reps
    } else {
        reps
    }
}

fn wanted(only: &[String], scheme: &str, load: &str, n: usize) -> bool {
    only.is_empty()
        || only.iter().any(|p| {
            let parts: Vec<&str> = p.split(':').collect();
            let n = n.to_string();
            [scheme, load, n.as_str()]
                .iter()
                .enumerate()
                .all(|(i, v)| parts.get(i).is_none_or(|q| *q == "*" || q == v))
        })
}

fn parse_args() -> Args {
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let Some(k) = k.strip_prefix("--") else {
            die(&format!("unexpected argument {k:?}"));
        };
        let v = it
            .next()
            .unwrap_or_else(|| die(&format!("--{k} needs a value")));
        m.insert(k.to_string(), v);
    }
    let addr = |k: &str| -> Address {
        m.get(k)
            .unwrap_or_else(|| die(&format!("--{k} is required")))
            .parse()
            .unwrap_or_else(|e| die(&format!("--{k}: {e}")))
    };
    let num = |k: &str, d: usize| -> usize {
        m.get(k)
            .map(|v| v.parse().unwrap_or_else(|e| die(&format!("--{k}: {e}"))))
            .unwrap_or(d)
    };
    Args {
        http: m
            .get("http")
            .cloned()
            .unwrap_or_else(|| die("--http URL is required")),
        https: m.get("https").cloned(),
        ca: m.get("ca").cloned(),
        token: addr("token"),
        staking: addr("staking"),
        delegate: addr("delegate"),
        reps: num("reps", 15).max(1),
        p4_reps: num("p4-reps", 9).max(1),
        only: m
            .get("only")
            .map(|v| v.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
    }
}

fn die(msg: &str) -> ! {
    eprintln!(
        "bench-http: {msg}\nusage: bench-http --http URL [--https URL --ca PEM] --token ADDR \
         --staking ADDR --delegate ADDR [--reps 15] [--p4-reps 9] [--only scheme:load:N,...]"
    );
    std::process::exit(2)
}

/// The harness's `wallet_address(i)`: the last 20 bytes of keccak256("wallet:<i>").
fn wallet(i: usize) -> Address {
    Address::from_slice(&keccak256(format!("wallet:{i}").as_bytes())[12..])
}

/// Checks one chunk's `result`: hex, aggregate3 of 601 results, every one a success. Returns the
/// block number read by the chunk's first sub-call.
fn check_result(ep: &Endpoint, v: &serde_json::Value) -> Result<u64, String> {
    let data = jsonrpc::decode_hex_result(ep, v).map_err(|e| e.to_string())?;
    let results = abi::decode_aggregate3(&data, abi::subcall_count(HOLDERS_PER_CHUNK))
        .map_err(|e| e.to_string())?;
    let mut block = 0u64;
    for (i, r) in results.iter().enumerate() {
        let x = abi::decode_uint(r).map_err(|e| format!("sub-call {i}: {e:?}"))?;
        if i == 0 {
            block = x.try_into().map_err(|_| "block number > u64".to_string())?;
        }
    }
    Ok(block)
}

/// Transport variants.
trait Variant: Sync {
    fn label(&self) -> String;
    /// Sends the bodies `jobs` (indices into the chunk bodies) with <= CONCURRENCY in flight;
    /// every answer checked.
    fn run(&self, jobs: &[usize]) -> Result<(), String>;
    /// HTTP versions of the answers so far.
    fn versions(&self) -> String;
}

// ---------------------------------------------------------------------------------------------
// (a) Agents on helper threads
// ---------------------------------------------------------------------------------------------
struct AgentsVariant {
    agents: Agents,
    ep: Endpoint,
    bodies: Arc<Vec<String>>,
}

impl Variant for AgentsVariant {
    fn label(&self) -> String {
        "(a) ureq Agents".into()
    }

    fn run(&self, jobs: &[usize]) -> Result<(), String> {
        let next = AtomicUsize::new(0);
        let failed: Mutex<Option<String>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..CONCURRENCY.min(jobs.len()) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= jobs.len() || failed.lock().unwrap().is_some() {
                        return;
                    }
                    let r = self
                        .agents
                        .post(&self.ep, &self.bodies[jobs[i]], TIMEOUT, MAX_RESPONSE_BYTES)
                        .map_err(|e| e.to_string())
                        .and_then(|v| check_result(&self.ep, &v));
                    if let Err(e) = r {
                        failed.lock().unwrap().get_or_insert(e);
                        return;
                    }
                });
            }
        });
        match failed.into_inner().unwrap() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn versions(&self) -> String {
        "HTTP/1.1 (ureq speaks only HTTP/1.1)".into()
    }
}

/// (a*), diagnostic: the same `Agents` and work, on 4 helper threads started once and kept
/// (fed through a channel), instead of threads started per read. Separates what the client costs
/// from what starting threads per call costs (the extension's pipeline does the latter).
struct PooledAgentsVariant {
    jobs: Mutex<std::sync::mpsc::Sender<PooledJob>>,
}

/// A chunk body's index and where its outcome goes.
type PooledJob = (usize, std::sync::mpsc::Sender<Result<(), String>>);

impl PooledAgentsVariant {
    fn new(agents: Agents, ep: Endpoint, bodies: Arc<Vec<String>>) -> PooledAgentsVariant {
        let (tx, rx) = std::sync::mpsc::channel::<PooledJob>();
        let rx = Arc::new(Mutex::new(rx));
        let shared = Arc::new((agents, ep, bodies));
        for _ in 0..CONCURRENCY {
            let (rx, shared) = (rx.clone(), shared.clone());
            std::thread::spawn(move || loop {
                let next = rx.lock().unwrap().recv();
                let Ok((j, reply)) = next else {
                    return; // the variant was dropped
                };
                let (agents, ep, bodies) = &*shared;
                let r = agents
                    .post(ep, &bodies[j], TIMEOUT, MAX_RESPONSE_BYTES)
                    .map_err(|e| e.to_string())
                    .and_then(|v| check_result(ep, &v).map(|_| ()));
                let _ = reply.send(r);
            });
        }
        PooledAgentsVariant {
            jobs: Mutex::new(tx),
        }
    }
}

impl Variant for PooledAgentsVariant {
    fn label(&self) -> String {
        "(a*) ureq Agents, helper threads kept".into()
    }

    fn run(&self, jobs: &[usize]) -> Result<(), String> {
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let q = self.jobs.lock().unwrap();
            for &j in jobs {
                q.send((j, tx.clone())).map_err(|e| e.to_string())?;
            }
        }
        drop(tx);
        let mut first_err = None;
        for _ in jobs {
            if let Err(e) = rx.recv().map_err(|e| e.to_string()).and_then(|r| r) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn versions(&self) -> String {
        "HTTP/1.1 (ureq speaks only HTTP/1.1)".into()
    }
}

// ---------------------------------------------------------------------------------------------
// (b) hyper-util legacy Client + hyper-rustls on tokio
// ---------------------------------------------------------------------------------------------
struct HyperVariant {
    label: String,
    rt: Arc<tokio::runtime::Runtime>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: http::Uri,
    ep: Endpoint,
    bodies: Arc<Vec<Bytes>>,
    seen: Arc<Mutex<BTreeMap<String, usize>>>,
}

fn tls_config(ca: Option<&str>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca {
        use rustls_pki_types::pem::PemObject;
        let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .unwrap_or_else(|e| die(&format!("--ca {path}: {e}")))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| die(&format!("--ca {path}: {e}")));
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            die(&format!("--ca {path}: no certificate"));
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

impl HyperVariant {
    fn new(
        label: &str,
        rt: Arc<tokio::runtime::Runtime>,
        url: &str,
        ca: Option<&str>,
        http2_only: bool,
        bodies: Arc<Vec<Bytes>>,
    ) -> HyperVariant {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true); // ureq's default; hyper's is off
        tcp.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(ca))
            .https_or_http()
            .enable_http1()
            .enable_http2() // ALPN offers h2, http/1.1
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(CONCURRENCY)
            .pool_idle_timeout(IDLE)
            .pool_timer(TokioTimer::new())
            .http2_only(http2_only)
            .build(https);
        HyperVariant {
            label: label.to_string(),
            rt,
            client,
            uri: url.parse().unwrap_or_else(|e| die(&format!("{url}: {e}"))),
            ep: Endpoint::parse(url).unwrap_or_else(|e| die(&format!("{url}: {e}"))),
            bodies,
            seen: Arc::default(),
        }
    }
}

async fn hyper_post(
    client: &Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: &http::Uri,
    ep: &Endpoint,
    body: Bytes,
) -> Result<(serde_json::Value, http::Version), String> {
    let req = http::Request::post(uri.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, USER_AGENT)
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
        let (parts, body) = resp.into_parts();
        let buf = Limited::new(body, MAX_RESPONSE_BYTES as usize)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let h = |n: http::header::HeaderName| {
            parts
                .headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let v = jsonrpc::parse_http_answer(
            ep,
            parts.status.as_u16(),
            h(http::header::RETRY_AFTER).as_deref(),
            h(http::header::LOCATION).as_deref(),
            &buf,
        )
        .map_err(|e| e.to_string())?;
        Ok((v, parts.version))
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| "timeout".to_string())?
}

impl Variant for HyperVariant {
    fn label(&self) -> String {
        self.label.clone()
    }

    fn run(&self, jobs: &[usize]) -> Result<(), String> {
        self.rt.block_on(async {
            let sem = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
            let mut set = tokio::task::JoinSet::new();
            for &j in jobs {
                let permit = sem.clone().acquire_owned().await.expect("never closed");
                let (client, uri, ep) = (self.client.clone(), self.uri.clone(), self.ep.clone());
                let (body, seen) = (self.bodies[j].clone(), self.seen.clone());
                set.spawn(async move {
                    let r = hyper_post(&client, &uri, &ep, body)
                        .await
                        .and_then(|(v, ver)| {
                            *seen.lock().unwrap().entry(format!("{ver:?}")).or_default() += 1;
                            check_result(&ep, &v)
                        });
                    drop(permit);
                    r
                });
            }
            let mut first_err = None;
            while let Some(r) = set.join_next().await {
                if let Err(e) = r.map_err(|e| e.to_string()).and_then(|r| r.map(|_| ())) {
                    first_err.get_or_insert(e);
                }
            }
            first_err.map_or(Ok(()), Err)
        })
    }

    fn versions(&self) -> String {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .map(|(v, n)| format!("{v} x{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

// ---------------------------------------------------------------------------------------------
// measurement
// ---------------------------------------------------------------------------------------------

/// Local ports of this process's TCP connections to `port` on the loopback (from /proc/self/fd
/// and /proc/net/tcp{,6}). A port that was not there before a run is a connection the run opened
/// and kept (pooled): both clients keep up to 4 idle connections with at most 4 in flight, so
/// they never open one only to drop it at once.
fn own_connections(port: u16) -> std::collections::HashSet<u16> {
    let mut inodes = std::collections::HashSet::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        for e in dir.flatten() {
            if let Ok(l) = std::fs::read_link(e.path()) {
                let l = l.to_string_lossy();
                if let Some(i) = l.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                    inodes.insert(i.to_string());
                }
            }
        }
    }
    let mut ports = std::collections::HashSet::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || !inodes.contains(cols[9]) {
                continue;
            }
            let port_of = |a: &str| {
                a.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            if port_of(cols[2]) == Some(port) {
                if let Some(local) = port_of(cols[1]) {
                    ports.insert(local);
                }
            }
        }
    }
    ports
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The `q` quantile (0..=1) by linear interpolation between order statistics.
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pos = q * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

fn median(v: &[f64]) -> f64 {
    quantile(v, 0.5)
}

struct Cell {
    scheme: &'static str,
    load: &'static str,
    n: usize,
    /// Per variant: the times (ms) and the TCP connects per run.
    times: Vec<Vec<f64>>,
    connects: Vec<f64>,
}

/// One load: `batches` run one after the other (each a set of chunk indices).
fn one_run(v: &dyn Variant, batches: &[Vec<usize>]) -> f64 {
    let t = Instant::now();
    for b in batches {
        if let Err(e) = v.run(b) {
            eprintln!("bench-http: {} failed: {e}", v.label());
            std::process::exit(1);
        }
    }
    t.elapsed().as_secs_f64() * 1e3
}

#[allow(clippy::too_many_arguments)]
fn measure(
    scheme: &'static str,
    load: &'static str,
    n: usize,
    variants: &[&dyn Variant],
    batches: &[Vec<usize>],
    reps: usize,
    port: u16,
) -> Cell {
    for v in variants {
        one_run(*v, batches); // warm-up: connections opened, pools filled
    }
    let mut times = vec![Vec::with_capacity(reps); variants.len()];
    let mut opens = vec![0u64; variants.len()];
    let mut seen = own_connections(port);
    for r in 0..reps {
        for k in 0..variants.len() {
            let i = (k + r) % variants.len();
            times[i].push(one_run(variants[i], batches));
            let now = own_connections(port);
            opens[i] += now.difference(&seen).count() as u64;
            seen.extend(now);
        }
    }
    let cell = Cell {
        scheme,
        load,
        n,
        connects: opens.iter().map(|&o| o as f64 / reps as f64).collect(),
        times,
    };
    let meds: Vec<String> = variants
        .iter()
        .zip(&cell.times)
        .map(|(v, t)| format!("{} {:.1} ms", v.label(), median(t)))
        .collect();
    eprintln!(
        "  {scheme:5} {load} N={n:>6}: {} (load {})",
        meds.join(", "),
        loadavg()
    );
    cell
}

fn main() {
    let args = parse_args();
    let started = Instant::now();
    println!(
        "bench/http: (a) Agents (ureq) vs (b) hyper-util legacy Client + hyper-rustls; {} CPUs \
         (nproc), load average at start {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    let contracts = Contracts {
        multicall: MULTICALL3.parse().expect("a valid address"),
        token: args.token,
        staking: args.staking,
        delegate_manager: args.delegate,
    };
    let chunks = WALLETS / HOLDERS_PER_CHUNK;
    let strings: Vec<String> = (0..chunks)
        .map(|c| {
            let holders: Vec<Address> = (c * HOLDERS_PER_CHUNK..(c + 1) * HOLDERS_PER_CHUNK)
                .map(wallet)
                .collect();
            jsonrpc::eth_call_body(
                c as u64 + 1,
                &MULTICALL3.to_lowercase(),
                &abi::encode_chunk(&contracts, &holders),
            )
        })
        .collect();
    println!(
        "work: {} wallets, {} chunks of {} holders (request body {:.2} MB each), <= {} chunks in flight, \
         idle {} s, timeout {} s; median of {} / {} / {} reps (P2 N = 200 / 2,000 / 20,000) and {} \
         reps (P4) after one warm-up run",
        WALLETS,
        chunks,
        HOLDERS_PER_CHUNK,
        strings[0].len() as f64 / 1e6,
        CONCURRENCY,
        IDLE.as_secs(),
        TIMEOUT.as_secs(),
        p2_reps(args.reps, 200),
        p2_reps(args.reps, 2_000),
        p2_reps(args.reps, 20_000),
        args.p4_reps
    );
    let bytes: Arc<Vec<Bytes>> = Arc::new(strings.iter().map(|s| Bytes::from(s.clone())).collect());
    let strings = Arc::new(strings);
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime"),
    );

    let mut endpoints: Vec<(&'static str, String)> = vec![("http", args.http.clone())];
    if let Some(u) = &args.https {
        endpoints.push(("https", u.clone()));
    }
    let mut cells = Vec::new();
    let mut labels: Vec<String> = Vec::new();
    let mut versions: Vec<(String, String, String)> = Vec::new();
    for (scheme, url) in &endpoints {
        let ep = Endpoint::parse(url).unwrap_or_else(|e| die(&format!("{url}: {e}")));
        let port = url
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.port_u16())
            .unwrap_or_else(|| die(&format!("{url}: no explicit port")));
        let agents = Agents::new(IDLE, CONCURRENCY);
        agents
            .configure(IDLE, CONCURRENCY, args.ca.as_deref())
            .unwrap_or_else(|e| die(&format!("Agents::configure: {e}")));
        let a = AgentsVariant {
            agents,
            ep: ep.clone(),
            bodies: strings.clone(),
        };
        let agents2 = Agents::new(IDLE, CONCURRENCY);
        agents2
            .configure(IDLE, CONCURRENCY, args.ca.as_deref())
            .unwrap_or_else(|e| die(&format!("Agents::configure: {e}")));
        let a2 = PooledAgentsVariant::new(agents2, ep, strings.clone());
        let b = HyperVariant::new(
            "(b) hyper h1+h2 ALPN",
            rt.clone(),
            url,
            args.ca.as_deref(),
            false,
            bytes.clone(),
        );
        let b2 = HyperVariant::new(
            if *scheme == "http" {
                "(b') hyper h2c prior knowledge"
            } else {
                "(b') hyper h2 forced over TLS (no ALPN)"
            },
            rt.clone(),
            url,
            args.ca.as_deref(),
            true,
            bytes.clone(),
        );
        let variants: [&dyn Variant; 4] = [&a, &b, &b2, &a2];
        labels = variants.iter().map(|v| v.label()).collect();
        eprintln!("{scheme}: {url}");
        for n in [200usize, 2_000, 20_000] {
            let batch: Vec<usize> = (0..n / HOLDERS_PER_CHUNK).collect();
            if wanted(&args.only, scheme, "P2", n) {
                cells.push(measure(
                    scheme,
                    "P2",
                    n,
                    &variants,
                    &[batch],
                    p2_reps(args.reps, n),
                    port,
                ));
            }
        }
        let per_batch = 2_000 / HOLDERS_PER_CHUNK;
        let batches: Vec<Vec<usize>> = (0..chunks / per_batch)
            .map(|b| (b * per_batch..(b + 1) * per_batch).collect())
            .collect();
        if wanted(&args.only, scheme, "P4", WALLETS) {
            cells.push(measure(
                scheme,
                "P4",
                WALLETS,
                &variants,
                &batches,
                args.p4_reps,
                port,
            ));
        }
        for v in variants {
            versions.push((scheme.to_string(), v.label(), v.versions()));
        }
    }

    println!();
    println!("HTTP versions of the answers (as seen by each client):");
    for (scheme, label, v) in &versions {
        println!("  {scheme:5} {label:40} {v}");
    }
    println!();
    println!(
        "{:6} {:4} {:>6} | {:>7} {:>7} {:>7} {:>6} | {:>7} {:>8} | {:>7} {:>8} {:>6} | conns opened/run a, b, b', a*",
        "scheme",
        "load",
        "N",
        "(a) ms",
        "(b) ms",
        "(b)/(a)",
        "paired",
        "(b') ms",
        "(b')/(a)",
        "(a*) ms",
        "(b)/(a*)",
        "paired"
    );
    // paired: the median over rounds of variant i's time / variant j's time in the same round
    // (the variants of a round run back to back, so a pair sees the same machine)
    let paired = |c: &Cell, i: usize, j: usize| {
        let r: Vec<f64> = c.times[i]
            .iter()
            .zip(&c.times[j])
            .map(|(x, y)| x / y)
            .collect();
        median(&r)
    };
    let (mut b_wins, mut b_wins_kept) = (Vec::new(), Vec::new());
    for c in &cells {
        let m: Vec<f64> = c.times.iter().map(|t| median(t)).collect();
        let (r, r_kept) = (m[1] / m[0], m[1] / m[3]);
        let cell = |r: f64, p: f64| format!("{} N={} ({r:.2}, paired {p:.2})", c.load, c.n);
        if c.scheme == "https" && r <= 0.90 {
            b_wins.push(cell(r, paired(c, 1, 0)));
        }
        if c.scheme == "https" && r_kept <= 0.90 {
            b_wins_kept.push(cell(r_kept, paired(c, 1, 3)));
        }
        println!(
            "{:6} {:4} {:>6} | {:>7.1} {:>7.1} {:>7.2} {:>6.2} | {:>7.1} {:>8.2} | {:>7.1} {:>8.2} {:>6.2} | {:.1}, {:.1}, {:.1}, {:.1}",
            c.scheme, c.load, c.n, m[0], m[1], r, paired(c, 1, 0), m[2], m[2] / m[0], m[3],
            r_kept, paired(c, 1, 3), c.connects[0], c.connects[1], c.connects[2], c.connects[3]
        );
    }
    println!();
    println!("spread (ms, quartiles p25..p75 of the repetitions):");
    for c in &cells {
        let q: Vec<String> = c
            .times
            .iter()
            .map(|t| format!("{:.1}..{:.1}", quantile(t, 0.25), quantile(t, 0.75)))
            .collect();
        println!(
            "  {:6} {:4} {:>6} | (a) {:>13} | (b) {:>13} | (b') {:>13} | (a*) {:>13}",
            c.scheme, c.load, c.n, q[0], q[1], q[2], q[3]
        );
    }
    println!();
    println!(
        "variants: (a) = {}, (b) = {}, (b') = {}, (a*) = {}",
        labels[0], labels[1], labels[2], labels[3]
    );
    println!(
        "P4 N = one sweep pass of 20,000 wallets in 10 batches of 2,000 (P4 ms = the whole pass); \
         ratios are ratios of medians, paired = median of per-round ratios"
    );
    let verdict = |wins: &[String]| {
        if wins.is_empty() {
            "(b) does not win anywhere over https".to_string()
        } else {
            format!("(b) wins on {}", wins.join(", "))
        }
    };
    println!(
        "rule: keep (a) unless (b) wins by >= 10 % ((b)/(a) <= 0.90) on P2 or P4 over https://: {}",
        verdict(&b_wins)
    );
    println!(
        "diagnostic, (b) against (a*) (the same ureq client with helper threads kept): {}",
        verdict(&b_wins_kept)
    );
    println!(
        "load average at end {}; bench took {:.0} s",
        loadavg(),
        started.elapsed().as_secs_f64()
    );
}
