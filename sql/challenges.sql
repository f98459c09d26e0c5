-- audius_indexer: the user_events challenge processors' (m, r, rv, rd) bookkeeping, checkpoint seeding and status view.
-- The processors themselves are Rust (src/challenges/); their checkpoints live where the Go challenge job
-- keeps them, in the Audius table indexing_checkpoints (`challenges:<id>:last_blocknumber`).

-- One row per processor. The resume positions make "no skipped rows" possible: the Go job resumes from a
-- block number only. ue_checkpoint is the indexing_checkpoints value the position was stored with; when
-- the checkpoint there differs (seed_challenge_checkpoints(), the Go job, a DBA reset) it wins.
CREATE TABLE audius_indexer.challenge_processor_state (
  challenge_id      text PRIMARY KEY CHECK (challenge_id IN ('m', 'r', 'rv', 'rd')),
  ue_block          bigint,
  ue_id             bigint,
  ue_checkpoint     bigint,
  users_block       bigint,
  users_user_id     integer,
  users_txhash      text,
  last_run_at       timestamptz,
  last_dirty_rows   integer,
  last_users        integer,
  last_upserts      integer,
  checkpoint_before bigint,
  checkpoint_after  bigint,
  last_error        text,
  last_error_at     timestamptz,
  runs              bigint NOT NULL DEFAULT 0,
  errors            bigint NOT NULL DEFAULT 0,
  total_upserts     bigint NOT NULL DEFAULT 0
);
INSERT INTO audius_indexer.challenge_processor_state (challenge_id) VALUES ('m'), ('r'), ('rv'), ('rd');
COMMENT ON TABLE audius_indexer.challenge_processor_state IS
  'Challenge processors m, r, rv, rd: resume positions ((blocknumber, id) in user_events; (blocknumber, user_id, txhash) in users for r/rv) and the outcome of the last run.';
COMMENT ON COLUMN audius_indexer.challenge_processor_state.ue_checkpoint IS
  'The indexing_checkpoints value stored with ue_block/ue_id; a different value there wins over the position.';
COMMENT ON COLUMN audius_indexer.challenge_processor_state.users_block IS
  'r/rv only: users rows with (blocknumber, user_id, txhash) past this position have not been checked for a verification change.';

-- seed_challenge_checkpoints() (Audius migration 0211 "start from now") and _challenge_checkpoints()
-- (checkpoint and head per processor, read at query time: the Audius tables may not exist) are C
-- functions (src/api/challenges.rs): they read and write the Audius tables as those tables' owners.

CREATE VIEW audius_indexer.challenge_processor_status AS
SELECT s.challenge_id,
       s.last_run_at,
       s.last_dirty_rows,
       s.last_users,
       s.last_upserts,
       COALESCE(c.checkpoint, 0) AS checkpoint,
       c.head AS head_blocknumber,
       GREATEST(c.head - COALESCE(c.checkpoint, 0), 0) AS lag_blocks,
       s.last_error,
       s.last_error_at,
       s.runs,
       s.errors,
       s.total_upserts,
       s.ue_block AS position_blocknumber,
       s.ue_id AS position_id,
       s.users_block AS users_position_blocknumber
  FROM audius_indexer.challenge_processor_state s
  JOIN audius_indexer._challenge_checkpoints() c USING (challenge_id)
 ORDER BY array_position(ARRAY['m', 'r', 'rv', 'rd'], s.challenge_id);
COMMENT ON VIEW audius_indexer.challenge_processor_status IS
  'Challenge processors m, r, rv, rd: last run, counts, checkpoint (indexing_checkpoints), lag_blocks = max(user_events.blocknumber) - checkpoint, last error.';
