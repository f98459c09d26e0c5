"""Shared helpers for the dedupe-trigger tests (tests/test_triggers_*.py) and bench/triggers/run.py.

- clusters and Audius-like databases (fixture schema + PL/pgSQL reference triggers, optionally the
  extension with the Rust triggers installed through audius_indexer.install_triggers());
- a deterministic randomised workload against the tables the triggers watch, split into sessions
  that never touch each other's users (so concurrent runs are comparable row for row);
- a runner that replays the workload on several databases at once and captures per-operation
  outcomes, warnings and pg_notify payloads;
- a comparator for notification / user_score_features / the base tables.

No anvil, no preload: `CREATE EXTENSION audius_indexer` works without shared_preload_libraries.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import random
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator

import psycopg

from harness.pg import PG_BIN, Cluster

REPO = Path(__file__).resolve().parents[2]
FIXTURE_SQL = REPO / "tests" / "sql" / "audius_fixture_schema.sql"
REFERENCE_SQL = REPO / "tests" / "sql" / "reference_triggers.sql"
INDEXES_SQL = REPO / "sql" / "indexes.sql"
EXT_CONTROL = Path("/usr/share/postgresql/15/extension/audius_indexer.control")
EXT_LIB = Path("/usr/lib/postgresql/15/lib/audius_indexer.so")
BUILD_DIR = REPO / "tests" / ".build"

RUST_FUNCTIONS = {
    "on_user_challenge": "audius_indexer.handle_on_user_challenge()",
    "on_challenge_disbursement": "audius_indexer.handle_challenge_disbursement()",
    "on_sol_reward_disbursement": "audius_indexer.handle_sol_reward_disbursement()",
}
TRIGGER_TABLES = {
    "on_user_challenge": "user_challenges",
    "on_challenge_disbursement": "challenge_disbursements",
    "on_sol_reward_disbursement": "sol_reward_disbursements",
}


# ------------------------------------------------------------------------------------------------
# clusters and databases
# ------------------------------------------------------------------------------------------------
def require_extension_installed() -> None:
    missing = [str(p) for p in (PG_BIN / "postgres", EXT_CONTROL, EXT_LIB) if not p.exists()]
    if missing:
        raise RuntimeError("missing: " + ", ".join(missing) + " (run `make install` first)")


def start_cluster(name: str, settings: dict[str, str] | None = None) -> Cluster:
    """A throwaway cluster without preload (the triggers need none)."""
    require_extension_installed()
    c = Cluster(name=name, settings={"max_connections": "100", **(settings or {})})
    c.init().start()
    return c


@contextlib.contextmanager
def clean_cluster(name: str, settings: dict[str, str] | None = None) -> Iterator[Cluster]:
    """start_cluster(name, settings) for the body of the `with`; then its server log must be clean
    (assert_log_clean, skipped when the body raised); destroyed either way."""
    c = start_cluster(name, settings)
    try:
        yield c
        c.assert_log_clean()
    finally:
        c.destroy()


def reference_sql(trace: bool) -> str:
    """The reference functions; with trace=False the `-- @trace` lines are stripped (plain functions)."""
    text = REFERENCE_SQL.read_text()
    if trace:
        return text
    return "\n".join(line for line in text.splitlines() if not line.rstrip().endswith("-- @trace"))


EXTRA_CHALLENGES_SQL = """
INSERT INTO challenges (id, type, amount, active, step_count, cooldown_days) VALUES
    ('xneg',  'boolean', '3', true, NULL, -1),
    ('xzero', 'boolean', '4', true, NULL, 0),
    ('xnull', 'boolean', '6', true, NULL, NULL),
    ('x30',   'boolean', '9', true, NULL, 30);
"""


def create_audius_db(cluster: Cluster, dbname: str, *, triggers: str, trace: bool = True,
                     extension: bool = True, extra_challenges: bool = True) -> None:
    """Creates `dbname` with the fixture schema and the reference functions, then attaches the Audius
    triggers: `triggers` = 'any' | 'contains' (reference variants), 'rust' (ref 'any' first, as in
    production before the switch, then audius_indexer.install_triggers()), or 'none'."""
    cluster.create_database(dbname)
    with cluster.connect(dbname) as conn:
        conn.execute(FIXTURE_SQL.read_text())
        if extra_challenges:
            conn.execute(EXTRA_CHALLENGES_SQL)
        conn.execute(reference_sql(trace))
        if extension:
            conn.execute("CREATE EXTENSION audius_indexer")
        if triggers in ("any", "contains"):
            conn.execute("SELECT public.ref_attach_triggers(%s)", (triggers,))
        elif triggers == "rust":
            conn.execute("SELECT public.ref_attach_triggers('any')")
            rows = conn.execute("SELECT trigger_name, action FROM audius_indexer.install_triggers()").fetchall()
            assert sorted(r[0] for r in rows) == sorted(RUST_FUNCTIONS), rows
        elif triggers != "none":
            raise ValueError(triggers)


def trigger_functions(conn: psycopg.Connection) -> dict[str, str]:
    """trigger name -> function it calls (schema-qualified regprocedure text), for the Audius triggers."""
    with conn.transaction():
        conn.execute("SET LOCAL search_path = pg_catalog")
        rows = conn.execute(
            "SELECT t.tgname, t.tgfoid::regprocedure::text FROM pg_trigger t "
            "WHERE NOT t.tgisinternal AND t.tgname = ANY(%s)", (list(RUST_FUNCTIONS),)).fetchall()
    return dict(rows)


class Notices:
    """Collects server notices of one connection (WARNINGs of the triggers, reference traces)."""

    def __init__(self, conn: psycopg.Connection):
        self.items: list[tuple[str, str]] = []
        conn.add_notice_handler(self._on)

    def _on(self, diag) -> None:
        self.items.append((diag.severity_nonlocalized or diag.severity or "", diag.message_primary or ""))

    def take(self) -> list[tuple[str, str]]:
        out, self.items = self.items, []
        return out


# ------------------------------------------------------------------------------------------------
# workload
# ------------------------------------------------------------------------------------------------
CATALOG = ["p", "u", "fp", "v", "e", "p1", "p2", "p3", "tt", "tut", "tp", "c", "t", "cp", "cs", "w",
           "b", "s", "m", "r", "rv", "rd", "dvl"]
EXTRA = ["xneg", "xzero", "xnull", "x30"]
# Weighted so every branch is hit often: special ids (b/s/m/e/dvl/tt/tp/tut) get extra weight.
CHALLENGE_WEIGHTS = {c: 1.0 for c in CATALOG + EXTRA}
CHALLENGE_WEIGHTS.update({"e": 3.0, "b": 2.0, "s": 2.0, "m": 2.0, "dvl": 2.0, "tt": 1.5, "v": 2.0,
                          "xzero": 2.0, "xnull": 2.0, "p": 2.0, "r": 2.0, "rd": 2.0})
REWARD_CODES = ["rcode1", "rcode2", "Gift-XYZ", "rcode\"q"]
WEIRD = ["", "\"q\"", "back\\slash", "new\nline", "tab\tx", "ctl\x01\x1f", "ünï€😀", "a:b:c", "' OR 1=1 --"]

# Cooldown changes applied between the two phases (sequentially, no session running).
PHASE2_COOLDOWNS = [("p", 0), ("v", 7), ("b", 0), ("s", None), ("e", 2), ("xzero", 5), ("dvl", 3),
                    ("tt", 1), ("m", None), ("x30", 0)]

UC_UPSERT = (
    "INSERT INTO user_challenges (challenge_id, user_id, specifier, is_complete, current_step_count, "
    "completed_blocknumber, amount, completed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (challenge_id, specifier) DO UPDATE SET "
    "current_step_count = EXCLUDED.current_step_count, "
    "is_complete = user_challenges.is_complete OR EXCLUDED.is_complete, "
    "amount = CASE WHEN user_challenges.is_complete THEN user_challenges.amount ELSE EXCLUDED.amount END, "
    "completed_blocknumber = coalesce(user_challenges.completed_blocknumber, EXCLUDED.completed_blocknumber), "
    "completed_at = CASE WHEN user_challenges.is_complete THEN user_challenges.completed_at "
    "ELSE EXCLUDED.completed_at END")
UC_TOUCH = ("UPDATE user_challenges SET current_step_count = coalesce(current_step_count, 0) + 1 "
            "WHERE challenge_id = %s AND specifier = %s")
UC_FORCE = ("UPDATE user_challenges SET is_complete = true, completed_at = %s, user_id = %s "
            "WHERE challenge_id = %s AND specifier = %s")
RMTX = "INSERT INTO reward_manager_txs (signature, slot, created_at) VALUES (%s, %s, %s)"
CD = ("INSERT INTO challenge_disbursements (challenge_id, user_id, specifier, signature, slot, amount, created_at) "
      "VALUES (%s, %s, %s, %s, %s, %s, %s)")
SOL = ("INSERT INTO sol_reward_disbursements (signature, instruction_index, amount, slot, user_bank, challenge_id, "
       "specifier, recipient_eth_address, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)")
STREAK = ("INSERT INTO challenge_listen_streak (user_id, last_listen_date, listen_streak) VALUES (%s, %s, %s) "
          "ON CONFLICT (user_id) DO UPDATE SET listen_streak = EXCLUDED.listen_streak")
USER_RETIRE = "UPDATE users SET is_current = false WHERE user_id = %s AND is_current"
USER_ROW = ("INSERT INTO users (user_id, wallet, is_current, created_at, is_verified, txhash) "
            "VALUES (%s, %s, %s, %s, false, %s)")


@dataclasses.dataclass
class Op:
    kind: str
    sql: str
    params: tuple


@dataclasses.dataclass
class Txn:
    ops: list[Op]
    explicit: bool = False      # BEGIN/COMMIT around it
    rollback: bool = False      # ends with ROLLBACK instead of COMMIT


def _mixed_case_wallet(rng: random.Random) -> str:
    hexs = "".join(rng.choice("0123456789abcdef") for _ in range(40))
    return "0x" + "".join(ch.upper() if ch.isalpha() and rng.random() < 0.5 else ch for ch in hexs)


def _ts(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


@dataclasses.dataclass
class UserModel:
    user_id: int
    wallet: str | None           # current wallet (None: no users row at all / NULL wallet)
    has_row: bool
    old_wallets: list[str]
    rows: int = 0


class Workload:
    """A deterministic workload: `setup` (sequential, before sessions), then phases of sessions.

    Each session owns a disjoint set of users, signatures and specifiers, so the outcome of every
    operation is independent of how sessions interleave."""

    def __init__(self, seed: int, sessions: int, ops_per_session: int, users_per_session: int = 40,
                 start: dt.datetime = dt.datetime(2026, 3, 6, 18, 0, 0)):
        self.seed = seed
        self.rng = random.Random(seed)
        self.n_sessions = sessions
        self.start = start
        self.setup: list[Op] = []
        self.users: list[list[UserModel]] = []
        self._build_users(users_per_session)
        half = ops_per_session // 2
        self.phases: list[list[list[Txn]]] = []
        self.between: list[list[Op]] = []
        clocks = [start for _ in range(sessions)]
        self.counters = [collections.Counter() for _ in range(sessions)]
        self.sigs: list[list[str]] = [[] for _ in range(sessions)]
        self.uc_keys: list[list[tuple[str, str, int]]] = [[] for _ in range(sessions)]
        phase1, phase2 = [], []
        for s in range(sessions):
            srng = random.Random(f"{seed}-{s}")
            t1, clocks[s] = self._session_ops(s, srng, half, clocks[s])
            t2, clocks[s] = self._session_ops(s, srng, ops_per_session - half, clocks[s])
            phase1.append(t1)
            phase2.append(t2)
        self.phases = [phase1, phase2]
        self.between = [[Op("admin", "UPDATE challenges SET cooldown_days = %s WHERE id = %s", (cd, cid))
                         for cid, cd in PHASE2_COOLDOWNS]]

    # -- users ------------------------------------------------------------------------------------
    def _build_users(self, per_session: int) -> None:
        rng = self.rng
        used_ids: set[int] = set()
        for s in range(self.n_sessions):
            mine = []
            for _ in range(per_session):
                uid = rng.choice([rng.randint(1, 5000), rng.randint(100_000, 2_000_000_000)])
                while uid in used_ids:
                    uid = rng.randint(1, 2_000_000_000)
                used_ids.add(uid)
                r = rng.random()
                created = self.start + dt.timedelta(minutes=rng.randint(-600, 6000))
                if r < 0.08:        # ghost: no users row at all
                    mine.append(UserModel(uid, None, False, []))
                    continue
                if r < 0.14:
                    wallet = None   # row with NULL wallet
                elif r < 0.30:
                    # already lowercase: the case-sensitive original matches it too
                    wallet = _mixed_case_wallet(rng).lower()
                else:
                    wallet = _mixed_case_wallet(rng)
                u = UserModel(uid, wallet, True, [])
                if rng.random() < 0.25:   # a historic, non-current row (counts twice in the score join)
                    old = _mixed_case_wallet(rng)
                    u.old_wallets.append(old)
                    self.setup.append(Op("user", USER_ROW, (uid, old, False, _ts(created), f"old-{uid}")))
                    u.rows += 1
                self.setup.append(Op("user", USER_ROW, (uid, wallet, True, _ts(created), f"tx-{uid}-0")))
                u.rows += 1
                if rng.random() < 0.4:
                    self.setup.append(Op("streak", STREAK, (uid, _ts(created), rng.randint(0, 40))))
                mine.append(u)
            self.users.append(mine)
        for code in REWARD_CODES:
            self.setup.append(Op("reward_code", "INSERT INTO reward_codes (code, mint, reward_address, amount) "
                                 "VALUES (%s, 'mint', 'addr', 1)", (code,)))

    # -- sessions ---------------------------------------------------------------------------------
    def _pick_challenge(self, rng: random.Random) -> str:
        ids = list(CHALLENGE_WEIGHTS)
        return rng.choices(ids, weights=[CHALLENGE_WEIGHTS[i] for i in ids])[0]

    def _specifier(self, rng: random.Random, u: UserModel, s: int) -> str:
        base = format(u.user_id, "x")
        r = rng.random()
        if r < 0.55:
            return base
        if r < 0.85:
            return f"{base}:{format(rng.randint(1, 60), 'x')}"
        return f"{base}:{rng.choice(WEIRD)}"

    def _session_ops(self, s: int, rng: random.Random, n: int, clock: dt.datetime):
        txns: list[Txn] = []
        users = self.users[s]
        count = 0
        while count < n:
            # advance this session's clock: mostly minutes, sometimes an hour+, sometimes backwards
            r = rng.random()
            if r < 0.80:
                clock += dt.timedelta(seconds=rng.randint(0, 600))
            elif r < 0.93:
                clock += dt.timedelta(minutes=rng.randint(30, 120))
            else:
                clock -= dt.timedelta(minutes=rng.randint(1, 180))
            k = rng.random()
            if k < 0.10 and count + 2 <= n:
                ops = [op for _ in range(rng.randint(2, 4)) for op in self._op(s, rng, users, clock)]
                txns.append(Txn(ops, explicit=True, rollback=rng.random() < 0.15))
                count += len(ops)
            elif k < 0.14:
                ops = self._dual_fire(s, rng, users, clock)
                txns.append(Txn(ops, explicit=True))
                count += len(ops)
            else:
                ops = self._op(s, rng, users, clock)
                txns.append(Txn(ops, explicit=len(ops) > 1))
                count += len(ops)
        return txns, clock

    def _op(self, s: int, rng: random.Random, users: list[UserModel], clock: dt.datetime) -> list[Op]:
        r = rng.random()
        if r < 0.50:
            return [self._uc_op(s, rng, users, clock)]
        if r < 0.58:
            sig = f"s{s}-rm-{len(self.sigs[s])}"
            self.sigs[s].append(sig)
            return [Op("rmtx", RMTX, (sig, rng.randint(1, 10**6), _ts(clock)))]
        if r < 0.76:
            return [self._cd_op(s, rng, users, clock)]
        if r < 0.94:
            return [self._sol_op(s, rng, users, clock)]
        if r < 0.97:
            u = rng.choice(users)
            return [Op("streak", STREAK, (u.user_id, _ts(clock), rng.randint(0, 50)))]
        return self._user_change(s, rng, users, clock)

    def _uc_op(self, s, rng, users, clock) -> Op:
        keys = self.uc_keys[s]
        r = rng.random()
        if keys and r < 0.20:
            cid, spec, uid = rng.choice(keys)
            return Op("uc_touch", UC_TOUCH, (cid, spec))
        if keys and r < 0.25:
            cid, spec, uid = rng.choice(keys)
            when = clock + dt.timedelta(seconds=rng.randint(-100, 100))
            return Op("uc_force", UC_FORCE, (_ts(when), uid, cid, spec))
        if keys and r < 0.45:
            cid, spec, uid = rng.choice(keys)   # re-upsert of an existing key
        else:
            u = rng.choice(users)
            cid, spec, uid = self._pick_challenge(rng), None, u.user_id
            spec = self._specifier(rng, u, s)
            keys.append((cid, spec, uid))
        complete = rng.random() < 0.75
        completed_at = None
        if complete:
            completed_at = None if rng.random() < 0.01 else _ts(clock + dt.timedelta(seconds=rng.randint(-30, 30)))
        amount = rng.choice([0, 1, 2, 5, 10, 25, 100, 1000, 10000, -1, 2147483647])
        block = rng.choice([None, None, rng.randint(1, 2**31 - 1)])
        step = rng.choice([None, 0, 1, 3, 7])
        return Op("uc_upsert", UC_UPSERT, (cid, uid, spec, complete, step, block, amount, completed_at))

    def _cd_op(self, s, rng, users, clock) -> Op:
        u = rng.choice(users)
        cid = rng.choice(CATALOG + REWARD_CODES + ["unknown-id"]) if rng.random() < 0.4 else self._pick_challenge(rng)
        spec = self._specifier(rng, u, s)
        if self.sigs[s] and rng.random() < 0.7:
            sig = rng.choice(self.sigs[s])
        else:
            sig = f"s{s}-rm-{len(self.sigs[s]) + rng.randint(0, 3)}"   # maybe a future reward_manager_tx
        created = None if rng.random() < 0.02 else _ts(clock + dt.timedelta(seconds=rng.randint(-60, 60)))
        amount = rng.choice(["100000000", "1", "0", "2500000000", "abc", "\"x\""])
        return Op("cd", CD, (cid, u.user_id, spec, sig, rng.randint(1, 2**31 - 1), amount, created))

    def _recipient(self, rng, users) -> str | None:
        u = rng.choice(users)
        r = rng.random()
        if r < 0.55 and u.wallet:
            return u.wallet.lower()              # what the Go indexer stores
        if r < 0.65 and u.wallet:
            return u.wallet                      # exact (mixed) case
        if r < 0.70 and u.wallet:
            return "0x" + u.wallet[2:].upper()
        if r < 0.78 and u.old_wallets:
            return u.old_wallets[0].lower()      # non-current row: must not resolve
        if r < 0.82:
            return None
        return _mixed_case_wallet(rng).lower()   # nobody's

    def _sol_op(self, s, rng, users, clock) -> Op:
        self.counters[s]["sol"] += 1
        sig = f"s{s}-sol-{self.counters[s]['sol'] // 2}"        # two instructions per signature
        idx = self.counters[s]["sol"] % 2
        u = rng.choice(users)
        cid = rng.choice(REWARD_CODES) if rng.random() < 0.12 else self._pick_challenge(rng)
        spec = self._specifier(rng, u, s)
        slot = rng.choice([rng.randint(1, 2**31 - 1)] * 30 + [2**31 + rng.randint(0, 10**6)])
        created = None if rng.random() < 0.02 else _ts(clock + dt.timedelta(seconds=rng.randint(-60, 60)))
        amount = rng.choice([100000000, 1, 0, 2**40, -5])
        return Op("sol", SOL, (sig, idx, amount, slot, f"bank-{s}", cid, spec, self._recipient(rng, users), created))

    def _dual_fire(self, s, rng, users, clock) -> list[Op]:
        """Legacy + sol disbursement of the same reward in one transaction (Audius cutover)."""
        u = rng.choice([x for x in users if x.wallet] or users)
        cid = self._pick_challenge(rng)
        spec = self._specifier(rng, u, s)
        sig = f"s{s}-dual-{self.counters[s]['dual']}"
        self.counters[s]["dual"] += 1
        when = _ts(clock)
        return [Op("rmtx", RMTX, (sig, 5, when)),
                Op("cd", CD, (cid, u.user_id, spec, sig, 5, "100000000", when)),
                Op("sol", SOL, (sig, 0, 100000000, 5, f"bank-{s}", cid, spec,
                                u.wallet.lower() if u.wallet else None, when))]

    def _user_change(self, s, rng, users, clock) -> list[Op]:
        """A new current users row (new wallet, or the same wallet re-cased); the old one retired."""
        u = rng.choice([x for x in users if x.has_row] or users)
        if not u.has_row:
            return [Op("streak", STREAK, (u.user_id, _ts(clock), 1))]
        new_wallet = u.wallet.swapcase() if (u.wallet and rng.random() < 0.5) else _mixed_case_wallet(rng)
        if u.wallet:
            u.old_wallets.append(u.wallet)
        u.wallet = new_wallet
        u.rows += 1
        created = _ts(clock - dt.timedelta(minutes=rng.randint(0, 30)))
        return [Op("user_retire", USER_RETIRE, (u.user_id,)),
                Op("user", USER_ROW, (u.user_id, new_wallet, True, created, f"tx-{u.user_id}-{u.rows}"))]

    def op_count(self) -> int:
        return sum(len(t.ops) for phase in self.phases for sess in phase for t in sess)


# ------------------------------------------------------------------------------------------------
# running
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class SessionResult:
    outcomes: list[tuple]           # per op: ('ok',) | ('error', sqlstate, message) | ('skipped',)
    warnings: list[list[tuple]]     # per op: WARNING/ERROR-level notices (trace notices removed)
    traces: collections.Counter     # reference branch traces
    plans_cached: int | None = None


def run_session(conninfo: str, txns: list[Txn], timezone: str, trace: bool, rust: bool) -> SessionResult:
    conn = psycopg.connect(conninfo, autocommit=True, options=f"-c TimeZone={timezone}")
    notices = Notices(conn)
    res = SessionResult([], [], collections.Counter())
    try:
        if trace:
            conn.execute("SET audius_ref.trace = on")
        for txn in txns:
            if txn.explicit:
                conn.execute("BEGIN")
            failed = False
            for op in txn.ops:
                if failed:
                    res.outcomes.append(("skipped",))
                    res.warnings.append([])
                    continue
                try:
                    conn.execute(op.sql, op.params, prepare=False)
                    res.outcomes.append(("ok",))
                except psycopg.Error as e:
                    d = e.diag
                    res.outcomes.append(("error", d.sqlstate, d.message_primary))
                    failed = True
                got = []
                for sev, msg in notices.take():
                    if msg.startswith("ref-branch "):
                        res.traces[msg[len("ref-branch "):]] += 1
                    else:
                        got.append((sev, msg))
                res.warnings.append(got)
            if txn.explicit:
                conn.execute("ROLLBACK" if (failed or txn.rollback) else "COMMIT")
        if rust:
            res.plans_cached = conn.execute("SELECT audius_indexer.trigger_plans_cached()").fetchone()[0]
    finally:
        conn.close()
    return res


class Listener:
    """LISTEN challenge_disbursed on a dedicated connection; collects payloads."""

    def __init__(self, conninfo: str):
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.conn.execute("LISTEN challenge_disbursed")
        self.payloads: list[str] = []

    def drain(self, quiet: float = 0.5) -> list[str]:
        while True:
            n = 0
            for note in self.conn.notifies(timeout=quiet):
                self.payloads.append(note.payload)
                n += 1
            if n == 0:
                return self.payloads

    def close(self) -> None:
        self.conn.close()


@dataclasses.dataclass
class DbRun:
    name: str
    sessions: list[SessionResult]
    payloads: list[str]
    seconds: float


def replay(cluster: Cluster, dbs: dict[str, bool], workload: Workload, timezone: str,
           trace: bool = True) -> dict[str, DbRun]:
    """Replays `workload` on every database of `dbs` (name -> uses Rust triggers) at the same time:
    setup sequentially, then each phase with one thread per session per database, then the
    between-phase admin ops sequentially."""
    listeners = {name: Listener(cluster.conninfo(name)) for name in dbs}
    results: dict[str, list[SessionResult]] = {name: [SessionResult([], [], collections.Counter())
                                                      for _ in range(workload.n_sessions)] for name in dbs}
    t0 = time.time()
    try:
        for name in dbs:
            with cluster.connect(name) as conn:
                for op in workload.setup:
                    conn.execute(op.sql, op.params)
        for p, phase in enumerate(workload.phases):
            threads = []
            errors: list[BaseException] = []

            def work(name: str, s: int, txns: list[Txn]) -> None:
                try:
                    r = run_session(cluster.conninfo(name), txns, timezone, trace and not dbs[name], dbs[name])
                    acc = results[name][s]
                    acc.outcomes += r.outcomes
                    acc.warnings += r.warnings
                    acc.traces.update(r.traces)
                    acc.plans_cached = r.plans_cached
                except BaseException as e:  # noqa: BLE001 - re-raised below
                    errors.append(e)

            for name in dbs:
                for s, txns in enumerate(phase):
                    threads.append(threading.Thread(target=work, args=(name, s, txns)))
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
            if p < len(workload.between):
                for name in dbs:
                    with cluster.connect(name) as conn:
                        for op in workload.between[p]:
                            conn.execute(op.sql, op.params)
        elapsed = time.time() - t0
        return {name: DbRun(name, results[name], listeners[name].drain(), elapsed) for name in dbs}
    finally:
        for lst in listeners.values():
            lst.close()


# ------------------------------------------------------------------------------------------------
# comparing
# ------------------------------------------------------------------------------------------------
SNAPSHOT_QUERIES = {
    "notification": (
        "SELECT specifier, group_id, type, slot, blocknumber, \"timestamp\"::text, data::text, "
        "user_ids::text, type_v2 FROM notification ORDER BY group_id, specifier"),
    "user_score_features": "SELECT user_id, challenge_count FROM user_score_features ORDER BY user_id",
    "user_challenges": (
        "SELECT challenge_id, user_id, specifier, is_complete, current_step_count, completed_blocknumber, "
        "amount, completed_at::text FROM user_challenges ORDER BY challenge_id, specifier"),
    "challenge_disbursements": (
        "SELECT challenge_id, user_id, specifier, signature, slot, amount, created_at::text "
        "FROM challenge_disbursements ORDER BY challenge_id, specifier"),
    "sol_reward_disbursements": (
        "SELECT signature, instruction_index, amount, slot, challenge_id, specifier, recipient_eth_address, "
        "created_at::text FROM sol_reward_disbursements ORDER BY signature, instruction_index"),
    "users": "SELECT user_id, wallet, is_current, created_at::text, txhash FROM users ORDER BY user_id, txhash",
}


def snapshot(cluster: Cluster, dbname: str) -> dict[str, list[tuple]]:
    # Render timestamps in UTC so both databases print them the same way.
    with cluster.connect(dbname, options="-c TimeZone=UTC") as conn:
        return {k: conn.execute(q).fetchall() for k, q in SNAPSHOT_QUERIES.items()}


def multiset_diff(a: Iterable, b: Iterable) -> tuple[list, list]:
    ca, cb = collections.Counter(a), collections.Counter(b)
    return sorted((ca - cb).elements(), key=repr), sorted((cb - ca).elements(), key=repr)


def compare_runs(cluster: Cluster, ref: DbRun, other: DbRun) -> list[str]:
    """Human-readable differences between two replays (empty list = identical)."""
    problems: list[str] = []
    sa, sb = snapshot(cluster, ref.name), snapshot(cluster, other.name)
    for table in SNAPSHOT_QUERIES:
        only_a, only_b = multiset_diff(sa[table], sb[table])
        if only_a or only_b:
            problems.append(f"{table}: {len(only_a)} rows only in {ref.name}, {len(only_b)} only in {other.name}; "
                            f"e.g. {ref.name}: {only_a[:3]} / {other.name}: {only_b[:3]}")
    only_a, only_b = multiset_diff(ref.payloads, other.payloads)
    if only_a or only_b:
        problems.append(f"pg_notify payloads: {len(only_a)} only in {ref.name}, {len(only_b)} only in "
                        f"{other.name}; e.g. {only_a[:3]} / {only_b[:3]}")
    for s, (ra, rb) in enumerate(zip(ref.sessions, other.sessions)):
        for i, (oa, ob) in enumerate(zip(ra.outcomes, rb.outcomes)):
            if oa != ob:
                problems.append(f"session {s} op {i}: outcome {oa} vs {ob}")
                break
        for i, (wa, wb) in enumerate(zip(ra.warnings, rb.warnings)):
            if wa != wb:
                problems.append(f"session {s} op {i}: warnings {wa} vs {wb}")
                break
        if len(ra.outcomes) != len(rb.outcomes):
            problems.append(f"session {s}: {len(ra.outcomes)} vs {len(rb.outcomes)} outcomes")
    return problems


def summarize(cluster: Cluster, run: DbRun) -> dict:
    outcomes = collections.Counter()
    warnings = 0
    for sess in run.sessions:
        for o in sess.outcomes:
            outcomes[o[0] if o[0] != "error" else f"error {o[1]}"] += 1
        warnings += sum(len(w) for w in sess.warnings)
    traces = collections.Counter()
    for sess in run.sessions:
        traces.update(sess.traces)
    with cluster.connect(run.name) as conn:
        by_type = dict(conn.execute("SELECT type, count(*) FROM notification GROUP BY 1 ORDER BY 1").fetchall())
        scores = conn.execute("SELECT count(*), count(*) FILTER (WHERE challenge_count > 0) "
                              "FROM user_score_features").fetchone()
    return {"ops": sum(outcomes.values()), "outcomes": dict(sorted(outcomes.items())), "warnings": warnings,
            "notifications_by_type": by_type, "user_score_features_rows": scores[0],
            "user_score_features_nonzero": scores[1], "pg_notify_payloads": len(run.payloads),
            "branches": dict(sorted(traces.items())), "seconds": round(run.seconds, 1)}
