//! UTC calendar arithmetic for the audit log (file names, daily rotation,
//! retention) and the time arguments of `weerwal logs` (`--since`,
//! `--until`). No time-zone database: the log is in UTC, and so are times
//! written without an offset.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use crate::policy::date::{civil_from_days, days_from_civil};

/// Milliseconds since the Unix epoch (negative before it).
pub fn unix_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The time `ms` milliseconds after (or before) the Unix epoch.
pub fn from_unix_millis(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// The UTC day number of a time: records of one day share it.
pub fn utc_day(t: SystemTime) -> i64 {
    unix_millis(t).div_euclid(86_400_000)
}

/// `20261123-101502`: a sortable UTC time for file names.
pub fn compact_utc(t: SystemTime) -> String {
    let ms = unix_millis(t);
    let (y, m, d) = civil_from_days(ms.div_euclid(86_400_000));
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `YYYY-MM-DD` as a day number.
pub fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (digits(&s[..4])?, digits(&s[5..7])?, digits(&s[8..])?);
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(i64::from(y), m) {
        return None;
    }
    Some(days_from_civil(i64::from(y), m, d))
}

/// An RFC 3339 time (`2026-11-23T10:15:02.123Z`, `2026-11-23T11:15:02+01:00`).
/// Lenient where it cannot mislead: a space instead of `T`, seconds
/// optional, and no offset meaning UTC.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    if s.len() < 16 || !s.is_char_boundary(10) {
        return None;
    }
    let day = parse_date(&s[..10])?;
    let rest = s[10..].strip_prefix(['T', 't', ' '])?;
    let (clock, offset_secs) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (c, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (h, m) = off[1..].split_once(':')?;
        let (h, m) = (digits(h)?, digits(m)?);
        if h > 23 || m > 59 || off.len() != 6 {
            return None;
        }
        (c, sign * i64::from(h * 3600 + m * 60))
    } else {
        (rest, 0)
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((hms, frac)) => (hms, Some(frac)),
        None => (clock, None),
    };
    let mut parts = hms.split(':');
    let (h, m) = (parts.next()?, parts.next()?);
    let sec = parts.next();
    if parts.next().is_some() || h.len() != 2 || m.len() != 2 || sec.is_some_and(|s| s.len() != 2) {
        return None;
    }
    let (h, m, sec) = (digits(h)?, digits(m)?, sec.map(digits).unwrap_or(Some(0))?);
    if h > 23 || m > 59 || sec > 60 || (frac.is_some() && hms.len() != 8) {
        return None;
    }
    let nanos = match frac {
        None => 0,
        Some(f) if !f.is_empty() && f.len() <= 9 => digits(f)? * 10u32.pow(9 - f.len() as u32),
        Some(_) => return None,
    };
    // A leap second is counted as the last second of its minute.
    let secs = day * 86_400 + i64::from(h * 3600 + m * 60 + sec.min(59)) - offset_secs;
    let base = from_unix_millis(secs.checked_mul(1000)?);
    Some(base + Duration::from_nanos(u64::from(nanos)))
}

/// A half-open time range: `since` included, `until` excluded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
}

impl TimeRange {
    pub fn is_unbounded(&self) -> bool {
        self.since.is_none() && self.until.is_none()
    }

    pub fn contains(&self, t: SystemTime) -> bool {
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
    }
}

/// Which end of a range a time argument gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    Since,
    Until,
}

/// A `--since`/`--until` argument: RFC 3339, a date (the whole day: `--until
/// 2026-11-23` includes that day), or an age before `now` (`7d`, `12h`, `30m`).
/// Returns the range bound: inclusive for `Since`, exclusive for `Until`.
pub fn parse_time_arg(s: &str, now: SystemTime, edge: Edge) -> Result<SystemTime, String> {
    let s = s.trim();
    if let Some(day) = parse_date(s) {
        let day = if edge == Edge::Until { day + 1 } else { day };
        return Ok(from_unix_millis(day * 86_400_000));
    }
    if let Some(t) = parse_rfc3339(s) {
        // `--until T` includes T itself.
        return Ok(if edge == Edge::Until { t + Duration::from_nanos(1) } else { t });
    }
    if let Ok(age) = humantime::parse_duration(s) {
        return now.checked_sub(age).ok_or_else(|| format!("{s:?} reaches back before 1970"));
    }
    Err(format!(
        "cannot read the time {s:?}: write RFC 3339 (2026-11-23T10:00:00Z), a date (2026-11-23) or an age (7d, 12h)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip_and_known_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for d in (-800_000..800_000).step_by(997) {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }

    #[test]
    fn rfc3339_agrees_with_humantime() {
        for s in ["2026-11-23T10:15:02.123Z", "2024-02-29T23:59:59Z", "1999-12-31T00:00:00.5Z"] {
            assert_eq!(parse_rfc3339(s), Some(humantime::parse_rfc3339(s).unwrap()), "{s}");
        }
        let t = parse_rfc3339("2026-11-23T11:15:02+01:00").unwrap();
        assert_eq!(t, humantime::parse_rfc3339("2026-11-23T10:15:02Z").unwrap());
        assert_eq!(
            parse_rfc3339("2026-11-23 10:15").unwrap(),
            humantime::parse_rfc3339("2026-11-23T10:15:00Z").unwrap()
        );
        for bad in ["2026-02-30T00:00:00Z", "2026-11-23T24:00:00Z", "2026-11-23", "2026-11-23T10:15:02.Z", "x"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        let t = humantime::parse_rfc3339("2026-11-23T10:15:02.999Z").unwrap();
        assert_eq!(compact_utc(t), "20261123-101502");
        assert_eq!(utc_day(t), days_from_civil(2026, 11, 23));
    }

    #[test]
    fn time_arguments() {
        let now = humantime::parse_rfc3339("2026-11-23T12:00:00Z").unwrap();
        let at = |s| humantime::parse_rfc3339(s).unwrap();
        assert_eq!(parse_time_arg("2026-11-23", now, Edge::Since).unwrap(), at("2026-11-23T00:00:00Z"));
        assert_eq!(parse_time_arg("2026-11-23", now, Edge::Until).unwrap(), at("2026-11-24T00:00:00Z"));
        assert_eq!(parse_time_arg("12h", now, Edge::Since).unwrap(), at("2026-11-23T00:00:00Z"));
        assert_eq!(parse_time_arg("7d", now, Edge::Since).unwrap(), at("2026-11-16T12:00:00Z"));
        let until = parse_time_arg("2026-11-23T10:00:00Z", now, Edge::Until).unwrap();
        let range = TimeRange { since: None, until: Some(until) };
        assert!(range.contains(at("2026-11-23T10:00:00Z")));
        assert!(!range.contains(at("2026-11-23T10:00:00.001Z")));
        assert!(parse_time_arg("gisteren", now, Edge::Since).unwrap_err().contains("RFC 3339"));
    }
}
