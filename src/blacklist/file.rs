//! Blacklist files: signed snapshots and deltas (inside the [`crate::signed`] container),
//! replay.md's BLACKLIST.csv, and the loader that takes either.
//!
//! # Reason sets and format versions
//!
//! An id is listed for a set of reasons. Files of format 2 and later (the container's format
//! field, see [`crate::signed`]; format 3 is written) carry the set; format 1 files, from
//! before sets, are still read, as one reason an entry, and never written:
//!
//! | file | format 2 and later | format 1 (read only) |
//! | --- | --- | --- |
//! | snapshot | each entry's reason set, as its 4 bits or, where a table holds at most 8 distinct sets, its place in the table's palette (0 to 3 bits; [`super::lines`]) | one reason, a 2-bit code: converted into a new base when opened |
//! | delta | an add adds its reason to the entry's set | an add set the entry to its one reason: read as removes of the three other reasons, then the add |
//!
//! # Snapshot payload (kind 1, `base_version` 0)
//!
//! The card table then the account table, each as in [`super::lines`]'s byte table, and
//! nothing after. A validator keeps the whole file in memory and looks entries up in place.
//!
//! # Delta payload (kind 2, `base_version` n → `version` m > n)
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | count of changes, at most [`DELTA_CHANGES_MAX`] |
//! | 8 + 16·i | 1 | op: 1 add, 2 remove |
//! | +1 | 1 | kind: 1 card, 2 account, 3 pan (the keyed token of a QuickPass PAN) |
//! | +2 | 1 | reason: 1 lost, 2 replaced, 3 cancelled, 4 arrears (an add adds it, a remove lifts only it) |
//! | +3 | 1 | reserved, 0 |
//! | +4 | 12 | card: 10 BCD bytes then 2 zero bytes; account: u16 channel, u64 account, 2 zero bytes; pan: u64 token, 4 zero bytes |
//!
//! Changes apply in order. A delta applies only to the list at exactly `base_version`. An id
//! with several reasons takes one add a reason.

use std::path::Path;

use ed25519_dalek::{SigningKey, VerifyingKey};

use super::aligned::AlignedBytes;
use super::packed::{Coding, TableError};
use super::{parse_csv, Base, Blacklist, Change, ChangeOp, CsvError};
use crate::signed::{self, FileKind, SignedError};
use crate::types::{AccountId, CardNo, ListId, ListReason, ReasonSet};

/// Most changes one delta may carry (a day's changes for a province are far fewer).
pub const DELTA_CHANGES_MAX: u64 = 10_000_000;
const DELTA_COUNT_LEN: usize = 8;
const DELTA_RECORD_LEN: usize = 16;

/// Why a blacklist file was refused. The list in use stays as it was.
#[derive(Debug, thiserror::Error)]
pub enum BlacklistFileError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Signed(#[from] SignedError),
    #[error("snapshot table: {0}")]
    Table(#[from] TableError),
    #[error("snapshot payload: {0}")]
    Payload(&'static str),
    #[error("delta change {index}: {what}")]
    Change { index: u64, what: &'static str },
    #[error("delta payload: {0}")]
    DeltaLength(&'static str),
    #[error(transparent)]
    Csv(#[from] CsvError),
    #[error("blacklist CSV is not UTF-8")]
    NotUtf8,
    #[error("delta starts from version {from}, but the list is at version {current}")]
    WrongBase { current: u64, from: u64 },
    #[error("delta goes from version {from} to {to}: not forward")]
    NotForward { from: u64, to: u64 },
    #[error("snapshot version {file} is older than the list in use ({current})")]
    Stale { current: u64, file: u64 },
}

/// The changes from one version to a later one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delta {
    pub from_version: u64,
    pub to_version: u64,
    pub changes: Vec<Change>,
}

/// How the tables of a snapshot of container format `format` carry reasons.
fn snapshot_coding(format: u16) -> Coding {
    if format >= signed::FORMAT_VERSION_REASON_SETS {
        Coding::Sets
    } else {
        Coding::OneReason
    }
}

/// A signed snapshot file of `list` at its version.
pub fn snapshot_file(list: &Blacklist, key: &SigningKey) -> Vec<u8> {
    signed::seal(
        FileKind::BlacklistSnapshot,
        list.version(),
        0,
        &list.snapshot_payload(),
        key,
    )
}

/// Open a snapshot file: structure, CRC, then the operator signature when a key is given (a
/// validator always gives one; without, the signature is not checked and a warning is logged).
/// The bytes become the list's base as they are: nothing is rebuilt.
pub fn open_snapshot(
    bytes: impl Into<AlignedBytes>,
    key: Option<&VerifyingKey>,
) -> Result<Blacklist, BlacklistFileError> {
    let bytes = bytes.into();
    let header = {
        let file = signed::parse(&bytes)?.expect_kind(FileKind::BlacklistSnapshot)?;
        match key {
            Some(k) => file.verify(k)?.header,
            None => {
                tracing::warn!(
                    "blacklist snapshot opened without an operator key: signature not checked"
                );
                file.header
            }
        }
    };
    let base = Base::parse(bytes, signed::HEADER_LEN, snapshot_coding(header.format))?;
    Ok(Blacklist::from_base(header.version, base))
}

/// Fuzz entry point: a snapshot's structure and tables, no signature.
pub fn parse_snapshot_unverified(bytes: &[u8]) -> Result<Blacklist, BlacklistFileError> {
    let file = signed::parse(bytes)?.expect_kind(FileKind::BlacklistSnapshot)?;
    let header = file.header;
    Ok(Blacklist::from_base(
        header.version,
        Base::parse(
            AlignedBytes::from(bytes),
            signed::HEADER_LEN,
            snapshot_coding(header.format),
        )?,
    ))
}

/// A signed delta file.
pub fn delta_file(delta: &Delta, key: &SigningKey) -> Vec<u8> {
    let payload = delta_payload(delta);
    signed::seal(
        FileKind::BlacklistDelta,
        delta.to_version,
        delta.from_version,
        &payload,
        key,
    )
}

/// The payload of a delta file (what the operator signs, [`crate::signing`]).
pub fn delta_payload(delta: &Delta) -> Vec<u8> {
    let mut payload = Vec::with_capacity(DELTA_COUNT_LEN + DELTA_RECORD_LEN * delta.changes.len());
    payload.extend_from_slice(&(delta.changes.len() as u64).to_le_bytes());
    for c in &delta.changes {
        payload.extend_from_slice(&encode_change(c));
    }
    payload
}

/// Open a delta file: structure, CRC, signature, then every change.
pub fn open_delta(bytes: &[u8], key: &VerifyingKey) -> Result<Delta, BlacklistFileError> {
    let file = signed::open(bytes, FileKind::BlacklistDelta, key)?;
    let h = file.header;
    parse_delta_payload_of_format(file.payload, h.base_version, h.version, h.format)
}

/// Fuzz entry point: a delta's payload (of reason sets, as written now).
pub fn parse_delta_payload(
    payload: &[u8],
    from_version: u64,
    to_version: u64,
) -> Result<Delta, BlacklistFileError> {
    parse_delta_payload_of_format(payload, from_version, to_version, signed::FORMAT_VERSION)
}

/// A delta's payload in container format `format`: a format 1 add, which set the entry to
/// its one reason, becomes removes of the other reasons then the add (see the module doc).
pub fn parse_delta_payload_of_format(
    payload: &[u8],
    from_version: u64,
    to_version: u64,
    format: u16,
) -> Result<Delta, BlacklistFileError> {
    if to_version <= from_version {
        return Err(BlacklistFileError::NotForward {
            from: from_version,
            to: to_version,
        });
    }
    let head = payload
        .get(..DELTA_COUNT_LEN)
        .ok_or(BlacklistFileError::DeltaLength("no change count"))?;
    let mut c = [0u8; 8];
    c.copy_from_slice(head);
    let count = u64::from_le_bytes(c);
    if count > DELTA_CHANGES_MAX {
        return Err(BlacklistFileError::DeltaLength("too many changes"));
    }
    let records = &payload[DELTA_COUNT_LEN..];
    if records.len() as u64 != count * DELTA_RECORD_LEN as u64 {
        return Err(BlacklistFileError::DeltaLength(
            "length does not match the change count",
        ));
    }
    let one_reason = format < signed::FORMAT_VERSION_REASON_SETS;
    let mut changes = Vec::with_capacity(records.len() / DELTA_RECORD_LEN);
    for (i, r) in records.chunks_exact(DELTA_RECORD_LEN).enumerate() {
        let change = decode_change(r).map_err(|what| BlacklistFileError::Change {
            index: i as u64,
            what,
        })?;
        if one_reason && change.op == ChangeOp::Add {
            changes.extend(
                ListReason::ALL
                    .into_iter()
                    .filter(|r| *r != change.reason)
                    .map(|reason| Change {
                        op: ChangeOp::Remove,
                        id: change.id,
                        reason,
                    }),
            );
        }
        changes.push(change);
    }
    Ok(Delta {
        from_version,
        to_version,
        changes,
    })
}

fn encode_change(c: &Change) -> [u8; DELTA_RECORD_LEN] {
    let mut r = [0u8; DELTA_RECORD_LEN];
    r[0] = match c.op {
        ChangeOp::Add => 1,
        ChangeOp::Remove => 2,
    };
    r[2] = c.reason as u8;
    match c.id {
        ListId::Card(card) => {
            r[1] = 1;
            r[4..14].copy_from_slice(&card.0);
        }
        ListId::Account(a) => {
            r[1] = 2;
            r[4..6].copy_from_slice(&a.channel.to_le_bytes());
            r[6..14].copy_from_slice(&a.account.to_le_bytes());
        }
        ListId::Pan(t) => {
            r[1] = 3;
            r[4..12].copy_from_slice(&t.0.to_le_bytes());
        }
    }
    r
}

fn decode_change(r: &[u8]) -> Result<Change, &'static str> {
    let op = match r[0] {
        1 => ChangeOp::Add,
        2 => ChangeOp::Remove,
        _ => return Err("op must be 1 (add) or 2 (remove)"),
    };
    let reason = ListReason::from_u8(r[2]).ok_or("unknown reason")?;
    if r[3] != 0 || r[14] != 0 || r[15] != 0 {
        return Err("reserved bytes not zero");
    }
    let id = match r[1] {
        1 => {
            let mut bcd = [0u8; 10];
            bcd.copy_from_slice(&r[4..14]);
            ListId::Card(CardNo::from_bcd(bcd).map_err(|_| "card number is not BCD")?)
        }
        2 => {
            let channel = u16::from_le_bytes([r[4], r[5]]);
            let mut a = [0u8; 8];
            a.copy_from_slice(&r[6..14]);
            ListId::Account(AccountId {
                channel,
                account: u64::from_le_bytes(a),
            })
        }
        3 => {
            if r[12] != 0 || r[13] != 0 {
                return Err("reserved bytes not zero");
            }
            let mut t = [0u8; 8];
            t.copy_from_slice(&r[4..12]);
            ListId::Pan(crate::card::quickpass::PanToken(u64::from_le_bytes(t)))
        }
        _ => return Err("kind must be 1 (card), 2 (account) or 3 (pan)"),
    };
    Ok(Change { op, id, reason })
}

impl Blacklist {
    /// The list after `delta`, or why not: the delta must start from this list's version.
    /// `self` is untouched; the result shares its base.
    pub fn with_delta(&self, delta: &Delta) -> Result<Blacklist, BlacklistFileError> {
        if delta.from_version != self.version() {
            return Err(BlacklistFileError::WrongBase {
                current: self.version(),
                from: delta.from_version,
            });
        }
        if delta.to_version <= delta.from_version {
            return Err(BlacklistFileError::NotForward {
                from: delta.from_version,
                to: delta.to_version,
            });
        }
        let mut next = self.clone();
        next.apply_all(&delta.changes);
        next.set_version(delta.to_version);
        Ok(next)
    }

    /// The delta that turns `self` into `new`: for each id, a remove of every reason it
    /// loses and an add of every reason it gains.
    pub fn diff(&self, new: &Blacklist) -> Delta {
        let old: std::collections::HashMap<ListId, ReasonSet> = self.iter().collect();
        let mut changes = Vec::new();
        let mut seen = std::collections::HashSet::with_capacity(new.len());
        let mut push = |op, id, reasons: ReasonSet| {
            changes.extend(reasons.iter().map(|reason| Change { op, id, reason }));
        };
        for (id, reasons) in new.iter() {
            seen.insert(id);
            let before = old.get(&id).copied().unwrap_or(ReasonSet::EMPTY);
            push(ChangeOp::Remove, id, before.minus(reasons));
            push(ChangeOp::Add, id, reasons.minus(before));
        }
        for (id, reasons) in self.iter() {
            if !seen.contains(&id) {
                push(ChangeOp::Remove, id, reasons);
            }
        }
        Delta {
            from_version: self.version(),
            to_version: new.version(),
            changes,
        }
    }
}

/// Read a blacklist for `replay --blacklist` and the commands: replay.md's CSV (header
/// `kind,id,reason`, version 0) or a signed snapshot (told apart by its magic). A snapshot's
/// signature is checked when `operator_public_key` is given.
pub fn load_blacklist_file(
    path: &Path,
    operator_public_key: Option<&VerifyingKey>,
) -> Result<Blacklist, BlacklistFileError> {
    let bytes = AlignedBytes::read_file(path).map_err(|source| BlacklistFileError::Io {
        path: path.display().to_string(),
        source,
    })?;
    if signed::has_magic(&bytes) {
        return open_snapshot(bytes, operator_public_key);
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| BlacklistFileError::NotUtf8)?;
    Ok(Blacklist::from_entries(0, parse_csv(text)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        signed::signing_key_from_seed([9; 32])
    }

    fn sample() -> Blacklist {
        Blacklist::from_entries(
            4,
            [
                (
                    ListId::Card("37140000000000000001".parse().unwrap()),
                    ListReason::Lost,
                ),
                (
                    ListId::Card("37142400000000000002".parse().unwrap()),
                    ListReason::Replaced,
                ),
                (
                    ListId::Account(AccountId {
                        channel: 3,
                        account: u64::MAX,
                    }),
                    ListReason::Arrears,
                ),
                // QuickPass deny-list entries share the card table, above every card number.
                (
                    ListId::Pan(crate::card::quickpass::PanToken(u64::MAX)),
                    ListReason::Arrears,
                ),
                (
                    ListId::parse("pan", "6214830000000001").unwrap(),
                    ListReason::Lost,
                ),
            ],
        )
    }

    #[test]
    fn snapshot_round_trips_in_place() {
        let list = sample();
        let file = snapshot_file(&list, &key());
        let opened = open_snapshot(file, Some(&key().verifying_key())).unwrap();
        assert_eq!(opened.version(), 4);
        assert_eq!(
            opened.iter().collect::<Vec<_>>(),
            list.iter().collect::<Vec<_>>()
        );
    }

    #[test]
    fn delta_round_trips_and_diff_reproduces_the_target() {
        let old = sample();
        let mut new = old.clone();
        new.apply(&Change {
            op: ChangeOp::Remove,
            id: ListId::Card("37140000000000000001".parse().unwrap()),
            reason: ListReason::Lost,
        });
        new.apply(&Change {
            op: ChangeOp::Add,
            id: ListId::Account(AccountId {
                channel: 0,
                account: 0,
            }),
            reason: ListReason::Arrears,
        });
        new.apply(&Change {
            op: ChangeOp::Add,
            id: ListId::Pan(crate::card::quickpass::PanToken(0)),
            reason: ListReason::Arrears,
        });
        new.set_version(5);
        let delta = old.diff(&new);
        let file = delta_file(&delta, &key());
        let read = open_delta(&file, &key().verifying_key()).unwrap();
        assert_eq!(read, delta);
        let applied = old.with_delta(&read).unwrap();
        let sorted = |l: &Blacklist| l.iter().collect::<std::collections::BTreeMap<_, _>>();
        assert_eq!(sorted(&applied), sorted(&new));
        assert!(matches!(
            applied.with_delta(&read),
            Err(BlacklistFileError::WrongBase {
                current: 5,
                from: 4
            })
        ));
    }

    #[test]
    fn malformed_delta_payloads_are_typed_errors() {
        assert!(matches!(
            parse_delta_payload(&[0; 8], 2, 2),
            Err(BlacklistFileError::NotForward { .. })
        ));
        assert!(matches!(
            parse_delta_payload(&[0; 3], 1, 2),
            Err(BlacklistFileError::DeltaLength(_))
        ));
        let mut p = 1u64.to_le_bytes().to_vec();
        p.extend_from_slice(&[1, 1, 1, 0, 0xFA, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(
            parse_delta_payload(&p, 1, 2),
            Err(BlacklistFileError::Change { index: 0, .. })
        ));
        p.truncate(20);
        assert!(matches!(
            parse_delta_payload(&p, 1, 2),
            Err(BlacklistFileError::DeltaLength(_))
        ));
    }
}
