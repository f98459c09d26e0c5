//! audius_indexer: the hot paths of an Ethereum/Audius indexer inside PostgreSQL.
//!
//! - `eth` (the workspace crate `crates/core`, which has no pgrx dependency): ABI, addresses,
//!   JSON-RPC, retries, chunk planning, Transfer logs; also the challenge rules and trigger payloads.
//! - `reader.rs`: settings → reads, interrupt-aware RPC, errors with SQLSTATEs.
//! - `api/`: the SQL functions; `sql/`: the SQL that is naturally SQL.
//! - `worker.rs`: the three background workers (sweep, follow, challenges); `triggers/`: the Rust
//!   dedupe triggers.
use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

mod api;
mod catalog_version;
mod challenges;
mod config;
mod enrollment;
mod errors;
mod follow;
/// The pure Ethereum logic lives in the workspace crate `audius_indexer_core` (no pgrx).
pub use audius_indexer_core::eth;
mod audius_tables;
mod gucs;
mod interrupts;
mod paths;
/// The #[pg_test] tier (`make check`): SPI glue against real tables, no chain.
mod pg_tests;
mod privilege;
mod reader;
mod request_budget;
mod shmem_stats;
mod subxact;
mod sweep;
mod triggers;
mod worker;

extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
extension_sql_file!(
    "../sql/triggers.sql",
    name = "triggers",
    requires = [
        triggers::handle_on_user_challenge,
        triggers::handle_challenge_disbursement,
        triggers::handle_sol_reward_disbursement
    ]
);
extension_sql_file!("../sql/sweep.sql", name = "sweep", requires = ["bootstrap"]);
extension_sql_file!(
    "../sql/challenges.sql",
    name = "challenges",
    requires = ["bootstrap", api::challenges::challenge_checkpoints]
);
extension_sql_file!(
    "../sql/follow.sql",
    name = "follow",
    requires = ["bootstrap"]
);
extension_sql_file!(
    "../sql/paths.sql",
    name = "paths",
    requires = ["bootstrap", "follow"]
);
extension_sql_file!(
    "../sql/enrollment.sql",
    name = "enrollment",
    requires = ["bootstrap", enrollment::enroll_wallet]
);
extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init(gucs::Hooks {
        max_requests_per_second: Some(request_budget::assign_rate),
    });
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        shmem_stats::init();
        request_budget::init();
        worker::register();
    }
}

/// What `cargo pgrx test` asks of an extension crate (the #[pg_test] tier, src/pg_tests.rs).
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    /// Settings of the test cluster (written to its postgresql.auto.conf).
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["timezone = 'UTC'", "lc_messages = 'C'"]
    }
}
