//! The card side of vsmartcard's virtual reader (`vpcd`, a pcscd driver): a simulated card or
//! PSAM connects over TCP to the port of the reader it sits in, and pcscd then reaches it
//! exactly as it reaches a card in a USB reader. This is how the PC/SC backend is tested
//! without hardware (shared/specs/vpcd-notes.md).
//!
//! ## Protocol
//!
//! The virtual card is the TCP **client**. Every message, both ways, is a 2-byte big-endian
//! length followed by that many bytes. From vpcd to the card:
//!
//! | message | meaning | answer |
//! | --- | --- | --- |
//! | 1 byte `00` | power off | none |
//! | 1 byte `01` | power on | none |
//! | 1 byte `02` | reset | none |
//! | 1 byte `04` | send your ATR | the ATR, framed |
//! | 2 bytes or more | a command APDU | the response APDU (data ‖ SW1 SW2), framed |
//!
//! Closing the socket is the card leaving the field.
//!
//! Plain std TCP, no PC/SC library: it builds without the `pcsc` feature. Only 127.0.0.1 is
//! ever connected to. TCP_QUICKACK is set before every read: without it each APDU round trip
//! through pcscd waits for a delayed acknowledgement (~48 ms measured, ~60 µs with it).

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use super::apdu::RESPONSE_DATA_BYTES_MAX;
use super::apdu::{sw, CardChannel, ChannelError, Response, COMMAND_BYTES_MAX};
use super::sim::{PsamProtocol, SimCard, SimPsam};

/// vpcd's first reader ("Virtual PCD 00 00"): the contactless card in these tests.
pub const VPCD_CARD_PORT: u16 = 35963;
/// vpcd's second reader ("Virtual PCD 00 01"): the PSAM in these tests.
pub const VPCD_SAM_PORT: u16 = 35964;
/// Length prefix of every frame, bytes.
pub const FRAME_HEADER_BYTES: usize = 2;
/// Longest frame taken from vpcd: a short command APDU. Longer ones (extended APDUs, which
/// neither the card nor the PSAM speak) are read past and answered `67 00`.
pub const FRAME_IN_BYTES_MAX: usize = COMMAND_BYTES_MAX;
/// Longest frame sent to vpcd: a short response APDU with its status word.
pub const FRAME_OUT_BYTES_MAX: usize = RESPONSE_DATA_BYTES_MAX + 2;
/// Longest ATR (ISO 7816-3), bytes.
pub const ATR_BYTES_MAX: usize = 33;
/// How often a waiting card checks whether it should leave the field, milliseconds.
pub const IDLE_POLL_MS: u64 = 10;
/// Longest wait for the rest of a frame whose first byte has arrived, milliseconds.
pub const FRAME_READ_TIMEOUT_MS: u64 = 2_000;
/// Longest wait for a write to vpcd, milliseconds.
pub const FRAME_WRITE_TIMEOUT_MS: u64 = 2_000;
/// Connection attempts to a vpcd port that is not listening yet (pcscd starting).
pub const CONNECT_ATTEMPTS_MAX: u32 = 50;
/// Pause between connection attempts, milliseconds.
pub const CONNECT_RETRY_MS: u64 = 100;

/// ATR of the simulated contactless card: `3B 8n 80 01` (T=0 and T=1 indicated, as PC/SC part 3
/// builds ATRs for ISO 14443-4 cards), historical bytes "DZ T-UNION", TCK.
pub const SIM_CARD_ATR: [u8; 15] = with_tck(*b";\x8a\x80\x01DZ T-UNION\x00");
/// ATR of the simulated PSAM: the same form, historical bytes "DZ PSAM".
pub const SIM_PSAM_ATR: [u8; 12] = with_tck(*b";\x87\x80\x01DZ PSAM\x00");
/// ATR of the simulated PSAM on T=0 (`sim-card --psam --t0`): `3B 07`, no interface bytes, so
/// T=0 only (ISO 7816-3 8.2: no TD1 means T=0, and no TCK is sent), historical bytes "DZ PSAM".
pub const SIM_PSAM_T0_ATR: [u8; 9] = *b";\x07DZ PSAM";

/// Fill the last byte with the ATR check byte: the XOR of every byte from T0 to the end.
const fn with_tck<const N: usize>(mut atr: [u8; N]) -> [u8; N] {
    let mut x = 0u8;
    let mut i = 1;
    while i + 1 < N {
        x ^= atr[i];
        i += 1;
    }
    atr[N - 1] = x;
    atr
}

/// What can go wrong between a virtual card and vpcd.
#[derive(Debug, thiserror::Error)]
pub enum VpcdError {
    #[error("vpcd address {0}: virtual cards only connect to 127.0.0.1")]
    NotLoopback(String),
    #[error("vpcd address {0:?}: expected 127.0.0.1:PORT or PORT")]
    BadAddress(String),
    #[error("empty vpcd frame")]
    EmptyFrame,
    #[error("vpcd frame of {len} bytes, more than {max}")]
    FrameTooLong { len: usize, max: usize },
    #[error("vpcd connection closed inside a frame ({got} of {expected} bytes)")]
    Truncated { got: usize, expected: usize },
    #[error("unknown vpcd control byte {0:#04x}")]
    UnknownControl(u8),
    #[error("vpcd closed the connection")]
    Closed,
    #[error("vpcd I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// One message from vpcd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    PowerOff,
    PowerOn,
    Reset,
    GetAtr,
    Apdu(&'a [u8]),
}

/// Decode one frame's payload.
pub fn parse_message(payload: &[u8]) -> Result<Message<'_>, VpcdError> {
    match payload {
        [] => Err(VpcdError::EmptyFrame),
        [0] => Ok(Message::PowerOff),
        [1] => Ok(Message::PowerOn),
        [2] => Ok(Message::Reset),
        [4] => Ok(Message::GetAtr),
        [b] => Err(VpcdError::UnknownControl(*b)),
        apdu => Ok(Message::Apdu(apdu)),
    }
}

/// Fill `buf` completely. `Ok(n < buf.len())` only at end of stream.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, VpcdError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(got)
}

/// Read one frame into `buf`; its payload length. A frame longer than `buf` is read past (so
/// the stream stays in step) and reported as [`VpcdError::FrameTooLong`].
pub fn read_frame(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, VpcdError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match read_full(r, &mut header)? {
        0 => return Err(VpcdError::Closed),
        FRAME_HEADER_BYTES => {}
        got => {
            return Err(VpcdError::Truncated {
                got,
                expected: FRAME_HEADER_BYTES,
            })
        }
    }
    let len = usize::from(u16::from_be_bytes(header));
    if len == 0 {
        return Err(VpcdError::EmptyFrame);
    }
    if len > buf.len() {
        // At most u16::MAX bytes to skip, in buffer-sized pieces.
        let mut left = len;
        let mut scratch = [0u8; 256];
        while left > 0 {
            let step = left.min(scratch.len());
            let got = read_full(r, &mut scratch[..step])?;
            if got < step {
                return Err(VpcdError::Truncated {
                    got: len - left + got,
                    expected: len,
                });
            }
            left -= step;
        }
        return Err(VpcdError::FrameTooLong {
            len,
            max: buf.len(),
        });
    }
    let got = read_full(r, &mut buf[..len])?;
    if got < len {
        return Err(VpcdError::Truncated { got, expected: len });
    }
    Ok(len)
}

/// Write one frame (length prefix and payload in one write).
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> Result<(), VpcdError> {
    let mut out = [0u8; FRAME_HEADER_BYTES + FRAME_OUT_BYTES_MAX];
    let len = payload.len();
    if len == 0 {
        return Err(VpcdError::EmptyFrame);
    }
    if len > FRAME_OUT_BYTES_MAX {
        return Err(VpcdError::FrameTooLong {
            len,
            max: FRAME_OUT_BYTES_MAX,
        });
    }
    // len <= FRAME_OUT_BYTES_MAX < u16::MAX
    out[..FRAME_HEADER_BYTES].copy_from_slice(&(len as u16).to_be_bytes());
    out[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len].copy_from_slice(payload);
    w.write_all(&out[..FRAME_HEADER_BYTES + len])?;
    Ok(())
}

/// Parse `127.0.0.1:PORT` or a bare `PORT`; any other host is refused.
pub fn parse_addr(s: &str) -> Result<SocketAddrV4, VpcdError> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    }
    let addr: SocketAddr = s
        .parse()
        .map_err(|_| VpcdError::BadAddress(s.to_string()))?;
    match addr {
        SocketAddr::V4(a) if *a.ip() == Ipv4Addr::LOCALHOST => Ok(a),
        _ => Err(VpcdError::NotLoopback(s.to_string())),
    }
}

/// A card or SAM that can sit in a virtual reader.
pub trait VirtualCard: CardChannel {
    fn atr(&self) -> &[u8];
    /// Power on or reset while in the field.
    fn reset(&mut self);
    /// Power off while in the field.
    fn power_off(&mut self) {}
}

impl VirtualCard for SimCard {
    fn atr(&self) -> &[u8] {
        &SIM_CARD_ATR
    }
    fn reset(&mut self) {
        SimCard::reset(self);
    }
}

/// A card with the T-Union application, a QuickPass application, or both: the same ATR as
/// the transport card (a contactless reader makes one up from the card's type anyway).
impl VirtualCard for super::sim_quickpass::SimPhysicalCard {
    fn atr(&self) -> &[u8] {
        &SIM_CARD_ATR
    }
    fn reset(&mut self) {
        super::sim_quickpass::SimPhysicalCard::reset(self);
    }
}

impl VirtualCard for SimPsam {
    fn atr(&self) -> &[u8] {
        match self.protocol() {
            PsamProtocol::T1 => &SIM_PSAM_ATR,
            PsamProtocol::T0 => &SIM_PSAM_T0_ATR,
        }
    }
    fn reset(&mut self) {
        SimPsam::reset(self);
    }
}

impl<T: VirtualCard + ?Sized> VirtualCard for &mut T {
    fn atr(&self) -> &[u8] {
        (**self).atr()
    }
    fn reset(&mut self) {
        (**self).reset();
    }
    fn power_off(&mut self) {
        (**self).power_off();
    }
}

/// How a presentation is going, for the decision to leave the field.
#[derive(Clone, Copy, Debug)]
pub struct Activity {
    /// Command APDUs answered in this presentation.
    pub apdus: u64,
    /// Time since the last message from vpcd (or since connecting).
    pub idle: Duration,
    /// Time since connecting.
    pub present_for: Duration,
}

/// Why a presentation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The card pulled itself away mid-dialogue (a simulated [`super::sim::Removal`]).
    CardLeft,
    /// The holder took the card away (the `leave` test said so).
    Withdrawn,
    /// vpcd closed the connection (pcscd stopped).
    ReaderClosed,
}

/// One connection to a vpcd reader port: one presentation of a card.
pub struct VpcdLink {
    stream: TcpStream,
    quickack: bool,
}

impl VpcdLink {
    /// Connect to vpcd on 127.0.0.1, retrying while the port is not listening yet.
    pub fn connect(addr: SocketAddrV4) -> Result<Self, VpcdError> {
        if *addr.ip() != Ipv4Addr::LOCALHOST {
            return Err(VpcdError::NotLoopback(addr.to_string()));
        }
        let mut attempt = 0;
        let stream = loop {
            attempt += 1;
            match TcpStream::connect(addr) {
                Ok(s) => break s,
                Err(e)
                    if e.kind() == ErrorKind::ConnectionRefused
                        && attempt < CONNECT_ATTEMPTS_MAX =>
                {
                    std::thread::sleep(Duration::from_millis(CONNECT_RETRY_MS));
                }
                Err(e) => return Err(e.into()),
            }
        };
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(Duration::from_millis(FRAME_WRITE_TIMEOUT_MS)))?;
        tracing::debug!(%addr, "virtual card connected to vpcd");
        Ok(VpcdLink {
            stream,
            quickack: true,
        })
    }

    /// Turn TCP_QUICKACK off (to measure what it saves); it is on by default.
    pub fn set_quickack(&mut self, on: bool) {
        self.quickack = on;
    }

    /// TCP_QUICKACK is not sticky: the kernel leaves quick-ack mode on its own, so it is set
    /// again before every read.
    fn arm_quickack(&self) {
        if self.quickack {
            if let Err(e) = socket2::SockRef::from(&self.stream).set_tcp_quickack(true) {
                tracing::trace!(error = %e, "TCP_QUICKACK not set");
            }
        }
    }

    /// Wait up to `poll` for the next message. `Ok(false)` when none came.
    fn await_message(&mut self, poll: Duration) -> Result<bool, VpcdError> {
        self.stream.set_read_timeout(Some(poll))?;
        self.arm_quickack();
        let mut one = [0u8; 1];
        loop {
            return match self.stream.peek(&mut one) {
                Ok(0) => Err(VpcdError::Closed),
                Ok(_) => Ok(true),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    Ok(false)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => Err(e.into()),
            };
        }
    }

    fn answer(&mut self, data: &[u8]) -> Result<(), VpcdError> {
        write_frame(&mut self.stream, data)
    }

    fn answer_status(&mut self, sw: u16) -> Result<(), VpcdError> {
        self.answer(&sw.to_be_bytes())
    }

    /// Serve one presentation of `card`: answer vpcd until the card pulls itself away, the
    /// `leave` test says the holder takes it away, or vpcd closes. Leaving closes the socket.
    pub fn serve<C: VirtualCard + ?Sized>(
        mut self,
        card: &mut C,
        leave: &mut dyn FnMut(&Activity) -> bool,
    ) -> Result<SessionEnd, VpcdError> {
        let start = Instant::now();
        let mut last = start;
        let mut apdus = 0u64;
        let mut frame = [0u8; FRAME_IN_BYTES_MAX];
        let mut resp = Response::default();
        let mut out = [0u8; FRAME_OUT_BYTES_MAX];
        let poll = Duration::from_millis(IDLE_POLL_MS);
        loop {
            match self.await_message(poll) {
                Ok(true) => {}
                Ok(false) => {
                    let now = Instant::now();
                    let a = Activity {
                        apdus,
                        idle: now - last,
                        present_for: now - start,
                    };
                    if leave(&a) {
                        tracing::debug!(apdus, "virtual card withdrawn");
                        let _ = self.stream.shutdown(std::net::Shutdown::Both);
                        return Ok(SessionEnd::Withdrawn);
                    }
                    continue;
                }
                Err(VpcdError::Closed) => return Ok(SessionEnd::ReaderClosed),
                Err(e) => return Err(e),
            }
            self.stream
                .set_read_timeout(Some(Duration::from_millis(FRAME_READ_TIMEOUT_MS)))?;
            self.arm_quickack();
            let n = match read_frame(&mut self.stream, &mut frame) {
                Ok(n) => n,
                Err(VpcdError::Closed) => return Ok(SessionEnd::ReaderClosed),
                Err(e @ VpcdError::FrameTooLong { .. }) => {
                    tracing::warn!(error = %e, "command refused");
                    self.answer_status(sw::WRONG_LENGTH)?;
                    continue;
                }
                Err(VpcdError::EmptyFrame) => {
                    tracing::warn!("empty frame from vpcd ignored");
                    continue;
                }
                Err(e) => return Err(e),
            };
            last = Instant::now();
            match parse_message(&frame[..n]) {
                Ok(Message::PowerOff) => card.power_off(),
                Ok(Message::PowerOn | Message::Reset) => card.reset(),
                Ok(Message::GetAtr) => {
                    let mut atr = [0u8; ATR_BYTES_MAX];
                    let a = card.atr();
                    let len = a.len().min(ATR_BYTES_MAX);
                    atr[..len].copy_from_slice(&a[..len]);
                    self.answer(&atr[..len])?;
                }
                Ok(Message::Apdu(cmd)) => {
                    apdus += 1;
                    match card.transmit(cmd, &mut resp) {
                        Ok(()) => {
                            let d = resp.data.len();
                            out[..d].copy_from_slice(&resp.data);
                            out[d..d + 2].copy_from_slice(&resp.sw.to_be_bytes());
                            self.answer(&out[..d + 2])?;
                        }
                        Err(ChannelError::Removed) => {
                            tracing::debug!(apdus, "virtual card left the field mid-dialogue");
                            let _ = self.stream.shutdown(std::net::Shutdown::Both);
                            return Ok(SessionEnd::CardLeft);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "virtual card failed to answer");
                            self.answer_status(0x6F00)?;
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "vpcd message ignored"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn atrs_have_a_valid_check_byte() {
        for atr in [&SIM_CARD_ATR[..], &SIM_PSAM_ATR[..]] {
            assert_eq!(atr[0], 0x3B);
            assert_eq!(
                usize::from(atr[1] & 0x0F),
                atr.len() - 5,
                "historical bytes"
            );
            assert_eq!(atr[1..].iter().fold(0u8, |x, b| x ^ b), 0, "TCK");
        }
    }

    #[test]
    fn messages_decode() {
        assert_eq!(parse_message(&[0]).unwrap(), Message::PowerOff);
        assert_eq!(parse_message(&[1]).unwrap(), Message::PowerOn);
        assert_eq!(parse_message(&[2]).unwrap(), Message::Reset);
        assert_eq!(parse_message(&[4]).unwrap(), Message::GetAtr);
        assert!(matches!(
            parse_message(&[3]),
            Err(VpcdError::UnknownControl(3))
        ));
        assert!(matches!(parse_message(&[]), Err(VpcdError::EmptyFrame)));
        assert_eq!(
            parse_message(&[0x00, 0xA4]).unwrap(),
            Message::Apdu(&[0x00, 0xA4])
        );
    }

    #[test]
    fn frames_round_trip() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &[0x90, 0x00]).unwrap();
        assert_eq!(wire, [0, 2, 0x90, 0x00]);
        let mut buf = [0u8; FRAME_IN_BYTES_MAX];
        let n = read_frame(&mut &wire[..], &mut buf).unwrap();
        assert_eq!(&buf[..n], &[0x90, 0x00]);
    }

    #[test]
    fn malformed_frames_are_typed_errors() {
        let mut buf = [0u8; FRAME_IN_BYTES_MAX];
        // Nothing at all: the reader hung up between frames.
        assert!(matches!(
            read_frame(&mut &[][..], &mut buf),
            Err(VpcdError::Closed)
        ));
        // Half a length prefix.
        assert!(matches!(
            read_frame(&mut &[0u8][..], &mut buf),
            Err(VpcdError::Truncated {
                got: 1,
                expected: 2
            })
        ));
        // Zero length.
        assert!(matches!(
            read_frame(&mut &[0u8, 0][..], &mut buf),
            Err(VpcdError::EmptyFrame)
        ));
        // Length beyond what follows.
        assert!(matches!(
            read_frame(&mut &[0u8, 5, 1, 2][..], &mut buf),
            Err(VpcdError::Truncated {
                got: 2,
                expected: 5
            })
        ));
        // The longest possible length, nothing behind it.
        assert!(matches!(
            read_frame(&mut &[0xFFu8, 0xFF][..], &mut buf),
            Err(VpcdError::Truncated {
                got: 0,
                expected: 65535
            })
        ));
        // Too long for a short APDU: read past, stream stays in step.
        let mut wire = framed(&[0xAA; FRAME_IN_BYTES_MAX + 1]);
        wire.extend(framed(&[0x00, 0xB0]));
        let mut r = &wire[..];
        assert!(matches!(
            read_frame(&mut r, &mut buf),
            Err(VpcdError::FrameTooLong { len: 262, max: 261 })
        ));
        assert_eq!(read_frame(&mut r, &mut buf).unwrap(), 2);
        // Output bounds.
        let mut sink = Vec::new();
        assert!(matches!(
            write_frame(&mut sink, &[0u8; FRAME_OUT_BYTES_MAX + 1]),
            Err(VpcdError::FrameTooLong { .. })
        ));
        assert!(matches!(
            write_frame(&mut sink, &[]),
            Err(VpcdError::EmptyFrame)
        ));
    }

    #[test]
    fn only_loopback_addresses() {
        assert_eq!(
            parse_addr("127.0.0.1:35963").unwrap(),
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, 35963)
        );
        assert_eq!(parse_addr("35964").unwrap().port(), 35964);
        assert!(matches!(
            parse_addr("10.0.0.1:35963"),
            Err(VpcdError::NotLoopback(_))
        ));
        assert!(matches!(
            parse_addr("[::1]:35963"),
            Err(VpcdError::NotLoopback(_))
        ));
        assert!(matches!(
            parse_addr("localhost:35963"),
            Err(VpcdError::BadAddress(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let mut buf = [0u8; FRAME_IN_BYTES_MAX];
            let mut r = &bytes[..];
            for _ in 0..64 {
                match read_frame(&mut r, &mut buf) {
                    Ok(n) => { let _ = parse_message(&buf[..n]); }
                    Err(VpcdError::FrameTooLong { .. }) | Err(VpcdError::EmptyFrame) => {}
                    Err(_) => break,
                }
            }
        }
    }
}
