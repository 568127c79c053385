//! The depot's verified-certificate set: each certificate the buses met is checked once with
//! the published channel keys; the set lists those that verified while their key is usable
//! and they have not expired; versions and deltas agree; and what the operator signs
//! installs on a bus.

use fare_validator::depot::Store;
use fare_validator::ride_code::format::CODE_BYTES;
use fare_validator::ride_code::issuer::SimChannels;
use fare_validator::ride_code::{CertSet, RideCode};
use fare_validator::signed::{FileKind, SignedError};
use fare_validator::types::{CardNo, RiderCategory};

const T0: i64 = 1_795_824_000;

fn code(ch: &mut SimChannels, channel: u16, account: u64) -> [u8; CODE_BYTES] {
    let card = CardNo::from_u128(3714_0000_0000_0000_0000u128 + u128::from(account)).unwrap();
    let text = ch
        .issue(channel, account, card, RiderCategory::Adult, T0 as u32, 1)
        .unwrap();
    RideCode::parse(&text).unwrap().bytes
}

fn digest(b: &[u8; CODE_BYTES]) -> fare_validator::ride_code::CertDigest {
    RideCode::from_bytes(*b).unwrap().cert_digest()
}

#[test]
fn each_certificate_is_checked_once_and_leaves_the_set_on_expiry_or_revocation() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(&tmp.path().join("depot.db")).unwrap();
    // The same channel keys (same seed); certificates of `early` expire at T0 + 100.
    let mut early = SimChannels::new(7, (T0 as u32 - 86_400, T0 as u32 + 100));
    let mut late = SimChannels::new(7, (T0 as u32 - 86_400, T0 as u32 + 86_400 * 30));
    let mut key_file = late.key_file();
    store
        .publish("keys", serde_json::to_string(&key_file).unwrap().as_bytes())
        .unwrap();
    let (a, b) = (code(&mut early, 1, 11), code(&mut late, 2, 22));
    // A certificate its channel never signed (a bit of the account flipped).
    let mut forged = code(&mut late, 4, 44);
    forged[12] ^= 1;
    let proofs = [(1, a), (2, b), (3, forged), (4, code(&mut late, 2, 22))];
    store.store_proofs("bus-0001", 5, &proofs).unwrap();
    store.store_proofs("bus-0002", 6, &proofs[..2]).unwrap();

    let u = store.update_cert_set(T0).unwrap();
    assert_eq!((u.checked, u.verified, u.added, u.version), (3, 2, 2, 1));
    let v1 = store.cert_set().unwrap();
    assert!(v1.contains(&digest(&a)) && v1.contains(&digest(&b)));
    assert!(!v1.contains(&digest(&forged)));
    let keys = fare_validator::ride_code::ChannelKeys::from_file(&key_file).unwrap();
    assert_eq!(v1.keys_digest(), &keys.material_digest());

    // Nothing new: nothing checked again, no new version.
    let u = store.update_cert_set(T0 + 10).unwrap();
    assert_eq!((u.checked, u.added, u.removed, u.version), (0, 0, 0, 1));

    // `a` expires.
    let u = store.update_cert_set(T0 + 101).unwrap();
    assert_eq!((u.checked, u.removed, u.version), (0, 1, 2));
    let v2 = store.cert_set().unwrap();
    assert!(!v2.contains(&digest(&a)) && v2.contains(&digest(&b)));
    assert_eq!(
        v1.with_delta(&store.cert_set_delta_from(1).unwrap().unwrap()),
        Ok(v2.clone())
    );

    // Channel 2's key revoked: `b` leaves, with no new check (same key material).
    key_file
        .channels
        .iter_mut()
        .filter(|c| c.channel_id == 2)
        .for_each(|c| c.revoked = true);
    store
        .publish("keys", serde_json::to_string(&key_file).unwrap().as_bytes())
        .unwrap();
    let u = store.update_cert_set(T0 + 102).unwrap();
    assert_eq!((u.checked, u.removed, u.version, u.entries), (0, 1, 3, 0));
    let v3 = store.cert_set().unwrap();
    assert!(v3.is_empty());
    for (from, set) in [(1, &v1), (2, &v2)] {
        let delta = store.cert_set_delta_from(from).unwrap().unwrap();
        assert_eq!(set.with_delta(&delta), Ok(v3.clone()), "from {from}");
    }

    // New key material (channel 4 gets another key): every certificate is checked again
    // and only a snapshot reaches the new version.
    let other = SimChannels::new(8, (T0 as u32 - 86_400, T0 as u32 + 86_400 * 30)).key_file();
    key_file.channels[3].public_key = other.channels[3].public_key.clone();
    store
        .publish("keys", serde_json::to_string(&key_file).unwrap().as_bytes())
        .unwrap();
    let u = store.update_cert_set(T0 + 103).unwrap();
    assert_eq!((u.checked, u.version), (3, 4));
    assert_eq!(store.cert_set_delta_from(3).unwrap(), None);
}

#[test]
fn the_signed_set_installs_on_a_bus() {
    use fare_validator::upload::downlink::{describe, DownlinkDir, DownlinkError};
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(&tmp.path().join("depot.db")).unwrap();
    let operator = fare_validator::signed::signing_key_from_seed([3; 32]);
    store.set_operator_pub(&operator.verifying_key()).unwrap();
    let mut ch = SimChannels::new(7, (T0 as u32 - 86_400, T0 as u32 + 86_400 * 30));
    store
        .publish(
            "keys",
            serde_json::to_string(&ch.key_file()).unwrap().as_bytes(),
        )
        .unwrap();
    let bus = DownlinkDir::new(&tmp.path().join("bus"));
    bus.pin_operator_key(&operator.verifying_key()).unwrap();
    let mut held = CertSet::empty();
    let mut first_snapshot = None;
    for (round, account) in [(1u64, 1u64), (2, 2), (3, 3)] {
        let c = code(&mut ch, 1 + (account % 8) as u16, account);
        store.store_proofs("bus-0001", 1, &[(round, c)]).unwrap();
        assert_eq!(store.update_cert_set(T0).unwrap().version, round);
        let request = store.signing_request().unwrap();
        let kinds: Vec<_> = request.iter().map(|e| (e.kind, e.base_version)).collect();
        let mut want = vec![(FileKind::VerifiedCertSnapshot, 0)];
        // A delta from every version signed before (a bus may hold any of them).
        want.extend(
            (1..round)
                .rev()
                .map(|from| (FileKind::VerifiedCertDelta, from)),
        );
        let cert_kinds: Vec<_> = kinds
            .into_iter()
            .filter(|(k, _)| {
                matches!(
                    k,
                    FileKind::VerifiedCertSnapshot | FileKind::VerifiedCertDelta
                )
            })
            .collect();
        assert_eq!(cert_kinds, want, "round {round}");
        let dates = fare_validator::signed::Dates::starting(T0 as u32 - 60, 86_400);
        let (files, _) =
            fare_validator::signing::sign_request(&request, &Default::default(), dates, &operator)
                .unwrap();
        store
            .import_signed(&fare_validator::signing::encode_bundle(&files))
            .unwrap();
        // The session's downlink for the version the bus names in its hello: the delta when
        // it holds the version before, else the snapshot.
        let hello = fare_validator::upload::frame::HeldVersions {
            cert_set: held.version(),
            ..Default::default()
        };
        let files: Vec<_> = fare_validator::depot::downlink_for(&store, "bus-0001", &hello)
            .unwrap()
            .into_iter()
            .filter(|f| {
                matches!(
                    describe(f).unwrap().0,
                    FileKind::VerifiedCertSnapshot | FileKind::VerifiedCertDelta
                )
            })
            .collect();
        let want = if held.version() > 0 {
            FileKind::VerifiedCertDelta
        } else {
            FileKind::VerifiedCertSnapshot
        };
        assert_eq!(files.len(), 1, "round {round}");
        assert_eq!(describe(&files[0]), Some((want, round)));
        bus.install(&files[0], T0).unwrap();
        first_snapshot.get_or_insert(files[0].clone());
        held = bus.cert_set();
        assert_eq!(held, store.cert_set().unwrap());
        assert!(held.contains(&digest(&c)));
    }
    // A stale set (version 1's snapshot, replayed) and a forged one (signed by another key)
    // are refused, and the bus keeps the set it holds.
    let stale = first_snapshot.unwrap();
    assert!(matches!(
        bus.install(&stale, T0),
        Err(DownlinkError::Rollback {
            held: 3,
            file: 1,
            ..
        })
    ));
    let mut newer = store
        .cert_set()
        .unwrap()
        .diff(&CertSet::from_digests_checked_with(
            4,
            *held.keys_digest(),
            [[7u8; 32]],
        ));
    newer.keys_digest = *held.keys_digest();
    let dates = fare_validator::signed::Dates::starting(T0 as u32 - 60, 86_400);
    let other = fare_validator::signed::signing_key_from_seed([4; 32]);
    let forged = fare_validator::ride_code::cert_set::delta_file(&newer, dates, &other);
    assert!(matches!(
        bus.install(&forged, T0),
        Err(DownlinkError::Signed(SignedError::BadSignature))
    ));
    assert_eq!(bus.cert_set(), held);
    // The same delta signed by the operator is taken.
    let honest = fare_validator::ride_code::cert_set::delta_file(&newer, dates, &operator);
    assert_eq!(
        bus.install(&honest, T0).unwrap(),
        (FileKind::VerifiedCertDelta, 4)
    );
    assert!(bus.cert_set().contains(&[7u8; 32]));
}
