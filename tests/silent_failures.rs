//! What a new user meets when a command is given the wrong thing: a clear one-line error and a
//! non-zero exit, never a quiet success that did the wrong thing. Each test plays one mistake
//! as a user would make it, through the real binary.

use std::path::Path;
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fare-validator"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).env_remove("RUST_LOG").output().unwrap()
}

/// The command failed, with one line on standard error that names `about`.
fn assert_refused(out: &Output, about: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit 0; stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {err}");
    assert!(err.contains(about), "{err:?} does not name {about:?}");
}

/// `blacklist build --csv CSV --version VERSION --key KEY --out OUT`.
fn build_snapshot(csv: &str, version: &str, key: &str, out: &str) -> Output {
    run(&[
        "blacklist",
        "build",
        "--csv",
        csv,
        "--version",
        version,
        "--key",
        key,
        "--out",
        out,
    ])
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn ride_code_keygen_never_overwrites_a_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("channel.json");
    let first = run(&[
        "ride-code",
        "keygen",
        "--alg",
        "p256",
        "--seed",
        "1",
        "--out",
        path_str(&key),
    ]);
    assert!(first.status.success());
    let before = std::fs::read(&key).unwrap();
    let again = run(&[
        "ride-code",
        "keygen",
        "--alg",
        "p256",
        "--seed",
        "2",
        "--out",
        path_str(&key),
    ]);
    assert_refused(&again, path_str(&key));
    assert_eq!(
        std::fs::read(&key).unwrap(),
        before,
        "the key file was changed"
    );
}

#[test]
fn ride_code_qr_refuses_text_that_is_not_a_ride_code() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("code.png");
    // The README's placeholder, as a user might paste it.
    let out = run(&["ride-code", "qr", "ESSC1....", "--png", path_str(&png)]);
    assert_refused(&out, "not a ride code");
    assert!(!png.exists(), "a PNG was drawn for a placeholder");
}

#[test]
fn depot_report_on_a_mistyped_database_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.db");
    for args in [
        vec!["depot", "report", "--json", "--db"],
        vec!["depot", "export", "--db"],
        vec!["depot", "operator-key", "--db"],
    ] {
        let mut args = args.clone();
        args.push(path_str(&typo));
        let out = run(&args);
        assert_refused(&out, "no depot database");
        assert!(!typo.exists(), "{args:?} created a database");
    }
}

#[test]
fn journal_show_on_a_folder_that_is_not_a_journal_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    let out = run(&["journal", "show", path_str(dir.path())]);
    assert_refused(&out, "not a journal folder");
    let missing = dir.path().join("missing");
    let out = run(&["journal", "show", path_str(&missing)]);
    assert_refused(&out, "not a journal folder");
}

#[test]
fn demo_refuses_a_data_folder_that_already_holds_a_day() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("day");
    let small = ["--buses", "1", "--taps-per-bus", "5", "--json", "--data"];
    let mut args = vec!["demo"];
    args.extend(small);
    args.push(path_str(&data));
    let first = run(&args);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let again = run(&args);
    assert_refused(&again, "--data must be a new or empty folder");
}

#[test]
fn logs_written_to_a_file_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["journal", "show"])
        .arg(dir.path().join("missing"))
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    // An error path, and a replay that logs one line per decision at debug.
    assert!(!out.stderr.contains(&0x1b), "escape codes in piped logs");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/replay");
    let out = bin()
        .args(["replay", "--cards"])
        .arg(fixtures.join("cards.json"))
        .arg(fixtures.join("events.jsonl"))
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.stderr.is_empty(),
        "trace logging printed nothing to check"
    );
    assert!(!out.stderr.contains(&0x1b), "escape codes in piped logs");
}

#[test]
fn errors_about_a_file_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("op.key");
    assert!(run(&["blacklist", "keygen", "--out", path_str(&key)])
        .status
        .success());
    let csv = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/blacklist.csv");
    let snap = dir.path().join("snap.bin");
    let built = build_snapshot(path_str(&csv), "1", path_str(&key), path_str(&snap));
    assert!(built.status.success());
    // One bit flipped in the payload: the CRC catches it, and the error says which file.
    let mut bytes = std::fs::read(&snap).unwrap();
    let last = bytes.len() - 70;
    bytes[last] ^= 1;
    let bad = dir.path().join("bad.bin");
    std::fs::write(&bad, bytes).unwrap();
    assert_refused(&run(&["blacklist", "info", path_str(&bad)]), path_str(&bad));
    assert_refused(
        &run(&["blacklist", "check", path_str(&bad), "37140000000000000001"]),
        path_str(&bad),
    );
    let not_csv = dir.path().join("not.csv");
    std::fs::write(&not_csv, "{").unwrap();
    let out = build_snapshot(path_str(&not_csv), "1", path_str(&key), path_str(&snap));
    assert_refused(&out, path_str(&not_csv));
    let out = build_snapshot(path_str(&csv), "1", path_str(&not_csv), path_str(&snap));
    assert_refused(&out, path_str(&not_csv));
}

#[test]
fn files_that_no_bus_would_ever_use_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let channel = dir.path().join("channel.json");
    assert!(run(&[
        "ride-code",
        "keygen",
        "--alg",
        "p256",
        "--seed",
        "3",
        "--out",
        path_str(&channel)
    ])
    .status
    .success());
    let out = run(&[
        "ride-code",
        "issue",
        "--key",
        path_str(&channel),
        "--channel",
        "1",
        "--key-id",
        "1",
        "--account",
        "1",
        "--card",
        "37140000000000000001",
        "--category",
        "adult",
        "--cert-not-before",
        "100",
        "--cert-not-after",
        "50",
        "--generated-at",
        "60",
        "--counter",
        "1",
    ]);
    assert_refused(&out, "never be valid");
    assert!(out.stdout.is_empty(), "a code was printed");

    let key = dir.path().join("op.key");
    assert!(run(&["blacklist", "keygen", "--out", path_str(&key)])
        .status
        .success());
    let csv = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/blacklist.csv");
    let snap = dir.path().join("v0.bin");
    let out = build_snapshot(path_str(&csv), "0", path_str(&key), path_str(&snap));
    assert_refused(&out, "--version must be 1 or more");
    assert!(!snap.exists());
}

#[test]
fn blacklist_build_refuses_a_public_key_where_the_signing_key_belongs() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("op.key");
    assert!(run(&["blacklist", "keygen", "--out", path_str(&key)])
        .status
        .success());
    let public = dir.path().join("op.key.pub");
    let csv = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/blacklist.csv");
    let snap = dir.path().join("snap.bin");
    let out = build_snapshot(path_str(&csv), "1", path_str(&public), path_str(&snap));
    assert_refused(&out, "not an operator signing key file");
    assert!(!snap.exists(), "a snapshot no bus would take was written");
    // The signing key itself still works.
    let out = build_snapshot(path_str(&csv), "1", path_str(&key), path_str(&snap));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
