//! Model-based test: random adds and removes of reasons, shipped as signed delta files, agree
//! with a plain `BTreeMap` of reason sets at every version, for listed and absent keys alike:
//! an add adds its reason, a remove lifts only its own, the lock follows any `replaced` or
//! `cancelled` left.

use std::collections::{BTreeMap, BTreeSet};

use fare_validator::blacklist::file::{delta_file, open_delta, open_snapshot, snapshot_file};
use fare_validator::blacklist::{Blacklist, Change, ChangeOp, Delta};
use fare_validator::signed::signing_key_from_seed;
use fare_validator::types::{AccountId, CardNo, ListId, ListReason, ReasonSet};
use proptest::prelude::*;

/// A small pool of ids so changes collide: clustered Dezhou cards, the extremes of the card
/// space, and accounts at the extremes of channel and account.
fn pool() -> Vec<ListId> {
    let mut ids: Vec<ListId> = (0..12u128)
        .map(|i| ListId::Card(CardNo::from_u128(37_142_400_000_000_000_000 + i).unwrap()))
        .collect();
    ids.push(ListId::Card(CardNo::from_u128(0).unwrap()));
    ids.push(ListId::Card(CardNo::from_u128(10u128.pow(20) - 1).unwrap()));
    ids.push(ListId::Card(
        CardNo::from_u128(31_000_000_000_000_000_007).unwrap(),
    ));
    for (channel, account) in [
        (0, 0),
        (1, 1),
        (8, 123_456),
        (u16::MAX, u64::MAX),
        (2, u64::MAX - 1),
    ] {
        ids.push(ListId::Account(AccountId { channel, account }));
    }
    ids
}

fn reason() -> impl Strategy<Value = ListReason> {
    prop::sample::select(ListReason::ALL.to_vec())
}

fn change(n: usize) -> impl Strategy<Value = (bool, usize, ListReason)> {
    (any::<bool>(), 0..n, reason())
}

/// The model: each id's reasons as a plain set, removed from the map when the set empties.
type Model = BTreeMap<ListId, BTreeSet<ListReason>>;

fn model_apply(model: &mut Model, c: &Change) {
    match c.op {
        ChangeOp::Add => {
            model.entry(c.id).or_default().insert(c.reason);
        }
        ChangeOp::Remove => {
            if let Some(reasons) = model.get_mut(&c.id) {
                reasons.remove(&c.reason);
                if reasons.is_empty() {
                    model.remove(&c.id);
                }
            }
        }
    }
}

fn as_model(list: &Blacklist) -> Model {
    list.iter()
        .map(|(id, reasons)| (id, reasons.iter().collect()))
        .collect()
}

fn assert_agrees(list: &Blacklist, model: &Model, ids: &[ListId]) {
    for id in ids {
        let want = model.get(id);
        let got = list.get(id);
        assert_eq!(
            got.map(|r| r.iter().collect::<BTreeSet<_>>()).as_ref(),
            want,
            "{id} at version {}",
            list.version()
        );
        // The lock follows any remaining replaced or cancelled.
        let locks = want.is_some_and(|r| {
            r.contains(&ListReason::Replaced) || r.contains(&ListReason::Cancelled)
        });
        assert_eq!(got.is_some_and(ReasonSet::locks_card), locks, "{id}");
    }
    assert_eq!(list.len(), model.len());
    assert_eq!(&as_model(list), model);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn deltas_agree_with_a_btreemap_of_reason_sets_at_every_version(
        initial in prop::collection::vec((0..20usize, reason()), 0..30),
        deltas in prop::collection::vec(prop::collection::vec(change(20), 0..25), 1..8),
    ) {
        let ids = pool();
        let key = signing_key_from_seed([5; 32]);
        let pk = key.verifying_key();
        // An id may come several times, as on several CSV lines: its reasons join.
        let entries: Vec<(ListId, ListReason)> = initial.iter().map(|(i, r)| (ids[*i], *r)).collect();
        let mut model = Model::new();
        for (id, r) in &entries {
            model.entry(*id).or_default().insert(*r);
        }
        let first = open_snapshot(snapshot_file(&Blacklist::from_entries(1, entries), &key), Some(&pk)).unwrap();
        assert_agrees(&first, &model, &ids);
        let mut list = first.clone();
        for (n, changes) in deltas.iter().enumerate() {
            let changes: Vec<Change> = changes
                .iter()
                .map(|(add, i, r)| Change { op: if *add { ChangeOp::Add } else { ChangeOp::Remove }, id: ids[*i], reason: *r })
                .collect();
            let delta = Delta { from_version: list.version(), to_version: list.version() + 1, changes };
            let read = open_delta(&delta_file(&delta, &key), &pk).unwrap();
            list = list.with_delta(&read).unwrap();
            for c in &delta.changes {
                model_apply(&mut model, c);
            }
            assert_agrees(&list, &model, &ids);
            // Every other version, fold the overlay into a new base and ship it as a snapshot.
            if n % 2 == 1 {
                list = open_snapshot(snapshot_file(&list.compacted(), &key), Some(&pk)).unwrap();
                assert_agrees(&list, &model, &ids);
            }
        }
        // The depot's diff from the first version, shipped as one delta, lands on the same
        // sets (a reason lost and a reason gained by one id are a remove and an add).
        let diff = first.diff(&list);
        let read = open_delta(&delta_file(&diff, &key), &pk).unwrap();
        assert_agrees(&first.with_delta(&read).unwrap(), &model, &ids);
    }
}
