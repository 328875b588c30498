//! A strict, incremental chunked-transfer decoder (RFC 9112 section 7.1).
//!
//! It never buffers: it walks the bytes it is given, says how many belong to the message, and
//! optionally copies out the payload. The chunked bytes are forwarded as they came (a request's
//! trailer fields left out, `relay`), so the decoder's jobs are to find the exact end of the
//! message and to refuse anything a different parser might read differently (smuggling).

/// Chunk sizes are at most 16 hex digits: 2^64 - 1.
const MAX_SIZE_DIGITS: u8 = 16;
/// Chunk extensions and each trailer line are bounded so a sender cannot stream an endless line.
const MAX_LINE: usize = 4096;
/// The whole trailer section.
const MAX_TRAILERS: usize = 16 * 1024;
/// All chunk extensions of a message together. Only payload counts against
/// `max_body_bytes`: without this, a body of one-byte chunks with long extensions would carry
/// thousands of times its payload to the provider. Nobody sends extensions in practice.
const MAX_EXTENSIONS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    InvalidSize,
    SizeOverflow,
    InvalidLineEnding,
    LineTooLong,
    InvalidExtension,
    ExtensionsTooLarge,
    TrailersTooLarge,
}

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChunkError::InvalidSize => "a chunk size that is not hexadecimal",
            ChunkError::SizeOverflow => "a chunk size too large",
            ChunkError::InvalidLineEnding => "a chunk line not ended by CRLF",
            ChunkError::LineTooLong => "a chunk size line too long",
            ChunkError::InvalidExtension => "a malformed chunk extension",
            ChunkError::ExtensionsTooLarge => "chunk extensions too large",
            ChunkError::TrailersTooLarge => "trailer fields too large",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size; `digits` read so far.
    Size {
        value: u64,
        digits: u8,
    },
    /// After `;` up to the CR of the size line.
    Extension {
        value: u64,
        len: usize,
    },
    SizeLf {
        value: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    Trailer {
        len: usize,
    },
    TrailerLf,
    FinalLf,
    Done,
}

impl State {
    /// Whether `byte`, read in this state, is part of a trailer field line: what `relay`
    /// leaves out. The CRLF that ends the trailer section is not.
    fn in_trailer_field(self, byte: u8) -> bool {
        match self {
            State::TrailerStart => byte != b'\r',
            State::Trailer { .. } | State::TrailerLf => true,
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    payload: u64,
    trailers: usize,
    extensions: usize,
}

/// What one call to `feed` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input that belong to this message (the rest is the next one).
    pub consumed: usize,
    pub done: bool,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size { value: 0, digits: 0 },
            payload: 0,
            trailers: 0,
            extensions: 0,
        }
    }

    /// Payload bytes seen so far (chunk data only).
    pub fn payload_len(&self) -> u64 {
        self.payload
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Walks `input`; payload bytes are appended to `decoded` when it is given.
    pub fn feed(&mut self, input: &[u8], decoded: Option<&mut Vec<u8>>) -> Result<Progress, ChunkError> {
        self.walk(input, decoded, None)
    }

    /// Walks `input` as `feed` does, appending to `out` the bytes to forward: the message as
    /// framed, less its trailer fields, so it ends with an empty trailer section. A proxy may
    /// discard trailers (RFC 9110 section 6.5.1), and the proxy checks none: a provider that
    /// merged them into the head would read an `Ssp-From` or `Authorization` nobody checked.
    /// Nothing of a call that fails is appended.
    pub fn relay(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Progress, ChunkError> {
        let staged = out.len();
        let walked = self.walk(input, None, Some(&mut *out));
        if walked.is_err() {
            out.truncate(staged);
        }
        walked
    }

    /// `feed` and `relay`: the one walk over the framing.
    fn walk(
        &mut self,
        input: &[u8],
        mut decoded: Option<&mut Vec<u8>>,
        mut relay: Option<&mut Vec<u8>>,
    ) -> Result<Progress, ChunkError> {
        let mut i = 0;
        // Where the bytes to relay that are not yet copied start: they are copied a run at a
        // time, when a trailer field interrupts them and at the end.
        let mut kept = 0;
        while i < input.len() && self.state != State::Done {
            let byte = input[i];
            if self.state.in_trailer_field(byte) {
                if let Some(out) = relay.as_deref_mut() {
                    out.extend_from_slice(&input[kept..i]);
                }
                kept = i + 1;
            }
            self.state = match self.state {
                State::Size { value, digits } => match hex_value(byte) {
                    Some(d) => {
                        if digits >= MAX_SIZE_DIGITS {
                            return Err(ChunkError::SizeOverflow);
                        }
                        State::Size {
                            value: (value << 4) | u64::from(d),
                            digits: digits + 1,
                        }
                    }
                    None if digits == 0 => return Err(ChunkError::InvalidSize),
                    None if byte == b';' => State::Extension { value, len: 0 },
                    None if byte == b'\r' => State::SizeLf { value },
                    None => return Err(ChunkError::InvalidSize),
                },
                State::Extension { value, len } => match byte {
                    b'\r' => State::SizeLf { value },
                    _ if len >= MAX_LINE => return Err(ChunkError::LineTooLong),
                    b'\t' | b' '..=b'~' | 0x80..=0xff => self.extension_byte(value, len)?,
                    _ => return Err(ChunkError::InvalidExtension),
                },
                State::SizeLf { value } => match (byte, value) {
                    (b'\n', 0) => State::TrailerStart,
                    (b'\n', n) => State::Data { remaining: n },
                    _ => return Err(ChunkError::InvalidLineEnding),
                },
                State::Data { remaining } => {
                    let available = (input.len() - i) as u64;
                    let take = remaining.min(available) as usize;
                    if let Some(out) = decoded.as_deref_mut() {
                        out.extend_from_slice(&input[i..i + take]);
                    }
                    self.payload += take as u64;
                    i += take;
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data { remaining: left }
                    };
                    continue;
                }
                State::DataCr if byte == b'\r' => State::DataLf,
                State::DataLf if byte == b'\n' => State::Size { value: 0, digits: 0 },
                State::DataCr | State::DataLf => return Err(ChunkError::InvalidLineEnding),
                State::TrailerStart if byte == b'\r' => State::FinalLf,
                State::TrailerStart | State::Trailer { .. } if byte == b'\n' => {
                    return Err(ChunkError::InvalidLineEnding);
                }
                State::TrailerStart => self.trailer_byte(0)?,
                State::Trailer { .. } if byte == b'\r' => State::TrailerLf,
                State::Trailer { len } => self.trailer_byte(len)?,
                State::TrailerLf if byte == b'\n' => State::TrailerStart,
                State::FinalLf if byte == b'\n' => State::Done,
                State::TrailerLf | State::FinalLf => return Err(ChunkError::InvalidLineEnding),
                State::Done => break,
            };
            i += 1;
        }
        if let Some(out) = relay {
            out.extend_from_slice(&input[kept.min(i)..i]);
        }
        Ok(Progress {
            consumed: i,
            done: self.state == State::Done,
        })
    }

    fn extension_byte(&mut self, value: u64, len: usize) -> Result<State, ChunkError> {
        self.extensions += 1;
        if self.extensions > MAX_EXTENSIONS {
            return Err(ChunkError::ExtensionsTooLarge);
        }
        Ok(State::Extension { value, len: len + 1 })
    }

    fn trailer_byte(&mut self, len: usize) -> Result<State, ChunkError> {
        self.trailers += 1;
        if self.trailers > MAX_TRAILERS {
            return Err(ChunkError::TrailersTooLarge);
        }
        if len >= MAX_LINE {
            return Err(ChunkError::LineTooLong);
        }
        Ok(State::Trailer { len: len + 1 })
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<(Progress, Vec<u8>), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let p = d.feed(input, Some(&mut out))?;
        Ok((p, out))
    }

    #[test]
    fn decodes_chunks_and_stops_at_the_end_of_the_message() {
        let input = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nGET /next";
        let (p, out) = decode_all(input).unwrap();
        assert!(p.done);
        assert_eq!(out, b"hello world");
        assert_eq!(&input[p.consumed..], b"GET /next");
    }

    #[test]
    fn trailers_are_accepted_and_counted_as_message_bytes() {
        let input = b"1\r\na\r\n0\r\nX-Sum: 1\r\n\r\n";
        let (p, out) = decode_all(input).unwrap();
        assert_eq!(
            (p.done, p.consumed, out.as_slice()),
            (true, input.len(), &b"a"[..])
        );
    }

    /// Relays `input` cut at `cuts` (sorted positions), as a connection would feed it.
    fn relay_in_pieces(input: &[u8], cuts: &[usize]) -> Result<(usize, bool, Vec<u8>), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let (mut consumed, mut start) = (0, 0);
        for end in cuts.iter().copied().chain([input.len()]) {
            let p = d.relay(&input[start..end], &mut out)?;
            consumed += p.consumed;
            start = end;
            if p.done {
                return Ok((consumed, true, out));
            }
        }
        Ok((consumed, false, out))
    }

    /// Issue 24 item 12: a proxy may discard trailers (RFC 9110 section 6.5.1); the request's
    /// are never checked, so none reach the provider. The body is relayed with an empty
    /// trailer section, the framing otherwise byte for byte, however the input is cut.
    #[test]
    fn relay_drops_trailer_fields_and_keeps_the_framing() {
        let cases: [(&[u8], &[u8]); 5] = [
            (b"5\r\nhello\r\n0\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
            (
                b"5;ext=1\r\nhello\r\n0\r\nSsp-From: 2\r\nAuthorization: Bearer x\r\n\r\n",
                b"5;ext=1\r\nhello\r\n0\r\n\r\n",
            ),
            (b"0\r\nHost: evil\r\nContent-Length: 5\r\n\r\n", b"0\r\n\r\n"),
            (b"0\r\nX:\r\n\r\n", b"0\r\n\r\n"),
            (b"1\r\n\r\r\n0\r\nA:\tb\r\n\r\n", b"1\r\n\r\r\n0\r\n\r\n"),
        ];
        for (input, want) in cases {
            let mut next = input.to_vec();
            next.extend_from_slice(b"GET /next");
            let whole = relay_in_pieces(&next, &[]);
            assert_eq!(
                whole,
                Ok((input.len(), true, want.to_vec())),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            for cut in 0..=input.len() {
                assert_eq!(relay_in_pieces(&next, &[cut]), whole, "cut at {cut}");
            }
            let every: Vec<usize> = (1..next.len()).collect();
            assert_eq!(relay_in_pieces(&next, &every), whole, "byte by byte");
        }
    }

    #[test]
    fn relay_of_a_broken_message_appends_nothing_of_the_failed_call() {
        let mut d = ChunkedDecoder::new();
        let mut out = b"staged".to_vec();
        let broken = b"5\r\nhello\r\n0\r\nX: a\r\n\n";
        assert_eq!(d.relay(broken, &mut out), Err(ChunkError::InvalidLineEnding));
        assert_eq!(out, b"staged");
    }

    #[test]
    fn byte_at_a_time_gives_the_same_result() {
        let input = b"A\r\n0123456789\r\n2\r\nab\r\n0\r\n\r\n";
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        for (n, b) in input.iter().enumerate() {
            let p = d.feed(std::slice::from_ref(b), Some(&mut out)).unwrap();
            assert_eq!(p.consumed, 1);
            assert_eq!(p.done, n == input.len() - 1);
        }
        assert_eq!(out, b"0123456789ab");
        assert_eq!(d.payload_len(), 12);
    }

    #[test]
    fn invalid_chunk_framing_is_refused() {
        let cases: &[(&[u8], ChunkError)] = &[
            (b"x\r\n", ChunkError::InvalidSize),
            (b"\r\n", ChunkError::InvalidSize),
            (b" 5\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
            (b"5 \r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
            (b"+5\r\nhello\r\n", ChunkError::InvalidSize),
            (b"-5\r\nhello\r\n", ChunkError::InvalidSize),
            (b"0x5\r\nhello\r\n", ChunkError::InvalidSize),
            (b"10000000000000000\r\n", ChunkError::SizeOverflow),
            (b"5\nhello\r\n", ChunkError::InvalidSize),
            (b"5\r\r", ChunkError::InvalidLineEnding),
            (b"5\r\nhelloX\r\n", ChunkError::InvalidLineEnding),
            (b"5\r\nhello\n0\r\n\r\n", ChunkError::InvalidLineEnding),
            (b"5;a\x01\r\n", ChunkError::InvalidExtension),
            (b"0\r\nX: a\n\r\n", ChunkError::InvalidLineEnding),
            (b"0\r\n\n", ChunkError::InvalidLineEnding),
        ];
        for (input, want) in cases {
            assert_eq!(
                decode_all(input).unwrap_err(),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn largest_size_is_accepted_without_overflow() {
        let mut d = ChunkedDecoder::new();
        let p = d.feed(b"ffffffffffffffff\r\nab", None).unwrap();
        assert_eq!((p.consumed, p.done), (20, false));
    }

    /// Each extension within `MAX_LINE`, but together without end: the payload (what
    /// `max_body_bytes` counts) stays tiny while the bytes forwarded to the provider grow
    /// about 4000-fold.
    #[test]
    fn extensions_are_bounded_for_the_whole_message() {
        let chunk = format!("1;{}\r\nx\r\n", "a".repeat(MAX_LINE - 1));
        let mut d = ChunkedDecoder::new();
        let outcome = (0..1000).try_for_each(|_| d.feed(chunk.as_bytes(), None).map(|_| ()));
        assert_eq!(outcome, Err(ChunkError::ExtensionsTooLarge));
        assert!(d.payload_len() < 1000);
    }

    #[test]
    fn endless_extension_is_cut_off() {
        let mut input = b"1;".to_vec();
        input.extend(std::iter::repeat_n(b'a', MAX_LINE + 1));
        assert_eq!(decode_all(&input).unwrap_err(), ChunkError::LineTooLong);
    }
}
