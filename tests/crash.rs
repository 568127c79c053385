//! Power cut: a replay killed with SIGKILL at a random moment loses nothing it reported.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::fixture;
use rand::{Rng, SeedableRng};
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fare-validator"))
}

/// Many taps of the fixture's good cards, each card every 61 s so none is a repeat.
fn events(n: usize) -> String {
    let cards = [1u32, 2, 3, 8, 9, 10, 13, 14, 15, 16, 17];
    let mut s = String::new();
    for i in 0..n {
        let at = 1_795_824_000 + (i as i64) * 61 / cards.len() as i64;
        let t = time::OffsetDateTime::from_unix_timestamp(at)
            .unwrap()
            .to_offset(time::macros::offset!(+8));
        let at = t
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        s.push_str(&common::tap(&at, cards[i % cards.len()]));
        s.push('\n');
    }
    s
}

fn show(dir: &std::path::Path) -> (Vec<Value>, String) {
    let out = bin().args(["journal", "show"]).arg(dir).output().unwrap();
    assert!(out.status.success());
    let recs = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (recs, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn sigkill_mid_replay_loses_no_reported_tap_and_restart_continues_the_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let ev_path = dir.path().join("events.jsonl");
    // Balances of 5000 fen last 25 adult fares: use enough taps to run for a while anyway.
    std::fs::write(&ev_path, events(20_000)).unwrap();
    let journal = dir.path().join("journal");
    let mut child = bin()
        .args(["replay", "--cards"])
        .arg(fixture("replay/cards.json"))
        .arg("--journal")
        .arg(&journal)
        .arg(&ev_path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Let it get going, then kill it at a random moment.
    let mut lines = Vec::new();
    while lines.len() < 20 {
        lines.push(
            rx.recv_timeout(Duration::from_secs(120))
                .expect("replay prints decisions"),
        );
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    std::thread::sleep(Duration::from_millis(rng.gen_range(0..200)));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    let printed: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let accepted: Vec<&Value> = printed
        .iter()
        .filter(|l| l["result"] == "accepted")
        .collect();
    assert!(
        !accepted.is_empty(),
        "the child ran long enough to accept taps"
    );

    let (records, _) = show(&journal);
    for a in &accepted {
        let seq = a["seq"].as_u64().unwrap();
        let r = records
            .iter()
            .find(|r| r["seq"] == seq)
            .unwrap_or_else(|| panic!("seq {seq} printed but not durable"));
        assert_eq!((&r["id"], &r["fare_fen"]), (&a["id"], &a["fare_fen"]));
    }
    let last_seq = records.last().map_or(0, |r| r["seq"].as_u64().unwrap());

    // A restart on the same journal continues the sequence.
    let mut child = bin()
        .args(["replay", "--cards"])
        .arg(fixture("replay/cards.json"))
        .arg("--journal")
        .arg(&journal)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(common::tap("2030-01-01T07:00:00+08:00", 17).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let line: Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line["seq"].as_u64(), Some(last_seq + 1));
}

#[test]
fn random_bytes_appended_to_the_newest_segment_are_reported_and_cut_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let out = bin()
        .args(["replay", "--cards"])
        .arg(fixture("replay/cards.json"))
        .arg("--journal")
        .arg(&journal)
        .arg(fixture("replay/events.jsonl"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let (before, _) = show(&journal);
    let seg = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jnl"))
        .max()
        .unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for len in [1usize, 95, 96, 97, 300] {
        let junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&junk).unwrap();
        drop(f);
        let (after, err) = show(&journal);
        assert_eq!(
            after, before,
            "junk of {len} bytes is never read as records"
        );
        assert!(err.contains("torn tail"), "reported: {err}");
        // Opening for writing cuts it.
        let (j, problems) = fare_validator::journal::Journal::open(&journal).unwrap();
        assert!(!problems.is_empty());
        assert_eq!(j.next_seq(), before.len() as u64 + 1);
        drop(j);
        let (_, err) = show(&journal);
        // Only the summary line remains, and it counts no problem.
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "cut on open: {err}");
        let summary: Value =
            serde_json::from_str(lines[0].trim_start_matches("fare-validator: journal ")).unwrap();
        assert_eq!(summary["summary"]["problems"], 0, "cut on open: {err}");
    }
}
