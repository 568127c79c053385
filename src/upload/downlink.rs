//! Downlink files: what the station sends a validator (blacklist snapshot or delta, fare
//! table, ride-code key file), each signed by the operator, and how the validator keeps them.
//!
//! ## Container (minimal; `crate::signed` replaces it once merged)
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `FVDL` |
//! | 4 | 1 | container version, 1 |
//! | 5 | 1 | kind ([`FileKind`]) |
//! | 6 | 8 | content version (a delta's target version) |
//! | 14 | 8 | base version (a delta's starting version; else 0) |
//! | 22 | 4 | payload length N, at most [`DOWNLINK_FILE_BYTES_MAX`] |
//! | 26 | N | payload |
//! | 26+N | 4 | CRC-32/ISCSI of bytes 0..26+N |
//! | 30+N | 64 | Ed25519 signature of the operator over bytes 0..30+N, prefixed by a context |
//!
//! Blacklist payloads: a snapshot is a count (4) and entries of 12 bytes: tag (1: card,
//! 2: account), id (10: card number BCD, or channel (2) ‖ account (8)), reason (1). A delta is
//! a count (4) and changes of 13 bytes: op (1: add, 2: remove), then an entry.
//!
//! ## On the validator
//!
//! `DIR/downlink/` holds `operator.pub` (the pinned operator key, hex), `blacklist.bin` (the
//! validator's blacklist: magic `FVBS`, version (8), snapshot payload, CRC-32), and
//! `fares.signed` and `keys.signed` as received. Every file is checked in full before it
//! replaces anything, and replaced atomically (write, sync, rename): a forged or corrupted
//! file is refused and the validator keeps what it had.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crc::{Crc, CRC_32_ISCSI};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::blacklist::{Blacklist, Change, ChangeOp};
use crate::fare::FareTable;
use crate::types::{AccountId, CardNo, ListId, ListReason};

use super::frame::HeldVersions;

/// Largest downlink file, bytes (a snapshot of four million entries).
pub const DOWNLINK_FILE_BYTES_MAX: usize = 48 * 1024 * 1024;
/// Changes above which the station sends a snapshot instead of a delta.
pub const DELTA_CHANGES_MAX: usize = 100_000;

const MAGIC: [u8; 4] = *b"FVDL";
const CONTAINER_VERSION: u8 = 1;
const HEADER_BYTES: usize = 26;
const SIGNATURE_BYTES: usize = 64;
const SIGNING_CONTEXT: &[u8] = b"fare-validator downlink v1\0";
const STATE_MAGIC: [u8; 4] = *b"FVBS";
const ENTRY_BYTES: usize = 12;
const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FileKind {
    BlacklistSnapshot = 1,
    BlacklistDelta = 2,
    FareTable = 3,
    RideCodeKeys = 4,
}

impl FileKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        [
            FileKind::BlacklistSnapshot,
            FileKind::BlacklistDelta,
            FileKind::FareTable,
            FileKind::RideCodeKeys,
        ]
        .into_iter()
        .find(|k| *k as u8 == v)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DownlinkError {
    #[error("downlink file: too short or bad length")]
    Length,
    #[error("downlink file: not a downlink file (magic or container version)")]
    Magic,
    #[error("downlink file: kind {got}, expected {expected:?}")]
    Kind { got: u8, expected: FileKind },
    #[error("downlink file: checksum does not match")]
    Crc,
    #[error("downlink file: operator signature does not verify")]
    Signature,
    #[error("downlink file: no operator key pinned in the data folder")]
    NoOperatorKey,
    #[error("downlink file: bad content: {0}")]
    Content(String),
    #[error("downlink file: delta from version {base} does not apply to version {held}")]
    Base { base: u64, held: u64 },
    #[error("downlink storage: {0}")]
    Io(#[from] std::io::Error),
}

/// A file that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened<'a> {
    pub kind: FileKind,
    pub version: u64,
    pub base_version: u64,
    pub payload: &'a [u8],
}

/// Seal a payload for validators.
pub fn seal(
    kind: FileKind,
    version: u64,
    base_version: u64,
    payload: &[u8],
    key: &SigningKey,
) -> Vec<u8> {
    assert!(payload.len() <= DOWNLINK_FILE_BYTES_MAX, "downlink payload");
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len() + 4 + SIGNATURE_BYTES);
    out.extend_from_slice(&MAGIC);
    out.push(CONTAINER_VERSION);
    out.push(kind as u8);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&base_version.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    let crc = CRC32.checksum(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    let sig = key.sign(&[SIGNING_CONTEXT, &out].concat());
    out.extend_from_slice(&sig.to_bytes());
    out
}

/// Check magic, kind, length, CRC and signature, in that order.
pub fn open<'a>(
    bytes: &'a [u8],
    expected: &[FileKind],
    key: &VerifyingKey,
) -> Result<Opened<'a>, DownlinkError> {
    if bytes.len() < HEADER_BYTES + 4 + SIGNATURE_BYTES {
        return Err(DownlinkError::Length);
    }
    if bytes[..4] != MAGIC || bytes[4] != CONTAINER_VERSION {
        return Err(DownlinkError::Magic);
    }
    let kind = FileKind::from_u8(bytes[5])
        .filter(|k| expected.contains(k))
        .ok_or(DownlinkError::Kind {
            got: bytes[5],
            expected: expected.first().copied().unwrap_or(FileKind::FareTable),
        })?;
    let be64 = |i: usize| u64::from_be_bytes(std::array::from_fn(|k| bytes[i + k]));
    let len = u32::from_be_bytes([bytes[22], bytes[23], bytes[24], bytes[25]]) as usize;
    if len > DOWNLINK_FILE_BYTES_MAX || bytes.len() != HEADER_BYTES + len + 4 + SIGNATURE_BYTES {
        return Err(DownlinkError::Length);
    }
    let signed_end = HEADER_BYTES + len + 4;
    let crc_at = HEADER_BYTES + len;
    let crc = u32::from_be_bytes(std::array::from_fn(|k| bytes[crc_at + k]));
    if CRC32.checksum(&bytes[..crc_at]) != crc {
        return Err(DownlinkError::Crc);
    }
    let sig = Signature::from_slice(&bytes[signed_end..]).map_err(|_| DownlinkError::Signature)?;
    key.verify(&[SIGNING_CONTEXT, &bytes[..signed_end]].concat(), &sig)
        .map_err(|_| DownlinkError::Signature)?;
    Ok(Opened {
        kind,
        version: be64(6),
        base_version: be64(14),
        payload: &bytes[HEADER_BYTES..crc_at],
    })
}

fn encode_entry(out: &mut Vec<u8>, id: &ListId, reason: ListReason) {
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
    }
    out.push(reason as u8);
}

fn decode_entry(b: &[u8]) -> Result<(ListId, ListReason), DownlinkError> {
    let bad = |w: &str| DownlinkError::Content(w.to_string());
    let id = match b[0] {
        1 => ListId::Card(
            CardNo::from_bcd(std::array::from_fn(|k| b[1 + k])).map_err(|_| bad("card"))?,
        ),
        2 => ListId::Account(AccountId {
            channel: u16::from_be_bytes([b[1], b[2]]),
            account: u64::from_be_bytes(std::array::from_fn(|k| b[3 + k])),
        }),
        _ => return Err(bad("entry tag")),
    };
    let reason = ListReason::from_u8(b[11]).ok_or_else(|| bad("reason"))?;
    Ok((id, reason))
}

pub fn snapshot_payload(list: &Blacklist) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + list.len() * ENTRY_BYTES);
    out.extend_from_slice(&(list.len() as u32).to_be_bytes());
    for (id, reason) in list.iter() {
        encode_entry(&mut out, &id, reason);
    }
    out
}

pub fn parse_snapshot(version: u64, p: &[u8]) -> Result<Blacklist, DownlinkError> {
    let (n, rest) = count_prefix(p, ENTRY_BYTES)?;
    let entries = rest
        .chunks_exact(ENTRY_BYTES)
        .take(n)
        .map(decode_entry)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Blacklist::from_entries(version, entries))
}

pub fn delta_payload(changes: &[Change]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + changes.len() * (ENTRY_BYTES + 1));
    out.extend_from_slice(&(changes.len() as u32).to_be_bytes());
    for c in changes {
        out.push(match c.op {
            ChangeOp::Add => 1,
            ChangeOp::Remove => 2,
        });
        encode_entry(&mut out, &c.id, c.reason);
    }
    out
}

pub fn parse_delta(p: &[u8]) -> Result<Vec<Change>, DownlinkError> {
    let (n, rest) = count_prefix(p, ENTRY_BYTES + 1)?;
    rest.chunks_exact(ENTRY_BYTES + 1)
        .take(n)
        .map(|c| {
            let op = match c[0] {
                1 => ChangeOp::Add,
                2 => ChangeOp::Remove,
                _ => return Err(DownlinkError::Content("change op".into())),
            };
            let (id, reason) = decode_entry(&c[1..])?;
            Ok(Change { op, id, reason })
        })
        .collect()
}

fn count_prefix(p: &[u8], item: usize) -> Result<(usize, &[u8]), DownlinkError> {
    let n = p
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or(DownlinkError::Length)?;
    let rest = &p[4..];
    if n.checked_mul(item) != Some(rest.len()) {
        return Err(DownlinkError::Length);
    }
    Ok((n, rest))
}

/// The validator's downlink folder.
pub struct DownlinkDir {
    dir: PathBuf,
}

const OPERATOR_FILE: &str = "operator.pub";
const BLACKLIST_FILE: &str = "blacklist.bin";
const FARES_FILE: &str = "fares.signed";
const KEYS_FILE: &str = "keys.signed";

impl DownlinkDir {
    /// `data_dir/downlink` (the validator's data folder, its journal folder by default).
    pub fn new(data_dir: &Path) -> Self {
        DownlinkDir {
            dir: data_dir.join("downlink"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Pin the operator's public key (provisioning).
    pub fn pin_operator_key(&self, key: &VerifyingKey) -> Result<(), DownlinkError> {
        self.write_atomic(
            OPERATOR_FILE,
            crate::upload::auth::to_hex(key.as_bytes()).as_bytes(),
        )
    }

    pub fn operator_key(&self) -> Option<VerifyingKey> {
        let text = fs::read_to_string(self.dir.join(OPERATOR_FILE)).ok()?;
        let b = crate::upload::auth::from_hex::<32>(&text)?;
        VerifyingKey::from_bytes(&b).ok()
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

    /// The blacklist the validator holds (empty at version 0 if none or unreadable).
    pub fn blacklist(&self) -> Blacklist {
        let Ok(b) = fs::read(self.dir.join(BLACKLIST_FILE)) else {
            return Blacklist::empty();
        };
        let parsed = (|| {
            if b.len() < 16 || b[..4] != STATE_MAGIC {
                return None;
            }
            let (body, crc) = b.split_at(b.len() - 4);
            if CRC32.checksum(body) != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
                return None;
            }
            let version = u64::from_be_bytes(std::array::from_fn(|k| body[4 + k]));
            parse_snapshot(version, &body[12..]).ok()
        })();
        parsed.unwrap_or_else(|| {
            tracing::warn!(dir = %self.dir.display(), "downlink: blacklist state unreadable");
            Blacklist::empty()
        })
    }

    fn save_blacklist(&self, list: &Blacklist) -> Result<(), DownlinkError> {
        let mut b = STATE_MAGIC.to_vec();
        b.extend_from_slice(&list.version().to_be_bytes());
        b.extend_from_slice(&snapshot_payload(list));
        let crc = CRC32.checksum(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        self.write_atomic(BLACKLIST_FILE, &b)
    }

    fn signed_version(&self, name: &str, kind: FileKind) -> u64 {
        let (Some(key), Ok(b)) = (self.operator_key(), fs::read(self.dir.join(name))) else {
            return 0;
        };
        open(&b, &[kind], &key).map_or(0, |o| o.version)
    }

    /// The fare table the validator holds, checked again.
    pub fn fare_table(&self) -> Option<(u64, FareTable)> {
        let key = self.operator_key()?;
        let b = fs::read(self.dir.join(FARES_FILE)).ok()?;
        let o = open(&b, &[FileKind::FareTable], &key).ok()?;
        let t = FareTable::from_toml(std::str::from_utf8(o.payload).ok()?).ok()?;
        Some((o.version, t))
    }

    /// The ride-code key file the validator holds (JSON text), checked again.
    pub fn ride_code_keys(&self) -> Option<(u64, String)> {
        let key = self.operator_key()?;
        let b = fs::read(self.dir.join(KEYS_FILE)).ok()?;
        let o = open(&b, &[FileKind::RideCodeKeys], &key).ok()?;
        Some((o.version, String::from_utf8(o.payload.to_vec()).ok()?))
    }

    /// Versions to report in the session hello.
    pub fn held_versions(&self) -> HeldVersions {
        HeldVersions {
            blacklist: self.blacklist().version(),
            fares: self.signed_version(FARES_FILE, FileKind::FareTable),
            keys: self.signed_version(KEYS_FILE, FileKind::RideCodeKeys),
        }
    }

    /// Check a received file in full and, only if it passes, make it the one held.
    pub fn install(&self, bytes: &[u8]) -> Result<(FileKind, u64), DownlinkError> {
        let key = self.operator_key().ok_or(DownlinkError::NoOperatorKey)?;
        use FileKind::*;
        let o = open(
            bytes,
            &[BlacklistSnapshot, BlacklistDelta, FareTable, RideCodeKeys],
            &key,
        )?;
        let content = |e: &dyn std::fmt::Display| DownlinkError::Content(e.to_string());
        match o.kind {
            BlacklistSnapshot => self.save_blacklist(&parse_snapshot(o.version, o.payload)?)?,
            BlacklistDelta => {
                let held = self.blacklist();
                if held.version() != o.base_version || o.version < o.base_version {
                    return Err(DownlinkError::Base {
                        base: o.base_version,
                        held: held.version(),
                    });
                }
                let mut next = Blacklist::from_entries(o.version, held.iter());
                for c in parse_delta(o.payload)? {
                    next.apply(&c);
                }
                self.save_blacklist(&next)?;
            }
            FareTable => {
                let text = std::str::from_utf8(o.payload).map_err(|e| content(&e))?;
                crate::fare::FareTable::from_toml(text).map_err(|e| content(&e))?;
                self.write_atomic(FARES_FILE, bytes)?;
            }
            RideCodeKeys => {
                serde_json::from_slice::<serde_json::Value>(o.payload).map_err(|e| content(&e))?;
                self.write_atomic(KEYS_FILE, bytes)?;
            }
        }
        Ok((o.kind, o.version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_bit_flip_or_other_key_is_refused() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let f = seal(FileKind::FareTable, 2, 0, b"abc", &key);
        let o = open(&f, &[FileKind::FareTable], &key.verifying_key()).unwrap();
        assert_eq!((o.version, o.payload), (2, &b"abc"[..]));
        for bit in 0..f.len() * 8 {
            let mut c = f.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(open(&c, &[FileKind::FareTable], &key.verifying_key()).is_err());
        }
        let other = SigningKey::from_bytes(&[6; 32]).verifying_key();
        assert!(matches!(
            open(&f, &[FileKind::FareTable], &other),
            Err(DownlinkError::Signature)
        ));
    }
}
