//! Pure Ethereum logic: no pgrx types here, unit-tested with plain `#[test]` and proptest.
pub mod abi;
pub mod address;
pub mod balances;
pub mod blocking;
pub mod budget;
pub mod events;
pub(crate) mod h2c;
pub mod logs;
pub mod pipeline;
pub mod rpc;
pub mod untrusted;
