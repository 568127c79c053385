//! The station's accept loop and sessions.
//!
//! One task per connection, at most [`CONNECTIONS_MAX`] at once (a further connection is
//! closed at once and logged; the validator retries after its back-off). Every read has a
//! timeout ([`FRAME_READ_TIMEOUT_S`]) and a whole session a deadline ([`SESSION_S_MAX`]). A
//! malformed frame, a failed authentication or a bad MAC ends that connection with a logged
//! reason; the server goes on. Shutdown stops accepting, then gives sessions
//! [`SHUTDOWN_GRACE_S`] to finish before they are dropped (nothing is lost: an unfinished
//! batch is simply not acknowledged, and the validator sends it again).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngCore;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use super::store::{Received, Store, StoreError};
use crate::journal::Record;
use crate::upload::auth::{self, Role, Session};
use crate::upload::conn::{write_frame, FrameReader, WireError};
use crate::upload::frame::{
    decode_32, decode_empty, encode_refused, encode_u64, Batch, FileChunk, FrameError, FrameType,
    HeldVersions, Hello, RefusedCode, FILE_CHUNK_BYTES_MAX, NONCE_BYTES,
};

/// Sessions served at once.
pub const CONNECTIONS_MAX: usize = 1_024;
/// Longest wait for the next frame from a validator.
pub const FRAME_READ_TIMEOUT_S: u64 = 30;
/// Longest session (a full day of records from one bus takes seconds).
pub const SESSION_S_MAX: u64 = 900;
/// Time sessions get to finish after shutdown is asked for.
pub const SHUTDOWN_GRACE_S: u64 = 10;

type SharedStore = Arc<Mutex<Store>>;

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
}

impl StationHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
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
    let addr = listener.local_addr()?;
    let (stop, mut rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        serve(listener, store, shutdown).await;
    });
    Ok(StationHandle { addr, stop, task })
}

/// Serve sessions until `shutdown` completes, then drain them.
pub async fn serve(listener: TcpListener, store: Store, shutdown: impl Future<Output = ()>) {
    let store: SharedStore = Arc::new(Mutex::new(store));
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut sessions = JoinSet::new();
    tokio::pin!(shutdown);
    if let Ok(a) = listener.local_addr() {
        tracing::info!(addr = %a, "depot: listening");
    }
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        // Full: close at once; the validator retries after its back-off.
                        tracing::warn!(%peer, "depot: {CONNECTIONS_MAX} sessions running, connection refused");
                        continue;
                    };
                    let store = store.clone();
                    sessions.spawn(async move {
                        run_session(stream, peer, store).await;
                        drop(permit);
                    });
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
            () = &mut grace => { sessions.abort_all(); break }
            next = sessions.join_next() => if next.is_none() { break },
        }
    }
    tracing::info!("depot: stopped");
}

async fn run_session(stream: TcpStream, peer: SocketAddr, store: SharedStore) {
    let _ = stream.set_nodelay(true);
    let deadline = Duration::from_secs(SESSION_S_MAX);
    let result = match tokio::time::timeout(deadline, session(stream, peer, &store)).await {
        Ok(r) => r,
        Err(_) => Err(SessionFailure::TooLong),
    };
    match result {
        Ok(terminal) => tracing::info!(%peer, %terminal, "depot: session complete"),
        Err(SessionFailure::Wire(WireError::Closed)) => {
            tracing::info!(%peer, "depot: validator closed the connection")
        }
        Err(e) => tracing::warn!(%peer, reason = %e, "depot: connection ended"),
    }
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

async fn session(
    stream: TcpStream,
    peer: SocketAddr,
    store: &SharedStore,
) -> Result<String, SessionFailure> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = FrameReader::new(rd);
    let (ty, payload) = rd.read(READ_TIMEOUT).await?;
    expect(ty, FrameType::Hello)?;
    let hello_bytes = payload.to_vec();
    let hello = Hello::decode(&hello_bytes)?;
    let mut server_nonce = [0u8; NONCE_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut server_nonce);
    write_frame(&mut wr, FrameType::Challenge, &server_nonce).await?;
    let (ty, payload) = rd.read(READ_TIMEOUT).await?;
    expect(ty, FrameType::Auth)?;
    let proof = decode_32(FrameType::Auth, payload)?;
    let id = hello.terminal_id.clone();
    let secret = with_store(store, move |s| s.terminal_secret(&id)).await?;
    let ok = secret.is_some_and(|secret| {
        auth::verify_client_proof(&secret, &server_nonce, &hello_bytes, &proof)
    });
    let (Some(secret), true) = (secret, ok) else {
        // The same answer for an unknown terminal and a wrong secret.
        let body = encode_refused(RefusedCode::NotAuthenticated, "not authenticated");
        let _ = write_frame(&mut wr, FrameType::Refused, &body).await;
        return Err(SessionFailure::NotAuthenticated(hello.terminal_id));
    };
    let key = auth::session_key(&secret, &server_nonce, &hello_bytes);
    // Each direction has its own counter: the reader opens, the writer seals.
    let mut opener = Session::new(key, Role::Station);
    let mut sealer = Session::new(key, Role::Station);
    let terminal = hello.terminal_id.clone();
    let id = terminal.clone();
    let acked = with_store(store, move |s| s.contiguous_seq(&id)).await?;
    tracing::info!(%peer, %terminal, acked_seq = acked, held = ?hello.held, "depot: session open");
    let welcome = sealer.seal(FrameType::Welcome, &encode_u64(acked));
    write_frame(&mut wr, FrameType::Welcome, &welcome).await?;
    // Reading and checking batch n+1 overlaps storing batch n (its fsync).
    let (tx, rx) = mpsc::channel(BATCHES_QUEUED_MAX);
    let writer = tokio::spawn(store_and_answer(
        rx,
        wr,
        sealer,
        store.clone(),
        terminal.clone(),
        hello.held,
    ));
    let read = read_batches(&mut rd, &mut opener, &tx).await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| SessionFailure::Join(e.to_string()))?;
    read?;
    written?;
    Ok(terminal)
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
    },
    Done,
}

async fn read_batches(
    rd: &mut FrameReader<tokio::net::tcp::OwnedReadHalf>,
    sess: &mut Session,
    tx: &mpsc::Sender<Job>,
) -> Result<(), SessionFailure> {
    loop {
        let (ty, payload) = tokio::select! {
            r = rd.read(READ_TIMEOUT) => r?,
            // The writer stopped (its error is the session's): stop reading.
            () = tx.closed() => return Ok(()),
        };
        let body = sess.open(ty, payload)?;
        let job = match ty {
            FrameType::Batch => check_batch(body)?,
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
    terminal: String,
    held: HeldVersions,
) -> Result<(), SessionFailure> {
    while let Some(job) = rx.recv().await {
        match job {
            Job::Batch { from_seq, records } => {
                let ack = store_batch(&store, &terminal, from_seq, records).await?;
                let sealed = sess.seal(FrameType::Ack, &ack);
                write_frame(&mut wr, FrameType::Ack, &sealed).await?;
            }
            Job::Done => {
                let files = with_store(&store, move |s| super::downlink_for(s, &held)).await?;
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
fn check_batch(body: &[u8]) -> Result<Job, SessionFailure> {
    let batch = Batch::decode(body)?;
    let mut records = Vec::with_capacity(batch.records.len() / crate::journal::RECORD_BYTES);
    let mut next_seq = batch.from_seq;
    for raw in batch.raw_records() {
        let record = Record::decode(raw)
            .map_err(|e| SessionFailure::BadBatch(format!("record after seq {next_seq}: {e}")))?;
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
    })
}

/// Store one checked batch and return the Ack body.
async fn store_batch(
    store: &SharedStore,
    terminal: &str,
    from_seq: u64,
    received: Vec<Received>,
) -> Result<Vec<u8>, SessionFailure> {
    let id = terminal.to_string();
    let stored = with_store(store, move |s| s.store_batch(&id, from_seq, &received)).await?;
    for (a, b) in &stored.declared_lost {
        tracing::warn!(%terminal, from = a, to = b, "depot: validator declares records lost");
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
