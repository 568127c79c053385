//! A small service day: what the buses accepted is what the depot stored, and the depot's
//! revenue is the journals' fares with each ride code charged once. Its QuickPass passengers
//! are decided by kind (QuickPass-only, both applications, expired, deny-listed, forged), their
//! rides reach the acquirer's export, and no clear PAN is written anywhere.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::Command;

use fare_validator::card::acquirer::{AcquirerSecret, SealedPan, SEALED_PAN_BYTES};
use fare_validator::card::quickpass::Pan;
use fare_validator::demo::{
    quickpass_boards, quickpass_kind, quickpass_pans, simulate, DemoArgs, QuickPassKind,
    QUICKPASS_CARDS_PER_BUS,
};
use fare_validator::journal;
use fare_validator::types::Media;
use serde_json::Value;

const BUSES: usize = 3;
const TAPS_PER_BUS: usize = 120;

fn small_day(dir: &Path) -> DemoArgs {
    DemoArgs {
        seed: 7,
        buses: BUSES,
        taps_per_bus: TAPS_PER_BUS,
        data: Some(dir.to_path_buf()),
        json: true,
        serve: None,
        clearing: None,
    }
}

#[test]
fn small_day_stores_every_accepted_record_and_revenue_matches_the_journals() {
    let dir = tempfile::tempdir().unwrap();
    let args = small_day(dir.path());
    let r = simulate(&args).unwrap();
    assert!(r.accepted > 100, "{r:?}");
    assert_eq!(r.depot_records, r.accepted);
    assert_eq!(r.depot_gaps, 0);
    // Every bus chains its journal with its own key: nothing unauthenticated, altered or cut.
    assert!(
        r.depot_findings.keys().all(|k| k == "psam_gap"),
        "{:?}",
        r.depot_findings
    );
    assert!(
        r.taps["qr"].len() > 2 && r.taps["card"].len() > 2,
        "{:?}",
        r.taps
    );
    // The fare rules' passengers: cards of other cities, concessions past their dates,
    // families on one card.
    assert!(r.interop_taps > 0, "{r:?}");
    for note in ["concession_ended", "annual_review_due", "extra_rider"] {
        assert!(
            r.fare_notes.get(note).is_some_and(|n| *n > 0),
            "{note}: {r:?}"
        );
    }

    // Sum the fares in the journals themselves; every claim to a ride code seen on two
    // buses is held for clearing.
    let mut fares = 0u64;
    let mut seen: HashMap<(u16, u64, u32), Vec<u32>> = HashMap::new();
    for bus in 1..=3 {
        for rec in journal::scan(&dir.path().join(format!("bus-{bus:02}")))
            .unwrap()
            .records
        {
            fares += u64::from(rec.fare_fen);
            if let Some(q) = rec.qr {
                seen.entry((q.account.channel, q.account.account, q.counter))
                    .or_default()
                    .push(rec.fare_fen);
            }
        }
    }
    let held: u64 = seen
        .values()
        .filter(|claims| claims.len() > 1)
        .flatten()
        .map(|f| u64::from(*f))
        .sum();
    assert_eq!(fares, r.journal_fare_fen);
    assert_eq!(r.depot_fare_fen, fares - held);

    // The depot's revenue by the rule that priced each record: every rule of
    // fixtures/demo-fares.toml priced some boarding, and the split adds up to the revenue.
    use fare_validator::fare::FareRule;
    for rule in [
        FareRule::BaseFare,
        FareRule::Concession,
        FareRule::Timeframe,
        FareRule::Interop,
        FareRule::Transfer,
        FareRule::SeveralRiders,
        FareRule::Free,
        FareRule::RideCodeCategory,
    ] {
        assert!(
            r.depot_fare_fen_by_rule.contains_key(&rule),
            "{rule:?}: {:?}",
            r.depot_fare_fen_by_rule
        );
    }
    assert!(!r.depot_fare_fen_by_rule.contains_key(&FareRule::Unknown));
    assert_eq!(
        r.depot_fare_fen_by_rule.values().sum::<u64>(),
        r.depot_fare_fen
    );
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fare-validator"))
}

/// Standard output, and standard error.
fn run_ok(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    (String::from_utf8(out.stdout).unwrap(), err)
}

/// Where one of `pans` is in `bytes`, in digits or as cn bytes (as `5A` carries it).
fn held_pan(bytes: &[u8], pans: &[String]) -> Option<usize> {
    let digits: HashSet<&[u8]> = pans.iter().map(|p| p.as_bytes()).collect();
    let cn: HashSet<Vec<u8>> = pans
        .iter()
        .map(|p| Pan::parse(p).unwrap().to_cn().to_vec())
        .collect();
    let (d_len, cn_len) = (pans[0].len(), pans[0].len().div_ceil(2));
    (0..bytes.len()).find(|&i| {
        let d = bytes[i] == b'6' && bytes.get(i..i + d_len).is_some_and(|w| digits.contains(w));
        let c = bytes[i] == 0x62 && bytes.get(i..i + cn_len).is_some_and(|w| cn.contains(w));
        d || c
    })
}

#[test]
fn quickpass_passengers_are_decided_by_kind_charged_through_the_acquirer_and_never_written_in_clear(
) {
    let dir = tempfile::tempdir().unwrap();
    let r = simulate(&small_day(dir.path())).unwrap();

    // The passengers of the day, each with the decision its card's kind calls for; a card
    // pulled away adds a `card_removed` and its tap again.
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    let mut never_activated = 0;
    let cards = QUICKPASS_CARDS_PER_BUS * BUSES;
    let boarding = (0..BUSES * TAPS_PER_BUS).filter(|t| quickpass_boards(*t, BUSES));
    for k in 0..boarding.count() {
        let kind = quickpass_kind(k % cards);
        *want
            .entry(
                match kind {
                    QuickPassKind::Good | QuickPassKind::BothNeverActivated => "accepted",
                    QuickPassKind::Expired => "card_expired",
                    QuickPassKind::Forged => "bad_certificate",
                    QuickPassKind::ListedLost | QuickPassKind::ListedArrears => "blacklisted",
                }
                .to_string(),
            )
            .or_default() += 1;
        never_activated += u64::from(kind == QuickPassKind::BothNeverActivated);
    }
    assert_eq!(r.quickpass_passengers, want.values().sum::<u64>());
    let mut got = r.taps[Media::Quickpass.as_str()].clone();
    let removed = got.remove("card_removed").unwrap_or(0);
    assert_eq!(got, want, "{:?}", r.taps);
    for reason in ["accepted", "card_expired", "bad_certificate", "blacklisted"] {
        assert!(
            want.get(reason).is_some_and(|n| *n > 0),
            "{reason}: {want:?}"
        );
    }
    // Both applications: the purse when activated, QuickPass when never activated.
    assert!(
        r.both_applications.get("card").is_some_and(|n| *n > 0),
        "{r:?}"
    );
    let by_quickpass = r.both_applications.get("quickpass").copied().unwrap_or(0);
    assert!(
        never_activated > 0
            && (never_activated..=never_activated + removed).contains(&by_quickpass),
        "{never_activated} {r:?}"
    );

    // Recorded on the buses, stored at the depot once, each a ride for the acquirer.
    assert_eq!(r.depot_records, r.accepted);
    let accepted = want["accepted"];
    let journaled: u64 = (1..=BUSES)
        .map(|bus| {
            journal::scan(&dir.path().join(format!("bus-{bus:02}")))
                .unwrap()
                .records
                .iter()
                .filter(|rec| rec.quickpass.is_some())
                .count() as u64
        })
        .sum();
    assert_eq!(journaled, accepted);
    assert_eq!(
        (r.acquirer_rides, r.acquirer_rides_without_data),
        (accepted, 0)
    );
    let db = dir.path().join("depot.db");
    let (export, export_log) = run_ok(
        bin()
            .args(["depot", "export", "--acquirer", "--db"])
            .arg(&db),
    );
    let rides: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rides.len() as u64, accepted);
    // Only the acquirer opens a sealed PAN: one of the day's cards.
    let secret = AcquirerSecret::from_hex(include_str!("../fixtures/acquirer-test.key")).unwrap();
    let pans = quickpass_pans(BUSES);
    for ride in &rides {
        assert_eq!(ride["problem"], Value::Null, "{ride}");
        let sealed: [u8; SEALED_PAN_BYTES] = hex::decode(ride["sealed_pan"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let cryptogram: [u8; 8] = hex::decode(ride["cryptogram"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let atc = ride["atc"].as_u64().unwrap() as u16;
        let pan = secret.open(&SealedPan(sealed), &cryptogram, atc).unwrap();
        assert!(pans.iter().any(|p| Pan::parse(p) == Some(pan)), "{ride}");
    }

    // No clear PAN in the journals, the depot's database, its exports or `journal show`.
    let (csv, csv_log) = run_ok(bin().args(["depot", "export", "--db"]).arg(&db));
    let mut texts = vec![export, export_log, csv, csv_log];
    for bus in 1..=BUSES {
        let (shown, log) = run_ok(
            bin()
                .args(["journal", "show"])
                .arg(dir.path().join(format!("bus-{bus:02}"))),
        );
        texts.extend([shown, log]);
    }
    assert!(texts[4].contains("628888******"), "{}", texts[4]);
    for f in common::files_under(dir.path()) {
        let bytes = std::fs::read(&f).unwrap();
        assert_eq!(
            held_pan(&bytes, &pans),
            None,
            "{} holds a clear PAN",
            f.display()
        );
    }
    for text in &texts {
        assert_eq!(
            held_pan(text.as_bytes(), &pans),
            None,
            "an output holds a clear PAN"
        );
    }
}
