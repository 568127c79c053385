//! Hostile QuickPass answers never make the validator panic.
//!
//! Part 1: `quickpass::read_card` and `authenticate` against a genuine simulated QuickPass
//! card (the first card of fixtures/quickpass-v1.json) whose answers the fuzzer may pass
//! through, corrupt (flip a byte, cut the tail, change a length byte), replace with its own
//! bytes and status word, or cut off (the card leaves): every outcome is a typed error or a
//! complete read.
//!
//! Part 2: the same hostile card tapped through `engine::Validator::tap_card` (the transport
//! SELECT, then PPSE to fDDA and the record): no panic; an accepted tap has a sequence
//! number, a refused one none, and `media` is QuickPass once the card answered PPSE.
#![no_main]

use fare_validator::bench::quickpass_vector_card;
use fare_validator::card::apdu::{CardChannel, ChannelError, Response};
use fare_validator::card::psam::Psam;
use fare_validator::card::quickpass::{authenticate, read_card, PanTokenKey, TerminalData};
use fare_validator::card::sim::{SimPsam, TestKeys};
use fare_validator::card::sim_quickpass::SimPhysicalCard;
use fare_validator::clock::Timestamp;
use fare_validator::engine::{EngineConfig, Validator};
use fare_validator::journal::Journal;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::tmp_root;

/// 2026-12-01T08:00:00+08:00
const BASE_UNIX_S: i64 = 1_796_083_200;

struct Hostile<'d> {
    card: SimPhysicalCard,
    script: &'d [u8],
}

impl Hostile<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.script.split_first()?;
        self.script = rest;
        Some(b)
    }
}

impl CardChannel for Hostile<'_> {
    fn transmit(&mut self, command: &[u8], response: &mut Response) -> Result<(), ChannelError> {
        let op = self.u8().unwrap_or(0);
        match op % 8 {
            // Gone.
            7 => return Err(ChannelError::Removed),
            // The fuzzer's own answer: length, bytes, status.
            6 => {
                let n = usize::from(self.u8().unwrap_or(0));
                let n = n.min(self.script.len());
                let (data, rest) = self.script.split_at(n);
                self.script = rest;
                let sw = u16::from_be_bytes([self.u8().unwrap_or(0x90), self.u8().unwrap_or(0)]);
                let mut raw = data.to_vec();
                raw.extend_from_slice(&sw.to_be_bytes());
                return response.set_raw(&raw);
            }
            _ => {}
        }
        self.card.transmit(command, response)?;
        let mut data = response.data.to_vec();
        let at = usize::from(self.u8().unwrap_or(0));
        match op % 8 {
            1 if !data.is_empty() => {
                let i = at % data.len();
                data[i] ^= self.u8().unwrap_or(0xFF) | 1;
            }
            2 => {
                let keep = data.len().saturating_sub(at % 48 + 1);
                data.truncate(keep);
            }
            3 if data.len() > 2 => {
                let i = 1 + at % (data.len() - 1);
                data[i] = self.u8().unwrap_or(0x81);
            }
            _ => {}
        }
        let sw = response.sw;
        response.set(&data, sw);
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok((card, ca)) = quickpass_vector_card() else {
        return;
    };
    let now = Timestamp {
        unix_s: BASE_UNIX_S,
        utc_offset_s: 8 * 3600,
    };
    // Part 1: the dialogue and fDDA alone.
    let mut hostile = Hostile {
        card: card.clone(),
        script: data,
    };
    hostile.card.enter_field(None);
    let terminal = TerminalData {
        amount_fen: 200,
        datetime_bcd: now.local_bcd(),
        unpredictable_number: [1, 2, 3, 4],
    };
    if let Ok(d) = read_card(&mut hostile, &terminal) {
        let _ = authenticate(&d, &ca, now.local_ymd());
    }
    // Part 2: a whole tap.
    let dir = tmp_root().join("quickpass");
    let _ = std::fs::remove_dir_all(&dir);
    let Ok((journal, _)) = Journal::open(&dir) else {
        return;
    };
    let Ok(psam) = Psam::open(SimPsam::new(TestKeys::default(), [0, 0, 0, 0, 0, 1], 1)) else {
        return;
    };
    let mut v = Validator::new(
        EngineConfig::default(),
        psam,
        fare_validator::fare::FareTable::default_policy(),
        fare_validator::blacklist::Blacklist::empty(),
        journal,
    );
    v.set_quickpass(ca, PanTokenKey::TEST, 7);
    let mut hostile = Hostile { card, script: data };
    hostile.card.enter_field(None);
    let d = v.tap_card(&mut hostile, now);
    assert_eq!(d.accepted(), d.seq.is_some(), "{d:?}");
    if d.accepted() {
        assert_eq!(d.balance_fen, None);
    }
});
