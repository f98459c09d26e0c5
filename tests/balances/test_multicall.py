"""Integration tests of audius_indexer.multicall_total_audio_balances(text[]) against a real anvil
with the canonical Multicall3 and mock Audius contracts, through a recording/fault-injecting proxy.

The oracle is independent of the extension: three plain eth_calls per wallet (harness/chain.py)."""
from __future__ import annotations

import random
import re
import threading
import time

import psycopg
import pytest

from conftest import SECRET_PATH, SECRETS, wait_until
from harness.chain import (MODE_BARE_REVERT, MODE_CUSTOM_ERROR, MODE_EMPTY, MODE_SHORT,
                           MULTICALL3_ADDRESS, SEL_BALANCE_OF, SEL_GET_BLOCK_NUMBER,
                           SEL_TOTAL_DELEGATOR_STAKE, SEL_TOTAL_STAKED_FOR, enc_address, selector,
                           to_checksum, wallet_address)
from harness.pg import free_port

pytestmark = pytest.mark.timeout(90)

FN = "audius_indexer.multicall_total_audio_balances"
COLS = "wallet, balance, token_balance, staked, delegated, block_number, error"
SUBCALLS = ("balanceOf", "totalStakedFor", "getTotalDelegatorStake")
REASONS = ("MockAudioToken: forced revert", "MockStaking: forced revert", "MockDelegateManager: forced revert")
U256_MAX = (1 << 256) - 1


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def balances(conn, wallets):
    return conn.execute(f"SELECT {COLS} FROM {FN}(%s::text[])", (wallets,)).fetchall()


def _int(v):
    return None if v is None else int(v)


def error_text(e: psycopg.Error) -> str:
    d = e.diag
    return "\n".join(x for x in (d.message_primary, d.message_detail, d.message_hint, d.context,
                                 str(e)) if x)


def expect_error(conn, wallets, sqlstate: str, *, max_s: float | None = None,
                 min_s: float | None = None) -> tuple[psycopg.Error, str, float]:
    """Runs the function expecting SQLSTATE `sqlstate`; checks no secret of the URL leaks and that
    the connection is still usable afterwards. Returns (error, all its text, seconds taken)."""
    t0 = time.monotonic()
    with pytest.raises(psycopg.Error) as ei:
        balances(conn, wallets)
    dt = time.monotonic() - t0
    e = ei.value
    text = error_text(e)
    assert e.sqlstate == sqlstate, f"expected SQLSTATE {sqlstate}, got {e.sqlstate}: {text}"
    for s in SECRETS:
        assert s not in text, f"error message leaks {s!r} from the RPC URL: {text}"
    if max_s is not None:
        assert dt < max_s, f"took {dt:.2f}s, expected < {max_s}s"
    if min_s is not None:
        assert dt >= min_s, f"took only {dt:.2f}s, expected >= {min_s}s"
    assert conn.execute("SELECT 1").fetchone() == (1,)
    return e, text, dt


def expect_rpc_error(conn, wallets, sqlstate: str, hostport: str, **kw) -> str:
    _, text, _ = expect_error(conn, wallets, sqlstate, **kw)
    assert hostport in text, f"error message does not name {hostport}: {text}"
    return text


def single_attempt(conn, timeout_ms: int = 1500) -> None:
    conn.execute("SET audius_indexer.rpc_max_retries = 0")
    conn.execute(f"SET audius_indexer.rpc_timeout_ms = {timeout_ms}")


def proxy_hostport(proxy) -> str:
    return f"127.0.0.1:{proxy.port}"


def few(tag: str, n: int = 3) -> list[str]:
    return [wallet_address(i, tag) for i in range(n)]


def run_in_thread(fn):
    out = {}

    def target():
        t0 = time.monotonic()
        try:
            out["result"] = fn()
        except BaseException as e:  # noqa: BLE001
            out["error"] = e
        out["end"] = time.monotonic()
        out["took"] = out["end"] - t0
    th = threading.Thread(target=target, daemon=True)
    th.start()
    return th, out


# --------------------------------------------------------------------------------------------
# 1. correctness at scale
# --------------------------------------------------------------------------------------------
def test_2000_wallets_match_independent_calls(db, anvil, contracts, proxy):
    rng = random.Random(2000)
    n = 2000
    ws = [wallet_address(i, "mc2000") for i in range(n)]
    tok, stk, dlg = [0] * n, [0] * n, [0] * n
    reverts = {"token": [], "staking": [], "delegate": []}
    for i in range(n):
        r = i % 20
        if r < 10 or r >= 15:
            tok[i], stk[i], dlg[i] = (rng.randrange(1, 10**27) for _ in range(3))
        elif r == 12:
            tok[i] = rng.randrange(1, 10**27)
        elif r == 13:
            stk[i] = rng.randrange(1, 10**27)
        elif r == 14:
            dlg[i] = rng.randrange(1, 10**27)
        # r in (10, 11): nothing set at all -> zeros
        if r in (15, 18, 19):
            reverts["token"].append(ws[i])
        if r in (16, 19):
            reverts["staking"].append(ws[i])
        if r in (17, 18, 19):
            reverts["delegate"].append(ws[i])
    big = 5
    tok[big], stk[big], dlg[big] = U256_MAX, (1 << 200) + 12345, 1 << 255  # sum > 2^256
    maxed = 1  # all three at 2^256-1
    tok[maxed] = stk[maxed] = dlg[maxed] = U256_MAX
    contracts.set_values(ws, tok, stk, dlg)
    for which, lst in reverts.items():
        contracts.set_revert(lst, which)

    # feed a third of them checksummed: output is lowercase either way
    given = [to_checksum(w) if i % 3 == 0 else w for i, w in enumerate(ws)]
    proxy.reset()
    rows = balances(db, given)
    head = anvil.block_number()

    assert [r[0] for r in rows] == ws
    oracle = {}
    for w in ws:
        oracle[w] = contracts.independent_total(w)
    assert {r[5] for r in rows} == {head}, "block_number must be the chain head the chunk was read at"

    n_reverting = 0
    for w, bal, t, s, d, _, err in rows:
        want = oracle[w]
        assert (_int(t), _int(s), _int(d)) == want, f"{w}: components {t, s, d} != independent {want}"
        if None not in want:
            assert _int(bal) == sum(want), f"{w}: balance {bal} != {sum(want)}"
            assert err is None, f"{w}: unexpected error {err!r}"
        else:
            n_reverting += 1
            assert bal is None, f"{w}: balance must be NULL when a sub-call failed, got {bal}"
            assert err, f"{w}: error must say which sub-call failed"
            for name, reason, v in zip(SUBCALLS, REASONS, want):
                if v is None:
                    assert name in err and reason in err, f"{w}: error {err!r} lacks {name} / {reason!r}"
                else:
                    assert name not in err, f"{w}: error {err!r} names {name}, which succeeded"
    assert n_reverting == 500
    by_wallet = {r[0]: r for r in rows}
    assert _int(by_wallet[ws[big]][1]) == U256_MAX + (1 << 200) + 12345 + (1 << 255)
    assert _int(by_wallet[ws[maxed]][1]) == 3 * U256_MAX
    assert _int(by_wallet[ws[10]][1]) == 0 and by_wallet[ws[10]][6] is None

    # exactly 10 aggregate3 calls of 601 sub-calls each, no per-wallet fallback calls
    aggs = proxy.select(method="eth_call", aggregate3=True)
    assert len(aggs) == 10, f"{len(aggs)} aggregate3 calls"
    assert proxy.count(method="eth_call", aggregate3=False) == 0
    seen = []
    expect_target = {SEL_BALANCE_OF: contracts.token, SEL_TOTAL_STAKED_FOR: contracts.staking,
                     SEL_TOTAL_DELEGATOR_STAKE: contracts.delegate,
                     SEL_GET_BLOCK_NUMBER: MULTICALL3_ADDRESS.lower()}
    for rec in aggs:
        assert rec.to == MULTICALL3_ADDRESS.lower()
        assert rec.path == SECRET_PATH, "the RPC URL's path and query must be sent to the node"
        assert rec.n_calls == 601
        sels = [c[2] for c in rec.calls]
        assert sels.count(SEL_GET_BLOCK_NUMBER) == 1
        for sel in (SEL_BALANCE_OF, SEL_TOTAL_STAKED_FOR, SEL_TOTAL_DELEGATOR_STAKE):
            assert sels.count(sel) == 200
        for target, _allow, sel, args in rec.calls:
            assert target == expect_target[sel], f"{sel} sent to {target}"
            if sel == SEL_BALANCE_OF:
                seen.append("0x" + args[24:64])
    assert len(seen) == n and sorted(seen) == sorted(ws), "every wallet read exactly once"


def test_chunk_size_setting(db, contracts, proxy):
    ws = few("chunk", 20)
    contracts.set_values(ws, list(range(1, 21)), [0] * 20, [5] * 20)
    db.execute("SET audius_indexer.multicall_chunk_size = 7")
    rows = balances(db, ws)
    assert [_int(r[1]) for r in rows] == [i + 5 for i in range(1, 21)]
    # three chunks, pipelined (rpc_concurrency): they reach the node in any order
    assert sorted(r.n_calls for r in proxy.select(method="eth_call", aggregate3=True)) == [19, 22, 22]


def test_out_of_gas_chunk_is_split(db, contracts, proxy):
    """A node refusing a big aggregate3 with 'out of gas' gets smaller ones; the answer is complete.
    (Design of src/eth/balances.rs read_all, not in the issue's acceptance list.)"""
    ws = few("oog", 200)
    contracts.set_values(ws, [i + 1 for i in range(200)], [7] * 200, [0] * 200)
    single_attempt(db)
    proxy.fault("out_of_gas_above", holders=60)
    rows = balances(db, ws)
    assert [r[0] for r in rows] == ws
    assert [_int(r[1]) for r in rows] == [i + 8 for i in range(200)]
    ok = [r for r in proxy.select(method="eth_call", aggregate3=True) if r.fault is None]
    assert all(r.n_calls <= 3 * 60 + 1 for r in ok)
    assert sum((r.n_calls - 1) // 3 for r in ok) == 200, "each wallet read exactly once"


def test_block_number_follows_chain(db, anvil):
    ws = few("blk", 2)
    b1 = balances(db, ws)[0][5]
    anvil.mine(3)
    b2 = balances(db, ws)[0][5]
    assert b1 == b2 - 3 and b2 == anvil.block_number()


def test_odd_return_data_is_a_row_error(db, contracts):
    """Sub-calls that succeed with short/empty data, or revert without Error(string), fail that row
    only: NULL balance, the error names the sub-call (and shows custom-error revert data)."""
    ws = few("odd", 5)
    contracts.set_values(ws, [1] * 5, [2] * 5, [3] * 5)
    contracts.set_mode([ws[0]], "token", MODE_EMPTY)
    contracts.set_mode([ws[1]], "staking", MODE_SHORT)
    contracts.set_mode([ws[2]], "delegate", MODE_BARE_REVERT)
    contracts.set_mode([ws[3]], "token", MODE_CUSTOM_ERROR)
    rows = {r[0]: r for r in balances(db, ws)}
    for w, failed in ((ws[0], "balanceOf"), (ws[1], "totalStakedFor"), (ws[2], "getTotalDelegatorStake"),
                      (ws[3], "balanceOf")):
        _, bal, t, s, d, _, err = rows[w]
        assert bal is None and err and failed in err, (w, rows[w])
        comps = dict(zip(SUBCALLS, (t, s, d)))
        assert comps[failed] is None
        assert all(_int(v) is not None for k, v in comps.items() if k != failed), rows[w]
    custom = selector("Forced(address)") + enc_address(ws[3]).hex()
    assert custom in rows[ws[3]][6].lower(), f"revert data hex missing: {rows[ws[3]][6]!r}"
    assert _int(rows[ws[4]][1]) == 6 and rows[ws[4]][6] is None


# --------------------------------------------------------------------------------------------
# 2. input handling
# --------------------------------------------------------------------------------------------
def _valid(n: int = 6) -> list[str]:
    return few("input", n)


# value -> the reason the message gives after "is not a valid address: "
BAD_VALUES = {
    "non_hex": ("0x" + "ab" * 19 + "gh", "it contains non-hex character 'g'"),
    "short": ("0x" + "ab" * 19 + "a", "it has 39 hex digits after 0x, expected 40"),
    "long": ("0x" + "ab" * 20 + "c", "it has 41 hex digits after 0x, expected 40"),
    "much_longer": ("0x" + "ab" * 32, "it has 64 hex digits after 0x, expected 40"),
    "no_prefix": ("ab" * 20, "it must start with 0x"),
    "empty": ("", "it must start with 0x"),
    "leading_space": (" 0x" + "ab" * 20, "it must start with 0x"),
    "trailing_space": ("0x" + "ab" * 20 + " ", "it contains non-hex character ' '"),
    "prefix_only": ("0x", "it has 0 hex digits after 0x, expected 40"),
}


@pytest.mark.parametrize("kind", sorted(BAD_VALUES))
def test_malformed_address_rejected(db, proxy, kind):
    """The message names the 1-based position and the value exactly as given (quoted, white space
    kept: "0x" or "" are visible as such), and why it is refused."""
    bad, reason = BAD_VALUES[kind]
    ws = _valid(6)
    ws.insert(2, bad)  # 1-based position 3
    e, text, _ = expect_error(db, ws, "22023")
    assert e.diag.message_primary == f'wallet at position 3 ("{bad}") is not a valid address: {reason}', text
    assert proxy.http_requests == 0, "no RPC call for refused input"


def test_null_element_rejected(db, proxy):
    ws = _valid(6)
    ws.insert(4, None)  # 1-based position 5
    e, text, _ = expect_error(db, ws, "22023")
    assert re.search(r"\b5\b", (e.diag.message_primary or "") + " " + (e.diag.message_detail or "")), text
    assert proxy.http_requests == 0


def test_bad_checksum_mixed_case_accepted(db, proxy):
    """Mixed case is NOT checked against EIP-55 (src/eth/address.rs, on purpose: Audius's own config
    spells the AUDIO token with a wrong checksum)."""
    ws = _valid(4)
    good = to_checksum(ws[1])
    # flip the case of one letter: still mixed case, checksum now wrong
    i = next(k for k, ch in enumerate(good) if k > 1 and ch.isalpha())
    bad = good[:i] + good[i].swapcase() + good[i + 1:]
    assert bad.lower() == ws[1] and bad != good and bad not in (ws[1], ws[1].upper())
    audio_as_configured = "0x18aAA7115705e8be94bfFEbDE57Af9BFc265B998"
    assert to_checksum(audio_as_configured) != audio_as_configured
    rows = balances(db, [ws[0], bad, audio_as_configured])
    assert [r[0] for r in rows] == [ws[0], ws[1], audio_as_configured.lower()]


def test_checksummed_and_upper_case_normalised(db, contracts):
    ws = _valid(4)
    contracts.set_values(ws, [11, 12, 13, 14], [0] * 4, [0] * 4)
    given = [to_checksum(ws[0]), "0X" + ws[1][2:].upper(), "0x" + ws[2][2:].upper(), ws[3]]
    rows = balances(db, given)
    assert [r[0] for r in rows] == ws
    assert [_int(r[1]) for r in rows] == [11, 12, 13, 14]


def test_duplicates_give_one_row_in_first_seen_order(db, proxy):
    a, b, c = _valid(3)
    given = [b, a, to_checksum(b), c, a, b.upper().replace("0X", "0x"), "0X" + a[2:].upper()]
    rows = balances(db, given)
    assert [r[0] for r in rows] == [b, a, c]
    (rec,) = proxy.select(method="eth_call", aggregate3=True)
    assert rec.n_calls == 3 * 3 + 1, "duplicates must not be read twice"


def test_empty_array_no_rows_no_rpc(db, proxy):
    assert db.execute(f"SELECT {COLS} FROM {FN}(ARRAY[]::text[])").fetchall() == []
    assert proxy.http_requests == 0


def test_null_array_no_rows(db, proxy):
    assert db.execute(f"SELECT {COLS} FROM {FN}(NULL::text[])").fetchall() == []
    assert proxy.http_requests == 0


def test_unset_rpc_url(db, cluster):
    cluster.set_system(rpc_url=None)
    wait_until(lambda: not db.execute("SELECT current_setting('audius_indexer.rpc_url', true)").fetchone()[0],
               what="rpc_url reset")
    e, text, _ = expect_error(db, _valid(2), "55000")
    assert "audius_indexer.rpc_url" in text


# --------------------------------------------------------------------------------------------
# 3. RPC failures
# --------------------------------------------------------------------------------------------
def test_node_not_listening(db, cluster):
    port = free_port()
    cluster.set_system(rpc_url=f"http://127.0.0.1:{port}{SECRET_PATH}")
    single_attempt(db)
    expect_rpc_error(db, _valid(2), "08001", f"127.0.0.1:{port}", max_s=1.0)


def test_node_killed_midway(db, cluster, throwaway_anvil):
    node = throwaway_anvil.start()
    node.install_multicall3()
    cluster.set_system(rpc_url=node.url)  # anvil itself answers 404 on any other path
    single_attempt(db, timeout_ms=5000)
    db.execute("SET audius_indexer.multicall_chunk_size = 20")
    ws = [wallet_address(i, "killed") for i in range(20000)]
    th, out = run_in_thread(lambda: balances(db, ws))
    wait_until(lambda: node.log_text().count("eth_call") >= 50 or not th.is_alive(), timeout=30,
               what="50 chunks served")
    assert th.is_alive(), f"finished before the node was killed: {out}"
    served = node.log_text().count("eth_call")
    node.kill()
    t_kill = time.monotonic()
    th.join(30)
    assert not th.is_alive(), "call did not return after the node died"
    assert served < 1000
    e = out.get("error")
    assert isinstance(e, psycopg.Error), f"expected an ERROR, got {out}"
    assert e.sqlstate in ("08001", "08006"), f"{e.sqlstate}: {error_text(e)}"
    assert f"127.0.0.1:{node.port}" in error_text(e)
    assert out["end"] - t_kill < 6.0
    assert db.execute("SELECT 1").fetchone() == (1,)


def test_timeout_on_hang(db, proxy):
    single_attempt(db, 1500)
    proxy.fault("hang")
    expect_rpc_error(db, _valid(2), "08006", proxy_hostport(proxy), min_s=1.4, max_s=2.5)


def test_timeout_on_slow_drip(db, proxy):
    """A node trickling its answer must not extend the call past rpc_timeout_ms."""
    single_attempt(db, 1500)
    proxy.fault("slow_drip", interval_ms=100)
    expect_rpc_error(db, _valid(2), "08006", proxy_hostport(proxy), min_s=1.4, max_s=2.5)


@pytest.mark.parametrize("code,message", [(-32000, "execution reverted"), (-32602, "invalid params")])
def test_jsonrpc_error(db, proxy, code, message):
    single_attempt(db)
    proxy.fault("jsonrpc_error", code=code, message=message)
    text = expect_rpc_error(db, _valid(2), "38000", proxy_hostport(proxy), max_s=2)
    assert message in text and str(code) in text, text


@pytest.mark.parametrize("mode", ["http500", "http502", "http503"])
def test_http_error_status(db, proxy, mode):
    single_attempt(db)
    proxy.fault(mode)
    text = expect_rpc_error(db, _valid(2), "08P01", proxy_hostport(proxy), max_s=2)
    assert mode[4:] in text, f"message should give the HTTP status: {text}"


@pytest.mark.parametrize("mode,params", [
    ("http429", {"retry_after": 1}),
    ("jsonrpc_error", {"code": -32005, "message": "limit exceeded"}),
    ("jsonrpc_error", {"code": -32000, "message": "rate limited"}),
])
def test_rate_limited_single_attempt(db, proxy, mode, params):
    """Rate limiting, out of retries, is its own class: SQLSTATE 53400 (crates/core/src/eth/error.rs
    RpcError::sqlstate; docs/sql-reference.md), not 08P01 / 38000 like other HTTP and JSON-RPC errors."""
    single_attempt(db)
    proxy.fault(mode, **params)
    text = expect_rpc_error(db, _valid(2), "53400", proxy_hostport(proxy), max_s=2)
    assert "rate" in text.lower(), text


def test_redirect_not_followed(db, proxy):
    """A 3xx is an unexpected status: never followed (the URL's key must not travel elsewhere)."""
    single_attempt(db)
    proxy.fault("redirect")  # Location: the real node, which would answer correctly
    expect_rpc_error(db, _valid(2), "08P01", proxy_hostport(proxy), max_s=2)
    assert proxy.count(method="eth_call") == 1


@pytest.mark.parametrize("mode,params", [("garbage", {}), ("invalid_json", {}), ("bad_hex", {}),
                                         ("no_result", {}), ("result", {"value": "0x1234"}),
                                         ("result", {"value": "0x" + "00" * 31 + "20"})])
def test_malformed_answer(db, proxy, mode, params):
    single_attempt(db)
    proxy.fault(mode, **params)
    expect_rpc_error(db, _valid(2), "08P01", proxy_hostport(proxy), max_s=2)


@pytest.mark.parametrize("mode", ["truncated", "close", "reset"])
def test_connection_lost(db, proxy, mode):
    single_attempt(db)
    proxy.fault(mode)
    expect_rpc_error(db, _valid(2), "08006", proxy_hostport(proxy), max_s=2)


@pytest.mark.parametrize("delta", [-1, 1])
def test_result_count_mismatch(db, proxy, delta):
    single_attempt(db)
    proxy.fault("wrong_result_count", delta=delta)
    expect_rpc_error(db, _valid(3), "08P01", proxy_hostport(proxy), max_s=2)


def test_multicall3_absent(db, proxy):
    single_attempt(db)
    nowhere = "0x" + "00" * 18 + "beef"
    db.execute(f"SET audius_indexer.multicall_address = '{nowhere}'")
    _, text, _ = expect_error(db, _valid(2), "55000", max_s=2)
    assert "multicall3" in text.lower() and "code" in text.lower(), text
    # one aggregate3 to the configured address (answered `0x`: no code there, not retried), nothing else
    assert proxy.count(method="eth_call", to=nowhere) == 1, "the configured multicall_address must be used"
    assert proxy.http_requests == 1
    assert proxy.count(to=MULTICALL3_ADDRESS) == 0


def test_multicall3_empty_answer(db, proxy):
    """A node answering `0x` for the aggregate3 call is the same 'no Multicall3 code' case."""
    single_attempt(db)
    proxy.fault("result", value="0x")
    _, text, _ = expect_error(db, _valid(2), "55000", max_s=2)
    assert "multicall3" in text.lower(), text


def test_statement_timeout_during_hang(db, proxy):
    db.execute("SET audius_indexer.rpc_timeout_ms = 60000")
    db.execute("SET audius_indexer.rpc_max_retries = 0")
    db.execute("SET statement_timeout = '2s'")
    proxy.fault("hang")
    expect_error(db, _valid(2), "57014", min_s=1.9, max_s=3.0)
    db.execute("RESET statement_timeout")


def test_cancel_during_hang(db, other_conn, proxy):
    single_attempt(db, 60000)
    proxy.fault("hang")
    pid = db.info.backend_pid
    th, out = run_in_thread(lambda: balances(db, _valid(2)))
    wait_until(lambda: proxy.http_requests >= 1, what="the hung request")
    time.sleep(0.3)
    assert th.is_alive()
    t0 = time.monotonic()
    assert other_conn.execute("SELECT pg_cancel_backend(%s)", (pid,)).fetchone() == (True,)
    th.join(10)
    assert not th.is_alive(), "pg_cancel_backend did not interrupt the hung RPC"
    assert out["end"] - t0 < 1.5, f"cancel took {out['end'] - t0:.2f}s"
    e = out.get("error")
    assert isinstance(e, psycopg.Error) and e.sqlstate == "57014", out
    assert db.execute("SELECT 1").fetchone() == (1,)


def test_terminate_during_hang(cluster, db, proxy):
    """pg_terminate_backend of a backend stuck in an RPC: it exits promptly, nothing crashes."""
    victim = cluster.connect("audius")
    try:
        single_attempt(victim, 60000)
        proxy.fault("hang")
        pid = victim.info.backend_pid
        th, out = run_in_thread(lambda: balances(victim, _valid(2)))
        wait_until(lambda: proxy.http_requests >= 1, what="the hung request")
        t0 = time.monotonic()
        assert db.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone() == (True,)
        th.join(10)
        assert not th.is_alive() and out["end"] - t0 < 2.0
        assert isinstance(out.get("error"), psycopg.Error)
        assert db.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == (0,)
    finally:
        proxy.clear_faults()
        victim.close()
    assert db.execute("SELECT 1").fetchone() == (1,)


def test_transient_failure_retried(db, proxy, contracts):
    ws = _valid(2)
    contracts.set_values(ws, [3, 4], [0, 0], [0, 0])
    db.execute("SET audius_indexer.rpc_max_retries = 2")
    proxy.fault("http503", times=1)
    rows = balances(db, ws)
    assert [_int(r[1]) for r in rows] == [3, 4]
    assert proxy.count(method="eth_call", aggregate3=True) == 2


def test_retry_after_honoured(db, proxy, contracts):
    ws = _valid(2)
    contracts.set_values(ws, [5, 6], [0, 0], [0, 0])
    db.execute("SET audius_indexer.rpc_max_retries = 1")
    proxy.fault("http429", retry_after=1, times=1)
    t0 = time.monotonic()
    rows = balances(db, ws)
    dt = time.monotonic() - t0
    assert [_int(r[1]) for r in rows] == [5, 6]
    assert proxy.count(method="eth_call", aggregate3=True) == 2
    assert 0.9 <= dt < 3.0, f"Retry-After: 1 should delay the retry by ~1 s, took {dt:.2f}s"


def test_retries_bounded(db, proxy):
    db.execute("SET audius_indexer.rpc_max_retries = 2")
    proxy.fault("http503")
    expect_rpc_error(db, _valid(2), "08P01", proxy_hostport(proxy), max_s=30)
    assert proxy.count(method="eth_call", aggregate3=True) == 3, "1 attempt + rpc_max_retries retries"


# --------------------------------------------------------------------------------------------
# 4. privileges
# --------------------------------------------------------------------------------------------
def test_execute_revoked_from_public(cluster, db):
    role = "mc_nopriv"
    db.execute(f"DROP ROLE IF EXISTS {role}")
    db.execute(f"CREATE ROLE {role} LOGIN")
    try:
        # give the role the schema, so that only the function's own ACL can refuse it
        db.execute(f"GRANT USAGE ON SCHEMA audius_indexer TO {role}")
        assert db.execute("SELECT has_function_privilege('public', %s, 'EXECUTE')",
                          (f"{FN}(text[])",)).fetchone() == (False,)
        with cluster.connect("audius", user=role) as c:
            with pytest.raises(psycopg.Error) as ei:
                balances(c, [])
            assert ei.value.sqlstate == "42501", error_text(ei.value)
            assert "multicall_total_audio_balances" in error_text(ei.value)
        # positive control: with the grant the same role can call it
        db.execute(f"GRANT EXECUTE ON FUNCTION {FN}(text[]) TO {role}")
        with cluster.connect("audius", user=role) as c:
            assert balances(c, []) == []
    finally:
        db.execute(f"DROP OWNED BY {role}")
        db.execute(f"DROP ROLE {role}")
