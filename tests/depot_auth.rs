//! Only a provisioned terminal that knows its secret gets a session, and inside a session
//! only frames sealed with that session's key, in order, are taken.

mod depot_support;

use std::net::SocketAddr;
use std::time::Duration;

use depot_support::*;
use fare_validator::depot::Store;
use fare_validator::upload::auth::{self, Role, Session};
use fare_validator::upload::conn::{FrameReader, WireError};
use fare_validator::upload::frame::{
    decode_32, encode_frame, Batch, FrameType, HeldVersions, Hello, FRAME_PAYLOAD_BYTES_MAX,
};
use fare_validator::upload::{self, UploadError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);

struct Raw {
    rd: FrameReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    sess: Session,
}

/// A session opened by hand, as the real client does.
async fn handshake(addr: SocketAddr, id: &str, secret: &auth::Secret) -> Raw {
    let (rd, mut wr) = TcpStream::connect(addr).await.unwrap().into_split();
    let mut rd = FrameReader::new(rd);
    let hello = Hello {
        client_nonce: [3; 32],
        terminal_id: id.into(),
        held: HeldVersions::default(),
        epoch: 0,
        epoch_first_seq: 1,
    }
    .encode();
    wr.write_all(&encode_frame(FrameType::Hello, &hello))
        .await
        .unwrap();
    let (ty, p) = rd.read(WAIT).await.unwrap();
    let nonce = decode_32(ty, p).unwrap();
    let key = auth::station_key(secret, id);
    let proof = auth::client_proof(&key, &nonce, &hello);
    wr.write_all(&encode_frame(FrameType::Auth, &proof))
        .await
        .unwrap();
    let mut sess = Session::new(auth::session_key(&key, &nonce, &hello), Role::Validator);
    let (ty, p) = rd.read(WAIT).await.unwrap();
    assert_eq!(ty, FrameType::Welcome);
    sess.open(ty, p).unwrap();
    Raw { rd, wr, sess }
}

fn batch_body(first_seq: u64, n: u64) -> Vec<u8> {
    let raw: Vec<_> = (first_seq..first_seq + n)
        .map(|s| {
            let mut r = card_record(s);
            r.seq = s;
            r.encode()
        })
        .collect();
    Batch::encode_body(first_seq, &raw)
}

/// The station ends the connection: no frame comes back, only the end of the stream.
async fn assert_closed(rd: &mut FrameReader<OwnedReadHalf>) {
    match rd.read(WAIT).await {
        Err(WireError::Closed) | Err(WireError::Io(_)) => {}
        other => panic!("expected the station to close, got {other:?}"),
    }
}

async fn fresh(
    terminals: usize,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    fare_validator::depot::StationHandle,
) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let st = station(store(&db, terminals)).await;
    (tmp, db, st)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_and_unknown_terminal_are_refused() {
    let (tmp, db, st) = fresh(1).await;
    let dir = tmp.path().join("bus");
    card_journal(&dir, 10);
    for (id, secret) in [
        (terminal_id(0), secret(9)),
        ("bus-9999".to_string(), secret(0)),
    ] {
        let e = upload::upload(&dir, st.addr(), &id, &secret)
            .await
            .unwrap_err();
        assert!(matches!(e, UploadError::Refused { code: 1, .. }), "{e}");
    }
    st.shutdown().await;
    assert_eq!(Store::open(&db).unwrap().record_count().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bit_flipped_frame_ends_the_connection_and_stores_nothing() {
    let (_tmp, db, st) = fresh(1).await;
    let mut raw = handshake(st.addr(), &terminal_id(0), &secret(0)).await;
    let sealed = raw.sess.seal(FrameType::Batch, &batch_body(1, 10));
    let mut frame = encode_frame(FrameType::Batch, &sealed);
    frame[100] ^= 0x10;
    raw.wr.write_all(&frame).await.unwrap();
    assert_closed(&mut raw.rd).await;
    st.shutdown().await;
    assert_eq!(Store::open(&db).unwrap().record_count().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_with_good_crc_but_wrong_session_mac_is_refused() {
    let (_tmp, db, st) = fresh(1).await;
    let mut raw = handshake(st.addr(), &terminal_id(0), &secret(0)).await;
    let mut forger = Session::new([0x42; 32], Role::Validator);
    let sealed = forger.seal(FrameType::Batch, &batch_body(1, 10));
    raw.wr
        .write_all(&encode_frame(FrameType::Batch, &sealed))
        .await
        .unwrap();
    assert_closed(&mut raw.rd).await;

    // A genuine batch sent twice in one session: the second copy is a replay.
    let mut raw = handshake(st.addr(), &terminal_id(0), &secret(0)).await;
    let sealed = raw.sess.seal(FrameType::Batch, &batch_body(1, 10));
    let frame = encode_frame(FrameType::Batch, &sealed);
    raw.wr.write_all(&frame).await.unwrap();
    let (ty, p) = raw.rd.read(WAIT).await.unwrap();
    assert_eq!(ty, FrameType::Ack);
    raw.sess.open(ty, p).unwrap();
    raw.wr.write_all(&frame).await.unwrap();
    assert_closed(&mut raw.rd).await;
    st.shutdown().await;
    assert_eq!(Store::open(&db).unwrap().record_count().unwrap(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_session_replayed_against_a_new_nonce_is_refused() {
    let (tmp, _db, st) = fresh(1).await;
    let dir = tmp.path().join("bus");
    card_journal(&dir, 1_000);
    let p = proxy(st.addr(), None).await;
    upload::upload(&dir, p.addr, &terminal_id(0), &secret(0))
        .await
        .unwrap();
    let recorded = p.recorded.lock().unwrap()[0].clone();
    assert!(recorded.len() > 1_000 * 96);
    st.shutdown().await;

    // A second station with the same terminal: the eavesdropper replays every byte.
    let (_tmp2, db2, st2) = fresh(1).await;
    let (rd, mut wr) = TcpStream::connect(st2.addr()).await.unwrap().into_split();
    let mut rd = FrameReader::new(rd);
    let _ = wr.write_all(&recorded).await;
    let (ty, _) = rd.read(WAIT).await.unwrap();
    assert_eq!(ty, FrameType::Challenge);
    let (ty, _) = rd.read(WAIT).await.unwrap();
    assert_eq!(ty, FrameType::Refused);
    assert_closed(&mut rd).await;
    st2.shutdown().await;
    assert_eq!(Store::open(&db2).unwrap().record_count().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_end_their_connection_and_the_station_goes_on() {
    let (tmp, db, st) = fresh(1).await;
    let good = encode_frame(FrameType::Hello, &[0u8; 10]);
    let mut oversized = good.clone();
    oversized[4..8].copy_from_slice(&((FRAME_PAYLOAD_BYTES_MAX as u32) + 1).to_be_bytes());
    let mut bad_version = good.clone();
    bad_version[2] = 7;
    let mut unknown_type = good.clone();
    unknown_type[3] = 99;
    let malformed_hello = good.clone();
    let truncated = good[..good.len() - 3].to_vec();
    let garbage = b"GET / HTTP/1.1\r\n\r\n".to_vec();
    for bytes in [
        oversized,
        bad_version,
        unknown_type,
        malformed_hello,
        truncated,
        garbage,
    ] {
        let mut s = TcpStream::connect(st.addr()).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let n = tokio::time::timeout(WAIT, s.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "no answer to a hostile frame");
    }
    let dir = tmp.path().join("bus");
    card_journal(&dir, 100);
    let r = upload::upload(&dir, st.addr(), &terminal_id(0), &secret(0))
        .await
        .unwrap();
    assert_eq!(r.acked_seq, 100);
    st.shutdown().await;
    assert_eq!(Store::open(&db).unwrap().record_count().unwrap(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_batch_with_absurd_seqs_is_refused_not_acknowledged() {
    let (_tmp, db, st) = fresh(1).await;
    for (from_seq, seq) in [(1, 1_000_000), (u64::MAX - 1, u64::MAX), (5, 4)] {
        let mut raw = handshake(st.addr(), &terminal_id(0), &secret(0)).await;
        let mut r = card_record(seq);
        r.seq = seq;
        let body = Batch::encode_body(from_seq, &[r.encode()]);
        let sealed = raw.sess.seal(FrameType::Batch, &body);
        raw.wr
            .write_all(&encode_frame(FrameType::Batch, &sealed))
            .await
            .unwrap();
        assert_closed(&mut raw.rd).await;
    }
    st.shutdown().await;
    let s = Store::open(&db).unwrap();
    assert_eq!(s.record_count().unwrap(), 0);
    assert_eq!(s.contiguous_seq(&terminal_id(0), 0).unwrap(), 0);
}
