//! Time slices of limits and budgets: fixed one-minute windows for rates, UTC calendar periods
//! for budgets. Both are numbered from the Unix epoch, so every instance agrees on them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::BudgetPeriod;

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fixed one-minute rate window: its number and the time left in it.
pub fn minute(now: u64) -> (u64, Duration) {
    (now / 60, Duration::from_secs(60 - now % 60))
}

/// Days since 1970-01-01 to (year, month 1-12), after Howard Hinnant's `civil_from_days`.
fn year_month(days: i64) -> (i64, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

/// Days from 1970-01-01 to the first of (year, month).
fn days_from_civil(year: i64, month: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-12-03T13:00:00Z` (UTC, optional fractional seconds) as seconds since the epoch.
pub fn unix_from_rfc3339(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || !text.ends_with('Z') {
        return None;
    }
    let n = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (year, month, day) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (h, m, s) = (n(11..13)?, n(14..16)?, n(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(year, month as u32) + day - 1;
    u64::try_from(days * 86_400 + h * 3600 + m * 60 + s).ok()
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
        assert_eq!(year_month(0), (1970, 1));
        assert_eq!(unix_from_rfc3339("2026-12-03T06:00:00Z"), Some(t));
        assert_eq!(unix_from_rfc3339("1970-01-01T00:00:01.5Z"), Some(1));
        assert_eq!(unix_from_rfc3339("2026-13-03T06:00:00Z"), None);
        assert_eq!(unix_from_rfc3339("yesterday"), None);
        assert_eq!(year_month(days_from_civil(2024, 2) + 28), (2024, 2));
        assert_eq!(year_month(days_from_civil(2024, 2) + 29), (2024, 3));
    }
}
