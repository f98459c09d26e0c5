"""Differential test of the Rust dedupe triggers against the PL/pgSQL reference (tests/sql/reference_triggers.sql,
written from Audius's `ddl/functions/handle_user_challenges.sql` and `handle_challenge_disbursements.sql`).

The same deterministic, randomised workload (> 10,000 operations per run: inserts and re-upserts of
user_challenges over every challenge id and cooldown setting, legacy and sol disbursements with and
without reward codes / reward_manager_txs / resolvable users, timestamps inside and outside the 1-hour
windows, multi-statement and rolled-back transactions, a mid-run change of cooldown settings) runs in
4 concurrent sessions on three identical databases at once:

    ref_any       reference triggers, `= ANY(user_ids)` variant
    ref_contains  reference triggers, `@>` variant
    rust          the Audius triggers re-pointed at the Rust functions by install_triggers()

Both references carry the case-insensitive wallet fix, so the bar is zero differences in:
notification (all columns but id), user_score_features (all but updated_at), the base tables, every
captured `challenge_disbursed` payload, and per operation: success / SQLSTATE+message and the WARNINGs
raised. Sessions own disjoint users, so concurrency cannot make the outcome order-dependent.

The workload runs once in UTC and once in America/New_York across the 2026-03-08 DST switch
(the tables mix timestamp and timestamptz, and the triggers compare and convert between them).
Branch coverage (from the reference's traces) is printed and each branch must be hit.
"""
from __future__ import annotations

import json

import pytest

from harness.triggers import BUILD_DIR, Workload, clean_cluster, compare_runs, create_audius_db, replay, summarize

SEED = 20260308
SESSIONS = 4
OPS_PER_SESSION = 2600          # 10,400 operations per run (x3 databases x2 time zones)

# Every branch of the three functions (names as traced by tests/sql/reference_triggers.sql).
REQUIRED_BRANCHES = [
    "uc.incomplete",
    "uc.A.claimable.inserted", "uc.A.claimable.conflict",
    "uc.A.claimable.skipped_tt", "uc.A.claimable.skipped_tp", "uc.A.claimable.skipped_tut",
    "uc.A.claimable.skipped_dvl",
    "uc.A.e.streak", "uc.A.e.no_streak",
    "uc.A.challenge_reward.inserted", "uc.A.challenge_reward.conflict",
    "uc.B.cooldown.inserted", "uc.B.cooldown.deduped", "uc.B.cooldown.conflict",
    "uc.B.skipped_b", "uc.B.skipped_s",
    "uc.score.written", "uc.score.unchanged",
    "cd.no_reward_manager_tx", "cd.reward_code", "cd.deduped", "cd.inserted", "cd.conflict", "cd.error",
    "sol.unresolved", "sol.reward_code", "sol.deduped", "sol.inserted", "sol.conflict", "sol.notified",
    "sol.error",
]


@pytest.fixture(scope="module")
def pg():
    with clean_cluster("trigdiff", {"max_connections": "60"}) as c:
        yield c


@pytest.mark.parametrize("timezone", ["UTC", "America/New_York"])
def test_rust_triggers_match_reference(pg, timezone):
    tag = "utc" if timezone == "UTC" else "ny"
    dbs = {f"ref_any_{tag}": False, f"ref_contains_{tag}": False, f"rust_{tag}": True}
    for name, rust in dbs.items():
        variant = "rust" if rust else name.split("_")[1]
        create_audius_db(pg, name, triggers=variant)

    wl = Workload(SEED, SESSIONS, OPS_PER_SESSION)
    assert wl.op_count() >= 10_000
    runs = replay(pg, dbs, wl, timezone)
    ref_any, ref_contains, rust = (runs[n] for n in dbs)

    summary = {name: summarize(pg, run) for name, run in runs.items()}
    report = {"seed": SEED, "timezone": timezone, "sessions": SESSIONS, "ops": wl.op_count(),
              "summary": summary}
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    (BUILD_DIR / f"triggers_differential_{tag}.json").write_text(json.dumps(report, indent=2, default=str))

    ref_sum = summary[ref_any.name]
    print(f"\n[{timezone}] seed={SEED} ops/db={ref_sum['ops']} outcomes={ref_sum['outcomes']} "
          f"warnings={ref_sum['warnings']} pg_notify={ref_sum['pg_notify_payloads']}")
    print(f"[{timezone}] notifications by type: {ref_sum['notifications_by_type']}; "
          f"user_score_features rows={ref_sum['user_score_features_rows']} "
          f"(non-zero {ref_sum['user_score_features_nonzero']})")
    print(f"[{timezone}] branch hits (reference = ANY): " +
          ", ".join(f"{k}={v}" for k, v in ref_sum["branches"].items()))
    print(f"[{timezone}] wall time: {ref_sum['seconds']} s for 3 databases; "
          f"Rust plans cached per session: {[s.plans_cached for s in rust.sessions]}")

    # The workload really exercises everything, and the two reference variants agree on the path taken.
    missing = [b for b in REQUIRED_BRANCHES if ref_sum["branches"].get(b, 0) < 3]
    assert not missing, f"branches hit fewer than 3 times: {missing}"
    assert ref_sum["branches"] == summary[ref_contains.name]["branches"]
    assert ref_sum["ops"] >= 10_000

    assert compare_runs(pg, ref_any, ref_contains) == []
    diffs = compare_runs(pg, ref_any, rust)
    assert diffs == [], "Rust triggers differ from the reference:\n" + "\n".join(diffs[:30])
    # Plans are prepared once per backend and reused: never more kept plans than statements.
    assert all(s.plans_cached is not None and 0 < s.plans_cached <= 13 for s in rust.sessions)
