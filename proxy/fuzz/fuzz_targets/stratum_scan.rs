//! Fuzzes the stream scanner: fed arbitrary data in arbitrary chunks, it
//! must never panic, must find the same message however the data is cut,
//! must find only mining methods, and must be done past `SCAN_LIMIT`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_proxy::detect::stratum::{MINING_METHODS, POOL_METHODS, SCAN_LIMIT, StratumScanner};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk sizes.
    let Some((&seed, data)) = data.split_first() else {
        return;
    };
    let whole = StratumScanner::new().feed(data);
    let mut scanner = StratumScanner::new();
    let mut found = None;
    let mut size = usize::from(seed);
    let mut rest = data;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        if let Some(hit) = scanner.feed(chunk) {
            assert!(found.is_none(), "reported twice");
            found = Some(hit);
        }
        rest = tail;
        size = (size * 31 + 7) % 257;
    }
    assert_eq!(found, whole, "depends on how the data is cut");
    if let Some(hit) = found {
        let method = hit.method.as_str();
        assert!(MINING_METHODS.contains(&method) || POOL_METHODS.contains(&method));
        assert!(scanner.is_done());
    }
    if data.len() >= SCAN_LIMIT {
        assert!(scanner.is_done());
    }
});
