//! The journal record: one accepted tap or scan, fixed size, checksummed.
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 1 | magic `0xFA` |
//! | 1 | 1 | format version, 5 (versions 1 to 4 are still read: below) |
//! | 2 | 1 | kind: 1 card purchase, 2 card purchase recovered by proof, 3 ride code (pay after ride), 4 QuickPass (pay after ride) |
//! | 3 | 1 | rider category (0 adult .. 4 veteran) |
//! | 4 | 8 | seq, per terminal, from 1, never reused |
//! | 12 | 8 | at: unix seconds |
//! | 20 | 2 | UTC offset of the local clock, minutes (signed) |
//! | 22 | 2 | route |
//! | 24 | 4 | fare, fen |
//! | 28 | 4 | purse balance after, fen, signed (two's complement); zero when flag bit 0 is clear |
//! | 32 | 10 | card number (BCD): the card tapped, or the card linked to the ride code |
//! | 42 | 2 | card offline counter of the purchase; ride code (version 4, and 5 with flags bit 7 clear): bytes 42..52 are the certificate reference, below |
//! | 44 | 4 | PSAM terminal transaction sequence |
//! | 48 | 4 | TAC |
//! | 52 | 2 | ride code channel id |
//! | 54 | 8 | ride code account id |
//! | 62 | 4 | ride code counter |
//! | 66 | 4 | ride code generated_at, unix seconds |
//! | 70 | 6 | terminal number (BCD) |
//! | 76 | 1 | flags: bit 0 the balance at 28 is present (a card tap); bit 1 the MAC is made with the public test key, not the terminal's (replay, demo, tests); bits 2–6 (version 5) the fare rule that priced the boarding, below; bit 7 (version 5) a ride-code record without a certificate reference; before version 5, bits 2–7 reserved, zero |
//! | 77 | 8 | journal epoch: the identity of the journal that wrote the record, made when the journal was created (0: a journal made before identities) |
//! | 85 | 7 | chain MAC: the first 7 bytes of HMAC-SHA256(journal key, bytes 0..85 ‖ the MAC of the record before): the chain, below |
//! | 92 | 4 | CRC-32/ISCSI of bytes 0..92, big-endian |
//!
//! A QuickPass record (kind 4) uses bytes 32..70 for its own fields instead of the card and
//! ride-code fields (quickpass.md; the clear PAN is never among them):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 32 | 8 | PAN token (keyed, HMAC-SHA256 of the PAN, first 8 bytes) |
//! | 40 | 1 | PAN sequence number (`5F34`) |
//! | 41 | 1 | cryptogram information data (`9F27`) |
//! | 42 | 2 | application transaction counter (`9F36`) |
//! | 44 | 4 | unpredictable number (`9F37`) |
//! | 48 | 8 | application cryptogram (`9F26`) |
//! | 56 | 3 | first 6 PAN digits (BCD) |
//! | 59 | 2 | last 4 PAN digits (BCD) |
//! | 61 | 1 | PAN length, digits (12..=19) |
//! | 62 | 8 | reserved, zero |
//!
//! Integers are big-endian. A record is checked before it is written and again after it is
//! read: a balance, when present, lies within the purse's range
//! ([`crate::types::PURSE_BALANCE_FEN_MIN`]..=[`crate::types::PURSE_BALANCE_FEN_MAX`]).
//!
//! No value stands for "none": whether a balance is present is its own flag, so any balance
//! a card can hold, −1 fen included, is recorded as it is.
//!
//! # The ride-code certificate reference (version 4)
//!
//! A ride-code record (kind 3) of version 4 carries at 42..52, where a card purchase has its
//! counter, PSAM sequence and TAC, the first [`CERT_REF_BYTES`] bytes of the SHA-256 of the
//! holder certificate the code was accepted with (its bytes [0, 129): signed part and channel
//! signature; [`crate::ride_code::cert_digest`]). The full 32 bytes do not fit a 96-byte
//! record, and need not: the reference names the certificate, it never vouches for one. The
//! depot computes the full digest itself from the certificate it holds (the code kept as
//! proof beside the record), checks its first bytes against the record's, and verifies the
//! channel's signature before the full digest enters the fleet's verified-certificate set;
//! membership in that set is always by the full 32 bytes. A record of version 1 to 3 has no
//! reference (`None`, by version: no byte value stands for it).
//!
//! The CRC finds a torn or damaged record with no key; the chain MAC finds an altered one,
//! and a cut, at the depot, which holds the key: the chain is in [`super::chain`].
//!
//! # The fare rule (version 5)
//!
//! Flags bits 2–6 of a version 5 record hold the number of the fare-table rule that priced
//! the boarding ([`crate::fare::FareRule`]): 0 unknown (a record made without one), 1 base
//! fare, 2 route fare, 3 network fare, 4 concession, 5 timeframe, 6 interop, 7 transfer, 8
//! several riders, 9 free, 10 ride code category; 11 to 31 are refused. The depot reports
//! revenue by it. A record of version 1 to 4 says no rule: it reads as unknown, its other
//! fields as before.
//!
//! Version 5 is version 4 with the fare rule, and with flags bit 7 where version 4 wrote
//! version 3: a ride-code record without a certificate reference (tools, tests) sets it, and
//! its bytes 42..52 are then read as version 3 reads them. Bit 7 is refused on any other kind.
//!
//! Version 4 (still read, no longer written) is version 5 without the fare rule: flags bits
//! 2–7 are zero, and a ride-code record always has its certificate reference.
//!
//! Version 3 (still read) is version 4 without the certificate reference: a ride-code
//! record has zeros at 42..52. A journal wrote it, before version 5, for a ride-code record
//! made without a reference (tools, tests), so that such a record read back as it was written.
//!
//! Version 2 (still read; [`Record::encode_in`] still makes it, for tools and tests that
//! build records outside a journal) is version 3 without the MAC: bytes 85..92 are reserved,
//! flags bit 1 too. The depot reports such records as unauthenticated. It has no certificate
//! reference either: `encode_in` leaves it out.
//!
//! Version 1 (still read, never written) had no flags byte: bytes 28..32 held the balance as
//! an unsigned number, `FFFFFFFF` meaning none. That sentinel was also the balance of an
//! overdrawn or erased purse, which is why version 2 carries the flag. A version 1 balance
//! is read through the purse-word rule of [`crate::card::tunion`] (bit 31 dropped, 31-bit two's
//! complement), as it came from the card's word; `FFFFFFFF` stays "none" there, as version
//! 1 defined it.

use crc::{Crc, Table, CRC_32_ISCSI};

use super::chain::{Chain, RecordMac, SealKey, RECORD_MAC_BYTES};
use crate::card::quickpass::{MaskedPan, PanToken};
use crate::card::tunion::purse_balance_fen;
use crate::fare::FareRule;
use crate::types::{is_purse_balance, AccountId, BalanceFen, CardNo, Fen, Media, RiderCategory};

pub const RECORD_BYTES: usize = 96;
const MAGIC: u8 = 0xFA;
/// The version a journal writes: chained and authenticated, ride codes with their
/// certificate reference, and the fare rule that priced the boarding.
pub const FORMAT_VERSION: u8 = 5;
/// The version before the fare rule: read, no longer written.
pub const FORMAT_VERSION_4: u8 = 4;
/// The version before the certificate reference: chained; read, no longer written.
pub const FORMAT_VERSION_3: u8 = 3;
/// Bytes of a ride-code certificate's SHA-256 that a version 4 record carries, at
/// [`CERT_REF_AT`].
pub const CERT_REF_BYTES: usize = 10;
/// Offset of the certificate reference in a version 4 ride-code record.
pub const CERT_REF_AT: usize = 42;
/// The version before the chain MAC: read, and made by [`Record::encode_in`].
pub const FORMAT_VERSION_2: u8 = 2;
/// Offset of the chain MAC (version 3 and up): the bytes before it are what it authenticates.
pub const MAC_AT: usize = 85;
/// Flags bit 1 (version 3): the MAC is made with the public test key.
const FLAG_TEST_KEY: u8 = 0x02;
/// Offset of the journal epoch (version 2).
const EPOCH_AT: usize = 77;
/// The version before the flags byte; read, never written.
pub const FORMAT_VERSION_1: u8 = 1;
const CRC_AT: usize = 92;
/// Offset of the flags byte (version 2).
const FLAGS_AT: usize = 76;
/// Flags bit 0: the balance at 28 is present.
const FLAG_BALANCE: u8 = 0x01;
/// Flags bits 2–6 (version 5): the fare rule's number.
const FLAGS_RULE: u8 = 0x7C;
/// Where the fare rule's number starts in the flags byte.
const FLAGS_RULE_SHIFT: u32 = 2;
/// Flags bit 7 (version 5): a ride-code record without a certificate reference.
const FLAG_NO_CERT_REF: u8 = 0x80;
const _: () = assert!(FareRule::ALL.len() <= (FLAGS_RULE >> FLAGS_RULE_SHIFT) as usize + 1);
/// Version 1's "no balance" (read only).
const V1_NO_BALANCE: u32 = u32::MAX;
/// CRC-32/ISCSI of records, grey entries and side files: slice-by-16 tables (16 KiB, made at
/// compile time), a few times faster than a byte at a time on a record, the same values.
pub const CRC32: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC_32_ISCSI);

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum RecordKind {
    CardPurchase = 1,
    CardRecovered = 2,
    QrRide = 3,
    /// A QuickPass tap, charged after the ride by the acquirer (quickpass.md).
    Quickpass = 4,
}

impl RecordKind {
    pub fn media(self) -> Media {
        match self {
            RecordKind::CardPurchase | RecordKind::CardRecovered => Media::Card,
            RecordKind::QrRide => Media::Qr,
            RecordKind::Quickpass => Media::Quickpass,
        }
    }
}

/// Card-side proof of a purchase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CardTx {
    pub offline_counter: u16,
    pub terminal_seq: u32,
    pub tac: [u8; 4],
}

/// Ride-code fields of a pay-after-ride record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QrTx {
    pub account: AccountId,
    pub counter: u32,
    pub generated_at: u32,
    /// The first [`CERT_REF_BYTES`] bytes of the holder certificate's SHA-256 (module doc);
    /// `None` in a record of version 1 to 3, and in the version 2 bytes of
    /// [`Record::encode_in`].
    pub cert_ref: Option<[u8; CERT_REF_BYTES]>,
}

impl QrTx {
    /// The reference a record keeps of a certificate's full SHA-256.
    pub fn cert_ref_of(digest: &crate::ride_code::CertDigest) -> [u8; CERT_REF_BYTES] {
        std::array::from_fn(|i| digest[i])
    }
}

/// QuickPass fields of a pay-after-ride record: what the acquirer needs besides the amount,
/// and the keyed token of the PAN (never the PAN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QpTx {
    pub pan_token: PanToken,
    pub masked_pan: MaskedPan,
    pub pan_seq: u8,
    pub cid: u8,
    pub atc: u16,
    pub unpredictable_number: [u8; 4],
    pub cryptogram: [u8; 8],
}

/// One accepted tap or scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub kind: RecordKind,
    pub at_unix_s: i64,
    pub utc_offset_min: i16,
    pub route: u16,
    pub category: RiderCategory,
    pub fare_fen: Fen,
    /// Purse balance after the tap (negative: overdrawn); `None` for ride codes.
    pub balance_fen: Option<BalanceFen>,
    pub card_no: CardNo,
    pub card_tx: CardTx,
    pub qr: Option<QrTx>,
    /// QuickPass fields; present exactly for kind 4 (the card fields are then zero).
    pub quickpass: Option<QpTx>,
    pub terminal_no: [u8; 6],
    /// The fare-table rule that priced the boarding; [`FareRule::Unknown`] in a record of
    /// version 1 to 4, and in the version 2 bytes of [`Record::encode_in`].
    pub rule: FareRule,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record checksum does not match")]
    Crc,
    #[error("not a record (magic or version)")]
    Magic,
    #[error("record field out of range: {0}")]
    Field(&'static str),
}

/// A record's seal, as its bytes carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealRead {
    /// Versions 1 and 2: no MAC.
    Unsealed,
    /// Version 3 and up: the chain MAC and the key it was made with.
    Sealed(SealKey, RecordMac),
}

impl Record {
    pub fn media(&self) -> Media {
        self.kind.media()
    }

    /// The passenger id that replay prints: card number, or CHANNEL:ACCOUNT.
    pub fn id_string(&self) -> String {
        match (self.qr, self.quickpass) {
            (Some(q), _) => q.account.to_string(),
            (None, Some(p)) => p.masked_pan.to_string(),
            (None, None) => self.card_no.to_string(),
        }
    }

    fn check(&self) -> Result<(), RecordError> {
        if self.seq == 0 {
            return Err(RecordError::Field("seq 0"));
        }
        if (self.kind == RecordKind::QrRide) != self.qr.is_some() {
            return Err(RecordError::Field("ride-code fields and kind disagree"));
        }
        if self.qr.is_some_and(|q| q.cert_ref.is_some()) && self.card_tx != CardTx::default() {
            return Err(RecordError::Field("card fields in a ride-code record"));
        }
        if (self.kind == RecordKind::Quickpass) != self.quickpass.is_some() {
            return Err(RecordError::Field("QuickPass fields and kind disagree"));
        }
        if let Some(p) = self.quickpass {
            let digits = p.masked_pan.first6.iter().chain(&p.masked_pan.last4);
            if !(12..=19).contains(&p.masked_pan.len) || !digits.into_iter().all(u8::is_ascii_digit)
            {
                return Err(RecordError::Field("masked PAN"));
            }
        }
        if let Some(b) = self.balance_fen {
            if !is_purse_balance(i64::from(b)) {
                return Err(RecordError::Field("balance"));
            }
        }
        Ok(())
    }

    /// The bytes of this record as a journal of epoch 0 (made before identities) writes
    /// them; a journal writes [`Record::encode_in`] its own epoch.
    pub fn encode(&self) -> [u8; RECORD_BYTES] {
        self.encode_in(0)
    }

    /// The bytes of this record in version 2 (no chain MAC) as the journal of `epoch` wrote
    /// them before chaining: for tools and tests that build records outside a journal. A
    /// journal writes [`Record::encode_chained`]. Version 2 has no certificate reference and
    /// no fare rule: a ride code's reference and the rule are left out.
    pub fn encode_in(&self, epoch: u64) -> [u8; RECORD_BYTES] {
        let mut b = self.fields(epoch);
        b[1] = FORMAT_VERSION_2;
        if self.kind == RecordKind::QrRide {
            b[CERT_REF_AT..CERT_REF_AT + CERT_REF_BYTES].fill(0);
        }
        let crc = CRC32.checksum(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// The bytes of this record in version 5, written by the journal of `epoch`: its MAC
    /// follows `chain.prev`, and becomes it. A ride-code record without a certificate
    /// reference sets flags bit 7: its bytes 42..52 would otherwise read back as a reference
    /// (no value stands for "none").
    pub fn encode_chained(&self, epoch: u64, chain: &mut Chain) -> [u8; RECORD_BYTES] {
        let mut b = self.fields(epoch);
        b[1] = FORMAT_VERSION;
        b[FLAGS_AT] |= (self.rule as u8) << FLAGS_RULE_SHIFT;
        if let Some(QrTx { cert_ref: None, .. }) = self.qr {
            b[FLAGS_AT] |= FLAG_NO_CERT_REF;
        }
        if chain.key.kind() == SealKey::Test {
            b[FLAGS_AT] |= FLAG_TEST_KEY;
        }
        let mac = chain.key.mac(&b[..MAC_AT], &chain.prev);
        b[MAC_AT..MAC_AT + RECORD_MAC_BYTES].copy_from_slice(&mac);
        chain.prev = mac;
        let crc = CRC32.checksum(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// The seal `b` carries. Only meaningful for bytes that [`Record::decode`] accepts.
    pub fn seal_of(b: &[u8; RECORD_BYTES]) -> SealRead {
        if !matches!(b[1], FORMAT_VERSION_3..=FORMAT_VERSION) {
            return SealRead::Unsealed;
        }
        let key = match b[FLAGS_AT] & FLAG_TEST_KEY != 0 {
            true => SealKey::Test,
            false => SealKey::Terminal,
        };
        SealRead::Sealed(key, std::array::from_fn(|i| b[MAC_AT + i]))
    }

    /// Every field but version, MAC and CRC.
    fn fields(&self, epoch: u64) -> [u8; RECORD_BYTES] {
        // A record that fails its own invariants is a bug in the engine, not bad input.
        assert_eq!(self.check(), Ok(()), "record invariant broken: {self:?}");
        let mut b = [0u8; RECORD_BYTES];
        b[0] = MAGIC;
        b[2] = self.kind as u8;
        b[3] = self.category as u8;
        b[4..12].copy_from_slice(&self.seq.to_be_bytes());
        b[12..20].copy_from_slice(&self.at_unix_s.to_be_bytes());
        b[20..22].copy_from_slice(&self.utc_offset_min.to_be_bytes());
        b[22..24].copy_from_slice(&self.route.to_be_bytes());
        b[24..28].copy_from_slice(&self.fare_fen.to_be_bytes());
        if let Some(balance) = self.balance_fen {
            b[28..32].copy_from_slice(&balance.to_be_bytes());
            b[FLAGS_AT] |= FLAG_BALANCE;
        }
        b[32..42].copy_from_slice(&self.card_no.0);
        b[42..44].copy_from_slice(&self.card_tx.offline_counter.to_be_bytes());
        b[44..48].copy_from_slice(&self.card_tx.terminal_seq.to_be_bytes());
        b[48..52].copy_from_slice(&self.card_tx.tac);
        if let Some(q) = self.qr {
            b[52..54].copy_from_slice(&q.account.channel.to_be_bytes());
            b[54..62].copy_from_slice(&q.account.account.to_be_bytes());
            b[62..66].copy_from_slice(&q.counter.to_be_bytes());
            b[66..70].copy_from_slice(&q.generated_at.to_be_bytes());
            if let Some(r) = q.cert_ref {
                b[CERT_REF_AT..CERT_REF_AT + CERT_REF_BYTES].copy_from_slice(&r);
            }
        }
        if let Some(p) = self.quickpass {
            encode_quickpass(&p, &mut b);
        }
        b[70..76].copy_from_slice(&self.terminal_no);
        b[EPOCH_AT..EPOCH_AT + 8].copy_from_slice(&epoch.to_be_bytes());
        b
    }

    /// The epoch of the journal that wrote these bytes (0 for version 1). Only meaningful
    /// for bytes that [`Record::decode`] accepts.
    pub fn epoch_of(b: &[u8; RECORD_BYTES]) -> u64 {
        if b[1] == FORMAT_VERSION_1 {
            return 0;
        }
        u64::from_be_bytes(std::array::from_fn(|k| b[EPOCH_AT + k]))
    }

    pub fn decode(b: &[u8; RECORD_BYTES]) -> Result<Record, RecordError> {
        let crc = u32::from_be_bytes([b[92], b[93], b[94], b[95]]);
        if CRC32.checksum(&b[..CRC_AT]) != crc {
            return Err(RecordError::Crc);
        }
        if b[0] != MAGIC || !matches!(b[1], FORMAT_VERSION_1..=FORMAT_VERSION) {
            return Err(RecordError::Magic);
        }
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| u64::from_be_bytes(std::array::from_fn(|k| b[i + k]));
        let kind = match b[2] {
            1 => RecordKind::CardPurchase,
            2 => RecordKind::CardRecovered,
            3 => RecordKind::QrRide,
            4 => RecordKind::Quickpass,
            _ => return Err(RecordError::Field("kind")),
        };
        let category = RiderCategory::from_u8(b[3]).ok_or(RecordError::Field("category"))?;
        let is_quickpass = kind == RecordKind::Quickpass;
        let card_no = if is_quickpass {
            CardNo([0; 10])
        } else {
            CardNo::from_bcd(std::array::from_fn(|k| b[32 + k]))
                .map_err(|_| RecordError::Field("card"))?
        };
        // Version 1 has no flags byte.
        let flags = match b[1] {
            FORMAT_VERSION_1 => 0,
            _ => b[FLAGS_AT],
        };
        let allowed = match b[1] {
            FORMAT_VERSION_1 => 0,
            FORMAT_VERSION_2 => FLAG_BALANCE,
            FORMAT_VERSION_3 | FORMAT_VERSION_4 => FLAG_BALANCE | FLAG_TEST_KEY,
            _ if kind == RecordKind::QrRide => {
                FLAG_BALANCE | FLAG_TEST_KEY | FLAGS_RULE | FLAG_NO_CERT_REF
            }
            _ => FLAG_BALANCE | FLAG_TEST_KEY | FLAGS_RULE,
        };
        if flags & !allowed != 0 {
            return Err(RecordError::Field("reserved flags"));
        }
        let balance_fen = if b[1] == FORMAT_VERSION_1 {
            let word = u32_at(28);
            (word != V1_NO_BALANCE).then(|| purse_balance_fen(word.to_be_bytes()))
        } else {
            let balance = u32_at(28) as i32;
            match flags & FLAG_BALANCE != 0 {
                true => Some(balance),
                false if balance == 0 => None,
                false => return Err(RecordError::Field("balance without its flag")),
            }
        };
        let rule = FareRule::from_u8((flags & FLAGS_RULE) >> FLAGS_RULE_SHIFT)
            .ok_or(RecordError::Field("fare rule"))?;
        // Version 4 and 5 ride codes keep the certificate reference where a purchase has its
        // proof, unless version 5's flag says there is none.
        let cert_ref = (kind == RecordKind::QrRide
            && b[1] >= FORMAT_VERSION_4
            && flags & FLAG_NO_CERT_REF == 0)
            .then(|| std::array::from_fn(|k| b[CERT_REF_AT + k]));
        let qr = (kind == RecordKind::QrRide).then(|| QrTx {
            account: AccountId {
                channel: u16_at(52),
                account: u64_at(54),
            },
            counter: u32_at(62),
            generated_at: u32_at(66),
            cert_ref,
        });
        let quickpass = match kind {
            RecordKind::Quickpass => Some(decode_quickpass(b)?),
            _ => None,
        };
        let rec = Record {
            seq: u64_at(4),
            kind,
            at_unix_s: u64_at(12) as i64,
            utc_offset_min: u16_at(20) as i16,
            route: u16_at(22),
            category,
            fare_fen: u32_at(24),
            balance_fen,
            card_no,
            card_tx: if is_quickpass || cert_ref.is_some() {
                CardTx::default()
            } else {
                CardTx {
                    offline_counter: u16_at(42),
                    terminal_seq: u32_at(44),
                    tac: std::array::from_fn(|k| b[48 + k]),
                }
            },
            qr,
            quickpass,
            terminal_no: std::array::from_fn(|k| b[70 + k]),
            rule,
        };
        rec.check()?;
        Ok(rec)
    }

    /// RFC 3339 local time with offset, as replay prints `at`.
    pub fn at_rfc3339(&self) -> String {
        crate::clock::Timestamp {
            unix_s: self.at_unix_s,
            utc_offset_s: i32::from(self.utc_offset_min) * 60,
        }
        .to_rfc3339()
    }

    /// One JSON object for `journal show` and exports.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "seq": self.seq,
            "at": self.at_rfc3339(),
            "media": self.media().as_str(),
            "id": self.id_string(),
            "fare_fen": self.fare_fen,
            "balance_fen": self.balance_fen,
            "kind": self.kind,
            "route": self.route,
            "category": self.category.as_str(),
            "terminal": hex(&self.terminal_no),
            "fare_rule": self.rule.as_str(),
        });
        if let Some(p) = self.quickpass {
            v["pan_token"] = p.pan_token.to_string().into();
            v["pan_seq"] = p.pan_seq.into();
            v["atc"] = p.atc.into();
            v["cryptogram"] = hex(&p.cryptogram).into();
            v["cid"] = hex(&[p.cid]).into();
            v["unpredictable_number"] = hex(&p.unpredictable_number).into();
            return v;
        }
        match self.qr {
            Some(q) => {
                v["card_no"] = self.card_no.to_string().into();
                v["channel"] = q.account.channel.into();
                v["account"] = q.account.account.into();
                v["counter"] = q.counter.into();
                v["generated_at"] = q.generated_at.into();
                if let Some(r) = q.cert_ref {
                    v["cert_ref"] = hex(&r).into();
                }
            }
            None => {
                v["card_counter"] = self.card_tx.offline_counter.into();
                v["terminal_seq"] = self.card_tx.terminal_seq.into();
                v["tac"] = hex(&self.card_tx.tac).into();
            }
        }
        v
    }
}

fn bcd_digits<const N: usize>(digits: &[u8], out: &mut [u8]) {
    for (i, pair) in digits.chunks(2).enumerate().take(N) {
        out[i] = ((pair[0] - b'0') << 4) | (pair[1] - b'0');
    }
}

fn encode_quickpass(p: &QpTx, b: &mut [u8; RECORD_BYTES]) {
    // A card number is not kept for QuickPass: the card fields stay zero.
    b[32..42].fill(0);
    b[42..52].fill(0);
    b[32..40].copy_from_slice(&p.pan_token.0.to_be_bytes());
    b[40] = p.pan_seq;
    b[41] = p.cid;
    b[42..44].copy_from_slice(&p.atc.to_be_bytes());
    b[44..48].copy_from_slice(&p.unpredictable_number);
    b[48..56].copy_from_slice(&p.cryptogram);
    bcd_digits::<3>(&p.masked_pan.first6, &mut b[56..59]);
    bcd_digits::<2>(&p.masked_pan.last4, &mut b[59..61]);
    b[61] = p.masked_pan.len;
}

fn decode_quickpass(b: &[u8; RECORD_BYTES]) -> Result<QpTx, RecordError> {
    let bad = RecordError::Field("QuickPass fields");
    if b[62..70].iter().any(|&x| x != 0) {
        return Err(bad);
    }
    let mut digits = [0u8; 10];
    for (i, &x) in b[56..61].iter().enumerate() {
        let (hi, lo) = (x >> 4, x & 0x0F);
        if hi > 9 || lo > 9 {
            return Err(bad);
        }
        digits[2 * i] = b'0' + hi;
        digits[2 * i + 1] = b'0' + lo;
    }
    let masked_pan = MaskedPan {
        first6: std::array::from_fn(|k| digits[k]),
        last4: std::array::from_fn(|k| digits[6 + k]),
        len: b[61],
    };
    Ok(QpTx {
        pan_token: PanToken(u64::from_be_bytes(std::array::from_fn(|k| b[32 + k]))),
        masked_pan,
        pan_seq: b[40],
        cid: b[41],
        atc: u16::from_be_bytes([b[42], b[43]]),
        unpredictable_number: std::array::from_fn(|k| b[44 + k]),
        cryptogram: std::array::from_fn(|k| b[48 + k]),
    })
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample(seq: u64) -> Record {
        Record {
            seq,
            kind: RecordKind::CardPurchase,
            at_unix_s: 1_795_824_000,
            utc_offset_min: 480,
            route: 7,
            category: RiderCategory::Student,
            fare_fen: 100,
            balance_fen: Some(4_900),
            card_no: "37140000000000000001".parse().unwrap(),
            card_tx: CardTx {
                offline_counter: 3,
                terminal_seq: 99,
                tac: [1, 2, 3, 4],
            },
            qr: None,
            quickpass: None,
            terminal_no: [0x00, 0x00, 0x00, 0x00, 0x01, 0x23],
            rule: FareRule::Unknown,
        }
    }

    #[test]
    fn record_round_trips_and_any_bit_flip_is_caught() {
        let r = sample(42);
        let b = r.encode();
        assert_eq!(Record::decode(&b), Ok(r));
        for bit in 0..RECORD_BYTES * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(Record::decode(&c).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn minus_one_fen_is_a_balance_and_no_balance_is_a_flag() {
        let mut r = sample(7);
        r.balance_fen = Some(-1);
        let b = r.encode();
        assert_eq!((b[1], b[76], &b[28..32]), (2, 1, &[0xFF; 4][..]));
        assert_eq!(Record::decode(&b), Ok(r));
        r.balance_fen = None;
        let b = r.encode();
        assert_eq!((b[76], &b[28..32]), (0, &[0; 4][..]));
        assert_eq!(Record::decode(&b), Ok(r));
        for fen in [
            crate::types::PURSE_BALANCE_FEN_MIN,
            crate::types::PURSE_BALANCE_FEN_MAX,
        ] {
            r.balance_fen = Some(fen);
            assert_eq!(Record::decode(&r.encode()), Ok(r));
        }
    }

    fn with_crc(mut b: [u8; RECORD_BYTES]) -> [u8; RECORD_BYTES] {
        let crc = CRC32.checksum(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn version_1_records_are_still_read() {
        let r = sample(9);
        let mut b = r.encode();
        b[1] = FORMAT_VERSION_1;
        b[76] = 0;
        assert_eq!(Record::decode(&with_crc(b)), Ok(r), "balance 4900");
        b[28..32].copy_from_slice(&[0xFF; 4]);
        let none = Record::decode(&with_crc(b)).unwrap();
        assert_eq!(none.balance_fen, None, "version 1's FFFFFFFF is none");
        b[28..32].copy_from_slice(&0x8000_1388u32.to_be_bytes());
        let flagged = Record::decode(&with_crc(b)).unwrap();
        assert_eq!(flagged.balance_fen, Some(5000), "read as the purse word");
    }

    #[test]
    fn version_2_flags_are_strict() {
        let mut r = sample(3);
        r.balance_fen = None;
        let mut b = r.encode();
        b[28] = 1;
        assert_eq!(
            Record::decode(&with_crc(b)),
            Err(RecordError::Field("balance without its flag"))
        );
        let mut b = r.encode();
        b[76] = 0x02;
        assert_eq!(
            Record::decode(&with_crc(b)),
            Err(RecordError::Field("reserved flags"))
        );
        let mut b = sample(3).encode();
        b[28..32].copy_from_slice(&(1i32 << 30).to_be_bytes());
        assert_eq!(
            Record::decode(&with_crc(b)),
            Err(RecordError::Field("balance"))
        );
        let mut b = sample(3).encode();
        b[1] = FORMAT_VERSION + 1;
        assert_eq!(Record::decode(&with_crc(b)), Err(RecordError::Magic));
    }

    #[test]
    fn version_3_is_chained_and_an_altered_record_with_its_crc_fixed_fails_its_mac() {
        use crate::journal::chain::JournalKey;
        let key = JournalKey::for_terminal(&[3u8; 32], "bus-0001");
        let start = key.chain_start(9);
        let mut chain = Chain {
            key: key.clone(),
            prev: start,
        };
        let (r1, r2) = (sample(1), sample(2));
        let b1 = r1.encode_chained(9, &mut chain);
        let b2 = r2.encode_chained(9, &mut chain);
        assert_eq!(
            (b1[1], Record::decode(&b1), Record::decode(&b2)),
            (FORMAT_VERSION, Ok(r1), Ok(r2))
        );
        assert_eq!(Record::epoch_of(&b2), 9);
        let SealRead::Sealed(SealKey::Terminal, m1) = Record::seal_of(&b1) else {
            panic!("sealed")
        };
        let SealRead::Sealed(_, m2) = Record::seal_of(&b2) else {
            panic!("sealed")
        };
        assert!(key.verify(&b1[..MAC_AT], &start, &m1));
        assert!(key.verify(&b2[..MAC_AT], &m1, &m2), "chained to seq 1");
        assert!(!key.verify(&b2[..MAC_AT], &start, &m2));
        // A fare set to 0 and the CRC fixed: the CRC is content, the MAC is not.
        let mut altered = b2;
        altered[24..28].copy_from_slice(&0u32.to_be_bytes());
        let altered = with_crc(altered);
        assert!(Record::decode(&altered).is_ok());
        assert!(!key.verify(&altered[..MAC_AT], &m1, &m2));
        for bit in 0..RECORD_BYTES * 8 {
            let mut c = b2;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(Record::decode(&c).is_err(), "bit {bit}");
        }
        let mut t = Chain {
            key: JournalKey::test(),
            prev: start,
        };
        let bt = r1.encode_chained(9, &mut t);
        assert_eq!(bt[76] & 0x02, 0x02, "the test key says so");
        assert!(matches!(
            Record::seal_of(&bt),
            SealRead::Sealed(SealKey::Test, _)
        ));
        assert_eq!(Record::seal_of(&r1.encode()), SealRead::Unsealed);
        let mut v2 = r1.encode();
        v2[76] |= 0x02;
        assert_eq!(
            Record::decode(&with_crc(v2)),
            Err(RecordError::Field("reserved flags")),
            "no test-key flag before version 3"
        );
    }

    fn qr_sample(seq: u64, cert_ref: Option<[u8; CERT_REF_BYTES]>) -> Record {
        let mut r = sample(seq);
        r.kind = RecordKind::QrRide;
        r.balance_fen = None;
        r.card_tx = CardTx::default();
        r.qr = Some(QrTx {
            account: AccountId {
                channel: 2,
                account: 1001,
            },
            counter: 5,
            generated_at: 1_795_823_990,
            cert_ref,
        });
        r
    }

    #[test]
    fn qr_record_round_trips() {
        let r = qr_sample(1, None);
        assert_eq!(Record::decode(&r.encode()), Ok(r));
        assert_eq!(r.id_string(), "2:1001");
    }

    #[test]
    fn version_4_ride_code_records_carry_the_certificate_reference_and_version_3_still_reads() {
        use crate::journal::chain::JournalKey;
        let digest: crate::ride_code::CertDigest = std::array::from_fn(|i| 0xA0 ^ i as u8);
        let cert_ref = QrTx::cert_ref_of(&digest);
        assert_eq!(&cert_ref[..], &digest[..CERT_REF_BYTES]);
        let key = JournalKey::for_terminal(&[3u8; 32], "bus-0001");
        let mut chain = Chain {
            key: key.clone(),
            prev: key.chain_start(9),
        };
        let r = qr_sample(1, Some(cert_ref));
        let b = r.encode_chained(9, &mut chain);
        assert_eq!(b[1], FORMAT_VERSION);
        assert_eq!(&b[CERT_REF_AT..CERT_REF_AT + CERT_REF_BYTES], &cert_ref[..]);
        assert_eq!(Record::decode(&b), Ok(r));
        assert_eq!(r.to_json()["cert_ref"], hex(&cert_ref));
        // An all-zero reference is a reference, not "none": version 4 always has one.
        let zero = qr_sample(2, Some([0; CERT_REF_BYTES]));
        assert_eq!(
            Record::decode(&zero.encode_chained(9, &mut chain)),
            Ok(zero)
        );
        for bit in 0..RECORD_BYTES * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(Record::decode(&c).is_err(), "bit {bit}");
        }
        // The same record written by a version 3 journal: zeros at 42..52, read with no
        // reference, and still sealed.
        let mut v3 = b;
        v3[1] = FORMAT_VERSION_3;
        v3[CERT_REF_AT..CERT_REF_AT + CERT_REF_BYTES].fill(0);
        let v3 = with_crc(v3);
        assert_eq!(Record::decode(&v3), Ok(qr_sample(1, None)));
        assert!(matches!(Record::seal_of(&v3), SealRead::Sealed(..)));
        assert!(Record::decode(&v3)
            .unwrap()
            .to_json()
            .get("cert_ref")
            .is_none());
        // Version 2 bytes of tools have no room for it: left out.
        assert_eq!(Record::decode(&r.encode()), Ok(qr_sample(1, None)));
    }

    #[test]
    fn a_ride_code_record_without_a_reference_reads_back_without_one() {
        use crate::journal::chain::JournalKey;
        let key = JournalKey::for_terminal(&[3u8; 32], "bus-0001");
        let mut chain = Chain {
            key: key.clone(),
            prev: key.chain_start(9),
        };
        let r = qr_sample(1, None);
        let b = r.encode_chained(9, &mut chain);
        assert_eq!(Record::decode(&b), Ok(r));
        assert!(matches!(Record::seal_of(&b), SealRead::Sealed(..)));
        // Nor does a record that also carries card fields take them for a reference.
        let mut with_card = qr_sample(2, None);
        with_card.card_tx.tac = [1, 2, 3, 4];
        assert_eq!(
            Record::decode(&with_card.encode_chained(9, &mut chain)),
            Ok(with_card)
        );
    }

    #[test]
    fn a_ride_code_record_with_a_reference_has_no_card_purchase_fields() {
        let mut r = qr_sample(1, Some([7; CERT_REF_BYTES]));
        r.card_tx.tac = [1, 2, 3, 4];
        assert_eq!(
            r.check(),
            Err(RecordError::Field("card fields in a ride-code record"))
        );
    }

    fn chain() -> Chain {
        use crate::journal::chain::JournalKey;
        let key = JournalKey::for_terminal(&[3u8; 32], "bus-0001");
        Chain {
            prev: key.chain_start(9),
            key,
        }
    }

    #[test]
    fn version_5_records_carry_the_fare_rule_and_any_bit_flip_is_caught() {
        let mut chain = chain();
        for rule in FareRule::ALL {
            let mut r = sample(rule as u64 + 1);
            r.rule = rule;
            let b = r.encode_chained(9, &mut chain);
            assert_eq!(b[1], FORMAT_VERSION);
            assert_eq!((b[76] & FLAGS_RULE) >> FLAGS_RULE_SHIFT, rule as u8);
            assert_eq!(Record::decode(&b), Ok(r), "{rule:?}");
            assert_eq!(r.to_json()["fare_rule"], rule.as_str());
            for bit in 0..RECORD_BYTES * 8 {
                let mut c = b;
                c[bit / 8] ^= 1 << (bit % 8);
                assert!(Record::decode(&c).is_err(), "{rule:?} bit {bit}");
            }
            // Version 2 bytes have no room for it: left out.
            assert_eq!(Record::decode(&r.encode()).unwrap().rule, FareRule::Unknown);
        }
        // Ride codes, with and without a certificate reference.
        for cert_ref in [Some([9; CERT_REF_BYTES]), None] {
            let mut q = qr_sample(20, cert_ref);
            q.rule = FareRule::RideCodeCategory;
            let b = q.encode_chained(9, &mut chain);
            assert_eq!(b[1], FORMAT_VERSION);
            assert_eq!(b[76] & FLAG_NO_CERT_REF != 0, cert_ref.is_none());
            assert_eq!(Record::decode(&b), Ok(q));
        }
    }

    #[test]
    fn version_5_refuses_an_unknown_rule_number_and_bit_7_on_a_card_record() {
        let mut chain = chain();
        let b = sample(1).encode_chained(9, &mut chain);
        let mut c = b;
        c[76] |= 11 << FLAGS_RULE_SHIFT;
        assert_eq!(
            Record::decode(&with_crc(c)),
            Err(RecordError::Field("fare rule"))
        );
        let mut c = b;
        c[76] |= FLAG_NO_CERT_REF;
        assert_eq!(
            Record::decode(&with_crc(c)),
            Err(RecordError::Field("reserved flags"))
        );
    }

    #[test]
    fn records_of_version_4_read_as_before_with_an_unknown_rule() {
        let mut chain = chain();
        let mut r = sample(1);
        r.rule = FareRule::Transfer;
        let mut q = qr_sample(2, Some([5; CERT_REF_BYTES]));
        q.rule = FareRule::RideCodeCategory;
        for rec in [r, q] {
            // The same record as a version 4 journal wrote it: flags bits 2–7 zero.
            let mut v4 = rec.encode_chained(9, &mut chain);
            v4[1] = FORMAT_VERSION_4;
            v4[76] &= FLAG_BALANCE | FLAG_TEST_KEY;
            let v4 = with_crc(v4);
            let read = Record::decode(&v4).unwrap();
            assert_eq!(
                read,
                Record {
                    rule: FareRule::Unknown,
                    ..rec
                }
            );
            assert!(matches!(Record::seal_of(&v4), SealRead::Sealed(..)));
            assert_eq!(read.to_json()["fare_rule"], "unknown");
            // No rule bits before version 5.
            let mut c = v4;
            c[76] |= (FareRule::Transfer as u8) << FLAGS_RULE_SHIFT;
            assert_eq!(
                Record::decode(&with_crc(c)),
                Err(RecordError::Field("reserved flags"))
            );
        }
    }
}
