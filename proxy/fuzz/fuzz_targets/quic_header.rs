//! Fuzzes the QUIC long-header reader of the UDP relay: it never panics; a
//! header it reads names a known version and connection IDs of at most 20
//! bytes that fit in the datagram; and any shorter prefix of the header is
//! refused rather than read past its end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_proxy::udp::quic::{MAX_CID, is_known_version, is_quic, long_header};

fuzz_target!(|data: &[u8]| {
    let quic = is_quic(data);
    let Some(header) = long_header(data) else {
        assert!(!quic);
        return;
    };
    assert!(is_known_version(header.version));
    assert!(header.dcid_len <= MAX_CID && header.scid_len <= MAX_CID);
    let len = 7 + header.dcid_len + header.scid_len;
    assert!(data.len() >= len);
    for cut in 0..len {
        assert_eq!(long_header(&data[..cut]), None);
    }
});
