#!/usr/bin/env python3
"""RPC read path and stale sweep: what the extension costs over the bare RPC work.

`make bench-rpc` (after `make install`; not part of `make test`; 4-5 min on 2 cores). One anvil
(Multicall3 + the three mock contracts, eth_call gas cap 2^32, no request size limit), one
throwaway PostgreSQL 15 cluster with audius_indexer preloaded, the same wallets for every part.
The extension always talks to anvil directly (HTTP/1.1 with keep-alive, its one HTTP stack); a
recording proxy (tests/harness/rpcproxy.py RpcProxy with keep_bodies=True: raw request bodies +
accepted TCP connections) sits in between only for separate capture calls, whose bodies are then
replayed.

P2  audius_indexer.multicall_total_audio_balances(wallets) for N = 200, 2,000, 20,000 (chunk 200),
    --reps repetitions after one warm-up, in one session. Server-side time = clock_timestamp() -
    statement_timestamp() evaluated in the select list of
    `SELECT count(*), count(balance), <that> FROM multicall_total_audio_balances($1)` (from the start
    of the statement to its last row: array input, the RPC reads, decoding, building the rows; not
    the client's transfer of the array). Against the exact request bodies the extension sent
    (captured once through the proxy), replayed --reps times: (a) one kept-alive HTTP connection,
    one Python process (http.client), (b) one `curl` process per body, (c) a new Python
    http.client connection per body; each reads the whole answer, parses nothing.
P3  viem (bench/rpc/node_modules, pinned in bench/rpc/package.json) against the same anvil and
    wallets: multicall with allowFailure over 200-holder slices one after the other, multicall with
    viem's defaults (batchSize 1,024 calldata bytes, chunks sent concurrently), and naive
    per-wallet eth_calls (3 per wallet, sequential) for N = 200, 2,000 (bench/rpc/viem_bench.mjs).
P4  The sweep: eth_wallet_balances with --rows (100,000) rows, `SELECT * FROM
    audius_indexer.refresh_stale(batch)` in autocommit (one transaction per tick) until every row
    was refreshed (then checked: no row older than the pass's start), for batch 200 / 2,000 / 10,000
    / 100,000 (the largest batch: one tick per pass) x chunk 200 / 1,000
    (multicall_max_request_bytes = 0 so that chunk 1,000 really is 1,000);
    5 to 8 passes (enough for >= --reps ticks). Per pass: wallets/s; per tick: min/median/max; the sweeping
    backend's RssAnon (sampled every 20 ms, peak) and VmHWM from /proc/<pid>/status; TCP connects in
    this network namespace during the pass (/proc/net/snmp Tcp ActiveOpens delta: it counts every
    connect() in the namespace, the bench's own few included); CPU seconds of the
    backend and of anvil. One extra tick per config through the proxy: its bodies, the connections
    the proxy accepted. Before each pass, a pass's worth of those bodies (rows / batch repetitions)
    is replayed sequentially on one kept-alive connection = the bare rate of that pair; the ratio
    is taken per pair (replay and pass back to back see the same machine: a VM's speed drifts
    over minutes) and its median reported. Then the table grows to --big-rows (1,000,000) rows and the memory is
    measured again over 10 ticks of batch 10,000 (chunk 200 and 1,000) and one tick of 100,000.

`--sweep-scale` (`make bench-sweep-scale`): --scale-rows (3,150,000) rows swept end to end by the
background worker (sweep_enabled = on, sweep_batch_size 10,000, sweep_interval 100ms,
multicall_chunk_size 1,000, multicall_max_request_bytes 0); every 10 s: wallets done (sweep_state
total_requested), wallets/s over the last interval, the worker's RssAnon/VmHWM, TCP connects.
Capped by --max-minutes (20): then the remaining time is EXTRAPOLATED at the rate of the last minute.

Output: printed, and written to bench/results/rpc-<date>.txt (sweep-scale: rpc-sweep-scale-<date>.txt)
with the machine description and the load average (another benchmark may share the machine).
"""
from __future__ import annotations

import argparse
from decimal import Decimal
import datetime as dt
import http.client
import json
import math
import os
import platform
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))  # bench.common, also when started as a script

from bench.common import finish, hms, loadavg, log, machine as machine_lines, out, report_header, start_cluster
from harness.chain import ANVIL_BIN, MULTICALL3_ADDRESS, Anvil, Contracts, wallet_address
from harness.pg import Cluster
from harness.rpcproxy import RpcProxy
from harness.tls import TlsTerminator
from harness.triggers import require_extension_installed

NODE_BIN = os.environ.get("NODE_BIN", "node")
VIEM_JS = HERE / "viem_bench.mjs"
DEFAULT_CONCURRENCY = 4  # audius_indexer.rpc_concurrency's default (src/gucs.rs)
GAS_CAP = 2**32  # anvil --gas-limit: a chunk of 1,000 holders (3,001 sub-calls) must fit one eth_call

# --------------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------------
def mmm(xs: list[float]) -> tuple[float, float, float]:
    return min(xs), statistics.median(xs), max(xs)


def fmt_ms(x: float) -> str:
    return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def mmm_ms(xs: list[float]) -> str:
    a, b, c = mmm(xs)
    return f"{fmt_ms(a)} / {fmt_ms(b)} / {fmt_ms(c)}"


# --------------------------------------------------------------------------------------------------
# /proc
# --------------------------------------------------------------------------------------------------
def proc_status(pid: int) -> dict[str, int]:
    """kB values of /proc/<pid>/status (VmHWM, VmRSS, RssAnon, RssShmem, ...)."""
    d = {}
    try:
        for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = ln.partition(":")
            v = v.split()
            if len(v) == 2 and v[1] == "kB":
                d[k] = int(v[0])
    except OSError:
        pass
    return d


def cpu_seconds(pid: int) -> float:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError):
        return float("nan")


def tcp_active_opens() -> int:
    lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines() if ln.startswith("Tcp:")]
    return int(lines[1][lines[0].index("ActiveOpens")])


def rpc_time(cluster: Cluster) -> tuple[int, float]:
    """Server-wide RPC requests and their summed latency (ms) from rpc_endpoint_stats_server(): the
    extension's own timing of each HTTP attempt (connect + send + answer + parse, on its helper thread)."""
    with cluster.connect("bench") as c:
        n, ms = c.execute("SELECT coalesce(sum(requests), 0)::bigint, coalesce(sum(requests * avg_latency_ms), 0) "
                          "FROM audius_indexer.rpc_endpoint_stats_server()").fetchone()
    return int(n), float(ms)


class MemSampler:
    """Peak RssAnon of a process, sampled every `every` seconds on a thread."""

    def __init__(self, pid: int, every: float = 0.02):
        self.pid, self.every = pid, every
        self.peak_anon = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak_anon = max(self.peak_anon, proc_status(self.pid).get("RssAnon", 0))
            self._stop.wait(self.every)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak_anon = max(self.peak_anon, proc_status(self.pid).get("RssAnon", 0))


def mib(kb: int) -> str:
    return f"{kb / 1024:,.1f} MiB"


# --------------------------------------------------------------------------------------------------
# replay of captured bodies
# --------------------------------------------------------------------------------------------------
HDRS = {"Content-Type": "application/json"}


class Target:
    """Where the extension and the replays reach the node: anvil itself (`http`), or anvil behind
    the TLS terminator of tests/harness/tls.py (`https`, the CA trusted through rpc_tls_ca_file; the
    replays use the same CA)."""

    def __init__(self, scheme: str, url: str, port: int, cafile: str | None = None):
        self.scheme, self.url, self.port, self.cafile = scheme, url, port, cafile
        self.ctx = ssl.create_default_context(cafile=cafile) if cafile else None

    def connection(self) -> http.client.HTTPConnection:
        if self.ctx:
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=300, context=self.ctx)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)


NODE: Target  # set by bench_rpc for each scheme


def _post(conn: http.client.HTTPConnection, body: bytes) -> bytes:
    conn.request("POST", "/", body=body, headers=HDRS)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200 or b'"error"' in data[:200]:
        raise RuntimeError(f"replay: HTTP {resp.status} {data[:200]!r}")
    return data


def replay_keepalive(bodies: list[bytes]) -> float:
    conn = NODE.connection()
    t0 = time.perf_counter()
    for b in bodies:
        _post(conn, b)
    dt_ = time.perf_counter() - t0
    conn.close()
    return dt_


def replay_newconn(bodies: list[bytes]) -> float:
    t0 = time.perf_counter()
    for b in bodies:
        conn = NODE.connection()
        _post(conn, b)
        conn.close()
    return time.perf_counter() - t0


def replay_curl(files: list[str]) -> float:
    ca = ["--cacert", NODE.cafile] if NODE.cafile else []
    t0 = time.perf_counter()
    for f in files:
        subprocess.run(["curl", "-sS", "--fail", "-o", "/dev/null", *ca, "-H", "Content-Type: application/json",
                        "--data-binary", f"@{f}", NODE.url], check=True)
    return time.perf_counter() - t0


def body_files(bodies: list[bytes], tmp: Path, tag: str) -> list[str]:
    files = []
    for i, b in enumerate(bodies):
        p = tmp / f"{tag}-{i:05d}.json"
        p.write_bytes(b)
        files.append(str(p))
    return files


# --------------------------------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------------------------------
def machine(conn) -> list[str]:
    """bench.common's machine lines + the node, node.js and curl versions."""
    anvil_v = subprocess.run([str(ANVIL_BIN), "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    node_v = subprocess.run([NODE_BIN, "--version"], capture_output=True, text=True).stdout.strip()
    curl_v = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    return machine_lines(conn) + [f"node: {anvil_v}; node.js {node_v}; {curl_v}; Python {platform.python_version()}"]


SETTINGS = {
    "shared_buffers": "1GB", "max_wal_size": "1GB", "checkpoint_timeout": "30min",
    "wal_level": "minimal", "max_wal_senders": "0", "jit": "off", "autovacuum": "on",
    "audius_indexer.sweep_enabled": "off",
    "audius_indexer.challenges_interval": "0",
    "audius_indexer.follow_interval": "0",
    "audius_indexer.database": "'bench'",
    "audius_indexer.rpc_timeout_ms": "300000",
    "audius_indexer.rpc_retry_budget_ms": "600000",
}


def start_env(extra: dict[str, str] | None = None) -> tuple[Anvil, Contracts, Cluster]:
    anvil = Anvil(gas_limit=GAS_CAP, no_request_size_limit=True).start()
    anvil.install_multicall3()
    contracts = Contracts.deploy_all(anvil)
    # enable('sweep'): the worker runs when sweep_enabled says so
    c = start_cluster("benchrpc", {**SETTINGS, **(extra or {})}, preload=["audius_indexer"],
                      sql=("CREATE EXTENSION audius_indexer", "SELECT audius_indexer.enable('sweep')"))
    c.restart()
    c.set_system(rpc_url=anvil.url, token_address=contracts.token, staking_address=contracts.staking,
                 delegate_manager_address=contracts.delegate)
    return anvil, contracts, c


def pin_cpus(anvil: Anvil, cluster: Cluster) -> str:
    """--pin: anvil (all its threads) on the last CPU; the cluster (postmaster, its running children and,
    by inheritance, every backend and helper thread started later) and this process on the others. The
    node then no longer competes with the database for CPU, as with a remote provider; the replays run
    under the same pinning, so the ratios stay side by side."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--pin needs at least 2 CPUs")
    node, db = {cpus[-1]}, set(cpus[:-1])

    def pin_tree(pid: int, to: set[int]) -> None:
        for tid in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(tid), to)
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            pin_tree(int(child), to)

    pin_tree(anvil.proc.pid, node)
    postmaster = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
    pin_tree(postmaster, db)
    os.sched_setaffinity(0, db)
    return f"anvil on CPU {sorted(node)}, the cluster and the bench client on CPU {sorted(db)}"


def point_rpc(cluster: Cluster, url: str) -> None:
    cluster.set_system(rpc_url=url, rpc_tls_ca_file=NODE.cafile if url == NODE.url else None)


def set_concurrency(cluster: Cluster, c: int) -> None:
    """audius_indexer.rpc_concurrency for every new session (the sessions below are all new)."""
    cluster.set_system(rpc_concurrency=c)


# --------------------------------------------------------------------------------------------------
# P2
# --------------------------------------------------------------------------------------------------
P2_SQL = ("SELECT count(*), count(balance), coalesce(sum(balance), 0)::text, "
          "extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000 "
          "FROM audius_indexer.multicall_total_audio_balances(%s::text[])")


def p2(cluster: Cluster, anvil: Anvil, proxy: RpcProxy, wallets: list[str], sizes: list[int], reps: int,
       tmp: Path, concurrency: list[int]) -> list[dict]:
    res = []
    for conc, n in [(c, n) for c in concurrency for n in sizes]:
        set_concurrency(cluster, conc)
        ws = wallets[:n]
        log(f"P2 {NODE.scheme} rpc_concurrency={conc} N={n:,}: capture through the proxy (load {loadavg()})")
        point_rpc(cluster, proxy.url)
        proxy.reset()
        with cluster.connect("bench") as conn:
            # the proxy speaks HTTP/1.1 only: capture over HTTP/1.1 (the bodies are the same either way)
            cnt, ok, total, _ = conn.execute(P2_SQL, (ws,)).fetchone()
        bodies, conns = list(proxy.bodies), proxy.accepted
        assert cnt == n and ok == n, (cnt, ok)
        point_rpc(cluster, NODE.url)
        req_bytes = sum(len(b) for b in bodies)
        log(f"  {len(bodies)} requests ({req_bytes / 1e6:,.2f} MB), {conns} TCP connections accepted; "
            f"extension: {reps} repetitions")
        srv, rt = [], []
        with cluster.connect("bench") as conn:
            pid = conn.info.backend_pid
            conn.execute(P2_SQL, (ws,)).fetchone()  # warm-up
            cpu_b, cpu_a = cpu_seconds(pid), cpu_seconds(anvil.proc.pid)
            opens0 = tcp_active_opens()
            rpc0 = rpc_time(cluster)
            for _ in range(reps):
                t0 = time.perf_counter()
                cnt, ok, tot, ms = conn.execute(P2_SQL, (ws,)).fetchone()
                rt.append((time.perf_counter() - t0) * 1000)
                srv.append(float(ms))
                assert cnt == n and ok == n and tot == total
            opens = tcp_active_opens() - opens0
            rpc1 = rpc_time(cluster)
            cpu_b, cpu_a = cpu_seconds(pid) - cpu_b, cpu_seconds(anvil.proc.pid) - cpu_a
        log(f"  extension server-side median {statistics.median(srv):,.1f} ms; replays ({reps} each)")
        ka = [replay_keepalive(bodies) * 1000 for _ in [None] + list(range(reps))][1:]
        files = body_files(bodies, tmp, f"p2-{n}")
        curl = [replay_curl(files) * 1000 for _ in range(reps)]
        nc = [replay_newconn(bodies) * 1000 for _ in range(reps)]
        r = {"scheme": NODE.scheme, "conc": conc, "n": n, "bodies": len(bodies), "bytes": req_bytes, "conns": conns, "srv": srv, "rt": rt,
             "ka": ka, "curl": curl, "newconn": nc, "opens_per_call": opens / reps, "total": total,
             "cpu_backend": cpu_b / reps, "cpu_anvil": cpu_a / reps,
             "rpc_ms": (rpc1[1] - rpc0[1]) / reps, "rpc_n": (rpc1[0] - rpc0[0]) / reps}
        log(f"  keep-alive median {statistics.median(ka):,.1f} ms, curl {statistics.median(curl):,.1f} ms, "
            f"new connection {statistics.median(nc):,.1f} ms; TCP connects per call {opens / reps:,.1f}; "
            f"CPU per call: backend {cpu_b / reps * 1000:,.0f} ms, anvil {cpu_a / reps * 1000:,.0f} ms "
            f"(load {loadavg()})")
        res.append(r)
    return res


# --------------------------------------------------------------------------------------------------
# P3
# --------------------------------------------------------------------------------------------------
def p3(anvil: Anvil, contracts: Contracts, wallets: list[str], sizes: list[int], reps: int) -> dict:
    nm = HERE / "node_modules" / "viem"
    if not nm.exists():
        raise RuntimeError(f"{nm} missing: run `cd bench/rpc && npm ci` (make bench-rpc does)")
    cfg = {"url": anvil.url, "chainId": int(anvil.rpc("eth_chainId"), 16), "multicall": MULTICALL3_ADDRESS,
           "token": contracts.token, "staking": contracts.staking, "delegate": contracts.delegate,
           "wallets": wallets[:max(sizes)], "sizes": sizes, "reps": reps,
           "modes": ["viem_slices200", "viem_default", "naive"]}
    log(f"P3 viem: N = {sizes}, {reps} repetitions each (load {loadavg()})")
    cpu_a = cpu_seconds(anvil.proc.pid)
    p = subprocess.run([NODE_BIN, str(VIEM_JS)], input=json.dumps(cfg), capture_output=True, text=True,
                       cwd=str(HERE))
    if p.returncode != 0:
        raise RuntimeError(f"viem_bench.mjs failed ({p.returncode}):\n{p.stderr[-4000:]}")
    for ln in p.stderr.splitlines():
        log("  " + ln)
    doc = json.loads(p.stdout)
    doc["cpu_anvil"] = cpu_seconds(anvil.proc.pid) - cpu_a
    return doc


# --------------------------------------------------------------------------------------------------
# P4
# --------------------------------------------------------------------------------------------------
def load_rows(conn, first: int, last: int) -> None:
    """eth_wallet_balances rows first..last: lowercase addresses from md5, balance 0, no block,
    updated_at far in the past in row order."""
    conn.execute("""
        INSERT INTO public.eth_wallet_balances (wallet, balance, blocknumber, updated_at, created_at)
        SELECT '0x' || md5('w' || i) || substr(md5('x' || i), 1, 8), 0, NULL,
               timestamp '2000-01-01' + i * interval '1 millisecond', now()
          FROM generate_series(%s::bigint, %s::bigint) AS i""", (first, last))


def age_all(conn) -> None:
    """Makes every row stale again (keeps their relative order)."""
    conn.execute("UPDATE public.eth_wallet_balances SET updated_at = updated_at - interval '100 years'")
    conn.execute("VACUUM ANALYZE public.eth_wallet_balances")


# P4 pairs per configuration: enough for >= --reps ticks, at least P4_MIN_PAIRS, at most P4_MAX_PAIRS
P4_MIN_PAIRS, P4_MAX_PAIRS = 5, 8

TICK_SQL = "SELECT requested, updated, failed, skipped FROM audius_indexer.refresh_stale(%s)"


def session_for(cluster: Cluster, chunk: int):
    conn = cluster.connect("bench")
    conn.execute(f"SET audius_indexer.multicall_chunk_size = {chunk}")
    conn.execute("SET audius_indexer.multicall_max_request_bytes = 0")
    return conn


def sweep_pass(cluster: Cluster, anvil: Anvil, batch: int, chunk: int, rows: int) -> dict:
    """One full pass over `rows` rows in a fresh session (its own VmHWM)."""
    with cluster.connect("bench") as c:
        age_all(c)
    conn = session_for(cluster, chunk)
    try:
        pid = conn.info.backend_pid
        start = conn.execute("SELECT now()::timestamp").fetchone()[0]
        base = proc_status(pid)
        ticks, done, updated, failed, skipped = [], 0, 0, 0, 0
        rpc0 = rpc_time(cluster)
        opens0, cpu_b0, cpu_a0 = tcp_active_opens(), cpu_seconds(pid), cpu_seconds(anvil.proc.pid)
        with MemSampler(pid) as ms:
            t_start = time.perf_counter()
            while done < rows:
                t0 = time.perf_counter()
                req, upd, fail, skip = conn.execute(TICK_SQL, (batch,)).fetchone()
                ticks.append((time.perf_counter() - t0, req))
                if req == 0:
                    raise RuntimeError("refresh_stale returned 0 wallets before the pass was complete")
                done += req
                updated += upd
                failed += fail
                skipped += skip
            wall = time.perf_counter() - t_start
        opens = tcp_active_opens() - opens0
        cpu_b, cpu_a = cpu_seconds(pid) - cpu_b0, cpu_seconds(anvil.proc.pid) - cpu_a0
        rpc1 = rpc_time(cluster)
        st = proc_status(pid)
        stale = conn.execute("SELECT count(*) FROM public.eth_wallet_balances WHERE updated_at < %s",
                             (start,)).fetchone()[0]
        if stale:
            raise RuntimeError(f"{stale} rows not refreshed after the pass")
    finally:
        conn.close()
    return {"batch": batch, "chunk": chunk, "rows": rows, "wall": wall, "ticks": ticks, "done": done,
            "updated": updated, "failed": failed, "skipped": skipped, "opens": opens, "cpu_backend": cpu_b,
            "cpu_anvil": cpu_a, "rpc_s": (rpc1[1] - rpc0[1]) / 1000, "rpc_n": rpc1[0] - rpc0[0], "peak_anon": ms.peak_anon, "hwm": st.get("VmHWM", 0),
            "shmem": st.get("RssShmem", 0), "base_anon": base.get("RssAnon", 0), "base_hwm": base.get("VmHWM", 0)}


def capture_tick(cluster: Cluster, anvil: Anvil, proxy: RpcProxy, batch: int, chunk: int) -> dict:
    """One tick of `batch` through the proxy: its bodies and accepted connections (then put back)."""
    with cluster.connect("bench") as c:
        age_all(c)
    point_rpc(cluster, proxy.url)
    proxy.reset()
    conn = session_for(cluster, chunk)
    try:
        req = conn.execute(TICK_SQL, (batch,)).fetchone()[0]
    finally:
        conn.close()
        point_rpc(cluster, NODE.url)
    bodies = list(proxy.bodies)
    calls = [b for b in bodies if b'"eth_call"' in b]
    others = [json.loads(b).get("method", "?") for b in bodies if b'"eth_call"' not in b]
    return {"requested": req, "bodies": bodies, "conns": proxy.accepted, "n_calls": len(calls),
            "other": len(others), "other_methods": sorted(set(others))}


def replay_pass(anvil: Anvil, bodies: list[bytes], repeat: int) -> dict:
    """The tick's bodies `repeat` times in a row on one kept-alive connection (a pass's worth of
    requests), with anvil's CPU seconds."""
    a0 = cpu_seconds(anvil.proc.pid)
    wall = replay_keepalive(bodies * repeat)
    return {"wall": wall, "cpu_anvil": cpu_seconds(anvil.proc.pid) - a0}


def p4(cluster: Cluster, anvil: Anvil, proxy: RpcProxy, rows: int, batches: list[int], chunks: list[int],
       reps: int, concurrency: list[int]) -> list[dict]:
    """Per configuration: one tick through the proxy (its bodies), then pairs of (bare replay of a
    pass's worth of those bodies, one sweep pass) back to back, so both halves of a ratio see the
    same machine (a VM's speed drifts over minutes)."""
    res = []
    for conc, chunk, batch in [(c, k, b) for c in concurrency for k in chunks for b in batches]:
            set_concurrency(cluster, conc)
            log(f"P4 {NODE.scheme} rpc_concurrency={conc} batch {batch:,} chunk {chunk:,} over {rows:,} rows (load {loadavg()})")
            cap = capture_tick(cluster, anvil, proxy, batch, chunk)
            # replay of the tick's eth_call bodies (the eth_blockNumber head check of a backend's
            # first tick is left out: a steady-state tick sends only the aggregate3 calls)
            bodies = [b for b in cap["bodies"] if b'"eth_call"' in b]
            per_pass = math.ceil(rows / batch)
            repeat = math.ceil(rows / cap["requested"])
            pairs = min(P4_MAX_PAIRS, max(P4_MIN_PAIRS, math.ceil(reps / per_pass)))
            replay_keepalive(bodies)  # warm-up
            replays, runs = [], []
            for _ in range(pairs):
                replays.append(replay_pass(anvil, bodies, repeat))
                runs.append(sweep_pass(cluster, anvil, batch, chunk, rows))
            replay_wallets = cap["requested"] * repeat
            r = {"scheme": NODE.scheme, "conc": conc, "batch": batch, "chunk": chunk, "cap": {k: v for k, v in cap.items() if k != "bodies"},
                 "replay": [x["wall"] for x in replays], "replay_cpu_anvil": [x["cpu_anvil"] for x in replays],
                 "replay_wallets": replay_wallets, "passes": runs,
                 "ratios": [(p["done"] / p["wall"]) / (replay_wallets / x["wall"]) for p, x in zip(runs, replays)]}
            rates = [p["done"] / p["wall"] for p in runs]
            tick_rates = [req / s for p in runs for s, req in p["ticks"]]
            log(f"  {pairs} pairs: sweep {statistics.median(rates):,.0f} wallets/s (ticks "
                f"{min(tick_rates):,.0f}..{max(tick_rates):,.0f}); bare keep-alive replay of a tick's "
                f"{len(bodies)} bodies x {repeat}: {replay_wallets / statistics.median(r['replay']):,.0f} wallets/s; "
                f"sweep/replay per pair {min(r['ratios']):.2f} / {statistics.median(r['ratios']):.2f} / "
                f"{max(r['ratios']):.2f}; TCP connects per pass {runs[0]['opens']:,}; proxy saw {cap['conns']} "
                f"connections for {len(cap['bodies'])} requests in one tick; RssAnon peak "
                f"{mib(max(p['peak_anon'] for p in runs))}, VmHWM {mib(max(p['hwm'] for p in runs))}")
            res.append(r)
    return res


def cpu_ceilings(r: dict) -> list[float]:
    """Per pair: the sweep/replay ratio of a pass whose CPU seconds (backend + anvil) kept every CPU
    busy from start to end (the best any overlap of database and node work can do here)."""
    n = os.cpu_count() or 1
    return [(p["done"] / ((p["cpu_backend"] + p["cpu_anvil"]) / n)) / (r["replay_wallets"] / x)
            for p, x in zip(r["passes"], r["replay"])]


def memory_ticks(cluster: Cluster, anvil: Anvil, rows: int, batch: int, chunk: int, ticks: int) -> dict:
    with cluster.connect("bench") as c:
        age_all(c)
    conn = session_for(cluster, chunk)
    try:
        pid = conn.info.backend_pid
        times = []
        opens0 = tcp_active_opens()
        with MemSampler(pid) as ms:
            for _ in range(ticks):
                t0 = time.perf_counter()
                req = conn.execute(TICK_SQL, (batch,)).fetchone()[0]
                times.append((time.perf_counter() - t0, req))
        st = proc_status(pid)
        opens = tcp_active_opens() - opens0
    finally:
        conn.close()
    return {"rows": rows, "batch": batch, "chunk": chunk, "ticks": times, "peak_anon": ms.peak_anon,
            "hwm": st.get("VmHWM", 0), "shmem": st.get("RssShmem", 0), "opens": opens}


# --------------------------------------------------------------------------------------------------
# the bench-rpc run
# --------------------------------------------------------------------------------------------------
def bench_rpc(a) -> int:
    require_extension_installed()
    started = time.time()
    log(f"bench/rpc started {dt.datetime.now():%Y-%m-%d %H:%M:%S}; load average {loadavg()}")
    loads = [("start", loadavg())]
    global NODE
    anvil, contracts, cluster = start_env()
    NODE = Target("http", anvil.url, anvil.port)
    pinning = pin_cpus(anvil, cluster) if a.pin else "none (all processes share all CPUs)"
    log(f"CPU pinning: {pinning}")
    proxy = RpcProxy(anvil.url, keep_bodies=True, upstream_timeout=300).start()
    tmp = Path(tempfile.mkdtemp(prefix="bench_rpc_"))
    try:
        with cluster.connect("bench") as conn:
            mach = machine(conn)
        n_max = max(a.sizes)
        wallets = [wallet_address(i, "bench-rpc") for i in range(n_max)]
        seeded = wallets[:a.seed]
        t0 = time.time()
        contracts.set_values(seeded, token=[10**18 + i for i in range(len(seeded))],
                             staked=[2 * 10**18 + i for i in range(len(seeded))],
                             delegated=[3 * 10**18 + i for i in range(len(seeded))])
        log(f"anvil {anvil.url} (gas limit {GAS_CAP:,}, no request size limit), Multicall3 + mocks; "
            f"{len(seeded)} of {n_max:,} wallets seeded with non-zero values in {time.time() - t0:.0f} s "
            "(the others read 0: same RPC work)")
        # correctness spot check of the extension against plain eth_calls
        with cluster.connect("bench") as conn:
            got = dict(conn.execute("SELECT wallet, balance::text FROM audius_indexer.multicall_total_audio_balances(%s)",
                                    (wallets[:5] + wallets[-2:],)).fetchall())
        for w in wallets[:5] + wallets[-2:]:
            want = sum(contracts.independent_total(w))
            assert int(got[w]) == want, (w, got[w], want)
        log("spot check: extension == independent eth_calls for 7 wallets")

        p2r = p2(cluster, anvil, proxy, wallets, a.sizes, a.reps, tmp, a.concurrency)
        loads.append(("after P2", loadavg()))
        p3r = None if a.skip_viem else p3(anvil, contracts, wallets, a.viem_sizes, a.reps)
        loads.append(("after P3", loadavg()))
        if p3r:
            ext_sum = {r["n"]: r["total"] for r in p2r if r["conc"] == DEFAULT_CONCURRENCY}
            for r in p3r["results"]:
                if r["n"] in ext_sum and int(Decimal(ext_sum[r["n"]])) != int(r["sum"]):
                    raise RuntimeError(f"viem {r['mode']} N={r['n']} sum {r['sum']} != extension {ext_sum[r['n']]}")

        log(f"P4: loading {a.rows:,} eth_wallet_balances rows")
        with cluster.connect("bench") as conn:
            load_rows(conn, 1, a.rows)
            conn.execute("VACUUM ANALYZE public.eth_wallet_balances")
        p4r = p4(cluster, anvil, proxy, a.rows, a.batches, a.chunks, a.reps, a.concurrency)
        set_concurrency(cluster, DEFAULT_CONCURRENCY)
        loads.append(("after P4", loadavg()))
        if "https" in a.schemes:
            # what users run: a provider over TLS (stunnel4 + a test CA in front of the same anvil)
            with TlsTerminator(anvil.port) as tls:
                NODE = Target("https", tls.url, tls.port, str(tls.ca_pem))
                point_rpc(cluster, NODE.url)
                log(f"https: {tls.url} (stunnel4, test CA {tls.ca_pem}) in front of anvil")
                p2r += p2(cluster, anvil, proxy, wallets, a.sizes, a.reps, tmp, [DEFAULT_CONCURRENCY])
                p4r += p4(cluster, anvil, proxy, a.rows, a.https_batches, [min(a.chunks)], a.reps,
                          [DEFAULT_CONCURRENCY])
                NODE = Target("http", anvil.url, anvil.port)
                point_rpc(cluster, NODE.url)
            loads.append(("after https", loadavg()))

        mem = []
        for chunk in a.chunks:
            mem.append(memory_ticks(cluster, anvil, a.rows, 10_000, chunk, 10))
        log(f"memory: growing the table to {a.big_rows:,} rows")
        with cluster.connect("bench") as conn:
            load_rows(conn, a.rows + 1, a.big_rows)
            conn.execute("VACUUM ANALYZE public.eth_wallet_balances")
        for chunk in a.chunks:
            log(f"memory at {a.big_rows:,} rows: 10 ticks of batch 10,000, chunk {chunk:,}")
            mem.append(memory_ticks(cluster, anvil, a.big_rows, 10_000, chunk, 10))
        with cluster.connect("bench") as conn:
            age_all(conn)
            claim_plan = [r[0] for r in conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT w.wallet FROM public.eth_wallet_balances w "
                "ORDER BY w.updated_at LIMIT 10000").fetchall()]
        log(f"memory at {a.big_rows:,} rows: 1 tick of batch 100,000, chunk {max(a.chunks):,}")
        mem.append(memory_ticks(cluster, anvil, a.big_rows, 100_000, max(a.chunks), 1))
        loads.append(("end", loadavg()))

        mach.append(f"CPU pinning: {pinning}")
        report(a, mach, started, loads, p2r, p3r, p4r, mem, claim_plan)
        return 0
    finally:
        proxy.stop()
        finish(a, "rpc", cluster, "bench", anvil)
        shutil.rmtree(tmp, ignore_errors=True)


def report(a, mach, started, loads, p2r, p3r, p4r, mem, claim_plan) -> None:
    report_header("bench/rpc — RPC read path and stale sweep", started, mach, 110, loads)
    out(f"anvil: --gas-limit {GAS_CAP} --no-request-size-limit; cluster: "
        + ", ".join(f"{k}={v}" for k, v in SETTINGS.items() if not k.startswith("audius_indexer.")))
    out(f"all times: min / median / max over {a.reps} repetitions (after one warm-up), ms unless stated")
    out()
    out("P2  multicall_total_audio_balances(N wallets), chunk 200 (default), vs replaying the exact request bodies it sent")
    out("    extension server-side = clock_timestamp() - statement_timestamp() at its last row; client = psycopg round trip")
    out("| scheme | rpc_concurrency | N | requests (MB) | conns seen by proxy / TCP connects per call | extension server-side | extension client | "
        "replay keep-alive (1 conn) | replay curl per body | replay new conn per body | ext/keep-alive | ext/curl | ext/new-conn |")
    out("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    where = []  # printed below the table
    for r in p2r:
        m, mean_srv = statistics.median(r["srv"]), statistics.fmean(r["srv"])
        out(f"| {r['scheme']} | {r['conc']} | {r['n']:,} | {r['bodies']} ({r['bytes'] / 1e6:.2f}) | {r['conns']} / {r['opens_per_call']:.1f} | "
            f"{mmm_ms(r['srv'])} | {mmm_ms(r['rt'])} | {mmm_ms(r['ka'])} | {mmm_ms(r['curl'])} | {mmm_ms(r['newconn'])} | "
            f"{m / statistics.median(r['ka']):.2f} | {m / statistics.median(r['curl']):.2f} | "
            f"{m / statistics.median(r['newconn']):.2f} |")
        where.append(
            f"    {r['scheme']} c={r['conc']} N={r['n']:,}: server-side mean {mean_srv:,.1f} ms = RPC {r['rpc_ms']:,.1f} ms ({r['rpc_n']:.0f} requests, "
            f"{r['rpc_ms'] / max(r['rpc_n'], 1):,.2f} ms each; keep-alive replay {statistics.fmean(r['ka']) / r['bodies']:,.2f} ms "
            f"per body) + rest {mean_srv - r['rpc_ms']:,.1f} ms; CPU backend {r['cpu_backend'] * 1000:,.0f} ms, "
            f"anvil {r['cpu_anvil'] * 1000:,.0f} ms")
    out("    where the extension's time goes, mean per call: its RPC requests as it times them itself "
        "(rpc_endpoint_stats_server: connect + send + answer + parse, per HTTP attempt) / the rest (encode, decode, "
        "rows) ; CPU (/proc utime+stime) of the backend and of anvil:")
    for ln in where:
        out(ln)
    out()
    if p3r:
        ext = {r["n"]: statistics.median(r["srv"]) for r in p2r
               if r["conc"] == DEFAULT_CONCURRENCY and r["scheme"] == "http"}
        out(f"P3  viem {p3r['viem']} (node.js, http transport, no retries) vs the extension, same anvil and wallets")
        out("| mode | N | HTTP requests per read | time | wallets/s (median) | extension server-side / this |")
        out("|---|---|---|---|---|---|")
        labels = {"viem_slices200": "viem multicall, allowFailure, 200-holder slices sequential",
                  "viem_default": "viem multicall, defaults (batchSize 1024 B, chunks concurrent)",
                  "naive": "naive eth_call per read (3 per wallet, sequential)"}
        for r in p3r["results"]:
            med = statistics.median(r["times_ms"])
            ratio = f"{ext[r['n']] / med:.2f}" if r["n"] in ext else "–"
            out(f"| {labels[r['mode']]} | {r['n']:,} | {r['requests'][0]:,} | {mmm_ms(r['times_ms'])} | "
                f"{r['n'] / med * 1000:,.0f} | {ratio} |")
        for r in p2r:
            if r["n"] in {x["n"] for x in p3r["results"]} and r["conc"] == DEFAULT_CONCURRENCY and r["scheme"] == "http":
                out(f"| extension (server-side), chunk 200, rpc_concurrency {r['conc']} | {r['n']:,} | {r['bodies']} | {mmm_ms(r['srv'])} | "
                    f"{r['n'] / statistics.median(r['srv']) * 1000:,.0f} | 1.00 |")
        out("    every viem mode's sum of values equals the extension's (checked)")
        out()
    out(f"P4  sweep: SELECT * FROM audius_indexer.refresh_stale(batch) in autocommit until all {a.rows:,} rows are "
        "refreshed (multicall_max_request_bytes = 0)")
    out("| scheme | rpc_concurrency | batch | chunk | pairs x ticks | sweep pass wallets/s (min/med/max) | tick wallets/s (min/med/max) | "
        "bare keep-alive replay wallets/s (min/med/max) | sweep/replay per pair (min/med/max) | TCP connects per pass | "
        "one tick via proxy: requests / conns | RssAnon peak | VmHWM | s per pass: wall / in RPC requests / rest | "
        "CPU s per pass: backend / anvil | anvil CPU s per replay | CPU ceiling of sweep/replay (median) |")
    out("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in p4r:
        runs = r["passes"]
        rates = [p["done"] / p["wall"] for p in runs]
        tr = [req / s for p in runs for s, req in p["ticks"]]
        reps_ = [r["replay_wallets"] / x for x in r["replay"]]
        cap = r["cap"]
        out(f"| {r['scheme']} | {r['conc']} | {r['batch']:,} | {r['chunk']:,} | {len(runs)} x {len(runs[0]['ticks'])} | "
            f"{min(rates):,.0f} / {statistics.median(rates):,.0f} / {max(rates):,.0f} | "
            f"{min(tr):,.0f} / {statistics.median(tr):,.0f} / {max(tr):,.0f} | "
            f"{min(reps_):,.0f} / {statistics.median(reps_):,.0f} / {max(reps_):,.0f} | "
            f"{min(r['ratios']):.2f} / **{statistics.median(r['ratios']):.2f}** / {max(r['ratios']):.2f} | "
            f"{statistics.median(p['opens'] for p in runs):,.0f} | "
            f"{cap['n_calls']}+{cap['other']}{' (' + ','.join(cap['other_methods']) + ')' if cap['other'] else ''} / {cap['conns']} | {mib(max(p['peak_anon'] for p in runs))} | "
            f"{mib(max(p['hwm'] for p in runs))} | "
            f"{statistics.median(p['wall'] for p in runs):,.2f} / {statistics.median(p['rpc_s'] for p in runs):,.2f} / "
            f"{statistics.median(p['wall'] - p['rpc_s'] for p in runs):,.2f} | "
            f"{statistics.median(p['cpu_backend'] for p in runs):,.1f} / {statistics.median(p['cpu_anvil'] for p in runs):,.1f} | "
            f"{statistics.median(r['replay_cpu_anvil']):,.1f} | {statistics.median(cpu_ceilings(r)):.2f} |")
    out("    each pair = a bare replay of a pass's worth of the tick's bodies, then one sweep pass, back to back; "
        "sweep/replay = the two rates of one pair (median in bold)")
    out("    'TCP connects per pass' = /proc/net/snmp ActiveOpens delta over the pass (this network namespace); "
        "'N+M' requests = N aggregate3 eth_calls + M others (named)")
    out(f"    'CPU ceiling' = the ratio the pass would reach if its CPU seconds (backend with its helper threads + anvil) "
        f"kept all {os.cpu_count()} CPUs busy for the whole pass, taken per pair: above it no overlap can go on this machine")
    out("    'in RPC requests' = the extension's own per-request timing (rpc_endpoint_stats_server delta); 'rest' = "
        "claim + encode/decode + upsert + commit + the client round trip")
    out("    updated / skipped / failed over all passes: " + "; ".join(
        f"{r['scheme']} conc {r['conc']} b{r['batch']}/c{r['chunk']}: {sum(p['updated'] for p in r['passes']):,} / "
        f"{sum(p['skipped'] for p in r['passes']):,} / {sum(p['failed'] for p in r['passes']):,}" for r in p4r))
    out()
    out("Memory of the sweeping backend (fresh session per line; RssAnon sampled every 20 ms; VmHWM includes "
        "shared_buffers pages touched, RssShmem at the end shown)")
    out("| table rows | batch | chunk | ticks | wallets/s | RssAnon peak | VmHWM | RssShmem | TCP connects |")
    out("|---|---|---|---|---|---|---|---|---|")
    for m in mem:
        wps = sum(q for _, q in m["ticks"]) / sum(s for s, _ in m["ticks"])
        out(f"| {m['rows']:,} | {m['batch']:,} | {m['chunk']:,} | {len(m['ticks'])} | {wps:,.0f} | "
            f"{mib(m['peak_anon'])} | {mib(m['hwm'])} | {mib(m['shmem'])} | {m['opens']:,} |")
    out()
    out(f"The claim of a tick (audius_indexer._stale_batch(10000) with no wallet in back-off) at {a.big_rows:,} rows, all stale:")
    for ln in claim_plan:
        out("    " + ln)
    out("=" * 110)


# --------------------------------------------------------------------------------------------------
# bench-sweep-scale
# --------------------------------------------------------------------------------------------------
def sweep_scale(a) -> int:
    require_extension_installed()
    started = time.time()
    log(f"bench/rpc --sweep-scale started {dt.datetime.now():%Y-%m-%d %H:%M:%S}; load average {loadavg()}")
    loads = [("start", loadavg())]
    wk = {"audius_indexer.sweep_batch_size": str(a.scale_batch),
          "audius_indexer.sweep_interval": f"'{a.scale_interval}'",
          "audius_indexer.multicall_chunk_size": str(a.scale_chunk),
          "audius_indexer.multicall_max_request_bytes": "0"}
    anvil, contracts, cluster = start_env(wk)
    samples = []
    try:
        with cluster.connect("bench") as conn:
            mach = machine(conn)
            log(f"loading {a.scale_rows:,} eth_wallet_balances rows")
            t0 = time.time()
            load_rows(conn, 1, a.scale_rows)
            conn.execute("VACUUM ANALYZE public.eth_wallet_balances")
            log(f"  in {time.time() - t0:.0f} s; {conn.execute('SELECT pg_size_pretty(pg_total_relation_size(%s))', ('public.eth_wallet_balances',)).fetchone()[0]}")
            conn.execute("SELECT audius_indexer.reset_sweep_status()")
        cap = a.max_minutes * 60
        log(f"sweep_enabled = on (batch {a.scale_batch:,}, interval {a.scale_interval}, chunk {a.scale_chunk:,}); "
            f"cap {a.max_minutes} min")
        poll = "SELECT s.total_requested, s.total_updated, s.total_failed, s.total_skipped, s.ticks, s.last_error, " \
               "s.last_tick_finished, s.last_tick_started, s.last_requested, (SELECT a.pid FROM pg_stat_activity a WHERE a.backend_type = 'audius_indexer sweep' " \
               "LIMIT 1) FROM audius_indexer.sweep_state s"
        finished = False
        pid = None
        peak_anon = 0
        tick_seen: dict = {}  # last_tick_started -> (duration s, wallets), ticks seen by the 0.25 s poll
        with cluster.connect("bench") as conn:
            start_ts, t_on_srv = conn.execute("SELECT now()::timestamp, clock_timestamp()").fetchone()
            opens0 = tcp_active_opens()
            cluster.set_system(sweep_enabled=True)
            t_on = time.time()
            last = (t_on, 0)
            next_sample = t_on + 10
            while True:
                # sweep_state (one row) every 0.25 s: the crossing is seen within a tick; the worker's
                # memory sampled as often; a line every 10 s
                time.sleep(0.25)
                req, upd, fail, skip, ticks, err, fin_at, st_at, last_req, wpid = conn.execute(poll).fetchone()
                if st_at is not None and fin_at is not None and fin_at >= st_at and last_req:
                    tick_seen[st_at] = ((fin_at - st_at).total_seconds(), last_req)
                pid = wpid or pid
                st = proc_status(pid) if pid else {}
                peak_anon = max(peak_anon, st.get("RssAnon", 0))
                now = time.time()
                if req >= a.scale_rows:
                    cluster.set_system(sweep_enabled=False)
                    finished = True
                    wall = (fin_at - t_on_srv).total_seconds()
                    end_stats = (req, upd, fail, skip, ticks)
                    break
                if now - t_on >= cap:
                    cluster.set_system(sweep_enabled=False)
                    wall = now - t_on
                    end_stats = (req, upd, fail, skip, ticks)
                    break
                if now >= next_sample:
                    rate = (req - last[1]) / (now - last[0])
                    samples.append({"t": now - t_on, "done": req, "rate": rate, "ticks": ticks,
                                    "anon": st.get("RssAnon", 0), "hwm": st.get("VmHWM", 0),
                                    "opens": tcp_active_opens() - opens0, "err": err, "load": loadavg()})
                    log(f"  {now - t_on:6.0f} s: {req:>9,} wallets ({req / a.scale_rows:6.1%}), {rate:8,.0f}/s last "
                        f"interval, {ticks:,} ticks, worker RssAnon {mib(st.get('RssAnon', 0))} VmHWM "
                        f"{mib(st.get('VmHWM', 0))} RssShmem {mib(st.get('RssShmem', 0))}, TCP connects "
                        f"{samples[-1]['opens']:,}, load {samples[-1]['load']}" + (f", last_error {err}" if err else ""))
                    last = (now, req)
                    next_sample += 10
            opens = tcp_active_opens() - opens0
            time.sleep(0.5)
            st = proc_status(pid) if pid else {}
            stale = conn.execute("SELECT count(*) FROM public.eth_wallet_balances WHERE updated_at < %s",
                                 (start_ts,)).fetchone()[0]
            fin = end_stats
        loads.append(("end", loadavg()))
        report_header(f"bench/rpc --sweep-scale — background worker sweep of {a.scale_rows:,} rows", started, mach,
                      110, loads)
        out(f"worker: sweep_batch_size {a.scale_batch:,}, sweep_interval {a.scale_interval}, multicall_chunk_size "
            f"{a.scale_chunk:,}, multicall_max_request_bytes 0; anvil --gas-limit {GAS_CAP} --no-request-size-limit")
        done = fin[0]
        overall = done / wall if wall else 0
        out(f"| status | wall time | wallets | ticks | wallets/s overall | worker RssAnon peak (0.25 s samples) | "
            "worker VmHWM at end (of it RssShmem) | TCP connects (namespace) |")
        out("|---|---|---|---|---|---|---|---|")
        out(f"| {'COMPLETE' if finished else 'STOPPED at --max-minutes'} | {hms(wall)} | {done:,} of {a.scale_rows:,} "
            f"(updated {fin[1]:,}, failed {fin[2]:,}, skipped {fin[3]:,}) | {fin[4]:,} | {overall:,.0f} | "
            f"{mib(peak_anon)} | {mib(st.get('VmHWM', 0))} ({mib(st.get('RssShmem', 0))}) | {opens:,} "
            f"({opens / max(fin[4], 1):.1f} per tick) |")
        if tick_seen:
            durs = sorted(d for d, _ in tick_seen.values())
            per_tick = [n / d for d, n in tick_seen.values() if d > 0]
            busy = statistics.fmean(durs) * fin[4]
            out(f"ticks (last_tick_started..last_tick_finished, {len(tick_seen)} of {fin[4]} seen by the poll): "
                f"duration min/median/max {durs[0]:.3f} / {statistics.median(durs):.3f} / {durs[-1]:.3f} s, "
                f"wallets/s within a tick median {statistics.median(per_tick):,.0f}; ticks x mean duration = "
                f"{busy:,.0f} s of the {wall:,.0f} s wall ({busy / wall:.0%} busy; the rest: "
                f"waits between ticks (sweep_interval {a.scale_interval}) and the worker's own steps)")
        if finished:
            out(f"wall time = sweep_enabled on -> last_tick_finished of the tick that reached {a.scale_rows:,}; "
                f"every row refreshed: {stale == 0} ({stale:,} rows older than the start)")
        else:
            older = [s for s in samples if s["t"] <= wall - 60]
            t0_, d0_ = (older[-1]["t"], older[-1]["done"]) if older else (0.0, 0)
            r_last = (done - d0_) / (wall - t0_) if wall > t0_ else 0
            left = a.scale_rows - done
            est = wall + left / r_last if r_last > 0 else float("inf")
            out(f"EXTRAPOLATED (not measured): {left:,} rows left at the last minute's {r_last:,.0f} wallets/s -> "
                f"total ~{hms(est)} for {a.scale_rows:,} rows")
        out("wallets/s every 10 s: " + ", ".join(f"{s['rate']:,.0f}" for s in samples))
        out("=" * 110)
        return 0
    finally:
        finish(a, "rpc-sweep-scale", cluster, "bench", anvil)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--sizes", type=ints, default=[200, 2000, 20000], help="P2 N values")
    ap.add_argument("--viem-sizes", type=ints, default=[200, 2000], help="P3 N values")
    ap.add_argument("--skip-viem", action="store_true")
    ap.add_argument("--seed", type=int, default=200, help="wallets given non-zero balances")
    ap.add_argument("--rows", type=int, default=100_000, help="P4 table size")
    ap.add_argument("--big-rows", type=int, default=1_000_000, help="memory measurement table size")
    ap.add_argument("--batches", type=ints, default=[200, 2000, 10000, 100000])
    ap.add_argument("--chunks", type=ints, default=[200, 1000])
    ap.add_argument("--concurrency", type=ints, default=[1, DEFAULT_CONCURRENCY],
                    help="rpc_concurrency values for P2 and P4 (memory and P3 use the default)")
    ap.add_argument("--sweep-scale", action="store_true", help="the background-worker scale run instead")
    ap.add_argument("--scale-rows", type=int, default=3_150_000)
    ap.add_argument("--scale-batch", type=int, default=10_000)
    ap.add_argument("--scale-interval", default="100ms")
    ap.add_argument("--scale-chunk", type=int, default=1000)
    ap.add_argument("--max-minutes", type=float, default=20)
    ap.add_argument("--schemes", type=lambda v: v.split(","), default=["http", "https"],
                    help="http (anvil itself) and/or https (anvil behind stunnel4 with a test CA): P2 and P4 rows each")
    ap.add_argument("--https-batches", type=ints, default=[2000, 10000], help="P4 batches over https")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--pin", action="store_true",
                    help="anvil on its own CPU, the cluster and the bench client on the others")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    return sweep_scale(a) if a.sweep_scale else bench_rpc(a)


if __name__ == "__main__":
    sys.exit(main())
