//! The background sweep worker.
use pgrx::bgworkers::BackgroundWorker;

/// True when the worker has been asked to stop (SIGTERM).
pub fn should_stop() -> bool {
    BackgroundWorker::sigterm_received()
}
