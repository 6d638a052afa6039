//! In-process counters: lock-free atomics, one set per key and limit scope, kept by key name
//! across reloads.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use super::period::budget_period;
use crate::config::BudgetPeriod;

/// Bits of a packed window word that hold the count; the rest hold the window number.
const COUNT_BITS: u32 = 40;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// A count within one numbered window, packed in one word so that reading the window and
/// changing its count is one compare-and-swap.
#[derive(Debug, Default)]
pub struct Window(AtomicU64);

fn unpack(word: u64) -> (u64, u64) {
    (word >> COUNT_BITS, word & COUNT_MASK)
}

fn pack(window: u64, count: u64) -> u64 {
    ((window & ((1 << (64 - COUNT_BITS)) - 1)) << COUNT_BITS) | count.min(COUNT_MASK)
}

impl Window {
    fn same(window: u64, stored: u64) -> bool {
        stored == window & ((1 << (64 - COUNT_BITS)) - 1)
    }

    /// The count in `window` (0 once the window has passed).
    pub fn current(&self, window: u64) -> u64 {
        let (w, c) = unpack(self.0.load(Ordering::Acquire));
        if Self::same(window, w) {
            c
        } else {
            0
        }
    }

    /// Adds `amount` unless that would pass `limit`: the new count, or the count that stood in
    /// the way.
    pub fn try_add(&self, window: u64, amount: u64, limit: Option<u64>) -> Result<u64, u64> {
        let mut word = self.0.load(Ordering::Acquire);
        loop {
            let (w, c) = unpack(word);
            let count = if Self::same(window, w) { c } else { 0 };
            if limit.is_some_and(|l| count + amount > l) {
                return Err(count);
            }
            match self.0.compare_exchange_weak(
                word,
                pack(window, count + amount),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(count + amount),
                Err(now) => word = now,
            }
        }
    }

    /// Corrects the count of `window` by `delta` (never below 0); nothing once it has passed.
    pub fn adjust(&self, window: u64, delta: i64) {
        let mut word = self.0.load(Ordering::Acquire);
        loop {
            let (w, c) = unpack(word);
            if !Self::same(window, w) {
                return;
            }
            let count = c.saturating_add_signed(delta);
            match self.0.compare_exchange_weak(
                word,
                pack(window, count),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(now) => word = now,
            }
        }
    }
}

/// The counters of one limit scope (a key, or some of its models).
#[derive(Debug, Default)]
pub struct ScopeCounters {
    pub requests: Window,
    pub tokens: Window,
    pub in_flight: AtomicU64,
}

impl ScopeCounters {
    /// Takes a concurrency slot unless `limit` are taken: the new count, or the count.
    pub fn acquire(&self, limit: Option<u64>) -> Result<u64, u64> {
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        if limit.is_some_and(|l| now > l) {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(now - 1);
        }
        Ok(now)
    }

    pub fn release(&self) {
        // Never below zero, even if a release were doubled.
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

/// Spending of one key in its current budget period, in nano-USD.
///
/// `spent` is what admission compares with the budget. With a snapshot file, it also holds what
/// other processes on the same file added (an upgrade's old process draining next to the new
/// one); `unflushed` is this process's own part not yet merged into the file, so that every
/// nano-dollar reaches the file exactly once.
#[derive(Debug, Default)]
pub struct BudgetCounter {
    period: AtomicU64,
    spent: AtomicU64,
    unflushed: AtomicU64,
    /// The budget period kind of the key's config ([`PeriodKind`] as a number; 0: not
    /// configured in this process), so a snapshot can name the period.
    kind: AtomicU8,
}

/// Which calendar a counter's period number counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodKind {
    /// A key with limits but no budget: its spending is shown, never reset.
    NoBudget,
    Budget(BudgetPeriod),
}

impl PeriodKind {
    fn code(self) -> u8 {
        match self {
            PeriodKind::NoBudget => 1,
            PeriodKind::Budget(BudgetPeriod::Daily) => 2,
            PeriodKind::Budget(BudgetPeriod::Weekly) => 3,
            PeriodKind::Budget(BudgetPeriod::Monthly) => 4,
            PeriodKind::Budget(BudgetPeriod::Total) => 5,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => PeriodKind::NoBudget,
            2 => PeriodKind::Budget(BudgetPeriod::Daily),
            3 => PeriodKind::Budget(BudgetPeriod::Weekly),
            4 => PeriodKind::Budget(BudgetPeriod::Monthly),
            5 => PeriodKind::Budget(BudgetPeriod::Total),
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PeriodKind::NoBudget => "none",
            PeriodKind::Budget(p) => p.as_str(),
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "none" => PeriodKind::NoBudget,
            "daily" => PeriodKind::Budget(BudgetPeriod::Daily),
            "weekly" => PeriodKind::Budget(BudgetPeriod::Weekly),
            "monthly" => PeriodKind::Budget(BudgetPeriod::Monthly),
            "total" => PeriodKind::Budget(BudgetPeriod::Total),
            _ => return None,
        })
    }

    /// The number of the period containing `now` (as admission numbers it).
    pub fn period_at(self, now: u64) -> u64 {
        match self {
            PeriodKind::NoBudget => 0,
            PeriodKind::Budget(p) => budget_period(p, now).0,
        }
    }
}

impl BudgetCounter {
    pub fn spent(&self, period: u64) -> u64 {
        if self.period.load(Ordering::Acquire) == period {
            self.spent.load(Ordering::Acquire)
        } else {
            0
        }
    }

    /// Counts this process's spending.
    pub fn add(&self, period: u64, nano_usd: u64) {
        self.enter(period);
        self.spent.fetch_add(nano_usd, Ordering::AcqRel);
        self.unflushed.fetch_add(nano_usd, Ordering::AcqRel);
    }

    /// Counts spending that is already in the snapshot file (loaded, or merged by another
    /// process): it limits admission but is not written again.
    pub fn add_known(&self, period: u64, nano_usd: u64) {
        self.enter(period);
        self.spent.fetch_add(nano_usd, Ordering::AcqRel);
    }

    fn enter(&self, period: u64) {
        let old = self.period.load(Ordering::Acquire);
        if old != period
            && self
                .period
                .compare_exchange(old, period, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // A new period starts from nothing; spending recorded meanwhile by another thread
            // in the old period is lost with it, which is what a reset means.
            self.spent.store(0, Ordering::Release);
            self.unflushed.store(0, Ordering::Release);
        }
    }

    /// This process's spending not yet in the file, and the period it belongs to. A period
    /// change racing with this attributes the amount to the new period.
    pub fn take_unflushed(&self) -> (u64, u64) {
        let amount = self.unflushed.swap(0, Ordering::AcqRel);
        (self.period.load(Ordering::Acquire), amount)
    }

    /// Gives back what [`Self::take_unflushed`] took when the file could not be written.
    pub fn restore_unflushed(&self, period: u64, nano_usd: u64) {
        if self.period.load(Ordering::Acquire) == period {
            self.unflushed.fetch_add(nano_usd, Ordering::AcqRel);
        }
    }

    pub fn set_kind(&self, kind: PeriodKind) {
        self.kind.store(kind.code(), Ordering::Release);
    }

    /// The kind set by the config, else `fallback` (a name only the snapshot knows) is taken.
    pub fn kind_or(&self, fallback: Option<PeriodKind>) -> Option<PeriodKind> {
        match PeriodKind::from_code(self.kind.load(Ordering::Acquire)) {
            Some(kind) => Some(kind),
            None => {
                let kind = fallback?;
                let _ =
                    self.kind
                        .compare_exchange(0, kind.code(), Ordering::AcqRel, Ordering::Acquire);
                PeriodKind::from_code(self.kind.load(Ordering::Acquire))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_within_their_minute_and_respect_limits() {
        let w = Window::default();
        assert_eq!(w.try_add(7, 3, Some(5)), Ok(3));
        assert_eq!(w.try_add(7, 3, Some(5)), Err(3));
        assert_eq!(w.try_add(7, 2, Some(5)), Ok(5));
        w.adjust(7, -4);
        assert_eq!(w.current(7), 1);
        // A new minute starts from zero; corrections to a passed window are dropped.
        assert_eq!(w.current(8), 0);
        assert_eq!(w.try_add(8, 5, Some(5)), Ok(5));
        w.adjust(7, 100);
        assert_eq!(w.current(8), 5);
        w.adjust(8, -100);
        assert_eq!(w.current(8), 0);
    }

    #[test]
    fn concurrency_slots_and_budgets() {
        let s = ScopeCounters::default();
        assert_eq!(s.acquire(Some(2)), Ok(1));
        assert_eq!(s.acquire(Some(2)), Ok(2));
        assert_eq!(s.acquire(Some(2)), Err(2));
        s.release();
        s.release();
        s.release();
        assert_eq!(s.in_flight.load(Ordering::Acquire), 0);

        let b = BudgetCounter::default();
        b.add(3, 500);
        b.add(3, 250);
        assert_eq!(b.spent(3), 750);
        assert_eq!(b.spent(4), 0);
        b.add(4, 1);
        assert_eq!(b.spent(4), 1);
        // Known spending limits admission but is not this process's to write.
        b.add_known(4, 10);
        assert_eq!(b.spent(4), 11);
        assert_eq!(b.take_unflushed(), (4, 1));
        assert_eq!(b.take_unflushed(), (4, 0));
        b.restore_unflushed(4, 1);
        b.add(5, 2);
        assert_eq!(
            b.take_unflushed(),
            (5, 2),
            "a new period drops the old one's rest"
        );
    }

    #[test]
    fn many_threads_never_pass_the_limit() {
        let w = std::sync::Arc::new(Window::default());
        let admitted = std::sync::Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (w, admitted) = (w.clone(), admitted.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        if w.try_add(1, 1, Some(1500)).is_ok() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(admitted.load(Ordering::Relaxed), 1500);
        assert_eq!(w.current(1), 1500);
    }
}
