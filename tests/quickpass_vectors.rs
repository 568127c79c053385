//! Every case of fixtures/quickpass-v1.json (cards personalised by an independent
//! implementation, with each one's expected decision) decided through `replay`, and the
//! output fields of quickpass.md.

mod common;

use std::path::Path;

use fare_validator::replay::{self, ReplayOptions};
use serde_json::{json, Value};

fn vectors() -> Value {
    let text = std::fs::read_to_string(common::fixture("quickpass-v1.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Run one case: its card, the vectors' CA keys, its blacklist events, then its taps a
/// second apart. The decision lines.
fn run_case(dir: &Path, case: &Value, ca_keys: &Value) -> Vec<Value> {
    let cards = dir.join("cards.json");
    std::fs::write(&cards, json!({"cards": [case["card"]]}).to_string()).unwrap();
    let ca = dir.join("ca.json");
    std::fs::write(&ca, ca_keys.to_string()).unwrap();
    let at = case["at"].as_str().unwrap();
    let t0 = fare_validator::clock::Timestamp::parse_rfc3339(at).unwrap();
    let mut events: Vec<String> = case["blacklist"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| json!({"at": at, "blacklist": b}).to_string())
        .collect();
    for k in 0..case["taps"].as_u64().unwrap() {
        let when = t0.plus_s(k as i64).to_rfc3339();
        events.push(json!({"at": when, "pan": case["card"]["pan"]}).to_string());
    }
    let opts = ReplayOptions {
        cards,
        emv_ca: Some(ca),
        route: 1,
        ..ReplayOptions::default()
    };
    let mut out = Vec::new();
    replay::run(&opts, events.join("\n").as_bytes(), &mut out).expect("replay runs");
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn masked(pan: &str) -> String {
    format!(
        "{}{}{}",
        &pan[..6],
        "*".repeat(pan.len() - 10),
        &pan[pan.len() - 4..]
    )
}

#[test]
fn every_vector_case_is_decided_as_expected_through_replay() {
    let v = vectors();
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 19);
    let fare = v["fare_fen"].as_u64().unwrap();
    let mut wrong = Vec::new();
    for case in cases {
        let dir = tempfile::tempdir().unwrap();
        let lines = run_case(dir.path(), case, &v["ca_keys"]);
        let taps = case["taps"].as_u64().unwrap() as usize;
        assert_eq!(lines.len(), taps, "{}", case["name"]);
        // Earlier taps of a case are the accepted boarding its last tap repeats.
        for line in &lines[..taps - 1] {
            assert_eq!(line["result"], "accepted", "{}", case["name"]);
        }
        let last = &lines[taps - 1];
        let got = last["reason"].as_str().unwrap_or("accepted");
        if got != case["expect"] {
            wrong.push(format!(
                "{}: {got}, expected {}",
                case["name"], case["expect"]
            ));
        }
        let pan = case["card"]["pan"].as_str().unwrap();
        assert_eq!(last["media"], "quickpass");
        assert_eq!(last["id"], masked(pan), "{}", case["name"]);
        assert_eq!(last["balance_fen"], Value::Null);
        if got == "accepted" {
            assert_eq!(last["fare_fen"], fare);
            assert!(last["seq"].as_u64().is_some());
        } else {
            assert_eq!(last["fare_fen"], 0);
            assert_eq!(last["seq"], Value::Null);
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn without_ca_keys_every_quickpass_tap_is_bad_certificate() {
    let v = vectors();
    let case = &v["cases"][0];
    let dir = tempfile::tempdir().unwrap();
    let cards = dir.path().join("cards.json");
    std::fs::write(&cards, json!({"cards": [case["card"]]}).to_string()).unwrap();
    let opts = ReplayOptions {
        cards,
        route: 1,
        ..ReplayOptions::default()
    };
    let tap = json!({"at": case["at"], "pan": case["card"]["pan"]}).to_string();
    let mut out = Vec::new();
    replay::run(&opts, tap.as_bytes(), &mut out).unwrap();
    let line: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(line["reason"], "bad_certificate");
    assert_eq!(line["id"], "621483******0001");
}
