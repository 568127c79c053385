//! Hostile blacklist files never make the parsers panic: the signed container
//! (`signed::parse`), a snapshot's tables (`parse_snapshot_unverified`), a delta's payload
//! (`parse_delta_payload`, then applied to a small list) and the CSV form (`parse_csv`).
//! Whatever parses must answer lookups and apply deltas without panicking.
#![no_main]

use fare_validator::blacklist::file::{parse_delta_payload, parse_snapshot_unverified};
use fare_validator::blacklist::{parse_csv, Blacklist};
use fare_validator::signed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => {
            if let Ok(u) = signed::parse(rest) {
                assert!(u.payload.len() <= rest.len());
            }
        }
        1 => {
            if let Ok(list) = parse_snapshot_unverified(rest) {
                let mut n = 0usize;
                for (id, why) in list.iter().take(64) {
                    assert_eq!(list.get(&id), Some(why), "an entry listed is found");
                    n += 1;
                }
                assert!(n <= list.len());
                let _ = list.counts_by_reason();
            }
        }
        2 => {
            let Some((v, payload)) = rest.split_first_chunk::<2>() else {
                return;
            };
            let (from, to) = (u64::from(v[0]), u64::from(v[1]));
            if let Ok(delta) = parse_delta_payload(payload, from, to) {
                let mut base = Blacklist::empty();
                base.set_version(from);
                if let Ok(next) = base.with_delta(&delta) {
                    assert_eq!(next.version(), to);
                }
            }
        }
        _ => {
            if let Ok(entries) = parse_csv(&String::from_utf8_lossy(rest)) {
                let list = Blacklist::from_entries(0, entries.iter().copied());
                for (id, _) in entries.iter().take(64) {
                    assert!(list.get(id).is_some(), "a listed id is found");
                }
            }
        }
    }
});
