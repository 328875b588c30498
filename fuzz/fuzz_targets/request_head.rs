//! The consumer's request head: the first parser any network byte meets (SPEC section 4,
//! rows 3-7). It must never panic, and a head it accepts must have one unambiguous framing.
#![no_main]

use libfuzzer_sys::fuzz_target;
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
});
