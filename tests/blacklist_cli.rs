//! The operator's commands end to end, as library calls: keygen, build, delta, info, check.

use fare_validator::blacklist::file::{open_delta, parse_snapshot_unverified};
use fare_validator::cli::blacklist::{execute, BlacklistCmd};
use fare_validator::signed::read_public_key;
use fare_validator::types::ListReason;

fn run(cmd: BlacklistCmd) -> Result<String, String> {
    let mut out = Vec::new();
    execute(cmd, &mut out)?;
    Ok(String::from_utf8(out).unwrap().trim().to_string())
}

#[test]
fn operator_builds_a_delta_that_unreports_a_found_card() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let public = run(BlacklistCmd::Keygen { out: p("op.key") }).unwrap();
    assert_eq!(public.len(), 64);
    assert!(
        run(BlacklistCmd::Keygen { out: p("op.key") }).is_err(),
        "never overwrites a key"
    );
    let pk = p("op.key.pub").display().to_string();

    std::fs::write(
        p("v7.csv"),
        "kind,id,reason\ncard,37140000000000000001,lost\ncard,37140000000000000002,replaced\n",
    )
    .unwrap();
    std::fs::write(
        p("v8.csv"),
        "kind,id,reason\ncard,37140000000000000002,replaced\naccount,2:5,arrears\n",
    )
    .unwrap();
    for (csv, version, out) in [("v7.csv", 7, "v7.snap"), ("v8.csv", 8, "v8.snap")] {
        run(BlacklistCmd::Build {
            csv: p(csv),
            version,
            key: p("op.key"),
            out: p(out),
        })
        .unwrap();
    }
    run(BlacklistCmd::Delta {
        from: p("v7.snap"),
        to: p("v8.snap"),
        key: p("op.key"),
        out: p("7-8.delta"),
    })
    .unwrap();

    let info: serde_json::Value = serde_json::from_str(
        &run(BlacklistCmd::Info {
            file: p("v7.snap"),
            public_key: Some(pk.clone()),
        })
        .unwrap(),
    )
    .unwrap();
    assert_eq!(info["kind"], "blacklist_snapshot");
    assert_eq!(
        (info["version"].as_u64(), info["entries"].as_u64()),
        (Some(7), Some(2))
    );
    assert_eq!(info["by_reason"]["lost"], 1);
    assert_eq!(info["signature_ok"], true);
    let delta_info: serde_json::Value = serde_json::from_str(
        &run(BlacklistCmd::Info {
            file: p("7-8.delta"),
            public_key: Some(pk.clone()),
        })
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (delta_info["adds"].as_u64(), delta_info["removes"].as_u64()),
        (Some(1), Some(1))
    );

    let check = |file: &str, id: &str| {
        run(BlacklistCmd::Check {
            file: p(file),
            id: id.into(),
            public_key: Some(pk.clone()),
        })
    };
    assert_eq!(check("v7.snap", "37140000000000000001").unwrap(), "lost");
    assert_eq!(
        check("v8.snap", "37140000000000000001").unwrap(),
        "not listed"
    );
    assert_eq!(check("v8.snap", "2:5").unwrap(), "arrears");
    assert!(check("v8.snap", "123").is_err());

    let delta = open_delta(
        &std::fs::read(p("7-8.delta")).unwrap(),
        &read_public_key(&pk).unwrap(),
    )
    .unwrap();
    assert_eq!((delta.from_version, delta.to_version), (7, 8));
    assert!(delta.changes.iter().any(|c| c.reason == ListReason::Lost));
}

#[test]
fn malformed_snapshots_are_errors_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    run(BlacklistCmd::Keygen { out: p("op.key") }).unwrap();
    std::fs::write(
        p("l.csv"),
        "kind,id,reason\ncard,37140000000000000001,lost\naccount,1:1,arrears\n",
    )
    .unwrap();
    run(BlacklistCmd::Build {
        csv: p("l.csv"),
        version: 1,
        key: p("op.key"),
        out: p("l.snap"),
    })
    .unwrap();
    let file = std::fs::read(p("l.snap")).unwrap();
    for n in 0..file.len() {
        assert!(parse_snapshot_unverified(&file[..n]).is_err());
    }
    // Flip every bit of the payload and fix nothing: the CRC must catch each one.
    for i in 112..file.len() {
        let mut f = file.clone();
        f[i] ^= 0x04;
        assert!(parse_snapshot_unverified(&f).is_err(), "byte {i}");
    }
}

#[test]
fn check_and_info_show_every_reason_of_a_card_listed_for_several() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    run(BlacklistCmd::Keygen { out: p("op.key") }).unwrap();
    std::fs::write(
        p("v1.csv"),
        "kind,id,reason\ncard,37140000000000000001,replaced\ncard,37140000000000000001,lost\n\
         card,37140000000000000002,lost\n",
    )
    .unwrap();
    std::fs::write(
        p("v2.csv"),
        "kind,id,reason\ncard,37140000000000000001,replaced\ncard,37140000000000000002,lost\n",
    )
    .unwrap();
    for (csv, version, out) in [("v1.csv", 1, "v1.snap"), ("v2.csv", 2, "v2.snap")] {
        run(BlacklistCmd::Build {
            csv: p(csv),
            version,
            key: p("op.key"),
            out: p(out),
        })
        .unwrap();
    }
    let check = |file: &str, id: &str| {
        run(BlacklistCmd::Check {
            file: p(file),
            id: id.to_string(),
            public_key: None,
        })
        .unwrap()
    };
    assert_eq!(check("v1.csv", "37140000000000000001"), "lost+replaced");
    assert_eq!(check("v1.snap", "37140000000000000001"), "lost+replaced");
    assert_eq!(check("v2.snap", "37140000000000000001"), "replaced");
    let info: serde_json::Value = serde_json::from_str(
        &run(BlacklistCmd::Info {
            file: p("v1.snap"),
            public_key: None,
        })
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (
            info["entries"].as_u64(),
            info["several_reasons"].as_u64(),
            info["by_reason"]["lost"].as_u64(),
            info["format"].as_u64()
        ),
        (
            Some(2),
            Some(1),
            Some(2),
            Some(u64::from(fare_validator::signed::FORMAT_VERSION))
        )
    );
    // The delta between them lifts lost from card …0001 and nothing else.
    run(BlacklistCmd::Delta {
        from: p("v1.snap"),
        to: p("v2.snap"),
        key: p("op.key"),
        out: p("1-2.delta"),
    })
    .unwrap();
    let pk = read_public_key(p("op.key.pub").to_str().unwrap()).unwrap();
    let delta = open_delta(&std::fs::read(p("1-2.delta")).unwrap(), &pk).unwrap();
    assert_eq!(delta.changes.len(), 1);
    assert_eq!(
        (delta.changes[0].op, delta.changes[0].reason),
        (
            fare_validator::blacklist::ChangeOp::Remove,
            ListReason::Lost
        )
    );
}
