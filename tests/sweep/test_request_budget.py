"""The request budget (`audius_indexer.rpc_max_requests_per_second`, cutover day): one token bucket
per endpoint host in shared memory, taken by every HTTP attempt of every backend, of the pipeline's
helper threads and of the three workers.

A cluster of its own (audius_indexer preloaded, its database built like an Audius discovery
database) in front of a chain of its own behind a recording proxy, with everything busy at once:

- the sweep worker on a 200 ms interval, batch 1000 over 2000 stale rows, multicall_chunk_size 10
  (100 aggregate3 calls per tick, 4 in flight on helper threads);
- the follower on a 200 ms interval from block 0 with log_range_blocks 1 over ~5000 blocks
  (eth_getLogs + eth_getBlockByNumber per block, aggregate3 for the tracked wallets' transfers);
- the challenge processors on a 200 ms interval (no RPC: they must not be slowed either);
- four sessions looping multicall_total_audio_balances (50 wallets, chunk 10) and refresh_wallets.

Without a cap that load is far above CAP requests/s (measured, so the test can fail); with
`rpc_max_requests_per_second = CAP`, over a 30 s window after a warm-up, the proxy receives at most
1.1 · CAP · 30 requests (the bucket allows CAP · 30 + CAP), in no second more than the burst allows,
and still close to the cap (the budget throttles, it does not starve); no statement fails because
of it. Then: a wait for a token still honours statement_timeout, pg_cancel_backend (the waits of
the helper threads included) and a worker's SIGTERM.
"""
from __future__ import annotations

import threading
import time

import psycopg
import pytest

from conftest import wait_until
from harness.follow import audius_cluster, chain, point_at
from harness.chain import to_checksum, wallet_address

pytestmark = pytest.mark.timeout(420)

DB = "budget"
CAP = 20
WINDOW = 30.0
N_STALE = 2000
N_TRACKED = 20
CHAIN_BLOCKS = 5000
SESSIONS = 4


def enable_all(conn) -> bool:
    """audius_indexer.enable(path) for the three paths, when the installed build has it (older
    builds act on the GUCs alone). Returns whether it exists."""
    has = conn.execute("SELECT to_regprocedure('audius_indexer.enable(text)') IS NOT NULL").fetchone()[0]
    if has:
        for p in ("sweep", "follow", "challenges"):
            conn.execute("SELECT audius_indexer.enable(%s)", (p,))
    return has


@pytest.fixture(scope="module")
def tracked(chain):
    """Tracked wallets with Transfer events spread over the first ~2000 blocks, then empty blocks
    up to CHAIN_BLOCKS: the follower has thousands of one-block ranges to read."""
    a, c = chain.anvil, chain.contracts
    ws = [wallet_address(i, "budget-tracked") for i in range(N_TRACKED)]
    c.set_values(ws, [10**24 + i for i in range(N_TRACKED)], [i for i in range(N_TRACKED)],
                 [0] * N_TRACKED)
    for i in range(40):
        a.mine(50)
        c.transfer(ws[i % N_TRACKED], ws[(i + 1) % N_TRACKED], 10**15 + i)
    a.mine(max(1, CHAIN_BLOCKS - a.block_number()))
    return ws


@pytest.fixture(scope="module")
def busy(chain, tracked):
    """The cluster, every path on and busy (workers only: the sessions are the test's)."""
    c = audius_cluster("budget", DB)
    try:
        with c.connect(DB) as conn:
            for i, w in enumerate(tracked):
                conn.execute("INSERT INTO users (user_id, wallet, is_current, txhash) VALUES (%s, %s, true, '')",
                             (i + 1, to_checksum(w)))
            conn.execute(
                "INSERT INTO eth_wallet_balances (wallet, balance, updated_at) "
                "SELECT w, 0, '1970-01-01' FROM unnest(%s::text[]) w ON CONFLICT DO NOTHING",
                ([wallet_address(i, "budget-stale") for i in range(N_STALE)],))
            c.enable_switch = enable_all(conn)
        point_at(c, chain,
                 rpc_max_requests_per_second=0,
                 multicall_chunk_size=10,
                 sweep_batch_size=1000,
                 sweep_interval="200ms",
                 sweep_enabled=True,
                 follow_from_block=0,
                 log_range_blocks=1,
                 follow_interval="200ms",
                 challenges_interval="200ms")
        yield c
        c.assert_log_clean()
    finally:
        c.destroy()


class Sessions:
    """SESSIONS connections looping multicall_total_audio_balances and refresh_wallets (50 wallets
    each, chunk 10: 5 aggregate3 calls per statement, on helper threads)."""

    def __init__(self, cluster, n: int = SESSIONS):
        self.cluster, self.n = cluster, n
        self.stop = threading.Event()
        self.done = [0] * n
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)]

    def _run(self, i: int) -> None:
        ws = [wallet_address(1000 * i + k, "budget-session") for k in range(50)]
        try:
            with self.cluster.connect(DB) as conn:
                conn.execute("SET audius_indexer.multicall_chunk_size = 10")
                k = 0
                while not self.stop.is_set():
                    if k % 2 == 0:
                        n = conn.execute("SELECT count(*) FROM audius_indexer.multicall_total_audio_balances(%s)",
                                         (ws,)).fetchone()[0]
                        assert n == len(ws), n
                    else:
                        conn.execute("SELECT * FROM audius_indexer.refresh_wallets(%s)", (ws,)).fetchall()
                    self.done[i] += 1
                    k += 1
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append(f"session {i}: {type(e).__name__}: {e}")

    def __enter__(self) -> "Sessions":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)
        assert not any(t.is_alive() for t in self.threads), "a session did not finish its statement"


def window(proxy, seconds: float) -> tuple[list, float, float]:
    """Resets the proxy's records, waits `seconds`, returns (records received within the window,
    its start, its end)."""
    proxy.reset()
    t0 = time.time()
    time.sleep(seconds)
    t1 = time.time()
    return [r for r in proxy.requests if t0 <= r.time < t1], t0, t1


def http_times(recs) -> list[float]:
    """Receipt time of each HTTP request (a JSON-RPC batch would share one)."""
    first: dict[int, float] = {}
    for r in recs:
        first.setdefault(r.http_index, r.time)
    return sorted(first.values())


def max_in_any(times: list[float], span: float) -> int:
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - span:
            j += 1
        best = max(best, i - j + 1)
    return best


def by_kind(recs) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in recs:
        k = "aggregate3" if r.aggregate3 else (r.method or "?")
        out[k] = out.get(k, 0) + 1
    return out


def activity(conn) -> tuple[int, int | None]:
    """(sweep ticks, the follower's checkpoint)."""
    ticks = conn.execute("SELECT ticks FROM audius_indexer.sweep_status").fetchone()[0] or 0
    cp = conn.execute("SELECT last_block FROM public.eth_indexer_checkpoints WHERE name = 'audio_transfers'"
                      ).fetchone()
    return ticks, cp and cp[0]


def test_the_budget_caps_every_path_server_wide(busy, chain):
    proxy = chain.proxy
    conn = busy.connect(DB)
    try:
        with Sessions(busy) as s:
            # -- no cap: the same load is far above CAP/s (else this test could not fail)
            time.sleep(3)
            free, f0, f1 = window(proxy, 10.0)
            free_rate = len(http_times(free)) / (f1 - f0)
            free_kinds = by_kind(free)
            print(f"no cap: {len(http_times(free))} requests in {f1 - f0:.1f} s = {free_rate:.0f}/s {free_kinds}")
            assert free_rate > 3 * CAP, f"the load without a cap ({free_rate:.1f}/s) does not exceed the cap"
            for kind in ("aggregate3", "eth_getLogs", "eth_getBlockByNumber"):
                assert free_kinds.get(kind, 0) > 0, (kind, free_kinds)

            # -- capped: ≤ 1.1·CAP·WINDOW over the window after a warm-up
            busy.set_system(rpc_max_requests_per_second=CAP)
            time.sleep(5)
            done_before = list(s.done)
            act_before = activity(conn)
            recs, t0, t1 = window(proxy, WINDOW)
            act_after = activity(conn)
            done_in_window = [b - a for a, b in zip(done_before, s.done)]
            times = http_times(recs)
            secs = t1 - t0
            kinds = by_kind(recs)
            per_second = max_in_any(times, 1.0)
            per_5s = max_in_any(times, 5.0)
            print(f"cap {CAP}/s: {len(times)} requests in {secs:.1f} s = {len(times) / secs:.1f}/s "
                  f"(limit {1.1 * CAP * secs:.0f}); most in any 1 s: {per_second}, any 5 s: {per_5s}; {kinds}; "
                  f"statements per session {done_in_window}; sweep ticks {act_before[0]}→{act_after[0]}, "
                  f"follow checkpoint {act_before[1]}→{act_after[1]}")
            assert len(times) <= 1.1 * CAP * secs, f"{len(times)} requests in {secs:.1f} s at a cap of {CAP}/s"
            # the bucket: at most rate·T + burst in any window (receipt times jitter a little)
            assert per_second <= 2 * CAP + 3, per_second
            assert per_5s <= 5 * CAP + CAP + 3, per_5s
            # throttled, not starved: the demand is far above the cap, so the cap is nearly used
            assert len(times) >= 0.8 * CAP * secs, f"only {len(times)} requests in {secs:.1f} s"
            # everyone still got through, nobody failed because of the budget
            for kind in ("aggregate3", "eth_getLogs", "eth_getBlockByNumber"):
                assert kinds.get(kind, 0) > 0, (kind, kinds)
            assert all(d > 0 for d in done_in_window), done_in_window
            assert (act_after[1] or 0) > (act_before[1] or 0), ("the follower advanced", act_before, act_after)
        assert not s.errors, s.errors
        # the workers' steps did not fail either
        errs = conn.execute("SELECT last_error FROM audius_indexer.sweep_status").fetchone()[0]
        assert errs is None, errs
        ferr = conn.execute("SELECT last_error FROM audius_indexer.follow_status").fetchone()[0]
        assert ferr is None, ferr
    finally:
        conn.close()


def test_waiting_for_a_token_honours_timeout_cancel_and_sigterm(busy, chain):
    """At 1 request/s with the workers busy, a 40-chunk read waits for tokens on its helper threads
    (and its head check on the backend's thread) for tens of seconds: statement_timeout and
    pg_cancel_backend end it within a second; a worker waiting for tokens ends on SIGTERM."""
    busy.set_system(rpc_max_requests_per_second=1)
    ws = [wallet_address(k, "budget-cancel") for k in range(40)]
    with busy.connect(DB) as conn, busy.connect(DB) as other:
        conn.execute("SET audius_indexer.multicall_chunk_size = 1")
        time.sleep(2)  # the workers have drained the bucket
        conn.execute("SET statement_timeout = '700ms'")
        t = time.time()
        with pytest.raises(psycopg.errors.QueryCanceled) as ei:
            conn.execute("SELECT count(*) FROM audius_indexer.multicall_total_audio_balances(%s)", (ws,))
        took = time.time() - t
        assert took < 2.5, f"statement_timeout took {took:.2f} s ({ei.value})"
        conn.execute("SET statement_timeout = 0")

        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        errors: list[BaseException] = []
        ended = threading.Event()

        def run():
            try:
                conn.execute("SELECT * FROM audius_indexer.refresh_wallets(%s)", (ws,))
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
            ended.set()

        th = threading.Thread(target=run, daemon=True)
        th.start()
        time.sleep(1.5)
        assert not ended.is_set(), "the read should still be waiting for tokens"
        t = time.time()
        assert other.execute("SELECT pg_cancel_backend(%s)", (pid,)).fetchone()[0]
        assert ended.wait(5), "pg_cancel_backend did not end a wait for a token"
        took = time.time() - t
        th.join(5)
        assert took < 2.0, f"cancel took {took:.2f} s"
        assert errors and isinstance(errors[0], psycopg.errors.QueryCanceled), errors
        assert conn.execute("SELECT 1").fetchone() == (1,)

        # a worker waiting for tokens (sweep: 100 chunks per tick at 1/s) ends on SIGTERM
        def sweep_pid():
            r = other.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'audius_indexer sweep'"
                              ).fetchone()
            return r and r[0]

        wpid = wait_until(sweep_pid, timeout=20, what="the sweep worker")
        time.sleep(1.0)  # inside a tick of 100 chunks at 1/s: waiting for tokens
        mark = len(busy.log_text())
        t = time.time()
        assert other.execute("SELECT pg_terminate_backend(%s)", (wpid,)).fetchone()[0]
        wait_until(lambda: other.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (wpid,)
                                         ).fetchone()[0] == 0, timeout=5, interval=0.02,
                   what="the sweep worker to exit")
        took = time.time() - t
        assert took < 2.0, f"SIGTERM took {took:.2f} s"
        wait_until(lambda: "audius_indexer sweep worker stopping" in busy.log_text()[mark:]
                   or "terminating" in busy.log_text()[mark:], timeout=5, what="the worker's exit in the log")
    busy.set_system(rpc_max_requests_per_second=0)
