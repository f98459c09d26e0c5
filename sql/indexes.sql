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
-- The script ends by checking that both indexes exist and are valid.

\set ON_ERROR_STOP on
\if :{?schema}
\else
\set schema public
\endif
SET lock_timeout = 0;
SET statement_timeout = 0;
SELECT set_config('audius_indexer_indexes.schema', :'schema', false) AS schema_checked \gset
SELECT pg_catalog.to_regclass(format('%I.user_events', :'schema')) IS NOT NULL AS has_user_events \gset

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

-- 1. Drop INVALID leftovers of a previous failed/cancelled build of either index.
SELECT format('DROP INDEX CONCURRENTLY IF EXISTS %I.%I', n.nspname, c.relname)
  FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = :'schema'
   AND c.relname IN ('ix_notification_cooldown_user_ids', 'ix_notification_challenge_reward_user_ids',
                     'ix_user_events_blocknumber', 'ix_user_events_referrer')
   AND NOT (i.indisvalid AND i.indisready)
\gexec

-- 2. Build what is missing.
CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_notification_cooldown_user_ids
    ON :"schema".notification USING gin (user_ids) WITH (fastupdate = off)
    WHERE ((type)::text = 'reward_in_cooldown'::text);

COMMENT ON INDEX :"schema".ix_notification_cooldown_user_ids IS
    'Partial GIN on notification.user_ids for type = ''reward_in_cooldown'': serves the 1-hour cooldown dedupe '
    'of on_user_challenge (user_ids @> ARRAY[user_id]). GIN cannot serve "= ANY(user_ids)". Created by audius_indexer sql/indexes.sql.';

CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_notification_challenge_reward_user_ids
    ON :"schema".notification USING gin (user_ids) WITH (fastupdate = off)
    WHERE ((type)::text = 'challenge_reward'::text);

COMMENT ON INDEX :"schema".ix_notification_challenge_reward_user_ids IS
    'Partial GIN on notification.user_ids for type = ''challenge_reward'': serves the 1-hour disbursement dedupe '
    'of on_challenge_disbursement / on_sol_reward_disbursement (user_ids @> ARRAY[user_id]). Created by audius_indexer sql/indexes.sql.';

-- An existing GIN (e.g. Audius 0210's) with fastupdate on: switch it off (a short lock on the index),
-- then merge its pending list into the index.
SELECT format('ALTER INDEX %I.%I SET (fastupdate = off)', n.nspname, c.relname)
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = :'schema'
   AND c.relname IN ('ix_notification_cooldown_user_ids', 'ix_notification_challenge_reward_user_ids')
   AND c.relam = (SELECT a.oid FROM pg_catalog.pg_am a WHERE a.amname = 'gin')
   AND NOT 'fastupdate=off' = ANY (coalesce(c.reloptions, '{}'))
\gexec
SELECT pg_catalog.gin_clean_pending_list(c.oid::regclass) AS pending_tuples_merged
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = :'schema'
   AND c.relname IN ('ix_notification_cooldown_user_ids', 'ix_notification_challenge_reward_user_ids')
   AND c.relam = (SELECT a.oid FROM pg_catalog.pg_am a WHERE a.amname = 'gin');

\if :has_user_events
CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_user_events_blocknumber
    ON :"schema".user_events USING btree (blocknumber);

COMMENT ON INDEX :"schema".ix_user_events_blocknumber IS
    'Serves the challenge processors'' dirty scans (blocknumber past the checkpoint, in order) instead of a seq scan '
    'of user_events (Audius 0209). Created by audius_indexer sql/indexes.sql.';

CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_user_events_referrer
    ON :"schema".user_events USING btree (referrer)
    WHERE (referrer IS NOT NULL);

COMMENT ON INDEX :"schema".ix_user_events_referrer IS
    'Serves the r/rv challenge processors: the pairs a referrer referred, re-derived when its users row '
    '(is_verified) changes. Created by audius_indexer sql/indexes.sql.';
\endif

-- 3. Verify: every index present, valid, of the expected kind, column and predicate, on the table of
--    this schema (an older index with the same name but another definition would otherwise pass
--    unnoticed); the user_events btrees where that table exists.
DO $verify$
DECLARE
    v_schema text := current_setting('audius_indexer_indexes.schema');
    v_spec   record;
BEGIN
    FOR v_spec IN
        SELECT s.*
          FROM (VALUES ('ix_notification_cooldown_user_ids', 'notification', 'gin', 'user_ids',
                        '((type)::text = ''reward_in_cooldown''::text)',
                        'partial GIN (type = reward_in_cooldown, fastupdate off)'),
                       ('ix_notification_challenge_reward_user_ids', 'notification', 'gin', 'user_ids',
                        '((type)::text = ''challenge_reward''::text)',
                        'partial GIN (type = challenge_reward, fastupdate off)'),
                       ('ix_user_events_blocknumber', 'user_events', 'btree', 'blocknumber', '',
                        'btree on user_events(blocknumber)'),
                       ('ix_user_events_referrer', 'user_events', 'btree', 'referrer', '(referrer IS NOT NULL)',
                        'btree on user_events(referrer)')) AS s(idx, tbl, am, col, pred, expected)
         WHERE pg_catalog.to_regclass(format('%I.%I', v_schema, s.tbl)) IS NOT NULL
    LOOP
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
