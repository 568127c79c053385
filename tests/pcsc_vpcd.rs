//! The validator through the real PC/SC stack: pcscd, vsmartcard's virtual reader driver
//! (vpcd), the `pcsc` crate, and the project's simulated card and PSAM behind vpcd's sockets.
//!
//! - the card sits in "Virtual PCD 00 00" (vpcd port 35963), served from a thread of this test;
//! - the PSAM sits in "Virtual PCD 00 01" (vpcd port 35964), also served over vpcd;
//! - the engine reaches both through [`Station`] (the PC/SC backend), and every decision is
//!   compared with the in-process simulation of the same cards at the same times.
//!
//! Needs pcscd running with vsmartcard-vpcd (`scripts/pcscd-start.sh`). Where pcscd cannot be
//! reached or shows no vpcd readers, each test prints why and passes without running, unless
//! `FARE_VALIDATOR_REQUIRE_PCSCD=1` (set it in CI) turns that into a failure.
//!
//! Figures: `cargo test --all-features --release --test pcsc_vpcd -- --ignored --nocapture`.
#![cfg(feature = "pcsc")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fare_validator::blacklist::Blacklist;
use fare_validator::card::apdu::{command, sw, CardChannel, Response};
use fare_validator::card::pcsc::{PcscChannel, Presence, Readers};
use fare_validator::card::psam::Psam;
use fare_validator::card::quickpass::PanTokenKey;
use fare_validator::card::sim::{CardSpec, PsamProtocol, Removal, SimCard, SimPsam, TestKeys};
use fare_validator::card::sim_quickpass::SimPhysicalCard;
use fare_validator::card::tunion::AID;
use fare_validator::card::vpcd::{SessionEnd, VpcdLink, VPCD_CARD_PORT, VPCD_SAM_PORT};
use fare_validator::clock::Timestamp;
use fare_validator::engine::{Decision, EngineConfig, Validator};
use fare_validator::fare::FareTable;
use fare_validator::journal::{self, Journal};
use fare_validator::reader::Station;
use fare_validator::replay::{card_entry, REPLAY_CARD_SEED, REPLAY_TERMINAL_NO};
use fare_validator::types::Reason;

const CARD_READER: &str = "Virtual PCD 00 00";
const SAM_READER: &str = "Virtual PCD 00 01";
/// The holder takes the card away once it was idle this long after its first command.
const IDLE_LEAVE_MS: u64 = 200;
/// Longest wait for pcscd to see a card arrive or leave (it polls vpcd every 400 ms).
const PRESENCE_TIMEOUT_S: u64 = 10;
const T0: &str = "2026-11-28T08:00:05+08:00";

/// vpcd has one socket per reader: tests that use it run one at a time.
static VPCD: Mutex<()> = Mutex::new(());

/// vpcd's ports are shared by every process on the machine (another checkout's tests, a
/// `sim-card` left running): an exclusive `flock` on this file in the temporary folder makes
/// such tests wait for each other instead of fighting over the readers.
const VPCD_LOCK_FILE: &str = "fare-validator-vpcd.lock";

/// This binary's turn at vpcd, across threads and processes; released when dropped.
struct VpcdTurn {
    _file: std::fs::File,
    _one: std::sync::MutexGuard<'static, ()>,
}

fn vpcd_turn() -> VpcdTurn {
    use std::os::fd::AsRawFd;
    let one = VPCD.lock().unwrap_or_else(|e| e.into_inner());
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(std::env::temp_dir().join(VPCD_LOCK_FILE))
        .expect("vpcd lock file");
    // Blocks until no other process holds it; the kernel releases it if that process dies.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock {VPCD_LOCK_FILE}");
    VpcdTurn {
        _file: file,
        _one: one,
    }
}

fn loopback(port: u16) -> std::net::SocketAddrV4 {
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port)
}

/// pcscd with both vpcd readers, or None (skip) with the reason on standard error.
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
        "{test}: {why}; FARE_VALIDATOR_REQUIRE_PCSCD is set, so this fails"
    );
    // Straight to the process's stderr, past the test harness's capture, so that the skip
    // shows in a normal `cargo test` run.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {why}. Start it with scripts/pcscd-start.sh."
    );
    None
}

fn spec(card_no: &str, card_type: &str, balance_fen: i64) -> CardSpec {
    serde_json::from_value(serde_json::json!({
        "card_no": card_no, "card_type": card_type, "enabled": true,
        "valid_from": "2024-01-01", "valid_until": "2034-12-31", "balance_fen": balance_fen
    }))
    .unwrap()
}

fn sim_cards(specs: &[CardSpec]) -> Vec<SimCard> {
    specs
        .iter()
        .map(|s| SimCard::new(s, &TestKeys::default(), REPLAY_CARD_SEED).unwrap())
        .collect()
}

/// The simulated PSAM in vpcd's second reader, until `stop`.
fn serve_psam(stop: Arc<AtomicBool>, protocol: PsamProtocol) -> JoinHandle<SimPsam> {
    std::thread::spawn(move || {
        let mut psam =
            SimPsam::new(TestKeys::default(), REPLAY_TERMINAL_NO, 1).with_protocol(protocol);
        let link = VpcdLink::connect(loopback(VPCD_SAM_PORT)).expect("connect PSAM to vpcd");
        let end = link
            .serve(&mut psam, &mut |_| stop.load(Ordering::Relaxed))
            .expect("serve PSAM");
        assert_eq!(end, SessionEnd::Withdrawn, "vpcd closed the PSAM's socket");
        psam
    })
}

/// One presentation: which card, and whether it leaves mid-dialogue.
type Presentation = (usize, Option<Removal>);

/// The simulated cards in vpcd's first reader: each `go` presents the next card, which
/// leaves when idle; how each presentation ended comes back on the returned channel.
fn serve_cards(
    mut cards: Vec<SimCard>,
    go: mpsc::Receiver<Presentation>,
) -> (JoinHandle<Vec<SimCard>>, mpsc::Receiver<SessionEnd>) {
    let (tx, ended) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let idle = Duration::from_millis(IDLE_LEAVE_MS);
        let max = Duration::from_secs(PRESENCE_TIMEOUT_S * 3);
        for (i, removal) in go {
            let card = &mut cards[i];
            card.enter_field(removal);
            let link = VpcdLink::connect(loopback(VPCD_CARD_PORT)).expect("connect card");
            let end = link
                .serve(card, &mut |a| {
                    (a.apdus > 0 && a.idle >= idle) || a.present_for >= max
                })
                .expect("serve card");
            if tx.send(end).is_err() {
                break;
            }
        }
        cards
    });
    (h, ended)
}

/// What a step of a scenario does.
#[derive(Clone, Copy)]
enum Step {
    /// Card i is tapped `at_s` seconds after T0, maybe leaving mid-dialogue.
    Tap {
        card: usize,
        at_s: i64,
        removal: Option<Removal>,
    },
    /// The vehicle now runs this route.
    Route(u16),
}

struct Outcome {
    decisions: Vec<Decision>,
    cards: Vec<SimCard>,
    records: Vec<journal::Record>,
}

/// The scenario in process: the reference.
fn run_in_process(specs: &[CardSpec], steps: &[Step]) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path()).unwrap();
    let psam = Psam::open(SimPsam::new(TestKeys::default(), REPLAY_TERMINAL_NO, 1)).unwrap();
    let mut v = Validator::new(
        EngineConfig::default(),
        psam,
        FareTable::default_policy(),
        Blacklist::empty(),
        j,
    );
    let t0 = Timestamp::parse_rfc3339(T0).unwrap();
    let mut cards = sim_cards(specs);
    let mut decisions = Vec::new();
    for s in steps {
        match *s {
            Step::Tap {
                card,
                at_s,
                removal,
            } => {
                cards[card].enter_field(removal);
                decisions.push(v.tap_card(&mut cards[card], t0.plus_s(at_s)));
            }
            Step::Route(r) => v.set_route(r),
        }
    }
    let records = journal::scan(dir.path()).unwrap().records;
    Outcome {
        decisions,
        cards,
        records,
    }
}

/// The scenario through pcscd and vpcd.
/// Wait until both vpcd readers are empty: pcscd notices a card that left only at its next
/// poll, and a reader it still shows as holding a card cannot take a new one yet.
fn wait_readers_empty(readers: &Readers) {
    for name in [CARD_READER, SAM_READER] {
        assert!(
            readers
                .wait_for(
                    &std::ffi::CString::new(name).unwrap(),
                    Presence::Empty,
                    Some(Duration::from_secs(PRESENCE_TIMEOUT_S))
                )
                .unwrap(),
            "{name} holds a card that is not this test's (another virtual card connected?)"
        );
    }
}

fn run_through_pcscd(
    readers: Readers,
    specs: &[CardSpec],
    steps: &[Step],
    protocol: PsamProtocol,
) -> Outcome {
    wait_readers_empty(&readers);
    let after = readers.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let psam_thread = serve_psam(stop.clone(), protocol);
    let (go, go_rx) = mpsc::channel();
    let (cards_thread, ended) = serve_cards(sim_cards(specs), go_rx);
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path()).unwrap();
    let mut station = Station::open(
        readers,
        CARD_READER,
        SAM_READER,
        EngineConfig::default(),
        FareTable::default_policy(),
        Blacklist::empty(),
        j,
    )
    .expect("open station on the vpcd readers");
    let t0 = Timestamp::parse_rfc3339(T0).unwrap();
    let timeout = Some(Duration::from_secs(PRESENCE_TIMEOUT_S));
    let mut decisions = Vec::new();
    for s in steps {
        match *s {
            Step::Tap {
                card,
                at_s,
                removal,
            } => {
                go.send((card, removal)).unwrap();
                let (_, d) = station
                    .tap(&mut || t0.plus_s(at_s), timeout)
                    .expect("tap")
                    .expect("pcscd saw the card arrive");
                decisions.push(d);
                let end = ended
                    .recv_timeout(Duration::from_secs(PRESENCE_TIMEOUT_S))
                    .expect("card left");
                let expected = if removal.is_some() && d.outcome == Err(Reason::CardRemoved) {
                    SessionEnd::CardLeft
                } else {
                    SessionEnd::Withdrawn
                };
                assert_eq!(end, expected, "presentation of card {card}");
                assert!(
                    station.wait_card_gone(timeout).unwrap(),
                    "pcscd saw the card leave"
                );
            }
            Step::Route(r) => station.validator_mut().set_route(r),
        }
    }
    drop(go);
    let cards = cards_thread.join().expect("card thread");
    drop(station); // releases the PSAM's reader
    stop.store(true, Ordering::Relaxed);
    psam_thread.join().expect("PSAM thread");
    wait_readers_empty(&after);
    let records = journal::scan(dir.path()).unwrap().records;
    Outcome {
        decisions,
        cards,
        records,
    }
}

fn assert_same(pcsc: &Outcome, sim: &Outcome) {
    assert_eq!(pcsc.decisions, sim.decisions, "decisions");
    for (i, (a, b)) in pcsc.cards.iter().zip(&sim.cards).enumerate() {
        assert_eq!(
            (a.balance_fen(), a.offline_counter(), a.is_blocked()),
            (b.balance_fen(), b.offline_counter(), b.is_blocked()),
            "card {i} state"
        );
    }
    let summary = |r: &[journal::Record]| {
        r.iter()
            .map(|r| (r.seq, r.kind, r.card_no, r.fare_fen, r.balance_fen, r.route))
            .collect::<Vec<_>>()
    };
    assert_eq!(summary(&pcsc.records), summary(&sim.records), "records");
}

#[test]
fn taps_through_pcscd_and_vpcd_decide_as_the_simulation() {
    let _turn = vpcd_turn();
    let Some(readers) = pcscd_or_skip("taps_through_pcscd_and_vpcd_decide_as_the_simulation")
    else {
        return;
    };
    let specs = [
        spec("37140000000000000001", "adult", 5000),
        spec("37140000000000000002", "student", 50),
    ];
    let tap = |card, at_s| Step::Tap {
        card,
        at_s,
        removal: None,
    };
    let steps = [
        tap(0, 0),      // accepted, 200
        tap(0, 20),     // repeat_tap
        Step::Route(2), // another route within the hour: transfer
        tap(0, 600),    // accepted, 100
        tap(1, 610),    // student: 100 > 50, insufficient_balance
    ];
    let pcsc = run_through_pcscd(readers, &specs, &steps, PsamProtocol::T1);
    let sim = run_in_process(&specs, &steps);
    assert_same(&pcsc, &sim);
    let reasons: Vec<_> = pcsc.decisions.iter().map(|d| d.outcome).collect();
    assert_eq!(
        reasons,
        [
            Ok(()),
            Err(Reason::RepeatTap),
            Ok(()),
            Err(Reason::InsufficientBalance)
        ]
    );
    assert_eq!(
        pcsc.decisions
            .iter()
            .map(|d| d.fare_fen)
            .collect::<Vec<_>>(),
        [200, 0, 100, 0]
    );
    assert_eq!(pcsc.cards[0].balance_fen(), 4700);
    assert_eq!(pcsc.records.len(), 2);
}

#[test]
fn card_pulled_away_after_debit_is_recovered_once() {
    let _turn = vpcd_turn();
    let Some(readers) = pcscd_or_skip("card_pulled_away_after_debit_is_recovered_once") else {
        return;
    };
    let specs = [spec("37140000000000000003", "adult", 5000)];
    let steps = [
        Step::Tap {
            card: 0,
            at_s: 0,
            removal: Some(Removal::AfterDebit),
        },
        Step::Tap {
            card: 0,
            at_s: 5,
            removal: None,
        },
    ];
    let pcsc = run_through_pcscd(readers, &specs, &steps, PsamProtocol::T1);
    let sim = run_in_process(&specs, &steps);
    assert_same(&pcsc, &sim);
    let [torn, again] = [pcsc.decisions[0], pcsc.decisions[1]];
    assert_eq!(torn.outcome, Err(Reason::CardRemoved));
    assert_eq!(torn.seq, None);
    assert_eq!(again.outcome, Ok(()));
    assert_eq!(again.fare_fen, 200, "the first tap's fare");
    assert_eq!(again.balance_fen, Some(4800));
    assert_eq!(pcsc.cards[0].balance_fen(), 4800, "charged once");
    assert_eq!(pcsc.cards[0].offline_counter(), 1, "one debit");
    assert_eq!(pcsc.records.len(), 1, "one record");
    assert_eq!(
        pcsc.records[0].kind,
        fare_validator::journal::RecordKind::CardRecovered
    );
}

/// A whole day's taps through pcscd with the PSAM on T=0 (ATR with T=0 only, 61xx to MAC1,
/// 6C06 to the terminal number read with Le 00): the same decisions, records and purses as the
/// in-process T=1 simulation, a torn debit recovered through it too.
#[test]
fn t0_psam_through_pcscd_decides_as_the_t1_simulation() {
    let _turn = vpcd_turn();
    let Some(readers) = pcscd_or_skip("t0_psam_through_pcscd_decides_as_the_t1_simulation") else {
        return;
    };
    let specs = [
        spec("37140000000000000011", "adult", 5000),
        spec("37140000000000000012", "senior", 0),
    ];
    let tap = |card, at_s, removal| Step::Tap {
        card,
        at_s,
        removal,
    };
    let steps = [
        tap(0, 0, None),
        tap(1, 10, None),
        Step::Route(2),
        tap(0, 600, Some(Removal::AfterDebit)),
        tap(0, 610, None),
    ];
    let pcsc = run_through_pcscd(readers, &specs, &steps, PsamProtocol::T0);
    let sim = run_in_process(&specs, &steps);
    assert_same(&pcsc, &sim);
    let outcomes: Vec<_> = pcsc.decisions.iter().map(|d| d.outcome).collect();
    assert_eq!(outcomes, [Ok(()), Ok(()), Err(Reason::CardRemoved), Ok(())]);
    assert_eq!(
        pcsc.cards[0].balance_fen(),
        4700,
        "200, then a transfer of 100, once"
    );
    assert_eq!(pcsc.records.len(), 3);
}

/// Connect to the card in the first vpcd reader and SELECT the transport application `n`
/// times; per-APDU round trips in microseconds, sorted.
fn apdu_round_trips(readers: &Readers, quickack: bool, n: usize) -> Vec<u128> {
    let mut card = sim_cards(&[spec("37140000000000000009", "adult", 5000)]).remove(0);
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let h = std::thread::spawn(move || {
        let mut link = VpcdLink::connect(loopback(VPCD_CARD_PORT)).unwrap();
        link.set_quickack(quickack);
        link.serve(&mut card, &mut |_| s.load(Ordering::Relaxed))
            .unwrap()
    });
    let name = std::ffi::CString::new(CARD_READER).unwrap();
    assert!(readers
        .wait_for(
            &name,
            Presence::Card,
            Some(Duration::from_secs(PRESENCE_TIMEOUT_S))
        )
        .unwrap());
    let mut ch: PcscChannel = readers.connect(&name).unwrap();
    let select = command(0x00, 0xA4, 0x04, 0x00, &AID, None);
    let mut r = Response::default();
    let mut us = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        ch.transmit(&select, &mut r).unwrap();
        us.push(t.elapsed().as_micros());
        assert_eq!(r.sw, sw::OK);
    }
    ch.disconnect();
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    assert!(readers
        .wait_for(
            &name,
            Presence::Empty,
            Some(Duration::from_secs(PRESENCE_TIMEOUT_S))
        )
        .unwrap());
    us.sort_unstable();
    us
}

fn pct(sorted: &[u128], p: usize) -> u128 {
    sorted[(sorted.len() - 1) * p / 100]
}

/// Round trips per APDU (with and without TCP_QUICKACK) and per whole tap.
#[test]
#[ignore = "measurement: run with --ignored --nocapture"]
fn measure_round_trips_through_pcscd() {
    let _turn = vpcd_turn();
    let Some(readers) = pcscd_or_skip("measure_round_trips_through_pcscd") else {
        return;
    };
    wait_readers_empty(&readers);
    for (quickack, n) in [(true, 2000), (false, 40)] {
        let us = apdu_round_trips(&readers, quickack, n);
        println!(
            "APDU round trip (SELECT), TCP_QUICKACK {}: n={n} p50={} us p99={} us max={} us",
            if quickack { "on " } else { "off" },
            pct(&us, 50),
            pct(&us, 99),
            us[us.len() - 1]
        );
    }

    // Whole taps: one card left on the reader, tapped every 2 minutes of engine time (past
    // anti-passback), each a full purchase dialogue with the PSAM behind vpcd as well.
    let taps = 300;
    let stop = Arc::new(AtomicBool::new(false));
    let psam_thread = serve_psam(stop.clone(), PsamProtocol::T1);
    let mut card = sim_cards(&[spec("37140000000000000010", "adult", 1_000_000)]).remove(0);
    let cstop = Arc::new(AtomicBool::new(false));
    let s = cstop.clone();
    let card_thread = std::thread::spawn(move || {
        let link = VpcdLink::connect(loopback(VPCD_CARD_PORT)).unwrap();
        link.serve(&mut card, &mut |_| s.load(Ordering::Relaxed))
            .unwrap();
        card
    });
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path()).unwrap();
    let sam = std::ffi::CString::new(SAM_READER).unwrap();
    let name = std::ffi::CString::new(CARD_READER).unwrap();
    let wait = Some(Duration::from_secs(PRESENCE_TIMEOUT_S));
    assert!(readers.wait_for(&sam, Presence::Card, wait).unwrap());
    assert!(readers.wait_for(&name, Presence::Card, wait).unwrap());
    let psam = Psam::open(readers.connect(&sam).unwrap()).unwrap();
    let mut v = Validator::new(
        EngineConfig::default(),
        psam,
        FareTable::default_policy(),
        Blacklist::empty(),
        j,
    );
    let mut ch = readers.connect(&name).unwrap();
    let t0 = Timestamp::parse_rfc3339(T0).unwrap();
    let mut us = Vec::with_capacity(taps);
    for i in 0..taps {
        let t = Instant::now();
        let d = v.tap_card(&mut ch, t0.plus_s(120 * i as i64));
        us.push(t.elapsed().as_micros());
        assert!(d.accepted(), "{d:?}");
    }
    us.sort_unstable();
    println!(
        "whole tap (select, read x3, init, MAC1, update, debit, MAC2, fsync'd record): \
         n={taps} p50={} us p99={} us max={} us",
        pct(&us, 50),
        pct(&us, 99),
        us[us.len() - 1]
    );
    ch.disconnect();
    drop(v);
    cstop.store(true, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let card = card_thread.join().unwrap();
    assert_eq!(card.balance_fen(), 1_000_000 - 200 * taps as i32);
    psam_thread.join().unwrap();
    wait_readers_empty(&readers);
}

/// The command line end to end: `sim-card --psam`, `run`, and `sim-card --card` with a torn
/// first tap, as three processes around pcscd.
/// Wait for the `run` child (its stdout piped) to end by itself, killing it after
/// three presence timeouts so a missed tap fails the test rather than hanging CI: its exit
/// status and everything it printed.
fn wait_run(run: &mut std::process::Child) -> (std::process::ExitStatus, String) {
    let mut out = run.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).map(|_| s)
    });
    let deadline = Instant::now() + Duration::from_secs(PRESENCE_TIMEOUT_S * 3);
    let status = loop {
        if let Some(st) = run.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = run.kill();
            break run.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, reader.join().unwrap().unwrap())
}

#[test]
fn run_and_sim_card_commands_end_to_end() {
    use std::process::{Command, Stdio};
    let _turn = vpcd_turn();
    let Some(readers) = pcscd_or_skip("run_and_sim_card_commands_end_to_end") else {
        return;
    };
    wait_readers_empty(&readers);
    let exe = env!("CARGO_BIN_EXE_fare-validator");
    let dir = tempfile::tempdir().unwrap();
    let card_file = dir.path().join("card.json");
    std::fs::write(
        &card_file,
        serde_json::json!({"cards": [{"card_no": "37140000000000000004", "card_type": "adult",
            "enabled": true, "valid_from": "2024-01-01", "valid_until": "2034-12-31",
            "balance_fen": 5000}]})
        .to_string(),
    )
    .unwrap();
    let mut psam = Command::new(exe)
        .args(["sim-card", "--vpcd", "127.0.0.1:35964", "--psam"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let journal = dir.path().join("journal");
    let mut run = Command::new(exe)
        .args(["run", "--reader", CARD_READER, "--sam-reader", SAM_READER])
        .args(["--max-taps", "2", "--journal"])
        .arg(&journal)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let card = Command::new(exe)
        .args(["sim-card", "--vpcd", "127.0.0.1:35963", "--card"])
        .arg(&card_file)
        .args([
            "--taps",
            "2",
            "--removal",
            "after_debit",
            "--away-ms",
            "1000",
        ])
        .output()
        .unwrap();
    // `run` stops after two taps; should it not see them, it is killed rather than hang CI.
    let (status, stdout) = wait_run(&mut run);
    let _ = psam.kill();
    let _ = psam.wait();
    wait_readers_empty(&readers);
    assert!(card.status.success(), "sim-card: {card:?}");
    assert!(status.success(), "run: {status:?}, printed {stdout:?}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["reason"], "card_removed");
    assert_eq!(lines[1]["result"], "accepted");
    assert_eq!(lines[1]["fare_fen"], 200);
    assert_eq!(lines[1]["balance_fen"], 4800);
    assert_eq!(journal::scan(&journal).unwrap().records.len(), 1);
}

/// The vectors' good QuickPass card alone, and beside a transport application never
/// activated (the tap then uses QuickPass), as CARDS.json entries.
fn quickpass_entries() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/quickpass-v1.json"),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let alone = v["cases"][0]["card"].clone();
    let mut both = alone.clone();
    for (k, val) in serde_json::json!({"card_no": "37140000000000000077", "card_type": "adult",
        "enabled": false, "valid_from": "2024-01-01", "valid_until": "2034-12-31",
        "balance_fen": 5000})
    .as_object()
    .unwrap()
    {
        both[k] = val.clone();
    }
    vec![alone, both]
}

fn quickpass_ca() -> fare_validator::card::quickpass::CaKeys {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/quickpass-v1.json"),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    fare_validator::card::quickpass::CaKeys::from_json(&v["ca_keys"].to_string()).unwrap()
}

fn physical_cards() -> Vec<SimPhysicalCard> {
    quickpass_entries()
        .iter()
        .map(|e| {
            let (t, q) = card_entry(e.as_object().unwrap(), &TestKeys::default()).unwrap();
            SimPhysicalCard::new(t, q)
        })
        .collect()
}

/// QuickPass taps: the QuickPass-only card, again within the anti-passback window, the card
/// with both applications (the same application PAN) past the window, the same leaving once
/// GPO's answer was lost, and again.
const QP_STEPS: [(usize, i64, Option<Removal>); 5] = [
    (0, 0, None),
    (0, 20, None),
    (1, 100, None),
    (1, 300, Some(Removal::AfterDebit)),
    (1, 310, None),
];

fn qp_summary(records: &[journal::Record]) -> Vec<(u64, journal::RecordKind, u32, Option<u16>)> {
    records
        .iter()
        .map(|r| (r.seq, r.kind, r.fare_fen, r.quickpass.map(|q| q.atc)))
        .collect()
}

#[test]
fn quickpass_taps_through_pcscd_and_vpcd_decide_as_the_simulation() {
    let _turn = vpcd_turn();
    let Some(readers) =
        pcscd_or_skip("quickpass_taps_through_pcscd_and_vpcd_decide_as_the_simulation")
    else {
        return;
    };
    let t0 = Timestamp::parse_rfc3339(T0).unwrap();
    // In process: the reference.
    let sim_dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(sim_dir.path()).unwrap();
    let psam = Psam::open(SimPsam::new(TestKeys::default(), REPLAY_TERMINAL_NO, 1)).unwrap();
    let mut v = Validator::new(
        EngineConfig::default(),
        psam,
        FareTable::default_policy(),
        Blacklist::empty(),
        j,
    );
    v.set_quickpass(quickpass_ca(), PanTokenKey::TEST, 7);
    let mut cards = physical_cards();
    let mut sim = Vec::new();
    for (i, at_s, removal) in QP_STEPS {
        cards[i].enter_field(removal);
        sim.push(v.tap_card(&mut cards[i], t0.plus_s(at_s)));
    }
    drop(v);
    let reasons: Vec<_> = sim.iter().map(|d| d.outcome).collect();
    assert_eq!(
        reasons,
        [
            Ok(()),
            Err(Reason::RepeatTap),
            Ok(()),
            Err(Reason::CardRemoved),
            Ok(())
        ]
    );
    assert!(sim
        .iter()
        .all(|d| d.media == fare_validator::types::Media::Quickpass));

    // Through pcscd and vpcd.
    wait_readers_empty(&readers);
    let after = readers.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let psam_thread = serve_psam(stop.clone(), PsamProtocol::T1);
    let (go, go_rx) = mpsc::channel::<Presentation>();
    let (ended_tx, ended) = mpsc::channel();
    let cards_thread = std::thread::spawn(move || {
        let mut cards = physical_cards();
        let idle = Duration::from_millis(IDLE_LEAVE_MS);
        let max = Duration::from_secs(PRESENCE_TIMEOUT_S * 3);
        for (i, removal) in go_rx {
            cards[i].enter_field(removal);
            let link = VpcdLink::connect(loopback(VPCD_CARD_PORT)).expect("connect card");
            let end = link
                .serve(&mut cards[i], &mut |a| {
                    (a.apdus > 0 && a.idle >= idle) || a.present_for >= max
                })
                .expect("serve card");
            if ended_tx.send(end).is_err() {
                break;
            }
        }
        cards
    });
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path()).unwrap();
    let mut station = Station::open(
        readers,
        CARD_READER,
        SAM_READER,
        EngineConfig::default(),
        FareTable::default_policy(),
        Blacklist::empty(),
        j,
    )
    .expect("open station on the vpcd readers");
    station
        .validator_mut()
        .set_quickpass(quickpass_ca(), PanTokenKey::TEST, 7);
    let timeout = Some(Duration::from_secs(PRESENCE_TIMEOUT_S));
    let mut decisions = Vec::new();
    for (i, at_s, removal) in QP_STEPS {
        go.send((i, removal)).unwrap();
        let (_, d) = station
            .tap(&mut || t0.plus_s(at_s), timeout)
            .expect("tap")
            .expect("pcscd saw the card arrive");
        decisions.push(d);
        let end = ended
            .recv_timeout(Duration::from_secs(PRESENCE_TIMEOUT_S))
            .expect("card left");
        let expected = if removal.is_some() {
            SessionEnd::CardLeft
        } else {
            SessionEnd::Withdrawn
        };
        assert_eq!(end, expected, "presentation of card {i}");
        assert!(
            station.wait_card_gone(timeout).unwrap(),
            "pcscd saw the card leave"
        );
    }
    drop(go);
    let pcsc_cards = cards_thread.join().expect("card thread");
    drop(station);
    stop.store(true, Ordering::Relaxed);
    psam_thread.join().expect("PSAM thread");
    wait_readers_empty(&after);
    assert_eq!(decisions, sim, "decisions");
    for (a, b) in pcsc_cards.iter().zip(&cards) {
        let atc = |c: &SimPhysicalCard| c.quickpass.as_ref().map(|q| q.atc());
        assert_eq!(atc(a), atc(b), "ATC");
    }
    let records = |d: &std::path::Path| qp_summary(&journal::scan(d).unwrap().records);
    assert_eq!(records(dir.path()), records(sim_dir.path()), "records");
    assert_eq!(records(dir.path()).len(), 3);
}

#[test]
fn run_and_sim_card_take_a_quickpass_card() {
    use std::process::{Command, Stdio};
    let _turn = vpcd_turn();
    let Some(readers) = pcscd_or_skip("run_and_sim_card_take_a_quickpass_card") else {
        return;
    };
    wait_readers_empty(&readers);
    let exe = env!("CARGO_BIN_EXE_fare-validator");
    let dir = tempfile::tempdir().unwrap();
    let card_file = dir.path().join("card.json");
    let ca_file = dir.path().join("ca.json");
    std::fs::write(
        &card_file,
        serde_json::json!({"cards": [quickpass_entries()[0]]}).to_string(),
    )
    .unwrap();
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/quickpass-v1.json"),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    std::fs::write(&ca_file, v["ca_keys"].to_string()).unwrap();
    let mut psam = Command::new(exe)
        .args(["sim-card", "--vpcd", "127.0.0.1:35964", "--psam"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let journal = dir.path().join("journal");
    let mut run = Command::new(exe)
        .args(["run", "--reader", CARD_READER, "--sam-reader", SAM_READER])
        .args(["--max-taps", "1", "--emv-ca"])
        .arg(&ca_file)
        .arg("--journal")
        .arg(&journal)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let card = Command::new(exe)
        .args(["sim-card", "--vpcd", "127.0.0.1:35963", "--card"])
        .arg(&card_file)
        .output()
        .unwrap();
    let (status, stdout) = wait_run(&mut run);
    let _ = psam.kill();
    let _ = psam.wait();
    wait_readers_empty(&readers);
    assert!(card.status.success(), "sim-card: {card:?}");
    let presented: serde_json::Value =
        serde_json::from_slice(card.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(presented["pan"], "621483******0001", "{presented}");
    assert!(status.success(), "run: {status:?}, printed {stdout:?}");
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(line["result"], "accepted", "{line}");
    assert_eq!(line["media"], "quickpass");
    assert_eq!(line["id"], "621483******0001");
    assert!(!stdout.contains("6214830000000001"));
    let records = journal::scan(&journal).unwrap().records;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].kind, journal::RecordKind::Quickpass);
}
