#!/usr/bin/env python3
"""Benchmark of the monitoring queries at production size (`make bench-status`; not a test).

What a Prometheus exporter runs on every scrape must stay cheap when eth_wallet_balances holds 3.15M
rows (acceptance: < 10 ms each). One throwaway cluster (audius_indexer preloaded, every worker off),
the Audius fixture schema (tests/sql/audius_fixture_schema.sql: user_events, indexing_checkpoints …)
and the extension, then, with set-based SQL:

- eth_wallet_balances: --wallets (3,150,000) rows, updated_at spread over one sweep cycle (107 s, as
  `make bench-sweep-scale` measured), the --failing (1,000) stalest of them stamped 1970 and in
  wallet_failures (--backoff of them still backed off): the worst case for lag_excluding_failing,
  which must walk past them;
- the follower: the audio_transfers checkpoint, its head, 10,000 follow_blocks, 200 pending wallets;
- user_events: --events (2,300,000) rows with ix_user_events_blocknumber (sql/indexes.sql), the four
  challenge checkpoints;
- VACUUM ANALYZE.

Then each query --reps times (after 3 warm-ups) in one session of a LOGIN member of
audius_indexer_monitor (the 0.2.0-style queries, which that role may not run, as a superuser),
wall time per execute + fetch over the unix socket, median and p95:
sweep_status, follow_status, challenge_processor_status, health(), every query of
sql/prometheus-queries.yaml and all of them in a row (one scrape), next to 0.2.0's sweep_status
(released/audius_indexer--0.2.0.sql), its count(*) and its min() anti-join alone, and doctor()
(no node configured: its database part, which counts the table as its owner).
The same again after a sweep-like churn (the --churn stalest rows updated, not vacuumed yet: dead
entries at the low end of eth_wallet_balances_updated_at_idx). Plans of the status queries are
printed; a sequential scan of eth_wallet_balances in any of them is flagged.

Writes everything to bench/results/status-<date>.txt (or --out). Options: --wallets, --failing,
--backoff, --events, --churn, --reps, --keep.
"""
from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # bench.common, also when started as a script

from bench.common import finish, log, machine, out, start_cluster, stats
from harness.triggers import require_extension_installed

QUERIES_YAML = REPO / "sql" / "prometheus-queries.yaml"
RELEASED_020 = REPO / "released" / "audius_indexer--0.2.0.sql"
FIXTURE = REPO / "tests" / "sql" / "audius_fixture_schema.sql"
ROLE = "bench_monitor"
CHECKPOINT = 21_000_000


def yaml_queries() -> dict[str, str]:
    """name → SQL of every query in sql/prometheus-queries.yaml (our own file: `name:` at column 0,
    `query: |` and the SQL indented by 4 spaces)."""
    queries, name, body, in_q = {}, None, [], False
    for line in QUERIES_YAML.read_text().splitlines():
        if re.match(r"^[a-z_]+:\s*$", line):
            name, in_q = line.rstrip(":").strip(), False
        elif name and line.strip() == "query: |":
            in_q, body = True, []
        elif in_q and (line.startswith("    ") or not line.strip()):
            body.append(line[4:])
        elif in_q:
            queries[name] = "\n".join(body).strip()
            in_q = False
    return queries


def sweep_status_020() -> str:
    text = RELEASED_020.read_text()
    m = re.search(r"CREATE VIEW audius_indexer\.sweep_status AS\n(.*?);\nCOMMENT ON VIEW audius_indexer\.sweep_status",
                  text, re.S)
    assert m, "0.2.0 sweep_status not found in " + str(RELEASED_020)
    return m.group(1)


def populate(su, a) -> None:
    su.execute("SET maintenance_work_mem = '1GB'")
    log(f"loading {a.wallets:,} eth_wallet_balances rows")
    t0 = time.time()
    # as a sweep leaves them: updated_at spread over one cycle, the oldest first
    su.execute("ALTER TABLE public.eth_wallet_balances DROP CONSTRAINT eth_wallet_balances_pkey")
    su.execute("DROP INDEX public.eth_wallet_balances_updated_at_idx")
    su.execute(f"""
        INSERT INTO public.eth_wallet_balances (wallet, balance, blocknumber, updated_at, created_at)
        SELECT '0x' || lpad(to_hex(g), 40, '0'), (g::numeric * 1000003) % 1000000000000000000000, {CHECKPOINT} - g % 5000,
               CASE WHEN g <= {a.failing} THEN '1970-01-01'::timestamp
                    ELSE localtimestamp - interval '107 seconds' + (g::float8 / {a.wallets}) * interval '107 seconds' END,
               localtimestamp - interval '400 days'
          FROM generate_series(1, {a.wallets}) g""")
    su.execute("ALTER TABLE public.eth_wallet_balances ADD CONSTRAINT eth_wallet_balances_pkey PRIMARY KEY (wallet)")
    su.execute("CREATE INDEX eth_wallet_balances_updated_at_idx ON public.eth_wallet_balances (updated_at)")
    su.execute(f"""
        INSERT INTO audius_indexer.wallet_failures (wallet, reason, attempts, next_attempt)
        SELECT '0x' || lpad(to_hex(g), 40, '0'), 'totalStakedFor reverted', 5,
               CASE WHEN g <= {a.backoff} THEN now() + interval '1 hour' ELSE now() - interval '1 minute' END
          FROM generate_series(1, {a.failing}) g""")
    log(f"  in {time.time() - t0:.0f} s")
    log("follower state: checkpoint, head, 10,000 follow_blocks, 200 pending wallets")
    su.execute("INSERT INTO public.eth_indexer_checkpoints (name, last_block) VALUES ('audio_transfers', %s)", (CHECKPOINT,))
    su.execute("INSERT INTO audius_indexer.follow_blocks (block, hash, block_time) "
               "SELECT b, '0x' || md5(b::text) || md5(b::text), now() - (%s - b) * interval '12 seconds' "
               "FROM generate_series(%s - 9999, %s) b", (CHECKPOINT, CHECKPOINT, CHECKPOINT))
    su.execute("INSERT INTO audius_indexer.follow_pending (wallet, min_block, reason) "
               "SELECT '0x' || lpad(to_hex(g), 40, '0'), %s, 'lagging node' FROM generate_series(5000001, 5000200) g",
               (CHECKPOINT,))
    su.execute("UPDATE audius_indexer.follow_state SET head = %s, head_seen_at = now(), steps = 1000, "
               "last_step_started = now(), last_step_finished = now()", (CHECKPOINT + 12,))
    log(f"loading {a.events:,} user_events rows + ix_user_events_blocknumber")
    t0 = time.time()
    su.execute(f"""
        INSERT INTO public.user_events (blockhash, blocknumber, is_current, user_id, referrer, is_mobile_user)
        SELECT '0x' || md5(g::text), 25000000 + g / 3, true, g, NULLIF(g % 10, 0), g % 4 = 0
          FROM generate_series(1, {a.events}) g""")
    su.execute("CREATE INDEX ix_user_events_blocknumber ON public.user_events (blocknumber)")
    su.execute("INSERT INTO public.indexing_checkpoints (tablename, last_checkpoint) "
               "SELECT 'challenges:' || p || ':last_blocknumber', 25000000 + %s / 3 - 100 "
               "FROM unnest(ARRAY['m','r','rv','rd']) p", (a.events,))
    log(f"  in {time.time() - t0:.0f} s; VACUUM ANALYZE")
    su.execute("VACUUM ANALYZE")


def timed(conn, sqls: list[str], reps: int) -> tuple[float, float]:
    """median and p95 (ms) of running `sqls` one after the other, `reps` times after 3 warm-ups."""
    def run() -> None:
        for sql in sqls:
            conn.execute(sql).fetchall()
    for _ in range(3):
        run()
    xs = []
    for _ in range(reps):
        t = time.perf_counter()
        run()
        xs.append((time.perf_counter() - t) * 1000)
    med, p95, _ = stats(xs)
    return med, p95


def measure(mon, su, a, label: str) -> dict[str, float]:
    yq = yaml_queries()
    rows = [("sweep_status", mon, "SELECT * FROM audius_indexer.sweep_status", a.reps),
            ("follow_status", mon, "SELECT * FROM audius_indexer.follow_status", a.reps),
            ("challenge_processor_status", mon, "SELECT * FROM audius_indexer.challenge_processor_status", a.reps),
            ("health()", mon, "SELECT * FROM audius_indexer.health()", a.reps)]
    rows += [(f"metrics: {n}", mon, q, a.reps) for n, q in yq.items()]
    rows += [(f"metrics: one scrape ({len(yq)} queries in a row)", mon, None, a.reps)]
    slow = max(5, a.reps // 10)
    rows += [("0.2.0 sweep_status (count(*), min() anti-join)", su, sweep_status_020(), slow),
             ("0.2.0 wallets: SELECT count(*) FROM eth_wallet_balances", su,
              "SELECT count(*) FROM public.eth_wallet_balances", slow),
             ("0.2.0 lag_excluding_failing: min() over the anti-join", su,
              "SELECT now() - min(w.updated_at) FROM public.eth_wallet_balances w WHERE NOT EXISTS "
              "(SELECT 1 FROM audius_indexer.wallet_failures f WHERE f.wallet = w.wallet)", slow),
             ("doctor() without a node (its database part: count(*) as the owner)", su,
              "SELECT * FROM audius_indexer.doctor()", slow)]
    out()
    out(f"{label}: median / p95 of wall time per query (ms), {a.reps} runs ({slow} for the 0.2.0-style ones)")
    out(f"  {'query':<64} {'median':>9} {'p95':>9}")
    res = {}
    for name, conn, sql, reps in rows:
        med, p95 = timed(conn, list(yq.values()) if sql is None else [sql], reps)
        res[name] = med
        flag = "" if name.startswith(("0.2.0", "doctor")) or med < 10 else "   <-- over 10 ms"
        out(f"  {name:<64} {med:>9.3f} {p95:>9.3f}{flag}")
    new, old = res["sweep_status"], res["0.2.0 sweep_status (count(*), min() anti-join)"]
    out(f"  sweep_status 0.3.0 vs 0.2.0: {new:.3f} ms vs {old:.1f} ms ({old / new:,.0f}x)")
    return res


def plans(su) -> None:
    out()
    out("plans (EXPLAIN ANALYZE, costs off) — any Seq Scan on eth_wallet_balances is flagged:")
    for q in ("SELECT * FROM audius_indexer.sweep_status", "SELECT * FROM audius_indexer.follow_status",
              "SELECT * FROM audius_indexer.challenge_processor_status"):
        text = "\n".join(r[0] for r in su.execute(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) {q}"))
        out(f"--- {q}")
        for line in text.splitlines():
            out("    " + line)
        if re.search(r"Seq Scan on eth_wallet_balances", text):
            out("    <-- a sequential scan of eth_wallet_balances")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wallets", type=int, default=3_150_000)
    ap.add_argument("--failing", type=int, default=1_000, help="stalest wallets in wallet_failures")
    ap.add_argument("--backoff", type=int, default=800, help="of those, still backed off")
    ap.add_argument("--events", type=int, default=2_300_000, help="user_events rows")
    ap.add_argument("--churn", type=int, default=200_000, help="stalest rows updated for the second pass")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--keep", action="store_true", help="leave the cluster running")
    ap.add_argument("--out", default=None, help="results file (default bench/results/status-<date>.txt)")
    a = ap.parse_args()
    require_extension_installed()
    started = time.time()
    log(f"bench/status started {dt.datetime.now():%Y-%m-%d %H:%M:%S}")
    c = start_cluster("bench_status", {
        "shared_buffers": "1GB", "maintenance_work_mem": "1GB", "max_wal_size": "8GB", "jit": "off",
        "wal_level": "minimal", "max_wal_senders": "0", "autovacuum": "off",
        "audius_indexer.database": "'audius'", "audius_indexer.sweep_enabled": "off",
        "audius_indexer.follow_interval": "0", "audius_indexer.challenges_interval": "0"},
        db="audius", preload=["audius_indexer"],
        sql=(FIXTURE.read_text(), "CREATE EXTENSION audius_indexer",
             f"CREATE ROLE {ROLE} LOGIN IN ROLE audius_indexer_monitor"))
    try:
        with c.connect("audius") as su:
            for line in machine(su, head_note=", uncommitted changes included"):
                out(line)
            out("cluster: shared_buffers 1GB, autovacuum off (the churn pass is measured before any vacuum), jit off")
            populate(su, a)
            size = su.execute("SELECT pg_size_pretty(pg_total_relation_size('public.eth_wallet_balances'))").fetchone()[0]
            n = su.execute("SELECT wallets FROM audius_indexer.sweep_status").fetchone()[0]
            out(f"eth_wallet_balances: {a.wallets:,} rows ({size} with indexes); sweep_status.wallets "
                f"(the estimate) = {n:,}; wallet_failures {a.failing:,} ({a.backoff:,} backed off); "
                f"user_events {a.events:,}")
            with c.connect("audius", user=ROLE) as mon:
                measure(mon, su, a, "after VACUUM ANALYZE")
                plans(su)
                log(f"churn: the {a.churn:,} stalest non-failing rows updated (as a sweep pass does), no vacuum")
                su.execute(f"""
                    UPDATE public.eth_wallet_balances SET updated_at = localtimestamp
                     WHERE wallet IN (SELECT wallet FROM public.eth_wallet_balances
                                       WHERE updated_at > '1971-01-01' ORDER BY updated_at LIMIT {a.churn})""")
                n = su.execute("SELECT wallets FROM audius_indexer.sweep_status").fetchone()[0]
                out(f"sweep_status.wallets after the churn (no ANALYZE since): {n:,}")
                measure(mon, su, a, f"after a churn of {a.churn:,} rows, before vacuum")
        log(f"done in {time.time() - started:.0f} s")
    finally:
        finish(a, "status", c, "audius")
    return 0


if __name__ == "__main__":
    sys.exit(main())
