"""A local TLS terminator in front of a node: Debian's stunnel4 with a throwaway test CA.

Real providers are `https://`; anvil speaks plain HTTP. `TlsTerminator(upstream_port)` makes a CA
and a server certificate for 127.0.0.1 / localhost signed by it (openssl, P-256, valid 2 days), and
runs stunnel4 on a free port, forwarding to `127.0.0.1:upstream_port`. The extension trusts the CA
through `audius_indexer.rpc_tls_ca_file` (the files are readable by the postgres OS user).

    with TlsTerminator(anvil.port) as tls:
        cluster.set_system(rpc_url=tls.url, rpc_tls_ca_file=str(tls.ca_pem))

stunnel4 and openssl are installed by `make deps` (scripts/install-deps.sh).
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from harness.procs import stop_process, wait_serving


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stunnel_binary() -> str:
    for name in ("stunnel4", "stunnel"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("stunnel4 is not installed (make deps installs it)")


def make_certificates(d: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1 and localhost signed by it: (ca.pem,
    server.pem, server.key)."""
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run("openssl", "req", "-x509", *key, "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"),
         "-days", "2", "-subj", "/CN=audius_indexer test CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _run("openssl", "req", *key, "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"),
         "-subj", "/CN=127.0.0.1")
    (d / "server.ext").write_text("basicConstraints=critical,CA:FALSE\n"
                                  "keyUsage=critical,digitalSignature,keyEncipherment\n"
                                  "extendedKeyUsage=serverAuth\n"
                                  "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _run("openssl", "x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.pem"),
         "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-out", str(d / "server.pem"),
         "-days", "2", "-extfile", str(d / "server.ext"))
    return d / "ca.pem", d / "server.pem", d / "server.key"


class TlsTerminator:
    """stunnel4 on 127.0.0.1:`port` terminating TLS for `127.0.0.1:upstream_port`."""

    def __init__(self, upstream_port: int):
        self.dir = Path(tempfile.mkdtemp(prefix="audius_tls_"))
        self.dir.chmod(0o755)  # the CA file is read by the server, as the postgres OS user
        self.ca_pem, self.cert, self.key = make_certificates(self.dir)
        self.ca_pem.chmod(0o644)
        self.port = _free_port()
        self.url = f"https://127.0.0.1:{self.port}/"
        conf = self.dir / "stunnel.conf"
        conf.write_text("foreground = yes\npid =\n"
                        f"output = {self.dir / 'stunnel.log'}\n"
                        "[node]\n"
                        f"accept = 127.0.0.1:{self.port}\n"
                        f"connect = 127.0.0.1:{upstream_port}\n"
                        f"cert = {self.cert}\nkey = {self.key}\n"
                        "socket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n")
        self.proc = subprocess.Popen([stunnel_binary(), str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_serving(self.proc, lambda: socket.create_connection(("127.0.0.1", self.port), timeout=1).close(),
                     timeout=20, errors=OSError, exited=self._exited, on_timeout=self._not_listening)

    def _exited(self, returncode: int) -> RuntimeError:
        log = (self.dir / "stunnel.log")
        return RuntimeError(f"stunnel exited with {returncode}: "
                            f"{log.read_text(errors='replace')[-2000:] if log.exists() else ''}")

    def _not_listening(self) -> TimeoutError:
        self.stop()
        return TimeoutError("stunnel is not listening")

    def stop(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "TlsTerminator":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
