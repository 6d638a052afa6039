//! Time slices of limits and budgets: fixed one-minute windows for rates, UTC calendar periods
//! for budgets. Both are numbered from the Unix epoch, so every instance agrees on them.

use std::time::Duration;

pub use crate::calendar::now_secs;
use crate::calendar::{days_from_civil, year_month};
use crate::config::BudgetPeriod;

/// A fixed one-minute rate window: its number and the time left in it.
pub fn minute(now: u64) -> (u64, Duration) {
    (now / 60, Duration::from_secs(60 - now % 60))
}

/// The budget period containing `now`: its number, and the time until the next one starts
/// (`None` for `total`, which never ends).
pub fn budget_period(period: BudgetPeriod, now: u64) -> (u64, Option<Duration>) {
    let day = (now / 86_400) as i64;
    let until = |start_of_next_day: i64| {
        Some(Duration::from_secs(
            (start_of_next_day as u64 * 86_400).saturating_sub(now),
        ))
    };
    match period {
        BudgetPeriod::Daily => (day as u64, until(day + 1)),
        // 1970-01-01 was a Thursday: +3 makes weeks start on Monday.
        BudgetPeriod::Weekly => {
            let week = (day + 3).div_euclid(7);
            (week as u64, until(week * 7 - 3 + 7))
        }
        BudgetPeriod::Monthly => {
            let (year, month) = year_month(day);
            let next = if month == 12 {
                days_from_civil(year + 1, 1)
            } else {
                days_from_civil(year, month + 1)
            };
            ((year * 12 + i64::from(month) - 1) as u64, until(next))
        }
        BudgetPeriod::Total => (0, None),
    }
}

/// When budget period `number` (as [`budget_period`] numbers them) starts, in seconds since the
/// epoch; 0 for `total`.
pub fn period_start(period: BudgetPeriod, number: u64) -> u64 {
    let days = match period {
        BudgetPeriod::Daily => number as i64,
        BudgetPeriod::Weekly => number as i64 * 7 - 3,
        BudgetPeriod::Monthly => {
            let n = number as i64;
            days_from_civil(n / 12, (n % 12 + 1) as u32)
        }
        BudgetPeriod::Total => 0,
    };
    (days.max(0) as u64) * 86_400
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::unix_from_rfc3339;

    #[test]
    fn minutes_and_calendar_periods() {
        assert_eq!(minute(120), (2, Duration::from_secs(60)));
        assert_eq!(minute(179), (2, Duration::from_secs(1)));
        // 2026-12-03 06:00:00 UTC, a Thursday.
        let t = 1_796_277_600;
        assert_eq!(
            budget_period(BudgetPeriod::Daily, t).1,
            Some(Duration::from_secs(18 * 3600))
        );
        // Next Monday 2026-12-07 00:00 is 3 days and 18 hours away.
        assert_eq!(
            budget_period(BudgetPeriod::Weekly, t).1,
            Some(Duration::from_secs((3 * 24 + 18) * 3600))
        );
        // 2027-01-01 00:00 is 28 days and 18 hours away; the month is 2026*12 + 11.
        assert_eq!(
            budget_period(BudgetPeriod::Monthly, t),
            (
                2026 * 12 + 11,
                Some(Duration::from_secs((28 * 24 + 18) * 3600))
            )
        );
        assert_eq!(budget_period(BudgetPeriod::Total, t), (0, None));
        // Each period starts where the previous one's remaining time ends.
        for p in [
            BudgetPeriod::Daily,
            BudgetPeriod::Weekly,
            BudgetPeriod::Monthly,
        ] {
            let (n, left) = budget_period(p, t);
            let start = period_start(p, n);
            assert!(start <= t, "{p:?}");
            assert_eq!(budget_period(p, start).0, n, "{p:?}");
            assert_eq!(budget_period(p, start - 1).0, n - 1, "{p:?}");
            assert_eq!(budget_period(p, t + left.unwrap().as_secs()).0, n + 1);
        }
        assert_eq!(
            unix_from_rfc3339("2026-12-07T00:00:00Z"),
            Some(period_start(
                BudgetPeriod::Weekly,
                budget_period(BudgetPeriod::Weekly, t).0 + 1
            ))
        );
    }
}
