"""Pieces the reliability suites (test_r*.py, test_hardening.py) share: their `report` fixture, a
database of their own in the session cluster, connections that are closed at the end.

    report = report_fixture("rpc_faults", "RPC faults")

at module level defines the module's `report` fixture (pytest takes the attribute's name).
"""
from __future__ import annotations

import contextlib

import pytest

from harness.reliability import Report, log_guard


def report_fixture(suite: str, title: str, cls: type[Report] = Report, guard: bool = True):
    """The module-scoped `report` fixture of a suite: a `cls(suite, title)` whose table is written at
    module end (tests/.build/suites/<suite>.md).

    guard=True (suites on the session cluster): the fixture is autouse, `report.log_mark` is where
    the session server log stood when the suite began, and after the suite that log must show no
    crash / PANIC / URL secret (`log_guard`). guard=False (suites on clusters of their own, which
    check their own logs): no cluster, not autouse."""
    if guard:
        @pytest.fixture(scope="module", autouse=True)
        def report(cluster):
            """Suite table + after the suite: no crash / PANIC / URL secret in the server log."""
            r = cls(suite, title)
            r.log_mark = len(cluster.log_text())
            with log_guard(cluster):
                yield r
                r.write()
    else:
        @pytest.fixture(scope="module")
        def report():
            """Suite table (the suite checks the log of its own cluster)."""
            r = cls(suite, title)
            yield r
            r.write()
    return report


def extension_db(cluster, name: str, *sql: str) -> str:
    """CREATE DATABASE `name` in `cluster` with the extension, then runs `sql` in it; returns the
    name. Never dropped by the suites: DROP DATABASE hangs while the sweep worker idles in it
    (test_rpc_faults.py::test_drop_database_while_worker_idles); the cluster goes at session end."""
    with cluster.connect() as c:
        c.execute(f"CREATE DATABASE {name}")
    with cluster.connect(name) as c:
        c.execute("CREATE EXTENSION audius_indexer")
        for s in sql:
            c.execute(s)
    return name


@contextlib.contextmanager
def emptied(cluster, dbname: str):
    """A connection to `dbname` with empty eth_wallet_balances and wallet_failures; closed afterwards."""
    c = cluster.connect(dbname)
    try:
        c.execute("TRUNCATE eth_wallet_balances, audius_indexer.wallet_failures")
        yield c
    finally:
        c.close()


@contextlib.contextmanager
def connections(cluster, dbname: str = "audius", **defaults):
    """Yields connect(**kw) → a new connection to `dbname` (`defaults` overridden by `kw`, e.g.
    user=...); every connection it made is closed at the end."""
    conns = []

    def connect(**kw):
        c = cluster.connect(dbname, **{**defaults, **kw})
        conns.append(c)
        return c
    try:
        yield connect
    finally:
        for c in conns:
            c.close()


def lit(s: str) -> str:
    """`s` as an SQL string literal."""
    return "'" + s.replace("'", "''") + "'"
