//! Concessions that end (the card's own end date and its annual review date, 年审, read from
//! file 0x17: past either the card pays the adult fare and the decision says why) and
//! several riders on one card (连刷, `[[several_riders]]`), through `replay`, at both edges
//! of every date, window and count. Cards: fixtures/concessions/cards.json.

mod common;

use common::*;
use fare_validator::card::sim::{CardSpec, SimCard, TestKeys};
use fare_validator::clock::Timestamp;
use fare_validator::fare::FareTable;
use fare_validator::replay::ReplayOptions;
use fare_validator::types::Reason;
use serde_json::Value;

/// Student card whose concession ends on 2026-11-30.
const STUDENT_UNTIL_30_NOV: &str = "37144530000000000011";
/// Senior card whose annual review is due by 2026-11-30.
const SENIOR_REVIEW_30_NOV: &str = "37144530000000000012";
/// Student card: concession until 2026-11-30, but its review lapsed on 2026-06-30.
const STUDENT_REVIEW_LAPSED: &str = "37144530000000000013";
/// Adult card with both dates long past.
const ADULT_OLD_DATES: &str = "37144530000000000014";
/// Student card of city 1000 (interop fare) with a past concession date.
const CITY_1000_STUDENT: &str = "31001000000000000015";
/// Adult card, no dates.
const ADULT: &str = "37144530000000000016";

fn opts(fares: Option<&str>) -> ReplayOptions {
    ReplayOptions {
        cards: fixture("concessions/cards.json"),
        fares: fares.map(fixture),
        route: 1,
        ..ReplayOptions::default()
    }
}

fn event(at: &str, card_no: &str) -> String {
    format!(r#"{{"at": "{at}", "card_no": "{card_no}"}}"#)
}

/// (reason, fare_fen, fare_note, rider) of each line.
fn lines(
    fares: Option<&str>,
    events: &[String],
) -> Vec<(String, u64, Option<String>, Option<u64>)> {
    replay_with(&opts(fares), events)
        .iter()
        .map(|l: &Value| {
            (
                reason(l).to_string(),
                l["fare_fen"].as_u64().unwrap(),
                l.get("fare_note").map(|n| n.as_str().unwrap().to_string()),
                l.get("rider").map(|n| n.as_u64().unwrap()),
            )
        })
        .collect()
}

fn ok(fare_fen: u64) -> (String, u64, Option<String>, Option<u64>) {
    ("accepted".into(), fare_fen, None, None)
}

fn noted(fare_fen: u64, note: &str) -> (String, u64, Option<String>, Option<u64>) {
    ("accepted".into(), fare_fen, Some(note.into()), None)
}

fn rider(fare_fen: u64, n: u64) -> (String, u64, Option<String>, Option<u64>) {
    (
        "accepted".into(),
        fare_fen,
        Some("extra_rider".into()),
        Some(n),
    )
}

fn repeat() -> (String, u64, Option<String>, Option<u64>) {
    ("repeat_tap".into(), 0, None, None)
}

/// The card tapped at each of these local times, each tap on a fresh validator and card (so
/// no anti-passback and no transfer between them).
fn on_days(card_no: &str, times: &[&str]) -> Vec<(String, u64, Option<String>, Option<u64>)> {
    times
        .iter()
        .flat_map(|at| lines(None, &[event(at, card_no)]))
        .collect()
}

#[test]
fn concession_end_date_holds_through_its_last_day_and_the_next_day_pays_the_adult_fare() {
    assert_eq!(
        on_days(
            STUDENT_UNTIL_30_NOV,
            &["2026-11-30T23:59:59+08:00", "2026-12-01T00:00:00+08:00"]
        ),
        [ok(100), noted(200, "concession_ended")]
    );
}

#[test]
fn concession_end_date_is_the_local_date_of_the_tap() {
    // 2026-11-30T16:30Z is already 1 December in Dezhou (+08:00), still 30 November in UTC.
    assert_eq!(
        on_days(
            STUDENT_UNTIL_30_NOV,
            &["2026-11-30T16:30:00+00:00", "2026-12-01T00:30:00+08:00"]
        ),
        [ok(100), noted(200, "concession_ended")]
    );
}

#[test]
fn annual_review_date_holds_through_its_last_day_and_then_a_senior_pays_the_adult_fare() {
    assert_eq!(
        on_days(
            SENIOR_REVIEW_30_NOV,
            &["2026-11-30T12:00:00+08:00", "2026-12-01T12:00:00+08:00"]
        ),
        [ok(0), noted(200, "annual_review_due")]
    );
}

#[test]
fn a_lapsed_annual_review_ends_the_concession_before_its_own_end_date() {
    assert_eq!(
        on_days(
            STUDENT_REVIEW_LAPSED,
            &[
                "2026-06-30T12:00:00+08:00",
                "2026-07-01T12:00:00+08:00",
                "2026-12-01T12:00:00+08:00"
            ]
        ),
        [
            ok(100),
            noted(200, "annual_review_due"),
            noted(200, "concession_ended")
        ]
    );
}

#[test]
fn an_adult_card_has_no_concession_to_lose_whatever_its_dates() {
    assert_eq!(
        on_days(ADULT_OLD_DATES, &["2026-11-28T12:00:00+08:00"]),
        [ok(200)]
    );
}

#[test]
fn an_interop_card_pays_the_interop_fare_and_its_issuers_bytes_are_not_read_as_dates() {
    assert_eq!(
        on_days(CITY_1000_STUDENT, &["2026-11-28T12:00:00+08:00"]),
        [ok(200)]
    );
    assert_eq!(
        lines(
            Some("interop/fares.toml"),
            &[event("2026-11-28T12:00:00+08:00", CITY_1000_STUDENT)]
        ),
        [ok(180)]
    );
}

#[test]
fn an_ended_concession_still_gets_the_transfer_discount_off_the_adult_fare() {
    let events = [
        event("2026-12-01T08:00:00+08:00", STUDENT_UNTIL_30_NOV),
        r#"{"at": "2026-12-01T08:10:00+08:00", "route": 2}"#.to_string(),
        event("2026-12-01T08:30:00+08:00", STUDENT_UNTIL_30_NOV),
    ];
    assert_eq!(
        lines(None, &events),
        [
            noted(200, "concession_ended"),
            noted(100, "concession_ended")
        ]
    );
}

#[test]
fn a_concession_date_that_is_not_bcd_is_unreadable_and_charges_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keys = TestKeys::default();
    let mut v = common::sim_validator(dir.path(), keys);
    let spec: CardSpec = serde_json::from_value(serde_json::json!({
        "card_no": STUDENT_UNTIL_30_NOV, "card_type": "student", "enabled": true,
        "valid_from": "2024-01-01", "valid_until": "2034-12-31", "balance_fen": 5000
    }))
    .unwrap();
    let mut card = SimCard::new(&spec, &keys, 1).unwrap();
    let mut file = fare_validator::card::sim::management_file(
        "4530".parse().unwrap(),
        fare_validator::card::sim::InteropSpec::TUnion,
        fare_validator::types::RiderCategory::Student,
    );
    file[15..19].copy_from_slice(&[0x20, 0x26, 0x02, 0x3A]);
    card.set_management_file(file);
    let now = Timestamp::parse_rfc3339("2026-11-28T07:00:00+08:00").unwrap();
    assert_eq!(v.tap_card(&mut card, now).outcome, Err(Reason::Unreadable));
    assert_eq!(card.balance_fen(), 5000);
    assert_eq!(v.journal().durable_seq(), 0);
}

#[test]
fn cards_json_refuses_a_concession_date_that_is_not_a_date() {
    for (field, bad) in [
        ("concession_until", "2026-02-30x"),
        ("annual_review_until", "2026-13-01"),
        ("annual_review_until", "20261201"),
    ] {
        let text = format!(
            r#"{{"cards": [{{"card_no": "{ADULT}", "card_type": "student", "enabled": true,
            "valid_from": "2024-01-01", "valid_until": "2034-12-31", "balance_fen": 0,
            "{field}": "{bad}"}}]}}"#
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cards.json");
        std::fs::write(&path, text).unwrap();
        let o = ReplayOptions {
            cards: path,
            ..opts(None)
        };
        let mut out = Vec::new();
        let run = fare_validator::replay::run(&o, "".as_bytes(), &mut out);
        assert!(run.is_err(), "{field} {bad}");
    }
}

fn taps_of(card_no: &str, times: &[&str]) -> Vec<String> {
    times.iter().map(|at| event(at, card_no)).collect()
}

#[test]
fn several_riders_are_off_by_default_a_second_tap_is_a_repeat() {
    let events = taps_of(
        ADULT,
        &["2026-11-28T08:00:00+08:00", "2026-11-28T08:00:05+08:00"],
    );
    assert_eq!(lines(None, &events), [ok(200), repeat()]);
}

#[test]
fn several_riders_window_holds_until_one_second_before_its_end() {
    let t = Some("several-riders/fares.toml");
    let events = taps_of(
        ADULT,
        &["2026-11-28T08:00:00+08:00", "2026-11-28T08:00:29+08:00"],
    );
    assert_eq!(lines(t, &events), [ok(200), rider(200, 2)]);
    let events = taps_of(
        ADULT,
        &["2026-11-28T08:00:00+08:00", "2026-11-28T08:00:30+08:00"],
    );
    assert_eq!(lines(t, &events), [ok(200), repeat()]);
}

#[test]
fn several_riders_count_stops_at_riders_max() {
    let t = Some("several-riders/fares.toml");
    let events = taps_of(
        ADULT,
        &[
            "2026-11-28T08:00:00+08:00",
            "2026-11-28T08:00:03+08:00",
            "2026-11-28T08:00:06+08:00",
            "2026-11-28T08:00:09+08:00",
        ],
    );
    assert_eq!(
        lines(t, &events),
        [ok(200), rider(200, 2), rider(200, 3), repeat()]
    );
}

#[test]
fn several_riders_window_counts_from_the_groups_first_boarding_not_the_last() {
    let t = Some("several-riders/fares.toml");
    let events = taps_of(
        ADULT,
        &[
            "2026-11-28T08:00:00+08:00",
            "2026-11-28T08:00:25+08:00",
            "2026-11-28T08:00:31+08:00",
            // Past anti-passback (60 s) from the last boarding: a new group.
            "2026-11-28T08:01:25+08:00",
            "2026-11-28T08:01:26+08:00",
        ],
    );
    assert_eq!(
        lines(t, &events),
        [ok(200), rider(200, 2), repeat(), ok(200), rider(200, 2)]
    );
}

#[test]
fn several_riders_hold_only_for_the_card_types_the_table_lists() {
    let t = Some("several-riders/fares.toml");
    let events = taps_of(
        STUDENT_UNTIL_30_NOV,
        &["2026-11-28T08:00:00+08:00", "2026-11-28T08:00:05+08:00"],
    );
    assert_eq!(lines(t, &events), [ok(100), repeat()]);
}

#[test]
fn each_rider_is_debited_and_recorded_once() {
    let dir = tempfile::tempdir().unwrap();
    let o = ReplayOptions {
        journal: Some(dir.path().join("j")),
        ..opts(Some("several-riders/fares.toml"))
    };
    let events = taps_of(
        ADULT,
        &["2026-11-28T08:00:00+08:00", "2026-11-28T08:00:10+08:00"],
    );
    let out = replay_with(&o, &events);
    assert_eq!(out[1]["balance_fen"].as_i64(), Some(4600));
    assert_eq!(out[1]["seq"].as_u64(), Some(2));
}

#[test]
fn bad_several_riders_sections_are_refused() {
    let base = fare_validator::fare::DEFAULT_FARES_TOML;
    for bad in [
        "category = \"adult\"\nwindow_s = 0\nriders_max = 3",
        "category = \"adult\"\nwindow_s = 601\nriders_max = 3",
        "category = \"adult\"\nwindow_s = 30\nriders_max = 1",
        "category = \"adult\"\nwindow_s = 30\nriders_max = 10",
        "category = \"adult\"\nwindow_s = 30\nriders_max = 3\n[[several_riders]]\n\
         category = \"adult\"\nwindow_s = 20\nriders_max = 2",
        "category = \"child\"\nwindow_s = 30\nriders_max = 3",
    ] {
        let text = format!("{base}\n[[several_riders]]\n{bad}\n");
        assert!(FareTable::from_toml(&text).is_err(), "{bad}");
    }
    let good = format!(
        "{base}\n[[several_riders]]\ncategory = \"adult\"\nwindow_s = 600\nriders_max = 9\n"
    );
    assert!(FareTable::from_toml(&good).is_ok());
}
