"""Upgrade tier, live (cutover day): a 0.2.0 server with the library preloaded and its workers acting,
upgraded in place by the README's steps, run literally.

Nothing here touches the system directories (/usr/lib/postgresql/15, /usr/share/postgresql/15), which
other test runs use. Each test builds a private PostgreSQL tree: a copy of those two directories under
<tmp>/usr/... (the same relative layout, without any audius_indexer file). PostgreSQL computes its
pkglibdir and sharedir relative to its own binary, so <tmp>/usr/lib/postgresql/15/bin/postgres loads
extensions from the copy; `verify_private_tree` proves it (pg_config of the copy, the server's own
pg_config view and dynamic_library_path, CREATE EXTENSION of an extension that exists only in the
copy, and the library file the postmaster has mapped).

The procedure:
1. the 0.2.0 package tree (`make old-package`: built from its commit into target/old/0.2.0) installed
   into the private tree; initdb + start (as the postgres OS user); an Audius-like database
   (tests/sql fixtures), CREATE EXTENSION (0.2.0), the Rust triggers installed, rows in every table
   of ours; then, as a DBA does, shared_preload_libraries = 'audius_indexer' and the worker and RPC
   settings (the session's anvil, behind a recording proxy of this test's own) and a restart; the
   three workers (0.2.0 runs them all by default) sweep, follow a Transfer and process a user event;
2. the README's "upgrade-steps" (README.md, between the marker comments) run in their order: each
   `dpkg -i dist/…_<version>_amd64.deb` installs this tree's package (target/pgrx-package, which has
   released/* too; copied at the start) into the private tree with scripts/install-package.sh
   (renamed into place, as dpkg does); `pg_ctlcluster 15 main restart` restarts the cluster; every
   SQL block runs with psql in every database that has the extension. Any other command fails the
   test: the docs cannot drift from what is tested;
3. around the steps: after the install the old library is still the mapped one and ALTER EXTENSION
   UPDATE (the wrong order) fails with "could not find function" and changes nothing; between the
   restart and the UPDATE the new library's workers idle (one LOG line each, no tick, no RPC), its SQL
   entry points raise 55000, doctor() reports only the version, the Rust triggers still serve writes;
4. after: the version is the new one, the three workers of the new library run and act (sweep,
   follow, challenges), no row of any table of ours or of the Audius tables was lost, the catalog is
   the one of a fresh install (tests/upgrade/test_upgrade.py's CATALOG_QUERIES), the packaged 0.2.0 script
   made the catalog released/audius_indexer--0.2.0.sql makes, and the server log of the whole
   procedure has no ERROR, no WARNING and no crash.

The two probes that raise on purpose (the wrong-order UPDATE, a gated function) run in sessions with
log_min_messages = fatal: their errors are asserted where they happen, and any ERROR in the log is
one nobody expected.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from conftest import wait_until
from harness.chain import to_checksum, wallet_address
from harness.pg import PG_BIN, Cluster, load_audius_tables
from harness.rpcproxy import RpcProxy
from upgrade.test_upgrade import CATALOG_QUERIES, current_version, installed_catalog, snapshot

pytestmark = pytest.mark.timeout(420)

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
OLD_VERSION = "0.2.0"
OLD_PKG = REPO / "target" / "old" / OLD_VERSION / "pgrx-package"
NEW_PKG = REPO / "target" / "pgrx-package"
INSTALL = REPO / "scripts" / "install-package.sh"
SYS_LIB = Path("/usr/lib/postgresql/15")
SYS_SHARE = Path("/usr/share/postgresql/15")
DB = "audius"
PROBE_EXT = "audius_upgrade_live_probe"
WORKERS = ("audius_indexer sweep", "audius_indexer follow", "audius_indexer challenges")


# --------------------------------------------------------------------------------------------
# the README's steps
# --------------------------------------------------------------------------------------------
@dataclass
class Block:
    step: int
    lang: str
    body: str


def readme_steps(text: str | None = None) -> list[Block]:
    """The code blocks of the numbered list between `<!-- upgrade-steps` and `<!-- /upgrade-steps -->`
    in README.md, in order, each with its step number."""
    text = README.read_text() if text is None else text
    m = re.search(r"<!-- upgrade-steps\b.*?-->\n(.*?)<!-- /upgrade-steps -->", text, re.S)
    assert m, "README.md has no <!-- upgrade-steps --> … <!-- /upgrade-steps --> section"
    section = m.group(1)
    items = re.split(r"(?m)^(\d+)\. ", section)[1:]
    numbers = [int(n) for n in items[0::2]]
    assert numbers == list(range(1, len(numbers) + 1)), f"README upgrade steps are numbered {numbers}"
    blocks = []
    for n, item in zip(numbers, items[1::2]):
        for lang, body in re.findall(r"(?ms)^[ \t]*```(\w+)\n(.*?)^[ \t]*```", item):
            lines = body.splitlines()
            indent = min((len(ln) - len(ln.lstrip()) for ln in lines if ln.strip()), default=0)
            blocks.append(Block(n, lang, "\n".join(ln[indent:] for ln in lines).strip() + "\n"))
    assert blocks, "README upgrade steps have no code block"
    return blocks


DPKG = re.compile(r"^dpkg -i dist/audius-indexer-postgresql-15_(?P<version>[^_\s]+)_amd64\.deb$")
RESTART = re.compile(r"^(pg_ctlcluster 15 main restart|systemctl restart postgresql(@15-main)?(\.service)?)$")


def shell_actions(block: Block) -> list[tuple[str, str]]:
    """The shell commands of a block as actions the test knows how to run in the private tree."""
    out = []
    for line in block.body.splitlines():
        cmd = line.split("#", 1)[0].strip()
        if not cmd:
            continue
        if m := DPKG.match(cmd):
            assert m["version"] == current_version(), f"README step {block.step} installs {m['version']}"
            out.append(("install", cmd))
        elif RESTART.match(cmd):
            out.append(("restart", cmd))
        else:
            pytest.fail(f"README upgrade step {block.step}: no stand-in for the command {cmd!r} "
                        f"(tests/upgrade/test_upgrade_live.py runs every command of the steps)")
    return out


def test_readme_steps_parse():
    """The section exists and every command in it is one this tier can run."""
    blocks = readme_steps()
    kinds = []
    for b in blocks:
        assert b.lang in ("sh", "sql"), (b.step, b.lang)
        kinds += [k for k, _ in shell_actions(b)] if b.lang == "sh" else ["sql"]
    assert "install" in kinds and "restart" in kinds and "sql" in kinds, kinds
    assert any("ALTER EXTENSION audius_indexer UPDATE" in b.body for b in blocks if b.lang == "sql")


# --------------------------------------------------------------------------------------------
# the private PostgreSQL tree
# --------------------------------------------------------------------------------------------
class PrivateTree:
    """<root>/usr/lib/postgresql/15/{bin,lib} and <root>/usr/share/postgresql/15: copies of the
    system's, without audius_indexer files, plus a SQL-only probe extension that exists only here."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="audius_indexer_pgtree_"))
        os.chmod(self.root, 0o755)  # the postgres OS user runs the binaries and reads the files
        self.pg = self.root / SYS_LIB.relative_to("/")
        self.share = self.root / SYS_SHARE.relative_to("/")
        self.bin, self.lib, self.ext = self.pg / "bin", self.pg / "lib", self.share / "extension"
        ours = shutil.ignore_patterns("audius_indexer*")
        shutil.copytree(SYS_LIB, self.pg, symlinks=True, ignore=ours)
        shutil.copytree(SYS_SHARE, self.share, symlinks=True, ignore=ours)
        for p in [self.root, *self.root.rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                os.chmod(p, 0o755)
        (self.ext / f"{PROBE_EXT}.control").write_text(
            "comment = 'exists only in the private tree of tests/upgrade/test_upgrade_live.py'\n"
            "default_version = '1.0'\nrelocatable = true\n")
        (self.ext / f"{PROBE_EXT}--1.0.sql").write_text(
            f"CREATE FUNCTION {PROBE_EXT}() RETURNS text LANGUAGE sql AS $$ SELECT 'private tree' $$;\n")

    def install(self, pkg: Path) -> None:
        """A package tree (usr/...) into this tree, renamed into place (scripts/install-package.sh)."""
        out = subprocess.run(["bash", str(INSTALL), str(pkg), str(self.root)], text=True,
                             capture_output=True)
        assert out.returncode == 0, out.stderr
        written = [Path(ln.split(" ", 1)[1]) for ln in out.stdout.splitlines() if ln.startswith("installed ")]
        assert written and all(self.root in p.parents for p in written), out.stdout

    def destroy(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def library_mappings(pid: int) -> list[str]:
    """The audius_indexer.so mappings of a process (path, with ' (deleted)' when the file it mapped
    was replaced since)."""
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return sorted({ln.split(None, 5)[5] for ln in lines
                   if len(ln.split(None, 5)) == 6 and "audius_indexer.so" in ln})


def postmaster_pid(cl: Cluster) -> int:
    return int((cl.datadir / "postmaster.pid").read_text().split("\n", 1)[0])


def verify_private_tree(tree: PrivateTree, cl: Cluster) -> None:
    """The server runs from the private tree and loads extensions from it, not from /usr."""
    out = subprocess.run([str(tree.bin / "pg_config"), "--bindir", "--pkglibdir", "--sharedir"],
                         text=True, capture_output=True, check=True).stdout.split()
    assert out == [str(tree.bin), str(tree.lib), str(tree.share)], out
    assert cl.bin == tree.bin != PG_BIN
    assert not (SYS_SHARE / "extension" / f"{PROBE_EXT}.control").exists()
    with cl.connect() as c:
        assert c.execute("SELECT setting FROM pg_settings WHERE name = 'dynamic_library_path'"
                         ).fetchone()[0] == "$libdir"
        cfg = dict(c.execute("SELECT name, setting FROM pg_config "
                             "WHERE name IN ('BINDIR', 'PKGLIBDIR', 'SHAREDIR')").fetchall())
        assert cfg == {"BINDIR": str(tree.bin), "PKGLIBDIR": str(tree.lib), "SHAREDIR": str(tree.share)}, cfg
        c.execute(f"CREATE EXTENSION IF NOT EXISTS {PROBE_EXT}")
        assert c.execute(f"SELECT {PROBE_EXT}()").fetchone()[0] == "private tree"
    assert library_mappings(postmaster_pid(cl)) == [str(tree.lib / "audius_indexer.so")]


# --------------------------------------------------------------------------------------------
# the database and its rows
# --------------------------------------------------------------------------------------------
W = [wallet_address(i, "upgrade-live") for i in range(12)]  # 0-5 users, 6 associated, 7-11 untracked


def seed(conn, anvil, contracts) -> None:
    """An Audius-like database with the extension (0.2.0): users, wallets, the event path's
    checkpoint, a user event for the challenge processors, a disbursement for the Rust triggers, and
    rows in the extension's own tables the workers do not write (a backed-off wallet, a pending one)."""
    contracts.set_values(W, [10**21 + i for i in range(len(W))], [i * 10**18 for i in range(len(W))],
                         [7 * i for i in range(len(W))])
    load_audius_tables(conn)
    conn.execute("CREATE EXTENSION audius_indexer")
    assert extversion(conn) == OLD_VERSION
    conn.execute("SELECT audius_indexer.install_triggers()")
    for i in range(6):
        conn.execute("INSERT INTO users (user_id, wallet, is_current, is_verified, txhash, blocknumber) "
                     "VALUES (%s, %s, true, %s, %s, 1)", (i + 1, to_checksum(W[i]), i == 0, f"u{i}"))
    conn.execute("INSERT INTO users (user_id, is_current, is_verified, txhash, blocknumber) "
                 "VALUES (7, true, false, 'u7', 1)")
    conn.execute("INSERT INTO associated_wallets (user_id, wallet, blockhash, blocknumber, is_current, "
                 "is_delete, chain) VALUES (7, %s, '0x', 1, true, false, 'eth')", (to_checksum(W[6]),))
    conn.execute("INSERT INTO eth_wallet_balances (wallet, balance, updated_at) "
                 "SELECT w, 0, '1970-01-01' FROM unnest(%s::text[]) w ON CONFLICT (wallet) DO NOTHING", (W,))
    conn.execute("INSERT INTO eth_indexer_checkpoints (name, last_block) VALUES ('audio_transfers', %s)",
                 (anvil.block_number(),))
    conn.execute("INSERT INTO audius_indexer.wallet_failures (wallet, reason, attempts, next_attempt) "
                 "VALUES ('0x00000000000000000000000000000000000000aa', 'revert', 3, now() + interval '1 day')")
    conn.execute("INSERT INTO audius_indexer.follow_pending (wallet, min_block, reason, next_attempt) "
                 "VALUES ('0x00000000000000000000000000000000000000bb', 1, 'lagging node', now() + interval '1 day')")
    # a referral (user 1 verified refers 901, a mobile user): m, rv, rd for the processors
    conn.execute("INSERT INTO user_events (blocknumber, is_current, user_id, referrer, is_mobile_user) "
                 "VALUES (11, true, 901, 1, true)")
    disburse(conn, 1, "seed")
    conn.execute("INSERT INTO reward_codes (code, mint, reward_address, amount) VALUES ('c1', 'm', 'a', 1)")
    conn.execute("INSERT INTO challenge_listen_streak (user_id, last_listen_date, listen_streak) "
                 "VALUES (1, now(), 3)")


def disburse(conn, user_id: int, tag: str) -> int:
    """An application write the Rust on_challenge_disbursement trigger serves; returns how many
    notifications the user has afterwards."""
    conn.execute("INSERT INTO reward_manager_txs VALUES (%s, 1, now())", (f"sig-{tag}",))
    conn.execute("INSERT INTO challenge_disbursements VALUES ('p', %s, %s, %s, 1, '100000000', now())",
                 (user_id, f"spec-{tag}", f"sig-{tag}"))
    return notifications(conn, user_id)


def notifications(conn, user_id: int) -> int:
    return conn.execute("SELECT count(*) FROM notification WHERE %s = ANY(user_ids)", (user_id,)).fetchone()[0]


def extversion(conn) -> str | None:
    r = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'audius_indexer'").fetchone()
    return r and r[0]


def counters(conn) -> dict[str, int]:
    """What the three workers have done: sweep ticks, follower steps, processor runs."""
    return {
        "sweep": conn.execute("SELECT ticks FROM audius_indexer.sweep_state").fetchone()[0],
        "follow": conn.execute("SELECT steps FROM audius_indexer.follow_state").fetchone()[0],
        "challenges": conn.execute("SELECT sum(runs)::int FROM audius_indexer.challenge_processor_state"
                                   ).fetchone()[0],
    }


def checkpoint(conn) -> int:
    return conn.execute("SELECT last_block FROM eth_indexer_checkpoints WHERE name = 'audio_transfers'"
                        ).fetchone()[0]


def fresh_and_right(conn, contracts, wallets) -> bool:
    rows = dict(conn.execute("SELECT wallet, balance FROM eth_wallet_balances WHERE wallet = ANY(%s) "
                             "AND updated_at > '1971-01-01'", (wallets,)).fetchall())
    return len(rows) == len(wallets) and all(int(rows[w]) == sum(contracts.independent_total(w))
                                             for w in wallets)


def table_keys(conn) -> dict[str, set[tuple]]:
    """Primary keys of every table of ours and of the Audius tables (public)."""
    tables = conn.execute(r"""
        SELECT c.oid::regclass::text,
               ARRAY(SELECT pg_catalog.quote_ident(a.attname) FROM pg_index i
                       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                      WHERE i.indrelid = c.oid AND i.indisprimary
                      ORDER BY array_position(i.indkey::int2[], a.attnum))
          FROM pg_class c
         WHERE c.relkind = 'r' AND c.relnamespace IN ('public'::regnamespace, 'audius_indexer'::regnamespace)
         ORDER BY 1""").fetchall()
    out = {}
    for t, pk in tables:
        assert pk, f"{t} has no primary key: add a key rule for it"
        out[t] = set(conn.execute(f"SELECT {', '.join(pk)} FROM {t}").fetchall())
    return out


def worker_backends(conn) -> dict[str, int]:
    return dict(conn.execute(
        "SELECT backend_type, count(*)::int FROM pg_stat_activity WHERE backend_type = ANY(%s) "
        "AND datname = %s GROUP BY 1", (list(WORKERS), DB)).fetchall())


def log_lines(cl: Cluster, pattern: str, since: int = 0) -> list[str]:
    return [ln for ln in cl.log_text()[since:].splitlines() if re.search(pattern, ln)]


def quiet_session(cl: Cluster, db: str = DB) -> psycopg.Connection:
    """A session whose own ERRORs stay out of the server log (probes that raise on purpose)."""
    c = cl.connect(db)
    c.execute("SET log_min_messages = fatal")
    return c


def databases_with_extension(cl: Cluster) -> list[str]:
    with cl.connect() as c:
        names = [r[0] for r in c.execute("SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1")]
    out = []
    for n in names:
        with cl.connect(n) as c:
            if extversion(c):
                out.append(n)
    return out


# --------------------------------------------------------------------------------------------
# the test
# --------------------------------------------------------------------------------------------
@pytest.fixture
def packages(tmp_path):
    """The two package trees: 0.2.0 from `make old-package`, this tree's from `make package-tree`
    (copied now: a concurrent `make install` rebuilds target/pgrx-package)."""
    cur = current_version()
    for pkg, how in ((OLD_PKG, "make old-package"), (NEW_PKG, "make package-tree")):
        if not (pkg / SYS_LIB.relative_to("/") / "lib" / "audius_indexer.so").exists():
            pytest.fail(f"package tree missing: {pkg} (run `{how}`)", pytrace=False)
    old_control = (OLD_PKG / SYS_SHARE.relative_to("/") / "extension" / "audius_indexer.control").read_text()
    assert f"default_version = '{OLD_VERSION}'" in old_control, old_control
    new = tmp_path / "new-package"
    shutil.copytree(NEW_PKG, new)
    new_control = (new / SYS_SHARE.relative_to("/") / "extension" / "audius_indexer.control").read_text()
    assert f"default_version = '{cur}'" in new_control, "target/pgrx-package is not this tree's build"
    return OLD_PKG, new


@pytest.fixture
def own_proxy(anvil):
    """A recording proxy of this test's own in front of the session's anvil: what it records is
    this cluster's RPC, nobody else's."""
    p = RpcProxy(anvil.url).start()
    try:
        yield p
    finally:
        p.stop()


def test_upgrade_with_the_library_loaded(packages, anvil, contracts, own_proxy):
    old_pkg, new_pkg = packages
    proxy = own_proxy
    cur = current_version()
    tree = PrivateTree()
    cl = Cluster(name="uplive", bin_dir=tree.bin)
    # preloaded once the database exists, as a DBA adds it (the workers find their database at once)
    preload = {
        "shared_preload_libraries": "'audius_indexer'",
        "audius_indexer.database": f"'{DB}'",
        "audius_indexer.sweep_interval": "'1s'",
        "audius_indexer.follow_interval": "'1s'",
        "audius_indexer.challenges_interval": "'1s'",
        "audius_indexer.rpc_url": f"'{proxy.url}'",
        "audius_indexer.token_address": f"'{contracts.token}'",
        "audius_indexer.staking_address": f"'{contracts.staking}'",
        "audius_indexer.delegate_manager_address": f"'{contracts.delegate}'",
    }
    try:
        # ---- 0.2.0, live ---------------------------------------------------------------------
        tree.install(old_pkg)
        cl.init().start()
        cl.create_database(DB)
        with cl.connect(DB) as conn:
            seed(conn, anvil, contracts)
            old_catalog = snapshot(conn)
        with open(cl.datadir / "postgresql.conf", "a") as f:
            f.write("".join(f"{k} = {v}\n" for k, v in preload.items()))
        cl.restart()
        verify_private_tree(tree, cl)
        with cl.connect(DB) as conn:
            # the three 0.2.0 workers act: the sweep refreshes every wallet, the follower follows a
            # Transfer of a tracked wallet, the processors turn the user event into user_challenges
            blk = int(contracts.transfer(W[0], W[8], 10**18)["blockNumber"], 16)
            wait_until(lambda: fresh_and_right(conn, contracts, W), timeout=60, interval=0.2,
                       what="the 0.2.0 sweep worker")
            wait_until(lambda: checkpoint(conn) >= blk, timeout=60, interval=0.2, what="the 0.2.0 follower")
            wait_until(lambda: conn.execute("SELECT count(*) FROM user_challenges WHERE user_id IN (1, 901)"
                                            ).fetchone()[0] == 3, timeout=60, interval=0.2,
                       what="the 0.2.0 challenge processors")
            wait_until(lambda: min(counters(conn).values()) >= 3, timeout=30, interval=0.2,
                       what="three ticks, steps and runs of the 0.2.0 workers")
            assert conn.execute("SELECT count(*) FROM audius_indexer.follow_blocks").fetchone()[0] > 0
            assert sorted(worker_backends(conn).items()) == sorted((w, 1) for w in WORKERS)
            before = table_keys(conn)
            ours = [t for t in before if t.startswith("audius_indexer.")]
            assert all(before[t] for t in ours), {t: len(before[t]) for t in ours}

        # ---- the README's steps, in order ------------------------------------------------------
        done: list[str] = []
        window: dict = {}
        for block in readme_steps():
            if block.lang == "sh":
                for kind, cmd in shell_actions(block):
                    if kind == "install":
                        tree.install(new_pkg)
                        after_install(cl, tree)
                    else:
                        cl.restart()
                        window = after_restart(cl, tree, contracts, proxy)
                    done.append(kind)
            else:
                for db in databases_with_extension(cl):
                    out = _psql_stdin(cl, db, block.body)
                    done.append("sql")
                    if "extversion" in block.body:
                        assert re.search(rf"^\s*{re.escape(cur)}\s*$", out, re.M), out
                    if "path_status" in block.body:
                        for p in ("sweep", "follow", "challenges"):
                            assert re.search(rf"^\s*{p}\s*\|\s*on\s*\|\s*\d+\s*$", out, re.M), out
        assert done.index("install") < done.index("restart") < done.index("sql"), done

        # ---- 0.3.0, live ---------------------------------------------------------------------
        with cl.connect(DB) as conn:
            assert extversion(conn) == cur
            wait_until(lambda: len(log_lines(cl, rf"is at version {re.escape(cur)} now; acting")) == 3,
                       timeout=20, what="the three workers acting", interval=0.2)
            acting = log_lines(cl, rf"is at version {re.escape(cur)} now; acting")
            assert sorted(re.search(r"(audius_indexer \w+):", ln)[1] for ln in acting) == sorted(WORKERS), acting
            # what waited in the window is done now, and new work too
            wait_until(lambda: checkpoint(conn) >= window["transfer_block"], timeout=30, interval=0.2,
                       what="the follower catching up the window's transfer")
            wait_until(lambda: conn.execute("SELECT count(*) FROM user_challenges WHERE user_id = 902"
                                            ).fetchone()[0] == 1, timeout=30, interval=0.2,
                       what="the processors catching up the window's user event")
            contracts.set_values(W[7:], [5 * 10**20] * 5, [3] * 5, [2] * 5)
            conn.execute("UPDATE eth_wallet_balances SET updated_at = '1970-01-01' WHERE wallet = ANY(%s)", (W[7:],))
            wait_until(lambda: fresh_and_right(conn, contracts, W[7:]), timeout=30, interval=0.2,
                       what="the new sweep worker")
            blk = int(contracts.transfer(W[1], W[9], 10**18)["blockNumber"], 16)
            logs0 = conn.execute("SELECT total_logs FROM audius_indexer.follow_state").fetchone()[0]
            wait_until(lambda: checkpoint(conn) >= blk and conn.execute(
                "SELECT total_logs FROM audius_indexer.follow_state").fetchone()[0] > logs0,
                timeout=30, interval=0.2, what="the new follower")
            c1 = counters(conn)
            assert all(c1[k] > window["counters"][k] for k in c1), (window["counters"], c1)
            assert sorted(worker_backends(conn).items()) == sorted((w, 1) for w in WORKERS)
            assert [r[0] for r in conn.execute("SELECT path FROM audius_indexer.path_status "
                                               "WHERE state = 'on' AND worker_pid IS NOT NULL")] == \
                ["sweep", "follow", "challenges"]
            assert library_mappings(postmaster_pid(cl)) == [str(tree.lib / "audius_indexer.so")]

            # no lost row: every key of every table of ours and of the Audius tables is still there
            after = table_keys(conn)
            lost = {t: sorted(before[t] - after.get(t, set()))[:5] for t in before if before[t] - after.get(t, set())}
            assert not lost, f"rows lost by the upgrade: {lost}"
            upgraded = snapshot(conn)

        # ---- the catalog: a fresh install of this version, and the 0.2.0 on record ----------------
        installed = installed_catalog(cl, "fresh")
        assert_same_catalog(upgraded, installed, f"upgraded {OLD_VERSION} -> {cur}", f"fresh {cur}")
        # the 0.2.0 that was running came from the package built from its commit; the one on record
        # (released/, now in the private tree from this version's package) makes the same catalog
        record = REPO / "released" / f"audius_indexer--{OLD_VERSION}.sql"
        assert (tree.ext / record.name).read_bytes() == record.read_bytes()
        recorded = installed_catalog(cl, "record", OLD_VERSION)
        assert_same_catalog(old_catalog, recorded, f"packaged {OLD_VERSION}", f"released {OLD_VERSION}")

        # ---- the server log of the whole procedure ----------------------------------------------
        errors = log_lines(cl, r"\b(ERROR|WARNING|PANIC):|terminated by signal|was terminated")
        assert not errors, "server log:\n" + "\n".join(errors[:30])
    finally:
        log = cl.log_text()
        cl.destroy()
        tree.destroy()
        print(f"--- server log of the procedure ({len(log.splitlines())} lines):")
        print("\n".join(log.splitlines()[-300:]))


def _psql_stdin(cl: Cluster, db: str, sql: str) -> str:
    out = subprocess.run([str(cl.bin / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-h", cl.sockdir,
                          "-p", str(cl.port), "-U", "postgres", "-d", db, "-f", "-"],
                         input=sql, text=True, capture_output=True)
    assert out.returncode == 0, f"README SQL failed in {db}:\n{sql}\n{out.stderr}"
    return out.stdout


def assert_same_catalog(a: dict, b: dict, a_name: str, b_name: str) -> None:
    for key in CATALOG_QUERIES:
        only_a = [r for r in a[key] if r not in b[key]]
        only_b = [r for r in b[key] if r not in a[key]]
        assert not only_a and not only_b, (
            f"{key}: {a_name} differs from {b_name}\n  only in {a_name}: {only_a}\n  only in {b_name}: {only_b}")
        assert a[key] == b[key], f"{key}: same rows, different order"


def after_install(cl: Cluster, tree: PrivateTree) -> None:
    """Step 1 done: the running server still has the old library (its file was replaced, the mapping
    is the old inode), new sessions run it too, and the wrong order (UPDATE before the restart) fails
    with "could not find function" and changes nothing."""
    assert library_mappings(postmaster_pid(cl)) == [f"{tree.lib / 'audius_indexer.so'} (deleted)"]
    with cl.connect(DB) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert library_mappings(pid) == [f"{tree.lib / 'audius_indexer.so'} (deleted)"]
        ticks = counters(conn)["sweep"]
        wait_until(lambda: counters(conn)["sweep"] > ticks, timeout=10, what="the 0.2.0 sweep going on")
        assert extversion(conn) == OLD_VERSION
    with quiet_session(cl) as q:
        with pytest.raises(psycopg.errors.UndefinedFunction, match="could not find function"):
            q.execute("ALTER EXTENSION audius_indexer UPDATE")
        assert extversion(q) == OLD_VERSION


def after_restart(cl: Cluster, tree: PrivateTree, contracts, proxy) -> dict:
    """Step 2 done: the new library is loaded and meets the 0.2.0 catalog. Its workers run and idle
    (one LOG line each, no tick, no RPC) although there is work for each; its SQL entry points raise
    55000; doctor() reports only the version; the Rust triggers serve the application's writes.
    Returns what the window left for the new workers: the counters, a Transfer's block."""
    cur = current_version()
    window = {}
    assert library_mappings(postmaster_pid(cl)) == [str(tree.lib / "audius_indexer.so")]
    gate = r"the extension audius_indexer in this database is version 0\.2\.0, the loaded library is " + \
        re.escape(cur) + r"; idle until the versions match \(run ALTER EXTENSION audius_indexer UPDATE"
    wait_until(lambda: len(log_lines(cl, gate)) >= 3, timeout=20, interval=0.2, what="the gate's LOG lines")
    with cl.connect(DB) as conn:
        assert extversion(conn) == OLD_VERSION
        assert sorted(worker_backends(conn).items()) == sorted((w, 1) for w in WORKERS)
        c0 = counters(conn)
        proxy.reset()
        # work for each: stale rows, a Transfer of a tracked wallet, a new user event
        conn.execute("UPDATE eth_wallet_balances SET updated_at = '1970-01-01' WHERE wallet = ANY(%s)", (W[:3],))
        window["transfer_block"] = int(contracts.transfer(W[2], W[10], 10**18)["blockNumber"], 16)
        conn.execute("INSERT INTO user_events (blocknumber, is_current, user_id, is_mobile_user) "
                     "VALUES (12, true, 902, true)")
        time.sleep(4)  # four intervals of each worker
        assert counters(conn) == c0, "a worker of the new library acted on the old catalog"
        assert proxy.requests == [], "a worker of the new library made RPC calls on the old catalog"
        assert conn.execute("SELECT count(*) FROM eth_wallet_balances WHERE wallet = ANY(%s) "
                            "AND updated_at < '1971-01-01'", (W[:3],)).fetchone()[0] == 3
        window["counters"] = c0
        gates = log_lines(cl, gate)
        assert sorted(re.search(r"(audius_indexer \w+):", ln)[1] for ln in gates) == sorted(WORKERS), gates
        # doctor() never raises: it reports the version as its one failed check
        doc = conn.execute("SELECT * FROM audius_indexer.doctor()").fetchall()
        assert len(doc) == 1 and doc[0][0] == "extension version" and doc[0][1] is False, doc
        assert "run ALTER EXTENSION audius_indexer UPDATE" in doc[0][2], doc
        # the Rust triggers (the library's new code, unchanged since 0.2.0) serve the application
        n = notifications(conn, 2)
        assert disburse(conn, 2, "window") == n + 1
        # the old catalog's SQL still reads: its status views
        for view in ("sweep_status", "follow_status", "challenge_processor_status"):
            assert conn.execute(f"SELECT * FROM audius_indexer.{view}").fetchall(), view
    with quiet_session(cl) as q:
        for sql in ("SELECT * FROM audius_indexer.refresh_stale(5)",
                    "SELECT * FROM audius_indexer.multicall_total_audio_balances(ARRAY['%s'])" % W[0],
                    "SELECT * FROM audius_indexer.follow_transfers()",
                    "SELECT * FROM audius_indexer.process_user_event_challenges()",
                    "CALL audius_indexer.sweep()"):
            with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState,
                               match="run ALTER EXTENSION audius_indexer UPDATE"):
                q.execute(sql)
    return window
