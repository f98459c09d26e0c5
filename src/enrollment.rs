//! Enrollment on link: a wallet linked to an Audius user gets its `eth_wallet_balances` row at once
//! and is read by the next follow step, instead of when it first moves AUDIO.
//!
//! Audius seeded `eth_wallet_balances` once (migration `0204_backfill_eth_wallet_balances_tracked.sql`:
//! balance 0, `updated_at = '1970-01-01'`, for every current `users.wallet` and live `eth`
//! `associated_wallets` row); nothing kept it seeded since, so a wallet linked later shows 0 until a
//! `Transfer` names it. `install_enrollment()` (sql/enrollment.sql) attaches
//! `audius_indexer.enroll_wallet()` to `users` (a current row whose wallet is set or changed) and to
//! `associated_wallets` (chain `eth`, inserted, undeleted or changed). For a wallet without a row the
//! trigger inserts one exactly as 0204 does and queues it in `follow_pending`.
//!
//! No RPC happens in the trigger: the write path of Audius's indexer never waits on a node. The row
//! is read by the next follow step; the stale sweep (ours or the Go eth-indexer's) reads it first
//! too, thanks to 0204's `updated_at`. The trigger acts only while the `enroll` path is on, and never
//! fails the write: an error becomes a WARNING, as in Audius's own triggers.

use crate::errors::{raise, spi_error};
use crate::privilege::{ASSOCIATED_WALLETS, USERS};
use crate::subxact;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode::*;
use std::convert::Infallible;

/// The name of the trigger on both tables.
pub const TRIGGER_NAME: &str = "audius_indexer_enroll";

/// Why a linked wallet is queued (`follow_pending.reason`).
const REASON: &str = "linked to a user: enrolled by the audius_indexer_enroll trigger, no read yet";

/// `lower(wallet)` when it is an address (`0x` + 40 hex digits); other values are never read and
/// get no row.
fn wallet_key(wallet: &str) -> Option<String> {
    let key = wallet.to_ascii_lowercase();
    let hex = key.strip_prefix("0x")?;
    (hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(key)
}

/// The trigger's work for one row: the wallet's row ensured, and queued when the row is new.
fn enroll(trigger: &PgTrigger<'_>) -> Result<(), String> {
    let Some(new) = trigger.new() else {
        return Ok(());
    };
    let wallet: Option<String> = new.get_by_name("wallet").map_err(|e| e.to_string())?;
    let Some(key) = wallet.as_deref().and_then(wallet_key) else {
        return Ok(());
    };
    let on = crate::privilege::as_extension_owner(|| {
        crate::paths::state(crate::paths::Path::Enroll).0 == crate::paths::State::On
    });
    if !on {
        return Ok(());
    }
    if crate::audius_tables::ensure_row(&key) {
        crate::privilege::as_extension_owner(|| {
            Spi::run_with_args(
                "INSERT INTO audius_indexer.follow_pending (wallet, min_block, reason) \
                 VALUES ($1, NULL, $2) ON CONFLICT (wallet) DO NOTHING",
                &[key.as_str().into(), REASON.into()],
            )
            .unwrap_or_else(|e| spi_error(e))
        });
    }
    Ok(())
}

/// The enrollment trigger (`install_enrollment()` attaches it as `audius_indexer_enroll`, AFTER
/// INSERT OR UPDATE, FOR EACH ROW, on `users` and `associated_wallets`). Never fails the write: an
/// error becomes `WARNING: An error occurred in audius_indexer_enroll: …` and the trigger's work is
/// rolled back. Returns NULL (an AFTER trigger).
#[pg_trigger]
pub fn enroll_wallet<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, Infallible> {
    let name = crate::triggers::tg_name(trigger);
    Spi::connect_mut(|_client| {
        subxact::run_catching(&name, || enroll(trigger));
    });
    Ok(None)
}

/// `enable('enroll')`: ERROR 55000 unless `install_enrollment()` has attached the trigger to both
/// `public.users` and `public.associated_wallets`.
pub fn ensure_installed() {
    let installed: i64 = Spi::get_one_with_args::<i64>(
        "SELECT pg_catalog.count(*) FROM pg_catalog.pg_trigger t \
          WHERE t.tgname OPERATOR(pg_catalog.=) $1 AND NOT t.tgisinternal \
            AND t.tgfoid OPERATOR(pg_catalog.=) 'audius_indexer.enroll_wallet()'::pg_catalog.regprocedure \
            AND t.tgrelid OPERATOR(pg_catalog.=) ANY (ARRAY[pg_catalog.to_regclass($2), pg_catalog.to_regclass($3)])",
        &[TRIGGER_NAME.into(), USERS.into(), ASSOCIATED_WALLETS.into()],
    )
    .unwrap_or_else(|e| spi_error(e))
    .unwrap_or(0);
    if installed < 2 {
        raise(
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "audius_indexer: the enroll path needs the {TRIGGER_NAME} trigger on {USERS} and {ASSOCIATED_WALLETS} ({installed} of 2 installed)"
            ),
            None,
            Some(
                "As the owner of the Audius tables: SELECT * FROM audius_indexer.install_enrollment(); then enable('enroll') again."
                    .into(),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::wallet_key;

    #[test]
    fn only_addresses_are_enrolled_in_lower_case() {
        let a = "0xAbCdEf0123456789abcdef0123456789ABCDEF01";
        assert_eq!(wallet_key(a), Some(a.to_ascii_lowercase()));
        for bad in [
            "",
            "0x",
            "abcdef0123456789abcdef0123456789abcdef01",
            "0xabcdef0123456789abcdef0123456789abcdef0",
            "0xabcdef0123456789abcdef0123456789abcdef011",
            "0xabcdef0123456789abcdef0123456789abcdef0g",
            " 0xabcdef0123456789abcdef0123456789abcdef01",
            "0Xabcdef0123456789abcdef0123456789abcdef01x",
        ] {
            assert_eq!(wallet_key(bad), None, "{bad:?}");
        }
    }
}
