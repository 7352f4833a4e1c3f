//! Human durations as people type them on a command line or in a header: `150ms`, `2s`, `1m`.
//!
//! Whole numbers only, and the unit is required: a bare `150` could mean milliseconds or seconds,
//! and guessing wrong silently turns a 150 ms fault into a 2.5 minute one.

use std::time::Duration;

/// Why a duration did not parse; the message is meant for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration; expected a whole number with a unit, like 150ms, 2s or 1m")]
    Empty,
    #[error("expected a whole number with a unit, like 150ms, 2s or 1m")]
    NoNumber,
    #[error("missing unit after {0}; use ms, s or m")]
    NoUnit(u64),
    #[error("unknown unit {0:?}; use ms, s or m")]
    UnknownUnit(String),
    #[error("number too large")]
    Overflow,
}

/// Parses `<digits><unit>` with unit `ms`, `s` or `m`.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(DurationError::NoNumber);
    }
    // Only ASCII digits remain, so the one way this fails is a number too big for u64.
    let number: u64 = digits.parse().map_err(|_| DurationError::Overflow)?;
    match unit {
        "" => Err(DurationError::NoUnit(number)),
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => number
            .checked_mul(60)
            .map(Duration::from_secs)
            .ok_or(DurationError::Overflow),
        other => Err(DurationError::UnknownUnit(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("150ms"), Ok(Duration::from_millis(150)));
        assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse(" 0s "), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        assert_eq!(parse(""), Err(DurationError::Empty));
        assert_eq!(parse("ms"), Err(DurationError::NoNumber));
        assert_eq!(parse("-5s"), Err(DurationError::NoNumber));
        assert_eq!(parse("150"), Err(DurationError::NoUnit(150)));
        assert_eq!(parse("1.5s"), Err(DurationError::UnknownUnit(".5s".into())));
        assert_eq!(parse("3h"), Err(DurationError::UnknownUnit("h".into())));
        assert_eq!(parse("99999999999999999999s"), Err(DurationError::Overflow));
        assert_eq!(parse("999999999999999999m"), Err(DurationError::Overflow));
    }
}
