//! Hostile blacklist files never make the parsers panic: the signed container
//! (`signed::parse`), a snapshot's tables of either format (`parse_snapshot_unverified`: reason
//! sets, or one reason an entry, converted), a delta's payload of either format
//! (`parse_delta_payload_of_format`, then applied to a small list) and the CSV form
//! (`parse_csv`, an id on several lines). Whatever parses must answer lookups and apply deltas
//! without panicking, and every entry must be listed for at least one reason.
#![no_main]

use fare_validator::blacklist::file::{parse_delta_payload_of_format, parse_snapshot_unverified};
use fare_validator::blacklist::{parse_csv, Blacklist};
use fare_validator::signed;
use fare_validator::types::ReasonSet;
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
                    assert!(!why.is_empty(), "an entry has a reason");
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
            // The mode byte's top bit picks format 1 (an add sets the one reason).
            let format = if mode & 0x80 != 0 { 1 } else { 2 };
            if let Ok(delta) = parse_delta_payload_of_format(payload, from, to, format) {
                let mut base = Blacklist::empty();
                base.set_version(from);
                if let Ok(next) = base.with_delta(&delta) {
                    assert_eq!(next.version(), to);
                    assert!(next.iter().all(|(_, why)| !why.is_empty()));
                }
            }
        }
        _ => {
            if let Ok(entries) = parse_csv(&String::from_utf8_lossy(rest)) {
                let list = Blacklist::from_entries(0, entries.iter().copied());
                for (id, reason) in entries.iter().take(64) {
                    let listed = list.get(id).unwrap_or(ReasonSet::EMPTY);
                    assert!(listed.contains(*reason), "every line's reason is kept");
                }
            }
        }
    }
});
