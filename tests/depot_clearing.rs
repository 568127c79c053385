//! The clearing views: gaps are reported, a ride code accepted on two buses is charged once,
//! the CSV export flags it, and counter actions make blacklist versions.

mod depot_support;

use std::process::Command;

use depot_support::*;
use fare_validator::depot::store::Received;
use fare_validator::depot::Store;
use fare_validator::fare::FareRule;
use fare_validator::journal::Record;
use fare_validator::upload;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fare-validator"))
}

fn received(seqs: impl IntoIterator<Item = u64>) -> Vec<Received> {
    seqs.into_iter()
        .map(|s| {
            let mut record = card_record(s);
            record.seq = s;
            Received {
                record,
                raw: record.encode(),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_lost_in_a_corrupt_journal_slot_is_declared_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let st = station(store(&db, 1)).await;
    let dir = tmp.path().join("bus");
    card_journal(&dir, 100);
    let seg = dir.join(format!("seg-{:020}.jnl", 1));
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[49 * 96 + 30] ^= 0xFF; // seq 50
    std::fs::write(&seg, bytes).unwrap();

    let r = upload::upload(&dir, st.addr(), &terminal_id(0), &secret(0))
        .await
        .unwrap();
    assert_eq!(
        r.acked_seq, 100,
        "the loss is declared, so the upload completes"
    );
    st.shutdown().await;
    let t = &Store::open(&db).unwrap().report().unwrap().terminals[&terminal_id(0)];
    assert_eq!((t.records, t.max_seq), (99, 100));
    assert_eq!(t.gaps, vec![[50, 50]]);
    assert_eq!(t.declared_lost, vec![[50, 50]]);
}

#[test]
fn hole_in_the_uploaded_sequence_holds_the_ack_and_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = store(&tmp.path().join("depot.db"), 1);
    let id = terminal_id(0);
    assert_eq!(
        s.store_batch(&id, 0, 1, &received(1..=5))
            .unwrap()
            .ack
            .contiguous_seq,
        5
    );
    let ack = s.store_batch(&id, 0, 8, &received(8..=10)).unwrap().ack;
    assert_eq!((ack.contiguous_seq, ack.max_seq, ack.stored), (5, 10, 3));
    let t = &s.report().unwrap().terminals[&id];
    assert_eq!((t.gaps.clone(), t.declared_lost.len()), (vec![[6, 7]], 0));
    // The missing records arrive later (and a batch arrives twice): the ack catches up.
    let ack = s.store_batch(&id, 0, 6, &received(6..=10)).unwrap().ack;
    assert_eq!((ack.contiguous_seq, ack.stored), (10, 2));
    assert!(s.report().unwrap().terminals[&id].gaps.is_empty());
    assert_eq!(s.record_count().unwrap(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ride_code_accepted_on_two_buses_is_a_conflict_listing_both_claims() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let st = station(store(&db, 2)).await;
    let t0 = 1_795_824_000;
    let bus0: Vec<Record> = (1..=3)
        .map(card_record)
        .chain([qr_record(2, 1001, 5, t0), qr_record(3, 1001, 5, t0)])
        .collect();
    let bus1 = vec![
        qr_record(2, 1001, 5, t0 + 60),
        qr_record(2, 1001, 6, t0 + 90),
    ];
    for (n, mut recs) in [bus0, bus1].into_iter().enumerate() {
        // Each record names the rule that priced it, as records of format 5 do.
        for r in &mut recs {
            r.rule = match r.kind {
                fare_validator::journal::RecordKind::QrRide => FareRule::RideCodeCategory,
                _ => FareRule::BaseFare,
            };
        }
        let dir = tmp.path().join(terminal_id(n));
        write_journal(&dir, recs);
        upload::upload(&dir, st.addr(), &terminal_id(n), &secret(n as u8))
            .await
            .unwrap();
    }
    st.shutdown().await;

    let out = bin()
        .args(["depot", "report", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // No claim is picked: both are listed for clearing and neither is charged here.
    let conflicts = v["qr_conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1);
    let claims: Vec<(&str, u64)> = conflicts[0]["claims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["terminal"].as_str().unwrap(), c["seq"].as_u64().unwrap()))
        .collect();
    let (t0_id, t1_id) = (terminal_id(0), terminal_id(1));
    assert_eq!(claims, [(t0_id.as_str(), 4), (t1_id.as_str(), 1)]);
    assert_eq!(v["terminals"][&t0_id]["fare_fen"], 4 * 200);
    assert_eq!(v["terminals"][&t0_id]["fare_fen_in_conflict"], 200);
    assert_eq!(v["terminals"][&t1_id]["fare_fen"], 200);
    assert_eq!(v["terminals"][&t1_id]["fare_fen_in_conflict"], 200);
    assert_eq!(v["terminals"][terminal_id(1)]["records"], 2);

    let csv = tmp.path().join("clearing.csv");
    let out = bin()
        .args(["depot", "export", "--db"])
        .arg(&db)
        .arg("--out")
        .arg(&csv)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], fare_validator::cli::depot::EXPORT_HEADER);
    assert_eq!(lines.len(), 1 + 7);
    let header: Vec<&str> = lines[0].split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (conflict, rule) = (column("conflict"), column("rule"));
    let cells = |line: &str| line.split(',').map(str::to_string).collect::<Vec<String>>();
    for line in &lines[1..] {
        let row = cells(line);
        assert_eq!(row.len(), header.len(), "{line}");
        let priced_by = if row[2] == "qr_ride" {
            FareRule::RideCodeCategory
        } else {
            FareRule::BaseFare
        };
        assert_eq!(row[rule], priced_by.as_str(), "{line}");
    }
    let flagged: Vec<&&str> = lines[1..]
        .iter()
        .filter(|l| cells(l)[conflict] == "1")
        .collect();
    assert_eq!(flagged.len(), 2);
    assert!(flagged[0].starts_with(&format!("{},4,qr_ride,", terminal_id(0))));
    assert!(flagged[1].starts_with(&format!("{},1,qr_ride,", terminal_id(1))));
}

#[test]
fn counter_actions_make_blacklist_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let run = |args: &[&str]| {
        let out = bin().args(args).arg("--db").arg(&db).output().unwrap();
        let v = serde_json::from_slice::<serde_json::Value>(&out.stdout).ok();
        (out.status.code(), v)
    };
    let (code, v) = run(&["depot", "terminal", "add", "bus-0001"]);
    assert_eq!(code, Some(0));
    assert_eq!(v.unwrap()["secret"].as_str().unwrap().len(), 64);
    assert_eq!(run(&["depot", "terminal", "add", "bus-0001"]).0, Some(2));

    let card = "37140000000000000009";
    let steps: [(&[&str], u64); 4] = [
        (&["add", "--card", card, "--reason", "lost"], 1), // 挂失
        (&["remove", "--card", card, "--reason", "lost"], 2), // 解挂
        (&["add", "--card", card, "--reason", "cancelled"], 3), // 注销
        (&["add", "--account", "2:1001", "--reason", "arrears"], 4),
    ];
    for (args, version) in steps {
        let mut full = vec!["depot", "blacklist"];
        full.extend_from_slice(args);
        let (code, v) = run(&full);
        assert_eq!(code, Some(0), "{args:?}");
        assert_eq!(v.unwrap()["version"], version);
    }
    // 解挂 cannot lift a cancellation.
    let (code, _) = run(&[
        "depot",
        "blacklist",
        "remove",
        "--card",
        card,
        "--reason",
        "lost",
    ]);
    assert_eq!(code, Some(2));
    let s = Store::open(&db).unwrap();
    assert_eq!(s.blacklist_version().unwrap(), 4);
    assert_eq!(s.blacklist().unwrap().len(), 2);
    assert_eq!(s.blacklist_changes_after(2, 10).unwrap().unwrap().len(), 2);
}

#[test]
fn upload_command_prints_what_was_acknowledged_and_pins_the_operator_key() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("depot.db");
    let out = bin()
        .args(["depot", "terminal", "add", "bus-0007", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let added: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut serve = bin()
        .args(["depot", "serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(serve.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let listening: serde_json::Value = serde_json::from_str(&line).unwrap();
    let dir = tmp.path().join("bus");
    card_journal(&dir, 300);
    // The operator's key, made apart and imported on purpose (a station never makes one).
    let key = tmp.path().join("operator.key");
    let made = bin()
        .args(["blacklist", "keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(made.status.success());
    let imported = bin()
        .args(["depot", "operator-key", "--db"])
        .arg(&db)
        .arg("--import")
        .arg(&key)
        .output()
        .unwrap();
    let operator_pub = String::from_utf8(imported.stdout).unwrap();
    let upload = |secret: &str| {
        let file = tmp.path().join("secret");
        std::fs::write(&file, secret).unwrap();
        bin()
            .args(["upload", "--terminal", "bus-0007", "--secret-file"])
            .arg(&file)
            .args(["--depot", listening["listening"].as_str().unwrap()])
            .args(["--operator-pub", operator_pub.trim()])
            .arg("--journal")
            .arg(&dir)
            .env_remove("FARE_VALIDATOR_SECRET")
            .output()
            .unwrap()
    };
    let wrong = upload(&"00".repeat(32));
    let ok = upload(added["secret"].as_str().unwrap());
    serve.kill().unwrap();
    serve.wait().unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    assert_eq!(ok.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(
        (report["uploaded"].as_u64(), report["acked_seq"].as_u64()),
        (Some(300), Some(300))
    );
    assert!(dir.join("downlink/operator.pub").exists());
}
