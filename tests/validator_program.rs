//! The validator program's parts together, in one process and on real sockets: the engine
//! shared by the card input and the loopback TCP scanner, the uplink to a depot on
//! 127.0.0.1, and the downlink applied to the running engine (ride-code keys from the depot
//! let the next scan through; a card reported lost at the counter is refused at its next tap
//! with no restart). The same program through pcscd and vpcd is tests/validator_e2e.rs.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fare_validator::blacklist::{Blacklist, Change, ChangeOp};
use fare_validator::card::psam::Psam;
use fare_validator::card::sim::{CardSpec, SimCard, SimPsam, TestKeys};
use fare_validator::clock::Timestamp;
use fare_validator::depot::{self, Store};
use fare_validator::engine::{EngineConfig, Validator};
use fare_validator::fare::FareTable;
use fare_validator::journal::Journal;
use fare_validator::replay::{REPLAY_CARD_SEED, REPLAY_TERMINAL_NO};
use fare_validator::types::{ListId, ListReason, Reason};
use fare_validator::upload::client::UploadConfig;
use fare_validator::upload::downlink::DownlinkDir;
use fare_validator::validator::scanner;
use fare_validator::validator::{uplink, Shared};
use serde_json::Value;

/// The ride-code vectors' clock (fixtures/ride-code-v1.json).
const T0_UNIX_S: i64 = 1_795_824_000;
/// Longest wait for something the uplink brings; generous, so a slow machine never fails.
const WAIT_S: u64 = 60;
const TERMINAL: &str = "bus-0001";
const SECRET: [u8; 32] = [0x5a; 32];

/// Standard output of the program, kept for the test.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    /// Every complete line so far: a line the program is still writing (its newline not yet
    /// written) is left for the next look.
    fn all(&self) -> Vec<Value> {
        let mut bytes = self.0.lock().unwrap().clone();
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        bytes.truncate(complete);
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(WAIT_S);
    while !cond() {
        assert!(Instant::now() < end, "waited {WAIT_S} s for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn vector_code(name: &str) -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/ride-code-v1.json"
    ))
    .unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let case = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap();
    case["code"].as_str().unwrap().to_string()
}

fn card(card_no: &str) -> SimCard {
    let spec: CardSpec = serde_json::from_value(serde_json::json!({
        "card_no": card_no, "card_type": "adult", "enabled": true,
        "valid_from": "2024-01-01", "valid_until": "2034-12-31", "balance_fen": 5000
    }))
    .unwrap();
    SimCard::new(&spec, &TestKeys::default(), REPLAY_CARD_SEED).unwrap()
}

/// The program's shared part, and the PSAM its card loop owns.
/// The station's database in a test's folder.
const DEPOT_DB: &str = "depot.sqlite";

/// A station in `dir` that knows the bus [`TERMINAL`] and publishes the ride-code keys, and
/// the bus's data folder (returned), which pins the station's operator key (imported on
/// purpose: a station never makes one).
fn depot_and_bus(dir: &Path) -> (Store, std::path::PathBuf) {
    let store = Store::open(&dir.join(DEPOT_DB)).unwrap();
    store.add_terminal_with_secret(TERMINAL, &SECRET).unwrap();
    let keys = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/ride-code-keys.json"
    ))
    .unwrap();
    store.publish("keys", &keys).unwrap();
    let operator = fare_validator::signed::signing_key_from_seed([17; 32]);
    store.set_operator_key(&operator).unwrap();
    let data = dir.join("bus");
    DownlinkDir::new(&data)
        .pin_operator_key(&operator.verifying_key())
        .unwrap();
    (store, data)
}

/// The program's uplink to the depot at `depot`, on its own thread and runtime, every 200 ms;
/// it ends when the program stops.
fn start_uplink(
    shared: &Arc<Shared>,
    depot: std::net::SocketAddr,
    data: &Path,
) -> std::thread::JoinHandle<()> {
    let cfg = UploadConfig {
        depot,
        terminal_id: TERMINAL.into(),
        secret: SECRET,
        data_dir: data.to_path_buf(),
        blacklist_age_s_max: fare_validator::upload::downlink::BLACKLIST_AGE_S_MAX_DEFAULT,
    };
    let shared = Arc::clone(shared);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(uplink::run(
            shared,
            cfg,
            TERMINAL.into(),
            Duration::from_millis(200),
        ));
    })
}

fn program(data: &Path, clock: Arc<AtomicI64>, out: Lines) -> (Arc<Shared>, Psam<SimPsam>) {
    let (journal, problems) = Journal::open(data).unwrap();
    let psam = Psam::open(SimPsam::new(TestKeys::default(), REPLAY_TERMINAL_NO, 1)).unwrap();
    let engine = Validator::new(
        EngineConfig::default(),
        psam,
        FareTable::default_policy(),
        Blacklist::empty(),
        journal,
    );
    let (psam, core) = engine.into_parts();
    let shared = Arc::new(Shared::new(
        core,
        Box::new(out),
        Box::new(move || Timestamp {
            unix_s: clock.load(Ordering::Relaxed),
            utc_offset_s: 8 * 3600,
        }),
        problems.iter().map(|p| p.to_string()).collect(),
    ));
    (shared, psam)
}

#[test]
fn scans_taps_uplink_and_a_counter_action_reach_the_running_validator() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, data) = depot_and_bus(tmp.path());

    let rt = tokio::runtime::Runtime::new().unwrap();
    let station = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        depot::start(l, store).unwrap()
    });

    let clock = Arc::new(AtomicI64::new(T0_UNIX_S));
    let out = Lines::default();
    let (shared, mut psam) = program(&data, Arc::clone(&clock), out.clone());
    let uplink = start_uplink(&shared, station.addr(), &data);
    let listener = scanner::bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
    let scan_addr = listener.local_addr().unwrap();
    let scanner = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            scanner::serve_tcp(listener, &shared.scanner_state, &shared.stop, &mut |l| {
                shared.scan(l);
            })
        })
    };
    // What the card loop does while no card is on the reader.
    let idle = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            while !shared.stopping() {
                shared.between_taps();
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let mut a = card("37140000000000000011");
    a.enter_field(None);
    assert!(shared.tap(&mut psam, &mut a).accepted());

    // The key file the depot published arrives with the first session and lets codes in.
    wait_until("ride-code keys installed", || {
        shared.uplink.lock().unwrap().keys_version > 0
    });
    let mut s = TcpStream::connect(scan_addr).unwrap();
    s.write_all(vector_code("valid_p256").as_bytes()).unwrap();
    s.write_all(b"\r\n").unwrap();
    // A flood with no newline, then a line that is not UTF-8: one refusal each.
    s.write_all(&vec![b'Q'; 100_000]).unwrap();
    s.write_all(b"\n\xff\xfe\n").unwrap();
    s.write_all(vector_code("valid_sm2").as_bytes()).unwrap();
    s.write_all(b"\n").unwrap();
    wait_until("four scan decisions", || out.all().len() == 5);
    let lines = out.all();
    let reasons: Vec<&str> = lines
        .iter()
        .map(|l| l["reason"].as_str().unwrap_or("accepted"))
        .collect();
    assert_eq!(
        reasons,
        ["accepted", "accepted", "malformed", "malformed", "accepted"]
    );
    assert_eq!(lines[0]["text_zh"], "请上车");
    assert_eq!(lines[2]["text_en"], "not a ride code");
    assert_eq!(lines[1]["media"], "qr");

    // The counter reports card A lost; the running validator refuses its next tap.
    let version_before = shared.blacklist.version();
    let mut counter = Store::open(&tmp.path().join(DEPOT_DB)).unwrap();
    counter
        .blacklist_change(&Change {
            op: ChangeOp::Add,
            id: ListId::Card("37140000000000000011".parse().unwrap()),
            reason: ListReason::Lost,
        })
        .unwrap();
    wait_until("the loss report installed", || {
        shared.blacklist.version() > version_before
    });
    clock.fetch_add(600, Ordering::Relaxed);
    a.enter_field(None);
    let d = shared.tap(&mut psam, &mut a);
    assert_eq!(d.outcome, Err(Reason::Blacklisted));
    assert_eq!(out.all().last().unwrap()["text_zh"], "黑名单卡");

    // Every record reached the depot, once.
    let durable = shared.engine().journal().durable_seq();
    let epoch = shared.engine().journal().epoch();
    assert_eq!(durable, 3, "one tap and two codes recorded");
    wait_until("every record acknowledged", || {
        counter.contiguous_seq(TERMINAL, epoch).unwrap() == durable
            && shared.acked_seq.load(Ordering::Relaxed) == durable
    });
    assert_eq!(counter.record_count().unwrap(), durable);

    let status = fare_validator::validator::status::status_line(&shared, TERMINAL);
    assert_eq!(status["status"]["records_waiting"], 0);
    assert_eq!(status["status"]["scans_malformed"], 2);
    assert_eq!(status["status"]["scanner"], "connected");
    assert!(status["status"]["installed"]["keys"].as_u64() > Some(0));

    shared.stop.store(true, Ordering::Relaxed);
    for t in [uplink, scanner, idle] {
        t.join().unwrap();
    }
    rt.block_on(station.shutdown());
    assert!(data.join("status.json").exists());
}

/// The fleet's verified-certificate set reaches a bus through its upload session alone: the
/// hello names the version held (0), the depot sends the snapshot, the running engine takes
/// it between two scans, and a holder the fleet met before costs this bus no channel check;
/// a holder new to the fleet is checked in full, its proof goes up, the depot lists it, and
/// the next session brings a delta; a restart starts from the set held.
#[test]
fn the_fleet_set_comes_down_the_session_into_the_running_engine_and_stays_after_a_restart() {
    use fare_validator::ride_code::RideCode;
    use fare_validator::validator::scanner::ScanLine;
    let tmp = tempfile::tempdir().unwrap();
    let (mut store, data) = depot_and_bus(tmp.path());
    // Another bus met the SM2 holder: its code is kept as proof, the depot checked it once.
    let (sm2, p256) = (vector_code("valid_sm2"), vector_code("valid_p256"));
    let digest = |text: &str| RideCode::parse(text).unwrap().cert_digest();
    let sm2_bytes = RideCode::parse(&sm2).unwrap().bytes;
    store
        .store_proofs("bus-0002", 1, &[(1, sm2_bytes)])
        .unwrap();
    assert_eq!(store.update_cert_set(T0_UNIX_S).unwrap().version, 1);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let station = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        depot::start(l, store).unwrap()
    });
    let clock = Arc::new(AtomicI64::new(T0_UNIX_S));
    let (shared, psam) = program(&data, Arc::clone(&clock), Lines::default());
    let uplink = start_uplink(&shared, station.addr(), &data);
    let set_version = || shared.uplink.lock().unwrap().cert_set_version;
    wait_until("the set's snapshot installed", || set_version() == 1);
    assert_eq!(shared.uplink.lock().unwrap().keys_version, 1);
    assert!(shared.engine().verified_certs().contains(&digest(&sm2)));

    // The holder the fleet met: accepted, its channel signature not checked on this bus.
    assert!(shared.scan(ScanLine::Code(&sm2)).accepted());
    assert_eq!(shared.engine().verified_certs_spared(), 1);
    // The holder new to the fleet: checked in full; its proof goes up with its record.
    assert!(shared.scan(ScanLine::Code(&p256)).accepted());
    assert_eq!(shared.engine().verified_certs_spared(), 1);
    let mut depot_side = Store::open(&tmp.path().join(DEPOT_DB)).unwrap();
    wait_until("the new holder listed at the depot", || {
        depot_side.update_cert_set(T0_UNIX_S).unwrap().version == 2
    });
    wait_until("the delta installed", || set_version() == 2);
    let installed = shared.uplink.lock().unwrap().last_installed.clone();
    assert_eq!(installed, ["VerifiedCertDelta@2"]);
    assert_eq!(shared.engine().verified_certs().version(), 2);
    assert!(shared.engine().verified_certs().contains(&digest(&p256)));
    let status = fare_validator::validator::status::status_line(&shared, TERMINAL);
    assert_eq!(status["status"]["installed"]["verified_certs"], 2);

    shared.stop.store(true, Ordering::Relaxed);
    uplink.join().unwrap();
    rt.block_on(station.shutdown());
    drop((shared, psam));

    // A restart: the program starts from the set held in its data folder.
    let (shared, _psam) = program(&data, clock, Lines::default());
    assert_eq!(shared.engine().verified_certs().version(), 0);
    let applied = uplink::apply_downlink(&shared, &data);
    assert_eq!((applied.cert_set, applied.keys), (2, 1));
    let set = shared.engine().verified_certs();
    assert!(set.contains(&digest(&sm2)) && set.contains(&digest(&p256)));
}

/// A verified-certificate file that fails anything (another signer, a byte altered after
/// signing, the held snapshot again, expired on arrival) is refused by the bus folder, and the
/// running engine goes on with the last good set: still that version, still sparing the
/// channel check of the holders it lists.
#[test]
fn a_forged_or_stale_set_file_leaves_the_running_engine_on_the_last_good_set() {
    use fare_validator::ride_code::{cert_set, CertSet, ChannelKeys, RideCode, RideCodeConfig};
    use fare_validator::signed::{signing_key_from_seed, Dates};
    use fare_validator::validator::scanner::ScanLine;
    let tmp = tempfile::tempdir().unwrap();
    let (_store, data) = depot_and_bus(tmp.path());
    let operator = signing_key_from_seed([17; 32]);
    let keys = ChannelKeys::from_json(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/ride-code-keys.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let (shared, _psam) = program(&data, Arc::new(AtomicI64::new(T0_UNIX_S)), Lines::default());
    shared
        .engine()
        .set_ride_code_keys(keys.clone(), RideCodeConfig::default());
    let (sm2, p256) = (vector_code("valid_sm2"), vector_code("valid_p256"));
    let digest = |text: &str| RideCode::parse(text).unwrap().cert_digest();
    let held = CertSet::from_digests(1, &keys, [digest(&sm2), digest(&p256)]);
    let dates = Dates::starting(T0_UNIX_S as u32 - 60, 86_400);
    let dir = DownlinkDir::new(&data);
    let snapshot = cert_set::snapshot_file(&held, dates, &operator);
    dir.install(&snapshot, T0_UNIX_S).unwrap();
    assert_eq!(uplink::apply_downlink(&shared, &data).cert_set, 1);

    // Each would drop the P-256 holder.
    let delta = held.diff(&CertSet::from_digests(2, &keys, [digest(&sm2)]));
    let forged = cert_set::delta_file(&delta, dates, &signing_key_from_seed([18; 32]));
    let mut altered = cert_set::delta_file(&delta, dates, &operator);
    let last = altered.len() - 1;
    altered[last] ^= 1;
    let expired = cert_set::delta_file(&delta, Dates::starting(1_000, 10), &operator);
    for (what, file) in [
        ("forged", forged),
        ("altered", altered),
        ("stale", snapshot),
        ("expired", expired),
    ] {
        assert!(
            dir.install(&file, T0_UNIX_S).is_err(),
            "{what} file installed"
        );
        assert_eq!(uplink::apply_downlink(&shared, &data).cert_set, 1, "{what}");
    }
    let set = shared.engine().verified_certs();
    assert_eq!(set.version(), 1);
    assert!(set.contains(&digest(&p256)));
    assert!(shared.scan(ScanLine::Code(&sm2)).accepted());
    assert!(shared.scan(ScanLine::Code(&p256)).accepted());
    assert_eq!(shared.engine().verified_certs_spared(), 2);
}

/// Holds a tap at one chosen exchange (card or PSAM, counted together) until told to go on.
struct GateCtl {
    count: std::sync::atomic::AtomicUsize,
    stop_at: std::sync::atomic::AtomicUsize,
    /// true: the tap reached the chosen exchange; false: it ended.
    reached: Mutex<std::sync::mpsc::Sender<bool>>,
    go: Mutex<std::sync::mpsc::Receiver<()>>,
}

struct Gate<C> {
    inner: C,
    ctl: Arc<GateCtl>,
}

impl<C: fare_validator::card::apdu::CardChannel> fare_validator::card::apdu::CardChannel
    for Gate<C>
{
    fn transmit(
        &mut self,
        command: &[u8],
        response: &mut fare_validator::card::apdu::Response,
    ) -> Result<(), fare_validator::card::ChannelError> {
        let i = self.ctl.count.fetch_add(1, Ordering::SeqCst);
        if i == self.ctl.stop_at.load(Ordering::SeqCst) {
            self.ctl.reached.lock().unwrap().send(true).unwrap();
            self.ctl.go.lock().unwrap().recv().unwrap();
        }
        self.inner.transmit(command, response)
    }
}

/// A scan never waits behind a card dialogue: with the tap held at each of its card and PSAM
/// exchanges in turn, a ride code scanned meanwhile is decided and recorded, and the tap then
/// goes on to its own record. The tap's grey record and record stay in their order (its seq
/// comes after the scan's when it was held before its record).
#[test]
fn a_scan_is_decided_while_a_card_dialogue_is_held_at_any_exchange() {
    use fare_validator::ride_code::issuer::SimChannels;
    use fare_validator::ride_code::{ChannelKeys, RideCodeConfig};
    use fare_validator::types::{CardNo, RiderCategory};
    use fare_validator::validator::scanner::ScanLine;

    let tmp = tempfile::tempdir().unwrap();
    let (reached_tx, reached) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel();
    let ctl = Arc::new(GateCtl {
        count: 0.into(),
        stop_at: usize::MAX.into(),
        reached: Mutex::new(reached_tx),
        go: Mutex::new(go_rx),
    });
    let clock = Arc::new(AtomicI64::new(T0_UNIX_S));
    let (journal, _) = Journal::open(tmp.path()).unwrap();
    let gated_psam = Gate {
        inner: SimPsam::new(TestKeys::default(), REPLAY_TERMINAL_NO, 1),
        ctl: Arc::clone(&ctl),
    };
    let engine = Validator::new(
        EngineConfig::default(),
        Psam::open(gated_psam).unwrap(),
        FareTable::default_policy(),
        Blacklist::empty(),
        journal,
    );
    let (mut psam, core) = engine.into_parts();
    let out = Lines::default();
    let c = Arc::clone(&clock);
    let shared = Shared::new(
        core,
        Box::new(out.clone()),
        Box::new(move || Timestamp {
            unix_s: c.load(Ordering::Relaxed),
            utc_offset_s: 8 * 3600,
        }),
        Vec::new(),
    );
    let t0 = T0_UNIX_S as u32;
    let mut channels = SimChannels::new(7, (t0 - 86_400, t0 + 86_400 * 30));
    let keys = ChannelKeys::from_file(&channels.key_file()).unwrap();
    shared
        .engine()
        .set_ride_code_keys(keys, RideCodeConfig::default());
    let mut card = Gate {
        inner: card("37140000000000000011"),
        ctl: Arc::clone(&ctl),
    };
    let wait = Duration::from_secs(WAIT_S);
    let mut held_at = 0;
    loop {
        // A new minute each round: no repeat_tap, a fresh code.
        let now = clock.fetch_add(120, Ordering::SeqCst) + 120;
        let text = channels
            .issue(
                1,
                held_at as u64,
                CardNo::from_u128(3714_0000_0000_0009_0000 + held_at as u128).unwrap(),
                RiderCategory::Adult,
                now as u32 - 2,
                held_at as u32,
            )
            .unwrap();
        ctl.count.store(0, Ordering::SeqCst);
        ctl.stop_at.store(held_at, Ordering::SeqCst);
        card.inner.enter_field(None);
        let done = std::thread::scope(|s| {
            let ended = ctl.reached.lock().unwrap().clone();
            let (shared_ref, psam, card) = (&shared, &mut psam, &mut card);
            let tap = s.spawn(move || {
                let d = shared_ref.tap(psam, card);
                ended.send(false).unwrap();
                d
            });
            if !reached.recv_timeout(wait).unwrap() {
                // The tap ended before this many exchanges: every one was tried.
                return tap.join().unwrap().accepted().then_some(None);
            }
            let (scanned_tx, scanned) = std::sync::mpsc::channel();
            let (shared, text) = (&shared, &text);
            let scan = s.spawn(move || {
                let d = shared.scan(ScanLine::Code(text));
                scanned_tx.send(d).unwrap();
            });
            let d = scanned.recv_timeout(wait);
            // Let the tap go on either way, so a failure ends instead of hanging.
            go.send(()).unwrap();
            let d = d.unwrap_or_else(|_| {
                panic!("the scan waited behind the tap held at exchange {held_at}")
            });
            scan.join().unwrap();
            let t = tap.join().unwrap();
            // The tap's own word that it ended, so the next round starts clean.
            assert!(!reached.recv().unwrap());
            assert!(d.accepted(), "scan at exchange {held_at}: {d:?}");
            assert!(t.accepted(), "tap held at exchange {held_at}: {t:?}");
            Some(Some((d.seq.unwrap(), t.seq.unwrap())))
        });
        match done {
            Some(Some((scan_seq, tap_seq))) => assert_ne!(scan_seq, tap_seq),
            Some(None) => break,
            None => panic!("the last tap was refused"),
        }
        held_at += 1;
    }
    // SELECT, READ BINARY x4, INITIALIZE, MAC1, UPDATE, DEBIT, MAC2 at least.
    assert!(held_at >= 8, "only {held_at} exchanges in a tap");
    let lines = out.all();
    assert_eq!(lines.len(), 2 * held_at + 1);
    // The journal holds every decision once, in seq order, nothing lost.
    let seqs: Vec<u64> = lines.iter().filter_map(|l| l["seq"].as_u64()).collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), seqs.len());
    assert_eq!(
        shared.engine().journal().durable_seq(),
        *sorted.last().unwrap()
    );
    assert!(shared.engine().journal().grey_open().is_empty());
}

/// A scan checks its code (signatures, certificate, dates) before it takes the core: with the
/// core's lock held elsewhere (a tap's journal write and sync), the scan's first-seen holder
/// certificate is checked and cached meanwhile, and only its decision waits; it is then the
/// decision `scan_code` makes for the same code at the same clock.
#[test]
fn a_scan_checks_its_code_before_it_waits_for_the_core() {
    use fare_validator::ride_code::issuer::SimChannels;
    use fare_validator::ride_code::{ChannelKeys, RideCodeConfig};
    use fare_validator::types::{CardNo, RiderCategory};
    use fare_validator::validator::scanner::ScanLine;

    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicI64::new(T0_UNIX_S));
    let out = Lines::default();
    let (shared, _psam) = program(tmp.path(), Arc::clone(&clock), out.clone());
    let t0 = T0_UNIX_S as u32;
    let mut channels = SimChannels::new(11, (t0 - 86_400, t0 + 86_400 * 30));
    let keys = ChannelKeys::from_file(&channels.key_file()).unwrap();
    // Keys swapped in after the program started reach the checks made without the core.
    shared
        .engine()
        .set_ride_code_keys(keys.clone(), RideCodeConfig::default());
    let checks = shared.engine().ride_code_checks();
    let text = channels
        .issue(
            2,
            77,
            CardNo::from_u128(3714_0000_0000_0009_0077).unwrap(),
            RiderCategory::Adult,
            t0 - 2,
            1,
        )
        .unwrap();

    let d = std::thread::scope(|s| {
        let core = shared.engine();
        let scan = s.spawn(|| shared.scan(ScanLine::Code(&text)));
        wait_until(
            "the scan's certificate checked while the core is held",
            || checks.cached_certificates() == 1,
        );
        assert!(!scan.is_finished(), "decided without the core");
        assert!(out.all().is_empty());
        drop(core);
        scan.join().unwrap()
    });
    assert!(d.accepted(), "{d:?}");
    assert_eq!(d.seq, Some(1));

    // The engine alone, same code, same clock: the same decision.
    let other = tempfile::tempdir().unwrap();
    let (alone, _psam) = program(other.path(), clock, Lines::default());
    alone
        .engine()
        .set_ride_code_keys(keys, RideCodeConfig::default());
    let now = Timestamp {
        unix_s: T0_UNIX_S,
        utc_offset_s: 8 * 3600,
    };
    assert_eq!(alone.engine().scan_code(&text, now), d);
}
