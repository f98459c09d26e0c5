//! The seed's incremental Phase 3 challenge processors (m, r, rv, rd), in the database: the rules
//! live in the pure core (`audius_indexer_core::challenge_rules`), the SQL in `statements.rs`, the
//! SPI glue in `run.rs`.

pub use audius_indexer_core::challenge_rules::*;
pub mod run;
mod statements;
