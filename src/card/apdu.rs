//! ISO 7816-4 APDUs: the command and response buffers, the status words this validator
//! acts on, and the [`CardChannel`] trait through which the engine reaches any card or SAM
//! (a simulation, a PC/SC reader).
//!
//! Buffers are fixed-size (`heapless`), so a dialogue allocates nothing.
//!
//! ## T=0 answers: `61xx` and `6Cxx`, handled once, here
//!
//! A contact card on T=0 (most PSAMs) cannot send data and a status word in one answer to a
//! command that carries data itself (case 4), and cannot return fewer bytes than Le asked:
//!
//! | status | meaning (ISO 7816-4 5.1.3, ISO 7816-3 12.2) | what [`exchange`] does |
//! | --- | --- | --- |
//! | `61 xx` | xx more bytes wait (`00`: 256) | GET RESPONSE `00 C0 00 00 xx`, appending its data; again while `61xx` comes, at most [`GET_RESPONSE_CHAIN_MAX`] times |
//! | `6C xx` | wrong Le: xx bytes are available | send the same command once more with Le = xx |
//!
//! Both the PSAM ([`super::psam`]) and the card session ([`super::tunion`]) send every command
//! through [`exchange`], so a T=0 reader works for either and decisions do not change. A card
//! that keeps answering `61xx`, answers `6Cxx` twice, answers `6Cxx` to a command without
//! Le, or chains more than a short APDU's 256 bytes is a typed [`ChannelError`], never a loop.
//! No allocation: the parts are gathered in the caller's [`Response`] and one on the stack.

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
    /// `61xx` kept coming after [`GET_RESPONSE_CHAIN_MAX`] GET RESPONSE commands.
    #[error("more than {GET_RESPONSE_CHAIN_MAX} GET RESPONSE commands for one answer")]
    GetResponseLoop,
    /// The parts of a GET RESPONSE chain add up to more than a short APDU's 256 bytes.
    #[error("chained answer longer than {RESPONSE_DATA_BYTES_MAX} bytes")]
    ChainedResponseTooLong,
    /// `6Cxx` to a command without Le, or again to the command resent with Le = xx.
    #[error("wrong length (6Cxx) that resending with the given Le does not settle")]
    WrongLengthLoop,
}

/// Longest chain of GET RESPONSE commands fetched for one command's answer (`61xx`). A short
/// answer is at most 256 bytes, which a card hands over in one GET RESPONSE; a few more allow
/// cards that hand it out in pieces, and bound a card that never stops saying `61xx`.
pub const GET_RESPONSE_CHAIN_MAX: usize = 8;
/// Status byte 1 of "`xx` more bytes available: fetch with GET RESPONSE" (ISO 7816-4).
pub const SW1_BYTES_AVAILABLE: u8 = 0x61;
/// Status byte 1 of "wrong Le: `xx` bytes available, send again with Le = xx" (ISO 7816-4).
pub const SW1_WRONG_LE: u8 = 0x6C;

fn sw1(sw_: u16) -> u8 {
    (sw_ >> 8) as u8
}

fn sw2(sw_: u16) -> u8 {
    sw_ as u8
}

/// GET RESPONSE for `le` bytes (`00`: 256).
pub fn get_response(le: u8) -> [u8; 5] {
    [0x00, 0xC0, 0x00, 0x00, le]
}

/// The same command with its Le replaced by `le`; `None` when it has no Le (case 1 or 3) or
/// is not a short APDU.
pub fn with_le(cmd: &[u8], le: u8) -> Option<Command> {
    parse_command(cmd)?.le?;
    let mut c = Command::new();
    // The command parsed as a short APDU, so it is at most COMMAND_BYTES_MAX bytes long.
    c.extend_from_slice(cmd).ok()?;
    *c.last_mut()? = le;
    Some(c)
}

/// Send `cmd` once and, if the answer is `6Cxx`, once more with Le = xx. A second `6Cxx` (or
/// one to a command without Le) is [`ChannelError::WrongLengthLoop`].
fn transmit_settling_le<C: CardChannel + ?Sized>(
    ch: &mut C,
    cmd: &[u8],
    resp: &mut Response,
) -> Result<(), ChannelError> {
    ch.transmit(cmd, resp)?;
    if sw1(resp.sw) != SW1_WRONG_LE {
        return Ok(());
    }
    let again = with_le(cmd, sw2(resp.sw)).ok_or(ChannelError::WrongLengthLoop)?;
    tracing::trace!(
        le = sw2(resp.sw),
        "6Cxx: command sent again with the card's Le"
    );
    ch.transmit(&again, resp)?;
    if sw1(resp.sw) == SW1_WRONG_LE {
        return Err(ChannelError::WrongLengthLoop);
    }
    Ok(())
}

/// Send one command and return its whole answer, as a T=1 or contactless card gives it:
/// `6Cxx` resent with Le = xx, `61xx` fetched by GET RESPONSE (see the module doc). Every
/// command of the PSAM and card dialogues goes through here.
pub fn exchange<C: CardChannel + ?Sized>(
    ch: &mut C,
    cmd: &[u8],
    resp: &mut Response,
) -> Result<(), ChannelError> {
    transmit_settling_le(ch, cmd, resp)?;
    let mut fetched = 0;
    while sw1(resp.sw) == SW1_BYTES_AVAILABLE {
        if fetched == GET_RESPONSE_CHAIN_MAX {
            return Err(ChannelError::GetResponseLoop);
        }
        fetched += 1;
        let mut part = Response::default();
        transmit_settling_le(ch, &get_response(sw2(resp.sw)), &mut part)?;
        resp.data
            .extend_from_slice(&part.data)
            .map_err(|_| ChannelError::ChainedResponseTooLong)?;
        resp.sw = part.sw;
    }
    Ok(())
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

    /// A card that answers from a script, one raw answer per command, and logs the commands.
    struct Scripted {
        answers: Vec<Vec<u8>>,
        sent: Vec<Vec<u8>>,
    }

    impl Scripted {
        fn new(answers: &[&[u8]]) -> Self {
            Scripted {
                answers: answers.iter().map(|a| a.to_vec()).collect(),
                sent: Vec::new(),
            }
        }
    }

    impl CardChannel for Scripted {
        fn transmit(&mut self, cmd: &[u8], r: &mut Response) -> Result<(), ChannelError> {
            self.sent.push(cmd.to_vec());
            let a = self
                .answers
                .get(self.sent.len() - 1)
                .ok_or(ChannelError::Removed)?;
            r.set_raw(a)
        }
    }

    #[test]
    fn answer_61xx_is_fetched_with_get_response_and_chained() {
        let mac1 = command(0x80, 0x70, 0, 0, &[0; 36], Some(8));
        let mut card = Scripted::new(&[
            &[0x61, 0x08],
            &[1, 2, 3, 0x61, 0x05],
            &[4, 5, 6, 7, 8, 0x90, 0],
        ]);
        let mut r = Response::default();
        exchange(&mut card, &mac1, &mut r).unwrap();
        assert_eq!(
            (r.data.as_slice(), r.sw),
            (&[1u8, 2, 3, 4, 5, 6, 7, 8][..], sw::OK)
        );
        assert_eq!(card.sent[1], [0x00, 0xC0, 0x00, 0x00, 0x08]);
        assert_eq!(card.sent[2], [0x00, 0xC0, 0x00, 0x00, 0x05]);
        // Data before the 61xx (T=1 chaining) is kept in front.
        let mut card = Scripted::new(&[&[9, 0x61, 0x01], &[8, 0x90, 0x00]]);
        exchange(&mut card, &mac1, &mut r).unwrap();
        assert_eq!(r.data.as_slice(), &[9, 8]);
    }

    #[test]
    fn answer_6cxx_resends_the_command_with_the_cards_le() {
        let read = command(0x00, 0xB0, 0x96, 0x00, &[], Some(0));
        let mut card = Scripted::new(&[&[0x6C, 0x06], &[1, 2, 3, 4, 5, 6, 0x90, 0x00]]);
        let mut r = Response::default();
        exchange(&mut card, &read, &mut r).unwrap();
        assert_eq!(card.sent[1], [0x00, 0xB0, 0x96, 0x00, 0x06]);
        assert_eq!((r.data.len(), r.sw), (6, sw::OK));
        // Case 4: only Le changes, the data stays.
        let c4 = command(0x80, 0xFA, 0x05, 0x00, &[7; 9], Some(0x10));
        let mut card = Scripted::new(&[&[0x6C, 0x04], &[1, 2, 3, 4, 0x90, 0x00]]);
        exchange(&mut card, &c4, &mut r).unwrap();
        assert_eq!(&card.sent[1][..c4.len() - 1], &c4[..c4.len() - 1]);
        assert_eq!(card.sent[1].last(), Some(&0x04));
        // A GET RESPONSE with the wrong Le is settled the same way.
        let mut card = Scripted::new(&[&[0x61, 0x00], &[0x6C, 0x02], &[1, 2, 0x90, 0x00]]);
        exchange(&mut card, &c4, &mut r).unwrap();
        assert_eq!(card.sent[2], [0x00, 0xC0, 0x00, 0x00, 0x02]);
        assert_eq!(r.data.as_slice(), &[1, 2]);
    }

    #[test]
    fn looping_or_malformed_t0_answers_are_typed_errors() {
        let read = command(0x00, 0xB0, 0x96, 0x00, &[], Some(6));
        let mut r = Response::default();
        let mut card = Scripted::new(&[&[0x6C, 0x06], &[0x6C, 0x06]]);
        assert_eq!(
            exchange(&mut card, &read, &mut r),
            Err(ChannelError::WrongLengthLoop)
        );
        let no_le = command(0x80, 0x72, 0, 0, &[1, 2, 3, 4], None);
        let mut card = Scripted::new(&[&[0x6C, 0x04]]);
        assert_eq!(
            exchange(&mut card, &no_le, &mut r),
            Err(ChannelError::WrongLengthLoop)
        );
        assert_eq!(card.sent.len(), 1);
        let forever: Vec<&[u8]> = vec![&[0x61, 0x01]; 1 + GET_RESPONSE_CHAIN_MAX + 4];
        let mut card = Scripted::new(&forever);
        assert_eq!(
            exchange(&mut card, &read, &mut r),
            Err(ChannelError::GetResponseLoop)
        );
        assert_eq!(card.sent.len(), 1 + GET_RESPONSE_CHAIN_MAX, "bounded");
        let big = [[0u8; 200].as_slice(), &[0x61, 0x00]].concat();
        let mut card = Scripted::new(&[&big, &big]);
        assert_eq!(
            exchange(&mut card, &read, &mut r),
            Err(ChannelError::ChainedResponseTooLong)
        );
        // A card that leaves mid-chain is a removal, as anywhere else.
        let mut card = Scripted::new(&[&[0x61, 0x04]]);
        assert_eq!(
            exchange(&mut card, &read, &mut r),
            Err(ChannelError::Removed)
        );
    }

    proptest::proptest! {
        #[test]
        fn exchange_never_panics_and_stays_bounded(
            answers in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..260), 0..24),
            le in proptest::option::of(proptest::num::u8::ANY),
        ) {
            let cmd = command(0x80, 0x70, 0, 0, &[1, 2, 3], le);
            let refs: Vec<&[u8]> = answers.iter().map(|a| a.as_slice()).collect();
            let mut card = Scripted::new(&refs);
            let mut r = Response::default();
            let result = exchange(&mut card, &cmd, &mut r);
            proptest::prop_assert!(card.sent.len() <= 2 + 2 * GET_RESPONSE_CHAIN_MAX);
            if result.is_ok() {
                proptest::prop_assert!(r.sw >> 8 != 0x61 && r.sw >> 8 != 0x6C);
            }
        }
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
