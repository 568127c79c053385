//! A bus swaps in new blacklist versions while taps go on: every tap sees one whole version,
//! the old or the new, never a mix.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use fare_validator::blacklist::file::delta_file;
use fare_validator::blacklist::{Blacklist, BlacklistHandle, Change, ChangeOp, Delta};
use fare_validator::signed::signing_key_from_seed;
use fare_validator::types::{CardNo, ListId, ListReason};

const SWAPS: u64 = 60;
const FILLER_CHANGES: u128 = 2_000;
const READERS: usize = 2;

fn card(n: u128) -> ListId {
    ListId::Card(CardNo::from_u128(37_140_000_000_000_000_000 + n).unwrap())
}

/// Version v lists A (odd v) or B (even v), never both, never neither. Each delta puts the
/// add first, a long run of filler next and the remove last, so a version built in place
/// would show both.
fn delta(from: u64) -> Delta {
    let (a, b) = (card(1), card(2));
    let (add, remove) = if from % 2 == 0 { (a, b) } else { (b, a) };
    let mut changes = vec![Change {
        op: ChangeOp::Add,
        id: add,
        reason: ListReason::Lost,
    }];
    for i in 0..FILLER_CHANGES {
        let op = if from % 2 == 0 {
            ChangeOp::Add
        } else {
            ChangeOp::Remove
        };
        changes.push(Change {
            op,
            id: card(1_000 + i),
            reason: ListReason::Cancelled,
        });
    }
    changes.push(Change {
        op: ChangeOp::Remove,
        id: remove,
        reason: ListReason::Lost,
    });
    Delta {
        from_version: from,
        to_version: from + 1,
        changes,
    }
}

#[test]
fn taps_during_swaps_see_the_old_list_or_the_new_never_a_mix() {
    let key = signing_key_from_seed([3; 32]);
    let start = Blacklist::from_entries(0, [(card(2), ListReason::Lost)]);
    let handle = Arc::new(BlacklistHandle::new(start));
    let files: Vec<Vec<u8>> = (0..SWAPS).map(|v| delta_file(&delta(v), &key)).collect();
    let done = AtomicBool::new(false);
    let seen: Vec<BTreeSet<u64>> = thread::scope(|s| {
        let readers: Vec<_> = (0..READERS)
            .map(|_| {
                s.spawn(|| {
                    let mut versions = BTreeSet::new();
                    while !done.load(Ordering::Relaxed) {
                        let list = handle.load();
                        let (a, b, v) = (list.get(&card(1)), list.get(&card(2)), list.version());
                        let expect_a = v % 2 == 1;
                        assert_eq!(a.is_some(), expect_a, "version {v}: A");
                        assert_eq!(b.is_some(), !expect_a, "version {v}: B");
                        versions.insert(v);
                    }
                    versions
                })
            })
            .collect();
        for file in &files {
            handle
                .install_delta_file(file, &key.verifying_key())
                .unwrap();
            thread::yield_now();
        }
        done.store(true, Ordering::Relaxed);
        readers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(handle.version(), SWAPS);
    let all: BTreeSet<u64> = seen.into_iter().flatten().collect();
    assert!(all.len() >= 2, "readers saw only versions {all:?}");
}
