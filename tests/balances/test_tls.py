"""The https:// path, as real providers are reached: the node behind a TLS terminator (stunnel4 with a
throwaway test CA, harness/tls.py), trusted through `audius_indexer.rpc_tls_ca_file`.

- With the test CA: the reads over https equal independent eth_calls, and the keep-alive pool holds
  (at most rpc_concurrency TLS connections for a read of several chunks).
- Without it (the web PKI roots): the node's certificate is refused, the error names the host and
  never the URL.
- A CA file that is not one: ERROR 22023 naming the path, never the content.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from harness.chain import wallet_address
from harness.tls import TlsTerminator

F = "audius_indexer.multicall_total_audio_balances"


@pytest.fixture(scope="module")
def tls(anvil):
    with TlsTerminator(anvil.port) as t:
        yield t


def wallets(n: int, tag: str) -> list[str]:
    return [wallet_address(i, f"tls-{tag}") for i in range(n)]


def test_reads_over_https_with_the_test_ca_equal_independent_eth_calls(db, cluster, contracts, tls):
    ws = wallets(9, "ok")
    contracts.set_values(ws, token=[10**18 + i for i in range(9)], staked=[7 * i for i in range(9)],
                         delegated=[11 * i + 1 for i in range(9)])
    cluster.set_system(rpc_url=tls.url, rpc_tls_ca_file=str(tls.ca_pem))
    db.execute("SET audius_indexer.multicall_chunk_size = 2")  # 5 chunks, up to 4 in flight
    def stats():
        return {h: (r, f) for h, r, f in db.execute(
            "SELECT host, requests, failures FROM audius_indexer.rpc_endpoint_stats()").fetchall()}
    before = stats()
    rows = db.execute(f"SELECT wallet, balance::text, error FROM {F}(%s)", (ws,)).fetchall()
    assert [r[0] for r in rows] == ws
    assert all(r[2] is None for r in rows), rows
    assert {r[0]: int(r[1]) for r in rows} == {w: sum(contracts.independent_total(w)) for w in ws}
    host = f"127.0.0.1:{tls.port}"
    after = stats()
    assert list(after) == [host], after
    req0, fail0 = before.get(host, (0, 0))
    assert (after[host][0] - req0, after[host][1] - fail0) == (5, 0), (before, after)


def test_without_the_ca_the_certificate_is_refused_naming_the_host_only(db, cluster, tls):
    cluster.set_system(rpc_url=tls.url + "SECRETPATH", rpc_tls_ca_file=None)
    db.execute("SET audius_indexer.rpc_max_retries = 0")
    with pytest.raises(psycopg.Error) as e:
        db.execute(f"SELECT * FROM {F}(%s)", (wallets(1, "noca"),)).fetchall()
    msg = str(e.value)
    assert e.value.sqlstate == "08006", (e.value.sqlstate, msg)
    assert f"127.0.0.1:{tls.port}" in msg and "SECRETPATH" not in msg, msg
    assert "certificate" in msg.lower() or "issuer" in msg.lower(), msg


@pytest.fixture
def readable_dir():
    """A directory the server (the postgres OS user) can read."""
    d = Path(tempfile.mkdtemp(prefix="audius_tls_ca_"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_a_file_that_is_not_a_ca_is_22023_naming_only_its_path(db, cluster, tls, readable_dir):
    tmp_path = readable_dir
    junk = tmp_path / "junk.pem"
    junk.write_text("APIKEY-NOT-A-CERTIFICATE\n")
    junk.chmod(0o644)
    cluster.set_system(rpc_url=tls.url, rpc_tls_ca_file=str(junk))
    with pytest.raises(psycopg.Error) as e:
        db.execute(f"SELECT * FROM {F}(%s)", (wallets(1, "junk"),)).fetchall()
    assert e.value.sqlstate == "22023", e.value.sqlstate
    msg = str(e.value)
    assert str(junk) in msg and "no PEM certificate" in msg and "APIKEY" not in msg, msg
    missing = tmp_path / "missing.pem"
    cluster.set_system(rpc_tls_ca_file=str(missing))
    with pytest.raises(psycopg.Error) as e:
        db.execute(f"SELECT * FROM {F}(%s)", (wallets(1, "missing"),)).fetchall()
    assert e.value.sqlstate == "22023" and str(missing) in str(e.value), str(e.value)


def test_rpc_tls_ca_file_is_superuser_only(db, cluster):
    db.execute("CREATE ROLE tls_plain NOLOGIN")
    try:
        db.execute("SET ROLE tls_plain")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute("SET audius_indexer.rpc_tls_ca_file = '/tmp/x.pem'")
        db.execute("RESET ROLE")
    finally:
        db.execute("RESET ROLE")
        db.execute("DROP ROLE tls_plain")
