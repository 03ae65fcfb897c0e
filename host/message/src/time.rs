//! UTC timestamps in the two forms IoT Hub and IoT Edge write: RFC 3339 with milliseconds
//! (`enqueuedTime`, logs) and edgeAgent's reported form with 100 ns ticks and no zone marker
//! (`lastStartTimeUtc`: `2021-06-12T00:27:46.3838704`).

use std::time::{Duration, SystemTime};

struct Civil {
    year: i64,
    month: i64,
    day: i64,
    secs_of_day: i64,
    nanos: u32,
}

fn civil(t: SystemTime) -> Civil {
    let since = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let secs = since.as_secs() as i64;
    let (days, secs_of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    Civil {
        year: yoe + era * 400 + i64::from(month <= 2),
        month,
        day,
        secs_of_day,
        nanos: since.subsec_nanos(),
    }
}

fn date_time(c: &Civil) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        c.year,
        c.month,
        c.day,
        c.secs_of_day / 3600,
        c.secs_of_day % 3600 / 60,
        c.secs_of_day % 60
    )
}

/// `2023-11-14T22:13:20.123Z`
pub fn rfc3339(t: SystemTime) -> String {
    let c = civil(t);
    format!("{}.{:03}Z", date_time(&c), c.nanos / 1_000_000)
}

/// `2023-11-14T22:13:20.1234567`: edgeAgent's reported timestamps (UTC, no zone marker).
pub fn iotedge(t: SystemTime) -> String {
    let c = civil(t);
    format!("{}.{:07}", date_time(&c), c.nanos / 100)
}

/// Parses an RFC 3339 timestamp (`2023-11-14T22:13:20Z`, `…20.123456Z`, `…20+01:00`; `t` and
/// `z` in either case) at or after 1970. `None` for anything else.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| digits.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let separators_ok = b.get(4) == Some(&b'-')
        && b.get(7) == Some(&b'-')
        && matches!(b.get(10), Some(b'T' | b't' | b' '))
        && b.get(13) == Some(&b':')
        && b.get(16) == Some(&b':');
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return None,
    };
    if !separators_ok || day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &b[19..];
    let mut nanos: u32 = 0;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let digits = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        for (i, d) in fraction[..digits].iter().take(9).enumerate() {
            nanos += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
        }
        rest = &fraction[digits..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let value = |hi: u8, lo: u8| i64::from(hi - b'0') * 10 + i64::from(lo - b'0');
            let minutes = value(*h1, *h2) * 60 + value(*m1, *m2);
            if *sign == b'+' { minutes } else { -minutes }
        }
        _ => return None,
    };
    // Days since the epoch from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset * 60;
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(iotedge(t), "2023-11-14T22:13:20.1234567");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
        let before_epoch = SystemTime::UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(rfc3339(before_epoch), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn parses_what_it_formats_and_offsets() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(leap));
        assert_eq!(parse_rfc3339("2000-02-29T01:30:00+01:30"), Some(leap));
        assert_eq!(
            parse_rfc3339("2000-02-28T23:00:00.5-01:00"),
            Some(leap + Duration::from_millis(500))
        );
        assert_eq!(
            parse_rfc3339("1970-01-01t00:00:00.000000001z"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(1))
        );
        for bad in [
            "",
            "2000-02-30T00:00:00Z",
            "2001-02-29T00:00:00Z",
            "2000-13-01T00:00:00Z",
            "2000-01-01T24:00:00Z",
            "2000-01-01T00:00:00",
            "2000-01-01T00:00:00.Z",
            "2000-01-01 00:00:00+0100",
            "1969-12-31T23:59:59Z",
            "２000-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
