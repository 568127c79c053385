//! The fare table's rules through `replay`: cards issued by other cities (互联互通: the issuing
//! city of file 0x17 decides whether the card type's concession holds, fixtures/interop),
//! timeframes (fixtures/timeframes) and route base fares (fixtures/routes).

mod common;

use common::*;
use fare_validator::card::sim::{CardSpec, SimCard, TestKeys};
use fare_validator::card::tunion::MANAGEMENT_FILE_BYTES;
use fare_validator::clock::Timestamp;
use fare_validator::replay::ReplayOptions;
use fare_validator::types::Reason;
use serde_json::Value;

const LOCAL_STUDENT: &str = "37144530000000000001";
const CITY_1000_STUDENT: &str = "31001000000000000002";
const CITY_1000_SENIOR: &str = "31001000000000000003";
const JINAN_STUDENT: &str = "37000531000000000004";
const CITY_2000_ADULT: &str = "20002000000000000005";
const CITY_3000_ADULT: &str = "30003000000000000006";
const CITY_3000_CITY_ONLY: &str = "30003000000000000007";
const LOCAL_CITY_ONLY_STUDENT: &str = "37144530000000000008";

fn opts(fares: Option<&str>) -> ReplayOptions {
    ReplayOptions {
        cards: fixture("interop/cards.json"),
        fares: fares.map(fixture),
        route: 1,
        ..ReplayOptions::default()
    }
}

/// Each card tapped once, a minute apart; (reason, fare_fen, balance_fen) of each.
fn taps(fares: Option<&str>, cards: &[&str]) -> Vec<(String, u64, Option<i64>)> {
    let events: Vec<String> = cards
        .iter()
        .enumerate()
        .map(|(i, c)| format!(r#"{{"at": "2026-11-28T07:{i:02}:00+08:00", "card_no": "{c}"}}"#))
        .collect();
    replay_with(&opts(fares), &events)
        .iter()
        .map(|l: &Value| {
            (
                reason(l).to_string(),
                l["fare_fen"].as_u64().unwrap(),
                l["balance_fen"].as_i64(),
            )
        })
        .collect()
}

fn accepted(fare_fen: u64) -> (String, u64, Option<i64>) {
    ("accepted".into(), fare_fen, Some(5000 - fare_fen as i64))
}

#[test]
fn student_card_from_another_city_pays_the_interop_fare_not_the_student_rate() {
    assert_eq!(
        taps(None, &[LOCAL_STUDENT, CITY_1000_STUDENT]),
        [accepted(100), accepted(200)]
    );
}

#[test]
fn without_an_interop_section_every_card_of_another_city_pays_the_adult_fare() {
    assert_eq!(
        taps(None, &[CITY_1000_SENIOR, JINAN_STUDENT, CITY_3000_ADULT]),
        [accepted(200), accepted(200), accepted(200)]
    );
}

#[test]
fn a_home_card_keeps_its_concession_whatever_its_interop_kind() {
    assert_eq!(taps(None, &[LOCAL_CITY_ONLY_STUDENT]), [accepted(100)]);
}

#[test]
fn a_city_only_card_of_another_city_is_not_accepted() {
    assert_eq!(
        taps(None, &[CITY_3000_CITY_ONLY]),
        [("issuer_not_accepted".into(), 0, None)]
    );
}

#[test]
fn the_table_grants_concessions_by_city_and_an_interop_discount_to_the_others() {
    let t = Some("interop/fares.toml");
    assert_eq!(
        taps(
            t,
            &[
                LOCAL_STUDENT,
                JINAN_STUDENT,
                CITY_1000_STUDENT,
                CITY_1000_SENIOR
            ]
        ),
        [accepted(100), accepted(100), accepted(180), accepted(180)]
    );
}

#[test]
fn issuer_deny_and_allow_lists_refuse_cards_by_city_code() {
    let t = Some("interop/fares.toml");
    let refused = ("issuer_not_accepted".to_string(), 0, None);
    assert_eq!(
        taps(t, &[CITY_2000_ADULT, CITY_3000_ADULT, CITY_1000_STUDENT]),
        [refused.clone(), refused, accepted(180)]
    );
    // The same cards under the default table: no list, every T-Union card rides.
    assert_eq!(
        taps(None, &[CITY_2000_ADULT, CITY_3000_ADULT]),
        [accepted(200), accepted(200)]
    );
}

#[test]
fn a_malformed_management_file_is_unreadable_and_charges_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keys = TestKeys::default();
    let mut v = common::sim_validator(dir.path(), keys);
    let spec: CardSpec = serde_json::from_value(serde_json::json!({
        "card_no": LOCAL_STUDENT, "card_type": "student", "enabled": true,
        "valid_from": "2024-01-01", "valid_until": "2034-12-31", "balance_fen": 5000
    }))
    .unwrap();
    let mut card = SimCard::new(&spec, &keys, 1).unwrap();
    let mut bad = [0u8; MANAGEMENT_FILE_BYTES];
    bad[6..8].copy_from_slice(&[0x4A, 0x30]);
    card.set_management_file(bad);
    let now = Timestamp::parse_rfc3339("2026-11-28T07:00:00+08:00").unwrap();
    assert_eq!(v.tap_card(&mut card, now).outcome, Err(Reason::Unreadable));
    assert_eq!(card.balance_fen(), 5000);
    assert_eq!(v.journal().durable_seq(), 0);
}

#[test]
fn cards_json_refuses_a_city_code_that_is_not_four_digits() {
    for bad in [r#""453""#, r#""45a0""#, "4530"] {
        let text = format!(
            r#"{{"card_no": "{LOCAL_STUDENT}", "card_type": "student", "enabled": true,
            "valid_from": "2024-01-01", "valid_until": "2034-12-31", "balance_fen": 0,
            "issuer_city": {bad}}}"#
        );
        assert!(serde_json::from_str::<CardSpec>(&text).is_err(), "{bad}");
    }
}

#[test]
fn seniors_ride_free_off_peak_only_through_replay_at_both_edges_of_the_peak() {
    let events: Vec<String> = [
        "2026-11-27T06:59:59+08:00",
        "2026-11-27T07:01:00+08:00",
        "2026-11-27T08:59:59+08:00",
        "2026-11-27T09:00:00+08:00",
        "2026-11-28T07:30:00+08:00",
    ]
    .iter()
    .map(|at| format!(r#"{{"at": "{at}", "card_no": "{}"}}"#, card(3)))
    .collect();
    let o = ReplayOptions {
        fares: Some(fixture("timeframes/fares.toml")),
        ..options(None)
    };
    let fares: Vec<(String, u64)> = replay_with(&o, &events)
        .iter()
        .map(|l| (reason(l).to_string(), l["fare_fen"].as_u64().unwrap()))
        .collect();
    // Card 3 of fixtures/replay is a senior with 0 fen: free rides pass, peak ones cannot pay.
    assert_eq!(
        fares,
        [
            ("accepted".to_string(), 0),
            ("insufficient_balance".to_string(), 0),
            ("insufficient_balance".to_string(), 0),
            ("accepted".to_string(), 0),
            ("accepted".to_string(), 0),
        ]
    );
}

#[test]
fn a_route_with_its_own_base_fare_charges_it_to_every_category() {
    let events: Vec<String> = [1, 2]
        .iter()
        .map(|n| tap("2026-11-28T07:00:00+08:00", *n))
        .collect();
    let fares = |route: u16| -> Vec<u64> {
        let o = ReplayOptions {
            fares: Some(fixture("routes/fares.toml")),
            route,
            ..options(None)
        };
        replay_with(&o, &events)
            .iter()
            .map(|l| l["fare_fen"].as_u64().unwrap())
            .collect()
    };
    // Card 1 is an adult, card 2 a student of fixtures/replay.
    assert_eq!(fares(5), [300, 150]);
    assert_eq!(fares(4), [200, 100]);
    assert_eq!(fares(6), [200, 100]);
}
