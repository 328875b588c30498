//! The consumer's request head: the first parser any network byte meets (SPEC section 4,
//! rows 3-7). It must never panic, and a head it accepts must have one unambiguous framing.
//! What the audit makes of it (the request's facts, sniffed from the bytes when the head was
//! refused, and the record's line) must not panic either, and stays one capped line.
#![no_main]

use std::net::SocketAddr;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use ssp::audit::Event;
use ssp::audit::record::{self, Entry};
use ssp::proxy::request_facts;
use ssp::http::request::{self, BodyFraming, Version};

/// What the proxy passes as `max_head_bytes` by default.
const MAX_HEAD: usize = 32768;

fuzz_target!(|data: &[u8]| {
    let Ok(Some(head)) = request::parse(data, MAX_HEAD) else {
        return;
    };
    // The head is a prefix of what was given, within the limit.
    assert!(head.len() <= data.len() && head.len() <= MAX_HEAD);
    // The same head alone parses the same way: nothing after the blank line leaks into it.
    let alone = request::parse(&data[..head.len()], MAX_HEAD)
        .expect("a head accepted with trailing bytes is accepted alone")
        .expect("a complete head");
    assert_eq!((alone.len(), alone.framing), (head.len(), head.framing));
    // Framing is unambiguous (the smuggling rules): one way to find the end of the body.
    let lengths = head.field_count("content-length");
    let encodings = head.field_count("transfer-encoding");
    match head.framing {
        BodyFraming::Chunked => {
            assert_eq!((lengths, encodings), (0, 1));
            assert_eq!(head.version(), Version::Http11, "chunked in HTTP/1.0");
        }
        BodyFraming::Length(n) => {
            assert!(n > 0);
            assert_eq!((lengths, encodings), (1, 0));
        }
        BodyFraming::None => assert_eq!(encodings, 0),
    }
    let _ = ssp::http::target::parse(head.target());
    let _ = ssp::policy::headers::check(&head, true);
    // Every parsed head, admitted or refused, becomes an audit record.
    let peer = SocketAddr::from(([192, 0, 2, 1], 4711));
    let record = |request| Entry::Event(Box::new(Event::Req { request }));
    for facts in [
        request_facts(Some(&head), data, peer, None),
        request_facts(None, data, peer, None),
    ] {
        let line = record::line(1, "2026-11-26T00:00:00.000Z", &record(Arc::new(facts)), &[0; 32]);
        assert!(line.bytes.len() <= record::MAX_LINE, "an audit line over its cap");
        assert_eq!(line.bytes.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
    }
});
