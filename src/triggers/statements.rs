//! Every SQL statement the trigger functions run, and the per-backend cache of their SPI plans.
//!
//! Each statement is prepared once per backend (`SPI_prepare` + `SPI_keepplan`) the first time a
//! trigger needs it, then reused for every row: PostgreSQL's plan cache revalidates the kept plan
//! after DDL or a `search_path` change, exactly as it does for PL/pgSQL's cached plans. Table names
//! are unqualified on purpose: like the Audius functions they replace, they resolve through the
//! session's `search_path` (Audius keeps the tables in `public`).
//!
//! Notification lookups test membership with `user_ids @> ARRAY[$1]::integer[]` and name the type as
//! a literal, so the partial GINs of `sql/indexes.sql` (`WHERE type = '<type>'`) can serve them.
//! The texts are exposed through `audius_indexer.trigger_statements()` so tests and `doctor()` can
//! EXPLAIN exactly what runs here.

use std::cell::RefCell;

use pgrx::pg_sys::{self, PgOid};
use pgrx::spi::{OwnedPreparedStatement, SpiClient};

/// One positional parameter: its type OID (what we bind) and its SQL spelling (for PREPARE/EXPLAIN).
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// Type the datum is bound as.
    pub oid: pg_sys::Oid,
    /// The same type as SQL, e.g. `timestamp without time zone`.
    pub sql_type: &'static str,
}

const INT4: Param = Param {
    oid: pg_sys::INT4OID,
    sql_type: "integer",
};
const INT8: Param = Param {
    oid: pg_sys::INT8OID,
    sql_type: "bigint",
};
const TEXT: Param = Param {
    oid: pg_sys::TEXTOID,
    sql_type: "text",
};
const VARCHAR: Param = Param {
    oid: pg_sys::VARCHAROID,
    sql_type: "character varying",
};
const TS: Param = Param {
    oid: pg_sys::TIMESTAMPOID,
    sql_type: "timestamp without time zone",
};
const TSTZ: Param = Param {
    oid: pg_sys::TIMESTAMPTZOID,
    sql_type: "timestamp with time zone",
};

/// A statement a trigger runs.
#[derive(Debug)]
pub struct Statement {
    /// Slot in the per-backend plan cache (index into [`ALL`]).
    pub slot: usize,
    /// Stable name (used by tests and diagnostics).
    pub name: &'static str,
    /// The trigger function that runs it.
    pub function: &'static str,
    /// Exact SQL text that is prepared.
    pub sql: &'static str,
    /// Parameter types, in `$n` order.
    pub params: &'static [Param],
    /// For notification lookups: the partial GIN index that should serve it.
    pub partial_index: Option<&'static str>,
}

/// The dedupe lookup of one notification type: a notification of that type for the user in the
/// hour before `$2`. The type is a literal so the partial GIN (`WHERE type = '<type>'`) can serve it.
macro_rules! recent_notification_sql {
    ($type:literal) => {
        concat!(
            "SELECT id FROM notification WHERE type = '",
            $type,
            "' AND user_ids @> ARRAY[$1]::integer[] AND \"timestamp\" >= ($2 - interval '1 hour') LIMIT 1"
        )
    };
}

/// The `challenge_reward` notification of both disbursement triggers.
const DISBURSEMENT_NOTIFICATION_SQL: &str = "INSERT INTO notification (slot, user_ids, \"timestamp\", type, group_id, specifier, data) \
     VALUES ($1, ARRAY[$2]::integer[], $3, 'challenge_reward', $4, $5, $6::jsonb) ON CONFLICT DO NOTHING";

const UC: &str = "handle_on_user_challenge";
const CD: &str = "handle_challenge_disbursement";
const SOL: &str = "handle_sol_reward_disbursement";

/// `challenges.cooldown_days` of the completed challenge.
pub static UC_COOLDOWN_DAYS: Statement = Statement {
    slot: 0,
    name: "uc_cooldown_days",
    function: UC,
    sql: "SELECT challenges.cooldown_days FROM challenges WHERE id = $1",
    params: &[VARCHAR],
    partial_index: None,
};

/// Listen streak of the user, for challenge `e`.
pub static UC_LISTEN_STREAK: Statement = Statement {
    slot: 1,
    name: "uc_listen_streak",
    function: UC,
    sql: "SELECT listen_streak FROM challenge_listen_streak WHERE user_id = $1 LIMIT 1",
    params: &[INT4],
    partial_index: None,
};

/// Cooldown dedupe: a `reward_in_cooldown` notification for the user in the last hour.
pub static UC_COOLDOWN_LOOKUP: Statement = Statement {
    slot: 2,
    name: "uc_cooldown_lookup",
    function: UC,
    sql: recent_notification_sql!("reward_in_cooldown"),
    params: &[INT4, TS],
    partial_index: Some("ix_notification_cooldown_user_ids"),
};

/// The notifications of `on_user_challenge` (type, group_id and data computed in Rust).
pub static UC_INSERT_NOTIFICATION: Statement = Statement {
    slot: 3,
    name: "uc_insert_notification",
    function: UC,
    sql: "INSERT INTO notification (blocknumber, user_ids, \"timestamp\", type, group_id, specifier, data) \
          VALUES ($1, ARRAY[$2]::integer[], $3, $4, $5, $6, $7::jsonb) ON CONFLICT DO NOTHING",
    params: &[INT4, INT4, TS, TEXT, TEXT, TEXT, TEXT],
    partial_index: None,
};

/// Fast-challenge count upsert (verbatim semantics of the Audius function).
pub static UC_SCORE_UPSERT: Statement = Statement {
    slot: 4,
    name: "uc_user_score_features_upsert",
    function: UC,
    sql: "INSERT INTO user_score_features (user_id, challenge_count, updated_at) \
          SELECT $1, count(*)::int AS challenge_count, now() \
          FROM user_challenges uc JOIN users u ON u.user_id = uc.user_id \
          WHERE uc.user_id = $1 AND uc.is_complete AND uc.challenge_id NOT IN ('m', 'b') \
          AND uc.completed_at <= (u.created_at + interval '3 minutes') \
          ON CONFLICT (user_id) DO UPDATE \
          SET challenge_count = EXCLUDED.challenge_count, updated_at = EXCLUDED.updated_at \
          WHERE user_score_features.challenge_count IS DISTINCT FROM EXCLUDED.challenge_count",
    params: &[INT4],
    partial_index: None,
};

/// Is the disbursement's signature a reward manager transaction?
pub static CD_REWARD_MANAGER_TX: Statement = Statement {
    slot: 5,
    name: "cd_reward_manager_tx",
    function: CD,
    sql: "SELECT 1 FROM reward_manager_txs WHERE reward_manager_txs.signature = $1 LIMIT 1",
    params: &[VARCHAR],
    partial_index: None,
};

/// Is the challenge id a reward code? (both disbursement triggers)
pub static REWARD_CODE_EXISTS: Statement = Statement {
    slot: 6,
    name: "reward_code_exists",
    function: CD,
    sql: "SELECT exists(SELECT 1 FROM reward_codes WHERE code = $1)",
    params: &[VARCHAR],
    partial_index: None,
};

/// Disbursement dedupe (legacy table: `created_at` is timestamptz).
pub static CD_CHALLENGE_REWARD_LOOKUP: Statement = Statement {
    slot: 7,
    name: "cd_challenge_reward_lookup",
    function: CD,
    sql: recent_notification_sql!("challenge_reward"),
    params: &[INT4, TSTZ],
    partial_index: Some("ix_notification_challenge_reward_user_ids"),
};

/// Disbursement notification (legacy table: int slot, timestamptz created_at).
pub static CD_INSERT_NOTIFICATION: Statement = Statement {
    slot: 8,
    name: "cd_insert_notification",
    function: CD,
    sql: DISBURSEMENT_NOTIFICATION_SQL,
    params: &[INT4, INT4, TSTZ, TEXT, TEXT, TEXT],
    partial_index: None,
};

/// Recipient → user, case-insensitively (documented fix; served by `idx_lower_wallet`).
pub static SOL_RESOLVE_USER: Statement = Statement {
    slot: 9,
    name: "sol_resolve_user",
    function: SOL,
    sql: "SELECT users.user_id FROM users WHERE lower(users.wallet) = lower($1) \
          AND users.is_current = true LIMIT 1",
    params: &[TEXT],
    partial_index: None,
};

/// Disbursement dedupe (sol table: `created_at` is timestamp).
pub static SOL_CHALLENGE_REWARD_LOOKUP: Statement = Statement {
    slot: 10,
    name: "sol_challenge_reward_lookup",
    function: SOL,
    sql: recent_notification_sql!("challenge_reward"),
    params: &[INT4, TS],
    partial_index: Some("ix_notification_challenge_reward_user_ids"),
};

/// Disbursement notification (sol table: bigint slot, timestamp created_at).
pub static SOL_INSERT_NOTIFICATION: Statement = Statement {
    slot: 11,
    name: "sol_insert_notification",
    function: SOL,
    sql: DISBURSEMENT_NOTIFICATION_SQL,
    params: &[INT8, INT4, TS, TEXT, TEXT, TEXT],
    partial_index: None,
};

/// `pg_notify('challenge_disbursed', payload)`.
pub static SOL_NOTIFY: Statement = Statement {
    slot: 12,
    name: "sol_notify",
    function: SOL,
    sql: "SELECT pg_catalog.pg_notify('challenge_disbursed', $1)",
    params: &[TEXT],
    partial_index: None,
};

/// Every statement, indexed by [`Statement::slot`].
pub static ALL: [&Statement; 13] = [
    &UC_COOLDOWN_DAYS,
    &UC_LISTEN_STREAK,
    &UC_COOLDOWN_LOOKUP,
    &UC_INSERT_NOTIFICATION,
    &UC_SCORE_UPSERT,
    &CD_REWARD_MANAGER_TX,
    &REWARD_CODE_EXISTS,
    &CD_CHALLENGE_REWARD_LOOKUP,
    &CD_INSERT_NOTIFICATION,
    &SOL_RESOLVE_USER,
    &SOL_CHALLENGE_REWARD_LOOKUP,
    &SOL_INSERT_NOTIFICATION,
    &SOL_NOTIFY,
];

thread_local! {
    /// Kept plans of this backend. Deliberately leaked (`&'static`): a plan lives as long as the
    /// backend, and no destructor must run `SPI_freeplan` during process exit.
    static PLANS: RefCell<[Option<&'static OwnedPreparedStatement>; 13]> = const { RefCell::new([None; 13]) };
}

/// Returns the kept plan of `stmt`, preparing it on first use in this backend.
/// A failed prepare (e.g. a missing table) is not cached: the next call tries again.
pub fn plan(
    client: &SpiClient<'_>,
    stmt: &'static Statement,
) -> pgrx::spi::Result<&'static OwnedPreparedStatement> {
    if let Some(plan) = PLANS.with(|p| p.borrow()[stmt.slot]) {
        return Ok(plan);
    }
    let args: Vec<PgOid> = stmt.params.iter().map(|p| PgOid::from(p.oid)).collect();
    let kept = client.prepare_mut(stmt.sql, &args)?.keep();
    let kept: &'static OwnedPreparedStatement = Box::leak(Box::new(kept));
    PLANS.with(|p| p.borrow_mut()[stmt.slot] = Some(kept));
    Ok(kept)
}

/// How many statements this backend has prepared so far (diagnostics/tests).
pub fn prepared_count() -> usize {
    PLANS.with(|p| p.borrow().iter().filter(|x| x.is_some()).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_indices() {
        for (i, s) in ALL.iter().enumerate() {
            assert_eq!(s.slot, i, "{}", s.name);
            let max = (1..=s.params.len())
                .filter(|n| s.sql.contains(&format!("${n}")))
                .count();
            assert_eq!(max, s.params.len(), "{} uses every parameter", s.name);
        }
    }

    #[test]
    fn lookups_are_gin_friendly() {
        for s in ALL.iter().filter(|s| s.partial_index.is_some()) {
            assert!(
                s.sql.contains("user_ids @> ARRAY[$1]::integer[]"),
                "{}",
                s.name
            );
            assert!(!s.sql.to_lowercase().contains("any("), "{}", s.name);
            assert!(
                s.sql.contains("type = '"),
                "{}: type must be a literal",
                s.name
            );
        }
    }
}
