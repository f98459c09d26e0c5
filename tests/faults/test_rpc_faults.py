"""RPC faults → the right SQLSTATE (or success after retries), nothing partial written, the worker
keeps ticking, recovery when the fault clears (suite table "RPC faults" in docs/reliability.md).

Balance-writing cases run in a database of their own (`rpcfault`, same cluster, same proxy) so the rows
and `refresh_stale` queue are ours alone. Each fault case seeds rows with a sentinel balance, runs
`refresh_wallets` and `refresh_stale` with the fault hitting the *second* of three chunks (the first
was read fine: a partial write would show), checks the rows are byte-for-byte unchanged and no
wallet is blamed, then clears the fault and checks the same calls write the chain's values.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass

import psycopg
import pytest

from conftest import SECRET_PATH, wait_until
from harness.chain import Contracts, wallet_address
from harness.pg import exited, free_port
from harness.rpcproxy import RpcProxy
from harness.reliability import set_random_values, Listener, TcpRelay, assert_no_secret, error_text, expect_error, short
from harness.suites import emptied, extension_db, report_fixture

pytestmark = pytest.mark.timeout(120)

DB = "rpcfault"
F = "audius_indexer.multicall_total_audio_balances"
SENTINEL = 123456789


# ------------------------------------------------------------------------------------------------
# fixtures and helpers
# ------------------------------------------------------------------------------------------------
report = report_fixture("rpc_faults", "RPC faults")


@pytest.fixture(scope="module", autouse=True, params=[1, 4], ids=["c1", "c4"])
def concurrency(request, cluster, report):
    """The whole suite runs twice: aggregate3 chunks one after the other (rpc_concurrency = 1) and
    pipelined (4 in flight): every rule below holds either way."""
    n = request.param
    cluster.baseline["rpc_concurrency"] = str(n)
    cluster.set_system(rpc_concurrency=n)
    report.prefix = f"c{n} "
    try:
        yield n
    finally:
        del cluster.baseline["rpc_concurrency"]
        cluster.set_system(rpc_concurrency=None)
        report.prefix = ""


@pytest.fixture(scope="module")
def rpcfaultdb(cluster):
    return extension_db(cluster, DB)  # not dropped: see extension_db


@pytest.fixture
def conn(db, cluster, rpcfaultdb):
    """A connection to `rpcfault` with empty balance/failure tables. `db` (conftest) clears faults,
    counters and SIGHUP settings afterwards and checks the log for crashes."""
    with emptied(cluster, rpcfaultdb) as c:
        yield c


def hostport(proxy) -> str:
    return f"127.0.0.1:{proxy.port}"


def wallets(n: int, tag: str) -> list[str]:
    return [wallet_address(i, f"rpcfault-{tag}") for i in range(n)]


def seed(conn, ws, updated_at="1900-01-01"):
    conn.execute("INSERT INTO eth_wallet_balances (wallet, balance, blocknumber, updated_at) "
                 "SELECT w, %s, 1, %s::timestamp FROM unnest(%s::text[]) w", (SENTINEL, updated_at, ws))


def snapshot(conn, ws):
    return conn.execute("SELECT wallet, balance::text, blocknumber, updated_at FROM eth_wallet_balances "
                        "WHERE wallet = ANY(%s) ORDER BY wallet", (ws,)).fetchall()


def values(conn, ws) -> dict[str, int]:
    return {r[0]: int(r[1]) for r in conn.execute(
        "SELECT wallet, balance FROM eth_wallet_balances WHERE wallet = ANY(%s)", (ws,)).fetchall()}


def seeded(conn, contracts, n: int, tag: str, rng_seed=None) -> tuple[list[str], dict[str, int]]:
    """`n` wallets of `tag` with random values on chain (seeded by `rng_seed`, default `tag`) and
    rows holding SENTINEL: (wallets, the chain's totals)."""
    ws = wallets(n, tag)
    want = set_random_values(contracts, ws, tag if rng_seed is None else rng_seed)
    seed(conn, ws)
    return ws, want


def balances(c, ws) -> dict[str, int]:
    """wallet → balance, as the read function returns them for `ws`."""
    return {w: int(b) for w, b in c.execute(f"SELECT wallet, balance FROM {F}(%s)", (ws,)).fetchall()}


def timed_balances(c, ws) -> tuple[dict[str, int], float]:
    """balances(c, ws) and the seconds the call took."""
    t0 = time.monotonic()
    got = balances(c, ws)
    return got, time.monotonic() - t0


def holders_per_call(proxy) -> list[int]:
    """The holders of each aggregate3 request the proxy saw, in order (3 calls each, plus getBlockNumber())."""
    return [(r.n_calls - 1) // 3 for r in proxy.select(aggregate3=True)]


def failures(conn) -> int:
    return conn.execute("SELECT count(*) FROM audius_indexer.wallet_failures").fetchone()[0]


def counts(conn, sql, args=()):
    return tuple(conn.execute(sql, args).fetchone())


def stale_ticks(conn, ticks: int = 3) -> None:
    """`ticks` calls of refresh_stale(8), each refreshing 8 stale rows."""
    for _ in range(ticks):
        assert counts(conn, "SELECT * FROM audius_indexer.refresh_stale(8)") == (8, 8, 0, 0)


def read_error(c, proxy, ws, mode: str | None, params: dict, sqlstate: str, contains=(),
               settings: dict | None = None, statement_timeout: str | None = None, **bounds):
    """The read of `ws` on `c` with the audius_indexer `settings` SET in the session, the proxy in
    fault `mode` (None: no fault) with `params`, and `statement_timeout` for this read only: it
    must end in ERROR `sqlstate` naming every string of `contains`, within expect_error's `bounds`
    (min_s / max_s). Returns (the error, the seconds it took)."""
    for name, value in (settings or {}).items():
        c.execute(f"SET audius_indexer.{name} = {value}")
    if statement_timeout:
        c.execute(f"SET statement_timeout = '{statement_timeout}'")
    if mode:
        proxy.fault(mode, **params)
    e, _, dt = expect_error(c, f"SELECT * FROM {F}(%s)", (ws,), sqlstate, contains, **bounds)
    if statement_timeout:
        c.execute("RESET statement_timeout")
    return e, dt


def cancel_mid_call(db, other_conn, sql: str, args, ready) -> tuple[float, psycopg.Error]:
    """Runs `sql` on `db` in a thread, waits for `ready()` (the call is on the wire), cancels it from
    `other_conn`; the call must end in ERROR 57014. Returns the seconds from the cancel to that end,
    and the error."""
    pid = db.info.backend_pid
    th, out = run_in_thread(lambda: db.execute(sql, args).fetchall())
    ready()
    assert th.is_alive(), f"the call ended before the cancel: {out}"
    t0 = time.monotonic()
    assert other_conn.execute("SELECT pg_cancel_backend(%s)", (pid,)).fetchone() == (True,)
    th.join(5)
    assert not th.is_alive(), "the call outlived the cancel by 5 s"
    assert isinstance(out.get("error"), psycopg.Error) and out["error"].sqlstate == "57014", out
    return out["end"] - t0, out["error"]


def run_in_thread(fn):
    out = {}

    def target():
        try:
            out["result"] = fn()
        except BaseException as e:  # noqa: BLE001
            out["error"] = e
        out["end"] = time.monotonic()
    th = threading.Thread(target=target, daemon=True)
    th.start()
    return th, out


# ------------------------------------------------------------------------------------------------
# 1. faults that fail the call: right SQLSTATE, nothing partial written, recovery
# ------------------------------------------------------------------------------------------------
@dataclass
class Fault:
    id: str
    mode: str
    params: dict
    sqlstate: str
    mention: str = ""            # text the message must contain besides the host
    retries: int = 0             # rpc_max_retries for the failing run
    max_s: float = 2.5
    min_s: float | None = None

    @property
    def what(self):
        p = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.mode}({p})" + (f", rpc_max_retries={self.retries}" if self.retries else "")


FAULTS = [
    Fault("http500", "http500", {}, "08P01", "HTTP 500"),
    Fault("http502", "http502", {}, "08P01", "HTTP 502"),
    Fault("http503", "http503", {}, "08P01", "HTTP 503"),
    Fault("http504", "http_status", {"status": 504}, "08P01", "HTTP 504"),
    Fault("http429_no_retry_after", "http429", {}, "53400", "rate-limited"),
    Fault("hang", "hang", {}, "08006", "did not answer within 1000 ms", min_s=0.9),
    Fault("slow_drip", "slow_drip", {"interval_ms": 50}, "08006", "did not answer within 1000 ms", min_s=0.9),
    Fault("truncated_body", "truncated", {}, "08006", "lost"),
    Fault("connection_closed", "close", {}, "08006", "lost"),
    Fault("garbage_html", "garbage", {}, "08P01", "not JSON"),
    Fault("invalid_json", "invalid_json", {}, "08P01", "not JSON"),
    Fault("bad_hex_result", "bad_hex", {}, "08P01", "malformed hex"),
    Fault("no_result", "no_result", {}, "08P01", "without result or error"),
    Fault("jsonrpc_revert", "jsonrpc_error", {"code": -32000, "message": "execution reverted"}, "38000",
          "execution reverted", retries=3),
    Fault("jsonrpc_invalid_params", "jsonrpc_error", {"code": -32602, "message": "invalid params"}, "38000",
          "-32602", retries=3),
    Fault("jsonrpc_rate_limit", "jsonrpc_error", {"code": -32005, "message": "limit exceeded"}, "53400",
          "limit exceeded"),
    Fault("wrong_result_count_minus1", "wrong_result_count", {"delta": -1}, "08P01", "", retries=3),
    Fault("wrong_result_count_plus1", "wrong_result_count", {"delta": 1}, "08P01", "", retries=3),
    Fault("no_multicall_code", "result", {"value": "0x"}, "55000", "no Multicall3 code", retries=3),
]


@pytest.mark.parametrize("f", FAULTS, ids=[f.id for f in FAULTS])
def test_fault_nothing_partial_then_recovery(f: Fault, conn, contracts, proxy, report):
    ws, want = seeded(conn, contracts, 12, f.id)
    before = snapshot(conn, ws)
    expect = f"ERROR {f.sqlstate} naming host{' + ' + repr(f.mention) if f.mention else ''}; rows unchanged; recovers"
    with report.case(f.id, f.what + " on chunk 2 of 3", expect) as rec:
        conn.execute("SET audius_indexer.multicall_chunk_size = 4")
        conn.execute(f"SET audius_indexer.rpc_max_retries = {f.retries}")
        conn.execute("SET audius_indexer.rpc_timeout_ms = 1000")
        seen = []
        for sql in ("SELECT * FROM audius_indexer.refresh_wallets(%s)",
                    "SELECT * FROM audius_indexer.refresh_stale(12)"):
            proxy.clear_faults()
            proxy.reset()
            # on eth_call only: chunk 1 is written (then rolled back) before chunk 2's answer is
            # taken, and the head check it may need (eth_blockNumber) must not hit the fault
            proxy.fault(f.mode, after=1, methods="eth_call", **f.params)
            args = (ws,) if "%s" in sql else ()
            e, text, dt = expect_error(conn, sql, args, f.sqlstate, (hostport(proxy), f.mention),
                                       max_s=f.max_s, min_s=f.min_s)
            aggs = proxy.select(aggregate3=True)
            assert aggs[0].fault is None and aggs[1].fault == f.mode, \
                "chunk 1 must have been read fine and chunk 2 faulted"
            if f.retries:
                # the refresh paths may send one probe (getBlockNumber() only) before isolating a
                # failing chunk; a failing chunk itself is never retried (pipelined, chunk 3 may
                # have been on the wire too, and failed once as well)
                sent = [tuple(r.calls) for r in aggs if r.fault and r.n_calls != 1]
                assert sent and len(sent) == len(set(sent)), \
                    "a deterministic failure is never retried"
            assert snapshot(conn, ws) == before, "a partial result was written"
            assert failures(conn) == 0, "an RPC failure must not be blamed on the wallets"
            seen.append(f"{e.sqlstate} in {dt:.2f}s")
        proxy.clear_faults()
        assert counts(conn, "SELECT * FROM audius_indexer.refresh_stale(12)") == (12, 12, 0, 0)
        assert values(conn, ws) == want
        rec.observed = f"{short(e, 90)} (refresh_wallets, refresh_stale: {', '.join(seen)}); rows unchanged; recovered"


# ------------------------------------------------------------------------------------------------
# 2. transient faults: retried, then success
# ------------------------------------------------------------------------------------------------
def test_acceptance_429_retry_after_then_success(db, contracts, proxy, report):
    """ACCEPTANCE: a 429 with Retry-After: 1, then success: ≥ 1 s, exactly 2 requests."""
    ws = wallets(3, "429ra")
    want = set_random_values(contracts, ws, 1)
    with report.case("ACCEPT 429 Retry-After: 1", "http429(retry_after=1), once; default settings",
                     "success, took ≥ 1 s, exactly 2 requests") as rec:
        proxy.reset()
        proxy.fault("http429", retry_after=1, times=1)
        got, dt = timed_balances(db, ws)
        assert got == want
        assert dt >= 1.0, f"took {dt:.3f}s: Retry-After not honoured"
        assert dt < 3.0, f"took {dt:.3f}s"
        assert proxy.http_requests == 2, f"{proxy.http_requests} requests"
        assert [r.fault for r in proxy.requests] == ["http429", None]
        rec.observed = f"success in {dt:.2f}s, {proxy.http_requests} requests"


@dataclass
class Transient:
    id: str
    mode: str
    params: dict
    min_s: float = 0.0
    max_s: float = 2.5
    timeout_ms: int = 10000


TRANSIENTS = [
    Transient("http429_no_retry_after", "http429", {}, min_s=0.12),
    Transient("http502", "http502", {}, min_s=0.12),
    Transient("http503", "http503", {}, min_s=0.12),
    Transient("http504", "http_status", {"status": 504}, min_s=0.12),
    Transient("jsonrpc_-32005", "jsonrpc_error", {"code": -32005, "message": "limit exceeded"}, min_s=0.12),
    Transient("jsonrpc_429_compute_units", "jsonrpc_error",
              {"code": 429, "message": "Your app has exceeded its compute units per second capacity"}, min_s=0.12),
    Transient("jsonrpc_header_not_found", "jsonrpc_error", {"code": -32000, "message": "header not found"},
              min_s=0.12),
    Transient("hang_timeout", "hang", {}, min_s=0.8, timeout_ms=800),
    Transient("truncated_body", "truncated", {}),
    Transient("connection_closed", "close", {}),
]


@pytest.mark.parametrize("t", TRANSIENTS, ids=[t.id for t in TRANSIENTS])
def test_transient_retried_then_success(t: Transient, conn, contracts, proxy, report):
    ws, want = seeded(conn, contracts, 3, "tr-" + t.id, t.id)
    with report.case(f"retry {t.id}", f"{t.mode}({t.params or ''}) once, then pass",
                     "refresh_wallets succeeds after 1 retry (2 requests), values written") as rec:
        conn.execute("SET audius_indexer.rpc_max_retries = 2")
        conn.execute(f"SET audius_indexer.rpc_timeout_ms = {t.timeout_ms}")
        proxy.reset()
        proxy.fault(t.mode, times=1, **t.params)
        t0 = time.monotonic()
        c = counts(conn, "SELECT * FROM audius_indexer.refresh_wallets(%s)", (ws,))
        dt = time.monotonic() - t0
        assert c == (3, 3, 0, 0), c
        assert values(conn, ws) == want
        assert proxy.count(aggregate3=True) == 2, f"{proxy.count(aggregate3=True)} aggregate3 requests"
        assert t.min_s <= dt < t.max_s, f"took {dt:.2f}s (backoff base 250 ms with jitter ≥ 125 ms)"
        rec.observed = f"{c} in {dt:.2f}s, 2 requests"


@dataclass
class GivesUp:
    """A fault that persists: the read ends with `sqlstate`, naming `mention` (None: the proxy's
    host:port), after exactly the aggregate3 calls `holders` (holders per call, in order)."""
    case: str
    fault_text: str
    expected: str
    mode: str | None
    params: dict
    settings: dict
    n_wallets: int
    sqlstate: str
    mention: str | None
    holders: list
    max_s: float


GIVES_UP = [
    GivesUp("retries bounded", "http503 persistent, rpc_max_retries=2", "ERROR 08P01 after exactly 3 requests",
            "http503", {}, {"rpc_max_retries": 2}, 2, "08P01", None, [2, 2, 2], 5),
    GivesUp("rate limit exhausted", "http429 persistent (no Retry-After), rpc_max_retries=2",
            "ERROR 53400 after exactly 3 requests", "http429", {}, {"rpc_max_retries": 2}, 2, "53400", None,
            [2, 2, 2], 5),
    GivesUp("out of gas at 1 holder", "out_of_gas_above(holders=0), 4 wallets",
            "ERROR 38000 'out of gas' after halving 4 → 2 → 1", "out_of_gas_above", {"holders": 0}, {}, 4, "38000",
            "out of gas", [4, 2, 1], 3),
    GivesUp("response > rpc_max_response_bytes", "rpc_max_response_bytes=1024, 2 wallets",
            "ERROR 54000 after halving to 1 holder", None, {}, {"rpc_max_response_bytes": 1024}, 2, "54000",
            "too large", [2, 1], 3),
]


@pytest.mark.parametrize("g", GIVES_UP, ids=[g.case for g in GIVES_UP])
def test_persistent_fault_gives_up_with_its_sqlstate(g: GivesUp, conn, proxy, report):
    """Each row: the SQLSTATE, the words the message must hold, and the exact aggregate3 calls
    (retries, or the halvings of an answer that no chunk size can fix) before the read gives up."""
    ws = wallets(g.n_wallets, "giveup-" + g.case)
    with report.case(g.case, g.fault_text, g.expected) as rec:
        mention = g.mention if g.mention is not None else hostport(proxy)
        e, dt = read_error(conn, proxy, ws, g.mode, g.params, g.sqlstate, (mention,), g.settings, max_s=g.max_s)
        seq = holders_per_call(proxy)
        assert seq == g.holders, seq
        rec.observed = f"{short(e, 70)}; holders per call {seq}, {dt:.2f}s"


def test_retry_budget(conn, proxy, report):
    """The budget, not the retry count, ends the request, and the number of attempts is exact.
    Backoff before retry k is uniform in [step/2, step] with step = 250 ms·2^(k-1): waits 1 and 2
    end after 375–750 ms in all, and wait 3 alone is ≥ 500 ms, so from the 3rd failure on
    (≥ 375 ms in) the next attempt would start at ≥ 875 ms. With an 850 ms budget that is exactly
    3 attempts whatever the jitter (100 ms to spare for the attempts themselves), and the error
    comes as soon as the 3rd wait is drawn: at 375–850 ms, never after the budget."""
    ws = wallets(2, "budget")
    with report.case("retry budget", "http503 persistent, rpc_max_retries=100, rpc_retry_budget_ms=850",
                     "ERROR 08P01 after exactly 3 requests, within the 850 ms budget") as rec:
        e, dt = read_error(conn, proxy, ws, "http503", {}, "08P01", (hostport(proxy), "HTTP 503"),
                           {"rpc_max_retries": 100, "rpc_retry_budget_ms": 850}, min_s=0.375, max_s=0.85)
        assert proxy.count(aggregate3=True) == 3
        assert proxy.http_requests == 3
        rec.observed = f"{short(e, 50)} in {dt:.2f}s after 3 requests"


def test_retry_after_beyond_budget_gives_up_at_once(conn, proxy, report):
    ws = wallets(2, "ra-budget")
    with report.case("Retry-After > budget", "http429(retry_after=3600), rpc_retry_budget_ms=2000",
                     "ERROR 53400 at once (no 10 s wait), 1 request") as rec:
        e, dt = read_error(conn, proxy, ws, "http429", {"retry_after": 3600}, "53400",
                           settings={"rpc_retry_budget_ms": 2000}, max_s=1.0)
        assert proxy.count(aggregate3=True) == 1
        rec.observed = f"{short(e, 50)} in {dt:.2f}s, 1 request"


def test_acceptance_statement_timeout_on_hang(db, proxy, report):
    """ACCEPTANCE: statement_timeout = '2s' against a hanging endpoint → 57014 in < 3 s."""
    ws = wallets(2, "st")
    with report.case("ACCEPT statement_timeout", "hang; statement_timeout=2s; rpc_timeout_ms/retries default",
                     "ERROR 57014 in < 3 s") as rec:
        e, dt = read_error(db, proxy, ws, "hang", {}, "57014", statement_timeout="2s", min_s=1.9, max_s=3.0)
        rec.observed = f"{short(e, 60)} in {dt:.2f}s"


def test_pipelined_reads_honour_cancel_and_statement_timeout(db, other_conn, proxy, report, concurrency):
    """Chunks on helper threads (3 chunks, up to rpc_concurrency in flight), every request hanging:
    statement_timeout and pg_cancel_backend end the call within 50 ms (+ scheduling slack), the
    session stays usable and its next read is correct."""
    ws = wallets(12, "pipe-cancel")
    with report.case("pipelined: statement_timeout, cancel", "hang on every request, 3 chunks of 4",
                     "ERROR 57014 within 0.15 s of the timeout / the cancel; next call fine") as rec:
        e, dt = read_error(db, proxy, ws, "hang", {}, "57014", settings={"multicall_chunk_size": 4},
                           statement_timeout="1s", min_s=0.95, max_s=1.15)
        assert proxy.count(aggregate3=True) == min(3, concurrency), proxy.count(aggregate3=True)
        def on_the_wire():
            wait_until(lambda: proxy.count(aggregate3=True) >= min(3, concurrency) * 2, what="the requests")
            time.sleep(0.3)
        dt_cancel, _ = cancel_mid_call(db, other_conn, f"SELECT * FROM {F}(%s)", (ws,), on_the_wire)
        assert dt_cancel < 0.15, f"cancel took {dt_cancel:.3f}s"
        proxy.clear_faults()
        rows = db.execute(f"SELECT wallet, error FROM {F}(%s)", (ws,)).fetchall()
        assert [r[0] for r in rows] == ws and all(r[1] is None for r in rows)
        rec.observed = f"timeout: {short(e, 40)} after {dt:.3f}s; cancel: 57014 {dt_cancel * 1000:.0f} ms after it"


def test_statement_timeout_during_backoff(db, proxy, report):
    ws = wallets(2, "st-backoff")
    with report.case("statement_timeout in backoff", "http429(retry_after=5) persistent; statement_timeout=1500ms",
                     "ERROR 57014 in < 2.2 s (the wait is interruptible)") as rec:
        e, dt = read_error(db, proxy, ws, "http429", {"retry_after": 5}, "57014", statement_timeout="1500ms",
                           min_s=1.4, max_s=2.2)
        assert proxy.count(aggregate3=True) == 1
        rec.observed = f"{short(e, 60)} in {dt:.2f}s"


def test_cancel_during_backoff(db, other_conn, proxy, report):
    ws = wallets(2, "cancel-backoff")
    with report.case("cancel in backoff", "http429(retry_after=5); pg_cancel_backend during the wait",
                     "ERROR 57014 within 1 s of the cancel") as rec:
        proxy.fault("http429", retry_after=5)

        def in_the_wait():
            wait_until(lambda: proxy.http_requests >= 1, what="the first request")
            time.sleep(0.4)
        dt, e = cancel_mid_call(db, other_conn, f"SELECT * FROM {F}(%s)", (ws,), in_the_wait)
        assert dt < 1.0, f"cancel took {dt:.2f}s"
        assert db.execute("SELECT 1").fetchone() == (1,)
        rec.observed = f"{short(e, 50)} {dt:.2f}s after the cancel"


# ------------------------------------------------------------------------------------------------
# 3. chunk splitting (out of gas / too large)
# ------------------------------------------------------------------------------------------------
def test_acceptance_out_of_gas_above_50_holders(db, contracts, proxy, report):
    """ACCEPTANCE: the node answers out-of-gas above 50 holders per call; 400 wallets all correct
    against independent eth_calls; the chunks halve 200 → 100 → 50."""
    ws = wallets(400, "oog")
    with report.case("ACCEPT out of gas > 50 holders", "out_of_gas_above(holders=50), 400 wallets, chunk 200",
                     "all 400 equal independent eth_calls; chunks 200→100→50") as rec:
        set_random_values(contracts, ws, "oog")
        proxy.reset()
        proxy.fault("out_of_gas_above", holders=50)
        rows = db.execute(f"SELECT wallet, balance, token_balance, staked, delegated, error FROM {F}(%s)",
                          (ws,)).fetchall()
        assert [r[0] for r in rows] == ws
        for w, bal, t, s, d, err in rows:
            want = contracts.independent_total(w)
            assert (int(t), int(s), int(d)) == want, w
            assert int(bal) == sum(want) and err is None
        seq = [((r.n_calls - 1) // 3, r.fault is not None) for r in proxy.select(aggregate3=True)]
        half = [(200, True), (100, True), (50, False), (50, False), (100, True), (50, False), (50, False)]
        # the second 200-holder chunk goes out on a helper thread, ahead of the first one's halves
        # (whenever the helper sends it, also at rpc_concurrency 1); each is halved in order
        assert seq.count(half[0]) == 2, seq
        assert [x for x in seq if x != half[0]] == half[1:] + half[1:], seq
        rec.observed = (f"400/400 correct; {len(seq)} aggregate3 calls: "
                        + " ".join(f"{n}{'✗' if bad else '✓'}" for n, bad in seq[:7]) + " ×2")


@dataclass
class TooLarge:
    """The node refuses a chunk once as too large: the read succeeds, the chunk of `n` halved once."""
    id: str
    case: str
    fault_text: str
    tag: str
    n: int                       # wallets, all in one chunk; also the RNG seed of their values
    mode: str
    params: dict


TOO_LARGE = [
    TooLarge("http_413", "HTTP 413", "http_status(413) once, 200 wallets in one chunk", "413", 200,
             "http_status", {"status": 413}),
    TooLarge("jsonrpc_response_size", "response too large (JSON-RPC)",
             "jsonrpc_error(-32000, 'response size exceeded') once", "toolarge", 40,
             "jsonrpc_error", {"code": -32000, "message": "response size exceeded"}),
]


@pytest.mark.parametrize("t", TOO_LARGE, ids=[t.id for t in TOO_LARGE])
def test_too_large_once_halves_the_chunk(t: TooLarge, db, contracts, proxy, report):
    ws = wallets(t.n, t.tag)
    half = t.n // 2
    with report.case(t.case, t.fault_text, f"success; {t.n} → {half} + {half}") as rec:
        want = set_random_values(contracts, ws, t.n)
        proxy.fault(t.mode, times=1, **t.params)
        assert balances(db, ws) == want
        seq = holders_per_call(proxy)
        assert seq == [t.n, half, half], seq
        rec.observed = f"success; holders per call {seq}"


def test_request_byte_budget(db, contracts, proxy, report):
    ws = wallets(100, "bytebudget")
    with report.case("request byte budget", "multicall_max_request_bytes=20kB, chunk 200, 100 wallets",
                     "success in several calls, each body ≤ 20 kB") as rec:
        want = set_random_values(contracts, ws, 100)
        db.execute("SET audius_indexer.multicall_max_request_bytes = 20000")
        assert balances(db, ws) == want
        recs = proxy.select(aggregate3=True)
        holders = [(r.n_calls - 1) // 3 for r in recs]
        assert len(recs) > 1 and sum(holders) == 100
        # the body carries the calldata as hex: 2 chars per byte of 4 + ABI(Call3[]) data
        for r in recs:
            calldata_bytes = 4 + 64 + sum(160 + ((len(c[2] + c[3]) // 2 + 31) // 32) * 32 for c in r.calls)
            assert 2 * calldata_bytes + 100 <= 20000, calldata_bytes
        rec.observed = f"success; holders per call {holders}"


def test_real_node_out_of_gas_is_split(db, contracts, proxy, report):
    """No injected fault: anvil itself runs out of gas on a 1400-holder aggregate3 (30M gas cap)
    and answers {"code":-32603,"message":"EVM error OutOfGas"}. That is the out-of-gas case."""
    ws = wallets(1400, "realoog")
    with report.case("real anvil out of gas", "chunk 1400, no byte budget; anvil: -32603 'EVM error OutOfGas'",
                     "chunk halved until it fits; 1400 rows") as rec:
        db.execute("SET audius_indexer.multicall_chunk_size = 1400")
        db.execute("SET audius_indexer.multicall_max_request_bytes = 0")
        db.execute("SET audius_indexer.rpc_timeout_ms = 30000")
        try:
            rows = db.execute(f"SELECT wallet FROM {F}(%s)", (ws,)).fetchall()
        except psycopg.Error as e:
            rec.observed = short(e, 120)
            raise AssertionError(f"expected the chunk to be split, got {e.sqlstate}: {error_text(e)}") from None
        assert len(rows) == 1400
        seq = holders_per_call(proxy)
        rec.observed = f"success; holders per call {seq}"


# ------------------------------------------------------------------------------------------------
# 3b. keep-alive and pipelining
# ------------------------------------------------------------------------------------------------
def test_one_connection_per_slot_for_a_whole_sweep(conn, contracts, proxy, report, concurrency):
    """Keep-alive: three sweep ticks of 6 chunks each in one session open one connection per chunk in
    flight (rpc_concurrency), not one per request; rpc_idle_timeout_ms = 0 opens one per request."""
    ws, want = seeded(conn, contracts, 24, "ka")
    with report.case("keep-alive across ticks", "3 x refresh_stale(8), chunk 4 (6 aggregate3 calls)",
                     f"<= {concurrency} TCP connection(s) in all; idle timeout 0: one per request") as rec:
        conn.execute("SET audius_indexer.multicall_chunk_size = 4")
        conn.execute("SELECT * FROM audius_indexer.rpc_endpoint_stats()")
        proxy.reset()
        stale_ticks(conn)
        n_req, n_conn, probes = proxy.http_requests, proxy.accepted, proxy.h2_probes
        # 6 aggregate3 chunks, and the node's head asked at most once (the write path's block
        # check trusts a head for 60 s)
        methods = [r.method for r in proxy.requests]
        assert methods.count("eth_call") == 6 and set(methods) <= {"eth_call", "eth_blockNumber"}, methods
        assert methods.count("eth_blockNumber") <= 1, methods
        # one HTTP stack: HTTP/1.1 with keep-alive, never an HTTP/2 attempt
        assert probes == 0, f"{probes} HTTP/2 attempts"
        assert 1 <= n_conn <= concurrency, f"{n_conn} connections for {n_req} requests"
        assert values(conn, ws) == want
        conn.execute("SET audius_indexer.rpc_idle_timeout_ms = 0")
        conn.execute("UPDATE eth_wallet_balances SET updated_at = '1900-01-01' WHERE wallet = ANY(%s)", (ws,))
        proxy.reset()
        stale_ticks(conn, 1)
        assert proxy.accepted == proxy.http_requests, (proxy.accepted, proxy.http_requests)
        rec.observed = (f"{n_conn} connection(s) for {n_req} requests over 3 ticks; idle timeout 0: "
                        f"{proxy.accepted} for {proxy.http_requests}")


def test_stale_keepalive_connection_resent_once_uncounted(conn, proxy, report):
    """A kept-alive connection the server closed (it read the request, answered nothing) is not a
    failed attempt: the request goes once more on a fresh connection, with rpc_max_retries = 0.
    Without keep-alive the same fault is a failed attempt (ERROR 08006)."""
    ws = wallets(3, "stale")
    with report.case("stale keep-alive connection", "close (no answer) on the 2nd call of a session, rpc_max_retries=0",
                     "success, 2 HTTP requests, 0 failures counted; idle timeout 0: ERROR 08006") as rec:
        conn.execute("SET audius_indexer.rpc_max_retries = 0")
        assert len(conn.execute(f"SELECT * FROM {F}(%s)", (ws,)).fetchall()) == 3  # pools a connection
        failures0 = conn.execute("SELECT sum(failures) FROM audius_indexer.rpc_endpoint_stats()").fetchone()[0]
        proxy.reset()
        proxy.fault("close", times=1)
        assert len(conn.execute(f"SELECT * FROM {F}(%s)", (ws,)).fetchall()) == 3
        assert proxy.http_requests == 2 and [r.fault for r in proxy.requests] == ["close", None]
        assert proxy.accepted == 1, "the resend goes on a fresh connection"
        failures1 = conn.execute("SELECT sum(failures) FROM audius_indexer.rpc_endpoint_stats()").fetchone()[0]
        assert failures1 == failures0, "the resend is not a failed attempt"
        conn.execute("SET audius_indexer.rpc_idle_timeout_ms = 0")
        proxy.reset()
        proxy.fault("close", times=1)
        e, _, _ = expect_error(conn, f"SELECT * FROM {F}(%s)", (ws,), "08006", (hostport(proxy), "lost"), max_s=2)
        assert proxy.http_requests == 1
        rec.observed = f"2 requests, failures {failures0} -> {failures1}; idle timeout 0: {short(e, 60)}"


@pytest.fixture
def relay(anvil, cluster):
    """rpc_url pointing at a TCP relay in front of anvil itself (no HTTP proxy in between: the
    extension talks to the node as it would in production); the `db` fixture puts rpc_url back
    afterwards."""
    with TcpRelay(anvil.url) as r:
        cluster.set_system(rpc_url=r.url)
        yield r


def test_keepalive_connections_for_a_whole_sweep_on_the_node(conn, contracts, relay, report, concurrency):
    """Against the node itself (anvil, which also speaks HTTP/2): three sweep ticks of 6 chunks
    each, rpc_concurrency chunks in flight, use at most rpc_concurrency kept-alive HTTP/1.1
    connections in all, and never try HTTP/2 (one HTTP stack: docs/performance.md)."""
    ws, want = seeded(conn, contracts, 24, "ka_node")
    with report.case("keep-alive on the node", "node via TCP relay, 3 x refresh_stale(8), chunk 4",
                     f"1..{concurrency} TCP connections in all, none HTTP/2") as rec:
        conn.execute("SET audius_indexer.multicall_chunk_size = 4")
        relay.reset()
        stale_ticks(conn)
        assert values(conn, ws) == want
        assert 1 <= relay.connections <= concurrency and relay.h2_connections == 0, \
            (relay.connections, relay.h2_connections)
        rec.observed = f"{relay.connections} HTTP/1.1 connection(s) for 6 requests, 0 HTTP/2"


def test_connection_dropped_between_calls_is_not_a_failure(conn, contracts, relay, report):
    """The node drops its kept-alive connections between two calls (RST, as on a restart): the next
    call opens a fresh one, with rpc_max_retries = 0 and no failed attempt counted."""
    ws = wallets(3, "drop")
    want = set_random_values(contracts, ws, "drop")
    with report.case("connection dropped while idle", "RST of the kept connection, rpc_max_retries=0",
                     "success on a fresh connection, 0 failures counted") as rec:
        conn.execute("SET audius_indexer.rpc_max_retries = 0")
        relay.reset()
        assert balances(conn, ws) == want
        failures0 = conn.execute("SELECT sum(failures) FROM audius_indexer.rpc_endpoint_stats()").fetchone()[0]
        for _ in range(3):
            relay.drop_all()
            time.sleep(0.05)
            assert balances(conn, ws) == want
        failures1 = conn.execute("SELECT sum(failures) FROM audius_indexer.rpc_endpoint_stats()").fetchone()[0]
        assert failures1 == failures0, (failures0, failures1)
        assert relay.connections == 4 and relay.h2_connections == 0, (relay.connections, relay.h2_connections)
        rec.observed = f"4 calls, 4 connections, failures {failures0} -> {failures1}"


def test_hung_node_honours_statement_timeout_and_cancel(db, other_conn, relay, report, concurrency):
    """The node stops answering on its connections (requests in flight, nothing comes back):
    statement_timeout and pg_cancel_backend end the call promptly; the next call is fine."""
    ws = wallets(12, "h2hang")
    with report.case("hung node", "relay stalls; 3 chunks of 4; statement_timeout 1s, then a cancel",
                     "ERROR 57014 within 0.15 s of the timeout / the cancel; next call fine") as rec:
        db.execute("SET audius_indexer.multicall_chunk_size = 4")
        assert len(db.execute(f"SELECT * FROM {F}(%s)", (ws,)).fetchall()) == 12  # connection up
        relay.stall = True
        db.execute("SET statement_timeout = '1s'")
        e, _, dt = expect_error(db, f"SELECT * FROM {F}(%s)", (ws,), "57014", min_s=0.95, max_s=1.15)
        db.execute("RESET statement_timeout")
        dt_cancel, _ = cancel_mid_call(db, other_conn, f"SELECT * FROM {F}(%s)", (ws,), lambda: time.sleep(0.5))
        assert dt_cancel < 0.15, f"cancel took {dt_cancel:.3f}s"
        relay.stall = False
        relay.drop_all()
        rows = db.execute(f"SELECT wallet, error FROM {F}(%s)", (ws,)).fetchall()
        assert [r[0] for r in rows] == ws and all(r[1] is None for r in rows)
        rec.observed = f"timeout: {short(e, 40)} after {dt:.3f}s; cancel: 57014 {dt_cancel * 1000:.0f} ms after it"


def test_rate_limits_halve_the_requests_in_flight(conn, proxy, report, concurrency):
    """Pipelined reads: up to rpc_concurrency requests at once; 429s halve that for the session (a
    rate-limited provider sees fewer requests at once, not more), a run of good answers grows it back."""
    ws = wallets(32, "aimd")
    with report.case("429 halves the concurrency", "8 chunks of 150 ms; then 3 x http429; then 8 chunks again",
                     f"peak in flight {concurrency}, then 1, grown back to {concurrency}") as rec:
        conn.execute("SET audius_indexer.multicall_chunk_size = 4")
        slow = proxy.fault("delay", ms=150)
        proxy.reset()
        assert len(conn.execute(f"SELECT * FROM {F}(%s)", (ws,)).fetchall()) == 32
        before = proxy.peak_in_flight
        proxy.clear_faults()
        proxy.fault("http429", times=3, retry_after=0.05)
        assert len(conn.execute(f"SELECT * FROM {F}(%s)", (ws,)).fetchall()) == 32
        proxy.clear_faults()
        proxy.fault("delay", ms=150)
        proxy.reset()
        assert len(conn.execute(f"SELECT * FROM {F}(%s)", (ws,)).fetchall()) == 32
        after = proxy.peak_in_flight
        proxy.clear_faults()
        rounds = 0
        while rounds < 40:  # grows by one per 16 x limit good answers: 16 + 32 + 48 for 1 -> 4
            conn.execute(f"SELECT count(*) FROM {F}(%s)", (ws,)).fetchone()
            rounds += 1
        proxy.fault("delay", ms=150)
        proxy.reset()
        assert len(conn.execute(f"SELECT * FROM {F}(%s)", (ws,)).fetchall()) == 32
        regrown = proxy.peak_in_flight
        proxy.clear_faults()
        assert before == concurrency, f"peak {before} with rpc_concurrency {concurrency}"
        assert after == 1, f"peak {after} after the 429s"
        assert regrown == concurrency, f"peak {regrown} after {rounds * 8} good answers"
        del slow
        rec.observed = f"peak in flight {before} -> {after} after the 429s -> {regrown} after {rounds * 8} good answers"


# ------------------------------------------------------------------------------------------------
# 4. redirect, node down, failover
# ------------------------------------------------------------------------------------------------
def test_redirect_not_followed(conn, contracts, proxy, report):
    ws, want = seeded(conn, contracts, 12, "redirect")
    before = snapshot(conn, ws)
    with Listener() as target, report.case(
            "redirect", "302 Location: http://127.0.0.1:<listener>/zzz-stolen?k=secret-key-123",
            "ERROR 08P01 naming the proxy host; listener gets 0 connections; rows unchanged") as rec:
        conn.execute("SET audius_indexer.rpc_max_retries = 3")
        conn.execute("SET audius_indexer.multicall_chunk_size = 4")
        loc = f"http://127.0.0.1:{target.port}/zzz-stolen?k=secret-key-123"
        proxy.fault("redirect", after=1, location=loc)
        e, text, _ = expect_error(conn, "SELECT * FROM audius_indexer.refresh_wallets(%s)", (ws,), "08P01",
                                  (hostport(proxy), "redirect"), max_s=2)
        assert "stolen" not in text
        time.sleep(0.2)
        assert target.connections == 0, "the redirect was followed"
        # the redirect may hit chunk 2 (and, pipelined, chunk 3) or the head check after chunk 1:
        # whichever request got it was never sent again
        redirected = [(r.method, tuple(r.calls)) for r in proxy.requests if r.fault == "redirect"]
        assert redirected and len(redirected) == len(set(redirected)), \
            f"a redirect is not retried: {[(r.http_index, r.method, r.fault, r.n_calls) for r in proxy.requests]}"
        assert snapshot(conn, ws) == before
        proxy.clear_faults()
        assert counts(conn, "SELECT * FROM audius_indexer.refresh_wallets(%s)", (ws,)) == (12, 12, 0, 0)
        assert values(conn, ws) == want
        rec.observed = f"{short(e, 90)}; listener connections: {target.connections}; recovered"


def test_node_down(conn, cluster, contracts, proxy, report):
    ws, want = seeded(conn, contracts, 6, "down")
    before = snapshot(conn, ws)
    port = free_port()
    with report.case("node down", "rpc_url → a port nobody listens on; default retries",
                     "ERROR 08001 naming the host, < 3 s; rows unchanged; recovers") as rec:
        cluster.set_system(rpc_url=f"http://127.0.0.1:{port}{SECRET_PATH}")
        c2 = cluster.connect(DB)
        try:
            for sql, args in (("SELECT * FROM audius_indexer.refresh_wallets(%s)", (ws,)),
                              ("SELECT * FROM audius_indexer.refresh_stale(6)", ())):
                e, _, dt = expect_error(c2, sql, args, "08001", (f"127.0.0.1:{port}", "connect"), max_s=3)
                assert snapshot(c2, ws) == before and failures(c2) == 0
        finally:
            c2.close()
        cluster.set_system(rpc_url=proxy.url_with(SECRET_PATH))
        with cluster.connect(DB) as c3:
            assert counts(c3, "SELECT * FROM audius_indexer.refresh_stale(6)") == (6, 6, 0, 0)
            assert values(c3, ws) == want
        rec.observed = f"{short(e, 80)} in {dt:.2f}s; rows unchanged; recovered"


def stats(conn):
    return conn.execute("SELECT position, host, requests, failures, consecutive_failures, last_error, "
                        "cooling_down_ms FROM audius_indexer.rpc_endpoint_stats() ORDER BY position").fetchall()


def test_acceptance_failover(cluster, db, contracts, proxy, report):
    """ACCEPTANCE: two URLs, the first refusing connections → success through the second, and the
    counters show it; a second call goes straight to the second (the first is cooling down)."""
    ws = wallets(3, "failover")
    want = set_random_values(contracts, ws, "failover")
    dead = free_port()
    with report.case("ACCEPT failover", f"rpc_urls = 'http://127.0.0.1:<refused>, <proxy>{SECRET_PATH}'",
                     "success via #2; stats: #1 1 request, 1 failure (connect error), #2 1 request, "
                     "0 failures; 2nd call skips #1") as rec:
        cluster.set_system(rpc_urls=f"http://127.0.0.1:{dead}/k1?apikey=zzz, {proxy.url_with(SECRET_PATH)}")
        with cluster.connect("audius") as c:
            got, dt = timed_balances(c, ws)
            assert got == want
            assert dt < 1.0, f"failover took {dt:.2f}s: it must not wait a backoff first"
            s1 = stats(c)
            assert [r[1] for r in s1] == [f"127.0.0.1:{dead}", hostport(proxy)]
            first, second = s1
            # one attempt each: #1 refused the connection, failover to #2 at once (no retry of #1)
            assert first[2:5] == (1, 1, 1), first
            assert "connect" in (first[5] or ""), first
            assert second[2:5] == (1, 0, 0), second
            assert first[6] > 0, "the failed endpoint is cooling down"
            for r in s1:
                assert "zzz" not in str(r) and "secret-key-123" not in str(r) and "k1" not in str(r)
            assert proxy.http_requests == 1
            assert balances(c, ws) == want
            s2 = stats(c)
            assert s2[0][2] == first[2], f"the cooling-down endpoint was tried again: {s2[0]}"
            assert s2[1][2] == second[2] + 1
            assert proxy.http_requests == 2
            assert proxy.requests[0].path == SECRET_PATH
        rec.observed = (f"success in {dt:.2f}s; #1 requests={first[2]} failures={first[3]} "
                        f"last_error='{first[5][:60]}'; #2 requests={second[2]}; 2nd call: #1 requests "
                        f"still {s2[0][2]}, #2 {s2[1][2]}")


def test_failover_on_http_503(cluster, db, anvil, contracts, proxy, report):
    """The first endpoint answers 503: the call moves to the second at once (no backoff wait)."""
    ws = wallets(3, "failover503")
    want = set_random_values(contracts, ws, "failover503")
    p2 = RpcProxy(anvil.url).start()
    try:
        with report.case("failover on 503", "rpc_urls = '<proxy A: 503>, <proxy B>'",
                         "success via B, A: 1 request, B: 1 request") as rec:
            proxy.fault("http503")
            cluster.set_system(rpc_urls=f"{proxy.url_with(SECRET_PATH)},{p2.url_with(SECRET_PATH)}")
            with cluster.connect("audius") as c:
                got, dt = timed_balances(c, ws)
                assert got == want
                assert proxy.http_requests == 1 and p2.http_requests == 1
                assert dt < 1.0
                s = stats(c)
                assert "503" in (s[0][5] or "") and s[1][2] == 1
            rec.observed = f"success in {dt:.2f}s; A {proxy.http_requests} request (503), B {p2.http_requests}"
    finally:
        p2.stop()


def test_all_endpoints_down(cluster, db, report):
    a, b = free_port(), free_port()
    with report.case("all endpoints down", "rpc_urls = two refused ports; rpc_max_retries=1",
                     "ERROR 08001, both tried") as rec:
        cluster.set_system(rpc_urls=f"http://127.0.0.1:{a}{SECRET_PATH}, http://127.0.0.1:{b}{SECRET_PATH}")
        with cluster.connect("audius") as c:
            c.execute("SET audius_indexer.rpc_max_retries = 1")
            e, _, dt = expect_error(c, f"SELECT * FROM {F}(%s)", (wallets(1, "alldown"),), "08001", max_s=2)
            s = stats(c)
            assert [r[3] for r in s] == [1, 1], s
        rec.observed = f"{short(e, 70)} in {dt:.2f}s; failures per endpoint {[r[3] for r in s]}"


# ------------------------------------------------------------------------------------------------
# 5. node restarted mid-sweep; worker keeps ticking through faults
# ------------------------------------------------------------------------------------------------
def test_node_restarted_mid_sweep(conn, cluster, contracts, throwaway_anvil, report):
    node = throwaway_anvil.start()
    node.install_multicall3()
    c1 = Contracts.deploy_all(node)
    n = 2000
    ws = wallets(n, "restart")
    seed(conn, ws)
    before = snapshot(conn, ws)
    with report.case("node restarted mid-sweep", "refresh_stale(2000), chunk 5; anvil killed after ≥ 30 chunks, "
                     "then started again (fresh chain)",
                     "ERROR 08001/08006; rows unchanged, no wallet blamed; after restart the sweep writes all") as rec:
        cluster.set_system(rpc_url=node.url)
        c = cluster.connect(DB)
        try:
            for k, v in (("token_address", c1.token), ("staking_address", c1.staking),
                         ("delegate_manager_address", c1.delegate)):
                c.execute(f"SET audius_indexer.{k} = '{v}'")
            c.execute("SET audius_indexer.multicall_chunk_size = 5")
            c.execute("SET audius_indexer.rpc_max_retries = 0")
            c.execute("SET audius_indexer.rpc_timeout_ms = 5000")
            th, out = run_in_thread(lambda: c.execute("SELECT * FROM audius_indexer.refresh_stale(2000)").fetchone())
            wait_until(lambda: node.log_text().count("eth_call") >= 30 or not th.is_alive(), timeout=30,
                       what="30 chunks served")
            assert th.is_alive(), f"the sweep finished before the node was killed: {out}"
            node.kill()
            th.join(20)
            assert not th.is_alive()
            e = out.get("error")
            assert isinstance(e, psycopg.Error) and e.sqlstate in ("08001", "08006"), out
            assert f"127.0.0.1:{node.port}" in error_text(e)
            assert snapshot(c, ws) == before, "rows read before the node died were written"
            assert failures(c) == 0
            # the node comes back: a fresh chain, same deployer → same addresses
            node.start()
            node.install_multicall3()
            c2 = Contracts.deploy_all(node)
            assert (c2.token, c2.staking, c2.delegate) == (c1.token, c1.staking, c1.delegate)
            want = set_random_values(c2, ws, "restart")
            c.execute("RESET audius_indexer.multicall_chunk_size")
            got = counts(c, "SELECT * FROM audius_indexer.refresh_stale(2000)")
            assert got == (n, n, 0, 0), got
            assert values(c, ws) == want
            head = node.block_number()
            assert c.execute("SELECT min(blocknumber), max(blocknumber) FROM eth_wallet_balances "
                             "WHERE wallet = ANY(%s)", (ws,)).fetchone() == (head, head)
        finally:
            c.close()
        rec.observed = f"{short(e, 70)}; rows unchanged; after restart {got}"


def _sweep_lock_free(c) -> bool:
    return c.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = 1",
                     (0x41554449,)).fetchone()[0] == 0


def test_worker_keeps_ticking_through_faults(cluster, db, contracts, proxy, report):
    """The session cluster's worker (database `audius`) sweeps through 503s, hangs and garbage:
    every tick fails cleanly (logged, recorded), rows stay unchanged, the same process keeps going,
    and the rows are corrected once the fault clears."""
    ws = wallets(20, "worker")
    want = set_random_values(contracts, ws, "worker")
    db.execute("DELETE FROM eth_wallet_balances WHERE wallet = ANY(%s)", (ws,))
    seed(db, ws, updated_at="1800-01-01")
    before = snapshot(db, ws)
    mark = len(cluster.log_text())
    phases = [("http503", {}, "HTTP 503"), ("hang", {}, "did not answer"), ("garbage", {}, "not JSON")]
    with report.case("worker through faults", "worker every 300 ms; 503, then hang, then garbage (1.5 s each), "
                     "then cleared", "each phase: ticks fail + logged, rows unchanged, same worker pid; "
                     "then rows corrected") as rec:
        try:
            pid = wait_until(lambda: (r := db.execute(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'audius_indexer sweep'").fetchone()) and r[0],
                timeout=15, what="the sweep worker (restarted 5 s after a start before `audius` existed)")
            proxy.fault(phases[0][0])
            cluster.set_system(sweep_enabled=True, sweep_interval="300ms", sweep_batch_size=20,
                               rpc_max_retries=0, rpc_timeout_ms=500)
            seen = []
            for i, (mode, params, text) in enumerate(phases):
                if i:
                    proxy.clear_faults()
                    proxy.fault(mode, **params)
                m = len(cluster.log_text())
                wait_until(lambda: cluster.log_text()[m:].count("sweep tick failed") >= 2, timeout=6,
                           what=f"two failed ticks under {mode}")
                seg = cluster.log_text()[m:]
                assert text in seg, seg[-1500:]
                assert snapshot(db, ws) == before, f"rows changed under {mode}"
                seen.append(f"{mode}: {seg.count('sweep tick failed')} failed ticks")
            st = db.execute("SELECT last_error FROM audius_indexer.sweep_status").fetchone()[0]
            assert st and "not JSON" in st, st
            assert_no_secret(st, "sweep_status.last_error")
            t0 = db.execute("SELECT ticks FROM audius_indexer.sweep_status").fetchone()[0]
            proxy.clear_faults()
            wait_until(lambda: values(db, ws) == want, timeout=8, interval=0.1, what="rows corrected")
            assert db.execute("SELECT ticks FROM audius_indexer.sweep_status").fetchone()[0] > t0
            assert db.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'audius_indexer sweep'"
                              ).fetchone()[0] == pid, "the worker was restarted"
            assert db.execute("SELECT count(*) FROM audius_indexer.wallet_failures WHERE wallet = ANY(%s)",
                              (ws,)).fetchone()[0] == 0
        finally:
            cluster.set_system(sweep_enabled=False)
            proxy.clear_faults()
            wait_until(lambda: _sweep_lock_free(db), timeout=10, what="the worker to finish its tick")
            db.execute("DELETE FROM eth_wallet_balances WHERE wallet = ANY(%s)", (ws,))
        log = cluster.log_text()[mark:]
        assert "terminated by signal" not in log
        rec.observed = "; ".join(seen) + f"; corrected after clear; pid {pid} unchanged"


def worker_pid(conn):
    r = conn.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'audius_indexer sweep'").fetchone()
    return r[0] if r else None


def test_worker_sigterm_mid_hang(cluster, db, proxy, report):
    """SIGTERM reaches a worker stuck in a hung RPC (rpc_timeout_ms 50 s): it exits within a poll
    slice, nothing crashes, and the postmaster starts a new one."""
    ws = wallets(5, "sigterm")
    db.execute("DELETE FROM eth_wallet_balances WHERE wallet = ANY(%s)", (ws,))
    seed(db, ws, updated_at="1800-01-01")
    with report.case("worker SIGTERM mid-RPC", "worker's eth_call hangs (rpc_timeout_ms=50 s); SIGTERM",
                     "worker exits < 1.5 s (exit code 1, not a signal), restarted; rows unchanged") as rec:
        try:
            pid = wait_until(lambda: worker_pid(db), timeout=15, what="the sweep worker")
            proxy.reset()
            proxy.fault("hang")
            cluster.set_system(sweep_enabled=True, sweep_interval="200ms", sweep_batch_size=5,
                               rpc_max_retries=0, rpc_timeout_ms="50s")
            wait_until(lambda: proxy.http_requests >= 1, timeout=5, what="the worker's hung request")
            time.sleep(0.3)
            t0 = time.monotonic()
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: exited(pid), timeout=1.5, interval=0.01, what="the worker to exit after SIGTERM")
            dt = time.monotonic() - t0
            new = wait_until(lambda: (p := worker_pid(db)) and p != pid and p, timeout=10, what="worker restart")
            log = cluster.log_text()
            assert f"(PID {pid}) exited with exit code 1" in log, "the worker must exit cleanly"
            assert f"(PID {pid}) was terminated by signal" not in log
            assert snapshot(db, ws)[0][1] == str(SENTINEL)
        finally:
            cluster.set_system(sweep_enabled=False)
            proxy.clear_faults()
            wait_until(lambda: _sweep_lock_free(db), timeout=10, what="the worker to finish its tick")
            db.execute("DELETE FROM eth_wallet_balances WHERE wallet = ANY(%s)", (ws,))
        rec.observed = f"exited {dt:.2f}s after SIGTERM (exit code 1); new worker {new}"


def test_drop_database_while_worker_idles(cluster, db, report):
    """The worker must absorb ProcSignalBarriers (CHECK_FOR_INTERRUPTS in its loop): DROP DATABASE
    of any database waits for every process to absorb PROCSIGNAL_BARRIER_SMGRRELEASE."""
    with report.case("DROP DATABASE, worker idle", "worker running, sweep_enabled = off; "
                     "CREATE + DROP DATABASE rpcfault_scratch (statement_timeout 5 s)",
                     "DROP DATABASE completes in < 5 s") as rec:
        wait_until(lambda: db.execute("SELECT count(*) FROM pg_stat_activity "
                                      "WHERE backend_type = 'audius_indexer sweep'").fetchone()[0] == 1,
                   timeout=15, what="the sweep worker")
        assert db.execute("SHOW audius_indexer.sweep_enabled").fetchone() == ("off",)
        with cluster.connect() as c:
            c.execute("DROP DATABASE IF EXISTS rpcfault_scratch")
            c.execute("CREATE DATABASE rpcfault_scratch")
            c.execute("SET statement_timeout = '5s'")
            pid, seen = c.info.backend_pid, []

            def peek():
                time.sleep(2)
                with cluster.connect() as p:
                    seen.append(p.execute("SELECT wait_event FROM pg_stat_activity WHERE pid = %s",
                                          (pid,)).fetchone())
            th = threading.Thread(target=peek, daemon=True)
            th.start()
            t0 = time.monotonic()
            try:
                c.execute("DROP DATABASE rpcfault_scratch")
            except psycopg.Error as e:
                th.join(3)
                rec.observed = (f"{short(e, 60)} after {time.monotonic() - t0:.1f}s; wait_event at 2 s: "
                                f"{seen[0][0] if seen and seen[0] else '?'}")
                raise AssertionError(f"DROP DATABASE did not complete: {e.sqlstate} {e}") from None
            rec.observed = f"dropped in {time.monotonic() - t0:.2f}s"
