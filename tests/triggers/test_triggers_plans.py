"""Plan test: on a notification table of 240,000 rows over 30 types, with sql/indexes.sql applied,
every notification lookup the Rust triggers prepare (the exact SQL, from
audius_indexer.trigger_statements()) is served by a Bitmap Index Scan on its partial GIN, as a custom
and as a generic plan; the `= ANY` form of the same lookup is not (Seq Scan). The triggers really use
the partial indexes at run time (pg_stat_user_indexes). Also: sql/indexes.sql is idempotent, rebuilds
an INVALID leftover of a failed CONCURRENTLY build, and refuses a same-named index of another shape.
"""
from __future__ import annotations

import subprocess
import time

import pytest

from harness.pg import PG_BIN
from harness.triggers import INDEXES_SQL, clean_cluster, create_audius_db

ROWS = 240_000
TYPES = 30
PARTIALS = ["ix_notification_cooldown_user_ids", "ix_notification_challenge_reward_user_ids"]

POPULATE = f"""
SELECT setseed(0.4242);
INSERT INTO notification (specifier, group_id, type, "timestamp", user_ids, data)
SELECT i::text,
       'g:' || i,
       CASE (i % {TYPES})
            WHEN 0 THEN 'reward_in_cooldown'
            WHEN 1 THEN 'challenge_reward'
            WHEN 2 THEN 'claimable_reward'
            ELSE 'type_' || (i % {TYPES}) END,
       timestamp '2026-01-01' + i * interval '20 seconds',
       -- many users, a few heavy ones (user ids skewed towards small numbers)
       CASE WHEN i % 7 = 0 THEN ARRAY[1 + floor(60000 * power(random(), 3))::int,
                                      1 + floor(60000 * random())::int]
            ELSE ARRAY[1 + floor(60000 * power(random(), 3))::int] END,
       jsonb_build_object('n', i)
FROM generate_series(1, {ROWS}) AS i;
"""


def run_indexes_sql(pg, dbname: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([str(PG_BIN / "psql"), "-X", "-q", "-h", pg.sockdir, "-p", str(pg.port), "-U", "postgres",
                          "-d", dbname, *extra, "-f", str(INDEXES_SQL)], text=True, capture_output=True)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def index_state(conn, name: str):
    return conn.execute(
        "SELECT i.indisvalid, am.amname, pg_get_expr(i.indpred, i.indrelid), obj_description(c.oid, 'pg_class') "
        "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam "
        "WHERE c.relname = %s", (name,)).fetchone()


@pytest.fixture(scope="module")
def pg():
    with clean_cluster("trigplans") as c:
        create_audius_db(c, "audius", triggers="rust", trace=False)
        with c.connect("audius") as conn:
            conn.execute(POPULATE)
        run_indexes_sql(c, "audius")
        with c.connect("audius") as conn:
            conn.execute("ANALYZE notification")
        yield c


def lookups(conn):
    rows = conn.execute("SELECT statement_name, statement, param_types, partial_index "
                        "FROM audius_indexer.trigger_statements() WHERE partial_index IS NOT NULL").fetchall()
    assert {r[0] for r in rows} == {"uc_cooldown_lookup", "cd_challenge_reward_lookup", "sol_challenge_reward_lookup"}
    return rows


def heavy_and_light_users(conn, type_name: str):
    heavy = conn.execute("SELECT u, count(*) FROM notification, unnest(user_ids) u WHERE type = %s "
                         "GROUP BY u ORDER BY 2 DESC, 1 LIMIT 1", (type_name,)).fetchone()
    light = conn.execute("SELECT u FROM notification, unnest(user_ids) u WHERE type = %s "
                         "GROUP BY u HAVING count(*) = 1 ORDER BY u LIMIT 1", (type_name,)).fetchone()
    return heavy, light[0]


def test_table_shape(pg):
    with pg.connect("audius") as conn:
        n, types, users = conn.execute("SELECT count(*), count(DISTINCT type), "
                                       "(SELECT count(DISTINCT u) FROM notification, unnest(user_ids) u) "
                                       "FROM notification").fetchone()
    assert n >= 200_000 and types == TYPES and users > 20_000


@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
def test_every_trigger_lookup_uses_its_partial_gin(pg, mode):
    with pg.connect("audius") as conn:
        for name, sql, params, index in lookups(conn):
            type_name = "reward_in_cooldown" if "cooldown" in index else "challenge_reward"
            (heavy, heavy_rows), light = heavy_and_light_users(conn, type_name)
            assert heavy_rows >= 20, "the table has heavy users"
            conn.execute(f"PREPARE q({', '.join(params)}) AS {sql}")
            conn.execute(f"SET plan_cache_mode = {mode}")
            try:
                for user in (heavy, light, 59_999):
                    plan = "\n".join(r[0] for r in conn.execute(
                        f"EXPLAIN EXECUTE q({user}, '2026-01-20 00:00')").fetchall())
                    assert f"Bitmap Index Scan on {index}" in plan, f"{name} ({mode}, user {user}):\n{plan}"
                    assert "Seq Scan" not in plan, plan
            finally:
                conn.execute("DEALLOCATE q")
                conn.execute("RESET plan_cache_mode")


def test_any_form_cannot_use_the_index(pg):
    """The pre-#880 form of the same lookup: GIN cannot serve `= ANY`."""
    with pg.connect("audius") as conn:
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT id FROM notification WHERE type = 'reward_in_cooldown' AND 5 = ANY(user_ids) "
            "AND \"timestamp\" >= (timestamp '2026-01-20' - interval '1 hour') LIMIT 1").fetchall())
    assert "Seq Scan on notification" in plan and "ix_notification_cooldown_user_ids" not in plan, plan


def idx_scans(conn) -> dict[str, int]:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return dict(conn.execute("SELECT indexrelname, idx_scan FROM pg_stat_user_indexes "
                             "WHERE indexrelname = ANY(%s)", (PARTIALS,)).fetchall())


def test_triggers_use_the_partial_indexes_at_run_time(pg):
    with pg.connect("audius") as conn:
        before = idx_scans(conn)
        conn.execute("INSERT INTO users (user_id, wallet, is_current) VALUES (424242, '0xAbC0000000000000000000000000000000000001', true)")
        conn.execute("INSERT INTO reward_manager_txs VALUES ('plan-sig', 1, '2026-02-01')")
        conn.execute("INSERT INTO user_challenges (challenge_id, user_id, specifier, is_complete, amount, completed_at) "
                     "VALUES ('p', 424242, 'plan', true, 1, '2026-02-01 00:00')")
        conn.execute("INSERT INTO challenge_disbursements VALUES ('p', 424242, 'plan', 'plan-sig', 1, '1', '2026-02-01')")
        conn.execute("INSERT INTO sol_reward_disbursements VALUES ('plan-sol', 0, 1, 1, 'bank', 'u', 'plan', "
                     "'0xabc0000000000000000000000000000000000001', '2026-02-03')")
        conn.execute("SELECT pg_stat_force_next_flush()")
    deadline = time.time() + 10
    with pg.connect("audius") as conn:
        while True:
            after = idx_scans(conn)
            if after["ix_notification_cooldown_user_ids"] > before["ix_notification_cooldown_user_ids"] and \
               after["ix_notification_challenge_reward_user_ids"] >= before["ix_notification_challenge_reward_user_ids"] + 2:
                break
            assert time.time() < deadline, f"partial GINs not used by the triggers: before {before}, after {after}"
            time.sleep(0.1)


def test_indexes_sql_is_idempotent_and_commented(pg):
    run_indexes_sql(pg, "audius")
    with pg.connect("audius") as conn:
        for name, type_name in zip(PARTIALS, ["reward_in_cooldown", "challenge_reward"]):
            valid, am, pred, comment = index_state(conn, name)
            assert valid and am == "gin" and pred == f"((type)::text = '{type_name}'::text)"
            assert comment and "Partial GIN" in comment


def test_indexes_sql_rebuilds_an_invalid_leftover(pg):
    with pg.connect("audius") as conn:
        conn.execute("DROP INDEX ix_notification_challenge_reward_user_ids")
        # A CONCURRENTLY build that fails leaves an INVALID index under the name.
        with pytest.raises(Exception):
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY ix_notification_challenge_reward_user_ids "
                         "ON notification (type)")
        assert index_state(conn, "ix_notification_challenge_reward_user_ids")[0] is False
    run_indexes_sql(pg, "audius")
    with pg.connect("audius") as conn:
        valid, am, pred, _ = index_state(conn, "ix_notification_challenge_reward_user_ids")
    assert valid and am == "gin" and pred == "((type)::text = 'challenge_reward'::text)"


def test_indexes_sql_refuses_a_foreign_index_of_the_same_name(pg):
    with pg.connect("audius") as conn:
        conn.execute("DROP INDEX ix_notification_cooldown_user_ids")
        conn.execute("CREATE INDEX ix_notification_cooldown_user_ids ON notification (type)")
    try:
        out = run_indexes_sql(pg, "audius", "-v", "ON_ERROR_STOP=1", check=False)
        assert out.returncode != 0
        assert "ix_notification_cooldown_user_ids is missing, invalid or not the expected partial GIN" in out.stderr
    finally:
        with pg.connect("audius") as conn:
            conn.execute("DROP INDEX ix_notification_cooldown_user_ids")
        run_indexes_sql(pg, "audius")


def test_indexes_sql_reports_a_missing_table(pg):
    out = run_indexes_sql(pg, "audius", "-v", "schema=nosuch", check=False)
    assert out.returncode != 0 and 'table nosuch.notification does not exist' in out.stderr
