//! The T-Union transport application (JT/T 978, 交通联合 purse) as the validator sees it: the
//! commands it sends and strict parsers of every answer.
//!
//! ## Commands
//!
//! | step | APDU | answer |
//! | --- | --- | --- |
//! | SELECT by AID | `00 A4 04 00 08 A0 00 00 06 32 01 01 05` | FCI; `6A 82` no application, `6A 81` / `93 03` blocked |
//! | READ BINARY 0x15 | `00 B0 95 00 1E` | public application info, 30 bytes (below) |
//! | READ BINARY 0x16 | `00 B0 96 00 37` | cardholder info, 55 bytes; byte 0 is the card type |
//! | READ BINARY 0x17 | `00 B0 97 00 3C` | management info, 60 bytes (below): issuing city, interop kind |
//! | READ RECORD 0x1A rec 2 | `00 B2 02 D4 80` | the bus compound record (last boarding), 128 bytes; `6A 83` none yet |
//! | GET BALANCE | `80 5C 00 02 04` | balance (4) |
//! | INITIALIZE FOR CAPP PURCHASE | `80 50 03 02 0B` key index (1) amount (4) terminal no (6), Le `0F` | balance (4), offline counter (2), overdraft limit (3), key version (1), algorithm (1), card random (4) |
//! | UPDATE CAPP DATA CACHE | `80 DC 02 D0 80` + 128-byte record | `90 00`; applied only together with the debit |
//! | DEBIT FOR CAPP PURCHASE | `80 54 01 00 0F` terminal seq (4) date-time (7) MAC1 (4), Le `08` | TAC (4), MAC2 (4); `93 02` MAC1 wrong, `94 01` balance too low |
//! | GET TRANSACTION PROOF | `80 5A 00 09 02` offline counter (2), Le `08` | MAC2 (4), TAC (4) of that transaction; `94 06` none |
//! | GET CHALLENGE | `00 84 00 00 04` | random (4) |
//! | APPLICATION BLOCK | `84 1E 00 01 04` MAC (4) | `90 00`; P2 `01` blocks permanently |
//!
//! ## File 0x15 (public application info)
//!
//! | bytes | field |
//! | --- | --- |
//! | 0–7 | issuer identifier |
//! | 8 | application type |
//! | 9 | enable flag: 0 not enabled, 1 enabled, 2 disabled |
//! | 10–19 | application serial number, BCD: the 20-digit card number |
//! | 20–23 | start date, BCD YYYYMMDD |
//! | 24–27 | expiry date, BCD YYYYMMDD (00000000 and FFFFFFFF invalid) |
//! | 28–29 | issuer-defined |
//!
//! ## File 0x17 (management info, 管理信息文件)
//!
//! | bytes | field |
//! | --- | --- |
//! | 0–3 | country code |
//! | 4–5 | province code, BCD |
//! | 6–7 | issuing city code, BCD, 4 digits (Dezhou's cards carry `45 30`, as in 0x15 bytes 2–3) |
//! | 8–9 | interop kind (互通卡种): `00 01` a T-Union interop card (交通联合), `00 00` a city-only card; others kept as read |
//! | 10 | card category as the issuer manages it |
//! | 11–14 | concession end date (优惠截止日期), BCD YYYYMMDD; `00000000` or `FFFFFFFF`: none, this operator's layout |
//! | 15–18 | annual review date (年审有效期), BCD YYYYMMDD; `00000000` or `FFFFFFFF`: none, this operator's layout |
//! | 19–59 | issuer-defined |
//!
//! The issuing city decides the rider category: the card type byte of 0x16 is the issuer's
//! own coding and its concessions are the issuer's, so a card whose city is not the fare
//! table's home city gets the table's interop rules, not the local concession
//! ([`crate::fare`]). A city code that is not 4 BCD digits is a malformed file: `unreadable`.
//!
//! A concession (student, senior, disabled, veteran card type) holds only while the card says
//! so: up to and including its end date, and up to and including its annual review date
//! (年审: the holder must show at a counter every year that the concession still applies;
//! the counter writes the next date). Past either the card pays the adult fare
//! ([`crate::fare::concession_status`]). These 8 bytes are kept as read and parsed only for
//! a card that would get a local concession ([`Management::concession_dates`]), since other
//! issuers use the bytes after 10 in their own ways; there a date that is neither BCD nor
//! one of the two "none" words is a malformed file (`unreadable`).
//!
//! Sources: JT/T 978.3 (the transport application's files); the byte positions as the
//! project's working notes on the card give them. Open-source readers of these cards read the
//! issuing city from the issuer identifier of 0x15 (bytes 2–3, or its copy in the FCI tag
//! `9F0C`: `t_union_decode_app_meta` in `applications/external/t_union_master/src/protocol/
//! t_union_poller_i.c` of the Flipper Zero "T-Union Master" application) and do not parse
//! 0x17 (Metrodroid's `TUnionTransitData` reads 0x15 only); no public reader was found to
//! confirm bytes 8–10, so the interop kind is carried as read and only its `00 01` value is
//! given a meaning.
//!
//! ## The bus compound record (0x1A, record 02), this operator's layout
//!
//! | bytes | field |
//! | --- | --- |
//! | 0 | record id `02` |
//! | 1 | length of what follows, `7E` |
//! | 2 | lock flag, 0 |
//! | 3–4 | route |
//! | 5–10 | terminal number |
//! | 11–14 | boarding time, unix seconds |
//! | 15–18 | fare charged, fen |
//! | 19 | rider category |
//! | 20 | transfers in a row up to this boarding (0: no transfer), for `transfer_count` |
//! | 21–127 | zero |
//!
//! A record whose boarding time is zero (as issuers initialise the file) is read as it is, a
//! boarding in 1970: no value read from the card stands for "no boarding"; `6A 83` does.
//!
//! ## The purse word (GET BALANCE, and INITIALIZE's first 4 bytes)
//!
//! | bits | meaning |
//! | --- | --- |
//! | 31 | not part of the amount: set by some issuers and on erased purses; ignored |
//! | 30..0 | the balance in fen, 31-bit two's complement: −1,073,741,824 to 1,073,741,823 |
//!
//! So `00 00 13 88` is 5000 fen, `80 00 13 88` is also 5000 fen, `7F FF FF FF` and
//! `FF FF FF FF` (an overdrawn or erased purse) are −1 fen, `40 00 00 00` is −1,073,741,824.
//! Every word decodes ([`purse_balance_fen`] is total): nothing a card answers can mean "no
//! balance" or overflow the engine's [`BalanceFen`]. This is how field readers of these cards
//! read it: Metrodroid's China/T-Union reader takes the balance as bits 1..31 of the word,
//! signed ("upper bit is some garbage": `ChinaTransitData.parseBalance`,
//! `getBitsFromBufferSigned(1, 31)`, in
//! `src/commonMain/kotlin/au/id/micolous/metrodroid/transit/china/ChinaTransitData.kt` of
//! github.com/metrodroid/metrodroid; its `TUnionTransitData` likewise drops bit 31).
//!
//! Sources: JT/T 978.3 (files and commands of the transport application), PBOC 2.0 part 2
//! electronic purse (purchase, proof, status words), ISO 7816-4; the purse word as above.

use super::apdu::{command, exchange, sw, CardChannel, ChannelError, Response};
use crate::types::{is_purse_balance, BalanceFen, CardNo, Fen, RiderCategory};

/// AID of the transport application (`MOT_T_EP`).
pub const AID: [u8; 8] = [0xA0, 0x00, 0x00, 0x06, 0x32, 0x01, 0x01, 0x05];
pub const PUBLIC_FILE_BYTES: usize = 30;
pub const HOLDER_FILE_BYTES: usize = 55;
/// File 0x17, management info.
pub const MANAGEMENT_FILE_BYTES: usize = 60;
/// Interop kind (0x17 bytes 8–9) of a T-Union interop card.
pub const INTEROP_KIND_TUNION: u16 = 0x0001;
/// Interop kind of a city-only card.
pub const INTEROP_KIND_CITY_ONLY: u16 = 0x0000;
pub const COMPOUND_RECORD_BYTES: usize = 128;
pub const INIT_PURCHASE_BYTES: usize = 15;
/// Transaction type of a compound (CAPP) purchase.
pub const TX_TYPE_CAPP: u8 = 0x09;
/// Record id of the bus record in the compound file.
pub const BUS_RECORD_ID: u8 = 0x02;
/// SFI of the compound file, 0x1A.
pub const SFI_COMPOUND: u8 = 0x1A;

/// What went wrong in a dialogue with a card or SAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("command {ins:02X}: status {sw:04X}")]
    Status { ins: u8, sw: u16 },
    #[error("command {ins:02X}: answer of {got} bytes, expected {expected}")]
    Length {
        ins: u8,
        expected: usize,
        got: usize,
    },
    #[error("malformed field: {0}")]
    Field(&'static str),
}

/// A calendar date as BCD YYYYMMDD, compared as the integer YYYYMMDD.
pub type Ymd = u32;

/// File 0x15, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicInfo {
    pub issuer: [u8; 8],
    pub app_type: u8,
    pub enable_flag: u8,
    pub card_no: CardNo,
    pub valid_from: Ymd,
    pub valid_until: Ymd,
}

/// A city code as the card writes it: 4 BCD digits, held as their decimal value (`45 30` is
/// 4530). Every value is 0..=9999; none stands for "no city".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CityCode(pub u16);

impl CityCode {
    /// From two BCD bytes; `None` when a nibble is not a decimal digit.
    pub fn from_bcd(b: [u8; 2]) -> Option<CityCode> {
        let v = bcd_digit_pair(b[0])? * 100 + bcd_digit_pair(b[1])?;
        Some(CityCode(v as u16))
    }

    /// The two BCD bytes (the value is below 10,000 by construction of `from_bcd`/`parse`).
    pub fn to_bcd(self) -> [u8; 2] {
        let (hi, lo) = ((self.0 / 100) as u8, (self.0 % 100) as u8);
        [((hi / 10) << 4) | (hi % 10), ((lo / 10) << 4) | (lo % 10)]
    }
}

impl std::str::FromStr for CityCode {
    type Err = String;
    /// Exactly 4 decimal digits, as `"4530"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("a city code is 4 decimal digits, not {s:?}"));
        }
        s.parse()
            .map(CityCode)
            .map_err(|_| format!("bad city code {s:?}"))
    }
}

impl std::fmt::Display for CityCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}", self.0)
    }
}

impl<'de> serde::Deserialize<'de> for CityCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for CityCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// File 0x17, parsed down to what the fare rules use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Management {
    pub issuer_city: CityCode,
    /// Bytes 8–9 as read ([`INTEROP_KIND_TUNION`], [`INTEROP_KIND_CITY_ONLY`] or another).
    pub interop_kind: u16,
    /// Bytes 11–14 as read: the concession end date, parsed by [`Self::concession_dates`].
    pub concession_until_bcd: [u8; 4],
    /// Bytes 15–18 as read: the annual review (年审) date.
    pub review_until_bcd: [u8; 4],
}

/// A date field of file 0x17 that may be empty: `00000000` or `FFFFFFFF` (as issuers leave
/// an unused field) is `None`, the card saying there is no such date.
pub fn parse_optional_bcd_date(b: [u8; 4]) -> Result<Option<Ymd>, CardError> {
    if b == [0; 4] || b == [0xFF; 4] {
        return Ok(None);
    }
    parse_bcd_date(b).map(Some).ok_or(CardError::Field(
        "concession or annual review date is not a BCD date",
    ))
}

/// The dates a concession holds to, as the card gives them (both inclusive).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConcessionDates {
    /// The concession's own end date; `None`: it does not end.
    pub concession_until: Option<Ymd>,
    /// The annual review (年审) date; `None`: no review is due.
    pub review_until: Option<Ymd>,
}

impl Management {
    /// Bytes 11–18 parsed: a date that is neither BCD YYYYMMDD nor empty is a typed error.
    pub fn concession_dates(&self) -> Result<ConcessionDates, CardError> {
        Ok(ConcessionDates {
            concession_until: parse_optional_bcd_date(self.concession_until_bcd)?,
            review_until: parse_optional_bcd_date(self.review_until_bcd)?,
        })
    }
}

/// The last boarding written on the card.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Boarding {
    pub route: u16,
    pub terminal_no: [u8; 6],
    pub at_unix_s: u32,
    pub fare_fen: Fen,
    pub category: u8,
    /// Transfers in a row up to this boarding (byte 20; 0 on records written before it was).
    pub transfers: u8,
}

/// INITIALIZE FOR CAPP PURCHASE, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitPurchase {
    pub balance_fen: BalanceFen,
    pub offline_counter: u16,
    pub overdraft_fen: u32,
    pub key_version: u8,
    pub alg_id: u8,
    pub card_random: [u8; 4],
}

/// TAC and MAC2 of a completed debit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebitProof {
    pub tac: [u8; 4],
    pub mac2: [u8; 4],
}

fn bcd_digit_pair(b: u8) -> Option<u32> {
    let (hi, lo) = (b >> 4, b & 0x0F);
    (hi < 10 && lo < 10).then(|| u32::from(hi) * 10 + u32::from(lo))
}

/// BCD YYYYMMDD with a plausible month and day.
pub fn parse_bcd_date(b: [u8; 4]) -> Option<Ymd> {
    let mut v = 0u32;
    for x in b {
        v = v * 100 + bcd_digit_pair(x)?;
    }
    let (m, d) = ((v / 100) % 100, v % 100);
    ((1..=12).contains(&m) && (1..=31).contains(&d) && v >= 1900_01_01).then_some(v)
}

pub fn encode_bcd_date(ymd: Ymd) -> [u8; 4] {
    let mut out = [0u8; 4];
    let mut v = ymd;
    for b in out.iter_mut().rev() {
        let pair = (v % 100) as u8;
        v /= 100;
        *b = ((pair / 10) << 4) | (pair % 10);
    }
    out
}

fn expect_ok(ins: u8, r: &Response) -> Result<(), CardError> {
    if r.sw == sw::OK {
        Ok(())
    } else {
        Err(CardError::Status { ins, sw: r.sw })
    }
}

fn expect_len(ins: u8, r: &Response, expected: usize) -> Result<(), CardError> {
    expect_ok(ins, r)?;
    if r.data.len() == expected {
        Ok(())
    } else {
        Err(CardError::Length {
            ins,
            expected,
            got: r.data.len(),
        })
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Bit 31 of the purse word: not part of the amount.
pub const PURSE_WORD_FLAG_BIT: u32 = 1 << 31;

/// The balance a purse word holds: bits 30..0 as a 31-bit two's-complement amount, bit 31
/// ignored (see the module doc). Total: every word is a balance within
/// [`crate::types::PURSE_BALANCE_FEN_MIN`]..=[`crate::types::PURSE_BALANCE_FEN_MAX`].
pub fn purse_balance_fen(word: [u8; 4]) -> BalanceFen {
    // Shift the 31-bit amount up to bit 31, then back down arithmetically: sign extension.
    ((u32::from_be_bytes(word) << 1) as i32) >> 1
}

/// The purse word for `balance_fen` with bit 31 as `flag` (for simulated cards). `None` when
/// the balance is outside the purse's range.
pub fn encode_purse_word(balance_fen: i64, flag: bool) -> Option<[u8; 4]> {
    if !is_purse_balance(balance_fen) {
        return None;
    }
    let amount = (balance_fen as i32 as u32) & !PURSE_WORD_FLAG_BIT;
    let word = if flag {
        amount | PURSE_WORD_FLAG_BIT
    } else {
        amount
    };
    Some(word.to_be_bytes())
}

/// Whether a balance covers a fare (compared wide: no wrap for any balance or fare).
pub fn covers(balance_fen: BalanceFen, fare_fen: Fen) -> bool {
    i64::from(balance_fen) >= i64::from(fare_fen)
}

/// The balance left after debiting `fare_fen` from `balance_fen`, when it is one a purse can
/// hold; `None` otherwise (the card's value does not fit: the tap is `unreadable`).
pub fn balance_after(balance_fen: BalanceFen, fare_fen: Fen) -> Option<BalanceFen> {
    let after = i64::from(balance_fen) - i64::from(fare_fen);
    is_purse_balance(after).then_some(after as BalanceFen)
}

/// Parse file 0x15.
pub fn parse_public(r: &Response) -> Result<PublicInfo, CardError> {
    expect_len(0xB0, r, PUBLIC_FILE_BYTES)?;
    let d = &r.data;
    let mut serial = [0u8; 10];
    serial.copy_from_slice(&d[10..20]);
    let card_no =
        CardNo::from_bcd(serial).map_err(|_| CardError::Field("card number is not BCD"))?;
    let date = |at: usize| parse_bcd_date([d[at], d[at + 1], d[at + 2], d[at + 3]]);
    let valid_from = date(20).ok_or(CardError::Field("start date"))?;
    let valid_until = date(24).ok_or(CardError::Field("expiry date"))?;
    let mut issuer = [0u8; 8];
    issuer.copy_from_slice(&d[..8]);
    Ok(PublicInfo {
        issuer,
        app_type: d[8],
        enable_flag: d[9],
        card_no,
        valid_from,
        valid_until,
    })
}

/// Card type codes in file 0x16 byte 0, as this operator issues them.
pub fn card_type_category(code: u8) -> Option<RiderCategory> {
    match code {
        0x01 => Some(RiderCategory::Adult),
        0x02 => Some(RiderCategory::Student),
        0x03 => Some(RiderCategory::Senior),
        0x04 => Some(RiderCategory::Disabled),
        0x05 => Some(RiderCategory::Veteran),
        _ => None,
    }
}

pub fn category_card_type(c: RiderCategory) -> u8 {
    c as u8 + 1
}

/// Parse file 0x16 down to the rider category.
pub fn parse_holder(r: &Response) -> Result<RiderCategory, CardError> {
    expect_len(0xB0, r, HOLDER_FILE_BYTES)?;
    card_type_category(r.data[0]).ok_or(CardError::Field("unknown card type"))
}

/// Parse file 0x17: a city code that is not BCD is a typed error.
pub fn parse_management(r: &Response) -> Result<Management, CardError> {
    expect_len(0xB0, r, MANAGEMENT_FILE_BYTES)?;
    let d = &r.data;
    let issuer_city =
        CityCode::from_bcd([d[6], d[7]]).ok_or(CardError::Field("issuing city code is not BCD"))?;
    Ok(Management {
        issuer_city,
        interop_kind: u16::from_be_bytes([d[8], d[9]]),
        concession_until_bcd: [d[11], d[12], d[13], d[14]],
        review_until_bcd: [d[15], d[16], d[17], d[18]],
    })
}

/// Parse the bus compound record; `6A 83` (no record yet) is `None`.
pub fn parse_boarding(r: &Response) -> Result<Option<Boarding>, CardError> {
    if r.sw == sw::RECORD_NOT_FOUND {
        return Ok(None);
    }
    expect_len(0xB2, r, COMPOUND_RECORD_BYTES)?;
    let d = &r.data;
    if d[0] != BUS_RECORD_ID {
        return Err(CardError::Field("compound record id"));
    }
    let at_unix_s = be_u32(&d[11..15]);
    let mut terminal_no = [0u8; 6];
    terminal_no.copy_from_slice(&d[5..11]);
    Ok(Some(Boarding {
        route: u16::from_be_bytes([d[3], d[4]]),
        terminal_no,
        at_unix_s,
        fare_fen: be_u32(&d[15..19]),
        category: d[19],
        transfers: d[20],
    }))
}

pub fn encode_boarding(b: &Boarding) -> [u8; COMPOUND_RECORD_BYTES] {
    let mut d = [0u8; COMPOUND_RECORD_BYTES];
    d[0] = BUS_RECORD_ID;
    d[1] = (COMPOUND_RECORD_BYTES - 2) as u8;
    d[3..5].copy_from_slice(&b.route.to_be_bytes());
    d[5..11].copy_from_slice(&b.terminal_no);
    d[11..15].copy_from_slice(&b.at_unix_s.to_be_bytes());
    d[15..19].copy_from_slice(&b.fare_fen.to_be_bytes());
    d[19] = b.category;
    d[20] = b.transfers;
    d
}

/// GET BALANCE: the purse word, read as the module doc says.
pub fn parse_balance(r: &Response) -> Result<BalanceFen, CardError> {
    expect_len(0x5C, r, 4)?;
    let d = &r.data;
    Ok(purse_balance_fen([d[0], d[1], d[2], d[3]]))
}

pub fn parse_init_purchase(r: &Response) -> Result<InitPurchase, CardError> {
    expect_len(0x50, r, INIT_PURCHASE_BYTES)?;
    let d = &r.data;
    Ok(InitPurchase {
        balance_fen: purse_balance_fen([d[0], d[1], d[2], d[3]]),
        offline_counter: u16::from_be_bytes([d[4], d[5]]),
        overdraft_fen: u32::from_be_bytes([0, d[6], d[7], d[8]]),
        key_version: d[9],
        alg_id: d[10],
        card_random: [d[11], d[12], d[13], d[14]],
    })
}

pub fn parse_debit(r: &Response) -> Result<DebitProof, CardError> {
    expect_len(0x54, r, 8)?;
    let d = &r.data;
    Ok(DebitProof {
        tac: [d[0], d[1], d[2], d[3]],
        mac2: [d[4], d[5], d[6], d[7]],
    })
}

/// GET TRANSACTION PROOF: `94 06` (no such transaction) is `None`.
pub fn parse_proof(r: &Response) -> Result<Option<DebitProof>, CardError> {
    if r.sw == sw::NO_SUCH_TRANSACTION {
        return Ok(None);
    }
    expect_len(0x5A, r, 8)?;
    let d = &r.data;
    Ok(Some(DebitProof {
        mac2: [d[0], d[1], d[2], d[3]],
        tac: [d[4], d[5], d[6], d[7]],
    }))
}

/// Whether a status word at SELECT means the application is blocked.
pub fn is_blocked_status(sw_: u16) -> bool {
    sw_ == sw::FUNCTION_NOT_SUPPORTED || sw_ == sw::APP_PERMANENTLY_BLOCKED
}

/// The validator's side of the dialogue with one card. Holds the response buffer so that no
/// command allocates.
pub struct CardSession<'c, C: CardChannel + ?Sized> {
    pub channel: &'c mut C,
    pub resp: Response,
}

/// The answer to SELECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selected {
    Ok,
    Blocked,
    NoApplication,
}

impl<'c, C: CardChannel + ?Sized> CardSession<'c, C> {
    pub fn new(channel: &'c mut C) -> Self {
        CardSession {
            channel,
            resp: Response::default(),
        }
    }

    /// One command through [`exchange`] (which fetches `61xx` answers and resends on `6Cxx`).
    fn send(&mut self, cmd: &[u8]) -> Result<&Response, CardError> {
        exchange(&mut *self.channel, cmd, &mut self.resp)?;
        Ok(&self.resp)
    }

    pub fn select(&mut self) -> Result<Selected, CardError> {
        let r = self.send(&command(0x00, 0xA4, 0x04, 0x00, &AID, None))?;
        Ok(match r.sw {
            sw::OK => Selected::Ok,
            s if is_blocked_status(s) => Selected::Blocked,
            sw::FILE_NOT_FOUND => Selected::NoApplication,
            s => return Err(CardError::Status { ins: 0xA4, sw: s }),
        })
    }

    pub fn read_public(&mut self) -> Result<PublicInfo, CardError> {
        let r = self.send(&command(
            0x00,
            0xB0,
            0x95,
            0x00,
            &[],
            Some(PUBLIC_FILE_BYTES as u8),
        ))?;
        parse_public(r)
    }

    pub fn read_holder(&mut self) -> Result<RiderCategory, CardError> {
        let r = self.send(&command(
            0x00,
            0xB0,
            0x96,
            0x00,
            &[],
            Some(HOLDER_FILE_BYTES as u8),
        ))?;
        parse_holder(r)
    }

    pub fn read_management(&mut self) -> Result<Management, CardError> {
        let r = self.send(&command(
            0x00,
            0xB0,
            0x97,
            0x00,
            &[],
            Some(MANAGEMENT_FILE_BYTES as u8),
        ))?;
        parse_management(r)
    }

    pub fn read_boarding(&mut self) -> Result<Option<Boarding>, CardError> {
        let p2 = (SFI_COMPOUND << 3) | 0x04;
        let r = self.send(&command(
            0x00,
            0xB2,
            BUS_RECORD_ID,
            p2,
            &[],
            Some(COMPOUND_RECORD_BYTES as u8),
        ))?;
        parse_boarding(r)
    }

    pub fn get_balance(&mut self) -> Result<BalanceFen, CardError> {
        let r = self.send(&command(0x80, 0x5C, 0x00, 0x02, &[], Some(4)))?;
        parse_balance(r)
    }

    pub fn init_purchase(
        &mut self,
        key_index: u8,
        amount_fen: Fen,
        terminal_no: [u8; 6],
    ) -> Result<InitPurchase, CardError> {
        let mut data = [0u8; 11];
        data[0] = key_index;
        data[1..5].copy_from_slice(&amount_fen.to_be_bytes());
        data[5..].copy_from_slice(&terminal_no);
        let r = self.send(&command(
            0x80,
            0x50,
            0x03,
            0x02,
            &data,
            Some(INIT_PURCHASE_BYTES as u8),
        ))?;
        parse_init_purchase(r)
    }

    pub fn update_boarding(&mut self, b: &Boarding) -> Result<(), CardError> {
        let p2 = SFI_COMPOUND << 3;
        let r = self.send(&command(
            0x80,
            0xDC,
            BUS_RECORD_ID,
            p2,
            &encode_boarding(b),
            None,
        ))?;
        expect_ok(0xDC, r)
    }

    pub fn debit(
        &mut self,
        terminal_seq: u32,
        datetime: [u8; 7],
        mac1: [u8; 4],
    ) -> Result<DebitProof, CardError> {
        let mut data = [0u8; 15];
        data[..4].copy_from_slice(&terminal_seq.to_be_bytes());
        data[4..11].copy_from_slice(&datetime);
        data[11..].copy_from_slice(&mac1);
        let r = self.send(&command(0x80, 0x54, 0x01, 0x00, &data, Some(8)))?;
        parse_debit(r)
    }

    pub fn transaction_proof(
        &mut self,
        offline_counter: u16,
    ) -> Result<Option<DebitProof>, CardError> {
        let r = self.send(&command(
            0x80,
            0x5A,
            0x00,
            TX_TYPE_CAPP,
            &offline_counter.to_be_bytes(),
            Some(8),
        ))?;
        parse_proof(r)
    }

    pub fn get_challenge(&mut self) -> Result<[u8; 4], CardError> {
        let r = self.send(&command(0x00, 0x84, 0x00, 0x00, &[], Some(4)))?;
        expect_len(0x84, r, 4)?;
        Ok([r.data[0], r.data[1], r.data[2], r.data[3]])
    }

    /// APPLICATION BLOCK, permanent. `mac` is computed by the PSAM over [`BLOCK_HEADER`].
    pub fn block_permanently(&mut self, mac: [u8; 4]) -> Result<(), CardError> {
        let r = self.send(&command(0x84, 0x1E, 0x00, 0x01, &mac, None))?;
        expect_ok(0x1E, r)
    }
}

/// The bytes the APPLICATION BLOCK MAC covers: the command header and Lc.
pub const BLOCK_HEADER: [u8; 5] = [0x84, 0x1E, 0x00, 0x01, 0x04];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn resp(data: &[u8], sw_: u16) -> Response {
        let mut r = Response::default();
        r.data.extend_from_slice(data).unwrap();
        r.sw = sw_;
        r
    }

    #[test]
    fn bcd_dates_are_strict() {
        assert_eq!(parse_bcd_date([0x20, 0x24, 0x01, 0x01]), Some(2024_01_01));
        assert_eq!(parse_bcd_date([0, 0, 0, 0]), None);
        assert_eq!(parse_bcd_date([0xFF; 4]), None);
        assert_eq!(parse_bcd_date([0x20, 0x24, 0x13, 0x01]), None);
        assert_eq!(encode_bcd_date(2034_12_31), [0x20, 0x34, 0x12, 0x31]);
    }

    #[test]
    fn public_file_with_bad_expiry_is_a_typed_error() {
        let mut d = [0u8; 30];
        d[10] = 0x37;
        d[20..24].copy_from_slice(&[0x20, 0x24, 0x01, 0x01]);
        d[24..28].copy_from_slice(&[0xFF; 4]);
        assert_eq!(
            parse_public(&resp(&d, sw::OK)),
            Err(CardError::Field("expiry date"))
        );
        assert!(matches!(
            parse_public(&resp(&d[..29], sw::OK)),
            Err(CardError::Length { .. })
        ));
        assert!(matches!(
            parse_public(&resp(&d, 0x6A82)),
            Err(CardError::Status { .. })
        ));
    }

    #[test]
    fn management_file_gives_the_issuing_city_and_rejects_a_non_bcd_city() {
        let mut d = [0u8; MANAGEMENT_FILE_BYTES];
        d[6..8].copy_from_slice(&[0x10, 0x00]);
        d[8..10].copy_from_slice(&INTEROP_KIND_TUNION.to_be_bytes());
        assert_eq!(
            parse_management(&resp(&d, sw::OK)),
            Ok(Management {
                issuer_city: CityCode(1000),
                interop_kind: INTEROP_KIND_TUNION,
                concession_until_bcd: [0; 4],
                review_until_bcd: [0; 4],
            })
        );
        d[7] = 0x0A;
        assert_eq!(
            parse_management(&resp(&d, sw::OK)),
            Err(CardError::Field("issuing city code is not BCD"))
        );
        assert!(matches!(
            parse_management(&resp(&d[..59], sw::OK)),
            Err(CardError::Length { .. })
        ));
        assert_eq!(CityCode(4530).to_bcd(), [0x45, 0x30]);
        assert_eq!("0531".parse::<CityCode>().unwrap().to_string(), "0531");
        assert!("453".parse::<CityCode>().is_err() && "45a0".parse::<CityCode>().is_err());
    }

    #[test]
    fn concession_dates_are_read_from_bytes_11_to_18_and_empty_words_mean_none() {
        let mut d = [0u8; MANAGEMENT_FILE_BYTES];
        d[6..8].copy_from_slice(&[0x45, 0x30]);
        let m = parse_management(&resp(&d, sw::OK)).unwrap();
        assert_eq!(m.concession_dates(), Ok(ConcessionDates::default()));
        d[11..15].copy_from_slice(&[0x20, 0x27, 0x06, 0x30]);
        d[15..19].copy_from_slice(&[0xFF; 4]);
        let m = parse_management(&resp(&d, sw::OK)).unwrap();
        assert_eq!(
            m.concession_dates(),
            Ok(ConcessionDates {
                concession_until: Some(2027_06_30),
                review_until: None
            })
        );
        d[15..19].copy_from_slice(&[0x20, 0x26, 0x13, 0x01]);
        let m = parse_management(&resp(&d, sw::OK)).unwrap();
        assert!(matches!(m.concession_dates(), Err(CardError::Field(_))));
    }

    #[test]
    fn purse_word_reads_bits_30_to_0_as_twos_complement() {
        for (word, fen) in [
            (0x0000_1388u32, 5000),
            (0x8000_1388, 5000),
            (0x7FFF_FFFF, -1),
            (0xFFFF_FFFF, -1),
            (0x4000_0000, -1_073_741_824),
            (0xC000_0000, -1_073_741_824),
            (0x3FFF_FFFF, 1_073_741_823),
            (0x0000_0000, 0),
            (0x8000_0000, 0),
        ] {
            assert_eq!(purse_balance_fen(word.to_be_bytes()), fen, "{word:08X}");
        }
        assert_eq!(
            encode_purse_word(-1, false),
            Some(0x7FFF_FFFFu32.to_be_bytes())
        );
        assert_eq!(encode_purse_word(-1, true), Some([0xFF; 4]));
        assert_eq!(encode_purse_word(1 << 30, false), None);
        assert_eq!(encode_purse_word(-(1 << 30) - 1, false), None);
        assert_eq!(balance_after(-1_073_741_824, 1), None);
        assert!(!covers(-1, 0));
        assert!(covers(0, 0));
    }

    proptest! {
        #[test]
        fn every_purse_word_is_a_balance_and_encodes_back(word in any::<u32>()) {
            let fen = purse_balance_fen(word.to_be_bytes());
            prop_assert!(crate::types::is_purse_balance(i64::from(fen)));
            let flag = word & PURSE_WORD_FLAG_BIT != 0;
            prop_assert_eq!(encode_purse_word(i64::from(fen), flag), Some(word.to_be_bytes()));
        }

        #[test]
        fn parsers_never_panic_on_any_answer(data in proptest::collection::vec(any::<u8>(), 0..256), sw_ in any::<u16>()) {
            let r = resp(&data, sw_);
            let _ = parse_public(&r);
            let _ = parse_holder(&r);
            if let Ok(m) = parse_management(&r) {
                let _ = m.concession_dates();
            }
            let _ = parse_boarding(&r);
            let _ = parse_balance(&r);
            let _ = parse_init_purchase(&r);
            let _ = parse_debit(&r);
            let _ = parse_proof(&r);
        }

        #[test]
        fn boarding_record_round_trips(route in any::<u16>(), at in 1u32.., fare in any::<u32>(), cat in 0u8..5, transfers in any::<u8>()) {
            let b = Boarding { route, terminal_no: [1, 2, 3, 4, 5, 6], at_unix_s: at, fare_fen: fare, category: cat, transfers };
            let r = resp(&encode_boarding(&b), sw::OK);
            prop_assert_eq!(parse_boarding(&r), Ok(Some(b)));
        }
    }
}
