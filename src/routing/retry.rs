//! The retry policy's decisions for one request, apart from any I/O: which target to try next,
//! when to pause between rounds and for how long, and when to give up. The proxy runs the
//! attempts and reports each failure's [`Fault`]; [`Retry`] answers with the next [`Step`].
//!
//! Semantics: targets are tried in plan order; a retryable failure (per `retry.on`) moves on to
//! the next target at once. When every target of a round failed, the next round starts after a
//! pause of `backoff` (doubling each round, capped, with ±25 % jitter), up to `attempts` rounds.
//! A 429 takes its target out of the rest of the request. A request's own fault (400-class) and
//! a failure the policy does not retry end the request at once. A round starts only if some
//! target may be tried after the pause (not excluded, breaker not open).

use std::time::Duration;

use crate::config::RetryPolicy;

/// The longest pause between retry rounds.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Whose fault a failed attempt was, which decides what happens next.
#[derive(Debug, PartialEq)]
pub enum Fault {
    /// The provider failed (5xx, timeout, connect error, reset, broken answer, its key or model
    /// refused). Counts against the target's breaker; another attempt may follow when the retry
    /// policy lists the outcome.
    Provider { retryable: bool },
    /// The provider rate-limited us (429). Its breaker opens for the Retry-After time, and this
    /// request does not try it again; another target may answer when the policy lists 429.
    RateLimited {
        retry_after: Option<Duration>,
        retryable: bool,
    },
    /// The request itself is wrong (400-class): no other target would answer differently.
    Request,
}

/// What the proxy asks of a target before the retry loop picks it.
pub trait Gate {
    /// Takes the target's breaker permit (false while it is open, or half-open and busy).
    fn try_acquire(&self, target: usize) -> bool;
    /// Whether the target's breaker is open, so a pause is not worth it for this target.
    fn is_open(&self, target: usize) -> bool;
}

/// What to do next.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Send an attempt to the target at this index of the plan.
    Try(usize),
    /// Wait this long, then ask again.
    Pause(Duration),
    /// Nothing more to try: answer with the last error (or "unavailable" if nothing was tried).
    GiveUp,
}

/// The retry state of one request.
pub struct Retry {
    rounds: u32,
    backoff: Duration,
    /// Targets a 429 took out of this request.
    excluded: Vec<bool>,
    round: u32,
    /// The next index to consider in this round.
    next: usize,
    /// A pause was announced for the round about to start.
    paused: bool,
    stopped: bool,
    /// Returns a number in [0, 1): the jitter of each pause.
    jitter: fn() -> f64,
}

impl Retry {
    pub fn new(targets: usize, policy: &RetryPolicy) -> Self {
        Self::with_jitter(targets, policy, fastrand::f64)
    }

    /// With a chosen jitter source (tests make it constant).
    pub fn with_jitter(targets: usize, policy: &RetryPolicy, jitter: fn() -> f64) -> Self {
        Retry {
            rounds: policy.attempts.max(1),
            backoff: policy.backoff,
            excluded: vec![false; targets],
            round: 0,
            next: 0,
            paused: false,
            stopped: false,
            jitter,
        }
    }

    /// The next step, given the targets' breakers.
    pub fn next(&mut self, gate: &impl Gate) -> Step {
        if self.stopped {
            return Step::GiveUp;
        }
        loop {
            while self.next < self.excluded.len() {
                let i = self.next;
                self.next += 1;
                if !self.excluded[i] && gate.try_acquire(i) {
                    return Step::Try(i);
                }
            }
            // The round is over.
            if self.round + 1 >= self.rounds {
                self.stopped = true;
                return Step::GiveUp;
            }
            // Waiting only makes sense if some target may be tried after the pause.
            let any_left = (0..self.excluded.len()).any(|i| !self.excluded[i] && !gate.is_open(i));
            if !any_left {
                self.stopped = true;
                return Step::GiveUp;
            }
            if !self.paused {
                self.paused = true;
                return Step::Pause(self.pause(self.round + 1));
            }
            self.paused = false;
            self.round += 1;
            self.next = 0;
        }
    }

    /// The next target of the current round, without starting a new one (no pause): a hedge
    /// asks for a second target while the first is still pending.
    pub fn next_in_round(&mut self, gate: &impl Gate) -> Option<usize> {
        if self.stopped {
            return None;
        }
        while self.next < self.excluded.len() {
            let i = self.next;
            self.next += 1;
            if !self.excluded[i] && gate.try_acquire(i) {
                return Some(i);
            }
        }
        None
    }

    /// The attempt at `target` failed with `fault`: whether the request may go on.
    pub fn failed(&mut self, target: usize, fault: &Fault) -> bool {
        let retryable = match fault {
            Fault::Request => false,
            Fault::RateLimited { retryable, .. } => {
                self.excluded[target] = true;
                *retryable
            }
            Fault::Provider { retryable } => *retryable,
        };
        if !retryable {
            self.stopped = true;
        }
        retryable
    }

    /// The pause before retry round `round` (1-based): doubling, capped, with ±25% jitter so
    /// that many clients failing together do not retry together.
    fn pause(&self, round: u32) -> Duration {
        let exp = self
            .backoff
            .saturating_mul(1u32 << (round - 1).min(16))
            .min(MAX_BACKOFF);
        exp.mul_f64(0.75 + (self.jitter)() * 0.5)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::config::RetryOn;

    /// Breakers by target: `open[i]` refuses permits.
    struct Breakers {
        open: RefCell<Vec<bool>>,
    }

    impl Breakers {
        fn closed(n: usize) -> Self {
            Breakers {
                open: RefCell::new(vec![false; n]),
            }
        }
    }

    impl Gate for Breakers {
        fn try_acquire(&self, target: usize) -> bool {
            !self.open.borrow()[target]
        }
        fn is_open(&self, target: usize) -> bool {
            self.open.borrow()[target]
        }
    }

    fn policy(attempts: u32, backoff_ms: u64) -> RetryPolicy {
        RetryPolicy {
            attempts,
            backoff: Duration::from_millis(backoff_ms),
            on: vec![RetryOn::ServerErrors, RetryOn::Status(429)],
        }
    }

    fn middle() -> f64 {
        0.5
    }

    const PROVIDER: Fault = Fault::Provider { retryable: true };

    #[test]
    fn tries_in_order_then_pauses_doubling_between_rounds() {
        let gate = Breakers::closed(2);
        let mut retry = Retry::with_jitter(2, &policy(3, 200), middle);
        let mut steps = Vec::new();
        loop {
            let step = retry.next(&gate);
            if let Step::Try(i) = step {
                assert!(retry.failed(i, &PROVIDER));
            }
            let done = step == Step::GiveUp;
            steps.push(step);
            if done {
                break;
            }
        }
        assert_eq!(
            steps,
            vec![
                Step::Try(0),
                Step::Try(1),
                Step::Pause(Duration::from_millis(200)),
                Step::Try(0),
                Step::Try(1),
                Step::Pause(Duration::from_millis(400)),
                Step::Try(0),
                Step::Try(1),
                Step::GiveUp,
            ]
        );
    }

    #[test]
    fn a_hedge_takes_the_next_target_of_the_round_and_the_round_goes_on_after_it() {
        let gate = Breakers::closed(3);
        gate.open.borrow_mut()[1] = true;
        let mut retry = Retry::with_jitter(3, &policy(2, 0), middle);
        assert_eq!(retry.next(&gate), Step::Try(0));
        // Target 1's breaker is open: the hedge goes to 2.
        assert_eq!(retry.next_in_round(&gate), Some(2));
        assert_eq!(retry.next_in_round(&gate), None, "no new round for a hedge");
        assert!(retry.failed(0, &PROVIDER));
        assert!(retry.failed(2, &PROVIDER));
        // Both failed: the next round starts after its pause, as without hedging.
        assert_eq!(retry.next(&gate), Step::Pause(Duration::ZERO));
        assert_eq!(retry.next(&gate), Step::Try(0));
    }

    #[test]
    fn pauses_are_capped_and_jittered_by_a_quarter() {
        let retry = Retry::with_jitter(1, &policy(30, 4000), || 0.0);
        assert_eq!(retry.pause(1), Duration::from_millis(3000));
        assert_eq!(retry.pause(20), MAX_BACKOFF.mul_f64(0.75));
        let retry = Retry::with_jitter(1, &policy(30, 4000), || 0.999_999);
        assert!(retry.pause(1) < Duration::from_millis(5000));
        assert!(retry.pause(1) > Duration::from_millis(4990));
    }

    #[test]
    fn a_rate_limited_target_is_not_tried_again_in_this_request() {
        let gate = Breakers::closed(2);
        let mut retry = Retry::with_jitter(2, &policy(2, 0), middle);
        assert_eq!(retry.next(&gate), Step::Try(0));
        let limited = Fault::RateLimited {
            retry_after: Some(Duration::from_secs(5)),
            retryable: true,
        };
        assert!(retry.failed(0, &limited));
        assert_eq!(retry.next(&gate), Step::Try(1));
        assert!(retry.failed(1, &PROVIDER));
        assert_eq!(retry.next(&gate), Step::Pause(Duration::ZERO));
        assert_eq!(retry.next(&gate), Step::Try(1));
        assert!(retry.failed(1, &PROVIDER));
        assert_eq!(retry.next(&gate), Step::GiveUp);
    }

    #[test]
    fn the_requests_own_fault_and_unretried_failures_end_it_at_once() {
        let gate = Breakers::closed(3);
        for fault in [
            Fault::Request,
            Fault::Provider { retryable: false },
            Fault::RateLimited {
                retry_after: None,
                retryable: false,
            },
        ] {
            let mut retry = Retry::with_jitter(3, &policy(3, 100), middle);
            assert_eq!(retry.next(&gate), Step::Try(0));
            assert!(!retry.failed(0, &fault), "{fault:?}");
            assert_eq!(retry.next(&gate), Step::GiveUp, "{fault:?}");
        }
    }

    #[test]
    fn open_breakers_are_skipped_and_never_waited_for() {
        let gate = Breakers::closed(3);
        gate.open.borrow_mut()[0] = true;
        let mut retry = Retry::with_jitter(3, &policy(3, 100), middle);
        assert_eq!(retry.next(&gate), Step::Try(1));
        assert!(retry.failed(1, &PROVIDER));
        // Its breaker opens meanwhile: only target 2 is left, then a round for it.
        gate.open.borrow_mut()[1] = true;
        assert_eq!(retry.next(&gate), Step::Try(2));
        assert!(retry.failed(2, &PROVIDER));
        gate.open.borrow_mut()[2] = true;
        // Every breaker is open: no pause, nothing to wait for.
        assert_eq!(retry.next(&gate), Step::GiveUp);

        let everything_open = Breakers::closed(2);
        everything_open.open.borrow_mut().fill(true);
        let mut retry = Retry::with_jitter(2, &policy(3, 100), middle);
        assert_eq!(retry.next(&everything_open), Step::GiveUp);
    }

    #[test]
    fn one_round_means_no_pause() {
        let gate = Breakers::closed(1);
        let mut retry = Retry::with_jitter(1, &policy(1, 100), middle);
        assert_eq!(retry.next(&gate), Step::Try(0));
        assert!(retry.failed(0, &PROVIDER));
        assert_eq!(retry.next(&gate), Step::GiveUp);
    }
}
