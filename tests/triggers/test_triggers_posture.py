"""Error posture of the Rust dedupe triggers, each scenario checked against the PL/pgSQL
reference on an identical database:

- an error inside a disbursement trigger (here: a CHECK constraint on notification) becomes
  `WARNING:  An error occurred in <trigger>: <message>`; the disbursement row is stored; no
  notification row and no pg_notify remain;
- work done before a later error is rolled back too (notification inserted, then pg_notify fails);
- a Rust panic inside a disbursement trigger is caught the same way (fault-injection argument);
- a statement timeout / cancel is not swallowed (PL/pgSQL's WHEN OTHERS does not catch it either);
- on_user_challenge lets errors (and panics) abort the user_challenges write.
"""
from __future__ import annotations

import threading
import time

import psycopg
import pytest

from harness.triggers import Notices, clean_cluster, create_audius_db

WALLET = "0xAbCdEf0123456789aBcDeF0123456789AbCdEf01"
USER = 7


@pytest.fixture(scope="module")
def pg():
    with clean_cluster("trigposture") as c:
        create_audius_db(c, "ref", triggers="contains", trace=False)
        create_audius_db(c, "rust", triggers="rust", trace=False)
        for db in ("ref", "rust"):
            with c.connect(db) as conn:
                conn.execute("INSERT INTO users (user_id, wallet, is_current, created_at) VALUES (%s, %s, true, "
                             "'2026-01-01')", (USER, WALLET))
                conn.execute("INSERT INTO reward_manager_txs VALUES ('sig-ok', 1, '2026-01-01')")
        yield c


def observe(pg, db: str, statements: list[tuple[str, tuple]], setup: list[str] = (), teardown: list[str] = ()):
    """Runs `statements` in one autocommit session on `db` (after `setup`, always followed by
    `teardown`); returns what a client and the tables see."""
    with pg.connect(db) as conn:
        notices = Notices(conn)
        conn.execute("LISTEN challenge_disbursed")
        for sql in setup:
            conn.execute(sql)
        outcome = []
        try:
            for sql, params in statements:
                try:
                    conn.execute(sql, params)
                    outcome.append("ok")
                except psycopg.Error as e:
                    outcome.append((e.diag.sqlstate, e.diag.message_primary))
            state = {
                "outcome": outcome,
                "notices": notices.take(),
                "payloads": [n.payload for n in conn.notifies(timeout=0.3)],
                "notifications": conn.execute(
                    "SELECT type, group_id, specifier FROM notification ORDER BY 1, 2, 3").fetchall(),
                "challenge_disbursements": conn.execute(
                    "SELECT challenge_id, specifier FROM challenge_disbursements ORDER BY 1, 2").fetchall(),
                "sol_reward_disbursements": conn.execute(
                    "SELECT signature, instruction_index FROM sol_reward_disbursements ORDER BY 1, 2").fetchall(),
                "user_challenges": conn.execute(
                    "SELECT challenge_id, specifier FROM user_challenges ORDER BY 1, 2").fetchall(),
            }
        finally:
            for sql in teardown:
                conn.execute(sql)
            for t in ("notification", "challenge_disbursements", "sol_reward_disbursements", "user_challenges",
                      "user_score_features"):
                conn.execute(f"DELETE FROM {t}")
    return state


CD = ("INSERT INTO challenge_disbursements (challenge_id, user_id, specifier, signature, slot, amount, created_at) "
      "VALUES (%s, %s, %s, %s, %s, %s, %s)")
SOL = ("INSERT INTO sol_reward_disbursements (signature, instruction_index, amount, slot, user_bank, challenge_id, "
       "specifier, recipient_eth_address, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)")
UC = ("INSERT INTO user_challenges (challenge_id, user_id, specifier, is_complete, amount, completed_at) "
      "VALUES (%s, %s, %s, %s, %s, %s)")

NO_CHALLENGE_REWARD = ["ALTER TABLE notification ADD CONSTRAINT no_cr CHECK (type <> 'challenge_reward') NOT VALID"]
DROP_NO_CHALLENGE_REWARD = ["ALTER TABLE notification DROP CONSTRAINT IF EXISTS no_cr"]


def both(pg, *args, **kw):
    ref, rust = observe(pg, "ref", *args, **kw), observe(pg, "rust", *args, **kw)
    assert rust == ref, f"Rust posture differs from PL/pgSQL:\nref:  {ref}\nrust: {rust}"
    return rust


def test_disbursement_insert_failure_is_a_warning_and_leaves_nothing(pg):
    got = both(pg, [(CD, ("p", USER, "spec-1", "sig-ok", 5, "100", "2026-01-02 00:00")),
                    (SOL, ("solsig", 0, 100, 5, "bank", "u", "spec-2", WALLET.lower(), "2026-01-02 00:00"))],
               setup=NO_CHALLENGE_REWARD, teardown=DROP_NO_CHALLENGE_REWARD)
    assert got["outcome"] == ["ok", "ok"]
    check = 'new row for relation "notification" violates check constraint "no_cr"'
    assert got["notices"] == [("WARNING", f"An error occurred in on_challenge_disbursement: {check}"),
                              ("WARNING", f"An error occurred in on_sol_reward_disbursement: {check}")]
    assert got["challenge_disbursements"] == [("p", "spec-1")]
    assert got["sol_reward_disbursements"] == [("solsig", 0)]
    assert got["notifications"] == []
    assert got["payloads"] == []          # the failed sol trigger never reached pg_notify


def test_earlier_work_is_rolled_back_when_a_later_step_fails(pg):
    # The notification insert succeeds (the long specifier compresses), then pg_notify rejects the
    # > 8000-byte payload: the notification must not survive.
    long_spec = "x" * 8100
    got = both(pg, [(SOL, ("solsig", 0, 100, 5, "bank", "u", long_spec, WALLET.lower(), "2026-01-02 00:00"))])
    assert got["outcome"] == ["ok"]
    assert got["notices"] == [("WARNING", "An error occurred in on_sol_reward_disbursement: payload string too long")]
    assert got["sol_reward_disbursements"] == [("solsig", 0)]
    assert got["notifications"] == []
    assert got["payloads"] == []
    # sanity: without the failing notify the same trigger does write the notification
    ok = observe(pg, "rust", [(SOL, ("solsig", 0, 100, 5, "bank", "u", "short", WALLET.lower(), "2026-01-02"))])
    assert ok["notifications"] == [("challenge_reward", "challenge_reward:7:challenge:u:specifier:short", "7")]
    assert len(ok["payloads"]) == 1


@pytest.mark.parametrize("trigger,table,stmt,params", [
    ("on_challenge_disbursement", "challenge_disbursements", CD,
     ("p", USER, "spec-1", "sig-ok", 5, "100", "2026-01-02 00:00")),
    ("on_sol_reward_disbursement", "sol_reward_disbursements", SOL,
     ("solsig", 0, 100, 5, "bank", "u", "spec-2", WALLET.lower(), "2026-01-02 00:00")),
])
def test_rust_panic_in_disbursement_trigger_is_caught(pg, trigger, table, stmt, params):
    fn = {"on_challenge_disbursement": "handle_challenge_disbursement",
          "on_sol_reward_disbursement": "handle_sol_reward_disbursement"}[trigger]
    panic_trigger = (f"CREATE OR REPLACE TRIGGER {trigger} AFTER INSERT ON {table} FOR EACH ROW "
                     f"EXECUTE FUNCTION audius_indexer.{fn}('audius_indexer.test_panic')")
    try:
        got = observe(pg, "rust", [(stmt, params)], setup=[panic_trigger])
    finally:
        with pg.connect("rust") as conn:
            rows = conn.execute("SELECT trigger_name, action FROM audius_indexer.install_triggers()").fetchall()
    assert (trigger, "repaired") in rows, rows
    assert got["outcome"] == ["ok"]
    assert len(got["notices"]) == 1
    sev, msg = got["notices"][0]
    assert sev == "WARNING" and msg.startswith(f"An error occurred in {trigger}: fault injection"), msg
    assert got[table] != []                # the disbursement is stored
    assert got["notifications"] == []      # the panic came after the insert (and pg_notify): rolled back
    assert got["payloads"] == []
    # the connection and the trigger keep working after a caught panic
    again = observe(pg, "rust", [(stmt, params)])
    assert again["notices"] == [] and len(again["notifications"]) == 1


def test_statement_timeout_is_not_swallowed(pg):
    """The trigger's insert waits on a conflicting uncommitted row; the statement timeout must abort
    the disbursement insert (query_canceled is not caught by WHEN OTHERS), in both implementations."""
    results = {}
    for db in ("ref", "rust"):
        blocker = pg.connect(db, autocommit=False)
        try:
            blocker.execute("INSERT INTO notification (specifier, group_id, type, \"timestamp\", user_ids) VALUES "
                            "('7', 'challenge_reward:7:challenge:p:specifier:blocked', 'placeholder', now(), '{999}')")
            got = observe(pg, db, [(CD, ("p", USER, "blocked", "sig-ok", 5, "100", "2026-01-02 00:00"))],
                          setup=["SET statement_timeout = '300ms'"])
        finally:
            blocker.rollback()
            blocker.close()
        results[db] = got
    assert results["rust"] == results["ref"]
    assert results["rust"]["outcome"] == [("57014", "canceling statement due to statement timeout")]
    assert results["rust"]["challenge_disbursements"] == []
    assert results["rust"]["notices"] == []


def test_on_user_challenge_errors_abort_the_write(pg):
    got = both(pg, [(UC, ("p", USER, "7", True, 1, "2026-01-02 00:00")),      # cooldown branch: blocked
                    (UC, ("v", USER, "7", True, 5, "2026-01-02 00:00")),      # branch A: claimable blocked
                    (UC, ("tt", USER, "7", True, 5, "2026-01-02 00:00")),     # branch A: challenge_reward blocked
                    (UC, ("b", USER, "7", True, 1, "2026-01-02 00:00"))],     # cooldown branch, skipped: ok
               setup=["ALTER TABLE notification ADD CONSTRAINT no_rows CHECK (false) NOT VALID"],
               teardown=["ALTER TABLE notification DROP CONSTRAINT no_rows"])
    err = ("23514", 'new row for relation "notification" violates check constraint "no_rows"')
    assert got["outcome"] == [err, err, err, "ok"]
    assert got["user_challenges"] == [("b", "7")]
    assert got["notifications"] == []


def test_on_user_challenge_panic_aborts_the_write(pg):
    panic_trigger = ("CREATE OR REPLACE TRIGGER on_user_challenge AFTER INSERT OR UPDATE ON user_challenges "
                     "FOR EACH ROW EXECUTE FUNCTION audius_indexer.handle_on_user_challenge('audius_indexer.test_panic')")
    try:
        got = observe(pg, "rust", [(UC, ("v", USER, "7", True, 5, "2026-01-02 00:00")),
                                   (UC, ("v", USER, "8", False, 5, None))], setup=[panic_trigger])
    finally:
        with pg.connect("rust") as conn:
            conn.execute("SELECT audius_indexer.install_triggers()")
    state, message = got["outcome"][0]
    assert state == "XX000" and "fault injection" in message, got["outcome"]
    assert got["outcome"][1] == "ok"      # incomplete rows return before any work: no panic
    assert got["user_challenges"] == [("v", "8")]
    assert got["notifications"] == []


def test_cancel_request_reaches_the_backend_inside_a_guarded_trigger(pg):
    """pg_cancel_backend while the sol trigger waits on a lock: the insert fails with 57014 and the
    session stays usable (no crash, subtransaction state unwound)."""
    blocker = pg.connect("rust", autocommit=False)
    victim = pg.connect("rust")
    try:
        blocker.execute("INSERT INTO notification (specifier, group_id, type, \"timestamp\", user_ids) VALUES "
                        "('7', 'challenge_reward:7:challenge:u:specifier:wait', 'placeholder', now(), '{999}')")
        pid = victim.execute("SELECT pg_backend_pid()").fetchone()[0]
        err: list = []

        def run():
            try:
                victim.execute(SOL, ("cancelsig", 0, 1, 5, "bank", "u", "wait", WALLET.lower(), "2026-01-02"))
            except psycopg.Error as e:
                err.append(e.diag.sqlstate)

        t = threading.Thread(target=run)
        t.start()
        with pg.connect("rust") as admin:
            deadline = time.time() + 10
            while time.time() < deadline:
                waiting = admin.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                                        (pid,)).fetchone()[0]
                if waiting == "Lock":
                    break
                time.sleep(0.02)
            admin.execute("SELECT pg_cancel_backend(%s)", (pid,))
        t.join(10)
        assert err == ["57014"]
        assert victim.execute("SELECT count(*) FROM sol_reward_disbursements").fetchone()[0] == 0
        assert victim.execute("SELECT 1").fetchone()[0] == 1
    finally:
        blocker.rollback()
        blocker.close()
        victim.close()


def test_an_ordinary_writer_role_fires_the_rust_triggers(pg):
    """The Audius application role is no superuser and has no rights on schema audius_indexer:
    firing a trigger needs neither (only the writes the function does, as with PL/pgSQL)."""
    with pg.connect("rust") as conn:
        conn.execute("CREATE ROLE trig_writer LOGIN")
        try:
            conn.execute("GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO trig_writer")
            conn.execute("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO trig_writer")
            with pg.connect("rust", user="trig_writer") as w:
                notices = Notices(w)
                w.execute(UC, ("v", USER, "writer", True, 5, "2026-01-05 00:00"))
                w.execute(SOL, ("writer-sig", 0, 1, 5, "bank", "u", "writer", WALLET.lower(), "2026-01-05 03:00"))
                assert notices.take() == []
            got = conn.execute("SELECT type FROM notification WHERE specifier IN ('writer', '7') "
                               "AND \"timestamp\" >= '2026-01-05' ORDER BY 1").fetchall()
            assert got == [("challenge_reward",), ("challenge_reward",), ("claimable_reward",)]
        finally:
            for t in ("notification", "sol_reward_disbursements", "user_challenges", "user_score_features"):
                conn.execute(f"DELETE FROM {t}")
            conn.execute("DROP OWNED BY trig_writer")
            conn.execute("DROP ROLE trig_writer")
