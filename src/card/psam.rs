//! The validator's secure access module (PSAM): it holds the purchase and maintenance master
//! keys, computes MAC1, checks MAC2, keeps the terminal transaction sequence (TTS), and
//! computes the MAC that blocks a dead card.
//!
//! | step | APDU | answer |
//! | --- | --- | --- |
//! | SELECT the purse DF | `00 A4 00 00 02 10 01` | `90 00` |
//! | READ BINARY 0x16 | `00 B0 96 00 00` (Le `00`: the whole file) | terminal number (6, BCD); on T=0 `6C 06` first, and the command is sent again with Le `06` |
//! | MAC1 (INIT FOR PURCHASE) | `80 70 00 00 24` + 36 bytes (below), Le `08` | TTS (4), MAC1 (4) |
//! | MAC2 (CREDIT SAM FOR PURCHASE) | `80 72 00 00 04` MAC2 | `90 00`; `69 88` MAC2 wrong |
//! | INIT FOR DESCRYPT | `80 1A 45 01 10` card serial (8) issuer (8) | `90 00`: maintenance key diversified for the card |
//! | CIPHER DATA (MAC) | `80 FA 05 00 Lc` IV (8) data, Le `04` | MAC (4) |
//!
//! MAC1 input (36 bytes): card random (4), offline counter (2), amount (4), transaction type
//! (1), date-time (7), key version (1), algorithm id (1), last 8 bytes of the card serial (8),
//! issuer id's first 4 bytes ‖ `FF FF FF FF` (8).
//!
//! Every command goes through [`super::apdu::exchange`], so a PSAM on T=0 that answers its
//! case 4 commands (MAC1, CIPHER DATA) with `61xx` works as one on T=1.
//!
//! Sources: PBOC 2.0 PSAM command set as bus terminals use it (JT/T 978 secure module part);
//! shared/specs/t-union-card.md.

use super::apdu::{command, exchange, sw, CardChannel, Response};
use super::tunion::CardError;

pub const MAC1_INPUT_BYTES: usize = 36;

/// What MAC1 is computed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mac1Input {
    pub card_random: [u8; 4],
    pub offline_counter: u16,
    pub amount_fen: u32,
    pub tx_type: u8,
    pub datetime: [u8; 7],
    pub key_version: u8,
    pub alg_id: u8,
    pub card_serial8: [u8; 8],
    pub issuer8: [u8; 8],
}

impl Mac1Input {
    pub fn encode(&self) -> [u8; MAC1_INPUT_BYTES] {
        let mut d = [0u8; MAC1_INPUT_BYTES];
        d[0..4].copy_from_slice(&self.card_random);
        d[4..6].copy_from_slice(&self.offline_counter.to_be_bytes());
        d[6..10].copy_from_slice(&self.amount_fen.to_be_bytes());
        d[10] = self.tx_type;
        d[11..18].copy_from_slice(&self.datetime);
        d[18] = self.key_version;
        d[19] = self.alg_id;
        d[20..28].copy_from_slice(&self.card_serial8);
        d[28..36].copy_from_slice(&self.issuer8);
        d
    }

    pub fn decode(d: &[u8]) -> Option<Self> {
        let d: &[u8; MAC1_INPUT_BYTES] = d.try_into().ok()?;
        let arr8 = |at: usize| -> [u8; 8] { std::array::from_fn(|i| d[at + i]) };
        Some(Mac1Input {
            card_random: [d[0], d[1], d[2], d[3]],
            offline_counter: u16::from_be_bytes([d[4], d[5]]),
            amount_fen: u32::from_be_bytes([d[6], d[7], d[8], d[9]]),
            tx_type: d[10],
            datetime: std::array::from_fn(|i| d[11 + i]),
            key_version: d[18],
            alg_id: d[19],
            card_serial8: arr8(20),
            issuer8: arr8(28),
        })
    }
}

/// The issuer field of the MAC1 input: the issuer id's first 4 bytes then `FF FF FF FF`.
pub fn issuer8_for_mac(issuer: &[u8; 8]) -> [u8; 8] {
    [
        issuer[0], issuer[1], issuer[2], issuer[3], 0xFF, 0xFF, 0xFF, 0xFF,
    ]
}

/// An opened PSAM: its channel and the terminal number read from it.
pub struct Psam<C: CardChannel> {
    channel: C,
    resp: Response,
    terminal_no: [u8; 6],
    /// The terminal transaction sequence the next MAC1 will take, once a MAC1 has shown it.
    next_terminal_seq: Option<u32>,
}

impl<C: CardChannel> Psam<C> {
    /// Select the purse DF and read the terminal number.
    pub fn open(mut channel: C) -> Result<Self, CardError> {
        let mut resp = Response::default();
        exchange(
            &mut channel,
            &command(0x00, 0xA4, 0x00, 0x00, &[0x10, 0x01], None),
            &mut resp,
        )?;
        if resp.sw != sw::OK {
            return Err(CardError::Status {
                ins: 0xA4,
                sw: resp.sw,
            });
        }
        // Le 00: the whole file, whatever its length; T=0 PSAMs answer 6C06 and get it again.
        exchange(
            &mut channel,
            &command(0x00, 0xB0, 0x96, 0x00, &[], Some(0)),
            &mut resp,
        )?;
        let terminal_no = fixed::<6>(0xB0, &resp)?;
        Ok(Psam {
            channel,
            resp,
            terminal_no,
            next_terminal_seq: None,
        })
    }

    pub fn terminal_no(&self) -> [u8; 6] {
        self.terminal_no
    }

    /// The channel back (the module itself, when the validator is switched off).
    pub fn into_channel(self) -> C {
        self.channel
    }

    /// MAC1 and the terminal transaction sequence number the PSAM assigned.
    pub fn mac1(&mut self, input: &Mac1Input) -> Result<(u32, [u8; 4]), CardError> {
        // Until this MAC1 answers, the module's counter is unknown (it may have moved on).
        self.next_terminal_seq = None;
        exchange(
            &mut self.channel,
            &command(0x80, 0x70, 0x00, 0x00, &input.encode(), Some(8)),
            &mut self.resp,
        )?;
        let d = fixed::<8>(0x70, &self.resp)?;
        let terminal_seq = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
        self.next_terminal_seq = Some(terminal_seq.wrapping_add(1));
        Ok((terminal_seq, [d[4], d[5], d[6], d[7]]))
    }

    /// The terminal transaction sequence the next MAC1 should take: one more than the last
    /// MAC1's (JT/T 978 PSAMs count every MAC1). `None` before the first MAC1 or after one
    /// whose answer was lost. A guess to write ahead in a grey record, never a promise: the
    /// MAC1's own answer is what counts.
    pub fn next_terminal_seq(&self) -> Option<u32> {
        self.next_terminal_seq
    }

    /// Check the card's MAC2 for the purchase of the last MAC1.
    pub fn verify_mac2(&mut self, mac2: [u8; 4]) -> Result<(), CardError> {
        exchange(
            &mut self.channel,
            &command(0x80, 0x72, 0x00, 0x00, &mac2, None),
            &mut self.resp,
        )?;
        fixed::<0>(0x72, &self.resp).map(|_| ())
    }

    /// The MAC for a secure-messaging command to one card (APPLICATION BLOCK).
    pub fn card_command_mac(
        &mut self,
        card_serial8: [u8; 8],
        issuer8: [u8; 8],
        challenge: [u8; 4],
        header: &[u8],
    ) -> Result<[u8; 4], CardError> {
        let mut div = [0u8; 16];
        div[..8].copy_from_slice(&card_serial8);
        div[8..].copy_from_slice(&issuer8);
        exchange(
            &mut self.channel,
            &command(0x80, 0x1A, 0x45, 0x01, &div, None),
            &mut self.resp,
        )?;
        fixed::<0>(0x1A, &self.resp)?;
        let mut data: heapless::Vec<u8, 64> = heapless::Vec::new();
        data.extend_from_slice(&challenge)
            .map_err(|_| CardError::Field("MAC data"))?;
        data.extend_from_slice(&[0; 4])
            .map_err(|_| CardError::Field("MAC data"))?;
        data.extend_from_slice(header)
            .map_err(|_| CardError::Field("MAC data too long"))?;
        exchange(
            &mut self.channel,
            &command(0x80, 0xFA, 0x05, 0x00, &data, Some(4)),
            &mut self.resp,
        )?;
        fixed::<4>(0xFA, &self.resp)
    }
}

fn fixed<const N: usize>(ins: u8, r: &Response) -> Result<[u8; N], CardError> {
    if r.sw != sw::OK {
        return Err(CardError::Status { ins, sw: r.sw });
    }
    r.data.as_slice().try_into().map_err(|_| CardError::Length {
        ins,
        expected: N,
        got: r.data.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac1_input_round_trips() {
        let m = Mac1Input {
            card_random: [1, 2, 3, 4],
            offline_counter: 7,
            amount_fen: 200,
            tx_type: 9,
            datetime: [0x20, 0x26, 0x11, 0x28, 0x08, 0, 5],
            key_version: 1,
            alg_id: 0,
            card_serial8: [9; 8],
            issuer8: [1, 2, 3, 4, 0xFF, 0xFF, 0xFF, 0xFF],
        };
        assert_eq!(Mac1Input::decode(&m.encode()), Some(m));
        assert_eq!(Mac1Input::decode(&[0; 35]), None);
    }
}
