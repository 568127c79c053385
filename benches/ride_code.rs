//! One ride code scan (checks 1–10) for each algorithm: a first-seen holder (certificate cache
//! cold: a fresh verifier per iteration, two signature checks), a first-seen holder the
//! fleet's verified-certificate set lists (the holder key decoded, one signature check) and a
//! returning holder (cache warm: one signature check). Also the replay cache's check-and-remember.
//!
//! Where a scan's time goes (`ride_code/{sm2,p256}_stage/*`): each step of a returning or
//! listed first-seen holder's scan, through the same crate calls as `src/ride_code/crypto.rs`
//! (the hashes on inputs of the same lengths as Z_A's and e's). And what a table per cached
//! SM2 holder key would buy (`ride_code/sm2_equation/*`): the verification equation
//! [s]G + [t]P as efficient-sm2 computes it, against RustCrypto `wnaf` (already in the tree
//! through `primeorder`) with a precomputed table for the holder's point and one for G, and
//! the cost of building a table (docs/ride-codes.md, "Why no precomputation per holder key").
//! Both comparisons also run alternated call by call and print their medians on standard
//! error (`... alternated, median: ...`), the figures to trust on a shared machine.
//!
//! cargo bench --bench ride_code -- --warm-up-time 1 --measurement-time 3

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use fare_validator::ride_code::issuer;
use fare_validator::ride_code::{
    Alg, CertSet, ChannelKeys, ReplayCache, ReplayKey, RideCode, RideCodeConfig, Verifier,
    SM2_SIGNER_ID,
};

const NOW: i64 = 1_795_824_000;

/// A verifier trusting one channel key of `alg`, and a code from a holder of that channel.
fn setup(alg: Alg) -> (Verifier, String) {
    let world = issuer::OneChannel::new(alg, NOW, 3_600);
    let text = world.text(NOW as u32, 1);
    (Verifier::new(world.keys, RideCodeConfig::default()), text)
}

fn scans(c: &mut Criterion) {
    for (alg, name) in [(Alg::P256, "p256"), (Alg::Sm2, "sm2")] {
        let (verifier, text) = setup(alg);
        let keys = verifier.keys().clone();
        c.bench_function(&format!("ride_code/{name}/first_seen_holder"), |b| {
            b.iter_batched(
                || Verifier::new(keys.clone(), RideCodeConfig::default()),
                |mut v| {
                    let r = v.verify(black_box(&text), NOW);
                    assert!(r.is_ok());
                    (v, r)
                },
                BatchSize::SmallInput,
            )
        });
        // A first-seen holder the fleet's verified-certificate set lists: the holder key's
        // decoding and the code's check, no channel signature.
        let digest = RideCode::parse(&text).unwrap().cert_digest();
        let set = std::sync::Arc::new(CertSet::from_digests(1, &keys, [digest]));
        c.bench_function(&format!("ride_code/{name}/first_seen_listed_holder"), |b| {
            b.iter_batched(
                || {
                    let mut v = Verifier::new(keys.clone(), RideCodeConfig::default());
                    v.set_cert_set(set.clone());
                    v
                },
                |mut v| {
                    let r = v.verify(black_box(&text), NOW);
                    assert!(r.is_ok() && v.certs_from_set() == 1);
                    (v, r)
                },
                BatchSize::SmallInput,
            )
        });
        let mut warm = verifier;
        assert!(warm.verify(&text, NOW).is_ok());
        c.bench_function(&format!("ride_code/{name}/returning_holder"), |b| {
            b.iter(|| {
                let r = warm.verify(black_box(&text), NOW);
                assert!(r.is_ok());
                r
            })
        });
    }
}

/// The search of the fleet's set a first-seen holder costs, at a city's size (1M entries).
fn set_lookup(c: &mut Criterion) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20);
    let keys = issuer::OneChannel::new(Alg::P256, NOW, 3_600).keys;
    let digests: Vec<[u8; 32]> = (0..1_000_000).map(|_| rng.gen()).collect();
    let set = CertSet::from_digests(1, &keys, digests.iter().copied());
    let mut i = 0usize;
    c.bench_function("ride_code/cert_set_1m/contains", |b| {
        b.iter(|| {
            // A listed digest, a different one each time (cold cache lines, as on a bus).
            i = (i + 7_919) % digests.len();
            assert!(set.contains(black_box(&digests[i])));
        })
    });
}

fn parse_and_replay(c: &mut Criterion) {
    let (_, text) = setup(Alg::P256);
    c.bench_function("ride_code/parse", |b| {
        b.iter(|| RideCode::parse(black_box(&text)))
    });
    let mut cache = ReplayCache::new(&RideCodeConfig::default());
    let mut counter = 0u32;
    c.bench_function("ride_code/replay_check_and_remember", |b| {
        b.iter(|| {
            counter = counter.wrapping_add(1);
            let key = ReplayKey {
                channel_id: 2,
                account_id: u64::from(counter % 500),
                counter,
            };
            // One code a second of simulated time keeps the table at steady state.
            let now = NOW + i64::from(counter / 4);
            if !cache.contains(&key, now, now) {
                cache.remember(key, now, now);
            }
        })
    });
}

/// Calls of each equation in the alternated comparison.
const ALTERNATED_ROUNDS: usize = 2_000;

/// An SM2 holder key (compressed, as in a certificate), a digest e and a signature (r, s)
/// over it, made by RustCrypto `sm2` and checked by it.
struct Sm2Case {
    signing: sm2::dsa::SigningKey,
    compressed: [u8; 33],
    e: [u8; 32],
    signature: [u8; 64],
}

fn sm2_case() -> Sm2Case {
    use sm2::dsa::signature::hazmat::{PrehashSigner as _, PrehashVerifier as _};
    use sm2::elliptic_curve::sec1::ToSec1Point as _;
    let signing = sm2::dsa::SigningKey::from_slice(SM2_SIGNER_ID, &[0x2A; 32]).unwrap();
    let e = [0x5C; 32];
    let sig: sm2::dsa::Signature = signing.sign_prehash(&e).unwrap();
    assert!(signing.verifying_key().verify_prehash(&e, &sig).is_ok());
    let point = signing.verifying_key().to_sec1_point(true);
    Sm2Case {
        compressed: point.as_bytes().try_into().unwrap(),
        signing,
        e,
        signature: sig.to_bytes().into(),
    }
}

impl Sm2Case {
    /// The holder key and signature as efficient-sm2 takes them (the key decompressed),
    /// checked to verify.
    fn efficient_sm2(&self) -> (efficient_sm2::PublicKey, efficient_sm2::Signature) {
        use sm2::elliptic_curve::sec1::ToSec1Point as _;
        let point = sm2::PublicKey::from_sec1_bytes(&self.compressed)
            .unwrap()
            .to_sec1_point(false);
        let key = efficient_sm2::PublicKey::from_slice(&point.as_bytes()[1..]);
        let (r, s) = self.signature.split_at(32);
        let sig = efficient_sm2::Signature::new(r, s).unwrap();
        assert!(sig.verify_digest(&key, &self.e).is_ok());
        (key, sig)
    }
}

/// Each step of an SM2 scan, as `crypto.rs` takes it.
fn sm2_stages(c: &mut Criterion) {
    use sm2::elliptic_curve::sec1::ToSec1Point as _;
    use sm3::Digest as _;
    let case = sm2_case();
    // Key decoding, once per first-seen holder: decompression and on-curve check, then the
    // uncompressed form efficient-sm2 takes.
    c.bench_function("ride_code/sm2_stage/holder_key_decompress", |b| {
        b.iter(|| {
            let p = sm2::PublicKey::from_sec1_bytes(black_box(&case.compressed)).unwrap();
            p.to_sec1_point(false)
        })
    });
    // Z_A: SM3 over ENTL ‖ ID ‖ a ‖ b ‖ x_G ‖ y_G ‖ x_A ‖ y_A, 210 bytes, once per key.
    let z_input = [0x11u8; 2 + 16 + 6 * 32];
    c.bench_function("ride_code/sm2_stage/z_a_sm3_210_bytes", |b| {
        b.iter(|| sm3::Sm3::digest(black_box(&z_input)))
    });
    // e = SM3(Z_A ‖ bytes [0, 137)), every scan.
    let e_input = [0x22u8; 32 + 137];
    c.bench_function("ride_code/sm2_stage/e_sm3_169_bytes", |b| {
        b.iter(|| sm3::Sm3::digest(black_box(&e_input)))
    });
    // B1, B2, B5: r and s parsed as scalars below n, t = r + s; then efficient-sm2's own parse.
    c.bench_function("ride_code/sm2_stage/signature_parse", |b| {
        b.iter(|| {
            let sig = sm2::dsa::Signature::from_slice(black_box(&case.signature)).unwrap();
            let t: sm2::Scalar = *sig.r() + *sig.s();
            let (r, s) = case.signature.split_at(32);
            (t, efficient_sm2::Signature::new(r, s).unwrap())
        })
    });
    // B6, B7: the equation.
    let (key, sig) = case.efficient_sm2();
    c.bench_function("ride_code/sm2_stage/equation_efficient_sm2", |b| {
        b.iter(|| sig.verify_digest(black_box(&key), black_box(&case.e)))
    });
}

/// Each step of a P-256 scan: the key's decompression (p256, once per first-seen holder) and
/// ring's verification (SHA-256 of the 137 signed bytes and the equation, every scan).
fn p256_stages(c: &mut Criterion) {
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    let world = issuer::OneChannel::new(Alg::P256, NOW, 3_600);
    let code = RideCode::from_bytes(world.code(NOW as u32, 1)).unwrap();
    c.bench_function("ride_code/p256_stage/holder_key_decompress", |b| {
        b.iter(|| {
            let p = p256::PublicKey::from_sec1_bytes(black_box(&code.holder_public_key)).unwrap();
            p.to_encoded_point(false)
        })
    });
    let point = p256::PublicKey::from_sec1_bytes(&code.holder_public_key)
        .unwrap()
        .to_encoded_point(false);
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_FIXED,
        point.as_bytes().to_vec(),
    );
    assert!(key.verify(code.code_signed(), &code.code_signature).is_ok());
    c.bench_function("ride_code/p256_stage/verify_ring", |b| {
        b.iter(|| {
            key.verify(
                black_box(code.code_signed()),
                black_box(&code.code_signature),
            )
        })
    });
    let code_text = world.text(NOW as u32, 1);
    c.bench_function("ride_code/stage/parse_and_cert_digest", |b| {
        b.iter(|| RideCode::parse(black_box(&code_text)).map(|c| c.cert_digest()))
    });
}

/// The SM2 equation with a table per holder key (RustCrypto `wnaf`, window 8 for the key and
/// for G, built once) against efficient-sm2's, which builds a 4-bit window for the key on
/// every call and uses its own fixed table for G. Every figure is for a result checked equal
/// to RustCrypto `sm2`'s own equation (`lincomb`), also measured.
fn sm2_equation(c: &mut Criterion) {
    use sm2::elliptic_curve::group::Group as _;
    use sm2::elliptic_curve::ops::LinearCombination as _;
    use sm2::{ProjectivePoint, Scalar};
    use wnaf::array::typenum::{U5, U8};
    use wnaf::{WnafBase, WnafScalar};
    let case = sm2_case();
    let sig = sm2::dsa::Signature::from_slice(&case.signature).unwrap();
    let (s, t): (Scalar, Scalar) = (*sig.s(), *sig.r() + *sig.s());
    let holder = ProjectivePoint::from(*case.signing.verifying_key().as_affine());
    let g = ProjectivePoint::generator();
    let want = ProjectivePoint::lincomb(&[(g, s), (holder, t)]);
    c.bench_function("ride_code/sm2_equation/sm2_lincomb", |b| {
        b.iter(|| ProjectivePoint::lincomb(black_box(&[(g, s), (holder, t)])).to_affine())
    });
    c.bench_function("ride_code/sm2_equation/sm2_lincomb_vartime", |b| {
        b.iter(|| ProjectivePoint::lincomb_vartime(black_box(&[(g, s), (holder, t)])).to_affine())
    });
    let g8 = WnafBase::<ProjectivePoint, U8>::new(&g);
    let key8 = WnafBase::<ProjectivePoint, U8>::new(&holder);
    let key5 = WnafBase::<ProjectivePoint, U5>::new(&holder);
    let g5 = WnafBase::<ProjectivePoint, U5>::new(&g);
    let tabled8 = |s: &Scalar, t: &Scalar| {
        let (ws, wt) = (
            WnafScalar::<Scalar, U8>::new(s),
            WnafScalar::<Scalar, U8>::new(t),
        );
        WnafBase::multiscalar_mul([(&g8, &ws), (&key8, &wt)].into_iter())
    };
    let tabled5 = |s: &Scalar, t: &Scalar| {
        let (ws, wt) = (
            WnafScalar::<Scalar, U5>::new(s),
            WnafScalar::<Scalar, U5>::new(t),
        );
        WnafBase::multiscalar_mul([(&g5, &ws), (&key5, &wt)].into_iter())
    };
    assert_eq!(tabled8(&s, &t), want);
    assert_eq!(tabled5(&s, &t), want);
    // The same four, alternated call by call, so that a shared machine's load falls on each
    // alike; medians.
    let (key, efficient) = case.efficient_sm2();
    let mut runs: [(&str, Vec<u128>); 4] = [
        ("efficient-sm2 (no table per key)", Vec::new()),
        ("wnaf, window 8 table per key", Vec::new()),
        ("wnaf, window 5 table per key", Vec::new()),
        ("sm2 lincomb_vartime", Vec::new()),
    ];
    for _ in 0..ALTERNATED_ROUNDS {
        for (i, (_, times)) in runs.iter_mut().enumerate() {
            let t0 = std::time::Instant::now();
            match i {
                0 => drop(black_box(efficient.verify_digest(&key, black_box(&case.e)))),
                1 => drop(black_box(tabled8(black_box(&s), &t).to_affine())),
                2 => drop(black_box(tabled5(black_box(&s), &t).to_affine())),
                _ => drop(black_box(
                    ProjectivePoint::lincomb_vartime(black_box(&[(g, s), (holder, t)])).to_affine(),
                )),
            }
            times.push(t0.elapsed().as_nanos());
        }
    }
    let median = |v: &mut Vec<u128>| {
        v.sort_unstable();
        v[v.len() / 2] as f64 / 1_000.0
    };
    let base = median(&mut runs[0].1);
    for (name, times) in runs.iter_mut() {
        let m = median(times);
        eprintln!(
            "sm2 equation alternated, median: {name}: {m:.1} us ({:.2}x)",
            m / base
        );
    }
    c.bench_function("ride_code/sm2_equation/wnaf_w8_key_table", |b| {
        b.iter(|| tabled8(black_box(&s), black_box(&t)).to_affine())
    });
    c.bench_function("ride_code/sm2_equation/wnaf_w5_key_table", |b| {
        b.iter(|| tabled5(black_box(&s), black_box(&t)).to_affine())
    });
    c.bench_function("ride_code/sm2_equation/wnaf_w8_table_build", |b| {
        b.iter(|| WnafBase::<ProjectivePoint, U8>::new(black_box(&holder)))
    });
    c.bench_function("ride_code/sm2_equation/wnaf_w5_table_build", |b| {
        b.iter(|| WnafBase::<ProjectivePoint, U5>::new(black_box(&holder)))
    });
    eprintln!(
        "table bytes per key: w8 {}, w5 {} (a projective point: {})",
        std::mem::size_of::<WnafBase<ProjectivePoint, U8>>(),
        std::mem::size_of::<WnafBase<ProjectivePoint, U5>>(),
        std::mem::size_of::<ProjectivePoint>()
    );
}

/// A key file of one channel key of `alg`, and two codes of each of `n` holders it
/// certified (generated at NOW and a second later: another signature, as a returning
/// holder's phone makes).
fn holders(alg: Alg, n: u64) -> (ChannelKeys, Vec<[String; 2]>) {
    use fare_validator::ride_code::issuer::{CertFields, KeyPair};
    use fare_validator::ride_code::{KeyFile, KeyFileEntry};
    let channel = KeyPair::from_seed(alg, 7);
    let keys = ChannelKeys::from_file(&KeyFile {
        version: 1,
        channels: vec![KeyFileEntry {
            channel_id: 2,
            name: "bench".into(),
            key_id: 1,
            alg,
            public_key: hex::encode(channel.public_key()),
            not_before: NOW - 3_600,
            not_after: NOW + 3_600,
            revoked: false,
        }],
    })
    .unwrap();
    let codes = (0..n)
        .map(|i| {
            let holder = KeyPair::from_seed(alg, 1_000 + i);
            let fields = CertFields {
                alg,
                channel_id: 2,
                channel_key_id: 1,
                account_id: i,
                card_no: "37140000000000000001".parse().unwrap(),
                rider_category: 0,
                cert_not_before: (NOW - 3_600) as u32,
                cert_not_after: (NOW + 3_600) as u32,
                holder_public_key: holder.public_key(),
            };
            let cert = issuer::certificate(&fields, &channel);
            [0, 1].map(|k| issuer::code_text(&issuer::code(&cert, NOW as u32 + k, 1 + k, &holder)))
        })
        .collect();
    (keys, codes)
}

/// Returning holders in the alternated comparison: few enough that no set of the certificate
/// cache overflows, so every one is a hit.
const RETURNING_HOLDERS: usize = 100;

/// Where a scan's time goes, alternated call by call, medians (the load of a shared machine
/// falls on each alike): a returning holder's scan (a new code of a holder whose certificate
/// the verifier holds, as at a door: every code its own signature), a listed first-seen
/// holder's scan (each a holder never seen), and their parts: the holder key's decompression,
/// and the signature check alone on the same holders' codes (keys decoded beforehand). The
/// sub-microsecond steps (parse, digests, hashes) are the criterion figures above.
fn stages_alternated(c: &mut Criterion) {
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    use sm2::elliptic_curve::sec1::ToSec1Point as _;
    let _ = c;
    for alg in [Alg::Sm2, Alg::P256] {
        let (keys, codes) = holders(alg, (RETURNING_HOLDERS + ALTERNATED_ROUNDS) as u64);
        let (regulars, new) = codes.split_at(RETURNING_HOLDERS);
        let mut warm = Verifier::new(keys.clone(), RideCodeConfig::default());
        for [first, _] in regulars {
            assert!(warm.verify(first, NOW).is_ok());
        }
        let digests = new
            .iter()
            .map(|[t, _]| RideCode::parse(t).unwrap().cert_digest());
        let mut listed = Verifier::new(keys.clone(), RideCodeConfig::default());
        listed.set_cert_set(std::sync::Arc::new(CertSet::from_digests(
            1, &keys, digests,
        )));
        // The regulars' second codes, parsed, with their keys decoded, for the equation alone.
        let decoded: Vec<(RideCode, Vec<u8>)> = regulars
            .iter()
            .map(|[_, second]| {
                let code = RideCode::parse(second).unwrap();
                let point = match alg {
                    Alg::Sm2 => sm2::PublicKey::from_sec1_bytes(&code.holder_public_key)
                        .unwrap()
                        .to_sec1_point(false)
                        .as_bytes()
                        .to_vec(),
                    Alg::P256 => p256::PublicKey::from_sec1_bytes(&code.holder_public_key)
                        .unwrap()
                        .to_encoded_point(false)
                        .as_bytes()
                        .to_vec(),
                };
                (code, point)
            })
            .collect();
        let mut runs: [(&str, Vec<u128>); 4] = [
            ("returning holder's scan (checks 1-10)", Vec::new()),
            ("listed first-seen holder's scan", Vec::new()),
            ("holder key decompression", Vec::new()),
            ("signature check alone (hash and equation)", Vec::new()),
        ];
        for (round, [first_seen, _]) in new.iter().enumerate() {
            let [_, returning] = &regulars[round % RETURNING_HOLDERS];
            let (code, point) = &decoded[round % RETURNING_HOLDERS];
            for (i, (_, times)) in runs.iter_mut().enumerate() {
                let t0 = std::time::Instant::now();
                match (i, alg) {
                    (0, _) => assert!(warm.verify(black_box(returning), NOW).is_ok()),
                    (1, _) => assert!(listed.verify(black_box(first_seen), NOW).is_ok()),
                    (2, Alg::Sm2) => drop(black_box(
                        sm2::PublicKey::from_sec1_bytes(black_box(&code.holder_public_key))
                            .map(|p| p.to_sec1_point(false)),
                    )),
                    (2, Alg::P256) => drop(black_box(
                        p256::PublicKey::from_sec1_bytes(black_box(&code.holder_public_key))
                            .map(|p| p.to_encoded_point(false)),
                    )),
                    (_, Alg::Sm2) => assert!(sm2_verifies(point, code)),
                    (_, Alg::P256) => assert!(ring::signature::UnparsedPublicKey::new(
                        &ring::signature::ECDSA_P256_SHA256_FIXED,
                        point,
                    )
                    .verify(black_box(code.code_signed()), &code.code_signature)
                    .is_ok()),
                }
                times.push(t0.elapsed().as_nanos());
            }
        }
        assert_eq!(listed.certs_from_set(), ALTERNATED_ROUNDS as u64);
        assert_eq!(
            warm.cached_certificates(),
            RETURNING_HOLDERS,
            "every regular a hit"
        );
        for (name, times) in runs.iter_mut() {
            times.sort_unstable();
            let median = times[times.len() / 2] as f64 / 1_000.0;
            eprintln!(
                "{} alternated, median: {name}: {median:.1} us",
                alg.as_str()
            );
        }
    }
}

/// The SM2 code signature check as `crypto.rs` makes it with a decoded key (uncompressed
/// point): the signature's parse and t, e = SM3(Z_A ‖ M), the equation.
fn sm2_verifies(point: &[u8], code: &RideCode) -> bool {
    use sm3::Digest as _;
    let z: [u8; 32] = sm3::Sm3::new()
        // ENTL: the signer ID's length in bits.
        .chain_update(128u16.to_be_bytes())
        .chain_update(SM2_SIGNER_ID)
        .chain_update(SM2_CURVE_PARAMS)
        .chain_update(&point[1..])
        .finalize()
        .into();
    let sig = sm2::dsa::Signature::from_slice(&code.code_signature).unwrap();
    let t: sm2::Scalar = *sig.r() + *sig.s();
    assert!(!bool::from(t.is_zero()));
    let e: [u8; 32] = sm3::Sm3::new()
        .chain_update(z)
        .chain_update(code.code_signed())
        .finalize()
        .into();
    let (r, s) = code.code_signature.split_at(32);
    let key = efficient_sm2::PublicKey::from_slice(&point[1..]);
    efficient_sm2::Signature::new(r, s)
        .unwrap()
        .verify_digest(&key, &e)
        .is_ok()
}

/// GB/T 32918.5 a, b, x_G, y_G, in the order Z_A hashes them.
const SM2_CURVE_PARAMS: [u8; 128] = {
    let hex = b"FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC\
28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93\
32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7\
BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0";
    const fn nibble(c: u8) -> u8 {
        if c <= b'9' {
            c - b'0'
        } else {
            c - b'A' + 10
        }
    }
    let mut out = [0u8; 128];
    let mut i = 0;
    while i < 128 {
        out[i] = nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]);
        i += 1;
    }
    out
};

criterion_group!(
    benches,
    scans,
    set_lookup,
    parse_and_replay,
    sm2_stages,
    p256_stages,
    sm2_equation,
    stages_alternated
);
criterion_main!(benches);
