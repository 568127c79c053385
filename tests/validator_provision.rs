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

fn provision(answer: &Path, config: &Path) -> Output {
    bin()
        .args(["provision", "--answer"])
        .arg(answer)
        .arg("--config")
        .arg(config)
        .args([
            "--depot",
            "127.0.0.1:7700",
            "--scanner",
            "tcp:127.0.0.1:9100",
        ])
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
