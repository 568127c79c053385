//! Networks of routes with their own base fare and transfer rules as GTFS-Fares v2 describes
//! them (fixtures/networks/fares.toml: from/to networks, a duration from one boarding to the
//! next, a count of transfers in a row, a discount, a fixed transfer fare or a journey fare),
//! through `replay`, at both edges of every window and count.

mod common;

use common::*;
use fare_validator::depot::checks::FareCeilings;
use fare_validator::fare::FareTable;
use fare_validator::replay::ReplayOptions;
use serde_json::Value;

/// Adult card, 5000 fen (fixtures/concessions/cards.json).
const ADULT: &str = "37144530000000000016";
/// Student card whose concession holds until 2026-11-30.
const STUDENT: &str = "37144530000000000011";

fn opts() -> ReplayOptions {
    ReplayOptions {
        cards: fixture("concessions/cards.json"),
        fares: Some(fixture("networks/fares.toml")),
        route: 1,
        ..ReplayOptions::default()
    }
}

/// Boardings of `card_no` on 2026-11-28: (local time "HH:MM:SS", route); the fares charged.
fn fares(card_no: &str, boardings: &[(&str, u16)]) -> Vec<u64> {
    let mut events = Vec::new();
    for (at, route) in boardings {
        let at = format!("2026-11-28T{at}+08:00");
        events.push(format!(r#"{{"at": "{at}", "route": {route}}}"#));
        events.push(format!(r#"{{"at": "{at}", "card_no": "{card_no}"}}"#));
    }
    replay_with(&opts(), &events)
        .iter()
        .map(|l: &Value| {
            assert_eq!(reason(l), "accepted", "{l}");
            l["fare_fen"].as_u64().unwrap()
        })
        .collect()
}

#[test]
fn a_network_s_base_fare_prices_its_routes_for_every_category() {
    assert_eq!(
        fares(ADULT, &[("08:00:00", 5), ("12:00:00", 9), ("16:00:00", 1)]),
        [300, 200, 200]
    );
    assert_eq!(fares(STUDENT, &[("08:00:00", 6)]), [150]);
}

#[test]
fn transfer_rule_duration_holds_to_its_last_second_inclusive() {
    // City to city: 100 fen off up to 3600 s after the previous boarding.
    assert_eq!(
        fares(ADULT, &[("08:00:00", 1), ("09:00:00", 2)]),
        [200, 100]
    );
    assert_eq!(
        fares(ADULT, &[("08:00:00", 1), ("09:00:01", 2)]),
        [200, 200]
    );
}

#[test]
fn transfer_rule_count_allows_two_transfers_in_a_row_then_a_new_journey_starts() {
    assert_eq!(
        fares(
            ADULT,
            &[
                ("08:00:00", 1),
                ("08:10:00", 2),
                ("08:20:00", 3),
                ("08:30:00", 1),
                ("08:40:00", 2),
            ]
        ),
        [200, 100, 100, 200, 100]
    );
}

#[test]
fn transfer_rule_journey_fare_charges_what_the_first_boarding_left_of_it() {
    // City (200) then express within 5400 s: 400 in all, so 200 more instead of 300.
    assert_eq!(
        fares(ADULT, &[("08:00:00", 1), ("09:30:00", 5)]),
        [200, 200]
    );
    assert_eq!(
        fares(ADULT, &[("08:00:00", 1), ("09:30:01", 5)]),
        [200, 300]
    );
    // A transfer never costs more than the boarding would: a student's express is 150.
    assert_eq!(
        fares(STUDENT, &[("08:00:00", 1), ("08:10:00", 5)]),
        [100, 150]
    );
}

#[test]
fn transfer_rule_fixed_fare_from_any_network_to_any_route() {
    // Express then any line (city, express, a route in no network) within 2700 s: 50 fen.
    assert_eq!(fares(ADULT, &[("08:00:00", 5), ("08:45:00", 1)]), [300, 50]);
    assert_eq!(
        fares(ADULT, &[("08:00:00", 5), ("08:45:01", 1)]),
        [300, 200]
    );
    assert_eq!(fares(ADULT, &[("08:00:00", 5), ("08:30:00", 6)]), [300, 50]);
    assert_eq!(fares(ADULT, &[("08:00:00", 5), ("08:30:00", 9)]), [300, 50]);
}

#[test]
fn transfer_rules_replace_the_table_s_transfer_and_need_a_rule_for_the_networks() {
    // A route in no network after a city line: no rule holds, so no discount (the table's
    // `[transfer]` would have given 100 off).
    assert_eq!(
        fares(ADULT, &[("08:00:00", 1), ("08:10:00", 9)]),
        [200, 200]
    );
    // The same route again is never a transfer.
    assert_eq!(
        fares(ADULT, &[("08:00:00", 1), ("08:10:00", 1)]),
        [200, 200]
    );
}

#[test]
fn bad_networks_and_transfer_rules_are_refused() {
    let base = std::fs::read_to_string(fixture("networks/fares.toml")).unwrap();
    for bad in [
        "[[networks]]\nnetwork = \"city\"\nroutes = [9]\n",
        "[[networks]]\nnetwork = \"night\"\nroutes = [1]\n",
        "[[networks]]\nnetwork = \"night\"\nroutes = [9, 9]\n",
        "[[networks]]\nnetwork = \"night\"\nroutes = [65535, 9, 65535]\n",
        "[[networks]]\nnetwork = \"\"\nroutes = [9]\n",
        "[[networks]]\nnetwork = \"night\"\nbase_fare_fen = 10001\nroutes = [9]\n",
        "[[transfer_rules]]\nfrom_network = \"night\"\nduration_s = 60\nfare_fen = 0\n",
        "[[transfer_rules]]\nduration_s = 60\n",
        "[[transfer_rules]]\nduration_s = 60\nfare_fen = 0\ndiscount_fen = 10\n",
        "[[transfer_rules]]\nduration_s = 60\ntransfer_count = 0\nfare_fen = 0\n",
        "[[transfer_rules]]\nduration_s = 86401\nfare_fen = 0\n",
        "[[transfer_rules]]\nduration_s = 60\nfare_fen = 0\nunknown = 1\n",
    ] {
        let text = format!("{base}\n{bad}");
        assert!(FareTable::from_toml(&text).is_err(), "{bad}");
    }
    assert!(FareTable::from_toml(&base).is_ok());
}

#[test]
fn the_depot_s_fare_ceiling_knows_a_network_s_base_fare() {
    let t = FareTable::from_toml(&std::fs::read_to_string(fixture("networks/fares.toml")).unwrap())
        .unwrap();
    let c = FareCeilings::of(&[t]);
    assert_eq!((c.on(5), c.on(6), c.on(1), c.on(9)), (300, 300, 200, 200));
}
