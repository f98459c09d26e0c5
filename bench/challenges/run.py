#!/usr/bin/env python3
"""Benchmark of the challenge processors m, r, rv, rd: the Go challenge job's wedge, reproduced.

`make bench-challenges` (after `make install`). Not a test: prints a table, writes it to
bench/results/challenges-<date>.txt and exits 0 unless something breaks. One throwaway cluster:

1. Data (set-based SQL, deterministic seeds):
   - notification: 5,000,000 rows over 30 types as in bench/triggers (reward_in_cooldown ~3.5%,
     heavy-tailed user ids, the heaviest users at small ids), timestamps over the 365 days before
     the run, ix_notification + uq_notification as in Audius, then sql/indexes.sql (the partial
     GINs, ix_user_events_blocknumber, ix_user_events_referrer);
   - users / user_events: 2,000,000 users, 2,300,000 user_events rows (15% of the users have a
     second, later version: the first becomes is_current = false), strictly increasing block
     numbers (~2.5 signups per block), 25% mobile users, 10% with a referrer (an earlier user,
     heavy-tailed: user 1 referred ~2,400), a users row per user_events version (same block
     number), ~1.6% verified (30% of the first 2,000 users);
   - user_challenges: 1,000,000 rows of other challenges (the user_score_features recount has work);
   - indexing_checkpoints: the four challenge checkpoints at 0 (nothing processed yet).
2. On that data, the first --any-completions (200) completions of the catch-up, timed per
   completion on the server (two timing triggers around on_user_challenge: `bench_t0` before it,
   `zz_bench_t1` after it, AFTER ROW triggers fire in name order), once with the Rust trigger and
   once with Audius's PL/pgSQL `= ANY(user_ids)` trigger (tests/sql/reference_triggers.sql); both
   rolled back (then VACUUM). The `= ANY` catch-up itself would take days, so its total is
   EXTRAPOLATED: completions of the real catch-up x mean `= ANY` trigger time per completion (a
   lower bound: the trigger alone, no scan/upsert/commit).
3. The real catch-up with the Rust trigger, run to the end: process_user_event_challenges(--batch)
   called in autocommit (one transaction per run, like the background worker) until a run returns
   dirty_rows = 0 for all four processors. Wall time, runs, per-run median/p95, rows/s,
   completions. It runs with ix_notification_cooldown_user_ids WITH (fastupdate = off): with
   fastupdate = on (the PostgreSQL default, how sql/indexes.sql created it before this bench) every
   new reward_in_cooldown row goes to the GIN pending list, which every cooldown lookup scans
   linearly, so the catch-up slows down as it goes and takes hours; that catch-up runs afterwards
   from the same start (reset), capped at --shipped-minutes, and its total is EXTRAPOLATED from its
   last runs (a lower bound).
4. Empty dirty set: --idle-runs more runs with nothing new: server-side and round-trip time,
   median and p95 (acceptance: median < 20 ms); then the plans: EXPLAIN ANALYZE of the dirty scans
   (statements parsed from src/challenges/statements.rs, with the parameters the function passes)
   at the start (checkpoint 0) and at the head, and auto_explain of one empty run (nested
   statements) to show what the function itself executed.

Options: --users, --events, --notifications, --user-challenges, --mobile, --referral, --batch,
--any-completions, --idle-runs, --skip-any, --shipped-minutes (0: to the end, -1: skip),
--keep (leave the cluster running), --out FILE.
"""
from __future__ import annotations

import argparse
import datetime as dt
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # bench.common, also when started as a script

from bench.common import (LARGE_DATA_SETTINGS, finish, hms, insert_notifications, log, machine, out,
                          report_header, run_indexes_sql, start_cluster, stats)
from harness.pg import Cluster
from harness.triggers import FIXTURE_SQL, reference_sql, require_extension_installed

STATEMENTS_RS = REPO / "src" / "challenges" / "statements.rs"
PROCESSORS = ["m", "r", "rv", "rd"]
BASE_BLOCK = 25_000_000
CALL = ("SELECT challenge_id, dirty_rows, users, upserts, checkpoint_before, checkpoint_after, error "
        "FROM audius_indexer.process_user_event_challenges(%s)")

# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------
def drop_indexes(conn, table: str) -> list[str]:
    """Drops the indexes and PK/unique constraints of `table`; returns the statements recreating them."""
    cons = conn.execute("""
        SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
        WHERE conrelid = %s::regclass AND contype IN ('p', 'u')""", (table,)).fetchall()
    idx = conn.execute("""
        SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = %s::regclass
          AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)""", (table,)).fetchall()
    for name, _ in cons:
        conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _ in idx:
        conn.execute(f'DROP INDEX "{name}"')
    return ([f'ALTER TABLE {table} ADD CONSTRAINT "{n}" {d}' for n, d in cons] + [d for _, d in idx])


def populate(conn, a) -> None:
    conn.execute("SET maintenance_work_mem = '1GB'")
    conn.execute("SET max_parallel_maintenance_workers = 2")
    conn.execute("SET work_mem = '1GB'")
    rebuild = []
    for t in ("notification", "users", "user_events", "user_challenges"):
        rebuild += drop_indexes(conn, t)

    # ---- notification (as bench/triggers, timestamps ending a minute ago) -------------------------
    insert_notifications(conn, a.notifications, a.users, "localtimestamp - interval '365 days' - interval '1 minute'")

    # ---- users, user_events -------------------------------------------------------------------
    update_share = max(0.0, (a.events - a.users) / a.users)
    log(f"loading {a.users:,} users and ~{a.events:,} user_events rows ({a.mobile:.0%} mobile, "
        f"{a.referral:.0%} referred, {update_share:.0%} with a second version)")
    t0 = time.time()
    conn.execute("SELECT setseed(0.0209)")
    conn.execute(f"""
        CREATE UNLOGGED TABLE bench_people AS
        SELECT u,
               random() < {a.mobile} AS mobile,
               CASE WHEN u > 1 AND random() < {a.referral}
                    THEN 1 + floor((u - 1) * power(random(), 3))::int END AS referrer,
               random() < {update_share} AS updated,
               CASE WHEN u <= 2000 THEN random() < 0.3 ELSE random() < 0.01 END AS verified,
               random() AS later
        FROM generate_series(1, {a.users}) AS u
    """)
    # version 0 at position 10u (signup order); version 1 uniformly later; ids and blocks follow positions
    conn.execute(f"""
        CREATE UNLOGGED TABLE bench_versions AS
        SELECT row_number() OVER (ORDER BY pos, u)::int AS id, v.*,
               {BASE_BLOCK} + floor(pos / 25)::int AS blocknumber
        FROM (
            SELECT p.u, 0 AS version, 10 * p.u::bigint AS pos, NOT p.updated AS is_current,
                   p.mobile, p.referrer, false AS verified
              FROM bench_people p
            UNION ALL
            SELECT p.u, 1, 10 * p.u::bigint + 5 + 10 * floor(p.later * ({a.users} - p.u + 1))::bigint, true,
                   p.mobile, p.referrer, p.verified
              FROM bench_people p WHERE p.updated
        ) v
    """)
    conn.execute("""
        UPDATE bench_versions v SET verified = p.verified FROM bench_people p
        WHERE v.u = p.u AND v.version = 0 AND NOT p.updated
    """)
    conn.execute("""
        INSERT INTO user_events (id, blockhash, blocknumber, is_current, user_id, referrer, is_mobile_user, slot)
        SELECT id, '0x' || md5(blocknumber::text), blocknumber, is_current, u, referrer, mobile, NULL
        FROM bench_versions ORDER BY id
    """)
    conn.execute("SELECT setval('user_events_id_seq', (SELECT max(id) FROM user_events))")
    conn.execute(f"""
        INSERT INTO users (user_id, wallet, is_current, created_at, is_verified, txhash, blocknumber)
        SELECT u, '0x' || md5(u::text), is_current,
               localtimestamp - interval '1000 days' + (u::float8 / {a.users}) * interval '990 days',
               verified, 'tx-' || u || '-' || version, blocknumber
        FROM bench_versions ORDER BY id
    """)
    log(f"  in {time.time() - t0:.0f} s")

    # ---- user_challenges of other challenges ------------------------------------------------
    log(f"loading {a.user_challenges:,} user_challenges rows of other challenges")
    t0 = time.time()
    conn.execute("SELECT setseed(0.77)")
    conn.execute(f"""
        INSERT INTO user_challenges (challenge_id, user_id, specifier, is_complete, current_step_count,
                                     amount, completed_at)
        SELECT (ARRAY['p','u','fp','v','e','c','t','cp','w','b','s'])[1 + (i % 11)],
               1 + floor({a.users} * power(random(), 2))::int, 'h' || i, random() < 0.7, 1, 1,
               localtimestamp - random() * interval '365 days'
        FROM generate_series(1, {a.user_challenges}) AS i
    """)
    log(f"  in {time.time() - t0:.0f} s; rebuilding {len(rebuild)} indexes/constraints")
    t0 = time.time()
    for stmt in rebuild:
        conn.execute(stmt)
    conn.execute("DROP TABLE bench_people, bench_versions")
    conn.execute("""
        INSERT INTO indexing_checkpoints (tablename, last_checkpoint)
        SELECT 'challenges:' || p || ':last_blocknumber', 0 FROM unnest(ARRAY['m','r','rv','rd']) AS p
    """)
    log(f"  in {time.time() - t0:.0f} s")


def expected_completions(conn) -> dict[str, int]:
    """What a complete catch-up must leave in user_challenges (distinct specifiers per challenge)."""
    row = conn.execute("""
        WITH cur AS (SELECT DISTINCT user_id, referrer FROM user_events WHERE is_current AND referrer IS NOT NULL),
             ver AS (SELECT c.*, EXISTS (SELECT 1 FROM users u WHERE u.user_id = c.referrer AND u.is_current
                                          AND u.is_verified) AS v,
                                 EXISTS (SELECT 1 FROM users u WHERE u.user_id = c.referrer AND u.is_current
                                          AND NOT u.is_verified) AS nv
                       FROM cur c)
        SELECT (SELECT count(DISTINCT user_id) FROM user_events WHERE is_current AND is_mobile_user),
               count(*) FILTER (WHERE nv), count(*) FILTER (WHERE v), count(*)
        FROM ver""").fetchone()
    return dict(zip(PROCESSORS, row))


# --------------------------------------------------------------------------------------------------
# the first N completions, timed per completion (rolled back)
# --------------------------------------------------------------------------------------------------
TIMING_SQL = """
CREATE SEQUENCE IF NOT EXISTS public.bench_completions;
CREATE OR REPLACE FUNCTION public.bench_t0() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('public.bench_completions') > current_setting('bench.limit')::bigint THEN
        RAISE EXCEPTION 'bench: completion limit reached';
    END IF;
    PERFORM set_config('bench.t0', clock_timestamp()::text, false);
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION public.bench_t1() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE 'bench-completion % %', new.challenge_id,
        extract(epoch FROM clock_timestamp() - current_setting('bench.t0')::timestamptz) * 1e6;
    RETURN NULL;
END $$;
"""


def use_trigger(conn, variant: str) -> str:
    if variant == "any":
        conn.execute("SELECT audius_indexer.uninstall_triggers()")
        conn.execute("SELECT public.ref_attach_triggers('any')")
    else:
        conn.execute("SELECT public.ref_attach_triggers('any')")
        conn.execute("SELECT audius_indexer.install_triggers()")
    return conn.execute("SELECT tgfoid::regprocedure::text FROM pg_trigger "
                        "WHERE tgname = 'on_user_challenge'").fetchone()[0]


def first_completions(cluster: Cluster, variant: str, n: int, batch: int) -> tuple[list[float], str, float]:
    """The first `n` completions of the catch-up under `variant`, µs each (trigger only)."""
    with cluster.connect("bench") as conn:
        fn = use_trigger(conn, variant)
        conn.execute(TIMING_SQL)
        conn.execute("CREATE OR REPLACE TRIGGER bench_t0 AFTER INSERT OR UPDATE ON public.user_challenges "
                     "FOR EACH ROW EXECUTE FUNCTION public.bench_t0()")
        conn.execute("CREATE OR REPLACE TRIGGER zz_bench_t1 AFTER INSERT OR UPDATE ON public.user_challenges "
                     "FOR EACH ROW EXECUTE FUNCTION public.bench_t1()")
        conn.execute("VACUUM notification, user_challenges, user_score_features")
    micros: list[float] = []
    which: list[str] = []

    def on_notice(diag) -> None:
        msg = diag.message_primary or ""
        if msg.startswith("bench-completion "):
            _, cid, us = msg.split()
            which.append(cid)
            micros.append(float(us))

    t0 = time.time()
    with cluster.connect("bench", autocommit=False) as conn:
        conn.add_notice_handler(on_notice)
        conn.execute("SELECT setval('public.bench_completions', 1, false)")
        conn.execute("SELECT set_config('bench.limit', %s, false)", (str(n),))
        conn.execute("SET client_min_messages = notice")
        rows = conn.execute(CALL, (batch,)).fetchall()
        conn.rollback()
    wall = time.time() - t0
    errors = {r[0]: r[6] for r in rows if r[6]}
    unexpected = {k: v for k, v in errors.items() if "completion limit reached" not in v}
    if unexpected:
        raise RuntimeError(f"{variant}: processor errors {unexpected}")
    with cluster.connect("bench") as conn:
        conn.execute("DROP TRIGGER bench_t0 ON public.user_challenges")
        conn.execute("DROP TRIGGER zz_bench_t1 ON public.user_challenges")
        conn.execute("VACUUM notification, user_challenges, user_score_features")
    mix = ", ".join(f"{c} {which.count(c)}" for c in PROCESSORS if which.count(c))
    return micros, f"{fn} ({mix})", wall


# --------------------------------------------------------------------------------------------------
# plans
# --------------------------------------------------------------------------------------------------
def rust_statements() -> dict[str, str]:
    """The `pub const NAME: &str = "...";` SQL constants of src/challenges/statements.rs."""
    text = STATEMENTS_RS.read_text()
    found = {}
    for m in re.finditer(r'pub const (\w+): &str\s*=\s*"((?:[^"\\]|\\.)*)";', text, re.S):
        body = re.sub(r"\\\n\s*", "", m.group(2)).replace('\\"', '"').replace("\\\\", "\\")
        found[m.group(1)] = body
    return found


# parameter types as the Rust code passes them (i64 positions and batch, i32 user, text txhash)
SCAN_TYPES = {"DIRTY_MOBILE": "bigint, bigint, bigint", "DIRTY_REFERRAL": "bigint, bigint, bigint",
              "DIRTY_USERS": "bigint, integer, text, bigint"}


def explain_scan(conn, name: str, sql: str, args: tuple) -> list[str]:
    conn.execute("DEALLOCATE ALL")
    conn.execute(f"PREPARE s ({SCAN_TYPES[name]}) AS {sql}")
    lit = ", ".join("NULL" if v is None else str(v) if isinstance(v, int) else "'" + str(v).replace("'", "''") + "'"
                    for v in args)
    return [f"EXECUTE s({lit})"] + [
        r[0] for r in conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE s({lit})").fetchall()]


def auto_explain_run(cluster: Cluster, batch: int) -> tuple[list[str], dict[str, str]]:
    """One run with auto_explain on nested statements (log_analyze); the plans as the server logged them."""
    before = len(cluster.log_text())
    with cluster.connect("bench") as conn:
        conn.execute("LOAD 'auto_explain'")
        conn.execute("SET auto_explain.log_min_duration = 0")
        conn.execute("SET auto_explain.log_nested_statements = on")
        conn.execute("SET auto_explain.log_analyze = on")
        conn.execute("SET auto_explain.log_buffers = on")
        conn.execute("SET auto_explain.log_timing = on")
        conn.execute(CALL, (batch,)).fetchall()
    time.sleep(0.5)
    text = cluster.log_text()[before:]
    entries = []
    for block in re.split(r"\n(?=\S+ \S+ \S+ \[\d+\] )", text):
        m = re.search(r"duration: ([\d.]+) ms\s+plan:\s*\n\s*Query Text: (.*?)\n(.*)", block, re.S)
        if not m:
            continue
        q = " ".join(m.group(2).split())
        nodes = [ln.strip() for ln in m.group(3).splitlines()
                 if re.search(r"Scan|Sort|Limit|Nested Loop|Hash|Result|Function|Insert|Update|LockRows", ln)]
        entries.append((float(m.group(1)), q, nodes))
    lines = []
    texts = {}
    for ms, q, nodes in entries:
        if q.startswith("SELECT ue.id::bigint") and "is_mobile_user" in q:
            texts["DIRTY_MOBILE"] = q
        elif q.startswith("SELECT ue.id::bigint") and "referrer IS NOT NULL" in q:
            texts["DIRTY_REFERRAL"] = q
        elif q.startswith("SELECT u.user_id, u.blocknumber"):
            texts["DIRTY_USERS"] = q
        lines.append(f"  {ms:8.3f} ms  {q[:150]}")
        for n in nodes[:6]:
            lines.append(f"               {n[:150]}")
    return lines, texts


# --------------------------------------------------------------------------------------------------
# the catch-up
# --------------------------------------------------------------------------------------------------
GIN_PENDING = "SELECT pending_tuples FROM pgstatginindex('ix_notification_cooldown_user_ids')"


def catch_up(cluster: Cluster, batch: int, label: str, base_notifications: int, limit_s: float = 0) -> dict:
    """Calls process_user_event_challenges(batch) in autocommit until a run has dirty_rows = 0 for all
    four processors (or, with limit_s > 0, until limit_s seconds have passed: finished = False).
    Samples the pending list of the partial GIN after every run (metapage read)."""
    log(f"catch-up with {label}: process_user_event_challenges({batch}) until dirty_rows = 0 everywhere")
    runs: list[dict] = []
    pending: list[int] = []
    t_start = time.time()
    last_log = t_start
    with cluster.connect("bench") as conn, cluster.connect("bench") as probe:
        while True:
            t0 = time.perf_counter()
            rows = conn.execute(CALL, (batch,)).fetchall()
            secs = time.perf_counter() - t0
            errs = [(r[0], r[6]) for r in rows if r[6]]
            if errs:
                raise RuntimeError(f"run {len(runs) + 1}: processor errors {errs}")
            runs.append({"secs": secs, "dirty": {r[0]: r[1] for r in rows}, "upserts": {r[0]: r[3] for r in rows},
                         "cp": {r[0]: r[5] for r in rows}})
            pending.append(probe.execute(GIN_PENDING).fetchone()[0])
            if all(r[1] == 0 for r in rows):
                break
            if limit_s and time.time() - t_start > limit_s:
                log(f"  STOPPED after {time.time() - t_start:.0f} s (time cap), {len(runs)} runs")
                break
            if time.time() - last_log > 60:
                last_log = time.time()
                done = sum(sum(r["upserts"].values()) for r in runs)
                log(f"  run {len(runs)}: {done:,} upserts so far, {time.time() - t_start:.0f} s; GIN pending list "
                    f"{pending[-1]:,} tuples; checkpoints " + ", ".join(f"{k} {v}" for k, v in runs[-1]["cp"].items()))
    wall = time.time() - t_start
    finished = all(v == 0 for v in runs[-1]["dirty"].values())
    upserts = {p: sum(r["upserts"][p] for r in runs) for p in PROCESSORS}
    dirty = {p: sum(r["dirty"][p] for r in runs) for p in PROCESSORS}
    total = sum(upserts.values())
    log(f"  {'caught up' if finished else 'NOT caught up'}: {len(runs)} runs ({len(runs) - 1} with work + the empty one), {wall:.1f} s, {total:,} upserts; "
        f"partial GIN pending list: max {max(pending):,}, mean {statistics.fmean(pending):,.0f} tuples after a run")
    return {"label": label, "runs": runs, "wall": wall, "finished": finished, "upserts": upserts, "dirty": dirty, "upserts_total": total,
            "pending": pending, "pending_max": max(pending), "pending_mean": statistics.fmean(pending)}


def reset_catchup(cluster: Cluster, base_notifications: int) -> None:
    """Back to checkpoints at 0: removes what the catch-up wrote (DELETE fires no trigger), clears the
    processors' stored positions, VACUUM ANALYZE."""
    with cluster.connect("bench") as conn:
        conn.execute("DELETE FROM user_challenges WHERE challenge_id IN ('m', 'r', 'rv', 'rd')")
        conn.execute("DELETE FROM notification WHERE id > %s", (base_notifications,))
        conn.execute("DELETE FROM user_score_features")
        conn.execute("UPDATE indexing_checkpoints SET last_checkpoint = 0 WHERE tablename LIKE 'challenges:%'")
        conn.execute("UPDATE audius_indexer.challenge_processor_state SET ue_block = NULL, ue_id = NULL, "
                     "ue_checkpoint = NULL, users_block = NULL, users_user_id = NULL, users_txhash = NULL")
        conn.execute("VACUUM ANALYZE notification, user_challenges, user_score_features")


# --------------------------------------------------------------------------------------------------
SETTINGS = {**LARGE_DATA_SETTINGS, "autovacuum": "on"}  # a catch-up runs for minutes, as in production


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=2_000_000)
    ap.add_argument("--events", type=int, default=2_300_000, help="user_events rows (>= --users)")
    ap.add_argument("--notifications", type=int, default=5_000_000)
    ap.add_argument("--user-challenges", type=int, default=1_000_000)
    ap.add_argument("--mobile", type=float, default=0.25)
    ap.add_argument("--referral", type=float, default=0.10)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--any-completions", type=int, default=200)
    ap.add_argument("--idle-runs", type=int, default=50)
    ap.add_argument("--skip-any", action="store_true", help="do not time the = ANY trigger")
    ap.add_argument("--shipped-minutes", type=float, default=6,
                    help="time cap of the as-shipped (fastupdate = on) catch-up; 0 = run it to the end (hours), "
                         "-1 = skip it")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", default=None, help="results file (default bench/results/challenges-<date>.txt)")
    a = ap.parse_args()
    require_extension_installed()
    started = time.time()
    log(f"bench/challenges started {dt.datetime.now():%Y-%m-%d %H:%M:%S}")

    cluster = start_cluster("benchchal", SETTINGS, sql=(
        FIXTURE_SQL.read_text(), reference_sql(trace=False), "CREATE EXTENSION audius_indexer",
        "CREATE EXTENSION pgstattuple"))  # pgstatginindex(): the GIN pending list
    try:
        with cluster.connect("bench") as conn:
            populate(conn, a)                       # no trigger on user_challenges during the load
            fn = use_trigger(conn, "rust")
        log("sql/indexes.sql (CREATE INDEX CONCURRENTLY: partial GINs, ix_user_events_blocknumber, _referrer)")
        t0 = time.time()
        run_indexes_sql(cluster)
        with cluster.connect("bench") as conn:
            created_opts = conn.execute("SELECT coalesce(array_to_string(reloptions, ', '), 'default: fastupdate = on') "
                                        "FROM pg_class WHERE relname = 'ix_notification_cooldown_user_ids'"
                                        ).fetchone()[0]
        log(f"  in {time.time() - t0:.0f} s (ix_notification_cooldown_user_ids created with {created_opts}); "
            "VACUUM ANALYZE")
        with cluster.connect("bench") as conn:
            conn.execute("VACUUM ANALYZE")
            mach = machine(conn)
            shape = conn.execute("""
                SELECT (SELECT count(*) FROM notification),
                       (SELECT count(*) FROM notification WHERE type = 'reward_in_cooldown'),
                       (SELECT count(*) FROM user_events),
                       (SELECT count(*) FROM user_events WHERE is_current),
                       (SELECT count(*) FROM user_events WHERE is_current AND is_mobile_user),
                       (SELECT count(*) FROM user_events WHERE is_current AND referrer IS NOT NULL),
                       (SELECT min(blocknumber) || '..' || max(blocknumber) FROM user_events),
                       (SELECT count(DISTINCT blocknumber) FROM user_events),
                       (SELECT count(*) FROM users), (SELECT count(*) FROM users WHERE is_current AND is_verified),
                       (SELECT count(*) FROM user_challenges),
                       (SELECT max(c) FROM (SELECT count(*) c FROM user_events WHERE is_current
                                             GROUP BY referrer HAVING referrer IS NOT NULL) x),
                       pg_size_pretty(pg_table_size('notification')),
                       (SELECT string_agg(indexrelid::regclass::text, ', ' ORDER BY indexrelid::regclass::text)
                          FROM pg_index WHERE indrelid IN ('notification'::regclass, 'user_events'::regclass)
                           AND indisvalid)""").fetchone()
            expected = expected_completions(conn)
            head = conn.execute("SELECT max(blocknumber) FROM user_events").fetchone()[0]
        (n_notif, n_cool, n_ue, n_ue_cur, n_mobile, n_ref, blocks, n_blocks, n_users, n_verified, n_uc, max_ref,
         notif_size, idx_names) = shape
        data_lines = [
            f"notification: {n_notif:,} rows ({n_cool:,} reward_in_cooldown), {notif_size}",
            f"user_events: {n_ue:,} rows ({n_ue_cur:,} current; {n_mobile:,} current mobile, {n_ref:,} current "
            f"with a referrer, heaviest referrer {max_ref:,}), blocks {blocks} ({n_blocks:,} distinct)",
            f"users: {n_users:,} rows ({n_verified:,} current verified); user_challenges before: {n_uc:,} rows",
            f"indexes: {idx_names}",
            f"checkpoints: m, r, rv, rd at 0; on_user_challenge -> {fn}",
            f"sql/indexes.sql created ix_notification_cooldown_user_ids with: {created_opts}",
            f"expected after catch-up (distinct completions): "
            + ", ".join(f"{k} {v:,}" for k, v in expected.items())
            + f" = {sum(expected.values()):,}",
        ]
        for ln in data_lines:
            log(ln)
        log(f"data ready after {time.time() - started:.0f} s")

        # ---- the first N completions: Rust, then = ANY (both rolled back) -----------------------
        n = a.any_completions
        first = {}
        for variant in ("rust",) + (() if a.skip_any else ("any",)):
            log(f"first {n} completions with the {variant} trigger (rolled back)")
            xs, desc, wall = first_completions(cluster, variant, n, a.batch)
            first[variant] = (xs, desc, wall)
            med, p95, mean = stats(xs)
            log(f"  {desc}: {len(xs)} completions, median {med:,.0f} µs, p95 {p95:,.0f} µs, mean {mean:,.0f} µs "
                f"(run wall {wall:.1f} s)")
        with cluster.connect("bench") as conn:
            fn = use_trigger(conn, "rust")
            left = conn.execute("SELECT count(*) FROM user_challenges WHERE challenge_id IN ('m','r','rv','rd')"
                                ).fetchone()[0]
            assert left == 0, left
            conn.execute("VACUUM ANALYZE notification, user_challenges, user_score_features")

        # ---- the complete catch-up with the Rust trigger, partial GIN WITH (fastupdate = off) -------
        # With fastupdate = on (the default; sql/indexes.sql created the index so until the fix this bench
        # led to) every new reward_in_cooldown row goes to the GIN pending list, which every cooldown
        # lookup scans: too slow to run to the end here (hours), so it runs second, time-capped
        # (--shipped-minutes).
        with cluster.connect("bench") as conn:
            conn.execute("ALTER INDEX ix_notification_cooldown_user_ids SET (fastupdate = off)")
        full = catch_up(cluster, a.batch, f"{fn}, partial GIN fastupdate = off", n_notif)
        runs, catchup, total_upserts = full["runs"], full["wall"], full["upserts_total"]
        work_runs, upserts, dirty = runs[:-1], full["upserts"], full["dirty"]
        with cluster.connect("bench") as conn:
            status = conn.execute("SELECT challenge_id, checkpoint, head_blocknumber, lag_blocks, runs, total_upserts "
                                  "FROM audius_indexer.challenge_processor_status").fetchall()
            got = dict(conn.execute("SELECT challenge_id, count(*) FILTER (WHERE is_complete) FROM user_challenges "
                                    "WHERE challenge_id IN ('m','r','rv','rd') GROUP BY 1").fetchall())
            effects = conn.execute("""
                SELECT (SELECT count(*) FROM notification) - %s,
                       (SELECT count(*) FROM user_score_features)""", (n_notif,)).fetchone()
            state = {r[0]: r[1:] for r in conn.execute(
                "SELECT challenge_id, ue_block, ue_id, users_block, users_user_id, users_txhash "
                "FROM audius_indexer.challenge_processor_state").fetchall()}

        # ---- empty dirty set -------------------------------------------------------------------
        log(f"empty dirty set: {a.idle_runs} runs")
        idle_server, idle_rt = [], []
        with cluster.connect("bench") as conn:
            for _ in range(3):  # warm-up of the session (first SPI plans, catalog caches)
                conn.execute(CALL, (a.batch,)).fetchall()
            for _ in range(a.idle_runs):
                t0 = time.perf_counter()
                s, srv = conn.execute(
                    "SELECT sum(x.dirty_rows), extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000 "
                    "FROM audius_indexer.process_user_event_challenges(%s) x", (a.batch,)).fetchone()
                idle_rt.append((time.perf_counter() - t0) * 1000)
                idle_server.append(float(srv))
                assert s == 0, s
            fresh = []
            for _ in range(10):  # a new session per run, as after a worker restart
                with cluster.connect("bench") as c2:
                    t0 = time.perf_counter()
                    c2.execute(CALL, (a.batch,)).fetchall()
                    fresh.append((time.perf_counter() - t0) * 1000)

        # ---- plans: the dirty scans as the installed function ran them (auto_explain of an empty
        # run), then EXPLAIN ANALYZE of those texts at the start (checkpoint 0) and at the head ------
        auto, stmts = auto_explain_run(cluster, a.batch)
        if len(stmts) < 3:
            src = rust_statements()
            stmts = {k: stmts.get(k) or src.get(k) for k in SCAN_TYPES}
        plans_start, plans_head = {}, {}
        with cluster.connect("bench") as conn:
            for name in ("DIRTY_MOBILE", "DIRTY_REFERRAL"):
                plans_start[name] = explain_scan(conn, name, stmts[name], (0, None, a.batch))
            plans_start["DIRTY_USERS"] = explain_scan(conn, "DIRTY_USERS", stmts["DIRTY_USERS"],
                                                      (0, None, None, a.batch))
            for name, p in (("DIRTY_MOBILE", "m"), ("DIRTY_REFERRAL", "rd")):
                ue_block, ue_id = state[p][0], state[p][1]
                plans_head[name] = explain_scan(conn, name, stmts[name], (ue_block, ue_id, a.batch))
            ub, uu, ut = state["r"][2], state["r"][3], state["r"][4]
            plans_head["DIRTY_USERS"] = explain_scan(conn, "DIRTY_USERS", stmts["DIRTY_USERS"], (ub, uu, ut, a.batch))

        # ---- the same catch-up with fastupdate = on (the default), time-capped ----------------------
        shipped = None
        if a.shipped_minutes != -1:
            log("reset to checkpoints at 0; ALTER INDEX ix_notification_cooldown_user_ids RESET (fastupdate) "
                "(the default, on)")
            reset_catchup(cluster, n_notif)
            with cluster.connect("bench") as conn:
                conn.execute("ALTER INDEX ix_notification_cooldown_user_ids RESET (fastupdate)")
            shipped = catch_up(cluster, a.batch, f"{fn}, partial GIN fastupdate = on (the PostgreSQL default)", n_notif,
                               limit_s=a.shipped_minutes * 60)
            if shipped["finished"]:
                with cluster.connect("bench") as conn:
                    got_s = dict(conn.execute(
                        "SELECT challenge_id, count(*) FILTER (WHERE is_complete) FROM user_challenges "
                        "WHERE challenge_id IN ('m','r','rv','rd') GROUP BY 1").fetchall())
                assert got_s == got, (got_s, got)

        # ---- report ------------------------------------------------------------------------------
        secs = [r["secs"] * 1000 for r in work_runs]
        run_med, run_p95, run_mean = stats(secs)
        idle_med, idle_p95, _ = stats(idle_server)
        rt_med, rt_p95, _ = stats(idle_rt)
        fr_med, fr_p95, _ = stats(fresh)
        rows_per_s = n_ue / catchup
        xs_r = first["rust"][0]
        r_med, r_p95, r_mean = stats(xs_r)

        report_header(f"bench/challenges — process_user_event_challenges({a.batch}) catch-up from checkpoints at 0",
                      started, mach, 100)
        out("cluster: " + ", ".join(f"{k}={v}" for k, v in SETTINGS.items()) + ", fsync=off")
        for ln in data_lines:
            out(ln)
        out()
        def measured(res: dict, label: str) -> str:
            xs = [r["secs"] * 1000 for r in res["runs"][:-1]]
            med, p95, _ = stats(xs)
            return (f"| {label:<63} | {len(res['runs']):>4} | {hms(res['wall']):>10} | {n_ue / res['wall']:>9,.0f} | "
                    f"{res['upserts_total']:>11,} | {res['upserts_total'] / res['wall']:>8,.0f} | {med:>9,.0f} ms | "
                    f"{p95:>9,.0f} ms | {res['pending_max']:>9,} |")

        out("| catch-up, checkpoints 0 -> head (all runs until dirty_rows = 0) | runs | wall time  | "
            "ue rows/s | completions | compl./s | run median   | run p95      | GIN pend. |")
        out("|-----------------------------------------------------------------|------|------------|"
            "-----------|-------------|----------|--------------|--------------|-----------|")
        out(measured(full, "Rust trigger, partial GIN fastupdate = off (measured, complete)"))
        if shipped is not None and shipped["finished"]:
            out(measured(shipped, "Rust trigger, partial GIN fastupdate = on (measured, complete)"))
        elif shipped is not None:
            # the same workload: completions left = those of the complete catch-up minus those done;
            # at the rate of the last 3 runs (the pending list only grows until it reaches 4 MB)
            done = shipped["upserts_total"]
            tail = shipped["runs"][-3:]
            rate = sum(sum(r["upserts"].values()) for r in tail) / sum(r["secs"] for r in tail)
            est = shipped["wall"] + max(total_upserts - done, 0) / rate
            label = "Rust trigger, partial GIN fastupdate = on, EXTRAPOLATED (>=)"
            out(f"| {label:<63} | {'-':>4} | {hms(est):>10} | {n_ue / est:>9,.0f} | {total_upserts:>11,} | "
                f"{total_upserts / est:>8,.0f} | {'-':>12} | {'-':>12} | {shipped['pending_max']:>9,} |")
        if "any" in first:
            xs_a = first["any"][0]
            a_med, a_p95, a_mean = stats(xs_a)
            extra = total_upserts * a_mean / 1e6
            label = f"PL/pgSQL = ANY: EXTRAPOLATED from the first {len(xs_a)} completions"
            out(f"| {label:<63} | {len(runs):>4} | {hms(extra):>10} | {n_ue / extra:>9,.1f} | "
                f"{total_upserts:>11,} | {total_upserts / extra:>8,.2f} | {'-':>12} | {'-':>12} | {'-':>9} |")
        out("(ue rows/s = all user_events rows / wall time; completions = rows upserted into user_challenges, each "
            "firing on_user_challenge; run median/p95 over the runs with work, round trip incl. commit; GIN pend. = "
            "max pending-list tuples of ix_notification_cooldown_user_ids after a run)")
        out()
        out(f"| on_user_challenge per completion, first {n} completions of the catch-up | median    | p95       | mean      |")
        out("|-----------------------------------------------------------------|-----------|-----------|-----------|")
        out(f"| {first['rust'][1][:63]:<63} | {r_med:>6,.0f} µs | {r_p95:>6,.0f} µs | {r_mean:>6,.0f} µs |")
        if "any" in first:
            out(f"| {first['any'][1][:63]:<63} | {a_med / 1000:>6,.0f} ms | {a_p95 / 1000:>6,.0f} ms | "
                f"{a_mean / 1000:>6,.0f} ms |")
            out()
            out(f"= ANY is EXTRAPOLATED, not run: {total_upserts:,} completions (those of the measured catch-up) x "
                f"{a_mean / 1e6:.3f} s (its mean trigger time over the first {len(xs_a)} completions of the same "
                f"catch-up) = {hms(extra)}.")
            out("  A lower bound: the trigger alone (no dirty scans, no upsert, no commit). "
                f"Per completion = ANY / Rust on the same {min(len(xs_a), len(xs_r))}: median {a_med / r_med:,.0f}x, "
                f"mean {a_mean / r_mean:,.0f}x; whole catch-up: {extra / catchup:,.0f}x.")
        out()
        out("fastupdate = off (the complete catch-up):")
        out(f"runs with work: {len(work_runs)}; per run median {run_med:,.0f} ms, p95 {run_p95:,.0f} ms, "
            f"mean {run_mean:,.0f} ms, max {max(secs):,.0f} ms (round trip incl. commit)")
        out("per processor:  " + "; ".join(
            f"{p}: {dirty[p]:,} dirty rows, {upserts[p]:,} upserts, last dirty in run "
            f"{max([i + 1 for i, r in enumerate(runs) if r['dirty'][p]] or [0])}" for p in PROCESSORS))
        out(f"dirty rows (user_events + users for r/rv) {sum(dirty.values()):,} -> "
            f"{sum(dirty.values()) / catchup:,.0f} dirty rows/s; user_events {n_ue:,} rows / {catchup:.1f} s = "
            f"{rows_per_s:,.0f} rows/s")
        out(f"user_challenges complete after: " + ", ".join(f"{p} {got.get(p, 0):,}" for p in PROCESSORS)
            + " (expected " + ", ".join(f"{p} {expected[p]:,}" for p in PROCESSORS) + ") -> "
            + ("OK" if all(got.get(p, 0) == expected[p] for p in PROCESSORS) else "MISMATCH"))
        out(f"re-upserts (same row again, trigger fires on UPDATE): {total_upserts - sum(got.values()):,}; "
            f"new notification rows {effects[0]:,}; user_score_features rows {effects[1]:,}")
        out("checkpoints after: " + "; ".join(f"{s[0]} {s[1]:,} (head {s[2]:,}, lag {s[3]} blocks)" for s in status))
        slow = sorted(range(len(work_runs)), key=lambda i: -work_runs[i]["secs"])[:5]
        out("slowest runs: " + "; ".join(
            f"#{i + 1} {work_runs[i]['secs'] * 1000:,.0f} ms (" + ", ".join(
                f"{p} {work_runs[i]['dirty'][p]}/{work_runs[i]['upserts'][p]}" for p in PROCESSORS) + ")"
            for i in slow) + "   [dirty/upserts]")
        if shipped is not None:
            sm, sp, _ = stats([r["secs"] * 1000 for r in shipped["runs"]])
            if shipped["finished"]:
                out(f"fastupdate = on: {len(shipped['runs'])} runs, {shipped['wall']:.1f} s, "
                    f"{shipped['upserts_total']:,} upserts, same user_challenges; fastupdate on / off = "
                    f"{shipped['wall'] / catchup:.2f}x")
            else:
                out(f"fastupdate = on: NOT run to the end (time cap {a.shipped_minutes:g} min): "
                    f"{len(shipped['runs'])} runs, {shipped['upserts_total']:,} of {total_upserts:,} completions in "
                    f"{shipped['wall']:.0f} s; per run median {sm:,.0f} ms, p95 {sp:,.0f} ms; last 3 runs "
                    f"{rate:,.0f} completions/s (fastupdate off: {total_upserts / catchup:,.0f}/s overall); "
                    f"remaining EXTRAPOLATED at that rate -> total ~{hms(est)}")
            out("  its runs (s, upserts, pending-list tuples after the run): " + "; ".join(
                f"{r['secs']:.0f} s/{sum(r['upserts'].values()):,}/{pn:,}"
                for r, pn in zip(shipped["runs"], shipped["pending"])))
        out()
        verdict = "PASS" if idle_med < 20 else "FAIL"
        out(f"| empty dirty set ({a.idle_runs} runs, persistent session) | median   | p95      |")
        out("|-----------------------------------------------|----------|----------|")
        out(f"| server-side (statement start -> result)       | {idle_med:>5.2f} ms | {idle_p95:>5.2f} ms |")
        out(f"| round trip incl. commit                       | {rt_med:>5.2f} ms | {rt_p95:>5.2f} ms |")
        out(f"| round trip, new session each (10 runs)        | {fr_med:>5.2f} ms | {fr_p95:>5.2f} ms |")
        out(f"acceptance: median < 20 ms -> {verdict} ({idle_med:.2f} ms server-side)")
        out()
        out("EXPLAIN ANALYZE of the dirty scans (their text as the installed function ran it, from auto_explain; "
            "custom plans with the values the function passes; 'start' measured after the catch-up):")
        for label, plans in (("start (checkpoint 0, no position)", plans_start), ("head (stored positions)", plans_head)):
            for name, lines in plans.items():
                out(f"  -- {name} at {label}")
                for ln in lines:
                    out("     " + ln)
        out()
        out("auto_explain of one empty run (every nested statement the function executed):")
        for ln in auto:
            out(ln)
        out("=" * 100)
        cluster.assert_log_clean()
        return 0
    finally:
        finish(a, "challenges", cluster)


if __name__ == "__main__":
    sys.exit(main())
