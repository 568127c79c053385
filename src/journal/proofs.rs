//! The ride codes behind pay-after-ride records, kept as proof: `ride-code-proofs.dat` in the
//! journal folder, one fixed-size entry per accepted scan, sent to the depot with the records
//! (the Proofs frame, docs/depot-protocol.md). A record holds the code's account, counter and
//! time but has no room for the 201 bytes that carry the rider's signature; this file keeps
//! them, so clearing can check a contested claim against the channel's keys.
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | seq of the record (big-endian) |
//! | 8 | 201 | the ride code's bytes ([`crate::ride_code::format::CODE_BYTES`]), as scanned |
//! | 209 | 4 | CRC-32/ISCSI of bytes 0..209, big-endian |
//!
//! The proof is evidence, not money: it is written (not synced) right after its record is
//! durable, so a power cut may lose the newest proofs but never a record. A damaged entry is
//! skipped when read. Entries whose record the depot acknowledged are dropped when the
//! journal is opened; at most [`PROOFS_HELD_MAX`] are held (beyond, new scans are recorded
//! without proof, logged at warn).

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::record::CRC32;
use crate::ride_code::format::CODE_BYTES;

pub const PROOFS_FILE: &str = "ride-code-proofs.dat";
pub const PROOF_ENTRY_BYTES: usize = 8 + CODE_BYTES + 4;
/// Proofs held on the bus at most (about 21 MiB): weeks of scans without an upload.
pub const PROOFS_HELD_MAX: u64 = 100_000;

/// A record's seq and the ride code it was accepted for.
pub type Proof = (u64, [u8; CODE_BYTES]);

/// The open proof file of a journal.
pub struct ProofLog {
    path: PathBuf,
    file: Option<fs::File>,
    entries: u64,
}

fn encode(seq: u64, code: &[u8; CODE_BYTES]) -> [u8; PROOF_ENTRY_BYTES] {
    let mut b = [0u8; PROOF_ENTRY_BYTES];
    b[..8].copy_from_slice(&seq.to_be_bytes());
    b[8..8 + CODE_BYTES].copy_from_slice(code);
    let crc = CRC32.checksum(&b[..8 + CODE_BYTES]);
    b[8 + CODE_BYTES..].copy_from_slice(&crc.to_be_bytes());
    b
}

fn decode(b: &[u8]) -> Option<Proof> {
    // Any length: a short piece is no entry (callers pass whole entries, but say so here).
    let (body, crc) = b.split_at_checked(8 + CODE_BYTES)?;
    if CRC32.checksum(body).to_be_bytes() != crc {
        return None;
    }
    let seq = u64::from_be_bytes(body[..8].try_into().ok()?);
    let code = body[8..].try_into().ok()?;
    Some((seq, code))
}

/// Every readable proof in `dir` with a seq above `after`, in file order.
pub fn read_after(dir: &Path, after: u64) -> io::Result<Vec<Proof>> {
    let mut bytes = Vec::new();
    match fs::File::open(dir.join(PROOFS_FILE)) {
        Ok(mut f) => f.read_to_end(&mut bytes)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(bytes
        .chunks_exact(PROOF_ENTRY_BYTES)
        .filter_map(decode)
        .filter(|(seq, _)| *seq > after)
        .collect())
}

impl ProofLog {
    /// Open the proof file of the journal in `dir`, dropping the entries of records the depot
    /// acknowledged (`acked_seq`), damaged entries and a torn tail.
    pub fn open(dir: &Path, acked_seq: u64) -> io::Result<ProofLog> {
        let path = dir.join(PROOFS_FILE);
        let held = read_after(dir, acked_seq)?;
        let on_disk = fs::metadata(&path).map_or(0, |m| m.len());
        if on_disk != (held.len() * PROOF_ENTRY_BYTES) as u64 {
            let tmp = dir.join(format!("{PROOFS_FILE}.tmp"));
            let mut f = fs::File::create(&tmp)?;
            for (seq, code) in &held {
                f.write_all(&encode(*seq, code))?;
            }
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        Ok(ProofLog {
            path,
            file: Some(file),
            entries: held.len() as u64,
        })
    }

    /// A proof log that keeps nothing (its file could not be opened: logged by the caller).
    pub fn none(dir: &Path) -> ProofLog {
        ProofLog {
            path: dir.join(PROOFS_FILE),
            file: None,
            entries: 0,
        }
    }

    /// Keep the code behind record `seq`. Never fails the scan: a proof that cannot be
    /// written is logged and the ride stands on its record.
    pub fn append(&mut self, seq: u64, code: &[u8; CODE_BYTES]) {
        if self.entries >= PROOFS_HELD_MAX {
            if self.entries == PROOFS_HELD_MAX {
                tracing::warn!(held = self.entries, "journal: ride-code proof file full: scans recorded without proof until the next upload");
                self.entries += 1;
            }
            return;
        }
        let Some(f) = self.file.as_mut() else { return };
        match f.write_all(&encode(seq, code)) {
            Ok(()) => self.entries += 1,
            Err(e) => {
                tracing::warn!(error = %e, path = %self.path.display(), seq, "journal: ride-code proof not written");
                self.file = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_piece_of_any_length_decodes_to_no_entry_never_a_panic() {
        for len in [
            0,
            1,
            PROOF_ENTRY_BYTES - 5,
            PROOF_ENTRY_BYTES - 1,
            PROOF_ENTRY_BYTES + 1,
        ] {
            assert!(decode(&vec![0xA5; len]).is_none(), "length {len}");
        }
    }
    use super::*;

    #[test]
    fn proofs_round_trip_and_acknowledged_or_damaged_ones_are_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = ProofLog::open(dir.path(), 0).unwrap();
        for seq in 1..=4u64 {
            log.append(seq, &[seq as u8; CODE_BYTES]);
        }
        drop(log);
        let all = read_after(dir.path(), 0).unwrap();
        assert_eq!(all.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(all[2].1, [3u8; CODE_BYTES]);
        // Entry 3 damaged, and a torn tail.
        let path = dir.path().join(PROOFS_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[2 * PROOF_ENTRY_BYTES + 20] ^= 1;
        bytes.extend_from_slice(&[7; 30]);
        fs::write(&path, bytes).unwrap();
        let mut log = ProofLog::open(dir.path(), 1).unwrap();
        log.append(5, &[5; CODE_BYTES]);
        let held: Vec<u64> = read_after(dir.path(), 0)
            .unwrap()
            .iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(held, [2, 4, 5]);
    }
}
