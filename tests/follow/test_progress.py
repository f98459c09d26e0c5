"""Progress on long work: the follower's step range and per-range progress in follow_status, a
NOTICE per range for a psql caller of follow_transfers(), and the sweep's cycle in sweep_status.
"""
from __future__ import annotations

import pytest

from harness.chain import wallet_address
from harness.databases import extension_database

pytestmark = pytest.mark.timeout(120)

W = [wallet_address(i, "progress") for i in range(30)]


@pytest.fixture
def fresh(cluster):
    """A database of the session cluster with a fresh CREATE EXTENSION (nothing enabled)."""
    with extension_database(cluster, "progress") as conn:
        yield conn


def test_follow_step_progress_and_a_notice_per_range(fresh, anvil, cluster):
    anvil.mine(12)
    head = anvil.block_number()
    start = head - 11                      # 12 blocks to follow, 3 ranges of 4
    fresh.execute("INSERT INTO public.eth_indexer_checkpoints (name, last_block) VALUES ('audio_transfers', %s)",
                  (start - 1,))
    cluster.set_system(log_range_blocks=4)
    try:
        with cluster.connect("progress") as conn:      # a session that has the new setting
            notices: list[str] = []
            conn.add_notice_handler(lambda d: notices.append(d.message_primary))
            row = conn.execute("SELECT from_block, to_block, checkpoint FROM audius_indexer.follow_transfers()"
                               ).fetchone()
    finally:
        cluster.set_system(log_range_blocks=None)
    assert row[0] == start and row[2] == row[1] >= head, row
    ranges = [n for n in notices if n.startswith("audius_indexer follow: blocks ")]
    expected = (row[1] - start) // 4 + 1
    assert len(ranges) == expected, notices
    assert ranges[0].startswith(f"audius_indexer follow: blocks {start}..{start + 3} of {start}..{row[1]}"), ranges
    assert ranges[-1].endswith(f"checkpoint {row[1]}"), ranges
    p = fresh.execute("SELECT step_from, step_to, step_blocks_done, step_blocks_todo, "
                      "step_blocks_per_second > 0, step_eta FROM audius_indexer.follow_status").fetchone()
    assert p == (start, row[1], row[1] - start + 1, 0, True, None), p


def test_sweep_cycle_progress(fresh):
    fresh.execute("INSERT INTO public.eth_wallet_balances (wallet, balance, updated_at) "
                  "SELECT w, 0, '1970-01-01' FROM unnest(%s::text[]) AS w", (W,))
    fresh.execute("ANALYZE public.eth_wallet_balances")   # reltuples: the cycle's size estimate
    fresh.execute("SELECT * FROM audius_indexer.refresh_stale(10)").fetchall()
    c = fresh.execute("SELECT cycle_started IS NOT NULL, cycle_rows_checked, cycle_rows, cycle_eta IS NOT NULL "
                      "FROM audius_indexer.sweep_status").fetchone()
    assert c == (True, 10, 30, True), c
    fresh.execute("SELECT * FROM audius_indexer.refresh_stale(10)").fetchall()
    assert fresh.execute("SELECT cycle_rows_checked FROM audius_indexer.sweep_status").fetchone() == (20,)
    fresh.execute("SELECT * FROM audius_indexer.refresh_stale(10)").fetchall()
    started = fresh.execute("SELECT cycle_started FROM audius_indexer.sweep_status").fetchone()[0]
    # the cycle is complete (30 of 30): the next tick starts the next one
    fresh.execute("SELECT * FROM audius_indexer.refresh_stale(10)").fetchall()
    c = fresh.execute("SELECT cycle_started > %s, cycle_rows_checked, cycle_rows FROM audius_indexer.sweep_status",
                      (started,)).fetchone()
    assert c == (True, 10, 30), c
