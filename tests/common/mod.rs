//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use fare_validator::blacklist::Blacklist;
use fare_validator::card::psam::Psam;
use fare_validator::card::sim::{SimPsam, TestKeys};
use fare_validator::engine::{EngineConfig, Validator};
use fare_validator::fare::FareTable;
use fare_validator::journal::Journal;
use fare_validator::replay::{self, ReplayOptions};
use serde_json::Value;

/// Every file below `dir`, in its sub-folders too (a test that greps a run's output for what
/// must never be written).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

/// Card number `n` of fixtures/replay/cards.json.
pub fn card(n: u32) -> String {
    format!("371400000000000000{n:02}")
}

pub fn tap(at: &str, n: u32) -> String {
    format!(r#"{{"at": "{at}", "card_no": "{}"}}"#, card(n))
}

pub fn options(journal: Option<PathBuf>) -> ReplayOptions {
    ReplayOptions {
        cards: fixture("replay/cards.json"),
        journal,
        route: 1,
        ..ReplayOptions::default()
    }
}

/// Run events (one per line) through replay with the fixture cards; the decision lines.
pub fn replay_with(opts: &ReplayOptions, events: &[String]) -> Vec<Value> {
    let input = events.join("\n");
    let mut out = Vec::new();
    replay::run(opts, input.as_bytes(), &mut out).expect("replay runs");
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn replay_events(events: &[String]) -> Vec<Value> {
    replay_with(&options(None), events)
}

pub fn reason(line: &Value) -> &str {
    line["reason"].as_str().unwrap_or("accepted")
}

/// A validator in-process: a simulated PSAM of `keys` (terminal 000000000001), the default
/// fare policy, an empty blacklist and a journal in `dir`.
pub fn sim_validator(dir: &Path, keys: TestKeys) -> Validator<SimPsam> {
    sim_validator_with_fares(dir, keys, FareTable::default_policy())
}

/// [`sim_validator`] with the fare table `fares`.
pub fn sim_validator_with_fares(
    dir: &Path,
    keys: TestKeys,
    fares: FareTable,
) -> Validator<SimPsam> {
    let psam = Psam::open(SimPsam::new(keys, [0, 0, 0, 0, 0, 1], 1)).unwrap();
    let (journal, _) = Journal::open(dir).unwrap();
    Validator::new(
        EngineConfig::default(),
        psam,
        fares,
        Blacklist::empty(),
        journal,
    )
}

/// fixtures/fares-every-rule.toml: a table with a rule of every kind.
pub fn every_rule_fares() -> FareTable {
    FareTable::from_toml(include_str!("../../fixtures/fares-every-rule.toml")).unwrap()
}
