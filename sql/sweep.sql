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
  totals_since       timestamptz NOT NULL DEFAULT now()
);
INSERT INTO audius_indexer.sweep_state DEFAULT VALUES;

-- The seed's upsert, kept exactly (eth/indexer/eth_indexer.go upsertBalanceUpdates):
-- insert NULLIF(block, 0); on conflict balance = new, blocknumber = existing when the new one is
-- NULL, else GREATEST(COALESCE(existing, 0), new); updated_at = now().
-- Beyond the seed, with only_if_not_older => true a row already stamped with a newer block than
-- the read is left alone (an older read never overwrites a newer value) and marked checked:
-- updated_at = now(), balance and blocknumber untouched, so it leaves the head of the sweep queue
-- (a row stamped ahead of a lagging node would otherwise be the stalest row again on every tick).
-- Rows are written in wallet order so concurrent upserts lock in the same order (no deadlocks).
-- Returns the wallets written.
--
-- _upsert_balances is the statement itself, for callers whose keys are already in the stored form
-- (the extension's own writers: they build them from parsed addresses); upsert_wallet_balances
-- checks the keys first (the SQL entry point).
--
-- search_path: the Audius triggers on eth_wallet_balances (on_eth_wallet_balance_changes →
-- update_eth_user_balance) name users, associated_wallets, eth_user_balances without a schema and
-- run with the search_path in force here. It is pinned to pg_catalog, public (the schema holding
-- eth_wallet_balances), pg_temp: names resolve as for the table owner's ordinary INSERT, builtins
-- first, temporary objects last (never functions), and nothing a caller puts on its own
-- search_path is consulted. Everything these bodies call is qualified. doctor() flags roles other
-- than superusers that may CREATE in public (they could place objects the triggers would find).
CREATE FUNCTION audius_indexer._upsert_balances(
  wallets text[], balances numeric[], blocks bigint[], only_if_not_older boolean)
RETURNS SETOF text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
  written bigint;
BEGIN
  RETURN QUERY
  WITH written AS (
    INSERT INTO public.eth_wallet_balances AS e (wallet, balance, blocknumber, updated_at)
    SELECT u.w, u.b, NULLIF(u.bl, 0), pg_catalog.now()
    FROM ROWS FROM (pg_catalog.unnest(wallets), pg_catalog.unnest(balances), pg_catalog.unnest(blocks)) AS u(w, b, bl)
    ORDER BY u.w
    ON CONFLICT (wallet) DO UPDATE SET
      balance     = EXCLUDED.balance,
      blocknumber = CASE WHEN EXCLUDED.blocknumber IS NULL THEN e.blocknumber
                         ELSE GREATEST(COALESCE(e.blocknumber, 0), EXCLUDED.blocknumber) END,
      updated_at  = pg_catalog.now()
    WHERE NOT only_if_not_older
       OR e.blocknumber IS NULL
       OR EXCLUDED.blocknumber IS NULL
       OR e.blocknumber <= EXCLUDED.blocknumber
    RETURNING e.wallet)
  SELECT w.wallet FROM written AS w;
  GET DIAGNOSTICS written = ROW_COUNT;
  IF only_if_not_older AND written < pg_catalog.cardinality(wallets) THEN
    -- The rows the guard left alone (already locked by the INSERT above, in wallet order); none
    -- when every row was written, the usual case: then no second pass over the wallets.
    UPDATE public.eth_wallet_balances AS e SET updated_at = pg_catalog.now()
      FROM ROWS FROM (pg_catalog.unnest(wallets), pg_catalog.unnest(blocks)) AS u(w, bl)
     WHERE e.wallet = u.w AND u.bl > 0 AND e.blocknumber > u.bl;
  END IF;
END
$$;

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
  'The Audius eth_wallet_balances upsert (NULLIF/GREATEST block rules); only_if_not_older skips rows stamped with a newer block.';

-- The stalest wallets, oldest updated_at first (eth_wallet_balances_updated_at_idx), skipping
-- wallets that are backed off after failures. With no wallet in back-off (the usual case: one
-- probe of wallet_failures_next_attempt_idx) the stalest rows are read straight off the index,
-- without an anti-join probe per row.
CREATE FUNCTION audius_indexer._stale_batch(batch integer)
RETURNS SETOF text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM audius_indexer.wallet_failures f WHERE f.next_attempt > now()) THEN
    RETURN QUERY
    SELECT w.wallet
    FROM public.eth_wallet_balances w
    WHERE NOT EXISTS (SELECT 1 FROM audius_indexer.wallet_failures f
                      WHERE f.wallet = w.wallet AND f.next_attempt > now())
    ORDER BY w.updated_at
    LIMIT batch;
  ELSE
    RETURN QUERY
    SELECT w.wallet FROM public.eth_wallet_balances w ORDER BY w.updated_at LIMIT batch;
  END IF;
END
$$;

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
    total_skipped   = total_skipped + skipped
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
       (SELECT now() - min(updated_at) FROM public.eth_wallet_balances) AS lag,
       (SELECT now() - min(w.updated_at) FROM public.eth_wallet_balances w
         WHERE NOT EXISTS (SELECT 1 FROM audius_indexer.wallet_failures f WHERE f.wallet = w.wallet))
         AS lag_excluding_failing,
       (SELECT count(*) FROM public.eth_wallet_balances) AS wallets,
       (SELECT count(*) FROM audius_indexer.wallet_failures WHERE next_attempt > now()) AS wallets_in_backoff,
       (SELECT count(*) FROM audius_indexer.wallet_failures) AS wallets_failing,
       (SELECT a.pid FROM pg_catalog.pg_stat_activity a
         WHERE a.backend_type = 'audius_indexer sweep' AND a.datname = pg_catalog.current_database()
         LIMIT 1) AS worker_pid,
       -- NULL in a session where the library is not loaded and the setting is not in postgresql.conf
       pg_catalog.current_setting('audius_indexer.sweep_enabled', true) :: boolean AS sweep_enabled
FROM audius_indexer.sweep_state s;
COMMENT ON VIEW audius_indexer.sweep_status IS
  'Last sweep tick (worker, CALL sweep() or refresh_stale()), totals, last error, lag (now() - min(updated_at)), wallets in back-off, the worker pid of this database.';
