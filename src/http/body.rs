//! One body reader for both directions: it finds where a message body ends, whichever way it
//! is framed, without buffering it.

use super::chunked::{ChunkError, ChunkedDecoder};

pub use super::chunked::Progress;

#[derive(Debug, Clone)]
pub enum BodyReader {
    Length { remaining: u64 },
    Chunked(ChunkedDecoder),
    UntilClose { seen: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    Chunk(ChunkError),
    /// The connection ended before the framing said the body was complete.
    Truncated,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Chunk(e) => write!(f, "bad chunked framing: {e}"),
            BodyError::Truncated => f.write_str("the connection ended before the body did"),
        }
    }
}

impl BodyReader {
    pub fn length(n: u64) -> Self {
        BodyReader::Length { remaining: n }
    }

    pub fn chunked() -> Self {
        BodyReader::Chunked(ChunkedDecoder::new())
    }

    pub fn until_close() -> Self {
        BodyReader::UntilClose { seen: 0 }
    }

    /// How much of `input` belongs to the body, and whether the body is now complete.
    /// Payload bytes are copied to `decoded` when given (chunk framing removed).
    pub fn feed(&mut self, input: &[u8], decoded: Option<&mut Vec<u8>>) -> Result<Progress, BodyError> {
        match self {
            BodyReader::Length { remaining } => {
                let take = (*remaining).min(input.len() as u64) as usize;
                *remaining -= take as u64;
                if let Some(out) = decoded {
                    out.extend_from_slice(&input[..take]);
                }
                Ok(Progress {
                    consumed: take,
                    done: *remaining == 0,
                })
            }
            BodyReader::Chunked(d) => d.feed(input, decoded).map_err(BodyError::Chunk),
            BodyReader::UntilClose { seen } => {
                *seen += input.len() as u64;
                if let Some(out) = decoded {
                    out.extend_from_slice(input);
                }
                Ok(Progress {
                    consumed: input.len(),
                    done: false,
                })
            }
        }
    }

    /// Like `feed`, appending to `out` the bytes to forward: the body as framed, less the
    /// trailer fields of a chunked one (`ChunkedDecoder::relay`).
    pub fn relay(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Progress, BodyError> {
        if let BodyReader::Chunked(d) = self {
            return d.relay(input, out).map_err(BodyError::Chunk);
        }
        let p = self.feed(input, None)?;
        out.extend_from_slice(&input[..p.consumed]);
        Ok(p)
    }

    /// The peer closed: complete if the framing says the body is, truncated otherwise.
    ///
    /// `close_verified`: the close is known to be the sender's own (a TLS close_notify, or a
    /// transport with nothing better to offer). Only then is a close-delimited body complete:
    /// a bare TCP close may be a crash or forged, cutting the body anywhere (RFC 9112 section
    /// 9.8).
    pub fn finish_at_eof(&self, close_verified: bool) -> Result<(), BodyError> {
        match self {
            BodyReader::UntilClose { .. } if close_verified => Ok(()),
            BodyReader::Length { remaining: 0 } => Ok(()),
            BodyReader::Chunked(d) if d.is_done() => Ok(()),
            _ => Err(BodyError::Truncated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_body_stops_at_its_length() {
        let mut r = BodyReader::length(5);
        let p = r.feed(b"helloGET", None).unwrap();
        assert_eq!((p.consumed, p.done), (5, true));
        assert!(r.finish_at_eof(false).is_ok());
    }

    /// What `relay` stages for the provider: the body as framed, less a chunked body's
    /// trailer fields.
    #[test]
    fn relay_passes_the_body_on_without_trailer_fields() {
        let mut out = Vec::new();
        let mut r = BodyReader::length(5);
        assert_eq!(r.relay(b"helloGET", &mut out).unwrap().consumed, 5);
        assert_eq!(out, b"hello");
        out.clear();
        let mut c = BodyReader::chunked();
        let input = b"2\r\nhi\r\n0\r\nSsp-From: 2\r\n\r\nGET";
        let p = c.relay(input, &mut out).unwrap();
        assert_eq!((p.consumed, p.done), (input.len() - 3, true));
        assert_eq!(out, b"2\r\nhi\r\n0\r\n\r\n");
        out.clear();
        let mut u = BodyReader::until_close();
        assert_eq!(u.relay(b"{}", &mut out).unwrap().consumed, 2);
        assert_eq!(out, b"{}");
    }

    #[test]
    fn truncated_bodies_are_detected_at_eof() {
        let mut r = BodyReader::length(5);
        r.feed(b"he", None).unwrap();
        assert_eq!(r.finish_at_eof(true), Err(BodyError::Truncated));
        let mut c = BodyReader::chunked();
        c.feed(b"5\r\nhe", None).unwrap();
        assert_eq!(c.finish_at_eof(true), Err(BodyError::Truncated));
        assert!(BodyReader::until_close().finish_at_eof(true).is_ok());
    }

    #[test]
    fn close_delimited_body_is_complete_only_at_a_verified_close() {
        let mut r = BodyReader::until_close();
        r.feed(b"{\"entry\":[", None).unwrap();
        assert_eq!(r.finish_at_eof(false), Err(BodyError::Truncated));
        assert!(r.finish_at_eof(true).is_ok());
        let mut c = BodyReader::chunked();
        c.feed(b"0\r\n\r\n", None).unwrap();
        assert!(c.finish_at_eof(false).is_ok());
    }
}
