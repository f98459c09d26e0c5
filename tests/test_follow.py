"""Issue 10: the event path — follow_transfers() follows AUDIO Transfer logs from the checkpoint.

Runs on the session cluster (database `audius`, anvil with the mock token that emits Transfer).
"""
from __future__ import annotations

import pytest

from harness.chain import wallet_address

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def fdb(db, contracts, anvil):
    db.execute("TRUNCATE eth_wallet_balances, audius_indexer.follow_pending, audius_indexer.follow_blocks, "
               "audius_indexer.wallet_failures")
    db.execute("DELETE FROM eth_indexer_checkpoints WHERE name = 'audio_transfers'")
    yield db
    db.execute("DELETE FROM eth_indexer_checkpoints WHERE name = 'audio_transfers'")


def test_first_boot_starts_at_the_head_then_follows(fdb, contracts, anvil):
    a, b, c = (wallet_address(i, "follow-smoke") for i in range(3))
    contracts.set_values([a, b, c], [100, 0, 0], [0, 0, 0], [0, 0, 0])
    row = fdb.execute("SELECT * FROM audius_indexer.follow_transfers()").fetchone()
    head = anvil.block_number()
    assert row[0] is None and row[8] == head
    # a tracked wallet (row present) and an untracked one
    fdb.execute("INSERT INTO eth_wallet_balances (wallet, balance, blocknumber) VALUES (%s, 0, 1)", (b,))
    r1 = contracts.transfer(a, b, 30)
    r2 = contracts.transfer(b, c, 5)
    row = fdb.execute("SELECT * FROM audius_indexer.follow_transfers()").fetchone()
    assert row[2] == 2 and row[3] == 3 and row[4] == 1 and row[5] == 1, row
    assert row[8] == anvil.block_number()
    got = fdb.execute("SELECT wallet, balance, blocknumber FROM eth_wallet_balances ORDER BY wallet").fetchall()
    assert got == [(b, 25, got[0][2])] and got[0][2] >= int(r2["blockNumber"], 16)
    st = fdb.execute("SELECT checkpoint, lag_blocks, last_logs, pending_wallets, last_error FROM audius_indexer.follow_status").fetchone()
    assert st[0] == anvil.block_number() and st[1] == 0 and st[2] == 2 and st[3] == 0 and st[4] is None
    assert int(r1["blockNumber"], 16) <= st[0]
