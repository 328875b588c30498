//! Behind an L4 balancer (`[server] proxy_protocol = true`): the PROXY protocol v2 header names
//! the consumer, and the proxy uses that address in `Forwarded` and the audit.

mod common;

use common::*;

/// A PROXY v2 header for TCP over IPv4 from `src:port`.
fn header(src: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&443u16.to_be_bytes());
    h
}

fn behind_a_balancer() -> Proxy {
    Proxy::with(Options {
        server: "proxy_protocol = true".into(),
        ..Options::default()
    })
}

#[test]
fn the_consumer_named_by_the_balancer_is_forwarded_and_audited() {
    let proxy = behind_a_balancer();
    let mut consumer = Consumer::connect_after(
        proxy.addr,
        client_config(&CONSUMER_A),
        &header([203, 0, 113, 7], 5555),
    );
    assert_eq!(consumer.exchange(&proxy.get()).status, 200);
    let seen = proxy.seen();
    assert_eq!(
        seen[0].field("forwarded"),
        Some("for=\"203.0.113.7:5555\";proto=https")
    );
    proxy.stop();
    let audit = std::fs::read_to_string(proxy.dir().join("audit/audit.jsonl")).unwrap();
    let req = audit
        .lines()
        .find(|l| l.contains("\"type\":\"req\""))
        .expect("a req record");
    assert!(req.contains("\"peer\":\"203.0.113.7:5555\""), "{req}");
}

#[test]
fn a_connection_without_the_header_is_closed_unserved() {
    let proxy = behind_a_balancer();
    let mut consumer = Consumer::connect(proxy.addr, client_config(&CONSUMER_A));
    assert!(
        consumer
            .send(&proxy.get())
            .and_then(|_| consumer.read_response())
            .is_err()
    );
    proxy.assert_nothing_forwarded("no PROXY header");
}
