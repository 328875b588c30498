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

/// Sends `head` (which promises a body of `promised` bytes), then trickles the body a byte
/// every 500 ms, watching for an answer between bytes. Returns the status it was answered
/// with (0: none in 20 s) and when.
fn trickle(
    addr: std::net::SocketAddr,
    who: Who,
    head: Vec<u8>,
    promised: usize,
) -> (u16, std::time::Duration) {
    let started = std::time::Instant::now();
    let mut c = Consumer::connect(addr, client_config(&who));
    c.send_raw(&head).expect("send the head");
    c.tls
        .sock
        .set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    for _ in 0..promised.min(40) {
        if let Ok(r) = c.read_response() {
            return (r.status, started.elapsed());
        }
        let _ = c.send_raw(b"x");
    }
    (0, started.elapsed())
}

/// With `max_in_flight = 4`, four uploads trickled a byte every 2 s by one consumer held every
/// place, and every other consumer got 503 `PROVIDER_BUSY` for as long as the uploads lasted:
/// the body clock only limited the gap between reads. Now one consumer holds at most its share
/// of a provider's places (`[throttle] consumer_share`, half by default; past it, 429), and a
/// body must also keep `[limits] min_upload_rate` on average (else 408).
#[test]
fn slow_uploads_from_one_consumer_leave_the_provider_to_the_others() {
    let proxy = Proxy::with(Options {
        throttle: "max_in_flight = 4".into(),
        limits: "header_timeout = \"2s\"".into(),
        ..Options::default()
    });
    let head = proxy
        .valid_request("POST", SEARCH, &[("Content-Length", "1000")], b"")
        .head();
    let uploads: Vec<_> = (0..4)
        .map(|_| {
            let (addr, head) = (proxy.addr, head.clone());
            let upload = std::thread::spawn(move || trickle(addr, CONSUMER_A, head, 1000));
            // Each upload is admitted (or not) before the next starts.
            std::thread::sleep(std::time::Duration::from_millis(200));
            upload
        })
        .collect();

    // Another consumer, while the uploads trickle.
    let r = proxy
        .consumer(&ECDSA)
        .exchange(&proxy.get().set("Ssp-From", ECDSA.asid));
    assert_eq!(r.status, 200, "the other consumer was refused: {}", r.text());

    let mut outcomes: Vec<(u16, std::time::Duration)> =
        uploads.into_iter().map(|u| u.join().unwrap()).collect();
    eprintln!("trickled uploads: {outcomes:?}");
    outcomes.sort();
    let statuses: Vec<u16> = outcomes.iter().map(|o| o.0).collect();
    assert_eq!(
        statuses,
        [408, 408, 429, 429],
        "two uploads admitted (its share of 4) and cut off for their rate, two refused at once"
    );
}
