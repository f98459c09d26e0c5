"""What the benchmarks bench/<x>/run.py share: their output (printed and kept for the results file),
the machine description at the top of a report, the throwaway cluster and its teardown, the summary
statistics, and the notification data of bench/triggers and bench/challenges.

Not a benchmark. A run.py is started as a script (`.venv/bin/python bench/<x>/run.py`, see the
Makefile's bench-* targets), so it puts the repository root on sys.path before importing this module
as `bench.common`; the tests harness (`harness.*`) is importable through the .pth of .venv.
"""
from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

from harness.pg import Cluster
from harness.triggers import EXT_LIB, INDEXES_SQL

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"

# --------------------------------------------------------------------------------------------------
# output: every line printed and kept for the results file
# --------------------------------------------------------------------------------------------------
_OUT: list[str] = []


def out(line: str = "") -> None:
    print(line, flush=True)
    _OUT.append(line)


def log(msg: str) -> None:
    out(f"[{time.strftime('%H:%M:%S')}] {msg}")


def write_results(path: str | Path | None, stem: str) -> None:
    """Writes what out()/log() printed so far to `path`, by default bench/results/<stem>-<date>.txt
    (nothing when nothing was printed)."""
    if not _OUT:
        return
    path = Path(path) if path else RESULTS / f"{stem}-{dt.date.today().isoformat()}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(_OUT) + "\n")
    print(f"written {path}")


def release(keep: bool, cluster: Cluster, db: str, *others) -> None:
    """The end of a run: with --keep, says where the cluster (and anvil) can be reached; otherwise
    destroys the cluster and `others` (each with a .destroy(), e.g. an Anvil)."""
    if keep:
        print(f"kept: cluster {cluster.conninfo(db)}" + "".join(f", anvil {o.url}" for o in others))
        return
    cluster.destroy()
    for o in others:
        o.destroy()


def report_header(title: str, started: float, mach: list[str], width: int, loads: list | None = None) -> None:
    """The head of a final report: a rule, the title, start/end/wall time, the machine lines and, when
    given, the load averages sampled along the run ((label, loadavg()) pairs)."""
    out()
    out("=" * width)
    out(title)
    out(f"started {dt.datetime.fromtimestamp(started):%Y-%m-%d %H:%M:%S}, finished {dt.datetime.now():%Y-%m-%d %H:%M:%S}, "
        f"total wall time {time.time() - started:,.0f} s")
    for ln in mach:
        out(ln)
    if loads:
        out("load average (1/5/15 min): " + "; ".join(f"{k} {v}" for k, v in loads))


def finish(a, stem: str, cluster: Cluster, db: str = "bench", *others) -> None:
    """write_results(a.out, stem), then release(a.keep, ...): the `finally` of a run."""
    write_results(a.out, stem)
    release(a.keep, cluster, db, *others)


# --------------------------------------------------------------------------------------------------
# numbers
# --------------------------------------------------------------------------------------------------
def stats(xs: list[float]) -> tuple[float, float, float]:
    """median, p95 (nearest rank), mean."""
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
    return statistics.median(xs), p95, statistics.fmean(xs)


def hms(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:,.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:,.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:,.1f} h"
    return f"{seconds / 86400:,.1f} days"


# --------------------------------------------------------------------------------------------------
# the machine
# --------------------------------------------------------------------------------------------------
def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _proc_field(path: str, key: str) -> str | None:
    try:
        for ln in Path(path).read_text().splitlines():
            if ln.startswith(key):
                return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _proc_field("/proc/cpuinfo", "model name") or "?"


def mem_total() -> str:
    kb = _proc_field("/proc/meminfo", "MemTotal:")
    return f"{int(kb.split()[0]) / 1024 / 1024:.1f} GiB" if kb else "?"


def machine(conn, head_note: str = "") -> list[str]:
    """The top lines of a report: the machine, the server, the installed extension."""
    built = dt.datetime.fromtimestamp(EXT_LIB.stat().st_mtime).strftime("%Y-%m-%d %H:%M") if EXT_LIB.exists() else "?"
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip() or "?"
    except OSError:
        head = "?"
    ver = conn.execute("SELECT version()").fetchone()[0]
    ext = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'audius_indexer'").fetchone()[0]
    return [f"machine: {os.cpu_count()} CPUs ({cpu_model()}), {mem_total()} RAM, {platform.system()} {platform.release()}",
            f"server:  {ver}",
            f"extension: audius_indexer {ext} (installed .so built {built}; repo HEAD {head}{head_note})"]


# --------------------------------------------------------------------------------------------------
# the cluster
# --------------------------------------------------------------------------------------------------
# bench/triggers' cluster for millions of rows loaded at once (bench/challenges: the same, autovacuum on)
LARGE_DATA_SETTINGS = {
    "shared_buffers": "3GB", "maintenance_work_mem": "1GB", "max_wal_size": "16GB",
    "checkpoint_timeout": "30min", "wal_level": "minimal", "max_wal_senders": "0",
    "autovacuum": "off", "jit": "off", "max_parallel_workers_per_gather": "2",
}


def start_cluster(name: str, settings: dict[str, str], db: str = "bench", preload: list[str] | None = None,
                  sql: tuple[str, ...] = ()) -> Cluster:
    """A throwaway cluster, started, with database `db` in which each of `sql` has run (one
    connection). Destroyed again if any of that fails."""
    c = Cluster(preload=preload, name=name, settings=settings)
    try:
        c.init().start()
        c.create_database(db)
        with c.connect(db) as conn:
            for s in sql:
                conn.execute(s)
    except BaseException:
        c.destroy()
        raise
    return c


def run_indexes_sql(cluster: Cluster, db: str = "bench") -> None:
    """sql/indexes.sql through psql, as a DBA runs it (CREATE INDEX CONCURRENTLY)."""
    cluster.psql("-q", "-f", str(INDEXES_SQL), dbname=db)


# --------------------------------------------------------------------------------------------------
# notification data (bench/triggers, bench/challenges)
# --------------------------------------------------------------------------------------------------
TYPES = [  # 30 notification types, most common first (weights ~ Zipf-ish)
    "follow", "repost", "save", "milestone", "tip_receive", "challenge_reward", "reward_in_cooldown",
    "claimable_reward", "create", "repost_of_repost", "save_of_repost", "tastemaker", "trending",
    "tier_change", "supporter_rank_up", "supporting_rank_up", "announcement", "reaction", "comment",
    "comment_thread", "comment_mention", "comment_reaction", "usdc_purchase_buyer", "usdc_purchase_seller",
    "track_added_to_playlist", "trending_playlist", "trending_underground", "cosign", "remix", "listen_streak_reminder",
]


def insert_notifications(conn, rows: int, users: int, start: str) -> None:
    """Notification rows 1..`rows` (seed 0.2026, the same rows on every run): type index
    floor(30 * r^1.8), skewed towards the first TYPES (reward_in_cooldown is #6, ~3.5%); user ids
    1 + floor(users * r^4), a heavy tail at small ids, 10% of the rows with two; timestamps evenly
    over the 365 days from `start` (an SQL timestamp expression). notification_id_seq follows."""
    types_sql = "ARRAY[" + ", ".join(f"'{t}'" for t in TYPES) + "]"
    conn.execute("SELECT setseed(0.2026)")
    log(f"loading {rows:,} notification rows")
    t0 = time.time()
    conn.execute(f"""
        INSERT INTO notification (id, specifier, group_id, type, slot, blocknumber, "timestamp", data, user_ids)
        SELECT i, i::text, 'bench:' || i,
               ({types_sql})[1 + floor(30 * power(random(), 1.8))::int],
               NULL, i,
               {start} + (i::float8 / {rows}) * interval '365 days',
               jsonb_build_object('n', i),
               CASE WHEN random() < 0.1
                    THEN ARRAY[1 + floor({users} * power(random(), 4))::int,
                               1 + floor({users} * power(random(), 4))::int]
                    ELSE ARRAY[1 + floor({users} * power(random(), 4))::int] END
        FROM generate_series(1, {rows}) AS i
    """)
    conn.execute(f"SELECT setval('notification_id_seq', {rows})")
    log(f"  in {time.time() - t0:.0f} s")
