//! RFC 3339 date-times in UTC (`YYYY-MM-DDTHH:MM:SS[.fraction]Z`): the form of
//! `provenance.created` (rule 2.11), checked when reading and produced when a writer is asked
//! for a timestamp.

/// Is `s` a UTC RFC 3339 date-time written `YYYY-MM-DDTHH:MM:SS[.fraction]Z` with a valid date
/// and time (rule 2.11)?
pub fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0u32, |a, &d| a * 10 + (d - b'0') as u32))
    };
    let seps = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':';
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(sec)) = (
        digits(0..4),
        digits(5..7),
        digits(8..10),
        digits(11..13),
        digits(14..16),
        digits(17..19),
    ) else {
        return false;
    };
    let tail = &b[19..];
    let tail_ok = match tail {
        [b'Z'] => true,
        [b'.', frac @ .., b'Z'] => !frac.is_empty() && frac.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    seps && tail_ok
        && (1..=12).contains(&mo)
        && d >= 1
        && d <= days[(mo.max(1) - 1) as usize]
        && h <= 23
        && mi <= 59
        && sec <= 60
}

/// The current time from the system clock, in that form (whole seconds; civil-from-days
/// conversion).
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// `secs` seconds after 1970-01-01T00:00:00Z, in that form.
pub fn format_utc(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatted_times_are_valid_and_right() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_795_996_799), "2026-11-29T23:59:59Z");
        assert!(is_rfc3339_utc(&now_utc()));
        assert!(!is_rfc3339_utc("2026-02-29T00:00:00Z"));
    }
}
