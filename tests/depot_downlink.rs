//! The downlink: a validator takes the blacklist delta (or a snapshot), the fare table and the
//! ride-code keys only when the operator signed them, and keeps what it had otherwise.

mod depot_support;

use depot_support::*;
use ed25519_dalek::SigningKey;
use fare_validator::blacklist::file::BlacklistFileError;
use fare_validator::blacklist::{Change, ChangeOp};
use fare_validator::depot::{self, Store};
use fare_validator::types::{ListId, ListReason, ReasonSet};
use fare_validator::upload::downlink::{describe, DownlinkDir, DownlinkError, FileKind};
use fare_validator::upload::frame::HeldVersions;
use fare_validator::upload::{self, UploadReport};

fn operator(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn lost_card() -> ListId {
    ListId::Card("37140000000000000009".parse().unwrap())
}

fn change(op: ChangeOp, id: ListId, reason: ListReason) -> Change {
    Change { op, id, reason }
}

const FARES: &str = include_str!("../fixtures/fares.toml");
const KEYS: &str = include_str!("../fixtures/ride-code-keys.json");

async fn session(db: &std::path::Path, dir: &std::path::Path) -> UploadReport {
    let st = station(Store::open(db).unwrap()).await;
    let r = upload::upload(dir, st.addr(), &terminal_id(0), &secret(0))
        .await
        .unwrap();
    st.shutdown().await;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validator_takes_signed_files_and_then_deltas() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let mut s = store(&db, 1);
    s.set_operator_key(&operator(1)).unwrap();
    s.publish("fares", FARES.as_bytes()).unwrap();
    s.publish("keys", KEYS.as_bytes()).unwrap();
    s.blacklist_change(&change(ChangeOp::Add, lost_card(), ListReason::Lost))
        .unwrap();
    let account = ListId::Account("2:1001".parse().unwrap());
    s.blacklist_change(&change(ChangeOp::Add, account, ListReason::Arrears))
        .unwrap();
    drop(s);
    let dir = tmp.path().join("bus");
    card_journal(&dir, 10);
    let held = DownlinkDir::new(&dir);
    held.pin_operator_key(&operator(1).verifying_key()).unwrap();

    let r = session(&db, &dir).await;
    assert_eq!(r.refused, Vec::<String>::new());
    assert_eq!(
        r.installed,
        ["BlacklistDelta@2", "FareTable@1", "RideCodeKeys@1"]
    );
    assert_eq!(
        (r.blacklist_version, r.fares_version, r.keys_version),
        (2, 1, 1)
    );
    assert_eq!(
        held.blacklist().get(&lost_card()),
        Some(ReasonSet::of(ListReason::Lost))
    );
    assert_eq!(held.fare_table().unwrap().1.base_fare_fen, 200);

    // 解挂 at the counter: the next session brings a one-change delta and nothing else.
    Store::open(&db)
        .unwrap()
        .blacklist_change(&change(ChangeOp::Remove, lost_card(), ListReason::Lost))
        .unwrap();
    let r = session(&db, &dir).await;
    assert_eq!(r.installed, ["BlacklistDelta@3"]);
    assert_eq!(held.blacklist().get(&lost_card()), None);
    assert_eq!(
        held.blacklist().get(&account),
        Some(ReasonSet::of(ListReason::Arrears))
    );
    assert_eq!(session(&db, &dir).await.installed, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_keeps_lost_and_replaced_and_the_delta_reaches_the_bus_with_both() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let mut s = store(&db, 1);
    s.set_operator_key(&operator(1)).unwrap();
    let both: ReasonSet = [ListReason::Lost, ListReason::Replaced]
        .into_iter()
        .collect();
    // 挂失, then 补领 of a new card: the old card is lost and replaced.
    s.blacklist_change(&change(ChangeOp::Add, lost_card(), ListReason::Lost))
        .unwrap();
    drop(s);
    let dir = tmp.path().join("bus");
    card_journal(&dir, 10);
    let held = DownlinkDir::new(&dir);
    held.pin_operator_key(&operator(1).verifying_key()).unwrap();
    assert_eq!(session(&db, &dir).await.installed, ["BlacklistDelta@1"]);
    let mut s = Store::open(&db).unwrap();
    s.blacklist_change(&change(ChangeOp::Add, lost_card(), ListReason::Replaced))
        .unwrap();
    assert_eq!(s.blacklist_reasons(&lost_card()).unwrap(), both);
    assert_eq!(s.blacklist().unwrap().get(&lost_card()), Some(both));
    drop(s);
    let r = session(&db, &dir).await;
    assert_eq!(r.installed, ["BlacklistDelta@2"]);
    assert_eq!(held.blacklist().get(&lost_card()), Some(both));

    // A late 解挂 lifts lost only; the bus still refuses and locks the old card.
    let mut s = Store::open(&db).unwrap();
    s.blacklist_change(&change(ChangeOp::Remove, lost_card(), ListReason::Lost))
        .unwrap();
    let left = s.blacklist_reasons(&lost_card()).unwrap();
    assert_eq!(left, ReasonSet::of(ListReason::Replaced));
    // Lifting lost again is refused: it is no longer a reason of the card.
    assert!(matches!(
        s.blacklist_change(&change(ChangeOp::Remove, lost_card(), ListReason::Lost)),
        Err(depot::StoreError::NotListed { .. })
    ));
    drop(s);
    assert_eq!(session(&db, &dir).await.installed, ["BlacklistDelta@3"]);
    let on_bus = held.blacklist().get(&lost_card());
    assert_eq!(on_bus, Some(ReasonSet::of(ListReason::Replaced)));
    assert!(on_bus.is_some_and(ReasonSet::locks_card));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_downlink_is_refused_and_the_validator_keeps_what_it_had() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let mut s = store(&db, 1);
    s.set_operator_key(&operator(1)).unwrap();
    s.publish("fares", FARES.as_bytes()).unwrap();
    s.blacklist_change(&change(ChangeOp::Add, lost_card(), ListReason::Lost))
        .unwrap();
    drop(s);
    let dir = tmp.path().join("bus");
    card_journal(&dir, 10);
    let held = DownlinkDir::new(&dir);
    held.pin_operator_key(&operator(1).verifying_key()).unwrap();
    session(&db, &dir).await;
    let before = held.held_versions();
    assert_eq!(
        before,
        HeldVersions {
            blacklist: 1,
            fares: 1,
            keys: 0,
            cert_set: 0,
        }
    );

    // A station with someone else's key: free rides for everyone, if the bus believed it.
    let mut s = Store::open(&db).unwrap();
    s.set_operator_key(&operator(2)).unwrap();
    s.publish("fares", FARES.replace("200", "0").as_bytes())
        .unwrap();
    s.blacklist_change(&change(ChangeOp::Remove, lost_card(), ListReason::Lost))
        .unwrap();
    drop(s);
    let r = session(&db, &dir).await;
    assert_eq!(r.installed, Vec::<String>::new());
    assert_eq!(r.refused.len(), 2, "{:?}", r.refused);
    assert!(r.refused.iter().all(|e| e.contains("signature")));
    assert_eq!(held.held_versions(), before);
    assert_eq!(
        held.blacklist().get(&lost_card()),
        Some(ReasonSet::of(ListReason::Lost))
    );
    assert_eq!(held.fare_table().unwrap().1.base_fare_fen, 200);
}

#[test]
fn corrupted_or_misapplied_downlink_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = store(&tmp.path().join("depot.db"), 0);
    s.set_operator_key(&operator(1)).unwrap();
    s.publish("fares", FARES.as_bytes()).unwrap();
    s.blacklist_change(&change(ChangeOp::Add, lost_card(), ListReason::Lost))
        .unwrap();
    let held = DownlinkDir::new(tmp.path());
    let files = depot::downlink_for(&s, "bus-0000", &HeldVersions::default()).unwrap();
    assert_eq!(files.len(), 2);
    assert!(matches!(
        held.install(&files[1], now()),
        Err(DownlinkError::NoOperatorKey)
    ));
    held.pin_operator_key(&operator(1).verifying_key()).unwrap();
    for f in &files {
        for at in [0, 7, 20, f.len() / 2, f.len() - 70, f.len() - 1] {
            let mut bad = f.clone();
            bad[at] ^= 0x04;
            assert!(held.install(&bad, now()).is_err(), "byte {at}");
        }
        assert!(held.install(&f[..f.len() - 1], now()).is_err());
    }
    assert_eq!(held.held_versions(), HeldVersions::default());

    held.install(&files[0], now()).unwrap();
    held.install(&files[1], now()).unwrap();
    // A delta from a version the bus does not hold is refused, not half-applied.
    s.blacklist_change(&change(ChangeOp::Remove, lost_card(), ListReason::Lost))
        .unwrap();
    let stale = HeldVersions {
        blacklist: 0,
        ..HeldVersions::default()
    };
    let delta = &depot::downlink_for(&s, "bus-0000", &stale).unwrap()[0];
    assert!(matches!(
        held.install(delta, now()),
        Err(DownlinkError::Blacklist(BlacklistFileError::WrongBase {
            current: 1,
            from: 0
        }))
    ));
    assert_eq!(held.blacklist().version(), 1);
    // A bus ahead of the station (database restored from a backup) is sent nothing older.
    let ahead = HeldVersions {
        blacklist: 99,
        fares: 99,
        keys: 0,
        cert_set: 99,
    };
    assert!(depot::downlink_for(&s, "bus-0000", &ahead)
        .unwrap()
        .is_empty());
    let one = HeldVersions {
        blacklist: 1,
        ..HeldVersions::default()
    };
    let delta = &depot::downlink_for(&s, "bus-0000", &one).unwrap()[0];
    assert_eq!(describe(delta).unwrap().0, FileKind::BlacklistDelta);
    held.install(delta, now()).unwrap();
    assert_eq!((held.blacklist().version(), held.blacklist().len()), (2, 0));
}

/// The validator's clock: downlink files are dated by the signer's clock, now.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
