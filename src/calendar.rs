//! Calendar dates for the policy's `since` and `until`, and the time zone whose days they
//! mean (`policy.timezone`, Europe/Amsterdam by default): exemptions expire
//! by date, and an exemption "until 2026-12-03" ends when that day ends in
//! the municipality, not in UTC. The decision must not read the OS clock,
//! so callers pass today's date in; [`Zone::date_at`] is the one place a
//! point in time becomes a policy date. Calendar arithmetic and the zone
//! rules are `jiff`'s (with its own copy of the time-zone database, so this
//! works on a machine without tzdata).

use std::fmt;
use std::sync::OnceLock;
use std::time::SystemTime;

use jiff::tz::TimeZone;
use jiff::Timestamp;

/// A proleptic Gregorian calendar date, ordered chronologically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(jiff::civil::Date);

/// A date string that is not `YYYY-MM-DD` or names a day that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a date written as YYYY-MM-DD, got {0:?}")]
pub struct DateError(pub String);

impl Date {
    /// Parses `YYYY-MM-DD`, the form the policy files use. Only that form:
    /// jiff also reads `+002026-11-23` and `2026-11-23T10:00`, which a policy
    /// file should not contain.
    pub fn parse(s: &str) -> Result<Date, DateError> {
        let err = || DateError(s.to_string());
        let b = s.as_bytes();
        let shape = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if !shape {
            return Err(err());
        }
        let num = |r: std::ops::Range<usize>| s[r].parse::<i16>().map_err(|_| err());
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let month = i8::try_from(month).map_err(|_| err())?;
        let day = i8::try_from(day).map_err(|_| err())?;
        jiff::civil::Date::new(year, month, day).map(Date).map_err(|_| err())
    }

    /// The calendar date as jiff sees it.
    pub fn civil(self) -> jiff::civil::Date {
        self.0
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.0.year(), self.0.month(), self.0.day())
    }
}

/// The zone the policy's dates, and the times the dashboard and `weerwal
/// logs` show, are in. The audit log itself stays in UTC.
#[derive(Clone)]
pub struct Zone {
    name: String,
    /// Looked up on first use: reading the bundled database costs a few
    /// MiB of memory, which `logs report` and friends need not pay when
    /// they never show a time.
    tz: OnceLock<TimeZone>,
}

/// A `policy.timezone` that is not a time zone jiff knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone {0:?}: write an IANA name such as \"Europe/Amsterdam\" or \"UTC\"")]
pub struct ZoneError(pub String);

/// The zone when `policy.timezone` is not set.
pub const DEFAULT_ZONE: &str = "Europe/Amsterdam";

impl Zone {
    /// The IANA zone `name` (`Europe/Amsterdam`, `UTC`).
    pub fn named(name: &str) -> Result<Zone, ZoneError> {
        let tz = TimeZone::get(name).map_err(|_| ZoneError(name.to_string()))?;
        Ok(Zone { name: name.to_string(), tz: OnceLock::from(tz) })
    }

    /// UTC, for what is written in UTC on purpose (browser history reports).
    pub fn utc() -> Zone {
        Zone { name: "UTC".into(), tz: OnceLock::from(TimeZone::UTC) }
    }

    /// The zone's IANA name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The jiff time zone.
    pub fn tz(&self) -> &TimeZone {
        // A name that was checked (`named`) or is the default, which the
        // bundled database always has (a unit test checks it).
        self.tz.get_or_init(|| TimeZone::get(&self.name).unwrap_or(TimeZone::UTC))
    }

    /// The date in this zone at `t`: the one place a point in time becomes
    /// the date the policy is decided on.
    pub fn date_at(&self, t: SystemTime) -> Date {
        Date(self.tz().to_datetime(self.timestamp(t)).date())
    }

    /// Today in this zone.
    pub fn today(&self) -> Date {
        self.date_at(SystemTime::now())
    }

    /// `t` as this zone's wall-clock time, `2026-11-23 11:15:02`.
    pub fn wall_clock(&self, t: SystemTime) -> String {
        self.tz().to_datetime(self.timestamp(t)).strftime("%Y-%m-%d %H:%M:%S").to_string()
    }

    /// An RFC 3339 time from the log (`2026-11-23T10:15:02.123Z`) as this
    /// zone's wall-clock time; what cannot be read is shown as written.
    pub fn wall_clock_of(&self, ts: &str) -> String {
        match ts.parse::<Timestamp>() {
            Ok(t) => self.tz().to_datetime(t).strftime("%Y-%m-%d %H:%M:%S").to_string(),
            Err(_) => ts.to_string(),
        }
    }

    /// The date in this zone of an RFC 3339 time from the log.
    pub fn date_of(&self, ts: &str) -> Option<Date> {
        ts.parse::<Timestamp>().ok().map(|t| Date(self.tz().to_datetime(t).date()))
    }

    fn timestamp(&self, t: SystemTime) -> Timestamp {
        // Outside jiff's range (years -9999..=9999) only with a broken clock.
        Timestamp::try_from(t).unwrap_or(Timestamp::UNIX_EPOCH)
    }
}

impl Default for Zone {
    fn default() -> Zone {
        Zone { name: DEFAULT_ZONE.to_string(), tz: OnceLock::new() }
    }
}

impl PartialEq for Zone {
    fn eq(&self, other: &Zone) -> bool {
        self.name == other.name
    }
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Zone({})", self.name)
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl<'de> serde::Deserialize<'de> for Zone {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Zone, D::Error> {
        let name = String::deserialize(d)?;
        Zone::named(&name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(s: &str) -> SystemTime {
        SystemTime::try_from(s.parse::<Timestamp>().unwrap()).unwrap()
    }

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
        assert!(Date::parse("2023-07-20T10:00").is_err());
        assert!(Date::parse("+02023-07-20").is_err());
        assert!(Date::parse("0000-01-01").is_ok());
    }

    #[test]
    fn clock_to_date() {
        let utc = Zone::utc();
        assert_eq!(utc.date_at(UNIX_EPOCH).to_string(), "1970-01-01");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_435_200); // 2026-11-23T12:00:00Z
        assert_eq!(utc.date_at(t).to_string(), "2026-11-23");
    }

    #[test]
    fn the_day_is_the_municipality_s_day() {
        let ams = Zone::default();
        assert_eq!(ams.name(), "Europe/Amsterdam");
        assert!(TimeZone::get(DEFAULT_ZONE).is_ok(), "the bundled database has the default zone");
        assert_ne!(ams.tz(), &TimeZone::UTC);
        assert_eq!(ams, Zone::named("Europe/Amsterdam").unwrap());
        // Winter (UTC+1): 23:30 UTC is already the next day in Amsterdam.
        assert_eq!(ams.date_at(at("2026-12-03T22:59:59Z")).to_string(), "2026-12-03");
        assert_eq!(ams.date_at(at("2026-12-03T23:30:00Z")).to_string(), "2026-12-04");
        assert_eq!(Zone::utc().date_at(at("2026-12-03T23:30:00Z")).to_string(), "2026-12-03");
        // Summer (UTC+2).
        assert_eq!(ams.date_at(at("2026-07-01T21:59:59Z")).to_string(), "2026-07-01");
        assert_eq!(ams.date_at(at("2026-07-01T22:00:00Z")).to_string(), "2026-07-02");
        assert_eq!(ams.wall_clock_of("2026-11-23T10:15:02.123Z"), "2026-11-23 11:15:02");
        assert_eq!(ams.wall_clock_of("garbage"), "garbage");
        assert_eq!(ams.date_of("2026-12-03T23:30:00Z").unwrap().to_string(), "2026-12-04");
        assert!(Zone::named("Europe/Amsterdan").unwrap_err().to_string().contains("Europe/Amsterdam"));
    }
}
