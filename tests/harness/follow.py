"""Helpers of tests/follow/test_follow.py (the event path): a chain of our own (anvil + Multicall3
+ the mock contracts + a recording proxy), a preloaded cluster whose database is built like an Audius
discovery database (users, associated_wallets loaded BEFORE the extension), an independent model of
the range plan and its bisection, and small readers of the follower's state.

Nothing here uses the extension's code: ranges and bisection are written out from the issue text
("ranges of log_range_blocks; a refused range is bisected down to one block"), balances come from
plain eth_calls (Contracts.independent_total).
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

import pytest

from harness.chain import Anvil, Contracts
from harness.databases import idle_audius_cluster
from harness.pg import Cluster
from harness.rpcproxy import RpcProxy

# the follower's single flight: pg_try_advisory_lock(0x41554449, 4) ("AUDI", 4)
LOCK_CLASSID, LOCK_OBJID = 0x4155_4449, 4
STATUS_COLS = ("checkpoint", "head", "lag_blocks", "last_from_block", "last_to_block", "last_logs",
               "last_candidates", "last_tracked", "last_updated", "last_skipped", "last_failed",
               "pending_wallets", "last_error", "last_error_at", "last_step_finished", "steps", "reorgs",
               "last_reorg_block", "last_reorg_ancestor")
ROW_COLS = ("from_block", "to_block", "logs", "candidates", "tracked", "updated", "skipped", "failed",
            "checkpoint")
# what the Audius triggers of the fixture say when they swallow an error (a failed test, always)
AUDIUS_TRIGGER_WARNING = re.compile(r"WARNING:\s+An error occurred in")


# --------------------------------------------------------------------------------------------
# a chain of our own
# --------------------------------------------------------------------------------------------
@dataclass
class Chain:
    anvil: Anvil
    contracts: Contracts
    proxy: RpcProxy

    def close(self) -> None:
        try:
            self.proxy.stop()
        finally:
            self.anvil.destroy()


def own_chain(anvil: Anvil | None = None) -> Chain:
    """Starts `anvil` (or a new silent one), installs Multicall3, deploys the mock contracts and puts
    a recording proxy in front of it. The caller closes it."""
    node = anvil or Anvil()
    node.start()
    try:
        node.install_multicall3()
        contracts = Contracts.deploy_all(node)
        proxy = RpcProxy(node.url).start()
    except BaseException:
        node.destroy()
        raise
    return Chain(node, contracts, proxy)


@pytest.fixture(scope="module")
def chain():
    """A chain of the test module's own (`own_chain()`), closed after the module. Import it into a
    test module to use it."""
    ch = own_chain()
    try:
        yield ch
    finally:
        ch.close()


def point_at(cluster: Cluster, chain: Chain, **extra) -> None:
    cluster.set_system(rpc_url=chain.proxy.url, token_address=chain.contracts.token,
                       staking_address=chain.contracts.staking,
                       delegate_manager_address=chain.contracts.delegate, **extra)


def audius_cluster(name: str, db: str, settings: dict[str, str] | None = None) -> Cluster:
    """A started cluster, audius_indexer preloaded, `db` built like an Audius discovery database
    (tests/sql/audius_fixture_schema.sql: users; tests/sql/audius_eth_fixture.sql: associated_wallets
    with its lowercasing trigger, eth_wallet_balances with on_eth_wallet_balance_changes ->
    eth_user_balances, eth_indexer_checkpoints) and only then the extension; every worker of the
    extension connected to `db`, the sweep and the challenge processors off, the follower off until
    a test sets follow_interval. The caller destroys it."""
    c = idle_audius_cluster(name, db, {
        # a commit must survive a crash restart (kill -9 of a worker): the harness default
        # synchronous_commit = off loses the last commits with the WAL buffers
        "synchronous_commit": "on",
        **(settings or {}),
    })
    try:
        c.restart()  # the workers connect to `db` at once
    except BaseException:
        c.destroy()
        raise
    return c


# --------------------------------------------------------------------------------------------
# the oracle
# --------------------------------------------------------------------------------------------
def expected_total(contracts: Contracts, wallet: str) -> int:
    """balanceOf + totalStakedFor + getTotalDelegatorStake by three separate eth_calls (latest)."""
    parts = contracts.independent_total(wallet)
    assert None not in parts, f"oracle read failed for {wallet}: {parts}"
    return sum(parts)


def plan_ranges(a: int, b: int, size: int) -> list[tuple[int, int]]:
    out = []
    while a <= b:
        e = min(a + size - 1, b)
        out.append((a, e))
        a = e + 1
    return out


def planned_requests(a: int, b: int, size: int, limit: int | None) -> list[tuple[tuple[int, int], bool]]:
    """The eth_getLogs requests one step over [a, b] makes, in order, when the node refuses every
    range wider than `limit` blocks (None: refuses nothing): [((from, to), refused)]. A refused range
    is split into halves [from, mid], [mid+1, to] (mid = from + (to-from)//2), left first; a refused
    single block ends the plan (the step fails)."""
    out = []
    work = list(reversed(plan_ranges(a, b, size)))
    while work:
        f, t = work.pop()
        refused = limit is not None and t - f + 1 > limit
        out.append(((f, t), refused))
        if refused:
            if t == f:
                break
            mid = f + (t - f) // 2
            work.append((mid + 1, t))
            work.append((f, mid))
    return out


# --------------------------------------------------------------------------------------------
# the follower's state
# --------------------------------------------------------------------------------------------
def follow_lock_held(conn) -> bool:
    return conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::oid "
        "AND objid = %s::oid AND objsubid = 2)", (LOCK_CLASSID, LOCK_OBJID)).fetchone()[0]


def wait_follow_idle(conn, timeout: float = 60.0) -> None:
    """Waits until no follower step holds the single flight (twice in a row, 0.3 s apart)."""
    deadline = time.time() + timeout
    quiet = 0
    while quiet < 2:
        if follow_lock_held(conn):
            quiet = 0
        else:
            quiet += 1
        if time.time() > deadline:
            raise TimeoutError("a follower step still holds the single flight")
        if quiet < 2:
            time.sleep(0.3)


def reset_follow_state(conn) -> None:
    conn.execute("TRUNCATE public.eth_wallet_balances, audius_indexer.follow_pending, "
                 "audius_indexer.follow_blocks, audius_indexer.wallet_failures")
    conn.execute("DELETE FROM public.eth_indexer_checkpoints WHERE name = 'audio_transfers'")
    conn.execute("UPDATE audius_indexer.follow_state SET last_error = NULL, last_error_at = NULL")


def step(conn, max_blocks=None) -> dict:
    rows = conn.execute("SELECT * FROM audius_indexer.follow_transfers(%s)", (max_blocks,)).fetchall()
    assert len(rows) == 1, f"follow_transfers() returned {rows}"
    return dict(zip(ROW_COLS, rows[0]))


def status(conn) -> dict:
    r = conn.execute(f"SELECT {', '.join(STATUS_COLS)} FROM audius_indexer.follow_status").fetchone()
    return dict(zip(STATUS_COLS, r))


def checkpoint(conn) -> int | None:
    r = conn.execute("SELECT last_block FROM public.eth_indexer_checkpoints WHERE name = 'audio_transfers'"
                     ).fetchone()
    return None if r is None else r[0]


def set_checkpoint(conn, block: int) -> None:
    conn.execute("INSERT INTO public.eth_indexer_checkpoints (name, last_block) VALUES ('audio_transfers', %s) "
                 "ON CONFLICT (name) DO UPDATE SET last_block = EXCLUDED.last_block", (block,))


def balances(conn) -> dict[str, tuple[int, int | None]]:
    return {w: (int(b), n) for w, b, n in conn.execute(
        "SELECT wallet, balance, blocknumber FROM public.eth_wallet_balances").fetchall()}


def get_logs(proxy: RpcProxy, answered: bool | None = None) -> list[tuple[int, int]]:
    """(fromBlock, toBlock) of every eth_getLogs the proxy saw, in order; answered=True: only those
    the proxy let through (no fault applied), False: only the faulted ones."""
    return [r.log_range for r in proxy.select(method="eth_getLogs")
            if answered is None or (r.fault is None) == answered]


def log_addresses(record) -> list[str]:
    """The lowercase addresses an eth_getLogs record filtered on: the filter's `address` may be one
    string or a JSON array of strings (the follower asks for several contracts in one request)."""
    a = record.log_address
    if a is None:
        return []
    return [x.lower() for x in ([a] if isinstance(a, str) else a)]


class _Poller:
    """Calls `poll(conn)` every 20 ms in a thread of its own, on a connection of its own that it
    opens again after an error (a crash restart drops it; the error is kept in `errors`)."""
    thread_name = "follow-poller"

    def __init__(self, conninfo: str):
        self.conninfo = conninfo
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True, name=self.thread_name)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join(10)

    def poll(self, conn) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        import psycopg
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.conninfo, autocommit=True)
                self.poll(conn)
            except Exception as e:  # noqa: BLE001 - a crash restart drops the connection
                self.errors.append(repr(e))
                conn = None
                time.sleep(0.2)
            time.sleep(0.02)
        if conn is not None:
            conn.close()


class StepRecorder(_Poller):
    """Polls follow_state every 20 ms in a thread of its own and keeps one entry per finished step
    (steps counter, last_from_block, last_to_block). A worker step lasts far longer than 20 ms apart
    from the next (follow_interval >= 1 s), so none is missed; `missed` says if one was."""
    thread_name = "follow-step-recorder"

    def __init__(self, conninfo: str):
        super().__init__(conninfo)
        self.steps: list[tuple[int, int | None, int | None]] = []
        self.missed = 0
        self._last: int | None = None
        self._ready = threading.Event()

    def __enter__(self) -> "StepRecorder":
        super().__enter__()
        if not self._ready.wait(10):
            raise TimeoutError(f"StepRecorder could not read follow_state: {self.errors}")
        return self

    def poll(self, conn) -> None:
        n, f, t = conn.execute("SELECT steps, last_from_block, last_to_block FROM audius_indexer.follow_state"
                               ).fetchone()
        if self._last is None:
            self._last = n
            self._ready.set()
        elif n != self._last:
            if n != self._last + 1:
                self.missed += n - self._last - 1
            self.steps.append((n, f, t))
            self._last = n


class CheckpointRecorder(_Poller):
    """Polls the checkpoint (20 ms) and keeps (time, checkpoint) samples; `committed_before(t)` is the
    highest checkpoint seen committed before time t (a lower bound of the truth)."""
    thread_name = "follow-checkpoint-recorder"

    def __init__(self, conninfo: str):
        super().__init__(conninfo)
        self.samples: list[tuple[float, int]] = []

    def poll(self, conn) -> None:
        r = conn.execute("SELECT last_block FROM public.eth_indexer_checkpoints "
                         "WHERE name = 'audio_transfers'").fetchone()
        t1 = time.time()  # the snapshot was taken before t1: committed by then
        if r is not None:
            self.samples.append((t1, r[0]))

    def committed_before(self, t: float) -> int | None:
        seen = [c for (s, c) in self.samples if s < t]
        return max(seen) if seen else None
