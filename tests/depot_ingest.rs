//! Ingest rate of the station, end to end over loopback TCP and into SQLite (WAL,
//! synchronous=FULL). Ignored by default: run it optimised,
//! `cargo test --release --test depot_ingest -- --ignored --nocapture`.

mod depot_support;

use std::time::Instant;

use depot_support::*;
use fare_validator::depot::Store;
use fare_validator::upload::{self, frame::BATCH_RECORDS_MAX};

const RECORDS: u64 = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run with --release --ignored --nocapture"]
async fn ingest_rate_of_100k_records() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    // One bus with every record, then four buses sharing them.
    for (buses, label) in [(1usize, "one validator"), (4, "four validators at once")] {
        let _ = std::fs::remove_file(&db);
        let st = station(store(&db, buses)).await;
        let each = RECORDS / buses as u64;
        let dirs: Vec<_> = (0..buses)
            .map(|n| {
                let d = tmp.path().join(format!("{label}-{n}"));
                card_journal(&d, each);
                d
            })
            .collect();
        let started = Instant::now();
        let tasks: Vec<_> = dirs
            .into_iter()
            .enumerate()
            .map(|(n, d)| {
                let addr = st.addr();
                tokio::spawn(async move {
                    upload::upload(&d, addr, &terminal_id(n), &secret(n as u8)).await
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().uploaded, each);
        }
        let s = started.elapsed().as_secs_f64();
        st.shutdown().await;
        assert_eq!(Store::open(&db).unwrap().record_count().unwrap(), RECORDS);
        println!(
            "depot ingest, {label}: {RECORDS} records in {s:.3} s = {:.0} records/s \
             (batch {BATCH_RECORDS_MAX} records, one transaction and one fsync each)",
            RECORDS as f64 / s
        );
    }
}
