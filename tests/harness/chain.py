"""A local Ethereum node (anvil) for the integration tests, plus the test contracts on it.

Everything here is deliberately independent of the extension's own code: the ABI encoding, the
checksum and the plain eth_calls used as the oracle are written out here from the specs.

    a = Anvil().start()
    a.install_multicall3()
    c = Contracts.deploy_all(a)
    c.set_values(wallets, token=[...], staked=[...], delegated=[...])
    c.independent_total(wallet)  # -> (token, staked, delegated), None for a read that reverted
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable, Sequence

from Crypto.Hash import keccak as _keccak

from .pg import free_port
from .procs import stop_process, wait_serving

ROOT = Path(__file__).resolve().parents[2]
ANVIL_BIN = Path(os.environ.get(
    "ANVIL_BIN", ROOT / "tools" / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"))
NODE_BIN = os.environ.get("NODE_BIN", "node")
COMPILE_JS = ROOT / "tests" / "contracts" / "compile.js"
BUILD_JSON = ROOT / "tests" / ".build" / "contracts.json"
MULTICALL3_HEX = ROOT / "tests" / "fixtures" / "multicall3-runtime.hex"

MULTICALL3_ADDRESS = "0xcA11bde05977b3631167028862bE2a173976CA11"
MULTICALL3_CODEHASH = "0xd5c15df687b16f2ff992fc8d767b4216323184a2bbc6ee2f9c398c318e770891"

SEL_BALANCE_OF = "70a08231"            # balanceOf(address)
SEL_TOTAL_STAKED_FOR = "4b341aed"      # totalStakedFor(address)
SEL_TOTAL_DELEGATOR_STAKE = "b0303b75"  # getTotalDelegatorStake(address)
SEL_AGGREGATE3 = "82ad56cb"            # aggregate3((address,bool,bytes)[])
SEL_GET_BLOCK_NUMBER = "42cbb15c"      # getBlockNumber()
SEL_ERROR_STRING = "08c379a0"          # Error(string)

# Contract name -> (read function, its selector) in the order the extension sums them.
READS = {
    "MockAudioToken": ("balanceOf", SEL_BALANCE_OF),
    "MockStaking": ("totalStakedFor", SEL_TOTAL_STAKED_FOR),
    "MockDelegateManager": ("getTotalDelegatorStake", SEL_TOTAL_DELEGATOR_STAKE),
}
# Mock read modes (see tests/contracts/*.sol).
MODE_NORMAL, MODE_REVERT, MODE_EMPTY, MODE_SHORT, MODE_BARE_REVERT, MODE_CUSTOM_ERROR = range(6)


# --------------------------------------------------------------------------------------------
# keccak / addresses / ABI (just enough for the tests)
# --------------------------------------------------------------------------------------------
def keccak256(data: bytes) -> bytes:
    return _keccak.new(digest_bits=256, data=data).digest()


def selector(signature: str) -> str:
    return keccak256(signature.encode()).hex()[:8]


def to_checksum(address: str) -> str:
    """EIP-55 mixed-case checksum encoding of a 20-byte hex address."""
    a = address.lower().removeprefix("0x")
    assert len(a) == 40 and all(ch in "0123456789abcdef" for ch in a), address
    h = keccak256(a.encode()).hex()
    return "0x" + "".join(ch.upper() if ch.isalpha() and int(h[i], 16) >= 8 else ch
                          for i, ch in enumerate(a))


def wallet_address(i: int, salt: str = "wallet") -> str:
    """A deterministic, well-spread test address (lowercase)."""
    return "0x" + keccak256(f"{salt}:{i}".encode())[-20:].hex()


def strip0x(h: str) -> str:
    return h[2:] if h[:2] in ("0x", "0X") else h


def enc_uint(v: int) -> bytes:
    assert 0 <= v < 1 << 256, v
    return v.to_bytes(32, "big")


def enc_address(a: str) -> bytes:
    raw = bytes.fromhex(strip0x(a))
    assert len(raw) == 20, a
    return raw.rjust(32, b"\0")


def enc_bool(b: bool) -> bytes:
    return enc_uint(1 if b else 0)


def enc_bytes(b: bytes) -> bytes:
    pad = (-len(b)) % 32
    return enc_uint(len(b)) + b + b"\0" * pad


def _enc_dynamic_array(items: Sequence[bytes]) -> bytes:
    """Array of dynamic elements: length, offsets (relative to after the length), then bodies."""
    head, body = [], b""
    base = 32 * len(items)
    for it in items:
        head.append(enc_uint(base + len(body)))
        body += it
    return enc_uint(len(items)) + b"".join(head) + body


def enc_address_array(addrs: Sequence[str]) -> bytes:
    return enc_uint(len(addrs)) + b"".join(enc_address(a) for a in addrs)


def enc_uint_array(vals: Sequence[int]) -> bytes:
    return enc_uint(len(vals)) + b"".join(enc_uint(v) for v in vals)


def encode_result3_array(results: Sequence[tuple[bool, bytes]]) -> bytes:
    """ABI encoding of a return value of type (bool,bytes)[] (Multicall3's Result3[])."""
    items = [enc_bool(ok) + enc_uint(64) + enc_bytes(data) for ok, data in results]
    return enc_uint(32) + _enc_dynamic_array(items)


def encode_call3_array(calls: Sequence[tuple[str, bool, bytes]]) -> bytes:
    """ABI encoding of the argument (address,bool,bytes)[] (Multicall3's Call3[])."""
    items = [enc_address(t) + enc_bool(af) + enc_uint(96) + enc_bytes(d) for t, af, d in calls]
    return enc_uint(32) + _enc_dynamic_array(items)


def _word(buf: bytes, off: int) -> int:
    if off + 32 > len(buf):
        raise ValueError(f"ABI data too short: need {off + 32} bytes, have {len(buf)}")
    return int.from_bytes(buf[off:off + 32], "big")


def _dec_bytes(buf: bytes, off: int) -> bytes:
    n = _word(buf, off)
    if off + 32 + n > len(buf):
        raise ValueError("ABI bytes run past the end")
    return buf[off + 32:off + 32 + n]


def _tuple_offsets(buf: bytes) -> list[int]:
    """Where each element starts of the dynamic array of dynamic tuples that is the one argument (or
    result) encoded in `buf`."""
    arr = _word(buf, 0)
    n = _word(buf, arr)
    base = arr + 32
    return [base + _word(buf, base + 32 * i) for i in range(n)]


def decode_result3_array(buf: bytes) -> list[tuple[bool, bytes]]:
    return [(_word(buf, t) != 0, _dec_bytes(buf, t + _word(buf, t + 32))) for t in _tuple_offsets(buf)]


def decode_call3_array(args: bytes) -> list[tuple[str, bool, bytes]]:
    """Decodes aggregate3's argument (calldata without the selector)."""
    return [("0x" + args[t + 12:t + 32].hex(), _word(args, t + 32) != 0, _dec_bytes(args, t + _word(args, t + 64)))
            for t in _tuple_offsets(args)]


def decode_revert_reason(data: bytes) -> str | None:
    """The string of an Error(string) revert payload, else None."""
    if len(data) >= 4 and data[:4].hex() == SEL_ERROR_STRING:
        try:
            return _dec_bytes(data[4:], _word(data[4:], 0)).decode("utf-8", "replace")
        except ValueError:
            return None
    return None


# --------------------------------------------------------------------------------------------
# JSON-RPC client
# --------------------------------------------------------------------------------------------
class RpcError(Exception):
    def __init__(self, code, message, data=None):
        super().__init__(f"JSON-RPC error {code}: {message}" + (f" (data {data})" if data else ""))
        self.code, self.message, self.data = code, message, data


def json_rpc(url: str, method: str, params: list | None = None, timeout: float = 60.0):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        answer = json.loads(resp.read())
    if "error" in answer and answer["error"] is not None:
        e = answer["error"]
        raise RpcError(e.get("code"), e.get("message"), e.get("data"))
    return answer["result"]


# --------------------------------------------------------------------------------------------
# anvil
# --------------------------------------------------------------------------------------------
class Anvil:
    """One anvil process on 127.0.0.1 and a free port (kept across restart())."""

    def __init__(self, port: int | None = None, gas_limit: int | None = None,
                 no_request_size_limit: bool = False, silent: bool = True,
                 extra_args: Iterable[str] = ()):
        self.port = port or free_port()
        self.gas_limit = gas_limit
        self.no_request_size_limit = no_request_size_limit
        self.silent = silent
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.logdir = Path(tempfile.mkdtemp(prefix="audius_indexer_anvil_"))
        self.logfile = self.logdir / "anvil.log"
        self._account: str | None = None
        self._tls = threading.local()
        # anvil picks the nonce of an eth_sendTransaction itself, and two sent at once from the one
        # account can get the same one ("nonce too low", "transaction already imported"): the
        # harness sends one at a time (the receipt waits stay concurrent)
        self._send_lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> "Anvil":
        if not ANVIL_BIN.exists():
            raise FileNotFoundError(f"anvil not found at {ANVIL_BIN} (run scripts/install-deps.sh)")
        cmd = [str(ANVIL_BIN), "--host", "127.0.0.1", "--port", str(self.port)]
        if self.silent:
            cmd.append("--silent")
        if self.gas_limit is not None:
            cmd += ["--gas-limit", str(self.gas_limit)]
        if self.no_request_size_limit:
            cmd.append("--no-request-size-limit")
        # anvil persists old states under ~/.foundry/anvil/tmp and removes them only on a clean exit;
        # killed nodes (destroy(), the crash tests) left gigabytes per run there. Keep them in our own
        # directory, which destroy() removes.
        cmd += ["--cache-path", str(self.logdir / "anvil-cache")]
        cmd += self.extra_args
        log = open(self.logfile, "ab")
        env = {**os.environ, "HOME": str(self.logdir)}
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, env=env)
        log.close()
        wait_serving(self.proc, lambda: json_rpc(self.url, "eth_chainId", timeout=2), timeout=timeout,
                     errors=(OSError, urllib.error.URLError, ValueError),
                     exited=lambda rc: RuntimeError(f"anvil exited with {rc}:\n{self.log_text()[-4000:]}"),
                     on_timeout=self._not_ready)
        return self

    def _not_ready(self) -> TimeoutError:
        self.kill()
        return TimeoutError(f"anvil not ready on {self.url}:\n{self.log_text()[-4000:]}")

    def log_text(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the node vanishes mid-whatever, like a crash."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> "Anvil":
        """A fresh chain on the same port (state is not kept)."""
        self.stop()
        self._account = None
        return self.start()

    def destroy(self) -> None:
        self.kill()
        import shutil
        shutil.rmtree(self.logdir, ignore_errors=True)

    # -- RPC -------------------------------------------------------------------------------
    def rpc(self, method: str, params: list | None = None, timeout: float = 60.0):
        """One JSON-RPC call on this thread's kept-alive connection (reconnects once if it went stale)."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
        for attempt in (0, 1):
            conn = getattr(self._tls, "conn", None)
            fresh = conn is None or getattr(self._tls, "port", None) != self.port
            if fresh:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
                self._tls.conn, self._tls.port = conn, self.port
            try:
                conn.timeout = timeout
                conn.request("POST", "/", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                self._tls.conn = None
                if fresh or attempt == 1:
                    raise
        if resp.status != 200:
            raise RuntimeError(f"{method}: HTTP {resp.status}: {raw[:200]!r}")
        answer = json.loads(raw)
        if answer.get("error") is not None:
            e = answer["error"]
            raise RpcError(e.get("code"), e.get("message"), e.get("data"))
        return answer["result"]

    @property
    def account(self) -> str:
        if self._account is None:
            self._account = self.rpc("eth_accounts")[0]
        return self._account

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def mine(self, n: int = 1) -> None:
        """Mines n empty blocks, in calls of at most 2,000 (anvil slows down per block as the chain
        grows; one call of tens of thousands of blocks would outlast the RPC timeout)."""
        while n > 0:
            k = min(n, 2000)
            self.rpc("anvil_mine", [hex(k)], timeout=300)
            n -= k

    def set_code(self, address: str, code_hex: str) -> None:
        self.rpc("anvil_setCode", [address, code_hex])

    def get_code(self, address: str) -> str:
        return self.rpc("eth_getCode", [address, "latest"])

    def install_multicall3(self) -> str:
        code = MULTICALL3_HEX.read_text().strip()
        self.set_code(MULTICALL3_ADDRESS, code)
        got = self.get_code(MULTICALL3_ADDRESS)
        h = "0x" + keccak256(bytes.fromhex(strip0x(got))).hex()
        if h != MULTICALL3_CODEHASH:
            raise RuntimeError(f"Multicall3 code hash {h} != {MULTICALL3_CODEHASH}")
        return MULTICALL3_ADDRESS.lower()

    def call(self, to: str, data: str | bytes, block: str = "latest") -> str:
        """Plain eth_call; raises RpcError on a revert (anvil: code 3, data = revert payload)."""
        if isinstance(data, bytes):
            data = "0x" + data.hex()
        return self.rpc("eth_call", [{"to": to, "data": data}, block])

    def transact(self, to: str | None, data: str | bytes, gas: int | None = None) -> dict:
        """eth_sendTransaction from the first unlocked account; waits for and checks the receipt."""
        if isinstance(data, bytes):
            data = "0x" + data.hex()
        tx = {"from": self.account, "data": data}
        if to is not None:
            tx["to"] = to
        if gas is not None:
            tx["gas"] = hex(gas)
        with self._send_lock:
            txh = self.rpc("eth_sendTransaction", [tx])
        deadline = time.time() + 60
        while True:
            rcpt = self.rpc("eth_getTransactionReceipt", [txh])
            if rcpt is not None:
                break
            if time.time() > deadline:
                raise TimeoutError(f"no receipt for {txh}")
            time.sleep(0.02)
        if int(rcpt["status"], 16) != 1:
            raise RuntimeError(f"transaction {txh} failed: {rcpt}")
        return rcpt

    def deploy(self, contract_name: str) -> str:
        art = load_artifacts()[contract_name]
        rcpt = self.transact(None, art["bytecode"])
        addr = rcpt["contractAddress"]
        if self.get_code(addr) in ("0x", "", None):
            raise RuntimeError(f"{contract_name} deployed without code at {addr}")
        return addr.lower()


# --------------------------------------------------------------------------------------------
# compiled test contracts
# --------------------------------------------------------------------------------------------
_artifacts: dict | None = None


def compile_contracts() -> dict:
    """Runs tests/contracts/compile.js (no-op when up to date) and loads the artifacts."""
    global _artifacts
    out = subprocess.run([NODE_BIN, str(COMPILE_JS)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"compile.js failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    _artifacts = json.loads(BUILD_JSON.read_text())["contracts"]
    return _artifacts


def load_artifacts() -> dict:
    return _artifacts if _artifacts is not None else compile_contracts()


def _calldata(contract: str, signature: str, args: bytes = b"") -> str:
    methods = load_artifacts()[contract]["methods"]
    if signature not in methods:
        raise KeyError(f"{contract} has no {signature}")
    return "0x" + methods[signature] + args.hex()


class Contracts:
    """The three mock contracts on one anvil, and an oracle that reads them one call at a time."""

    NAMES = ("MockAudioToken", "MockStaking", "MockDelegateManager")
    KEYS = ("token", "staking", "delegate")  # short names used by set_revert(which=...)

    def __init__(self, anvil: Anvil, token: str, staking: str, delegate: str, chunk: int = 500):
        self.anvil = anvil
        self.token, self.staking, self.delegate = token, staking, delegate
        self.chunk = chunk

    @classmethod
    def deploy_all(cls, anvil: Anvil) -> "Contracts":
        compile_contracts()
        return cls(anvil, *(anvil.deploy(n) for n in cls.NAMES))

    def address_of(self, which: str) -> str:
        return {"token": self.token, "staking": self.staking, "delegate": self.delegate,
                "MockAudioToken": self.token, "MockStaking": self.staking,
                "MockDelegateManager": self.delegate}[which]

    def _name_of(self, which: str) -> str:
        return dict(zip(self.KEYS, self.NAMES)).get(which, which)

    def _chunks(self, seq: Sequence):
        for i in range(0, len(seq), self.chunk):
            yield i, seq[i:i + self.chunk]

    def transfer(self, frm: str, to: str, value: int) -> dict:
        """MockAudioToken.move(from, to, value): moves token value and emits an ERC-20 Transfer
        event (the event path follows those). Returns the receipt (its blockNumber is the event's)."""
        args = enc_address(frm) + enc_address(to) + enc_uint(value)
        return self.anvil.transact(self.token, _calldata("MockAudioToken", "move(address,address,uint256)", args))

    def set_values(self, wallets: Sequence[str], token: Sequence[int] | None = None,
                   staked: Sequence[int] | None = None, delegated: Sequence[int] | None = None) -> None:
        """Stores the values with batched setMany transactions (None = leave that contract alone)."""
        for which, vals in (("token", token), ("staking", staked), ("delegate", delegated)):
            if vals is None:
                continue
            assert len(vals) == len(wallets)
            name = self._name_of(which)
            for i, part in self._chunks(list(wallets)):
                args = enc_uint(64) + enc_uint(64 + 32 + 32 * len(part)) + \
                    enc_address_array(part) + enc_uint_array(list(vals[i:i + len(part)]))
                self.anvil.transact(self.address_of(which),
                                    _calldata(name, "setMany(address[],uint256[])", args))

    def set_revert(self, wallets: Sequence[str], which: str, flag: bool = True) -> None:
        name = self._name_of(which)
        for _, part in self._chunks(list(wallets)):
            args = enc_uint(64) + enc_bool(flag) + enc_address_array(part)
            self.anvil.transact(self.address_of(which), _calldata(name, "setRevertMany(address[],bool)", args))

    def set_mode(self, wallets: Sequence[str], which: str, mode: int) -> None:
        """MODE_* for the read of `which` (MODE_EMPTY / MODE_SHORT give short return data)."""
        name = self._name_of(which)
        for _, part in self._chunks(list(wallets)):
            args = enc_uint(64) + enc_uint(mode) + enc_address_array(part)
            self.anvil.transact(self.address_of(which), _calldata(name, "setModeMany(address[],uint8)", args))

    def read(self, which: str, wallet: str) -> int | None:
        """One plain eth_call of the read; None when it reverts (or answers fewer than 32 bytes)."""
        sel = READS[self._name_of(which)][1]
        try:
            out = self.anvil.call(self.address_of(which), "0x" + sel + enc_address(wallet).hex())
        except RpcError:
            return None
        raw = bytes.fromhex(strip0x(out))
        return int.from_bytes(raw[:32], "big") if len(raw) >= 32 else None

    def independent_total(self, wallet: str) -> tuple[int | None, int | None, int | None]:
        """(token, staked, delegated) by three separate eth_calls; None for a failed read."""
        return tuple(self.read(w, wallet) for w in self.KEYS)  # type: ignore[return-value]
