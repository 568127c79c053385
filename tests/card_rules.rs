//! Each card rule of docs/replay.md, through `replay` with the fixture cards.

mod common;

use common::*;
use fare_validator::card::apdu::{sw, CardChannel, ChannelError, Response};
use fare_validator::card::psam::Psam;
use fare_validator::card::sim::{SimPsam, TestKeys};
use fare_validator::clock::Timestamp;
use fare_validator::engine::{EngineConfig, Validator};
use fare_validator::journal::Journal;
use fare_validator::types::Reason;

fn blacklist(op: &str, n: u32, why: &str, at: &str) -> String {
    format!(
        r#"{{"at": "{at}", "blacklist": {{"op": "{op}", "kind": "card", "id": "{}", "reason": "{why}"}}}}"#,
        card(n)
    )
}

#[test]
fn adult_pays_the_base_fare_and_the_balance_goes_down() {
    let out = replay_events(&[tap("2026-11-28T07:00:00+08:00", 1)]);
    assert_eq!(reason(&out[0]), "accepted");
    assert_eq!(
        (
            out[0]["fare_fen"].as_u64(),
            out[0]["balance_fen"].as_u64(),
            out[0]["seq"].as_u64()
        ),
        (Some(200), Some(4800), Some(1))
    );
}

#[test]
fn student_pays_half_and_free_riders_are_still_recorded() {
    let out = replay_events(&[
        tap("2026-11-28T07:00:00+08:00", 2),
        tap("2026-11-28T07:00:10+08:00", 3),
        tap("2026-11-28T07:00:20+08:00", 8),
        tap("2026-11-28T07:00:30+08:00", 9),
    ]);
    let fares: Vec<_> = out
        .iter()
        .map(|l| l["fare_fen"].as_u64().unwrap())
        .collect();
    assert_eq!(fares, [100, 0, 0, 0]);
    let seqs: Vec<_> = out.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
}

/// A channel to a card with no transport application, or with a broken public file.
struct BrokenCard {
    select_sw: u16,
    public_file: Vec<u8>,
}

impl CardChannel for BrokenCard {
    fn transmit(&mut self, cmd: &[u8], r: &mut Response) -> Result<(), ChannelError> {
        match cmd[1] {
            0xA4 => r.status(self.select_sw),
            0xB0 => r.set(&self.public_file, sw::OK),
            _ => r.status(sw::INS_NOT_SUPPORTED),
        }
        Ok(())
    }
}

fn validator(dir: &std::path::Path) -> Validator<SimPsam> {
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
fn card_without_transport_application_or_with_malformed_files_is_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = validator(dir.path());
    let now = Timestamp::parse_rfc3339("2026-11-28T07:00:00+08:00").unwrap();
    let mut no_app = BrokenCard {
        select_sw: sw::FILE_NOT_FOUND,
        public_file: vec![],
    };
    assert_eq!(
        v.tap_card(&mut no_app, now).outcome,
        Err(Reason::Unreadable)
    );
    let mut short = BrokenCard {
        select_sw: sw::OK,
        public_file: vec![0; 29],
    };
    assert_eq!(v.tap_card(&mut short, now).outcome, Err(Reason::Unreadable));
    let mut bad_dates = BrokenCard {
        select_sw: sw::OK,
        public_file: vec![0; 30],
    };
    assert_eq!(
        v.tap_card(&mut bad_dates, now).outcome,
        Err(Reason::Unreadable)
    );
    assert_eq!(v.journal().durable_seq(), 0);
}

#[test]
fn transport_function_never_enabled_is_not_activated() {
    let out = replay_events(&[tap("2026-11-28T07:00:00+08:00", 4)]);
    assert_eq!(reason(&out[0]), "not_activated");
    assert!(out[0]["seq"].is_null());
}

#[test]
fn validity_dates_are_inclusive_at_both_edges_in_the_local_date_of_the_tap() {
    // Card 5 is valid from 2026-11-29; card 6 until 2026-11-27; card 13 from 2026-11-28;
    // card 14 until 2026-11-28.
    let out = replay_events(&[
        tap("2026-11-28T23:59:59+08:00", 5),
        tap("2026-11-29T00:00:00+08:00", 5),
        tap("2026-11-28T00:00:00+08:00", 6),
        tap("2026-11-27T23:59:59+08:00", 6),
        tap("2026-11-28T00:00:00+08:00", 13),
        tap("2026-11-27T23:59:59+08:00", 13),
        tap("2026-11-28T23:59:59+08:00", 14),
        tap("2026-11-29T00:00:00+08:00", 14),
        // 2026-11-28T15:59:59Z is 23:59:59 in Dezhou, but the date is taken in the offset of `at`.
        tap("2026-11-28T16:00:00+00:00", 5),
    ]);
    let got: Vec<_> = out.iter().map(reason).collect();
    assert_eq!(
        got,
        [
            "card_not_yet_valid",
            "accepted",
            "card_expired",
            "accepted",
            "accepted",
            "card_not_yet_valid",
            "accepted",
            "card_expired",
            "card_not_yet_valid"
        ]
    );
}

#[test]
fn lost_card_is_refused_but_not_locked_and_rides_again_after_unreport() {
    let out = replay_events(&[
        blacklist("add", 10, "lost", "2026-11-28T07:00:00+08:00"),
        tap("2026-11-28T07:00:10+08:00", 10),
        tap("2026-11-28T07:00:20+08:00", 10),
        blacklist("remove", 10, "lost", "2026-11-28T07:01:00+08:00"),
        tap("2026-11-28T07:01:10+08:00", 10),
    ]);
    let got: Vec<_> = out.iter().map(reason).collect();
    assert_eq!(got, ["blacklisted", "blacklisted", "accepted"]);
}

#[test]
fn replaced_card_is_locked_on_the_spot_and_then_card_blocked() {
    let out = replay_events(&[
        blacklist("add", 11, "replaced", "2026-11-28T07:00:00+08:00"),
        tap("2026-11-28T07:00:10+08:00", 11),
        tap("2026-11-28T07:00:20+08:00", 11),
        // Even taken off the list, a blocked card stays dead.
        blacklist("remove", 11, "replaced", "2026-11-28T07:01:00+08:00"),
        tap("2026-11-28T07:01:10+08:00", 11),
    ]);
    let got: Vec<_> = out.iter().map(reason).collect();
    assert_eq!(got, ["blacklisted", "card_blocked", "card_blocked"]);
}

#[test]
fn cancelled_card_is_locked_too() {
    let out = replay_events(&[
        blacklist("add", 12, "cancelled", "2026-11-28T07:00:00+08:00"),
        tap("2026-11-28T07:00:10+08:00", 12),
        tap("2026-11-28T07:05:10+08:00", 12),
    ]);
    assert_eq!(
        out.iter().map(reason).collect::<Vec<_>>(),
        ["blacklisted", "card_blocked"]
    );
}

#[test]
fn anti_passback_refuses_at_59_seconds_and_accepts_at_60() {
    let out = replay_events(&[
        tap("2026-11-28T07:00:00+08:00", 1),
        tap("2026-11-28T07:00:59+08:00", 1),
        tap("2026-11-28T07:01:00+08:00", 1),
    ]);
    assert_eq!(
        out.iter().map(reason).collect::<Vec<_>>(),
        ["accepted", "repeat_tap", "accepted"]
    );
    assert_eq!(out[1]["fare_fen"], 0);
    assert_eq!(out[2]["balance_fen"], 4600);
}

#[test]
fn insufficient_balance_reports_the_balance_read() {
    let out = replay_events(&[tap("2026-11-28T07:00:00+08:00", 7)]);
    assert_eq!(reason(&out[0]), "insufficient_balance");
    assert_eq!(out[0]["balance_fen"], 150);
    assert_eq!(out[0]["fare_fen"], 0);
}

fn route(at: &str, r: u16) -> String {
    format!(r#"{{"at": "{at}", "route": {r}}}"#)
}

#[test]
fn transfer_applies_at_60_minutes_and_not_at_61() {
    let out = replay_events(&[
        tap("2026-11-28T07:00:00+08:00", 1),
        tap("2026-11-28T07:00:00+08:00", 15),
        route("2026-11-28T07:30:00+08:00", 8),
        tap("2026-11-28T08:00:00+08:00", 1),
        tap("2026-11-28T08:01:00+08:00", 15),
    ]);
    let fares: Vec<_> = out
        .iter()
        .map(|l| l["fare_fen"].as_u64().unwrap())
        .collect();
    assert_eq!(fares, [200, 200, 100, 200]);
}

#[test]
fn same_route_is_never_a_transfer() {
    let out = replay_events(&[
        tap("2026-11-28T07:00:00+08:00", 1),
        tap("2026-11-28T07:10:00+08:00", 1),
    ]);
    assert_eq!(out[1]["fare_fen"], 200);
}

#[test]
fn recovers_debit_after_card_pulled_away_and_charges_once() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(Some(dir.path().to_path_buf()));
    let out = replay_with(
        &opts,
        &[
            format!(
                r#"{{"at": "2026-11-28T07:00:00+08:00", "card_no": "{}", "remove": "after_debit"}}"#,
                card(15)
            ),
            tap("2026-11-28T07:00:05+08:00", 15),
            tap("2026-11-28T07:02:05+08:00", 15),
        ],
    );
    assert_eq!(reason(&out[0]), "card_removed");
    assert!(out[0]["seq"].is_null());
    // The re-tap is accepted with the first fare, charging nothing more.
    assert_eq!(reason(&out[1]), "accepted");
    assert_eq!(
        (out[1]["fare_fen"].as_u64(), out[1]["balance_fen"].as_u64()),
        (Some(200), Some(4800))
    );
    // A later, ordinary boarding pays again: the purse went down exactly twice.
    assert_eq!(out[2]["balance_fen"], 4600);
    let records = fare_validator::journal::scan(dir.path()).unwrap().records;
    assert_eq!(records.len(), 2, "the recovered debit is recorded once");
    assert_eq!(
        records[0].kind,
        fare_validator::journal::RecordKind::CardRecovered
    );
    assert_eq!(records[0].fare_fen, 200);
    // Priced before the debit: the grey record kept the rule for the recovered record.
    assert_eq!(
        records[0].rule,
        fare_validator::fare::FareRule::BaseFare,
        "the rule its intent promised"
    );
}

#[test]
fn card_pulled_away_before_debit_is_not_charged_and_pays_normally_on_the_retap() {
    let out = replay_events(&[
        format!(
            r#"{{"at": "2026-11-28T07:00:00+08:00", "card_no": "{}", "remove": "before_debit"}}"#,
            card(16)
        ),
        tap("2026-11-28T07:00:05+08:00", 16),
    ]);
    assert_eq!(reason(&out[0]), "card_removed");
    assert_eq!(out[0]["balance_fen"], 5000);
    assert_eq!(
        (
            reason(&out[1]),
            out[1]["balance_fen"].as_u64(),
            out[1]["seq"].as_u64()
        ),
        ("accepted", Some(4800), Some(1))
    );
}

#[test]
fn invalid_event_lines_are_refused_with_their_line_number() {
    let opts = options(None);
    for bad in [
        r#"{"at": "2026-11-28T07:00:00", "card_no": "37140000000000000001"}"#,
        r#"{"at": "2026-11-28T07:00:00+08:00", "card_no": "37149999999999999999"}"#,
        r#"{"at": "2026-11-28T07:00:00+08:00", "card_no": "3714"}"#,
        r#"{"at": "2026-11-28T07:00:00+08:00", "card_no": "37140000000000000001", "remove": "later"}"#,
        r#"{"at": "2026-11-28T07:00:00+08:00", "bus": 1}"#,
        r#"{"at": "2026-11-28T07:00:00+08:00", "route": -1}"#,
        r#"{"at": "2026-11-28T07:00:00+08:00", "blacklist": {"op": "add", "kind": "card", "id": "1", "reason": "lost"}}"#,
        r#"[1, 2]"#,
    ] {
        let input = format!("{}\n{bad}\n", tap("2026-11-28T06:00:00+08:00", 1));
        let mut out = Vec::new();
        let err = fare_validator::replay::run(&opts, input.as_bytes(), &mut out).unwrap_err();
        assert!(err.to_string().starts_with("events line 2"), "{bad}: {err}");
        assert_eq!(
            String::from_utf8(out).unwrap().lines().count(),
            1,
            "no decision for the bad line"
        );
    }
}

#[test]
fn group_commit_shares_one_sync_and_nothing_is_durable_before_it() {
    use fare_validator::card::sim::{CardSpec, SimCard};
    let dir = tempfile::tempdir().unwrap();
    let mut v = validator(dir.path());
    v.set_group_commit(true);
    let keys = TestKeys::default();
    let now = Timestamp::parse_rfc3339("2026-11-28T07:00:00+08:00").unwrap();
    let mut seqs = Vec::new();
    for n in 1..=3u32 {
        let spec = CardSpec::new(
            card(n).parse().unwrap(),
            fare_validator::types::RiderCategory::Adult,
            1000,
        );
        let mut c = SimCard::new(&spec, &keys, 1).unwrap();
        let d = v.tap_card(&mut c, now);
        seqs.push(d.seq.unwrap());
    }
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(
        v.journal().durable_seq(),
        0,
        "not durable before the group sync"
    );
    assert!(fare_validator::journal::scan(dir.path())
        .unwrap()
        .records
        .is_empty());
    assert_eq!(v.commit().unwrap(), 3);
    assert_eq!(
        fare_validator::journal::scan(dir.path())
            .unwrap()
            .records
            .len(),
        3
    );
}

/// What the disk and the cards saw, in order: `grey sync`, `journal sync`, `debit N`.
type Events = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

struct Logged {
    inner: Box<dyn fare_validator::journal::SegmentFile>,
    what: &'static str,
    events: Events,
}

impl fare_validator::journal::SegmentFile for Logged {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.write_at(offset, bytes)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.events
            .lock()
            .unwrap()
            .push(format!("{} sync", self.what));
        self.inner.sync()
    }
}

struct LoggedFiles(Events);

impl fare_validator::journal::FileLayer for LoggedFiles {
    fn open_segment(
        &self,
        path: &std::path::Path,
        len: u64,
    ) -> std::io::Result<Box<dyn fare_validator::journal::SegmentFile>> {
        let inner = fare_validator::journal::OsFiles.open_segment(path, len)?;
        let what = if path.ends_with(fare_validator::journal::grey::GREY_FILE) {
            "grey"
        } else {
            "journal"
        };
        Ok(Box::new(Logged {
            inner,
            what,
            events: self.0.clone(),
        }))
    }
}

struct LoggedCard {
    card: fare_validator::card::sim::SimCard,
    n: u32,
    events: Events,
}

impl CardChannel for LoggedCard {
    fn transmit(&mut self, cmd: &[u8], r: &mut Response) -> Result<(), ChannelError> {
        if cmd.get(..2) == Some(&[0x80, 0x54]) {
            self.events
                .lock()
                .unwrap()
                .push(format!("debit {}", self.n));
        }
        self.card.transmit(cmd, r)
    }
}

#[test]
fn a_burst_on_several_readers_syncs_its_intents_once_before_any_debit_and_its_records_once() {
    use fare_validator::card::sim::{CardSpec, SimCard};
    let dir = tempfile::tempdir().unwrap();
    let events = Events::default();
    let psam = Psam::open(SimPsam::new(TestKeys::default(), [0, 0, 0, 0, 0, 1], 1)).unwrap();
    let (journal, _) =
        Journal::open_with(dir.path(), Box::new(LoggedFiles(events.clone()))).unwrap();
    let mut v = Validator::new(
        EngineConfig::default(),
        psam,
        fare_validator::fare::FareTable::default_policy(),
        fare_validator::blacklist::Blacklist::empty(),
        journal,
    );
    let sim = |n: u32| {
        let spec = CardSpec::new(
            card(n).parse().unwrap(),
            fare_validator::types::RiderCategory::Adult,
            1000,
        );
        LoggedCard {
            card: SimCard::new(&spec, &TestKeys::default(), 1).unwrap(),
            n,
            events: events.clone(),
        }
    };
    let mut cards: Vec<LoggedCard> = (1..=3).map(sim).collect();
    // The same card on a fourth reader (a copy of card 2): it boards once.
    cards.push(sim(2));
    let t0 = Timestamp::parse_rfc3339("2026-11-28T07:00:00+08:00").unwrap();
    // A first tap alone: the PSAM's counter is known from then on.
    let mut first = sim(9);
    first.card.enter_field(None);
    assert!(v.tap_card(&mut first, t0).accepted());
    events.lock().unwrap().clear();

    for c in cards.iter_mut() {
        c.card.enter_field(None);
    }
    let d = v.tap_burst(&mut cards, t0.plus_s(5));
    let outcomes: Vec<_> = d.iter().map(|d| (d.outcome, d.seq)).collect();
    assert_eq!(
        outcomes,
        [
            (Ok(()), Some(2)),
            (Ok(()), Some(3)),
            (Ok(()), Some(4)),
            (Err(Reason::RepeatTap), None)
        ]
    );
    assert_eq!(
        *events.lock().unwrap(),
        ["grey sync", "debit 1", "debit 2", "debit 3", "journal sync"],
        "one sync of the intents before any debit, one of the records after"
    );
    assert_eq!(v.journal().durable_seq(), 4, "committed before the answers");
    let records = fare_validator::journal::scan(dir.path()).unwrap().records;
    let counters: Vec<_> = records.iter().map(|r| r.card_tx.terminal_seq).collect();
    let want: Vec<_> = (0..4).map(|k| counters[0] + k).collect();
    assert_eq!(
        counters, want,
        "each record holds the sequence its MAC1 took"
    );
    assert!(v.journal().grey_open().is_empty(), "every intent settled");
    // The intents on disk said what the records say.
    let greys = fare_validator::journal::grey::scan_grey(dir.path()).entries;
    for r in &records[1..] {
        assert!(greys
            .iter()
            .any(|(op, g)| *op == fare_validator::journal::GreyOp::Intent
                && g.is_recorded_by(r)
                && g.terminal_seq == r.card_tx.terminal_seq));
    }
}

#[test]
fn lost_then_replaced_card_stays_locked_after_late_unreport() {
    // 挂失, then 补领 (the old card is replaced), then the loss report filed again at another
    // counter and a late 解挂: lost is lifted, replaced stays, and the card is locked.
    let out = replay_events(&[
        blacklist("add", 10, "lost", "2026-11-28T07:00:00+08:00"),
        tap("2026-11-28T07:00:10+08:00", 10),
        blacklist("add", 10, "replaced", "2026-11-28T07:01:00+08:00"),
        blacklist("add", 10, "lost", "2026-11-28T07:02:00+08:00"),
        blacklist("remove", 10, "lost", "2026-11-28T07:03:00+08:00"),
        tap("2026-11-28T07:03:10+08:00", 10),
        tap("2026-11-28T07:05:10+08:00", 10),
    ]);
    let got: Vec<_> = out.iter().map(reason).collect();
    assert_eq!(got, ["blacklisted", "blacklisted", "card_blocked"]);
}

#[test]
fn remove_of_one_reason_keeps_a_card_listed_for_another() {
    // Listed lost and cancelled; 解挂 lifts lost, 注销 stays: refused and locked.
    let out = replay_events(&[
        blacklist("add", 12, "cancelled", "2026-11-28T07:00:00+08:00"),
        blacklist("add", 12, "lost", "2026-11-28T07:00:01+08:00"),
        blacklist("remove", 12, "lost", "2026-11-28T07:00:02+08:00"),
        tap("2026-11-28T07:00:10+08:00", 12),
        // Two reasons lost and arrears on card 10, neither locks: refused, not locked; once
        // both are lifted it rides.
        blacklist("add", 10, "lost", "2026-11-28T07:01:00+08:00"),
        blacklist("add", 10, "arrears", "2026-11-28T07:01:01+08:00"),
        blacklist("remove", 10, "lost", "2026-11-28T07:01:02+08:00"),
        tap("2026-11-28T07:01:10+08:00", 10),
        blacklist("remove", 10, "arrears", "2026-11-28T07:02:00+08:00"),
        tap("2026-11-28T07:02:10+08:00", 10),
    ]);
    let got: Vec<_> = out.iter().map(reason).collect();
    assert_eq!(got, ["blacklisted", "blacklisted", "accepted"]);
}

#[test]
fn csv_listing_lost_and_replaced_locks_the_card() {
    // One id on two lines, in either order: listed for both, so the card is locked.
    let dir = tempfile::tempdir().unwrap();
    for (first, second) in [("lost", "replaced"), ("replaced", "lost")] {
        let csv = dir.path().join(format!("{first}-{second}.csv"));
        std::fs::write(
            &csv,
            format!(
                "kind,id,reason\ncard,{c},{first}\ncard,{c},{second}\n",
                c = card(10)
            ),
        )
        .unwrap();
        let opts = fare_validator::replay::ReplayOptions {
            blacklist: Some(csv),
            ..options(None)
        };
        let out = replay_with(
            &opts,
            &[
                tap("2026-11-28T07:00:10+08:00", 10),
                tap("2026-11-28T07:05:10+08:00", 10),
                // 解挂 lifts lost only.
                blacklist("remove", 10, "lost", "2026-11-28T07:06:00+08:00"),
                tap("2026-11-28T07:10:10+08:00", 10),
            ],
        );
        let got: Vec<_> = out.iter().map(reason).collect();
        assert_eq!(
            got,
            ["blacklisted", "card_blocked", "card_blocked"],
            "{first} then {second}"
        );
    }
}
