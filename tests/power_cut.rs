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
    let spec = CardSpec::new(
        common::card(n).parse().unwrap(),
        RiderCategory::Adult,
        balance_fen.into(),
    );
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
    // The rule that priced it, kept on disk in the grey record across the restarts.
    assert_eq!(records[0].rule, fare_validator::fare::FareRule::BaseFare);
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
    // A second entry torn by the cut, right after the intent.
    bytes[grey::GREY_BYTES..grey::GREY_BYTES + 30].fill(0xC9);
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
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, grey::GREY_FILE_BYTES);
    assert!(
        bytes[grey::GREY_BYTES..].iter().all(|&b| b == 0),
        "cut: zeros after the intent"
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
fn grey_file_starts_a_new_lap_when_settled_and_is_rewritten_around_a_debit_left_open() {
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
    let entries = || grey::scan_grey(dir.path()).next_slot;
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
    // Nothing open after each tap: each intent starts a new lap at slot 0.
    assert_eq!(entries(), 1);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        grey::GREY_FILE_BYTES,
        "written in place, never grown"
    );
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

fn cut(at: &str, n: u32, point: &str) -> String {
    format!(
        r#"{{"at": "{at}", "card_no": "{}", "power_cut": "{point}"}}"#,
        common::card(n)
    )
}

fn restart(at: &str) -> String {
    format!(r#"{{"at": "{at}", "restart": true}}"#)
}

#[test]
fn replay_power_cut_after_debit_is_recovered_on_the_next_tap_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let opts = common::options(Some(dir.path().to_path_buf()));
    let out = common::replay_with(
        &opts,
        &[
            cut("2026-11-28T07:00:00+08:00", 15, "after_debit"),
            restart("2026-11-28T07:00:01+08:00"),
            restart("2026-11-28T07:00:02+08:00"),
            common::tap("2026-11-28T07:00:05+08:00", 15),
            common::tap("2026-11-28T07:02:05+08:00", 15),
        ],
    );
    // Nothing printed for the cut tap; the next is accepted with the earlier fare.
    assert_eq!(out.len(), 2);
    assert_eq!(
        (
            common::reason(&out[0]),
            out[0]["fare_fen"].as_u64(),
            out[0]["balance_fen"].as_u64(),
            out[0]["seq"].as_u64()
        ),
        ("accepted", Some(200), Some(4_800), Some(1))
    );
    assert_eq!(
        (out[1]["balance_fen"].as_u64(), out[1]["seq"].as_u64()),
        (Some(4_600), Some(2))
    );
    let records = journal::scan(dir.path()).unwrap().records;
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].kind, RecordKind::CardRecovered);
}

#[test]
fn replay_power_cut_after_record_keeps_the_record_and_the_retap_is_repeat_tap() {
    let dir = tempfile::tempdir().unwrap();
    let opts = common::options(Some(dir.path().to_path_buf()));
    let out = common::replay_with(
        &opts,
        &[
            cut("2026-11-28T07:00:00+08:00", 1, "after_record"),
            common::tap("2026-11-28T07:00:30+08:00", 1),
            common::tap("2026-11-28T07:00:40+08:00", 2),
        ],
    );
    assert_eq!(out.len(), 2);
    assert_eq!(common::reason(&out[0]), "repeat_tap");
    assert_eq!(
        out[1]["seq"], 2,
        "seq 1 is the cut tap's record, never reused"
    );
    let records = journal::scan(dir.path()).unwrap().records;
    assert_eq!(records.len(), 2);
    assert_eq!((records[0].seq, records[0].balance_fen), (1, Some(4_800)));
}

#[test]
fn replay_power_cut_before_debit_charges_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let opts = common::options(Some(dir.path().to_path_buf()));
    let out = common::replay_with(
        &opts,
        &[
            cut("2026-11-28T07:00:00+08:00", 16, "before_debit"),
            common::tap("2026-11-28T07:00:05+08:00", 16),
        ],
    );
    assert_eq!(out.len(), 1);
    assert_eq!(
        (
            common::reason(&out[0]),
            out[0]["balance_fen"].as_u64(),
            out[0]["seq"].as_u64()
        ),
        ("accepted", Some(4_800), Some(1))
    );
}

#[test]
fn replay_restart_forgets_nothing_the_journal_holds() {
    let dir = tempfile::tempdir().unwrap();
    let opts = common::options(Some(dir.path().to_path_buf()));
    let out = common::replay_with(
        &opts,
        &[
            common::tap("2026-11-28T07:00:00+08:00", 1),
            restart("2026-11-28T07:00:10+08:00"),
            common::tap("2026-11-28T07:00:30+08:00", 1),
            common::tap("2026-11-28T07:00:40+08:00", 2),
            restart("2026-11-28T07:00:50+08:00"),
            common::tap("2026-11-28T07:01:10+08:00", 1),
        ],
    );
    let got: Vec<(&str, Option<u64>)> = out
        .iter()
        .map(|l| (common::reason(l), l["seq"].as_u64()))
        .collect();
    assert_eq!(
        got,
        [
            ("accepted", Some(1)),
            ("repeat_tap", None),
            ("accepted", Some(2)),
            ("accepted", Some(3)),
        ]
    );
    // The card kept its state across the restarts: two boardings, two debits.
    assert_eq!(out[3]["balance_fen"], 4_600);
}

#[test]
fn replay_refuses_malformed_power_cut_and_restart_lines() {
    let opts = common::options(None);
    for bad in [
        cut("2026-11-28T07:00:00+08:00", 1, "later"),
        format!(
            r#"{{"at": "2026-11-28T07:00:00+08:00", "card_no": "{}", "power_cut": "after_debit", "remove": "after_debit"}}"#,
            common::card(1)
        ),
        r#"{"at": "2026-11-28T07:00:00+08:00", "restart": false}"#.to_string(),
        r#"{"at": "2026-11-28T07:00:00+08:00", "restart": true, "route": 2}"#.to_string(),
    ] {
        let mut out = Vec::new();
        let err = fare_validator::replay::run(&opts, bad.as_bytes(), &mut out).unwrap_err();
        assert!(err.to_string().starts_with("events line 1"), "{bad}: {err}");
    }
}

#[test]
fn journal_show_prints_grey_records_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let opts = common::options(Some(dir.path().to_path_buf()));
    let out = common::replay_with(
        &opts,
        &[
            common::tap("2026-11-28T07:00:00+08:00", 1),
            cut("2026-11-28T07:00:10+08:00", 15, "after_debit"),
        ],
    );
    assert_eq!(out.len(), 1);
    let show = |extra: &[&str]| -> Vec<serde_json::Value> {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_fare-validator"))
            .args(["journal", "show"])
            .arg(dir.path())
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success());
        String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let plain = show(&[]);
    assert_eq!(plain.len(), 1, "records only: {plain:?}");
    assert_eq!(plain[0]["seq"], 1);
    let with_grey = show(&["--grey"]);
    let greys: Vec<&str> = with_grey
        .iter()
        .filter_map(|l| l["grey"].as_str())
        .collect();
    // Card 1's intent was settled, leaving none open: card 15's intent, still open, began
    // a new lap over it, and is all the file holds.
    assert_eq!(greys, ["intent"]);
    assert_eq!(with_grey[1]["card_no"], common::card(15));
}

#[test]
fn sim_card_state_saved_and_loaded_keeps_the_purse_counter_and_proofs() {
    use fare_validator::cli::sim_card::{load_state, save_state};
    let dir = tempfile::tempdir().unwrap();
    let mut v = start(dir.path(), new_psam());
    let mut a = card(7);
    a.enter_field(Some(Removal::AfterDebit));
    let _ = v.tap_card(&mut a, t0());
    // The card process stops and starts again from its state file.
    let file = dir.path().join("card7.json");
    save_state(&file, &a).unwrap();
    let mut b = load_state(&file).unwrap();
    assert_eq!(b.state(), a.state());
    assert_eq!((b.balance_fen(), b.offline_counter()), (4_800, 1));
    // The proof of the torn debit came along: recovered, charged once.
    let d = v.tap_card(&mut b, t0().plus_s(10));
    assert_eq!(
        (d.accepted(), d.fare_fen, b.balance_fen()),
        (true, 200, 4_800)
    );
    std::fs::write(&file, "{}").unwrap();
    assert!(load_state(&file).is_err());
}
