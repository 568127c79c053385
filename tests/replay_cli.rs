//! The binary's `replay` and `journal show` on fixture files, line by line.

mod common;

use std::process::Command;

use common::fixture;
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fare-validator"))
}

fn json_lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn replay_of_fixture_events_matches_the_expected_file_line_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["replay", "--cards"])
        .arg(fixture("replay/cards.json"))
        .args(["--keys"])
        .arg(fixture("ride-code-keys.json"))
        .arg("--journal")
        .arg(dir.path())
        .arg(fixture("replay/events.jsonl"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = json_lines(&out.stdout);
    let want = json_lines(&std::fs::read(fixture("replay/expected.jsonl")).unwrap());
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "decision line {}", i + 1);
    }

    // journal show prints exactly the accepted lines' records.
    let show = bin()
        .args(["journal", "show"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(show.status.success());
    let records = json_lines(&show.stdout);
    let accepted: Vec<&Value> = got.iter().filter(|l| l["result"] == "accepted").collect();
    assert_eq!(records.len(), accepted.len());
    for (r, a) in records.iter().zip(accepted) {
        for k in ["seq", "at", "media", "id", "fare_fen", "balance_fen"] {
            assert_eq!(r[k], a[k], "{k}");
        }
    }
}

#[test]
fn unreadable_input_files_exit_non_zero_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad_cards = dir.path().join("cards.json");
    std::fs::write(&bad_cards, r#"{"cards": [{"card_no": "12"}]}"#).unwrap();
    let cases: Vec<Vec<std::ffi::OsString>> = vec![
        vec![
            "replay".into(),
            "--cards".into(),
            bad_cards.clone().into(),
            fixture("replay/events.jsonl").into(),
        ],
        vec![
            "replay".into(),
            "--cards".into(),
            dir.path().join("missing.json").into(),
            fixture("replay/events.jsonl").into(),
        ],
        vec![
            "replay".into(),
            "--cards".into(),
            fixture("replay/cards.json").into(),
            "--fares".into(),
            fixture("replay/cards.json").into(),
            fixture("replay/events.jsonl").into(),
        ],
    ];
    for args in cases {
        let out = bin().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

#[test]
fn events_can_come_from_standard_input() {
    use std::io::Write;
    let mut child = bin()
        .args(["replay", "--cards"])
        .arg(fixture("replay/cards.json"))
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(common::tap("2026-11-28T07:00:00+08:00", 1).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(json_lines(&out.stdout)[0]["seq"], 1);
}

#[test]
fn replay_takes_the_blacklist_as_csv_or_as_a_signed_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("operator.key");
    let snap = dir.path().join("blacklist.snap");
    let ok = |args: &[&std::ffi::OsStr]| {
        let out = bin().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    ok(&[
        "blacklist".as_ref(),
        "keygen".as_ref(),
        "--out".as_ref(),
        key.as_os_str(),
    ]);
    let csv = fixture("blacklist.csv");
    ok(&[
        "blacklist".as_ref(),
        "build".as_ref(),
        "--csv".as_ref(),
        csv.as_os_str(),
        "--version".as_ref(),
        "3".as_ref(),
        "--key".as_ref(),
        key.as_os_str(),
        "--out".as_ref(),
        snap.as_os_str(),
    ]);
    let events = dir.path().join("events.jsonl");
    let taps = [
        common::tap("2026-11-28T07:00:00+08:00", 9),
        common::tap("2026-11-28T07:00:10+08:00", 10),
        common::tap("2026-11-28T07:00:20+08:00", 10),
        common::tap("2026-11-28T07:00:30+08:00", 1),
    ];
    std::fs::write(&events, taps.join("\n")).unwrap();
    for list in [csv.clone(), snap.clone()] {
        let out = ok(&[
            "replay".as_ref(),
            "--cards".as_ref(),
            fixture("replay/cards.json").as_os_str(),
            "--blacklist".as_ref(),
            list.as_os_str(),
            events.as_os_str(),
        ]);
        let reasons: Vec<String> = json_lines(&out)
            .iter()
            .map(|l| l["reason"].as_str().unwrap_or("accepted").to_string())
            .collect();
        assert_eq!(
            reasons,
            ["blacklisted", "blacklisted", "card_blocked", "accepted"],
            "{}",
            list.display()
        );
    }
}
