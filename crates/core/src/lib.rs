//! The pure core of audius_indexer. This crate does not depend on pgrx (nor on anything of
//! PostgreSQL): that it compiles without it is what keeps the logic here testable with plain
//! `cargo test` and free of database types. The extension crate re-exports it.
//!
//! - `eth`: ABI codec, addresses, JSON-RPC (HTTP, error classes, retries, failover), interrupt-aware
//!   waiting, balance reads in chunks (halving, isolation, sum-or-nothing), Transfer logs;
//! - `challenge_rules`: the rules of the Go challenge job's user_events processors (m, r, rv, rd);
//! - `trigger_payload`: group ids, JSON and pg_notify payloads of the dedupe triggers;
//! - `settings`: rules of settings that guard the server (answer memory bound, `rpc_urls_file` checks).
pub mod challenge_rules;
pub mod eth;
pub mod settings;
pub mod trigger_payload;
