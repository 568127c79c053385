//! A compromised terminal forges records (the security review's finding 8): fares no fare
//! table charges, times before the system existed or far ahead of the station's clock, and
//! ride-code claims with earlier times that would make an honest bus's rides the repeats.
//! Each attack is played over loopback TCP and the station's answer asserted: refused, kept
//! apart, reported, never stored as sent; a contested ride code flagged with every claim.

mod depot_support;

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use depot_support::*;
use fare_validator::depot::page::DayView;
use fare_validator::depot::Store;
use fare_validator::journal::Record;
use fare_validator::upload;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fare-validator"))
}

/// A day of honest card taps with three forged records among them (seqs 3, 5 and 7).
fn forged_day() -> Vec<Record> {
    (1..=8)
        .map(|i| {
            let honest = card_record(i);
            match i {
                3 => Record {
                    fare_fen: u32::MAX,
                    ..honest
                },
                5 => Record {
                    at_unix_s: -86_400, // 1969-12-31
                    ..honest
                },
                7 => Record {
                    at_unix_s: 4_102_444_800, // 2100-01-01
                    ..honest
                },
                _ => honest,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_fares_and_times_are_refused_kept_apart_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let st = station(store(&db, 1)).await;
    let dir = tmp.path().join("bus");
    write_journal(&dir, forged_day());
    let r = upload::upload(&dir, st.addr(), &terminal_id(0), &secret(0))
        .await
        .unwrap();
    st.shutdown().await;
    // The bus's cursor moves over the refused seqs: the rest of its day goes up.
    assert_eq!((r.uploaded, r.acked_seq, r.records_refused), (8, 8, 3));
    assert!(r.problems.is_empty(), "{:?}", r.problems);

    let s = Store::open(&db).unwrap();
    assert_eq!(
        s.record_count().unwrap(),
        5,
        "nothing forged is stored as sent"
    );
    let t = &s.report().unwrap().terminals[&terminal_id(0)];
    assert_eq!((t.records, t.refused, t.fare_fen), (5, 3, 5 * 200));
    assert!(
        t.gaps.is_empty(),
        "a refused seq is accounted for: {:?}",
        t.gaps
    );
    let refused: Vec<(u64, &str)> = t.journals[0]
        .refused_records
        .iter()
        .map(|r| (r.seq, r.reason.as_str()))
        .collect();
    assert_eq!(
        refused,
        [
            (3, "fare above any fare table's fare on the route"),
            (5, "time before 2020-01-01"),
            (7, "time ahead of the station's clock"),
        ]
    );
    assert_eq!(
        t.journals[0].refused_records[0].fare_fen,
        u64::from(u32::MAX)
    );
    // The manager's page shows them on the bus's row.
    let view = DayView::from_store(&s).unwrap();
    assert_eq!(view.buses[0].refused, 3);
    assert_eq!(view.fares_charged_fen, 5 * 200);
    let html = fare_validator::depot::page::render(&view, "depot.db");
    assert!(html.contains("class=\"num refused warn\">3<"), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fare_table_published_later_raises_the_ceiling_but_never_past_any_table() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let s = store(&db, 1);
    // An express line at 5 yuan: 500 fen on route 9 is now within range, 501 is not.
    let table = format!(
        "{}\n[[routes]]\nroute = 9\nbase_fare_fen = 500\n",
        fare_validator::fare::DEFAULT_FARES_TOML
    );
    s.publish("fares", table.as_bytes()).unwrap();
    let st = station(s).await;
    let express = |i, fare_fen| Record {
        route: 9,
        fare_fen,
        ..card_record(i)
    };
    let dir = tmp.path().join("bus");
    write_journal(&dir, [express(1, 500), express(2, 501), card_record(3)]);
    let r = upload::upload(&dir, st.addr(), &terminal_id(0), &secret(0))
        .await
        .unwrap();
    st.shutdown().await;
    assert_eq!((r.acked_seq, r.records_refused), (3, 1));
    let t = &Store::open(&db).unwrap().report().unwrap().terminals[&terminal_id(0)];
    assert_eq!(t.fare_fen, 500 + 200);
    assert_eq!(t.journals[0].refused_records[0].seq, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_earlier_claim_to_a_ride_code_is_a_conflict_not_the_honest_rides_repeat() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let st = station(store(&db, 2)).await;
    let t0 = 1_795_824_000;
    // The honest bus scans three codes; the forger claims the first two a minute earlier.
    let honest: Vec<Record> = (1..=3).map(|c| qr_record(2, 1001, c, t0 + 60)).collect();
    let forged: Vec<Record> = (1..=2).map(|c| qr_record(2, 1001, c, t0)).collect();
    for (n, recs) in [honest, forged].into_iter().enumerate() {
        let dir = tmp.path().join(terminal_id(n));
        write_journal(&dir, recs);
        upload::upload(&dir, st.addr(), &terminal_id(n), &secret(n as u8))
            .await
            .unwrap();
    }
    st.shutdown().await;
    let report = Store::open(&db).unwrap().report().unwrap();
    // Neither claim is picked: both are listed, and no one is charged until clearing decides.
    assert_eq!(report.qr_conflicts.len(), 2);
    for (c, counter) in report.qr_conflicts.iter().zip(1..) {
        assert_eq!((c.channel, c.account, c.counter), (2, 1001, counter));
        let claims: Vec<(&str, i64)> = c
            .claims
            .iter()
            .map(|c| (c.terminal.as_str(), c.at_unix_s))
            .collect();
        assert_eq!(
            claims,
            [
                (terminal_id(1).as_str(), t0),
                (terminal_id(0).as_str(), t0 + 60)
            ]
        );
    }
    let honest = &report.terminals[&terminal_id(0)];
    assert_eq!((honest.fare_fen, honest.fare_fen_in_conflict), (200, 400));
    let forger = &report.terminals[&terminal_id(1)];
    assert_eq!((forger.fare_fen, forger.fare_fen_in_conflict), (0, 400));
}

/// `depot serve` as a process on a free loopback port, its stderr read line by line.
struct Served {
    child: std::process::Child,
    addr: SocketAddr,
    log: std::sync::mpsc::Receiver<String>,
}

impl Served {
    fn start(db: &std::path::Path) -> Served {
        let mut child = bin()
            .args(["depot", "serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let addr = v["listening"].as_str().unwrap().parse().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Served { child, addr, log }
    }

    /// Wait (bounded) for a log line holding all of `words`.
    fn wait_for(&self, words: &[&str]) -> Result<String, Vec<String>> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if words.iter().all(|w| line.contains(w)) => return Ok(line),
                Ok(line) => seen.push(line),
                Err(_) => return Err(seen),
            }
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn upload_exits_non_zero_when_the_depot_refused_records_and_the_station_logs_why() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    drop(store(&db, 2));
    let served = Served::start(&db);
    let secret_file = |n: u8| {
        let p = tmp.path().join(format!("bus-{n}.secret"));
        std::fs::write(&p, fare_validator::upload::auth::to_hex(&secret(n))).unwrap();
        p
    };
    let upload = |dir: &std::path::Path, n: u8| {
        bin()
            .args(["upload", "--depot", &served.addr.to_string()])
            .args(["--terminal", &terminal_id(n as usize)])
            .arg("--journal")
            .arg(dir)
            .arg("--secret-file")
            .arg(secret_file(n))
            .output()
            .unwrap()
    };
    // An honest day uploads with status 0.
    let honest = tmp.path().join("honest");
    card_journal(&honest, 4);
    let out = upload(&honest, 0);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // A forged day: the report is printed, the status is 1, and the message says what.
    let forged = tmp.path().join("forged");
    write_journal(&forged, forged_day());
    let out = upload(&forged, 1);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["records_refused"], 3);
    assert_eq!(report["acked_seq"], 8);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the depot refused 3 record(s)"), "{stderr}");
    // The station said so at its default level.
    let line = served
        .wait_for(&["ERROR", "security finding", "out_of_range", "bus-0001"])
        .unwrap_or_else(|seen| panic!("no error line; stderr: {seen:?}"));
    assert!(line.contains("from=3"), "{line}");
}

/// The ride-code vectors' clock (fixtures/ride-code-v1.json).
const VECTORS_T0_UNIX_S: i64 = 1_795_824_000;

fn vector_code(name: &str) -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/ride-code-v1.json"
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let case = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap();
    case["code"].as_str().unwrap().to_string()
}

/// A validator whose engine scans `codes` at the vectors' clock into a journal in `dir`.
fn scan_on_a_bus(dir: &std::path::Path, codes: &[String]) -> Vec<Record> {
    use fare_validator::card::psam::Psam;
    use fare_validator::card::sim::{SimPsam, TestKeys};
    use fare_validator::engine::{EngineConfig, Validator};
    use fare_validator::ride_code::{keys::ChannelKeys, verify::RideCodeConfig};
    let (journal, _) = fare_validator::journal::Journal::open(dir).unwrap();
    let psam = Psam::open(SimPsam::new(
        TestKeys::default(),
        fare_validator::replay::REPLAY_TERMINAL_NO,
        1,
    ))
    .unwrap();
    let mut engine = Validator::new(
        EngineConfig::default(),
        psam,
        fare_validator::fare::FareTable::default_policy(),
        fare_validator::blacklist::Blacklist::empty(),
        journal,
    );
    let keys = ChannelKeys::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/ride-code-keys.json"
    ))
    .unwrap();
    engine.set_ride_code_keys(keys, RideCodeConfig::default());
    let now = fare_validator::clock::Timestamp {
        unix_s: VECTORS_T0_UNIX_S,
        utc_offset_s: 8 * 3600,
    };
    for code in codes {
        assert!(engine.scan_code(code, now).accepted(), "{code}");
    }
    fare_validator::journal::scan(dir).unwrap().records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_riders_signed_code_travels_with_its_record_and_tells_the_honest_claim_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let s = store(&db, 3);
    // The channel keys the station publishes to its buses: clearing's check of a proof.
    let keys = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/ride-code-keys.json"
    ))
    .unwrap();
    s.publish("keys", &keys).unwrap();
    let st = station(s).await;
    let codes = [vector_code("valid_p256"), vector_code("valid_sm2")];
    let honest_dir = tmp.path().join(terminal_id(0));
    let honest = scan_on_a_bus(&honest_dir, &codes);
    assert_eq!(honest.len(), 2);
    // Each record names the holder certificate it was accepted with (journal version 4).
    for (rec, code) in honest.iter().zip(&codes) {
        let cert = fare_validator::ride_code::RideCode::parse(code)
            .unwrap()
            .cert_digest();
        assert_eq!(
            rec.qr.unwrap().cert_ref,
            Some(fare_validator::journal::QrTx::cert_ref_of(&cert))
        );
    }
    // Two forgers copy the first record's claim a minute earlier: one has no rider's code,
    // the other makes one up from the code's fields (it cannot sign as the rider).
    let forged = Record {
        at_unix_s: honest[0].at_unix_s - 60,
        ..honest[0]
    };
    write_journal(&tmp.path().join(terminal_id(1)), [forged]);
    let mut made_up = fare_validator::ride_code::format::RideCode::parse(&codes[0])
        .unwrap()
        .bytes;
    made_up[200] ^= 0x5a; // the last byte of the rider's signature
    let mut j = write_journal(&tmp.path().join(terminal_id(2)), [forged]);
    j.keep_proof(1, &made_up);
    drop(j);
    for n in 0..3 {
        let r = upload::upload(
            &tmp.path().join(terminal_id(n)),
            st.addr(),
            &terminal_id(n),
            &secret(n as u8),
        )
        .await
        .unwrap();
        assert_eq!(r.records_refused, 0);
    }
    st.shutdown().await;
    let report = Store::open(&db).unwrap().report().unwrap();
    assert_eq!(report.qr_conflicts.len(), 1);
    let claims = &report.qr_conflicts[0].claims;
    let by_terminal = |n: usize| {
        claims
            .iter()
            .find(|c| c.terminal == terminal_id(n))
            .unwrap()
    };
    assert_eq!(claims.len(), 3);
    assert_eq!(by_terminal(0).proof, "verified");
    assert_eq!(by_terminal(0).code.as_deref(), Some(codes[0].as_str()));
    assert_eq!(
        (by_terminal(1).proof, by_terminal(1).code.as_deref()),
        ("none", None)
    );
    assert_eq!(by_terminal(2).proof, "bad_signature");
}
