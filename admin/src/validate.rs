//! Checks on single values, shared by the handlers. Pure functions; the caller turns a
//! failure into a field error.

/// A display name: 1 to 200 characters, not only spaces, no control characters.
pub fn name(value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if value.chars().count() > 200 {
        return Err("must be at most 200 characters".into());
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// A channel's name, as the API writes it.
pub fn channel(value: &str) -> Result<herald_shared::domain::Channel, String> {
    value.parse().map_err(|_| {
        format!(
            "unknown channel `{}`; one of sms, whatsapp, voice, chat",
            clip(value)
        )
    })
}

/// A wall-clock time `HH:MM` (24 h).
pub fn clock_time(value: &str) -> Result<chrono::NaiveTime, String> {
    // Exactly two digits each, as the API's document says (chrono alone would take `9:00`).
    let shaped = value.len() == 5 && value.as_bytes()[2] == b':';
    chrono::NaiveTime::parse_from_str(value, "%H:%M")
        .ok()
        .filter(|_| shaped && value.bytes().filter(u8::is_ascii_digit).count() == 4)
        .ok_or_else(|| format!("`{}` is not a time of day like 21:00", clip(value)))
}

/// A moment a campaign may start or expire at: between the years 2000 and 9999 (PostgreSQL
/// refuses some of what JSON can say, such as years before 4713 BC).
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> Result<(), String> {
    use chrono::Datelike;
    if (2000..=9999).contains(&at.year()) {
        Ok(())
    } else {
        Err("must be a time between the years 2000 and 9999".into())
    }
}

/// Echoing user input in an error is helpful; echoing a megabyte of it is not.
/// At most 40 characters of `value`, for messages that quote it.
pub fn clip(value: &str) -> String {
    const MAX: usize = 40;
    if value.chars().count() <= MAX {
        value.to_owned()
    } else {
        format!("{}…", value.chars().take(MAX).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_times() {
        assert!(name("spring sale").is_ok());
        assert!(name("  ").is_err());
        assert!(name(&"x".repeat(201)).is_err());
        assert!(name("a\u{0}b").is_err());
        assert_eq!(
            clock_time("21:00").unwrap(),
            chrono::NaiveTime::from_hms_opt(21, 0, 0).unwrap()
        );
        assert!(clock_time("25:00").is_err());
        assert!(clock_time("9pm").is_err());
        assert!(clock_time("9:00").is_err());
        assert!(clock_time("+9:00").is_err());
    }

    #[test]
    fn timestamps_stay_in_a_sane_range() {
        let at = |s: &str| s.parse::<chrono::DateTime<chrono::Utc>>().unwrap();
        assert!(timestamp(at("2026-12-01T10:00:00Z")).is_ok());
        assert!(timestamp(at("-5000-01-01T00:00:00Z")).is_err());
        assert!(timestamp(at("1999-12-31T23:59:59Z")).is_err());
    }

    #[test]
    fn long_input_is_clipped_in_messages() {
        let message = clock_time(&"9".repeat(10_000)).unwrap_err();
        assert!(message.len() < 200, "{message}");
    }
}
