//! Range checks at ingest: what a record may say, given the fare tables the station has
//! published and the time it arrives.
//!
//! A record's CRC and chain MAC prove only that the bus wrote it. A terminal whose
//! software is compromised writes whatever it likes, with a valid checksum: a fare of
//! 4,294,967,295 fen, a tap before 1970 or next year. The station refuses such a record
//! instead of storing it as sent: it is kept apart (the `refused` table, with the reason),
//! counted in the ack's refused count, stored and logged at error as an `out_of_range`
//! finding ([`super::integrity`]), listed per journal in the report
//! and on the manager's page, and never counted in a fare total. Its seq is accounted for,
//! so the bus's cursor moves on and the rest of its day goes up.
//!
//! | field | refused when |
//! | --- | --- |
//! | at | before [`RECORD_AT_UNIX_S_MIN`], or more than [`RECORD_AHEAD_OF_UPLOAD_S_MAX`] after the station's clock when it arrives |
//! | UTC offset | outside −12:00..=+14:00 ([`UTC_OFFSET_MIN_MIN`]..=[`UTC_OFFSET_MIN_MAX`]) |
//! | fare | above the highest fare any fare table in force could charge on the record's route (its base fare there: every percentage is at most 100) |
//! | ride code generated_at | more than [`RIDE_CODE_AHEAD_OF_SCAN_S_MAX`] after the scan, or more than [`RIDE_CODE_AGE_AT_SCAN_S_MAX`] before it |
//!
//! The fare tables "in force" are the embedded default policy (a bus before its first fare
//! download) and every table the station has published (a bus that has not been home since
//! a change still charges by the one before). Kind, category, balance range, seq and card
//! number are checked by [`crate::journal::Record::decode`] already.

use crate::fare::FareTable;
use crate::journal::Record;
use crate::types::Fen;

/// No validator of this system recorded a tap before 2020-01-01T00:00:00Z.
pub const RECORD_AT_UNIX_S_MIN: i64 = 1_577_836_800;
/// How far a record's time may be ahead of the station's clock when it arrives, seconds: a
/// bus clock set by hand drifts minutes, not hours.
pub const RECORD_AHEAD_OF_UPLOAD_S_MAX: i64 = 3_600;
/// Westernmost UTC offset, minutes (UTC−12:00).
pub const UTC_OFFSET_MIN_MIN: i16 = -720;
/// Easternmost UTC offset, minutes (UTC+14:00).
pub const UTC_OFFSET_MIN_MAX: i16 = 840;
/// How far a ride code's generated_at may be after the scan, seconds (a phone's clock ahead;
/// the bus itself allows 30 s by default, ride-code-v1.md check 9).
pub const RIDE_CODE_AHEAD_OF_SCAN_S_MAX: i64 = 600;
/// How old a ride code may be when scanned, seconds (the bus allows 60 s by default, check
/// 10; a deployment may configure more, never an hour).
pub const RIDE_CODE_AGE_AT_SCAN_S_MAX: i64 = 3_600;

/// The highest fare any fare table in force charges on each route: a route's own base fare
/// (or its network's) where a table gives one, else the table's base fare, the maximum over
/// every table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FareCeilings {
    /// Highest base fare of any table on a route no table lists.
    other_fen: Fen,
    /// Routes some table lists: (route, highest fare there), sorted by route.
    routes: Vec<(u16, Fen)>,
}

impl FareCeilings {
    /// The ceilings of `tables` (the default policy is always one of them).
    pub fn of(published: &[FareTable]) -> FareCeilings {
        let default = FareTable::default_policy();
        let tables: Vec<&FareTable> = std::iter::once(&default).chain(published).collect();
        let other_fen = tables.iter().map(|t| t.base_fare_fen).max().unwrap_or(0);
        let mut routes: Vec<u16> = tables.iter().flat_map(|t| t.priced_routes()).collect();
        routes.sort_unstable();
        routes.dedup();
        let routes = routes
            .into_iter()
            .map(|route| {
                let fen = tables
                    .iter()
                    .map(|t| t.base_fare_on(route))
                    .max()
                    .unwrap_or(0);
                (route, fen)
            })
            .collect();
        FareCeilings { other_fen, routes }
    }

    /// The highest fare a boarding on `route` can be charged.
    pub fn on(&self, route: u16) -> Fen {
        self.routes
            .binary_search_by_key(&route, |(r, _)| *r)
            .map_or(self.other_fen, |i| self.routes[i].1)
    }
}

/// Why a record is refused at ingest, or `Ok` when every field is within range. `now_unix_s`
/// is the station's clock when the record arrived.
pub fn check_record(
    rec: &Record,
    ceilings: &FareCeilings,
    now_unix_s: i64,
) -> Result<(), &'static str> {
    if rec.at_unix_s < RECORD_AT_UNIX_S_MIN {
        return Err("time before 2020-01-01");
    }
    if rec.at_unix_s > now_unix_s.saturating_add(RECORD_AHEAD_OF_UPLOAD_S_MAX) {
        return Err("time ahead of the station's clock");
    }
    if !(UTC_OFFSET_MIN_MIN..=UTC_OFFSET_MIN_MAX).contains(&rec.utc_offset_min) {
        return Err("UTC offset out of range");
    }
    if rec.fare_fen > ceilings.on(rec.route) {
        return Err("fare above any fare table's fare on the route");
    }
    if let Some(q) = rec.qr {
        let generated_at = i64::from(q.generated_at);
        if generated_at > rec.at_unix_s + RIDE_CODE_AHEAD_OF_SCAN_S_MAX {
            return Err("ride code generated after the scan");
        }
        if generated_at < rec.at_unix_s - RIDE_CODE_AGE_AT_SCAN_S_MAX {
            return Err("ride code older than any validity at the scan");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{CardTx, QrTx, RecordKind};
    use crate::types::{AccountId, CardNo, RiderCategory};

    const NOW: i64 = 1_795_824_000;

    fn record(fare_fen: Fen, at_unix_s: i64) -> Record {
        Record {
            seq: 1,
            kind: RecordKind::CardPurchase,
            at_unix_s,
            utc_offset_min: 480,
            route: 7,
            category: RiderCategory::Adult,
            fare_fen,
            balance_fen: Some(100),
            card_no: CardNo::from_u128(37_140_000_000_000_000_001).unwrap(),
            card_tx: CardTx::default(),
            qr: None,
            quickpass: None,
            terminal_no: [0; 6],
            rule: crate::fare::FareRule::Unknown,
        }
    }

    fn express_table() -> FareTable {
        let mut t = FareTable::default_policy();
        t.routes.push(crate::fare::RouteFare {
            route: 9,
            base_fare_fen: 500,
        });
        t.checked().unwrap()
    }

    #[test]
    fn fare_ceiling_is_the_highest_table_fare_on_the_route() {
        let c = FareCeilings::of(&[express_table()]);
        assert_eq!(c.on(9), 500);
        assert_eq!(c.on(7), FareTable::default_policy().base_fare_fen);
        let ok = record(200, NOW);
        assert_eq!(check_record(&ok, &c, NOW), Ok(()));
        let express = Record {
            route: 9,
            ..record(500, NOW)
        };
        assert_eq!(check_record(&express, &c, NOW), Ok(()));
        assert!(check_record(&record(201, NOW), &c, NOW).is_err());
        assert!(check_record(&record(u32::MAX, NOW), &c, NOW).is_err());
    }

    #[test]
    fn times_outside_the_systems_life_are_refused() {
        let c = FareCeilings::of(&[]);
        assert!(check_record(&record(200, 0), &c, NOW).is_err());
        assert!(check_record(&record(200, -86_400), &c, NOW).is_err());
        assert!(check_record(&record(200, NOW + 86_400 * 365), &c, NOW).is_err());
        let edge = NOW + RECORD_AHEAD_OF_UPLOAD_S_MAX;
        assert_eq!(check_record(&record(200, edge), &c, NOW), Ok(()));
        assert!(check_record(&record(200, edge + 1), &c, NOW).is_err());
        let offset = Record {
            utc_offset_min: 900,
            ..record(200, NOW)
        };
        assert!(check_record(&offset, &c, NOW).is_err());
    }

    #[test]
    fn ride_code_generated_far_from_its_scan_is_refused() {
        let c = FareCeilings::of(&[]);
        let qr = |generated_at: i64| Record {
            kind: RecordKind::QrRide,
            balance_fen: None,
            qr: Some(QrTx {
                account: AccountId {
                    channel: 2,
                    account: 1,
                },
                counter: 1,
                generated_at: generated_at as u32,
                cert_ref: None,
            }),
            ..record(200, NOW)
        };
        assert_eq!(check_record(&qr(NOW - 5), &c, NOW), Ok(()));
        assert!(check_record(&qr(NOW + RIDE_CODE_AHEAD_OF_SCAN_S_MAX + 1), &c, NOW).is_err());
        assert!(check_record(&qr(NOW - RIDE_CODE_AGE_AT_SCAN_S_MAX - 1), &c, NOW).is_err());
    }
}
