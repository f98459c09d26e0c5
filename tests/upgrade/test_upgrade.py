"""Upgrade tier: every release upgrades in place (docs/architecture.md, rule 3 "Upgrade in place").

In one cluster, on the Audius fixture:
- database `up_<v>`: CREATE EXTENSION audius_indexer VERSION '<v>' for every released <v> (released/), data in every
  table of ours, the Rust triggers installed, then ALTER EXTENSION audius_indexer UPDATE;
- database `fresh`: CREATE EXTENSION audius_indexer (the current version), triggers installed.
The catalogs of the extension must be equal: functions and procedures with their signatures,
results, kind, volatility, strictness, parallel safety, SECURITY DEFINER, proconfig, bodies (or C
symbols) and ACLs; views and their definitions; tables, columns, defaults, constraints, indexes;
grants; comments; the objects that are members of the extension. And every row survived.
A change to the SQL surface without a matching upgrade script makes this test fail.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.pg import Cluster, load_audius_tables

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
EXT_DIR = Path("/usr/share/postgresql/15/extension")
CARGO = REPO / "Cargo.toml"


def current_version() -> str:
    return re.search(r'^version = "([^"]+)"', CARGO.read_text(), re.M).group(1)


# Everything that makes up the extension's SQL surface, as comparable text rows.
CATALOG_QUERIES = {
    "functions": r"""
        SELECT p.prokind, p.proname, pg_get_function_identity_arguments(p.oid),
               coalesce(pg_get_function_result(p.oid), ''), pg_get_function_arguments(p.oid),
               p.provolatile, p.proisstrict, p.proparallel, p.prosecdef, p.proleakproof,
               coalesce(array_to_string(p.proconfig, ';'), ''), l.lanname,
               CASE WHEN l.lanname = 'c' THEN p.prosrc || '/' || coalesce(p.probin, '') ELSE md5(p.prosrc) END,
               coalesce(array_to_string(ARRAY(SELECT a::text FROM unnest(p.proacl) a ORDER BY 1), ','), ''),
               coalesce(obj_description(p.oid, 'pg_proc'), '')
          FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
         WHERE p.pronamespace = 'audius_indexer'::regnamespace
         ORDER BY 2, 3""",
    "relations": r"""
        SELECT c.relkind, c.relname, coalesce(pg_get_viewdef(c.oid), ''),
               coalesce(array_to_string(ARRAY(SELECT a::text FROM unnest(c.relacl) a ORDER BY 1), ','), ''),
               coalesce(obj_description(c.oid, 'pg_class'), '')
          FROM pg_class c
         WHERE c.relnamespace = 'audius_indexer'::regnamespace
         ORDER BY 2""",
    "columns": r"""
        SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               coalesce(pg_get_expr(d.adbin, d.adrelid), ''), coalesce(col_description(c.oid, a.attnum), '')
          FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
         WHERE c.relnamespace = 'audius_indexer'::regnamespace AND c.relkind IN ('r', 'v', 'p')
         ORDER BY 1, 2""",
    "constraints_and_indexes": r"""
        SELECT c.relname, x.conname, pg_get_constraintdef(x.oid)
          FROM pg_constraint x JOIN pg_class c ON c.oid = x.conrelid
         WHERE c.relnamespace = 'audius_indexer'::regnamespace
        UNION ALL
        SELECT c.relname, i.relname, pg_get_indexdef(i.oid)
          FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid JOIN pg_class i ON i.oid = x.indexrelid
         WHERE c.relnamespace = 'audius_indexer'::regnamespace
         ORDER BY 1, 2, 3""",
    "members": r"""
        SELECT pg_describe_object(d.classid, d.objid, d.objsubid)
          FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
         WHERE d.refclassid = 'pg_extension'::regclass AND e.extname = 'audius_indexer' AND d.deptype = 'e'
         ORDER BY 1""",
    "schema": r"""
        SELECT n.nspname, coalesce(array_to_string(ARRAY(SELECT a::text FROM unnest(n.nspacl) a ORDER BY 1), ','), ''),
               coalesce(obj_description(n.oid, 'pg_namespace'), '')
          FROM pg_namespace n WHERE n.nspname = 'audius_indexer'""",
    "triggers": r"""
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)
          FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
         WHERE NOT t.tgisinternal ORDER BY 1, 2""",
    "config_tables": r"""
        SELECT coalesce(array_to_string(ARRAY(SELECT x::regclass::text FROM unnest(e.extconfig) x ORDER BY 1), ','), ''),
               coalesce(array_to_string(e.extcondition, ';'), '')
          FROM pg_extension e WHERE e.extname = 'audius_indexer'""",
}

# Rows of every table of ours (and of the Audius tables the extension writes) that must survive.
DATA_TABLES = [
    "audius_indexer.wallet_failures", "audius_indexer.sweep_state", "audius_indexer.trigger_install_state",
    "public.eth_wallet_balances", "public.eth_indexer_checkpoints",
]


def snapshot(conn) -> dict[str, list[tuple]]:
    return {k: conn.execute(q).fetchall() for k, q in CATALOG_QUERIES.items()}


def table_columns(conn) -> dict[str, list[str]]:
    return {t: [r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
        "ORDER BY attnum", (t,)).fetchall()] for t in DATA_TABLES}


def table_rows(conn, columns: dict[str, list[str]]) -> dict[str, list[tuple]]:
    """Every row of the data tables, in the columns they had before the upgrade (an upgrade may add
    columns; it must not change what was there)."""
    return {t: conn.execute(f"SELECT {', '.join(columns[t])} FROM {t} ORDER BY 1").fetchall()
            for t in DATA_TABLES}


def installed_catalog(cl: Cluster, db: str, version: str | None = None) -> dict[str, list[tuple]]:
    """The snapshot of a new database `db` of `cl` with the Audius tables, CREATE EXTENSION
    audius_indexer (VERSION `version` when given) and the Rust triggers installed."""
    cl.create_database(db)
    with cl.connect(db) as conn:
        load_audius_tables(conn)
        conn.execute("CREATE EXTENSION audius_indexer" + (f" VERSION '{version}'" if version else ""))
        conn.execute("SELECT audius_indexer.install_triggers()")
        return snapshot(conn)


@pytest.fixture(scope="module")
def cl():
    c = Cluster(name="upgrade")
    c.init().start()
    try:
        yield c
    finally:
        c.destroy()


# Every released version (released/): each must upgrade to the current one.
RELEASED = sorted(p.name[len("audius_indexer--"):-len(".sql")]
                  for p in (REPO / "released").glob("audius_indexer--*.sql"))


def test_released_scripts_are_installed():
    """Every released version's full script and the upgrade path to the current version are installed."""
    cur = current_version()
    assert RELEASED and cur not in RELEASED, RELEASED
    assert (EXT_DIR / f"audius_indexer--{cur}.sql").exists()
    for old in RELEASED:
        assert (EXT_DIR / f"audius_indexer--{old}.sql").exists()
        assert (REPO / "released" / f"audius_indexer--{old}.sql").read_bytes() == \
            (EXT_DIR / f"audius_indexer--{old}.sql").read_bytes()
    # one step per release: 0.1.0 -> 0.2.0 -> ... -> current
    for old, new in zip(RELEASED, RELEASED[1:] + [cur]):
        assert (EXT_DIR / f"audius_indexer--{old}--{new}.sql").exists(), (old, new)


@pytest.mark.parametrize("old", RELEASED)
def test_upgrade_equals_fresh_install_and_keeps_data(cl, old):
    """<old> with data and triggers → ALTER EXTENSION UPDATE → catalog == fresh install; rows survive."""
    cur = current_version()
    tag = old.replace(".", "_")
    cl.create_database(f"up_{tag}")
    with cl.connect(f"up_{tag}") as up:
        load_audius_tables(up)
        up.execute(f"CREATE EXTENSION audius_indexer VERSION '{old}'")
        assert up.execute("SELECT extversion FROM pg_extension WHERE extname = 'audius_indexer'").fetchone()[0] == old
        up.execute("SELECT audius_indexer.install_triggers()")
        # data in every table of ours (and the Audius ones the extension writes)
        up.execute("INSERT INTO eth_wallet_balances (wallet, balance, blocknumber) "
                   "SELECT '0x' || lpad(to_hex(g), 40, '0'), g * 10, g FROM generate_series(1, 50) g")
        up.execute("INSERT INTO eth_indexer_checkpoints (name, last_block) VALUES ('audio_transfers', 1234)")
        up.execute("INSERT INTO audius_indexer.wallet_failures (wallet, reason, attempts, next_attempt) "
                   "VALUES ('0x00000000000000000000000000000000000000aa', 'revert', 3, now() + interval '1 hour')")
        up.execute("UPDATE audius_indexer.sweep_state SET ticks = 7, total_updated = 99, last_updated = 5, "
                   "last_tick_started = now(), last_tick_finished = now()")
        columns = table_columns(up)
        before = table_rows(up, columns)
        assert all(before[t] for t in DATA_TABLES), {t: len(r) for t, r in before.items()}
        up.execute(f"ALTER EXTENSION audius_indexer UPDATE TO '{cur}'")
        assert up.execute("SELECT extversion FROM pg_extension WHERE extname = 'audius_indexer'").fetchone()[0] == cur
        after = table_rows(up, columns)
        upgraded = snapshot(up)
        # the upgraded extension works: a Rust function added in this version, and the triggers
        up.execute("SELECT * FROM audius_indexer.challenge_processor_status").fetchall()
        assert up.execute("SELECT count(*) FROM audius_indexer.trigger_statements()").fetchone()[0] > 0
    installed = installed_catalog(cl, f"fresh_{tag}")

    assert after == before, "rows changed by the upgrade"
    for key in CATALOG_QUERIES:
        a, b = upgraded[key], installed[key]
        only_up = [r for r in a if r not in b]
        only_fresh = [r for r in b if r not in a]
        assert not only_up and not only_fresh, (
            f"{key}: upgraded {old} -> {cur} differs from a fresh {cur}\n"
            f"  only after upgrade: {only_up}\n  only in fresh install: {only_fresh}\n"
            f"Every change to the SQL surface needs sql/audius_indexer--<old>--<new>.sql.")
        assert a == b, f"{key}: same rows, different order"
