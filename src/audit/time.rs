//! Time for the audit log: UTC file names, daily rotation and retention,
//! and the time arguments of `weerwal logs` and the dashboard (`--since`,
//! `--until`), whose dates are days in `policy.timezone`. Parsing and
//! calendar arithmetic are `jiff`'s; the log itself is in UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jiff::civil::{Date, DateTime};
use jiff::Timestamp;

use crate::calendar::Zone;

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
    Timestamp::try_from(t).unwrap_or(Timestamp::UNIX_EPOCH).strftime("%Y%m%d-%H%M%S").to_string()
}

/// `YYYY-MM-DD` and nothing else (jiff also reads other forms).
fn parse_date(s: &str) -> Option<Date> {
    crate::calendar::Date::parse(s).ok().map(crate::calendar::Date::civil)
}

/// An RFC 3339 time (`2026-11-23T10:15:02.123Z`, `2026-11-23T11:15:02+01:00`),
/// or, with `Err(datetime)`, a date and time written without an offset
/// (`2026-11-23 10:15`: a space instead of `T`, seconds optional), which
/// the caller places in a zone.
fn parse_time(s: &str) -> Option<Result<Timestamp, DateTime>> {
    // A date alone is not a time (jiff would read it as midnight).
    if s.len() < 16 || !s.is_char_boundary(10) || !s[10..].starts_with(['T', 't', ' ']) {
        return None;
    }
    parse_date(&s[..10])?;
    if let Ok(t) = s.parse::<Timestamp>() {
        return Some(Ok(t));
    }
    s.parse::<DateTime>().ok().map(Err)
}

/// An RFC 3339 time as written in the log; without an offset it is UTC.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let t = match parse_time(s)? {
        Ok(t) => t,
        Err(dt) => jiff::tz::TimeZone::UTC.to_timestamp(dt).ok()?,
    };
    SystemTime::try_from(t).ok()
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

/// A `--since`/`--until` argument: RFC 3339, a date (the whole day in
/// `zone`: `--until 2026-11-23` includes that day), a date and time without
/// an offset (wall-clock time in `zone`), or an age before `now` (`7d`,
/// `12h`, `30m`). Returns the range bound: inclusive for `Since`, exclusive
/// for `Until`.
pub fn parse_time_arg(s: &str, now: SystemTime, edge: Edge, zone: &Zone) -> Result<SystemTime, String> {
    let s = s.trim();
    let in_zone = |dt: DateTime| {
        (zone.tz().to_timestamp(dt).and_then(SystemTime::try_from))
            .map_err(|e| format!("{s:?} is not a time in {zone}: {e}"))
    };
    if let Some(day) = parse_date(s) {
        let day = if edge == Edge::Until { day.tomorrow().map_err(|e| format!("{s:?}: {e}"))? } else { day };
        return in_zone(day.to_datetime(jiff::civil::Time::midnight()));
    }
    if let Some(t) = parse_time(s) {
        let t = match t {
            Ok(t) => SystemTime::try_from(t).map_err(|e| format!("{s:?}: {e}"))?,
            Err(dt) => in_zone(dt)?,
        };
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
        assert_eq!(utc_day(t), 20_780); // 1_795_392_000 s / 86_400
    }

    #[test]
    fn time_arguments() {
        let now = humantime::parse_rfc3339("2026-11-23T12:00:00Z").unwrap();
        let at = |s| humantime::parse_rfc3339(s).unwrap();
        let utc = Zone::utc();
        let parse_time_arg = |s, now, edge| parse_time_arg(s, now, edge, &utc);
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

    #[test]
    fn dates_and_offsetless_times_are_local_days_and_times() {
        let now = humantime::parse_rfc3339("2026-11-23T12:00:00Z").unwrap();
        let at = |s| humantime::parse_rfc3339(s).unwrap();
        let ams = Zone::default();
        // 2026-11-23 in Amsterdam (UTC+1) runs from 23:00 UTC the day before.
        assert_eq!(parse_time_arg("2026-11-23", now, Edge::Since, &ams).unwrap(), at("2026-11-22T23:00:00Z"));
        assert_eq!(parse_time_arg("2026-11-23", now, Edge::Until, &ams).unwrap(), at("2026-11-23T23:00:00Z"));
        // Summer time: UTC+2; the day DST ends has 25 hours.
        assert_eq!(parse_time_arg("2026-07-01", now, Edge::Since, &ams).unwrap(), at("2026-06-30T22:00:00Z"));
        assert_eq!(parse_time_arg("2026-10-25", now, Edge::Until, &ams).unwrap(), at("2026-10-25T23:00:00Z"));
        assert_eq!(parse_time_arg("2026-11-23 10:15", now, Edge::Since, &ams).unwrap(), at("2026-11-23T09:15:00Z"));
        // An explicit offset is taken as written.
        assert_eq!(parse_time_arg("2026-11-23T10:15:00Z", now, Edge::Since, &ams).unwrap(), at("2026-11-23T10:15:00Z"));
    }
}
