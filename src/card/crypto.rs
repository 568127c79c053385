//! PBOC electronic-purse cryptography as JT/T 978 uses it, composed from RustCrypto's DES,
//! Triple-DES, CBC-MAC and Retail MAC (nothing here implements a cipher).
//!
//! | what | how |
//! | --- | --- |
//! | card key from a master key | `DK = 3DES_MK(D) ‖ 3DES_MK(!D)`, D = last 8 bytes of the application serial |
//! | purchase session key SESPK | `3DES_DPK(card random(4) ‖ offline counter(2) ‖ terminal seq low 2 bytes)`, 8 bytes |
//! | MAC1 | `MAC_SESPK(amount(4) ‖ type(1) ‖ terminal no(6) ‖ date(4) ‖ time(3))` |
//! | MAC2 | `MAC_SESPK(amount(4))` |
//! | TAC | `MAC_(DTK_left ⊕ DTK_right)(amount(4) ‖ type(1) ‖ terminal no(6) ‖ terminal seq(4) ‖ date(4) ‖ time(3))` |
//! | secure-messaging MAC (APPLICATION BLOCK) | Retail MAC (ISO 9797-1 alg. 3) under the diversified maintenance key, IV = card challenge(4) ‖ 00000000 |
//!
//! MACs are ISO 9797-1 algorithm 1 (single-DES CBC-MAC) with padding method 2 (`80 00..`,
//! always added), IV zero unless stated, and the leftmost 4 bytes are kept. Sources: PBOC 2.0
//! part 2 (JR/T 0025.2) electronic purse chapter and its session-key appendix, which JT/T 978
//! adopts for the transport purse; the notes in shared/specs/t-union-card.md.

use cbc_mac::CbcMac;
use des::cipher::{BlockCipherEncrypt, KeyInit};
use des::{Des, TdesEde2};
use retail_mac::{Mac, RetailMac};

/// Longest message a MAC is computed over here (an APDU body plus padding).
pub const MAC_MESSAGE_BYTES_MAX: usize = 272;

/// A 16-byte double-length DES key (DPK, DTK, DAMK, master keys).
pub type Key16 = [u8; 16];

/// Encrypt one block under a double-length key.
pub fn tdes_encrypt(key: &Key16, block: [u8; 8]) -> [u8; 8] {
    let cipher = TdesEde2::new(key.into());
    let mut b = block.into();
    cipher.encrypt_block(&mut b);
    b.into()
}

/// PBOC key diversification: the card's own key from the issuer's master key.
pub fn diversify(master: &Key16, data: [u8; 8]) -> Key16 {
    let left = tdes_encrypt(master, data);
    let right = tdes_encrypt(master, data.map(|b| !b));
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&left);
    out[8..].copy_from_slice(&right);
    out
}

/// The purchase session key SESPK.
pub fn purchase_session_key(
    dpk: &Key16,
    card_random: [u8; 4],
    offline_counter: u16,
    terminal_seq: u32,
) -> [u8; 8] {
    let mut input = [0u8; 8];
    input[..4].copy_from_slice(&card_random);
    input[4..6].copy_from_slice(&offline_counter.to_be_bytes());
    input[6..].copy_from_slice(&terminal_seq.to_be_bytes()[2..]);
    tdes_encrypt(dpk, input)
}

/// Pads with ISO 9797-1 method 2 into a stack buffer and folds the IV into the first block,
/// so that a plain (zero-IV) CBC-MAC of the result equals the CBC-MAC of the message under IV.
fn padded(iv: [u8; 8], parts: &[&[u8]]) -> heapless::Vec<u8, MAC_MESSAGE_BYTES_MAX> {
    let mut buf = heapless::Vec::new();
    for part in parts {
        // A message longer than the bound is a bug in the caller: every MAC input here is a
        // fixed APDU layout well under it.
        buf.extend_from_slice(part)
            .expect("MAC input within MAC_MESSAGE_BYTES_MAX");
    }
    buf.push(0x80)
        .expect("MAC input within MAC_MESSAGE_BYTES_MAX");
    while buf.len() % 8 != 0 {
        buf.push(0).expect("MAC input within MAC_MESSAGE_BYTES_MAX");
    }
    for (b, v) in buf.iter_mut().zip(iv) {
        *b ^= v;
    }
    buf
}

fn left4(full: &[u8]) -> [u8; 4] {
    [full[0], full[1], full[2], full[3]]
}

/// Single-DES CBC-MAC (ISO 9797-1 alg. 1, padding 2), leftmost 4 bytes.
pub fn des_mac(key: &[u8; 8], iv: [u8; 8], parts: &[&[u8]]) -> [u8; 4] {
    let msg = padded(iv, parts);
    let mut mac = <CbcMac<Des> as KeyInit>::new(key.into());
    mac.update(&msg);
    left4(&mac.finalize().into_bytes())
}

/// Retail MAC (ISO 9797-1 alg. 3, padding 2) under a double-length key, leftmost 4 bytes.
pub fn retail_mac(key: &Key16, iv: [u8; 8], parts: &[&[u8]]) -> [u8; 4] {
    let msg = padded(iv, parts);
    let mut mac = <RetailMac<Des> as KeyInit>::new(key.into());
    mac.update(&msg);
    left4(&mac.finalize().into_bytes())
}

/// The TAC key: the two halves of the card's DTK combined.
pub fn tac_key(dtk: &Key16) -> [u8; 8] {
    let mut k = [0u8; 8];
    for (i, b) in k.iter_mut().enumerate() {
        *b = dtk[i] ^ dtk[i + 8];
    }
    k
}

/// Inputs common to MAC1 and the TAC of one purchase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PurchaseData {
    pub amount_fen: u32,
    pub tx_type: u8,
    pub terminal_no: [u8; 6],
    pub terminal_seq: u32,
    /// YYYYMMDDhhmmss in BCD, local time.
    pub datetime: [u8; 7],
}

pub fn mac1(sespk: &[u8; 8], p: &PurchaseData) -> [u8; 4] {
    des_mac(
        sespk,
        [0; 8],
        &[
            &p.amount_fen.to_be_bytes(),
            &[p.tx_type],
            &p.terminal_no,
            &p.datetime,
        ],
    )
}

pub fn mac2(sespk: &[u8; 8], amount_fen: u32) -> [u8; 4] {
    des_mac(sespk, [0; 8], &[&amount_fen.to_be_bytes()])
}

pub fn tac(dtk: &Key16, p: &PurchaseData) -> [u8; 4] {
    des_mac(
        &tac_key(dtk),
        [0; 8],
        &[
            &p.amount_fen.to_be_bytes(),
            &[p.tx_type],
            &p.terminal_no,
            &p.terminal_seq.to_be_bytes(),
            &p.datetime,
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use des::cipher::BlockCipherEncrypt;

    fn des_block(key: &[u8; 8], block: [u8; 8]) -> [u8; 8] {
        let c = Des::new(key.into());
        let mut b = block.into();
        c.encrypt_block(&mut b);
        b.into()
    }

    #[test]
    fn des_mac_is_cbc_over_padded_blocks_with_iv() {
        // Two blocks computed by hand with the block cipher: (m ‖ 80..) with IV folded in.
        let key = [0x13, 0x34, 0x57, 0x79, 0x9B, 0xBC, 0xDF, 0xF1];
        let iv = [1, 2, 3, 4, 0, 0, 0, 0];
        let m = [0x11u8; 8];
        let b1 = des_block(&key, std::array::from_fn(|i| m[i] ^ iv[i]));
        let pad = [0x80, 0, 0, 0, 0, 0, 0, 0];
        let b2 = des_block(&key, std::array::from_fn(|i| b1[i] ^ pad[i]));
        assert_eq!(des_mac(&key, iv, &[&m]), left4(&b2));
    }

    #[test]
    fn retail_mac_single_block_is_des_then_decrypt_encrypt() {
        let key: Key16 = *b"0123456789ABCDEF";
        let m = [0xA5u8; 4];
        let mut block = [0u8; 8];
        block[..4].copy_from_slice(&m);
        block[4] = 0x80;
        // Retail MAC of one block equals 3DES (EDE2) of that block.
        assert_eq!(
            retail_mac(&key, [0; 8], &[&m]),
            left4(&tdes_encrypt(&key, block))
        );
    }

    #[test]
    fn diversified_halves_differ_and_depend_on_data() {
        let mk: Key16 = [7; 16];
        let a = diversify(&mk, [1; 8]);
        let b = diversify(&mk, [2; 8]);
        assert_ne!(a, b);
        assert_ne!(a[..8], a[8..]);
    }
}
