//! The SQL the challenge processors run, as the Go challenge job (`jobs/index_challenges.go`) ran
//! it, plus the position bookkeeping of the two improvements.
//!
//! Audius tables are named with their schema (`public`, where Audius keeps them) and run as the
//! owner of `user_challenges` (`run.rs`, `privilege::as_owner_of`): a table missing from `public`
//! is an error, never a name that falls through the search_path to a session's `pg_temp`. Scans pass a position as
//! `($1 block, $2 tiebreak)`; a NULL tiebreak means "rows after block $1", so the row comparison
//! yields NULL and only `blocknumber > $1` admits a row. `ix_user_events_blocknumber` (Audius
//! 0209, `sql/indexes.sql`) serves the `user_events` scans in order (an incremental sort adds the
//! `id`); `users_new_blocknumber_idx` the `users` scan; `ix_user_events_referrer` the re-derivation
//! by referrer.

/// `LoadChallenge`: the catalog row (missing or inactive → the processor does nothing).
pub const LOAD_CHALLENGE: &str = "SELECT active, amount::text FROM public.challenges WHERE id = $1";

pub const READ_CHECKPOINT: &str =
    "SELECT last_checkpoint::bigint FROM public.indexing_checkpoints WHERE tablename = $1";

/// The Go challenge job's checkpoint write (called only when the value moves forward).
pub const WRITE_CHECKPOINT: &str = "INSERT INTO public.indexing_checkpoints (tablename, last_checkpoint) \
     VALUES ($1, $2) ON CONFLICT (tablename) DO UPDATE SET last_checkpoint = EXCLUDED.last_checkpoint";

/// The statement's own snapshot as the settled rule needs it (`SnapshotXids`): `pg_snapshot_xmax`
/// and the oldest transaction in progress other than ours (`min(pg_snapshot_xip)`, which leaves
/// the caller's transaction out; `xmax` when there is none), both bigint. Uncorrelated
/// subqueries: computed once per statement, with the snapshot the statement reads with.
macro_rules! snapshot_xids {
    () => {
        "(SELECT pg_catalog.pg_snapshot_xmax(s)::text::bigint FROM pg_catalog.pg_current_snapshot() AS s), \
         (SELECT COALESCE((SELECT pg_catalog.min(x::text::bigint) FROM pg_catalog.pg_snapshot_xip(s) AS x), \
                          pg_catalog.pg_snapshot_xmax(s)::text::bigint) \
            FROM pg_catalog.pg_current_snapshot() AS s)"
    };
}

/// A reference point for the settled rule (`challenge_rules::Reference`), taken once per run
/// before the first scan and kept by the backend for later scans (`run.rs`): the transaction id
/// this statement gives the run's transaction (NULL when it had one already: not fresh, no
/// reference) and the oldest transaction in progress at its snapshot (taken before that id).
pub const REFERENCE: &str = "SELECT CASE WHEN pg_catalog.pg_current_xact_id_if_assigned() IS NULL \
            THEN pg_catalog.pg_current_xact_id()::text::bigint END, \
       (SELECT COALESCE((SELECT pg_catalog.min(x::text::bigint) FROM pg_catalog.pg_snapshot_xip(s) AS x), \
                        pg_catalog.pg_snapshot_xmax(s)::text::bigint) \
          FROM pg_catalog.pg_current_snapshot() AS s)";

/// The Go challenge job's dirty `user_events` scan with a processor's filter: current rows past the
/// position `($1, $2)`, in `(blocknumber, id)` order, at most `$3`; with each row its raw `xmin`
/// (bigint) and the scan's own snapshot (`snapshot_xids!`), from which `run.rs` decides which rows
/// are settled (`challenge_rules::settled_bound`): the stored position never passes a row a
/// transaction still in progress may commit a row before.
macro_rules! dirty_user_events {
    ($filter:literal) => {
        concat!(
            "SELECT ue.id::bigint, ue.user_id, ue.blocknumber::bigint, ue.xmin::text::bigint, ",
            snapshot_xids!(),
            " FROM public.user_events ue \
             WHERE ue.blocknumber >= $1 AND (ue.blocknumber > $1 OR ue.id > $2) AND ue.is_current AND ",
            $filter,
            " ORDER BY ue.blocknumber, ue.id LIMIT $3"
        )
    };
}

/// The dirty `user_events` scan of `m`: current mobile rows.
pub const DIRTY_MOBILE: &str = dirty_user_events!("ue.is_mobile_user = true");

/// The dirty `user_events` scan shared by `r`, `rv` and `rd`: current rows with a referrer.
pub const DIRTY_REFERRAL: &str = dirty_user_events!("ue.referrer IS NOT NULL");

/// The second dirty scan of `r`/`rv` (the verification gap): `users` rows past the position.
pub const DIRTY_USERS: &str =
    "SELECT u.user_id, u.blocknumber::bigint, u.txhash::text FROM public.users u \
     WHERE u.blocknumber >= $1 AND (u.blocknumber > $1 OR (u.user_id, u.txhash::text) > ($2, $3)) \
     ORDER BY u.blocknumber, u.user_id, u.txhash::text LIMIT $4";

/// `m`'s recompute: the dirty users that still have a current mobile row (first-seen order).
pub const RECOMPUTE_MOBILE: &str =
    "SELECT d.uid, 0 FROM unnest($1::integer[]) WITH ORDINALITY AS d(uid, ord) \
     WHERE EXISTS (SELECT 1 FROM public.user_events ue \
                    WHERE ue.user_id = d.uid AND ue.is_current AND ue.is_mobile_user = true) \
     ORDER BY d.ord";

/// Current referrals `(user_id, referrer)` of the ids in `$1` (matched on `ue.<column>`), in the
/// ids' order, optionally only those whose referrer's current `users` row has
/// `COALESCE(is_verified, false) = $2`.
macro_rules! referrals {
    ($column:literal) => {
        referrals!(@ $column, "")
    };
    ($column:literal, referrer_verified) => {
        referrals!($column, referrer_verified, "")
    };
    ($column:literal, referrer_verified, $and:literal) => {
        referrals!(@ $column, concat!("WHERE EXISTS (SELECT 1 FROM public.users u WHERE u.user_id = ue.referrer \
                                AND u.is_current AND COALESCE(u.is_verified, false) = $2) ", $and))
    };
    (@ $column:literal, $verified:expr) => {
        concat!(
            "SELECT ue.user_id, ue.referrer FROM unnest($1::integer[]) WITH ORDINALITY AS d(id, ord) \
             JOIN public.user_events ue ON ue.",
            $column,
            " = d.id AND ue.is_current AND ue.referrer IS NOT NULL ",
            $verified,
            " ORDER BY d.ord, ue.id"
        )
    };
}

/// `r`/`rv`'s recompute for dirty referred users: their current referrals whose referrer's
/// current `users` row has `COALESCE(is_verified, false) = $2`.
pub const RECOMPUTE_REFERRALS: &str = referrals!("user_id", referrer_verified);

/// `r`/`rv`'s recompute for referrers whose `users` row changed: every pair they referred that the
/// `user_events` scan has already passed (`(blocknumber, id) <= ($3, $4)`); the pairs beyond it
/// are derived by that scan when it gets there, with the state of that moment.
pub const RECOMPUTE_BY_REFERRER: &str = referrals!(
    "referrer",
    referrer_verified,
    "AND (ue.blocknumber < $3 OR (ue.blocknumber = $3 AND ue.id <= $4))"
);

/// `rd`'s recompute: every current referral of the dirty users, regardless of verification.
pub const RECOMPUTE_REFERRED: &str = referrals!("user_id");

/// `UpsertUserChallenge`, set-based, rows written in the given order: `is_complete` sticky,
/// `amount` and `completed_at` kept once complete, `completed_blocknumber` never set.
/// `$1` challenge, `$2` amount, `$3` recipients, `$4` specifiers, `$5` current step, `$6` complete.
pub const UPSERT: &str = "INSERT INTO public.user_challenges AS uc \
       (challenge_id, user_id, specifier, is_complete, current_step_count, amount, created_at, completed_at) \
     SELECT $1, t.user_id, t.specifier, $6, $5, $2, now(), CASE WHEN $6 THEN now() END \
       FROM unnest($3::integer[], $4::text[]) WITH ORDINALITY AS t(user_id, specifier, ord) \
      ORDER BY t.ord \
     ON CONFLICT (challenge_id, specifier) DO UPDATE SET \
       current_step_count = EXCLUDED.current_step_count, \
       is_complete = uc.is_complete OR EXCLUDED.is_complete, \
       amount = CASE WHEN uc.is_complete THEN uc.amount ELSE EXCLUDED.amount END, \
       completed_at = CASE WHEN uc.is_complete THEN uc.completed_at \
                           WHEN EXCLUDED.is_complete THEN EXCLUDED.completed_at \
                           ELSE uc.completed_at END";

/// One run at a time (worker, pg_cron, psql): waits for a run in progress to commit.
pub const LOCK: &str = "SELECT pg_catalog.pg_advisory_xact_lock(1635083621, 3)";

pub const LOAD_STATE: &str =
    "SELECT ue_block, ue_id, ue_checkpoint, users_block, users_user_id, users_txhash \
     FROM audius_indexer.challenge_processor_state WHERE challenge_id = $1";

pub const SAVE_UE_POSITION: &str = "UPDATE audius_indexer.challenge_processor_state \
     SET ue_block = $2, ue_id = $3, ue_checkpoint = $4 WHERE challenge_id = $1";

pub const SAVE_USERS_POSITION: &str = "UPDATE audius_indexer.challenge_processor_state \
     SET users_block = $2, users_user_id = $3, users_txhash = $4 WHERE challenge_id = $1";

/// The outcome of one run of one processor (after its subtransaction, so errors are recorded).
/// `last_error` keeps the latest error; it is current while `last_error_at = last_run_at`.
pub const RECORD_RUN: &str = "UPDATE audius_indexer.challenge_processor_state s SET \
       last_run_at = c.t, last_dirty_rows = $2, last_users = $3, \
       last_upserts = $4, checkpoint_before = $5, checkpoint_after = $6, \
       last_error = COALESCE($7, s.last_error), \
       last_error_at = CASE WHEN $7 IS NULL THEN s.last_error_at ELSE c.t END, \
       runs = s.runs + 1, errors = s.errors + CASE WHEN $7 IS NULL THEN 0 ELSE 1 END, \
       total_upserts = s.total_upserts + $4 \
     FROM (SELECT pg_catalog.clock_timestamp() AS t) AS c \
     WHERE s.challenge_id = $1";
