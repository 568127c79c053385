//! The station's SQLite store: terminals and their secrets, every uploaded record keyed by
//! its journal (terminal, epoch) and seq, declared losses, the blacklist change log, and the
//! downlink files.
//!
//! Each journal a terminal uploads from gets a small number (`journals.no`, 1, 2, ...) the
//! first time it is seen, and the `records` table is keyed by (journal number, seq): the key
//! every record carries in the table's B-tree stays a few bytes wide instead of the
//! terminal's id and an 8-byte random epoch. Databases keyed the older ways are moved on
//! open.
//!
//! The blacklist is one row per (kind, id, reason) in `blacklist_reasons`: a card reported
//! lost and later reissued has two rows, a remove deletes only its reason's row, and the id is
//! listed while any row remains. A database from before reason sets (a `blacklist` table of
//! one reason an id) is moved into it when opened.
//!
//! One batch is one transaction: its records, the losses it declares and the terminal's new
//! contiguous seq commit together or not at all, so an acknowledgement always describes what
//! is on disk. Records are inserted with `INSERT OR IGNORE`: a batch sent twice (after a
//! disconnect, or a station restart before the ack reached the bus) stores nothing twice.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension};

use super::checks::{check_record, FareCeilings};
use super::checks::{RIDE_CODE_AGE_AT_SCAN_S_MAX, RIDE_CODE_AHEAD_OF_SCAN_S_MAX};
use super::integrity::{self, BatchState, ChainKeys, Finding, Link};
use crate::blacklist::file::{delta_payload, Delta};
use crate::blacklist::{Blacklist, Change, ChangeOp};
use crate::fare::{FareRule, FareTable};
use crate::journal::{QrTx, Record, RecordKind, RECORD_BYTES};
use crate::ride_code::format::{cert_digest, RideCode, CERT_BYTES, CODE_BYTES};
use crate::ride_code::keys::ChannelKeys;
use crate::ride_code::verify::{RideCodeConfig, Verifier};
use crate::signed::{self, FileKind};
use crate::signing::{decode_bundle, BundleError, EntrySummary, RequestEntry};
use crate::types::{ListId, ListReason, ReasonSet};
use crate::upload::auth::{station_key, Secret, SECRET_BYTES};
use crate::upload::downlink::DELTA_CHANGES_SENT_MAX;
use crate::upload::frame::{valid_terminal_id, Ack};

/// How long a writer waits for another connection's lock before failing (ms).
pub const BUSY_TIMEOUT_MS: u64 = 5_000;

/// WAL pages (4 KiB) before SQLite checkpoints into the database file.
pub const WAL_AUTOCHECKPOINT_PAGES: i64 = 16_384;
/// SQLite page cache, KiB.
pub const CACHE_KIB: i64 = 32_768;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS terminals(
    id TEXT PRIMARY KEY,
    secret BLOB NOT NULL,
    contiguous_seq INTEGER NOT NULL DEFAULT 0,
    added_unix_s INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS journals(
    terminal TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    contiguous_seq INTEGER NOT NULL,
    first_seen_unix_s INTEGER NOT NULL,
    no INTEGER NOT NULL,
    PRIMARY KEY(terminal, epoch));
CREATE UNIQUE INDEX IF NOT EXISTS journals_no ON journals(no);
CREATE TABLE IF NOT EXISTS conflicts(
    terminal TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    raw BLOB NOT NULL,
    at_unix_s INTEGER NOT NULL,
    PRIMARY KEY(terminal, epoch, seq, raw)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS refused(
    terminal TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    raw BLOB NOT NULL,
    reason TEXT NOT NULL,
    at_unix_s INTEGER NOT NULL,
    PRIMARY KEY(terminal, epoch, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS findings(
    terminal TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    kind TEXT NOT NULL,
    from_seq INTEGER NOT NULL,
    to_seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    detail TEXT NOT NULL,
    at_unix_s INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS keyed_terminals(terminal TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS psam_counters(psam INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS psam_gaps(
    psam INTEGER NOT NULL,
    from_seq INTEGER NOT NULL,
    to_seq INTEGER NOT NULL,
    PRIMARY KEY(psam, from_seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fare_history(
    version INTEGER PRIMARY KEY,
    body BLOB NOT NULL,
    published_unix_s INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS signed_files(
    kind INTEGER NOT NULL,
    version INTEGER NOT NULL,
    base_version INTEGER NOT NULL,
    expires_unix_s INTEGER NOT NULL,
    file BLOB NOT NULL,
    PRIMARY KEY(kind, version, base_version));
CREATE TABLE IF NOT EXISTS ride_code_certs(
    digest BLOB PRIMARY KEY,
    cert BLOB NOT NULL,
    verified INTEGER,
    listed INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cert_set_changes(
    version INTEGER NOT NULL,
    digest BLOB NOT NULL,
    added INTEGER NOT NULL,
    PRIMARY KEY(version, digest)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ride_code_proofs(
    terminal TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    code BLOB NOT NULL,
    PRIMARY KEY(terminal, epoch, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quickpass_acquirer(
    terminal TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY(terminal, epoch, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS acquirer_declines(
    terminal TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    pan_token TEXT NOT NULL,
    paid INTEGER NOT NULL,
    PRIMARY KEY(terminal, epoch, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS acquirer_arrears(
    pan_token TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records(
    journal INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    at_unix_s INTEGER NOT NULL,
    fare_fen INTEGER NOT NULL,
    channel INTEGER,
    account INTEGER,
    qr_counter INTEGER,
    raw BLOB NOT NULL,
    rule INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY(journal, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lost(
    terminal TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    from_seq INTEGER NOT NULL,
    to_seq INTEGER NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY(terminal, epoch, from_seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blacklist_changes(
    version INTEGER PRIMARY KEY,
    op TEXT NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_unix_s INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS blacklist_reasons(
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY(kind, id, reason)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS downlink(
    kind TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    body BLOB NOT NULL);
";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("depot database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("terminal id must be 1..=32 characters of A-Z a-z 0-9 _ -")]
    BadTerminalId,
    #[error("terminal {0} is already provisioned")]
    TerminalExists(String),
    #[error("{id} is not on the blacklist for reason {reason}")]
    NotListed { id: String, reason: &'static str },
    #[error("depot database: corrupt {0}")]
    Corrupt(&'static str),
}

/// Deltas in one signing request: from the newest blacklist versions signed before.
pub const SIGNING_DELTAS_MAX: usize = 16;

/// Why a signed bundle was not imported (nothing of it is stored).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no operator public key pinned at the station: `depot operator-key --pub KEY` first")]
    NoPublicKey,
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("signed file {index}: {source}")]
    File {
        index: usize,
        source: signed::SignedError,
    },
    #[error("signed file {0} has no dates (signed container format before 3)")]
    Undated(usize),
}

impl From<rusqlite::Error> for ImportError {
    fn from(e: rusqlite::Error) -> Self {
        ImportError::Store(e.into())
    }
}

/// A record checked by the receiver, with the bytes it arrived as.
#[derive(Clone, Copy, Debug)]
pub struct Received {
    pub record: Record,
    pub raw: [u8; RECORD_BYTES],
}

/// What storing a batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    pub ack: Ack,
    /// Seq ranges this batch declared lost by the validator's journal.
    pub declared_lost: Vec<(u64, u64)>,
    /// What the chain and PSAM checks found (stored and logged).
    pub findings: Vec<Finding>,
}

/// Claims to ride codes in conflict: (terminal, epoch as stored, seq).
pub type Dups = HashSet<(String, i64, u64)>;

/// Per-terminal clearing view.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TerminalReport {
    pub records: u64,
    /// Highest seq stored of the terminal's newest journal.
    pub max_seq: u64,
    /// Seq ranges `[from, to]` with no record stored, of every journal in turn (each
    /// journal's own are in `journals`).
    pub gaps: Vec<[u64; 2]>,
    /// The part of `gaps` the validator declared lost (corrupt journal slots, or records
    /// acknowledged earlier that the depot no longer holds).
    pub declared_lost: Vec<[u64; 2]>,
    /// Fares charged: every record stored but the claims of a ride code in conflict.
    pub fare_fen: u64,
    /// `fare_fen` by the fare-table rule that priced each record (the record's own, from
    /// format version 5; `unknown` for records of older versions and rows stored before
    /// the store kept it): its values add up to `fare_fen`.
    pub fare_fen_by_rule: BTreeMap<FareRule, u64>,
    /// Fares of this terminal's claims to ride codes claimed more than once
    /// ([`Report::qr_conflicts`]): held for clearing, in no one's `fare_fen`.
    pub fare_fen_in_conflict: u64,
    /// Records refused because a different one is stored at their (epoch, seq).
    pub conflicts: u64,
    /// Records refused for a field out of range ([`super::checks`]), every journal.
    pub refused: u64,
    /// Every journal (epoch) the terminal uploaded from, first seen first: more than one
    /// means its journal was replaced (new storage, a re-flash).
    pub journals: Vec<JournalReport>,
}

/// One journal (epoch) of a terminal.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct JournalReport {
    /// The epoch, 16 hex digits (0: a journal made before identities).
    pub epoch: String,
    pub first_seq: u64,
    pub records: u64,
    pub max_seq: u64,
    pub gaps: Vec<[u64; 2]>,
    /// Declared losses: corrupt slots on the bus.
    pub declared_lost: Vec<[u64; 2]>,
    /// Declared losses: records acknowledged earlier, then lost at the depot.
    pub gone: Vec<[u64; 2]>,
    pub conflicts: u64,
    /// Records refused for a field out of range: how many.
    pub refused: u64,
    /// The first [`REFUSED_LISTED_MAX`] of them, by seq.
    pub refused_records: Vec<RefusedRecord>,
}

/// Refused records listed per journal in a report (all are kept in the database).
pub const REFUSED_LISTED_MAX: usize = 64;

/// A record refused at ingest for a field out of range, as the bus sent it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RefusedRecord {
    pub seq: u64,
    /// Which check failed ([`super::checks`]).
    pub reason: String,
    /// What the record claims.
    pub at_unix_s: i64,
    pub fare_fen: u64,
    /// The station's clock when it arrived.
    pub received_unix_s: i64,
}

/// One ride code (channel, account, counter) claimed by more than one record: the same code
/// accepted on two buses, or a forged claim (an earlier time, say). No claim is charged
/// until clearing decides; every claim is listed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct QrConflict {
    pub channel: u16,
    pub account: u64,
    pub counter: u32,
    /// Earliest claimed time first.
    pub claims: Vec<QrClaim>,
}

/// One record's claim to a ride code.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct QrClaim {
    pub terminal: String,
    /// The journal's epoch, 16 hex digits.
    pub epoch: String,
    pub seq: u64,
    pub at_unix_s: i64,
    pub fare_fen: u64,
    /// The rider's signed code the bus kept for this record (`ride_code_proofs`): `verified`
    /// (it says what the record says, and its certificate and signature verify with the
    /// ride-code keys the station publishes, at the record's time), `bad_signature` (they do
    /// not), `matches` (it says what the record says; no keys published to check it with),
    /// `differs`, or `none`.
    pub proof: &'static str,
    /// The code's 201 bytes as its text (`ESSC1.` and base64url), for clearing to verify
    /// against the channel's keys; absent without a proof.
    pub code: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub terminals: BTreeMap<String, TerminalReport>,
    /// Fares charged, every terminal, by the rule that priced them: the sum of the
    /// terminals' `fare_fen_by_rule`.
    pub fare_fen_by_rule: BTreeMap<FareRule, u64>,
    /// Ride codes claimed by more than one record, each with every claim: flagged for
    /// clearing, charged to no one here.
    pub qr_conflicts: Vec<QrConflict>,
    /// Security findings (altered records, cuts, PSAM numbers that skip or repeat...),
    /// newest first, at most [`REPORT_FINDINGS_MAX`].
    pub findings: Vec<Finding>,
}

/// Findings a report carries (`depot findings` lists more).
pub const REPORT_FINDINGS_MAX: usize = 1_000;

mod verified_certs;
pub use verified_certs::CertSetUpdate;

/// The station's database.
pub struct Store {
    pub(super) conn: Connection,
    /// The fare ceilings of the tables published, with the fare-table version they were
    /// computed at (recomputed when another process publishes a table).
    ceilings: Option<(i64, FareCeilings)>,
}

/// A new database file is made readable by the station's user only (SQLite gives its WAL and
/// shared-memory files the database file's mode): it holds the terminals' keys.
fn create_owner_only(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Fails harmlessly when the file exists; SQLite then reports any real problem.
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
    }
}

/// An existing database and its WAL files narrowed to the station's user (made before this
/// rule, or copied with another mode).
fn owner_only(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
        }
    }
}

pub(crate) fn now_unix_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        create_owner_only(path);
        let mut conn = Connection::open(path)?;
        // Every transaction takes the write lock when it begins (BEGIN IMMEDIATE): most read
        // and then write (a counter command, the cert set's update, a batch), and a deferred
        // one that read while the station's session committed cannot upgrade; SQLite answers
        // SQLITE_BUSY at once, without waiting `BUSY_TIMEOUT_MS`. Taken up front, the lock
        // is waited for like any other.
        conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
        // synchronous=FULL, not NORMAL: in WAL mode NORMAL syncs the WAL only at checkpoints,
        // so a transaction survives a crash of the station process but not a power cut. An
        // acknowledged batch lets the validator delete its records, so the commit behind an
        // ack must be on the disk itself: FULL syncs the WAL on every commit. The cost is one
        // fsync per batch, which the batch size pays for (see `BATCH_RECORDS_MAX`).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Checkpoint every 64 MiB of WAL rather than 4 MiB: fewer database-file syncs.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
        conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
        migrate_to_epochs(&conn)?;
        migrate_to_journal_numbers(&conn)?;
        migrate_to_fare_rules(&conn)?;
        let declines_before_arrears =
            table_exists(&conn, "acquirer_declines")? && !table_exists(&conn, "acquirer_arrears")?;
        conn.execute_batch(SCHEMA)?;
        if declines_before_arrears {
            mark_declines_arrears(&conn)?;
        }
        move_one_reason_table(&conn)?;
        owner_only(path);
        Ok(Store {
            conn,
            ceilings: None,
        })
    }

    /// Open an existing database for reading only (the manager's page, reports): nothing is
    /// created, no schema is written and no key is made. A missing file is an error.
    pub fn open_read(path: &Path) -> Result<Store, StoreError> {
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
        Ok(Store {
            conn,
            ceilings: None,
        })
    }

    /// The operator's Ed25519 key that signs downlink files, if one was imported
    /// (`depot operator-key --import`). None is ever made here: without one the station
    /// signs nothing and sends no downlink file (see docs/depot.md, key custody).
    pub fn operator_key(&self) -> Result<Option<SigningKey>, StoreError> {
        let seed: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key='operator_key'", [], |r| {
                r.get(0)
            })
            .optional()?;
        seed.map(|s| {
            <[u8; 32]>::try_from(s.as_slice())
                .map(|s| SigningKey::from_bytes(&s))
                .map_err(|_| StoreError::Corrupt("operator key"))
        })
        .transpose()
    }

    /// The operator public key the station's files are checked against: the one pinned
    /// ([`Store::set_operator_pub`], offline signing), else the imported signing key's.
    pub fn operator_pub(&self) -> Result<Option<VerifyingKey>, StoreError> {
        let pk: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key='operator_pub'", [], |r| {
                r.get(0)
            })
            .optional()?;
        match pk {
            Some(pk) => <[u8; 32]>::try_from(pk.as_slice())
                .ok()
                .and_then(|b| VerifyingKey::from_bytes(&b).ok())
                .map(Some)
                .ok_or(StoreError::Corrupt("operator public key")),
            None => Ok(self.operator_key()?.map(|k| k.verifying_key())),
        }
    }

    /// Pin the operator's public key (offline signing: the station never holds the secret
    /// key). Replacing a pinned key other than by this call is not possible.
    pub fn set_operator_pub(&self, key: &VerifyingKey) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES('operator_pub', ?1)",
            params![&key.as_bytes()[..]],
        )?;
        Ok(())
    }

    /// What the station needs the operator to sign ([`crate::signing`]): the blacklist
    /// snapshot at its version and deltas to it from each blacklist version signed before
    /// (the only versions a bus can hold; the newest [`SIGNING_DELTAS_MAX`], each within
    /// [`DELTA_CHANGES_SENT_MAX`] changes), and the fare table and key file at their
    /// versions; whatever is signed already is left out.
    pub fn signing_request(&self) -> Result<Vec<RequestEntry>, StoreError> {
        let mut out = Vec::new();
        let current = self.blacklist_version()?;
        if current > 0 && !self.is_signed(FileKind::BlacklistSnapshot, current, 0)? {
            out.push(RequestEntry {
                kind: FileKind::BlacklistSnapshot,
                version: current,
                base_version: 0,
                payload: self.blacklist()?.snapshot_payload().into_owned(),
            });
        }
        let held = self.signed_versions_below(
            FileKind::BlacklistSnapshot,
            FileKind::BlacklistDelta,
            current,
        )?;
        for from in held {
            if self.is_signed(FileKind::BlacklistDelta, current, from)? {
                continue;
            }
            if let Some(changes) = self.blacklist_changes_after(from, DELTA_CHANGES_SENT_MAX)? {
                out.push(RequestEntry {
                    kind: FileKind::BlacklistDelta,
                    version: current,
                    base_version: from,
                    payload: delta_payload(&Delta {
                        from_version: from,
                        to_version: current,
                        changes,
                    }),
                });
            }
        }
        for (name, kind) in [
            ("fares", FileKind::FareTable),
            ("keys", FileKind::RideCodeKeys),
        ] {
            if let Some((version, body)) = self.downlink(name)? {
                if !self.is_signed(kind, version, 0)? {
                    out.push(RequestEntry {
                        kind,
                        version,
                        base_version: 0,
                        payload: body,
                    });
                }
            }
        }
        out.extend(self.cert_set_request()?);
        Ok(out)
    }

    /// The versions below `current` that signed files of a content (its `snapshot` and
    /// `delta` kinds) gave, newest first, at most [`SIGNING_DELTAS_MAX`]: the versions a bus
    /// can hold, from which deltas to `current` are asked for.
    fn signed_versions_below(
        &self,
        snapshot: FileKind,
        delta: FileKind,
        current: u64,
    ) -> Result<Vec<u64>, StoreError> {
        let held: Vec<i64> = self
            .conn
            .prepare_cached(
                "SELECT DISTINCT version FROM signed_files WHERE kind IN (?1, ?2) AND version < ?3
                 ORDER BY version DESC LIMIT ?4",
            )?
            .query_map(
                params![
                    snapshot as u16,
                    delta as u16,
                    current as i64,
                    SIGNING_DELTAS_MAX as i64
                ],
                |r| r.get(0),
            )?
            .collect::<Result<_, _>>()?;
        Ok(held.into_iter().map(|v| v as u64).collect())
    }

    fn is_signed(&self, kind: FileKind, version: u64, base: u64) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT 1 FROM signed_files WHERE kind=?1 AND version=?2 AND base_version=?3",
            )?
            .query_row(
                params![kind as u16, version as i64, base as i64],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Import the operator's signed bundle: every file is checked against the pinned operator
    /// public key before any is stored (all or nothing); returns what was imported.
    pub fn import_signed(&self, bundle: &[u8]) -> Result<Vec<EntrySummary>, ImportError> {
        let key = self.operator_pub()?.ok_or(ImportError::NoPublicKey)?;
        let files = decode_bundle(bundle)?;
        let mut checked = Vec::with_capacity(files.len());
        for (index, file) in files.iter().enumerate() {
            let v = signed::parse(file)
                .and_then(|f| f.verify(&key))
                .map_err(|source| ImportError::File { index, source })?;
            let h = v.header;
            let expires = h.dates.map_or(0, |d| d.expires_unix_s);
            if h.dates.is_none() {
                return Err(ImportError::Undated(index));
            }
            checked.push((h, expires, *file));
        }
        let tx = self.conn.unchecked_transaction()?;
        let mut out = Vec::with_capacity(checked.len());
        for (h, expires, file) in checked {
            tx.execute(
                "INSERT OR REPLACE INTO signed_files(kind, version, base_version, expires_unix_s, file)
                 VALUES(?1, ?2, ?3, ?4, ?5)",
                params![h.kind as u16, h.version as i64, h.base_version as i64, expires, file],
            )?;
            out.push(EntrySummary {
                kind: h.kind.as_str(),
                version: h.version,
                base_version: h.base_version,
                payload_bytes: h.payload_len,
            });
        }
        tx.commit()?;
        Ok(out)
    }

    /// The signed blacklist file for a bus holding version `held`: the delta from `held` to
    /// the newest signed snapshot's version when the operator signed one, else that snapshot;
    /// None when nothing newer is signed.
    pub fn signed_blacklist_after(&self, held: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.signed_newest_after(FileKind::BlacklistSnapshot, FileKind::BlacklistDelta, held)
    }

    /// The signed verified-certificate set for a bus holding version `held`, as for the
    /// blacklist ([`Store::signed_blacklist_after`]): the delta from `held` to the newest
    /// signed version when the operator signed one, else that version's snapshot.
    pub fn signed_cert_set_after(&self, held: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.signed_newest_after(
            FileKind::VerifiedCertSnapshot,
            FileKind::VerifiedCertDelta,
            held,
        )
    }

    /// The newest signed version of a content above `held` (its `snapshot` kind names the
    /// versions signed): the `delta` from `held` when signed, else the snapshot.
    fn signed_newest_after(
        &self,
        snapshot: FileKind,
        delta: FileKind,
        held: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let newest: Option<i64> = self
            .conn
            .prepare_cached("SELECT MAX(version) FROM signed_files WHERE kind=?1")?
            .query_row(params![snapshot as u16], |r| r.get(0))?;
        let Some(newest) = newest.filter(|v| *v as u64 > held) else {
            return Ok(None);
        };
        let mut st = self.conn.prepare_cached(
            "SELECT file FROM signed_files WHERE version=?1
               AND ((kind=?2 AND base_version=?3) OR (kind=?4 AND base_version=0))
             ORDER BY kind DESC LIMIT 1",
        )?;
        Ok(st
            .query_row(
                params![newest, delta as u16, held as i64, snapshot as u16],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The newest signed fare table or key file (`kind`) above version `held`.
    pub fn signed_file_after(
        &self,
        kind: FileKind,
        held: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT file FROM signed_files WHERE kind=?1 AND version>?2
                 ORDER BY version DESC LIMIT 1",
            )?
            .query_row(params![kind as u16, held as i64], |r| r.get(0))
            .optional()?)
    }

    /// Use a given operator key (tests, or a key imported from the operator).
    pub fn set_operator_key(&self, key: &SigningKey) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES('operator_key', ?1)",
            params![&key.to_bytes()[..]],
        )?;
        Ok(())
    }

    /// Provision a terminal with a fresh random master secret, returned once (to be given to
    /// the bus); the store keeps only the key derived from it ([`station_key`]).
    pub fn add_terminal(&self, id: &str) -> Result<Secret, StoreError> {
        let mut secret = [0u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        self.add_terminal_with_secret(id, &secret)?;
        Ok(secret)
    }

    /// Provision a terminal whose bus holds `master`; the store keeps the derived key only.
    pub fn add_terminal_with_secret(&self, id: &str, master: &Secret) -> Result<(), StoreError> {
        if !valid_terminal_id(id) {
            return Err(StoreError::BadTerminalId);
        }
        let key = station_key(master, id);
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO terminals(id, secret, added_unix_s) VALUES(?1, ?2, ?3)",
            params![id, &key[..], now_unix_s()],
        )?;
        if n == 0 {
            return Err(StoreError::TerminalExists(id.to_string()));
        }
        Ok(())
    }

    /// The key the station authenticates `id` with (derived from the bus's master secret).
    pub fn terminal_key(&self, id: &str) -> Result<Option<Secret>, StoreError> {
        let s: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT secret FROM terminals WHERE id=?1")?
            .query_row(params![id], |r| r.get(0))
            .optional()?;
        s.map(|s| <Secret>::try_from(s.as_slice()).map_err(|_| StoreError::Corrupt("secret")))
            .transpose()
    }

    /// Highest seq up to which every record of the terminal's journal `epoch` is stored or
    /// declared lost (0 for a journal never seen).
    pub fn contiguous_seq(&self, id: &str, epoch: u64) -> Result<u64, StoreError> {
        let s: Option<i64> = self
            .conn
            .prepare_cached("SELECT contiguous_seq FROM journals WHERE terminal=?1 AND epoch=?2")?
            .query_row(params![id, epoch as i64], |r| r.get(0))
            .optional()?;
        Ok(s.unwrap_or(0) as u64)
    }

    /// The contiguous seq of the terminal's newest journal (0 when none was seen).
    pub fn newest_contiguous_seq(&self, id: &str) -> Result<u64, StoreError> {
        let s: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT contiguous_seq FROM journals WHERE terminal=?1 ORDER BY rowid DESC LIMIT 1",
            )?
            .query_row(params![id], |r| r.get(0))
            .optional()?;
        Ok(s.unwrap_or(0) as u64)
    }

    /// Start a session of the terminal's journal `epoch` whose first seq is `first_seq`: a
    /// journal never seen is stored as such (its count starts before `first_seq`) and
    /// reported. Returns its contiguous seq and whether it is new.
    pub fn open_journal(
        &mut self,
        id: &str,
        epoch: u64,
        first_seq: u64,
    ) -> Result<(u64, bool), StoreError> {
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO journals(terminal, epoch, first_seq, contiguous_seq, first_seen_unix_s, no)
             VALUES(?1, ?2, ?3, ?4, ?5, (SELECT COALESCE(MAX(no), 0) + 1 FROM journals))",
            params![id, epoch as i64, first_seq as i64, (first_seq - 1) as i64, now_unix_s()],
        )?;
        if n == 1 {
            let others: i64 = self.conn.query_row(
                "SELECT COUNT(*) FROM journals WHERE terminal=?1 AND epoch<>?2",
                params![id, epoch as i64],
                |r| r.get(0),
            )?;
            if others > 0 {
                tracing::warn!(terminal = %id, epoch = %format!("{epoch:016x}"), first_seq, earlier_journals = others,
                    "depot: the terminal's journal was replaced (new storage or re-flash): a new epoch, stored apart");
                integrity::journal_replaced(&self.conn, id, epoch, first_seq)?;
            } else {
                tracing::info!(terminal = %id, epoch = %format!("{epoch:016x}"), first_seq, "depot: first journal of the terminal");
            }
        }
        Ok((self.contiguous_seq(id, epoch)?, n == 1))
    }

    /// Seqs `from ..= to` of a journal the validator no longer holds (it dropped them after
    /// an acknowledgement this station has since lost: a restore from a backup): stored as
    /// a declared loss with that reason, reported, and counted as accounted for.
    pub fn declare_gone(
        &mut self,
        terminal: &str,
        epoch: u64,
        from_seq: u64,
        to_seq: u64,
    ) -> Result<Ack, StoreError> {
        let tx = self.conn.transaction()?;
        let journal = journal_no(&tx, terminal, epoch)?;
        tx.execute(
            "INSERT OR REPLACE INTO lost(terminal, epoch, from_seq, to_seq, reason)
             VALUES(?1, ?2, ?3, ?4, 'acknowledged earlier, then lost at the depot')",
            params![terminal, epoch as i64, from_seq as i64, to_seq as i64],
        )?;
        let contiguous_seq = advance_contiguous(&tx, terminal, epoch, journal)?;
        let max_seq = max_seq(&tx, journal)?;
        tx.commit()?;
        Ok(Ack {
            contiguous_seq,
            max_seq,
            ..Ack::default()
        })
    }

    /// Store one checked batch in one transaction and say what to acknowledge, checked
    /// against the station's clock now (see [`Store::store_batch_at`]).
    pub fn store_batch(
        &mut self,
        terminal: &str,
        epoch: u64,
        from_seq: u64,
        records: &[Received],
    ) -> Result<Stored, StoreError> {
        self.store_batch_at(terminal, epoch, from_seq, records, now_unix_s())
    }

    /// Store one checked batch in one transaction and say what to acknowledge.
    /// `records` must be in strictly increasing seq order, all at or after `from_seq`;
    /// `now_unix_s` is the station's clock when they arrived.
    ///
    /// A record with a field out of range ([`super::checks`]) is refused: kept in
    /// `refused` with the reason, its seq accounted for, counted in the ack's refused count.
    /// A record whose (terminal, epoch, seq) already holds a different record is refused
    /// too: kept apart in `conflicts` and counted in the ack, never stored over the first
    /// and never dropped quietly.
    pub fn store_batch_at(
        &mut self,
        terminal: &str,
        epoch: u64,
        from_seq: u64,
        records: &[Received],
        now_unix_s: i64,
    ) -> Result<Stored, StoreError> {
        self.store_checked_batch_at(terminal, epoch, from_seq, records, now_unix_s, None)
    }

    /// [`Store::store_batch_at`] with the journal's chain checked ([`integrity`]):
    /// `links[i]` is what the session found of `records[i]`'s MAC, settled here against the
    /// records stored; an altered record is refused (kept in `refused`, its seq accounted
    /// for), a reused seq of an authentic record reported as a cut. Without `chain` (records
    /// not from a session) only the PSAM numbers are checked.
    pub fn store_checked_batch_at(
        &mut self,
        terminal: &str,
        epoch: u64,
        from_seq: u64,
        records: &[Received],
        now_unix_s: i64,
        chain: Option<(&ChainKeys, &[Link])>,
    ) -> Result<Stored, StoreError> {
        let ceilings = self.fare_ceilings()?;
        let tx = self.conn.transaction()?;
        let mut st = BatchState::default();
        let journal = journal_no(&tx, terminal, epoch)?;
        let mut stored = 0u32;
        let mut refused = 0u32;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO records
                 (journal, seq, kind, at_unix_s, fare_fen, channel, account, qr_counter, raw, rule)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            let mut refuse = tx.prepare_cached(
                "INSERT OR IGNORE INTO refused(terminal, epoch, seq, raw, reason, at_unix_s)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for (i, r) in records.iter().enumerate() {
                let link = match chain {
                    Some((keys, links)) => {
                        let link = links.get(i).copied().unwrap_or(Link::Unknown);
                        match integrity::resolve(&tx, terminal, keys, r, link, &mut st)? {
                            Some(link) => Some(link),
                            None => {
                                refused += 1;
                                continue;
                            }
                        }
                    }
                    None => None,
                };
                let rec = &r.record;
                if let Err(reason) = check_record(rec, &ceilings, now_unix_s) {
                    refuse.execute(params![
                        terminal,
                        epoch as i64,
                        rec.seq as i64,
                        &r.raw[..],
                        reason,
                        now_unix_s
                    ])?;
                    refused += 1;
                    // Logged with the batch's findings: one row a run, never a flood.
                    st.findings
                        .add(integrity::FindingKind::OutOfRange, rec.seq, rec.seq, reason);
                    continue;
                }
                let qr = rec.qr.as_ref();
                let n = insert.execute(params![
                    journal,
                    rec.seq as i64,
                    rec.kind as u8,
                    rec.at_unix_s,
                    rec.fare_fen,
                    qr.map(|q| q.account.channel),
                    qr.map(|q| q.account.account as i64),
                    qr.map(|q| q.counter),
                    &r.raw[..],
                    rec.rule as u8,
                ])? as u32;
                stored += n;
                if n == 1 {
                    st.psam(&tx, rec)?;
                } else if is_conflict(&tx, terminal, epoch, journal, r)? {
                    refused += 1;
                    if link.is_some() {
                        st.findings.add(
                            integrity::FindingKind::Cut,
                            rec.seq,
                            rec.seq,
                            "seq reused: the journal wrote another record at a seq the depot holds (its last records cut, or its storage rolled back)",
                        );
                    }
                }
            }
        }
        st.flush_psam(&tx)?;
        let findings = integrity::write_findings(&tx, terminal, epoch, &mut st)?;
        let declared_lost = lost_ranges(from_seq, records);
        {
            let mut lost = tx.prepare_cached(
                "INSERT OR REPLACE INTO lost(terminal, epoch, from_seq, to_seq, reason)
                 VALUES(?1, ?2, ?3, ?4, 'corrupt slot')",
            )?;
            for (a, b) in &declared_lost {
                lost.execute(params![terminal, epoch as i64, *a as i64, *b as i64])?;
            }
        }
        let contiguous_seq = advance_contiguous(&tx, terminal, epoch, journal)?;
        let max_seq = max_seq(&tx, journal)?;
        tx.commit()?;
        Ok(Stored {
            ack: Ack {
                contiguous_seq,
                max_seq,
                stored,
                refused,
            },
            declared_lost,
            findings,
        })
    }

    /// Stored security findings, newest first, at most `max` ([`integrity`]).
    pub fn findings(&self, max: usize) -> Result<Vec<Finding>, StoreError> {
        integrity::read_findings(&self.conn, max)
    }

    /// The fare ceilings of the default policy and every fare table published, computed
    /// again only when a newer table was published.
    fn fare_ceilings(&mut self) -> Result<FareCeilings, StoreError> {
        let version: i64 = self
            .conn
            .prepare_cached("SELECT COALESCE(MAX(version), 0) FROM fare_history")?
            .query_row([], |r| r.get(0))?;
        if let Some((v, c)) = &self.ceilings {
            if *v == version {
                return Ok(c.clone());
            }
        }
        let mut tables = Vec::new();
        let bodies: Vec<Vec<u8>> = self
            .conn
            .prepare("SELECT body FROM fare_history UNION ALL SELECT body FROM downlink WHERE kind='fares'")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for body in bodies {
            // Checked when published; a row that no longer parses is a damaged database.
            let table = std::str::from_utf8(&body)
                .ok()
                .and_then(|t| FareTable::from_toml(t).ok())
                .ok_or(StoreError::Corrupt("published fare table"))?;
            tables.push(table);
        }
        let c = FareCeilings::of(&tables);
        self.ceilings = Some((version, c.clone()));
        Ok(c)
    }

    /// Record a service counter's action and return the new blacklist version: an add adds
    /// its reason to the id's (an add of a reason already there changes nothing but is logged),
    /// a remove lifts its reason only, [`StoreError::NotListed`] if the id is not listed for it.
    pub fn blacklist_change(&mut self, change: &Change) -> Result<u64, StoreError> {
        let tx = self.conn.transaction()?;
        let version = blacklist_change_in(&tx, change)?;
        tx.commit()?;
        Ok(version)
    }

    pub fn blacklist_version(&self) -> Result<u64, StoreError> {
        let v: i64 = self.conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM blacklist_changes",
            [],
            |r| r.get(0),
        )?;
        Ok(v as u64)
    }

    /// The changes that take version `after` to the current one, at most `max` of them
    /// (None when there are more: send a snapshot instead).
    pub fn blacklist_changes_after(
        &self,
        after: u64,
        max: usize,
    ) -> Result<Option<Vec<Change>>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT op, kind, id, reason FROM blacklist_changes WHERE version > ?1
             ORDER BY version LIMIT ?2",
        )?;
        let rows = st.query_map(params![after as i64, max as i64 + 1], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (op, kind, id, reason) = row?;
            let op = if op == "add" {
                ChangeOp::Add
            } else {
                ChangeOp::Remove
            };
            out.push(Change {
                op,
                id: parse_list_id(&kind, &id)?,
                reason: parse_reason(&reason)?,
            });
        }
        Ok((out.len() <= max).then_some(out))
    }

    /// The reasons `id` is listed for now (empty when it is not listed).
    pub fn blacklist_reasons(&self, id: &ListId) -> Result<ReasonSet, StoreError> {
        blacklist_reasons_in(&self.conn, id)
    }

    /// The whole blacklist at its current version.
    pub fn blacklist(&self) -> Result<Blacklist, StoreError> {
        let version = self.blacklist_version()?;
        let mut st = self
            .conn
            .prepare_cached("SELECT kind, id, reason FROM blacklist_reasons")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut entries = Vec::new();
        for row in rows {
            let (kind, id, reason) = row?;
            entries.push((parse_list_id(&kind, &id)?, parse_reason(&reason)?));
        }
        Ok(Blacklist::from_entries(version, entries))
    }

    /// Publish a new fare table or key file (`kind` "fares" or "keys"); returns its version.
    /// A fare table is also kept in `fare_history`: records of buses still charging by an
    /// earlier table are within range ([`super::checks`]).
    pub fn publish(&self, kind: &str, body: &[u8]) -> Result<u64, StoreError> {
        let version = self.downlink(kind)?.map_or(0, |(v, _)| v) + 1;
        // One connection, no other transaction open on it: `unchecked` is safe here.
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO downlink(kind, version, body) VALUES(?1, ?2, ?3)",
            params![kind, version as i64, body],
        )?;
        if kind == "fares" {
            tx.execute(
                "INSERT OR REPLACE INTO fare_history(version, body, published_unix_s) VALUES(?1, ?2, ?3)",
                params![version as i64, body, now_unix_s()],
            )?;
        }
        tx.commit()?;
        Ok(version)
    }

    pub fn downlink(&self, kind: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT version, body FROM downlink WHERE kind=?1",
                params![kind],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?)),
            )
            .optional()?)
    }

    /// Every ride code claimed by more than one record, with all its claims (earliest
    /// claimed time first). None is picked as the true one: a forged record with an earlier
    /// time would otherwise make an honest bus's ride the repeat.
    pub fn qr_conflicts(&self) -> Result<Vec<QrConflict>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT r.channel, r.account, r.qr_counter, j.terminal, j.epoch, r.seq, r.at_unix_s,
                    r.fare_fen, r.raw
             FROM records r JOIN journals j ON j.no = r.journal
             WHERE r.kind = ?1 AND (r.channel, r.account, r.qr_counter) IN (
               SELECT channel, account, qr_counter FROM records WHERE kind = ?1
               GROUP BY channel, account, qr_counter HAVING COUNT(*) > 1)
             ORDER BY r.channel, r.account, r.qr_counter, r.at_unix_s, j.terminal, j.epoch, r.seq",
        )?;
        let mut rows = st.query(params![RecordKind::QrRide as u8])?;
        let mut out: Vec<QrConflict> = Vec::new();
        let mut verifier = self.proof_verifier()?;
        while let Some(r) = rows.next()? {
            let code = (
                r.get::<_, u16>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, u32>(2)?,
            );
            let mut claim = QrClaim {
                terminal: r.get(3)?,
                epoch: format!("{:016x}", r.get::<_, i64>(4)? as u64),
                seq: r.get::<_, i64>(5)? as u64,
                at_unix_s: r.get(6)?,
                fare_fen: r.get::<_, i64>(7)? as u64,
                proof: "none",
                code: None,
            };
            self.attach_proof(
                &mut claim,
                r.get::<_, i64>(4)?,
                r.get(8)?,
                verifier.as_mut(),
            )?;
            match out.last_mut() {
                Some(c) if (c.channel, c.account, c.counter) == code => c.claims.push(claim),
                _ => out.push(QrConflict {
                    channel: code.0,
                    account: code.1,
                    counter: code.2,
                    claims: vec![claim],
                }),
            }
        }
        Ok(out)
    }

    /// Keep the ride codes a validator sent as proof of its records (seq, code bytes);
    /// a proof sent again is stored once.
    pub fn store_proofs(
        &mut self,
        terminal: &str,
        epoch: u64,
        proofs: &[crate::journal::proofs::Proof],
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT OR IGNORE INTO ride_code_proofs(terminal, epoch, seq, code) VALUES(?1, ?2, ?3, ?4)",
            )?;
            let mut cert = tx.prepare_cached(
                "INSERT OR IGNORE INTO ride_code_certs(digest, cert) VALUES(?1, ?2)",
            )?;
            for (seq, code) in proofs {
                st.execute(params![terminal, epoch as i64, *seq as i64, &code[..]])?;
                // Each certificate once, checked later (`update_cert_set`).
                let c: &[u8; CERT_BYTES] = code.first_chunk().expect("CERT_BYTES < CODE_BYTES");
                cert.execute(params![&cert_digest(c)[..], &c[..]])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A verifier over the ride-code keys the station publishes, its freshness as wide as
    /// the ingest checks allow (they bound a code's age already): None when none is published.
    fn proof_verifier(&self) -> Result<Option<Verifier>, StoreError> {
        let Some((_, body)) = self.downlink("keys")? else {
            return Ok(None);
        };
        // Checked when published; a file that no longer loads verifies nothing.
        let keys = std::str::from_utf8(&body)
            .ok()
            .and_then(|t| ChannelKeys::from_json(t).ok());
        let config = RideCodeConfig {
            code_validity_s: RIDE_CODE_AGE_AT_SCAN_S_MAX as u32,
            clock_skew_s: RIDE_CODE_AHEAD_OF_SCAN_S_MAX as u32,
        };
        Ok(keys.map(|k| Verifier::new(k, config)))
    }

    /// The proof kept for `claim`'s record (`raw`): whether it says what the record says and,
    /// with the station's published keys, whether the channel's and the rider's signatures
    /// verify at the record's time.
    fn attach_proof(
        &self,
        claim: &mut QrClaim,
        epoch: i64,
        raw: Vec<u8>,
        verifier: Option<&mut Verifier>,
    ) -> Result<(), StoreError> {
        let code: Option<Vec<u8>> = self
            .conn
            .prepare_cached(
                "SELECT code FROM ride_code_proofs WHERE terminal=?1 AND epoch=?2 AND seq=?3",
            )?
            .query_row(params![claim.terminal, epoch, claim.seq as i64], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(code) = code.and_then(|c| <[u8; CODE_BYTES]>::try_from(c.as_slice()).ok()) else {
            return Ok(());
        };
        let rec = <&[u8; RECORD_BYTES]>::try_from(raw.as_slice())
            .ok()
            .and_then(|b| Record::decode(b).ok())
            .and_then(|r| r.qr);
        let same = RideCode::from_bytes(code)
            .ok()
            .zip(rec)
            .is_some_and(|(c, q)| {
                c.account() == q.account
                    && c.counter == q.counter
                    && c.generated_at == q.generated_at
                    // Version 4 records name their certificate: the proof must hold that one.
                    && q.cert_ref
                        .map_or(true, |r| r == QrTx::cert_ref_of(&c.cert_digest()))
            });
        let text = crate::ride_code::format::to_text(&code);
        let at = claim.at_unix_s;
        claim.proof = match (same, verifier) {
            (false, _) => "differs",
            (true, None) => "matches",
            (true, Some(v)) => match v.verify(&text, at) {
                Ok(_) => "verified",
                Err(reason) => {
                    tracing::warn!(terminal = %claim.terminal, seq = claim.seq, reason = reason.as_str(),
                        "depot: a ride-code proof does not verify with the published keys");
                    "bad_signature"
                }
            },
        };
        claim.code = Some(text);
        Ok(())
    }

    /// (terminal, epoch as stored, seq) of every claim in `conflicts`.
    fn conflict_claims(conflicts: &[QrConflict]) -> Dups {
        conflicts
            .iter()
            .flat_map(|c| &c.claims)
            .map(|c| {
                let epoch = u64::from_str_radix(&c.epoch, 16).unwrap_or(0) as i64;
                (c.terminal.clone(), epoch, c.seq)
            })
            .collect()
    }

    /// The clearing view of every terminal.
    pub fn report(&self) -> Result<Report, StoreError> {
        let conflicts = self.qr_conflicts()?;
        let dups = Self::conflict_claims(&conflicts);
        for c in &conflicts {
            tracing::warn!(channel = c.channel, account = c.account, counter = c.counter,
                claims = c.claims.len(), "depot: ride code claimed by more than one record: flagged for clearing, not charged");
        }
        let mut report = Report {
            qr_conflicts: conflicts,
            findings: self.findings(REPORT_FINDINGS_MAX)?,
            ..Report::default()
        };
        let ids: Vec<String> = self
            .conn
            .prepare(
                "SELECT id FROM terminals UNION SELECT j.terminal FROM journals j
                 WHERE EXISTS (SELECT 1 FROM records r WHERE r.journal = j.no)",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for id in ids {
            let t = self.terminal_report(&id, &dups)?;
            for g in &t.gaps {
                tracing::warn!(terminal = %id, from = g[0], to = g[1], "depot: gap in records");
            }
            for (rule, fen) in &t.fare_fen_by_rule {
                *report.fare_fen_by_rule.entry(*rule).or_default() += fen;
            }
            report.terminals.insert(id, t);
        }
        Ok(report)
    }

    fn terminal_report(&self, id: &str, dups: &Dups) -> Result<TerminalReport, StoreError> {
        let mut t = TerminalReport::default();
        let journals: Vec<(i64, i64)> = self
            .conn
            .prepare_cached(
                "SELECT epoch, first_seq FROM journals WHERE terminal=?1 ORDER BY rowid",
            )?
            .query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (epoch, first_seq) in journals {
            let j = self.journal_report(id, epoch, first_seq as u64, dups, &mut t)?;
            t.records += j.records;
            t.max_seq = j.max_seq;
            t.gaps.extend_from_slice(&j.gaps);
            t.declared_lost.extend_from_slice(&j.declared_lost);
            t.declared_lost.extend_from_slice(&j.gone);
            t.conflicts += j.conflicts;
            t.refused += j.refused;
            t.journals.push(j);
        }
        Ok(t)
    }

    fn journal_report(
        &self,
        id: &str,
        epoch: i64,
        first_seq: u64,
        dups: &Dups,
        t: &mut TerminalReport,
    ) -> Result<JournalReport, StoreError> {
        let mut j = JournalReport {
            epoch: format!("{:016x}", epoch as u64),
            first_seq,
            max_seq: first_seq - 1,
            ..JournalReport::default()
        };
        // Stored and refused records in seq order: a refused seq is no gap.
        let mut st = self.conn.prepare_cached(
            "SELECT seq, fare_fen, NULL, 0, 0, rule FROM records
               WHERE journal=(SELECT no FROM journals WHERE terminal=?1 AND epoch=?2)
             UNION ALL SELECT seq, raw, reason, at_unix_s, 1, 0 FROM refused
               WHERE terminal=?1 AND epoch=?2
             ORDER BY seq",
        )?;
        let mut rows = st.query(params![id, epoch])?;
        while let Some(row) = rows.next()? {
            let seq = row.get::<_, i64>(0)? as u64;
            if seq > j.max_seq + 1 {
                j.gaps.push([j.max_seq + 1, seq - 1]);
            }
            j.max_seq = j.max_seq.max(seq);
            if row.get::<_, i64>(4)? == 1 {
                j.refused += 1;
                if j.refused_records.len() < REFUSED_LISTED_MAX {
                    j.refused_records.push(refused_record(seq, row)?);
                }
                continue;
            }
            let fare = row.get::<_, i64>(1)? as u64;
            j.records += 1;
            if dups.contains(&(id.to_string(), epoch, seq)) {
                t.fare_fen_in_conflict += fare;
            } else {
                t.fare_fen += fare;
                let rule = u8::try_from(row.get::<_, i64>(5)?)
                    .ok()
                    .and_then(FareRule::from_u8)
                    .ok_or(StoreError::Corrupt("records.rule"))?;
                *t.fare_fen_by_rule.entry(rule).or_default() += fare;
            }
        }
        let mut st = self.conn.prepare_cached(
            "SELECT from_seq, to_seq, reason FROM lost WHERE terminal=?1 AND epoch=?2
             ORDER BY from_seq",
        )?;
        let mut rows = st.query(params![id, epoch])?;
        while let Some(row) = rows.next()? {
            let range = [row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64];
            if row.get::<_, String>(2)? == "corrupt slot" {
                j.declared_lost.push(range);
            } else {
                j.gone.push(range);
            }
        }
        j.conflicts = self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM conflicts WHERE terminal=?1 AND epoch=?2")?
            .query_row(params![id, epoch], |r| r.get::<_, i64>(0))? as u64;
        if j.conflicts > 0 {
            tracing::error!(terminal = %id, epoch = %j.epoch, conflicts = j.conflicts,
                "depot: records refused: another record is stored at their seq");
        }
        if j.refused > 0 {
            tracing::error!(terminal = %id, epoch = %j.epoch, refused = j.refused,
                "depot: records refused: fields out of range (a compromised or broken terminal?)");
        }
        Ok(j)
    }

    /// Every record in (terminal, seq) order, with its flag "a claim to a ride code in
    /// conflict" ([`Store::qr_conflicts`]), to `f`.
    pub fn for_each_record(
        &self,
        mut f: impl FnMut(&str, &Record, bool) -> std::io::Result<()>,
    ) -> Result<(), ExportError> {
        let dups = Self::conflict_claims(&self.qr_conflicts()?);
        let mut st = self.conn.prepare(
            "SELECT j.terminal, j.epoch, r.raw FROM records r JOIN journals j ON j.no = r.journal
                 ORDER BY j.terminal, j.epoch, r.seq",
        )?;
        let mut rows = st.query([])?;
        while let Some(row) = rows.next()? {
            let terminal: String = row.get(0)?;
            let epoch: i64 = row.get(1)?;
            let raw: Vec<u8> = row.get(2)?;
            let rec = <&[u8; RECORD_BYTES]>::try_from(raw.as_slice())
                .ok()
                .and_then(|b| Record::decode(b).ok())
                .ok_or(StoreError::Corrupt("record"))?;
            let dup = dups.contains(&(terminal.clone(), epoch, rec.seq));
            f(&terminal, &rec, dup)?;
        }
        Ok(())
    }

    /// Records stored in total.
    pub fn record_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM records", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// Every journal stored, as (terminal, epoch), in that order: what a forwarder walks.
    pub fn journal_ids(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT terminal, epoch FROM journals ORDER BY terminal, epoch")?;
        let rows = st.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// At most `max` stored records of the journal (terminal, epoch) with a seq above
    /// `after_seq`, in seq order, as (seq, the record's bytes as stored).
    pub fn raw_records_after(
        &self,
        terminal: &str,
        epoch: u64,
        after_seq: u64,
        max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT r.seq, r.raw FROM records r JOIN journals j ON j.no = r.journal
                 WHERE j.terminal=?1 AND j.epoch=?2 AND r.seq>?3 ORDER BY r.seq LIMIT ?4",
        )?;
        let rows = st.query_map(
            params![terminal, epoch as i64, after_seq as i64, max as i64],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?)),
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("export: {0}")]
    Io(#[from] std::io::Error),
}

impl From<rusqlite::Error> for ExportError {
    fn from(e: rusqlite::Error) -> Self {
        ExportError::Store(e.into())
    }
}

fn parse_list_id(kind: &str, id: &str) -> Result<ListId, StoreError> {
    ListId::parse(kind, id).map_err(|_| StoreError::Corrupt("blacklist id"))
}

/// Move a blacklist table of one reason an id (before reason sets) into `blacklist_reasons`,
/// in one transaction, once.
fn move_one_reason_table(conn: &Connection) -> Result<(), StoreError> {
    let old: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type='table' AND name='blacklist')",
        [],
        |r| r.get(0),
    )?;
    if old {
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             INSERT OR IGNORE INTO blacklist_reasons(kind, id, reason)
                 SELECT kind, id, reason FROM blacklist;
             DROP TABLE blacklist;
             COMMIT;",
        )?;
        tracing::info!("depot: blacklist table moved to one row a reason");
    }
    Ok(())
}

fn table_exists(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type='table' AND name=?1)",
        params![name],
        |r| r.get(0),
    )?)
}

/// A database made before `acquirer_arrears`: the `arrears` listings that unpaid declined
/// rides explain are marked as the declines' own (those `depot declines` may lift), once.
/// An `arrears` listing no unpaid decline explains was made at the counter and stays.
fn mark_declines_arrears(conn: &Connection) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR IGNORE INTO acquirer_arrears(pan_token)
         SELECT DISTINCT d.pan_token FROM acquirer_declines d
         JOIN blacklist_reasons b ON b.kind = 'pan' AND b.id = d.pan_token
              AND b.reason = 'arrears'
         WHERE d.paid = 0",
        [],
    )?;
    Ok(())
}

fn parse_reason(s: &str) -> Result<ListReason, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt("blacklist reason"))
}

/// A database made before journal identities: its records and losses become those of epoch
/// 0 (the journals of those validators, which keep epoch 0 when they are upgraded), and
/// each terminal's count becomes that journal's.
fn migrate_to_epochs(conn: &Connection) -> Result<(), StoreError> {
    let old: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name='records'
           AND EXISTS (SELECT 1 FROM pragma_table_info('records') WHERE name='terminal')
           AND NOT EXISTS (SELECT 1 FROM pragma_table_info('records') WHERE name='epoch')",
        [],
        |r| r.get(0),
    )?;
    if old == 0 {
        return Ok(());
    }
    tracing::warn!("depot: database from before journal identities: records moved to epoch 0");
    conn.execute_batch(&format!(
        "BEGIN;
         ALTER TABLE records RENAME TO records_v1;
         ALTER TABLE lost RENAME TO lost_v1;
         {SCHEMA}
         INSERT OR IGNORE INTO journals(terminal, epoch, first_seq, contiguous_seq, first_seen_unix_s, no)
           SELECT id, 0, 1, contiguous_seq, added_unix_s, ROW_NUMBER() OVER (ORDER BY rowid)
           FROM terminals;
         INSERT OR IGNORE INTO journals(terminal, epoch, first_seq, contiguous_seq, first_seen_unix_s, no)
           SELECT terminal, 0, 1, 0, 0,
                  (SELECT COALESCE(MAX(no), 0) FROM journals) + ROW_NUMBER() OVER (ORDER BY terminal)
           FROM (SELECT DISTINCT terminal FROM records_v1
                 WHERE terminal NOT IN (SELECT id FROM terminals));
         INSERT INTO records(journal, seq, kind, at_unix_s, fare_fen, channel, account, qr_counter, raw)
           SELECT j.no, r.seq, r.kind, r.at_unix_s, r.fare_fen, r.channel, r.account, r.qr_counter, r.raw
           FROM records_v1 r JOIN journals j ON j.terminal = r.terminal AND j.epoch = 0;
         INSERT INTO lost(terminal, epoch, from_seq, to_seq, reason)
           SELECT terminal, 0, from_seq, to_seq, 'corrupt slot' FROM lost_v1;
         DROP TABLE records_v1;
         DROP TABLE lost_v1;
         COMMIT;"
    ))?;
    Ok(())
}

/// A database made with the records keyed by (terminal, epoch, seq): each journal gets its
/// number (`journals.no`) and the records are keyed by (journal number, seq), which keeps
/// the key of every record as narrow as it was before epochs (batch ingest pays for its
/// width).
fn migrate_to_journal_numbers(conn: &Connection) -> Result<(), StoreError> {
    let old: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name='records'
           AND EXISTS (SELECT 1 FROM pragma_table_info('records') WHERE name='terminal')",
        [],
        |r| r.get(0),
    )?;
    if old == 0 {
        return Ok(());
    }
    tracing::warn!("depot: records re-keyed by journal number");
    conn.execute_batch(&format!(
        "BEGIN;
         ALTER TABLE journals ADD COLUMN no INTEGER;
         UPDATE journals SET no = rowid;
         INSERT INTO journals(terminal, epoch, first_seq, contiguous_seq, first_seen_unix_s, no)
           SELECT terminal, epoch, 1, 0, 0,
                  (SELECT COALESCE(MAX(no), 0) FROM journals)
                    + ROW_NUMBER() OVER (ORDER BY terminal, epoch)
           FROM (SELECT DISTINCT terminal, epoch FROM records r WHERE NOT EXISTS
                   (SELECT 1 FROM journals j WHERE j.terminal = r.terminal AND j.epoch = r.epoch));
         ALTER TABLE records RENAME TO records_v2;
         {SCHEMA}
         INSERT INTO records(journal, seq, kind, at_unix_s, fare_fen, channel, account, qr_counter, raw)
           SELECT j.no, r.seq, r.kind, r.at_unix_s, r.fare_fen, r.channel, r.account, r.qr_counter, r.raw
           FROM records_v2 r JOIN journals j ON j.terminal = r.terminal AND j.epoch = r.epoch;
         DROP TABLE records_v2;
         COMMIT;"
    ))?;
    Ok(())
}

/// A database made before records kept the fare rule (`records.rule`): the column is added,
/// every row stored so far `unknown` (0). Those rows hold records of format version 4 or
/// older, which name no rule: nothing is lost.
fn migrate_to_fare_rules(conn: &Connection) -> Result<(), StoreError> {
    let old: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name='records'
           AND NOT EXISTS (SELECT 1 FROM pragma_table_info('records') WHERE name='rule')",
        [],
        |r| r.get(0),
    )?;
    if old == 0 {
        return Ok(());
    }
    tracing::warn!("depot: records gain their fare rule; rows stored before read as unknown");
    conn.execute_batch("ALTER TABLE records ADD COLUMN rule INTEGER NOT NULL DEFAULT 0;")?;
    Ok(())
}

/// A refused row of the report's query: seq, raw, reason, received.
fn refused_record(seq: u64, row: &rusqlite::Row<'_>) -> Result<RefusedRecord, StoreError> {
    let raw: Vec<u8> = row.get(1)?;
    // Refused for its fields, not its form: its bytes decode (checked when received).
    let rec = <&[u8; RECORD_BYTES]>::try_from(raw.as_slice())
        .ok()
        .and_then(|b| Record::decode(b).ok())
        .ok_or(StoreError::Corrupt("refused record"))?;
    Ok(RefusedRecord {
        seq,
        reason: row.get(2)?,
        at_unix_s: rec.at_unix_s,
        fare_fen: u64::from(rec.fare_fen),
        received_unix_s: row.get(3)?,
    })
}

/// Seq ranges of `from ..= last record` with no record: what the validator declares lost.
fn lost_ranges(from_seq: u64, records: &[Received]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut next = from_seq;
    for r in records {
        if r.record.seq > next {
            out.push((next, r.record.seq - 1));
        }
        next = r.record.seq + 1;
    }
    out
}

/// The journal number of the terminal's journal `epoch` (`journals.no`), made for a journal
/// never seen (its count starting at seq 1). Records are keyed by this small number and
/// their seq: a key of a few bytes, not the terminal's id and an 8-byte epoch.
fn journal_no(
    tx: &rusqlite::Transaction<'_>,
    terminal: &str,
    epoch: u64,
) -> Result<i64, StoreError> {
    let no: Option<i64> = tx
        .prepare_cached("SELECT no FROM journals WHERE terminal=?1 AND epoch=?2")?
        .query_row(params![terminal, epoch as i64], |r| r.get(0))
        .optional()?;
    if let Some(no) = no {
        return Ok(no);
    }
    Ok(tx
        .prepare_cached(
            "INSERT INTO journals(terminal, epoch, first_seq, contiguous_seq, first_seen_unix_s, no)
             VALUES(?1, ?2, 1, 0, ?3, (SELECT COALESCE(MAX(no), 0) + 1 FROM journals))
             RETURNING no",
        )?
        .query_row(params![terminal, epoch as i64, now_unix_s()], |r| r.get(0))?)
}

fn max_seq(tx: &rusqlite::Transaction<'_>, journal: i64) -> Result<u64, StoreError> {
    let m: i64 = tx
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM records WHERE journal=?1")?
        .query_row(params![journal], |r| r.get(0))?;
    Ok(m as u64)
}

/// Whether the record already stored at `r`'s key differs from it (compared field by
/// field, so the same record in another format version is the same); a differing one is
/// kept in `conflicts` and reported.
fn is_conflict(
    tx: &rusqlite::Transaction<'_>,
    terminal: &str,
    epoch: u64,
    journal: i64,
    r: &Received,
) -> Result<bool, StoreError> {
    let raw: Vec<u8> = tx
        .prepare_cached("SELECT raw FROM records WHERE journal=?1 AND seq=?2")?
        .query_row(params![journal, r.record.seq as i64], |row| row.get(0))?;
    let same = <&[u8; RECORD_BYTES]>::try_from(raw.as_slice())
        .ok()
        .and_then(|b| Record::decode(b).ok())
        .is_some_and(|stored| stored == r.record);
    if !same {
        tracing::error!(%terminal, epoch = %format!("{epoch:016x}"), seq = r.record.seq,
            "depot: record differs from the one stored at its seq: refused and kept apart");
        tx.prepare_cached(
            "INSERT OR IGNORE INTO conflicts(terminal, epoch, seq, raw, at_unix_s) VALUES(?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![terminal, epoch as i64, r.record.seq as i64, &r.raw[..], now_unix_s()])?;
    }
    Ok(!same)
}

/// Move the journal's contiguous seq over every stored or declared-lost seq after it.
fn advance_contiguous(
    tx: &rusqlite::Transaction<'_>,
    terminal: &str,
    epoch: u64,
    journal: i64,
) -> Result<u64, StoreError> {
    let epoch = epoch as i64;
    let start: i64 = tx
        .prepare_cached("SELECT contiguous_seq FROM journals WHERE no=?1")?
        .query_row(params![journal], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    let mut c = start as u64;
    let lost: Vec<(u64, u64)> = tx
        .prepare_cached(
            "SELECT from_seq, to_seq FROM lost WHERE terminal=?1 AND epoch=?3 AND to_seq > ?2
             ORDER BY from_seq",
        )?
        .query_map(params![terminal, c as i64, epoch], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })?
        .collect::<Result<_, _>>()?;
    let mut lost = lost.into_iter().peekable();
    // A refused record's seq is accounted for: kept apart, reported, not waited for.
    let mut st = tx.prepare_cached(
        "SELECT seq FROM records WHERE journal=?4 AND seq > ?2
         UNION ALL SELECT seq FROM refused WHERE terminal=?1 AND epoch=?3 AND seq > ?2
         ORDER BY seq",
    )?;
    let mut rows = st.query(params![terminal, c as i64, epoch, journal])?;
    let mut row = rows.next()?.map(|r| r.get::<_, i64>(0)).transpose()?;
    loop {
        if let Some(&(a, b)) = lost.peek() {
            if a <= c + 1 {
                c = c.max(b);
                lost.next();
                continue;
            }
        }
        match row {
            Some(s) if (s as u64) <= c => {}
            Some(s) if s as u64 == c + 1 => c += 1,
            _ => break,
        }
        row = rows.next()?.map(|r| r.get::<_, i64>(0)).transpose()?;
    }
    if c as i64 != start {
        tx.prepare_cached("UPDATE journals SET contiguous_seq=?2 WHERE no=?1")?
            .execute(params![journal, c as i64])?;
    }
    Ok(c)
}

/// [`Store::blacklist_change`] inside the caller's transaction `tx`: the reason row added or
/// removed and the change logged; the new blacklist version. A remove of a reason not held is
/// [`StoreError::NotListed`].
pub(super) fn blacklist_change_in(tx: &Connection, change: &Change) -> Result<u64, StoreError> {
    let kind = change.id.kind();
    let id = change.id.to_string();
    let reason = change.reason.as_str();
    match change.op {
        ChangeOp::Add => {
            tx.execute(
                "INSERT OR IGNORE INTO blacklist_reasons(kind, id, reason)
                 VALUES(?1, ?2, ?3)",
                params![kind, id, reason],
            )?;
        }
        ChangeOp::Remove => {
            // 解挂 lifts a lost report; it must not revive a cancelled or replaced card,
            // whose own rows stay.
            let n = tx.execute(
                "DELETE FROM blacklist_reasons WHERE kind=?1 AND id=?2 AND reason=?3",
                params![kind, id, reason],
            )?;
            if n == 0 {
                return Err(StoreError::NotListed { id, reason });
            }
        }
    }
    let op = match change.op {
        ChangeOp::Add => "add",
        ChangeOp::Remove => "remove",
    };
    tx.execute(
        "INSERT INTO blacklist_changes(op, kind, id, reason, at_unix_s)
         VALUES(?1, ?2, ?3, ?4, ?5)",
        params![op, kind, id, reason, now_unix_s()],
    )?;
    Ok(tx.last_insert_rowid() as u64)
}

/// [`Store::blacklist_reasons`] on `conn` (the store's connection or a transaction of it).
pub(super) fn blacklist_reasons_in(
    conn: &Connection,
    id: &ListId,
) -> Result<ReasonSet, StoreError> {
    let mut st =
        conn.prepare_cached("SELECT reason FROM blacklist_reasons WHERE kind=?1 AND id=?2")?;
    let rows = st.query_map(params![id.kind(), id.to_string()], |r| {
        r.get::<_, String>(0)
    })?;
    let mut reasons = ReasonSet::EMPTY;
    for row in rows {
        reasons = reasons.with(parse_reason(&row?)?);
    }
    Ok(reasons)
}

#[cfg(test)]
mod tests {
    /// A transaction holds the write lock from its start, so a second connection (the
    /// station's session beside a counter command) waits for it instead of slipping a commit
    /// in between its reads and its writes.
    #[test]
    fn transactions_take_the_write_lock_when_they_begin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("depot.db");
        let mut first = Store::open(&path).unwrap();
        let second = Store::open(&path).unwrap();
        second.conn.busy_timeout(std::time::Duration::ZERO).unwrap();
        let write = |s: &Store| {
            s.conn.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES('t', x'01')",
                [],
            )
        };
        let tx = first.conn.transaction().unwrap();
        assert!(
            write(&second).is_err(),
            "the first one's BEGIN took the lock"
        );
        tx.commit().unwrap();
        write(&second).unwrap();
    }

    use super::*;

    fn test_record(seq: u64, fare_fen: u32) -> Record {
        Record {
            seq,
            kind: RecordKind::CardPurchase,
            at_unix_s: 1_795_824_000 + seq as i64,
            utc_offset_min: 480,
            route: 7,
            category: crate::types::RiderCategory::Adult,
            fare_fen,
            balance_fen: Some(4_800),
            card_no: "37140000000000000001".parse().unwrap(),
            card_tx: crate::journal::CardTx::default(),
            qr: None,
            quickpass: None,
            terminal_no: [0, 0, 0, 0, 0, 1],
            rule: crate::fare::FareRule::Unknown,
        }
    }

    fn received(seq: u64, fare_fen: u32, epoch: u64) -> Received {
        let record = test_record(seq, fare_fen);
        Received {
            record,
            raw: record.encode_in(epoch),
        }
    }

    /// (terminal, seq) of every record, in export order.
    fn exported(store: &Store) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        store
            .for_each_record(|t, r, _| {
                out.push((t.to_string(), r.seq));
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn rows_stored_before_the_fare_rule_report_as_unknown_and_new_ones_by_their_rule() {
        use crate::fare::FareRule;
        use crate::journal::chain::{Chain, JournalKey};
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("depot.db");
        let mut store = Store::open(&db).unwrap();
        // Records of format version 2 (a tool's): no rule in their bytes.
        store
            .store_batch("bus-1", 5, 1, &[received(1, 200, 5), received(2, 150, 5)])
            .unwrap();
        drop(store);
        // The table as a station made it before the column.
        let old = Connection::open(&db).unwrap();
        old.execute_batch("ALTER TABLE records DROP COLUMN rule;")
            .unwrap();
        drop(old);
        let mut store = Store::open(&db).unwrap();
        let by_rule = |s: &Store| {
            s.report().unwrap().terminals["bus-1"]
                .fare_fen_by_rule
                .clone()
        };
        assert_eq!(by_rule(&store), BTreeMap::from([(FareRule::Unknown, 350)]));
        // A version 5 record names its rule, and the station keeps it.
        let key = JournalKey::test();
        let mut chain = Chain {
            prev: key.chain_start(5),
            key,
        };
        let record = Record {
            rule: FareRule::Transfer,
            ..test_record(3, 100)
        };
        let raw = record.encode_chained(5, &mut chain);
        store
            .store_batch("bus-1", 5, 3, &[Received { record, raw }])
            .unwrap();
        let report = store.report().unwrap();
        let t = &report.terminals["bus-1"];
        assert_eq!(
            t.fare_fen_by_rule,
            BTreeMap::from([(FareRule::Unknown, 350), (FareRule::Transfer, 100)])
        );
        assert_eq!(t.fare_fen_by_rule.values().sum::<u64>(), t.fare_fen);
        assert_eq!(report.fare_fen_by_rule, t.fare_fen_by_rule);
        drop(store);
        // Opened again: nothing to add, nothing changed.
        assert_eq!(by_rule(&Store::open(&db).unwrap()), report.fare_fen_by_rule);
    }

    #[test]
    fn records_keyed_by_terminal_and_epoch_are_re_keyed_by_journal_number_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("depot.db");
        // The tables as a station with journal epochs in the records' key made them; bus-2's
        // journal has records but no row of its own.
        let old = Connection::open(&db).unwrap();
        old.execute_batch(
            "CREATE TABLE journals(terminal TEXT NOT NULL, epoch INTEGER NOT NULL,
                 first_seq INTEGER NOT NULL, contiguous_seq INTEGER NOT NULL,
                 first_seen_unix_s INTEGER NOT NULL, PRIMARY KEY(terminal, epoch));
             CREATE TABLE records(terminal TEXT NOT NULL, epoch INTEGER NOT NULL,
                 seq INTEGER NOT NULL, kind INTEGER NOT NULL, at_unix_s INTEGER NOT NULL,
                 fare_fen INTEGER NOT NULL, channel INTEGER, account INTEGER,
                 qr_counter INTEGER, raw BLOB NOT NULL,
                 PRIMARY KEY(terminal, epoch, seq)) WITHOUT ROWID;
             INSERT INTO journals VALUES('bus-1', 5, 1, 2, 0);",
        )
        .unwrap();
        for (terminal, epoch, seq) in [("bus-1", 5u64, 1u64), ("bus-1", 5, 2), ("bus-2", 7, 1)] {
            old.execute(
                "INSERT INTO records VALUES(?1, ?2, ?3, 1, 0, 200, NULL, NULL, NULL, ?4)",
                params![
                    terminal,
                    epoch as i64,
                    seq as i64,
                    &received(seq, 200, epoch).raw[..]
                ],
            )
            .unwrap();
        }
        drop(old);
        let mut store = Store::open(&db).unwrap();
        assert_eq!(store.record_count().unwrap(), 3);
        assert_eq!(
            exported(&store),
            [
                ("bus-1".into(), 1),
                ("bus-1".into(), 2),
                ("bus-2".into(), 1)
            ]
        );
        assert_eq!(store.contiguous_seq("bus-1", 5).unwrap(), 2);
        // Stored after them, and a different record at a stored seq is still a conflict.
        let ack = store
            .store_batch("bus-1", 5, 3, &[received(3, 200, 5)])
            .unwrap()
            .ack;
        assert_eq!((ack.contiguous_seq, ack.stored), (3, 1));
        let ack = store
            .store_batch("bus-2", 7, 1, &[received(1, 100, 7)])
            .unwrap()
            .ack;
        assert_eq!((ack.stored, ack.refused), (0, 1));
        drop(store);
        // Opened again: nothing to move, nothing lost.
        let store = Store::open(&db).unwrap();
        assert_eq!(store.record_count().unwrap(), 4);
    }

    #[test]
    fn records_from_before_journal_identities_become_epoch_0_with_a_journal_number() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("depot.db");
        let old = Connection::open(&db).unwrap();
        old.execute_batch(
            "CREATE TABLE terminals(id TEXT PRIMARY KEY, secret BLOB NOT NULL,
                 contiguous_seq INTEGER NOT NULL DEFAULT 0, added_unix_s INTEGER NOT NULL);
             CREATE TABLE records(terminal TEXT NOT NULL, seq INTEGER NOT NULL,
                 kind INTEGER NOT NULL, at_unix_s INTEGER NOT NULL, fare_fen INTEGER NOT NULL,
                 channel INTEGER, account INTEGER, qr_counter INTEGER, raw BLOB NOT NULL,
                 PRIMARY KEY(terminal, seq)) WITHOUT ROWID;
             CREATE TABLE lost(terminal TEXT NOT NULL, from_seq INTEGER NOT NULL,
                 to_seq INTEGER NOT NULL, PRIMARY KEY(terminal, from_seq)) WITHOUT ROWID;
             INSERT INTO terminals VALUES('bus-1', x'00', 2, 0);",
        )
        .unwrap();
        // bus-9 uploaded before it was removed from the terminals.
        for (terminal, seq) in [("bus-1", 1u64), ("bus-1", 2), ("bus-9", 1)] {
            old.execute(
                "INSERT INTO records VALUES(?1, ?2, 1, 0, 200, NULL, NULL, NULL, ?3)",
                params![terminal, seq as i64, &received(seq, 200, 0).raw[..]],
            )
            .unwrap();
        }
        drop(old);
        let mut store = Store::open(&db).unwrap();
        assert_eq!(
            exported(&store),
            [
                ("bus-1".into(), 1),
                ("bus-1".into(), 2),
                ("bus-9".into(), 1)
            ]
        );
        assert_eq!(store.contiguous_seq("bus-1", 0).unwrap(), 2);
        let ack = store
            .store_batch("bus-1", 0, 3, &[received(3, 200, 0)])
            .unwrap()
            .ack;
        assert_eq!((ack.contiguous_seq, ack.stored), (3, 1));
    }

    #[test]
    fn one_reason_blacklist_table_is_moved_to_a_row_a_reason_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("depot.db");
        // The table as a station before reason sets made it.
        let old = Connection::open(&db).unwrap();
        old.execute_batch(
            "CREATE TABLE blacklist(kind TEXT NOT NULL, id TEXT NOT NULL, reason TEXT NOT NULL,
                 PRIMARY KEY(kind, id)) WITHOUT ROWID;
             INSERT INTO blacklist VALUES('card', '37140000000000000009', 'replaced');
             INSERT INTO blacklist VALUES('account', '2:1001', 'arrears');",
        )
        .unwrap();
        drop(old);
        let mut store = Store::open(&db).unwrap();
        let card = ListId::Card("37140000000000000009".parse().unwrap());
        assert_eq!(
            store.blacklist_reasons(&card).unwrap(),
            ReasonSet::of(ListReason::Replaced)
        );
        // Now the card can carry a second reason.
        store
            .blacklist_change(&Change {
                op: ChangeOp::Add,
                id: card,
                reason: ListReason::Lost,
            })
            .unwrap();
        drop(store);
        let store = Store::open(&db).unwrap();
        let list = store.blacklist().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(
            list.get(&card),
            Some(
                [ListReason::Lost, ListReason::Replaced]
                    .into_iter()
                    .collect()
            )
        );
    }
}
