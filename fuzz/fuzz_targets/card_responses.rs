//! Hostile card and SAM answers never make the validator panic.
//!
//! Part 1: every strict parser of a card or PSAM answer (`tunion::parse_*`, the MAC1 input
//! decode, `Response::set_raw`) on fuzzer-chosen data and status word; parsers that succeed
//! must round-trip where an encoder exists.
//!
//! Part 2 (the strong one): `engine::Validator::tap_card` against a genuine simulated card
//! whose answers the fuzzer may pass through, corrupt, replace or cut (card pulled), over up
//! to three taps, so that mutations reach every step of the purchase and the torn-tap
//! recovery. Whatever the card says: no panic, an accepted tap has a record sequence number,
//! and a refused tap has none.
#![no_main]

use fare_validator::card::apdu::{CardChannel, ChannelError, Response};
use fare_validator::card::psam::{Mac1Input, Psam};
use fare_validator::card::sim::{CardSpec, PurseWord, SimCard, SimPsam, TestKeys};
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
}

impl CardChannel for Hostile<'_, '_> {
    fn transmit(&mut self, command: &[u8], response: &mut Response) -> Result<(), ChannelError> {
        // Out of script: the genuine card answers (so the happy path is the empty input).
        let Some(c) = self.script.u8() else {
            return self.card.transmit(command, response);
        };
        match c % 6 {
            0 => self.card.transmit(command, response),
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
        card_no: "37144530000000000001".parse().expect("card number"),
        card_type: category,
        enabled: head & 0x08 == 0 || head & 0x07 != 0,
        valid_from: "2024-01-01".into(),
        valid_until: "2034-12-31".into(),
        balance_fen,
        purse_word,
    };
    let keys = TestKeys::default();
    let Ok(card) = SimCard::new(&spec, &keys, 7) else {
        return;
    };
    let Ok(psam) = Psam::open(SimPsam::new(keys, [0, 0, 0, 0, 0, 1], 1)) else {
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
    if mode & 1 == 0 {
        parsers(rest);
    } else {
        taps(rest);
    }
});
