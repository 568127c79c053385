//! Times journal group commits of several sizes on this machine's disk.
use std::time::Instant;

use fare_validator::journal::{CardTx, Journal, Record, RecordKind};
use fare_validator::types::RiderCategory;

fn main() {
    let dir = tempfile::tempdir_in(".").unwrap();
    let (mut j, _) = Journal::open(dir.path()).unwrap();
    for group in [1usize, 8, 32, 128] {
        let mut t = Vec::new();
        for _ in 0..100 {
            for _ in 0..group {
                let mut r = Record {
                    seq: 0,
                    kind: RecordKind::CardPurchase,
                    at_unix_s: 1,
                    utc_offset_min: 480,
                    route: 1,
                    category: RiderCategory::Adult,
                    fare_fen: 200,
                    balance_fen: Some(1),
                    card_no: "37140000000000000001".parse().unwrap(),
                    card_tx: CardTx::default(),
                    qr: None,
                    quickpass: None,
                    terminal_no: [0; 6],
                    rule: fare_validator::fare::FareRule::Unknown,
                };
                j.append(&mut r).unwrap();
            }
            let s = Instant::now();
            j.commit().unwrap();
            t.push(s.elapsed().as_micros());
        }
        t.sort();
        println!(
            "group {group:>4}: commit p50 {} us, p99 {} us",
            t[50], t[98]
        );
    }
}
