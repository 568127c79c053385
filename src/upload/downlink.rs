//! Downlink files: what the station sends a validator (blacklist snapshot or delta, fare
//! table, ride-code key file), each in the operator-signed container of [`crate::signed`]
//! (blacklist payloads as in [`crate::blacklist::file`]), and how the validator keeps them.
//!
//! ## On the validator
//!
//! `DIR/downlink/` holds `operator.pub` (the pinned operator key, hex), `fares.signed` and
//! `keys.signed` as received, and `blacklist.bin`: the list the validator built from the
//! signed snapshots and deltas it accepted, in its own checksummed format:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `FVB2` (`FVBS` before reason sets: still read) |
//! | 4 | 8 | version |
//! | 12 | 4 | entry count N |
//! | 16 | 12 × N | entries: tag (1 card, 2 account), id (10: card BCD, or channel (2) ‖ account (8)), reasons (1: the set's bits, 1 lost, 2 replaced, 4 cancelled, 8 arrears; under `FVBS` one reason, 1..=4) |
//! | 16+12N | 4 | CRC-32/ISCSI of everything before |
//!
//! Every received file is checked in full (structure, CRC, operator signature, content, and
//! for a delta its base version) before it replaces anything, and files are replaced
//! atomically (write, sync, rename): a forged or corrupted file is refused and the validator
//! keeps what it had.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crc::{Crc, CRC_32_ISCSI};
use ed25519_dalek::VerifyingKey;

use crate::blacklist::file::{self as blacklist_file, BlacklistFileError};
use crate::blacklist::Blacklist;
use crate::fare::FareTable;
pub use crate::signed::FileKind;
use crate::signed::{self, SignedError};
use crate::types::{AccountId, CardNo, ListId, ListReason, ReasonSet};

use super::frame::HeldVersions;

/// Largest downlink file a validator reassembles, bytes (a snapshot of 20 million entries
/// is about 150 MB).
pub const DOWNLINK_FILE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Changes above which the station sends a snapshot instead of a delta.
pub const DELTA_CHANGES_SENT_MAX: usize = 100_000;

const STATE_MAGIC: [u8; 4] = *b"FVB2";
/// The list file's magic before reason sets: one reason an entry.
const STATE_MAGIC_ONE_REASON: [u8; 4] = *b"FVBS";
const ENTRY_BYTES: usize = 12;
const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

#[derive(Debug, thiserror::Error)]
pub enum DownlinkError {
    #[error("downlink file: {0}")]
    Signed(#[from] SignedError),
    #[error("downlink blacklist: {0}")]
    Blacklist(#[from] BlacklistFileError),
    #[error("downlink file: no operator key pinned in the data folder")]
    NoOperatorKey,
    #[error("downlink file: bad content: {0}")]
    Content(String),
    #[error("downlink storage: {0}")]
    Io(#[from] std::io::Error),
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
        _ => return None,
    };
    let reasons = if one_reason {
        ReasonSet::of(ListReason::from_u8(b[11])?)
    } else {
        ReasonSet::from_bits(b[11])?
    };
    (!reasons.is_empty()).then_some((id, reasons))
}

fn encode_state(list: &Blacklist) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + list.len() * ENTRY_BYTES);
    b.extend_from_slice(&STATE_MAGIC);
    b.extend_from_slice(&list.version().to_be_bytes());
    b.extend_from_slice(&(list.len() as u32).to_be_bytes());
    for (id, reason) in list.iter() {
        encode_entry(&mut b, &id, reason);
    }
    let crc = CRC32.checksum(&b);
    b.extend_from_slice(&crc.to_be_bytes());
    b
}

fn decode_state(b: &[u8]) -> Option<Blacklist> {
    if b.len() < 20 || (b[..4] != STATE_MAGIC && b[..4] != STATE_MAGIC_ONE_REASON) {
        return None;
    }
    let one_reason = b[..4] == STATE_MAGIC_ONE_REASON;
    let (body, crc) = b.split_at(b.len() - 4);
    if CRC32.checksum(body) != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return None;
    }
    let version = u64::from_be_bytes(std::array::from_fn(|k| body[4 + k]));
    let n = u32::from_be_bytes([body[12], body[13], body[14], body[15]]) as usize;
    let entries = &body[16..];
    if n.checked_mul(ENTRY_BYTES) != Some(entries.len()) {
        return None;
    }
    let entries = entries
        .chunks_exact(ENTRY_BYTES)
        .map(|e| decode_entry(e, one_reason))
        .collect::<Option<Vec<_>>>()?;
    Some(Blacklist::from_entries(version, entries))
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
        decode_state(&b).unwrap_or_else(|| {
            tracing::warn!(dir = %self.dir.display(), "downlink: blacklist state unreadable");
            Blacklist::empty()
        })
    }

    fn save_blacklist(&self, list: &Blacklist) -> Result<(), DownlinkError> {
        self.write_atomic(BLACKLIST_FILE, &encode_state(list))
    }

    fn signed_version(&self, name: &str, kind: FileKind) -> u64 {
        let (Some(key), Ok(b)) = (self.operator_key(), fs::read(self.dir.join(name))) else {
            return 0;
        };
        signed::open(&b, kind, &key).map_or(0, |o| o.header.version)
    }

    /// The fare table the validator holds, checked again.
    pub fn fare_table(&self) -> Option<(u64, FareTable)> {
        let key = self.operator_key()?;
        let b = fs::read(self.dir.join(FARES_FILE)).ok()?;
        let o = signed::open(&b, FileKind::FareTable, &key).ok()?;
        let t = FareTable::from_toml(std::str::from_utf8(o.payload).ok()?).ok()?;
        Some((o.header.version, t))
    }

    /// The ride-code key file the validator holds (JSON text), checked again.
    pub fn ride_code_keys(&self) -> Option<(u64, String)> {
        let key = self.operator_key()?;
        let b = fs::read(self.dir.join(KEYS_FILE)).ok()?;
        let o = signed::open(&b, FileKind::RideCodeKeys, &key).ok()?;
        Some((
            o.header.version,
            String::from_utf8(o.payload.to_vec()).ok()?,
        ))
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
        let kind = signed::parse(bytes)?.header.kind;
        let content = |e: &dyn std::fmt::Display| DownlinkError::Content(e.to_string());
        let version = match kind {
            FileKind::BlacklistSnapshot => {
                let list = blacklist_file::open_snapshot(bytes.to_vec(), Some(&key))?;
                self.save_blacklist(&list)?;
                list.version()
            }
            FileKind::BlacklistDelta => {
                let delta = blacklist_file::open_delta(bytes, &key)?;
                let next = self.blacklist().with_delta(&delta)?;
                self.save_blacklist(&next)?;
                next.version()
            }
            FileKind::FareTable => {
                let o = signed::open(bytes, kind, &key)?;
                let text = std::str::from_utf8(o.payload).map_err(|e| content(&e))?;
                FareTable::from_toml(text).map_err(|e| content(&e))?;
                self.write_atomic(FARES_FILE, bytes)?;
                o.header.version
            }
            FileKind::RideCodeKeys => {
                let o = signed::open(bytes, kind, &key)?;
                serde_json::from_slice::<serde_json::Value>(o.payload).map_err(|e| content(&e))?;
                self.write_atomic(KEYS_FILE, bytes)?;
                o.header.version
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
        let b = encode_state(&list);
        let back = decode_state(&b).unwrap();
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
        let back = decode_state(&encode_state(&list)).unwrap();
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
        let back = decode_state(&old).unwrap();
        assert_eq!(
            (back.version(), back.get(&card)),
            (5, Some(ReasonSet::of(ListReason::Cancelled)))
        );
    }
}
