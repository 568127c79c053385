//! Grey records (灰记录): the validator's durable intent to debit a card, written and synced
//! before DEBIT FOR CAPP PURCHASE is sent, so that a power cut between the debit and its
//! record cannot lose the debit.
//!
//! JT/T 978 terminals keep such a note of every purchase they started but have not proven:
//! when the same card comes back, GET TRANSACTION PROOF for the offline counter of the note
//! tells whether the card was debited (record it once, charge nothing more) or not (void the
//! note, tap normally). Grey records do not take journal sequence numbers: they live in their
//! own file, `grey.dat` in the journal folder, so the records' numbering is the same with or
//! without them.
//!
//! ## On disk: `grey.dat`, append-only, fixed-size entries
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 1 | magic `0xC9` |
//! | 1 | 1 | format version, 1 |
//! | 2 | 1 | op: 1 intent, 2 settled (the record is durable), 3 voided (the card was not debited), 4 abandoned (dropped from a full table) |
//! | 3 | 1 | rider category (0 adult .. 4 veteran) |
//! | 4 | 10 | card number (BCD) |
//! | 14 | 2 | card offline counter of the purchase |
//! | 16 | 4 | PSAM terminal transaction sequence (from MAC1) |
//! | 20 | 8 | fare, fen (signed) |
//! | 28 | 8 | purse balance after the debit, fen (signed, within the purse's range) |
//! | 36 | 8 | time of the debit, unix seconds (signed) |
//! | 44 | 2 | UTC offset of the local clock, minutes (signed) |
//! | 46 | 2 | route |
//! | 48 | 6 | terminal number (BCD) |
//! | 54 | 6 | reserved, zero |
//! | 60 | 4 | CRC-32/ISCSI of bytes 0..60, big-endian |
//!
//! Integers are big-endian. Entries 2–4 repeat the intent's fields; they close the open intent
//! of the same card and offline counter.
//!
//! ## Guarantees
//!
//! - An intent is written and synced before the debit is sent; if that fails, the debit is
//!   not sent (the tap is refused `storage_unavailable`).
//! - Several intents may share one sync (taps on several readers at once): none of their
//!   debits is sent before it returns.
//! - Entries wait in memory (at most [`GREY_BUFFER_ENTRIES`]) and go to the file in one
//!   write at the next sync, so a sync costs one write and one `fdatasync`, whatever the
//!   number of entries. Settling and voiding have no sync of their own: the next intent's
//!   sync carries them. If one is lost to a power cut, opening the journal settles every open
//!   intent whose card and offline counter a journal record already holds, and an intent the
//!   card never honoured is voided by its GET TRANSACTION PROOF.
//! - On open, invalid entries after the last valid one are a torn tail: reported and cut. An
//!   invalid entry before a valid one is reported and skipped. A file that cannot be read is
//!   reported and the validator starts with no open intent: the bus keeps running.
//! - When no intent is open and the file holds [`GREY_COMPACT_ENTRIES`] entries or more, it
//!   is cut to nothing; when intents stay open and it reaches [`GREY_FILE_ENTRIES_MAX`], it is
//!   replaced atomically by a file holding only the open intents.

use std::io;
use std::path::{Path, PathBuf};

use super::record::CRC32;
use super::{FileLayer, Problem, Record, SegmentFile};
use crate::types::{is_purse_balance, BalanceFen, CardNo, Fen, RiderCategory};

/// Bytes of one grey entry.
pub const GREY_BYTES: usize = 64;
/// Intents open at once (cards pulled away or cut off mid-debit, and group-commit taps not
/// yet synced). When full, the oldest is abandoned (logged): its debit is still on the card.
pub const GREY_OPEN_MAX: usize = 160;
/// With no intent open, the file is cut to nothing once it holds this many entries (128 KiB).
/// A cut costs a full sync of the file's size: at two entries a tap, one every 1,024 taps.
pub const GREY_COMPACT_ENTRIES: u64 = 2_048;
/// Entries kept in memory until the next sync (or until this many wait): one write a sync,
/// not one a tap (20 KiB).
pub const GREY_BUFFER_ENTRIES: usize = 2 * GREY_OPEN_MAX;
/// With intents open, the file is rewritten with only them once it holds this many (256 KiB).
pub const GREY_FILE_ENTRIES_MAX: u64 = 4_096;
/// The grey-record file in the journal folder.
pub const GREY_FILE: &str = "grey.dat";

const MAGIC: u8 = 0xC9;
const FORMAT_VERSION: u8 = 1;
const CRC_AT: usize = 60;

/// What one grey entry says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum GreyOp {
    /// About to send DEBIT FOR CAPP PURCHASE.
    Intent = 1,
    /// The debit's record is durable in the journal.
    Settled = 2,
    /// The card says it was not debited (an error status, or no proof for the counter).
    Voided = 3,
    /// Dropped from a full table of open intents.
    Abandoned = 4,
}

/// A debit sent (or about to be sent) to a card, and what its record will say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GreyRecord {
    pub card_no: CardNo,
    pub offline_counter: u16,
    pub terminal_seq: u32,
    pub fare_fen: Fen,
    /// Within the purse's range (negative: overdrawn).
    pub balance_after_fen: BalanceFen,
    pub category: RiderCategory,
    pub route: u16,
    pub at_unix_s: i64,
    pub utc_offset_min: i16,
    pub terminal_no: [u8; 6],
}

/// Why an entry was not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GreyError {
    #[error("grey entry checksum does not match")]
    Crc,
    #[error("not a grey entry (magic or version)")]
    Magic,
    #[error("grey entry field out of range: {0}")]
    Field(&'static str),
}

impl GreyRecord {
    /// Whether `rec` is this debit's record (same card, same offline counter).
    pub fn is_recorded_by(&self, rec: &Record) -> bool {
        rec.qr.is_none()
            && rec.card_no == self.card_no
            && rec.card_tx.offline_counter == self.offline_counter
    }

    pub fn encode(&self, op: GreyOp) -> [u8; GREY_BYTES] {
        let mut b = [0u8; GREY_BYTES];
        b[0] = MAGIC;
        b[1] = FORMAT_VERSION;
        b[2] = op as u8;
        b[3] = self.category as u8;
        b[4..14].copy_from_slice(&self.card_no.0);
        b[14..16].copy_from_slice(&self.offline_counter.to_be_bytes());
        b[16..20].copy_from_slice(&self.terminal_seq.to_be_bytes());
        b[20..28].copy_from_slice(&i64::from(self.fare_fen).to_be_bytes());
        b[28..36].copy_from_slice(&i64::from(self.balance_after_fen).to_be_bytes());
        b[36..44].copy_from_slice(&self.at_unix_s.to_be_bytes());
        b[44..46].copy_from_slice(&self.utc_offset_min.to_be_bytes());
        b[46..48].copy_from_slice(&self.route.to_be_bytes());
        b[48..54].copy_from_slice(&self.terminal_no);
        let crc = CRC32.checksum(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8; GREY_BYTES]) -> Result<(GreyOp, GreyRecord), GreyError> {
        let crc = u32::from_be_bytes([b[60], b[61], b[62], b[63]]);
        if CRC32.checksum(&b[..CRC_AT]) != crc {
            return Err(GreyError::Crc);
        }
        if b[0] != MAGIC || b[1] != FORMAT_VERSION {
            return Err(GreyError::Magic);
        }
        let i64_at = |i: usize| i64::from_be_bytes(std::array::from_fn(|k| b[i + k]));
        let op = match b[2] {
            1 => GreyOp::Intent,
            2 => GreyOp::Settled,
            3 => GreyOp::Voided,
            4 => GreyOp::Abandoned,
            _ => return Err(GreyError::Field("op")),
        };
        let fen = |i: usize, what| Fen::try_from(i64_at(i)).map_err(|_| GreyError::Field(what));
        let g = GreyRecord {
            card_no: CardNo::from_bcd(std::array::from_fn(|k| b[4 + k]))
                .map_err(|_| GreyError::Field("card"))?,
            offline_counter: u16::from_be_bytes([b[14], b[15]]),
            terminal_seq: u32::from_be_bytes([b[16], b[17], b[18], b[19]]),
            fare_fen: fen(20, "fare")?,
            balance_after_fen: Some(i64_at(28))
                .filter(|b| is_purse_balance(*b))
                .map(|b| b as BalanceFen)
                .ok_or(GreyError::Field("balance"))?,
            category: RiderCategory::from_u8(b[3]).ok_or(GreyError::Field("category"))?,
            at_unix_s: i64_at(36),
            utc_offset_min: i16::from_be_bytes([b[44], b[45]]),
            route: u16::from_be_bytes([b[46], b[47]]),
            terminal_no: std::array::from_fn(|k| b[48 + k]),
        };
        Ok((op, g))
    }

    /// One JSON object for `journal show --grey`.
    pub fn to_json(&self, op: GreyOp) -> serde_json::Value {
        serde_json::json!({
            "grey": op,
            "card_no": self.card_no.to_string(),
            "card_counter": self.offline_counter,
            "terminal_seq": self.terminal_seq,
            "fare_fen": self.fare_fen,
            "balance_fen": self.balance_after_fen,
            "category": self.category.as_str(),
            "route": self.route,
            "at": crate::clock::Timestamp {
                unix_s: self.at_unix_s,
                utc_offset_s: i32::from(self.utc_offset_min) * 60,
            }
            .to_rfc3339(),
            "terminal": super::record::hex(&self.terminal_no),
        })
    }
}

/// What a read of `grey.dat` found.
#[derive(Debug, Default)]
pub struct GreyScan {
    /// Valid entries in file order.
    pub entries: Vec<(GreyOp, GreyRecord)>,
    /// Length of the file's valid prefix, bytes.
    pub valid_len: u64,
    pub problems: Vec<Problem>,
}

impl GreyScan {
    /// The intents still open after every entry, in the order they were made.
    pub fn open_intents(&self) -> Vec<GreyRecord> {
        let mut open: Vec<GreyRecord> = Vec::new();
        for (op, g) in &self.entries {
            match op {
                // One debit per card can be in doubt: a newer intent replaces an older one.
                GreyOp::Intent => {
                    open.retain(|o| o.card_no != g.card_no);
                    open.push(*g);
                }
                _ => open.retain(|o| {
                    !(o.card_no == g.card_no && o.offline_counter == g.offline_counter)
                }),
            }
        }
        open
    }
}

pub fn grey_path(dir: &Path) -> PathBuf {
    dir.join(GREY_FILE)
}

/// Read `grey.dat` (read-only). A file that cannot be read is a problem, not an error: the
/// bus must keep running.
pub fn scan_grey(dir: &Path) -> GreyScan {
    let path = grey_path(dir);
    let mut out = GreyScan::default();
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return out,
        Err(e) => {
            out.problems.push(Problem {
                segment: path,
                offset: 0,
                what: format!("grey records unreadable ({e}): starting with none open"),
            });
            return out;
        }
    };
    let mut invalid: Vec<Problem> = Vec::new();
    for (slot, chunk) in bytes.chunks(GREY_BYTES).enumerate() {
        let offset = (slot * GREY_BYTES) as u64;
        let what = match <&[u8; GREY_BYTES]>::try_from(chunk) {
            Err(_) => format!("torn grey entry: {} of {GREY_BYTES} bytes", chunk.len()),
            Ok(b) => match GreyRecord::decode(b) {
                Ok(entry) => {
                    out.problems.append(&mut invalid);
                    out.entries.push(entry);
                    out.valid_len = offset + GREY_BYTES as u64;
                    continue;
                }
                Err(e) => format!("corrupt grey entry: {e}"),
            },
        };
        invalid.push(Problem {
            segment: path.clone(),
            offset,
            what,
        });
    }
    if let Some(first_bad) = invalid.first() {
        out.problems.push(Problem {
            segment: path.clone(),
            offset: first_bad.offset,
            what: format!(
                "torn grey tail of {} bytes ({}): cut",
                bytes.len() as u64 - out.valid_len,
                first_bad.what
            ),
        });
    }
    out
}

/// The writer side of `grey.dat`, with the open intents in memory.
pub struct GreyLog {
    path: PathBuf,
    file: Option<Box<dyn SegmentFile>>,
    /// Valid entries written to the file (its valid length is this × GREY_BYTES).
    entries: u64,
    /// Entries not yet written, in order (at most [`GREY_BUFFER_ENTRIES`]; sized at open).
    buf: Vec<u8>,
    open: heapless::Vec<GreyRecord, GREY_OPEN_MAX>,
    /// The file must be cut to its valid length before the next append.
    needs_cut: bool,
    /// An intent was written since the last successful sync.
    unsynced_intents: bool,
}

impl GreyLog {
    /// Read `grey.dat`, settle every open intent that `records` (the journal) already holds,
    /// and get ready to append. Problems found are returned, never fatal.
    pub fn open(dir: &Path, layer: &dyn FileLayer, records: &[Record]) -> (GreyLog, Vec<Problem>) {
        let scan = scan_grey(dir);
        let mut open = scan.open_intents();
        let mut problems = scan.problems;
        let path = grey_path(dir);
        open.retain(|g| !records.iter().rev().any(|r| g.is_recorded_by(r)));
        if open.len() > GREY_OPEN_MAX {
            let dropped = open.len() - GREY_OPEN_MAX;
            problems.push(Problem {
                segment: path.clone(),
                offset: 0,
                what: format!("{dropped} open grey records beyond {GREY_OPEN_MAX}: oldest dropped"),
            });
            open.drain(..dropped);
        }
        let mut log = GreyLog {
            path,
            file: None,
            entries: scan.valid_len / GREY_BYTES as u64,
            buf: Vec::with_capacity(GREY_BUFFER_ENTRIES * GREY_BYTES),
            open: open.into_iter().collect(),
            needs_cut: true,
            unsynced_intents: false,
        };
        if let Err(e) = log.ensure_file(layer) {
            // Retried before the next intent; until then card debits are refused.
            tracing::error!(error = %e, "grey records: cannot open for writing");
        }
        (log, problems)
    }

    /// Intents not yet settled or voided, oldest first.
    pub fn open_intents(&self) -> &[GreyRecord] {
        &self.open
    }

    /// The open intent for this card, if any.
    pub fn intent_for(&self, card_no: CardNo) -> Option<GreyRecord> {
        self.open.iter().find(|g| g.card_no == card_no).copied()
    }

    fn ensure_file(&mut self, layer: &dyn FileLayer) -> io::Result<()> {
        if self.file.is_none() {
            let is_new = !self.path.exists();
            self.file = Some(layer.open_segment(&self.path)?);
            if is_new {
                // The file's name must outlive a power cut as surely as its first intent.
                if let Some(dir) = self.path.parent() {
                    super::sync_dir(dir)?;
                }
            }
            self.needs_cut = true;
        }
        if self.needs_cut {
            let len = self.entries * GREY_BYTES as u64;
            if let Some(f) = self.file.as_mut() {
                if let Err(e) = f.truncate(len) {
                    self.file = None;
                    return Err(e);
                }
            }
            self.needs_cut = false;
        }
        Ok(())
    }

    /// Make the intent durable (written and synced). On error nothing may be debited.
    pub fn intent(&mut self, layer: &dyn FileLayer, g: &GreyRecord) -> io::Result<()> {
        self.intent_unsynced(layer, g)?;
        self.sync(layer)
    }

    /// Write the intent without a sync: several taps' intents then share one [`sync`], and
    /// none of their debits may be sent before it returns ([`GreyLog::is_durable`]).
    ///
    /// [`sync`]: GreyLog::sync
    pub fn intent_unsynced(&mut self, layer: &dyn FileLayer, g: &GreyRecord) -> io::Result<()> {
        self.ensure_file(layer)?;
        // Set first: whatever fails below, a debit waits for a sync that succeeds.
        self.unsynced_intents = true;
        if let Some(i) = self.open.iter().position(|o| o.card_no == g.card_no) {
            self.open.remove(i);
        }
        if self.open.is_full() {
            let oldest = self.open.remove(0);
            tracing::warn!(card = %oldest.card_no, "grey record table full: oldest abandoned");
            self.append(&oldest.encode(GreyOp::Abandoned))?;
        }
        self.append(&g.encode(GreyOp::Intent))?;
        // Capacity was made above.
        let _ = self.open.push(*g);
        Ok(())
    }

    /// Write every entry waiting in memory and sync: the intents written unsynced become
    /// durable (and the closes before them with them).
    pub fn sync(&mut self, layer: &dyn FileLayer) -> io::Result<()> {
        self.ensure_file(layer)?;
        self.flush()?;
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("grey file not open"))?;
        if let Err(e) = file.sync() {
            // What reached the disk is unknown: reopened and cut to the entries written.
            self.file = None;
            return Err(e);
        }
        self.unsynced_intents = false;
        Ok(())
    }

    /// Whether every intent written is durable: a debit may be sent only then.
    pub fn is_durable(&self) -> bool {
        !self.unsynced_intents
    }

    /// Close the card's open intent (settled: its record is durable; voided: never debited).
    /// Not synced: the next intent's sync carries it, and open() repairs its loss.
    pub fn close(&mut self, layer: &dyn FileLayer, card_no: CardNo, op: GreyOp) {
        let Some(i) = self.open.iter().position(|g| g.card_no == card_no) else {
            return;
        };
        let g = self.open.remove(i);
        let written = self
            .ensure_file(layer)
            .and_then(|()| self.append(&g.encode(op)));
        if let Err(e) = written {
            tracing::warn!(error = %e, card = %card_no, "grey record not closed on disk: repaired at the next start");
            return;
        }
        if let Err(e) = self.compact(layer) {
            tracing::warn!(error = %e, "grey records not compacted");
        }
    }

    /// Queue an entry; written at the next sync, or now if the queue is full.
    fn append(&mut self, bytes: &[u8; GREY_BYTES]) -> io::Result<()> {
        if self.buf.len() + GREY_BYTES > GREY_BUFFER_ENTRIES * GREY_BYTES {
            self.flush()?;
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// Write the queued entries in one write. On error they stay queued (an intent among
    /// them must not be forgotten): the file is reopened, cut to the entries written before,
    /// and they are written again by the next flush.
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("grey file not open"))?;
        match file.write_all(&self.buf) {
            Ok(()) => {
                self.entries += (self.buf.len() / GREY_BYTES) as u64;
                self.buf.clear();
                Ok(())
            }
            Err(e) => {
                self.file = None;
                Err(e)
            }
        }
    }

    /// Entries in the file and queued.
    fn total_entries(&self) -> u64 {
        self.entries + (self.buf.len() / GREY_BYTES) as u64
    }

    fn compact(&mut self, layer: &dyn FileLayer) -> io::Result<()> {
        if self.open.is_empty() && self.total_entries() >= GREY_COMPACT_ENTRIES {
            // Nothing open: nothing queued or written is needed any more.
            self.buf.clear();
            self.unsynced_intents = false;
            self.entries = 0;
            self.needs_cut = true;
            return self.ensure_file(layer);
        }
        if self.total_entries() >= GREY_FILE_ENTRIES_MAX {
            let mut bytes = [0u8; GREY_OPEN_MAX * GREY_BYTES];
            for (i, g) in self.open.iter().enumerate() {
                bytes[i * GREY_BYTES..(i + 1) * GREY_BYTES]
                    .copy_from_slice(&g.encode(GreyOp::Intent));
            }
            self.file = None;
            layer.replace(&self.path, &bytes[..self.open.len() * GREY_BYTES])?;
            // Every open intent is in the new file, durably: the queue is not needed.
            self.buf.clear();
            self.unsynced_intents = false;
            self.entries = self.open.len() as u64;
            return self.ensure_file(layer);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample(counter: u16) -> GreyRecord {
        GreyRecord {
            card_no: "37140000000000000001".parse().unwrap(),
            offline_counter: counter,
            terminal_seq: 77,
            fare_fen: 200,
            balance_after_fen: 4_800,
            category: RiderCategory::Adult,
            route: 7,
            at_unix_s: 1_795_824_000,
            utc_offset_min: 480,
            terminal_no: [0, 0, 0, 0, 0, 1],
        }
    }

    #[test]
    fn grey_entry_round_trips_and_any_bit_flip_is_caught() {
        let g = sample(3);
        for op in [
            GreyOp::Intent,
            GreyOp::Settled,
            GreyOp::Voided,
            GreyOp::Abandoned,
        ] {
            let b = g.encode(op);
            assert_eq!(GreyRecord::decode(&b), Ok((op, g)));
            for bit in 0..GREY_BYTES * 8 {
                let mut c = b;
                c[bit / 8] ^= 1 << (bit % 8);
                assert!(GreyRecord::decode(&c).is_err(), "bit {bit}");
            }
        }
    }

    #[test]
    fn a_newer_intent_replaces_the_cards_older_one_and_a_close_needs_its_counter() {
        let mut other = sample(9);
        other.card_no = "37140000000000000002".parse().unwrap();
        let scan = GreyScan {
            entries: vec![
                (GreyOp::Intent, sample(1)),
                (GreyOp::Intent, other),
                (GreyOp::Intent, sample(2)),
                (GreyOp::Voided, sample(1)),
            ],
            ..GreyScan::default()
        };
        assert_eq!(scan.open_intents(), [other, sample(2)]);
    }
}
