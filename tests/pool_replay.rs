//! A pooled provider connection that the provider closes before answering: the proxy sends
//! the same request once more on a new connection (a stale pooled connection is not the
//! consumer's fault), and only once.

mod common;
// Only part of the scripted provider is used here.
#[allow(dead_code)]
#[path = "common/scripted_provider.rs"]
mod scripted_provider;

use common::*;
use scripted_provider::{Script, ScriptedProvider};

#[test]
fn a_request_lost_on_a_pooled_connection_is_sent_once_more_on_a_new_one() {
    let tls =
        ssp::demo::provider::server_config(&pki("provider.pem"), &pki("provider.key"), &pki("nhs-ca.pem"))
            .expect("provider TLS");
    let provider = ScriptedProvider::start(tls);
    let proxy = Proxy::with(Options {
        provider_at: Some(provider.addr),
        ..Options::default()
    });
    let mut consumer = proxy.consumer(&CONSUMER_A);

    // The first answer leaves its provider connection in the pool.
    let first = consumer.exchange(&proxy.get().set("Ssp-TraceID", &uuid(1)));
    assert_eq!(first.status, 200, "{first:?}");

    // The provider reads the next request on that pooled connection and closes it without a
    // byte of answer; the replay on a new connection meets the same script.
    let lost = format!("/search?{}", Script::CloseWithoutAnswer.query());
    let trace = uuid(2);
    let r = consumer.exchange(
        &proxy
            .valid_request("GET", &lost, &[], b"")
            .set("Ssp-TraceID", &trace),
    );
    assert_eq!(r.status, 502, "{r:?}");
    let seen: Vec<_> = provider
        .seen()
        .into_iter()
        .filter(|s| s.trace_id.as_deref() == Some(trace.as_str()))
        .collect();
    assert_eq!(
        seen.len(),
        2,
        "sent on the pooled connection, then once more: {seen:?}"
    );
    assert_eq!(seen[0].target, seen[1].target, "the replay is the same request");

    // Reusing the exchange buffers for the next request leaves nothing of the last one.
    let third = consumer.exchange(&proxy.get().set("Ssp-TraceID", &uuid(3)));
    assert_eq!(third.status, 200, "{third:?}");
    let last = provider
        .seen()
        .pop()
        .expect("the third request reached the provider");
    assert_eq!(last.trace_id.as_deref(), Some(uuid(3).as_str()));
    assert!(!last.target.contains("fault="), "{last:?}");
}

fn uuid(n: u32) -> String {
    format!("5b6f3f8e-7a1d-4c1e-9d3a-{n:012}")
}

/// RFC 9110 section 9.2.2: only an idempotent request may be sent again after its connection
/// failed, since the provider may have acted on it before the connection went. A POST without
/// a body lost on the kept connection is answered 502 and reaches the provider once.
#[test]
fn a_post_lost_on_a_kept_connection_is_not_sent_again() {
    let tls =
        ssp::demo::provider::server_config(&pki("provider.pem"), &pki("provider.key"), &pki("nhs-ca.pem"))
            .expect("provider TLS");
    let provider = ScriptedProvider::start(tls);
    let proxy = Proxy::with(Options {
        provider_at: Some(provider.addr),
        ..Options::default()
    });
    let mut consumer = proxy.consumer(&CONSUMER_A);
    let first = consumer.exchange(&proxy.get().set("Ssp-TraceID", &uuid(1)));
    assert_eq!(first.status, 200, "{first:?}");

    let lost = format!("/search?{}", Script::CloseWithoutAnswer.query());
    let trace = uuid(2);
    let r = consumer.exchange(
        &proxy
            .valid_request("POST", &lost, &[("Content-Length", "0")], b"")
            .set("Ssp-TraceID", &trace),
    );
    assert_eq!(r.status, 502, "{r:?}");
    let seen = provider
        .seen()
        .into_iter()
        .filter(|s| s.trace_id.as_deref() == Some(trace.as_str()))
        .count();
    assert_eq!(
        seen, 1,
        "a POST was sent to the provider again after its connection failed"
    );
}
