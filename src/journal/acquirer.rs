//! The acquirer's data of QuickPass rides: `quickpass-acquirer.dat` in the journal folder,
//! one fixed-size entry per accepted QuickPass tap, keyed by the journal's (epoch, seq) of
//! the record it belongs to. A 96-byte record has no room for the sealed PAN, the issuer
//! application data and field 55 ([`crate::card::acquirer`]); without them the acquirer
//! cannot charge the ride, so they are part of the record's durability:
//!
//! - the entry is written before its record is appended, and made durable (fdatasync) in
//!   the same commit, before the record's segment is: a record that is durable has its
//!   entry durable ([`AcquirerLog::sync`], called by [`super::Journal::commit`]);
//! - an entry that cannot be written refuses the tap (`storage_unavailable`, like a record
//!   that cannot be written), and so does a full file: at most [`ACQUIRER_HELD_MAX`]
//!   entries are held;
//! - entries go to the depot with their records (the AcquirerData frame,
//!   docs/depot-protocol.md) and are pruned once the depot acknowledged their records.
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | journal epoch (big-endian) |
//! | 8 | 8 | seq of the record (big-endian) |
//! | 16 | 284 | [`AcquirerData`] ([`ACQUIRER_DATA_BYTES`]) |
//! | 300 | 4 | CRC-32/ISCSI of bytes 0..300, big-endian |
//!
//! A commit that fails leaves its entries behind while its seqs are given again: when the
//! file holds two entries for one key, the later one is the record's. Each entry is written
//! at its own offset (entries held × 304), so a write that failed half-way leaves no bytes
//! that shift the entries after it: the next entry is written over them. On open, damaged
//! entries, a torn tail, entries of another epoch and entries not above the acknowledged
//! seq or above the last durable seq (their commit never finished) are dropped. The depot
//! checks each entry against its record (kind 4, same cryptogram and ATC) before it exports
//! it, so an entry left by a failed commit never charges another ride.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::CRC32;
use super::{FileLayer, SegmentFile};
use crate::card::acquirer::{AcquirerData, ACQUIRER_DATA_BYTES};

pub const ACQUIRER_FILE: &str = "quickpass-acquirer.dat";
pub const ACQUIRER_ENTRY_BYTES: usize = 16 + ACQUIRER_DATA_BYTES + 4;
/// Entries held on the bus at most (about 29 MiB): weeks of QuickPass taps without an
/// upload; beyond, QuickPass taps are refused (`storage_unavailable`) until the next upload.
pub const ACQUIRER_HELD_MAX: u64 = 100_000;

/// One entry: the record's seq and the acquirer's data of its ride.
pub type AcquirerEntry = (u64, [u8; ACQUIRER_DATA_BYTES]);

/// Why an entry was not kept.
#[derive(Debug, thiserror::Error)]
pub enum AcquirerLogError {
    #[error("quickpass-acquirer.dat holds {ACQUIRER_HELD_MAX} entries: upload first")]
    Full,
    #[error("quickpass-acquirer.dat: {0}")]
    Io(#[from] io::Error),
}

fn encode(epoch: u64, seq: u64, data: &[u8; ACQUIRER_DATA_BYTES]) -> [u8; ACQUIRER_ENTRY_BYTES] {
    let mut b = [0u8; ACQUIRER_ENTRY_BYTES];
    b[..8].copy_from_slice(&epoch.to_be_bytes());
    b[8..16].copy_from_slice(&seq.to_be_bytes());
    b[16..16 + ACQUIRER_DATA_BYTES].copy_from_slice(data);
    let crc = CRC32.checksum(&b[..16 + ACQUIRER_DATA_BYTES]);
    b[16 + ACQUIRER_DATA_BYTES..].copy_from_slice(&crc.to_be_bytes());
    b
}

fn decode(b: &[u8]) -> Option<(u64, AcquirerEntry)> {
    // Any length: a short piece is no entry (callers pass whole entries, but say so here).
    let (body, crc) = b.split_at_checked(16 + ACQUIRER_DATA_BYTES)?;
    if CRC32.checksum(body).to_be_bytes() != crc {
        return None;
    }
    let epoch = u64::from_be_bytes(body[..8].try_into().ok()?);
    let seq = u64::from_be_bytes(body[8..16].try_into().ok()?);
    let data: [u8; ACQUIRER_DATA_BYTES] = body[16..].try_into().ok()?;
    AcquirerData::decode(&data)?;
    Some((epoch, (seq, data)))
}

/// The readable entries of `epoch` in `dir` with seq in `after+1 ..= upto`, one per seq (the
/// last written), in seq order.
pub fn read_range(dir: &Path, epoch: u64, after: u64, upto: u64) -> io::Result<Vec<AcquirerEntry>> {
    let mut bytes = Vec::new();
    match fs::File::open(dir.join(ACQUIRER_FILE)) {
        Ok(mut f) => f.read_to_end(&mut bytes)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut by_seq = std::collections::BTreeMap::new();
    for (e, (seq, data)) in bytes.chunks_exact(ACQUIRER_ENTRY_BYTES).filter_map(decode) {
        if e == epoch && seq > after && seq <= upto {
            by_seq.insert(seq, data);
        }
    }
    Ok(by_seq.into_iter().collect())
}

/// The open side file of a journal.
pub struct AcquirerLog {
    path: PathBuf,
    file: Option<fs::File>,
    /// The same file through the journal's file layer, for its sync only: what fakes or
    /// skips the journal's syncs (a bench, a fault test) does the same here.
    syncer: Option<Box<dyn SegmentFile>>,
    epoch: u64,
    entries: u64,
    /// Entries written since the last sync.
    unsynced: bool,
}

impl AcquirerLog {
    /// Open the side file of the journal in `dir` (identity `epoch`), keeping the entries of
    /// records above `acked_seq` and at most `durable_seq`.
    pub fn open(
        dir: &Path,
        layer: &dyn FileLayer,
        epoch: u64,
        acked_seq: u64,
        durable_seq: u64,
    ) -> io::Result<AcquirerLog> {
        let path = dir.join(ACQUIRER_FILE);
        let held = read_range(dir, epoch, acked_seq, durable_seq)?;
        let on_disk = fs::metadata(&path).map_or(0, |m| m.len());
        if on_disk != (held.len() * ACQUIRER_ENTRY_BYTES) as u64 {
            rewrite(dir, epoch, &held)?;
        }
        let file = open_for_writes(&path)?;
        let syncer = layer.open_for_sync(&path)?;
        Ok(AcquirerLog {
            path,
            file: Some(file),
            syncer: Some(syncer),
            epoch,
            entries: held.len() as u64,
            unsynced: false,
        })
    }

    /// A side file that keeps nothing (it could not be opened): every QuickPass tap is
    /// refused until the journal is opened again.
    pub fn none(dir: &Path, epoch: u64) -> AcquirerLog {
        AcquirerLog {
            path: dir.join(ACQUIRER_FILE),
            file: None,
            syncer: None,
            epoch,
            entries: 0,
            unsynced: false,
        }
    }

    /// Entries in the file.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Write the entry of record `seq` (not synced: [`AcquirerLog::sync`] makes it durable
    /// with its record). On error the tap must be refused.
    pub fn append(&mut self, seq: u64, data: &AcquirerData) -> Result<(), AcquirerLogError> {
        if self.entries >= ACQUIRER_HELD_MAX {
            return Err(AcquirerLogError::Full);
        }
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("not open"))?;
        // At its own offset: bytes a failed write left past the held entries are overwritten.
        let at = self.entries * ACQUIRER_ENTRY_BYTES as u64;
        f.write_all_at(&encode(self.epoch, seq, &data.encode()), at)?;
        self.entries += 1;
        self.unsynced = true;
        Ok(())
    }

    /// Make every entry written durable (before the records they belong to).
    pub fn sync(&mut self) -> io::Result<()> {
        if !self.unsynced {
            return Ok(());
        }
        let f = self
            .syncer
            .as_mut()
            .ok_or_else(|| io::Error::other("not open"))?;
        f.sync()?;
        self.unsynced = false;
        Ok(())
    }

    /// The depot holds every record up to `acked_seq`: drop their entries. The file is
    /// emptied when nothing above is held, else rewritten once the acknowledged entries are
    /// at least half of it (so an upload in many batches rewrites it a few times at most).
    /// Entries above the last durable seq are kept: their records may be appended and not
    /// yet committed (group commit), and are made durable with them.
    pub fn prune(&mut self, layer: &dyn FileLayer, acked_seq: u64) -> io::Result<()> {
        if self.entries == 0 || self.file.is_none() {
            return Ok(());
        }
        let dir = self.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let held = read_range(&dir, self.epoch, acked_seq, u64::MAX)?;
        if held.is_empty() || (held.len() as u64) * 2 <= self.entries {
            self.sync()?;
            rewrite(&dir, self.epoch, &held)?;
            self.file = Some(open_for_writes(&self.path)?);
            self.syncer = Some(layer.open_for_sync(&self.path)?);
            self.entries = held.len() as u64;
        }
        Ok(())
    }
}

/// The side file for positional writes ([`AcquirerLog::append`]), made if missing.
fn open_for_writes(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
}

/// Replace the side file by `held`, atomically (a temporary file synced, then renamed).
fn rewrite(dir: &Path, epoch: u64, held: &[AcquirerEntry]) -> io::Result<()> {
    let tmp = dir.join(format!("{ACQUIRER_FILE}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    for (seq, data) in held {
        f.write_all(&encode(epoch, *seq, data))?;
    }
    f.sync_all()?;
    fs::rename(&tmp, dir.join(ACQUIRER_FILE))?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_piece_of_any_length_decodes_to_no_entry_never_a_panic() {
        for len in [
            0,
            1,
            ACQUIRER_ENTRY_BYTES - 5,
            ACQUIRER_ENTRY_BYTES - 1,
            ACQUIRER_ENTRY_BYTES + 1,
        ] {
            assert!(decode(&vec![0xA5; len]).is_none(), "length {len}");
        }
    }
    use super::*;
    use crate::card::acquirer::{SealedPan, SEALED_PAN_BYTES};

    fn data(n: u8) -> AcquirerData {
        let mut field55 = heapless::Vec::new();
        field55
            .extend_from_slice(&[0x9F, 0x26, 8, n, n, n, n, n, n, n, n, 0x9F, 0x36, 2, 0, n])
            .unwrap();
        AcquirerData {
            sealed_pan: SealedPan([n; SEALED_PAN_BYTES]),
            iad: heapless::Vec::from_slice(&[n; 8]).unwrap(),
            field55,
        }
    }

    #[test]
    fn entries_are_kept_per_record_and_pruned_once_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AcquirerLog::open(dir.path(), &crate::journal::OsFiles, 7, 0, 0).unwrap();
        for seq in 1..=4u64 {
            log.append(seq, &data(seq as u8)).unwrap();
        }
        // A failed commit's entry for seq 4 is superseded by the one written after it.
        log.append(4, &data(40)).unwrap();
        log.sync().unwrap();
        let all = read_range(dir.path(), 7, 0, u64::MAX).unwrap();
        assert_eq!(all.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(AcquirerData::decode(&all[3].1).unwrap(), data(40));
        assert!(read_range(dir.path(), 8, 0, u64::MAX).unwrap().is_empty());
        // Three of four acknowledged: rewritten with the one left.
        log.prune(&crate::journal::OsFiles, 3).unwrap();
        assert_eq!(log.entries(), 1);
        let len = fs::metadata(dir.path().join(ACQUIRER_FILE)).unwrap().len();
        assert_eq!(len, ACQUIRER_ENTRY_BYTES as u64);
        log.prune(&crate::journal::OsFiles, 4).unwrap();
        assert_eq!(
            fs::metadata(dir.path().join(ACQUIRER_FILE)).unwrap().len(),
            0
        );
    }

    #[test]
    fn damaged_torn_and_unfinished_entries_are_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AcquirerLog::open(dir.path(), &crate::journal::OsFiles, 7, 0, 0).unwrap();
        for seq in 1..=5u64 {
            log.append(seq, &data(seq as u8)).unwrap();
        }
        log.sync().unwrap();
        drop(log);
        let path = dir.path().join(ACQUIRER_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[ACQUIRER_ENTRY_BYTES + 30] ^= 1; // seq 2 damaged
        bytes.extend_from_slice(&[7; 40]); // torn tail
        fs::write(&path, bytes).unwrap();
        // Records durable up to 4 (5's commit never finished), 1 acknowledged.
        let log = AcquirerLog::open(dir.path(), &crate::journal::OsFiles, 7, 1, 4).unwrap();
        assert_eq!(log.entries(), 2);
        let held: Vec<u64> = read_range(dir.path(), 7, 0, u64::MAX)
            .unwrap()
            .iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(held, [3, 4]);
    }

    #[test]
    fn an_entry_of_a_record_not_yet_committed_outlives_the_prune() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AcquirerLog::open(dir.path(), &crate::journal::OsFiles, 7, 0, 0).unwrap();
        for seq in 1..=3u64 {
            log.append(seq, &data(seq as u8)).unwrap();
        }
        log.sync().unwrap();
        // Record 4 appended (group commit), not yet durable, when the depot acknowledges 3.
        log.append(4, &data(4)).unwrap();
        log.prune(&crate::journal::OsFiles, 3).unwrap();
        log.sync().unwrap();
        let held = read_range(dir.path(), 7, 0, u64::MAX).unwrap();
        assert_eq!(held.iter().map(|e| e.0).collect::<Vec<_>>(), [4]);
        assert_eq!(AcquirerData::decode(&held[0].1).unwrap(), data(4));
        // And later appends land after it.
        log.append(5, &data(5)).unwrap();
        let held = read_range(dir.path(), 7, 0, u64::MAX).unwrap();
        assert_eq!(held.iter().map(|e| e.0).collect::<Vec<_>>(), [4, 5]);
    }

    #[test]
    fn a_write_that_failed_half_way_does_not_shift_the_entries_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AcquirerLog::open(dir.path(), &crate::journal::OsFiles, 7, 0, 0).unwrap();
        log.append(1, &data(1)).unwrap();
        // What a write cut short (a full disk) leaves: part of an entry, and an error.
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(ACQUIRER_FILE))
            .unwrap();
        f.write_all(&encode(7, 2, &data(2).encode())[..100])
            .unwrap();
        // The tap was refused; the next QuickPass record takes seq 2.
        log.append(2, &data(22)).unwrap();
        log.append(3, &data(3)).unwrap();
        log.sync().unwrap();
        let held = read_range(dir.path(), 7, 0, u64::MAX).unwrap();
        assert_eq!(held.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(AcquirerData::decode(&held[1].1).unwrap(), data(22));
    }

    #[test]
    fn a_full_file_refuses_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AcquirerLog::open(dir.path(), &crate::journal::OsFiles, 1, 0, 0).unwrap();
        log.entries = ACQUIRER_HELD_MAX;
        assert!(matches!(
            log.append(1, &data(1)),
            Err(AcquirerLogError::Full)
        ));
    }
}
