//! Helpers for the depot tests: synthetic journals, stations on loopback, and a proxy that
//! cuts or stalls a connection after a number of bytes.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use fare_validator::depot::{self, StationHandle, Store};
use fare_validator::journal::{CardTx, Journal, QrTx, Record, RecordKind, UnsyncedFiles};
use fare_validator::types::{AccountId, CardNo, RiderCategory};
use fare_validator::upload::auth::Secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// A deterministic secret for terminal `n`.
pub fn secret(n: u8) -> Secret {
    [n.wrapping_mul(31).wrapping_add(7); 32]
}

pub fn terminal_id(n: usize) -> String {
    format!("bus-{n:04}")
}

/// A card purchase of 200 fen by card `i`.
pub fn card_record(i: u64) -> Record {
    Record {
        seq: 0,
        kind: RecordKind::CardPurchase,
        at_unix_s: 1_795_824_000 + i as i64,
        utc_offset_min: 480,
        route: 7,
        category: RiderCategory::Adult,
        fare_fen: 200,
        balance_fen: Some(4_800),
        card_no: CardNo::from_u128(37_140_000_000_000_000_000 + u128::from(i % 100_000)).unwrap(),
        card_tx: CardTx {
            offline_counter: (i % 65_000) as u16,
            terminal_seq: i as u32,
            tac: [1, 2, 3, 4],
        },
        qr: None,
        quickpass: None,
        terminal_no: [0, 0, 0, 0, 0x01, 0x23],
        rule: fare_validator::fare::FareRule::Unknown,
    }
}

/// A ride-code boarding charged 200 fen after the ride.
pub fn qr_record(channel: u16, account: u64, counter: u32, at_unix_s: i64) -> Record {
    Record {
        kind: RecordKind::QrRide,
        balance_fen: None,
        at_unix_s,
        qr: Some(QrTx {
            account: AccountId { channel, account },
            counter,
            generated_at: at_unix_s as u32 - 5,
            cert_ref: None,
        }),
        ..card_record(0)
    }
}

/// Append `records` to a journal in `dir`, committing in groups (no fsync: test speed).
pub fn write_journal(dir: &Path, records: impl IntoIterator<Item = Record>) -> Journal {
    let (mut j, _) = Journal::open_with(dir, Box::new(UnsyncedFiles)).unwrap();
    for mut r in records {
        if j.pending() == fare_validator::journal::GROUP_COMMIT_RECORDS_MAX {
            j.commit().unwrap();
        }
        j.append(&mut r).unwrap();
    }
    j.commit().unwrap();
    j
}

pub fn card_journal(dir: &Path, n: u64) {
    write_journal(dir, (1..=n).map(card_record));
}

/// A store with terminals 0..terminals provisioned.
pub fn store(db: &Path, terminals: usize) -> Store {
    let s = Store::open(db).unwrap();
    for n in 0..terminals {
        s.add_terminal_with_secret(&terminal_id(n), &secret(n as u8))
            .unwrap();
    }
    s
}

pub async fn station(store: Store) -> StationHandle {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    depot::start(l, store).unwrap()
}

/// What the proxy does to its first connection once `after_bytes` went to the station.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Close both sides at once.
    Cut,
    /// Stop forwarding, signal, and close when released.
    Stall,
}

/// A loopback proxy in front of the station whose target can change (a restarted station).
pub struct Proxy {
    pub addr: SocketAddr,
    pub target: Arc<Mutex<SocketAddr>>,
    /// Signalled when the first connection reached its byte limit.
    pub tripped: Arc<Notify>,
    /// Notify to close a stalled connection.
    pub release: Arc<Notify>,
    /// Bytes the validator sent through the proxy, per connection (for replay tests).
    pub recorded: Arc<Mutex<Vec<Vec<u8>>>>,
}

pub async fn proxy(target: SocketAddr, fault: Option<(usize, Fault)>) -> Proxy {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let p = Proxy {
        addr: l.local_addr().unwrap(),
        target: Arc::new(Mutex::new(target)),
        tripped: Arc::new(Notify::new()),
        release: Arc::new(Notify::new()),
        recorded: Arc::new(Mutex::new(Vec::new())),
    };
    let (target, tripped, release, recorded) = (
        p.target.clone(),
        p.tripped.clone(),
        p.release.clone(),
        p.recorded.clone(),
    );
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((client, _)) = l.accept().await {
            let to = *target.lock().unwrap();
            let Ok(server) = TcpStream::connect(to).await else {
                continue;
            };
            let fault = if first { fault } else { None };
            first = false;
            let index = {
                let mut r = recorded.lock().unwrap();
                r.push(Vec::new());
                r.len() - 1
            };
            let (tripped, release, recorded) = (tripped.clone(), release.clone(), recorded.clone());
            tokio::spawn(async move {
                pipe(client, server, fault, tripped, release, recorded, index).await;
            });
        }
    });
    p
}

async fn pipe(
    client: TcpStream,
    server: TcpStream,
    fault: Option<(usize, Fault)>,
    tripped: Arc<Notify>,
    release: Arc<Notify>,
    recorded: Arc<Mutex<Vec<Vec<u8>>>>,
    index: usize,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
    });
    let limit = fault.map_or(usize::MAX, |(n, _)| n);
    let mut sent = 0usize;
    let mut buf = vec![0u8; 8192];
    loop {
        let n = match cr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n_fwd = n.min(limit - sent);
        recorded.lock().unwrap()[index].extend_from_slice(&buf[..n_fwd]);
        if sw.write_all(&buf[..n_fwd]).await.is_err() {
            break;
        }
        sent += n_fwd;
        if sent == limit {
            tripped.notify_one();
            if let Some((_, Fault::Stall)) = fault {
                release.notified().await;
            }
            break;
        }
    }
    down.abort();
}
