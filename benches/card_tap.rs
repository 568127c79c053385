//! One card tap through the engine with the simulated card and PSAM: the whole APDU dialogue
//! (select, reads, purchase with real 3DES session keys and MACs, MAC2), the decision and the
//! journal record — durable (fdatasync) and, for comparison, with the sync left out.

use criterion::{criterion_group, criterion_main, Criterion};
use fare_validator::blacklist::Blacklist;
use fare_validator::card::psam::Psam;
use fare_validator::card::sim::{CardSpec, SimCard, SimPsam, TestKeys};
use fare_validator::clock::Timestamp;
use fare_validator::engine::{EngineConfig, Validator};
use fare_validator::fare::FareTable;
use fare_validator::journal::{FileLayer, Journal};
use fare_validator::types::RiderCategory;

fn bench_tap(c: &mut Criterion, name: &str, layer: Box<dyn FileLayer>) {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open_with(dir.path(), layer).unwrap();
    let keys = TestKeys::default();
    let psam = Psam::open(SimPsam::new(keys, [0, 0, 0, 0, 0, 1], 1)).unwrap();
    let mut v = Validator::new(
        EngineConfig::default(),
        psam,
        FareTable::default_policy(),
        Blacklist::empty(),
        journal,
    );
    let spec = CardSpec::new(
        "37140000000000000001".parse().unwrap(),
        RiderCategory::Adult,
        i64::from(fare_validator::types::PURSE_BALANCE_FEN_MAX),
    );
    let mut card = SimCard::new(&spec, &keys, 1).unwrap();
    let mut now = Timestamp::parse_rfc3339("2026-11-28T07:00:00+08:00").unwrap();
    c.bench_function(name, |b| {
        b.iter(|| {
            now = now.plus_s(61);
            if card.offline_counter() > 60_000 {
                // A real purse's 16-bit counter runs out; start a new card.
                card = SimCard::new(&spec, &keys, 1).unwrap();
            }
            card.enter_field(None);
            let d = v.tap_card(&mut card, now);
            assert!(d.accepted(), "{d:?}");
        })
    });
}

fn card_tap(c: &mut Criterion) {
    bench_tap(
        c,
        "card_tap/journal_fsync",
        Box::new(fare_validator::journal::OsFiles),
    );
    bench_tap(
        c,
        "card_tap/journal_no_sync",
        Box::new(fare_validator::journal::UnsyncedFiles),
    );
}

criterion_group!(benches, card_tap);
criterion_main!(benches);
