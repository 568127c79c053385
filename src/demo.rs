//! `fare-validator demo`: a simulated morning on one bus, from a seed. Passengers of every
//! card type board, some twice across a route change (transfers), some with lost or replaced
//! cards, one pulls the card away mid-debit; at the end a summary a depot manager would read.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::blacklist::{Blacklist, Change, ChangeOp};
use crate::card::psam::Psam;
use crate::card::sim::{CardSpec, Removal, SimCard, SimPsam, TestKeys};
use crate::clock::Timestamp;
use crate::engine::{EngineConfig, Validator};
use crate::fare::FareTable;
use crate::journal::Journal;
use crate::types::{CardNo, ListId, ListReason, RiderCategory};

/// Passengers with a card on the demo bus.
pub const DEMO_CARDS: usize = 120;
/// Start of the morning, local time (+08:00).
pub const DEMO_START: &str = "2026-11-28T06:00:00+08:00";

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Seed of the simulated passengers.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// Taps in the morning.
    #[arg(long, default_value_t = 400)]
    pub taps: usize,
    /// Keep the journal in DIR (default: a temporary folder).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What the morning came to.
#[derive(Debug, Default, serde::Serialize)]
pub struct DemoSummary {
    pub taps: usize,
    pub accepted: usize,
    pub by_reason: BTreeMap<String, usize>,
    pub revenue_fen: u64,
    pub revenue_by_route_fen: BTreeMap<u16, u64>,
    pub transfers: usize,
    pub journal_records: usize,
    pub latency_us_p50: u64,
    pub latency_us_p99: u64,
    pub latency_us_max: u64,
}

fn card_no(i: usize) -> CardNo {
    // Dezhou-style numbers: 3714 prefix, then a serial.
    CardNo::from_u128(3714_0000_0000_0000_0000u128 + 1_000 + i as u128).expect("20 digits")
}

fn cast(rng: &mut ChaCha8Rng) -> Vec<CardSpec> {
    (0..DEMO_CARDS)
        .map(|i| {
            let card_type = match rng.gen_range(0..100) {
                0..=59 => RiderCategory::Adult,
                60..=79 => RiderCategory::Student,
                80..=91 => RiderCategory::Senior,
                92..=95 => RiderCategory::Disabled,
                _ => RiderCategory::Veteran,
            };
            CardSpec {
                card_no: card_no(i),
                card_type,
                enabled: i != 7,
                valid_from: if i == 8 {
                    "2027-01-01".into()
                } else {
                    "2024-01-01".into()
                },
                valid_until: if i == 9 {
                    "2026-06-30".into()
                } else {
                    "2034-12-31".into()
                },
                balance_fen: if i == 10 {
                    150
                } else {
                    rng.gen_range(1_000..20_000)
                },
            }
        })
        .collect()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Run the morning and return its summary.
pub fn simulate(args: &DemoArgs) -> Result<DemoSummary, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let keys = TestKeys::default();
    let specs = cast(&mut rng);
    let mut cards: Vec<SimCard> = specs
        .iter()
        .map(|s| SimCard::new(s, &keys, args.seed))
        .collect::<Result<_, _>>()?;
    let _temp;
    let dir = match &args.data {
        Some(d) => d.clone(),
        None => {
            let t = tempfile::tempdir().map_err(|e| e.to_string())?;
            let d = t.path().to_path_buf();
            _temp = t;
            d
        }
    };
    let (journal, _) = Journal::open(&dir).map_err(|e| e.to_string())?;
    let psam =
        Psam::open(SimPsam::new(keys, [0, 0, 0, 0, 0x10, 0x01], 1)).map_err(|e| e.to_string())?;
    // Two cards reported lost and one replaced before the day starts.
    let blacklist = Blacklist::from_entries(
        1,
        [
            (ListId::Card(card_no(11)), ListReason::Lost),
            (ListId::Card(card_no(12)), ListReason::Lost),
            (ListId::Card(card_no(13)), ListReason::Replaced),
        ],
    );
    let mut v = Validator::new(
        EngineConfig {
            route: 3,
            anti_passback_s: 60,
        },
        psam,
        FareTable::default_policy(),
        blacklist,
        journal,
    );
    let start = Timestamp::parse_rfc3339(DEMO_START).map_err(|e| e.to_string())?;
    let mut summary = DemoSummary::default();
    let mut lat = Vec::with_capacity(args.taps);
    let mut now = start;
    for t in 0..args.taps {
        now = now.plus_s(rng.gen_range(5..60));
        // The bus changes between routes 3 and 8 every 40 minutes: riders who come back
        // within the hour transfer.
        let route = if ((now.unix_s - start.unix_s) / 2_400) % 2 == 0 {
            3
        } else {
            8
        };
        v.set_route(route);
        if t == args.taps / 2 {
            // 解挂: card 11's holder found it and cancelled the report.
            v.apply_blacklist(&Change {
                op: ChangeOp::Remove,
                id: ListId::Card(card_no(11)),
                reason: ListReason::Lost,
            });
        }
        let i = if t % 50 == 25 {
            rng.gen_range(7..14)
        } else {
            rng.gen_range(0..DEMO_CARDS)
        };
        let removal = match t % 97 {
            40 => Some(Removal::AfterDebit),
            70 => Some(Removal::BeforeDebit),
            _ => None,
        };
        let card = &mut cards[i];
        card.enter_field(removal);
        let began = Instant::now();
        let d = v.tap_card(card, now);
        lat.push(began.elapsed().as_micros() as u64);
        summary.taps += 1;
        let reason = d.outcome.err().map_or("accepted", |r| r.as_str());
        *summary.by_reason.entry(reason.to_string()).or_default() += 1;
        if d.accepted() {
            summary.accepted += 1;
            summary.revenue_fen += u64::from(d.fare_fen);
            *summary.revenue_by_route_fen.entry(route).or_default() += u64::from(d.fare_fen);
            let full = v.fares().category_fare(specs[i].card_type);
            if d.fare_fen < full {
                summary.transfers += 1;
            }
        }
        if removal.is_some() {
            // The passenger taps again a few seconds later.
            now = now.plus_s(3);
            card.enter_field(None);
            let d = v.tap_card(card, now);
            summary.taps += 1;
            let reason = d.outcome.err().map_or("accepted", |r| r.as_str());
            *summary.by_reason.entry(reason.to_string()).or_default() += 1;
            if d.accepted() {
                summary.accepted += 1;
                summary.revenue_fen += u64::from(d.fare_fen);
                *summary.revenue_by_route_fen.entry(route).or_default() += u64::from(d.fare_fen);
            }
        }
    }
    lat.sort_unstable();
    summary.latency_us_p50 = percentile(&lat, 0.50);
    summary.latency_us_p99 = percentile(&lat, 0.99);
    summary.latency_us_max = lat.last().copied().unwrap_or(0);
    let scan = crate::journal::scan(&dir).map_err(|e| e.to_string())?;
    summary.journal_records = scan.records.len();
    Ok(summary)
}

/// `fare-validator demo`.
pub fn run(args: &DemoArgs) -> Result<(), String> {
    let s = simulate(args)?;
    if args.json {
        println!("{}", serde_json::to_string(&s).map_err(|e| e.to_string())?);
    } else {
        print_summary(&s);
    }
    if s.journal_records != s.accepted {
        return Err(format!(
            "{} taps accepted but {} records in the journal",
            s.accepted, s.journal_records
        ));
    }
    Ok(())
}

fn yuan(fen: u64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

fn print_summary(s: &DemoSummary) {
    println!("fare-validator demo: one bus, one morning ({DEMO_START}, routes 3 and 8)");
    println!();
    println!("taps                 {:>8}", s.taps);
    for (reason, n) in &s.by_reason {
        println!("  {reason:<20} {n:>6}");
    }
    println!("transfers            {:>8}", s.transfers);
    println!("revenue (yuan)       {:>8}", yuan(s.revenue_fen));
    for (route, fen) in &s.revenue_by_route_fen {
        println!("  route {route:<14} {:>6}", yuan(*fen));
    }
    println!(
        "journal records      {:>8}  (accepted taps: {})",
        s.journal_records, s.accepted
    );
    println!(
        "engine latency per tap, card dialogue + durable record: p50 {} us, p99 {} us, max {} us",
        s.latency_us_p50, s.latency_us_p99, s.latency_us_max
    );
}
