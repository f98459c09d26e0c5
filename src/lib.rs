//! audius_indexer: the hot paths of an Ethereum/Audius indexer inside PostgreSQL.
use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

pub mod eth;
mod triggers;
