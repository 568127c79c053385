//! A simulated QuickPass (闪付) application, and the physical card that carries it beside the
//! T-Union transport application ([`SimPhysicalCard`]).
//!
//! The application answers the commands of [`super::quickpass`]'s dialogue byte for byte from
//! the CARDS.json fields of quickpass.md (docs/quickpass.md): the PPSE, its FCI with the PDOL
//! below, GET PROCESSING OPTIONS and three records of SFI 1. Each GPO counts the ATC up, makes
//! an ICC dynamic number (the ATC and 6 random bytes), signs the dynamic application data
//! with the card's own RSA key (EMV Book 2 Table 17, over the terminal's `9F37` ‖ `9F02` ‖
//! `5F2A`) and makes an application cryptogram: HMAC-SHA256 under a key of the card, first 8
//! bytes. The validator never checks that cryptogram; the acquirer does, so any keyed MAC
//! serves the simulation.
//!
//! | record (SFI 1) | data objects |
//! | --- | --- |
//! | 1 | `5A` PAN, `5F24` expiry, `5F34` PAN sequence, `9F4A` = `82`, `8F` CA index, `9F32` issuer exponent |
//! | 2 | `90` issuer certificate, `92` issuer remainder (when not empty) |
//! | 3 | `9F46` ICC certificate, `9F47` ICC exponent, `9F48` ICC remainder (when not empty) |
//!
//! PDOL: `9F66 04 9F02 06 9F03 06 9F1A 02 95 05 5F2A 02 9A 03 9C 01 9F37 04`. AFL `08 01 03 00`:
//! no record is marked for offline data authentication (the static data is the AIP alone).
//!
//! The card can leave the field before or after any of its commands ([`QpRemoval`]).

use hmac::{Hmac, Mac};
use iso7816_tlv::ber::{Tag, Tlv, Value};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rsa::BigUint;
use serde::Deserialize;

use super::apdu::{parse_command, sw, CardChannel, ChannelError, Response};
use super::quickpass::{sdad_plain, Pan, CERT_BYTES_MAX, PPSE_NAME, UNIONPAY_RID};
use super::sim::{Removal, SimCard};
use super::tunion;

/// The PDOL the simulated card asks for.
pub const SIM_PDOL: [u8; 24] = [
    0x9F, 0x66, 0x04, 0x9F, 0x02, 0x06, 0x9F, 0x03, 0x06, 0x9F, 0x1A, 0x02, 0x95, 0x05, 0x5F, 0x2A,
    0x02, 0x9A, 0x03, 0x9C, 0x01, 0x9F, 0x37, 0x04,
];
/// Where the PDOL data puts `9F02`, `5F2A` and `9F37`, and its whole length.
const PDOL_AMOUNT_AT: usize = 4;
const PDOL_CURRENCY_AT: usize = 23;
const PDOL_UN_AT: usize = 29;
const PDOL_DATA_BYTES: usize = 33;
/// The AFL: SFI 1, records 1 to 3, none for offline data authentication.
pub const SIM_AFL: [u8; 4] = [0x08, 0x01, 0x03, 0x00];
/// Cryptogram information data of the simulated card: an ARQC (the acquirer authorizes).
pub const SIM_CID: u8 = 0x80;
/// Issuer application data of the simulated card (PBOC layout: length 07, DKI, CVN, CVR).
pub const SIM_IAD: [u8; 8] = [0x07, 0x01, 0x01, 0x03, 0xA0, 0x00, 0x00, 0x00];
/// Master key the simulated cards' cryptogram keys come from: a test key.
pub const SIM_AC_MASTER: &[u8; 16] = b"DZ-TEST-QP-AC-MK";

/// A QuickPass application as quickpass.md's CARDS.json fields describe it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QuickPassSpec {
    pub pan: String,
    pub pan_seq: u8,
    /// YYYY-MM-DD
    pub expiry: String,
    pub aid: String,
    pub aip: String,
    pub ca_index: String,
    pub issuer_cert: String,
    pub issuer_remainder: String,
    pub issuer_exponent: String,
    pub icc_cert: String,
    pub icc_remainder: String,
    pub icc_exponent: String,
    pub icc_modulus: String,
    pub icc_private_exponent: String,
    pub atc: u16,
}

/// The names of [`QuickPassSpec`]'s fields, which tell a CARDS.json entry's QuickPass part.
pub const QUICKPASS_FIELDS: [&str; 15] = [
    "pan",
    "pan_seq",
    "expiry",
    "aid",
    "aip",
    "ca_index",
    "issuer_cert",
    "issuer_remainder",
    "issuer_exponent",
    "icc_cert",
    "icc_remainder",
    "icc_exponent",
    "icc_modulus",
    "icc_private_exponent",
    "atc",
];

/// When the card leaves the field, counting the QuickPass application's commands from 1
/// (SELECT PPSE 1, SELECT AID 2, GPO 3, READ RECORD 4 to 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QpRemoval {
    /// The command never reaches the card.
    BeforeCommand(u8),
    /// The card does what the command says, but its answer never reaches the reader.
    AfterCommand(u8),
}

/// GPO's number among the commands ([`QpRemoval`]).
pub const GPO_COMMAND_NO: u8 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Selected {
    None,
    Ppse,
    App,
}

/// A simulated QuickPass application.
#[derive(Clone, Debug)]
pub struct SimQuickPass {
    pan: Pan,
    pan_seq: u8,
    expiry_yymmdd: [u8; 3],
    aid: Vec<u8>,
    aip: [u8; 2],
    ca_index: u8,
    issuer_cert: Vec<u8>,
    issuer_remainder: Vec<u8>,
    issuer_exponent: Vec<u8>,
    icc_cert: Vec<u8>,
    icc_remainder: Vec<u8>,
    icc_exponent: Vec<u8>,
    icc_key: IccKey,
    icc_n_bytes: usize,
    ac_key: [u8; 32],
    atc: u16,
    selected: Selected,
    commands: u8,
    in_field: bool,
    removal: Option<QpRemoval>,
    rng: ChaCha8Rng,
}

/// The simulated card's private key: with its primes (recovered from n, e, d by RustCrypto
/// `rsa`) the signature takes the CRT's four times shorter exponentiations; a key whose
/// primes cannot be recovered (not a consistent key pair) signs with d directly.
#[derive(Clone, Debug)]
enum IccKey {
    Crt(Box<rsa::RsaPrivateKey>),
    Plain { n: BigUint, d: BigUint },
}

impl IccKey {
    fn new(n: BigUint, e: BigUint, d: BigUint) -> IccKey {
        match rsa::RsaPrivateKey::from_components(n.clone(), e, d.clone(), Vec::new()) {
            Ok(k) => IccKey::Crt(Box::new(k)),
            Err(_) => IccKey::Plain { n, d },
        }
    }

    fn sign(&self, m: &BigUint) -> BigUint {
        match self {
            IccKey::Crt(k) => rsa::hazmat::rsa_decrypt(None::<&mut ChaCha8Rng>, k.as_ref(), m)
                // The message is below the modulus by construction (it starts 6A).
                .unwrap_or_default(),
            IccKey::Plain { n, d } => m.modpow(d, n),
        }
    }
}

fn hex_field(name: &str, v: &str) -> Result<Vec<u8>, String> {
    hex::decode(v).map_err(|_| format!("{name} must be hex, not {v:?}"))
}

fn hex_array<const N: usize>(name: &str, v: &str) -> Result<[u8; N], String> {
    hex_field(name, v)?
        .try_into()
        .map_err(|_| format!("{name} must be {} hex digits", 2 * N))
}

impl SimQuickPass {
    /// The application from its CARDS.json fields; `seed` drives its random numbers.
    pub fn new(spec: &QuickPassSpec, seed: u64) -> Result<Self, String> {
        let pan = Pan::parse(&spec.pan).ok_or("pan must be 12 to 19 decimal digits")?;
        if spec.pan_seq > 99 {
            return Err("pan_seq must be 0 to 99".into());
        }
        let ymd = super::quickpass::parse_ymd(&spec.expiry)
            .ok_or_else(|| format!("expiry must be YYYY-MM-DD, not {:?}", spec.expiry))?;
        let bcd = |v: u32| ((v / 10) << 4 | (v % 10)) as u8;
        let expiry_yymmdd = [
            bcd(ymd / 10_000 % 100),
            bcd(ymd / 100 % 100),
            bcd(ymd % 100),
        ];
        let aid = hex_field("aid", &spec.aid)?;
        if !(5..=16).contains(&aid.len()) {
            return Err("aid must be 5 to 16 bytes".into());
        }
        let icc_modulus = hex_field("icc_modulus", &spec.icc_modulus)?;
        if icc_modulus.is_empty() || icc_modulus.len() > CERT_BYTES_MAX {
            return Err(format!("icc_modulus must be 1 to {CERT_BYTES_MAX} bytes"));
        }
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(SIM_AC_MASTER).expect("any key");
        mac.update(pan.digits());
        let ac_key: [u8; 32] = mac.finalize().into_bytes().into();
        let pan_seed = pan
            .digits()
            .iter()
            .fold(0u64, |a, d| a.wrapping_mul(10) + u64::from(d - b'0'));
        Ok(SimQuickPass {
            pan,
            pan_seq: spec.pan_seq,
            expiry_yymmdd,
            aid,
            aip: hex_array("aip", &spec.aip)?,
            ca_index: hex_array::<1>("ca_index", &spec.ca_index)?[0],
            issuer_cert: hex_field("issuer_cert", &spec.issuer_cert)?,
            issuer_remainder: hex_field("issuer_remainder", &spec.issuer_remainder)?,
            issuer_exponent: hex_field("issuer_exponent", &spec.issuer_exponent)?,
            icc_cert: hex_field("icc_cert", &spec.icc_cert)?,
            icc_remainder: hex_field("icc_remainder", &spec.icc_remainder)?,
            icc_exponent: hex_field("icc_exponent", &spec.icc_exponent)?,
            icc_n_bytes: icc_modulus.len(),
            icc_key: IccKey::new(
                BigUint::from_bytes_be(&icc_modulus),
                BigUint::from_bytes_be(&hex_field("icc_exponent", &spec.icc_exponent)?),
                BigUint::from_bytes_be(&hex_field(
                    "icc_private_exponent",
                    &spec.icc_private_exponent,
                )?),
            ),
            ac_key,
            atc: spec.atc,
            selected: Selected::None,
            commands: 0,
            in_field: true,
            removal: None,
            rng: ChaCha8Rng::seed_from_u64(seed ^ pan_seed),
        })
    }

    pub fn pan(&self) -> Pan {
        self.pan
    }

    /// The application transaction counter: how many GPOs the card has answered, from the
    /// `atc` it was made with.
    pub fn atc(&self) -> u16 {
        self.atc
    }

    /// The card is presented to the reader; it will leave as `removal` says.
    pub fn enter_field(&mut self, removal: Option<QpRemoval>) {
        self.in_field = true;
        self.selected = Selected::None;
        self.commands = 0;
        self.removal = removal;
    }

    pub fn in_field(&self) -> bool {
        self.in_field
    }

    fn respond(&mut self, cmd: &[u8], r: &mut Response) -> Result<(), ChannelError> {
        self.commands = self.commands.saturating_add(1);
        let n = self.commands;
        if self.removal == Some(QpRemoval::BeforeCommand(n)) {
            self.in_field = false;
            return Err(ChannelError::Removed);
        }
        self.answer(cmd, r);
        if self.removal == Some(QpRemoval::AfterCommand(n)) {
            self.in_field = false;
            r.clear();
            return Err(ChannelError::Removed);
        }
        Ok(())
    }

    fn answer(&mut self, cmd: &[u8], r: &mut Response) {
        let Some(c) = parse_command(cmd) else {
            r.status(sw::WRONG_LENGTH);
            return;
        };
        let out = match (c.cla, c.ins, c.p1, c.p2) {
            (0x00, 0xA4, 0x04, 0x00) if c.data == PPSE_NAME => {
                self.selected = Selected::Ppse;
                Ok(self.ppse_fci())
            }
            (0x00, 0xA4, 0x04, 0x00) if c.data == self.aid.as_slice() => {
                self.selected = Selected::App;
                Ok(self.fci())
            }
            (0x00, 0xA4, _, _) => {
                self.selected = Selected::None;
                Err(sw::FILE_NOT_FOUND)
            }
            (0x80, 0xA8, 0x00, 0x00) if self.selected == Selected::App => self.gpo(c.data),
            (0x80, 0xA8, _, _) => Err(sw::CONDITIONS_NOT_SATISFIED),
            (0x00, 0xB2, rec, 0x0C) if self.selected == Selected::App => self.record(rec),
            (0x00, 0xB2, _, _) => Err(sw::RECORD_NOT_FOUND),
            _ => Err(sw::INS_NOT_SUPPORTED),
        };
        match out {
            Ok(bytes) if bytes.len() <= super::apdu::RESPONSE_DATA_BYTES_MAX => {
                r.set(&bytes, sw::OK)
            }
            Ok(_) => r.status(sw::WRONG_LENGTH),
            Err(status) => r.status(status),
        }
    }

    fn ppse_fci(&self) -> Vec<u8> {
        let entry = cons(
            0x61,
            vec![
                prim(0x4F, &self.aid),
                prim(0x50, b"UnionPay"),
                prim(0x87, &[0x01]),
            ],
        );
        let a5 = cons(0xA5, vec![cons(0xBF0C, vec![entry])]);
        cons(0x6F, vec![prim(0x84, PPSE_NAME), a5]).to_vec()
    }

    fn fci(&self) -> Vec<u8> {
        let a5 = cons(0xA5, vec![prim(0x50, b"UnionPay"), prim(0x9F38, &SIM_PDOL)]);
        cons(0x6F, vec![prim(0x84, &self.aid), a5]).to_vec()
    }

    fn gpo(&mut self, data: &[u8]) -> Result<Vec<u8>, u16> {
        let pdol = match data {
            [0x83, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
            _ => return Err(sw::WRONG_LENGTH),
        };
        if pdol.len() != PDOL_DATA_BYTES {
            return Err(sw::WRONG_LENGTH);
        }
        self.atc = self.atc.checked_add(1).ok_or(sw::COUNTER_LIMIT)?;
        let atc = self.atc.to_be_bytes();
        let mut fdda = [0u8; 12];
        fdda[..4].copy_from_slice(&pdol[PDOL_UN_AT..PDOL_UN_AT + 4]);
        fdda[4..10].copy_from_slice(&pdol[PDOL_AMOUNT_AT..PDOL_AMOUNT_AT + 6]);
        fdda[10..].copy_from_slice(&pdol[PDOL_CURRENCY_AT..PDOL_CURRENCY_AT + 2]);
        let mut dynamic = [0u8; 9];
        dynamic[0] = 8;
        dynamic[1..3].copy_from_slice(&atc);
        self.rng.fill_bytes(&mut dynamic[3..]);
        let plain =
            sdad_plain(&dynamic, &fdda, self.icc_n_bytes).ok_or(sw::CONDITIONS_NOT_SATISFIED)?;
        let signed = self.icc_key.sign(&BigUint::from_bytes_be(&plain));
        let sdad = left_pad(&signed.to_bytes_be(), self.icc_n_bytes);
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.ac_key).expect("any key");
        mac.update(pdol);
        mac.update(&self.aip);
        mac.update(&atc);
        let ac = mac.finalize().into_bytes();
        Ok(cons(
            0x77,
            vec![
                prim(0x82, &self.aip),
                prim(0x94, &SIM_AFL),
                prim(0x9F36, &atc),
                prim(0x9F26, &ac[..8]),
                prim(0x9F27, &[SIM_CID]),
                prim(0x9F10, &SIM_IAD),
                prim(0x9F4B, &sdad),
                prim(0x5F34, &[self.pan_seq]),
            ],
        )
        .to_vec())
    }

    fn record(&self, rec: u8) -> Result<Vec<u8>, u16> {
        let mut items = Vec::new();
        match rec {
            1 => {
                items.push(prim(0x5A, &self.pan.to_cn()));
                items.push(prim(0x5F24, &self.expiry_yymmdd));
                items.push(prim(0x5F34, &[self.pan_seq]));
                items.push(prim(0x9F4A, &[0x82]));
                items.push(prim(0x8F, &[self.ca_index]));
                items.push(prim(0x9F32, &self.issuer_exponent));
            }
            2 => {
                items.push(prim(0x90, &self.issuer_cert));
                if !self.issuer_remainder.is_empty() {
                    items.push(prim(0x92, &self.issuer_remainder));
                }
            }
            3 => {
                items.push(prim(0x9F46, &self.icc_cert));
                items.push(prim(0x9F47, &self.icc_exponent));
                if !self.icc_remainder.is_empty() {
                    items.push(prim(0x9F48, &self.icc_remainder));
                }
            }
            _ => return Err(sw::RECORD_NOT_FOUND),
        }
        Ok(cons(0x70, items).to_vec())
    }
}

fn left_pad(b: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len.saturating_sub(b.len())];
    out.extend_from_slice(b);
    out
}

fn sim_tag(t: u32) -> Tag {
    // Only this module's constant tags come here.
    Tag::try_from(t).expect("valid constant tag")
}

fn prim(t: u32, v: &[u8]) -> Tlv {
    Tlv::new(sim_tag(t), Value::Primitive(v.to_vec())).expect("primitive tag")
}

fn cons(t: u32, items: Vec<Tlv>) -> Tlv {
    Tlv::new(sim_tag(t), Value::Constructed(items)).expect("constructed tag")
}

impl CardChannel for SimQuickPass {
    fn transmit(&mut self, command: &[u8], response: &mut Response) -> Result<(), ChannelError> {
        if !self.in_field {
            return Err(ChannelError::Removed);
        }
        response.clear();
        self.respond(command, response)
    }
}

/// Which application of a physical card the last SELECT reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum App {
    None,
    Transport,
    QuickPass,
}

/// One physical card: the T-Union transport application, a QuickPass application, or both.
/// SELECT by AID reaches the application it names (the T-Union AID, or the PPSE and UnionPay
/// AIDs); other commands go to the application selected last.
#[derive(Clone, Debug)]
pub struct SimPhysicalCard {
    pub transport: Option<SimCard>,
    pub quickpass: Option<SimQuickPass>,
    app: App,
}

impl SimPhysicalCard {
    pub fn new(transport: Option<SimCard>, quickpass: Option<SimQuickPass>) -> Self {
        SimPhysicalCard {
            transport,
            quickpass,
            app: App::None,
        }
    }

    /// The card is presented; `removal` of replay.md applies to whichever application the
    /// tap uses: for QuickPass `before_debit` is before GPO, `after_debit` GPO's answer lost.
    pub fn enter_field(&mut self, removal: Option<Removal>) {
        self.app = App::None;
        if let Some(t) = &mut self.transport {
            t.enter_field(removal);
        }
        if let Some(q) = &mut self.quickpass {
            q.enter_field(removal.map(|r| match r {
                Removal::BeforeDebit => QpRemoval::BeforeCommand(GPO_COMMAND_NO),
                Removal::AfterDebit => QpRemoval::AfterCommand(GPO_COMMAND_NO),
            }));
        }
    }
}

impl SimPhysicalCard {
    /// Power on again while in the field (a reader's reset): nothing is selected, the
    /// transport application forgets its session; counters and purse stay.
    pub fn reset(&mut self) {
        self.app = App::None;
        if let Some(t) = &mut self.transport {
            t.reset();
        }
    }
}

impl CardChannel for SimPhysicalCard {
    fn transmit(&mut self, command: &[u8], response: &mut Response) -> Result<(), ChannelError> {
        if let Some(c) = parse_command(command) {
            if c.ins == 0xA4 && c.p1 == 0x04 {
                self.app = if c.data == tunion::AID {
                    App::Transport
                } else if c.data == PPSE_NAME || c.data.starts_with(&UNIONPAY_RID) {
                    App::QuickPass
                } else {
                    App::None
                };
            }
        }
        let gone = self.transport.as_ref().is_some_and(|t| !t.in_field())
            || self.quickpass.as_ref().is_some_and(|q| !q.in_field());
        if gone {
            return Err(ChannelError::Removed);
        }
        match (self.app, &mut self.transport, &mut self.quickpass) {
            (App::Transport, Some(t), _) => t.transmit(command, response),
            (App::QuickPass, _, Some(q)) => q.transmit(command, response),
            _ => {
                response.clear();
                response.status(sw::FILE_NOT_FOUND);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::quickpass::{
        authenticate, authenticate_cached, read_card, AuthError, CaKeys, CardData, IssuerKeyCache,
        Pan, TerminalData,
    };

    fn vectors() -> serde_json::Value {
        serde_json::from_str(include_str!("../../fixtures/quickpass-v1.json")).unwrap()
    }

    /// The certificate and signature cases of the vectors, at the card level (the engine's
    /// test decides every case through replay).
    #[test]
    fn vector_cards_authenticate_as_expected() {
        let v = vectors();
        let ca = CaKeys::from_json(&v["ca_keys"].to_string()).unwrap();
        let t = TerminalData {
            amount_fen: 200,
            datetime_bcd: [0x20, 0x26, 0x12, 0x01, 0x08, 0x00, 0x00],
            unpredictable_number: [9, 8, 7, 6],
        };
        for case in v["cases"].as_array().unwrap() {
            let spec: QuickPassSpec = serde_json::from_value(case["card"].clone()).unwrap();
            let mut card = SimQuickPass::new(&spec, 1).unwrap();
            let d = read_card(&mut card, &t).unwrap();
            let at = case["at"].as_str().unwrap();
            let today: u32 = at[..10].replace('-', "").parse().unwrap();
            let got = match authenticate(&d, &ca, today) {
                Ok(()) => "ok",
                Err(AuthError::Certificate(_)) => "bad_certificate",
                Err(AuthError::Signature(_)) => "bad_signature",
            };
            let want = case["expect"].as_str().unwrap();
            let want = if want == "bad_certificate" || want == "bad_signature" {
                want
            } else {
                "ok"
            };
            assert_eq!(
                got,
                want,
                "{}: {:?}",
                case["name"],
                authenticate(&d, &ca, today)
            );
            assert_eq!(card.atc(), spec.atc + 1);
        }
    }

    fn terminal() -> TerminalData {
        TerminalData {
            amount_fen: 200,
            datetime_bcd: [0x20, 0x26, 0x12, 0x01, 0x08, 0x00, 0x00],
            unpredictable_number: [9, 8, 7, 6],
        }
    }

    /// Every vector card read once, with the day of its case.
    fn vector_reads() -> Vec<(String, CardData, u32)> {
        let v = vectors();
        v["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|case| {
                let spec: QuickPassSpec = serde_json::from_value(case["card"].clone()).unwrap();
                let mut card = SimQuickPass::new(&spec, 1).unwrap();
                let d = read_card(&mut card, &terminal()).unwrap();
                let at = case["at"].as_str().unwrap();
                let today: u32 = at[..10].replace('-', "").parse().unwrap();
                (case["name"].as_str().unwrap().to_string(), d, today)
            })
            .collect()
    }

    /// One cache across every vector card, twice over: each answer is the one a full
    /// recovery gives, whether the issuer key was recovered now or by an earlier card.
    #[test]
    fn issuer_key_cache_decides_as_a_full_recovery() {
        let ca = CaKeys::from_json(&vectors()["ca_keys"].to_string()).unwrap();
        let reads = vector_reads();
        let mut cache = IssuerKeyCache::new();
        for round in 0..2 {
            for (name, d, today) in &reads {
                assert_eq!(
                    authenticate_cached(d, &ca, &mut cache, *today),
                    authenticate(d, &ca, *today),
                    "round {round}: {name}"
                );
            }
        }
        // The good certificates only, each issuer key once.
        assert!(
            !cache.is_empty() && cache.len() < reads.len(),
            "{}",
            cache.len()
        );
    }

    /// A cached issuer key still answers to each card's PAN and each tap's day.
    #[test]
    fn cached_issuer_key_is_checked_against_the_pan_and_the_day() {
        let ca = CaKeys::from_json(&vectors()["ca_keys"].to_string()).unwrap();
        let reads = vector_reads();
        let (_, last_day, today) = reads
            .iter()
            .find(|(n, _, _)| n == "issuer_certificate_valid_through_the_last_day_of_its_month")
            .unwrap();
        let mut cache = IssuerKeyCache::new();
        assert_eq!(
            authenticate_cached(last_day, &ca, &mut cache, *today),
            Ok(())
        );
        assert_eq!(
            authenticate_cached(last_day, &ca, &mut cache, 2027_01_01),
            Err(AuthError::Certificate("issuer certificate expired"))
        );
        let (_, good, today) = reads
            .iter()
            .find(|(n, _, _)| n == "good_card_accepted")
            .unwrap();
        assert_eq!(authenticate_cached(good, &ca, &mut cache, *today), Ok(()));
        let mut other_issuer = good.clone();
        other_issuer.pan = Pan::parse("6299990000000001");
        assert_eq!(
            authenticate_cached(&other_issuer, &ca, &mut cache, *today),
            Err(AuthError::Certificate("issuer identifier"))
        );
        // A card whose certificate failed left nothing behind to trust.
        let (_, forged, today) = reads
            .iter()
            .find(|(n, _, _)| n == "issuer_certificate_hash_wrong_is_bad_certificate")
            .unwrap();
        let before = cache.len();
        assert!(authenticate_cached(forged, &ca, &mut cache, *today).is_err());
        assert_eq!(cache.len(), before);
    }
}
