//! A provider address that takes the TCP connect and then never answers the TLS handshake (a
//! host behind a firewall that drops, a stuck balancer) gets its share of `connect_timeout`;
//! the request then goes to the next address and is answered there. The refused-address cases
//! are in `tests/upstream_failures.rs`.

mod common;
// Only part of the scripted provider is used here.
#[allow(dead_code)]
#[path = "common/scripted_provider.rs"]
mod scripted_provider;

use common::*;
use scripted_provider::ScriptedProvider;

#[test]
fn an_address_that_never_answers_gives_way_to_the_next_within_connect_timeout() {
    let tls =
        ssp::demo::provider::server_config(&pki("provider.pem"), &pki("provider.key"), &pki("nhs-ca.pem"))
            .expect("provider TLS");
    let stalled = ScriptedProvider::start(tls);
    stalled.stall_handshakes(true);
    let proxy = Proxy::with(Options {
        connect_first: vec![stalled.addr],
        upstream: "connect_timeout = \"2s\"".into(),
        ..Options::default()
    });
    // Given the whole of connect_timeout, the stalled address would end this in a 502: the
    // 200 says it had only its share, and the rest went to the provider.
    let r = proxy.consumer(&CONSUMER_A).exchange(&proxy.get());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(proxy.seen().len(), 1, "answered by the second address, once");
}
