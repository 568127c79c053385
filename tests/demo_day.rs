//! A small service day: what the buses accepted is what the depot stored, and the depot's
//! revenue is the journals' fares with each ride code charged once.

use std::collections::HashMap;

use fare_validator::demo::{simulate, DemoArgs};
use fare_validator::journal;

#[test]
fn small_day_stores_every_accepted_record_and_revenue_matches_the_journals() {
    let dir = tempfile::tempdir().unwrap();
    let args = DemoArgs {
        seed: 7,
        buses: 3,
        taps_per_bus: 120,
        data: Some(dir.path().to_path_buf()),
        json: true,
        serve: None,
        clearing: None,
    };
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
