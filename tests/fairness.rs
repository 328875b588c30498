//! One consumer abusing the proxy must not deny the others their service, nor fill the audit:
//! each test runs an abusive consumer and a well-behaved one side by side.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;

fn audit_records(proxy: &Proxy) -> Vec<serde_json::Value> {
    std::fs::read_to_string(proxy.dir().join("audit/audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Sends `count` copies of `request` in one write and reads answers until the connection
/// ends; returns how many were answered, each checked to be `status`.
fn pipelined(consumer: &mut Consumer, request: &Request, count: usize, status: u16) -> usize {
    let bytes: Vec<u8> = std::iter::repeat_n(request.bytes(), count).flatten().collect();
    // The proxy may close before it has read them all; what it answered is what counts.
    let _ = consumer.send_raw(&bytes);
    let mut answered = 0;
    while let Ok(r) = consumer.read_response() {
        assert_eq!(r.status, status, "{}", r.text());
        answered += 1;
    }
    answered
}

/// SPEC rows 5–13 answer before the rate limit of row 14, so refusals were free: one pipelined
/// connection got 13,000–20,000 a second, each a `deny` record of about 2 KB. Now, past
/// `[limits] refusals` a refusal closes its connection, and the audit counts the refusals in
/// one record a second per certificate: every one is still accounted for.
#[test]
fn a_refusal_storm_costs_its_sender_a_connection_each_and_the_audit_a_record_a_second() {
    let proxy = Proxy::with(Options {
        limits: "refusals = 10".into(),
        ..Options::default()
    });
    let stop = Arc::new(AtomicBool::new(false));
    // The well-behaved consumer, served throughout.
    let polite = {
        let (addr, stop, request) = (proxy.addr, stop.clone(), proxy.get().set("Ssp-From", ECDSA.asid));
        std::thread::spawn(move || {
            let mut c = Consumer::connect(addr, client_config(&ECDSA));
            let mut served = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = c.exchange(&request);
                assert_eq!(r.status, 200, "the polite consumer was refused: {}", r.text());
                served += 1;
            }
            served
        })
    };

    // Consumer A claims another consumer's ASID: refused (403) every time.
    let bad = proxy.get().set("Ssp-From", CONSUMER_B.asid);
    let abusive = client_config(&CONSUMER_A);
    let first = pipelined(
        &mut Consumer::connect(proxy.addr, abusive.clone()),
        &bad,
        500,
        403,
    );
    assert_eq!(
        first, 11,
        "its allowance of 10, then the refusal that closes the connection"
    );
    let mut answered = first;
    let mut connections = 1;
    for _ in 0..200 {
        answered += pipelined(&mut Consumer::connect(proxy.addr, abusive.clone()), &bad, 50, 403);
        connections += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let served = polite.join().expect("the polite consumer");
    proxy.stop();

    let denials: Vec<serde_json::Value> = audit_records(&proxy)
        .into_iter()
        .filter(|r| r["type"] == "deny" && r["subject"].as_str().is_some_and(|s| s.contains(CONSUMER_A.fqdn)))
        .collect();
    let accounted: u64 = denials.iter().map(|r| r["refusals"].as_u64().unwrap_or(1)).sum();
    eprintln!(
        "abusive: {} requests sent on {connections} connections, {answered} refused and answered, \
         {} deny records; polite: {served} served",
        500 + 200 * 50,
        denials.len()
    );
    assert_eq!(
        accounted, answered as u64,
        "every refusal answered is accounted for in the audit"
    );
    assert!(
        denials.len() <= 10 + answered / 10,
        "{} records for {answered} refusals",
        denials.len()
    );
    assert!(
        answered < 500,
        "the storm was not slowed: {answered} refusals answered"
    );
    assert!(served > 0);
}
