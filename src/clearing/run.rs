//! The clearing run of one service day (`fare-validator clearing run --day D`): each step one
//! set-based statement where the database does the work, all in one transaction that first
//! deletes the day's results, so the same day gives the same result and a run after late
//! uploads replaces the one before.
//!
//! 1. TAC verification of every purse record, in the database with pgcrypto
//!    (`clearing_tac`, `sql/clearing/0002_clearing_run.sql`), the issuers' TAC master keys
//!    given to the transaction as parameters (a temporary table dropped at commit; never
//!    stored). Each card's TAC key is derived once however many rides it took.
//! 2. Counter continuity per card (offline counter) and per PSAM (terminal transaction
//!    number), against the records of the [`COUNTER_LOOKBACK_DAYS`] days before.
//! 3. Grey records: recovered debits matched with the tap that recovered them, debits the card
//!    counted that no record shows reported as unsettled.
//! 4. Charges: one per claim (card counter, ride code, QuickPass cryptogram), nothing for a
//!    failed TAC, ride-code and QuickPass accounts capped daily and weekly (ISO week, Monday)
//!    in boarding order, the ride crossing a cap charged the remainder.
//! 5. Settlement by issuer (the local issuer's cards; interop cards by their city, from the
//!    card number), ride-code channel, QuickPass acquirer and route.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use time::{Date, Duration, Weekday};
use tokio_postgres::Client;

use super::ClearingError;

/// How many days before the cleared one the counters are checked against.
pub const COUNTER_LOOKBACK_DAYS: i32 = 35;
/// The card's offline transaction counter is 16 bits: after 65535 comes 0 (JT/T 978).
pub const CARD_COUNTER_MODULUS: i64 = 1 << 16;
/// The PSAM's terminal transaction number is 32 bits.
pub const PSAM_SEQ_MODULUS: i64 = 1 << 32;
/// Memory for each sort or hash of the run (PostgreSQL `work_mem`, set for its transaction).
pub const RUN_WORK_MEM_MB: u32 = 256;
/// Most issuer keys a key file may hold.
pub const ISSUER_KEYS_MAX: usize = 1_024;

/// One issuer's TAC master key, for the cards whose number starts with `card_prefix` (the
/// longest prefix wins; "" is every card).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerKey {
    pub card_prefix: String,
    /// 16 bytes, hex: the double-length 3DES master key the cards' DTK is diversified from.
    pub tac_master: String,
}

/// The issuer key file (JSON): `{"test_keys": bool, "issuers": [IssuerKey...]}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerKeys {
    /// The simulated issuer's public test keys, named as such.
    #[serde(default)]
    pub test_keys: bool,
    pub issuers: Vec<IssuerKey>,
}

impl IssuerKeys {
    /// Parse and check a key file: every prefix decimal digits, every key 16 bytes of hex.
    pub fn from_json(text: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
        let k: IssuerKeys = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if k.issuers.len() > ISSUER_KEYS_MAX {
            return Err(format!("more than {ISSUER_KEYS_MAX} issuer keys"));
        }
        k.issuers
            .into_iter()
            .map(|i| {
                if !i.card_prefix.bytes().all(|b| b.is_ascii_digit()) || i.card_prefix.len() > 20 {
                    return Err(format!(
                        "card_prefix {:?}: digits, at most 20",
                        i.card_prefix
                    ));
                }
                let key = hex::decode(&i.tac_master)
                    .ok()
                    .filter(|k| k.len() == 16)
                    .ok_or_else(|| format!("tac_master of {:?}: 32 hex digits", i.card_prefix))?;
                Ok((i.card_prefix, key))
            })
            .collect()
    }
}

/// What a day's run is given.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub day: Date,
    /// (card number prefix, TAC master key) per issuer.
    pub issuer_keys: Vec<(String, Vec<u8>)>,
    /// Caps for the media charged after the ride (fare table `[capping]`), fen.
    pub daily_cap_fen: Option<i64>,
    pub weekly_cap_fen: Option<i64>,
    /// The bank QuickPass rides are charged through.
    pub acquirer: String,
    /// Card-number prefixes of the local issuer's cards (Dezhou's: [`LOCAL_CARD_PREFIX`]);
    /// every other card is an interop card (T-Union, JT/T 978), settled with its city, the
    /// card number's first four digits. The journal record does not carry the card's issuer
    /// files (0x15, 0x17), so the number is what clearing has.
    pub local_card_prefixes: Vec<String>,
}

/// The first digits of the card numbers Dezhou issues (its administrative division code).
pub const LOCAL_CARD_PREFIX: &str = "3714";

/// A settlement line.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Settled {
    pub kind: String,
    pub counterparty: String,
    pub records: i64,
    pub fare_fen: i64,
    pub charged_fen: i64,
}

/// The day's figures (also kept in `clearing_days.summary`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RunSummary {
    pub service_day: String,
    pub records: i64,
    pub tac_failures: i64,
    pub card_gaps: i64,
    pub card_duplicates: i64,
    pub psam_gaps: i64,
    pub psam_duplicates: i64,
    pub grey_recovered: i64,
    pub grey_unsettled: i64,
    pub charged_once_duplicates: i64,
    pub capped_accounts: i64,
    pub capped_fen: i64,
    pub fare_fen: i64,
    pub charged_fen: i64,
    pub settlement: Vec<Settled>,
}

const RESULT_TABLES: [&str; 7] = [
    "tac_failures",
    "counter_findings",
    "grey_findings",
    "charges",
    "caps_applied",
    "settlement",
    "clearing_days",
];

/// Clear `opts.day`: every step, in one transaction. Returns the summary.
pub async fn run_day(client: &mut Client, opts: &RunOptions) -> Result<RunSummary, ClearingError> {
    Ok(run_day_timed(client, opts).await?.0)
}

/// [`run_day`], and the seconds each step took, in order (`bench clearing`).
pub async fn run_day_timed(
    client: &mut Client,
    opts: &RunOptions,
) -> Result<(RunSummary, Vec<(&'static str, f64)>), ClearingError> {
    let day = opts.day;
    let mut steps = Vec::new();
    let mut clock = std::time::Instant::now();
    let mut lap = |step: &'static str| {
        steps.push((step, clock.elapsed().as_secs_f64()));
        clock = std::time::Instant::now();
    };
    let tx = client.transaction().await?;
    // The run's sorts and hashes (a day's records, windowed by card, PSAM, claim and account)
    // in memory, not spilled to disk in 4 MB pieces.
    tx.batch_execute(&format!("SET LOCAL work_mem = '{RUN_WORK_MEM_MB}MB'"))
        .await?;
    let day_key = i64::from(day.to_julian_day());
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('clearing_run'), $1::int)",
        &[&(day_key as i32)],
    )
    .await?;
    for t in RESULT_TABLES {
        tx.execute(&format!("DELETE FROM {t} WHERE service_day = $1"), &[&day])
            .await?;
    }
    tx.batch_execute(
        "CREATE TEMP TABLE tac_keys (card_prefix text, master bytea) ON COMMIT DROP;
         CREATE TEMP TABLE card_keys (card_no text PRIMARY KEY, tac_key bytea) ON COMMIT DROP",
    )
    .await?;
    for (prefix, key) in &opts.issuer_keys {
        tx.execute("INSERT INTO tac_keys VALUES ($1, $2)", &[prefix, key])
            .await?;
    }
    lap("reset");
    tx.execute(CARD_KEYS_SQL, &[&day]).await?;
    tx.batch_execute("ANALYZE card_keys").await?;
    tx.execute(TAC_SQL, &[&day]).await?;
    lap("tac");
    for (subject, id, counter, modulus) in [
        ("card", "card_no", "card_counter", CARD_COUNTER_MODULUS),
        ("psam", "terminal_no", "psam_seq", PSAM_SEQ_MODULUS),
    ] {
        tx.execute(
            &counter_sql(subject, id, counter, modulus),
            &[&day, &COUNTER_LOOKBACK_DAYS],
        )
        .await?;
        lap(if subject == "card" {
            "counters_card"
        } else {
            "counters_psam"
        });
    }
    tx.execute(GREY_RECOVERED_SQL, &[&day]).await?;
    tx.execute(GREY_UNSETTLED_SQL, &[&day]).await?;
    lap("grey");
    let week_start = day - Duration::days(i64::from(day.weekday().number_days_from_monday()));
    let window_start = week_start.min(day - Duration::days(1));
    debug_assert_eq!(week_start.weekday(), Weekday::Monday);
    tx.execute(
        CHARGES_SQL,
        &[
            &day,
            &window_start,
            &week_start,
            &opts.daily_cap_fen,
            &opts.weekly_cap_fen,
            &opts.acquirer,
            &opts.local_card_prefixes,
        ],
    )
    .await?;
    lap("charges");
    tx.execute(CAPS_SQL, &[&day]).await?;
    tx.execute(SETTLEMENT_SQL, &[&day]).await?;
    lap("caps_settlement");
    let summary = summarize(&tx, day).await?;
    let json = serde_json::to_value(&summary).map_err(|e| std::io::Error::other(e.to_string()))?;
    tx.execute(
        "INSERT INTO clearing_days (service_day, summary) VALUES ($1, $2::text::jsonb)",
        &[&day, &json.to_string()],
    )
    .await?;
    tx.commit().await?;
    lap("summary_commit");
    Ok((summary, steps))
}

async fn summarize(
    tx: &tokio_postgres::Transaction<'_>,
    day: Date,
) -> Result<RunSummary, ClearingError> {
    let n = |sql: &'static str| async move {
        let v: i64 = tx.query_one(sql, &[&day]).await?.get(0);
        Ok::<i64, ClearingError>(v)
    };
    let findings = |subject: &'static str, finding: &'static str| async move {
        let v: i64 = tx
            .query_one(
                "SELECT count(*) FROM counter_findings WHERE service_day = $1 AND subject = $2 AND finding = $3",
                &[&day, &subject, &finding],
            )
            .await?
            .get(0);
        Ok::<i64, ClearingError>(v)
    };
    let settlement = tx
        .query(
            "SELECT kind, counterparty, records, fare_fen, charged_fen FROM settlement
             WHERE service_day = $1 ORDER BY kind, counterparty",
            &[&day],
        )
        .await?
        .iter()
        .map(|r| Settled {
            kind: r.get(0),
            counterparty: r.get(1),
            records: r.get(2),
            fare_fen: r.get(3),
            charged_fen: r.get(4),
        })
        .collect();
    Ok(RunSummary {
        service_day: day.to_string(),
        records: n("SELECT count(*) FROM records WHERE service_day = $1").await?,
        tac_failures: n("SELECT count(*) FROM tac_failures WHERE service_day = $1").await?,
        card_gaps: findings("card", "gap").await?,
        card_duplicates: findings("card", "duplicate").await?,
        psam_gaps: findings("psam", "gap").await?,
        psam_duplicates: findings("psam", "duplicate").await?,
        grey_recovered: n(
            "SELECT count(*) FROM grey_findings WHERE service_day = $1 AND finding = 'recovered'",
        )
        .await?,
        grey_unsettled: n(
            "SELECT count(*) FROM grey_findings WHERE service_day = $1 AND finding = 'unsettled'",
        )
        .await?,
        charged_once_duplicates: n(
            "SELECT count(*) FROM charges WHERE service_day = $1 AND duplicate_of IS NOT NULL",
        )
        .await?,
        capped_accounts: n("SELECT count(*) FROM caps_applied WHERE service_day = $1").await?,
        capped_fen: n(
            "SELECT coalesce(sum(capped_fen), 0)::bigint FROM charges WHERE service_day = $1",
        )
        .await?,
        fare_fen: n(
            "SELECT coalesce(sum(fare_fen), 0)::bigint FROM charges WHERE service_day = $1",
        )
        .await?,
        charged_fen: n(
            "SELECT coalesce(sum(charged_fen), 0)::bigint FROM charges WHERE service_day = $1",
        )
        .await?,
        settlement,
    })
}

/// Write the day's settlement files into `dir`: one CSV per counterparty
/// (`issuer-3714.csv`, `channel-1.csv`, `acquirer-NAME.csv`: one line per record charged to
/// it) and `summary.csv` (every counterparty and route with its totals). Returns the paths.
pub async fn write_files(
    client: &Client,
    day: Date,
    dir: &Path,
) -> Result<Vec<PathBuf>, ClearingError> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let totals = client
        .query(
            "SELECT kind, counterparty, records, fare_fen, charged_fen FROM settlement
             WHERE service_day = $1 ORDER BY kind, counterparty",
            &[&day],
        )
        .await?;
    let mut summary = String::from("kind,counterparty,records,fare_fen,charged_fen\n");
    for r in &totals {
        let (kind, party): (String, String) = (r.get(0), r.get(1));
        let (n, fare, charged): (i64, i64, i64) = (r.get(2), r.get(3), r.get(4));
        summary.push_str(&format!(
            "{kind},{},{n},{fare},{charged}\n",
            csv_field(&party)
        ));
        if kind == "route" {
            continue;
        }
        let rows = client
            .query(
                "SELECT terminal, epoch, seq, medium, account, route, at_unix_s, fare_fen,
                        capped_fen, charged_fen, coalesce(duplicate_of, ''), tac_failed
                 FROM charges WHERE service_day = $1 AND counterparty_kind = $2 AND counterparty = $3
                 ORDER BY at_unix_s, terminal, epoch, seq",
                &[&day, &kind, &party],
            )
            .await?;
        let mut csv = String::from(
            "terminal,epoch,seq,medium,account,route,at_unix_s,fare_fen,capped_fen,charged_fen,duplicate_of,tac_failed\n",
        );
        for x in rows {
            let epoch: i64 = x.get(1);
            csv.push_str(&format!(
                "{},{:016x},{},{},{},{},{},{},{},{},{},{}\n",
                csv_field(x.get(0)),
                epoch as u64,
                x.get::<_, i64>(2),
                x.get::<_, String>(3),
                csv_field(x.get(4)),
                x.get::<_, i32>(5),
                x.get::<_, i64>(6),
                x.get::<_, i64>(7),
                x.get::<_, i64>(8),
                x.get::<_, i64>(9),
                csv_field(x.get(10)),
                x.get::<_, bool>(11),
            ));
        }
        let path = dir.join(format!("{kind}-{}.csv", file_safe(&party)));
        std::fs::write(&path, csv)?;
        written.push(path);
    }
    let path = dir.join("summary.csv");
    std::fs::write(&path, summary)?;
    written.push(path);
    Ok(written)
}

/// A CSV field: quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A counterparty's name as a file name: letters, digits, '-' and '_' kept, others '_'.
fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Each card of the day's TAC key, derived once (NULL: no issuer key for its number).
const CARD_KEYS_SQL: &str = "
INSERT INTO card_keys (card_no, tac_key)
SELECT c.card_no, CASE WHEN k.master IS NULL THEN NULL ELSE clearing_tac_key(k.master, c.card_no) END
FROM (SELECT DISTINCT card_no FROM records WHERE service_day = $1 AND kind IN (1, 2)) c
LEFT JOIN LATERAL (SELECT t.master FROM tac_keys t WHERE starts_with(c.card_no, t.card_prefix)
                   ORDER BY length(t.card_prefix) DESC LIMIT 1) k ON true";

const TAC_SQL: &str = "
INSERT INTO tac_failures (service_day, terminal, epoch, seq, card_no, reason)
SELECT r.service_day, r.terminal, r.epoch, r.seq, r.card_no,
       CASE WHEN k.tac_key IS NULL THEN 'no_issuer_key' ELSE 'mismatch' END
FROM records r JOIN card_keys k USING (card_no)
WHERE r.service_day = $1 AND r.kind IN (1, 2)
  AND (k.tac_key IS NULL
       OR clearing_tac(k.tac_key, r.fare_fen, r.terminal_no, r.psam_seq, r.at_unix_s, r.utc_offset_min) <> r.tac)";

/// Gaps and duplicates of one counter (`id`, `counter`: column names, from this file only)
/// that wraps at `modulus` (the card's offline counter is 16 bits, JT/T 978: 65535 is
/// followed by 0, not a gap). A subject's counters are a circle: sorted, each is compared with
/// the one before it (the first with the last), a step of more than one is a gap, and the
/// widest step is the arc no counter of the window falls on, not a gap (two steps that tie
/// for widest, which 35 days of one card's rides cannot make, are both taken as that arc).
fn counter_sql(subject: &str, id: &str, counter: &str, modulus: i64) -> String {
    // One sort: by subject and counter. The step from the counter before (the first's from
    // the last) and the widest step of the subject come from that order; a duplicate is a
    // counter equal to its neighbour's. Only the few findings are materialized and grouped.
    format!(
        "
INSERT INTO counter_findings (service_day, subject, subject_id, finding, from_counter, to_counter, records)
WITH seen AS (SELECT DISTINCT {id} AS sid FROM records WHERE service_day = $1 AND kind IN (1, 2)),
found AS MATERIALIZED (
    SELECT * FROM (
        SELECT s.*, max(step) OVER (PARTITION BY sid) AS widest_step
        FROM (
            SELECT h.*, coalesce(lag_c, last_c) AS prev_c, coalesce(lag_rec, last_rec) AS prev_rec,
                   (c - coalesce(lag_c, last_c) + {modulus}) % {modulus} AS step
            FROM (
                SELECT r.service_day, r.{id} COLLATE \"C\" AS sid, r.{counter}::bigint AS c,
                       r.terminal || '/' || r.epoch || '/' || r.seq AS rec,
                       lag(r.{counter}::bigint) OVER w AS lag_c,
                       lead(r.{counter}::bigint) OVER w AS lead_c,
                       last_value(r.{counter}::bigint) OVER wa AS last_c,
                       lag(r.terminal || '/' || r.epoch || '/' || r.seq) OVER w AS lag_rec,
                       last_value(r.terminal || '/' || r.epoch || '/' || r.seq) OVER wa AS last_rec
                FROM records r JOIN seen ON seen.sid = r.{id}
                WHERE r.service_day BETWEEN $1::date - $2::int AND $1 AND r.kind IN (1, 2)
                WINDOW w AS (PARTITION BY r.{id} COLLATE \"C\"
                             ORDER BY r.{counter}, r.at_unix_s, r.terminal COLLATE \"C\", r.epoch, r.seq),
                       wa AS (w ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)) h) s) x
    WHERE (service_day = $1 AND step > 1 AND step < widest_step) OR c = lag_c OR c = lead_c)
SELECT $1, '{subject}', sid, 'gap', (prev_c + 1) % {modulus}, (c - 1 + {modulus}) % {modulus},
       ARRAY[prev_rec, rec]
FROM found WHERE service_day = $1 AND step > 1 AND step < widest_step
UNION ALL
SELECT $1, '{subject}', sid, 'duplicate', c, c, array_agg(rec ORDER BY rec)
FROM found WHERE c = lag_c OR c = lead_c
GROUP BY sid, c HAVING bool_or(service_day = $1)"
    )
}

const GREY_RECOVERED_SQL: &str = "
INSERT INTO grey_findings (service_day, finding, card_no, card_counter, record, recovered_by, delay_s, terminal_no)
SELECT $1, 'recovered', r.card_no, r.card_counter, r.terminal || '/' || r.epoch || '/' || r.seq,
       n.terminal || '/' || n.epoch || '/' || n.seq, n.at_unix_s - r.at_unix_s, r.terminal_no
FROM records r
LEFT JOIN LATERAL (
    SELECT * FROM records n
    WHERE n.card_no = r.card_no AND n.kind IN (1, 2) AND n.card_counter = (r.card_counter + 1) % 65536
      AND n.service_day BETWEEN $1::date AND $1::date + 7
    ORDER BY n.at_unix_s LIMIT 1) n ON true
WHERE r.service_day = $1 AND r.kind = 2";

const GREY_UNSETTLED_SQL: &str = "
INSERT INTO grey_findings (service_day, finding, card_no, card_counter, record, recovered_by, delay_s, terminal_no)
SELECT $1, 'unsettled', f.subject_id, (f.from_counter + k) % 65536, NULL, NULL, NULL,
       (SELECT r.terminal_no FROM records r
        WHERE r.service_day BETWEEN $1::date - 1 AND $1::date AND r.card_no = f.subject_id
          AND r.card_counter = (f.to_counter + 1) % 65536 AND r.kind IN (1, 2) LIMIT 1)
FROM counter_findings f,
     generate_series(0, least((f.to_counter - f.from_counter + 65536) % 65536, 15)) k
WHERE f.service_day = $1 AND f.subject = 'card' AND f.finding = 'gap'";

// One pass over the window's records: claims ranked, each account's day summed in boarding
// order, the days before in the week summed per account; the only join is the records' with
// those per-account sums (hash-joinable), never a CTE with another CTE's rows.
const CHARGES_SQL: &str = "
INSERT INTO charges (service_day, terminal, epoch, seq, medium, counterparty_kind, counterparty,
                     account, route, at_unix_s, fare_fen, duplicate_of, tac_failed, capped_fen, charged_fen)
WITH w AS (
    SELECT r.service_day, r.terminal, r.epoch, r.seq, r.route, r.at_unix_s, r.fare_fen, r.card_no, r.channel,
           CASE WHEN r.kind IN (1, 2) THEN 'card' WHEN r.kind = 3 THEN 'ride_code' ELSE 'quickpass' END AS medium,
           CASE WHEN r.kind IN (1, 2) THEN 1 ELSE r.kind END AS mk,
           (CASE WHEN r.kind IN (1, 2) THEN r.card_no ELSE r.account END) COLLATE \"C\" AS acct,
           -- A claim: the account and its counter (card counter; ride code counter and
           -- generation time; QuickPass ATC), compared as numbers and bytes.
           CASE WHEN r.kind IN (1, 2) THEN r.card_counter::bigint WHEN r.kind = 3 THEN r.qr_counter
                ELSE r.atc::bigint END AS claim_n,
           CASE WHEN r.kind = 3 THEN r.qr_generated_at ELSE 0 END AS claim_t,
           (t.seq IS NOT NULL) AS tac_failed
    FROM records r
    LEFT JOIN tac_failures t ON t.service_day = r.service_day AND t.terminal = r.terminal
                            AND t.epoch = r.epoch AND t.seq = r.seq
    WHERE r.service_day BETWEEN $2 AND $1),
ranked AS (
    SELECT w.*, row_number() OVER c AS claim_no,
           first_value(terminal) OVER c AS f_terminal, first_value(epoch) OVER c AS f_epoch,
           first_value(seq) OVER c AS f_seq
    FROM w WINDOW c AS (PARTITION BY mk, acct, claim_n, claim_t
                        ORDER BY at_unix_s, terminal COLLATE \"C\", epoch, seq)),
due AS MATERIALIZED (
    SELECT ranked.*, CASE WHEN claim_no = 1 AND NOT tac_failed THEN fare_fen ELSE 0 END AS due_fen
    FROM ranked),
before AS (
    SELECT mk, acct, sum(least(day_fen, $4::bigint)) AS before_fen
    FROM (SELECT mk, acct, service_day, sum(due_fen) AS day_fen FROM due
          WHERE mk <> 1 AND service_day >= $3 AND service_day < $1
          GROUP BY mk, acct, service_day) d
    GROUP BY mk, acct),
today AS (
    SELECT due.*, sum(due_fen) OVER (PARTITION BY mk, acct
                                     ORDER BY at_unix_s, terminal COLLATE \"C\", epoch, seq
                                     ROWS UNBOUNDED PRECEDING) AS day_cum
    FROM due WHERE service_day = $1),
charged AS (
    SELECT d.*,
           CASE WHEN d.medium = 'card' THEN d.due_fen
                ELSE least(coalesce(b.before_fen, 0) + least(d.day_cum, $4::bigint), $5::bigint)
                   - least(coalesce(b.before_fen, 0) + least(d.day_cum - d.due_fen, $4::bigint), $5::bigint)
           END AS charged_fen
    FROM today d LEFT JOIN before b ON b.mk = d.mk AND b.acct = d.acct)
SELECT service_day, terminal, epoch, seq, medium,
       CASE medium WHEN 'card' THEN
           CASE WHEN EXISTS (SELECT 1 FROM unnest($7::text[]) p WHERE starts_with(card_no, p))
                THEN 'issuer' ELSE 'interop' END
           WHEN 'ride_code' THEN 'channel' ELSE 'acquirer' END,
       CASE medium WHEN 'card' THEN left(card_no, 4) WHEN 'ride_code' THEN channel::text ELSE $6 END,
       acct, route, at_unix_s, fare_fen,
       CASE WHEN claim_no > 1 THEN f_terminal || '/' || f_epoch || '/' || f_seq END, tac_failed,
       due_fen - charged_fen, charged_fen
FROM charged";

const CAPS_SQL: &str = "
INSERT INTO caps_applied (service_day, account, rides, fare_fen, charged_fen, capped_fen, rides_capped)
SELECT $1, account, count(*), sum(fare_fen), sum(charged_fen), sum(capped_fen),
       count(*) FILTER (WHERE capped_fen > 0)
FROM charges WHERE service_day = $1 AND medium <> 'card'
GROUP BY account HAVING sum(capped_fen) > 0";

const SETTLEMENT_SQL: &str = "
INSERT INTO settlement (service_day, kind, counterparty, records, fare_fen, charged_fen)
SELECT $1, counterparty_kind, counterparty, count(*), sum(fare_fen), sum(charged_fen)
FROM charges WHERE service_day = $1 GROUP BY counterparty_kind, counterparty
UNION ALL
SELECT $1, 'route', route::text, count(*), sum(fare_fen), sum(charged_fen)
FROM charges WHERE service_day = $1 GROUP BY route";
