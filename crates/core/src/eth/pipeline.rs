//! Pipelined requests: up to `concurrency` jobs in flight on helper threads, answers taken in job
//! order by the backend's thread.
//!
//! The backend's thread never blocks on the network: it waits on a condition variable that the
//! helper signals the moment an answer is stored (no polling quantum on the latency path), and
//! wakes every `POLL_SLICE` meanwhile to service interrupts. Dropping the pipeline (an ERROR, a
//! cancel) tells the helpers to stop: they take no new job, abandon their back-off waits, and an
//! answer still on the wire is dropped when it arrives.
//!
//! How many helpers may work at once is a shared [`Limiter`]: a rate-limited answer halves it
//! (a provider that says "slow down" sees fewer requests, not more) and a run of good answers
//! grows it back by one, up to the configured concurrency.
//!
//! A job that panics on its helper thread is caught there (`catch_unwind`): its answer is the
//! panic's message, the pipeline stops, and the waiting thread gets [`TakeError::Panicked`] at
//! once (also while it waits for an earlier job), so a bug in a job can never leave the backend
//! waiting forever for an answer that will not come.

use crate::eth::blocking::Interrupted;
use crate::eth::blocking::{spawn_with_signals_blocked, POLL_SLICE};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Good answers in a row, per unit of the current limit, before the limit grows by one.
const GROW_AFTER: usize = 16;

/// Additive-increase / multiplicative-decrease limit on requests in flight.
///
/// The limit, its maximum and the run of good answers change together under one lock: a good
/// answer is weighed against the limit as it is at that moment, so a streak counted before a
/// rate limit can never grow the limit that rate limit just halved (with separate atomics, a
/// helper preempted between counting its answer and reading the limit could do exactly that).
#[derive(Debug)]
pub struct Limiter(Mutex<LimitState>);

#[derive(Debug)]
struct LimitState {
    max: usize,
    allowed: usize,
    streak: usize,
}

impl Limiter {
    pub fn new(max: usize) -> Limiter {
        let max = max.max(1);
        Limiter(Mutex::new(LimitState {
            max,
            allowed: max,
            streak: 0,
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LimitState> {
        // the state is three integers, consistent after every statement: a panic elsewhere while
        // the lock was held leaves nothing half-done, so a poisoned lock is still good to use
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the configured maximum. A limit at its old maximum follows the new one; a throttled
    /// limit stays where it is (clamped), and grows back on its own.
    pub fn set_max(&self, max: usize) {
        let max = max.max(1);
        let mut s = self.state();
        if s.max != max {
            s.allowed = if s.allowed >= s.max {
                max
            } else {
                s.allowed.min(max)
            };
            s.max = max;
        }
    }

    /// Requests that may be in flight now.
    pub fn allowed(&self) -> usize {
        self.state().allowed.max(1)
    }

    /// A rate-limit answer: halve (never below 1), and start the run of good answers again.
    pub fn rate_limited(&self) {
        let mut s = self.state();
        s.streak = 0;
        s.allowed = (s.allowed / 2).max(1);
    }

    /// A good answer: after `GROW_AFTER × limit` in a row, grow by one up to the maximum.
    pub fn succeeded(&self) {
        let mut s = self.state();
        s.streak += 1;
        if s.allowed < s.max && s.streak >= GROW_AFTER * s.allowed {
            s.streak = 0;
            s.allowed += 1;
        }
    }
}

/// The stop flag the helpers' back-off waits watch.
#[derive(Clone, Debug, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Sleeps `d` in short slices; Err as soon as the pipeline is stopped.
    pub fn sleep(&self, d: Duration) -> Result<(), Interrupted> {
        let end = Instant::now() + d;
        loop {
            if self.stopped() {
                return Err(Interrupted);
            }
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep((end - now).min(Duration::from_millis(5)));
        }
    }
}

/// Job `i` of a pipeline, run on a helper thread; its waits should watch the flag.
pub type Job<T> = Arc<dyn Fn(usize, &StopFlag) -> T + Send + Sync>;

/// Why `take` returned no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeError {
    /// `poll` gave up (cancel, shutdown); the pipeline is stopped.
    Interrupted,
    /// Job `job` panicked on its helper thread with `message`; the pipeline is stopped.
    Panicked { job: usize, message: String },
}

/// The answers, and the first job that panicked.
struct Slots<T> {
    answers: Vec<Option<Result<T, String>>>,
    panicked: Option<(usize, String)>,
}

/// The message of a caught panic (the payload when it is a string).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

struct Shared<T> {
    answers: Mutex<Slots<T>>,
    arrived: Condvar,
    next: AtomicUsize,
    jobs: usize,
}

/// `jobs` jobs run by up to `workers` helper threads (fewer while the limiter says so).
pub struct Pipeline<T> {
    shared: Arc<Shared<T>>,
    stop: StopFlag,
}

impl<T: Send + 'static> Pipeline<T> {
    /// Starts the helpers. `job(i, stop)` runs job `i` on a helper thread; its waits should
    /// watch `stop`.
    pub fn start(jobs: usize, workers: usize, limiter: Arc<Limiter>, job: Job<T>) -> Pipeline<T> {
        let shared = Arc::new(Shared {
            answers: Mutex::new(Slots {
                answers: (0..jobs).map(|_| None).collect(),
                panicked: None,
            }),
            arrived: Condvar::new(),
            next: AtomicUsize::new(0),
            jobs,
        });
        let stop = StopFlag::default();
        for w in 0..workers.clamp(1, jobs.max(1)) {
            let (shared, stop, limiter, job) =
                (shared.clone(), stop.clone(), limiter.clone(), job.clone());
            spawn_with_signals_blocked(move || loop {
                if stop.stopped() || shared.next.load(Ordering::SeqCst) >= shared.jobs {
                    return;
                }
                if w >= limiter.allowed() {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
                let i = shared.next.fetch_add(1, Ordering::SeqCst);
                if i >= shared.jobs {
                    return;
                }
                let answer =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(i, &stop)))
                        .map_err(|p| panic_message(&*p));
                let failed = answer.is_err();
                let mut a = shared.answers.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(m) = &answer {
                    if a.panicked.is_none() {
                        a.panicked = Some((i, m.clone()));
                    }
                }
                a.answers[i] = Some(answer);
                shared.arrived.notify_all();
                drop(a);
                if failed {
                    // The read fails as a whole: the other helpers take no new job.
                    stop.stop();
                    return;
                }
            });
        }
        Pipeline { shared, stop }
    }

    /// Whether job `i`'s answer is already there.
    pub fn ready(&self, i: usize) -> bool {
        let a = self
            .shared
            .answers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        a.answers.get(i).is_some_and(Option::is_some)
    }

    /// Takes job `i`'s answer, waiting for it; `poll` runs every `POLL_SLICE` while waiting
    /// and may give up (the pipeline then stops). `TakeError::Panicked` as soon as job `i` or any
    /// other job has panicked (the pipeline then stops).
    pub fn take(
        &self,
        i: usize,
        poll: &mut dyn FnMut() -> Result<(), Interrupted>,
    ) -> Result<T, TakeError> {
        let mut a = self
            .shared
            .answers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        loop {
            match a.answers[i].take() {
                Some(Ok(v)) => return Ok(v),
                Some(Err(message)) => {
                    self.stop.stop();
                    return Err(TakeError::Panicked { job: i, message });
                }
                None => {}
            }
            if let Some((job, message)) = a.panicked.clone() {
                self.stop.stop();
                return Err(TakeError::Panicked { job, message });
            }
            let (g, _) = self
                .shared
                .arrived
                .wait_timeout(a, POLL_SLICE)
                .unwrap_or_else(|p| p.into_inner());
            a = g;
            if a.answers[i].is_none() && a.panicked.is_none() {
                drop(a);
                if poll().is_err() {
                    self.stop.stop();
                    return Err(TakeError::Interrupted);
                }
                a = self
                    .shared
                    .answers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
            }
        }
    }
}

impl<T> Drop for Pipeline<T> {
    fn drop(&mut self) {
        self.stop.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn answers_come_back_in_job_order_with_bounded_concurrency() {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (f, p) = (in_flight.clone(), peak.clone());
        let pipe = Pipeline::start(
            20,
            3,
            Arc::new(Limiter::new(3)),
            Arc::new(move |i, _: &StopFlag| {
                let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                // later jobs finish first
                std::thread::sleep(Duration::from_millis(((20 - i) % 4) as u64 * 3));
                f.fetch_sub(1, Ordering::SeqCst);
                i * 10
            }),
        );
        let got: Vec<usize> = (0..20)
            .map(|i| pipe.take(i, &mut || Ok(())).unwrap())
            .collect();
        assert_eq!(got, (0..20).map(|i| i * 10).collect::<Vec<_>>());
        let peak = peak.load(Ordering::SeqCst);
        assert!((2..=3).contains(&peak), "peak in flight {peak}");
    }

    #[test]
    fn an_answer_wakes_the_waiter_at_once() {
        let pipe = Pipeline::start(
            1,
            1,
            Arc::new(Limiter::new(1)),
            Arc::new(|_, _: &StopFlag| {
                std::thread::sleep(Duration::from_millis(3));
                Instant::now()
            }),
        );
        let sent = pipe.take(0, &mut || Ok(())).unwrap();
        // far below the 20 ms poll slice
        assert!(
            sent.elapsed() < Duration::from_millis(10),
            "{:?}",
            sent.elapsed()
        );
    }

    #[test]
    fn giving_up_stops_the_helpers() {
        let started = Arc::new(AtomicUsize::new(0));
        let s = started.clone();
        let pipe = Pipeline::start(
            100,
            2,
            Arc::new(Limiter::new(2)),
            Arc::new(move |_, stop: &StopFlag| {
                s.fetch_add(1, Ordering::SeqCst);
                stop.sleep(Duration::from_secs(5)).is_err()
            }),
        );
        let t = Instant::now();
        let mut polls = 0;
        let r = pipe.take(0, &mut || {
            polls += 1;
            if polls >= 2 {
                Err(Interrupted)
            } else {
                Ok(())
            }
        });
        assert_eq!(r, Err(TakeError::Interrupted));
        assert!(t.elapsed() < Duration::from_millis(200));
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            started.load(Ordering::SeqCst) <= 2,
            "no job taken after the stop"
        );
    }

    #[test]
    fn a_panicking_job_answers_with_an_error_at_once() {
        let pipe = Pipeline::start(
            3,
            2,
            Arc::new(Limiter::new(2)),
            Arc::new(|i, _: &StopFlag| {
                if i == 1 {
                    panic!("boom in chunk {i}");
                }
                i
            }),
        );
        let t = Instant::now();
        assert_eq!(pipe.take(0, &mut || Ok(())), Ok(0));
        // no poll gives up: the panic alone ends the wait
        let r = pipe.take(1, &mut || Ok(()));
        assert_eq!(
            r,
            Err(TakeError::Panicked {
                job: 1,
                message: "boom in chunk 1".into()
            })
        );
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }

    #[test]
    fn a_panic_ends_the_wait_for_an_earlier_slow_job_and_stops_the_helpers() {
        let started = Arc::new(AtomicUsize::new(0));
        let s = started.clone();
        let pipe = Pipeline::start(
            50,
            2,
            Arc::new(Limiter::new(2)),
            Arc::new(move |i, stop: &StopFlag| {
                s.fetch_add(1, Ordering::SeqCst);
                if i == 1 {
                    std::panic::panic_any(7u8); // a payload that is not a string
                }
                // job 0 takes 5 s whatever happens (were it to watch the stop flag, the panic's
                // stop could let it answer before the waiting thread runs, and the wait would end
                // with its answer instead: the race this test must not depend on)
                if i == 0 {
                    std::thread::sleep(Duration::from_secs(5));
                }
                let _ = stop;
                i
            }),
        );
        let t = Instant::now();
        let r = pipe.take(0, &mut || Ok(()));
        assert_eq!(
            r,
            Err(TakeError::Panicked {
                job: 1,
                message: "a panic without a message".into()
            })
        );
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        std::thread::sleep(Duration::from_millis(50));
        let n = started.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            started.load(Ordering::SeqCst),
            n,
            "no job taken after the panic"
        );
        assert!(n < 50, "{n} jobs started");
        // later takes report the same panic instead of waiting
        assert!(matches!(
            pipe.take(5, &mut || Ok(())),
            Err(TakeError::Panicked { job: 1, .. })
        ));
    }

    #[test]
    fn the_limiter_halves_on_rate_limits_and_grows_back_slowly() {
        let l = Limiter::new(8);
        assert_eq!(l.allowed(), 8);
        l.rate_limited();
        assert_eq!(l.allowed(), 4);
        l.rate_limited();
        l.rate_limited();
        l.rate_limited();
        assert_eq!(l.allowed(), 1);
        for _ in 0..GROW_AFTER - 1 {
            l.succeeded();
        }
        assert_eq!(l.allowed(), 1);
        l.succeeded();
        assert_eq!(l.allowed(), 2);
        for _ in 0..GROW_AFTER * 2 {
            l.succeeded();
        }
        assert_eq!(l.allowed(), 3);
        l.set_max(2);
        assert_eq!(l.allowed(), 2);
        l.set_max(6);
        assert_eq!(l.allowed(), 6, "an unthrottled limit follows its maximum");
        l.rate_limited();
        l.set_max(8);
        assert_eq!(l.allowed(), 3, "a throttled one grows back on its own");
        let fresh = Limiter::new(1);
        fresh.set_max(4);
        assert_eq!(fresh.allowed(), 4);
    }

    #[test]
    fn a_limited_pipeline_runs_fewer_helpers() {
        let limiter = Arc::new(Limiter::new(4));
        limiter.rate_limited();
        limiter.rate_limited(); // 1 allowed
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (f, p) = (in_flight.clone(), peak.clone());
        let pipe = Pipeline::start(
            12,
            4,
            limiter,
            Arc::new(move |i, _: &StopFlag| {
                let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
                f.fetch_sub(1, Ordering::SeqCst);
                i
            }),
        );
        for i in 0..12 {
            assert_eq!(pipe.take(i, &mut || Ok(())).unwrap(), i);
        }
        assert_eq!(peak.load(Ordering::SeqCst), 1);
    }
}
