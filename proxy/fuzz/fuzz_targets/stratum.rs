//! Fuzzes the Stratum recogniser: it must never panic, and what it finds
//! must be one of the mining methods.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_proxy::detect::stratum::{MINING_METHODS, looks_like_stratum, parse_stratum};

fuzz_target!(|data: &[u8]| {
    if let Some(found) = parse_stratum(data) {
        assert!(MINING_METHODS.contains(&found.method.as_str()));
        assert!(looks_like_stratum(data));
    }
    let _ = looks_like_stratum(data);
});
