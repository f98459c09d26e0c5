"""The paths (sweep, follow, challenges; and enroll, the link triggers' path, tested in
test_enrollment.py): off after CREATE EXTENSION, turned on and off by the DBA, and stopped by a second
writer (src/paths.rs, sql/paths.sql, docs/operations.md "Paths").

Driven through the SQL entry points in databases of the session cluster; the workers' side (nothing
acts while a path is off; a worker stops with its path) is in test_cutover.py.
"""
from __future__ import annotations

import psycopg
import pytest

from harness.challenges import make_db, run_once, set_checkpoint as set_challenge_checkpoint
from harness.chain import wallet_address
from harness.databases import extension_database, scratch_database

pytestmark = pytest.mark.timeout(120)

W = [wallet_address(i, "paths") for i in range(3)]


def states(conn) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in conn.execute(
        "SELECT path, state, stopped_reason FROM audius_indexer.path_status").fetchall()}


def doctor_paths(conn) -> dict[str, tuple[bool, str]]:
    return {r[0]: (r[1], r[2]) for r in conn.execute(
        "SELECT check_name, ok, detail FROM audius_indexer.doctor() WHERE check_name LIKE 'path %'").fetchall()}


@pytest.fixture
def fresh(cluster):
    """A database with a fresh CREATE EXTENSION (nothing enabled) and the session's RPC settings."""
    with extension_database(cluster, "paths_fresh") as conn:
        yield conn


def test_every_path_is_off_after_create_extension(fresh):
    assert states(fresh) == {p: ("off", None) for p in ("sweep", "follow", "challenges", "enroll")}
    assert [r[0] for r in fresh.execute("SELECT path FROM audius_indexer.path_status")] == \
        ["sweep", "follow", "challenges", "enroll"]
    d = doctor_paths(fresh)
    assert set(d) == {"path sweep", "path follow", "path challenges", "path enroll"}
    assert all(ok and detail.startswith("off") for ok, detail in d.values()), d
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown path"):
        fresh.execute("SELECT audius_indexer.enable('everything')")


def test_enable_and_disable_record_who_and_when(fresh):
    assert fresh.execute("SELECT audius_indexer.enable('sweep')").fetchone() == ("sweep path on",)
    row = fresh.execute("SELECT state, changed_by, changed_at IS NOT NULL FROM audius_indexer.path_status "
                        "WHERE path = 'sweep'").fetchone()
    assert row == ("on", "postgres", True)
    assert doctor_paths(fresh)["path sweep"][1].startswith("on since")
    assert fresh.execute("SELECT audius_indexer.disable('sweep')").fetchone() == ("sweep path off",)
    assert states(fresh)["sweep"] == ("off", None)


def test_follow_stops_when_another_writer_moves_its_checkpoint(fresh, anvil, cluster):
    head = anvil.block_number()
    fresh.execute("INSERT INTO public.eth_indexer_checkpoints (name, last_block) VALUES ('audio_transfers', %s)",
                  (head,))
    fresh.execute("SELECT audius_indexer.enable('follow')")   # adopts the checkpoint as its own
    fresh.execute("SELECT * FROM audius_indexer.follow_transfers()").fetchall()
    assert states(fresh)["follow"][0] == "on"
    mark = len(cluster.log_text())
    # the Go eth-indexer, still running, saves its checkpoint (GREATEST) past ours
    fresh.execute("UPDATE public.eth_indexer_checkpoints SET last_block = last_block + 7 "
                  "WHERE name = 'audio_transfers'")
    rows = fresh.execute("SELECT from_block, logs, checkpoint FROM audius_indexer.follow_transfers()").fetchall()
    assert rows == [(None, 0, head + 7)], rows          # stopped before doing anything
    state, reason = states(fresh)["follow"]
    assert state == "stopped" and f"moved from {head} to {head + 7}" in reason, reason
    ok, detail = doctor_paths(fresh)["path follow"]
    assert not ok and "STOPPED" in detail and "Go eth-indexer" in detail, detail
    warnings = [ln for ln in cluster.log_text()[mark:].splitlines()
                if "WARNING" in ln and "follow path stopped itself" in ln]
    assert len(warnings) == 1, warnings
    # a stopped path runs nothing, SQL calls included, until the DBA decides
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="follow path is stopped"):
        fresh.execute("SELECT * FROM audius_indexer.follow_transfers()")
    assert fresh.execute("SELECT last_block FROM public.eth_indexer_checkpoints "
                         "WHERE name = 'audio_transfers'").fetchone() == (head + 7,)
    # take over again: the checkpoint as it is now becomes the follower's
    fresh.execute("SELECT audius_indexer.enable('follow')")
    assert states(fresh)["follow"] == ("on", None)
    fresh.execute("SELECT * FROM audius_indexer.follow_transfers()").fetchall()
    assert states(fresh)["follow"][0] == "on"


def test_disable_follow_hands_pending_wallets_to_the_sweep(fresh):
    fresh.execute("INSERT INTO public.eth_wallet_balances (wallet, balance, blocknumber, updated_at) "
                  "SELECT w, 1, 5, now() FROM unnest(%s::text[]) AS w", (W,))
    fresh.execute("INSERT INTO audius_indexer.follow_pending (wallet, min_block, reason) "
                  "SELECT w, 9, 'lagging node' FROM unnest(%s::text[]) AS w", (W[:2],))
    fresh.execute("SELECT audius_indexer.enable('follow')")
    out = fresh.execute("SELECT audius_indexer.disable('follow')").fetchone()[0]
    assert out == "follow path off; 2 pending wallet(s) handed to the stale sweep (updated_at = 1970-01-01)", out
    rows = dict(fresh.execute("SELECT wallet, updated_at = '1970-01-01' FROM public.eth_wallet_balances "
                              "WHERE wallet = ANY(%s)", (W,)).fetchall())
    assert rows == {W[0]: True, W[1]: True, W[2]: False}, rows
    assert fresh.execute("SELECT count(*) FROM audius_indexer.follow_pending").fetchone() == (0,)
    # the stalest rows, first for whichever sweep runs next
    assert [r[0] for r in fresh.execute("SELECT wallet FROM public.eth_wallet_balances ORDER BY updated_at, wallet "
                                        "LIMIT 2").fetchall()] == sorted(W[:2])


def test_challenges_stop_when_the_go_job_moves_a_checkpoint(cluster):
    db = "paths_challenges"
    with scratch_database(cluster, db, make_db):
        with cluster.connect(db) as conn:
            conn.execute("INSERT INTO users (user_id, wallet, is_current, txhash, blocknumber) "
                         "VALUES (10, '0xa', true, 'a', 1)")
            conn.execute("INSERT INTO user_events (user_id, referrer, is_mobile_user, is_current, blocknumber) "
                         "VALUES (20, 10, true, true, 5)")
            conn.execute("SELECT audius_indexer.enable('challenges')")
            out = run_once(conn, 5000)
            assert all(o["error"] is None and o["checkpoint_after"] == 5 for o in out), out
            # the Go challenge job, still running, stores its own checkpoint for rv
            set_challenge_checkpoint(conn, "rv", 9)
            out = run_once(conn, 5000)
            assert all(o["error"] and o["error"].startswith("55000: ") for o in out), out
            assert "challenges:rv:last_blocknumber moved from 5 to 9" in out[0]["error"], out[0]
            state, reason = states(conn)["challenges"]
            assert state == "stopped" and "Go challenge job" in reason, reason
            with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="challenges path is stopped"):
                conn.execute("SELECT * FROM audius_indexer.process_user_event_challenges()")
            # hand over: off, and SQL calls run again (an explicit act of the DBA)
            conn.execute("SELECT audius_indexer.disable('challenges')")
            assert states(conn)["challenges"] == ("off", None)
            assert all(o["error"] is None for o in run_once(conn, 5000))
