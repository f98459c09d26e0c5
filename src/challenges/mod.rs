//! The incremental challenge processors (m, r, rv, rd) of the Go challenge job
//! (`jobs/index_challenges.go`), in the database: the rules
//! live in the pure core (`audius_indexer_core::challenge_rules`), the SQL in `statements.rs`, the
//! SPI glue in `run.rs`.

pub use audius_indexer_core::challenge_rules::*;
pub mod run;
mod statements;

/// Advisory lock key of a run (one at a time: worker, pg_cron, psql; `statements::LOCK`).
pub const RUN_LOCK_KEY: (i32, i32) = (1_635_083_621, 3);

/// `enable('challenges')`: the processors adopt the checkpoints as they stand (another writer, the
/// Go challenge job, may have moved them while the path was off). A processor whose stored
/// position belongs to another checkpoint value forgets it and resumes from the checkpoint.
pub fn adopt_checkpoints() {
    for (id, cp) in run::current_checkpoints() {
        pgrx::Spi::run_with_args(
            "UPDATE audius_indexer.challenge_processor_state s \
                SET ue_block = NULL, ue_id = NULL, ue_checkpoint = $2 \
              WHERE s.challenge_id OPERATOR(pg_catalog.=) $1 AND s.ue_checkpoint IS DISTINCT FROM $2",
            &[id.into(), cp.into()],
        )
        .unwrap_or_else(|e| crate::errors::spi_error(e));
    }
}
