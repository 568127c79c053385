//! Slow, silent and half-open connections to the station are timed out; the station goes on.
//! Time is tokio's paused clock, so the handshake deadline passes without waiting.

mod depot_support;

use std::time::Duration;

use depot_support::*;
use fare_validator::depot::server::{FRAME_READ_TIMEOUT_S, HANDSHAKE_S_MAX};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn closed_by_station(mut s: TcpStream) -> bool {
    let mut buf = [0u8; 64];
    let limit = Duration::from_secs(FRAME_READ_TIMEOUT_S * 4);
    loop {
        match tokio::time::timeout(limit, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // the station's hello; keep silent
            Err(_) => return false,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn silent_and_half_sent_connections_are_timed_out_and_the_station_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let station = station(store(&tmp.path().join("depot.db"), 1)).await;
    let addr = station.addr();
    let silent = TcpStream::connect(addr).await.unwrap();
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(&[0x46, 0x56]).await.unwrap(); // two bytes of a frame header, then nothing
    let mut half_open = TcpStream::connect(addr).await.unwrap();
    half_open.write_all(&[0x46]).await.unwrap();
    half_open.shutdown().await.unwrap(); // our side closed for writing, never reads
    let began = tokio::time::Instant::now();
    assert!(
        closed_by_station(silent).await,
        "silent connection timed out"
    );
    assert!(
        began.elapsed() >= Duration::from_secs(HANDSHAKE_S_MAX),
        "closed by the handshake deadline, not before"
    );
    assert!(closed_by_station(slow).await, "slow connection timed out");
    assert!(
        closed_by_station(half_open).await,
        "half-open connection closed"
    );
    // A real terminal still gets through.
    let dir = tmp.path().join(terminal_id(0));
    card_journal(&dir, 5);
    let report = fare_validator::upload::upload(&dir, addr, &terminal_id(0), &secret(0))
        .await
        .unwrap();
    assert_eq!(report.acked_seq, 5);
    station.shutdown().await;
}
