//! Pure Ethereum logic: no pgrx types here, unit-tested with plain `#[test]` and proptest.
pub mod abi;
pub mod address;
pub mod balances;
pub mod blocking;
pub mod budget;
pub mod endpoint;
pub mod error;
pub mod events;
pub mod jsonrpc;
pub mod logs;
pub mod pipeline;
pub mod retry;
pub mod transport;
pub mod untrusted;
