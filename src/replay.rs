//! The replay contract (docs/replay.md): a stream of taps, scans and changes runs
//! through the same [`Validator`] a bus runs, against simulated cards, and each tap or scan
//! prints one JSON line, after its record is durable. A `power_cut` tap stops where the power
//! goes and prints nothing; then, as after `restart`, the validator starts again from its disk
//! (journal, grey records, installed blacklist and keys) while the simulated cards and PSAM
//! keep their state, as hardware does.
//!
//! ```text
//! fare-validator replay --cards CARDS.json [--keys KEYS.json] [--blacklist BLACKLIST.csv]
//!                       [--fares FARES.toml] [--journal DIR] [--route ROUTE]
//!                       [--emv-ca CA.json] [--psam-protocol t0|t1] EVENTS.jsonl
//! ```
//!
//! A card may carry the T-Union transport application, a QuickPass application
//! (quickpass.md's fields), or both: each becomes one [`SimPhysicalCard`], tapped by its
//! `card_no` or by its `pan`. `--emv-ca` gives the UnionPay CA keys QuickPass taps are
//! authenticated with; without it every QuickPass tap is `bad_certificate`.
//!
//! `--psam-protocol t0` makes the simulated PSAM answer as a T=0 contact card
//! ([`crate::card::sim::PsamProtocol::T0`]); the engine's channel layer
//! ([`crate::card::apdu::exchange`]) fetches and resends, and the decisions are those of `t1`.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::blacklist::{Blacklist, Change, ChangeOp};
use crate::card::psam::Psam;
use crate::card::quickpass::{CaKeys, PanTokenKey};
use crate::card::sim::{CardSpec, PsamProtocol, Removal, SimCard, SimPsam, TestKeys};
use crate::card::sim_quickpass::{QuickPassSpec, SimPhysicalCard, SimQuickPass, QUICKPASS_FIELDS};
use crate::clock::Timestamp;
use crate::engine::{Decision, EngineConfig, Subject, Validator, UNPREDICTABLE_SEED_DEFAULT};
use crate::fare::FareTable;
use crate::journal::Journal;
use crate::types::{CardNo, ListId, ListReason};

/// Terminal number of the replay validator's PSAM.
pub const REPLAY_TERMINAL_NO: [u8; 6] = [0x00, 0x00, 0x00, 0x00, 0x00, 0x01];
/// Seed of the simulated cards' random numbers.
pub const REPLAY_CARD_SEED: u64 = 0x5EED;
/// Longest event line accepted, bytes.
pub const EVENT_LINE_BYTES_MAX: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{path}: {what}")]
    File { path: String, what: String },
    #[error("events line {line}: {what}")]
    Event { line: usize, what: String },
    #[error("journal: {0}")]
    Journal(#[from] crate::journal::JournalError),
    #[error("output: {0}")]
    Output(#[from] std::io::Error),
}

/// Where in a tap the validator loses power (`power_cut` of replay.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerCut {
    /// Before DEBIT FOR CAPP PURCHASE reaches the card (its grey record is already durable).
    BeforeDebit,
    /// After the card debited its purse, before the validator read the proof.
    AfterDebit,
    /// After the record is durable, before the decision is shown.
    AfterRecord,
}

/// Which card a tap names: by its transport serial number or by its QuickPass PAN.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TapTarget {
    CardNo(CardNo),
    /// The PAN's digits.
    Pan(String),
}

impl std::fmt::Display for TapTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TapTarget::CardNo(c) => c.fmt(f),
            TapTarget::Pan(p) => match crate::card::quickpass::Pan::parse(p) {
                Some(pan) => pan.fmt(f),
                None => f.write_str("an invalid PAN"),
            },
        }
    }
}

/// One line of EVENTS.jsonl.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Tap {
        at: String,
        time: Timestamp,
        card: TapTarget,
        removal: Option<Removal>,
        power_cut: Option<PowerCut>,
    },
    /// The validator is switched off and on.
    Restart {
        time: Timestamp,
    },
    Scan {
        at: String,
        time: Timestamp,
        qr: String,
    },
    Route {
        time: Timestamp,
        route: u16,
    },
    Blacklist {
        time: Timestamp,
        change: Change,
    },
}

fn field<'a>(o: &'a Map<String, Value>, k: &str) -> Result<&'a Value, String> {
    o.get(k).ok_or_else(|| format!("missing field {k:?}"))
}

fn string<'a>(o: &'a Map<String, Value>, k: &str) -> Result<&'a str, String> {
    field(o, k)?
        .as_str()
        .ok_or_else(|| format!("field {k:?} must be a string"))
}

fn only_keys(o: &Map<String, Value>, allowed: &[&str]) -> Result<(), String> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("unexpected field {k:?}")),
        None => Ok(()),
    }
}

/// Parse one event line strictly.
pub fn parse_event(line: &str) -> Result<Event, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let o = v.as_object().ok_or("an event must be a JSON object")?;
    let at = string(o, "at")?.to_string();
    let time = Timestamp::parse_rfc3339(&at).map_err(|e| e.to_string())?;
    if o.contains_key("card_no") || o.contains_key("pan") {
        let card = if o.contains_key("card_no") {
            only_keys(o, &["at", "card_no", "remove", "power_cut"])?;
            TapTarget::CardNo(
                string(o, "card_no")?
                    .parse()
                    .map_err(|e| format!("card_no: {e}"))?,
            )
        } else {
            only_keys(o, &["at", "pan", "remove", "power_cut"])?;
            let pan = string(o, "pan")?;
            if crate::card::quickpass::Pan::parse(pan).is_none() {
                return Err("pan must be 12 to 19 decimal digits".into());
            }
            TapTarget::Pan(pan.to_string())
        };
        let removal = match o.get("remove") {
            None => None,
            Some(Value::String(s)) if s == "before_debit" => Some(Removal::BeforeDebit),
            Some(Value::String(s)) if s == "after_debit" => Some(Removal::AfterDebit),
            Some(_) => return Err("remove must be \"before_debit\" or \"after_debit\"".into()),
        };
        let power_cut = match o.get("power_cut") {
            None => None,
            Some(Value::String(s)) if s == "before_debit" => Some(PowerCut::BeforeDebit),
            Some(Value::String(s)) if s == "after_debit" => Some(PowerCut::AfterDebit),
            Some(Value::String(s)) if s == "after_record" => Some(PowerCut::AfterRecord),
            Some(_) => {
                return Err(
                    "power_cut must be \"before_debit\", \"after_debit\" or \"after_record\""
                        .into(),
                )
            }
        };
        if removal.is_some() && power_cut.is_some() {
            return Err("a tap has remove or power_cut, not both".into());
        }
        Ok(Event::Tap {
            at,
            time,
            card,
            removal,
            power_cut,
        })
    } else if o.contains_key("restart") {
        only_keys(o, &["at", "restart"])?;
        if o.get("restart") != Some(&Value::Bool(true)) {
            return Err("restart must be true".into());
        }
        Ok(Event::Restart { time })
    } else if o.contains_key("qr") {
        only_keys(o, &["at", "qr"])?;
        Ok(Event::Scan {
            at,
            time,
            qr: string(o, "qr")?.to_string(),
        })
    } else if o.contains_key("route") {
        only_keys(o, &["at", "route"])?;
        let route = field(o, "route")?;
        let route = match route {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        };
        let route = route
            .and_then(|r| u16::try_from(r).ok())
            .ok_or("route must be a number 0..65535")?;
        Ok(Event::Route { time, route })
    } else if o.contains_key("blacklist") {
        only_keys(o, &["at", "blacklist"])?;
        let b = field(o, "blacklist")?
            .as_object()
            .ok_or("blacklist must be an object")?;
        only_keys(b, &["op", "kind", "id", "reason"])?;
        let op = match string(b, "op")? {
            "add" => ChangeOp::Add,
            "remove" => ChangeOp::Remove,
            other => return Err(format!("op must be add or remove, not {other:?}")),
        };
        let id = ListId::parse(string(b, "kind")?, string(b, "id")?).map_err(|e| e.to_string())?;
        let reason: ListReason = string(b, "reason")?.parse()?;
        Ok(Event::Blacklist {
            time,
            change: Change { op, id, reason },
        })
    } else {
        Err("not an event: expected card_no, pan, qr, route, blacklist or restart".into())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CardsFile {
    cards: Vec<Map<String, Value>>,
}

/// The simulated cards of a run, found by card number or by PAN.
pub struct Cards {
    cards: Vec<SimPhysicalCard>,
    by_card_no: HashMap<CardNo, usize>,
    by_pan: HashMap<String, usize>,
}

impl Cards {
    pub fn get_mut(&mut self, target: &TapTarget) -> Option<&mut SimPhysicalCard> {
        let i = match target {
            TapTarget::CardNo(c) => self.by_card_no.get(c),
            TapTarget::Pan(p) => self.by_pan.get(p),
        }?;
        self.cards.get_mut(*i)
    }

    pub fn len(&self) -> usize {
        self.cards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cards.is_empty()
    }
}

/// One CARDS.json entry: its transport part (replay.md's fields) and its QuickPass part
/// (quickpass.md's fields), either of which may be absent.
pub fn card_entry(
    entry: &Map<String, Value>,
    keys: &TestKeys,
) -> Result<(Option<SimCard>, Option<SimQuickPass>), String> {
    let (qp, transport): (Map<String, Value>, Map<String, Value>) = entry
        .clone()
        .into_iter()
        .partition(|(k, _)| QUICKPASS_FIELDS.contains(&k.as_str()));
    let transport = if transport.is_empty() {
        None
    } else {
        let spec: CardSpec =
            serde_json::from_value(Value::Object(transport)).map_err(|e| e.to_string())?;
        Some(SimCard::new(&spec, keys, REPLAY_CARD_SEED)?)
    };
    let quickpass = if qp.is_empty() {
        None
    } else {
        let spec: QuickPassSpec =
            serde_json::from_value(Value::Object(qp)).map_err(|e| format!("QuickPass: {e}"))?;
        Some(SimQuickPass::new(&spec, REPLAY_CARD_SEED)?)
    };
    if transport.is_none() && quickpass.is_none() {
        return Err("a card needs card_no or pan".into());
    }
    Ok((transport, quickpass))
}

/// Inputs of one replay run.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    pub cards: PathBuf,
    pub keys: Option<PathBuf>,
    pub blacklist: Option<PathBuf>,
    pub fares: Option<PathBuf>,
    pub journal: Option<PathBuf>,
    pub route: u16,
    /// How the simulated PSAM answers: T=1 (default) or T=0 (`61xx`, `6Cxx`).
    pub psam_protocol: PsamProtocol,
    /// UnionPay CA public keys for QuickPass taps (quickpass.md).
    pub emv_ca: Option<PathBuf>,
}

fn read(path: &std::path::Path) -> Result<String, ReplayError> {
    std::fs::read_to_string(path).map_err(|e| ReplayError::File {
        path: path.display().to_string(),
        what: e.to_string(),
    })
}

fn file_err(path: &std::path::Path, what: impl std::fmt::Display) -> ReplayError {
    ReplayError::File {
        path: path.display().to_string(),
        what: what.to_string(),
    }
}

/// Load CARDS.json into simulated cards.
pub fn load_cards(path: &std::path::Path) -> Result<Cards, ReplayError> {
    let f: CardsFile = serde_json::from_str(&read(path)?).map_err(|e| file_err(path, e))?;
    let keys = TestKeys::default();
    let mut cards = Cards {
        cards: Vec::with_capacity(f.cards.len()),
        by_card_no: HashMap::with_capacity(f.cards.len()),
        by_pan: HashMap::new(),
    };
    for (i, entry) in f.cards.iter().enumerate() {
        let (transport, quickpass) =
            card_entry(entry, &keys).map_err(|e| file_err(path, format!("card {}: {e}", i + 1)))?;
        if let Some(t) = &transport {
            if cards.by_card_no.insert(t.card_no(), i).is_some() {
                return Err(file_err(path, format!("card {} listed twice", t.card_no())));
            }
        }
        if let Some(q) = &quickpass {
            let digits = String::from_utf8_lossy(q.pan().digits()).into_owned();
            if cards.by_pan.insert(digits, i).is_some() {
                return Err(file_err(path, format!("PAN {} listed twice", q.pan())));
            }
        }
        cards.cards.push(SimPhysicalCard::new(transport, quickpass));
    }
    Ok(cards)
}

/// The JSON line replay prints for a decision.
pub fn decision_line(at: &str, d: &Decision, fallback_id: Option<String>) -> Value {
    let id = match d.subject {
        Subject::Card(c) => Some(c.to_string()),
        Subject::Account(a) => Some(a.to_string()),
        Subject::Quickpass(m) => Some(m.to_string()),
        Subject::Unknown => fallback_id,
    };
    let mut line = json!({
        "at": at,
        "media": d.media.as_str(),
        "id": id,
        "result": if d.accepted() { "accepted" } else { "rejected" },
        "reason": d.outcome.err().map(|r| r.as_str()),
        "fare_fen": d.fare_fen,
        "balance_fen": d.balance_fen,
        "seq": d.seq,
    });
    // Only on the lines that have one, so every other line is as it always was.
    if let (Some(note), Some(o)) = (d.fare_note, line.as_object_mut()) {
        o.insert("fare_note".into(), note.as_str().into());
        if let Some(n) = note.rider() {
            o.insert("rider".into(), n.into());
        }
    }
    line
}

/// Counts of one run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplaySummary {
    pub events: usize,
    pub decisions: usize,
    pub accepted: usize,
}

/// Run a replay: read events from `input`, print decisions to `out`.
pub fn run(
    opts: &ReplayOptions,
    input: impl BufRead,
    mut out: impl Write,
) -> Result<ReplaySummary, ReplayError> {
    let mut cards = load_cards(&opts.cards)?;
    let fares = match &opts.fares {
        Some(p) => FareTable::from_toml(&read(p)?).map_err(|e| file_err(p, e))?,
        None => FareTable::default_policy(),
    };
    let blacklist = match &opts.blacklist {
        Some(p) => load_blacklist(p)?,
        None => Blacklist::empty(),
    };
    let _temp;
    let dir = match &opts.journal {
        Some(d) => d.clone(),
        None => {
            let t = tempfile::tempdir()?;
            let d = t.path().to_path_buf();
            _temp = t;
            d
        }
    };
    let cfg = EngineConfig {
        route: opts.route,
        ..EngineConfig::default()
    };
    let mut installed = Installed {
        dir,
        fares,
        blacklist,
        keys: opts.keys.clone(),
        emv_ca: match &opts.emv_ca {
            Some(p) => CaKeys::load(p).map_err(|e| file_err(p, e))?,
            None => CaKeys::empty(),
        },
    };
    let mut v = installed.switch_on(
        cfg,
        SimPsam::new(TestKeys::default(), REPLAY_TERMINAL_NO, 1).with_protocol(opts.psam_protocol),
    )?;
    let mut summary = ReplaySummary::default();
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|e| ReplayError::Event {
            line: i + 1,
            what: e.to_string(),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > EVENT_LINE_BYTES_MAX {
            return Err(ReplayError::Event {
                line: i + 1,
                what: "line too long".into(),
            });
        }
        let ev = parse_event(&line).map_err(|what| ReplayError::Event { line: i + 1, what })?;
        summary.events += 1;
        let printed = match ev {
            Event::Tap {
                at,
                time,
                card: target,
                removal,
                power_cut,
            } => {
                let card = cards.get_mut(&target).ok_or_else(|| ReplayError::Event {
                    line: i + 1,
                    what: format!("card {target} is not in the cards file"),
                })?;
                match power_cut {
                    None => {
                        card.enter_field(removal);
                        let d = v.tap_card(card, time);
                        Some(decision_line(&at, &d, Some(target.to_string())))
                    }
                    Some(cut) => {
                        // The dialogue stops where the power goes: the card keeps what it
                        // did, nothing is shown, and the validator starts again from its disk.
                        card.enter_field(match cut {
                            PowerCut::BeforeDebit => Some(Removal::BeforeDebit),
                            PowerCut::AfterDebit => Some(Removal::AfterDebit),
                            PowerCut::AfterRecord => None,
                        });
                        let _ = v.tap_card(card, time);
                        v = installed.restart(v)?;
                        None
                    }
                }
            }
            Event::Restart { .. } => {
                v = installed.restart(v)?;
                None
            }
            Event::Scan { at, time, qr } => {
                let d = v.scan_code(&qr, time);
                Some(decision_line(&at, &d, None))
            }
            Event::Route { route, .. } => {
                v.set_route(route);
                None
            }
            Event::Blacklist { change, .. } => {
                v.apply_blacklist(&change);
                // An installed change: it is on the validator's disk, so it survives restarts.
                installed.blacklist.apply(&change);
                None
            }
        };
        if let Some(line) = printed {
            summary.decisions += 1;
            if line["result"] == "accepted" {
                summary.accepted += 1;
            }
            writeln!(out, "{line}")?;
            out.flush()?;
        }
    }
    Ok(summary)
}

/// What a replay validator keeps across a restart besides the cards: its disk (journal,
/// installed fare table, blacklist and keys).
struct Installed {
    dir: PathBuf,
    fares: FareTable,
    blacklist: Blacklist,
    keys: Option<PathBuf>,
    emv_ca: CaKeys,
}

impl Installed {
    /// Switch a validator on from the disk, with this PSAM.
    fn switch_on(
        &self,
        cfg: EngineConfig,
        psam: SimPsam,
    ) -> Result<Validator<SimPsam>, ReplayError> {
        let (journal, _problems) = Journal::open(&self.dir)?;
        let psam = Psam::open(psam).map_err(|e| ReplayError::File {
            path: "PSAM".into(),
            what: e.to_string(),
        })?;
        let mut v = Validator::new(
            cfg,
            psam,
            self.fares.clone(),
            self.blacklist.clone(),
            journal,
        );
        v.set_quickpass(
            self.emv_ca.clone(),
            PanTokenKey::TEST,
            UNPREDICTABLE_SEED_DEFAULT,
        );
        if let Some(p) = &self.keys {
            let keys = crate::ride_code::ChannelKeys::load(p).map_err(|e| file_err(p, e))?;
            v.set_ride_code_keys(keys, crate::ride_code::RideCodeConfig::default());
        }
        Ok(v)
    }

    /// Switch off and on: memory is gone; the PSAM keeps its transaction counter and the
    /// vehicle its route.
    fn restart(&self, v: Validator<SimPsam>) -> Result<Validator<SimPsam>, ReplayError> {
        let cfg = v.config().clone();
        let mut psam = v.into_psam().into_channel();
        psam.reset();
        self.switch_on(cfg, psam)
    }
}

/// BLACKLIST.csv of replay.md, or a signed snapshot (`blacklist build`). A snapshot's
/// signature is checked only by validators that hold the operator key (the depot downlink);
/// replay takes the file as given and logs that.
pub fn load_blacklist(path: &std::path::Path) -> Result<Blacklist, ReplayError> {
    crate::blacklist::file::load_blacklist_file(path, None).map_err(|e| file_err(path, e))
}
