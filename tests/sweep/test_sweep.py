"""The stale sweep inside the database (the Go eth-indexer's stale sweep, AudiusProject/api
`eth/indexer`, moved in) — upsert rules, block stamping, poison rows, single
flight, the background worker (SIGHUP/SIGTERM/kill -9/node down) and pg_cron.

This module runs its own anvil, proxy and cluster (the worker connects to database `postgres`,
where pg_cron lives too), so worker ticks never disturb the other modules' request counts.
"""
from __future__ import annotations

import os
import random
import signal
import threading
import time

import psycopg
import pytest

from conftest import wait_until
from harness.chain import Anvil, Contracts, wallet_address
from harness.pg import Cluster, cron_cluster, enable_paths, exited, load_audius_tables
from harness.rpcproxy import RpcProxy


class Env:
    def __init__(self):
        self.anvil = Anvil()
        self.proxy: RpcProxy | None = None
        self.cluster: Cluster | None = None
        self.contracts: Contracts | None = None
        self.killed: list[int] = []          # PIDs killed on purpose (kill -9 test)

    def start(self):
        self.anvil.start()
        self.anvil.install_multicall3()
        self.contracts = Contracts.deploy_all(self.anvil)
        self.proxy = RpcProxy(self.anvil.url).start()
        c = cron_cluster("sweep", {
            "audius_indexer.database": "'postgres'",
            "audius_indexer.sweep_enabled": "off",
            "audius_indexer.sweep_interval": "'1s'",
            "audius_indexer.sweep_batch_size": "200",
            "audius_indexer.rpc_timeout_ms": "2000",
            "audius_indexer.rpc_max_retries": "0",
        })
        c.init().start()
        self.cluster = c
        with c.connect() as conn:
            conn.execute("CREATE EXTENSION pg_cron")
            conn.execute("CREATE EXTENSION audius_indexer")
            enable_paths(conn, "sweep")  # its worker still off: sweep_enabled
        c.set_system(rpc_url=self.proxy.url, token_address=self.contracts.token,
                     staking_address=self.contracts.staking,
                     delegate_manager_address=self.contracts.delegate)
        return self

    def conn(self) -> psycopg.Connection:
        return self.cluster.connect()

    def stop(self):
        if self.cluster:
            self.cluster.destroy()
        if self.proxy:
            self.proxy.stop()
        self.anvil.destroy()


@pytest.fixture(scope="module")
def env():
    e = Env()
    try:
        yield e.start()
        e.cluster.assert_log_clean(ignore_pids=e.killed)
    finally:
        e.stop()


@pytest.fixture
def conn(env):
    """A connection on an empty eth_wallet_balances with the worker off."""
    env.cluster.set_system(sweep_enabled=False)
    with env.conn() as c:
        c.execute("TRUNCATE eth_wallet_balances, audius_indexer.wallet_failures")
        c.execute("SELECT audius_indexer.reset_sweep_status()")
    env.proxy.clear_faults()
    env.proxy.reset()
    c = env.conn()
    try:
        yield c
    finally:
        c.close()
        env.proxy.clear_faults()


def wallets(n: int, salt: str) -> list[str]:
    return [wallet_address(i, salt).lower() for i in range(n)]


def seed_rows(conn, ws: list[str], updated_at: str = "1970-01-01", balance: int = 123456789,
              block=None) -> None:
    conn.execute(
        "INSERT INTO eth_wallet_balances (wallet, balance, blocknumber, updated_at) "
        "SELECT w, %s, %s, %s::timestamp FROM unnest(%s::text[]) AS w",
        (balance, block, updated_at, ws))


def set_random_values(contracts: Contracts, ws: list[str], rng: random.Random) -> dict[str, int]:
    tok = [rng.randrange(0, 10**24) for _ in ws]
    stk = [rng.randrange(0, 10**22) for _ in ws]
    dlg = [rng.randrange(0, 10**21) for _ in ws]
    contracts.set_values(ws, token=tok, staked=stk, delegated=dlg)
    return {w: t + s + d for w, t, s, d in zip(ws, tok, stk, dlg)}


def balances(conn, ws: list[str]) -> dict[str, tuple]:
    rows = conn.execute("SELECT wallet, balance, blocknumber FROM eth_wallet_balances WHERE wallet = ANY(%s)",
                        (ws,)).fetchall()
    return {r[0]: (int(r[1]), r[2]) for r in rows}


def counts(conn, sql: str, args=()) -> tuple[int, int, int, int]:
    return tuple(conn.execute(sql, args).fetchone())


# ------------------------------------------------------------------------------------------------
# the Go eth-indexer's upsert, five cases (eth/indexer/eth_indexer_test.go), against real PostgreSQL
# ------------------------------------------------------------------------------------------------
UPSERT = "SELECT count(*) FROM audius_indexer.upsert_wallet_balances(%s::text[], %s::numeric[], %s::bigint[])"


def test_go_indexer_upsert_block_semantics(conn):
    addr = "0x1234567890123456789012345678901234567890"

    def up(bal, block):
        conn.execute(UPSERT, ([addr], [bal], [block]))
        r = conn.execute("SELECT balance::text, blocknumber FROM eth_wallet_balances WHERE wallet = %s",
                         (addr,)).fetchone()
        return r

    assert up(100, 12345) == ("100", 12345)      # event with block N → stored
    assert up(200, 0) == ("200", 12345)          # stale refresh, block 0 → balance updates, block kept
    assert up(300, 100) == ("300", 12345)        # lower block → no regression
    assert up(400, 99999) == ("400", 99999)      # higher block → advances


def test_go_indexer_upsert_insert_with_null_block(conn):
    addr = "0xabcdefabcdefabcdefabcdefabcdefabcdefabcd"
    conn.execute(UPSERT, ([addr], [500], [0]))
    assert conn.execute("SELECT balance::text, blocknumber FROM eth_wallet_balances WHERE wallet = %s",
                        (addr,)).fetchone() == ("500", None)


# ------------------------------------------------------------------------------------------------
# refresh_wallets / refresh_stale semantics
# ------------------------------------------------------------------------------------------------
def test_refresh_stale_writes_read_block_and_matches_chain(env, conn):
    ws = wallets(120, "stamp")
    want = set_random_values(env.contracts, ws, random.Random(3))
    seed_rows(conn, ws)
    c = counts(conn, "SELECT * FROM audius_indexer.refresh_stale(200)")
    assert c == (120, 120, 0, 0)
    head = env.anvil.block_number()
    got = balances(conn, ws)
    assert {w: v[0] for w, v in got.items()} == want
    assert {v[1] for v in got.values()} == {head}, "rows carry the block they were read at"
    assert env.proxy.count(aggregate3=True) == 1


def test_stale_write_guard_skips_rows_stamped_newer(env, conn):
    ws = wallets(3, "guard")
    set_random_values(env.contracts, ws, random.Random(4))
    head = env.anvil.block_number()
    seed_rows(conn, ws[:1], balance=42, block=head + 1000)     # newer than anything the node has
    seed_rows(conn, ws[1:], balance=42, block=1)
    c = counts(conn, "SELECT * FROM audius_indexer.refresh_stale(10)")
    assert c == (3, 2, 0, 1), c
    got = balances(conn, ws)
    assert got[ws[0]] == (42, head + 1000), "a newer-stamped row is never overwritten by an older read"
    assert got[ws[1]][0] != 42 and got[ws[2]][0] != 42
    st = conn.execute("SELECT last_skipped, last_updated FROM audius_indexer.sweep_status").fetchone()
    assert st == (1, 2)


def test_event_path_min_blocks(env, conn):
    ws = wallets(3, "event")
    want = set_random_values(env.contracts, ws, random.Random(5))
    head = env.anvil.block_number()
    # a lagging node: the read (at head) is older than the event block → not written
    c = counts(conn, "SELECT * FROM audius_indexer.refresh_wallets(%s, %s)",
               (ws, [head + 5, None, head]))
    assert c == (3, 2, 0, 1)
    got = balances(conn, ws)
    assert ws[0] not in got and got[ws[1]] == (want[ws[1]], head) and got[ws[2]] == (want[ws[2]], head)
    # duplicates (any case) are one wallet; the largest min_block wins
    c = counts(conn, "SELECT * FROM audius_indexer.refresh_wallets(%s, %s)",
               ([ws[0], ws[0].upper().replace("0X", "0x")], [None, head + 5]))
    assert c == (1, 0, 0, 1)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="min_blocks has 1 entries but wallets has 2"):
        conn.execute("SELECT * FROM audius_indexer.refresh_wallets(%s, %s)", (ws[:2], [1]))
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="position 2"):
        conn.execute("SELECT * FROM audius_indexer.refresh_wallets(%s)", ([ws[0], "0xnope"],))


def test_whole_call_failure_is_not_blamed_on_wallets(env, conn):
    ws = wallets(5, "down")
    seed_rows(conn, ws)
    env.proxy.fault("http503", methods=["eth_call"])
    with pytest.raises(psycopg.Error) as e:
        conn.execute("SELECT * FROM audius_indexer.refresh_stale(10)")
    assert e.value.sqlstate == "08P01" and "503" in str(e.value)
    env.proxy.clear_faults()
    assert conn.execute("SELECT count(*) FROM audius_indexer.wallet_failures").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM eth_wallet_balances WHERE balance = 123456789").fetchone()[0] == 5


def test_poison_rows_do_not_stall_the_sweep(env, conn):
    poison = wallets(200, "poison")
    good = wallets(300, "good")
    want = set_random_values(env.contracts, good, random.Random(6))
    env.contracts.set_revert(poison, "token", True)
    try:
        seed_rows(conn, poison, updated_at="1970-01-01 00:00")      # head of the queue
        seed_rows(conn, good, updated_at="1970-01-02 00:00")
        totals = [0, 0, 0, 0]
        for _ in range(12):
            c = counts(conn, "SELECT * FROM audius_indexer.refresh_stale(50)")
            totals = [a + b for a, b in zip(totals, c)]
        got = balances(conn, good)
        assert {w: v[0] for w, v in got.items()} == want, "every other stale wallet was refreshed"
        assert totals[2] == 200, totals          # each poison wallet failed once, then was backed off
        rows = conn.execute(
            "SELECT reason, attempts, next_attempt > now() + interval '30 seconds', first_failure <= last_failure "
            "FROM audius_indexer.wallet_failures WHERE wallet = ANY(%s)", (poison,)).fetchall()
        assert len(rows) == 200
        assert all("balanceOf reverted" in r[0] and "MockAudioToken" in r[0] for r in rows), rows[0]
        assert all(r[1] == 1 and r[2] and r[3] for r in rows)
        assert conn.execute("SELECT wallets_in_backoff FROM audius_indexer.sweep_status").fetchone()[0] == 200
        # poison balances were never touched
        assert {v[0] for v in balances(conn, poison).values()} == {123456789}
        # a later success clears the record
        env.contracts.set_revert(poison[:10], "token", False)
        conn.execute("UPDATE audius_indexer.wallet_failures SET next_attempt = now() - interval '1s' "
                     "WHERE wallet = ANY(%s)", (poison[:10],))
        c = counts(conn, "SELECT * FROM audius_indexer.refresh_stale(10)")
        assert c == (10, 10, 0, 0)
        assert conn.execute("SELECT count(*) FROM audius_indexer.wallet_failures WHERE wallet = ANY(%s)",
                            (poison[:10],)).fetchone()[0] == 0
        # a second failure doubles the back-off
        conn.execute("UPDATE audius_indexer.wallet_failures SET next_attempt = now() - interval '1s' "
                     "WHERE wallet = ANY(%s)", (poison[10:20],))
        conn.execute("SELECT * FROM audius_indexer.refresh_stale(10)")
        r = conn.execute("SELECT min(attempts), max(attempts), "
                         "min(extract(epoch FROM next_attempt - last_failure)) FROM audius_indexer.wallet_failures "
                         "WHERE wallet = ANY(%s)", (poison[10:20],)).fetchone()
        assert r[0] == r[1] == 2 and 119 <= float(r[2]) <= 121, r
    finally:
        env.contracts.set_revert(poison, "token", False)


def test_invalid_stored_wallets_are_backed_off_not_fatal(env, conn):
    ws = wallets(2, "valid")
    upper = "0x" + ws[0][2:].upper()
    seed_rows(conn, ws + ["not-a-wallet", "0x12", upper])
    c = counts(conn, "SELECT * FROM audius_indexer.refresh_stale(10)")
    assert c == (5, 2, 3, 0)
    reasons = dict(conn.execute("SELECT wallet, reason FROM audius_indexer.wallet_failures").fetchall())
    assert "not a valid address" in reasons["not-a-wallet"] and "0x12" in reasons
    assert "not in the lowercase form" in reasons[upper]


def test_batch_bounds(conn):
    for bad in (0, -1, 100_001):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="batch must be between 1 and 100000"):
            conn.execute("SELECT * FROM audius_indexer.refresh_stale(%s)", (bad,))


def test_single_flight(env, conn, ):
    ws = wallets(100, "flight")
    want = set_random_values(env.contracts, ws, random.Random(7))
    seed_rows(conn, ws)
    # slow the first eth_call down so the two calls overlap
    env.proxy.fault("delay", times=1, methods=["eth_call"], ms=1500)
    results: dict[str, tuple] = {}
    errors: list[BaseException] = []

    def run(name):
        try:
            with env.conn() as c:
                t = time.time()
                r = counts(c, "SELECT * FROM audius_indexer.refresh_stale(100)")
                results[name] = (r, time.time() - t)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    a = threading.Thread(target=run, args=("a",))
    a.start()
    wait_until(lambda: env.proxy.count(method="eth_call") >= 1, what="first sweep's eth_call")
    b = threading.Thread(target=run, args=("b",))
    b.start()
    a.join(30)
    b.join(30)
    assert not errors, errors
    assert results["a"][0] == (100, 100, 0, 0)
    assert results["b"][0] == (0, 0, 0, 0), "the overlapping call found the work taken"
    assert results["b"][1] < 1.0, "and returned at once, without queueing"
    assert env.proxy.count(aggregate3=True) == 1, "each wallet was read once"
    assert {w: v[0] for w, v in balances(conn, ws).items()} == want


def test_event_path_not_blocked_by_a_running_sweep(env, conn):
    ws = wallets(20, "noblock")
    set_random_values(env.contracts, ws, random.Random(8))
    seed_rows(conn, ws)
    env.proxy.fault("hang", times=1, methods=["eth_call"])
    done = threading.Event()

    def sweep():
        with env.conn() as c:
            try:
                c.execute("SELECT * FROM audius_indexer.refresh_stale(20)")
            except psycopg.Error:
                pass
        done.set()

    t = threading.Thread(target=sweep)
    t.start()
    wait_until(lambda: env.proxy.count(method="eth_call") >= 1, what="sweep's eth_call")
    start = time.time()
    c = counts(conn, "SELECT * FROM audius_indexer.refresh_wallets(%s)", (ws[:5],))
    assert c == (5, 5, 0, 0) and time.time() - start < 1.0, "the event path does not wait on the sweep"
    env.proxy.clear_faults()
    done.wait(10)
    t.join(10)


# ------------------------------------------------------------------------------------------------
# the background worker
# ------------------------------------------------------------------------------------------------
def worker_pid(conn) -> int | None:
    r = conn.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'audius_indexer sweep'").fetchone()
    return r[0] if r else None


def ticks(env) -> int:
    with env.conn() as c:
        return c.execute("SELECT ticks FROM audius_indexer.sweep_status").fetchone()[0]


def test_worker_corrects_1000_rows_within_15s(env, conn):
    ws = wallets(1000, "worker")
    want = set_random_values(env.contracts, ws, random.Random(9))
    seed_rows(conn, ws)      # updated_at 1970-01-01, wrong balances
    pid = worker_pid(conn)
    assert pid, "the worker runs when preloaded"
    r = conn.execute("SELECT application_name FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    assert r[0] == "audius_indexer sweep"
    start = time.time()
    env.cluster.set_system(sweep_enabled=True, sweep_interval="1s", sweep_batch_size=200)

    def all_correct():
        got = balances(conn, ws)
        return len(got) == 1000 and all(got[w][0] == want[w] for w in ws)

    wait_until(all_correct, timeout=15, interval=0.2, what="worker to correct 1,000 rows")
    took = time.time() - start
    print(f"worker corrected 1,000 rows in {took:.2f}s")
    # independent eth_calls, made by the test
    for w in ws:
        t, s, d = env.contracts.independent_total(w)
        assert balances(conn, [w])[w][0] == t + s + d
    assert worker_pid(conn) == pid
    assert "audius_indexer sweep: requested=200 updated=200" in env.cluster.log_text()


def test_worker_sighup_sigterm_and_kill9(env, conn):
    env.cluster.set_system(sweep_enabled=True, sweep_interval="500ms", sweep_batch_size=10)
    pid = wait_until(lambda: worker_pid(conn), what="worker")
    t0 = ticks(env)
    time.sleep(2.2)
    fast = ticks(env) - t0
    assert fast >= 3, f"{fast} ticks in 2.2 s at 500 ms"
    # SIGHUP: a new interval applies without a restart
    env.cluster.set_system(sweep_interval="1h")
    time.sleep(0.8)
    t1 = ticks(env)
    time.sleep(2.0)
    assert ticks(env) == t1, "no tick at a 1 h interval"
    assert worker_pid(conn) == pid, "same process: reloaded, not restarted"
    env.cluster.set_system(sweep_interval="500ms")
    wait_until(lambda: ticks(env) > t1, timeout=5, what="tick after interval back to 500 ms")
    # SIGTERM: gone within 1 s, restarted by the postmaster
    t = time.time()
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: exited(pid),
               timeout=1.0, interval=0.01, what="worker to exit after SIGTERM")
    print(f"worker exited {time.time() - t:.3f}s after SIGTERM")
    new = wait_until(lambda: (p := worker_pid(conn)) and p != pid and p, timeout=15, what="worker restart")
    t2 = ticks(env)
    wait_until(lambda: ticks(env) > t2, timeout=5, what="ticks after restart")
    # kill -9: PostgreSQL resets all sessions (its own behaviour), then ticking resumes
    env.killed.append(new)
    os.kill(new, signal.SIGKILL)
    time.sleep(1)
    wait_until(lambda: _try_ticks(env) is not None, timeout=30, what="cluster back after crash recovery")
    t3 = _try_ticks(env)
    newer = wait_until(lambda: _try(lambda: worker_pid(env.conn())), timeout=20, what="worker after kill -9")
    assert newer not in (pid, new)
    wait_until(lambda: (_try_ticks(env) or 0) > t3, timeout=10, what="ticking resumes after kill -9")
    env.cluster.set_system(sweep_enabled=False)


def _try(f):
    try:
        return f()
    except psycopg.Error:
        return None


def _try_ticks(env):
    return _try(lambda: ticks(env))


def test_worker_survives_node_down_and_catches_up(env, conn):
    ws = wallets(50, "outage")
    env.cluster.set_system(sweep_enabled=True, sweep_interval="500ms", sweep_batch_size=50)
    pid = wait_until(lambda: worker_pid(conn), what="worker")
    mark = len(env.cluster.log_text())
    env.anvil.stop()                                  # the node is down: connections refused
    with env.conn() as c:
        seed_rows(c, ws)
    time.sleep(10)
    log = env.cluster.log_text()[mark:]
    assert log.count("sweep tick failed") >= 3, log[-2000:]
    # through the proxy a dead node is a 502 from the proxy; directly it is "connection refused"
    assert "answered HTTP 502" in log or "cannot connect to RPC host" in log
    assert worker_pid(conn) == pid, "the worker kept running"
    with env.conn() as c:
        assert c.execute("SELECT last_error FROM audius_indexer.sweep_status").fetchone()[0]
        assert c.execute("SELECT count(*) FROM audius_indexer.wallet_failures").fetchone()[0] == 0, \
            "a node outage is not blamed on the wallets"
    # the node comes back (a fresh chain: same deployer, same nonces → same addresses). While it is
    # being provisioned the proxy keeps answering 502, so no tick sees a half-deployed chain.
    env.proxy.fault("http502")
    env.anvil.start()
    env.anvil.install_multicall3()
    again = Contracts.deploy_all(env.anvil)
    assert (again.token, again.staking, again.delegate) == (env.contracts.token, env.contracts.staking,
                                                             env.contracts.delegate)
    want = set_random_values(env.contracts, ws, random.Random(10))
    env.proxy.clear_faults()
    wait_until(lambda: all(balances(conn, ws).get(w, (None,))[0] == want[w] for w in ws), timeout=10,
               interval=0.2, what="catch-up after the node returns")
    env.cluster.set_system(sweep_enabled=False)


# ------------------------------------------------------------------------------------------------
# pg_cron and DROP EXTENSION
# ------------------------------------------------------------------------------------------------
def test_pg_cron_drives_the_sweep(env, conn):
    ws = wallets(30, "cron")
    want = set_random_values(env.contracts, ws, random.Random(11))
    seed_rows(conn, ws)
    job = conn.execute("SELECT cron.schedule('audius-sweep', '* * * * *', "
                       "'SELECT audius_indexer.refresh_stale(50)')").fetchone()[0]
    try:
        start = time.time()
        wait_until(lambda: all(balances(conn, ws)[w][0] == want[w] for w in ws), timeout=75, interval=0.5,
                   what="pg_cron job to refresh stale rows")
        print(f"pg_cron refreshed the stale rows after {time.time() - start:.1f}s")
        st = conn.execute("SELECT status FROM cron.job_run_details WHERE jobid = %s ORDER BY start_time DESC "
                          "LIMIT 1", (job,)).fetchone()
        assert st and st[0] == "succeeded"
    finally:
        conn.execute("SELECT cron.unschedule(%s)", (job,))


def test_pg_cron_drives_the_follower_and_the_challenge_processors(env, conn):
    """pg_cron works for the event path and the challenge processors too (issues 9 and 10): one job
    each; within a minute a transfer is followed into eth_wallet_balances and a user_events row
    completes challenge m."""
    env.cluster.set_system(follow_interval=0, challenges_interval=0)  # pg_cron is the only driver
    a, b = wallets(2, "cron-follow")
    env.contracts.set_values([a, b], [10**18, 0], [0, 0], [0, 0])
    seed_rows(conn, [b], balance=0)
    conn.execute("DELETE FROM eth_indexer_checkpoints WHERE name = 'audio_transfers'")
    conn.execute("SELECT * FROM audius_indexer.follow_transfers()")  # first boot: starts at the head
    load_audius_tables(conn, eth=False)
    jobs = []
    try:
        conn.execute("INSERT INTO user_events (blocknumber, is_current, user_id, is_mobile_user) VALUES (7, true, 4242, true)")
        rcpt = env.contracts.transfer(a, b, 10**17)
        block = int(rcpt["blockNumber"], 16)
        for name, cmd in (("audius-follow", "SELECT * FROM audius_indexer.follow_transfers()"),
                          ("audius-challenges", "SELECT * FROM audius_indexer.process_user_event_challenges()")):
            jobs.append(conn.execute("SELECT cron.schedule(%s, '* * * * *', %s)", (name, cmd)).fetchone()[0])
        wait_until(lambda: balances(conn, [b])[b][0] == 10**17 and balances(conn, [b])[b][1] >= block
                   and conn.execute("SELECT count(*) FROM user_challenges WHERE challenge_id = 'm' AND user_id = 4242")
                   .fetchone()[0] == 1, timeout=75, interval=0.5, what="both pg_cron jobs to run")
        for job in jobs:
            st = conn.execute("SELECT status FROM cron.job_run_details WHERE jobid = %s ORDER BY start_time DESC "
                              "LIMIT 1", (job,)).fetchone()
            assert st and st[0] == "succeeded", (job, st)
    finally:
        for job in jobs:
            conn.execute("SELECT cron.unschedule(%s)", (job,))
        conn.execute("DROP TABLE IF EXISTS user_challenges, challenges, notification, challenge_disbursements, "
                     "sol_reward_disbursements, reward_manager_txs, reward_codes, users, challenge_listen_streak, "
                     "user_score_features, user_events, indexing_checkpoints CASCADE")
        conn.execute("DROP TYPE IF EXISTS challengetype")
        conn.execute("DROP SEQUENCE IF EXISTS notification_id_seq")
        env.cluster.set_system(follow_interval=None, challenges_interval=None)


def test_drop_and_create_extension_keeps_rows(env, conn):
    ws = wallets(25, "keep")
    seed_rows(conn, ws, balance=77)
    conn.execute("DROP EXTENSION audius_indexer")
    assert conn.execute("SELECT count(*) FROM eth_wallet_balances").fetchone()[0] == 25
    conn.execute("CREATE EXTENSION audius_indexer")
    assert conn.execute("SELECT count(*), min(balance), max(balance) FROM eth_wallet_balances").fetchone() \
        == (25, 77, 77)
    assert conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'eth_wallet_balances_updated_at_idx'"
                        ).fetchone()[0] == 1
