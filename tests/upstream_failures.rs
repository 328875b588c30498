//! SPEC section 4 rows 17 and 18: a provider that cannot be reached, cannot be trusted, sends
//! something unframeable or answers too slowly gets the consumer a 502 or 504, and the
//! consumer's connection stays usable.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ssp::demo::provider::{Reply, SeenRequest};

#[track_caller]
fn assert_provider_failed(proxy: &Proxy, r: &Response) {
    let token = format!("ERROR_COMMUNICATING_TO_ENDPOINT_URL_{}", proxy.url(SEARCH));
    assert_outcome(r, 502, "transient", &token, Some(TRACE_ID));
    assert_eq!(r.field("connection"), None, "a 502 need not close the consumer");
}

#[test]
fn provider_with_nothing_listening_gets_502() {
    let proxy = Proxy::with(Options {
        dead_provider: true,
        ..Options::default()
    });
    let mut consumer = proxy.consumer(&CONSUMER_A);
    for _ in 0..2 {
        assert_provider_failed(&proxy, &consumer.exchange(&proxy.get()));
    }
}

#[test]
fn provider_with_a_certificate_for_another_name_gets_502() {
    let proxy = Proxy::with(Options {
        provider_identity: "consumer-a",
        ..Options::default()
    });
    let mut consumer = proxy.consumer(&CONSUMER_A);
    for _ in 0..2 {
        assert_provider_failed(&proxy, &consumer.exchange(&proxy.get()));
    }
    proxy.assert_nothing_forwarded("provider with the wrong name");
}

/// A provider head bigger than the 64 KiB read stage can never be read whole, however large
/// `max_header_bytes` is: it is refused at once (502), not left to `response_timeout` (504).
#[test]
fn provider_head_beyond_the_read_stage_gets_502_at_once() {
    let proxy = Proxy::with(Options {
        limits: "max_header_bytes = 262144".into(),
        upstream: "response_timeout = \"5s\"".into(),
        handler: Arc::new(|_: &SeenRequest| {
            let mut reply = Reply::json(200, PROVIDER_BODY);
            for i in 0..20 {
                reply.fields.push((format!("X-Big-{i}"), "v".repeat(4000)));
            }
            reply
        }),
        ..Options::default()
    });
    // Before, the head waited out `response_timeout`: a 504 TIMEOUT_COMMUNICATING_... .
    let r = proxy.consumer(&CONSUMER_A).exchange(&proxy.get());
    assert_provider_failed(&proxy, &r);
}

#[test]
fn provider_slower_than_response_timeout_gets_504() {
    let proxy = Proxy::with(Options {
        upstream: "response_timeout = \"1s\"".into(),
        handler: Arc::new(|req: &SeenRequest| {
            let mut reply = Reply::json(200, PROVIDER_BODY);
            if req.target.contains("slow") {
                reply.delay = Duration::from_secs(3);
            }
            reply
        }),
        ..Options::default()
    });
    let mut consumer = proxy.consumer(&CONSUMER_A);
    let slow = proxy.valid_request("GET", "/search?slow=1", &[], b"");
    let r = consumer.exchange(&slow);
    let token = format!(
        "TIMEOUT_COMMUNICATING_TO_ENDPOINT_URL_{}",
        proxy.url("/search?slow=1")
    );
    assert_outcome(&r, 504, "timeout", &token, Some(TRACE_ID));

    let r = consumer.exchange(&proxy.get());
    assert_eq!(r.status, 200, "after a 504: {}", r.text());
    assert_eq!(r.body, PROVIDER_BODY.as_bytes());
}

#[test]
fn provider_response_with_ambiguous_framing_gets_502() {
    let proxy = Proxy::with(Options {
        handler: Arc::new(|req: &SeenRequest| {
            let mut reply = Reply::json(200, PROVIDER_BODY);
            if req.target.contains("two-lengths") {
                // The demo provider adds its own, correct, Content-Length after these.
                reply.fields.push(("Content-Length".into(), "1".into()));
            }
            if req.target.contains("gzip") {
                reply.fields.push(("Transfer-Encoding".into(), "gzip".into()));
            }
            reply
        }),
        ..Options::default()
    });
    let mut consumer = proxy.consumer(&CONSUMER_A);
    for suffix in ["/search?two-lengths", "/search?gzip"] {
        let r = consumer.exchange(&proxy.valid_request("GET", suffix, &[], b""));
        let token = format!("ERROR_COMMUNICATING_TO_ENDPOINT_URL_{}", proxy.url(suffix));
        assert_outcome(&r, 502, "transient", &token, Some(TRACE_ID));
    }
    let r = consumer.exchange(&proxy.get());
    assert_eq!(r.status, 200, "after a 502: {}", r.text());
    assert_eq!(r.body, PROVIDER_BODY.as_bytes());
}

/// The response clock starts once the request is out: an upload that takes longer than
/// `response_timeout` but keeps moving is not a provider timeout.
#[test]
fn slow_upload_longer_than_response_timeout_still_succeeds() {
    let proxy = Proxy::with(Options {
        upstream: "response_timeout = \"1s\"".into(),
        ..Options::default()
    });
    let mut consumer = proxy.consumer(&CONSUMER_A);
    let body = pseudo_random(6 * 1024, 9);
    let request = proxy.valid_request("POST", "/search", &[], &body);
    consumer.send_raw(&request.head()).unwrap();
    for piece in body.chunks(1024) {
        std::thread::sleep(Duration::from_millis(300));
        consumer.send_raw(piece).unwrap();
    }
    let r = consumer.read_response().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(sha256(&proxy.seen()[0].body), sha256(&body));
}

/// `connect` lists addresses tried in order, as `curl --resolve` does: a refused or
/// unreachable one costs nothing but the attempt (no byte was sent), and the request is
/// answered by the next.
#[test]
fn a_refused_connect_address_falls_through_to_the_next() {
    let proxy = Proxy::with(Options {
        connect_first: vec![unused_port(), unused_port()],
        ..Options::default()
    });
    let mut consumer = proxy.consumer(&CONSUMER_A);
    for _ in 0..2 {
        let r = consumer.exchange(&proxy.get());
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(proxy.seen().len(), 2, "each request reached the provider once");
}

/// A connect that fails at once, inside connect(2) (here ENETUNREACH: a TCP connect to a
/// multicast address), takes the same way as a refusal reported later by the event loop.
#[test]
fn a_connect_failing_at_once_falls_through_to_the_next_address() {
    let unreachable: SocketAddr = "224.0.0.1:443".parse().unwrap();
    let proxy = Proxy::with(Options {
        connect_first: vec![unreachable],
        ..Options::default()
    });
    let r = proxy.consumer(&CONSUMER_A).exchange(&proxy.get());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(proxy.seen().len(), 1);
}

/// When every listed address refuses, the consumer gets the provider error once.
#[test]
fn every_connect_address_refused_is_one_502() {
    let proxy = Proxy::with(Options {
        connect_first: vec![unused_port()],
        dead_provider: true,
        ..Options::default()
    });
    let r = proxy.consumer(&CONSUMER_A).exchange(&proxy.get());
    assert_provider_failed(&proxy, &r);
}
