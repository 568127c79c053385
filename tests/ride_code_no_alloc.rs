//! The scan path allocates nothing: verify (certificate cache cold and warm, both algorithms,
//! accepted and refused) and the replay cache's check and remember, counted by a global
//! allocator that tallies this thread's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use fare_validator::ride_code::issuer::{self, CertFields, KeyPair};
use fare_validator::ride_code::{
    Alg, ChannelKeys, KeyFile, KeyFileEntry, ReplayCache, RideCodeConfig, Verifier,
};
use fare_validator::types::RiderCategory;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

const NOW: i64 = 1_795_824_000;

#[test]
fn scan_path_allocates_nothing() {
    for alg in [Alg::P256, Alg::Sm2] {
        let channel = KeyPair::from_seed(alg, 1);
        let holder = KeyPair::from_seed(alg, 2);
        let keys = ChannelKeys::from_file(&KeyFile {
            version: 1,
            channels: vec![KeyFileEntry {
                channel_id: 2,
                name: "t".into(),
                key_id: 1,
                alg,
                public_key: hex::encode(channel.public_key()),
                not_before: NOW - 10,
                not_after: NOW + 10,
                revoked: false,
            }],
        })
        .unwrap();
        let fields = CertFields {
            alg,
            channel_id: 2,
            channel_key_id: 1,
            account_id: 5,
            card_no: "37140000000000000001".parse().unwrap(),
            rider_category: RiderCategory::Adult as u8,
            cert_not_before: (NOW - 10) as u32,
            cert_not_after: (NOW + 10) as u32,
            holder_public_key: holder.public_key(),
        };
        let cert = issuer::certificate(&fields, &channel);
        let good = issuer::code_text(&issuer::code(&cert, NOW as u32, 1, &holder));
        let mut forged = issuer::code(&cert, NOW as u32, 2, &holder);
        forged[150] ^= 1;
        let forged = issuer::code_text(&forged);
        let mut verifier = Verifier::new(keys, RideCodeConfig::default());
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
        assert_eq!(n, 0, "{alg:?} scan path allocated {n} times");
    }
}
