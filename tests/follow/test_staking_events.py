"""The follower's staking events: one follow step (audius_indexer.follow_transfers()) re-reads the
wallets that Audius staking events touch, not only those of AUDIO Transfers.

One chain for the module (harness.staking.StakingChain: anvil + Multicall3 + MockAudioToken +
EventStaking + EventDelegateManager, contracts that emit the real Audius events, behind a recording
proxy) and one cluster whose database is built like an Audius discovery database (users,
associated_wallets, eth_wallet_balances with its triggers; harness.follow.audius_cluster). Steps
are called from SQL (the follow worker stays off); each test starts from an empty follower state
and boots at the chain head, so only its own events are followed.

What a step must do (and what is checked here):
- one eth_getLogs per planned range, its filter the address list [token, staking, delegate
  manager] and one list of topic0 alternatives;
- Staked / Unstaked / Slashed re-read the SP; IncreaseDelegatedStake,
  UndelegateStakeRequestEvaluated, RemoveDelegatorRequestEvaluated and the V1 DecreaseDelegatedStake,
  DelegatorRemoved re-read the delegator and the SP; Claim and Slash re-read the SP and every
  current delegator of it, whose list comes from one getDelegatorsList aggregate3 per range;
- only tracked wallets (users, live eth associated_wallets, rows already present) are written.

Every expected balance comes from three independent eth_calls (harness.follow.expected_total:
balanceOf + totalStakedFor + getTotalDelegatorStake); the expected ranges from
harness.follow.plan_ranges.
"""
from __future__ import annotations

import pytest

from harness.follow import (AUDIUS_TRIGGER_WARNING, audius_cluster, balances, checkpoint, expected_total,
                            get_logs, log_addresses, plan_ranges, point_at, reset_follow_state, status, step)
from harness.chain import (SEL_BALANCE_OF, SEL_GET_BLOCK_NUMBER, SEL_TOTAL_DELEGATOR_STAKE, SEL_TOTAL_STAKED_FOR,
                           MULTICALL3_ADDRESS, to_checksum, wallet_address)
from harness.pg import enable_paths
from harness.staking import SEL_GET_DELEGATORS_LIST, TOPICS, StakingChain

pytestmark = pytest.mark.timeout(300)

DB = "audiuss"
# settings a test may change; reset before each test
KNOBS = ("confirmations", "log_range_blocks", "follow_from_block", "max_reorg_depth")
BALANCE_READS = {SEL_BALANCE_OF, SEL_TOTAL_STAKED_FOR, SEL_TOTAL_DELEGATOR_STAKE, SEL_GET_BLOCK_NUMBER}
TOKENS = 10**22          # every wallet's token balance to start with
DELEGATORS = 50          # delegators of the SP in the claim / slash tests


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chain():
    s = StakingChain()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def pgc(chain):
    c = audius_cluster("staking", DB)
    try:
        point_at(c, chain)
        yield c
        c.assert_log_clean()
        bad = [ln for ln in c.log_text().splitlines() if AUDIUS_TRIGGER_WARNING.search(ln)]
        assert not bad, "Audius trigger WARNINGs:\n" + "\n".join(bad[:10])
    finally:
        c.destroy()


@pytest.fixture
def conn(pgc, chain):
    """The module database: the follower's state and the Audius tables empty, the follow path on
    (it adopts the empty checkpoint; the worker stays off, steps are called from SQL), the knobs at
    their defaults, the proxy's records empty. The test's slice of the server log must show no
    Audius trigger WARNING."""
    pgc.set_system(**{k: None for k in KNOBS})
    c = pgc.connect(DB)
    reset_follow_state(c)
    c.execute("TRUNCATE users, associated_wallets, eth_user_balances")
    enable_paths(c, "follow")
    chain.proxy.clear_faults()
    chain.proxy.reset()
    mark = len(pgc.log_text())
    try:
        yield c
        assert status(c)["last_error"] is None, status(c)
    finally:
        c.execute("SELECT audius_indexer.disable('follow')")
        c.close()
        bad = [ln for ln in pgc.log_text()[mark:].splitlines() if AUDIUS_TRIGGER_WARNING.search(ln)]
        assert not bad, "Audius trigger WARNINGs:\n" + "\n".join(bad[:10])


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def block_of(receipt: dict) -> int:
    return int(receipt["blockNumber"], 16)


def hash_at(chain: StakingChain, n: int) -> str:
    return chain.anvil.rpc("eth_getBlockByNumber", [hex(n), False])["hash"]


def track(conn, users: dict[int, str] = {}, assoc: dict[int, str] = {}) -> None:  # noqa: B006 - read only
    """Tracks wallets as Audius does: users.wallet (stored checksummed, as the discovery database
    keeps it) and live chain='eth' associated_wallets rows."""
    for uid, w in users.items():
        conn.execute("INSERT INTO users (user_id, wallet, is_current, txhash) VALUES (%s, %s, true, '')",
                     (uid, to_checksum(w)))
    for uid, w in assoc.items():
        conn.execute("INSERT INTO associated_wallets (user_id, wallet, blockhash, blocknumber, is_current, "
                     "is_delete, chain) VALUES (%s, %s, '0x', 1, true, false, 'eth')", (uid, to_checksum(w)))


def oracle(chain: StakingChain, wallets) -> dict[str, int]:
    return {w: expected_total(chain.contracts, w) for w in wallets}


def assert_rows_exact(conn, chain: StakingChain, wallets, min_block: int | None = None) -> dict[str, int]:
    """Every wallet has a row equal to the oracle (and stamped at or after min_block)."""
    got = balances(conn)
    want = oracle(chain, wallets)
    missing = [w for w in wallets if w not in got]
    assert not missing, f"{len(missing)} of {len(wallets)} wallets have no row, e.g. {missing[:3]}"
    wrong = [(w, got[w][0], want[w]) for w in wallets if got[w][0] != want[w]]
    assert not wrong, f"{len(wrong)} of {len(wallets)} rows differ from the chain, e.g. {wrong[:3]}"
    if min_block is not None:
        early = [(w, got[w][1]) for w in wallets if got[w][1] is None or got[w][1] < min_block]
        assert not early, f"rows stamped before block {min_block}: {early[:3]}"
    return want


def delegator_list_calls(records) -> list:
    """The aggregate3 eth_calls among `records` that carry getDelegatorsList."""
    return [r for r in records if r.method == "eth_call" and r.aggregate3
            and any(sel == SEL_GET_DELEGATORS_LIST for (_t, _af, sel, _a) in r.calls)]


def sps_asked(record) -> set[str]:
    return {"0x" + args[-40:] for (_t, _af, sel, args) in record.calls if sel == SEL_GET_DELEGATORS_LIST}


def assert_get_logs_filter(chain: StakingChain, record) -> None:
    """One eth_getLogs for the three contracts: address = a JSON array of them, topics = one list of
    the topic0 of every followed event."""
    assert isinstance(record.log_address, list), f"address is not a list: {record.log_address!r}"
    assert sorted(log_addresses(record)) == sorted(chain.addresses) and len(record.log_address) == 3, \
        (record.log_address, chain.addresses)
    t = record.log_topics
    assert isinstance(t, list) and len(t) == 1 and isinstance(t[0], list), f"topics {t!r}"
    assert sorted(x.lower() for x in t[0]) == sorted(TOPICS.values()), \
        ("topic0 alternatives", sorted(set(TOPICS.values()) ^ {x.lower() for x in t[0]}))


def check_delegator_list_call(chain: StakingChain, record, sps: set[str]) -> None:
    """A getDelegatorsList aggregate3: one entry per SP to the delegate manager (Multicall3's
    getBlockNumber may ride along), and nothing else."""
    for target, _af, sel, _args in record.calls:
        if sel == SEL_GET_DELEGATORS_LIST:
            assert target.lower() == chain.delegate_manager, (target, chain.delegate_manager)
        else:
            assert sel == SEL_GET_BLOCK_NUMBER and target.lower() == MULTICALL3_ADDRESS.lower(), (target, sel)
    assert sps_asked(record) == sps, (sps_asked(record), sps)


# --------------------------------------------------------------------------------------------
# Claim and Slash: the SP and all its tracked delegators
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["claim", "slash"])
def test_claim_or_slash_refreshes_sp_and_50_tracked_delegators_in_one_step(conn, pgc, chain, kind):
    """A Claim (rewards shared pro rata over the SP's stake) or a Slash (every stake shrunk in
    proportion) on an SP with 50 tracked delegators changes 51 totals while emitting events that name
    only the SP. Before the step the 51 rows are stale (the oracle moved, the rows did not); ONE
    follow step later the SP's and all 50 delegators' rows equal the oracle, eth_user_balances
    equals them for their users, the Audius triggers raised no WARNING, and the step made one
    eth_getLogs and one getDelegatorsList call (the delegators are found from the SP, not from
    the logs)."""
    sp = wallet_address(0, f"staking-{kind}-sp")
    ds = [wallet_address(i, f"staking-{kind}-delegator") for i in range(DELEGATORS)]
    wallets = [sp] + ds
    # the SP and half the delegators through users, the other half through associated_wallets
    users = {100: sp, **{i + 1: d for i, d in enumerate(ds[:25])}}
    assoc = {1000 + i: d for i, d in enumerate(ds[25:])}
    track(conn, users, assoc)
    step(conn)  # boot at the head
    chain.fund(wallets, [TOKENS] * len(wallets))
    chain.stake(sp, 10**21)
    chain.delegate_many(ds, sp, [10**20 + i * 10**18 for i in range(DELEGATORS)])
    assert sorted(chain.delegators_of(sp)) == sorted(ds)
    r0 = step(conn)
    assert r0["failed"] == 0 and r0["skipped"] == 0, r0
    pre = assert_rows_exact(conn, chain, wallets)

    rc = chain.claim(sp, 7 * 10**20) if kind == "claim" else chain.slash(sp, 3 * 10**20)
    b = block_of(rc)
    post = oracle(chain, wallets)
    unchanged = [w for w in wallets if post[w] == pre[w]]
    assert not unchanged, f"the {kind} left {len(unchanged)} totals unchanged: the test proves nothing for them"
    got = balances(conn)
    fresh = [w for w in wallets if got[w][0] == post[w]]
    assert not fresh, f"rows already equal to the chain before the step: {fresh[:3]}"

    chain.proxy.reset()
    mark = len(pgc.log_text())
    r = step(conn)
    assert (r["from_block"], r["to_block"], r["checkpoint"]) == (b, b, b), r
    assert r["failed"] == 0 and r["skipped"] == 0 and r["tracked"] == len(wallets), r
    assert checkpoint(conn) == b
    assert assert_rows_exact(conn, chain, wallets, min_block=b) == post
    ub = dict(conn.execute("SELECT user_id, balance FROM eth_user_balances").fetchall())
    wrong = [(uid, ub.get(uid), post[w]) for uid, w in {**users, **assoc}.items() if ub.get(uid) != post[w]]
    assert not wrong, f"eth_user_balances differs for {len(wrong)} users, e.g. {wrong[:3]}"
    warnings = [ln for ln in pgc.log_text()[mark:].splitlines() if AUDIUS_TRIGGER_WARNING.search(ln)]
    assert warnings == [], warnings
    logs = chain.proxy.select(method="eth_getLogs")
    assert [x.log_range for x in logs] == [(b, b)]
    assert_get_logs_filter(chain, logs[0])
    lists = delegator_list_calls(chain.proxy.requests)
    assert len(lists) == 1, f"{len(lists)} getDelegatorsList calls"
    check_delegator_list_call(chain, lists[0], {sp})


def test_untracked_sp_and_delegators_of_a_claim_get_no_row(conn, chain):
    """A Claim on an SP that is not tracked, with five delegators: three tracked (users,
    associated_wallets, a row already in eth_wallet_balances) and two not (no Audius link at all;
    an associated wallet that was deleted). The step writes the three tracked delegators (= the
    oracle) and nothing for the SP or the two others: following a Claim does not widen the set of
    wallets eth_wallet_balances holds."""
    sp = wallet_address(0, "staking-untracked-sp")
    ds = [wallet_address(i, "staking-untracked-delegator") for i in range(5)]
    tracked, untracked = ds[:3], ds[3:]
    track(conn, users={1: ds[0]}, assoc={2: ds[1]})
    conn.execute("INSERT INTO eth_wallet_balances (wallet, balance, blocknumber) VALUES (%s, 0, 1)", (ds[2],))
    conn.execute("INSERT INTO associated_wallets (user_id, wallet, blockhash, blocknumber, is_current, is_delete, "
                 "chain) VALUES (3, %s, '0x', 1, true, true, 'eth')", (to_checksum(ds[4]),))
    step(conn)  # boot
    chain.fund([sp] + ds, [TOKENS] * 6)
    chain.stake(sp, 10**21)
    chain.delegate_many(ds, sp, [10**20] * 5)
    step(conn)
    pre = assert_rows_exact(conn, chain, tracked)
    assert set(balances(conn)) == set(tracked), "the delegations wrote untracked rows"

    b = block_of(chain.claim(sp, 10**21))
    chain.proxy.reset()
    r = step(conn)
    assert r["to_block"] == b and r["failed"] == 0 and r["tracked"] == 3, r
    post = assert_rows_exact(conn, chain, tracked, min_block=b)
    assert all(post[w] != pre[w] for w in tracked)
    got = balances(conn)
    assert set(got) == set(tracked), f"untracked rows written: {sorted(set(got) - set(tracked))}"
    lists = delegator_list_calls(chain.proxy.requests)
    assert len(lists) == 1
    check_delegator_list_call(chain, lists[0], {sp})


# --------------------------------------------------------------------------------------------
# delegation events: the delegator and the SP
# --------------------------------------------------------------------------------------------
OPS = {
    # op: (event the delegate manager emits, action)
    "delegate": ("IncreaseDelegatedStake", lambda s, d, sp: s.delegate(d, sp, 3 * 10**19)),
    "undelegate": ("UndelegateStakeRequestEvaluated", lambda s, d, sp: s.undelegate(d, sp, 4 * 10**19)),
    "undelegate_v1": ("DecreaseDelegatedStake", lambda s, d, sp: s.undelegate(d, sp, 4 * 10**19, v1=True)),
    "remove": ("RemoveDelegatorRequestEvaluated", lambda s, d, sp: s.remove(sp, d)),
    "remove_v1": ("DelegatorRemoved", lambda s, d, sp: s.remove(sp, d, v1=True)),
}


def _delegation_roundtrip(conn, chain: StakingChain, op: str, alone: bool) -> None:
    event, action = OPS[op]
    salt = f"staking-{op}-{'alone' if alone else 'all'}"
    sp, d = wallet_address(0, salt), wallet_address(1, salt)
    track(conn, users={1: sp}, assoc={2: d})
    step(conn)  # boot
    chain.fund([sp, d], [TOKENS, TOKENS])
    chain.stake(sp, 10**21)
    chain.delegate(d, sp, 10**20)
    step(conn)
    pre = assert_rows_exact(conn, chain, [sp, d])
    # the delegator's tokens only move between its balance and its delegated stake (its total stays
    # the same): its row is set wrong first, so that only a re-read of the delegator puts it right
    conn.execute("UPDATE eth_wallet_balances SET balance = 0, blocknumber = 1 WHERE wallet = %s", (d,))
    if alone:
        chain.set_quiet(token=True, events=True)
    try:
        rc = action(chain, d, sp)
    finally:
        if alone:
            chain.set_quiet()
    b = block_of(rc)
    emitted = [(lg["address"].lower(), lg["topics"][0]) for lg in rc["logs"]]
    assert (chain.delegate_manager, TOPICS[event]) in emitted, emitted
    if alone:
        assert emitted == [(chain.delegate_manager, TOPICS[event])], f"not alone: {emitted}"
    post = oracle(chain, [sp, d])
    assert post[sp] != pre[sp] and post[d] == pre[d] > 0, (pre, post)
    assert balances(conn)[sp][0] == pre[sp] and balances(conn)[d] == (0, 1), "rows moved before the step"

    chain.proxy.reset()
    r = step(conn)
    assert r["checkpoint"] >= b and r["failed"] == 0 and r["skipped"] == 0, r
    assert assert_rows_exact(conn, chain, [sp, d], min_block=b) == post
    if op.startswith("remove"):
        assert d not in chain.delegators_of(sp)
    logs = chain.proxy.select(method="eth_getLogs")
    assert logs, "no eth_getLogs"
    for rec in logs:
        assert_get_logs_filter(chain, rec)
    assert not delegator_list_calls(chain.proxy.requests), "getDelegatorsList without a Claim or Slash"


@pytest.mark.parametrize("op", list(OPS))
def test_delegation_event_refreshes_sp_and_delegator_in_one_step(conn, chain, op):
    """delegate / undelegate / remove a delegator, with the V2 events and the two V1 events
    (DecreaseDelegatedStake, DelegatorRemoved) mainnet emitted before the upgrade, each as the
    contracts really do it (the delegate manager's event plus Staked / Unstaked and the token
    Transfer): the SP's row is stale after the transaction, the delegator's (whose total does not
    change: its tokens move between its balance and its stake) is set wrong before it, and both
    equal the oracle after one follow step."""
    _delegation_roundtrip(conn, chain, op, alone=False)


@pytest.mark.parametrize("op", list(OPS))
def test_delegate_manager_event_alone_refreshes_sp_and_delegator(conn, chain, op):
    """The same operations with the staking contract's knobs making the delegate manager's event the
    only log of the transaction (no Transfer, no Staked / Unstaked): the step still refreshes both
    the SP and the delegator, so each of the five events is followed for both of its addresses (for
    RemoveDelegatorRequestEvaluated and DelegatorRemoved the SP is the first indexed argument)."""
    _delegation_roundtrip(conn, chain, op, alone=True)


@pytest.mark.parametrize("event", ["Staked", "Unstaked", "Slashed"])
def test_staking_event_alone_refreshes_the_sp(conn, chain, event):
    """Staked / Unstaked / Slashed of the staking contract, with the token's Transfer taken away
    (the knob): the event is the only log, it names only the SP, and the SP's row equals the oracle
    after one step. An SP's own stake or unstake moves tokens between its balance and its stake (its
    total stays the same), so the row is first set wrong (0 at block 1): only a re-read of the SP
    puts it right."""
    sp = wallet_address(0, f"staking-event-{event}")
    track(conn, users={1: sp})
    step(conn)  # boot
    chain.fund([sp], [TOKENS])
    chain.stake(sp, 10**21)
    step(conn)
    assert_rows_exact(conn, chain, [sp])
    conn.execute("UPDATE eth_wallet_balances SET balance = 0, blocknumber = 1 WHERE wallet = %s", (sp,))
    chain.set_quiet(token=True)
    try:
        if event == "Staked":
            rc = chain.stake(sp, 5 * 10**19)
        elif event == "Unstaked":
            rc = chain.unstake(sp, 5 * 10**19)
        else:
            rc = chain.slash_stake(sp, 5 * 10**19)
    finally:
        chain.set_quiet()
    b = block_of(rc)
    emitted = [(lg["address"].lower(), lg["topics"][0]) for lg in rc["logs"]]
    assert emitted == [(chain.staking, TOPICS[event])], emitted
    r = step(conn)
    assert r["failed"] == 0 and r["skipped"] == 0, r
    assert_rows_exact(conn, chain, [sp], min_block=b)


# --------------------------------------------------------------------------------------------
# requests: one eth_getLogs per range, one getDelegatorsList call per range with Claim / Slash
# --------------------------------------------------------------------------------------------
def test_one_get_logs_per_range_and_one_delegator_list_call_per_claim_range(conn, pgc, chain):
    """log_range_blocks = 5 over 23 blocks: the step's eth_getLogs are exactly the planned ranges (one
    request per range for the three contracts together, each with the three-address list and the
    topic0 alternatives). Between one range's eth_getLogs and the next, the only eth_calls are the
    balance reads plus, in a range holding a Claim or a Slash, exactly one getDelegatorsList
    aggregate3 (for all the range's SPs at once, before the balance reads); a range with other
    events has none, a range with no event no eth_call at all. The rows equal the oracle after."""
    size = 5
    pgc.set_system(log_range_blocks=size)
    sp1, sp2, sp3 = (wallet_address(i, "staking-ranges-sp") for i in range(3))
    d1 = [wallet_address(i, "staking-ranges-d1") for i in range(3)]
    d2 = [wallet_address(i, "staking-ranges-d2") for i in range(2)]
    d3 = wallet_address(0, "staking-ranges-d3")
    wallets = [sp1, sp2, sp3, *d1, *d2, d3]
    track(conn, users={i + 1: w for i, w in enumerate(wallets)})
    chain.fund(wallets, [TOKENS] * len(wallets))
    for sp in (sp1, sp2, sp3):
        chain.stake(sp, 10**21)
    chain.delegate_many(d1, sp1, [10**20] * 3)
    chain.delegate_many(d2, sp2, [2 * 10**20] * 2)
    h0 = step(conn)["checkpoint"]  # boot at the head, after the setup
    assert h0 == chain.anvil.block_number()

    def at(n: int, action):
        """Runs `action` (one transaction) so that it lands in block h0 + n."""
        gap = h0 + n - 1 - chain.anvil.block_number()
        assert gap >= 0, n
        if gap:
            chain.anvil.mine(gap)
        rc = action()
        assert block_of(rc) == h0 + n, (block_of(rc), h0 + n)
        return h0 + n

    # ranges [h0+1..h0+5] [h0+6..h0+10] [h0+11..h0+15] [h0+16..h0+20] [h0+21..h0+23]
    claims = {at(2, lambda: chain.claim(sp1, 10**20)): sp1,
              at(4, lambda: chain.slash(sp2, 10**20)): sp2}
    at(12, lambda: chain.delegate(d3, sp3, 10**20))
    claims[at(18, lambda: chain.claim(sp1, 2 * 10**20))] = sp1
    at(21, lambda: chain.stake(sp3, 10**19))
    chain.anvil.mine(h0 + 23 - chain.anvil.block_number())
    head = chain.anvil.block_number()
    assert head == h0 + 23

    chain.proxy.reset()
    r = step(conn)
    assert (r["from_block"], r["to_block"], r["checkpoint"]) == (h0 + 1, head, head), r
    assert r["failed"] == 0 and r["skipped"] == 0, r
    planned = plan_ranges(h0 + 1, head, size)
    assert get_logs(chain.proxy) == planned and len(planned) == 5, (get_logs(chain.proxy), planned)

    recs = chain.proxy.requests
    starts = [i for i, x in enumerate(recs) if x.method == "eth_getLogs"]
    assert not [x for x in recs[:starts[0]] if x.method == "eth_call"], "eth_call before the first range"
    busy = {h0 + 2, h0 + 4, h0 + 12, h0 + 18, h0 + 21}
    summary = []
    for k, (lo, hi) in enumerate(planned):
        seg = recs[starts[k]:starts[k + 1] if k + 1 < len(starts) else len(recs)]
        assert_get_logs_filter(chain, seg[0])
        calls = [x for x in seg if x.method == "eth_call"]
        lists = delegator_list_calls(seg)
        sps = {claims[blk] for blk in claims if lo <= blk <= hi}
        summary.append(((lo - h0, hi - h0), len(calls), len(lists)))
        if sps:
            assert len(lists) == 1, f"range {(lo, hi)}: {len(lists)} getDelegatorsList calls, expected 1"
            check_delegator_list_call(chain, lists[0], sps)
            at_list = next(i for i, x in enumerate(seg) if x is lists[0])
            reads = [i for i, x in enumerate(seg) if x.method == "eth_call" and x is not lists[0]]
            assert reads and at_list < reads[0], f"range {(lo, hi)}: the list came after a balance read"
        else:
            assert not lists, f"range {(lo, hi)} has no Claim/Slash but {len(lists)} getDelegatorsList calls"
        if not any(lo <= blk <= hi for blk in busy):
            assert not calls, f"range {(lo, hi)} has no event but {len(calls)} eth_calls"
        others = [x for x in calls if not any(x is li for li in lists)]
        for x in others:
            assert x.aggregate3 and {sel for (_t, _af, sel, _a) in x.calls} <= BALANCE_READS, \
                f"range {(lo, hi)}: an eth_call that is neither a balance read nor the delegator list: {x}"
    print("per range (blocks after the boot, eth_calls, getDelegatorsList calls):", summary)
    assert_rows_exact(conn, chain, wallets)
    assert len(delegator_list_calls(recs)) == 2


# --------------------------------------------------------------------------------------------
# reorg
# --------------------------------------------------------------------------------------------
def test_orphaned_claim_rereads_its_delegators_after_a_reorg(conn, chain):
    """Reorg: evm_snapshot, a Claim on an SP with four tracked delegators, a step (the rows show the
    claim), evm_revert and a longer chain without the claim, a step: the reorg is detected (reorgs
    + 1, the ancestor is the block of the step before the snapshot), and the SP's and every
    delegator's row equals the oracle again, i.e. the values before the claim: the rows the orphaned
    Claim wrote were re-read, the delegators' included (no event of the new chain names them). The
    stored hash of the new checkpoint is the node's."""
    sp = wallet_address(0, "staking-reorg-sp")
    ds = [wallet_address(i, "staking-reorg-delegator") for i in range(4)]
    x, y = wallet_address(0, "staking-reorg-other"), wallet_address(1, "staking-reorg-other")
    wallets = [sp] + ds
    track(conn, users={i + 1: w for i, w in enumerate(wallets)})
    step(conn)  # boot
    chain.fund(wallets + [x], [TOKENS] * (len(wallets) + 1))
    chain.stake(sp, 10**21)
    chain.delegate_many(ds, sp, [10**20 * (i + 1) for i in range(4)])
    h1 = step(conn)["checkpoint"]
    assert h1 == chain.anvil.block_number()
    pre = assert_rows_exact(conn, chain, wallets)
    reorgs0 = status(conn)["reorgs"]

    snap = chain.anvil.rpc("evm_snapshot")
    claimed = block_of(chain.claim(sp, 10**21))
    chain.anvil.mine(1)
    h2 = chain.anvil.block_number()
    r1 = step(conn)
    assert (r1["from_block"], r1["to_block"], r1["checkpoint"]) == (h1 + 1, h2, h2), r1
    abandoned = assert_rows_exact(conn, chain, wallets, min_block=claimed)
    assert all(abandoned[w] != pre[w] for w in wallets), "the claim did not move every total"
    old_hash = hash_at(chain, h2)

    assert chain.anvil.rpc("evm_revert", [snap]) is True
    assert chain.anvil.block_number() == h1
    chain.contracts.transfer(x, y, 12345)  # a different block h1 + 1, the claim never happens
    chain.anvil.mine(3)
    head = chain.anvil.block_number()
    assert head == h1 + 4 > h2 and hash_at(chain, h2) != old_hash
    assert oracle(chain, wallets) == pre

    r2 = step(conn)
    assert (r2["from_block"], r2["to_block"], r2["checkpoint"]) == (h1 + 1, head, head), r2
    st = status(conn)
    assert st["reorgs"] == reorgs0 + 1, st
    assert (st["last_reorg_block"], st["last_reorg_ancestor"]) == (h2, h1), st
    got = balances(conn)
    wrong = [(w, got[w][0], pre[w]) for w in wallets if got[w][0] != pre[w]]
    assert not wrong, f"rows still show the orphaned claim: {wrong}"
    assert all(got[w][1] <= head for w in wallets), got
    assert_rows_exact(conn, chain, wallets)
    stored = dict(conn.execute("SELECT block, hash FROM audius_indexer.follow_blocks").fetchall())
    assert stored.get(head) == hash_at(chain, head), (stored, head)
    assert all(h == hash_at(chain, blk) for blk, h in stored.items()), stored
