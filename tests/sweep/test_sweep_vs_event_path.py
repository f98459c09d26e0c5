"""Concurrency: the sweep and the event path on the same wallets from several sessions for 60 s,
while anvil mines blocks and the balances change (suite table "Concurrency: sweep vs event
path, 60 s" in docs/reliability.md).

- 2 sessions loop `refresh_stale(20)` over 40 wallets, 2 sessions loop `refresh_wallets(…, min_blocks)`
  with the blocks of recent balance changes ("events"); a mutator changes 5 balances per block
  (~10 blocks/s) and mines empty blocks in between. The chain history is recorded by the test.
- Every write to eth_wallet_balances is logged by a test-only AFTER INSERT OR UPDATE trigger (in a
  database of this module's own), with the old and new block and balance.
- The RPC goes through a proxy of this module whose forwarder counts how many sweep reads (20
  holders) are in flight at once, and records every aggregate3 answer the node gave (the block of
  its getBlockNumber() and each holder's total); each sweep read is held 30 ms after the node
  answered, so it is often older than event-path reads that land before it (the race the block
  guard is for).

Invariants: no row's block ever goes down; every write is exactly one of the node's answers (total
and block from the same aggregate3), and that answer is the chain's value at its block, or, for
the answers anvil itself gave one block late, at the next block (no older read ever overwrote a
newer value); no error, no deadlock; single flight: never two sweep reads in flight, and RPC reads
= calls that reported work.
"""
from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import psycopg
import pytest

from conftest import SECRET_PATH, restore_baseline
from harness.chain import (_calldata, decode_call3_array, decode_result3_array, enc_address_array, enc_uint,
                           enc_uint_array, wallet_address)
from harness.rpcproxy import RpcProxy
from harness.reliability import error_text
from harness.suites import extension_db, report_fixture

SECONDS = float(os.environ.get("RACING_SECONDS", "60"))
pytestmark = pytest.mark.timeout(SECONDS + 120)

DB = "racing"
N_WALLETS = 40
BATCH = 20
STAKED, DELEGATED = 7 * 10**18, 3 * 10**17

TRIGGER_SQL = """
CREATE TABLE public.racing_writes (
  id bigserial PRIMARY KEY, op text, wallet text, old_block bigint, new_block bigint,
  old_balance numeric, new_balance numeric, app text, pid int, xid bigint,
  at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION public.racing_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.racing_writes (op, wallet, old_block, new_block, old_balance, new_balance, app, pid, xid)
  VALUES (TG_OP, NEW.wallet,
          CASE WHEN TG_OP = 'UPDATE' THEN OLD.blocknumber END, NEW.blocknumber,
          CASE WHEN TG_OP = 'UPDATE' THEN OLD.balance END, NEW.balance,
          current_setting('application_name'), pg_backend_pid(), txid_current());
  RETURN NULL;
END $$;
CREATE TRIGGER racing_log AFTER INSERT OR UPDATE ON public.eth_wallet_balances
  FOR EACH ROW EXECUTE FUNCTION public.racing_log();
"""


def node_answer(request: bytes, answer: bytes) -> list[tuple[str, int, int]]:
    """(wallet, block, total) per holder of one aggregate3 as the node answered it: the block of
    its getBlockNumber() and the sum of the holder's three reads (token, staked, delegated)."""
    data = bytes.fromhex(json.loads(request)["params"][0]["data"][2 + 8:])
    calls = decode_call3_array(data)
    results = decode_result3_array(bytes.fromhex(json.loads(answer)["result"][2:]))
    assert len(results) == len(calls) and all(ok for ok, _ in results), "every read of the node succeeded"
    block = int.from_bytes(results[0][1], "big")
    out = []
    for i in range(1, len(calls), 3):
        wallet = "0x" + calls[i][2][4 + 12:4 + 32].hex()
        out.append((wallet, block, sum(int.from_bytes(r, "big") for _, r in results[i:i + 3])))
    return out


class CountingProxy(RpcProxy):
    """RpcProxy whose forwarder tracks concurrent sweep-sized (BATCH holders) aggregate3 reads and
    records every aggregate3 answer (`answers`: (wallet, block, total) per holder)."""

    def __init__(self, upstream):
        super().__init__(upstream)
        self.mu = threading.Lock()
        self.inflight = 0
        self.max_inflight = 0
        self.by_holders: Counter = Counter()
        self.answers: list[tuple[str, int, int]] = []
        self.unreadable: list[str] = []   # aggregate3 answers that were not a full set of reads
        forward = self._forward

        def recorded(body, headers):
            answer = forward(body, headers)
            try:
                got = node_answer(body, answer[2])
            except (ValueError, KeyError, IndexError, TypeError, AssertionError) as e:
                with self.mu:
                    self.unreadable.append(f"HTTP {answer[0]}: {e!r}: {answer[2][:200]!r}")
            else:
                with self.mu:
                    self.answers.extend(got)
            return answer

        def counted(body, headers):
            holders = None
            try:
                data = json.loads(body)["params"][0]["data"][2:]
                if data[:8] == "82ad56cb":
                    holders = (int(data[8 + 64:8 + 128], 16) - 1) // 3
            except (ValueError, KeyError, IndexError, TypeError):
                pass
            if holders is None:
                return forward(body, headers)
            if holders != BATCH:
                with self.mu:
                    self.by_holders[holders] += 1
                return recorded(body, headers)
            with self.mu:
                self.by_holders[holders] += 1
                self.inflight += 1
                self.max_inflight = max(self.max_inflight, self.inflight)
            try:
                answer = recorded(body, headers)
                time.sleep(0.03)   # the read is done: hold it, so that it lands after newer reads
                return answer
            finally:
                with self.mu:
                    self.inflight -= 1
        self._forward = counted


class Run:
    """Everything the 60 s run recorded."""

    def __init__(self):
        self.history: dict[str, list[tuple[int, int]]] = defaultdict(list)   # wallet -> [(block, token)]
        self.calls: list[tuple[str, float, float, tuple]] = []                # (app, t0, t1, counts)
        self.errors: list[tuple[str, str, str]] = []                          # (app, sqlstate, message)
        self.writes: list[tuple] = []
        self.mutations = 0
        self.proxy: CountingProxy | None = None
        self.final_ok: tuple | None = None
        self.log: str = ""
        self.seconds = 0.0


def set_tokens(anvil, contracts, ws, vals) -> int:
    args = enc_uint(64) + enc_uint(64 + 32 + 32 * len(ws)) + enc_address_array(ws) + enc_uint_array(vals)
    rcpt = anvil.transact(contracts.token, _calldata("MockAudioToken", "setMany(address[],uint256[])", args))
    return int(rcpt["blockNumber"], 16)


report = report_fixture("sweep_vs_event_path", "Concurrency: sweep vs event path, 60 s")


@pytest.fixture(scope="module")
def run(cluster, anvil, contracts, proxy) -> Run:
    ws = [wallet_address(i, "racing") for i in range(N_WALLETS)]
    R = Run()
    extension_db(cluster, DB, TRIGGER_SQL)  # never dropped: see extension_db
    rng = random.Random(3)
    contracts.set_values(ws, staked=[STAKED] * N_WALLETS, delegated=[DELEGATED] * N_WALLETS)
    init = [rng.randrange(1, 10**24) for _ in ws]
    b0 = set_tokens(anvil, contracts, ws, init)
    for w, v in zip(ws, init):
        R.history[w].append((b0, v))
    with cluster.connect(DB) as c:
        c.execute("INSERT INTO eth_wallet_balances (wallet, balance, blocknumber, updated_at) "
                  "SELECT w, 0, NULL, '1970-01-01' FROM unnest(%s::text[]) w", (ws,))
        c.execute("TRUNCATE public.racing_writes")
    p = CountingProxy(anvil.url).start()
    R.proxy = p
    mark = len(cluster.log_text())
    cluster.set_system(rpc_url=p.url_with(SECRET_PATH))
    stop = threading.Event()
    events: list[tuple[str, int]] = []        # (wallet, block) of recent changes
    ev_lock = threading.Lock()

    def mutator():
        r = random.Random(11)
        i = 0
        while not stop.is_set():
            pick = r.sample(ws, 5)
            vals = [r.randrange(0, 10**24) for _ in pick]
            try:
                b = set_tokens(anvil, contracts, pick, vals)
            except Exception as e:  # noqa: BLE001
                R.errors.append(("mutator", "", str(e)))
                return
            for w, v in zip(pick, vals):
                R.history[w].append((b, v))
            with ev_lock:
                events.extend((w, b) for w in pick)
                del events[:-50]
            R.mutations += 1
            i += 1
            if i % 3 == 0:
                anvil.mine(1)
            time.sleep(0.08)

    def session(app, body):
        def loop():
            r = random.Random(app)
            try:
                conn = cluster.connect(DB, application_name=app)
            except psycopg.Error as e:
                R.errors.append((app, e.sqlstate or "", str(e)))
                return
            with conn:
                while not stop.is_set():
                    sql, args = body(r)
                    t0 = time.monotonic()
                    try:
                        out = tuple(conn.execute(sql, args).fetchone())
                        R.calls.append((app, t0, time.monotonic(), out, len({w.lower() for w in args[0]}) if args else BATCH))
                    except psycopg.Error as e:
                        R.errors.append((app, e.sqlstate or "", error_text(e)[:300]))
                    time.sleep(r.random() * 0.01)
        return threading.Thread(target=loop, name=app, daemon=True)

    def stale(r):
        return f"SELECT * FROM audius_indexer.refresh_stale({BATCH})", ()

    def event(r):
        with ev_lock:
            recent = list(events[-20:])
        k = r.randrange(1, 9)
        if not recent:
            pick = [(w, None) for w in r.sample(ws, k)]
        else:
            pick = [r.choice(recent) for _ in range(k)]
            pick = [(w, None if r.random() < 0.2 else b) for w, b in pick]
        # case variations of the same wallet are one wallet; the largest min_block wins
        wl = [w.upper().replace("0X", "0x") if r.random() < 0.3 else w for w, _ in pick]
        return ("SELECT * FROM audius_indexer.refresh_wallets(%s, %s)", (wl, [b for _, b in pick]))

    threads = [threading.Thread(target=mutator, name="mutator", daemon=True),
               session("racing_stale_1", stale), session("racing_stale_2", stale),
               session("racing_event_1", event), session("racing_event_2", event)]
    t_start = time.monotonic()
    try:
        for t in threads:
            t.start()
        time.sleep(SECONDS)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        R.seconds = time.monotonic() - t_start
    try:
        # quiet chain: one last sweep over everything must converge on the chain's values
        with cluster.connect(DB) as c:
            R.writes = c.execute("SELECT op, wallet, old_block, new_block, old_balance, new_balance, app, xid, at "
                                 "FROM public.racing_writes ORDER BY id").fetchall()
            c.execute("UPDATE eth_wallet_balances SET updated_at = '1970-01-01'")
            final = tuple(c.execute(f"SELECT * FROM audius_indexer.refresh_stale({N_WALLETS})").fetchone())
            head = anvil.block_number()
            rows = c.execute("SELECT wallet, balance, blocknumber FROM eth_wallet_balances ORDER BY wallet").fetchall()
            want = {w: contracts.independent_total(w) for w in ws}
            R.final_ok = (final, head, rows, want)
    finally:
        restore_baseline(cluster)
        p.stop()
        R.log = cluster.log_text()[mark:]
    return R


def value_at(R: Run, wallet: str, block: int) -> int | None:
    best = None
    for b, v in R.history[wallet]:
        if b <= block and (best is None or b >= best[0]):
            best = (b, v)
    return None if best is None else best[1] + STAKED + DELEGATED


# ------------------------------------------------------------------------------------------------
def test_no_errors_no_deadlock(run, report):
    with report.case("no errors, no deadlock", f"4 sessions × {SECONDS:.0f} s + mutator",
                     "0 errors (no 40P01), no 'deadlock detected' in the log") as rec:
        by_app = Counter(a for a, *_ in run.calls)
        rec.observed = (f"{len(run.calls)} calls ({dict(by_app)}), {run.mutations} balance changes, "
                        f"{len(run.errors)} errors")
        assert not run.errors, run.errors[:5]
        assert "deadlock detected" not in run.log
        assert all(by_app[a] > 20 for a in ("racing_stale_1", "racing_stale_2", "racing_event_1", "racing_event_2")), by_app
        assert run.mutations > SECONDS * 3


def test_block_never_goes_down(run, report):
    with report.case("block never goes down", "every UPDATE of eth_wallet_balances (trigger log)",
                     "new blocknumber ≥ old blocknumber") as rec:
        ups = [w for w in run.writes if w[0] == "UPDATE"]
        bad = [w for w in ups if w[2] is not None and (w[3] is None or w[3] < w[2])]
        rec.observed = f"{len(run.writes)} writes ({len(ups)} updates), {len(bad)} regressions"
        assert len(ups) > 100
        assert not bad, bad[:5]


def test_every_write_is_the_chain_value_at_its_block(run, report):
    """A write's balance must be the chain's value at the block it is stamped with. What is known
    exactly is what the node answered: the proxy recorded every aggregate3 answer (block of its
    getBlockNumber() and each holder's total), so every write must be one of those answers, byte
    for byte. Each answer is then checked against the chain history: the value at its block, or
    (anvil, not the extension: while a block is being mined, an eth_call at "latest" can run on the
    new state with block.number still the previous block, so Multicall3's getBlockNumber() in the
    same eth_call lags by one) the value at the next block. No tolerance is left: the writes one
    block behind are exactly the writes of those answers. An older read winning over a newer value
    would show as a block going down (test_block_never_goes_down) or as a write that no answer
    explains (a value with another read's stamp)."""
    with report.case("no older read over a newer value", "every write: balance vs chain history at its block",
                     "every write = one of the node's answers (total and block of one aggregate3) = the chain's "
                     "value at that block; the only exception: answers anvil itself stamped one block late") as rec:
        def kind(w, b, total):
            if total == value_at(run, w, b):
                return "exact"
            if total == value_at(run, w, b + 1):
                return "late"
            return "wrong"

        answers = {}
        for a in run.proxy.answers:
            answers[a] = kind(*a)
        wrong_answers = [a for a, k in answers.items() if k == "wrong"]
        bad, unanswered, late = [], [], []
        same_block = 0
        for op, w, ob, nb, obal, nbal, app, xid, at in run.writes:
            if op == "UPDATE" and ob == nb:
                same_block += 1
            key = (w, nb, int(nbal))
            if key not in answers:
                unanswered.append((op, w, ob, nb, int(nbal), app))
            k = kind(*key)
            if k == "late":
                late.append(key)
            elif k == "wrong":
                near = {d: value_at(run, w, nb + d) for d in (-3, -2, -1, 1, 2, 3)}
                bad.append((op, w, ob, nb, int(nbal), value_at(run, w, nb), app,
                            f"matches block{[d for d, v in near.items() if v == int(nbal)]}"))
        late_answers = {a for a, k in answers.items() if k == "late"}
        guarded = sum(c[3][3] for c in run.calls if c[0].startswith("racing_stale"))
        rec.observed = (f"{len(run.writes)} writes checked, each one of the {len(answers)} distinct node answers; "
                        f"{same_block} at an unchanged block, {len(bad)} wrong; {len(late)} writes of the "
                        f"{len(late_answers)} answers anvil stamped one block late; {guarded} sweep reads not "
                        f"written because the row was newer")
        if bad or unanswered:
            dump = [list(map(str, b)) + [str(run.history[b[1]])] for b in bad + unanswered]
            (Path(__file__).resolve().parents[1] / ".build" / "suites" / "racing_bad_writes.json").write_text(json.dumps(dump, indent=1))
        assert not run.proxy.unreadable, run.proxy.unreadable[:3]
        assert not wrong_answers, f"the node answered values of no block at or after the stamp: {wrong_answers[:5]}"
        assert not unanswered, f"writes that are no answer of the node: {unanswered[:5]}"
        assert not bad, bad[:5]
        # each write one block behind is an answer anvil gave one block late, none other
        assert set(late) <= late_answers, set(late) - late_answers
        assert guarded > 0, "no sweep read was ever older than its row: the race was not exercised"


def test_single_flight(run, report):
    with report.case("single flight", "2 sessions looping refresh_stale(20)",
                     "never 2 sweep reads in flight; sweep reads = calls that did work; some calls found "
                     "the sweep busy") as rec:
        stale = [c for c in run.calls if c[0].startswith("racing_stale")]
        worked = [c for c in stale if c[3][0] > 0]
        busy = [c for c in stale if c[3] == (0, 0, 0, 0)]
        reads = run.proxy.by_holders[BATCH]
        overl = 0
        a = sorted((c[1], c[2]) for c in stale if c[0] == "racing_stale_1")
        b = sorted((c[1], c[2]) for c in stale if c[0] == "racing_stale_2")
        j = 0
        for s, e in a:
            while j < len(b) and b[j][1] < s:
                j += 1
            k = j
            while k < len(b) and b[k][0] < e:
                overl += 1
                k += 1
        rec.observed = (f"{len(stale)} calls: {len(worked)} did work, {len(busy)} found it busy; "
                        f"{overl} overlapping call pairs; {reads} sweep reads at the node; max in flight "
                        f"{run.proxy.max_inflight}")
        assert run.proxy.max_inflight == 1, "two sweep reads were in flight at once"
        assert reads == len(worked), "RPC reads ≠ calls that reported work (duplicate or hidden work)"
        assert all(c[3][0] == BATCH and sum(c[3][1:]) == BATCH for c in worked), \
            [c[3] for c in worked if c[3][0] != BATCH or sum(c[3][1:]) != BATCH][:5]
        assert len(stale) == len(worked) + len(busy)
        assert busy and overl > 0, "the two sweeps never overlapped: the run did not exercise single flight"


def test_event_path_accounting(run, report):
    with report.case("event path accounting", "2 sessions looping refresh_wallets(1–8 wallets, min_blocks)",
                     "one read per call; requested = distinct wallets = updated + skipped; 0 failed") as rec:
        ev = [c for c in run.calls if c[0].startswith("racing_event")]
        bad = [c for c in ev if c[3][0] != c[4] or c[3][2] != 0 or c[3][1] + c[3][3] != c[3][0]]
        reads = sum(n for h, n in run.proxy.by_holders.items() if 1 <= h <= 8)
        skipped = sum(c[3][3] for c in ev)
        rec.observed = f"{len(ev)} calls, {reads} reads at the node, {skipped} wallets skipped (newer row/older read)"
        assert not bad, bad[:5]
        assert reads == len(ev)


def test_converges(run, report):
    with report.case("converges", "after the run: one refresh_stale(40) on a quiet chain",
                     "all 40 rows = independent eth_calls, stamped with the head") as rec:
        final, head, rows, want = run.final_ok
        assert final == (N_WALLETS, N_WALLETS, 0, 0), final
        wrong = [(w, int(b), sum(want[w])) for w, b, bn in rows if int(b) != sum(want[w]) or bn != head]
        rec.observed = f"{final}; {len(rows) - len(wrong)}/{len(rows)} rows correct at block {head}"
        assert not wrong, wrong[:5]
