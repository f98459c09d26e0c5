"""Session fixtures for the integration tests: one anvil (Multicall3 + the three mock contracts), a
recording/fault-injecting proxy in front of it, and one PostgreSQL 15 cluster with audius_indexer
and pg_cron preloaded, a database `audius` with the extension, pointed at the proxy.

Fixtures fail loudly (never skip) when a dependency is missing. Everything is torn down even when a
test fails; at session end the server log must show no crashed backend.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from harness.chain import ANVIL_BIN, Anvil, Contracts
from harness.pg import PG_BIN, cron_cluster, enable_paths
from harness.rpcproxy import RpcProxy

EXT_CONTROL = Path("/usr/share/postgresql/15/extension/audius_indexer.control")
EXT_LIB = Path("/usr/lib/postgresql/15/lib/audius_indexer.so")
CRON_LIB = Path("/usr/lib/postgresql/15/lib/pg_cron.so")

# The RPC URL carries a secret-looking path and query: no error message may ever show them.
SECRET_PATH = "/secret-key-123?apikey=zzz"
SECRETS = ("secret-key-123", "zzz")


def _require(path: Path, what: str) -> None:
    if not path.exists():
        pytest.fail(f"{what} missing: {path} (run `make install` / scripts/install-deps.sh first)",
                    pytrace=False)


# --------------------------------------------------------------------------------------------
# chain
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def anvil():
    _require(ANVIL_BIN, "anvil")
    node = Anvil()
    try:
        node.start()
        node.install_multicall3()
        node.contracts = Contracts.deploy_all(node)
        yield node
    finally:
        node.destroy()


@pytest.fixture(scope="session")
def contracts(anvil) -> Contracts:
    return anvil.contracts


def rpc_proxy_fixture(scope: str = "module"):
    """A fixture: a recording/fault-injecting RpcProxy in front of the session anvil, stopped at the
    end of `scope`. A module that wants a proxy of its own writes `px = rpc_proxy_fixture()`."""
    @pytest.fixture(scope=scope)
    def rpc_proxy(anvil):
        p = RpcProxy(anvil.url).start()
        try:
            yield p
        finally:
            p.stop()
    return rpc_proxy


proxy = rpc_proxy_fixture("session")


@pytest.fixture
def throwaway_anvil():
    """A dedicated anvil (not silent: its log lists every method served) for tests that kill it."""
    node = Anvil(silent=False)
    try:
        yield node
    finally:
        node.destroy()


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def cluster(proxy, contracts):
    _require(PG_BIN / "postgres", "PostgreSQL 15")
    _require(CRON_LIB, "pg_cron (postgresql-15-cron)")
    _require(EXT_CONTROL, "audius_indexer extension (control file)")
    _require(EXT_LIB, "audius_indexer extension (library)")
    c = cron_cluster("it", {
        "audius_indexer.sweep_enabled": "off",
        # the follow and challenge workers stay off too: their RPC calls would show in the proxy's
        # counters of every test (tests that want them turn them on)
        "audius_indexer.follow_interval": "0",
        "audius_indexer.challenges_interval": "0",
        "audius_indexer.database": "'audius'",
    })
    c.baseline = {
        "rpc_url": proxy.url_with(SECRET_PATH),
        "token_address": contracts.token,
        "staking_address": contracts.staking,
        "delegate_manager_address": contracts.delegate,
    }
    try:
        c.init().start()
        with c.connect() as conn:
            conn.execute("CREATE EXTENSION pg_cron")
        c.create_database("audius")
        with c.connect("audius") as conn:
            conn.execute("CREATE EXTENSION audius_indexer")
            # the sweep path on (its worker stays off until a test sets sweep_enabled); follow
            # and challenges stay off: the tests drive them through SQL and move their
            # checkpoints by hand, which an enabled path would take for a second writer
            enable_paths(conn, "sweep")
        c.set_system(**c.baseline)
        yield c
        c.assert_log_clean()
    finally:
        c.destroy()


def restore_baseline(cluster) -> None:
    """Puts the SIGHUP settings a test may have changed back to the session's values."""
    with cluster.connect("audius") as conn:
        changed = {k: v for k, v in cluster.baseline.items()
                   if conn.execute("SELECT current_setting(%s, true)",
                                   (f"audius_indexer.{k}",)).fetchone()[0] != v}
        # settings the session never sets with ALTER SYSTEM must stay at their defaults
        extra = [r[0] for r in conn.execute(
            "SELECT name FROM pg_file_settings WHERE name LIKE 'audius_indexer.%' "
            "AND sourcefile LIKE '%postgresql.auto.conf'").fetchall()
            if r[0].split(".", 1)[1] not in cluster.baseline]
    for name in extra:
        changed[name] = None
    if changed:
        cluster.set_system(**changed)


def crash_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if "terminated by signal" in ln or "PANIC" in ln
            or re.search(r"server process .* was terminated", ln)]


@pytest.fixture
def db(cluster, proxy):
    """Autocommit connection to `audius`. Per-test session settings die with it; faults, proxy
    counters and SIGHUP settings are reset afterwards, and the log must show no crash."""
    proxy.clear_faults()
    proxy.reset()
    mark = len(cluster.log_text())
    conn = cluster.connect("audius")
    try:
        yield conn
    finally:
        proxy.clear_faults()
        try:
            conn.close()
        except Exception:
            pass
        proxy.reset()
        restore_baseline(cluster)
        bad = crash_lines(cluster.log_text()[mark:])
        assert not bad, "server log shows crashes:\n" + "\n".join(bad[:20])


@pytest.fixture
def other_conn(cluster):
    """A second connection (e.g. to cancel the first one)."""
    conn = cluster.connect("audius")
    try:
        yield conn
    finally:
        conn.close()


def wait_until(pred, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)

