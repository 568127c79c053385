//! `fare-validator demo`: a whole simulated service day on a fleet of buses.
//!
//! Each bus has its own validator (simulated PSAM, journal) and runs one route. Passengers are
//! generated from a seed: cards of every type, ride codes from all eight channel apps, lost
//! and replaced cards, un-reports (解挂) during the day, forged and expired codes, a code
//! screenshot shown on two buses, torn taps, riders who change buses within the transfer
//! window, and the fare rules of `fixtures/demo-fares.toml`: cards of other cities (interop
//! fare), concessions past their end or annual review date (adult fare), seniors at the
//! morning peak, families boarding on one adult card (连刷). QuickPass (闪付) passengers board
//! beside them (docs/quickpass.md, "The demo"): QuickPass-only cards, cards with both
//! applications (the transport purse when it was activated, QuickPass when it never was),
//! expired, deny-listed and forged (broken certificate chain) ones, personalised by the test
//! CA and issuer of [`crate::card::quickpass_issuer`]; they come from a seeded stream of
//! their own, so a seed's card and ride-code passengers are the same with them as without.
//! At night the buses return: each uploads its journal to a depot station on 127.0.0.1. The
//! report compares what the buses accepted with what the depot stored (the demo fails if
//! they differ), the depot's revenue with the journals' fares, and the QuickPass rides the
//! depot holds for the acquirer with the QuickPass taps accepted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hdrhistogram::Histogram;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::blacklist::{Blacklist, Change, ChangeOp};
use crate::card::psam::Psam;
use crate::card::quickpass::{CaKeys, Pan, PanTokenKey};
use crate::card::quickpass_issuer::TestIssuer;
use crate::card::sim::{CardSpec, Removal, SimCard, SimPsam, TestKeys};
use crate::card::sim_quickpass::{SimPhysicalCard, SimQuickPass};
use crate::card::tunion::{CityCode, INTEROP_KIND_TUNION};
use crate::clock::Timestamp;
use crate::depot::store::Store;
use crate::engine::{Decision, EngineConfig, Validator};
use crate::fare::{FareTable, Issuer};
use crate::journal::{Journal, JournalKey, OsFiles};
use crate::ride_code::issuer::SimChannels;
use crate::ride_code::{ChannelKeys, RideCodeConfig};
use crate::types::{AccountId, CardNo, ListId, ListReason, Media, RiderCategory};
use crate::upload::auth::{Secret, SECRET_BYTES};

/// Start of the service day, local time.
pub const DEMO_DAY_START: &str = "2026-11-28T06:00:00+08:00";
/// Length of the service day.
pub const DEMO_DAY_S: i64 = 16 * 3_600;
/// Card holders per bus in the generated population.
pub const CARDS_PER_BUS: usize = 60;
/// Ride-code holders per bus.
pub const QR_HOLDERS_PER_BUS: usize = 25;
/// The demo's fare table (docs/fares.md): the default policy and the rules its passengers meet.
pub const DEMO_FARES_TOML: &str = include_str!("../fixtures/demo-fares.toml");
/// Most riders a family boards on one card in the demo (the table allows 4).
pub const DEMO_FAMILY_RIDERS_MAX: usize = 3;
/// QuickPass cards per bus in the generated population: QuickPass-only cards, and cards with
/// both applications whose transport application was never activated ([`quickpass_kind`]).
pub const QUICKPASS_CARDS_PER_BUS: usize = 10;
/// A QuickPass passenger boards each bus beside every this many of its presentations
/// ([`quickpass_boards`]).
pub const QUICKPASS_EVERY: usize = 8;
/// One QuickPass passenger in this many pulls the card away mid-dialogue (and taps again).
pub const QUICKPASS_REMOVED_ONE_IN: u32 = 25;
/// The demo's QuickPass cards expire on this day unless they are the expired ones.
pub const QUICKPASS_EXPIRY: &str = "2030-06-30";
/// The expired QuickPass cards' expiry, before the demo day.
pub const QUICKPASS_EXPIRED_ON: &str = "2026-10-31";
/// Every this many cards of the card population also carry a QuickPass application (those
/// whose transport application is activated: the transport purse decides their taps).
pub const CARDS_WITH_QUICKPASS_EVERY: usize = 10;

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Seed of the simulated day.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// Buses in the fleet.
    #[arg(long, default_value_t = 20)]
    pub buses: usize,
    /// Taps and scans on each bus over the day.
    #[arg(long, default_value_t = 300)]
    pub taps_per_bus: usize,
    /// Keep the journals and the depot database in DIR, a new or empty folder (default: a
    /// temporary folder, removed at the end).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// After the day, keep the depot manager's page up on ADDR until Ctrl-C (`--serve` alone:
    /// 127.0.0.1:7780, this machine only).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = crate::cli::depot::PAGE_ADDR_DEFAULT)]
    pub serve: Option<String>,
    /// Then clear the day on PostgreSQL (a binary built with the `clearing` feature): forward
    /// the depot's records to this database, run the clearing of each service day and print
    /// its settlement summary (docs/clearing.md).
    #[arg(long, value_name = "URL")]
    pub clearing: Option<String>,
}

/// What the day came to.
#[derive(Debug, Default, Serialize)]
pub struct DemoReport {
    pub buses: usize,
    pub taps_per_bus: usize,
    /// Presentations beyond buses × taps per bus: a card tapped again after it was pulled
    /// away, a code waved twice, a screenshot of a code shown on a second bus.
    pub re_presentations: u64,
    pub taps: BTreeMap<String, BTreeMap<String, u64>>,
    pub accepted: u64,
    pub journal_fare_fen: u64,
    pub revenue_by_route_fen: BTreeMap<u16, u64>,
    pub transfers: u64,
    /// Accepted card taps by `fare_note` (docs/replay.md): ended concessions, further riders
    /// of a family on one card.
    pub fare_notes: BTreeMap<String, u64>,
    /// Accepted taps of cards issued by another city (interop fare).
    pub interop_taps: u64,
    /// QuickPass passengers, beside buses × taps per bus (docs/quickpass.md, "The demo").
    pub quickpass_passengers: u64,
    /// Taps of cards that carry both applications, by the medium that decided: `card` (the
    /// transport purse, activated) or `quickpass` (transport never activated).
    pub both_applications: BTreeMap<String, u64>,
    pub depot_records: u64,
    pub depot_fare_fen: u64,
    /// `depot_fare_fen` by the fare-table rule that priced each record (`depot report`'s
    /// `fare_fen_by_rule`).
    pub depot_fare_fen_by_rule: BTreeMap<crate::fare::FareRule, u64>,
    pub depot_gaps: u64,
    /// The depot's security findings by kind, records counted (docs/depot.md): the buses
    /// chain their journals with their own keys, so none but `psam_gap` (a card pulled away
    /// after MAC1 leaves its PSAM number unused) is expected.
    pub depot_findings: BTreeMap<String, u64>,
    pub qr_conflicts: u64,
    /// QuickPass rides the depot holds for the acquirer (`depot export --acquirer`), and
    /// those of them without the acquirer's data (none expected).
    pub acquirer_rides: u64,
    pub acquirer_rides_without_data: u64,
    pub uploaded: u64,
    /// Card taps and code scans (the QuickPass taps apart, below).
    pub latency_us_p50: u64,
    pub latency_us_p99: u64,
    pub latency_us_max: u64,
    /// QuickPass taps: the dialogue with the simulated card (its RSA signing included), fDDA,
    /// the PAN sealed for the acquirer and the durable record.
    pub quickpass_latency_us_p50: u64,
    pub quickpass_latency_us_p99: u64,
}

impl DemoReport {
    /// QuickPass taps accepted on the buses.
    pub fn quickpass_accepted(&self) -> u64 {
        self.taps
            .get(Media::Quickpass.as_str())
            .and_then(|m| m.get("accepted"))
            .copied()
            .unwrap_or(0)
    }
}

struct Bus {
    id: String,
    /// The bus's master secret: its journal is chained with the key derived from it, and
    /// the depot is given it when the bus is provisioned.
    secret: Secret,
    route: u16,
    dir: PathBuf,
    validator: Validator<SimPsam>,
}

enum Presentation {
    Card {
        holder: usize,
        removal: Option<Removal>,
        /// Riders boarding on the card, the holder included (a family: taps 2 s apart).
        riders: usize,
    },
    Code {
        text: String,
    },
}

struct Population {
    /// Transport cards, every [`CARDS_WITH_QUICKPASS_EVERY`]th activated one with a
    /// QuickPass application too.
    cards: Vec<SimPhysicalCard>,
    categories: Vec<RiderCategory>,
    /// The issuing city of a card from another city.
    issuers: Vec<Option<CityCode>>,
    qr_holders: Vec<(u16, u64, CardNo, RiderCategory)>,
    channels: SimChannels,
    counters: Vec<u32>,
    /// The QuickPass passengers' cards ([`quickpass_kind`]) and the CA keys they chain to.
    qp_cards: Vec<SimPhysicalCard>,
    ca: CaKeys,
}

/// What a demo QuickPass card is: the `j`th card of the QuickPass population.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuickPassKind {
    /// QuickPass only, valid, not listed: accepted.
    Good,
    /// Both applications, the transport one never activated: QuickPass decides.
    BothNeverActivated,
    /// Expired before the demo day: `card_expired`.
    Expired,
    /// Its ICC certificate signed by a key the CA never certified: `bad_certificate`.
    Forged,
    /// On the morning deny list as `lost`: `blacklisted`.
    ListedLost,
    /// On the morning deny list as `arrears` (a ride the acquirer could not charge).
    ListedArrears,
}

/// The kind of the `j`th QuickPass card (every kind in each ten, at a bus's share).
pub fn quickpass_kind(j: usize) -> QuickPassKind {
    match j % 10 {
        1 => QuickPassKind::Expired,
        5 => QuickPassKind::Forged,
        8 | 9 => QuickPassKind::BothNeverActivated,
        3 if j % 20 == 3 => QuickPassKind::ListedLost,
        3 => QuickPassKind::ListedArrears,
        _ => QuickPassKind::Good,
    }
}

/// Whether a QuickPass passenger boards beside presentation `t` of the day (on bus
/// `t % buses`): every bus every [`QUICKPASS_EVERY`]th round, the buses staggered. The
/// passengers take the QuickPass cards in turn.
pub fn quickpass_boards(t: usize, buses: usize) -> bool {
    let buses = buses.max(1);
    (t / buses + t % buses) % QUICKPASS_EVERY == QUICKPASS_EVERY / 2
}

/// The PAN of the `j`th QuickPass card, of the test issuer (`628888…`).
pub fn quickpass_pan(j: usize) -> String {
    format!("628888{:010}", j + 1)
}

/// The PANs of the demo's QuickPass cards on a fleet of `buses` (what must never be written).
pub fn quickpass_pans(buses: usize) -> Vec<String> {
    (0..QUICKPASS_CARDS_PER_BUS * buses.max(1))
        .map(quickpass_pan)
        .collect()
}

/// The transport card number of the `j`th QuickPass card when it has both applications.
fn quickpass_card_no(j: usize) -> CardNo {
    CardNo::from_u128(3714_0000_0000_0009_0000u128 + j as u128).expect("20 digits")
}

/// The QuickPass cards of the day, personalised by the test issuer.
fn quickpass_cards(
    args: &DemoArgs,
    issuer: &TestIssuer,
    keys: &TestKeys,
) -> Result<Vec<SimPhysicalCard>, String> {
    let n = QUICKPASS_CARDS_PER_BUS * args.buses.max(1);
    let mut cards = Vec::with_capacity(n);
    for j in 0..n {
        let kind = quickpass_kind(j);
        let pan = quickpass_pan(j);
        let atc = 10 + (j % 90) as u16;
        let spec = match kind {
            QuickPassKind::Expired => issuer.card(&pan, 1, QUICKPASS_EXPIRED_ON, atc)?,
            QuickPassKind::Forged => issuer.forged_card(&pan, 1, QUICKPASS_EXPIRY, atc)?,
            _ => issuer.card(&pan, 1, QUICKPASS_EXPIRY, atc)?,
        };
        let quickpass = SimQuickPass::new(&spec, args.seed)?;
        let transport = if kind == QuickPassKind::BothNeverActivated {
            let t = CardSpec {
                enabled: false,
                ..CardSpec::new(quickpass_card_no(j), RiderCategory::Adult, 5_000)
            };
            Some(SimCard::new(&t, keys, args.seed)?)
        } else {
            None
        };
        cards.push(SimPhysicalCard::new(transport, Some(quickpass)));
    }
    Ok(cards)
}

fn card_no(i: usize) -> CardNo {
    CardNo::from_u128(3714_0000_0000_0001_0000u128 + i as u128).expect("20 digits")
}

fn category(rng: &mut ChaCha8Rng) -> RiderCategory {
    match rng.gen_range(0..100) {
        0..=59 => RiderCategory::Adult,
        60..=79 => RiderCategory::Student,
        80..=91 => RiderCategory::Senior,
        92..=95 => RiderCategory::Disabled,
        _ => RiderCategory::Veteran,
    }
}

fn population(
    args: &DemoArgs,
    rng: &mut ChaCha8Rng,
    start: Timestamp,
) -> Result<Population, String> {
    let keys = TestKeys::default();
    let issuer = TestIssuer::load()?;
    let n_cards = CARDS_PER_BUS * args.buses.max(1);
    let mut cards = Vec::with_capacity(n_cards);
    let mut categories = Vec::with_capacity(n_cards);
    let mut issuers = Vec::with_capacity(n_cards);
    for i in 0..n_cards {
        let c = category(rng);
        let spec = CardSpec {
            card_no: card_no(i),
            card_type: c,
            enabled: i % 97 != 5,
            valid_from: "2024-01-01".into(),
            valid_until: if i % 89 == 7 {
                "2026-06-30".into()
            } else {
                "2034-12-31".into()
            },
            balance_fen: if i % 53 == 11 {
                150
            } else {
                rng.gen_range(2_000..30_000)
            },
            purse_word: None,
            // Some cards come from Jinan (0531) and Beijing (1000): the interop fare.
            issuer_city: match i % 23 {
                4 => Some(CityCode(531)),
                15 => Some(CityCode(1000)),
                _ => None,
            },
            interop: None,
            // Some concessions ended in September; some annual reviews (年审) are overdue.
            concession_until: (i % 11 == 6).then(|| "2026-09-30".to_string()),
            annual_review_until: (i % 13 == 8).then(|| "2026-10-31".to_string()),
        };
        // Some activated cards carry a QuickPass application too: the purse decides them.
        let quickpass = if spec.enabled && i % CARDS_WITH_QUICKPASS_EVERY == 3 {
            let pan = format!("{}{:010}", issuer.issuer_id(), 900_000 + i);
            let qp = issuer.card(&pan, 0, QUICKPASS_EXPIRY, 1)?;
            Some(SimQuickPass::new(&qp, args.seed)?)
        } else {
            None
        };
        cards.push(SimPhysicalCard::new(
            Some(SimCard::new(&spec, &keys, args.seed)?),
            quickpass,
        ));
        categories.push(c);
        issuers.push(spec.issuer_city);
    }
    let t0 = start.unix_s as u32;
    let channels = SimChannels::new(args.seed, (t0 - 30 * 86_400, t0 + 300 * 86_400));
    let n_qr = QR_HOLDERS_PER_BUS * args.buses.max(1);
    let qr_holders = (0..n_qr)
        .map(|i| {
            let channel = 1 + (i % 8) as u16;
            (
                channel,
                10_000 + i as u64,
                CardNo::from_u128(3714_0000_0000_0005_0000u128 + i as u128).expect("20 digits"),
                category(rng),
            )
        })
        .collect();
    Ok(Population {
        cards,
        categories,
        issuers,
        qr_holders,
        channels,
        counters: vec![0; n_qr],
        qp_cards: quickpass_cards(args, &issuer, &keys)?,
        ca: issuer.ca_keys()?,
    })
}

fn open_bus(
    i: usize,
    dir: &Path,
    list: &Blacklist,
    keys: &ChannelKeys,
    ca: &CaKeys,
    seed: u64,
) -> Result<Bus, String> {
    let dir = dir.join(format!("bus-{:02}", i + 1));
    // The same name for the journal's folder and the depot's terminal id.
    let id = format!("bus-{:02}", i + 1);
    let mut secret: Secret = [0; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let key = JournalKey::for_terminal(&secret, &id);
    let (journal, _) =
        Journal::open_keyed(&dir, Box::new(OsFiles), key).map_err(|e| e.to_string())?;
    let terminal = [0, 0, 0, 0, 0x20 + (i / 100) as u8, (i % 100) as u8];
    let psam =
        Psam::open(SimPsam::new(TestKeys::default(), terminal, 1)).map_err(|e| e.to_string())?;
    let route = 1 + (i % 8) as u16;
    let mut validator = Validator::new(
        EngineConfig {
            route,
            anti_passback_s: 60,
        },
        psam,
        FareTable::from_toml(DEMO_FARES_TOML).map_err(|e| e.to_string())?,
        list.clone(),
        journal,
    );
    validator.set_ride_code_keys(keys.clone(), RideCodeConfig::default());
    // The demo's QuickPass rides: the test CA, the test PAN token key, the test acquirer.
    validator.set_quickpass(ca.clone(), PanTokenKey::TEST, seed ^ (i as u64 + 1));
    Ok(Bus {
        id,
        secret,
        route,
        dir,
        validator,
    })
}

/// The blacklist the day starts with: some cards lost, some replaced, an account in arrears.
fn morning_blacklist(pop: &Population) -> Blacklist {
    let mut entries = Vec::new();
    for i in (0..pop.cards.len()).step_by(41) {
        entries.push((ListId::Card(card_no(i)), ListReason::Lost));
    }
    for i in (13..pop.cards.len()).step_by(67) {
        entries.push((ListId::Card(card_no(i)), ListReason::Replaced));
    }
    for (i, (channel, account, card, _)) in pop.qr_holders.iter().enumerate() {
        if i % 31 == 3 {
            entries.push((
                ListId::Account(AccountId {
                    channel: *channel,
                    account: *account,
                }),
                ListReason::Arrears,
            ));
        }
        if i % 37 == 9 {
            entries.push((ListId::Card(*card), ListReason::Lost));
        }
    }
    // QuickPass cards by PAN token (kind `pan`): lost, or a ride the acquirer could not charge.
    for j in 0..pop.qp_cards.len() {
        let reason = match quickpass_kind(j) {
            QuickPassKind::ListedLost => ListReason::Lost,
            QuickPassKind::ListedArrears => ListReason::Arrears,
            _ => continue,
        };
        let pan = Pan::parse(&quickpass_pan(j)).expect("16 digits");
        entries.push((ListId::Pan(PanTokenKey::TEST.token(&pan)), reason));
    }
    Blacklist::from_entries(1, entries)
}

/// One passenger presentation at `now`.
fn presentation(rng: &mut ChaCha8Rng, pop: &mut Population, now: Timestamp) -> Presentation {
    let roll = rng.gen_range(0..100);
    if roll < 65 {
        let holder = rng.gen_range(0..pop.cards.len());
        let removal = match rng.gen_range(0..200) {
            0 => Some(Removal::AfterDebit),
            1 => Some(Removal::BeforeDebit),
            _ => None,
        };
        let riders = if rng.gen_range(0..15) == 0 {
            rng.gen_range(2..=DEMO_FAMILY_RIDERS_MAX)
        } else {
            1
        };
        return Presentation::Card {
            holder,
            removal,
            riders,
        };
    }
    let i = rng.gen_range(0..pop.qr_holders.len());
    let (channel, account, card, cat) = pop.qr_holders[i];
    pop.counters[i] += 1;
    let mut generated_at = (now.unix_s - rng.gen_range(0..20)) as u32;
    if roll == 99 {
        generated_at -= 600; // a screenshot kept too long: expired
    }
    let text = pop
        .channels
        .issue(channel, account, card, cat, generated_at, pop.counters[i])
        .unwrap_or_default();
    let text = if roll == 98 {
        // Forged: one character of the signature changed.
        let mut b = text.into_bytes();
        let last = b.len() - 3;
        b[last] = if b[last] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap_or_default()
    } else {
        text
    };
    Presentation::Code { text }
}

fn tally(report: &mut DemoReport, media: &str, d: &Decision, route: u16) {
    // A card with both applications that rode on QuickPass counts as a QuickPass tap.
    let media = if d.media == Media::Quickpass {
        Media::Quickpass.as_str()
    } else {
        media
    };
    let reason = d.outcome.err().map_or("accepted", |r| r.as_str());
    *report
        .taps
        .entry(media.to_string())
        .or_default()
        .entry(reason.to_string())
        .or_default() += 1;
    if let (true, Some(note)) = (d.accepted(), d.fare_note) {
        *report
            .fare_notes
            .entry(note.as_str().to_string())
            .or_default() += 1;
    }
    if d.accepted() {
        report.accepted += 1;
        report.journal_fare_fen += u64::from(d.fare_fen);
        *report.revenue_by_route_fen.entry(route).or_default() += u64::from(d.fare_fen);
    }
}

/// Mixed into the seed for the QuickPass passengers' stream.
const QUICKPASS_STREAM: u64 = 0x5155_4943_4B50_4153; // "QUICKPAS"

/// A QuickPass passenger boards `bus` at `now`; one in [`QUICKPASS_REMOVED_ONE_IN`] pulls the
/// card away before or after GET PROCESSING OPTIONS (`card_removed`, nothing recorded) and
/// taps again 3 s later.
fn quickpass_passenger(
    bus: &mut Bus,
    card: &mut SimPhysicalCard,
    rng: &mut ChaCha8Rng,
    now: Timestamp,
    report: &mut DemoReport,
    latency: &mut Histogram<u64>,
) {
    let removal = match rng.gen_range(0..QUICKPASS_REMOVED_ONE_IN * 2) {
        0 => Some(Removal::BeforeDebit),
        1 => Some(Removal::AfterDebit),
        _ => None,
    };
    let both = card.transport.is_some();
    report.quickpass_passengers += 1;
    let mut tap = |card: &mut SimPhysicalCard, at: Timestamp, report: &mut DemoReport| {
        let began = Instant::now();
        let d = bus.validator.tap_card(card, at);
        latency.saturating_record(began.elapsed().as_micros().max(1) as u64);
        tally(report, Media::Quickpass.as_str(), &d, bus.route);
        if both {
            *report
                .both_applications
                .entry(d.media.as_str().to_string())
                .or_default() += 1;
        }
    };
    card.enter_field(removal);
    tap(card, now, report);
    if removal.is_some() {
        report.re_presentations += 1;
        card.enter_field(None);
        tap(card, now.plus_s(3), report);
    }
}

/// The demo's day starts from nothing: journals or a depot database left by an earlier run
/// would be uploaded again and counted twice, so a folder that holds anything is refused.
fn ensure_empty_data_dir(dir: &std::path::Path) -> Result<(), String> {
    let at = |e: std::io::Error| format!("{}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(at)?;
    if std::fs::read_dir(dir).map_err(at)?.next().is_some() {
        return Err(format!(
            "{}: --data must be a new or empty folder (an earlier day's journals and depot \
             would be counted again); remove it or choose another",
            dir.display()
        ));
    }
    Ok(())
}

/// Run the day in `--data` or a temporary folder; the report.
pub fn simulate(args: &DemoArgs) -> Result<DemoReport, String> {
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
    simulate_in(args, &dir)
}

/// Run the day with its journals and depot database in `dir` (new or empty).
pub fn simulate_in(args: &DemoArgs, dir: &Path) -> Result<DemoReport, String> {
    let dir = dir.to_path_buf();
    ensure_empty_data_dir(&dir)?;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let start = Timestamp::parse_rfc3339(DEMO_DAY_START).map_err(|e| e.to_string())?;
    let mut pop = population(args, &mut rng, start)?;
    let keys = ChannelKeys::from_file(&pop.channels.key_file()).map_err(|e| e.to_string())?;
    let list = morning_blacklist(&pop);
    let mut buses: Vec<Bus> = (0..args.buses)
        .map(|i| open_bus(i, &dir, &list, &keys, &pop.ca, args.seed))
        .collect::<Result<_, _>>()?;
    // The QuickPass passengers' own stream: the other passengers stay those of the seed.
    let mut qp_rng = ChaCha8Rng::seed_from_u64(args.seed ^ QUICKPASS_STREAM);
    let mut qp_latency =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut report = DemoReport {
        buses: args.buses,
        taps_per_bus: args.taps_per_bus,
        ..DemoReport::default()
    };
    let mut latency =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let total = args.buses * args.taps_per_bus;
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} taps")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    bar.set_message("service day");
    let mut replayable: Option<(String, Timestamp)> = None;
    let step_s = (DEMO_DAY_S / args.taps_per_bus.max(1) as i64).max(1);
    for t in 0..total {
        let bus_i = t % args.buses.max(1);
        let now = start.plus_s((t / args.buses.max(1)) as i64 * step_s + rng.gen_range(0..step_s));
        if t == total / 2 {
            // Midday: the depot pushes 解挂 for a found card and a new 挂失 to every bus.
            for b in buses.iter_mut() {
                b.validator.apply_blacklist(&Change {
                    op: ChangeOp::Remove,
                    id: ListId::Card(card_no(0)),
                    reason: ListReason::Lost,
                });
                b.validator.apply_blacklist(&Change {
                    op: ChangeOp::Add,
                    id: ListId::Card(card_no(1)),
                    reason: ListReason::Lost,
                });
            }
        }
        let bus = &mut buses[bus_i];
        let route = bus.route;
        if quickpass_boards(t, args.buses) && !pop.qp_cards.is_empty() {
            let n = pop.qp_cards.len();
            let card = &mut pop.qp_cards[report.quickpass_passengers as usize % n];
            quickpass_passenger(bus, card, &mut qp_rng, now, &mut report, &mut qp_latency);
        }
        match presentation(&mut rng, &mut pop, now) {
            Presentation::Card {
                holder,
                removal,
                riders,
            } => {
                let card = &mut pop.cards[holder];
                card.enter_field(removal);
                // The fare without a transfer, at this hour, by the card's issuer and type.
                let fares = bus.validator.fares();
                let city = pop.issuers[holder].unwrap_or(fares.interop.home_city);
                let issuer = fares
                    .issuer(city, INTEROP_KIND_TUNION)
                    .unwrap_or(Issuer::Interop);
                let full = fares
                    .card_fare(pop.categories[holder], issuer, route, &now, None)
                    .fare_fen;
                let began = Instant::now();
                let d = bus.validator.tap_card(card, now);
                latency.saturating_record(began.elapsed().as_micros().max(1) as u64);
                tally(&mut report, "card", &d, route);
                if card.quickpass.is_some() {
                    *report
                        .both_applications
                        .entry(d.media.as_str().to_string())
                        .or_default() += 1;
                }
                if d.accepted() && d.fare_fen < full {
                    report.transfers += 1;
                }
                if removal.is_some() {
                    report.re_presentations += 1;
                    card.enter_field(None);
                    let d = bus.validator.tap_card(card, now.plus_s(3));
                    tally(&mut report, "card", &d, route);
                }
                if d.accepted() && removal.is_none() && pop.issuers[holder].is_some() {
                    report.interop_taps += 1;
                }
                for rider in 1..riders {
                    // The rest of a family on the same card: another rider each (adult
                    // cards), a repeat_tap for the others.
                    report.re_presentations += 1;
                    card.enter_field(None);
                    let d = bus.validator.tap_card(card, now.plus_s(2 * rider as i64));
                    tally(&mut report, "card", &d, route);
                }
            }
            Presentation::Code { text } => {
                let began = Instant::now();
                let d = bus.validator.scan_code(&text, now);
                latency.saturating_record(began.elapsed().as_micros().max(1) as u64);
                tally(&mut report, "qr", &d, route);
                if d.accepted() && t % 40 == 1 {
                    // The phone is waved at the scanner again: the same code is refused.
                    report.re_presentations += 1;
                    let again = bus.validator.scan_code(&text, now.plus_s(2));
                    tally(&mut report, "qr", &again, route);
                }
                if d.accepted() && replayable.is_none() && bus_i + 1 < args.buses {
                    replayable = Some((text, now));
                } else if let Some((shot, shot_at)) =
                    replayable.take().filter(|_| bus_i > 0 && t % 7 == 0)
                {
                    // A screenshot of the code shown on another bus: each bus accepts it once,
                    // the depot charges it once.
                    report.re_presentations += 1;
                    let d = bus.validator.scan_code(&shot, shot_at.plus_s(10));
                    tally(&mut report, "qr", &d, route);
                }
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    report.latency_us_p50 = latency.value_at_quantile(0.50);
    report.latency_us_p99 = latency.value_at_quantile(0.99);
    report.latency_us_max = latency.max();
    report.quickpass_latency_us_p50 = qp_latency.value_at_quantile(0.50);
    report.quickpass_latency_us_p99 = qp_latency.value_at_quantile(0.99);
    night_upload(&dir, &mut buses, &mut report)?;
    Ok(report)
}

/// The buses return: a depot station on 127.0.0.1 takes every journal in.
fn night_upload(dir: &Path, buses: &mut [Bus], report: &mut DemoReport) -> Result<(), String> {
    let db = dir.join("depot.db");
    let store = Store::open(&db).map_err(|e| e.to_string())?;
    // The demo's own operator key, made on purpose in its folder (a station never makes one).
    let operator = crate::signed::generate_signing_key();
    crate::signed::write_signing_key(&dir.join("operator.key"), &operator)
        .map_err(|e| e.to_string())?;
    store
        .set_operator_key(&operator)
        .map_err(|e| e.to_string())?;
    let mut secrets = Vec::with_capacity(buses.len());
    for b in buses.iter() {
        // Each bus keeps its master secret; the station keeps only the key derived from it.
        store
            .add_terminal_with_secret(&b.id, &b.secret)
            .map_err(|e| e.to_string())?;
        secrets.push(b.secret);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let uploaded = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let station = crate::depot::server::start(listener, store).map_err(|e| e.to_string())?;
        let addr = station.addr();
        let mut tasks = Vec::new();
        for (b, secret) in buses.iter().zip(secrets) {
            let (dir, id) = (b.dir.clone(), b.id.clone());
            tasks.push(tokio::spawn(async move {
                crate::upload::client::upload(&dir, addr, &id, &secret).await
            }));
        }
        let mut uploaded = 0;
        for t in tasks {
            let r = t
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            uploaded += r.uploaded;
        }
        station.shutdown().await;
        Ok::<u64, String>(uploaded)
    })?;
    report.uploaded = uploaded;
    let store = Store::open(&db).map_err(|e| e.to_string())?;
    let depot = store.report().map_err(|e| e.to_string())?;
    // What `depot export --acquirer` writes: one ride per QuickPass tap accepted.
    store
        .for_each_acquirer_ride(|ride| {
            report.acquirer_rides += 1;
            if ride.problem.is_some() || ride.sealed_pan.is_none() {
                report.acquirer_rides_without_data += 1;
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    for t in depot.terminals.values() {
        report.depot_records += t.records;
        report.depot_fare_fen += t.fare_fen;
        report.depot_gaps += t.gaps.len() as u64;
    }
    for f in &depot.findings {
        *report.depot_findings.entry(f.kind.to_string()).or_default() += f.count;
    }
    report.qr_conflicts = depot.qr_conflicts.len() as u64;
    report.depot_fare_fen_by_rule = depot.fare_fen_by_rule;
    Ok(())
}

/// `fare-validator demo`.
pub fn run(args: &DemoArgs) -> Result<(), String> {
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
    let r = simulate_in(args, &dir)?;
    if args.json {
        println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
    } else {
        print_report(&r);
    }
    if r.depot_records != r.accepted {
        return Err(format!(
            "{} taps accepted on the buses but {} records stored at the depot",
            r.accepted, r.depot_records
        ));
    }
    let qp_accepted = r.quickpass_accepted();
    if r.acquirer_rides != qp_accepted || r.acquirer_rides_without_data > 0 {
        return Err(format!(
            "{qp_accepted} QuickPass taps accepted on the buses but {} rides for the acquirer \
             at the depot ({} without the acquirer's data)",
            r.acquirer_rides, r.acquirer_rides_without_data
        ));
    }
    if let Some(url) = &args.clearing {
        clear_day(&dir.join("depot.db"), url, args.json)?;
    }
    if let Some(addr) = &args.serve {
        serve_page(&dir.join("depot.db"), addr)?;
    }
    Ok(())
}

/// Forward the day's depot to the clearing database at `url`, clear each service day in it
/// and print the settlement summary (a JSON line {"clearing": ...} with `json`).
#[cfg(feature = "clearing")]
fn clear_day(db: &Path, url: &str, json: bool) -> Result<(), String> {
    let summaries = crate::clearing::clear_depot(db, url, "demo").map_err(|e| e.to_string())?;
    for s in summaries {
        if json {
            println!("{}", serde_json::json!({ "clearing": s }));
            continue;
        }
        println!(
            "clearing {}: {} records, {} TAC failures, {} card / {} PSAM counter gaps, {} duplicate claims charged once, {} accounts capped; fares {} fen, charged {} fen",
            s.service_day, s.records, s.tac_failures, s.card_gaps, s.psam_gaps,
            s.charged_once_duplicates, s.capped_accounts, s.fare_fen, s.charged_fen
        );
        for l in &s.settlement {
            println!(
                "  {:<8} {:<20} {:>6} records {:>9} fen charged",
                l.kind, l.counterparty, l.records, l.charged_fen
            );
        }
    }
    Ok(())
}

#[cfg(not(feature = "clearing"))]
fn clear_day(_db: &Path, _url: &str, _json: bool) -> Result<(), String> {
    Err("--clearing needs a binary built with --features clearing".to_string())
}

/// Keep the depot manager's page up over the day's database until Ctrl-C or SIGTERM.
fn serve_page(db: &Path, addr: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let bound = crate::cli::depot::start_page(db, addr, stopped)
            .await
            .map_err(|(_, e)| e)?;
        eprintln!("depot manager's page: http://{bound}/ (Ctrl-C to stop)");
        crate::cli::depot::wait_for_stop_signal().await;
        let _ = stop.send(true);
        Ok(())
    })
}

fn yuan(fen: u64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

fn print_report(r: &DemoReport) {
    println!(
        "fare-validator demo: one service day on {} buses ({DEMO_DAY_START}, 16 h)",
        r.buses
    );
    let presented: u64 = r.taps.values().flat_map(|m| m.values()).sum();
    println!(
        "{presented} taps and scans: {} buses x {} passengers, plus {} QuickPass passengers, \
         plus {} re-presentations (a card tapped again after it was pulled away, a code waved \
         twice, a screenshot of a code shown on a second bus)",
        r.buses, r.taps_per_bus, r.quickpass_passengers, r.re_presentations
    );
    println!();
    for (media, reasons) in &r.taps {
        let n: u64 = reasons.values().sum();
        println!(
            "{:<28}{n:>8}",
            match media.as_str() {
                "card" => "card taps",
                "quickpass" => "QuickPass taps",
                _ => "ride-code scans",
            }
        );
        for (reason, n) in reasons {
            println!("  {reason:<26}{n:>8}");
        }
    }
    println!("{:<28}{:>8}", "transfers (cards)", r.transfers);
    println!("{:<28}{:>8}", "cards of other cities", r.interop_taps);
    for (note, n) in &r.fare_notes {
        println!("  {note:<26}{n:>8}");
    }
    println!("cards with both applications, taps decided by");
    for (media, n) in &r.both_applications {
        let by = match media.as_str() {
            "card" => "transport purse",
            "quickpass" => "QuickPass",
            other => other,
        };
        println!("  {by:<26}{n:>8}");
    }
    println!();
    println!("revenue by route (yuan)");
    for (route, fen) in &r.revenue_by_route_fen {
        println!("  route {route:<20}{:>8}", yuan(*fen));
    }
    println!(
        "{:<28}{:>8}",
        "  journals, all fares",
        yuan(r.journal_fare_fen)
    );
    println!("{:<28}{:>8}", "  depot, charged", yuan(r.depot_fare_fen));
    for (rule, fen) in &r.depot_fare_fen_by_rule {
        println!("    {:<24}{:>8}", rule.as_str(), yuan(*fen));
    }
    let not_charged = r.journal_fare_fen.saturating_sub(r.depot_fare_fen);
    if not_charged > 0 {
        println!(
            "  the depot charges {} yuan less: {} ride code(s) claimed on more than one bus \
             (one code shown on two buses, e.g. a screenshot): every claim held for clearing",
            yuan(not_charged),
            r.qr_conflicts
        );
    }
    println!();
    println!("{:<28}{:>8}", "records accepted on buses", r.accepted);
    println!("{:<28}{:>8}", "records stored at depot", r.depot_records);
    println!("{:<28}{:>8}", "sequence gaps at depot", r.depot_gaps);
    for (kind, n) in &r.depot_findings {
        println!("{:<28}{:>8}", format!("depot finding {kind}"), n);
    }
    println!("{:<28}{:>8}", "ride codes claimed twice", r.qr_conflicts);
    println!(
        "{:<28}{:>8}",
        "QuickPass rides to acquirer", r.acquirer_rides
    );
    if r.acquirer_rides_without_data > 0 {
        println!(
            "{:<28}{:>8}",
            "  without acquirer data", r.acquirer_rides_without_data
        );
    }
    println!();
    println!(
        "engine latency per tap or scan (dialogue, checks, durable record): p50 {} us, p99 {} us, max {} us",
        r.latency_us_p50, r.latency_us_p99, r.latency_us_max
    );
    println!(
        "QuickPass tap (dialogue with the simulated card and its signing, fDDA, sealed PAN, durable record): p50 {} us, p99 {} us",
        r.quickpass_latency_us_p50, r.quickpass_latency_us_p99
    );
    let verdict = if r.accepted == r.depot_records {
        "OK"
    } else {
        "MISMATCH"
    };
    println!("accepted = stored: {verdict}");
    let verdict =
        if r.acquirer_rides == r.quickpass_accepted() && r.acquirer_rides_without_data == 0 {
            "OK"
        } else {
            "MISMATCH"
        };
    println!("QuickPass accepted = rides to the acquirer: {verdict}");
}
