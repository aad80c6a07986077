//! Fuzzes the TLS ClientHello reader: it must never panic, and a prefix of
//! the input may only answer `Incomplete` or the same answer as the whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_proxy::detect::{TlsError, parse_client_hello};

fuzz_target!(|data: &[u8]| {
    let whole = parse_client_hello(data);
    if let Some(cut) = data.len().checked_sub(1) {
        let prefix = parse_client_hello(&data[..cut]);
        assert!(prefix == Err(TlsError::Incomplete) || prefix == whole);
    }
});
