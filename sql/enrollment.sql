-- audius_indexer: enrollment on link (src/enrollment.rs). A wallet linked to an Audius user gets its
-- eth_wallet_balances row at once (as Audius's migration 0204_backfill_eth_wallet_balances_tracked.sql
-- seeded them: balance 0, updated_at '1970-01-01') and is queued for the next follow step.
--
-- install_enrollment()   attaches audius_indexer.enroll_wallet() as trigger audius_indexer_enroll to
--                        users (a current row whose wallet is set or changed) and associated_wallets
--                        (chain 'eth', inserted, undeleted or changed). Idempotent: a trigger of ours is
--                        put back into its canonical shape.
-- uninstall_enrollment() drops those two triggers (only ours; nothing else is touched).
--
-- Both take the schema holding the Audius tables (default 'public'), run as the caller (SECURITY
-- INVOKER: the caller must own the tables, as for any CREATE TRIGGER), and are atomic. The triggers do
-- nothing while the 'enroll' path is off (audius_indexer.enable('enroll') turns it on and checks that
-- both are installed in public). They make no RPC call, and an error inside them is a WARNING, never a
-- failed write of Audius's indexer.

-- The two triggers: table, events (AFTER ... FOR EACH ROW) and WHEN condition.
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
