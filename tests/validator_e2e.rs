//! The bus validator program end to end on real parts: a depot (`depot serve`) on 127.0.0.1,
//! a terminal provisioned from its `terminal add` answer, and `fare-validator validator`
//! running with a simulated card and PSAM in vsmartcard's virtual readers (through pcscd) and
//! a scanner on a loopback socket. Cards are tapped and codes scanned; the records reach the
//! depot; a card reported lost at the counter is refused at its next tap with no restart; the
//! validator is killed with SIGKILL mid-run and restarted, and the depot ends with every
//! accepted record once, seq 1..N with no gap; SIGUSR1 writes the status line; SIGTERM stops
//! the program with exit code 0.
//!
//! Needs pcscd with vsmartcard-vpcd (`scripts/pcscd-start.sh`); skipped (with the reason on
//! standard error) where pcscd or its virtual readers are missing, unless
//! `FARE_VALIDATOR_REQUIRE_PCSCD=1`. Every wait is bounded; the children are killed on drop.
#![cfg(feature = "pcsc")]

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use fare_validator::card::pcsc::{Presence, Readers};
use fare_validator::card::sim::{CardSpec, SimCard, SimPsam, TestKeys};
use fare_validator::card::vpcd::{SessionEnd, VpcdLink, VPCD_CARD_PORT, VPCD_SAM_PORT};
use fare_validator::depot::Store;
use fare_validator::replay::{REPLAY_CARD_SEED, REPLAY_TERMINAL_NO};
use serde_json::Value;
use support::{
    bin, free_port, import_operator_key, issue_code, publish_channel_key, run_ok, serve_depot,
    start_validator, status, terminal_add, wait_until, Proc, Program, WAIT_S,
};

const CARD_READER: &str = "Virtual PCD 00 00";
const SAM_READER: &str = "Virtual PCD 00 01";
const TERMINAL: &str = "bus-0001";
/// The holder takes the card away once it was idle this long after its first command.
const IDLE_LEAVE_MS: u64 = 200;
const CARDS: [&str; 4] = [
    "37140000000000000021",
    "37140000000000000022",
    "37140000000000000023",
    "37140000000000000024",
];

fn loopback(port: u16) -> std::net::SocketAddrV4 {
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port)
}

fn pcscd_or_skip(test: &str) -> Option<Readers> {
    let why = match Readers::establish().and_then(|r| r.names().map(|n| (r, n))) {
        Ok((r, names))
            if names.iter().any(|n| n == CARD_READER) && names.iter().any(|n| n == SAM_READER) =>
        {
            return Some(r)
        }
        Ok((_, names)) => format!("pcscd runs but shows no vpcd readers (readers: {names:?})"),
        Err(e) => format!("pcscd cannot be reached: {e}"),
    };
    let required = std::env::var("FARE_VALIDATOR_REQUIRE_PCSCD").is_ok_and(|v| v != "0");
    assert!(
        !required,
        "{test}: {why}; FARE_VALIDATOR_REQUIRE_PCSCD is set"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    None
}

/// The depot: a terminal added (its answer kept), a channel key published, the station
/// serving on a free loopback port.
struct Depot {
    db: PathBuf,
    answer: PathBuf,
    channel_key: PathBuf,
    addr: String,
    _serve: Proc,
}

fn depot(dir: &Path) -> Depot {
    let db = dir.join("depot.sqlite");
    let answer = dir.join("answer.json");
    import_operator_key(&db, 29);
    std::fs::write(&answer, terminal_add(&db, TERMINAL).to_string()).unwrap();
    let channel_key = publish_channel_key(dir, &db, "sm2", 15);
    let (serve, addr) = serve_depot(&db);
    Depot {
        db,
        answer,
        channel_key,
        addr,
        _serve: serve,
    }
}

/// The simulated PSAM in vpcd's second reader until `stop`; its counter outlives restarts
/// of the validator, as a real module's does.
fn serve_psam(stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut psam = SimPsam::new(TestKeys::default(), REPLAY_TERMINAL_NO, 1);
        let link = VpcdLink::connect(loopback(VPCD_SAM_PORT)).expect("connect PSAM to vpcd");
        link.serve(&mut psam, &mut |_| stop.load(Ordering::Relaxed))
            .expect("serve PSAM");
    })
}

/// The cards in vpcd's first reader: each index sent presents that card until it is idle.
fn serve_cards(go: mpsc::Receiver<usize>) -> (JoinHandle<()>, mpsc::Receiver<SessionEnd>) {
    let (tx, ended) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let mut cards: Vec<SimCard> = CARDS
            .iter()
            .map(|n| {
                let spec: CardSpec = serde_json::from_value(serde_json::json!({
                    "card_no": n, "card_type": "adult", "enabled": true,
                    "valid_from": "2024-01-01", "valid_until": "2034-12-31", "balance_fen": 5000
                }))
                .unwrap();
                SimCard::new(&spec, &TestKeys::default(), REPLAY_CARD_SEED).unwrap()
            })
            .collect();
        let idle = Duration::from_millis(IDLE_LEAVE_MS);
        let max = Duration::from_secs(WAIT_S);
        for i in go {
            cards[i].enter_field(None);
            let link = VpcdLink::connect(loopback(VPCD_CARD_PORT)).expect("connect card");
            let end = link
                .serve(&mut cards[i], &mut |a| {
                    (a.apdus > 0 && a.idle >= idle) || a.present_for >= max
                })
                .expect("serve card");
            if tx.send(end).is_err() {
                break;
            }
        }
    });
    (h, ended)
}

fn depot_seq(db: &Path) -> u64 {
    Store::open_read(db)
        .and_then(|s| s.newest_contiguous_seq(TERMINAL))
        .unwrap_or(0)
}

fn scanner(port: u16) -> TcpStream {
    let mut s = None;
    wait_until("the validator's scanner socket", || {
        s = TcpStream::connect(loopback(port)).ok();
        s.is_some()
    });
    s.unwrap()
}

#[test]
fn validator_program_taps_scans_uploads_takes_a_loss_report_and_survives_sigkill() {
    let Some(readers) = pcscd_or_skip("validator_e2e") else {
        return;
    };
    for name in [CARD_READER, SAM_READER] {
        let empty = readers
            .wait_for(
                &std::ffi::CString::new(name).unwrap(),
                Presence::Empty,
                Some(Duration::from_secs(WAIT_S)),
            )
            .unwrap();
        assert!(empty, "{name} holds a card that is not this test's");
    }
    let tmp = tempfile::tempdir().unwrap();
    let depot = depot(tmp.path());
    let scan_port = free_port();
    let bus = tmp.path().join("bus");
    std::fs::create_dir_all(&bus).unwrap();
    let config = bus.join("validator.toml");
    run_ok(
        bin()
            .args(["provision", "--answer"])
            .arg(&depot.answer)
            .arg("--config")
            .arg(&config)
            .args(["--depot", &depot.addr])
            .args(["--scanner", &format!("tcp:127.0.0.1:{scan_port}")])
            .args(["--uplink-interval-s", "1"]),
    );
    let data = bus.join("data");
    let stop_psam = Arc::new(AtomicBool::new(false));
    let psam = serve_psam(stop_psam.clone());
    let (go, go_rx) = mpsc::channel();
    let (cards, ended) = serve_cards(go_rx);
    let card_reader = std::ffi::CString::new(CARD_READER).unwrap();
    let tap = |p: &Program, card: usize| -> Value {
        go.send(card).unwrap();
        let line = p.next_line();
        ended
            .recv_timeout(Duration::from_secs(WAIT_S))
            .expect("the card left");
        // pcscd notices a card that left only at its next poll of vpcd: the next card comes
        // once the reader shows empty, as a passenger's would.
        let empty = readers
            .wait_for(
                &card_reader,
                Presence::Empty,
                Some(Duration::from_secs(WAIT_S)),
            )
            .unwrap();
        assert!(empty, "pcscd saw the card leave");
        line
    };

    let p = start_validator(&config, &tmp.path().join("validator-1.log"));
    let a = tap(&p, 0);
    assert_eq!(
        (a["result"].as_str(), a["media"].as_str()),
        (Some("accepted"), Some("card"))
    );
    assert_eq!(a["id"], CARDS[0]);
    assert_eq!(a["text_zh"], "请上车");
    assert_eq!(tap(&p, 1)["result"], "accepted");

    // The channel key published at the depot arrives with the uplink; then a code issued now
    // goes through, and junk from the scanner is one refusal per line.
    wait_until("ride-code keys installed", || {
        status(&data)["status"]["installed"]["keys"].as_u64() > Some(0)
    });
    let mut s = scanner(scan_port);
    let code = issue_code(&depot.channel_key, 42, "37140000000000000099", 1);
    s.write_all(code.as_bytes()).unwrap();
    s.write_all(b"\r\n").unwrap();
    let qr = p.next_line();
    assert_eq!(
        (qr["media"].as_str(), qr["result"].as_str()),
        (Some("qr"), Some("accepted"))
    );
    s.write_all(&[0xff; 2000]).unwrap();
    s.write_all(b"\n").unwrap();
    let junk = p.next_line();
    assert_eq!(junk["reason"], "malformed");
    assert_eq!(junk["text_en"], "not a ride code");

    wait_until("three records at the depot", || depot_seq(&depot.db) == 3);

    // The counter reports card 0 lost; the running validator refuses its next tap.
    let before = status(&data)["status"]["installed"]["blacklist"]
        .as_u64()
        .unwrap_or(0);
    run_ok(
        bin()
            .args([
                "depot",
                "blacklist",
                "add",
                "--card",
                CARDS[0],
                "--reason",
                "lost",
                "--db",
            ])
            .arg(&depot.db),
    );
    wait_until("the loss report installed in the running validator", || {
        status(&data)["status"]["installed"]["blacklist"].as_u64() > Some(before)
    });
    let refused = tap(&p, 0);
    assert_eq!(refused["reason"], "blacklisted");
    assert_eq!(refused["text_zh"], "黑名单卡");

    // A tap, then SIGKILL at once: its record is durable, maybe not yet uploaded.
    let c = tap(&p, 2);
    assert_eq!(
        (c["result"].as_str(), c["seq"].as_u64()),
        (Some("accepted"), Some(4))
    );
    drop(p);

    let mut p = start_validator(&config, &tmp.path().join("validator-2.log"));
    let d = tap(&p, 3);
    assert_eq!(
        (d["result"].as_str(), d["seq"].as_u64()),
        (Some("accepted"), Some(5))
    );
    // Card 0 is still refused after the restart: the list was persisted.
    assert_eq!(tap(&p, 0)["reason"], "blacklisted");
    wait_until("every record at the depot", || depot_seq(&depot.db) == 5);
    let store = Store::open_read(&depot.db).unwrap();
    assert_eq!(
        store.record_count().unwrap(),
        5,
        "nothing lost, nothing doubled"
    );

    // The status line on demand, then a clean stop.
    let _ = std::fs::remove_file(data.join("status.json"));
    p.signal(libc::SIGUSR1);
    wait_until("the status file", || {
        status(&data)["status"]["records_waiting"] == 0
    });
    assert_eq!(p.terminate().code(), Some(0));

    drop(go);
    cards.join().unwrap();
    stop_psam.store(true, Ordering::Relaxed);
    psam.join().unwrap();
}
