//! Ride codes under the fare rules (`fixtures/fares-every-rule.toml`): a code pays its
//! certificate's rider category, by the timeframes at both edges of their hours and days and
//! on the route's own base fare or its network's; the interop rules never apply (a code has
//! no issuing city), and the record names the rule `ride_code_category`.

mod common;

use fare_validator::card::sim::TestKeys;
use fare_validator::clock::Timestamp;
use fare_validator::fare::FareRule;
use fare_validator::journal;
use fare_validator::ride_code::issuer::SimChannels;
use fare_validator::ride_code::{ChannelKeys, RideCodeConfig};
use fare_validator::types::RiderCategory;

/// Scan one fresh code per `(local time, route, category)` (each by another holder), in
/// order; the fares charged, and the rules the records name.
fn fares(scans: &[(&str, u16, RiderCategory)]) -> (Vec<u32>, Vec<FareRule>) {
    let dir = tempfile::tempdir().unwrap();
    let mut v = common::sim_validator_with_fares(
        dir.path(),
        TestKeys::default(),
        common::every_rule_fares(),
    );
    let t0 = Timestamp::parse_rfc3339("2026-11-27T00:00:00+08:00")
        .unwrap()
        .unix_s as u32;
    let mut channels = SimChannels::new(5, (t0 - 86_400, t0 + 86_400 * 30));
    v.set_ride_code_keys(
        ChannelKeys::from_file(&channels.key_file()).unwrap(),
        RideCodeConfig::default(),
    );
    let mut out = Vec::new();
    for (i, (at, route, category)) in scans.iter().enumerate() {
        let now = Timestamp::parse_rfc3339(at).unwrap();
        let card_no = format!("371400000000000090{i:02}").parse().unwrap();
        let code = channels
            .issue(
                1,
                100 + i as u64,
                card_no,
                *category,
                now.unix_s as u32 - 2,
                1,
            )
            .unwrap();
        v.set_route(*route);
        let d = v.scan_code(&code, now);
        assert!(d.accepted(), "{at} {route} {category:?}: {d:?}");
        out.push(d.fare_fen);
    }
    drop(v);
    let rules = journal::scan(dir.path())
        .unwrap()
        .records
        .iter()
        .map(|r| r.rule)
        .collect();
    (out, rules)
}

#[test]
fn ride_code_seniors_pay_at_the_peak_only_at_both_edges_of_its_hours_and_days() {
    use RiderCategory::Senior;
    let (fares, rules) = fares(&[
        // Friday 2026-11-27: the peak is 07:00 to 09:00 on weekdays.
        ("2026-11-27T06:59:59+08:00", 4, Senior),
        ("2026-11-27T07:00:00+08:00", 4, Senior),
        ("2026-11-27T08:59:59+08:00", 4, Senior),
        ("2026-11-27T09:00:00+08:00", 4, Senior),
        // Saturday off, Monday on.
        ("2026-11-28T07:30:00+08:00", 4, Senior),
        ("2026-11-30T07:30:00+08:00", 4, Senior),
    ]);
    assert_eq!(fares, [0, 200, 200, 0, 0, 200]);
    assert!(
        rules.iter().all(|r| *r == FareRule::RideCodeCategory),
        "{rules:?}"
    );
}

#[test]
fn ride_code_pays_the_route_s_and_the_network_s_base_fare_by_its_category() {
    use RiderCategory::{Adult, Student};
    let noon = "2026-11-27T12:00:00+08:00";
    let (fares, _) = fares(&[
        (noon, 4, Adult),
        (noon, 5, Adult),
        (noon, 6, Adult),
        (noon, 5, Student),
        (noon, 1, Student),
    ]);
    // Route 5 has its own 300; express route 6 its network's 300; city route 1 the table's.
    assert_eq!(fares, [200, 300, 300, 150, 100]);
}
