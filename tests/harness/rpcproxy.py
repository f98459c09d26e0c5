"""A recording, fault-injecting JSON-RPC proxy in front of a real node (anvil).

Every request is recorded (method; for eth_call the `to` and whether it is a Multicall3 aggregate3
call, and then how many Call3 entries it carries and their targets/selectors). Faults that a real
node cannot produce on demand are injected programmatically; everything else passes through.

    p = RpcProxy(anvil.url).start()
    p.fault("http429", retry_after=1, times=1)   # next matching request gets a 429, then pass-through
    p.fault("hang")                             # until clear_faults() / stop()
    p.count(method="eth_call", aggregate3=True)
    p.reset(); p.clear_faults(); p.stop()

RpcProxy(upstream, keep_bodies=True) also keeps every raw request body, exactly as the client sent it
(`p.bodies`, in arrival order; bench/rpc measures them); `p.accepted` counts the TCP connections
accepted. Both since start() / the last reset().

Fault modes (params in brackets):
  http429 [retry_after], http500, http502, http503, http_status [status, body]
  hang            read the request, never answer until the fault is cleared or the proxy stops
  delay [ms]      answer correctly, but only after `ms`
  slow_drip [interval_ms]  forward, send the headers, then the body a byte every interval_ms
  truncated [missing]      forward, announce Content-Length larger than the body sent, then close
  garbage         200 with a non-JSON (HTML) body
  invalid_json    200 application/json whose body is cut-off JSON
  bad_hex         200 JSON-RPC result "0xzz..." (not hex)
  no_result       200 JSON-RPC object with neither result nor error
  result [value]  200 JSON-RPC result = value (e.g. "0x" as a node answers for an address w/o code)
  jsonrpc_error [code, message, data]   200 JSON-RPC error object (default -32005 "rate limited")
  wrong_result_count [delta]  forward an aggregate3 call, re-encode its Result3[] with `delta`
                  entries (-1: the last dropped; +1: the last duplicated); aggregate3 calls only
  out_of_gas_above [holders]  aggregate3 calls with more than 3*holders+1 Call3 entries get
                  {"code":-32000,"message":"out of gas"}; others pass (persistent by default)
  fail_holder [holder, code, message, status]  aggregate3 calls whose Call3 arguments include
                  `holder` get a JSON-RPC error (default -32000 "execution aborted (timeout = 5s)", an
                  EVM execution timeout), or with `status` that HTTP status; other requests pass
  block_number [value]  forward an aggregate3 call, then replace its first result (Multicall3
                  getBlockNumber()) with the uint256 `value`; aggregate3 calls only
  max_log_range [blocks, code, message, status]  eth_getLogs requests whose toBlock - fromBlock + 1
                  exceeds `blocks` are refused as a provider refuses a too-wide range: a JSON-RPC
                  error (default -32005 "query exceeds max block range <blocks>"), or with `status`
                  that HTTP status (e.g. 413); narrower eth_getLogs and every other request pass
                  (persistent by default)
  truncated_abi [keep]  forward an aggregate3 call, then cut its returned ABI payload to its first
                  `keep` bytes (default: half of it, whole bytes): the hex stays hex, the Result3[]
                  ends early; aggregate3 calls only
  bad_header [number, number_delta, hash_bytes]  forward an eth_getBlockByNumber, then answer a
                  header whose `number` is `number` (an int), or the asked number + `number_delta`,
                  and/or whose `hash` is cut (or padded with 0x11 bytes) to `hash_bytes` bytes;
                  eth_getBlockByNumber only (a null header: mode `result` with value=None)
  bad_logs [count, block, address, removed, holder]  forward an eth_getLogs, then append `count`
                  (default 1) made-up ERC-20 Transfer logs: emitted by `address` (default: the
                  address asked for, the first of an asked list), at `block` ("in" = spread over
                  the asked range (default), "above" = toBlock + 1, "below" = fromBlock - 1, or an
                  int), `removed` (default False), from a made-up wallet to `holder` (default: a
                  made-up wallet per log);
                  eth_getLogs only. The made-up logs are built once per asked range (count=100000
                  answers ~45 MB of JSON)
  pad [bytes]     forward, then pad the answer with JSON white space (trailing spaces) to `bytes`
                  bytes in all: the same answer, just that large (use methods= to pick one method)
  redirect [location]  302 with Location (default: the upstream URL)
  close           read the request, then close the socket without any response
  reset           read the request, then close the socket with a TCP RST
Common parameters of fault(): times (None = until cleared, default), after (let this many matching
requests pass first), methods (None = every method, default; or a name / list of names).
"""
from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .chain import SEL_AGGREGATE3, decode_call3_array, decode_result3_array, encode_result3_array, strip0x

MODES = {
    "http429", "http500", "http502", "http503", "http_status", "hang", "delay", "slow_drip",
    "truncated", "garbage", "invalid_json", "bad_hex", "no_result", "result", "jsonrpc_error",
    "wrong_result_count", "out_of_gas_above", "redirect", "close", "reset", "fail_holder", "block_number",
    "max_log_range", "truncated_abi", "bad_header", "bad_logs", "pad",
}
AGGREGATE3_ONLY = {"wrong_result_count", "out_of_gas_above", "fail_holder", "block_number", "truncated_abi"}
# modes that only ever apply to one JSON-RPC method
METHOD_ONLY = {"bad_header": "eth_getBlockByNumber", "bad_logs": "eth_getLogs"}


@dataclass
class Record:
    http_index: int           # which HTTP request (a batch shares one)
    path: str                 # request path incl. query, as the client sent it
    method: str | None        # None when the body was not a JSON-RPC object
    to: str | None = None     # eth_call target (lowercase)
    aggregate3: bool = False  # eth_call whose calldata starts with 0x82ad56cb
    n_calls: int | None = None  # number of Call3 entries of an aggregate3 call
    calls: list = field(default_factory=list)  # [(target, allowFailure, selector hex, args hex)]
    block: object = None      # eth_call block parameter
    fault: str | None = None  # fault applied to this request, if any
    time: float = 0.0
    log_range: tuple | None = None  # eth_getLogs: (fromBlock, toBlock) as ints (None if not numeric)
    # eth_getLogs: the filter's address as sent (a string or a JSON array of strings) and its topics
    log_address: object = None
    log_topics: object = None


class Fault:
    def __init__(self, mode: str, times: int | None, after: int, methods, params: dict):
        if mode not in MODES:
            raise ValueError(f"unknown fault mode {mode!r}; known: {sorted(MODES)}")
        self.mode, self.times, self.after, self.params = mode, times, after, params
        if isinstance(methods, str):
            methods = [methods]
        self.methods = None if methods is None else set(methods)
        self.hits = 0
        self.released = threading.Event()

    def matches(self, recs: list[Record]) -> bool:
        if self.methods is not None and not any(r.method in self.methods for r in recs):
            return False
        if self.mode in METHOD_ONLY and not any(r.method == METHOD_ONLY[self.mode] for r in recs):
            return False
        if self.mode in AGGREGATE3_ONLY:
            agg = [r for r in recs if r.aggregate3]
            if not agg:
                return False
            if self.mode == "out_of_gas_above":
                limit = 3 * int(self.params.get("holders", 0)) + 1
                return any((r.n_calls or 0) > limit for r in agg)
            if self.mode == "fail_holder":
                h = strip0x(self.params["holder"]).lower().rjust(64, "0")
                return any(args.lower() == h for r in agg for (_t, _af, _sel, args) in r.calls)
        if self.mode == "max_log_range":
            limit = int(self.params.get("blocks", 1000))
            return any(r.method == "eth_getLogs" and r.log_range is not None
                       and r.log_range[1] - r.log_range[0] + 1 > limit for r in recs)
        return True

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times


class RpcProxy:
    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0, keep_bodies: bool = False,
                 upstream_timeout: float = 120):
        u = urllib.parse.urlsplit(upstream)
        self.upstream = upstream
        self.up_host, self.up_port = u.hostname, u.port or 80
        self.up_path = u.path or "/"
        self._lock = threading.Lock()
        self._records: list[Record] = []
        self.keep_bodies = keep_bodies
        self.upstream_timeout = upstream_timeout
        self._bodies: list[bytes] = []  # raw request bodies (keep_bodies=True only)
        self._faults: list[Fault] = []
        self._http_count = 0
        self._accepted = 0  # TCP connections accepted since the last reset()
        self._h2_probes = 0  # of those, connections that opened with the HTTP/2 preface (refused: 505)
        self._in_flight = 0
        self._peak_in_flight = 0  # most requests being answered at once since the last reset()
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._tls = threading.local()
        proxy = self

        class Handler(_Handler):
            pass
        Handler.proxy = proxy

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 128

            def process_request(self, request, client_address):
                with proxy._lock:
                    proxy._conns.add(request)
                    proxy._accepted += 1
                super().process_request(request, client_address)

            def shutdown_request(self, request):
                with proxy._lock:
                    proxy._conns.discard(request)
                super().shutdown_request(request)

        self.server = Server((host, port), Handler)
        self.host, self.port = self.server.server_address[:2]
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url_with(self, path_and_query: str) -> str:
        """e.g. url_with('/secret-key-123?apikey=zzz'); the proxy ignores path and query."""
        return self.url + path_and_query

    def start(self) -> "RpcProxy":
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"rpcproxy:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self.clear_faults()
        self.server.shutdown()
        self.server.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread:
            self._thread.join(10)

    # -- faults ----------------------------------------------------------------------------
    def fault(self, mode: str, times: int | None = None, after: int = 0, methods=None, **params) -> Fault:
        f = Fault(mode, times, after, methods, params)
        with self._lock:
            self._faults.append(f)
        return f

    def clear_faults(self) -> None:
        with self._lock:
            faults, self._faults = self._faults, []
        for f in faults:
            f.released.set()

    def _take_fault(self, recs: list[Record]) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.exhausted or not f.matches(recs):
                    continue
                if f.after > 0:
                    f.after -= 1
                    continue
                f.hits += 1
                for r in recs:
                    r.fault = f.mode
                return f
        return None

    # -- recording -------------------------------------------------------------------------
    @property
    def requests(self) -> list[Record]:
        with self._lock:
            return list(self._records)

    @property
    def http_requests(self) -> int:
        with self._lock:
            return self._http_count

    @property
    def bodies(self) -> list[bytes]:
        """Raw request bodies since the last reset(), in arrival order (empty unless keep_bodies)."""
        with self._lock:
            return list(self._bodies)

    @property
    def accepted(self) -> int:
        """TCP connections accepted since the last reset()."""
        with self._lock:
            return self._accepted

    @property
    def h2_probes(self) -> int:
        """Connections since the last reset() that opened with the HTTP/2 preface. This proxy speaks
        HTTP/1.1 only: it answers 505 and closes, and the client goes on over HTTP/1.1."""
        with self._lock:
            return self._h2_probes

    @property
    def peak_in_flight(self) -> int:
        """Most HTTP requests the proxy was answering at the same time since the last reset()."""
        with self._lock:
            return self._peak_in_flight

    def reset(self) -> None:
        with self._lock:
            self._records.clear()
            self._bodies.clear()
            self._http_count = 0
            self._accepted = 0
            self._h2_probes = 0
            self._peak_in_flight = self._in_flight

    def count(self, method: str | None = None, aggregate3: bool | None = None, to: str | None = None) -> int:
        return len(self.select(method, aggregate3, to))

    def select(self, method: str | None = None, aggregate3: bool | None = None,
               to: str | None = None) -> list[Record]:
        return [r for r in self.requests
                if (method is None or r.method == method)
                and (aggregate3 is None or r.aggregate3 == aggregate3)
                and (to is None or r.to == to.lower())]

    def _record(self, path: str, body: bytes) -> tuple[list[Record], object]:
        with self._lock:
            idx = self._http_count
            self._http_count += 1
            if self.keep_bodies:
                self._bodies.append(body)
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        entries = doc if isinstance(doc, list) else [doc]
        recs = []
        for e in entries:
            r = Record(http_index=idx, path=path, method=None, time=time.time())
            if isinstance(e, dict):
                r.method = e.get("method")
                params = e.get("params") or []
                if r.method == "eth_getLogs" and params and isinstance(params[0], dict):
                    try:
                        r.log_range = (int(params[0]["fromBlock"], 16), int(params[0]["toBlock"], 16))
                    except (KeyError, TypeError, ValueError):
                        r.log_range = None
                    r.log_address = params[0].get("address")
                    r.log_topics = params[0].get("topics")
                if r.method == "eth_call" and params and isinstance(params[0], dict):
                    tx = params[0]
                    r.to = (tx.get("to") or "").lower() or None
                    r.block = params[1] if len(params) > 1 else None
                    data = strip0x(tx.get("data") or tx.get("input") or "")
                    if data[:8].lower() == SEL_AGGREGATE3:
                        r.aggregate3 = True
                        try:
                            calls = decode_call3_array(bytes.fromhex(data[8:]))
                            r.calls = [(t, af, d[:4].hex(), d[4:].hex()) for t, af, d in calls]
                            r.n_calls = len(calls)
                        except ValueError:
                            # fall back to the length word at offset 4+32
                            try:
                                r.n_calls = int(data[8 + 64:8 + 128], 16)
                            except ValueError:
                                r.n_calls = None
            recs.append(r)
        with self._lock:
            self._records.extend(recs)
        return recs, doc

    # -- upstream --------------------------------------------------------------------------
    def _forward(self, body: bytes, headers: dict) -> tuple[int, list, bytes]:
        """POSTs to the upstream on this thread's kept-alive connection (one reconnect on error)."""
        for attempt in (0, 1):
            conn = getattr(self._tls, "conn", None)
            if conn is None:
                conn = http.client.HTTPConnection(self.up_host, self.up_port, timeout=self.upstream_timeout)
                self._tls.conn = conn
            try:
                conn.request("POST", self.up_path, body=body,
                             headers={"Content-Type": headers.get("Content-Type", "application/json")})
                resp = conn.getresponse()
                data = resp.read()
                return resp.status, resp.getheaders(), data
            except (OSError, http.client.HTTPException):
                conn.close()
                self._tls.conn = None
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")


def _ids(doc) -> list:
    if isinstance(doc, list):
        return [e.get("id") if isinstance(e, dict) else None for e in doc]
    return [doc.get("id") if isinstance(doc, dict) else None]


def _per_entry(doc, make) -> bytes:
    """A JSON-RPC answer shaped like the request (object or batch), one made entry per id."""
    answers = [dict(jsonrpc="2.0", id=i, **make()) for i in _ids(doc)]
    return json.dumps(answers if isinstance(doc, list) else answers[0]).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    proxy: RpcProxy  # set per proxy

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    def parse_request(self):
        if self.raw_requestline.startswith(b"PRI * HTTP/2.0"):
            with self.proxy._lock:
                self.proxy._h2_probes += 1
        return super().parse_request()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes, ctype: str = "application/json", extra: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, str(v))
        self._answered()  # headers are buffered until end_headers(): nothing has gone out yet
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _drop(self, rst: bool = False):
        self._answered()
        self.close_connection = True
        if rst:
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR) if not rst else None
        except OSError:
            pass

    def do_GET(self):
        self._send(405, b"method not allowed", "text/plain")

    def do_POST(self):
        p = self.proxy
        with p._lock:
            p._in_flight += 1
            p._peak_in_flight = max(p._peak_in_flight, p._in_flight)
        self._answering = True
        try:
            self._post()
        finally:
            self._answered()

    def _answered(self):
        """The request stops counting as in flight: called before the answer's last bytes go out
        (or the connection is dropped), never after. The client may send its next request, on
        another kept-alive connection, the moment it has the answer; counting this one until this
        thread runs again would report two in flight where the client never had more than one."""
        if getattr(self, "_answering", False):
            self._answering = False
            with self.proxy._lock:
                self.proxy._in_flight -= 1

    def _post(self):
        p = self.proxy
        body = self._read_body()
        recs, doc = p._record(self.path, body)
        f = p._take_fault(recs)
        mode = f.mode if f else None
        prm = f.params if f else {}

        if mode in ("http429", "http500", "http502", "http503", "http_status"):
            status = {"http429": 429, "http500": 500, "http502": 502, "http503": 503}.get(mode) \
                or int(prm.get("status", 500))
            extra = {}
            if mode == "http429" and prm.get("retry_after") is not None:
                extra["Retry-After"] = prm["retry_after"]
            text = prm.get("body", f"{status} injected by rpcproxy\n").encode()
            return self._send(status, text, "text/plain", extra)
        if mode == "hang":
            while not f.released.wait(0.1):
                if p._stop.is_set():
                    break
            return self._drop()
        if mode in ("close", "reset"):
            return self._drop(rst=(mode == "reset"))
        if mode == "garbage":
            return self._send(200, b"<html><body><h1>Welcome to nginx!</h1>\x00\xff\xfe garbage</body></html>",
                              "text/html")
        if mode == "invalid_json":
            return self._send(200, b'{"jsonrpc":"2.0","id":1,"result":"0x0000')
        if mode == "bad_hex":
            return self._send(200, _per_entry(doc, lambda: {"result": "0xzz" + "00" * 31}))
        if mode == "no_result":
            return self._send(200, _per_entry(doc, lambda: {}))
        if mode == "result":
            return self._send(200, _per_entry(doc, lambda: {"result": prm.get("value", "0x")}))
        if mode == "jsonrpc_error":
            err = {"code": int(prm.get("code", -32005)), "message": prm.get("message", "rate limited")}
            if prm.get("data") is not None:
                err["data"] = prm["data"]
            return self._send(200, _per_entry(doc, lambda: {"error": err}))
        if mode == "out_of_gas_above":
            return self._send(200, _per_entry(doc, lambda: {"error": {"code": -32000, "message": "out of gas"}}))
        if mode == "fail_holder" and prm.get("status"):
            return self._send(int(prm["status"]), b"gateway timeout injected by rpcproxy\n", "text/plain")
        if mode == "fail_holder":
            err = {"code": int(prm.get("code", -32000)),
                   "message": prm.get("message", "execution aborted (timeout = 5s)")}
            return self._send(200, _per_entry(doc, lambda: {"error": err}))
        if mode == "max_log_range":
            if prm.get("status"):
                return self._send(int(prm["status"]), prm.get("body", "Request Entity Too Large\n").encode(),
                                  "text/plain")
            err = {"code": int(prm.get("code", -32005)),
                   "message": prm.get("message", f"query exceeds max block range {int(prm.get('blocks', 1000))}")}
            return self._send(200, _per_entry(doc, lambda: {"error": err}))
        if mode == "redirect":
            loc = prm.get("location", p.upstream)
            return self._send(302, b"", "text/plain", {"Location": loc})
        if mode == "delay":
            time.sleep(float(prm.get("ms", 1000)) / 1000)

        # pass-through (possibly then mangled)
        try:
            status, headers, data = p._forward(body, dict(self.headers))
        except (OSError, http.client.HTTPException) as e:
            return self._send(502, f"rpcproxy: upstream unreachable: {e}\n".encode(), "text/plain")

        if mode == "wrong_result_count":
            data = _mangle_result_count(data, int(prm.get("delta", -1)))
        if mode == "block_number":
            data = _mangle_block_number(data, int(prm["value"]))
        if mode == "truncated_abi":
            data = _mangle_truncate_abi(data, prm.get("keep"))
        if mode == "bad_header":
            data = _mangle_header(data, doc, prm)
        if mode == "bad_logs":
            data = _mangle_logs(data, doc, f)
        if mode == "pad":
            data = data + b" " * max(0, int(prm["bytes"]) - len(data))
            try:
                return self._send(status, data)
            except OSError:  # the client stopped reading a too-large answer
                return self._drop()
        if mode == "truncated":
            missing = int(prm.get("missing", 100))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data) + missing))
            self.end_headers()
            self.wfile.write(data[: max(1, len(data) // 2)] if prm.get("half", True) else data)
            self.wfile.flush()
            return self._drop()
        if mode == "slow_drip":
            interval = float(prm.get("interval_ms", 200)) / 1000
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.flush()
            try:
                for i in range(len(data)):
                    if p._stop.is_set() or f.released.is_set():
                        break
                    self.wfile.write(data[i:i + 1])
                    self.wfile.flush()
                    time.sleep(interval)
            except OSError:
                pass
            return self._drop()
        ctype = next((v for k, v in headers if k.lower() == "content-type"), "application/json")
        return self._send(status, data, ctype)


def _mangle_block_number(data: bytes, value: int) -> bytes:
    doc = json.loads(data)

    def fix(e):
        if isinstance(e, dict) and isinstance(e.get("result"), str):
            results = decode_result3_array(bytes.fromhex(strip0x(e["result"])))
            results[0] = (True, value.to_bytes(32, "big"))
            e["result"] = "0x" + encode_result3_array(results).hex()
        return e
    doc = [fix(e) for e in doc] if isinstance(doc, list) else fix(doc)
    return json.dumps(doc).encode()


def _mangle_result_count(data: bytes, delta: int) -> bytes:
    doc = json.loads(data)

    def fix(e):
        if isinstance(e, dict) and isinstance(e.get("result"), str):
            results = decode_result3_array(bytes.fromhex(strip0x(e["result"])))
            if delta < 0:
                results = results[:len(results) + delta]
            else:
                results = results + [results[-1]] * delta
            e["result"] = "0x" + encode_result3_array(results).hex()
        return e
    doc = [fix(e) for e in doc] if isinstance(doc, list) else fix(doc)
    return json.dumps(doc).encode()


def _by_id(doc) -> dict:
    """Request entries of a JSON-RPC object or batch, by id."""
    entries = doc if isinstance(doc, list) else [doc]
    return {e.get("id"): e for e in entries if isinstance(e, dict)}


def _mangle_each(data: bytes, doc, fix) -> bytes:
    """Applies fix(answer_entry, request_entry) to every answer entry that has a result."""
    answer = json.loads(data)
    reqs = _by_id(doc)

    def one(e):
        if isinstance(e, dict) and "result" in e:
            fix(e, reqs.get(e.get("id")) or {})
        return e
    answer = [one(e) for e in answer] if isinstance(answer, list) else one(answer)
    return json.dumps(answer).encode()


def _mangle_truncate_abi(data: bytes, keep) -> bytes:
    def fix(e, _req):
        if isinstance(e.get("result"), str):
            raw = bytes.fromhex(strip0x(e["result"]))
            n = len(raw) // 2 if keep is None else int(keep)
            e["result"] = "0x" + raw[:n].hex()
    return _mangle_each(data, None, fix)


def _mangle_header(data: bytes, doc, prm: dict) -> bytes:
    def fix(e, req):
        h = e.get("result")
        if not isinstance(h, dict):
            return
        if prm.get("number") is not None:
            h["number"] = hex(int(prm["number"]))
        elif prm.get("number_delta") is not None:
            asked = int((req.get("params") or ["0x0"])[0], 16)
            h["number"] = hex(asked + int(prm["number_delta"]))
        if prm.get("hash_bytes") is not None:
            raw = bytes.fromhex(strip0x(h["hash"]))
            n = int(prm["hash_bytes"])
            h["hash"] = "0x" + (raw[:n] + b"\x11" * max(0, n - len(raw))).hex()
    return _mangle_each(data, doc, fix)


TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"


def _made_up_logs(req: dict, prm: dict) -> list:
    q = (req.get("params") or [{}])[0]
    lo, hi = int(q["fromBlock"], 16), int(q["toBlock"], 16)
    count = int(prm.get("count", 1))
    where = prm.get("block", "in")
    asked = q.get("address")
    if isinstance(asked, list):  # an address list: the first one (the token) emits the made-up Transfers
        asked = asked[0] if asked else None
    emitter = (prm.get("address") or asked or "0x" + "00" * 20).lower()
    holder = prm.get("holder")
    removed = bool(prm.get("removed", False))
    word = lambda a: "0x" + strip0x(a).lower().rjust(64, "0")  # noqa: E731
    out = []
    for i in range(count):
        if where == "in":
            blk = lo + (i * (hi - lo + 1)) // count
        elif where == "above":
            blk = hi + 1
        elif where == "below":
            blk = lo - 1
        else:
            blk = int(where)
        frm = "%040x" % (0xf00d << 128 | i)
        to = holder or "%040x" % (0xbeef << 128 | i)
        out.append({
            "address": emitter,
            "topics": [TRANSFER_TOPIC, word(frm), word(to)],
            "data": "0x" + (i + 1).to_bytes(32, "big").hex(),
            "blockNumber": hex(blk),
            "blockHash": "0x" + (blk & (1 << 256) - 1).to_bytes(32, "big").hex(),
            "transactionHash": "0x" + (0xabc << 200 | i).to_bytes(32, "big").hex(),
            "transactionIndex": "0x0",
            "logIndex": hex(i),
            "removed": removed,
        })
    return out


def _mangle_logs(data: bytes, doc, f: Fault) -> bytes:
    answer = json.loads(data)
    reqs = _by_id(doc)
    cache = f.params.setdefault("_cache", {})

    def one(e):
        if isinstance(e, dict) and isinstance(e.get("result"), list):
            req = reqs.get(e.get("id")) or {}
            q = (req.get("params") or [{}])[0]
            asked = q.get("address")
            key = (q.get("fromBlock"), q.get("toBlock"), tuple(asked) if isinstance(asked, list) else asked)
            if key not in cache:
                cache[key] = _made_up_logs(req, f.params)
            e["result"] = e["result"] + cache[key]
        return e
    answer = [one(e) for e in answer] if isinstance(answer, list) else one(answer)
    return json.dumps(answer).encode()
