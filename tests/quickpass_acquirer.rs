//! A QuickPass ride charged after the fact, through a real depot on loopback: the tap keeps
//! the acquirer's data beside its record, the upload carries it, `depot export --acquirer`
//! gives the acquirer what it needs (the PAN sealed to it, field 55), a declined charge comes
//! back as `arrears` on the deny list in the next downlink and refuses that card's next tap,
//! and paying lifts it.

mod common;
mod depot_support;
mod support;

use std::path::{Path, PathBuf};

use depot_support::*;
use ed25519_dalek::SigningKey;
use fare_validator::blacklist::{Change, ChangeOp};
use fare_validator::card::acquirer::{field55_value, AcquirerSecret, SealedPan, SEALED_PAN_BYTES};
use fare_validator::card::quickpass::Pan;
use fare_validator::depot::acquirer::{AcquirerRide, DeclineLine, DeclineOutcome};
use fare_validator::depot::Store;
use fare_validator::journal::acquirer::ACQUIRER_FILE;
use fare_validator::replay::{self, ReplayOptions};
use fare_validator::types::{ListId, ListReason, ReasonSet};
use fare_validator::upload::downlink::DownlinkDir;
use fare_validator::upload::{self, UploadReport};
use serde_json::{json, Value};
use support::{bin, run_ok};

const PAN: &str = "6214830000000001";

fn vectors() -> Value {
    let text = std::fs::read_to_string(common::fixture("quickpass-v1.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The bus: simulated cards, the CA keys, a journal folder that replay keeps across runs.
struct Bus {
    dir: tempfile::TempDir,
}

impl Bus {
    fn new() -> Bus {
        let dir = tempfile::tempdir().unwrap();
        let card = vectors()["cases"][0]["card"].clone();
        std::fs::write(
            dir.path().join("cards.json"),
            json!({ "cards": [card] }).to_string(),
        )
        .unwrap();
        std::fs::write(dir.path().join("ca.json"), vectors()["ca_keys"].to_string()).unwrap();
        Bus { dir }
    }

    fn journal(&self) -> std::path::PathBuf {
        self.dir.path().join("journal")
    }

    /// Tap the card at `at` with the deny list the depot sent (as BLACKLIST.csv).
    fn tap(&self, at: &str) -> Value {
        let held = DownlinkDir::new(&self.journal()).blacklist();
        let mut csv = String::from("kind,id,reason\n");
        for (id, reasons) in held.iter() {
            for r in ListReason::ALL.into_iter().filter(|r| reasons.contains(*r)) {
                csv += &format!("{},{id},{}\n", id.kind(), r.as_str());
            }
        }
        let bl = self.dir.path().join("blacklist.csv");
        std::fs::write(&bl, csv).unwrap();
        let opts = ReplayOptions {
            cards: self.dir.path().join("cards.json"),
            emv_ca: Some(self.dir.path().join("ca.json")),
            journal: Some(self.journal()),
            blacklist: Some(bl),
            route: 1,
            ..ReplayOptions::default()
        };
        let mut out = Vec::new();
        let event = json!({"at": at, "pan": PAN}).to_string();
        replay::run(&opts, event.as_bytes(), &mut out).expect("replay runs");
        serde_json::from_slice(&out).unwrap()
    }
}

fn reason(line: &Value) -> &str {
    line["reason"].as_str().unwrap_or("accepted")
}

async fn session(db: &Path, dir: &Path) -> UploadReport {
    let st = station(Store::open(db).unwrap()).await;
    let r = upload::upload(dir, st.addr(), &terminal_id(0), &secret(0))
        .await
        .unwrap();
    st.shutdown().await;
    r
}

fn rides(db: &Path) -> Vec<AcquirerRide> {
    let mut out = Vec::new();
    Store::open(db)
        .unwrap()
        .for_each_acquirer_ride(|r| {
            out.push(r.clone());
            Ok(())
        })
        .unwrap();
    out
}

fn acquirer_secret() -> AcquirerSecret {
    AcquirerSecret::from_hex(include_str!("../fixtures/acquirer-test.key")).unwrap()
}

fn decline(ride: &AcquirerRide, outcome: DeclineOutcome) -> DeclineLine {
    DeclineLine {
        terminal: ride.terminal.clone(),
        epoch: ride.epoch.clone(),
        seq: ride.seq,
        outcome,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_charge_reaches_the_bus_as_arrears_and_paying_lifts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let operator = SigningKey::from_bytes(&[5; 32]);
    store(&db, 1).set_operator_key(&operator).unwrap();
    let bus = Bus::new();

    assert_eq!(reason(&bus.tap("2026-12-01T08:00:00+08:00")), "accepted");
    let side = bus.journal().join(ACQUIRER_FILE);
    assert!(std::fs::metadata(&side).unwrap().len() > 0);
    DownlinkDir::new(&bus.journal())
        .pin_operator_key(&operator.verifying_key())
        .unwrap();
    let r = session(&db, &bus.journal()).await;
    assert_eq!(r.refused, Vec::<String>::new());
    // Acknowledged: the bus no longer holds the acquirer's data.
    assert_eq!(std::fs::metadata(&side).unwrap().len(), 0);

    // The acquirer's file: one ride, its PAN readable with the acquirer's key only.
    let rides = rides(&db);
    assert_eq!(rides.len(), 1);
    let ride = &rides[0];
    assert_eq!(ride.problem, None, "{ride:?}");
    assert_eq!(
        (ride.amount_fen, ride.route, ride.masked_pan.as_str()),
        (200, 1, "621483******0001")
    );
    let sealed: [u8; SEALED_PAN_BYTES] = hex::decode(ride.sealed_pan.as_ref().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let cryptogram: [u8; 8] = hex::decode(&ride.cryptogram).unwrap().try_into().unwrap();
    let pan = acquirer_secret()
        .open(&SealedPan(sealed), &cryptogram, ride.atc)
        .unwrap();
    assert_eq!(pan, Pan::parse(PAN).unwrap());
    let f55 = hex::decode(ride.field55.as_ref().unwrap()).unwrap();
    assert_eq!(field55_value(&f55, &[0x9F, 0x26]), Some(&cryptogram[..]));
    assert_eq!(
        field55_value(&f55, &[0x9F, 0x02]),
        Some(&[0, 0, 0, 0, 2, 0][..])
    );
    assert_eq!(
        field55_value(&f55, &[0x9F, 0x10]).map(hex::encode),
        ride.iad.clone()
    );

    // The charge is declined: arrears by PAN token, in the next downlink.
    let report = Store::open(&db)
        .unwrap()
        .apply_declines(&[decline(ride, DeclineOutcome::Declined)])
        .unwrap();
    assert_eq!(report.listed, std::slice::from_ref(&ride.pan_token));
    let token = ListId::parse("pan", &ride.pan_token).unwrap();
    session(&db, &bus.journal()).await;
    let held = DownlinkDir::new(&bus.journal()).blacklist();
    assert!(held.get(&token).unwrap().contains(ListReason::Arrears));
    assert_eq!(reason(&bus.tap("2026-12-01T09:00:00+08:00")), "blacklisted");

    // Paid: lifted in the next downlink, and the card rides again.
    let report = Store::open(&db)
        .unwrap()
        .apply_declines(&[decline(ride, DeclineOutcome::Paid)])
        .unwrap();
    assert_eq!(report.lifted, std::slice::from_ref(&ride.pan_token));
    session(&db, &bus.journal()).await;
    assert_eq!(
        DownlinkDir::new(&bus.journal()).blacklist().get(&token),
        None
    );
    assert_eq!(reason(&bus.tap("2026-12-01T10:00:00+08:00")), "accepted");
    assert_eq!(Store::open(&db).unwrap().blacklist_version().unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquirer_export_carries_no_clear_pan_and_flags_rides_without_data() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    drop(store(&db, 1));
    let bus = Bus::new();
    assert_eq!(reason(&bus.tap("2026-12-01T08:00:00+08:00")), "accepted");
    assert_eq!(reason(&bus.tap("2026-12-01T09:00:00+08:00")), "accepted");
    // The second ride's acquirer data is lost on the bus before the upload.
    let side = bus.journal().join(ACQUIRER_FILE);
    let bytes = std::fs::read(&side).unwrap();
    std::fs::write(&side, &bytes[..bytes.len() / 2]).unwrap();
    session(&db, &bus.journal()).await;
    let text = run_ok(
        bin()
            .args(["depot", "export", "--acquirer", "--db"])
            .arg(&db),
    );
    assert!(
        !text.contains(PAN),
        "the acquirer's file holds the clear PAN: {text}"
    );
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["problem"], Value::Null);
    assert!(lines[0]["sealed_pan"].is_string());
    assert_eq!(lines[1]["problem"], "no acquirer data from the bus");
    assert_eq!(lines[1]["sealed_pan"], Value::Null);
    assert_eq!(lines[1]["field55"], Value::Null);

    // A declines file naming an unknown ride changes nothing for it; a malformed one is refused.
    let declines = tmp.path().join("declines.jsonl");
    std::fs::write(
        &declines,
        json!({"terminal": "bus-9999", "epoch": lines[0]["epoch"], "seq": 1, "outcome": "declined"})
            .to_string(),
    )
    .unwrap();
    let report: Value = serde_json::from_str(&run_ok(
        bin()
            .args(["depot", "declines", "--db"])
            .arg(&db)
            .arg(&declines),
    ))
    .unwrap();
    assert_eq!(report["unknown"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["listed"], json!([]));
    std::fs::write(&declines, "{\"terminal\": 1}\n").unwrap();
    let out = bin()
        .args(["depot", "declines", "--db"])
        .arg(&db)
        .arg(&declines)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A depot that took home the rides of a bus whose card was tapped at each of `taps` (each
/// accepted): its folder (kept while the test runs), the database and the rides as exported.
async fn depot_with_rides(taps: &[&str]) -> (tempfile::TempDir, PathBuf, Vec<AcquirerRide>) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    drop(store(&db, 1));
    let bus = Bus::new();
    for at in taps {
        assert_eq!(reason(&bus.tap(at)), "accepted");
    }
    session(&db, &bus.journal()).await;
    let rides = rides(&db);
    assert_eq!(rides.len(), taps.len());
    (tmp, db, rides)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrears_entered_at_the_counter_is_not_lifted_by_the_acquirer_paying() {
    let (_tmp, db, rides) = depot_with_rides(&["2026-12-01T08:00:00+08:00"]).await;
    let ride = &rides[0];
    let token = ListId::parse("pan", &ride.pan_token).unwrap();

    // The counter lists the card for arrears of its own; the acquirer then declines the ride
    // and later reports it paid.
    let mut st = Store::open(&db).unwrap();
    st.blacklist_change(&Change {
        op: ChangeOp::Add,
        id: token,
        reason: ListReason::Arrears,
    })
    .unwrap();
    let declined = st
        .apply_declines(&[decline(ride, DeclineOutcome::Declined)])
        .unwrap();
    assert_eq!((declined.declined, declined.listed.len()), (1, 0));
    let paid = st
        .apply_declines(&[decline(ride, DeclineOutcome::Paid)])
        .unwrap();
    assert_eq!((paid.paid, paid.lifted.len()), (1, 0));
    assert!(st
        .blacklist_reasons(&token)
        .unwrap()
        .contains(ListReason::Arrears));
    assert_eq!(st.blacklist_version().unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declines_file_that_fails_midway_changes_nothing() {
    let (_tmp, db, all) =
        depot_with_rides(&["2026-12-01T08:00:00+08:00", "2026-12-01T11:00:00+08:00"]).await;
    let token = ListId::parse("pan", &all[0].pan_token).unwrap();

    // The second ride's stored record is damaged: the file stops there, and the first line's
    // listing must not have been kept either.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE records SET raw = zeroblob(3) WHERE seq = ?1",
        [all[1].seq as i64],
    )
    .unwrap();
    drop(conn);
    let lines = [
        decline(&all[0], DeclineOutcome::Declined),
        decline(&all[1], DeclineOutcome::Declined),
    ];
    let mut st = Store::open(&db).unwrap();
    assert!(st.apply_declines(&lines).is_err());
    assert_eq!(st.blacklist_reasons(&token).unwrap(), ReasonSet::EMPTY);
    assert_eq!(st.blacklist_version().unwrap(), 0);

    // The first line alone goes through.
    let report = st.apply_declines(&lines[..1]).unwrap();
    assert_eq!(report.listed, std::slice::from_ref(&all[0].pan_token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_upgraded_with_unpaid_declines_still_lifts_their_arrears() {
    let (_tmp, db, rides) = depot_with_rides(&["2026-12-01T08:00:00+08:00"]).await;
    let ride = &rides[0];
    let report = Store::open(&db)
        .unwrap()
        .apply_declines(&[decline(ride, DeclineOutcome::Declined)])
        .unwrap();
    assert_eq!(report.listed.len(), 1);

    // A station made before the declines' own listings were marked.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("DROP TABLE acquirer_arrears", []).unwrap();
    drop(conn);
    let report = Store::open(&db)
        .unwrap()
        .apply_declines(&[decline(ride, DeclineOutcome::Paid)])
        .unwrap();
    assert_eq!(report.lifted, std::slice::from_ref(&ride.pan_token));
}

/// A lost QuickPass card listed at the counter by its PAN: tokenised with the depot's key
/// file, never kept or printed in digits; without a key file the test key is used and the
/// command says so loudly; a key file that is not 64 hex digits is refused.
#[test]
fn a_counter_lists_a_pan_under_the_depot_s_token_key() {
    use fare_validator::card::quickpass::PanTokenKey;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("depot.db");
    Store::open(&db).unwrap();
    let key_file = dir.path().join("pan-token.key");
    std::fs::write(&key_file, format!("{}\n", "5a".repeat(32))).unwrap();
    let pan = Pan::parse(PAN).unwrap();
    let add = |extra: &[&str]| {
        let mut cmd = bin();
        cmd.args(["depot", "blacklist", "add", "--db"])
            .arg(&db)
            .args(["--pan", PAN, "--reason", "lost"])
            .args(extra);
        cmd.output().unwrap()
    };

    let out = add(&["--pan-token-key", key_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(PAN));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = PanTokenKey([0x5A; 32]).token(&pan);
    assert_eq!(v["id"], format!("t:{token}"));
    assert_ne!(token, PanTokenKey::TEST.token(&pan));
    assert!(!support::stderr(&out).contains("TEST key"));
    let listed = Store::open(&db)
        .unwrap()
        .blacklist_reasons(&ListId::Pan(token))
        .unwrap();
    assert!(listed.contains(ListReason::Lost), "{listed:?}");

    let out = add(&[]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    assert!(support::stderr(&out).contains("TEST key"));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["id"], format!("t:{}", PanTokenKey::TEST.token(&pan)));

    std::fs::write(&key_file, "not a key\n").unwrap();
    let out = add(&["--pan-token-key", key_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", support::stderr(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(PAN));
}

/// `depot blacklist add|remove --pan` at the counter, as a depot manager types it.
fn counter(db: &Path, op: &str, reason: &str) -> Value {
    serde_json::from_str(&run_ok(
        bin()
            .args([
                "depot",
                "blacklist",
                op,
                "--pan",
                PAN,
                "--reason",
                reason,
                "--db",
            ])
            .arg(db),
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pan_reported_lost_at_the_counter_reaches_the_bus_and_a_late_unlisting_keeps_a_reissue_locked(
) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let operator = SigningKey::from_bytes(&[6; 32]);
    store(&db, 1).set_operator_key(&operator).unwrap();
    let bus = Bus::new();
    DownlinkDir::new(&bus.journal())
        .pin_operator_key(&operator.verifying_key())
        .unwrap();
    assert_eq!(reason(&bus.tap("2026-12-01T08:00:00+08:00")), "accepted");

    // 挂失 at the counter, by the card's PAN in digits: the next downlink refuses it.
    assert_eq!(counter(&db, "add", "lost")["reasons"], json!(["lost"]));
    session(&db, &bus.journal()).await;
    assert_eq!(reason(&bus.tap("2026-12-01T09:00:00+08:00")), "blacklisted");

    // Reissued (补卡) while lost; the old card's late 解挂 lifts `lost` only.
    counter(&db, "add", "replaced");
    let after = counter(&db, "remove", "lost");
    assert_eq!(
        (after["reasons"].clone(), after["locks_card"].clone()),
        (json!(["replaced"]), json!(true))
    );
    session(&db, &bus.journal()).await;
    assert_eq!(reason(&bus.tap("2026-12-01T10:00:00+08:00")), "blacklisted");

    // Both lifted (a counter's mistake undone): the card rides again.
    counter(&db, "remove", "replaced");
    session(&db, &bus.journal()).await;
    assert_eq!(reason(&bus.tap("2026-12-01T11:00:00+08:00")), "accepted");
}
