//! Domain types shared by every part of the validator: card numbers, accounts, rider
//! categories, blacklist reasons and decision reasons.
//!
//! Money is integer fen everywhere; no float touches an amount. A fare or charge is [`Fen`]
//! (unsigned); a purse balance is [`BalanceFen`] (signed: an overdrawn purse is negative).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::card::quickpass::{Pan, PanToken, PanTokenKey};

/// Amount in fen (1/100 yuan): a fare, a charge, an amount to debit.
pub type Fen = u32;

/// A purse balance in fen, signed: negative when the purse is overdrawn. Always within
/// [`PURSE_BALANCE_FEN_MIN`]..=[`PURSE_BALANCE_FEN_MAX`], the range of the 31-bit
/// two's-complement amount of the card's purse word (see [`crate::card::tunion`] for the
/// encoding and its source).
pub type BalanceFen = i32;

/// Lowest purse balance a card can hold: −2^30 fen (31-bit two's complement).
pub const PURSE_BALANCE_FEN_MIN: BalanceFen = -(1 << 30);
/// Highest purse balance a card can hold: 2^30 − 1 fen.
pub const PURSE_BALANCE_FEN_MAX: BalanceFen = (1 << 30) - 1;

/// Whether `v` is a balance a purse can hold.
pub fn is_purse_balance(v: i64) -> bool {
    (i64::from(PURSE_BALANCE_FEN_MIN)..=i64::from(PURSE_BALANCE_FEN_MAX)).contains(&v)
}

/// Digits in a card number (transport application serial number, 10 BCD bytes).
pub const CARD_NO_DIGITS: usize = 20;

/// Transport application serial number: 20 decimal digits, stored as 10 BCD bytes exactly as
/// the card's public file (SFI 0x15, bytes 10..20) and the ride code (bytes 13..23) carry it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CardNo(pub [u8; 10]);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CardNoError {
    #[error("card number must have 20 digits")]
    Length,
    #[error("card number holds a non-decimal digit")]
    NotDecimal,
}

impl CardNo {
    /// From 10 BCD bytes; every nibble must be a decimal digit.
    pub fn from_bcd(bytes: [u8; 10]) -> Result<Self, CardNoError> {
        if bytes.iter().all(|b| (b >> 4) < 10 && (b & 0x0F) < 10) {
            Ok(CardNo(bytes))
        } else {
            Err(CardNoError::NotDecimal)
        }
    }

    /// The number as an integer (20 digits fit below 10^20 < 2^67, so u128).
    pub fn as_u128(&self) -> u128 {
        self.0.iter().fold(0u128, |acc, b| {
            acc * 100 + u128::from(b >> 4) * 10 + u128::from(b & 0x0F)
        })
    }

    /// From an integer below 10^20.
    pub fn from_u128(mut n: u128) -> Result<Self, CardNoError> {
        if n >= 10u128.pow(CARD_NO_DIGITS as u32) {
            return Err(CardNoError::Length);
        }
        let mut out = [0u8; 10];
        for byte in out.iter_mut().rev() {
            let lo = (n % 10) as u8;
            n /= 10;
            let hi = (n % 10) as u8;
            n /= 10;
            *byte = (hi << 4) | lo;
        }
        Ok(CardNo(out))
    }

    /// The last 8 bytes of the serial, as PBOC key diversification and MAC1 inputs use it.
    pub fn serial_tail8(&self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out.copy_from_slice(&self.0[2..10]);
        out
    }
}

impl FromStr for CardNo {
    type Err = CardNoError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.as_bytes();
        if digits.len() != CARD_NO_DIGITS {
            return Err(CardNoError::Length);
        }
        let mut out = [0u8; 10];
        for (i, pair) in digits.chunks_exact(2).enumerate() {
            let hi = pair[0].wrapping_sub(b'0');
            let lo = pair[1].wrapping_sub(b'0');
            if hi > 9 || lo > 9 {
                return Err(CardNoError::NotDecimal);
            }
            out[i] = (hi << 4) | lo;
        }
        Ok(CardNo(out))
    }
}

impl fmt::Display for CardNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{}{}", b >> 4, b & 0x0F)?;
        }
        Ok(())
    }
}

impl fmt::Debug for CardNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardNo({self})")
    }
}

impl Serialize for CardNo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CardNo {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A ride-code payment account: the holder's account at one channel app.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct AccountId {
    pub channel: u16,
    pub account: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("account must be CHANNEL:ACCOUNT in decimal")]
pub struct AccountIdError;

impl FromStr for AccountId {
    type Err = AccountIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (c, a) = s.split_once(':').ok_or(AccountIdError)?;
        let all_digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(c) || !all_digits(a) {
            return Err(AccountIdError);
        }
        Ok(AccountId {
            channel: c.parse().map_err(|_| AccountIdError)?,
            account: a.parse().map_err(|_| AccountIdError)?,
        })
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.channel, self.account)
    }
}

/// What a blacklist entry names: a physical card, a ride-code account, or a QuickPass card
/// by the keyed token of its PAN (the deny list never holds a clear PAN).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum ListId {
    Card(CardNo),
    Account(AccountId),
    Pan(PanToken),
}

/// How a [`ListId::Pan`] is written: `t:` and the token's 16 hex digits, so that no PAN's
/// digits can be read as a token.
pub const PAN_TOKEN_PREFIX: &str = "t:";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ListIdError {
    #[error("kind must be card, account or pan")]
    Kind,
    #[error("a pan id must be 12 to 19 decimal digits, or t: and a token's 16 hex digits")]
    Pan,
    #[error(transparent)]
    Card(#[from] CardNoError),
    #[error(transparent)]
    Account(#[from] AccountIdError),
}

impl ListId {
    /// From the `kind` and `id` fields of replay.md's blacklist events and CSV.
    pub fn parse(kind: &str, id: &str) -> Result<Self, ListIdError> {
        match kind {
            "card" => Ok(ListId::Card(id.parse()?)),
            "account" => Ok(ListId::Account(id.parse()?)),
            "pan" => Self::parse_pan(id, &PanTokenKey::TEST),
            _ => Err(ListIdError::Kind),
        }
    }

    /// As [`ListId::parse`], a `pan` id in digits tokenised under `key`.
    pub fn parse_with_key(kind: &str, id: &str, key: &PanTokenKey) -> Result<Self, ListIdError> {
        match kind {
            "pan" => Self::parse_pan(id, key),
            _ => Self::parse(kind, id),
        }
    }

    /// A `pan` id: the PAN's digits (tokenised under `key` at once; the digits are not kept)
    /// or an existing token, `t:` and 16 hex digits.
    pub fn parse_pan(id: &str, key: &PanTokenKey) -> Result<Self, ListIdError> {
        if let Some(hex) = id.strip_prefix(PAN_TOKEN_PREFIX) {
            if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ListIdError::Pan);
            }
            let t = u64::from_str_radix(hex, 16).map_err(|_| ListIdError::Pan)?;
            return Ok(ListId::Pan(PanToken(t)));
        }
        let pan = Pan::parse(id).ok_or(ListIdError::Pan)?;
        Ok(ListId::Pan(key.token(&pan)))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ListId::Card(_) => "card",
            ListId::Account(_) => "account",
            ListId::Pan(_) => "pan",
        }
    }
}

impl fmt::Display for ListId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListId::Card(c) => c.fmt(f),
            ListId::Account(a) => a.fmt(f),
            ListId::Pan(t) => write!(f, "{PAN_TOKEN_PREFIX}{t}"),
        }
    }
}

/// Why an entry is on the blacklist. The lock policy depends on it: `Replaced` and
/// `Cancelled` cards are blocked on the spot; a `Lost` card is only refused, since its holder
/// may find it and cancel the report (解挂).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum ListReason {
    /// 挂失: reported lost.
    Lost = 1,
    /// 补领/换领/换发: the old card of a reissue.
    Replaced = 2,
    /// 注销: cancelled.
    Cancelled = 3,
    /// An account that owes for earlier rides.
    Arrears = 4,
}

impl ListReason {
    pub const ALL: [ListReason; 4] = [
        ListReason::Lost,
        ListReason::Replaced,
        ListReason::Cancelled,
        ListReason::Arrears,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ListReason::Lost => "lost",
            ListReason::Replaced => "replaced",
            ListReason::Cancelled => "cancelled",
            ListReason::Arrears => "arrears",
        }
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        ListReason::ALL.into_iter().find(|r| *r as u8 == v)
    }

    /// A dead card is blocked by command when it is seen.
    pub fn locks_card(self) -> bool {
        matches!(self, ListReason::Replaced | ListReason::Cancelled)
    }
}

impl FromStr for ListReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ListReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("reason must be lost, replaced, cancelled or arrears, not {s:?}")
            })
    }
}

/// The reasons one id is listed for: a set, since a card reported lost (挂失) and later
/// reissued (补领) is both `lost` and `replaced`, and a late 解挂 lifts only `lost`.
///
/// Bit `r − 1` stands for [`ListReason`] `r`: 1 lost, 2 replaced, 4 cancelled, 8 arrears (the
/// byte written in snapshot tables, the validator's list file and JSON as names). The empty
/// set is "not listed": no entry of a list, file or table ever holds it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ReasonSet(u8);

impl ReasonSet {
    /// No reason: not listed.
    pub const EMPTY: ReasonSet = ReasonSet(0);
    /// Every bit a reason can have.
    pub const BITS_ALL: u8 = 0x0F;
    const LOCKING: u8 =
        ReasonSet::bit(ListReason::Replaced) | ReasonSet::bit(ListReason::Cancelled);

    const fn bit(reason: ListReason) -> u8 {
        1 << (reason as u8 - 1)
    }

    /// The set of one reason.
    pub const fn of(reason: ListReason) -> ReasonSet {
        ReasonSet(ReasonSet::bit(reason))
    }

    /// The set these bits name, or None if a bit names no reason.
    pub const fn from_bits(bits: u8) -> Option<ReasonSet> {
        if bits & !ReasonSet::BITS_ALL == 0 {
            Some(ReasonSet(bits))
        } else {
            None
        }
    }

    /// Bit `r − 1` for each reason `r` in the set.
    pub const fn bits(self) -> u8 {
        self.0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub const fn contains(self, reason: ListReason) -> bool {
        self.0 & ReasonSet::bit(reason) != 0
    }

    /// The set with `reason` added.
    #[must_use]
    pub const fn with(self, reason: ListReason) -> ReasonSet {
        ReasonSet(self.0 | ReasonSet::bit(reason))
    }

    /// The set with `reason` lifted (the others stay).
    #[must_use]
    pub const fn without(self, reason: ListReason) -> ReasonSet {
        ReasonSet(self.0 & !ReasonSet::bit(reason))
    }

    /// The set with every reason of `other` added.
    #[must_use]
    pub const fn union(self, other: ReasonSet) -> ReasonSet {
        ReasonSet(self.0 | other.0)
    }

    /// The reasons of this set that are not in `other`.
    #[must_use]
    pub const fn minus(self, other: ReasonSet) -> ReasonSet {
        ReasonSet(self.0 & !other.0)
    }

    /// Reasons in the set, in [`ListReason::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = ListReason> {
        ListReason::ALL
            .into_iter()
            .filter(move |r| self.contains(*r))
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// A dead card is blocked by command when it is seen: any `replaced` or `cancelled`
    /// among the reasons, whatever else the card is listed for (replay.md).
    pub const fn locks_card(self) -> bool {
        self.0 & ReasonSet::LOCKING != 0
    }
}

impl From<ListReason> for ReasonSet {
    fn from(reason: ListReason) -> Self {
        ReasonSet::of(reason)
    }
}

impl FromIterator<ListReason> for ReasonSet {
    fn from_iter<I: IntoIterator<Item = ListReason>>(iter: I) -> Self {
        iter.into_iter().fold(ReasonSet::EMPTY, ReasonSet::with)
    }
}

/// The names joined by `+`, in [`ListReason::ALL`] order: `lost+replaced`.
impl fmt::Display for ReasonSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            f.write_str(r.as_str())?;
        }
        Ok(())
    }
}

impl fmt::Debug for ReasonSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReasonSet({self})")
    }
}

/// As a JSON list of names: `["lost", "replaced"]`.
impl Serialize for ReasonSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// Rider category: the card type for cards, the certificate's rider_category for ride codes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum RiderCategory {
    Adult = 0,
    Student = 1,
    Senior = 2,
    Disabled = 3,
    Veteran = 4,
}

impl RiderCategory {
    pub const ALL: [RiderCategory; 5] = [
        RiderCategory::Adult,
        RiderCategory::Student,
        RiderCategory::Senior,
        RiderCategory::Disabled,
        RiderCategory::Veteran,
    ];

    /// From the ride code's rider_category byte (0 adult .. 4 veteran/priority).
    pub fn from_u8(v: u8) -> Option<Self> {
        RiderCategory::ALL.get(usize::from(v)).copied()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RiderCategory::Adult => "adult",
            RiderCategory::Student => "student",
            RiderCategory::Senior => "senior",
            RiderCategory::Disabled => "disabled",
            RiderCategory::Veteran => "veteran",
        }
    }
}

impl FromStr for RiderCategory {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RiderCategory::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown card type {s:?}"))
    }
}

/// The medium a passenger presented.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Media {
    Card,
    Qr,
    /// A UnionPay QuickPass (闪付) tap, charged after the ride (quickpass.md).
    Quickpass,
}

impl Media {
    pub fn as_str(self) -> &'static str {
        match self {
            Media::Card => "card",
            Media::Qr => "qr",
            Media::Quickpass => "quickpass",
        }
    }
}

/// Why a tap or scan was refused. Names are the fixed contract of replay.md and
/// ride-code-v1.md.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    // Card reasons, in the order they are checked.
    Unreadable,
    CardBlocked,
    NotActivated,
    CardNotYetValid,
    CardExpired,
    Blacklisted,
    RepeatTap,
    /// The card's issuing city (file 0x17) is not accepted by the fare table's interop rules.
    IssuerNotAccepted,
    InsufficientBalance,
    CardRemoved,
    // Ride code reasons (ride-code-v1.md), besides Blacklisted and RepeatTap.
    Malformed,
    UnsupportedAlgorithm,
    UnsupportedChannel,
    UnknownKey,
    KeyNotValid,
    BadCertificate,
    CertificateNotValid,
    BadSignature,
    CodeNotYetValid,
    CodeExpired,
    Replayed,
    /// No record, no ride: the journal could not make the record durable.
    StorageUnavailable,
}

impl Reason {
    pub const ALL: [Reason; 22] = [
        Reason::Unreadable,
        Reason::CardBlocked,
        Reason::NotActivated,
        Reason::CardNotYetValid,
        Reason::CardExpired,
        Reason::Blacklisted,
        Reason::RepeatTap,
        Reason::IssuerNotAccepted,
        Reason::InsufficientBalance,
        Reason::CardRemoved,
        Reason::Malformed,
        Reason::UnsupportedAlgorithm,
        Reason::UnsupportedChannel,
        Reason::UnknownKey,
        Reason::KeyNotValid,
        Reason::BadCertificate,
        Reason::CertificateNotValid,
        Reason::BadSignature,
        Reason::CodeNotYetValid,
        Reason::CodeExpired,
        Reason::Replayed,
        Reason::StorageUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unreadable => "unreadable",
            Reason::CardBlocked => "card_blocked",
            Reason::NotActivated => "not_activated",
            Reason::CardNotYetValid => "card_not_yet_valid",
            Reason::CardExpired => "card_expired",
            Reason::Blacklisted => "blacklisted",
            Reason::RepeatTap => "repeat_tap",
            Reason::IssuerNotAccepted => "issuer_not_accepted",
            Reason::InsufficientBalance => "insufficient_balance",
            Reason::CardRemoved => "card_removed",
            Reason::Malformed => "malformed",
            Reason::UnsupportedAlgorithm => "unsupported_algorithm",
            Reason::UnsupportedChannel => "unsupported_channel",
            Reason::UnknownKey => "unknown_key",
            Reason::KeyNotValid => "key_not_valid",
            Reason::BadCertificate => "bad_certificate",
            Reason::CertificateNotValid => "certificate_not_valid",
            Reason::BadSignature => "bad_signature",
            Reason::CodeNotYetValid => "code_not_yet_valid",
            Reason::CodeExpired => "code_expired",
            Reason::Replayed => "replayed",
            Reason::StorageUnavailable => "storage_unavailable",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_no_round_trips_text_bcd_and_integer() {
        let c: CardNo = "37140000000000000001".parse().unwrap();
        assert_eq!(c.0[0], 0x37);
        assert_eq!(c.to_string(), "37140000000000000001");
        assert_eq!(CardNo::from_u128(c.as_u128()).unwrap(), c);
        assert_eq!("3714".parse::<CardNo>(), Err(CardNoError::Length));
        assert_eq!(
            "3714000000000000000a".parse::<CardNo>(),
            Err(CardNoError::NotDecimal)
        );
        assert!(CardNo::from_bcd([0xFF; 10]).is_err());
    }

    #[test]
    fn pan_ids_are_tokens_and_never_read_as_digits() {
        let by_digits = ListId::parse("pan", "6214830000000001").unwrap();
        let ListId::Pan(t) = by_digits else {
            panic!("not a pan id")
        };
        assert_eq!(
            t,
            PanTokenKey::TEST.token(&Pan::parse("6214830000000001").unwrap())
        );
        let text = by_digits.to_string();
        assert!(text.starts_with(PAN_TOKEN_PREFIX) && !text.contains("6214830000000001"));
        assert_eq!(ListId::parse("pan", &text), Ok(by_digits));
        // Sixteen decimal digits are a PAN, never a token.
        let sixteen = ListId::parse("pan", "1234567890123456").unwrap();
        assert_ne!(sixteen, ListId::Pan(PanToken(0x1234567890123456)));
        for bad in [
            "62148300000",
            "t:12",
            "t:zz34567890123456",
            "621483000000000x",
        ] {
            assert_eq!(ListId::parse("pan", bad), Err(ListIdError::Pan), "{bad}");
        }
    }

    #[test]
    fn account_id_is_strict_decimal() {
        let a: AccountId = "2:123".parse().unwrap();
        assert_eq!(
            a,
            AccountId {
                channel: 2,
                account: 123
            }
        );
        assert_eq!(a.to_string(), "2:123");
        for bad in ["2", ":1", "2:", "x:1", "2:-1", "70000:1", "2:1:3", " 2:1"] {
            assert!(bad.parse::<AccountId>().is_err(), "{bad}");
        }
    }
}
