//! The station's accept loop and sessions.
//!
//! A connection is first a *handshake* (hello, challenge, proof) and, once the terminal has
//! proved its secret, a *session* (batches, acks, downlink). The two have separate pools so
//! that peers who never authenticate cannot take the room of buses that do:
//!
//! - a handshake reads frames of at most [`HANDSHAKE_PAYLOAD_BYTES_MAX`] bytes (a header
//!   announcing more ends the connection before anything is allocated) and must finish within
//!   [`HANDSHAKE_S_MAX`];
//! - at most [`StationLimits::handshakes_per_addr_max`] handshakes run from one source address
//!   and [`StationLimits::handshakes_max`] in total; a new connection over either cap ends the
//!   *oldest* handshake it competes with (an idle socket is old by the time a bus connects;
//!   an honest handshake takes a round trip), so a flood of idle or slow sockets delays a bus
//!   by at most its retry, and holds at most `handshakes_max` small buffers;
//! - authenticated sessions, at most [`StationLimits::sessions_max`], have a frame timeout
//!   ([`FRAME_READ_TIMEOUT_S`]) and a deadline ([`SESSION_S_MAX`]); when they are all taken a
//!   new one is refused `Busy` and the validator retries after its back-off.
//!
//! A malformed frame, a failed authentication or a bad MAC ends that connection with a reason
//! logged at warn; the server goes on. [`StationHandle::stats`] counts what the limits did.
//! Shutdown stops accepting, then gives sessions [`SHUTDOWN_GRACE_S`] to finish before they
//! are dropped (nothing is lost: an unfinished batch is simply not acknowledged, and the
//! validator sends it again).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngCore;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinSet;

use super::integrity::{ChainKeys, Link, SessionChain};
use super::store::{Received, Store, StoreError};
use crate::journal::Record;
use crate::upload::auth::{self, Role, Session};
use crate::upload::conn::{write_frame, FrameReader, WireError};
use crate::upload::frame::{
    decode_32, decode_empty, encode_refused, encode_u64, Batch, FileChunk, FrameError, FrameType,
    HeldVersions, Hello, RefusedCode, FILE_CHUNK_BYTES_MAX, FRAME_CRC_BYTES, FRAME_HEADER_BYTES,
    HANDSHAKE_PAYLOAD_BYTES_MAX, NONCE_BYTES,
};

/// Authenticated sessions served at once.
pub const SESSIONS_MAX: usize = 1_024;
/// Handshakes (connected, not yet authenticated) at once, all sources together.
pub const HANDSHAKES_MAX: usize = 256;
/// Handshakes at once from one source address (a depot's buses each have their own).
pub const HANDSHAKES_PER_ADDR_MAX: usize = 32;
/// Longest handshake, from the accept to the proof checked.
pub const HANDSHAKE_S_MAX: u64 = 10;
/// Longest wait for the next frame from an authenticated validator.
pub const FRAME_READ_TIMEOUT_S: u64 = 30;
/// Longest session (a full day of records from one bus takes seconds).
pub const SESSION_S_MAX: u64 = 900;
/// Time sessions get to finish after shutdown is asked for.
pub const SHUTDOWN_GRACE_S: u64 = 10;
/// Read buffer a handshake holds, bytes: one handshake frame.
pub const HANDSHAKE_BUFFER_BYTES: usize =
    FRAME_HEADER_BYTES + HANDSHAKE_PAYLOAD_BYTES_MAX + FRAME_CRC_BYTES;

/// The station's connection limits (the constants above by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StationLimits {
    pub sessions_max: usize,
    pub handshakes_max: usize,
    pub handshakes_per_addr_max: usize,
    pub handshake_s_max: u64,
}

impl Default for StationLimits {
    fn default() -> Self {
        StationLimits {
            sessions_max: SESSIONS_MAX,
            handshakes_max: HANDSHAKES_MAX,
            handshakes_per_addr_max: HANDSHAKES_PER_ADDR_MAX,
            handshake_s_max: HANDSHAKE_S_MAX,
        }
    }
}

/// What the station's limits did since it started (a snapshot of its own counters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StationStats {
    pub accepted: u64,
    /// Most handshakes held at once (never above `handshakes_max`).
    pub handshakes_peak: u64,
    /// Largest read buffer a handshake ever held, bytes.
    pub handshake_buffer_bytes_peak: u64,
    /// Handshakes ended by a newer connection over a cap.
    pub handshakes_evicted: u64,
    /// Handshakes that did not finish within the handshake deadline.
    pub handshakes_timed_out: u64,
    /// Frames refused before authentication for announcing more than the handshake bound.
    pub handshake_frames_oversized: u64,
    /// Hellos whose proof failed (wrong secret or unknown terminal).
    pub auth_refused: u64,
    pub sessions_peak: u64,
    /// Authenticated sessions refused because every session slot was taken.
    pub sessions_refused_busy: u64,
    pub sessions_complete: u64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    handshakes_peak: AtomicU64,
    handshake_buffer_bytes_peak: AtomicU64,
    handshakes_evicted: AtomicU64,
    handshakes_timed_out: AtomicU64,
    handshake_frames_oversized: AtomicU64,
    auth_refused: AtomicU64,
    sessions_now: AtomicU64,
    sessions_peak: AtomicU64,
    sessions_refused_busy: AtomicU64,
    sessions_complete: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> StationStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StationStats {
            accepted: g(&self.accepted),
            handshakes_peak: g(&self.handshakes_peak),
            handshake_buffer_bytes_peak: g(&self.handshake_buffer_bytes_peak),
            handshakes_evicted: g(&self.handshakes_evicted),
            handshakes_timed_out: g(&self.handshakes_timed_out),
            handshake_frames_oversized: g(&self.handshake_frames_oversized),
            auth_refused: g(&self.auth_refused),
            sessions_peak: g(&self.sessions_peak),
            sessions_refused_busy: g(&self.sessions_refused_busy),
            sessions_complete: g(&self.sessions_complete),
        }
    }
}

fn bump(a: &AtomicU64) -> u64 {
    a.fetch_add(1, Ordering::Relaxed) + 1
}

/// The handshakes in progress, oldest first, and how many each source address holds.
#[derive(Default)]
struct Handshakes {
    order: VecDeque<Pending>,
    per_addr: HashMap<IpAddr, usize>,
    next_id: u64,
}

struct Pending {
    id: u64,
    addr: IpAddr,
    evict: Arc<Notify>,
}

impl Handshakes {
    /// Register a new handshake from `addr`, ending the oldest competitor over a cap.
    /// Returns its id, its eviction signal and how many handshakes it evicted.
    fn admit(&mut self, addr: IpAddr, limits: &StationLimits) -> (u64, Arc<Notify>, u64) {
        let mut evicted = 0;
        if self.per_addr.get(&addr).copied().unwrap_or(0) >= limits.handshakes_per_addr_max {
            if let Some(i) = self.order.iter().position(|p| p.addr == addr) {
                self.evict_at(i);
                evicted += 1;
            }
        }
        while self.order.len() >= limits.handshakes_max.max(1) {
            self.evict_at(0);
            evicted += 1;
        }
        self.next_id += 1;
        let evict = Arc::new(Notify::new());
        self.order.push_back(Pending {
            id: self.next_id,
            addr,
            evict: evict.clone(),
        });
        *self.per_addr.entry(addr).or_insert(0) += 1;
        (self.next_id, evict, evicted)
    }

    fn evict_at(&mut self, i: usize) {
        if let Some(p) = self.remove_at(i) {
            // A stored permit: the task sees it even if it is not waiting yet.
            p.evict.notify_one();
        }
    }

    fn remove_at(&mut self, i: usize) -> Option<Pending> {
        let p = self.order.remove(i)?;
        if let Some(n) = self.per_addr.get_mut(&p.addr) {
            *n -= 1;
            if *n == 0 {
                self.per_addr.remove(&p.addr);
            }
        }
        Some(p)
    }

    /// The handshake `id` ended (a no-op when it was evicted).
    fn leave(&mut self, id: u64) {
        if let Some(i) = self.order.iter().position(|p| p.id == id) {
            self.remove_at(i);
        }
    }
}

type SharedStore = Arc<Mutex<Store>>;

/// What every connection task shares.
struct Shared {
    store: SharedStore,
    limits: StationLimits,
    sessions: Arc<Semaphore>,
    handshakes: Mutex<Handshakes>,
    counters: Arc<Counters>,
}

#[derive(Debug, thiserror::Error)]
enum SessionFailure {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("authentication refused for terminal {0:?}")]
    NotAuthenticated(String),
    #[error("bad batch: {0}")]
    BadBatch(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("store task failed: {0}")]
    Join(String),
    #[error("session longer than {SESSION_S_MAX} s")]
    TooLong,
    #[error("handshake not finished within {0} s")]
    HandshakeTooLong(u64),
    #[error("handshake ended by a newer connection over the handshake cap")]
    Evicted,
}

impl From<crate::upload::auth::SessionError> for SessionFailure {
    fn from(e: crate::upload::auth::SessionError) -> Self {
        SessionFailure::Wire(e.into())
    }
}

impl From<FrameError> for SessionFailure {
    fn from(e: FrameError) -> Self {
        SessionFailure::Wire(e.into())
    }
}

/// A running station.
pub struct StationHandle {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    counters: Arc<Counters>,
}

impl StationHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the connection limits did so far.
    pub fn stats(&self) -> StationStats {
        self.counters.snapshot()
    }

    /// Stop accepting, let sessions finish (bounded by the grace period), and return.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Stop at once, as a crash would: sessions are dropped mid-batch.
    pub async fn abort(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Run the station on `listener` in a new task of the current runtime.
pub fn start(listener: TcpListener, store: Store) -> std::io::Result<StationHandle> {
    start_with(listener, store, StationLimits::default())
}

/// As [`start`], with other connection limits.
pub fn start_with(
    listener: TcpListener,
    store: Store,
    limits: StationLimits,
) -> std::io::Result<StationHandle> {
    let addr = listener.local_addr()?;
    let (stop, mut rx) = watch::channel(false);
    let counters = Arc::new(Counters::default());
    let task_counters = counters.clone();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        serve_counted(listener, store, limits, task_counters, shutdown).await;
    });
    Ok(StationHandle {
        addr,
        stop,
        task,
        counters,
    })
}

/// Serve sessions until `shutdown` completes, then drain them.
pub async fn serve(listener: TcpListener, store: Store, shutdown: impl Future<Output = ()>) {
    let counters = Arc::new(Counters::default());
    serve_counted(
        listener,
        store,
        StationLimits::default(),
        counters,
        shutdown,
    )
    .await;
}

async fn serve_counted(
    listener: TcpListener,
    store: Store,
    limits: StationLimits,
    counters: Arc<Counters>,
    shutdown: impl Future<Output = ()>,
) {
    let shared = Arc::new(Shared {
        store: Arc::new(Mutex::new(store)),
        limits,
        sessions: Arc::new(Semaphore::new(limits.sessions_max)),
        handshakes: Mutex::new(Handshakes::default()),
        counters,
    });
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    if let Ok(a) = listener.local_addr() {
        tracing::info!(addr = %a, "depot: listening");
    }
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    bump(&shared.counters.accepted);
                    let admitted = admit(&shared, peer);
                    tasks.spawn(run_connection(stream, peer, shared.clone(), admitted));
                }
                Err(e) => {
                    // Out of descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "depot: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    let grace = tokio::time::sleep(Duration::from_secs(SHUTDOWN_GRACE_S));
    tokio::pin!(grace);
    loop {
        tokio::select! {
            () = &mut grace => { tasks.abort_all(); break }
            next = tasks.join_next() => if next.is_none() { break },
        }
    }
    tracing::info!("depot: stopped");
}

/// Take a handshake place for `peer`, evicting over the caps; logged at warn when the
/// eviction count reaches a power of two (a flood is reported without flooding the log).
fn admit(shared: &Shared, peer: SocketAddr) -> (u64, Arc<Notify>) {
    let mut hs = shared.handshakes.lock().unwrap_or_else(|p| p.into_inner());
    let (id, evict, evicted) = hs.admit(peer.ip(), &shared.limits);
    let held = hs.order.len() as u64;
    drop(hs);
    shared
        .counters
        .handshakes_peak
        .fetch_max(held, Ordering::Relaxed);
    for _ in 0..evicted {
        let n = bump(&shared.counters.handshakes_evicted);
        if n.is_power_of_two() {
            tracing::warn!(%peer, evicted_total = n, held, "depot: handshake places full, oldest handshake ended");
        }
    }
    (id, evict)
}

/// One connection: the handshake under its own limits, then the session under a session slot.
async fn run_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    (id, evict): (u64, Arc<Notify>),
) {
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let mut rd = FrameReader::with_capacity(rd, HANDSHAKE_BUFFER_BYTES);
    let limit_s = shared.limits.handshake_s_max;
    let handshake = tokio::select! {
        () = evict.notified() => Err(SessionFailure::Evicted),
        r = tokio::time::timeout(Duration::from_secs(limit_s), handshake(&mut rd, &mut wr, &shared.store)) => {
            r.unwrap_or(Err(SessionFailure::HandshakeTooLong(limit_s)))
        }
    };
    shared
        .handshakes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .leave(id);
    shared
        .counters
        .handshake_buffer_bytes_peak
        .fetch_max(rd.capacity() as u64, Ordering::Relaxed);
    let opened = match handshake {
        Ok(o) => o,
        Err(e) => return handshake_failed(&shared, peer, e),
    };
    let Ok(permit) = shared.sessions.clone().try_acquire_owned() else {
        bump(&shared.counters.sessions_refused_busy);
        tracing::warn!(%peer, terminal = %opened.terminal, sessions_max = shared.limits.sessions_max,
            "depot: every session slot taken, session refused");
        let body = encode_refused(RefusedCode::Busy, "station busy");
        let _ = write_frame(&mut wr, FrameType::Refused, &body).await;
        return;
    };
    let now = bump(&shared.counters.sessions_now);
    shared
        .counters
        .sessions_peak
        .fetch_max(now, Ordering::Relaxed);
    let deadline = Duration::from_secs(SESSION_S_MAX);
    let terminal = opened.terminal.clone();
    let result =
        match tokio::time::timeout(deadline, session(rd, wr, peer, &shared.store, opened)).await {
            Ok(r) => r,
            Err(_) => Err(SessionFailure::TooLong),
        };
    shared.counters.sessions_now.fetch_sub(1, Ordering::Relaxed);
    drop(permit);
    match result {
        Ok(()) => {
            bump(&shared.counters.sessions_complete);
            tracing::info!(%peer, %terminal, "depot: session complete");
        }
        Err(SessionFailure::Wire(WireError::Closed)) => {
            tracing::info!(%peer, %terminal, "depot: validator closed the connection")
        }
        Err(e) => tracing::warn!(%peer, %terminal, reason = %e, "depot: session ended"),
    }
}

/// Count and log why a handshake ended: security events at warn.
fn handshake_failed(shared: &Shared, peer: SocketAddr, e: SessionFailure) {
    let c = &shared.counters;
    match &e {
        SessionFailure::Evicted => return, // counted and logged when evicted
        SessionFailure::Wire(WireError::Closed) => {
            tracing::info!(%peer, "depot: peer closed the connection before authenticating");
            return;
        }
        SessionFailure::Wire(WireError::Frame(FrameError::OverLimit { .. })) => {
            bump(&c.handshake_frames_oversized);
        }
        SessionFailure::HandshakeTooLong(_) | SessionFailure::Wire(WireError::Timeout(_)) => {
            bump(&c.handshakes_timed_out);
        }
        SessionFailure::NotAuthenticated(terminal) => {
            bump(&c.auth_refused);
            tracing::warn!(%peer, %terminal, "depot: authentication refused (wrong secret or unknown terminal)");
            return;
        }
        _ => {}
    }
    tracing::warn!(%peer, reason = %e, "depot: handshake failed");
}

/// Run a blocking store operation off the async threads.
async fn with_store<T: Send + 'static>(
    store: &SharedStore,
    f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, SessionFailure> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        // A panic inside a transaction rolls it back on drop: the store is consistent.
        let mut guard = store.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    })
    .await
    .map_err(|e| SessionFailure::Join(e.to_string()))?
    .map_err(SessionFailure::from)
}

const READ_TIMEOUT: Duration = Duration::from_secs(FRAME_READ_TIMEOUT_S);

fn expect(ty: FrameType, want: FrameType) -> Result<(), SessionFailure> {
    if ty == want {
        Ok(())
    } else {
        Err(FrameError::Unexpected(ty).into())
    }
}

type Reader = FrameReader<tokio::net::tcp::OwnedReadHalf>;
type Writer = tokio::net::tcp::OwnedWriteHalf;

/// A terminal that proved its secret.
struct Opened {
    terminal: String,
    key: [u8; 32],
    held: HeldVersions,
    /// The journal's identity: epoch and the first seq of the epoch.
    epoch: u64,
    epoch_first_seq: u64,
    /// The chain keys of this terminal's journal (from the station key).
    chain: ChainKeys,
}

/// Hello, challenge, proof: every frame within the handshake bound.
async fn handshake(
    rd: &mut Reader,
    wr: &mut Writer,
    store: &SharedStore,
) -> Result<Opened, SessionFailure> {
    let (ty, payload) = match rd
        .read_limited(READ_TIMEOUT, HANDSHAKE_PAYLOAD_BYTES_MAX)
        .await
    {
        Err(WireError::Frame(FrameError::OldVersion(v))) => {
            // Refused in the old framing, so the old validator can say why.
            let text = format!(
                "protocol version {v} is no longer served: \
                 update the validator to version {}",
                crate::upload::frame::PROTOCOL_VERSION
            );
            let body = encode_refused(RefusedCode::Protocol, &text);
            let frame = crate::upload::frame::encode_frame_version(v, FrameType::Refused, &body);
            let _ = tokio::io::AsyncWriteExt::write_all(wr, &frame).await;
            return Err(FrameError::OldVersion(v).into());
        }
        r => r?,
    };
    expect(ty, FrameType::Hello)?;
    let hello_bytes = payload.to_vec();
    let hello = Hello::decode(&hello_bytes)?;
    let mut server_nonce = [0u8; NONCE_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut server_nonce);
    write_frame(wr, FrameType::Challenge, &server_nonce).await?;
    let (ty, payload) = rd
        .read_limited(READ_TIMEOUT, HANDSHAKE_PAYLOAD_BYTES_MAX)
        .await?;
    expect(ty, FrameType::Auth)?;
    let proof = decode_32(FrameType::Auth, payload)?;
    let id = hello.terminal_id.clone();
    let secret = with_store(store, move |s| s.terminal_key(&id)).await?;
    let ok = secret.is_some_and(|secret| {
        auth::verify_client_proof(&secret, &server_nonce, &hello_bytes, &proof)
    });
    let (Some(secret), true) = (secret, ok) else {
        // The same answer for an unknown terminal and a wrong secret.
        let body = encode_refused(RefusedCode::NotAuthenticated, "not authenticated");
        let _ = write_frame(wr, FrameType::Refused, &body).await;
        return Err(SessionFailure::NotAuthenticated(hello.terminal_id));
    };
    Ok(Opened {
        terminal: hello.terminal_id,
        key: auth::session_key(&secret, &server_nonce, &hello_bytes),
        held: hello.held,
        epoch: hello.epoch,
        epoch_first_seq: hello.epoch_first_seq,
        chain: ChainKeys::new(&secret, hello.epoch, hello.epoch_first_seq),
    })
}

async fn session(
    mut rd: Reader,
    mut wr: Writer,
    peer: SocketAddr,
    store: &SharedStore,
    opened: Opened,
) -> Result<(), SessionFailure> {
    let Opened {
        terminal,
        key,
        held,
        epoch,
        epoch_first_seq,
        chain,
    } = opened;
    // Each direction has its own counter: the reader opens, the writer seals.
    let mut opener = Session::new(key, Role::Station);
    let mut sealer = Session::new(key, Role::Station);
    let id = terminal.clone();
    let (acked, _new) =
        with_store(store, move |s| s.open_journal(&id, epoch, epoch_first_seq)).await?;
    tracing::info!(%peer, %terminal, epoch = %format!("{epoch:016x}"), acked_seq = acked, ?held, "depot: session open");
    let welcome = sealer.seal(FrameType::Welcome, &encode_u64(acked));
    write_frame(&mut wr, FrameType::Welcome, &welcome).await?;
    // Reading and checking batch n+1 overlaps storing batch n (its fsync).
    let (tx, rx) = mpsc::channel(BATCHES_QUEUED_MAX);
    let writer = tokio::spawn(store_and_answer(
        rx,
        wr,
        sealer,
        store.clone(),
        (terminal.clone(), chain.clone()),
        held,
    ));
    let mut chain = SessionChain::new(chain);
    let read = read_batches(&mut rd, &mut opener, &tx, &mut chain).await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| SessionFailure::Join(e.to_string()))?;
    read?;
    written?;
    Ok(())
}

/// Highest seq taken: far beyond any bus's life, and it keeps seq arithmetic and SQLite's
/// signed integers from overflowing.
pub const SEQ_MAX: u64 = 1 << 62;

/// Widest seq range one batch may cover, declared losses included (two journal segments).
pub const BATCH_SEQ_SPAN_MAX: u64 = 2 * crate::journal::SEGMENT_RECORDS_MAX;

/// Batches queued between a session's reader and its store writer.
pub const BATCHES_QUEUED_MAX: usize = 2;

enum Job {
    Batch {
        from_seq: u64,
        records: Vec<Received>,
        /// What the session found of each record's chain MAC.
        links: Vec<Link>,
    },
    /// The ride codes behind records (seq, code bytes), kept as proof.
    Proofs(Vec<crate::journal::proofs::Proof>),
    /// The acquirer's data of QuickPass records (seq, data bytes).
    Acquirer(Vec<crate::journal::acquirer::AcquirerEntry>),
    /// Seqs the validator no longer holds.
    Gone {
        from_seq: u64,
        to_seq: u64,
    },
    Done,
}

async fn read_batches(
    rd: &mut FrameReader<tokio::net::tcp::OwnedReadHalf>,
    sess: &mut Session,
    tx: &mpsc::Sender<Job>,
    chain: &mut SessionChain,
) -> Result<(), SessionFailure> {
    loop {
        let (ty, payload) = tokio::select! {
            r = rd.read(READ_TIMEOUT) => r?,
            // The writer stopped (its error is the session's): stop reading.
            () = tx.closed() => return Ok(()),
        };
        let body = sess.open(ty, payload)?;
        let job = match ty {
            FrameType::Batch => check_batch(body, chain)?,
            FrameType::Gone => {
                let (from_seq, to_seq) = crate::upload::frame::decode_gone(body)?;
                Job::Gone { from_seq, to_seq }
            }
            FrameType::Proofs => Job::Proofs(crate::upload::frame::decode_proofs(body)?),
            FrameType::AcquirerData => Job::Acquirer(crate::upload::frame::decode_acquirer(body)?),
            FrameType::Done => {
                decode_empty(ty, body)?;
                Job::Done
            }
            other => return Err(FrameError::Unexpected(other).into()),
        };
        let done = matches!(job, Job::Done);
        if tx.send(job).await.is_err() || done {
            return Ok(());
        }
    }
}

/// Store each batch in one transaction and acknowledge it; after Done, send the downlink.
async fn store_and_answer(
    mut rx: mpsc::Receiver<Job>,
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut sess: Session,
    store: SharedStore,
    (terminal, chain): (String, ChainKeys),
    held: HeldVersions,
) -> Result<(), SessionFailure> {
    let epoch = chain.epoch();
    let chain = Arc::new(chain);
    while let Some(job) = rx.recv().await {
        match job {
            Job::Batch {
                from_seq,
                records,
                links,
            } => {
                let ack = store_batch(&store, &terminal, &chain, from_seq, records, links).await?;
                let sealed = sess.seal(FrameType::Ack, &ack);
                write_frame(&mut wr, FrameType::Ack, &sealed).await?;
            }
            Job::Proofs(proofs) => {
                let id = terminal.clone();
                with_store(&store, move |s| s.store_proofs(&id, epoch, &proofs)).await?;
            }
            Job::Acquirer(entries) => {
                let id = terminal.clone();
                with_store(&store, move |s| s.store_acquirer_data(&id, epoch, &entries)).await?;
            }
            Job::Gone { from_seq, to_seq } => {
                let id = terminal.clone();
                let ack = with_store(&store, move |s| {
                    s.declare_gone(&id, epoch, from_seq, to_seq)
                })
                .await?;
                tracing::error!(%terminal, epoch = %format!("{epoch:016x}"), from = from_seq, to = to_seq,
                    "depot: records acknowledged earlier are missing here (restored from a backup?) and gone from the validator: declared lost");
                let sealed = sess.seal(FrameType::Ack, &ack.encode_body());
                write_frame(&mut wr, FrameType::Ack, &sealed).await?;
            }
            Job::Done => {
                let id = terminal.clone();
                let files = with_store(&store, move |s| super::downlink_for(s, &id, &held)).await?;
                for file in &files {
                    send_file(&mut wr, &mut sess, file).await?;
                }
                let bye = sess.seal(FrameType::Bye, &[]);
                write_frame(&mut wr, FrameType::Bye, &bye).await?;
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Check every record of a batch (CRC, order) before anything is stored.
fn check_batch(body: &[u8], chain: &mut SessionChain) -> Result<Job, SessionFailure> {
    let epoch = chain.keys.epoch();
    let batch = Batch::decode(body)?;
    let mut records = Vec::with_capacity(batch.records.len() / crate::journal::RECORD_BYTES);
    let mut links = Vec::with_capacity(records.capacity());
    let mut next_seq = batch.from_seq;
    for raw in batch.raw_records() {
        let record = Record::decode(raw)
            .map_err(|e| SessionFailure::BadBatch(format!("record after seq {next_seq}: {e}")))?;
        if Record::epoch_of(raw) != epoch {
            return Err(SessionFailure::BadBatch(format!(
                "record seq {} of epoch {:016x} in a session of epoch {epoch:016x}",
                record.seq,
                Record::epoch_of(raw)
            )));
        }
        if record.seq > SEQ_MAX {
            return Err(SessionFailure::BadBatch(format!(
                "seq {} above {SEQ_MAX}",
                record.seq
            )));
        }
        if record.seq < next_seq {
            return Err(SessionFailure::BadBatch(format!(
                "seq {} out of order (expected at least {next_seq})",
                record.seq
            )));
        }
        next_seq = record.seq + 1;
        links.push(chain.next(record.seq, raw));
        records.push(Received { record, raw: *raw });
    }
    // Seqs skipped inside a batch are declared lost; more than this is not a corrupt slot
    // or two but a broken validator, and is refused rather than acknowledged.
    if next_seq - batch.from_seq > BATCH_SEQ_SPAN_MAX {
        return Err(SessionFailure::BadBatch(format!(
            "batch spans seqs {}..{next_seq}, more than {BATCH_SEQ_SPAN_MAX}",
            batch.from_seq
        )));
    }
    Ok(Job::Batch {
        from_seq: batch.from_seq,
        records,
        links,
    })
}

/// Store one checked batch and return the Ack body.
async fn store_batch(
    store: &SharedStore,
    terminal: &str,
    chain: &Arc<ChainKeys>,
    from_seq: u64,
    received: Vec<Received>,
    links: Vec<Link>,
) -> Result<Vec<u8>, SessionFailure> {
    let id = terminal.to_string();
    let chain = chain.clone();
    let stored = with_store(store, move |s| {
        s.store_checked_batch_at(
            &id,
            chain.epoch(),
            from_seq,
            &received,
            super::store::now_unix_s(),
            Some((&chain, &links)),
        )
    })
    .await?;
    for (a, b) in &stored.declared_lost {
        tracing::warn!(%terminal, from = a, to = b, "depot: validator declares records lost");
    }
    for f in &stored.findings {
        super::integrity::log_finding(f);
    }
    if stored.ack.max_seq > stored.ack.contiguous_seq {
        tracing::warn!(
            %terminal,
            contiguous_seq = stored.ack.contiguous_seq,
            max_seq = stored.ack.max_seq,
            "depot: gap in the terminal's records"
        );
    }
    Ok(stored.ack.encode_body())
}

async fn send_file(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    sess: &mut Session,
    file: &[u8],
) -> Result<(), SessionFailure> {
    // The station built the file: its header parses.
    let (kind, version) =
        crate::upload::downlink::describe(file).map_or((0, 0), |(k, v)| (k as u16 as u8, v));
    let mut offset = 0usize;
    loop {
        let end = (offset + FILE_CHUNK_BYTES_MAX).min(file.len());
        let chunk = FileChunk {
            kind,
            version,
            total_len: file.len() as u32,
            offset: offset as u32,
            bytes: &file[offset..end],
        };
        let sealed = sess.seal(FrameType::FileChunk, &chunk.encode_body());
        write_frame(wr, FrameType::FileChunk, &sealed).await?;
        offset = end;
        if offset >= file.len() {
            return Ok(());
        }
    }
}
