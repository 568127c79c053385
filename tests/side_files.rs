//! A damaged side file never stops the bus: each file read at start has a fallback that
//! keeps the validator running and loses nothing, and each repair is reported (an error
//! event, and a count in `journal show`'s summary).

mod depot_support;

use std::path::Path;
use std::process::Command;

use depot_support::*;
use ed25519_dalek::SigningKey;
use fare_validator::blacklist::file::{delta_file, snapshot_file, Delta};
use fare_validator::blacklist::{Blacklist, Change, ChangeOp};
use fare_validator::journal::repair::{self, SideFile};
use fare_validator::journal::Journal;
use fare_validator::signed::{self, FileKind};
use fare_validator::types::{ListId, ListReason, ReasonSet};
use fare_validator::upload::downlink::{DownlinkDir, DownlinkError};
use fare_validator::upload::{self};
use serde_json::Value;

const FARES: &str = include_str!("../fixtures/fares.toml");
const KEYS: &str = include_str!("../fixtures/ride-code-keys.json");

fn operator() -> SigningKey {
    SigningKey::from_bytes(&[1; 32])
}

fn card(n: u8) -> ListId {
    ListId::Card(format!("371400000000000000{n:02}").parse().unwrap())
}

/// `journal show DIR`: the records on standard output, the summary from standard error.
fn show(dir: &Path) -> (Vec<Value>, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_fare-validator"))
        .args(["journal", "show"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let line = err
        .lines()
        .find_map(|l| l.strip_prefix("fare-validator: journal {\"summary\""))
        .unwrap_or_else(|| panic!("no summary in {err}"));
    let summary: Value = serde_json::from_str(&format!("{{\"summary\"{line}")).unwrap();
    (records, summary["summary"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_cursor_file_resends_from_start_and_bus_keeps_running() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let dir = tmp.path().join("bus");
    card_journal(&dir, 10);
    let st = station(store(&db, 1)).await;
    let r = upload::upload(&dir, st.addr(), &terminal_id(0), &secret(0))
        .await
        .unwrap();
    assert_eq!(r.acked_seq, 10);
    write_journal(&dir, (11..=12).map(card_record));

    // A flash card that lied about a flush: the cursor file is empty.
    std::fs::write(dir.join("acked"), b"").unwrap();
    let (records, summary) = show(&dir);
    assert_eq!(records.len(), 12, "journal show still prints every record");
    assert_eq!(summary["problems"], 1);

    // The journal opens, falls back to the start of what it holds, and takes records.
    let (mut j, problems) = Journal::open(&dir).unwrap();
    assert!(problems
        .iter()
        .any(|p| p.what.contains("upload cursor damaged")));
    assert_eq!(j.acked_seq(), 0);
    let mut rec = card_record(13);
    assert_eq!(j.append(&mut rec).unwrap(), 13);
    j.commit().unwrap();
    drop(j);
    assert_eq!(repair::counts(&dir).of(SideFile::Cursor), 1);

    // Re-sending 1..=10 stores nothing twice; 11..=13 arrive; the summary counts the repair.
    let r = upload::upload(&dir, st.addr(), &terminal_id(0), &secret(0))
        .await
        .unwrap();
    st.shutdown().await;
    assert_eq!(r.acked_seq, 13);
    let s = fare_validator::depot::Store::open(&db).unwrap();
    assert_eq!(s.record_count().unwrap(), 13);
    let t = &s.report().unwrap().terminals[&terminal_id(0)];
    assert!(t.gaps.is_empty());
    let (_, summary) = show(&dir);
    assert_eq!(
        (
            summary["problems"].as_u64(),
            summary["repairs"].as_u64(),
            summary["repairs_by_file"]["acked"].as_u64()
        ),
        (Some(0), Some(1), Some(1))
    );
}

/// A downlink folder holding a blacklist at version 1 (card 1 lost), then version 2 (card 2
/// cancelled too), fares and keys at versions 1 then 2.
fn downlink_with_two_versions(data: &Path) -> DownlinkDir {
    let d = DownlinkDir::new(data);
    d.pin_operator_key(&operator().verifying_key()).unwrap();
    let v1 = Blacklist::from_entries(1, [(card(1), ListReason::Lost)]);
    d.install(&snapshot_file(&v1, &operator()), now()).unwrap();
    let delta = Delta {
        from_version: 1,
        to_version: 2,
        changes: vec![Change {
            op: ChangeOp::Add,
            id: card(2),
            reason: ListReason::Cancelled,
        }],
    };
    d.install(&delta_file(&delta, &operator()), now()).unwrap();
    for v in [1, 2] {
        let fares = FARES.replace("200", &format!("{}", 200 + v));
        d.install(
            &signed::seal(FileKind::FareTable, v, 0, fares.as_bytes(), &operator()),
            now(),
        )
        .unwrap();
        d.install(
            &signed::seal(FileKind::RideCodeKeys, v, 0, KEYS.as_bytes(), &operator()),
            now(),
        )
        .unwrap();
    }
    d
}

fn flip_a_byte(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x40;
    std::fs::write(path, b).unwrap();
}

#[test]
fn damaged_blacklist_falls_back_to_the_last_good_version_and_the_depot_sends_it_again() {
    let tmp = tempfile::tempdir().unwrap();
    let d = downlink_with_two_versions(tmp.path());
    assert_eq!(d.blacklist().version(), 2);
    flip_a_byte(&d.path().join("blacklist.bin"));

    let list = d.blacklist();
    assert_eq!(list.version(), 1, "the last good list, not an empty one");
    assert_eq!(list.get(&card(1)), Some(ReasonSet::of(ListReason::Lost)));
    // Version 1 is what the hello reports: the depot sends the delta to 2 again.
    assert_eq!(d.held_versions().blacklist, 1);
    assert_eq!(
        repair::counts(tmp.path()).of(SideFile::Blacklist),
        1,
        "reported once"
    );

    // Both copies gone bad: version 0 (the depot sends a snapshot), reported, never a panic.
    flip_a_byte(&d.path().join("blacklist.bin"));
    flip_a_byte(&d.path().join("blacklist.bin.prev"));
    assert_eq!(d.blacklist().version(), 0);
    assert_eq!(d.blacklist().version(), 0);
    assert_eq!(repair::counts(tmp.path()).of(SideFile::Blacklist), 2);
}

#[test]
fn damaged_fare_table_falls_back_to_the_last_good_one() {
    let tmp = tempfile::tempdir().unwrap();
    let d = downlink_with_two_versions(tmp.path());
    assert_eq!(d.fare_table().unwrap().0, 2);
    std::fs::write(d.path().join("fares.signed"), b"").unwrap();
    let (version, table) = d.fare_table().unwrap();
    assert_eq!((version, table.base_fare_fen), (1, 201));
    assert_eq!(d.held_versions().fares, 1);
    assert_eq!(repair::counts(tmp.path()).of(SideFile::FareTable), 1);
}

#[test]
fn damaged_ride_code_key_file_falls_back_to_the_last_good_one() {
    let tmp = tempfile::tempdir().unwrap();
    let d = downlink_with_two_versions(tmp.path());
    flip_a_byte(&d.path().join("keys.signed"));
    assert_eq!(d.ride_code_keys().unwrap().0, 1);
    assert_eq!(d.held_versions().keys, 1);
    assert_eq!(repair::counts(tmp.path()).of(SideFile::RideCodeKeys), 1);
}

#[test]
fn damaged_operator_key_is_rewritten_from_its_second_copy_and_none_left_refuses_downlink() {
    let tmp = tempfile::tempdir().unwrap();
    let d = downlink_with_two_versions(tmp.path());
    let key = operator().verifying_key();
    std::fs::write(d.path().join("operator.pub"), b"").unwrap();
    assert_eq!(d.operator_key(), Some(key));
    assert_eq!(d.operator_key(), Some(key));
    assert_eq!(
        repair::counts(tmp.path()).of(SideFile::OperatorKey),
        1,
        "repaired once"
    );

    // A flipped hex digit that still parses: the copy that verifies the held files wins.
    let mut other = std::fs::read_to_string(d.path().join("operator.pub.copy")).unwrap();
    other.replace_range(0..1, if other.starts_with('0') { "1" } else { "0" });
    std::fs::write(d.path().join("operator.pub.copy"), other).unwrap();
    assert_eq!(d.operator_key(), Some(key));
    assert_eq!(repair::counts(tmp.path()).of(SideFile::OperatorKey), 2);

    // No copy left: downlink files are refused (never trusted on the station's word), the
    // blacklist held stays in force.
    std::fs::write(d.path().join("operator.pub"), b"zz").unwrap();
    std::fs::write(d.path().join("operator.pub.copy"), b"").unwrap();
    assert_eq!(d.operator_key(), None);
    let v3 = Blacklist::from_entries(3, Vec::<(ListId, ListReason)>::new());
    assert!(matches!(
        d.install(&snapshot_file(&v3, &operator()), now()),
        Err(DownlinkError::NoOperatorKey)
    ));
    assert_eq!(
        d.blacklist().get(&card(2)),
        Some(ReasonSet::of(ListReason::Cancelled))
    );
    assert_eq!(repair::counts(tmp.path()).of(SideFile::OperatorKey), 3);
}

#[test]
fn unreadable_grey_record_file_is_counted_as_a_repair_and_the_journal_still_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    card_journal(dir, 3);
    // A folder where the grey-record file should be: it cannot be read.
    let grey = fare_validator::journal::grey::grey_path(dir);
    let _ = std::fs::remove_file(&grey);
    std::fs::create_dir_all(&grey).unwrap();
    let (j, problems) = Journal::open(dir).unwrap();
    assert!(problems.iter().any(|p| p.what.contains("unreadable")));
    assert_eq!(j.next_seq(), 4);
    drop(j);
    assert_eq!(repair::counts(dir).of(SideFile::PendingDebits), 1);
    let (records, summary) = show(dir);
    assert_eq!(records.len(), 3);
    assert_eq!(summary["repairs_by_file"]["pending_debits"], 1);
}

/// The validator's clock: the files here are dated by the signer's clock, now.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn damaged_journal_identity_is_recovered_from_the_records_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    card_journal(dir, 3);
    let epoch = Journal::open(dir).unwrap().0.epoch();
    assert_ne!(epoch, 0, "a new journal gets an identity");
    std::fs::write(dir.join("journal.id"), b"").unwrap();
    let (j, _) = Journal::open(dir).unwrap();
    assert_eq!(j.epoch(), epoch, "the epoch every record carries");
    assert_eq!(j.next_seq(), 4);
    drop(j);
    assert_eq!(repair::counts(dir).of(SideFile::JournalId), 1);
    assert_eq!(Journal::open(dir).unwrap().0.epoch(), epoch);
    assert_eq!(
        repair::counts(dir).of(SideFile::JournalId),
        1,
        "repaired once"
    );
}
