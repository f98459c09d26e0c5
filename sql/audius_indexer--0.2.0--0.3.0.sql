-- audius_indexer 0.2.0 -> 0.3.0 (ALTER EXTENSION audius_indexer UPDATE TO '0.3.0').
--
-- Hand-written; tests/test_upgrade.py proves that 0.2.0 (and 0.1.0) + the upgrade scripts have the
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
