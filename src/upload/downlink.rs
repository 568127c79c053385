//! Downlink files: what the station sends a validator (blacklist snapshot or delta, fare
//! table, ride-code key file), each in the operator-signed container of [`crate::signed`]
//! (blacklist payloads as in [`crate::blacklist::file`]), and how the validator keeps them.
//!
//! ## On the validator
//!
//! `DIR/downlink/` holds `operator.pub` (the pinned operator key, hex), `fares.signed` and
//! `keys.signed` as received, `verified-certs.bin` (the fleet's verified ride-code
//! certificates, [`crate::ride_code::cert_set`], built from the signed snapshots and deltas
//! accepted: `FVC1`, version (8, big-endian), the snapshot payload, CRC-32/ISCSI), and
//! `blacklist.bin`: the list the validator built from the signed snapshots and deltas it
//! accepted, in its own checksummed format:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `FVB3` (`FVB2` before dates, `FVBS` before reason sets: both still read) |
//! | 4 | 8 | version |
//! | 12 | 4 | issued, unix s, of the signed file last applied (`FVB3` only) |
//! | 16 | 4 | expires, unix s, of that file (`FVB3` only) |
//! | 20 | 4 | entry count N (at 12 before `FVB3`) |
//! | 24 | 12 × N | entries: tag (1 card, 2 account, 3 pan), id (10: card BCD, or channel (2) ‖ account (8), or PAN token (8) ‖ 2 zero bytes), reasons (1: the set's bits, 1 lost, 2 replaced, 4 cancelled, 8 arrears; under `FVBS` one reason, 1..=4) |
//! | 24+12N | 4 | CRC-32/ISCSI of everything before |
//!
//! Every received file is checked in full (structure, CRC, operator signature, content, and
//! for a delta its base version) before it replaces anything, and files are replaced
//! atomically (write, sync, rename): a forged or corrupted file is refused and the validator
//! keeps what it had.
//!
//! Versions only go up: a file older than the one held, of any kind, is refused
//! ([`DownlinkError::Rollback`]), as is a file without dates (signed format before 3,
//! [`DownlinkError::Undated`]) or past its expiry ([`DownlinkError::Expired`]).
//! [`DownlinkDir::status`] says when the blacklist held is older than a configured age
//! (freeze protection: a station that stops sending updates is noticed on the bus).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crc::{Crc, CRC_32_ISCSI};
use ed25519_dalek::VerifyingKey;

use crate::blacklist::file::{self as blacklist_file, BlacklistFileError};
use crate::blacklist::Blacklist;
use crate::fare::FareTable;
use crate::journal::SideFile;
use crate::ride_code::{CertSet, CertSetError};
pub use crate::signed::FileKind;
use crate::signed::{self, Dates, SignedError};
use crate::types::{AccountId, CardNo, ListId, ListReason, ReasonSet};

use super::frame::HeldVersions;

/// Largest downlink file a validator reassembles, bytes (a snapshot of 20 million entries
/// is about 150 MB).
pub const DOWNLINK_FILE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Changes above which the station sends a snapshot instead of a delta.
pub const DELTA_CHANGES_SENT_MAX: usize = 100_000;

const STATE_MAGIC: [u8; 4] = *b"FVB3";
/// The list file's magic before dates: reason sets, no dates.
const STATE_MAGIC_UNDATED: [u8; 4] = *b"FVB2";
/// The list file's magic before reason sets: one reason an entry.
const STATE_MAGIC_ONE_REASON: [u8; 4] = *b"FVBS";
/// Blacklist age above which a validator reports its list stale by default, seconds (2 days:
/// a bus returns to the depot every night).
pub const BLACKLIST_AGE_S_MAX_DEFAULT: u64 = 2 * 24 * 3600;
const ENTRY_BYTES: usize = 12;
const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

#[derive(Debug, thiserror::Error)]
pub enum DownlinkError {
    #[error("downlink file: {0}")]
    Signed(#[from] SignedError),
    #[error("downlink verified-certificate set: {0}")]
    CertSet(#[from] CertSetError),
    #[error("downlink blacklist: {0}")]
    Blacklist(#[from] BlacklistFileError),
    #[error("downlink file: no operator key pinned in the data folder")]
    NoOperatorKey,
    #[error("downlink file: bad content: {0}")]
    Content(String),
    #[error("downlink storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("{kind} version {file} is older than the version {held} held: refused (rollback)")]
    Rollback {
        kind: &'static str,
        held: u64,
        file: u64,
    },
    #[error("downlink file has no expiry (signed file format before 3): refused")]
    Undated,
    #[error("downlink file expired at {expires_unix_s} (unix s): refused")]
    Expired { expires_unix_s: u32 },
}

/// What a validator holds, for its status line and the upload report.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DownlinkStatus {
    pub blacklist_version: u64,
    /// When the operator signed the file the blacklist came from (None: none, or undated).
    pub blacklist_issued_unix_s: Option<u32>,
    pub blacklist_expires_unix_s: Option<u32>,
    /// Seconds since `blacklist_issued_unix_s` by the validator's clock.
    pub blacklist_age_s: Option<u64>,
    /// Older than the configured age, past its expiry, or of unknown age: the bus says so.
    pub blacklist_stale: bool,
    pub fares_version: u64,
    pub keys_version: u64,
}

/// The kind and version a received file claims (before any check of its signature).
pub fn describe(file: &[u8]) -> Option<(FileKind, u64)> {
    signed::parse(file)
        .ok()
        .map(|u| (u.header.kind, u.header.version))
}

fn encode_entry(out: &mut Vec<u8>, id: &ListId, reasons: ReasonSet) {
    match id {
        ListId::Card(c) => {
            out.push(1);
            out.extend_from_slice(&c.0);
        }
        ListId::Account(a) => {
            out.push(2);
            out.extend_from_slice(&a.channel.to_be_bytes());
            out.extend_from_slice(&a.account.to_be_bytes());
        }
        ListId::Pan(t) => {
            out.push(3);
            out.extend_from_slice(&t.0.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        }
    }
    out.push(reasons.bits());
}

/// An entry, its reason byte a set's bits, or under the old magic one reason.
fn decode_entry(b: &[u8], one_reason: bool) -> Option<(ListId, ReasonSet)> {
    let id = match b[0] {
        1 => ListId::Card(CardNo::from_bcd(std::array::from_fn(|k| b[1 + k])).ok()?),
        2 => ListId::Account(AccountId {
            channel: u16::from_be_bytes([b[1], b[2]]),
            account: u64::from_be_bytes(std::array::from_fn(|k| b[3 + k])),
        }),
        3 if b[9] == 0 && b[10] == 0 => ListId::Pan(crate::card::quickpass::PanToken(
            u64::from_be_bytes(std::array::from_fn(|k| b[1 + k])),
        )),
        _ => return None,
    };
    let reasons = if one_reason {
        ReasonSet::of(ListReason::from_u8(b[11])?)
    } else {
        ReasonSet::from_bits(b[11])?
    };
    (!reasons.is_empty()).then_some((id, reasons))
}

fn encode_state(list: &Blacklist, dates: Dates) -> Vec<u8> {
    let mut b = Vec::with_capacity(28 + list.len() * ENTRY_BYTES);
    b.extend_from_slice(&STATE_MAGIC);
    b.extend_from_slice(&list.version().to_be_bytes());
    b.extend_from_slice(&dates.issued_unix_s.to_be_bytes());
    b.extend_from_slice(&dates.expires_unix_s.to_be_bytes());
    b.extend_from_slice(&(list.len() as u32).to_be_bytes());
    for (id, reason) in list.iter() {
        encode_entry(&mut b, &id, reason);
    }
    let crc = CRC32.checksum(&b);
    b.extend_from_slice(&crc.to_be_bytes());
    b
}

/// Whether a state file's magic and CRC hold (without building the list).
fn state_intact(b: &[u8]) -> bool {
    if b.len() < 20
        || ![STATE_MAGIC, STATE_MAGIC_UNDATED]
            .iter()
            .any(|m| b[..4] == *m)
    {
        return false;
    }
    let (body, crc) = b.split_at(b.len() - 4);
    CRC32.checksum(body) == u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]])
}

fn side_file(kind: FileKind) -> SideFile {
    match kind {
        FileKind::BlacklistSnapshot | FileKind::BlacklistDelta => SideFile::Blacklist,
        FileKind::FareTable => SideFile::FareTable,
        FileKind::RideCodeKeys => SideFile::RideCodeKeys,
        FileKind::VerifiedCertSnapshot | FileKind::VerifiedCertDelta => SideFile::VerifiedCerts,
    }
}

fn encode_cert_set(set: &CertSet) -> Vec<u8> {
    let mut out = CERT_SET_MAGIC.to_vec();
    out.extend_from_slice(&set.version().to_be_bytes());
    out.extend_from_slice(&set.snapshot_payload());
    let crc = CRC32.checksum(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

fn decode_cert_set(b: &[u8]) -> Option<CertSet> {
    let (body, crc) = b.split_last_chunk::<4>()?;
    if CRC32.checksum(body) != u32::from_be_bytes(*crc) {
        return None;
    }
    let rest = body.strip_prefix(&CERT_SET_MAGIC)?;
    let (version, payload) = rest.split_first_chunk::<8>()?;
    CertSet::from_snapshot_payload(u64::from_be_bytes(*version), payload).ok()
}

/// The list and the dates of the signed file it came from (None under the older magics).
fn decode_state(b: &[u8]) -> Option<(Blacklist, Option<Dates>)> {
    let magic = b.get(..4)?;
    let dated = magic == STATE_MAGIC;
    let one_reason = magic == STATE_MAGIC_ONE_REASON;
    if !dated && !one_reason && magic != STATE_MAGIC_UNDATED {
        return None;
    }
    let head = if dated { 24 } else { 16 };
    if b.len() < head + 4 {
        return None;
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if CRC32.checksum(body) != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return None;
    }
    let be32 = |at: usize| u32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
    let version = u64::from_be_bytes(std::array::from_fn(|k| body[4 + k]));
    let dates = dated.then(|| Dates {
        issued_unix_s: be32(12),
        expires_unix_s: be32(16),
    });
    let n = be32(head - 4) as usize;
    let entries = &body[head..];
    if n.checked_mul(ENTRY_BYTES) != Some(entries.len()) {
        return None;
    }
    let entries = entries
        .chunks_exact(ENTRY_BYTES)
        .map(|e| decode_entry(e, one_reason))
        .collect::<Option<Vec<_>>>()?;
    Some((Blacklist::from_entries(version, entries), dates))
}

/// The validator's downlink folder.
pub struct DownlinkDir {
    dir: PathBuf,
    /// Where repairs are logged: the data folder (the journal's).
    data_dir: PathBuf,
}

const OPERATOR_FILE: &str = "operator.pub";
/// Second copy of the pinned key: a key cannot be fetched again from the station without
/// trusting it, so it is kept twice.
const OPERATOR_COPY_FILE: &str = "operator.pub.copy";
const BLACKLIST_FILE: &str = "blacklist.bin";
const FARES_FILE: &str = "fares.signed";
const KEYS_FILE: &str = "keys.signed";
/// The verified-certificate set held: [`CERT_SET_MAGIC`], version (8, big-endian), the
/// snapshot payload of [`crate::ride_code::cert_set`], CRC-32/ISCSI of everything before (4).
const CERT_SET_FILE: &str = "verified-certs.bin";
const CERT_SET_MAGIC: [u8; 4] = *b"FVC1";
/// Suffix of the last good file a new one replaced.
const PREV_SUFFIX: &str = ".prev";
/// Suffix a damaged file is moved to (kept for inspection, never read).
const DAMAGED_SUFFIX: &str = ".damaged";

/// What reading one copy of a file gave.
enum Copy<T> {
    Good(T),
    Missing,
    Damaged(String),
}

impl DownlinkDir {
    /// `data_dir/downlink` (the validator's data folder, its journal folder by default).
    pub fn new(data_dir: &Path) -> Self {
        DownlinkDir {
            dir: data_dir.join("downlink"),
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Pin the operator's public key (provisioning), in two copies.
    pub fn pin_operator_key(&self, key: &VerifyingKey) -> Result<(), DownlinkError> {
        let text = crate::upload::auth::to_hex(key.as_bytes());
        self.write_atomic(OPERATOR_FILE, text.as_bytes())?;
        self.write_atomic(OPERATOR_COPY_FILE, text.as_bytes())
    }

    fn read_key(&self, name: &str) -> Copy<VerifyingKey> {
        let text = match fs::read(self.dir.join(name)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Copy::Missing,
            Err(e) => return Copy::Damaged(format!("unreadable: {e}")),
        };
        std::str::from_utf8(&text)
            .ok()
            .and_then(crate::upload::auth::from_hex::<32>)
            .and_then(|b| VerifyingKey::from_bytes(&b).ok())
            .map_or_else(
                || Copy::Damaged(format!("{} bytes, not an Ed25519 key in hex", text.len())),
                Copy::Good,
            )
    }

    /// The pinned operator key. One damaged copy is rewritten from the other (reported);
    /// two copies that both parse but differ are decided by the signed files held (the
    /// key that verifies one of them); with no copy left, None: downlink files are refused
    /// until the key is pinned again, and the files already held stay as they are.
    pub fn operator_key(&self) -> Option<VerifyingKey> {
        let first = self.read_key(OPERATOR_FILE);
        let copy = self.read_key(OPERATOR_COPY_FILE);
        let repair = |bad: &str, what: &str, key: &VerifyingKey| {
            self.report(
                SideFile::OperatorKey,
                &format!("{bad}: {what}"),
                "rewritten from the other copy",
            );
            let text = crate::upload::auth::to_hex(key.as_bytes());
            if let Err(e) = self.write_atomic(bad, text.as_bytes()) {
                tracing::error!(error = %e, "downlink: operator key copy not rewritten");
            }
        };
        match (first, copy) {
            (Copy::Good(a), Copy::Good(b)) if a == b => Some(a),
            (Copy::Good(a), Copy::Good(b)) => {
                let held = |k: &VerifyingKey| {
                    [
                        (FARES_FILE, FileKind::FareTable),
                        (KEYS_FILE, FileKind::RideCodeKeys),
                    ]
                    .iter()
                    .any(|(name, kind)| {
                        fs::read(self.dir.join(name))
                            .is_ok_and(|f| signed::open(&f, *kind, k).is_ok())
                    })
                };
                match (held(&a), held(&b)) {
                    (true, false) => {
                        repair(OPERATOR_COPY_FILE, "differs from the first copy", &a);
                        Some(a)
                    }
                    (false, true) => {
                        repair(OPERATOR_FILE, "differs from the second copy", &b);
                        Some(b)
                    }
                    _ => {
                        self.report(
                            SideFile::OperatorKey,
                            "the two copies differ and no held file decides",
                            "no operator key: downlink files refused until it is pinned again",
                        );
                        None
                    }
                }
            }
            (Copy::Good(a), Copy::Missing) => {
                // Pinned before the second copy existed: make it, nothing was damaged.
                let text = crate::upload::auth::to_hex(a.as_bytes());
                let _ = self.write_atomic(OPERATOR_COPY_FILE, text.as_bytes());
                Some(a)
            }
            (Copy::Good(a), Copy::Damaged(what)) => {
                repair(OPERATOR_COPY_FILE, &what, &a);
                Some(a)
            }
            (Copy::Damaged(what), Copy::Good(b)) => {
                repair(OPERATOR_FILE, &what, &b);
                Some(b)
            }
            (Copy::Missing, Copy::Good(b)) => {
                repair(OPERATOR_FILE, "missing", &b);
                Some(b)
            }
            (Copy::Missing, Copy::Missing) => None,
            (Copy::Damaged(what), _) | (Copy::Missing, Copy::Damaged(what)) => {
                self.report(
                    SideFile::OperatorKey,
                    &format!("no readable copy: {what}"),
                    "no operator key: downlink files refused until it is pinned again",
                );
                self.set_aside(OPERATOR_FILE);
                self.set_aside(OPERATOR_COPY_FILE);
                None
            }
        }
    }

    fn report(&self, file: SideFile, problem: &str, fallback: &str) {
        crate::journal::repair::report(&self.data_dir, file, problem, fallback);
    }

    /// Move a damaged file out of the way (kept for inspection), so it is reported once.
    fn set_aside(&self, name: &str) {
        let from = self.dir.join(name);
        if from.exists() {
            let to = self.dir.join(format!("{name}{DAMAGED_SUFFIX}"));
            if let Err(e) = fs::rename(&from, &to) {
                tracing::error!(error = %e, file = %from.display(), "downlink: damaged file not set aside");
            }
        }
    }

    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), DownlinkError> {
        fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!("{name}.tmp"));
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.dir.join(name))?;
        fs::File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    /// Install `bytes` as `name`, keeping the file it replaces as `name.prev` when that one
    /// is good (`good`): the fallback if the new one is later found damaged.
    fn replace_keeping_last_good(
        &self,
        name: &str,
        bytes: &[u8],
        good: impl Fn(&[u8]) -> bool,
    ) -> Result<(), DownlinkError> {
        fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!("{name}.tmp"));
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        let path = self.dir.join(name);
        if fs::read(&path).is_ok_and(|b| good(&b)) {
            fs::rename(&path, self.dir.join(format!("{name}{PREV_SUFFIX}")))?;
        }
        fs::rename(&tmp, &path)?;
        fs::File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    /// Read `name` through `parse`; when it is missing or damaged, fall back to the last
    /// good one (`name.prev`), put it back in place and report the repair; when neither is
    /// good, set the damaged files aside, report, and return None (version 0: the station
    /// sends the file again in full at the next session).
    fn read_with_fallback<T>(
        &self,
        name: &str,
        file: SideFile,
        parse: impl Fn(&[u8]) -> Option<T>,
    ) -> Option<T> {
        let read = |n: &str| match fs::read(self.dir.join(n)) {
            Ok(b) => match parse(&b) {
                Some(t) => Copy::Good(t),
                None => Copy::Damaged(format!("{} bytes that do not check", b.len())),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Copy::Missing,
            Err(e) => Copy::Damaged(format!("unreadable: {e}")),
        };
        let what = match read(name) {
            Copy::Good(t) => return Some(t),
            Copy::Missing => "missing".to_string(),
            Copy::Damaged(w) => w,
        };
        let prev = format!("{name}{PREV_SUFFIX}");
        match read(&prev) {
            Copy::Good(t) => {
                self.report(
                    file,
                    &what,
                    "the last good file put back; newer versions come again from the depot",
                );
                self.set_aside(name);
                if let Err(e) = fs::copy(self.dir.join(&prev), self.dir.join(name)) {
                    tracing::error!(error = %e, "downlink: last good file not put back");
                }
                Some(t)
            }
            Copy::Missing if what == "missing" => None,
            _ => {
                self.report(
                    file,
                    &what,
                    "no good copy: version 0, the depot sends the file again in full",
                );
                self.set_aside(name);
                self.set_aside(&prev);
                None
            }
        }
    }

    /// The blacklist the validator holds: the last good one if the newest is damaged
    /// (reported), empty at version 0 if there is none (then the depot sends a snapshot).
    pub fn blacklist(&self) -> Blacklist {
        self.blacklist_dated().0
    }

    /// The blacklist held and the dates of the signed file it came from.
    pub fn blacklist_dated(&self) -> (Blacklist, Option<Dates>) {
        self.read_with_fallback(BLACKLIST_FILE, SideFile::Blacklist, decode_state)
            .unwrap_or_else(|| (Blacklist::empty(), None))
    }

    /// The verified-certificate set held (the last good one if the newest is damaged; empty,
    /// version 0, when none was installed).
    pub fn cert_set(&self) -> CertSet {
        self.read_with_fallback(CERT_SET_FILE, SideFile::VerifiedCerts, decode_cert_set)
            .unwrap_or_else(CertSet::empty)
    }

    fn save_blacklist(&self, list: &Blacklist, dates: Dates) -> Result<(), DownlinkError> {
        self.replace_keeping_last_good(BLACKLIST_FILE, &encode_state(list, dates), state_intact)
    }

    /// What the validator holds and whether its blacklist is older than `blacklist_age_s_max`
    /// at `now_unix_s` (or past its expiry, or of unknown age): freeze protection.
    pub fn status(&self, now_unix_s: i64, blacklist_age_s_max: u64) -> DownlinkStatus {
        let (list, dates) = self.blacklist_dated();
        let held = self.held_versions();
        let age =
            dates.map(|d| now_unix_s.saturating_sub(i64::from(d.issued_unix_s)).max(0) as u64);
        let stale = match (dates, age) {
            (Some(d), Some(age)) => age > blacklist_age_s_max || d.expired_at(now_unix_s),
            _ => true,
        };
        DownlinkStatus {
            blacklist_version: list.version(),
            blacklist_issued_unix_s: dates.map(|d| d.issued_unix_s),
            blacklist_expires_unix_s: dates.map(|d| d.expires_unix_s),
            blacklist_age_s: age,
            blacklist_stale: stale,
            fares_version: held.fares,
            keys_version: held.keys,
        }
    }

    fn signed_version(&self, name: &str, kind: FileKind) -> u64 {
        let Some(key) = self.operator_key() else {
            return 0;
        };
        self.read_with_fallback(name, side_file(kind), |b| {
            signed::open(b, kind, &key).ok().map(|o| o.header.version)
        })
        .unwrap_or(0)
    }

    /// The fare table the validator holds, checked again (the last good one if the newest
    /// is damaged).
    pub fn fare_table(&self) -> Option<(u64, FareTable)> {
        let key = self.operator_key()?;
        self.read_with_fallback(FARES_FILE, SideFile::FareTable, |b| {
            let o = signed::open(b, FileKind::FareTable, &key).ok()?;
            let t = FareTable::from_toml(std::str::from_utf8(o.payload).ok()?).ok()?;
            Some((o.header.version, t))
        })
    }

    /// The ride-code key file the validator holds (JSON text), checked again (the last good
    /// one if the newest is damaged).
    pub fn ride_code_keys(&self) -> Option<(u64, String)> {
        let key = self.operator_key()?;
        self.read_with_fallback(KEYS_FILE, SideFile::RideCodeKeys, |b| {
            let o = signed::open(b, FileKind::RideCodeKeys, &key).ok()?;
            Some((
                o.header.version,
                String::from_utf8(o.payload.to_vec()).ok()?,
            ))
        })
    }

    /// The fare table and blacklist a bus runs with: only what this folder holds, verified
    /// against the pinned operator key (the fare policy built into the program until a signed
    /// table is installed; an empty list at version 0 until a signed one is).
    pub fn bus_files(&self) -> (FareTable, Blacklist) {
        let fares = self
            .fare_table()
            .map_or_else(FareTable::default_policy, |(_, t)| t);
        (fares, self.blacklist())
    }

    /// Versions to report in the session hello.
    pub fn held_versions(&self) -> HeldVersions {
        HeldVersions {
            blacklist: self.blacklist().version(),
            fares: self.signed_version(FARES_FILE, FileKind::FareTable),
            keys: self.signed_version(KEYS_FILE, FileKind::RideCodeKeys),
            cert_set: self.cert_set().version(),
        }
    }

    /// Check a received file in full and, only if it passes, make it the one held: the
    /// operator's signature, its dates at `now_unix_s` (the validator's clock), a version not
    /// below the one held, and its content (for a delta, the version it starts from). The
    /// file is parsed once; its claims (dates, version) are checked before its signature, so
    /// an honest old file is refused without hashing it.
    pub fn install(&self, bytes: &[u8], now_unix_s: i64) -> Result<(FileKind, u64), DownlinkError> {
        let key = self.operator_key().ok_or(DownlinkError::NoOperatorKey)?;
        let unverified = signed::parse(bytes)?;
        let header = unverified.header;
        let (kind, file) = (header.kind, header.version);
        let dates = header.dates.ok_or(DownlinkError::Undated)?;
        if dates.expired_at(now_unix_s) {
            return Err(DownlinkError::Expired {
                expires_unix_s: dates.expires_unix_s,
            });
        }
        let rollback = |held: u64| {
            if file < held {
                Err(DownlinkError::Rollback {
                    kind: kind.as_str(),
                    held,
                    file,
                })
            } else {
                Ok(())
            }
        };
        let content = |e: &dyn std::fmt::Display| DownlinkError::Content(e.to_string());
        let version = match kind {
            FileKind::BlacklistSnapshot => {
                rollback(self.blacklist().version())?;
                let list = blacklist_file::open_snapshot(bytes.to_vec(), Some(&key))?;
                self.save_blacklist(&list, dates)?;
                list.version()
            }
            FileKind::BlacklistDelta => {
                // A delta starts from the version held and goes forward (checked on apply).
                let delta = blacklist_file::open_delta(bytes, &key)?;
                let next = self.blacklist().with_delta(&delta)?;
                self.save_blacklist(&next, dates)?;
                next.version()
            }
            FileKind::FareTable => {
                rollback(self.signed_version(FARES_FILE, kind))?;
                let o = unverified.verify(&key)?;
                let text = std::str::from_utf8(o.payload).map_err(|e| content(&e))?;
                FareTable::from_toml(text).map_err(|e| content(&e))?;
                self.replace_keeping_last_good(FARES_FILE, bytes, |b| {
                    signed::open(b, FileKind::FareTable, &key).is_ok()
                })?;
                o.header.version
            }
            FileKind::RideCodeKeys => {
                rollback(self.signed_version(KEYS_FILE, kind))?;
                let o = unverified.verify(&key)?;
                serde_json::from_slice::<serde_json::Value>(o.payload).map_err(|e| content(&e))?;
                self.replace_keeping_last_good(KEYS_FILE, bytes, |b| {
                    signed::open(b, FileKind::RideCodeKeys, &key).is_ok()
                })?;
                o.header.version
            }
            FileKind::VerifiedCertSnapshot | FileKind::VerifiedCertDelta => {
                // Older than the set held: refused before its signature is checked. Then a
                // snapshot only over an older set, a delta only from the version held.
                let held = self.cert_set();
                rollback(held.version())?;
                let next = held.apply(&unverified.verify(&key)?)?;
                self.replace_keeping_last_good(CERT_SET_FILE, &encode_cert_set(&next), |b| {
                    decode_cert_set(b).is_some()
                })?;
                next.version()
            }
        };
        Ok((kind, version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blacklist::{Change, ChangeOp};

    #[test]
    fn blacklist_state_round_trips_and_a_flipped_bit_is_caught() {
        let card = ListId::Card("37140000000000000009".parse().unwrap());
        let account = ListId::Account("2:1001".parse().unwrap());
        let mut list = Blacklist::from_entries(7, [(card, ListReason::Lost)]);
        list.apply(&Change {
            op: ChangeOp::Add,
            id: account,
            reason: ListReason::Arrears,
        });
        let dates = Dates::starting(1_800_000_000, 60);
        let b = encode_state(&list, dates);
        let (back, back_dates) = decode_state(&b).unwrap();
        assert_eq!(back_dates, Some(dates));
        assert_eq!(back.version(), 7);
        assert_eq!(back.get(&card), Some(ReasonSet::of(ListReason::Lost)));
        assert_eq!(back.get(&account), Some(ReasonSet::of(ListReason::Arrears)));
        for bit in 0..b.len() * 8 {
            let mut c = b.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_state(&c).is_none(), "bit {bit}");
        }
    }

    #[test]
    fn blacklist_state_keeps_every_reason_and_reads_the_one_reason_file() {
        let card = ListId::Card("37140000000000000009".parse().unwrap());
        let lost_replaced: ReasonSet = [ListReason::Lost, ListReason::Replaced]
            .into_iter()
            .collect();
        let list = Blacklist::from_entries(3, [(card, lost_replaced)]);
        let (back, _) = decode_state(&encode_state(&list, Dates::starting(1, 1))).unwrap();
        assert_eq!(back.get(&card), Some(lost_replaced));
        // The file as it was written before reason sets: FVBS, reason byte 3 = cancelled.
        let mut old = b"FVBS".to_vec();
        old.extend_from_slice(&5u64.to_be_bytes());
        old.extend_from_slice(&1u32.to_be_bytes());
        old.push(1);
        if let ListId::Card(c) = card {
            old.extend_from_slice(&c.0);
        }
        old.push(ListReason::Cancelled as u8);
        let crc = CRC32.checksum(&old);
        old.extend_from_slice(&crc.to_be_bytes());
        let (back, dates) = decode_state(&old).unwrap();
        assert_eq!(
            (back.version(), back.get(&card), dates),
            (5, Some(ReasonSet::of(ListReason::Cancelled)), None)
        );
    }
}

#[cfg(test)]
mod cert_set_tests {
    use super::*;
    use crate::ride_code::{cert_set, ChannelKeys};

    const NOW: i64 = 1_795_824_000;

    fn set(version: u64, n: u8) -> CertSet {
        let keys = ChannelKeys::empty();
        CertSet::from_digests(version, &keys, (0..n).map(|i| [i; 32]))
    }

    #[test]
    fn a_forged_or_stale_set_file_is_refused_and_the_last_good_one_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DownlinkDir::new(tmp.path());
        let key = signed::signing_key_from_seed([9; 32]);
        dir.pin_operator_key(&key.verifying_key()).unwrap();
        let dates = Dates::starting(NOW as u32 - 60, 86_400);
        assert_eq!(dir.cert_set().version(), 0);
        let v3 = set(3, 10);
        let snap = cert_set::snapshot_file(&v3, dates, &key);
        assert_eq!(
            dir.install(&snap, NOW).unwrap(),
            (FileKind::VerifiedCertSnapshot, 3)
        );
        assert_eq!(dir.cert_set(), v3);
        let v4 = set(4, 12);
        let delta = cert_set::delta_file(&v3.diff(&v4), dates, &key);
        // Forged: signed by another key; then altered after signing.
        let other = signed::signing_key_from_seed([8; 32]);
        let forged = cert_set::delta_file(&v3.diff(&v4), dates, &other);
        assert!(dir.install(&forged, NOW).is_err());
        let mut altered = delta.clone();
        let last = altered.len() - 1;
        altered[last] ^= 0x80;
        assert!(dir.install(&altered, NOW).is_err());
        assert_eq!(dir.cert_set(), v3, "the last good one is kept");
        assert_eq!(dir.install(&delta, NOW).unwrap().1, 4);
        assert_eq!(dir.cert_set(), v4);
        // Stale: the older snapshot again (refused as a rollback before its signature is
        // checked), the same version again, and a delta from a version no longer held.
        assert!(matches!(
            dir.install(&snap, NOW),
            Err(DownlinkError::Rollback {
                held: 4,
                file: 3,
                ..
            })
        ));
        let again = cert_set::snapshot_file(&v4, dates, &key);
        assert!(matches!(
            dir.install(&again, NOW),
            Err(DownlinkError::CertSet(CertSetError::Stale {
                current: 4,
                file: 4
            }))
        ));
        assert!(matches!(
            dir.install(&delta, NOW),
            Err(DownlinkError::CertSet(CertSetError::WrongBase { .. }))
        ));
        // Expired on arrival.
        let late = cert_set::snapshot_file(&set(5, 1), Dates::starting(1_000, 10), &key);
        assert!(dir.install(&late, NOW).is_err());
        assert_eq!(dir.cert_set(), v4, "the last good one is kept");
        // The held copy damaged on disk: the one before it is read.
        std::fs::write(dir.path().join(CERT_SET_FILE), b"FVC1 torn").unwrap();
        assert_eq!(dir.cert_set(), v3);
    }
}
