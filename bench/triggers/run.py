#!/usr/bin/env python3
"""Benchmark of the on_user_challenge cooldown path: PL/pgSQL `= ANY` vs PL/pgSQL `@>` vs Rust.

`make bench-triggers` (after `make install`). Not a test: it prints a table and exits 0 unless
something breaks. One run, one database, same data for every variant:

1. notification with 5,000,000 rows over 30 types (skewed type mix; reward_in_cooldown ~3.5%),
   user ids from a heavy-tailed distribution (~1M users, a few with thousands of rows), the full
   ix_notification GIN and uq_notification as in Audius, then sql/indexes.sql (the partial GINs);
   users (300k), user_challenges (500k) so the user_score_features upsert has realistic work.
2. 10,000 user_challenges upserts that complete a cooldown challenge (p, u, fp, m, r, rv, rd, c, t,
   cp, w; 70% new keys, 30% re-upserts), timed per row on the server (clock_timestamp() around each
   upsert inside a PL/pgSQL loop, so client round trips are not counted), under
     (a) PL/pgSQL reference, `user_id = ANY(user_ids)`   -- the pre-#880 Audius function
     (b) PL/pgSQL reference, `user_ids @> ARRAY[user_id]` -- the #880 Audius function
     (c) Rust audius_indexer.handle_on_user_challenge()
     (-) no trigger at all (the upsert alone), to show the trigger's own cost
   Each variant runs inside a transaction that is rolled back, so every variant starts from the same
   data, and VACUUM runs before every timed run (it also flushes the GIN pending lists, which keep the
   fast-update entries of aborted inserts and would slow every later run down). Every variant is warmed
   up first; (b), (c) and the baseline are measured in three rounds in rotating order.
3. (a) needs a sequential scan of the 5M-row table per row (GIN cannot serve `= ANY`): timing all
   10,000 rows would take hours, so (a) is timed on the first --any-rows upserts of the same list
   (default 150) and the a/c ratio compares (a) with (c) on those same rows.

Options: --rows N (notification rows), --upserts N, --any-rows N, --keep (leave the cluster running).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # bench.common, also when started as a script

from bench.common import LARGE_DATA_SETTINGS, insert_notifications, log, release, run_indexes_sql, start_cluster, stats
from harness.pg import Cluster
from harness.triggers import FIXTURE_SQL, reference_sql, require_extension_installed

COOLDOWN_IDS = ["p", "u", "fp", "m", "r", "rv", "rd", "c", "t", "cp", "w"]


def populate(conn, rows: int) -> None:
    conn.execute("SET maintenance_work_mem = '1GB'")
    conn.execute("SET max_parallel_maintenance_workers = 2")
    conn.execute("ALTER TABLE notification DROP CONSTRAINT uq_notification")
    conn.execute("ALTER TABLE notification DROP CONSTRAINT notification_pkey")
    conn.execute("DROP INDEX ix_notification")
    # ~1M possible users (1 + floor(1e6 * r^4)), the year from 2025-05-29
    insert_notifications(conn, rows, 1_000_000, "timestamp '2025-05-29'")
    log("building notification_pkey, uq_notification, ix_notification")
    t0 = time.time()
    conn.execute("ALTER TABLE notification ADD CONSTRAINT notification_pkey PRIMARY KEY (id)")
    conn.execute("ALTER TABLE notification ADD CONSTRAINT uq_notification UNIQUE (group_id, specifier)")
    conn.execute("CREATE INDEX ix_notification ON notification USING gin (user_ids)")
    log(f"  indexes built in {time.time() - t0:.0f} s")
    log("loading users (300k) and user_challenges (500k)")
    conn.execute("""
        INSERT INTO users (user_id, wallet, is_current, created_at, txhash)
        SELECT u, '0x' || md5(u::text), true, timestamp '2025-01-01' + (u % 500) * interval '1 day', 'tx' || u
        FROM generate_series(1, 300000) AS u
    """)
    conn.execute("""
        INSERT INTO user_challenges (challenge_id, user_id, specifier, is_complete, current_step_count,
                                     amount, completed_at)
        SELECT (ARRAY['p','u','fp','v','e','c','t','cp','w','m','r','rv','rd','b','s'])[1 + (i % 15)],
               1 + floor(1e6 * power(random(), 4))::int, 'h' || i, random() < 0.7, 1, 1,
               timestamp '2025-05-29' + random() * interval '365 days'
        FROM generate_series(1, 500000) AS i
    """)


def make_upserts(conn, n: int) -> None:
    ids = "ARRAY[" + ", ".join(f"'{c}'" for c in COOLDOWN_IDS) + "]"
    conn.execute("SELECT setseed(0.77)")
    conn.execute(f"""
        CREATE TABLE bench_upserts AS
        SELECT i AS n,
               ({ids})[1 + floor(random() * {len(COOLDOWN_IDS)})::int] AS challenge_id,
               1 + floor(1e6 * power(random(), 4))::int AS user_id,
               NULL::text AS specifier,
               timestamp '2026-05-29 00:00' + (i::float8 / {n}) * interval '6 hours' AS completed_at
        FROM generate_series(1, {n}) AS i
    """)
    # 70% new keys; 30% re-upserts of an earlier key of the list (the trigger fires again)
    conn.execute("UPDATE bench_upserts SET specifier = to_hex(user_id) || ':' || n")
    conn.execute("""
        UPDATE bench_upserts b SET challenge_id = e.challenge_id, user_id = e.user_id, specifier = e.specifier
        FROM bench_upserts e
        WHERE b.n > 100 AND b.n % 10 IN (3, 6, 9) AND e.n = b.n - 1 - (b.n * 7919 % 100)
    """)
    conn.execute("""
        CREATE FUNCTION bench_run(first_n int, last_n int) RETURNS TABLE (n int, micros float8)
        LANGUAGE plpgsql AS $$
        DECLARE r record; t0 timestamptz;
        BEGIN
            FOR r IN SELECT * FROM bench_upserts b WHERE b.n BETWEEN first_n AND last_n ORDER BY b.n LOOP
                t0 := clock_timestamp();
                INSERT INTO user_challenges (challenge_id, user_id, specifier, is_complete, current_step_count,
                                             amount, completed_at)
                VALUES (r.challenge_id, r.user_id, r.specifier, true, 1, 1, r.completed_at)
                ON CONFLICT (challenge_id, specifier) DO UPDATE
                   SET current_step_count = EXCLUDED.current_step_count,
                       is_complete = user_challenges.is_complete OR EXCLUDED.is_complete,
                       completed_at = CASE WHEN user_challenges.is_complete THEN user_challenges.completed_at
                                           ELSE EXCLUDED.completed_at END;
                n := r.n;
                micros := extract(epoch FROM clock_timestamp() - t0) * 1e6;
                RETURN NEXT;
            END LOOP;
        END $$
    """)


def use_variant(conn, variant: str) -> None:
    if variant == "none":
        conn.execute("DROP TRIGGER IF EXISTS on_user_challenge ON user_challenges")
    elif variant in ("any", "contains"):
        conn.execute("SELECT audius_indexer.uninstall_triggers()")
        conn.execute("SELECT public.ref_attach_triggers(%s)", (variant,))
    elif variant == "rust":
        conn.execute("SELECT public.ref_attach_triggers('any')")
        conn.execute("SELECT audius_indexer.install_triggers()")
    fn = conn.execute("SELECT tgfoid::regprocedure::text FROM pg_trigger WHERE tgname = 'on_user_challenge'").fetchone()
    log(f"variant {variant}: on_user_challenge -> {fn[0] if fn else '(no trigger)'}")


def reset_state(cluster: Cluster) -> None:
    """Brings the tables back to the same physical state after a rolled-back run: removes the dead
    rows and, above all, flushes the GIN pending lists (GIN fast-update entries of aborted inserts
    stay in the pending list, which every later lookup scans, until VACUUM cleans it)."""
    with cluster.connect("bench") as conn:
        conn.execute("VACUUM notification, user_challenges, user_score_features")


def timed(cluster: Cluster, first: int, last: int) -> tuple[list[float], dict]:
    """Runs upserts first..last in one rolled-back transaction of a fresh session; per-row micros."""
    reset_state(cluster)
    with cluster.connect("bench", autocommit=False) as conn:
        rows = conn.execute("SELECT n, micros FROM bench_run(%s, %s)", (first, last)).fetchall()
        effects = conn.execute(
            "SELECT count(*) FILTER (WHERE type = 'reward_in_cooldown' AND id > %s) FROM notification",
            (cluster.base_max_id,)).fetchone()
        conn.rollback()
    return [r[1] for r in rows], {"new_cooldown_notifications": effects[0]}


def explain(cluster: Cluster, sql: str) -> str:
    with cluster.connect("bench") as conn:
        return "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql).fetchall())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--upserts", type=int, default=10_000)
    ap.add_argument("--any-rows", type=int, default=150)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    require_extension_installed()
    started = time.time()

    cluster = start_cluster("benchtrig", LARGE_DATA_SETTINGS, sql=(
        FIXTURE_SQL.read_text(), reference_sql(trace=False), "CREATE EXTENSION audius_indexer"))
    try:
        with cluster.connect("bench") as conn:
            populate(conn, args.rows)
        log("sql/indexes.sql (CREATE INDEX CONCURRENTLY of the two partial GINs)")
        t0 = time.time()
        run_indexes_sql(cluster)
        log(f"  done in {time.time() - t0:.0f} s")
        with cluster.connect("bench") as conn:
            make_upserts(conn, args.upserts)
            conn.execute("VACUUM ANALYZE")
            cluster.base_max_id = conn.execute("SELECT max(id) FROM notification").fetchone()[0]
            shape = conn.execute("""
                SELECT count(*), count(DISTINCT type),
                       count(*) FILTER (WHERE type = 'reward_in_cooldown'),
                       pg_size_pretty(pg_table_size('notification')),
                       pg_size_pretty(pg_relation_size('ix_notification')),
                       pg_size_pretty(pg_relation_size('ix_notification_cooldown_user_ids'))
                FROM notification""").fetchone()
            users = conn.execute("""
                SELECT count(DISTINCT u), max(c) FROM (SELECT u, count(*) c FROM notification, unnest(user_ids) u
                GROUP BY u) x""").fetchone()
        log(f"notification: {shape[0]:,} rows, {shape[1]} types, {shape[2]:,} reward_in_cooldown; table {shape[3]}, "
            f"ix_notification {shape[4]}, ix_notification_cooldown_user_ids {shape[5]}; {users[0]:,} distinct "
            f"users, heaviest has {users[1]:,} rows")

        lookup = ("SELECT id FROM notification WHERE type = 'reward_in_cooldown' AND {m} "
                  "AND \"timestamp\" >= (timestamp '2026-05-29 03:00' - interval '1 hour') LIMIT 1")
        for label, m in (("= ANY", "7 = ANY(user_ids)"), ("@>", "user_ids @> ARRAY[7]")):
            plan = explain(cluster, lookup.format(m=m))
            log(f"plan of the cooldown lookup with {label}: " + " | ".join(
                ln.strip() for ln in plan.splitlines() if "Scan" in ln))

        n, na = args.upserts, min(args.any_rows, args.upserts)
        results: dict[str, list[list[float]]] = {"none": [], "contains": [], "rust": []}
        with cluster.connect("bench") as conn:
            for variant in ("none", "contains", "rust"):
                use_variant(conn, variant)
                timed(cluster, 1, min(n, 1000))                      # warm-up (rolled back)
        orders = (("contains", "rust", "none"), ("rust", "none", "contains"), ("none", "contains", "rust"))
        for rnd, order in enumerate(orders):
            for variant in order:
                with cluster.connect("bench") as conn:
                    use_variant(conn, variant)
                t0 = time.time()
                xs, eff = timed(cluster, 1, n)
                results[variant].append(xs)
                log(f"round {rnd + 1} {variant}: {len(xs):,} upserts in {time.time() - t0:.1f} s; {eff}")
        with cluster.connect("bench") as conn:
            use_variant(conn, "any")
        timed(cluster, 1, 2)                                          # warm-up of (a): plans, cache
        t0 = time.time()
        xs_any, eff = timed(cluster, 1, na)
        log(f"any: {len(xs_any):,} upserts in {time.time() - t0:.1f} s; {eff}")

        # ---- report ---------------------------------------------------------------------------
        pooled = {v: [x for r in rs for x in r] for v, rs in results.items()}
        # per-row time of a variant = median over its rounds (same upsert, same starting data)
        per_row = {v: [statistics.median(vals) for vals in zip(*rs)] for v, rs in results.items()}

        def row(label, xs, rows_note):
            med, p95, mean = stats(xs)
            return f"| {label:<32} | {rows_note:>18} | {med:>11,.1f} | {p95:>11,.1f} | {mean:>11,.1f} |"

        rounds = len(orders)
        med_a, p95_a, _ = stats(xs_any)
        med_b, p95_b, _ = stats(pooled["contains"])
        med_c, p95_c, _ = stats(pooled["rust"])
        med_0, _, _ = stats(pooled["none"])
        med_b_first, p95_b_first, _ = stats(per_row["contains"][:na])
        med_c_first, p95_c_first, _ = stats(per_row["rust"][:na])
        paired = statistics.median(c / b for c, b in zip(per_row["rust"], per_row["contains"]) if b > 0)
        print()
        print(f"notification rows: {shape[0]:,} ({shape[1]} types, {shape[2]:,} reward_in_cooldown); "
              f"{users[0]:,} users, heaviest {users[1]:,} rows; upserts: {n:,}, all taking the cooldown branch")
        print()
        print("| per upsert, server-side         | rows timed         |   median µs |      p95 µs |     mean µs |")
        print("|----------------------------------|--------------------|-------------|-------------|-------------|")
        print(row("(a) PL/pgSQL = ANY", xs_any, f"first {na:,}"))
        print(row("(b) PL/pgSQL @>", pooled["contains"], f"{n:,} x {rounds}"))
        print(row("(c) Rust", pooled["rust"], f"{n:,} x {rounds}"))
        print(row("(b) PL/pgSQL @>, rows of (a)", per_row["contains"][:na], f"first {na:,}"))
        print(row("(c) Rust, rows of (a)", per_row["rust"][:na], f"first {na:,}"))
        print(row("(-) upsert, no trigger", pooled["none"], f"{n:,} x {rounds}"))
        print()
        print(f"a/c  median {med_a / med_c_first:,.0f}x, p95 {p95_a / p95_c_first:,.0f}x  (same first {na} upserts)")
        print(f"a/b  median {med_a / med_b_first:,.0f}x  (same first {na} upserts)")
        print(f"c/b  median {med_c / med_b:.3f}, p95 {p95_c / p95_b:.3f}, median of per-row ratios {paired:.3f}  "
              f"({n:,} upserts x {rounds} rounds)")
        print(f"c/b  trigger only (median minus the no-trigger median): {(med_c - med_0) / max(med_b - med_0, 1e-9):.3f} "
              f"({med_c - med_0:,.1f} µs vs {med_b - med_0:,.1f} µs)")
        print(f"total wall time {time.time() - started:.0f} s")
        cluster.assert_log_clean()
        return 0
    finally:
        release(args.keep, cluster, "bench")


if __name__ == "__main__":
    sys.exit(main())
