-- audius_indexer: the balance upsert, the stale sweep's bookkeeping, and its status view.
-- Everything here lives in schema audius_indexer and belongs to the extension; the user tables
-- (public.eth_wallet_balances) are only read and upserted.

-- Wallets whose reads failed: backed off so the sweep keeps moving (no poison rows at the head of
-- the queue). A later successful read deletes the row.
CREATE TABLE audius_indexer.wallet_failures (
  wallet        text PRIMARY KEY,
  reason        text NOT NULL,
  attempts      integer NOT NULL DEFAULT 1,
  first_failure timestamptz NOT NULL DEFAULT now(),
  last_failure  timestamptz NOT NULL DEFAULT now(),
  next_attempt  timestamptz NOT NULL
);
CREATE INDEX wallet_failures_next_attempt_idx ON audius_indexer.wallet_failures (next_attempt);
COMMENT ON TABLE audius_indexer.wallet_failures IS
  'Wallets whose balance reads failed (revert, no data, invalid address), with exponential back-off. The sweep skips them until next_attempt.';

-- One row: the last sweep tick and totals. Written only by refresh_stale() while it holds the
-- single-flight lock, so it is never contended.
CREATE TABLE audius_indexer.sweep_state (
  id                 boolean PRIMARY KEY DEFAULT true CHECK (id),
  last_tick_started  timestamptz,
  last_tick_finished timestamptz,
  last_requested     integer,
  last_updated       integer,
  last_failed        integer,
  last_skipped       integer,
  last_error         text,
  last_error_at      timestamptz,
  ticks              bigint NOT NULL DEFAULT 0,
  total_requested    bigint NOT NULL DEFAULT 0,
  total_updated      bigint NOT NULL DEFAULT 0,
  total_failed       bigint NOT NULL DEFAULT 0,
  total_skipped      bigint NOT NULL DEFAULT 0,
  totals_since       timestamptz NOT NULL DEFAULT now(),
  cycle_started      timestamptz,
  cycle_checked      bigint NOT NULL DEFAULT 0,
  cycle_rows         bigint
);
INSERT INTO audius_indexer.sweep_state DEFAULT VALUES;

-- The balance upsert itself (the Go eth-indexer's NULLIF/GREATEST rules, the block guard) is
-- audius_indexer._upsert_balances(text[], numeric[], bigint[], boolean), a C function
-- (src/audius_tables.rs) that runs the statement as the owner of public.eth_wallet_balances in a
-- security-restricted operation: the Audius triggers it fires (on_eth_wallet_balance_changes →
-- update_eth_user_balance()) run with that owner's rights and search_path = pg_catalog, public,
-- pg_temp, never with the extension owner's.
CREATE FUNCTION audius_indexer.upsert_wallet_balances(
  wallets text[], balances numeric[], blocks bigint[], only_if_not_older boolean DEFAULT false)
RETURNS SETOF text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  bad record;
BEGIN
  IF pg_catalog.cardinality(wallets) IS DISTINCT FROM pg_catalog.cardinality(balances)
     OR pg_catalog.cardinality(wallets) IS DISTINCT FROM pg_catalog.cardinality(blocks) THEN
    RAISE EXCEPTION 'wallets, balances and blocks must have the same length (got %, %, %)',
      pg_catalog.cardinality(wallets), pg_catalog.cardinality(balances), pg_catalog.cardinality(blocks)
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- Keys are stored lowercase 0x + 40 hex (what every reader of eth_wallet_balances expects).
  -- (Checked without a regular expression: '^0x[0-9a-f]{40}$' cost a fifth of a sweep's CPU.)
  SELECT u.w, u.i INTO bad FROM pg_catalog.unnest(wallets) WITH ORDINALITY AS u(w, i)
   WHERE u.w IS NULL
      OR pg_catalog.octet_length(u.w) OPERATOR(pg_catalog.<>) 42
      OR pg_catalog.substr(u.w, 1, 2) OPERATOR(pg_catalog.<>) '0x'
      OR pg_catalog.ltrim(pg_catalog.substr(u.w, 3), '0123456789abcdef') OPERATOR(pg_catalog.<>) ''
   ORDER BY u.i LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'wallet at position % (%) is not a lowercase 0x-prefixed 40-hex-digit address',
      bad.i, coalesce(pg_catalog.quote_literal(bad.w), 'NULL')
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  RETURN QUERY SELECT w FROM audius_indexer._upsert_balances(wallets, balances, blocks, only_if_not_older) AS w;
END
$$;
COMMENT ON FUNCTION audius_indexer.upsert_wallet_balances(text[], numeric[], bigint[], boolean) IS
  'The Audius eth_wallet_balances upsert (NULLIF/GREATEST block rules), as the table owner; only_if_not_older keeps the balance and block of rows stamped with a newer block and marks them checked (updated_at = now()). Returns the wallets written.';

-- The stalest wallets (claimed by src/sweep.rs): read from public.eth_wallet_balances as its owner
-- (src/audius_tables.rs), leaving out the wallets backed off in wallet_failures.

-- Records failed reads: attempts + 1, back-off base·2^(attempts-1) seconds, capped.
CREATE FUNCTION audius_indexer._record_failures(
  wallets text[], reasons text[], backoff_base_s integer, backoff_max_s integer)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
  INSERT INTO audius_indexer.wallet_failures AS f
         (wallet, reason, attempts, first_failure, last_failure, next_attempt)
  SELECT u.w, u.r, 1, now(), now(), now() + make_interval(secs => LEAST(backoff_base_s, backoff_max_s))
  FROM unnest(wallets, reasons) AS u(w, r)
  ORDER BY u.w
  ON CONFLICT (wallet) DO UPDATE SET
    reason       = EXCLUDED.reason,
    attempts     = f.attempts + 1,
    last_failure = now(),
    next_attempt = now() + make_interval(secs =>
                     LEAST(backoff_base_s::float8 * power(2, LEAST(f.attempts, 40)), backoff_max_s))
$$;

CREATE FUNCTION audius_indexer._clear_failures(wallets text[])
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  -- Nearly always empty: one look at the table instead of an index probe per wallet per chunk.
  IF EXISTS (SELECT 1 FROM audius_indexer.wallet_failures) THEN
    DELETE FROM audius_indexer.wallet_failures WHERE wallet = ANY (wallets);
  END IF;
END
$$;

CREATE FUNCTION audius_indexer._record_tick(
  started timestamptz, requested integer, updated integer, failed integer, skipped integer)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
  UPDATE audius_indexer.sweep_state SET
    last_tick_started  = started,
    last_tick_finished = clock_timestamp(),
    last_requested = requested, last_updated = updated, last_failed = failed, last_skipped = skipped,
    ticks = ticks + 1,
    total_requested = total_requested + requested,
    total_updated   = total_updated + updated,
    total_failed    = total_failed + failed,
    total_skipped   = total_skipped + skipped,
    -- a cycle is one pass over eth_wallet_balances (its rows estimated by pg_class.reltuples when the
    -- cycle starts): the ticks' wallets count towards it until they reach that many
    cycle_started = CASE WHEN cycle_started IS NULL OR cycle_checked >= cycle_rows THEN started ELSE cycle_started END,
    cycle_rows    = CASE WHEN cycle_started IS NULL OR cycle_checked >= cycle_rows
                         THEN (SELECT GREATEST(c.reltuples, 0)::bigint FROM pg_catalog.pg_class c
                                WHERE c.oid = pg_catalog.to_regclass('public.eth_wallet_balances'))
                         ELSE cycle_rows END,
    cycle_checked = CASE WHEN cycle_started IS NULL OR cycle_checked >= cycle_rows THEN requested
                         ELSE cycle_checked + requested END
$$;

-- A failed tick (whole-call failure: node down, timeout…): recorded by the worker after rollback.
CREATE FUNCTION audius_indexer._record_tick_error(started timestamptz, message text)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
  UPDATE audius_indexer.sweep_state SET
    last_tick_started = started, last_tick_finished = clock_timestamp(),
    last_error = message, last_error_at = clock_timestamp()
$$;

-- Zeroes the totals (not the failure records).
CREATE FUNCTION audius_indexer.reset_sweep_status()
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
  UPDATE audius_indexer.sweep_state SET ticks = 0, total_requested = 0, total_updated = 0,
    total_failed = 0, total_skipped = 0, totals_since = now(), last_error = NULL, last_error_at = NULL
$$;

CREATE VIEW audius_indexer.sweep_status AS
SELECT s.last_tick_started,
       s.last_tick_finished,
       s.last_tick_finished - s.last_tick_started AS last_tick_duration,
       s.last_requested, s.last_updated, s.last_failed, s.last_skipped,
       s.ticks, s.total_requested, s.total_updated, s.total_failed, s.total_skipped, s.totals_since,
       s.last_error, s.last_error_at,
       -- Every column stays cheap on 3M+ wallets (bench/status): min(updated_at) is one probe of
       -- eth_wallet_balances_updated_at_idx; lag_excluding_failing walks that index from its low end
       -- past the failing wallets (an ORDER BY ... LIMIT 1: min() over an anti-join would scan the
       -- table); wallets is an ESTIMATE, not a count(*): pg_class.reltuples, maintained by VACUUM,
       -- ANALYZE and autovacuum (in the catalog, so also right on a standby and after a crash or
       -- pg_stat_reset(), unlike pg_stat_user_tables.n_live_tup), and n_live_tup only while the table
       -- has never been vacuumed or analyzed (reltuples = -1).
       (SELECT now() - min(updated_at) FROM public.eth_wallet_balances) AS lag,
       (SELECT now() - w.updated_at FROM public.eth_wallet_balances w
         WHERE NOT EXISTS (SELECT 1 FROM audius_indexer.wallet_failures f WHERE f.wallet = w.wallet)
         ORDER BY w.updated_at LIMIT 1) AS lag_excluding_failing,
       (SELECT (CASE WHEN c.reltuples >= 0 THEN c.reltuples
                     ELSE pg_catalog.pg_stat_get_live_tuples(c.oid) END)::bigint
          FROM pg_catalog.pg_class c WHERE c.oid = 'public.eth_wallet_balances'::pg_catalog.regclass) AS wallets,
       (SELECT count(*) FROM audius_indexer.wallet_failures WHERE next_attempt > now()) AS wallets_in_backoff,
       (SELECT count(*) FROM audius_indexer.wallet_failures) AS wallets_failing,
       (SELECT a.pid FROM pg_catalog.pg_stat_activity a
         WHERE a.backend_type = 'audius_indexer sweep' AND a.datname = pg_catalog.current_database()
         LIMIT 1) AS worker_pid,
       -- NULL in a session where the library is not loaded and the setting is not in postgresql.conf
       pg_catalog.current_setting('audius_indexer.sweep_enabled', true) :: boolean AS sweep_enabled,
       -- the current cycle (one pass over every row): rows checked since it started, of how many
       -- (an estimate taken when it started), and when it will be done at the rate so far
       s.cycle_started,
       s.cycle_checked AS cycle_rows_checked,
       s.cycle_rows,
       CASE WHEN s.cycle_checked > 0 AND s.cycle_rows > s.cycle_checked
                 AND s.last_tick_finished > s.cycle_started
            THEN (s.last_tick_finished - s.cycle_started) * ((s.cycle_rows - s.cycle_checked)::float8 / s.cycle_checked)
       END AS cycle_eta
FROM audius_indexer.sweep_state s;
COMMENT ON VIEW audius_indexer.sweep_status IS
  'Last sweep tick (worker, CALL sweep() or refresh_stale()), totals, last error, lag (now() - min(updated_at)), wallets (an estimate: pg_class.reltuples), wallets in back-off, the worker pid of this database.';
