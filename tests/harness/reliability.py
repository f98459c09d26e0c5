"""Shared helpers of the reliability/security suites (test_r*.py; their tables are in docs/reliability.md).

- `error_text` / `expect_error`: every error a suite provokes is checked for its SQLSTATE and for
  the RPC URL's secrets (path `secret-key-123`, query `zzz`), and the connection must still work.
- `Report`: each case records (case, fault/input, expected, observed); at module end the table is
  written to tests/.build/suites/<suite>.md (scripts/suite-tables.py puts them into docs/reliability.md).
- `log_guard`: the server log written while a module ran must have no crashed backend / PANIC and
  no secret of the RPC URL.
"""
from __future__ import annotations

import contextlib
import random
import re
import time
from pathlib import Path

import psycopg
import pytest

from conftest import SECRETS

BUILD = Path(__file__).resolve().parent.parent / ".build" / "suites"


def set_random_values(contracts, ws, seed) -> dict[str, int]:
    """Random token/staked/delegated values for `ws` on chain (deterministic per seed); returns the
    expected total per wallet."""
    rng = random.Random(seed)
    tok = [rng.randrange(1, 10**24) for _ in ws]
    stk = [rng.randrange(0, 10**22) for _ in ws]
    dlg = [rng.randrange(0, 10**21) for _ in ws]
    contracts.set_values(ws, tok, stk, dlg)
    return {w: t + s + d for w, t, s, d in zip(ws, tok, stk, dlg)}


def error_text(e: psycopg.Error) -> str:
    d = e.diag
    return "\n".join(x for x in (d.message_primary, d.message_detail, d.message_hint, d.context,
                                 str(e)) if x)


def assert_no_secret(text: str, where: str = "error") -> None:
    for s in SECRETS:
        assert s not in text, f"{where} leaks {s!r} from the RPC URL: {text[:2000]}"


def expect_error(conn, sql: str, args=(), sqlstate: str | None = None, contains=(), max_s=None,
                 min_s=None) -> tuple[psycopg.Error, str, float]:
    """Runs `sql` expecting an ERROR (with `sqlstate` when given). Checks: no secret in any part of
    the message, every string of `contains` present, timing bounds, connection still usable."""
    t0 = time.monotonic()
    with pytest.raises(psycopg.Error) as ei:
        conn.execute(sql, args or None).fetchall()
    dt = time.monotonic() - t0
    e = ei.value
    text = error_text(e)
    assert_no_secret(text)
    if sqlstate is not None:
        assert e.sqlstate == sqlstate, f"expected SQLSTATE {sqlstate}, got {e.sqlstate}: {text}"
    for c in contains:
        assert c in text, f"error does not mention {c!r}: {text}"
    if max_s is not None:
        assert dt < max_s, f"took {dt:.2f}s, expected < {max_s}s ({text})"
    if min_s is not None:
        assert dt >= min_s, f"took only {dt:.2f}s, expected >= {min_s}s ({text})"
    if not conn.closed:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    return e, text, dt


def short(e: psycopg.Error, n: int = 110) -> str:
    msg = (e.diag.message_primary or str(e)).replace("\n", " ").replace("|", "\\|")
    return f"{e.sqlstate} {msg[:n]}{'…' if len(msg) > n else ''}"


class _Case:
    def __init__(self, case: str, fault: str, expected: str):
        self.case, self.fault, self.expected = case, fault, expected
        self.observed = ""


class Report:
    """Collects one suite's table: case → fault/input → expected → observed (PASS/FAIL)."""

    def __init__(self, suite: str, title: str):
        self.suite, self.title = suite, title
        self.rows: list[tuple[str, str, str, str, bool]] = []
        self.started = time.monotonic()
        self.prefix = ""  # put before every case name (e.g. the rpc_concurrency a pass runs with)

    @contextlib.contextmanager
    def case(self, case: str, fault: str, expected: str):
        case = self.prefix + case
        c = _Case(case, fault, expected)
        try:
            yield c
        except BaseException as e:  # noqa: BLE001
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            obs = c.observed if c.observed else first[:200]
            self.rows.append((case, fault, expected, f"**FAIL**: {obs}", False))
            raise
        self.rows.append((case, fault, expected, c.observed or "as expected", True))

    def write(self) -> Path:
        BUILD.mkdir(parents=True, exist_ok=True)
        took = time.monotonic() - self.started
        ok = sum(1 for r in self.rows if r[4])
        esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
        lines = [f"### {self.title}", "",
                 f"{len(self.rows)} cases tried, {ok} passed, {took:.1f} s.", "",
                 "| case | fault / input | expected | observed |", "|---|---|---|---|"]
        for case, fault, exp, obs, _ in self.rows:
            lines.append(f"| {esc(case)} | {esc(fault)} | {esc(exp)} | {esc(obs)} |")
        path = BUILD / f"{self.suite}.md"
        path.write_text("\n".join(lines) + "\n")
        return path


# PostgreSQL itself (the postmaster, on reload) logs every changed setting with its value, the
# superuser-only URL settings included; that is core behaviour, not an extension error message.
PG_RELOAD_LINE = re.compile(r'LOG:  parameter "audius_indexer\.rpc_urls?" changed to ')


def crash_or_secret_lines(text: str) -> list[str]:
    bad = []
    for ln in text.splitlines():
        if "terminated by signal" in ln or "PANIC" in ln or re.search(r"server process .* was terminated", ln):
            bad.append(ln)
        elif any(s in ln for s in SECRETS) and not PG_RELOAD_LINE.search(ln):
            bad.append(ln)
    return bad


@contextlib.contextmanager
def log_guard(cluster):
    """Around a whole module: the log it produced has no crash, no PANIC, no URL secret."""
    mark = len(cluster.log_text())
    yield
    bad = crash_or_secret_lines(cluster.log_text()[mark:])
    assert not bad, "server log shows crashes / secrets:\n" + "\n".join(bad[:20])


class _LocalServer:
    """A TCP socket on 127.0.0.1 with an accept loop on its own thread: `_accepted(sock)` gets each
    connection. Closed by close() or by leaving a `with` block."""

    name = "server"

    def __init__(self, backlog: int = 16):
        import socket
        import threading
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"{self.name}:{self.port}")

    def _run(self):
        import socket
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._accepted(c)

    def _accepted(self, c) -> None:
        raise NotImplementedError

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Listener(_LocalServer):
    """A TCP socket on 127.0.0.1 that only counts the connections it receives (and closes them):
    the place a redirect or a refused URL scheme must never reach."""

    name = "listener"

    def __init__(self):
        super().__init__()
        self.connections = 0
        self._thread.start()

    def _accepted(self, c) -> None:
        self.connections += 1
        c.close()


class TcpRelay(_LocalServer):
    """A byte relay on 127.0.0.1 in front of a node, below HTTP: it sees any protocol (HTTP/1.1 or
    HTTP/2) and counts the TCP connections the client opens, and those that began with the HTTP/2
    preface. Faults a real node cannot produce on demand, at the TCP level:
      drop_all()    closes every live connection at once (RST), as a node restarting;
      stall = True  stops forwarding in both directions (connections stay open), as a node hung."""

    PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    name = "relay"

    def __init__(self, upstream: str):
        import threading
        import urllib.parse
        super().__init__(backlog=64)
        u = urllib.parse.urlsplit(upstream)
        self.up = (u.hostname, u.port or 80)
        self.url = f"http://127.0.0.1:{self.port}/"
        self.connections = 0
        self.h2_connections = 0
        self.stall = False
        self._lock = threading.Lock()
        self._live: list = []
        self._thread.start()

    def reset(self):
        with self._lock:
            self.connections = self.h2_connections = 0

    def _accepted(self, c) -> None:
        import socket
        import threading
        up = socket.create_connection(self.up)
        for s in (c, up):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self.connections += 1
            self._live += [c, up]
        first = {"seen": False}
        threading.Thread(target=self._pump, args=(c, up, first), daemon=True).start()
        threading.Thread(target=self._pump, args=(up, c, None), daemon=True).start()

    def _pump(self, src, dst, first):
        import time
        try:
            while not self._stop.is_set():
                if self.stall:
                    time.sleep(0.01)
                    continue
                data = src.recv(1 << 16)
                if not data:
                    break
                if first is not None and not first["seen"]:
                    first["seen"] = True
                    if data.startswith(self.PREFACE[:len(data)]):
                        with self._lock:
                            self.h2_connections += 1
                while self.stall and not self._stop.is_set():
                    time.sleep(0.01)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def drop_all(self):
        import socket
        import struct
        with self._lock:
            live, self._live = self._live, []
        for s in live:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def close(self):
        super().close()
        self.drop_all()
