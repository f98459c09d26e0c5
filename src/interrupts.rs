//! Interrupts and stop requests: what every wait on the network polls. A leaf module.
//!
//! A backend honours query cancel and `statement_timeout` (`CHECK_FOR_INTERRUPTS`); a background
//! worker also stops on SIGTERM (PostgreSQL's `ShutdownRequestPending`).

use crate::eth::blocking::Interrupted;
use pgrx::pg_sys;
use std::cell::Cell;

thread_local! {
    /// Set by the background workers: polling then also watches for SIGTERM.
    static IN_WORKER: Cell<bool> = const { Cell::new(false) };
}

/// Called once by a background worker at start.
pub fn mark_worker() {
    IN_WORKER.with(|w| w.set(true));
}

/// True once SIGTERM arrived (the flag PostgreSQL's own loops use; never reset).
pub fn should_stop() -> bool {
    unsafe { pg_sys::ShutdownRequestPending != 0 }
}

/// Interrupt polling while waiting on the network: query cancel, statement_timeout, and for a
/// worker SIGTERM / postmaster death.
pub fn poll() -> Result<(), Interrupted> {
    if IN_WORKER.with(Cell::get) && should_stop() {
        return Err(Interrupted);
    }
    pg_sys::check_for_interrupts!();
    Ok(())
}
