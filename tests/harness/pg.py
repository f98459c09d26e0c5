"""Throwaway PostgreSQL 15 clusters for tests, benchmarks and the demo.

PostgreSQL refuses to run as root, so initdb/postgres run as the `postgres` OS user, under `env -i`
(root's RUST_BACKTRACE etc. must not leak into the server), in a temp dir owned by postgres, on a free
port, with the unix socket inside that dir and TCP on 127.0.0.1 only.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
SERVER_ENV = ["env", "-i", f"PATH={PG_BIN}:/usr/bin:/bin", "LANG=C.UTF-8", "TZ=UTC"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(*cmd: str, check: bool = True, bin_dir: Path = PG_BIN,
                 **kw) -> subprocess.CompletedProcess:
    prefix = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
    env = SERVER_ENV if bin_dir == PG_BIN else \
        [f"PATH={bin_dir}:/usr/bin:/bin" if e.startswith("PATH=") else e for e in SERVER_ENV]
    return subprocess.run(prefix + env + list(cmd), check=check, text=True,
                          capture_output=True, **kw)


class Cluster:
    """One initdb'd cluster. `settings` go into postgresql.conf (values are written verbatim).
    `bin_dir` (default PG_BIN) is the PostgreSQL bin directory to run: a private copy of the tree
    (tests/upgrade/test_upgrade_live.py) makes the server load extensions from that copy, since PostgreSQL
    finds its lib and share directories relative to its binary."""

    def __init__(self, settings: dict[str, str] | None = None, preload: list[str] | None = None,
                 name: str = "pg", bin_dir: Path | str | None = None):
        self.bin = Path(bin_dir) if bin_dir else PG_BIN
        self.root = Path(tempfile.mkdtemp(prefix=f"audius_indexer_{name}_"))
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self.datadir = self.root / "data"
        self.sockdir = str(self.root)
        self.logfile = self.root / "server.log"
        self.port = free_port()
        self.settings = dict(settings or {})
        self.preload = list(preload or [])
        self.running = False

    # -- lifecycle -------------------------------------------------------------------------
    def init(self) -> "Cluster":
        _as_postgres(str(self.bin / "initdb"), "-D", str(self.datadir), "-A", "trust", "-U", "postgres",
                     "--no-sync", "-E", "UTF8", "--locale=C.UTF-8", bin_dir=self.bin)
        conf = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.sockdir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "log_line_prefix": "'%m [%p] %b %a: '",
            "max_connections": "60",
            "shared_buffers": "128MB",
        }
        if self.preload:
            conf["shared_preload_libraries"] = "'" + ",".join(self.preload) + "'"
        conf.update(self.settings)
        with open(self.datadir / "postgresql.conf", "a") as f:
            f.write("\n# --- audius_indexer test harness ---\n")
            for k, v in conf.items():
                f.write(f"{k} = {v}\n")
        return self

    def start(self) -> "Cluster":
        _as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile),
                     "-w", "-t", "30", "start", bin_dir=self.bin)
        self.running = True
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            _as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop",
                         check=False, bin_dir=self.bin)
            self.running = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self) -> None:
        _as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.datadir), "reload", bin_dir=self.bin)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # -- access ----------------------------------------------------------------------------
    def conninfo(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"host={self.sockdir} port={self.port} dbname={dbname} user={user}"

    def connect(self, dbname: str = "postgres", user: str = "postgres", autocommit: bool = True,
                **kw) -> psycopg.Connection:
        return psycopg.connect(self.conninfo(dbname, user), autocommit=autocommit, **kw)

    def psql(self, *args: str, dbname: str = "postgres", check: bool = True) -> str:
        """Runs psql (as root is fine: it is only a client)."""
        out = subprocess.run([str(self.bin / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-h", self.sockdir,
                              "-p", str(self.port), "-U", "postgres", "-d", dbname, *args],
                             text=True, capture_output=True, check=False)
        if check and out.returncode != 0:
            raise RuntimeError(f"psql failed ({out.returncode}): {out.stderr}")
        return out.stdout

    def create_database(self, name: str) -> None:
        with self.connect() as c:
            c.execute(f'CREATE DATABASE "{name}"')

    def log_text(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def assert_log_clean(self, ignore_pids=()) -> None:
        """No backend crashed and nothing PANICked (checked after every suite). `ignore_pids` are
        processes a test killed on purpose (kill -9 of the worker)."""
        text = self.log_text()
        bad = [line for line in text.splitlines()
               if ("terminated by signal" in line or "PANIC" in line)
               and not any(f"(PID {p})" in line for p in ignore_pids)]
        assert not bad, "server log shows crashes:\n" + "\n".join(bad[:20])

    def set_system(self, conn: psycopg.Connection | None = None, **settings) -> None:
        """ALTER SYSTEM SET name = value (None → RESET) for SIGHUP-context settings, then reload and
        wait until this cluster's new sessions see the values."""
        own = conn is None
        conn = conn or self.connect()
        try:
            for k, v in settings.items():
                name = k if "." in k else f"audius_indexer.{k}"
                if v is None:
                    conn.execute(f"ALTER SYSTEM RESET {name}")
                else:
                    conn.execute(f"ALTER SYSTEM SET {name} = %s".replace("%s", _literal(v)))
            conn.execute("SELECT pg_reload_conf()")
        finally:
            if own:
                conn.close()
        deadline = time.time() + 10
        while True:
            with self.connect() as c:
                ok = True
                for k, v in settings.items():
                    name = k if "." in k else f"audius_indexer.{k}"
                    cur = c.execute("SELECT current_setting(%s, true)", (name,)).fetchone()[0]
                    if v is not None and not _same(cur, v):
                        ok = False
                if ok:
                    return
            if time.time() > deadline:
                raise TimeoutError(f"settings not visible after reload: {settings}")
            time.sleep(0.05)


def _literal(v) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, (int, float)):
        return str(v)
    return "'" + str(v).replace("'", "''") + "'"


def _same(cur: str | None, want) -> bool:
    if cur is None:
        return False
    if isinstance(want, bool):
        return cur == ("on" if want else "off")
    # numeric settings may come back with units (e.g. '2s'); accept a prefix match on plain numbers
    return cur == str(want) or cur.rstrip("msk").rstrip() == str(want)


def exited(pid: int) -> bool:
    """The process is gone or a zombie (it may be reaped between any two looks at /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] == "Z"
    except FileNotFoundError:
        return True


# The paths a worker cluster turns on: those with a worker. The fourth path, 'enroll' (link triggers,
# no worker), is left off: enable('enroll') needs install_enrollment() first (tests/follow/test_enrollment.py).
PATHS = ("sweep", "follow", "challenges")


# The Audius tables the extension works on, as the migrations create them (tests/sql).
SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


def load_audius_tables(conn, eth: bool = True) -> None:
    """Creates Audius's tables in the connection's database: tests/sql/audius_fixture_schema.sql
    (users, user_events, challenges, ...) and, when `eth`, tests/sql/audius_eth_fixture.sql
    (associated_wallets, eth_wallet_balances, eth_user_balances, eth_indexer_checkpoints)."""
    conn.execute((SQL_DIR / "audius_fixture_schema.sql").read_text())
    if eth:
        conn.execute((SQL_DIR / "audius_eth_fixture.sql").read_text())


def enable_paths(conn, *paths: str) -> None:
    """Turns paths on in the connection's database (`audius_indexer.enable`): nothing acts until
    the DBA says so, and a test is the DBA here."""
    for p in paths:
        conn.execute("SELECT audius_indexer.enable(%s)", (p,))


def worker_cluster(name: str, db: str, rpc_url: str, contracts, settings: dict[str, str] | None = None,
                   preload: tuple[str, ...] = ("audius_indexer",)) -> Cluster:
    """A started cluster with audius_indexer preloaded, database `db` holding the extension, the
    sweep worker connected to it (sweep off until a test turns it on, 1 s interval; the challenge
    processors' worker off too) and the RPC settings pointed at `rpc_url` / `contracts`. The caller
    destroys it."""
    c = Cluster(preload=list(preload), name=name)
    c.settings.update({
        "audius_indexer.database": f"'{db}'",
        "audius_indexer.sweep_enabled": "off",
        "audius_indexer.sweep_interval": "'1s'",
        "audius_indexer.challenges_interval": "0",
        **(settings or {}),
    })
    c.init().start()
    c.create_database(db)
    with c.connect(db) as conn:
        conn.execute("CREATE EXTENSION audius_indexer")
        # every path on in the database (what 0.2.0 did by default); the settings above decide
        # which workers run (sweep off until a test turns it on, challenges off)
        enable_paths(conn, *PATHS)
    c.restart()  # the worker connects to its database at once
    c.set_system(rpc_url=rpc_url, token_address=contracts.token, staking_address=contracts.staking,
                 delegate_manager_address=contracts.delegate)
    return c


def standby_of(primary: Cluster, name: str = "standby", settings: dict[str, str] | None = None) -> Cluster:
    """A streaming replica of `primary` (pg_basebackup -R), started in hot standby on its own port
    and socket dir, with `settings` appended to its configuration. The caller destroys it."""
    s = Cluster(name=name)
    _as_postgres(str(PG_BIN / "pg_basebackup"), "-h", primary.sockdir, "-p", str(primary.port), "-U", "postgres",
                 "-D", str(s.datadir), "-R", "-X", "stream", "-c", "fast")
    conf = {"port": str(s.port), "unix_socket_directories": f"'{s.sockdir}'", "hot_standby": "on",
            **(settings or {})}
    with open(s.datadir / "postgresql.auto.conf", "a") as f:
        f.write("\n# --- standby of the test harness ---\n")
        for k, v in conf.items():
            f.write(f"{k} = {v}\n")
    return s.start()


def cron_cluster(name: str, settings: dict[str, str] | None = None) -> Cluster:
    """A cluster, not yet initialised, with audius_indexer and pg_cron preloaded, pg_cron's jobs run
    from database `postgres` over this cluster's unix socket, and `settings` (values verbatim). The
    caller creates the pg_cron extension in `postgres` once it runs, and destroys the cluster."""
    c = Cluster(preload=["audius_indexer", "pg_cron"], name=name)
    c.settings.update({"cron.database_name": "'postgres'", "cron.host": f"'{c.sockdir}'", **(settings or {})})
    return c
