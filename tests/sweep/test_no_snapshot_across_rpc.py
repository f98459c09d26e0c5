"""No snapshot held across an RPC round trip (docs/architecture.md, rule 1 "No snapshot across the
network"; suite table "No snapshot across RPC" in docs/reliability.md).

A cluster of its own (audius_indexer preloaded, the worker connected to `nosnap`) and a proxy of its
own in front of the session anvil. While the proxy holds the node's answer for 5 s:
- the background worker's backend shows `backend_xmin` NULL (and no xid): it claimed its batch,
  committed, and waits for the node with no transaction open;
- `CALL audius_indexer.sweep()` likewise;
- contrast: `SELECT refresh_stale()` (a function, one transaction) does hold a snapshot — which
  proves the measurement can see one.
Plus: a failed `CALL sweep()` is recorded in sweep_status and frees the single flight; CALL inside
a transaction block is refused with 2D000.
"""
from __future__ import annotations

import threading
import time

import psycopg
import pytest

from conftest import rpc_proxy_fixture, wait_until
from harness.chain import wallet_address
from harness.pg import worker_cluster
from harness.reliability import expect_error, short
from harness.suites import report_fixture

pytestmark = pytest.mark.timeout(180)

DB = "nosnap"
HOLD_S = 5.0


report = report_fixture("no_snapshot_across_rpc", "No snapshot across RPC", guard=False)
px = rpc_proxy_fixture()  # a proxy of this module's own


@pytest.fixture(scope="module")
def nosnap(px, contracts):
    c = worker_cluster("nosnap", DB, px.url, contracts)
    try:
        yield c
        c.assert_log_clean()
    finally:
        c.destroy()


@pytest.fixture
def conn(nosnap, px, contracts):
    px.clear_faults()
    px.reset()
    c = nosnap.connect(DB)
    c.execute("TRUNCATE eth_wallet_balances, audius_indexer.wallet_failures")
    ws = [wallet_address(i, "nosnap") for i in range(20)]
    contracts.set_values(ws, [i + 1 for i in range(20)], [0] * 20, [0] * 20)
    c.execute("INSERT INTO eth_wallet_balances (wallet, balance, blocknumber, updated_at) "
              "SELECT w, 0, 1, '1950-01-01' FROM unnest(%s::text[]) w", (ws,))
    try:
        yield c
    finally:
        px.clear_faults()
        c.close()


def sample_xmin(conn, where: str, seconds: float) -> list[tuple]:
    """(backend_xmin, backend_xid, state) of the backend(s) matching `where`, every 0.2 s."""
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        out.extend(conn.execute(f"SELECT backend_xmin::text, backend_xid::text, state FROM pg_stat_activity "
                                f"WHERE {where}").fetchall())
        time.sleep(0.2)
    return out


def fresh(conn) -> int:
    return conn.execute("SELECT count(*) FROM eth_wallet_balances WHERE updated_at > '1971-01-01'").fetchone()[0]


def test_worker_waits_for_the_node_without_a_snapshot(nosnap, px, conn, report):
    with report.case("worker: backend_xmin during a hang", f"proxy holds every answer {HOLD_S:.0f} s; sweep on",
                     "worker's backend_xmin and backend_xid NULL throughout; the tick completes after") as rec:
        px.fault("hang")
        nosnap.set_system(sweep_enabled=True)
        try:
            wait_until(lambda: px.http_requests >= 1, timeout=10, what="the worker's request")
            samples = sample_xmin(conn, "backend_type = 'audius_indexer sweep'", HOLD_S)
            assert samples, "the worker is not in pg_stat_activity"
            held = [s for s in samples if s[0] is not None or s[1] is not None]
            assert not held, f"the worker held a snapshot/xid while waiting: {held[:5]}"
            px.clear_faults()
            wait_until(lambda: fresh(conn) == 20, timeout=20, what="the worker's tick to finish")
        finally:
            nosnap.set_system(sweep_enabled=False)
        rec.observed = f"{len(samples)} samples over {HOLD_S:.0f} s, all backend_xmin/xid NULL; 20 rows written after"


def test_call_sweep_waits_for_the_node_without_a_snapshot(nosnap, px, conn, report):
    with report.case("CALL sweep(): backend_xmin during a hang", f"proxy holds every answer {HOLD_S:.0f} s",
                     "the CALL's backend_xmin and backend_xid NULL throughout; completes after") as rec:
        caller = nosnap.connect(DB)
        pid = caller.execute("SELECT pg_backend_pid()").fetchone()[0]
        notices = []
        caller.add_notice_handler(lambda d: notices.append(d.message_primary))
        out = {}

        def run():
            try:
                caller.execute("CALL audius_indexer.sweep(20)")
            except BaseException as e:  # noqa: BLE001
                out["error"] = e
        px.reset()
        px.fault("hang")
        th = threading.Thread(target=run, daemon=True)
        th.start()
        try:
            wait_until(lambda: px.http_requests >= 1, timeout=10, what="the CALL's request")
            samples = sample_xmin(conn, f"pid = {pid}", HOLD_S)
            held = [s for s in samples if s[0] is not None or s[1] is not None]
            assert samples and not held, f"CALL sweep() held a snapshot/xid while waiting: {held[:5]}"
        finally:
            px.clear_faults()
            th.join(30)
        caller.close()
        assert "error" not in out, out
        assert fresh(conn) == 20
        assert any("updated=20" in n for n in notices), notices
        rec.observed = f"{len(samples)} samples, all NULL; then {notices[-1]}"


def test_contrast_refresh_stale_holds_a_snapshot(nosnap, px, conn, report):
    with report.case("contrast: SELECT refresh_stale() during a hang", "same hang, the function form",
                     "backend_xmin NOT NULL (one transaction around the RPC): the measurement sees it") as rec:
        caller = nosnap.connect(DB)
        pid = caller.execute("SELECT pg_backend_pid()").fetchone()[0]
        px.reset()
        px.fault("hang")
        th = threading.Thread(target=lambda: caller.execute("SELECT * FROM audius_indexer.refresh_stale(20)"),
                              daemon=True)
        th.start()
        try:
            wait_until(lambda: px.http_requests >= 1, timeout=10, what="the request")
            samples = sample_xmin(conn, f"pid = {pid}", 1.5)
            assert samples and all(s[0] is not None for s in samples), samples[:5]
        finally:
            px.clear_faults()
            th.join(30)
        caller.close()
        rec.observed = f"backend_xmin = {samples[0][0]} while waiting"


def test_failed_call_is_recorded_and_frees_the_single_flight(nosnap, px, conn, report):
    with report.case("CALL sweep() fails", "HTTP 500 on every request",
                     "ERROR to the caller; sweep_status.last_error records it; the next CALL runs") as rec:
        px.fault("http500")
        e, _, _ = expect_error(conn, "CALL audius_indexer.sweep(20)", (), "08P01", ("HTTP 500",))
        last = conn.execute("SELECT last_error, last_error_at IS NOT NULL FROM audius_indexer.sweep_status").fetchone()
        assert last[1] and "HTTP 500" in last[0], last
        held = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[0]
        assert held == 0, "the single-flight lock is still held"
        px.clear_faults()
        conn.execute("CALL audius_indexer.sweep(20)")
        assert fresh(conn) == 20
        rec.observed = f"{short(e, 70)}; last_error = {last[0][:60]}…; next CALL wrote 20 rows"


def test_call_inside_a_transaction_block_is_refused(nosnap, conn, report):
    with report.case("CALL sweep() in BEGIN … COMMIT", "BEGIN; CALL audius_indexer.sweep(5)",
                     "ERROR 2D000 (it commits between its steps)") as rec:
        c = nosnap.connect(DB, autocommit=False)
        with pytest.raises(psycopg.Error) as ei:
            c.execute("CALL audius_indexer.sweep(5)")
        c.rollback()
        c.close()
        assert ei.value.sqlstate == "2D000", ei.value
        rec.observed = short(ei.value, 100)
