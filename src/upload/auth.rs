//! Session authentication between a validator and the depot: challenge-response over
//! HMAC-SHA256 with the terminal's own secret, and a session key that seals every later frame.
//!
//! - The secret never crosses the wire: the validator proves it knows it with
//!   `HMAC(secret, "client proof" ‖ server nonce ‖ hello)`, and the hello carries the client
//!   nonce and the terminal id. The server nonce is fresh per connection, so a recorded session
//!   replayed against a new station connection carries a proof for the wrong nonce.
//! - Both sides derive `session key = HMAC(secret, "session key" ‖ server nonce ‖ hello)`.
//!   Every later frame carries a per-direction counter (1, 2, 3...) and
//!   `HMAC(session key, direction ‖ type ‖ counter ‖ body)`: a batch or an ack cannot be forged,
//!   replayed, reordered, or moved from one session to another.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::frame::{FrameType, MAC_BYTES, NONCE_BYTES, SEAL_OVERHEAD_BYTES};

type HmacSha256 = Hmac<Sha256>;

/// Bytes of a terminal's secret.
pub const SECRET_BYTES: usize = 32;
const CLIENT_PROOF_LABEL: &[u8] = b"fare-validator depot v1 client proof\0";
const SESSION_KEY_LABEL: &[u8] = b"fare-validator depot v1 session key\0";
const STATION_KEY_LABEL: &[u8] = b"fare-validator depot v1 station key\0";

pub type Secret = [u8; SECRET_BYTES];

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length: this cannot fail.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// The key the station holds for a terminal: `HMAC(master secret, "station key" ‖ terminal
/// id)`. The bus keeps the master secret; the station's database holds only this derived
/// key, so a copy of the database (a backup) does not give away the bus's secret, nor
/// anything else the bus derives from it. Both sides authenticate with the derived key.
pub fn station_key(master: &Secret, terminal_id: &str) -> Secret {
    hmac(master, &[STATION_KEY_LABEL, terminal_id.as_bytes()])
}

/// The validator's answer to the station's challenge (`secret`: the station key).
pub fn client_proof(secret: &Secret, server_nonce: &[u8; NONCE_BYTES], hello: &[u8]) -> [u8; 32] {
    hmac(secret, &[CLIENT_PROOF_LABEL, server_nonce, hello])
}

/// Check a proof in constant time.
pub fn verify_client_proof(
    secret: &Secret,
    server_nonce: &[u8; NONCE_BYTES],
    hello: &[u8],
    proof: &[u8; 32],
) -> bool {
    let mut m = <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(CLIENT_PROOF_LABEL);
    m.update(server_nonce);
    m.update(hello);
    m.verify_slice(proof).is_ok()
}

pub fn session_key(secret: &Secret, server_nonce: &[u8; NONCE_BYTES], hello: &[u8]) -> [u8; 32] {
    hmac(secret, &[SESSION_KEY_LABEL, server_nonce, hello])
}

/// Which side of the session we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Validator,
    Station,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("sealed payload too short")]
    Short,
    #[error("session MAC does not match")]
    BadMac,
    #[error("message counter {got}, expected {expected} (replayed or reordered)")]
    BadCounter { expected: u64, got: u64 },
}

/// The session key and the counters of both directions.
pub struct Session {
    key: [u8; 32],
    role: Role,
    sent: u64,
    received: u64,
}

impl Session {
    pub fn new(key: [u8; 32], role: Role) -> Self {
        Session {
            key,
            role,
            sent: 0,
            received: 0,
        }
    }

    fn mac(&self, from: Role, ty: FrameType, counter: u64, body: &[u8]) -> [u8; MAC_BYTES] {
        let dir = [from as u8 + 1, ty as u8];
        hmac(&self.key, &[&dir, &counter.to_be_bytes(), body])
    }

    /// The payload of a sealed frame carrying `body`.
    pub fn seal(&mut self, ty: FrameType, body: &[u8]) -> Vec<u8> {
        self.sent += 1;
        let mac = self.mac(self.role, ty, self.sent, body);
        let mut out = Vec::with_capacity(body.len() + SEAL_OVERHEAD_BYTES);
        out.extend_from_slice(&self.sent.to_be_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(&mac);
        out
    }

    /// Check a sealed payload from the other side and return its body.
    pub fn open<'a>(&mut self, ty: FrameType, payload: &'a [u8]) -> Result<&'a [u8], SessionError> {
        if payload.len() < SEAL_OVERHEAD_BYTES {
            return Err(SessionError::Short);
        }
        let (head, mac) = payload.split_at(payload.len() - MAC_BYTES);
        let (counter, body) = head.split_at(8);
        let counter = u64::from_be_bytes(counter.try_into().map_err(|_| SessionError::Short)?);
        let peer = match self.role {
            Role::Validator => Role::Station,
            Role::Station => Role::Validator,
        };
        let mut m =
            <HmacSha256 as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(&[peer as u8 + 1, ty as u8]);
        m.update(&counter.to_be_bytes());
        m.update(body);
        m.verify_slice(mac).map_err(|_| SessionError::BadMac)?;
        let expected = self.received + 1;
        if counter != expected {
            return Err(SessionError::BadCounter {
                expected,
                got: counter,
            });
        }
        self.received = counter;
        Ok(body)
    }
}

/// Lower-case hex.
pub fn to_hex(b: &[u8]) -> String {
    crate::journal::record::hex(b)
}

/// Parse exactly `N` bytes of hex.
pub fn from_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.trim().as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let nib = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (nib(pair[0])? << 4) | nib(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_frames_are_bound_to_direction_counter_and_key() {
        let key = [9u8; 32];
        let mut v = Session::new(key, Role::Validator);
        let mut s = Session::new(key, Role::Station);
        let p1 = v.seal(FrameType::Batch, b"one");
        let p2 = v.seal(FrameType::Batch, b"two");
        assert_eq!(
            s.open(FrameType::Batch, &p2),
            Err(SessionError::BadCounter {
                expected: 1,
                got: 2
            })
        );
        assert_eq!(s.open(FrameType::Batch, &p1), Ok(&b"one"[..]));
        assert!(s.open(FrameType::Batch, &p1).is_err(), "replay");
        assert_eq!(s.open(FrameType::Ack, &p2), Err(SessionError::BadMac));
        // A station cannot be fooled by its own frames reflected back.
        let a = s.seal(FrameType::Batch, b"x");
        assert_eq!(
            Session::new(key, Role::Station).open(FrameType::Batch, &a),
            Err(SessionError::BadMac)
        );
        assert_eq!(from_hex::<2>("0aFf"), Some([0x0a, 0xff]));
        assert_eq!(from_hex::<2>("0aF"), None);
    }
}
