"""A sweep queue that cannot stall (suite table "A queue that cannot stall" in docs/reliability.md).

In a database of its own (`stall`, session cluster and proxy):
- rows stamped with a block newer than the node's answer (ahead of a lagging node) are left alone
  by the block guard *and marked checked* (`updated_at = now()`, balance and block untouched), so
  they leave the head of the `ORDER BY updated_at` queue;
- a `getBlockNumber()` answer outside bigint (2^63), or further than `max_block_ahead` above the
  node's `eth_blockNumber`, is refused (08P01) and never stamped on a row;
- a chunk whose failure repeats after the retries (EVM execution timeout, 504) is split down to the
  one wallet that causes it, which is backed off like a reverting wallet; a node that fails every
  request is a whole-call ERROR, never blamed on wallets;
- no code at a configured contract is 55000 naming the setting, nothing recorded against wallets;
- doctor() reports rows stamped above the chain head.
"""
from __future__ import annotations

import pytest

from harness.chain import wallet_address
from harness.reliability import set_random_values, expect_error, short
from harness.suites import emptied, extension_db, report_fixture

pytestmark = pytest.mark.timeout(180)

DB = "stall"
SENTINEL = 777


report = report_fixture("queue_never_stalls", "A queue that cannot stall")


@pytest.fixture(scope="module")
def stalldb(cluster):
    return extension_db(cluster, DB)


@pytest.fixture
def conn(db, cluster, stalldb):
    with emptied(cluster, stalldb) as c:
        yield c


def wallets(n: int, tag: str) -> list[str]:
    return [wallet_address(i, f"stall-{tag}") for i in range(n)]


def seed(conn, ws, balance=SENTINEL, block=1, updated_at="1950-01-01"):
    conn.execute("INSERT INTO eth_wallet_balances (wallet, balance, blocknumber, updated_at) "
                 "SELECT w, %s, %s, %s::timestamp + make_interval(secs => i) "
                 "FROM unnest(%s::text[]) WITH ORDINALITY AS u(w, i)", (balance, block, updated_at, ws))


def rows(conn, ws) -> dict[str, tuple[int, int]]:
    return {w: (int(b), bl) for w, b, bl in conn.execute(
        "SELECT wallet, balance, blocknumber FROM eth_wallet_balances WHERE wallet = ANY(%s)", (ws,)).fetchall()}


def seeded(conn, contracts, n: int, tag: str) -> tuple[list[str], list[tuple]]:
    """`n` wallets of `tag` with random values on chain and SENTINEL rows at block 1: (wallets, the
    table's snapshot)."""
    ws = wallets(n, tag)
    set_random_values(contracts, ws, tag)
    seed(conn, ws)
    return ws, snapshot(conn)


def snapshot(conn):
    return conn.execute("SELECT wallet, balance::text, blocknumber, updated_at FROM eth_wallet_balances "
                        "ORDER BY wallet").fetchall()


def failures(conn) -> list[tuple[str, str]]:
    return conn.execute("SELECT wallet, reason FROM audius_indexer.wallet_failures ORDER BY wallet").fetchall()


def test_ahead_of_node_rows_leave_the_head_of_the_queue(conn, anvil, contracts, report):
    ahead = wallets(60, "ahead")
    stale = wallets(100, "stale")
    want = set_random_values(contracts, stale, "stale")
    set_random_values(contracts, ahead, "ahead")
    future = anvil.block_number() + 1000
    seed(conn, ahead, SENTINEL, future, "1900-01-01")
    seed(conn, stale, 0, 1, "1950-01-01")
    with report.case("ahead-of-node rows at the head",
                     "60 rows stamped head+1000 (oldest updated_at) + 100 stale rows; CALL sweep(50) ticks",
                     "all 100 corrected within 3 calls; the 60 keep balance and block") as rec:
        calls = []
        for _ in range(3):
            conn.execute("CALL audius_indexer.sweep(50)")
            calls.append(tuple(conn.execute("SELECT last_requested, last_updated, last_failed, last_skipped "
                                            "FROM audius_indexer.sweep_status").fetchone()))
            got = rows(conn, stale)
            if all(got[w][0] == want[w] for w in stale):
                break
        got = rows(conn, stale)
        assert all(got[w][0] == want[w] for w in stale), f"stale rows not all corrected after {calls}"
        assert rows(conn, ahead) == {w: (SENTINEL, future) for w in ahead}, "the ahead rows were changed"
        assert failures(conn) == [], "nothing blamed"
        rec.observed = f"{len(calls)} calls {calls}; 100/100 corrected; 60/60 untouched (block {future})"


def test_block_number_outside_bigint_is_refused(conn, proxy, contracts, report):
    ws, before = seeded(conn, contracts, 12, "2p63")
    with report.case("getBlockNumber() = 2^63", "proxy rewrites Multicall3 getBlockNumber() to 2^63",
                     "08P01 from refresh_stale, refresh_wallets, CALL sweep() and the multicall; no row written") as rec:
        proxy.fault("block_number", value=2**63)
        seen = []
        for sql, args in (("SELECT * FROM audius_indexer.refresh_stale(50)", ()),
                          ("SELECT * FROM audius_indexer.refresh_wallets(%s)", (ws,)),
                          ("CALL audius_indexer.sweep(50)", ()),
                          ("SELECT * FROM audius_indexer.multicall_total_audio_balances(%s)", (ws,))):
            e, text, _ = expect_error(conn, sql, args, "08P01", ("9223372036854775808",))
            seen.append(e.sqlstate)
        assert snapshot(conn) == before, "a row was written"
        assert failures(conn) == []
        rec.observed = f"{seen}; {short(e, 100)}; rows unchanged"


def test_block_far_above_the_head_is_refused(conn, proxy, anvil, contracts, report):
    ws, before = seeded(conn, contracts, 6, "farahead")
    with report.case("getBlockNumber() far above eth_blockNumber",
                     "proxy rewrites getBlockNumber() to head + 10,000 (max_block_ahead 100)",
                     "08P01 naming both blocks; no row written") as rec:
        bogus = anvil.block_number() + 10_000
        proxy.fault("block_number", value=bogus)
        e, text, _ = expect_error(conn, "SELECT * FROM audius_indexer.refresh_stale(50)", (), "08P01",
                                  (str(bogus), "eth_blockNumber"))
        assert snapshot(conn) == before and failures(conn) == []
        proxy.clear_faults()
        assert tuple(conn.execute("SELECT * FROM audius_indexer.refresh_stale(50)").fetchone()) == (6, 6, 0, 0)
        rec.observed = short(e, 120) + "; then (6, 6, 0, 0) once the node is honest"


@pytest.mark.parametrize("kind", ["evm_timeout", "http504"])
def test_one_bad_wallet_never_blocks_the_queue(kind, conn, proxy, contracts, report):
    ws = wallets(1000, "poison-" + kind)
    want = set_random_values(contracts, ws, "poison-" + kind)
    bad = ws[437]
    seed(conn, ws, 0, 1, "1950-01-01")
    params = {"holder": bad}
    if kind == "http504":
        params["status"] = 504
        conn.execute("SET audius_indexer.rpc_max_retries = 1")
    what = "JSON-RPC -32000 'execution aborted (timeout = 5s)'" if kind == "evm_timeout" else "HTTP 504 (after 1 retry)"
    with report.case(f"one bad wallet ({kind})", f"{what} for every chunk holding wallet #437 of a 1,000-row queue; "
                     "CALL sweep(200) ticks", "999 refreshed within 10 ticks; that wallet backed off") as rec:
        proxy.fault("fail_holder", **params)
        ticks = 0
        for ticks in range(1, 11):
            conn.execute("CALL audius_indexer.sweep(200)")
            got = rows(conn, ws)
            if all(got[w][0] == want[w] for w in ws if w != bad):
                break
        got = rows(conn, ws)
        missing = [w for w in ws if w != bad and got[w][0] != want[w]]
        assert not missing, f"{len(missing)} wallets not refreshed after {ticks} ticks"
        assert got[bad][0] == 0, "the bad wallet cannot have been read"
        f = conn.execute("SELECT reason, attempts, next_attempt > now() FROM audius_indexer.wallet_failures "
                         "WHERE wallet = %s", (bad,)).fetchone()
        assert f is not None and f[2], f"not backed off: {f}"
        assert ("execution aborted" if kind == "evm_timeout" else "HTTP 504") in f[0], f[0]
        assert [w for w, _ in failures(conn)] == [bad], "only the bad wallet is blamed"
        rec.observed = f"{ticks} tick(s); 999/999 refreshed; {bad[:10]}… backed off: {f[0][:70]}"


def test_a_node_failing_everything_blames_no_wallet(conn, proxy, contracts, report):
    ws, before = seeded(conn, contracts, 30, "alldown")
    with report.case("node fails every request", "HTTP 504 on every request (rpc_max_retries 0)",
                     "ERROR 08P01 after one chunk + one probe; nothing written, nobody blamed") as rec:
        conn.execute("SET audius_indexer.rpc_max_retries = 0")
        proxy.reset()
        proxy.fault("http_status", status=504)
        e, _, _ = expect_error(conn, "SELECT * FROM audius_indexer.refresh_stale(50)", (), "08P01", ("HTTP 504",))
        n = proxy.count(aggregate3=True)
        assert n == 2, f"{n} aggregate3 requests (expected the chunk and one probe)"
        assert snapshot(conn) == before and failures(conn) == []
        rec.observed = f"{short(e, 80)}; {n} requests; rows unchanged; 0 failures recorded"


def test_contract_without_code_is_a_configuration_error(conn, contracts, report):
    ws, before = seeded(conn, contracts, 5, "nocode")
    nobody = "0x" + "00" * 18 + "dead"
    with report.case("no code at token_address", f"SET audius_indexer.token_address = '{nobody}'",
                     "55000 naming audius_indexer.token_address; nothing written, nobody blamed") as rec:
        conn.execute(f"SET audius_indexer.token_address = '{nobody}'")
        e, _, _ = expect_error(conn, "SELECT * FROM audius_indexer.refresh_stale(50)", (), "55000",
                               ("audius_indexer.token_address", nobody))
        e2, _, _ = expect_error(conn, "SELECT * FROM audius_indexer.refresh_wallets(%s)", (ws,), "55000")
        assert snapshot(conn) == before and failures(conn) == []
        rec.observed = short(e, 120)


def test_doctor_reports_rows_above_the_chain_head(conn, anvil, report):
    ws = wallets(3, "doctor-ahead")
    future = anvil.block_number() + 5000
    seed(conn, ws, SENTINEL, future)
    with report.case("doctor: rows above the head", "3 rows stamped head + 5000",
                     "'rows stamped above the chain head' not ok, count 3") as rec:
        ok, detail = conn.execute("SELECT ok, detail FROM audius_indexer.doctor() "
                                  "WHERE check_name = 'rows stamped above the chain head'").fetchone()
        assert ok is False and detail.startswith("3 row(s)") and str(future) in detail, detail
        conn.execute("DELETE FROM eth_wallet_balances WHERE wallet = ANY(%s)", (ws,))
        ok2, _ = conn.execute("SELECT ok, detail FROM audius_indexer.doctor() "
                              "WHERE check_name = 'rows stamped above the chain head'").fetchone()
        assert ok2 is True
        rec.observed = detail[:110]
