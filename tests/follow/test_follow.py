"""The event path — follow_transfers() follows AUDIO Transfer logs from the checkpoint (as the Go
eth-indexer, AudiusProject/api `eth/indexer`, does).

Two settings:
- the session cluster (database `audius`, the session anvil with the mock token that emits
  Transfer, the recording proxy): single steps called from SQL (the session's follow worker is
  switched off for each test, follow_interval = 0, and waited for);
- a cluster of our own (`own`: database `audiusf` built like an Audius discovery database — users,
  associated_wallets, eth_wallet_balances with its triggers — before the extension) on a chain of
  each test's own (anvil + Multicall3 + mocks + a recording proxy): the background worker's
  backfill, the reorg (evm_snapshot / evm_revert), kill -9 of the worker and a node outage.

Every expected balance comes from three independent eth_calls (balanceOf + totalStakedFor +
getTotalDelegatorStake, Contracts.independent_total); every expected eth_getLogs range from an
independent model of the plan (harness.follow.plan_ranges / planned_requests).
"""
from __future__ import annotations

import math
import os
import random
import signal
import time

import psycopg
import pytest

from conftest import wait_until
from harness.follow import (AUDIUS_TRIGGER_WARNING, CheckpointRecorder, StepRecorder, audius_cluster,
                            balances, checkpoint, expected_total, get_logs, own_chain, plan_ranges,
                            planned_requests, point_at, reset_follow_state, set_checkpoint, status,
                            step, wait_follow_idle)
from harness.chain import to_checksum, wallet_address
from harness.pg import enable_paths

pytestmark = pytest.mark.timeout(300)

OWN_DB = "audiusf"
# Scale. The backfill is 25,000 blocks with log_range_blocks 9000; anvil 1.7.1 mines in time
# growing with the chain's height (measured here: 1,000 blocks take ~0.6 s at height 0 and ~4 s at
# height 2,000 — 25,000 blocks would take over ten minutes on this 2-core machine), so by default
# the backfill keeps the same shape (ceil((head-1)/range) = 3 ranges, the last one partial) at a
# tenth of the size. FOLLOW_BLOCKS=25000 FOLLOW_RANGE=9000 runs the numbers.
BACKFILL_BLOCKS = int(os.environ.get("FOLLOW_BLOCKS", "2500"))
BACKFILL_RANGE = int(os.environ.get("FOLLOW_RANGE", "900"))
# the range-refusal test: a span of RANGE_SPAN blocks, the node refusing ranges wider than
# RANGE_LIMIT (the 2,500 / 1,000 at a tenth: the same plan, 3 refused + 4 answered)
RANGE_SPAN, RANGE_LIMIT = 250, 100
# the kill/outage test: blocks and range size (48 ranges)
KILL_BLOCKS, KILL_RANGE = 2_401, 50
# settings a test of the own cluster may change; reset before and after each
OWN_KNOBS = ("confirmations", "log_range_blocks", "follow_from_block", "rpc_timeout_ms",
             "rpc_retry_budget_ms", "rpc_failover_cooldown_ms", "rpc_max_retries")


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------
@pytest.fixture
def fdb(db, cluster, proxy):
    """The session database with the session's follow worker off and the follower's state empty."""
    cluster.set_system(follow_interval=0)
    wait_follow_idle(db)
    reset_follow_state(db)
    proxy.clear_faults()
    proxy.reset()
    mark = len(cluster.log_text())
    yield db
    db.execute("DELETE FROM eth_indexer_checkpoints WHERE name = 'audio_transfers'")
    bad = [ln for ln in cluster.log_text()[mark:].splitlines() if AUDIUS_TRIGGER_WARNING.search(ln)]
    assert not bad, "Audius trigger WARNINGs:\n" + "\n".join(bad[:10])


@pytest.fixture(scope="module")
def own():
    c = audius_cluster("follow", OWN_DB)
    c.killed_pids = []
    try:
        yield c
        c.assert_log_clean(ignore_pids=c.killed_pids)
        bad = [ln for ln in c.log_text().splitlines() if AUDIUS_TRIGGER_WARNING.search(ln)]
        assert not bad, "Audius trigger WARNINGs:\n" + "\n".join(bad[:10])
    finally:
        c.destroy()


def _quiesce(c) -> None:
    c.set_system(follow_interval=0, **{k: None for k in OWN_KNOBS})
    with c.connect(OWN_DB) as conn:
        wait_follow_idle(conn)


@pytest.fixture
def own_db(own):
    """A connection to the own cluster's database; follower off, its state and the Audius tables
    empty. The log slice of the test must show no Audius trigger WARNING."""
    _quiesce(own)
    with own.connect(OWN_DB) as conn:
        reset_follow_state(conn)
        conn.execute("TRUNCATE users, associated_wallets, eth_user_balances")
    mark = len(own.log_text())
    conn = own.connect(OWN_DB)
    try:
        yield conn
    finally:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - dead after a crash restart
            pass
        _quiesce(own)
        bad = [ln for ln in own.log_text()[mark:].splitlines() if AUDIUS_TRIGGER_WARNING.search(ln)]
        assert not bad, "Audius trigger WARNINGs:\n" + "\n".join(bad[:10])


def block_of(receipt: dict) -> int:
    return int(receipt["blockNumber"], 16)


def node_hash(anvil, n: int) -> str:
    return anvil.rpc("eth_getBlockByNumber", [hex(n), False])["hash"]


# --------------------------------------------------------------------------------------------
# session cluster: single steps
# --------------------------------------------------------------------------------------------
def test_first_boot_starts_at_the_head_then_follows(fdb, contracts, anvil):
    """First boot without a checkpoint starts at the head (nothing replayed), then follows: a tracked
    wallet (row present) is refreshed, untracked ones are not inserted."""
    a, b, c = (wallet_address(i, "follow-smoke") for i in range(3))
    contracts.set_values([a, b, c], [100, 0, 0], [0, 0, 0], [0, 0, 0])
    row = fdb.execute("SELECT * FROM audius_indexer.follow_transfers()").fetchone()
    head = anvil.block_number()
    assert row[0] is None and row[8] == head
    # a tracked wallet (row present) and an untracked one
    fdb.execute("INSERT INTO eth_wallet_balances (wallet, balance, blocknumber) VALUES (%s, 0, 1)", (b,))
    r1 = contracts.transfer(a, b, 30)
    r2 = contracts.transfer(b, c, 5)
    row = fdb.execute("SELECT * FROM audius_indexer.follow_transfers()").fetchone()
    assert row[2] == 2 and row[3] == 3 and row[4] == 1 and row[5] == 1, row
    assert row[8] == anvil.block_number()
    got = fdb.execute("SELECT wallet, balance, blocknumber FROM eth_wallet_balances ORDER BY wallet").fetchall()
    assert got == [(b, 25, got[0][2])] and got[0][2] >= int(r2["blockNumber"], 16)
    st = fdb.execute("SELECT checkpoint, lag_blocks, last_logs, pending_wallets, last_error FROM audius_indexer.follow_status").fetchone()
    assert st[0] == anvil.block_number() and st[1] == 0 and st[2] == 2 and st[3] == 0 and st[4] is None
    assert int(r1["blockNumber"], 16) <= st[0]


def test_first_boot_with_confirmations_stays_below_the_head(fdb, cluster, contracts, anvil, proxy):
    """First boot, confirmations = 2: the checkpoint is head - 2, its hash stored, no eth_getLogs."""
    cluster.set_system(confirmations=2)
    row = step(fdb)
    head = anvil.block_number()
    assert row["from_block"] is None and row["to_block"] is None and row["logs"] == 0
    assert row["checkpoint"] == head - 2 == checkpoint(fdb)
    assert proxy.count(method="eth_getLogs") == 0
    stored = fdb.execute("SELECT block, hash FROM audius_indexer.follow_blocks").fetchall()
    assert stored == [(head - 2, node_hash(anvil, head - 2))]
    st = status(fdb)
    assert st["lag_blocks"] == 2 and st["head"] == head and st["last_error"] is None


def test_refused_ranges_are_bisected_with_the_same_result(fdb, contracts, anvil, proxy):
    """Range errors: a node refusing eth_getLogs ranges wider than RANGE_LIMIT blocks (-32005 "query
    exceeds max block range N", an Alchemy-style -32602, HTTP 413) → the step completes with
    bisected ranges (exactly the requests of the model) and the same result as without the fault;
    a node refusing even one block → ERROR 54000, nothing written, checkpoint unchanged."""
    tracked = [wallet_address(i, "follow-range") for i in range(6)]
    untracked = [wallet_address(i, "follow-range-u") for i in range(3)]
    allw = tracked + untracked
    rng = random.Random(2)
    contracts.set_values(allw, [10**21] * 9, [rng.randrange(10**18) for _ in allw],
                         [rng.randrange(10**17) for _ in allw])
    base = anvil.block_number()
    span = RANGE_SPAN
    # every tracked wallet moves; the pairs are fixed, the gaps random (12 transfers over the span)
    pairs = [(6, 0), (0, 1), (7, 2), (2, 3), (8, 4), (4, 5), (1, 6), (3, 7), (5, 8), (0, 2), (6, 5), (1, 4)]
    last, events = {}, []
    for f, t in pairs:
        anvil.mine(rng.randrange(span // 125, span * 19 // 250))
        blk = block_of(contracts.transfer(allw[f], allw[t], rng.randrange(1, 10**18)))
        last[allw[f]] = last[allw[t]] = blk
        events.append((blk, allw[f], allw[t]))

    def expected_row(ranges):
        """Counts are per answered range: candidates = distinct from/to in the range, tracked = those
        with a row (each read and written: the head does not move)."""
        cand = [{x for (b, f, t) in events if lo <= b <= hi for x in (f, t)} for lo, hi in ranges]
        tr = sum(len(cs & set(tracked)) for cs in cand)
        return {"from_block": base + 1, "to_block": head, "logs": len(events),
                "candidates": sum(len(cs) for cs in cand), "tracked": tr, "updated": tr,
                "skipped": 0, "failed": 0, "checkpoint": head}
    head = base + span
    assert anvil.block_number() < head
    anvil.mine(head - anvil.block_number())
    assert anvil.block_number() == head

    def run(**fault):
        reset_follow_state(fdb)
        fdb.execute("INSERT INTO eth_wallet_balances (wallet, balance, blocknumber) "
                    "SELECT w, 0, 1 FROM unnest(%s::text[]) w", (tracked,))
        set_checkpoint(fdb, base)
        proxy.clear_faults()
        proxy.reset()
        if fault:
            proxy.fault("max_log_range", **fault)
        row = step(fdb)
        reqs = [(r.log_range, r.fault == "max_log_range") for r in proxy.select(method="eth_getLogs")]
        stored = dict(fdb.execute("SELECT block, hash FROM audius_indexer.follow_blocks").fetchall())
        return row, balances(fdb), reqs, stored

    row0, bal0, reqs0, stored0 = run()
    assert reqs0 == planned_requests(base + 1, head, 9000, None) == [((base + 1, head), False)]
    assert row0 == expected_row([(base + 1, head)]), row0
    assert (row0["candidates"], row0["tracked"]) == (9, 6)
    assert set(bal0) == set(tracked), "untracked wallets inserted (or tracked ones missing)"
    for w in tracked:
        assert bal0[w][0] == expected_total(contracts, w), w
        assert bal0[w][1] >= last[w], (w, bal0[w], last[w])
    assert stored0 == {head: node_hash(anvil, head)}

    seen = {}
    for name, fault in (
            ("-32005", dict(blocks=RANGE_LIMIT)),
            ("-32602", dict(blocks=RANGE_LIMIT, code=-32602, message=(
                "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block "
                "range and no limit on the response size, or you can request any block range with a cap "
                "of 10K logs in the response."))),
            ("413", dict(blocks=RANGE_LIMIT, status=413))):
        row, bal, reqs, stored = run(**fault)
        want = planned_requests(base + 1, head, 9000, RANGE_LIMIT)
        assert reqs == want, (name, reqs, want)
        refused = sum(1 for _, r in reqs if r)
        ok = [rg for rg, r in reqs if not r]
        seen[name] = (refused, len(ok))
        assert (refused, len(ok)) == (3, 4), (name, reqs)  # 250 → 125 ×2 → 62/63 ×4
        assert row == expected_row(ok), (name, row, expected_row(ok))
        assert bal == bal0, name  # the same rows (balance and block) as without the fault
        # every range end's hash is stored (each answered range committed on its own)
        assert stored == {b: node_hash(anvil, b) for _, b in ok}, name
        assert checkpoint(fdb) == head

    # a node that refuses even a single block: ERROR 54000, the step is rolled back
    with pytest.raises(psycopg.Error) as ei:
        run(blocks=0)
    assert ei.value.sqlstate == "54000", ei.value
    assert f"refused even the single block {base + 1}" in str(ei.value), str(ei.value)
    reqs = [(r.log_range, r.fault == "max_log_range") for r in proxy.select(method="eth_getLogs")]
    assert reqs == planned_requests(base + 1, head, 9000, 0), reqs
    assert checkpoint(fdb) == base
    assert balances(fdb) == {w: (0, 1) for w in tracked}
    print(f"range faults: span {span} blocks, {len(pairs)} transfers; refused/answered getLogs {seen}; "
          f"single-block refusal after {len(reqs)} requests")


def test_lagging_node_read_is_queued_until_exact(fdb, contracts, anvil, proxy):
    """Lagging node: Multicall3 getBlockNumber answered 3 blocks behind the transfer for the first
    two reads → the wallet is queued in follow_pending (min_block = the transfer's block), not
    written, the checkpoint moves on; a later step reads it again (still lagging: stays queued with
    the same min_block) and the next one exactly; the queue, not the checkpoint, carried it."""
    w, src = wallet_address(0, "follow-lag"), wallet_address(1, "follow-lag")
    contracts.set_values([w, src], [5, 10**20], [7, 0], [11, 0])
    fdb.execute("INSERT INTO eth_wallet_balances (wallet, balance, blocknumber) VALUES (%s, 0, 1)", (w,))
    boot = step(fdb)
    c0 = boot["checkpoint"]
    assert c0 == anvil.block_number()
    rc = contracts.transfer(src, w, 1000)
    b = block_of(rc)
    proxy.reset()
    proxy.fault("block_number", value=b - 3, times=2)

    r1 = step(fdb)
    assert r1 == {"from_block": c0 + 1, "to_block": b, "logs": 1, "candidates": 2, "tracked": 1,
                  "updated": 0, "skipped": 1, "failed": 0, "checkpoint": b}, r1
    assert [r.fault for r in proxy.select(method="eth_call", aggregate3=True)] == ["block_number"]
    pend = fdb.execute("SELECT wallet, min_block, attempts, reason FROM audius_indexer.follow_pending").fetchall()
    assert [(p[0], p[1], p[2]) for p in pend] == [(w, b, 1)] and "lagging" in pend[0][3], pend
    assert balances(fdb) == {w: (0, 1)}, "a read older than its event was written"
    st = status(fdb)
    assert st["checkpoint"] == b and st["pending_wallets"] == 1 and st["last_skipped"] == 1

    r2 = step(fdb)  # the pending read, lagging again
    assert r2["from_block"] is None and r2["tracked"] == 1 and r2["skipped"] == 1 and r2["updated"] == 0, r2
    pend = fdb.execute("SELECT wallet, min_block FROM audius_indexer.follow_pending").fetchall()
    assert pend == [(w, b)], pend
    assert balances(fdb) == {w: (0, 1)}

    r3 = step(fdb)  # the node caught up
    assert r3["tracked"] == 1 and r3["updated"] == 1 and r3["skipped"] == 0 and r3["checkpoint"] == b, r3
    assert fdb.execute("SELECT count(*) FROM audius_indexer.follow_pending").fetchone()[0] == 0
    got = balances(fdb)
    assert got[w][0] == expected_total(contracts, w) == 5 + 1000 + 7 + 11 and got[w][1] >= b, got
    assert status(fdb)["pending_wallets"] == 0 and checkpoint(fdb) == b
    assert len(proxy.select(method="eth_call", aggregate3=True)) == 3


def test_only_eth_wallet_balances_tracked_without_audius_tables(fdb, contracts, anvil):
    """No users / associated_wallets tables: tracked = wallets already in eth_wallet_balances; the
    other candidates of the logs are not inserted."""
    assert fdb.execute("SELECT to_regclass('users') IS NULL AND to_regclass('associated_wallets') IS NULL"
                       ).fetchone()[0], "the session database must not have users/associated_wallets"
    ws = [wallet_address(i, "follow-notables") for i in range(6)]
    contracts.set_values(ws, [10**20] * 6, [3] * 6, [4] * 6)
    c0 = step(fdb)["checkpoint"]
    fdb.execute("INSERT INTO eth_wallet_balances (wallet, balance, blocknumber) VALUES (%s, 0, 1), (%s, 0, 1)",
                (ws[1], ws[4]))
    for f, t in [(0, 1), (2, 3), (3, 4), (5, 0), (1, 2)]:
        contracts.transfer(ws[f], ws[t], 10**15 + f)
    r = step(fdb)
    assert r["from_block"] == c0 + 1 and r["logs"] == 5 and r["candidates"] == 6 and r["tracked"] == 2, r
    got = balances(fdb)
    assert set(got) == {ws[1], ws[4]}, f"untracked wallets inserted: {set(got) - {ws[1], ws[4]}}"
    for w in got:
        assert got[w][0] == expected_total(contracts, w)


def test_follow_from_block_and_max_blocks(fdb, cluster, contracts, anvil, proxy):
    """follow_from_block: the first step without a checkpoint starts there (earlier transfers are
    not replayed); max_blocks limits a step to that many blocks (one eth_getLogs over exactly
    them), the next step goes on from there."""
    w1, w2, w3, src = (wallet_address(i, "follow-from") for i in range(4))
    contracts.set_values([w1, w2, w3, src], [0, 0, 0, 10**20], [1, 2, 3, 0], [0, 0, 0, 0])
    fdb.execute("INSERT INTO eth_wallet_balances (wallet, balance, blocknumber) "
                "SELECT w, 0, 1 FROM unnest(%s::text[]) w", ([w1, w2, w3],))
    b_before = block_of(contracts.transfer(src, w1, 100))   # before follow_from_block: not replayed
    b_from = block_of(contracts.transfer(src, w2, 200))     # at follow_from_block
    anvil.mine(30)
    b_late = block_of(contracts.transfer(src, w3, 300))     # beyond max_blocks
    head = anvil.block_number()
    assert b_from == b_before + 1 and b_late > b_from + 10
    cluster.set_system(follow_from_block=b_from)
    proxy.reset()
    r = step(fdb, max_blocks=10)
    assert r == {"from_block": b_from, "to_block": b_from + 9, "logs": 1, "candidates": 2, "tracked": 1,
                 "updated": 1, "skipped": 0, "failed": 0, "checkpoint": b_from + 9}, r
    assert get_logs(proxy) == [(b_from, b_from + 9)]
    got = balances(fdb)
    assert got[w1] == (0, 1), "a transfer before follow_from_block was replayed"
    assert got[w2][0] == expected_total(contracts, w2) and got[w2][1] >= b_from
    assert got[w3] == (0, 1), "max_blocks did not stop the step"
    assert checkpoint(fdb) == b_from + 9
    proxy.reset()
    r = step(fdb)
    assert (r["from_block"], r["to_block"], r["logs"], r["updated"], r["checkpoint"]) == \
        (b_from + 10, head, 1, 1, head), r
    assert get_logs(proxy) == [(b_from + 10, head)]
    got = balances(fdb)
    assert got[w3][0] == expected_total(contracts, w3) and got[w3][1] >= b_late
    assert got[w1] == (0, 1)


def test_max_blocks_zero_is_invalid(fdb, proxy):
    """follow_transfers(0) and (-5) → 22023, nothing done (no RPC, checkpoint untouched)."""
    set_checkpoint(fdb, 1)
    proxy.reset()
    for bad in (0, -5):
        with pytest.raises(psycopg.Error) as ei:
            step(fdb, max_blocks=bad)
        assert ei.value.sqlstate == "22023", ei.value
        assert "max_blocks" in str(ei.value)
    assert proxy.http_requests == 0
    assert checkpoint(fdb) == 1


def test_privileges_operator_may_public_may_not(fdb, cluster, anvil):
    """Privileges: a member of audius_indexer_operator may execute follow_transfers(); a role with
    only PUBLIC's rights gets 42501."""
    op, nobody = "follow_it_op", "follow_it_nobody"
    for r in (op, nobody):
        fdb.execute(f"DROP ROLE IF EXISTS {r}")
    fdb.execute(f"CREATE ROLE {op} LOGIN IN ROLE audius_indexer_operator")
    fdb.execute(f"CREATE ROLE {nobody} LOGIN")
    try:
        with cluster.connect("audius", user=op) as c:
            row = step(c)
            assert row["checkpoint"] == anvil.block_number() == checkpoint(fdb)
            c.execute("SELECT * FROM audius_indexer.follow_status").fetchone()
        with cluster.connect("audius", user=nobody) as c:
            with pytest.raises(psycopg.Error) as ei:
                c.execute("SELECT * FROM audius_indexer.follow_transfers()")
            assert ei.value.sqlstate == "42501", ei.value
        assert fdb.execute("SELECT has_function_privilege('public', 'audius_indexer.follow_transfers(bigint)', "
                           "'EXECUTE')").fetchone() == (False,)
    finally:
        for r in (op, nobody):
            fdb.execute(f"DROP ROLE IF EXISTS {r}")


# --------------------------------------------------------------------------------------------
# own cluster, own chains: the worker
# --------------------------------------------------------------------------------------------
# building the chain dominates: ~470 s for the 25,000 blocks here, ~25 s for the default 2,500
@pytest.mark.timeout(max(300, BACKFILL_BLOCKS // 20))
def test_worker_backfills_then_follows(own, own_db):
    """Backfill by the worker: 300 transfers among 120 wallets (40 tracked through users in mixed
    case, 40 through associated_wallets, 40 untracked incl. deleted and chain='sol' associations)
    over BACKFILL_BLOCKS blocks (log_range_blocks BACKFILL_RANGE; see the scale note at the top);
    checkpoint at block 1, then the worker (follow_interval 1 s) catches up 270 of them and follows
    the last 30 live. Every tracked row = three independent eth_calls with blocknumber >= its last
    transfer, no untracked row, checkpoint = head - confirmations, and the eth_getLogs requests are
    exactly the planned ranges (ceil((head-1)/range) for the backfill, then one plan per later
    step)."""
    t_start = time.time()
    conn = own_db
    chain = own_chain()
    try:
        a, c, proxy = chain.anvil, chain.contracts, chain.proxy
        size = BACKFILL_RANGE
        point_at(own, chain, log_range_blocks=size)
        rng = random.Random(1)
        W = [wallet_address(i, "follow-backfill") for i in range(120)]
        via_users, via_assoc, untracked = W[:40], W[40:80], W[80:]
        tracked = via_users + via_assoc
        c.set_values(W, [10**24 + i for i in range(120)], [rng.randrange(10**21) for _ in W],
                     [rng.randrange(10**20) for _ in W])
        for i, w in enumerate(via_users):
            conn.execute("INSERT INTO users (user_id, wallet, is_current, txhash) VALUES (%s, %s, true, '')",
                         (i + 1, to_checksum(w)))
        assocs = [(1000 + i, to_checksum(w), "eth", False) for i, w in enumerate(via_assoc)]
        assocs += [(2000 + i, to_checksum(w), "eth", True) for i, w in enumerate(untracked[:10])]  # deleted
        assocs += [(3000 + i, w, "sol", False) for i, w in enumerate(untracked[10:15])]          # not eth
        for uid, wal, ch, deleted in assocs:
            conn.execute("INSERT INTO associated_wallets (user_id, wallet, blockhash, blocknumber, is_current, "
                         "is_delete, chain) VALUES (%s, %s, '0x', 1, true, %s, %s)", (uid, wal, deleted, ch))
        assert conn.execute("SELECT count(*) FROM users WHERE wallet <> lower(wallet)").fetchone()[0] == 40
        set_checkpoint(conn, 1)

        # 300 transfers: each tracked wallet at least once, then random pairs over all 120
        pairs = [(w, rng.choice(untracked)) if i % 2 else (rng.choice(W), w) for i, w in enumerate(tracked)]
        while len(pairs) < 300:
            f, t = rng.sample(W, 2)
            pairs.append((f, t))
        rng.shuffle(pairs)
        last: dict[str, int] = {}

        def transfer(f, t):
            blk = block_of(c.transfer(f, t, rng.randrange(1, 10**18)))
            last[f] = last[t] = blk

        h1 = BACKFILL_BLOCKS * 9 // 10 + 37
        gap = max(1, int((h1 - a.block_number()) / 270 * 0.8) - 1)
        for f, t in pairs[:270]:
            a.mine(rng.randrange(1, 2 * gap))
            transfer(f, t)
        assert a.block_number() < h1, a.block_number()
        a.mine(h1 - a.block_number())
        assert a.block_number() == h1
        t_chain = time.time() - t_start

        conninfo = own.conninfo(OWN_DB)
        with StepRecorder(conninfo) as rec:
            enable_paths(conn, "follow")   # nothing acts until the DBA turns the path on
            own.set_system(follow_interval="1s")
            wait_until(lambda: checkpoint(conn) == h1, timeout=90, interval=0.1, what="backfill to h1")
            t_backfill = time.time() - t_start - t_chain
            gap = max(1, int((BACKFILL_BLOCKS - h1) / 30 * 0.8) - 1)
            for f, t in pairs[270:]:
                a.mine(rng.randrange(1, 2 * gap))
                transfer(f, t)
                time.sleep(rng.choice((0, 0, 0.1, 0.3)))
            assert a.block_number() < BACKFILL_BLOCKS
            a.mine(BACKFILL_BLOCKS + 3 - a.block_number())
            h2 = a.block_number()
            wait_until(lambda: checkpoint(conn) == h2, timeout=60, interval=0.1, what="catch-up to h2")
            wait_until(lambda: status(conn)["pending_wallets"] == 0, timeout=30, what="no pending wallets")
            own.set_system(follow_interval=0)
            wait_follow_idle(conn)
            conn.execute("SELECT audius_indexer.disable('follow')")
            time.sleep(0.1)

        assert rec.missed == 0 and rec.steps, (rec.missed, rec.steps, rec.errors)
        # the checkpoint is the head (confirmations 0); nothing pending, no error
        st = status(conn)
        assert st["checkpoint"] == h2 == a.block_number() and st["lag_blocks"] == 0, st
        assert st["pending_wallets"] == 0 and st["last_error"] is None, st
        # rows: exactly the tracked wallets, each = the oracle, stamped at or after its last transfer
        got = balances(conn)
        assert not set(got) & set(untracked), f"untracked inserted: {sorted(set(got) & set(untracked))[:5]}"
        assert set(got) == set(tracked), f"tracked missing: {sorted(set(tracked) - set(got))[:5]}"
        wrong = [(w, got[w], expected_total(c, w)) for w in tracked if got[w][0] != expected_total(c, w)]
        assert not wrong, f"{len(wrong)} rows differ from the chain, e.g. {wrong[:3]}"
        early = [(w, got[w][1], last[w]) for w in tracked if got[w][1] < last[w]]
        assert not early, f"rows stamped before their last transfer: {early[:3]}"
        # the Audius trigger kept eth_user_balances in step (one wallet per user)
        ub = dict(conn.execute("SELECT user_id, balance FROM eth_user_balances").fetchall())
        for i, w in enumerate(via_users):
            assert ub.get(i + 1) == got[w][0], (i + 1, ub.get(i + 1), got[w][0])
        for i, w in enumerate(via_assoc):
            assert ub.get(1000 + i) == got[w][0], (1000 + i, ub.get(1000 + i), got[w][0])
        # eth_getLogs: exactly the planned ranges
        seen = get_logs(proxy)
        n_backfill = math.ceil((h1 - 1) / size)
        assert rec.steps[0][1:] == (2, h1), rec.steps[:3]
        assert seen[:n_backfill] == plan_ranges(2, h1, size), seen[:n_backfill + 1]
        planned = [rg for (_n, f, t) in rec.steps if f is not None for rg in plan_ranges(f, t, size)]
        assert seen == planned, (len(seen), len(planned), seen[:6], planned[:6])
        assert [b for rg in seen for b in range(rg[0], rg[1] + 1)] == list(range(2, h2 + 1))
        live_steps = sum(1 for (_n, f, _t) in rec.steps[1:] if f is not None)
        print(f"backfill: 300 transfers, 120 wallets (80 tracked), range {size}, head {h1} then {h2}; getLogs seen "
              f"{len(seen)} = planned {len(planned)} ({n_backfill} backfill + {len(seen) - n_backfill} over "
              f"{live_steps} live steps of {len(rec.steps)}); chain build {t_chain:.1f}s, backfill "
              f"{t_backfill:.1f}s, total {time.time() - t_start:.1f}s")
    finally:
        chain.close()


def test_reorg_rereads_rows_of_abandoned_blocks(own, own_db, throwaway_anvil):
    """Reorg: evm_snapshot, transfers in 5 blocks, step, evm_revert, different transfers (A and B
    moved only on the abandoned blocks), a step while the new chain is still shorter (waits), mine
    past the old height, step → reorg detected (reorgs + 1, ancestor = the boot block), every row =
    the new chain (independent eth_calls) incl. A and B, and the stored hash of the checkpoint block
    (and every stored one) = the node's."""
    conn = own_db
    chain = own_chain(throwaway_anvil)
    try:
        a, c = chain.anvil, chain.contracts
        point_at(own, chain)
        A, B, C, D, E, F, X = (wallet_address(i, "follow-reorg") for i in range(7))
        tracked = [A, B, C, D, E, F]
        c.set_values(tracked + [X], [10**20 + i for i in range(7)], [1000 * (i + 1) for i in range(7)],
                     [7 * (i + 1) for i in range(7)])
        pre = {w: expected_total(c, w) for w in tracked}
        conn.execute("INSERT INTO eth_wallet_balances (wallet, balance, blocknumber) "
                     "SELECT w, 0, 1 FROM unnest(%s::text[]) w", (tracked,))
        h0 = step(conn)["checkpoint"]
        assert h0 == a.block_number()
        reorgs0 = status(conn)["reorgs"]

        snap = a.rpc("evm_snapshot")
        for f, t, v in [(X, A, 11), (B, X, 22), (A, C, 5), (D, X, 33), (X, D, 44)]:
            c.transfer(f, t, v)
        assert a.block_number() == h0 + 5
        r1 = step(conn)
        assert (r1["from_block"], r1["to_block"], r1["updated"], r1["checkpoint"]) == (h0 + 1, h0 + 5, 4, h0 + 5), r1
        abandoned = balances(conn)
        for w in (A, B, C, D):
            assert abandoned[w][0] == expected_total(c, w) != pre[w], w
        old_hash = node_hash(a, h0 + 5)

        assert a.rpc("evm_revert", [snap]) is True
        assert a.block_number() == h0
        for f, t, v in [(X, C, 55), (D, E, 66), (X, F, 77)]:
            c.transfer(f, t, v)
        assert a.block_number() == h0 + 3
        # the node is behind the checkpoint: the step waits (no reorg yet, nothing moves back)
        r_wait = step(conn)
        assert r_wait["from_block"] is None and r_wait["checkpoint"] == h0 + 5, r_wait
        assert checkpoint(conn) == h0 + 5 and status(conn)["reorgs"] == reorgs0
        a.mine(4)
        head = a.block_number()
        assert head == h0 + 7 and node_hash(a, h0 + 5) != old_hash

        r2 = step(conn)
        assert (r2["from_block"], r2["to_block"], r2["checkpoint"]) == (h0 + 1, head, head), r2
        st = status(conn)
        assert st["reorgs"] == reorgs0 + 1, st
        assert (st["last_reorg_block"], st["last_reorg_ancestor"]) == (h0 + 5, h0), st
        got = balances(conn)
        assert set(got) == set(tracked)
        for w in tracked:
            assert got[w][0] == expected_total(c, w), (w, got[w], expected_total(c, w))
            assert got[w][1] <= head, (w, got[w])
        # A and B moved only on the abandoned blocks: back to their values before the snapshot
        assert got[A][0] == pre[A] != abandoned[A][0] and got[B][0] == pre[B] != abandoned[B][0]
        assert checkpoint(conn) == head
        stored = dict(conn.execute("SELECT block, hash FROM audius_indexer.follow_blocks").fetchall())
        assert stored.get(head) == node_hash(a, head), (stored, head)
        assert all(h == node_hash(a, b) for b, h in stored.items()), stored
        # the next step finds nothing to redo
        r3 = step(conn)
        assert r3["from_block"] is None and status(conn)["reorgs"] == reorgs0 + 1
    finally:
        chain.close()


def test_worker_kill9_and_node_outage_resume_without_gap(own, own_db):
    """Kill -9 of the worker mid-backfill, then a 10 s node outage (proxy `hang`): the worker resumes
    from the committed checkpoint (its first eth_getLogs after the restart starts right after it),
    no range is requested again once its checkpoint was committed (ranges up to the checkpoint at the
    kill: exactly once), follow_status.last_error shows the outage meanwhile and is superseded by a
    finished step after; at the end every tracked wallet is exact (no gap) and no untracked row."""
    conn = own_db
    chain = own_chain()
    try:
        a, c, proxy = chain.anvil, chain.contracts, chain.proxy
        size = KILL_RANGE
        point_at(own, chain, log_range_blocks=size, rpc_timeout_ms="1s", rpc_retry_budget_ms="3s",
                 rpc_failover_cooldown_ms="200ms")
        rng = random.Random(5)
        W = [wallet_address(i, "follow-kill") for i in range(70)]
        tracked, untracked = W[:60], W[60:]
        c.set_values(W, [10**22] * 70, [rng.randrange(10**20) for _ in W], [rng.randrange(10**19) for _ in W])
        conn.execute("INSERT INTO eth_wallet_balances (wallet, balance, blocknumber) "
                     "SELECT w, 0, 1 FROM unnest(%s::text[]) w", (tracked[:40],))
        for i, w in enumerate(tracked[40:]):
            conn.execute("INSERT INTO users (user_id, wallet, is_current, txhash) VALUES (%s, %s, true, '')",
                         (i + 1, to_checksum(w)))
        pairs = [(rng.choice(untracked), w) for w in tracked] + [tuple(rng.sample(W, 2)) for _ in range(40)]
        rng.shuffle(pairs)
        last: dict[str, int] = {}
        gap = max(1, int((KILL_BLOCKS - a.block_number()) / len(pairs) * 0.8) - 1)
        for f, t in pairs:
            a.mine(rng.randrange(1, 2 * gap))
            blk = block_of(c.transfer(f, t, rng.randrange(1, 10**18)))
            last[f] = last[t] = blk
        a.mine(KILL_BLOCKS - a.block_number())
        head = a.block_number()
        set_checkpoint(conn, 1)
        proxy.fault("delay", ms=150, methods="eth_getLogs")  # a backfill long enough to kill mid-way

        conninfo = own.conninfo(OWN_DB)
        with CheckpointRecorder(conninfo) as cps:
            t0 = time.time()
            enable_paths(conn, "follow")
            own.set_system(follow_interval="1s")
            wait_until(lambda: (checkpoint(conn) or 0) >= 1 + 10 * size, timeout=60, interval=0.05,
                       what="10 ranges committed")
            pid = conn.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'audius_indexer follow'"
                               ).fetchone()[0]
            # the restarted worker must wait until we have read the checkpoint it left: interval 0
            # now (the running step goes on: a step runs all its ranges), 1 s again after
            own.set_system(follow_interval=0)
            c_before = checkpoint(conn) or 0  # committed (read by another session) before the kill
            assert c_before < head - 20 * size, "the backfill is nearly over before the kill"
            own.killed_pids.append(pid)
            t_kill = time.time()
            os.kill(pid, signal.SIGKILL)
            # the postmaster restarts everything (crash recovery); our connection is gone
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

            def reconnect():
                try:
                    cn = own.connect(OWN_DB)
                    cn.execute("SELECT 1")
                    return cn
                except psycopg.OperationalError:
                    return None
            time.sleep(1.0)
            conn = wait_until(reconnect, timeout=60, interval=0.2, what="cluster back after the crash")
            c_kill = checkpoint(conn)
            # the recorder samples every 20 ms and may lag behind our own last read: take the later one
            seen_before_kill = max(cps.committed_before(t_kill) or 0, c_before)
            assert c_kill >= seen_before_kill >= 1 + 10 * size, \
                f"a committed checkpoint was lost in the crash: {seen_before_kill} seen before, {c_kill} after"
            assert c_kill < head, c_kill
            wait_until(lambda: conn.execute("SELECT count(*) FROM pg_stat_activity "
                                            "WHERE backend_type = 'audius_indexer follow'").fetchone()[0] == 1,
                       timeout=30, interval=0.1, what="the follow worker to be restarted")
            t_restart = time.time()
            own.set_system(follow_interval="1s")
            wait_until(lambda: (checkpoint(conn) or 0) >= c_kill + 4 * size, timeout=60, interval=0.05,
                       what="the restarted worker to go on")
            new_pid = conn.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'audius_indexer follow'"
                                   ).fetchone()[0]
            assert new_pid != pid

            # the node goes away for 10 s
            proxy.clear_faults()
            proxy.fault("hang")
            t_out = time.time()
            err = wait_until(lambda: (lambda s: s if s["last_error"] and s["last_error_at"].timestamp() >= t_out - 1
                                      else None)(status(conn)), timeout=9, interval=0.1, what="last_error")
            assert f"127.0.0.1:{proxy.port}" in err["last_error"], err["last_error"]
            time.sleep(max(0.0, t_out + 2 - time.time()))
            c_out = checkpoint(conn)
            time.sleep(max(0.0, t_out + 10 - time.time()))
            assert checkpoint(conn) == c_out, "the checkpoint moved while the node was down"
            st_out = status(conn)
            assert st_out["last_error"] and (st_out["last_step_finished"] is None
                                             or st_out["last_error_at"] > st_out["last_step_finished"]), st_out
            proxy.clear_faults()
            t_back = time.time()
            wait_until(lambda: checkpoint(conn) == head, timeout=60, interval=0.1, what="catch-up after the outage")
            wait_until(lambda: status(conn)["pending_wallets"] == 0, timeout=30, what="no pending wallets")
            wait_until(lambda: (lambda s: s["last_step_finished"] is not None
                                and s["last_step_finished"] > s["last_error_at"])(status(conn)),
                       timeout=10, what="a finished step after the last error")
            own.set_system(follow_interval=0)
            wait_follow_idle(conn)
            conn.execute("SELECT audius_indexer.disable('follow')")
            t_end = time.time()

        recs = proxy.select(method="eth_getLogs")
        if os.environ.get("FOLLOW_DEBUG"):
            for r in recs:
                print(f"{r.time - t_kill:+.3f} {r.log_range} {r.fault}")
            print("samples", [(round(s_ - t_kill, 3), v) for s_, v in cps.samples if abs(s_ - t_kill) < 5])
            print(own.log_text()[-6000:])
        # resumed from the committed checkpoint
        after_kill = [r.log_range for r in recs if r.time > t_restart]
        assert after_kill[0][0] == c_kill + 1, (after_kill[:3], c_kill)
        assert not [r for r in recs if t_kill < r.time < t_restart], "eth_getLogs while the worker was down"
        # ranges whose write committed before the kill: requested exactly once
        before = [r.log_range for r in recs if r.log_range[1] <= c_kill]
        assert sorted(before) == plan_ranges(2, c_kill, size), "a committed range was requested again"
        # never a range at or below a checkpoint already committed when it was requested
        again = [(r.log_range, cps.committed_before(r.time)) for r in recs
                 if (cps.committed_before(r.time) or 0) >= r.log_range[0]]
        assert not again, f"ranges requested after their checkpoint was committed: {again[:5]}"
        # no gap: the answered ranges cover every block, and the rows are exact
        answered = {r.log_range for r in recs if r.fault in (None, "delay")}
        covered = {b for (f, t) in answered for b in range(f, t + 1)}
        assert covered >= set(range(2, head + 1))
        assert all((t - f + 1) <= size for f, t in answered)
        got = balances(conn)
        assert set(got) == set(tracked), (sorted(set(got) ^ set(tracked))[:5])
        wrong = [(w, got[w], expected_total(c, w)) for w in tracked if got[w][0] != expected_total(c, w)]
        assert not wrong, f"{len(wrong)} rows differ, e.g. {wrong[:3]}"
        assert all(got[w][1] >= last[w] for w in tracked)
        st = status(conn)
        assert st["checkpoint"] == head and st["pending_wallets"] == 0
        repeated = len(recs) - len({r.log_range for r in recs})
        print(f"kill/outage: head {head}, {len(pairs)} transfers, {size}-block ranges ({math.ceil((head - 1) / size)} "
              f"planned); getLogs requests {len(recs)} ({repeated} repeats: in flight at the kill or during the "
              f"outage); checkpoint at kill {c_kill}, at outage {c_out}; outage error {err['last_error'][:90]!r}; "
              f"kill at {t_kill - t0:.1f}s, outage {t_out - t0:.1f}-{t_back - t0:.1f}s, done {t_end - t0:.1f}s")
    finally:
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass
        chain.close()


# --------------------------------------------------------------------------------------------
# session cluster: the pending queue's bookkeeping (last: they fail on the extension as built, see
# their docstrings; with -x the worker tests above still run)
# --------------------------------------------------------------------------------------------
def failing_transfer_target(fdb, cluster, contracts, proxy, tag: str) -> tuple[str, int]:
    """failure_backoff_base 1 s; a tracked wallet w (1 + 2 + 3 on chain) and a step (the checkpoint
    reaches the head); then a Transfer of 500 to w in block b, and from now on the proxy fails every
    read of w. Returns (w, b)."""
    cluster.set_system(failure_backoff_base="1s")
    w, src = wallet_address(0, tag), wallet_address(1, tag)
    contracts.set_values([w, src], [1, 10**20], [2, 0], [3, 0])
    fdb.execute("INSERT INTO eth_wallet_balances (wallet, balance, blocknumber) VALUES (%s, 0, 1)", (w,))
    step(fdb)
    b = block_of(contracts.transfer(src, w, 500))
    proxy.fault("fail_holder", holder=w)
    return w, b


def test_pending_queue_counts_attempts_and_backs_off_failed_reads(fdb, cluster, contracts, anvil, proxy):
    """Pending-queue bookkeeping (docs: failed reads are "backed off like wallet_failures"): a wallet
    whose read keeps failing is queued with attempts 1, 2, … (first_queued kept) and its next
    attempt moves out base, 2·base, … as its wallet_failures row does; when the read succeeds it
    leaves the queue with the exact value."""
    w, b = failing_transfer_target(fdb, cluster, contracts, proxy, "follow-fail")

    def pending():
        return fdb.execute("SELECT attempts, first_queued, extract(epoch FROM next_attempt - now())::float8 "
                           "FROM audius_indexer.follow_pending WHERE wallet = %s", (w,)).fetchone()

    def failures():
        return fdb.execute("SELECT attempts, extract(epoch FROM next_attempt - now())::float8 "
                           "FROM audius_indexer.wallet_failures WHERE wallet = %s", (w,)).fetchone()

    r1 = step(fdb)
    assert (r1["to_block"], r1["tracked"], r1["failed"], r1["checkpoint"]) == (b, 1, 1, b), r1
    p1, f1 = pending(), failures()
    assert p1 is not None and p1[0] == 1 and 0 < p1[2] <= 1.0, p1
    assert f1 is not None and f1[0] == 1, f1
    time.sleep(p1[2] + 0.1)
    r2 = step(fdb)  # the queued read fails again
    assert r2["tracked"] == 1 and r2["failed"] == 1, r2
    p2, f2 = pending(), failures()
    assert f2[0] == 2 and 1.0 < f2[1] <= 2.0, f"wallet_failures: {f2}"
    problems = []
    if p2[0] != 2:
        problems.append(f"follow_pending.attempts after 2 failed reads = {p2[0]} (expected 2)")
    if p2[1] != p1[1]:
        problems.append(f"follow_pending.first_queued reset from {p1[1]} to {p2[1]}")
    if not 1.0 < p2[2] <= 2.0:
        problems.append(f"follow_pending next attempt in {p2[2]:.2f}s after the 2nd failure (expected "
                        f"base·2 = 2s, as wallet_failures: {f2[1]:.2f}s)")
    proxy.clear_faults()
    time.sleep(max(p2[2], 0) + 0.1)
    r3 = step(fdb)
    assert r3["updated"] == 1 and r3["failed"] == 0, r3
    assert pending() is None and failures() is None
    assert balances(fdb)[w][0] == expected_total(contracts, w) == 506
    assert not problems, "; ".join(problems)


def test_failed_read_then_lagging_read_is_not_written(fdb, cluster, contracts, anvil, proxy):
    """A failed read is queued "with the block it must reach" (docs/operations.md): when the queued
    read is then answered by a lagging node (getBlockNumber 3 blocks behind the transfer), it must
    not be written as exact — the wallet stays queued until a read at or after its transfer."""
    w, b = failing_transfer_target(fdb, cluster, contracts, proxy, "follow-faillag")
    r1 = step(fdb)
    assert (r1["failed"], r1["checkpoint"]) == (1, b), r1
    queued = fdb.execute("SELECT min_block, extract(epoch FROM next_attempt - now())::float8 "
                         "FROM audius_indexer.follow_pending WHERE wallet = %s", (w,)).fetchone()
    assert queued is not None, "a failed read was not queued"
    proxy.clear_faults()
    proxy.fault("block_number", value=b - 3, times=1)
    time.sleep(max(queued[1], 0) + 0.1)
    r2 = step(fdb)
    row = balances(fdb)[w]
    still = fdb.execute("SELECT min_block FROM audius_indexer.follow_pending WHERE wallet = %s", (w,)).fetchone()
    assert row[1] == 1 or row[1] >= b, (
        f"the queued read answered from block {row[1]} (< the transfer's block {b}) was written as exact "
        f"(follow_pending.min_block was {queued[0]}, step {r2}); the wallet left the queue: {still is None}")
    assert still is not None and still[0] == b, still
    r3 = step(fdb)
    assert r3["updated"] == 1 and balances(fdb)[w][0] == expected_total(contracts, w)
