#!/usr/bin/env python3
"""HTTP client comparison for the RPC transport: (a) ureq Agents vs (b) hyper-util + hyper-rustls.

`make bench-http` (not part of `make test`; no PostgreSQL needed; ~3-5 min on 2 cores plus the
first build). Builds bench/http (its own Cargo workspace and Cargo.lock), starts one anvil
(Multicall3 + the three mock contracts, eth_call gas cap 2^32, no request size limit; the
tests/harness way), a throwaway test CA and server certificate (openssl; CN 127.0.0.1, SAN
IP:127.0.0.1 + DNS:localhost) and stunnel4 terminating TLS in front of anvil (installed with
apt-get when missing and running as root), runs target/release/bench-http against
http://anvil and https://stunnel, writes everything to bench/results/http-clients-<date>.txt
and stops what it started. See bench/http/src/main.rs for what is measured.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))  # bench.common, also when started as a script

from bench.common import cpu_model
from harness.chain import ANVIL_BIN, Anvil, Contracts, wallet_address
from harness.tls import TlsTerminator, stunnel_binary

MANIFEST = HERE / "Cargo.toml"
BINARY = HERE / "target" / "release" / "bench-http"
SEEDED = 200  # wallets given non-zero values (the others read 0: the same RPC work)


def sh(*cmd: str, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, **kw)
    if r.returncode != 0:
        err = (r.stderr or b"")[-2000:] if kw.get("capture_output") else b""
        sys.exit(f"bench/http: {' '.join(cmd)} failed ({r.returncode})\n{err.decode(errors='replace')}")
    return r


def out(*cmd: str) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"? ({e})"


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def locked_versions() -> str:
    text = (HERE / "Cargo.lock").read_text()
    want = ["ureq", "rustls", "ring", "hyper", "hyper-util", "hyper-rustls", "h2", "tokio",
            "tokio-rustls", "http-body-util", "webpki-roots", "serde_json", "alloy-primitives"]
    found = dict(re.findall(r'name = "([^"]+)"\nversion = "([^"]+)"', text))
    return ", ".join(f"{n} {found[n]}" for n in want if n in found)


def machine() -> str:
    return f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs (nproc {out('nproc')}), {cpu_model()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reps", type=int, default=21, help="P2 repetitions per cell (>= 9)")
    ap.add_argument("--p4-reps", type=int, default=15, help="P4 passes per variant (>= 9)")
    ap.add_argument("--no-build", action="store_true", help="use the existing binary")
    ap.add_argument("--out", type=Path, default=None, help="results file")
    ap.add_argument("--quiet-wait", type=float, default=600,
                    help="wait up to this many seconds for the 1-minute load average to fall below "
                         "--quiet-load before starting (0: do not wait)")
    ap.add_argument("--quiet-load", type=float, default=0.5 * (os.cpu_count() or 2))
    ap.add_argument("--burn", type=int, default=0,
                    help="keep this many busy-loop processes running during the bench (a CPU-"
                         "saturated host); the results file is then http-clients-<date>-burn<K>.txt")
    ap.add_argument("--only", default="", help="only these cells: scheme:load:N,... (* = any)")
    args = ap.parse_args()
    date = dt.date.today().isoformat()
    suffix = f"-burn{args.burn}" if args.burn else ""
    result = args.out or REPO / "bench" / "results" / f"http-clients-{date}{suffix}.txt"

    if not args.no_build:
        sh("cargo", "build", "--release", "--locked", "--manifest-path", str(MANIFEST))
    if not BINARY.exists():
        sys.exit(f"bench/http: {BINARY} missing (build it first)")
    stunnel = stunnel_binary()
    if not args.burn:
        wait_quiet(args.quiet_load, args.quiet_wait)

    tmp = Path(tempfile.mkdtemp(prefix="audius_indexer_bench_http_"))
    anvil = tunnel = None
    burners: list[subprocess.Popen] = []
    lines: list[str] = []
    complete = False

    def log(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    try:
        log(f"bench/http started {dt.datetime.now():%Y-%m-%d %H:%M:%S}; "
            f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        log(f"machine: {machine()}")
        log(f"rustc: {out('rustc', '--version')}; crates (bench/http/Cargo.lock): {locked_versions()}")
        log(f"anvil: {out(str(ANVIL_BIN), '--version').splitlines()[0]}; "
            f"stunnel {stunnel_version(stunnel)}; "
            f"{out('openssl', 'version')}")
        anvil = Anvil(gas_limit=4_294_967_296, no_request_size_limit=True).start()
        anvil.install_multicall3()
        c = Contracts.deploy_all(anvil)
        wallets = [wallet_address(i) for i in range(SEEDED)]
        c.set_values(wallets, token=[10**18 + i for i in range(SEEDED)],
                     staked=[2 * 10**18 + i for i in range(SEEDED)],
                     delegated=[3 * 10**18 + i for i in range(SEEDED)])
        tunnel = TlsTerminator(anvil.port)
        ca, tls_port = tunnel.ca_pem, tunnel.port
        log(f"anvil {anvil.url} (gas limit 4,294,967,296, no request size limit), Multicall3 + mocks, "
            f"{SEEDED} of 20,000 wallets seeded with non-zero values; stunnel https://127.0.0.1:{tls_port} "
            f"-> anvil (TLS by OpenSSL, P-256 server key, TCP_NODELAY both sides, no ALPN)")
        if args.burn:
            burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                       for _ in range(args.burn)]
            log(f"CPU saturated: {args.burn} busy-loop processes run during the bench")
        log()
        cmd = [str(BINARY), "--http", anvil.url, "--https", f"https://127.0.0.1:{tls_port}",
               "--ca", str(ca), "--token", c.token, "--staking", c.staking, "--delegate", c.delegate,
               "--reps", str(max(args.reps, 9)), "--p4-reps", str(max(args.p4_reps, 9))]
        if args.only:
            cmd += ["--only", args.only]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            log(line.rstrip("\n"))
        if proc.wait() != 0:
            raise RuntimeError(f"bench-http exited with {proc.returncode}")
        if not anvil.alive() or tunnel.proc.poll() is not None:
            raise RuntimeError("anvil or stunnel died during the bench")
        complete = True
    finally:
        for b in burners:
            stop(b)
        if tunnel:
            tunnel.stop()
        if anvil is not None:
            anvil.destroy()
        shutil.rmtree(tmp, ignore_errors=True)
        if complete:
            result.parent.mkdir(parents=True, exist_ok=True)
            result.write_text("\n".join(lines) + "\n")
            print(f"written to {result.relative_to(REPO) if result.is_relative_to(REPO) else result}")


def wait_quiet(limit: float, max_wait: float) -> None:
    """Another benchmark or test run on the machine would blur the comparison: wait a while."""
    deadline = time.time() + max_wait
    said = False
    while os.getloadavg()[0] >= limit and time.time() < deadline:
        if not said:
            print(f"bench/http: load average {os.getloadavg()[0]:.2f} >= {limit:.2f}; waiting up to "
                  f"{max_wait:.0f} s for a quieter machine", flush=True)
            said = True
        time.sleep(5)


def stunnel_version(binary: str) -> str:
    m = re.search(r"stunnel (\S+)", out(binary, "-version"))
    return m.group(1) if m else "?"


if __name__ == "__main__":
    main()
