//! The offline signing step: the operator's signing key stays on a machine apart from the
//! station (or in an HSM), and the station holds only signed files and the public key.
//!
//! ```text
//! station (depot.db: operator public key, signed files)     operator's machine (operator.key)
//!   depot sign-request --out request.fvreq   ── carried ──▶  operator sign --key operator.key
//!                                                              --request request.fvreq --out signed.fvbundle
//!   depot import-signed signed.fvbundle     ◀── carried ──
//! ```
//!
//! A **signing request** lists the files the station needs, unsigned: the blacklist snapshot
//! at its version, deltas to it from the versions buses can hold (versions signed before),
//! and the fare table and ride-code key file at their versions. The operator's step checks
//! each request entry, refuses any version below the last it signed of that content (its own
//! *floor*, kept beside the key: a station restored from an old backup cannot get an older
//! version signed again), signs each with [`crate::signed::seal_dated_by`], and writes a
//! **signed bundle**. The station imports the bundle, checks every file against the pinned
//! operator public key, and serves the files as they are.
//!
//! ## Request (integers little-endian)
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `FVSIGNRQ` |
//! | 8 | 2 | format, [`REQUEST_FORMAT`] |
//! | 10 | 4 | entry count, 1..=[`REQUEST_ENTRIES_MAX`] |
//! | 14 | … | entries: kind (2, [`FileKind`]), version (8), base version (8, a delta's starting version, else 0), payload length (8, at most [`crate::signed::PAYLOAD_LEN_MAX`]), payload |
//!
//! ## Signed bundle
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `FVBUNDLE` |
//! | 8 | 4 | file count, 1..=[`REQUEST_ENTRIES_MAX`] |
//! | 12 | … | files: length (8), a signed file ([`crate::signed`]) |
//!
//! Both are parsed strictly: a bad magic, count, length or trailing byte is a typed
//! [`BundleError`], never a panic. Where an HSM plugs in: [`crate::signed::FileSigner`] is
//! the one operation the key performs (an Ed25519 signature over a 125-byte message); an
//! HSM-backed signer implements it and [`sign_request`] takes it in place of the key file.

use std::collections::BTreeMap;

use crate::signed::{self, Dates, FileKind, FileSigner};

pub const REQUEST_MAGIC: [u8; 8] = *b"FVSIGNRQ";
pub const BUNDLE_MAGIC: [u8; 8] = *b"FVBUNDLE";
pub const REQUEST_FORMAT: u16 = 1;
/// Most entries in one request (a snapshot, its deltas, a fare table and a key file).
pub const REQUEST_ENTRIES_MAX: usize = 64;
const REQUEST_HEADER_BYTES: usize = 14;
const ENTRY_HEADER_BYTES: usize = 26;

/// One file the station needs signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestEntry {
    pub kind: FileKind,
    pub version: u64,
    pub base_version: u64,
    pub payload: Vec<u8>,
}

/// What one request entry holds, for the operator to read before signing (a JSON line).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EntrySummary {
    pub kind: &'static str,
    pub version: u64,
    pub base_version: u64,
    pub payload_bytes: u64,
}

impl RequestEntry {
    pub fn summary(&self) -> EntrySummary {
        EntrySummary {
            kind: self.kind.as_str(),
            version: self.version,
            base_version: self.base_version,
            payload_bytes: self.payload.len() as u64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not a {0} (bad magic)")]
    BadMagic(&'static str),
    #[error("unsupported request format {0}")]
    Format(u16),
    #[error("{0} entries: 1..={REQUEST_ENTRIES_MAX} allowed")]
    Count(u32),
    #[error("truncated at byte {0}")]
    Truncated(usize),
    #[error("unknown file kind {0}")]
    Kind(u16),
    #[error("payload of {0} bytes over the limit")]
    TooLarge(u64),
    #[error("{0} bytes after the last entry")]
    Trailing(usize),
    #[error("{kind} version {version} is below version {floor} signed before: refused (a station restored from an old backup?)")]
    BelowFloor {
        kind: &'static str,
        version: u64,
        floor: u64,
    },
    #[error("signed file {index}: {source}")]
    Signed {
        index: usize,
        source: signed::SignedError,
    },
}

/// The content a file kind versions: a snapshot and a delta to the same version carry the
/// same blacklist, so they share one floor.
pub fn content_of(kind: FileKind) -> &'static str {
    match kind {
        FileKind::BlacklistSnapshot | FileKind::BlacklistDelta => "blacklist",
        FileKind::FareTable => "fares",
        FileKind::RideCodeKeys => "keys",
        FileKind::VerifiedCertSnapshot | FileKind::VerifiedCertDelta => "verified_certs",
    }
}

pub fn encode_request(entries: &[RequestEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&REQUEST_MAGIC);
    out.extend_from_slice(&REQUEST_FORMAT.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&(e.kind as u16).to_le_bytes());
        out.extend_from_slice(&e.version.to_le_bytes());
        out.extend_from_slice(&e.base_version.to_le_bytes());
        out.extend_from_slice(&(e.payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&e.payload);
    }
    out
}

/// A bounds-checked reader over outside bytes.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BundleError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or(BundleError::Truncated(self.at))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], BundleError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u64(&mut self) -> Result<u64, BundleError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn count(&mut self) -> Result<usize, BundleError> {
        let n = u32::from_le_bytes(self.array()?);
        if n == 0 || n as usize > REQUEST_ENTRIES_MAX {
            return Err(BundleError::Count(n));
        }
        Ok(n as usize)
    }

    fn payload(&mut self) -> Result<&'a [u8], BundleError> {
        let len = self.u64()?;
        if len > signed::PAYLOAD_LEN_MAX + signed::HEADER_LEN as u64 {
            return Err(BundleError::TooLarge(len));
        }
        self.take(len as usize)
    }

    fn end(&self) -> Result<(), BundleError> {
        match self.b.len() - self.at {
            0 => Ok(()),
            n => Err(BundleError::Trailing(n)),
        }
    }
}

pub fn decode_request(bytes: &[u8]) -> Result<Vec<RequestEntry>, BundleError> {
    let mut c = Cursor { b: bytes, at: 0 };
    if c.array::<8>()? != REQUEST_MAGIC {
        return Err(BundleError::BadMagic("signing request"));
    }
    let format = u16::from_le_bytes(c.array()?);
    if format != REQUEST_FORMAT {
        return Err(BundleError::Format(format));
    }
    let n = c.count()?;
    debug_assert_eq!(c.at, REQUEST_HEADER_BYTES);
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let start = c.at;
        let kind = u16::from_le_bytes(c.array()?);
        let kind = FileKind::from_u16(kind).ok_or(BundleError::Kind(kind))?;
        let version = c.u64()?;
        let base_version = c.u64()?;
        let payload = c.payload()?;
        debug_assert_eq!(c.at - start, ENTRY_HEADER_BYTES + payload.len());
        if payload.len() as u64 > signed::PAYLOAD_LEN_MAX {
            return Err(BundleError::TooLarge(payload.len() as u64));
        }
        entries.push(RequestEntry {
            kind,
            version,
            base_version,
            payload: payload.to_vec(),
        });
    }
    c.end()?;
    Ok(entries)
}

pub fn encode_bundle(files: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&BUNDLE_MAGIC);
    out.extend_from_slice(&(files.len() as u32).to_le_bytes());
    for f in files {
        out.extend_from_slice(&(f.len() as u64).to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// The signed files of a bundle, each parsed (structure and CRC; the signature is the
/// importer's to check against the pinned key).
pub fn decode_bundle(bytes: &[u8]) -> Result<Vec<&[u8]>, BundleError> {
    let mut c = Cursor { b: bytes, at: 0 };
    if c.array::<8>()? != BUNDLE_MAGIC {
        return Err(BundleError::BadMagic("signed bundle"));
    }
    let n = c.count()?;
    let mut files = Vec::with_capacity(n);
    for index in 0..n {
        let file = c.payload()?;
        signed::parse(file).map_err(|source| BundleError::Signed { index, source })?;
        files.push(file);
    }
    c.end()?;
    Ok(files)
}

/// The operator's floor: the highest version signed so far of each content
/// ([`content_of`]), kept beside the key as JSON.
pub type Floor = BTreeMap<String, u64>;

/// Sign every entry of `request` with `signer` and `dates`, refusing the whole request when
/// any entry's version is below `floor` for its content; returns the signed files and the
/// floor raised to what was signed. Nothing is signed unless everything can be.
pub fn sign_request(
    request: &[RequestEntry],
    floor: &Floor,
    dates: Dates,
    signer: &dyn FileSigner,
) -> Result<(Vec<Vec<u8>>, Floor), BundleError> {
    let mut raised = floor.clone();
    for e in request {
        let kind = content_of(e.kind);
        let below = floor.get(kind).copied().unwrap_or(0);
        if e.version < below {
            return Err(BundleError::BelowFloor {
                kind,
                version: e.version,
                floor: below,
            });
        }
        let f = raised.entry(kind.to_string()).or_insert(0);
        *f = (*f).max(e.version);
    }
    let files = request
        .iter()
        .map(|e| {
            signed::seal_dated_by(e.kind, e.version, e.base_version, dates, &e.payload, signer)
        })
        .collect();
    Ok((files, raised))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<RequestEntry> {
        vec![
            RequestEntry {
                kind: FileKind::BlacklistSnapshot,
                version: 7,
                base_version: 0,
                payload: vec![1, 2, 3],
            },
            RequestEntry {
                kind: FileKind::FareTable,
                version: 2,
                base_version: 0,
                payload: b"base_fare_fen = 200".to_vec(),
            },
        ]
    }

    #[test]
    fn request_and_bundle_round_trip_and_every_cut_is_an_error() {
        let req = encode_request(&entries());
        assert_eq!(decode_request(&req).unwrap(), entries());
        for cut in 0..req.len() {
            assert!(decode_request(&req[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = req.clone();
        longer.push(0);
        assert!(matches!(
            decode_request(&longer),
            Err(BundleError::Trailing(1))
        ));
        let key = signed::signing_key_from_seed([3; 32]);
        let (files, floor) =
            sign_request(&entries(), &Floor::new(), Dates::starting(10, 100), &key).unwrap();
        assert_eq!((floor["blacklist"], floor["fares"]), (7, 2));
        let bundle = encode_bundle(&files);
        let back = decode_bundle(&bundle).unwrap();
        assert_eq!(back.len(), 2);
        let opened = signed::open(back[1], FileKind::FareTable, &key.verifying_key()).unwrap();
        assert_eq!(opened.payload, b"base_fare_fen = 200");
        for cut in 0..bundle.len() {
            assert!(decode_bundle(&bundle[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_version_below_the_operators_floor_signs_nothing() {
        let key = signed::signing_key_from_seed([3; 32]);
        let floor = Floor::from([("blacklist".to_string(), 8)]);
        let err = sign_request(&entries(), &floor, Dates::starting(10, 100), &key).unwrap_err();
        assert!(matches!(
            err,
            BundleError::BelowFloor {
                kind: "blacklist",
                version: 7,
                floor: 8
            }
        ));
    }
}
