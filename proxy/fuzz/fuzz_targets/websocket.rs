//! Fuzzes the WebSocket decoder: fed arbitrary data in arbitrary chunks, it
//! must never panic, must hand out the same payload (never more bytes than
//! it was fed) and reach the same state however the data is cut, and its
//! payload goes to a `StratumScanner` as in the proxy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_proxy::detect::stratum::StratumScanner;
use vigil_proxy::detect::websocket::WsDecoder;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk sizes.
    let Some((&seed, data)) = data.split_first() else {
        return;
    };
    let mut whole = Vec::new();
    let mut decoder = WsDecoder::new();
    decoder.feed(data, &mut |payload| whole.extend_from_slice(payload));
    assert!(whole.len() <= data.len());

    let mut chunked = WsDecoder::new();
    let mut scanner = StratumScanner::new();
    let mut pieces = Vec::new();
    let mut size = usize::from(seed);
    let mut rest = data;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        chunked.feed(chunk, &mut |payload| {
            assert!(!payload.is_empty());
            pieces.extend_from_slice(payload);
            let _ = scanner.feed(payload);
        });
        rest = tail;
        size = (size * 31 + 7) % 257;
    }
    assert_eq!(pieces, whole, "depends on how the data is cut");
    assert_eq!(chunked.is_broken(), decoder.is_broken());
    assert_eq!(chunked.saw_compressed(), decoder.saw_compressed());
});
