//! Each browser's own clock. Getting these wrong shows the person a visit
//! "in 1601" or "in 2401", so every epoch and unit is spelt out here once.
//! Kept by hand: these are facts about the browsers' files, not calendar
//! arithmetic (formatting is jiff's).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from 1601-01-01 (Windows FILETIME epoch, used by Chromium) to 1970-01-01.
const CHROME_TO_UNIX_SECS: i64 = 11_644_473_600;
/// Seconds from 1970-01-01 to 2001-01-01 (Core Foundation's reference date, used by Safari).
const UNIX_TO_SAFARI_SECS: f64 = 978_307_200.0;

/// Chromium: microseconds since 1601-01-01 UTC. 0 means "never".
pub fn chrome(us: i64) -> Option<SystemTime> {
    if us <= 0 {
        return None;
    }
    from_unix_micros(us.checked_sub(CHROME_TO_UNIX_SECS * 1_000_000)?)
}

/// Firefox (PRTime): microseconds since 1970-01-01 UTC. 0 means "never".
pub fn firefox(us: i64) -> Option<SystemTime> {
    if us <= 0 {
        return None;
    }
    from_unix_micros(us)
}

/// Safari: seconds (fractional, REAL column) since 2001-01-01 UTC.
pub fn safari(secs: f64) -> Option<SystemTime> {
    let unix = secs + UNIX_TO_SAFARI_SECS;
    if !unix.is_finite() || unix <= 0.0 || unix > 1.0e12 {
        return None;
    }
    Some(UNIX_EPOCH + Duration::from_secs_f64(unix))
}

fn from_unix_micros(us: i64) -> Option<SystemTime> {
    let d = Duration::from_micros(us.unsigned_abs());
    if us >= 0 {
        UNIX_EPOCH.checked_add(d)
    } else {
        UNIX_EPOCH.checked_sub(d)
    }
}

/// `2026-11-23T10:15:02Z` (UTC), or `-` when unknown. A time before 1970
/// or after 9999 in a history file is garbage.
pub fn format(t: Option<SystemTime>) -> String {
    match t.filter(|t| *t >= UNIX_EPOCH).and_then(|t| jiff::Timestamp::try_from(t).ok()) {
        Some(t) if t.as_second() < 253_402_300_800 => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        _ => "-".to_string(),
    }
}
