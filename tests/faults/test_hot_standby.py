"""Hot standby (suite table "Hot standby" in docs/reliability.md).

A primary (audius_indexer preloaded, worker database `standby`, sweep off there) and a
`pg_basebackup -R` streaming replica of it with the sweep turned on (1 s interval). On the standby:
- for 30 s the server log shows no ERROR (the worker is not started during recovery) and no worker
  backend exists;
- the SQL write paths fail with 25006 and say why; the read function works;
then `pg_promote()`: the worker starts and sweeps the stale rows within sweep_interval + 5 s.
"""
from __future__ import annotations

import time

import pytest

from conftest import wait_until
from harness.chain import wallet_address
from harness.pg import standby_of, worker_cluster
from harness.reliability import expect_error, short
from harness.suites import report_fixture

pytestmark = pytest.mark.timeout(240)

DB = "standby"
WATCH_S = 30


report = report_fixture("hot_standby", "Hot standby", guard=False)


@pytest.fixture(scope="module")
def pair(proxy, contracts):
    primary = worker_cluster("standbyp", DB, proxy.url, contracts, settings={"wal_level": "replica"})
    standby = None
    try:
        ws = [wallet_address(i, "standby") for i in range(30)]
        contracts.set_values(ws, [10 + i for i in range(30)], [1] * 30, [2] * 30)
        with primary.connect(DB) as c:
            c.execute("INSERT INTO eth_wallet_balances (wallet, balance, blocknumber, updated_at) "
                      "SELECT w, 0, 1, '1950-01-01' FROM unnest(%s::text[]) w", (ws,))
        standby = standby_of(primary, "standbys", settings={"audius_indexer.sweep_enabled": "on"})
        wait_until(lambda: _count(standby, ws) == 30, timeout=30, what="the standby to replay the rows")
        yield primary, standby, ws
        primary.assert_log_clean()
        standby.assert_log_clean()
    finally:
        if standby:
            standby.destroy()
        primary.destroy()


def _count(c, ws) -> int:
    with c.connect(DB) as conn:
        return conn.execute("SELECT count(*) FROM eth_wallet_balances WHERE wallet = ANY(%s)", (ws,)).fetchone()[0]


def test_standby_idles_then_sweeps_after_promotion(pair, report):
    primary, standby, ws = pair
    with standby.connect(DB) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        with report.case("standby: SQL write paths", "refresh_wallets / refresh_stale / CALL sweep() on the standby",
                         "25006 naming the standby; multicall_total_audio_balances works") as rec:
            seen = []
            for sql, args in (("SELECT * FROM audius_indexer.refresh_wallets(%s)", (ws[:2],)),
                              ("SELECT * FROM audius_indexer.refresh_stale(10)", ()),
                              ("CALL audius_indexer.sweep(10)", ())):
                e, text, _ = expect_error(conn, sql, args, "25006", ("standby",))
                seen.append(e.sqlstate)
            rows = conn.execute("SELECT wallet, balance FROM audius_indexer.multicall_total_audio_balances(%s)",
                                (ws[:2],)).fetchall()
            assert [int(b) for _, b in rows] == [13, 14], rows
            rec.observed = f"{seen}; {short(e, 90)}; multicall read 2 rows"

        with report.case("standby: idle", f"sweep_enabled on, 1 s interval, watched {WATCH_S} s",
                         "no ERROR line, no worker backend") as rec:
            mark = len(standby.log_text())
            time.sleep(WATCH_S)
            errors = [ln for ln in standby.log_text()[mark:].splitlines() if "ERROR:" in ln or "FATAL:" in ln]
            assert not errors, "\n".join(errors[:10])
            workers = conn.execute("SELECT count(*) FROM pg_stat_activity "
                                   "WHERE backend_type = 'audius_indexer sweep'").fetchone()[0]
            assert workers == 0
            doctor = conn.execute("SELECT detail FROM audius_indexer.doctor() WHERE check_name = 'sweep worker'"
                                  ).fetchone()[0]
            assert "standby" in doctor, doctor
            rec.observed = f"0 ERROR/FATAL lines in {WATCH_S} s; 0 worker backends; doctor: {doctor}"

    with report.case("promotion", "SELECT pg_promote()", "stale rows swept within sweep_interval + 5 s") as rec:
        with standby.connect(DB) as conn:
            t0 = time.monotonic()
            assert conn.execute("SELECT pg_promote()").fetchone() == (True,)
            wait_until(lambda: conn.execute(
                "SELECT count(*) FROM eth_wallet_balances WHERE wallet = ANY(%s) AND balance > 0",
                (ws,)).fetchone()[0] == 30, timeout=1 + 5, interval=0.1, what="the sweep after promotion")
            dt = time.monotonic() - t0
            got = {w: int(b) for w, b in conn.execute(
                "SELECT wallet, balance FROM eth_wallet_balances WHERE wallet = ANY(%s)", (ws,)).fetchall()}
            assert got == {w: 13 + i for i, w in enumerate(ws)}
        rec.observed = f"30/30 rows swept {dt:.2f} s after pg_promote()"
