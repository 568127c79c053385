//! Set-up shared by the tests that run the validator program as a process
//! (tests/validator_e2e.rs, tests/validator_provision.rs, tests/quickpass_acquirer.rs): the
//! binary, children killed on drop, bounded waits, a depot with an operator key, a terminal
//! and a ride-code channel key, serving on a free loopback port; ride codes issued now; the
//! program started with its decision lines on a channel and its status file read back.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest wait for what the program or the station does a moment later (the uplink tries
/// every second, pcscd polls vpcd every 400 ms): generous, so a loaded machine never fails a
/// test, and bounded.
pub const WAIT_S: u64 = 60;

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fare-validator"))
}

/// A child process killed (SIGKILL) when dropped, so a failing test leaves nothing behind.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Run `cmd` to its end; it must succeed. Its standard output.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Poll `cond` every 50 ms for up to [`WAIT_S`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(WAIT_S);
    while !cond() {
        assert!(Instant::now() < end, "waited {WAIT_S} s for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A loopback port free a moment ago (for the program's scanner socket).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The operator's signing key imported on purpose into the station's database, unless it
/// holds one (a station never makes one).
pub fn import_operator_key(db: &Path, seed: u8) {
    let s = fare_validator::depot::Store::open(db).unwrap();
    if s.operator_key().unwrap().is_none() {
        s.set_operator_key(&fare_validator::signed::signing_key_from_seed([seed; 32]))
            .unwrap();
    }
}

/// `depot terminal add ID`: the station's answer (terminal id, secret, operator key).
pub fn terminal_add(db: &Path, id: &str) -> Value {
    let text = run_ok(bin().args(["depot", "terminal", "add", id, "--db"]).arg(db));
    serde_json::from_str(&text).unwrap()
}

/// A ride-code channel key made in `dir` (`ride-code keygen`, `alg` from `seed`) and
/// published at the station as key file version 1; the channel's private key file.
pub fn publish_channel_key(dir: &Path, db: &Path, alg: &str, seed: u64) -> PathBuf {
    let channel_key = dir.join("channel.json");
    let out = run_ok(
        bin()
            .args(["ride-code", "keygen", "--alg", alg, "--seed"])
            .arg(seed.to_string())
            .arg("--out")
            .arg(&channel_key),
    );
    let entry: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let keys = dir.join("keys.json");
    std::fs::write(
        &keys,
        serde_json::json!({"version": 1, "channels": [entry]}).to_string(),
    )
    .unwrap();
    run_ok(
        bin()
            .args(["depot", "publish", "keys"])
            .arg(&keys)
            .arg("--db")
            .arg(db),
    );
    channel_key
}

/// `depot serve` on a free loopback port: the child and its address.
pub fn serve_depot(db: &Path) -> (Proc, String) {
    let mut serve = bin()
        .args(["depot", "serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(serve.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let listening: Value = serde_json::from_str(&line).unwrap();
    let addr = listening["listening"].as_str().unwrap().to_string();
    (Proc(serve), addr)
}

/// A ride code issued now by channel 1's key 1 in `channel_key`, for an adult, its holder
/// certificate valid from an hour ago to a day ahead.
pub fn issue_code(channel_key: &Path, account: u64, card_no: &str, counter: u32) -> String {
    let now = unix_now_s();
    let out = run_ok(
        bin()
            .args(["ride-code", "issue", "--key"])
            .arg(channel_key)
            .args(["--channel", "1", "--key-id", "1", "--category", "adult"])
            .args(["--account", &account.to_string()])
            .args(["--card", card_no])
            .args(["--cert-not-before", &(now - 3600).to_string()])
            .args(["--cert-not-after", &(now + 86_400).to_string()])
            .args(["--generated-at", &now.to_string()])
            .args(["--counter", &counter.to_string()]),
    );
    out.trim().to_string()
}

/// The program's status line as its status file holds it (`Null` while there is none).
pub fn status(data: &Path) -> Value {
    std::fs::read_to_string(data.join("status.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

/// `fare-validator validator --config CONFIG` running, its decision lines on a channel, its
/// log in a file.
pub struct Program {
    pub proc: Proc,
    lines: mpsc::Receiver<Value>,
    log: PathBuf,
}

pub fn start_validator(config: &Path, log: &Path) -> Program {
    let mut child = bin()
        .args(["validator", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let v: Value = serde_json::from_str(&line).expect("a decision line is JSON");
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    Program {
        proc: Proc(child),
        lines,
        log: log.to_path_buf(),
    }
}

impl Program {
    /// The next decision line, within [`WAIT_S`]; else the test fails with the log.
    pub fn next_line(&self) -> Value {
        match self.lines.recv_timeout(Duration::from_secs(WAIT_S)) {
            Ok(v) => v,
            Err(e) => panic!(
                "no decision line ({e}); the validator's log:\n{}",
                self.log_text()
            ),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.proc.0.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid, which has not been waited for yet.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    /// SIGTERM, then the exit status within [`WAIT_S`].
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let mut exited = None;
        wait_until("the validator to stop on SIGTERM", || {
            exited = self.proc.0.try_wait().unwrap();
            exited.is_some()
        });
        exited.unwrap()
    }
}
