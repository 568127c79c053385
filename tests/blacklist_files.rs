//! The rules of blacklist files on a bus: forged, truncated and out-of-order files are refused
//! and the list in use stays; the card lifecycle (挂失, 解挂, reissue) over deltas.

use fare_validator::blacklist::file::{delta_file, snapshot_file};
use fare_validator::blacklist::{
    load_blacklist_file, Blacklist, BlacklistFileError, BlacklistHandle, Change, ChangeOp, Delta,
};
use fare_validator::signed::{signing_key_from_seed, OperatorSigningKey, SignedError};
use fare_validator::types::{CardNo, ListId, ListReason, ReasonSet};

const LOST: &str = "37140000000000000001";
const OLD_CARD: &str = "37140000000000000002";
const OTHER: &str = "37140000000000000003";

fn card(s: &str) -> ListId {
    ListId::Card(s.parse::<CardNo>().unwrap())
}

fn one(reason: ListReason) -> Option<ReasonSet> {
    Some(ReasonSet::of(reason))
}

fn no_entries() -> [(ListId, ListReason); 0] {
    []
}

fn operator() -> OperatorSigningKey {
    signing_key_from_seed([42; 32])
}

fn delta(from: u64, changes: &[(ChangeOp, &str, ListReason)]) -> Delta {
    let changes = changes
        .iter()
        .map(|(op, id, reason)| Change {
            op: *op,
            id: card(id),
            reason: *reason,
        })
        .collect();
    Delta {
        from_version: from,
        to_version: from + 1,
        changes,
    }
}

fn bus_at_version_1() -> BlacklistHandle {
    let snapshot = snapshot_file(
        &Blacklist::from_entries(1, [(card(LOST), ListReason::Lost)]),
        &operator(),
    );
    let handle = BlacklistHandle::new(Blacklist::empty());
    handle
        .install_snapshot_file(snapshot, &operator().verifying_key())
        .unwrap();
    handle
}

fn assert_kept_version_1(handle: &BlacklistHandle) {
    assert_eq!(handle.version(), 1);
    assert_eq!(handle.get(&card(LOST)), one(ListReason::Lost));
    assert_eq!(handle.get(&card(OTHER)), None);
}

#[test]
fn forged_delta_is_refused_and_the_old_list_kept() {
    let bus = bus_at_version_1();
    let forger = signing_key_from_seed([66; 32]);
    let file = delta_file(
        &delta(1, &[(ChangeOp::Remove, LOST, ListReason::Lost)]),
        &forger,
    );
    let err = bus
        .install_delta_file(&file, &operator().verifying_key())
        .unwrap_err();
    assert!(
        matches!(err, BlacklistFileError::Signed(SignedError::BadSignature)),
        "{err}"
    );
    assert_kept_version_1(&bus);
}

#[test]
fn truncated_or_corrupt_delta_is_refused_and_the_old_list_kept() {
    let bus = bus_at_version_1();
    let file = delta_file(
        &delta(1, &[(ChangeOp::Add, OTHER, ListReason::Cancelled)]),
        &operator(),
    );
    let err = bus
        .install_delta_file(&file[..file.len() - 5], &operator().verifying_key())
        .unwrap_err();
    assert!(
        matches!(
            err,
            BlacklistFileError::Signed(SignedError::Truncated { .. })
        ),
        "{err}"
    );
    let mut corrupt = file.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x10;
    let err = bus
        .install_delta_file(&corrupt, &operator().verifying_key())
        .unwrap_err();
    assert!(
        matches!(
            err,
            BlacklistFileError::Signed(SignedError::CrcMismatch { .. })
        ),
        "{err}"
    );
    assert_kept_version_1(&bus);
}

#[test]
fn delta_from_another_version_is_refused_and_the_old_list_kept() {
    let bus = bus_at_version_1();
    let file = delta_file(
        &delta(2, &[(ChangeOp::Add, OTHER, ListReason::Cancelled)]),
        &operator(),
    );
    let err = bus
        .install_delta_file(&file, &operator().verifying_key())
        .unwrap_err();
    assert!(
        matches!(
            err,
            BlacklistFileError::WrongBase {
                current: 1,
                from: 2
            }
        ),
        "{err}"
    );
    assert_kept_version_1(&bus);
}

#[test]
fn forged_or_stale_snapshot_is_refused_and_the_old_list_kept() {
    let bus = bus_at_version_1();
    let forged = snapshot_file(
        &Blacklist::from_entries(9, no_entries()),
        &signing_key_from_seed([66; 32]),
    );
    assert!(bus
        .install_snapshot_file(forged, &operator().verifying_key())
        .is_err());
    let stale = snapshot_file(&Blacklist::from_entries(0, no_entries()), &operator());
    let err = bus
        .install_snapshot_file(stale, &operator().verifying_key())
        .unwrap_err();
    assert!(
        matches!(
            err,
            BlacklistFileError::Stale {
                current: 1,
                file: 0
            }
        ),
        "{err}"
    );
    assert_kept_version_1(&bus);
}

#[test]
fn lost_card_unreported_rides_again() {
    let bus = bus_at_version_1();
    let pk = operator().verifying_key();
    let file = delta_file(
        &delta(1, &[(ChangeOp::Remove, LOST, ListReason::Lost)]),
        &operator(),
    );
    assert_eq!(bus.install_delta_file(&file, &pk).unwrap(), 2);
    assert_eq!(bus.get(&card(LOST)), None);
}

#[test]
fn replaced_card_stays_dead_across_later_deltas() {
    let bus = bus_at_version_1();
    let pk = operator().verifying_key();
    let reissue = delta(
        1,
        &[
            (ChangeOp::Add, OLD_CARD, ListReason::Lost),
            (ChangeOp::Add, OLD_CARD, ListReason::Replaced),
        ],
    );
    bus.install_delta_file(&delta_file(&reissue, &operator()), &pk)
        .unwrap();
    // A late 解挂 for the old card, then unrelated changes: it stays replaced (and locks).
    let late_unreport = delta(2, &[(ChangeOp::Remove, OLD_CARD, ListReason::Lost)]);
    bus.install_delta_file(&delta_file(&late_unreport, &operator()), &pk)
        .unwrap();
    let unrelated = delta(
        3,
        &[
            (ChangeOp::Add, OTHER, ListReason::Cancelled),
            (ChangeOp::Remove, LOST, ListReason::Lost),
        ],
    );
    bus.install_delta_file(&delta_file(&unrelated, &operator()), &pk)
        .unwrap();
    assert_eq!(bus.version(), 4);
    let reason = bus.get(&card(OLD_CARD));
    assert_eq!(reason, one(ListReason::Replaced));
    assert!(reason.is_some_and(ReasonSet::locks_card));
}

#[test]
fn lost_and_replaced_card_keeps_both_reasons_in_snapshot_and_delta_files() {
    let bus = bus_at_version_1();
    let pk = operator().verifying_key();
    let both: ReasonSet = [ListReason::Lost, ListReason::Replaced]
        .into_iter()
        .collect();
    // The reissue arrives as a delta: the old card is now lost and replaced.
    let reissue = delta(1, &[(ChangeOp::Add, LOST, ListReason::Replaced)]);
    bus.install_delta_file(&delta_file(&reissue, &operator()), &pk)
        .unwrap();
    assert_eq!(bus.get(&card(LOST)), Some(both));
    // The same list as a snapshot, opened in place.
    let snapshot = snapshot_file(&bus.load().compacted(), &operator());
    let fresh = BlacklistHandle::new(Blacklist::empty());
    fresh.install_snapshot_file(snapshot, &pk).unwrap();
    assert_eq!((fresh.version(), fresh.get(&card(LOST))), (2, Some(both)));
    // A late 解挂 lifts lost only: the card stays refused and locked.
    let late_unreport = delta(2, &[(ChangeOp::Remove, LOST, ListReason::Lost)]);
    fresh
        .install_delta_file(&delta_file(&late_unreport, &operator()), &pk)
        .unwrap();
    let left = fresh.get(&card(LOST));
    assert_eq!(left, one(ListReason::Replaced));
    assert!(left.is_some_and(ReasonSet::locks_card));
}

/// Files written before reason sets (format 1), kept as made by that code.
fn format1(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/blacklist-format1")
        .join(name)
}

#[test]
fn format1_snapshot_and_delta_are_still_read_as_they_meant() {
    let pk = fare_validator::signed::read_public_key(format1("operator.key.pub").to_str().unwrap())
        .unwrap();
    let bus = BlacklistHandle::new(Blacklist::empty());
    bus.install_snapshot_file(std::fs::read(format1("v1.snap")).unwrap(), &pk)
        .unwrap();
    let v1 = load_blacklist_file(&format1("v1.csv"), None).unwrap();
    let sorted = |l: &Blacklist| l.iter().collect::<std::collections::BTreeMap<_, _>>();
    assert_eq!(sorted(&bus.load()), sorted(&v1));
    // Format 1's add set the entry to its one reason: card …0001 goes from lost to replaced
    // alone, not lost and replaced.
    let delta = std::fs::read(format1("1-2.delta")).unwrap();
    assert_eq!(bus.install_delta_file(&delta, &pk).unwrap(), 2);
    let v2 = load_blacklist_file(&format1("v2.csv"), None).unwrap();
    assert_eq!(sorted(&bus.load()), sorted(&v2));
    assert_eq!(bus.get(&card(LOST)), one(ListReason::Replaced));
    // Files written now are format 3 (reason sets, and dated).
    let now = snapshot_file(&bus.load().compacted(), &operator());
    assert_eq!(u16::from_le_bytes([now[8], now[9]]), 3);
}

#[test]
fn snapshots_of_four_bit_sets_are_still_read_and_new_ones_code_by_palette() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/blacklist-sets-4bit");
    let pk =
        fare_validator::signed::read_public_key(dir.join("operator.key.pub").to_str().unwrap())
            .unwrap();
    let old = std::fs::read(dir.join("v1.snap")).unwrap();
    let from_old = load_blacklist_file(&dir.join("v1.snap"), Some(&pk)).unwrap();
    let csv = load_blacklist_file(&dir.join("v1.csv"), None).unwrap();
    let sorted = |l: &Blacklist| l.iter().collect::<std::collections::BTreeMap<_, _>>();
    assert_eq!(sorted(&from_old), sorted(&csv));
    assert_eq!(
        from_old.get(&card("37140000000000000001")),
        Some(ReasonSet::of(ListReason::Lost).with(ListReason::Replaced))
    );
    // The same list built now: each table names its palette (coding byte 1), where the old
    // file's tables said nothing (0), and it reads the same.
    let now = snapshot_file(&csv, &operator());
    let coding_byte = |f: &[u8]| f[fare_validator::signed::HEADER_LEN + 24];
    assert_eq!((coding_byte(&old), coding_byte(&now)), (0, 1));
    let reread =
        fare_validator::blacklist::file::open_snapshot(now, Some(&operator().verifying_key()))
            .unwrap();
    assert_eq!(sorted(&reread), sorted(&csv));
}

#[test]
fn loader_takes_csv_and_signed_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("blacklist.csv");
    std::fs::write(
        &csv,
        format!("kind,id,reason\ncard,{LOST},lost\naccount,3:99,arrears\n"),
    )
    .unwrap();
    let from_csv = load_blacklist_file(&csv, None).unwrap();
    assert_eq!(from_csv.get(&card(LOST)), one(ListReason::Lost));
    assert_eq!(from_csv.len(), 2);

    let snap = dir.path().join("blacklist.snap");
    let mut versioned = from_csv.clone();
    versioned = versioned.with_delta(&delta(0, &[])).unwrap();
    std::fs::write(&snap, snapshot_file(&versioned, &operator())).unwrap();
    let from_snap = load_blacklist_file(&snap, Some(&operator().verifying_key())).unwrap();
    assert_eq!((from_snap.version(), from_snap.len()), (1, 2));
    let wrong_key = signing_key_from_seed([1; 32]).verifying_key();
    assert!(load_blacklist_file(&snap, Some(&wrong_key)).is_err());

    std::fs::write(&csv, "kind,id,reason\ncard,123,lost\n").unwrap();
    assert!(matches!(
        load_blacklist_file(&csv, None),
        Err(BlacklistFileError::Csv(_))
    ));
}

#[test]
fn fixture_csv_lists_every_reason() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/blacklist.csv");
    let list = load_blacklist_file(&path, None).unwrap();
    let counts = list.counts_by_reason();
    assert!(
        ListReason::ALL.iter().all(|r| counts[r.as_str()] == 1),
        "{counts:?}"
    );
}
