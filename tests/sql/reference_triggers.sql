-- Plain PL/pgSQL reference implementations of the three Audius dedupe triggers, written by us from the
-- behaviour of Audius's originals (AudiusProject/api `ddl/functions/handle_user_challenges.sql` and
-- `ddl/functions/handle_challenge_disbursements.sql` @a93cc8d). They are the oracle of the differential
-- test and the baseline of bench/triggers.
--
-- Two variants of every function, identical except for the notification membership test:
--   *_any       `<user id> = ANY(user_ids)`     (the pre-#880 form; GIN cannot serve it)
--   *_contains  `user_ids @> ARRAY[<user id>]`  (the #880 form; a GIN can serve it)
-- The *_any functions are written out below; the *_contains ones (and the case-sensitive sol
-- function) are derived from them at load time, see "The other variants" near the end.
-- Both sol variants carry the documented fix (docs/operations.md, "Triggers: dedupe in Rust"): the
-- recipient is resolved case-insensitively, `lower(users.wallet) = lower(new.recipient_eth_address)`.
-- `ref_handle_sol_reward_disbursement_case_sensitive()` keeps the original case-sensitive
-- `users.wallet = new.recipient_eth_address` for the targeted test that shows what the fix changes.
--
-- Lines ending in `-- @trace` only report which branch ran (RAISE NOTICE 'ref-branch <name>' when the
-- session sets audius_ref.trace = on). They never change behaviour; bench/triggers strips them so the
-- benchmarked plpgsql is the plain function.

CREATE OR REPLACE FUNCTION public.ref_trace(branch text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('audius_ref.trace', true) = 'on' THEN
        RAISE NOTICE 'ref-branch %', branch;
    END IF;
END
$$;

-- ---------------------------------------------------------------------------------------------------
-- on_user_challenge
-- ---------------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION public.ref_handle_on_user_challenge_any() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    cooldown_days integer;
    existing_notification integer;
    listen_streak_value integer;
    v_rows bigint; -- @trace
BEGIN
    IF (new.is_complete = true) THEN
        SELECT challenges.cooldown_days INTO cooldown_days FROM challenges WHERE id = new.challenge_id;

        IF (cooldown_days IS NULL OR cooldown_days = 0) THEN
            IF new.challenge_id NOT IN ('tt', 'tp', 'tut', 'dvl') THEN
                INSERT INTO notification (blocknumber, user_ids, timestamp, type, group_id, specifier, data)
                VALUES (
                    new.completed_blocknumber,
                    ARRAY[new.user_id],
                    new.completed_at,
                    'claimable_reward',
                    'claimable_reward:' || new.user_id || ':challenge:' || new.challenge_id || ':specifier:' || new.specifier,
                    new.specifier,
                    json_build_object('specifier', new.specifier, 'challenge_id', new.challenge_id, 'amount', new.amount)
                )
                ON CONFLICT DO NOTHING;
                GET DIAGNOSTICS v_rows = ROW_COUNT; -- @trace
                PERFORM public.ref_trace(CASE WHEN v_rows > 0 THEN 'uc.A.claimable.inserted' ELSE 'uc.A.claimable.conflict' END); -- @trace
            ELSE -- @trace
                PERFORM public.ref_trace('uc.A.claimable.skipped_' || new.challenge_id); -- @trace
            END IF;

            IF new.challenge_id = 'e' THEN
                SELECT listen_streak INTO listen_streak_value
                FROM challenge_listen_streak
                WHERE user_id = new.user_id
                LIMIT 1;
                PERFORM public.ref_trace(CASE WHEN listen_streak_value IS NULL THEN 'uc.A.e.no_streak' ELSE 'uc.A.e.streak' END); -- @trace
            END IF;

            INSERT INTO notification (blocknumber, user_ids, timestamp, type, group_id, specifier, data)
            VALUES (
                new.completed_blocknumber,
                ARRAY[new.user_id],
                new.completed_at,
                'challenge_reward',
                'challenge_reward:' || new.user_id || ':challenge:' || new.challenge_id || ':specifier:' || new.specifier,
                new.user_id,
                CASE
                    WHEN new.challenge_id = 'e' THEN
                        json_build_object('specifier', new.specifier, 'challenge_id', new.challenge_id,
                                          'amount', new.amount::text || '00000000',
                                          'listen_streak', coalesce(listen_streak_value, 0))
                    ELSE
                        json_build_object('specifier', new.specifier, 'challenge_id', new.challenge_id,
                                          'amount', new.amount::text || '00000000')
                END
            )
            ON CONFLICT DO NOTHING;
            GET DIAGNOSTICS v_rows = ROW_COUNT; -- @trace
            PERFORM public.ref_trace(CASE WHEN v_rows > 0 THEN 'uc.A.challenge_reward.inserted' ELSE 'uc.A.challenge_reward.conflict' END); -- @trace
        ELSE
            IF (new.challenge_id != 'b' AND new.challenge_id != 's') THEN
                SELECT id INTO existing_notification
                FROM notification
                WHERE type = 'reward_in_cooldown'
                  AND new.user_id = ANY(user_ids)
                  AND timestamp >= (new.completed_at - interval '1 hour')
                LIMIT 1;

                IF existing_notification IS NULL THEN
                    INSERT INTO notification (blocknumber, user_ids, timestamp, type, group_id, specifier, data)
                    VALUES (
                        new.completed_blocknumber,
                        ARRAY[new.user_id],
                        new.completed_at,
                        'reward_in_cooldown',
                        'reward_in_cooldown:' || new.user_id || ':challenge:' || new.challenge_id || ':specifier:' || new.specifier,
                        new.specifier,
                        json_build_object('specifier', new.specifier, 'challenge_id', new.challenge_id, 'amount', new.amount)
                    )
                    ON CONFLICT DO NOTHING;
                    GET DIAGNOSTICS v_rows = ROW_COUNT; -- @trace
                    PERFORM public.ref_trace(CASE WHEN v_rows > 0 THEN 'uc.B.cooldown.inserted' ELSE 'uc.B.cooldown.conflict' END); -- @trace
                ELSE -- @trace
                    PERFORM public.ref_trace('uc.B.cooldown.deduped'); -- @trace
                END IF;
            ELSE -- @trace
                PERFORM public.ref_trace('uc.B.skipped_' || new.challenge_id); -- @trace
            END IF;
        END IF;

        INSERT INTO user_score_features (user_id, challenge_count, updated_at)
        SELECT new.user_id, count(*)::int AS challenge_count, now()
        FROM user_challenges uc
        JOIN users u ON u.user_id = uc.user_id
        WHERE uc.user_id = new.user_id
          AND uc.is_complete
          AND uc.challenge_id NOT IN ('m', 'b')
          AND uc.completed_at <= (u.created_at + interval '3 minutes')
        ON CONFLICT (user_id) DO UPDATE
            SET challenge_count = EXCLUDED.challenge_count,
                updated_at      = EXCLUDED.updated_at
        WHERE user_score_features.challenge_count IS DISTINCT FROM EXCLUDED.challenge_count;
        GET DIAGNOSTICS v_rows = ROW_COUNT; -- @trace
        PERFORM public.ref_trace(CASE WHEN v_rows > 0 THEN 'uc.score.written' ELSE 'uc.score.unchanged' END); -- @trace
    ELSE -- @trace
        PERFORM public.ref_trace('uc.incomplete'); -- @trace
    END IF;

    RETURN new;
END
$$;

-- ---------------------------------------------------------------------------------------------------
-- on_challenge_disbursement (legacy table)
-- ---------------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION public.ref_handle_challenge_disbursement_any() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    reward_manager_tx reward_manager_txs%ROWTYPE;
    existing_notification integer;
    reward_code_exists boolean;
    v_rows bigint; -- @trace
BEGIN
    SELECT * INTO reward_manager_tx FROM reward_manager_txs
     WHERE reward_manager_txs.signature = new.signature LIMIT 1;

    IF reward_manager_tx IS NOT NULL THEN
        SELECT exists(SELECT 1 FROM reward_codes WHERE code = new.challenge_id) INTO reward_code_exists;

        IF NOT reward_code_exists THEN
            SELECT id INTO existing_notification
            FROM notification
            WHERE type = 'challenge_reward'
              AND new.user_id = ANY(user_ids)
              AND timestamp >= (new.created_at - interval '1 hour')
            LIMIT 1;

            IF existing_notification IS NULL THEN
                INSERT INTO notification (slot, user_ids, timestamp, type, group_id, specifier, data)
                VALUES (
                    new.slot,
                    ARRAY[new.user_id],
                    new.created_at,
                    'challenge_reward',
                    'challenge_reward:' || new.user_id || ':challenge:' || new.challenge_id || ':specifier:' || new.specifier,
                    new.user_id,
                    json_build_object('specifier', new.specifier, 'challenge_id', new.challenge_id, 'amount', new.amount)
                )
                ON CONFLICT DO NOTHING;
                GET DIAGNOSTICS v_rows = ROW_COUNT; -- @trace
                PERFORM public.ref_trace(CASE WHEN v_rows > 0 THEN 'cd.inserted' ELSE 'cd.conflict' END); -- @trace
            ELSE -- @trace
                PERFORM public.ref_trace('cd.deduped'); -- @trace
            END IF;
        ELSE -- @trace
            PERFORM public.ref_trace('cd.reward_code'); -- @trace
        END IF;
    ELSE -- @trace
        PERFORM public.ref_trace('cd.no_reward_manager_tx'); -- @trace
    END IF;
    RETURN NULL;
EXCEPTION
    WHEN others THEN
        RAISE WARNING 'An error occurred in %: %', tg_name, sqlerrm;
        PERFORM public.ref_trace('cd.error'); -- @trace
        RETURN NULL;
END
$$;

-- ---------------------------------------------------------------------------------------------------
-- on_sol_reward_disbursement (new indexer table). *_any / *_contains carry the case-insensitive fix.
-- ---------------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION public.ref_handle_sol_reward_disbursement_any() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    resolved_user_id integer;
    existing_notification integer;
    reward_code_exists boolean;
    v_rows bigint; -- @trace
BEGIN
    SELECT users.user_id INTO resolved_user_id
      FROM users
     WHERE lower(users.wallet) = lower(new.recipient_eth_address)
       AND users.is_current = true
     LIMIT 1;

    IF resolved_user_id IS NULL THEN
        PERFORM public.ref_trace('sol.unresolved'); -- @trace
        RETURN NULL;
    END IF;

    SELECT exists(SELECT 1 FROM reward_codes WHERE code = new.challenge_id) INTO reward_code_exists;

    IF NOT reward_code_exists THEN
        SELECT id INTO existing_notification
          FROM notification
         WHERE type = 'challenge_reward'
           AND resolved_user_id = ANY(user_ids)
           AND timestamp >= (new.created_at - interval '1 hour')
         LIMIT 1;

        IF existing_notification IS NULL THEN
            INSERT INTO notification (slot, user_ids, timestamp, type, group_id, specifier, data)
            VALUES (
                new.slot,
                ARRAY[resolved_user_id],
                new.created_at,
                'challenge_reward',
                'challenge_reward:' || resolved_user_id || ':challenge:' || new.challenge_id || ':specifier:' || new.specifier,
                resolved_user_id,
                json_build_object('specifier', new.specifier, 'challenge_id', new.challenge_id, 'amount', new.amount)
            )
            ON CONFLICT DO NOTHING;
            GET DIAGNOSTICS v_rows = ROW_COUNT; -- @trace
            PERFORM public.ref_trace(CASE WHEN v_rows > 0 THEN 'sol.inserted' ELSE 'sol.conflict' END); -- @trace
        ELSE -- @trace
            PERFORM public.ref_trace('sol.deduped'); -- @trace
        END IF;
    ELSE -- @trace
        PERFORM public.ref_trace('sol.reward_code'); -- @trace
    END IF;

    PERFORM pg_notify('challenge_disbursed',
        json_build_object('user_id', resolved_user_id, 'challenge_id', new.challenge_id,
                          'specifier', new.specifier, 'amount', new.amount,
                          'signature', new.signature, 'slot', new.slot)::text);
    PERFORM public.ref_trace('sol.notified'); -- @trace
    RETURN NULL;
EXCEPTION
    WHEN others THEN
        RAISE WARNING 'An error occurred in %: %', tg_name, sqlerrm;
        PERFORM public.ref_trace('sol.error'); -- @trace
        RETURN NULL;
END
$$;

-- ---------------------------------------------------------------------------------------------------
-- The other variants, derived from the functions above by rewriting their bodies (pg_proc.prosrc),
-- so that a variant cannot drift from the function it is a variant of:
--   ref_handle_<trigger>_contains   the *_any body, `<user id> = ANY(user_ids)` rewritten to
--                                   `user_ids @> ARRAY[<user id>]`
--   ref_handle_sol_reward_disbursement_case_sensitive
--                                   Audius's original behaviour: the sol *_contains body with the
--                                   case-sensitive match `users.wallet = new.recipient_eth_address`,
--                                   without its `-- @trace` lines
-- A rewrite that matches nothing is an error: the bodies above changed, adjust the pattern.
-- ---------------------------------------------------------------------------------------------------
DO $derive$
DECLARE
    v record;
    body text;
    derived text;
BEGIN
    FOR v IN SELECT * FROM (VALUES
        ('ref_handle_on_user_challenge_any', 'ref_handle_on_user_challenge_contains',
         '(\S+) = ANY\(user_ids\)', 'user_ids @> ARRAY[\1]', false),
        ('ref_handle_challenge_disbursement_any', 'ref_handle_challenge_disbursement_contains',
         '(\S+) = ANY\(user_ids\)', 'user_ids @> ARRAY[\1]', false),
        ('ref_handle_sol_reward_disbursement_any', 'ref_handle_sol_reward_disbursement_contains',
         '(\S+) = ANY\(user_ids\)', 'user_ids @> ARRAY[\1]', false),
        ('ref_handle_sol_reward_disbursement_contains', 'ref_handle_sol_reward_disbursement_case_sensitive',
         'lower\(users\.wallet\) = lower\(new\.recipient_eth_address\)', 'users.wallet = new.recipient_eth_address',
         true)
    ) AS t(source, target, pattern, replacement, strip_trace)
    LOOP
        SELECT p.prosrc INTO body FROM pg_catalog.pg_proc p
         WHERE p.oid = pg_catalog.to_regprocedure('public.' || v.source || '()');
        derived := pg_catalog.regexp_replace(body, v.pattern, v.replacement, 'g');
        IF derived IS NOT DISTINCT FROM body THEN
            RAISE EXCEPTION 'reference_triggers.sql: % not derived, % has no match for %', v.target, v.source, v.pattern;
        END IF;
        IF v.strip_trace THEN
            derived := pg_catalog.regexp_replace(derived, '^.*-- @trace\n', '', 'gn');
        END IF;
        EXECUTE pg_catalog.format('CREATE OR REPLACE FUNCTION public.%I() RETURNS trigger LANGUAGE plpgsql AS %L',
                                  v.target, derived);
    END LOOP;
END
$derive$;

-- ---------------------------------------------------------------------------------------------------
-- Attach the Audius triggers (same names, events and tables as Audius) to one variant.
--   uc_variant / cd_variant: 'any' | 'contains';  sol_variant: 'any' | 'contains' | 'case_sensitive'
-- ---------------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION public.ref_attach_triggers(uc_variant text, cd_variant text DEFAULT NULL,
                                                      sol_variant text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE OR REPLACE TRIGGER on_user_challenge AFTER INSERT OR UPDATE ON public.user_challenges '
                   'FOR EACH ROW EXECUTE FUNCTION public.%I()', 'ref_handle_on_user_challenge_' || uc_variant);
    EXECUTE format('CREATE OR REPLACE TRIGGER on_challenge_disbursement AFTER INSERT ON public.challenge_disbursements '
                   'FOR EACH ROW EXECUTE FUNCTION public.%I()',
                   'ref_handle_challenge_disbursement_' || coalesce(cd_variant, uc_variant));
    EXECUTE format('CREATE OR REPLACE TRIGGER on_sol_reward_disbursement AFTER INSERT ON public.sol_reward_disbursements '
                   'FOR EACH ROW EXECUTE FUNCTION public.%I()',
                   'ref_handle_sol_reward_disbursement_' || coalesce(sol_variant, cd_variant, uc_variant));
END
$$;
