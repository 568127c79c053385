//! The validator's configuration file (`validator.toml`): which bus, which readers, which
//! scanner, which depot. Written by `fare-validator provision` from the depot's `terminal
//! add` answer; every field is described in docs/config.md and in the commented example
//! `fixtures/validator.toml`.
//!
//! The terminal's secret is never in this file nor on a command line: the file names the
//! secret's own file (mode 0600, 64 hex digits), read at start.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::card::acquirer::AcquirerKey;
use crate::card::quickpass::{CaKeys, PanTokenKey};
use crate::upload::auth::{from_hex, Secret};

/// Lowest and highest UTC offsets a validator accepts, minutes (UTC-14:00..UTC+14:00).
pub const UTC_OFFSET_MIN_MAX: i32 = 14 * 60;
/// Serial speeds a bus scanner is set to, bits per second.
pub const SCANNER_BAUDS: [u32; 6] = [9_600, 19_200, 38_400, 57_600, 115_200, 230_400];
/// Longest pause between two upload sessions while the depot answers, seconds.
pub const UPLINK_INTERVAL_S_MAX: u64 = 3_600;
/// The reader names of a validator without a card reader (a scanner-only bus).
pub const NO_READER: &str = "none";
/// Longest configuration file read, bytes.
pub const CONFIG_BYTES_MAX: u64 = 64 * 1024;

/// `validator.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorConfig {
    /// The terminal id the depot provisioned (`depot terminal add`), e.g. `bus-0001`.
    pub terminal_id: String,
    /// The route the bus runs at start.
    pub route: u16,
    /// The data folder: journal, grey records, downlink files, status file.
    pub data_dir: PathBuf,
    /// PC/SC name of the contactless reader passengers tap, or `none` (a scanner-only
    /// validator: then `sam_reader` is `none` too and `terminal_no` is given).
    pub card_reader: String,
    /// PC/SC name of the reader holding the PSAM, or `none` with `card_reader`.
    pub sam_reader: String,
    /// The terminal number written in every record (12 hex digits, the PSAM's file 0x16 as
    /// JT/T 978 names it), only when there is no PSAM: with one, the PSAM's own number is
    /// written and this field is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_no: Option<String>,
    /// The QR scanner: a serial device path, or `tcp:127.0.0.1:PORT` (tests, demos).
    pub scanner: String,
    /// Serial speed of the scanner, bits per second (ignored for `tcp:`).
    pub scanner_baud: u32,
    /// The depot's upload station, `HOST:PORT`.
    pub depot: String,
    /// The file holding the terminal's secret (64 hex digits, mode 0600).
    pub secret_file: PathBuf,
    /// Local time's offset from UTC, minutes (China Standard Time: 480).
    pub utc_offset_min: i32,
    /// SCHED_FIFO priority of the tap thread (1–99), or 0 to leave it at normal priority.
    pub tap_priority: i32,
    /// Seconds between upload sessions while the depot answers (1 to 3600).
    pub uplink_interval_s: u64,
    /// The file holding the key QuickPass PANs are tokenised with (64 hex digits, the
    /// depot's key: docs/quickpass.md). Absent: the test key, with a warning at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pan_token_key_file: Option<PathBuf>,
    /// CA.json, the UnionPay CA public keys QuickPass taps are authenticated with
    /// (docs/quickpass.md). Absent: every QuickPass tap is `bad_certificate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emv_ca_file: Option<PathBuf>,
    /// The file of the acquirer's public key QuickPass PANs are sealed to (64 hex digits).
    /// Absent: the test acquirer's, with a warning at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquirer_key_file: Option<PathBuf>,
}

/// Where the scanner's lines come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScannerSource {
    /// A serial device (USB CDC-ACM or RS-232) at a speed, raw mode.
    Serial { path: PathBuf, baud: u32 },
    /// A loopback TCP socket the validator listens on; one scanner connects at a time.
    Tcp(std::net::SocketAddr),
    /// No scanner fitted.
    None,
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {error}")]
    Read { path: PathBuf, error: String },
    #[error("{path}: {error}")]
    Parse { path: PathBuf, error: String },
    #[error("{field}: {error}")]
    Field { field: &'static str, error: String },
    #[error("secret file {path}: {error}")]
    Secret { path: PathBuf, error: String },
}

fn field(field: &'static str, error: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field,
        error: error.into(),
    }
}

impl ValidatorConfig {
    /// Read and check `path`. Relative paths inside are taken from the file's folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let read_err = |error: String| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        };
        let meta = std::fs::metadata(path).map_err(|e| read_err(e.to_string()))?;
        if meta.len() > CONFIG_BYTES_MAX {
            return Err(read_err(format!("over {CONFIG_BYTES_MAX} bytes")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| read_err(e.to_string()))?;
        let mut cfg: ValidatorConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            error: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.data_dir = base.join(&cfg.data_dir);
        cfg.secret_file = base.join(&cfg.secret_file);
        cfg.pan_token_key_file = cfg.pan_token_key_file.map(|f| base.join(f));
        cfg.emv_ca_file = cfg.emv_ca_file.map(|f| base.join(f));
        cfg.acquirer_key_file = cfg.acquirer_key_file.map(|f| base.join(f));
        cfg.check()?;
        Ok(cfg)
    }

    /// Check every field's range and shape.
    pub fn check(&self) -> Result<(), ConfigError> {
        if !crate::upload::frame::valid_terminal_id(&self.terminal_id) {
            return Err(field("terminal_id", "1 to 32 of A-Z a-z 0-9 _ -"));
        }
        if !(-UTC_OFFSET_MIN_MAX..=UTC_OFFSET_MIN_MAX).contains(&self.utc_offset_min) {
            return Err(field("utc_offset_min", "must be within -840..840"));
        }
        if self.tap_priority != 0 && !(1..=99).contains(&self.tap_priority) {
            return Err(field("tap_priority", "0 (normal) or 1..99 (SCHED_FIFO)"));
        }
        if !(1..=UPLINK_INTERVAL_S_MAX).contains(&self.uplink_interval_s) {
            return Err(field("uplink_interval_s", "1 to 3600"));
        }
        if self.card_reader.is_empty() || self.sam_reader.is_empty() {
            return Err(field(
                "card_reader",
                "both reader names must be given (or both \"none\")",
            ));
        }
        if (self.card_reader == NO_READER) != (self.sam_reader == NO_READER) {
            return Err(field(
                "sam_reader",
                "a card reader needs the PSAM's reader, and \"none\" goes with \"none\"",
            ));
        }
        match (self.readers(), &self.terminal_no) {
            (Some(_), Some(_)) => {
                return Err(field(
                    "terminal_no",
                    "only without a PSAM: with one, the PSAM's own number is written",
                ))
            }
            (None, None) => {
                return Err(field(
                    "terminal_no",
                    "a validator without a PSAM needs its terminal number (12 hex digits)",
                ))
            }
            _ => {}
        }
        self.terminal_no_bytes()?;
        if self.readers().is_none() && self.scanner_source()? == ScannerSource::None {
            return Err(field(
                "scanner",
                "a validator with no card reader needs a scanner",
            ));
        }
        self.depot_addr()?;
        self.scanner_source()?;
        Ok(())
    }

    /// The PAN token key of `pan_token_key_file`; `None` when the field is absent (the
    /// caller warns and uses the test key).
    pub fn pan_token_key(&self) -> Result<Option<PanTokenKey>, ConfigError> {
        self.pan_token_key_file
            .as_deref()
            .map(|path| {
                PanTokenKey::load(path).map_err(|e| field("pan_token_key_file", e.to_string()))
            })
            .transpose()
    }

    /// The CA keys of `emv_ca_file`, if given.
    pub fn emv_ca(&self) -> Result<Option<CaKeys>, ConfigError> {
        self.emv_ca_file
            .as_deref()
            .map(|path| CaKeys::load(path).map_err(|e| field("emv_ca_file", e)))
            .transpose()
    }

    /// The acquirer's public key of `acquirer_key_file`, if given.
    pub fn acquirer_key(&self) -> Result<Option<AcquirerKey>, ConfigError> {
        self.acquirer_key_file
            .as_deref()
            .map(|path| AcquirerKey::load(path).map_err(|e| field("acquirer_key_file", e)))
            .transpose()
    }

    /// The card reader's and the PSAM reader's names; `None` for a scanner-only validator.
    pub fn readers(&self) -> Option<(&str, &str)> {
        (self.card_reader != NO_READER).then_some((&self.card_reader, &self.sam_reader))
    }

    /// The configured terminal number (a validator without a PSAM), as bytes.
    pub fn terminal_no_bytes(&self) -> Result<Option<[u8; 6]>, ConfigError> {
        self.terminal_no
            .as_deref()
            .map(|t| from_hex::<6>(t).ok_or_else(|| field("terminal_no", "12 hex digits")))
            .transpose()
    }

    /// The depot's address.
    pub fn depot_addr(&self) -> Result<std::net::SocketAddr, ConfigError> {
        use std::net::ToSocketAddrs;
        self.depot
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| field("depot", format!("{:?} is not HOST:PORT", self.depot)))
    }

    /// The scanner this file names.
    pub fn scanner_source(&self) -> Result<ScannerSource, ConfigError> {
        parse_scanner(&self.scanner, self.scanner_baud)
    }

    /// The file as `provision` writes it: every field with a comment above it.
    pub fn to_commented_toml(&self) -> String {
        let q = |v: &str| toml::Value::String(v.to_string()).to_string();
        let p = |v: &Path| q(&v.to_string_lossy());
        format!(
            "# validator.toml, written by `fare-validator provision` (fields: docs/config.md).\n\
             # The terminal id the depot provisioned.\n\
             terminal_id = {}\n\
             # The route the bus runs at start.\n\
             route = {}\n\
             # The data folder: journal, grey records, downlink files, status.json.\n\
             data_dir = {}\n\
             # PC/SC name of the contactless reader passengers tap, or \"none\".\n\
             card_reader = {}\n\
             # PC/SC name of the reader holding the PSAM, or \"none\" with card_reader.\n\
             sam_reader = {}\n\
             {}\
             # The QR scanner: a serial device, \"tcp:127.0.0.1:PORT\", or \"none\".\n\
             scanner = {}\n\
             # Serial speed of the scanner, bits per second (ignored for tcp:).\n\
             scanner_baud = {}\n\
             # The depot's upload station, HOST:PORT.\n\
             depot = {}\n\
             # The file holding the terminal's secret (mode 0600).\n\
             secret_file = {}\n\
             # Local time's offset from UTC, minutes.\n\
             utc_offset_min = {}\n\
             # SCHED_FIFO priority of the tap thread, 1 to 99, or 0 for normal.\n\
             tap_priority = {}\n\
             # Seconds between upload sessions while the depot answers.\n\
             uplink_interval_s = {}\n{}{}",
            q(&self.terminal_id),
            self.route,
            p(&self.data_dir),
            q(&self.card_reader),
            q(&self.sam_reader),
            self.terminal_no
                .as_deref()
                .map_or(String::new(), |t| format!(
                    "# The terminal number in every record, 12 hex digits (no PSAM to give it).\n\
                 terminal_no = {}\n",
                    q(t)
                )),
            q(&self.scanner),
            self.scanner_baud,
            q(&self.depot),
            p(&self.secret_file),
            self.utc_offset_min,
            self.tap_priority,
            self.uplink_interval_s,
            self.pan_token_key_file
                .as_deref()
                .map_or(String::new(), |f| format!(
                    "# The file of the key QuickPass PANs are tokenised with (64 hex digits).\n\
                 pan_token_key_file = {}\n",
                    p(f)
                )),
            [
                (
                    "emv_ca_file",
                    "The UnionPay CA public keys (CA.json) QuickPass taps are authenticated with.",
                    &self.emv_ca_file
                ),
                (
                    "acquirer_key_file",
                    "The file of the acquirer's public key QuickPass PANs are sealed to.",
                    &self.acquirer_key_file
                ),
            ]
            .iter()
            .filter_map(|(name, what, f)| f
                .as_deref()
                .map(|f| format!("# {what}\n{name} = {}\n", p(f))))
            .collect::<String>(),
        )
    }

    /// Read the terminal's secret from its file: 64 hex digits (a final newline allowed).
    /// A file readable by others than its owner is refused.
    pub fn read_secret(&self) -> Result<Secret, ConfigError> {
        read_secret_file(&self.secret_file)
    }
}

/// Parse the `scanner` field: `""` or `none`, `tcp:127.0.0.1:PORT` (loopback only), or a
/// serial device path.
pub fn parse_scanner(text: &str, baud: u32) -> Result<ScannerSource, ConfigError> {
    if text.is_empty() || text == "none" {
        return Ok(ScannerSource::None);
    }
    if let Some(addr) = text.strip_prefix("tcp:") {
        let a: std::net::SocketAddr = addr
            .parse()
            .map_err(|e| field("scanner", format!("{addr:?}: {e}")))?;
        if !a.ip().is_loopback() {
            return Err(field("scanner", "a tcp: scanner listens on loopback only"));
        }
        return Ok(ScannerSource::Tcp(a));
    }
    if !SCANNER_BAUDS.contains(&baud) {
        return Err(field(
            "scanner_baud",
            format!("{baud}: one of {SCANNER_BAUDS:?}"),
        ));
    }
    Ok(ScannerSource::Serial {
        path: PathBuf::from(text),
        baud,
    })
}

/// Read a secret file: 64 hex digits, optionally followed by a newline; mode 0600 or
/// stricter.
pub fn read_secret_file(path: &Path) -> Result<Secret, ConfigError> {
    let err = |error: String| ConfigError::Secret {
        path: path.to_path_buf(),
        error,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(err(format!(
                "mode {:o} lets others read it: chmod 600",
                meta.permissions().mode() & 0o777
            )));
        }
    }
    if meta.len() > 128 {
        return Err(err("not a secret file (too long)".into()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    from_hex::<32>(text.trim_end_matches(['\n', '\r']))
        .ok_or_else(|| err("must hold 64 hex digits".into()))
}

/// Write a secret file with mode 0600 (created new: an existing file is never replaced).
pub fn write_secret_file(path: &Path, secret: &Secret) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(crate::upload::auth::to_hex(secret).as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> ValidatorConfig {
        let text = include_str!("../../fixtures/validator.toml");
        toml::from_str(text).unwrap()
    }

    #[test]
    fn the_example_file_parses_and_passes_its_checks() {
        let cfg = example();
        cfg.check().unwrap();
        assert_eq!(cfg.utc_offset_min, 480);
    }

    #[test]
    fn every_field_of_the_example_has_a_comment_above_it() {
        let text = include_str!("../../fixtures/validator.toml");
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if l.contains('=') && !l.trim_start().starts_with('#') {
                assert!(
                    i > 0 && lines[i - 1].trim_start().starts_with('#'),
                    "no comment above {l:?}"
                );
            }
        }
    }

    #[test]
    fn the_written_file_reads_back_the_same() {
        let mut c = example();
        let text = c.to_commented_toml();
        assert_eq!(toml::from_str::<ValidatorConfig>(&text).unwrap(), c);
        c.pan_token_key_file = Some("pan-token.key".into());
        c.emv_ca_file = Some("ca.json".into());
        c.acquirer_key_file = Some("acquirer.pub".into());
        let text = c.to_commented_toml();
        assert_eq!(toml::from_str::<ValidatorConfig>(&text).unwrap(), c);
    }

    #[test]
    fn the_pan_token_key_comes_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = example();
        assert!(c.pan_token_key().unwrap().is_none());
        let path = dir.path().join("pan-token.key");
        c.pan_token_key_file = Some(path.clone());
        assert!(c.pan_token_key().is_err(), "a missing file is refused");
        std::fs::write(&path, "not hex\n").unwrap();
        assert!(c.pan_token_key().is_err());
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        let key = c.pan_token_key().unwrap().unwrap();
        assert_eq!(key.0, [0xAB; 32]);
        assert!(!key.is_test());
        let pan = crate::card::quickpass::Pan::parse("6214830000000001").unwrap();
        assert_ne!(key.token(&pan), PanTokenKey::TEST.token(&pan));
    }

    #[test]
    fn the_quickpass_keys_come_from_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = example();
        assert!(c.emv_ca().unwrap().is_none() && c.acquirer_key().unwrap().is_none());
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("../../fixtures/quickpass-v1.json")).unwrap();
        let ca = dir.path().join("ca.json");
        std::fs::write(&ca, vectors["ca_keys"].to_string()).unwrap();
        c.emv_ca_file = Some(ca);
        assert!(!c.emv_ca().unwrap().unwrap().is_empty());
        c.acquirer_key_file = Some(dir.path().join("acquirer.pub"));
        assert!(c.acquirer_key().is_err(), "a missing file is refused");
        c.acquirer_key_file =
            Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/acquirer-test.pub"));
        assert!(c.acquirer_key().unwrap().is_some());
        std::fs::write(dir.path().join("ca.json"), "{}").unwrap();
        assert!(c.emv_ca().is_err());
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        let text = include_str!("../../fixtures/validator.toml");
        assert!(toml::from_str::<ValidatorConfig>(&format!("{text}\nsecret = \"00\"\n")).is_err());
        let mut c = example();
        c.utc_offset_min = 900;
        assert!(c.check().is_err());
        let mut c = example();
        c.tap_priority = 100;
        assert!(c.check().is_err());
        let mut c = example();
        c.scanner = "tcp:10.0.0.5:9000".into();
        assert!(c.check().is_err());
        let mut c = example();
        c.scanner = "/dev/ttyACM0".into();
        c.scanner_baud = 1234;
        assert!(c.check().is_err());
    }

    fn scanner_only() -> ValidatorConfig {
        toml::from_str(include_str!("../../fixtures/validator-scanner-only.toml")).unwrap()
    }

    #[test]
    fn a_scanner_only_file_has_no_readers_and_its_own_terminal_number() {
        let c = scanner_only();
        c.check().unwrap();
        assert_eq!(c.readers(), None);
        assert_eq!(c.terminal_no_bytes().unwrap(), Some([0, 0, 0, 0, 0, 2]));
        let text = c.to_commented_toml();
        assert_eq!(toml::from_str::<ValidatorConfig>(&text).unwrap(), c);
        let with_readers = example();
        assert_eq!(
            with_readers.readers(),
            Some(("Virtual PCD 00 00", "Virtual PCD 00 01"))
        );
        assert!(!with_readers.to_commented_toml().contains("terminal_no"));
    }

    #[test]
    fn readers_and_terminal_number_go_together_or_not_at_all() {
        // A card reader without the PSAM's, or the other way round.
        let mut c = example();
        c.sam_reader = NO_READER.into();
        assert!(c.check().is_err());
        let mut c = scanner_only();
        c.card_reader = "Virtual PCD 00 00".into();
        assert!(c.check().is_err());
        // A PSAM gives the number: a configured one beside it is refused.
        let mut c = example();
        c.terminal_no = Some("000000000001".into());
        assert!(c.check().is_err());
        // No PSAM: the number is needed, as 12 hex digits.
        let mut c = scanner_only();
        c.terminal_no = None;
        assert!(c.check().is_err());
        for bad in ["00000000002", "0000000000020", "00000000000g", ""] {
            let mut c = scanner_only();
            c.terminal_no = Some(bad.into());
            assert!(c.check().is_err(), "{bad:?}");
        }
        // No reader and no scanner: nothing to take passengers.
        let mut c = scanner_only();
        c.scanner = "none".into();
        assert!(c.check().is_err());
    }

    #[test]
    fn scanner_sources() {
        assert_eq!(parse_scanner("none", 0).unwrap(), ScannerSource::None);
        assert_eq!(
            parse_scanner("tcp:127.0.0.1:9100", 0).unwrap(),
            ScannerSource::Tcp("127.0.0.1:9100".parse().unwrap())
        );
        assert_eq!(
            parse_scanner("/dev/ttyACM0", 115_200).unwrap(),
            ScannerSource::Serial {
                path: "/dev/ttyACM0".into(),
                baud: 115_200
            }
        );
    }

    #[test]
    fn secret_file_is_written_0600_never_replaced_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        let s = [7u8; 32];
        write_secret_file(&p, &s).unwrap();
        assert_eq!(read_secret_file(&p).unwrap(), s);
        assert!(write_secret_file(&p, &[8u8; 32]).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(read_secret_file(&p).is_err());
        }
    }
}
