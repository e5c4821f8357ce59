//! The one parser of points in time that people type: query parameters (`since`, `until`), the
//! `lqo judge` flags and key expiries all accept the same forms — an RFC 3339 time
//! (`2025-05-01T00:00:00Z`), a date (`2025-05-01`, midnight UTC), or a span from now
//! (`90s`, `30m`, `24h`, `7d`, `2w`) counted back for windows or forward for expiries. Every
//! time lies in the years 0001–9999 ([`earliest`]..=[`latest`]): both databases hold those
//! (PostgreSQL refuses dates before 4713 BC, SQLite compares four-digit years as text), so a time
//! this module accepts never turns into a database error. Anything else is an error, never a panic.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};

/// The first instant a time may name: 0001-01-01T00:00:00Z.
pub fn earliest() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The last instant a time may name: 9999-12-31T23:59:59.999999Z (microseconds, as stored).
pub fn latest() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
        .single()
        .map_or(DateTime::<Utc>::MAX_UTC, |t| {
            t + Duration::microseconds(999_999)
        })
}

/// Whether both databases can hold and compare `t` (the years 0001–9999).
pub fn in_range(t: DateTime<Utc>) -> bool {
    t >= earliest() && t <= latest()
}

/// Which way a span counts from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toward {
    /// `24h` is 24 hours ago (`since`, `until`, `lqo judge --since`).
    Past,
    /// `90d` is 90 days from now (key expiries).
    Future,
}

/// Why a time could not be read; the message quotes the value and says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TimeError(String);

const FORMS: &str = "an RFC 3339 time such as 2025-05-01T00:00:00Z, a date such as 2025-05-01, \
     or a span such as 90m, 24h, 7d or 2w";

/// Reads `s` as a point in time; spans count from `now` in the direction `toward`. Times outside
/// the years 0001–9999 are errors.
pub fn parse_time(s: &str, now: DateTime<Utc>, toward: Toward) -> Result<DateTime<Utc>, TimeError> {
    let t = parse_unbounded(s.trim(), now, toward)?;
    if in_range(t) {
        Ok(t)
    } else {
        Err(TimeError(format!(
            "{:?} is out of range: times must lie in the years 0001 to 9999",
            s.trim()
        )))
    }
}

fn parse_unbounded(
    s: &str,
    now: DateTime<Utc>,
    toward: Toward,
) -> Result<DateTime<Utc>, TimeError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .ok_or_else(|| TimeError(format!("{s:?} is not a time: use {FORMS}")));
    }
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| TimeError(format!("{s:?} has no unit (s, m, h, d or w): use {FORMS}")))?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n
        .parse()
        .map_err(|_| TimeError(format!("{s:?} is not a time: use {FORMS}")))?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => {
            return Err(TimeError(format!(
                "{s:?}: unknown unit {unit:?}; use s, m, h, d or w, or {FORMS}"
            )))
        }
    };
    let too_long = || TimeError(format!("{s:?} is too long a span"));
    let span = n
        .checked_mul(unit_secs)
        .and_then(Duration::try_seconds)
        .ok_or_else(too_long)?;
    match toward {
        Toward::Past => now.checked_sub_signed(span),
        Toward::Future => now.checked_add_signed(span),
    }
    .ok_or_else(too_long)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-01-10T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn times_are_rfc3339_dates_or_spans_from_now() {
        let back = |s| parse_time(s, now(), Toward::Past).unwrap().to_rfc3339();
        let ahead = |s| parse_time(s, now(), Toward::Future).unwrap().to_rfc3339();
        assert_eq!(back("24h"), "2025-01-09T12:00:00+00:00");
        assert_eq!(back("90s"), "2025-01-10T11:58:30+00:00");
        assert_eq!(back("30m"), "2025-01-10T11:30:00+00:00");
        assert_eq!(back("7d"), "2025-01-03T12:00:00+00:00");
        assert_eq!(back("1w"), "2025-01-03T12:00:00+00:00");
        assert_eq!(ahead("90d"), "2025-04-10T12:00:00+00:00");
        assert_eq!(ahead("12h"), "2025-01-11T00:00:00+00:00");
        for s in ["2025-01-01T00:00:00+02:00", " 2025-01-01T00:00:00+02:00 "] {
            assert_eq!(back(s), "2024-12-31T22:00:00+00:00");
            assert_eq!(ahead(s), "2024-12-31T22:00:00+00:00");
        }
        assert_eq!(ahead("2030-01-02"), "2030-01-02T00:00:00+00:00");
    }

    #[test]
    fn nonsense_and_out_of_range_values_are_errors_not_panics() {
        for bad in [
            "",
            "24",
            "h",
            "24y",
            "-5h",
            "1.5h",
            "yesterday",
            "last-week",
            "2025-13-01",
            "2025-01-01T00:00:00 01:00",
            "99999999999999999999d",
            "9999999999999w",
            "9223372036854775807s",
            "+262143-01-01T00:00:00Z",
        ] {
            for toward in [Toward::Past, Toward::Future] {
                assert!(
                    parse_time(bad, now(), toward).is_err(),
                    "{bad:?} {toward:?}"
                );
            }
        }
        // Within chrono's range but not the databases': PostgreSQL refuses years before 4713 BC
        // and SQLite compared a year 10000 as text before 2025.
        for bad in [
            "7000000000000s",
            "9999-12-31T23:00:00-02:00",
            "0000-12-31T23:59:59Z",
            "0000-06-01",
        ] {
            for toward in [Toward::Past, Toward::Future] {
                let err = parse_time(bad, now(), toward).unwrap_err();
                assert!(err.to_string().contains("0001 to 9999"), "{bad}: {err}");
            }
        }
        for bad in [
            "+10000-01-01T00:00:00Z",
            "-0001-01-01T00:00:00Z",
            "10000-01-01",
        ] {
            assert!(parse_time(bad, now(), Toward::Past).is_err(), "{bad}");
        }
        assert_eq!(
            parse_time("9999-12-31T23:59:59Z", now(), Toward::Past)
                .unwrap()
                .to_rfc3339(),
            "9999-12-31T23:59:59+00:00"
        );
        assert_eq!(
            parse_time("0001-01-01", now(), Toward::Past).unwrap(),
            earliest()
        );
        assert!(in_range(latest()) && !in_range(latest() + Duration::microseconds(1)));
        // A span that fits a Duration but not the calendar.
        let err = parse_time("9999999999d", now(), Toward::Future).unwrap_err();
        assert!(err.to_string().contains("too long"), "{err}");
        let err = parse_time("soon", now(), Toward::Future).unwrap_err();
        assert!(err.to_string().contains("RFC 3339"), "{err}");
    }

    proptest::proptest! {
        /// Whatever a client types, the answer is a time or an error, never a panic; a time
        /// given as RFC 3339 reads back as itself.
        #[test]
        fn any_text_is_a_time_or_an_error(s in "\\PC{0,40}", n in proptest::prelude::any::<i64>(), unit in "[smhdwy]?") {
            for toward in [Toward::Past, Toward::Future] {
                let _ = parse_time(&s, now(), toward);
                let _ = parse_time(&format!("{n}{unit}"), now(), toward);
            }
        }

        #[test]
        fn rfc3339_times_read_back_as_themselves(secs in -8_000_000_000i64..250_000_000_000i64) {
            if let Some(t) = DateTime::from_timestamp(secs, 0) {
                let read = parse_time(&t.to_rfc3339(), now(), Toward::Past).unwrap();
                proptest::prop_assert_eq!(read, t);
            }
        }
    }
}
