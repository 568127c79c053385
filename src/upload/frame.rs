//! The depot wire protocol: every byte that crosses between a validator and the upload
//! station is framed, parsed and checked here, and only here.
//!
//! ## Frame
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 2 | magic `FV` (`0x46 0x56`) |
//! | 2 | 1 | protocol version, [`PROTOCOL_VERSION`] |
//! | 3 | 1 | type ([`FrameType`]) |
//! | 4 | 4 | payload length N, at most [`FRAME_PAYLOAD_BYTES_MAX`] ([`HANDSHAKE_PAYLOAD_BYTES_MAX`] from a peer not yet authenticated) |
//! | 8 | N | payload |
//! | 8+N | 4 | CRC-32/ISCSI of bytes 0..8+N |
//!
//! Integers are big-endian. The header is checked (magic, version, type, length) before the
//! payload is read, so a hostile length never makes the reader allocate.
//!
//! ## Session
//!
//! ```text
//! validator                                  station
//!   Hello {client nonce, terminal, held versions, journal epoch}  ─▶
//!                                            ◀─  Challenge {server nonce}
//!   Auth {HMAC(secret, server nonce ‖ hello)}      ─▶      (or ◀─ Refused, then close)
//!                                            ◀─  Welcome {acked seq}            sealed
//!   [Gone {from, to} ─▶  ◀─ Ack]                                        sealed, when needed
//!   [Proofs {seq, ride code} ...  ─▶]                     sealed, when the records have any
//!   [AcquirerData {seq, QuickPass data} ... ─▶]           sealed, when the records have any
//!   Batch {from seq, records} ─▶  ◀─ Ack {contiguous seq, max seq}   ... sealed, repeated
//!   Done                                           ─▶                            sealed
//!                                            ◀─  FileChunk ... Bye               sealed
//! ```
//!
//! After `Auth`, every payload is *sealed* (see [`super::auth::Session`]):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | message counter of this direction, from 1 |
//! | 8 | M | body (below) |
//! | 8+M | 32 | HMAC-SHA256(session key, direction ‖ type ‖ counter ‖ body) |
//!
//! ## Bodies
//!
//! | type | body |
//! | --- | --- |
//! | 1 Hello | client nonce (32), terminal id length (1), terminal id (ASCII `[A-Za-z0-9_-]`, 1..=[`TERMINAL_ID_BYTES_MAX`]), blacklist version (8), fare table version (8), ride-code keys version (8), verified-certificate set version (8), journal epoch (8), first seq of the epoch (8); a version 0 is a file not held |
//! | 2 Challenge | server nonce (32) |
//! | 3 Auth | proof (32) |
//! | 4 Welcome | acknowledged seq of this terminal's journal of that epoch (8) |
//! | 5 Refused | reason code (1), UTF-8 text (rest, at most [`REFUSED_TEXT_BYTES_MAX`]) |
//! | 6 Batch | from seq (8), record count (2, 1..=[`BATCH_RECORDS_MAX`]), records (count × 96) |
//! | 7 Ack | highest contiguous seq stored (8), highest seq stored (8), records newly stored (4), records refused (4): another record is stored at their seq, or a field is out of range (`depot::checks`); the station keeps and reports each |
//! | 8 Done | empty |
//! | 9 FileChunk | file kind (1), file version (8), total length (4), offset (4), bytes (rest) |
//! | 10 Bye | empty |
//! | 11 Gone | from seq (8), to seq (8): records the validator no longer holds (dropped after an earlier acknowledgement the station has since lost); answered by an Ack |
//! | 12 Proofs | count (2, 1..=[`PROOFS_PER_FRAME_MAX`]), then per proof: record seq (8), the ride code's bytes as scanned (201, ride-code-v1.md); sent before the batches of those records, not answered: the station keeps them beside the records as the riders' signatures |
//! | 13 AcquirerData | count (2, 1..=[`ACQUIRER_PER_FRAME_MAX`]), then per QuickPass record: seq (8), the acquirer's data (284: sealed PAN, issuer application data, field 55; `crate::card::acquirer`); sent before the batches of those records, not answered: the station keeps them beside the records for `depot export --acquirer` |
//!
//! A batch covers the seqs `from ..= last record's seq`: the records are in increasing seq
//! order, and a seq of that range with no record is one the validator's journal lost (a
//! corrupt slot), declared so the station can report the gap instead of waiting for it.

use crc::{Crc, CRC_32_ISCSI};

use crate::journal::{RECORD_BYTES, SEQ_MAX};

pub const MAGIC: [u8; 2] = *b"FV";
/// Version 2 added the journal's identity (epoch) to the hello, the conflict count to the
/// ack and the Gone frame; version 3 the Proofs frame; version 4 the AcquirerData frame;
/// version 5 the verified-certificate set's version to the hello (the station sends the set's
/// snapshot or delta in the downlink). A station answers an older hello with a Refused frame
/// in that version's framing, so an old validator says why, and serves nothing.
pub const PROTOCOL_VERSION: u8 = 5;
/// QuickPass acquirer entries in one AcquirerData frame: 512 × 292 bytes, well under a frame.
pub const ACQUIRER_PER_FRAME_MAX: usize = 512;
/// Bytes of one entry in an AcquirerData frame: seq and the acquirer's data.
pub const ACQUIRER_ENTRY_WIRE_BYTES: usize = 8 + crate::card::acquirer::ACQUIRER_DATA_BYTES;
/// Ride-code proofs in one Proofs frame: 512 × 209 bytes, well under a frame.
pub const PROOFS_PER_FRAME_MAX: usize = 512;
/// Bytes of one proof in a Proofs frame: seq and the ride code.
pub const PROOF_BYTES: usize = 8 + crate::ride_code::format::CODE_BYTES;
pub const FRAME_HEADER_BYTES: usize = 8;
pub const FRAME_CRC_BYTES: usize = 4;
/// Largest payload accepted (256 KiB: a full batch of records is 196,658 bytes sealed).
pub const FRAME_PAYLOAD_BYTES_MAX: usize = 262_144;
/// Largest payload the station reads before the peer has authenticated: a hello is at most
/// 32 + 1 + 32 + 32 + 16 = 113 bytes, a proof 32.
pub const HANDSHAKE_PAYLOAD_BYTES_MAX: usize = 128;
/// Largest frame on the wire, header and CRC included.
pub const FRAME_BYTES_MAX: usize = FRAME_HEADER_BYTES + FRAME_PAYLOAD_BYTES_MAX + FRAME_CRC_BYTES;
/// Records in one upload batch: one SQLite transaction, so one fsync, at the station. At
/// 512 the station's disk (about 3.5 ms per sync here) capped ingest near 40,000 records/s;
/// 2,048 records (196 KiB) keeps the sync under a quarter of the time.
pub const BATCH_RECORDS_MAX: usize = 2_048;
/// Longest terminal id, bytes.
pub const TERMINAL_ID_BYTES_MAX: usize = 32;
/// Longest human text in a refusal, bytes.
pub const REFUSED_TEXT_BYTES_MAX: usize = 256;
/// Bytes of a downlink file carried by one chunk frame.
pub const FILE_CHUNK_BYTES_MAX: usize = 32_768;
pub const NONCE_BYTES: usize = 32;
pub const MAC_BYTES: usize = 32;
/// Counter and MAC around a sealed body.
pub const SEAL_OVERHEAD_BYTES: usize = 8 + MAC_BYTES;

const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    Hello = 1,
    Challenge = 2,
    Auth = 3,
    Welcome = 4,
    Refused = 5,
    Batch = 6,
    Ack = 7,
    Done = 8,
    FileChunk = 9,
    Bye = 10,
    Gone = 11,
    Proofs = 12,
    AcquirerData = 13,
}

impl FrameType {
    pub fn from_u8(v: u8) -> Option<Self> {
        use FrameType::*;
        [
            Hello,
            Challenge,
            Auth,
            Welcome,
            Refused,
            Batch,
            Ack,
            Done,
            FileChunk,
            Bye,
            Gone,
            Proofs,
            AcquirerData,
        ]
        .into_iter()
        .find(|t| *t as u8 == v)
    }

    /// Whether the payload carries a session counter and MAC.
    pub fn is_sealed(self) -> bool {
        !matches!(
            self,
            FrameType::Hello | FrameType::Challenge | FrameType::Auth | FrameType::Refused
        )
    }
}

/// Every way a frame or a body can be malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("not a depot frame (bad magic)")]
    BadMagic,
    #[error("unsupported protocol version {0}")]
    BadVersion(u8),
    #[error("a hello of protocol version {0}, no longer served")]
    OldVersion(u8),
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    #[error("frame payload of {0} bytes exceeds {FRAME_PAYLOAD_BYTES_MAX}")]
    Oversized(u32),
    #[error("frame payload of {len} bytes exceeds {max} at this point of the session")]
    OverLimit { len: usize, max: usize },
    #[error("truncated frame: {needed} bytes needed")]
    Truncated { needed: usize },
    #[error("frame checksum does not match")]
    BadCrc,
    #[error("unexpected {0:?} frame here")]
    Unexpected(FrameType),
    #[error("malformed {ty:?} body: {what}")]
    Body { ty: FrameType, what: &'static str },
}

/// One checked frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub ty: FrameType,
    pub payload: &'a [u8],
}

/// Check a frame header and return the type and payload length.
pub fn parse_header(h: &[u8; FRAME_HEADER_BYTES]) -> Result<(FrameType, usize), FrameError> {
    if h[..2] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    if (1..PROTOCOL_VERSION).contains(&h[2]) && h[3] == FrameType::Hello as u8 {
        return Err(FrameError::OldVersion(h[2]));
    }
    if h[2] != PROTOCOL_VERSION {
        return Err(FrameError::BadVersion(h[2]));
    }
    let ty = FrameType::from_u8(h[3]).ok_or(FrameError::UnknownType(h[3]))?;
    let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    if len as usize > FRAME_PAYLOAD_BYTES_MAX {
        return Err(FrameError::Oversized(len));
    }
    Ok((ty, len as usize))
}

/// Parse one whole frame at the start of `bytes`; returns it and the bytes it used.
/// The entry point for fuzzing: any input gives a frame or an error, never a panic.
pub fn parse_frame(bytes: &[u8]) -> Result<(Frame<'_>, usize), FrameError> {
    let header: &[u8; FRAME_HEADER_BYTES] = bytes
        .get(..FRAME_HEADER_BYTES)
        .and_then(|h| h.try_into().ok())
        .ok_or(FrameError::Truncated {
            needed: FRAME_HEADER_BYTES,
        })?;
    let (ty, len) = parse_header(header)?;
    let total = FRAME_HEADER_BYTES + len + FRAME_CRC_BYTES;
    let whole = bytes
        .get(..total)
        .ok_or(FrameError::Truncated { needed: total })?;
    let (body, crc) = whole.split_at(FRAME_HEADER_BYTES + len);
    if CRC32.checksum(body) != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(FrameError::BadCrc);
    }
    Ok((
        Frame {
            ty,
            payload: &body[FRAME_HEADER_BYTES..],
        },
        total,
    ))
}

/// Check the CRC of a frame whose header was already parsed (`rest` = payload ‖ CRC).
pub fn check_crc(header: &[u8; FRAME_HEADER_BYTES], rest: &[u8]) -> Result<(), FrameError> {
    let Some(split) = rest.len().checked_sub(FRAME_CRC_BYTES) else {
        return Err(FrameError::Truncated {
            needed: FRAME_HEADER_BYTES + FRAME_CRC_BYTES,
        });
    };
    let (payload, crc) = rest.split_at(split);
    let mut digest = CRC32.digest();
    digest.update(header);
    digest.update(payload);
    if digest.finalize() != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(FrameError::BadCrc);
    }
    Ok(())
}

/// Encode a frame. A payload above the bound is a bug of the sender, not input.
pub fn encode_frame(ty: FrameType, payload: &[u8]) -> Vec<u8> {
    encode_frame_version(PROTOCOL_VERSION, ty, payload)
}

/// Encode a frame in the framing of protocol `version` (only to refuse an old validator in
/// words it reads).
pub fn encode_frame_version(version: u8, ty: FrameType, payload: &[u8]) -> Vec<u8> {
    assert!(
        payload.len() <= FRAME_PAYLOAD_BYTES_MAX,
        "frame payload too long"
    );
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len() + FRAME_CRC_BYTES);
    out.extend_from_slice(&MAGIC);
    out.push(version);
    out.push(ty as u8);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    let crc = CRC32.checksum(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Versions of the downlink files a validator holds (0: none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldVersions {
    pub blacklist: u64,
    pub fares: u64,
    pub keys: u64,
    /// The fleet's verified-certificate set ([`crate::ride_code::cert_set`]).
    pub cert_set: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub client_nonce: [u8; NONCE_BYTES],
    pub terminal_id: String,
    pub held: HeldVersions,
    /// The identity of the validator's journal (0: a journal made before identities).
    pub epoch: u64,
    /// The first seq of that journal's epoch (1 unless its identity was remade).
    pub epoch_first_seq: u64,
}

/// Whether a terminal id is acceptable (also used when a terminal is provisioned).
pub fn valid_terminal_id(id: &str) -> bool {
    (1..=TERMINAL_ID_BYTES_MAX).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A strict little reader over a body.
struct Body<'a> {
    ty: FrameType,
    rest: &'a [u8],
}

impl<'a> Body<'a> {
    fn new(ty: FrameType, rest: &'a [u8]) -> Self {
        Body { ty, rest }
    }
    fn bad(&self, what: &'static str) -> FrameError {
        FrameError::Body { ty: self.ty, what }
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FrameError> {
        if self.rest.len() < n {
            return Err(self.bad(what));
        }
        let (a, b) = self.rest.split_at(n);
        self.rest = b;
        Ok(a)
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], FrameError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, FrameError> {
        self.array::<8>(what).map(u64::from_be_bytes)
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, FrameError> {
        self.array::<4>(what).map(u32::from_be_bytes)
    }
    fn end(self) -> Result<(), FrameError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.bad("trailing bytes"))
        }
    }
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        let id = self.terminal_id.as_bytes();
        let mut out = Vec::with_capacity(NONCE_BYTES + 1 + id.len() + 48);
        out.extend_from_slice(&self.client_nonce);
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        for v in [
            self.held.blacklist,
            self.held.fares,
            self.held.keys,
            self.held.cert_set,
            self.epoch,
            self.epoch_first_seq,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out
    }

    pub fn decode(payload: &[u8]) -> Result<Hello, FrameError> {
        let mut b = Body::new(FrameType::Hello, payload);
        let client_nonce = b.array::<NONCE_BYTES>("client nonce")?;
        let len = b.array::<1>("terminal id length")?[0] as usize;
        let id = b.take(len, "terminal id")?;
        let terminal_id = std::str::from_utf8(id)
            .ok()
            .filter(|s| valid_terminal_id(s))
            .ok_or_else(|| b.bad("terminal id"))?
            .to_string();
        let held = HeldVersions {
            blacklist: b.u64("blacklist version")?,
            fares: b.u64("fares version")?,
            keys: b.u64("keys version")?,
            cert_set: b.u64("verified-certificate set version")?,
        };
        let epoch = b.u64("epoch")?;
        let epoch_first_seq = b.u64("epoch first seq")?;
        if !(1..=SEQ_MAX).contains(&epoch_first_seq) {
            return Err(b.bad("epoch first seq out of range"));
        }
        b.end()?;
        Ok(Hello {
            client_nonce,
            terminal_id,
            held,
            epoch,
            epoch_first_seq,
        })
    }
}

/// A fixed-size body (nonce or proof).
pub fn decode_32(ty: FrameType, payload: &[u8]) -> Result<[u8; 32], FrameError> {
    let mut b = Body::new(ty, payload);
    let a = b.array::<32>("32 bytes")?;
    b.end()?;
    Ok(a)
}

/// Why the station refused a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RefusedCode {
    /// Unknown terminal or wrong proof: deliberately the same code for both.
    NotAuthenticated = 1,
    Busy = 2,
    Protocol = 3,
    Storage = 4,
}

pub fn encode_refused(code: RefusedCode, text: &str) -> Vec<u8> {
    let mut end = text.len().min(REFUSED_TEXT_BYTES_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = vec![code as u8];
    out.extend_from_slice(&text.as_bytes()[..end]);
    out
}

pub fn decode_refused(payload: &[u8]) -> Result<(u8, String), FrameError> {
    let mut b = Body::new(FrameType::Refused, payload);
    let code = b.array::<1>("code")?[0];
    if b.rest.len() > REFUSED_TEXT_BYTES_MAX {
        return Err(b.bad("text too long"));
    }
    Ok((code, String::from_utf8_lossy(b.rest).into_owned()))
}

/// An upload batch: raw journal records, checked one by one by the receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch<'a> {
    pub from_seq: u64,
    /// `count × RECORD_BYTES` raw records.
    pub records: &'a [u8],
}

impl Batch<'_> {
    pub fn encode_body(from_seq: u64, records: &[[u8; RECORD_BYTES]]) -> Vec<u8> {
        assert!(
            (1..=BATCH_RECORDS_MAX).contains(&records.len()),
            "batch size"
        );
        let mut out = Vec::with_capacity(10 + records.len() * RECORD_BYTES);
        out.extend_from_slice(&from_seq.to_be_bytes());
        out.extend_from_slice(&(records.len() as u16).to_be_bytes());
        for r in records {
            out.extend_from_slice(r);
        }
        out
    }

    pub fn decode(body: &[u8]) -> Result<Batch<'_>, FrameError> {
        let mut b = Body::new(FrameType::Batch, body);
        let from_seq = b.u64("from seq")?;
        let count = u16::from_be_bytes(b.array::<2>("count")?) as usize;
        if !(1..=BATCH_RECORDS_MAX).contains(&count) {
            return Err(b.bad("record count out of range"));
        }
        if from_seq == 0 {
            return Err(b.bad("from seq 0"));
        }
        let records = b.take(count * RECORD_BYTES, "records")?;
        b.end()?;
        Ok(Batch { from_seq, records })
    }

    pub fn raw_records(&self) -> impl Iterator<Item = &[u8; RECORD_BYTES]> + '_ {
        self.records
            .chunks_exact(RECORD_BYTES)
            .filter_map(|c| c.try_into().ok())
    }
}

/// The station's answer to a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ack {
    /// Highest seq such that every seq up to it is stored or declared lost.
    pub contiguous_seq: u64,
    pub max_seq: u64,
    pub stored: u32,
    /// Records refused: another record is stored at their (terminal, epoch, seq), or a
    /// field is out of range (`crate::depot::checks`). The station keeps each apart and
    /// reports it; its seq counts as accounted for.
    pub refused: u32,
}

impl Ack {
    pub fn encode_body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        out.extend_from_slice(&self.contiguous_seq.to_be_bytes());
        out.extend_from_slice(&self.max_seq.to_be_bytes());
        out.extend_from_slice(&self.stored.to_be_bytes());
        out.extend_from_slice(&self.refused.to_be_bytes());
        out
    }

    pub fn decode(body: &[u8]) -> Result<Ack, FrameError> {
        let mut b = Body::new(FrameType::Ack, body);
        let a = Ack {
            contiguous_seq: b.u64("contiguous seq")?,
            max_seq: b.u64("max seq")?,
            stored: b.u32("stored")?,
            refused: b.u32("refused")?,
        };
        b.end()?;
        Ok(a)
    }
}

/// The body of a Gone frame: seqs `from ..= to` the validator no longer holds.
pub fn encode_gone(from_seq: u64, to_seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&from_seq.to_be_bytes());
    out.extend_from_slice(&to_seq.to_be_bytes());
    out
}

pub fn decode_gone(body: &[u8]) -> Result<(u64, u64), FrameError> {
    let mut b = Body::new(FrameType::Gone, body);
    let from = b.u64("from seq")?;
    let to = b.u64("to seq")?;
    b.end()?;
    if from == 0 || from > to || to > SEQ_MAX {
        return Err(FrameError::Body {
            ty: FrameType::Gone,
            what: "seq range",
        });
    }
    Ok((from, to))
}

/// The body of a Proofs frame: each record's seq and the ride code behind it.
pub fn encode_proofs(proofs: &[(u64, [u8; crate::ride_code::format::CODE_BYTES])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + proofs.len() * PROOF_BYTES);
    out.extend_from_slice(&(proofs.len() as u16).to_be_bytes());
    for (seq, code) in proofs {
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(code);
    }
    out
}

/// The proofs of a Proofs frame, each seq within 1..=[`SEQ_MAX`].
#[allow(clippy::type_complexity)]
pub fn decode_proofs(
    body: &[u8],
) -> Result<Vec<(u64, [u8; crate::ride_code::format::CODE_BYTES])>, FrameError> {
    let mut b = Body::new(FrameType::Proofs, body);
    let n = u16::from_be_bytes(b.array::<2>("count")?) as usize;
    if n == 0 || n > PROOFS_PER_FRAME_MAX {
        return Err(b.bad("proof count"));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let seq = b.u64("seq")?;
        if seq == 0 || seq > SEQ_MAX {
            return Err(b.bad("seq"));
        }
        out.push((seq, b.array("ride code")?));
    }
    b.end()?;
    Ok(out)
}

/// The body of an AcquirerData frame: each QuickPass record's seq and its acquirer's data.
pub fn encode_acquirer(entries: &[crate::journal::acquirer::AcquirerEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + entries.len() * ACQUIRER_ENTRY_WIRE_BYTES);
    out.extend_from_slice(&(entries.len() as u16).to_be_bytes());
    for (seq, data) in entries {
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(data);
    }
    out
}

/// The entries of an AcquirerData frame, each seq within 1..=[`SEQ_MAX`] and each entry's
/// data well formed ([`crate::card::acquirer::AcquirerData::decode`]).
pub fn decode_acquirer(
    body: &[u8],
) -> Result<Vec<crate::journal::acquirer::AcquirerEntry>, FrameError> {
    let mut b = Body::new(FrameType::AcquirerData, body);
    let n = u16::from_be_bytes(b.array::<2>("count")?) as usize;
    if n == 0 || n > ACQUIRER_PER_FRAME_MAX {
        return Err(b.bad("entry count"));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let seq = b.u64("seq")?;
        if seq == 0 || seq > SEQ_MAX {
            return Err(b.bad("seq"));
        }
        let data = b.array("acquirer data")?;
        if crate::card::acquirer::AcquirerData::decode(&data).is_none() {
            return Err(b.bad("acquirer data"));
        }
        out.push((seq, data));
    }
    b.end()?;
    Ok(out)
}

pub fn encode_u64(v: u64) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

pub fn decode_u64(ty: FrameType, body: &[u8]) -> Result<u64, FrameError> {
    let mut b = Body::new(ty, body);
    let v = b.u64("u64")?;
    b.end()?;
    Ok(v)
}

pub fn decode_empty(ty: FrameType, body: &[u8]) -> Result<(), FrameError> {
    Body::new(ty, body).end()
}

/// One piece of a downlink file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileChunk<'a> {
    pub kind: u8,
    pub version: u64,
    pub total_len: u32,
    pub offset: u32,
    pub bytes: &'a [u8],
}

impl FileChunk<'_> {
    pub fn encode_body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17 + self.bytes.len());
        out.push(self.kind);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.total_len.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(self.bytes);
        out
    }

    pub fn decode(body: &[u8]) -> Result<FileChunk<'_>, FrameError> {
        let mut b = Body::new(FrameType::FileChunk, body);
        let kind = b.array::<1>("kind")?[0];
        let version = b.u64("version")?;
        let total_len = b.u32("total length")?;
        let offset = b.u32("offset")?;
        let bytes = b.rest;
        if bytes.len() > FILE_CHUNK_BYTES_MAX {
            return Err(b.bad("chunk too long"));
        }
        let end = u64::from(offset) + bytes.len() as u64;
        if end > u64::from(total_len) {
            return Err(b.bad("chunk beyond the file"));
        }
        Ok(FileChunk {
            kind,
            version,
            total_len,
            offset,
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frame_round_trips_and_each_malformation_has_its_error() {
        let f = encode_frame(FrameType::Ack, b"hello");
        let (frame, used) = parse_frame(&f).unwrap();
        assert_eq!(used, f.len());
        assert_eq!(frame.ty, FrameType::Ack);
        assert_eq!(frame.payload, b"hello");

        let mut bad = f.clone();
        bad[0] = b'X';
        assert_eq!(parse_frame(&bad).unwrap_err(), FrameError::BadMagic);
        let mut bad = f.clone();
        bad[2] = 9;
        assert_eq!(parse_frame(&bad).unwrap_err(), FrameError::BadVersion(9));
        let mut bad = f.clone();
        bad[3] = 200;
        assert_eq!(parse_frame(&bad).unwrap_err(), FrameError::UnknownType(200));
        let mut bad = f.clone();
        bad[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            parse_frame(&bad).unwrap_err(),
            FrameError::Oversized(u32::MAX)
        );
        assert!(matches!(
            parse_frame(&f[..f.len() - 1]),
            Err(FrameError::Truncated { .. })
        ));
        let mut bad = f.clone();
        bad[9] ^= 0x01;
        assert_eq!(parse_frame(&bad).unwrap_err(), FrameError::BadCrc);
    }

    #[test]
    fn hello_is_strict() {
        let h = Hello {
            client_nonce: [7; 32],
            terminal_id: "bus-0042".into(),
            held: HeldVersions {
                blacklist: 3,
                fares: 1,
                keys: 0,
                cert_set: 9,
            },
            epoch: 0x1234,
            epoch_first_seq: 1,
        };
        assert_eq!(Hello::decode(&h.encode()), Ok(h.clone()));
        let mut e = h.encode();
        e[33] = b' ';
        assert!(Hello::decode(&e).is_err());
        let mut e = h.encode();
        e.push(0);
        assert!(Hello::decode(&e).is_err());
        // The hello of version 4 (no set version) is refused on its header, read or not.
        let mut e = h.encode();
        e.truncate(e.len() - 8);
        assert!(Hello::decode(&e).is_err());
        let old = encode_frame_version(4, FrameType::Hello, &e);
        assert_eq!(parse_frame(&old).unwrap_err(), FrameError::OldVersion(4));
    }

    #[test]
    fn proofs_round_trip_and_bad_counts_are_refused() {
        let proofs = vec![(3u64, [7u8; 201]), (9, [1; 201])];
        assert_eq!(decode_proofs(&encode_proofs(&proofs)), Ok(proofs.clone()));
        assert!(decode_proofs(&encode_proofs(&[])).is_err());
        let mut cut = encode_proofs(&proofs);
        cut.pop();
        assert!(decode_proofs(&cut).is_err());
        assert!(decode_proofs(&encode_proofs(&[(0, [0; 201])])).is_err());
    }

    #[test]
    fn acquirer_entries_round_trip_and_malformed_ones_are_refused() {
        use crate::card::acquirer::{AcquirerData, SealedPan, ACQUIRER_DATA_BYTES};
        let mut field55 = heapless::Vec::new();
        field55
            .extend_from_slice(&[0x9F, 0x26, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0x9F, 0x36, 2, 0, 9])
            .unwrap();
        let data = AcquirerData {
            sealed_pan: SealedPan([5; 58]),
            iad: heapless::Vec::from_slice(&[7, 1]).unwrap(),
            field55,
        }
        .encode();
        let entries = vec![(4u64, data), (6, data)];
        assert_eq!(
            decode_acquirer(&encode_acquirer(&entries)),
            Ok(entries.clone())
        );
        assert!(decode_acquirer(&encode_acquirer(&[])).is_err());
        assert!(decode_acquirer(&encode_acquirer(&[(0, data)])).is_err());
        let mut cut = encode_acquirer(&entries);
        cut.pop();
        assert!(decode_acquirer(&cut).is_err());
        // An IAD length beyond its bound.
        let mut bad = data;
        bad[58] = 200;
        assert!(decode_acquirer(&encode_acquirer(&[(1, bad)])).is_err());
        assert!(decode_acquirer(&encode_acquirer(&[(1, [0; ACQUIRER_DATA_BYTES])])).is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_frame(&bytes);
            for ty in 1..=13u8 {
                let Some(ty) = FrameType::from_u8(ty) else { continue };
                let _ = match ty {
                    FrameType::Hello => Hello::decode(&bytes).map(|_| ()),
                    FrameType::Batch => Batch::decode(&bytes).map(|_| ()),
                    FrameType::Ack => Ack::decode(&bytes).map(|_| ()),
                    FrameType::FileChunk => FileChunk::decode(&bytes).map(|_| ()),
                    FrameType::Refused => decode_refused(&bytes).map(|_| ()),
                    FrameType::Gone => decode_gone(&bytes).map(|_| ()),
                    FrameType::Proofs => decode_proofs(&bytes).map(|_| ()),
                    FrameType::AcquirerData => decode_acquirer(&bytes).map(|_| ()),
                    _ => decode_32(ty, &bytes).map(|_| ()),
                };
            }
        }

        #[test]
        fn valid_header_with_random_payload_never_panics(
            ty in 0u8..16, payload in proptest::collection::vec(any::<u8>(), 0..256), cut in 0usize..300,
        ) {
            let mut f = encode_frame(FrameType::Done, &payload);
            f[3] = ty;
            let cut = cut.min(f.len());
            let _ = parse_frame(&f[..cut]);
        }
    }
}
