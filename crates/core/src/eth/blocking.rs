//! Running blocking network I/O without making the backend deaf to cancel.
//!
//! A PostgreSQL backend must keep servicing interrupts (`pg_cancel_backend`, `statement_timeout`,
//! SIGTERM for a worker) while it waits on the network. The blocking call therefore runs on a helper
//! thread and the calling thread polls: it waits for the answer in short slices and calls `poll`
//! between them, which is where the glue runs `CHECK_FOR_INTERRUPTS()`. When `poll` gives up, the
//! helper thread is abandoned: it touches nothing of PostgreSQL's, ends on its own timeout, and its
//! late answer is dropped.
//!
//! The helper thread is created with every signal blocked, so PostgreSQL's signal handlers keep
//! running on the backend's own thread only.

use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The request was abandoned because the session was cancelled / is shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted;

/// How often the waiting thread checks for interrupts.
pub const POLL_SLICE: Duration = Duration::from_millis(20);

/// Runs `f` on a helper thread; calls `poll` every `POLL_SLICE` until the answer arrives.
pub fn run_interruptible<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
    poll: &mut dyn FnMut() -> Result<(), Interrupted>,
) -> Result<T, Interrupted> {
    let (tx, rx) = mpsc::sync_channel(1);
    spawn_with_signals_blocked(move || {
        let _ = tx.send(f());
    });
    loop {
        match rx.recv_timeout(POLL_SLICE) {
            Ok(v) => return Ok(v),
            Err(mpsc::RecvTimeoutError::Timeout) => poll()?,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // The helper panicked (it cannot otherwise drop the sender without sending).
                panic!("RPC helper thread died without an answer");
            }
        }
    }
}

/// Sleeps for `d`, calling `poll` every `POLL_SLICE`.
pub fn sleep_interruptible(
    d: Duration,
    poll: &mut dyn FnMut() -> Result<(), Interrupted>,
) -> Result<(), Interrupted> {
    let end = Instant::now() + d;
    loop {
        poll()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(POLL_SLICE));
    }
}

/// Runs `f` with every signal blocked on the current thread, then restores the mask: threads `f`
/// starts inherit the all-blocked mask, so PostgreSQL's signal handlers never run on them.
pub(crate) fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: plain libc signal-mask calls on the current thread; the old mask is restored before
    // returning.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let r = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        r
    }
}

pub(crate) fn spawn_with_signals_blocked(f: impl FnOnce() + Send + 'static) {
    with_signals_blocked(|| {
        std::thread::Builder::new()
            .name("audius_indexer rpc".into())
            .spawn(f)
    })
    .expect("cannot start the RPC helper thread");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value() {
        let mut polls = 0;
        let v = run_interruptible(|| 7, &mut || {
            polls += 1;
            Ok(())
        });
        assert_eq!(v, Ok(7));
    }

    #[test]
    fn poll_can_abandon_a_hung_call() {
        let start = Instant::now();
        let mut polls = 0;
        let r = run_interruptible(|| std::thread::sleep(Duration::from_secs(5)), &mut || {
            polls += 1;
            if polls >= 3 {
                Err(Interrupted)
            } else {
                Ok(())
            }
        });
        assert_eq!(r, Err(Interrupted));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn helper_thread_has_signals_blocked() {
        let blocked = run_interruptible(
            || unsafe {
                let mut cur: libc::sigset_t = std::mem::zeroed();
                libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
                libc::sigismember(&cur, libc::SIGINT) == 1
                    && libc::sigismember(&cur, libc::SIGALRM) == 1
            },
            &mut || Ok(()),
        );
        assert_eq!(blocked, Ok(true));
        // and the caller's mask is unchanged
        unsafe {
            let mut cur: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
            assert_eq!(libc::sigismember(&cur, libc::SIGALRM), 0);
        }
    }

    #[test]
    fn sleep_is_interruptible() {
        let start = Instant::now();
        let r = sleep_interruptible(Duration::from_secs(5), &mut || {
            if start.elapsed() > Duration::from_millis(50) {
                Err(Interrupted)
            } else {
                Ok(())
            }
        });
        assert_eq!(r, Err(Interrupted));
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
