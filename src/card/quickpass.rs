//! The UnionPay QuickPass (闪付) application of a social security card, read as a UnionPay
//! contactless transit terminal reads it: qUICS (the PBOC 3.0 contactless profile, JR/T
//! 0025.12), data objects and commands of EMV Book 3, certificates and offline data
//! authentication by fDDA of EMV Book 2 (sections 5 and 6) and JR/T 0025.12 section 7.
//!
//! ## The dialogue ([`read_card`])
//!
//! | step | command | answer used |
//! | --- | --- | --- |
//! | SELECT PPSE (EMV Book 1 12.3.2; JR/T 0025.12 6.2) | `00 A4 04 00 0E "2PAY.SYS.DDF01" 00` | `6F` FCI: `A5` › `BF0C` › `61` entries with `4F` AID and `87` priority |
//! | choose | the UnionPay entry (AID beginning with RID `A000000333`) of lowest `87` priority, first listed on a tie | none: `unreadable` |
//! | SELECT the AID | `00 A4 04 00 Lc AID 00` | `6F` FCI: `A5` › `9F38` PDOL |
//! | GET PROCESSING OPTIONS (EMV Book 3 6.5.8) | `80 A8 00 00 Lc 83 L ‹PDOL data› 00` | `77` template: `82` AIP, `94` AFL, `9F36` ATC, `9F26` cryptogram, `9F27` CID, `9F10` IAD, `9F4B` SDAD, `5F34` PAN sequence |
//! | READ RECORD per AFL (EMV Book 3 10.2) | `00 B2 rec (SFI<<3)|4 00` | `70` templates: `5A` PAN, `5F24` expiry, `5F34`, `8F` CA index, `90` `92` `9F32` issuer certificate, `9F46` `9F48` `9F47` ICC certificate, `9F4A` static data tag list |
//!
//! The PDOL data (EMV Book 3 5.4, JR/T 0025.12 Annex A) is what the card's PDOL asks for, from
//! [`TerminalData`]: `9F66` terminal transaction qualifiers [`TTQ_OFFLINE_TRANSIT`] (qUICS,
//! offline-only reader), `9F02` amount authorised (the fare, n12 BCD), `9F03` other amount 0,
//! `9F1A` terminal country and `5F2A` currency `0156`, `95` TVR zero, `9A` date YYMMDD,
//! `9C` type `00`, `9F21` time HHMMSS, `9F37` unpredictable number; any other tag is zeros of
//! the asked length (EMV Book 3 5.4). A status other than `9000` to GPO is `unreadable`.
//!
//! ## fDDA ([`authenticate`]), checks in this order
//!
//! 1. The CA public key of the AID's RID and `8F` index, usable through its `expires` day.
//! 2. Issuer public key certificate `90` (EMV Book 2 Table 13, format `02`): length is the CA
//!    modulus length N_CA; recovered with the CA key; header `6A`, trailer `BC`, format `02`;
//!    SHA-1 (hash algorithm `01`) over bytes 2..N_CA−21 of the recovered data ‖ `92` remainder
//!    ‖ `9F32` exponent equals the recovered hash; the issuer identifier (3 to 8 leftmost PAN
//!    digits, `F`-padded) matches the PAN; the certificate is valid through the last day of its
//!    MMYY month; public key algorithm `01` (RSA).
//! 3. ICC public key certificate `9F46` (Table 14, format `04`): length N_I; recovered with the
//!    issuer key; the same header, trailer, algorithm and expiry checks; the hash also covers
//!    the `9F48` remainder, the `9F47` exponent and the static data to be authenticated: the
//!    values of the tags `9F4A` lists, which must be exactly `82` (the AIP of GPO's answer);
//!    the recovered PAN (`F`-padded) equals `5A`.
//! 4. Signed dynamic application data `9F4B` (Table 17, signed data format `05`): length N_IC,
//!    recovered with the ICC key; header, trailer, hash algorithm `01`; SHA-1 over bytes
//!    2..N_IC−21 ‖ the terminal dynamic data of fDDA (`9F37` unpredictable number ‖ `9F02`
//!    amount ‖ `5F2A` currency) equals the recovered hash.
//!
//! Steps 1–3 failing are [`AuthError::Certificate`] (`bad_certificate`), step 4
//! [`AuthError::Signature`] (`bad_signature`); an ICC key `rsa` refuses is `bad_signature`.
//! RSA recovery ([`RecoveryKey`]) is on keys RustCrypto `rsa` accepts
//! ([`rsa::RsaPublicKey::new`]), computed by RustCrypto `crypto-bigint` with the modulus's
//! Montgomery parameters made once per key; no bignum code lives here.
//! [`authenticate_cached`] keeps the issuer keys that recovered and checked (step 2's checks
//! on the certificate's bytes) in a bounded [`IssuerKeyCache`]; the issuer identifier and
//! expiry are checked on every tap, steps 3 and 4 always run.
//!
//! Parsing uses `iso7816-tlv` (BER-TLV of ISO/IEC 7816-4, which EMV Book 3 Annex B follows);
//! everything the card says is bounded (short APDUs, [`CERT_BYTES_MAX`]) and every
//! malformation is a typed [`ReadError`], never a panic. The TLV parser and RSA allocate on
//! the heap: this medium's tap is bounded but not allocation-free.
//!
//! ## What leaves this module
//!
//! The clear PAN stays inside [`Pan`], whose `Debug` prints it masked; the engine keeps a
//! [`MaskedPan`] and a keyed [`PanToken`] ([`PanTokenKey`], HMAC-SHA256), never the digits.

use std::fmt;

use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{BoxedUint, Odd};
use hmac::{Hmac, Mac};
use iso7816_tlv::ber::{Tlv, Value};
use rsa::{BigUint, RsaPublicKey};
use sha1::{Digest, Sha1};

use super::apdu::{command, exchange, sw, CardChannel, ChannelError, Response};

/// Name of the proximity payment system environment (EMV Book 1 12.3.2).
pub const PPSE_NAME: &[u8; 14] = b"2PAY.SYS.DDF01";
/// UnionPay's registered application provider identifier.
pub const UNIONPAY_RID: [u8; 5] = [0xA0, 0x00, 0x00, 0x03, 0x33];
/// Terminal transaction qualifiers of an offline-only qUICS transit reader (JR/T 0025.12
/// Annex A `9F66`): byte 1 bit 6 qUICS supported, bit 4 offline-only reader.
pub const TTQ_OFFLINE_TRANSIT: [u8; 4] = [0x28, 0x00, 0x00, 0x00];
/// ISO 4217 / ISO 3166 numeric code of China, as `5F2A` and `9F1A` carry it (n3 in 2 bytes).
pub const CHINA_CODE: [u8; 2] = [0x01, 0x56];
/// Longest AID (ISO/IEC 7816-5: 5 to 16 bytes).
pub const AID_BYTES_MAX: usize = 16;
/// Longest certificate or signed data: a 1984-bit RSA modulus (EMV Book 2 Annex A2.1).
pub const CERT_BYTES_MAX: usize = 248;
/// Longest public key exponent EMV allows (`03` or `010001`).
pub const EXPONENT_BYTES_MAX: usize = 3;
/// Longest issuer application data `9F10` (EMV Book 3 Annex A).
pub const IAD_BYTES_MAX: usize = 32;
/// Longest PDOL data sent in GPO, bytes (a short APDU's 255 less the `83` tag and length).
pub const PDOL_DATA_BYTES_MAX: usize = 252;
/// Most records an AFL may name (4-byte entries in a 252-byte `94`).
pub const AFL_ENTRIES_MAX: usize = 16;
/// Most records read in one tap, whatever the AFL says.
pub const RECORDS_READ_MAX: usize = 16;
/// Shortest and longest PAN, digits (ISO/IEC 7812).
pub const PAN_DIGITS_MIN: usize = 12;
pub const PAN_DIGITS_MAX: usize = 19;

/// The whole APDU dialogue failed: the card left, or said something this terminal cannot use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The card left the field before the dialogue ended.
    #[error("card removed")]
    Removed,
    /// The reader failed, or the card's answers are malformed or missing data.
    #[error("unreadable: {0}")]
    Unreadable(&'static str),
    /// No UnionPay application in the PPSE (or no PPSE).
    #[error("no UnionPay application")]
    NoApplication,
}

impl From<ChannelError> for ReadError {
    fn from(e: ChannelError) -> Self {
        match e {
            ChannelError::Removed => ReadError::Removed,
            _ => ReadError::Unreadable("reader"),
        }
    }
}

/// Offline data authentication failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// CA key, issuer or ICC certificate: `bad_certificate`.
    #[error("certificate: {0}")]
    Certificate(&'static str),
    /// The signed dynamic application data: `bad_signature`.
    #[error("signed dynamic data: {0}")]
    Signature(&'static str),
}

/// An application PAN (`5A`), 12 to 19 decimal digits. Its `Debug` and `Display` print the
/// masked form: the digits leave only through [`Pan::digits`], for tokens and sealing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Pan {
    digits: [u8; PAN_DIGITS_MAX],
    len: u8,
}

impl Pan {
    /// From ASCII decimal digits.
    pub fn parse(s: &str) -> Option<Pan> {
        let b = s.as_bytes();
        if !(PAN_DIGITS_MIN..=PAN_DIGITS_MAX).contains(&b.len())
            || !b.iter().all(u8::is_ascii_digit)
        {
            return None;
        }
        let mut digits = [0u8; PAN_DIGITS_MAX];
        digits[..b.len()].copy_from_slice(b);
        Some(Pan {
            digits,
            len: b.len() as u8,
        })
    }

    /// From `5A`'s compressed numeric (cn: BCD, padded with `F` on the right).
    pub fn from_cn(cn: &[u8]) -> Option<Pan> {
        let mut digits = [0u8; PAN_DIGITS_MAX];
        let mut len = 0usize;
        let mut padding = false;
        for nibble in cn.iter().flat_map(|b| [b >> 4, b & 0x0F]) {
            match nibble {
                0..=9 if !padding => {
                    if len == PAN_DIGITS_MAX {
                        return None;
                    }
                    digits[len] = b'0' + nibble;
                    len += 1;
                }
                0x0F => padding = true,
                _ => return None,
            }
        }
        if len < PAN_DIGITS_MIN || cn.len() != len.div_ceil(2) {
            return None;
        }
        Some(Pan {
            digits,
            len: len as u8,
        })
    }

    /// The PAN as cn (`5A`): BCD, an odd count padded with `F`.
    pub fn to_cn(&self) -> heapless::Vec<u8, 10> {
        let mut out = heapless::Vec::new();
        for pair in self.digits().chunks(2) {
            let hi = pair[0] - b'0';
            let lo = pair.get(1).map_or(0x0F, |d| d - b'0');
            // At most 10 bytes for 19 digits.
            let _ = out.push((hi << 4) | lo);
        }
        out
    }

    /// The clear digits, ASCII. Only for the keyed token and the sealed copy.
    pub fn digits(&self) -> &[u8] {
        &self.digits[..usize::from(self.len)]
    }

    pub fn masked(&self) -> MaskedPan {
        let d = self.digits();
        let mut first6 = [0u8; 6];
        first6.copy_from_slice(&d[..6]);
        let mut last4 = [0u8; 4];
        last4.copy_from_slice(&d[d.len() - 4..]);
        MaskedPan {
            first6,
            last4,
            len: self.len,
        }
    }

    /// Whether `id` (cn, `F`-padded, as certificates carry it) names this PAN's leading
    /// digits: at least `min_digits` of them, all digits before the first `F` equal.
    fn starts_with_cn(&self, id: &[u8], min_digits: usize, whole: bool) -> bool {
        let mut n = 0usize;
        let mut padding = false;
        for nibble in id.iter().flat_map(|b| [b >> 4, b & 0x0F]) {
            match nibble {
                0x0F => padding = true,
                0..=9 if !padding => {
                    if self.digits().get(n) != Some(&(b'0' + nibble)) {
                        return false;
                    }
                    n += 1;
                }
                _ => return false,
            }
        }
        n >= min_digits && (!whole || n == self.digits().len())
    }
}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pan({})", self.masked())
    }
}

impl fmt::Display for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.masked().fmt(f)
    }
}

/// A PAN as it may be shown and written: first 6 digits, `*` for each hidden digit, last 4
/// (`621483******0001`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaskedPan {
    pub first6: [u8; 6],
    pub last4: [u8; 4],
    /// Digits in the PAN, 12 to 19.
    pub len: u8,
}

impl fmt::Debug for MaskedPan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MaskedPan({self})")
    }
}

impl fmt::Display for MaskedPan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &d in &self.first6 {
            write!(f, "{}", char::from(d))?;
        }
        for _ in 10..usize::from(self.len) {
            f.write_str("*")?;
        }
        for &d in &self.last4 {
            write!(f, "{}", char::from(d))?;
        }
        Ok(())
    }
}

/// A keyed token of a PAN: the first 8 bytes of HMAC-SHA256(key, PAN digits). The deny list
/// and anti-passback know a QuickPass card only by it; only holders of the key can tell
/// which PAN a token stands for, by trying that PAN.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct PanToken(pub u64);

impl fmt::Display for PanToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

/// The key of [`PanToken`]s, shared by the depot and its buses.
#[derive(Clone, Copy)]
pub struct PanTokenKey(pub [u8; 32]);

impl fmt::Debug for PanTokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PanTokenKey(..)")
    }
}

/// Why a PAN token key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PanTokenKeyError {
    #[error("{0}")]
    Read(#[from] std::io::Error),
    #[error("a PAN token key file holds 64 hex digits (32 bytes)")]
    Format,
}

impl PanTokenKey {
    /// The key of tests, replay and the demo: never a production key (it is in the source).
    pub const TEST: PanTokenKey = PanTokenKey(*b"DZ-TEST-PAN-TOKEN-KEY-0123456789");

    /// From 64 hex digits (surrounding white space ignored).
    pub fn from_hex(text: &str) -> Result<PanTokenKey, PanTokenKeyError> {
        let mut key = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut key).map_err(|_| PanTokenKeyError::Format)?;
        Ok(PanTokenKey(key))
    }

    /// The key in a file of 64 hex digits (`validator.toml`'s `pan_token_key_file`, `run
    /// --pan-token-key`, `depot blacklist --pan-token-key`; docs/quickpass.md).
    pub fn load(path: &std::path::Path) -> Result<PanTokenKey, PanTokenKeyError> {
        if std::fs::metadata(path)?.len() > 1024 {
            return Err(PanTokenKeyError::Format);
        }
        Self::from_hex(&std::fs::read_to_string(path)?)
    }

    /// Whether this is [`PanTokenKey::TEST`].
    pub fn is_test(&self) -> bool {
        self.0 == Self::TEST.0
    }

    pub fn token(&self, pan: &Pan) -> PanToken {
        // HMAC takes a key of any length.
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.0).expect("any key");
        mac.update(pan.digits());
        let out = mac.finalize().into_bytes();
        let mut t = [0u8; 8];
        t.copy_from_slice(&out[..8]);
        PanToken(u64::from_be_bytes(t))
    }
}

/// One UnionPay CA public key of `--emv-ca CA.json`.
#[derive(Clone, Debug)]
pub struct CaKey {
    pub rid: [u8; 5],
    pub index: u8,
    pub key: RecoveryKey,
    /// Usable through this local date, YYYYMMDD.
    pub expires_ymd: u32,
}

/// The CA public keys a validator trusts (`--emv-ca CA.json`, quickpass.md).
#[derive(Clone, Debug, Default)]
pub struct CaKeys {
    keys: Vec<CaKey>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CaFile {
    version: u32,
    keys: Vec<CaEntry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CaEntry {
    rid: String,
    index: String,
    modulus: String,
    exponent: String,
    expires: String,
}

/// Longest CA key file read, bytes.
pub const CA_FILE_BYTES_MAX: usize = 1 << 20;

impl CaKeys {
    pub fn empty() -> Self {
        CaKeys::default()
    }

    /// Parse CA.json: `{"version": 1, "keys": [{"rid", "index", "modulus", "exponent",
    /// "expires"}]}`, hex fields, `expires` YYYY-MM-DD.
    pub fn from_json(text: &str) -> Result<CaKeys, String> {
        if text.len() > CA_FILE_BYTES_MAX {
            return Err("CA key file too long".into());
        }
        let f: CaFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if f.version != 1 {
            return Err(format!("version must be 1, not {}", f.version));
        }
        let mut keys = Vec::with_capacity(f.keys.len());
        for e in f.keys {
            let rid: [u8; 5] = hex::decode(&e.rid)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| format!("rid must be 10 hex digits, not {:?}", e.rid))?;
            let index = match hex::decode(&e.index).as_deref() {
                Ok([i]) => *i,
                _ => return Err(format!("index must be 2 hex digits, not {:?}", e.index)),
            };
            let modulus = hex::decode(&e.modulus).map_err(|_| "modulus must be hex")?;
            let exponent = hex::decode(&e.exponent).map_err(|_| "exponent must be hex")?;
            if modulus.is_empty() || modulus.len() > CERT_BYTES_MAX || modulus[0] == 0 {
                return Err(format!(
                    "key {index:02X}: modulus must be 1 to {CERT_BYTES_MAX} bytes"
                ));
            }
            let key = RecoveryKey::new(&modulus, &exponent)
                .map_err(|err| format!("key {index:02X}: {err}"))?;
            let expires_ymd = parse_ymd(&e.expires)
                .ok_or_else(|| format!("expires must be YYYY-MM-DD, not {:?}", e.expires))?;
            keys.push(CaKey {
                rid,
                index,
                key,
                expires_ymd,
            });
        }
        Ok(CaKeys { keys })
    }

    pub fn load(path: &std::path::Path) -> Result<CaKeys, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        CaKeys::from_json(&text)
    }

    /// The key of `rid` and `index` usable on `today` (YYYYMMDD).
    pub fn find(&self, rid: &[u8], index: u8, today_ymd: u32) -> Option<&CaKey> {
        self.find_at(rid, index, today_ymd).map(|(_, k)| k)
    }

    /// [`CaKeys::find`] with the key's position in the file (what [`IssuerKeyCache`] keys
    /// its entries by).
    fn find_at(&self, rid: &[u8], index: u8, today_ymd: u32) -> Option<(usize, &CaKey)> {
        self.keys
            .iter()
            .enumerate()
            .find(|(_, k)| k.rid == rid && k.index == index && today_ymd <= k.expires_ymd)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// `YYYY-MM-DD` as YYYYMMDD, for a real calendar day.
pub fn parse_ymd(s: &str) -> Option<u32> {
    let d = time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).ok()?;
    u32::try_from(d.year())
        .ok()
        .map(|y| y * 10_000 + u32::from(u8::from(d.month())) * 100 + u32::from(d.day()))
}

/// What the terminal puts in the PDOL and in fDDA's terminal dynamic data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TerminalData {
    /// Amount authorised, fen (`9F02`, n12).
    pub amount_fen: u32,
    /// Local date and time, BCD YYYYMMDDhhmmss ([`crate::clock::Timestamp::local_bcd`]).
    pub datetime_bcd: [u8; 7],
    /// `9F37`.
    pub unpredictable_number: [u8; 4],
}

impl TerminalData {
    /// `9F02`: the amount as n12 BCD.
    pub fn amount_n12(&self) -> [u8; 6] {
        let mut out = [0u8; 6];
        let mut v = self.amount_fen;
        for b in out.iter_mut().rev() {
            let lo = (v % 10) as u8;
            v /= 10;
            let hi = (v % 10) as u8;
            v /= 10;
            *b = (hi << 4) | lo;
        }
        out
    }

    /// The value the terminal gives for `tag`, if it knows it.
    fn value(&self, tag: &[u8]) -> Option<heapless::Vec<u8, 8>> {
        let d = &self.datetime_bcd;
        let v: &[u8] = match tag {
            [0x9F, 0x66] => &TTQ_OFFLINE_TRANSIT,
            [0x9F, 0x02] => return heapless::Vec::from_slice(&self.amount_n12()).ok(),
            [0x9F, 0x03] => &[0; 6],
            [0x9F, 0x1A] | [0x5F, 0x2A] => &CHINA_CODE,
            [0x95] => &[0; 5],
            [0x9A] => &d[1..4],
            [0x9C] => &[0x00],
            [0x9F, 0x21] => &d[4..7],
            [0x9F, 0x37] => &self.unpredictable_number,
            _ => return None,
        };
        heapless::Vec::from_slice(v).ok()
    }

    /// fDDA's terminal dynamic data: `9F37` ‖ `9F02` ‖ `5F2A`.
    pub fn fdda_data(&self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..4].copy_from_slice(&self.unpredictable_number);
        out[4..10].copy_from_slice(&self.amount_n12());
        out[10..12].copy_from_slice(&CHINA_CODE);
        out
    }
}

/// Build the PDOL data for a Data Object List (EMV Book 3 5.4): each entry's value from the
/// terminal, left-truncated or zero-padded on the left to the asked length (numeric `9F02`),
/// unknown tags zeros.
pub fn pdol_data(
    dol: &[u8],
    terminal: &TerminalData,
) -> Result<heapless::Vec<u8, PDOL_DATA_BYTES_MAX>, ReadError> {
    let bad = ReadError::Unreadable("PDOL");
    let mut out = heapless::Vec::new();
    let mut rest = dol;
    while !rest.is_empty() {
        let tag_len = tag_len(rest).ok_or(bad)?;
        let (tag, after) = rest.split_at(tag_len);
        let (&len, after) = after.split_first().ok_or(bad)?;
        rest = after;
        let len = usize::from(len);
        let value = terminal.value(tag).unwrap_or_default();
        let v = value.as_slice();
        for i in 0..len {
            // Right-aligned: a longer value loses its leading bytes, a shorter one gains zeros.
            let from_end = len - i;
            let b = if from_end <= v.len() {
                v[v.len() - from_end]
            } else {
                0
            };
            out.push(b).map_err(|_| bad)?;
        }
    }
    Ok(out)
}

/// Length of the BER tag at the start of `b` (1 to 3 bytes), if complete.
fn tag_len(b: &[u8]) -> Option<usize> {
    let first = *b.first()?;
    if first & 0x1F != 0x1F {
        return Some(1);
    }
    let mut n = 1;
    loop {
        let next = *b.get(n)?;
        n += 1;
        if next & 0x80 == 0 {
            return Some(n);
        }
        if n == 3 {
            return None;
        }
    }
}

/// Everything one tap reads from the card, before any check.
#[derive(Clone, Debug, Default)]
pub struct CardData {
    pub aid: heapless::Vec<u8, AID_BYTES_MAX>,
    pub aip: [u8; 2],
    pub atc: u16,
    pub cryptogram: [u8; 8],
    pub cid: u8,
    pub iad: heapless::Vec<u8, IAD_BYTES_MAX>,
    pub sdad: heapless::Vec<u8, CERT_BYTES_MAX>,
    pub pan: Option<Pan>,
    pub pan_seq: u8,
    /// `5F24` as YYYYMMDD (valid through that day).
    pub expiry_ymd: u32,
    pub ca_index: u8,
    pub issuer_cert: heapless::Vec<u8, CERT_BYTES_MAX>,
    pub issuer_remainder: heapless::Vec<u8, CERT_BYTES_MAX>,
    pub issuer_exponent: heapless::Vec<u8, EXPONENT_BYTES_MAX>,
    pub icc_cert: heapless::Vec<u8, CERT_BYTES_MAX>,
    pub icc_remainder: heapless::Vec<u8, CERT_BYTES_MAX>,
    pub icc_exponent: heapless::Vec<u8, EXPONENT_BYTES_MAX>,
    /// `9F4A`: the tags whose values are the static data to be authenticated.
    pub sda_tags: heapless::Vec<u8, 8>,
    /// The terminal's data sent in this tap.
    pub terminal: Option<TerminalData>,
}

impl CardData {
    /// The PAN, which a completed [`read_card`] always holds.
    pub fn pan(&self) -> Result<Pan, ReadError> {
        self.pan.ok_or(ReadError::Unreadable("no PAN"))
    }
}

struct Session<'a, C: CardChannel + ?Sized> {
    ch: &'a mut C,
    resp: Response,
}

impl<C: CardChannel + ?Sized> Session<'_, C> {
    fn send(&mut self, cmd: &[u8]) -> Result<(), ReadError> {
        exchange(self.ch, cmd, &mut self.resp)?;
        Ok(())
    }

    fn tlv(&self, what: &'static str) -> Result<Tlv, ReadError> {
        Tlv::from_bytes(&self.resp.data).map_err(|_| ReadError::Unreadable(what))
    }
}

/// The whole dialogue of a tap: PPSE, the UnionPay application, GPO with `terminal`'s data,
/// every record of the AFL. `Err(NoApplication)` when the card has no UnionPay application.
pub fn read_card<C: CardChannel + ?Sized>(
    ch: &mut C,
    terminal: &TerminalData,
) -> Result<CardData, ReadError> {
    let mut s = Session {
        ch,
        resp: Response::default(),
    };
    let mut out = CardData {
        terminal: Some(*terminal),
        ..CardData::default()
    };
    s.send(&command(0x00, 0xA4, 0x04, 0x00, PPSE_NAME, Some(0x00)))?;
    if s.resp.sw != sw::OK {
        return Err(ReadError::NoApplication);
    }
    out.aid = choose_aid(&s.tlv("PPSE FCI")?)?;
    s.send(&command(0x00, 0xA4, 0x04, 0x00, &out.aid, Some(0x00)))?;
    if s.resp.sw != sw::OK {
        return Err(ReadError::NoApplication);
    }
    let fci = s.tlv("FCI")?;
    let pdol = find(&fci, &[0x9F, 0x38]).unwrap_or(&[]);
    let data = pdol_data(pdol, terminal)?;
    let mut gpo_data = heapless::Vec::<u8, 255>::new();
    let _ = gpo_data.push(0x83);
    let _ = gpo_data.push(data.len() as u8);
    gpo_data
        .extend_from_slice(&data)
        .map_err(|_| ReadError::Unreadable("PDOL too long"))?;
    s.send(&command(0x80, 0xA8, 0x00, 0x00, &gpo_data, Some(0x00)))?;
    if s.resp.sw != sw::OK {
        return Err(ReadError::Unreadable("GPO refused"));
    }
    let gpo = s.tlv("GPO")?;
    if gpo.tag().to_bytes() != [0x77] {
        return Err(ReadError::Unreadable("GPO format"));
    }
    let afl = take_gpo(&gpo, &mut out)?;
    read_records(&mut s, &afl, &mut out)?;
    check_complete(&out)?;
    Ok(out)
}

/// The UnionPay entry of lowest priority number in the PPSE's directory.
fn choose_aid(fci: &Tlv) -> Result<heapless::Vec<u8, AID_BYTES_MAX>, ReadError> {
    if fci.tag().to_bytes() != [0x6F] {
        return Err(ReadError::Unreadable("PPSE FCI"));
    }
    let mut entries = heapless::Vec::<&Tlv, AFL_ENTRIES_MAX>::new();
    collect_constructed(fci, &[0x61], &mut entries);
    let mut best: Option<(u8, heapless::Vec<u8, AID_BYTES_MAX>)> = None;
    for entry in entries {
        let Some(aid) = find(entry, &[0x4F]) else {
            continue;
        };
        if aid.len() < 5 || aid.len() > AID_BYTES_MAX || aid[..5] != UNIONPAY_RID {
            continue;
        }
        let priority = find(entry, &[0x87])
            .and_then(|p| p.first())
            .map_or(0x0F, |p| p & 0x0F);
        if best.as_ref().map_or(true, |(p, _)| priority < *p) {
            let aid = heapless::Vec::from_slice(aid).map_err(|_| ReadError::Unreadable("AID"))?;
            best = Some((priority, aid));
        }
    }
    best.map(|(_, aid)| aid).ok_or(ReadError::NoApplication)
}

/// The GPO answer's data; returns the AFL.
fn take_gpo(gpo: &Tlv, out: &mut CardData) -> Result<heapless::Vec<u8, 64>, ReadError> {
    let need = |t: &[u8], what| find(gpo, t).ok_or(ReadError::Unreadable(what));
    out.aip = exact(need(&[0x82], "AIP")?, "AIP")?;
    out.atc = u16::from_be_bytes(exact(need(&[0x9F, 0x36], "ATC")?, "ATC")?);
    out.cryptogram = exact(need(&[0x9F, 0x26], "cryptogram")?, "cryptogram")?;
    out.cid = exact::<1>(need(&[0x9F, 0x27], "CID")?, "CID")?[0];
    out.iad = bounded(need(&[0x9F, 0x10], "IAD")?, "IAD")?;
    out.sdad = bounded(need(&[0x9F, 0x4B], "SDAD")?, "SDAD")?;
    if let Some(seq) = find(gpo, &[0x5F, 0x34]) {
        out.pan_seq = exact::<1>(seq, "PAN sequence")?[0];
    }
    let afl: heapless::Vec<u8, 64> = bounded(need(&[0x94], "AFL")?, "AFL")?;
    if afl.is_empty() || afl.len() % 4 != 0 || afl.len() / 4 > AFL_ENTRIES_MAX {
        return Err(ReadError::Unreadable("AFL"));
    }
    Ok(afl)
}

/// READ RECORD for every record the AFL names (EMV Book 3 10.2).
fn read_records<C: CardChannel + ?Sized>(
    s: &mut Session<'_, C>,
    afl: &[u8],
    out: &mut CardData,
) -> Result<(), ReadError> {
    let mut read = 0usize;
    for entry in afl.chunks_exact(4) {
        let sfi = entry[0] >> 3;
        let (first, last) = (entry[1], entry[2]);
        if sfi == 0 || sfi > 30 || entry[0] & 0x07 != 0 || first == 0 || last < first {
            return Err(ReadError::Unreadable("AFL entry"));
        }
        for rec in first..=last {
            read += 1;
            if read > RECORDS_READ_MAX {
                return Err(ReadError::Unreadable("too many records"));
            }
            s.send(&command(0x00, 0xB2, rec, (sfi << 3) | 4, &[], Some(0x00)))?;
            if s.resp.sw != sw::OK {
                return Err(ReadError::Unreadable("READ RECORD refused"));
            }
            let t = s.tlv("record")?;
            if t.tag().to_bytes() != [0x70] {
                return Err(ReadError::Unreadable("record template"));
            }
            take_record(&t, out)?;
        }
    }
    Ok(())
}

fn take_record(t: &Tlv, out: &mut CardData) -> Result<(), ReadError> {
    if let Some(pan) = find(t, &[0x5A]) {
        out.pan = Some(Pan::from_cn(pan).ok_or(ReadError::Unreadable("PAN"))?);
    }
    if let Some(exp) = find(t, &[0x5F, 0x24]) {
        out.expiry_ymd = yymmdd(exact(exp, "expiry")?).ok_or(ReadError::Unreadable("expiry"))?;
    }
    if let Some(seq) = find(t, &[0x5F, 0x34]) {
        out.pan_seq = exact::<1>(seq, "PAN sequence")?[0];
    }
    if let Some(i) = find(t, &[0x8F]) {
        out.ca_index = exact::<1>(i, "CA index")?[0];
    }
    if let Some(v) = find(t, &[0x90]) {
        out.issuer_cert = bounded(v, "issuer certificate")?;
    }
    if let Some(v) = find(t, &[0x92]) {
        out.issuer_remainder = bounded(v, "issuer remainder")?;
    }
    if let Some(v) = find(t, &[0x9F, 0x32]) {
        out.issuer_exponent = bounded(v, "issuer exponent")?;
    }
    if let Some(v) = find(t, &[0x9F, 0x46]) {
        out.icc_cert = bounded(v, "ICC certificate")?;
    }
    if let Some(v) = find(t, &[0x9F, 0x48]) {
        out.icc_remainder = bounded(v, "ICC remainder")?;
    }
    if let Some(v) = find(t, &[0x9F, 0x47]) {
        out.icc_exponent = bounded(v, "ICC exponent")?;
    }
    if let Some(v) = find(t, &[0x9F, 0x4A]) {
        out.sda_tags = bounded(v, "static data tag list")?;
    }
    Ok(())
}

fn check_complete(d: &CardData) -> Result<(), ReadError> {
    let missing = |what| Err(ReadError::Unreadable(what));
    if d.pan.is_none() {
        return missing("no PAN");
    }
    if d.expiry_ymd == 0 {
        return missing("no expiry");
    }
    if d.issuer_cert.is_empty() || d.issuer_exponent.is_empty() {
        return missing("no issuer certificate");
    }
    if d.icc_cert.is_empty() || d.icc_exponent.is_empty() {
        return missing("no ICC certificate");
    }
    Ok(())
}

fn tag(b: &[u8]) -> iso7816_tlv::ber::Tag {
    // Only this module's constant tags (1 or 2 valid bytes) come here.
    iso7816_tlv::ber::Tag::try_from(b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
        .expect("valid constant tag")
}

/// Every constructed `tag_bytes` inside `t` (the crate's `find` reaches primitives only), at
/// most the output's capacity: further ones are ignored.
fn collect_constructed<'t, const N: usize>(
    t: &'t Tlv,
    tag_bytes: &[u8],
    out: &mut heapless::Vec<&'t Tlv, N>,
) {
    if let Value::Constructed(children) = t.value() {
        if t.tag().to_bytes() == tag_bytes {
            let _ = out.push(t);
        }
        for c in children {
            collect_constructed(c, tag_bytes, out);
        }
    }
}

/// The value of the first primitive `tag_bytes` anywhere inside `t`.
fn find<'t>(t: &'t Tlv, tag_bytes: &[u8]) -> Option<&'t [u8]> {
    match t.find(&tag(tag_bytes))?.value() {
        Value::Primitive(v) => Some(v),
        Value::Constructed(_) => None,
    }
}

fn exact<const N: usize>(v: &[u8], what: &'static str) -> Result<[u8; N], ReadError> {
    v.try_into().map_err(|_| ReadError::Unreadable(what))
}

fn bounded<const N: usize>(
    v: &[u8],
    what: &'static str,
) -> Result<heapless::Vec<u8, N>, ReadError> {
    heapless::Vec::from_slice(v).map_err(|_| ReadError::Unreadable(what))
}

fn bcd2(b: u8) -> Option<u32> {
    let (hi, lo) = (b >> 4, b & 0x0F);
    (hi <= 9 && lo <= 9).then_some(u32::from(hi) * 10 + u32::from(lo))
}

/// `5F24` n6 YYMMDD as YYYYMMDD (EMV Book 4 6.7.3: YY below 50 is 20YY), a real day.
fn yymmdd(b: [u8; 3]) -> Option<u32> {
    let (yy, mm, dd) = (bcd2(b[0])?, bcd2(b[1])?, bcd2(b[2])?);
    let year = if yy < 50 { 2000 + yy } else { 1900 + yy };
    let month = time::Month::try_from(u8::try_from(mm).ok()?).ok()?;
    time::Date::from_calendar_date(year as i32, month, dd as u8).ok()?;
    Some(year * 10_000 + mm * 100 + dd)
}

/// Certificate expiry MMYY (n4): whether the certificate is still valid on `today`
/// (YYYYMMDD): valid through the last day of its month.
fn cert_valid_on(mmyy: [u8; 2], today_ymd: u32) -> Result<bool, AuthError> {
    let bad = AuthError::Certificate("expiry date");
    let mm = bcd2(mmyy[0]).ok_or(bad)?;
    let yy = bcd2(mmyy[1]).ok_or(bad)?;
    if !(1..=12).contains(&mm) {
        return Err(bad);
    }
    let year = if yy < 50 { 2000 + yy } else { 1900 + yy };
    Ok(today_ymd / 100 <= year * 100 + mm)
}

/// An RSA public key made ready once for EMV recovery (EMV Book 2 5.1: `data^e mod n`).
///
/// The key is accepted by RustCrypto `rsa`'s own rule ([`rsa::RsaPublicKey::new`]: an odd
/// modulus of at most 4096 bits, an odd exponent from 3 to 2^33 − 1 below the modulus), and
/// the Montgomery parameters of its modulus are computed once, here, with RustCrypto
/// `crypto-bigint` (as `rsa` 0.10 keeps them in its public keys): a recovery is then one
/// modular exponentiation over the exponent's bits (2 for `03`, 17 for `010001`), where
/// `rsa` 0.9's raw operation rebuilds the parameters and walks a whole 64-bit exponent word
/// on every call. The CA keys are made ready when `--emv-ca` is read, issuer keys when their
/// certificate is first recovered ([`IssuerKeyCache`]), ICC keys once per tap.
#[derive(Clone, Debug)]
pub struct RecoveryKey {
    params: BoxedMontyParams,
    exponent: BoxedUint,
    exponent_bits: u32,
    /// The modulus's length, bytes: what a certificate or signature under it must measure.
    n_bytes: usize,
}

impl RecoveryKey {
    /// From the big-endian modulus (no leading zero byte, at most [`CERT_BYTES_MAX`]) and
    /// exponent.
    pub fn new(modulus: &[u8], exponent: &[u8]) -> Result<RecoveryKey, &'static str> {
        if modulus.first().map_or(true, |&b| b == 0) || modulus.len() > CERT_BYTES_MAX {
            return Err("public key length");
        }
        // rsa's acceptance rule, so that the keys taken are the ones rsa takes.
        RsaPublicKey::new(
            BigUint::from_bytes_be(modulus),
            BigUint::from_bytes_be(exponent),
        )
        .map_err(|_| "public key")?;
        let n = Option::<Odd<BoxedUint>>::from(Odd::new(BoxedUint::from_be_slice_vartime(modulus)))
            .ok_or("public key")?;
        let exponent = BoxedUint::from_be_slice_vartime(exponent);
        Ok(RecoveryKey {
            // Public values: variable time is fine.
            params: BoxedMontyParams::new_vartime(n),
            exponent_bits: exponent.bit_width_vartime(),
            exponent,
            n_bytes: modulus.len(),
        })
    }

    /// The modulus's length, bytes.
    pub fn n_bytes(&self) -> usize {
        self.n_bytes
    }

    /// `data^e mod n`, as many bytes as the modulus; `data` must be exactly that long and
    /// below the modulus.
    fn recover(&self, data: &[u8]) -> Result<heapless::Vec<u8, CERT_BYTES_MAX>, &'static str> {
        if data.len() != self.n_bytes {
            return Err("length differs from the key's");
        }
        let m = BoxedUint::from_be_slice(data, self.params.bits_precision())
            .map_err(|_| "length differs from the key's")?;
        if m.cmp_vartime(self.params.modulus().as_ref()) != core::cmp::Ordering::Less {
            return Err("not below the modulus");
        }
        let x = BoxedMontyForm::new(m, &self.params)
            .pow_bounded_exp(&self.exponent, self.exponent_bits)
            .retrieve()
            .to_be_bytes();
        // The limbs are whole words: the value is below the modulus, so the bytes before
        // its length are zeros.
        let (high, low) = x.split_at(x.len() - self.n_bytes);
        if high.iter().any(|&b| b != 0) {
            return Err("recovery");
        }
        heapless::Vec::from_slice(low).map_err(|_| "length")
    }
}

fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// A public key's modulus recovered from a certificate: the certificate's leftmost digits
/// and the remainder.
fn certified_modulus(
    leftmost: &[u8],
    remainder: &[u8],
    key_len: usize,
) -> Result<heapless::Vec<u8, CERT_BYTES_MAX>, AuthError> {
    let bad = AuthError::Certificate("public key length");
    let mut m = heapless::Vec::<u8, CERT_BYTES_MAX>::new();
    if key_len <= leftmost.len() {
        // The whole key is in the certificate, padded with BB; no remainder.
        if !remainder.is_empty() {
            return Err(bad);
        }
        m.extend_from_slice(&leftmost[..key_len]).map_err(|_| bad)?;
    } else {
        if leftmost.len() + remainder.len() != key_len {
            return Err(AuthError::Certificate("remainder length"));
        }
        m.extend_from_slice(leftmost).map_err(|_| bad)?;
        m.extend_from_slice(remainder).map_err(|_| bad)?;
    }
    if m.first() == Some(&0) || m.is_empty() {
        return Err(bad);
    }
    Ok(m)
}

/// Most issuer public keys [`IssuerKeyCache`] keeps: the card issuers whose passengers ride
/// one bus, with room to spare (a city's QuickPass cards come from a few dozen banks, each
/// with one issuer certificate per CA key).
pub const ISSUER_KEYS_CACHED_MAX: usize = 32;
/// Most memory [`IssuerKeyCache`] holds, bytes: per entry, on the heap the key's modulus,
/// Montgomery `R mod n` and `R² mod n` (3 × 248 bytes at most, whole 8-byte limbs), its
/// exponent (8) and the parameters' header (under 64), and in the cache itself the entry
/// (under 128: digest, CA position, issuer identifier, expiry, pointers): under 1 KiB each.
pub const ISSUER_KEY_CACHE_BYTES_MAX: usize = ISSUER_KEYS_CACHED_MAX * 1024;

/// An issuer certificate that recovered and checked under a CA key (EMV Book 2 Table 13):
/// what a later tap of a card of the same issuer still checks against itself.
#[derive(Clone, Debug)]
struct CachedIssuer {
    /// Position of the CA key in [`CaKeys`] (a new key file makes a new cache).
    ca_at: usize,
    /// SHA-256 of the certificate `90`, the remainder `92` and the exponent `9F32`, each
    /// after its length: the same bytes recover to the same key.
    digest: [u8; 32],
    /// Recovered issuer identifier (3 to 8 PAN digits, `F`-padded) and expiry MMYY: checked
    /// against each card's PAN and each tap's date, never cached as a verdict.
    issuer_id: [u8; 4],
    expiry_mmyy: [u8; 2],
    key: RecoveryKey,
}

/// The issuer public keys recovered from certificates and checked (EMV Book 2 6.3 steps 1
/// to 4 and 10 to 11: recovery under the CA key, header, format, hash, algorithm, key
/// length), keyed by CA key and certificate digest, so that the second tap of a card of a
/// known issuer skips one RSA recovery of three. What depends on the card or the day (issuer
/// identifier against the PAN, the certificate's expiry) is checked on every tap, and the ICC
/// certificate and signed dynamic data are always recovered and verified. At most
/// [`ISSUER_KEYS_CACHED_MAX`] entries ([`ISSUER_KEY_CACHE_BYTES_MAX`] bytes); when full, the
/// oldest entry gives way. A certificate that fails is not kept.
#[derive(Clone, Debug, Default)]
pub struct IssuerKeyCache {
    entries: heapless::Vec<CachedIssuer, ISSUER_KEYS_CACHED_MAX>,
    /// The entry replaced next when full.
    next: usize,
}

impl IssuerKeyCache {
    pub fn new() -> Self {
        IssuerKeyCache::default()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn get(&self, ca_at: usize, digest: &[u8; 32]) -> Option<&CachedIssuer> {
        self.entries
            .iter()
            .find(|e| e.ca_at == ca_at && e.digest == *digest)
    }

    fn insert(&mut self, entry: CachedIssuer) -> &CachedIssuer {
        let at = if self.entries.len() < ISSUER_KEYS_CACHED_MAX {
            let _ = self.entries.push(entry);
            self.entries.len() - 1
        } else {
            let at = self.next;
            self.entries[at] = entry;
            self.next = (at + 1) % ISSUER_KEYS_CACHED_MAX;
            at
        };
        &self.entries[at]
    }
}

fn issuer_digest(d: &CardData) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    for part in [
        &d.issuer_cert[..],
        &d.issuer_remainder[..],
        &d.issuer_exponent[..],
    ] {
        h.update((part.len() as u16).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// fDDA (module doc, steps 1–4) of what [`read_card`] returned, on local date `today_ymd`,
/// recovering every certificate (no [`IssuerKeyCache`]).
pub fn authenticate(d: &CardData, ca: &CaKeys, today_ymd: u32) -> Result<(), AuthError> {
    authenticate_cached(d, ca, &mut IssuerKeyCache::new(), today_ymd)
}

/// [`authenticate`] with the issuer keys already recovered under `ca` kept in `cache` (a
/// cache made for these CA keys: a new key file needs a new cache). Decides as
/// [`authenticate`] does.
pub fn authenticate_cached(
    d: &CardData,
    ca: &CaKeys,
    cache: &mut IssuerKeyCache,
    today_ymd: u32,
) -> Result<(), AuthError> {
    let pan = d.pan.ok_or(AuthError::Certificate("no PAN"))?;
    let rid = d.aid.get(..5).ok_or(AuthError::Certificate("AID"))?;
    let (ca_at, ca_key) = ca
        .find_at(rid, d.ca_index, today_ymd)
        .ok_or(AuthError::Certificate("no usable CA key for the index"))?;
    let digest = issuer_digest(d);
    let issuer = match cache.get(ca_at, &digest) {
        Some(hit) => hit,
        None => cache.insert(issuer_key(d, ca_at, digest, ca_key)?),
    };
    let cert = AuthError::Certificate;
    if !pan.starts_with_cn(&issuer.issuer_id, 3, false) {
        return Err(cert("issuer identifier"));
    }
    if !cert_valid_on(issuer.expiry_mmyy, today_ymd)? {
        return Err(cert("issuer certificate expired"));
    }
    let icc_modulus = icc_key(d, &pan, &issuer.key, today_ymd)?;
    verify_sdad(d, &icc_modulus)
}

/// The issuer certificate's checks that depend on its bytes alone.
fn issuer_key(
    d: &CardData,
    ca_at: usize,
    digest: [u8; 32],
    ca: &CaKey,
) -> Result<CachedIssuer, AuthError> {
    let cert = AuthError::Certificate;
    let x = ca.key.recover(&d.issuer_cert).map_err(cert)?;
    let n = x.len();
    if n < 36 || x[0] != 0x6A || x[n - 1] != 0xBC || x[1] != 0x02 {
        return Err(cert("issuer certificate format"));
    }
    let hash = sha1(&[&x[1..n - 21], &d.issuer_remainder, &d.issuer_exponent]);
    if hash[..] != x[n - 21..n - 1] {
        return Err(cert("issuer certificate hash"));
    }
    if x[11] != 0x01 || x[12] != 0x01 {
        return Err(cert("issuer certificate algorithm"));
    }
    if usize::from(x[14]) != d.issuer_exponent.len() {
        return Err(cert("issuer exponent length"));
    }
    let modulus = certified_modulus(&x[15..n - 21], &d.issuer_remainder, usize::from(x[13]))?;
    let key = RecoveryKey::new(&modulus, &d.issuer_exponent).map_err(cert)?;
    Ok(CachedIssuer {
        ca_at,
        digest,
        issuer_id: [x[2], x[3], x[4], x[5]],
        expiry_mmyy: [x[6], x[7]],
        key,
    })
}

/// The ICC certificate's checks; the ICC key's modulus.
fn icc_key(
    d: &CardData,
    pan: &Pan,
    issuer: &RecoveryKey,
    today_ymd: u32,
) -> Result<heapless::Vec<u8, CERT_BYTES_MAX>, AuthError> {
    let cert = AuthError::Certificate;
    let x = issuer.recover(&d.icc_cert).map_err(cert)?;
    let n = x.len();
    if n < 42 || x[0] != 0x6A || x[n - 1] != 0xBC || x[1] != 0x04 {
        return Err(cert("ICC certificate format"));
    }
    // Static data to be authenticated: the values of 9F4A's tags, which must be the AIP.
    if d.sda_tags.as_slice() != [0x82] {
        return Err(cert("static data tag list"));
    }
    let hash = sha1(&[&x[1..n - 21], &d.icc_remainder, &d.icc_exponent, &d.aip]);
    if hash[..] != x[n - 21..n - 1] {
        return Err(cert("ICC certificate hash"));
    }
    if !pan.starts_with_cn(&x[2..12], PAN_DIGITS_MIN, true) {
        return Err(cert("ICC certificate PAN"));
    }
    if !cert_valid_on([x[12], x[13]], today_ymd)? {
        return Err(cert("ICC certificate expired"));
    }
    if x[17] != 0x01 || x[18] != 0x01 {
        return Err(cert("ICC certificate algorithm"));
    }
    if usize::from(x[20]) != d.icc_exponent.len() {
        return Err(cert("ICC exponent length"));
    }
    certified_modulus(&x[21..n - 21], &d.icc_remainder, usize::from(x[19]))
}

/// The signed dynamic data under the certified ICC key: a key `rsa` refuses is
/// `bad_signature`, as a signature that does not recover.
fn verify_sdad(d: &CardData, icc_modulus: &[u8]) -> Result<(), AuthError> {
    let sig = AuthError::Signature;
    let terminal = d.terminal.ok_or(sig("no terminal data"))?;
    let icc = RecoveryKey::new(icc_modulus, &d.icc_exponent).map_err(sig)?;
    let x = icc.recover(&d.sdad).map_err(sig)?;
    let n = x.len();
    if n < 26 || x[0] != 0x6A || x[n - 1] != 0xBC || x[1] != 0x05 || x[2] != 0x01 {
        return Err(sig("format"));
    }
    let ldd = usize::from(x[3]);
    if 4 + ldd > n - 21 {
        return Err(sig("dynamic data length"));
    }
    let hash = sha1(&[&x[1..n - 21], &terminal.fdda_data()]);
    if hash[..] != x[n - 21..n - 1] {
        return Err(sig("hash"));
    }
    Ok(())
}

/// The signed dynamic application data a card makes (EMV Book 2 Table 17, format `05`,
/// fDDA's terminal data): `6A 05 01 Ldd ‹dynamic data› BB.. ‹SHA-1› BC`, `n_bytes` long,
/// before the card's private-key operation. For the simulated card.
pub fn sdad_plain(
    dynamic: &[u8],
    fdda_data: &[u8],
    n_bytes: usize,
) -> Option<heapless::Vec<u8, CERT_BYTES_MAX>> {
    if n_bytes < 26 + dynamic.len() || n_bytes > CERT_BYTES_MAX {
        return None;
    }
    let mut x = heapless::Vec::<u8, CERT_BYTES_MAX>::new();
    x.extend_from_slice(&[0x6A, 0x05, 0x01, dynamic.len() as u8])
        .ok()?;
    x.extend_from_slice(dynamic).ok()?;
    x.resize(n_bytes - 21, 0xBB).ok()?;
    let hash = sha1(&[&x[1..], fdda_data]);
    x.extend_from_slice(&hash).ok()?;
    x.push(0xBC).ok()?;
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pan_masks_and_round_trips_cn() {
        let p = Pan::parse("6214830000000001").unwrap();
        assert_eq!(p.masked().to_string(), "621483******0001");
        assert_eq!(format!("{p:?}"), "Pan(621483******0001)");
        assert_eq!(Pan::from_cn(&p.to_cn()), Some(p));
        let odd = Pan::parse("6214830000000000019").unwrap();
        assert_eq!(odd.to_cn().last(), Some(&0x9F));
        assert_eq!(Pan::from_cn(&odd.to_cn()), Some(odd));
        assert_eq!(odd.masked().to_string(), "621483*********0019");
        assert!(Pan::parse("62148300000").is_none());
        assert!(Pan::from_cn(&[0x62, 0x14, 0x8F, 0x30, 0x00, 0x00]).is_none());
    }

    #[test]
    fn pdol_data_follows_the_card_s_list() {
        let t = TerminalData {
            amount_fen: 200,
            datetime_bcd: [0x20, 0x26, 0x12, 0x01, 0x08, 0x00, 0x00],
            unpredictable_number: [1, 2, 3, 4],
        };
        let dol = [
            0x9F, 0x66, 0x04, 0x9F, 0x02, 0x06, 0x9A, 0x03, 0xDF, 0x60, 0x01,
        ];
        let d = pdol_data(&dol, &t).unwrap();
        assert_eq!(
            d.as_slice(),
            [0x28, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x00, 0x26, 0x12, 0x01, 0x00]
        );
        assert!(pdol_data(&[0x9F], &t).is_err());
    }

    #[test]
    fn certificate_is_valid_through_the_last_day_of_its_month() {
        assert!(cert_valid_on([0x12, 0x26], 2026_12_31).unwrap());
        assert!(!cert_valid_on([0x11, 0x26], 2026_12_01).unwrap());
        assert!(cert_valid_on([0x11, 0x26], 2026_11_30).unwrap());
        assert!(cert_valid_on([0x13, 0x26], 2026_01_01).is_err());
    }
}
