"""Smoke tests of the test harness itself (no extension needed): contracts compile and deploy, the
oracle reads them, Multicall3 answers, and the proxy records and injects every fault mode.
These guard the ground the extension's integration tests stand on."""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest

from conftest import wait_until
from harness.chain import (MODE_BARE_REVERT, MODE_CUSTOM_ERROR, MODE_EMPTY, MODE_SHORT,
                           MULTICALL3_ADDRESS, SEL_AGGREGATE3, SEL_BALANCE_OF, SEL_GET_BLOCK_NUMBER,
                           SEL_TOTAL_DELEGATOR_STAKE, SEL_TOTAL_STAKED_FOR, Anvil, RpcError,
                           decode_call3_array, decode_result3_array, decode_revert_reason, enc_address,
                           encode_call3_array, encode_result3_array, json_rpc, keccak256, selector,
                           strip0x, to_checksum, wallet_address)
from harness.pg import free_port
from harness.rpcproxy import RpcProxy

pytestmark = pytest.mark.timeout(120)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def post(url: str, payload, timeout: float = 5.0):
    """Plain HTTP POST through http.client; returns (status, headers, body bytes)."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        conn.request("POST", "/", body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def rpc_req(method, params=None, id_=1):
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": params or []}


def aggregate3_calldata(contracts, wallets) -> str:
    calls = []
    for w in wallets:
        arg = enc_address(w)
        calls.append((contracts.token, True, bytes.fromhex(SEL_BALANCE_OF) + arg))
        calls.append((contracts.staking, True, bytes.fromhex(SEL_TOTAL_STAKED_FOR) + arg))
        calls.append((contracts.delegate, True, bytes.fromhex(SEL_TOTAL_DELEGATOR_STAKE) + arg))
    calls.append((MULTICALL3_ADDRESS, False, bytes.fromhex(SEL_GET_BLOCK_NUMBER)))
    return "0x" + SEL_AGGREGATE3 + encode_call3_array(calls).hex()


def agg_req(contracts, wallets, id_=7):
    return rpc_req("eth_call", [{"to": MULTICALL3_ADDRESS, "data": aggregate3_calldata(contracts, wallets)},
                                "latest"], id_)


@pytest.fixture
def px(proxy):
    proxy.clear_faults()
    proxy.reset()
    yield proxy
    proxy.clear_faults()
    proxy.reset()


# --------------------------------------------------------------------------------------------
# ABI / addresses
# --------------------------------------------------------------------------------------------
def test_selectors_and_checksum():
    assert selector("balanceOf(address)") == SEL_BALANCE_OF
    assert selector("totalStakedFor(address)") == SEL_TOTAL_STAKED_FOR
    assert selector("getTotalDelegatorStake(address)") == SEL_TOTAL_DELEGATOR_STAKE
    assert selector("aggregate3((address,bool,bytes)[])") == SEL_AGGREGATE3
    assert selector("getBlockNumber()") == SEL_GET_BLOCK_NUMBER
    # EIP-55 reference vectors
    for a in ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
              "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB", "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb"):
        assert to_checksum(a.lower()) == a
    assert to_checksum(MULTICALL3_ADDRESS.lower()) == MULTICALL3_ADDRESS
    assert keccak256(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"


def test_result3_roundtrip():
    rs = [(True, b""), (False, b"\x01" * 33), (True, (5).to_bytes(32, "big"))]
    assert decode_result3_array(encode_result3_array(rs)) == rs
    calls = [("0x" + "11" * 20, True, b"\xaa\xbb"), ("0x" + "22" * 20, False, b"")]
    assert decode_call3_array(encode_call3_array(calls)) == calls


# --------------------------------------------------------------------------------------------
# chain + contracts
# --------------------------------------------------------------------------------------------
def test_multicall3_installed(anvil):
    code = anvil.get_code(MULTICALL3_ADDRESS)
    assert "0x" + keccak256(bytes.fromhex(strip0x(code))).hex() == \
        "0xd5c15df687b16f2ff992fc8d767b4216323184a2bbc6ee2f9c398c318e770891"
    out = anvil.call(MULTICALL3_ADDRESS, "0x" + SEL_GET_BLOCK_NUMBER)
    assert int(out, 16) == anvil.block_number()


def test_set_values_and_independent_reads(anvil, contracts):
    ws = [wallet_address(i, "harness-values") for i in range(1100)]  # > 2 setMany chunks
    tok = [i * 10**18 + 1 for i in range(len(ws))]
    stk = [0 if i % 3 == 0 else i * 7 for i in range(len(ws))]
    dlg = [(1 << 256) - 1 - i for i in range(len(ws))]
    contracts.set_values(ws, tok, stk, dlg)
    for i in (0, 1, 499, 500, 501, 1099):
        assert contracts.independent_total(ws[i]) == (tok[i], stk[i], dlg[i])
    assert contracts.independent_total(wallet_address(1, "harness-unset")) == (0, 0, 0)


def test_reverts_and_modes(anvil, contracts):
    w = [wallet_address(i, "harness-modes") for i in range(6)]
    contracts.set_values(w, [1] * 6, [2] * 6, [3] * 6)
    contracts.set_revert([w[0]], "token")
    contracts.set_revert([w[1]], "staking")
    contracts.set_revert([w[1]], "delegate")
    contracts.set_mode([w[2]], "token", MODE_EMPTY)
    contracts.set_mode([w[3]], "staking", MODE_SHORT)
    contracts.set_mode([w[4]], "delegate", MODE_BARE_REVERT)
    contracts.set_mode([w[5]], "token", MODE_CUSTOM_ERROR)
    assert contracts.independent_total(w[0]) == (None, 2, 3)
    assert contracts.independent_total(w[1]) == (1, None, None)
    assert contracts.independent_total(w[2]) == (None, 2, 3)
    assert contracts.independent_total(w[3]) == (1, None, 3)
    assert contracts.independent_total(w[4]) == (1, 2, None)
    assert contracts.independent_total(w[5]) == (None, 2, 3)
    with pytest.raises(RpcError) as ei:
        anvil.call(contracts.token, "0x" + SEL_BALANCE_OF + enc_address(w[0]).hex())
    assert decode_revert_reason(bytes.fromhex(strip0x(ei.value.data))) == "MockAudioToken: forced revert"
    assert anvil.call(contracts.token, "0x" + SEL_BALANCE_OF + enc_address(w[2]).hex()) == "0x"
    contracts.set_revert([w[0]], "token", False)
    assert contracts.independent_total(w[0]) == (1, 2, 3)


def test_concurrent_transactions_from_one_account(anvil, contracts):
    """Threads that send transactions at once from the one unlocked account (the cutover rehearsal's
    chain stream beside its main thread) all get their transaction mined: none is refused with
    "nonce too low"."""
    errors: list[Exception] = []
    a, b = wallet_address(0, "harness-nonce"), wallet_address(1, "harness-nonce")
    contracts.set_values([a], token=[10**24])

    def send():
        try:
            for _ in range(40):
                contracts.transfer(a, b, 1)
        except Exception as e:  # reported below, from the main thread
            errors.append(e)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert contracts.independent_total(b)[0] == 160


def test_anvil_kill_and_restart():
    a = Anvil()
    try:
        a.start()
        a.mine(5)
        assert a.block_number() == 5
        port = a.port
        a.kill()
        assert not a.alive()
        with pytest.raises(OSError):
            json_rpc(a.url, "eth_chainId", timeout=2)
        a.restart()
        assert a.port == port and a.block_number() == 0
    finally:
        a.destroy()


# --------------------------------------------------------------------------------------------
# proxy: recording
# --------------------------------------------------------------------------------------------
def test_proxy_passthrough_and_recording(anvil, contracts, px):
    ws = [wallet_address(i, "harness-proxy") for i in range(4)]
    contracts.set_values(ws, [10, 20, 30, 40], [1, 2, 3, 4], [0, 0, 0, 7])
    contracts.set_revert([ws[1]], "staking")
    px.reset()
    status, _, body = post(px.url_with("/secret-key-123?apikey=zzz"), agg_req(contracts, ws))
    assert status == 200
    res = decode_result3_array(bytes.fromhex(strip0x(json.loads(body)["result"])))
    assert len(res) == 13
    assert [int.from_bytes(d, "big") for ok, d in res[0:3]] == [10, 1, 0]
    assert res[4][0] is False
    assert decode_revert_reason(res[4][1]) == "MockStaking: forced revert"
    assert int.from_bytes(res[12][1], "big") == anvil.block_number()
    post(px.url, rpc_req("eth_blockNumber"))
    post(px.url, [rpc_req("eth_chainId", id_=1), rpc_req("eth_blockNumber", id_=2)])
    post(px.url, b"this is not json")

    assert px.http_requests == 4
    assert px.count(method="eth_call", aggregate3=True) == 1
    assert px.count(method="eth_blockNumber") == 2
    assert px.count(method="eth_chainId") == 1
    assert px.count(method=None) == 5  # the non-JSON body is recorded with method None
    (r,) = px.select(aggregate3=True)
    assert r.to == MULTICALL3_ADDRESS.lower() and r.n_calls == 13
    assert r.path == "/"  # http.client above posts to "/"
    sels = [c[2] for c in r.calls]
    assert sels.count(SEL_BALANCE_OF) == 4 and sels[-1] == SEL_GET_BLOCK_NUMBER
    px.reset()
    assert px.requests == [] and px.http_requests == 0


def test_proxy_records_path(px):
    conn = http.client.HTTPConnection(px.host, px.port, timeout=5)
    conn.request("POST", "/secret-key-123?apikey=zzz", body=json.dumps(rpc_req("eth_chainId")),
                 headers={"Content-Type": "application/json"})
    assert conn.getresponse().status == 200
    conn.close()
    assert px.requests[0].path == "/secret-key-123?apikey=zzz"


def test_proxy_keepalive(px):
    conn = http.client.HTTPConnection(px.host, px.port, timeout=5)
    for i in range(20):
        conn.request("POST", "/", body=json.dumps(rpc_req("eth_chainId", id_=i)),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        assert json.loads(r.read())["id"] == i
    conn.close()
    assert px.count(method="eth_chainId") == 20


def test_proxy_in_flight_counts_what_the_client_has_outstanding(px):
    """One request at a time, alternating between kept-alive connections (as a client's pool
    does): the next request leaves the moment the answer is read, so a proxy that stops counting
    only after its own bookkeeping would now and then see two in flight. The RPC-faults 429 case reads
    peak_in_flight and expects exactly 1."""
    conns = [http.client.HTTPConnection(px.host, px.port, timeout=5) for _ in range(4)]
    px.fault("http429", retry_after=0)  # answered by the proxy itself: the shortest round trip
    for i in range(2000):
        c = conns[i % len(conns)]
        c.request("POST", "/", body=json.dumps(rpc_req("eth_chainId", id_=i)),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        assert r.status == 429
    for c in conns:
        c.close()
    assert px.count(method="eth_chainId") == 2000
    assert px.peak_in_flight == 1


# --------------------------------------------------------------------------------------------
# proxy: faults
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,status", [("http429", 429), ("http500", 500), ("http502", 502),
                                         ("http503", 503)])
def test_fault_http_status(px, mode, status):
    px.fault(mode, times=1, retry_after=1)
    s, h, _ = post(px.url, rpc_req("eth_chainId"))
    assert s == status
    assert (h.get("Retry-After") == "1") == (mode == "http429")
    s, _, body = post(px.url, rpc_req("eth_chainId"))
    assert s == 200 and json.loads(body)["result"]
    assert [r.fault for r in px.requests] == [mode, None]


def test_fault_times_after_and_scope(px):
    px.fault("http503", times=2, after=1, methods="eth_call")
    statuses = [post(px.url, rpc_req("eth_blockNumber"))[0]]  # not in scope
    statuses += [post(px.url, rpc_req("eth_call", [{"to": MULTICALL3_ADDRESS, "data": "0x"}, "latest"]))[0]
                 for _ in range(4)]
    assert statuses == [200, 200, 503, 503, 200]


def test_fault_persistent_until_cleared(px):
    px.fault("http500")
    assert [post(px.url, rpc_req("eth_chainId"))[0] for _ in range(3)] == [500] * 3
    px.clear_faults()
    assert post(px.url, rpc_req("eth_chainId"))[0] == 200


def test_fault_hang_until_cleared(px):
    px.fault("hang")
    t0 = time.time()
    with pytest.raises((socket.timeout, TimeoutError)):
        post(px.url, rpc_req("eth_chainId"), timeout=0.5)
    assert 0.4 < time.time() - t0 < 2
    # a second client hangs too, until the fault is cleared: then it gets a closed connection
    out = {}

    def client():
        try:
            out["r"] = post(px.url, rpc_req("eth_chainId"), timeout=10)
        except Exception as e:  # noqa: BLE001
            out["e"] = e
    th = threading.Thread(target=client)
    th.start()
    wait_until(lambda: px.http_requests >= 2, what="second request")
    time.sleep(0.3)
    assert th.is_alive()
    px.clear_faults()
    th.join(5)
    assert not th.is_alive()
    assert isinstance(out.get("e"), (http.client.RemoteDisconnected, ConnectionError))
    assert post(px.url, rpc_req("eth_chainId"))[0] == 200


def test_fault_hang_released_by_stop(anvil):
    p = RpcProxy(anvil.url).start()
    p.fault("hang")
    out = {}

    def client():
        try:
            post(p.url, rpc_req("eth_chainId"), timeout=10)
        except Exception as e:  # noqa: BLE001
            out["e"] = e
    th = threading.Thread(target=client)
    th.start()
    wait_until(lambda: p.http_requests >= 1, what="request")
    t0 = time.time()
    p.stop()
    th.join(5)
    assert not th.is_alive() and time.time() - t0 < 3
    assert "e" in out


def test_fault_slow_drip(px):
    px.fault("slow_drip", interval_ms=20, times=1)
    t0 = time.time()
    s, _, body = post(px.url, rpc_req("eth_chainId"), timeout=30)
    dt = time.time() - t0
    assert s == 200 and json.loads(body)["result"]
    assert dt >= 0.02 * (len(body) - 1) * 0.9, (dt, len(body))


def test_fault_truncated(px):
    px.fault("truncated", times=1)
    with pytest.raises(http.client.IncompleteRead):
        post(px.url, rpc_req("eth_chainId"))


@pytest.mark.parametrize("mode", ["garbage", "invalid_json"])
def test_fault_non_json(px, mode):
    px.fault(mode, times=1)
    s, _, body = post(px.url, rpc_req("eth_chainId"))
    assert s == 200
    with pytest.raises(ValueError):
        json.loads(body)


def test_fault_bad_hex_no_result_and_result(px):
    px.fault("bad_hex", times=1)
    px.fault("no_result", times=1)
    px.fault("result", times=1, value="0x")
    a = json.loads(post(px.url, rpc_req("eth_call", id_=41))[2])
    b = json.loads(post(px.url, rpc_req("eth_call", id_=42))[2])
    c = json.loads(post(px.url, rpc_req("eth_call", id_=43))[2])
    assert a["id"] == 41 and a["result"].startswith("0xzz")
    assert b == {"jsonrpc": "2.0", "id": 42}
    assert c == {"jsonrpc": "2.0", "id": 43, "result": "0x"}


def test_fault_jsonrpc_error(px):
    px.fault("jsonrpc_error", times=1)
    px.fault("jsonrpc_error", times=1, code=-32000, message="execution reverted", data="0x1234")
    a = json.loads(post(px.url, rpc_req("eth_chainId", id_=5))[2])
    b = json.loads(post(px.url, rpc_req("eth_chainId", id_=6))[2])
    assert a == {"jsonrpc": "2.0", "id": 5, "error": {"code": -32005, "message": "rate limited"}}
    assert b["error"] == {"code": -32000, "message": "execution reverted", "data": "0x1234"}


@pytest.mark.parametrize("delta", [-1, 1])
def test_fault_wrong_result_count(contracts, px, delta):
    ws = [wallet_address(i, "harness-wrc") for i in range(3)]
    px.fault("wrong_result_count", times=1, delta=delta)
    # not an aggregate3 call: passes untouched and does not use up the fault
    assert json.loads(post(px.url, rpc_req("eth_blockNumber"))[2])["result"]
    res = decode_result3_array(bytes.fromhex(strip0x(json.loads(post(px.url, agg_req(contracts, ws))[2])["result"])))
    assert len(res) == 10 + delta
    res = decode_result3_array(bytes.fromhex(strip0x(json.loads(post(px.url, agg_req(contracts, ws))[2])["result"])))
    assert len(res) == 10


def test_fault_out_of_gas_above(contracts, px):
    px.fault("out_of_gas_above", holders=2)
    small = json.loads(post(px.url, agg_req(contracts, [wallet_address(i, "oog") for i in range(2)]))[2])
    big = json.loads(post(px.url, agg_req(contracts, [wallet_address(i, "oog") for i in range(3)]))[2])
    assert "result" in small
    assert big["error"] == {"code": -32000, "message": "out of gas"}
    assert [r.n_calls for r in px.select(aggregate3=True)] == [7, 10]


def test_fault_redirect(anvil, px):
    px.fault("redirect", times=1)
    s, h, _ = post(px.url, rpc_req("eth_chainId"))
    assert s == 302 and h["Location"] == anvil.url


@pytest.mark.parametrize("mode", ["close", "reset"])
def test_fault_close_and_reset(px, mode):
    px.fault(mode, times=1)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        post(px.url, rpc_req("eth_chainId"))
    assert post(px.url, rpc_req("eth_chainId"))[0] == 200


def test_unknown_fault_mode_refused(px):
    with pytest.raises(ValueError):
        px.fault("nonsense")


def test_upstream_down_gives_502():
    p = RpcProxy(f"http://127.0.0.1:{free_port()}").start()
    try:
        assert post(p.url, rpc_req("eth_chainId"))[0] == 502
    finally:
        p.stop()


def test_anvil_keeps_its_persisted_states_in_its_own_directory():
    """anvil writes old states to disk once it holds many blocks; killed, it used to leave them under
    ~/.foundry/anvil/tmp (gigabytes per test run). They go into the node's own directory, which
    destroy() removes."""
    import os
    from pathlib import Path
    home_tmp = Path.home() / ".foundry" / "anvil" / "tmp"
    before = set(os.listdir(home_tmp)) if home_tmp.exists() else set()
    node = Anvil().start()
    try:
        for _ in range(3):
            node.rpc("anvil_mine", [hex(200)])
        cache = node.logdir / "anvil-cache"
        assert cache.is_dir() and any(cache.rglob("*")), "anvil persisted no state into its cache path"
    finally:
        node.destroy()  # SIGKILL, as the crash tests do
    after = set(os.listdir(home_tmp)) if home_tmp.exists() else set()
    assert after == before, f"left in {home_tmp}: {sorted(after - before)}"
    assert not node.logdir.exists()
