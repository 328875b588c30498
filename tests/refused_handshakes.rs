//! `[limits] refused_handshakes` behind a shared address (NAT): someone else's failed
//! handshakes must not lock out a consumer that has been served from that address.

mod common;

use std::sync::Arc;

use common::*;
use rustls::ClientConfig;

/// A TLS client with no certificate: every handshake it makes is refused.
fn stranger() -> Arc<ClientConfig> {
    Arc::new(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots())
            .with_no_client_auth(),
    )
}

/// One refused handshake from the stranger, seen through to the proxy's answer so that it
/// has been counted before the next one starts.
fn fail_once(proxy: &Proxy) {
    let mut c = Consumer::connect(proxy.addr, stranger());
    let refused = c.send(&proxy.get()).and_then(|()| c.read_response());
    assert!(
        refused.is_err(),
        "a handshake without a certificate was served: {refused:?}"
    );
}

#[test]
fn a_consumer_served_before_resumes_while_others_failures_block_its_address() {
    // TLS 1.3 resumes with a ticket, TLS 1.2 with a session id.
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        served_before_resumes(version);
    }
}

fn served_before_resumes(version: &'static rustls::SupportedProtocolVersion) {
    let proxy = Proxy::with(Options {
        limits: "refused_handshakes = 3".into(),
        ..Options::default()
    });
    // The consumer is served once and keeps its TLS session, as any TLS client does.
    let crypto = Arc::new(rustls::crypto::ring::default_provider());
    let consumer = client_config_with(&CONSUMER_A, crypto, &[version]);
    assert_eq!(
        Consumer::connect(proxy.addr, consumer.clone())
            .exchange(&proxy.get())
            .status,
        200
    );

    // Someone else on the same address fails handshakes until the address is blocked.
    for _ in 0..6 {
        fail_once(&proxy);
    }
    // Blocked: a full handshake, even with a valid certificate, is refused.
    let mut fresh = Consumer::connect(proxy.addr, client_config(&CONSUMER_A));
    assert!(
        fresh
            .send(&proxy.get())
            .and_then(|()| fresh.read_response())
            .is_err(),
        "the address is not blocked; the test proves nothing"
    );

    // The consumer served before resumes its session: no signature needed, served each time,
    // with the stranger still failing in between.
    for n in 0..5 {
        let mut again = Consumer::connect(proxy.addr, consumer.clone());
        let r = again.exchange(&proxy.get());
        assert_eq!(
            r.status, 200,
            "{version:?}: connection {n} of a consumer served before: {r:?}"
        );
        fail_once(&proxy);
    }
}
