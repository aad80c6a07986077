use super::*;
use crate::detect::stratum::{SCAN_LIMIT, StratumScanner};
use crate::detect::testdata::{CGMINER_SUBSCRIBE, XMRIG_LOGIN, XorShift};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A frame with first byte `first` (FIN, RSV and opcode), masked with `mask`
/// when given, its length in the shortest form.
fn frame_with(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut out = vec![first];
    match payload.len() {
        len @ 0..=125 => out.push(mask_bit | len as u8),
        len @ 126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A final frame of `opcode`.
fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    frame_with(0x80 | opcode, payload, mask)
}

/// Feeds `pieces` to a new decoder; the payload handed out, and the decoder.
fn decode_pieces(pieces: &[&[u8]]) -> (Vec<u8>, WsDecoder) {
    let mut decoder = WsDecoder::new();
    let mut out = Vec::new();
    for piece in pieces {
        decoder.feed(piece, &mut |p| {
            assert!(!p.is_empty(), "called with nothing");
            out.extend_from_slice(p);
        });
    }
    (out, decoder)
}

fn decode(bytes: &[u8]) -> (Vec<u8>, WsDecoder) {
    decode_pieces(&[bytes])
}

/// A client-side message: a text frame cut in three fragments, a ping and a
/// pong among them, then a binary frame and a close.
fn multi_frame_stream(mask: Option<[u8; 4]>) -> (Vec<u8>, Vec<u8>) {
    let text = CGMINER_SUBSCRIBE.as_bytes();
    let (a, rest) = text.split_at(10);
    let (b, c) = rest.split_at(7);
    let big = vec![b'z'; 300];
    let stream = [
        frame_with(0x01, a, mask),
        frame(0x9, b"ping!", mask),
        frame_with(0x00, b, mask),
        frame(0xA, b"", mask),
        frame(0x0, c, mask),
        frame(0x2, &big, mask),
        frame(0x1, b"", mask),
        frame(0x8, b"\x03\xe8bye", mask),
    ]
    .concat();
    (stream, [text, &big].concat())
}

#[test]
fn masked_client_text_frame() {
    // RFC 6455 section 5.7: a masked "Hello".
    let bytes = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let (out, decoder) = decode(&bytes);
    assert_eq!(out, b"Hello");
    assert!(!decoder.is_broken() && !decoder.saw_compressed());
    assert_eq!(bytes.to_vec(), frame(0x1, b"Hello", Some(KEY)));
}

#[test]
fn unmasked_server_frame() {
    // RFC 6455 section 5.7: an unmasked "Hello".
    let (out, decoder) = decode(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    assert_eq!(out, b"Hello");
    assert!(!decoder.is_broken());
    let (out, _) = decode(&frame(0x2, &[0, 1, 2, 0xff], None));
    assert_eq!(out, [0, 1, 2, 0xff]);
}

#[test]
fn sixteen_and_sixty_four_bit_lengths() {
    for len in [125, 126, 127, 256, 0xffff, 0x1_0000, 70_000] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        for mask in [None, Some(KEY)] {
            let bytes = frame(0x2, &payload, mask);
            let (out, decoder) = decode(&bytes);
            assert!(out == payload && !decoder.is_broken(), "{len} {mask:?}");
        }
    }
    // Lengths need not be in their shortest form.
    let mut long_form = vec![0x82, 127, 0, 0, 0, 0, 0, 0, 0, 3];
    long_form.extend_from_slice(b"abc");
    let mut mid_form = vec![0x82, 126, 0, 2];
    mid_form.extend_from_slice(b"de");
    assert_eq!(decode(&[long_form, mid_form].concat()).0, b"abcde");
}

#[test]
fn fragments_are_joined_and_control_frames_skipped() {
    for mask in [None, Some(KEY)] {
        let (stream, want) = multi_frame_stream(mask);
        let (out, decoder) = decode(&stream);
        assert_eq!(out, want);
        assert!(!decoder.is_broken());
        assert_eq!(decoder.frame.map(|f| f.remaining), None);
        assert_eq!(decoder.message, None);
    }
}

#[test]
fn every_split_gives_the_same_payload() {
    let (stream, want) = multi_frame_stream(Some(KEY));
    for cut in 0..=stream.len() {
        let (a, b) = stream.split_at(cut);
        assert_eq!(decode_pieces(&[a, b]).0, want, "cut at {cut}");
    }
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(decode_pieces(&bytes).0, want);
    for size in [2, 3, 5, 13, 14, 15] {
        let pieces: Vec<&[u8]> = stream.chunks(size).collect();
        assert_eq!(decode_pieces(&pieces).0, want, "pieces of {size}");
    }
}

#[test]
fn compressed_messages_are_skipped() {
    let deflated = b"\xf2\x48\xcd\xc9\xc9\x07\x00";
    // RSV1 on a one-frame message.
    let (out, decoder) = decode(&frame_with(0xc1, deflated, Some(KEY)));
    assert!(out.is_empty() && decoder.saw_compressed() && !decoder.is_broken());
    // RSV1 on the first frame only: the continuations are compressed too.
    let stream = [
        frame_with(0x41, deflated, None),
        frame(0x9, b"p", None),
        frame_with(0x00, deflated, None),
        frame(0x0, deflated, None),
        frame(0x1, b"plain", None),
    ]
    .concat();
    let (out, decoder) = decode(&stream);
    assert_eq!(out, b"plain");
    assert!(decoder.saw_compressed() && !decoder.is_broken());
    assert!(!decode(&multi_frame_stream(None).0).1.saw_compressed());
}

#[test]
fn malformed_headers_break_it_for_good() {
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for opcode in (0x3..=0x7).chain(0xB..=0xF) {
        cases.push((format!("opcode {opcode:#x}"), frame(opcode, b"x", None)));
    }
    let mut top_bit = vec![0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1];
    top_bit.extend_from_slice(b"abc");
    cases.push(("64-bit length, top bit".into(), top_bit));
    cases.push(("RSV2".into(), frame_with(0xa1, b"x", None)));
    cases.push(("RSV3".into(), frame_with(0x91, b"x", None)));
    cases.push(("long ping".into(), frame(0x9, &[0; 126], None)));
    cases.push(("fragmented ping".into(), frame_with(0x09, b"x", None)));
    cases.push(("compressed close".into(), frame_with(0xc8, b"x", None)));
    cases.push(("lone continuation".into(), frame(0x0, b"x", None)));
    let open = frame_with(0x01, b"a", None);
    cases.push((
        "text within text".into(),
        [open, frame(0x1, b"b", None)].concat(),
    ));
    // Raw Stratum where frames were expected.
    cases.push((
        "not websocket".into(),
        CGMINER_SUBSCRIBE.as_bytes().to_vec(),
    ));
    for (name, bad) in cases {
        let good = frame(0x1, b"ok", Some(KEY));
        let stream = [good.clone(), bad, good.clone()].concat();
        let (out, mut decoder) = decode(&stream);
        assert!(decoder.is_broken(), "{name}");
        assert!(
            out.starts_with(b"ok") && !out.ends_with(b"okok"),
            "{name}: {out:?}"
        );
        decoder.feed(&good, &mut |_| panic!("{name}: called after breaking"));
    }
    // The top bit clear is fine, however long the frame.
    let mut huge = vec![0x82, 127, 0x7f, 0xff, 0, 0, 0, 0, 0, 0];
    huge.extend_from_slice(&[7; 1000]);
    let (out, decoder) = decode(&huge);
    assert!(out.len() == 1000 && !decoder.is_broken());
}

#[test]
fn memory_is_bounded_whatever_the_input() {
    // No heap at all: a header of at most 14 bytes and a few counters.
    assert!(size_of::<WsDecoder>() <= 64, "{}", size_of::<WsDecoder>());
    // A frame announcing 2^62 bytes, fed 16 MiB in pieces, handed out as it
    // comes.
    let mut decoder = WsDecoder::new();
    let mut head = vec![0x82, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0];
    head.extend_from_slice(&KEY);
    let mut total = 0;
    decoder.feed(&head, &mut |p| total += p.len());
    let piece = vec![0u8; 1 << 20];
    for _ in 0..16 {
        decoder.feed(&piece, &mut |p| {
            assert!(p.len() <= CHUNK);
            total += p.len();
        });
    }
    assert_eq!(total, 16 << 20);
    assert!(!decoder.is_broken());
}

#[test]
fn junk_never_panics_and_splits_never_matter() {
    let (seed_stream, _) = multi_frame_stream(Some(KEY));
    let mut rng = XorShift(0xf4a3_e5e5);
    for round in 0..3000 {
        let input: Vec<u8> = if round % 2 == 0 {
            let mut input = seed_stream.clone();
            rng.mutate(&mut input);
            input
        } else {
            (0..rng.below(400)).map(|_| rng.next() as u8).collect()
        };
        let (whole, decoder) = decode(&input);
        assert!(whole.len() <= input.len());
        let cut = rng.below(input.len() + 1);
        let (a, b) = input.split_at(cut);
        let (split, other) = decode_pieces(&[a, b]);
        assert_eq!(split, whole, "{input:?} cut at {cut}");
        assert_eq!(other.is_broken(), decoder.is_broken());
        assert_eq!(other.saw_compressed(), decoder.saw_compressed());
    }
}

/// Feeds `stream` through a decoder into a scanner, in pieces of `size`.
fn scan_frames(stream: &[u8], size: usize) -> Option<String> {
    let mut decoder = WsDecoder::new();
    let mut scanner = StratumScanner::new();
    let mut found = None;
    for piece in stream.chunks(size) {
        decoder.feed(piece, &mut |payload| {
            if let Some(hit) = scanner.feed(payload) {
                found = Some(hit.method);
            }
        });
    }
    found
}

#[test]
fn stratum_inside_frames_is_found() {
    let line = CGMINER_SUBSCRIBE.as_bytes();
    let masked = frame(0x1, line, Some(KEY));
    for size in [1, 2, 7, masked.len()] {
        assert_eq!(
            scan_frames(&masked, size),
            Some("mining.subscribe".into()),
            "{size}"
        );
    }
    // After other messages, cut across frames, with no newline at all.
    let login = XMRIG_LOGIN.trim_end().as_bytes();
    let (a, b) = login.split_at(50);
    let stream = [
        frame(0x1, b"{\"type\":\"hello\"}", Some(KEY)),
        frame(0x9, b"", Some(KEY)),
        frame_with(0x01, a, Some(KEY)),
        frame(0x0, b, Some(KEY)),
    ]
    .concat();
    assert_eq!(scan_frames(&stream, 3), Some("login".into()));
    // Compressed, it cannot be seen.
    let hidden = frame_with(0xc1, line, Some(KEY));
    assert_eq!(scan_frames(&hidden, 5), None);
    // Past SCAN_LIMIT bytes of payload, it is not looked for.
    let filler = frame(0x2, &vec![b'.'; SCAN_LIMIT], None);
    assert_eq!(scan_frames(&[filler, masked].concat(), 4096), None);
}
