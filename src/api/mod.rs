//! SQL-facing functions (`#[pg_extern]`), kept thin: parsing arguments, calling the glue, shaping rows.
pub mod balances;
pub mod challenges;
pub mod doctor;
pub mod follow;
pub mod paths;
pub mod status;
pub mod sweep;
