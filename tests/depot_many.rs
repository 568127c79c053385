//! A depot evening: 1,000 terminals connect at once on loopback, and every record of every
//! one of them is stored exactly once.

mod depot_support;

use depot_support::*;
use fare_validator::depot::server::StationLimits;
use fare_validator::depot::{self, Store};
use fare_validator::upload;

const TERMINALS: usize = 1_000;
const RECORDS_EACH: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_terminals_at_once_each_record_stored_once() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    // All thousand share one source address and connect in the same instant: room for every
    // handshake at once (a depot's buses have addresses of their own and come over an
    // evening, which the default caps are sized for).
    let limits = StationLimits {
        handshakes_max: TERMINALS,
        handshakes_per_addr_max: TERMINALS,
        ..StationLimits::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let station = depot::server::start_with(listener, store(&db, TERMINALS), limits).unwrap();
    let addr = station.addr();
    let mut tasks = Vec::with_capacity(TERMINALS);
    for n in 0..TERMINALS {
        let dir = tmp.path().join(terminal_id(n));
        card_journal(&dir, RECORDS_EACH);
        tasks.push(tokio::spawn(async move {
            upload::upload(&dir, addr, &terminal_id(n), &secret(n as u8)).await
        }));
    }
    for t in tasks {
        let report = t.await.unwrap().expect("every terminal uploads");
        assert_eq!(report.acked_seq, RECORDS_EACH);
    }
    station.shutdown().await;
    let store = Store::open(&db).unwrap();
    assert_eq!(
        store.record_count().unwrap(),
        TERMINALS as u64 * RECORDS_EACH
    );
    let report = store.report().unwrap();
    assert!(report
        .terminals
        .values()
        .all(|t| t.records == RECORDS_EACH && t.gaps.is_empty()));
}
