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
}
