-- audius_indexer 0.2.0 -> 0.3.0 (ALTER EXTENSION audius_indexer UPDATE TO '0.3.0').
--
-- Hand-written; tests/upgrade/test_upgrade.py proves that 0.2.0 (and 0.1.0) + the upgrade scripts have the
-- same catalog as a fresh CREATE EXTENSION of 0.3.0 and that every row survives. What changed
-- (least privilege, docs/security.md):
--   * every statement on an Audius table runs as that table's owner in a security-restricted
--     operation (src/privilege.rs, src/audius_tables.rs): _upsert_balances(), _challenge_checkpoints()
--     and seed_challenge_checkpoints() become C functions; _stale_batch() is gone (the sweep claims
--     its batch in two statements: backed-off wallets from wallet_failures, the stalest rows of
--     eth_wallet_balances as its owner); _follow_save_checkpoint() and the 4-argument _follow_reorg()
--     give way to _follow_save_block() and _follow_reorg(bigint, bigint), which touch only the
--     extension's own tables;
--   * follow_transfers(), process_user_event_challenges(), seed_challenge_checkpoints() and
--     _challenge_checkpoints() run with search_path = pg_catalog, pg_temp (public no longer listed);
--   * reset_sweep_status() is SECURITY DEFINER (it was granted to audius_indexer_operator but raised
--     42501 for it).
-- Monitoring (section "monitoring" at the end): the role audius_indexer_monitor, health(),
-- rpc_endpoint_errors_server(), sweep_status without a scan of eth_wallet_balances.
-- New settings (worker_role) come with the new library, not with SQL.

\echo Use "ALTER EXTENSION audius_indexer UPDATE TO '0.3.0'" to load this file. \quit

-- ---------------------------------------------------------------------------------------------------
-- the balance upsert: as the owner of public.eth_wallet_balances
-- ---------------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION audius_indexer."_upsert_balances"(
	"wallets" TEXT[],
	"balances" NUMERIC[],
	"blocks" bigint[],
	"only_if_not_older" bool
) RETURNS SETOF TEXT
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'upsert_balances_as_owner_wrapper';

DROP FUNCTION audius_indexer._stale_batch(integer);

-- ---------------------------------------------------------------------------------------------------
-- the event path: the checkpoint and eth_wallet_balances are written by the library as their owners
-- ---------------------------------------------------------------------------------------------------
DROP FUNCTION audius_indexer._follow_save_checkpoint(text, bigint, text, bigint);
DROP FUNCTION audius_indexer._follow_reorg(text, bigint, bigint, text[]);

CREATE FUNCTION audius_indexer._follow_save_block(p_block bigint, p_hash text, p_time bigint)
RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
  INSERT INTO audius_indexer.follow_blocks (block, hash, block_time)
  VALUES (p_block, p_hash, pg_catalog.to_timestamp(p_time))
  ON CONFLICT (block) DO UPDATE SET hash = EXCLUDED.hash, block_time = EXCLUDED.block_time;
  DELETE FROM audius_indexer.follow_blocks WHERE block < p_block - 10000;
$$;

CREATE FUNCTION audius_indexer._follow_reorg(p_checkpoint bigint, p_ancestor bigint)
RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
  DELETE FROM audius_indexer.follow_blocks WHERE block > p_ancestor;
  UPDATE audius_indexer.follow_state
     SET reorgs = reorgs + 1, last_reorg_at = clock_timestamp(),
         last_reorg_block = p_checkpoint, last_reorg_ancestor = p_ancestor;
$$;

REVOKE EXECUTE ON FUNCTION audius_indexer._follow_save_block(bigint, text, bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION audius_indexer._follow_reorg(bigint, bigint) FROM PUBLIC;

ALTER FUNCTION audius_indexer.follow_transfers(bigint) SET search_path = pg_catalog, pg_temp;

-- ---------------------------------------------------------------------------------------------------
-- the challenge processors: the Audius tables as the owner of user_challenges
-- ---------------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION audius_indexer."_challenge_checkpoints"() RETURNS TABLE (
	"challenge_id" TEXT,
	"checkpoint" bigint,
	"head" bigint
)
STRICT STABLE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'challenge_checkpoints_wrapper';
ALTER FUNCTION audius_indexer._challenge_checkpoints() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION audius_indexer."seed_challenge_checkpoints"() RETURNS TABLE (
	"tablename" TEXT,
	"last_checkpoint" bigint
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'seed_challenge_checkpoints_wrapper';
ALTER FUNCTION audius_indexer.seed_challenge_checkpoints() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION audius_indexer.seed_challenge_checkpoints() IS
  'Cutover "start from now" (Audius migration 0211): sets the m/r/rv/rd checkpoints to max(user_events.blocknumber) where absent (ON CONFLICT DO NOTHING) and pins the r/rv verification scan to max(users.blocknumber); returns the four checkpoints. Reads and writes the Audius tables as their owners.';

ALTER FUNCTION audius_indexer.process_user_event_challenges(integer) SET search_path = pg_catalog, pg_temp;

-- ---------------------------------------------------------------------------------------------------
-- small fixes
-- ---------------------------------------------------------------------------------------------------
ALTER FUNCTION audius_indexer.reset_sweep_status() SECURITY DEFINER;

-- uninstall_triggers() reads whether a trigger is ours in the same lookup (same behaviour, fewer variables).
CREATE OR REPLACE FUNCTION audius_indexer.uninstall_triggers(target_schema text DEFAULT 'public')
RETURNS TABLE (table_name text, trigger_name text, restored_function text, action text)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s        record;
    v_trig   record;
    v_state  record;
BEGIN
    PERFORM audius_indexer._require_trigger_tables('uninstall_triggers', target_schema,
        'Pass the schema that held the Audius tables when install_triggers() ran.');

    FOR s IN SELECT * FROM audius_indexer.trigger_specs() LOOP
        SELECT t.oid, t.tgfoid = to_regprocedure(s.function_signature) AS ours INTO v_trig
          FROM pg_trigger t
         WHERE t.tgrelid = to_regclass(format('%I.%I', target_schema, s.table_name))
           AND t.tgname = s.trigger_name AND NOT t.tgisinternal;

        SELECT st.previous_function, st.previous_definition, st.previous_enabled INTO v_state
          FROM audius_indexer.trigger_install_state st
         WHERE st.table_schema = target_schema AND st.table_name = s.table_name AND st.trigger_name = s.trigger_name;

        table_name := format('%I.%I', target_schema, s.table_name);
        trigger_name := s.trigger_name;
        restored_function := NULL;

        IF v_trig.oid IS NULL OR v_trig.ours IS NOT TRUE THEN
            -- Not pointing at us (never installed, or re-pointed by someone since): leave it alone.
            action := CASE WHEN v_trig.oid IS NULL THEN 'absent, nothing to do' ELSE 'not ours, left alone' END;
        ELSIF v_state.previous_definition IS NOT NULL THEN
            IF to_regprocedure(v_state.previous_function) IS NULL THEN
                RAISE EXCEPTION 'audius_indexer.uninstall_triggers: cannot restore %.%: the function it called before (%) no longer exists',
                                target_schema, s.trigger_name, v_state.previous_function
                    USING ERRCODE = 'undefined_function',
                          HINT = 'Recreate that function (or drop the trigger yourself), then run uninstall_triggers() again.';
            END IF;
            EXECUTE format('DROP TRIGGER %I ON %I.%I', s.trigger_name, target_schema, s.table_name);
            EXECUTE v_state.previous_definition;
            PERFORM audius_indexer._set_trigger_enabled(target_schema, s.table_name, s.trigger_name,
                                                        v_state.previous_enabled);
            restored_function := v_state.previous_function;
            action := 'restored';
        ELSE
            EXECUTE format('DROP TRIGGER %I ON %I.%I', s.trigger_name, target_schema, s.table_name);
            action := 'dropped (no trigger before install)';
        END IF;

        DELETE FROM audius_indexer.trigger_install_state st
         WHERE st.table_schema = target_schema AND st.table_name = s.table_name AND st.trigger_name = s.trigger_name;
        RETURN NEXT;
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------------------------------
-- paths: nothing acts until the DBA turns a path on (sql/paths.sql, src/paths.rs)
-- ---------------------------------------------------------------------------------------------------
ALTER TABLE audius_indexer.follow_state ADD COLUMN written_checkpoint bigint;

CREATE TABLE audius_indexer.paths (
  path           text PRIMARY KEY CHECK (path IN ('sweep', 'follow', 'challenges', 'enroll')),
  state          text NOT NULL DEFAULT 'off' CHECK (state IN ('off', 'on', 'stopped')),
  changed_at     timestamptz,
  changed_by     text,
  stopped_reason text,
  stopped_at     timestamptz
);
-- An installation upgraded in place keeps doing what it did: the paths its settings ran stay on
-- (the DBA turns off what should not run). A fresh installation starts with every path off.
INSERT INTO audius_indexer.paths (path, state, changed_at, changed_by)
SELECT p, 'on', pg_catalog.now(), 'ALTER EXTENSION UPDATE' FROM pg_catalog.unnest(ARRAY['sweep', 'follow', 'challenges']) AS p;
-- enroll is new in 0.3.0 (its triggers are not installed yet): off.
INSERT INTO audius_indexer.paths (path) VALUES ('enroll');
SELECT pg_catalog.pg_extension_config_dump('audius_indexer.paths', '');
COMMENT ON TABLE audius_indexer.paths IS
  'Per-database state of the four paths (off, on, stopped by a detected second writer): set with audius_indexer.enable(path) / disable(path).';

CREATE FUNCTION audius_indexer._stop_path(p_path text, p_reason text) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
  UPDATE audius_indexer.paths
     SET state = 'stopped', stopped_reason = p_reason, stopped_at = pg_catalog.clock_timestamp()
   WHERE path = p_path AND state = 'on';
$$;
REVOKE EXECUTE ON FUNCTION audius_indexer._stop_path(text, text) FROM PUBLIC;

CREATE VIEW audius_indexer.path_status AS
SELECT p.path, p.state, p.changed_at, p.changed_by, p.stopped_reason, p.stopped_at,
       (SELECT a.pid FROM pg_catalog.pg_stat_activity a
         WHERE a.backend_type = 'audius_indexer ' || p.path AND a.datname = pg_catalog.current_database()
         LIMIT 1) AS worker_pid
  FROM audius_indexer.paths p
 ORDER BY pg_catalog.array_position(ARRAY['sweep', 'follow', 'challenges', 'enroll'], p.path);
COMMENT ON VIEW audius_indexer.path_status IS
  'The four paths of this database: state (off / on / stopped), who changed it and when, why a path stopped (a second writer), the worker pid (none for enroll: it is the enrollment triggers).';
GRANT SELECT ON audius_indexer.path_status TO audius_indexer_operator;

CREATE FUNCTION audius_indexer."enable"(
	"path" TEXT
) RETURNS TEXT
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'enable_wrapper';
CREATE FUNCTION audius_indexer."disable"(
	"path" TEXT
) RETURNS TEXT
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'disable_wrapper';
ALTER FUNCTION audius_indexer.enable(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION audius_indexer.disable(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION audius_indexer.enable(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION audius_indexer.disable(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audius_indexer.enable(text) TO audius_indexer_operator;
GRANT EXECUTE ON FUNCTION audius_indexer.disable(text) TO audius_indexer_operator;

-- ---------------------------------------------------------------------------------------------------
-- monitoring
-- ---------------------------------------------------------------------------------------------------
-- The read-only role audius_indexer_monitor (as sql/bootstrap.sql creates it), health() (doctor()'s
-- database checks without RPC or a scan of eth_wallet_balances), rpc_endpoint_errors_server() (RPC
-- failures per host and kind; the counters come with the new library), and sweep_status without a
-- scan of eth_wallet_balances (wallets is an estimate; lag_excluding_failing walks the index).
DO $monitor_role$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'audius_indexer_monitor') THEN
    CREATE ROLE audius_indexer_monitor NOLOGIN;
  END IF;
END
$monitor_role$;

CREATE FUNCTION audius_indexer."health"() RETURNS TABLE (
	"check_name" TEXT,
	"ok" bool,
	"detail" TEXT
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'health_wrapper';

CREATE FUNCTION audius_indexer."rpc_endpoint_errors_server"() RETURNS TABLE (
	"host" TEXT,
	"kind" TEXT,
	"failures" bigint
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'rpc_endpoint_errors_server_wrapper';

-- sweep_status itself is replaced once, in the progress section below (its cycle columns too).
COMMENT ON VIEW audius_indexer.sweep_status IS
  'Last sweep tick (worker, CALL sweep() or refresh_stale()), totals, last error, lag (now() - min(updated_at)), wallets (an estimate: pg_class.reltuples), wallets in back-off, the worker pid of this database.';

ALTER FUNCTION audius_indexer.health() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION audius_indexer.health() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION audius_indexer.rpc_endpoint_errors_server() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audius_indexer.health() TO audius_indexer_operator, audius_indexer_monitor;
GRANT EXECUTE ON FUNCTION audius_indexer.rpc_endpoint_errors_server() TO audius_indexer_operator, audius_indexer_monitor;
GRANT EXECUTE ON FUNCTION audius_indexer.rpc_endpoint_stats_server() TO audius_indexer_monitor;
GRANT USAGE ON SCHEMA audius_indexer TO audius_indexer_monitor;
GRANT SELECT ON audius_indexer.sweep_status, audius_indexer.follow_status,
                audius_indexer.challenge_processor_status, audius_indexer.path_status TO audius_indexer_monitor;
GRANT EXECUTE ON FUNCTION audius_indexer._challenge_checkpoints() TO audius_indexer_monitor;

-- ---------------------------------------------------------------------------------------------------
-- progress on long work: the follower's step range and per-range progress, the sweep's cycle
-- ---------------------------------------------------------------------------------------------------
ALTER TABLE audius_indexer.follow_state ADD COLUMN step_from bigint, ADD COLUMN step_to bigint,
  ADD COLUMN step_done bigint;
ALTER TABLE audius_indexer.sweep_state ADD COLUMN cycle_started timestamptz,
  ADD COLUMN cycle_checked bigint NOT NULL DEFAULT 0, ADD COLUMN cycle_rows bigint;

CREATE FUNCTION audius_indexer._follow_step_range(p_from bigint, p_to bigint) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
  UPDATE audius_indexer.follow_state SET step_from = p_from, step_to = p_to, step_done = NULL;
$$;

CREATE FUNCTION audius_indexer._follow_step_done(p_block bigint) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
  UPDATE audius_indexer.follow_state SET step_done = p_block;
$$;
REVOKE EXECUTE ON FUNCTION audius_indexer._follow_step_range(bigint, bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION audius_indexer._follow_step_done(bigint) FROM PUBLIC;

CREATE OR REPLACE FUNCTION audius_indexer._record_tick(
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

CREATE OR REPLACE VIEW audius_indexer.sweep_status AS
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

CREATE OR REPLACE VIEW audius_indexer.follow_status AS
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

-- ---------------------------------------------------------------------------------------------------
-- docs that match the code
-- ---------------------------------------------------------------------------------------------------
COMMENT ON FUNCTION audius_indexer.upsert_wallet_balances(text[], numeric[], bigint[], boolean) IS
  'The Audius eth_wallet_balances upsert (NULLIF/GREATEST block rules), as the table owner; only_if_not_older keeps the balance and block of rows stamped with a newer block and marks them checked (updated_at = now()). Returns the wallets written.';

-- ---------------------------------------------------------------------------------------------------
-- enrollment on link (sql/enrollment.sql, src/enrollment.rs): the enroll path (added to the paths
-- table above, off) and its triggers, installed by the DBA with install_enrollment()
-- ---------------------------------------------------------------------------------------------------
CREATE FUNCTION audius_indexer."enroll_wallet"() RETURNS TRIGGER
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'enroll_wallet_wrapper';

CREATE FUNCTION audius_indexer.enrollment_specs()
RETURNS TABLE (table_name text, trigger_name text, events text, condition text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    VALUES ('users', 'audius_indexer_enroll', 'INSERT OR UPDATE OF wallet, is_current',
            'NEW.is_current AND NEW.wallet IS NOT NULL'),
           ('associated_wallets', 'audius_indexer_enroll', 'INSERT OR UPDATE OF wallet, chain, is_delete',
            'NEW.chain::text = ''eth'' AND NOT NEW.is_delete AND NEW.wallet IS NOT NULL')
$$;
COMMENT ON FUNCTION audius_indexer.enrollment_specs() IS
    'The enrollment triggers install_enrollment() manages: table, trigger name, events (AFTER ... FOR EACH ROW), WHEN condition.';

CREATE FUNCTION audius_indexer.install_enrollment(target_schema text DEFAULT 'public')
RETURNS TABLE (table_name text, trigger_name text, action text)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    s      record;
    v_rel  regclass;
    v_fn   regprocedure := 'audius_indexer.enroll_wallet()'::regprocedure;
    v_trig record;
BEGIN
    -- Check everything first, so a missing table or a foreign trigger fails before anything changed.
    FOR s IN SELECT * FROM audius_indexer.enrollment_specs() LOOP
        v_rel := to_regclass(format('%I.%I', target_schema, s.table_name));
        IF v_rel IS NULL THEN
            RAISE EXCEPTION 'audius_indexer.install_enrollment: table %.% does not exist', target_schema, s.table_name
                USING ERRCODE = 'undefined_table',
                      HINT = 'Run it in the Audius database and pass the schema holding the Audius tables '
                             '(install_enrollment(''public'') by default).';
        END IF;
        IF EXISTS (SELECT FROM pg_trigger t WHERE t.tgrelid = v_rel AND t.tgname = s.trigger_name
                                              AND NOT t.tgisinternal AND t.tgfoid <> v_fn) THEN
            RAISE EXCEPTION 'audius_indexer.install_enrollment: %.% has a trigger named % that calls another function; not replacing it',
                            target_schema, s.table_name, s.trigger_name
                USING ERRCODE = 'duplicate_object';
        END IF;
    END LOOP;

    FOR s IN SELECT * FROM audius_indexer.enrollment_specs() LOOP
        v_rel := to_regclass(format('%I.%I', target_schema, s.table_name));
        SELECT t.oid INTO v_trig FROM pg_trigger t
         WHERE t.tgrelid = v_rel AND t.tgname = s.trigger_name AND NOT t.tgisinternal;
        EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER %s ON %I.%I FOR EACH ROW WHEN (%s) '
                       'EXECUTE FUNCTION audius_indexer.enroll_wallet()',
                       s.trigger_name, s.events, target_schema, s.table_name, s.condition);
        table_name := format('%I.%I', target_schema, s.table_name);
        trigger_name := s.trigger_name;
        action := CASE WHEN v_trig.oid IS NULL THEN 'created' ELSE 'already installed' END;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION audius_indexer.install_enrollment(text) IS
    'Attaches the enrollment trigger audius_indexer_enroll (audius_indexer.enroll_wallet()) to users and '
    'associated_wallets in target_schema: a newly linked wallet gets its eth_wallet_balances row and is queued '
    'for the next follow step while the enroll path is on. Idempotent, atomic; the caller must own the tables. '
    'Undo with uninstall_enrollment().';

CREATE FUNCTION audius_indexer.uninstall_enrollment(target_schema text DEFAULT 'public')
RETURNS TABLE (table_name text, trigger_name text, action text)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s record;
BEGIN
    -- Per spec: does the table hold our trigger (one calling enroll_wallet())? Only those are dropped.
    FOR s IN SELECT e.table_name AS tbl, e.trigger_name AS trg,
                    EXISTS (SELECT FROM pg_trigger t
                             WHERE t.tgrelid = to_regclass(format('%I.%I', target_schema, e.table_name))
                               AND t.tgname = e.trigger_name AND NOT t.tgisinternal
                               AND t.tgfoid = 'audius_indexer.enroll_wallet()'::regprocedure) AS ours
               FROM audius_indexer.enrollment_specs() e LOOP
        IF s.ours THEN
            EXECUTE format('DROP TRIGGER %I ON %I.%I', s.trg, target_schema, s.tbl);
        END IF;
        table_name := format('%I.%I', target_schema, s.tbl);
        trigger_name := s.trg;
        action := CASE WHEN s.ours THEN 'dropped' ELSE 'absent, nothing to do' END;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION audius_indexer.uninstall_enrollment(text) IS
    'Drops the enrollment triggers audius_indexer_enroll that install_enrollment(target_schema) attached; '
    'touches no other trigger.';

REVOKE ALL ON FUNCTION audius_indexer.install_enrollment(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION audius_indexer.uninstall_enrollment(text) FROM PUBLIC;
