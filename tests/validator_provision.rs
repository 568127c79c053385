//! Setting a bus up from the depot's answer, and the rules of the pinned operator key:
//! `provision` writes the configuration, a 0600 secret file and pins the key once; it never
//! replaces a configuration; a different key is never pinned in passing (`provision`,
//! `upload --operator-pub`), only by `repin-operator-key`; and `upload` exits 1 when a
//! downlink file it was sent is refused.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use fare_validator::upload::auth::to_hex;
use fare_validator::upload::downlink::DownlinkDir;
use fare_validator::validator::config::ValidatorConfig;
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fare-validator"))
}

/// A different operator key for each station the tests set up.
static OPERATOR_SEED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);

fn terminal_add(db: &Path, id: &str) -> Value {
    // The operator's key, imported on purpose before the first terminal (a station never
    // makes one, and the answer carries its public key).
    let s = fare_validator::depot::Store::open(db).unwrap();
    if s.operator_key().unwrap().is_none() {
        let seed = OPERATOR_SEED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        s.set_operator_key(&fare_validator::signed::signing_key_from_seed([seed; 32]))
            .unwrap();
    }
    drop(s);
    let out = bin()
        .args(["depot", "terminal", "add", id, "--db"])
        .arg(db)
        .output()
        .unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
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

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
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
    let mut serve = bin()
        .args(["depot", "serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(serve.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let listening: Value = serde_json::from_str(&line).unwrap();
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
            .args(["--depot", listening["listening"].as_str().unwrap()])
            .arg("--journal")
            .arg(&journal);
        if let Some(k) = operator_pub {
            c.args(["--operator-pub", k]);
        }
        c.output().unwrap()
    };
    let passing = upload(Some(answer["operator_pub"].as_str().unwrap()));
    let refused = upload(None);
    serve.kill().unwrap();
    serve.wait().unwrap();

    assert_eq!(passing.status.code(), Some(2), "{}", stderr(&passing));
    assert_eq!(DownlinkDir::new(&journal).operator_key(), Some(stranger));

    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    let report: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(report["refused"].as_array().unwrap().len(), 1, "{report}");
    assert!(stderr(&refused).contains("downlink refused"));
}
