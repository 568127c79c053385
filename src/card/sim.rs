//! A simulated T-Union card and PSAM that answer the real APDUs byte for byte, with real key
//! diversification, session keys and MACs (see [`super::crypto`]). They are the model of a
//! real card for tests, the demo, replay and benchmarks: the engine reaches them only through
//! [`CardChannel`].
//!
//! The card keeps its state across taps (purse word, offline counter, compound record, block
//! flag, the proofs of its recent purchases) and can be told to leave the field at a point of
//! the dialogue ([`Removal`]). Keys come from [`TestKeys`]: test keys, never production ones.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::apdu::{
    parse_command, sw, CardChannel, ChannelError, ParsedCommand, Response, RESPONSE_DATA_BYTES_MAX,
};
use super::crypto::{self, Key16, PurchaseData};
use super::psam::Mac1Input;
use super::tunion::{
    balance_after, category_card_type, covers, encode_bcd_date, encode_purse_word, parse_bcd_date,
    purse_balance_fen, CityCode, AID, BLOCK_HEADER, BUS_RECORD_ID, COMPOUND_RECORD_BYTES,
    HOLDER_FILE_BYTES, INTEROP_KIND_CITY_ONLY, INTEROP_KIND_TUNION, MANAGEMENT_FILE_BYTES,
    PUBLIC_FILE_BYTES, PURSE_WORD_FLAG_BIT, SFI_COMPOUND, TX_TYPE_CAPP,
};
use crate::types::{BalanceFen, CardNo, Fen, RiderCategory};

/// How many recent purchases a card keeps proofs for (GET TRANSACTION PROOF).
pub const CARD_PROOFS_MAX: usize = 4;
/// Issuer identifier of simulated Dezhou cards (city code 4530 in bytes 2–3).
pub const SIM_ISSUER: [u8; 8] = [0x37, 0x14, 0x45, 0x30, 0x00, 0x00, 0x00, 0x01];
/// Issuing city of a card whose CARDS.json entry names none: Dezhou.
pub const SIM_HOME_CITY: CityCode = CityCode(4530);
const KEY_VERSION: u8 = 0x01;
const ALG_ID_3DES: u8 = 0x00;

/// The issuer's master keys that cards and PSAMs of one simulated scheme share.
#[derive(Clone, Copy, Debug)]
pub struct TestKeys {
    /// Purchase master key (MPK): in the PSAM; each card holds its diversified DPK.
    pub purchase_master: Key16,
    /// TAC master key: only the card (and clearing) hold the diversified DTK.
    pub tac_master: Key16,
    /// Application maintenance master key (MAMK): in the PSAM, diversified DAMK on the card.
    pub maintenance_master: Key16,
}

impl Default for TestKeys {
    fn default() -> Self {
        TestKeys {
            purchase_master: *b"DZ-TEST-PURCHASE",
            tac_master: *b"DZ-TEST-TAC-KEY!",
            maintenance_master: *b"DZ-TEST-MAINTAIN",
        }
    }
}

/// A card as replay.md's CARDS.json describes it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CardSpec {
    pub card_no: CardNo,
    pub card_type: RiderCategory,
    pub enabled: bool,
    /// YYYY-MM-DD
    pub valid_from: String,
    /// YYYY-MM-DD
    pub valid_until: String,
    /// The purse's amount, −1,073,741,824 to 1,073,741,823 (negative: overdrawn); outside that
    /// range the card is refused by [`SimCard::new`] (invalid input).
    pub balance_fen: i64,
    /// The exact 4 bytes the card answers to GET BALANCE (and in INITIALIZE's answer),
    /// instead of `balance_fen`'s encoding: 8 hex digits in CARDS.json.
    #[serde(default)]
    pub purse_word: Option<PurseWord>,
    /// Issuing city code written in file 0x17 (and 0x15 bytes 2–3): 4 decimal digits in
    /// CARDS.json; absent means Dezhou, [`SIM_HOME_CITY`].
    #[serde(default)]
    pub issuer_city: Option<CityCode>,
    /// Interop kind written in file 0x17: `t_union` (the default) or `city_only`.
    #[serde(default)]
    pub interop: Option<InteropSpec>,
    /// YYYY-MM-DD: the concession's own end date, written in file 0x17 bytes 11–14; absent:
    /// the concession does not end (bytes `00000000`).
    #[serde(default)]
    pub concession_until: Option<String>,
    /// YYYY-MM-DD: the annual review (年审) date, written in file 0x17 bytes 15–18; absent:
    /// no review is due (bytes `00000000`).
    #[serde(default)]
    pub annual_review_until: Option<String>,
}

/// First day a card made by [`CardSpec::new`] is valid (YYYY-MM-DD).
pub const SIM_CARD_VALID_FROM: &str = "2024-01-01";
/// Last day a card made by [`CardSpec::new`] is valid (YYYY-MM-DD).
pub const SIM_CARD_VALID_UNTIL: &str = "2034-12-31";

impl CardSpec {
    /// An enabled card of `card_type` holding `balance_fen`, valid from
    /// [`SIM_CARD_VALID_FROM`] to [`SIM_CARD_VALID_UNTIL`], issued in Dezhou as a T-Union
    /// card, its purse word encoded from the balance, with no concession end or annual review
    /// date. Other cards: `CardSpec { enabled: false, ..CardSpec::new(..) }`, so that a field
    /// added later is given once here and not at every card written in code.
    pub fn new(card_no: CardNo, card_type: RiderCategory, balance_fen: i64) -> CardSpec {
        CardSpec {
            card_no,
            card_type,
            enabled: true,
            valid_from: SIM_CARD_VALID_FROM.into(),
            valid_until: SIM_CARD_VALID_UNTIL.into(),
            balance_fen,
            purse_word: None,
            issuer_city: None,
            interop: None,
            concession_until: None,
            annual_review_until: None,
        }
    }
}

/// The interop kind a simulated card carries in file 0x17 bytes 8–9.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InteropSpec {
    /// `00 01`: a T-Union interop card.
    #[default]
    TUnion,
    /// `00 00`: a card for its own city only.
    CityOnly,
}

impl InteropSpec {
    pub fn kind(self) -> u16 {
        match self {
            InteropSpec::TUnion => INTEROP_KIND_TUNION,
            InteropSpec::CityOnly => INTEROP_KIND_CITY_ONLY,
        }
    }
}

/// File 0x17 of a simulated card: country `86` (BCD, right-aligned), Shandong `37`, the city,
/// the interop kind and the card category.
pub fn management_file(
    city: CityCode,
    interop: InteropSpec,
    category: RiderCategory,
) -> [u8; MANAGEMENT_FILE_BYTES] {
    let mut f = [0u8; MANAGEMENT_FILE_BYTES];
    f[3] = 0x86;
    f[5] = 0x37;
    f[6..8].copy_from_slice(&city.to_bcd());
    f[8..10].copy_from_slice(&interop.kind().to_be_bytes());
    f[10] = category_card_type(category);
    f
}

/// A purse word as CARDS.json gives it: exactly 8 hex digits (`"FFFFFFFF"`, `"80001388"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PurseWord(pub [u8; 4]);

impl std::str::FromStr for PurseWord {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("purse_word must be 8 hex digits, not {s:?}");
        if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        u32::from_str_radix(s, 16)
            .map(|w| PurseWord(w.to_be_bytes()))
            .map_err(|_| bad())
    }
}

impl<'de> Deserialize<'de> for PurseWord {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where in the dialogue the card leaves the field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// Before the purse is debited: the DEBIT command never reaches it.
    BeforeDebit,
    /// The purse is debited but the answer (TAC, MAC2) never reaches the validator.
    AfterDebit,
}

#[derive(Clone, Copy, Debug)]
struct PendingPurchase {
    amount_fen: Fen,
    terminal_no: [u8; 6],
    card_random: [u8; 4],
    offline_counter: u16,
}

#[derive(Clone, Copy, Debug)]
struct Proof {
    offline_counter: u16,
    mac2: [u8; 4],
    tac: [u8; 4],
}

/// A simulated contactless card with the transport application.
#[derive(Clone, Debug)]
pub struct SimCard {
    card_no: CardNo,
    public_file: [u8; PUBLIC_FILE_BYTES],
    holder_file: [u8; HOLDER_FILE_BYTES],
    management_file: [u8; MANAGEMENT_FILE_BYTES],
    dpk: Key16,
    dtk: Key16,
    damk: Key16,
    /// The purse word exactly as the card answers it; the balance is read from it.
    purse_word: [u8; 4],
    offline_counter: u16,
    compound: Option<[u8; COMPOUND_RECORD_BYTES]>,
    compound_cache: Option<[u8; COMPOUND_RECORD_BYTES]>,
    blocked: bool,
    selected: bool,
    pending: Option<PendingPurchase>,
    challenge: Option<[u8; 4]>,
    proofs: heapless::Deque<Proof, CARD_PROOFS_MAX>,
    in_field: bool,
    removal: Option<Removal>,
    rng: ChaCha8Rng,
}

fn parse_iso_date(s: &str) -> Option<u32> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let digits: String = s.chars().filter(|c| *c != '-').collect();
    if digits.len() != 8 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl SimCard {
    /// A card from its description; `seed` drives its random numbers.
    pub fn new(spec: &CardSpec, keys: &TestKeys, seed: u64) -> Result<Self, String> {
        let from = parse_iso_date(&spec.valid_from)
            .ok_or_else(|| format!("bad valid_from {:?}", spec.valid_from))?;
        let until = parse_iso_date(&spec.valid_until)
            .ok_or_else(|| format!("bad valid_until {:?}", spec.valid_until))?;
        let from_balance = encode_purse_word(spec.balance_fen, false).ok_or_else(|| {
            format!(
                "card {}: balance_fen {} outside -1073741824..=1073741823",
                spec.card_no, spec.balance_fen
            )
        })?;
        let purse_word = spec.purse_word.map_or(from_balance, |w| w.0);
        let city = spec.issuer_city.unwrap_or(SIM_HOME_CITY);
        let mut public_file = [0u8; PUBLIC_FILE_BYTES];
        public_file[..8].copy_from_slice(&SIM_ISSUER);
        public_file[2..4].copy_from_slice(&city.to_bcd());
        public_file[8] = 0x02; // application type: transport purse
        public_file[9] = u8::from(spec.enabled);
        public_file[10..20].copy_from_slice(&spec.card_no.0);
        public_file[20..24].copy_from_slice(&encode_bcd_date(from));
        public_file[24..28].copy_from_slice(&encode_bcd_date(until));
        let mut holder_file = [0u8; HOLDER_FILE_BYTES];
        holder_file[0] = category_card_type(spec.card_type);
        let mut management =
            management_file(city, spec.interop.unwrap_or_default(), spec.card_type);
        for (at, name, date) in [
            (11, "concession_until", &spec.concession_until),
            (15, "annual_review_until", &spec.annual_review_until),
        ] {
            if let Some(d) = date {
                let ymd = parse_iso_date(d)
                    .and_then(|v| parse_bcd_date(encode_bcd_date(v)))
                    .ok_or_else(|| format!("bad {name} {d:?}"))?;
                management[at..at + 4].copy_from_slice(&encode_bcd_date(ymd));
            }
        }
        let serial = spec.card_no.serial_tail8();
        Ok(SimCard {
            card_no: spec.card_no,
            public_file,
            holder_file,
            management_file: management,
            dpk: crypto::diversify(&keys.purchase_master, serial),
            dtk: crypto::diversify(&keys.tac_master, serial),
            damk: crypto::diversify(&keys.maintenance_master, serial),
            purse_word,
            offline_counter: 0,
            compound: None,
            compound_cache: None,
            blocked: false,
            selected: false,
            pending: None,
            challenge: None,
            proofs: heapless::Deque::new(),
            in_field: true,
            removal: None,
            rng: ChaCha8Rng::seed_from_u64(seed ^ spec.card_no.as_u128() as u64),
        })
    }

    /// Overwrite the raw public file (for tests of malformed cards).
    pub fn set_public_file(&mut self, bytes: [u8; PUBLIC_FILE_BYTES]) {
        self.public_file = bytes;
    }

    /// Overwrite the raw management file 0x17 (for tests of malformed cards).
    pub fn set_management_file(&mut self, bytes: [u8; MANAGEMENT_FILE_BYTES]) {
        self.management_file = bytes;
    }

    pub fn card_no(&self) -> CardNo {
        self.card_no
    }

    /// The balance the purse word holds (read as [`purse_balance_fen`] reads it).
    pub fn balance_fen(&self) -> BalanceFen {
        purse_balance_fen(self.purse_word)
    }

    /// The purse word as the card answers GET BALANCE.
    pub fn purse_word(&self) -> [u8; 4] {
        self.purse_word
    }

    /// Set the purse word (tests: a purse that changed outside this validator).
    pub fn set_purse_word(&mut self, word: [u8; 4]) {
        self.purse_word = word;
    }

    pub fn offline_counter(&self) -> u16 {
        self.offline_counter
    }

    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// The card is presented to the reader: power-up resets the selection and any
    /// half-done purchase, as a real card's reset does.
    pub fn enter_field(&mut self, removal: Option<Removal>) {
        self.in_field = true;
        self.selected = false;
        self.pending = None;
        self.challenge = None;
        self.compound_cache = None;
        self.removal = removal;
    }

    /// A reset (power on, warm reset) while the card stays in the field, as a reader does at
    /// connect: the selection and any half-done purchase are lost; a planned [`Removal`] stays.
    pub fn reset(&mut self) {
        self.selected = false;
        self.pending = None;
        self.challenge = None;
        self.compound_cache = None;
    }

    /// Whether the card is still in the field (false once a [`Removal`] happened).
    pub fn in_field(&self) -> bool {
        self.in_field
    }

    fn leave_field(&mut self) -> ChannelError {
        self.in_field = false;
        ChannelError::Removed
    }

    fn respond(&mut self, cmd: &[u8], r: &mut Response) -> Result<(), ChannelError> {
        let Some(c) = parse_command(cmd) else {
            r.status(sw::WRONG_LENGTH);
            return Ok(());
        };
        if c.ins == 0xA4 {
            self.select(c.p1, c.data, r);
            return Ok(());
        }
        if !self.selected {
            r.status(sw::CONDITIONS_NOT_SATISFIED);
            return Ok(());
        }
        match (c.cla, c.ins) {
            (0x00, 0xB0) => self.read_binary(c.p1, r),
            (0x00, 0xB2) => self.read_record(c.p1, c.p2, r),
            (0x80, 0x5C) => r.set(&self.purse_word, sw::OK),
            (0x80, 0x50) => self.init_purchase(c.p1, c.p2, c.data, r),
            (0x80, 0xDC) => self.update_cache(c.p1, c.p2, c.data, r),
            (0x80, 0x54) => {
                if self.removal == Some(Removal::BeforeDebit) {
                    return Err(self.leave_field());
                }
                self.debit(c.data, r);
                if self.removal == Some(Removal::AfterDebit) {
                    return Err(self.leave_field());
                }
            }
            (0x80, 0x5A) => self.proof(c.p2, c.data, r),
            (0x00, 0x84) => {
                let mut ch = [0u8; 4];
                self.rng.fill_bytes(&mut ch);
                self.challenge = Some(ch);
                r.set(&ch, sw::OK);
            }
            (0x84, 0x1E) => self.block(c.p2, c.data, r),
            (0x00 | 0x80 | 0x84, _) => r.status(sw::INS_NOT_SUPPORTED),
            _ => r.status(sw::CLA_NOT_SUPPORTED),
        }
        Ok(())
    }

    fn select(&mut self, p1: u8, data: &[u8], r: &mut Response) {
        self.selected = false;
        if p1 != 0x04 || data != AID {
            r.status(sw::FILE_NOT_FOUND);
        } else if self.blocked {
            r.status(sw::APP_PERMANENTLY_BLOCKED);
        } else {
            self.selected = true;
            // FCI: 6F (84 AID) — kept minimal.
            let mut fci = [0u8; 12];
            fci[..4].copy_from_slice(&[0x6F, 0x0A, 0x84, 0x08]);
            fci[4..].copy_from_slice(&AID);
            r.set(&fci, sw::OK);
        }
    }

    fn read_binary(&mut self, p1: u8, r: &mut Response) {
        match p1 {
            0x95 => r.set(&self.public_file, sw::OK),
            0x96 => r.set(&self.holder_file, sw::OK),
            0x97 => r.set(&self.management_file, sw::OK),
            _ => r.status(sw::FILE_NOT_FOUND),
        }
    }

    fn read_record(&mut self, p1: u8, p2: u8, r: &mut Response) {
        if p2 != (SFI_COMPOUND << 3) | 0x04 || p1 != BUS_RECORD_ID {
            r.status(sw::RECORD_NOT_FOUND);
            return;
        }
        match &self.compound {
            Some(rec) => r.set(rec, sw::OK),
            None => r.status(sw::RECORD_NOT_FOUND),
        }
    }

    fn init_purchase(&mut self, p1: u8, p2: u8, data: &[u8], r: &mut Response) {
        if (p1, p2) != (0x03, 0x02) {
            r.status(sw::WRONG_P1P2);
            return;
        }
        if data.len() != 11 {
            r.status(sw::WRONG_LENGTH);
            return;
        }
        if data[0] != KEY_VERSION {
            r.status(sw::KEY_INDEX_UNSUPPORTED);
            return;
        }
        let amount_fen = u32::from_be_bytes([data[1], data[2], data[3], data[4]]);
        if !covers(self.balance_fen(), amount_fen) {
            r.status(sw::INSUFFICIENT_BALANCE);
            return;
        }
        if self.offline_counter == u16::MAX {
            r.status(sw::COUNTER_LIMIT);
            return;
        }
        let mut card_random = [0u8; 4];
        self.rng.fill_bytes(&mut card_random);
        let terminal_no = std::array::from_fn(|i| data[5 + i]);
        self.pending = Some(PendingPurchase {
            amount_fen,
            terminal_no,
            card_random,
            offline_counter: self.offline_counter,
        });
        let mut out = [0u8; 15];
        out[..4].copy_from_slice(&self.purse_word);
        out[4..6].copy_from_slice(&self.offline_counter.to_be_bytes());
        out[9] = KEY_VERSION;
        out[10] = ALG_ID_3DES;
        out[11..].copy_from_slice(&card_random);
        r.set(&out, sw::OK);
    }

    fn update_cache(&mut self, p1: u8, p2: u8, data: &[u8], r: &mut Response) {
        if self.pending.is_none() {
            r.status(sw::CONDITIONS_NOT_SATISFIED);
        } else if p1 != BUS_RECORD_ID || p2 != SFI_COMPOUND << 3 {
            r.status(sw::WRONG_P1P2);
        } else if data.len() != COMPOUND_RECORD_BYTES || data[0] != BUS_RECORD_ID {
            r.status(sw::WRONG_LENGTH);
        } else {
            let mut rec = [0u8; COMPOUND_RECORD_BYTES];
            rec.copy_from_slice(data);
            self.compound_cache = Some(rec);
            r.status(sw::OK);
        }
    }

    fn debit(&mut self, data: &[u8], r: &mut Response) {
        let Some(p) = self.pending.take() else {
            r.status(sw::CONDITIONS_NOT_SATISFIED);
            return;
        };
        if data.len() != 15 {
            r.status(sw::WRONG_LENGTH);
            return;
        }
        let terminal_seq = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
        let purchase = PurchaseData {
            amount_fen: p.amount_fen,
            tx_type: TX_TYPE_CAPP,
            terminal_no: p.terminal_no,
            terminal_seq,
            datetime: std::array::from_fn(|i| data[4 + i]),
        };
        let sespk =
            crypto::purchase_session_key(&self.dpk, p.card_random, p.offline_counter, terminal_seq);
        if crypto::mac1(&sespk, &purchase) != data[11..15] {
            r.status(sw::MAC_INVALID);
            return;
        }
        // Bit 31 is not part of the amount: the card keeps it as it was.
        let flag = u32::from_be_bytes(self.purse_word) & PURSE_WORD_FLAG_BIT != 0;
        let word = balance_after(self.balance_fen(), p.amount_fen)
            .and_then(|left| encode_purse_word(i64::from(left), flag));
        let Some(word) = word else {
            r.status(sw::INSUFFICIENT_BALANCE);
            return;
        };
        // The debit, the counter and the compound record change together (one atomic commit).
        self.purse_word = word;
        self.offline_counter += 1;
        if let Some(rec) = self.compound_cache.take() {
            self.compound = Some(rec);
        }
        let proof = Proof {
            offline_counter: p.offline_counter,
            mac2: crypto::mac2(&sespk, p.amount_fen),
            tac: crypto::tac(&self.dtk, &purchase),
        };
        if self.proofs.is_full() {
            self.proofs.pop_front();
        }
        let _ = self.proofs.push_back(proof);
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&proof.tac);
        out[4..].copy_from_slice(&proof.mac2);
        r.set(&out, sw::OK);
    }

    fn proof(&mut self, p2: u8, data: &[u8], r: &mut Response) {
        if p2 != TX_TYPE_CAPP || data.len() != 2 {
            r.status(sw::WRONG_P1P2);
            return;
        }
        let counter = u16::from_be_bytes([data[0], data[1]]);
        match self.proofs.iter().find(|p| p.offline_counter == counter) {
            Some(p) => {
                let mut out = [0u8; 8];
                out[..4].copy_from_slice(&p.mac2);
                out[4..].copy_from_slice(&p.tac);
                r.set(&out, sw::OK);
            }
            None => r.status(sw::NO_SUCH_TRANSACTION),
        }
    }

    fn block(&mut self, p2: u8, data: &[u8], r: &mut Response) {
        let Some(challenge) = self.challenge.take() else {
            r.status(sw::CONDITIONS_NOT_SATISFIED);
            return;
        };
        let mut iv = [0u8; 8];
        iv[..4].copy_from_slice(&challenge);
        if p2 != 0x01 || data.len() != 4 {
            r.status(sw::WRONG_P1P2);
        } else if crypto::retail_mac(&self.damk, iv, &[&BLOCK_HEADER]) != data {
            r.status(sw::SM_DATA_INCORRECT);
        } else {
            self.blocked = true;
            self.selected = false;
            r.status(sw::OK);
        }
    }
}

/// What a simulated card keeps in its memory between presentations, as saved to a file
/// (`sim-card --state`): its files, purse, counter, last boarding, lock, the proofs of its
/// recent purchases and where its random numbers stand. Byte fields are hex. Its keys are not
/// saved: they are diversified again from [`TestKeys`] and the card number.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SimCardState {
    pub card_no: CardNo,
    pub public_file: String,
    pub holder_file: String,
    /// File 0x17; absent in states saved before it was simulated: a Dezhou T-Union card's.
    #[serde(default)]
    pub management_file: Option<String>,
    /// The purse word exactly as the card answers GET BALANCE (8 hex digits).
    pub purse_word: String,
    pub offline_counter: u16,
    /// The bus compound record, or null before the first boarding.
    pub compound: Option<String>,
    pub blocked: bool,
    pub proofs: Vec<SimProofState>,
    /// ChaCha8 seed (32 bytes) and word position (decimal, a u128) of the card's randoms.
    pub rng_seed: String,
    pub rng_word_pos: String,
}

/// One proof a card keeps for GET TRANSACTION PROOF.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SimProofState {
    pub offline_counter: u16,
    pub mac2: String,
    pub tac: String,
}

fn unhex<const N: usize>(what: &str, s: &str) -> Result<[u8; N], String> {
    let v = hex::decode(s).map_err(|e| format!("{what}: {e}"))?;
    v.try_into()
        .map_err(|v: Vec<u8>| format!("{what}: {} bytes, expected {N}", v.len()))
}

impl SimCard {
    /// The card's memory, to be saved.
    pub fn state(&self) -> SimCardState {
        SimCardState {
            card_no: self.card_no,
            public_file: hex::encode(self.public_file),
            holder_file: hex::encode(self.holder_file),
            management_file: Some(hex::encode(self.management_file)),
            purse_word: hex::encode(self.purse_word),
            offline_counter: self.offline_counter,
            compound: self.compound.map(hex::encode),
            blocked: self.blocked,
            proofs: self
                .proofs
                .iter()
                .map(|p| SimProofState {
                    offline_counter: p.offline_counter,
                    mac2: hex::encode(p.mac2),
                    tac: hex::encode(p.tac),
                })
                .collect(),
            rng_seed: hex::encode(self.rng.get_seed()),
            rng_word_pos: self.rng.get_word_pos().to_string(),
        }
    }

    /// A card as it was saved; it enters the field fresh (no selection, no half-done purchase).
    pub fn from_state(state: &SimCardState, keys: &TestKeys) -> Result<Self, String> {
        let public_file = unhex::<PUBLIC_FILE_BYTES>("public_file", &state.public_file)?;
        if public_file[10..20] != state.card_no.0 {
            return Err("public_file does not hold card_no".into());
        }
        let mut proofs = heapless::Deque::new();
        for p in &state.proofs {
            proofs
                .push_back(Proof {
                    offline_counter: p.offline_counter,
                    mac2: unhex("mac2", &p.mac2)?,
                    tac: unhex("tac", &p.tac)?,
                })
                .map_err(|_| format!("more than {CARD_PROOFS_MAX} proofs"))?;
        }
        let word_pos: u128 = state
            .rng_word_pos
            .parse()
            .map_err(|_| "rng_word_pos: not a decimal number".to_string())?;
        let mut rng = ChaCha8Rng::from_seed(unhex("rng_seed", &state.rng_seed)?);
        rng.set_word_pos(word_pos);
        let serial = state.card_no.serial_tail8();
        let holder_file: [u8; HOLDER_FILE_BYTES] = unhex("holder_file", &state.holder_file)?;
        let management_file = match &state.management_file {
            Some(m) => unhex("management_file", m)?,
            None => {
                let category = super::tunion::card_type_category(holder_file[0])
                    .unwrap_or(RiderCategory::Adult);
                management_file(SIM_HOME_CITY, InteropSpec::TUnion, category)
            }
        };
        Ok(SimCard {
            card_no: state.card_no,
            public_file,
            holder_file,
            management_file,
            dpk: crypto::diversify(&keys.purchase_master, serial),
            dtk: crypto::diversify(&keys.tac_master, serial),
            damk: crypto::diversify(&keys.maintenance_master, serial),
            purse_word: unhex("purse_word", &state.purse_word)?,
            offline_counter: state.offline_counter,
            compound: state
                .compound
                .as_deref()
                .map(|c| unhex("compound", c))
                .transpose()?,
            compound_cache: None,
            blocked: state.blocked,
            selected: false,
            pending: None,
            challenge: None,
            proofs,
            in_field: true,
            removal: None,
            rng,
        })
    }
}

impl CardChannel for SimCard {
    fn transmit(&mut self, command: &[u8], response: &mut Response) -> Result<(), ChannelError> {
        if !self.in_field {
            return Err(ChannelError::Removed);
        }
        response.clear();
        self.respond(command, response)
    }
}

/// The link protocol a simulated PSAM answers as (`replay --psam-protocol`, `sim-card --t0`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PsamProtocol {
    /// Block protocol: every answer whole, in one response.
    #[default]
    #[value(name = "t1")]
    T1,
    /// Character protocol, as contact PSAMs often run (ISO 7816-3 12.2, ISO 7816-4 5.1.3): a
    /// case 4 command (data in and out) answers `61 xx` and its data waits for GET RESPONSE
    /// (`00 C0 00 00 xx`, handed out in pieces if Le asks for fewer); a case 2 command whose
    /// Le is not the answer's length answers `6C xx` and must be sent again with Le = xx.
    #[value(name = "t0")]
    T0,
}

/// A simulated PSAM holding the scheme's purchase and maintenance master keys.
#[derive(Clone, Debug)]
pub struct SimPsam {
    protocol: PsamProtocol,
    /// T=0: the answer of the last case 4 command waiting for GET RESPONSE, and its status.
    waiting: heapless::Vec<u8, RESPONSE_DATA_BYTES_MAX>,
    waiting_sw: u16,
    keys: TestKeys,
    terminal_no: [u8; 6],
    terminal_seq: u32,
    selected: bool,
    /// Session key and amount of the last MAC1, for MAC2.
    session: Option<([u8; 8], Fen)>,
    /// Maintenance key diversified for one card, after INIT FOR DESCRYPT.
    card_damk: Option<Key16>,
}

impl SimPsam {
    pub fn new(keys: TestKeys, terminal_no: [u8; 6], first_terminal_seq: u32) -> Self {
        SimPsam {
            protocol: PsamProtocol::T1,
            waiting: heapless::Vec::new(),
            waiting_sw: sw::OK,
            keys,
            terminal_no,
            terminal_seq: first_terminal_seq,
            selected: false,
            session: None,
            card_damk: None,
        }
    }

    /// The same PSAM answering as `protocol` says.
    pub fn with_protocol(mut self, protocol: PsamProtocol) -> Self {
        self.protocol = protocol;
        self
    }

    pub fn protocol(&self) -> PsamProtocol {
        self.protocol
    }

    pub fn terminal_seq(&self) -> u32 {
        self.terminal_seq
    }

    /// A reset of the module: the selection and any open MAC session are lost; the terminal
    /// sequence number is kept, as in a real PSAM's non-volatile memory.
    pub fn reset(&mut self) {
        self.waiting.clear();
        self.selected = false;
        self.session = None;
        self.card_damk = None;
    }

    fn mac1(&mut self, data: &[u8], r: &mut Response) {
        let Some(m) = Mac1Input::decode(data) else {
            r.status(sw::WRONG_LENGTH);
            return;
        };
        let dpk = crypto::diversify(&self.keys.purchase_master, m.card_serial8);
        let tts = self.terminal_seq;
        self.terminal_seq = self.terminal_seq.wrapping_add(1);
        let sespk = crypto::purchase_session_key(&dpk, m.card_random, m.offline_counter, tts);
        let purchase = PurchaseData {
            amount_fen: m.amount_fen,
            tx_type: m.tx_type,
            terminal_no: self.terminal_no,
            terminal_seq: tts,
            datetime: m.datetime,
        };
        self.session = Some((sespk, m.amount_fen));
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&tts.to_be_bytes());
        out[4..].copy_from_slice(&crypto::mac1(&sespk, &purchase));
        r.set(&out, sw::OK);
    }

    fn mac2(&mut self, data: &[u8], r: &mut Response) {
        match self.session.take() {
            Some((sespk, amount)) if crypto::mac2(&sespk, amount) == data => r.status(sw::OK),
            Some(_) => r.status(sw::SM_DATA_INCORRECT),
            None => r.status(sw::CONDITIONS_NOT_SATISFIED),
        }
    }

    fn init_descrypt(&mut self, data: &[u8], r: &mut Response) {
        if data.len() != 16 {
            r.status(sw::WRONG_LENGTH);
            return;
        }
        let serial: [u8; 8] = std::array::from_fn(|i| data[i]);
        self.card_damk = Some(crypto::diversify(&self.keys.maintenance_master, serial));
        r.status(sw::OK);
    }

    fn cipher_mac(&mut self, data: &[u8], r: &mut Response) {
        let Some(damk) = self.card_damk.take() else {
            r.status(sw::CONDITIONS_NOT_SATISFIED);
            return;
        };
        if data.len() < 8 {
            r.status(sw::WRONG_LENGTH);
            return;
        }
        let iv: [u8; 8] = std::array::from_fn(|i| data[i]);
        r.set(&crypto::retail_mac(&damk, iv, &[&data[8..]]), sw::OK);
    }
}

impl SimPsam {
    /// GET RESPONSE on T=0: hand out `le` bytes (`00`: 256) of the waiting answer.
    fn get_response(&mut self, le: Option<u8>, r: &mut Response) {
        let n = self.waiting.len();
        let want = match le {
            None => {
                r.status(sw::WRONG_LENGTH);
                return;
            }
            Some(0) => RESPONSE_DATA_BYTES_MAX,
            Some(le) => usize::from(le),
        };
        if n == 0 {
            r.status(sw::CONDITIONS_NOT_SATISFIED);
        } else if want > n {
            r.status(0x6C00 | n as u16);
        } else if want == n {
            r.set(&self.waiting, self.waiting_sw);
            self.waiting.clear();
        } else {
            r.set(&self.waiting[..want], 0x6100 | (n - want) as u16);
            let rest: heapless::Vec<u8, RESPONSE_DATA_BYTES_MAX> =
                self.waiting[want..].iter().copied().collect();
            self.waiting = rest;
        }
    }

    /// Turn a whole answer into what a T=0 PSAM sends (see [`PsamProtocol::T0`]).
    fn as_t0(&mut self, data_in: bool, le: Option<u8>, r: &mut Response) {
        let Some(le) = le else { return };
        let n = r.data.len();
        if n == 0 || r.sw != sw::OK {
            return;
        }
        // 256 bytes are `61 00` / `6C 00`.
        let xx = (n % 256) as u16;
        if data_in {
            self.waiting.clear();
            // The answer came from this module's own buffer: at most 256 bytes.
            let _ = self.waiting.extend_from_slice(&r.data);
            self.waiting_sw = r.sw;
            r.status(0x6100 | xx);
        } else if usize::from(le) != n && !(le == 0 && n == 256) {
            r.status(0x6C00 | xx);
        }
    }
}

impl CardChannel for SimPsam {
    fn transmit(&mut self, command: &[u8], r: &mut Response) -> Result<(), ChannelError> {
        r.clear();
        let Some(c) = parse_command(command) else {
            r.status(sw::WRONG_LENGTH);
            return Ok(());
        };
        if self.protocol == PsamProtocol::T0 {
            if (c.cla, c.ins) == (0x00, 0xC0) {
                self.get_response(c.le, r);
                return Ok(());
            }
            // Any other command drops an answer nobody fetched.
            self.waiting.clear();
        }
        self.answer(&c, r);
        if self.protocol == PsamProtocol::T0 {
            self.as_t0(!c.data.is_empty(), c.le, r);
        }
        Ok(())
    }
}

impl SimPsam {
    fn answer(&mut self, c: &ParsedCommand<'_>, r: &mut Response) {
        match (c.cla, c.ins) {
            (0x00, 0xA4) => {
                self.selected = c.data == [0x10, 0x01];
                r.status(if self.selected {
                    sw::OK
                } else {
                    sw::FILE_NOT_FOUND
                });
            }
            _ if !self.selected => r.status(sw::CONDITIONS_NOT_SATISFIED),
            (0x00, 0xB0) if c.p1 == 0x96 => r.set(&self.terminal_no, sw::OK),
            (0x80, 0x70) => self.mac1(c.data, r),
            (0x80, 0x72) => self.mac2(c.data, r),
            (0x80, 0x1A) => self.init_descrypt(c.data, r),
            (0x80, 0xFA) => self.cipher_mac(c.data, r),
            _ => r.status(sw::INS_NOT_SUPPORTED),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::apdu::command;

    fn t0_psam() -> SimPsam {
        let mut p = SimPsam::new(TestKeys::default(), [0, 0, 0, 0, 0, 7], 1)
            .with_protocol(PsamProtocol::T0);
        let mut r = Response::default();
        p.transmit(
            &command(0x00, 0xA4, 0x00, 0x00, &[0x10, 0x01], None),
            &mut r,
        )
        .unwrap();
        assert_eq!(r.sw, sw::OK);
        p
    }

    #[test]
    fn t0_psam_hands_case_4_answers_out_by_get_response_in_pieces() {
        let mut p = t0_psam();
        let mut r = Response::default();
        let mac1 = command(0x80, 0x70, 0, 0, &[0; 36], Some(8));
        p.transmit(&mac1, &mut r).unwrap();
        assert_eq!((r.data.len(), r.sw), (0, 0x6108));
        p.transmit(&[0x00, 0xC0, 0, 0, 3], &mut r).unwrap();
        assert_eq!((r.data.len(), r.sw), (3, 0x6105));
        p.transmit(&[0x00, 0xC0, 0, 0, 9], &mut r).unwrap();
        assert_eq!(
            (r.data.len(), r.sw),
            (0, 0x6C05),
            "Le too long: 6C with what is left"
        );
        p.transmit(&[0x00, 0xC0, 0, 0, 5], &mut r).unwrap();
        assert_eq!((r.data.len(), r.sw), (5, sw::OK));
        p.transmit(&[0x00, 0xC0, 0, 0, 5], &mut r).unwrap();
        assert_eq!(r.sw, sw::CONDITIONS_NOT_SATISFIED, "nothing left");
        // Another command drops an answer nobody fetched.
        p.transmit(&mac1, &mut r).unwrap();
        p.transmit(&command(0x80, 0x72, 0, 0, &[0; 4], None), &mut r)
            .unwrap();
        assert_eq!(r.sw, sw::SM_DATA_INCORRECT, "case 3: answered at once");
        p.transmit(&[0x00, 0xC0, 0, 0, 8], &mut r).unwrap();
        assert_eq!(r.sw, sw::CONDITIONS_NOT_SATISFIED);
    }

    #[test]
    fn t0_psam_answers_6cxx_to_a_case_2_command_with_the_wrong_le() {
        let mut p = t0_psam();
        let mut r = Response::default();
        for le in [0u8, 5, 7] {
            p.transmit(&command(0x00, 0xB0, 0x96, 0, &[], Some(le)), &mut r)
                .unwrap();
            assert_eq!((r.data.len(), r.sw), (0, 0x6C06), "Le {le}");
        }
        p.transmit(&command(0x00, 0xB0, 0x96, 0, &[], Some(6)), &mut r)
            .unwrap();
        assert_eq!((r.data.as_slice(), r.sw), (&[0, 0, 0, 0, 0, 7][..], sw::OK));
        // On T=1 the whole file comes whatever Le says.
        let mut t1 = SimPsam::new(TestKeys::default(), [0, 0, 0, 0, 0, 7], 1);
        t1.transmit(
            &command(0x00, 0xA4, 0x00, 0x00, &[0x10, 0x01], None),
            &mut r,
        )
        .unwrap();
        t1.transmit(&command(0x00, 0xB0, 0x96, 0, &[], Some(0)), &mut r)
            .unwrap();
        assert_eq!((r.data.len(), r.sw), (6, sw::OK));
    }
}
