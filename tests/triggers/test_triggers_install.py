"""audius_indexer.install_triggers() / uninstall_triggers(): the three Audius triggers are re-pointed at
the Rust functions (same names, events, tables) and put back exactly as they were."""
from __future__ import annotations

import psycopg
import pytest

from harness.triggers import RUST_FUNCTIONS, TRIGGER_TABLES, clean_cluster, create_audius_db, trigger_functions

REF_ANY = {
    "on_user_challenge": "public.ref_handle_on_user_challenge_any()",
    "on_challenge_disbursement": "public.ref_handle_challenge_disbursement_any()",
    "on_sol_reward_disbursement": "public.ref_handle_sol_reward_disbursement_any()",
}


@pytest.fixture(scope="module")
def pg():
    with clean_cluster("triginstall") as c:
        yield c


_n = 0


@pytest.fixture
def db(pg):
    """A fresh Audius-like database with the extension and the reference ('= ANY') triggers attached."""
    global _n
    _n += 1
    name = f"inst{_n}"
    create_audius_db(pg, name, triggers="any", trace=False)
    with pg.connect(name) as conn:
        yield conn


def definitions(conn) -> dict[str, str]:
    """pg_get_triggerdef of the three triggers, fully qualified (search_path = pg_catalog)."""
    with conn.transaction():
        conn.execute("SET LOCAL search_path = pg_catalog")
        return dict(conn.execute("SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger "
                                 "WHERE NOT tgisinternal AND tgname = ANY(%s)", (list(RUST_FUNCTIONS),)).fetchall())


def install(conn, *args):
    return {r[1]: (r[2], r[3]) for r in conn.execute(
        "SELECT table_name, trigger_name, previous_function, action FROM audius_indexer.install_triggers(%s)"
        if args else "SELECT table_name, trigger_name, previous_function, action FROM audius_indexer.install_triggers()",
        args or None).fetchall()}


def uninstall(conn):
    return {r[1]: (r[2], r[3]) for r in conn.execute(
        "SELECT table_name, trigger_name, restored_function, action FROM audius_indexer.uninstall_triggers()").fetchall()}


def test_round_trip_restores_previous_functions(db):
    before = definitions(db)
    assert trigger_functions(db) == REF_ANY

    got = install(db)
    assert got == {t: (REF_ANY[t], "replaced") for t in RUST_FUNCTIONS}
    assert trigger_functions(db) == RUST_FUNCTIONS
    after = definitions(db)
    for t, table in TRIGGER_TABLES.items():
        # same name, table and events; only the function changed
        assert after[t] == before[t].replace(REF_ANY[t], RUST_FUNCTIONS[t]), after[t]
        assert f"ON public.{table} FOR EACH ROW" in after[t]
    state = db.execute("SELECT trigger_name, previous_function, previous_definition FROM "
                       "audius_indexer.trigger_install_state ORDER BY 1").fetchall()
    assert state == sorted((t, REF_ANY[t], before[t]) for t in RUST_FUNCTIONS)

    # idempotent: a second install changes nothing and keeps the original bookkeeping
    assert install(db) == {t: (REF_ANY[t], "already installed") for t in RUST_FUNCTIONS}
    assert db.execute("SELECT trigger_name, previous_function, previous_definition FROM "
                      "audius_indexer.trigger_install_state ORDER BY 1").fetchall() == state

    assert uninstall(db) == {t: (REF_ANY[t], "restored") for t in RUST_FUNCTIONS}
    assert definitions(db) == before
    assert db.execute("SELECT count(*) FROM audius_indexer.trigger_install_state").fetchone()[0] == 0
    # nothing left to undo
    assert uninstall(db) == {t: (None, "not ours, left alone") for t in RUST_FUNCTIONS}
    assert definitions(db) == before


def test_no_trigger_before_means_dropped_on_uninstall(db):
    for t, table in TRIGGER_TABLES.items():
        db.execute(f"DROP TRIGGER {t} ON {table}")
    assert install(db) == {t: (None, "created") for t in RUST_FUNCTIONS}
    assert trigger_functions(db) == RUST_FUNCTIONS
    assert uninstall(db) == {t: (None, "dropped (no trigger before install)") for t in RUST_FUNCTIONS}
    assert trigger_functions(db) == {}


def test_exotic_previous_definition_and_state_come_back_verbatim(db):
    db.execute("DROP TRIGGER on_user_challenge ON user_challenges")
    db.execute("CREATE TRIGGER on_user_challenge AFTER INSERT OR UPDATE OF is_complete ON user_challenges "
               "FOR EACH ROW WHEN (new.is_complete) EXECUTE FUNCTION public.ref_handle_on_user_challenge_contains()")
    db.execute("ALTER TABLE challenge_disbursements DISABLE TRIGGER on_challenge_disbursement")
    db.execute("ALTER TABLE sol_reward_disbursements ENABLE REPLICA TRIGGER on_sol_reward_disbursement")
    before = definitions(db)
    enabled = "SELECT tgname, tgenabled FROM pg_trigger WHERE NOT tgisinternal AND tgname = ANY(%s) ORDER BY 1"
    state_before = db.execute(enabled, (list(RUST_FUNCTIONS),)).fetchall()

    install(db)
    # ours is canonical (no column list / WHEN) and fires when the replaced trigger fired
    assert "WHEN" not in definitions(db)["on_user_challenge"]
    assert db.execute(enabled, (list(RUST_FUNCTIONS),)).fetchall() == state_before

    uninstall(db)
    assert definitions(db) == before
    assert db.execute(enabled, (list(RUST_FUNCTIONS),)).fetchall() == state_before


def test_ours_in_another_shape_is_repaired(db):
    install(db)
    db.execute("CREATE OR REPLACE TRIGGER on_challenge_disbursement AFTER INSERT OR DELETE ON challenge_disbursements "
               "FOR EACH ROW EXECUTE FUNCTION audius_indexer.handle_challenge_disbursement('x')")
    got = install(db)
    assert got["on_challenge_disbursement"] == (REF_ANY["on_challenge_disbursement"], "repaired")
    assert definitions(db)["on_challenge_disbursement"] == (
        "CREATE TRIGGER on_challenge_disbursement AFTER INSERT ON public.challenge_disbursements "
        "FOR EACH ROW EXECUTE FUNCTION audius_indexer.handle_challenge_disbursement()")
    assert uninstall(db)["on_challenge_disbursement"] == (REF_ANY["on_challenge_disbursement"], "restored")


def test_a_trigger_repointed_by_someone_else_is_left_alone(db):
    install(db)
    db.execute("CREATE OR REPLACE TRIGGER on_sol_reward_disbursement AFTER INSERT ON sol_reward_disbursements "
               "FOR EACH ROW EXECUTE FUNCTION public.ref_handle_sol_reward_disbursement_case_sensitive()")
    got = uninstall(db)
    assert got["on_sol_reward_disbursement"] == (None, "not ours, left alone")
    assert got["on_user_challenge"] == (REF_ANY["on_user_challenge"], "restored")
    assert trigger_functions(db)["on_sol_reward_disbursement"] == "public.ref_handle_sol_reward_disbursement_case_sensitive()"


def test_missing_table_is_a_clear_error_and_changes_nothing(db):
    db.execute("ALTER TABLE sol_reward_disbursements RENAME TO sol_reward_disbursements_old")
    with pytest.raises(psycopg.errors.UndefinedTable) as e:
        install(db)
    assert e.value.diag.message_primary == \
        "audius_indexer.install_triggers: table public.sol_reward_disbursements does not exist"
    assert trigger_functions(db) == {k: v for k, v in REF_ANY.items()}   # untouched (renamed table keeps its)
    with pytest.raises(psycopg.errors.UndefinedTable):
        install(db, "nosuchschema")
    db.execute("ALTER TABLE sol_reward_disbursements_old RENAME TO sol_reward_disbursements")
    install(db)
    db.execute("ALTER TABLE sol_reward_disbursements RENAME TO sol_reward_disbursements_old")
    with pytest.raises(psycopg.errors.UndefinedTable) as e:
        uninstall(db)
    assert "uninstall_triggers: table public.sol_reward_disbursements does not exist" in e.value.diag.message_primary
    db.execute("ALTER TABLE sol_reward_disbursements_old RENAME TO sol_reward_disbursements")
    assert trigger_functions(db) == RUST_FUNCTIONS


def test_restoring_a_dropped_previous_function_fails_clearly(db):
    install(db)
    db.execute("DROP FUNCTION public.ref_handle_challenge_disbursement_any()")
    with pytest.raises(psycopg.errors.UndefinedFunction) as e:
        uninstall(db)
    assert "the function it called before (public.ref_handle_challenge_disbursement_any()) no longer exists" \
        in e.value.diag.message_primary
    assert trigger_functions(db) == RUST_FUNCTIONS       # atomic: nothing was restored


def test_drop_extension_refuses_while_installed(db):
    install(db)
    with pytest.raises(psycopg.errors.DependentObjectsStillExist):
        db.execute("DROP EXTENSION audius_indexer")
    uninstall(db)
    db.execute("DROP EXTENSION audius_indexer")
    assert trigger_functions(db) == REF_ANY


def test_not_for_public(db):
    db.execute("CREATE ROLE trig_nobody LOGIN")
    try:
        db.execute("SET ROLE trig_nobody")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute("SELECT audius_indexer.install_triggers()")
    finally:
        db.execute("RESET ROLE")
        db.execute("DROP ROLE trig_nobody")
