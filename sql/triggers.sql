-- audius_indexer: switching the three Audius dedupe triggers to the Rust functions and back.
--
-- install_triggers()   re-points on_user_challenge / on_challenge_disbursement / on_sol_reward_disbursement
--                      (same names, same events, same tables) at audius_indexer.handle_*() and remembers,
--                      in audius_indexer.trigger_install_state, which function each trigger called before.
-- uninstall_triggers() puts back exactly what was there before (the recorded trigger definition); where
--                      no trigger existed before, it drops ours.
--
-- Both take the schema holding the Audius tables (default 'public'), run as the caller (SECURITY INVOKER:
-- the caller must own the tables, as for any CREATE TRIGGER), and are atomic (one function call = one
-- transaction step; any error leaves every trigger as it was). CREATE OR REPLACE TRIGGER takes a
-- SHARE ROW EXCLUSIVE lock on each table for the duration of the transaction.
--
-- Note: while the triggers call audius_indexer functions, DROP EXTENSION audius_indexer refuses to run
-- (the triggers depend on the functions). Run uninstall_triggers() first; never use CASCADE, which would
-- drop the Audius triggers themselves.

CREATE TABLE audius_indexer.trigger_install_state (
    table_schema        text        NOT NULL,
    table_name          text        NOT NULL,
    trigger_name        text        NOT NULL,
    previous_function   text,
    previous_definition text,
    previous_enabled    "char",
    installed_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT trigger_install_state_pkey PRIMARY KEY (table_schema, table_name, trigger_name)
);
COMMENT ON TABLE audius_indexer.trigger_install_state IS
    'One row per Audius trigger re-pointed by audius_indexer.install_triggers(): the function it called '
    'before (previous_function, regprocedure text) and its full definition (previous_definition, '
    'pg_get_triggerdef) and firing state (previous_enabled, pg_trigger.tgenabled). All NULL when no trigger '
    'existed before. Read by uninstall_triggers().';
-- Keep the bookkeeping in pg_dump output, so a restored database can still be uninstalled.
SELECT pg_catalog.pg_extension_config_dump('audius_indexer.trigger_install_state', '');

-- The three triggers: table, trigger name, events, Rust function, and the pg_trigger.tgtype of
-- `AFTER <events> ... FOR EACH ROW` (ROW 1 | INSERT 4 | UPDATE 16).
CREATE FUNCTION audius_indexer.trigger_specs()
RETURNS TABLE (table_name text, trigger_name text, events text, function_signature text, tgtype smallint)
LANGUAGE sql IMMUTABLE PARALLEL SAFE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    VALUES ('user_challenges',          'on_user_challenge',          'INSERT OR UPDATE',
            'audius_indexer.handle_on_user_challenge()',       21::smallint),
           ('challenge_disbursements',  'on_challenge_disbursement',  'INSERT',
            'audius_indexer.handle_challenge_disbursement()',  5::smallint),
           ('sol_reward_disbursements', 'on_sol_reward_disbursement', 'INSERT',
            'audius_indexer.handle_sol_reward_disbursement()', 5::smallint)
$$;
COMMENT ON FUNCTION audius_indexer.trigger_specs() IS
    'The Audius triggers install_triggers() manages: table, trigger name, events (AFTER ... FOR EACH ROW), '
    'Rust function, expected pg_trigger.tgtype.';

-- ALTER TABLE ... {ENABLE|DISABLE} TRIGGER clause for a pg_trigger.tgenabled value ('O' = default).
-- Points trigger_name on target_schema.table_name at function_signature (AFTER events FOR EACH ROW)
-- and gives it the firing state tgenabled ('O' origin/default, 'D' disabled, 'R' replica, 'A'
-- always): the replacement fires in the same situations as the trigger it replaces.
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

-- ALTER TABLE ... {DISABLE | ENABLE REPLICA | ENABLE ALWAYS} TRIGGER for a firing state other than
-- the default ('O' or NULL: nothing to do).
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

-- The tables of trigger_specs() must all exist in target_schema (checked before anything changes).
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

CREATE FUNCTION audius_indexer.install_triggers(target_schema text DEFAULT 'public')
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
COMMENT ON FUNCTION audius_indexer.install_triggers(text) IS
    'Re-points the Audius triggers on_user_challenge, on_challenge_disbursement and on_sol_reward_disbursement '
    '(tables in target_schema) at the Rust functions audius_indexer.handle_*(), recording in '
    'audius_indexer.trigger_install_state what each called before. Idempotent. Undo with uninstall_triggers().';

CREATE FUNCTION audius_indexer.uninstall_triggers(target_schema text DEFAULT 'public')
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
COMMENT ON FUNCTION audius_indexer.uninstall_triggers(text) IS
    'Undoes install_triggers(target_schema): each trigger that still calls audius_indexer.handle_*() gets back '
    'its recorded previous definition, or is dropped when there was no trigger before.';

REVOKE ALL ON FUNCTION audius_indexer.install_triggers(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION audius_indexer.uninstall_triggers(text) FROM PUBLIC;
