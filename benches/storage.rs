//! The blacklist lookup a tap makes, and the journal append that makes a tap durable:
//! buffered (no sync), one fdatasync per record, and a group of 128 records per sync.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use fare_validator::bench::random_blacklist;
use fare_validator::blacklist::Blacklist;
use fare_validator::journal::{
    CardTx, FileLayer, Journal, OsFiles, Record, RecordKind, UnsyncedFiles,
};
use fare_validator::types::{CardNo, ListId, RiderCategory};

/// Entries in the benchmarked blacklist.
const BLACKLIST_ENTRIES: usize = 1_000_000;

fn blacklist_lookup(c: &mut Criterion) {
    let entries = random_blacklist(BLACKLIST_ENTRIES, 5);
    let list = Blacklist::from_entries(1, entries.iter().copied());
    let hits: Vec<ListId> = entries
        .iter()
        .step_by(97)
        .map(|(id, _)| *id)
        .take(1024)
        .collect();
    let misses: Vec<ListId> = (0..1024u128)
        .map(|i| ListId::Card(CardNo::from_u128(3714_0000_0000_0000_0000 + i).unwrap()))
        .collect();
    let mut i = 0;
    c.bench_function("blacklist/lookup_listed_1m", |b| {
        b.iter(|| {
            i = (i + 1) % hits.len();
            list.get(&hits[i])
        })
    });
    c.bench_function("blacklist/lookup_not_listed_1m", |b| {
        b.iter(|| {
            i = (i + 1) % misses.len();
            list.get(&misses[i])
        })
    });
}

fn record() -> Record {
    Record {
        seq: 0,
        kind: RecordKind::CardPurchase,
        at_unix_s: 1_795_824_000,
        utc_offset_min: 480,
        route: 1,
        category: RiderCategory::Adult,
        fare_fen: 200,
        balance_fen: Some(4_800),
        card_no: CardNo::from_u128(3714_0000_0000_0000_0001).unwrap(),
        card_tx: CardTx::default(),
        qr: None,
        quickpass: None,
        terminal_no: [0, 0, 0, 0, 0, 1],
        rule: fare_validator::fare::FareRule::Unknown,
    }
}

fn journal_append(c: &mut Criterion) {
    let mut g = c.benchmark_group("journal_append");
    for (name, group, layer) in [
        (
            "buffered",
            1usize,
            Box::new(UnsyncedFiles) as Box<dyn FileLayer>,
        ),
        ("fsync_each", 1, Box::new(OsFiles)),
        ("group_commit_128", 128, Box::new(OsFiles)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open_with(dir.path(), layer).unwrap();
        g.throughput(Throughput::Elements(group as u64));
        g.bench_function(name, |b| {
            b.iter_batched(
                record,
                |mut r| {
                    for _ in 0..group {
                        j.append(&mut r).unwrap();
                    }
                    j.commit().unwrap()
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, blacklist_lookup, journal_append);
criterion_main!(benches);
