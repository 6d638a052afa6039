//! UTC calendar arithmetic on Unix seconds, without a date crate: budget periods (limits) and
//! credential expiry times (Bedrock instance profiles) both need only this.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Days since 1970-01-01 to (year, month 1-12), after Howard Hinnant's `civil_from_days`.
pub fn year_month(days: i64) -> (i64, u32) {
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
pub fn days_from_civil(year: i64, month: u32) -> i64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_and_civil_dates() {
        assert_eq!(year_month(0), (1970, 1));
        assert_eq!(
            unix_from_rfc3339("2026-12-03T06:00:00Z"),
            Some(1_796_277_600)
        );
        assert_eq!(unix_from_rfc3339("1970-01-01T00:00:01.5Z"), Some(1));
        assert_eq!(unix_from_rfc3339("2026-13-03T06:00:00Z"), None);
        assert_eq!(unix_from_rfc3339("yesterday"), None);
        assert_eq!(year_month(days_from_civil(2024, 2) + 28), (2024, 2));
        assert_eq!(year_month(days_from_civil(2024, 2) + 29), (2024, 3));
    }
}
