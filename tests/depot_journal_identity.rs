//! Nothing vanishes unnoticed between a bus and the depot: each journal has an identity (an
//! epoch made when it is created), the depot stores records by (terminal, epoch, seq), a bus
//! never moves its cursor on a station's word beyond its own journal, a record that differs
//! from the one stored at its key is refused and reported, and a session always reaches the
//! downlink. Every attack is played on 127.0.0.1.

mod depot_support;

use std::io::{Read, Write};

use depot_support::*;
use fare_validator::blacklist::{Change, ChangeOp};
use fare_validator::depot::Store;
use fare_validator::journal::{Journal, SEGMENT_RECORDS_MAX};
use fare_validator::types::{ListId, ListReason};
use fare_validator::upload::downlink::DownlinkDir;
use fare_validator::upload::frame::{
    decode_refused, encode_frame_version, FrameType, HeldVersions, Hello, FRAME_HEADER_BYTES,
};
use fare_validator::upload::{self, UploadReport};

async fn up(dir: &std::path::Path, addr: std::net::SocketAddr) -> UploadReport {
    upload::upload(dir, addr, &terminal_id(0), &secret(0))
        .await
        .unwrap()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_journal_is_a_new_epoch_whose_records_are_stored_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let st = station(store(&db, 1)).await;
    let old = tmp.path().join("old");
    card_journal(&old, 10);
    assert_eq!(up(&old, st.addr()).await.acked_seq, 10);

    // New storage: the bus starts again at seq 1. The station's count of the old journal
    // (10) must not move the new one's cursor: its five records go up.
    let new = tmp.path().join("new");
    card_journal(&new, 5);
    let r = up(&new, st.addr()).await;
    st.shutdown().await;
    assert_eq!((r.uploaded, r.acked_seq), (5, 5));
    assert_ne!(r.epoch, up_epoch(&old));
    let s = Store::open(&db).unwrap();
    assert_eq!(s.record_count().unwrap(), 15, "nothing silently dropped");
    let t = &s.report().unwrap().terminals[&terminal_id(0)];
    assert_eq!(
        t.journals.len(),
        2,
        "the new epoch is stored and reported as such"
    );
    assert_eq!(
        t.journals.iter().map(|j| j.records).collect::<Vec<_>>(),
        [10, 5]
    );
    assert!(t.gaps.is_empty());
    assert_eq!(t.fare_fen, 15 * 200);
    let replaced: Vec<_> = s
        .findings(100)
        .unwrap()
        .into_iter()
        .filter(|f| f.kind == "journal_replaced")
        .map(|f| (f.epoch, f.from))
        .collect();
    assert_eq!(replaced, vec![(r.epoch.clone(), 1)], "a stored finding");
}

fn up_epoch(dir: &std::path::Path) -> String {
    let (j, _) = Journal::open(dir).unwrap();
    format!("{:016x}", j.epoch())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_differing_from_the_one_stored_at_its_seq_is_refused_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let st = station(store(&db, 1)).await;
    // An image of the bus's storage taken after five records, restored later: the same
    // epoch, and seqs 6.. written again with other taps.
    let bus = tmp.path().join("bus");
    card_journal(&bus, 5);
    let image = tmp.path().join("image");
    copy_dir(&bus, &image);
    write_journal(&bus, (6..=10).map(card_record));
    assert_eq!(up(&bus, st.addr()).await.acked_seq, 10);

    write_journal(&image, (106..=108).map(card_record));
    let r = up(&image, st.addr()).await;
    st.shutdown().await;
    assert_eq!(
        r.records_refused, 3,
        "seqs 6..=8 hold other records at the depot"
    );
    assert!(
        r.problems.iter().any(|p| p.contains("rolled back")),
        "{:?}",
        r.problems
    );
    assert!(r.acked_seq <= 8, "never past what this journal wrote");
    let s = Store::open(&db).unwrap();
    assert_eq!(s.record_count().unwrap(), 10, "the first records are kept");
    let t = &s.report().unwrap().terminals[&terminal_id(0)];
    assert_eq!(
        t.conflicts, 3,
        "refused and reported, never dropped quietly"
    );
    let mut fares = Vec::new();
    s.for_each_record(|_, rec, _| {
        fares.push(rec.card_tx.terminal_seq);
        Ok(())
    })
    .unwrap();
    assert_eq!(fares, (1..=10).collect::<Vec<u32>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depot_restored_from_a_backup_gets_held_records_again_the_rest_declared_gone_and_the_downlink_still_comes(
) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    {
        let s = store(&db, 1);
        s.set_operator_key(&key).unwrap();
    }
    let backup = tmp.path().join("backup.db");
    std::fs::copy(&db, &backup).unwrap();

    // A full segment and a bit more: once acknowledged, the first segment is dropped.
    let n = SEGMENT_RECORDS_MAX + 100;
    let bus = tmp.path().join("bus");
    card_journal(&bus, n);
    DownlinkDir::new(&bus)
        .pin_operator_key(&key.verifying_key())
        .unwrap();
    let st = station(Store::open(&db).unwrap()).await;
    assert_eq!(up(&bus, st.addr()).await.acked_seq, n);
    st.shutdown().await;
    assert_eq!(
        Journal::open(&bus).unwrap().0.held_from_seq().unwrap(),
        SEGMENT_RECORDS_MAX
    );

    // The depot is restored from last night's backup, and a card is cancelled since.
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
    }
    std::fs::copy(&backup, &db).unwrap();
    let mut s = Store::open(&db).unwrap();
    let card = ListId::Card("37140000000000000077".parse().unwrap());
    s.blacklist_change(&Change {
        op: ChangeOp::Add,
        id: card,
        reason: ListReason::Cancelled,
    })
    .unwrap();
    let st = station(s).await;
    let r = up(&bus, st.addr()).await;
    st.shutdown().await;
    assert_eq!(r.gone, vec![[1, SEGMENT_RECORDS_MAX]]);
    assert_eq!(r.acked_seq, n);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.installed.len(), 1, "the downlink step was reached: {r:?}");
    assert!(DownlinkDir::new(&bus).blacklist().get(&card).is_some());
    let s = Store::open(&db).unwrap();
    assert_eq!(
        s.record_count().unwrap(),
        100,
        "the records still held went up again"
    );
    let t = &s.report().unwrap().terminals[&terminal_id(0)];
    assert_eq!(t.journals[0].gone, vec![[1, SEGMENT_RECORDS_MAX]]);
    assert!(t.gaps.iter().all(|g| t.declared_lost.contains(g)));
}

#[test]
fn older_protocol_hellos_are_refused_with_their_reason_in_their_framing() {
    // Version 1 had no epoch nor set version; version 4 no set version.
    for (version, missing) in [(1u8, 24usize), (4, 8)] {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let st = rt.block_on(station(store(&tmp.path().join("depot.db"), 1)));
        let addr = st.addr();
        let answer = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            // The body of that version: today's without the fields it did not have.
            let mut hello = Hello {
                client_nonce: [1; 32],
                terminal_id: terminal_id(0),
                held: HeldVersions::default(),
                epoch: 0,
                epoch_first_seq: 1,
            }
            .encode();
            hello.truncate(hello.len() - missing);
            s.write_all(&encode_frame_version(version, FrameType::Hello, &hello))
                .unwrap();
            let mut head = [0u8; FRAME_HEADER_BYTES];
            s.read_exact(&mut head).unwrap();
            let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
            let mut rest = vec![0u8; len + 4];
            s.read_exact(&mut rest).unwrap();
            (head, rest)
        })
        .join()
        .unwrap();
        rt.block_on(st.shutdown());
        let (head, rest) = answer;
        assert_eq!((head[2], head[3]), (version, FrameType::Refused as u8));
        let (_, text) = decode_refused(&rest[..rest.len() - 4]).unwrap();
        assert!(text.contains("no longer served"), "{text}");
    }
}
