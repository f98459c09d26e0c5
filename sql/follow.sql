-- audius_indexer: the event path's bookkeeping (src/follow.rs): block hashes for reorg checks,
-- wallets still owed a read, the step record and its status view. The checkpoint itself lives where
-- the Go eth-indexer keeps it: public.eth_indexer_checkpoints, name 'audio_transfers'.

-- Hash and time of every block a step ended on (the checkpoint and its predecessors): the next
-- step compares the checkpoint's hash with the node's; after a reorg the newest block the node still
-- agrees with is the common ancestor. Only the last 10,000 blocks are kept.
CREATE TABLE audius_indexer.follow_blocks (
  block      bigint PRIMARY KEY,
  hash       text NOT NULL,
  block_time timestamptz NOT NULL
);
COMMENT ON TABLE audius_indexer.follow_blocks IS
  'Hashes of the blocks follow_transfers() ended its ranges on (reorg detection; last 10,000 blocks).';

-- Wallets whose event-path read must be made again: the node answered from a block older than the
-- transfer (a lagging node: min_block = the transfer's block), or the read failed (backed off).
CREATE TABLE audius_indexer.follow_pending (
  wallet       text PRIMARY KEY,
  min_block    bigint,
  reason       text NOT NULL,
  attempts     integer NOT NULL DEFAULT 1,
  first_queued timestamptz NOT NULL DEFAULT now(),
  next_attempt timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX follow_pending_next_attempt_idx ON audius_indexer.follow_pending (next_attempt);
COMMENT ON TABLE audius_indexer.follow_pending IS
  'Tracked wallets of followed Transfer logs whose read was older than the transfer (lagging node) or failed: read again by the next steps, with min_block as the block the read must reach.';

-- One row: the last step and totals.
CREATE TABLE audius_indexer.follow_state (
  id                  boolean PRIMARY KEY DEFAULT true CHECK (id),
  last_step_started   timestamptz,
  last_step_finished  timestamptz,
  last_from_block     bigint,
  last_to_block       bigint,
  last_logs           integer,
  last_candidates     integer,
  last_tracked        integer,
  last_updated        integer,
  last_skipped        integer,
  last_failed         integer,
  head                bigint,
  head_seen_at        timestamptz,
  last_error          text,
  last_error_at       timestamptz,
  steps               bigint NOT NULL DEFAULT 0,
  total_logs          bigint NOT NULL DEFAULT 0,
  total_updated       bigint NOT NULL DEFAULT 0,
  reorgs              bigint NOT NULL DEFAULT 0,
  last_reorg_at       timestamptz,
  last_reorg_block    bigint,
  last_reorg_ancestor bigint,
  -- the audio_transfers checkpoint value the follower last stored (or found when it was enabled):
  -- another value at the next step means another writer moved it (the Go eth-indexer)
  written_checkpoint  bigint,
  -- the step in progress (or the last one): its range and the last block committed in it
  step_from           bigint,
  step_to             bigint,
  step_done           bigint
);
INSERT INTO audius_indexer.follow_state DEFAULT VALUES;

CREATE FUNCTION audius_indexer._follow_step_started() RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
  UPDATE audius_indexer.follow_state SET last_step_started = clock_timestamp();
$$;

-- The range of the step in progress (after its head check) and its progress (with each range's
-- write, in the same transaction as the checkpoint).
CREATE FUNCTION audius_indexer._follow_step_range(p_from bigint, p_to bigint) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
  UPDATE audius_indexer.follow_state SET step_from = p_from, step_to = p_to, step_done = NULL;
$$;

CREATE FUNCTION audius_indexer._follow_step_done(p_block bigint) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
  UPDATE audius_indexer.follow_state SET step_done = p_block;
$$;

CREATE FUNCTION audius_indexer._follow_head(p_head bigint) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
  UPDATE audius_indexer.follow_state SET head = p_head, head_seen_at = clock_timestamp();
$$;

CREATE FUNCTION audius_indexer._follow_step_finished(
  p_from bigint, p_to bigint, p_logs integer, p_candidates integer, p_tracked integer,
  p_updated integer, p_skipped integer, p_failed integer, p_checkpoint bigint) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
  UPDATE audius_indexer.follow_state
     SET last_step_finished = clock_timestamp(), last_from_block = p_from, last_to_block = p_to,
         last_logs = p_logs, last_candidates = p_candidates, last_tracked = p_tracked,
         last_updated = p_updated, last_skipped = p_skipped, last_failed = p_failed,
         steps = steps + 1, total_logs = total_logs + p_logs, total_updated = total_updated + p_updated;
$$;

CREATE FUNCTION audius_indexer._follow_record_error(p_message text) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
  UPDATE audius_indexer.follow_state SET last_error = p_message, last_error_at = clock_timestamp();
$$;

-- The hash and time of the block a step ended on (the checkpoint itself, public.eth_indexer_checkpoints,
-- is written by src/audius_tables.rs as that table's owner, with the Go eth-indexer's GREATEST rule).
CREATE FUNCTION audius_indexer._follow_save_block(p_block bigint, p_hash text, p_time bigint)
RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
  INSERT INTO audius_indexer.follow_blocks (block, hash, block_time)
  VALUES (p_block, p_hash, pg_catalog.to_timestamp(p_time))
  ON CONFLICT (block) DO UPDATE SET hash = EXCLUDED.hash, block_time = EXCLUDED.block_time;
  DELETE FROM audius_indexer.follow_blocks WHERE block < p_block - 10000;
$$;

-- A reorg below p_checkpoint with common ancestor p_ancestor: hashes above the ancestor are
-- forgotten and the reorg is counted. (The rows about to be re-read go back to the ancestor's
-- stamp and the checkpoint goes back to the ancestor in src/audius_tables.rs, as the owners of
-- those tables.)
CREATE FUNCTION audius_indexer._follow_reorg(p_checkpoint bigint, p_ancestor bigint)
RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
  DELETE FROM audius_indexer.follow_blocks WHERE block > p_ancestor;
  UPDATE audius_indexer.follow_state
     SET reorgs = reorgs + 1, last_reorg_at = clock_timestamp(),
         last_reorg_block = p_checkpoint, last_reorg_ancestor = p_ancestor;
$$;

-- Pending-queue bookkeeping after a write: the wallets of p_done that were read and written leave
-- the queue; the lagging ones (read again at the next step) and the failed ones (backed off like
-- wallet_failures: base * 2^(attempts-1), at most max) are queued or counted again, each with the
-- block its read must reach (the higher one when it was queued already).
CREATE FUNCTION audius_indexer._follow_pending(
  p_done text[], p_lagging text[], p_lagging_blocks bigint[], p_failed text[], p_failed_blocks bigint[],
  p_reasons text[], p_backoff_base_s integer, p_backoff_max_s integer) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
  DELETE FROM audius_indexer.follow_pending
   WHERE wallet = ANY (p_done) AND wallet <> ALL (p_lagging) AND wallet <> ALL (p_failed);
  INSERT INTO audius_indexer.follow_pending AS p (wallet, min_block, reason, next_attempt)
  SELECT w, b, 'the node answered from a block older than the transfer (lagging node)', now()
    FROM unnest(p_lagging, p_lagging_blocks) AS l(w, b)
  ON CONFLICT (wallet) DO UPDATE
     SET min_block = GREATEST(p.min_block, EXCLUDED.min_block), reason = EXCLUDED.reason,
         attempts = p.attempts + 1, next_attempt = now();
  INSERT INTO audius_indexer.follow_pending AS p (wallet, min_block, reason, next_attempt)
  SELECT w, b, r, now() + make_interval(secs => least(p_backoff_max_s, p_backoff_base_s))
    FROM unnest(p_failed, p_failed_blocks, p_reasons) AS f(w, b, r)
  ON CONFLICT (wallet) DO UPDATE
     SET min_block = GREATEST(p.min_block, EXCLUDED.min_block), reason = EXCLUDED.reason,
         attempts = p.attempts + 1,
         next_attempt = now() + make_interval(secs => least(p_backoff_max_s::float8,
                                                             p_backoff_base_s * power(2, least(p.attempts, 30))));
$$;

CREATE VIEW audius_indexer.follow_status AS
SELECT s.last_step_started,
       s.last_step_finished,
       c.last_block AS checkpoint,
       s.head,
       GREATEST(s.head - c.last_block, 0) AS lag_blocks,
       EXTRACT(epoch FROM (now() - b.block_time))::numeric(20, 3) AS lag_seconds,
       s.last_from_block,
       s.last_to_block,
       s.last_logs,
       s.last_candidates,
       s.last_tracked,
       s.last_updated,
       s.last_skipped,
       s.last_failed,
       (SELECT count(*) FROM audius_indexer.follow_pending) AS pending_wallets,
       s.last_error,
       s.last_error_at,
       s.steps,
       s.total_logs,
       s.total_updated,
       s.reorgs,
       s.last_reorg_at,
       s.last_reorg_block,
       s.last_reorg_ancestor,
       pg_catalog.current_setting('audius_indexer.follow_interval', true) AS follow_interval,
       -- progress of the step in progress (the worker commits per range; a long backfill shows here
       -- while it runs): blocks done and still to do, blocks per second so far, and the ETA
       s.step_from,
       s.step_to,
       GREATEST(coalesce(s.step_done, s.step_from - 1) - s.step_from + 1, 0) AS step_blocks_done,
       GREATEST(s.step_to - coalesce(s.step_done, s.step_from - 1), 0) AS step_blocks_todo,
       CASE WHEN s.step_done >= s.step_from AND s.last_step_started IS NOT NULL
            THEN ((s.step_done - s.step_from + 1) / GREATEST(
                   EXTRACT(epoch FROM (CASE WHEN s.last_step_finished >= s.last_step_started THEN s.last_step_finished
                                            ELSE pg_catalog.clock_timestamp() END) - s.last_step_started), 0.001))::numeric(20, 1)
       END AS step_blocks_per_second,
       CASE WHEN s.step_done >= s.step_from AND s.step_to > s.step_done AND s.last_step_started IS NOT NULL
                 AND (s.last_step_finished IS NULL OR s.last_step_finished < s.last_step_started)
            THEN (pg_catalog.clock_timestamp() - s.last_step_started)
                 * ((s.step_to - s.step_done)::float8 / (s.step_done - s.step_from + 1))
       END AS step_eta
  FROM audius_indexer.follow_state s
  LEFT JOIN public.eth_indexer_checkpoints c ON c.name = 'audio_transfers'
  LEFT JOIN audius_indexer.follow_blocks b ON b.block = c.last_block;
COMMENT ON VIEW audius_indexer.follow_status IS
  'Transfer-log follower: last step and its counts, checkpoint (eth_indexer_checkpoints audio_transfers), head, lag in blocks and seconds (now - checkpoint block time), pending wallets, reorgs, last error.';
