-- audius_indexer 0.1.0 -> 0.2.0 (ALTER EXTENSION audius_indexer UPDATE TO '0.2.0').
--
-- Hand-written; tests/test_upgrade.py proves that 0.1.0 + this script has the same catalog as a fresh
-- CREATE EXTENSION of 0.2.0 (functions with signatures and attributes, views, tables, grants, comments)
-- and that every row of the extension's own tables survives. What changed:
--   * install_triggers() / uninstall_triggers(): no search_path warning (they run with a pinned
--     search_path and cannot see the writers' one); shared helpers _point_trigger(),
--     _set_trigger_enabled(), _require_trigger_tables() replace _trigger_enable_clause();
--   * upsert_wallet_balances(): checks the keys, then calls the new _upsert_balances() (the statement,
--     for the extension's own writers, whose keys are already in the stored form), which runs with
--     search_path pg_catalog, public, pg_temp and every call qualified; rows the block guard leaves
--     alone are marked checked (updated_at = now()), with no second pass over the wallets when every
--     row was written; _clear_failures() looks at wallet_failures once before probing it per wallet;
--     _stale_batch() reads the stalest rows without an anti-join when no wallet is in back-off;
--   * sweep_status: the worker pid of this database only; sweep_enabled NULL-safe;
--   * new: CALL sweep(batch) (commits around its RPC); the event path (follow_transfers(), follow_status,
--     follow_pending, follow_blocks, follow_state); the challenge processors
--     (process_user_event_challenges(), seed_challenge_checkpoints(), challenge_processor_status,
--     challenge_processor_state).
-- New settings (challenges_*, follow_*, confirmations, log_range_blocks, max_reorg_depth,
-- max_block_ahead, rpc_urls_file, rpc_concurrency, rpc_idle_timeout_ms) come with the new library, not with SQL.

\echo Use "ALTER EXTENSION audius_indexer UPDATE TO '0.2.0'" to load this file. \quit

-- ---------------------------------------------------------------------------------------------------
-- changed objects
-- ---------------------------------------------------------------------------------------------------
CREATE FUNCTION audius_indexer._point_trigger(target_schema text, table_name text, trigger_name text,
                                              events text, function_signature text, tgenabled "char")
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER %s ON %I.%I FOR EACH ROW EXECUTE FUNCTION %s',
                   trigger_name, events, target_schema, table_name, function_signature);
    PERFORM audius_indexer._set_trigger_enabled(target_schema, table_name, trigger_name, tgenabled);
END
$$;

CREATE FUNCTION audius_indexer._set_trigger_enabled(target_schema text, table_name text, trigger_name text,
                                                    tgenabled "char")
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF coalesce(tgenabled, 'O') <> 'O' THEN
        EXECUTE format('ALTER TABLE %I.%I %s TRIGGER %I', target_schema, table_name,
                       CASE tgenabled WHEN 'D' THEN 'DISABLE' WHEN 'R' THEN 'ENABLE REPLICA'
                                      WHEN 'A' THEN 'ENABLE ALWAYS' END, trigger_name);
    END IF;
END
$$;

CREATE FUNCTION audius_indexer._require_trigger_tables(caller text, target_schema text, hint text)
RETURNS void
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s record;
BEGIN
    FOR s IN SELECT * FROM audius_indexer.trigger_specs() LOOP
        IF to_regclass(format('%I.%I', target_schema, s.table_name)) IS NULL THEN
            RAISE EXCEPTION 'audius_indexer.%: table %.% does not exist', caller, target_schema, s.table_name
                USING ERRCODE = 'undefined_table', HINT = hint;
        END IF;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION audius_indexer.install_triggers(target_schema text DEFAULT 'public')
RETURNS TABLE (table_name text, trigger_name text, previous_function text, action text)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    s        record;
    v_rel    regclass;
    v_ours   regprocedure;
    v_trig   record;
    v_known  boolean;
BEGIN
    -- Check everything first, so a missing table fails before anything changed.
    PERFORM audius_indexer._require_trigger_tables('install_triggers', target_schema,
        'Run it in the Audius database and pass the schema holding the Audius tables '
        '(install_triggers(''public'') by default).');
    FOR s IN SELECT * FROM audius_indexer.trigger_specs() LOOP
        IF to_regprocedure(s.function_signature) IS NULL THEN
            RAISE EXCEPTION 'audius_indexer.install_triggers: function % does not exist', s.function_signature
                USING ERRCODE = 'undefined_function',
                      HINT = 'The extension is incomplete: ALTER EXTENSION audius_indexer UPDATE, or reinstall it.';
        END IF;
    END LOOP;

    -- Like the Audius functions they replace, the Rust functions name the tables without a schema:
    -- they resolve through the search_path of the session that writes (README: Privileges). This
    -- function runs with a pinned search_path, so it cannot see the writers' one: no check here.

    FOR s IN SELECT * FROM audius_indexer.trigger_specs() LOOP
        v_rel  := to_regclass(format('%I.%I', target_schema, s.table_name));
        v_ours := to_regprocedure(s.function_signature);

        SELECT t.oid, t.tgfoid, t.tgfoid::regprocedure::text AS fn, t.tgenabled,
               pg_get_triggerdef(t.oid) AS def, t.tgconstraint <> 0 AS is_constraint,
               (t.tgtype = s.tgtype AND t.tgnargs = 0 AND t.tgqual IS NULL
                AND coalesce(array_length(t.tgattr::int2[], 1), 0) = 0) AS canonical
          INTO v_trig
          FROM pg_trigger t
         WHERE t.tgrelid = v_rel AND t.tgname = s.trigger_name AND NOT t.tgisinternal;

        IF v_trig.oid IS NOT NULL AND v_trig.is_constraint THEN
            RAISE EXCEPTION 'audius_indexer.install_triggers: %.% has a constraint trigger named %; not replacing it',
                            target_schema, s.table_name, s.trigger_name
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;

        v_known := EXISTS (SELECT 1 FROM audius_indexer.trigger_install_state st
                            WHERE st.table_schema = target_schema AND st.table_name = s.table_name
                              AND st.trigger_name = s.trigger_name);

        IF v_trig.oid IS NOT NULL AND v_trig.tgfoid = v_ours THEN
            -- Already ours: keep what we recorded at the first install (re-running is a no-op). A trigger
            -- that calls ours with other events, arguments, a WHEN clause or column list is put back
            -- into the canonical shape (firing state kept).
            IF NOT v_known THEN
                INSERT INTO audius_indexer.trigger_install_state AS st
                       (table_schema, table_name, trigger_name, previous_function, previous_definition,
                        previous_enabled)
                VALUES (target_schema, s.table_name, s.trigger_name, NULL, NULL, NULL);
            END IF;
            action := 'already installed';
            IF NOT v_trig.canonical THEN
                PERFORM audius_indexer._point_trigger(target_schema, s.table_name, s.trigger_name, s.events,
                                                      s.function_signature, v_trig.tgenabled);
                action := 'repaired';
            END IF;
            table_name := format('%I.%I', target_schema, s.table_name);
            trigger_name := s.trigger_name;
            SELECT st.previous_function INTO previous_function FROM audius_indexer.trigger_install_state st
             WHERE st.table_schema = target_schema AND st.table_name = s.table_name AND st.trigger_name = s.trigger_name;
            RETURN NEXT;
            CONTINUE;
        END IF;

        INSERT INTO audius_indexer.trigger_install_state AS st
               (table_schema, table_name, trigger_name, previous_function, previous_definition,
                previous_enabled, installed_at)
        VALUES (target_schema, s.table_name, s.trigger_name,
                CASE WHEN v_trig.oid IS NULL THEN NULL ELSE v_trig.fn END,
                CASE WHEN v_trig.oid IS NULL THEN NULL ELSE v_trig.def END,
                CASE WHEN v_trig.oid IS NULL THEN NULL ELSE v_trig.tgenabled END,
                now())
        ON CONFLICT (table_schema, table_name, trigger_name) DO UPDATE
           SET previous_function   = EXCLUDED.previous_function,
               previous_definition = EXCLUDED.previous_definition,
               previous_enabled    = EXCLUDED.previous_enabled,
               installed_at        = EXCLUDED.installed_at;

        -- The replacement fires in the same situations as the trigger it replaces (a disabled Audius
        -- trigger stays disabled; ENABLE REPLICA / ALWAYS are kept).
        PERFORM audius_indexer._point_trigger(target_schema, s.table_name, s.trigger_name, s.events,
                                              s.function_signature,
                                              CASE WHEN v_trig.oid IS NULL THEN NULL ELSE v_trig.tgenabled END);

        table_name := format('%I.%I', target_schema, s.table_name);
        trigger_name := s.trigger_name;
        previous_function := CASE WHEN v_trig.oid IS NULL THEN NULL ELSE v_trig.fn END;
        action := CASE WHEN v_trig.oid IS NULL THEN 'created' ELSE 'replaced' END;
        RETURN NEXT;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION audius_indexer.uninstall_triggers(target_schema text DEFAULT 'public')
RETURNS TABLE (table_name text, trigger_name text, restored_function text, action text)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    s        record;
    v_rel    regclass;
    v_ours   regprocedure;
    v_trig   record;
    v_state  record;
BEGIN
    PERFORM audius_indexer._require_trigger_tables('uninstall_triggers', target_schema,
        'Pass the schema that held the Audius tables when install_triggers() ran.');

    FOR s IN SELECT * FROM audius_indexer.trigger_specs() LOOP
        v_rel  := to_regclass(format('%I.%I', target_schema, s.table_name));
        v_ours := to_regprocedure(s.function_signature);

        SELECT t.oid, t.tgfoid INTO v_trig
          FROM pg_trigger t
         WHERE t.tgrelid = v_rel AND t.tgname = s.trigger_name AND NOT t.tgisinternal;

        SELECT st.previous_function, st.previous_definition, st.previous_enabled INTO v_state
          FROM audius_indexer.trigger_install_state st
         WHERE st.table_schema = target_schema AND st.table_name = s.table_name AND st.trigger_name = s.trigger_name;

        table_name := format('%I.%I', target_schema, s.table_name);
        trigger_name := s.trigger_name;
        restored_function := NULL;

        IF v_trig.oid IS NULL OR v_trig.tgfoid IS DISTINCT FROM v_ours THEN
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

DROP FUNCTION audius_indexer._trigger_enable_clause("char");

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

CREATE OR REPLACE FUNCTION audius_indexer.upsert_wallet_balances(
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
CREATE OR REPLACE FUNCTION audius_indexer._stale_batch(batch integer)
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

CREATE OR REPLACE FUNCTION audius_indexer._clear_failures(wallets text[])
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

CREATE OR REPLACE VIEW audius_indexer.sweep_status AS
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

-- ---------------------------------------------------------------------------------------------------
-- CALL sweep()
-- ---------------------------------------------------------------------------------------------------
CREATE PROCEDURE audius_indexer.sweep(batch integer DEFAULT NULL)
LANGUAGE c AS 'MODULE_PATHNAME', 'audius_indexer_sweep_procedure';
COMMENT ON PROCEDURE audius_indexer.sweep(integer) IS
  'One sweep tick that commits around its RPC reads (no snapshot held while waiting for the node): the batch stalest wallets (NULL = audius_indexer.sweep_batch_size). The pg_cron command. Outcome recorded in sweep_status.';

-- ---------------------------------------------------------------------------------------------------
-- the event path (sql/follow.sql as of 0.2.0)
-- ---------------------------------------------------------------------------------------------------
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
  last_reorg_ancestor bigint
);
INSERT INTO audius_indexer.follow_state DEFAULT VALUES;

CREATE FUNCTION audius_indexer._follow_step_started() RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
  UPDATE audius_indexer.follow_state SET last_step_started = clock_timestamp();
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

-- The Go eth-indexer's saveCheckpoint (last_block = GREATEST(existing, new), updated_at = now()), plus the
-- block's hash and time.
CREATE FUNCTION audius_indexer._follow_save_checkpoint(p_name text, p_block bigint, p_hash text, p_time bigint)
RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
  INSERT INTO public.eth_indexer_checkpoints AS c (name, last_block, updated_at)
  VALUES (p_name, p_block, now())
  ON CONFLICT (name) DO UPDATE SET last_block = GREATEST(c.last_block, EXCLUDED.last_block), updated_at = now();
  INSERT INTO audius_indexer.follow_blocks (block, hash, block_time)
  VALUES (p_block, p_hash, to_timestamp(p_time))
  ON CONFLICT (block) DO UPDATE SET hash = EXCLUDED.hash, block_time = EXCLUDED.block_time;
  DELETE FROM audius_indexer.follow_blocks WHERE block < p_block - 10000;
$$;

-- A reorg below p_checkpoint with common ancestor p_ancestor: the rows about to be re-read go back
-- to the ancestor's stamp (so the block guard lets the new chain's values in), the checkpoint goes
-- back (the only place it ever moves backwards), hashes above the ancestor are forgotten.
CREATE FUNCTION audius_indexer._follow_reorg(p_name text, p_checkpoint bigint, p_ancestor bigint, p_wallets text[])
RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
  UPDATE public.eth_wallet_balances SET blocknumber = p_ancestor
   WHERE wallet OPERATOR(pg_catalog.=) ANY (p_wallets) AND blocknumber > p_ancestor;
  UPDATE public.eth_indexer_checkpoints SET last_block = p_ancestor, updated_at = now()
   WHERE name = p_name AND last_block > p_ancestor;
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
       pg_catalog.current_setting('audius_indexer.follow_interval', true) AS follow_interval
  FROM audius_indexer.follow_state s
  LEFT JOIN public.eth_indexer_checkpoints c ON c.name = 'audio_transfers'
  LEFT JOIN audius_indexer.follow_blocks b ON b.block = c.last_block;
COMMENT ON VIEW audius_indexer.follow_status IS
  'Transfer-log follower: last step and its counts, checkpoint (eth_indexer_checkpoints audio_transfers), head, lag in blocks and seconds (now - checkpoint block time), pending wallets, reorgs, last error.';
CREATE  FUNCTION audius_indexer."follow_transfers"(
	"max_blocks" bigint DEFAULT NULL /* Option < i64 > */
) RETURNS TABLE (
	"from_block" bigint,  /* Option < i64 > */
	"to_block" bigint,  /* Option < i64 > */
	"logs" INT,  /* i32 */
	"candidates" INT,  /* i32 */
	"tracked" INT,  /* i32 */
	"updated" INT,  /* i32 */
	"skipped" INT,  /* i32 */
	"failed" INT,  /* i32 */
	"checkpoint" bigint  /* Option < i64 > */
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'follow_transfers_wrapper';

-- ---------------------------------------------------------------------------------------------------
-- the challenge processors (sql/challenges.sql as of 0.2.0)
-- ---------------------------------------------------------------------------------------------------
-- audius_indexer: the challenge processors' bookkeeping, checkpoint seeding and status view.
-- The processors themselves are Rust (src/challenges/); their checkpoints live where the Go challenge job
-- keeps them, in the Audius table indexing_checkpoints (`challenges:<id>:last_blocknumber`).

-- One row per processor. The resume positions make "no skipped rows" possible: the Go challenge job resumes from a
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

-- Audius's migration 0211 "start from now": the four checkpoints set to the current maximum
-- user_events.blocknumber where absent. Also pins the verification scan of r/rv to the current maximum
-- users.blocknumber where it has no position yet. The first run after it has nothing to do.
CREATE FUNCTION audius_indexer.seed_challenge_checkpoints()
RETURNS TABLE (tablename text, last_checkpoint bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, public, pg_temp
AS $fn$
DECLARE
  v_head bigint;
BEGIN
  PERFORM pg_catalog.pg_advisory_xact_lock(1635083621, 3);  -- not while a run is in progress
  SELECT COALESCE(max(ue.blocknumber), 0) INTO v_head FROM public.user_events ue;
  INSERT INTO public.indexing_checkpoints AS ic (tablename, last_checkpoint)
  SELECT 'challenges:' || p.id || ':last_blocknumber', v_head
    FROM pg_catalog.unnest(ARRAY['m', 'r', 'rv', 'rd']) AS p(id)
  ON CONFLICT ON CONSTRAINT indexing_checkpoints_pkey DO NOTHING;
  UPDATE audius_indexer.challenge_processor_state s
     SET users_block = (SELECT COALESCE(max(u.blocknumber), 0) FROM public.users u),
         users_user_id = NULL, users_txhash = NULL
   WHERE s.challenge_id IN ('r', 'rv') AND s.users_block IS NULL;
  RETURN QUERY
    SELECT ic.tablename::text, ic.last_checkpoint::bigint
      FROM public.indexing_checkpoints ic
      JOIN pg_catalog.unnest(ARRAY['m', 'r', 'rv', 'rd']) WITH ORDINALITY AS p(id, ord)
        ON ic.tablename = 'challenges:' || p.id || ':last_blocknumber'
     ORDER BY p.ord;
END
$fn$;
COMMENT ON FUNCTION audius_indexer.seed_challenge_checkpoints() IS
  'Cutover "start from now" (Audius''s migration 0211): sets the m/r/rv/rd checkpoints to max(user_events.blocknumber) where absent (ON CONFLICT DO NOTHING) and pins the r/rv verification scan to max(users.blocknumber); returns the four checkpoints.';

-- Checkpoint and head per processor, read at query time (the Audius tables may not exist).
CREATE FUNCTION audius_indexer._challenge_checkpoints()
RETURNS TABLE (challenge_id text, checkpoint bigint, head bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, public, pg_temp
AS $fn$
DECLARE
  v_head bigint;
BEGIN
  IF pg_catalog.to_regclass('public.user_events') IS NULL
     OR pg_catalog.to_regclass('public.indexing_checkpoints') IS NULL THEN
    RETURN QUERY SELECT p.id, NULL::bigint, NULL::bigint
                   FROM pg_catalog.unnest(ARRAY['m', 'r', 'rv', 'rd']) AS p(id);
    RETURN;
  END IF;
  EXECUTE 'SELECT max(blocknumber)::bigint FROM public.user_events' INTO v_head;
  RETURN QUERY EXECUTE
    'SELECT p.id, ic.last_checkpoint::bigint, $1
       FROM pg_catalog.unnest(ARRAY[''m'', ''r'', ''rv'', ''rd'']) AS p(id)
       LEFT JOIN public.indexing_checkpoints ic ON ic.tablename = ''challenges:'' || p.id || '':last_blocknumber'''
    USING v_head;
END
$fn$;

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

CREATE  FUNCTION audius_indexer."process_user_event_challenges"(
	"batch" INT DEFAULT 5000 /* i32 */
) RETURNS TABLE (
	"challenge_id" TEXT,  /* String */
	"dirty_rows" INT,  /* i32 */
	"users" INT,  /* i32 */
	"upserts" INT,  /* i32 */
	"checkpoint_before" bigint,  /* Option < i64 > */
	"checkpoint_after" bigint,  /* Option < i64 > */
	"error" TEXT  /* Option < String > */
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'process_user_event_challenges_wrapper';

-- ---------------------------------------------------------------------------------------------------
-- privileges of the new and changed objects (sql/finalize.sql)
-- ---------------------------------------------------------------------------------------------------
ALTER FUNCTION audius_indexer.upsert_wallet_balances(text[], numeric[], bigint[], boolean) SECURITY DEFINER;
REVOKE EXECUTE ON PROCEDURE audius_indexer.sweep(integer) FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE audius_indexer.sweep(integer) TO audius_indexer_operator;
ALTER FUNCTION audius_indexer.process_user_event_challenges(integer) SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION audius_indexer.seed_challenge_checkpoints() SECURITY DEFINER;
REVOKE EXECUTE ON FUNCTION audius_indexer.process_user_event_challenges(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audius_indexer.process_user_event_challenges(integer) TO audius_indexer_operator;
REVOKE EXECUTE ON FUNCTION audius_indexer.seed_challenge_checkpoints() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audius_indexer.seed_challenge_checkpoints() TO audius_indexer_operator;
ALTER FUNCTION audius_indexer.follow_transfers(bigint) SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
REVOKE EXECUTE ON FUNCTION audius_indexer.follow_transfers(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audius_indexer.follow_transfers(bigint) TO audius_indexer_operator;
GRANT SELECT ON audius_indexer.follow_status, audius_indexer.follow_pending TO audius_indexer_operator;
-- new internal helpers: nobody but the owner
DO $grants$
DECLARE
  f regprocedure;
BEGIN
  FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
           WHERE p.pronamespace = 'audius_indexer'::regnamespace
             AND (p.proname LIKE '\_follow\_%'
                  OR p.proname IN ('_challenge_checkpoints', '_point_trigger', '_set_trigger_enabled', '_upsert_balances',
                                   '_require_trigger_tables'))
  LOOP
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
  END LOOP;
END
$grants$;
ALTER FUNCTION audius_indexer._challenge_checkpoints() SECURITY DEFINER;
GRANT EXECUTE ON FUNCTION audius_indexer._challenge_checkpoints() TO audius_indexer_operator;
GRANT SELECT ON audius_indexer.challenge_processor_status TO audius_indexer_operator;
-- doctor() reads eth_wallet_balances and pg_stat_activity, which an operator may not: it runs as the
-- owner, with a pinned search_path, and only reports.
ALTER FUNCTION audius_indexer.doctor() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
