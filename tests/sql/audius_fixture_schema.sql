-- Fixture: the Audius tables the three dedupe triggers touch, written by us from the column types,
-- keys and indexes of Audius's schema (AudiusProject/api `sql/01_schema.sql@f6e633c`). Used by the trigger
-- tests (tests/test_triggers_*.py) and by bench/triggers/run.py. Not part of the extension.
--
-- Deliberately schema-qualified with `public` (where Audius keeps them). Foreign keys to tables we do
-- not model (users.blocknumber -> blocks) are left out; the user_challenges -> challenges FK is kept
-- because it shapes what the triggers can see.

CREATE TYPE public.challengetype AS ENUM ('boolean', 'numeric', 'aggregate', 'trending');

CREATE TABLE public.challenges (
    id             varchar NOT NULL,
    type           public.challengetype NOT NULL,
    amount         varchar NOT NULL,
    active         boolean NOT NULL,
    step_count     integer,
    starting_block integer,
    weekly_pool    integer,
    cooldown_days  integer,
    CONSTRAINT challenges_pkey PRIMARY KEY (id)
);

-- Catalog rows seeded by the Audius migrations 0203/0204/0205/0179 (id, type, amount, active,
-- step_count, starting_block, weekly_pool, cooldown_days).
INSERT INTO public.challenges (id, type, amount, active, step_count, starting_block, weekly_pool, cooldown_days) VALUES
    -- 0203_seed_phase_1
    ('p',   'numeric',   '1',     true,  7,          NULL,     NULL,       7),
    ('u',   'numeric',   '1',     true,  3,          NULL,     NULL,       7),
    ('fp',  'boolean',   '2',     true,  NULL,       NULL,     NULL,       7),
    ('v',   'boolean',   '5',     true,  NULL,       NULL,     NULL,       NULL),
    ('e',   'aggregate', '1',     false, 2147483647, NULL,     NULL,       NULL),
    ('p1',  'numeric',   '25',    true,  250,        NULL,     NULL,       7),
    ('p2',  'numeric',   '100',   true,  1000,       NULL,     NULL,       7),
    ('p3',  'numeric',   '1000',  true,  10000,      NULL,     NULL,       7),
    ('tt',  'trending',  '1000',  true,  NULL,       NULL,     NULL,       NULL),
    ('tut', 'trending',  '1000',  true,  NULL,       NULL,     NULL,       NULL),
    ('tp',  'trending',  '100',   true,  NULL,       NULL,     NULL,       NULL),
    -- 0204_seed_phase_2
    ('c',   'aggregate', '1',     true,  2147483647, NULL,     NULL,       7),
    ('t',   'aggregate', '100',   true,  2147483647, NULL,     NULL,       7),
    ('cp',  'aggregate', '10',    true,  2147483647, NULL,     NULL,       7),
    ('cs',  'aggregate', '1000',  false, 2147483647, NULL,     NULL,       7),
    ('w',   'aggregate', '1000',  true,  2147483647, NULL,     NULL,       7),
    ('b',   'aggregate', '1',     true,  2147483647, NULL,     NULL,       7),
    ('s',   'aggregate', '5',     true,  2147483647, NULL,     NULL,       7),
    -- 0205_seed_phase_3
    ('m',   'boolean',   '1',     true,  NULL,       25346436, 25000,      7),
    ('r',   'aggregate', '1',     true,  5,          25346436, 25000,      7),
    ('rv',  'aggregate', '1',     true,  5000,       25346436, 25000,      7),
    ('rd',  'boolean',   '1',     true,  NULL,       25346436, 25000,      7),
    -- 0179_add_dvl
    ('dvl', 'aggregate', '10000', true,  NULL,       NULL,     2147483647, 0);

CREATE TABLE public.user_challenges (
    challenge_id          varchar NOT NULL,
    user_id               integer NOT NULL,
    specifier             varchar NOT NULL,
    is_complete           boolean NOT NULL,
    current_step_count    integer,
    completed_blocknumber integer,
    amount                integer NOT NULL DEFAULT 0,
    created_at            timestamp with time zone NOT NULL DEFAULT now(),
    completed_at          timestamp without time zone,
    CONSTRAINT user_challenges_pkey PRIMARY KEY (challenge_id, specifier),
    CONSTRAINT user_challenges_challenge_id_fkey FOREIGN KEY (challenge_id) REFERENCES public.challenges (id)
);
CREATE INDEX user_challenges_challenge_idx ON public.user_challenges USING btree (challenge_id);
CREATE INDEX user_challenges_user_id ON public.user_challenges USING btree (user_id);

CREATE TABLE public.notification (
    id          serial,   -- sequence public.notification_id_seq AS integer, owned by the column
    specifier   varchar NOT NULL,
    group_id    varchar NOT NULL,
    type        varchar NOT NULL,
    slot        integer,
    blocknumber integer,
    "timestamp" timestamp without time zone NOT NULL,
    data        jsonb,
    user_ids    integer[],
    type_v2     varchar,
    CONSTRAINT notification_pkey PRIMARY KEY (id),
    CONSTRAINT uq_notification UNIQUE (group_id, specifier)
);
CREATE INDEX ix_notification ON public.notification USING gin (user_ids);
CREATE INDEX ix_announcement ON public.notification USING btree (type, "timestamp")
    WHERE ((type)::text = 'announcement'::text);

CREATE TABLE public.challenge_disbursements (
    challenge_id varchar NOT NULL,
    user_id      integer NOT NULL,
    specifier    varchar NOT NULL,
    signature    varchar NOT NULL,
    slot         integer NOT NULL,
    amount       varchar NOT NULL,
    created_at   timestamp with time zone DEFAULT now(),
    CONSTRAINT challenge_disbursements_pkey PRIMARY KEY (challenge_id, specifier)
);
CREATE INDEX challenge_disbursements_user_id ON public.challenge_disbursements USING btree (user_id);
CREATE INDEX idx_challenge_disbursements_created_at ON public.challenge_disbursements USING btree (created_at);
CREATE INDEX idx_challenge_disbursements_slot ON public.challenge_disbursements USING btree (slot);

CREATE TABLE public.sol_reward_disbursements (
    signature             varchar NOT NULL,
    instruction_index     integer NOT NULL,
    amount                bigint NOT NULL,
    slot                  bigint NOT NULL,
    user_bank             varchar NOT NULL,
    challenge_id          varchar NOT NULL,
    specifier             varchar NOT NULL,
    recipient_eth_address text,
    created_at            timestamp without time zone DEFAULT now(),
    CONSTRAINT sol_reward_disbursements_pkey PRIMARY KEY (signature, instruction_index)
);
CREATE INDEX sol_reward_disbursements_challenge_idx ON public.sol_reward_disbursements USING btree (challenge_id, specifier);
CREATE INDEX sol_reward_disbursements_created_at_idx ON public.sol_reward_disbursements USING btree (created_at);
CREATE INDEX sol_reward_disbursements_recipient_eth_address_idx ON public.sol_reward_disbursements USING btree (recipient_eth_address);
CREATE INDEX sol_reward_disbursements_user_bank_idx ON public.sol_reward_disbursements USING btree (user_bank);

CREATE TABLE public.reward_manager_txs (
    signature  varchar NOT NULL,
    slot       integer NOT NULL,
    created_at timestamp without time zone NOT NULL,
    CONSTRAINT reward_manager_txs_pkey PRIMARY KEY (signature)
);
CREATE INDEX idx_reward_manager_txs_slot ON public.reward_manager_txs USING btree (slot);

CREATE TABLE public.reward_codes (
    code           text NOT NULL,
    mint           text NOT NULL,
    reward_address text NOT NULL,
    amount         bigint NOT NULL,
    created_at     timestamp without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP,
    remaining_uses integer NOT NULL DEFAULT 1,
    signature      text,
    CONSTRAINT reward_codes_pkey PRIMARY KEY (code)
);
CREATE INDEX reward_codes_mint_idx ON public.reward_codes USING btree (mint);
CREATE INDEX reward_codes_reward_address_idx ON public.reward_codes USING btree (reward_address);

-- Only the columns the triggers and the challenge processors touch (plus the PK column txhash).
CREATE TABLE public.users (
    user_id     integer NOT NULL,
    wallet      varchar,
    is_current  boolean NOT NULL,
    created_at  timestamp without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP,
    is_verified boolean NOT NULL DEFAULT false,
    txhash      varchar NOT NULL DEFAULT ''::varchar,
    blocknumber integer,
    CONSTRAINT users_pkey PRIMARY KEY (user_id, txhash)
);
CREATE INDEX users_new_wallet_idx ON public.users USING btree (wallet);
CREATE INDEX idx_lower_wallet ON public.users USING btree (lower((wallet)::text));
CREATE INDEX ix_user_created_at ON public.users USING btree (created_at, user_id, is_current);
CREATE INDEX users_new_blocknumber_idx ON public.users USING btree (blocknumber);

-- The challenge processors' source (user_events as in `sql/01_schema.sql`; the blocks FK is left out).
-- ix_user_events_blocknumber (Audius 0209) is deliberately absent: sql/indexes.sql creates it.
CREATE TABLE public.user_events (
    id             serial,   -- sequence public.user_events_id_seq AS integer, owned by the column
    blockhash      varchar,
    blocknumber    integer,
    is_current     boolean NOT NULL,
    user_id        integer NOT NULL,
    referrer       integer,
    is_mobile_user boolean NOT NULL DEFAULT false,
    slot           integer,
    CONSTRAINT user_events_pkey PRIMARY KEY (id)
);
CREATE INDEX user_events_user_id_idx ON public.user_events USING btree (user_id);

-- Holds the challenge processors' checkpoints (`challenges:<id>:last_blocknumber`).
CREATE TABLE public.indexing_checkpoints (
    tablename       varchar NOT NULL,
    last_checkpoint integer NOT NULL,
    signature       varchar,
    CONSTRAINT indexing_checkpoints_pkey PRIMARY KEY (tablename)
);

CREATE TABLE public.challenge_listen_streak (
    user_id          integer NOT NULL,
    last_listen_date timestamp without time zone,
    listen_streak    integer NOT NULL,
    CONSTRAINT challenge_listen_streak_pkey PRIMARY KEY (user_id)
);

CREATE TABLE public.user_score_features (
    user_id         integer NOT NULL,
    challenge_count integer DEFAULT 0,
    updated_at      timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT user_score_features_pkey PRIMARY KEY (user_id)
);
COMMENT ON TABLE public.user_score_features IS 'Features used in user score';
COMMENT ON COLUMN public.user_score_features.challenge_count IS 'Number of "fast" challenges completed';
