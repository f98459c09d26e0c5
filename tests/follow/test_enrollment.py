"""Enrollment on link: a wallet linked to a user gets its eth_wallet_balances row at once and its
exact total at the next follow step.

audius_indexer.install_enrollment() puts the trigger audius_indexer_enroll (function
audius_indexer.enroll_wallet()) on users (a current row with a wallet) and on associated_wallets (an
eth row inserted, undeleted or re-pointed); uninstall_enrollment() takes it away again. While the path
'enroll' is on, a linked wallet without a row gets one as Audius's migration 0204 creates them
(balance 0, blocknumber NULL, updated_at 1970-01-01) and is queued in audius_indexer.follow_pending
(min_block NULL); the next follow_transfers() step reads it and writes its total. The trigger never
calls the node, never fails the Audius write (its errors are WARNINGs) and needs no right of the
writer on the extension's objects.

One cluster built like an Audius discovery database (harness.follow.audius_cluster: users,
associated_wallets with its lowercasing trigger, eth_wallet_balances with on_eth_wallet_balance_changes
-> eth_user_balances, then the extension) and one chain of our own (anvil + Multicall3 + the mock
contracts + a recording proxy) for the whole module. Every expected balance comes from three
independent eth_calls (harness.follow.expected_total).
"""
from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
import pytest

from harness.follow import AUDIUS_TRIGGER_WARNING, audius_cluster, chain, expected_total, point_at, step
from harness.chain import to_checksum, wallet_address
from harness.pg import enable_paths
from privileges.test_no_path_to_superuser import SHADOWED, column_defs, domains_sql, evidence_sql, payload_sql, views_sql

pytestmark = pytest.mark.timeout(300)

DB = "audiusenroll"
TRIGGER = "audius_indexer_enroll"
TABLES = ("associated_wallets", "users")
EPOCH = datetime(1970, 1, 1)
# what the trigger says when it swallows an error
ENROLL_WARNING = "An error occurred in audius_indexer_enroll:"

_ids = itertools.count(1000)      # associated_wallets.id and users.txhash: unique over the module


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pgc(chain):
    """The cluster, pointed at the chain; the follow path on and its first step made (the checkpoint
    at the head), so that every later step reads the pending wallets. The path states right after
    CREATE EXTENSION are kept in `initial_paths`."""
    c = audius_cluster("enroll", DB)
    try:
        point_at(c, chain)
        with c.connect(DB) as conn:
            c.initial_paths = conn.execute("SELECT path, state FROM audius_indexer.path_status").fetchall()
            enable_paths(conn, "follow")
            boot = step(conn)
            assert boot["from_block"] is None and boot["checkpoint"] == chain.anvil.block_number(), boot
        yield c
        c.assert_log_clean()
    finally:
        c.destroy()


@dataclass
class Env:
    cluster: object
    chain: object
    conn: psycopg.Connection
    mark: int
    notices: list = field(default_factory=list)   # (severity, message_primary) sent to the sessions
    expect_enroll_warning: bool = False

    def on_notice(self, d) -> None:
        self.notices.append((d.severity_nonlocalized, d.message_primary))  # valid inside the callback only

    def log_warnings(self) -> list[str]:
        time.sleep(0.2)  # the log catches up
        return [ln for ln in self.cluster.log_text()[self.mark:].splitlines() if "WARNING:" in ln]

    def assert_no_warnings(self) -> None:
        """No WARNING reached the test's session and none is in the server log since the test began
        (the Audius triggers' and ours alike)."""
        sent = [m for sev, m in self.notices if sev == "WARNING"]
        assert not sent, f"WARNINGs sent to the linking session: {sent}"
        logged = self.log_warnings()
        assert not logged, "WARNING lines in the server log:\n" + "\n".join(logged[:10])


@pytest.fixture
def env(pgc, chain):
    """A superuser connection to the database with the Audius tables, eth_wallet_balances,
    eth_user_balances and the pending queue empty, the enrollment installed and the path 'enroll' on.
    After the test the log slice must show no 'An error occurred in' WARNING (unless the test
    provokes ours)."""
    with pgc.connect(DB) as su:
        su.execute("TRUNCATE public.users, public.associated_wallets, public.eth_wallet_balances, "
                   "public.eth_user_balances, audius_indexer.follow_pending, audius_indexer.wallet_failures")
        install(su)
        su.execute("SELECT audius_indexer.enable('enroll')")
    chain.proxy.clear_faults()
    chain.proxy.reset()
    conn = pgc.connect(DB)
    e = Env(pgc, chain, conn, len(pgc.log_text()))
    conn.add_notice_handler(e.on_notice)
    try:
        yield e
    finally:
        conn.close()
    bad = [ln for ln in pgc.log_text()[e.mark:].splitlines() if AUDIUS_TRIGGER_WARNING.search(ln)
           and not (e.expect_enroll_warning and ENROLL_WARNING in ln)]
    assert not bad, "trigger WARNINGs:\n" + "\n".join(bad[:10])


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _by_table(rows) -> dict[str, str]:
    """{table: action}; the table name without its schema."""
    out = {}
    for table, trigger, action in rows:
        assert trigger == TRIGGER, rows
        out[table.split(".")[-1]] = action
    return out


def install(conn, *args) -> dict[str, str]:
    sql = "SELECT table_name, trigger_name, action FROM audius_indexer.install_enrollment(" + \
          ("%s" if args else "") + ")"
    return _by_table(conn.execute(sql, args or None).fetchall())


def uninstall(conn, *args) -> dict[str, str]:
    sql = "SELECT table_name, trigger_name, action FROM audius_indexer.uninstall_enrollment(" + \
          ("%s" if args else "") + ")"
    return _by_table(conn.execute(sql, args or None).fetchall())


def enroll_triggers(conn) -> dict[str, str]:
    """{table: pg_get_triggerdef} of every trigger named audius_indexer_enroll, in any schema
    (fully qualified: search_path = pg_catalog)."""
    with conn.transaction():
        conn.execute("SET LOCAL search_path = pg_catalog")
        return dict(conn.execute(
            "SELECT c.relname::text, pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE t.tgname = %s AND NOT t.tgisinternal", (TRIGGER,)).fetchall())


def other_triggers(conn) -> set[tuple]:
    """(table, trigger, definition, enabled) of every other user trigger of schema public."""
    with conn.transaction():
        conn.execute("SET LOCAL search_path = pg_catalog")
        return set(conn.execute(
            "SELECT c.relname::text, t.tgname::text, pg_get_triggerdef(t.oid), t.tgenabled::text "
            "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE c.relnamespace = 'public'::regnamespace AND NOT t.tgisinternal AND t.tgname <> %s",
            (TRIGGER,)).fetchall())


def path_state(conn) -> str:
    return conn.execute("SELECT state FROM audius_indexer.path_status WHERE path = 'enroll'").fetchone()[0]


def add_user(conn, user_id: int, wallet: str | None, is_current: bool = True) -> None:
    """A users row as Audius writes one (the wallet as given: users keeps its case)."""
    conn.execute("INSERT INTO public.users (user_id, wallet, is_current, txhash, blocknumber) "
                 "VALUES (%s, %s, %s, %s, 1)", (user_id, wallet, is_current, f"tx{next(_ids)}"))


def add_assoc(conn, user_id: int, wallet: str, chain: str = "eth", is_delete: bool = False) -> int:
    """An associated_wallets row (is_current; the id given, so no sequence right is needed)."""
    i = next(_ids)
    conn.execute("INSERT INTO public.associated_wallets (id, user_id, wallet, blockhash, blocknumber, is_current, "
                 "is_delete, chain) VALUES (%s, %s, %s, %s, 1, true, %s, %s)",
                 (i, user_id, wallet, f"0xb{i}", is_delete, chain))
    return i


def row(conn, wallet: str):
    """(balance, blocknumber, updated_at) of the wallet's eth_wallet_balances row, or None."""
    r = conn.execute("SELECT balance, blocknumber, updated_at FROM public.eth_wallet_balances WHERE wallet = %s",
                     (wallet,)).fetchone()
    return None if r is None else (int(r[0]), r[1], r[2])


def pending(conn) -> dict[str, int | None]:
    return dict(conn.execute("SELECT wallet, min_block FROM audius_indexer.follow_pending").fetchall())


def user_balance(conn, user_id: int) -> int | None:
    r = conn.execute("SELECT balance FROM public.eth_user_balances WHERE user_id = %s", (user_id,)).fetchone()
    return None if r is None else int(r[0])


def staked_wallets(contracts, tag: str, n: int) -> tuple[list[str], dict[str, int]]:
    """n fresh wallets holding token, staked and delegated AUDIO; their expected totals."""
    ws = [wallet_address(i, f"enroll-{tag}") for i in range(n)]
    contracts.set_values(ws, token=[(i + 1) * 10**18 + 7 for i in range(n)],
                         staked=[(i + 2) * 10**20 + 3 for i in range(n)],
                         delegated=[(i + 3) * 10**19 + 1 for i in range(n)])
    want = {w: expected_total(contracts, w) for w in ws}
    assert all(v > 0 for v in want.values()), want
    return ws, want


def assert_exact(conn, want: dict[str, int]) -> None:
    for w, total in want.items():
        got = row(conn, w)
        assert got is not None, f"{w}: no row"
        assert got[0] == total, f"{w}: balance {got[0]} != on-chain total {total}"
        assert got[1] is not None and got[2] > EPOCH, f"{w}: not written by the step: {got}"


# --------------------------------------------------------------------------------------------
# the behaviour
# --------------------------------------------------------------------------------------------
def test_enroll_path_is_off_after_create_extension(pgc):
    """The path table gains 'enroll', listed after the three worker paths and off like them until
    the DBA turns it on."""
    assert pgc.initial_paths == [("sweep", "off"), ("follow", "off"), ("challenges", "off"), ("enroll", "off")]


def test_linked_wallets_get_their_exact_totals_at_the_next_follow_step(env):
    """A wallet holding staked and delegated AUDIO, linked three ways — an eth associated wallet
    inserted (mixed case: Audius's BEFORE trigger stores it lowercase), one inserted deleted and then
    undeleted (is_delete true -> false), and the wallet of a new current users row (mixed case) —
    gets at once the row Audius's migration 0204 creates (balance 0, blocknumber NULL, updated_at
    1970-01-01) and a follow_pending entry with min_block NULL. ONE follow step (no Transfer log in
    its range) reads the three pending wallets and writes each exact total, and eth_user_balances of
    the user becomes their sum. No trigger WARNING on the way."""
    conn, proxy = env.conn, env.chain.proxy
    (wa, wd, wu), want = staked_wallets(env.chain.contracts, "link", 3)
    uid = 101
    proxy.reset()
    add_assoc(conn, uid, to_checksum(wa))
    add_assoc(conn, uid, to_checksum(wd), is_delete=True)
    assert row(conn, wd) is None and pending(conn) == {wa: None}, "a deleted link enrolled its wallet"
    conn.execute("UPDATE public.associated_wallets SET is_delete = false WHERE wallet = %s", (wd,))
    add_user(conn, uid, to_checksum(wu))
    assert proxy.http_requests == 0 and proxy.accepted == 0, \
        f"linking reached the node: {[r.method for r in proxy.requests]}"

    for w in (wa, wd, wu):
        assert row(conn, w) == (0, None, EPOCH), (w, row(conn, w))
    assert pending(conn) == {wa: None, wd: None, wu: None}

    r = step(conn)
    assert r["logs"] == 0 and r["tracked"] == 3 and r["updated"] == 3, r
    assert r["skipped"] == 0 and r["failed"] == 0, r
    assert proxy.count(method="eth_call", aggregate3=True) >= 1, "the step did not read through the proxy"
    assert_exact(conn, want)
    assert pending(conn) == {}
    assert user_balance(conn, uid) == sum(want.values())
    env.assert_no_warnings()


def test_linking_makes_no_rpc_call(env):
    """The trigger writes two rows and nothing else: a transaction linking wallets through both
    tables (BEGIN … COMMIT) reaches the node zero times — the recording proxy sees no request and
    no connection between before the first INSERT and after the COMMIT. The node is read by the next
    follow step, which the proxy does see."""
    conn, proxy = env.conn, env.chain.proxy
    (w1, w2, w3), want = staked_wallets(env.chain.contracts, "norpc", 3)
    proxy.reset()
    with conn.transaction():
        add_user(conn, 201, to_checksum(w1))
        add_assoc(conn, 201, w2)
        add_assoc(conn, 202, w3, is_delete=True)
        conn.execute("UPDATE public.associated_wallets SET is_delete = false WHERE wallet = %s", (w3,))
    assert proxy.http_requests == 0 and proxy.accepted == 0, \
        f"the linking transaction reached the node: {[r.method for r in proxy.requests]}"
    assert set(pending(conn)) == {w1, w2, w3}
    step(conn)
    assert proxy.http_requests > 0
    assert_exact(conn, want)


def test_with_the_enroll_path_off_the_triggers_do_nothing(env):
    """disable('enroll') leaves the triggers installed but idle: links through both tables create
    no row and queue nothing; enable('enroll') makes them act again."""
    conn = env.conn
    w1, w2, w3 = (wallet_address(i, "enroll-off") for i in range(3))
    conn.execute("SELECT audius_indexer.disable('enroll')")
    assert path_state(conn) == "off"
    assert set(enroll_triggers(conn)) == set(TABLES)
    add_user(conn, 301, w1)
    add_assoc(conn, 301, w2)
    assert conn.execute("SELECT count(*) FROM public.eth_wallet_balances").fetchone()[0] == 0
    assert pending(conn) == {}
    conn.execute("SELECT audius_indexer.enable('enroll')")
    assert path_state(conn) == "on"
    add_assoc(conn, 301, w3)
    assert row(conn, w3) == (0, None, EPOCH) and pending(conn) == {w3: None}
    env.assert_no_warnings()


def test_install_is_idempotent_and_uninstall_removes_only_its_triggers(env):
    """install_enrollment() creates the trigger on users (AFTER INSERT OR UPDATE OF wallet,
    is_current) and on associated_wallets (AFTER INSERT OR UPDATE OF wallet, chain, is_delete), FOR
    EACH ROW with a WHEN condition, calling audius_indexer.enroll_wallet(); again it says 'already
    installed'. uninstall_enrollment() drops both ('dropped'), then has nothing to do ('absent,
    nothing to do'); every other trigger of the Audius tables stays as it was; without the triggers a
    link enrolls nothing; a new install gives the same definitions."""
    conn = env.conn
    others = other_triggers(conn)
    assert {t for t, *_ in others} >= {"associated_wallets", "eth_wallet_balances"}, others
    assert install(conn) == {t: "already installed" for t in TABLES}
    defs = enroll_triggers(conn)
    assert set(defs) == set(TABLES), defs
    events = {"users": {"wallet", "is_current"}, "associated_wallets": {"wallet", "chain", "is_delete"}}
    for table, d in defs.items():
        m = re.match(rf"CREATE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE OF ([\w, ]+) ON public\.{table} "
                     r"FOR EACH ROW WHEN \(.+\) EXECUTE FUNCTION audius_indexer\.enroll_wallet\(\)$", d)
        assert m, d
        assert set(m.group(1).split(", ")) == events[table], d
    assert conn.execute("SELECT array_agg(DISTINCT tgenabled::text) FROM pg_trigger WHERE tgname = %s",
                        (TRIGGER,)).fetchone()[0] == ["O"]

    assert uninstall(conn) == {t: "dropped" for t in TABLES}
    assert enroll_triggers(conn) == {}
    assert other_triggers(conn) == others
    assert uninstall(conn) == {t: "absent, nothing to do" for t in TABLES}
    w = wallet_address(0, "enroll-uninstalled")
    add_assoc(conn, 401, w)
    add_user(conn, 401, w)
    assert row(conn, w) is None and pending(conn) == {}

    assert install(conn) == {t: "created" for t in TABLES}
    assert enroll_triggers(conn) == defs
    assert other_triggers(conn) == others
    assert install(conn) == {t: "already installed" for t in TABLES}


def test_install_with_a_missing_table_fails_and_creates_nothing(env):
    """Atomic: with associated_wallets absent (renamed away) install_enrollment() fails with
    42P01 naming it, and leaves no trigger behind (not even on users); a schema without the tables
    fails the same way."""
    conn = env.conn
    assert uninstall(conn) == {t: "dropped" for t in TABLES}
    conn.execute("ALTER TABLE public.associated_wallets RENAME TO associated_wallets_away")
    try:
        with pytest.raises(psycopg.errors.UndefinedTable) as e:
            install(conn)
        assert "associated_wallets" in e.value.diag.message_primary, e.value.diag.message_primary
        assert enroll_triggers(conn) == {}
    finally:
        conn.execute("ALTER TABLE public.associated_wallets_away RENAME TO associated_wallets")
    conn.execute("CREATE SCHEMA enroll_empty")
    try:
        for schema in ("enroll_empty", "enroll_no_such_schema"):
            with pytest.raises(psycopg.errors.UndefinedTable):
                install(conn, schema)
            assert enroll_triggers(conn) == {}
    finally:
        conn.execute("DROP SCHEMA enroll_empty")
    assert install(conn) == {t: "created" for t in TABLES}


def test_only_the_owner_of_the_tables_may_install_or_uninstall(env):
    """SECURITY INVOKER: a role that may call the two functions (EXECUTE granted, USAGE on the
    schema) but does not own users / associated_wallets gets 42501 from both, and nothing changes."""
    su, role = env.conn, "enroll_nobody"
    su.execute(f"CREATE ROLE {role} LOGIN")
    try:
        su.execute(f"GRANT USAGE ON SCHEMA audius_indexer TO {role}")
        su.execute(f"GRANT EXECUTE ON FUNCTION audius_indexer.install_enrollment(text), "
                   f"audius_indexer.uninstall_enrollment(text) TO {role}")
        uninstall(su)
        with env.cluster.connect(DB, user=role) as nobody:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                install(nobody)
            assert enroll_triggers(su) == {}
            install(su)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                uninstall(nobody)
            assert set(enroll_triggers(su)) == set(TABLES)
    finally:
        su.execute(f"DROP OWNED BY {role}")
        su.execute(f"DROP ROLE {role}")


def test_enable_enroll_requires_both_triggers(env):
    """enable('enroll') raises 55000 while the triggers are not installed, and again while only one
    of the two is (the one on associated_wallets dropped by hand); the path stays off. A second
    install_enrollment() puts back the missing one ('created', the other 'already installed'), and
    then enable('enroll') turns the path on."""
    conn = env.conn
    conn.execute("SELECT audius_indexer.disable('enroll')")
    uninstall(conn)
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        conn.execute("SELECT audius_indexer.enable('enroll')")
    assert path_state(conn) == "off"
    install(conn)
    conn.execute(f"DROP TRIGGER {TRIGGER} ON public.associated_wallets")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        conn.execute("SELECT audius_indexer.enable('enroll')")
    assert path_state(conn) == "off"
    assert install(conn) == {"users": "already installed", "associated_wallets": "created"}
    conn.execute("SELECT audius_indexer.enable('enroll')")
    assert path_state(conn) == "on"


def test_a_wallet_that_has_a_row_is_left_alone(env):
    """A wallet that already has an eth_wallet_balances row (written earlier by whoever) keeps it
    untouched — balance, blocknumber and updated_at — when it is linked through either table, and is
    not queued. A wallet linked to a second user after the first link enrolled it is not queued
    twice."""
    conn = env.conn
    w, shared = wallet_address(0, "enroll-known"), wallet_address(1, "enroll-known")
    conn.execute("INSERT INTO public.eth_wallet_balances (wallet, balance, blocknumber, updated_at) "
                 "VALUES (%s, 12345, 77, '2024-05-06 07:08:09')", (w,))
    before = row(conn, w)
    add_assoc(conn, 501, w)
    add_user(conn, 502, to_checksum(w))
    add_assoc(conn, 503, w, is_delete=True)
    conn.execute("UPDATE public.associated_wallets SET is_delete = false WHERE user_id = 503")
    assert row(conn, w) == before == (12345, 77, datetime(2024, 5, 6, 7, 8, 9))
    assert pending(conn) == {}

    add_assoc(conn, 504, shared)
    first = conn.execute("SELECT first_queued, attempts FROM audius_indexer.follow_pending WHERE wallet = %s",
                         (shared,)).fetchone()
    add_user(conn, 505, shared)
    add_assoc(conn, 506, shared)
    assert pending(conn) == {shared: None}
    assert conn.execute("SELECT first_queued, attempts FROM audius_indexer.follow_pending WHERE wallet = %s",
                        (shared,)).fetchone() == first
    assert row(conn, shared) == (0, None, EPOCH)
    env.assert_no_warnings()


def test_a_re_pointed_associated_wallet_is_enrolled(env):
    """An eth associated_wallets row whose wallet changes (UPDATE … SET wallet) enrolls the new
    wallet; the step writes its exact total."""
    conn = env.conn
    (old, new), want = staked_wallets(env.chain.contracts, "repoint", 2)
    i = add_assoc(conn, 601, old)
    conn.execute("UPDATE public.associated_wallets SET wallet = %s WHERE id = %s", (to_checksum(new), i))
    assert pending(conn) == {old: None, new: None}
    assert row(conn, new) == (0, None, EPOCH)
    step(conn)
    assert_exact(conn, want)
    assert user_balance(conn, 601) == want[new]
    env.assert_no_warnings()


def test_what_is_not_a_linked_eth_address_is_skipped(env):
    """Wallets that are not addresses ('0x1234', text, 0x + 40 non-hex digits, 41 hex digits) linked
    through both tables: no row, nothing queued, no error and no WARNING. Nor are these enrolled: an
    address on a sol associated wallet, a deleted associated wallet, a users row that is not current,
    a users row without a wallet."""
    conn = env.conn
    for i, bad in enumerate(("0x1234", "not a wallet", "0x" + "g" * 40, "0x" + "a" * 41)):
        add_user(conn, 700 + i, bad)
        add_assoc(conn, 700 + i, bad)
    sol, deleted, old = (wallet_address(i, "enroll-excluded") for i in range(3))
    add_assoc(conn, 710, sol, chain="sol")
    add_assoc(conn, 711, deleted, is_delete=True)
    add_user(conn, 712, old, is_current=False)
    add_user(conn, 713, None)
    conn.execute("UPDATE public.users SET is_current = false WHERE user_id = 713")
    assert conn.execute("SELECT count(*) FROM public.eth_wallet_balances").fetchone()[0] == 0
    assert pending(conn) == {}
    env.assert_no_warnings()


def test_an_error_in_the_trigger_is_a_warning_and_the_link_is_kept(env):
    """An error inside the trigger (here: eth_wallet_balances refuses the new row through a CHECK
    constraint added for the test) never fails the Audius write: the associated_wallets row is kept,
    the transaction goes on (a later link in it enrolls its wallet) and commits, the error is a
    'WARNING:  An error occurred in audius_indexer_enroll: …', and the refused wallet has no row and
    no pending entry."""
    conn = env.conn
    env.expect_enroll_warning = True
    refused, fine = wallet_address(0, "enroll-error"), wallet_address(1, "enroll-error")
    conn.execute("ALTER TABLE public.eth_wallet_balances ADD CONSTRAINT enroll_test_refuse "
                 f"CHECK (wallet <> '{refused}') NOT VALID")
    try:
        with conn.transaction():
            add_assoc(conn, 801, refused)
            add_user(conn, 801, fine)
    finally:
        conn.execute("ALTER TABLE public.eth_wallet_balances DROP CONSTRAINT enroll_test_refuse")
    assert conn.execute("SELECT count(*) FROM public.associated_wallets WHERE wallet = %s", (refused,)
                        ).fetchone()[0] == 1, "the Audius write was lost"
    assert row(conn, refused) is None
    assert row(conn, fine) == (0, None, EPOCH)
    assert pending(conn) == {fine: None}, "the refused wallet was queued without its row"
    sent = [m for sev, m in env.notices if sev == "WARNING"]
    assert len(sent) == 1 and sent[0].startswith(ENROLL_WARNING) and "enroll_test_refuse" in sent[0], sent
    logged = env.log_warnings()
    assert len(logged) == 1 and re.search(r"WARNING:\s+" + re.escape(ENROLL_WARNING), logged[0]), logged


def _writer_role(su, role: str) -> None:
    """A LOGIN role with INSERT and UPDATE on users and associated_wallets and nothing else."""
    su.execute(f"CREATE ROLE {role} LOGIN")
    su.execute(f"GRANT INSERT, UPDATE ON public.users, public.associated_wallets TO {role}")
    rights = su.execute(
        "SELECT has_schema_privilege(%(r)s, 'audius_indexer', 'USAGE'), "
        "has_table_privilege(%(r)s, 'public.eth_wallet_balances', 'SELECT, INSERT, UPDATE'), "
        "has_table_privilege(%(r)s, 'audius_indexer.follow_pending', 'SELECT, INSERT, UPDATE'), "
        "has_table_privilege(%(r)s, 'public.associated_wallets', 'SELECT')", {"r": role}).fetchone()
    assert rights == (False, False, False, False), rights


def test_a_writer_with_only_insert_and_update_rights_enrolls(env):
    """Least privilege: a role with only INSERT and UPDATE on users and associated_wallets (no right
    on schema audius_indexer, eth_wallet_balances or follow_pending, not even SELECT on the tables it
    writes) inserts a users row and an eth associated wallet and undeletes another (an UPDATE without
    WHERE): each wallet gets its row and its pending entry, with no error and no WARNING, and the next
    step writes the exact totals (eth_user_balances too). Audius's own on_associated_wallets trigger is
    disabled for the test: it runs as the writer and reads eth_user_balances, which this writer may
    not; that is Audius's trigger, not ours."""
    su, role = env.conn, "enroll_writer"
    (wu, wa, wd), want = staked_wallets(env.chain.contracts, "leastpriv", 3)
    _writer_role(su, role)
    su.execute("ALTER TABLE public.associated_wallets DISABLE TRIGGER on_associated_wallets")
    try:
        with env.cluster.connect(DB, user=role) as w:
            w.add_notice_handler(env.on_notice)
            add_user(w, 901, to_checksum(wu))
            add_assoc(w, 901, to_checksum(wa))
            add_assoc(w, 901, wd, is_delete=True)
            w.execute("UPDATE public.associated_wallets SET is_delete = false")
        for x in (wu, wa, wd):
            assert row(su, x) == (0, None, EPOCH), (x, row(su, x))
        assert pending(su) == {wu: None, wa: None, wd: None}
        env.assert_no_warnings()
        r = step(su)
        assert r["updated"] == 3, r
        assert_exact(su, want)
        assert user_balance(su, 901) == sum(want.values())
    finally:
        su.execute("ALTER TABLE public.associated_wallets ENABLE TRIGGER on_associated_wallets")
        su.execute(f"DROP OWNED BY {role}")
        su.execute(f"DROP ROLE {role}")


def test_a_writer_s_temporary_objects_never_run_with_more_rights(env):
    """The trigger acts with rights the writer does not have (the table owner's, the extension
    owner's; both the bootstrap superuser here), in the writer's session. A writer with only INSERT
    and UPDATE on users and associated_wallets first creates in pg_temp (searched first by default)
    domains over oid / int4 / int8 / text / bool / numeric / timestamptz and views named like every
    relation the extension uses (the Audius tables, its own, paths, the catalogs), each running a
    payload that records its runs and, as a superuser, makes the writer one (the writer's own
    unqualified names reach them: armed); then links two wallets. The wallets are enrolled (the
    trigger ran), and the payload ran only as the writer, never as a superuser: the writer is still
    not one. on_associated_wallets is disabled as in the least-privilege test."""
    su, role, evidence = env.conn, "enroll_evil", "enroll_ev"
    wu, wa = (wallet_address(i, "enroll-evil") for i in range(2))
    _writer_role(su, role)
    su.execute(f"CREATE SCHEMA {evidence} AUTHORIZATION {role}")
    su.execute("ALTER TABLE public.associated_wallets DISABLE TRIGGER on_associated_wallets")
    cols = column_defs(su, SHADOWED + ("paths", "path_status"), keep_types=True)
    assert {"users", "associated_wallets", "eth_wallet_balances", "follow_pending", "paths"} <= set(cols), cols
    mark = len(env.cluster.log_text())
    try:
        with env.cluster.connect(DB, user=role) as w:
            try:
                w.execute(evidence_sql(evidence))
                w.execute(payload_sql("pg_temp", evidence, role, "enroll"))
                w.execute(domains_sql("pg_temp", "pg_temp"))
                w.execute(views_sql("pg_temp", "pg_temp", cols))
                # armed: the writer's own unqualified names reach the traps (and run as the writer)
                w.execute("SELECT count(*) FROM eth_wallet_balances")
                w.execute("SELECT 'armed'::text")
                add_user(w, 951, to_checksum(wu))
                add_assoc(w, 951, wa)
            finally:
                w.execute("DISCARD TEMP")  # gone before DROP ROLE (not left to the backend's exit)
        time.sleep(0.2)  # the payload's LOG lines are written by now
        super_role = su.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)).fetchone()[0]
        runs = su.execute(f"SELECT who, super, count(*) FROM {evidence}.hits GROUP BY 1, 2 ORDER BY 1, 2").fetchall()
        super_lines = [ln for ln in env.cluster.log_text()[mark:].splitlines()
                       if "escal-payload" in ln and "SUPERUSER" in ln]
        assert not super_role and not any(s for _, s, _ in runs) and not super_lines, \
            f"ESCALATED: writer superuser {super_role}; payload runs {runs}; {super_lines[:3]}"
        assert {who for who, _, _ in runs} == {role}, f"the traps did not fire (or fired as another role): {runs}"
        assert row(su, wu) == (0, None, EPOCH) and row(su, wa) == (0, None, EPOCH), "the trigger did not enroll"
        assert pending(su) == {wu: None, wa: None}
    finally:
        su.execute(f"ALTER ROLE {role} NOSUPERUSER")
        su.execute("ALTER TABLE public.associated_wallets ENABLE TRIGGER on_associated_wallets")
        su.execute(f"DROP SCHEMA {evidence} CASCADE")
        su.execute(f"DROP OWNED BY {role}")
        su.execute(f"DROP ROLE {role}")

