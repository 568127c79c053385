//! The offline data authentication step of a QuickPass tap alone (docs/quickpass.md): CA key
//! lookup, issuer and ICC certificate recovery and checks, the signed dynamic data's
//! verification (three RSA public operations, SHA-1), on what the simulated vector card
//! answered: `quickpass/fdda` recovers every certificate, `quickpass/fdda_issuer_key_cached`
//! is a validator's second tap of a card of a known issuer (two RSA operations, the issuer key
//! from its cache); and the whole card dialogue beside it (the simulated card's signing
//! included).
//!
//! cargo bench --bench quickpass_oda -- --warm-up-time 1 --measurement-time 3

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use fare_validator::bench::quickpass_vector_card;
use fare_validator::card::quickpass::{
    authenticate, authenticate_cached, read_card, IssuerKeyCache, TerminalData,
};

const TODAY: u32 = 2026_12_01;

fn terminal() -> TerminalData {
    TerminalData {
        amount_fen: 200,
        datetime_bcd: [0x20, 0x26, 0x12, 0x01, 0x08, 0x00, 0x00],
        unpredictable_number: [0x11, 0x22, 0x33, 0x44],
    }
}

fn oda(c: &mut Criterion) {
    let (mut card, ca) = quickpass_vector_card().expect("vector card");
    card.enter_field(None);
    let data = read_card(&mut card, &terminal()).expect("the vector card reads");
    assert!(authenticate(&data, &ca, TODAY).is_ok());
    c.bench_function("quickpass/fdda", |b| {
        b.iter(|| authenticate(black_box(&data), black_box(&ca), TODAY))
    });
    let mut cache = IssuerKeyCache::new();
    assert!(authenticate_cached(&data, &ca, &mut cache, TODAY).is_ok());
    c.bench_function("quickpass/fdda_issuer_key_cached", |b| {
        b.iter(|| authenticate_cached(black_box(&data), black_box(&ca), &mut cache, TODAY))
    });
    c.bench_function("quickpass/dialogue_with_simulated_card", |b| {
        b.iter(|| {
            card.enter_field(None);
            read_card(&mut card, black_box(&terminal()))
        })
    });
}

criterion_group!(benches, oda);
criterion_main!(benches);
