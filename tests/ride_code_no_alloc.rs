//! The scan path allocates nothing: verify (certificate cache cold and warm, both algorithms,
//! accepted and refused, with and without the certificate worker, a first-seen holder the
//! fleet's verified-certificate set lists) and the replay cache's check
//! and remember, counted by a global allocator that tallies every thread's allocations while
//! armed, the worker's included. This binary holds this one test, so while it runs nothing
//! else allocates (the harness's main thread only waits for it).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use fare_validator::ride_code::issuer;
use fare_validator::ride_code::{Alg, CertSet, ReplayCache, RideCodeConfig, Verifier};

struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
    f();
    ARMED.store(false, Ordering::SeqCst);
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

const NOW: i64 = 1_795_824_000;

#[test]
fn scan_path_allocates_nothing() {
    for (alg, worker, listed) in [
        (Alg::P256, false, false),
        (Alg::Sm2, false, false),
        (Alg::P256, true, false),
        (Alg::Sm2, true, false),
        (Alg::P256, true, true),
        (Alg::Sm2, true, true),
    ] {
        let world = issuer::OneChannel::new(alg, NOW, 10);
        let good = world.text(NOW as u32, 1);
        let mut forged = world.code(NOW as u32, 2);
        forged[150] ^= 1;
        let forged = issuer::code_text(&forged);
        let mut verifier = if worker {
            Verifier::with_cert_worker(world.keys, RideCodeConfig::default())
        } else {
            Verifier::new(world.keys, RideCodeConfig::default())
        };
        if listed {
            // The fleet's set lists the holder: the first scan decodes the key and checks
            // the code alone, after a search of the set.
            let digest = fare_validator::ride_code::RideCode::parse(&good)
                .unwrap()
                .cert_digest();
            let others = (0u32..10_000).map(|i| {
                let mut d = [0u8; 32];
                d[..4].copy_from_slice(&i.to_be_bytes());
                d
            });
            let keys = verifier.keys().clone();
            verifier.set_cert_set(std::sync::Arc::new(CertSet::from_digests(
                1,
                &keys,
                others.chain([digest]),
            )));
        }
        let mut replay = ReplayCache::new(&RideCodeConfig::default());

        let n = allocations_during(|| {
            let code = verifier.verify(&good, NOW).unwrap(); // cold
            assert!(!replay.is_replay(&code, NOW));
            replay.remember_code(&code, NOW);
            let code = verifier.verify(&good, NOW).unwrap(); // warm
            assert!(replay.is_replay(&code, NOW));
            assert!(verifier.verify(&forged, NOW).is_err());
            assert!(verifier.verify("ESSC1.garbage", NOW).is_err());
        });
        assert_eq!(
            n, 0,
            "{alg:?} (worker: {worker}, listed: {listed}) scan path allocated {n} times"
        );
        assert_eq!(verifier.certs_from_set(), u64::from(listed));
    }
}
