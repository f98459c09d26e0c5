"""Hardening: the smaller defects of 0.2.0, one test per defect; each fails on release 0.2.0.

1. `reset_sweep_status()` works for a member of `audius_indexer_operator` (a non-superuser LOGIN role):
   it zeroes the totals of `audius_indexer.sweep_status`. (0.2.0: granted to the operator but not
   SECURITY DEFINER, so its UPDATE of `sweep_state` raised 42501.)
2. The settings that size the server's memory are superuser-only and bounded:
   `rpc_max_response_bytes` and `rpc_concurrency` are SUSET (a plain role's SET: 42501;
   `pg_settings.context` = 'superuser'); `rpc_max_response_bytes` is at most 256MB (SET '1GB': 22023);
   and the limit applied is min(rpc_max_response_bytes, 256 MiB / rpc_concurrency): at concurrency 32
   with 64MB a 9 MiB answer is refused as too large (54000, "8388608"), at concurrency 4 it is
   accepted. (0.2.0: both USERSET, maximum 2 GB, no cap.)
3. `rpc_urls_file` is opened like PostgreSQL's own key files: no symbolic link (42501), never blocks on
   a FIFO (22023 at once), no device or directory (22023), at most 64 kB (22023), owned by the server's
   user or root (42501), not writable by group or others (42501); a bad line is reported by its number
   only, never its text (not even lowercased), in the error or the server log. (0.2.0: a plain
   `read_to_string` of whatever the path named — links followed, a FIFO blocked the backend in open(),
   a device was read to its end, any owner and mode accepted, and a bad line's scheme was quoted.)
4. `pg_terminate_backend()` ends the sweep worker while it waits on a row lock, within 1 s, and the
   postmaster starts a new one. (0.2.0: pgrx's SIGTERM handler only set a flag, which a lock wait
   never looks at: the worker kept waiting until the lock was released.)
5. The challenge keyset never passes a row a transaction still in progress may commit: with row N
   (block 100) uncommitted and row N+1 (block 100) committed, a run keeps the position below N; once N
   commits the next run derives its pairs. (0.2.0: the position moved to (100, N+1) and row N was
   never scanned.)
6. A checkpoint that does not fit `indexing_checkpoints.last_checkpoint` (integer) fails that processor
   with 22003 naming the value and leaves the stored checkpoint alone; the other processors are
   unaffected. (0.2.0: `cp as i32` wrote 2147483653 as -2147483643.)

Roles: hd_op (LOGIN, member of audius_indexer_operator), hd_plain (LOGIN, nothing else), in the
session cluster. Databases hd_keyset, hd_int4 (Audius-like, tests/harness/challenges.py) in the
session cluster; case 4 runs in a cluster of its own (hdterm).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psycopg
import pytest

from harness.challenges import OUTCOME_COLS, PROCESSORS, checkpoints, make_db, positions, spec
from conftest import SECRET_PATH, crash_lines, wait_until
from harness.chain import wallet_address
from harness.pg import worker_cluster
from harness.reliability import error_text, expect_error, short
from harness.suites import report_fixture

pytestmark = pytest.mark.timeout(180)

OP = "hd_op"
PLAIN = "hd_plain"
W = [wallet_address(i, "hardening") for i in range(3)]
F = "audius_indexer.multicall_total_audio_balances"
WORKER = "audius_indexer sweep"
MIB = 1024 * 1024
NOBODY = 65534


report = report_fixture("hardening", "Hardening — smaller defects of 0.2.0")


def _drop_role(conn, role: str) -> None:
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


@pytest.fixture(scope="module")
def roles(cluster):
    with cluster.connect("audius") as c:
        for r in (OP, PLAIN):
            _drop_role(c, r)
        c.execute(f"CREATE ROLE {OP} LOGIN IN ROLE audius_indexer_operator")
        c.execute(f"CREATE ROLE {PLAIN} LOGIN")
        rows = c.execute("SELECT rolname, rolsuper FROM pg_roles WHERE rolname IN (%s, %s) ORDER BY 1",
                         (OP, PLAIN)).fetchall()
        assert rows == [(OP, False), (PLAIN, False)], rows
    yield
    with cluster.connect("audius") as c:
        for r in (OP, PLAIN):
            _drop_role(c, r)


# ================================================================================================
# 1. reset_sweep_status() for an operator
# ================================================================================================
TOTALS = "SELECT ticks, total_requested, total_updated, total_failed, total_skipped, last_error " \
         "FROM audius_indexer.sweep_status"


def test_reset_sweep_status_as_operator(cluster, db, roles, report):
    with report.case("reset_sweep_status() as operator",
                     f"totals set non-zero (ticks 7, requested 70, …, last_error); as {OP} "
                     "(audius_indexer_operator, not a superuser): SELECT audius_indexer.reset_sweep_status()",
                     "no error; sweep_status totals 0, last_error NULL") as rec:
        db.execute("UPDATE audius_indexer.sweep_state SET ticks = 7, total_requested = 70, total_updated = 60, "
                   "total_failed = 6, total_skipped = 4, last_error = 'hd', last_error_at = now()")
        assert db.execute(TOTALS).fetchone() == (7, 70, 60, 6, 4, "hd")
        with cluster.connect("audius", user=OP) as c:
            try:
                c.execute("SELECT audius_indexer.reset_sweep_status()")
            except psycopg.Error as e:
                rec.observed = short(e, 100)
                raise AssertionError(f"reset_sweep_status() raised for {OP}: {error_text(e)}") from None
            row = c.execute(TOTALS).fetchone()
        assert row == (0, 0, 0, 0, 0, None), row
        rec.observed = f"totals {row[:5]}, last_error {row[5]}"


# ================================================================================================
# 2. rpc_max_response_bytes / rpc_concurrency: superuser-only, bounded, capped together
# ================================================================================================
MEMORY_SETTINGS = {"rpc_max_response_bytes": "'1MB'", "rpc_concurrency": "2"}


def test_memory_settings_superuser_only(cluster, db, roles, report):
    with report.case("rpc_max_response_bytes / rpc_concurrency superuser-only",
                     f"as {PLAIN}: SET audius_indexer.rpc_max_response_bytes = '1MB' and SET "
                     "audius_indexer.rpc_concurrency = 2; pg_settings.context; as superuser "
                     "SET rpc_max_response_bytes = '1GB'",
                     "42501 for each SET; context 'superuser' for both; 22023 for 1GB (max 256MB)") as rec:
        with cluster.connect("audius", user=PLAIN) as c:
            errs = [expect_error(c, f"SET audius_indexer.{name} = {value}", sqlstate="42501")[0]
                    for name, value in MEMORY_SETTINGS.items()]
        ctx = dict(db.execute("SELECT name, context FROM pg_settings WHERE name = ANY(%s)",
                              ([f"audius_indexer.{n}" for n in MEMORY_SETTINGS],)).fetchall())
        assert ctx == {f"audius_indexer.{n}": "superuser" for n in MEMORY_SETTINGS}, ctx
        big, _, _ = expect_error(db, "SET audius_indexer.rpc_max_response_bytes = '1GB'", sqlstate="22023")
        rec.observed = f"{short(errs[0], 60)}; {short(errs[1], 60)}; context superuser ×2; 1GB: {short(big, 90)}"


def test_response_limit_capped_by_concurrency(db, contracts, proxy, report):
    with report.case("answer limit = min(rpc_max_response_bytes, 256MiB / rpc_concurrency)",
                     "as superuser: rpc_max_response_bytes = '64MB'; the proxy pads the aggregate3 answer to "
                     "9 MiB; rpc_concurrency = 32, then 4", "32: ERROR 54000 'too large' (limit 8388608 "
                     "bytes); 4: accepted, the right balance") as rec:
        contracts.set_values(W[:1], [1414], [0], [0])
        db.execute("SET audius_indexer.rpc_max_response_bytes = '64MB'")
        db.execute("SET audius_indexer.rpc_concurrency = 32")
        proxy.reset()
        proxy.fault("pad", times=1, methods="eth_call", bytes=9 * MIB)
        e, _, _ = expect_error(db, f"SELECT * FROM {F}(%s)", (W[:1],), "54000", ("too large", "8388608"))
        assert [r.fault for r in proxy.select(method="eth_call")] == ["pad"], proxy.requests
        db.execute("SET audius_indexer.rpc_concurrency = 4")
        proxy.clear_faults()
        proxy.reset()
        proxy.fault("pad", times=1, methods="eth_call", bytes=9 * MIB)
        rows = db.execute(f"SELECT wallet, balance FROM {F}(%s)", (W[:1],)).fetchall()
        assert [(r[0], int(r[1])) for r in rows] == [(W[0], 1414)], rows
        assert [r.fault for r in proxy.select(method="eth_call")] == ["pad"], proxy.requests
        rec.observed = f"32: {short(e, 90)}; 4: 1 row (balance 1414) from the 9 MiB answer"


# ================================================================================================
# 3. rpc_urls_file: what the file may be
# ================================================================================================
def _server_file(path: Path, text: str, owner: int | str = "postgres", mode: int = 0o600) -> Path:
    path.write_text(text)
    if isinstance(owner, int):
        os.chown(path, owner, owner)
    else:
        shutil.chown(path, owner, owner)
    os.chmod(path, mode)
    return path


@dataclass
class FileCase:
    id: str
    what: str
    sqlstate: str
    contains: tuple
    make: Callable[[Path, str], str]   # (root, good URL line) -> the path to set
    max_s: float | None = None


def _symlink(root: Path, url: str) -> str:
    target = _server_file(root / "hd_target", url + "\n")
    link = root / "hd_link"
    link.symlink_to(target)
    return str(link)


def _fifo(root: Path, url: str) -> str:
    p = root / "hd_fifo"
    os.mkfifo(p, 0o600)
    shutil.chown(p, "postgres", "postgres")
    return str(p)


def _directory(root: Path, url: str) -> str:
    p = root / "hd_dir"
    p.mkdir()
    shutil.chown(p, "postgres", "postgres")
    return str(p)


def _too_large(root: Path, url: str) -> str:
    # a valid file in every other respect: the URL, then 70 kB of comment lines
    return str(_server_file(root / "hd_large", url + "\n" + ("#" + "x" * 99 + "\n") * 700))


def _foreign_owner(root: Path, url: str) -> str:
    # readable by the server (0644), only the owner is wrong
    return str(_server_file(root / "hd_nobody", url + "\n", owner=NOBODY, mode=0o644))


def _mode(mode: int):
    def make(root: Path, url: str) -> str:
        return str(_server_file(root / f"hd_mode{mode:o}", url + "\n", mode=mode))
    return make


def _bad_line(root: Path, url: str) -> str:
    return str(_server_file(root / "hd_badline", "sk-SECRET:xyz\n"))


FILE_CASES = [
    FileCase("symlink", "<root>/hd_link → <root>/hd_target (postgres, 0600, a good URL)", "42501",
             ("symbolic link",), _symlink),
    FileCase("fifo", "<root>/hd_fifo: a FIFO (mkfifo, postgres, 0600) with no writer", "22023", ("FIFO",),
             _fifo, max_s=1.0),
    FileCase("char_device", "/dev/null, then /dev/zero (character devices)", "22023", ("character device",),
             lambda root, url: "/dev/null", max_s=1.0),
    FileCase("directory", "<root>/hd_dir: a directory (postgres)", "22023", ("a directory",), _directory),
    FileCase("too_large", "<root>/hd_large: a good URL line + 70 kB of comments (postgres, 0600)", "22023",
             ("larger than 65536 bytes",), _too_large),
    FileCase("foreign_owner", f"<root>/hd_nobody: a good URL, owner uid {NOBODY} (nobody), 0644", "42501",
             (f"owned by uid {NOBODY}",), _foreign_owner),
    FileCase("mode_0620", "<root>/hd_mode620: a good URL, postgres, mode 0620", "42501",
             ("writable", "0620"), _mode(0o620)),
    FileCase("mode_0602", "<root>/hd_mode602: a good URL, postgres, mode 0602", "42501",
             ("writable", "0602"), _mode(0o602)),
    FileCase("bad_line", "<root>/hd_badline: the line 'sk-SECRET:xyz' (postgres, 0600)", "22023",
             ("line 1",), _bad_line),
]


def _call_with_fifo_watchdog(conn, path: str, after_s: float) -> tuple[psycopg.Error | None, float, bool]:
    """Runs the call; if it has not returned after `after_s`, opens the FIFO (read-write, so it never
    blocks) and closes it, which releases a backend blocked in open(): the test then fails instead
    of hanging (0.2.0)."""
    done = threading.Event()
    released = []

    def watchdog():
        if not done.wait(after_s) and os.path.exists(path):
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
            os.close(fd)
            released.append(True)

    threading.Thread(target=watchdog, daemon=True).start()
    t0 = time.monotonic()
    err = None
    try:
        conn.execute(f"SELECT * FROM {F}(%s)", (W[:1],)).fetchall()
    except psycopg.Error as e:
        err = e
    finally:
        done.set()
    return err, time.monotonic() - t0, bool(released)


@pytest.mark.parametrize("fc", FILE_CASES, ids=[f.id for f in FILE_CASES])
def test_rpc_urls_file_rules(fc: FileCase, cluster, db, proxy, report):
    root = Path(cluster.root)
    with report.case(f"rpc_urls_file: {fc.id}", fc.what + f"; as superuser SELECT * FROM {F}(ARRAY[w])",
                     f"ERROR {fc.sqlstate} mentioning {' / '.join(repr(c) for c in fc.contains)}"
                     + (f", within {fc.max_s:g} s" if fc.max_s else "")
                     + ("; 'sk-SECRET' (any case) neither in the error nor in the server log"
                        if fc.id == "bad_line" else "") + "; no request") as rec:
        try:
            path = fc.make(root, proxy.url_with(SECRET_PATH))
            paths = [path] + (["/dev/zero"] if fc.id == "char_device" else [])
            observed = []
            for p in paths:
                cluster.set_system(rpc_urls_file=p)
                mark = len(cluster.log_text())
                proxy.reset()
                with cluster.connect("audius") as c:
                    if fc.id == "fifo":
                        e, dt, released = _call_with_fifo_watchdog(c, p, 3.0)
                        assert not released, f"the call blocked on the FIFO (released by the test after 3 s); " \
                                             f"then: {error_text(e) if e else 'no error'}"
                        assert e is not None, "no error"
                        text = error_text(e)
                        assert e.sqlstate == fc.sqlstate, f"expected {fc.sqlstate}, got {e.sqlstate}: {text}"
                        for s in fc.contains:
                            assert s in text, f"error does not mention {s!r}: {text}"
                        assert dt < fc.max_s, f"took {dt:.2f} s"
                    else:
                        # /dev/null first: a build that reads devices gets '' from it (and would never
                        # finish reading /dev/zero), so /dev/zero is only tried once /dev/null is refused
                        e, text, dt = expect_error(c, f"SELECT * FROM {F}(%s)", (W[:1],), fc.sqlstate,
                                                   fc.contains, max_s=fc.max_s)
                    assert p in text and "audius_indexer.rpc_urls_file" in text, text
                assert proxy.http_requests == 0, "a request went out"
                if fc.id == "bad_line":
                    assert "sk-secret" not in text.lower(), f"the error quotes the line: {text}"
                    logged = cluster.log_text()[mark:]
                    assert p in logged, "the error was not logged (nothing to check)"
                    bad = [ln for ln in logged.splitlines() if "sk-secret" in ln.lower()]
                    assert not bad, "the server log quotes the line:\n" + "\n".join(bad)
                observed.append(f"{short(e, 120).replace(str(root), '<root>')} ({dt:.2f} s)")
            rec.observed = "; ".join(observed)
        finally:
            for name in ("hd_link", "hd_target", "hd_fifo", "hd_large", "hd_nobody", "hd_mode620",
                         "hd_mode602", "hd_badline"):
                (root / name).unlink(missing_ok=True)
            if (root / "hd_dir").is_dir():
                (root / "hd_dir").rmdir()


# ================================================================================================
# 4. pg_terminate_backend() ends the sweep worker waiting on a row lock
# ================================================================================================
def _worker(conn) -> tuple | None:
    return conn.execute("SELECT pid, wait_event_type, wait_event FROM pg_stat_activity WHERE backend_type = %s",
                        (WORKER,)).fetchone()


def test_terminate_worker_waiting_on_lock(proxy, contracts, report):
    with report.case("pg_terminate_backend(sweep worker in a lock wait)",
                     "own cluster, sweep worker on (1 s); another session holds FOR UPDATE on the 3 stale "
                     "eth_wallet_balances rows the sweep writes; once the worker shows wait_event_type 'Lock': "
                     "SELECT pg_terminate_backend(pid); then the lock is released",
                     "the pid gone from pg_stat_activity within 1 s; a new worker (new pid) sweeps the rows; "
                     "no crash in the log") as rec:
        c = worker_cluster("hdterm", "hdterm", proxy.url, contracts,
                           settings={"audius_indexer.follow_interval": "0"})
        locker = None
        try:
            with c.connect("hdterm") as su:
                su.execute("INSERT INTO public.eth_wallet_balances (wallet, balance, updated_at) "
                           "SELECT w, 1, '1970-01-01' FROM unnest(%s::text[]) AS w", (W,))
            locker = c.connect("hdterm", autocommit=False)
            assert len(locker.execute("SELECT wallet FROM public.eth_wallet_balances WHERE wallet = ANY(%s) "
                                      "FOR UPDATE", (W,)).fetchall()) == 3
            c.set_system(sweep_enabled=True)
            with c.connect("hdterm") as mon:
                pid, wtype, wevent = wait_until(lambda: (r := _worker(mon)) and r[1] == "Lock" and r, 30, 0.05,
                                                "the sweep worker waiting on a lock")
                t0 = time.monotonic()
                assert mon.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
                try:
                    wait_until(lambda: not mon.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                                       (pid,)).fetchone(), 1.0, 0.01, "the worker to exit")
                except TimeoutError:
                    r = mon.execute("SELECT wait_event_type, wait_event, state FROM pg_stat_activity "
                                    "WHERE pid = %s", (pid,)).fetchone()
                    rec.observed = f"pid {pid} still there 1 s after pg_terminate_backend: {r}"
                    raise AssertionError(rec.observed) from None
                gone = time.monotonic() - t0
                locker.rollback()
                new = wait_until(lambda: (r := _worker(mon)) and r[0] != pid and r[0], 30, 0.2,
                                 "a new sweep worker")
                wait_until(lambda: mon.execute("SELECT bool_and(updated_at > '1971-01-01') FROM "
                                               "public.eth_wallet_balances WHERE wallet = ANY(%s)",
                                               (W,)).fetchone()[0], 20, 0.2, "the new worker to sweep the rows")
            bad = crash_lines(c.log_text())
            assert not bad, "server log shows crashes:\n" + "\n".join(bad[:20])
            rec.observed = (f"waiting on {wtype}/{wevent}; gone {gone * 1000:.0f} ms after pg_terminate_backend; "
                            f"new worker pid {new} swept the 3 rows; no crash")
        finally:
            if locker is not None:
                locker.close()
            c.destroy()


# ================================================================================================
# 5 / 6. challenge processors
# ================================================================================================
RUN = "SELECT * FROM audius_indexer.process_user_event_challenges()"


def run(conn) -> dict[str, dict]:
    out = [dict(zip(OUTCOME_COLS, r)) for r in conn.execute(RUN).fetchall()]
    assert [o["challenge_id"] for o in out] == list(PROCESSORS), out
    return {o["challenge_id"]: o for o in out}


def run_clean(conn) -> dict[str, dict]:
    """run(conn), every processor without an error."""
    out = run(conn)
    assert all(o["error"] is None for o in out.values()), out
    return out


def ue(conn, block: int, user: int, referrer: int | None = None, mobile: bool = False) -> int:
    return conn.execute("INSERT INTO user_events (blocknumber, is_current, user_id, referrer, is_mobile_user) "
                        "VALUES (%s, true, %s, %s, %s) RETURNING id", (block, user, referrer, mobile)).fetchone()[0]


def user(conn, uid: int, block: int, verified: bool = False) -> None:
    conn.execute("INSERT INTO users (user_id, wallet, is_current, created_at, is_verified, txhash, blocknumber) "
                 "VALUES (%s, %s, true, localtimestamp, %s, %s, %s)", (uid, f"0xw{uid}", verified, f"tx-{uid}", block))


def uc_keys(conn) -> set[tuple[str, str]]:
    return {(c, s) for c, s in conn.execute(
        "SELECT challenge_id::text, specifier::text FROM user_challenges WHERE challenge_id IN ('m', 'r', 'rv', 'rd')")}


@pytest.fixture
def audius_db(cluster):
    """A fresh Audius-like database (fixture schema, m/r/rv/rd active, Rust triggers, indexes) in the
    session cluster; dropped afterwards."""
    made = []

    def make(name: str) -> psycopg.Connection:
        with cluster.connect() as su:
            su.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        make_db(cluster, name)
        made.append(name)
        return cluster.connect(name, options="-c TimeZone=UTC")
    yield make
    with cluster.connect() as su:
        for name in made:
            su.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


REFERRER = 500          # an unverified referrer (r, rd)
PREP_USER, A_USER, B_USER = 601, 602, 603


def test_keyset_never_skips_a_late_commit(cluster, audius_db, report):
    with report.case("challenge keyset: late-committing row",
                     f"referral (user {PREP_USER} → referrer {REFERRER}) at block 99, one run; A: BEGIN, INSERT "
                     f"referral of user {A_USER} at block 100 (id N), left open; B: INSERT user {B_USER} at "
                     "block 100 (id N+1), committed; run; A commits; run",
                     "after run 1 the r/rv/rd position (ue_id) is below N; after run 2 A's pair is in "
                     "user_challenges (r and rd)") as rec:
        with contextlib.ExitStack() as stack:
            conn = stack.enter_context(contextlib.closing(audius_db("hd_keyset")))
            user(conn, REFERRER, 1, verified=False)
            prep = ue(conn, 99, PREP_USER, REFERRER)
            # (settled at once in a quiet cluster; a transaction elsewhere could hold it back a run)
            for _ in range(5):
                run_clean(conn)
                if positions(conn)["r"][:2] == (99, prep):
                    break
                time.sleep(0.2)
            assert positions(conn)["r"][:2] == (99, prep), positions(conn)

            a = stack.enter_context(contextlib.closing(cluster.connect("hd_keyset", autocommit=False)))
            n = ue(a, 100, A_USER, REFERRER)                  # A: uncommitted
            n1 = ue(conn, 100, B_USER, REFERRER)              # B: committed (autocommit)
            assert n1 == n + 1, (n, n1)
            run_clean(conn)
            pos1 = positions(conn)
            held = {p: pos1[p][1] for p in ("r", "rv", "rd")}
            for p, ue_id in held.items():
                assert ue_id is not None and ue_id < n, f"{p}: position ue_id {ue_id} passed N = {n} ({pos1[p]})"
            a.commit()
            run_clean(conn)
            got = uc_keys(conn)
            want = {("r", f"{spec(REFERRER)}:{spec(A_USER)}"), ("rd", f"{spec(A_USER)}:{spec(REFERRER)}")}
            missing = want - got
            assert not missing, f"A's row (id {n}) was skipped: missing {sorted(missing)}; position " \
                                f"{positions(conn)['r']}"
            assert {("r", f"{spec(REFERRER)}:{spec(B_USER)}"), ("rd", f"{spec(B_USER)}:{spec(REFERRER)}")} <= got
            pos2 = positions(conn)
            rec.observed = (f"N = {n}; after run 1 ue_id r/rv/rd = {held['r']}/{held['rv']}/{held['rd']} (< N); "
                            f"after A's commit run 2 derived A's pair (r, rd); position now {pos2['r'][:2]}")


BIG_BLOCK = 2_147_483_653


def test_checkpoint_out_of_int4_range(audius_db, report):
    with report.case("challenge checkpoint beyond integer",
                     "user_events.blocknumber → bigint; mobile row at block 10 and a referral at block 10, one "
                     f"run; then a mobile row at block {BIG_BLOCK}; run",
                     "m: error '22003: …out of range…' naming the value, indexing_checkpoints still 10 (not "
                     "wrapped negative); r/rv/rd: no error, checkpoints unchanged") as rec:
        conn = audius_db("hd_int4")
        try:
            conn.execute("ALTER TABLE user_events ALTER COLUMN blocknumber TYPE bigint")
            user(conn, REFERRER, 1, verified=False)
            ue(conn, 10, 700, mobile=True)
            ue(conn, 10, 701, REFERRER)
            run_clean(conn)
            before = checkpoints(conn)
            assert before == {"m": 10, "r": 10, "rv": 10, "rd": 10}, before
            ue(conn, BIG_BLOCK, 702, mobile=True)
            out = run(conn)
            # (the row is settled at once in a quiet cluster; a transaction elsewhere could hold it back a run)
            for _ in range(5):
                if out["m"]["error"] is not None or checkpoints(conn)["m"] != 10:
                    break
                time.sleep(0.2)
                out = run(conn)
            after = checkpoints(conn)
            m = out["m"]
            assert m["error"] is not None, f"m: no error; checkpoint now {after['m']} ({m})"
            assert m["error"].startswith("22003: ") and "out of range" in m["error"] \
                and str(BIG_BLOCK) in m["error"], m["error"]
            assert after["m"] == 10, f"m checkpoint {after['m']}"
            assert (m["checkpoint_before"], m["checkpoint_after"]) == (10, 10), m
            for p in ("r", "rv", "rd"):
                assert out[p]["error"] is None, out[p]
                assert after[p] == before[p], (p, after[p], before[p])
            state = conn.execute("SELECT last_error FROM audius_indexer.challenge_processor_state "
                                 "WHERE challenge_id = 'm'").fetchone()[0]
            assert state == m["error"], state
            rec.observed = f"m: {m['error'][:110]}; checkpoints {after}"
        finally:
            conn.close()
