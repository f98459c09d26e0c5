"""Correct inside a real Audius database (suite table "Inside a real Audius database" in
docs/reliability.md).

A cluster of its own (audius_indexer + pg_cron preloaded, the worker pointed at `audius6`) whose
database is built like an Audius discovery database: the trigger fixture
(tests/sql/audius_fixture_schema.sql) plus tests/sql/audius_eth_fixture.sql, i.e. `users` with
mixed-case EIP-55 wallets, `associated_wallets` with its lowercasing BEFORE trigger,
`eth_wallet_balances` with `on_eth_wallet_balance_changes` → `update_eth_user_balance()` →
`eth_user_balances`, all naming their tables without a schema and turning any error into a WARNING,
exactly like the originals. The extension is created after them (it uses their tables as they are).

Every write path of the extension runs against it — refresh_wallets, refresh_stale as superuser
and as an operator, CALL sweep() as an operator, CALL sweep() from pg_cron, the background worker —
and after each one `eth_user_balances` must equal, for every user, the sum of the on-chain values
of the user's wallets (primary in mixed case, associated wallets, a wallet shared by two users,
deleted and non-current ones excluded), with **no WARNING** in the server log.

Then the other half of the search_path design: an operator who puts a shadowing `users` table and
`update_eth_user_balance()` function in a schema it controls (and on its own search_path, and a
temporary `users`) does not get them used; doctor() flags a non-superuser that may CREATE in public.
"""
from __future__ import annotations

import uuid

import pytest

from conftest import wait_until
from harness.chain import to_checksum, wallet_address
from harness.pg import Cluster, cron_cluster, enable_paths, load_audius_tables
from harness.reliability import set_random_values
from harness.suites import report_fixture

pytestmark = pytest.mark.timeout(240)

DB = "audius6"

# wallets (lowercase); W_OLD belongs to a non-current users row, W_DEL to a deleted association
W = {k: wallet_address(i, "audiusdb") for i, k in enumerate(
    ["u1", "u2", "u2a", "u3", "shared", "u4", "u5", "u5del", "u6a", "u1old"])}
# user -> wallets whose balances count (as Audius defines them)
COUNTED = {
    1: ["u1"],                 # primary (mixed case); its old non-current row's wallet excluded
    2: ["u2", "u2a"],          # primary + associated eth wallet (inserted mixed case)
    3: ["u3", "shared"],       # primary + a wallet shared with user 4
    4: ["u4", "shared"],
    5: ["u5"],                 # its associated wallet is deleted
    6: ["u6a"],                # no primary wallet, one associated wallet
}
ROLE = "audiusdb_op"


report = report_fixture("audius_database", "Inside a real Audius database", guard=False)


@pytest.fixture(scope="module")
def audiusdb(anvil, contracts, proxy):
    c = cron_cluster("audiusdb", {"audius_indexer.database": f"'{DB}'", "audius_indexer.sweep_enabled": "off",
                            "audius_indexer.sweep_interval": "'1s'", "audius_indexer.sweep_batch_size": "1000"})
    try:
        c.init().start()
        c.create_database(DB)
        with c.connect(DB) as conn:
            load_audius_tables(conn)
            conn.execute("CREATE EXTENSION audius_indexer")
            enable_paths(conn, "sweep")  # its worker still off: sweep_enabled
            seed_audius_rows(conn)
            conn.execute(f"DROP ROLE IF EXISTS {ROLE}")
            conn.execute(f"CREATE ROLE {ROLE} LOGIN IN ROLE audius_indexer_operator")
            conn.execute(f"CREATE SCHEMA audiusdb_evil AUTHORIZATION {ROLE}")
        with c.connect() as conn:
            conn.execute("CREATE EXTENSION pg_cron")
        c.restart()  # the worker finds its database at once
        c.set_system(rpc_url=proxy.url, token_address=contracts.token,
                     staking_address=contracts.staking, delegate_manager_address=contracts.delegate)
        yield c
        c.assert_log_clean()
    finally:
        c.destroy()


def seed_audius_rows(conn) -> None:
    """Users (mixed-case wallets), associated wallets (inserted mixed case: the BEFORE trigger
    lowercases them), and the eth_wallet_balances rows the 0204 backfill would create."""
    cs = {k: to_checksum(v) for k, v in W.items()}
    conn.execute(
        "INSERT INTO users (user_id, wallet, is_current, txhash) VALUES "
        "(1, %s, true, ''), (1, %s, false, 'old'), (2, %s, true, ''), (3, %s, true, ''), "
        "(4, %s, true, ''), (5, %s, true, ''), (6, NULL, true, '')",
        (cs["u1"], cs["u1old"], cs["u2"], cs["u3"], cs["u4"], cs["u5"]))
    conn.execute(
        "INSERT INTO associated_wallets (user_id, wallet, blockhash, blocknumber, is_current, is_delete, chain) "
        "VALUES (2, %s, '0x', 1, true, false, 'eth'), (2, 'So1anaWaLLet1111111111111111111111111111111', '0x', 1, true, false, 'sol'), "
        "(3, %s, '0x', 1, true, false, 'eth'), (4, %s, '0x', 1, true, false, 'eth'), "
        "(5, %s, '0x', 1, true, true, 'eth'), (6, %s, '0x', 1, true, false, 'eth')",
        (cs["u2a"], cs["shared"], cs["shared"].upper().replace("0X", "0x"), cs["u5del"], cs["u6a"]))
    assert conn.execute("SELECT count(*) FROM associated_wallets WHERE chain = 'eth' AND wallet <> lower(wallet)"
                        ).fetchone() == (0,), "the fixture's BEFORE trigger lowercases eth wallets"
    conn.execute("INSERT INTO eth_wallet_balances (wallet, balance, updated_at) "
                 "SELECT w, 0, '1970-01-01' FROM unnest(%s::text[]) w ON CONFLICT DO NOTHING", (list(W.values()),))


def new_round(conn, contracts, tag: str) -> dict[int, int]:
    """New on-chain values for every wallet, every row stale again; returns the expected
    eth_user_balances (user -> sum of its counted wallets' on-chain totals)."""
    ws = list(W.values())
    set_random_values(contracts, ws, tag)
    # the oracle: independent eth_calls, not the values we just wrote
    total = {w: oracle_total(contracts, w) for w in ws}
    conn.execute("UPDATE eth_wallet_balances SET updated_at = '1970-01-01'")
    return user_totals(total)


def oracle_total(contracts, wallet: str) -> int:
    """The wallet's total from three independent eth_calls (balanceOf, totalStakedFor, getTotalDelegatorStake)."""
    parts = contracts.independent_total(wallet)
    assert None not in parts
    return sum(parts)


def user_totals(total: dict[str, int]) -> dict[int, int]:
    """The expected eth_user_balances: user -> the sum of `total` over its counted wallets."""
    return {u: sum(total[W[k]] for k in keys) for u, keys in COUNTED.items()}


def user_balances(conn) -> dict[int, int]:
    return {u: int(b) for u, b in conn.execute("SELECT user_id, balance FROM eth_user_balances").fetchall()}


def warnings_since(cluster: Cluster, mark: int, conn) -> list[str]:
    """WARNING lines of the server log from `mark` up to now. "Now" is a marker line this session
    writes (RAISE LOG) after the writes under test committed: anything they logged (in any
    backend, the workers' included) is in the file before it. Polls for the marker, 10 s at most."""
    marker = f"audiusdb log marker {uuid.uuid4().hex}"
    conn.execute(f"DO $$ BEGIN RAISE LOG '{marker}'; END $$")

    def through_marker():
        t = cluster.log_text()[mark:]
        return t if marker in t else None
    text = wait_until(through_marker, timeout=10, interval=0.02, what="the marker line in the server log")
    return [ln for ln in text[:text.index(marker)].splitlines() if "WARNING:" in ln]


def all_fresh(conn) -> bool:
    return conn.execute("SELECT bool_and(updated_at > '1971-01-01') FROM eth_wallet_balances").fetchone()[0]


def run_path(path: str, audiusdb: Cluster, conn):
    if path == "refresh_wallets (superuser)":
        mixed = [to_checksum(w) for w in W.values()]
        return conn.execute("SELECT * FROM audius_indexer.refresh_wallets(%s)", (mixed,)).fetchone()
    if path == "refresh_stale (superuser)":
        return conn.execute("SELECT * FROM audius_indexer.refresh_stale(100)").fetchone()
    if path == "refresh_stale (operator)":
        with audiusdb.connect(DB, user=ROLE) as op:
            return op.execute("SELECT * FROM audius_indexer.refresh_stale(100)").fetchone()
    if path == "CALL sweep() (operator)":
        with audiusdb.connect(DB, user=ROLE) as op:
            op.execute("CALL audius_indexer.sweep(100)")
        return conn.execute("SELECT last_requested, last_updated, last_failed, last_skipped "
                            "FROM audius_indexer.sweep_status").fetchone()
    if path == "pg_cron: CALL sweep()":
        with audiusdb.connect() as pc:
            job = pc.execute("SELECT cron.schedule_in_database('audiusdb_sweep', '* * * * *', "
                             "'CALL audius_indexer.sweep(100)', %s)", (DB,)).fetchone()[0]
            try:
                wait_until(lambda: all_fresh(conn), timeout=80, interval=0.5, what="the pg_cron sweep")
                wait_until(lambda: pc.execute("SELECT status FROM cron.job_run_details WHERE jobid = %s "
                                              "AND status <> 'running'", (job,)).fetchone(),
                           timeout=10, what="the job's outcome")
                status, msg = pc.execute("SELECT status, return_message FROM cron.job_run_details "
                                         "WHERE jobid = %s ORDER BY runid LIMIT 1", (job,)).fetchone()
                assert status == "succeeded", (status, msg)
            finally:
                pc.execute("SELECT cron.unschedule(%s)", (job,))
        return conn.execute("SELECT last_requested, last_updated, last_failed, last_skipped "
                            "FROM audius_indexer.sweep_status").fetchone()
    if path == "background worker":
        audiusdb.set_system(sweep_enabled=True)
        try:
            wait_until(lambda: all_fresh(conn), timeout=20, interval=0.2, what="the worker's sweep")
        finally:
            audiusdb.set_system(sweep_enabled=False)
        return conn.execute("SELECT last_requested, last_updated, last_failed, last_skipped "
                            "FROM audius_indexer.sweep_status").fetchone()
    raise ValueError(path)


PATHS = ["refresh_wallets (superuser)", "refresh_stale (superuser)", "refresh_stale (operator)",
         "CALL sweep() (operator)", "pg_cron: CALL sweep()", "background worker"]


@pytest.mark.parametrize("path", PATHS)
def test_write_path_keeps_eth_user_balances_exact(path, audiusdb, contracts, report):
    with audiusdb.connect(DB) as conn, report.case(
            f"write path: {path}", "6 users: mixed-case primary, associated, shared, deleted, non-current",
            "eth_user_balances = Σ on-chain values per user; 0 WARNING lines") as rec:
        want = new_round(conn, contracts, path)
        mark = len(audiusdb.log_text())
        counts = run_path(path, audiusdb, conn)
        assert all_fresh(conn), "every row was refreshed"
        got = user_balances(conn)
        assert got == want, f"eth_user_balances {got} != on-chain sums {want}"
        warns = warnings_since(audiusdb, mark, conn)
        assert not warns, "WARNING lines:\n" + "\n".join(warns[:10])
        rec.observed = f"counts {tuple(counts)}; 6/6 users exact; 0 WARNING lines"


def test_contrast_pinned_search_path_reproduces_the_warning(audiusdb, report):
    """The fixture really is what production has: a writer whose search_path lacks public gets the
    Audius trigger's WARNING and a stale eth_user_balances (the bug the extension had)."""
    with audiusdb.connect(DB) as conn, report.case(
            "contrast: writer with search_path = pg_catalog, pg_temp",
            "UPDATE eth_wallet_balances SET balance = balance + 1 for user 5's wallet",
            "WARNING relation \"users\" does not exist; eth_user_balances stale") as rec:
        before = user_balances(conn)[5]
        notices = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("SET search_path = pg_catalog, pg_temp")
        conn.execute("UPDATE public.eth_wallet_balances SET balance = balance + 1 WHERE wallet = %s", (W["u5"],))
        conn.execute("RESET search_path")
        assert any('relation "users" does not exist' in n for n in notices), notices
        assert user_balances(conn)[5] == before, "the trigger could not update eth_user_balances"
        conn.execute("UPDATE eth_wallet_balances SET balance = balance - 1 WHERE wallet = %s", (W["u5"],))
        assert user_balances(conn)[5] == before
        rec.observed = f"WARNING: {notices[0][:80]}; user 5 stale as expected"


def test_operator_shadowing_objects_are_never_used(audiusdb, contracts, report):
    with audiusdb.connect(DB) as conn, audiusdb.connect(DB, user=ROLE) as op, report.case(
            "search_path safety: shadowing objects",
            "audiusdb_op: audiusdb_evil.users (empty) + audiusdb_evil.update_eth_user_balance(int) logging calls, "
            "search_path = audiusdb_evil, public, a TEMP users table; then refresh_wallets",
            "balances exact; the shadow function never called; 0 WARNING lines") as rec:
        op.execute("DROP TABLE IF EXISTS audiusdb_evil.users, audiusdb_evil.hits")
        op.execute("CREATE TABLE audiusdb_evil.users (user_id int, wallet varchar, is_current boolean, txhash varchar)")
        op.execute("CREATE TABLE audiusdb_evil.hits (user_id int, who text)")
        op.execute("GRANT INSERT ON audiusdb_evil.hits TO PUBLIC")
        op.execute("CREATE OR REPLACE FUNCTION audiusdb_evil.update_eth_user_balance(p_user_id integer) RETURNS void "
                   "LANGUAGE sql AS $$ INSERT INTO audiusdb_evil.hits VALUES (p_user_id, current_user) $$")
        op.execute("CREATE OR REPLACE FUNCTION audiusdb_evil.lower(text) RETURNS text LANGUAGE sql "
                   "AS $$ SELECT 'shadowed' $$")
        op.execute("SET search_path = audiusdb_evil, public")
        op.execute("CREATE TEMP TABLE users (user_id int, wallet varchar, is_current boolean, txhash varchar)")
        want = new_round(conn, contracts, "shadow")
        mark = len(audiusdb.log_text())
        counts = op.execute("SELECT * FROM audius_indexer.refresh_wallets(%s)", (list(W.values()),)).fetchone()
        assert user_balances(conn) == want
        assert conn.execute("SELECT count(*) FROM audiusdb_evil.hits").fetchone() == (0,), "the shadow function ran"
        assert not warnings_since(audiusdb, mark, conn)
        rec.observed = f"counts {tuple(counts)}; 6/6 users exact; audiusdb_evil.hits empty; 0 WARNING lines"


def test_doctor_flags_roles_that_may_create_in_public(audiusdb, report):
    with audiusdb.connect(DB) as conn, report.case(
            "doctor: CREATE on public", f"GRANT CREATE ON SCHEMA public TO {ROLE}; doctor(); REVOKE",
            "'search_path safety' not ok, names the role; ok again after REVOKE") as rec:
        def row():
            return conn.execute("SELECT ok, detail FROM audius_indexer.doctor() "
                                "WHERE check_name = 'search_path safety'").fetchone()
        assert row()[0] is True, row()
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {ROLE}")
        try:
            ok, detail = row()
            assert ok is False and ROLE in detail, (ok, detail)
        finally:
            conn.execute(f"REVOKE CREATE ON SCHEMA public FROM {ROLE}")
        assert row()[0] is True
        rec.observed = f"flagged: {detail[:90]}…; ok after REVOKE"


def test_bootstrap_used_the_audius_tables(audiusdb, report):
    with audiusdb.connect(DB) as conn, report.case(
            "existing tables kept", "CREATE EXTENSION in a database that has the Audius tables",
            "eth_wallet_balances not a member of the extension; its Audius trigger kept") as rec:
        member = conn.execute(
            "SELECT count(*) FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid "
            "WHERE e.extname = 'audius_indexer' AND d.objid = 'public.eth_wallet_balances'::regclass").fetchone()[0]
        trig = conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'on_eth_wallet_balance_changes'").fetchone()[0]
        assert (member, trig) == (0, 1)
        rec.observed = "not a member; trigger present"
