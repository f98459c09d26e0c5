//! Rust trigger functions: drop-in replacements for the Audius PL/pgSQL dedupe triggers.
//!
//! * `audius_indexer.handle_on_user_challenge()` — `on_user_challenge AFTER INSERT OR UPDATE ON user_challenges`
//! * `audius_indexer.handle_challenge_disbursement()` — `on_challenge_disbursement AFTER INSERT ON challenge_disbursements`
//! * `audius_indexer.handle_sol_reward_disbursement()` — `on_sol_reward_disbursement AFTER INSERT ON sol_reward_disbursements`
//!
//! Behaviour is that of the Audius functions (`handle_user_challenges.sql` / `handle_challenge_disbursements.sql`
//! @a93cc8d): the same branches, notification rows, group_ids, JSON, `user_score_features` upsert,
//! `pg_notify` payload and error posture, with two differences that change no output:
//! every notification lookup is `user_ids @> ARRAY[$1]::integer[]` with the type as a literal (so the
//! partial GINs of `sql/indexes.sql` serve it) and runs from a plan prepared once per backend.
//! One documented behaviour change: `handle_sol_reward_disbursement` resolves the recipient with
//! `lower(users.wallet) = lower(recipient_eth_address)` (the indexer stores lowercase addresses,
//! `users.wallet` is EIP-55 mixed case, so the case-sensitive match of the Audius function misses
//! most users).
//!
//! Error posture: `handle_on_user_challenge` lets errors abort the `user_challenges` write (the Audius
//! function has no EXCEPTION block). The disbursement triggers run their body in a subtransaction
//! ([`subxact::run_catching`]): any error or Rust panic becomes
//! `WARNING:  An error occurred in <trigger name>: <message>`, their partial work is rolled back and the
//! disbursement row is stored.
//!
//! The database is assumed to use the UTF8 encoding (text values are read as Rust strings).
//!
//! Fault injection for tests: a trigger created with the argument `'audius_indexer.test_panic'`
//! (`EXECUTE FUNCTION audius_indexer.handle_…('audius_indexer.test_panic')`) panics after doing its
//! writes. `install_triggers()` never passes arguments, so production triggers cannot reach it.

use audius_indexer_core::trigger_payload as payload;
mod statements;

use crate::errors::raise;
use crate::subxact;
use std::convert::Infallible;
use std::ffi::CStr;

use pgrx::datum::{
    DatumWithOid, FromDatum, IntoDatum, Timestamp, TimestampWithTimeZone, TryFromDatumError,
};
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, SpiTupleTable};
use pgrx::PgSqlErrorCode;

use payload::JsonValue;
use statements::Statement;

/// Trigger argument that makes a trigger panic after its writes (fault injection for tests).
pub const TEST_PANIC_ARG: &str = "audius_indexer.test_panic";

/// What can go wrong inside a trigger body besides a PostgreSQL error (those unwind on their own).
#[derive(Debug)]
pub enum TriggerError {
    /// An SPI call failed without raising a PostgreSQL error.
    Spi(pgrx::spi::Error),
    /// A column of NEW has a type we cannot read as expected.
    Column(TryFromDatumError),
}

impl std::fmt::Display for TriggerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TriggerError::Spi(e) => write!(f, "SPI: {e}"),
            TriggerError::Column(e) => write!(f, "unexpected column: {e}"),
        }
    }
}

impl From<pgrx::spi::Error> for TriggerError {
    fn from(e: pgrx::spi::Error) -> Self {
        TriggerError::Spi(e)
    }
}

impl From<TryFromDatumError> for TriggerError {
    fn from(e: TryFromDatumError) -> Self {
        TriggerError::Column(e)
    }
}

impl TriggerError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        match self {
            TriggerError::Spi(_) => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            TriggerError::Column(_) => PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
        }
    }
}

// ------------------------------------------------------------------------------------------------
// small SPI helpers
// ------------------------------------------------------------------------------------------------

/// Executes the kept plan of `stmt` (read-write SPI: each statement sees the effects of the previous
/// ones, exactly like a VOLATILE PL/pgSQL function).
fn run<'conn>(
    client: &mut SpiClient<'conn>,
    stmt: &'static Statement,
    limit: Option<libc::c_long>,
    args: &[DatumWithOid<'_>],
) -> Result<SpiTupleTable<'conn>, TriggerError> {
    let plan = statements::plan(client, stmt)?;
    Ok(client.update(plan, limit, args)?)
}

/// First column of the first row, `None` when there is no row or the value is NULL
/// (PL/pgSQL `SELECT … INTO var … LIMIT 1`).
fn first_value<T: FromDatum + IntoDatum>(
    client: &mut SpiClient<'_>,
    stmt: &'static Statement,
    args: &[DatumWithOid<'_>],
) -> Result<Option<T>, TriggerError> {
    let table = run(client, stmt, Some(1), args)?;
    if table.is_empty() {
        return Ok(None);
    }
    Ok(table.first().get_one::<T>()?)
}

/// Does the query return at least one row?
fn any_row(
    client: &mut SpiClient<'_>,
    stmt: &'static Statement,
    args: &[DatumWithOid<'_>],
) -> Result<bool, TriggerError> {
    Ok(!run(client, stmt, Some(1), args)?.is_empty())
}

/// Binds an optional string as `character varying` (the type of the column it came from).
fn varchar(value: Option<&str>) -> DatumWithOid<'_> {
    // SAFETY: varchar and text share the varlena representation that `&str::into_datum` builds.
    unsafe { DatumWithOid::new(value, pgrx::pg_sys::VARCHAROID) }
}

/// Name of the firing trigger (`TG_NAME`).
pub(crate) fn tg_name(trigger: &PgTrigger<'_>) -> String {
    // SAFETY: tgname is a NUL-terminated NameData owned by the relcache entry of the firing trigger.
    unsafe { CStr::from_ptr(trigger.trigger().tgname) }
        .to_string_lossy()
        .into_owned()
}

/// Was the trigger created with [`TEST_PANIC_ARG`]?
fn test_panic_requested(trigger: &PgTrigger<'_>) -> bool {
    trigger.trigger().tgnargs > 0
        && trigger
            .extra_args()
            .map(|args| args.iter().any(|a| a == TEST_PANIC_ARG))
            .unwrap_or(false)
}

// ------------------------------------------------------------------------------------------------
// on_user_challenge
// ------------------------------------------------------------------------------------------------

/// The columns of a `user_challenges` row the trigger uses.
struct UserChallenge {
    user_id: Option<i32>,
    challenge_id: Option<String>,
    specifier: Option<String>,
    amount: Option<i32>,
    completed_blocknumber: Option<i32>,
    completed_at: Option<Timestamp>,
}

impl UserChallenge {
    fn read(row: &PgHeapTuple<'_, AllocatedByPostgres>) -> Result<Self, TriggerError> {
        Ok(UserChallenge {
            user_id: row.get_by_name("user_id")?,
            challenge_id: row.get_by_name("challenge_id")?,
            specifier: row.get_by_name("specifier")?,
            amount: row.get_by_name("amount")?,
            completed_blocknumber: row.get_by_name("completed_blocknumber")?,
            completed_at: row.get_by_name("completed_at")?,
        })
    }
}

/// Inserts one notification of `on_user_challenge` (`ON CONFLICT DO NOTHING`).
fn insert_user_challenge_notification(
    client: &mut SpiClient<'_>,
    uc: &UserChallenge,
    kind: &str,
    specifier: Option<&str>,
    data: &str,
) -> Result<(), TriggerError> {
    let group_id = payload::group_id(
        kind,
        uc.user_id,
        uc.challenge_id.as_deref(),
        uc.specifier.as_deref(),
    );
    run(
        client,
        &statements::UC_INSERT_NOTIFICATION,
        None,
        &[
            uc.completed_blocknumber.into(),
            uc.user_id.into(),
            uc.completed_at.into(),
            kind.into(),
            group_id.as_deref().into(),
            specifier.into(),
            data.into(),
        ],
    )?;
    Ok(())
}

/// Body of `handle_on_user_challenge` for a completed challenge (as Audius's
/// `handle_user_challenges.sql` does it).
fn on_user_challenge_completed(
    client: &mut SpiClient<'_>,
    uc: &UserChallenge,
) -> Result<(), TriggerError> {
    let cid = uc.challenge_id.as_deref();
    let cooldown_days: Option<i32> =
        first_value(client, &statements::UC_COOLDOWN_DAYS, &[varchar(cid)])?;

    if cooldown_days.is_none() || cooldown_days == Some(0) {
        // Branch A: claimable_reward (except trending/dvl) + challenge_reward.
        // `challenge_id NOT IN (...)` is NULL, i.e. false, for a NULL id.
        if cid.is_some_and(|c| !matches!(c, "tt" | "tp" | "tut" | "dvl")) {
            let data = payload::user_challenge_data(uc.specifier.as_deref(), cid, uc.amount);
            insert_user_challenge_notification(
                client,
                uc,
                payload::CLAIMABLE_REWARD,
                uc.specifier.as_deref(),
                &data,
            )?;
        }
        let listen_streak: Option<Option<i32>> = if cid == Some("e") {
            Some(first_value(
                client,
                &statements::UC_LISTEN_STREAK,
                &[uc.user_id.into()],
            )?)
        } else {
            None
        };
        let data = payload::user_challenge_reward_data(
            uc.specifier.as_deref(),
            cid,
            uc.amount,
            listen_streak,
        );
        // specifier = new.user_id (integer assigned to varchar)
        let user_specifier = uc.user_id.map(|u| u.to_string());
        insert_user_challenge_notification(
            client,
            uc,
            payload::CHALLENGE_REWARD,
            user_specifier.as_deref(),
            &data,
        )?;
    } else if cid.is_some_and(|c| c != "b" && c != "s") {
        // Branch B (cooldown_days <> 0): one reward_in_cooldown per user per hour.
        let recent = any_row(
            client,
            &statements::UC_COOLDOWN_LOOKUP,
            &[uc.user_id.into(), uc.completed_at.into()],
        )?;
        if !recent {
            let data = payload::user_challenge_data(uc.specifier.as_deref(), cid, uc.amount);
            insert_user_challenge_notification(
                client,
                uc,
                payload::REWARD_IN_COOLDOWN,
                uc.specifier.as_deref(),
                &data,
            )?;
        }
    }

    run(
        client,
        &statements::UC_SCORE_UPSERT,
        None,
        &[uc.user_id.into()],
    )?;
    Ok(())
}

/// Rust replacement for Audius' `handle_on_user_challenge()`; attach as
/// `AFTER INSERT OR UPDATE ON user_challenges FOR EACH ROW`. Errors abort the write. Returns NEW.
#[pg_trigger]
pub fn handle_on_user_challenge<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, Infallible> {
    let Some(new) = trigger.new() else {
        return Ok(None);
    };
    let outcome = (|| -> Result<(), TriggerError> {
        if new.get_by_name::<bool>("is_complete")? != Some(true) {
            return Ok(());
        }
        let uc = UserChallenge::read(&new)?;
        Spi::connect_mut(|client| on_user_challenge_completed(client, &uc))?;
        if test_panic_requested(trigger) {
            panic!("fault injection ({TEST_PANIC_ARG}) in {}", tg_name(trigger));
        }
        Ok(())
    })();
    if let Err(e) = outcome {
        raise(
            e.sqlstate(),
            format!(
                "audius_indexer.handle_on_user_challenge ({}): {e}",
                tg_name(trigger)
            ),
            None,
            None,
        );
    }
    Ok(Some(new))
}

// ------------------------------------------------------------------------------------------------
// on_challenge_disbursement (legacy table)
// ------------------------------------------------------------------------------------------------

/// The columns of a `challenge_disbursements` row the trigger uses.
struct ChallengeDisbursement {
    challenge_id: Option<String>,
    user_id: Option<i32>,
    specifier: Option<String>,
    signature: Option<String>,
    slot: Option<i32>,
    amount: Option<String>,
    created_at: Option<TimestampWithTimeZone>,
}

/// One disbursement as both disbursement triggers see it (their tables differ in column types,
/// hence their own lookup and insert statements).
struct Disbursement<'a, S, C> {
    lookup: &'static Statement,
    insert: &'static Statement,
    user_id: Option<i32>,
    challenge_id: Option<&'a str>,
    specifier: Option<&'a str>,
    amount: JsonValue<'a>,
    slot: S,
    created_at: C,
}

/// The part both disbursement triggers share: unless the challenge is a reward code, a
/// `challenge_reward` notification for the user, at most one per hour (`user_ids @>` lookup).
fn challenge_reward_once_an_hour<S: IntoDatum, C: IntoDatum + Copy>(
    client: &mut SpiClient<'_>,
    d: Disbursement<'_, S, C>,
) -> Result<(), TriggerError> {
    let is_reward_code: Option<bool> = first_value(
        client,
        &statements::REWARD_CODE_EXISTS,
        &[varchar(d.challenge_id)],
    )?;
    if is_reward_code == Some(true) {
        return Ok(());
    }
    let recent = any_row(client, d.lookup, &[d.user_id.into(), d.created_at.into()])?;
    if recent {
        return Ok(());
    }
    let group_id = payload::group_id(
        payload::CHALLENGE_REWARD,
        d.user_id,
        d.challenge_id,
        d.specifier,
    );
    let data = payload::disbursement_data(d.specifier, d.challenge_id, d.amount);
    let user_specifier = d.user_id.map(|u| u.to_string());
    run(
        client,
        d.insert,
        None,
        &[
            d.slot.into(),
            d.user_id.into(),
            d.created_at.into(),
            group_id.as_deref().into(),
            user_specifier.as_deref().into(),
            data.as_str().into(),
        ],
    )?;
    Ok(())
}

fn challenge_disbursement_body(
    client: &mut SpiClient<'_>,
    trigger: &PgTrigger<'_>,
) -> Result<(), TriggerError> {
    let Some(new) = trigger.new() else {
        return Ok(());
    };
    let d = ChallengeDisbursement {
        challenge_id: new.get_by_name("challenge_id")?,
        user_id: new.get_by_name("user_id")?,
        specifier: new.get_by_name("specifier")?,
        signature: new.get_by_name("signature")?,
        slot: new.get_by_name("slot")?,
        amount: new.get_by_name("amount")?,
        created_at: new.get_by_name("created_at")?,
    };

    // reward_manager_txs columns are all NOT NULL, so "the row IS NOT NULL" == "a row exists".
    if any_row(
        client,
        &statements::CD_REWARD_MANAGER_TX,
        &[varchar(d.signature.as_deref())],
    )? {
        challenge_reward_once_an_hour(
            client,
            Disbursement {
                lookup: &statements::CD_CHALLENGE_REWARD_LOOKUP,
                insert: &statements::CD_INSERT_NOTIFICATION,
                user_id: d.user_id,
                challenge_id: d.challenge_id.as_deref(),
                specifier: d.specifier.as_deref(),
                amount: JsonValue::opt_str(d.amount.as_deref()),
                slot: d.slot,
                created_at: d.created_at,
            },
        )?;
    }
    if test_panic_requested(trigger) {
        panic!("fault injection ({TEST_PANIC_ARG}) in {}", tg_name(trigger));
    }
    Ok(())
}

/// Rust replacement for Audius' `handle_challenge_disbursement()`; attach as
/// `AFTER INSERT ON challenge_disbursements FOR EACH ROW`. Never fails the insert: errors become a
/// WARNING and the trigger's work is rolled back. Returns NULL.
#[pg_trigger]
pub fn handle_challenge_disbursement<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, Infallible> {
    let name = tg_name(trigger);
    Spi::connect_mut(|client| {
        subxact::run_catching(&name, || challenge_disbursement_body(client, trigger));
    });
    Ok(None)
}

// ------------------------------------------------------------------------------------------------
// on_sol_reward_disbursement (new indexer table)
// ------------------------------------------------------------------------------------------------

/// The columns of a `sol_reward_disbursements` row the trigger uses.
struct SolRewardDisbursement {
    signature: Option<String>,
    amount: Option<i64>,
    slot: Option<i64>,
    challenge_id: Option<String>,
    specifier: Option<String>,
    recipient_eth_address: Option<String>,
    created_at: Option<Timestamp>,
}

fn sol_reward_disbursement_body(
    client: &mut SpiClient<'_>,
    trigger: &PgTrigger<'_>,
) -> Result<(), TriggerError> {
    let Some(new) = trigger.new() else {
        return Ok(());
    };
    let d = SolRewardDisbursement {
        signature: new.get_by_name("signature")?,
        amount: new.get_by_name("amount")?,
        slot: new.get_by_name("slot")?,
        challenge_id: new.get_by_name("challenge_id")?,
        specifier: new.get_by_name("specifier")?,
        recipient_eth_address: new.get_by_name("recipient_eth_address")?,
        created_at: new.get_by_name("created_at")?,
    };

    // Documented fix: case-insensitive match (indexer stores lowercase, users.wallet is mixed case).
    let resolved: Option<i32> = first_value(
        client,
        &statements::SOL_RESOLVE_USER,
        &[d.recipient_eth_address.as_deref().into()],
    )?;
    let Some(user_id) = resolved else {
        return Ok(());
    };

    challenge_reward_once_an_hour(
        client,
        Disbursement {
            lookup: &statements::SOL_CHALLENGE_REWARD_LOOKUP,
            insert: &statements::SOL_INSERT_NOTIFICATION,
            user_id: Some(user_id),
            challenge_id: d.challenge_id.as_deref(),
            specifier: d.specifier.as_deref(),
            amount: JsonValue::opt_int(d.amount),
            slot: d.slot,
            created_at: d.created_at,
        },
    )?;

    let notify = payload::challenge_disbursed_payload(
        user_id,
        d.challenge_id.as_deref(),
        d.specifier.as_deref(),
        d.amount,
        d.signature.as_deref(),
        d.slot,
    );
    run(
        client,
        &statements::SOL_NOTIFY,
        None,
        &[notify.as_str().into()],
    )?;
    if test_panic_requested(trigger) {
        panic!("fault injection ({TEST_PANIC_ARG}) in {}", tg_name(trigger));
    }
    Ok(())
}

/// Rust replacement for Audius' `handle_sol_reward_disbursement()`; attach as
/// `AFTER INSERT ON sol_reward_disbursements FOR EACH ROW`. Resolves the recipient case-insensitively.
/// Never fails the insert: errors become a WARNING and the trigger's work (including its
/// `pg_notify`) is rolled back. Returns NULL.
#[pg_trigger]
pub fn handle_sol_reward_disbursement<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, Infallible> {
    let name = tg_name(trigger);
    Spi::connect_mut(|client| {
        subxact::run_catching(&name, || sol_reward_disbursement_body(client, trigger));
    });
    Ok(None)
}

// ------------------------------------------------------------------------------------------------
// introspection
// ------------------------------------------------------------------------------------------------

/// Every SQL statement the Rust triggers prepare, verbatim, with its parameter types and, for the
/// notification lookups, the partial GIN index that should serve it. Used by tests (EXPLAIN of exactly
/// what runs) and by health checks. (The column list must stay inline for pgrx to name the columns.)
#[allow(clippy::type_complexity)]
#[pg_extern(immutable, parallel_safe)]
pub fn trigger_statements() -> TableIterator<
    'static,
    (
        name!(trigger_function, String),
        name!(statement_name, String),
        name!(statement, String),
        name!(param_types, Vec<String>),
        name!(partial_index, Option<String>),
    ),
> {
    TableIterator::new(statements::ALL.iter().map(|s| {
        (
            format!("audius_indexer.{}()", s.function),
            s.name.to_string(),
            s.sql.to_string(),
            s.params.iter().map(|p| p.sql_type.to_string()).collect(),
            s.partial_index.map(str::to_string),
        )
    }))
}

/// How many of the trigger statements this backend has prepared and kept (0 before the first
/// trigger call in the session; never more than the number of statements: plans are reused).
#[pg_extern(volatile, parallel_unsafe)]
pub fn trigger_plans_cached() -> i32 {
    i32::try_from(statements::prepared_count()).unwrap_or(i32::MAX)
}
