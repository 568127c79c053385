//! One upload batch into the station's store: one SQLite transaction (WAL,
//! synchronous=FULL) of `BATCH_RECORDS_MAX` records, fsync included.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fare_validator::depot::store::{Received, Store};
use fare_validator::journal::{CardTx, Record, RecordKind};
use fare_validator::types::{CardNo, RiderCategory};
use fare_validator::upload::frame::BATCH_RECORDS_MAX;

/// The identity of the bus's journal.
const EPOCH: u64 = 0x0123_4567_89ab_cdef;

fn record(seq: u64) -> Record {
    Record {
        seq,
        kind: RecordKind::CardPurchase,
        at_unix_s: 1_795_824_000 + seq as i64,
        utc_offset_min: 480,
        route: 7,
        category: RiderCategory::Adult,
        fare_fen: 200,
        balance_fen: Some(4_800),
        card_no: CardNo::from_u128(37_140_000_000_000_000_000 + u128::from(seq % 1000)).unwrap(),
        card_tx: CardTx {
            offline_counter: 1,
            terminal_seq: seq as u32,
            tac: [1, 2, 3, 4],
        },
        qr: None,
        quickpass: None,
        terminal_no: [0, 0, 0, 0, 1, 0x23],
        rule: fare_validator::fare::FareRule::Unknown,
    }
}

fn batch_ingest(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(&tmp.path().join("depot.db")).unwrap();
    store
        .add_terminal_with_secret("bus-0001", &[7; 32])
        .unwrap();
    let mut next_seq = 1u64;
    let mut g = c.benchmark_group("depot_ingest");
    g.throughput(Throughput::Elements(BATCH_RECORDS_MAX as u64));
    g.sample_size(20);
    g.bench_function("store_batch", |b| {
        b.iter(|| {
            let batch: Vec<Received> = (next_seq..next_seq + BATCH_RECORDS_MAX as u64)
                .map(|s| {
                    let record = record(s);
                    Received {
                        record,
                        raw: record.encode_in(EPOCH),
                    }
                })
                .collect();
            let stored = store
                .store_batch("bus-0001", EPOCH, next_seq, &batch)
                .unwrap();
            next_seq += BATCH_RECORDS_MAX as u64;
            assert_eq!(stored.ack.contiguous_seq, next_seq - 1);
        })
    });
    g.finish();
}

criterion_group!(benches, batch_ingest);
criterion_main!(benches);
