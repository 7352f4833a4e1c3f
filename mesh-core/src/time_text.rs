//! Time as text: durations as people type them (flags, environment, headers) and timestamps as
//! people read them (status conditions, admin dumps). One parser and one formatter for every
//! binary, so `24h` and `150ms` mean the same everywhere.

use std::time::{Duration, SystemTime};

/// Why a duration did not parse; the message is meant for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration; expected a whole number with a unit, like 150ms, 2s, 30m or 24h")]
    Empty,
    #[error("{0:?}: expected a whole number with a unit, like 150ms, 2s, 30m or 24h")]
    NoNumber(String),
    #[error("missing unit after {0}; use ms, s, m, h or d")]
    NoUnit(u64),
    #[error("unknown unit {0:?}; use ms, s, m, h or d")]
    UnknownUnit(String),
    #[error("{0:?} is too large")]
    Overflow(String),
    #[error("a duration must be positive")]
    Zero,
    #[error("{0:?} is longer than 3650d")]
    TooLong(String),
}

/// Parses `<digits><unit>` with unit `ms`, `s`, `m`, `h` or `d`. The unit is required: a bare
/// `150` could mean milliseconds or seconds, and guessing wrong silently turns a 150 ms fault
/// into a 2.5 minute one.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let (number, unit) = split(text)?;
    if unit.is_empty() {
        return Err(DurationError::NoUnit(number));
    }
    with_unit(text, number, unit)
}

/// A timeout: like [`parse_duration`], but zero is refused (it would end everything at once).
pub fn parse_timeout(text: &str) -> Result<Duration, DurationError> {
    let timeout = parse_duration(text)?;
    if timeout.is_zero() {
        return Err(DurationError::Zero);
    }
    Ok(timeout)
}

/// A certificate lifetime: like [`parse_duration`], but a bare number counts as seconds (as the
/// control plane's environment variables have always accepted), zero is refused, and so is
/// anything past the generated root's ten years, which could not verify anyway.
pub fn parse_ttl(text: &str) -> Result<Duration, DurationError> {
    let (number, unit) = split(text)?;
    let ttl = with_unit(text, number, if unit.is_empty() { "s" } else { unit })?;
    if ttl.is_zero() {
        return Err(DurationError::Zero);
    }
    if ttl > Duration::from_secs(3650 * 86400) {
        return Err(DurationError::TooLong(text.trim().to_string()));
    }
    Ok(ttl)
}

fn split(text: &str) -> Result<(u64, &str), DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(DurationError::NoNumber(text.to_string()));
    }
    // Only ASCII digits remain, so the one way this fails is a number too big for u64.
    let number = digits
        .parse()
        .map_err(|_| DurationError::Overflow(text.to_string()))?;
    Ok((number, unit))
}

fn with_unit(text: &str, number: u64, unit: &str) -> Result<Duration, DurationError> {
    let seconds = |scale: u64| {
        number
            .checked_mul(scale)
            .map(Duration::from_secs)
            .ok_or_else(|| DurationError::Overflow(text.trim().to_string()))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        "d" => seconds(86400),
        other => Err(DurationError::UnknownUnit(other.to_owned())),
    }
}

/// RFC 3339 in UTC, whole seconds: `2026-12-03T06:13:32Z`.
pub fn rfc3339(t: SystemTime) -> String {
    ::time::OffsetDateTime::from(t)
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&::time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("150ms"), Ok(Duration::from_millis(150)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert!(matches!(
            parse_duration("ms"),
            Err(DurationError::NoNumber(_))
        ));
        assert!(matches!(
            parse_duration("-5s"),
            Err(DurationError::NoNumber(_))
        ));
        assert_eq!(parse_duration("150"), Err(DurationError::NoUnit(150)));
        assert_eq!(
            parse_duration("1.5s"),
            Err(DurationError::UnknownUnit(".5s".into()))
        );
        assert_eq!(
            parse_duration("3y"),
            Err(DurationError::UnknownUnit("y".into()))
        );
        assert!(matches!(
            parse_duration("99999999999999999999s"),
            Err(DurationError::Overflow(_))
        ));
        assert!(matches!(
            parse_duration("999999999999999999d"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn timeouts_are_positive_with_a_unit() {
        assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_timeout("0s"), Err(DurationError::Zero));
        assert_eq!(parse_timeout("10"), Err(DurationError::NoUnit(10)));
    }

    #[test]
    fn certificate_lifetimes() {
        assert_eq!(parse_ttl("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("h").is_err());
        assert_eq!(parse_ttl("0s"), Err(DurationError::Zero));
        assert!(parse_ttl("99999999999999999d").is_err());
        assert!(matches!(parse_ttl("3651d"), Err(DurationError::TooLong(_))));
        assert_eq!(parse_ttl("3650d"), Ok(Duration::from_secs(3650 * 86400)));
    }

    #[test]
    fn timestamps_are_utc_whole_seconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_742_412_900);
        assert_eq!(rfc3339(t), "2025-12-03T06:13:32Z");
    }
}
