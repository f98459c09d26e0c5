-- audius_indexer bootstrap: runs first in CREATE EXTENSION.
--
-- The Audius tables eth_wallet_balances / eth_indexer_checkpoints hold user data: when they are
-- absent we create them with the Audius layout (migration 0203) and immediately detach them from
-- the extension, so DROP EXTENSION never drops or empties them. When they exist we use them as
-- they are. (CREATE TABLE IF NOT EXISTS cannot be used: PostgreSQL refuses it inside an extension
-- script when the existing table is not a member.)
DO $bootstrap$
BEGIN
  IF to_regclass('public.eth_wallet_balances') IS NULL THEN
    CREATE TABLE public.eth_wallet_balances (
      wallet      text PRIMARY KEY,
      balance     numeric NOT NULL DEFAULT 0,
      blocknumber bigint,
      updated_at  timestamp without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP,
      created_at  timestamp without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP
    );
    CREATE INDEX eth_wallet_balances_updated_at_idx ON public.eth_wallet_balances (updated_at);
    COMMENT ON TABLE public.eth_wallet_balances IS
      'Per-wallet AUDIO balance (token + staked + delegated, wei). Created by audius_indexer if absent; not owned by it.';
    ALTER EXTENSION audius_indexer DROP TABLE public.eth_wallet_balances;
  END IF;
  IF to_regclass('public.eth_indexer_checkpoints') IS NULL THEN
    CREATE TABLE public.eth_indexer_checkpoints (
      name       text PRIMARY KEY,
      last_block bigint NOT NULL,
      updated_at timestamp without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP
    );
    ALTER EXTENSION audius_indexer DROP TABLE public.eth_indexer_checkpoints;
  END IF;
END
$bootstrap$;

-- The role that may call functions which reach the network or write balances.
DO $role$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'audius_indexer_operator') THEN
    CREATE ROLE audius_indexer_operator NOLOGIN;
  END IF;
END
$role$;

-- The read-only role for monitoring (a Prometheus exporter's login role is made a member): the
-- status views, health() and the server-wide RPC counters; no write, no RPC (sql/finalize.sql).
DO $monitor_role$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'audius_indexer_monitor') THEN
    CREATE ROLE audius_indexer_monitor NOLOGIN;
  END IF;
END
$monitor_role$;
