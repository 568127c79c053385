//! The clearing service on a real PostgreSQL server (feature `clearing`).
//!
//! The server's URL comes from `FARE_VALIDATOR_PG_URL` (`.ci/run` starts a private instance
//! with `scripts/pg-start.sh` and sets it); each test makes its own database there. Without
//! the URL the tests fail, unless the developer sets `FARE_VALIDATOR_SKIP_PG=1`: then they
//! skip, saying so. CI never sets it.
#![cfg(feature = "clearing")]

mod depot_support;

use depot_support::{card_record, qr_record, terminal_id};
use fare_validator::clearing::forward::{self, ForwardOptions};
use fare_validator::clearing::{self, schema};
use fare_validator::depot::store::Received;
use fare_validator::depot::Store;
use fare_validator::journal::Record;
use tokio_postgres::Client;

/// A new, empty, migrated database on the test server, named for the test; `None` when the
/// developer asked to skip.
async fn fresh_db(test: &str) -> Option<(Client, String)> {
    let Ok(base) = std::env::var(clearing::PG_URL_VAR) else {
        if std::env::var(clearing::SKIP_PG_VAR).is_ok_and(|v| v == "1") {
            eprintln!("{test}: skipped, {} is set", clearing::SKIP_PG_VAR);
            return None;
        }
        panic!(
            "{test}: {} is not set: start a server with scripts/pg-start.sh DIR and export it, \
             or set {}=1 to skip",
            clearing::PG_URL_VAR,
            clearing::SKIP_PG_VAR
        );
    };
    let admin = clearing::connect(&base).await.unwrap();
    let db = format!("fv_{test}");
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let (server, _) = base.rsplit_once('/').unwrap();
    let url = format!("{server}/{db}");
    let mut client = clearing::connect(&url).await.unwrap();
    assert_eq!(schema::migrate(&mut client).await.unwrap(), vec![1]);
    assert!(schema::migrate(&mut client).await.unwrap().is_empty());
    Some((client, url))
}

/// Journal epochs, one with the top bit set (stored as the bigint of the same bits).
const EPOCHS: [u64; 3] = [
    0x0000_0000_0000_0001,
    0x8000_0000_0000_0002,
    0xFFFF_FFFF_FFFF_FFF3,
];

/// A depot holding, for each of three terminals, `per_journal` records: card purchases and,
/// every fifth, a ride code.
fn depot(dir: &std::path::Path, per_journal: u64) -> (Store, u64) {
    let mut store = Store::open(&dir.join("depot.db")).unwrap();
    for (t, &epoch) in EPOCHS.iter().enumerate() {
        let received: Vec<Received> = (1..=per_journal)
            .map(|seq| {
                let mut record: Record = if seq % 5 == 0 {
                    qr_record(1, 1_000 + seq, seq as u32, 1_795_830_000 + seq as i64)
                } else {
                    card_record(seq)
                };
                record.seq = seq;
                Received {
                    record,
                    raw: record.encode(),
                }
            })
            .collect();
        let stored = store
            .store_batch(&terminal_id(t), epoch, 1, &received)
            .unwrap();
        assert_eq!(stored.ack.refused, 0, "fixture records are in range");
    }
    let n = store.record_count().unwrap();
    assert_eq!(n, per_journal * EPOCHS.len() as u64);
    (store, n)
}

async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

async fn distinct_keys(client: &Client) -> (i64, i64) {
    let total = count(client, "SELECT count(*) FROM records").await;
    let keys = count(
        client,
        "SELECT count(*) FROM (SELECT DISTINCT terminal, epoch, seq FROM records) k",
    )
    .await;
    (total, keys)
}

fn opts(batch: usize) -> ForwardOptions {
    ForwardOptions {
        batch_records_max: batch,
        ..ForwardOptions::new("depot-1")
    }
}

#[tokio::test]
async fn forwarding_stores_every_record_once_and_again_changes_nothing() {
    let Some((mut client, _)) = fresh_db("forward_once").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (store, n) = depot(tmp.path(), 50);

    let r = forward::forward(&store, &mut client, &opts(17))
        .await
        .unwrap();
    assert_eq!((r.records_sent, r.records_new), (n, n));
    assert_eq!(r.batches, n.div_ceil(17));
    assert_eq!(distinct_keys(&client).await, (n as i64, n as i64));

    let again = forward::forward(&store, &mut client, &opts(17))
        .await
        .unwrap();
    assert_eq!(
        again,
        forward::ForwardReport::default(),
        "the marks say all is there"
    );

    let resend = ForwardOptions {
        from_start: true,
        ..opts(17)
    };
    let r = forward::forward(&store, &mut client, &resend)
        .await
        .unwrap();
    assert_eq!(
        (r.records_sent, r.records_new),
        (n, 0),
        "sent again, stored once"
    );

    // The record's bytes and fields arrive as the bus wrote them.
    let row = client
        .query_one(
            "SELECT raw, epoch, card_no, account, service_day::text FROM records
             WHERE terminal = $1 AND seq = 5",
            &[&terminal_id(1)],
        )
        .await
        .unwrap();
    let raw: Vec<u8> = row.get(0);
    let rec = Record::decode(raw.as_slice().try_into().unwrap()).unwrap();
    assert_eq!(rec.seq, 5);
    assert_eq!(row.get::<_, i64>(1) as u64, EPOCHS[1]);
    assert_eq!(row.get::<_, String>(2), rec.card_no.to_string());
    assert_eq!(row.get::<_, Option<String>>(3).as_deref(), Some("1:1005"));
    assert_eq!(row.get::<_, String>(4), "2026-11-28");
    let parts = count(
        &client,
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'records'::regclass",
    )
    .await;
    assert_eq!(parts, 1, "one service day, one partition");
}

#[tokio::test]
async fn forwarder_stopped_mid_batch_resumes_and_stores_each_record_once() {
    let Some((mut client, _)) = fresh_db("forward_stopped").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (store, n) = depot(tmp.path(), 40);
    let o = opts(25);

    // Two batches committed, the third copied and staged, then the forwarder stops before
    // its commit: the transaction is never committed.
    for committed in [true, true, false] {
        let tx = client.transaction().await.unwrap();
        stage_next(&tx, &store, &o).await;
        if committed {
            tx.commit().await.unwrap();
        } else {
            drop(tx); // stopped mid-batch
        }
    }
    assert_eq!(distinct_keys(&client).await, (50, 50));

    let r = forward::forward(&store, &mut client, &o).await.unwrap();
    assert_eq!((r.records_sent, r.records_new), (n - 50, n - 50));
    assert_eq!(distinct_keys(&client).await, (n as i64, n as i64));
}

/// One batch above the marks, staged and marked in `tx`, not committed.
async fn stage_next(tx: &tokio_postgres::Transaction<'_>, store: &Store, o: &ForwardOptions) {
    let marks = forward::read_marks(tx, &o.depot).await.unwrap();
    let batch = forward::load_batch(store, &marks, o.batch_records_max).unwrap();
    assert_eq!(batch.len(), o.batch_records_max);
    forward::stage_batch(tx, &o.depot, &batch).await.unwrap();
    forward::set_marks(tx, &o.depot, &batch).await.unwrap();
}

#[tokio::test]
async fn server_side_killed_mid_batch_then_forwarding_resumes_exactly_once() {
    let Some((mut client, url)) = fresh_db("forward_server_killed").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (store, n) = depot(tmp.path(), 40);
    let o = opts(30);
    let tx = client.transaction().await.unwrap();
    stage_next(&tx, &store, &o).await;
    tx.commit().await.unwrap();

    // The server process serving the next batch dies after its COPY, before its commit.
    let killer = clearing::connect(&url).await.unwrap();
    let tx = client.transaction().await.unwrap();
    let pid: i32 = tx
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    stage_next(&tx, &store, &o).await;
    let killed: bool = killer
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(killed);
    assert!(tx.commit().await.is_err(), "the server died mid-batch");
    drop(client);

    let mut client = clearing::connect(&url).await.unwrap();
    assert_eq!(distinct_keys(&client).await, (30, 30));
    let r = forward::forward(&store, &mut client, &o).await.unwrap();
    assert_eq!((r.records_sent, r.records_new), (n - 30, n - 30));
    assert_eq!(distinct_keys(&client).await, (n as i64, n as i64));

    // A commit that succeeded but whose answer was lost (or marks restored from an older
    // backup): the marks lag, the records are sent again and stored once.
    client
        .execute(
            "UPDATE forward_marks SET through_seq = through_seq - 10",
            &[],
        )
        .await
        .unwrap();
    let r = forward::forward(&store, &mut client, &o).await.unwrap();
    assert_eq!((r.records_sent, r.records_new), (30, 0));
    assert_eq!(distinct_keys(&client).await, (n as i64, n as i64));
}
