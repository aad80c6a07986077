//! Fuzzes the DNS message reader: `inspect` never panics; a query it
//! accepts names a lower-case name without a trailing dot; an answer it
//! builds at once keeps the query's id; and reading the input as an
//! upstream response to that question never panics either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_proxy::dns::message::{Incoming, Question, answer, inspect, rcode, read_response};

fuzz_target!(|data: &[u8]| {
    let question = match inspect(data) {
        Incoming::Query(q) => {
            assert_eq!(q.name, q.name.to_ascii_lowercase());
            assert!(q.name == "." || !q.name.ends_with('.'), "{}", q.name);
            q
        }
        Incoming::Reject { response, .. } => {
            assert_eq!(response[..2], data[..2], "the id is kept");
            Question { id: u16::from_be_bytes([data[0], data[1]]), name: "x".into(), qtype: "A".into() }
        }
        Incoming::Ignore => return,
    };
    let refused = answer(data, rcode::REFUSED);
    assert_eq!(refused[..2], data[..2]);
    let _ = read_response(data, &question);
});
