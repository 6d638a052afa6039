//! When a model's request asks a second target before the first has answered
//! (`models.NAME.hedge`), and how often it may.
//!
//! A hedge doubles the cost of the request it races for, so each model has a budget of hedges
//! per minute: past it, requests wait on their first target as without hedging.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Target;
use crate::config::{HedgeDelay, HedgePolicy};

#[derive(Debug)]
pub struct Hedge {
    pub policy: HedgePolicy,
    /// The minute (since the Unix epoch) `used` counts for.
    minute: AtomicU64,
    used: AtomicU32,
}

impl Hedge {
    pub fn new(policy: HedgePolicy) -> Self {
        Hedge {
            policy,
            minute: AtomicU64::new(0),
            used: AtomicU32::new(0),
        }
    }

    /// How long to wait for `first`'s first byte before asking the next target.
    pub fn delay(&self, first: &Target) -> Duration {
        match self.policy.delay {
            HedgeDelay::Fixed(delay) => delay,
            HedgeDelay::Percentile {
                percentile,
                fallback,
            } => first
                .health
                .latency_percentile(percentile)
                .unwrap_or(fallback),
        }
    }

    /// Takes one hedge from this minute's budget; false when it is spent.
    pub fn try_take(&self) -> bool {
        let minute = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() / 60)
            .unwrap_or(0);
        let seen = self.minute.load(Ordering::Acquire);
        if seen != minute
            && self
                .minute
                .compare_exchange(seen, minute, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // The first request of a new minute starts its count; a racing request may count
            // in the old minute's, which errs by one hedge at most.
            self.used.store(0, Ordering::Release);
        }
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.policy.max_per_minute).then_some(used + 1)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_caps_hedges_per_minute() {
        let hedge = Hedge::new(HedgePolicy {
            delay: HedgeDelay::Fixed(Duration::from_millis(10)),
            max_per_minute: 3,
        });
        let taken = (0..10).filter(|_| hedge.try_take()).count();
        assert_eq!(taken, 3);
        // A new minute: a new budget.
        hedge.minute.store(0, Ordering::Release);
        assert!(hedge.try_take());
    }
}
