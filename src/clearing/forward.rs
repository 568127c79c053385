//! Forwarding: the records a depot stored, into the clearing database, exactly once.
//!
//! Each batch is one transaction on the clearing database:
//!
//! 1. read this depot's marks (`forward_marks`: per journal, the highest seq forwarded);
//! 2. take at most [`ForwardOptions::batch_records_max`] records above the marks from the
//!    depot's store, journal after journal;
//! 3. `COPY forward_stage FROM STDIN BINARY` into a temporary table dropped at commit;
//! 4. make the service days' partitions (`clearing_ensure_day`), then
//!    `INSERT INTO records SELECT ... FROM forward_stage ON CONFLICT DO NOTHING`;
//! 5. move the marks to the batch's last seqs, and commit.
//!
//! Records and marks commit together, so a forwarder stopped anywhere, or a server that
//! dies anywhere, leaves either the whole batch and its marks or neither: the next run starts
//! from the marks. The key (terminal, epoch, seq) makes a record sent twice (two depots that
//! hold the same journal, a mark lost with a restored database, a commit whose answer was
//! lost) stored once. A journal filled below its mark later (a gap closed after forwarding)
//! is sent again with [`ForwardOptions::from_start`]; nothing is duplicated.

use std::collections::HashMap;

use time::{Date, OffsetDateTime};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Transaction};

use super::ClearingError;
use crate::depot::Store;
use crate::journal::record::{hex, Record, RECORD_BYTES};

/// Records in one forwarding transaction, by default: big enough that COPY dominates, small
/// enough that a batch lost to a crash is quickly sent again.
pub const BATCH_RECORDS_MAX_DEFAULT: usize = 20_000;
/// A service day starts at 04:00 local time: a ride at 00:30 belongs to the day before, as
/// the night buses' duty does.
pub const SERVICE_DAY_START_LOCAL_S: i64 = 4 * 3600;

const SECONDS_PER_DAY: i64 = 86_400;

/// The staged columns, in COPY order (`records` less `forwarded_at`).
pub(crate) const COLUMNS: &str =
    "service_day, terminal, epoch, seq, depot, kind, category, at_unix_s, \
    utc_offset_min, route, fare_fen, balance_fen, card_no, card_counter, psam_seq, tac, \
    terminal_no, channel, account, qr_counter, qr_generated_at, pan_token, atc, cryptogram, raw";

pub(crate) const COLUMN_TYPES: [Type; 25] = [
    Type::DATE,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::INT2,
    Type::INT2,
    Type::INT8,
    Type::INT2,
    Type::INT4,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::INT4,
    Type::INT8,
    Type::BYTEA,
    Type::TEXT,
    Type::INT4,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::BYTEA,
    Type::INT4,
    Type::BYTEA,
    Type::BYTEA,
];

/// How a depot forwards.
#[derive(Clone, Debug)]
pub struct ForwardOptions {
    /// The depot's name in the clearing database (its marks are its own).
    pub depot: String,
    /// Records in one transaction.
    pub batch_records_max: usize,
    /// Ignore the marks and send every record again (stored once all the same).
    pub from_start: bool,
}

impl ForwardOptions {
    pub fn new(depot: &str) -> ForwardOptions {
        ForwardOptions {
            depot: depot.to_string(),
            batch_records_max: BATCH_RECORDS_MAX_DEFAULT,
            from_start: false,
        }
    }
}

/// What a forwarding run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ForwardReport {
    /// Transactions committed.
    pub batches: u64,
    /// Records sent with COPY.
    pub records_sent: u64,
    /// Records the clearing database did not hold before.
    pub records_new: u64,
}

/// Records of one journal in a batch, and the mark they bring it to.
#[derive(Clone, Debug)]
pub struct JournalPart {
    pub terminal: String,
    pub epoch: u64,
    pub through_seq: u64,
    pub records: Vec<(Record, Vec<u8>)>,
}

/// One transaction's worth of records.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub parts: Vec<JournalPart>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.records.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
}

/// Forward every record of `store` the clearing database lacks, batch after batch, until
/// none is left. Safe to run again at any time, and after a crash of either side.
pub async fn forward(
    store: &Store,
    client: &mut Client,
    opts: &ForwardOptions,
) -> Result<ForwardReport, ClearingError> {
    let mut report = ForwardReport::default();
    let mut restart: Option<HashMap<(String, u64), u64>> = opts.from_start.then(HashMap::new);
    loop {
        let tx = client.transaction().await?;
        let marks = match &restart {
            Some(m) => m.clone(),
            None => read_marks(&tx, &opts.depot).await?,
        };
        let batch = load_batch(store, &marks, opts.batch_records_max)?;
        if batch.is_empty() {
            tx.rollback().await?;
            return Ok(report);
        }
        let new = stage_batch(&tx, &opts.depot, &batch).await?;
        set_marks(&tx, &opts.depot, &batch).await?;
        tx.commit().await?;
        if let Some(m) = &mut restart {
            for p in &batch.parts {
                m.insert((p.terminal.clone(), p.epoch), p.through_seq);
            }
        }
        report.batches += 1;
        report.records_sent += batch.len() as u64;
        report.records_new += new;
        tracing::debug!(records = batch.len(), new, "clearing: batch forwarded");
    }
}

/// This depot's marks: (terminal, epoch) → highest seq forwarded.
pub async fn read_marks(
    tx: &Transaction<'_>,
    depot: &str,
) -> Result<HashMap<(String, u64), u64>, ClearingError> {
    let rows = tx
        .query(
            "SELECT terminal, epoch, through_seq FROM forward_marks WHERE depot = $1",
            &[&depot],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let epoch: i64 = r.get(1);
            let seq: i64 = r.get(2);
            ((r.get::<_, String>(0), epoch as u64), seq as u64)
        })
        .collect())
}

/// At most `max` records of `store` above `marks`, journal after journal in (terminal,
/// epoch) order. A stored record that does not decode is an error naming it: the depot
/// checked it at ingest, so its store is damaged.
pub fn load_batch(
    store: &Store,
    marks: &HashMap<(String, u64), u64>,
    max: usize,
) -> Result<Batch, ClearingError> {
    let mut batch = Batch::default();
    let mut room = max;
    for (terminal, epoch) in store.journal_ids()? {
        if room == 0 {
            break;
        }
        let after = marks.get(&(terminal.clone(), epoch)).copied().unwrap_or(0);
        let raws = store.raw_records_after(&terminal, epoch, after, room)?;
        let Some(&(through_seq, _)) = raws.last() else {
            continue;
        };
        let mut records = Vec::with_capacity(raws.len());
        for (seq, raw) in raws {
            let rec = <&[u8; RECORD_BYTES]>::try_from(raw.as_slice())
                .map_err(|_| format!("{} bytes, not {RECORD_BYTES}", raw.len()))
                .and_then(|b| Record::decode(b).map_err(|e| e.to_string()))
                .map_err(|why| ClearingError::Record {
                    terminal: terminal.clone(),
                    epoch,
                    seq,
                    why,
                })?;
            records.push((rec, raw));
        }
        room -= records.len();
        batch.parts.push(JournalPart {
            terminal,
            epoch,
            through_seq,
            records,
        });
    }
    Ok(batch)
}

/// Store `batch` in `records`, in `tx`, each record once. Returns the records new to the
/// clearing database.
///
/// The common case, a batch none of whose records is there yet, is one binary COPY straight
/// into the day partitions, under a savepoint. When a record is already there (a batch sent
/// again: a commit whose answer was lost, marks from an older backup, `from_start`, two
/// depots holding one journal) the COPY fails on the key, the savepoint is rolled back, and
/// the batch goes the careful way: COPY into a staging table dropped at commit, then
/// `INSERT ... SELECT ... ON CONFLICT DO NOTHING`.
pub async fn stage_batch(
    tx: &Transaction<'_>,
    depot: &str,
    batch: &Batch,
) -> Result<u64, ClearingError> {
    let mut days: Vec<Date> = Vec::new();
    for part in &batch.parts {
        for (rec, _) in &part.records {
            let day = service_day(rec.at_unix_s, rec.utc_offset_min).ok_or_else(|| {
                ClearingError::Record {
                    terminal: part.terminal.clone(),
                    epoch: part.epoch,
                    seq: rec.seq,
                    why: format!("time {} out of range", rec.at_unix_s),
                }
            })?;
            if !days.contains(&day) {
                days.push(day);
            }
        }
    }
    tx.execute(
        "SELECT clearing_ensure_day(d) FROM unnest($1::date[]) d",
        &[&days],
    )
    .await?;
    tx.batch_execute("SAVEPOINT forward_direct").await?;
    match copy_batch(tx, "records", depot, batch).await {
        Ok(n) => {
            tx.batch_execute("RELEASE SAVEPOINT forward_direct").await?;
            return Ok(n);
        }
        Err(ClearingError::Pg(e))
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
        {
            tx.batch_execute("ROLLBACK TO SAVEPOINT forward_direct")
                .await?;
            tracing::debug!("clearing: batch holds stored records; merged by key");
        }
        Err(e) => return Err(e),
    }
    tx.batch_execute(
        "CREATE TEMP TABLE IF NOT EXISTS forward_stage
             (LIKE records INCLUDING DEFAULTS) ON COMMIT DROP",
    )
    .await?;
    copy_batch(tx, "forward_stage", depot, batch).await?;
    let new = tx
        .execute(
            &format!(
                "INSERT INTO records ({COLUMNS}) SELECT {COLUMNS} FROM forward_stage
                 ON CONFLICT DO NOTHING"
            ),
            &[],
        )
        .await?;
    Ok(new)
}

/// Binary COPY of `batch` into `table` (`records` or `forward_stage`: names from this file
/// only). Returns the rows copied.
async fn copy_batch(
    tx: &Transaction<'_>,
    table: &str,
    depot: &str,
    batch: &Batch,
) -> Result<u64, ClearingError> {
    let sink = tx
        .copy_in(&format!(
            "COPY {table} ({COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &COLUMN_TYPES);
    let mut writer = std::pin::pin!(writer);
    for part in &batch.parts {
        for (rec, raw) in &part.records {
            let row = Row::of(depot, &part.terminal, part.epoch, rec, raw)?;
            writer.as_mut().write(&row.values()).await?;
        }
    }
    Ok(writer.finish().await?)
}

/// Move this depot's marks to the batch's last seqs (never back).
pub async fn set_marks(
    tx: &Transaction<'_>,
    depot: &str,
    batch: &Batch,
) -> Result<(), ClearingError> {
    let st = tx
        .prepare(
            "INSERT INTO forward_marks(depot, terminal, epoch, through_seq) VALUES ($1, $2, $3, $4)
             ON CONFLICT (depot, terminal, epoch) DO UPDATE
                 SET through_seq = GREATEST(forward_marks.through_seq, EXCLUDED.through_seq),
                     updated_at = now()",
        )
        .await?;
    for p in &batch.parts {
        let epoch = p.epoch as i64;
        let seq = p.through_seq as i64;
        tx.execute(&st, &[&depot, &p.terminal, &epoch, &seq])
            .await?;
    }
    Ok(())
}

/// The service day of a ride at `at_unix_s` on a clock `utc_offset_min` ahead of UTC.
pub fn service_day(at_unix_s: i64, utc_offset_min: i16) -> Option<Date> {
    let local_s = at_unix_s
        .checked_add(i64::from(utc_offset_min) * 60)?
        .checked_sub(SERVICE_DAY_START_LOCAL_S)?;
    let midnight = local_s.div_euclid(SECONDS_PER_DAY) * SECONDS_PER_DAY;
    OffsetDateTime::from_unix_timestamp(midnight)
        .ok()
        .map(|t| t.date())
}

/// One record as the columns of `records`.
pub(crate) struct Row<'a> {
    service_day: Date,
    terminal: &'a str,
    depot: &'a str,
    epoch: i64,
    seq: i64,
    kind: i16,
    category: i16,
    at_unix_s: i64,
    utc_offset_min: i16,
    route: i32,
    fare_fen: i64,
    balance_fen: Option<i64>,
    card_no: String,
    card_counter: i32,
    psam_seq: i64,
    tac: &'a [u8],
    terminal_no: String,
    channel: Option<i32>,
    account: Option<String>,
    qr_counter: Option<i64>,
    qr_generated_at: Option<i64>,
    pan_token: Option<Vec<u8>>,
    atc: Option<i32>,
    cryptogram: Option<&'a [u8]>,
    raw: &'a [u8],
}

impl<'a> Row<'a> {
    pub(crate) fn of(
        depot: &'a str,
        terminal: &'a str,
        epoch: u64,
        rec: &'a Record,
        raw: &'a [u8],
    ) -> Result<Row<'a>, ClearingError> {
        let service_day = service_day(rec.at_unix_s, rec.utc_offset_min).ok_or_else(|| {
            ClearingError::Record {
                terminal: terminal.to_string(),
                epoch,
                seq: rec.seq,
                why: format!("time {} out of range", rec.at_unix_s),
            }
        })?;
        let qp = rec.quickpass.as_ref();
        Ok(Row {
            service_day,
            terminal,
            depot,
            epoch: epoch as i64,
            seq: rec.seq as i64,
            kind: rec.kind as i16,
            category: rec.category as i16,
            at_unix_s: rec.at_unix_s,
            utc_offset_min: rec.utc_offset_min,
            route: i32::from(rec.route),
            fare_fen: i64::from(rec.fare_fen),
            balance_fen: rec.balance_fen.map(i64::from),
            card_no: if qp.is_some() {
                String::new()
            } else {
                rec.card_no.to_string()
            },
            card_counter: i32::from(rec.card_tx.offline_counter),
            psam_seq: i64::from(rec.card_tx.terminal_seq),
            tac: &rec.card_tx.tac,
            terminal_no: hex(&rec.terminal_no),
            channel: rec.qr.map(|q| i32::from(q.account.channel)),
            account: rec
                .qr
                .map(|q| q.account.to_string())
                .or_else(|| qp.map(|p| p.pan_token.to_string())),
            qr_counter: rec.qr.map(|q| i64::from(q.counter)),
            qr_generated_at: rec.qr.map(|q| i64::from(q.generated_at)),
            pan_token: qp.map(|p| p.pan_token.0.to_be_bytes().to_vec()),
            atc: qp.map(|p| i32::from(p.atc)),
            cryptogram: qp.map(|p| &p.cryptogram[..]),
            raw,
        })
    }

    pub(crate) fn values(&self) -> [&(dyn ToSql + Sync); 25] {
        [
            &self.service_day,
            &self.terminal,
            &self.epoch,
            &self.seq,
            &self.depot,
            &self.kind,
            &self.category,
            &self.at_unix_s,
            &self.utc_offset_min,
            &self.route,
            &self.fare_fen,
            &self.balance_fen,
            &self.card_no,
            &self.card_counter,
            &self.psam_seq,
            &self.tac,
            &self.terminal_no,
            &self.channel,
            &self.account,
            &self.qr_counter,
            &self.qr_generated_at,
            &self.pan_token,
            &self.atc,
            &self.cryptogram,
            &self.raw,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_day_runs_from_four_in_the_morning_local_time() {
        // 2026-11-28 03:59:59 +08:00 is still the 27th's service day; 04:00 starts the 28th.
        let four_am_local = 1_795_824_000 - 8 * 3600 + 4 * 3600; // 2026-11-28 04:00 +08:00
        let day = |at, off| service_day(at, off).unwrap().to_string();
        assert_eq!(day(four_am_local - 1, 480), "2026-11-27");
        assert_eq!(day(four_am_local, 480), "2026-11-28");
        assert_eq!(day(four_am_local + 8 * 3600, 0), "2026-11-28");
        assert_eq!(service_day(i64::MAX, 480), None);
    }
}
