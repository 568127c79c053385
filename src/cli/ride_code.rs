//! `fare-validator ride-code ...`: make keys, issue codes and draw their QR codes, the phone's
//! and the channel's side of ride-code-v1, for demos and tests.
//!
//! ```text
//! fare-validator ride-code keygen --alg p256 --seed 7 --out channel.json
//! fare-validator ride-code issue --key channel.json --channel 2 --key-id 1 --account 8800001 \
//!     --card 37140000000000000001 --category adult --cert-not-before 1795000000 \
//!     --cert-not-after 1797000000 --generated-at 1795824000 --counter 1 --holder-seed 9
//! fare-validator ride-code qr 'ESSC1.AQE...' --png code.png
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::ride_code::issuer::{self, CertFields, KeyPair, SECRET_KEY_BYTES};
use crate::ride_code::{Alg, KeyFileEntry};
use crate::types::{CardNo, RiderCategory};

#[derive(Debug, clap::Subcommand)]
pub enum RideCodeCmd {
    /// Make a channel or holder key pair: writes the private key as JSON, prints the public
    /// key and a key-file entry for it.
    Keygen {
        /// p256 or sm2.
        #[arg(long)]
        alg: Alg,
        /// Derive the key from this seed (repeatable demos); default: OS randomness.
        #[arg(long)]
        seed: Option<u64>,
        /// Private key file to write (JSON, mode 0600).
        #[arg(long)]
        out: PathBuf,
        /// channel_id of the printed key-file entry.
        #[arg(long, default_value_t = 1)]
        channel: u16,
        /// key_id of the printed key-file entry.
        #[arg(long, default_value_t = 1)]
        key_id: u8,
        /// not_before of the printed entry: unix seconds or RFC 3339.
        #[arg(long, default_value = "0", value_parser = parse_time)]
        not_before: u32,
        /// not_after of the printed entry: unix seconds or RFC 3339.
        #[arg(long, default_value = "4294967295", value_parser = parse_time)]
        not_after: u32,
    },
    /// Issue a ride code signed by a fresh holder key whose certificate the channel key
    /// signs; prints the ESSC1. text.
    Issue {
        /// Channel private key file written by `keygen`.
        #[arg(long)]
        key: PathBuf,
        /// channel_id of the issuing channel app (1..=8 for Dezhou's list).
        #[arg(long)]
        channel: u16,
        /// key_id of the channel key that signs the holder certificate.
        #[arg(long)]
        key_id: u8,
        /// The holder's account at the channel.
        #[arg(long)]
        account: u64,
        /// Linked physical card: 20 decimal digits.
        #[arg(long)]
        card: CardNo,
        /// adult, student, senior, disabled or veteran.
        #[arg(long)]
        category: RiderCategory,
        /// Unix seconds or RFC 3339.
        #[arg(long, value_parser = parse_time)]
        cert_not_before: u32,
        /// Unix seconds or RFC 3339, inclusive.
        #[arg(long, value_parser = parse_time)]
        cert_not_after: u32,
        /// Unix seconds or RFC 3339.
        #[arg(long, value_parser = parse_time)]
        generated_at: u32,
        /// The code's counter: grows with each code one installation makes.
        #[arg(long)]
        counter: u32,
        /// Derive the holder key from this seed; default: OS randomness.
        #[arg(long)]
        holder_seed: Option<u64>,
    },
    /// Draw a ride code text as a QR code PNG (byte mode, EC level M). The text must be a
    /// well-formed ride code; anything else is refused before a file is written.
    Qr {
        /// The ESSC1. text, as `ride-code issue` prints it.
        code: String,
        /// PNG file to write.
        #[arg(long)]
        png: PathBuf,
    },
}

/// A private key file as `keygen` writes it.
#[derive(Debug, Serialize, Deserialize)]
pub struct PrivateKeyFile {
    pub alg: Alg,
    /// 64 hex digits, big-endian scalar.
    pub secret_key: String,
    /// 66 hex digits, SEC1 compressed.
    pub public_key: String,
}

pub fn run(cmd: RideCodeCmd) -> Result<(), String> {
    let stdout = std::io::stdout();
    run_to(cmd, &mut stdout.lock())
}

/// [`run`] writing its output to `out`.
pub fn run_to(cmd: RideCodeCmd, out: &mut dyn Write) -> Result<(), String> {
    match cmd {
        RideCodeCmd::Keygen {
            alg,
            seed,
            out: path,
            channel,
            key_id,
            not_before,
            not_after,
        } => {
            let pair = new_key(alg, seed)?;
            write_private_key(&path, &pair)?;
            let entry = KeyFileEntry {
                channel_id: channel,
                name: String::new(),
                key_id,
                alg,
                public_key: hex::encode(pair.public_key()),
                not_before: i64::from(not_before),
                not_after: i64::from(not_after),
                revoked: false,
            };
            let entry = serde_json::to_string(&entry).map_err(|e| e.to_string())?;
            writeln!(out, "public_key {}", entry_key(&pair)).map_err(io)?;
            writeln!(out, "{entry}").map_err(io)
        }
        RideCodeCmd::Issue {
            key,
            channel,
            key_id,
            account,
            card,
            category,
            cert_not_before,
            cert_not_after,
            generated_at,
            counter,
            holder_seed,
        } => {
            if cert_not_after < cert_not_before {
                // The window would be empty: every scan of the code would be refused.
                return Err(format!(
                    "--cert-not-after {cert_not_after} is before --cert-not-before \
                     {cert_not_before}: the certificate would never be valid"
                ));
            }
            let signer = read_private_key(&key)?;
            let holder = new_key(signer.alg(), holder_seed)?;
            let fields = CertFields {
                alg: signer.alg(),
                channel_id: channel,
                channel_key_id: key_id,
                account_id: account,
                card_no: card,
                rider_category: category as u8,
                cert_not_before,
                cert_not_after,
                holder_public_key: holder.public_key(),
            };
            let cert = issuer::certificate(&fields, &signer);
            let code = issuer::code(&cert, generated_at, counter, &holder);
            writeln!(out, "{}", issuer::code_text(&code)).map_err(io)
        }
        RideCodeCmd::Qr { code, png } => {
            // A placeholder or a typo drawn as a QR code would only be refused at the bus.
            crate::ride_code::RideCode::parse(&code).map_err(|e| {
                format!("not a ride code (ESSC1. text as `ride-code issue` prints it): {e}")
            })?;
            let qr = issuer::qr_code(&code).map_err(|e| e.to_string())?;
            let bytes = issuer::qr_png(&code).map_err(|e| e.to_string())?;
            std::fs::write(&png, bytes).map_err(|e| format!("{}: {e}", png.display()))?;
            writeln!(
                out,
                "wrote {} (QR version {}, EC level {:?}, byte mode)",
                png.display(),
                issuer::qr_version(&qr),
                qr.error_correction_level()
            )
            .map_err(io)
        }
    }
}

fn io(e: std::io::Error) -> String {
    e.to_string()
}

fn entry_key(pair: &KeyPair) -> String {
    hex::encode(pair.public_key())
}

fn new_key(alg: Alg, seed: Option<u64>) -> Result<KeyPair, String> {
    match seed {
        Some(seed) => Ok(KeyPair::from_seed(alg, seed)),
        None => {
            let mut rng = rand_chacha::ChaCha20Rng::from_entropy();
            KeyPair::generate(alg, &mut rng).map_err(|e| e.to_string())
        }
    }
}

fn write_private_key(path: &Path, pair: &KeyPair) -> Result<(), String> {
    let file = PrivateKeyFile {
        alg: pair.alg(),
        secret_key: hex::encode(pair.secret_bytes()),
        public_key: entry_key(pair),
    };
    let text = serde_json::to_string_pretty(&file).map_err(|e| e.to_string())?;
    let mut options = std::fs::OpenOptions::new();
    // Never over an existing key: a key file overwritten by a repeated command is a channel's
    // signing key gone for good.
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => format!(
            "{}: already exists; a private key is never overwritten (choose another --out)",
            path.display()
        ),
        _ => format!("{}: {e}", path.display()),
    })?;
    writeln!(f, "{text}").map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads a `keygen` private key file.
pub fn read_private_key(path: &Path) -> Result<KeyPair, String> {
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| at(&e))?;
    let file: PrivateKeyFile = serde_json::from_str(&text).map_err(|e| at(&e))?;
    let mut secret = [0u8; SECRET_KEY_BYTES];
    hex::decode_to_slice(&file.secret_key, &mut secret)
        .map_err(|_| at(&"secret_key must be 64 hex digits"))?;
    let pair = KeyPair::from_secret_bytes(file.alg, &secret).map_err(|e| at(&e))?;
    if entry_key(&pair) != file.public_key {
        return Err(at(&"public_key does not match secret_key"));
    }
    Ok(pair)
}

/// Unix seconds, or an RFC 3339 time with offset.
fn parse_time(s: &str) -> Result<u32, String> {
    if let Ok(t) = s.parse::<u32>() {
        return Ok(t);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("{s:?} is neither unix seconds nor RFC 3339"))?;
    u32::try_from(t.unix_timestamp()).map_err(|_| format!("{s:?} is outside 1970..2106"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ride_code::{ChannelKeys, KeyFile, RideCodeConfig, Verifier};

    #[test]
    fn keygen_issue_and_verify_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("channel.json");
        let mut out = Vec::new();
        run_to(
            RideCodeCmd::Keygen {
                alg: Alg::Sm2,
                seed: Some(5),
                out: key.clone(),
                channel: 7,
                key_id: 3,
                not_before: 0,
                not_after: u32::MAX,
            },
            &mut out,
        )
        .unwrap();
        let printed = String::from_utf8(out).unwrap();
        let entry_line = printed.lines().nth(1).unwrap();
        let entry: KeyFileEntry = serde_json::from_str(entry_line).unwrap();
        assert_eq!(
            (entry.channel_id, entry.key_id, entry.alg),
            (7, 3, Alg::Sm2)
        );

        let mut out = Vec::new();
        run_to(
            RideCodeCmd::Issue {
                key,
                channel: 7,
                key_id: 3,
                account: 99,
                card: "37140000000000000002".parse().unwrap(),
                category: RiderCategory::Senior,
                cert_not_before: parse_time("2026-01-01T00:00:00+08:00").unwrap(),
                cert_not_after: 1_800_000_000,
                generated_at: 1_795_824_000,
                counter: 4,
                holder_seed: Some(6),
            },
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let keys = ChannelKeys::from_file(&KeyFile {
            version: 1,
            channels: vec![entry],
        })
        .unwrap();
        let mut v = Verifier::new(keys, RideCodeConfig::default());
        let code = v.verify(text.trim_end(), 1_795_824_010).unwrap();
        assert_eq!(code.rider_category, RiderCategory::Senior);
        assert_eq!(code.account.to_string(), "7:99");

        let png = dir.path().join("code.png");
        let mut out = Vec::new();
        run_to(
            RideCodeCmd::Qr {
                code: text.trim_end().to_string(),
                png: png.clone(),
            },
            &mut out,
        )
        .unwrap();
        assert!(String::from_utf8(out).unwrap().contains("version 12"));
        assert!(std::fs::metadata(png).unwrap().len() > 0);
    }

    #[test]
    fn bad_private_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        std::fs::write(&path, r#"{"alg":"p256","secret_key":"00","public_key":""}"#).unwrap();
        let err = read_private_key(&path).unwrap_err();
        assert!(err.contains("64 hex digits"), "{err}");
        assert!(parse_time("yesterday").is_err());
    }
}
