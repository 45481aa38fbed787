//! Calendar dates for `since` and `until`: exemptions expire by date, and the
//! decision must not read the OS clock, so callers pass today's date in.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A proleptic Gregorian calendar date, ordered chronologically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    year: i32,
    month: u8,
    day: u8,
}

/// A date string that is not `YYYY-MM-DD` or names a day that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a date written as YYYY-MM-DD, got {0:?}")]
pub struct DateError(pub String);

impl Date {
    /// Parses `YYYY-MM-DD`, the form the policy files use.
    pub fn parse(s: &str) -> Result<Date, DateError> {
        let err = || DateError(s.to_string());
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(err());
        }
        let num = |r: std::ops::Range<usize>| -> Result<u32, DateError> {
            let part = &s[r];
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return Err(err());
            }
            part.parse().map_err(|_| err())
        };
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year as i32, month) {
            return Err(err());
        }
        Ok(Date { year: year as i32, month: month as u8, day: day as u8 })
    }

    /// The UTC date of a point in time; the one place the I/O side turns the
    /// clock into something the pure decision can take.
    pub fn of(t: SystemTime) -> Date {
        let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Date::from_days((secs / 86_400) as i64)
    }

    /// Today in UTC.
    pub fn today() -> Date {
        Date::of(SystemTime::now())
    }

    fn from_days(days: i64) -> Date {
        let (year, month, day) = civil_from_days(days);
        Date { year: year as i32, month: month as u8, day: day as u8 }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (m, d) = (i64::from(month), i64::from(day));
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number from [`days_from_civil`].
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_and_orders() {
        let a = Date::parse("2023-07-20").unwrap();
        let b = Date::parse("2027-06-30").unwrap();
        assert!(a < b);
        assert_eq!(b.to_string(), "2027-06-30");
        assert!(Date::parse("2023-02-29").is_err());
        assert!(Date::parse("2024-02-29").is_ok());
        assert!(Date::parse("2023-7-20").is_err());
        assert!(Date::parse("2023-13-01").is_err());
    }

    #[test]
    fn clock_to_date() {
        assert_eq!(Date::of(UNIX_EPOCH).to_string(), "1970-01-01");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_435_200); // 2026-11-23T12:00:00Z
        assert_eq!(Date::of(t).to_string(), "2026-11-23");
    }
}
