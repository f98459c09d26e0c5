-- audius_indexer doctor(): the database checks, one row each (check_name, ok, detail).
-- Run by src/api/doctor.rs (included at compile time) as the extension owner with search_path =
-- pg_catalog, pg_temp, with $1 = whether the library is preloaded, $2 = the chain head the RPC checks
-- saw (NULL when no endpoint answered), and what doctor() read from public.eth_wallet_balances as
-- that table's owner: $3 = its rows (NULL: the table is missing), $4 = rows stamped above $2, $5 =
-- their highest stamp. No superuser-only setting is read. health() runs the same checks with $2 NULL
-- (no RPC) and $6 = true: $3 is then sweep_status.wallets, an estimate from pg_class.reltuples.
SELECT 'table eth_wallet_balances', $3 IS NOT NULL,
       coalesce('rows: ' || $3 || CASE WHEN $6 THEN ' (estimate: pg_class.reltuples)' ELSE '' END, 'missing')
UNION ALL
-- The dedupe GINs must have fastupdate off: with a pending list, every `@>` lookup of the triggers
-- also scans the list, and a burst of completions (a challenge catch-up) slows down quadratically.
SELECT 'index ' || n.idx,
       coalesce(i.indisvalid, false) AND NOT (n.dedupe_gin AND NOT 'fastupdate=off' = ANY (coalesce(c.reloptions, '{}'))),
       CASE WHEN i.indexrelid IS NULL THEN 'missing'
            WHEN NOT i.indisvalid THEN 'INVALID (a failed CREATE INDEX CONCURRENTLY): run sql/indexes.sql'
            WHEN n.dedupe_gin AND NOT 'fastupdate=off' = ANY (coalesce(c.reloptions, '{}'))
            THEN 'valid, but fastupdate is on: every dedupe lookup also scans the GIN pending list; run sql/indexes.sql'
            ELSE 'valid' END
  FROM (VALUES ('eth_wallet_balances_updated_at_idx', 'eth_wallet_balances', false),
               ('ix_notification_cooldown_user_ids', 'notification', true),
               ('ix_notification_challenge_reward_user_ids', 'notification', true),
               ('ix_user_events_blocknumber', 'user_events', false),
               ('ix_user_events_referrer', 'user_events', false)) AS n(idx, tbl, dedupe_gin)
  LEFT JOIN pg_class c ON c.relname = n.idx AND c.relnamespace = 'public'::regnamespace
  LEFT JOIN pg_index i ON i.indexrelid = c.oid
 WHERE to_regclass('public.' || n.tbl) IS NOT NULL
UNION ALL
SELECT 'trigger ' || t.tgname, p.pronamespace = 'audius_indexer'::regnamespace,
       'calls ' || p.oid::regprocedure::text
  FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
 WHERE t.tgname IN ('on_user_challenge', 'on_challenge_disbursement', 'on_sol_reward_disbursement')
   AND NOT t.tgisinternal
UNION ALL
-- The three workers, one row each where it applies (the challenges worker where Audius's
-- user_events exists): running here, off by its setting, or why it is not running.
SELECT w.name || ' worker', w.off OR a.pid IS NOT NULL,
       coalesce('running, pid ' || a.pid,
                CASE WHEN w.off AND w.off_detail IS NOT NULL
                     THEN w.off_detail
                     WHEN $1 AND pg_catalog.pg_is_in_recovery()
                     THEN 'standby: the worker starts after promotion'
                     WHEN $1
                     THEN 'not running in this database (audius_indexer.database = '
                          || coalesce(pg_catalog.current_setting('audius_indexer.database', true), '?') || ')'
                     ELSE 'not preloaded: add audius_indexer to shared_preload_libraries, or schedule '
                          || w.by_hand || ' with pg_cron' END)
  FROM (VALUES ('sweep', NOT coalesce(pg_catalog.current_setting('audius_indexer.sweep_enabled', true), 'on')::bool,
                NULL, 'CALL audius_indexer.sweep()', true),
               ('challenges', coalesce(pg_catalog.current_setting('audius_indexer.challenges_interval', true), '30s') IN ('0', '0ms'),
                'off (audius_indexer.challenges_interval = 0)', 'audius_indexer.process_user_event_challenges()',
                to_regclass('public.user_events') IS NOT NULL),
               ('follow', coalesce(pg_catalog.current_setting('audius_indexer.follow_interval', true), '5s') IN ('0', '0ms'),
                'off (audius_indexer.follow_interval = 0)', 'audius_indexer.follow_transfers()', true))
         AS w(name, off, off_detail, by_hand, applies)
  LEFT JOIN LATERAL (SELECT pid FROM pg_catalog.pg_stat_activity
                      WHERE backend_type = 'audius_indexer ' || w.name AND datname = pg_catalog.current_database()
                      LIMIT 1) a ON true
 WHERE w.applies
UNION ALL
SELECT 'follow transfers',
       f.last_error IS NULL OR f.last_error_at < f.last_step_finished,
       format('checkpoint %s, head %s, lag %s blocks / %s s, %s pending wallet(s), %s reorg(s), last step %s%s',
              coalesce(f.checkpoint::text, 'none (first step starts at the head)'), coalesce(f.head::text, '-'),
              coalesce(f.lag_blocks::text, '-'), coalesce(f.lag_seconds::text, '-'), f.pending_wallets, f.reorgs,
              coalesce(f.last_step_finished::text, 'never'),
              CASE WHEN f.last_error IS NOT NULL AND (f.last_step_finished IS NULL OR f.last_error_at >= f.last_step_finished)
                   THEN ', failed: ' || f.last_error ELSE '' END)
  FROM audius_indexer.follow_status f
UNION ALL
SELECT 'challenge processor ' || s.challenge_id,
       s.last_error IS NULL OR s.last_error_at < s.last_run_at,
       format('checkpoint %s, lag %s blocks, last run %s%s', s.checkpoint, coalesce(s.lag_blocks::text, '-'),
              coalesce(s.last_run_at::text, 'never'),
              CASE WHEN s.last_error IS NOT NULL AND s.last_error_at >= s.last_run_at
                   THEN ', failed: ' || s.last_error ELSE '' END)
  FROM audius_indexer.challenge_processor_status s
 WHERE to_regclass('public.user_events') IS NOT NULL
UNION ALL
SELECT 'rows stamped above the chain head', $4 = 0,
       CASE WHEN $4 = 0 THEN 'none above head block ' || $2
            ELSE $4 || ' row(s) with blocknumber > head block ' || $2 || ' (max ' || $5
                 || '): the block guard keeps every read from updating them; check the node and RESET their blocknumber' END
 WHERE $2 IS NOT NULL AND $3 IS NOT NULL
UNION ALL
SELECT 'search_path safety', roles IS NULL,
       coalesce('non-superuser roles that may CREATE in schema public, where the Audius triggers fired by the '
                || 'extension''s writes (as the tables'' owners) look up the names they do not qualify: ' || roles
                || '. REVOKE CREATE ON SCHEMA public FROM them (a database upgraded from PostgreSQL 14 or older '
                || 'still grants it to PUBLIC), or accept that they can run code as those owners.',
                'no role but superusers may CREATE in schema public')
  FROM (SELECT string_agg(r.rolname, ', ' ORDER BY r.rolname) AS roles FROM pg_catalog.pg_roles r
         WHERE NOT r.rolsuper AND r.rolname !~ '^pg_'
           AND pg_catalog.has_schema_privilege(r.oid, 'public', 'CREATE')) AS s
UNION ALL
SELECT 'database CREATE privilege', roles IS NULL,
       coalesce('non-superuser roles that may CREATE schemas in this database (a schema named after a role '
                || 'is searched first by "$user" in the default search_path of sessions of that role): ' || roles
                || '. The extension pins its own search_path and never uses "$user"; REVOKE CREATE ON DATABASE '
                || 'from roles that do not need it.',
                'no role but superusers may CREATE schemas in this database')
  FROM (SELECT string_agg(r.rolname, ', ' ORDER BY r.rolname) AS roles FROM pg_catalog.pg_roles r
         WHERE NOT r.rolsuper AND r.rolname !~ '^pg_'
           AND pg_catalog.has_database_privilege(r.oid, pg_catalog.current_database(), 'CREATE')) AS s
UNION ALL
-- Who owns the Audius tables the extension writes, and the triggers on them: their code runs as
-- the table owner when the extension writes (never as the extension owner).
SELECT 'owner of ' || t.tbl, true,
       'owned by ' || pg_catalog.pg_get_userbyid(c.relowner)
       || CASE WHEN r.rolsuper THEN ' (superuser)' ELSE '' END
       || '; the extension writes it as that role'
       || coalesce('; triggers: ' || (SELECT string_agg(tg.tgname || ' → ' || tg.tgfoid::pg_catalog.regprocedure::text
                                                        || ' (function owner ' || pg_catalog.pg_get_userbyid(p.proowner) || ')',
                                                        ', ' ORDER BY tg.tgname)
                                        FROM pg_catalog.pg_trigger tg JOIN pg_catalog.pg_proc p ON p.oid = tg.tgfoid
                                       WHERE tg.tgrelid = c.oid AND NOT tg.tgisinternal), '; no triggers')
  FROM (VALUES ('public.eth_wallet_balances'), ('public.eth_indexer_checkpoints'),
               ('public.user_challenges'), ('public.indexing_checkpoints')) AS t(tbl)
  JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(t.tbl)
  JOIN pg_catalog.pg_roles r ON r.oid = c.relowner
UNION ALL
-- The paths of this database: off until the DBA turns them on; stopped when a second writer was
-- detected (the Go eth-indexer or the Go challenge job still writing).
SELECT 'path ' || p.path, p.state <> 'stopped',
       CASE p.state
         WHEN 'off' THEN 'off: its worker does nothing (SELECT audius_indexer.enable(''' || p.path || ''') to turn it on)'
         WHEN 'on' THEN 'on since ' || coalesce(p.changed_at::text, '?') || coalesce(' (by ' || p.changed_by || ')', '')
         ELSE 'STOPPED at ' || coalesce(p.stopped_at::text, '?') || ': ' || coalesce(p.stopped_reason, '?')
              || '. Stop the other writer and SELECT audius_indexer.enable(''' || p.path
              || '''), or SELECT audius_indexer.disable(''' || p.path || ''') to hand over'
       END
  FROM audius_indexer.paths p
UNION ALL
SELECT 'sweep status', last_error IS NULL OR last_error_at < last_tick_finished,
       format('last tick %s, lag %s, %s wallets in back-off%s', coalesce(last_tick_finished::text, 'never'),
              coalesce(lag::text, '-'), wallets_in_backoff,
              coalesce(', last error: ' || last_error, ''))
  FROM audius_indexer.sweep_status
    
