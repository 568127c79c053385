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
//! ## On disk: `grey.dat`, fixed-size entries written in place
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 1 | magic `0xC9` |
//! | 1 | 1 | format version, 3 (version 2, without the fare rule, and version 1, appended and without a lap, are still read) |
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
//! | 54 | 4 | lap: the pass over the file that wrote the entry (0 in version 1) |
//! | 58 | 1 | the fare rule that priced the debit, as its record will say (`crate::fare::FareRule`; version 3, unknown in versions 1 and 2) |
//! | 59 | 1 | reserved, zero |
//! | 60 | 4 | CRC-32/ISCSI of bytes 0..60, big-endian |
//!
//! Integers are big-endian. Entries 2–4 repeat the intent's fields; they close the open intent
//! of the same card and offline counter.
//!
//! The file is [`GREY_FILE_BYTES`] long, made so with zeros when it is created, and written
//! in place ([`super::files`]): a slot of zeros holds no entry. Entries go one after another
//! from slot 0 in one pass, a lap. Whenever no intent is open, nothing written is needed any
//! more: the next entry starts a new lap at slot 0, with no write or sync of its own. The
//! entries read are those of the lap of the first valid slot (the newest lap, since each
//! starts at slot 0), in slot order; what follows of older laps is ignored. A cut while a
//! new lap's first entries are written leaves slot 0 of the old lap (every intent of which
//! was closed: settled, and so recorded, or voided) or of the new one, never a mix that
//! loses an intent that was synced.
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
//! - When no intent is open, the next entry starts a new lap (no I/O). When intents stay open
//!   and the lap reaches [`GREY_FILE_ENTRIES_MAX`], the file is replaced atomically by one
//!   holding only the open intents, in a new lap.
//! - On open, whatever follows the newest lap's last entry (older laps, a torn tail) is
//!   zeroed and synced before anything is written, so nothing there can join a lap later.

use std::io;
use std::path::{Path, PathBuf};

use super::record::CRC32;
use super::{FileLayer, Problem, Record, SegmentFile};
use crate::fare::FareRule;
use crate::types::{is_purse_balance, BalanceFen, CardNo, Fen, RiderCategory};

/// Bytes of one grey entry.
pub const GREY_BYTES: usize = 64;
/// Intents open at once (cards pulled away or cut off mid-debit, and group-commit taps not
/// yet synced). When full, the oldest is abandoned (logged): its debit is still on the card.
pub const GREY_OPEN_MAX: usize = 160;
/// Entries kept in memory until the next sync (or until this many wait): one write a sync,
/// not one a tap (20 KiB).
pub const GREY_BUFFER_ENTRIES: usize = 2 * GREY_OPEN_MAX;
/// Entries `grey.dat` holds: a lap that reaches it with intents open is rewritten with only
/// them.
pub const GREY_FILE_ENTRIES_MAX: u64 = 4_096;
/// Bytes of `grey.dat` (256 KiB), made so with zeros when it is created.
pub const GREY_FILE_BYTES: u64 = GREY_FILE_ENTRIES_MAX * GREY_BYTES as u64;
/// The grey-record file in the journal folder.
pub const GREY_FILE: &str = "grey.dat";

const MAGIC: u8 = 0xC9;
const FORMAT_VERSION: u8 = 3;
/// Entries without the fare rule (read as unknown).
const FORMAT_VERSION_LAP: u8 = 2;
/// Appended entries without a lap (read as lap 0).
const FORMAT_VERSION_APPENDED: u8 = 1;
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
    /// The rule that priced the debit ([`FareRule::Unknown`] in entries of version 1 and 2).
    pub rule: FareRule,
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

    /// The entry of lap 0 (see [`GreyRecord::encode_in_lap`]).
    pub fn encode(&self, op: GreyOp) -> [u8; GREY_BYTES] {
        self.encode_in_lap(op, 0)
    }

    /// The entry saying `op` of this debit, written in lap `lap`.
    pub fn encode_in_lap(&self, op: GreyOp, lap: u32) -> [u8; GREY_BYTES] {
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
        b[54..58].copy_from_slice(&lap.to_be_bytes());
        b[58] = self.rule as u8;
        let crc = CRC32.checksum(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// The entry's op and debit (its lap: [`GreyRecord::decode_in_lap`]).
    pub fn decode(b: &[u8; GREY_BYTES]) -> Result<(GreyOp, GreyRecord), GreyError> {
        Self::decode_in_lap(b).map(|(op, g, _)| (op, g))
    }

    /// The entry's op, debit and lap (0 for a version 1 entry).
    pub fn decode_in_lap(b: &[u8; GREY_BYTES]) -> Result<(GreyOp, GreyRecord, u32), GreyError> {
        let crc = u32::from_be_bytes([b[60], b[61], b[62], b[63]]);
        if CRC32.checksum(&b[..CRC_AT]) != crc {
            return Err(GreyError::Crc);
        }
        if b[0] != MAGIC || !(FORMAT_VERSION_APPENDED..=FORMAT_VERSION).contains(&b[1]) {
            return Err(GreyError::Magic);
        }
        let lap = match b[1] {
            FORMAT_VERSION_LAP | FORMAT_VERSION => u32::from_be_bytes([b[54], b[55], b[56], b[57]]),
            _ => 0,
        };
        let rule = match b[1] {
            FORMAT_VERSION => FareRule::from_u8(b[58]).ok_or(GreyError::Field("fare rule"))?,
            _ => FareRule::Unknown,
        };
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
            rule,
        };
        Ok((op, g, lap))
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
    /// The valid entries of the newest lap, in slot order.
    pub entries: Vec<(GreyOp, GreyRecord)>,
    /// The newest lap (that of the first valid slot; 0 when none is valid).
    pub lap: u32,
    /// The slot after the newest lap's last entry: where its next entry goes.
    pub next_slot: u64,
    /// The end of the file's last slot that is not zeros, bytes (older laps, a torn tail):
    /// from `next_slot` to here is cut on open.
    pub written_end: u64,
    /// Whether the file is longer than [`GREY_FILE_BYTES`] (a version 1 file that grew).
    pub oversized: bool,
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
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return GreyScan::default(),
        Err(e) => {
            return GreyScan {
                problems: vec![Problem {
                    segment: path,
                    offset: 0,
                    what: format!("grey records unreadable ({e}): starting with none open"),
                }],
                ..GreyScan::default()
            }
        }
    };
    scan_grey_bytes(&path, &bytes)
}

/// The entries of the newest lap in `bytes` (the content of `path`).
fn scan_grey_bytes(path: &Path, bytes: &[u8]) -> GreyScan {
    let written_end = super::written_end(bytes, GREY_BYTES);
    let mut out = GreyScan {
        written_end: written_end as u64,
        oversized: bytes.len() as u64 > GREY_FILE_BYTES,
        ..GreyScan::default()
    };
    let mut lap = None;
    let mut invalid: Vec<Problem> = Vec::new();
    for (slot, chunk) in bytes[..written_end].chunks(GREY_BYTES).enumerate() {
        let offset = (slot * GREY_BYTES) as u64;
        let what = match <&[u8; GREY_BYTES]>::try_from(chunk) {
            Err(_) => format!("torn grey entry: {} of {GREY_BYTES} bytes", chunk.len()),
            Ok(b) => match GreyRecord::decode_in_lap(b) {
                Ok((op, g, l)) if *lap.get_or_insert(l) == l => {
                    out.problems.append(&mut invalid);
                    out.entries.push((op, g));
                    out.lap = l;
                    out.next_slot = slot as u64 + 1;
                    continue;
                }
                // An older lap's entry: what the newest lap has not overwritten (yet).
                Ok(_) => continue,
                Err(e) => format!("corrupt grey entry: {e}"),
            },
        };
        invalid.push(Problem {
            segment: path.to_path_buf(),
            offset,
            what,
        });
    }
    if let Some(first_bad) = invalid.first() {
        out.problems.push(Problem {
            segment: path.to_path_buf(),
            offset: first_bad.offset,
            what: format!(
                "torn grey tail of {} bytes ({}): cut",
                written_end as u64 - first_bad.offset,
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
    /// The lap being written.
    lap: u32,
    /// Slots of this lap written to the file: the next entry goes to this slot.
    next_slot: u64,
    /// The end of the bytes of the file that may not be zeros or older laps' entries.
    written_end: u64,
    /// Entries not yet written, in order (at most [`GREY_BUFFER_ENTRIES`]; sized at open).
    buf: Vec<u8>,
    open: heapless::Vec<GreyRecord, GREY_OPEN_MAX>,
    /// The file must be cut (zeroed from `next_slot` to `written_end`) before the next write.
    needs_cut: bool,
    /// An intent was written since the last successful sync.
    unsynced_intents: bool,
}

impl GreyLog {
    /// Read `grey.dat`, settle every open intent that `records` (the journal) already holds,
    /// and get ready to write. Problems found are returned, never fatal.
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
            lap: scan.lap,
            next_slot: scan.next_slot,
            written_end: scan.written_end,
            buf: Vec::with_capacity(GREY_BUFFER_ENTRIES * GREY_BYTES),
            open: open.into_iter().collect(),
            needs_cut: true,
            unsynced_intents: false,
        };
        if log.open.is_empty() {
            // Nothing the file says is needed: the next entry starts a lap at slot 0.
            log.new_lap();
        }
        let ready = if scan.oversized || log.next_slot >= GREY_FILE_ENTRIES_MAX {
            log.rewrite_open(layer)
        } else {
            log.ensure_file(layer)
        };
        if let Err(e) = ready {
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
            self.file = Some(layer.open_segment(&self.path, GREY_FILE_BYTES)?);
            self.needs_cut = true;
        }
        if self.needs_cut {
            if let Err(e) = self.cut_tail() {
                self.file = None;
                return Err(e);
            }
            self.needs_cut = false;
        }
        Ok(())
    }

    /// Zero what follows this lap's entries (older laps, a torn tail, a failed write), synced.
    fn cut_tail(&mut self) -> io::Result<()> {
        let from = self.next_slot * GREY_BYTES as u64;
        let Some(f) = self.file.as_mut() else {
            return Ok(());
        };
        super::files::zero_range(f.as_mut(), from, self.written_end)?;
        self.written_end = from;
        Ok(())
    }

    /// Start a new lap at slot 0: nothing written or queued is needed any more.
    fn new_lap(&mut self) {
        self.lap = self.lap.wrapping_add(1);
        self.next_slot = 0;
        self.buf.clear();
        self.unsynced_intents = false;
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
        if self.total_entries() + 2 > GREY_FILE_ENTRIES_MAX {
            self.rewrite_open(layer)?;
            self.unsynced_intents = true;
        }
        if let Some(i) = self.open.iter().position(|o| o.card_no == g.card_no) {
            self.open.remove(i);
        }
        if self.open.is_full() {
            let oldest = self.open.remove(0);
            tracing::warn!(card = %oldest.card_no, "grey record table full: oldest abandoned");
            self.append(&oldest.encode_in_lap(GreyOp::Abandoned, self.lap))?;
        }
        self.append(&g.encode_in_lap(GreyOp::Intent, self.lap))?;
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
    /// Not synced: the next intent's sync carries it, and open() repairs its loss. With no
    /// intent left open, the next entry starts a new lap instead.
    pub fn close(&mut self, layer: &dyn FileLayer, card_no: CardNo, op: GreyOp) {
        let Some(i) = self.open.iter().position(|g| g.card_no == card_no) else {
            return;
        };
        let g = self.open.remove(i);
        if self.open.is_empty() {
            self.new_lap();
            return;
        }
        let written = self.ensure_file(layer).and_then(|()| {
            if self.total_entries() + 1 > GREY_FILE_ENTRIES_MAX {
                // The rewritten file holds the open intents only: this one is not among them.
                self.rewrite_open(layer)
            } else {
                self.append(&g.encode_in_lap(op, self.lap))
            }
        });
        if let Err(e) = written {
            tracing::warn!(error = %e, card = %card_no, "grey record not closed on disk: repaired at the next start");
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

    /// Write the queued entries in one write, at the lap's next slot. On error they stay
    /// queued (an intent among them must not be forgotten): the file is reopened, cut to the
    /// entries written before, and they are written again by the next flush.
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let at = self.next_slot * GREY_BYTES as u64;
        self.written_end = self.written_end.max(at + self.buf.len() as u64);
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("grey file not open"))?;
        match file.write_at(at, &self.buf) {
            Ok(()) => {
                self.next_slot += (self.buf.len() / GREY_BYTES) as u64;
                self.buf.clear();
                Ok(())
            }
            Err(e) => {
                self.file = None;
                Err(e)
            }
        }
    }

    /// Entries of this lap in the file and queued.
    fn total_entries(&self) -> u64 {
        self.next_slot + (self.buf.len() / GREY_BYTES) as u64
    }

    /// Replace the file, atomically, by one holding only the open intents in a new lap: they
    /// are durable when this returns. The file is then made its full size again with zeros
    /// (a cut in between leaves a shorter file, read the same and made full size on open).
    fn rewrite_open(&mut self, layer: &dyn FileLayer) -> io::Result<()> {
        let lap = self.lap.wrapping_add(1);
        let mut bytes = [0u8; GREY_OPEN_MAX * GREY_BYTES];
        for (i, g) in self.open.iter().enumerate() {
            bytes[i * GREY_BYTES..(i + 1) * GREY_BYTES]
                .copy_from_slice(&g.encode_in_lap(GreyOp::Intent, lap));
        }
        self.file = None;
        layer.replace(&self.path, &bytes[..self.open.len() * GREY_BYTES])?;
        self.lap = lap;
        self.buf.clear();
        self.unsynced_intents = false;
        self.next_slot = self.open.len() as u64;
        self.written_end = self.next_slot * GREY_BYTES as u64;
        self.ensure_file(layer)
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
            rule: FareRule::Transfer,
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
    fn the_newest_lap_is_read_and_older_laps_after_it_are_ignored() {
        let mut other = sample(9);
        other.card_no = "37140000000000000002".parse().unwrap();
        let mut file = vec![0u8; 8 * GREY_BYTES];
        let mut put = |slot: usize, b: [u8; GREY_BYTES]| {
            file[slot * GREY_BYTES..(slot + 1) * GREY_BYTES].copy_from_slice(&b)
        };
        // Lap 6 wrote four entries; lap 7 then wrote two over its first two.
        put(0, sample(1).encode_in_lap(GreyOp::Intent, 7));
        put(1, other.encode_in_lap(GreyOp::Intent, 7));
        put(2, sample(3).encode_in_lap(GreyOp::Settled, 6));
        put(3, other.encode_in_lap(GreyOp::Intent, 6));
        let scan = scan_grey_bytes(Path::new("grey.dat"), &file);
        assert_eq!((scan.lap, scan.next_slot), (7, 2));
        assert_eq!(scan.written_end, 4 * GREY_BYTES as u64);
        assert_eq!(scan.open_intents(), [sample(1), other]);
        assert!(scan.problems.is_empty(), "{:?}", scan.problems);
        // A torn entry after the lap's last one is a tail, reported.
        file[4 * GREY_BYTES..4 * GREY_BYTES + 10].fill(0xC9);
        let scan = scan_grey_bytes(Path::new("grey.dat"), &file);
        assert_eq!(scan.next_slot, 2);
        assert!(scan.problems[0].what.starts_with("torn grey tail"));
    }

    fn with_crc(mut b: [u8; GREY_BYTES]) -> [u8; GREY_BYTES] {
        let crc = CRC32.checksum(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn a_version_1_entry_is_read_as_lap_0() {
        let mut b = sample(4).encode(GreyOp::Intent);
        b[1] = FORMAT_VERSION_APPENDED;
        b[58] = 0;
        let unknown = GreyRecord {
            rule: FareRule::Unknown,
            ..sample(4)
        };
        assert_eq!(
            GreyRecord::decode_in_lap(&with_crc(b)),
            Ok((GreyOp::Intent, unknown, 0))
        );
    }

    #[test]
    fn a_version_2_entry_keeps_its_lap_and_reads_with_an_unknown_rule() {
        let g = sample(5);
        let b = g.encode_in_lap(GreyOp::Intent, 7);
        assert_eq!((b[1], b[58]), (FORMAT_VERSION, FareRule::Transfer as u8));
        assert_eq!(GreyRecord::decode_in_lap(&b), Ok((GreyOp::Intent, g, 7)));
        let mut v2 = b;
        v2[1] = FORMAT_VERSION_LAP;
        v2[58] = 0;
        let unknown = GreyRecord {
            rule: FareRule::Unknown,
            ..g
        };
        assert_eq!(
            GreyRecord::decode_in_lap(&with_crc(v2)),
            Ok((GreyOp::Intent, unknown, 7))
        );
        let mut bad = b;
        bad[58] = 11;
        assert_eq!(
            GreyRecord::decode_in_lap(&with_crc(bad)),
            Err(GreyError::Field("fare rule"))
        );
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
