//! Revenue by fare rule at the depot: a day of taps priced by every rule kind of
//! `fixtures/fares-every-rule.toml` (base, route and network fares, a concession, a
//! timeframe, a free ride, the interop fare, a transfer, several riders on one card, a ride
//! code), recorded by an in-process validator, uploaded to a station on loopback: each
//! record names its rule, the station keeps it, and `depot report`'s `fare_fen_by_rule`
//! adds up to the fares charged, rule by rule.

mod common;
mod depot_support;

use std::collections::BTreeMap;

use depot_support::*;
use fare_validator::card::sim::{CardSpec, SimCard, TestKeys};
use fare_validator::clock::Timestamp;
use fare_validator::depot::Store;
use fare_validator::fare::FareRule;
use fare_validator::journal;
use fare_validator::ride_code::issuer::SimChannels;
use fare_validator::ride_code::{ChannelKeys, RideCodeConfig};
use fare_validator::types::RiderCategory;
use fare_validator::upload;

fn card(n: u32, card_type: RiderCategory, city: Option<&str>) -> CardSpec {
    CardSpec {
        issuer_city: city.map(|c| c.parse().unwrap()),
        ..CardSpec::new(
            format!("371400000000000000{n:02}").parse().unwrap(),
            card_type,
            100_000,
        )
    }
}

/// Friday 2026-11-27, local time `hms`.
fn at(hms: &str) -> Timestamp {
    Timestamp::parse_rfc3339(&format!("2026-11-27T{hms}+08:00")).unwrap()
}

/// Taps and a scan in `dir`'s journal: (fare charged, the rule expected) of each.
fn service_day(dir: &std::path::Path) -> Vec<(u32, FareRule)> {
    let keys = TestKeys::default();
    let mut v = common::sim_validator_with_fares(dir, keys, common::every_rule_fares());
    use FareRule as R;
    use RiderCategory::{Adult, Senior, Student};
    // (card, route, time, fare, rule)
    let taps = [
        (card(1, Adult, None), 4, "10:00:00", 200, R::BaseFare),
        (card(2, Adult, None), 5, "10:00:00", 300, R::RouteFare),
        (card(3, Adult, None), 6, "10:00:00", 300, R::NetworkFare),
        (card(4, Student, None), 4, "10:00:00", 100, R::Concession),
        (card(5, Senior, None), 4, "07:30:00", 200, R::Timeframe),
        (card(6, Senior, None), 4, "10:00:00", 0, R::Free),
        (
            card(7, Student, Some("1000")),
            4,
            "10:00:00",
            180,
            R::Interop,
        ),
        (card(8, Adult, None), 1, "10:00:00", 200, R::BaseFare),
        (card(8, Adult, None), 2, "10:10:00", 100, R::Transfer),
        // Card 1 again within its group's 30 s: a second rider on one card.
        (card(1, Adult, None), 4, "10:00:05", 200, R::SeveralRiders),
    ];
    let mut cards: BTreeMap<String, SimCard> = BTreeMap::new();
    let mut out = Vec::new();
    for (spec, route, hms, fare_fen, rule) in taps {
        let sim = cards
            .entry(spec.card_no.to_string())
            .or_insert_with(|| SimCard::new(&spec, &keys, 1).unwrap());
        sim.enter_field(None);
        v.set_route(route);
        let d = v.tap_card(sim, at(hms));
        assert!(d.accepted(), "{rule:?}: {d:?}");
        assert_eq!(d.fare_fen, fare_fen, "{rule:?}");
        out.push((fare_fen, rule));
    }
    let now = at("11:00:00");
    let t0 = now.unix_s as u32;
    let mut channels = SimChannels::new(5, (t0 - 86_400, t0 + 86_400 * 30));
    v.set_ride_code_keys(
        ChannelKeys::from_file(&channels.key_file()).unwrap(),
        RideCodeConfig::default(),
    );
    let code = channels
        .issue(
            1,
            42,
            "37140000000000009001".parse().unwrap(),
            Adult,
            t0 - 2,
            1,
        )
        .unwrap();
    v.set_route(4);
    let d = v.scan_code(&code, now);
    assert!(d.accepted(), "{d:?}");
    out.push((d.fare_fen, R::RideCodeCategory));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_of_every_rule_uploaded_reports_its_fares_by_rule() {
    let tmp = tempfile::tempdir().unwrap();
    let bus = tmp.path().join("bus");
    let charged = service_day(&bus);
    let mut expected: BTreeMap<FareRule, u64> = BTreeMap::new();
    for (fare_fen, rule) in &charged {
        *expected.entry(*rule).or_default() += u64::from(*fare_fen);
    }
    let kinds: Vec<FareRule> = expected.keys().copied().collect();
    assert_eq!(
        kinds,
        &FareRule::ALL[1..],
        "every rule kind but unknown is tapped"
    );

    // The records themselves say so, in tap order.
    let records = journal::scan(&bus).unwrap().records;
    let rules: Vec<(u32, FareRule)> = records.iter().map(|r| (r.fare_fen, r.rule)).collect();
    assert_eq!(rules, charged);

    let db = tmp.path().join("depot.db");
    // The station knows the table the bus charged by: its fares are under its ceilings.
    store(&db, 1)
        .publish("fares", include_bytes!("../fixtures/fares-every-rule.toml"))
        .unwrap();
    let st = station(Store::open(&db).unwrap()).await;
    let up = upload::upload(&bus, st.addr(), &terminal_id(0), &secret(0))
        .await
        .unwrap();
    st.shutdown().await;
    assert_eq!(
        (up.uploaded, up.records_refused),
        (charged.len() as u64, 0),
        "{up:?}"
    );

    let report = Store::open(&db).unwrap().report().unwrap();
    let t = &report.terminals[&terminal_id(0)];
    assert_eq!(t.fare_fen_by_rule, expected);
    assert_eq!(report.fare_fen_by_rule, expected);
    let total: u64 = charged.iter().map(|(f, _)| u64::from(*f)).sum();
    assert_eq!(
        (t.fare_fen, t.fare_fen_by_rule.values().sum::<u64>()),
        (total, total)
    );

    // JSON by rule name, and the text table.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["fare_fen_by_rule"]["transfer"], 100);
    assert_eq!(json["fare_fen_by_rule"]["free"], 0);
    assert_eq!(
        json["terminals"][terminal_id(0)]["fare_fen_by_rule"]["several_riders"],
        200
    );
    let text = fare_validator::cli::depot::report_text(&report);
    assert!(text.contains("interop") && text.contains("1.80"), "{text}");

    // The manager's page, by rule too.
    let html = fare_validator::depot::page::render(
        &fare_validator::depot::page::DayView::from_store(&Store::open(&db).unwrap()).unwrap(),
        "depot.db",
    );
    assert!(html.contains("id=\"by-rule\"") && html.contains("data-rule=\"interop\""));
    let day = fare_validator::depot::page::DayView::from_store(&Store::open(&db).unwrap()).unwrap();
    assert_eq!(day.revenue_by_rule_fen, expected);
}
