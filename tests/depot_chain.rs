//! Records chained and authenticated: someone with the bus's storage in hand alters a record
//! (a fare set to 0, its CRC fixed) or cuts the last records and lets the bus tap on, and the
//! depot refuses or reports it; a PSAM whose transaction numbers skip or repeat is reported.
//! Every attack is played on 127.0.0.1 against a real station (docs/reliability.md,
//! "Security").

mod depot_support;

use std::path::Path;

use depot_support::*;
use fare_validator::depot::integrity::{Finding, ALTERED};
use fare_validator::depot::page::{render, DayView};
use fare_validator::depot::Store;
use fare_validator::journal::record::CRC32;
use fare_validator::journal::{Journal, JournalKey, Record, UnsyncedFiles, RECORD_BYTES};
use fare_validator::upload::{self, UploadReport};

async fn up(dir: &Path, addr: std::net::SocketAddr) -> UploadReport {
    upload::upload(dir, addr, &terminal_id(0), &secret(0))
        .await
        .unwrap()
}

/// Append `records` to the journal in `dir` as bus 0 does: chained with its own key.
fn bus_journal(dir: &Path, records: impl IntoIterator<Item = Record>) {
    let key = JournalKey::for_terminal(&secret(0), &terminal_id(0));
    let (mut j, _) = Journal::open_keyed(dir, Box::new(UnsyncedFiles), key).unwrap();
    for mut r in records {
        j.append(&mut r).unwrap();
    }
    j.commit().unwrap();
}

/// The one segment file of a small journal.
fn segment(dir: &Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jnl"))
        .collect();
    assert_eq!(segs.len(), 1);
    segs.pop().unwrap()
}

fn findings(db: &Path, kind: &str) -> Vec<Finding> {
    let s = Store::open(db).unwrap();
    let all = s.findings(1_000).unwrap();
    let report = s.report().unwrap();
    assert_eq!(report.findings, all, "the report carries the findings");
    all.into_iter().filter(|f| f.kind == kind).collect()
}

fn stored_fares(db: &Path) -> Vec<(u64, u32)> {
    let mut out = Vec::new();
    Store::open(db)
        .unwrap()
        .for_each_record(|_, r, _| {
            out.push((r.seq, r.fare_fen));
            Ok(())
        })
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_with_its_fare_set_to_zero_and_its_crc_fixed_is_refused_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let st = station(store(&db, 1)).await;
    let bus = tmp.path().join("bus");
    bus_journal(&bus, (1..=5).map(card_record));
    // Seq 3's fare set to 0 in the file, the CRC made right again: the journal reads it.
    let seg = segment(&bus);
    let mut bytes = std::fs::read(&seg).unwrap();
    let rec = &mut bytes[2 * RECORD_BYTES..3 * RECORD_BYTES];
    rec[24..28].copy_from_slice(&0u32.to_be_bytes());
    let crc = CRC32.checksum(&rec[..92]);
    rec[92..].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(&seg, &bytes).unwrap();
    let (j, problems) = Journal::open(&bus).unwrap();
    assert!(problems.is_empty(), "the CRC is right: {problems:?}");
    assert_eq!(j.read_after(2, 1).unwrap()[0].record.fare_fen, 0);
    drop(j);

    let r = up(&bus, st.addr()).await;
    st.shutdown().await;
    assert_eq!(r.acked_seq, 5, "the later records go on");
    assert_eq!(
        stored_fares(&db),
        vec![(1, 200), (2, 200), (4, 200), (5, 200)],
        "the altered record is not stored"
    );
    let altered = findings(&db, "altered");
    assert_eq!(altered.len(), 1, "{altered:?}");
    assert_eq!((altered[0].from, altered[0].to), (3, 3));
    let report = Store::open(&db).unwrap().report().unwrap();
    let j = &report.terminals[&terminal_id(0)].journals[0];
    assert_eq!(
        j.refused_records
            .iter()
            .map(|r| (r.seq, r.reason.as_str(), r.fare_fen))
            .collect::<Vec<_>>(),
        vec![(3, ALTERED, 0)],
        "kept apart with its reason"
    );
    assert!(findings(&db, "test_key").is_empty());
    // Seen without asking SQL: the `depot findings` command and the manager's page.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fare-validator"))
        .args(["depot", "findings", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Newest first: the refused record's PSAM number is missing too.
    let kinds: Vec<_> = lines
        .iter()
        .map(|l| (l["kind"].as_str().unwrap(), l["from"].as_u64().unwrap()))
        .collect();
    assert_eq!(kinds, vec![("psam_gap", 3), ("altered", 3)], "{lines:?}");
    let view = DayView::from_store(&Store::open(&db).unwrap()).unwrap();
    let html = render(&view, "depot.db");
    assert!(html.contains("<td class=\"kind\">altered</td>"), "{html}");
}

/// Set seq `seq`'s fare to 0 in the journal's one segment and make its CRC right again.
fn zero_fare(bus: &Path, seq: usize) {
    let seg = segment(bus);
    let mut bytes = std::fs::read(&seg).unwrap();
    let rec = &mut bytes[(seq - 1) * RECORD_BYTES..seq * RECORD_BYTES];
    rec[24..28].copy_from_slice(&0u32.to_be_bytes());
    let crc = CRC32.checksum(&rec[..92]);
    rec[92..].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(&seg, &bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_after_a_refused_record_checks_the_next_against_the_mac_it_carried() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let st = station(store(&db, 1)).await;
    let bus = tmp.path().join("bus");
    bus_journal(&bus, (1..=3).map(card_record));
    zero_fare(&bus, 3);
    assert_eq!(up(&bus, st.addr()).await.acked_seq, 3);
    bus_journal(&bus, (4..=5).map(card_record));
    assert_eq!(up(&bus, st.addr()).await.acked_seq, 5);
    st.shutdown().await;
    let seqs: Vec<u64> = stored_fares(&db).iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![1, 2, 4, 5]);
    assert_eq!(findings(&db, "altered").len(), 1);
    assert!(
        findings(&db, "chain_unverified").is_empty(),
        "seq 4 is proven against the refused record's MAC"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_records_cut_after_upload_and_the_bus_tapping_on_is_reported_as_a_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let st = station(store(&db, 1)).await;
    let bus = tmp.path().join("bus");
    bus_journal(&bus, (1..=8).map(card_record));
    assert_eq!(up(&bus, st.addr()).await.acked_seq, 8);

    // The last three records cut, the cursor left as it was: the bus numbers on from 9,
    // its chain starting again since seq 8 is gone from its disk.
    let seg = segment(&bus);
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(5 * RECORD_BYTES as u64).unwrap();
    drop(f);
    bus_journal(&bus, (9..=10).map(card_record));
    assert_eq!(up(&bus, st.addr()).await.acked_seq, 10);
    let restarted = findings(&db, "chain_restarted");
    assert_eq!(
        restarted.iter().map(|f| (f.from, f.to)).collect::<Vec<_>>(),
        vec![(9, 9)]
    );

    // Cut again, back to seq 5 (the newer segment gone too) and the cursor file removed:
    // the bus reuses seqs the depot holds.
    std::fs::remove_file(bus.join(format!("seg-{:020}.jnl", 9))).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(5 * RECORD_BYTES as u64).unwrap();
    drop(f);
    std::fs::remove_file(bus.join("acked")).unwrap();
    bus_journal(&bus, (106..=107).map(card_record));
    let r = up(&bus, st.addr()).await;
    st.shutdown().await;
    assert_eq!(
        r.records_refused, 2,
        "seqs 6 and 7 hold other records at the depot"
    );
    let cut = findings(&db, "cut");
    assert_eq!(cut.len(), 1, "{cut:?}");
    assert_eq!((cut[0].from, cut[0].to, cut[0].count), (6, 7, 2));
    assert!(
        findings(&db, "altered").is_empty(),
        "authentic, not altered"
    );
    assert_eq!(stored_fares(&db).len(), 10, "the first records are kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_cut_before_upload_show_as_a_psam_counter_that_skips() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let st = station(store(&db, 1)).await;
    let bus = tmp.path().join("bus");
    bus_journal(&bus, (1..=5).map(card_record));
    assert_eq!(up(&bus, st.addr()).await.acked_seq, 5);
    // Seqs 6..=8 (PSAM numbers 6..=8) written and cut before any upload: the journal's own
    // chain cannot tell, but the PSAM's counter went on, and the next taps get 9 and 10.
    bus_journal(&bus, (6..=8).map(card_record));
    let seg = segment(&bus);
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(5 * RECORD_BYTES as u64).unwrap();
    drop(f);
    bus_journal(&bus, (9..=10).map(card_record));
    assert_eq!(up(&bus, st.addr()).await.acked_seq, 7);
    let gaps = findings(&db, "psam_gap");
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!((gaps[0].from, gaps[0].to), (6, 8));
    assert!(gaps[0].detail.contains("000000000123"), "{:?}", gaps[0]);
    // A PSAM number used again (a cloned PSAM, a replayed record) is reported too.
    bus_journal(&bus, [card_record(4)]);
    up(&bus, st.addr()).await;
    st.shutdown().await;
    let dups = findings(&db, "psam_duplicate");
    assert_eq!(
        dups.iter().map(|f| (f.from, f.to)).collect::<Vec<_>>(),
        vec![(4, 4)]
    );
    assert!(findings(&db, "altered").is_empty() && findings(&db, "cut").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_key_journals_are_reported_and_refused_once_the_bus_chains_with_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let st = station(store(&db, 1)).await;
    let bus = tmp.path().join("bus");
    card_journal(&bus, 3);
    assert_eq!(up(&bus, st.addr()).await.acked_seq, 3);
    let t = findings(&db, "test_key");
    assert_eq!((t.len(), t[0].count), (1, 3), "{t:?}");
    bus_journal(&bus, (4..=5).map(card_record));
    assert_eq!(up(&bus, st.addr()).await.acked_seq, 5);
    // Now the depot knows this bus holds its key: a record made with the public test key
    // is a forgery.
    card_journal(&bus, 1);
    up(&bus, st.addr()).await;
    st.shutdown().await;
    let altered = findings(&db, "altered");
    assert_eq!(
        altered.iter().map(|f| (f.from, f.to)).collect::<Vec<_>>(),
        vec![(6, 6)]
    );
}
