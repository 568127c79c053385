//! `fare-validator fares import-gtfs DIR`: the GTFS-Fares v2 reference's worked example of a
//! route-based bus fare with free transfers (TransLink's buses, rebuilt as
//! fixtures/gtfs/translink: a bus network of two routes, a flat fare of 3.20 CAD on a
//! contactless bank card or cash and 2.60 CAD on the Compass transit card, a concession
//! category, transfers between buses free for 90 minutes from one boarding to the next,
//! duration type 1), imported and then charged by the engine as the example publishes; and a
//! malformed feed refused with its file and line.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use fare_validator::fare::gtfs::{import_dir, GtfsError};
use fare_validator::replay::ReplayOptions;
use serde_json::Value;

/// Adult card, 5000 fen (fixtures/concessions/cards.json).
const ADULT: &str = "37144530000000000016";

fn translink() -> std::path::PathBuf {
    fixture("gtfs/translink")
}

/// The imported table written to `dir`; the boardings `(local time, route)` on 2026-11-28
/// charged by it.
fn fares_under_import(dir: &Path, boardings: &[(&str, u16)]) -> Vec<u64> {
    let import = import_dir(&translink()).unwrap();
    let path = dir.join("fares.toml");
    std::fs::write(&path, toml::to_string(&import.table).unwrap()).unwrap();
    let mut events = Vec::new();
    for (at, route) in boardings {
        let at = format!("2026-11-28T{at}+08:00");
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
        .map(|l: &Value| l["fare_fen"].as_u64().unwrap())
        .collect()
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
    let said = import.not_expressed.join("\n");
    for what in [
        "fare_leg_rules.txt line 3: from_area_id, to_area_id",
        "rider_categories.txt line 3: \"concession\"",
        "route_networks.txt line 4",
        "timeframes.txt",
    ] {
        assert!(said.contains(what), "{what} not in {said}");
    }
}

#[test]
fn translink_bus_example_charges_the_published_fares_and_transfers_free_for_90_minutes() {
    let dir = tempfile::tempdir().unwrap();
    // 2.60 a boarding; the next bus within 5400 s from the first boarding is free.
    assert_eq!(
        fares_under_import(dir.path(), &[("08:00:00", 10232), ("09:30:00", 11201)]),
        [260, 0]
    );
    assert_eq!(
        fares_under_import(dir.path(), &[("08:00:00", 10232), ("09:30:01", 11201)]),
        [260, 260]
    );
    // Unlimited transfers (transfer_count -1): each within 90 minutes of the one before.
    assert_eq!(
        fares_under_import(
            dir.path(),
            &[
                ("08:00:00", 10232),
                ("08:30:00", 11201),
                ("09:00:00", 10232)
            ]
        ),
        [260, 0, 0]
    );
}

fn copy_feed(to: &Path) {
    for e in std::fs::read_dir(translink()).unwrap() {
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
