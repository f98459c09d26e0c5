-- audius_indexer: partial GIN indexes serving the dedupe lookups of the triggers.
--
-- Run with psql, OUTSIDE a transaction (CREATE INDEX CONCURRENTLY refuses to run in one, and cannot be
-- part of CREATE EXTENSION):
--
--     psql -X -v ON_ERROR_STOP=1 -d audius -f sql/indexes.sql                 # tables in schema public
--     psql -X -v ON_ERROR_STOP=1 -v schema=other -d audius -f sql/indexes.sql # tables elsewhere
--
-- Both lookups have the shape
--     SELECT id FROM notification WHERE type = '<type>' AND user_ids @> ARRAY[$1]::integer[]
--                                   AND "timestamp" >= ($2 - interval '1 hour') LIMIT 1
-- A GIN index serves `@>` (never `= ANY`); restricting it to one type out of ~30 keeps it small.
--   ix_notification_cooldown_user_ids         -- type 'reward_in_cooldown' (same name/definition as Audius 0210)
--   ix_notification_challenge_reward_user_ids -- type 'challenge_reward' (disbursement triggers)
--
-- When the schema has user_events (the challenge processors' source), two btrees as well:
--   ix_user_events_blocknumber -- (blocknumber), same name/definition as Audius 0209: the dirty scans
--   ix_user_events_referrer    -- (referrer) WHERE referrer IS NOT NULL: r/rv re-derive the pairs of a
--                                 referrer whose users row changed (the verification-gap fix)
--
-- Both GINs are built with fastupdate = off, and an existing one (Audius 0210 creates the first) is
-- switched to it: with a pending list every lookup also scans the list, and a burst of completions
-- (a challenge processor catch-up) slows down with the list's length — measured in
-- bench/challenges (docs/performance.md has the numbers of the last run): minutes with fastupdate off,
-- about ten times as long with it on.
--
-- Idempotent. A CREATE INDEX CONCURRENTLY that failed or was cancelled leaves an INVALID index behind,
-- which IF NOT EXISTS would then silently accept: such leftovers are dropped (concurrently) and rebuilt.
-- The script ends by checking that every index exists, is valid and has the expected definition.

\set ON_ERROR_STOP on
\if :{?schema}
\else
\set schema public
\endif
SET lock_timeout = 0;
SET statement_timeout = 0;
SELECT set_config('audius_indexer_indexes.schema', :'schema', false) AS schema_checked \gset

-- 0. The table must exist (a clear error instead of a failing CREATE INDEX).
DO $check$
BEGIN
    IF to_regclass(format('%I.notification', current_setting('audius_indexer_indexes.schema'))) IS NULL THEN
        RAISE EXCEPTION 'table %.notification does not exist', current_setting('audius_indexer_indexes.schema')
            USING ERRCODE = 'undefined_table',
                  HINT = 'Run sql/indexes.sql in the Audius database; pass -v schema=<schema> when the tables are not in public.';
    END IF;
END
$check$;

-- The indexes, once: every step below reads this list (a temporary table of this session). The
-- user_events btrees are listed only where that table exists.
DROP TABLE IF EXISTS pg_temp.audius_indexer_index_specs;
CREATE TABLE pg_temp.audius_indexer_index_specs (
    idx      text PRIMARY KEY,  -- index name
    tbl      text NOT NULL,     -- table (in the schema)
    am       text NOT NULL,     -- gin / btree
    col      text NOT NULL,     -- the indexed column
    pred     text NOT NULL,     -- the predicate as pg_get_expr prints it ('' = none)
    expected text NOT NULL,     -- how the verify step names it
    note     text NOT NULL      -- the index's COMMENT
);
INSERT INTO pg_temp.audius_indexer_index_specs
SELECT s.* FROM (VALUES
    ('ix_notification_cooldown_user_ids', 'notification', 'gin', 'user_ids',
     '((type)::text = ''reward_in_cooldown''::text)',
     'partial GIN (type = reward_in_cooldown, fastupdate off)',
     'Partial GIN on notification.user_ids for type = ''reward_in_cooldown'': serves the 1-hour cooldown dedupe '
     'of on_user_challenge (user_ids @> ARRAY[user_id]). GIN cannot serve "= ANY(user_ids)". Created by audius_indexer sql/indexes.sql.'),
    ('ix_notification_challenge_reward_user_ids', 'notification', 'gin', 'user_ids',
     '((type)::text = ''challenge_reward''::text)',
     'partial GIN (type = challenge_reward, fastupdate off)',
     'Partial GIN on notification.user_ids for type = ''challenge_reward'': serves the 1-hour disbursement dedupe '
     'of on_challenge_disbursement / on_sol_reward_disbursement (user_ids @> ARRAY[user_id]). Created by audius_indexer sql/indexes.sql.'),
    ('ix_user_events_blocknumber', 'user_events', 'btree', 'blocknumber', '',
     'btree on user_events(blocknumber)',
     'Serves the challenge processors'' dirty scans (blocknumber past the checkpoint, in order) instead of a seq scan '
     'of user_events (Audius 0209). Created by audius_indexer sql/indexes.sql.'),
    ('ix_user_events_referrer', 'user_events', 'btree', 'referrer', '(referrer IS NOT NULL)',
     'btree on user_events(referrer)',
     'Serves the r/rv challenge processors: the pairs a referrer referred, re-derived when its users row '
     '(is_verified) changes. Created by audius_indexer sql/indexes.sql.')) AS s(idx, tbl, am, col, pred, expected, note)
 WHERE pg_catalog.to_regclass(format('%I.%I', :'schema', s.tbl)) IS NOT NULL;

-- 1. Drop INVALID leftovers of a previous failed/cancelled build of any of them.
SELECT format('DROP INDEX CONCURRENTLY IF EXISTS %I.%I', n.nspname, c.relname)
  FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = :'schema'
   AND c.relname IN (SELECT idx FROM pg_temp.audius_indexer_index_specs)
   AND NOT (i.indisvalid AND i.indisready)
\gexec

-- 2. Build what is missing (each CREATE INDEX CONCURRENTLY its own statement), and comment it. The
--    GINs are built with fastupdate = off.
SELECT format('CREATE INDEX CONCURRENTLY IF NOT EXISTS %I ON %I.%I USING %s (%I)%s%s',
              idx, :'schema', tbl, am, col,
              CASE WHEN am = 'gin' THEN ' WITH (fastupdate = off)' ELSE '' END,
              CASE WHEN pred <> '' THEN ' WHERE ' || pred ELSE '' END)
  FROM pg_temp.audius_indexer_index_specs ORDER BY idx
\gexec
SELECT format('COMMENT ON INDEX %I.%I IS %L', :'schema', idx, note) FROM pg_temp.audius_indexer_index_specs ORDER BY idx
\gexec

-- An existing GIN (e.g. Audius 0210's) with fastupdate on: switch it off (a short lock on the index),
-- then merge its pending list into the index.
SELECT format('ALTER INDEX %I.%I SET (fastupdate = off)', n.nspname, c.relname)
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = :'schema'
   AND c.relname IN (SELECT idx FROM pg_temp.audius_indexer_index_specs WHERE am = 'gin')
   AND c.relam = (SELECT a.oid FROM pg_catalog.pg_am a WHERE a.amname = 'gin')
   AND NOT 'fastupdate=off' = ANY (coalesce(c.reloptions, '{}'))
\gexec
SELECT pg_catalog.gin_clean_pending_list(c.oid::regclass) AS pending_tuples_merged
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = :'schema'
   AND c.relname IN (SELECT idx FROM pg_temp.audius_indexer_index_specs WHERE am = 'gin')
   AND c.relam = (SELECT a.oid FROM pg_catalog.pg_am a WHERE a.amname = 'gin');

-- 3. Verify: every index present, valid, of the expected kind, column and predicate, on the table of
--    this schema (an older index with the same name but another definition would otherwise pass
--    unnoticed).
DO $verify$
DECLARE
    v_schema text := current_setting('audius_indexer_indexes.schema');
    v_spec   record;
BEGIN
    FOR v_spec IN SELECT * FROM pg_temp.audius_indexer_index_specs ORDER BY idx LOOP
        IF NOT EXISTS (
            SELECT 1
              FROM pg_catalog.pg_index i
              JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
              JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              JOIN pg_catalog.pg_am am ON am.oid = c.relam
             WHERE n.nspname = v_schema AND c.relname = v_spec.idx
               AND i.indrelid = format('%I.%I', v_schema, v_spec.tbl)::regclass
               AND i.indisvalid AND i.indisready AND am.amname = v_spec.am
               AND (am.amname <> 'gin' OR 'fastupdate=off' = ANY (coalesce(c.reloptions, '{}')))
               AND pg_catalog.pg_get_indexdef(i.indexrelid, 1, false) = v_spec.col
               AND coalesce(pg_catalog.pg_get_expr(i.indpred, i.indrelid), '') = v_spec.pred)
        THEN
            RAISE EXCEPTION 'index %.% is missing, invalid or not the expected % after sql/indexes.sql',
                            v_schema, v_spec.idx, v_spec.expected
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Drop the index (DROP INDEX CONCURRENTLY) and run sql/indexes.sql again.';
        END IF;
    END LOOP;
END
$verify$;
