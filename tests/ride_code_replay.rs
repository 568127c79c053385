//! Every ride-code reason through `replay`, the way other tools see the engine: each vector
//! case on a fresh validator, then the checks that need a validator's memory or blacklist.

mod common;

use common::{fixture, options, reason, replay_with};
use serde_json::Value;

fn vectors() -> Vec<Value> {
    let v: Value =
        serde_json::from_slice(&std::fs::read(fixture("ride-code-v1.json")).unwrap()).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn at(unix_s: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix_s)
        .unwrap()
        .to_offset(time::macros::offset!(+8));
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn scan(unix_s: i64, code: &str) -> String {
    serde_json::json!({"at": at(unix_s), "qr": code}).to_string()
}

fn with_keys() -> fare_validator::replay::ReplayOptions {
    let mut o = options(None);
    o.keys = Some(fixture("ride-code-keys.json"));
    o
}

fn case(name: &str) -> (i64, String) {
    let c = vectors().into_iter().find(|c| c["name"] == name).unwrap();
    (
        c["now"].as_i64().unwrap(),
        c["code"].as_str().unwrap().to_string(),
    )
}

#[test]
fn every_vector_decides_through_replay_as_expected() {
    for c in vectors() {
        let out = replay_with(
            &with_keys(),
            &[scan(
                c["now"].as_i64().unwrap(),
                c["code"].as_str().unwrap(),
            )],
        );
        assert_eq!(
            reason(&out[0]),
            c["expect"].as_str().unwrap(),
            "{}",
            c["name"]
        );
        assert_eq!(out[0]["media"], "qr");
        assert!(out[0]["balance_fen"].is_null());
    }
}

#[test]
fn without_a_key_file_a_well_formed_code_is_from_an_unsupported_channel() {
    let (now, code) = case("valid_p256");
    let out = replay_with(&options(None), &[scan(now, &code)]);
    assert_eq!(reason(&out[0]), "unsupported_channel");
}

#[test]
fn accepted_code_pays_by_the_certificates_rider_category_after_the_ride() {
    let (now, adult) = case("valid_p256");
    let (_, student) = case("valid_student_sm2");
    let out = replay_with(&with_keys(), &[scan(now, &adult), scan(now, &student)]);
    assert_eq!(
        (
            out[0]["id"].as_str(),
            out[0]["fare_fen"].as_u64(),
            out[0]["seq"].as_u64()
        ),
        (Some("2:1001"), Some(200), Some(1))
    );
    assert_eq!(
        (out[1]["id"].as_str(), out[1]["fare_fen"].as_u64()),
        (Some("7:7001"), Some(100))
    );
}

#[test]
fn the_same_code_scanned_again_is_replayed() {
    let (now, code) = case("valid_p256");
    let out = replay_with(&with_keys(), &[scan(now, &code), scan(now + 50, &code)]);
    assert_eq!(
        out.iter().map(reason).collect::<Vec<_>>(),
        ["accepted", "replayed"]
    );
}

#[test]
fn lost_cards_ride_code_is_refused_and_rides_again_after_unreport() {
    let (now, code) = case("valid_sm2");
    let list = |op: &str| {
        serde_json::json!({"at": at(now), "blacklist": {"op": op, "kind": "card", "id": "37140000000000002001", "reason": "lost"}})
            .to_string()
    };
    let out = replay_with(
        &with_keys(),
        &[
            list("add"),
            scan(now, &code),
            list("remove"),
            scan(now + 1, &code),
        ],
    );
    assert_eq!(
        out.iter().map(reason).collect::<Vec<_>>(),
        ["blacklisted", "accepted"]
    );
}

#[test]
fn account_in_arrears_is_blacklisted() {
    let (now, code) = case("valid_student_sm2");
    let arrears = serde_json::json!({"at": at(now), "blacklist": {"op": "add", "kind": "account", "id": "7:7001", "reason": "arrears"}});
    let out = replay_with(&with_keys(), &[arrears.to_string(), scan(now, &code)]);
    assert_eq!(reason(&out[0]), "blacklisted");
    assert_eq!(out[0]["id"], "7:7001");
}

#[test]
fn a_second_code_from_the_same_account_within_a_minute_is_a_repeat_tap() {
    // Two codes of one account at one time: the vectors' SM2 holder has one; build a second
    // from the issuer side with our own channel key.
    use fare_validator::ride_code::issuer::SimChannels;
    use fare_validator::types::{CardNo, RiderCategory};
    let now = 1_795_824_000i64;
    let mut channels = SimChannels::new(3, (now as u32 - 1000, now as u32 + 100_000));
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    std::fs::write(&keys, serde_json::to_string(&channels.key_file()).unwrap()).unwrap();
    let card: CardNo = "37140000000000000001".parse().unwrap();
    let mut code = |at: i64, counter| {
        channels
            .issue(4, 55, card, RiderCategory::Adult, at as u32, counter)
            .unwrap()
    };
    let (first, second, third) = (code(now - 1, 1), code(now + 30, 2), code(now + 60, 3));
    let mut o = options(None);
    o.keys = Some(keys);
    let out = replay_with(
        &o,
        &[
            scan(now, &first),
            scan(now + 30, &second),
            scan(now + 60, &third),
        ],
    );
    assert_eq!(
        out.iter().map(reason).collect::<Vec<_>>(),
        ["accepted", "repeat_tap", "accepted"]
    );
}

#[test]
fn a_code_scanned_before_a_restart_is_still_replayed_after_it() {
    let (now, code) = case("valid_p256");
    let restart = serde_json::json!({"at": at(now + 10), "restart": true}).to_string();
    let out = replay_with(
        &with_keys(),
        &[scan(now, &code), restart, scan(now + 50, &code)],
    );
    assert_eq!(reason(&out[0]), "accepted");
    assert_eq!(reason(&out[1]), "replayed");
}
