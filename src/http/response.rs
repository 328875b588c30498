//! The provider's response head: parsed with httparse, framed by RFC 9112 section 6.3.
//! A provider we cannot frame unambiguously is treated as a failed provider (502).

use super::head::{self, Fields, HeadError, list_tokens, parse_content_length, trim_ows};

const MAX_FIELDS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    None,
    Length(u64),
    Chunked,
    /// Delimited by the provider closing the connection.
    UntilClose,
}

#[derive(Debug, Clone)]
pub struct ResponseHead {
    raw: Vec<u8>,
    pub status: u16,
    reason: std::ops::Range<usize>,
    fields: Fields,
    pub framing: ResponseFraming,
    /// The provider's connection may be reused after this response.
    pub reusable: bool,
}

impl ResponseHead {
    pub fn reason(&self) -> &[u8] {
        &self.raw[self.reason.clone()]
    }

    pub fn len(&self) -> usize {
        self.raw.len()
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields.iter(&self.raw)
    }

    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields.all(&self.raw, name).next()
    }

    /// The tokens of every `Connection` field, walked afresh on each call (no allocation;
    /// heads have few fields).
    pub fn connection_tokens(&self) -> impl Iterator<Item = &[u8]> {
        self.fields.all(&self.raw, "connection").flat_map(list_tokens)
    }

    /// 1xx answers precede the final one.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status)
    }
}

/// Parses a response head; `request_method` decides whether a body follows (HEAD never has one).
pub fn parse(
    buf: &[u8],
    max_head_bytes: usize,
    request_method: &str,
) -> Result<Option<ResponseHead>, HeadError> {
    let end = match head::find_head_end(buf)? {
        Some(end) if end <= max_head_bytes => end,
        Some(_) => return Err(HeadError::TooLarge),
        None if buf.len() > max_head_bytes => return Err(HeadError::TooLarge),
        None => return Ok(None),
    };
    let raw = buf[..end].to_vec();
    let mut storage = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut res = httparse::Response::new(&mut storage);
    match res.parse(&raw) {
        Ok(httparse::Status::Complete(n)) if n == end => {}
        Ok(_) => return Err(HeadError::Malformed("head does not end where expected")),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed("invalid response head")),
    }
    let (Some(status), Some(minor)) = (res.code, res.version) else {
        return Err(HeadError::Malformed("incomplete status line"));
    };
    // httparse takes any three digits; outside 100-599 (RFC 9110 section 15) the number we
    // write back to the consumer would not even make a status line.
    if !(100..=599).contains(&status) {
        return Err(HeadError::Malformed("status code outside 100-599"));
    }
    let reason = res.reason.map_or(0..0, |r| head::range_in(&raw, r.as_bytes()));
    let fields = Fields::from_parsed(&raw, res.headers);
    let framing = framing(&raw, &fields, status, request_method)?;
    let mut head = ResponseHead {
        raw,
        status,
        reason,
        fields,
        framing,
        reusable: false,
    };
    // Dropping a framing field named in Connection would leave the consumer misreading the body.
    let framing_named = head
        .connection_tokens()
        .any(|t| t.eq_ignore_ascii_case(b"content-length") || t.eq_ignore_ascii_case(b"transfer-encoding"));
    if framing_named {
        return Err(HeadError::Malformed("Connection names a framing field"));
    }
    let has = |t: &[u8]| head.connection_tokens().any(|c| c.eq_ignore_ascii_case(t));
    let reusable = framing != ResponseFraming::UntilClose
        && if minor == 1 {
            !has(b"close")
        } else {
            has(b"keep-alive")
        };
    head.reusable = reusable;
    Ok(Some(head))
}

fn framing(
    raw: &[u8],
    fields: &Fields,
    status: u16,
    request_method: &str,
) -> Result<ResponseFraming, HeadError> {
    if request_method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&status)
        || status == 204
        || status == 304
    {
        return Ok(ResponseFraming::None);
    }
    let mut lengths = fields.all(raw, "content-length");
    let mut encodings = fields.all(raw, "transfer-encoding");
    let (first_length, first_encoding) = (lengths.next(), encodings.next());
    if let Some(encoding) = first_encoding {
        // Only a lone `chunked` is something we can frame and forward unchanged.
        if first_length.is_some()
            || encodings.next().is_some()
            || !trim_ows(encoding).eq_ignore_ascii_case(b"chunked")
        {
            return Err(HeadError::Malformed("ambiguous response framing"));
        }
        return Ok(ResponseFraming::Chunked);
    }
    match (first_length, lengths.next()) {
        (None, _) => Ok(ResponseFraming::UntilClose),
        (Some(one), None) => match parse_content_length(one) {
            Some(0) => Ok(ResponseFraming::None),
            Some(n) => Ok(ResponseFraming::Length(n)),
            None => Err(HeadError::Malformed("invalid Content-Length")),
        },
        _ => Err(HeadError::Malformed("several Content-Length fields")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str, method: &str) -> ResponseHead {
        parse(raw.as_bytes(), 8192, method).unwrap().unwrap()
    }

    #[test]
    fn framing_follows_rfc9112() {
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", "GET").framing,
            ResponseFraming::Length(3)
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET").framing,
            ResponseFraming::Chunked
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\n\r\n", "GET").framing,
            ResponseFraming::UntilClose
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", "HEAD").framing,
            ResponseFraming::None
        );
        assert_eq!(
            ok("HTTP/1.1 204 No Content\r\n\r\n", "GET").framing,
            ResponseFraming::None
        );
        assert_eq!(
            ok("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", "GET").framing,
            ResponseFraming::None
        );
        assert!(ok("HTTP/1.1 100 Continue\r\n\r\n", "POST").is_interim());
    }

    #[test]
    fn reuse_follows_version_connection_and_framing() {
        assert!(ok("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "GET").reusable);
        assert!(
            !ok(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                "GET"
            )
            .reusable
        );
        assert!(!ok("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", "GET").reusable);
        assert!(!ok("HTTP/1.1 200 OK\r\n\r\n", "GET").reusable);
    }

    #[test]
    fn ambiguous_response_framing_is_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\nContent-Length: 3\n\n",
            "garbage\r\n\r\n",
        ] {
            assert!(parse(raw.as_bytes(), 8192, "GET").is_err(), "{raw:?}");
        }
    }

    /// httparse takes any three digits; `forward::write_response` writes the number back, so
    /// `000` would reach the consumer as `HTTP/1.1 0 ...`, which is no status line at all.
    #[test]
    fn status_outside_100_to_599_is_refused() {
        for raw in [
            "HTTP/1.1 000 Zero\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 600 High\r\nContent-Length: 0\r\n\r\n",
        ] {
            assert!(parse(raw.as_bytes(), 8192, "GET").is_err(), "{raw:?}");
        }
        assert_eq!(
            ok("HTTP/1.1 599 X\r\nContent-Length: 0\r\n\r\n", "GET").status,
            599
        );
    }
}
