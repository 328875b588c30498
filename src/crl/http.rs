//! Fetching a CRL over plain HTTP/1.1: the request (pure), the answer (pure, through the one
//! response-framing parser in `http::response` and `http::body`), and the blocking exchange
//! that runs only on the refresher thread or in `ssp crl fetch`.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::Failure;
use crate::config::{CrlRefresh, HttpUrl};
use crate::http::body::BodyReader;
use crate::http::response::{self, ResponseFraming};

/// The largest response head accepted from a CRL server or proxy.
const MAX_HEAD: usize = 32 * 1024;

/// A `GET` for `url`: origin-form to the server, absolute-form through a forward proxy.
pub fn request(url: &HttpUrl, via_proxy: bool) -> Vec<u8> {
    let target = if via_proxy {
        format!("http://{}{}", url.authority(), url.origin_target())
    } else {
        url.origin_target().to_string()
    };
    format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ssp/{}\r\nAccept: application/pkix-crl, application/x-pkcs7-crl, */*\r\nConnection: close\r\n\r\n",
        url.authority(),
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

/// The CRL bytes in a complete answer (everything read until the server closed), or why
/// there are none. `max_bytes` caps the body.
pub fn parse_answer(answer: &[u8], max_bytes: u64) -> Result<Vec<u8>, Failure> {
    let head = match response::parse(answer, MAX_HEAD, "GET") {
        Ok(Some(head)) => head,
        Ok(None) => return Err(Failure::BadResponse("the answer ended inside its head".into())),
        Err(e) => return Err(Failure::BadResponse(format!("unreadable response head: {e}"))),
    };
    if head.status != 200 {
        return Err(Failure::HttpStatus(head.status));
    }
    let html = head.field("content-type").is_some_and(|t| {
        let t = String::from_utf8_lossy(t).to_ascii_lowercase();
        t.starts_with("text/html")
    });
    if html {
        return Err(Failure::NotACrl("the server answered with an HTML page".into()));
    }
    let mut reader = match head.framing {
        ResponseFraming::None => return Err(Failure::NotACrl("the answer has no body".into())),
        ResponseFraming::Length(n) if n > max_bytes => return Err(Failure::TooLarge(max_bytes)),
        ResponseFraming::Length(n) => BodyReader::length(n),
        ResponseFraming::Chunked => BodyReader::chunked(),
        ResponseFraming::UntilClose => BodyReader::until_close(),
    };
    let mut body = Vec::new();
    let progress = reader
        .feed(&answer[head.len()..], Some(&mut body))
        .map_err(|e| Failure::BadResponse(format!("bad body framing: {e}")))?;
    if body.len() as u64 > max_bytes {
        return Err(Failure::TooLarge(max_bytes));
    }
    // Plain HTTP has no closure alert to check; the CRL's signature is what proves it whole.
    if !progress.done && reader.finish_at_eof(true).is_err() {
        return Err(Failure::BadResponse(
            "the answer ended before its body did (truncated)".into(),
        ));
    }
    Ok(body)
}

/// Fetches `url` (through `crl_proxy` when set) and returns the CRL bytes. Blocking, bounded
/// by the connect and read timeouts, by ten read timeouts overall, and by `crl_max_bytes`.
pub fn get(url: &HttpUrl, s: &CrlRefresh) -> Result<Vec<u8>, Failure> {
    let via = s.proxy.as_ref().unwrap_or(url);
    let mut stream = connect(via, s.connect_timeout)?;
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            Failure::Unreachable(format!("timed out: {e}"))
        }
        _ => Failure::Unreachable(e.to_string()),
    };
    stream.set_read_timeout(Some(s.read_timeout)).map_err(io)?;
    stream.set_write_timeout(Some(s.read_timeout)).map_err(io)?;
    stream.write_all(&request(url, s.proxy.is_some())).map_err(io)?;
    let deadline = Instant::now() + s.read_timeout.saturating_mul(10);
    let limit = s.max_bytes.saturating_add(MAX_HEAD as u64 + 64 * 1024);
    let mut answer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk).map_err(io)?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
        if answer.len() as u64 > limit {
            return Err(Failure::TooLarge(s.max_bytes));
        }
        if Instant::now() > deadline {
            return Err(Failure::Unreachable(format!(
                "no complete answer within {} s",
                (s.read_timeout * 10).as_secs_f64()
            )));
        }
    }
    parse_answer(&answer, s.max_bytes)
}

fn connect(url: &HttpUrl, timeout: Duration) -> Result<TcpStream, Failure> {
    let addrs = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| Failure::Unreachable(format!("cannot resolve {}: {e}", url.host)))?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(format!("{addr}: {e}")),
        }
    }
    Err(Failure::Unreachable(
        last.unwrap_or_else(|| format!("{} has no address", url.host)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_origin_form_direct_and_absolute_form_through_a_proxy() {
        let url = HttpUrl::parse("http://crl.nhs.uk/live/1c/crlc4519.crl").unwrap();
        let direct = String::from_utf8(request(&url, false)).unwrap();
        assert!(
            direct.starts_with("GET /live/1c/crlc4519.crl HTTP/1.1\r\nHost: crl.nhs.uk\r\n"),
            "{direct}"
        );
        assert!(direct.ends_with("Connection: close\r\n\r\n"), "{direct}");
        let proxied = String::from_utf8(request(&url, true)).unwrap();
        assert!(
            proxied.starts_with("GET http://crl.nhs.uk/live/1c/crlc4519.crl HTTP/1.1\r\n"),
            "{proxied}"
        );
    }

    #[test]
    fn answers_yield_the_body_or_say_why_not() {
        let ok: [(&str, &[u8]); 4] = [
            ("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", b"abc"),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n",
                b"abc",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\n\r\nabc",
                b"abc",
            ),
            ("HTTP/1.0 200 OK\r\n\r\nabc", b"abc"),
        ];
        for (answer, body) in ok {
            assert_eq!(
                parse_answer(answer.as_bytes(), 1024).as_deref(),
                Ok(body),
                "{answer:?}"
            );
        }
        let refused = [
            (
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                "http_status",
            ),
            ("HTTP/1.1 503 Busy\r\n\r\n", "http_status"),
            (
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html>",
                "not_a_crl",
            ),
            ("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "bad_response"),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
                "bad_response",
            ),
            ("HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\nabc", "too_large"),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                "bad_response",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
                "bad_response",
            ),
            ("HTTP/1.1 204 No Content\r\n\r\n", "http_status"),
            ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "not_a_crl"),
            ("HTTP/1.1 200 OK\r\nCont", "bad_response"),
            ("garbage\r\n\r\n", "bad_response"),
            ("", "bad_response"),
        ];
        for (answer, reason) in refused {
            let failure = parse_answer(answer.as_bytes(), 1024).unwrap_err();
            assert_eq!(failure.label(), reason, "{answer:?}: {failure}");
        }
        let big = format!("HTTP/1.1 200 OK\r\n\r\n{}", "x".repeat(1025));
        assert_eq!(
            parse_answer(big.as_bytes(), 1024).unwrap_err().label(),
            "too_large"
        );
    }
}
