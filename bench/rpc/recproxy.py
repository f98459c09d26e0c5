"""A tiny recording HTTP proxy for bench/rpc: keeps the raw request bodies (exactly as the client
sent them) and counts the TCP connections it accepted. Forwards every POST to the upstream on a
kept-alive connection per proxy thread. Only used for capture passes (the timed runs talk to anvil
directly: this proxy's own latency would otherwise be in every number).

    p = RecordingProxy(anvil.url).start()
    ... point the client at p.url ...
    p.bodies            # [bytes, ...] in arrival order
    p.connections       # TCP connections accepted since start()/reset()
    p.reset(); p.stop()
"""
from __future__ import annotations

import http.client
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class RecordingProxy:
    def __init__(self, upstream: str, host: str = "127.0.0.1"):
        u = urllib.parse.urlsplit(upstream)
        self.up_host, self.up_port = u.hostname, u.port or 80
        self._lock = threading.Lock()
        self._tls = threading.local()
        self.bodies: list[bytes] = []
        self.connections = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format, *args):  # noqa: A002
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with proxy._lock:
                    proxy.bodies.append(body)
                status, ctype, data = proxy._forward(body)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

            def process_request(self, request, client_address):
                with proxy._lock:
                    proxy.connections += 1
                super().process_request(request, client_address)

        self.server = Server((host, 0), Handler)
        self.host, self.port = self.server.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "RecordingProxy":
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="recproxy")
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.bodies = []
            self.connections = 0

    def _forward(self, body: bytes) -> tuple[int, str, bytes]:
        for attempt in (0, 1):
            conn = getattr(self._tls, "conn", None)
            if conn is None:
                conn = http.client.HTTPConnection(self.up_host, self.up_port, timeout=300)
                self._tls.conn = conn
            try:
                conn.request("POST", "/", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                return resp.status, resp.getheader("Content-Type", "application/json"), data
            except (OSError, http.client.HTTPException):
                conn.close()
                self._tls.conn = None
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")
