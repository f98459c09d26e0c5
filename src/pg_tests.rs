//! The #[pg_test] tier (`make check`, CONTRIBUTING.md): the SPI glue against real tables in a
//! throwaway PostgreSQL 15 cluster, with no chain and no RPC node. Each test runs in one transaction
//! that pgrx rolls back, creates the few Audius tables it needs (the layouts of
//! tests/sql/audius_fixture_schema.sql and tests/sql/audius_eth_fixture.sql, reduced to the columns
//! the code reads), and asserts exact rows. `public.eth_wallet_balances` and
//! `public.eth_indexer_checkpoints` exist already: CREATE EXTENSION created them (sql/bootstrap.sql).
//!
//! Covered: the sweep write (`upsert_wallet_balances` / `_upsert_balances`: NULLIF/GREATEST, the
//! block guard), the stale claim and the failure back-off (`refresh_stale` on rows that need no
//! read), checkpoints and `tracked()`; the challenge processors (`process_user_event_challenges`);
//! the Rust triggers (notification rows); the enrollment trigger; the follow queue
//! (`_follow_pending`, `disable('follow')`).

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use crate::audius_tables as tables;
    use crate::sweep::{self, Counts};
    use pgrx::prelude::*;

    // ---------------------------------------------------------------------------------------------
    // helpers and fixtures
    // ---------------------------------------------------------------------------------------------

    /// The tests share one database and run on parallel connections: each takes this lock first,
    /// so their fixture tables never meet (the lock goes with the rolled-back transaction).
    fn serial() {
        run("SELECT pg_advisory_xact_lock(8675309)");
    }

    fn run(sql: &str) {
        Spi::run(sql).unwrap_or_else(|e| panic!("{sql}\n{e}"));
    }

    /// The first column of every row, as text (`format('%s|%s', ...)` makes one row one string;
    /// NULL shows as an empty field).
    fn rows(sql: &str) -> Vec<String> {
        Spi::connect_mut(|c| {
            c.update(sql, None, &[])?
                .map(|r| Ok(r.get::<String>(1)?.unwrap_or_else(|| "NULL".into())))
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })
        .unwrap_or_else(|e| panic!("{sql}\n{e}"))
    }

    fn one(sql: &str) -> String {
        let r = rows(sql);
        assert_eq!(r.len(), 1, "{sql}: {r:?}");
        r.into_iter().next().unwrap()
    }

    const W1: &str = "0x1111111111111111111111111111111111111111";
    const W2: &str = "0x2222222222222222222222222222222222222222";
    const W3: &str = "0x3333333333333333333333333333333333333333";
    const W4: &str = "0x4444444444444444444444444444444444444444";
    const MIXED: &str = "0xABCDEFabcdef0123456789abcdef0123456789AB";
    const MIXED_LOWER: &str = "0xabcdefabcdef0123456789abcdef0123456789ab";

    fn users() {
        run("CREATE TABLE public.users (
               user_id integer NOT NULL, wallet varchar, is_current boolean NOT NULL,
               created_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,
               is_verified boolean NOT NULL DEFAULT false, txhash varchar NOT NULL DEFAULT '',
               blocknumber integer, PRIMARY KEY (user_id, txhash))");
    }

    fn associated_wallets() {
        run("CREATE TABLE public.associated_wallets (
               id serial PRIMARY KEY, user_id integer NOT NULL, wallet varchar NOT NULL,
               is_current boolean NOT NULL DEFAULT true, is_delete boolean NOT NULL DEFAULT false,
               chain text NOT NULL)");
    }

    /// challenges + user_challenges (+ the processors' sources: user_events, indexing_checkpoints).
    fn challenge_tables() {
        run("CREATE TABLE public.challenges (
               id varchar PRIMARY KEY, amount varchar NOT NULL, active boolean NOT NULL,
               cooldown_days integer)");
        run("CREATE TABLE public.user_challenges (
               challenge_id varchar NOT NULL, user_id integer NOT NULL, specifier varchar NOT NULL,
               is_complete boolean NOT NULL, current_step_count integer, completed_blocknumber integer,
               amount integer NOT NULL DEFAULT 0, created_at timestamptz NOT NULL DEFAULT now(),
               completed_at timestamp, PRIMARY KEY (challenge_id, specifier))");
        run("CREATE TABLE public.user_events (
               id serial PRIMARY KEY, blocknumber integer, is_current boolean NOT NULL,
               user_id integer NOT NULL, referrer integer, is_mobile_user boolean NOT NULL DEFAULT false)");
        run("CREATE TABLE public.indexing_checkpoints (
               tablename varchar PRIMARY KEY, last_checkpoint integer NOT NULL)");
    }

    /// What the three Rust triggers read and write, then `install_triggers()`.
    fn trigger_tables() {
        users();
        challenge_tables();
        run("CREATE TABLE public.notification (
               id serial PRIMARY KEY, specifier varchar NOT NULL, group_id varchar NOT NULL,
               type varchar NOT NULL, slot integer, blocknumber integer, \"timestamp\" timestamp NOT NULL,
               data jsonb, user_ids integer[], UNIQUE (group_id, specifier))");
        run("CREATE TABLE public.challenge_disbursements (
               challenge_id varchar NOT NULL, user_id integer NOT NULL, specifier varchar NOT NULL,
               signature varchar NOT NULL, slot integer NOT NULL, amount varchar NOT NULL,
               created_at timestamptz DEFAULT now(), PRIMARY KEY (challenge_id, specifier))");
        run("CREATE TABLE public.sol_reward_disbursements (
               signature varchar NOT NULL, instruction_index integer NOT NULL, amount bigint NOT NULL,
               slot bigint NOT NULL, user_bank varchar NOT NULL, challenge_id varchar NOT NULL,
               specifier varchar NOT NULL, recipient_eth_address text,
               created_at timestamp DEFAULT now(), PRIMARY KEY (signature, instruction_index))");
        run("CREATE TABLE public.reward_manager_txs (signature varchar PRIMARY KEY)");
        run("CREATE TABLE public.reward_codes (code text PRIMARY KEY)");
        run("CREATE TABLE public.user_score_features (
               user_id integer PRIMARY KEY, challenge_count integer DEFAULT 0,
               updated_at timestamptz NOT NULL DEFAULT now())");
        assert_eq!(
            one("SELECT string_agg(action, ',') FROM audius_indexer.install_triggers()"),
            "created,created,created"
        );
    }

    /// eth_wallet_balances, one row per wallet: wallet|balance|blocknumber|updated_at (the literal
    /// `now` when it is the transaction's now()).
    fn balances() -> Vec<String> {
        rows(
            "SELECT format('%s|%s|%s|%s', wallet, balance, blocknumber,
                     CASE WHEN updated_at = now()::timestamp THEN 'now' ELSE updated_at::text END)
                FROM public.eth_wallet_balances ORDER BY wallet COLLATE \"C\"",
        )
    }

    fn notifications() -> Vec<String> {
        rows(
            "SELECT format('%s|%s|%s|%s|%s|%s|%s|%s', type, group_id, specifier, slot, blocknumber,
                            user_ids, \"timestamp\", data)
                FROM public.notification ORDER BY id",
        )
    }

    // ---------------------------------------------------------------------------------------------
    // the sweep write: upsert_wallet_balances / _upsert_balances
    // ---------------------------------------------------------------------------------------------

    #[pg_test]
    fn upsert_inserts_with_nullif_block_and_keeps_the_greatest_block() {
        serial();
        assert_eq!(
            rows(&format!(
                "SELECT w FROM audius_indexer.upsert_wallet_balances(
                   ARRAY['{W1}', '{W2}'], ARRAY[10, 20], ARRAY[100, 0]) AS w ORDER BY w"
            )),
            [W1, W2]
        );
        // block 0 is stored as NULL (NULLIF)
        assert_eq!(
            balances(),
            [format!("{W1}|10|100|now"), format!("{W2}|20||now")]
        );
        run(&format!(
            "UPDATE public.eth_wallet_balances SET updated_at = '2001-01-01' WHERE wallet IN ('{W1}', '{W2}')"
        ));
        // the Go rules without the guard: balance always the read's; block GREATEST(old, new),
        // kept when the read has none (0); a NULL block takes the read's
        run(&format!(
            "SELECT audius_indexer.upsert_wallet_balances(
               ARRAY['{W1}', '{W2}', '{W3}'], ARRAY[11, 21, 31], ARRAY[90, 70, 0])"
        ));
        assert_eq!(
            balances(),
            [
                format!("{W1}|11|100|now"),
                format!("{W2}|21|70|now"),
                format!("{W3}|31||now")
            ]
        );
        run(&format!(
            "SELECT audius_indexer.upsert_wallet_balances(ARRAY['{W1}'], ARRAY[12], ARRAY[0])"
        ));
        assert_eq!(balances()[0], format!("{W1}|12|100|now"));
    }

    #[pg_test]
    fn only_if_not_older_keeps_a_newer_row_and_marks_it_checked() {
        serial();
        run(&format!(
            "INSERT INTO public.eth_wallet_balances (wallet, balance, blocknumber, updated_at) VALUES
               ('{W1}', 1, 200, '2001-01-01'), ('{W2}', 2, 100, '2001-01-01'),
               ('{W3}', 3, NULL, '2001-01-01'), ('{W4}', 4, 500, '2001-01-01')"
        ));
        // W1 holds a newer block than the read: left alone, only marked checked; W2 (older) and
        // W3 (no block) are written
        assert_eq!(
            rows(&format!(
                "SELECT w FROM audius_indexer.upsert_wallet_balances(
                   ARRAY['{W1}', '{W2}', '{W3}'], ARRAY[9, 9, 9], ARRAY[150, 150, 150], true) AS w
                 ORDER BY w"
            )),
            [W2, W3]
        );
        // the Rust entry point directly: a read without a block (0) is never held back by the guard
        let written = tables::upsert_balances(vec![W4], vec![Some("44")], vec![Some(0)], true);
        assert_eq!(written, [W4]);
        assert_eq!(
            balances(),
            [
                format!("{W1}|1|200|now"),
                format!("{W2}|9|150|now"),
                format!("{W3}|9|150|now"),
                format!("{W4}|44|500|now"),
            ]
        );
    }

    #[pg_test(
        error = "wallet at position 2 ('0xABCDEFabcdef0123456789abcdef0123456789AB') is not a lowercase 0x-prefixed 40-hex-digit address"
    )]
    fn upsert_refuses_a_key_not_in_stored_form() {
        serial();
        run(&format!(
            "SELECT audius_indexer.upsert_wallet_balances(ARRAY['{W1}', '{MIXED}'], ARRAY[1, 2], ARRAY[1, 2])"
        ));
    }

    // ---------------------------------------------------------------------------------------------
    // the stale claim and failure bookkeeping (refresh_stale without a read)
    // ---------------------------------------------------------------------------------------------

    #[pg_test]
    fn stale_claim_takes_the_stalest_rows_not_backed_off() {
        serial();
        run(&format!(
            "INSERT INTO public.eth_wallet_balances (wallet, balance, blocknumber, updated_at) VALUES
               ('not-an-address', 0, NULL, '1970-01-01'), ('{MIXED}', 0, NULL, '1970-01-02'),
               ('{W1}', 0, NULL, '1960-01-01'), ('{W2}', 5, 10, '2020-01-01')"
        ));
        run(&format!(
            "INSERT INTO audius_indexer.wallet_failures (wallet, reason, attempts, next_attempt)
             VALUES ('{W1}', 'revert', 3, now() + interval '1 hour')"
        ));
        assert_eq!(tables::stale_batch(2, &[]), [W1, "not-an-address"]);
        assert_eq!(
            tables::stale_batch(3, &[W1.to_string()]),
            ["not-an-address", MIXED, W2]
        );
        // The claim skips W1 (backed off) and takes the two stalest others, neither an address in
        // stored form: both fail without a read (no RPC), each backed off for the base 60 s.
        assert_eq!(
            sweep::refresh_stale(2),
            Some(Counts {
                requested: 2,
                updated: 0,
                failed: 2,
                skipped: 0
            })
        );
        assert_eq!(
            rows(
                "SELECT format('%s|%s|%s|%s', wallet, attempts, next_attempt - now(),
                         last_failure = now()) FROM audius_indexer.wallet_failures ORDER BY wallet COLLATE \"C\""
            ),
            [
                format!("{W1}|3|01:00:00|t"),
                format!("{MIXED}|1|00:01:00|t"),
                "not-an-address|1|00:01:00|t".to_string(),
            ]
        );
        assert_eq!(
            one(&format!(
                "SELECT reason FROM audius_indexer.wallet_failures WHERE wallet = '{MIXED}'"
            )),
            format!("stored wallet {MIXED:?} is not in the lowercase form {MIXED_LOWER:?}")
        );
        assert_eq!(
            one(
                "SELECT (reason LIKE 'stored wallet \"not-an-address\" is not a valid address: it %')::text
                   FROM audius_indexer.wallet_failures WHERE wallet = 'not-an-address'"
            ),
            "true"
        );
        assert_eq!(
            one(
                "SELECT format('%s|%s|%s|%s|%s|%s|%s', ticks, last_requested, last_updated,
                        last_failed, last_skipped, total_requested, total_failed)
                   FROM audius_indexer.sweep_state"
            ),
            "1|2|0|2|0|2|2"
        );
        // the rows themselves are untouched by failed reads
        assert_eq!(
            balances(),
            [
                format!("{W1}|0||1960-01-01 00:00:00"),
                format!("{W2}|5|10|2020-01-01 00:00:00"),
                format!("{MIXED}|0||1970-01-02 00:00:00"),
                "not-an-address|0||1970-01-01 00:00:00".to_string(),
            ]
        );
    }

    #[pg_test]
    fn failures_back_off_exponentially_up_to_the_cap_and_clear() {
        serial();
        let record = "SELECT audius_indexer._record_failures(ARRAY['w'], ARRAY['revert'], 60, 300)";
        let state = "SELECT format('%s|%s', attempts, next_attempt - now())
                       FROM audius_indexer.wallet_failures WHERE wallet = 'w'";
        let mut seen = Vec::new();
        for _ in 0..4 {
            run(record);
            seen.push(one(state));
        }
        assert_eq!(
            seen,
            ["1|00:01:00", "2|00:02:00", "3|00:04:00", "4|00:05:00"]
        );
        run("SELECT audius_indexer._clear_failures(ARRAY['w', 'other'])");
        assert_eq!(rows(state), Vec::<String>::new());
    }

    #[pg_test]
    fn checkpoints_reorg_stamps_and_tracked_wallets() {
        serial();
        tables::save_checkpoint("audio_transfers", 100);
        tables::save_checkpoint("audio_transfers", 90); // GREATEST: never backwards
        assert_eq!(tables::load_checkpoint("audio_transfers"), Some(100));
        tables::rewind_checkpoint("audio_transfers", 95); // a reorg: back to the ancestor
        tables::rewind_checkpoint("audio_transfers", 120); // never forwards
        assert_eq!(tables::load_checkpoint("audio_transfers"), Some(95));
        assert_eq!(tables::load_checkpoint("other"), None);

        run(&format!(
            "INSERT INTO public.eth_wallet_balances (wallet, balance, blocknumber) VALUES
               ('{W1}', 1, 50), ('{W2}', 2, 120), ('{W3}', 3, NULL)"
        ));
        assert_eq!(tables::stamped_above(95), [W2]);
        tables::rewind_stamps(&[W2.to_string()], 95);
        assert_eq!(
            one(&format!(
                "SELECT blocknumber::text FROM public.eth_wallet_balances WHERE wallet = '{W2}'"
            )),
            "95"
        );

        // filterTracked: eth_wallet_balances ∪ lower(users.wallet) ∪ live eth associated_wallets
        users();
        associated_wallets();
        run(&format!(
            "INSERT INTO public.users (user_id, wallet, is_current) VALUES (1, '{MIXED}', false)"
        ));
        run(&format!(
            "INSERT INTO public.associated_wallets (user_id, wallet, chain, is_delete) VALUES
               (1, '{W4}', 'eth', false), (1, '0x5555555555555555555555555555555555555555', 'eth', true),
               (1, '0x6666666666666666666666666666666666666666', 'sol', false)"
        ));
        let keys: Vec<String> = [
            "0x6666666666666666666666666666666666666666",
            W4,
            MIXED_LOWER,
            "0x5555555555555555555555555555555555555555",
            W1,
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(tables::tracked(&keys), [1, 2, 4]);
    }

    // ---------------------------------------------------------------------------------------------
    // the challenge processors (m, r, rv, rd)
    // ---------------------------------------------------------------------------------------------

    fn user_challenges() -> Vec<String> {
        rows(
            "SELECT format('%s|%s|%s|%s|%s|%s|%s', challenge_id, user_id, specifier, is_complete,
                            current_step_count, amount, completed_at = now()::timestamp)
                FROM public.user_challenges ORDER BY challenge_id, specifier COLLATE \"C\"",
        )
    }

    fn process() -> Vec<String> {
        rows(
            "SELECT format('%s|%s|%s|%s|%s|%s|%s', challenge_id, dirty_rows, users, upserts,
                            checkpoint_before, checkpoint_after, error)
                FROM audius_indexer.process_user_event_challenges(100)",
        )
    }

    #[pg_test]
    fn challenge_processors_upsert_the_derived_rows() {
        serial();
        users();
        challenge_tables();
        run("INSERT INTO public.challenges (id, amount, active) VALUES
               ('m', '2', true), ('r', '1', true), ('rv', '5', true), ('rd', '3', true)");
        run("INSERT INTO public.users (user_id, is_current, is_verified, blocknumber) VALUES
               (1, true, false, 10), (2, true, true, 10), (3, true, false, 10), (4, true, false, 10),
               (26, true, false, 10)");
        run("INSERT INTO public.user_events (blocknumber, is_current, user_id, referrer, is_mobile_user) VALUES
               (11, true, 3, 1, false),     -- r: referrer 1 (unverified) gets 1:3; rd: 3 gets 3:1
               (12, true, 4, 2, true),      -- rv: referrer 2 (verified) gets 2:4; rd: 4:2; m: 4
               (12, true, 26, NULL, true),  -- m: 26, specifier in hex (Go %x): 1a
               (13, false, 5, 1, true)      -- not current: nothing");
        // Rows of this (still open) transaction are not settled: the checkpoints stay at 0, and
        // r/rv pin their users scan at its last row. dirty_rows of r/rv: 2 user_events + 5 users.
        assert_eq!(
            process(),
            [
                "m|2|2|2|0|0|",
                "r|7|5|1|0|0|",
                "rv|7|5|1|0|0|",
                "rd|2|2|2|0|0|"
            ]
        );
        assert_eq!(
            user_challenges(),
            [
                "m|26|1a|t|1|2|t",
                "m|4|4|t|1|2|t",
                "r|1|1:3|t|1|1|t",
                "rd|3|3:1|t|1|3|t",
                "rd|4|4:2|t|1|3|t",
                "rv|2|2:4|t|1|5|t",
            ]
        );
        assert_eq!(
            rows(
                "SELECT format('%s|%s|%s|%s|%s|%s|%s', challenge_id, ue_block, ue_checkpoint,
                         users_block, users_user_id, runs, last_upserts)
                    FROM audius_indexer.challenge_processor_state
                   ORDER BY array_position(ARRAY['m', 'r', 'rv', 'rd'], challenge_id)"
            ),
            ["m|||||1|2", "r|||10|26|1|1", "rv|||10|26|1|1", "rd|||||1|2"]
        );
        // A second run re-derives: a completed row keeps its amount (the catalog changed), a new
        // mobile user gets the new one; r/rv's users scan has nothing past its position. An
        // inactive or missing catalog row does nothing.
        run("UPDATE public.challenges SET amount = '9' WHERE id = 'm'");
        run("UPDATE public.challenges SET active = false WHERE id = 'rd'");
        run("DELETE FROM public.challenges WHERE id = 'rv'");
        run(
            "INSERT INTO public.user_events (blocknumber, is_current, user_id, is_mobile_user)
             VALUES (14, true, 30, true)",
        );
        assert_eq!(
            process(),
            [
                "m|3|3|3|0|0|",
                "r|2|2|1|0|0|",
                "rv|0|0|0|0|0|",
                "rd|0|0|0|0|0|"
            ]
        );
        assert_eq!(
            user_challenges()[..3],
            ["m|26|1a|t|1|2|t", "m|30|1e|t|1|9|t", "m|4|4|t|1|2|t"]
        );
        assert_eq!(user_challenges().len(), 7);
    }

    // ---------------------------------------------------------------------------------------------
    // the Rust triggers (src/triggers/)
    // ---------------------------------------------------------------------------------------------

    #[pg_test]
    fn user_challenge_trigger_writes_the_notifications() {
        serial();
        trigger_tables();
        run(
            "INSERT INTO public.challenges (id, amount, active, cooldown_days) VALUES
               ('v', '5', true, NULL), ('p', '1', true, 7), ('tt', '1000', true, NULL)",
        );
        run("INSERT INTO public.users (user_id, is_current, created_at) VALUES (7, true, '2024-01-01 00:00')");
        run(
            "INSERT INTO public.user_challenges (challenge_id, user_id, specifier, is_complete,
                 current_step_count, completed_blocknumber, amount, completed_at) VALUES
               ('v', 7, 'spec-v', true, 1, 100, 5, '2024-01-01 00:01'),
               ('p', 7, 'spec-p', true, 1, 101, 1, '2024-01-01 00:02'),
               ('p', 7, 'spec-p2', true, 1, 102, 1, '2024-01-01 00:03'),
               ('v', 7, 'open', false, 0, NULL, 5, NULL),
               ('tt', 7, 'spec-tt', true, 1, 103, 1000, '2024-01-01 00:04')",
        );
        // cooldown NULL: claimable_reward (not for trending) + challenge_reward; cooldown 7: one
        // reward_in_cooldown per user and hour; an incomplete row: nothing
        let mut want = vec![
            "claimable_reward|claimable_reward:7:challenge:v:specifier:spec-v|spec-v||100|{7}|2024-01-01 00:01:00|{\"amount\": 5, \"specifier\": \"spec-v\", \"challenge_id\": \"v\"}",
            "challenge_reward|challenge_reward:7:challenge:v:specifier:spec-v|7||100|{7}|2024-01-01 00:01:00|{\"amount\": \"500000000\", \"specifier\": \"spec-v\", \"challenge_id\": \"v\"}",
            "reward_in_cooldown|reward_in_cooldown:7:challenge:p:specifier:spec-p|spec-p||101|{7}|2024-01-01 00:02:00|{\"amount\": 1, \"specifier\": \"spec-p\", \"challenge_id\": \"p\"}",
            "challenge_reward|challenge_reward:7:challenge:tt:specifier:spec-tt|7||103|{7}|2024-01-01 00:04:00|{\"amount\": \"100000000000\", \"specifier\": \"spec-tt\", \"challenge_id\": \"tt\"}",
        ];
        assert_eq!(notifications(), want);
        // completed within 3 minutes of the user's creation, m and b left out: v, p, p2 (not tt)
        assert_eq!(
            one("SELECT format('%s|%s', user_id, challenge_count) FROM public.user_score_features"),
            "7|3"
        );
        // an UPDATE that completes a row fires too
        run(
            "UPDATE public.user_challenges SET is_complete = true, completed_blocknumber = 104,
                    completed_at = '2024-01-01 00:02:30' WHERE specifier = 'open'",
        );
        want.extend([
            "claimable_reward|claimable_reward:7:challenge:v:specifier:open|open||104|{7}|2024-01-01 00:02:30|{\"amount\": 5, \"specifier\": \"open\", \"challenge_id\": \"v\"}",
            "challenge_reward|challenge_reward:7:challenge:v:specifier:open|7||104|{7}|2024-01-01 00:02:30|{\"amount\": \"500000000\", \"specifier\": \"open\", \"challenge_id\": \"v\"}",
        ]);
        assert_eq!(notifications(), want);
        assert_eq!(
            one("SELECT challenge_count::text FROM public.user_score_features"),
            "4"
        );
    }

    #[pg_test]
    fn disbursement_triggers_notify_once_an_hour_and_never_fail_the_insert() {
        serial();
        trigger_tables();
        run("INSERT INTO public.reward_manager_txs VALUES ('sig1'), ('sig2'), ('sig3')");
        run("INSERT INTO public.reward_codes VALUES ('rc')");
        let insert = |values: &str| {
            run(&format!(
                "INSERT INTO public.challenge_disbursements
                   (challenge_id, user_id, specifier, signature, slot, amount, created_at) VALUES {values}"
            ))
        };
        insert("('v', 7, 'spec-v', 'sig1', 100, '5', '2024-01-01 00:00+00')");
        insert("('p', 7, 'spec-p', 'sig2', 101, '1', '2024-01-01 00:30+00')"); // within the hour
        insert("('p', 7, 'spec-p3', 'sig2', 102, '1', '2024-01-01 01:30+00')");
        insert("('v', 8, 'spec-8', 'not-a-reward-manager-tx', 103, '1', '2024-01-01')");
        insert("('rc', 9, 'spec-rc', 'sig3', 104, '1', '2024-01-01')"); // a reward code
        let mut want = vec![
            "challenge_reward|challenge_reward:7:challenge:v:specifier:spec-v|7|100||{7}|2024-01-01 00:00:00|{\"amount\": \"5\", \"specifier\": \"spec-v\", \"challenge_id\": \"v\"}".to_string(),
            "challenge_reward|challenge_reward:7:challenge:p:specifier:spec-p3|7|102||{7}|2024-01-01 01:30:00|{\"amount\": \"1\", \"specifier\": \"spec-p3\", \"challenge_id\": \"p\"}".to_string(),
        ];
        assert_eq!(notifications(), want);

        // sol_reward_disbursements: the recipient resolved case-insensitively, amount a number
        run(&format!(
            "INSERT INTO public.users (user_id, wallet, is_current) VALUES (11, '{MIXED}', true)"
        ));
        run(&format!(
            "INSERT INTO public.sol_reward_disbursements (signature, instruction_index, amount, slot,
                 user_bank, challenge_id, specifier, recipient_eth_address, created_at) VALUES
               ('s1', 0, 500, 200, 'ub', 'v', 'spec-s', '{MIXED_LOWER}', '2024-03-01 00:00'),
               ('s2', 0, 600, 201, 'ub', 'v', 'spec-t', '{W1}', '2024-03-01 00:00')"
        ));
        want.push("challenge_reward|challenge_reward:11:challenge:v:specifier:spec-s|11|200||{11}|2024-03-01 00:00:00|{\"amount\": 500, \"specifier\": \"spec-s\", \"challenge_id\": \"v\"}".into());
        assert_eq!(notifications(), want);

        // a trigger that fails after its writes: WARNING, its notification rolled back, the row kept
        run("CREATE OR REPLACE TRIGGER on_challenge_disbursement AFTER INSERT ON public.challenge_disbursements
             FOR EACH ROW EXECUTE FUNCTION audius_indexer.handle_challenge_disbursement('audius_indexer.test_panic')");
        insert("('v', 10, 'spec-10', 'sig1', 105, '7', '2024-02-01 00:00+00')");
        assert_eq!(notifications(), want);
        assert_eq!(
            one("SELECT count(*)::text FROM public.challenge_disbursements"),
            "6"
        );
    }

    // ---------------------------------------------------------------------------------------------
    // the enrollment trigger (src/enrollment.rs)
    // ---------------------------------------------------------------------------------------------

    #[pg_test]
    fn enrollment_seeds_and_queues_newly_linked_wallets() {
        serial();
        users();
        associated_wallets();
        assert_eq!(
            rows("SELECT format('%s|%s', table_name, action) FROM audius_indexer.install_enrollment()"),
            ["public.users|created", "public.associated_wallets|created"]
        );
        // path off: the trigger does nothing
        run(&format!(
            "INSERT INTO public.users (user_id, wallet, is_current) VALUES (1, '{W1}', true)"
        ));
        assert_eq!(
            one("SELECT audius_indexer.enable('enroll')"),
            "enroll path on"
        );
        run(&format!(
            "INSERT INTO public.eth_wallet_balances (wallet, balance, blocknumber, updated_at)
             VALUES ('{W2}', 42, 7, '2020-01-01')"
        ));
        run(&format!(
            "INSERT INTO public.users (user_id, wallet, is_current) VALUES
               (2, '{MIXED}', true),        -- lowercased, seeded as 0204 does, queued
               (3, '{W2}', true),           -- has its row already: untouched, not queued
               (4, 'not-a-wallet', true),   -- not an address
               (5, '{W4}', false)           -- not current (the WHEN condition)"
        ));
        run(&format!(
            "INSERT INTO public.associated_wallets (user_id, wallet, chain, is_delete) VALUES
               (2, '{W3}', 'eth', false), (2, '0x5555555555555555555555555555555555555555', 'sol', false),
               (2, '0x6666666666666666666666666666666666666666', 'eth', true)"
        ));
        run(&format!(
            "UPDATE public.users SET wallet = '{W4}' WHERE user_id = 4"
        ));
        assert_eq!(
            balances(),
            [
                format!("{W2}|42|7|2020-01-01 00:00:00"),
                format!("{W3}|0||1970-01-01 00:00:00"),
                format!("{W4}|0||1970-01-01 00:00:00"),
                format!("{MIXED_LOWER}|0||1970-01-01 00:00:00"),
            ]
        );
        let reason = "linked to a user: enrolled by the audius_indexer_enroll trigger, no read yet";
        assert_eq!(
            rows(
                "SELECT format('%s|%s|%s|%s', wallet, min_block, reason, attempts)
                    FROM audius_indexer.follow_pending ORDER BY wallet"
            ),
            [W3, W4, MIXED_LOWER].map(|w| format!("{w}||{reason}|1"))
        );
        assert_eq!(
            rows("SELECT action FROM audius_indexer.uninstall_enrollment()"),
            ["dropped", "dropped"]
        );
    }

    // ---------------------------------------------------------------------------------------------
    // the follow queue (sql/follow.sql, disable('follow'))
    // ---------------------------------------------------------------------------------------------

    #[pg_test]
    fn follow_pending_queues_lagging_backs_off_failed_and_removes_done() {
        serial();
        run("INSERT INTO audius_indexer.follow_pending (wallet, min_block, reason, attempts) VALUES
               ('a', 5, 'lagging', 1), ('b', 5, 'lagging', 1), ('c', 9, 'revert', 2), ('z', 1, 'revert', 1)");
        run("SELECT audius_indexer._follow_pending(
               ARRAY['a', 'b', 'c', 'd', 'e'],             -- the wallets of this write
               ARRAY['b', 'd'], ARRAY[7, 8]::bigint[],     -- lagging reads, with the block to reach
               ARRAY['c', 'e'], ARRAY[NULL, 11]::bigint[], -- failed reads
               ARRAY['revert', 'timeout'], 60, 3600)");
        let lagging = "the node answered from a block older than the transfer (lagging node)";
        assert_eq!(
            rows("SELECT format('%s|%s|%s|%s|%s', wallet, min_block, reason, attempts, next_attempt - now())
                    FROM audius_indexer.follow_pending ORDER BY wallet"),
            [
                format!("b|7|{lagging}|2|00:00:00"), // GREATEST(5, 7), read again at once
                "c|9|revert|3|00:04:00".to_string(), // 60 * 2^2, min_block kept
                format!("d|8|{lagging}|1|00:00:00"),
                "e|11|timeout|1|00:01:00".to_string(),
                "z|1|revert|1|00:00:00".to_string(), // not part of this write: untouched
            ]
        );
    }

    #[pg_test]
    fn disable_follow_hands_pending_wallets_to_the_stale_sweep() {
        serial();
        run(&format!(
            "INSERT INTO public.eth_wallet_balances (wallet, balance, blocknumber, updated_at) VALUES
               ('{W1}', 1, 10, '2024-01-01'), ('{W2}', 2, 10, '2024-01-01')"
        ));
        run(&format!(
            "INSERT INTO audius_indexer.follow_pending (wallet, min_block, reason)
             VALUES ('{W1}', 12, 'lagging'), ('{W3}', 12, 'lagging')"
        ));
        assert_eq!(
            one("SELECT audius_indexer.disable('follow')"),
            "follow path off; 2 pending wallet(s) handed to the stale sweep (updated_at = 1970-01-01)"
        );
        assert_eq!(
            balances(),
            [
                format!("{W1}|1|10|1970-01-01 00:00:00"),
                format!("{W2}|2|10|2024-01-01 00:00:00")
            ]
        );
        assert_eq!(
            one("SELECT count(*)::text FROM audius_indexer.follow_pending"),
            "0"
        );
        assert_eq!(
            one("SELECT state FROM audius_indexer.paths WHERE path = 'follow'"),
            "off"
        );
    }
}
