//! The operator's signing key kept apart from the station (the security review's finding 4):
//! the station pins only the public key, asks for what it needs signed, the operator signs it
//! on another machine (`operator sign`), and the station imports and serves the signed files.
//! Played with the real command line and a real upload over loopback TCP.

mod depot_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use depot_support::*;
use fare_validator::depot::Store;
use fare_validator::signed;
use fare_validator::upload::{self, downlink::DownlinkDir};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fare-validator"))
}

fn run(args: &[&str], paths: &[&Path]) -> Output {
    let out = bin().args(args).args(paths).output().unwrap();
    assert!(out.status.code().is_some(), "{out:?}");
    out
}

fn ok(args: &[&str], paths: &[&Path]) -> serde_json::Value {
    let out = run(args, paths);
    assert!(out.status.success(), "{args:?}: {out:?}");
    let last = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(last.lines().last().unwrap_or("null")).unwrap()
}

/// The operator's machine: a key file (and its floor) in a folder of its own.
struct Operator {
    key: PathBuf,
    public: signed::OperatorPublicKey,
}

impl Operator {
    fn new(dir: &Path, seed: u8) -> Operator {
        std::fs::create_dir_all(dir).unwrap();
        let key = dir.join("operator.key");
        let sk = signed::signing_key_from_seed([seed; 32]);
        signed::write_signing_key(&key, &sk).unwrap();
        Operator {
            key,
            public: sk.verifying_key(),
        }
    }

    /// `operator sign` on `request`, the bundle next to it.
    fn sign(&self, request: &Path) -> (Output, PathBuf) {
        let bundle = request.with_extension("fvbundle");
        let out = run(
            &["operator", "sign", "--key"],
            &[
                &self.key,
                Path::new("--request"),
                request,
                Path::new("--out"),
                &bundle,
            ],
        );
        (out, bundle)
    }
}

/// One round at the station: sign-request, the operator's signature, import-signed.
fn sign_round(db: &Path, op: &Operator, name: &str) -> serde_json::Value {
    let request = db.with_file_name(format!("{name}.fvreq"));
    let asked = ok(
        &["depot", "sign-request", "--db"],
        &[db, Path::new("--out"), &request],
    );
    let (out, bundle) = op.sign(&request);
    assert!(out.status.success(), "{out:?}");
    let imported = ok(&["depot", "import-signed", "--db"], &[db, &bundle]);
    assert_eq!(
        asked["entries"].as_array().unwrap().len(),
        imported["imported"].as_array().unwrap().len()
    );
    asked
}

fn kinds(v: &serde_json::Value) -> Vec<(String, u64, u64)> {
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["version"].as_u64().unwrap(),
                e["base_version"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn lost(db: &Path, card: &str) {
    ok(
        &[
            "depot",
            "blacklist",
            "add",
            "--card",
            card,
            "--reason",
            "lost",
            "--db",
        ],
        &[db],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_signed_files_reach_the_bus_and_the_station_never_holds_the_signing_key() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(&tmp.path().join("operator-machine"), 41);
    let db = tmp.path().join("depot.db");
    drop(store(&db, 1));
    let pub_hex = signed::public_key_hex(&op.public);
    let printed = run(
        &["depot", "operator-key", "--pub", &pub_hex, "--db"],
        &[&db],
    );
    assert_eq!(String::from_utf8_lossy(&printed.stdout).trim(), pub_hex);
    lost(&db, "37140000000000000009");
    ok(
        &["depot", "publish", "fares", "fixtures/fares.toml", "--db"],
        &[&db],
    );
    let first = sign_round(&db, &op, "round-1");
    assert_eq!(
        kinds(&first),
        [
            ("blacklist_snapshot".to_string(), 1, 0),
            ("fare_table".to_string(), 1, 0)
        ]
    );

    let bus = tmp.path().join("bus");
    card_journal(&bus, 3);
    DownlinkDir::new(&bus).pin_operator_key(&op.public).unwrap();
    let st = station(Store::open(&db).unwrap()).await;
    let r = upload::upload(&bus, st.addr(), &terminal_id(0), &secret(0))
        .await
        .unwrap();
    assert_eq!(r.installed, ["BlacklistSnapshot@1", "FareTable@1"]);
    assert!(r.refused.is_empty(), "{:?}", r.refused);
    st.shutdown().await;

    // A second counter action: the station asks for the snapshot and the delta from the
    // version the bus holds; the bus gets the delta.
    lost(&db, "37140000000000000017");
    let second = sign_round(&db, &op, "round-2");
    assert_eq!(
        kinds(&second),
        [
            ("blacklist_snapshot".to_string(), 2, 0),
            ("blacklist_delta".to_string(), 2, 1)
        ]
    );
    let st = station(Store::open(&db).unwrap()).await;
    let r = upload::upload(&bus, st.addr(), &terminal_id(0), &secret(0))
        .await
        .unwrap();
    assert_eq!(r.installed, ["BlacklistDelta@2"]);
    st.shutdown().await;

    // Nothing in the station's files gives the signing key away.
    assert!(Store::open(&db).unwrap().operator_key().unwrap().is_none());
    let seed = signed::signing_key_from_seed([41; 32]).to_bytes();
    for suffix in ["", "-wal"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let bytes = std::fs::read(PathBuf::from(p)).unwrap_or_default();
        assert!(
            !bytes.windows(32).any(|w| w == seed),
            "seed in depot.db{suffix}"
        );
    }
}

#[test]
fn a_restored_station_gets_no_older_version_signed_and_a_forged_bundle_is_not_imported() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(&tmp.path().join("operator-machine"), 41);
    let pub_hex = signed::public_key_hex(&op.public);
    let station_at = |name: &str, actions: u32| {
        let db = tmp.path().join(name);
        drop(store(&db, 1));
        let pinned = run(
            &["depot", "operator-key", "--pub", &pub_hex, "--db"],
            &[&db],
        );
        assert!(pinned.status.success(), "{pinned:?}");
        for n in 0..actions {
            lost(&db, &format!("371400000000000000{:02}", n + 10));
        }
        db
    };
    // The operator has signed blacklist version 2 ...
    let live = station_at("live.db", 2);
    sign_round(&live, &op, "live");
    // ... so a station restored from a backup at version 1 cannot get version 1 signed again.
    let restored = station_at("restored.db", 1);
    let request = tmp.path().join("restored.fvreq");
    ok(
        &["depot", "sign-request", "--db"],
        &[&restored, Path::new("--out"), &request],
    );
    let (out, bundle) = op.sign(&request);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("below version 2"),
        "{out:?}"
    );
    assert!(!bundle.exists(), "nothing signed");

    // A bundle signed by another key is refused whole: nothing imported, nothing served.
    let other = Operator::new(&tmp.path().join("someone-else"), 42);
    let (out, forged) = other.sign(&request);
    assert!(out.status.success(), "{out:?}");
    let out = run(&["depot", "import-signed", "--db"], &[&restored, &forged]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not signed by the operator key"),
        "{out:?}"
    );
    let s = Store::open(&restored).unwrap();
    assert!(s.signed_blacklist_after(0).unwrap().is_none());
}
