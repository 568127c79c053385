//! The QR scanner: one code per line, from a serial device or a loopback TCP socket.
//!
//! Bus scanners (USB CDC-ACM or RS-232, and keyboard-mode devices behind a serial bridge)
//! send the text of each code followed by CR, LF or CR LF. Their bytes are outside input:
//! any length, any bytes, no newline at all, a flood. [`LineSplitter`] turns them into lines
//! in a fixed buffer of [`SCANNER_LINE_BYTES_MAX`] bytes:
//!
//! - CR and LF both end a line; empty lines (the LF of CR LF) are skipped;
//! - a line longer than the buffer is dropped as it arrives and becomes one
//!   [`ScanLine::Malformed`] when its end comes, whatever its length;
//! - a line that is not UTF-8 becomes one [`ScanLine::Malformed`];
//! - anything else is handed on as text; the engine's checks decide the rest.
//!
//! Nothing here allocates per byte or per line; a flood costs one refusal a line.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

/// Longest scanner line kept, bytes: a ride code is 274 characters (ride-code-v1.md), so
/// twice that leaves room for any other code the scanner may read and still refuse.
pub const SCANNER_LINE_BYTES_MAX: usize = 548;
/// Bytes read from the device at once: a whole ride-code line (275 bytes with its LF) in one
/// read when it is there.
pub const SCANNER_READ_BYTES: usize = 512;
/// How often a blocked read or accept looks at the stop flag, milliseconds.
pub const SCANNER_POLL_MS: u64 = 100;
/// Pause before opening a serial device again after it failed or vanished, milliseconds.
pub const SCANNER_REOPEN_MS: u64 = 1_000;

/// Why a line was refused before the engine saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformation {
    /// Longer than [`SCANNER_LINE_BYTES_MAX`].
    TooLong,
    /// Not UTF-8.
    NotUtf8,
    /// Cut off by the end of the stream (no CR or LF after it).
    Unterminated,
}

/// One line from the scanner.
#[derive(Debug, PartialEq, Eq)]
pub enum ScanLine<'a> {
    Code(&'a str),
    Malformed(Malformation),
}

/// Splits a byte stream into bounded lines (see the module docs).
pub struct LineSplitter {
    buf: [u8; SCANNER_LINE_BYTES_MAX],
    len: usize,
    overlong: bool,
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::new()
    }
}

impl LineSplitter {
    pub const fn new() -> Self {
        LineSplitter {
            buf: [0; SCANNER_LINE_BYTES_MAX],
            len: 0,
            overlong: false,
        }
    }

    /// Take one byte; a line comes out when `byte` ended one.
    pub fn push(&mut self, byte: u8) -> Option<ScanLine<'_>> {
        if byte == b'\n' || byte == b'\r' {
            return self.end_line();
        }
        if self.len == SCANNER_LINE_BYTES_MAX {
            self.overlong = true;
            self.len = 0;
        }
        if !self.overlong {
            self.buf[self.len] = byte;
            self.len += 1;
        }
        None
    }

    /// The stream ended (the scanner was unplugged, the socket closed): a partial line left
    /// over is one malformed line, never half a code.
    pub fn finish(&mut self) -> Option<ScanLine<'_>> {
        if self.len == 0 && !self.overlong {
            return None;
        }
        self.len = 0;
        self.overlong = false;
        Some(ScanLine::Malformed(Malformation::Unterminated))
    }

    fn end_line(&mut self) -> Option<ScanLine<'_>> {
        let (len, overlong) = (self.len, self.overlong);
        self.len = 0;
        self.overlong = false;
        if overlong {
            return Some(ScanLine::Malformed(Malformation::TooLong));
        }
        if len == 0 {
            return None;
        }
        Some(match std::str::from_utf8(&self.buf[..len]) {
            Ok(s) => ScanLine::Code(s),
            Err(_) => ScanLine::Malformed(Malformation::NotUtf8),
        })
    }
}

/// What the scanner is doing, for the status line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ScannerState {
    /// No scanner configured.
    None = 0,
    /// Waiting for the device or a connection.
    Waiting = 1,
    /// Reading lines.
    Connected = 2,
    /// The device could not be opened (retried).
    Failed = 3,
    Stopped = 4,
}

impl ScannerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ScannerState::None => "none",
            ScannerState::Waiting => "waiting",
            ScannerState::Connected => "connected",
            ScannerState::Failed => "failed",
            ScannerState::Stopped => "stopped",
        }
    }

    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => ScannerState::Waiting,
            2 => ScannerState::Connected,
            3 => ScannerState::Failed,
            4 => ScannerState::Stopped,
            _ => ScannerState::None,
        }
    }
}

/// Feed a reader's bytes through a splitter into `on_line` until it ends, fails or `stop`.
/// Returns whether it stopped because of `stop`.
pub fn pump(
    src: &mut dyn Read,
    split: &mut LineSplitter,
    stop: &AtomicBool,
    on_line: &mut dyn FnMut(ScanLine<'_>),
) -> bool {
    let mut chunk = [0u8; SCANNER_READ_BYTES];
    loop {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        match src.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                for &b in &chunk[..n] {
                    if let Some(line) = split.push(b) {
                        on_line(line);
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                tracing::warn!(error = %e, "scanner: read failed");
                break;
            }
        }
    }
    if let Some(line) = split.finish() {
        on_line(line);
    }
    false
}

/// Serve the loopback TCP scanner: accept one connection at a time and read its lines,
/// until `stop`. The listener is bound by the caller (so a bad address fails at start).
pub fn serve_tcp(
    listener: TcpListener,
    state: &AtomicU8,
    stop: &AtomicBool,
    on_line: &mut dyn FnMut(ScanLine<'_>),
) {
    let _ = listener.set_nonblocking(true);
    let mut split = LineSplitter::new();
    while !stop.load(Ordering::Relaxed) {
        state.store(ScannerState::Waiting as u8, Ordering::Relaxed);
        let mut stream = match listener.accept() {
            Ok((s, peer)) => {
                tracing::info!(%peer, "scanner connected");
                s
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(SCANNER_POLL_MS));
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "scanner: accept failed");
                std::thread::sleep(Duration::from_millis(SCANNER_POLL_MS));
                continue;
            }
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_millis(SCANNER_POLL_MS)));
        state.store(ScannerState::Connected as u8, Ordering::Relaxed);
        if pump(&mut stream, &mut split, stop, on_line) {
            break;
        }
    }
    state.store(ScannerState::Stopped as u8, Ordering::Relaxed);
}

/// Bind the loopback TCP scanner's address.
pub fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
}

/// Read a serial scanner (raw mode, 8N1, no flow control, at `baud`) until `stop`; a device
/// that fails or vanishes (a USB scanner unplugged) is opened again every
/// [`SCANNER_REOPEN_MS`].
pub fn serve_serial(
    path: &Path,
    baud: u32,
    state: &AtomicU8,
    stop: &AtomicBool,
    on_line: &mut dyn FnMut(ScanLine<'_>),
) {
    let mut split = LineSplitter::new();
    let name = path.to_string_lossy().into_owned();
    while !stop.load(Ordering::Relaxed) {
        state.store(ScannerState::Waiting as u8, Ordering::Relaxed);
        // serialport sets the TTY raw (no echo, no line editing, no CR/LF translation).
        let port = serialport::new(&name, baud)
            .data_bits(serialport::DataBits::Eight)
            .parity(serialport::Parity::None)
            .stop_bits(serialport::StopBits::One)
            .flow_control(serialport::FlowControl::None)
            .timeout(Duration::from_millis(SCANNER_POLL_MS))
            .open();
        match port {
            Ok(mut port) => {
                tracing::info!(device = %name, baud, "scanner open");
                state.store(ScannerState::Connected as u8, Ordering::Relaxed);
                if pump(&mut port, &mut split, stop, on_line) {
                    break;
                }
                tracing::warn!(device = %name, "scanner closed; opening it again");
            }
            Err(e) => {
                state.store(ScannerState::Failed as u8, Ordering::Relaxed);
                tracing::warn!(device = %name, error = %e, "scanner cannot be opened");
            }
        }
        sleep_unless_stopped(Duration::from_millis(SCANNER_REOPEN_MS), stop);
    }
    state.store(ScannerState::Stopped as u8, Ordering::Relaxed);
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let step = Duration::from_millis(SCANNER_POLL_MS);
    let mut left = d;
    while !left.is_zero() && !stop.load(Ordering::Relaxed) {
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the splitter should say for a byte stream, written the obvious (allocating) way.
    #[derive(Debug, PartialEq, Eq)]
    enum Want {
        Code(String),
        Malformed(Malformation),
    }

    fn model(bytes: &[u8], finished: bool) -> Vec<Want> {
        let mut out = Vec::new();
        let mut parts: Vec<&[u8]> = bytes.split(|b| *b == b'\n' || *b == b'\r').collect();
        let tail = parts.pop().unwrap_or(&[]);
        let mut one = |p: &[u8]| {
            if p.len() > SCANNER_LINE_BYTES_MAX {
                out.push(Want::Malformed(Malformation::TooLong));
            } else if !p.is_empty() {
                out.push(match std::str::from_utf8(p) {
                    Ok(s) => Want::Code(s.to_string()),
                    Err(_) => Want::Malformed(Malformation::NotUtf8),
                });
            }
        };
        for p in parts {
            one(p);
        }
        if finished && !tail.is_empty() {
            out.push(Want::Malformed(Malformation::Unterminated));
        }
        out
    }

    fn run(chunks: &[Vec<u8>], finished: bool) -> Vec<Want> {
        let mut s = LineSplitter::new();
        let mut out = Vec::new();
        let mut take = |l: ScanLine<'_>| match l {
            ScanLine::Code(c) => out.push(Want::Code(c.to_string())),
            ScanLine::Malformed(m) => out.push(Want::Malformed(m)),
        };
        for c in chunks {
            for &b in c {
                if let Some(l) = s.push(b) {
                    take(l);
                }
            }
        }
        if finished {
            if let Some(l) = s.finish() {
                take(l);
            }
        }
        out
    }

    #[test]
    fn crlf_lf_and_cr_each_end_one_line() {
        let got = run(&[b"ESSC1.abc\r\nESSC1.def\nx\r".to_vec()], false);
        assert_eq!(
            got,
            vec![
                Want::Code("ESSC1.abc".into()),
                Want::Code("ESSC1.def".into()),
                Want::Code("x".into())
            ]
        );
    }

    #[test]
    fn a_flood_without_newline_is_one_refusal_then_lines_go_on() {
        let mut flood = vec![b'A'; 1_000_000];
        flood.extend_from_slice(b"\nok\n");
        assert_eq!(
            run(&[flood], false),
            vec![
                Want::Malformed(Malformation::TooLong),
                Want::Code("ok".into())
            ]
        );
        let exact = vec![b'B'; SCANNER_LINE_BYTES_MAX];
        let mut one_more = exact.clone();
        one_more.push(b'B');
        assert_eq!(
            run(&[exact.clone(), b"\n".to_vec()], false),
            vec![Want::Code(String::from_utf8(exact).unwrap())]
        );
        assert_eq!(
            run(&[one_more, b"\n".to_vec()], false),
            vec![Want::Malformed(Malformation::TooLong)]
        );
    }

    #[test]
    fn non_utf8_is_malformed_and_a_cut_line_at_the_end_too() {
        assert_eq!(
            run(&[vec![0xff, 0xfe, b'\n']], false),
            vec![Want::Malformed(Malformation::NotUtf8)]
        );
        assert_eq!(
            run(&[b"ESSC1.half".to_vec()], true),
            vec![Want::Malformed(Malformation::Unterminated)]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha, ..ProptestConfig::default() })]

        /// Any bytes, cut into any chunks: the splitter says what the model says, never
        /// panics, and the chunking does not matter.
        #[test]
        fn splitter_matches_the_model_for_any_bytes_and_chunks(
            segments in proptest::collection::vec(
                (
                    prop_oneof![
                        // Short runs of any byte (CR and LF included).
                        proptest::collection::vec(any::<u8>(), 0..40),
                        // Lines around the bound, and far past it.
                        (0usize..1_200, any::<u8>()).prop_map(|(n, b)| vec![b | 0x20; n]),
                        // Code-like text.
                        "ESSC1\\.[A-Za-z0-9_-]{0,300}".prop_map(String::into_bytes),
                    ],
                    prop_oneof![Just(&b"\n"[..]), Just(&b"\r\n"[..]), Just(&b"\r"[..]), Just(&b""[..])],
                ),
                0..8),
            cuts in proptest::collection::vec(0usize..6_000, 0..8),
            finished in any::<bool>(),
        ) {
            let bytes: Vec<u8> = segments
                .iter()
                .flat_map(|(body, end)| body.iter().chain(end.iter()).copied())
                .collect();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for c in cuts {
                chunks.push(bytes[at..c].to_vec());
                at = c;
            }
            chunks.push(bytes[at..].to_vec());
            prop_assert_eq!(run(&chunks, finished), model(&bytes, finished));
        }
    }
}
