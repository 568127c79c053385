//! The validator's clock is reset by GPS: it jumps backwards or forwards mid-service.

mod common;

use common::*;

#[test]
fn clock_jumping_back_neither_reuses_a_seq_nor_locks_out_nor_lets_a_double_tap_through() {
    let out = replay_events(&[
        tap("2026-11-28T08:00:00+08:00", 1),
        // The clock is set back an hour: a different passenger boards.
        tap("2026-11-28T07:00:00+08:00", 2),
        // Card 1 again 30 s "before" its last boarding: still a repeat within the window.
        tap("2026-11-28T07:59:30+08:00", 1),
        // An hour off its last boarding either way: not a repeat.
        tap("2026-11-28T07:00:10+08:00", 1),
    ]);
    let got: Vec<_> = out.iter().map(reason).collect();
    assert_eq!(got, ["accepted", "accepted", "repeat_tap", "accepted"]);
    let seqs: Vec<_> = out.iter().filter_map(|l| l["seq"].as_u64()).collect();
    assert_eq!(seqs, [1, 2, 3], "sequence numbers only ever go up");
}

#[test]
fn clock_jumping_forward_ends_anti_passback_and_transfers_by_elapsed_time() {
    let out = replay_events(&[
        tap("2026-11-28T08:00:00+08:00", 1),
        r#"{"at": "2026-11-28T08:00:05+08:00", "route": 9}"#.to_string(),
        // A jump of a day forward: no transfer from a boarding "yesterday", no repeat.
        tap("2026-11-29T08:00:10+08:00", 1),
    ]);
    assert_eq!(
        out.iter().map(reason).collect::<Vec<_>>(),
        ["accepted", "accepted"]
    );
    assert_eq!(out[1]["fare_fen"], 200);
}
