//! WebSocket frame decoder (RFC 6455): reads one direction of a stream
//! after its HTTP upgrade and hands out the payload of its data frames, so
//! what travels inside can be inspected (for Stratum, by
//! [`super::stratum::StratumScanner`]).
//!
//! Pure: it is fed byte slices, calls back with payload bytes as they come
//! (in pieces, never buffering a frame), holds at most one frame header, and
//! never panics. It skips control frames and compressed messages
//! (permessage-deflate, RFC 7692), and it gives up for good on a header that
//! is not WebSocket. Depends on nothing else in the crate.

/// Longest frame header: 2 bytes, a 64-bit length, a 4-byte masking key.
const MAX_HEADER: usize = 14;
/// Unmasked payload is handed out in pieces of at most this many bytes.
const CHUNK: usize = 512;

/// Decodes the frames of one direction of a WebSocket stream.
///
/// Malformed (it stops, [`WsDecoder::is_broken`]): a reserved opcode,
/// RSV2 or RSV3 set (no extension in use defines them), a 64-bit length with
/// its top bit set, a control frame that is fragmented, longer than 125
/// bytes or has RSV1 set, a continuation with no message to continue, or a
/// new message while one is still fragmented. Lengths need not be minimally
/// encoded.
#[derive(Debug, Default)]
pub struct WsDecoder {
    /// The header being read.
    header: [u8; MAX_HEADER],
    /// How much of it has been read (0 between frames).
    header_len: usize,
    /// The frame whose payload is being read, if any.
    frame: Option<Payload>,
    /// A fragmented data message is open: whether it is compressed.
    message: Option<bool>,
    /// A frame with RSV1 set was seen.
    compressed: bool,
    /// A malformed header was seen.
    broken: bool,
}

/// The payload still to come of the current frame.
#[derive(Debug, Clone, Copy)]
struct Payload {
    /// Bytes left.
    remaining: u64,
    /// The masking key, for a masked frame.
    mask: Option<[u8; 4]>,
    /// Bytes read so far, modulo 4: where the next byte is in the key.
    offset: usize,
    /// Whether its bytes go to the caller (uncompressed data).
    deliver: bool,
}

/// A frame header, read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    len: u64,
    mask: Option<[u8; 4]>,
}

impl WsDecoder {
    /// A decoder for one direction; client-to-server frames must be masked,
    /// server-to-client ones must not (RFC 6455 section 5.1), but accept
    /// either to be robust.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next raw bytes; calls `payload` with the unmasked payload
    /// bytes of data frames (text, binary, continuation) as they arrive (in
    /// pieces; no whole-frame buffering), skipping control frames. After a
    /// malformed header it stops (returns without calling, forever:
    /// `is_broken`).
    pub fn feed(&mut self, mut bytes: &[u8], payload: &mut dyn FnMut(&[u8])) {
        while !bytes.is_empty() && !self.broken {
            bytes = if self.frame.is_some() {
                self.read_payload(bytes, payload)
            } else {
                self.read_header(bytes)
            };
        }
    }

    /// True after a frame with RSV1 set (permessage-deflate: the payload is
    /// compressed and cannot be inspected) was seen.
    pub fn saw_compressed(&self) -> bool {
        self.compressed
    }

    /// True after a malformed header: the stream is not (or no longer)
    /// followed, and `feed` does nothing.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Reads header bytes; starts the frame once its header is whole.
    fn read_header<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        let need = header_size(&self.header[..self.header_len]);
        let take = need.saturating_sub(self.header_len).min(bytes.len());
        let (now, rest) = bytes.split_at(take);
        if let Some(slot) = self.header.get_mut(self.header_len..self.header_len + take) {
            slot.copy_from_slice(now);
        }
        self.header_len += take;
        let read = &self.header[..self.header_len];
        if self.header_len == header_size(read) {
            let header = parse_header(read);
            self.header_len = 0;
            match header {
                Some(header) => self.start_frame(header),
                None => self.broken = true,
            }
        }
        rest
    }

    /// Follows the message state for a new frame and sets up its payload.
    fn start_frame(&mut self, header: Header) {
        let deliver = match header.opcode {
            0x1 | 0x2 if self.message.is_none() => {
                if !header.fin {
                    self.message = Some(header.rsv1);
                }
                !header.rsv1
            }
            0x0 => match self.message {
                Some(compressed) => {
                    let compressed = compressed || header.rsv1;
                    self.message = (!header.fin).then_some(compressed);
                    !compressed
                }
                None => {
                    self.broken = true;
                    return;
                }
            },
            0x8..=0xA => false,
            _ => {
                // A new message while another is still fragmented.
                self.broken = true;
                return;
            }
        };
        self.compressed |= header.rsv1;
        self.frame = (header.len > 0).then_some(Payload {
            remaining: header.len,
            mask: header.mask,
            offset: 0,
            deliver,
        });
    }

    /// Reads payload bytes of the current frame, handing them out if due.
    fn read_payload<'a>(&mut self, bytes: &'a [u8], payload: &mut dyn FnMut(&[u8])) -> &'a [u8] {
        let Some(frame) = &mut self.frame else {
            return bytes;
        };
        let take = usize::try_from(frame.remaining).map_or(bytes.len(), |r| r.min(bytes.len()));
        let (now, rest) = bytes.split_at(take);
        if frame.deliver {
            unmask(now, frame.mask, frame.offset, payload);
        }
        frame.offset = (frame.offset + take) % 4;
        frame.remaining = frame.remaining.saturating_sub(take as u64);
        if frame.remaining == 0 {
            self.frame = None;
        }
        rest
    }
}

/// How many bytes the header starting with `read` has: 2 until its length
/// byte is known.
fn header_size(read: &[u8]) -> usize {
    let Some(&second) = read.get(1) else {
        return 2;
    };
    let len = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    2 + len + mask
}

/// Parses a whole header; `None` when it is malformed.
fn parse_header(header: &[u8]) -> Option<Header> {
    let (&first, rest) = header.split_first()?;
    let (&second, rest) = rest.split_first()?;
    if first & 0x30 != 0 {
        return None;
    }
    let (len, rest) = match second & 0x7f {
        126 => {
            let (len, rest) = rest.split_first_chunk::<2>()?;
            (u64::from(u16::from_be_bytes(*len)), rest)
        }
        127 => {
            let (len, rest) = rest.split_first_chunk::<8>()?;
            (u64::from_be_bytes(*len), rest)
        }
        short => (u64::from(short), rest),
    };
    if len >> 63 != 0 {
        return None;
    }
    let mask = if second & 0x80 != 0 {
        Some(*rest.first_chunk::<4>()?)
    } else {
        None
    };
    let header = Header {
        fin: first & 0x80 != 0,
        rsv1: first & 0x40 != 0,
        opcode: first & 0x0f,
        len,
        mask,
    };
    let control_ok = header.fin && header.len <= 125 && !header.rsv1;
    match header.opcode {
        0x0..=0x2 => Some(header),
        0x8..=0xA if control_ok => Some(header),
        _ => None,
    }
}

/// Hands `bytes` to `payload`, unmasked with `mask` from `offset` in it.
fn unmask(bytes: &[u8], mask: Option<[u8; 4]>, offset: usize, payload: &mut dyn FnMut(&[u8])) {
    let Some(key) = mask else {
        payload(bytes);
        return;
    };
    let mut buf = [0u8; CHUNK];
    let mut offset = offset;
    for piece in bytes.chunks(CHUNK) {
        for ((out, byte), i) in buf.iter_mut().zip(piece).zip(offset..) {
            *out = byte ^ key[i % 4];
        }
        payload(&buf[..piece.len()]);
        offset = (offset + piece.len()) % 4;
    }
}

#[cfg(test)]
mod tests;
