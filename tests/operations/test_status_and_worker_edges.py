"""Status, doctor and the worker at their edges (suite table "Status, doctor and the worker: edge
cases" in docs/reliability.md).

- `doctor()` never raises for a member of `audius_indexer_operator`, with the library preloaded
  (session cluster) and without (throwaway cluster): it used to read the superuser-only
  `shared_preload_libraries` (42501). Without preload its 'sweep worker' row says 'not preloaded'.
- `audius_indexer.sweep_status` works as the first statement of a session in which the library is
  not loaded (no shared_preload_libraries): it used to raise 42704 for
  audius_indexer.sweep_enabled; now sweep_enabled is NULL there.
- `sweep_status.worker_pid` and doctor's 'sweep worker' row only count a worker connected to the
  current database: NULL / 'not running in this database' elsewhere.
- The background worker with a missing `audius_indexer.database` backs off exponentially between
  connection attempts (5, 10, 20 … s, up to 300 s, on top of the postmaster's 5 s restart delay)
  instead of retrying every 5 s forever, and connects once the database exists.
- `install_triggers()` no longer warns "schema … is not on the current search_path" (it ran with
  a pinned search_path, so the check could never be right).
- `rpc_urls = ','` is refused when set (22023) instead of being accepted and breaking every later
  call ("at least one endpoint"); calls keep working.

Roles: edges_op (LOGIN, member of audius_indexer_operator) in the session cluster and in the
throwaway cluster without preload. Throwaway clusters: edgesnopre (no preload), edgesnodb (preloaded,
audius_indexer.database = 'nope').
"""
from __future__ import annotations

import re
import time
from datetime import datetime, timezone

import psycopg
import pytest

from conftest import SECRET_PATH, wait_until
from harness.chain import wallet_address
from harness.pg import Cluster
from harness.reliability import error_text, expect_error, short
from harness.suites import report_fixture
from harness.triggers import Notices, create_audius_db, require_extension_installed

pytestmark = pytest.mark.timeout(180)

ROLE = "edges_op"
W = [wallet_address(i, "edges") for i in range(2)]
F = "audius_indexer.multicall_total_audio_balances"
WORKER = "audius_indexer sweep"


report = report_fixture("status_and_worker_edges", "Status, doctor and the worker: edge cases")


def _create_role(conn) -> None:
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone():
        conn.execute(f"DROP OWNED BY {ROLE}")
        conn.execute(f"DROP ROLE {ROLE}")
    conn.execute(f"CREATE ROLE {ROLE} LOGIN IN ROLE audius_indexer_operator")
    assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone() == (False,)


@pytest.fixture(scope="module")
def op_role(cluster):
    with cluster.connect("audius") as c:
        _create_role(c)
    yield ROLE
    with cluster.connect("audius") as c:
        c.execute(f"DROP OWNED BY {ROLE}")
        c.execute(f"DROP ROLE {ROLE}")


def doctor_rows(conn) -> dict[str, tuple[bool, str]]:
    return {r[0]: (r[1], r[2]) for r in conn.execute("SELECT * FROM audius_indexer.doctor()").fetchall()}


# ------------------------------------------------------------------------------------------------
# doctor() for an operator, preloaded
# ------------------------------------------------------------------------------------------------
def test_doctor_operator_preloaded(cluster, db, op_role, report):
    with report.case("doctor() as operator, preloaded", f"as {ROLE} (audius_indexer_operator) in the session "
                     "cluster: SELECT * FROM audius_indexer.doctor()",
                     "rows, no 42501; 'sweep worker' detail without 'permission'") as rec:
        with cluster.connect("audius", user=ROLE) as c:
            try:
                d = doctor_rows(c)
            except psycopg.Error as e:
                rec.observed = short(e, 100)
                raise AssertionError(f"doctor() raised: {error_text(e)}") from None
        assert d, "no rows"
        assert "sweep worker" in d, sorted(d)
        assert "permission" not in d["sweep worker"][1].lower(), d["sweep worker"]
        assert not [k for k, (_, detail) in d.items() if "permission denied" in detail.lower()], d
        rec.observed = f"{len(d)} rows; sweep worker: {d['sweep worker'][1][:60]}"


# ------------------------------------------------------------------------------------------------
# sweep_status and doctor() without preload
# ------------------------------------------------------------------------------------------------
def test_without_preload(report):
    with report.case("sweep_status + doctor() without preload",
                     f"cluster without shared_preload_libraries; fresh session as {ROLE}, first statement "
                     "SELECT * FROM audius_indexer.sweep_status; then doctor()",
                     "sweep_enabled NULL, worker_pid NULL; doctor rows, 'sweep worker' says 'not preloaded'") as rec:
        require_extension_installed()
        c = Cluster(name="edgesnopre")
        try:
            c.init().start()
            c.create_database("audius")
            with c.connect("audius") as su:
                su.execute("CREATE EXTENSION audius_indexer")
                _create_role(su)
            with c.connect("audius", user=ROLE) as conn:
                try:
                    cur = conn.execute("SELECT * FROM audius_indexer.sweep_status")
                    cols = [d.name for d in cur.description]
                    rows = cur.fetchall()
                except psycopg.Error as e:
                    rec.observed = "sweep_status: " + short(e, 100)
                    raise AssertionError(f"sweep_status raised: {error_text(e)}") from None
                assert len(rows) == 1, rows
                st = dict(zip(cols, rows[0]))
                assert st["sweep_enabled"] is None, st
                assert st["worker_pid"] is None, st
                try:
                    d = doctor_rows(conn)
                except psycopg.Error as e:
                    rec.observed = "doctor: " + short(e, 100)
                    raise AssertionError(f"doctor() raised: {error_text(e)}") from None
            assert "sweep worker" in d, sorted(d)
            assert "not preloaded" in d["sweep worker"][1], d["sweep worker"]
            assert not d["settings"][0], "no URL configured: the settings check fails (reported, not raised)"
            rec.observed = (f"sweep_enabled NULL, worker_pid NULL; doctor {len(d)} rows, settings: "
                            f"{d['settings'][1][:40]}…; sweep worker: {d['sweep worker'][1][:40]}…")
        finally:
            c.destroy()


# ------------------------------------------------------------------------------------------------
# worker_pid / doctor only count a worker of the current database
# ------------------------------------------------------------------------------------------------
def test_worker_pid_per_database(cluster, db, report):
    with report.case("worker_pid per database", "session cluster (worker connected to audius); database "
                     "edgesother with the extension: sweep_status.worker_pid, doctor 'sweep worker'",
                     "NULL + 'not running in this database' in edgesother; the worker's pid in audius") as rec:
        with cluster.connect() as su:
            su.execute("DROP DATABASE IF EXISTS edgesother WITH (FORCE)")
        cluster.create_database("edgesother")
        try:
            with cluster.connect("edgesother") as o:
                o.execute("CREATE EXTENSION audius_indexer")
                pid = wait_until(lambda: db.execute(
                    "SELECT pid FROM pg_stat_activity WHERE backend_type = %s AND datname = 'audius'",
                    (WORKER,)).fetchone(), 20, 0.2, "the sweep worker in audius")[0]
                assert o.execute("SELECT worker_pid FROM audius_indexer.sweep_status").fetchone() == (None,)
                d_other = doctor_rows(o)
            assert db.execute("SELECT worker_pid FROM audius_indexer.sweep_status").fetchone() == (pid,)
            d_audius = doctor_rows(db)
            assert d_other["sweep worker"][1].startswith("not running in this database"), d_other["sweep worker"]
            assert d_audius["sweep worker"][1] == f"running, pid {pid}", d_audius["sweep worker"]
            rec.observed = (f"edgesother: worker_pid NULL, '{d_other['sweep worker'][1]}'; "
                            f"audius: worker_pid {pid}, '{d_audius['sweep worker'][1]}'")
        finally:
            with cluster.connect() as su:
                su.execute("DROP DATABASE IF EXISTS edgesother WITH (FORCE)")


# ------------------------------------------------------------------------------------------------
# rpc_urls = ',' refused when set
# ------------------------------------------------------------------------------------------------
def test_rpc_urls_comma_refused(cluster, db, contracts, proxy, report):
    with report.case("rpc_urls = ','", "superuser: ALTER SYSTEM SET audius_indexer.rpc_urls = ',' (a SIGHUP "
                     "setting: ALTER SYSTEM is where it is set), reload, then a call",
                     "ERROR 22023 at ALTER SYSTEM; nothing written; later calls work") as rec:
        e, _, _ = expect_error(db, "ALTER SYSTEM SET audius_indexer.rpc_urls = ','", sqlstate="22023",
                               contains=('invalid value for parameter "audius_indexer.rpc_urls"',))
        assert not db.execute("SELECT count(*) FROM pg_file_settings WHERE name = 'audius_indexer.rpc_urls'"
                              ).fetchone()[0], "the refused value was written to postgresql.auto.conf"
        db.execute("SELECT pg_reload_conf()")
        time.sleep(0.3)
        contracts.set_values(W[:1], [41], [0], [0])
        proxy.reset()
        with cluster.connect("audius") as c:
            assert c.execute("SHOW audius_indexer.rpc_urls").fetchone() == ("",)
            rows = c.execute(f"SELECT wallet, balance FROM {F}(%s)", (W[:1],)).fetchall()
        assert [(r[0], int(r[1])) for r in rows] == [(W[0], 41)], rows
        assert {r.path for r in proxy.requests} == {SECRET_PATH}
        rec.observed = short(e, 90) + "; afterwards 1 row via rpc_url"


# ------------------------------------------------------------------------------------------------
# install_triggers(): no search_path warning
# ------------------------------------------------------------------------------------------------
def test_install_triggers_no_search_path_warning(cluster, report):
    with report.case("install_triggers() warning", "database edgestrig (fixture schema, reference triggers "
                     "'any', extension); SELECT * FROM audius_indexer.install_triggers() with the default "
                     "search_path", "3 triggers installed; no WARNING mentioning search_path") as rec:
        with cluster.connect() as su:
            su.execute("DROP DATABASE IF EXISTS edgestrig WITH (FORCE)")
        try:
            create_audius_db(cluster, "edgestrig", triggers="any")
            with cluster.connect("edgestrig") as conn:
                notes = Notices(conn)
                rows = conn.execute("SELECT * FROM audius_indexer.install_triggers()").fetchall()
                got = notes.take()
            assert len(rows) == 3, rows
            warn = [m for sev, m in got if sev == "WARNING"]
            assert not [m for m in warn if "search_path" in m], warn
            rec.observed = f"{len(rows)} triggers; notices: {[f'{s}: {m[:40]}' for s, m in got] or 'none'}"
        finally:
            with cluster.connect() as su:
                su.execute("DROP DATABASE IF EXISTS edgestrig WITH (FORCE)")


# ------------------------------------------------------------------------------------------------
# the worker backs off while its database is missing
# ------------------------------------------------------------------------------------------------
TS = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC"
FATAL_RE = re.compile(TS + r' \[\d+\] audius_indexer sweep .*FATAL:  database "nope" does not exist')
NEXT_RE = re.compile(TS + r' \[\d+\] .*LOG:  audius_indexer sweep: could not connect to database "nope" '
                     r"\((\d+) failed attempt\(s\)\); next attempt in (\d+) s")
WATCH_S = 45


def _ts(s: str) -> float:
    return datetime.strptime(s, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=timezone.utc).timestamp()


def test_worker_backoff_missing_database(report):
    with report.case("worker back-off, database missing",
                     "preloaded cluster with audius_indexer.database = 'nope' (missing); watch the log 45 s; "
                     "then CREATE DATABASE nope + CREATE EXTENSION",
                     "≤ 4 attempts in 45 s, growing gaps, 'next attempt in 5 / 10 / 20 s'; then the worker "
                     "connects to nope") as rec:
        require_extension_installed()
        c = Cluster(preload=["audius_indexer"], name="edgesnodb",
                    settings={"audius_indexer.database": "'nope'", "audius_indexer.sweep_enabled": "off"})
        try:
            c.init().start()
            t0 = time.time()
            time.sleep(WATCH_S)
            text = c.log_text()
            fatals = [_ts(m.group(1)) for m in map(FATAL_RE.search, text.splitlines()) if m]
            nexts = [(_ts(m.group(1)), int(m.group(2)), int(m.group(3)))
                     for m in map(NEXT_RE.search, text.splitlines()) if m]
            gaps = [round(b - a, 1) for a, b in zip(fatals, fatals[1:])]
            waits = [s for _, _, s in nexts]
            rec.observed = f"{len(fatals)} attempts in {WATCH_S} s, gaps {gaps} s, next attempt in {waits} s"
            assert 3 <= len(fatals) <= 4, rec.observed  # old behaviour: one every 5 s (≥ 8)
            assert all(b > a for a, b in zip(gaps, gaps[1:])), rec.observed
            assert waits[:3] == [5, 10, 20], rec.observed
            assert [n for _, n, _ in nexts[:3]] == [1, 2, 3], nexts
            # each gap = the postmaster's 5 s restart delay + our wait
            for g, s in zip(gaps, waits):
                assert g >= 5 + s - 0.5, rec.observed

            # The database appears: the next attempt (after the last announced wait) connects.
            with c.connect() as su:
                su.execute("CREATE DATABASE nope")
            with c.connect("nope") as n:
                n.execute("CREATE EXTENSION audius_indexer")
            last_t, _, last_wait = nexts[-1]
            budget = max(last_t + last_wait - time.time(), 0) + 10
            assert time.time() - t0 + budget <= 90, f"would exceed 90 s (budget {budget:.0f} s)"
            with c.connect() as su:
                pid = wait_until(lambda: su.execute(
                    "SELECT pid FROM pg_stat_activity WHERE backend_type = %s AND datname = 'nope'",
                    (WORKER,)).fetchone(), budget, 0.2, "the sweep worker connected to nope")[0]
            took = time.time() - t0
            rec.observed += f"; after CREATE DATABASE the worker (pid {pid}) connected to nope ({took:.0f} s in total)"
        finally:
            c.destroy()
