//! Time as the engine sees it: a unix instant plus the local UTC offset of the validator's
//! clock. The clock is always an input: the same events give the same decisions.

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// Longest RFC 3339 text of a [`Timestamp`], bytes: `YYYY-MM-DDThh:mm:ss+hh:mm` (25), or the
/// unix seconds (at most 20) when the year is outside RFC 3339's 0000..9999.
pub const RFC3339_BYTES_MAX: usize = 25;

/// An instant with the offset of local time (China Standard Time is +08:00).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamp {
    pub unix_s: i64,
    pub utc_offset_s: i32,
}

/// The current time of the validator's system clock, with its local offset: the one place a
/// running validator reads the clock (tests and replay pass theirs in).
pub fn system_now(utc_offset_s: i32) -> Timestamp {
    let unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    Timestamp {
        unix_s,
        utc_offset_s,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("time must be RFC 3339 with an offset, like 2026-11-28T08:00:05+08:00: {0}")]
pub struct TimeError(String);

impl Timestamp {
    pub fn parse_rfc3339(s: &str) -> Result<Self, TimeError> {
        let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|e| TimeError(e.to_string()))?;
        Ok(Timestamp {
            unix_s: t.unix_timestamp(),
            utc_offset_s: t.offset().whole_seconds(),
        })
    }

    fn local(&self) -> OffsetDateTime {
        let off = UtcOffset::from_whole_seconds(self.utc_offset_s).unwrap_or(UtcOffset::UTC);
        OffsetDateTime::from_unix_timestamp(self.unix_s)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
            .to_offset(off)
    }

    /// The local calendar date as YYYYMMDD.
    /// Seconds since local midnight (in the offset of the timestamp), 0..86_400.
    pub fn local_second_of_day(&self) -> u32 {
        (self.unix_s + i64::from(self.utc_offset_s)).rem_euclid(86_400) as u32
    }

    /// ISO weekday of the local date: 1 Monday .. 7 Sunday (1970-01-01 was a Thursday).
    pub fn local_iso_weekday(&self) -> u8 {
        let days = (self.unix_s + i64::from(self.utc_offset_s)).div_euclid(86_400);
        ((days + 3).rem_euclid(7) + 1) as u8
    }

    pub fn local_ymd(&self) -> u32 {
        let t = self.local();
        (t.year() as u32) * 10_000 + (t.month() as u32) * 100 + u32::from(t.day())
    }

    /// Local date-time as 7 BCD bytes YYYYMMDDhhmmss, as the card and PSAM take it.
    pub fn local_bcd(&self) -> [u8; 7] {
        let t = self.local();
        let bcd = |v: u32| (((v / 10) % 10) << 4 | (v % 10)) as u8;
        let y = t.year() as u32;
        [
            bcd(y / 100),
            bcd(y % 100),
            bcd(t.month() as u32),
            bcd(u32::from(t.day())),
            bcd(u32::from(t.hour())),
            bcd(u32::from(t.minute())),
            bcd(u32::from(t.second())),
        ]
    }

    /// What [`Timestamp::to_rfc3339`] returns, written to `out` without allocating (the
    /// validator's decision line): at most [`RFC3339_BYTES_MAX`] bytes.
    pub fn write_rfc3339(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let mut buf = [0u8; RFC3339_BYTES_MAX];
        let mut cursor = &mut buf[..];
        match self.local().format_into(&mut cursor, &Rfc3339) {
            Ok(n) => out.write_all(&buf[..n]),
            Err(_) => write!(out, "{}", self.unix_s),
        }
    }

    pub fn to_rfc3339(&self) -> String {
        self.local()
            .format(&Rfc3339)
            .unwrap_or_else(|_| self.unix_s.to_string())
    }

    pub fn plus_s(&self, s: i64) -> Self {
        Timestamp {
            unix_s: self.unix_s + s,
            ..*self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_date_follows_the_offset() {
        let t = Timestamp::parse_rfc3339("2026-11-28T00:30:00+08:00").unwrap();
        assert_eq!(t.local_ymd(), 2026_11_28);
        assert_eq!(t.local_bcd(), [0x20, 0x26, 0x11, 0x28, 0x00, 0x30, 0x00]);
        assert_eq!(t.to_rfc3339(), "2026-11-28T00:30:00+08:00");
        assert!(Timestamp::parse_rfc3339("2026-11-28 00:30").is_err());
    }
}
