//! Times as casemesh keeps them — `u64` milliseconds since the Unix epoch,
//! UTC — and the one way they are shown to people.
//!
//! Any `u64` may arrive from a peer, a bundle or a client, so showing a time
//! never fails: a time RFC 3339 cannot write (after 9999-12-31) is shown as
//! its raw value, said to be out of range.

/// The last millisecond RFC 3339 can write: 9999-12-31T23:59:59.999Z.
pub const MAX_TIME_MS: u64 = 253_402_300_799_999;

/// Milliseconds since the Unix epoch, UTC.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// RFC 3339, UTC, with milliseconds; `None` after [`MAX_TIME_MS`].
pub fn rfc3339(ms: u64) -> Option<String> {
    if ms > MAX_TIME_MS {
        return None;
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    // Within the range checked above the formatter cannot fail; should it
    // ever, the caller shows the raw value rather than panicking.
    let mut out = String::new();
    std::fmt::Write::write_fmt(
        &mut out,
        format_args!("{}", humantime::format_rfc3339_millis(t)),
    )
    .ok()?;
    Some(out)
}

/// A time for people and reports: RFC 3339 (UTC, milliseconds), or the raw
/// value marked out of range.
pub fn format_time(ms: u64) -> String {
    rfc3339(ms).unwrap_or_else(|| format!("out-of-range time ({ms} ms after 1970)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_time_formats_without_panicking() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_time(MAX_TIME_MS), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(MAX_TIME_MS + 1), None);
        for ms in [MAX_TIME_MS + 1, u64::MAX / 2, u64::MAX - 1, u64::MAX] {
            let shown = format_time(ms);
            assert!(
                shown.starts_with("out-of-range time") && shown.contains(&ms.to_string()),
                "{shown}"
            );
        }
        // A spread of values across the whole u64 range.
        let mut ms = 1u64;
        while let Some(next) = ms.checked_mul(3) {
            assert!(!format_time(ms).is_empty());
            ms = next;
        }
    }
}
