-- audius_indexer finalize: privileges. Runs last in CREATE EXTENSION.
-- Functions that reach the network or write balances are not for PUBLIC.
REVOKE ALL ON SCHEMA audius_indexer FROM PUBLIC;
GRANT USAGE ON SCHEMA audius_indexer TO audius_indexer_operator;
REVOKE EXECUTE ON FUNCTION audius_indexer.multicall_total_audio_balances(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audius_indexer.multicall_total_audio_balances(text[]) TO audius_indexer_operator;
-- Writers of balances: SECURITY DEFINER (so an operator needs no right on the Audius tables),
-- search_path pinned, EXECUTE only for audius_indexer_operator. Inside, every statement on an Audius
-- table runs as that table's owner in a security-restricted operation (src/privilege.rs), so the
-- Audius triggers those writes fire never run with the extension owner's rights.
ALTER FUNCTION audius_indexer.refresh_wallets(text[], bigint[]) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION audius_indexer.refresh_stale(integer) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION audius_indexer.upsert_wallet_balances(text[], numeric[], bigint[], boolean) SECURITY DEFINER;
DO $grants$
DECLARE
  f regprocedure;
BEGIN
  FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
           WHERE p.pronamespace = 'audius_indexer'::regnamespace
             AND p.proname IN ('refresh_wallets', 'refresh_stale', 'upsert_wallet_balances', 'reset_sweep_status')
  LOOP
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO audius_indexer_operator', f);
  END LOOP;
  -- reset_sweep_status() writes the extension's own sweep_state: granted to the operator, so it
  -- runs as the owner.
  ALTER FUNCTION audius_indexer.reset_sweep_status() SECURITY DEFINER;
  -- internal helpers: nobody but the owner (the SECURITY DEFINER functions run as the owner)
  FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
           WHERE p.pronamespace = 'audius_indexer'::regnamespace AND p.proname LIKE '\_%'
  LOOP
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
  END LOOP;
END
$grants$;
GRANT SELECT ON audius_indexer.sweep_status, audius_indexer.wallet_failures TO audius_indexer_operator;
-- Challenge processors: SECURITY DEFINER for their own state; the Audius tables (user_events, users,
-- challenges, indexing_checkpoints, user_challenges) are read and written as the owner of
-- user_challenges, with search_path = pg_catalog, public, pg_temp, in a security-restricted
-- operation; the on_user_challenge trigger they fire runs as that owner.
ALTER FUNCTION audius_indexer.process_user_event_challenges(integer) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION audius_indexer.seed_challenge_checkpoints() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION audius_indexer.process_user_event_challenges(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audius_indexer.process_user_event_challenges(integer) TO audius_indexer_operator;
REVOKE EXECUTE ON FUNCTION audius_indexer.seed_challenge_checkpoints() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audius_indexer.seed_challenge_checkpoints() TO audius_indexer_operator;
-- The Transfer-log follower: writes balances and the audio_transfers checkpoint, like refresh_wallets.
-- users, associated_wallets, eth_wallet_balances and eth_indexer_checkpoints are read and written as
-- their owners (src/audius_tables.rs); optional tables are detected with to_regclass('public.…').
ALTER FUNCTION audius_indexer.follow_transfers(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION audius_indexer.follow_transfers(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audius_indexer.follow_transfers(bigint) TO audius_indexer_operator;
GRANT SELECT ON audius_indexer.follow_status, audius_indexer.follow_pending TO audius_indexer_operator;
-- The status view reads the checkpoints and max(user_events.blocknumber) through a helper that runs
-- as the owner (function privileges in a view are checked against the reader).
ALTER FUNCTION audius_indexer._challenge_checkpoints() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
GRANT EXECUTE ON FUNCTION audius_indexer._challenge_checkpoints() TO audius_indexer_operator;
GRANT SELECT ON audius_indexer.challenge_processor_status TO audius_indexer_operator;
-- CALL sweep(): commits between its steps, so it cannot be SECURITY DEFINER; its SQL steps run as
-- the extension owner internally, each in a security-restricted operation with search_path =
-- pg_catalog, pg_temp (src/privilege.rs). EXECUTE for audius_indexer_operator only.
REVOKE EXECUTE ON PROCEDURE audius_indexer.sweep(integer) FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE audius_indexer.sweep(integer) TO audius_indexer_operator;
-- doctor() reads eth_wallet_balances (row counts, rows above the head; as that table's owner) and
-- pg_stat_activity, which an operator may not: it runs as the owner, with a pinned search_path, and
-- only reports.
ALTER FUNCTION audius_indexer.doctor() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION audius_indexer.doctor() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audius_indexer.doctor() TO audius_indexer_operator;
REVOKE EXECUTE ON FUNCTION audius_indexer.rpc_endpoint_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audius_indexer.rpc_endpoint_stats() TO audius_indexer_operator;
REVOKE EXECUTE ON FUNCTION audius_indexer.rpc_endpoint_stats_server() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audius_indexer.rpc_endpoint_stats_server() TO audius_indexer_operator;
COMMENT ON FUNCTION audius_indexer.seed_challenge_checkpoints() IS
  'Cutover "start from now" (Audius migration 0211): sets the m/r/rv/rd checkpoints to max(user_events.blocknumber) where absent (ON CONFLICT DO NOTHING) and pins the r/rv verification scan to max(users.blocknumber); returns the four checkpoints. Reads and writes the Audius tables as their owners.';
-- The paths (sql/paths.sql): turned on and off by the DBA's operator role; SECURITY DEFINER (they
-- write the extension's own state and, for follow, hand pending wallets back as the owner of
-- eth_wallet_balances).
ALTER FUNCTION audius_indexer.enable(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION audius_indexer.disable(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION audius_indexer.enable(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION audius_indexer.disable(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audius_indexer.enable(text) TO audius_indexer_operator;
GRANT EXECUTE ON FUNCTION audius_indexer.disable(text) TO audius_indexer_operator;
REVOKE EXECUTE ON FUNCTION audius_indexer._stop_path(text, text) FROM PUBLIC;
GRANT SELECT ON audius_indexer.path_status TO audius_indexer_operator;
-- Monitoring (docs/operations.md#monitoring, sql/prometheus-queries.yaml): audius_indexer_monitor reads
-- the status views, health() (doctor()'s database checks: no RPC, no scan of eth_wallet_balances)
-- and the server-wide RPC counters (shared memory). It can write nothing and reach no node: every
-- function that does is EXECUTE for audius_indexer_operator only.
ALTER FUNCTION audius_indexer.health() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION audius_indexer.health() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION audius_indexer.rpc_endpoint_errors_server() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audius_indexer.health() TO audius_indexer_operator, audius_indexer_monitor;
GRANT EXECUTE ON FUNCTION audius_indexer.rpc_endpoint_errors_server() TO audius_indexer_operator, audius_indexer_monitor;
GRANT EXECUTE ON FUNCTION audius_indexer.rpc_endpoint_stats_server() TO audius_indexer_monitor;
GRANT USAGE ON SCHEMA audius_indexer TO audius_indexer_monitor;
GRANT SELECT ON audius_indexer.sweep_status, audius_indexer.follow_status,
                audius_indexer.challenge_processor_status, audius_indexer.path_status TO audius_indexer_monitor;
-- challenge_processor_status calls it (function rights in a view are the reader's)
GRANT EXECUTE ON FUNCTION audius_indexer._challenge_checkpoints() TO audius_indexer_monitor;
