//! Every record reaches the depot exactly once: many validators at once, dropped
//! connections, and a station killed and restarted mid-upload.

mod depot_support;

use depot_support::*;
use fare_validator::depot::Store;
use fare_validator::upload::{self, client::SESSION_ATTEMPTS_MAX, frame::BATCH_RECORDS_MAX};

/// Wait for the proxy's fault, never forever.
async fn tripped(p: &Proxy) {
    tokio::time::timeout(std::time::Duration::from_secs(30), p.tripped.notified())
        .await
        .expect("the proxy's fault never happened: the journal is shorter than the cut");
}

const VALIDATORS: usize = 20;
const RECORDS_EACH: u64 = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_validators_upload_at_once_and_each_record_is_stored_once() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let station = station(store(&db, VALIDATORS)).await;
    let mut dirs = Vec::new();
    for n in 0..VALIDATORS {
        let dir = tmp.path().join(terminal_id(n));
        card_journal(&dir, RECORDS_EACH);
        dirs.push(dir);
    }
    let addr = station.addr();
    let uploads: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(n, dir)| {
            let dir = dir.clone();
            tokio::spawn(async move {
                upload::upload(&dir, addr, &terminal_id(n), &secret(n as u8)).await
            })
        })
        .collect();
    for u in uploads {
        let r = u.await.unwrap().unwrap();
        assert_eq!((r.uploaded, r.acked_seq), (RECORDS_EACH, RECORDS_EACH));
    }
    // A second night with nothing new sends nothing and changes nothing.
    let again = upload::upload(&dirs[0], addr, &terminal_id(0), &secret(0))
        .await
        .unwrap();
    assert_eq!((again.uploaded, again.acked_seq), (0, RECORDS_EACH));
    station.shutdown().await;

    let s = Store::open(&db).unwrap();
    assert_eq!(s.record_count().unwrap(), VALIDATORS as u64 * RECORDS_EACH);
    let report = s.report().unwrap();
    for n in 0..VALIDATORS {
        let t = &report.terminals[&terminal_id(n)];
        assert_eq!((t.records, t.max_seq), (RECORDS_EACH, RECORDS_EACH));
        assert!(t.gaps.is_empty());
        assert_eq!(t.fare_fen, RECORDS_EACH * 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cut_mid_batch_is_resumed_and_nothing_is_stored_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let station = station(store(&db, 1)).await;
    let dir = tmp.path().join("bus");
    let total = 4 * BATCH_RECORDS_MAX as u64;
    card_journal(&dir, total);
    // Hello and Auth are under 200 bytes: this cuts inside the third batch.
    let cut_at = 200 + (2 * BATCH_RECORDS_MAX + BATCH_RECORDS_MAX / 2) * 96;
    let p = proxy(station.addr(), Some((cut_at, Fault::Cut))).await;
    let r = upload::upload(&dir, p.addr, &terminal_id(0), &secret(0))
        .await
        .unwrap();
    assert_eq!((r.uploaded, r.acked_seq), (total, total));
    assert!(r.sessions >= 2, "the first session was cut");
    station.shutdown().await;
    let s = Store::open(&db).unwrap();
    assert_eq!(s.record_count().unwrap(), total);
    assert!(s.report().unwrap().terminals[&terminal_id(0)]
        .gaps
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn station_killed_mid_upload_and_restarted_on_the_same_database_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let first = station(store(&db, 1)).await;
    let dir = tmp.path().join("bus");
    let total = 5 * BATCH_RECORDS_MAX as u64;
    card_journal(&dir, total);
    let stall_at = 200 + (3 * BATCH_RECORDS_MAX + 100) * 96;
    let p = proxy(first.addr(), Some((stall_at, Fault::Stall))).await;
    let upload = tokio::spawn({
        let (dir, addr) = (dir.clone(), p.addr);
        async move { upload::upload(&dir, addr, &terminal_id(0), &secret(0)).await }
    });
    tripped(&p).await;
    // Let the station store what reached it, then kill it in the middle of the session.
    let watcher = Store::open(&db).unwrap();
    for _ in 0..500 {
        if watcher.record_count().unwrap() >= 3 * BATCH_RECORDS_MAX as u64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    first.abort().await;
    let second = station(Store::open(&db).unwrap()).await;
    *p.target.lock().unwrap() = second.addr();
    p.release.notify_one();

    let r = upload.await.unwrap().unwrap();
    assert_eq!(r.acked_seq, total);
    assert!(r.sessions >= 2 && r.sessions <= SESSION_ATTEMPTS_MAX);
    second.shutdown().await;
    assert_eq!(watcher.record_count().unwrap(), total);
    let t = &watcher.report().unwrap().terminals[&terminal_id(0)];
    assert_eq!((t.records, t.max_seq, t.gaps.len()), (total, total, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn station_process_killed_with_sigkill_and_restarted_loses_nothing() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    drop(store(&db, 1));
    let spawn = || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fare-validator"))
            .args(["depot", "serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(&db)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let addr: std::net::SocketAddr = v["listening"].as_str().unwrap().parse().unwrap();
        (child, addr)
    };
    let (mut child, addr) = spawn();
    let dir = tmp.path().join("bus");
    let total = 3 * BATCH_RECORDS_MAX as u64;
    card_journal(&dir, total);
    let p = proxy(
        addr,
        Some((200 + (BATCH_RECORDS_MAX + 300) * 96, Fault::Stall)),
    )
    .await;
    let upload = tokio::spawn({
        let (dir, addr) = (dir.clone(), p.addr);
        async move { upload::upload(&dir, addr, &terminal_id(0), &secret(0)).await }
    });
    tripped(&p).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let (mut child, addr) = spawn();
    *p.target.lock().unwrap() = addr;
    p.release.notify_one();
    let r = upload.await.unwrap().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(r.acked_seq, total);
    let s = Store::open(&db).unwrap();
    assert_eq!(s.record_count().unwrap(), total);
    assert!(s.report().unwrap().terminals[&terminal_id(0)]
        .gaps
        .is_empty());
}
