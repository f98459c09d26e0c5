"""Child processes of the harness (anvil, stunnel, the Prometheus exporter): waiting until one
serves, and stopping one."""
from __future__ import annotations

import subprocess
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_serving(proc: subprocess.Popen, probe: Callable[[], T], *, timeout: float,
                 errors: type[BaseException] | tuple[type[BaseException], ...],
                 exited: Callable[[int], BaseException], interval: float = 0.05,
                 on_timeout: Callable[[], BaseException] | None = None) -> T:
    """Calls `probe()` until it returns and returns its value, retrying every `interval` s while it
    raises one of `errors`. Raises `exited(returncode)` as soon as `proc` has exited. Past `timeout`
    s, raises the exception `on_timeout()` returns (it may clean up first), or, without
    `on_timeout`, the probe's last error itself."""
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            raise exited(proc.returncode)
        try:
            return probe()
        except errors:
            if time.time() > deadline:
                if on_timeout is None:
                    raise
                raise on_timeout()
            time.sleep(interval)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM to a running `proc`, SIGKILL if it has not exited within `timeout` s; waits for it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
