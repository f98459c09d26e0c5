"""Bad SQL input → a result or a clear SQLSTATE error, never a crash (suite table "Bad SQL
input" in docs/reliability.md).

Table-driven: case id → SQL → expected rows or SQLSTATE. All cases run on ONE backend, so a case
that crashed or wedged it would show in every later case and in the liveness check; every refused
input must also be refused before any RPC is made. Every accepted input is checked for its exact
rows (balances = independent eth_calls per wallet, `Contracts.independent_total`) and its exact
number of requests at the recording proxy. The liveness check runs every refused input again
itself, so it means the same on its own as after the suite.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import psycopg
import pytest

from harness.chain import to_checksum, wallet_address
from harness.reliability import error_text, expect_error, short
from harness.suites import lit, report_fixture

pytestmark = pytest.mark.timeout(120)

F = "audius_indexer.multicall_total_audio_balances"
RW = "audius_indexer.refresh_wallets"
RS = "audius_indexer.refresh_stale"
UP = "audius_indexer.upsert_wallet_balances"

W = [wallet_address(i, "badinput-inputs") for i in range(6)]
HEX40 = "ab" * 20
BIG_N = 100_000
BIG = [wallet_address(i, "badinput-100k") for i in range(BIG_N)]


@dataclass
class Case:
    id: str
    what: str                      # the fault / input, for the table
    sql: str
    args: tuple = ()
    sqlstate: str | None = None    # expected error; None = expected success
    contains: tuple = ()           # strings the error must contain
    check: Callable | None = None  # rows -> None (asserts) for successes
    expect: str = ""               # expected, for the table
    rpc: int = 0                   # HTTP requests the proxy must see
    setup: tuple = ()              # session SETs before the case (RESET ALL after)
    max_s: float | None = None
    # refresh_wallets cases: their rows are deleted first; afterwards `written` have the chain's
    # totals (independent eth_calls) and `absent` have no row
    written: tuple = ()
    absent: tuple = ()


# wallet -> expected total, from three independent eth_calls per wallet (filled by `session`)
EXPECTED: dict[str, int] = {}


def rows_eq(expected):
    def check(rows):
        assert rows == expected, f"rows {rows!r} != {expected!r}"
    return check


def balances_eq(expected):
    """rows (wallet, balance) == the wallets in this order, each with its independent total."""
    def check(rows):
        got = [(r[0], int(r[1])) for r in rows]
        want = [(w, EXPECTED[w]) for w in expected]
        assert got == want, f"rows {got} != {want}"
    return check


def _brief(s: str) -> str:
    return repr(s if len(s) <= 24 else s[:20] + "…")


def err(id, what, sql, sqlstate, *contains, args=(), rpc=0, expect=None):
    return Case(id, what, sql, args, sqlstate, tuple(contains),
                expect=expect or f"ERROR {sqlstate}" + (f" naming {', '.join(_brief(c) for c in contains)}" if contains else ""),
                rpc=rpc)


def ok(id, what, sql, check, expect, *, rpc, args=(), setup=(), max_s=None, written=(), absent=()):
    return Case(id, what, sql, args, None, (), check, expect, rpc, setup, max_s, tuple(written), tuple(absent))


def fn_one(value: str) -> str:
    return f"SELECT wallet, balance FROM {F}(ARRAY[{value}]::text[])"


# The mismatched upsert of case `up_blocks_short` (also run on its own by the companion test).
UP_BLOCKS_SHORT_SQL = f"SELECT * FROM {UP}(ARRAY[{lit(W[4])}, {lit(W[5])}], ARRAY[7,8]::numeric[], ARRAY[1]::bigint[])"


# Wallets of the 100,000 with values on chain: first and last, both sides of every boundary of
# the first two chunks (779 holders per call) and one in the middle; all others hold nothing.
BIG_SET = (0, 778, 779, 1557, 1558, 50_000, BIG_N - 1)
BIG_PER_CALL = 779


def check_100k(rows):
    assert len(rows) == BIG_N
    assert [r[0] for r in rows] == BIG, "one row per wallet, in input order"
    assert len({r[2] for r in rows}) == 1, "one chain head for the whole call (anvil is not mining)"
    wrong = [(i, r[0], int(r[1])) for i, r in enumerate(rows) if int(r[1]) != EXPECTED.get(r[0], 0)]
    assert not wrong, f"{len(wrong)} wrong balances, first {wrong[:5]}"


mixed = W[1][:2] + "".join(ch.upper() if i % 2 else ch for i, ch in enumerate(W[1][2:]))
assert mixed not in (W[1], to_checksum(W[1])) and mixed.lower() == W[1]

CASES: list[Case] = [
    # ---- multicall_total_audio_balances: malformed wallets -----------------------------------
    err("bad_hex", "'0x' + 38 hex + 'zz'", fn_one(lit("0x" + "ab" * 19 + "zz")), "22023",
        "position 1", "0x" + "ab" * 19 + "zz", "non-hex character 'z'"),
    err("bad_hex_at_3", "valid, valid, '0xgg…' (position 3)",
        f"SELECT wallet FROM {F}(ARRAY[{lit(W[0])}, {lit(W[1])}, {lit('0x' + 'gg' * 20)}])", "22023",
        "position 3", "0x" + "gg" * 20),
    err("short_39", "0x + 39 hex digits", fn_one(lit("0x" + "a" * 39)), "22023", "39 hex digits"),
    err("long_41", "0x + 41 hex digits", fn_one(lit("0x" + "a" * 41)), "22023", "41 hex digits"),
    err("long_64", "0x + 64 hex digits (a tx hash)", fn_one(lit("0x" + "a" * 64)), "22023", "64 hex digits"),
    err("empty_string", "''", fn_one("''"), "22023", "position 1", "must start with 0x"),
    err("prefix_only", "'0x'", fn_one("'0x'"), "22023", '("0x") is not a valid address: it has 0 hex digits after 0x'),
    err("no_prefix", "40 hex digits without 0x", fn_one(lit(HEX40)), "22023", "must start with 0x"),
    err("letter_O_prefix", "'Ox' + 40 hex (letter O)", fn_one(lit("Ox" + HEX40)), "22023", "must start with 0x"),
    ok("upper_0X_prefix", "'0X' + 40 hex", fn_one(lit("0X" + W[0][2:])), balances_eq([W[0]]),
       "accepted, normalised to lowercase 0x…; its balance; 1 request", rpc=1),
    err("leading_space", "' 0x…'", fn_one(lit(" " + W[0])), "22023", "must start with 0x"),
    err("trailing_space", "'0x… '", fn_one(lit(W[0] + " ")), "22023", "non-hex character ' '"),
    err("trailing_newline", "'0x…\\n'", fn_one("E'" + W[0] + "\\n'"), "22023", "position 1"),
    err("inner_space", "'0xabcd ef…'", fn_one(lit(W[0][:10] + " " + W[0][11:])), "22023", "non-hex"),
    err("tab_prefix", "'\\t0x…'", fn_one("E'\\t" + W[0] + "'"), "22023", "must start with 0x"),
    err("null_element", "ARRAY[valid, NULL]", f"SELECT wallet FROM {F}(ARRAY[{lit(W[0])}, NULL])", "22023",
        "position 2", "NULL"),
    ok("null_array", "NULL::text[]", f"SELECT wallet FROM {F}(NULL::text[])", rows_eq([]),
       "no rows, no RPC", rpc=0),
    ok("empty_array", "ARRAY[]::text[]", f"SELECT wallet FROM {F}(ARRAY[]::text[])", rows_eq([]),
       "no rows, no RPC", rpc=0),
    ok("duplicates", "same wallet 4× (lower, UPPER, 0X, checksummed)",
       f"SELECT wallet, balance FROM {F}(ARRAY[{lit(W[2])}, {lit('0x' + W[2][2:].upper())}, "
       f"{lit('0X' + W[2][2:])}, {lit(to_checksum(W[2]))}])",
       balances_eq([W[2]]), "one row (its balance), one aggregate3 of 1 holder", rpc=1),
    ok("mixed_case_bad_checksum", "mixed case that is not EIP-55", fn_one(lit(mixed)), balances_eq([W[1]]),
       "accepted (EIP-55 not enforced, by design), lowercase; its balance; 1 request", rpc=1),
    ok("varchar_array", "ARRAY[…]::varchar[] (implicit cast)",
       f"SELECT wallet, balance FROM {F}(ARRAY[{lit(W[3])}]::varchar[])", balances_eq([W[3]]),
       "accepted; its balance; 1 request", rpc=1),
    # ---- junk through casts ---------------------------------------------------------------------
    err("cast_open_brace", "'{'::text[]", f"SELECT * FROM {F}('{{'::text[])", "22P02", "malformed array literal"),
    err("cast_not_an_array", "'not an array'::text[]", f"SELECT * FROM {F}('not an array'::text[])", "22P02",
        "malformed array literal"),
    err("cast_trailing_comma", "'{0x…,}'::text[]", f"SELECT * FROM {F}('{{{W[0]},}}'::text[])", "22P02",
        "malformed array literal"),
    err("cast_unbalanced_quote", "'{\"0x…}'::text[]", f"SELECT * FROM {F}('{{\"{W[0]}}}'::text[])", "22P02",
        "malformed array literal"),
    err("cast_int_array", "ARRAY[1,2]::text[]", f"SELECT * FROM {F}(ARRAY[1,2]::text[])", "22023",
        "position 1", '"1"'),
    err("cast_scalar_text", "a plain text argument", f"SELECT * FROM {F}({lit(W[0])}::text)", "42883",
        "does not exist"),
    ok("multi_dimensional", "2×2 text[][] with a duplicate",
       f"SELECT wallet, balance FROM {F}(ARRAY[ARRAY[{lit(W[0])},{lit(W[1])}],ARRAY[{lit(W[2])},{lit(W[0])}]])",
       balances_eq([W[0], W[1], W[2]]), "flattened in storage order, de-duplicated (3 rows, their balances), "
       "1 request", rpc=1),
    ok("lower_bound_5", "'[5:6]={…}'::text[]", f"SELECT wallet, balance FROM {F}('[5:6]={{{W[0]},{W[1]}}}'::text[])",
       balances_eq([W[0], W[1]]), "2 rows, their balances, 1 request", rpc=1),
    err("bad_at_lower_bound_5", "'[5:6]={valid,junk}': position is 1-based in the array's elements",
        f"SELECT * FROM {F}('[5:6]={{{W[0]},junk}}'::text[])", "22023", "position 2", '"junk"'),
    # ---- very long strings, unicode -------------------------------------------------------------
    err("very_long_1MB", "one 1 MB string", fn_one("repeat('a', 1000000)"), "22023", "…",
        expect="ERROR 22023, value truncated in the message"),
    err("unicode_e_acute", "'0x' + 40 × 'é'", fn_one(lit("0x" + "é" * 40)), "22023", "non-hex character 'é'"),
    err("unicode_fullwidth", "'0x' + 40 fullwidth '０'", fn_one(lit("0x" + "０" * 40)), "22023", "non-hex"),
    err("unicode_arabic_digits", "'0x' + 40 Arabic-Indic digits", fn_one(lit("0x" + "٣" * 40)), "22023", "non-hex"),
    err("unicode_zero_width", "valid + U+200B", fn_one(lit(W[0] + "\u200b")), "22023", "non-hex"),
    err("unicode_emoji", "'0x🦄…'", fn_one(lit("0x🦄" + "a" * 39)), "22023", "non-hex character '🦄'"),
    # ---- 100,000 wallets ------------------------------------------------------------------------
    ok("wallets_100k", "100,000 distinct wallets (chunk 2000, byte budget 1 MB → 779 holders/call)",
       f"SELECT wallet, balance, block_number FROM {F}(%s::text[])", check_100k,
       "100,000 rows in input order, their balances, one block; 129 requests (128 × 779 holders + 288)",
       args=(BIG,), rpc=-(-BIG_N // BIG_PER_CALL),
       setup=("SET audius_indexer.multicall_chunk_size = 2000", "SET audius_indexer.rpc_timeout_ms = 60000"),
       max_s=30),
    # ---- refresh_stale(batch) -------------------------------------------------------------------
    err("batch_zero", "refresh_stale(0)", f"SELECT * FROM {RS}(0)", "22023", "batch must be between 1 and 100000"),
    err("batch_negative", "refresh_stale(-1)", f"SELECT * FROM {RS}(-1)", "22023", "got -1"),
    err("batch_int_min", "refresh_stale(-2147483648)", f"SELECT * FROM {RS}(-2147483648)", "22023", "batch"),
    err("batch_over_max", "refresh_stale(100001)", f"SELECT * FROM {RS}(100001)", "22023", "got 100001"),
    err("batch_int_max", "refresh_stale(2147483647)", f"SELECT * FROM {RS}(2147483647)", "22023", "got 2147483647"),
    err("batch_bigint", "refresh_stale(2147483648) (a bigint literal)", f"SELECT * FROM {RS}(2147483648)",
        "42883", "does not exist"),
    err("batch_bigint_cast", "refresh_stale(2147483648::bigint::int)", f"SELECT * FROM {RS}(2147483648::bigint::int)",
        "22003", "out of range"),
    err("batch_text", "refresh_stale('abc')", f"SELECT * FROM {RS}('abc')", "22P02", "invalid input syntax"),
    ok("batch_null", "refresh_stale(NULL)", f"SELECT * FROM {RS}(NULL)", rows_eq([]),
       "no rows (STRICT), no RPC", rpc=0),
    # ---- refresh_wallets(wallets, min_blocks) ---------------------------------------------------
    err("rw_bad_wallet", "refresh_wallets(ARRAY[valid, 'junk'])", f"SELECT * FROM {RW}(ARRAY[{lit(W[0])}, 'junk'])",
        "22023", "position 2", '"junk"'),
    err("rw_null_element", "refresh_wallets(ARRAY[NULL, valid])", f"SELECT * FROM {RW}(ARRAY[NULL, {lit(W[0])}])",
        "22023", "position 1", "NULL"),
    ok("rw_null_array", "refresh_wallets(NULL)", f"SELECT * FROM {RW}(NULL)", rows_eq([(0, 0, 0, 0)]),
       "(0,0,0,0), no RPC", rpc=0),
    ok("rw_empty_arrays", "refresh_wallets('{}', '{}')", f"SELECT * FROM {RW}('{{}}'::text[], '{{}}'::bigint[])",
       rows_eq([(0, 0, 0, 0)]), "(0,0,0,0), no RPC", rpc=0),
    ok("rw_min_blocks_null_entries", "min_blocks ARRAY[NULL, NULL]",
       f"SELECT * FROM {RW}(ARRAY[{lit(W[4])}, {lit(W[5])}], ARRAY[NULL, NULL]::bigint[])",
       rows_eq([(2, 2, 0, 0)]), "(2,2,0,0): NULL = no minimum; both rows = chain; 1 request", rpc=1,
       written=(W[4], W[5])),
    ok("rw_min_blocks_some_null", "min_blocks ARRAY[NULL, 1]",
       f"SELECT * FROM {RW}(ARRAY[{lit(W[4])}, {lit(W[5])}], ARRAY[NULL, 1]::bigint[])",
       rows_eq([(2, 2, 0, 0)]), "(2,2,0,0); both rows = chain; 1 request", rpc=1, written=(W[4], W[5])),
    ok("rw_min_blocks_negative", "min_blocks ARRAY[-5]", f"SELECT * FROM {RW}(ARRAY[{lit(W[4])}], ARRAY[-5]::bigint[])",
       rows_eq([(1, 1, 0, 0)]), "(1,1,0,0): any read is newer; row = chain; 1 request", rpc=1, written=(W[4],)),
    ok("rw_min_blocks_future", "min_blocks ARRAY[9223372036854775807]",
       f"SELECT * FROM {RW}(ARRAY[{lit(W[4])}], ARRAY[9223372036854775807]::bigint[])",
       rows_eq([(1, 0, 0, 1)]), "(1,0,0,1): read older than the event, skipped, no row; 1 request", rpc=1,
       absent=(W[4],)),
    err("rw_min_blocks_short", "2 wallets, 1 min_block", f"SELECT * FROM {RW}(ARRAY[{lit(W[4])}, {lit(W[5])}], ARRAY[1]::bigint[])",
        "22023", "min_blocks has 1 entries but wallets has 2"),
    err("rw_min_blocks_long", "1 wallet, 2 min_blocks", f"SELECT * FROM {RW}(ARRAY[{lit(W[4])}], ARRAY[1,2]::bigint[])",
        "22023", "min_blocks has 2 entries but wallets has 1"),
    err("rw_min_blocks_empty", "2 wallets, '{}' min_blocks", f"SELECT * FROM {RW}(ARRAY[{lit(W[4])}, {lit(W[5])}], '{{}}'::bigint[])",
        "22023", "min_blocks has 0 entries"),
    err("rw_min_blocks_text", "min_blocks '{a}'", f"SELECT * FROM {RW}(ARRAY[{lit(W[4])}], '{{a}}'::bigint[])", "22P02",
        "invalid input syntax for type bigint"),
    ok("rw_min_blocks_2d", "2 wallets, min_blocks ARRAY[[1],[2]]",
       f"SELECT * FROM {RW}(ARRAY[{lit(W[4])}, {lit(W[5])}], ARRAY[ARRAY[1],ARRAY[2]]::bigint[])",
       rows_eq([(2, 2, 0, 0)]), "(2,2,0,0): flattened; both rows = chain; 1 request", rpc=1, written=(W[4], W[5])),
    # ---- upsert_wallet_balances(wallets, balances, blocks) -------------------------------------
    err("up_balances_short", "2 wallets, 1 balance, 2 blocks",
        f"SELECT * FROM {UP}(ARRAY[{lit(W[4])}, {lit(W[5])}], ARRAY[1]::numeric[], ARRAY[1,2]::bigint[])",
        "22023", "must have the same length (got 2, 1, 2)", expect="ERROR 22023 (array lengths differ); nothing written"),
    err("up_wallets_short", "1 wallet, 2 balances, 2 blocks",
        f"SELECT * FROM {UP}(ARRAY[{lit(W[4])}], ARRAY[1,2]::numeric[], ARRAY[1,2]::bigint[])",
        "22023", "must have the same length (got 1, 2, 2)", expect="ERROR 22023 (array lengths differ); nothing written"),
    err("up_blocks_short", "2 wallets, 2 balances, 1 block", UP_BLOCKS_SHORT_SQL,
        "22023", expect="ERROR 22023 (array lengths differ); nothing written"),
    ok("up_all_null", "upsert(NULL, NULL, NULL)", f"SELECT * FROM {UP}(NULL, NULL, NULL)", rows_eq([]),
       "no rows written, no RPC", rpc=0),
    err("up_null_balances", "upsert(ARRAY[w], NULL, ARRAY[1])",
        f"SELECT * FROM {UP}(ARRAY[{lit(W[4])}], NULL, ARRAY[1]::bigint[])", "22023", "must have the same length"),
    err("up_null_wallet_element", "upsert(ARRAY[NULL], ARRAY[1], ARRAY[1])",
        f"SELECT * FROM {UP}(ARRAY[NULL]::text[], ARRAY[1]::numeric[], ARRAY[1]::bigint[])", "22023",
        "wallet at position 1 (NULL)"),
    err("up_wallet_not_normal_form", "upsert of a mixed-case wallet (keys are lowercase)",
        f"SELECT * FROM {UP}(ARRAY['0xABCDEF0123456789abcdef0123456789ABCDEF01'], ARRAY[1]::numeric[], ARRAY[1]::bigint[])",
        "22023", "wallet at position 1"),
    *[err(f"up_wallet_{tag}", f"upsert of a wallet {what}",
          f"SELECT * FROM {UP}(ARRAY[{lit(W[4])}, {lit(bad)}], ARRAY[1, 2]::numeric[], ARRAY[1, 2]::bigint[])",
          "22023", "wallet at position 2") for tag, what, bad in [
        ("39_digits", "with 39 hex digits", "0x" + "a" * 39),
        ("41_digits", "with 41 hex digits", "0x" + "a" * 41),
        ("no_0x", "without 0x", "00" + "a" * 40),
        ("0X", "with 0X", "0X" + "a" * 40),
        ("non_hex", "with a non-hex digit", "0x" + "a" * 39 + "g"),
        ("non_ascii", "with a non-ASCII character", "0x" + "a" * 39 + "é"),
        ("space", "with a trailing space", "0x" + "a" * 40 + " ")]],
    err("up_balance_not_numeric", "balances '{abc}'",
        f"SELECT * FROM {UP}(ARRAY[{lit(W[4])}], '{{abc}}'::numeric[], ARRAY[1]::bigint[])", "22P02", "numeric"),
]


report = report_fixture("bad_input", "Bad SQL input")


class Session:
    """The one backend every case runs on (reconnects only if a case killed it; that is a failure)."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.conn = cluster.connect("audius")
        self.pid = self.conn.info.backend_pid
        self.backend_start, self.postmaster_start = self.conn.execute(
            "SELECT backend_start, pg_postmaster_start_time() FROM pg_stat_activity "
            "WHERE pid = pg_backend_pid()").fetchone()
        self.lost: list[str] = []
        # One write-path read first: the backend then knows the chain head, so no case pays the
        # eth_blockNumber of the block-ahead check (needed once the session chain is > 100 blocks
        # high, e.g. after test_follow) and the per-case request counts do not depend on test order.
        self.conn.execute(f"SELECT * FROM {RW}(ARRAY[{lit(W[0])}])")
        self.conn.execute("DELETE FROM eth_wallet_balances WHERE wallet = %s", (W[0],))

    def get(self, case_id: str):
        if self.conn.closed or self.conn.broken:
            self.lost.append(case_id)
            self.conn = self.cluster.connect("audius")
        return self.conn


@pytest.fixture(scope="module")
def session(cluster, contracts, report):
    # distinct non-zero values for every wallet of the cases, and some of the 100,000
    n = len(W)
    contracts.set_values(W, [10**18 * (i + 1) + 11 for i in range(n)], [10**17 * (i + 2) + 7 for i in range(n)],
                         [10**16 * (i + 3) + 3 for i in range(n)])
    big = [BIG[i] for i in BIG_SET]
    contracts.set_values(big, [5 * 10**18 + i for i in BIG_SET], [i + 1 for i in BIG_SET], [2] * len(big))
    EXPECTED.clear()
    for w in W + big:
        parts = contracts.independent_total(w)
        assert None not in parts and 0 not in parts, (w, parts)
        EXPECTED[w] = sum(parts)
    # the other 99,993 hold nothing: a few of them read independently (no value was ever set)
    for i in (1, 777, 780, 99_998):
        assert contracts.independent_total(BIG[i]) == (0, 0, 0)
    s = Session(cluster)
    try:
        yield s
    finally:
        try:
            c = cluster.connect("audius")
            c.execute("DELETE FROM eth_wallet_balances WHERE wallet = ANY(%s)", (W,))
            c.close()
        except psycopg.Error:
            pass
        s.conn.close()


def stored(conn, ws) -> dict[str, int]:
    return {w: int(b) for w, b in conn.execute(
        "SELECT wallet, balance FROM eth_wallet_balances WHERE wallet = ANY(%s)", (list(ws),)).fetchall()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_input(case: Case, session, proxy, report):
    assert len({c.id for c in CASES}) == len(CASES)
    proxy.clear_faults()
    proxy.reset()
    conn = session.get(case.id)
    fault = case.what
    with report.case(case.id, fault, case.expect) as rec:
        try:
            for s in case.setup:
                conn.execute(s)
            if case.written or case.absent:
                conn.execute("DELETE FROM eth_wallet_balances WHERE wallet = ANY(%s)",
                             (list(case.written + case.absent),))
            t0 = time.monotonic()
            if case.sqlstate:
                e, text, _ = expect_error(conn, case.sql, case.args, case.sqlstate, case.contains)
                if case.id == "very_long_1MB":
                    assert len(e.diag.message_primary or "") < 400, "the message must not echo 1 MB"
                rec.observed = short(e)
            else:
                try:
                    rows = conn.execute(case.sql, case.args).fetchall()
                except psycopg.Error as e:
                    raise AssertionError(f"expected success, got {e.sqlstate}: {error_text(e)}") from None
                dt = time.monotonic() - t0
                case.check(rows)
                if case.max_s is not None:
                    assert dt < case.max_s, f"took {dt:.1f}s"
                if case.written or case.absent:
                    assert stored(conn, case.written + case.absent) == {w: EXPECTED[w] for w in case.written}
                if case.id == "wallets_100k":
                    # 128 full calls of 779 holders and the 288 left (3 sub-calls each + getBlockNumber)
                    per_call = sorted((r.n_calls for r in proxy.select(aggregate3=True)), reverse=True)
                    assert per_call == [3 * BIG_PER_CALL + 1] * (BIG_N // BIG_PER_CALL) + \
                        [3 * (BIG_N % BIG_PER_CALL) + 1], per_call[-3:]
                rec.observed = (f"{len(rows)} rows" if len(rows) != 1 else f"{rows[0]!r}"[:80]) + \
                    (f" in {dt:.1f}s, {proxy.count(aggregate3=True)} aggregate3 calls" if case.id == "wallets_100k" else "")
            assert proxy.http_requests == case.rpc, \
                f"{proxy.http_requests} HTTP requests to the node, expected {case.rpc}"
        finally:
            if not conn.closed:
                conn.execute("RESET ALL")


def test_up_blocks_short_wrote_nothing(session, report):
    """Companion of `up_blocks_short`, on its own (no dependence on test order): the mismatched
    upsert fails and leaves nothing in eth_wallet_balances."""
    conn = session.get("up_blocks_short_wrote_nothing")
    with report.case("up_blocks_short (rows)", "rows left by 2 wallets / 2 balances / 1 block",
                     "no row with balance 7 or 8") as rec:
        conn.execute("DELETE FROM eth_wallet_balances WHERE wallet = ANY(%s)", (W[4:],))
        expect_error(conn, UP_BLOCKS_SHORT_SQL, None, "22023", "must have the same length")
        rows = conn.execute("SELECT wallet, balance::text, blocknumber FROM eth_wallet_balances "
                            "WHERE wallet = ANY(%s) AND balance IN (7, 8) ORDER BY wallet", (W[4:],)).fetchall()
        rec.observed = f"{len(rows)} rows written"
        assert rows == [], f"mismatched arrays wrote {rows}"


REFUSED = [c for c in CASES if c.sqlstate]


def test_backend_survives_every_refused_input(session, cluster, proxy, report):
    """The one backend survives every refused input: they all run again here, on it, back to back
    (so this holds run alone as after the suite); then it is still the same process (same pid and
    backend_start in pg_stat_activity, the postmaster not restarted since the module began),
    nothing was sent to the node, and the server log shows no crash."""
    with report.case("after_suite", f"all {len(REFUSED)} refused inputs again, back to back, on the one backend",
                     "same backend alive (pid, backend_start, postmaster start unchanged), 0 requests, "
                     "log clean") as rec:
        c = session.get("after_suite")
        proxy.reset()
        for case in REFUSED:
            expect_error(c, case.sql, case.args, case.sqlstate, case.contains)
        assert proxy.http_requests == 0
        assert not session.lost, f"the backend was lost at cases {session.lost}"
        c = session.conn
        row = c.execute("SELECT pg_backend_pid(), backend_start, pg_postmaster_start_time() FROM pg_stat_activity "
                        "WHERE pid = pg_backend_pid()").fetchone()
        assert row == (session.pid, session.backend_start, session.postmaster_start), row
        cluster.assert_log_clean()
        rec.observed = f"backend {session.pid} alive after {len(REFUSED)} refused inputs"
