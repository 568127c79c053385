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
    assert_eq!(
        schema::migrate(&mut client).await.unwrap(),
        schema::MIGRATIONS.iter().map(|m| m.0).collect::<Vec<_>>()
    );
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

/// A whole default-size batch sent again: the COPY straight into the partitions fails on the
/// key while the forwarder is still sending (not only at its end), and the batch is merged by
/// key instead.
#[tokio::test]
async fn a_large_batch_sent_again_is_merged_by_key() {
    let Some((mut client, _)) = fresh_db("forward_resend_large").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (store, n) = depot(tmp.path(), 5_000);
    let o = ForwardOptions::new("depot-1");
    let r = forward::forward(&store, &mut client, &o).await.unwrap();
    assert_eq!((r.batches, r.records_new), (1, n));
    // Half the records lost with a restored backup: the batch is mixed, old and new.
    client
        .execute("DELETE FROM records WHERE seq % 2 = 0", &[])
        .await
        .unwrap();
    let again = ForwardOptions {
        from_start: true,
        ..o
    };
    let r = forward::forward(&store, &mut client, &again).await.unwrap();
    assert_eq!((r.records_sent, r.records_new), (n, n / 2));
    assert_eq!(distinct_keys(&client).await, (n as i64, n as i64));
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

// ---- The clearing run ------------------------------------------------------------------

use fare_validator::card::crypto::{self, PurchaseData};
use fare_validator::card::sim::TestKeys;
use fare_validator::clearing::run::{self, RunOptions, RunSummary};
use fare_validator::journal::RecordKind;
use fare_validator::types::CardNo;

/// 2026-11-28 08:00 +08:00 (a Saturday): the cleared day's first boarding.
const DAY_AT: i64 = 1_795_824_000;

fn day(s: &str) -> time::Date {
    time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).unwrap()
}

/// The TAC the simulated card makes for `r` (src/card/sim.rs, src/card/crypto.rs).
fn tac_of(r: &Record) -> [u8; 4] {
    let dtk = crypto::diversify(&TestKeys::default().tac_master, r.card_no.serial_tail8());
    let local =
        time::OffsetDateTime::from_unix_timestamp(r.at_unix_s + i64::from(r.utc_offset_min) * 60)
            .unwrap();
    let digits = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        local.year(),
        local.month() as u8,
        local.day(),
        local.hour(),
        local.minute(),
        local.second()
    );
    let datetime: [u8; 7] = hex::decode(digits).unwrap().try_into().unwrap();
    crypto::tac(
        &dtk,
        &PurchaseData {
            amount_fen: r.fare_fen,
            tx_type: 0x09,
            terminal_no: r.terminal_no,
            terminal_seq: r.card_tx.terminal_seq,
            datetime,
        },
    )
}

/// A purse purchase of card `card` (last digits) with a true TAC.
fn purse(card: u128, counter: u16, psam_seq: u32, at_unix_s: i64) -> Record {
    let mut r = card_record(0);
    r.card_no = CardNo::from_u128(37_140_000_000_000_000_000 + card).unwrap();
    r.card_tx.offline_counter = counter;
    r.card_tx.terminal_seq = psam_seq;
    r.at_unix_s = at_unix_s;
    r.card_tx.tac = tac_of(&r);
    r
}

/// A depot holding `journals` (terminal n, epoch 1, seqs from 1), forwarded to `client`.
async fn forwarded(client: &mut Client, dir: &std::path::Path, journals: Vec<Vec<Record>>) -> u64 {
    let mut store = Store::open(&dir.join("depot.db")).unwrap();
    for (t, records) in journals.into_iter().enumerate() {
        let received: Vec<Received> = records
            .into_iter()
            .enumerate()
            .map(|(i, mut record)| {
                record.seq = i as u64 + 1;
                Received {
                    record,
                    raw: record.encode(),
                }
            })
            .collect();
        let s = store.store_batch(&terminal_id(t), 1, 1, &received).unwrap();
        assert_eq!(s.ack.refused, 0);
    }
    forward::forward(&store, client, &opts(1_000))
        .await
        .unwrap()
        .records_new
}

fn test_keys() -> Vec<(String, Vec<u8>)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/issuer-tac-keys.json"
    ))
    .unwrap();
    run::IssuerKeys::from_json(&text).unwrap()
}

fn run_opts(d: &str, daily: Option<i64>, weekly: Option<i64>) -> RunOptions {
    RunOptions {
        day: day(d),
        issuer_keys: test_keys(),
        daily_cap_fen: daily,
        weekly_cap_fen: weekly,
        acquirer: "test-acquirer".to_string(),
        local_card_prefixes: vec![run::LOCAL_CARD_PREFIX.to_string()],
    }
}

async fn rows(client: &Client, sql: &str) -> Vec<String> {
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

#[tokio::test]
async fn forged_tac_counter_gap_and_grey_recovery_are_found() {
    let Some((mut client, _)) = fresh_db("run_findings").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut forged = purse(2, 0, 4, DAY_AT + 400);
    forged.card_tx.tac[3] ^= 0x01;
    let mut recovered = purse(4, 5, 7, DAY_AT + 700);
    recovered.kind = RecordKind::CardRecovered;
    let bus0 = vec![
        purse(1, 0, 1, DAY_AT + 100),
        purse(1, 1, 2, DAY_AT + 200),
        purse(3, 0, 3, DAY_AT + 300),
        forged,
        // PSAM number 5 and card 3's counter 1 never seen: a debit with no record.
        purse(3, 2, 6, DAY_AT + 600),
        recovered,
        purse(4, 6, 8, DAY_AT + 900),
    ];
    forwarded(&mut client, tmp.path(), vec![bus0]).await;
    let s = run::run_day(&mut client, &run_opts("2026-11-28", None, None))
        .await
        .unwrap();

    assert_eq!(s.records, 7);
    assert_eq!(s.tac_failures, 1, "{s:?}");
    assert_eq!(
        rows(
            &client,
            "SELECT terminal || '/' || seq || '/' || reason FROM tac_failures"
        )
        .await,
        vec!["bus-0000/4/mismatch"],
        "the forged record, and only it"
    );
    assert_eq!(
        rows(&client, "SELECT subject || ':' || from_counter || '-' || to_counter FROM counter_findings WHERE finding = 'gap' ORDER BY 1").await,
        vec!["card:1-1", "psam:5-5"]
    );
    assert_eq!(
        rows(&client, "SELECT record || ' by ' || recovered_by || ' after ' || delay_s FROM grey_findings WHERE finding = 'recovered'").await,
        vec!["bus-0000/1/6 by bus-0000/1/7 after 200"],
        "the recovered debit matched with the tap that recovered it"
    );
    assert_eq!(
        rows(
            &client,
            "SELECT card_no || '#' || card_counter FROM grey_findings WHERE finding = 'unsettled'"
        )
        .await,
        vec!["37140000000000000003#1"]
    );
    assert_eq!(
        s.charged_fen,
        6 * 200,
        "the forged record is charged to no one"
    );
}

#[tokio::test]
async fn ride_code_on_two_buses_is_charged_once_and_caps_charge_the_remainder() {
    let Some((mut client, _)) = fresh_db("run_caps").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let code = |account, counter, at| qr_record(1, account, counter, at);
    // Account 1:77 on the 28th: code 1 shown on two buses (a screenshot), then codes 2, 3, 4.
    // Account 1:88: 400 fen on Friday the 27th, the same ISO week, then 2 rides on the 28th.
    let bus0 = vec![
        code(88, 1, DAY_AT - 86_400 + 100),
        code(88, 2, DAY_AT - 86_400 + 200),
        code(77, 1, DAY_AT + 100),
        code(77, 2, DAY_AT + 300),
        code(77, 4, DAY_AT + 700),
        code(88, 3, DAY_AT + 800),
    ];
    // The same code (account, counter, generated_at) as bus 0's, shown 50 s later.
    let mut screenshot = code(77, 1, DAY_AT + 150);
    screenshot.qr = code(77, 1, DAY_AT + 100).qr;
    let bus1 = vec![
        screenshot,
        code(77, 3, DAY_AT + 500),
        code(88, 4, DAY_AT + 900),
    ];
    forwarded(&mut client, tmp.path(), vec![bus0, bus1]).await;
    let s = run::run_day(&mut client, &run_opts("2026-11-28", Some(500), Some(600)))
        .await
        .unwrap();

    let charged = rows(
        &client,
        "SELECT account || ' ' || terminal || '/' || seq || ' ' || charged_fen || coalesce(' dup of ' || duplicate_of, '')
         FROM charges ORDER BY at_unix_s",
    )
    .await;
    assert_eq!(
        charged,
        vec![
            "1:77 bus-0000/3 200",
            "1:77 bus-0001/1 0 dup of bus-0000/1/3",
            "1:77 bus-0000/4 200",
            "1:77 bus-0001/2 100", // crosses the daily cap of 500: the remainder
            "1:77 bus-0000/5 0",
            "1:88 bus-0000/6 200", // 400 on Friday + 200 = the weekly cap of 600
            "1:88 bus-0001/3 0",
        ]
    );
    assert_eq!(s.charged_once_duplicates, 1);
    assert_eq!(
        rows(&client, "SELECT account || ' ' || rides || ' ' || capped_fen || ' ' || rides_capped FROM caps_applied ORDER BY 1").await,
        vec!["1:77 5 300 2", "1:88 2 200 1"]
    );
    // Settlement = the journals' fares less the second claim and what the caps took off.
    let fares: i64 = 9 * 200 - 2 * 200; // the 28th's 7 records
    assert_eq!(s.fare_fen, fares);
    assert_eq!(s.charged_fen, fares - 200 - 300 - 200);
    let by_kind = |k: &str| {
        s.settlement
            .iter()
            .filter(|l| l.kind == k)
            .map(|l| l.charged_fen)
            .sum::<i64>()
    };
    assert_eq!(by_kind("channel"), s.charged_fen);
    assert_eq!(by_kind("route"), s.charged_fen);

    // The same day again: the same result.
    let again = run::run_day(&mut client, &run_opts("2026-11-28", Some(500), Some(600)))
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&again).unwrap(),
        serde_json::to_value(&s).unwrap()
    );
}

#[tokio::test]
async fn settlement_totals_equal_the_fares_in_the_journals_and_files_are_written() {
    let Some((mut client, _)) = fresh_db("run_settlement").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut journals = Vec::new();
    let mut fares_fen: i64 = 0;
    for bus in 0..3u32 {
        let mut j = Vec::new();
        for i in 0..40u32 {
            let at = DAY_AT + i64::from(bus * 1_000 + i * 10);
            let mut r = if i % 4 == 0 {
                qr_record((i % 8 + 1) as u16, u64::from(bus * 100 + i), i, at)
            } else {
                purse(u128::from(bus * 100 + i), 0, bus * 100 + i + 1, at)
            };
            r.route = (bus + 1) as u16;
            r.fare_fen = 100 + i;
            if r.kind == RecordKind::CardPurchase {
                r.card_tx.tac = tac_of(&r);
            }
            fares_fen += i64::from(r.fare_fen);
            j.push(r);
        }
        journals.push(j);
    }
    forwarded(&mut client, tmp.path(), journals).await;
    let s = run::run_day(&mut client, &run_opts("2026-11-28", Some(100_000), None))
        .await
        .unwrap();
    assert_eq!(s.tac_failures, 0, "{s:?}");
    assert_eq!((s.fare_fen, s.charged_fen), (fares_fen, fares_fen));
    let sum = |s: &RunSummary, kinds: &[&str]| -> i64 {
        s.settlement
            .iter()
            .filter(|l| kinds.contains(&l.kind.as_str()))
            .map(|l| l.charged_fen)
            .sum()
    };
    assert_eq!(
        sum(&s, &["issuer", "interop", "channel", "acquirer"]),
        fares_fen
    );
    assert_eq!(sum(&s, &["route"]), fares_fen);

    let out = tmp.path().join("settlement");
    let files = run::write_files(&client, day("2026-11-28"), &out)
        .await
        .unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"issuer-3714.csv".to_string()), "{names:?}");
    assert!(names.contains(&"channel-1.csv".to_string()), "{names:?}");
    assert!(names.contains(&"summary.csv".to_string()));
    let mut in_files: i64 = 0;
    for f in files.iter().filter(|p| !p.ends_with("summary.csv")) {
        let text = std::fs::read_to_string(f).unwrap();
        for line in text.lines().skip(1) {
            in_files += line.split(',').nth(9).unwrap().parse::<i64>().unwrap();
        }
    }
    assert_eq!(
        in_files, fares_fen,
        "every fen in exactly one counterparty's file"
    );
}

#[tokio::test]
async fn demo_clears_its_day_and_prints_the_settlement_summary() {
    let Some((_client, url)) = fresh_db("run_demo").await else {
        return;
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fare-validator"))
        .args([
            "demo",
            "--buses",
            "2",
            "--taps-per-bus",
            "40",
            "--json",
            "--clearing",
            &url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let day: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    let clearing: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    let c = &clearing["clearing"];
    assert_eq!(c["records"], day["accepted"]);
    assert_eq!(
        c["tac_failures"], 0,
        "every purse TAC the simulated cards made verifies"
    );
    assert_eq!(
        c["fare_fen"], day["journal_fare_fen"],
        "every fare in the journals is cleared"
    );
    let settled: i64 = c["settlement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] != "route")
        .map(|l| l["charged_fen"].as_i64().unwrap())
        .sum();
    assert_eq!(settled, c["charged_fen"].as_i64().unwrap());
}

/// A QuickPass tap (kind 4) of the card whose PAN token is `token`, its ATC `atc`.
fn quickpass(token: u64, atc: u16, at_unix_s: i64) -> Record {
    use fare_validator::card::quickpass::{MaskedPan, PanToken};
    let mut r = card_record(0);
    r.kind = RecordKind::Quickpass;
    r.at_unix_s = at_unix_s;
    r.balance_fen = None;
    r.card_no = CardNo::from_u128(0).unwrap();
    r.card_tx = fare_validator::journal::CardTx {
        offline_counter: 0,
        terminal_seq: 0,
        tac: [0; 4],
    };
    r.quickpass = Some(fare_validator::journal::QpTx {
        pan_token: PanToken(token),
        masked_pan: MaskedPan {
            first6: *b"621483",
            last4: *b"0001",
            len: 16,
        },
        pan_seq: 1,
        cid: 0x40,
        atc,
        unpredictable_number: [1, 2, 3, 4],
        cryptogram: [atc as u8; 8],
    });
    r
}

#[tokio::test]
async fn card_counter_wrapping_from_65535_to_0_is_not_a_gap() {
    let Some((mut client, _)) = fresh_db("run_counter_wrap").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let bus0 = vec![
        // Card 1 wraps cleanly: 65534, 65535, 0, 1.
        purse(1, 65_534, 1, DAY_AT + 100),
        purse(1, 65_535, 2, DAY_AT + 200),
        purse(1, 0, 3, DAY_AT + 300),
        purse(1, 1, 4, DAY_AT + 400),
        // Card 2 skips 0 across the wrap: 65535 then 1.
        purse(2, 65_535, 5, DAY_AT + 500),
        purse(2, 1, 6, DAY_AT + 600),
    ];
    forwarded(&mut client, tmp.path(), vec![bus0]).await;
    let s = run::run_day(&mut client, &run_opts("2026-11-28", None, None))
        .await
        .unwrap();
    assert_eq!(
        (s.tac_failures, s.card_duplicates, s.psam_gaps),
        (0, 0, 0),
        "{s:?}"
    );
    assert_eq!(
        rows(&client, "SELECT subject_id || ':' || from_counter || '-' || to_counter FROM counter_findings WHERE finding = 'gap'").await,
        vec!["37140000000000000002:0-0"],
        "65535 → 0 is the counter's next value; 65535 → 1 misses 0"
    );
    assert_eq!(
        rows(&client, "SELECT card_no || '#' || card_counter || ' before ' || terminal_no FROM grey_findings WHERE finding = 'unsettled'").await,
        vec!["37140000000000000002#0 before 000000000123"]
    );
}

#[tokio::test]
async fn quickpass_is_charged_once_capped_and_settled_with_the_acquirer_and_interop_cards_with_their_city(
) {
    let Some((mut client, _)) = fresh_db("run_quickpass_interop").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // QuickPass card 0xA1 taps four times on the 28th; its second tap (ATC 2) is reported by
    // two buses (one card, one cryptogram: charged once). Daily cap 500 fen.
    let mut interop = purse(0, 0, 10, DAY_AT + 50);
    interop.card_no = CardNo::from_u128(31_000_000_000_000_000_042).unwrap();
    interop.card_tx.tac = tac_of(&interop);
    let bus0 = vec![
        interop,
        quickpass(0xA1, 1, DAY_AT + 100),
        quickpass(0xA1, 2, DAY_AT + 200),
        quickpass(0xA1, 4, DAY_AT + 600),
        purse(5, 0, 11, DAY_AT + 700),
    ];
    let bus1 = vec![
        quickpass(0xA1, 2, DAY_AT + 210),
        quickpass(0xA1, 3, DAY_AT + 400),
    ];
    forwarded(&mut client, tmp.path(), vec![bus0, bus1]).await;
    let s = run::run_day(&mut client, &run_opts("2026-11-28", Some(500), None))
        .await
        .unwrap();
    assert_eq!(s.tac_failures, 0, "{s:?}");
    assert_eq!(
        rows(
            &client,
            "SELECT medium || ' ' || terminal || '/' || seq || ' ' || charged_fen || coalesce(' dup of ' || duplicate_of, '')
             FROM charges WHERE medium = 'quickpass' ORDER BY at_unix_s",
        )
        .await,
        vec![
            "quickpass bus-0000/2 200",
            "quickpass bus-0000/3 200",
            "quickpass bus-0001/1 0 dup of bus-0000/1/3",
            "quickpass bus-0001/2 100", // crosses the daily cap of 500: the remainder
            "quickpass bus-0000/4 0",
        ]
    );
    assert_eq!(
        rows(&client, "SELECT account || ' ' || rides || ' ' || capped_fen || ' ' || rides_capped FROM caps_applied").await,
        vec!["00000000000000A1 5 300 2"]
    );
    let line = |kind: &str, party: &str| {
        s.settlement
            .iter()
            .find(|l| l.kind == kind && l.counterparty == party)
            .map(|l| (l.records, l.fare_fen, l.charged_fen))
    };
    assert_eq!(line("acquirer", "test-acquirer"), Some((5, 1_000, 500)));
    assert_eq!(
        line("issuer", "3714"),
        Some((1, 200, 200)),
        "the local card"
    );
    assert_eq!(
        line("interop", "3100"),
        Some((1, 200, 200)),
        "another city's card"
    );
    assert_eq!(line("issuer", "3100"), None);
    assert_eq!(s.charged_fen, 900);
}

// ---- A real forwarder process killed mid-transfer ----------------------------------------

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// How a [`CutProxy`] ends the transfer once `cut_at_bytes` have gone to the server.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cut {
    /// Forward nothing more and wait: the test kills the forwarder (SIGKILL) there.
    Stall,
    /// Close both sockets: the database connection dropped under the forwarder.
    Drop,
}

/// A loopback TCP proxy for one connection to the test server, counting the bytes the client
/// sends: at `cut_at_bytes` (a byte position in the forwarder's stream, so the same point
/// every run) it stalls or drops the connection.
struct CutProxy {
    port: u16,
    /// Bytes forwarded to the server so far.
    sent: Arc<AtomicU64>,
    /// The cut point was reached.
    reached: Arc<AtomicBool>,
}

fn cut_proxy(server: (String, u16), cut_at_bytes: u64, cut: Cut) -> CutProxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = Arc::new(AtomicU64::new(0));
    let reached = Arc::new(AtomicBool::new(false));
    let (s, r) = (sent.clone(), reached.clone());
    std::thread::spawn(move || {
        let Ok((client, _)) = listener.accept() else {
            return;
        };
        drop(listener);
        let upstream = TcpStream::connect((server.0.as_str(), server.1)).unwrap();
        let (mut c_read, mut u_write) =
            (client.try_clone().unwrap(), upstream.try_clone().unwrap());
        let (mut u_read, mut c_write) = (upstream, client);
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut u_read, &mut c_write);
            let _ = c_write.shutdown(Shutdown::Both);
        });
        let mut buf = [0u8; 8_192];
        loop {
            let n = match c_read.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let before = s.load(Ordering::SeqCst);
            let room = (cut_at_bytes - before).min(n as u64) as usize;
            if u_write.write_all(&buf[..room]).is_err() {
                break;
            }
            s.store(before + room as u64, Ordering::SeqCst);
            if room < n || before + room as u64 == cut_at_bytes {
                r.store(true, Ordering::SeqCst);
                if cut == Cut::Stall {
                    // Swallow what the forwarder still writes until it is killed.
                    while matches!(c_read.read(&mut buf), Ok(k) if k > 0) {}
                }
                break;
            }
        }
        let _ = u_write.shutdown(Shutdown::Both);
        let _ = c_read.shutdown(Shutdown::Both);
    });
    CutProxy {
        port,
        sent,
        reached,
    }
}

/// The host and port of a postgres:// URL, and the URL with another port.
fn host_port(url: &str) -> (String, u16) {
    let rest = url.split_once('@').unwrap().1;
    let hp = rest.split_once('/').unwrap().0;
    let (h, p) = hp.rsplit_once(':').unwrap();
    (h.to_string(), p.parse().unwrap())
}

fn with_port(url: &str, port: u16) -> String {
    let (h, p) = host_port(url);
    url.replacen(&format!("{h}:{p}"), &format!("127.0.0.1:{port}"), 1)
}

fn forwarder(db: &std::path::Path, url: &str) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_fare-validator"));
    c.args([
        "clearing", "forward", "--depot", "depot-1", "--batch", "100",
    ])
    .arg("--db")
    .arg(db)
    .args(["--to", url])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    c
}

/// Records stored and the sum of this depot's marks: equal when every committed batch
/// committed its marks with it (journals hold seqs from 1 without holes).
async fn stored_and_marked(client: &Client) -> (i64, i64) {
    let stored = count(client, "SELECT count(*) FROM records").await;
    let marked = count(
        client,
        "SELECT coalesce(sum(through_seq), 0)::bigint FROM forward_marks WHERE depot = 'depot-1'",
    )
    .await;
    (stored, marked)
}

/// The forwarder binary cut at several byte positions of its transfer (SIGKILL while its
/// stream is stalled there; or its connection dropped there), then started again: every
/// record is stored exactly once, and the restart sends only what was not committed.
#[tokio::test]
async fn forwarder_process_killed_or_cut_off_mid_transfer_restarts_exactly_once() {
    let Some((_client, url)) = fresh_db("crash_measure").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (_store, n) = depot(tmp.path(), 400);
    let db = tmp.path().join("depot.db");
    let server = host_port(&url);

    // The whole transfer's length in bytes, through a proxy that never cuts.
    let whole = cut_proxy(server.clone(), u64::MAX, Cut::Drop);
    let out = forwarder(&db, &with_port(&url, whole.port))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let total_bytes = whole.sent.load(Ordering::SeqCst);
    assert!(total_bytes > n * 96, "{total_bytes} bytes for {n} records");

    let mut committed_at = Vec::new();
    for (i, percent) in [5u64, 30, 55, 80, 97].into_iter().enumerate() {
        for cut in [Cut::Stall, Cut::Drop] {
            let name = format!(
                "crash_{i}_{}",
                if cut == Cut::Stall { "kill" } else { "drop" }
            );
            let (client, case_url) = fresh_db(&name).await.unwrap();
            let at = total_bytes * percent / 100;
            let proxy = cut_proxy(server.clone(), at, cut);
            let mut child = forwarder(&db, &with_port(&case_url, proxy.port))
                .spawn()
                .unwrap();
            let status = loop {
                if cut == Cut::Stall && proxy.reached.load(Ordering::SeqCst) {
                    child.kill().unwrap(); // SIGKILL
                    break child.wait().unwrap();
                }
                if let Some(s) = child.try_wait().unwrap() {
                    break s;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            };
            assert!(
                proxy.reached.load(Ordering::SeqCst),
                "{name}: cut at {at} of {total_bytes}"
            );
            assert!(!status.success(), "{name}: the forwarder did not finish");

            // Whatever the point: whole batches with their marks, or nothing.
            let (stored, marked) = stored_and_marked(&client).await;
            assert_eq!(stored, marked, "{name}: records and marks commit together");
            assert!((stored as u64) < n, "{name}: cut before the end");
            assert_eq!(distinct_keys(&client).await, (stored, stored));

            let out = forwarder(&db, &case_url).output().unwrap();
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(report["records_new"], n - stored as u64, "{name}: {report}");
            assert_eq!(
                report["records_sent"],
                n - stored as u64,
                "{name}: resumes at the marks"
            );
            assert_eq!(distinct_keys(&client).await, (n as i64, n as i64), "{name}");
            committed_at.push(stored);
        }
    }
    eprintln!("records committed at the cuts (kill, drop at each point): {committed_at:?}");
    // The cut points fall in different batches: before the first commit and after several.
    assert_eq!(committed_at[0], 0, "{committed_at:?}");
    assert!(
        committed_at.windows(2).all(|w| w[0] <= w[1]),
        "{committed_at:?}"
    );
    assert!(
        *committed_at.last().unwrap() >= (n as i64) / 2,
        "{committed_at:?}"
    );
}
