"""Integration tests of the challenge processors (m, r, rv, rd: the Go challenge job,
`jobs/index_challenges.go`, moved into the database):
`audius_indexer.process_user_event_challenges(batch)`, `seed_challenge_checkpoints()` and the view
`challenge_processor_status`.

Every database is Audius-like without anvil (tests/harness/challenges.py `make_db`): the fixture
schema (users with blocknumber, user_events, indexing_checkpoints, the challenges catalog with
m/r/rv/rd active, amount '1', cooldown 7), the extension, the Rust on_user_challenge trigger
(install_triggers()) and sql/indexes.sql. One module-scoped throwaway cluster.

What is checked (the numbers are the sections below):
  1. differential test against a plain SQL full scan over ALL user_events (randomised, >= 10,000 ops)
  2. the two improvements are real: the Go job's rules (emulated) miss rows that full scan and the
     function find (crowded block; referrer verification flip)
  3. checkpoints: below-checkpoint rows untouched, seed_challenge_checkpoints(), forward only, the
     Go job's high-water values, inactive / missing challenge, a failing processor, batch < 1
  4. the processors' completions produce the same notifications through the Rust trigger as the
     same upserts sent as plain SQL
  5. the status view
  6. privileges (audius_indexer_operator)

A WARNING from an Audius trigger fails a test (notices are collected; the server log is checked).
"""
from __future__ import annotations

import collections
import json
import random
import time

import psycopg
import pytest

from harness.challenges import (PLAIN_UPSERT, PROCESSORS, Admin, Block, ChallengeStream, GoJobEmulator, Sync,
                                apply_admin, apply_block, apply_full_scan_reference, checkpoints, compare,
                                convergence_bound, dedupe_completions, first_seen, keys, make_db,
                                pairs_by_referrer, positions, recompute_pairs, run_once, set_checkpoint,
                                uc_rows, warnings_of)
from harness.triggers import Notices, clean_cluster

SEED = 20260311
# ordinary operations per run (the rows of the crowded blocks come on top); batch 5000 runs are the
# expensive ones (each crowded block holds > 5000 rows), so they get fewer
OPS = {50: 5000, 5000: 2600}
DIFF_PARAMS = [(50, "UTC"), (50, "America/New_York"), (5000, "UTC"), (5000, "America/New_York")]
TOTAL_DIFF_OPS = sum(OPS[b] for b, _ in DIFF_PARAMS)


@pytest.fixture(scope="module")
def pg():
    # autovacuum off: the tests ANALYZE / flush GIN pending lists themselves, at deterministic points.
    # (With statistics on this test's notification table the planner turns the trigger's cooldown
    # lookup into a LIMIT-1 seq scan of notification -- one run of 5000 completions then took ~40 s
    # instead of ~1 s -- so the runtime would depend on when autovacuum happens to run.)
    with clean_cluster("challenges", {"max_connections": "40", "autovacuum": "off"}) as c:
        yield c
        warn = [ln for ln in c.log_text().splitlines() if "WARNING" in ln]
        assert not warn, "server log has WARNINGs:\n" + "\n".join(warn[:20])


_db_counter = iter(range(1, 10_000))


@pytest.fixture
def fresh(pg):
    """A new Audius-like database and an autocommit connection to it (UTC); the connection's
    WARNINGs fail the test."""
    name = f"ch_{next(_db_counter)}"
    make_db(pg, name)
    conn = pg.connect(name, options="-c TimeZone=UTC")
    notices = Notices(conn)
    conn.dbname_ = name
    try:
        yield conn
        assert warnings_of(notices) == [], "WARNINGs during the test"
    finally:
        conn.close()


def converge(conn, batch: int, limit: int = 200) -> list[list[dict]]:
    """Runs the processors until a run reports dirty_rows = 0 for every processor; no errors."""
    runs = []
    for _ in range(limit):
        out = run_once(conn, batch)
        assert all(o["error"] is None for o in out), out
        runs.append(out)
        if all(o["dirty_rows"] == 0 for o in out):
            return runs
    raise AssertionError(f"no convergence within {limit} runs")


def ue(conn, block: int, user: int, referrer: int | None = None, mobile: bool = False, current: bool = True) -> int:
    return conn.execute("INSERT INTO user_events (blocknumber, is_current, user_id, referrer, is_mobile_user) "
                        "VALUES (%s, %s, %s, %s, %s) RETURNING id", (block, current, user, referrer, mobile)).fetchone()[0]


def user(conn, uid: int, block: int, verified: bool = False, tx: str | None = None) -> None:
    conn.execute("INSERT INTO users (user_id, wallet, is_current, created_at, is_verified, txhash, blocknumber) "
                 "VALUES (%s, %s, true, localtimestamp, %s, %s, %s)", (uid, f"0xw{uid}", verified, tx or f"tx-{uid}-{block}", block))


def by_id(out: list[dict]) -> dict[str, dict]:
    return {o["challenge_id"]: o for o in out}


# ================================================================================================
# 1. differential test
# ================================================================================================
@pytest.mark.parametrize("batch,timezone", DIFF_PARAMS, ids=[f"batch{b}-{tz.split('/')[-1]}" for b, tz in DIFF_PARAMS])
def test_differential_against_full_scan(pg, batch, timezone):
    """A deterministic random stream (ordinary operations per run: OPS, 4 runs:
    batch 50 / 5000 x TimeZone UTC / America/New_York, 15,200 >= 10,000 in total) of user_events inserts
    (with / without referrer, mobile or not, several rows per block), supersessions, users inserts and
    verification flips (UPDATE in place with a higher blocknumber, or a new current row with the old
    one retired), catalog changes (challenge inactive and active again, amount changes) and blocks
    holding more qualifying rows than one batch (plus, for batch 50, blocks with more users rows than
    one batch). Blocks are applied atomically in increasing block order. At every sync point the
    processors run until a run reports dirty_rows = 0 everywhere (bounded), then the reference -- a
    plain SQL full scan over ALL user_events with the same rules, upserted into ref_user_challenges
    for the challenges active at that point -- is applied, and the m/r/rv/rd rows must be identical
    (all columns; created_at / completed_at NULL-alike). Per run: no error, checkpoints move
    forward only, equal indexing_checkpoints, follow the high-water rule; an inactive processor does
    nothing. Each rule is hit at least 5 times."""
    tag = f"b{batch}_{'utc' if timezone == 'UTC' else 'ny'}"
    make_db(pg, f"diff_{tag}")
    stream = ChallengeStream(f"{SEED}-{batch}-{timezone}", OPS[batch], batch)
    assert stream.ordinary_ops >= OPS[batch]
    assert TOTAL_DIFF_OPS >= 10_000

    conn = pg.connect(f"diff_{tag}", options=f"-c TimeZone={timezone}")
    notices = Notices(conn)
    assert conn.execute("SHOW TimeZone").fetchone()[0] == timezone
    hits: collections.Counter = collections.Counter()
    last_cp = {p: 0 for p in PROCESSORS}
    sync_no = 0
    last_sync_block = 0
    block_now = 0
    prev_verified: dict[int, bool] = {}
    prev_active = {p: True for p in PROCESSORS}
    max_runs = 0
    analyzed_at = 0
    t0 = time.time()
    timing: collections.Counter = collections.Counter()
    try:
        for item in stream.items:
            t = time.time()
            if isinstance(item, Block):
                apply_block(conn, item)
                block_now = item.number
                timing["apply"] += time.time() - t
                continue
            if isinstance(item, Admin):
                apply_admin(conn, item.op)
                timing["apply"] += time.time() - t
                continue
            assert isinstance(item, Sync)
            sync_no += 1
            (n_ue,) = conn.execute("SELECT count(*) FROM user_events").fetchone()
            # what autovacuum does, deterministically: statistics, and the notification GINs' pending
            # lists flushed (the cooldown lookup of the trigger scans the whole pending list)
            if n_ue > analyzed_at * 1.25 + 100:
                conn.execute("ANALYZE user_events, users, user_challenges, ref_user_challenges")
                analyzed_at = n_ue
            conn.execute("SELECT gin_clean_pending_list(i) FROM unnest(ARRAY['ix_notification_cooldown_user_ids', "
                         "'ix_notification_challenge_reward_user_ids']::regclass[]) i")
            active = dict(conn.execute("SELECT id, active FROM challenges WHERE id = ANY(%s)",
                                       (list(PROCESSORS),)).fetchall())
            bound = convergence_bound(conn, batch)
            head = conn.execute("SELECT max(blocknumber) FROM user_events").fetchone()[0] or 0
            runs = 0
            while True:
                before = positions(conn)
                t = time.time()
                out = run_once(conn, batch)
                timing["process"] += time.time() - t
                after = positions(conn)
                runs += 1
                db_cps = checkpoints(conn)
                for o in out:
                    p = o["challenge_id"]
                    ctx = f"sync {sync_no} run {runs}: {o}"
                    assert o["error"] is None, ctx
                    assert o["checkpoint_before"] == last_cp[p], ctx
                    assert o["checkpoint_after"] >= o["checkpoint_before"], ctx
                    assert o["checkpoint_after"] <= max(head, o["checkpoint_before"]), ctx
                    assert (db_cps[p] or 0) == o["checkpoint_after"], ctx
                    if not active[p]:
                        assert (o["dirty_rows"], o["users"], o["upserts"]) == (0, 0, 0), ctx
                        assert o["checkpoint_after"] == o["checkpoint_before"], ctx
                        assert before[p] == after[p], ctx
                    elif p in ("m", "rd") and o["dirty_rows"] > 0:
                        # the high-water rule on what this run scanned: its last row's block is maxBn
                        max_bn, prev, n = after[p][0], o["checkpoint_before"], o["dirty_rows"]
                        cand = max_bn - 1 if n >= batch else max_bn
                        assert o["checkpoint_after"] == (cand if cand > prev else prev), ctx
                    last_cp[p] = o["checkpoint_after"]
                if all(o["dirty_rows"] == 0 for o in out):
                    break
                assert runs < bound, f"sync {sync_no}: no convergence within {bound} runs"
            max_runs = max(max_runs, runs)
            for p in PROCESSORS:
                if not active[p]:
                    hits["inactive_run"] += 1
            t = time.time()
            apply_full_scan_reference(conn, sync_no)
            timing["reference"] += time.time() - t
            new_by = dict(conn.execute("SELECT challenge_id, count(*) FROM ref_user_challenges WHERE sync_no = %s "
                                       "GROUP BY 1", (sync_no,)).fetchall())
            for p in PROCESSORS:
                hits[f"{p}_completion"] += new_by.get(p, 0)
            # verification flips that changed an outcome: a new r/rv row for a referrer whose
            # verification changed since the last sync, for a referral that was already there then
            now_verified = dict(conn.execute("SELECT user_id, is_verified FROM users WHERE is_current").fetchall())
            flipped = [u for u, v in now_verified.items() if u in prev_verified and prev_verified[u] != v]
            if flipped:
                (n,) = conn.execute(
                    "SELECT count(*) FROM ref_user_challenges r JOIN user_events e ON e.is_current "
                    "AND e.referrer = r.user_id AND ref_spec(e.referrer) || ':' || ref_spec(e.user_id) = r.specifier "
                    "WHERE r.sync_no = %s AND r.challenge_id = ANY(%s) AND r.user_id = ANY(%s) "
                    "AND e.blocknumber <= %s",
                    (sync_no, [p for p in ("r", "rv") if prev_active[p]], flipped, last_sync_block)).fetchone()
                hits["verification_flip_changed_outcome"] += n
            prev_verified = now_verified
            prev_active = dict(active)
            # blocks of this interval holding more qualifying rows than one batch
            (crowded,) = conn.execute(
                "SELECT count(*) FROM (SELECT blocknumber FROM user_events WHERE blocknumber > %s AND is_current "
                "GROUP BY blocknumber HAVING count(*) FILTER (WHERE is_mobile_user) > %s "
                "OR count(*) FILTER (WHERE referrer IS NOT NULL) > %s) b", (last_sync_block, batch, batch)).fetchone()
            hits["crowded_block_gt_batch"] += crowded
            last_sync_block = block_now
            t = time.time()
            diffs = compare(conn)
            timing["compare"] += time.time() - t
            assert diffs == [], f"sync {sync_no}: function and full-scan reference differ:\n" + \
                "\n".join(map(str, diffs))
            w = warnings_of(notices)
            assert w == [], f"sync {sync_no}: WARNINGs {w}"
        total_rows = dict(conn.execute("SELECT challenge_id, count(*) FROM user_challenges GROUP BY 1").fetchall())
        (ue_rows,) = conn.execute("SELECT count(*) FROM user_events").fetchone()
    finally:
        conn.close()

    hits["supersession"] = stream.counts.get("supersede", 0)
    hits["users_update_in_place"] = stream.counts.get("users_update", 0)
    hits["users_new_row_retire_old"] = stream.counts.get("users_replace", 0)
    hits["catalog_amount_change"] = stream.counts.get("catalog_amount", 0)
    hits["catalog_reactivate"] = stream.counts.get("catalog_reactivate", 0)
    hits["crowded_users_block_gt_batch"] = stream.counts.get("crowded_users_block", 0)
    summary = {"batch": batch, "timezone": timezone, "ordinary_ops": stream.ordinary_ops,
               "crowded_block_rows": stream.crowded_rows, "user_events_rows": ue_rows, "syncs": sync_no,
               "max_runs_per_sync": max_runs, "user_challenges": total_rows, "hits": dict(sorted(hits.items())),
               "seconds": round(time.time() - t0, 1), "timing": {k: round(v, 1) for k, v in timing.items()}}
    print(f"\n[challenges differential {tag}] {json.dumps(summary)}")
    print(f"[challenges differential] {TOTAL_DIFF_OPS} ordinary ops over {len(DIFF_PARAMS)} runs "
          f"({OPS}, plus the rows of the crowded blocks)")
    required = ["m_completion", "r_completion", "rv_completion", "rd_completion", "verification_flip_changed_outcome",
                "crowded_block_gt_batch", "inactive_run", "supersession", "users_update_in_place",
                "users_new_row_retire_old", "catalog_amount_change", "catalog_reactivate"]
    if batch <= 100:        # (blocks with > 5000 users rows are not generated for batch 5000)
        required.append("crowded_users_block_gt_batch")
    low = {k: hits[k] for k in required if hits[k] < 5}
    assert not low, f"rules hit fewer than 5 times: {low}"


# ================================================================================================
# 2. the improvements are real
# ================================================================================================
def test_go_job_rules_miss_crowded_block_and_verification_flip(fresh):
    """The Go challenge job's rules (emulated in harness.challenges.GoJobEmulator: checkpoint-only
    resume, high-water `maxBn-1 if scanned >= batch and maxBn-1 > prev else maxBn`, no users scan)
    miss (a) the rest of a block holding more rows than the batch and (b) referrals whose referrer
    becomes verified later (UPDATE in place, or new users row) or gets its users row only after the
    referral. The full scan and the function find all of them; the function's rows equal the full
    scan's."""
    conn = fresh
    # (a) batch 3: block 10 one row, block 11 five rows (all mobile, referred by 100: unverified)
    user(conn, 100, 5)
    ue(conn, 10, 1, 100, mobile=True)
    for u in range(2, 7):
        ue(conn, 11, u, 100, mobile=True)
    go_job = GoJobEmulator(conn)
    go_job.converge(3)
    runs = converge(conn, 3)
    assert len(runs) >= 2
    apply_full_scan_reference(conn, 1)
    assert compare(conn) == []
    full = keys(conn, "ref_user_challenges")
    missed_a = full - keys(conn, "go_job_user_challenges")
    assert missed_a == {("m", "5"), ("m", "6"), ("r", "64:5"), ("r", "64:6"), ("rd", "5:64"), ("rd", "6:64")}, missed_a
    assert go_job.cp == {"m": 11, "r": 11, "rv": 11, "rd": 11}

    # (b) referrals by unverified 60, 61 and by 62 (no users row yet)
    user(conn, 60, 20)
    user(conn, 61, 20)
    ue(conn, 21, 50, 60)
    ue(conn, 21, 51, 61)
    ue(conn, 21, 52, 62)
    go_job.converge(3)
    converge(conn, 3)
    apply_full_scan_reference(conn, 2)
    assert compare(conn) == []
    assert full | {("r", "3c:32"), ("r", "3d:33"), ("rd", "32:3c"), ("rd", "33:3d"), ("rd", "34:3e")} == \
        keys(conn, "ref_user_challenges")
    assert keys(conn, "ref_user_challenges") - keys(conn, "go_job_user_challenges") == missed_a
    # ... then 60 is verified in place, 61 gets a new verified row, 62 gets its first users row (verified)
    conn.execute("UPDATE users SET is_verified = true, blocknumber = 30 WHERE user_id = 60 AND is_current")
    conn.execute("UPDATE users SET is_current = false WHERE user_id = 61 AND is_current")
    user(conn, 61, 31, verified=True, tx="tx-61-b")
    user(conn, 62, 32, verified=True)
    assert go_job.converge(3) == 1                 # nothing dirty for the Go job
    runs = converge(conn, 3)
    assert by_id(runs[0])["rv"]["upserts"] == 3
    apply_full_scan_reference(conn, 3)
    assert compare(conn) == []
    missed_b = keys(conn, "ref_user_challenges") - keys(conn, "go_job_user_challenges") - missed_a
    assert missed_b == {("rv", "3c:32"), ("rv", "3d:33"), ("rv", "3e:34")}, missed_b


# ================================================================================================
# 3. checkpoints
# ================================================================================================
def test_rows_at_or_below_checkpoint_are_never_touched(fresh):
    """Mirror of the Go job's TestMobileInstall_SkipsRowsBelowCheckpoint. With the four
    checkpoints at 100, rows at blocks 90 and 100 produce nothing, rows at 101 and 150 do (m, r, rd);
    the checkpoints move to 150. A late row below the checkpoint is not seen and the checkpoint does
    not move back; a DBA moving the checkpoint back wins over the stored position (rescan)."""
    conn = fresh
    user(conn, 500, 50)                            # the referrer: unverified, below the checkpoint
    for p in PROCESSORS:
        set_checkpoint(conn, p, 100)
    for uid, block in ((1, 90), (2, 100), (3, 101), (4, 150)):
        ue(conn, block, uid, 500, mobile=True)
    runs = converge(conn, 5000)
    first = by_id(runs[0])
    assert [first[p]["dirty_rows"] for p in PROCESSORS] == [2, 2, 2, 2]
    assert all(first[p]["checkpoint_before"] == 100 and first[p]["checkpoint_after"] == 150 for p in PROCESSORS)
    assert keys(conn) == {("m", "3"), ("m", "4"), ("r", "1f4:3"), ("r", "1f4:4"), ("rd", "3:1f4"), ("rd", "4:1f4")}
    assert checkpoints(conn) == {p: 150 for p in PROCESSORS}

    # a late row below the checkpoint: not seen, checkpoint stays
    ue(conn, 120, 5, 500, mobile=True)
    out = by_id(run_once(conn, 5000))
    assert all(out[p]["dirty_rows"] == 0 and out[p]["checkpoint_after"] == 150 for p in PROCESSORS), out
    assert ("m", "5") not in keys(conn)
    assert checkpoints(conn) == {p: 150 for p in PROCESSORS}

    # the DBA resets m's checkpoint to 0: the reset wins over the stored (blocknumber, id) position
    set_checkpoint(conn, "m", 0)
    out = by_id(run_once(conn, 5000))
    assert out["m"]["checkpoint_before"] == 0 and out["m"]["dirty_rows"] == 5 and out["m"]["checkpoint_after"] == 150
    assert {s for c, s in keys(conn) if c == "m"} == {"1", "2", "3", "4", "5"}


def test_seed_challenge_checkpoints_makes_first_run_a_no_op(fresh):
    """seed_challenge_checkpoints() sets the absent checkpoints to max(user_events
    .blocknumber) (an existing one is kept: ON CONFLICT DO NOTHING), pins the r/rv users scan to
    max(users.blocknumber) (users rows past the user_events head, with flips, are not re-derived), and
    the first run after it is a no-op: dirty_rows 0, upserts 0, no user_challenges. It is idempotent.
    On an empty database it seeds 0. New rows after it are processed normally."""
    conn = fresh
    out = conn.execute("SELECT * FROM audius_indexer.seed_challenge_checkpoints()").fetchall()
    assert out == [(f"challenges:{p}:last_blocknumber", 0) for p in PROCESSORS]
    conn.execute("DELETE FROM indexing_checkpoints")
    conn.execute("UPDATE audius_indexer.challenge_processor_state SET users_block = NULL")

    rng = random.Random(SEED)
    for uid in range(1, 40):
        user(conn, uid, rng.randint(1, 50), verified=rng.random() < 0.3)
    for uid in range(100, 200):
        ue(conn, 10 + uid // 3, uid, rng.choice([None, rng.randint(1, 39)]), mobile=rng.random() < 0.5)
    # users rows changed after the last user_events block (verification flips at 80..90)
    for uid in range(1, 20):
        conn.execute("UPDATE users SET is_verified = NOT is_verified, blocknumber = %s WHERE user_id = %s",
                     (80 + uid % 10, uid))
    ue_head = conn.execute("SELECT max(blocknumber) FROM user_events").fetchone()[0]
    users_head = conn.execute("SELECT max(blocknumber) FROM users").fetchone()[0]
    assert users_head > ue_head
    out = conn.execute("SELECT * FROM audius_indexer.seed_challenge_checkpoints()").fetchall()
    assert out == [(f"challenges:{p}:last_blocknumber", ue_head) for p in PROCESSORS]
    pos = positions(conn)
    assert pos["r"][3] == users_head and pos["rv"][3] == users_head
    assert conn.execute("SELECT * FROM audius_indexer.seed_challenge_checkpoints()").fetchall() == out
    # referrals of the users changed past the user_events head exist: without the pin r/rv would work
    (n,) = conn.execute("SELECT count(*) FROM user_events WHERE is_current AND referrer < 20").fetchone()
    assert n > 5

    first = run_once(conn, 5000)
    assert [(o["dirty_rows"], o["users"], o["upserts"], o["error"]) for o in first] == [(0, 0, 0, None)] * 4, first
    assert conn.execute("SELECT count(*) FROM user_challenges").fetchone()[0] == 0
    assert checkpoints(conn) == {p: ue_head for p in PROCESSORS}

    # normal processing afterwards
    ue(conn, ue_head + 5, 300, 1, mobile=True)
    runs = converge(conn, 5000)
    assert by_id(runs[0])["m"]["upserts"] == 1 and by_id(runs[0])["rd"]["upserts"] == 1
    assert ("m", "12c") in keys(conn) and ("rd", "12c:1") in keys(conn)
    assert checkpoints(conn) == {p: ue_head + 5 for p in PROCESSORS}

    # an existing checkpoint is kept (ON CONFLICT DO NOTHING), the others are not touched
    set_checkpoint(conn, "rd", 42)
    out = conn.execute("SELECT * FROM audius_indexer.seed_challenge_checkpoints()").fetchall()
    assert out == [(f"challenges:{p}:last_blocknumber", 42 if p == "rd" else ue_head + 5) for p in PROCESSORS]


def test_inactive_or_missing_challenge_keeps_checkpoint_and_does_nothing(fresh):
    """`r` inactive and `rd` without a catalog row: both report dirty_rows 0, upserts 0,
    error NULL, keep their checkpoint (and positions) and write nothing, while m and rv run. Once r is
    active again and rd's row is back, they catch up to the full-scan reference."""
    conn = fresh
    user(conn, 10, 1)
    user(conn, 11, 1, verified=True)
    for uid in range(20, 30):
        ue(conn, uid, uid, 10 if uid % 2 else 11, mobile=uid % 3 == 0)
    conn.execute("UPDATE challenges SET active = false WHERE id = 'r'")
    conn.execute("DELETE FROM challenges WHERE id = 'rd'")
    set_checkpoint(conn, "r", 5)
    before = positions(conn)
    out = by_id(run_once(conn, 5000))
    for p, cp in (("r", 5), ("rd", 0)):
        assert (out[p]["dirty_rows"], out[p]["users"], out[p]["upserts"], out[p]["error"]) == (0, 0, 0, None), out[p]
        assert out[p]["checkpoint_before"] == out[p]["checkpoint_after"] == cp
    assert out["m"]["upserts"] == 3 and out["rv"]["upserts"] == 5
    assert checkpoints(conn) == {"m": 27, "r": 5, "rv": 29, "rd": None}
    after = positions(conn)
    assert after["r"] == before["r"] and after["rd"] == before["rd"]
    assert {c for c, _ in keys(conn)} == {"m", "rv"}

    conn.execute("UPDATE challenges SET active = true WHERE id = 'r'")
    conn.execute("INSERT INTO challenges (id, type, amount, active, step_count, starting_block, weekly_pool, "
                 "cooldown_days) VALUES ('rd', 'boolean', '2', true, NULL, 25346436, 25000, 7)")
    out = by_id(converge(conn, 5000)[0])
    assert out["r"]["upserts"] == 5 and out["rd"]["upserts"] == 10
    apply_full_scan_reference(conn, 1)
    assert compare(conn) == []
    assert conn.execute("SELECT DISTINCT amount FROM user_challenges WHERE challenge_id = 'rd'").fetchall() == [(2,)]


def test_failing_processor_reports_error_and_rolls_back_only_itself(fresh):
    """r hits a CHECK constraint (23514) and rv an amount out of range for
    user_challenges.amount (22003): each reports "SQLSTATE: message", keeps its checkpoint and
    position and writes nothing, while m and rd succeed in the same run. After the causes are removed,
    r and rv catch up; the result equals the full-scan reference."""
    conn = fresh
    user(conn, 10, 1)
    user(conn, 11, 1, verified=True)
    for uid in range(20, 30):
        ue(conn, uid, uid, 10 if uid % 2 else 11, mobile=uid % 3 == 0)
    set_checkpoint(conn, "r", 19)
    set_checkpoint(conn, "rv", 19)
    conn.execute("ALTER TABLE user_challenges ADD CONSTRAINT test_no_r CHECK (challenge_id <> 'r') NOT VALID")
    conn.execute("UPDATE challenges SET amount = '3000000000' WHERE id = 'rv'")
    before = positions(conn)
    out = by_id(run_once(conn, 5000))
    assert out["r"]["error"].startswith("23514: ") and "test_no_r" in out["r"]["error"], out["r"]
    assert out["rv"]["error"].startswith("22003: "), out["rv"]
    for p in ("r", "rv"):
        # its own work rolled back: the row reports the checkpoint where it stays (set above)
        assert (out[p]["checkpoint_before"], out[p]["checkpoint_after"], out[p]["upserts"]) == (19, 19, 0), out[p]
    for p in ("m", "rd"):
        assert out[p]["error"] is None and out[p]["checkpoint_after"] == (27 if p == "m" else 29) and out[p]["upserts"] > 0, out[p]
    assert checkpoints(conn) == {"m": 27, "r": 19, "rv": 19, "rd": 29}
    assert positions(conn) == {**positions(conn), "r": before["r"], "rv": before["rv"]}
    assert {c for c, _ in keys(conn)} == {"m", "rd"}

    conn.execute("ALTER TABLE user_challenges DROP CONSTRAINT test_no_r")
    conn.execute("UPDATE challenges SET amount = '1' WHERE id = 'rv'")
    out = by_id(converge(conn, 5000)[0])
    assert out["r"]["upserts"] == 5 and out["rv"]["upserts"] == 5 and out["m"]["dirty_rows"] == 0
    apply_full_scan_reference(conn, 1)
    assert compare(conn) == []


@pytest.mark.parametrize("batch", [0, -1, -2147483648])
def test_batch_below_one_is_rejected(fresh, batch):
    """batch < 1 -> ERROR with SQLSTATE 22023, nothing run or recorded."""
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        fresh.execute("SELECT * FROM audius_indexer.process_user_event_challenges(%s)", (batch,))
    assert e.value.diag.sqlstate == "22023"
    assert fresh.execute("SELECT sum(runs) FROM audius_indexer.challenge_processor_state").fetchone()[0] == 0


# ================================================================================================
# 4. trigger interaction
# ================================================================================================
def _expected_upserts(conn, since: dict[str, int], hi: int) -> list[tuple[str, int, str, int]]:
    """The upserts one run makes for the rows of blocks (since[p], hi], in the function's order:
    processors m, r, rv, rd; within one, the dirty users in first-seen order by (blocknumber, id)
    then user_events id; r/rv then the referrers of the users rows of (since[p], hi] in first-seen order by
    (blocknumber, user_id, txhash); one upsert per specifier."""
    out = []
    for p in PROCESSORS:
        active, amount = conn.execute("SELECT active, ref_amount_int(amount) FROM challenges WHERE id = %s",
                                      (p,)).fetchone()
        if not active:
            continue
        lo = since[p]
        flt = "is_mobile_user = true" if p == "m" else "referrer IS NOT NULL"
        dirty = [u for (u,) in conn.execute(
            f"SELECT user_id FROM user_events WHERE blocknumber > %s AND blocknumber <= %s AND is_current "
            f"AND {flt} ORDER BY blocknumber, id", (lo, hi))]
        pairs = recompute_pairs(conn, p, first_seen(dirty))
        if p in ("r", "rv"):
            refs = [u for (u,) in conn.execute(
                "SELECT user_id FROM users WHERE blocknumber > %s AND blocknumber <= %s "
                "ORDER BY blocknumber, user_id, txhash", (lo, hi))]
            pairs += pairs_by_referrer(conn, p, first_seen(refs))
        out += [(p, rec, sp, amount) for rec, sp in dedupe_completions(p, pairs)]
    return out


NOTIF_SQL = ("SELECT type, specifier, group_id, user_ids::text, data::text, \"timestamp\" IS NULL, blocknumber, slot "
             "FROM notification ORDER BY group_id, specifier")


def test_processor_completions_notify_like_plain_upserts(pg):
    """Database A runs the processors; database B gets the same rows and the same
    upserts as plain INSERT ... ON CONFLICT statements (order: m, r, rv, rd; within a processor the
    dirty users in first-seen order by (blocknumber, id), then user_events id; r/rv then the
    referrers of changed users rows; one per specifier; each phase in one transaction). Both fire the
    Rust on_user_challenge trigger. Between phases the clock is moved back 2 hours in both (completed_at
    and notification timestamps) so new 1-hour windows open. notification (type, specifier, group_id,
    user_ids, data, blocknumber, slot; timestamp NULL-alike), user_score_features and user_challenges
    must be identical; reward_in_cooldown is at most one per user per window; no WARNING."""
    make_db(pg, "notif_proc")
    make_db(pg, "notif_plain")
    mark = len(pg.log_text())
    a = pg.connect("notif_proc", options="-c TimeZone=America/New_York")
    b = pg.connect("notif_plain", options="-c TimeZone=America/New_York")
    na, nb = Notices(a), Notices(b)
    rng = random.Random(SEED + 4)
    stream_users: list[int] = []
    verified: dict[int, bool] = {}
    block = 100
    total_upserts = 0
    since = {p: 0 for p in PROCESSORS}
    try:
        for phase in range(5):
            block += 1                       # a phase never adds rows to the previous phase's block
            ops = []
            for _ in range(60):
                block += rng.randint(0, 1)
                x = rng.random()
                if x < 0.45 or not stream_users:
                    uid = 10_000 + len(stream_users)
                    ref = rng.choice(stream_users[-40:]) if stream_users and rng.random() < 0.7 else None
                    ops.append(("ue", block, uid, ref, rng.random() < 0.5))
                    if rng.random() < 0.7:
                        verified[uid] = rng.random() < 0.3
                        ops.append(("user", block, uid, verified[uid]))
                    stream_users.append(uid)
                elif x < 0.7:
                    uid = rng.choice(stream_users)
                    ref = rng.choice(stream_users) if rng.random() < 0.6 else None
                    ops.append(("supersede", block, uid, ref, rng.random() < 0.5))
                else:
                    cands = [u for u in stream_users if u in verified]
                    if cands:
                        uid = rng.choice(cands)
                        verified[uid] = not verified[uid]
                        ops.append(("flip", block, uid, verified[uid]))
            if phase == 3:
                ops.append(("catalog", "UPDATE challenges SET amount = '5' WHERE id = 'rd'"))
                ops.append(("catalog", "UPDATE challenges SET active = false WHERE id = 'r'"))
            if phase == 4:
                ops.append(("catalog", "UPDATE challenges SET active = true WHERE id = 'r'"))
            for conn in (a, b):
                with conn.transaction():
                    for op in ops:
                        if op[0] == "ue":
                            ue(conn, op[1], op[2], op[3], op[4])
                        elif op[0] == "user":
                            user(conn, op[2], op[1], op[3])
                        elif op[0] == "supersede":
                            new_id = ue(conn, op[1], op[2], op[3], op[4])
                            conn.execute("UPDATE user_events SET is_current = false WHERE user_id = %s AND is_current "
                                         "AND id <> %s", (op[2], new_id))
                        elif op[0] == "flip":
                            conn.execute("UPDATE users SET is_verified = %s, blocknumber = %s WHERE user_id = %s "
                                         "AND is_current", (op[3], op[1], op[2]))
                        else:
                            conn.execute(op[1])
            hi = block
            # A: the processors, one run (batch 5000 covers the phase), then nothing left
            out = by_id(run_once(a, 5000))
            assert all(o["error"] is None for o in out.values()), out
            assert all(o["dirty_rows"] == 0 for o in run_once(a, 5000))
            # B: the same upserts as plain statements, in the same order, in one transaction
            plan = _expected_upserts(b, since, hi)
            for p in PROCESSORS:
                if b.execute("SELECT active FROM challenges WHERE id = %s", (p,)).fetchone()[0]:
                    since[p] = hi
            for p in PROCESSORS:
                assert out[p]["upserts"] == sum(1 for x in plan if x[0] == p), (phase, p, out[p])
            with b.transaction():
                for cid, rec, sp, amount in plan:
                    b.execute(PLAIN_UPSERT, (cid, rec, sp, amount))
            total_upserts += len(plan)
            assert uc_rows(a) == uc_rows(b), f"phase {phase}: user_challenges differ"
            na_rows, nb_rows = a.execute(NOTIF_SQL).fetchall(), b.execute(NOTIF_SQL).fetchall()
            assert na_rows == nb_rows, f"phase {phase}: notifications differ:\n" + "\n".join(
                map(str, set(na_rows) ^ set(nb_rows)))
            sf = "SELECT user_id, challenge_count FROM user_score_features ORDER BY 1"
            assert a.execute(sf).fetchall() == b.execute(sf).fetchall()
            dup = a.execute("SELECT user_ids, count(*) FROM notification WHERE type = 'reward_in_cooldown' "
                            "AND \"timestamp\" > localtimestamp - interval '1 hour' GROUP BY 1 HAVING count(*) > 1").fetchall()
            assert dup == [], dup
            assert warnings_of(na) == [] and warnings_of(nb) == []
            for conn in (a, b):      # two hours pass
                conn.execute("UPDATE notification SET \"timestamp\" = \"timestamp\" - interval '2 hours'")
                conn.execute("UPDATE user_challenges SET completed_at = completed_at - interval '2 hours'")
        n_notif = a.execute("SELECT count(*), count(DISTINCT user_ids) FROM notification "
                            "WHERE type = 'reward_in_cooldown'").fetchone()
        assert n_notif[0] > n_notif[1] > 20, n_notif      # users notified again in later windows
        (scored,) = a.execute("SELECT count(*) FROM user_score_features WHERE challenge_count > 0").fetchone()
        assert scored > 10, scored                         # the trigger's score upsert is exercised too
        assert total_upserts > 200
    finally:
        a.close()
        b.close()
    warn = [ln for ln in pg.log_text()[mark:].splitlines() if "WARNING" in ln]
    assert warn == []


# ================================================================================================
# 5. status view
# ================================================================================================
def test_status_view_reflects_runs(fresh):
    """challenge_processor_status after runs: one row per processor in order m, r, rv,
    rd; last_run_at set; last_dirty_rows / last_users / last_upserts equal the function's output;
    checkpoint equals indexing_checkpoints; head_blocknumber = max(user_events.blocknumber);
    lag_blocks = head - checkpoint; runs / errors / total_upserts count; last_error ("SQLSTATE:
    message") with last_error_at = last_run_at after a failing run; after a good run the error is no
    longer current (last_error_at < last_run_at)."""
    conn = fresh
    view = "SELECT * FROM audius_indexer.challenge_processor_status"
    rows = conn.execute(view).fetchall()
    cols = [d.name for d in conn.execute(view + " LIMIT 0").description]
    st = [dict(zip(cols, r)) for r in rows]
    assert [s["challenge_id"] for s in st] == list(PROCESSORS)
    assert all(s["last_run_at"] is None and s["runs"] == 0 for s in st)

    user(conn, 10, 1)
    for uid in range(20, 32):
        ue(conn, uid, uid, 10, mobile=True)
    ue(conn, 40, 99, None, mobile=False)           # the head, no qualifying row
    out = by_id(run_once(conn, 5))
    st = {s["challenge_id"]: s for s in (dict(zip(cols, r)) for r in conn.execute(view).fetchall())}
    cps = checkpoints(conn)
    for p in PROCESSORS:
        s, o = st[p], out[p]
        assert s["last_run_at"] is not None
        assert (s["last_dirty_rows"], s["last_users"], s["last_upserts"]) == (o["dirty_rows"], o["users"], o["upserts"])
        assert s["checkpoint"] == (cps[p] or 0) == o["checkpoint_after"]
        assert s["head_blocknumber"] == 40
        assert s["lag_blocks"] == 40 - s["checkpoint"]
        assert s["runs"] == 1 and s["errors"] == 0 and s["last_error"] is None
        assert s["total_upserts"] == o["upserts"]
    assert st["m"]["checkpoint"] == 23 and st["m"]["lag_blocks"] == 17 and st["m"]["last_upserts"] == 5
    assert st["m"]["position_blocknumber"] == 24

    conn.execute("ALTER TABLE user_challenges ADD CONSTRAINT test_no_rd CHECK (challenge_id <> 'rd') NOT VALID")
    run_once(conn, 5)
    st = {r[0]: dict(zip(cols, r)) for r in conn.execute(view).fetchall()}
    # the error is current: last_error_at = last_run_at (docs/sql-reference.md)
    assert st["rd"]["last_error"].startswith("23514: ") and st["rd"]["last_error_at"] == st["rd"]["last_run_at"]
    assert st["rd"]["errors"] == 1 and st["rd"]["runs"] == 2 and st["rd"]["checkpoint"] == 23
    assert st["m"]["last_error"] is None and st["m"]["total_upserts"] == 10
    err_at = st["rd"]["last_error_at"]
    conn.execute("ALTER TABLE user_challenges DROP CONSTRAINT test_no_rd")
    converge(conn, 5)
    st = {r[0]: dict(zip(cols, r)) for r in conn.execute(view).fetchall()}
    # no longer current: kept for the record (or cleared), last_error_at before last_run_at
    assert st["rd"]["last_error_at"] == err_at < st["rd"]["last_run_at"] and st["rd"]["errors"] == 1
    assert st["rd"]["last_error"] is None or st["rd"]["last_error"].startswith("23514: ")
    assert all(st[p]["last_error"] is None for p in ("m", "r", "rv"))
    assert st["rd"]["total_upserts"] == 12
    for p in PROCESSORS:
        assert st[p]["lag_blocks"] == 40 - st[p]["checkpoint"]


# ================================================================================================
# 6. privileges
# ================================================================================================
def test_privileges_operator_and_plain_role(pg, fresh):
    """A login role granted audius_indexer_operator can call
    process_user_event_challenges() (writing user_challenges as the owner), seed_challenge_checkpoints()
    and read challenge_processor_status; a plain role cannot (42501), also with USAGE on the schema."""
    conn = fresh
    conn.execute("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ch_op') THEN "
                 "CREATE ROLE ch_op LOGIN; END IF; "
                 "IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ch_plain') THEN CREATE ROLE ch_plain LOGIN; "
                 "END IF; END $$")
    conn.execute("GRANT audius_indexer_operator TO ch_op")
    user(conn, 10, 1)
    ue(conn, 5, 20, 10, mobile=True)
    with pg.connect(conn.dbname_, user="ch_op") as op:
        assert op.execute("SELECT current_user").fetchone()[0] == "ch_op"
        out = op.execute("SELECT challenge_id, upserts, error FROM audius_indexer.process_user_event_challenges()").fetchall()
        assert out == [("m", 1, None), ("r", 1, None), ("rv", 0, None), ("rd", 1, None)]
        assert len(op.execute("SELECT * FROM audius_indexer.challenge_processor_status").fetchall()) == 4
        assert len(op.execute("SELECT * FROM audius_indexer.seed_challenge_checkpoints()").fetchall()) == 4
    assert len(keys(conn)) == 3
    stmts = ["SELECT * FROM audius_indexer.process_user_event_challenges()",
             "SELECT * FROM audius_indexer.process_user_event_challenges(10)",
             "SELECT * FROM audius_indexer.challenge_processor_status",
             "SELECT * FROM audius_indexer.seed_challenge_checkpoints()"]
    for grant_usage in (False, True):
        if grant_usage:
            conn.execute("GRANT USAGE ON SCHEMA audius_indexer TO ch_plain")
        with pg.connect(conn.dbname_, user="ch_plain") as plain:
            for sql in stmts:
                with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
                    plain.execute(sql)
                assert e.value.diag.sqlstate == "42501", (sql, grant_usage)
    conn.execute("REVOKE USAGE ON SCHEMA audius_indexer FROM ch_plain")
    assert conn.execute("SELECT sum(runs) FROM audius_indexer.challenge_processor_state").fetchone()[0] == 4


# ================================================================================================
# 3 (continued). Last in the file: it fails against the current build (see its docstring), and
# `pytest -x` should run everything else first.
# ================================================================================================
def test_checkpoint_equals_go_job_high_water_when_no_block_exceeds_batch(fresh):
    """When no block holds more rows than the batch the Go job's rule never skips a row, so the
    checkpoints the function writes must be the Go job's: after convergence, each processor's
    checkpoint equals the one the emulated Go job reaches on the same rows (and the rows agree).

    Minimal case first: 4 mobile rows in blocks 1..4, batch 4. The Go job: run 1 scans 4 rows -> 3;
    run 2 rescans block 4 (1 row, partial batch) -> 4. The function must also end at 4 (not stay
    at 3 with lag_blocks 1 although nothing is pending). Then random blocks of 1..3 rows, batch 4."""
    conn = fresh
    go_job = GoJobEmulator(conn)
    mismatches = []
    for b in range(1, 5):
        ue(conn, b, b, None, mobile=True)
    go_job.converge(4)
    converge(conn, 4)
    if checkpoints(conn)["m"] != go_job.cp["m"]:
        lag = conn.execute("SELECT checkpoint, lag_blocks FROM audius_indexer.challenge_processor_status "
                           "WHERE challenge_id = 'm'").fetchone()
        mismatches.append(f"minimal case (4 rows in blocks 1..4, batch 4): m checkpoint {checkpoints(conn)['m']}, "
                          f"Go job {go_job.cp['m']}; status (checkpoint, lag_blocks) = {lag} with nothing pending")
    assert uc_rows(conn) == uc_rows(conn, "go_job_user_challenges")

    rng = random.Random(SEED + 3)
    block, uid = 10, 1000
    user(conn, 7, 1)
    user(conn, 8, 1, verified=True)
    for step in range(12):
        for _ in range(rng.randint(1, 9)):
            block += rng.randint(1, 2)
            for _ in range(rng.randint(1, 3)):
                uid += 1
                ue(conn, block, uid, rng.choice([None, 7, 8]), mobile=rng.random() < 0.6)
        go_job.converge(4)
        converge(conn, 4)
        got, want = checkpoints(conn), {p: go_job.cp[p] or None for p in PROCESSORS}
        if got != want:
            mismatches.append(f"step {step}: function {got} vs Go job {want}")
        assert uc_rows(conn) == uc_rows(conn, "go_job_user_challenges"), f"step {step}: rows differ"
    assert not mismatches, "checkpoints differ from the Go job's high-water values:\n" + "\n".join(mismatches)
