//! The consumer's request head: parsed with httparse, then held to the framing rules of
//! SPEC section 4 before anything else looks at it.

use super::head::{self, Fields, HeadEnd, HeadError, list_tokens, parse_content_length, trim_ows};

/// More fields than this is a head too large (431), whatever its byte count.
const MAX_FIELDS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

#[derive(Debug, Clone)]
pub struct RequestHead {
    raw: Vec<u8>,
    method: std::ops::Range<usize>,
    target: std::ops::Range<usize>,
    version: Version,
    fields: Fields,
    pub framing: BodyFraming,
    /// The consumer's connection may carry another request after this one.
    pub keep_alive: bool,
}

impl RequestHead {
    pub fn method(&self) -> &str {
        std::str::from_utf8(&self.raw[self.method.clone()]).unwrap_or("")
    }

    /// The request-target exactly as sent.
    pub fn target(&self) -> &str {
        std::str::from_utf8(&self.raw[self.target.clone()]).unwrap_or("")
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// RFC 9110 section 9.2.2: whether sending the request twice has the effect of sending it
    /// once, so that it may be sent again after its connection failed with no answer.
    pub fn is_idempotent(&self) -> bool {
        matches!(
            self.method(),
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        )
    }

    /// Length of the head in bytes, blank line included.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields.iter(&self.raw)
    }

    /// The first value of a header (case-insensitive name).
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields.all(&self.raw, name).next()
    }

    /// Every value of a header, in order.
    pub fn field_values<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.fields.all(&self.raw, name)
    }

    pub fn field_count(&self, name: &str) -> usize {
        self.fields.all(&self.raw, name).count()
    }

    /// The tokens of every `Connection` field, walked afresh on each call (no allocation;
    /// heads have few fields).
    pub fn connection_tokens(&self) -> impl Iterator<Item = &[u8]> {
        self.fields.all(&self.raw, "connection").flat_map(list_tokens)
    }
}

/// Parses a request head from the start of `buf`.
///
/// `Ok(None)`: more bytes are needed. The head counts against `max_head_bytes` as soon as it
/// is bigger than that, complete or not, so a sender cannot make us buffer more.
pub fn parse(buf: &[u8], max_head_bytes: usize) -> Result<Option<RequestHead>, HeadError> {
    parse_from(buf, max_head_bytes, &mut 0)
}

/// [`parse`] for a buffer that grows between calls: `scanned` (0 for a new head) is where the
/// search for the head's end resumes, and is moved on while the head is incomplete.
pub fn parse_from(
    buf: &[u8],
    max_head_bytes: usize,
    scanned: &mut usize,
) -> Result<Option<RequestHead>, HeadError> {
    let end = match head::scan_head(buf, *scanned)? {
        HeadEnd::At(end) if end <= max_head_bytes => end,
        HeadEnd::At(_) => return Err(HeadError::TooLarge),
        HeadEnd::NotYet { .. } if buf.len() > max_head_bytes => return Err(HeadError::TooLarge),
        HeadEnd::NotYet { resume } => {
            *scanned = resume;
            return Ok(None);
        }
    };
    let raw = buf[..end].to_vec();
    let mut storage = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut storage);
    match req.parse(&raw) {
        Ok(httparse::Status::Complete(n)) if n == end => {}
        Ok(_) => return Err(HeadError::Malformed("head does not end where expected")),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::HeaderName) => return Err(HeadError::Malformed("invalid header name")),
        Err(httparse::Error::HeaderValue) => return Err(HeadError::Malformed("invalid header value")),
        Err(httparse::Error::Version) => return Err(HeadError::Malformed("unsupported HTTP version")),
        Err(_) => return Err(HeadError::Malformed("invalid request line")),
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    let (method, target) = (
        head::range_in(&raw, method.as_bytes()),
        head::range_in(&raw, target.as_bytes()),
    );
    let version = if minor == 1 {
        Version::Http11
    } else {
        Version::Http10
    };
    let fields = Fields::from_parsed(&raw, req.headers);
    let framing = framing(&raw, &fields, version)?;
    let mut head = RequestHead {
        method,
        target,
        raw,
        version,
        fields,
        framing,
        keep_alive: false,
    };
    check_host(&head)?;
    if let Some(field) = head.connection_tokens().find(|t| {
        NEVER_HOP_BY_HOP
            .iter()
            .any(|f| t.eq_ignore_ascii_case(f.as_bytes()))
    }) {
        log::debug!("http: Connection names {:?}", String::from_utf8_lossy(field));
        return Err(HeadError::Malformed(
            "Connection names a field that must reach the provider",
        ));
    }
    head.keep_alive = keep_alive(version, || head.connection_tokens());
    Ok(Some(head))
}

/// Fields that `Connection` may not make hop-by-hop: dropping them on the way to the provider
/// would change the request's framing (smuggling) or remove what the proxy checked.
const NEVER_HOP_BY_HOP: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "host",
    "authorization",
    "ssp-traceid",
    "ssp-from",
    "ssp-to",
    "ssp-interactionid",
];

/// The framing rules of SPEC section 4: one unambiguous way to find the end of the body.
fn framing(raw: &[u8], fields: &Fields, version: Version) -> Result<BodyFraming, HeadError> {
    let mut lengths = fields.all(raw, "content-length");
    let mut encodings = fields.all(raw, "transfer-encoding");
    let length = lengths.next();
    let encoding = encodings.next();
    if lengths.next().is_some() {
        return Err(HeadError::Malformed("several Content-Length fields"));
    }
    if encodings.next().is_some() {
        return Err(HeadError::Malformed("several Transfer-Encoding fields"));
    }
    match (length, encoding) {
        (Some(_), Some(_)) => Err(HeadError::Malformed("both Content-Length and Transfer-Encoding")),
        (None, Some(_)) if version == Version::Http10 => {
            Err(HeadError::Malformed("Transfer-Encoding in HTTP/1.0"))
        }
        (None, Some(te)) if trim_ows(te).eq_ignore_ascii_case(b"chunked") => Ok(BodyFraming::Chunked),
        (None, Some(_)) => Err(HeadError::Malformed("Transfer-Encoding other than chunked")),
        (Some(cl), None) => match parse_content_length(cl) {
            Some(0) => Ok(BodyFraming::None),
            Some(n) => Ok(BodyFraming::Length(n)),
            None => Err(HeadError::Malformed("invalid Content-Length")),
        },
        (None, None) => Ok(BodyFraming::None),
    }
}

fn check_host(head: &RequestHead) -> Result<(), HeadError> {
    match (head.version, head.field_count("host")) {
        (_, n) if n > 1 => Err(HeadError::Malformed("several Host fields")),
        (Version::Http11, 0) => Err(HeadError::Malformed("missing Host")),
        _ => Ok(()),
    }
}

fn keep_alive<'a, I: Iterator<Item = &'a [u8]>>(version: Version, connection: impl Fn() -> I) -> bool {
    let has = |t: &[u8]| connection().any(|c| c.eq_ignore_ascii_case(t));
    match version {
        Version::Http11 => !has(b"close"),
        Version::Http10 => has(b"keep-alive") && !has(b"close"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 8192;

    fn parse_ok(raw: &str) -> RequestHead {
        parse(raw.as_bytes(), MAX).expect("valid").expect("complete")
    }

    fn refused(raw: &str) -> HeadError {
        parse(raw.as_bytes(), MAX).expect_err(raw)
    }

    #[test]
    fn only_idempotent_methods_may_be_sent_again() {
        for (method, again) in [
            ("GET", true),
            ("HEAD", true),
            ("PUT", true),
            ("DELETE", true),
            ("OPTIONS", true),
            ("POST", false),
            ("PATCH", false),
            ("get", false),
        ] {
            let head = parse_ok(&format!("{method} /x HTTP/1.1\r\nHost: p\r\n\r\n"));
            assert_eq!(head.is_idempotent(), again, "{method}");
        }
    }

    #[test]
    fn simple_get_parses_with_fields_in_order() {
        let h = parse_ok("GET /https://a/b?x=1 HTTP/1.1\r\nHost: p\r\nSsp-From: 1\r\nssp-from: 2\r\n\r\n");
        assert_eq!(h.method(), "GET");
        assert_eq!(h.target(), "/https://a/b?x=1");
        assert_eq!(h.version(), Version::Http11);
        assert_eq!(h.framing, BodyFraming::None);
        assert!(h.keep_alive);
        assert_eq!(h.field("SSP-FROM"), Some(&b"1"[..]));
        assert_eq!(h.field_count("ssp-from"), 2);
        let names: Vec<&[u8]> = h.fields().map(|(n, _)| n).collect();
        assert_eq!(names, [&b"Host"[..], b"Ssp-From", b"ssp-from"]);
    }

    #[test]
    fn incomplete_head_waits_and_oversized_head_is_too_large() {
        assert!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n", MAX).unwrap().is_none());
        let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n", "a".repeat(100));
        assert_eq!(parse(big.as_bytes(), 64).unwrap_err(), HeadError::TooLarge);
        let complete = format!("{big}\r\n");
        assert_eq!(parse(complete.as_bytes(), 64).unwrap_err(), HeadError::TooLarge);
    }

    #[test]
    fn too_many_fields_is_too_large() {
        let mut raw = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..200 {
            raw.push_str(&format!("X-{i}: v\r\n"));
        }
        raw.push_str("\r\n");
        assert_eq!(parse(raw.as_bytes(), 1 << 20).unwrap_err(), HeadError::TooLarge);
    }

    #[test]
    fn body_framing_is_read_from_length_or_chunked() {
        let h = parse_ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Length(12));
        let h = parse_ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Chunked);
        let h = parse_ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::None);
    }

    /// Every ambiguous-framing case of SPEC section 4 is refused as malformed (400).
    #[test]
    fn ambiguous_framing_is_refused() {
        let cases = [
            (
                "CL and TE",
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            (
                "two TE",
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            (
                "TE list",
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            ),
            (
                "TE gzip",
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            ),
            (
                "TE xchunked",
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
            ),
            (
                "TE identity",
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
            ),
            (
                "two CL equal",
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            ),
            (
                "CL list",
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
            ),
            (
                "CL plus",
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            ),
            (
                "CL minus",
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n",
            ),
            (
                "CL hex",
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n",
            ),
            ("obs-fold", "POST / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"),
            ("bare LF", "POST / HTTP/1.1\nHost: a\n\n"),
            ("bare CR", "POST / HTTP/1.1\rHost: a\r\n\r\n"),
            (
                "space before colon",
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n",
            ),
            (
                "tab before colon",
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding\t: chunked\r\n\r\n",
            ),
            ("missing host", "GET / HTTP/1.1\r\nX: a\r\n\r\n"),
            ("two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            (
                "HTTP/1.0 chunked",
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            ("HTTP/2 line", "GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
            (
                "control in value",
                "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
            ),
            ("space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"),
            (
                "Connection names CL",
                "POST / HTTP/1.1\r\nHost: a\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\n",
            ),
            (
                "Connection names TE",
                "POST / HTTP/1.1\r\nHost: a\r\nConnection: x, transfer-encoding\r\n\r\n",
            ),
            (
                "Connection names Ssp-From",
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: Ssp-From\r\n\r\n",
            ),
            (
                "Connection names Authorization",
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: authorization\r\n\r\n",
            ),
        ];
        for (name, raw) in cases {
            assert!(
                matches!(refused(raw), HeadError::Malformed(_)),
                "{name} should be malformed"
            );
        }
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        assert!(!parse_ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!parse_ok("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(parse_ok("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!parse_ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: x, CLOSE\r\n\r\n").keep_alive);
    }

    #[test]
    fn pipelined_bytes_after_the_head_are_not_part_of_it() {
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\n";
        let h = parse(raw, MAX).unwrap().unwrap();
        assert_eq!(h.len(), 27);
    }
}
