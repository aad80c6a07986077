//! Fuzzes path templating: it must never panic and must respect its length
//! cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_proxy::template::{MAX_LEN, template};

fuzz_target!(|data: &[u8]| {
    if let Ok(path) = std::str::from_utf8(data) {
        let out = template(path);
        assert!(out.starts_with('/'));
        assert!(out.len() <= MAX_LEN + "...".len(), "{} bytes", out.len());
    }
});
