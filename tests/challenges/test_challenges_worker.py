"""The challenge processors (the Go challenge job's m, r, rv, rd, `jobs/index_challenges.go`) in
the background worker.

A cluster of its own (audius_indexer preloaded, both workers connected to `chw`, the Audius fixture
with user_events/indexing_checkpoints, the Rust on_user_challenge trigger installed):
- the "audius_indexer challenges" worker runs process_user_event_challenges() every
  challenges_interval: rows inserted into user_events become user_challenges rows and the status
  view shows the run; doctor() reports the worker and each processor;
- challenges_interval = 0 switches it off (SIGHUP, no restart);
- it is a process of its own: while a processor run is blocked (user_challenges locked by another
  session), the sweep worker keeps ticking; when the lock goes, the processors catch up;
- a processor that fails is logged as a WARNING by the worker, recorded in the status view and
  doctor(); the others go on.

Each test starts from a settled worker (two runs completed since it began, nothing pending) and
writes its rows at blocks above everything already there (`base`), so the tests hold in any order
and alone.
"""
from __future__ import annotations

import time

import pytest

from conftest import wait_until
from harness.chain import wallet_address
from harness.pg import load_audius_tables, worker_cluster

pytestmark = pytest.mark.timeout(240)

DB = "chw"


@pytest.fixture(scope="module")
def chw(proxy, contracts):
    c = worker_cluster("chw", DB, proxy.url, contracts)
    try:
        with c.connect(DB) as conn:
            load_audius_tables(conn, eth=False)
            conn.execute("SELECT audius_indexer.install_triggers()")
        c.set_system(challenges_interval="500ms")
        yield c
    finally:
        c.destroy()


def processor_rows(conn):
    return {r[0]: r[1:] for r in conn.execute(
        "SELECT challenge_id, runs, errors, last_error, checkpoint FROM audius_indexer.challenge_processor_status")}


def total_runs(conn) -> int:
    return sum(r[0] or 0 for r in processor_rows(conn).values())


@pytest.fixture
def base(chw) -> int:
    """The worker on (500 ms) and settled: two more runs of the four processors completed since
    now, so nothing an earlier test left is still in flight. Returns a block above every
    user_events / users row and every checkpoint (a multiple of 100): the test's rows go at
    base + k, after everything already processed, whatever ran before."""
    chw.set_system(challenges_interval="500ms", sweep_enabled=False)
    with chw.connect(DB) as conn:
        runs = total_runs(conn)
        wait_until(lambda: total_runs(conn) >= runs + 2 * 4, timeout=20, what="two runs of the worker")
        top = conn.execute(
            "SELECT greatest((SELECT max(blocknumber) FROM user_events), (SELECT max(blocknumber) FROM users), "
            "(SELECT max(last_checkpoint) FROM indexing_checkpoints WHERE tablename LIKE 'challenges:%'), 0)"
        ).fetchone()[0]
    return (top // 100 + 1) * 100


def test_worker_processes_new_user_events(chw, base):
    with chw.connect(DB) as conn:
        conn.execute("INSERT INTO users (user_id, wallet, is_current, is_verified, txhash, blocknumber) "
                     "VALUES (900, '0xAbC', true, true, 'u900', %s)", (base + 10,))
        conn.execute("INSERT INTO user_events (blocknumber, is_current, user_id, referrer, is_mobile_user) "
                     "VALUES (%s, true, 901, 900, true)", (base + 11,))
        wait_until(lambda: conn.execute("SELECT count(*) FROM user_challenges WHERE user_id IN (900, 901)")
                   .fetchone()[0] == 3, timeout=20, what="m, rv, rd rows from the worker")
        got = sorted(conn.execute("SELECT challenge_id, user_id, specifier, is_complete FROM user_challenges "
                                  "WHERE user_id IN (900, 901)").fetchall())
        assert got == [("m", 901, "385", True), ("rd", 901, "385:384", True), ("rv", 900, "384:385", True)]
        cps = dict(conn.execute("SELECT tablename, last_checkpoint FROM indexing_checkpoints").fetchall())
        for p in ("m", "rv", "rd"):
            assert cps[f"challenges:{p}:last_blocknumber"] == base + 11
        # the Rust trigger fed by the worker's upserts: one reward_in_cooldown per user per hour
        n = dict(conn.execute("SELECT user_ids[1], count(*) FROM notification WHERE type = 'reward_in_cooldown' "
                              "AND user_ids[1] IN (900, 901) GROUP BY 1").fetchall())
        assert n == {900: 1, 901: 1}
        backends = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'audius_indexer challenges' "
                                "AND datname = current_database()").fetchone()[0]
        assert backends == 1
        doc = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT * FROM audius_indexer.doctor()")}
        assert doc["challenges worker"][0] is True and "running, pid" in doc["challenges worker"][1]
        for p in ("m", "r", "rv", "rd"):
            ok, detail = doc[f"challenge processor {p}"]
            assert ok, detail
        assert doc["challenge processor rv"][1].startswith(f"checkpoint {base + 11}, lag 0 blocks"), doc


def test_interval_zero_switches_it_off(chw, base):
    with chw.connect(DB) as conn:
        chw.set_system(challenges_interval="0")
        time.sleep(1.5)  # a run that was already due may still finish
        before = processor_rows(conn)
        conn.execute("INSERT INTO user_events (blocknumber, is_current, user_id, is_mobile_user) "
                     "VALUES (%s, true, 902, true)", (base + 20,))
        time.sleep(2.5)
        assert processor_rows(conn) == before
        assert conn.execute("SELECT count(*) FROM user_challenges WHERE user_id = 902").fetchone()[0] == 0
        doc = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT * FROM audius_indexer.doctor()")}
        assert doc["challenges worker"][0] is True
        chw.set_system(challenges_interval="500ms")
        wait_until(lambda: conn.execute("SELECT count(*) FROM user_challenges WHERE user_id = 902").fetchone()[0] == 1,
                   timeout=20, what="worker back on")


def test_blocked_processor_does_not_delay_the_sweep(chw, base, contracts):
    ws = [wallet_address(i, "chw") for i in range(5)]
    contracts.set_values(ws, [7] * 5, [0] * 5, [0] * 5)
    with chw.connect(DB) as conn, chw.connect(DB, autocommit=False) as locker:
        conn.execute("INSERT INTO eth_wallet_balances (wallet, balance, blocknumber, updated_at) "
                     "SELECT w, 0, 1, '1950-01-01' FROM unnest(%s::text[]) w ON CONFLICT (wallet) DO NOTHING", (ws,))
        locker.execute("LOCK TABLE user_challenges IN ACCESS EXCLUSIVE MODE")
        conn.execute("INSERT INTO user_events (blocknumber, is_current, user_id, is_mobile_user) "
                     "VALUES (%s, true, 903, true)", (base + 30,))
        wait_until(lambda: conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'audius_indexer challenges' "
            "AND wait_event_type = 'Lock'").fetchone()[0] == 1, timeout=20, what="processor run blocked on the lock")
        ticks0 = conn.execute("SELECT ticks FROM audius_indexer.sweep_status").fetchone()[0]
        chw.set_system(sweep_enabled=True)
        try:
            wait_until(lambda: conn.execute("SELECT ticks FROM audius_indexer.sweep_status").fetchone()[0] >= ticks0 + 3,
                       timeout=20, what="sweep ticks while the processors are blocked")
            assert conn.execute("SELECT count(*) FROM eth_wallet_balances WHERE wallet = ANY(%s) AND balance = 7",
                                (ws,)).fetchone()[0] == 5
            # still blocked: the sweep did not wait for it
            assert conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'audius_indexer challenges' "
                                "AND wait_event_type = 'Lock'").fetchone()[0] == 1
        finally:
            chw.set_system(sweep_enabled=False)
            locker.rollback()
        wait_until(lambda: conn.execute("SELECT count(*) FROM user_challenges WHERE user_id = 903").fetchone()[0] == 1,
                   timeout=20, what="processors catch up after the lock")


def test_failing_processor_is_logged_and_reported(chw, base):
    with chw.connect(DB) as conn:
        rd_before = processor_rows(conn)["rd"][3]
        log_mark = len(chw.log_text())
        conn.execute("ALTER TABLE user_challenges ADD CONSTRAINT chw_no_rd CHECK (challenge_id <> 'rd' OR user_id <> 904)")
        try:
            conn.execute("INSERT INTO users (user_id, is_current, is_verified, txhash, blocknumber) "
                         "VALUES (905, true, false, 'u905', %s)", (base + 39,))
            conn.execute("INSERT INTO user_events (blocknumber, is_current, user_id, referrer, is_mobile_user) "
                         "VALUES (%s, true, 904, 905, true)", (base + 40,))
            wait_until(lambda: processor_rows(conn)["rd"][2] is not None, timeout=20, what="rd failure recorded")
            rows = processor_rows(conn)
            assert "23514" in rows["rd"][2] and "chw_no_rd" in rows["rd"][2]
            # the others went on: m and r rows exist, rd's checkpoint stayed behind
            got = sorted(conn.execute("SELECT challenge_id FROM user_challenges WHERE user_id IN (904, 905)").fetchall())
            assert got == [("m",), ("r",)]
            assert (rows["rd"][3], rows["m"][3]) == (rd_before, base + 40), rows
            doc = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT * FROM audius_indexer.doctor()")}
            assert doc["challenge processor rd"][0] is False and "chw_no_rd" in doc["challenge processor rd"][1]
            wait_until(lambda: "processor rd failed: 23514" in chw.log_text()[log_mark:], timeout=10,
                       what="worker WARNING")
        finally:
            conn.execute("ALTER TABLE user_challenges DROP CONSTRAINT chw_no_rd")
        wait_until(lambda: conn.execute("SELECT count(*) FROM user_challenges WHERE challenge_id = 'rd' AND user_id = 904")
                   .fetchone()[0] == 1, timeout=20, what="rd recovers")
        doc = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT * FROM audius_indexer.doctor()")}
        assert doc["challenge processor rd"][0] is True
