-- Fixture: the Audius discovery-database objects around eth_wallet_balances, written by us from the
-- behaviour of Audius's DDL in AudiusProject/api: `sql/01_schema.sql` (eth_wallet_balances,
-- eth_indexer_checkpoints, associated_wallets), the migrations `ddl/migrations/0203_*`, `0207_*`,
-- `0213_*`, the function files `ddl/functions/update_eth_user_balance.sql`,
-- `handle_eth_wallet_balance_change.sql`, `handle_associated_wallet.sql`, and
-- canonicalize_associated_wallet. Not part of the extension.
--
-- Load order: after tests/sql/audius_fixture_schema.sql (which creates public.users) and before
-- CREATE EXTENSION audius_indexer, so the extension finds public.eth_wallet_balances and
-- public.eth_indexer_checkpoints already present and uses them as they are.
--
-- Objects (all in schema public):
--   type      wallet_chain ('eth', 'sol')
--   table     associated_wallets (+ sequence, unique_user_wallet_chain, two indexes)
--   function  canonicalize_associated_wallet()   trigger before_associated_wallets_canonicalize
--   table     eth_wallet_balances (+ eth_wallet_balances_updated_at_idx), eth_indexer_checkpoints
--   table     eth_user_balances
--   function  update_eth_user_balance(integer)
--   function  handle_eth_wallet_balance_change()  trigger on_eth_wallet_balance_changes
--   function  handle_associated_wallets()         trigger on_associated_wallets
--
-- NAMES INSIDE FUNCTION BODIES ARE UNQUALIFIED ON PURPOSE. Like the Audius originals, the bodies say
-- `users`, `associated_wallets`, `eth_wallet_balances`, `eth_user_balances`, `update_eth_user_balance`
-- without a schema, and no function carries a `SET search_path`. The names are therefore resolved
-- through the search_path of whichever session writes the row. A writer running with
-- `search_path = pg_catalog, pg_temp` (e.g. a SECURITY DEFINER function with a pinned search_path)
-- makes on_eth_wallet_balance_changes fail to resolve `users`; its EXCEPTION handler turns that into
--   WARNING:  An error occurred in on_eth_wallet_balance_changes: relation "users" does not exist
-- and eth_user_balances silently stays stale. That is the behaviour this fixture must reproduce, so
-- do not "fix" it here by qualifying the names or pinning a search_path.
--
-- Top-level DDL is qualified with `public` (where Audius keeps these objects). The FK
-- associated_wallets.blocknumber -> blocks(number) is left out (we do not model blocks). Plain CREATE
-- throughout: loading this file twice into the same database is an error, by design.

-- ---------------------------------------------------------------------------------------------------
-- associated_wallets (as in sql/01_schema.sql)
-- ---------------------------------------------------------------------------------------------------
CREATE TYPE public.wallet_chain AS ENUM ('eth', 'sol');

CREATE TABLE public.associated_wallets (
    id          serial,   -- sequence public.associated_wallets_id_seq AS integer, owned by the column
    user_id     integer NOT NULL,
    wallet      varchar NOT NULL,
    blockhash   varchar NOT NULL,
    blocknumber integer NOT NULL,
    is_current  boolean NOT NULL,
    is_delete   boolean NOT NULL,
    chain       public.wallet_chain NOT NULL,
    CONSTRAINT associated_wallets_pkey PRIMARY KEY (id),
    CONSTRAINT unique_user_wallet_chain UNIQUE (user_id, wallet, chain)
);
-- The reference names these two indexes without listing their columns; the columns below are the
-- ones their names say.
CREATE INDEX ix_associated_wallets_user_id ON public.associated_wallets USING btree (user_id);
CREATE INDEX ix_associated_wallets_wallet ON public.associated_wallets USING btree (wallet);

-- 0207: chain='eth' wallets are stored lowercase from now on; sol addresses are case-significant
-- (base58) and left untouched.
CREATE FUNCTION public.canonicalize_associated_wallet() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF new.chain = 'eth' THEN
        new.wallet := lower(new.wallet);
    END IF;
    RETURN new;
END
$$;

CREATE TRIGGER before_associated_wallets_canonicalize
    BEFORE INSERT OR UPDATE ON public.associated_wallets
    FOR EACH ROW EXECUTE FUNCTION public.canonicalize_associated_wallet();

-- ---------------------------------------------------------------------------------------------------
-- eth_wallet_balances / eth_indexer_checkpoints (0203)
-- ---------------------------------------------------------------------------------------------------
CREATE TABLE public.eth_wallet_balances (
    wallet      text NOT NULL,
    balance     numeric NOT NULL DEFAULT 0,          -- wei: token + staked + delegated
    blocknumber bigint,
    updated_at  timestamp without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP,
    created_at  timestamp without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT eth_wallet_balances_pkey PRIMARY KEY (wallet)
);
-- staleness queries / catch-up sweeps
CREATE INDEX eth_wallet_balances_updated_at_idx ON public.eth_wallet_balances USING btree (updated_at);

CREATE TABLE public.eth_indexer_checkpoints (
    name       text NOT NULL,
    last_block bigint NOT NULL,
    updated_at timestamp without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT eth_indexer_checkpoints_pkey PRIMARY KEY (name)
);

-- ---------------------------------------------------------------------------------------------------
-- eth_user_balances (0213) and its maintenance
-- ---------------------------------------------------------------------------------------------------
CREATE TABLE public.eth_user_balances (
    user_id    integer NOT NULL,
    balance    numeric NOT NULL DEFAULT 0,
    updated_at timestamp without time zone NOT NULL DEFAULT now(),
    created_at timestamp without time zone NOT NULL DEFAULT now(),
    CONSTRAINT eth_user_balances_pkey PRIMARY KEY (user_id)
);

-- Recompute one user's total: the balances of the user's current primary wallet (lowercased) plus
-- those of the user's live chain='eth' associated wallets (already lowercase, see
-- before_associated_wallets_canonicalize). The aggregate has no GROUP BY, so it yields exactly one
-- row even when nothing matches: the upsert always writes, and a user whose last wallet was
-- unlinked goes to 0.
--
-- The two wallet sources are combined with UNION ALL, as in the reference. Consequence: a wallet
-- that is at the same time the user's primary wallet and one of the user's live eth associated
-- wallets is counted TWICE (likewise if a user had more than one is_current users row with the same
-- wallet). Kept on purpose; this fixture reproduces the original, it does not correct it.
CREATE FUNCTION public.update_eth_user_balance(p_user_id integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO eth_user_balances (user_id, balance, updated_at)
    SELECT p_user_id, COALESCE(SUM(b.balance), 0), NOW()
      FROM (
            SELECT lower(u.wallet) AS wallet
              FROM users u
             WHERE u.user_id = p_user_id
               AND u.is_current
            UNION ALL
            SELECT aw.wallet
              FROM associated_wallets aw
             WHERE aw.user_id = p_user_id
               AND aw.chain = 'eth'
               AND aw.is_current
               AND NOT aw.is_delete
           ) w
      JOIN eth_wallet_balances b ON b.wallet = w.wallet
    ON CONFLICT (user_id) DO UPDATE
       SET balance = EXCLUDED.balance,
           updated_at = EXCLUDED.updated_at;
END
$$;

-- AFTER INSERT OR UPDATE on eth_wallet_balances: recompute every user that owns NEW.wallet, either as
-- current primary wallet (compared lowercased) or as a live chain='eth' associated wallet.
-- Unchanged balances on UPDATE are skipped. Any error (e.g. a name that does not resolve on the
-- writer's search_path) becomes a WARNING and the balance write itself goes through.
CREATE FUNCTION public.handle_eth_wallet_balance_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    owner_id integer;
BEGIN
    IF tg_op = 'UPDATE' AND new.balance IS NOT DISTINCT FROM old.balance THEN
        RETURN NULL;
    END IF;

    FOR owner_id IN
        SELECT u.user_id
          FROM users u
         WHERE u.is_current
           AND lower(u.wallet) = new.wallet
        UNION
        SELECT aw.user_id
          FROM associated_wallets aw
         WHERE aw.chain = 'eth'
           AND aw.is_current
           AND NOT aw.is_delete
           AND aw.wallet = new.wallet
    LOOP
        PERFORM update_eth_user_balance(owner_id);
    END LOOP;

    RETURN NULL;
EXCEPTION
    WHEN others THEN
        RAISE WARNING 'An error occurred in %: %', tg_name, sqlerrm;
        RETURN NULL;
END
$$;

CREATE TRIGGER on_eth_wallet_balance_changes
    AFTER INSERT OR UPDATE ON public.eth_wallet_balances
    FOR EACH ROW EXECUTE FUNCTION public.handle_eth_wallet_balance_change();

-- AFTER INSERT OR UPDATE OR DELETE on associated_wallets: on INSERT, DELETE, or an UPDATE that flips
-- is_delete, recompute the owning user's eth total when the wallet is chain='eth'.
-- Out of scope here: the original function also recomputes the user's sol token (mint) balances on
-- the same events; that part is not reproduced. Note that, as in the reference, an UPDATE that only
-- changes is_current (or the wallet text) does not trigger a recompute.
CREATE FUNCTION public.handle_associated_wallets() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF tg_op = 'INSERT' THEN
        IF new.chain = 'eth' THEN
            PERFORM update_eth_user_balance(new.user_id);
        END IF;
    ELSIF tg_op = 'DELETE' THEN
        IF old.chain = 'eth' THEN
            PERFORM update_eth_user_balance(old.user_id);
        END IF;
    ELSIF tg_op = 'UPDATE' AND new.is_delete IS DISTINCT FROM old.is_delete THEN
        IF new.chain = 'eth' THEN
            PERFORM update_eth_user_balance(new.user_id);
        END IF;
    END IF;

    RETURN NULL;
EXCEPTION
    WHEN others THEN
        RAISE WARNING 'An error occurred in %: %', tg_name, sqlerrm;
        RETURN NULL;
END
$$;

CREATE TRIGGER on_associated_wallets
    AFTER INSERT OR UPDATE OR DELETE ON public.associated_wallets
    FOR EACH ROW EXECUTE FUNCTION public.handle_associated_wallets();
