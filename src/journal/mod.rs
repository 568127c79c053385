//! The journal: append-only, checksummed records of every accepted tap, durable before the
//! passenger is told, kept until the depot acknowledges them.
//!
//! ## On disk
//!
//! A journal is a folder of segment files `seg-<first seq, 20 digits>.jnl`, each a run of
//! fixed-size [`Record`]s ([`RECORD_BYTES`]): slot `i` of a segment holds seq `first + i`, so
//! a record's place proves its sequence number. A segment is made [`SEGMENT_BYTES`] long with
//! zeros when it is created and written in place ([`files`] says why each sync is then as
//! cheap as the device allows); a slot of zeros holds no record. Segments appended by older
//! versions (as long as their records) are read the same and made full size when opened. `acked` holds the upload cursor (the highest
//! seq the depot acknowledged), 8 bytes big-endian and their CRC-32, replaced atomically. A
//! damaged cursor (an empty file from a flash card that lied about a flush, a bad CRC) is
//! never fatal: the journal falls back to the seq before its oldest segment (every segment
//! dropped was wholly acknowledged), so records are only ever sent again, which the depot
//! stores once; the repair is reported ([`repair`]).
//!
//! `journal.id` holds the journal's identity: magic `FVJI`, the epoch (8 bytes, 64 random
//! bits made when the journal is created; 0 for a journal made before identities), the first
//! seq of the epoch (8) and a CRC-32 (4). Every record carries the epoch too, so a damaged
//! identity file is rewritten from the newest record (reported); with no record held, a new
//! epoch starts at the next seq. The depot keys records by (terminal, epoch, seq).
//!
//! ## Guarantees
//!
//! - [`Journal::commit`] returns only after the appended records are written and durable
//!   (group commit: every record appended since the last commit shares one synchronous write
//!   in place). Nothing is reported to a passenger before that.
//! - On open every segment is read and every slot checked (CRC, magic, seq = slot). Invalid
//!   slots after the last valid record (but zeros) are a torn tail: reported and cut (zeroed,
//!   synced) before anything is appended. An invalid slot before a valid one is reported and skipped: it is
//!   never returned as a record.
//! - Sequence numbers continue after the highest seq ever seen (records and the cursor), so a
//!   restart never reuses one that could have reached the depot.
//! - When a write or sync fails, the records of that commit are dropped (never reported),
//!   what the write left after the durable records is zeroed, and later commits retry the
//!   storage.

pub mod acquirer;
pub mod chain;
pub mod files;
pub mod grey;
pub mod proofs;
pub mod record;
pub mod repair;

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub use chain::{Chain, JournalKey, RecordMac, SealKey, RECORD_MAC_BYTES};
pub use files::{FileLayer, OsFiles, SegmentFile, UnsyncedFiles, BLOCK_BYTES};
pub use grey::{GreyOp, GreyRecord, GREY_OPEN_MAX};
pub use record::{CardTx, QpTx, QrTx, Record, RecordError, RecordKind, SealRead, RECORD_BYTES};
pub use repair::SideFile;

/// Records in one segment file before a new one starts (6 MiB).
pub const SEGMENT_RECORDS_MAX: u64 = 65_536;
/// Bytes of a segment file: made this size with zeros when it is created, then written in
/// place ([`files`]).
pub const SEGMENT_BYTES: u64 = SEGMENT_RECORDS_MAX * RECORD_BYTES as u64;
/// Records that may wait for one group commit.
pub const GROUP_COMMIT_RECORDS_MAX: usize = 1_024;
/// The newest records kept from the scan at open, for the anti-passback memory (four taps a
/// second over a 60 s window).
pub const RECENT_RECORDS_MAX: usize = 256;
const CURSOR_FILE: &str = "acked";
/// Highest sequence number a journal ever uses (2^62): far beyond any validator's life, and it
/// keeps every seq arithmetic on segment names free of overflow.
pub const SEQ_MAX: u64 = 1 << 62;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal storage: {0}")]
    Io(#[from] io::Error),
    #[error(
        "journal group commit buffer is full ({GROUP_COMMIT_RECORDS_MAX} records): commit first"
    )]
    BufferFull,
}

/// Something wrong found in the files (never fatal: reported, and cut or skipped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub segment: PathBuf,
    pub offset: u64,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at byte {}: {}",
            self.segment.display(),
            self.offset,
            self.what
        )
    }
}

/// What a scan of the journal folder found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Valid records in seq order.
    pub records: Vec<Record>,
    pub problems: Vec<Problem>,
    /// Highest seq in any valid record.
    pub last_seq: u64,
    /// The newest segment: first seq, and the length of its valid prefix in bytes.
    pub newest: Option<(u64, u64)>,
    /// The end of the newest segment's last slot that is not zeros (at least its valid
    /// prefix): what lies between the two is a torn tail, cut (zeroed) on open.
    pub newest_written_end: u64,
    pub acked_seq: u64,
    /// Why the cursor file could not be read (then `acked_seq` is the fallback).
    pub cursor_damaged: Option<String>,
    /// The epoch written in the newest valid record.
    pub newest_epoch: Option<u64>,
    /// The newest valid record's seq and seal (its chain MAC, if it has one).
    pub newest_seal: Option<(u64, SealRead)>,
    /// What `journal.id` holds: (epoch, first seq of the epoch), or why it cannot be read.
    pub identity: IdentityRead,
}

/// What the journal's identity file (`journal.id`) gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum IdentityRead {
    /// (epoch, first seq of the epoch).
    Good(u64, u64),
    #[default]
    Missing,
    Damaged(String),
}

const IDENTITY_FILE: &str = "journal.id";
const IDENTITY_MAGIC: [u8; 4] = *b"FVJI";
const IDENTITY_BYTES: usize = 24;

fn read_identity(dir: &Path) -> IdentityRead {
    let b = match fs::read(dir.join(IDENTITY_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return IdentityRead::Missing,
        Err(e) => return IdentityRead::Damaged(format!("unreadable: {e}")),
    };
    let damaged = IdentityRead::Damaged;
    if b.len() != IDENTITY_BYTES || b[..4] != IDENTITY_MAGIC {
        return damaged(format!("{} bytes, not an identity", b.len()));
    }
    let crc = u32::from_be_bytes([b[20], b[21], b[22], b[23]]);
    if record::CRC32.checksum(&b[..20]) != crc {
        return damaged("checksum does not match".into());
    }
    let epoch = u64::from_be_bytes(std::array::from_fn(|i| b[4 + i]));
    let first = u64::from_be_bytes(std::array::from_fn(|i| b[12 + i]));
    if first == 0 || first > SEQ_MAX {
        return damaged(format!("first seq {first} out of range"));
    }
    IdentityRead::Good(epoch, first)
}

/// The identity in `dir/journal.id` (epoch, first seq of the epoch), if it reads and checks.
pub fn read_identity_file(dir: &Path) -> Option<(u64, u64)> {
    match read_identity(dir) {
        IdentityRead::Good(epoch, first) => Some((epoch, first)),
        _ => None,
    }
}

/// The seq before the oldest record held in `dir` (segments are dropped only once wholly
/// acknowledged), never below the epoch's start; `durable_seq` when no segment is held.
pub fn held_from_seq(
    dir: &Path,
    epoch_first_seq: u64,
    durable_seq: u64,
) -> Result<u64, JournalError> {
    let first_segment = list_segments(dir)?.first().copied();
    Ok(first_segment
        .map_or(durable_seq, |f| f - 1)
        .max(epoch_first_seq - 1))
}

fn write_identity(dir: &Path, epoch: u64, first_seq: u64) -> io::Result<()> {
    let mut b = [0u8; IDENTITY_BYTES];
    b[..4].copy_from_slice(&IDENTITY_MAGIC);
    b[4..12].copy_from_slice(&epoch.to_be_bytes());
    b[12..20].copy_from_slice(&first_seq.to_be_bytes());
    let crc = record::CRC32.checksum(&b[..20]);
    b[20..].copy_from_slice(&crc.to_be_bytes());
    let tmp = dir.join("journal.id.tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&b)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(IDENTITY_FILE))?;
    sync_dir(dir)
}

fn new_epoch() -> u64 {
    use rand::RngCore;
    loop {
        // 0 is the epoch of journals made before identities: never made anew.
        let e = rand::rngs::OsRng.next_u64();
        if e != 0 {
            return e;
        }
    }
}

/// The journal's identity on open: the file's, else recovered from the newest record (a
/// journal made before identities is epoch 0), else a new epoch from `next_seq`. Damage is
/// reported as a repair; the file is written when it was not good.
fn open_identity(dir: &Path, scan: &Scan, next_seq: u64) -> Result<(u64, u64), JournalError> {
    if let IdentityRead::Good(epoch, first) = scan.identity {
        return Ok((epoch, first));
    }
    let first_held = scan.records.first().map(|r| r.seq);
    let (epoch, first) = match (scan.newest_epoch, first_held) {
        (Some(e), Some(first)) => (e, if e == 0 { 1 } else { first }),
        _ => (new_epoch(), next_seq),
    };
    let fresh = scan.newest.is_none() && scan.acked_seq == 0;
    match &scan.identity {
        IdentityRead::Damaged(what) => repair::report(
            dir,
            SideFile::JournalId,
            what,
            &format!("epoch {epoch:016x} from seq {first} (from the records held, else new: the depot stores it as a new journal)"),
        ),
        IdentityRead::Missing if !fresh && epoch != 0 && scan.newest_epoch != Some(epoch) => {
            tracing::warn!(epoch = %format!("{epoch:016x}"), first_seq = first, "journal: no identity and no record to take it from: new epoch");
        }
        IdentityRead::Missing | IdentityRead::Good(..) => {}
    }
    write_identity(dir, epoch, first)?;
    Ok((epoch, first))
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("seg-{first_seq:020}.jnl"))
}

fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut firsts = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_prefix("seg-")
            .and_then(|s| s.strip_suffix(".jnl"))
        {
            if let Ok(first) = n.parse::<u64>() {
                if first > SEQ_MAX {
                    tracing::warn!(file = %name, "journal: segment name beyond SEQ_MAX ignored");
                } else if first > 0 {
                    firsts.push(first);
                }
            }
        }
    }
    firsts.sort_unstable();
    Ok(firsts)
}

/// What the cursor file said: the seq, or why it could not be read.
enum CursorRead {
    Seq(u64),
    Missing,
    Damaged(String),
}

fn read_cursor(dir: &Path) -> CursorRead {
    match fs::read(dir.join(CURSOR_FILE)) {
        Ok(b) if b.len() == 12 => {
            let seq = u64::from_be_bytes(std::array::from_fn(|i| b[i]));
            let crc = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
            if record::CRC32.checksum(&b[..8]) != crc {
                CursorRead::Damaged("checksum does not match".into())
            } else if seq > SEQ_MAX {
                CursorRead::Damaged(format!("seq {seq} beyond SEQ_MAX"))
            } else {
                CursorRead::Seq(seq)
            }
        }
        Ok(b) => CursorRead::Damaged(format!("{} bytes, 12 expected", b.len())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => CursorRead::Missing,
        Err(e) => CursorRead::Damaged(format!("unreadable: {e}")),
    }
}

fn write_cursor(dir: &Path, seq: u64) -> io::Result<()> {
    let mut b = [0u8; 12];
    b[..8].copy_from_slice(&seq.to_be_bytes());
    let crc = record::CRC32.checksum(&b[..8]);
    b[8..].copy_from_slice(&crc.to_be_bytes());
    let tmp = dir.join("acked.tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&b)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(CURSOR_FILE))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Read every segment and check every slot (read-only).
pub fn scan(dir: &Path) -> Result<Scan, JournalError> {
    let mut out = Scan {
        identity: read_identity(dir),
        ..Scan::default()
    };
    let firsts = list_segments(dir)?;
    match read_cursor(dir) {
        CursorRead::Seq(seq) => out.acked_seq = seq,
        CursorRead::Missing => {}
        CursorRead::Damaged(what) => {
            // Segments are dropped only once wholly acknowledged, so the seq before the
            // oldest one held is at or below the lost cursor: re-sending from there sends
            // again only what the depot stores once.
            let fallback = firsts.first().map_or(0, |f| f - 1);
            out.acked_seq = fallback;
            out.cursor_damaged = Some(what.clone());
            out.problems.push(Problem {
                segment: dir.join(CURSOR_FILE),
                offset: 0,
                what: format!(
                    "upload cursor damaged ({what}): records re-sent from seq {}",
                    fallback + 1
                ),
            });
        }
    }
    for (i, &first) in firsts.iter().enumerate() {
        let path = segment_path(dir, first);
        let bytes = fs::read(&path)?;
        let mut valid_len = 0u64;
        let mut invalid: Vec<Problem> = Vec::new();
        // Slots past the last one written are zeros (segments are made full size with
        // zeros): free room, not a tail.
        let written_end = written_end(&bytes, RECORD_BYTES);
        for (slot, chunk) in bytes[..written_end].chunks(RECORD_BYTES).enumerate() {
            let offset = (slot * RECORD_BYTES) as u64;
            let expect_seq = first + slot as u64;
            let what = match <&[u8; RECORD_BYTES]>::try_from(chunk) {
                Err(_) => format!("torn record: {} of {RECORD_BYTES} bytes", chunk.len()),
                Ok(b) => match Record::decode(b) {
                    Ok(r) if r.seq == expect_seq => {
                        // Slots before this valid one that failed are corrupt records, not a tail.
                        out.problems.append(&mut invalid);
                        out.records.push(r);
                        out.newest_epoch = Some(Record::epoch_of(b));
                        out.newest_seal = Some((r.seq, Record::seal_of(b)));
                        out.last_seq = out.last_seq.max(r.seq);
                        valid_len = offset + RECORD_BYTES as u64;
                        continue;
                    }
                    Ok(r) => format!("record seq {} in the slot of seq {expect_seq}", r.seq),
                    Err(e) => format!("corrupt record (seq {expect_seq}): {e}"),
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
                    "torn tail of {} bytes ({})",
                    written_end as u64 - valid_len,
                    first_bad.what
                ),
            });
        }
        if i + 1 == firsts.len() {
            out.newest = Some((first, valid_len));
            out.newest_written_end = written_end as u64;
            // An empty newest segment still fixes where numbering resumes.
            out.last_seq = out.last_seq.max(first - 1);
        }
    }
    Ok(out)
}

/// The end of the last `slot`-byte slot of `bytes` that is not all zeros (0 when all are):
/// what lies after it was never written. A partial slot at the end counts as a slot.
pub(crate) fn written_end(bytes: &[u8], slot: usize) -> usize {
    // Whole blocks of zeros skipped first (compared with `memcmp`): a segment is mostly free
    // room.
    const ZEROS: [u8; files::BLOCK_BYTES] = [0; files::BLOCK_BYTES];
    let mut end = bytes.len();
    while end >= ZEROS.len() && bytes[end - ZEROS.len()..end] == ZEROS[..] {
        end -= ZEROS.len();
    }
    bytes[..end]
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| ((i / slot + 1) * slot).min(bytes.len()))
}

/// The writer side of a journal.
pub struct Journal {
    dir: PathBuf,
    layer: Box<dyn FileLayer>,
    file: Option<Box<dyn SegmentFile>>,
    segment_first_seq: u64,
    /// Records durable in the active segment (its valid length is this × RECORD_BYTES).
    segment_records: u64,
    next_seq: u64,
    durable_seq: u64,
    acked_seq: u64,
    buf: Vec<u8>,
    buffered: usize,
    /// The tail must be cut (zeroed) from the durable length to `written_end` before the
    /// next append.
    needs_cut: bool,
    /// The end of the bytes of the active segment that may not be zeros: the durable
    /// records, and what a failed write or a torn tail left after them.
    written_end: u64,
    /// Intents to debit not yet proven (grey records, `grey.dat`).
    grey: grey::GreyLog,
    /// The newest records found at open, oldest first (at most [`RECENT_RECORDS_MAX`]).
    recent: Vec<Record>,
    /// The journal's identity: made when it was created, written in every record.
    epoch: u64,
    /// The first seq this epoch holds (1 unless the identity was lost and remade).
    epoch_first_seq: u64,
    /// The chain of the records appended: its key and the MAC of the last one buffered.
    chain: Chain,
    /// The MAC of the last durable record (the chain goes back to it when a commit fails).
    durable_mac: RecordMac,
    /// The ride codes behind pay-after-ride records, as proof ([`proofs`]).
    proofs: proofs::ProofLog,
    /// The acquirer's data of QuickPass records, durable with them ([`acquirer`]).
    acquirer: acquirer::AcquirerLog,
}

/// A record read back from the journal with the bytes it is stored as (its MAC among them):
/// what the uplink sends, byte for byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub record: Record,
    pub raw: [u8; RECORD_BYTES],
}

impl Journal {
    /// Open (or create) the journal in `dir` on the operating system's files, its records
    /// chained with the public test key ([`JournalKey::test`]: replay, the demo, tests). A
    /// bus opens with its own key: [`Journal::open_keyed`].
    pub fn open(dir: &Path) -> Result<(Journal, Vec<Problem>), JournalError> {
        Self::open_with(dir, Box::new(OsFiles))
    }

    /// [`Journal::open`] on a given file layer (test key).
    pub fn open_with(
        dir: &Path,
        layer: Box<dyn FileLayer>,
    ) -> Result<(Journal, Vec<Problem>), JournalError> {
        Self::open_keyed(dir, layer, JournalKey::test())
    }

    /// Open on a given file layer, the records appended chained with `key`: scan, verify,
    /// and cut a torn tail; read the grey records and settle those the records already hold.
    /// The chain goes on from the record before the next seq when the disk holds it, else it
    /// starts again (see [`chain`]).
    pub fn open_keyed(
        dir: &Path,
        layer: Box<dyn FileLayer>,
        key: JournalKey,
    ) -> Result<(Journal, Vec<Problem>), JournalError> {
        fs::create_dir_all(dir)?;
        let mut scan = scan(dir)?;
        let (grey, grey_problems) = grey::GreyLog::open(dir, &*layer, &scan.records);
        // A torn tail is what a power cut leaves by design; anything else is damage.
        for p in grey_problems
            .iter()
            .filter(|p| !p.what.starts_with("torn grey tail"))
        {
            repair::report(
                dir,
                SideFile::PendingDebits,
                &p.what,
                "the readable grey records kept, the damaged entries dropped",
            );
        }
        scan.problems.extend(grey_problems);
        for p in &scan.problems {
            tracing::warn!(problem = %p, "journal: cut or skipped on open");
        }
        // Before the records are cut down to the recent ones: the oldest held counts.
        let (epoch, epoch_first_seq) =
            open_identity(dir, &scan, scan.last_seq.max(scan.acked_seq) + 1)?;
        let keep_from = scan.records.len().saturating_sub(RECENT_RECORDS_MAX);
        let recent = scan.records.split_off(keep_from);
        if let Some(what) = &scan.cursor_damaged {
            repair::report(
                dir,
                SideFile::Cursor,
                what,
                &format!(
                    "upload cursor set back to seq {}; records after it re-sent",
                    scan.acked_seq
                ),
            );
            write_cursor(dir, scan.acked_seq)?;
        }
        let last = scan.last_seq.max(scan.acked_seq);
        let (first, valid_len) = scan.newest.unwrap_or((last + 1, 0));
        let prev = match scan.newest_seal {
            Some((seq, SealRead::Sealed(_, mac)))
                if seq == last && scan.newest_epoch == Some(epoch) =>
            {
                mac
            }
            _ => key.chain_start(epoch),
        };
        let proofs = proofs::ProofLog::open(dir, scan.acked_seq).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "journal: ride-code proof file unusable: scans recorded without proof");
            proofs::ProofLog::none(dir)
        });
        let acquirer = acquirer::AcquirerLog::open(dir, &*layer, epoch, scan.acked_seq, last)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "journal: QuickPass acquirer file unusable: QuickPass taps refused");
                acquirer::AcquirerLog::none(dir, epoch)
            });
        let mut j = Journal {
            proofs,
            acquirer,
            dir: dir.to_path_buf(),
            layer,
            file: None,
            segment_first_seq: first,
            segment_records: valid_len / RECORD_BYTES as u64,
            next_seq: last + 1,
            durable_seq: last,
            acked_seq: scan.acked_seq,
            buf: Vec::with_capacity(GROUP_COMMIT_RECORDS_MAX * RECORD_BYTES),
            buffered: 0,
            needs_cut: true,
            written_end: scan.newest_written_end,
            grey,
            recent,
            epoch,
            epoch_first_seq,
            chain: Chain { key, prev },
            durable_mac: prev,
        };
        if first + j.segment_records != j.next_seq {
            // The cursor is ahead of the newest segment (all acknowledged and pruned): start anew.
            j.segment_first_seq = j.next_seq;
            j.segment_records = 0;
            j.written_end = 0;
        }
        j.ensure_file()?;
        Ok((j, scan.problems))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keep the ride code (its 201 bytes) behind the durable record `seq` as proof
    /// ([`proofs`]); never fails the scan.
    pub fn keep_proof(&mut self, seq: u64, code: &[u8; crate::ride_code::format::CODE_BYTES]) {
        self.proofs.append(seq, code);
    }

    /// Write the acquirer's data of the QuickPass record appended next ([`acquirer`]); it
    /// becomes durable with that record's commit. On error the record must not be appended.
    pub fn keep_acquirer_data(
        &mut self,
        data: &crate::card::acquirer::AcquirerData,
    ) -> Result<(), acquirer::AcquirerLogError> {
        self.acquirer.append(self.next_seq, data)
    }

    /// The seq the next appended record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Highest seq known durable.
    pub fn durable_seq(&self) -> u64 {
        self.durable_seq
    }

    pub fn acked_seq(&self) -> u64 {
        self.acked_seq
    }

    /// The journal's identity (epoch), made when it was created (0: made before identities).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The first seq of this epoch.
    pub fn epoch_first_seq(&self) -> u64 {
        self.epoch_first_seq
    }

    /// The seq before the oldest record still held (records at or below it were dropped
    /// once acknowledged, or never existed in this epoch).
    pub fn held_from_seq(&self) -> Result<u64, JournalError> {
        let first_segment = list_segments(&self.dir)?.first().copied();
        Ok(first_segment
            .map_or(self.next_seq, |f| f)
            .max(self.epoch_first_seq)
            - 1)
    }

    /// The newest durable records found when the journal was opened, oldest first (at most
    /// [`RECENT_RECORDS_MAX`]): what a restarted validator remembers of its last taps.
    pub fn recent_records(&self) -> &[Record] {
        &self.recent
    }

    /// Grey records still open, oldest first.
    pub fn grey_open(&self) -> &[GreyRecord] {
        self.grey.open_intents()
    }

    /// The card's open grey record, if any.
    pub fn grey_for(&self, card_no: crate::types::CardNo) -> Option<GreyRecord> {
        self.grey.intent_for(card_no)
    }

    /// Make the intent to debit durable (written and synced) before DEBIT is sent. On error
    /// the debit must not be sent.
    pub fn grey_intent(&mut self, g: &GreyRecord) -> Result<(), JournalError> {
        self.grey
            .intent(&*self.layer, g)
            .map_err(JournalError::from)
    }

    /// Write the intent to debit without a sync (taps on several readers at once): their
    /// intents share one [`Journal::grey_sync`], and no debit may be sent until
    /// [`Journal::grey_durable`] holds.
    pub fn grey_intent_unsynced(&mut self, g: &GreyRecord) -> Result<(), JournalError> {
        self.grey
            .intent_unsynced(&*self.layer, g)
            .map_err(JournalError::from)
    }

    /// Make every grey entry written so far durable (one synchronous write of `grey.dat`).
    pub fn grey_sync(&mut self) -> Result<(), JournalError> {
        self.grey.sync(&*self.layer).map_err(JournalError::from)
    }

    /// Whether every intent written is durable, so that its debit may be sent.
    pub fn grey_durable(&self) -> bool {
        self.grey.is_durable()
    }

    /// The card's debit is durable in the journal: settle its grey record.
    pub fn grey_settle(&mut self, card_no: crate::types::CardNo) {
        self.grey.close(&*self.layer, card_no, GreyOp::Settled);
    }

    /// The card was not debited: void its grey record.
    pub fn grey_void(&mut self, card_no: crate::types::CardNo) {
        self.grey.close(&*self.layer, card_no, GreyOp::Voided);
    }

    /// Whether the last storage operation failed (taps are refused until it works again).
    pub fn is_degraded(&self) -> bool {
        self.file.is_none()
    }

    /// Make sure the active segment is open and cut to its durable length: after a storage
    /// fault this is how the journal comes back by itself.
    pub fn ensure_ready(&mut self) -> Result<(), JournalError> {
        self.ensure_file()
    }

    fn ensure_file(&mut self) -> Result<(), JournalError> {
        if self.file.is_none() {
            let path = segment_path(&self.dir, self.segment_first_seq);
            self.file = Some(self.layer.open_segment(&path, SEGMENT_BYTES)?);
            self.needs_cut = true;
        }
        if self.needs_cut {
            if let Err(e) = self.cut_tail() {
                self.file = None;
                self.needs_cut = true;
                return Err(e.into());
            }
            self.needs_cut = false;
        }
        Ok(())
    }

    /// Zero what follows the durable records in the active segment (a torn tail, a failed
    /// write), synced, so that no later open takes it for records.
    fn cut_tail(&mut self) -> io::Result<()> {
        let durable_len = self.segment_records * RECORD_BYTES as u64;
        let Some(f) = self.file.as_mut() else {
            return Ok(());
        };
        files::zero_range(f.as_mut(), durable_len, self.written_end)?;
        self.written_end = durable_len;
        Ok(())
    }

    /// Buffer a record; it gets the next seq (returned). It is durable only after [`commit`].
    ///
    /// [`commit`]: Journal::commit
    pub fn append(&mut self, rec: &mut Record) -> Result<u64, JournalError> {
        if self.buffered >= GROUP_COMMIT_RECORDS_MAX {
            return Err(JournalError::BufferFull);
        }
        rec.seq = self.next_seq;
        self.buf
            .extend_from_slice(&rec.encode_chained(self.epoch, &mut self.chain));
        self.buffered += 1;
        self.next_seq += 1;
        Ok(rec.seq)
    }

    /// Records appended and not yet durable.
    pub fn pending(&self) -> usize {
        self.buffered
    }

    /// Write and sync every buffered record. On error they are dropped (their seqs are
    /// reused, since none was ever durable or reported) and the storage is retried next time.
    pub fn commit(&mut self) -> Result<u64, JournalError> {
        if self.buffered == 0 {
            return Ok(self.durable_seq);
        }
        // The acquirer's data of QuickPass records is durable before the records are.
        let result = self
            .acquirer
            .sync()
            .map_err(JournalError::from)
            .and_then(|()| self.write_buffered());
        if result.is_err() {
            self.next_seq = self.durable_seq + 1;
            self.chain.prev = self.durable_mac;
            self.file = None;
        } else {
            self.durable_mac = self.chain.prev;
        }
        self.buf.clear();
        self.buffered = 0;
        result.map(|()| self.durable_seq)
    }

    fn write_buffered(&mut self) -> Result<(), JournalError> {
        self.ensure_file()?;
        let mut done = 0usize;
        while done < self.buffered {
            if self.segment_records == SEGMENT_RECORDS_MAX {
                self.segment_first_seq += SEGMENT_RECORDS_MAX;
                self.segment_records = 0;
                self.written_end = 0;
                self.file = None;
                self.ensure_file()?;
            }
            let room = (SEGMENT_RECORDS_MAX - self.segment_records) as usize;
            let n = room.min(self.buffered - done);
            let bytes = &self.buf[done * RECORD_BYTES..(done + n) * RECORD_BYTES];
            let at = self.segment_records * RECORD_BYTES as u64;
            self.written_end = self.written_end.max(at + bytes.len() as u64);
            let file = self
                .file
                .as_mut()
                .ok_or_else(|| io::Error::other("segment not open"))?;
            if let Err(e) = file.write_at(at, bytes).and_then(|()| file.sync()) {
                self.needs_cut = true;
                return Err(e.into());
            }
            self.segment_records += n as u64;
            self.written_end = self
                .written_end
                .max(self.segment_records * RECORD_BYTES as u64);
            self.durable_seq += n as u64;
            done += n;
        }
        Ok(())
    }

    /// Which key the records appended are chained with.
    pub fn seal_key(&self) -> SealKey {
        self.chain.key.kind()
    }

    /// Durable records with seq above `after`, at most `max` of them (for the uplink).
    pub fn read_after(&self, after: u64, max: usize) -> Result<Vec<Held>, JournalError> {
        read_after(&self.dir, after, max)
    }

    /// Move the upload cursor (only ever forward) and drop segments wholly acknowledged.
    pub fn set_acked(&mut self, seq: u64) -> Result<(), JournalError> {
        let seq = seq.min(self.durable_seq);
        if seq <= self.acked_seq {
            return Ok(());
        }
        write_cursor(&self.dir, seq)?;
        self.acked_seq = seq;
        if let Err(e) = self.acquirer.prune(&*self.layer, seq) {
            tracing::warn!(error = %e, "journal: QuickPass acquirer entries not pruned: kept until the next upload");
        }
        for first in list_segments(&self.dir)? {
            let last = first + SEGMENT_RECORDS_MAX - 1;
            if last <= seq && first != self.segment_first_seq {
                fs::remove_file(segment_path(&self.dir, first))?;
            }
        }
        Ok(())
    }
}

/// Durable records with seq above `after`, at most `max`, read from the files.
pub fn read_after(dir: &Path, after: u64, max: usize) -> Result<Vec<Held>, JournalError> {
    let mut out = Vec::new();
    let firsts = list_segments(dir)?;
    for (i, &first) in firsts.iter().enumerate() {
        let next_first = firsts.get(i + 1).copied().unwrap_or(u64::MAX);
        if next_first <= after + 1 {
            continue;
        }
        let bytes = fs::read(segment_path(dir, first))?;
        let skip = after.saturating_sub(first - 1) as usize;
        let written = &bytes[..written_end(&bytes, RECORD_BYTES)];
        for (slot, chunk) in written.chunks_exact(RECORD_BYTES).enumerate().skip(skip) {
            if out.len() >= max {
                return Ok(out);
            }
            let b: &[u8; RECORD_BYTES] = chunk
                .try_into()
                .map_err(|_| io::Error::other("slot size"))?;
            if let Ok(record) = Record::decode(b) {
                if record.seq == first + slot as u64 && record.seq > after {
                    out.push(Held { record, raw: *b });
                }
            }
        }
    }
    Ok(out)
}
