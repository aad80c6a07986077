use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The start of the client Initial of RFC 9001 appendix A.2 (protected).
const RFC9001_INITIAL: &str = "c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11";

#[test]
fn the_rfc_9001_client_initial_is_quic() {
    let packet = hex(RFC9001_INITIAL);
    assert_eq!(
        long_header(&packet),
        Some(LongHeader {
            version: VERSION_1,
            packet_type: PacketType::Initial,
            dcid_len: 8,
            scid_len: 0,
        })
    );
    assert!(is_quic(&packet));
}

#[test]
fn what_is_not_a_client_long_header_is_not_quic() {
    let initial = hex(RFC9001_INITIAL);
    let with_first = |b: u8| [&[b][..], &initial[1..]].concat();
    let with_version = |v: u32| [&initial[..1], &v.to_be_bytes()[..], &initial[5..]].concat();
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("empty", vec![], false),
        ("a WireGuard handshake", hex("01000000aabbccdd"), false),
        ("a short header", with_first(0x40), false),
        ("fixed bit clear", with_first(0x80), false),
        ("handshake packet", with_first(0xe0), false),
        ("0-RTT", with_first(0xd0), true),
        ("version negotiation", with_version(0), false),
        ("an unknown version", with_version(0x1a2a_3a4a), false),
        ("draft 29", with_version(0xff00_001d), true),
        (
            "v2 Initial (type bits 01)",
            [&[0xd0][..], &with_version(VERSION_2)[1..]].concat(),
            true,
        ),
        ("v2 Retry (type bits 00)", with_version(VERSION_2), false),
        ("cut inside the version", initial[..3].to_vec(), false),
        ("cut inside the DCID", initial[..9].to_vec(), false),
        ("cut before the SCID length", initial[..14].to_vec(), false),
        ("ends with the SCID length", initial[..15].to_vec(), true),
        (
            "a 21-byte DCID",
            [&initial[..5], &[21][..], &[0; 30][..]].concat(),
            false,
        ),
    ];
    for (what, datagram, want) in cases {
        assert_eq!(is_quic(&datagram), want, "{what}: {datagram:02x?}");
    }
}

/// A small deterministic generator (xorshift), so the property tests need
/// no extra crate and always run the same cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn any_well_formed_long_header_is_read_back_and_any_prefix_of_it_is_refused() {
    let mut rng = Rng(0x5eed_cafe);
    let versions = [VERSION_1, VERSION_2, 0xff00_0020];
    for _ in 0..2000 {
        let version = versions[(rng.next() % 3) as usize];
        let type_bits = (rng.next() % 4) as u8;
        let first = 0xc0 | (type_bits << 4) | (rng.next() as u8 & 0x0f);
        let (dcid_len, scid_len) = ((rng.next() % 21) as usize, (rng.next() % 21) as usize);
        let mut packet = vec![first];
        packet.extend(version.to_be_bytes());
        packet.push(dcid_len as u8);
        packet.extend(rng.bytes(dcid_len));
        packet.push(scid_len as u8);
        packet.extend(rng.bytes(scid_len));
        let header_len = packet.len();
        let tail = (rng.next() % 64) as usize;
        packet.extend(rng.bytes(tail));
        let header = long_header(&packet).expect("a well-formed header");
        assert_eq!(
            (header.version, header.dcid_len, header.scid_len),
            (version, dcid_len, scid_len)
        );
        let initial_bits = if version == VERSION_2 { 1 } else { 0 };
        assert_eq!(
            header.packet_type == PacketType::Initial,
            type_bits == initial_bits
        );
        for cut in 0..header_len {
            assert_eq!(
                long_header(&packet[..cut]),
                None,
                "cut at {cut} of {packet:02x?}"
            );
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(42);
    for _ in 0..20_000 {
        let len = (rng.next() % 48) as usize;
        let mut datagram = rng.bytes(len);
        if let Some(first) = datagram.first_mut() {
            *first |= 0xc0;
        }
        if let Some(h) = long_header(&datagram) {
            assert!(h.dcid_len <= MAX_CID && h.scid_len <= MAX_CID);
            assert!(datagram.len() >= 7 + h.dcid_len + h.scid_len);
        }
    }
}
