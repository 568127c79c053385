//! The validator's side of a depot session: send every record the depot has not
//! acknowledged, move the journal cursor only on an authenticated ack, then take the
//! downlink files.
//!
//! Upload is safe to cut at any point: the journal keeps every record until the station
//! says it has it, the station stores by (terminal, seq) so a record sent twice is stored
//! once, and the next session starts from the station's own count. [`upload`] retries a
//! broken session by itself ([`SESSION_ATTEMPTS_MAX`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::RngCore;
use tokio::net::TcpStream;

use super::auth::{self, Role, Secret, Session};
use super::conn::{write_frame, FrameReader, WireError};
use super::downlink::{DownlinkDir, DownlinkError, DOWNLINK_FILE_BYTES_MAX};
use super::frame::{
    decode_32, decode_empty, decode_refused, decode_u64, encode_gone, encode_proofs, Ack, Batch,
    FileChunk, FrameError, FrameType, HeldVersions, Hello, BATCH_RECORDS_MAX, NONCE_BYTES,
    PROOFS_PER_FRAME_MAX,
};
use super::source::RecordSource;
use crate::journal::{Held, Journal, JournalError};

/// Longest wait for the TCP connection to the station.
pub const CONNECT_TIMEOUT_S: u64 = 10;
/// Longest wait for the station's next frame (an ack waits for a disk sync).
pub const REPLY_TIMEOUT_S: u64 = 60;
/// Batches sent ahead of their acks (keeps the station's disk busy while one is in flight).
pub const BATCHES_IN_FLIGHT_MAX: usize = 4;
/// Records read from the journal at once (1.5 MiB), cut into batches.
pub const READ_AHEAD_RECORDS_MAX: usize = 16_384;
/// Sessions tried before giving up on a broken connection.
pub const SESSION_ATTEMPTS_MAX: u32 = 5;
/// Pause before the first retry, doubled each time.
pub const RETRY_BACKOFF_MS: u64 = 200;
/// Downlink files accepted in one session.
pub const DOWNLINK_FILES_MAX: usize = 8;

const REPLY_TIMEOUT: Duration = Duration::from_secs(REPLY_TIMEOUT_S);

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("cannot connect to the depot: {0}")]
    Connect(String),
    #[error("the depot refused the session ({code}): {text}")]
    Refused { code: u8, text: String },
    #[error("the depot acknowledged seq {acked} after a batch ending at {last}: it cannot store this terminal's records")]
    NotAdvancing { acked: u64, last: u64 },
    #[error("unexpected {0:?} from the depot")]
    Unexpected(FrameType),
    #[error("downlink file out of order or too large")]
    DownlinkStream,
}

impl From<FrameError> for UploadError {
    fn from(e: FrameError) -> Self {
        UploadError::Wire(e.into())
    }
}

impl UploadError {
    /// Whether a new session may succeed (a broken or timed-out connection).
    fn is_transient(&self) -> bool {
        matches!(
            self,
            UploadError::Wire(WireError::Io(_) | WireError::Timeout(_) | WireError::Closed)
                | UploadError::Connect(_)
        )
    }
}

/// What a session did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct UploadReport {
    /// Records sent and acknowledged in this run (sent twice after a retry: counted once).
    pub uploaded: u64,
    /// The journal's upload cursor at the end.
    pub acked_seq: u64,
    pub sessions: u32,
    /// Downlink files installed, as "kind@version".
    pub installed: Vec<String>,
    /// Downlink files refused (forged, corrupt, or not applicable), with the reason.
    pub refused: Vec<String>,
    /// The journal's identity (epoch, hex).
    pub epoch: String,
    /// Records the station refused: it holds a different record at their seq, a field is
    /// out of range, or the record's chain MAC is wrong (altered on the bus's storage); the
    /// station keeps and reports each (see `depot report`).
    pub records_refused: u64,
    /// Seq ranges the station lacked and this validator no longer held (dropped after an
    /// earlier acknowledgement the station has since lost): declared to the station.
    pub gone: Vec<[u64; 2]>,
    /// What kept records from going up while the session still reached the downlink.
    pub problems: Vec<String>,
    /// Versions held after the session.
    pub blacklist_version: u64,
    pub fares_version: u64,
    pub keys_version: u64,
    /// The fleet's verified-certificate set held.
    pub cert_set_version: u64,
    /// The blacklist held is older than [`UploadConfig::blacklist_age_s_max`], past its
    /// expiry, or of unknown age: the station sent nothing newer (freeze protection).
    pub blacklist_stale: bool,
    /// Seconds since the operator signed the blacklist held (None: unknown).
    pub blacklist_age_s: Option<u64>,
}

/// Everything a session needs besides the journal.
#[derive(Clone, Debug)]
pub struct UploadConfig {
    pub depot: SocketAddr,
    pub terminal_id: String,
    pub secret: Secret,
    /// Where `downlink/` lives (the validator's data folder).
    pub data_dir: PathBuf,
    /// Blacklist age above which the report says stale, seconds.
    pub blacklist_age_s_max: u64,
}

/// Open the journal in `journal_dir`, upload everything not yet acknowledged, take the
/// downlink into `journal_dir/downlink/`, and report.
pub async fn upload(
    journal_dir: &Path,
    addr: SocketAddr,
    terminal_id: &str,
    secret: &Secret,
) -> Result<UploadReport, UploadError> {
    let (mut journal, _problems) = Journal::open(journal_dir)?;
    let cfg = UploadConfig {
        depot: addr,
        terminal_id: terminal_id.to_string(),
        secret: *secret,
        data_dir: journal_dir.to_path_buf(),
        blacklist_age_s_max: super::downlink::BLACKLIST_AGE_S_MAX_DEFAULT,
    };
    upload_journal(&mut journal, &cfg).await
}

/// Upload from a journal the caller holds (a validator process keeps its journal open), or
/// from any other [`RecordSource`].
pub async fn upload_journal<J: RecordSource>(
    journal: &mut J,
    cfg: &UploadConfig,
) -> Result<UploadReport, UploadError> {
    let start_acked = journal.acked_seq();
    let mut report = UploadReport::default();
    let mut backoff = Duration::from_millis(RETRY_BACKOFF_MS);
    loop {
        report.sessions += 1;
        match session(journal, cfg, &mut report).await {
            Ok(()) => break,
            Err(e) if e.is_transient() && report.sessions < SESSION_ATTEMPTS_MAX => {
                tracing::warn!(error = %e, attempt = report.sessions, "upload: session broken, retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            Err(e) => return Err(e),
        }
    }
    report.acked_seq = journal.acked_seq();
    report.uploaded = report.acked_seq - start_acked;
    report.epoch = format!("{:016x}", journal.identity()?.0);
    let status = DownlinkDir::new(&cfg.data_dir).status(unix_now_s(), cfg.blacklist_age_s_max);
    report.blacklist_version = status.blacklist_version;
    report.fares_version = status.fares_version;
    report.keys_version = status.keys_version;
    report.cert_set_version = DownlinkDir::new(&cfg.data_dir).cert_set().version();
    report.blacklist_stale = status.blacklist_stale;
    report.blacklist_age_s = status.blacklist_age_s;
    if status.blacklist_stale {
        tracing::warn!(
            version = status.blacklist_version,
            age_s = ?status.blacklist_age_s,
            age_s_max = cfg.blacklist_age_s_max,
            "upload: the blacklist held is stale and the station sent no newer one"
        );
    }
    Ok(report)
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, UploadError> {
    let timeout = Duration::from_secs(CONNECT_TIMEOUT_S);
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(UploadError::Connect(e.to_string())),
        Err(_) => Err(UploadError::Connect(format!(
            "no answer within {timeout:?}"
        ))),
    }
}

type Reader = FrameReader<tokio::net::tcp::OwnedReadHalf>;
type Writer = tokio::net::tcp::OwnedWriteHalf;

async fn session<J: RecordSource>(
    journal: &mut J,
    cfg: &UploadConfig,
    report: &mut UploadReport,
) -> Result<(), UploadError> {
    let (rd, mut wr) = connect(cfg.depot).await?.into_split();
    let mut rd = FrameReader::new(rd);
    let downlink = DownlinkDir::new(&cfg.data_dir);
    let ident = journal.identity()?;
    let (mut sess, station_acked) =
        authenticate(&mut rd, &mut wr, cfg, downlink.held_versions(), ident).await?;
    // The station's count is authenticated, but it moves the cursor only within what this
    // journal wrote: a count beyond it means the journal was rolled back (a restored image).
    let durable = journal.durable_seq();
    let mut start = station_acked;
    if station_acked > durable {
        // Its count is then no word on this journal: send from this journal's own cursor,
        // and the station refuses and reports every seq it holds otherwise.
        start = journal.acked_seq();
        let problem = format!(
            "the depot holds seq {station_acked} of this journal, which wrote only {durable}: \
             the journal was rolled back; its next records will conflict and be reported"
        );
        tracing::error!("upload: {problem}");
        report.problems.push(problem);
    }
    journal.set_acked(start)?;
    // Resend from the station's own count; what is no longer held is declared gone.
    let held_from = journal.held_from_seq()?;
    let mut from = start;
    if start < held_from {
        declare_gone(&mut rd, &mut wr, &mut sess, start + 1, held_from).await?;
        tracing::error!(
            from = start + 1,
            to = held_from,
            "upload: the depot lacks records this journal dropped after an earlier acknowledgement: declared gone"
        );
        report.gone.push([start + 1, held_from]);
        from = held_from;
    }
    // The riders' signed codes go first: a session cut after the records' acks has sent
    // their proofs already.
    send_proofs(&mut wr, &mut sess, &journal.proofs_after(from)).await?;
    send_acquirer(&mut wr, &mut sess, &journal.acquirer_after(from)).await?;
    // Whatever keeps records from going up, the session goes on to the downlink.
    send_records(&mut rd, &mut wr, &mut sess, journal, from, report).await?;
    let done = sess.seal(FrameType::Done, &[]);
    write_frame(&mut wr, FrameType::Done, &done).await?;
    let files = receive_files(&mut rd, &mut sess).await?;
    let now_unix_s = unix_now_s();
    for file in files {
        match downlink.install(&file, now_unix_s) {
            Ok((kind, version)) => {
                tracing::info!(?kind, version, "upload: downlink file installed");
                report.installed.push(format!("{kind:?}@{version}"));
            }
            Err(e) => {
                tracing::warn!(error = %e, "upload: downlink file refused, keeping the one held");
                // Reported in the upload report's `refused` list too.
                report.refused.push(refused_name(&file, &e));
            }
        }
    }
    Ok(())
}

/// The validator's clock, unix seconds.
fn unix_now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn refused_name(file: &[u8], e: &DownlinkError) -> String {
    match super::downlink::describe(file) {
        Some((kind, version)) => format!("{kind:?}@{version}: {e}"),
        None => format!("unreadable file: {e}"),
    }
}

/// Send the ride-code proofs in Proofs frames of at most [`PROOFS_PER_FRAME_MAX`]; the
/// station does not answer them.
async fn send_proofs(
    wr: &mut Writer,
    sess: &mut Session,
    proofs: &[crate::journal::proofs::Proof],
) -> Result<(), UploadError> {
    for chunk in proofs.chunks(PROOFS_PER_FRAME_MAX) {
        let sealed = sess.seal(FrameType::Proofs, &encode_proofs(chunk));
        write_frame(wr, FrameType::Proofs, &sealed).await?;
    }
    Ok(())
}

/// Send the QuickPass acquirer entries in AcquirerData frames of at most
/// [`crate::upload::frame::ACQUIRER_PER_FRAME_MAX`]; the station does not answer them.
async fn send_acquirer(
    wr: &mut Writer,
    sess: &mut Session,
    entries: &[crate::journal::acquirer::AcquirerEntry],
) -> Result<(), UploadError> {
    for chunk in entries.chunks(crate::upload::frame::ACQUIRER_PER_FRAME_MAX) {
        let body = crate::upload::frame::encode_acquirer(chunk);
        let sealed = sess.seal(FrameType::AcquirerData, &body);
        write_frame(wr, FrameType::AcquirerData, &sealed).await?;
    }
    Ok(())
}

async fn declare_gone(
    rd: &mut Reader,
    wr: &mut Writer,
    sess: &mut Session,
    from_seq: u64,
    to_seq: u64,
) -> Result<(), UploadError> {
    let sealed = sess.seal(FrameType::Gone, &encode_gone(from_seq, to_seq));
    write_frame(wr, FrameType::Gone, &sealed).await?;
    let (ty, payload) = rd.read(REPLY_TIMEOUT).await?;
    if ty != FrameType::Ack {
        return Err(UploadError::Unexpected(ty));
    }
    Ack::decode(sess.open(ty, payload).map_err(WireError::from)?)?;
    Ok(())
}

async fn authenticate(
    rd: &mut Reader,
    wr: &mut Writer,
    cfg: &UploadConfig,
    held: HeldVersions,
    (epoch, epoch_first_seq): (u64, u64),
) -> Result<(Session, u64), UploadError> {
    let mut client_nonce = [0u8; NONCE_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut client_nonce);
    let hello = Hello {
        client_nonce,
        terminal_id: cfg.terminal_id.clone(),
        held,
        epoch,
        epoch_first_seq,
    }
    .encode();
    write_frame(wr, FrameType::Hello, &hello).await?;
    let (ty, payload) = rd.read(REPLY_TIMEOUT).await?;
    refused(ty, payload)?;
    if ty != FrameType::Challenge {
        return Err(UploadError::Unexpected(ty));
    }
    let server_nonce = decode_32(ty, payload)?;
    let key = auth::station_key(&cfg.secret, &cfg.terminal_id);
    let proof = auth::client_proof(&key, &server_nonce, &hello);
    write_frame(wr, FrameType::Auth, &proof).await?;
    let mut sess = Session::new(
        auth::session_key(&key, &server_nonce, &hello),
        Role::Validator,
    );
    let (ty, payload) = rd.read(REPLY_TIMEOUT).await?;
    refused(ty, payload)?;
    if ty != FrameType::Welcome {
        return Err(UploadError::Unexpected(ty));
    }
    let acked = decode_u64(ty, sess.open(ty, payload).map_err(WireError::from)?)?;
    Ok((sess, acked))
}

fn refused(ty: FrameType, payload: &[u8]) -> Result<(), UploadError> {
    if ty == FrameType::Refused {
        let (code, text) = decode_refused(payload)?;
        return Err(UploadError::Refused { code, text });
    }
    Ok(())
}

/// Send batches after seq `from`, up to [`BATCHES_IN_FLIGHT_MAX`] ahead, and move the
/// cursor on each ack. An ack that does not cover its batch stops the sending (reported in
/// `report.problems`) but not the session: the acks in flight are read and the session
/// goes on to the downlink.
async fn send_records<J: RecordSource>(
    rd: &mut Reader,
    wr: &mut Writer,
    sess: &mut Session,
    journal: &mut J,
    from: u64,
    report: &mut UploadReport,
) -> Result<(), UploadError> {
    let mut sent_to = from;
    let mut read_to = sent_to;
    let mut stuck = false;
    let mut ahead: VecDeque<Held> = VecDeque::with_capacity(READ_AHEAD_RECORDS_MAX);
    let mut in_flight: VecDeque<u64> = VecDeque::with_capacity(BATCHES_IN_FLIGHT_MAX);
    loop {
        while !stuck && in_flight.len() < BATCHES_IN_FLIGHT_MAX {
            if ahead.is_empty() {
                // Reading a segment costs the same for one record or thousands: read ahead.
                ahead.extend(journal.read_after(read_to, READ_AHEAD_RECORDS_MAX)?);
                read_to = ahead.back().map_or(read_to, |r| r.record.seq);
            }
            let n = ahead.len().min(BATCH_RECORDS_MAX);
            let batch: Vec<Held> = ahead.drain(..n).collect();
            let Some(last) = batch.last().map(|r| r.record.seq) else {
                break;
            };
            let raw: Vec<_> = batch.iter().map(|r| r.raw).collect();
            let body = Batch::encode_body(sent_to + 1, &raw);
            let sealed = sess.seal(FrameType::Batch, &body);
            write_frame(wr, FrameType::Batch, &sealed).await?;
            sent_to = last;
            in_flight.push_back(last);
        }
        let Some(last) = in_flight.pop_front() else {
            return Ok(());
        };
        let (ty, payload) = rd.read(REPLY_TIMEOUT).await?;
        if ty != FrameType::Ack {
            return Err(UploadError::Unexpected(ty));
        }
        let ack = Ack::decode(sess.open(ty, payload).map_err(WireError::from)?)?;
        if ack.refused > 0 {
            tracing::error!(
                refused = ack.refused,
                "upload: the depot refused records (a different record at their seq, or a field out of range): kept there and reported"
            );
            report.records_refused += u64::from(ack.refused);
        }
        if ack.contiguous_seq < last && !stuck {
            let e = UploadError::NotAdvancing {
                acked: ack.contiguous_seq,
                last,
            };
            tracing::error!(error = %e, "upload: records stop here; the session goes on to the downlink");
            report.problems.push(e.to_string());
            stuck = true;
        }
        journal.set_acked(ack.contiguous_seq)?;
    }
}

/// Reassemble the downlink files, each bounded, until Bye.
async fn receive_files(rd: &mut Reader, sess: &mut Session) -> Result<Vec<Vec<u8>>, UploadError> {
    let mut files: Vec<Vec<u8>> = Vec::new();
    let mut current: Option<(u8, u64, Vec<u8>, usize)> = None;
    loop {
        let (ty, payload) = rd.read(REPLY_TIMEOUT).await?;
        let body = sess.open(ty, payload).map_err(WireError::from)?;
        match ty {
            FrameType::FileChunk => {
                let c = FileChunk::decode(body)?;
                let total = c.total_len as usize;
                if total > DOWNLINK_FILE_BYTES_MAX + 1024 {
                    return Err(UploadError::DownlinkStream);
                }
                let (kind, version, buf, total_len) = current
                    .get_or_insert_with(|| (c.kind, c.version, Vec::with_capacity(total), total));
                if *kind != c.kind
                    || *version != c.version
                    || *total_len != total
                    || buf.len() != c.offset as usize
                {
                    return Err(UploadError::DownlinkStream);
                }
                buf.extend_from_slice(c.bytes);
                if buf.len() == total {
                    if files.len() >= DOWNLINK_FILES_MAX {
                        return Err(UploadError::DownlinkStream);
                    }
                    let (_, _, buf, _) = current.take().ok_or(UploadError::DownlinkStream)?;
                    files.push(buf);
                }
            }
            FrameType::Bye => {
                decode_empty(ty, body)?;
                if current.is_some() {
                    return Err(UploadError::DownlinkStream);
                }
                return Ok(files);
            }
            other => return Err(UploadError::Unexpected(other)),
        }
    }
}
