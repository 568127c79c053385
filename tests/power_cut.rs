//! Power cuts and restarts: the intent to debit (grey record, 灰记录) is durable before the
//! debit, a restart forgets nothing the journal holds, and a card is charged at most once
//! per boarding with every debit recorded exactly once.

mod common;

use std::path::Path;

use fare_validator::blacklist::Blacklist;
use fare_validator::card::psam::Psam;
use fare_validator::card::sim::{CardSpec, Removal, SimCard, SimPsam, TestKeys};
use fare_validator::clock::Timestamp;
use fare_validator::engine::{EngineConfig, Validator};
use fare_validator::fare::FareTable;
use fare_validator::journal::{self, grey, Journal, RecordKind};
use fare_validator::types::{Reason, RiderCategory};

fn card(n: u32) -> SimCard {
    card_with(n, 5_000)
}

fn card_with(n: u32, balance_fen: u32) -> SimCard {
    let spec = CardSpec {
        card_no: common::card(n).parse().unwrap(),
        card_type: RiderCategory::Adult,
        enabled: true,
        valid_from: "2024-01-01".into(),
        valid_until: "2034-12-31".into(),
        balance_fen,
    };
    SimCard::new(&spec, &TestKeys::default(), 7).unwrap()
}

/// Switch a validator on from its disk, with the PSAM it had.
fn start(dir: &Path, psam: SimPsam) -> Validator<SimPsam> {
    let (journal, _) = Journal::open(dir).unwrap();
    Validator::new(
        EngineConfig::default(),
        Psam::open(psam).unwrap(),
        FareTable::default_policy(),
        Blacklist::empty(),
        journal,
    )
}

/// Switch it off: only the PSAM survives (and the disk).
fn switch_off(v: Validator<SimPsam>) -> SimPsam {
    let mut psam = v.into_psam().into_channel();
    psam.reset();
    psam
}

fn t0() -> Timestamp {
    Timestamp::parse_rfc3339("2026-11-28T07:00:00+08:00").unwrap()
}

fn new_psam() -> SimPsam {
    SimPsam::new(TestKeys::default(), [0, 0, 0, 0, 0, 1], 1)
}

#[test]
fn debit_cut_by_power_is_recovered_after_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = start(dir.path(), new_psam());
    let mut a = card(1);
    // The purse is debited, then the power goes before the proof is read.
    a.enter_field(Some(Removal::AfterDebit));
    let _ = v.tap_card(&mut a, t0());
    assert_eq!(a.balance_fen(), 4_800);
    assert_eq!(v.journal().grey_open().len(), 1);
    let mut psam = switch_off(v);
    // However many restarts come between, the intent is still on disk.
    for _ in 0..3 {
        let v = start(dir.path(), psam);
        assert_eq!(v.journal().grey_open().len(), 1);
        psam = switch_off(v);
    }
    let mut v = start(dir.path(), psam);
    a.enter_field(None);
    let d = v.tap_card(&mut a, t0().plus_s(20));
    assert_eq!(
        (d.outcome, d.fare_fen, d.balance_fen, d.seq),
        (Ok(()), 200, Some(4_800), Some(1))
    );
    assert_eq!(a.balance_fen(), 4_800, "charged once");
    let psam = switch_off(v);
    // Recorded once; settled, so no restart brings it back.
    let records = journal::scan(dir.path()).unwrap().records;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].kind, RecordKind::CardRecovered);
    let mut v = start(dir.path(), psam);
    assert!(v.journal().grey_open().is_empty());
    a.enter_field(None);
    let d = v.tap_card(&mut a, t0().plus_s(200));
    assert_eq!((d.seq, a.balance_fen()), (Some(2), 4_600));
}

#[test]
fn debit_never_sent_before_a_power_cut_is_voided_and_the_retap_pays_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = start(dir.path(), new_psam());
    let mut a = card(2);
    a.enter_field(Some(Removal::BeforeDebit));
    let _ = v.tap_card(&mut a, t0());
    let mut v = start(dir.path(), switch_off(v));
    a.enter_field(None);
    let d = v.tap_card(&mut a, t0().plus_s(5));
    assert_eq!(
        (d.accepted(), d.seq, a.balance_fen()),
        (true, Some(1), 4_800)
    );
    assert!(v.journal().grey_open().is_empty());
    let records = journal::scan(dir.path()).unwrap().records;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].kind, RecordKind::CardPurchase);
}

#[test]
fn restart_remembers_anti_passback_from_journal() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = start(dir.path(), new_psam());
    let mut a = card(3);
    assert!(v.tap_card(&mut a, t0()).accepted());
    let mut v = start(dir.path(), switch_off(v));
    a.enter_field(None);
    assert_eq!(
        v.tap_card(&mut a, t0().plus_s(30)).outcome,
        Err(Reason::RepeatTap)
    );
    a.enter_field(None);
    let d = v.tap_card(&mut a, t0().plus_s(61));
    assert_eq!((d.accepted(), d.seq), (true, Some(2)));
}

#[test]
fn record_durable_but_settle_lost_is_not_recorded_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = start(dir.path(), new_psam());
    let mut a = card(4);
    assert!(v.tap_card(&mut a, t0()).accepted());
    let psam = switch_off(v);
    // The settle entry never reached the disk: only the intent is there.
    let path = grey::grey_path(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..grey::GREY_BYTES]).unwrap();
    let mut v = start(dir.path(), psam);
    assert!(v.journal().grey_open().is_empty(), "settled by the journal");
    a.enter_field(None);
    let d = v.tap_card(&mut a, t0().plus_s(100));
    assert_eq!((d.seq, a.balance_fen()), (Some(2), 4_600));
    let records = journal::scan(dir.path()).unwrap().records;
    assert!(records.iter().all(|r| r.kind == RecordKind::CardPurchase));
}

#[test]
fn torn_grey_tail_is_cut_and_reported_and_the_bus_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = start(dir.path(), new_psam());
    let mut a = card(5);
    a.enter_field(Some(Removal::AfterDebit));
    let _ = v.tap_card(&mut a, t0());
    let psam = switch_off(v);
    let path = grey::grey_path(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&[0xC9; 30]);
    std::fs::write(&path, &bytes).unwrap();
    let (journal, problems) = Journal::open(dir.path()).unwrap();
    assert!(
        problems.iter().any(|p| p.what.contains("torn grey tail")),
        "{problems:?}"
    );
    assert_eq!(
        journal.grey_open().len(),
        1,
        "the intent before the tear is kept"
    );
    drop(journal);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len() as usize,
        grey::GREY_BYTES,
        "cut"
    );
    let mut v = start(dir.path(), psam);
    a.enter_field(None);
    let d = v.tap_card(&mut a, t0().plus_s(10));
    assert_eq!((d.accepted(), a.balance_fen()), (true, 4_800));
}

#[test]
fn unreadable_grey_file_is_reported_and_the_bus_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    // A folder where the file should be: it cannot be read or opened for writing.
    std::fs::create_dir_all(grey::grey_path(dir.path())).unwrap();
    let (journal, problems) = Journal::open(dir.path()).unwrap();
    assert!(problems.iter().any(|p| p.what.contains("unreadable")));
    drop(journal);
    let mut v = start(dir.path(), new_psam());
    let mut a = card(6);
    // Card debits are refused (no durable intent, no debit); nothing is charged.
    assert_eq!(
        v.tap_card(&mut a, t0()).outcome,
        Err(Reason::StorageUnavailable)
    );
    assert_eq!(a.balance_fen(), 5_000);
}

#[test]
fn grey_file_is_compacted_when_settled_and_rewritten_around_a_debit_left_open() {
    use fare_validator::journal::UnsyncedFiles;
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open_with(dir.path(), Box::new(UnsyncedFiles)).unwrap();
    let mut v = Validator::new(
        EngineConfig::default(),
        Psam::open(new_psam()).unwrap(),
        FareTable::default_policy(),
        Blacklist::empty(),
        journal,
    );
    let path = grey::grey_path(dir.path());
    let entries = || std::fs::metadata(&path).unwrap().len() / grey::GREY_BYTES as u64;
    let mut cards: Vec<SimCard> = (10..20).map(|n| card_with(n, 1_000_000)).collect();
    let mut now = t0();
    let mut tap_all = |v: &mut Validator<SimPsam>, rounds: usize| {
        for _ in 0..rounds {
            now = now.plus_s(61);
            for c in cards.iter_mut() {
                c.enter_field(None);
                assert!(v.tap_card(c, now).accepted());
            }
        }
    };
    tap_all(&mut v, 30);
    assert!(entries() < grey::GREY_COMPACT_ENTRIES, "{}", entries());
    // One debit stays in doubt: the file is rewritten around it, and it survives.
    let mut a = card(1);
    a.enter_field(Some(Removal::AfterDebit));
    let _ = v.tap_card(&mut a, t0());
    assert_eq!(v.journal().grey_open().len(), 1);
    for _ in 0..(grey::GREY_FILE_ENTRIES_MAX / 20 + 1) {
        tap_all(&mut v, 1);
    }
    assert!(entries() < grey::GREY_FILE_ENTRIES_MAX, "{}", entries());
    drop(v);
    let (journal, problems) = Journal::open(dir.path()).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(journal.grey_open().len(), 1);
}
