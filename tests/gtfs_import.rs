//! `fare-validator fares import-gtfs DIR`: the worked examples published with the GTFS-Fares
//! v2 reference, rebuilt as feeds under fixtures/gtfs/ (each folder's README.md says where its
//! example is published), imported and then charged by the engine as the examples publish;
//! what the table cannot express reported with its file and line; and a malformed feed
//! refused with its file and line.
//!
//! - translink: TransLink's buses, a network of two routes, a flat fare of 3.20 CAD on a
//!   contactless bank card or cash and 2.60 CAD on the Compass transit card, a concession
//!   category, transfers between buses free for 90 minutes (duration type 1);
//! - maryland-core: one network, a one-way fare and three passes, unlimited transfers free
//!   for 90 minutes;
//! - muni-media, clean-air-express: a price by fare medium;
//! - wmata-time: fares by time of day and day of week (timeframes.txt, calendar.txt);
//! - orca-transfers: three networks, transfers paying the difference to the dearer fare;
//! - septa-key: two transfers within two hours, legs joined at stations;
//! - bart-zones: fares by origin and destination zone, which a bus validator cannot apply.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use fare_validator::fare::gtfs::{import_dir, GtfsError, Import};
use fare_validator::fare::{FareTable, LocalTime};
use fare_validator::replay::ReplayOptions;
use fare_validator::types::RiderCategory;
use serde_json::Value;

/// Adult card, 5000 fen (fixtures/concessions/cards.json).
const ADULT: &str = "37144530000000000016";

fn feed(name: &str) -> PathBuf {
    fixture(&format!("gtfs/{name}"))
}

fn translink() -> PathBuf {
    feed("translink")
}

fn import(name: &str) -> Import {
    import_dir(&feed(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// What the adult card pays for each boarding `(local time, route)` under the table imported
/// from `name`: the table written out as TOML and read back by replay, as a bus would.
fn fares_of(name: &str, boardings: &[(&str, u16)]) -> Vec<u64> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fares.toml");
    std::fs::write(&path, toml::to_string(&import(name).table).unwrap()).unwrap();
    let mut events = Vec::new();
    for (at, route) in boardings {
        events.push(format!(r#"{{"at": "{at}", "route": {route}}}"#));
        events.push(format!(r#"{{"at": "{at}", "card_no": "{ADULT}"}}"#));
    }
    let o = ReplayOptions {
        cards: fixture("concessions/cards.json"),
        fares: Some(path),
        route: 1,
        ..ReplayOptions::default()
    };
    replay_with(&o, &events)
        .iter()
        .map(|l: &Value| {
            l["fare_fen"]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}: no fare in {l}"))
        })
        .collect()
}

/// The boardings `(local time, route)` on Saturday 2026-11-28, UTC+8.
fn translink_fares(boardings: &[(&str, u16)]) -> Vec<u64> {
    let at: Vec<(String, u16)> = boardings
        .iter()
        .map(|(t, r)| (format!("2026-11-28T{t}+08:00"), *r))
        .collect();
    let at: Vec<(&str, u16)> = at.iter().map(|(t, r)| (t.as_str(), *r)).collect();
    fares_of("translink", &at)
}

fn assert_said(import_notes: &[String], what: &[&str]) {
    let said = import_notes.join("\n");
    for w in what {
        assert!(said.contains(w), "{w:?} not in:\n{said}");
    }
}

#[test]
fn translink_bus_example_imports_as_a_network_with_its_transit_card_fare_and_free_transfers() {
    let import = import_dir(&translink()).unwrap();
    let t = &import.table;
    assert_eq!(t.networks.len(), 1);
    assert_eq!(t.networks[0].network, "translink_bus");
    assert_eq!(t.networks[0].routes, [10232, 11201]);
    // The Compass Card (a transit card, fare_media_type 2) pays 2.60 CAD.
    assert_eq!(t.networks[0].base_fare_fen, Some(260));
    assert_eq!(t.transfer_rules.len(), 1);
    let r = &t.transfer_rules[0];
    assert_eq!(
        (
            r.from_network.as_deref(),
            r.to_network.as_deref(),
            r.duration_s,
            r.transfer_count,
            r.fare_fen
        ),
        (
            Some("translink_bus"),
            Some("translink_bus"),
            5400,
            None,
            Some(0)
        )
    );
    // What a bus validator cannot carry is said, with its file and line.
    assert_said(
        &import.not_expressed,
        &[
            "fare_leg_rules.txt line 3: from_area_id, to_area_id",
            "rider_categories.txt line 3: \"concession\"",
            "route_networks.txt line 4",
            "timeframes.txt line 2: service_id \"weekday_service\" is in no calendar.txt",
        ],
    );
}

#[test]
fn translink_bus_example_charges_the_published_fares_and_transfers_free_for_90_minutes() {
    // 2.60 a boarding; the next bus within 5400 s from the first boarding is free.
    assert_eq!(
        translink_fares(&[("08:00:00", 10232), ("09:30:00", 11201)]),
        [260, 0]
    );
    assert_eq!(
        translink_fares(&[("08:00:00", 10232), ("09:30:01", 11201)]),
        [260, 260]
    );
    // Unlimited transfers (transfer_count -1): each within 90 minutes of the one before.
    assert_eq!(
        translink_fares(&[
            ("08:00:00", 10232),
            ("08:30:00", 11201),
            ("09:00:00", 10232)
        ]),
        [260, 0, 0]
    );
}

fn copy_feed(to: &Path) {
    copy_feed_of("translink", to)
}

fn copy_feed_of(name: &str, to: &Path) {
    for e in std::fs::read_dir(feed(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn edit(dir: &Path, file: &str, from: &str, to: &str) {
    let p = dir.join(file);
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains(from));
    std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn a_malformed_feed_is_refused_with_its_file_and_line() {
    for (file, from, to, want) in [
        (
            "fare_products.txt",
            "2.60",
            "\"2,60\"",
            "fare_products.txt line 4",
        ),
        (
            "fare_products.txt",
            "2.60,CAD",
            "2.60",
            "fare_products.txt line 4",
        ),
        (
            "fare_leg_rules.txt",
            "translink_bus",
            "night_bus",
            "fare_leg_rules.txt line 2",
        ),
        (
            "fare_transfer_rules.txt",
            ",1,0,",
            ",1,7,",
            "fare_transfer_rules.txt line 2",
        ),
        (
            "fare_transfer_rules.txt",
            "-1,5400",
            "0,5400",
            "fare_transfer_rules.txt line 2",
        ),
        (
            "fare_media.txt",
            "compass_card,Compass Card,2",
            "compass_card,Compass Card,two",
            "fare_media.txt line 4",
        ),
        (
            "route_networks.txt",
            "translink_bus,11201",
            "metro,11201",
            "route_networks.txt line 3",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        copy_feed(dir.path());
        edit(dir.path(), file, from, to);
        let err = import_dir(dir.path()).unwrap_err();
        assert!(
            matches!(err, GtfsError::Malformed { .. }) && err.to_string().contains(want),
            "{file} {to}: {err}"
        );
        let out = Command::new(env!("CARGO_BIN_EXE_fare-validator"))
            .args(["fares", "import-gtfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(out.stdout.is_empty());
        assert!(String::from_utf8_lossy(&out.stderr).contains(want));
    }
}

#[test]
fn a_feed_without_fare_products_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    copy_feed(dir.path());
    std::fs::remove_file(dir.path().join("fare_products.txt")).unwrap();
    let err = import_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("fare_products.txt"), "{err}");
}

#[test]
fn the_command_prints_a_table_the_validator_reads_and_what_it_cannot_express() {
    let out = Command::new(env!("CARGO_BIN_EXE_fare-validator"))
        .args(["fares", "import-gtfs"])
        .arg(translink())
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    let t = fare_validator::fare::FareTable::from_toml(&table).unwrap();
    assert_eq!(t.base_fare_on(10232), 260);
    // Sections the feed does not use are not written, so the table asks no more of a bus's
    // fare table reader than it needs.
    assert!(!table.contains("several_riders"), "{table}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not expressed: "));
}

#[test]
fn maryland_core_example_charges_the_one_way_fare_with_unlimited_free_transfers_for_90_minutes() {
    let import = import("maryland-core");
    let t = &import.table;
    assert_eq!(t.networks.len(), 1);
    assert_eq!(
        (t.networks[0].network.as_str(), t.networks[0].base_fare_fen),
        ("core", Some(200))
    );
    // A product for no rider category is every rider's: each card type pays the fare.
    for c in RiderCategory::ALL {
        assert_eq!(t.percent(c), 100, "{c:?}");
    }
    // The passes are products a bus does not sell: said, one line each.
    for line in [3, 4, 5] {
        assert_said(
            &import.not_expressed,
            &[&format!(
                "fare_leg_rules.txt line {line}: a second product for network \"core\""
            )],
        );
    }
    let day = |t: &str| format!("2026-11-30T{t}-05:00");
    let (a, b, c, d) = (
        day("08:00:00"),
        day("09:30:00"),
        day("10:59:59"),
        day("12:30:01"),
    );
    // Unlimited transfers (transfer_count -1), each within 5400 s of the boarding before.
    assert_eq!(
        fares_of("maryland-core", &[(&a, 16), (&b, 22), (&c, 51), (&d, 16)]),
        [200, 0, 0, 200]
    );
    let e = day("09:30:01");
    assert_eq!(fares_of("maryland-core", &[(&a, 16), (&e, 22)]), [200, 200]);
}

#[test]
fn muni_example_charges_the_clipper_card_price_not_cash_and_reports_the_other_media() {
    let import = import("muni-media");
    assert_eq!(import.table.base_fare_fen, 250);
    assert_said(
        &import.not_expressed,
        &["fare_products.txt: 1 products for media other than a transit card"],
    );
    // No transfer rule in the feed: a second route ten minutes later pays in full.
    assert_eq!(
        fares_of(
            "muni-media",
            &[
                ("2026-11-30T08:00:00-08:00", 5),
                ("2026-11-30T08:10:00-08:00", 6)
            ]
        ),
        [250, 250]
    );
}

#[test]
fn clean_air_express_example_charges_the_fare_of_unknown_media_to_a_transit_card() {
    // $6 tapping a contactless bank card, $7 otherwise: a transit card is not the former.
    let import = import("clean-air-express");
    assert_eq!(import.table.base_fare_fen, 700);
    assert_said(
        &import.not_expressed,
        &["1 products for media other than a transit card"],
    );
    assert_eq!(
        fares_of("clean-air-express", &[("2026-11-30T07:00:00-08:00", 3)]),
        [700]
    );
}

fn local(rfc3339: &str) -> LocalTime {
    LocalTime::of(&fare_validator::clock::Timestamp::parse_rfc3339(rfc3339).unwrap())
}

#[test]
fn wmata_time_example_charges_peak_off_peak_late_night_and_weekend_fares_at_both_edges() {
    let import = import("wmata-time");
    let t: &FareTable = &import.table;
    // The dearest fare is the network's base fare; the others are whole percentages of it.
    assert_eq!(t.base_fare_on(901), 500);
    let adult = |at: &str| t.category_fare_at(RiderCategory::Adult, 901, local(at));
    // Monday 2026-11-30, Washington's winter offset.
    let monday = |hms: &str| adult(&format!("2026-11-30T{hms}-05:00"));
    for (hms, fen) in [
        ("00:00:00", 200),
        ("04:59:59", 200),
        ("05:00:00", 500),
        ("07:30:00", 500),
        ("09:29:59", 500),
        ("09:30:00", 300),
        ("11:30:00", 300),
        ("14:59:59", 300),
        ("15:00:00", 500),
        ("18:59:59", 500),
        ("19:00:00", 300),
        ("21:29:59", 300),
        ("21:30:00", 200),
        ("23:59:59", 200),
    ] {
        assert_eq!(monday(hms), fen, "Monday {hms}");
    }
    for at in [
        "2026-11-28T00:00:00-05:00",
        "2026-11-28T08:00:00-05:00",
        "2026-11-29T17:00:00-05:00",
        "2026-11-29T23:59:59-05:00",
    ] {
        assert_eq!(adult(at), 200, "weekend {at}");
    }
    // Every card type: the products are for any rider category.
    assert_eq!(
        t.category_fare_at(
            RiderCategory::Student,
            902,
            local("2026-11-30T11:30:00-05:00")
        ),
        300
    );
    // The example's two riders: 7:30 AM pays the peak fare, 11:30 AM the off-peak one.
    assert_eq!(
        fares_of(
            "wmata-time",
            &[
                ("2026-11-30T07:30:00-05:00", 901),
                ("2026-11-30T11:30:00-05:00", 902)
            ]
        ),
        [500, 300]
    );
    // The service dates do not fit the table: said.
    assert_said(
        &import.not_expressed,
        &["calendar.txt line 2: service \"weekday_service\" runs from 20220708 to 20221231"],
    );
}

#[test]
fn a_timeframe_that_is_not_whole_minutes_or_has_no_calendar_is_reported_and_left_out() {
    let dir = tempfile::tempdir().unwrap();
    copy_feed_of("wmata-time", dir.path());
    edit(
        dir.path(),
        "timeframes.txt",
        "9:30:00,weekday",
        "9:30:30,weekday",
    );
    edit(
        dir.path(),
        "timeframes.txt",
        ",,,sunday_service",
        ",,,holiday_service",
    );
    let import = import_dir(dir.path()).unwrap();
    assert_said(
        &import.not_expressed,
        &[
            "timeframes.txt line 2: a time that is not a whole minute: left out",
            "timeframes.txt line 9: service_id \"holiday_service\" is in no calendar.txt",
        ],
    );
    // Sunday has no timeframe left: the base (peak) fare; Saturday keeps the weekend fare.
    let t = &import.table;
    let adult = |at: &str| t.category_fare_at(RiderCategory::Adult, 901, local(at));
    assert_eq!(adult("2026-11-29T12:00:00-05:00"), 500);
    assert_eq!(adult("2026-11-28T12:00:00-05:00"), 200);
    // A time that is no time is a malformed feed.
    edit(dir.path(), "timeframes.txt", "15:00:00,19", "15:00,19");
    let err = import_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("timeframes.txt line 4"), "{err}");
}

#[test]
fn orca_example_transfers_pay_the_difference_up_to_the_dearer_fare_for_an_hour() {
    let import = import("orca-transfers");
    assert_eq!(import.table.transfer_rules.len(), 6);
    let at = |m: u32, s: u32| format!("2026-11-30T08:{m:02}:{s:02}-08:00");
    let (t0, t20, t40) = (at(0, 0), at(20, 0), at(40, 0));
    // KCM then light rail: 2.75 + 0.25, the light rail's 3.00.
    assert_eq!(
        fares_of("orca-transfers", &[(&t0, 7), (&t20, 1)]),
        [275, 25]
    );
    // Light rail then KCM: 3.00 + 0.
    assert_eq!(
        fares_of("orca-transfers", &[(&t0, 2), (&t20, 40)]),
        [300, 0]
    );
    // Community Transit then light rail: 2.50 + 0.50; then KCM: + 0.
    assert_eq!(
        fares_of("orca-transfers", &[(&t0, 201), (&t20, 1), (&t40, 7)]),
        [250, 50, 0]
    );
    // Community Transit then KCM: 2.50 + 0.25; KCM then Community Transit: 2.75 + 0.
    assert_eq!(
        fares_of("orca-transfers", &[(&t0, 202), (&t20, 40)]),
        [250, 25]
    );
    assert_eq!(
        fares_of("orca-transfers", &[(&t0, 7), (&t20, 201)]),
        [275, 0]
    );
    // duration_limit 3600 from one boarding to the next, inclusive.
    let hour = "2026-11-30T09:00:00-08:00";
    let hour_and_1 = "2026-11-30T09:00:01-08:00";
    assert_eq!(
        fares_of("orca-transfers", &[(&t0, 7), (hour, 1)]),
        [275, 25]
    );
    assert_eq!(
        fares_of("orca-transfers", &[(&t0, 7), (hour_and_1, 1)]),
        [275, 300]
    );
    // The example's journey KCM, Community Transit, light rail: published 3.00 with
    // nonconsecutive transfers (KCM to light rail counted from the first boarding); a card
    // holds its last boarding only, so the bus charges 2.75 + 0 + 0.50 and the import says so.
    assert_eq!(
        fares_of("orca-transfers", &[(&t0, 7), (&t20, 201), (&t40, 1)]),
        [275, 0, 50]
    );
    assert_said(
        &import.not_expressed,
        &["fare_transfer_rules.txt line 2: nonconsecutive_transfers_allowed"],
    );
}

#[test]
fn septa_key_example_covers_two_transfers_in_two_hours_then_a_new_fare() {
    let import = import("septa-key");
    let r = &import.table.transfer_rules[0];
    assert_eq!(
        (r.duration_s, r.transfer_count, r.fare_fen),
        (7200, Some(2), Some(0))
    );
    let at = |hms: &str| format!("2026-11-30T{hms}-05:00");
    let (a, b, c, d) = (
        at("08:00:00"),
        at("09:00:00"),
        at("11:00:00"),
        at("11:30:00"),
    );
    assert_eq!(
        fares_of("septa-key", &[(&a, 17), (&b, 21), (&c, 33), (&d, 17)]),
        [200, 0, 0, 200]
    );
    let late = at("10:00:01");
    assert_eq!(fares_of("septa-key", &[(&a, 17), (&late, 21)]), [200, 200]);
    assert_said(
        &import.not_expressed,
        &[
            "fare_leg_join_rules.txt: not read",
            "fare_transfer_rules.txt: column fare_product_behavior not read",
            "1 products for media other than a transit card",
        ],
    );
}

#[test]
fn bart_zone_example_cannot_be_expressed_and_no_table_is_made() {
    let Err(GtfsError::NothingExpressed { not_expressed }) = import_dir(&feed("bart-zones")) else {
        panic!("a zone-only feed made a table");
    };
    assert_said(
        &not_expressed,
        &[
            "areas.txt: not read",
            "stop_areas.txt: not read",
            "fare_leg_rules.txt line 2: from_area_id, to_area_id not expressible",
            "fare_leg_rules.txt line 3: from_area_id, to_area_id not expressible",
        ],
    );
    let out = Command::new(env!("CARGO_BIN_EXE_fare-validator"))
        .args(["fares", "import-gtfs"])
        .arg(feed("bart-zones"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not expressed: fare_leg_rules.txt line 2"),
        "{err}"
    );
}
