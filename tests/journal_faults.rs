//! Power cuts and storage faults against the journal: every complete record survives,
//! no corrupt one is ever returned, and the validator refuses taps while it cannot record
//! (no record, no ride), then recovers by itself.

mod common;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use fare_validator::blacklist::Blacklist;
use fare_validator::card::psam::Psam;
use fare_validator::card::sim::{CardSpec, SimCard, SimPsam, TestKeys};
use fare_validator::clock::Timestamp;
use fare_validator::engine::{EngineConfig, Validator};
use fare_validator::fare::FareTable;
use fare_validator::journal::{
    self, CardTx, FileLayer, Journal, Record, RecordKind, SegmentFile, RECORD_BYTES,
};
use fare_validator::types::{Reason, RiderCategory};

fn record(i: u64) -> Record {
    Record {
        seq: 0,
        kind: RecordKind::CardPurchase,
        at_unix_s: 1_795_824_000 + i as i64,
        utc_offset_min: 480,
        route: 1,
        category: RiderCategory::Adult,
        fare_fen: 200,
        balance_fen: Some(10_000 - i as i32),
        card_no: common::card(1).parse().unwrap(),
        card_tx: CardTx {
            offline_counter: i as u16,
            terminal_seq: i as u32,
            tac: [9; 4],
        },
        qr: None,
        quickpass: None,
        terminal_no: [0, 0, 0, 0, 0, 1],
        rule: fare_validator::fare::FareRule::Unknown,
    }
}

fn write_records(dir: &Path, n: u64) -> Vec<u8> {
    let (mut j, _) = Journal::open(dir).unwrap();
    for i in 0..n {
        j.append(&mut record(i)).unwrap();
    }
    j.commit().unwrap();
    let seg = segment(dir);
    let mut bytes = std::fs::read(seg).unwrap();
    // The segment is made full size with zeros; the records are its first bytes.
    assert_eq!(bytes.len() as u64, journal::SEGMENT_BYTES);
    assert!(bytes[n as usize * RECORD_BYTES..].iter().all(|&b| b == 0));
    bytes.truncate(n as usize * RECORD_BYTES);
    bytes
}

fn segment(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jnl"))
        .max()
        .unwrap()
}

#[test]
fn truncation_at_every_byte_of_the_last_records_keeps_every_complete_record() {
    let base = tempfile::tempdir().unwrap();
    let full = write_records(base.path(), 4);
    // Every cut through the last three records, of a segment written in place (zeros after
    // the cut) and of one appended by an older version (the file ends at the cut).
    for (len, in_place) in (RECORD_BYTES..=full.len()).flat_map(|l| [(l, true), (l, false)]) {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = full[..len].to_vec();
        if in_place {
            bytes.resize(journal::SEGMENT_BYTES as usize, 0);
        }
        std::fs::write(dir.path().join("seg-00000000000000000001.jnl"), &bytes).unwrap();
        let complete = (len / RECORD_BYTES) as u64;
        let scan = journal::scan(dir.path()).unwrap();
        assert_eq!(scan.records.len() as u64, complete, "cut at {len}");
        assert_eq!(
            scan.problems.is_empty(),
            len % RECORD_BYTES == 0,
            "cut at {len}"
        );
        if !in_place && ![0, 1, RECORD_BYTES / 2].contains(&(len % RECORD_BYTES)) {
            // An older segment is made full size when opened (a synced write of 6 MiB):
            // opened and written after a cut at the record boundaries and inside a record.
            continue;
        }
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        assert_eq!(j.next_seq(), complete + 1);
        // Appending after the cut continues cleanly.
        j.append(&mut record(99)).unwrap();
        j.commit().unwrap();
        let scan = journal::scan(dir.path()).unwrap();
        assert!(
            scan.problems.is_empty(),
            "cut at {len}: {:?}",
            scan.problems
        );
        assert_eq!(scan.records.len() as u64, complete + 1);
    }
}

#[test]
fn a_single_bit_flip_in_any_of_the_last_records_is_never_returned() {
    let base = tempfile::tempdir().unwrap();
    let full = write_records(base.path(), 4);
    let good = journal::scan(base.path()).unwrap().records;
    for bit in (RECORD_BYTES * 8)..(full.len() * 8) {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = full.clone();
        bytes[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(dir.path().join("seg-00000000000000000001.jnl"), &bytes).unwrap();
        let scan = journal::scan(dir.path()).unwrap();
        let hit = (bit / 8 / RECORD_BYTES) as u64 + 1;
        assert_eq!(scan.records.len(), 3, "bit {bit}");
        assert!(
            scan.records
                .iter()
                .all(|r| r.seq != hit && good.contains(r)),
            "bit {bit}"
        );
        assert!(!scan.problems.is_empty());
    }
}

/// A segment whose storage can be made to fail: 0 healthy, 1 disk full on write, 2 I/O
/// error on sync, 3 half of each write lands then the disk is full.
struct FaultyFile(std::fs::File, Arc<AtomicU8>);

impl SegmentFile for FaultyFile {
    fn write_at(&mut self, at: u64, b: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        match self.1.load(Ordering::SeqCst) {
            1 => Err(io::Error::from_raw_os_error(28)), // ENOSPC
            3 => {
                self.0.write_all_at(&b[..b.len() / 2], at)?;
                Err(io::Error::from_raw_os_error(28))
            }
            _ => self.0.write_all_at(b, at),
        }
    }
    fn sync(&mut self) -> io::Result<()> {
        match self.1.load(Ordering::SeqCst) {
            2 => Err(io::Error::from_raw_os_error(5)), // EIO
            _ => self.0.sync_data(),
        }
    }
}

/// The grey-record file on the same disk, healthy unless `fail` (then every write fails).
struct GreyFile(std::fs::File, Arc<AtomicU8>);

impl SegmentFile for GreyFile {
    fn write_at(&mut self, at: u64, b: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        match self.1.load(Ordering::SeqCst) {
            0 => self.0.write_all_at(b, at),
            _ => Err(io::Error::from_raw_os_error(28)),
        }
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

/// Faults on the journal's segments; the grey-record file fails only when `grey` is set.
#[derive(Clone, Default)]
struct Faulty {
    segments: Arc<AtomicU8>,
    grey: Arc<AtomicU8>,
}

impl FileLayer for Faulty {
    fn open_segment(&self, p: &Path, len: u64) -> io::Result<Box<dyn SegmentFile>> {
        let f = || -> io::Result<std::fs::File> {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(p)?;
            if f.metadata()?.len() < len {
                f.set_len(len)?;
            }
            Ok(f)
        };
        if p.file_name().is_some_and(|n| n == "grey.dat") {
            return Ok(Box::new(GreyFile(f()?, self.grey.clone())));
        }
        if self.segments.load(Ordering::SeqCst) != 0 {
            return Err(io::Error::from_raw_os_error(5));
        }
        Ok(Box::new(FaultyFile(f()?, self.segments.clone())))
    }
}

fn card(n: u32) -> SimCard {
    let spec = CardSpec::new(
        common::card(n).parse().unwrap(),
        RiderCategory::Adult,
        5_000,
    );
    SimCard::new(&spec, &TestKeys::default(), 3).unwrap()
}

#[test]
fn storage_faults_refuse_taps_no_record_no_ride_and_recover_by_themselves() {
    for fault in [1u8, 2, 3] {
        let dir = tempfile::tempdir().unwrap();
        let faulty = Faulty::default();
        let (journal, _) = Journal::open_with(dir.path(), Box::new(faulty.clone())).unwrap();
        let psam = Psam::open(SimPsam::new(TestKeys::default(), [0, 0, 0, 0, 0, 1], 1)).unwrap();
        let mut v = Validator::new(
            EngineConfig::default(),
            psam,
            FareTable::default_policy(),
            Blacklist::empty(),
            journal,
        );
        let t0 = Timestamp::parse_rfc3339("2026-11-28T07:00:00+08:00").unwrap();
        let mut a = card(1);
        assert!(v.tap_card(&mut a, t0).accepted());

        // The record's write fails after card 2's purse was debited (its grey record was
        // durable): refused, debit pending.
        faulty.segments.store(fault, Ordering::SeqCst);
        let mut b = card(2);
        let d = v.tap_card(&mut b, t0.plus_s(10));
        assert_eq!(d.outcome, Err(Reason::StorageUnavailable), "fault {fault}");
        assert_eq!(
            b.balance_fen(),
            4_800,
            "the card was debited before the write failed"
        );
        // While it stays broken, nobody is debited at all.
        let mut c = card(3);
        c.enter_field(None);
        assert_eq!(
            v.tap_card(&mut c, t0.plus_s(20)).outcome,
            Err(Reason::StorageUnavailable)
        );
        assert_eq!(c.balance_fen(), 5_000, "refused before the debit");

        // Storage comes back: card 3 pays normally, card 2's debit is recovered once.
        faulty.segments.store(0, Ordering::SeqCst);
        c.enter_field(None);
        assert!(
            v.tap_card(&mut c, t0.plus_s(30)).accepted(),
            "fault {fault}"
        );
        b.enter_field(None);
        let d = v.tap_card(&mut b, t0.plus_s(40));
        assert!(d.accepted(), "fault {fault}: {d:?}");
        assert_eq!(
            (d.fare_fen, d.balance_fen, b.balance_fen()),
            (200, Some(4_800), 4_800)
        );
        let scan = journal::scan(dir.path()).unwrap();
        assert!(
            scan.problems.is_empty(),
            "fault {fault}: {:?}",
            scan.problems
        );
        let seqs: Vec<u64> = scan.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2, 3], "fault {fault}");
        assert_eq!(scan.records[2].kind, RecordKind::CardRecovered);
    }
}

#[test]
fn acknowledged_segments_are_dropped_and_numbering_survives_it() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), 5);
    let (mut j, _) = Journal::open(dir.path()).unwrap();
    j.set_acked(5).unwrap();
    assert!(j.read_after(5, 10).unwrap().is_empty());
    assert_eq!(j.read_after(2, 10).unwrap().len(), 3);
    drop(j);
    let (j, problems) = Journal::open(dir.path()).unwrap();
    assert!(problems.is_empty());
    assert_eq!((j.acked_seq(), j.next_seq()), (5, 6));
}

#[test]
fn segment_named_beyond_the_sequence_range_is_ignored_not_a_panic() {
    // Found by the journal_records fuzz target: a file name near u64::MAX overflowed the
    // slot arithmetic.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("seg-18446744073709551615.jnl"), [0u8; 200]).unwrap();
    let scan = journal::scan(dir.path()).unwrap();
    assert!(scan.records.is_empty());
    let (j, _) = Journal::open(dir.path()).unwrap();
    assert_eq!(j.next_seq(), 1);
}

#[test]
fn grey_record_that_cannot_be_made_durable_means_no_debit() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Faulty::default();
    let (journal, _) = Journal::open_with(dir.path(), Box::new(faulty.clone())).unwrap();
    let psam = Psam::open(SimPsam::new(TestKeys::default(), [0, 0, 0, 0, 0, 1], 1)).unwrap();
    let mut v = Validator::new(
        EngineConfig::default(),
        psam,
        FareTable::default_policy(),
        Blacklist::empty(),
        journal,
    );
    let t0 = Timestamp::parse_rfc3339("2026-11-28T07:00:00+08:00").unwrap();
    faulty.grey.store(1, Ordering::SeqCst);
    let mut a = card(1);
    let d = v.tap_card(&mut a, t0);
    assert_eq!(d.outcome, Err(Reason::StorageUnavailable));
    assert_eq!(a.balance_fen(), 5_000, "no durable intent, no debit");
    assert_eq!(v.journal().durable_seq(), 0);
    // The grey file comes back: the same card pays once, as the first record.
    faulty.grey.store(0, Ordering::SeqCst);
    a.enter_field(None);
    let d = v.tap_card(&mut a, t0.plus_s(5));
    assert_eq!(
        (d.accepted(), d.seq, a.balance_fen()),
        (true, Some(1), 4_800)
    );
}
