//! The fleet's verified-certificate set: holder certificates whose channel signature the depot
//! has already checked, so that a bus seeing a holder for the first time checks one signature
//! (the code's) instead of two.
//!
//! The depot holds the channel keys and every certificate its buses met (the codes kept as
//! proof beside the journal records); it verifies each new certificate once and lists its
//! SHA-256 ([`super::cert_digest`]: the certificate's signed bytes and the channel's
//! signature, code bytes [0, 129)). The operator signs the set like the blacklist: a
//! snapshot, and deltas from the versions buses hold ([`crate::signed`] kinds 5 and 6).
//!
//! # What a listed digest lets the verifier skip, and what not
//!
//! Only check 6's signature (ride-code-v1.md): the holder key must still decode to a point on
//! the curve, and checks 4 and 5 (the key exists, is not revoked, is in its window: from the
//! bus's own key file, at the scan's time), 7 (the certificate's dates) and 8–10 (the code's
//! own signature and freshness) run as without the set. That a channel key signed given
//! bytes never stops being true, so an entry can only ever save work: the depot removes
//! entries when their certificate expires or their key is revoked or leaves its window
//! only to keep the set small, and a bus holding an older set decides exactly as with a new
//! one. Membership is exact: the full 32-byte digest, compared byte for byte (a
//! probabilistic filter's false positive, or a short digest's collision, would skip a forged
//! certificate's check).
//!
//! The digest covers channel_id, channel_key_id and alg, so an entry cannot be moved to
//! another key; and the set names the key material it was checked with
//! ([`ChannelKeys::material_digest`]): a verifier whose key file has other material for any
//! key uses no entry of it.
//!
//! # Snapshot payload (kind 5, `base_version` 0)
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 32 | key material digest ([`ChannelKeys::material_digest`]) |
//! | 32 | 8 | entry count N, little-endian, at most [`CERT_SET_ENTRIES_MAX`] |
//! | 40 | 32 × N | certificate digests, strictly increasing (bytewise) |
//!
//! 32 bytes an entry and 152 bytes a file (header and the 40 above): 3 million holders are
//! 96 MB, looked up in place by binary search (22 probes).
//!
//! # Delta payload (kind 6, `base_version` n → `version` m > n)
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 32 | key material digest: the same as the set's it applies to |
//! | 32 | 8 | added count A, little-endian |
//! | 40 | 8 | removed count R, little-endian; A + R at most [`CERT_SET_DELTA_CHANGES_MAX`] |
//! | 48 | 32 × A | added digests, strictly increasing, none in the set |
//! | 48 + 32A | 32 × R | removed digests, strictly increasing, each in the set |
//!
//! A delta applies only to the set at exactly `base_version`; a snapshot only over an older
//! set. A file that fails anything (structure, CRC, signature, dates, order, base) is refused
//! with a [`CertSetError`] and the set in use stays: see [`CertSet::install`].

use std::cmp::Ordering;

use ed25519_dalek::{SigningKey, VerifyingKey};

use super::crypto::VerifyKey;
use super::format::{
    CertDigest, RideCode, CERT_BYTES, CERT_DIGEST_BYTES, CERT_SIGNED_BYTES, PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
};
use super::keys::ChannelKeys;
use crate::signed::{self, Dates, FileKind, SignedError};

/// Most entries a snapshot may list (8 million holders, 256 MB).
pub const CERT_SET_ENTRIES_MAX: u64 = 8_000_000;
/// Most changes (adds and removes) one delta may carry.
pub const CERT_SET_DELTA_CHANGES_MAX: u64 = 4_000_000;
/// Bytes of one entry, in a file and in memory.
pub const CERT_SET_ENTRY_BYTES: usize = CERT_DIGEST_BYTES;

const KEYS_DIGEST_BYTES: usize = 32;
const SNAPSHOT_HEAD_BYTES: usize = KEYS_DIGEST_BYTES + 8;
const DELTA_HEAD_BYTES: usize = KEYS_DIGEST_BYTES + 16;

/// Why a verified-certificate file was refused; the set in use stays as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertSetError {
    #[error(transparent)]
    Signed(#[from] SignedError),
    #[error("verified-certificate file is not dated (signed format before 3)")]
    Undated,
    #[error("verified-certificate file expired at {expires_unix_s} (unix s)")]
    Expired { expires_unix_s: u32 },
    #[error("verified-certificate payload: {0}")]
    Payload(&'static str),
    #[error("verified-certificate digests not strictly increasing at entry {index}")]
    NotSorted { index: u64 },
    #[error("snapshot version {file} is not newer than the set in use ({current})")]
    Stale { current: u64, file: u64 },
    #[error("delta starts from version {from}, but the set is at version {current}")]
    WrongBase { current: u64, from: u64 },
    #[error("delta goes from version {from} to {to}: not forward")]
    NotForward { from: u64, to: u64 },
    #[error("delta was made for other channel keys than the set's")]
    OtherKeys,
    #[error("delta adds a digest already listed, or removes one not listed")]
    Disagrees,
}

/// A version of the set: sorted, distinct digests and the key material they were checked with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSet {
    version: u64,
    keys_digest: [u8; KEYS_DIGEST_BYTES],
    digests: Vec<CertDigest>,
}

/// The changes from one version of the set to a later one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSetDelta {
    pub from_version: u64,
    pub to_version: u64,
    pub keys_digest: [u8; KEYS_DIGEST_BYTES],
    /// Strictly increasing.
    pub added: Vec<CertDigest>,
    /// Strictly increasing.
    pub removed: Vec<CertDigest>,
}

impl CertSet {
    /// Version 0, nothing listed: every first-seen certificate is checked.
    pub fn empty() -> Self {
        CertSet {
            version: 0,
            keys_digest: [0; KEYS_DIGEST_BYTES],
            digests: Vec::new(),
        }
    }

    /// The set of these digests (sorted here, duplicates dropped), checked with `keys`.
    pub fn from_digests(
        version: u64,
        keys: &ChannelKeys,
        digests: impl IntoIterator<Item = CertDigest>,
    ) -> Self {
        Self::from_digests_checked_with(version, keys.material_digest(), digests)
    }

    /// As [`CertSet::from_digests`], the key material named by its digest
    /// ([`ChannelKeys::material_digest`]), as the depot records it.
    pub fn from_digests_checked_with(
        version: u64,
        keys_digest: [u8; KEYS_DIGEST_BYTES],
        digests: impl IntoIterator<Item = CertDigest>,
    ) -> Self {
        let mut digests: Vec<CertDigest> = digests.into_iter().collect();
        digests.sort_unstable();
        digests.dedup();
        CertSet {
            version,
            keys_digest,
            digests,
        }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// The key material digest the entries were checked with.
    pub fn keys_digest(&self) -> &[u8; KEYS_DIGEST_BYTES] {
        &self.keys_digest
    }

    /// Whether this exact certificate digest is listed: a binary search, no heap.
    pub fn contains(&self, digest: &CertDigest) -> bool {
        self.digests.binary_search(digest).is_ok()
    }

    /// Every listed digest, increasing.
    pub fn digests(&self) -> &[CertDigest] {
        &self.digests
    }

    /// Heap bytes held by the entries.
    pub fn memory_bytes(&self) -> usize {
        self.digests.capacity() * CERT_SET_ENTRY_BYTES
    }

    /// The snapshot payload (module doc).
    pub fn snapshot_payload(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(SNAPSHOT_HEAD_BYTES + self.digests.len() * CERT_SET_ENTRY_BYTES);
        out.extend_from_slice(&self.keys_digest);
        out.extend_from_slice(&(self.digests.len() as u64).to_le_bytes());
        for d in &self.digests {
            out.extend_from_slice(d);
        }
        out
    }

    /// Reads a snapshot payload of `version`.
    pub fn from_snapshot_payload(version: u64, payload: &[u8]) -> Result<Self, CertSetError> {
        let (keys_digest, rest) = payload
            .split_first_chunk::<KEYS_DIGEST_BYTES>()
            .ok_or(CertSetError::Payload("shorter than its head"))?;
        let (count, rest) = rest
            .split_first_chunk::<8>()
            .ok_or(CertSetError::Payload("shorter than its head"))?;
        let count = u64::from_le_bytes(*count);
        if count > CERT_SET_ENTRIES_MAX {
            return Err(CertSetError::Payload("more entries than allowed"));
        }
        if rest.len() as u64 != count * CERT_SET_ENTRY_BYTES as u64 {
            return Err(CertSetError::Payload("length is not its count of entries"));
        }
        Ok(CertSet {
            version,
            keys_digest: *keys_digest,
            digests: increasing(rest, 0)?,
        })
    }

    /// The delta from this set to `new` (a later version).
    pub fn diff(&self, new: &CertSet) -> CertSetDelta {
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        let (mut a, mut b) = (
            self.digests.iter().peekable(),
            new.digests.iter().peekable(),
        );
        loop {
            match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => match x.cmp(y) {
                    Ordering::Less => removed.push(*a.next().expect("peeked")),
                    Ordering::Greater => added.push(*b.next().expect("peeked")),
                    Ordering::Equal => {
                        a.next();
                        b.next();
                    }
                },
                (Some(_), None) => removed.push(*a.next().expect("peeked")),
                (None, Some(_)) => added.push(*b.next().expect("peeked")),
                (None, None) => break,
            }
        }
        CertSetDelta {
            from_version: self.version,
            to_version: new.version,
            keys_digest: new.keys_digest,
            added,
            removed,
        }
    }

    /// The set after `delta`, which must start from exactly this version, go forward, be made
    /// for the same keys, and agree with the entries (adds new, removes listed).
    pub fn with_delta(&self, delta: &CertSetDelta) -> Result<CertSet, CertSetError> {
        if delta.from_version != self.version {
            return Err(CertSetError::WrongBase {
                current: self.version,
                from: delta.from_version,
            });
        }
        if delta.to_version <= delta.from_version {
            return Err(CertSetError::NotForward {
                from: delta.from_version,
                to: delta.to_version,
            });
        }
        if delta.keys_digest != self.keys_digest {
            return Err(CertSetError::OtherKeys);
        }
        let mut out = Vec::with_capacity(self.digests.len() + delta.added.len());
        let (mut add, mut del) = (
            delta.added.iter().peekable(),
            delta.removed.iter().peekable(),
        );
        for d in &self.digests {
            while let Some(a) = add.next_if(|a| *a < d) {
                out.push(*a);
            }
            if add.peek() == Some(&d) {
                return Err(CertSetError::Disagrees);
            }
            if del.next_if(|r| *r == d).is_some() {
                continue;
            }
            if del.peek().is_some_and(|r| *r < d) {
                return Err(CertSetError::Disagrees);
            }
            out.push(*d);
        }
        out.extend(add);
        if del.next().is_some() {
            return Err(CertSetError::Disagrees);
        }
        Ok(CertSet {
            version: delta.to_version,
            keys_digest: self.keys_digest,
            digests: out,
        })
    }

    /// Checks a signed snapshot or delta file against the operator key at `now_unix_s` and
    /// returns the set it makes of this one; on any error this set is the one to keep.
    /// Refused: anything [`signed::open`] refuses, an undated or expired file, a snapshot not
    /// newer than this set (a replayed or restored older file), a delta not from this version.
    pub fn install(
        &self,
        file: &[u8],
        operator: &VerifyingKey,
        now_unix_s: i64,
    ) -> Result<CertSet, CertSetError> {
        let opened = signed::parse(file)?.verify(operator)?;
        let dates = opened.header.dates.ok_or(CertSetError::Undated)?;
        if dates.expired_at(now_unix_s) {
            return Err(CertSetError::Expired {
                expires_unix_s: dates.expires_unix_s,
            });
        }
        self.apply(&opened)
    }

    /// The set a file whose signature the caller verified makes of this one (its dates are
    /// the caller's to check: [`CertSet::install`] does, as does the downlink folder,
    /// `crate::upload::downlink::DownlinkDir::install`, which parses the file once). Refused:
    /// another kind of file, a snapshot not newer than this set, a delta not from this
    /// version, not forward or made for other keys, a payload that does not read.
    pub fn apply(&self, opened: &signed::Verified<'_>) -> Result<CertSet, CertSetError> {
        let h = opened.header;
        match h.kind {
            FileKind::VerifiedCertSnapshot => {
                if h.base_version != 0 {
                    return Err(CertSetError::Payload("snapshot with a base version"));
                }
                if h.version <= self.version {
                    return Err(CertSetError::Stale {
                        current: self.version,
                        file: h.version,
                    });
                }
                CertSet::from_snapshot_payload(h.version, opened.payload)
            }
            FileKind::VerifiedCertDelta => {
                let delta = CertSetDelta::from_payload(h.base_version, h.version, opened.payload)?;
                self.with_delta(&delta)
            }
            other => Err(SignedError::WrongKind {
                expected: FileKind::VerifiedCertSnapshot.as_str(),
                found: other.as_str(),
            }
            .into()),
        }
    }
}

impl CertSetDelta {
    /// The delta payload (module doc).
    pub fn payload(&self) -> Vec<u8> {
        let n = self.added.len() + self.removed.len();
        let mut out = Vec::with_capacity(DELTA_HEAD_BYTES + n * CERT_SET_ENTRY_BYTES);
        out.extend_from_slice(&self.keys_digest);
        out.extend_from_slice(&(self.added.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.removed.len() as u64).to_le_bytes());
        for d in self.added.iter().chain(&self.removed) {
            out.extend_from_slice(d);
        }
        out
    }

    /// Reads a delta payload from `from_version` to `to_version`.
    pub fn from_payload(
        from_version: u64,
        to_version: u64,
        payload: &[u8],
    ) -> Result<Self, CertSetError> {
        let short = CertSetError::Payload("shorter than its head");
        let (keys_digest, rest) = payload
            .split_first_chunk::<KEYS_DIGEST_BYTES>()
            .ok_or(short.clone())?;
        let (added, rest) = rest.split_first_chunk::<8>().ok_or(short.clone())?;
        let (removed, rest) = rest.split_first_chunk::<8>().ok_or(short)?;
        let (added, removed) = (u64::from_le_bytes(*added), u64::from_le_bytes(*removed));
        if added.saturating_add(removed) > CERT_SET_DELTA_CHANGES_MAX {
            return Err(CertSetError::Payload("more changes than allowed"));
        }
        if rest.len() as u64 != (added + removed) * CERT_SET_ENTRY_BYTES as u64 {
            return Err(CertSetError::Payload("length is not its count of changes"));
        }
        let (a, r) = rest.split_at(added as usize * CERT_SET_ENTRY_BYTES);
        Ok(CertSetDelta {
            from_version,
            to_version,
            keys_digest: *keys_digest,
            added: increasing(a, 0)?,
            removed: increasing(r, added)?,
        })
    }
}

/// The depot's check of one certificate before it may be listed: the key it names is in
/// `keys` (whatever its dates: those are the set's membership rule, applied when publishing,
/// and the bus's own check 5), the channel's signature verifies, and the holder key is a
/// point on the curve: check 6 exactly. `Some(digest)` when all hold.
pub fn checked_digest(keys: &ChannelKeys, code: &RideCode) -> Option<CertDigest> {
    check_certificate(keys, code.cert()).then(|| code.cert_digest())
}

/// [`checked_digest`] on a certificate's 129 bytes (code bytes [0, 129)).
pub fn check_certificate(keys: &ChannelKeys, cert: &[u8; CERT_BYTES]) -> bool {
    let Some(alg) = super::Alg::from_u8(cert[1]) else {
        return false;
    };
    let channel_id = u16::from_be_bytes([cert[2], cert[3]]);
    let Some(channel) = keys.find(channel_id, cert[4], alg) else {
        return false;
    };
    let holder: &[u8; PUBLIC_KEY_BYTES] = cert[32..65].try_into().expect("33 bytes");
    let (signed, signature) = cert.split_at(CERT_SIGNED_BYTES);
    let signature: &[u8; SIGNATURE_BYTES] = signature.try_into().expect("64 bytes");
    VerifyKey::from_compressed(alg, holder).is_some() && channel.key.verifies(signed, signature)
}

/// Digests of `bytes` (a multiple of 32 long), which must be strictly increasing; `first` is
/// the index of the first for errors.
fn increasing(bytes: &[u8], first: u64) -> Result<Vec<CertDigest>, CertSetError> {
    let mut out: Vec<CertDigest> = Vec::with_capacity(bytes.len() / CERT_SET_ENTRY_BYTES);
    for (i, chunk) in bytes.chunks_exact(CERT_SET_ENTRY_BYTES).enumerate() {
        let d: CertDigest = chunk.try_into().expect("chunks of 32");
        if out.last().is_some_and(|last| *last >= d) {
            return Err(CertSetError::NotSorted {
                index: first + i as u64,
            });
        }
        out.push(d);
    }
    Ok(out)
}

/// A signed snapshot file of `set`, dated `dates`.
pub fn snapshot_file(set: &CertSet, dates: Dates, key: &SigningKey) -> Vec<u8> {
    signed::seal_dated(
        FileKind::VerifiedCertSnapshot,
        set.version,
        0,
        dates,
        &set.snapshot_payload(),
        key,
    )
}

/// A signed delta file, dated `dates`.
pub fn delta_file(delta: &CertSetDelta, dates: Dates, key: &SigningKey) -> Vec<u8> {
    signed::seal_dated(
        FileKind::VerifiedCertDelta,
        delta.to_version,
        delta.from_version,
        dates,
        &delta.payload(),
        key,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeSet;

    const NOW: i64 = 1_795_824_000;

    fn digest(n: u64) -> CertDigest {
        super::super::cert_digest(&std::array::from_fn(|i| (n >> (8 * (i % 8))) as u8))
    }

    fn set_of(version: u64, model: &BTreeSet<CertDigest>) -> CertSet {
        CertSet::from_digests(version, &ChannelKeys::empty(), model.iter().copied())
    }

    fn dates() -> Dates {
        Dates::starting(NOW as u32 - 60, 86_400)
    }

    #[test]
    fn deltas_agree_with_a_model_at_every_version() {
        let key = signed::signing_key_from_seed([5; 32]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(20);
        let mut model = BTreeSet::new();
        // A bus first gets a snapshot (the empty set names no keys, so no delta applies to it).
        let mut held = set_of(0, &model);
        assert_eq!(
            CertSet::empty().with_delta(&CertSet::empty().diff(&set_of(1, &model))),
            Err(CertSetError::OtherKeys)
        );
        let mut snapshots = vec![held.clone()];
        for version in 1..=60u64 {
            let before = model.clone();
            for _ in 0..rng.gen_range(0..40) {
                let d = digest(rng.gen_range(0..400));
                if !model.remove(&d) {
                    model.insert(d);
                }
            }
            let new = set_of(version, &model);
            let prev = snapshots.last().expect("one").clone();
            let delta = prev.diff(&new);
            assert_eq!(
                delta.added.len() + delta.removed.len(),
                before.symmetric_difference(&model).count()
            );
            // Through the signed file, as a bus gets it.
            held = held
                .install(
                    &delta_file(&delta, dates(), &key),
                    &key.verifying_key(),
                    NOW,
                )
                .unwrap_or_else(|e| panic!("version {version}: {e}"));
            assert_eq!(held, new, "version {version}");
            for d in (0..400).map(digest) {
                assert_eq!(held.contains(&d), model.contains(&d));
            }
            // A delta from any earlier version lands on the same set.
            let from = &snapshots[rng.gen_range(0..snapshots.len())];
            assert_eq!(from.with_delta(&from.diff(&new)).as_ref(), Ok(&new));
            // And so does the snapshot over any older set.
            let snap = snapshot_file(&new, dates(), &key);
            assert_eq!(
                from.install(&snap, &key.verifying_key(), NOW),
                Ok(new.clone())
            );
            snapshots.push(new);
        }
    }

    #[test]
    fn a_delta_that_disagrees_with_the_set_is_refused() {
        let model: BTreeSet<_> = (0..10).map(digest).collect();
        let set = set_of(3, &model);
        let mut more = model.clone();
        more.insert(digest(99));
        let mut delta = set.diff(&set_of(4, &more));
        assert!(set.with_delta(&delta).is_ok());
        delta.added = vec![digest(1)];
        assert_eq!(set.with_delta(&delta), Err(CertSetError::Disagrees));
        delta.added.clear();
        delta.removed = vec![digest(99)];
        assert_eq!(set.with_delta(&delta), Err(CertSetError::Disagrees));
        delta.removed.clear();
        delta.from_version = 2;
        assert!(matches!(
            set.with_delta(&delta),
            Err(CertSetError::WrongBase { .. })
        ));
        delta.from_version = 3;
        delta.to_version = 3;
        assert!(matches!(
            set.with_delta(&delta),
            Err(CertSetError::NotForward { .. })
        ));
        delta.to_version = 4;
        delta.keys_digest = [1; 32];
        assert_eq!(set.with_delta(&delta), Err(CertSetError::OtherKeys));
    }

    #[test]
    fn forged_stale_expired_or_unsorted_files_are_refused() {
        let key = signed::signing_key_from_seed([5; 32]);
        let op = key.verifying_key();
        let held = set_of(5, &(0..20).map(digest).collect());
        let newer = set_of(6, &(0..30).map(digest).collect());
        let good = snapshot_file(&newer, dates(), &key);
        assert_eq!(held.install(&good, &op, NOW), Ok(newer.clone()));
        // Signed by another key.
        let other = signed::signing_key_from_seed([6; 32]);
        let forged = snapshot_file(&newer, dates(), &other);
        assert!(matches!(
            held.install(&forged, &op, NOW),
            Err(CertSetError::Signed(_))
        ));
        // One digest changed after signing, CRC and all: the signature fails.
        let mut altered = good.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(matches!(
            held.install(&altered, &op, NOW),
            Err(CertSetError::Signed(_))
        ));
        // An older or equal version: a replayed file.
        for v in [4, 5] {
            let old = snapshot_file(&set_of(v, &BTreeSet::new()), dates(), &key);
            assert_eq!(
                held.install(&old, &op, NOW),
                Err(CertSetError::Stale {
                    current: 5,
                    file: v
                })
            );
        }
        // Expired.
        let past = Dates::starting(NOW as u32 - 100, 10);
        assert!(matches!(
            held.install(&snapshot_file(&newer, past, &key), &op, NOW),
            Err(CertSetError::Expired { .. })
        ));
        // Well signed but out of order, or a length that is not its count.
        let mut payload = newer.snapshot_payload();
        payload[40..72].copy_from_slice(&[0xFF; 32]);
        let unsorted = signed::seal_dated(
            FileKind::VerifiedCertSnapshot,
            6,
            0,
            dates(),
            &payload,
            &key,
        );
        assert_eq!(
            held.install(&unsorted, &op, NOW),
            Err(CertSetError::NotSorted { index: 1 })
        );
        let cut = signed::seal_dated(
            FileKind::VerifiedCertSnapshot,
            6,
            0,
            dates(),
            &newer.snapshot_payload()[..100],
            &key,
        );
        assert!(matches!(
            held.install(&cut, &op, NOW),
            Err(CertSetError::Payload(_))
        ));
        // Another kind of file altogether.
        let fares = signed::seal_dated(FileKind::FareTable, 9, 0, dates(), b"x", &key);
        assert!(matches!(
            held.install(&fares, &op, NOW),
            Err(CertSetError::Signed(_))
        ));
    }

    #[test]
    fn payloads_of_any_bytes_are_refused_or_read_never_a_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xCE57);
        let real = set_of(1, &(0..4).map(digest).collect());
        let real_delta = real.diff(&set_of(2, &(2..6).map(digest).collect()));
        for round in 0..2000 {
            let mut b = match round % 3 {
                0 => real.snapshot_payload(),
                1 => real_delta.payload(),
                _ => (0..rng.gen_range(0..200)).map(|_| rng.gen()).collect(),
            };
            // Damage: a cut, or a count field set to anything, or a flipped byte.
            match rng.gen_range(0..3) {
                0 => b.truncate(rng.gen_range(0..=b.len())),
                1 if b.len() >= 48 => {
                    let at = [32, 40][rng.gen_range(0..2)];
                    b[at..at + 8].copy_from_slice(&rng.gen::<u64>().to_le_bytes());
                }
                _ if !b.is_empty() => {
                    let i = rng.gen_range(0..b.len());
                    b[i] ^= 1 << rng.gen_range(0..8);
                }
                _ => {}
            }
            if let Ok(set) = CertSet::from_snapshot_payload(1, &b) {
                assert!(set.digests().windows(2).all(|w| w[0] < w[1]));
                assert_eq!(set.snapshot_payload(), b);
            }
            if let Ok(delta) = CertSetDelta::from_payload(1, 2, &b) {
                assert_eq!(delta.payload(), b);
            }
        }
    }

    #[test]
    fn an_entry_is_32_bytes_in_a_file() {
        let set = set_of(1, &(0..1000).map(digest).collect());
        let key = signed::signing_key_from_seed([5; 32]);
        let file = snapshot_file(&set, dates(), &key);
        assert_eq!(
            file.len(),
            signed::HEADER_LEN + SNAPSHOT_HEAD_BYTES + 1000 * 32
        );
    }
}
