"""The Go services audius_indexer replaces, as they write (for tests/operations/test_cutover.py).

Written from the reference facts of the Audius api repository (what each statement does, not
the Go code), so that a test can run them beside, before and after the extension:

- `GoEthIndexer` — `eth/indexer/eth_indexer.go@38a0da4`:
  * backfill/live: checkpoint `audio_transfers` (0 = first boot: start at the head), head from
    `eth_blockNumber`, `eth_getLogs` of the AUDIO token's `Transfer` in chunks of 9,000 blocks,
    candidates `from`/`to` (logs with >= 3 topics) with the highest block per address,
    `filterTracked` (users ∪ associated_wallets, lowercased, no is_current, no eth_wallet_balances),
    `refreshAddresses`: balanceOf + totalStakedFor + getTotalDelegatorStake read at `latest` (here:
    three plain `eth_call`s to anvil; a holder with a failed read is skipped), then
    `upsertBalanceUpdates` — **no block check on the balance**: `balance = EXCLUDED.balance`,
    `blocknumber = GREATEST(...)` (NULL block keeps the old one), `updated_at = NOW()` — and
    `saveCheckpoint` = chunk end with `GREATEST`, `updated_at = NOW()`;
  * the stale sweep goroutine: `ORDER BY updated_at ASC LIMIT batch`, read, upsert with block 0
    (`NULLIF` → NULL → blocknumber kept).
  The live WS subscription is a poll of the same backfill (it writes the same rows).
- `GoChallengeJob` — `jobs/challenges/incremental.go@bf24992` + `user_event_challenges.go@a93cc8d`:
  per processor m, r, rv, rd in a transaction of its own: `LoadChallenge` (missing or inactive →
  nothing), `prev` from `indexing_checkpoints` (0 if absent), the dirty scan (`blocknumber > prev`,
  `ORDER BY blocknumber LIMIT 5000`), the recompute, `UpsertUserChallenge` row by row, the
  `highWaterMark` rule and `INSERT … ON CONFLICT (tablename) DO UPDATE SET last_checkpoint =
  EXCLUDED.last_checkpoint` only when it moves forward.

Both record what they committed (ranges, wallets with their log block, checkpoint writes with the
time after COMMIT) so a test can check continuity and attribute writes. Sessions carry
`application_name` 'go eth-indexer', 'go eth-indexer sweep', 'go challenge job'.
"""
from __future__ import annotations

import re
import threading
import time

import psycopg

from harness.challenges import PLAIN_UPSERT, PROCESSORS, dedupe_completions, first_seen, recompute_pairs
from harness.chain import Anvil, Contracts, keccak256

TRANSFER_TOPIC = "0x" + keccak256(b"Transfer(address,address,uint256)").hex()
CHECKPOINT_NAME = "audio_transfers"
BACKFILL_CHUNK_BLOCKS = 9000
DIRTY_SCAN_BATCH = 5000

LOAD_CHECKPOINT = "SELECT last_block FROM eth_indexer_checkpoints WHERE name = %s"
SAVE_CHECKPOINT = """
INSERT INTO eth_indexer_checkpoints (name, last_block, updated_at) VALUES (%s, %s, NOW())
ON CONFLICT (name) DO UPDATE SET last_block = GREATEST(eth_indexer_checkpoints.last_block, EXCLUDED.last_block),
                                 updated_at = NOW()
"""
FILTER_TRACKED = """
SELECT DISTINCT wallet FROM (
  SELECT LOWER(wallet) AS wallet FROM users WHERE LOWER(wallet) = ANY(%(addrs)s)
  UNION ALL
  SELECT LOWER(wallet) AS wallet FROM associated_wallets
   WHERE chain = 'eth' AND is_delete = FALSE AND LOWER(wallet) = ANY(%(addrs)s)
) t
"""
UPSERT_BALANCES = """
INSERT INTO eth_wallet_balances (wallet, balance, blocknumber, updated_at)
SELECT t.w, t.b::numeric, NULLIF(t.n, 0), NOW()
  FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS t(w, b, n)
ON CONFLICT (wallet) DO UPDATE SET
  balance = EXCLUDED.balance,
  blocknumber = CASE WHEN EXCLUDED.blocknumber IS NULL THEN eth_wallet_balances.blocknumber
                     ELSE GREATEST(COALESCE(eth_wallet_balances.blocknumber, 0), EXCLUDED.blocknumber) END,
  updated_at = NOW()
"""
STALE = "SELECT wallet FROM eth_wallet_balances ORDER BY updated_at ASC LIMIT %s"

CHALLENGE_CHECKPOINT = "challenges:{}:last_blocknumber"
READ_CHALLENGE_CHECKPOINT = "SELECT last_checkpoint FROM indexing_checkpoints WHERE tablename = %s"
WRITE_CHALLENGE_CHECKPOINT = ("INSERT INTO indexing_checkpoints (tablename, last_checkpoint) VALUES (%s, %s) "
                              "ON CONFLICT (tablename) DO UPDATE SET last_checkpoint = EXCLUDED.last_checkpoint")
DIRTY = {
    "m": "SELECT user_id, blocknumber FROM user_events WHERE blocknumber > %s AND is_current "
         "AND is_mobile_user = true ORDER BY blocknumber LIMIT %s",
    "ref": "SELECT user_id, blocknumber FROM user_events WHERE blocknumber > %s AND is_current "
           "AND referrer IS NOT NULL ORDER BY blocknumber LIMIT %s",
}


def amount_int(a: str | None) -> int:
    """Go `fmt.Sscanf(amount, "%d", &n)`: leading space, sign, digits; 0 on error."""
    m = re.match(r"\s*([+-]?\d+)", a or "")
    if not m:
        return 0
    v = int(m.group(1))
    return v if -(1 << 63) <= v < (1 << 63) else 0


def high_water_mark(prev: int, max_bn: int, scanned: int) -> int | None:
    cand = max_bn - 1 if (scanned >= DIRTY_SCAN_BATCH and max_bn - 1 > prev) else max_bn
    return cand if cand > prev else None


class _Loop:
    """A thread running `once()` every `interval` seconds until stop(); exceptions are kept."""

    def __init__(self, name: str, interval: float):
        self.name, self.interval = name, interval
        self.errors: list[str] = []
        self.iterations = 0
        self._stop = threading.Event()
        self._t: threading.Thread | None = None

    def start(self):
        self._stop.clear()
        self._t = threading.Thread(target=self._run, daemon=True, name=self.name)
        self._t.start()
        return self

    def stop(self) -> None:
        """Like `systemctl stop`: the loop finishes what it is doing and exits."""
        self._stop.set()
        if self._t is not None:
            self._t.join(60)
            assert not self._t.is_alive(), f"{self.name} did not stop"
            self._t = None

    @property
    def running(self) -> bool:
        return self._t is not None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.once()
            except Exception as e:  # noqa: BLE001 - recorded, the test asserts none
                self.errors.append(f"{type(e).__name__}: {e}")
                self.reset()
            self.iterations += 1
            self._stop.wait(self.interval)

    def once(self) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        pass


class GoEthIndexer:
    """The Go eth-indexer: an event loop (backfill/live) and a stale-sweep loop, each with a session
    of its own, both reading balances from `anvil` directly (not through the extension's proxy)."""

    def __init__(self, conninfo: str, anvil: Anvil, contracts: Contracts, poll: float = 0.1,
                 sweep_interval: float = 2.0, sweep_batch: int = 50):
        self.conninfo, self.anvil, self.contracts = conninfo, anvil, contracts
        self.ranges: list[tuple[int, int, float]] = []              # (from, to, t after commit)
        self.event_writes: list[tuple[str, int, float]] = []        # (wallet, log block, t after commit)
        self.checkpoint_writes: list[tuple[float, int, int]] = []   # (t after commit, before, after)
        self.sweep_writes = 0
        self.sweep_batch = sweep_batch
        outer = self

        class Events(_Loop):
            conn = None

            def once(self):
                if self.conn is None:
                    self.conn = psycopg.connect(outer.conninfo, autocommit=True,
                                                application_name="go eth-indexer")
                outer._backfill(self.conn)

            def reset(self):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None

        class Sweep(_Loop):
            conn = None

            def once(self):
                if self.conn is None:
                    self.conn = psycopg.connect(outer.conninfo, autocommit=True,
                                                application_name="go eth-indexer sweep")
                outer._sweep(self.conn, outer.sweep_batch)

            def reset(self):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None

        self.events = Events("go-eth-indexer", poll)
        self.sweep = Sweep("go-eth-indexer-sweep", sweep_interval)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "GoEthIndexer":
        self.events.start()
        self.sweep.start()
        return self

    def stop(self) -> None:
        self.events.stop()
        self.sweep.stop()
        for loop in (self.events, self.sweep):
            loop.reset()

    @property
    def errors(self) -> list[str]:
        return self.events.errors + self.sweep.errors

    # -- what it does ----------------------------------------------------------------------
    def _read_totals(self, wallets: list[str]) -> dict[str, int]:
        """refreshAddresses' read: the three values at latest; a holder with a failed read is left out."""
        out = {}
        for w in wallets:
            parts = self.contracts.independent_total(w)
            if None not in parts:
                out[w] = sum(parts)
        return out

    def _upsert(self, conn, totals: dict[str, int], blocks: dict[str, int]) -> None:
        ws = sorted(totals)
        if ws:
            conn.execute(UPSERT_BALANCES, (ws, [str(totals[w]) for w in ws], [blocks.get(w, 0) for w in ws]))

    def _backfill(self, conn) -> None:
        head = self.anvil.block_number()
        row = conn.execute(LOAD_CHECKPOINT, (CHECKPOINT_NAME,)).fetchone()
        cp = row[0] if row and row[0] > 0 else 0
        if cp == 0:  # first boot: from the head, nothing replayed
            self._save(conn, head)
            return
        start = cp
        while start < head:
            a, b = start + 1, min(start + BACKFILL_CHUNK_BLOCKS, head)
            logs = self.anvil.rpc("eth_getLogs", [{"address": self.contracts.token, "topics": [TRANSFER_TOPIC],
                                                   "fromBlock": hex(a), "toBlock": hex(b)}])
            cand: dict[str, int] = {}
            for lg in logs:
                topics = lg.get("topics") or []
                if len(topics) < 3:
                    continue
                blk = int(lg["blockNumber"], 16)
                for t in topics[1:3]:
                    addr = "0x" + t[-40:].lower()
                    cand[addr] = max(cand.get(addr, 0), blk)
            if cand:
                tracked = [r[0] for r in conn.execute(FILTER_TRACKED, {"addrs": sorted(cand)}).fetchall()]
                totals = self._read_totals(tracked)
                self._upsert(conn, totals, cand)
                t = time.time()
                self.event_writes += [(w, cand[w], t) for w in totals]
            self._save(conn, b)
            self.ranges.append((a, b, time.time()))
            start = b

    def _save(self, conn, block: int) -> None:
        before = conn.execute(LOAD_CHECKPOINT, (CHECKPOINT_NAME,)).fetchone()
        conn.execute(SAVE_CHECKPOINT, (CHECKPOINT_NAME, block))
        self.checkpoint_writes.append((time.time(), before[0] if before else None, block))

    def _sweep(self, conn, batch: int) -> None:
        wallets = [r[0] for r in conn.execute(STALE, (batch,)).fetchall()]
        totals = self._read_totals(wallets)
        self._upsert(conn, totals, {})
        self.sweep_writes += len(totals)


class GoChallengeJob(_Loop):
    """The Go challenge job's processors (m, r, rv, rd; `jobs/index_challenges.go`), one run every
    `interval` seconds."""

    def __init__(self, conninfo: str, interval: float = 0.3):
        super().__init__("go-challenge-job", interval)
        self.conninfo = conninfo
        self.conn = None
        # (t after commit, processor, checkpoint before, checkpoint written or None)
        self.runs: list[tuple[float, str, int, int | None]] = []
        self.upserts: list[tuple[float, str, str]] = []   # (t after commit, challenge, specifier)

    def once(self) -> None:
        if self.conn is None:
            self.conn = psycopg.connect(self.conninfo, autocommit=True, application_name="go challenge job")
        for p in PROCESSORS:
            with self.conn.transaction():
                prev, new, specs = self._process(p)
            t = time.time()
            if prev is not None:
                self.runs.append((t, p, prev, new))
                self.upserts += [(t, p, s) for s in specs]

    def reset(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None

    def stop(self) -> None:
        super().stop()
        self.reset()

    def _process(self, p: str):
        conn = self.conn
        row = conn.execute("SELECT active, amount FROM challenges WHERE id = %s", (p,)).fetchone()
        if row is None or not row[0]:
            return None, None, []
        amount = amount_int(row[1])
        key = CHALLENGE_CHECKPOINT.format(p)
        r = conn.execute(READ_CHALLENGE_CHECKPOINT, (key,)).fetchone()
        prev = r[0] if r else 0
        rows = conn.execute(DIRTY["m" if p == "m" else "ref"], (prev, DIRTY_SCAN_BATCH)).fetchall()
        if not rows:
            return prev, None, []
        users = first_seen(u for u, _ in rows)
        specs = []
        for recipient, spec in dedupe_completions(p, recompute_pairs(conn, p, users)):
            conn.execute(PLAIN_UPSERT, (p, recipient, spec, amount))
            specs.append(spec)
        new = high_water_mark(prev, max(b for _, b in rows), len(rows))
        if new is not None:
            conn.execute(WRITE_CHALLENGE_CHECKPOINT, (key, new))
        return prev, new, specs


class GoServices:
    """Both Go services, started and stopped together (the cutover stops both)."""

    def __init__(self, conninfo: str, anvil: Anvil, contracts: Contracts):
        self.eth = GoEthIndexer(conninfo, anvil, contracts)
        self.challenges = GoChallengeJob(conninfo)

    def start(self) -> "GoServices":
        self.eth.start()
        self.challenges.start()
        return self

    def stop(self) -> None:
        self.eth.stop()
        self.challenges.stop()

    @property
    def errors(self) -> list[str]:
        return self.eth.errors + self.challenges.errors
