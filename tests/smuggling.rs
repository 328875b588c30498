//! Request smuggling (SPEC section 4, row 3; issue 8 item 2): raw requests from the public
//! research on desync attacks (CL.TE, TE.CL, TE.TE obfuscations, length tricks, line endings,
//! control bytes, chunk framing, pipelining), each carrying a smuggled request that a parser
//! disagreeing with the provider's would hand on as a request of its own.
//!
//! The invariant, per case: the provider never sees the smuggled request, and the consumer
//! gets either a 400 after which the connection is closed, or exactly one well-formed forward
//! of the first request (the provider saw that one request, with exactly the body its framing
//! delimits, and the consumer gets no second answer).
//!
//! Where the smuggled request sits matters. After a head the proxy must refuse, it simply
//! follows (the refusal closes the connection, so it is never read). In a request the proxy
//! may accept, it is inside the body its framing delimits: forwarded as data, never as a
//! request. A smuggled request after an accepted, honestly framed request would be honest
//! pipelining; `smuggled_request_alone_is_forwarded` shows it would then reach the provider,
//! which is what makes "never seen" a check that can fail.

mod common;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use common::*;

/// Row 3 (framing) and row 5 (target) of SPEC section 4.
const INVALID_REQUEST: &str = "INVALID_REQUEST";
const INVALID_TARGET_URL: &str = "INVALID_TARGET_URL";

/// What a case may get.
#[derive(Debug, Clone)]
enum Expect {
    /// SPEC section 4 refuses this: 400 with this token, the connection closed, nothing
    /// forwarded.
    Refused(&'static str),
    /// A valid request: 400 and closed, or one forward whose body is exactly this.
    RefusedOrForwarded(Vec<u8>),
}

struct Case {
    /// The technique, as the research names it.
    name: &'static str,
    bytes: Vec<u8>,
    expect: Expect,
}

/// Builds the raw requests for one proxy (its port is in the targets and `Host`).
struct Cases {
    /// `GET /https://localhost:<port>/Prescription-Exemptions/1.0.0/smuggled` with every
    /// header an allowed request needs.
    smuggled: Vec<u8>,
    /// `/https://localhost:<port>/Prescription-Exemptions/1.0.0/search`.
    target: String,
    /// `Host`, the four `Ssp-*` headers and the JWT, CRLF-terminated.
    fields: String,
    port: u16,
    list: Vec<Case>,
}

impl Cases {
    fn new(proxy: &Proxy) -> Cases {
        let valid = proxy.valid_request("POST", "/search", &[], b"");
        let fields = valid
            .fields
            .iter()
            .map(|(n, v)| format!("{n}: {v}\r\n"))
            .collect();
        Cases {
            smuggled: proxy.valid_request("GET", "/smuggled", &[], b"").bytes(),
            target: valid.target,
            fields,
            port: proxy.addr.port(),
            list: Vec::new(),
        }
    }

    /// `method target version`, the valid fields, `extra` (raw, with its own line endings),
    /// the blank line, then `body`.
    fn raw(&self, method: &str, version: &str, extra: &str, body: &[u8]) -> Vec<u8> {
        let mut out =
            format!("{method} {} {version}\r\n{}{extra}\r\n", self.target, self.fields).into_bytes();
        out.extend_from_slice(body);
        out
    }

    /// A POST that must be refused, with the smuggled request right after its body.
    fn refused(&mut self, name: &'static str, extra: &str, body: &[u8]) {
        let mut bytes = self.raw("POST", "HTTP/1.1", extra, body);
        bytes.extend_from_slice(&self.smuggled);
        self.push(name, bytes, Expect::Refused(INVALID_REQUEST));
    }

    /// A POST with a chunked body that must be refused, the smuggled request after it.
    fn refused_chunked(&mut self, name: &'static str, body: &[u8]) {
        self.refused(name, "Transfer-Encoding: chunked\r\n", body);
    }

    /// A POST that may be forwarded, with `extra` framing the body `body` exactly.
    fn maybe_forwarded(&mut self, name: &'static str, extra: &str, body: &[u8], payload: &[u8]) {
        let bytes = self.raw("POST", "HTTP/1.1", extra, body);
        self.push(name, bytes, Expect::RefusedOrForwarded(payload.to_vec()));
    }

    /// The smuggled request as the single chunk of a chunked body.
    fn smuggled_in_a_chunk(&self) -> Vec<u8> {
        chunked(&self.smuggled, 1 << 20)
    }

    fn push(&mut self, name: &'static str, bytes: Vec<u8>, expect: Expect) {
        self.list.push(Case { name, bytes, expect });
    }
}

/// The table. Sources: James Kettle, "HTTP Desync Attacks: Request Smuggling Reborn" (2019);
/// Amit Klein, "HTTP Request Smuggling in 2020"; RFC 9112 sections 5, 6.1, 6.3, 7.1 and 11.2.
fn cases(proxy: &Proxy) -> Vec<Case> {
    let mut c = Cases::new(proxy);
    let s = c.smuggled.clone();
    let s_len = s.len();
    let in_chunk = c.smuggled_in_a_chunk();
    let zero_then_s = [&b"0\r\n\r\n"[..], &s].concat();

    // --- CL.TE and TE.CL: both framings in one head.
    c.refused(
        "CL.TE: Content-Length covers a 0-chunk and the smuggled request",
        &format!(
            "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
            zero_then_s.len()
        ),
        &zero_then_s,
    );
    c.refused(
        "TE.CL: Content-Length 4 stops inside the chunk holding the smuggled request",
        "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
        &in_chunk,
    );
    c.refused(
        "CL.TE with Content-Length 0",
        "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
        &in_chunk,
    );
    c.refused(
        "CL.TE with Expect: 100-continue",
        &format!(
            "Expect: 100-continue\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n",
            zero_then_s.len()
        ),
        &zero_then_s,
    );

    // --- TE.TE: an obfuscated Transfer-Encoding one parser honours and another ignores.
    for (name, field) in [
        ("TE.TE: xchunked", "Transfer-Encoding: xchunked\r\n"),
        (
            "TE.TE: chunked, identity",
            "Transfer-Encoding: chunked, identity\r\n",
        ),
        (
            "TE.TE: identity, chunked",
            "Transfer-Encoding: identity, chunked\r\n",
        ),
        ("TE.TE: gzip, chunked", "Transfer-Encoding: gzip, chunked\r\n"),
        ("TE.TE: trailing comma", "Transfer-Encoding: chunked,\r\n"),
        ("TE.TE: quoted", "Transfer-Encoding: \"chunked\"\r\n"),
        (
            "TE.TE: vertical tab before the value",
            "Transfer-Encoding:\x0bchunked\r\n",
        ),
        ("TE.TE: NUL after the value", "Transfer-Encoding: chunked\0\r\n"),
        (
            "TE.TE: obs-text after the value",
            "Transfer-Encoding: chunked\u{ff}\r\n",
        ),
        ("TE.TE: space before the colon", "Transfer-Encoding : chunked\r\n"),
        ("TE.TE: tab before the colon", "Transfer-Encoding\t: chunked\r\n"),
        ("TE.TE: LF before the colon", "Transfer-Encoding\n: chunked\r\n"),
        ("TE.TE: space inside the name", "Transfer Encoding: chunked\r\n"),
        (
            "TE.TE: folded onto the previous field",
            "X-A: 1\r\n Transfer-Encoding: chunked\r\n",
        ),
        (
            "TE.TE: folded value",
            "Transfer-Encoding: identity\r\n chunked\r\n",
        ),
        (
            "TE.TE: two fields, chunked twice",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "TE.TE: two fields, x then chunked",
            "Transfer-Encoding: x\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "TE.TE: bare LF hides the field in another",
            "X-A: 1\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "TE.TE: bare CR hides the field in another",
            "X-A: 1\rTransfer-Encoding: chunked\r\n",
        ),
    ] {
        c.refused(name, field, &zero_then_s[..5]);
    }
    // Valid spellings of `chunked` (case-insensitive, optional whitespace): accepting them is
    // right, as long as the chunk holding the smuggled request stays data.
    for (name, field) in [
        ("TE.TE: CHUNKED in capitals", "Transfer-Encoding: CHUNKED\r\n"),
        ("TE.TE: field name in capitals", "TRANSFER-ENCODING: chunked\r\n"),
        ("TE.TE: tab as the whitespace", "Transfer-Encoding:\tchunked\r\n"),
        (
            "TE.TE: extra whitespace around the value",
            "Transfer-Encoding:   chunked \t\r\n",
        ),
        ("TE.TE: no whitespace", "Transfer-Encoding:chunked\r\n"),
    ] {
        c.maybe_forwarded(name, field, &in_chunk, &s);
    }

    // --- Content-Length tricks: a length two parsers read differently.
    let hello_then_s = [&b"hello"[..], &s].concat();
    for (name, field) in [
        (
            "CL: two equal fields",
            "Content-Length: 5\r\nContent-Length: 5\r\n".to_string(),
        ),
        (
            "CL: two conflicting fields",
            format!("Content-Length: 5\r\nContent-Length: {}\r\n", 5 + s_len),
        ),
        ("CL: a list of equal values", "Content-Length: 5, 5\r\n".into()),
        ("CL: plus sign", "Content-Length: +5\r\n".into()),
        ("CL: minus sign", "Content-Length: -5\r\n".into()),
        ("CL: hex", "Content-Length: 0x5\r\n".into()),
        (
            "CL: whitespace inside the number",
            "Content-Length: 1 0\r\n".into(),
        ),
        ("CL: decimal point", "Content-Length: 5.0\r\n".into()),
        ("CL: empty", "Content-Length: \r\n".into()),
        (
            "CL: wraps 2^64 to 5",
            "Content-Length: 18446744073709551621\r\n".into(),
        ),
        ("CL: space before the colon", "Content-Length : 5\r\n".into()),
        ("CL: NUL inside the name", "Content\0Length: 5\r\n".into()),
        (
            "CL: with Transfer-Encoding: identity",
            "Content-Length: 5\r\nTransfer-Encoding: identity\r\n".into(),
        ),
    ] {
        c.refused(name, &field, &hello_then_s);
    }
    // Valid: leading zeros are still decimal, trailing whitespace is optional whitespace.
    c.maybe_forwarded(
        "CL: leading zeros",
        &format!("Content-Length: 000{s_len}\r\n"),
        &s,
        &s,
    );
    c.maybe_forwarded(
        "CL: trailing whitespace",
        &format!("Content-Length: {s_len} \t\r\n"),
        &s,
        &s,
    );
    c.maybe_forwarded(
        "CL: a 0-chunk inside a Content-Length body",
        &format!("Content-Length: {}\r\n", zero_then_s.len()),
        &zero_then_s,
        &zero_then_s,
    );

    // --- Line endings, folding and control bytes in the head.
    for (name, field) in [
        ("obs-fold with a space", "X-A: 1\r\n 2\r\n"),
        ("obs-fold with a tab", "X-A: 1\r\n\t2\r\n"),
        ("NUL in a field name", "X-\0A: 1\r\n"),
        ("NUL in a field value", "X-A: a\0b\r\n"),
        ("control byte in a field value", "X-A: a\x01b\r\n"),
        ("DEL in a field name", "X-A\x7f: 1\r\n"),
        ("bare CR line ending", "X-A: 1\r"),
    ] {
        c.refused(name, &format!("{field}Content-Length: 5\r\n"), &hello_then_s);
    }
    let bare_lf = c
        .raw("POST", "HTTP/1.1", "Content-Length: 5\r\n", b"hello")
        .into_iter()
        .filter(|&b| b != b'\r')
        .collect::<Vec<u8>>();
    c.push(
        "bare LF line endings throughout",
        [bare_lf, s.clone()].concat(),
        Expect::Refused(INVALID_REQUEST),
    );
    let mut bare_cr_line = format!("POST {}\rHTTP/1.1\r\n{}", c.target, c.fields).into_bytes();
    bare_cr_line.extend_from_slice(b"Content-Length: 5\r\n\r\nhello");
    bare_cr_line.extend_from_slice(&s);
    c.push(
        "request line with a bare CR",
        bare_cr_line,
        Expect::Refused(INVALID_REQUEST),
    );

    // --- Chunk framing: sizes, extensions and terminators two decoders read differently.
    for (name, body) in [
        (
            "chunk size overflows 64 bits",
            &b"1ffffffffffffffff\r\nhello\r\n0\r\n\r\n"[..],
        ),
        ("chunk size with a plus sign", b"+5\r\nhello\r\n0\r\n\r\n"),
        ("chunk size in 0x hex", b"0x5\r\nhello\r\n0\r\n\r\n"),
        ("chunk size with leading whitespace", b" 5\r\nhello\r\n0\r\n\r\n"),
        ("chunk size with trailing whitespace", b"5 \r\nhello\r\n0\r\n\r\n"),
        (
            "chunk size line too long (leading zeros)",
            b"00000000000000000005\r\nhello\r\n0\r\n\r\n",
        ),
        ("chunk extension with a bare CR", b"5;a\rb\r\nhello\r\n0\r\n\r\n"),
        ("chunk extension with a bare LF", b"5;a\nb\r\nhello\r\n0\r\n\r\n"),
        ("chunk size line ended by a bare LF", b"5\nhello\r\n0\r\n\r\n"),
        ("chunk data not followed by CRLF", b"5\r\nhelloXX\r\n0\r\n\r\n"),
        ("chunk data followed by a bare CR", b"5\r\nhello\r0\r\n\r\n"),
        ("last chunk ended by bare LFs", b"5\r\nhello\r\n0\n\n"),
    ] {
        c.refused_chunked(name, body);
    }
    let mut long_extension = b"5;".to_vec();
    long_extension.extend(std::iter::repeat_n(b'a', 5000));
    long_extension.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
    c.refused_chunked("chunk extension longer than a line may be", &long_extension);
    let mut trailer_cl = format!("{s_len:x}\r\n").into_bytes();
    trailer_cl.extend_from_slice(&s);
    trailer_cl.extend_from_slice(b"\r\n0\r\nContent-Length: 0\r\n\r\n");
    c.maybe_forwarded(
        "Content-Length in a trailer",
        "Transfer-Encoding: chunked\r\n",
        &trailer_cl,
        &s,
    );

    // --- Versions, Expect, request forms and Connection.
    let mut http10 = c.raw(
        "POST",
        "HTTP/1.0",
        "Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n",
        b"",
    );
    http10.extend_from_slice(&zero_then_s);
    c.push("HTTP/1.0 with chunked", http10, Expect::Refused(INVALID_REQUEST));
    c.maybe_forwarded(
        "Expect: 100-continue, smuggled request in the body",
        &format!("Expect: 100-continue\r\nContent-Length: {s_len}\r\n"),
        &s,
        &s,
    );
    c.maybe_forwarded(
        "Expect: 100-continue, chunked",
        "Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n",
        &in_chunk,
        &s,
    );
    let absolute = format!(
        "POST https://localhost:{}{ROOT}/search HTTP/1.1\r\n{}Content-Length: {s_len}\r\n\r\n",
        c.port, c.fields
    );
    c.push(
        "absolute-form target, smuggled request in the body",
        [absolute.as_bytes(), &s].concat(),
        Expect::Refused(INVALID_TARGET_URL),
    );
    let connect = format!(
        "CONNECT localhost:{} HTTP/1.1\r\n{}Content-Length: {s_len}\r\n\r\n",
        c.port, c.fields
    );
    c.push(
        "CONNECT, tunnelled bytes a smuggled request",
        [connect.as_bytes(), &s].concat(),
        Expect::Refused(INVALID_TARGET_URL),
    );
    // A GET with a body: the classic pipelining desync, where one side ignores the length.
    let get_with_body = c.raw("GET", "HTTP/1.1", &format!("Content-Length: {s_len}\r\n"), &s);
    c.push(
        "pipelined: GET whose body is a request",
        get_with_body,
        Expect::RefusedOrForwarded(s.clone()),
    );
    // Nothing may be read after a request that ends its connection.
    let close = c.raw("GET", "HTTP/1.1", "Connection: close\r\n", b"");
    c.push(
        "pipelined after Connection: close",
        [close, s.clone()].concat(),
        Expect::RefusedOrForwarded(Vec::new()),
    );
    let http10_close = c.raw("GET", "HTTP/1.0", "", b"");
    c.push(
        "pipelined after an HTTP/1.0 request without keep-alive",
        [http10_close, s.clone()].concat(),
        Expect::RefusedOrForwarded(Vec::new()),
    );
    c.refused(
        "Connection: Content-Length",
        &format!("Connection: Content-Length\r\nContent-Length: {s_len}\r\n"),
        &s,
    );
    c.refused(
        "Connection: Transfer-Encoding",
        "Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n",
        &in_chunk,
    );
    c.list
}

/// How long a forwarded case waits for a second answer that must not come.
const QUIET: Duration = Duration::from_millis(250);

/// Runs one case on a fresh connection; `Err` says how the invariant broke.
fn run(proxy: &Proxy, case: &Case) -> Result<&'static str, String> {
    proxy.seen.lock().unwrap().clear();
    let mut consumer = proxy.consumer(&CONSUMER_A);
    consumer.send_raw(&case.bytes).map_err(|e| format!("send: {e}"))?;
    let first = consumer.read_response().map_err(|e| format!("no answer: {e}"))?;
    let seen = proxy.seen();
    let targets: Vec<&str> = seen.iter().map(|s| s.target.as_str()).collect();
    if targets.iter().any(|t| t.contains("smuggled")) {
        return Err(format!("SMUGGLED: the provider saw {targets:?}"));
    }
    match (first.status, &case.expect) {
        (400, _) => {
            if !seen.is_empty() {
                return Err(format!("400, yet the provider saw {targets:?}"));
            }
            let want = match &case.expect {
                Expect::Refused(token) => token,
                Expect::RefusedOrForwarded(_) => INVALID_REQUEST,
            };
            let outcome = first.json();
            let issue = &outcome["issue"][0];
            if (issue["code"].as_str(), issue["diagnostics"].as_str()) != (Some("invalid"), Some(want)) {
                return Err(format!("400 for another reason than {want}: {}", first.text()));
            }
            // A refused head leaves the rest of the bytes unparsed: the connection must end.
            closed(&mut consumer).map(|()| "refused")
        }
        (200, Expect::RefusedOrForwarded(body)) => {
            // The answer may come before the provider's record is read: look again after the
            // quiet period, which also gives a misparsed second request time to arrive.
            let second = next_answer(&mut consumer);
            let seen = proxy.seen();
            let targets: Vec<&str> = seen.iter().map(|s| s.target.as_str()).collect();
            if let Some(status) = second {
                return Err(format!(
                    "a second answer ({status}) to one request; provider saw {targets:?}"
                ));
            }
            match seen.as_slice() {
                [one] if one.target == format!("{ROOT}/search") && one.body == *body => Ok("forwarded"),
                [one] => Err(format!(
                    "forwarded {} with a {}-byte body {:?}, expected {}",
                    one.target,
                    one.body.len(),
                    String::from_utf8_lossy(&one.body[..one.body.len().min(80)]),
                    body.len()
                )),
                _ => Err(format!("200, and the provider saw {targets:?}")),
            }
        }
        (status, _) => Err(format!(
            "status {status}: {}; provider saw {targets:?}",
            first.text()
        )),
    }
}

/// The proxy closed the connection after its answer.
fn closed(consumer: &mut Consumer) -> Result<(), String> {
    match consumer.read_any_response() {
        Ok(r) => Err(format!(
            "connection still open: a second answer {} {}",
            r.status,
            r.text()
        )),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Err("connection still open after the 400".into())
        }
        Err(_) => Ok(()),
    }
}

/// The status of another answer within `QUIET`, if one comes.
fn next_answer(consumer: &mut Consumer) -> Option<u16> {
    consumer.tls.sock.set_read_timeout(Some(QUIET)).unwrap();
    consumer.read_any_response().ok().map(|r| r.status)
}

#[test]
fn smuggling_table_never_reaches_the_provider() {
    let proxy = Proxy::start();
    let cases = cases(&proxy);
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut forwarded = Vec::new();
    for case in &cases {
        match run(&proxy, case) {
            Ok("forwarded") => forwarded.push(case.name),
            Ok(_) => {}
            Err(e) => failures.push(format!("{}: {e}", case.name)),
        }
    }
    eprintln!(
        "{} smuggling cases in {:?}; forwarded honestly: {forwarded:?}",
        cases.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} case(s) broke:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The control: the smuggled request on its own is allowed and reaches the provider, so a
/// parser that split any case above into two requests would be caught by "never seen".
#[test]
fn smuggled_request_alone_is_forwarded() {
    let proxy = Proxy::start();
    let smuggled = proxy.valid_request("GET", "/smuggled", &[], b"").bytes();
    let mut consumer = proxy.consumer(&CONSUMER_A);
    consumer.send_raw(&smuggled).unwrap();
    assert_eq!(consumer.read_response().unwrap().status, 200);
    let targets: Vec<String> = proxy.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(targets, [format!("{ROOT}/smuggled")]);
}

/// The table's names are what a reader searches for when a case breaks.
#[test]
fn smuggling_case_names_are_unique() {
    let proxy = Proxy::start();
    let mut names: Vec<&str> = cases(&proxy).iter().map(|c| c.name).collect();
    let all = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all, "duplicate case names");
}
