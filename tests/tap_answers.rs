//! No panic on the tap path is reachable from what a card or PSAM answers: whole taps
//! (`Validator::tap_card`) against a genuine simulated card and PSAM whose answers a seeded
//! script may pass through, replace, corrupt, cut, or stretch into T=0 chains (`61xx`,
//! `6Cxx`), command by command, with any purse word on the card. Whatever they answer, every
//! decision is sane: an accepted tap has its record and a purse balance, a refused one charges
//! nothing and has no record, and every balance shown lies within the purse's range.

use std::collections::VecDeque;

use fare_validator::card::apdu::{CardChannel, ChannelError, Response};
use fare_validator::card::psam::Psam;
use fare_validator::card::sim::{CardSpec, PurseWord, SimCard, SimPsam, TestKeys};
use fare_validator::clock::Timestamp;
use fare_validator::engine::{EngineConfig, Validator};
use fare_validator::journal::{self, Journal};
use fare_validator::types::{is_purse_balance, Media, RiderCategory};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

/// What the script does to one command's answer.
#[derive(Clone, Debug)]
enum Meddle {
    /// The genuine answer.
    Pass,
    /// The card does the work; the answer is replaced by these bytes and status word.
    Replace(Vec<u8>, u16),
    /// The card never hears the command; only a status word comes back.
    Status(u16),
    /// The genuine answer with one byte of its data (or its status word) flipped.
    Flip(u8, u8),
    /// The genuine answer with its first 4 data bytes replaced (purse words, counters).
    Word([u8; 4]),
    /// The genuine answer held back behind `61 xx`, handed out by GET RESPONSE.
    Chain(u8),
    /// `6C xx` without the card hearing the command.
    WrongLe(u8),
    /// The card leaves before the command.
    Removed,
    /// The card hears the command and leaves before answering.
    RemovedAfter,
}

fn meddle() -> impl Strategy<Value = Meddle> {
    prop_oneof![
        12 => Just(Meddle::Pass),
        1 => (proptest::collection::vec(any::<u8>(), 0..40), any::<u16>())
            .prop_map(|(d, sw)| Meddle::Replace(d, sw)),
        1 => any::<u16>().prop_map(Meddle::Status),
        1 => (any::<u8>(), 1..=255u8).prop_map(|(at, x)| Meddle::Flip(at, x)),
        1 => any::<[u8; 4]>().prop_map(Meddle::Word),
        1 => any::<u8>().prop_map(Meddle::Chain),
        1 => any::<u8>().prop_map(Meddle::WrongLe),
        1 => Just(Meddle::Removed),
        1 => Just(Meddle::RemovedAfter),
    ]
}

/// A genuine card or PSAM behind a script that decides, command by command, what gets through.
struct Meddler<C> {
    inner: C,
    /// Commands passed untouched before the script starts (the PSAM's opening).
    skip: usize,
    script: VecDeque<Meddle>,
    /// A genuine answer held back behind `61xx`.
    held: Option<Response>,
}

impl<C: CardChannel> Meddler<C> {
    fn new(inner: C, skip: usize, script: Vec<Meddle>) -> Self {
        Meddler {
            inner,
            skip,
            script: script.into(),
            held: None,
        }
    }
}

impl<C: CardChannel> CardChannel for Meddler<C> {
    fn transmit(&mut self, cmd: &[u8], r: &mut Response) -> Result<(), ChannelError> {
        let m = if self.skip > 0 {
            self.skip -= 1;
            Meddle::Pass
        } else {
            self.script.pop_front().unwrap_or(Meddle::Pass)
        };
        let get_response = cmd.get(..2) == Some(&[0x00, 0xC0][..]);
        match m {
            Meddle::Status(sw) => {
                r.status(sw);
                return Ok(());
            }
            Meddle::WrongLe(xx) => {
                r.status(0x6C00 | u16::from(xx));
                return Ok(());
            }
            Meddle::Removed => return Err(ChannelError::Removed),
            _ => {}
        }
        // The genuine answer: held back from an earlier 61xx, or the card's own.
        match self.held.take() {
            Some(h) if get_response => *r = h,
            _ => self.inner.transmit(cmd, r)?,
        }
        match m {
            Meddle::Replace(data, sw) => r.set(&data, sw),
            Meddle::Flip(at, x) => match r.data.get_mut(usize::from(at)) {
                Some(b) => *b ^= x,
                None => r.sw ^= u16::from(x),
            },
            Meddle::Word(w) => {
                for (b, v) in r.data.iter_mut().zip(w) {
                    *b = v;
                }
            }
            Meddle::Chain(xx) => {
                self.held = Some(std::mem::take(r));
                r.status(0x6100 | u16::from(xx));
            }
            Meddle::RemovedAfter => return Err(ChannelError::Removed),
            _ => {}
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
struct Case {
    category: usize,
    balance_fen: i64,
    purse_word: Option<u32>,
    taps: Vec<(i64, Vec<Meddle>)>,
    psam_script: Vec<Meddle>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0..RiderCategory::ALL.len(),
        -1_000i64..20_000,
        proptest::option::of(any::<u32>()),
        proptest::collection::vec(
            (0i64..300, proptest::collection::vec(meddle(), 0..30)),
            1..4,
        ),
        prop_oneof![
            3 => Just(Vec::new()),
            1 => proptest::collection::vec(meddle(), 0..12),
        ],
    )
        .prop_map(
            |(category, balance_fen, purse_word, taps, psam_script)| Case {
                category,
                balance_fen,
                purse_word,
                taps,
                psam_script,
            },
        )
}

/// 2026-11-28T07:00:00+08:00
const BASE_UNIX_S: i64 = 1_795_820_400;
/// The highest fare of the default policy.
const FARE_FEN_MAX: u32 = 200;

/// Run the case's taps; how many were accepted.
fn run(c: &Case) -> Result<usize, TestCaseError> {
    let keys = TestKeys::default();
    let spec = CardSpec {
        purse_word: c.purse_word.map(|w| PurseWord(w.to_be_bytes())),
        ..CardSpec::new(
            "37144530000000000001".parse().unwrap(),
            RiderCategory::ALL[c.category],
            c.balance_fen,
        )
    };
    let card = SimCard::new(&spec, &keys, 7).unwrap();
    let psam = Meddler::new(
        SimPsam::new(keys, [0, 0, 0, 0, 0, 1], 1),
        2,
        c.psam_script.clone(),
    );
    let psam = Psam::open(psam).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(dir.path()).unwrap();
    let mut v = Validator::new(
        EngineConfig::default(),
        psam,
        fare_validator::fare::FareTable::default_policy(),
        fare_validator::blacklist::Blacklist::empty(),
        journal,
    );
    let mut card = Meddler::new(card, 0, Vec::new());
    let mut now = Timestamp {
        unix_s: BASE_UNIX_S,
        utc_offset_s: 8 * 3600,
    };
    let mut accepted = Vec::new();
    for (step_s, script) in &c.taps {
        card.script = script.clone().into();
        card.held = None;
        card.inner.enter_field(None);
        let next = v.journal().next_seq();
        let d = v.tap_card(&mut card, now);
        prop_assert_eq!(d.media, Media::Card);
        if let Some(b) = d.balance_fen {
            prop_assert!(is_purse_balance(i64::from(b)), "{:?}", d);
        }
        if d.accepted() {
            prop_assert_eq!(d.seq, Some(next), "{:?}", d);
            prop_assert!(
                d.fare_fen <= FARE_FEN_MAX && d.balance_fen.is_some(),
                "{:?}",
                d
            );
            accepted.push(d);
        } else {
            prop_assert!(d.seq.is_none() && d.fare_fen == 0, "{:?}", d);
        }
        now = now.plus_s(60 + step_s);
    }
    drop(v);
    let records = journal::scan(dir.path()).unwrap().records;
    prop_assert_eq!(records.len(), accepted.len());
    for (r, d) in records.iter().zip(&accepted) {
        prop_assert_eq!(
            (Some(r.seq), r.fare_fen, r.balance_fen),
            (d.seq, d.fare_fen, d.balance_fen)
        );
    }
    if c.psam_script.is_empty() {
        // MAC2 checked by a genuine PSAM: nothing is accepted that the card did not pay.
        prop_assert!(records.len() <= usize::from(card.inner.offline_counter()));
    }
    Ok(accepted.len())
}

proptest! {
    #![proptest_config(Config {
        cases: 384,
        rng_seed: RngSeed::Fixed(0x7A95_5EED),
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn whole_taps_never_panic_whatever_card_and_psam_answer(c in case()) {
        run(&c)?;
    }
}

/// The script's building blocks each reach the path they are for: a genuine dialogue through
/// T=0 chains on every command is accepted as if nothing happened.
#[test]
fn genuine_answers_behind_61xx_and_6cxx_on_every_command_are_accepted() {
    let chained = |first: Meddle| -> Vec<Meddle> {
        (0..40)
            .map(|i| {
                if i % 2 == 0 {
                    first.clone()
                } else {
                    Meddle::Pass
                }
            })
            .collect()
    };
    let c = Case {
        category: 0,
        balance_fen: 5000,
        purse_word: Some(0x8000_1388),
        taps: vec![(0, chained(Meddle::Chain(0)))],
        psam_script: chained(Meddle::Chain(4)),
    };
    assert_eq!(run(&c).unwrap(), 1);
    // 6Cxx on every card command: those with Le are sent again and answered; SELECT has none
    // (case 3), so the card is unreadable, before anything is debited.
    let c = Case {
        taps: vec![(0, chained(Meddle::WrongLe(0x0F)))],
        psam_script: Vec::new(),
        ..c
    };
    assert_eq!(run(&c).unwrap(), 0);
}
