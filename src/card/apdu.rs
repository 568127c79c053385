//! ISO 7816-4 APDUs: the command and response buffers, the status words this validator
//! acts on, and the [`CardChannel`] trait through which the engine reaches any card or SAM
//! (a simulation, a PC/SC reader).
//!
//! Buffers are fixed-size (`heapless`), so a dialogue allocates nothing.

/// Longest command APDU: header (4) + Lc (1) + 255 data bytes + Le (1).
pub const COMMAND_BYTES_MAX: usize = 261;
/// Longest response data (short APDUs: 256 bytes), status word not counted.
pub const RESPONSE_DATA_BYTES_MAX: usize = 256;

pub type Command = heapless::Vec<u8, COMMAND_BYTES_MAX>;

/// Status words (SW1 SW2) that the transport application and the PSAM use.
pub mod sw {
    pub const OK: u16 = 0x9000;
    /// Wrong length (Le / Lc).
    pub const WRONG_LENGTH: u16 = 0x6700;
    /// Security status not satisfied.
    pub const SECURITY_NOT_SATISFIED: u16 = 0x6982;
    /// Conditions of use not satisfied (e.g. DEBIT without INITIALIZE).
    pub const CONDITIONS_NOT_SATISFIED: u16 = 0x6985;
    /// Secure messaging MAC wrong (MAC2 or a command MAC).
    pub const SM_DATA_INCORRECT: u16 = 0x6988;
    /// Function not supported: the application is blocked (temporarily) at SELECT.
    pub const FUNCTION_NOT_SUPPORTED: u16 = 0x6A81;
    /// File or application not found.
    pub const FILE_NOT_FOUND: u16 = 0x6A82;
    /// Record not found.
    pub const RECORD_NOT_FOUND: u16 = 0x6A83;
    /// Incorrect P1 P2.
    pub const WRONG_P1P2: u16 = 0x6A86;
    /// Instruction not supported.
    pub const INS_NOT_SUPPORTED: u16 = 0x6D00;
    /// Class not supported.
    pub const CLA_NOT_SUPPORTED: u16 = 0x6E00;
    /// PBOC: insufficient balance in the purse.
    pub const INSUFFICIENT_BALANCE: u16 = 0x9401;
    /// PBOC: the transaction counter has reached its limit.
    pub const COUNTER_LIMIT: u16 = 0x9402;
    /// PBOC: key index not supported.
    pub const KEY_INDEX_UNSUPPORTED: u16 = 0x9403;
    /// PBOC: GET TRANSACTION PROOF found no such transaction.
    pub const NO_SUCH_TRANSACTION: u16 = 0x9406;
    /// PBOC: MAC1 (or another MAC) did not verify.
    pub const MAC_INVALID: u16 = 0x9302;
    /// PBOC: the application is permanently blocked.
    pub const APP_PERMANENTLY_BLOCKED: u16 = 0x9303;
}

/// One response APDU: data and status word, in a fixed buffer the caller owns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    pub data: heapless::Vec<u8, RESPONSE_DATA_BYTES_MAX>,
    pub sw: u16,
}

impl Response {
    pub fn clear(&mut self) {
        self.data.clear();
        self.sw = 0;
    }

    /// Fill from raw response bytes (data ‖ SW1 SW2), as a reader returns them.
    pub fn set_raw(&mut self, raw: &[u8]) -> Result<(), ChannelError> {
        self.clear();
        let n = raw.len();
        if n < 2 {
            return Err(ChannelError::MalformedResponse);
        }
        self.data
            .extend_from_slice(&raw[..n - 2])
            .map_err(|_| ChannelError::MalformedResponse)?;
        self.sw = u16::from_be_bytes([raw[n - 2], raw[n - 1]]);
        Ok(())
    }

    /// Set data and status (used by simulations).
    pub fn set(&mut self, data: &[u8], sw: u16) {
        self.data.clear();
        // Simulations answer at most RESPONSE_DATA_BYTES_MAX bytes by construction.
        self.data
            .extend_from_slice(data)
            .expect("response within RESPONSE_DATA_BYTES_MAX");
        self.sw = sw;
    }

    pub fn status(&mut self, sw: u16) {
        self.data.clear();
        self.sw = sw;
    }
}

/// How the link to a card or SAM failed (as opposed to the card answering with an error).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The card left the field (or was never there).
    #[error("card removed")]
    Removed,
    /// The reader or its driver failed.
    #[error("reader error: {0}")]
    Reader(&'static str),
    /// The answer was shorter than a status word or longer than a short APDU.
    #[error("malformed response from the reader")]
    MalformedResponse,
}

/// A channel to one card or SAM: send a command APDU, receive its response.
pub trait CardChannel {
    fn transmit(&mut self, command: &[u8], response: &mut Response) -> Result<(), ChannelError>;
}

impl<T: CardChannel + ?Sized> CardChannel for &mut T {
    fn transmit(&mut self, command: &[u8], response: &mut Response) -> Result<(), ChannelError> {
        (**self).transmit(command, response)
    }
}

/// Build a command APDU: header, optional data (with Lc) and optional Le.
pub fn command(cla: u8, ins: u8, p1: u8, p2: u8, data: &[u8], le: Option<u8>) -> Command {
    let mut c = Command::new();
    // Every command built in this crate has at most 255 data bytes, within COMMAND_BYTES_MAX.
    c.extend_from_slice(&[cla, ins, p1, p2])
        .expect("header fits");
    if !data.is_empty() {
        c.push(data.len() as u8).expect("Lc fits");
        c.extend_from_slice(data)
            .expect("data within COMMAND_BYTES_MAX");
    }
    if let Some(le) = le {
        c.push(le).expect("Le fits");
    }
    c
}

/// A parsed command APDU (for simulations): header, data, Le.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedCommand<'a> {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    pub data: &'a [u8],
    pub le: Option<u8>,
}

/// Parse a short command APDU (cases 1–4). None when the bytes are not a valid APDU.
pub fn parse_command(bytes: &[u8]) -> Option<ParsedCommand<'_>> {
    let &[cla, ins, p1, p2] = bytes.first_chunk::<4>()?;
    let body = &bytes[4..];
    let (data, le) = match body.len() {
        0 => (&body[..0], None),
        1 => (&body[..0], Some(body[0])),
        n => {
            let lc = usize::from(body[0]);
            if lc == 0 {
                return None;
            }
            if n == 1 + lc {
                (&body[1..], None)
            } else if n == 2 + lc {
                (&body[1..1 + lc], Some(body[1 + lc]))
            } else {
                return None;
            }
        }
    };
    Some(ParsedCommand {
        cla,
        ins,
        p1,
        p2,
        data,
        le,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_round_trips_through_parse() {
        let c = command(0x80, 0x50, 0x03, 0x02, &[1, 2, 3], Some(0x0F));
        let p = parse_command(&c).unwrap();
        assert_eq!(
            (p.cla, p.ins, p.p1, p.p2, p.data, p.le),
            (0x80, 0x50, 3, 2, &[1u8, 2, 3][..], Some(0x0F))
        );
        assert!(parse_command(&[0x00, 0xA4]).is_none());
        assert!(parse_command(&[0, 0xB0, 0x95, 0, 5, 1]).is_none());
    }

    #[test]
    fn raw_response_needs_a_status_word() {
        let mut r = Response::default();
        assert_eq!(r.set_raw(&[0x90]), Err(ChannelError::MalformedResponse));
        r.set_raw(&[1, 2, 0x90, 0x00]).unwrap();
        assert_eq!((r.data.as_slice(), r.sw), (&[1u8, 2][..], sw::OK));
        assert_eq!(r.set_raw(&[0u8; 300]), Err(ChannelError::MalformedResponse));
    }
}
