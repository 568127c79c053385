//! Security events reach the log at the command line's default level (no `RUST_LOG`): failed
//! logins, protocol errors, gaps, handshake places and session slots exhausted, findings of
//! the chain check. Alone in its
//! test binary: tracing's per-callsite interest cache is shared by the threads of a process,
//! and a test thread logging with no subscriber could hide events from this one's.

mod depot_support;

use std::time::Duration;

use depot_support::*;
use fare_validator::depot::server::{StationLimits, StationStats};
use fare_validator::depot::{StationHandle, Store};
use fare_validator::upload;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest wait for the station's counters.
const CATCH_UP_S_MAX: u64 = 60;

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

/// Every event at or above the command line's default level, as (level, message and fields).
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Captured {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() > fare_validator::cli::DEFAULT_LOG_LEVEL {
            return; // not logged without RUST_LOG
        }
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={v:?}", f.name()));
            }
        }
        let mut t = Text(event.metadata().level().to_string());
        event.record(&mut t);
        self.0.lock().unwrap().push(t.0);
    }
}

impl Captured {
    fn has(&self, what: &str) -> bool {
        self.0.lock().unwrap().iter().any(|l| l.contains(what))
    }
}

#[tokio::test]
async fn security_events_are_logged_at_the_default_level() {
    use tracing_subscriber::layer::SubscriberExt;
    let captured = Captured::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));
    let tmp = tempfile::tempdir().unwrap();
    let st = station(store(&tmp.path().join("depot.db"), 1)).await;
    // A failed login.
    let dir = tmp.path().join("bus");
    card_journal(&dir, 100);
    assert!(upload::upload(&dir, st.addr(), &terminal_id(0), &secret(9))
        .await
        .is_err());
    // A protocol error before authentication.
    let mut junk = TcpStream::connect(st.addr()).await.unwrap();
    junk.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let _ = junk.read(&mut [0u8; 8]).await;
    // A record lost on the bus (corrupt journal slot): a gap the validator declares.
    let seg = dir.join(format!("seg-{:020}.jnl", 1));
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[49 * 96 + 30] ^= 0xFF;
    std::fs::write(&seg, bytes).unwrap();
    upload::upload(&dir, st.addr(), &terminal_id(0), &secret(0))
        .await
        .unwrap();
    st.shutdown().await;
    // Handshake places and session slots exhausted.
    let limits = StationLimits {
        sessions_max: 0,
        handshakes_per_addr_max: 1,
        ..StationLimits::default()
    };
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let full = fare_validator::depot::server::start_with(
        l,
        Store::open(&tmp.path().join("depot.db")).unwrap(),
        limits,
    )
    .unwrap();
    let idle = TcpStream::connect(full.addr()).await.unwrap();
    until(&full, |s| s.accepted == 1).await;
    let refused = upload::upload(&dir, full.addr(), &terminal_id(0), &secret(0)).await;
    assert!(refused.is_err(), "no session slot");
    let s = full.stats();
    assert!(
        s.handshakes_evicted >= 1 && s.sessions_refused_busy >= 1,
        "{s:?}"
    );
    drop(idle);
    full.shutdown().await;
    for what in [
        "authentication refused",
        "handshake failed",
        "declares records lost",
        "handshake places full",
        "every session slot taken",
        // Findings of the chain check: records chained with the public test key, and the
        // record after the corrupt slot, which the depot cannot prove.
        "security finding",
        "test_key",
        "chain_unverified",
    ] {
        assert!(
            captured.has(what),
            "{what}: {:?}",
            captured.0.lock().unwrap()
        );
    }
}
