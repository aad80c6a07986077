//! Fuzzes protocol detection: it must never panic, and once it decides on a
//! prefix, the whole input gets the same answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_proxy::detect::{Detection, detect};

fuzz_target!(|data: &[u8]| {
    let whole = detect(data);
    for cut in [data.len() / 4, data.len() / 2, data.len().saturating_sub(1)] {
        if let decided @ Detection::Done(_) = detect(&data[..cut]) {
            assert_eq!(decided, whole, "decided on {cut} bytes, then changed");
        }
    }
});
