//! T=0 readers: a contact PSAM on T=0 answers `61xx` (the data waits for GET RESPONSE) and
//! `6Cxx` (send again with Le = xx). The channel layer (`card::apdu::exchange`) handles both
//! for the PSAM and the card alike, so decisions, records and the cards' purses are those of
//! a T=1 PSAM.

mod common;

use std::process::Command;

use common::*;
use fare_validator::card::apdu::{CardChannel, ChannelError, Response};
use fare_validator::card::psam::Psam;
use fare_validator::card::sim::{CardSpec, PsamProtocol, Removal, SimCard, SimPsam, TestKeys};
use fare_validator::clock::Timestamp;
use fare_validator::engine::{Decision, EngineConfig, Validator};
use fare_validator::journal::{self, Journal};
use fare_validator::types::{ListId, ListReason};
use serde_json::Value;

/// A channel that counts the T=0 traffic passing through it.
struct Counting<C> {
    inner: C,
    answered_61: usize,
    answered_6c: usize,
    get_responses: usize,
}

impl<C: CardChannel> CardChannel for Counting<C> {
    fn transmit(&mut self, cmd: &[u8], r: &mut Response) -> Result<(), ChannelError> {
        if cmd.get(..2) == Some(&[0x00, 0xC0][..]) {
            self.get_responses += 1;
        }
        self.inner.transmit(cmd, r)?;
        match r.sw >> 8 {
            0x61 => self.answered_61 += 1,
            0x6C => self.answered_6c += 1,
            _ => {}
        }
        Ok(())
    }
}

fn spec(n: u32, card_type: &str, balance_fen: i64) -> CardSpec {
    serde_json::from_value(
        serde_json::json!({"card_no": card(n), "card_type": card_type,
        "enabled": true, "valid_from": "2024-01-01", "valid_until": "2034-12-31",
        "balance_fen": balance_fen}),
    )
    .unwrap()
}

/// What a record says: seq, card counter, PSAM sequence, balance, fare, TAC.
type RecordSummary = (u64, u16, u32, Option<i32>, u32, [u8; 4]);

struct Day {
    decisions: Vec<Decision>,
    records: Vec<RecordSummary>,
    purses: Vec<(i32, u16, bool)>,
    psam: Counting<SimPsam>,
}

/// A short day on one validator: purchases, a transfer, a repeat, a torn debit recovered,
/// too little money, and a replaced card locked (the PSAM's CIPHER DATA MAC).
fn day(protocol: PsamProtocol) -> Day {
    let dir = tempfile::tempdir().unwrap();
    let psam = Counting {
        inner: SimPsam::new(TestKeys::default(), [0, 0, 0, 0, 0, 1], 1).with_protocol(protocol),
        answered_61: 0,
        answered_6c: 0,
        get_responses: 0,
    };
    let (journal, _) = Journal::open(dir.path()).unwrap();
    let mut v = Validator::new(
        EngineConfig::default(),
        Psam::open(psam).unwrap(),
        fare_validator::fare::FareTable::default_policy(),
        fare_validator::blacklist::Blacklist::empty(),
        journal,
    );
    let keys = TestKeys::default();
    let mut cards: Vec<SimCard> = [
        spec(1, "adult", 5000),
        spec(2, "student", 50),
        spec(3, "senior", 0),
        spec(4, "adult", 5000),
        spec(5, "adult", 5000),
    ]
    .iter()
    .map(|s| SimCard::new(s, &keys, 1).unwrap())
    .collect();
    v.apply_blacklist(&fare_validator::blacklist::Change {
        op: fare_validator::blacklist::ChangeOp::Add,
        id: ListId::Card(cards[4].card_no()),
        reason: ListReason::Replaced,
    });
    let t0 = Timestamp::parse_rfc3339("2026-11-28T07:00:00+08:00").unwrap();
    let mut decisions = Vec::new();
    let mut tap = |v: &mut Validator<Counting<SimPsam>>, i: usize, at_s, removal| {
        cards[i].enter_field(removal);
        decisions.push(v.tap_card(&mut cards[i], t0.plus_s(at_s)));
    };
    tap(&mut v, 0, 0, None);
    tap(&mut v, 0, 20, None);
    v.set_route(2);
    tap(&mut v, 0, 600, None);
    tap(&mut v, 1, 610, None);
    tap(&mut v, 2, 620, None);
    tap(&mut v, 3, 630, Some(Removal::AfterDebit));
    tap(&mut v, 3, 640, None);
    tap(&mut v, 4, 650, None);
    tap(&mut v, 4, 660, None);
    let purses = cards
        .iter()
        .map(|c| (c.balance_fen(), c.offline_counter(), c.is_blocked()))
        .collect();
    let psam = v.into_psam().into_channel();
    let records = journal::scan(dir.path())
        .unwrap()
        .records
        .iter()
        .map(|r| {
            (
                r.seq,
                r.card_tx.offline_counter,
                r.card_tx.terminal_seq,
                r.balance_fen,
                r.fare_fen,
                r.card_tx.tac,
            )
        })
        .collect();
    Day {
        decisions,
        records,
        purses,
        psam,
    }
}

#[test]
fn t0_psam_answers_61xx_and_decisions_do_not_change() {
    let t1 = day(PsamProtocol::T1);
    let t0 = day(PsamProtocol::T0);
    assert_eq!(t0.decisions, t1.decisions, "decisions");
    assert_eq!(t0.records, t1.records, "records, TACs included");
    assert_eq!(t0.purses, t1.purses, "cards");
    let outcomes: Vec<_> = t0.decisions.iter().map(|d| d.outcome.err()).collect();
    use fare_validator::types::Reason::*;
    assert_eq!(
        outcomes,
        [
            None,
            Some(RepeatTap),
            None,
            Some(InsufficientBalance),
            None,
            Some(CardRemoved),
            None,
            Some(Blacklisted),
            Some(CardBlocked)
        ]
    );
    assert!(
        t0.purses[4].2,
        "the replaced card was locked through the T=0 PSAM's MAC"
    );
    // The T=0 PSAM really spoke T=0: MAC1 (5 purchases) and CIPHER DATA through GET RESPONSE,
    // the terminal number read with Le 00 settled by 6C06; the T=1 one never.
    assert_eq!((t0.psam.answered_61, t0.psam.get_responses), (5, 5));
    assert_eq!(t0.psam.answered_6c, 1);
    assert_eq!(
        (
            t1.psam.answered_61,
            t1.psam.answered_6c,
            t1.psam.get_responses
        ),
        (0, 0, 0)
    );
}

fn json_lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn replay_with_psam_protocol_t0_prints_what_t1_prints() {
    let run = |protocol: Option<&str>| {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Command::new(env!("CARGO_BIN_EXE_fare-validator"));
        c.args(["replay", "--cards"])
            .arg(fixture("replay/cards.json"))
            .args(["--keys"])
            .arg(fixture("ride-code-keys.json"))
            .arg("--journal")
            .arg(dir.path());
        if let Some(p) = protocol {
            c.args(["--psam-protocol", p]);
        }
        let out = c.arg(fixture("replay/events.jsonl")).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let show = Command::new(env!("CARGO_BIN_EXE_fare-validator"))
            .args(["journal", "show"])
            .arg(dir.path())
            .output()
            .unwrap();
        (json_lines(&out.stdout), json_lines(&show.stdout))
    };
    let (t1, t1_journal) = run(Some("t1"));
    let (t0, t0_journal) = run(Some("t0"));
    let (default, _) = run(None);
    assert_eq!(t0, t1);
    assert_eq!(default, t1);
    assert_eq!(t0_journal, t1_journal);
    let want = json_lines(&std::fs::read(fixture("replay/expected.jsonl")).unwrap());
    assert_eq!(t0, want, "fixtures/replay/expected.jsonl");

    let bad = Command::new(env!("CARGO_BIN_EXE_fare-validator"))
        .args(["replay", "--psam-protocol", "t2", "--cards"])
        .arg(fixture("replay/cards.json"))
        .arg(fixture("replay/events.jsonl"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
}
