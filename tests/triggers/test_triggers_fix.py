"""What the documented fix changes: `handle_sol_reward_disbursement` resolves the recipient with
`lower(users.wallet) = lower(recipient_eth_address)` where Audius's PL/pgSQL function
(`ddl/functions/handle_challenge_disbursements.sql` in AudiusProject/api) compares
`users.wallet = recipient_eth_address` case-sensitively. The Go indexer stores recipients lowercase
and users.wallet is EIP-55 mixed case, so the original misses every user whose wallet has a capital
letter.

Two databases, identical but for the sol trigger: `original` (reference functions, sol = the
original case-sensitive one) and `rust` (the Rust triggers). The targeted scenario spells out every effect:
resolved users get their challenge_reward notification and pg_notify; and the knock-on effects the
differential test cannot count row by row: the sol notification now takes the (group_id, specifier)
key of a dual-fired legacy disbursement, and it opens the 1-hour dedupe window for a later one.
"""
from __future__ import annotations

import json

import pytest

from harness.triggers import Workload, clean_cluster, create_audius_db, multiset_diff, replay, snapshot

MIXED = "0xAbCdEf0123456789aBcDeF0123456789AbCdEf01"      # user 1: EIP-55-like mixed case
LOWER = "0x00000000000000000000000000000000000000aa"      # user 2: wallet already lowercase
OLD = "0xDeadBeef00000000000000000000000000000003"        # user 3: non-current row only
CURRENT3 = "0x3333333333333333333333333333333333333333"


@pytest.fixture(scope="module")
def pg():
    with clean_cluster("trigfix") as c:
        create_audius_db(c, "original", triggers="contains", trace=False)
        with c.connect("original") as conn:
            conn.execute("SELECT public.ref_attach_triggers('contains', 'contains', 'case_sensitive')")
        create_audius_db(c, "rust", triggers="rust", trace=False)
        yield c


SCENARIO = [
    "INSERT INTO users (user_id, wallet, is_current, created_at, txhash) VALUES "
    f"(1, '{MIXED}', true, '2026-01-01', 'a'), (2, '{LOWER}', true, '2026-01-01', 'b'), "
    f"(3, '{OLD}', false, '2026-01-01', 'c'), (3, '{CURRENT3}', true, '2026-01-01', 'd')",
    "INSERT INTO reward_manager_txs VALUES ('legacy-1', 1, '2026-01-01'), ('legacy-2', 2, '2026-01-01'), "
    "('dual', 3, '2026-01-01')",
    # A: lowercase recipient of a mixed-case wallet (what the indexer writes): only the fix resolves it
    "INSERT INTO sol_reward_disbursements VALUES ('sA', 0, 100000000, 10, 'bank', 'p', '1', "
    f"'{MIXED.lower()}', '2026-01-02 10:00')",
    # Knock-on 1: legacy disbursement 30 min after A, same user: the fix's notification dedupes it
    "INSERT INTO challenge_disbursements VALUES ('v', 1, 'later', 'legacy-1', 20, '500000000', "
    "'2026-01-02 10:30+00')",
    # B: exact mixed-case recipient: both resolve (new notification per 1-hour window: later on)
    "INSERT INTO sol_reward_disbursements VALUES ('sB', 0, 5, 11, 'bank', 'u', '1', "
    f"'{MIXED}', '2026-01-02 13:00')",
    # C: already-lowercase wallet: both resolve
    "INSERT INTO sol_reward_disbursements VALUES ('sC', 0, 7, 12, 'bank', 'p', '2', "
    f"'{LOWER}', '2026-01-02 10:00')",
    # D: upper-cased recipient of a lowercase wallet: only the fix resolves it
    "INSERT INTO sol_reward_disbursements VALUES ('sD', 0, 8, 13, 'bank', 'fp', '2', "
    f"'{'0x' + LOWER[2:].upper()}', '2026-01-02 16:00')",
    # E: the wallet of a non-current row: neither resolves
    "INSERT INTO sol_reward_disbursements VALUES ('sE', 0, 9, 14, 'bank', 'p', '3', "
    f"'{OLD.lower()}', '2026-01-02 10:00')",
    # Knock-on 2: dual fire (sol first, then legacy, same reward): with the fix the sol trigger writes
    # the row and the legacy insert is the no-op; in the original the legacy trigger writes it.
    "BEGIN",
    "INSERT INTO sol_reward_disbursements VALUES ('dual', 0, 42, 30, 'bank', 'c', 'dual-spec', "
    f"'{MIXED.lower()}', '2026-01-03 08:00')",
    "INSERT INTO challenge_disbursements VALUES ('c', 1, 'dual-spec', 'dual', 30, '4200000000', "
    "'2026-01-03 08:00+00')",
    "COMMIT",
]


def run_scenario(pg, db):
    with pg.connect(db, options="-c TimeZone=UTC") as conn:
        conn.execute("LISTEN challenge_disbursed")
        for sql in SCENARIO:
            conn.execute(sql)
        payloads = sorted(n.payload for n in conn.notifies(timeout=0.5))
        rows = conn.execute("SELECT type, group_id, specifier, slot, \"timestamp\"::text, data::text, "
                            "user_ids::text FROM notification ORDER BY group_id").fetchall()
    return rows, payloads


def test_case_insensitive_fix_targeted(pg):
    orig_rows, orig_payloads = run_scenario(pg, "original")
    rust_rows, rust_payloads = run_scenario(pg, "rust")
    only_orig, only_rust = multiset_diff(orig_rows, rust_rows)
    print("\nnotification rows only with the original (case-sensitive):")
    for r in only_orig:
        print("   ", r)
    print("notification rows only with the fix (case-insensitive):")
    for r in only_rust:
        print("   ", r)

    cr = "challenge_reward"
    # A (user 1, lowercase recipient) and D (user 2, upper-cased recipient): only the fix notifies.
    # dual (user 1): with the fix the row comes from the sol trigger (slot 30, numeric amount 42);
    # in the original the legacy trigger writes it (string amount '4200000000').
    assert only_rust == sorted([
        (cr, "challenge_reward:1:challenge:c:specifier:dual-spec", "1", 30, "2026-01-03 08:00:00",
         '{"amount": 42, "specifier": "dual-spec", "challenge_id": "c"}', "{1}"),
        (cr, "challenge_reward:1:challenge:p:specifier:1", "1", 10, "2026-01-02 10:00:00",
         '{"amount": 100000000, "specifier": "1", "challenge_id": "p"}', "{1}"),
        (cr, "challenge_reward:2:challenge:fp:specifier:2", "2", 13, "2026-01-02 16:00:00",
         '{"amount": 8, "specifier": "2", "challenge_id": "fp"}', "{2}"),
    ], key=repr)
    # Knock-on 1: in the original the legacy disbursement at 10:30 creates a notification; with the fix the
    # sol notification of 10:00 is inside its 1-hour window, so it is deduped.
    assert only_orig == sorted([
        (cr, "challenge_reward:1:challenge:c:specifier:dual-spec", "1", 30, "2026-01-03 08:00:00",
         '{"amount": "4200000000", "specifier": "dual-spec", "challenge_id": "c"}', "{1}"),
        (cr, "challenge_reward:1:challenge:v:specifier:later", "1", 20, "2026-01-02 10:30:00",
         '{"amount": "500000000", "specifier": "later", "challenge_id": "v"}', "{1}"),
    ], key=repr)
    # Unchanged: B (exact case) and C (lowercase wallet) resolve in both; E resolves in neither.
    common = {r[1] for r in set(orig_rows) & set(rust_rows)}
    assert common == {"challenge_reward:1:challenge:u:specifier:1", "challenge_reward:2:challenge:p:specifier:2"}

    # pg_notify: the original announces B and C only; the fix also announces A, D and the dual-fired one.
    def users_and_sigs(payloads):
        return sorted((json.loads(p)["user_id"], json.loads(p)["signature"]) for p in payloads)
    assert users_and_sigs(orig_payloads) == [(1, "sB"), (2, "sC")]
    assert users_and_sigs(rust_payloads) == [(1, "dual"), (1, "sA"), (1, "sB"), (2, "sC"), (2, "sD")]
    assert set(orig_payloads) <= set(rust_payloads)


def test_case_insensitive_fix_over_random_workload(pg):
    """On a random workload (2 sessions x 1,500 operations), count what the fix changes."""
    for db, variant in (("wl_original", "original"), ("wl_rust", "rust")):
        create_audius_db(pg, db, triggers="rust" if variant == "rust" else "contains", trace=False)
        if variant == "original":
            with pg.connect(db) as conn:
                conn.execute("SELECT public.ref_attach_triggers('contains', 'contains', 'case_sensitive')")
    wl = Workload(seed=4242, sessions=2, ops_per_session=1500)
    runs = replay(pg, {"wl_original": False, "wl_rust": True}, wl, "UTC", trace=False)
    a, b = snapshot(pg, "wl_original"), snapshot(pg, "wl_rust")
    only_orig, only_rust = multiset_diff(a["notification"], b["notification"])
    p_orig, p_rust = multiset_diff(runs["wl_original"].payloads, runs["wl_rust"].payloads)
    print(f"\nrandom workload ({wl.op_count()} ops): notifications original={len(a['notification'])} "
          f"fix={len(b['notification'])}; only with the original={len(only_orig)}, only with fix={len(only_rust)}; "
          f"pg_notify original={len(runs['wl_original'].payloads)} fix={len(runs['wl_rust'].payloads)} "
          f"(+{len(p_rust)} / -{len(p_orig)})")
    # The fix only adds announcements (every payload the original sends is still sent) ...
    assert p_orig == [] and len(p_rust) > 0
    # ... and only ever changes challenge_reward notifications (the only type the sol trigger writes).
    assert {r[2] for r in only_orig + only_rust} == {"challenge_reward"}
    assert len(only_rust) > 0
    # Everything else the workload did is identical.
    for table in ("user_score_features", "user_challenges", "challenge_disbursements", "sol_reward_disbursements"):
        assert a[table] == b[table], table
