//! A second core for first-seen holders: while the scanning thread checks the code's own
//! signature (check 8), a worker thread checks the channel's signature on the holder
//! certificate (check 6). A first-seen code costs two signature checks; side by side they take
//! little more than one (SM2 first-seen scans on the 2-core VM, p50: 373 µs on one core,
//! 253 µs with the worker; `cargo run --release --example ride_code_latency`).
//!
//! - One job at a time, in a fixed slot: posting copies the channel key, the 65 signed bytes
//!   and the signature into it. Nothing is allocated after [`CertWorker::spawn`].
//! - The worker spins for [`WORKER_SPIN_US`] after each job (scans come in runs at a door),
//!   then parks until the next post wakes it.
//! - The worker is kept off the scanning thread's core (its CPU affinity is set to the others
//!   whenever the scanning thread is seen on a new core): woken there, it would share that
//!   core with the scan it is meant to run beside, and a first-seen scan after a pause took
//!   longer than with no worker at all (SM2: 627 µs against 519 µs; kept off: 345 µs).
//! - The scanning thread never waits on a job nobody has started: if the worker has not
//!   picked the job up by the time the code's signature is checked, the scanning thread takes
//!   it back and checks the certificate itself. So a busy or descheduled worker costs at worst
//!   the sequential time, and a worker that died costs nothing but that.
//! - Results are the very same `VerifyKey::verifies` calls as the sequential path; the
//!   verifier reports checks 6, 7 and 8 in their order whatever finished first.

use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use super::crypto::VerifyKey;
use super::format::{CERT_SIGNED_BYTES, SIGNATURE_BYTES};
use crate::sched::{self, CpuSet};

/// How long the worker keeps polling for the next job after one, in microseconds.
pub const WORKER_SPIN_US: u64 = 500;
/// How long the scanning thread polls for a running job before it parks, in microseconds
/// (longer than one signature check on a quiet core, so parking is the exception).
pub const WAIT_SPIN_US: u64 = 1_000;
/// Upper bound of one park of the scanning thread, in milliseconds: it is woken when the job is
/// done; this only bounds how late it notices a worker that died mid-job.
pub const PARK_MAX_MS: u64 = 10;

/// How long [`CertWorker::spawn`] waits for the new thread to be running, in milliseconds.
const START_WAIT_MS: u64 = 1_000;
const NOT_STARTED: i32 = 0;
const NO_THREAD_ID: i32 = -1;

const IDLE: u32 = 0;
const POSTED: u32 = 1;
const RUNNING: u32 = 2;
const DONE: u32 = 3;
const STOP: u32 = 4;

struct Job {
    key: Option<VerifyKey>,
    message: [u8; CERT_SIGNED_BYTES],
    signature: [u8; SIGNATURE_BYTES],
    verified: bool,
    /// The scanning thread, woken when the job is done.
    waiter: Option<Thread>,
}

struct Shared {
    state: AtomicU32,
    job: Mutex<Job>,
    /// The worker's kernel thread id; [`NOT_STARTED`] until it runs, [`NO_THREAD_ID`] where
    /// the system has none to give.
    worker_tid: AtomicI32,
}

impl Shared {
    fn empty() -> Arc<Self> {
        Arc::new(Shared {
            state: AtomicU32::new(IDLE),
            job: Mutex::new(Job {
                key: None,
                message: [0; CERT_SIGNED_BYTES],
                signature: [0; SIGNATURE_BYTES],
                verified: false,
                waiter: None,
            }),
            worker_tid: AtomicI32::new(NOT_STARTED),
        })
    }

    fn job(&self) -> std::sync::MutexGuard<'_, Job> {
        // A panic inside a verification leaves nothing half-written that matters: the result
        // is only read after DONE, which a panicking worker never stores.
        self.job.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks the job in the slot; the slot is not held during the check.
    fn run_job(&self) -> bool {
        let (key, message, signature) = {
            let job = self.job();
            (job.key.clone(), job.message, job.signature)
        };
        key.is_some_and(|key| key.verifies(&message, &signature))
    }
}

/// The worker thread and its job slot. Dropping it stops and joins the thread.
pub(crate) struct CertWorker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// The cores the worker may use (those of the thread that started it).
    cores: Option<CpuSet>,
    /// The core the worker was last kept off: where the scanning thread was then.
    kept_off: Option<usize>,
}

impl std::fmt::Debug for CertWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertWorker")
            .field("state", &self.shared.state.load(Ordering::Relaxed))
            .finish()
    }
}

/// A posted certificate check; [`CertWorker::finish`] turns it into the result.
#[must_use = "a posted job must be finished before the next one"]
pub(crate) struct Posted(());

impl CertWorker {
    /// Starts the worker and waits until it runs, so that its start-up (the thread's own
    /// allocations, its id for [`Self::keep_worker_off_this_core`]) is over before the first
    /// scan; or `None` where a thread cannot be had (the verifier then checks certificates on
    /// the scanning thread).
    pub(crate) fn spawn() -> Option<Self> {
        let shared = Shared::empty();
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("cert-check".into())
            .spawn(move || {
                theirs.worker_tid.store(
                    sched::thread_id().unwrap_or(NO_THREAD_ID),
                    Ordering::Release,
                );
                work(&theirs)
            })
            .map_err(|e| tracing::warn!(error = %e, "no certificate worker thread"))
            .ok()?;
        let waiting_since = Instant::now();
        while shared.worker_tid.load(Ordering::Acquire) == NOT_STARTED
            && waiting_since.elapsed() < Duration::from_millis(START_WAIT_MS)
        {
            std::thread::sleep(Duration::from_micros(50));
        }
        Some(CertWorker {
            shared,
            thread: Some(thread),
            cores: CpuSet::of_calling_thread(),
            kept_off: None,
        })
    }

    /// Hands the check of `signature` over `message` by `key` to the worker.
    pub(crate) fn post(
        &mut self,
        key: &VerifyKey,
        message: &[u8; CERT_SIGNED_BYTES],
        signature: &[u8; SIGNATURE_BYTES],
    ) -> Posted {
        {
            let mut job = self.shared.job();
            job.key = Some(key.clone());
            job.message = *message;
            job.signature = *signature;
            job.verified = false;
            job.waiter = Some(std::thread::current());
        }
        self.keep_worker_off_this_core();
        self.shared.state.store(POSTED, Ordering::Release);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
        Posted(())
    }

    /// The result of the posted check: the worker's, or this thread's own if the worker had
    /// not started it.
    pub(crate) fn finish(&mut self, _posted: Posted) -> bool {
        let s = &self.shared;
        if s.state
            .compare_exchange(POSTED, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return s.run_job();
        }
        let spin_until = Instant::now() + Duration::from_micros(WAIT_SPIN_US);
        loop {
            match s.state.load(Ordering::Acquire) {
                DONE => {
                    let verified = s.job().verified;
                    s.state.store(IDLE, Ordering::Release);
                    return verified;
                }
                RUNNING if Instant::now() < spin_until => std::hint::spin_loop(),
                RUNNING if !self.worker_gone() => {
                    std::thread::park_timeout(Duration::from_millis(PARK_MAX_MS))
                }
                // Only this thread posts and finishes, so any other state, or a job left
                // running by a worker that is gone (it panicked), is checked here.
                _ => {
                    s.state.store(IDLE, Ordering::Release);
                    return s.run_job();
                }
            }
        }
    }
}

impl CertWorker {
    /// One system call when the scanning thread has moved to another core since the last
    /// post, none otherwise.
    fn keep_worker_off_this_core(&mut self) {
        let Some(cpu) = sched::current_cpu() else {
            return;
        };
        let tid = self.shared.worker_tid.load(Ordering::Acquire);
        if self.kept_off == Some(cpu) || tid <= NOT_STARTED {
            return;
        }
        if let Some(others) = self.cores.and_then(|c| c.without(cpu)) {
            others.apply_to(tid);
        }
        // Tried once per move, agreed or not.
        self.kept_off = Some(cpu);
    }

    fn worker_gone(&self) -> bool {
        self.thread.as_ref().map_or(true, JoinHandle::is_finished)
    }
}

impl Drop for CertWorker {
    fn drop(&mut self) {
        self.shared.state.store(STOP, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// The worker's loop: take posted jobs until told to stop.
fn work(s: &Shared) {
    let mut spin_until = Instant::now();
    loop {
        match s.state.load(Ordering::Acquire) {
            STOP => return,
            POSTED => {
                if s.state
                    .compare_exchange(POSTED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    continue; // taken back by the scanning thread
                }
                let verified = s.run_job();
                let waiter = {
                    let mut job = s.job();
                    job.verified = verified;
                    job.waiter.clone()
                };
                if s.state
                    .compare_exchange(RUNNING, DONE, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    return; // told to stop while checking
                }
                if let Some(w) = waiter {
                    w.unpark();
                }
                spin_until = Instant::now() + Duration::from_micros(WORKER_SPIN_US);
            }
            _ if Instant::now() < spin_until => std::hint::spin_loop(),
            // An unpark that came first leaves a token, so no post is missed.
            _ => std::thread::park(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ride_code::issuer::OneChannel;
    use crate::ride_code::{Alg, RideCode};

    const NOW: i64 = 1_795_824_000;

    /// Signed bytes, signature, and whether they verify.
    type Case = ([u8; CERT_SIGNED_BYTES], [u8; SIGNATURE_BYTES], bool);

    /// A channel key and cases: a good one, then each with a flipped bit in the signature or
    /// in the message.
    fn jobs(alg: Alg) -> (VerifyKey, Vec<Case>) {
        let world = OneChannel::new(alg, NOW, 10);
        let bytes = world.code(NOW as u32, 1);
        let code = RideCode::parse(&world.text(NOW as u32, 1)).expect("issued code parses");
        let key = world
            .keys
            .find(code.channel_id, code.channel_key_id, alg)
            .expect("the issuing key")
            .key
            .clone();
        let (message, signature) = (*code.cert_signed(), code.cert_signature);
        assert_eq!(&bytes[..CERT_SIGNED_BYTES], &message[..]);
        let mut out = vec![(message, signature, true)];
        for bit in [0usize, 9, 100, 300, 511] {
            let mut bad = signature;
            bad[bit / 8] ^= 1 << (bit % 8);
            out.push((message, bad, false));
            let mut wrong = message;
            wrong[bit % CERT_SIGNED_BYTES] ^= 1;
            out.push((wrong, signature, false));
        }
        (key, out)
    }

    #[test]
    fn the_worker_agrees_with_the_calling_thread() {
        for alg in [Alg::P256, Alg::Sm2] {
            let (key, jobs) = jobs(alg);
            let mut worker = CertWorker::spawn().expect("a thread");
            for _ in 0..3 {
                for (message, signature, good) in &jobs {
                    assert_eq!(key.verifies(message, signature), *good);
                    let posted = worker.post(&key, message, signature);
                    assert_eq!(worker.finish(posted), *good, "{alg:?}");
                }
                // Long enough for the worker to park: the next post wakes it.
                std::thread::sleep(Duration::from_micros(3 * WORKER_SPIN_US));
            }
        }
    }

    #[test]
    fn a_job_the_worker_never_started_is_checked_by_the_poster() {
        let (key, jobs) = jobs(Alg::Sm2);
        // No thread at all: every job is taken back.
        let mut worker = CertWorker {
            shared: Shared::empty(),
            thread: None,
            cores: None,
            kept_off: None,
        };
        for (message, signature, good) in &jobs {
            let posted = worker.post(&key, message, signature);
            assert_eq!(worker.finish(posted), *good);
            assert_eq!(worker.shared.state.load(Ordering::Relaxed), IDLE);
        }
    }

    #[test]
    fn dropping_the_worker_mid_job_stops_its_thread() {
        let (key, jobs) = jobs(Alg::Sm2);
        for wait_us in [0u64, 50, 400] {
            let mut worker = CertWorker::spawn().expect("a thread");
            let shared = Arc::clone(&worker.shared);
            let (message, signature, _) = &jobs[0];
            let _unfinished = worker.post(&key, message, signature);
            std::thread::sleep(Duration::from_micros(wait_us));
            drop(worker); // joins: must not hang whatever the worker was doing
            assert_eq!(Arc::strong_count(&shared), 1);
        }
    }

    #[test]
    fn dropping_the_worker_stops_its_thread() {
        let worker = CertWorker::spawn().expect("a thread");
        let shared = Arc::clone(&worker.shared);
        drop(worker);
        assert_eq!(
            Arc::strong_count(&shared),
            1,
            "the thread let go of the slot"
        );
    }
}
