//! QuickPass taps beyond the vectors: the application a card with both uses, the card leaving
//! the field at each step of the dialogue (nothing recorded), the clear PAN never written,
//! malformed answers refused without a panic.

mod common;

use std::path::PathBuf;

use fare_validator::card::apdu::{CardChannel, ChannelError, Response};
use fare_validator::card::quickpass::{read_card, CaKeys, PanTokenKey, ReadError, TerminalData};
use fare_validator::card::sim::TestKeys;
use fare_validator::card::sim_quickpass::{
    QpRemoval, QuickPassSpec, SimPhysicalCard, SimQuickPass,
};
use fare_validator::clock::Timestamp;
use fare_validator::journal::{self, acquirer::ACQUIRER_FILE};
use fare_validator::replay::{self, ReplayOptions};
use fare_validator::types::Reason;
use serde_json::{json, Value};

const PAN: &str = "6214830000000001";
const AT: &str = "2026-12-01T08:00:00+08:00";

fn vectors() -> Value {
    let text = std::fs::read_to_string(common::fixture("quickpass-v1.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The vectors' good card, with `extra` fields (transport ones) merged in.
fn good_card(extra: Value) -> Value {
    let mut card = vectors()["cases"][0]["card"].clone();
    for (k, v) in extra.as_object().unwrap() {
        card[k] = v.clone();
    }
    card
}

fn transport(enabled: bool) -> Value {
    json!({"card_no": "37140000000000000077", "card_type": "adult", "enabled": enabled,
           "valid_from": "2024-01-01", "valid_until": "2034-12-31", "balance_fen": 5000})
}

struct Run {
    dir: tempfile::TempDir,
}

impl Run {
    fn new(cards: &[Value]) -> Run {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cards.json"),
            json!({ "cards": cards }).to_string(),
        )
        .unwrap();
        std::fs::write(dir.path().join("ca.json"), vectors()["ca_keys"].to_string()).unwrap();
        Run { dir }
    }

    fn journal(&self) -> PathBuf {
        self.dir.path().join("journal")
    }

    fn replay(&self, events: &[Value]) -> Vec<Value> {
        let opts = ReplayOptions {
            cards: self.dir.path().join("cards.json"),
            emv_ca: Some(self.dir.path().join("ca.json")),
            journal: Some(self.journal()),
            route: 1,
            ..ReplayOptions::default()
        };
        let input: Vec<String> = events.iter().map(Value::to_string).collect();
        let mut out = Vec::new();
        replay::run(&opts, input.join("\n").as_bytes(), &mut out).expect("replay runs");
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn reason(line: &Value) -> &str {
    line["reason"].as_str().unwrap_or("accepted")
}

#[test]
fn card_with_both_applications_uses_the_transport_purse_when_activated() {
    let run = Run::new(&[good_card(transport(true))]);
    let lines = run.replay(&[
        json!({"at": AT, "pan": PAN}),
        json!({"at": "2026-12-01T09:00:00+08:00", "card_no": "37140000000000000077"}),
    ]);
    for line in &lines {
        assert_eq!(reason(line), "accepted");
        assert_eq!(line["media"], "card");
        assert_eq!(line["id"], "37140000000000000077");
        assert!(line["balance_fen"].is_number());
    }
}

#[test]
fn card_with_both_applications_uses_quickpass_when_transport_never_activated() {
    let run = Run::new(&[good_card(transport(false))]);
    let lines = run.replay(&[json!({"at": AT, "card_no": "37140000000000000077"})]);
    assert_eq!(reason(&lines[0]), "accepted");
    assert_eq!(lines[0]["media"], "quickpass");
    assert_eq!(lines[0]["id"], "621483******0001");
    assert_eq!(lines[0]["balance_fen"], Value::Null);
}

#[test]
fn transport_refusal_is_never_retried_on_quickpass() {
    let mut t = transport(true);
    t["balance_fen"] = json!(0);
    let run = Run::new(&[good_card(t)]);
    let lines = run.replay(&[json!({"at": AT, "pan": PAN})]);
    assert_eq!(reason(&lines[0]), "insufficient_balance");
    assert_eq!(lines[0]["media"], "card");
}

#[test]
fn card_without_any_usable_application_keeps_the_transport_reason() {
    let run = Run::new(&[transport(false)]);
    let lines = run.replay(&[json!({"at": AT, "card_no": "37140000000000000077"})]);
    assert_eq!(reason(&lines[0]), "not_activated");
    assert_eq!(lines[0]["media"], "card");
}

#[test]
fn removed_before_or_after_gpo_records_nothing_and_the_next_tap_rides() {
    let run = Run::new(&[good_card(json!({}))]);
    let lines = run.replay(&[
        json!({"at": AT, "pan": PAN, "remove": "before_debit"}),
        json!({"at": "2026-12-01T08:00:01+08:00", "pan": PAN, "remove": "after_debit"}),
        json!({"at": "2026-12-01T08:00:02+08:00", "pan": PAN}),
    ]);
    assert_eq!(reason(&lines[0]), "card_removed");
    assert_eq!(reason(&lines[1]), "card_removed");
    assert_eq!(lines[1]["id"], "621483******0001");
    assert_eq!(reason(&lines[2]), "accepted");
    assert_eq!(lines[2]["seq"], 1, "the removed taps recorded nothing");
}

fn terminal() -> TerminalData {
    TerminalData {
        amount_fen: 200,
        datetime_bcd: [0x20, 0x26, 0x12, 0x01, 0x08, 0x00, 0x00],
        unpredictable_number: [1, 2, 3, 4],
    }
}

/// The engine on simulated PSAM and journal in `dir`, taking QuickPass with the vectors' CA
/// keys and the test PAN token key.
fn quickpass_validator(
    dir: &std::path::Path,
) -> fare_validator::engine::Validator<fare_validator::card::sim::SimPsam> {
    let mut v = common::sim_validator(dir, TestKeys::default());
    let ca = CaKeys::from_json(&vectors()["ca_keys"].to_string()).unwrap();
    v.set_quickpass(ca, PanTokenKey::TEST, 1);
    v
}

fn sim_card() -> SimQuickPass {
    let spec: QuickPassSpec = serde_json::from_value(good_card(json!({}))).unwrap();
    SimQuickPass::new(&spec, 7).unwrap()
}

#[test]
fn card_leaving_at_each_step_of_the_dialogue_is_card_removed() {
    // PPSE, SELECT, GPO and the three records: six commands, before or after each.
    for n in 1..=6u8 {
        for removal in [QpRemoval::BeforeCommand(n), QpRemoval::AfterCommand(n)] {
            let mut card = sim_card();
            card.enter_field(Some(removal));
            assert_eq!(
                read_card(&mut card, &terminal()).unwrap_err(),
                ReadError::Removed,
                "{removal:?}"
            );
        }
    }
    let mut card = sim_card();
    card.enter_field(None);
    assert!(read_card(&mut card, &terminal()).is_ok());
}

/// Through the engine: the card leaving before or after each of its six commands is
/// `card_removed` and records nothing (no record, no acquirer entry); the next tap rides and is
/// the journal's first record.
#[test]
fn card_leaving_at_each_step_records_nothing_through_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = quickpass_validator(dir.path());
    let mut at = Timestamp::parse_rfc3339(AT).unwrap();
    for n in 1..=6u8 {
        for removal in [QpRemoval::BeforeCommand(n), QpRemoval::AfterCommand(n)] {
            let mut card = SimPhysicalCard::new(None, Some(sim_card()));
            card.quickpass.as_mut().unwrap().enter_field(Some(removal));
            let d = v.tap_card(&mut card, at);
            assert_eq!(d.outcome, Err(Reason::CardRemoved), "{removal:?}");
            assert_eq!(d.seq, None, "{removal:?}");
            at = at.plus_s(1);
        }
    }
    assert!(journal::scan(dir.path()).unwrap().records.is_empty());
    let side = dir.path().join(ACQUIRER_FILE);
    assert_eq!(std::fs::metadata(&side).map_or(0, |m| m.len()), 0);
    let mut card = SimPhysicalCard::new(None, Some(sim_card()));
    let d = v.tap_card(&mut card, at);
    assert_eq!((d.outcome, d.seq), (Ok(()), Some(1)));
}

/// A card whose answers are changed by `edit` (command number, answer data).
struct Garbling<F: FnMut(usize, &mut Vec<u8>)> {
    card: SimQuickPass,
    n: usize,
    edit: F,
}

impl<F: FnMut(usize, &mut Vec<u8>)> CardChannel for Garbling<F> {
    fn transmit(&mut self, command: &[u8], response: &mut Response) -> Result<(), ChannelError> {
        self.card.transmit(command, response)?;
        self.n += 1;
        let mut data = response.data.to_vec();
        (self.edit)(self.n, &mut data);
        let sw = response.sw;
        response.set(&data, sw);
        Ok(())
    }
}

#[test]
fn malformed_tlv_and_truncated_records_are_unreadable() {
    for n in 1..=6usize {
        for cut in [1usize, 2, 5, 40] {
            let mut card = Garbling {
                card: sim_card(),
                n: 0,
                edit: |k, d: &mut Vec<u8>| {
                    if k == n {
                        let keep = d.len().saturating_sub(cut);
                        d.truncate(keep);
                    }
                },
            };
            let got = read_card(&mut card, &terminal());
            assert!(
                matches!(
                    got,
                    Err(ReadError::Unreadable(_) | ReadError::NoApplication)
                ),
                "answer {n} cut by {cut}: {got:?}"
            );
        }
        // A length byte that claims more than there is.
        let mut card = Garbling {
            card: sim_card(),
            n: 0,
            edit: |k, d: &mut Vec<u8>| {
                if k == n && d.len() > 2 {
                    d[1] = 0x7F;
                }
            },
        };
        let got = read_card(&mut card, &terminal());
        assert!(got.is_err(), "answer {n} with a long length: {got:?}");
    }
}

/// A physical card whose answer to command `k` (counted from the transport SELECT) is cut
/// by `cut` bytes, or, with `cut` 0, has its length byte overstated.
struct Cutting {
    card: SimPhysicalCard,
    n: usize,
    k: usize,
    cut: usize,
}

impl CardChannel for Cutting {
    fn transmit(&mut self, command: &[u8], response: &mut Response) -> Result<(), ChannelError> {
        self.card.transmit(command, response)?;
        self.n += 1;
        if self.n == self.k {
            let mut data = response.data.to_vec();
            if self.cut == 0 && data.len() > 2 {
                data[1] = 0x7F;
            } else {
                data.truncate(data.len().saturating_sub(self.cut));
            }
            let sw = response.sw;
            response.set(&data, sw);
        }
        Ok(())
    }
}

/// Through the engine: each answer of the QuickPass dialogue (PPSE, SELECT, GPO, three
/// records) cut short is `unreadable`, an overstated length is refused, never a panic, and
/// nothing is recorded; the card rides once its answers are whole.
#[test]
fn malformed_and_truncated_answers_are_refused_through_the_engine_and_record_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = quickpass_validator(dir.path());
    let mut at = Timestamp::parse_rfc3339(AT).unwrap();
    // Command 1 is the transport SELECT (no such application here); 2 to 7 are QuickPass's.
    for k in 2..=7 {
        for cut in [0usize, 1, 2, 5, 40] {
            let mut card = Cutting {
                card: SimPhysicalCard::new(None, Some(sim_card())),
                n: 0,
                k,
                cut,
            };
            let d = v.tap_card(&mut card, at);
            assert_eq!(d.seq, None, "answer {k} cut by {cut}: {d:?}");
            if cut > 0 {
                assert_eq!(
                    d.outcome,
                    Err(Reason::Unreadable),
                    "answer {k} cut by {cut}"
                );
            } else {
                assert!(!d.accepted(), "answer {k} with an overstated length: {d:?}");
            }
            at = at.plus_s(1);
        }
    }
    assert!(journal::scan(dir.path()).unwrap().records.is_empty());
    let mut card = SimPhysicalCard::new(None, Some(sim_card()));
    assert_eq!(v.tap_card(&mut card, at).seq, Some(1));
}

#[test]
fn clear_pan_is_absent_from_the_journal_and_replay_output() {
    let run = Run::new(&[good_card(json!({}))]);
    let lines = run.replay(&[
        json!({"at": AT, "blacklist": {"op": "add", "kind": "pan", "id": "6214830000000099", "reason": "lost"}}),
        json!({"at": AT, "pan": PAN}),
        json!({"at": "2026-12-01T08:00:05+08:00", "pan": PAN}),
    ]);
    assert_eq!(reason(&lines[0]), "accepted");
    assert_eq!(reason(&lines[1]), "repeat_tap");
    let pan_bcd: Vec<u8> = vec![0x62, 0x14, 0x83, 0x00, 0x00, 0x00, 0x00, 0x01];
    for f in common::files_under(&run.journal()) {
        let bytes = std::fs::read(&f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(PAN), "{} holds the clear PAN", f.display());
        assert!(
            !bytes.windows(pan_bcd.len()).any(|w| w == pan_bcd),
            "{} holds the PAN in BCD",
            f.display()
        );
    }
    let shown = std::process::Command::new(env!("CARGO_BIN_EXE_fare-validator"))
        .args(["journal", "show"])
        .arg(run.journal())
        .output()
        .unwrap();
    let text = String::from_utf8(shown.stdout).unwrap() + &String::from_utf8_lossy(&shown.stderr);
    assert!(text.contains("621483******0001"), "{text}");
    assert!(text.contains("\"pan_token\""), "{text}");
    assert!(
        !text.contains(PAN),
        "journal show prints the clear PAN: {text}"
    );
    for line in &lines {
        assert!(!line.to_string().contains(PAN));
    }
    // The program's logs at their most detailed, for accepted, refused and removed taps.
    let events = run.dir.path().join("events.jsonl");
    let taps = [
        json!({"at": AT, "pan": PAN}),
        json!({"at": "2026-12-01T08:00:05+08:00", "pan": PAN}),
        json!({"at": "2026-12-01T08:10:00+08:00", "pan": PAN, "remove": "after_debit"}),
    ];
    let taps: Vec<String> = taps.iter().map(Value::to_string).collect();
    std::fs::write(&events, taps.join("\n")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fare-validator"))
        .env("RUST_LOG", "trace")
        .args(["replay", "--cards"])
        .arg(run.dir.path().join("cards.json"))
        .arg("--emv-ca")
        .arg(run.dir.path().join("ca.json"))
        .arg(&events)
        .output()
        .unwrap();
    assert!(out.status.success());
    let all =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(all.contains("621483******0001"), "{all}");
    assert!(
        !all.contains(PAN),
        "the program printed the clear PAN: {all}"
    );
}
