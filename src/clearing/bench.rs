//! `fare-validator bench clearing --records N`: a city's day forwarded and cleared on the
//! PostgreSQL server at `--to` (or `FARE_VALIDATOR_PG_URL`), beside the naive ways measured in
//! the same run, so that each figure is a ratio (docs/clearing.md, "Performance").
//!
//! 1. A depot store (SQLite, in a temporary folder) is filled with N records of one service
//!    day, seeded: [`BENCH_TERMINALS`] buses, purse purchases with true TACs (a few forged, a
//!    few card counters skipped), ride codes (a few shown twice), QuickPass taps. Not timed.
//! 2. **Forwarding**: [`forward::forward`] into a fresh database, timed end to end (SQLite read
//!    and decode, binary COPY, insert into the day's partition, marks, commits): records/s.
//! 3. **Naive forwarding**: the first `--naive-records` of the same records into another fresh
//!    database, one `INSERT ... ON CONFLICT DO NOTHING` per record, each its own transaction
//!    (what a row-at-a-time client does): records/s.
//! 4. **The clearing run**: [`run::run_day`] on the day, every step, timed per step.
//! 5. **Naive clearing**: the purse records streamed to the client, the TAC of each computed
//!    there (its card's key derived per record) and its card's previous counter fetched with
//!    one query per record: records/s, beside the run's TAC and counter steps on all records.
//!
//! The load average is read before and after: the machine may be shared.

use std::collections::HashMap;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use time::Date;
use tokio_postgres::Client;

use super::forward::{self, ForwardOptions, Row};
use super::run::{self, RunOptions};
use super::{schema, ClearingError};
use crate::card::crypto::{self, PurchaseData};
use crate::card::quickpass::{MaskedPan, PanToken};
use crate::card::sim::TestKeys;
use crate::clock::Timestamp;
use crate::depot::store::Received;
use crate::depot::Store;
use crate::journal::{CardTx, QpTx, QrTx, Record, RecordKind};
use crate::types::{AccountId, CardNo, RiderCategory};

/// Buses whose journals make the day.
pub const BENCH_TERMINALS: usize = 500;
/// Records stored into the depot per SQLite transaction while the day is made.
const STORE_CHUNK_RECORDS: usize = 10_000;
/// The service day of the bench: 2026-11-28, boardings from 05:00 to 23:00 +08:00.
const DAY_START_UNIX_S: i64 = 1_795_824_000 - 3 * 3_600;
const DAY_SPAN_S: i64 = 18 * 3_600;
const UTC_OFFSET_MIN: i16 = 480;
/// One record in this many is forged (a TAC bit flipped), one card ride in this many skips
/// its card's counter (a debit with no record), one ride code in this many is shown again on
/// another bus.
const FORGED_ONE_IN: u32 = 10_000;
const COUNTER_SKIP_ONE_IN: u32 = 10_000;
const RIDE_CODE_SHOWN_TWICE_ONE_IN: u32 = 1_000;
const FARE_FEN: u32 = 200;
/// The database names made (dropped first) on the server for the run.
const BENCH_DB: &str = "fv_bench_clearing";
const NAIVE_DB: &str = "fv_bench_clearing_naive";

#[derive(clap::Args, Debug, Clone)]
pub struct ClearingBenchArgs {
    /// Records in the day.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: usize,
    /// Records the naive ways are timed on (a sample: they are slow), at most --records.
    #[arg(long, default_value_t = 20_000)]
    pub naive_records: usize,
    /// The PostgreSQL server, postgres://USER@HOST:PORT/DB (default: $FARE_VALIDATOR_PG_URL).
    /// Two databases are made there, dropped first: fv_bench_clearing and
    /// fv_bench_clearing_naive.
    #[arg(long)]
    pub to: Option<String>,
    /// Records in one forwarding transaction.
    #[arg(long, default_value_t = forward::BATCH_RECORDS_MAX_DEFAULT)]
    pub batch: usize,
    /// Seed of the generated day.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print one JSON object (otherwise pretty JSON).
    #[arg(long)]
    pub json: bool,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ClearingBenchReport {
    pub records: usize,
    pub terminals: usize,
    pub purse_records: usize,
    /// 1-, 5- and 15-minute load averages before and after the run.
    pub load_before: String,
    pub load_after: String,
    pub generate_s: f64,
    pub forward_s: f64,
    pub forward_records_per_s: f64,
    pub forward_batches: u64,
    pub naive_forward_records: usize,
    pub naive_forward_records_per_s: f64,
    /// Ours over the naive way, records/s against records/s.
    pub forward_ratio: f64,
    /// The whole clearing run of the day, every step, one transaction.
    pub clear_day_s: f64,
    /// Each step's seconds, in order.
    pub clear_steps_s: Vec<(String, f64)>,
    /// Purse records per second through the run's TAC and counter steps.
    pub clear_tac_counters_records_per_s: f64,
    pub naive_clear_records: usize,
    /// Purse records per second through the client's TAC and previous-counter loop.
    pub naive_clear_records_per_s: f64,
    pub clear_ratio: f64,
    /// What the run found: TAC failures, gaps, duplicates charged once.
    pub tac_failures: i64,
    pub card_gaps: i64,
    pub psam_gaps: i64,
    pub charged_once_duplicates: i64,
    pub charged_fen: i64,
    /// The targets on this machine: forwarding ≥ 100,000 records/s, a
    /// 1,000,000-record day cleared in under 60 s.
    pub forward_target_met: bool,
    pub clear_target_met: Option<bool>,
}

/// The bench's day.
pub fn bench_day() -> Date {
    Date::from_calendar_date(2026, time::Month::November, 28).expect("a valid date")
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The TAC the simulated card would make for `r` under `master` (src/card/crypto.rs).
pub fn purse_tac(master: &crypto::Key16, r: &Record) -> [u8; 4] {
    let dtk = crypto::diversify(master, r.card_no.serial_tail8());
    let at = Timestamp {
        unix_s: r.at_unix_s,
        utc_offset_s: i32::from(r.utc_offset_min) * 60,
    };
    crypto::tac(
        &dtk,
        &PurchaseData {
            amount_fen: r.fare_fen,
            tx_type: 0x09,
            terminal_no: r.terminal_no,
            terminal_seq: r.card_tx.terminal_seq,
            datetime: at.local_bcd(),
        },
    )
}

/// The bench's terminal names.
pub fn terminal_name(t: usize) -> String {
    format!("bench-{t:04}")
}

/// Per terminal, `n` records of the bench day in boarding order, seeded: about 75 % purse
/// purchases (true TACs but one in [`FORGED_ONE_IN`]; card counters in order but one skip in
/// [`COUNTER_SKIP_ONE_IN`]), 20 % ride codes (one in [`RIDE_CODE_SHOWN_TWICE_ONE_IN`] the
/// code shown just before on another bus), 5 % QuickPass. Seqs from 1.
pub fn generate_day(n: usize, seed: u64) -> Vec<Vec<Record>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let master = TestKeys::default().tac_master;
    let cards = (n / 4).max(1);
    let accounts = (n / 20).max(1);
    let qp_cards = (n / 50).max(1);
    let mut card_counter: HashMap<usize, u16> = HashMap::new();
    let mut qr_counter: HashMap<usize, u32> = HashMap::new();
    let mut atc: HashMap<usize, u16> = HashMap::new();
    let mut psam_seq = vec![0u32; BENCH_TERMINALS];
    let mut journals: Vec<Vec<Record>> = vec![Vec::new(); BENCH_TERMINALS];
    let mut last_qr: Option<QrTx> = None;
    for i in 0..n {
        let t = rng.gen_range(0..BENCH_TERMINALS);
        let at_unix_s = DAY_START_UNIX_S + (i as i64 * DAY_SPAN_S) / n as i64;
        let mut terminal_no = [0u8; 6];
        terminal_no[2..].copy_from_slice(&(t as u32 + 1).to_be_bytes());
        let mut r = Record {
            seq: journals[t].len() as u64 + 1,
            kind: RecordKind::CardPurchase,
            at_unix_s,
            utc_offset_min: UTC_OFFSET_MIN,
            route: (t % 40) as u16 + 1,
            category: RiderCategory::Adult,
            fare_fen: FARE_FEN,
            balance_fen: None,
            card_no: CardNo::from_u128(0).expect("zero is a card number"),
            card_tx: CardTx {
                offline_counter: 0,
                terminal_seq: 0,
                tac: [0; 4],
            },
            qr: None,
            quickpass: None,
            terminal_no,
            rule: crate::fare::FareRule::BaseFare,
        };
        let roll = rng.gen_range(0..100u32);
        if roll < 75 {
            let card = rng.gen_range(0..cards);
            // One card in ten is another city's (interop), by its number's prefix.
            let prefix: u128 = if card % 10 == 0 { 3_100 } else { 3_714 };
            r.card_no =
                CardNo::from_u128(prefix * 10u128.pow(16) + card as u128).expect("20 digits");
            let c = card_counter.entry(card).or_insert(0);
            if rng.gen_range(0..COUNTER_SKIP_ONE_IN) == 0 {
                *c = c.wrapping_add(1);
            }
            r.card_tx.offline_counter = *c;
            *c = c.wrapping_add(1);
            psam_seq[t] += 1;
            r.card_tx.terminal_seq = psam_seq[t];
            r.balance_fen = Some(10_000);
            r.card_tx.tac = purse_tac(&master, &r);
            if rng.gen_range(0..FORGED_ONE_IN) == 0 {
                r.card_tx.tac[0] ^= 0x80;
            }
        } else if roll < 95 {
            r.kind = RecordKind::QrRide;
            let qr = match last_qr {
                Some(q) if rng.gen_range(0..RIDE_CODE_SHOWN_TWICE_ONE_IN) == 0 => q,
                _ => {
                    let account = rng.gen_range(0..accounts);
                    let c = qr_counter.entry(account).or_insert(0);
                    *c += 1;
                    QrTx {
                        account: AccountId {
                            channel: (account % 8) as u16 + 1,
                            account: account as u64 + 1,
                        },
                        counter: *c,
                        generated_at: (at_unix_s - 5) as u32,
                        cert_ref: None,
                    }
                }
            };
            last_qr = Some(qr);
            r.qr = Some(qr);
        } else {
            r.kind = RecordKind::Quickpass;
            let card = rng.gen_range(0..qp_cards);
            let a = atc.entry(card).or_insert(0);
            *a = a.wrapping_add(1);
            let last4 = format!("{:04}", card % 10_000);
            let mut l4 = [0u8; 4];
            l4.copy_from_slice(last4.as_bytes());
            r.quickpass = Some(QpTx {
                pan_token: PanToken(card as u64 + 1),
                masked_pan: MaskedPan {
                    first6: *b"621483",
                    last4: l4,
                    len: 16,
                },
                pan_seq: 1,
                cid: 0x40,
                atc: *a,
                unpredictable_number: (i as u32).to_be_bytes(),
                cryptogram: (i as u64).to_be_bytes(),
            });
        }
        journals[t].push(r);
    }
    journals
}

/// Store `journals` into a depot store at `path` (epoch 1 each), as uploads would.
pub fn fill_depot(path: &std::path::Path, journals: &[Vec<Record>]) -> Result<Store, String> {
    let mut store = Store::open(path).map_err(|e| e.to_string())?;
    let now = DAY_START_UNIX_S + 2 * 86_400;
    for (t, records) in journals.iter().enumerate() {
        for chunk in records.chunks(STORE_CHUNK_RECORDS) {
            let received: Vec<Received> = chunk
                .iter()
                .map(|r| Received {
                    record: *r,
                    raw: r.encode(),
                })
                .collect();
            let from = chunk.first().map_or(1, |r| r.seq);
            let s = store
                .store_batch_at(&terminal_name(t), 1, from, &received, now)
                .map_err(|e| e.to_string())?;
            if s.ack.refused != 0 {
                return Err(format!("{} generated records refused", s.ack.refused));
            }
        }
    }
    Ok(store)
}

/// A fresh, migrated database `db` on the server of `base_url`.
async fn fresh_db(base_url: &str, db: &str) -> Result<Client, ClearingError> {
    let admin = super::connect(base_url).await?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await?;
    let server = base_url.rsplit_once('/').map_or(base_url, |(s, _)| s);
    let mut client = super::connect(&format!("{server}/{db}")).await?;
    schema::migrate(&mut client).await?;
    Ok(client)
}

/// Row-by-row forwarding of the first `max` records: one INSERT per record, each its own
/// transaction (autocommit). Returns the records sent.
async fn naive_forward(store: &Store, client: &Client, max: usize) -> Result<usize, ClearingError> {
    let batch = forward::load_batch(store, &HashMap::new(), max)?;
    client
        .execute("SELECT clearing_ensure_day($1)", &[&bench_day()])
        .await?;
    let placeholders: Vec<String> = (1..=forward::COLUMN_TYPES.len())
        .map(|i| format!("${i}"))
        .collect();
    let insert = client
        .prepare_typed(
            &format!(
                "INSERT INTO records ({}) VALUES ({}) ON CONFLICT DO NOTHING",
                forward::COLUMNS,
                placeholders.join(", ")
            ),
            &forward::COLUMN_TYPES,
        )
        .await?;
    let mut sent = 0;
    for part in &batch.parts {
        for (rec, raw) in &part.records {
            let row = Row::of("bench", &part.terminal, part.epoch, rec, raw)?;
            client.execute(&insert, &row.values()).await?;
            sent += 1;
        }
    }
    Ok(sent)
}

/// The naive clearing loop over the first `max` purse records of the day: the TAC computed
/// in the client (the card's key derived for each record), the card's previous counter read
/// with one query per record. Returns (records checked, TAC failures, gaps).
async fn naive_clear(
    client: &Client,
    day: Date,
    max: usize,
) -> Result<(usize, usize, usize), ClearingError> {
    let master = TestKeys::default().tac_master;
    let rows = client
        .query(
            "SELECT raw FROM records WHERE service_day = $1 AND kind IN (1, 2)
             ORDER BY terminal, epoch, seq LIMIT $2",
            &[&day, &(max as i64)],
        )
        .await?;
    let previous = client
        .prepare(
            "SELECT max(card_counter) FROM records
             WHERE card_no = $1 AND kind IN (1, 2) AND card_counter < $2",
        )
        .await?;
    let (mut failures, mut gaps) = (0, 0);
    for row in &rows {
        let raw: Vec<u8> = row.get(0);
        let Some(rec) = <&[u8; crate::journal::record::RECORD_BYTES]>::try_from(raw.as_slice())
            .ok()
            .and_then(|b| Record::decode(b).ok())
        else {
            continue;
        };
        if purse_tac(&master, &rec) != rec.card_tx.tac {
            failures += 1;
        }
        let card = rec.card_no.to_string();
        let counter = i32::from(rec.card_tx.offline_counter);
        let prev: Option<i32> = client
            .query_one(&previous, &[&card, &counter])
            .await?
            .get(0);
        if prev.is_some_and(|p| p + 1 != counter) {
            gaps += 1;
        }
    }
    Ok((rows.len(), failures, gaps))
}

fn per_s(n: usize, s: f64) -> f64 {
    if s > 0.0 {
        n as f64 / s
    } else {
        0.0
    }
}

/// One bench run (see the module doc).
pub fn run_bench(args: &ClearingBenchArgs) -> Result<ClearingBenchReport, String> {
    let url = match &args.to {
        Some(u) => u.clone(),
        None => std::env::var(super::PG_URL_VAR)
            .map_err(|_| format!("--to URL or {} needed", super::PG_URL_VAR))?,
    };
    if args.records == 0 || args.batch == 0 {
        return Err("--records and --batch must be at least 1".to_string());
    }
    let naive_n = args.naive_records.min(args.records);
    let load_before = load_average();
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let began = Instant::now();
    let journals = generate_day(args.records, args.seed);
    let purse_records = journals
        .iter()
        .flatten()
        .filter(|r| r.kind == RecordKind::CardPurchase)
        .count();
    let store = fill_depot(&tmp.path().join("depot.db"), &journals)?;
    drop(journals);
    let generate_s = began.elapsed().as_secs_f64();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let e = |e: ClearingError| e.to_string();
        let mut client = fresh_db(&url, BENCH_DB).await.map_err(e)?;
        let opts = ForwardOptions {
            batch_records_max: args.batch,
            ..ForwardOptions::new("bench")
        };
        let t = Instant::now();
        let fwd = forward::forward(&store, &mut client, &opts)
            .await
            .map_err(e)?;
        let forward_s = t.elapsed().as_secs_f64();

        let naive = fresh_db(&url, NAIVE_DB).await.map_err(e)?;
        let t = Instant::now();
        let naive_sent = naive_forward(&store, &naive, naive_n).await.map_err(e)?;
        let naive_forward_s = t.elapsed().as_secs_f64();

        let run_opts = RunOptions {
            day: bench_day(),
            issuer_keys: run::IssuerKeys::from_json(include_str!(
                "../../fixtures/issuer-tac-keys.json"
            ))?,
            daily_cap_fen: Some(1_000),
            weekly_cap_fen: Some(5_000),
            acquirer: "quickpass-acquirer".to_string(),
            local_card_prefixes: vec![run::LOCAL_CARD_PREFIX.to_string()],
        };
        let t = Instant::now();
        let (summary, steps) = run::run_day_timed(&mut client, &run_opts)
            .await
            .map_err(e)?;
        let clear_day_s = t.elapsed().as_secs_f64();
        let tac_counters_s: f64 = steps
            .iter()
            .filter(|(s, _)| matches!(*s, "tac" | "counters_card" | "counters_psam"))
            .map(|(_, s)| s)
            .sum();

        // The naive loop reads the day forwarded by ours (same records, same database).
        let t = Instant::now();
        let (naive_checked, _, _) = naive_clear(&client, bench_day(), naive_n)
            .await
            .map_err(e)?;
        let naive_clear_s = t.elapsed().as_secs_f64();
        drop(naive);
        let admin = super::connect(&url).await.map_err(e)?;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {NAIVE_DB} WITH (FORCE)"))
            .await
            .map_err(|x| x.to_string())?;

        let forward_records_per_s = per_s(args.records, forward_s);
        let naive_forward_records_per_s = per_s(naive_sent, naive_forward_s);
        let clear_tac_counters_records_per_s = per_s(purse_records, tac_counters_s);
        let naive_clear_records_per_s = per_s(naive_checked, naive_clear_s);
        Ok(ClearingBenchReport {
            records: args.records,
            terminals: BENCH_TERMINALS,
            purse_records,
            load_before,
            load_after: load_average(),
            generate_s,
            forward_s,
            forward_records_per_s,
            forward_batches: fwd.batches,
            naive_forward_records: naive_sent,
            naive_forward_records_per_s,
            forward_ratio: forward_records_per_s
                / naive_forward_records_per_s.max(f64::MIN_POSITIVE),
            clear_day_s,
            clear_steps_s: steps.into_iter().map(|(s, t)| (s.to_string(), t)).collect(),
            clear_tac_counters_records_per_s,
            naive_clear_records: naive_checked,
            naive_clear_records_per_s,
            clear_ratio: clear_tac_counters_records_per_s
                / naive_clear_records_per_s.max(f64::MIN_POSITIVE),
            tac_failures: summary.tac_failures,
            card_gaps: summary.card_gaps,
            psam_gaps: summary.psam_gaps,
            charged_once_duplicates: summary.charged_once_duplicates,
            charged_fen: summary.charged_fen,
            forward_target_met: forward_records_per_s >= 100_000.0,
            clear_target_met: (args.records >= 1_000_000).then_some(clear_day_s < 60.0),
        })
    })
}

/// `fare-validator bench clearing`.
pub fn run(args: &ClearingBenchArgs) -> Result<(), String> {
    let r = run_bench(args)?;
    let text = if args.json {
        serde_json::to_string(&r)
    } else {
        serde_json::to_string_pretty(&r)
    };
    println!("{}", text.map_err(|e| e.to_string())?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_day_is_seeded_and_its_tacs_verify_but_the_forged() {
        let a = generate_day(5_000, 7);
        let b = generate_day(5_000, 7);
        assert_eq!(a, b, "same seed, same day");
        let master = TestKeys::default().tac_master;
        let all: Vec<&Record> = a.iter().flatten().collect();
        assert_eq!(all.len(), 5_000);
        let purse: Vec<&&Record> = all
            .iter()
            .filter(|r| r.kind == RecordKind::CardPurchase)
            .collect();
        let bad = purse
            .iter()
            .filter(|r| purse_tac(&master, r) != r.card_tx.tac)
            .count();
        assert!(bad < purse.len() / 100, "{bad} of {}", purse.len());
        for j in &a {
            for (i, r) in j.iter().enumerate() {
                assert_eq!(r.seq, i as u64 + 1);
                assert_eq!(r.encode().len(), crate::journal::record::RECORD_BYTES);
            }
        }
    }
}
