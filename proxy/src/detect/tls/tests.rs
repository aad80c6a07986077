use super::*;
use crate::detect::testdata::{
    alpn_ext, build_hello, curl_hello, openssl_hello, sni_ext, split_records,
};

/// Offset of the extensions length in both captures: record header (5),
/// handshake header (4), version (2), random (32), session id (1 + 32),
/// cipher suites (2 + 62), compression (1 + 1).
const EXTENSIONS_AT: usize = 142;

fn expected(sni: &str) -> ClientHello {
    ClientHello {
        sni: Some(sni.to_owned()),
        alpn: vec!["h2".to_owned(), "http/1.1".to_owned()],
    }
}

fn captures() -> Vec<(&'static str, Vec<u8>, ClientHello)> {
    vec![
        ("openssl", openssl_hello(), expected("pypi.org")),
        ("curl", curl_hello(), expected("example.com")),
    ]
}

#[test]
fn real_captures_parse() {
    for (name, bytes, want) in captures() {
        assert_eq!(parse_client_hello(&bytes), Ok(want), "{name}");
    }
}

#[test]
fn every_strict_prefix_is_incomplete() {
    for (name, bytes, _) in captures() {
        for len in 0..bytes.len() {
            assert_eq!(
                parse_client_hello(&bytes[..len]),
                Err(TlsError::Incomplete),
                "{name} cut at {len}"
            );
        }
    }
}

#[test]
fn bytes_after_the_hello_are_ignored() {
    for (name, mut bytes, want) in captures() {
        bytes.extend_from_slice(b"\x17\x03\x03garbage that follows");
        assert_eq!(parse_client_hello(&bytes), Ok(want), "{name}");
    }
}

#[test]
fn hello_split_across_records_is_reassembled() {
    for (name, bytes, want) in captures() {
        for size in [1, 2, 3, 4, 5, 7, 64, 100, 200] {
            let split = split_records(&bytes, size);
            assert_eq!(
                parse_client_hello(&split),
                Ok(want.clone()),
                "{name}/{size}"
            );
            for len in 0..split.len() {
                assert_eq!(
                    parse_client_hello(&split[..len]),
                    Err(TlsError::Incomplete),
                    "{name}/{size} cut at {len}"
                );
            }
        }
    }
}

#[test]
fn not_tls() {
    let cases: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\n",
        b"\x17\x03\x03\x00\x10",
        b"\x16\x02",
        b"\x16\x03\x05",
        b"\x16\x04\x01\x00\x05",
    ];
    for case in cases {
        assert_eq!(parse_client_hello(case), Err(TlsError::NotTls), "{case:?}");
    }
}

#[test]
fn sni_is_lowercased_and_optional() {
    let ext = |name: &[u8]| build_hello(Some(&[(0, sni_ext(&[name]))]));
    let sni = |hello: Result<ClientHello, TlsError>| hello.map(|h| h.sni);
    assert_eq!(
        sni(parse_client_hello(&ext(b"PyPI.Org"))),
        Ok(Some("pypi.org".into()))
    );
    assert_eq!(
        sni(parse_client_hello(&ext(b"_dmarc.x-1.io"))),
        Ok(Some("_dmarc.x-1.io".into()))
    );
    assert_eq!(
        parse_client_hello(&build_hello(None)),
        Ok(ClientHello::default())
    );
    assert_eq!(
        parse_client_hello(&build_hello(Some(&[]))),
        Ok(ClientHello::default())
    );
    // A name type other than host_name is skipped.
    let other_type = build_hello(Some(&[(0, vec![0, 4, 9, 0, 1, b'x'])]));
    assert_eq!(sni(parse_client_hello(&other_type)), Ok(None));
    // Unknown extensions are skipped.
    let unknown = build_hello(Some(&[(0xfafa, vec![]), (16, alpn_ext(&[b"h2"]))]));
    let hello = parse_client_hello(&unknown).expect("valid");
    assert_eq!(hello.alpn, vec!["h2".to_owned()]);
}

/// Names a server reads one way are read that way: the trailing dot of a
/// fully qualified name is dropped (it was malformed, so the stream was
/// judged as nameless), and of two host names the first is the one
/// (OpenSSL's), not a reason to give up on the name.
#[test]
fn names_are_read_as_servers_read_them() {
    let cases: [(&str, Extensions, &str); 3] = [
        (
            "trailing dot",
            vec![(0, sni_ext(&[b"Pool.Example."]))],
            "pool.example",
        ),
        (
            "two host names",
            vec![(0, sni_ext(&[b"pool.example", b"pypi.org"]))],
            "pool.example",
        ),
        (
            "plain",
            vec![(0, sni_ext(&[b"pool.example"]))],
            "pool.example",
        ),
    ];
    for (case, exts, want) in cases {
        let hello = parse_client_hello(&build_hello(Some(&exts)));
        assert_eq!(hello.map(|h| h.sni), Ok(Some(want.to_owned())), "{case}");
    }
}

/// Extension type and body pairs.
type Extensions = Vec<(u16, Vec<u8>)>;

#[test]
fn malformed_extensions() {
    let long_label = [b'a'; 64];
    let long_name = [b'a'; 254];
    let sni = |name: &[u8]| vec![(0u16, sni_ext(&[name]))];
    let cases: Vec<(&str, Extensions)> = vec![
        ("space", sni(b"pypi .org")),
        ("non-ascii", sni("pypí.org".as_bytes())),
        ("empty label", sni(b"pypi..org")),
        ("leading dot", sni(b".pypi.org")),
        ("empty name", sni(b"")),
        ("nul byte", sni(b"pypi\0.org")),
        ("long label", sni(&long_label)),
        ("long name", sni(&long_name)),
        ("empty sni list", vec![(0, vec![0, 0])]),
        ("sni list too long", vec![(0, vec![0, 9, 0, 0, 1, b'a'])]),
        (
            "sni trailing",
            vec![(0, [sni_ext(&[b"a"]), vec![0]].concat())],
        ),
        ("duplicate sni", [sni(b"a"), sni(b"b")].concat()),
        ("empty alpn list", vec![(16, vec![0, 0])]),
        ("empty alpn name", vec![(16, alpn_ext(&[b"h2", b""]))]),
        ("alpn not utf-8", vec![(16, alpn_ext(&[b"\xff\xfe"]))]),
        ("alpn overrun", vec![(16, vec![0, 3, 5, b'h', b'2'])]),
        (
            "duplicate alpn",
            vec![(16, alpn_ext(&[b"h2"])), (16, alpn_ext(&[b"h2"]))],
        ),
    ];
    for (name, exts) in cases {
        let got = parse_client_hello(&build_hello(Some(&exts)));
        assert!(
            matches!(got, Err(TlsError::Malformed(_))),
            "{name}: {got:?}"
        );
    }
}

/// Sets the big-endian u16 at `at`.
fn set_u16(buf: &mut [u8], at: usize, value: u16) {
    buf[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

fn get_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

#[test]
fn corrupted_lengths_are_malformed() {
    for (name, bytes, _) in captures() {
        let malformed = |mutate: &dyn Fn(&mut Vec<u8>), what: &str| {
            let mut b = bytes.clone();
            mutate(&mut b);
            let got = parse_client_hello(&b);
            assert!(
                matches!(got, Err(TlsError::Malformed(_))),
                "{name} {what}: {got:?}"
            );
        };
        let record_len = get_u16(&bytes, 3);
        let ext_len = get_u16(&bytes, EXTENSIONS_AT);
        malformed(&|b| set_u16(b, 3, 0), "empty record");
        malformed(&|b| set_u16(b, 3, 0x4001), "record too long");
        malformed(&|b| set_u16(b, 3, record_len - 1), "short record");
        malformed(&|b| b[5] = 2, "handshake type");
        malformed(&|b| b[6] = 1, "handshake too long");
        malformed(&|b| b[8] -= 1, "handshake one short");
        malformed(&|b| b[9] = 2, "client version");
        malformed(&|b| b[43] = 33, "session id length");
        malformed(&|b| b[43] = 0xff, "session id overrun");
        malformed(&|b| set_u16(b, 76, 61), "odd cipher suites");
        malformed(&|b| set_u16(b, 76, 0), "no cipher suites");
        malformed(&|b| set_u16(b, 76, 0xffff), "cipher suites overrun");
        malformed(&|b| b[140] = 0, "no compression");
        malformed(&|b| set_u16(b, EXTENSIONS_AT, ext_len + 1), "extensions +1");
        malformed(&|b| set_u16(b, EXTENSIONS_AT, ext_len - 1), "extensions -1");
        malformed(
            &|b| set_u16(b, EXTENSIONS_AT + 4, 0xfff0),
            "first extension",
        );
    }
}

#[test]
fn every_single_byte_corruption_answers_without_panicking() {
    for (name, bytes, want) in captures() {
        for at in 0..bytes.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[at] ^= mask;
                let got = parse_client_hello(&b);
                if at == 0 {
                    assert_eq!(got, Err(TlsError::NotTls), "{name} byte {at}");
                }
                // The random cannot change the answer.
                if (11..43).contains(&at) {
                    assert_eq!(got, Ok(want.clone()), "{name} byte {at}");
                }
            }
        }
    }
}

#[test]
fn interleaved_record_is_malformed() {
    let mut split = split_records(&openssl_hello(), 100);
    split[105] = 0x17;
    assert_eq!(
        parse_client_hello(&split),
        Err(TlsError::Malformed("interleaved record"))
    );
    assert_eq!(
        parse_client_hello(&split[..106]),
        Err(TlsError::Malformed("interleaved record"))
    );
}
