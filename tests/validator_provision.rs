//! Setting a bus up from the depot's answer, and the rules of the pinned operator key:
//! `provision` writes the configuration, a 0600 secret file and pins the key once; it never
//! replaces a configuration; a different key is never pinned in passing (`provision`,
//! `upload --operator-pub`), only by `repin-operator-key`; and `upload` exits 1 when a
//! downlink file it was sent is refused. A bus with only a QR scanner is provisioned without
//! readers and runs `validator` with no PC/SC: scans decided, records at the depot, the
//! status saying the reader is absent.

mod support;

use std::path::Path;
use std::process::Output;

use fare_validator::upload::auth::to_hex;
use fare_validator::upload::downlink::DownlinkDir;
use fare_validator::validator::config::ValidatorConfig;
use serde_json::Value;
use support::{
    bin, free_port, import_operator_key, issue_code, publish_channel_key, run_ok, serve_depot,
    start_validator, status, stderr, wait_until,
};

/// A different operator key for each station the tests set up.
static OPERATOR_SEED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);

fn terminal_add(db: &Path, id: &str) -> Value {
    // The operator's key, imported on purpose before the first terminal (a station never
    // makes one, and the answer carries its public key).
    let seed = OPERATOR_SEED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    import_operator_key(db, seed);
    support::terminal_add(db, id)
}

/// `provision` with the depot's answer in `answer`, a scanner on loopback.
fn provision(answer: &Path, config: &Path) -> Output {
    provision_args(answer, config, &["--scanner", "tcp:127.0.0.1:9100"])
}

/// `provision --answer ANSWER --config CONFIG --depot 127.0.0.1:7700`, then `extra`.
fn provision_args(answer: &Path, config: &Path, extra: &[&str]) -> Output {
    bin()
        .args(["provision", "--answer"])
        .arg(answer)
        .arg("--config")
        .arg(config)
        .args(["--depot", "127.0.0.1:7700"])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn provision_writes_config_secret_and_pins_the_key_once() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.sqlite");
    let answer = terminal_add(&db, "bus-0042");
    let answer_file = tmp.path().join("answer.json");
    std::fs::write(&answer_file, answer.to_string()).unwrap();
    let bus = tmp.path().join("bus");
    std::fs::create_dir_all(&bus).unwrap();
    let config = bus.join("validator.toml");

    let out = provision(&answer_file, &config);
    assert!(out.status.success(), "{}", stderr(&out));
    let cfg = ValidatorConfig::load(&config).unwrap();
    assert_eq!(cfg.terminal_id, "bus-0042");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        !text.contains(answer["secret"].as_str().unwrap()),
        "the secret is never in the configuration"
    );
    assert_eq!(
        to_hex(&cfg.read_secret().unwrap()),
        answer["secret"].as_str().unwrap()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cfg.secret_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let pinned = DownlinkDir::new(&cfg.data_dir).operator_key().unwrap();
    assert_eq!(
        to_hex(pinned.as_bytes()),
        answer["operator_pub"].as_str().unwrap()
    );

    // Never over an existing configuration.
    let again = provision(&answer_file, &config);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));

    // Another depot's answer into the same data folder: the pinned key is kept.
    let other = terminal_add(&tmp.path().join("other.sqlite"), "bus-0042");
    let other_file = tmp.path().join("other.json");
    std::fs::write(&other_file, other.to_string()).unwrap();
    let _ = std::fs::remove_file(&config);
    let _ = std::fs::remove_file(&cfg.secret_file);
    let refused = provision(&other_file, &config);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("repin-operator-key"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(DownlinkDir::new(&cfg.data_dir).operator_key(), Some(pinned));

    // Re-pinning is its own command.
    provision(&answer_file, &config);
    let repin = bin()
        .args(["repin-operator-key", "--config"])
        .arg(&config)
        .args(["--operator-pub", other["operator_pub"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(repin.status.success(), "{}", stderr(&repin));
    let now = DownlinkDir::new(&cfg.data_dir).operator_key().unwrap();
    assert_eq!(
        to_hex(now.as_bytes()),
        other["operator_pub"].as_str().unwrap()
    );
}

#[test]
fn upload_exits_1_when_a_downlink_file_is_refused_and_never_repins_in_passing() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.sqlite");
    let answer = terminal_add(&db, "bus-0043");
    let fares = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/fares.toml")).unwrap();
    let fares_file = tmp.path().join("fares.toml");
    std::fs::write(&fares_file, fares).unwrap();
    let out = bin()
        .args(["depot", "publish", "fares"])
        .arg(&fares_file)
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let (serve, depot_addr) = serve_depot(&db);
    let journal = tmp.path().join("bus");
    std::fs::create_dir_all(&journal).unwrap();
    // The bus trusts another operator: the depot's files do not verify.
    let stranger = fare_validator::signed::signing_key_from_seed([9; 32]).verifying_key();
    DownlinkDir::new(&journal)
        .pin_operator_key(&stranger)
        .unwrap();
    let upload = |operator_pub: Option<&str>| {
        let secret = tmp.path().join("bus-0043.secret");
        std::fs::write(&secret, answer["secret"].as_str().unwrap()).unwrap();
        let mut c = bin();
        c.args(["upload", "--terminal", "bus-0043", "--secret-file"])
            .arg(&secret)
            .args(["--depot", &depot_addr])
            .arg("--journal")
            .arg(&journal);
        if let Some(k) = operator_pub {
            c.args(["--operator-pub", k]);
        }
        c.output().unwrap()
    };
    let passing = upload(Some(answer["operator_pub"].as_str().unwrap()));
    let refused = upload(None);
    drop(serve);

    assert_eq!(passing.status.code(), Some(2), "{}", stderr(&passing));
    assert_eq!(DownlinkDir::new(&journal).operator_key(), Some(stranger));

    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    let report: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(report["refused"].as_array().unwrap().len(), 1, "{report}");
    assert!(stderr(&refused).contains("downlink refused"));
}

#[test]
fn a_scanner_only_bus_runs_without_pcsc_and_its_status_says_the_reader_is_absent() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.sqlite");
    let answer = terminal_add(&db, "bus-0044");
    let answer_file = tmp.path().join("answer.json");
    std::fs::write(&answer_file, answer.to_string()).unwrap();
    // A channel key published at the depot: it reaches the bus with the first session.
    let channel_key = publish_channel_key(tmp.path(), &db, "p256", 44);
    let (_station, depot_addr) = serve_depot(&db);
    let scan_port = free_port();
    let bus = tmp.path().join("bus");
    std::fs::create_dir_all(&bus).unwrap();
    let config = bus.join("validator.toml");
    // Readers named but no terminal number: refused; with it, written.
    let mut args = vec![
        "--depot".to_string(),
        depot_addr,
        "--scanner".into(),
        format!("tcp:127.0.0.1:{scan_port}"),
        "--uplink-interval-s".into(),
        "1".into(),
        "--card-reader".into(),
        "none".into(),
        "--sam-reader".into(),
        "none".into(),
    ];
    let no_number = bin()
        .args(["provision", "--answer"])
        .arg(&answer_file)
        .arg("--config")
        .arg(&config)
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(no_number.status.code(), Some(2), "{}", stderr(&no_number));
    assert!(stderr(&no_number).contains("terminal_no"));
    args.extend(["--terminal-no".into(), "0000000000a4".into()]);
    run_ok(
        bin()
            .args(["provision", "--answer"])
            .arg(&answer_file)
            .arg("--config")
            .arg(&config)
            .args(&args),
    );
    let cfg = ValidatorConfig::load(&config).unwrap();
    assert_eq!(cfg.readers(), None);

    let mut program = start_validator(&config, &tmp.path().join("validator.log"));
    let status_now = || status(&cfg.data_dir);
    wait_until("ride-code keys installed", || {
        status_now()["status"]["installed"]["keys"].as_u64() > Some(0)
    });
    let code = issue_code(&channel_key, 44, "37140000000000000044", 1);
    let mut scanner = std::net::TcpStream::connect(("127.0.0.1", scan_port)).unwrap();
    use std::io::Write;
    scanner.write_all(code.as_bytes()).unwrap();
    scanner.write_all(b"\r\nnot a code\n").unwrap();
    let qr = program.next_line();
    assert_eq!(
        (
            qr["media"].as_str(),
            qr["result"].as_str(),
            qr["seq"].as_u64()
        ),
        (Some("qr"), Some("accepted"), Some(1)),
        "{qr}"
    );
    assert_eq!(program.next_line()["reason"], "malformed");
    wait_until("the record at the depot", || {
        fare_validator::depot::Store::open_read(&db)
            .and_then(|s| s.newest_contiguous_seq("bus-0044"))
            .unwrap_or(0)
            == 1
    });
    wait_until("the status after the upload", || {
        status_now()["status"]["acked_seq"].as_u64() == Some(1)
    });
    let st = status_now();
    assert_eq!(st["status"]["reader"], "absent", "{st}");
    assert_eq!(st["status"]["scanner"], "connected", "{st}");
    assert_eq!(st["status"]["scans"], 2, "{st}");
    assert_eq!(st["status"]["taps"], 0, "{st}");

    // SIGTERM: a clean stop, exit 0.
    let exit = program.terminate();
    assert!(exit.success(), "{}", program.log_text());
    assert_eq!(status_now()["status"]["reader"], "absent");
}

/// The QuickPass files of a bus: the depot's PAN token key, the CA keys of the vectors and
/// the test acquirer's public key, in `dir`.
fn quickpass_files(dir: &Path) -> [std::path::PathBuf; 3] {
    let key = dir.join("depot-pan-token.key");
    std::fs::write(&key, format!("{}\n", "5a".repeat(32))).unwrap();
    let vectors: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/quickpass-v1.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let ca = dir.join("ca.json");
    std::fs::write(&ca, vectors["ca_keys"].to_string()).unwrap();
    let acquirer = std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/acquirer-test.pub"
    ));
    [key, ca, acquirer]
}

/// [`provision_args`] with `answer` written beside the configuration.
fn provision_with(answer: &Value, config: &Path, extra: &[&str]) -> Output {
    let answer_file = config.with_file_name("answer.json");
    std::fs::write(&answer_file, answer.to_string()).unwrap();
    provision_args(&answer_file, config, extra)
}

/// The three QuickPass fields of validator.toml, from the depot's answer (the files written
/// beside the configuration, the PAN token key with mode 0600) or from the operator (the files
/// named as given); a file given both ways, or one the validator would refuse, is refused
/// before anything is written.
#[test]
fn provision_writes_the_quickpass_keys_the_depot_or_the_operator_gives() {
    use fare_validator::card::quickpass::PanTokenKey;
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.sqlite");
    import_operator_key(&db, 50);
    let [key, ca, acquirer] = quickpass_files(tmp.path());

    // The depot carries them.
    let answer: Value = serde_json::from_str(&run_ok(
        bin()
            .args(["depot", "terminal", "add", "bus-0050", "--db"])
            .arg(&db)
            .arg("--pan-token-key")
            .arg(&key)
            .arg("--emv-ca")
            .arg(&ca)
            .arg("--acquirer-key")
            .arg(&acquirer),
    ))
    .unwrap();
    assert_eq!(answer["pan_token_key"], "5a".repeat(32));
    assert_eq!(answer["emv_ca"]["keys"][0]["rid"], "A000000333", "{answer}");
    let bus = tmp.path().join("bus-a");
    std::fs::create_dir_all(&bus).unwrap();
    let config = bus.join("validator.toml");
    let out = provision_with(&answer, &config, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["pan_token_key_file"], "pan-token.key", "{printed}");
    let cfg = ValidatorConfig::load(&config).unwrap();
    assert_eq!(cfg.pan_token_key_file, Some(bus.join("pan-token.key")));
    assert_eq!(cfg.emv_ca_file, Some(bus.join("emv-ca.json")));
    assert_eq!(cfg.acquirer_key_file, Some(bus.join("acquirer.pub")));
    assert_eq!(cfg.pan_token_key().unwrap().unwrap().0, [0x5A; 32]);
    assert!(!cfg.emv_ca().unwrap().unwrap().is_empty());
    assert!(cfg.acquirer_key().unwrap().is_some());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(bus.join("pan-token.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        !text.contains(&"5a".repeat(32)),
        "the key is never in the configuration"
    );

    // The operator names files already on the bus.
    let answer = support::terminal_add(&db, "bus-0051");
    let bus = tmp.path().join("bus-b");
    std::fs::create_dir_all(&bus).unwrap();
    std::fs::copy(&key, bus.join("pan.key")).unwrap();
    let config = bus.join("validator.toml");
    let given = [
        "--pan-token-key-file",
        "pan.key",
        "--emv-ca-file",
        ca.to_str().unwrap(),
        "--acquirer-key-file",
        acquirer.to_str().unwrap(),
    ];
    let out = provision_with(&answer, &config, &given);
    assert!(out.status.success(), "{}", stderr(&out));
    let cfg = ValidatorConfig::load(&config).unwrap();
    assert_eq!(cfg.pan_token_key_file, Some(bus.join("pan.key")));
    assert_eq!(cfg.emv_ca_file.as_deref(), Some(ca.as_path()));
    assert_eq!(cfg.acquirer_key_file.as_deref(), Some(acquirer.as_path()));
    assert_eq!(cfg.pan_token_key().unwrap().unwrap().0, [0x5A; 32]);
    assert_ne!(cfg.pan_token_key().unwrap().unwrap().0, PanTokenKey::TEST.0);

    // Given both ways, or not a key: refused, and nothing written.
    let mut answer = support::terminal_add(&db, "bus-0052");
    answer["pan_token_key"] = Value::from("5a".repeat(32));
    let bus = tmp.path().join("bus-c");
    std::fs::create_dir_all(&bus).unwrap();
    let config = bus.join("validator.toml");
    let twice = provision_with(
        &answer,
        &config,
        &["--pan-token-key-file", key.to_str().unwrap()],
    );
    assert_eq!(twice.status.code(), Some(2), "{}", stderr(&twice));
    assert!(
        stderr(&twice).contains("pan_token_key_file"),
        "{}",
        stderr(&twice)
    );
    answer["pan_token_key"] = Value::from("not a key");
    let bad = provision_with(&answer, &config, &[]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    answer["pan_token_key"] = Value::Null;
    let bad_ca = provision_with(&answer, &config, &["--emv-ca-file", key.to_str().unwrap()]);
    assert_eq!(bad_ca.status.code(), Some(2), "{}", stderr(&bad_ca));
    assert!(!config.exists());
    assert!(!bus.join("bus-0052.secret").exists());
    assert!(!bus.join("pan-token.key").exists());
}
