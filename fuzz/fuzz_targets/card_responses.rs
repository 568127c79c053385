//! Hostile card and SAM answers never make the validator panic.
//!
//! Part 1: every strict parser of a card or PSAM answer (`tunion::parse_*`, the MAC1 input
//! decode, `Response::set_raw`) on fuzzer-chosen data and status word; parsers that succeed
//! must round-trip where an encoder exists.
//!
//! Part 3: `apdu::exchange` (61xx GET RESPONSE chains, 6Cxx resends) on any answers.
//!
//! Part 2 (the strong one): `engine::Validator::tap_card` against a genuine simulated card
//! whose answers the fuzzer may pass through, corrupt, replace or cut (card pulled), over up
//! to three taps (held behind `61xx` or refused `6Cxx` as a T=0 card would, with any purse
//! word, against a T=1 or T=0 PSAM), so that mutations reach every step of the purchase and the torn-tap
//! recovery. Whatever the card says: no panic, an accepted tap has a record sequence number,
//! and a refused tap has none.
#![no_main]

use fare_validator::card::apdu::{self, command, CardChannel, ChannelError, Response};
use fare_validator::card::psam::{Mac1Input, Psam};
use fare_validator::card::sim::{CardSpec, PsamProtocol, PurseWord, SimCard, SimPsam, TestKeys};
use fare_validator::card::tunion;
use fare_validator::clock::Timestamp;
use fare_validator::engine::{EngineConfig, Validator};
use fare_validator::journal::Journal;
use fare_validator::types::{is_purse_balance, RiderCategory};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::tmp_root;

/// 2026-11-28T07:00:00+08:00
const BASE_UNIX_S: i64 = 1_795_820_400;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8().unwrap_or(0x90), self.u8().unwrap_or(0)])
    }
}

/// A genuine card behind a fuzzer that decides, command by command, what gets through.
struct Hostile<'a, 'd> {
    card: SimCard,
    script: &'a mut Bytes<'d>,
    /// A genuine answer held back behind `61xx`, handed out by GET RESPONSE.
    held: Option<Response>,
}

impl Hostile<'_, '_> {
    /// The card's own answer, or the one held back if this is GET RESPONSE.
    fn genuine(&mut self, command: &[u8], response: &mut Response) -> Result<(), ChannelError> {
        match self.held.take() {
            Some(h) if command.get(..2) == Some(&[0x00, 0xC0][..]) => {
                *response = h;
                Ok(())
            }
            _ => self.card.transmit(command, response),
        }
    }
}

impl CardChannel for Hostile<'_, '_> {
    fn transmit(&mut self, command: &[u8], response: &mut Response) -> Result<(), ChannelError> {
        // Out of script: the genuine card answers (so the happy path is the empty input).
        let Some(c) = self.script.u8() else {
            return self.genuine(command, response);
        };
        match c % 8 {
            6 => {
                // T=0: the genuine answer waits behind `61 xx` (xx fuzzer-chosen) for GET
                // RESPONSE, which may itself be chained or meddled with.
                self.genuine(command, response)?;
                self.held = Some(std::mem::take(response));
                response.status(0x6100 | u16::from(self.script.u8().unwrap_or(0)));
                return Ok(());
            }
            7 => {
                // T=0: `6C xx` (xx fuzzer-chosen) without the card hearing the command.
                response.status(0x6C00 | u16::from(self.script.u8().unwrap_or(0)));
                return Ok(());
            }
            _ => {}
        }
        match c % 8 {
            0 => self.genuine(command, response),
            1 => {
                // Genuine answer with one byte flipped (data or status word).
                self.card.transmit(command, response)?;
                let at = usize::from(self.script.u8().unwrap_or(0));
                let x = self.script.u8().unwrap_or(1);
                if response.data.is_empty() || at >= response.data.len() {
                    response.sw ^= u16::from(x);
                } else {
                    response.data[at] ^= x;
                }
                Ok(())
            }
            2 => {
                // The card does the work but the answer is replaced.
                let _ = self.card.transmit(command, response);
                let n = usize::from(self.script.u8().unwrap_or(0));
                let data = self.script.take(n).to_vec();
                let sw = self.script.u16();
                let mut raw = data;
                raw.extend_from_slice(&sw.to_be_bytes());
                response.set_raw(&raw)
            }
            3 => Err(ChannelError::Removed),
            4 => {
                // The card hears the command, then leaves before answering.
                let _ = self.card.transmit(command, response);
                Err(ChannelError::Removed)
            }
            _ => {
                // Only a status word.
                let sw = self.script.u16();
                response.status(sw);
                Ok(())
            }
        }
    }
}

/// Answers from the fuzzer's bytes, one per command: a length byte, then that many bytes.
struct Scripted<'a, 'd>(&'a mut Bytes<'d>, usize);

impl CardChannel for Scripted<'_, '_> {
    fn transmit(&mut self, _: &[u8], response: &mut Response) -> Result<(), ChannelError> {
        self.1 += 1;
        let n = usize::from(self.0.u8().ok_or(ChannelError::Removed)?);
        let raw = self.0.take(n);
        response.set_raw(raw)
    }
}

/// The T=0 channel layer on any sequence of answers: bounded, never a panic.
fn exchange(data: &[u8]) {
    let mut b = Bytes(data);
    let le = b.u8();
    let cmd = command(0x80, 0x70, 0, 0, &[1, 2, 3], le.filter(|l| l & 1 == 0));
    let mut card = Scripted(&mut b, 0);
    let mut r = Response::default();
    let ok = apdu::exchange(&mut card, &cmd, &mut r).is_ok();
    assert!(card.1 <= 2 + 2 * apdu::GET_RESPONSE_CHAIN_MAX, "unbounded");
    if ok {
        assert!(r.sw >> 8 != 0x61 && r.sw >> 8 != 0x6C);
    }
}

fn parsers(data: &[u8]) {
    let mut b = Bytes(data);
    let sw = b.u16();
    let mut r = Response::default();
    let _ = r.set_raw(b.0);
    let body = b.0;
    r.data.clear();
    let _ = r.data.extend_from_slice(&body[..body.len().min(256)]);
    r.sw = sw;
    if let Ok(p) = tunion::parse_public(&r) {
        assert!(p.valid_from >= 1900_01_01 && p.valid_until >= 1900_01_01);
        assert_eq!(
            tunion::parse_bcd_date(tunion::encode_bcd_date(p.valid_until)),
            Some(p.valid_until)
        );
    }
    let _ = tunion::parse_holder(&r);
    if let Ok(Some(boarding)) = tunion::parse_boarding(&r) {
        let mut again = Response::default();
        again.set(&tunion::encode_boarding(&boarding), r.sw);
        assert_eq!(tunion::parse_boarding(&again), Ok(Some(boarding)));
    }
    let _ = tunion::parse_balance(&r);
    let _ = tunion::parse_init_purchase(&r);
    let _ = tunion::parse_debit(&r);
    let _ = tunion::parse_proof(&r);
    let _ = tunion::is_blocked_status(sw);
    if let Ok(date) = <[u8; 4]>::try_from(&body[..body.len().min(4)]) {
        if let Some(ymd) = tunion::parse_bcd_date(date) {
            assert_eq!(tunion::encode_bcd_date(ymd), date);
        }
    }
    if let Some(m) = Mac1Input::decode(body) {
        assert_eq!(&m.encode()[..], body);
    }
}

fn taps(data: &[u8]) {
    let mut b = Bytes(data);
    let Some(head) = b.u8() else { return };
    let category = RiderCategory::ALL[usize::from(head >> 4) % RiderCategory::ALL.len()];
    let balance_fen = i64::from(b.u16()) * i64::from(head & 0x0F);
    // Bit 3 of the head: the card answers a fuzzer-chosen purse word (any 4 bytes: a top bit
    // set, all ones, a negative amount) to GET BALANCE and INITIALIZE.
    let purse_word =
        (head & 0x08 != 0).then(|| PurseWord(std::array::from_fn(|_| b.u8().unwrap_or(0xFF))));
    let spec = CardSpec {
        enabled: head & 0x08 == 0 || head & 0x07 != 0,
        purse_word,
        ..CardSpec::new(
            "37144530000000000001".parse().expect("card number"),
            category,
            balance_fen,
        )
    };
    let keys = TestKeys::default();
    let Ok(card) = SimCard::new(&spec, &keys, 7) else {
        return;
    };
    // Bit 0 of the head: the PSAM answers as a T=0 card (61xx, 6Cxx).
    let protocol = if head & 0x01 != 0 {
        PsamProtocol::T0
    } else {
        PsamProtocol::T1
    };
    let Ok(psam) = Psam::open(SimPsam::new(keys, [0, 0, 0, 0, 0, 1], 1).with_protocol(protocol))
    else {
        return;
    };
    let Ok(dir) = tempfile::Builder::new().tempdir_in(tmp_root()) else {
        return;
    };
    let Ok((journal, _)) = Journal::open(dir.path()) else {
        return;
    };
    let mut v = Validator::new(
        EngineConfig::default(),
        psam,
        fare_validator::fare::FareTable::default_policy(),
        fare_validator::blacklist::Blacklist::empty(),
        journal,
    );
    let n_taps = 1 + usize::from(b.u8().unwrap_or(0) % 3);
    let mut hostile = Hostile {
        card,
        script: &mut b,
        held: None,
    };
    let mut now = Timestamp {
        unix_s: BASE_UNIX_S,
        utc_offset_s: 8 * 3600,
    };
    for _ in 0..n_taps {
        let before = v.journal().next_seq();
        let d = v.tap_card(&mut hostile, now);
        if let Some(b) = d.balance_fen {
            assert!(
                is_purse_balance(i64::from(b)),
                "balance {b} outside the purse's range"
            );
        }
        if d.accepted() {
            let seq = d.seq.expect("an accepted tap has a record");
            assert!(seq >= before, "record seq {seq} reused (next was {before})");
        } else {
            assert!(d.seq.is_none(), "a refused tap has no record: {d:?}");
        }
        // Next tap: a fuzzer-chosen step of the clock, backwards too.
        let step = i64::from(hostile.script.u16() as i16) * 7;
        now = now.plus_s(step);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => parsers(rest),
        1 => taps(rest),
        _ => exchange(rest),
    }
});
