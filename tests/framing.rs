//! SPEC section 4 rows 2–4: the request head must arrive in time, be small enough, and frame
//! its body one unambiguous way. Each refused framing carries a smuggled second request after
//! its body; the provider must never see either.

mod common;

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ssp::demo::provider::{Reply, SeenRequest};

/// Every refused framing of SPEC section 4, as the bytes a consumer sends. Each request is
/// otherwise allowed, and is followed by a smuggled, otherwise allowed request.
fn smuggling_cases(proxy: &Proxy) -> Vec<(&'static str, Vec<u8>)> {
    let smuggled = proxy.valid_request("GET", "/smuggled", &[], b"").bytes();
    let with = |method: &str, fields: &[(&str, &str)], body: &[u8]| {
        let mut bytes = proxy
            .valid_request(method, "/search", fields, b"")
            .raw_body(body)
            .bytes();
        bytes.extend_from_slice(&smuggled);
        bytes
    };
    let post = |fields: &[(&str, &str)], body: &[u8]| with("POST", fields, body);
    let get = |fields: &[(&str, &str)]| with("GET", fields, b"");
    let chunked_hello = b"5\r\nhello\r\n0\r\n\r\n";
    let te = ("Transfer-Encoding", "chunked");
    let mut no_host = proxy.get().remove("Host").bytes();
    no_host.extend_from_slice(&smuggled);
    let mut http10_chunked = proxy
        .valid_request("POST", "/search", &[te], b"")
        .raw_body(chunked_hello);
    http10_chunked.version = "HTTP/1.0";
    let mut http10_chunked = http10_chunked.bytes();
    http10_chunked.extend_from_slice(&smuggled);
    vec![
        ("CL and TE", post(&[("Content-Length", "5"), te], b"0\r\n\r\n")),
        ("TE and CL", post(&[te, ("Content-Length", "3")], chunked_hello)),
        (
            "TE xchunked",
            post(&[("Transfer-Encoding", "xchunked")], chunked_hello),
        ),
        (
            "TE chunked, identity",
            post(&[("Transfer-Encoding", "chunked, identity")], chunked_hello),
        ),
        (
            "TE gzip, chunked",
            post(&[("Transfer-Encoding", "gzip, chunked")], chunked_hello),
        ),
        (
            "TE identity",
            post(&[("Transfer-Encoding", "identity")], b"hello"),
        ),
        ("two TE headers", post(&[te, te], chunked_hello)),
        (
            "two TE headers, identity first",
            post(&[("Transfer-Encoding", "identity"), te], chunked_hello),
        ),
        (
            "two CL equal",
            post(&[("Content-Length", "5"), ("Content-Length", "5")], b"hello"),
        ),
        (
            "two CL differing",
            post(&[("Content-Length", "0"), ("Content-Length", "5")], b"hello"),
        ),
        ("CL list", post(&[("Content-Length", "5, 5")], b"hello")),
        ("CL +5", post(&[("Content-Length", "+5")], b"hello")),
        ("CL -5", post(&[("Content-Length", "-5")], b"hello")),
        ("CL hex", post(&[("Content-Length", "0x5")], b"hello")),
        ("obs-fold", get(&[("X-Folded", "a\r\n b")])),
        (
            "obs-fold in TE",
            post(&[("Transfer-Encoding", "identity\r\n chunked")], chunked_hello),
        ),
        (
            "bare LF",
            post(&[("X-A", "1\nTransfer-Encoding: chunked")], chunked_hello),
        ),
        (
            "bare CR",
            post(&[("X-A", "1\rTransfer-Encoding: chunked")], chunked_hello),
        ),
        ("space before colon", post(&[("Content-Length ", "5")], b"hello")),
        (
            "tab before colon",
            post(&[("Transfer-Encoding\t", "chunked")], chunked_hello),
        ),
        ("missing Host", no_host),
        ("two Host", get(&[("Host", "evil.example")])),
        ("TE in HTTP/1.0", http10_chunked),
        ("invalid chunk size", post(&[te], b"zz\r\nhello\r\n0\r\n\r\n")),
        ("signed chunk size", post(&[te], b"+5\r\nhello\r\n0\r\n\r\n")),
        (
            "chunk size overflow",
            post(&[te], b"1ffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        ),
        ("bare LF after chunk data", post(&[te], b"5\r\nhello\n0\r\n\r\n")),
    ]
}

#[test]
fn ambiguous_framing_is_refused_and_nothing_is_smuggled() {
    let proxy = Proxy::start();
    for (name, bytes) in smuggling_cases(&proxy) {
        let mut consumer = proxy.consumer(&CONSUMER_A);
        consumer
            .send_raw(&bytes)
            .unwrap_or_else(|e| panic!("{name}: send: {e}"));
        let r = consumer
            .read_response()
            .unwrap_or_else(|e| panic!("{name}: no answer: {e}"));
        assert_eq!(r.status, 400, "{name}: {}", r.text());
        // The head carried a trace id: even a refused head echoes it (SPEC section 4).
        assert_outcome(&r, 400, "invalid", "INVALID_REQUEST", Some(TRACE_ID));
        assert_eq!(r.field("connection"), Some("close"), "{name}");
        consumer.assert_closed();
        proxy.assert_nothing_forwarded(name);
    }
}

/// The control for the table above: with honest framing, the same bytes are two allowed
/// requests, so the smuggled one would reach the provider if a refused framing let it through.
#[test]
fn smuggled_request_is_admitted_when_the_framing_is_honest() {
    let proxy = Proxy::start();
    let mut bytes = proxy.valid_request("POST", "/search", &[], b"hello").bytes();
    bytes.extend(proxy.valid_request("GET", "/smuggled", &[], b"").bytes());
    let mut consumer = proxy.consumer(&CONSUMER_A);
    consumer.send_raw(&bytes).unwrap();
    assert_eq!(consumer.read_response().unwrap().status, 200);
    assert_eq!(consumer.read_response().unwrap().status, 200);
    let targets: Vec<String> = proxy.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(targets, [format!("{ROOT}/search"), format!("{ROOT}/smuggled")]);
}

#[test]
fn oversized_head_is_refused_with_431() {
    let proxy = Proxy::with(Options {
        limits: "max_header_bytes = 4096".into(),
        ..Options::default()
    });
    // Under the limit: allowed, so the refusal below is the size's.
    let small = proxy.get().add("X-Big", &"a".repeat(3000));
    assert_eq!(proxy.consumer(&CONSUMER_A).exchange(&small).status, 200);
    assert_eq!(proxy.seen().len(), 1);

    let big = proxy.get().add("X-Big", &"a".repeat(5000));
    let r = proxy.consumer(&CONSUMER_A).exchange(&big);
    assert_outcome(&r, 431, "too-costly", "REQUEST_HEADER_FIELDS_TOO_LARGE", None);
    assert_eq!(
        proxy.seen().len(),
        1,
        "the oversized request reached the provider"
    );
}

#[test]
fn head_that_never_completes_gets_408_and_is_closed() {
    let proxy = Proxy::with(Options {
        limits: "header_timeout = \"1s\"".into(),
        ..Options::default()
    });
    let mut consumer = proxy.consumer(&CONSUMER_A);
    let head = proxy.get().head();
    consumer.send_raw(&head[..head.len() / 2]).unwrap();
    let r = consumer.read_response().expect("a 408 answer");
    assert_outcome(&r, 408, "timeout", "REQUEST_TIMEOUT", None);
    assert_eq!(r.field("connection"), Some("close"));
    consumer.assert_closed();
    proxy.assert_nothing_forwarded("slow head");
}

/// A head that arrives a byte per TLS record, each read on its own, is searched for its end
/// from where the last search stopped (`request::parse_from`): it is found, at every CR and
/// LF of the blank line too, and the request goes through whole.
#[test]
fn head_arriving_a_byte_per_record_is_parsed_whole() {
    let proxy = Proxy::start();
    let mut consumer = proxy.consumer(&CONSUMER_A);
    let request = proxy.get();
    for byte in request.head().iter() {
        consumer.send_raw(std::slice::from_ref(byte)).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let r = consumer.read_response().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = proxy.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, format!("{ROOT}{SEARCH}"));
}

/// Slowloris: the head clock starts at the first byte and is not reset by each new one.
#[test]
fn head_trickled_byte_by_byte_still_times_out() {
    let proxy = Proxy::with(Options {
        limits: "header_timeout = \"1s\"".into(),
        ..Options::default()
    });
    let mut consumer = proxy.consumer(&CONSUMER_A);
    consumer.handshake().unwrap();
    consumer
        .tls
        .sock
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let head = proxy.get().head();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut sent = 0;
    let r = loop {
        assert!(Instant::now() < deadline, "no 408 within 5 s while trickling");
        assert!(
            sent < head.len() - 1,
            "the whole head went out a byte at a time without a 408"
        );
        consumer.send_raw(&head[sent..sent + 1]).unwrap();
        sent += 1;
        match consumer.read_response() {
            Ok(r) => break r,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) => panic!("{e}"),
        }
    };
    assert_outcome(&r, 408, "timeout", "REQUEST_TIMEOUT", None);
    proxy.assert_nothing_forwarded("trickled head");
}

#[test]
fn connection_that_never_starts_tls_is_closed_after_header_timeout() {
    let proxy = Proxy::with(Options {
        limits: "header_timeout = \"1s\"".into(),
        ..Options::default()
    });
    let mut sock = TcpStream::connect(proxy.addr).unwrap();
    sock.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut buf = [0u8; 16];
    match sock.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0, "the proxy sent bytes to a silent connection"),
        Err(e) => assert!(
            !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "still open after {READ_TIMEOUT:?}"
        ),
    }
}

#[test]
fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let proxy = Proxy::with(Options {
        limits: "idle_timeout = \"1s\"".into(),
        ..Options::default()
    });
    let mut consumer = proxy.consumer(&CONSUMER_A);
    assert_eq!(consumer.exchange(&proxy.get()).status, 200);
    consumer.assert_closed();
}

/// A consumer that stops half-way through its body is the consumer's timeout, not the
/// provider's: the provider never had the whole request.
#[test]
fn body_that_stalls_is_a_request_timeout_not_a_provider_timeout() {
    let proxy = Proxy::with(Options {
        limits: "header_timeout = \"1s\"".into(),
        upstream: "response_timeout = \"1s\"".into(),
        ..Options::default()
    });
    let mut consumer = proxy.consumer(&CONSUMER_A);
    let bytes = proxy.valid_request("POST", "/search", &[], &[b'x'; 100]).bytes();
    consumer.send_raw(&bytes[..bytes.len() - 50]).unwrap();
    let r = consumer.read_response().expect("an answer");
    assert_outcome(&r, 408, "timeout", "REQUEST_TIMEOUT", Some(TRACE_ID));
    assert_eq!(r.field("connection"), Some("close"));
    consumer.assert_closed();
    proxy.assert_nothing_forwarded("stalled body");
}

/// `Connection` names hop-by-hop fields; naming the body's own framing field must not make the
/// proxy strip it, or the body it forwards becomes the provider's next request.
#[test]
fn connection_naming_a_framing_field_cannot_smuggle_a_request() {
    let proxy = Proxy::start();
    // What the provider would read as a second request if the framing field were stripped:
    // consumer B's ASID, which has no agreement.
    let inner = format!(
        "GET {ROOT}/smuggled HTTP/1.1\r\nHost: localhost\r\nSsp-From: {}\r\n\r\n",
        CONSUMER_B.asid
    );
    let cases = [
        proxy.valid_request(
            "POST",
            "/search",
            &[("Connection", "Content-Length")],
            inner.as_bytes(),
        ),
        proxy
            .valid_request(
                "POST",
                "/search",
                &[
                    ("Transfer-Encoding", "chunked"),
                    ("Connection", "Transfer-Encoding"),
                ],
                b"",
            )
            .raw_body(&chunked(inner.as_bytes(), 1 << 20)),
    ];
    for request in cases {
        let mut consumer = proxy.consumer(&CONSUMER_A);
        let r = consumer.exchange(&request);
        assert!(matches!(r.status, 200 | 400), "{}", r.text());
        let seen = proxy.seen();
        assert!(
            seen.iter()
                .all(|s| s.body == inner.as_bytes() && !s.target.contains("smuggled")),
            "the provider saw {:?}",
            seen.iter().map(|s| (&s.target, s.body.len())).collect::<Vec<_>>()
        );
        proxy.seen.lock().unwrap().clear();
    }
}

/// The consequence of the smuggling above on a pooled provider connection: the smuggled
/// request's response is handed to the next consumer that reuses the connection.
#[test]
fn smuggled_response_never_reaches_another_consumer() {
    let proxy = Proxy::with(Options {
        handler: Arc::new(|req: &SeenRequest| {
            let mut reply = Reply::json(200, PROVIDER_BODY);
            reply.fields.push(("X-Seen-Target".into(), req.target.clone()));
            if req.target.contains("smuggled") {
                // Long enough for the pooled connection to be reused before this answer.
                reply.delay = Duration::from_millis(300);
            }
            reply
        }),
        ..Options::default()
    });
    let inner = format!("GET {ROOT}/smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let attack = proxy.valid_request(
        "POST",
        "/search",
        &[("Connection", "Content-Length")],
        inner.as_bytes(),
    );
    let _ = proxy.consumer(&CONSUMER_A).exchange(&attack);
    let victim = proxy
        .valid_request("GET", "/search?victim", &[], b"")
        .set("Ssp-From", RSA4096.asid);
    let r = proxy.consumer(&RSA4096).exchange(&victim);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.field("x-seen-target"),
        Some(format!("{ROOT}/search?victim").as_str())
    );
}
