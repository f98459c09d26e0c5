"""Privileges and egress (suite table "Privileges and egress" in docs/reliability.md).

A non-superuser cannot read or change the RPC URL settings, cannot call the functions that reach
the network or write balances without `audius_indexer_operator` (and can with it), and cannot make
the extension fetch a URL of its choosing. URLs a superuser configures with another scheme than
http/https are refused (22023) without any connection. No error message ever shows the URL's path
or query (`secret-key-123`, `zzz`).

Roles: priv_user (LOGIN, nothing granted), priv_usage (LOGIN + USAGE on the schema only, so that the
function ACL alone must refuse), priv_op (LOGIN, member of audius_indexer_operator).
"""
from __future__ import annotations

from dataclasses import dataclass

import psycopg
import pytest

from conftest import SECRET_PATH, SECRETS
from harness.chain import wallet_address
from harness.pg import free_port
from harness.reliability import Listener, assert_no_secret, error_text, expect_error, short
from harness.suites import connections, lit, report_fixture

pytestmark = pytest.mark.timeout(60)

ROLES = ("priv_user", "priv_usage", "priv_op")
W = [wallet_address(i, "priv") for i in range(3)]
F = "audius_indexer.multicall_total_audio_balances"


report = report_fixture("privileges_and_egress", "Privileges and egress")


@pytest.fixture(scope="module")
def roles(cluster):
    with cluster.connect("audius") as c:
        for r in ROLES:
            c.execute(f"DROP ROLE IF EXISTS {r}")
            c.execute(f"CREATE ROLE {r} LOGIN")
        c.execute("GRANT USAGE ON SCHEMA audius_indexer TO priv_usage")
        c.execute("GRANT audius_indexer_operator TO priv_op")
        c.execute("CREATE SCHEMA priv_scratch AUTHORIZATION priv_user")
        c.execute("GRANT USAGE, CREATE ON SCHEMA priv_scratch TO priv_op")
        assert c.execute("SELECT bool_or(rolsuper) FROM pg_roles WHERE rolname = ANY(%s)",
                         (list(ROLES),)).fetchone() == (False,)
    yield
    with cluster.connect("audius") as c:
        c.execute("DELETE FROM eth_wallet_balances WHERE wallet = ANY(%s)", (W,))
        for r in ROLES:
            c.execute(f"DROP OWNED BY {r}")
            c.execute(f"DROP ROLE {r}")


@pytest.fixture
def as_role(cluster, roles, db):
    """Connections as a given role to `audius` (closed afterwards); `db` gives the cleanup."""
    with connections(cluster, "audius") as connect:
        yield lambda role, **kw: connect(user=role, **kw)


# ------------------------------------------------------------------------------------------------
# 1. reading and changing the URL settings as a non-superuser
# ------------------------------------------------------------------------------------------------
EVIL = "http://127.0.0.1:9/evil"


@dataclass
class Denied:
    id: str
    sql: str
    sqlstate: str
    role: str = "priv_user"


DENIED = [
    Denied("show_rpc_url", "SHOW audius_indexer.rpc_url", "42501"),
    Denied("show_rpc_urls", "SHOW audius_indexer.rpc_urls", "42501"),
    Denied("show_rpc_url_operator", "SHOW audius_indexer.rpc_url", "42501", "priv_op"),
    Denied("current_setting", "SELECT current_setting('audius_indexer.rpc_url')", "42501"),
    Denied("current_setting_missing_ok", "SELECT current_setting('audius_indexer.rpc_url', true)", "42501"),
    Denied("current_setting_urls", "SELECT current_setting('audius_indexer.rpc_urls')", "42501", "priv_op"),
    Denied("pg_file_settings", "SELECT setting FROM pg_file_settings WHERE name LIKE 'audius_indexer.%'", "42501"),
    Denied("pg_show_all_file_settings", "SELECT * FROM pg_show_all_file_settings()", "42501"),
    Denied("read_auto_conf", "SELECT pg_read_file('postgresql.auto.conf')", "42501"),
    Denied("set_rpc_url", f"SET audius_indexer.rpc_url = {lit(EVIL)}", "55P02"),
    Denied("set_local_rpc_urls", f"SET LOCAL audius_indexer.rpc_urls = {lit(EVIL)}", "55P02"),
    Denied("set_rpc_url_operator", f"SET audius_indexer.rpc_url = {lit(EVIL)}", "55P02", "priv_op"),
    Denied("set_config_rpc_url", f"SELECT set_config('audius_indexer.rpc_url', {lit(EVIL)}, false)", "55P02"),
    Denied("set_config_rpc_urls_local", f"SELECT set_config('audius_indexer.rpc_urls', {lit(EVIL)}, true)",
           "55P02", "priv_op"),
    Denied("alter_system_rpc_url", f"ALTER SYSTEM SET audius_indexer.rpc_url = {lit(EVIL)}", "42501"),
    Denied("alter_system_reset", "ALTER SYSTEM RESET audius_indexer.rpc_url", "42501", "priv_op"),
    Denied("alter_role_self_rpc_url", f"ALTER ROLE priv_user SET audius_indexer.rpc_url = {lit(EVIL)}", "55P02"),
    Denied("alter_database_rpc_url", f"ALTER DATABASE audius SET audius_indexer.rpc_url = {lit(EVIL)}", "42501"),
    Denied("set_token_address", "SET audius_indexer.token_address = '0x" + "11" * 20 + "'", "42501"),
    Denied("set_token_address_operator", "SET audius_indexer.token_address = '0x" + "11" * 20 + "'", "42501", "priv_op"),
    Denied("set_multicall_address", "SET audius_indexer.multicall_address = '0x" + "11" * 20 + "'", "42501", "priv_op"),
    Denied("set_config_staking_address", "SELECT set_config('audius_indexer.staking_address', '0x" + "11" * 20 + "', true)",
           "42501", "priv_op"),
    Denied("set_unknown_in_prefix", "SET audius_indexer.rpc_url2 = 'x'", "42602"),
    Denied("create_function_set_rpc_url",
           f"CREATE FUNCTION priv_scratch.f() RETURNS int LANGUAGE sql SET audius_indexer.rpc_url = {lit(EVIL)} AS 'SELECT 1'",
           "55P02"),
    Denied("create_function_set_token",
           "CREATE FUNCTION priv_scratch.g() RETURNS int LANGUAGE sql SET audius_indexer.token_address = '0x"
           + "11" * 20 + "' AS 'SELECT 1'", "42501"),
]


@pytest.mark.parametrize("d", DENIED, ids=[d.id for d in DENIED])
def test_settings_denied(d: Denied, as_role, report):
    """The URL settings are `sighup`: SET, set_config, a function's SET clause and ALTER ROLE … SET
    fail with 55P02 for every role (PostgreSQL sets a sighup parameter only from the configuration
    files, whoever asks); the address settings are superuser-only (42501)."""
    with report.case(d.id, f"as {d.role}: {d.sql[:90]}", f"ERROR {d.sqlstate}") as rec:
        c = as_role(d.role)
        e, text, _ = expect_error(c, d.sql, sqlstate=d.sqlstate)
        rec.observed = short(e, 90)


def test_pg_settings_and_show_all_hide_urls(as_role, report):
    with report.case("pg_settings / SHOW ALL", "as priv_op: SELECT … FROM pg_settings; SHOW ALL",
                     "no rpc_url / rpc_urls row; no secret anywhere") as rec:
        c = as_role("priv_op")
        rows = c.execute("SELECT name, setting, reset_val, boot_val FROM pg_settings "
                         "WHERE name LIKE 'audius_indexer.%'").fetchall()
        names = {r[0] for r in rows}
        assert "audius_indexer.rpc_url" not in names and "audius_indexer.rpc_urls" not in names, names
        assert "audius_indexer.token_address" in names, "other settings stay visible"
        show_all = c.execute("SHOW ALL").fetchall()
        assert not [r for r in show_all if r[0].startswith("audius_indexer.rpc_url")]
        for s in SECRETS:
            assert s not in repr(rows) + repr(show_all)
        rec.observed = f"{len(names)} audius_indexer.* rows visible, none of them rpc_url(s)"


def test_connect_options_cannot_set_url(cluster, roles, db, report):
    with report.case("connect with -c rpc_url", "as priv_user: options='-c audius_indexer.rpc_url=http://…/evil'",
                     "connection refused (FATAL)") as rec:
        with pytest.raises(psycopg.OperationalError) as ei:
            cluster.connect("audius", user="priv_user", options=f"-c audius_indexer.rpc_url={EVIL}").close()
        text = str(ei.value)
        # a startup packet's -c is a session SET: the sighup parameter cannot be changed now
        assert 'FATAL:  parameter "audius_indexer.rpc_url" cannot be changed now' in text, text
        rec.observed = "FATAL: " + text[text.find("FATAL:") + 6:].strip()[:90] if "FATAL:" in text else text[:100]


# ------------------------------------------------------------------------------------------------
# 2. EXECUTE: not without the role, yes with it
# ------------------------------------------------------------------------------------------------
CALLS = {
    "multicall_total_audio_balances": f"SELECT * FROM {F}(ARRAY[{lit(W[0])}])",
    "refresh_wallets": f"SELECT * FROM audius_indexer.refresh_wallets(ARRAY[{lit(W[0])}])",
    "refresh_stale": "SELECT * FROM audius_indexer.refresh_stale(1)",
    "upsert_wallet_balances": f"SELECT * FROM audius_indexer.upsert_wallet_balances(ARRAY[{lit(W[2])}], ARRAY[5], ARRAY[1])",
    "reset_sweep_status": "SELECT audius_indexer.reset_sweep_status()",
    "_record_failures": f"SELECT audius_indexer._record_failures(ARRAY[{lit(W[0])}], ARRAY['x'], 1, 1)",
    "install_triggers": "SELECT audius_indexer.install_triggers()",
}


@pytest.mark.parametrize("role", ["priv_user", "priv_usage"])
@pytest.mark.parametrize("fn", sorted(CALLS))
def test_execute_denied_without_operator(fn, role, as_role, proxy, report):
    with report.case(f"{fn} as {role}", f"{role} ({'schema USAGE only' if role == 'priv_usage' else 'no grants'}) "
                     f"calls {fn}", "ERROR 42501, no RPC") as rec:
        c = as_role(role)
        proxy.reset()
        e, text, _ = expect_error(c, CALLS[fn], sqlstate="42501")
        if role == "priv_usage":
            assert f"function {fn}" in text, f"the function's own ACL must refuse: {text}"
        assert proxy.http_requests == 0
        rec.observed = short(e, 70)


def test_public_execute_inventory(db, report):
    """Every function that reaches the network or writes is closed to PUBLIC; list what is open."""
    with report.case("EXECUTE inventory", "has_function_privilege('public', f, 'EXECUTE') for every function "
                     "in schema audius_indexer", "only read-only helpers open to PUBLIC (schema USAGE still "
                     "needed)") as rec:
        rows = db.execute("SELECT p.proname, has_function_privilege('public', p.oid, 'EXECUTE'), p.prosecdef, "
                          "p.proconfig FROM pg_proc p WHERE p.pronamespace = 'audius_indexer'::regnamespace "
                          "ORDER BY 1").fetchall()
        open_ = sorted(r[0] for r in rows if r[1])
        must_close = {"multicall_total_audio_balances", "refresh_wallets", "refresh_stale", "upsert_wallet_balances",
                      "reset_sweep_status", "install_triggers", "uninstall_triggers"}
        assert not must_close & set(open_), must_close & set(open_)
        assert not [n for n in open_ if n.startswith("_")], open_
        # trigger functions (a direct call is refused: they only run as triggers) and the read-only
        # helpers docs/sql-reference.md documents as EXECUTE for PUBLIC (schema USAGE still needed)
        allowed = {"rpc_endpoint_stats", "handle_on_user_challenge", "handle_challenge_disbursement",
                   "handle_sol_reward_disbursement", "enroll_wallet", "trigger_specs", "trigger_statements",
                   "trigger_plans_cached", "enrollment_specs"}
        assert set(open_) <= allowed, set(open_) - allowed
        for name, _, secdef, cfg in rows:
            if secdef:
                assert cfg and any(x.startswith("search_path=") for x in cfg), f"{name}: SECURITY DEFINER without search_path"
        assert not db.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'audius_indexer' "
                              "AND has_schema_privilege('public', oid, 'USAGE')").fetchone()[0]
        rec.observed = f"open to PUBLIC: {', '.join(open_)}; schema USAGE not granted to PUBLIC"


@pytest.mark.parametrize("fn", ["multicall_total_audio_balances", "refresh_wallets", "refresh_stale",
                                "upsert_wallet_balances"])
def test_operator_can_call(fn, as_role, db, contracts, proxy, report):
    with report.case(f"{fn} as operator", f"priv_op (member of audius_indexer_operator) calls {fn}",
                     "works") as rec:
        contracts.set_values(W[:2], [11, 12], [0, 0], [0, 0])
        db.execute("DELETE FROM eth_wallet_balances WHERE wallet = ANY(%s)", (W,))
        db.execute("INSERT INTO eth_wallet_balances (wallet, balance, updated_at) VALUES (%s, 0, '1700-01-01')",
                   (W[1],))
        c = as_role("priv_op")
        try:
            rows = c.execute(CALLS[fn]).fetchall()
        except psycopg.Error as e:
            rec.observed = short(e, 100)
            raise AssertionError(f"operator cannot call {fn}: {e.sqlstate} {error_text(e)}") from None
        got = dict(db.execute("SELECT wallet, balance::int FROM eth_wallet_balances WHERE wallet = ANY(%s)",
                              (W,)).fetchall())
        if fn == "multicall_total_audio_balances":
            assert [(r[0], int(r[1])) for r in rows] == [(W[0], 11)]
        elif fn == "refresh_wallets":
            assert rows == [(1, 1, 0, 0)] and got.get(W[0]) == 11
        elif fn == "refresh_stale":
            assert rows == [(1, 1, 0, 0)] and got.get(W[1]) == 12, (rows, got)
        else:
            assert rows == [(W[2],)] and got.get(W[2]) == 5
        rec.observed = f"{rows[0]!r}"[:60]


def test_operator_reads_status(as_role, report):
    with report.case("status as operator", "priv_op: sweep_status, wallet_failures, rpc_endpoint_stats()",
                     "readable; host only, no secret") as rec:
        c = as_role("priv_op")
        a = c.execute("SELECT * FROM audius_indexer.sweep_status").fetchall()
        b = c.execute("SELECT count(*) FROM audius_indexer.wallet_failures").fetchall()
        s = c.execute("SELECT * FROM audius_indexer.rpc_endpoint_stats()").fetchall()
        assert_no_secret(repr(a) + repr(b) + repr(s), "status views")
        rec.observed = f"ok; endpoints shown as {[r[1] for r in s]}"


# ------------------------------------------------------------------------------------------------
# 3. no URL of the caller's choosing
# ------------------------------------------------------------------------------------------------
def test_no_function_takes_a_url(db, report):
    with report.case("no URL argument", "argument names/types of every function in audius_indexer",
                     "none is a URL / host / endpoint") as rec:
        rows = db.execute(
            "SELECT p.proname, coalesce(array_agg(a.n) FILTER (WHERE a.n IS NOT NULL AND coalesce(a.m, 'i') "
            "IN ('i', 'b', 'v')), '{}') FROM pg_proc p LEFT JOIN LATERAL unnest(p.proargnames, p.proargmodes::text[]) "
            "AS a(n, m) ON true WHERE p.pronamespace = 'audius_indexer'::regnamespace GROUP BY p.proname").fetchall()
        bad = [(n, a) for n, a in rows
               if any(k in x.lower() for x in a for k in ("url", "host", "endpoint", "uri", "address"))]
        assert not bad, bad
        text_args = sorted({x for n, a in rows for x in a if x})
        rec.observed = f"{len(rows)} functions; argument names: {', '.join(text_args)}"


def test_security_definer_path_ignores_session_attempts(as_role, proxy, report):
    """The operator tries every session-level way to point the SECURITY DEFINER refresh at its own
    server; all fail, and the refresh still goes to the configured endpoint (path included)."""
    with Listener() as evil, report.case(
            "SECURITY DEFINER path", "priv_op: SET / set_config rpc_url(s) → its listener, then refresh_wallets",
            "every SET fails; the request goes to the configured URL; listener gets 0 connections") as rec:
        c = as_role("priv_op")
        url = f"http://127.0.0.1:{evil.port}/evil"
        for sql, sqlstate in ((f"SET audius_indexer.rpc_url = {lit(url)}", "55P02"),
                              (f"SET audius_indexer.rpc_urls = {lit(url)}", "55P02"),
                              (f"SELECT set_config('audius_indexer.rpc_url', {lit(url)}, false)", "55P02"),
                              (f"SELECT set_config('audius_indexer.rpc_urls', {lit(url)}, true)", "55P02"),
                              ("SET audius_indexer.multicall_address = '0x" + "22" * 20 + "'", "42501")):
            expect_error(c, sql, sqlstate=sqlstate)
        proxy.reset()
        assert c.execute("SELECT * FROM audius_indexer.refresh_wallets(%s)", (W[:1],)).fetchone() == (1, 1, 0, 0)
        # one aggregate3 (plus, the first time this backend writes, one eth_blockNumber for the
        # max_block_ahead check), all to the configured URL
        assert proxy.count(method="eth_call") == 1
        assert {r.path for r in proxy.requests} == {SECRET_PATH}
        assert evil.connections == 0
        rec.observed = f"5/5 SETs refused; 1 request to the configured URL; listener connections {evil.connections}"


@dataclass
class Scheme:
    id: str
    url: str           # {L} = listener port, {P} = proxy url, {D} = dead port
    setting: str = "rpc_url"


SCHEMES = [
    Scheme("file", "file:///etc/passwd"),
    Scheme("ftp", "ftp://127.0.0.1:{L}/zzz"),
    Scheme("gopher", "gopher://127.0.0.1:{L}/_secret-key-123"),
    Scheme("no_scheme", "127.0.0.1:{L}/zzz"),
    Scheme("javascript", "javascript:alert(1)"),
    Scheme("list_with_ftp", "{P}, ftp://127.0.0.1:{L}/zzz", "rpc_urls"),
    Scheme("list_with_file", "file:///etc/passwd,{P}", "rpc_urls"),
]


@pytest.mark.parametrize("s", SCHEMES, ids=[s.id for s in SCHEMES])
def test_bad_scheme_refused_nothing_fetched(s: Scheme, cluster, db, proxy, report):
    """Refused when set (the setting's check hook), not only when used; the message names the
    setting and the reason, never the value; calls keep using the configured URL."""
    with Listener() as lst, report.case(f"scheme {s.id}", f"superuser: ALTER SYSTEM SET {s.setting} = '{s.url}'",
                                        "ERROR 22023 at SET time naming the setting, not the URL; nothing fetched") as rec:
        url = s.url.format(L=lst.port, P=proxy.url_with(SECRET_PATH))
        # a failed statement is logged with its text at the default log_min_error_statement
        db.execute("SET log_min_error_statement = panic")
        e, text, _ = expect_error(db, f"ALTER SYSTEM SET audius_indexer.{s.setting} = {lit(url)}", (), "22023",
                                  (f"audius_indexer.{s.setting}",))
        for frag in ("/etc/passwd", "alert", "_secret", "127.0.0.1"):
            assert frag not in text, text
        proxy.reset()
        rows = db.execute(f"SELECT * FROM {F}(%s)", (W[:1],)).fetchall()
        assert len(rows) == 1 and proxy.requests[0].path == SECRET_PATH
        assert lst.connections == 0
        rec.observed = short(e, 100)


def test_userinfo_and_path_never_in_messages(cluster, db, report):
    dead = free_port()
    with report.case("userinfo in URL", "rpc_url = 'http://alice:pw-zzz@127.0.0.1:<refused>/secret-key-123?apikey=zzz'",
                     "ERROR 08001 naming 127.0.0.1:<port> only") as rec:
        cluster.set_system(rpc_url=f"http://alice:pw-zzz@127.0.0.1:{dead}{SECRET_PATH}")
        with cluster.connect("audius") as c:
            c.execute("SET audius_indexer.rpc_max_retries = 0")
            e, text, _ = expect_error(c, f"SELECT * FROM {F}(%s)", (W[:1],), "08001", (f"127.0.0.1:{dead}",))
            assert "alice" not in text and "pw-" not in text
            stats = c.execute("SELECT host, last_error FROM audius_indexer.rpc_endpoint_stats()").fetchall()
            assert stats[0][0] == f"127.0.0.1:{dead}"
            assert "alice" not in repr(stats)
            assert_no_secret(repr(stats), "rpc_endpoint_stats")
        rec.observed = short(e, 100)


def test_uppercase_http_scheme_accepted(cluster, db, contracts, proxy, report):
    with report.case("scheme HTTP://", "rpc_url = 'HTTP://127.0.0.1:<proxy>/secret-key-123?apikey=zzz'",
                     "accepted (schemes are case-insensitive)") as rec:
        contracts.set_values(W[:1], [21], [0], [0])
        cluster.set_system(rpc_url="HTTP://" + proxy.url_with(SECRET_PATH)[len("http://"):])
        with cluster.connect("audius") as c:
            rows = c.execute(f"SELECT wallet, balance FROM {F}(%s)", (W[:1],)).fetchall()
        assert [(r[0], int(r[1])) for r in rows] == [(W[0], 21)]
        rec.observed = "accepted, 1 row"
