//! Hostile journal bytes never make the reader panic.
//!
//! Even first byte: `Record::decode` on 96 bytes; a record that decodes re-encodes to the
//! same fields (but a ride code's certificate reference, which version 2 has no room for), and a version 2 record (no chain MAC) to the same bytes.
//! Odd first byte: `journal::scan` on a temporary folder holding the rest as one segment
//! (its first seq chosen by the fuzzer, up to u64::MAX) and optionally a cursor file; every
//! record it returns is in its slot, and `Journal::open` on the same folder does not panic.
//! Both modes: the same bytes as grey-record entries (`GreyRecord::decode_in_lap` on 64 bytes,
//! which re-encodes to the same fields, and to the same bytes for version 2) and, with bit 3 of the first byte, as the folder's `grey.dat`
//! (scanned and opened with the journal).
#![no_main]

use fare_validator::journal::grey::{scan_grey, GreyRecord, GREY_BYTES, GREY_FILE};
use fare_validator::journal::record::{Record, RECORD_BYTES};
use fare_validator::journal::{scan, Journal};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::tmp_root;

/// Keep the scan cheap: at most this many bytes of segment.
const SEGMENT_BYTES_MAX: usize = 16 * RECORD_BYTES;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut g = [0u8; GREY_BYTES];
    let n = rest.len().min(GREY_BYTES);
    g[..n].copy_from_slice(&rest[..n]);
    if let Ok((op, entry, lap)) = GreyRecord::decode_in_lap(&g) {
        let again = entry.encode_in_lap(op, lap);
        // Entries of versions 1 (no lap) and 2 (no rule) are written again as version 3,
        // their fields kept.
        if g[1] == 3 && g[59] == 0 {
            assert_eq!(again, g, "grey decode then encode is the identity");
        }
        assert_eq!(GreyRecord::decode_in_lap(&again), Ok((op, entry, lap)));
        let _ = entry.to_json(op);
    }
    if mode & 1 == 0 {
        let mut b = [0u8; RECORD_BYTES];
        let n = rest.len().min(RECORD_BYTES);
        b[..n].copy_from_slice(&rest[..n]);
        if let Ok(r) = Record::decode(&b) {
            // The fields survive a re-encoding; version 2 bytes (no MAC, reserved zero) are
            // made again exactly. Version 3's MAC needs the journal's key: not made here.
            let epoch = Record::epoch_of(&b);
            let again = r.encode_in(epoch);
            // Version 2 has no ride-code certificate reference and no fare rule: the fields it
            // leaves out.
            let mut r2 = r;
            if let Some(q) = r2.qr.as_mut() {
                q.cert_ref = None;
            }
            r2.rule = fare_validator::fare::FareRule::Unknown;
            assert_eq!(Record::decode(&again), Ok(r2), "decode then encode keeps every field");
            if b[1] == 2 && b[85..92] == [0; 7] {
                assert_eq!(again, b, "decode then encode is the identity");
            }
            let _ = r.to_json();
            let _ = r.id_string();
        }
        return;
    }
    let Some((first, rest)) = rest.split_first_chunk::<8>() else {
        return;
    };
    let first = u64::from_be_bytes(*first);
    let (cursor, segment) = if mode & 2 == 2 && rest.len() >= 12 {
        rest.split_at(12)
    } else {
        (&rest[..0], rest)
    };
    let segment = &segment[..segment.len().min(SEGMENT_BYTES_MAX)];
    let Ok(dir) = tempfile::Builder::new().tempdir_in(tmp_root()) else {
        return;
    };
    let name = format!("seg-{first:020}.jnl");
    if std::fs::write(dir.path().join(name), segment).is_err() {
        return;
    }
    if !cursor.is_empty() && std::fs::write(dir.path().join("acked"), cursor).is_err() {
        return;
    }
    if mode & 8 == 8 {
        if std::fs::write(dir.path().join(GREY_FILE), segment).is_err() {
            return;
        }
        let g = scan_grey(dir.path());
        assert!(g.next_slot as usize * GREY_BYTES <= segment.len());
        assert!(g.written_end as usize <= segment.len());
        let _ = g.open_intents();
    }
    if let Ok(s) = scan(dir.path()) {
        for r in &s.records {
            assert!(r.seq >= first && r.seq <= s.last_seq);
        }
    }
    if mode & 4 == 4 {
        let _ = Journal::open(dir.path());
    }
});
