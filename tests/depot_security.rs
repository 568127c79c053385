//! Attacks on the upload station and the downlink, each played on 127.0.0.1 with a bounded
//! count of connections and a bounded wait, asserting the station's own counters and the
//! validator's state rather than timings (docs/reliability.md, "Security").

mod depot_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use depot_support::*;
use fare_validator::blacklist::file::{open_snapshot, snapshot_file, BlacklistFileError};
use fare_validator::blacklist::{BlacklistHandle, Change, ChangeOp};
use fare_validator::depot::server::{
    StationStats, HANDSHAKES_MAX, HANDSHAKES_PER_ADDR_MAX, HANDSHAKE_BUFFER_BYTES,
};
use fare_validator::depot::{StationHandle, Store};
use fare_validator::signed::{self, Dates};
use fare_validator::types::{ListId, ListReason};
use fare_validator::upload;
use fare_validator::upload::downlink::{
    DownlinkDir, DownlinkError, FileKind, BLACKLIST_AGE_S_MAX_DEFAULT,
};
use fare_validator::upload::frame::{FrameType, FRAME_PAYLOAD_BYTES_MAX, MAGIC, PROTOCOL_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Idle sockets opened by the flood, spread over source addresses 127.0.0.1 ..= 127.0.0.8:
/// over the per-address cap on each, and over the total cap all together.
const IDLE_SOCKETS: usize = 1_024;
const _: () = assert!(8 * HANDSHAKES_PER_ADDR_MAX >= HANDSHAKES_MAX);
/// Hellos announcing a 256 KiB payload, from 127.0.0.1.
const OVERSIZED_HELLOS: usize = 1_024;
/// Connections opened before waiting for the station to accept them (below the backlog).
const CONNECT_WAVE: usize = 128;
/// Oversized hellos sent before waiting for the station to refuse them (below the
/// per-address cap, so that none is evicted before its header is read).
const HELLO_WAVE: usize = 16;
/// Longest wait for the station's counters to catch up with the flood.
const CATCH_UP_S_MAX: u64 = 60;

async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(IpAddr::V4(source), 0)).unwrap();
    s.connect(to).await.unwrap()
}

/// Wait until the station's counters satisfy `done` (bounded).
async fn until(station: &StationHandle, done: impl Fn(&StationStats) -> bool) -> StationStats {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(CATCH_UP_S_MAX);
    loop {
        let s = station.stats();
        if done(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "station stuck at {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_and_oversized_hellos_do_not_block_a_real_upload() {
    let tmp = tempfile::tempdir().unwrap();
    let station = station(store(&tmp.path().join("depot.db"), 1)).await;
    let addr = station.addr();
    let mut held = Vec::with_capacity(IDLE_SOCKETS + OVERSIZED_HELLOS);
    for i in 0..IDLE_SOCKETS {
        let source = Ipv4Addr::new(127, 0, 0, 1 + (i % 8) as u8);
        held.push(connect_from(source, addr).await);
        if (i + 1) % CONNECT_WAVE == 0 {
            until(&station, |s| s.accepted as usize == i + 1).await;
        }
    }
    let mut header = Vec::with_capacity(8);
    header.extend_from_slice(&MAGIC);
    header.push(PROTOCOL_VERSION);
    header.push(FrameType::Hello as u8);
    header.extend_from_slice(&(FRAME_PAYLOAD_BYTES_MAX as u32).to_be_bytes());
    for i in 0..OVERSIZED_HELLOS {
        let mut s = connect_from(Ipv4Addr::LOCALHOST, addr).await;
        s.write_all(&header).await.unwrap();
        held.push(s);
        if (i + 1) % HELLO_WAVE == 0 {
            until(&station, |s| s.handshake_frames_oversized as usize == i + 1).await;
        }
    }
    let flooded = station.stats();
    // The flood holds every place it could; a bus from the same address still gets through.
    let dir = tmp.path().join(terminal_id(0));
    card_journal(&dir, 5);
    let report = fare_validator::upload::upload(&dir, addr, &terminal_id(0), &secret(0))
        .await
        .expect("a real upload succeeds during the flood");
    assert_eq!(report.acked_seq, 5);
    // The station counts the session when its task ends, a moment after the bus has its ack:
    // wait for it, bounded, rather than read the counter too early.
    let mut s = station.stats();
    for _ in 0..1_000 {
        if s.sessions_complete >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        s = station.stats();
    }
    assert_eq!(s.sessions_complete, 1);
    assert_eq!(s.handshake_frames_oversized as usize, OVERSIZED_HELLOS);
    assert!(s.handshakes_peak as usize <= HANDSHAKES_MAX, "{s:?}");
    assert!(
        s.handshake_buffer_bytes_peak as usize <= HANDSHAKE_BUFFER_BYTES,
        "no handshake buffer grew to what a header claimed: {s:?}"
    );
    assert!(
        flooded.handshakes_evicted as usize >= IDLE_SOCKETS - HANDSHAKES_MAX,
        "idle sockets over the caps were ended: {flooded:?}"
    );
    // The oldest idle socket from 127.0.0.1 was ended by the station, not left open.
    let mut first = held.swap_remove(0);
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(CATCH_UP_S_MAX), first.read(&mut buf))
        .await
        .expect("the station closed the evicted socket");
    assert!(matches!(n, Ok(0) | Err(_)), "evicted socket closed");
    drop(held);
    station.shutdown().await;
}

fn operator() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[41; 32])
}

fn now_unix_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

const FARES: &str = include_str!("../fixtures/fares.toml");

fn lost(card: &str, op: ChangeOp, reason: ListReason) -> Change {
    Change {
        op,
        id: ListId::Card(card.parse().unwrap()),
        reason,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_restored_from_a_backup_or_a_replayed_older_file_never_rolls_a_bus_back() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let card = "37140000000000000009";
    let mut s = store(&db, 1);
    s.set_operator_key(&operator()).unwrap();
    s.publish("fares", FARES.as_bytes()).unwrap();
    s.blacklist_change(&lost(card, ChangeOp::Add, ListReason::Lost))
        .unwrap();
    // What this station signs today, recorded by someone for later (a backup, a capture).
    let old_snapshot = snapshot_file(&s.blacklist().unwrap(), &operator());
    let old_fares = signed::seal(FileKind::FareTable, 1, 0, FARES.as_bytes(), &operator());
    drop(s);
    let backup = tmp.path().join("backup.db");
    std::fs::copy(&db, &backup).unwrap();
    // The card is then cancelled and the fares change; the bus takes both.
    let mut s = Store::open(&db).unwrap();
    s.blacklist_change(&lost(card, ChangeOp::Add, ListReason::Cancelled))
        .unwrap();
    s.publish("fares", FARES.replace("200", "250").as_bytes())
        .unwrap();
    drop(s);
    let dir = tmp.path().join("bus");
    card_journal(&dir, 3);
    let bus = DownlinkDir::new(&dir);
    bus.pin_operator_key(&operator().verifying_key()).unwrap();
    let st = station(Store::open(&db).unwrap()).await;
    let r = upload::upload(&dir, st.addr(), &terminal_id(0), &secret(0))
        .await
        .unwrap();
    st.shutdown().await;
    assert_eq!((r.blacklist_version, r.fares_version), (2, 2));
    assert!(!r.blacklist_stale);
    let id = ListId::Card(card.parse().unwrap());
    assert!(bus
        .blacklist()
        .get(&id)
        .is_some_and(|r| r.contains(ListReason::Cancelled)));

    // The depot is restored from the backup: the station is behind the bus.
    std::fs::copy(&backup, &db).unwrap();
    let st = station(Store::open(&db).unwrap()).await;
    let r = upload::upload(&dir, st.addr(), &terminal_id(0), &secret(0))
        .await
        .unwrap();
    st.shutdown().await;
    assert_eq!(r.installed, Vec::<String>::new(), "nothing older is sent");
    assert_eq!((r.blacklist_version, r.fares_version), (2, 2));

    // The recorded older files, replayed to the bus: refused as rollbacks, nothing changes.
    let now = now_unix_s();
    for (file, kind) in [
        (&old_snapshot, "blacklist_snapshot"),
        (&old_fares, "fare_table"),
    ] {
        match bus.install(file, now) {
            Err(DownlinkError::Rollback {
                kind: k,
                held: 2,
                file: 1,
            }) => assert_eq!(k, kind),
            other => panic!("{kind}: {other:?}"),
        }
    }
    assert!(bus
        .blacklist()
        .get(&id)
        .is_some_and(|r| r.contains(ListReason::Cancelled)));
    assert_eq!(bus.fare_table().unwrap().1.base_fare_fen, 250);

    // The same older snapshot offered to a running bus's live list: refused there too.
    let live = BlacklistHandle::new(bus.blacklist());
    assert!(matches!(
        live.install_snapshot_file(old_snapshot.clone(), &operator().verifying_key()),
        Err(BlacklistFileError::Stale {
            current: 2,
            file: 1
        })
    ));
    let older = open_snapshot(old_snapshot.clone(), Some(&operator().verifying_key())).unwrap();
    assert!(live.replace(older).is_err());
    assert!(live
        .get(&id)
        .is_some_and(|r| r.contains(ListReason::Cancelled)));

    // A newer file past its expiry is refused; so is one without dates (format 1).
    let expired = signed::seal_dated(
        FileKind::FareTable,
        3,
        0,
        Dates::starting((now - 7200) as u32, 3600),
        FARES.as_bytes(),
        &operator(),
    );
    assert!(matches!(
        bus.install(&expired, now),
        Err(DownlinkError::Expired { .. })
    ));
    let mut undated = signed::seal(FileKind::FareTable, 3, 0, FARES.as_bytes(), &operator());
    undated[8..10].copy_from_slice(&1u16.to_le_bytes());
    undated[12..16].fill(0);
    undated[44..48].fill(0);
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
    let mut d = crc.digest();
    d.update(&undated[..40]);
    d.update(&undated[signed::HEADER_LEN..]);
    let c = d.finalize();
    undated[40..44].copy_from_slice(&c.to_le_bytes());
    assert!(matches!(
        bus.install(&undated, now),
        Err(DownlinkError::Undated)
    ));
    assert_eq!(bus.held_versions().fares, 2);

    // Freeze: no newer list comes; once older than the configured age the bus says so.
    let fresh = bus.status(now, BLACKLIST_AGE_S_MAX_DEFAULT);
    assert!(!fresh.blacklist_stale, "{fresh:?}");
    let later = now + BLACKLIST_AGE_S_MAX_DEFAULT as i64 + 1;
    assert!(
        bus.status(later, BLACKLIST_AGE_S_MAX_DEFAULT)
            .blacklist_stale
    );
}

#[test]
fn the_command_line_logs_a_failed_login_without_rust_log() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    drop(store(&db, 1));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fare-validator"))
        .args(["depot", "serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr: SocketAddr = v["listening"].as_str().unwrap().parse().unwrap();
    let dir = tmp.path().join("bus");
    card_journal(&dir, 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Read the station's log as it comes, so the test waits for the line (bounded) instead
    // of killing the station before it has written it.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    assert!(rt
        .block_on(upload::upload(&dir, addr, &terminal_id(0), &secret(9)))
        .is_err());
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let found = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("WARN") && line.contains("authentication refused") => {
                break true
            }
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    child.kill().unwrap();
    let _ = child.wait();
    assert!(
        found,
        "no WARN line for the refused login; stderr: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_station_makes_no_signing_key_and_its_database_gives_away_no_bus_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let s = Store::open(&db).unwrap();
    assert!(s.operator_key().unwrap().is_none(), "no key made unasked");
    let master = s.add_terminal(&terminal_id(0)).unwrap();
    s.publish("fares", FARES.as_bytes()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&db).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the database holds keys: owner only");
    }
    let st = station(s).await;
    let dir = tmp.path().join("bus");
    card_journal(&dir, 4);
    DownlinkDir::new(&dir)
        .pin_operator_key(&operator().verifying_key())
        .unwrap();
    let r = upload::upload(&dir, st.addr(), &terminal_id(0), &master)
        .await
        .unwrap();
    st.shutdown().await;
    assert_eq!(
        r.acked_seq, 4,
        "the bus authenticates with its master secret"
    );
    assert!(r.installed.is_empty(), "nothing signed without a key");
    // A copy of the database (a backup) holds the derived key, never the bus's secret.
    let mut bytes = std::fs::read(&db).unwrap();
    if let Ok(wal) = std::fs::read(tmp.path().join("depot.db-wal")) {
        bytes.extend_from_slice(&wal);
    }
    let holds = |k: &[u8]| bytes.windows(k.len()).any(|w| w == k);
    assert!(!holds(&master), "the master secret is not in the database");
    assert!(holds(&fare_validator::upload::auth::station_key(
        &master,
        &terminal_id(0)
    )));
}

#[test]
fn upload_takes_no_secret_on_the_command_line() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fare-validator"))
        .args(["upload", "--journal", ".", "--depot", "127.0.0.1:9"])
        .args(["--terminal", "bus-0000", "--secret", &"11".repeat(32)])
        .env_remove("FARE_VALIDATOR_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "no --secret option");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fare-validator"))
        .args(["upload", "--journal", ".", "--depot", "127.0.0.1:9"])
        .args(["--terminal", "bus-0000"])
        .env_remove("FARE_VALIDATOR_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--secret-file") && err.contains("FARE_VALIDATOR_SECRET"),
        "{err}"
    );
}
