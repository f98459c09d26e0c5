"""Helpers for tests/challenges/test_challenges.py (the challenge processors m, r, rv, rd that replace the Go
challenge job, `jobs/index_challenges.go`).

- Audius-like databases without anvil: fixture schema, the extension, the Rust triggers
  (install_triggers()), sql/indexes.sql, plus the test's own reference objects:
  `ref_spec()` (Go `%x` of an int), `ref_amount_int()` (Go `Sscanf("%d")`, 0 on error) and the
  reference table `ref_user_challenges`;
- the reference: a plain SQL full scan over ALL user_events with the Go job's derivation and
  upsert rules (`apply_full_scan_reference`);
- an emulation of the Go challenge job (`GoJobEmulator`): checkpoint-only resume, its `highWaterMark`
  rule, no users scan — used to show where the improvements matter;
- a deterministic random stream of block-ordered operations (`ChallengeStream`);
- comparison helpers.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import random

import psycopg

from harness.triggers import INDEXES_SQL, Notices, create_audius_db

PROCESSORS = ("m", "r", "rv", "rd")

PROCESS = "SELECT * FROM audius_indexer.process_user_event_challenges(%s)"
OUTCOME_COLS = ("challenge_id", "dirty_rows", "users", "upserts", "checkpoint_before", "checkpoint_after", "error")

REFERENCE_OBJECTS_SQL = r"""
-- Go's fmt %x of an int: lowercase hex, no 0x, no padding, a sign for negative values.
-- (Not STRICT, so that the planner inlines it: the full scan calls it for every row.)
CREATE FUNCTION public.ref_spec(id integer) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT CASE WHEN id < 0 THEN '-' || to_hex(-(id::bigint)) ELSE to_hex(id) END $$;

-- Go's fmt.Sscanf(amount, "%d", &n) into an int (64 bit), 0 on error.
CREATE FUNCTION public.ref_amount_int(a text) RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  m text[];
BEGIN
  m := regexp_match(COALESCE(a, ''), '^[ \t\r\n]*([+-]?[0-9]+)');
  IF m IS NULL THEN
    RETURN 0;
  END IF;
  RETURN m[1]::bigint;
EXCEPTION WHEN numeric_value_out_of_range THEN
  RETURN 0;
END
$$;

-- The reference's own user_challenges (same columns; sync_no: the sync point that inserted the row).
CREATE TABLE public.ref_user_challenges (LIKE public.user_challenges INCLUDING DEFAULTS INCLUDING CONSTRAINTS
                                         INCLUDING INDEXES);
ALTER TABLE public.ref_user_challenges ADD COLUMN sync_no integer;
"""

# (recipient, specifier) of every pair that qualifies now, per challenge: the Go job's rules applied to
# ALL current user_events rows (no checkpoint, no dirty set).
REFERENCE_PAIRS = {
    "m": "SELECT DISTINCT ue.user_id AS recipient, ref_spec(ue.user_id) AS specifier "
         "FROM user_events ue WHERE ue.is_current AND ue.is_mobile_user = true",
    "r": "SELECT ue.referrer AS recipient, ref_spec(ue.referrer) || ':' || ref_spec(ue.user_id) AS specifier "
         "FROM user_events ue WHERE ue.is_current AND ue.referrer IS NOT NULL "
         "AND EXISTS (SELECT 1 FROM users u WHERE u.user_id = ue.referrer AND u.is_current "
         "AND COALESCE(u.is_verified, false) = false)",
    "rv": "SELECT ue.referrer AS recipient, ref_spec(ue.referrer) || ':' || ref_spec(ue.user_id) AS specifier "
          "FROM user_events ue WHERE ue.is_current AND ue.referrer IS NOT NULL "
          "AND EXISTS (SELECT 1 FROM users u WHERE u.user_id = ue.referrer AND u.is_current "
          "AND COALESCE(u.is_verified, false) = true)",
    "rd": "SELECT ue.user_id AS recipient, ref_spec(ue.user_id) || ':' || ref_spec(ue.referrer) AS specifier "
          "FROM user_events ue WHERE ue.is_current AND ue.referrer IS NOT NULL",
}

# The ON CONFLICT clause of Audius's UpsertUserChallenge (user_challenges aliased uc).
UPSERT_CONFLICT = """ON CONFLICT (challenge_id, specifier) DO UPDATE SET
  current_step_count = EXCLUDED.current_step_count,
  is_complete = uc.is_complete OR EXCLUDED.is_complete,
  amount = CASE WHEN uc.is_complete THEN uc.amount ELSE EXCLUDED.amount END,
  completed_at = CASE WHEN uc.is_complete THEN uc.completed_at
                      WHEN EXCLUDED.is_complete THEN EXCLUDED.completed_at
                      ELSE uc.completed_at END
"""

# UpsertUserChallenge (step 1 of 1: complete at once) into `table`. The NOT EXISTS only leaves out
# pairs whose row is already complete at step 1 -- for them the upsert changes nothing -- so the
# result is that of applying the upsert to every pair (it just saves the no-op updates).
UPSERT_TEMPLATE = """
INSERT INTO {table} AS uc (challenge_id, user_id, specifier, is_complete, current_step_count, amount,
                           created_at, completed_at{extra_cols})
SELECT c.id, q.recipient, q.specifier, (1 >= 1), 1, ref_amount_int(c.amount)::integer, now(),
       CASE WHEN (1 >= 1) THEN now() END{extra_vals}
  FROM (SELECT p.specifier, min(p.recipient) AS recipient FROM ({pairs}) p GROUP BY p.specifier) q
  JOIN challenges c ON c.id = %(cid)s AND c.active
 WHERE NOT EXISTS (SELECT 1 FROM {table} o WHERE o.challenge_id = c.id AND o.specifier = q.specifier
                      AND o.is_complete AND o.current_step_count IS NOT DISTINCT FROM 1)
""" + UPSERT_CONFLICT

# One plain UpsertUserChallenge statement for one row (test 4: what the Go job sent, row by row).
PLAIN_UPSERT = """
INSERT INTO user_challenges AS uc (challenge_id, user_id, specifier, is_complete, current_step_count, amount,
                                   created_at, completed_at)
VALUES (%s, %s, %s, true, 1, %s, now(), now())
""" + UPSERT_CONFLICT

# Rows of m/r/rv/rd that differ in any column (created_at / completed_at: NULL or not), by key.
COMPARE_SQL = """
WITH a AS (SELECT challenge_id::text AS cid, specifier::text AS spec,
                  ROW(user_id, is_complete, current_step_count, completed_blocknumber, amount,
                      created_at IS NULL, completed_at IS NULL)::text AS v
             FROM {ext} WHERE challenge_id IN ('m', 'r', 'rv', 'rd')),
     b AS (SELECT challenge_id::text AS cid, specifier::text AS spec,
                  ROW(user_id, is_complete, current_step_count, completed_blocknumber, amount,
                      created_at IS NULL, completed_at IS NULL)::text AS v
             FROM {ref} WHERE challenge_id IN ('m', 'r', 'rv', 'rd'))
SELECT COALESCE(a.cid, b.cid), COALESCE(a.spec, b.spec), a.v AS {ext}, b.v AS {ref}
  FROM a FULL JOIN b ON a.cid = b.cid AND a.spec = b.spec
 WHERE a.v IS DISTINCT FROM b.v
 ORDER BY 1, 2 LIMIT 40
"""


# ------------------------------------------------------------------------------------------------
# databases
# ------------------------------------------------------------------------------------------------
def make_db(cluster, name: str) -> None:
    """An Audius-like database: fixture schema (m/r/rv/rd active, amount '1', cooldown 7), the
    extension with the Rust on_user_challenge trigger, sql/indexes.sql, the reference objects."""
    create_audius_db(cluster, name, triggers="rust", trace=False, extra_challenges=False)
    cluster.psql("-q", "-f", str(INDEXES_SQL), dbname=name)
    with cluster.connect(name) as conn:
        conn.execute(REFERENCE_OBJECTS_SQL)
        tg = conn.execute("SELECT tgfoid::regprocedure::text FROM pg_trigger "
                          "WHERE tgname = 'on_user_challenge' AND NOT tgisinternal").fetchall()
        assert tg == [("audius_indexer.handle_on_user_challenge()",)], tg


def run_once(conn: psycopg.Connection, batch: int) -> list[dict]:
    rows = conn.execute(PROCESS, (batch,)).fetchall()
    out = [dict(zip(OUTCOME_COLS, r)) for r in rows]
    assert [o["challenge_id"] for o in out] == list(PROCESSORS), out
    return out


def checkpoints(conn: psycopg.Connection) -> dict[str, int | None]:
    rows = dict(conn.execute(
        "SELECT tablename, last_checkpoint FROM indexing_checkpoints WHERE tablename LIKE 'challenges:%'").fetchall())
    return {p: rows.get(f"challenges:{p}:last_blocknumber") for p in PROCESSORS}


def set_checkpoint(conn: psycopg.Connection, p: str, value: int) -> None:
    conn.execute("INSERT INTO indexing_checkpoints (tablename, last_checkpoint) VALUES (%s, %s) "
                 "ON CONFLICT (tablename) DO UPDATE SET last_checkpoint = EXCLUDED.last_checkpoint",
                 (f"challenges:{p}:last_blocknumber", value))


def positions(conn: psycopg.Connection) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in conn.execute(
        "SELECT challenge_id, ue_block, ue_id, ue_checkpoint, users_block, users_user_id, users_txhash "
        "FROM audius_indexer.challenge_processor_state").fetchall()}


def uc_rows(conn: psycopg.Connection, table: str = "user_challenges") -> list[tuple]:
    """The compared columns of m/r/rv/rd rows (timestamps as NULL / non-NULL)."""
    return conn.execute(
        f"SELECT challenge_id::text, user_id, specifier::text, is_complete, current_step_count, "
        f"completed_blocknumber, amount, created_at IS NULL, completed_at IS NULL FROM {table} "
        f"WHERE challenge_id IN ('m', 'r', 'rv', 'rd') ORDER BY 1, 3").fetchall()


def keys(conn: psycopg.Connection, table: str = "user_challenges") -> set[tuple[str, str]]:
    return {(c, s) for c, s in conn.execute(
        f"SELECT challenge_id::text, specifier::text FROM {table} WHERE challenge_id IN ('m', 'r', 'rv', 'rd')")}


def apply_full_scan_reference(conn: psycopg.Connection, sync_no: int | None = None,
                              table: str = "ref_user_challenges") -> None:
    """The reference: every pair that qualifies now over ALL user_events, upserted into `table`
    for every challenge that is active now (inactive or missing: skipped), in one transaction."""
    extra = table == "ref_user_challenges"
    with conn.transaction():
        conn.execute("SET LOCAL jit = off")      # (the test's own statements: no JIT compile per sync)
        for cid in PROCESSORS:
            conn.execute(UPSERT_TEMPLATE.format(table=table, pairs=REFERENCE_PAIRS[cid],
                                                extra_cols=", sync_no" if extra else "",
                                                extra_vals=", %(sync)s" if extra else ""),
                         {"cid": cid, "sync": sync_no})


def compare(conn: psycopg.Connection, ext: str = "user_challenges", ref: str = "ref_user_challenges") -> list[tuple]:
    return conn.execute(COMPARE_SQL.format(ext=ext, ref=ref)).fetchall()


def warnings_of(notices: Notices) -> list[tuple[str, str]]:
    return [n for n in notices.take() if n[0] not in ("NOTICE", "DEBUG", "LOG", "INFO")]


# ------------------------------------------------------------------------------------------------
# the Go challenge job, emulated (jobs/challenges/incremental.go + user_event_challenges.go, as it runs)
# ------------------------------------------------------------------------------------------------
GO_JOB_DIRTY = {
    "m": "SELECT ue.id, ue.user_id, ue.blocknumber FROM user_events ue WHERE ue.blocknumber > %s "
         "AND ue.is_current AND ue.is_mobile_user = true ORDER BY ue.blocknumber, ue.id LIMIT %s",
    "ref": "SELECT ue.id, ue.user_id, ue.blocknumber FROM user_events ue WHERE ue.blocknumber > %s "
           "AND ue.is_current AND ue.referrer IS NOT NULL ORDER BY ue.blocknumber, ue.id LIMIT %s",
}


def go_high_water(prev: int, max_bn: int, scanned: int, batch: int) -> int | None:
    """The Go job's highWaterMark: maxBn-1 after a full batch if that moves forward, else maxBn;
    written only when it is past `prev`."""
    cand = max_bn - 1 if (scanned >= batch and max_bn - 1 > prev) else max_bn
    return cand if cand > prev else None


def recompute_pairs(conn: psycopg.Connection, p: str, user_ids: list[int]) -> list[tuple[int, int]]:
    """The Go job's recompute for dirty users, in first-seen order then user_events id: (user, referrer)."""
    if not user_ids:
        return []
    if p == "m":
        return [(u, 0) for (u,) in conn.execute(
            "SELECT d.uid FROM unnest(%s::integer[]) WITH ORDINALITY AS d(uid, ord) WHERE EXISTS "
            "(SELECT 1 FROM user_events ue WHERE ue.user_id = d.uid AND ue.is_current AND ue.is_mobile_user = true) "
            "ORDER BY d.ord", (user_ids,))]
    verified_filter = ""
    params: tuple = (user_ids,)
    if p in ("r", "rv"):
        verified_filter = ("AND EXISTS (SELECT 1 FROM users u WHERE u.user_id = ue.referrer AND u.is_current "
                           "AND COALESCE(u.is_verified, false) = %s)")
        params = (user_ids, p == "rv")
    return [tuple(r) for r in conn.execute(
        "SELECT ue.user_id, ue.referrer FROM unnest(%s::integer[]) WITH ORDINALITY AS d(uid, ord) "
        "JOIN user_events ue ON ue.user_id = d.uid AND ue.is_current AND ue.referrer IS NOT NULL "
        f"WHERE true {verified_filter} ORDER BY d.ord, ue.id", params)]


def pairs_by_referrer(conn: psycopg.Connection, p: str, referrers: list[int]) -> list[tuple[int, int]]:
    """The users-scan re-derivation of r/rv: every current pair of these referrers, by verification."""
    if not referrers:
        return []
    return [tuple(r) for r in conn.execute(
        "SELECT ue.user_id, ue.referrer FROM unnest(%s::integer[]) WITH ORDINALITY AS d(rid, ord) "
        "JOIN user_events ue ON ue.referrer = d.rid AND ue.is_current AND ue.referrer IS NOT NULL "
        "WHERE EXISTS (SELECT 1 FROM users u WHERE u.user_id = ue.referrer AND u.is_current "
        "AND COALESCE(u.is_verified, false) = %s) ORDER BY d.ord, ue.id", (referrers, p == "rv"))]


def spec(i: int) -> str:
    return f"-{-i:x}" if i < 0 else f"{i:x}"


def completion(p: str, user: int, referrer: int) -> tuple[int, str]:
    if p == "m":
        return user, spec(user)
    if p in ("r", "rv"):
        return referrer, f"{spec(referrer)}:{spec(user)}"
    return user, f"{spec(user)}:{spec(referrer)}"


def first_seen(values) -> list:
    seen, out = set(), []
    for v in values:
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


def dedupe_completions(p: str, pairs: list[tuple[int, int]]) -> list[tuple[int, str]]:
    seen, out = set(), []
    for u, r in pairs:
        rec, sp = completion(p, u, r)
        if sp not in seen:
            seen.add(sp)
            out.append((rec, sp))
    return out


class GoJobEmulator:
    """The Go challenge job: per processor a checkpoint (kept here, not in the database), a dirty
    scan of user_events rows with blocknumber > checkpoint (LIMIT batch), the recompute, the upsert
    into `table`, its highWaterMark rule. No positions, no users scan."""

    def __init__(self, conn: psycopg.Connection, table: str = "go_job_user_challenges"):
        self.conn = conn
        self.table = table
        self.cp = {p: 0 for p in PROCESSORS}
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (LIKE user_challenges INCLUDING DEFAULTS "
                     f"INCLUDING CONSTRAINTS INCLUDING INDEXES)")

    def run(self, batch: int) -> dict[str, int]:
        """One run of the four; returns the dirty rows scanned per processor."""
        scanned = {}
        with self.conn.transaction():
            for p in PROCESSORS:
                active, amount = self.conn.execute(
                    "SELECT c.active, ref_amount_int(c.amount) FROM challenges c WHERE c.id = %s", (p,)
                ).fetchone() or (False, 0)
                if not active:
                    scanned[p] = 0
                    continue
                rows = self.conn.execute(GO_JOB_DIRTY["m" if p == "m" else "ref"], (self.cp[p], batch)).fetchall()
                scanned[p] = len(rows)
                if not rows:
                    continue
                users = first_seen(r[1] for r in rows)
                for rec, sp in dedupe_completions(p, recompute_pairs(self.conn, p, users)):
                    self.conn.execute(PLAIN_UPSERT.replace("user_challenges", self.table), (p, rec, sp, amount))
                new = go_high_water(self.cp[p], max(r[2] for r in rows), len(rows), batch)
                if new is not None:
                    self.cp[p] = new
        return scanned

    def converge(self, batch: int, limit: int = 1000) -> int:
        for i in range(1, limit + 1):
            if not any(self.run(batch).values()):
                return i
        raise AssertionError("the Go job emulation did not converge")


# ------------------------------------------------------------------------------------------------
# the random stream
# ------------------------------------------------------------------------------------------------
UE_INSERT = ("INSERT INTO user_events (blockhash, blocknumber, is_current, user_id, referrer, is_mobile_user, slot) "
             "VALUES (%s, %s, true, %s, %s, %s, %s) RETURNING id")
UE_RETIRE = "UPDATE user_events SET is_current = false WHERE user_id = %s AND is_current AND id <> %s"
USERS_INSERT = ("INSERT INTO users (user_id, wallet, is_current, created_at, is_verified, txhash, blocknumber) "
                "VALUES (%s, %s, true, localtimestamp, %s, %s, %s)")
USERS_RETIRE = "UPDATE users SET is_current = false WHERE user_id = %s AND is_current"
USERS_UPDATE = "UPDATE users SET is_verified = %s, blocknumber = %s WHERE user_id = %s AND is_current"

AMOUNTS = ["1", "5", "25", "100", "7abc", "abc", "+3", "-2", " 12", "0", "1.5", "99999999999999999999", ""]


@dataclasses.dataclass
class Op:
    kind: str                  # ue_new | supersede | users_new | users_update | users_replace | catalog_*
    args: tuple


@dataclasses.dataclass
class Block:
    number: int
    ops: list[Op]
    crowded: bool = False      # generated to hold more qualifying rows than one batch


@dataclasses.dataclass
class Admin:
    op: Op


@dataclasses.dataclass
class Sync:
    pass


class ChallengeStream:
    """A deterministic stream of blocks (in increasing block order, each applied atomically),
    catalog changes between blocks, and sync points (only between blocks: Audius commits a block
    at once, so a run never sees half a block)."""

    def __init__(self, seed: int, ops: int, batch: int, crowded_blocks: int = 6):
        self.rng = rng = random.Random(seed)
        self.batch = batch
        self.items: list = []
        self.counts: dict[str, int] = {}
        self.ordinary_ops = 0
        self.crowded_rows = 0
        self.block = 1000 + rng.randint(0, 50)
        self.ue: dict[int, tuple[bool, int | None]] = {}     # user -> (mobile, referrer) of the current row
        self.users: dict[int, list] = {}                     # user -> [verified, rows]
        self.active = {p: True for p in PROCESSORS}
        ids = itertools.count(1)
        self._ids = ids
        self.referrers: list[int] = []
        self.ue_list: list[int] = []
        crowded_at = sorted(rng.sample(range(ops // 10, ops - 50), crowded_blocks))
        next_sync = rng.randint(5, 40)
        pending: list[Op] = []
        while self.ordinary_ops < ops:
            if crowded_at and self.ordinary_ops >= crowded_at[0]:
                crowded_at.pop(0)
                self._flush(pending)
                self._crowded_block()
                continue
            r = rng.random()
            if r < 0.025:
                self._flush(pending)
                self.items.append(Admin(self._catalog_op()))
                self.ordinary_ops += 1
            else:
                pending.extend(self._block_op(r))
                self.ordinary_ops += 1
                if len(pending) >= rng.choice([1, 1, 1, 2, 2, 3, 5]):
                    self._flush(pending)
            if self.ordinary_ops >= next_sync:
                self._flush(pending)
                self.items.append(Sync())
                next_sync = self.ordinary_ops + rng.randint(5, 40)
        self._flush(pending)
        # end with every challenge active again, then a last sync
        for p in PROCESSORS:
            if not self.active[p]:
                self.items.append(Admin(Op("catalog_active", (p, True))))
                self.active[p] = True
        self.items.append(Sync())

    def _count(self, kind: str, n: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + n

    def _flush(self, pending: list[Op]) -> None:
        if pending:
            self.block += self.rng.choice([1, 1, 1, 2, 3, 17])
            self.items.append(Block(self.block, list(pending)))
            pending.clear()

    def _new_user_id(self) -> int:
        n = next(self._ids)
        r = self.rng.random()
        if r < 0.01:
            return -n                                   # Go %x keeps the sign: "-1f"
        if r < 0.03:
            return 2_147_483_647 - n                    # near i32 max
        return 100 + n

    def _pick_referrer(self) -> int | None:
        rng = self.rng
        r = rng.random()
        if r < 0.45 and self.referrers:
            return rng.choice(self.referrers[-60:] if rng.random() < 0.5 else self.referrers)
        if r < 0.80 and self.users:
            u = rng.choice(list(self.users))
            self.referrers.append(u)
            return u
        if r < 0.90:
            u = 900_000 + rng.randint(0, 200)          # may never get a users row, or get one later
            self.referrers.append(u)
            return u
        if r < 0.95 and self.ue_list:
            return rng.choice(self.ue_list)           # a user without necessarily a users row
        return None

    def _block_op(self, r: float) -> list[Op]:
        rng = self.rng
        if r < 0.35 or not self.ue:
            uid = self._new_user_id()
            mobile = rng.random() < 0.4
            referrer = self._pick_referrer() if rng.random() < 0.65 else None
            if referrer is not None and rng.random() < 0.03:
                referrer = uid                         # self-referral
            self.ue[uid] = (mobile, referrer)
            self.ue_list.append(uid)
            self._count("ue_new")
            ops = [Op("ue_new", (uid, referrer, mobile))]
            if rng.random() < 0.6 and uid not in self.users:
                v = rng.random() < 0.2
                self.users[uid] = [v, 1]
                ops.append(Op("users_new", (uid, v, 1)))
                self._count("users_new")
            return ops
        if r < 0.55:
            uid = rng.choice(self.ue_list)
            mobile, referrer = self.ue[uid]
            mobile = rng.random() < 0.45
            x = rng.random()
            if x < 0.3:
                referrer = None
            elif x < 0.6:
                referrer = self._pick_referrer()
            self.ue[uid] = (mobile, referrer)
            self._count("supersede")
            return [Op("supersede", (uid, referrer, mobile))]
        if r < 0.88 and self.users:
            pool = [u for u in self.referrers[-80:] if u in self.users] if rng.random() < 0.7 else []
            uid = rng.choice(pool or list(self.users))
            st = self.users[uid]
            v = (not st[0]) if rng.random() < 0.8 else st[0]
            if v != st[0]:
                self._count("verification_flip")
            st[0] = v
            if rng.random() < 0.5:
                self._count("users_update")
                return [Op("users_update", (uid, v))]
            st[1] += 1
            self._count("users_replace")
            return [Op("users_replace", (uid, v, st[1]))]
        # a users row for someone referred to (or with user_events) that has none yet
        cands = [u for u in set(self.referrers[-300:]) | set(self.ue_list[-300:]) if u not in self.users]
        if not cands:
            return self._block_op(0.0)
        uid = rng.choice(sorted(cands))
        v = rng.random() < 0.4
        self.users[uid] = [v, 1]
        self._count("users_new")
        return [Op("users_new", (uid, v, 1))]

    def _catalog_op(self) -> Op:
        rng = self.rng
        inactive = [p for p in PROCESSORS if not self.active[p]]
        x = rng.random()
        if inactive and x < 0.6:
            p = rng.choice(inactive)
            self.active[p] = True
            self._count("catalog_reactivate")
            return Op("catalog_active", (p, True))
        if x < 0.75 and not inactive:
            p = rng.choice([q for q in PROCESSORS if self.active[q]])
            self.active[p] = False
            self._count("catalog_deactivate")
            return Op("catalog_active", (p, False))
        p = rng.choice(PROCESSORS)
        self._count("catalog_amount")
        return Op("catalog_amount", (p, rng.choice(AMOUNTS)))

    def _crowded_block(self) -> None:
        """One block with more current rows than one batch: alternately mobile rows (m) and rows
        with a referrer (r, rv, rd)."""
        rng = self.rng
        n = self.batch + rng.randint(15, 40)
        mobile = self.counts.get("crowded_block", 0) % 2 == 0
        refs = list(self.users)[-200:] or [None]
        rows = []
        for k in range(n):
            uid = self._new_user_id()
            # mostly a referrer without users row (rd only), some with one (r / rv as well), spread
            # out so that no referrer collects thousands of referrals (its trigger work would be quadratic)
            if mobile:
                ref = rng.choice(refs) if rng.random() < 0.02 else None
            else:
                ref = rng.choice(refs) if rng.random() < 0.05 else 800_000_000 + self.block * 10 + k % 7
            self.ue[uid] = (mobile, ref)
            self.ue_list.append(uid)
            rows.append((uid, ref, mobile))
        self.block += 1
        self.items.append(Block(self.block, [Op("ue_bulk", (rows,))], crowded=True))
        self.crowded_rows += n
        self._count("crowded_block")
        # and, for small batches, a block with more users rows than one batch (the users scan's tiebreak)
        if self.batch <= 100:
            cands = list(self.users)
            rng.shuffle(cands)
            ops = []
            for uid in cands[: self.batch + rng.randint(1, 20)]:
                st = self.users[uid]
                st[0] = not st[0]
                self._count("verification_flip")
                if rng.random() < 0.5:
                    ops.append(Op("users_update", (uid, st[0])))
                else:
                    st[1] += 1
                    ops.append(Op("users_replace", (uid, st[0], st[1])))
            if len(ops) > self.batch:
                self.block += 1
                self.items.append(Block(self.block, ops, crowded=True))
                self._count("crowded_users_block")


def apply_block(conn: psycopg.Connection, b: Block) -> None:
    """One block, atomically."""
    bn = b.number
    with conn.transaction():
        for op in b.ops:
            k, a = op.kind, op.args
            if k == "ue_new":
                uid, ref, mobile = a
                conn.execute(UE_INSERT, (f"0x{bn:x}", bn, uid, ref, mobile, bn * 2))
            elif k == "supersede":
                uid, ref, mobile = a
                (new_id,) = conn.execute(UE_INSERT, (f"0x{bn:x}", bn, uid, ref, mobile, bn * 2)).fetchone()
                conn.execute(UE_RETIRE, (uid, new_id))
            elif k == "ue_bulk":
                (rows,) = a
                conn.execute(
                    "INSERT INTO user_events (blockhash, blocknumber, is_current, user_id, referrer, is_mobile_user, slot) "
                    "SELECT %s, %s, true, u, r, m, %s FROM unnest(%s::integer[], %s::integer[], %s::boolean[]) "
                    "WITH ORDINALITY AS t(u, r, m, o) ORDER BY o",
                    (f"0x{bn:x}", bn, bn * 2, [x[0] for x in rows], [x[1] for x in rows], [x[2] for x in rows]))
            elif k == "users_new":
                uid, v, n = a
                conn.execute(USERS_INSERT, (uid, f"0xw{uid}", v, f"tx-{uid}-{n}", bn))
            elif k == "users_update":
                uid, v = a
                conn.execute(USERS_UPDATE, (v, bn, uid))
            elif k == "users_replace":
                uid, v, n = a
                conn.execute(USERS_RETIRE, (uid,))
                conn.execute(USERS_INSERT, (uid, f"0xw{uid}", v, f"tx-{uid}-{n}", bn))
            else:
                raise ValueError(k)


def apply_admin(conn: psycopg.Connection, op: Op) -> None:
    if op.kind == "catalog_active":
        conn.execute("UPDATE challenges SET active = %s WHERE id = %s", (op.args[1], op.args[0]))
    elif op.kind == "catalog_amount":
        conn.execute("UPDATE challenges SET amount = %s WHERE id = %s", (op.args[1], op.args[0]))
    else:
        raise ValueError(op.kind)


def convergence_bound(conn: psycopg.Connection, batch: int) -> int:
    """Runs needed at most: every processor scans min(batch, pending) rows of each of its scans per
    run, so ceil(pending / batch) runs plus the final empty one (plus one of slack)."""
    low = min((v or 0) for v in checkpoints(conn).values())
    (ue,) = conn.execute("SELECT count(*) FROM user_events WHERE blocknumber > %s", (low,)).fetchone()
    users_blocks = [v[3] for k, v in positions(conn).items() if k in ("r", "rv")]
    low_u = min([low] + [b for b in users_blocks if b is not None])
    (us,) = conn.execute("SELECT count(*) FROM users WHERE blocknumber > %s", (low_u,)).fetchone()
    return math.ceil(max(ue, us) / batch) + 2
