"""No path to superuser (suite table "No path to superuser" in docs/reliability.md).

Every case is an exploit that must FAIL to escalate. A case passes when, afterwards, the attacking
role is still not a superuser (pg_roles.rolsuper) AND its payload never ran with superuser rights.
Payloads record every run three ways, so that a run inside a transaction that later rolls back is
still seen: nextval() of a sequence the attacker owns (not transactional), a `RAISE LOG` line in the
server log, and a row in a table the attacker owns; a run as a superuser also tries
`ALTER ROLE <attacker> SUPERUSER`. The attacked call itself may succeed or fail; when it fails its
SQLSTATE must be a clear one (never class XX, never a lost connection) and no backend may crash.
So that no case passes vacuously, a call that succeeds must have done its job (a stale row swept,
the two Transfer logs past the checkpoint seen, user_challenges rows written), and under attack each
worker must still sweep, follow and process challenges.

1. pg_temp domains — an operator (LOGIN, member of audius_indexer_operator, the default TEMP
   privilege) creates `pg_temp.pwn()` and domains pg_temp.oid / int4 / int8 / text / bool / numeric /
   timestamptz whose CHECK calls it, then calls every entry point open to it (an inventory test
   keeps the list complete), in a database with only the extension and in an Audius-like one.
2. pg_temp views — the same operator shadows, with temporary views whose scan runs the payload,
   every table the extension reads or writes (Audius tables, the extension's own tables, the
   catalogs it reads); same entry points, same two databases (in the first, `users` /
   `associated_wallets` are absent: a fall-through would find the temporary view).
3. the background workers, each attack in a cluster of its own whose database belongs to the
   non-superuser `dbowner`: (a) schema `postgres` (the "$user" of the default search_path for the
   bootstrap superuser) with views users / associated_wallets / eth_wallet_balances / … that run the
   payload, while the follow, sweep and challenge workers run; (b) `ALTER DATABASE … SET search_path
   = public, pg_catalog` and domains public.oid / int4 / text / … whose CHECK runs the payload (plus
   catalog-named views in public). Positive case: `audius_indexer.worker_role = 'indexer_worker'`
   makes the three workers connect as that role, and they still do their work.
4. the Audius application role owning the written tables: `audius_app` owns eth_wallet_balances,
   users, user_challenges, … and their trigger functions, and adds its own AFTER trigger on
   eth_wallet_balances and user_challenges that records current_user and tries
   `ALTER ROLE audius_app SUPERUSER`. Every writer (SQL functions as superuser and as operator, the
   three workers) must fire it as a non-superuser — the table owner — and eth_user_balances must
   stay exact (no WARNING).

The suite table (tests/.build/suites/no_path_to_superuser.md) has one row per case: case, entry point,
escalated (0/1), crashed (0/1), outcome.
"""
from __future__ import annotations

import contextlib
import itertools
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from conftest import crash_lines, wait_until
from harness.chain import to_checksum, wallet_address
from harness.databases import idle_audius_cluster
from harness.follow import expected_total
from harness.pg import Cluster, load_audius_tables
from harness.reliability import Report, log_guard
from operations.test_audius_database import COUNTED, W as AUDIUSDB_W, seed_audius_rows

pytestmark = pytest.mark.timeout(240)

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
REFERENCE_SQL = "\n".join(line for line in (SQL_DIR / "reference_triggers.sql").read_text().splitlines()
                          if not line.rstrip().endswith("-- @trace"))

ATTACKER = "escal_op"                    # cases 1 and 2 (session cluster)
DB_PLAIN, DB_AUDIUS = "escal_plain", "escal_audius"
PIN = "-c search_path=pg_catalog"      # every connection of the test itself: nothing of an attacker's resolves
W = [wallet_address(i, "escal") for i in range(6)]
FUNDER = wallet_address(0, "escalfunder")  # sends the Transfers the follower sees (never tracked)

# every relation the extension names in sql/ and src/ (Audius tables, its own tables and views, the
# catalogs it reads): case 2 shadows each with a temporary view, case 3a with a view in schema postgres
AUDIUS_TABLES = ("eth_wallet_balances", "eth_indexer_checkpoints", "eth_user_balances", "users",
                 "associated_wallets", "user_events", "user_challenges", "challenges", "indexing_checkpoints",
                 "notification", "user_score_features", "challenge_listen_streak", "challenge_disbursements",
                 "sol_reward_disbursements", "reward_manager_txs", "reward_codes")
OWN_TABLES = ("wallet_failures", "sweep_state", "follow_state", "follow_blocks", "follow_pending",
              "challenge_processor_state", "trigger_install_state", "sweep_status", "follow_status",
              "challenge_processor_status")
CATALOGS = ("pg_stat_activity", "pg_class", "pg_trigger", "pg_namespace", "pg_proc", "pg_index", "pg_extension",
            "pg_am", "pg_roles", "pg_locks", "pg_settings", "pg_database", "pg_attribute", "pg_type", "pg_depend",
            "pg_auth_members", "pg_db_role_setting", "pg_tables")
SHADOWED = AUDIUS_TABLES + OWN_TABLES + CATALOGS
DOMAIN_TYPES = ("oid", "int4", "int8", "text", "bool", "numeric", "timestamptz")


# ------------------------------------------------------------------------------------------------
# the suite table: case | entry point | escalated | crashed | outcome
# ------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    escalated: int | None = None
    crashed: int | None = None
    outcome: str = ""


class EscalationReport(Report):
    def __init__(self):
        super().__init__("no_path_to_superuser", "No path to superuser")
        self.attacks: list[tuple] = []

    @contextlib.contextmanager
    def attack(self, case: str, entry: str):
        rec = Outcome()
        try:
            yield rec
        except BaseException as e:  # noqa: BLE001
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            self.attacks.append((case, entry, rec.escalated, rec.crashed,
                                 f"**FAIL**: {rec.outcome or first[:200]}", False))
            raise
        self.attacks.append((case, entry, rec.escalated, rec.crashed, rec.outcome or "as expected", True))

    def write(self) -> Path:
        from harness.reliability import BUILD
        BUILD.mkdir(parents=True, exist_ok=True)
        took = time.monotonic() - self.started
        ok = sum(1 for r in self.attacks if r[5])
        esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
        flag = lambda v: "?" if v is None else str(int(v))  # noqa: E731
        lines = [f"### {self.title}", "", f"{len(self.attacks)} cases tried, {ok} passed, {took:.1f} s.", "",
                 "| case | entry point | escalated | crashed | outcome |", "|---|---|---|---|---|"]
        for case, entry, e, c, out, _ in self.attacks:
            lines.append(f"| {esc(case)} | {esc(entry)} | {flag(e)} | {flag(c)} | {esc(out)} |")
        path = BUILD / f"{self.suite}.md"
        path.write_text("\n".join(lines) + "\n")
        return path


@pytest.fixture(scope="module")
def report(cluster):
    r = EscalationReport()
    with log_guard(cluster):
        yield r
        r.write()


# ------------------------------------------------------------------------------------------------
# payloads
# ------------------------------------------------------------------------------------------------
def count_run_sql(evidence: str) -> str:
    """The head of a recording PL/pgSQL body: `su` := whether current_user is a superuser; the run
    counted in `<evidence>.runs` and, as a superuser, in `<evidence>.super_runs`."""
    return f"""DECLARE
  su pg_catalog.bool;
BEGIN
  su := (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) current_user);
  PERFORM pg_catalog.nextval('{evidence}.runs');
  IF su THEN
    PERFORM pg_catalog.nextval('{evidence}.super_runs');
  END IF;"""


def payload_sql(schema: str, evidence: str, role: str, tag: str) -> str:
    """`<schema>.pwn(anyelement)`: records the run (sequence, LOG line, row) with current_user and
    whether it is a superuser; as a superuser it makes `role` one. `<schema>.pwn_set()`: a set
    returning function that runs pwn() and returns no row (the body of the shadowing views: a
    function scan cannot be folded away by the planner). Every type and operator in the bodies is
    schema-qualified, so the attacker's own domains never apply inside them."""
    return f"""
CREATE FUNCTION {schema}.pwn(x pg_catalog.anyelement) RETURNS pg_catalog.bool LANGUAGE plpgsql AS $pwn$
{count_run_sql(evidence)}
  RAISE LOG 'escal-payload {tag}: current_user=% %', current_user,
    CASE WHEN su THEN 'SUPERUSER' ELSE 'not-superuser' END;
  INSERT INTO {evidence}.hits (tag, who, super) VALUES ('{tag}', current_user, su);
  IF su THEN
    EXECUTE 'ALTER ROLE {role} SUPERUSER';
  END IF;
  RETURN true;
END
$pwn$;
CREATE FUNCTION {schema}.pwn_set() RETURNS SETOF pg_catalog.record LANGUAGE plpgsql AS $set$
BEGIN
  PERFORM {schema}.pwn(true);
  RETURN;
END
$set$;
"""


def evidence_sql(schema: str) -> str:
    """The attacker's record of payload runs; anyone may write to it (so a run as any role records)."""
    return f"""
CREATE TABLE {schema}.hits (at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
                            tag pg_catalog.text, who pg_catalog.text, super pg_catalog.bool);
CREATE SEQUENCE {schema}.runs;
CREATE SEQUENCE {schema}.super_runs;
GRANT USAGE ON SCHEMA {schema} TO PUBLIC;
GRANT INSERT, SELECT ON {schema}.hits TO PUBLIC;
GRANT USAGE, UPDATE, SELECT ON SEQUENCE {schema}.runs, {schema}.super_runs TO PUBLIC;
"""


def domains_sql(schema: str, fn_schema: str) -> str:
    return "\n".join(f"CREATE DOMAIN {schema}.{t} AS pg_catalog.{t} CHECK ({fn_schema}.pwn(VALUE));"
                     for t in DOMAIN_TYPES)


def column_defs(conn, names, keep_types: bool) -> dict[str, str]:
    """name -> 'col type, …' of the relation of that name in public / audius_indexer / pg_catalog
    (pseudo-types become text, and types outside pg_catalog too unless keep_types: the other
    database may lack them)."""
    rows = conn.execute(
        "SELECT c.relname, pg_catalog.string_agg(pg_catalog.format('%%I %%s', a.attname, "
        "  CASE WHEN t.typtype = 'p' THEN 'pg_catalog.text' "
        "       WHEN t.typnamespace = 'pg_catalog'::regnamespace OR %s "
        "       THEN pg_catalog.format_type(a.atttypid, a.atttypmod) ELSE 'pg_catalog.text' END), ', ' "
        "  ORDER BY a.attnum) "
        "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 "
        "AND NOT a.attisdropped JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
        "WHERE c.relname = ANY(%s) AND c.relkind IN ('r', 'v', 'p') AND c.relnamespace IN "
        "('public'::regnamespace, 'audius_indexer'::regnamespace, 'pg_catalog'::regnamespace) "
        "GROUP BY c.relname", (keep_types, list(names))).fetchall()
    return dict(rows)


def views_sql(schema: str, fn_schema: str, cols: dict[str, str]) -> str:
    return "\n".join(f"CREATE VIEW {schema}.{name} AS SELECT * FROM {fn_schema}.pwn_set() AS t({defs});"
                     for name, defs in sorted(cols.items()))


# ------------------------------------------------------------------------------------------------
# evidence
# ------------------------------------------------------------------------------------------------
@dataclass
class Evidence:
    role_super: bool
    runs: int
    super_runs: int
    who: dict = field(default_factory=dict)      # current_user -> runs (from the table)
    super_rows: int = 0
    super_lines: list = field(default_factory=list)
    crashes: list = field(default_factory=list)

    @property
    def escalated(self) -> bool:
        return bool(self.role_super or self.super_runs or self.super_rows or self.super_lines)

    def describe(self) -> str:
        who = ", ".join(f"{k} ×{v}" for k, v in sorted(self.who.items())) or "-"
        s = f"payload ran {self.runs}× (as {who}), {self.super_runs}× as a superuser"
        if self.role_super:
            s += "; ATTACKER IS SUPERUSER"
        if self.super_lines:
            s += f"; log: {self.super_lines[0].split('escal-payload', 1)[-1][:80]}"
        return s


def reset_evidence(su, schema: str, role: str) -> None:
    su.execute(f"TRUNCATE {schema}.hits")
    su.execute(f"ALTER SEQUENCE {schema}.runs RESTART")
    su.execute(f"ALTER SEQUENCE {schema}.super_runs RESTART")
    su.execute(f"ALTER ROLE {role} NOSUPERUSER")


def seq_count(su, seq: str) -> int:
    v, called = su.execute(f"SELECT last_value, is_called FROM {seq}").fetchone()
    return int(v) if called else 0


def read_evidence(cl: Cluster, su, schema: str, role: str, mark: int, marker: str = "escal-payload") -> Evidence:
    log = cl.log_text()[mark:]
    who = dict(su.execute(f"SELECT who, count(*) FROM {schema}.hits GROUP BY who").fetchall())
    return Evidence(
        role_super=su.execute("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = %s", (role,)).fetchone()[0],
        runs=seq_count(su, f"{schema}.runs"), super_runs=seq_count(su, f"{schema}.super_runs"), who=who,
        super_rows=su.execute(f"SELECT count(*) FROM {schema}.hits WHERE super").fetchone()[0],
        super_lines=[ln for ln in log.splitlines() if marker in ln and "SUPERUSER" in ln],
        crashes=crash_lines(log))


def settle(ev: Evidence, rec: Outcome, su, role: str) -> None:
    """Fills the report row, puts the role back (NOSUPERUSER) and asserts: no escalation, no crash."""
    rec.escalated, rec.crashed = int(ev.escalated), int(bool(ev.crashes))
    if ev.role_super:
        su.execute(f"ALTER ROLE {role} NOSUPERUSER")
    assert not ev.crashes, "server log shows crashes:\n" + "\n".join(ev.crashes[:10])
    assert not ev.escalated, f"ESCALATED: {ev.describe()}"


def clear_error(e: psycopg.Error) -> str:
    """The SQLSTATE of a failed call, asserted to be a clear one."""
    assert e.sqlstate is not None, f"connection lost / no SQLSTATE: {e}"
    assert not e.sqlstate.startswith("XX"), f"internal error {e.sqlstate}: {e}"
    msg = (e.diag.message_primary or str(e)).replace("\n", " ")
    return f"{e.sqlstate} {msg[:90]}"


# ------------------------------------------------------------------------------------------------
# cases 1 and 2: the operator's entry points, in the session cluster
# ------------------------------------------------------------------------------------------------
@dataclass
class EP:
    id: str
    sql: str
    needs: str = ""      # "stale" (rows to sweep), "follow" (a Transfer past the checkpoint), "events"
    names: tuple = ()    # functions / relations of schema audius_indexer it covers (inventory)


def lit(s: str) -> str:
    return "'" + s + "'"


ENTRY_POINTS = [
    EP("CALL sweep(1)", "CALL audius_indexer.sweep(1)", "stale", ("sweep",)),
    EP("refresh_stale(1)", "SELECT * FROM audius_indexer.refresh_stale(1)", "stale", ("refresh_stale",)),
    EP("refresh_wallets", f"SELECT * FROM audius_indexer.refresh_wallets(ARRAY[{lit(W[0])}, {lit(W[1])}])",
       "", ("refresh_wallets",)),
    EP("refresh_wallets(…, min_blocks)", f"SELECT * FROM audius_indexer.refresh_wallets(ARRAY[{lit(W[2])}], ARRAY[1])",
       "", ("refresh_wallets",)),
    EP("follow_transfers()", "SELECT * FROM audius_indexer.follow_transfers()", "follow", ("follow_transfers",)),
    EP("process_user_event_challenges()", "SELECT * FROM audius_indexer.process_user_event_challenges()",
       "events", ("process_user_event_challenges",)),
    EP("upsert_wallet_balances", "SELECT * FROM audius_indexer.upsert_wallet_balances("
       f"ARRAY[{lit(W[3])}], ARRAY[5], ARRAY[1])", "", ("upsert_wallet_balances",)),
    EP("upsert_wallet_balances(…, true)", "SELECT * FROM audius_indexer.upsert_wallet_balances("
       f"ARRAY[{lit(W[4])}], ARRAY[6], ARRAY[1], true)", "", ("upsert_wallet_balances",)),
    EP("doctor()", "SELECT * FROM audius_indexer.doctor()", "", ("doctor",)),
    EP("multicall_total_audio_balances", "SELECT * FROM audius_indexer.multicall_total_audio_balances("
       f"ARRAY[{lit(W[0])}])", "", ("multicall_total_audio_balances",)),
    EP("reset_sweep_status()", "SELECT audius_indexer.reset_sweep_status()", "", ("reset_sweep_status",)),
    EP("seed_challenge_checkpoints()", "SELECT * FROM audius_indexer.seed_challenge_checkpoints()", "",
       ("seed_challenge_checkpoints",)),
    EP("rpc_endpoint_stats()", "SELECT * FROM audius_indexer.rpc_endpoint_stats()", "", ("rpc_endpoint_stats",)),
    EP("rpc_endpoint_stats_server()", "SELECT * FROM audius_indexer.rpc_endpoint_stats_server()", "",
       ("rpc_endpoint_stats_server",)),
    EP("rpc_endpoint_errors_server()", "SELECT * FROM audius_indexer.rpc_endpoint_errors_server()", "",
       ("rpc_endpoint_errors_server",)),
    EP("health()", "SELECT * FROM audius_indexer.health()", "", ("health",)),
    EP("_challenge_checkpoints()", "SELECT * FROM audius_indexer._challenge_checkpoints()", "",
       ("_challenge_checkpoints",)),
    EP("trigger_specs()", "SELECT * FROM audius_indexer.trigger_specs()", "", ("trigger_specs",)),
    EP("trigger_statements()", "SELECT * FROM audius_indexer.trigger_statements()", "", ("trigger_statements",)),
    EP("trigger_plans_cached()", "SELECT audius_indexer.trigger_plans_cached()", "", ("trigger_plans_cached",)),
    EP("enrollment_specs()", "SELECT * FROM audius_indexer.enrollment_specs()", "", ("enrollment_specs",)),
    # SECURITY INVOKER, for the owner of users / associated_wallets: the operator gets a clear 42501
    # (42P01 where the tables are absent); the trigger function itself (enroll_wallet) is no entry point
    EP("install_enrollment()", "SELECT * FROM audius_indexer.install_enrollment()", "", ("install_enrollment",)),
    EP("uninstall_enrollment()", "SELECT * FROM audius_indexer.uninstall_enrollment()", "",
       ("uninstall_enrollment",)),
    EP("SELECT sweep_status", "SELECT * FROM audius_indexer.sweep_status", "stale", ("sweep_status",)),
    EP("SELECT follow_status", "SELECT * FROM audius_indexer.follow_status", "", ("follow_status",)),
    EP("SELECT challenge_processor_status", "SELECT * FROM audius_indexer.challenge_processor_status", "",
       ("challenge_processor_status",)),
    EP("SELECT follow_pending", "SELECT * FROM audius_indexer.follow_pending", "", ("follow_pending",)),
    EP("enable() / disable()", "SELECT audius_indexer.enable('sweep'), audius_indexer.disable('sweep')", "",
       ("enable", "disable")),
    EP("SELECT path_status", "SELECT * FROM audius_indexer.path_status", "", ("path_status",)),
    EP("SELECT wallet_failures", "SELECT * FROM audius_indexer.wallet_failures", "", ("wallet_failures",)),
]
COVERED = {n for ep in ENTRY_POINTS for n in ep.names}
_events = itertools.count(1)


@pytest.fixture(scope="module")
def escaldbs(cluster, contracts):
    """Two databases in the session cluster: escal_plain (the extension only: no users,
    associated_wallets, user_events …) and escal_audius (the Audius-database fixtures of
    test_audius_database.py, then the extension); the
    operator escal_op (LOGIN, TEMP by default) and its schema escal_evil (evidence) in each."""
    with cluster.connect() as c:
        c.execute(f"DROP ROLE IF EXISTS {ATTACKER}")
        for d in (DB_PLAIN, DB_AUDIUS):
            c.execute(f"DROP DATABASE IF EXISTS {d} WITH (FORCE)")
        c.execute(f"CREATE ROLE {ATTACKER} LOGIN IN ROLE audius_indexer_operator")
    try:
        cluster.create_database(DB_PLAIN)
        cluster.create_database(DB_AUDIUS)
        with cluster.connect(DB_AUDIUS) as c:
            load_audius_tables(c)
        for d in (DB_PLAIN, DB_AUDIUS):
            with cluster.connect(d) as c:
                c.execute("CREATE EXTENSION audius_indexer")
            with cluster.connect(d, options=PIN) as c:
                c.execute(f"CREATE SCHEMA escal_evil AUTHORIZATION {ATTACKER}")
                c.execute("INSERT INTO public.eth_wallet_balances (wallet, balance, updated_at) "
                          "SELECT w, 0, '1970-01-01' FROM pg_catalog.unnest(%s::pg_catalog.text[]) w "
                          "ON CONFLICT DO NOTHING", (W,))
            with cluster.connect(d, user=ATTACKER, options=PIN) as c:
                c.execute(evidence_sql("escal_evil"))
        with cluster.connect(DB_AUDIUS) as c:
            seed_audius_rows(c)
        contracts.set_values([FUNDER], [10**30], None, None)
        yield
    finally:
        with cluster.connect() as c:
            for d in (DB_PLAIN, DB_AUDIUS):
                c.execute(f"DROP DATABASE IF EXISTS {d} WITH (FORCE)")
            c.execute(f"DROP ROLE IF EXISTS {ATTACKER}")


@pytest.fixture(scope="module")
def shadow_cols(cluster, escaldbs):
    """Column lists of every shadowed relation, per database (from escal_audius, which has them all)."""
    with cluster.connect(DB_AUDIUS, options=PIN) as c:
        keep = column_defs(c, SHADOWED, keep_types=True)
        plain = column_defs(c, SHADOWED, keep_types=False)
    missing = set(SHADOWED) - set(keep)
    assert not missing, f"relations not found: {missing}"
    return {DB_AUDIUS: keep, DB_PLAIN: plain}


def prepare(cluster, su, dbname: str, ep: EP, anvil, contracts) -> None:
    """What the entry point needs to reach its write/scan paths."""
    if ep.needs == "stale":
        su.execute("UPDATE public.eth_wallet_balances SET updated_at = '1970-01-01'")
    elif ep.needs == "follow":
        # a checkpoint at the head, then Transfers to a tracked and to an untracked wallet past it:
        # the step's filter_tracked runs (and, for the untracked one, scans users/associated_wallets)
        su.execute("DELETE FROM audius_indexer.follow_blocks")
        su.execute("DELETE FROM audius_indexer.follow_pending")
        su.execute("INSERT INTO public.eth_indexer_checkpoints (name, last_block) VALUES ('audio_transfers', %s) "
                   "ON CONFLICT (name) DO UPDATE SET last_block = EXCLUDED.last_block", (anvil.block_number(),))
        contracts.transfer(FUNDER, W[0], 1)
        contracts.transfer(FUNDER, wallet_address(next(_events), "escaluntracked"), 1)
    elif ep.needs == "events" and dbname == DB_AUDIUS:
        su.execute("DELETE FROM public.user_challenges WHERE user_id >= 5000")
        n = next(_events)
        su.execute("INSERT INTO public.users (user_id, is_current, is_verified, txhash, blocknumber) "
                   "VALUES (%s, true, true, %s, %s)", (5000 + n, f"escalu{n}", 100 * n))
        su.execute("INSERT INTO public.user_events (blocknumber, is_current, user_id, referrer, is_mobile_user) "
                   "VALUES (%s, true, %s, %s, true)", (100 * n + 1, 6000 + n, 5000 + n))


def did_its_work(su, dbname: str, ep: EP) -> str | None:
    """After a successful call: evidence that it reached the code the trap is aimed at (None when
    the entry point has nothing to show). A call that succeeds without doing its job fails."""
    if ep.needs == "stale" and ep.sql.startswith(("CALL", "SELECT * FROM audius_indexer.refresh_stale")):
        n = su.execute("SELECT count(*) FROM public.eth_wallet_balances WHERE updated_at > '1971-01-01'").fetchone()[0]
        assert n >= 1, "the call succeeded but refreshed no row"
        return f"{n} row(s) refreshed"
    if ep.needs == "follow":
        logs, cands = su.execute("SELECT last_logs, last_candidates FROM audius_indexer.follow_status").fetchone()
        assert (logs or 0) >= 2, f"the step succeeded but saw {logs} Transfer logs (2 sent past the checkpoint)"
        return f"step saw {logs} logs, {cands} candidates"
    if ep.needs == "events" and dbname == DB_AUDIUS:
        n = su.execute("SELECT count(*) FROM public.user_challenges WHERE user_id >= 6000").fetchone()[0]
        assert n >= 1, "the processors succeeded but wrote no user_challenges row"
        return f"{n} user_challenges rows"
    return None


def run_operator_attack(case: str, kind: str, dbname: str, ep: EP, cluster, anvil, contracts, report,
                        shadow_cols=None):
    with report.attack(f"{case} [{dbname}]", ep.id) as rec, cluster.connect(dbname, options=PIN) as su:
        prepare(cluster, su, dbname, ep, anvil, contracts)
        reset_evidence(su, "escal_evil", ATTACKER)
        mark = len(cluster.log_text())
        tag = f"{kind}:{ep.id}"
        err = None
        with cluster.connect(dbname, user=ATTACKER) as att:
            att.execute(payload_sql("pg_temp", "escal_evil", ATTACKER, tag))
            if kind == "domains":
                att.execute(domains_sql("pg_temp", "pg_temp"))
            else:
                att.execute(views_sql("pg_temp", "pg_temp", shadow_cols[dbname]))
            try:
                att.execute(ep.sql)
            except psycopg.Error as e:
                err = e
        time.sleep(0.05)  # the log line of a payload run is written by now
        ev = read_evidence(cluster, su, "escal_evil", ATTACKER, mark)
        rec.outcome = ("call ok" if err is None else f"ERROR {err.sqlstate}") + "; " + ev.describe()
        settle(ev, rec, su, ATTACKER)
        if err is not None:
            rec.outcome = f"ERROR {clear_error(err)}; " + ev.describe()
        else:
            work = did_its_work(su, dbname, ep)
            rec.outcome = "call ok" + (f" ({work})" if work else "") + "; " + ev.describe()


@pytest.mark.parametrize("dbname", [DB_PLAIN, DB_AUDIUS])
@pytest.mark.parametrize("ep", ENTRY_POINTS, ids=[e.id for e in ENTRY_POINTS])
def test_1_pg_temp_domains(ep, dbname, cluster, escaldbs, anvil, contracts, report):
    run_operator_attack("1 pg_temp domains", "domains", dbname, ep, cluster, anvil, contracts, report)


@pytest.mark.parametrize("dbname", [DB_PLAIN, DB_AUDIUS])
@pytest.mark.parametrize("ep", ENTRY_POINTS, ids=[e.id for e in ENTRY_POINTS])
def test_2_pg_temp_views(ep, dbname, cluster, escaldbs, shadow_cols, anvil, contracts, report):
    run_operator_attack("2 pg_temp views", "views", dbname, ep, cluster, anvil, contracts, report, shadow_cols)


def test_entry_point_inventory(cluster, escaldbs, report):
    """Every function / procedure / relation of schema audius_indexer an operator may use is one of
    the entry points attacked above (a new one must be added to ENTRY_POINTS)."""
    with report.attack("inventory", "everything audius_indexer_operator may call or read") as rec, \
            cluster.connect(DB_AUDIUS, options=PIN) as su:
        fns = {r[0] for r in su.execute(
            "SELECT p.proname FROM pg_proc p WHERE p.pronamespace = 'audius_indexer'::regnamespace "
            "AND p.prorettype <> 'trigger'::regtype "
            "AND has_function_privilege('audius_indexer_operator', p.oid, 'EXECUTE')")}
        rels = {r[0] for r in su.execute(
            "SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'audius_indexer'::regnamespace "
            "AND c.relkind IN ('r', 'v', 'm', 'p') AND has_table_privilege('audius_indexer_operator', c.oid, 'SELECT')")}
        rec.escalated, rec.crashed = 0, 0
        rec.outcome = f"{len(fns)} functions, {len(rels)} relations: " + ", ".join(sorted(fns | rels))
        assert (fns | rels) <= COVERED, f"entry points not attacked by this suite: {sorted((fns | rels) - COVERED)}"


# ------------------------------------------------------------------------------------------------
# case 3: the background workers, a cluster per attack, database owned by dbowner
# ------------------------------------------------------------------------------------------------
WDB = "escalw"
DBOWNER = "dbowner"
FOLLOW_ON, CHALLENGES_ON = "500ms", "500ms"


def worker_db_cluster(name: str, anvil, contracts, *, owner: str | None = None, extra_sql: tuple = (),
                      settings: dict | None = None) -> Cluster:
    """A started cluster, audius_indexer preloaded, its workers pointed at database escalw (owned by
    `owner` when given) built from the Audius-database fixtures of test_audius_database.py + the
    extension and seeded like it; every worker
    off. The caller destroys it."""
    c = idle_audius_cluster(name, WDB, {
        "audius_indexer.sweep_interval": "'1s'",
        "audius_indexer.sweep_batch_size": "1000",
        **(settings or {}),
    }, owner=owner, extra_sql=extra_sql)
    try:
        with c.connect(WDB) as conn:
            seed_audius_rows(conn)
            conn.execute("INSERT INTO public.eth_wallet_balances (wallet, balance, updated_at) "
                         "SELECT w, 0, '1970-01-01' FROM unnest(%s::text[]) w ON CONFLICT DO NOTHING", (W,))
        c.restart()  # the workers connect to escalw at once
        c.set_system(rpc_url=anvil.url, token_address=contracts.token, staking_address=contracts.staking,
                     delegate_manager_address=contracts.delegate)
    except BaseException:
        c.destroy()
        raise
    return c


def worker_activity(conn) -> tuple:
    """Something that changes with every run of each worker (ticks, steps, processor runs, errors)."""
    s = conn.execute("SELECT ticks, last_tick_finished, last_error_at FROM audius_indexer.sweep_status").fetchone()
    f = conn.execute("SELECT steps, last_step_finished, last_error_at FROM audius_indexer.follow_status").fetchone()
    ch = conn.execute("SELECT sum(runs), max(last_run_at) FROM audius_indexer.challenge_processor_state").fetchone()
    return s, f, ch


def arm_workers(c: Cluster, su, anvil, contracts) -> None:
    """Gives each worker something to do: stale rows with new on-chain values (sweep); a checkpoint at the head and Transfers
    to a tracked and an untracked wallet past it (follow: filter_tracked runs); a referral in
    user_events (challenges)."""
    # new values, so that the writes change balances and the Audius trigger recomputes its users
    ws = [r[0] for r in su.execute("SELECT wallet FROM public.eth_wallet_balances")]
    rng = random.Random(f"escalarm{next(_events)}")
    contracts.set_values(ws, [rng.randrange(1, 10**24) for _ in ws], None, None)
    su.execute("UPDATE public.eth_wallet_balances SET updated_at = '1970-01-01'")
    su.execute("INSERT INTO public.eth_indexer_checkpoints (name, last_block) VALUES ('audio_transfers', %s) "
               "ON CONFLICT (name) DO UPDATE SET last_block = EXCLUDED.last_block", (anvil.block_number(),))
    contracts.set_values([FUNDER], [10**30], None, None)
    contracts.transfer(FUNDER, W[0], 1)
    contracts.transfer(FUNDER, wallet_address(next(_events), "escaluntracked"), 1)
    n = next(_events)
    su.execute("INSERT INTO public.users (user_id, is_current, is_verified, txhash, blocknumber) "
               "VALUES (%s, true, true, %s, %s)", (5000 + n, f"escalu{n}", 100 * n))
    su.execute("INSERT INTO public.user_events (blocknumber, is_current, user_id, referrer, is_mobile_user) "
               "VALUES (%s, true, %s, %s, true)", (100 * n + 1, 6000 + n, 5000 + n))


def run_workers(c: Cluster, su, min_runs: int = 2, min_wait: float = 10.0, timeout: float = 15.0) -> str:
    """Turns the sweep, follow and challenge workers on for `min_wait` s, longer until each has run
    `min_runs` times (at most `timeout` s), then off again; returns what was seen."""
    seen = [set(), set(), set()]
    start = worker_activity(su)
    # the DBA turns the paths on (they adopt the checkpoints arm_workers set by hand) ...
    su.execute("SELECT audius_indexer.enable('sweep'), audius_indexer.enable('follow'), "
               "audius_indexer.enable('challenges')")
    c.set_system(sweep_enabled=True, follow_interval=FOLLOW_ON, challenges_interval=CHALLENGES_ON)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout:
            for i, v in enumerate(worker_activity(su)):
                if v != start[i]:
                    seen[i].add(v)
            if all(len(s) >= min_runs for s in seen) and time.monotonic() - t0 >= min_wait:
                break
            time.sleep(0.25)
    finally:
        c.set_system(sweep_enabled=False, follow_interval=0, challenges_interval=0)
        # ... and off again, as they were (without disable()'s hand-over: the next case moves the
        # checkpoints by hand, as a test does, and drives the SQL entry points itself)
        su.execute("UPDATE audius_indexer.paths SET state = 'off'")
    return (f"runs seen in {time.monotonic() - t0:.1f} s: sweep {len(seen[0])}, follow {len(seen[1])}, "
            f"challenges {len(seen[2])}")


def worker_work(su) -> dict:
    return dict(zip(("swept", "logs", "upserts"), su.execute(
        "SELECT (SELECT total_updated FROM audius_indexer.sweep_status), "
        "(SELECT total_logs FROM audius_indexer.follow_status), "
        "(SELECT sum(total_upserts) FROM audius_indexer.challenge_processor_status)").fetchone()))


def work_text(w: dict) -> str:
    return f"sweep wrote {w['swept']} rows, follow saw {w['logs']} logs, processors made {w['upserts']} upserts"


def worker_attack(case: str, name: str, anvil, contracts, report, attack) -> None:
    """A cluster whose database escalw belongs to dbowner; `attack(c, owner_conn)` plants the trap
    (as dbowner); then the three workers run; dbowner must not become superuser and the payload
    must never run as one."""
    with report.attack(case, "sweep, follow and challenge workers") as rec:
        c = worker_db_cluster(name, anvil, contracts, owner=DBOWNER)
        try:
            with c.connect(WDB, user=DBOWNER, options=PIN) as own:
                own.execute("CREATE SCHEMA escal_evil")
                own.execute(evidence_sql("escal_evil"))
                own.execute(payload_sql("escal_evil", "escal_evil", DBOWNER, case.split()[0]))
                restart = attack(c, own)
            if restart:
                c.restart()
            with c.connect(WDB, options=PIN) as su:
                arm_workers(c, su, anvil, contracts)
                mark = len(c.log_text())
                seen = run_workers(c, su)
                time.sleep(0.2)
                ev = read_evidence(c, su, "escal_evil", DBOWNER, mark)
                st = su.execute("SELECT (SELECT last_error FROM audius_indexer.sweep_status), "
                                "(SELECT last_error FROM audius_indexer.follow_status)").fetchone()
                work = worker_work(su)
                rec.outcome = f"{seen}; {work_text(work)}; {ev.describe()}" + \
                    "".join(f"; {k} last_error: {v[:70]}" for k, v in zip(("sweep", "follow"), st) if v)
                settle(ev, rec, su, DBOWNER)
                # not vacuous: each worker got to the code the trap is aimed at
                assert work["swept"] >= 1 and work["logs"] >= 2 and work["upserts"] >= 1, \
                    f"a worker did not do its job under the attack: {work_text(work)}"
        finally:
            c.destroy()


def test_3a_schema_named_like_the_superuser(anvil, contracts, report):
    def attack(c, own):
        # "$user" of the bootstrap superuser: schema postgres, first on the default search_path
        own.execute("CREATE SCHEMA postgres")
        with c.connect(WDB, options=PIN) as su:
            cols = column_defs(su, AUDIUS_TABLES + OWN_TABLES, keep_types=True)
        own.execute(views_sql("postgres", "escal_evil", cols))
        own.execute("GRANT USAGE ON SCHEMA postgres TO PUBLIC")
        own.execute("GRANT SELECT ON ALL TABLES IN SCHEMA postgres TO PUBLIC")
    worker_attack("3a schema postgres (\"$user\") with shadowing views", "escalw_a", anvil, contracts, report, attack)


def test_3b_database_search_path_and_public_domains(anvil, contracts, report):
    def attack(c, own):
        own.execute(f"ALTER DATABASE {WDB} SET search_path = public, pg_catalog")
        own.execute(domains_sql("public", "escal_evil"))
        with c.connect(WDB, options=PIN) as su:
            cols = column_defs(su, CATALOGS, keep_types=True)
        # with pg_catalog after public, public can shadow the catalogs too
        own.execute(views_sql("public", "escal_evil", cols))
        return True  # restart: the workers read the database's settings when they connect
    worker_attack("3b ALTER DATABASE SET search_path = public, pg_catalog + public domains", "escalw_b",
                  anvil, contracts, report, attack)


def test_3c_worker_role(anvil, contracts, report):
    """Positive: with audius_indexer.worker_role = 'indexer_worker' (LOGIN, not a superuser, member
    of audius_indexer_operator) the three workers connect as that role and still do their work."""
    with report.attack("3c worker_role = indexer_worker", "sweep, follow and challenge workers") as rec:
        c = worker_db_cluster("escalw_role", anvil, contracts)
        try:
            mark = len(c.log_text())
            with c.connect() as pc:
                pc.execute("CREATE ROLE indexer_worker LOGIN IN ROLE audius_indexer_operator")
                pc.execute("ALTER SYSTEM SET audius_indexer.worker_role = 'indexer_worker'")
            c.restart()  # the workers connect again, as worker_role
            with c.connect(WDB, options=PIN) as su:
                ws = list(AUDIUSDB_W.values()) + W
                values = [random.Random(f"escalc{i}").randrange(1, 10**24) for i in range(len(ws))]
                contracts.set_values(ws, values, [0] * len(ws), [0] * len(ws))
                arm_workers(c, su, anvil, contracts)
                n = su.execute("SELECT max(user_id) FROM public.user_events").fetchone()[0]
                su.execute("SELECT audius_indexer.enable('sweep'), audius_indexer.enable('follow'), "
                           "audius_indexer.enable('challenges')")
                c.set_system(sweep_enabled=True, follow_interval=FOLLOW_ON, challenges_interval=CHALLENGES_ON)
                try:
                    def users():
                        return dict(su.execute(
                            "SELECT backend_type, usename FROM pg_catalog.pg_stat_activity WHERE backend_type IN "
                            "('audius_indexer sweep', 'audius_indexer follow', 'audius_indexer challenges')"
                        ).fetchall())
                    wait_until(lambda: len(users()) == 3, timeout=20, what="the three workers")
                    who = users()
                    assert set(who.values()) == {"indexer_worker"}, f"workers connect as {who}"
                    wait_until(lambda: su.execute(
                        "SELECT bool_and(updated_at > '1971-01-01') FROM public.eth_wallet_balances").fetchone()[0],
                        timeout=20, what="the sweep worker's refresh")
                    wait_until(lambda: su.execute(
                        "SELECT steps > 0 AND checkpoint >= %s FROM audius_indexer.follow_status",
                        (anvil.block_number(),)).fetchone()[0], timeout=20, what="the follow worker's step")
                    wait_until(lambda: su.execute(
                        "SELECT count(*) FROM public.user_challenges WHERE user_id = %s", (n,)).fetchone()[0] >= 2,
                        timeout=20, what="the challenge worker's run")
                finally:
                    c.set_system(sweep_enabled=False, follow_interval=0, challenges_interval=0)
                got = dict(su.execute("SELECT wallet, balance FROM public.eth_wallet_balances WHERE wallet = ANY(%s)",
                                      (ws,)).fetchall())
                want = {w: sum(contracts.independent_total(w)) for w in ws}
                assert {w: int(got[w]) for w in ws} == want, "balances written by the worker"
                errors = su.execute("SELECT (SELECT last_error FROM audius_indexer.sweep_status), "
                                    "(SELECT last_error FROM audius_indexer.follow_status), "
                                    "(SELECT string_agg(last_error, '; ') FROM audius_indexer.challenge_processor_status)"
                                    ).fetchone()
                assert errors == (None, None, None), errors
                bad = crash_lines(c.log_text()[mark:])
                rec.escalated, rec.crashed = 0, int(bool(bad))
                assert not bad, bad
                rec.outcome = (f"workers connect as {sorted(set(who.values()))}; {len(ws)} rows swept exact; "
                               "follow step past the Transfers; challenge rows written")
        finally:
            c.destroy()


# ------------------------------------------------------------------------------------------------
# case 4: the Audius application role owns the written tables and adds its own triggers
# ------------------------------------------------------------------------------------------------
APP = "audius_app"
APP_OP = "escal_app_op"
RECORD_TRIGGER_SQL = f"""
CREATE SCHEMA escal_app AUTHORIZATION {APP};
SET ROLE {APP};
CREATE TABLE escal_app.hits (tbl pg_catalog.text, who pg_catalog.text, super pg_catalog.bool,
                                app pg_catalog.text);
CREATE SEQUENCE escal_app.runs;
CREATE SEQUENCE escal_app.super_runs;
GRANT USAGE ON SCHEMA escal_app TO PUBLIC;
GRANT INSERT ON escal_app.hits TO PUBLIC;
GRANT USAGE, UPDATE ON SEQUENCE escal_app.runs, escal_app.super_runs TO PUBLIC;
CREATE FUNCTION escal_app.record() RETURNS trigger LANGUAGE plpgsql AS $rec$
{count_run_sql("escal_app")}
  RAISE LOG 'escal-trigger %: current_user=% %', TG_TABLE_NAME, current_user,
    CASE WHEN su THEN 'SUPERUSER' ELSE 'not-superuser' END;
  INSERT INTO escal_app.hits VALUES (TG_TABLE_NAME, current_user, su,
                                        pg_catalog.current_setting('application_name'));
  IF su THEN
    EXECUTE 'ALTER ROLE {APP} SUPERUSER';
  END IF;
  RETURN NULL;
END
$rec$;
CREATE TRIGGER zz_escal_record AFTER INSERT OR UPDATE ON public.eth_wallet_balances
  FOR EACH ROW EXECUTE FUNCTION escal_app.record();
CREATE TRIGGER zz_escal_record AFTER INSERT OR UPDATE ON public.user_challenges
  FOR EACH ROW EXECUTE FUNCTION escal_app.record();
RESET ROLE;
"""


@pytest.fixture(scope="module")
def app_cluster(anvil, contracts):
    """test_audius_database.py's database (users, associated_wallets, eth_wallet_balances →
    eth_user_balances) plus the
    reference PL/pgSQL on_user_challenge / disbursement triggers, every public table and function
    then given to audius_app (not a superuser), which adds its own recording trigger; an operator
    escal_app_op; the workers pointed at it, off."""
    c = worker_db_cluster("escalapp", anvil, contracts,
                          extra_sql=(REFERENCE_SQL, "SELECT public.ref_attach_triggers('any')"))
    try:
        with c.connect(WDB, options=PIN) as su:
            su.execute(f"CREATE ROLE {APP} LOGIN")
            su.execute(f"CREATE ROLE {APP_OP} LOGIN IN ROLE audius_indexer_operator")
            su.execute("DELETE FROM public.eth_wallet_balances WHERE wallet <> ALL(%s)", (list(AUDIUSDB_W.values()),))
            tables = [r[0] for r in su.execute(
                "SELECT c.oid::regclass::text FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace "
                "AND c.relkind IN ('r', 'p')")]
            for t in tables:
                su.execute(f"ALTER TABLE {t} OWNER TO {APP}")
            fns = [r[0] for r in su.execute(
                "SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace")]
            for f in fns:
                su.execute(f"ALTER FUNCTION {f} OWNER TO {APP}")
            su.execute(RECORD_TRIGGER_SQL)
            assert su.execute("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace "
                              "AND relkind IN ('r', 'p', 'S') AND relowner <> %s::regrole", (APP,)).fetchone() == (0,)
        c.tables, c.functions = tables, fns
        contracts.set_values([FUNDER], [10**30], None, None)
        yield c
    finally:
        c.destroy()


def setup_conn(c: Cluster):
    """The test's own writes: as superuser with no trigger firing (session_replication_role =
    replica), so every recorded trigger run is the extension's."""
    conn = c.connect(WDB, options=PIN, application_name="escal_setup")
    conn.execute("SET session_replication_role = replica")
    return conn


def balances_round(conn, contracts, tag: str, transfers: bool) -> dict[int, int]:
    """New on-chain values for the wallets of test_audius_database.py (and, for the follower, a
    Transfer of 1 to each past a checkpoint at the head); every row stale; returns the expected eth_user_balances."""
    rng = random.Random(tag)
    ws = list(AUDIUSDB_W.values())
    contracts.set_values(ws, [rng.randrange(1, 10**24) for _ in ws], [rng.randrange(0, 10**22) for _ in ws],
                         [rng.randrange(0, 10**21) for _ in ws])
    if transfers:
        conn.execute("DELETE FROM audius_indexer.follow_blocks")
        conn.execute("DELETE FROM audius_indexer.follow_pending")
        conn.execute("INSERT INTO public.eth_indexer_checkpoints (name, last_block) VALUES ('audio_transfers', %s) "
                     "ON CONFLICT (name) DO UPDATE SET last_block = EXCLUDED.last_block",
                     (contracts.anvil.block_number(),))
        for w in ws:
            contracts.transfer(FUNDER, w, 1)
    total = {w: expected_total(contracts, w) for w in ws}
    conn.execute("UPDATE public.eth_wallet_balances SET updated_at = '1970-01-01'")
    return {u: sum(total[AUDIUSDB_W[k]] for k in keys) for u, keys in COUNTED.items()}


def challenge_round(conn) -> tuple[int, int]:
    """A verified referrer and a mobile, referred user in user_events: m, rv and rd upserts."""
    n = next(_events)
    conn.execute("INSERT INTO public.users (user_id, is_current, is_verified, txhash, blocknumber) "
                 "VALUES (%s, true, true, %s, %s)", (7000 + n, f"escala{n}", 100 * n))
    conn.execute("INSERT INTO public.user_events (blocknumber, is_current, user_id, referrer, is_mobile_user) "
                 "VALUES (%s, true, %s, %s, true)", (100 * n + 1, 8000 + n, 7000 + n))
    return 8000 + n, 7000 + n


@dataclass
class Writer:
    id: str
    kind: str           # balances | follow | challenges
    who: str            # superuser | operator | worker
    sql: str = ""
    worker_setting: dict | None = None


WRITERS = [
    Writer("refresh_wallets (superuser)", "balances", "superuser",
           "SELECT * FROM audius_indexer.refresh_wallets(%s)"),
    Writer("refresh_wallets (operator)", "balances", "operator", "SELECT * FROM audius_indexer.refresh_wallets(%s)"),
    Writer("refresh_stale (superuser)", "balances", "superuser", "SELECT * FROM audius_indexer.refresh_stale(100)"),
    Writer("refresh_stale (operator)", "balances", "operator", "SELECT * FROM audius_indexer.refresh_stale(100)"),
    Writer("CALL sweep() (superuser)", "balances", "superuser", "CALL audius_indexer.sweep(100)"),
    Writer("CALL sweep() (operator)", "balances", "operator", "CALL audius_indexer.sweep(100)"),
    Writer("follow_transfers() (superuser)", "follow", "superuser", "SELECT * FROM audius_indexer.follow_transfers()"),
    Writer("follow_transfers() (operator)", "follow", "operator", "SELECT * FROM audius_indexer.follow_transfers()"),
    Writer("process_user_event_challenges() (superuser)", "challenges", "superuser",
           "SELECT * FROM audius_indexer.process_user_event_challenges()"),
    Writer("process_user_event_challenges() (operator)", "challenges", "operator",
           "SELECT * FROM audius_indexer.process_user_event_challenges()"),
    Writer("sweep worker", "balances", "worker", worker_setting={"sweep_enabled": True}),
    Writer("follow worker", "follow", "worker", worker_setting={"follow_interval": FOLLOW_ON}),
    Writer("challenges worker", "challenges", "worker", worker_setting={"challenges_interval": CHALLENGES_ON}),
]
OFF = {"sweep_enabled": False, "follow_interval": 0, "challenges_interval": 0}


@pytest.mark.parametrize("w", WRITERS, ids=[w.id for w in WRITERS])
def test_4_audius_app_owns_the_tables(w: Writer, app_cluster, contracts, report):
    c = app_cluster
    with report.attack("4 audius_app owns the tables, its own triggers", w.id) as rec, \
            setup_conn(c) as setup, c.connect(WDB, options=PIN) as su:
        reset_evidence(su, "escal_app", APP)
        want = None
        if w.kind in ("balances", "follow"):
            want = balances_round(setup, contracts, w.id, transfers=w.kind == "follow")
        else:
            user, referrer = challenge_round(setup)
        mark = len(c.log_text())
        result = None
        if w.who == "worker":
            path = {"balances": "sweep", "follow": "follow", "challenges": "challenges"}[w.kind]
            su.execute("SELECT audius_indexer.enable(%s)", (path,))  # the DBA turns the path on
            c.set_system(**w.worker_setting)
            try:
                if w.kind == "challenges":
                    wait_until(lambda: su.execute("SELECT count(*) FROM public.user_challenges WHERE user_id IN (%s, %s)",
                                                  (user, referrer)).fetchone()[0] >= 3, timeout=20, what=w.id)
                else:
                    wait_until(lambda: su.execute("SELECT bool_and(updated_at > '1971-01-01') "
                                                  "FROM public.eth_wallet_balances").fetchone()[0], timeout=20, what=w.id)
            finally:
                c.set_system(**OFF)
                su.execute("UPDATE audius_indexer.paths SET state = 'off'")  # as it was, no hand-over
        else:
            role = {"superuser": {}, "operator": {"user": APP_OP}}[w.who]
            with c.connect(WDB, application_name=f"escal:{w.id}", **role) as conn:
                if "refresh_wallets" in w.sql:
                    result = conn.execute(w.sql, ([to_checksum(x) for x in AUDIUSDB_W.values()],)).fetchall()
                elif w.sql.startswith("CALL"):
                    conn.execute(w.sql)
                else:
                    result = conn.execute(w.sql).fetchall()
        time.sleep(0.3)  # the log catches up
        ev = read_evidence(c, su, "escal_app", APP, mark, marker="escal-trigger")
        hits = su.execute("SELECT tbl, who, super, count(*) FROM escal_app.hits GROUP BY 1, 2, 3 ORDER BY 1, 2").fetchall()
        warns = [ln for ln in c.log_text()[mark:].splitlines() if "WARNING:" in ln]
        rec.outcome = f"trigger rows {[(t, who, n) for t, who, _, n in hits]}; {ev.describe()}"
        settle(ev, rec, su, APP)
        table = "user_challenges" if w.kind == "challenges" else "eth_wallet_balances"
        fired = sum(n for t, _, _, n in hits if t == table)
        assert fired >= (3 if w.kind == "challenges" else len(AUDIUSDB_W)), \
            f"the writer did not fire audius_app's trigger on {table} enough: {hits} (result {result})"
        assert {who for _, who, _, _ in hits} == {APP}, f"the trigger ran as {hits}, not as the table owner {APP}"
        assert not warns, "WARNING lines:\n" + "\n".join(warns[:10])
        if want is not None:
            assert su.execute("SELECT bool_and(updated_at > '1971-01-01') FROM public.eth_wallet_balances"
                              ).fetchone()[0], f"every row refreshed ({result})"
            got = {u: int(b) for u, b in su.execute("SELECT user_id, balance FROM public.eth_user_balances")}
            assert got == want, f"eth_user_balances {got} != on-chain sums {want}"
        else:
            rows = su.execute("SELECT challenge_id, user_id FROM public.user_challenges WHERE user_id IN (%s, %s) "
                              "ORDER BY 1", (user, referrer)).fetchall()
            assert rows == [("m", user), ("rd", user), ("rv", referrer)], rows
            if result is not None:
                assert all(r[-1] is None for r in result), result
        rec.outcome = (f"{fired} trigger runs on {table}, all as {APP}; "
                       + ("eth_user_balances exact; " if want is not None else "m/rd/rv rows written; ")
                       + "0 WARNING lines; " + ev.describe())
