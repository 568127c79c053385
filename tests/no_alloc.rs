//! After start-up the tap path does not allocate: a counting allocator watches a run of card
//! taps (dialogue, decision, durable record) and refusals, under a fare table with every rule
//! kind (`fixtures/fares-every-rule.toml`: interop lists, timeframes, routes, several riders,
//! networks and transfer rules; the records show every kind pricing a boarding)
//! and cards of the home city and of other cities (accepted, interop fare, refused by the deny
//! list, ended concessions, further riders on one card). Then the same
//! through the validator program's shared part: the core's lock taken for each step of the
//! dialogue, and the decision line written from its fixed buffer, for taps, for ride codes
//! (checked before the lock, decided and recorded under it, first-seen holders and
//! returning ones) and for scanner lines refused before the engine.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use fare_validator::blacklist::{Blacklist, Change, ChangeOp};
use fare_validator::card::psam::Psam;
use fare_validator::card::sim::{CardSpec, SimCard, SimPsam, TestKeys};
use fare_validator::clock::Timestamp;
use fare_validator::engine::{EngineConfig, Validator};
use fare_validator::fare::{FareRule, FareTable};
use fare_validator::journal::Journal;
use fare_validator::ride_code::issuer::SimChannels;
use fare_validator::ride_code::{ChannelKeys, RideCodeConfig};
use fare_validator::types::{ListId, ListReason, RiderCategory};
use fare_validator::validator::scanner::{Malformation, ScanLine};
use fare_validator::validator::Shared;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn card_taps_allocate_nothing_after_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let keys = TestKeys::default();
    let (journal, _) = Journal::open(dir.path()).unwrap();
    let psam = Psam::open(SimPsam::new(keys, [0, 0, 0, 0, 0, 1], 1)).unwrap();
    let mut list = Blacklist::empty();
    let spec = |n: u32, t| {
        CardSpec::new(
            format!("371400000000000000{n:02}").parse().unwrap(),
            t,
            100_000,
        )
    };
    list.apply(&Change {
        op: ChangeOp::Add,
        id: ListId::Card(spec(3, RiderCategory::Adult).card_no),
        reason: ListReason::Lost,
    });
    let mut v = Validator::new(
        EngineConfig::default(),
        psam,
        FareTable::from_toml(include_str!("../fixtures/fares-every-rule.toml")).unwrap(),
        list,
        journal,
    );
    let mut cards: Vec<SimCard> = [
        RiderCategory::Adult,
        RiderCategory::Student,
        RiderCategory::Adult,
    ]
    .iter()
    .enumerate()
    .map(|(i, t)| SimCard::new(&spec(i as u32 + 1, *t), &keys, 1).unwrap())
    .collect();
    // A senior of the home city (timeframes), a student of city 1000 (interop fare) and an
    // adult of denied city 2000 (issuer_not_accepted).
    for (n, t, city) in [
        (4, RiderCategory::Senior, None),
        (5, RiderCategory::Student, Some("1000")),
        (6, RiderCategory::Adult, Some("2000")),
    ] {
        let spec = CardSpec {
            issuer_city: city.map(|c| c.parse().unwrap()),
            ..spec(n, t)
        };
        cards.push(SimCard::new(&spec, &keys, 1).unwrap());
    }
    // A student whose concession has ended and a senior whose annual review is due: both pay
    // the adult fare, with a fare note.
    for (n, t, until, review) in [
        (7, RiderCategory::Student, Some("2020-01-01"), None),
        (8, RiderCategory::Senior, None, Some("2026-06-30")),
    ] {
        let spec = CardSpec {
            concession_until: until.map(str::to_string),
            annual_review_until: review.map(str::to_string),
            ..spec(n, t)
        };
        cards.push(SimCard::new(&spec, &keys, 1).unwrap());
    }
    // Friday, a quarter of an hour before the seniors' peak ends: both sides of it.
    let mut now = Timestamp::parse_rfc3339("2026-11-27T08:45:00+08:00").unwrap();
    // Warm-up: the first tap opens what it needs.
    cards[0].enter_field(None);
    assert!(v.tap_card(&mut cards[0], now).accepted());

    COUNTING.store(true, Ordering::SeqCst);
    let (mut extra_riders, mut concessions_ended) = (0, 0);
    for round in 0..50 {
        now = now.plus_s(30);
        // The city lines, an express line, a route with its own fare and one in no network
        // in turn: transfer rules by network, and each base fare.
        v.set_route([5, 1, 6, 2, 4][round % 5]);
        for card in cards.iter_mut() {
            card.enter_field(None);
            // Accepted, repeat_tap (every other round) and blacklisted taps all run here.
            let d = v.tap_card(card, now);
            concessions_ended += usize::from(d.fare_note.is_some());
        }
        // The first adult card again at once: another rider (several_riders), or a
        // repeat_tap once its group is closed.
        cards[0].enter_field(None);
        let d = v.tap_card(&mut cards[0], now.plus_s(1));
        extra_riders += usize::from(d.fare_note.is_some());
    }
    COUNTING.store(false, Ordering::SeqCst);
    assert!(extra_riders > 0 && concessions_ended > 0);
    assert_eq!(
        ALLOCATIONS.load(Ordering::SeqCst),
        0,
        "allocations on the tap path"
    );
    assert!(v.journal().durable_seq() > 50);
    let priced: std::collections::BTreeSet<FareRule> = fare_validator::journal::scan(dir.path())
        .unwrap()
        .records
        .iter()
        .map(|r| r.rule)
        .collect();
    let card_rules: std::collections::BTreeSet<FareRule> = FareRule::ALL
        .into_iter()
        .filter(|r| !matches!(r, FareRule::Unknown | FareRule::RideCodeCategory))
        .collect();
    assert_eq!(priced, card_rules, "every rule kind priced a tap above");

    // The program: its shared core, its decision lines, ride codes issued beforehand for
    // each round (distinct holders, then the same ones again).
    let t0 = now.unix_s as u32;
    let mut channels = SimChannels::new(5, (t0 - 86_400, t0 + 86_400 * 30));
    v.set_ride_code_keys(
        ChannelKeys::from_file(&channels.key_file()).unwrap(),
        RideCodeConfig::default(),
    );
    let codes: Vec<String> = (0..=20u32)
        .map(|round| {
            let holder = round % 10;
            let card_no = format!("371400000000000090{holder:02}").parse().unwrap();
            let at = t0 + 30 * round - 2;
            let channel = 1 + (holder % 8) as u16;
            channels
                .issue(
                    channel,
                    u64::from(holder),
                    card_no,
                    RiderCategory::Adult,
                    at,
                    round,
                )
                .unwrap()
        })
        .collect();
    let (mut psam, core) = v.into_parts();
    let clock = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(now.unix_s));
    let c = std::sync::Arc::clone(&clock);
    let shared = Shared::new(
        core,
        Box::new(std::io::sink()),
        Box::new(move || Timestamp {
            unix_s: c.load(Ordering::Relaxed),
            utc_offset_s: now.utc_offset_s,
        }),
        Vec::new(),
    );
    cards[0].enter_field(None);
    let _ = shared.tap(&mut psam, &mut cards[0]);
    assert!(shared.scan(ScanLine::Code(&codes[0])).accepted());
    let taps_before = shared.counters.taps.load(Ordering::SeqCst);
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let mut scans_accepted = 0;
    for code in &codes[1..] {
        clock.fetch_add(30, Ordering::Relaxed);
        for card in cards.iter_mut() {
            card.enter_field(None);
            let _ = shared.tap(&mut psam, card);
        }
        scans_accepted += usize::from(shared.scan(ScanLine::Code(code)).accepted());
        let _ = shared.scan(ScanLine::Malformed(Malformation::TooLong));
    }
    COUNTING.store(false, Ordering::SeqCst);
    assert_eq!(
        ALLOCATIONS.load(Ordering::SeqCst),
        0,
        "allocations on the program's tap, scan and decision-line path"
    );
    assert_eq!(scans_accepted, 20);
    assert_eq!(
        shared.counters.taps.load(Ordering::SeqCst) - taps_before,
        20 * cards.len() as u64
    );
}
