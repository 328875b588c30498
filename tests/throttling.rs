//! SPEC section 4 rows 14 and 15, and the connection limit: per-consumer rates with their
//! headers, per-provider requests in flight, and `max_connections`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use ssp::demo::provider::{Reply, SeenRequest};

fn limited(rate: &str, burst: u32) -> Options {
    Options {
        throttle: format!("rate = {rate}\nburst = {burst}"),
        ..Options::default()
    }
}

fn request_as(proxy: &Proxy, who: &Who) -> Request {
    proxy.get().set("Ssp-From", who.asid)
}

#[test]
fn consumer_over_its_rate_gets_429_while_another_is_served() {
    let proxy = Proxy::with(limited("1", 3));
    let mut a = proxy.consumer(&CONSUMER_A);
    for expected_remaining in ["2", "1", "0"] {
        let r = a.exchange(&proxy.get());
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.field("x-rate-limit-limit"), Some("3"));
        assert_eq!(r.field("x-rate-limit-remaining"), Some(expected_remaining));
        assert!(r.field("x-rate-limit-reset").is_some());
    }
    let refused = a.exchange(&proxy.get());
    assert_outcome(
        &refused,
        429,
        "throttled",
        &format!("THROTTLED_MESSAGESENDER_{}", CONSUMER_A.asid),
        Some(TRACE_ID),
    );
    assert_eq!(refused.field("retry-after"), Some("1"));
    assert_eq!(refused.field("x-rate-limit-limit"), Some("3"));
    assert_eq!(refused.field("x-rate-limit-remaining"), Some("0"));
    assert_eq!(refused.field("x-rate-limit-reset"), Some("3"));
    assert_eq!(
        proxy.seen().len(),
        3,
        "the throttled request never reaches the provider"
    );

    // Another consumer has its own allowance, at the same moment.
    let mut other = proxy.consumer(&ECDSA);
    assert_eq!(other.exchange(&request_as(&proxy, &ECDSA)).status, 200);

    // After the advertised wait, A is served again on the same connection.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(a.exchange(&proxy.get()).status, 200);
}

#[test]
fn third_concurrent_request_to_a_busy_provider_gets_503() {
    let slow: ssp::demo::provider::Handler = Arc::new(|req: &SeenRequest| {
        let mut reply = Reply::json(200, "{}");
        if req.target.contains("slow") {
            reply.delay = Duration::from_millis(1500);
        }
        reply
    });
    let proxy = Proxy::with(Options {
        throttle: "rate = 10000\nburst = 10000\nmax_in_flight = 2".into(),
        handler: slow,
        ..Options::default()
    });
    // Two consumers, each within its share (half of the two places).
    let slow_request = proxy.valid_request("GET", "/slow", &[], b"");
    let mut busy: Vec<Consumer> = [CONSUMER_A, ECDSA]
        .iter()
        .map(|who| proxy.consumer(who))
        .collect();
    busy[0].send(&slow_request).unwrap();
    busy[1]
        .send(&slow_request.clone().set("Ssp-From", ECDSA.asid))
        .unwrap();
    // Both slow requests are at the provider before the third is tried.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while proxy.seen().len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let third = proxy
        .consumer(&RSA4096)
        .exchange(&proxy.get().set("Ssp-From", RSA4096.asid));
    assert_outcome(
        &third,
        503,
        "transient",
        &format!("PROVIDER_BUSY_{PROVIDER_ASID}"),
        Some(TRACE_ID),
    );
    assert_eq!(third.field("retry-after"), Some("1"));

    for c in &mut busy {
        assert_eq!(c.read_response().unwrap().status, 200);
    }
    // Both places are released once the slow answers are out.
    assert_eq!(proxy.consumer(&CONSUMER_A).exchange(&proxy.get()).status, 200);
}

#[test]
fn max_connections_holds_and_the_open_connections_are_still_served() {
    let proxy = Proxy::with(Options {
        limits: "max_connections = 2".into(),
        ..Options::default()
    });
    let mut first = proxy.consumer(&CONSUMER_A);
    let mut second = proxy.consumer(&CONSUMER_A);
    assert_eq!(first.exchange(&proxy.get()).status, 200);
    assert_eq!(second.exchange(&proxy.get()).status, 200);

    let mut third = Consumer::connect(proxy.addr, client_config(&CONSUMER_A));
    assert!(
        third
            .send(&proxy.get())
            .and_then(|_| third.read_response())
            .is_err(),
        "a connection past max_connections is closed without being served"
    );
    assert_eq!(
        first.exchange(&proxy.get()).status,
        200,
        "existing connections keep working"
    );

    drop(second);
    // The freed place is taken by the next connection once the proxy has seen the close.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut next = Consumer::connect(proxy.addr, client_config(&CONSUMER_A));
        match next.send(&proxy.get()).and_then(|_| next.read_response()) {
            Ok(r) => {
                assert_eq!(r.status, 200);
                break;
            }
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("no place freed after a close: {e}"),
        }
    }
}

#[test]
fn address_flooding_bad_handshakes_is_held_to_resumption_then_let_back() {
    let proxy = Proxy::start();
    // A burst of 20 refused handshakes is tolerated; these go past it.
    for _ in 0..24 {
        let mut bad = Consumer::connect(proxy.addr, client_config(&OTHER_CA));
        assert!(bad.send(&proxy.get()).and_then(|_| bad.read_response()).is_err());
    }
    let mut cut_off = Consumer::connect(proxy.addr, client_config(&CONSUMER_A));
    assert!(
        cut_off
            .send(&proxy.get())
            .and_then(|_| cut_off.read_response())
            .is_err(),
        "the flooding address gets no full handshake, good certificate or not"
    );
    proxy.assert_nothing_forwarded("flood");

    // One refused handshake a second refills the allowance: the address is let back.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let mut good = Consumer::connect(proxy.addr, client_config(&CONSUMER_A));
        match good.send(&proxy.get()).and_then(|_| good.read_response()) {
            Ok(r) => {
                assert_eq!(r.status, 200);
                break;
            }
            Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(250)),
            Err(e) => panic!("the address was never let back: {e}"),
        }
    }
}
