//! Signed, versioned files that the depot sends down to buses: blacklist snapshots and deltas,
//! and (for other modules) fare tables and ride-code key files.
//!
//! A validator uses a file only after it has checked, in this order: the magic, the format
//! version, the kind, the length, the CRC and the operator's Ed25519 signature. Any failure is
//! a typed [`SignedError`]; the caller keeps what it had.
//!
//! # Byte table (all integers little-endian)
//!
//! | offset | size | field | meaning |
//! | --- | --- | --- | --- |
//! | 0 | 8 | magic | `FVSIGNED` |
//! | 8 | 2 | format | format version: [`FORMAT_VERSION`] (3) written, [`FORMAT_VERSION_OLDEST`] (1) and up read |
//! | 10 | 2 | kind | [`FileKind`]: 1 blacklist snapshot, 2 blacklist delta, 3 fare table, 4 ride-code keys, 5 verified-certificate snapshot, 6 verified-certificate delta |
//! | 12 | 4 | issued | format 3: when the operator signed it, unix seconds (u32); before: 0 |
//! | 16 | 8 | version | content version this file gives (a delta's target version) |
//! | 24 | 8 | base_version | a delta's starting version; 0 for a snapshot |
//! | 32 | 8 | payload_len | bytes of payload after the header, at most [`PAYLOAD_LEN_MAX`] |
//! | 40 | 4 | crc32c | CRC-32/ISCSI over bytes 0..40, then the payload |
//! | 44 | 4 | expires | format 3: after this second (unix, u32) a validator installs it no more; before: 0 |
//! | 48 | 64 | signature | Ed25519 over `SIGNING_CONTEXT ‖ bytes 0..48 ‖ SHA-256(payload)` |
//! | 112 | payload_len | payload | kind-specific |
//!
//! Format 2 changed no byte of this header: it marks blacklist payloads whose entries carry a
//! set of reasons (see [`crate::blacklist::file`]); a format 1 blacklist file is still read,
//! as one reason an entry. Fare tables and key files are the same in both. A validator that
//! knows only format 1 refuses a format 2 file rather than misread it.
//!
//! ## Dates and versions (rollback and freeze): format 3
//!
//! Format 3 signs an issue time and an expiry into every file ([`Dates`]; formats 1 and 2 have
//! zeros there, and its payloads are those of format 2). Tools still read formats 1 and 2
//! (`replay --blacklist`, `blacklist info`), their dates [`None`]; a validator's downlink
//! folder refuses them ([`crate::upload::downlink::DownlinkError::Undated`]), refuses a file
//! past its expiry, and refuses any file whose version is below the one it holds, so a
//! replayed or restored older file cannot roll a bus back, and a file withheld long enough
//! expires (as TUF's metadata expiry bounds a freeze attack). Unix seconds in a u32 last
//! until 2106.
//!
//! The signature covers a digest of the payload rather than the payload itself so a 150 MB
//! snapshot is hashed once, in one pass (SHA-256 runs on the CPU's SHA extensions where it has
//! them); the header, and with it the kind and both versions, is signed as it stands.
//! The CRC catches a torn or corrupted download cheaply and says so before any crypto runs.
//!
//! ```
//! use fare_validator::signed::{self, FileKind};
//! let key = signed::signing_key_from_seed([7; 32]);
//! let file = signed::seal(FileKind::FareTable, 3, 0, b"base_fen = 200", &key);
//! let opened = signed::open(&file, FileKind::FareTable, &key.verifying_key()).unwrap();
//! assert_eq!(opened.header.version, 3);
//! assert_eq!(opened.payload, b"base_fen = 200");
//! ```

use std::path::Path;

use crc::{Crc, Table, CRC_32_ISCSI};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

pub use ed25519_dalek::{SigningKey as OperatorSigningKey, VerifyingKey as OperatorPublicKey};

/// First 8 bytes of every signed file.
pub const MAGIC: [u8; 8] = *b"FVSIGNED";
/// The format version written (see the module doc): dated.
pub const FORMAT_VERSION: u16 = 3;
/// The first format whose blacklist payloads carry a set of reasons an entry.
pub const FORMAT_VERSION_REASON_SETS: u16 = 2;
/// The first format with an issue time and an expiry.
pub const FORMAT_VERSION_DATED: u16 = 3;
/// The oldest format version still read: blacklist files of one reason an entry.
pub const FORMAT_VERSION_OLDEST: u16 = 1;
/// How long a file is valid when its signer does not say, seconds (30 days).
pub const VALIDITY_S_DEFAULT: u32 = 30 * 24 * 3600;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 112;
/// Largest payload accepted (a 20-million-entry blacklist is about 150 MB).
pub const PAYLOAD_LEN_MAX: u64 = 2 << 30;
/// Domain separation: a signature over one of these files is never valid for anything else.
pub const SIGNING_CONTEXT: &[u8] = b"fare-validator signed file v1\0";

const CRC_END: usize = 40;
const SIGNED_HEADER_END: usize = 48;
const SIGNATURE_LEN: usize = 64;
/// Slice-by-16 table: the CRC of a 150 MB snapshot must not dominate its open time.
const CRC32C: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC_32_ISCSI);

/// What a signed file holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u16)]
pub enum FileKind {
    BlacklistSnapshot = 1,
    BlacklistDelta = 2,
    FareTable = 3,
    RideCodeKeys = 4,
    /// The fleet's verified ride-code certificates ([`crate::ride_code::cert_set`]).
    VerifiedCertSnapshot = 5,
    VerifiedCertDelta = 6,
}

impl FileKind {
    pub const ALL: [FileKind; 6] = [
        FileKind::BlacklistSnapshot,
        FileKind::BlacklistDelta,
        FileKind::FareTable,
        FileKind::RideCodeKeys,
        FileKind::VerifiedCertSnapshot,
        FileKind::VerifiedCertDelta,
    ];

    pub fn from_u16(v: u16) -> Option<Self> {
        FileKind::ALL.into_iter().find(|k| *k as u16 == v)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::BlacklistSnapshot => "blacklist_snapshot",
            FileKind::BlacklistDelta => "blacklist_delta",
            FileKind::FareTable => "fare_table",
            FileKind::RideCodeKeys => "ride_code_keys",
            FileKind::VerifiedCertSnapshot => "verified_cert_snapshot",
            FileKind::VerifiedCertDelta => "verified_cert_delta",
        }
    }
}

/// Why a signed file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedError {
    #[error("not a signed file (bad magic)")]
    BadMagic,
    #[error("unsupported signed file format {found}")]
    UnsupportedFormat { found: u16 },
    #[error("unsupported signed file kind {found}")]
    UnsupportedKind { found: u16 },
    #[error("expected a {expected} file, found {found}")]
    WrongKind {
        expected: &'static str,
        found: &'static str,
    },
    #[error("reserved header bytes are not zero")]
    ReservedNotZero,
    #[error("dates out of order: issued {issued}, expires {expires} (unix s)")]
    BadDates { issued: u32, expires: u32 },
    #[error("payload of {len} bytes is over the limit")]
    PayloadTooLarge { len: u64 },
    #[error("truncated: {need} bytes needed, {have} present")]
    Truncated { need: u64, have: u64 },
    #[error("{extra} bytes after the payload")]
    TrailingBytes { extra: u64 },
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("bad signature: not signed by the operator key")]
    BadSignature,
}

/// When a file was signed and until when a validator may install it (unix seconds, signed
/// with the header). Issued is above 0 and below expires.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Dates {
    pub issued_unix_s: u32,
    pub expires_unix_s: u32,
}

impl Dates {
    /// Issued at `issued_unix_s`, valid for `validity_s` seconds.
    pub fn starting(issued_unix_s: u32, validity_s: u32) -> Dates {
        Dates {
            issued_unix_s: issued_unix_s.max(1),
            expires_unix_s: issued_unix_s.max(1).saturating_add(validity_s.max(1)),
        }
    }

    /// Issued now (the signer's clock), valid for [`VALIDITY_S_DEFAULT`].
    pub fn from_now() -> Dates {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
        Dates::starting(now, VALIDITY_S_DEFAULT)
    }

    /// Whether `now_unix_s` is past the expiry.
    pub fn expired_at(&self, now_unix_s: i64) -> bool {
        now_unix_s > i64::from(self.expires_unix_s)
    }
}

/// The parsed header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Header {
    /// [`FORMAT_VERSION_OLDEST`]..=[`FORMAT_VERSION`].
    pub format: u16,
    pub kind: FileKind,
    /// [`None`] before [`FORMAT_VERSION_DATED`].
    pub dates: Option<Dates>,
    pub version: u64,
    pub base_version: u64,
    pub payload_len: u64,
    pub crc32c: u32,
    pub signature: [u8; SIGNATURE_LEN],
}

/// A file whose structure and CRC are good; its signature is not checked yet.
#[derive(Clone, Copy, Debug)]
pub struct Unverified<'a> {
    pub header: Header,
    pub payload: &'a [u8],
    signed_header: &'a [u8],
}

/// A file whose signature verified against the operator key.
#[derive(Clone, Copy, Debug)]
pub struct Verified<'a> {
    pub header: Header,
    pub payload: &'a [u8],
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Structure and CRC, no signature: the fuzz entry point, never panics.
pub fn parse(bytes: &[u8]) -> Result<Unverified<'_>, SignedError> {
    let have = bytes.len() as u64;
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(SignedError::BadMagic);
    }
    if bytes.len() < HEADER_LEN {
        return Err(SignedError::Truncated {
            need: HEADER_LEN as u64,
            have,
        });
    }
    let format = le_u16(bytes, 8);
    if !(FORMAT_VERSION_OLDEST..=FORMAT_VERSION).contains(&format) {
        return Err(SignedError::UnsupportedFormat { found: format });
    }
    let kind_raw = le_u16(bytes, 10);
    let kind =
        FileKind::from_u16(kind_raw).ok_or(SignedError::UnsupportedKind { found: kind_raw })?;
    let (issued, expires) = (le_u32(bytes, 12), le_u32(bytes, 44));
    let dates = if format < FORMAT_VERSION_DATED {
        if issued != 0 || expires != 0 {
            return Err(SignedError::ReservedNotZero);
        }
        None
    } else {
        if issued == 0 || expires <= issued {
            return Err(SignedError::BadDates { issued, expires });
        }
        Some(Dates {
            issued_unix_s: issued,
            expires_unix_s: expires,
        })
    };
    let payload_len = le_u64(bytes, 32);
    if payload_len > PAYLOAD_LEN_MAX {
        return Err(SignedError::PayloadTooLarge { len: payload_len });
    }
    let need = HEADER_LEN as u64 + payload_len;
    if have < need {
        return Err(SignedError::Truncated { need, have });
    }
    if have > need {
        return Err(SignedError::TrailingBytes { extra: have - need });
    }
    let payload = &bytes[HEADER_LEN..];
    let stored = le_u32(bytes, CRC_END);
    let computed = crc_of(&bytes[..CRC_END], payload);
    if stored != computed {
        return Err(SignedError::CrcMismatch { stored, computed });
    }
    let mut signature = [0u8; SIGNATURE_LEN];
    signature.copy_from_slice(&bytes[SIGNED_HEADER_END..HEADER_LEN]);
    let header = Header {
        format,
        kind,
        dates,
        version: le_u64(bytes, 16),
        base_version: le_u64(bytes, 24),
        payload_len,
        crc32c: stored,
        signature,
    };
    Ok(Unverified {
        header,
        payload,
        signed_header: &bytes[..SIGNED_HEADER_END],
    })
}

impl<'a> Unverified<'a> {
    /// Check the operator's signature.
    pub fn verify(self, key: &VerifyingKey) -> Result<Verified<'a>, SignedError> {
        let message = signed_message(self.signed_header, self.payload);
        let signature = Signature::from_bytes(&self.header.signature);
        key.verify(&message, &signature)
            .map_err(|_| SignedError::BadSignature)?;
        Ok(Verified {
            header: self.header,
            payload: self.payload,
        })
    }

    /// Refuse a file of another kind before spending time on its signature.
    pub fn expect_kind(self, expected: FileKind) -> Result<Self, SignedError> {
        if self.header.kind == expected {
            Ok(self)
        } else {
            Err(SignedError::WrongKind {
                expected: expected.as_str(),
                found: self.header.kind.as_str(),
            })
        }
    }
}

/// Parse, check the kind, the CRC and the signature: the only way a validator should read one.
pub fn open<'a>(
    bytes: &'a [u8],
    expected: FileKind,
    key: &VerifyingKey,
) -> Result<Verified<'a>, SignedError> {
    parse(bytes)?.expect_kind(expected)?.verify(key)
}

/// Build a signed file around `payload`, issued now and valid for [`VALIDITY_S_DEFAULT`].
pub fn seal(
    kind: FileKind,
    version: u64,
    base_version: u64,
    payload: &[u8],
    key: &SigningKey,
) -> Vec<u8> {
    seal_dated(kind, version, base_version, Dates::from_now(), payload, key)
}

/// The one operation the operator's key performs: an Ed25519 signature over the message
/// `SIGNING_CONTEXT ‖ signed header (48 bytes) ‖ SHA-256(payload)` (125 bytes). A key file's
/// [`SigningKey`] implements it; an HSM (PKCS#11, mechanism `CKM_EDDSA`, the key
/// non-exportable) would implement it too and be handed to [`seal_dated_by`] or
/// [`crate::signing::sign_request`] instead.
pub trait FileSigner {
    fn sign_message(&self, message: &[u8]) -> [u8; SIGNATURE_LEN];
}

impl FileSigner for SigningKey {
    fn sign_message(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.sign(message).to_bytes()
    }
}

/// Build a signed file around `payload` with the given dates.
pub fn seal_dated(
    kind: FileKind,
    version: u64,
    base_version: u64,
    dates: Dates,
    payload: &[u8],
    key: &SigningKey,
) -> Vec<u8> {
    seal_dated_by(kind, version, base_version, dates, payload, key)
}

/// [`seal_dated`] with any [`FileSigner`] (a key file, an HSM).
pub fn seal_dated_by(
    kind: FileKind,
    version: u64,
    base_version: u64,
    dates: Dates,
    payload: &[u8],
    signer: &dyn FileSigner,
) -> Vec<u8> {
    assert!(
        dates.issued_unix_s > 0 && dates.expires_unix_s > dates.issued_unix_s,
        "dates out of order"
    );
    assert!(
        payload.len() as u64 <= PAYLOAD_LEN_MAX,
        "payload over PAYLOAD_LEN_MAX"
    );
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(kind as u16).to_le_bytes());
    out.extend_from_slice(&dates.issued_unix_s.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&base_version.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    let crc = crc_of(&out[..CRC_END], payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&dates.expires_unix_s.to_le_bytes());
    debug_assert_eq!(out.len(), SIGNED_HEADER_END);
    let signature = signer.sign_message(&signed_message(&out, payload));
    out.extend_from_slice(&signature);
    debug_assert_eq!(out.len(), HEADER_LEN);
    out.extend_from_slice(payload);
    out
}

/// Whether `bytes` starts like a signed file (for loaders that also take text formats).
pub fn has_magic(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

fn crc_of(header: &[u8], payload: &[u8]) -> u32 {
    let mut digest = CRC32C.digest();
    digest.update(header);
    digest.update(payload);
    digest.finalize()
}

fn signed_message(signed_header: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_CONTEXT.len() + SIGNED_HEADER_END + 32);
    m.extend_from_slice(SIGNING_CONTEXT);
    m.extend_from_slice(signed_header);
    m.extend_from_slice(&Sha256::digest(payload));
    m
}

// ---------------------------------------------------------------------------------------
// Operator keys: a secret key file holds the 32-byte Ed25519 seed as hex; a public key is
// 32 bytes as hex (a file or the text itself).

/// Why a key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("key must be 64 hex digits (32 bytes)")]
    Format,
    #[error("not a valid Ed25519 public key")]
    BadPublicKey,
    #[error(
        "not an operator signing key file (no signing-key label line): a public key (KEY.pub) \
         cannot sign; give the file `blacklist keygen --out KEY` wrote as KEY"
    )]
    NotASigningKey,
}

/// A signing key from its 32-byte seed (tests and fixtures use fixed seeds).
pub fn signing_key_from_seed(seed: [u8; 32]) -> SigningKey {
    SigningKey::from_bytes(&seed)
}

/// A new operator key from the operating system's random source.
pub fn generate_signing_key() -> SigningKey {
    use rand::RngCore;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    SigningKey::from_bytes(&seed)
}

fn hex32(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = hex::decode(text.trim()).map_err(|_| KeyError::Format)?;
    bytes.try_into().map_err(|_| KeyError::Format)
}

pub fn signing_key_from_hex(text: &str) -> Result<SigningKey, KeyError> {
    Ok(SigningKey::from_bytes(&hex32(text)?))
}

pub fn public_key_from_hex(text: &str) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_bytes(&hex32(text)?).map_err(|_| KeyError::BadPublicKey)
}

pub fn public_key_hex(key: &VerifyingKey) -> String {
    hex::encode(key.as_bytes())
}

pub fn signing_key_hex(key: &SigningKey) -> String {
    hex::encode(key.to_bytes())
}

fn read_text(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// The first line of an operator signing-key file. A public key file holds the same 64 hex
/// digits with no such line, so a public key given where the secret one is wanted is refused
/// instead of signing files that every bus would refuse.
pub const SIGNING_KEY_LABEL: &str = "fare-validator operator signing key (Ed25519, secret)";

/// Write an operator secret key file: [`SIGNING_KEY_LABEL`], then the key in hex; readable by
/// its owner only, never over an existing file.
pub fn write_signing_key(path: &Path, key: &SigningKey) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    writeln!(f, "{SIGNING_KEY_LABEL}")?;
    writeln!(f, "{}", signing_key_hex(key))
}

/// Read an operator secret key file (as `keygen` writes it: the label line, then 64 hex
/// digits). A file without the label is refused as [`KeyError::NotASigningKey`]: it is most
/// likely the public key (`KEY.pub`).
pub fn read_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let text = read_text(path)?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    match (lines.next(), lines.next(), lines.next()) {
        (Some(label), Some(hex), None) if label == SIGNING_KEY_LABEL => signing_key_from_hex(hex),
        _ => Err(KeyError::NotASigningKey),
    }
}

/// Read a public key given as 64 hex digits, or as the path of a file holding them.
pub fn read_public_key(arg: &str) -> Result<VerifyingKey, KeyError> {
    match public_key_from_hex(arg) {
        Ok(key) => Ok(key),
        Err(_) => public_key_from_hex(&read_text(Path::new(arg))?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        signing_key_from_seed([1; 32])
    }

    #[test]
    fn sealed_file_opens_with_its_key_and_kind() {
        let file = seal(FileKind::BlacklistDelta, 8, 7, b"payload", &key());
        let v = open(&file, FileKind::BlacklistDelta, &key().verifying_key()).unwrap();
        assert_eq!(
            (v.header.version, v.header.base_version, v.payload),
            (8, 7, &b"payload"[..])
        );
    }

    #[test]
    fn every_malformation_has_its_error() {
        let pk = key().verifying_key();
        let file = seal(FileKind::BlacklistSnapshot, 1, 0, b"abcdef", &key());
        assert_eq!(parse(b"nope").unwrap_err(), SignedError::BadMagic);
        assert!(matches!(
            parse(&file[..50]),
            Err(SignedError::Truncated { .. })
        ));
        assert!(matches!(
            parse(&file[..file.len() - 1]),
            Err(SignedError::Truncated { .. })
        ));
        let mut longer = file.clone();
        longer.push(0);
        assert!(matches!(
            parse(&longer),
            Err(SignedError::TrailingBytes { extra: 1 })
        ));
        let mut flipped = file.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(
            parse(&flipped),
            Err(SignedError::CrcMismatch { .. })
        ));
        let mut format = file.clone();
        format[8] = 9;
        assert_eq!(
            parse(&format).unwrap_err(),
            SignedError::UnsupportedFormat { found: 9 }
        );
        let mut kind = file.clone();
        kind[10] = 99;
        assert_eq!(
            parse(&kind).unwrap_err(),
            SignedError::UnsupportedKind { found: 99 }
        );
        assert!(matches!(
            open(&file, FileKind::FareTable, &pk),
            Err(SignedError::WrongKind { .. })
        ));
        let other = signing_key_from_seed([2; 32]).verifying_key();
        assert_eq!(
            open(&file, FileKind::BlacklistSnapshot, &other).unwrap_err(),
            SignedError::BadSignature
        );
    }

    #[test]
    fn forged_payload_with_fixed_crc_fails_the_signature() {
        let pk = key().verifying_key();
        let file = seal(FileKind::BlacklistSnapshot, 1, 0, b"abcdef", &key());
        // A forger who recomputes the CRC still cannot produce the signature.
        let forged = resign_crc(&file, b"abcdeg");
        assert!(parse(&forged).is_ok());
        assert_eq!(
            open(&forged, FileKind::BlacklistSnapshot, &pk).unwrap_err(),
            SignedError::BadSignature
        );
        // The version is signed too.
        let mut bumped = file.clone();
        bumped[16] = 2;
        let bumped = resign_crc(&bumped, b"abcdef");
        assert_eq!(
            open(&bumped, FileKind::BlacklistSnapshot, &pk).unwrap_err(),
            SignedError::BadSignature
        );
    }

    fn resign_crc(file: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut out = file[..HEADER_LEN].to_vec();
        out[32..40].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        let crc = crc_of(&out[..CRC_END], payload);
        out[CRC_END..CRC_END + 4].copy_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn dates_are_signed_and_undated_files_still_parse() {
        let dates = Dates::starting(1_800_000_000, 3600);
        let file = seal_dated(FileKind::FareTable, 4, 0, dates, b"x", &key());
        let v = open(&file, FileKind::FareTable, &key().verifying_key()).unwrap();
        assert_eq!(v.header.dates, Some(dates));
        assert!(!dates.expired_at(1_800_003_600) && dates.expired_at(1_800_003_601));
        // A later expiry written over the signed one fails the signature.
        let mut later = file.clone();
        later[44..48].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            open(&later, FileKind::FareTable, &key().verifying_key()).unwrap_err(),
            SignedError::BadSignature
        );
        // Expiry before issue is malformed.
        let mut inverted = file.clone();
        inverted[44..48].copy_from_slice(&1u32.to_le_bytes());
        assert!(matches!(
            parse(&inverted),
            Err(SignedError::BadDates { .. })
        ));
        // The undated layouts of formats 1 and 2 still parse (tools read them), dates None.
        for format in [FORMAT_VERSION_OLDEST, FORMAT_VERSION_REASON_SETS] {
            let mut old = file.clone();
            old[8..10].copy_from_slice(&format.to_le_bytes());
            old[12..16].fill(0);
            old[44..48].fill(0);
            let old = resign_crc(&old, b"x");
            assert_eq!(parse(&old).unwrap().header.dates, None);
        }
    }

    #[test]
    fn parse_never_panics_on_prefixes_and_bit_flips() {
        let file = seal(FileKind::RideCodeKeys, 5, 0, &[0xAB; 40], &key());
        for n in 0..file.len() {
            let _ = parse(&file[..n]);
        }
        for i in 0..file.len() {
            let mut f = file.clone();
            f[i] ^= 0x80;
            assert!(
                open(&f, FileKind::RideCodeKeys, &key().verifying_key()).is_err(),
                "flip at {i}"
            );
        }
    }
}
