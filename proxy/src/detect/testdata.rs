//! Test fixtures shared by the detect tests: real ClientHello captures, a
//! ClientHello builder, record re-framing and a deterministic PRNG.

/// `openssl s_client -connect 127.0.0.1:PORT -servername pypi.org
/// -alpn h2,http/1.1` (OpenSSL 3.0.19), captured from a plain socket.
/// TLS 1.3-capable: supported_versions 1.3..1.0, x25519 key share.
pub const OPENSSL_HELLO_HEX: &str = "
1603010147010001430303fef8d9a05d0a3629c56a564a0151b88d9bf49ff9a7
a5642b2d3daead5d37784c20484b948467a9553ffa4698d9d3d7bf842e3e2212
f4da596c1763bda5a4b0e7cb003e130213031301c02cc030009fcca9cca8ccaa
c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d
009c003d003c0035002f00ff010000bc0000000d000b000008707970692e6f72
67000b000403000102000a00160014001d0017001e0019001801000101010201
030104002300000010000e000c02683208687474702f312e3100160000001700
00000d002a0028040305030603080708080809080a080b080408050806040105
010601030303010302040205020602002b0009080304030303020301002d0002
0101003300260024001d002084096473a1fd1cf6a47fc6db90fdae4cab2066a5
7af04b0c8fc8427c2bb72238";

/// `curl --resolve example.com:PORT:127.0.0.1 https://Example.COM:PORT/`
/// (curl 7.88.1, OpenSSL 3.0.19), captured from a plain socket. curl
/// lowercases the name itself; the hello is padded to 512 bytes.
pub const CURL_HELLO_HEX: &str = "
1603010200010001fc0303b5eb78fd1dd936521caa957345d4175c24a7ba412a
c4613a004c5453e62baf0b20f3bc8fb5c4fc0e6a1e911fb8faa029427ae2bfb1
bab82dbc6b84514ca299a517003e130213031301c02cc030009fcca9cca8ccaa
c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d
009c003d003c0035002f00ff0100017500000010000e00000b6578616d706c65
2e636f6d000b000403000102000a00160014001d0017001e0019001801000101
0102010301040010000e000c02683208687474702f312e310016000000170000
00310000000d002a0028040305030603080708080809080a080b080408050806
040105010601030303010302040205020602002b000908030403030302030100
2d00020101003300260024001d0020fd5e65299228409003cf222310b6282a60
7eed05e945dbac35a9891b55b21602001500b200000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000
0000000000";

/// XMRig 6.21's first line to a Monero pool.
pub const XMRIG_LOGIN: &str = concat!(
    r#"{"id":1,"jsonrpc":"2.0","method":"login","params":{"login":"#,
    r#""44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2wfn3RVGQBEP3A","#,
    r#""pass":"x","agent":"XMRig/6.21.0 (Linux x86_64) libuv/1.44.2 gcc/11.3.0","#,
    r#""algo":["rx/0","cn/2","cn/r"]}}"#,
    "\n"
);

/// cgminer's classic Stratum V1 subscribe line.
pub const CGMINER_SUBSCRIBE: &str =
    "{\"id\": 1, \"method\": \"mining.subscribe\", \"params\": [\"cgminer/4.10\"]}\n";

/// Decodes hex, ignoring whitespace. Panics on bad input (tests only).
pub fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).expect("ascii hex");
            u8::from_str_radix(pair, 16).expect("hex digit")
        })
        .collect()
}

/// The openssl capture, decoded.
pub fn openssl_hello() -> Vec<u8> {
    hex(OPENSSL_HELLO_HEX)
}

/// The curl capture, decoded.
pub fn curl_hello() -> Vec<u8> {
    hex(CURL_HELLO_HEX)
}

/// Prefixes `body` with a big-endian length of `width` bytes.
fn with_len(width: usize, body: &[u8]) -> Vec<u8> {
    let len = body.len().to_be_bytes();
    let mut out = len[len.len() - width..].to_vec();
    out.extend_from_slice(body);
    out
}

/// A server_name extension body holding `names` as host_name entries.
pub fn sni_ext(names: &[&[u8]]) -> Vec<u8> {
    let mut list = Vec::new();
    for name in names {
        list.push(0);
        list.extend(with_len(2, name));
    }
    with_len(2, &list)
}

/// An ALPN extension body holding `protocols`.
pub fn alpn_ext(protocols: &[&[u8]]) -> Vec<u8> {
    let list: Vec<u8> = protocols.iter().flat_map(|p| with_len(1, p)).collect();
    with_len(2, &list)
}

/// A one-record ClientHello with `extensions` (`None`: no extension block).
pub fn build_hello(extensions: Option<&[(u16, Vec<u8>)]>) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend([7; 32]);
    body.extend([0]); // empty session id
    body.extend([0, 2, 0x13, 0x01]); // one cipher suite
    body.extend([1, 0]); // null compression
    if let Some(exts) = extensions {
        let mut block = Vec::new();
        for (kind, data) in exts {
            block.extend(kind.to_be_bytes());
            block.extend(with_len(2, data));
        }
        body.extend(with_len(2, &block));
    }
    let mut message = vec![1];
    message.extend(with_len(3, &body));
    let mut record = vec![0x16, 3, 1];
    record.extend(with_len(2, &message));
    record
}

/// Re-frames a one-record hello into records of at most `size` bytes each.
pub fn split_records(record: &[u8], size: usize) -> Vec<u8> {
    let payload = &record[5..];
    let mut out = Vec::new();
    for chunk in payload.chunks(size) {
        out.extend([0x16, 3, 1]);
        out.extend(with_len(2, chunk));
    }
    out
}

/// xorshift64: deterministic, dependency-free pseudo-random numbers.
pub struct XorShift(pub u64);

impl XorShift {
    /// The next pseudo-random number.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A pseudo-random number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Mutates `buf` in place: flips, overwrites, inserts, deletes, or
    /// truncates a few bytes.
    pub fn mutate(&mut self, buf: &mut Vec<u8>) {
        for _ in 0..=self.below(4) {
            let at = self.below(buf.len() + 1);
            match self.below(6) {
                0 if at < buf.len() => buf[at] ^= 1 << self.below(8),
                1 if at < buf.len() => buf[at] = self.next() as u8,
                2 if at < buf.len() => buf[at] = [0, 0xff, 0x7f, 0x80][self.below(4)],
                3 => buf.insert(at, self.next() as u8),
                4 if at < buf.len() => {
                    buf.remove(at);
                }
                5 => buf.truncate(at),
                _ => {}
            }
        }
    }
}
