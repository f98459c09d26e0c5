"""Secrets out of reach of monitoring roles (suite table "Secrets out of reach of monitoring
roles" in docs/reliability.md).

The RPC URL carries an API key in its path and query (`/secret-key-123?apikey=zzz`). With
`audius_indexer.rpc_urls_file` the URL lives in a file only the server's OS user can read (0600,
owned by postgres) and never becomes a setting value. So even the widest non-superuser a DBA gives
an exporter (`pg_monitor`, which includes `pg_read_all_settings`, plus `audius_indexer_operator`)
cannot see it: not in SHOW / SHOW ALL / pg_settings / current_setting, not in pg_file_settings, not
through pg_read_file / COPY / lo_import, not in any error message (RPC failure, missing / unreadable
/ invalid file), not in doctor() or the endpoint statistics, not in the server log. Calls still go
to the URL from the file (the proxy records the secret path), and the file takes precedence over
rpc_urls and rpc_url.

Contrast (so this suite can fail): with the URL in the plain `rpc_url` setting, the same role reads
it with SHOW. PostgreSQL 15 lets pg_read_all_settings members read superuser-only settings: the
documented risk of rpc_url / rpc_urls.

The check hooks on rpc_url / rpc_urls / rpc_urls_file refuse bad values at ALTER SYSTEM time with
22023 and a message naming the setting and the reason, never the value.

Roles: secret_mon (LOGIN, member of pg_monitor and audius_indexer_operator). The superuser `postgres`
sets the configuration.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from conftest import SECRET_PATH, SECRETS
from harness.chain import wallet_address
from harness.pg import free_port
from harness.reliability import (PG_RELOAD_LINE, assert_no_secret, crash_or_secret_lines, error_text,
                                 expect_error, short)
from harness.suites import connections, lit, report_fixture

pytestmark = pytest.mark.timeout(180)

ROLE = "secret_mon"
W = [wallet_address(i, "secret") for i in range(2)]
F = "audius_indexer.multicall_total_audio_balances"
URL_SETTINGS = ("rpc_url", "rpc_urls", "rpc_urls_file")


report = report_fixture("secrets", "Secrets out of reach of monitoring roles")  # sets report.log_mark


def _write_server_file(path: Path, text: str, owner: str = "postgres", mode: int = 0o600) -> Path:
    path.write_text(text)
    shutil.chown(path, owner, owner)
    os.chmod(path, mode)
    return path


@pytest.fixture(scope="module")
def urls_file(cluster, proxy):
    """<cluster.root>/rpc_urls: a comment, a blank line and the secret URL; postgres-owned, 0600."""
    path = _write_server_file(Path(cluster.root) / "rpc_urls",
                              "# primary endpoint (API key in the path and query)\n\n"
                              + proxy.url_with(SECRET_PATH) + "\n")
    yield path
    cluster.set_system(rpc_urls_file=None, rpc_url=cluster.baseline["rpc_url"])
    for p in Path(cluster.root).glob("secret_*"):
        p.unlink(missing_ok=True)
    path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def mon(cluster):
    with cluster.connect("audius") as c:
        if c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone():
            c.execute(f"DROP OWNED BY {ROLE}")
            c.execute(f"DROP ROLE {ROLE}")
        c.execute(f"CREATE ROLE {ROLE} LOGIN")
        c.execute(f"GRANT pg_monitor, audius_indexer_operator TO {ROLE}")
        row = c.execute("SELECT rolsuper, pg_has_role(%s, 'pg_read_all_settings', 'USAGE') FROM pg_roles "
                        "WHERE rolname = %s", (ROLE, ROLE)).fetchone()
        assert row == (False, True), row
    yield ROLE
    with cluster.connect("audius") as c:
        c.execute(f"DROP OWNED BY {ROLE}")
        c.execute(f"DROP ROLE {ROLE}")


@pytest.fixture
def via_file(cluster, db, urls_file, mon):
    """The endpoint comes from the file only (rpc_url and rpc_urls unset). `db` restores the
    session baseline afterwards (rpc_url back, rpc_urls_file reset)."""
    cluster.set_system(rpc_urls_file=str(urls_file), rpc_url=None, rpc_urls=None)
    return urls_file


@pytest.fixture
def as_mon(cluster, mon):
    with connections(cluster, "audius", user=ROLE) as connect:
        yield connect


# ------------------------------------------------------------------------------------------------
# 1. the URL from the file is used
# ------------------------------------------------------------------------------------------------
def test_call_works_through_file(via_file, as_mon, contracts, proxy, report):
    with report.case("call through rpc_urls_file",
                     f"as {ROLE}: {F}(ARRAY[w]); rpc_urls_file = <root>/rpc_urls (postgres, 0600), "
                     "rpc_url / rpc_urls unset",
                     "1 row; the proxy received path /secret-key-123?apikey=zzz") as rec:
        contracts.set_values(W[:1], [31], [0], [0])
        c = as_mon()
        assert c.execute("SELECT current_setting('audius_indexer.rpc_url'), "
                         "current_setting('audius_indexer.rpc_urls')").fetchone() == ("", "")
        proxy.reset()
        rows = c.execute(f"SELECT wallet, balance FROM {F}(%s)", (W[:1],)).fetchall()
        assert [(r[0], int(r[1])) for r in rows] == [(W[0], 31)], rows
        paths = sorted({r.path for r in proxy.requests})
        assert proxy.http_requests >= 1 and paths == [SECRET_PATH], paths
        rec.observed = f"1 row (balance 31); {proxy.http_requests} HTTP request(s), all to the file's path"


def test_file_takes_precedence(cluster, db, urls_file, mon, as_mon, proxy, report):
    dead = free_port()
    with report.case("precedence file > rpc_urls > rpc_url",
                     f"rpc_url = http://127.0.0.1:<closed>/from-url, rpc_urls = http://127.0.0.1:<closed>/from-urls "
                     "+ rpc_urls_file; then file unset, rpc_urls = proxy/from-urls",
                     "the file's URL is used; without the file rpc_urls, not rpc_url") as rec:
        cluster.set_system(rpc_urls_file=str(urls_file), rpc_url=f"http://127.0.0.1:{dead}/from-url",
                           rpc_urls=f"http://127.0.0.1:{dead}/from-urls")
        proxy.reset()
        c = as_mon()
        assert len(c.execute(f"SELECT * FROM {F}(%s)", (W[:1],)).fetchall()) == 1
        assert sorted({r.path for r in proxy.requests}) == [SECRET_PATH]
        cluster.set_system(rpc_urls_file=None, rpc_urls=proxy.url_with("/from-urls"))
        proxy.reset()
        c2 = as_mon()
        assert len(c2.execute(f"SELECT * FROM {F}(%s)", (W[:1],)).fetchall()) == 1
        assert sorted({r.path for r in proxy.requests}) == ["/from-urls"]
        rec.observed = "file → proxy (secret path); without file → rpc_urls (/from-urls); rpc_url never used"


# ------------------------------------------------------------------------------------------------
# 2. what a pg_monitor member can read
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", URL_SETTINGS)
def test_show_setting(name, via_file, as_mon, report):
    with report.case(f"SHOW {name}", f"as {ROLE}: SHOW audius_indexer.{name}",
                     "the path for rpc_urls_file, empty for the others; no secret") as rec:
        c = as_mon()
        v = c.execute(f"SHOW audius_indexer.{name}").fetchone()[0]
        assert_no_secret(v, f"SHOW audius_indexer.{name}")
        assert v == (str(via_file) if name == "rpc_urls_file" else ""), v
        rec.observed = f"{v!r}" if name != "rpc_urls_file" else "'<root>/rpc_urls' (the path)"


def test_show_all(via_file, as_mon, report):
    with report.case("SHOW ALL", f"as {ROLE}: SHOW ALL", "no secret in any row") as rec:
        c = as_mon()
        rows = c.execute("SHOW ALL").fetchall()
        assert_no_secret(repr(rows), "SHOW ALL")
        mine = {r[0]: r[1] for r in rows if r[0].startswith("audius_indexer.rpc_url")}
        assert mine == {"audius_indexer.rpc_url": "", "audius_indexer.rpc_urls": "",
                        "audius_indexer.rpc_urls_file": str(via_file)}, mine
        rec.observed = f"{len(rows)} rows; rpc_url = '', rpc_urls = '', rpc_urls_file = the path"


def test_pg_settings_all_columns(via_file, as_mon, report):
    with report.case("pg_settings", f"as {ROLE}: SELECT * FROM pg_settings WHERE name LIKE 'audius_indexer.%'",
                     "rows visible (pg_read_all_settings), no secret in any column") as rec:
        c = as_mon()
        cur = c.execute("SELECT * FROM pg_settings WHERE name LIKE 'audius_indexer.%'")
        cols = [d.name for d in cur.description]
        rows = cur.fetchall()
        assert_no_secret(repr(rows), "pg_settings")
        by = {r[0]: dict(zip(cols, r)) for r in rows}
        assert {f"audius_indexer.{n}" for n in URL_SETTINGS} <= set(by), sorted(by)
        assert by["audius_indexer.rpc_urls_file"]["setting"] == str(via_file)
        assert by["audius_indexer.rpc_url"]["setting"] in ("", None)
        rec.observed = f"{len(rows)} rows × {len(cols)} columns, rpc_url setting empty"


def test_current_setting(via_file, as_mon, report):
    with report.case("current_setting", f"as {ROLE}: current_setting('audius_indexer.rpc_url' / rpc_urls / "
                     "rpc_urls_file)", "readable; no secret") as rec:
        c = as_mon()
        vals = {n: c.execute("SELECT current_setting(%s)", (f"audius_indexer.{n}",)).fetchone()[0]
                for n in URL_SETTINGS}
        assert_no_secret(repr(vals), "current_setting")
        assert vals == {"rpc_url": "", "rpc_urls": "", "rpc_urls_file": str(via_file)}, vals
        rec.observed = "rpc_url '', rpc_urls '', rpc_urls_file = the path"


FILE_SETTINGS = {
    "pg_file_settings": ("SELECT * FROM pg_file_settings", "permission denied for view pg_file_settings"),
    "pg_show_all_file_settings()": ("SELECT * FROM pg_show_all_file_settings()",
                                    "permission denied for function pg_show_all_file_settings"),
}


@pytest.mark.parametrize("name", sorted(FILE_SETTINGS), ids=["pg_file_settings", "pg_show_all_file_settings"])
def test_file_settings(name, via_file, as_mon, report):
    """PostgreSQL 15 keeps the configuration files' contents to superusers: pg_file_settings and
    pg_show_all_file_settings() are revoked from PUBLIC and granted to no predefined role, so
    pg_read_all_settings / pg_monitor do not open them (docs/security.md: such a member sees the
    rpc_urls_file path only)."""
    sql, message = FILE_SETTINGS[name]
    with report.case(name, f"as {ROLE}: {sql}", "ERROR 42501") as rec:
        c = as_mon()
        e, _, _ = expect_error(c, sql, sqlstate="42501", contains=(message,))
        rec.observed = short(e, 90)


READERS = {
    "pg_read_file": "SELECT pg_read_file({p})",
    "pg_read_binary_file": "SELECT pg_read_binary_file({p})",
    "COPY FROM file": "COPY secret_t FROM {p}",
    "lo_import": "SELECT lo_import({p})",
}


@pytest.mark.parametrize("how", sorted(READERS))
def test_read_file_denied(how, via_file, as_mon, report):
    sql = READERS[how].format(p=lit(str(via_file)))
    with report.case(how, f"as {ROLE}: {READERS[how].format(p=chr(39) + '<root>/rpc_urls' + chr(39))}",
                     "ERROR 42501") as rec:
        c = as_mon()
        if how.startswith("COPY"):
            c.execute("CREATE TEMP TABLE secret_t (x text)")
        e, _, _ = expect_error(c, sql, sqlstate="42501")
        rec.observed = short(e, 90)


# ------------------------------------------------------------------------------------------------
# 3. error messages
# ------------------------------------------------------------------------------------------------
def test_rpc_error_has_no_secret(via_file, as_mon, proxy, report):
    with report.case("RPC error", f"proxy answers HTTP 500; as {ROLE}: {F}(ARRAY[w])",
                     "ERROR 08P01 naming host:port only") as rec:
        proxy.fault("http500")
        c = as_mon()
        e, text, _ = expect_error(c, f"SELECT * FROM {F}(%s)", (W[:1],), "08P01", (f"127.0.0.1:{proxy.port}",))
        rec.observed = short(e, 100)


@dataclass
class FileCase:
    id: str
    what: str
    sqlstate: str
    contains: tuple = ()


FILE_CASES = [
    FileCase("missing", "rpc_urls_file = <root>/secret_missing (does not exist)", "58P01"),
    FileCase("unreadable", "rpc_urls_file = <root>/secret_unreadable (owner root, 0600, holds the secret URL)", "42501"),
    FileCase("bad_scheme", "file: '# c', 'ftp://h/secret-key-123?apikey=zzz' (postgres, 0600)", "22023", ("line 2",)),
    FileCase("no_url", "file: only '# comments' and blank lines (postgres, 0600)", "22023", ("no endpoint",)),
]


@pytest.mark.parametrize("fc", FILE_CASES, ids=[f.id for f in FILE_CASES])
def test_file_errors(fc: FileCase, cluster, db, mon, as_mon, proxy, report):
    root = Path(cluster.root)
    with report.case(f"file {fc.id}", fc.what, f"ERROR {fc.sqlstate} naming the path, not the content; "
                     "no request") as rec:
        path = root / f"secret_{fc.id}"
        if fc.id == "unreadable":
            path.write_text(proxy.url_with(SECRET_PATH) + "\n")
            shutil.chown(path, "root", "root")
            os.chmod(path, 0o600)
        elif fc.id == "bad_scheme":
            _write_server_file(path, "# c\nftp://127.0.0.1/secret-key-123?apikey=zzz\n")
        elif fc.id == "no_url":
            _write_server_file(path, "# nothing here\n\n   \n# http://127.0.0.1/secret-key-123?apikey=zzz\n")
        else:
            path.unlink(missing_ok=True)
        try:
            cluster.set_system(rpc_urls_file=str(path), rpc_url=None)
            proxy.reset()
            c = as_mon()
            e, text, _ = expect_error(c, f"SELECT * FROM {F}(%s)", (W[:1],), fc.sqlstate,
                                      (str(path), "audius_indexer.rpc_urls_file") + fc.contains)
            assert proxy.http_requests == 0
            rec.observed = short(e, 130).replace(str(root), "<root>")
        finally:
            path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------
# 4. doctor and statistics
# ------------------------------------------------------------------------------------------------
def test_doctor_as_monitor(via_file, as_mon, proxy, report):
    with report.case("doctor()", f"as {ROLE}: SELECT * FROM audius_indexer.doctor()",
                     "no exception; settings and rpc checks ok; no secret in any detail") as rec:
        c = as_mon()
        try:
            rows = c.execute("SELECT * FROM audius_indexer.doctor()").fetchall()
        except psycopg.Error as e:
            rec.observed = short(e, 100)
            raise AssertionError(f"doctor() raised for {ROLE}: {error_text(e)}") from None
        assert_no_secret(repr(rows), "doctor()")
        d = {r[0]: (r[1], r[2]) for r in rows}
        assert d["settings"][0] and f"1 endpoint(s): 127.0.0.1:{proxy.port}" in d["settings"][1], d["settings"]
        assert d.get(f"rpc 127.0.0.1:{proxy.port}", (False,))[0], d
        failed = [k for k, (ok, _) in d.items() if not ok]
        rec.observed = f"{len(rows)} checks, failed: {failed or 'none'}"


def test_endpoint_stats_as_monitor(via_file, as_mon, proxy, report):
    with report.case("rpc_endpoint_stats(_server)", f"as {ROLE}: one call, one HTTP 500, then "
                     "rpc_endpoint_stats() and rpc_endpoint_stats_server()",
                     "host:port only; no secret in host or last_error") as rec:
        c = as_mon()
        c.execute(f"SELECT * FROM {F}(%s)", (W[:1],)).fetchall()
        proxy.fault("http500", times=1)
        expect_error(c, f"SELECT * FROM {F}(%s)", (W[:1],), "08P01", (f"127.0.0.1:{proxy.port}", "HTTP 500"))
        s = c.execute("SELECT * FROM audius_indexer.rpc_endpoint_stats()").fetchall()
        g = c.execute("SELECT * FROM audius_indexer.rpc_endpoint_stats_server()").fetchall()
        assert_no_secret(repr(s), "rpc_endpoint_stats()")
        assert_no_secret(repr(g), "rpc_endpoint_stats_server()")
        host = f"127.0.0.1:{proxy.port}"
        assert [r[1] for r in s] == [host], s
        assert host in [r[0] for r in g], g
        # this session: the call that worked and the HTTP 500 (not retried), 1 failure recorded
        assert s[0][2:4] == (2, 1), s
        assert "HTTP 500" in s[0][5], "last_error of the session stats is recorded"
        rec.observed = f"session: {host}, last_error {s[0][5][:50]!r}; server-wide hosts {[r[0] for r in g]}"


# ------------------------------------------------------------------------------------------------
# 5. contrast: the plain rpc_url is readable by pg_read_all_settings members
# ------------------------------------------------------------------------------------------------
def test_contrast_rpc_url_is_readable(cluster, db, mon, as_mon, proxy, report):
    with report.case("CONTRAST: URL in rpc_url", f"rpc_url = the secret URL, rpc_urls_file unset; as {ROLE}: "
                     "SHOW audius_indexer.rpc_url", "the secret IS visible (documented risk of rpc_url)") as rec:
        cluster.set_system(rpc_urls_file=None, rpc_url=proxy.url_with(SECRET_PATH))
        c = as_mon()
        v = c.execute("SHOW audius_indexer.rpc_url").fetchone()[0]
        assert all(s in v for s in SECRETS), f"expected the secret to be readable, got {v!r}"
        ps = c.execute("SELECT setting FROM pg_settings WHERE name = 'audius_indexer.rpc_url'").fetchone()
        assert ps and all(s in ps[0] for s in SECRETS), ps
        rec.observed = "documented risk of rpc_url: SHOW and pg_settings show the full URL (path and query)"


# ------------------------------------------------------------------------------------------------
# 6. check hooks: refused at ALTER SYSTEM time, the value never echoed
# ------------------------------------------------------------------------------------------------
@dataclass
class Bad:
    id: str
    setting: str
    value: str
    reason: str   # fragment of the message


BAD = [
    Bad("urls_comma", "rpc_urls", ",", "entry 1 is empty"),
    Bad("urls_spaced_comma", "rpc_urls", " , ", "entry 1 is empty"),
    Bad("urls_trailing_comma", "rpc_urls", "http://a/secret-key-123?apikey=zzz,", "entry 2 is empty"),
    Bad("urls_leading_comma", "rpc_urls", ",http://a/secret-key-123?apikey=zzz", "entry 1 is empty"),
    Bad("urls_double_comma", "rpc_urls", "http://a/zzz,,http://b/secret-key-123", "entry 2 is empty"),
    Bad("urls_ftp_entry", "rpc_urls", "http://a/zzz, ftp://b/secret-key-123?apikey=zzz", "entry 2"),
    Bad("urls_file_entry", "rpc_urls", "file:///secret-key-123/zzz", "entry 1"),
    Bad("urls_whitespace", "rpc_urls", "http://a/secret-key-123 http://b/?apikey=zzz", "whitespace"),
    Bad("url_ftp", "rpc_url", "ftp://h/secret-key-123?apikey=zzz", "only http and https"),
    Bad("url_gopher", "rpc_url", "gopher://h:70/_secret-key-123?apikey=zzz", "only http and https"),
    Bad("url_no_host", "rpc_url", "http:///secret-key-123?apikey=zzz", "no host"),
    Bad("url_no_scheme", "rpc_url", "127.0.0.1:8545/secret-key-123?apikey=zzz", "not a URL"),
    Bad("url_whitespace", "rpc_url", "http://h/secret-key-123 ?apikey=zzz", "whitespace"),
    Bad("file_relative", "rpc_urls_file", "secret-key-123/zzz.txt", "not absolute"),
]


def _auto_conf(conn) -> list:
    return conn.execute("SELECT name, setting FROM pg_file_settings WHERE name LIKE 'audius_indexer.%' "
                        "AND sourcefile LIKE '%postgresql.auto.conf' ORDER BY 1").fetchall()


@pytest.mark.parametrize("b", BAD, ids=[b.id for b in BAD])
def test_check_hook_refuses(b: Bad, db, report):
    with report.case(f"refused: {b.id}", f"ALTER SYSTEM SET audius_indexer.{b.setting} = {b.value!r}",
                     "ERROR 22023 naming the setting and the reason, not the value; nothing written") as rec:
        # The statement text itself (the client's query) would be logged by PostgreSQL as STATEMENT:
        # that is not the extension's message; the log is checked for what the extension reports.
        db.execute("SET log_min_error_statement = panic")
        before = _auto_conf(db)
        e, text, _ = expect_error(db, f"ALTER SYSTEM SET audius_indexer.{b.setting} = {lit(b.value)}",
                                  sqlstate="22023",
                                  contains=(f'invalid value for parameter "audius_indexer.{b.setting}"', b.reason))
        parts = {b.value, b.value.strip()} | {p.strip() for p in b.value.split(",")}
        for part in (p for p in parts if len(p) > 3):
            assert part not in text, f"the message echoes {part!r}: {text}"
        if b.id == "urls_trailing_comma":
            assert e.diag.message_primary == 'invalid value for parameter "audius_indexer.rpc_urls": entry 2 is empty'
        assert _auto_conf(db) == before
        rec.observed = short(e, 110)


@pytest.mark.parametrize("setting", URL_SETTINGS)
def test_check_hook_accepts_empty(setting, cluster, db, report):
    with report.case(f"accepted: {setting} = ''", f"ALTER SYSTEM SET audius_indexer.{setting} = ''",
                     "accepted ('' = unset)") as rec:
        try:
            db.execute(f"ALTER SYSTEM SET audius_indexer.{setting} = ''")
            row = [r for r in _auto_conf(db) if r[0] == f"audius_indexer.{setting}"]
            assert row == [(f"audius_indexer.{setting}", "")], row
        finally:
            # not reloaded: put postgresql.auto.conf back before anything reloads it
            if setting == "rpc_url":
                db.execute(f"ALTER SYSTEM SET audius_indexer.rpc_url = {lit(cluster.baseline['rpc_url'])}")
            else:
                db.execute(f"ALTER SYSTEM RESET audius_indexer.{setting}")
        rec.observed = "accepted"


# ------------------------------------------------------------------------------------------------
# 7. the server log (last in the module: covers everything above as well)
# ------------------------------------------------------------------------------------------------
def test_zz_server_log_has_no_secret(cluster, db, via_file, as_mon, proxy, report):
    """What puts the URL's neighbourhood into the server log runs here, so the check means the
    same alone as after the suite: the switch to rpc_urls_file (PostgreSQL logs the reload), a
    call through the file, an RPC failure (ERROR with its STATEMENT line), a missing file (58P01)
    and the contrast setting (the secret in rpc_url, whose reload line PostgreSQL itself writes).
    Then no line written since the module began (or since this test began, when run alone) holds
    a secret, except PostgreSQL's own reload line for rpc_url."""
    with report.case("server log", "server log written during this suite; here: rpc_urls_file set, a call, "
                     "an HTTP 500, a missing file, rpc_url = the secret URL",
                     "no secret in any line, except PostgreSQL's own reload line for rpc_url") as rec:
        c = as_mon()
        assert len(c.execute(f"SELECT * FROM {F}(%s)", (W[:1],)).fetchall()) == 1
        proxy.fault("http500", times=1)
        expect_error(c, f"SELECT * FROM {F}(%s)", (W[:1],), "08P01", (f"127.0.0.1:{proxy.port}",))
        missing = Path(cluster.root) / "secret_zz_missing"
        cluster.set_system(rpc_urls_file=str(missing))
        expect_error(as_mon(), f"SELECT * FROM {F}(%s)", (W[:1],), "58P01", (str(missing),))
        cluster.set_system(rpc_urls_file=None, rpc_url=proxy.url_with(SECRET_PATH))
        lines = cluster.log_text()[report.log_mark:].splitlines()
        bad = crash_or_secret_lines("\n".join(lines))
        assert not bad, "server log shows crashes / secrets:\n" + "\n".join(bad[:20])
        exempt = [ln for ln in lines if PG_RELOAD_LINE.search(ln) and any(s in ln for s in SECRETS)]
        assert exempt, "the contrast reload line (rpc_url = the secret URL) is in the log"
        assert not [ln for ln in exempt if "rpc_urls_file" in ln]
        assert [ln for ln in lines if 'parameter "audius_indexer.rpc_urls_file" changed to' in ln], \
            "the file setting was in use"
        assert [ln for ln in lines if "ERROR:" in ln and f"127.0.0.1:{proxy.port}" in ln], "the RPC error is logged"
        rec.observed = (f"{len(lines)} lines, no secret from the extension; {len(exempt)} PostgreSQL "
                        "'parameter \"audius_indexer.rpc_url\" changed to' line(s) (contrast / baseline restore)")
