//! Fuzzes the Stratum recogniser: it must never panic, and what it finds
//! must be one of the mining or pool methods.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_proxy::detect::stratum::{
    MINING_METHODS, POOL_METHODS, looks_like_stratum, parse_stratum,
};

fuzz_target!(|data: &[u8]| {
    if let Some(found) = parse_stratum(data) {
        let method = found.method.as_str();
        assert!(MINING_METHODS.contains(&method) || POOL_METHODS.contains(&method));
        assert!(looks_like_stratum(data));
    }
    let _ = looks_like_stratum(data);
});
