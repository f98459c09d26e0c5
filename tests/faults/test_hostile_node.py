"""A hostile node (suite table "A hostile node" in docs/reliability.md).

The RPC proxy in front of anvil answers one JSON-RPC method with values no honest node sends (heads of 2^63-1 and beyond, headers for another block, logs outside the asked
range or from another contract, cut ABI payloads, ...); `eth_call` and everything else stays real
(anvil). Every mode goes through every entry point — follow_transfers(), CALL sweep(),
refresh_stale(10), refresh_wallets(...), multicall_total_audio_balances(...), doctor() — and through
the follow and sweep background workers (10 s each, a cluster per mode, all modes at once).

Pass means:
- no backend crashed, nothing PANICked (the server log slice of the case);
- an entry point that was served the hostile answer (the proxy records it) fails with ERROR 08P01
  naming the host (127.0.0.1:<port>) and never the URL's secret path/query, before the
  statement_timeout guard; doctor(), which never raises, reports that endpoint's check as failed;
- a refused answer changes nothing: eth_wallet_balances, eth_indexer_checkpoints,
  audius_indexer.follow_blocks / follow_pending / wallet_failures are as before;
- an entry point the mode does not concern (never served the hostile answer) succeeds, or fails
  cleanly (a SQLSTATE other than XX000, no secret);
- two modes are tolerable rather than invalid, and may also be accepted: a log with
  `removed: true` (ignored: its wallet is never acted on) and 100,000 logs in one answer (processed);
- the workers: the same pids in pg_stat_activity before and after 10 s, no crash, the step / tick
  failing and recorded (follow_status.last_error, sweep_status.last_error, naming the host, no
  secret), nothing written by a refused answer, and no hot loop (bounded request rate).

A head of 2^63-1 is refused like the unrepresentable ones: no chain reaches it, and taken as the
head it would plan ranges into blocks the node does not have and, remembered as the highest head
seen, switch off the max_block_ahead guard for the rest of the backend's life (the "head memory"
cases check that).

Crash containment: every cluster here is the suite's own (none is the session cluster), started
under `prlimit --as` (3 GiB per process: a runaway allocation aborts that backend quickly instead of
filling the machine's memory), and every case opens a fresh connection after waiting for the
cluster to accept connections again, so a crash fails its own case only.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import json
import subprocess
import threading
import time
from dataclasses import dataclass, field

import psycopg
import pytest

from conftest import SECRET_PATH, SECRETS, crash_lines, rpc_proxy_fixture
from harness.chain import wallet_address
from harness.pg import PG_BIN, Cluster, _as_postgres
from harness.rpcproxy import RpcProxy
from harness.reliability import Report, crash_or_secret_lines, error_text, short
from harness.suites import report_fixture

pytestmark = pytest.mark.timeout(180)

DB = "hostile"
SENTINEL = 123456789
GUARD_S = 20                 # statement_timeout of every call
AS_LIMIT = 3 << 30           # address-space limit of every server process of the suite
WORKER_WINDOW_S = 10.0       # how long the workers run against the hostile proxy
MAX_REQ_PER_S = 25           # more than this per second against the hostile proxy is a hot loop
HOST_RE = "127.0.0.1:{port}"

CRASHES: list[str] = []      # crash lines seen by any case (the table's header counts them)


# ------------------------------------------------------------------------------------------------
# the modes
# ------------------------------------------------------------------------------------------------
@dataclass
class Mode:
    id: str
    method: str                  # the JSON-RPC method answered with the hostile value
    what: str                    # the table's "fault / input" column
    fault: str                   # RpcProxy mode
    params: dict = field(default_factory=dict)
    tolerable: bool = False      # may be accepted (see the module doc)

    def install(self, proxy: RpcProxy, ctx: "Ctx") -> None:
        params = dict(self.params)
        if params.get("value") == "HEAD_AS_JSON_NUMBER":
            params["value"] = ctx.anvil.block_number()
        if params.get("holder") == "TX":
            params["holder"] = ctx.tx
        methods = self.method if self.fault in ("result",) else None
        proxy.fault(self.fault, methods=methods, **params)


def _head(id_, value, what):
    return Mode(id_, "eth_blockNumber", f"eth_blockNumber → {what}", "result", {"value": value})


MODES = [
    _head("head_2^63-1", "0x7fffffffffffffff", '"0x7fffffffffffffff" (2^63-1)'),
    _head("head_2^64-1", "0xffffffffffffffff", '"0xffffffffffffffff" (2^64-1)'),
    _head("head_2^256-1", "0x" + "f" * 64, '"0xff…ff" (2^256-1, 64 digits)'),
    _head("head_negative", "-0x1", '"-0x1"'),
    _head("head_non_hex", "0xzz", '"0xzz"'),
    _head("head_json_number", "HEAD_AS_JSON_NUMBER", "the head as a JSON number, not a string"),
    _head("head_null", None, "null"),
    Mode("header_number_2^63-1", "eth_getBlockByNumber", "eth_getBlockByNumber(n) → a header numbered 2^63-1",
         "bad_header", {"number": 2**63 - 1}),
    Mode("header_number_asked+1", "eth_getBlockByNumber", "eth_getBlockByNumber(n) → a header numbered n+1",
         "bad_header", {"number_delta": 1}),
    Mode("header_hash_31_bytes", "eth_getBlockByNumber", "eth_getBlockByNumber → hash of 31 bytes",
         "bad_header", {"hash_bytes": 31}),
    Mode("header_hash_33_bytes", "eth_getBlockByNumber", "eth_getBlockByNumber → hash of 33 bytes",
         "bad_header", {"hash_bytes": 33}),
    Mode("header_null", "eth_getBlockByNumber", "eth_getBlockByNumber → null", "result", {"value": None}),
    Mode("logs_above_range", "eth_getLogs", "eth_getLogs(a..b) + a Transfer to a tracked wallet at b+1",
         "bad_logs", {"block": "above", "holder": "TX"}),
    Mode("logs_below_range", "eth_getLogs", "eth_getLogs(a..b) + a Transfer to a tracked wallet at a-1",
         "bad_logs", {"block": "below", "holder": "TX"}),
    Mode("logs_other_address", "eth_getLogs", "eth_getLogs + a Transfer to a tracked wallet emitted by 0x1111…1111",
         "bad_logs", {"address": "0x" + "11" * 20, "holder": "TX"}),
    Mode("logs_block_2^63-1", "eth_getLogs", "eth_getLogs + a Transfer to a tracked wallet at block 2^63-1",
         "bad_logs", {"block": 2**63 - 1, "holder": "TX"}),
    Mode("logs_removed", "eth_getLogs", "eth_getLogs + a Transfer to a tracked wallet with removed: true",
         "bad_logs", {"removed": True, "holder": "TX"}, tolerable=True),
    Mode("logs_100k", "eth_getLogs", "eth_getLogs + 100,000 Transfer logs (≈45 MB) in the range",
         "bad_logs", {"count": 100_000}, tolerable=True),
    Mode("aggregate3_wrong_count", "eth_call", "aggregate3 → one Result3 fewer than calls",
         "wrong_result_count", {"delta": -1}),
    Mode("aggregate3_truncated", "eth_call", "aggregate3 → ABI payload cut to half its bytes",
         "truncated_abi", {}),
]
MODE_IDS = [m.id for m in MODES]
# the sweep path meets these (its block-ahead check asks the head; its reads are aggregate3 calls)
SWEEP_METHODS = {"eth_blockNumber", "eth_call"}

ENTRIES = {
    "follow_transfers": ("SELECT * FROM audius_indexer.follow_transfers()", False),
    "sweep": ("CALL audius_indexer.sweep()", False),
    "refresh_stale": ("SELECT * FROM audius_indexer.refresh_stale(10)", False),
    "refresh_wallets": ("SELECT * FROM audius_indexer.refresh_wallets(%s)", True),
    "multicall": ("SELECT * FROM audius_indexer.multicall_total_audio_balances(%s)", True),
    "doctor": ("SELECT * FROM audius_indexer.doctor()", False),
}


# ------------------------------------------------------------------------------------------------
# clusters under an address-space limit
# ------------------------------------------------------------------------------------------------
def start_limited(c: Cluster) -> Cluster:
    """pg_ctl start under `prlimit --as`: the postmaster and every process it forks (backends,
    workers, and those after a crash restart) inherit the limit."""
    _as_postgres("prlimit", f"--as={AS_LIMIT}", str(PG_BIN / "pg_ctl"), "-D", str(c.datadir),
                 "-l", str(c.logfile), "-w", "-t", "30", "start")
    c.running = True
    return c


def connect_ready(c: Cluster, db: str = DB, timeout: float = 60.0) -> psycopg.Connection:
    """A fresh connection, waiting out a crash restart (recovery) if one is under way."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return c.connect(db)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def base_settings(proxy: RpcProxy, contracts) -> dict[str, str]:
    return {
        "audius_indexer.rpc_url": f"'{proxy.url_with(SECRET_PATH)}'",
        "audius_indexer.token_address": f"'{contracts.token}'",
        "audius_indexer.staking_address": f"'{contracts.staking}'",
        "audius_indexer.delegate_manager_address": f"'{contracts.delegate}'",
    }


def prepare_db(conn) -> None:
    # a `users` table: wallets there are tracked by the follower without a balance row, so a
    # hostile log naming one is visible as a row (or a pending entry) that should not exist
    conn.execute("CREATE TABLE public.users (wallet text)")
    conn.execute("CREATE EXTENSION audius_indexer")


# ------------------------------------------------------------------------------------------------
# the chain, the wallets, the state
# ------------------------------------------------------------------------------------------------
@dataclass
class Ctx:
    anvil: object
    contracts: object
    ta: str          # sender of the one real Transfer (no row)
    tb: str          # its receiver (a row: tracked)
    ts: str          # a row only the sweep / refresh paths read
    tx: str          # in `users` only (no row): named by the made-up logs
    t_block: int     # the real Transfer's block
    cp_hash: str     # hash of block t_block - 1 (the checkpoint's)

    @property
    def checkpoint(self) -> int:
        return self.t_block - 1

    @property
    def rows(self) -> list[str]:
        return [self.tb, self.ts]


@pytest.fixture(scope="module")
def ctx(anvil, contracts) -> Ctx:
    ta, tb, ts, tx = (wallet_address(i, "hostile") for i in range(4))
    contracts.set_values([ta, tb, ts], [10**21, 10**18, 2 * 10**18], [0, 5, 6], [0, 7, 8])
    # the refresh paths ask the head only for reads above max_block_ahead (100): be above it
    if anvil.block_number() < 250:
        anvil.mine(250 - anvil.block_number())
    t_block = int(contracts.transfer(ta, tb, 10**17)["blockNumber"], 16)
    anvil.mine(3)
    cp_hash = anvil.rpc("eth_getBlockByNumber", [hex(t_block - 1), False])["hash"]
    NAMES.update({ta: "ta", tb: "tb", ts: "ts", tx: "tx"})
    return Ctx(anvil, contracts, ta, tb, ts, tx, t_block, cp_hash)


def seed(conn, ctx: Ctx) -> None:
    """Empty follower / sweep state, then: rows for tb and ts (sentinel balance, stale), tx in
    `users`, the checkpoint just below the real Transfer, and its block's hash."""
    conn.execute("TRUNCATE public.eth_wallet_balances, public.users, audius_indexer.follow_pending, "
                 "audius_indexer.follow_blocks, audius_indexer.wallet_failures")
    conn.execute("DELETE FROM public.eth_indexer_checkpoints")
    conn.execute("UPDATE audius_indexer.follow_state SET last_error = NULL, last_error_at = NULL")
    conn.execute("UPDATE audius_indexer.sweep_state SET last_error = NULL, last_error_at = NULL")
    conn.execute("INSERT INTO public.eth_wallet_balances (wallet, balance, blocknumber, updated_at) "
                 "SELECT w, %s, 1, '1900-01-01' FROM unnest(%s::text[]) w", (SENTINEL, ctx.rows))
    conn.execute("INSERT INTO public.users (wallet) VALUES (%s)", (ctx.tx,))
    conn.execute("INSERT INTO public.eth_indexer_checkpoints (name, last_block, updated_at) "
                 "VALUES ('audio_transfers', %s, '2000-01-01')", (ctx.checkpoint,))
    conn.execute("INSERT INTO audius_indexer.follow_blocks (block, hash, block_time) "
                 "VALUES (%s, %s, '2000-01-01')", (ctx.checkpoint, ctx.cp_hash))


STATE_TABLES = ("public.eth_wallet_balances", "public.eth_indexer_checkpoints", "audius_indexer.follow_blocks",
                "audius_indexer.follow_pending", "audius_indexer.wallet_failures")


def snapshot(conn) -> dict[str, list[str]]:
    return {t: [r[0] for r in conn.execute(f"SELECT to_jsonb(t)::text FROM {t} t ORDER BY 1").fetchall()]
            for t in STATE_TABLES}


NAMES: dict[str, str] = {}   # wallet -> its role (ta/tb/ts/tx), for short diffs
ROW_KEYS = {"public.eth_wallet_balances": ("wallet", "blocknumber"),
            "public.eth_indexer_checkpoints": ("last_block",), "audius_indexer.follow_blocks": ("block",),
            "audius_indexer.follow_pending": ("wallet", "min_block"), "audius_indexer.wallet_failures": ("wallet",)}


def _brief(table: str, row: str) -> str:
    d = json.loads(row)
    return "@".join(NAMES.get(str(d.get(k)), str(d.get(k))[:12]) for k in ROW_KEYS[table])


def diff(before: dict, after: dict) -> str:
    """The changed tables, with the key of each new row (wallet@block, block, …)."""
    out = []
    for t in STATE_TABLES:
        if before[t] != after[t]:
            new = [r for r in after[t] if r not in before[t]]
            gone = len([r for r in before[t] if r not in after[t]])
            out.append(f"{t.split('.')[-1]} -{gone} +[{', '.join(_brief(t, r) for r in new[:4])}]")
    return "; ".join(out)


def tx_untouched(snap: dict, ctx: Ctx) -> bool:
    return not any(ctx.tx in r for t in ("public.eth_wallet_balances", "audius_indexer.follow_pending")
                   for r in snap[t])


# ------------------------------------------------------------------------------------------------
# suite fixtures
# ------------------------------------------------------------------------------------------------
class HostileReport(Report):
    """The suite table; its header line also counts crashes (none may happen) and escalations
    (n/a: this suite has no privilege boundary to cross)."""

    def write(self):
        path = super().write()
        text = path.read_text().splitlines()
        for i, ln in enumerate(text):
            if " cases tried, " in ln:
                text[i] = ln.rstrip(".") + f"; crashes {len(CRASHES)}, escalations n/a."
                break
        path.write_text("\n".join(text) + "\n")
        return path


report = report_fixture("hostile_node", "A hostile node", HostileReport, guard=False)
hproxy = rpc_proxy_fixture()  # the SQL cases' proxy, of this module's own


@pytest.fixture(scope="module")
def hostile(hproxy, contracts, ctx):
    """The suite's own cluster for the SQL entry points (workers off), under the AS limit."""
    c = Cluster(preload=["audius_indexer"], name="hostile")
    c.settings.update({
        "audius_indexer.database": f"'{DB}'",
        "audius_indexer.sweep_enabled": "off",
        "audius_indexer.follow_interval": "0",
        "audius_indexer.challenges_interval": "0",
        "restart_after_crash": "on",
        **base_settings(hproxy, contracts),
    })
    try:
        c.init()
        start_limited(c)
        c.create_database(DB)
        with c.connect(DB) as conn:
            prepare_db(conn)
        yield c
        # crashes are failed (and counted) by the case that caused them; anything else is new
        bad = [ln for ln in crash_or_secret_lines(c.log_text()) if ln not in CRASHES]
        assert not bad, "server log shows crashes / secrets:\n" + "\n".join(bad[:20])
    finally:
        c.destroy()


# ------------------------------------------------------------------------------------------------
# running one call
# ------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    rows: list | None = None
    error: psycopg.Error | None = None
    seconds: float = 0.0
    watchdog: bool = False

    @property
    def died(self) -> bool:
        """The connection broke (the backend died) rather than the statement failing."""
        return self.error is not None and self.error.sqlstate is None


def run_call(c: Cluster, conn, entry: str, args) -> Outcome:
    """Runs one entry point with statement_timeout as the guard, and a watchdog that terminates
    the backend if even that does not end it (a loop that never checks for interrupts)."""
    sql, takes_args = ENTRIES[entry]
    pid = conn.info.backend_pid
    fired = threading.Event()

    def watchdog():
        fired.set()
        try:
            with c.connect(DB) as w:
                w.execute("SELECT pg_terminate_backend(%s)", (pid,))
        except psycopg.Error:
            pass
    timer = threading.Timer(GUARD_S + 10, watchdog)
    timer.start()
    out = Outcome()
    t0 = time.monotonic()
    try:
        cur = conn.execute(sql, (args,) if takes_args else None)
        out.rows = cur.fetchall() if cur.description else []
    except psycopg.Error as e:
        out.error = e
    finally:
        timer.cancel()
        out.seconds = time.monotonic() - t0
        out.watchdog = fired.is_set()
    return out


def settled(c: Cluster, mark: int, died: bool) -> tuple[dict, list[str]]:
    """After a call: the state, and the crash lines of the log since `mark` (added to CRASHES).
    The postmaster logs a dead backend only after the client saw its connection drop, and kills a
    connection accepted in between with the crash restart: wait and retry until the cluster has
    settled (this also makes the next case start on a recovered cluster)."""
    if died:
        time.sleep(1.0)
    deadline = time.monotonic() + 60
    while True:
        try:
            with connect_ready(c) as conn:
                snap = snapshot(conn)
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    bad = crash_lines(c.log_text()[mark:])
    CRASHES.extend(ln for ln in bad if ln not in CRASHES)
    return snap, bad


@contextlib.contextmanager
def case_session(c: Cluster, proxy: RpcProxy, ctx: Ctx):
    """One case's session on `c`, the proxy's faults cleared first: statement_timeout GUARD_S, the
    case's state seeded; yields (conn, the state before the call). Closed afterwards, even when its
    backend died."""
    proxy.clear_faults()
    conn = connect_ready(c)
    try:
        conn.execute(f"SET statement_timeout = '{GUARD_S}s'")
        seed(conn, ctx)
        yield conn, snapshot(conn)
    finally:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - the backend may be gone
            pass


def hostile_requests(proxy: RpcProxy, m: Mode) -> int:
    return sum(1 for r in proxy.requests if r.fault == m.fault)


# ------------------------------------------------------------------------------------------------
# 1. every mode through every SQL entry point
# ------------------------------------------------------------------------------------------------
CASES = [(m, e) for m in MODES for e in ENTRIES]


@pytest.mark.parametrize("m,entry", CASES, ids=[f"{m.id}-{e}" for m, e in CASES])
def test_entry_point(m: Mode, entry: str, hostile, hproxy, ctx, report):
    host = HOST_RE.format(port=hproxy.port)
    if entry == "doctor":
        expected = "rows; if served: the rpc check not ok, naming the host"
    elif m.tolerable:
        expected = "if served: 08P01 naming the host + nothing written, or accepted safely; else success"
    else:
        expected = "if served: 08P01 naming the host, no secret, nothing written; else success / clean ERROR"
    with report.case(f"{entry} / {m.id}", m.what, expected) as rec:
        mark = len(hostile.log_text())
        with case_session(hostile, hproxy, ctx) as (conn, before):
            hproxy.reset()
            m.install(hproxy, ctx)
            out = run_call(hostile, conn, entry, ctx.rows)
            hproxy.clear_faults()
            served = hostile_requests(hproxy, m)
        after, bad = settled(hostile, mark, out.died)
        if bad or out.died:
            rec.observed = (f"backend died ({'; '.join(bad[:2]) or error_text(out.error)[:150]}); "
                            f"served {served} hostile answer(s)")
        assert not bad, "server log shows a crash:\n" + "\n".join(bad[:5])
        assert not out.died, f"the connection broke: {out.error}"
        assert not out.watchdog, f"the call ignored statement_timeout ({out.seconds:.1f}s): terminated"
        changed = diff(before, after)
        text = error_text(out.error) if out.error else ""
        for s in SECRETS:
            assert s not in text, f"the error leaks {s!r}: {text[:500]}"
        if out.error is not None:
            assert out.error.sqlstate != "57014", f"hung until statement_timeout ({out.seconds:.1f}s): {text[:300]}"
            assert out.error.sqlstate != "XX000", f"internal error: {text[:300]}"

        if entry == "doctor":
            assert out.error is None, f"doctor() raised: {short(out.error)}"
            rows = {r[0]: (r[1], r[2]) for r in out.rows}
            for _, detail in rows.values():
                for s in SECRETS:
                    assert s not in detail, f"doctor() leaks {s!r}: {detail}"
            rpc = rows.get(f"rpc {host}")
            assert rpc is not None, f"no 'rpc {host}' row: {list(rows)}"
            if served:
                rec.observed = f"rpc row: ok={rpc[0]}, '{rpc[1][:110]}'"
                assert rpc[0] is False, f"served a hostile {m.method}, doctor() says ok: {rpc[1]}"
                assert host in rpc[1], f"the failed check does not name {host}: {rpc[1]}"
            else:
                rec.observed = f"not served; {len(rows)} rows, rpc ok={rpc[0]}"
            assert not changed, f"doctor() wrote: {changed}"
            return

        if not served:
            if out.error is None:
                rec.observed = f"not served ({m.method} not asked): success, {len(out.rows)} row(s)"
            else:
                rec.observed = f"not served: clean ERROR {short(out.error, 90)}"
                assert not changed, f"a failed call wrote: {changed}"
            return

        if out.error is None:
            if m.id == "logs_removed":
                rec.observed = f"accepted (removed log ignored): {out.rows[0] if out.rows else ''}; tx untouched"
                assert tx_untouched(after, ctx), f"a removed log's wallet was acted on: {changed}"
                return
            if m.id == "logs_100k":
                logs = out.rows[0][2] if entry == "follow_transfers" and out.rows else None
                rec.observed = f"accepted in {out.seconds:.1f}s: {out.rows[0] if out.rows else ''}"
                if logs is not None:
                    assert logs >= 100_000, f"100,000 logs answered, {logs} counted"
                return
            rec.observed = (f"accepted: {str(out.rows[0]) if out.rows else 'no rows'}"
                            + (f"; wrote {changed}" if changed else ""))
            raise AssertionError(f"served a hostile {m.method} answer, the call succeeded "
                                 f"({rec.observed})")
        rec.observed = f"{short(out.error, 100)} in {out.seconds:.2f}s" + ("; nothing written" if not changed
                                                                            else f"; WROTE {changed}")
        allowed = ("08P01", "54000") if m.id == "logs_100k" else ("08P01",)
        assert out.error.sqlstate in allowed, f"expected SQLSTATE {'/'.join(allowed)}, got {out.error.sqlstate}: {text[:300]}"
        assert host in text, f"the error does not name {host}: {text[:300]}"
        assert not changed, f"a refused answer changed the state: {changed}"


# ------------------------------------------------------------------------------------------------
# 2. head memory: a hostile head must not switch off the max_block_ahead guard
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["0x7fffffffffffffff", "0xffffffffffffffff"], ids=["2^63-1", "2^64-1"])
def test_head_memory_not_poisoned(value, hostile, hproxy, ctx, report):
    host = HOST_RE.format(port=hproxy.port)
    with report.case(f"head memory / {int(value, 16).bit_length()}-bit head",
                     f"one session: refresh_wallets under eth_blockNumber → {value}; then (honest heads) "
                     "Multicall3 getBlockNumber() → head + 1,000,000",
                     "both refused with 08P01 naming the host; rows unchanged") as rec:
        mark = len(hostile.log_text())
        with case_session(hostile, hproxy, ctx) as (conn, before):
            hproxy.fault("result", methods="eth_blockNumber", value=value)
            first = run_call(hostile, conn, "refresh_wallets", ctx.rows)
            hproxy.clear_faults()
            conn.execute("UPDATE public.eth_wallet_balances SET balance = %s, blocknumber = 1, "
                         "updated_at = '1900-01-01' WHERE wallet = ANY(%s)", (SENTINEL, ctx.rows))
            hproxy.fault("block_number", value=ctx.anvil.block_number() + 1_000_000)
            second = run_call(hostile, conn, "refresh_wallets", ctx.rows)
            hproxy.clear_faults()
        after, bad = settled(hostile, mark, first.died or second.died)
        assert not bad, "server log shows a crash:\n" + "\n".join(bad[:5])
        obs = [("ERROR " + short(o.error, 70)) if o.error else f"accepted {o.rows}" for o in (first, second)]
        rec.observed = f"1st: {obs[0]}; 2nd: {obs[1]}"
        for o, what in ((first, "the hostile head"), (second, "a block 1,000,000 above the head")):
            assert o.error is not None and o.error.sqlstate == "08P01", f"{what} was not refused: {obs}"
            assert host in error_text(o.error)
        assert before["public.eth_wallet_balances"] == after["public.eth_wallet_balances"], \
            f"rows written: {diff(before, after)}"


# ------------------------------------------------------------------------------------------------
# 3. the background workers, 10 s per mode (a cluster per mode, all at once)
# ------------------------------------------------------------------------------------------------
WORKERS = ("audius_indexer follow", "audius_indexer sweep")


def worker_pids(conn) -> dict[str, int]:
    return {bt: pid for bt, pid in conn.execute(
        "SELECT backend_type, pid FROM pg_stat_activity WHERE backend_type = ANY(%s)", (list(WORKERS),)).fetchall()}


@dataclass
class WorkerRun:
    mode: Mode
    proxy: RpcProxy
    cluster: Cluster | None = None
    started: float = 0.0
    pids_before: dict = field(default_factory=dict)
    base: dict = field(default_factory=dict)  # the state the cluster started from
    error: str | None = None          # the harness failed (not the extension)


@pytest.fixture(scope="module")
def worker_runs(anvil, contracts, ctx):
    """Starts one cluster per mode (copies of one template database: extension, `users`, the rows
    of the SQL cases), each behind a proxy of its own already in its hostile mode, with the follow
    worker at follow_interval = 1s and the sweep worker at 1 s; lets them run >= 10 s; yields the
    runs (checked per mode by test_workers)."""
    tpl = Cluster(preload=["audius_indexer"], name="hostiletpl")
    tpl.settings.update({"audius_indexer.database": f"'{DB}'", "audius_indexer.sweep_enabled": "off",
                         "audius_indexer.follow_interval": "0", "audius_indexer.challenges_interval": "0"})
    runs = [WorkerRun(m, RpcProxy(anvil.url).start()) for m in MODES]
    try:
        tpl.init().start()
        tpl.create_database(DB)
        with tpl.connect(DB) as conn:
            prepare_db(conn)
            seed(conn, ctx)
            # the DBA turns the two paths on (after the checkpoint is in place: the follower
            # adopts it as its own)
            conn.execute("SELECT audius_indexer.enable('sweep'), audius_indexer.enable('follow')")
            base = snapshot(conn)
        tpl.stop()

        def launch(run: WorkerRun):
            try:
                c = Cluster(preload=["audius_indexer"], name="hostilew")
                subprocess.run(["cp", "-a", str(tpl.datadir), str(c.datadir)], check=True)
                conf = {"port": str(c.port), "unix_socket_directories": f"'{c.sockdir}'",
                        "shared_buffers": "16MB", "max_connections": "20",
                        "audius_indexer.follow_interval": "'1s'", "audius_indexer.sweep_enabled": "on",
                        "audius_indexer.sweep_interval": "'1s'", "restart_after_crash": "on",
                        **base_settings(run.proxy, contracts)}
                with open(c.datadir / "postgresql.conf", "a") as f:
                    f.write("\n# --- hostile-node worker cluster ---\n")
                    for k, v in conf.items():
                        f.write(f"{k} = {v}\n")
                run.cluster = c
                run.base = base
                run.mode.install(run.proxy, ctx)
                run.proxy.reset()
                start_limited(c)
                run.started = time.monotonic()
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    with connect_ready(c) as conn:
                        run.pids_before = worker_pids(conn)
                    if len(run.pids_before) == len(WORKERS):
                        break
                    time.sleep(0.1)
            except Exception as e:  # noqa: BLE001 - reported by the mode's test
                run.error = f"{type(e).__name__}: {e}"
        with concurrent.futures.ThreadPoolExecutor(max_workers=5) as ex:
            list(ex.map(launch, runs))
        last = max((r.started for r in runs if r.started), default=time.monotonic())
        time.sleep(max(0.0, last + WORKER_WINDOW_S - time.monotonic()))
        yield runs
    finally:
        for r in runs:
            r.proxy.clear_faults()
            if r.cluster is not None:
                r.cluster.destroy()
            r.proxy.stop()
        tpl.destroy()


@pytest.mark.parametrize("m", MODES, ids=MODE_IDS)
def test_workers(m: Mode, worker_runs, ctx, report):
    run = next(r for r in worker_runs if r.mode is m)
    host = HOST_RE.format(port=run.proxy.port)
    sweep_meets = m.method in SWEEP_METHODS
    expected = ("same pids, no crash; follow fails (last_error names the host), checkpoint/blocks/pending unchanged"
                + (" — or accepts safely" if m.tolerable else "")
                + ("; sweep fails, rows unchanged" if sweep_meets else "") + f"; < {MAX_REQ_PER_S} requests/s")
    with report.case(f"workers / {m.id}", f"{m.what}; follow_interval 1s, sweep 1s, ≥ {WORKER_WINDOW_S:.0f} s",
                     expected) as rec:
        assert run.error is None, f"harness: {run.error}"
        c = run.cluster
        elapsed = time.monotonic() - run.started
        requests = run.proxy.http_requests
        served = hostile_requests(run.proxy, m)
        log = c.log_text()
        bad = crash_lines(log)
        CRASHES.extend(bad)
        with connect_ready(c) as conn:
            pids_after = worker_pids(conn)
            fstat = conn.execute("SELECT checkpoint, last_error, steps FROM audius_indexer.follow_status").fetchone()
            sstat = conn.execute("SELECT last_error, ticks FROM audius_indexer.sweep_status").fetchone()
            after = snapshot(conn)
        base = run.base
        f_err, s_err = fstat[1], sstat[0]
        wrote = diff(base, after)
        rec.observed = (f"pids {'unchanged' if pids_after == run.pids_before else f'{run.pids_before} → {pids_after}'}; "
                        f"{len(bad)} crash line(s); served {served}/{requests} requests in {elapsed:.0f}s; "
                        f"follow: checkpoint {fstat[0]}, last_error '{(f_err or '')[:90]}'; "
                        f"sweep: {sstat[1]} ticks, last_error '{(s_err or '')[:60]}'"
                        + (f"; state: {wrote}" if wrote else ""))
        assert not bad, "server log shows a crash:\n" + "\n".join(bad[:5])
        assert run.pids_before and pids_after == run.pids_before, \
            f"worker pids changed: {run.pids_before} → {pids_after}"
        leaks = crash_or_secret_lines(log)
        assert not leaks, "server log leaks a secret:\n" + "\n".join(leaks[:5])
        for s in SECRETS:
            assert s not in (f_err or "") + (s_err or ""), f"last_error leaks {s!r}"
        assert requests < MAX_REQ_PER_S * elapsed, f"{requests} requests in {elapsed:.1f}s: a hot loop"
        assert served > 0, "the workers never met the hostile answer (harness?)"

        follow_keys = ("public.eth_indexer_checkpoints", "audius_indexer.follow_blocks", "audius_indexer.follow_pending")
        follow_same = all(after[t] == base[t] for t in follow_keys) and tx_untouched(after, ctx)
        if m.tolerable and f_err is None:
            # accepted: the follower went on; a removed log's wallet must not have been acted on
            if m.id == "logs_removed":
                assert tx_untouched(after, ctx), "a removed log's wallet was acted on"
        else:
            assert f_err is not None, "follow_status.last_error is not set: the step did not fail"
            assert host in f_err, f"follow last_error does not name {host}: {f_err}"
            assert follow_same, "the follower wrote from a refused answer: " + diff(base, after)
        if sweep_meets:
            assert s_err is not None, "sweep_status.last_error is not set: the tick did not fail"
            assert host in s_err, f"sweep last_error does not name {host}: {s_err}"
            assert after["public.eth_wallet_balances"] == base["public.eth_wallet_balances"], \
                "rows written from a refused answer: " + diff(base, after)

