//! Who each piece of SQL runs as, and with which search_path (docs/security.md has the table).
//!
//! The model is PostgreSQL's own for maintenance commands (VACUUM, ANALYZE, REINDEX, REFRESH
//! MATERIALIZED VIEW): code that belongs to a table's owner runs *as that owner*, inside a
//! security-restricted operation, with a pinned search_path and a GUC nest level that undoes any
//! `SET` the owner's code makes. Two switches exist, and nothing else changes identity:
//!
//! - [`as_extension_owner`] (up, to the owner of the extension): only for the extension's own SQL on
//!   its own schema (`audius_indexer.*`), every name qualified, search_path `pg_catalog, pg_temp`.
//!   No object a less privileged role controls is reached from there: the extension's tables
//!   have no triggers but ours and belong to the extension owner.
//! - [`as_owner_of`] (to the owner of an Audius table: `eth_wallet_balances`,
//!   `eth_indexer_checkpoints`, `users`, `user_challenges`, …): every statement that names an
//!   Audius table. Whatever that table's triggers, rules, defaults, index expressions or views
//!   run, they run with the rights of the role that controls them, never more. The search_path is
//!   `pg_catalog, public, pg_temp`: Audius's PL/pgSQL triggers (`update_eth_user_balance()`, …)
//!   name their tables without a schema and find them in `public`, as for the owner's own writes.
//!
//! Both switches set `SECURITY_RESTRICTED_OPERATION`: no `SET ROLE`, no temporary objects, no
//! `LISTEN`, no cursors `WITH HOLD` can be made by the code that runs inside.

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode::*;
use std::ffi::CStr;

/// search_path for the extension's own SQL: builtins first, temporary relations only when named
/// `pg_temp.…` (every relation we name is qualified), temporary functions and operators never.
pub const OWN_SEARCH_PATH: &CStr = c"pg_catalog, pg_temp";
/// search_path for statements on the Audius tables (as their owner): builtins first, then
/// `public` where Audius keeps its tables and trigger functions, temporary relations last.
pub const AUDIUS_SEARCH_PATH: &CStr = c"pg_catalog, public, pg_temp";

/// The Audius tables the extension reads or writes, always named with their schema.
pub const ETH_WALLET_BALANCES: &str = "public.eth_wallet_balances";
pub const ETH_INDEXER_CHECKPOINTS: &str = "public.eth_indexer_checkpoints";
pub const USERS: &str = "public.users";
pub const ASSOCIATED_WALLETS: &str = "public.associated_wallets";
pub const USER_CHALLENGES: &str = "public.user_challenges";
pub const USER_EVENTS: &str = "public.user_events";
pub const INDEXING_CHECKPOINTS: &str = "public.indexing_checkpoints";

/// Puts identity, security context and settings back as they were, on every exit (an ERROR
/// unwinds through here as a Rust panic before any subtransaction or transaction is aborted).
struct Restore {
    uid: pg_sys::Oid,
    ctx: i32,
    nest: i32,
    /// Undo every setting made inside (code of another role), as VACUUM does; otherwise only the
    /// pinned search_path is undone and our own `SET LOCAL`s last until the transaction ends.
    undo_all: bool,
}

impl Drop for Restore {
    fn drop(&mut self) {
        unsafe {
            pg_sys::AtEOXact_GUC(!self.undo_all && !std::thread::panicking(), self.nest);
            pg_sys::SetUserIdAndSecContext(self.uid, self.ctx);
        }
    }
}

/// Runs `f` as `role` in a security-restricted operation with `search_path` pinned; on the way
/// out the search_path is restored, and with `undo_all` every other setting `f` (or a trigger
/// it fires) changed too.
fn switch<R>(role: pg_sys::Oid, search_path: &CStr, undo_all: bool, f: impl FnOnce() -> R) -> R {
    let (mut uid, mut ctx) = (pg_sys::Oid::INVALID, 0);
    let guard = unsafe {
        pg_sys::GetUserIdAndSecContext(&mut uid, &mut ctx);
        let nest = pg_sys::NewGUCNestLevel();
        let guard = Restore {
            uid,
            ctx,
            nest,
            undo_all,
        };
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            search_path.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        pg_sys::SetUserIdAndSecContext(
            role,
            ctx | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
        );
        guard
    };
    let r = f();
    drop(guard);
    r
}

/// The first column of the first row of `sql`; None for no row or NULL.
pub fn first_row<T: pgrx::datum::FromDatum + pgrx::datum::IntoDatum>(
    sql: &str,
    args: &[pgrx::datum::DatumWithOid],
) -> Option<T> {
    Spi::connect(|c| {
        let t = c.select(sql, Some(1), args)?;
        if t.is_empty() {
            return Ok(None);
        }
        t.first().get::<T>(1)
    })
    .unwrap_or_else(|e| crate::errors::spi_error(e))
}

/// Runs the extension's own SQL `f` as `role` (see [`switch`]); its `SET LOCAL`s outlive it.
pub fn run_as<R>(role: pg_sys::Oid, search_path: &CStr, f: impl FnOnce() -> R) -> R {
    switch(role, search_path, false, f)
}

fn oid_query(sql: &str, arg: &str) -> Option<pg_sys::Oid> {
    first_row::<pg_sys::Oid>(sql, &[arg.into()])
}

/// The owner of the extension `audius_indexer` (whoever ran CREATE EXTENSION: a superuser).
pub fn extension_owner() -> pg_sys::Oid {
    oid_query(
        "SELECT e.extowner FROM pg_catalog.pg_extension e WHERE e.extname = $1",
        "audius_indexer",
    )
    .unwrap_or_else(|| {
        crate::errors::raise(
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "extension audius_indexer is not installed in this database",
            None,
            None,
        )
    })
}

/// The owner of `table` (schema-qualified), None when there is no such relation.
pub fn owner_of(table: &str) -> Option<pg_sys::Oid> {
    oid_query(
        "SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = pg_catalog.to_regclass($1)",
        table,
    )
}

/// Whether `table` (schema-qualified) exists: optional Audius tables are detected this way, never
/// by letting a name fall through the search_path.
pub fn exists(table: &str) -> bool {
    owner_of(table).is_some()
}

/// Runs `f` (the extension's own SQL) as the extension owner; see the module comment.
pub fn as_extension_owner<R>(f: impl FnOnce() -> R) -> R {
    run_as(extension_owner(), OWN_SEARCH_PATH, f)
}

/// Runs `f` (statements on `table` and, where Audius keeps them together, its neighbours) as the
/// owner of `table`; ERROR 42P01 when the table does not exist.
pub fn as_owner_of<R>(table: &str, f: impl FnOnce() -> R) -> R {
    let owner = owner_of(table).unwrap_or_else(|| {
        crate::errors::raise(
            ERRCODE_UNDEFINED_TABLE,
            format!("relation {table} does not exist"),
            None,
            Some("audius_indexer works on the Audius tables in schema public.".into()),
        )
    });
    switch(owner, AUDIUS_SEARCH_PATH, true, f)
}
