"""Cutover day, rehearsed (suite table "Cutover day, rehearsed" in docs/reliability.md).

The runbook of docs/operations.md ("Cutover day: the runbook") is executed as written: every fenced
block marked `runbook:<n>-<name>` is extracted from the file and run in order — SQL blocks with psql
(`-X -v ON_ERROR_STOP=1`, the variable `rpc_urls_file`), sh blocks with bash (PGHOST/PGPORT/PGUSER/
PGDATABASE set, in the repository) — against an Audius-shaped database in a cluster of its own
(audius_indexer preloaded, workers on 1 s / 1 s / 2 s intervals), while

- a Go-shaped writer (tests/go_writer.py: the Go eth-indexer's event loop and stale sweep, the Go
  challenge job's m/r/rv/rd processors, writing exactly as the reference says) runs whenever the
  runbook says the Go services run;
- AUDIO Transfers (between tracked wallets, associated wallets and untracked ones) and stake changes
  arrive on anvil, and `user_events` rows (new users, mobile or not, referred by verified or unverified
  users) arrive in the database, continuously, from start to end.

Scenario: Go alone → 0-indexes, 1-install, 2-preflight (Go still running) → stop Go, 3-enable →
4-verify → 5-rollback, Go again → stop Go, 3-enable (forward again) → the Go writer left running
beside the enabled paths (both must stop themselves) → stop Go, 3-enable (take over) → quiet → the
checks → 6-uninstall, 7-cleanup → the Go services alone once more.

Instrumentation (the test's own, in schema public): an AFTER trigger on eth_wallet_balances,
eth_indexer_checkpoints, indexing_checkpoints, user_challenges and (once installed) the extension's
follow_state and challenge_processor_state records every write with its session's application_name,
its transaction start and the old/new values in `public.cutover_log`.

A second test: a cluster with the library preloaded, the extension created, every worker setting at
its default and nothing enabled makes 0 RPC requests and 0 writes in 60 s.

Each case of the scenario is recorded (tests/.build/suites/cutover.md) even when an earlier one
failed; the test fails at the end if any did. CUTOVER_KEEP_LOG=<file> keeps the cluster's server log.
"""
from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from harness.challenges import REFERENCE_OBJECTS_SQL, apply_full_scan_reference, compare
from conftest import wait_until
from harness.follow import AUDIUS_TRIGGER_WARNING, chain, expected_total
from go_writer import GoServices
from harness.chain import to_checksum, wallet_address
from harness.pg import PG_BIN, Cluster, load_audius_tables
from harness.rpcproxy import RpcProxy
from harness.reliability import Report, expect_error
from harness.triggers import RUST_FUNCTIONS, reference_sql, trigger_functions

pytestmark = pytest.mark.timeout(420)

REPO = Path(__file__).resolve().parents[2]
OPERATIONS_MD = REPO / "docs" / "operations.md"
DB = "discovery"
FOLLOW_INTERVAL_S, CHALLENGES_INTERVAL_S, SWEEP_INTERVAL_S = 1.0, 1.0, 2.0

# a fenced block of the runbook: ```sql runbook:3-enable ... ```
BLOCK_RE = re.compile(r"^```(?P<lang>[a-z]+) runbook:(?P<n>\d+)-(?P<name>[a-z0-9-]+)[ \t]*\n(?P<body>.*?)^```[ \t]*$",
                      re.M | re.S)
EXPECTED_BLOCKS = ["0-indexes", "1-install", "2-preflight", "3-enable", "4-verify", "5-rollback", "6-uninstall",
                   "7-cleanup"]
PL_PGSQL = {"on_user_challenge": "ref_handle_on_user_challenge_contains()",
            "on_challenge_disbursement": "ref_handle_challenge_disbursement_contains()",
            "on_sol_reward_disbursement": "ref_handle_sol_reward_disbursement_contains()"}
WORKER_LINE = re.compile(r"\] audius_indexer (sweep|follow|challenges) ")


# ------------------------------------------------------------------------------------------------
# the runbook, as written
# ------------------------------------------------------------------------------------------------
@dataclass
class Block:
    number: int
    name: str
    lang: str
    body: str

    @property
    def key(self) -> str:
        return f"{self.number}-{self.name}"


def runbook_blocks() -> dict[str, Block]:
    blocks = [Block(int(m["n"]), m["name"], m["lang"], m["body"]) for m in BLOCK_RE.finditer(OPERATIONS_MD.read_text())]
    return {b.key: b for b in blocks}


def run_block(cluster: Cluster, block: Block, **psql_vars) -> str:
    """Runs one runbook block as a DBA would: SQL with psql (ON_ERROR_STOP, the variables given),
    sh with bash in the repository, the connection in PG* variables. Returns what it printed."""
    if block.lang == "sql":
        path = Path(cluster.root) / f"runbook-{block.key}.sql"
        path.write_text(block.body)
        args = []
        for k, v in psql_vars.items():
            args += ["-v", f"{k}={v}"]
        return cluster.psql(*args, "-f", str(path), dbname=DB)
    assert block.lang == "sh", block.lang
    env = {"PATH": f"{PG_BIN}:/usr/bin:/bin", "PGHOST": cluster.sockdir, "PGPORT": str(cluster.port),
           "PGUSER": "postgres", "PGDATABASE": DB, "LANG": "C.UTF-8"}
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", block.body], cwd=REPO, env=env, text=True,
                         capture_output=True)
    assert out.returncode == 0, f"runbook block {block.key} failed ({out.returncode}):\n{out.stderr}"
    return out.stdout


# ------------------------------------------------------------------------------------------------
# the Audius-shaped database and its instrumentation
# ------------------------------------------------------------------------------------------------
N_USERS = 30
USER_WALLETS = [wallet_address(i, "cutover-user") for i in range(N_USERS)]          # user i+1
ASSOC = [wallet_address(i, "cutover-assoc") for i in range(6)]                       # users 1..6; #6 deleted
UNTRACKED = [wallet_address(i, "cutover-out") for i in range(5)] + [ASSOC[5]]
STAKERS = USER_WALLETS[22:]                      # tracked, never in a Transfer: stake changes only
TRANSFERRERS = USER_WALLETS[:22] + ASSOC[:5]     # tracked, in Transfers
TRACKED = set(USER_WALLETS) | set(ASSOC[:5])
W_PENDING = TRANSFERRERS[5]                      # the wallet the follower owes a read at the rollback
VERIFIED = {u for u in range(1, N_USERS + 1) if u % 3 == 0}

LOG_SQL = r"""
CREATE TABLE public.cutover_log (
  seq        bigserial PRIMARY KEY,
  ts         timestamptz NOT NULL DEFAULT clock_timestamp(),
  xact_start timestamptz NOT NULL DEFAULT now(),
  app        text NOT NULL DEFAULT current_setting('application_name'),
  kind       text NOT NULL,
  key        text,
  old_v      numeric,
  new_v      numeric,
  extra      text
);
CREATE FUNCTION public.cutover_record() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
  IF TG_TABLE_NAME = 'eth_wallet_balances' THEN
    INSERT INTO public.cutover_log (kind, key, old_v, new_v, extra)
    VALUES ('balance', NEW.wallet, CASE WHEN TG_OP = 'UPDATE' THEN OLD.blocknumber END, NEW.blocknumber, NEW.balance::text);
  ELSIF TG_TABLE_NAME = 'eth_indexer_checkpoints' THEN
    INSERT INTO public.cutover_log (kind, key, old_v, new_v)
    VALUES ('cp', NEW.name, CASE WHEN TG_OP = 'UPDATE' THEN OLD.last_block END, NEW.last_block);
  ELSIF TG_TABLE_NAME = 'indexing_checkpoints' THEN
    INSERT INTO public.cutover_log (kind, key, old_v, new_v)
    VALUES ('ccp', NEW.tablename, CASE WHEN TG_OP = 'UPDATE' THEN OLD.last_checkpoint END, NEW.last_checkpoint);
  ELSIF TG_TABLE_NAME = 'user_challenges' THEN
    INSERT INTO public.cutover_log (kind, key, extra) VALUES ('uc', NEW.challenge_id || '/' || NEW.specifier, TG_OP);
  ELSIF TG_TABLE_NAME = 'follow_state' THEN
    IF NEW.last_step_started IS DISTINCT FROM OLD.last_step_started THEN
      INSERT INTO public.cutover_log (kind) VALUES ('fstart');
    END IF;
    IF NEW.steps IS DISTINCT FROM OLD.steps THEN
      INSERT INTO public.cutover_log (kind, old_v, new_v) VALUES ('fstep', NEW.last_from_block, NEW.last_to_block);
    END IF;
  ELSIF TG_TABLE_NAME = 'challenge_processor_state' THEN
    IF NEW.runs IS DISTINCT FROM OLD.runs THEN
      INSERT INTO public.cutover_log (kind, key, new_v) VALUES ('crun', NEW.challenge_id, NEW.checkpoint_after);
    END IF;
  END IF;
  RETURN NULL;
END
$$;
CREATE TRIGGER cutover_record AFTER INSERT OR UPDATE ON public.eth_wallet_balances FOR EACH ROW EXECUTE FUNCTION public.cutover_record();
CREATE TRIGGER cutover_record AFTER INSERT OR UPDATE ON public.eth_indexer_checkpoints FOR EACH ROW EXECUTE FUNCTION public.cutover_record();
CREATE TRIGGER cutover_record AFTER INSERT OR UPDATE ON public.indexing_checkpoints FOR EACH ROW EXECUTE FUNCTION public.cutover_record();
CREATE TRIGGER cutover_record AFTER INSERT OR UPDATE ON public.user_challenges FOR EACH ROW EXECUTE FUNCTION public.cutover_record();
"""
LOG_EXTENSION_SQL = """
CREATE TRIGGER cutover_record AFTER UPDATE ON audius_indexer.follow_state FOR EACH ROW EXECUTE FUNCTION public.cutover_record();
CREATE TRIGGER cutover_record AFTER UPDATE ON audius_indexer.challenge_processor_state FOR EACH ROW EXECUTE FUNCTION public.cutover_record();
"""
UNLOG_EXTENSION_SQL = """
DROP TRIGGER cutover_record ON audius_indexer.follow_state;
DROP TRIGGER cutover_record ON audius_indexer.challenge_processor_state;
"""


def build_audius_db(c: Cluster, contracts, head: int) -> None:
    """Fixture schema + eth fixture + the Audius PL/pgSQL dedupe triggers (the `@>` variant, newest
    Audius), the comparison's reference objects, the instrumentation, and the rows an Audius database
    has when the Go services run: users with EIP-55 wallets, associated wallets, the 0204 backfill of
    eth_wallet_balances, the audio_transfers checkpoint at the head, the m/r/rv/rd checkpoints."""
    c.create_database(DB)
    with c.connect(DB) as conn:
        load_audius_tables(conn)
        conn.execute(reference_sql(False))
        conn.execute("SELECT public.ref_attach_triggers('contains')")
        conn.execute(REFERENCE_OBJECTS_SQL)
        conn.execute(LOG_SQL)
        for i, w in enumerate(USER_WALLETS):
            u = i + 1
            conn.execute("INSERT INTO users (user_id, wallet, is_current, is_verified, txhash, blocknumber) "
                         "VALUES (%s, %s, true, %s, '', 1)", (u, to_checksum(w), u in VERIFIED))
        for i, w in enumerate(ASSOC):
            conn.execute("INSERT INTO associated_wallets (user_id, wallet, blockhash, blocknumber, is_current, "
                         "is_delete, chain) VALUES (%s, %s, '0x', 1, true, %s, 'eth')", (i + 1, to_checksum(w), i == 5))
        conn.execute("INSERT INTO eth_wallet_balances (wallet, balance, updated_at) "
                     "SELECT w, 0, '1970-01-01' FROM unnest(%s::text[]) w", (sorted(TRACKED),))
        conn.execute("INSERT INTO eth_indexer_checkpoints (name, last_block) VALUES ('audio_transfers', %s)", (head,))
        for p in ("m", "r", "rv", "rd"):
            conn.execute("INSERT INTO indexing_checkpoints (tablename, last_checkpoint) VALUES (%s, 999)",
                         (f"challenges:{p}:last_blocknumber",))


# ------------------------------------------------------------------------------------------------
# what keeps arriving
# ------------------------------------------------------------------------------------------------
class _Stream:
    """A thread of its own (start() .. stop()) that does one thing every ~0.1 s; what fails is kept
    in `errors` and the stream goes on."""

    def __init__(self, seed: int, name: str):
        self.rng = random.Random(seed)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True, name=name)

    def start(self):
        self._t.start()
        return self

    def stop(self):
        self._stop.set()
        self._t.join(30)

    def _run(self):
        raise NotImplementedError

    def _repeat(self, once) -> None:
        while not self._stop.is_set():
            try:
                once()
            except Exception as e:  # noqa: BLE001
                self.errors.append(repr(e))
            self._stop.wait(0.1)


class ChainStream(_Stream):
    """Transfers (MockAudioToken.move: a real Transfer log) and stake changes (MockStaking.setMany: no
    Transfer) on anvil, one transaction every ~0.1 s."""

    def __init__(self, contracts, seed: int = 14):
        super().__init__(seed, "cutover-chain-stream")
        self.contracts = contracts
        self.transfers: list[tuple[int, str, str]] = []   # (block, from, to)
        self.stakes: list[tuple[int, str]] = []           # (block, wallet)

    def _run(self):
        self._repeat(self._one)

    def _one(self):
        if self.rng.random() < 0.8:
            a, b = self.rng.sample(TRANSFERRERS + UNTRACKED, 2)
            rcpt = self.contracts.transfer(a, b, self.rng.randrange(1, 10**18))
            self.transfers.append((int(rcpt["blockNumber"], 16), a, b))
        else:
            w = self.rng.choice(STAKERS)
            self.contracts.set_values([w], staked=[self.rng.randrange(0, 10**22)])
            self.stakes.append((-1, w))


class EventStream(_Stream):
    """user_events rows as Audius writes them: each block in one transaction, blocks in increasing
    order, new users only (one current row each), 60 % referred by a seeded user (verified or not),
    40 % mobile."""

    def __init__(self, conninfo: str, seed: int = 41):
        super().__init__(seed, "cutover-event-stream")
        self.conninfo = conninfo
        self.block = 1000
        self.next_user = 10_000
        self.rows = 0

    def _run(self):
        with psycopg.connect(self.conninfo, autocommit=True, application_name="audius discovery") as conn:
            self._repeat(lambda: self._block(conn))

    def _block(self, conn):
        self.block += self.rng.choice([1, 1, 2])
        with conn.transaction():
            for _ in range(self.rng.randint(1, 3)):
                self.next_user += 1
                ref = self.rng.randint(1, N_USERS) if self.rng.random() < 0.6 else None
                conn.execute("INSERT INTO user_events (blockhash, blocknumber, is_current, user_id, "
                             "referrer, is_mobile_user, slot) VALUES (%s, %s, true, %s, %s, %s, %s)",
                             (f"0x{self.block:x}", self.block, self.next_user, ref,
                              self.rng.random() < 0.4, self.block))
                self.rows += 1


# ------------------------------------------------------------------------------------------------
# small readers
# ------------------------------------------------------------------------------------------------
def audio_checkpoint(conn) -> int:
    return conn.execute("SELECT last_block FROM eth_indexer_checkpoints WHERE name = 'audio_transfers'").fetchone()[0]


def challenge_checkpoints(conn) -> dict[str, int]:
    return {k.split(":")[1]: v for k, v in conn.execute(
        "SELECT tablename, last_checkpoint FROM indexing_checkpoints WHERE tablename LIKE 'challenges:%'")}


def path_states(conn) -> dict[str, tuple]:
    """The worker paths (sweep, follow, challenges), whose states and worker pids the cutover
    checks; 'enroll' (the link triggers: no worker, no worker_pid) is left out."""
    return {r[0]: r[1:] for r in conn.execute(
        "SELECT path, state, stopped_reason, stopped_at, worker_pid FROM audius_indexer.path_status "
        "WHERE path <> 'enroll'")}


def log_rows(conn, sql_where: str, args=()) -> list[tuple]:
    return conn.execute(f"SELECT seq, extract(epoch FROM ts)::float8, extract(epoch FROM xact_start)::float8, app, kind, "
                        f"key, old_v, new_v, extra FROM public.cutover_log WHERE {sql_where} ORDER BY seq", args).fetchall()


EXT_APPS = ("audius_indexer sweep", "audius_indexer follow", "audius_indexer challenges")


def ext_writes_between(conn, t0: float, t1: float) -> int:
    """Rows the extension's workers wrote to the Audius tables in (t0, t1)."""
    return conn.execute("SELECT count(*) FROM public.cutover_log WHERE kind IN ('balance', 'cp', 'ccp', 'uc') "
                        "AND app = ANY(%s) AND ts > to_timestamp(%s) AND ts < to_timestamp(%s)",
                        (list(EXT_APPS), t0, t1)).fetchone()[0]


def go_writes_between(conn, t0: float, t1: float) -> int:
    return conn.execute("SELECT count(*) FROM public.cutover_log WHERE kind IN ('balance', 'cp', 'ccp', 'uc') "
                        "AND app LIKE 'go %%' AND ts > to_timestamp(%s) AND ts < to_timestamp(%s)",
                        (t0, t1)).fetchone()[0]


def spec_user(p: str, spec: str) -> int:
    """The referred (or mobile) user of a specifier: the user whose user_events row defines it."""
    parts = spec.split(":")
    h = parts[0] if p in ("m", "rd") else parts[1]
    return int(h, 16)


def warning_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if " WARNING: " in ln]


class Soft:
    """Report cases whose assertion failures are recorded and collected, so the scenario goes on
    and every case is reported; the test fails at the end if any did."""

    def __init__(self, report: Report):
        self.report = report
        self.failures: list[str] = []

    @contextlib.contextmanager
    def case(self, case: str, fault: str, expected: str):
        try:
            with self.report.case(case, fault, expected) as rec:
                yield rec
        except (AssertionError, TimeoutError) as e:
            self.failures.append(f"{case}: {str(e).strip().splitlines()[0] if str(e).strip() else 'assertion'}")


# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def report():
    r = Report("cutover", "Cutover day, rehearsed")
    yield r
    r.write()


def test_runbook_blocks_are_extractable(report):
    with report.case("runbook blocks", "docs/operations.md: fences ```<sql|sh> runbook:<n>-<name>",
                     "blocks 0…7 once each, in document order; SQL blocks without psql meta-commands, "
                     "variables only :'rpc_urls_file'") as rec:
        text = OPERATIONS_MD.read_text()
        found = [f"{m['n']}-{m['name']}" for m in BLOCK_RE.finditer(text)]
        assert found == EXPECTED_BLOCKS, found
        assert text.count("runbook:") >= len(EXPECTED_BLOCKS)
        blocks = runbook_blocks()
        for b in blocks.values():
            if b.lang == "sql":
                meta = [ln for ln in b.body.splitlines() if ln.lstrip().startswith("\\")]
                assert not meta, f"{b.key}: psql meta-commands {meta}"
                assert set(re.findall(r":'(\w+)'", b.body)) <= {"rpc_urls_file"}, b.key
        assert [b.lang for b in blocks.values()] == ["sh"] + ["sql"] * 7
        rec.observed = ", ".join(f"{b.key} ({b.lang}, {len(b.body.splitlines())} lines)" for b in blocks.values())


# ------------------------------------------------------------------------------------------------
# cutover day
# ------------------------------------------------------------------------------------------------
def test_cutover_day(chain, report):
    blocks = runbook_blocks()
    soft = Soft(report)
    anvil, contracts, proxy = chain.anvil, chain.contracts, chain.proxy
    rng = random.Random(1414)
    allw = sorted(set(USER_WALLETS) | set(ASSOC) | set(UNTRACKED))
    contracts.set_values(allw, [10**24 + rng.randrange(10**20) for _ in allw],
                         [rng.randrange(10**22) for _ in allw], [rng.randrange(10**21) for _ in allw])
    c = Cluster(preload=["audius_indexer"], name="cutover")
    c.settings.update({
        "audius_indexer.database": f"'{DB}'",
        "audius_indexer.follow_interval": f"'{int(FOLLOW_INTERVAL_S)}s'",
        "audius_indexer.challenges_interval": f"'{int(CHALLENGES_INTERVAL_S)}s'",
        "audius_indexer.sweep_interval": f"'{int(SWEEP_INTERVAL_S)}s'",
        "audius_indexer.sweep_batch_size": "200",
    })
    streams: list = []
    go = None
    try:
        c.init().start()
        C0 = anvil.block_number()
        build_audius_db(c, contracts, C0)
        c.restart()  # the workers connect to the database at once (and idle: no extension yet)
        # the chain's contracts (a testnet's addresses; mainnet's are the defaults): not part of the runbook
        c.set_system(token_address=contracts.token, staking_address=contracts.staking,
                     delegate_manager_address=contracts.delegate)
        urls_file = Path(c.root) / "audius_rpc_urls"
        urls_file.write_text(f"# the node\n{proxy.url}\n")
        if os.geteuid() == 0:
            shutil.chown(urls_file, "postgres", "postgres")
        urls_file.chmod(0o600)
        conninfo = c.conninfo(DB)
        conn = c.connect(DB, application_name="cutover test")
        go = GoServices(conninfo, anvil, contracts)
        go.eth.sweep_batch = 5   # the Go stale sweep reads 5 of the 35 wallets per tick: 'first' means something
        chain_stream = ChainStream(contracts).start()
        event_stream = EventStream(conninfo).start()
        streams = [chain_stream, event_stream]
        go.start()
        time.sleep(4)

        # -- 1. install while the Go services run ------------------------------------------------
        with soft.case("install beside the Go services", "Go writer running; runbook 0-indexes, 1-install, "
                       "2-preflight; then 3 s with the Go writer alone",
                       "every path off; every doctor() row ok; 0 worker RPC requests and 0 extension writes "
                       "until enable; the Go writer keeps going") as rec:
            cp_before = audio_checkpoint(conn)
            t_install = time.time()
            run_block(c, blocks["0-indexes"])
            run_block(c, blocks["1-install"], rpc_urls_file=str(urls_file))
            conn.execute(LOG_EXTENSION_SQL)
            out = run_block(c, blocks["2-preflight"])
            assert "STOPPED" not in out
            not_ok = [ln for ln in out.splitlines() if re.search(r"\|\s*f\s*\|", ln)]
            assert not not_ok, f"doctor() rows not ok:\n" + "\n".join(not_ok)
            states = path_states(conn)
            assert {p: s[0] for p, s in states.items()} == {"sweep": "off", "follow": "off", "challenges": "off"}, states
            assert all(s[3] for s in states.values()), f"a worker is not running: {states}"
            bad = conn.execute("SELECT check_name, detail FROM audius_indexer.health() WHERE NOT ok").fetchall()
            assert not bad, f"health() rows not ok: {bad}"
            doctor_rows = conn.execute("SELECT count(*) FROM audius_indexer.doctor()").fetchone()[0]
            assert sorted(trigger_functions(conn).values()) == sorted(RUST_FUNCTIONS.values())
            proxy.reset()
            t0 = time.time()
            time.sleep(3)
            t1 = time.time()
            reqs = proxy.http_requests
            ext = ext_writes_between(conn, t0, t1)
            assert reqs == 0 and proxy.accepted == 0, f"{reqs} RPC requests while every path is off"
            assert ext == 0, f"{ext} extension writes while every path is off"
            assert audio_checkpoint(conn) > cp_before, "the Go writer stopped moving audio_transfers"
            rec.observed = (f"paths off ×3 with worker pids; doctor {doctor_rows} rows, all ok (preflight); "
                            f"Rust triggers installed; 3 s: {reqs} requests, {ext} extension writes, "
                            f"{go_writes_between(conn, t0, t1)} Go writes; audio_transfers {cp_before}→{audio_checkpoint(conn)}")

        # -- 2. handover Go → extension -----------------------------------------------------------
        handovers: list[dict] = []
        handed_wallets: dict[str, float] = {}   # wallet -> when disable('follow') handed it to the stale sweep

        def forward(label: str) -> dict:
            go.stop()
            t_stop = time.time()
            cp_go = audio_checkpoint(conn)
            ccp_go = challenge_checkpoints(conn)
            run_block(c, blocks["3-enable"])
            t_enable = time.time()
            written = conn.execute("SELECT written_checkpoint FROM audius_indexer.follow_state").fetchone()[0]
            ue = dict(conn.execute("SELECT challenge_id, ue_checkpoint FROM audius_indexer.challenge_processor_state"))
            h = {"label": label, "to": "extension", "t_stop": t_stop, "t": t_enable, "cp": cp_go, "ccp": ccp_go,
                 "written": written, "ue": ue}
            handovers.append(h)
            return h

        with soft.case("handover 1: Go → extension", "stop the Go writer; runbook 3-enable; 6 s",
                       "0 extension writes from install to enable; follow adopts audio_transfers (its first range "
                       "starts at checkpoint + 1); the processors adopt m/r/rv/rd; every path on; only the extension "
                       "writes") as rec:
            h = forward("handover 1")
            before_enable = ext_writes_between(conn, t_install, h["t_stop"])
            assert before_enable == 0, f"{before_enable} extension writes between install and enable"
            assert h["written"] == h["cp"], f"follow adopted {h['written']}, the row holds {h['cp']}"
            assert h["ue"] == h["ccp"], f"processors adopted {h['ue']}, the rows hold {h['ccp']}"
            time.sleep(6)
            first = log_rows(conn, "kind = 'fstep' AND old_v IS NOT NULL AND ts > to_timestamp(%s)", (h["t"],))
            assert first, "no follower step with a range after enable"
            assert int(first[0][6]) == h["cp"] + 1, f"first range {first[0][6]}..{first[0][7]}, checkpoint was {h['cp']}"
            states = path_states(conn)
            assert all(s[0] == "on" for s in states.values()), states
            gw = go_writes_between(conn, h["t"], time.time())
            assert gw == 0, f"{gw} Go writes after the Go writer stopped"
            rec.observed = (f"audio_transfers {h['cp']} adopted, first range {int(first[0][6])}..{int(first[0][7])}; "
                            f"m/r/rv/rd {h['ccp']} adopted; paths on; "
                            f"{ext_writes_between(conn, h['t'], time.time())} extension writes, 0 Go writes")

        # -- 3. verify ------------------------------------------------------------------------------
        with soft.case("verify", "runbook 4-verify", "paths on with worker pids, no stopped_reason; follower "
                       "lag ≤ 2 blocks, nothing pending, no error; processors ran, no error; doctor: no row "
                       "not ok") as rec:
            wait_until(lambda: conn.execute("SELECT lag_blocks <= 2 FROM audius_indexer.follow_status").fetchone()[0],
                       timeout=10, interval=0.2, what="follow lag ≤ 2")
            out = run_block(c, blocks["4-verify"])
            assert "(0 rows)" in out.split("check_name")[-1], f"doctor rows not ok:\n{out[-1500:]}"
            states = path_states(conn)
            assert all(s[0] == "on" and s[1] is None and s[3] for s in states.values()), states
            lag, pending, ferr = conn.execute("SELECT lag_blocks, pending_wallets, last_error FROM "
                                              "audius_indexer.follow_status").fetchone()
            assert ferr is None and pending == 0, (lag, pending, ferr)
            cps = conn.execute("SELECT challenge_id, last_run_at > now() - interval '5 s', last_error FROM "
                               "audius_indexer.challenge_processor_status").fetchall()
            assert all(r[1] and r[2] is None for r in cps), cps
            rec.observed = f"follow lag {lag} blocks, 0 pending, no error; m/r/rv/rd ran < 5 s ago; doctor: 0 rows not ok"

        # -- 4. roll back -----------------------------------------------------------------------------
        with soft.case("roll back: extension → Go", "the node fails every read of one tracked wallet (proxy "
                       "fail_holder) and a Transfer reaches it: the follower owes it a read; runbook 5-rollback; "
                       "the fault cleared; start the Go writer; 5 s",
                       "paths off; the owed wallet handed over (updated_at 1970-01-01, follow_pending empty) and "
                       "read first by the Go stale sweep; the Go writer's first range starts at the extension's "
                       "checkpoint + 1, its processors at the extension's m/r/rv/rd; no extension write after") as rec:
            proxy.fault("fail_holder", holder=W_PENDING)
            try:
                contracts.transfer(UNTRACKED[0], W_PENDING, 4242)
                wait_until(lambda: conn.execute("SELECT count(*) FROM audius_indexer.follow_pending WHERE wallet = %s",
                                                (W_PENDING,)).fetchone()[0] == 1,
                           timeout=30, interval=0.2, what="the follower to owe the wallet a read")
                out = run_block(c, blocks["5-rollback"])
                t_off = time.time()
                handed_at = conn.execute("SELECT updated_at FROM eth_wallet_balances WHERE wallet = %s",
                                         (W_PENDING,)).fetchone()[0]
            finally:
                proxy.clear_faults()
            handed = int(re.search(r"(\d+) pending wallet", out).group(1))
            handed_wallets[W_PENDING] = t_off
            assert handed == 1 and str(handed_at).startswith("1970-01-01"), (handed, handed_at)
            states = path_states(conn)
            assert all(s[0] == "off" for s in states.values()), states
            assert conn.execute("SELECT count(*) FROM audius_indexer.follow_pending").fetchone()[0] == 0
            cp_ext = audio_checkpoint(conn)
            ccp_ext = challenge_checkpoints(conn)
            handovers.append({"label": "rollback", "to": "go", "t": t_off, "cp": cp_ext, "ccp": ccp_ext})
            n_ranges, n_runs = len(go.eth.ranges), len(go.challenges.runs)
            go.start()
            time.sleep(5)
            new_ranges = go.eth.ranges[n_ranges:]
            assert new_ranges and new_ranges[0][0] == cp_ext + 1, f"Go resumed at {new_ranges[:1]}, checkpoint {cp_ext}"
            first_prev = {}
            for _, p, prev, _ in go.challenges.runs[n_runs:]:
                first_prev.setdefault(p, prev)
            assert first_prev == ccp_ext, f"the Go job resumed from {first_prev}, the rows held {ccp_ext}"
            ew = ext_writes_between(conn, t_off, time.time())
            assert ew == 0, f"{ew} extension writes after rollback"
            swept = log_rows(conn, "kind = 'balance' AND app = 'go eth-indexer sweep' AND ts > to_timestamp(%s)", (t_off,))
            first_batch = [r[5] for r in swept if swept and r[2] == swept[0][2]]
            assert W_PENDING in first_batch, f"the Go sweep's first batch after the rollback: {first_batch}"
            rec.observed = (f"{handed} pending wallet handed over (updated_at {handed_at}), in the Go sweep's first "
                            f"batch ({len(first_batch)} of {len(TRACKED)} wallets); "
                            f"paths off; Go resumed at {new_ranges[0][0]} "
                            f"(checkpoint {cp_ext}), job at {first_prev}; 0 extension writes, "
                            f"{go_writes_between(conn, t_off, time.time())} Go writes")

        # -- 5. forward again -------------------------------------------------------------------------
        with soft.case("handover 2: Go → extension again", "stop the Go writer; runbook 3-enable; 5 s",
                       "adopted as in handover 1; paths on") as rec:
            h = forward("handover 2")
            assert h["written"] == h["cp"] and h["ue"] == h["ccp"], h
            time.sleep(5)
            first = log_rows(conn, "kind = 'fstep' AND old_v IS NOT NULL AND ts > to_timestamp(%s)", (h["t"],))
            assert first and int(first[0][6]) == h["cp"] + 1, (first[:1], h["cp"])
            assert all(s[0] == "on" for s in path_states(conn).values())
            rec.observed = f"audio_transfers {h['cp']} adopted, first range from {int(first[0][6])}; m/r/rv/rd {h['ccp']} adopted"

        # -- 6. the Go writer left running beside the enabled paths --------------------------------------
        mark = len(c.log_text())
        n_eth_cp, n_runs = len(go.eth.checkpoint_writes), len(go.challenges.runs)
        t_det = time.time()
        go.start()
        detected = {}
        try:
            wait_until(lambda: all(path_states(conn)[p][0] == "stopped" for p in ("follow", "challenges")),
                       timeout=20, interval=0.1, what="follow and challenges to stop themselves")
        except TimeoutError:
            pass
        time.sleep(1.5)  # the log catches up; any further WARNING would show
        states = path_states(conn)
        log_slice = c.log_text()[mark:]
        for path, who, kind in (("follow", "Go eth-indexer", "fstart"), ("challenges", "Go challenge job", "crun")):
            with soft.case(f"second writer: {who} beside {path}",
                           f"path {path} on; the {who} started again beside it",
                           "stopped within one step of the Go write it names: no step/run of the path begins after "
                           "that write; stopped_reason; doctor row 'path " + path + "' not ok; exactly one WARNING; "
                           "its SQL entry point 55000") as rec:
                state, reason, stopped_at, _pid = states[path]
                assert state == "stopped", f"{path} is {state} after 20 s beside the {who}"
                assert who in reason, reason
                m = re.search(r"moved from (-?\d+) to (-?\d+)", reason)
                assert m, reason
                moved_to = int(m.group(2))
                if path == "follow":
                    ts_go = [t for t, _b, a in go.eth.checkpoint_writes[n_eth_cp:] if a == moved_to]
                else:
                    pid_ = reason.split("challenges:")[1].split(":")[0]
                    ts_go = [t for t, p, _prev, new in go.challenges.runs[n_runs:] if p == pid_ and new == moved_to]
                assert ts_go, f"no write of {moved_to} by the {who}: {reason}"
                t_go = min(ts_go)
                later = log_rows(conn, "kind = %s AND xact_start > to_timestamp(%s)", (kind, t_go))
                assert not later, f"{len(later)} {kind} event(s) began after the Go write it stopped on"
                delay = stopped_at.timestamp() - t_go
                interval = FOLLOW_INTERVAL_S if path == "follow" else CHALLENGES_INTERVAL_S
                assert delay <= interval + 3, f"stopped {delay:.2f} s after the Go write (interval {interval} s)"
                ok, detail = conn.execute("SELECT ok, detail FROM audius_indexer.doctor() WHERE check_name = %s",
                                          (f"path {path}",)).fetchone()
                assert ok is False and "STOPPED" in detail and who in detail, (ok, detail)
                fn = ("SELECT * FROM audius_indexer.follow_transfers()" if path == "follow"
                      else "SELECT * FROM audius_indexer.process_user_event_challenges()")
                e, _text, _dt = expect_error(conn, fn, sqlstate="55000", contains=(f"the {path} path is stopped",))
                detected[path] = reason
                warns = [ln for ln in warning_lines(log_slice) if f"audius_indexer {path} " in ln or f"the {path} path" in ln]
                rec.observed = (f"stopped {delay:.2f} s after the Go write to {moved_to}; 0 {kind} after it; "
                                f"reason: {reason[:110]}; doctor not ok; {fn.split('.')[1][:-2]}(): 55000; "
                                f"{len(warns)} WARNING line(s)")
                if len(warns) != 1:
                    rec.observed += ": " + " ‖ ".join(w.split("WARNING:", 1)[1].strip()[:95] for w in warns)
                assert len(warns) == 1, rec.observed
        t_det_end = time.time()
        mark_det_end = len(c.log_text())

        # -- 7. take over again ---------------------------------------------------------------------------
        with soft.case("take over again", "stop the Go writer; runbook 3-enable",
                       "every path on, stopped_reason cleared, doctor path rows ok; the extension goes on") as rec:
            h = forward("take over")
            states = path_states(conn)
            assert all(s[0] == "on" and s[1] is None for s in states.values()), states
            bad = conn.execute("SELECT check_name, detail FROM audius_indexer.health() WHERE check_name LIKE 'path %' "
                               "AND NOT ok").fetchall()
            assert not bad, bad
            time.sleep(5)
            rec.observed = f"paths on; adopted audio_transfers {h['cp']}, m/r/rv/rd {h['ccp']}"

        # -- quiet: the streams stop, everything settles ----------------------------------------------
        for s in streams:
            s.stop()
        t_quiet = time.time()
        head = anvil.block_number()
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: conn.execute("SELECT checkpoint >= %s AND pending_wallets = 0 FROM "
                                            "audius_indexer.follow_status", (head,)).fetchone()[0],
                       timeout=20, interval=0.2, what="the follower at the head")

        def processors_done():
            conn.execute("TRUNCATE ref_user_challenges")
            apply_full_scan_reference(conn)
            return not compare(conn)
        try:
            wait_until(processors_done, timeout=20, interval=0.5, what="user_challenges = the full re-derivation")
        except TimeoutError:
            pass
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: conn.execute("SELECT min(updated_at) > to_timestamp(%s)::timestamp "
                                            "FROM eth_wallet_balances", (t_quiet,)).fetchone()[0],
                       timeout=20, interval=0.3, what="a sweep after the last stake change")
        C_end = audio_checkpoint(conn)

        # -- the checks ----------------------------------------------------------------------------------------
        with soft.case("balances: no older overwrite", "every INSERT/UPDATE of eth_wallet_balances over the run "
                       "(trigger), Go and extension writers", "a row's blocknumber never goes down") as rec:
            down = conn.execute("SELECT key, old_v, new_v, app FROM public.cutover_log WHERE kind = 'balance' "
                                "AND old_v > new_v").fetchall()
            reorgs = conn.execute("SELECT reorgs FROM audius_indexer.follow_status").fetchone()[0]
            assert reorgs == 0
            by_app = dict(conn.execute("SELECT CASE app WHEN '' THEN 'the 0204 backfill' ELSE app END, count(*) "
                                       "FROM public.cutover_log WHERE kind = 'balance' GROUP BY 1"))
            assert not down, f"{len(down)} writes lowered blocknumber: {down[:5]}"
            rec.observed = f"0 of {sum(by_app.values())} writes lowered it ({', '.join(f'{k}: {v}' for k, v in sorted(by_app.items()))}); 0 reorgs"

        with soft.case("audio_transfers continuity", "every write of the checkpoint (trigger); the ranges the "
                       "Go writer committed and the follower's steps; every Transfer's tracked wallets",
                       "never backwards; ranges cover every block from the first checkpoint + 1 to the last; "
                       "each tracked wallet of each Transfer re-read at or after its block by an event path") as rec:
            back = conn.execute("SELECT old_v, new_v, app FROM public.cutover_log WHERE kind = 'cp' AND old_v > new_v").fetchall()
            assert not back, f"audio_transfers went backwards: {back[:5]}"
            ranges = [(a, b) for a, b, _ in go.eth.ranges]
            go_n = len(ranges)
            ranges += [(int(r[6]), int(r[7])) for r in log_rows(conn, "kind = 'fstep' AND old_v IS NOT NULL")]
            covered, gaps = C0, []
            for a, b in sorted(ranges):
                if a > covered + 1:
                    gaps.append((covered + 1, a - 1))
                covered = max(covered, b)
            if covered < C_end:
                gaps.append((covered + 1, C_end))
            assert not gaps, f"blocks no writer read the logs of: {gaps}"
            follow_w = {}
            for _s, _t, _x, _app, _k, key, _o, new, _e in log_rows(conn, "kind = 'balance' AND app = 'audius_indexer follow'"):
                follow_w.setdefault(key, []).append(int(new))
            go_w = {}
            for w, lb, _t in go.eth.event_writes:
                go_w.setdefault(w, []).append(lb)
            swept_after = {w: [r[1] for r in log_rows(conn, "kind = 'balance' AND key = %s AND app LIKE '%%sweep'", (w,))]
                           for w in handed_wallets}
            missed = []
            n = excused = 0
            for b, a, z in chain_stream.transfers:
                if not (C0 < b <= C_end):
                    continue
                for w in (a, z):
                    if w not in TRACKED:
                        continue
                    n += 1
                    if any(x >= b for x in follow_w.get(w, [])) or any(x >= b for x in go_w.get(w, [])):
                        continue
                    # owed a read when the follower was disabled: the stale sweep's to pay
                    if w in handed_wallets and any(ts > handed_wallets[w] for ts in swept_after[w]):
                        excused += 1
                        continue
                    missed.append((b, w))
            assert not missed, f"{len(missed)} Transfer wallets never re-read by an event path: {missed[:5]}"
            rec.observed = (f"0 backward moves; {go_n} Go ranges + {len(ranges) - go_n} follower ranges cover "
                            f"{C0 + 1}..{C_end}, 0 gaps; {n} tracked Transfer wallets, all re-read ({excused} by the stale "
                            f"sweep after the hand-over) ({len(chain_stream.transfers)} Transfers, "
                            f"{len(chain_stream.stakes)} stake changes)")

        with soft.case("exact totals", "after the streams stop: every tracked wallet", "balance = balanceOf + "
                       "totalStakedFor + getTotalDelegatorStake by independent eth_calls") as rec:
            got = {w: int(b) for w, b in conn.execute("SELECT wallet, balance FROM eth_wallet_balances")}
            assert set(got) == TRACKED, sorted(set(got) ^ TRACKED)[:5]
            wrong = [(w, got[w], expected_total(contracts, w)) for w in sorted(TRACKED)
                     if got[w] != expected_total(contracts, w)]
            assert not wrong, f"{len(wrong)} wallets off: {wrong[:3]}"
            rec.observed = f"{len(TRACKED)}/{len(TRACKED)} exact (transfer wallets and stakers)"

        with soft.case("challenges: none skipped, none processed twice", f"{event_stream.rows} user_events rows over "
                       "3 Go phases and 3 extension phases", "user_challenges m/r/rv/rd = a full re-derivation over all "
                       "user_events; checkpoints never backwards outside the two-writer window; at each handover "
                       "the new writer upserts only pairs above the checkpoint it took over") as rec:
            conn.execute("TRUNCATE ref_user_challenges")
            apply_full_scan_reference(conn)
            diff = compare(conn)
            assert not diff, f"{len(diff)} rows differ from the full re-derivation: {diff[:5]}"
            n_uc = conn.execute("SELECT count(*) FROM user_challenges WHERE challenge_id IN ('m','r','rv','rd')").fetchone()[0]
            back = conn.execute("SELECT key, old_v, new_v, app, extract(epoch FROM ts) FROM public.cutover_log WHERE kind = 'ccp' "
                                "AND old_v > new_v AND NOT (ts BETWEEN to_timestamp(%s) AND to_timestamp(%s))",
                                (t_det, t_det_end)).fetchall()
            assert not back, f"challenge checkpoints went backwards: {back[:5]}"
            ue_block = dict(conn.execute("SELECT user_id, blocknumber FROM user_events"))
            below = []
            overlap = 0
            bounds = handovers + [{"t": time.time()}]
            for i, h in enumerate(handovers):
                t_from, t_to = h["t"], bounds[i + 1].get("t_stop", bounds[i + 1]["t"])
                apps = EXT_APPS if h["to"] == "extension" else ("go challenge job",)
                rows = conn.execute("SELECT key FROM public.cutover_log WHERE kind = 'uc' AND app = ANY(%s) "
                                    "AND ts > to_timestamp(%s) AND ts < to_timestamp(%s)",
                                    (list(apps), t_from, t_to)).fetchall()
                before = {k for (k,) in conn.execute("SELECT key FROM public.cutover_log WHERE kind = 'uc' "
                                                     "AND ts < to_timestamp(%s)", (t_from,))}
                for (key,) in rows:
                    p, spec = key.split("/", 1)
                    if ue_block[spec_user(p, spec)] <= h["ccp"][p]:
                        below.append((h["label"], key, ue_block[spec_user(p, spec)], h["ccp"][p]))
                    if key in before:
                        overlap += 1
            assert not below, f"pairs at or below the handed-over checkpoint upserted again: {below[:5]}"
            rec.observed = (f"{n_uc} rows = the re-derivation; 0 backward checkpoint moves; {len(handovers)} handovers: "
                            f"0 pairs at or below the handed checkpoint re-upserted ({overlap} upserts of existing "
                            f"pairs above it)")

        with soft.case("writers and log", "the whole run", "the Go writer and the streams without error; no Audius "
                       "trigger WARNING; no worker ERROR; no worker WARNING outside the two-writer window") as rec:
            assert not go.errors, go.errors[:3]
            assert not chain_stream.errors and not event_stream.errors, (chain_stream.errors[:2], event_stream.errors[:2])
            text = c.log_text()
            assert not [ln for ln in text.splitlines() if AUDIUS_TRIGGER_WARNING.search(ln)]
            worker_errors = [ln for ln in text.splitlines() if WORKER_LINE.search(ln) and " ERROR: " in ln]
            assert not worker_errors, worker_errors[:3]
            outside = text[:mark] + text[mark_det_end:]
            worker_warnings = [ln for ln in warning_lines(outside) if WORKER_LINE.search(ln)]
            rec.observed = (f"Go: {len(go.eth.ranges)} ranges, {len(go.eth.event_writes)} event writes, "
                            f"{go.eth.sweep_writes} sweep writes, {len(go.challenges.runs)} processor runs; 0 errors; "
                            f"{len(worker_warnings)} worker WARNINGs outside the two-writer window")
            assert not worker_warnings, rec.observed + ": " + " ‖ ".join(
                w.split("WARNING:", 1)[1].strip()[:80] for w in worker_warnings[:8])

        # -- 6/7. uninstall ----------------------------------------------------------------------------------
        with soft.case("uninstall", "DROP EXTENSION while the Rust triggers are installed; then runbook "
                       "6-uninstall and 7-cleanup",
                       "the early DROP refused (2BP01), nothing changed; after: no audius_indexer object, schema "
                       "or role; eth_wallet_balances, eth_indexer_checkpoints (and the Audius tables) with every "
                       "row; the Audius triggers call their PL/pgSQL functions") as rec:
            conn.execute(UNLOG_EXTENSION_SQL)
            snap_sql = ("SELECT (SELECT md5(string_agg(wallet || balance || coalesce(blocknumber::text, '-'), ',' "
                        "ORDER BY wallet)) FROM eth_wallet_balances), (SELECT count(*) FROM eth_wallet_balances), "
                        "(SELECT md5(string_agg(name || last_block, ',' ORDER BY name)) FROM eth_indexer_checkpoints), "
                        "(SELECT md5(string_agg(tablename || last_checkpoint, ',' ORDER BY tablename)) FROM indexing_checkpoints), "
                        "(SELECT count(*) FROM user_challenges), (SELECT count(*) FROM notification)")
            e, _t, _d = expect_error(conn, "DROP EXTENSION audius_indexer", sqlstate="2BP01",
                                     contains=("on_user_challenge",))
            # the paths must be off for the snapshot to hold still
            run_block(c, blocks["5-rollback"])
            snap = conn.execute(snap_sql).fetchone()
            mark_uninstall = len(c.log_text())
            run_block(c, blocks["6-uninstall"])
            run_block(c, blocks["7-cleanup"])
            assert conn.execute(snap_sql).fetchone() == snap, "rows changed by the uninstall"
            left = conn.execute(
                "SELECT 'extension' FROM pg_extension WHERE extname = 'audius_indexer' "
                "UNION ALL SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname LIKE 'audius_indexer%' "
                "UNION ALL SELECT 'function ' || p.oid::regprocedure FROM pg_proc p WHERE p.proname LIKE '%audius_indexer%' "
                "  OR p.pronamespace::regnamespace::text LIKE 'audius_indexer%' "
                "UNION ALL SELECT 'relation ' || c.oid::regclass FROM pg_class c WHERE c.relname LIKE 'audius_indexer%' "
                "UNION ALL SELECT 'type ' || t.typname FROM pg_type t WHERE t.typname LIKE 'audius_indexer%' "
                "UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
                "  WHERE p.pronamespace::regnamespace::text = 'audius_indexer' "
                "UNION ALL SELECT 'role ' || rolname FROM pg_roles WHERE rolname LIKE 'audius_indexer%' "
                "UNION ALL SELECT 'setting ' || name FROM pg_file_settings WHERE name LIKE 'audius_indexer.rpc%'"
            ).fetchall()
            assert not left, f"left behind: {left}"
            tf = {k: v.removeprefix("public.") for k, v in trigger_functions(conn).items()}
            assert tf == PL_PGSQL, tf
            members = conn.execute("SELECT count(*) FROM pg_depend WHERE refclassid = 'pg_extension'::regclass "
                                   "AND objid IN ('public.eth_wallet_balances'::regclass, "
                                   "'public.eth_indexer_checkpoints'::regclass)").fetchone()[0]
            assert members == 0
            rec.observed = (f"early DROP: 2BP01 ({(e.diag.message_detail or '').splitlines()[0][:70]}…); after: nothing "
                            f"left (extension, schema, functions, roles, rpc setting); {snap[1]} eth_wallet_balances rows "
                            f"and the checkpoints unchanged; triggers → {', '.join(sorted(tf.values()))}")

        with soft.case("the Go services alone again", "after the uninstall: the Go writer for 4 s, Transfers",
                       "it writes as before (checkpoint moves, balances exact), no error; the workers (still "
                       "preloaded) idle: one 'extension not installed' LOG line each, no ERROR or WARNING") as rec:
            mark2 = len(c.log_text())
            cp0 = audio_checkpoint(conn)
            go.start()
            tx = [contracts.transfer(TRANSFERRERS[0], TRANSFERRERS[1], 7), contracts.transfer(TRANSFERRERS[2], TRANSFERRERS[3], 9)]
            last = max(int(r["blockNumber"], 16) for r in tx)
            wait_until(lambda: audio_checkpoint(conn) >= last, timeout=10, interval=0.1, what="the Go writer")
            time.sleep(1)
            go.stop()
            assert not go.errors, go.errors[:3]
            got = {w: int(b) for w, b in conn.execute("SELECT wallet, balance FROM eth_wallet_balances WHERE wallet = ANY(%s)",
                                                      (TRANSFERRERS[:4],))}
            assert all(got[w] == expected_total(contracts, w) for w in TRANSFERRERS[:4]), got
            errs = [ln for ln in c.log_text()[mark2:].splitlines() if " ERROR: " in ln or " WARNING: " in ln]
            assert not errs, errs[:3]
            def idle_lines():
                return [ln for ln in c.log_text()[mark_uninstall:].splitlines() if WORKER_LINE.search(ln)
                        and "extension not installed" in ln]
            with contextlib.suppress(TimeoutError):  # the sweep worker ticks every 2 s
                wait_until(lambda: len(idle_lines()) >= 3, timeout=2 * SWEEP_INTERVAL_S + 1, interval=0.2)
            time.sleep(SWEEP_INTERVAL_S)  # and says it only once
            idle = idle_lines()
            assert len(idle) == 3, f"{len(idle)} lines: " + " ‖ ".join(WORKER_LINE.search(ln).group(1) + ln[-60:] for ln in idle)
            rec.observed = (f"audio_transfers {cp0}→{audio_checkpoint(conn)}; 4/4 wallets exact; 0 ERROR/WARNING lines; "
                            f"each worker logged 'extension not installed' once")

        conn.close()
        assert not soft.failures, "cutover cases failed:\n" + "\n".join(soft.failures)
    finally:
        for s in streams:
            with contextlib.suppress(Exception):
                s.stop()
        if go is not None:
            with contextlib.suppress(Exception):
                go.stop()
        if os.environ.get("CUTOVER_KEEP_LOG"):
            shutil.copy(c.logfile, os.environ["CUTOVER_KEEP_LOG"])
        try:
            c.assert_log_clean()
        finally:
            c.destroy()


# ------------------------------------------------------------------------------------------------
# nothing acts until the DBA says so
# ------------------------------------------------------------------------------------------------
IDLE_S = 60
DEFAULTS = {"audius_indexer.sweep_enabled": "on", "audius_indexer.sweep_interval": "30s",
            "audius_indexer.follow_interval": "5s", "audius_indexer.challenges_interval": "30s",
            "audius_indexer.database": "postgres"}
WATCHED = ("eth_wallet_balances", "eth_indexer_checkpoints", "indexing_checkpoints", "user_challenges")


def test_nothing_acts_until_enabled(chain, report):
    """Preloaded, CREATE EXTENSION done, worker settings at their defaults, work waiting for every path
    (stale rows, a checkpoint behind the head, user_events past the checkpoints): 60 s, 0 requests,
    0 writes. Then enable('follow') as the control: the same watch sees the follower's requests."""
    anvil, contracts = chain.anvil, chain.contracts
    proxy = RpcProxy(anvil.url).start()
    c = Cluster(preload=["audius_indexer"], name="cutoveridle")
    try:
        c.init().start()
        ws = [wallet_address(i, "cutover-idle") for i in range(8)]
        contracts.set_values(ws, [10**20 + i for i in range(8)], [i for i in range(8)], [0] * 8)
        head = anvil.block_number()
        contracts.transfer(ws[0], ws[1], 5)
        with c.connect() as conn:  # audius_indexer.database defaults to 'postgres'
            load_audius_tables(conn)
            conn.execute("INSERT INTO users (user_id, wallet, is_current, txhash, blocknumber) "
                         "SELECT i, w, true, '', 1 FROM unnest(%s::text[]) WITH ORDINALITY AS t(w, i)",
                         ([to_checksum(w) for w in ws],))
            conn.execute("INSERT INTO eth_wallet_balances (wallet, balance, updated_at) "
                         "SELECT w, 0, '1970-01-01' FROM unnest(%s::text[]) w", (ws,))
            conn.execute("INSERT INTO eth_indexer_checkpoints (name, last_block) VALUES ('audio_transfers', %s)", (head - 1,))
            conn.execute("INSERT INTO indexing_checkpoints (tablename, last_checkpoint) "
                         "SELECT 'challenges:' || p || ':last_blocknumber', 10 FROM unnest(ARRAY['m','r','rv','rd']) p")
            conn.execute("INSERT INTO user_events (blockhash, blocknumber, is_current, user_id, referrer, is_mobile_user) "
                         "VALUES ('0x', 11, true, 1, 2, true), ('0x', 12, true, 3, 4, true)")
            conn.execute("CREATE EXTENSION audius_indexer")
        c.set_system(rpc_url=proxy.url, token_address=contracts.token, staking_address=contracts.staking,
                     delegate_manager_address=contracts.delegate)
        with report.case("nothing enabled: 60 s", "preloaded, CREATE EXTENSION, worker settings at their defaults "
                         "(sweep_enabled on, sweep 30 s, follow 5 s, challenges 30 s), work waiting for every path; "
                         f"watched {IDLE_S} s",
                         "0 RPC requests (proxy); 0 writes: row counts and contents of eth_wallet_balances, "
                         "eth_indexer_checkpoints, indexing_checkpoints, user_challenges unchanged, n_tup_ins/upd/del "
                         "of every table of the extension and of those 4 unchanged; then enable('follow'): requests "
                         "within 5 s + 3 s") as rec, c.connect() as conn:
            settings = dict(conn.execute("SELECT name, setting || coalesce(unit, '') FROM pg_settings "
                                         "WHERE name = ANY(%s)", (list(DEFAULTS),)))
            sources = {r[0] for r in conn.execute("SELECT name FROM pg_settings WHERE name = ANY(%s) "
                                                  "AND source <> 'default'", (list(DEFAULTS),))}
            assert not sources, f"not at their defaults: {sources}"
            assert {k: v.replace("30000ms", "30s").replace("5000ms", "5s") for k, v in settings.items()} == DEFAULTS, settings
            wait_until(lambda: conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE "
                                            "'audius_indexer %'").fetchone()[0] == 3, timeout=10, what="the 3 workers")
            assert {r[0]: r[1] for r in conn.execute("SELECT path, state FROM audius_indexer.path_status")} == \
                {"sweep": "off", "follow": "off", "challenges": "off", "enroll": "off"}

            def snapshot():
                rows = {t: conn.execute(f"SELECT count(*), md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) "
                                        f"FROM public.{t} x").fetchone() for t in WATCHED}
                stats = {r[0]: r[1:] for r in conn.execute(
                    "SELECT schemaname || '.' || relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables "
                    "WHERE schemaname = 'audius_indexer' OR (schemaname = 'public' AND relname = ANY(%s))", (list(WATCHED),))}
                return rows, stats

            time.sleep(1.5)  # stats of CREATE EXTENSION's own inserts flushed
            rows0, stats0 = snapshot()
            proxy.reset()
            time.sleep(IDLE_S)
            reqs, conns = proxy.http_requests, proxy.accepted
            rows1, stats1 = snapshot()
            assert reqs == 0 and conns == 0, f"{reqs} RPC requests, {conns} connections while nothing is enabled"
            assert rows1 == rows0, {t: (rows0[t], rows1[t]) for t in WATCHED if rows0[t] != rows1[t]}
            moved = {t: (stats0.get(t), s) for t, s in stats1.items() if stats0.get(t) != s}
            assert not moved, f"tuples written: {moved}"
            conn.execute("SELECT audius_indexer.enable('follow')")
            t_on = time.time()
            wait_until(lambda: proxy.http_requests > 0, timeout=8, interval=0.1, what="the follower's requests")
            t_req = time.time() - t_on
            # the same watch sees the writes that follow (the checkpoint, the two Transfer wallets)
            wait_until(lambda: snapshot()[0] != rows1, timeout=8, interval=0.2, what="the follower's writes")
            changed = [t for t, v in snapshot()[0].items() if v != rows1[t]]
            rec.observed = (f"{IDLE_S} s: 0 requests, 0 connections; {len(WATCHED)} tables unchanged "
                            f"({', '.join(f'{t} {rows0[t][0]}' for t in WATCHED)} rows); n_tup_* of {len(stats1)} tables "
                            f"unchanged; control: enable('follow') → first request after {t_req:.1f} s, "
                            f"then {' and '.join(changed)} changed")
        c.assert_log_clean()
    finally:
        c.destroy()
        proxy.stop()
