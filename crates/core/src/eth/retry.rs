//! Retries and failover for one logical request: exponential backoff with full jitter, bounded by
//! a retry count and a time budget; ordered endpoints with cool-downs; `execute`, which takes its
//! clock and its (interruptible) sleep as arguments so it is tested without a network or real time.

use crate::eth::blocking::Interrupted;
use crate::eth::endpoint::Endpoint;
use crate::eth::error::{RpcError, RpcErrorKind};
use std::fmt;
use std::time::{Duration, Instant};

/// Exponential backoff with full jitter, bounded by a retry count and a total time budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff step.
    pub base: Duration,
    /// Largest single backoff (also caps `Retry-After`).
    pub cap: Duration,
    /// Total time for all attempts and waits of one logical request.
    pub budget: Duration,
}

impl RetryPolicy {
    /// Delay before retry number `retry` (1-based). `Retry-After` wins when given (capped);
    /// otherwise a uniformly jittered value in [step/2, step] with step = base·2^(retry-1) ≤ cap.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>, random: u64) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(self.cap);
        }
        let step = self
            .base
            .saturating_mul(1u32 << (retry.saturating_sub(1)).min(20))
            .min(self.cap);
        let half = step / 2;
        let span = step.saturating_sub(half).as_micros() as u64;
        half + Duration::from_micros(if span == 0 { 0 } else { random % (span + 1) })
    }
}

/// Per-endpoint health, for failover and for the SQL statistics view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointStats {
    pub requests: u64,
    pub failures: u64,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub last_latency: Option<Duration>,
    pub total_latency: Duration,
    pub cooldown_until: Option<Instant>,
}

/// Ordered endpoints with cool-downs: a failing endpoint is skipped until its cool-down ends.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub list: Vec<Endpoint>,
    pub stats: Vec<EndpointStats>,
    pub cooldown: Duration,
}

impl Endpoints {
    pub fn new(list: Vec<Endpoint>, cooldown: Duration) -> Endpoints {
        let stats = vec![EndpointStats::default(); list.len()];
        Endpoints {
            list,
            stats,
            cooldown,
        }
    }

    /// Keeps statistics for endpoints that stay when the configured list changes.
    pub fn reconfigure(&mut self, list: Vec<Endpoint>, cooldown: Duration) {
        if list != self.list {
            let stats = list
                .iter()
                .map(|e| {
                    self.list
                        .iter()
                        .position(|o| o == e)
                        .map(|i| self.stats[i].clone())
                        .unwrap_or_default()
                })
                .collect();
            self.list = list;
            self.stats = stats;
        }
        self.cooldown = cooldown;
    }

    /// First endpoint (in configured order) not cooling down; if all are, the one whose cool-down
    /// ends first — a request is never refused just because everything failed recently.
    pub fn pick(&self, now: Instant, skip: &[usize]) -> Option<usize> {
        let candidates = (0..self.list.len()).filter(|i| !skip.contains(i));
        let mut best: Option<(usize, Instant)> = None;
        for i in candidates {
            match self.stats[i].cooldown_until {
                Some(t) if t > now => {
                    if best.is_none_or(|(_, bt)| t < bt) {
                        best = Some((i, t));
                    }
                }
                _ => return Some(i),
            }
        }
        best.map(|(i, _)| i)
    }

    pub fn record(
        &mut self,
        i: usize,
        now: Instant,
        latency: Duration,
        outcome: Result<(), &RpcError>,
    ) {
        let s = &mut self.stats[i];
        s.requests += 1;
        s.last_latency = Some(latency);
        s.total_latency += latency;
        match outcome {
            Ok(()) => {
                s.consecutive_failures = 0;
                s.cooldown_until = None;
            }
            Err(e) => {
                s.failures += 1;
                s.last_error = Some(e.to_string());
                // Only endpoint trouble cools an endpoint down; a revert is the request's fault.
                if e.is_transient()
                    || matches!(
                        e.kind,
                        RpcErrorKind::HttpStatus { .. }
                            | RpcErrorKind::BadResponse(_)
                            | RpcErrorKind::Redirect { .. }
                    )
                {
                    s.consecutive_failures += 1;
                    let factor = 1u32 << (s.consecutive_failures - 1).min(6);
                    s.cooldown_until = Some(now + self.cooldown.saturating_mul(factor));
                }
            }
        }
    }
}

/// Outcome of `execute`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecError {
    Rpc(RpcError),
    Interrupted,
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::Rpc(e) => write!(f, "{e}"),
            ExecError::Interrupted => write!(f, "interrupted"),
        }
    }
}

impl From<Interrupted> for ExecError {
    fn from(_: Interrupted) -> Self {
        ExecError::Interrupted
    }
}

/// Sends one logical request with failover and retries.
///
/// `send(endpoint, attempt_timeout)` performs one attempt; `sleep(d)` waits interruptibly;
/// `now()` is the clock; `random()` feeds the jitter. A transient failure moves on to the next
/// healthy endpoint right away when there is one, and otherwise waits the backoff first.
/// Deterministic failures return at once. The budget bounds attempts and waits together; each
/// attempt's timeout is the smaller of `attempt_timeout` and what is left of the budget.
///
/// An unusable answer (`BadResponse`: not JSON-RPC, or a value that fails validation — the node is
/// not trusted) is a failure of the endpoint that sent it: recorded against it (cool-down), and the
/// next endpoint that has not sent this request an unusable answer is asked at once (no backoff:
/// it answered; within the retry count and budget). That endpoint is not asked again by this
/// request; when none is left, the error returns.
pub fn execute<T>(
    endpoints: &std::sync::Mutex<Endpoints>,
    policy: &RetryPolicy,
    attempt_timeout: Duration,
    mut send: impl FnMut(&Endpoint, Duration) -> Result<Result<T, RpcError>, Interrupted>,
    mut sleep: impl FnMut(Duration) -> Result<(), Interrupted>,
    now: impl Fn() -> Instant,
    mut random: impl FnMut() -> u64,
) -> Result<T, ExecError> {
    // The lock is held only to pick and to record, never across an attempt or a wait: requests
    // pipelined on other threads share the endpoints' health.
    let eps = || endpoints.lock().unwrap_or_else(|p| p.into_inner());
    let start = now();
    let deadline = start + policy.budget;
    let mut retries = 0u32;
    let mut tried_since_wait: Vec<usize> = Vec::new();
    // Endpoints that sent this request an unusable answer: not asked again by it.
    let mut refused: Vec<usize> = Vec::new();
    let skipping = |tried: &[usize], refused: &[usize]| -> Vec<usize> {
        tried.iter().chain(refused).copied().collect()
    };
    loop {
        let t = now();
        let (i, ep) = {
            let g = eps();
            let i = match g.pick(t, &skipping(&tried_since_wait, &refused)) {
                Some(i) => i,
                None => {
                    tried_since_wait.clear();
                    g.pick(t, &refused)
                        .or_else(|| g.pick(t, &[]))
                        .expect("at least one endpoint")
                }
            };
            (i, g.list[i].clone())
        };
        let left = deadline.saturating_duration_since(t);
        let timeout = attempt_timeout.min(left.max(Duration::from_millis(1)));
        let result = send(&ep, timeout)?;
        let elapsed = now().saturating_duration_since(t);
        match result {
            Ok(v) => {
                eps().record(i, now(), elapsed, Ok(()));
                return Ok(v);
            }
            Err(e) => {
                eps().record(i, now(), elapsed, Err(&e));
                if matches!(e.kind, RpcErrorKind::BadResponse(_)) {
                    refused.push(i);
                    let another = eps().pick(now(), &refused).is_some();
                    if !another || retries >= policy.max_retries || now() >= deadline {
                        return Err(ExecError::Rpc(e));
                    }
                    retries += 1;
                    continue;
                }
                if !e.is_transient() || retries >= policy.max_retries {
                    return Err(ExecError::Rpc(e));
                }
                retries += 1;
                tried_since_wait.push(i);
                let another_healthy = {
                    let g = eps();
                    g.pick(now(), &skipping(&tried_since_wait, &refused))
                        .is_some_and(|j| g.stats[j].cooldown_until.is_none_or(|c| c <= now()))
                };
                if !another_healthy {
                    let wait = policy.delay(retries, e.retry_after(), random());
                    if now() + wait >= deadline {
                        return Err(ExecError::Rpc(e));
                    }
                    sleep(wait)?;
                    tried_since_wait.clear();
                }
                if now() >= deadline {
                    return Err(ExecError::Rpc(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn ep(s: &str) -> Endpoint {
        Endpoint::parse(s).unwrap()
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let p = RetryPolicy {
            max_retries: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
            budget: Duration::from_secs(30),
        };
        for r in 1..=8u32 {
            let step = Duration::from_millis(100 * (1u64 << (r - 1))).min(Duration::from_secs(2));
            for rnd in [0u64, 1, 12345, u64::MAX] {
                let d = p.delay(r, None, rnd);
                assert!(
                    d >= step / 2 && d <= step,
                    "retry {r}: {d:?} not in [{:?}, {step:?}]",
                    step / 2
                );
            }
        }
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(1)), 7),
            Duration::from_secs(1)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(99)), 7),
            Duration::from_secs(2)
        );
    }

    /// A fake clock and scripted answers per endpoint.
    struct Sim {
        t: Cell<Instant>,
        sleeps: Cell<Duration>,
    }

    fn run(
        eps: &mut Endpoints,
        policy: RetryPolicy,
        script: &mut dyn FnMut(&Endpoint) -> Result<u32, RpcErrorKind>,
    ) -> (Result<u32, ExecError>, Duration, Vec<String>) {
        let sim = Sim {
            t: Cell::new(Instant::now()),
            sleeps: Cell::new(Duration::ZERO),
        };
        let mut log = Vec::new();
        let shared = std::sync::Mutex::new(eps.clone());
        let r = execute(
            &shared,
            &policy,
            Duration::from_secs(1),
            |e, _| {
                log.push(e.host().to_string());
                sim.t.set(sim.t.get() + Duration::from_millis(10));
                Ok(script(e).map_err(|k| RpcError::new(e, k)))
            },
            |d| {
                sim.t.set(sim.t.get() + d);
                sim.sleeps.set(sim.sleeps.get() + d);
                Ok(())
            },
            || sim.t.get(),
            || 42,
        );
        *eps = shared.into_inner().unwrap();
        (r, sim.sleeps.get(), log)
    }

    fn policy(max_retries: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(5),
            budget: Duration::from_secs(20),
        }
    }

    #[test]
    fn retry_after_is_honoured_then_success() {
        let mut eps = Endpoints::new(vec![ep("http://a:1")], Duration::from_secs(5));
        let mut n = 0;
        let (r, slept, log) = run(&mut eps, policy(3), &mut |_| {
            n += 1;
            if n == 1 {
                Err(RpcErrorKind::RateLimited {
                    detail: "429".into(),
                    retry_after: Some(Duration::from_secs(1)),
                })
            } else {
                Ok(7)
            }
        });
        assert_eq!(r, Ok(7));
        assert_eq!(slept, Duration::from_secs(1));
        assert_eq!(log.len(), 2);
        assert_eq!(eps.stats[0].requests, 2);
        assert_eq!(eps.stats[0].failures, 1);
    }

    #[test]
    fn deterministic_errors_are_not_retried() {
        let mut eps = Endpoints::new(
            vec![ep("http://a:1"), ep("http://b:1")],
            Duration::from_secs(5),
        );
        let (r, slept, log) = run(&mut eps, policy(5), &mut |_| {
            Err(RpcErrorKind::JsonRpc {
                code: 3,
                message: "execution reverted".into(),
            })
        });
        assert!(matches!(r, Err(ExecError::Rpc(_))));
        assert_eq!((slept, log.len()), (Duration::ZERO, 1));
    }

    #[test]
    fn failover_skips_a_refusing_endpoint_without_waiting() {
        let mut eps = Endpoints::new(
            vec![ep("http://a:1"), ep("http://b:1")],
            Duration::from_secs(5),
        );
        let (r, slept, log) = run(&mut eps, policy(3), &mut |e| {
            if e.host() == "a:1" {
                Err(RpcErrorKind::Connect("connection refused".into()))
            } else {
                Ok(1)
            }
        });
        assert_eq!(r, Ok(1));
        assert_eq!(slept, Duration::ZERO);
        assert_eq!(log, ["a:1", "b:1"]);
        // a is cooling down: the next request goes straight to b
        let (_, _, log2) = run(&mut eps, policy(3), &mut |_| Ok(2));
        assert_eq!(log2, ["b:1"]);
        assert_eq!(eps.stats[0].failures, 1);
        assert_eq!(eps.stats[1].requests, 2);
    }

    #[test]
    fn a_bad_answer_is_that_endpoints_failure_and_the_next_is_asked() {
        let bad =
            || RpcErrorKind::BadResponse("eth_blockNumber result 0x7fffffffffffffff …".into());
        let mut eps = Endpoints::new(
            vec![ep("http://a:1"), ep("http://b:1"), ep("http://c:1")],
            Duration::from_secs(5),
        );
        let (r, slept, log) = run(&mut eps, policy(3), &mut |e| {
            if e.host() == "a:1" {
                Err(bad())
            } else {
                Ok(9)
            }
        });
        assert_eq!(r, Ok(9));
        assert_eq!(
            (slept, log),
            (Duration::ZERO, vec!["a:1".to_string(), "b:1".into()])
        );
        assert_eq!(eps.stats[0].failures, 1);
        assert!(eps.stats[0].cooldown_until.is_some(), "a cools down");
        assert!(eps.stats[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("RPC host a:1"));
        assert_eq!(eps.stats[1].failures, 0);
        // a is cooling down: the next request goes to b first
        let (_, _, log) = run(&mut eps, policy(3), &mut |_| Ok(1));
        assert_eq!(log, ["b:1"]);

        // every endpoint answers nonsense: each asked once, no waiting, the error returns
        let mut eps = Endpoints::new(
            vec![ep("http://a:1"), ep("http://b:1")],
            Duration::from_secs(5),
        );
        let (r, slept, log) = run(&mut eps, policy(5), &mut |_| Err(bad()));
        assert!(
            matches!(r, Err(ExecError::Rpc(RpcError { ref host, kind: RpcErrorKind::BadResponse(_) })) if host == "b:1"),
            "{r:?}"
        );
        assert_eq!((slept, log.len()), (Duration::ZERO, 2));
        assert_eq!((eps.stats[0].failures, eps.stats[1].failures), (1, 1));

        // one endpoint: asked once
        let mut eps = Endpoints::new(vec![ep("http://a:1")], Duration::from_secs(5));
        let (r, _, log) = run(&mut eps, policy(5), &mut |_| Err(bad()));
        assert!(r.is_err());
        assert_eq!(log, ["a:1"]);

        // a bad answer, then a connection failure: the refusing endpoint is not asked again
        let mut eps = Endpoints::new(
            vec![ep("http://a:1"), ep("http://b:1")],
            Duration::from_millis(1),
        );
        let (r, _, log) = run(&mut eps, policy(4), &mut |e| {
            if e.host() == "a:1" {
                Err(bad())
            } else {
                Err(RpcErrorKind::Connect("refused".into()))
            }
        });
        assert!(matches!(
            r,
            Err(ExecError::Rpc(RpcError {
                kind: RpcErrorKind::Connect(_),
                ..
            }))
        ));
        assert_eq!(log[0], "a:1");
        assert!(log[1..].iter().all(|h| h == "b:1"), "{log:?}");

        // retries = 0: no second endpoint either
        let mut eps = Endpoints::new(
            vec![ep("http://a:1"), ep("http://b:1")],
            Duration::from_secs(5),
        );
        let (_, _, log) = run(&mut eps, policy(0), &mut |_| Err(bad()));
        assert_eq!(log, ["a:1"]);
    }

    #[test]
    fn retries_are_bounded_by_count_and_budget() {
        let mut eps = Endpoints::new(vec![ep("http://a:1")], Duration::from_millis(1));
        let (r, _, log) = run(&mut eps, policy(3), &mut |_| {
            Err(RpcErrorKind::HttpStatus {
                status: 503,
                retry_after: None,
            })
        });
        assert!(matches!(r, Err(ExecError::Rpc(_))));
        assert_eq!(log.len(), 4);
        let tight = RetryPolicy {
            budget: Duration::from_millis(500),
            ..policy(100)
        };
        let mut eps = Endpoints::new(vec![ep("http://a:1")], Duration::from_millis(1));
        let (r, slept, _) = run(&mut eps, tight, &mut |_| {
            Err(RpcErrorKind::Timeout(Duration::from_secs(1)))
        });
        assert!(matches!(r, Err(ExecError::Rpc(_))));
        assert!(slept <= Duration::from_millis(500));
    }

    #[test]
    fn all_cooling_down_still_tries_the_soonest() {
        let mut eps = Endpoints::new(
            vec![ep("http://a:1"), ep("http://b:1")],
            Duration::from_secs(60),
        );
        let now = Instant::now();
        eps.stats[0].cooldown_until = Some(now + Duration::from_secs(30));
        eps.stats[1].cooldown_until = Some(now + Duration::from_secs(10));
        assert_eq!(eps.pick(now, &[]), Some(1));
        eps.reconfigure(vec![ep("http://b:1")], Duration::from_secs(1));
        assert_eq!(eps.stats.len(), 1);
        assert!(eps.stats[0].cooldown_until.is_some());
    }
}
