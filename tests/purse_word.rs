//! A card's purse word, read as field readers of these cards read it (bit 31 is not part of
//! the amount; bits 30..0 are a 31-bit two's-complement amount), and carried end to end:
//! decision lines, journal records, `journal show`. No value a card answers may collide with
//! an internal "none".

mod common;

use std::path::Path;

use common::*;
use fare_validator::card::psam::Psam;
use fare_validator::card::sim::{CardSpec, Removal, SimCard, SimPsam, TestKeys};
use fare_validator::clock::Timestamp;
use fare_validator::engine::{EngineConfig, Validator};
use fare_validator::journal::{self, Journal, RecordKind};
use fare_validator::replay::{self, ReplayOptions};
use fare_validator::types::Reason;
use serde_json::{json, Value};

const AT: &str = "2026-11-28T07:00:00+08:00";

fn card_json(n: u32, card_type: &str, balance_fen: Value, purse_word: Option<&str>) -> Value {
    let mut c = json!({"card_no": card(n), "card_type": card_type, "enabled": true,
        "valid_from": "2024-01-01", "valid_until": "2034-12-31", "balance_fen": balance_fen});
    if let Some(w) = purse_word {
        c["purse_word"] = w.into();
    }
    c
}

/// Replay `events` against the cards given; the decision lines, or the error line.
fn replay_cards(dir: &Path, cards: &[Value], events: &[String]) -> Result<Vec<Value>, String> {
    std::fs::create_dir_all(dir).unwrap();
    let cards_path = dir.join("cards.json");
    std::fs::write(&cards_path, json!({ "cards": cards }).to_string()).unwrap();
    let opts = ReplayOptions {
        cards: cards_path,
        journal: Some(dir.join("journal")),
        route: 1,
        ..ReplayOptions::default()
    };
    let mut out = Vec::new();
    replay::run(&opts, events.join("\n").as_bytes(), &mut out).map_err(|e| e.to_string())?;
    Ok(String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect())
}

fn spec(n: u32, card_type: &str, balance_fen: i64, purse_word: Option<&str>) -> CardSpec {
    serde_json::from_value(card_json(n, card_type, balance_fen.into(), purse_word)).unwrap()
}

fn validator(dir: &Path) -> Validator<SimPsam> {
    let psam = Psam::open(SimPsam::new(TestKeys::default(), [0, 0, 0, 0, 0, 1], 1)).unwrap();
    let (journal, _) = Journal::open(dir).unwrap();
    Validator::new(
        EngineConfig::default(),
        psam,
        fare_validator::fare::FareTable::default_policy(),
        fare_validator::blacklist::Blacklist::empty(),
        journal,
    )
}

#[test]
fn purse_word_top_bit_is_not_part_of_the_amount() {
    let dir = tempfile::tempdir().unwrap();
    // 0x80001388: bit 31 set, amount 5000 fen (once read as 21,474,888.40 yuan).
    let out = replay_cards(
        dir.path(),
        &[card_json(1, "adult", 0.into(), Some("80001388"))],
        &[tap(AT, 1)],
    )
    .unwrap();
    assert_eq!(reason(&out[0]), "accepted");
    assert_eq!(
        (out[0]["fare_fen"].as_i64(), out[0]["balance_fen"].as_i64()),
        (Some(200), Some(4800))
    );
    let records = journal::scan(&dir.path().join("journal")).unwrap().records;
    assert_eq!(records[0].balance_fen, Some(4800));

    // The card keeps its bit 31 through the debit; the amount below it goes down.
    let mut c = SimCard::new(
        &spec(1, "adult", 0, Some("80001388")),
        &TestKeys::default(),
        1,
    )
    .unwrap();
    let d =
        validator(&dir.path().join("j2")).tap_card(&mut c, Timestamp::parse_rfc3339(AT).unwrap());
    assert_eq!(d.balance_fen, Some(4800));
    assert_eq!(c.purse_word(), [0x80, 0x00, 0x12, 0xC0]);

    // A word with bit 30 set is a negative amount, not a fortune: refused with what it holds.
    let out = replay_cards(
        &dir.path().join("neg"),
        &[card_json(2, "adult", 0.into(), Some("C0000000"))],
        &[tap(AT, 2)],
    )
    .unwrap();
    assert_eq!(reason(&out[0]), "insufficient_balance");
    assert_eq!(out[0]["balance_fen"], -1_073_741_824);
}

#[test]
fn all_ones_purse_word_is_minus_one_fen_and_records_it() {
    let dir = tempfile::tempdir().unwrap();
    // An erased or overdrawn purse: FFFFFFFF is -1 fen. Neither the adult nor the free rider
    // (the tap that once panicked in the journal after the debit) is charged; both see -1.
    let out = replay_cards(
        dir.path(),
        &[
            card_json(1, "adult", 0.into(), Some("FFFFFFFF")),
            card_json(3, "senior", 0.into(), Some("ffffffff")),
        ],
        &[tap(AT, 1), tap("2026-11-28T07:00:10+08:00", 3)],
    )
    .unwrap();
    for line in &out {
        assert_eq!(reason(line), "insufficient_balance", "{line}");
        assert_eq!(line["balance_fen"], -1, "{line}");
        assert_eq!(
            (line["fare_fen"].as_u64(), line["seq"].is_null()),
            (Some(0), true)
        );
    }

    // A debit recovered from a card whose purse reads FFFFFFFF by the next tap: the record
    // holds -1 fen, a balance like any other, not the "no balance" of a ride code.
    let jdir = dir.path().join("recovered");
    let mut v = validator(&jdir);
    let mut c = SimCard::new(&spec(4, "adult", 5000, None), &TestKeys::default(), 1).unwrap();
    let t0 = Timestamp::parse_rfc3339(AT).unwrap();
    c.enter_field(Some(Removal::AfterDebit));
    assert_eq!(v.tap_card(&mut c, t0).outcome, Err(Reason::CardRemoved));
    c.set_purse_word([0xFF; 4]);
    c.enter_field(None);
    let d = v.tap_card(&mut c, t0.plus_s(5));
    assert_eq!(
        (d.outcome, d.fare_fen, d.balance_fen),
        (Ok(()), 200, Some(-1))
    );
    drop(v);
    let records = journal::scan(&jdir).unwrap().records;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].kind, RecordKind::CardRecovered);
    assert_eq!(records[0].balance_fen, Some(-1));
    assert_eq!(records[0].to_json()["balance_fen"], -1);
}

#[test]
fn negative_balance_is_carried_to_the_decision_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = replay_cards(
        dir.path(),
        &[card_json(1, "adult", (-500).into(), None)],
        &[tap(AT, 1)],
    )
    .unwrap();
    assert_eq!(reason(&out[0]), "insufficient_balance");
    assert_eq!(out[0]["balance_fen"], -500);
}

#[test]
fn balance_fen_outside_the_purse_range_is_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (json!(1_073_741_823), None, Ok(1_073_741_623)),
        (json!(-1_073_741_824), None, Err(())),
        (json!(1_073_741_824), None, Err(())),
        (json!(-1_073_741_825), None, Err(())),
        (json!(4_294_967_295u64), None, Err(())),
        (json!(50.5), None, Err(())),
        (json!(0), Some("FFFFFFF"), Err(())),
        (json!(0), Some("GFFFFFFF"), Err(())),
        (json!(0), Some("+FFFFFFF"), Err(())),
        (json!(0), Some("00001388"), Ok(4800)),
    ];
    for (i, (balance, word, want)) in cases.into_iter().enumerate() {
        let cards = [card_json(1, "adult", balance.clone(), word)];
        let got = replay_cards(&dir.path().join(i.to_string()), &cards, &[tap(AT, 1)]);
        match (want, got) {
            (Ok(after), Ok(out)) => assert_eq!(out[0]["balance_fen"], after, "{balance} {word:?}"),
            // -2^30 is a valid balance: the card loads, and the tap is refused for it.
            (Err(()), Ok(out)) if balance == json!(-1_073_741_824) => {
                assert_eq!(reason(&out[0]), "insufficient_balance");
                assert_eq!(out[0]["balance_fen"], -1_073_741_824);
            }
            (Err(()), Err(line)) => assert!(line.contains("cards.json"), "{line}"),
            (want, got) => panic!("{balance} {word:?}: wanted {want:?}, got {got:?}"),
        }
    }
}
