//! Issue 8 item 4: fault injection, one table. Each row of `FAULTS` injects one fault against a
//! real proxy, over real mutual TLS both ways, with a scripted provider behind it
//! (`common/scripted_provider.rs`), and states what the consumer gets and what the audit must
//! say about that request (SPEC section 4 rows 17 and 18, the 499 of a consumer that left;
//! SPEC section 5). After every row, once the proxy settles:
//! - every request the provider received has a `req` record with its trace id, and every `req`
//!   has its `res` (a `deny` replaces the `req` only when it cannot be made durable, a case of
//!   `tests/audit_unavailable.rs`);
//! - the proxy let go of the provider connection the fault was on;
//! - a fresh consumer's allowed request is answered 200.
//!
//! The rows run in order against one proxy and one provider, so whatever a fault leaves behind
//! shows in the rows after it: `max_in_flight = 1`, so a leaked in-flight permit or an exchange
//! that never ends turns the next request into 503 `PROVIDER_BUSY_...`; the healthy answers keep
//! provider connections pooled, so faults also land on reused connections.
//!
//! Rows covered elsewhere, not repeated here:
//! - the audit disk full: `tests/audit_unavailable.rs` (503 `AUDIT_UNAVAILABLE`, nothing reaches
//!   the provider, admission resumes by itself, `ssp audit verify` exits 0) and
//!   `tests/audit_failure.rs` (the writer fails closed and recovers);
//! - kill -9 under load, then restart: `tests/operations.rs::kill_9_under_load_then_restart_leaves_a_chain_that_verifies`
//!   (the restarted proxy answers 200; the chain verifies with `--require-sealed`; there are more
//!   `req` records than answered requests);
//! - a provider presenting a certificate for another name (502, nothing sent), ambiguous framing
//!   in its response (502), a slow upload: `tests/upstream_failures.rs`;
//! - a consumer that stalls mid-head or mid-body (408): `tests/framing.rs`.

mod common;
#[path = "common/scripted_provider.rs"]
mod scripted_provider;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use common::*;
use scripted_provider::{DECLARED, EARLY_BODY, PARTIAL, Script, ScriptedProvider};
use serde_json::Value;

/// How a row injects its fault.
#[derive(Debug, Clone, Copy)]
enum Inject {
    /// Nothing listens on the provider's port while the request is made.
    ClosedPort,
    /// The provider accepts the connection and never answers the TLS handshake.
    HandshakeStall,
    /// The provider runs this script on the request (a GET).
    Provider(Script),
    /// A POST whose body is 1,000 bytes short: the provider answers before reading it.
    AnswerBeforeBody,
    /// The consumer sends a head and part of a body, waits until the provider has the head,
    /// then closes its socket.
    ConsumerLeavesMidBody,
    /// The consumer reads the response head and part of the body, then closes its socket.
    ConsumerLeavesMidResponse,
    /// As `ConsumerLeavesMidBody`, but instead of closing, the consumer sends a TLS record
    /// that does not decrypt.
    ConsumerBreaksTlsMidBody,
    /// As `ConsumerLeavesMidResponse`, but with a TLS record that does not decrypt.
    ConsumerBreaksTlsMidResponse,
}

/// What the consumer gets.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// The proxy's own OperationOutcome with this status and `issue.code`, its token the given
    /// prefix followed by the provider URL of the request.
    Outcome(u16, &'static str, &'static str),
    /// The provider's 200 and its body in full, then the connection closes.
    ForwardedThenClosed,
    /// The provider's 200 head and part of its body, then the connection closes: the body is
    /// cut short of its Content-Length, never padded or completed.
    CutShort,
    /// Nothing (the consumer left); for a broken TLS record, the connection closes.
    ConsumerGone,
}

struct Fault {
    fault: &'static str,
    inject: Inject,
    answer: Answer,
    /// The `res` record's status and token prefix (followed by the provider URL).
    audited: (u16, Option<&'static str>),
    /// Whether the provider must have received the request.
    reaches_provider: bool,
}

const ERROR: &str = "ERROR_COMMUNICATING_TO_ENDPOINT_URL_";
const TIMEOUT: &str = "TIMEOUT_COMMUNICATING_TO_ENDPOINT_URL_";
const BAD_GATEWAY: Answer = Answer::Outcome(502, "transient", ERROR);

/// The table: fault, injection, the consumer's answer, the audit's `res`.
const FAULTS: &[Fault] = &[
    Fault {
        fault: "provider port closed (connection refused)",
        inject: Inject::ClosedPort,
        answer: BAD_GATEWAY,
        audited: (502, Some(ERROR)),
        reaches_provider: false,
    },
    Fault {
        fault: "provider accepts and never answers the TLS handshake",
        inject: Inject::HandshakeStall,
        answer: BAD_GATEWAY,
        audited: (502, Some(ERROR)),
        reaches_provider: false,
    },
    Fault {
        fault: "provider resets mid-head",
        inject: Inject::Provider(Script::ResetMidHead),
        answer: BAD_GATEWAY,
        audited: (502, Some(ERROR)),
        reaches_provider: true,
    },
    Fault {
        fault: "provider resets mid-body",
        inject: Inject::Provider(Script::ResetMidBody),
        answer: Answer::CutShort,
        audited: (200, None),
        reaches_provider: true,
    },
    Fault {
        fault: "provider sends garbage instead of HTTP",
        inject: Inject::Provider(Script::Garbage),
        answer: BAD_GATEWAY,
        audited: (502, Some(ERROR)),
        reaches_provider: true,
    },
    Fault {
        fault: "provider sends an endless head",
        inject: Inject::Provider(Script::EndlessHead),
        answer: BAD_GATEWAY,
        audited: (502, Some(ERROR)),
        reaches_provider: true,
    },
    Fault {
        fault: "provider drips its answer a byte a second",
        inject: Inject::Provider(Script::Drip),
        answer: Answer::Outcome(504, "timeout", TIMEOUT),
        audited: (504, Some(TIMEOUT)),
        reaches_provider: true,
    },
    Fault {
        fault: "provider closes without answering",
        inject: Inject::Provider(Script::CloseWithoutAnswer),
        answer: BAD_GATEWAY,
        audited: (502, Some(ERROR)),
        reaches_provider: true,
    },
    Fault {
        fault: "provider answers before reading the request body",
        inject: Inject::AnswerBeforeBody,
        answer: Answer::ForwardedThenClosed,
        audited: (200, None),
        reaches_provider: true,
    },
    Fault {
        fault: "consumer disconnects mid-request-body",
        inject: Inject::ConsumerLeavesMidBody,
        answer: Answer::ConsumerGone,
        audited: (499, None),
        reaches_provider: true,
    },
    Fault {
        fault: "consumer disconnects mid-response",
        inject: Inject::ConsumerLeavesMidResponse,
        answer: Answer::ConsumerGone,
        audited: (499, None),
        reaches_provider: true,
    },
    Fault {
        fault: "consumer breaks its TLS mid-request-body",
        inject: Inject::ConsumerBreaksTlsMidBody,
        answer: Answer::ConsumerGone,
        audited: (499, None),
        reaches_provider: true,
    },
    Fault {
        fault: "consumer breaks its TLS mid-response",
        inject: Inject::ConsumerBreaksTlsMidResponse,
        answer: Answer::ConsumerGone,
        audited: (499, None),
        reaches_provider: true,
    },
];

/// How long the proxy gets to settle (records written, connections let go) after a row.
const SETTLE: Duration = Duration::from_secs(5);

#[test]
fn every_fault_gets_its_answer_and_leaves_the_proxy_serving_with_the_audit_whole() {
    let tls =
        ssp::demo::provider::server_config(&pki("provider.pem"), &pki("provider.key"), &pki("nhs-ca.pem"))
            .expect("provider TLS");
    let mut provider = ScriptedProvider::start(tls);
    let proxy = Proxy::with(Options {
        provider_at: Some(provider.addr),
        // Small enough that the stalled and dripping rows end in about a second each.
        upstream: "connect_timeout = \"1s\"\nresponse_timeout = \"1s\"".into(),
        throttle: "rate = 10000\nburst = 10000\nmax_in_flight = 1".into(),
        ..Options::default()
    });
    let mut failed = Vec::new();
    for (n, row) in FAULTS.iter().enumerate() {
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            run(&proxy, &mut provider, row, n);
            after(&proxy, &provider, row, n);
        }));
        println!(
            "{:<52} {:>6} ms  {}",
            row.fault,
            started.elapsed().as_millis(),
            if outcome.is_ok() { "ok" } else { "FAILED" }
        );
        if outcome.is_err() {
            failed.push(row.fault);
        }
    }
    assert!(
        failed.is_empty(),
        "rows failed (see their panics above): {failed:?}"
    );
}

/// A v4 UUID per row (and per after-check), so each request is found in the audit.
fn trace_id(row: usize, after: bool) -> String {
    format!(
        "00000000-0000-4000-8000-{:06x}{:06x}",
        row + 1,
        usize::from(after)
    )
}

/// Injects the row's fault and checks what the consumer gets.
fn run(proxy: &Proxy, provider: &mut ScriptedProvider, row: &Fault, n: usize) {
    let trace = trace_id(n, false);
    let (method, suffix) = suffix(row);
    let url = proxy.url(&suffix);
    let mut consumer = proxy.consumer(&CONSUMER_A);
    match row.inject {
        Inject::ClosedPort => {
            provider.close_port();
            let r = consumer.exchange(&proxy.get().set("Ssp-TraceID", &trace));
            provider.reopen();
            check_answer(row, &r, &url, &trace, &mut consumer);
        }
        Inject::HandshakeStall => {
            provider.stall_handshakes(true);
            let r = consumer.exchange(&proxy.get().set("Ssp-TraceID", &trace));
            provider.stall_handshakes(false);
            check_answer(row, &r, &url, &trace, &mut consumer);
        }
        Inject::Provider(_) => {
            let request = proxy
                .valid_request(method, &suffix, &[], b"")
                .set("Ssp-TraceID", &trace);
            consumer.send(&request).expect("send the request");
            if matches!(row.answer, Answer::CutShort) {
                return cut_short(provider, &mut consumer);
            }
            let r = consumer.read_response().expect("an answer");
            check_answer(row, &r, &url, &trace, &mut consumer);
        }
        Inject::AnswerBeforeBody => {
            partial_upload(proxy, &mut consumer, &suffix, &trace);
            let r = consumer.read_response().expect("the early answer");
            assert_eq!(
                r.field("connection"),
                Some("close"),
                "an answer before the body is read says the connection ends"
            );
            check_answer(row, &r, &url, &trace, &mut consumer);
        }
        Inject::ConsumerLeavesMidBody | Inject::ConsumerBreaksTlsMidBody => {
            partial_upload(proxy, &mut consumer, &suffix, &trace);
            wait_until("the provider has the request head", || {
                provider
                    .seen()
                    .iter()
                    .any(|s| s.trace_id.as_deref() == Some(trace.as_str()))
            });
            leave(consumer, row.inject);
        }
        Inject::ConsumerLeavesMidResponse | Inject::ConsumerBreaksTlsMidResponse => {
            let request = proxy
                .valid_request("GET", &suffix, &[], b"")
                .set("Ssp-TraceID", &trace);
            consumer.send(&request).expect("send the request");
            let received = read_until(&mut consumer, |got| {
                body_start(got).is_some_and(|start| got.len() > start)
            });
            assert!(
                received.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&received)
            );
            leave(consumer, row.inject);
        }
    }
}

/// The request's method and target suffix: the fault script in the query.
fn suffix(row: &Fault) -> (&'static str, String) {
    match row.inject {
        Inject::ClosedPort | Inject::HandshakeStall => ("GET", SEARCH.to_string()),
        Inject::Provider(script) => ("GET", format!("/search?{}", script.query())),
        Inject::AnswerBeforeBody => ("POST", format!("/search?{}", Script::AnswerBeforeBody.query())),
        Inject::ConsumerLeavesMidBody | Inject::ConsumerBreaksTlsMidBody => {
            ("POST", format!("/search?{}", Script::Hold.query()))
        }
        Inject::ConsumerLeavesMidResponse | Inject::ConsumerBreaksTlsMidResponse => {
            ("GET", format!("/search?{}", Script::HoldMidBody.query()))
        }
    }
}

/// Sends a POST head declaring 2,000 body bytes and only the first 1,000 of them.
fn partial_upload(proxy: &Proxy, consumer: &mut Consumer, suffix: &str, trace: &str) {
    let body = pseudo_random(2000, 7);
    let request = proxy
        .valid_request("POST", suffix, &[], &body)
        .set("Ssp-TraceID", trace);
    consumer.send_raw(&request.head()).expect("send the head");
    consumer.send_raw(&body[..1000]).expect("send half the body");
}

/// The consumer goes away: closes its socket, or first sends a TLS record that cannot be
/// decrypted (and then sees the proxy close).
fn leave(mut consumer: Consumer, how: Inject) {
    if matches!(
        how,
        Inject::ConsumerBreaksTlsMidBody | Inject::ConsumerBreaksTlsMidResponse
    ) {
        // An application-data record of TLS 1.2/1.3 whose 32 bytes are not a valid ciphertext.
        let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x20];
        record.extend([0x5a; 32]);
        consumer
            .tls
            .sock
            .write_all(&record)
            .expect("send a broken record");
        let mut sink = [0u8; 16 * 1024];
        while read_or_closed(&mut consumer, &mut sink).is_some() {}
    }
    drop(consumer);
}

/// The `ResetMidBody` row: the consumer must have the head and part of the body before the
/// provider resets (else the proxy may see the reset first and answer 502), and must then see
/// its connection end with the body short.
fn cut_short(provider: &ScriptedProvider, consumer: &mut Consumer) {
    let mut received = read_until(consumer, |got| {
        body_start(got).is_some_and(|start| got.len() > start)
    });
    provider.release();
    let mut chunk = [0u8; 16 * 1024];
    while let Some(k) = read_or_closed(consumer, &mut chunk) {
        received.extend_from_slice(&chunk[..k]);
        assert!(received.len() < 2 * DECLARED, "the proxy invented a body");
    }
    let head = String::from_utf8_lossy(&received[..body_start(&received).unwrap()]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {DECLARED}")),
        "the provider's framing is kept: {head}"
    );
    let body = received.len() - head.len();
    assert!(
        (1..DECLARED).contains(&body),
        "the body is cut short ({body} of {DECLARED} bytes) and the connection closed"
    );
    assert!(body <= PARTIAL, "no more than the provider sent: {body}");
}

/// Reads raw plaintext from the consumer until `enough` says so (or the read times out).
fn read_until(consumer: &mut Consumer, enough: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    while !enough(&got) {
        match consumer.tls.read(&mut chunk) {
            Ok(0) => panic!("closed early after {:?}", String::from_utf8_lossy(&got)),
            Ok(k) => got.extend_from_slice(&chunk[..k]),
            Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&got)),
        }
    }
    got
}

/// Reads what arrives; `None` once the proxy closed the connection (cleanly, with a reset or
/// with an alert). Fails if it stays open and silent for `READ_TIMEOUT`.
fn read_or_closed(consumer: &mut Consumer, chunk: &mut [u8]) -> Option<usize> {
    match consumer.tls.read(chunk) {
        Ok(0) => None,
        Ok(k) => Some(k),
        Err(e) => {
            assert!(
                !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                "the connection is still open after {READ_TIMEOUT:?}"
            );
            None
        }
    }
}

fn body_start(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

#[track_caller]
fn check_answer(row: &Fault, r: &Response, url: &str, trace: &str, consumer: &mut Consumer) {
    match row.answer {
        Answer::Outcome(status, code, token) => {
            assert_outcome(r, status, code, &format!("{token}{url}"), Some(trace));
        }
        Answer::ForwardedThenClosed => {
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.text(), EARLY_BODY);
            consumer.assert_closed();
        }
        Answer::CutShort | Answer::ConsumerGone => unreachable!("{}: no complete answer", row.fault),
    }
}

/// The checks after every row.
fn after(proxy: &Proxy, provider: &ScriptedProvider, row: &Fault, n: usize) {
    let trace = trace_id(n, false);
    let (_, suffix) = suffix(row);
    let records = settle(proxy, provider, &trace);

    // The row's own record.
    let res: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "res" && r["trace_id"] == trace.as_str())
        .collect();
    assert_eq!(res.len(), 1, "one res record for the row's request: {res:?}");
    let (status, token) = row.audited;
    assert_eq!(res[0]["status"], status, "audited status: {}", res[0]);
    match token {
        Some(prefix) => assert_eq!(
            res[0]["token"],
            format!("{prefix}{}", proxy.url(&suffix)),
            "audited token"
        ),
        None => assert_eq!(res[0]["token"], Value::Null, "audited token"),
    }
    if let Answer::CutShort = row.answer {
        let bytes = res[0]["bytes_out"].as_u64().expect("bytes_out");
        assert!(
            (1..DECLARED as u64).contains(&bytes),
            "bytes_out says the body was cut short: {bytes}"
        );
    }
    let reached = provider
        .seen()
        .iter()
        .any(|s| s.trace_id.as_deref() == Some(trace.as_str()));
    assert_eq!(
        reached, row.reaches_provider,
        "whether the provider received the request"
    );

    // The provider connection the fault was on is let go.
    wait_until("the proxy closes the faulty provider connection", || {
        provider.faults_open() == 0
    });

    // A fresh consumer is served.
    let again = trace_id(n, true);
    let r = proxy
        .consumer(&CONSUMER_A)
        .exchange(&proxy.get().set("Ssp-TraceID", &again));
    assert_eq!(r.status, 200, "a fresh consumer after the fault: {}", r.text());
    assert_eq!(r.text(), scripted_provider::BODY);
    let records = settle(proxy, provider, &again);
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "res" && r["trace_id"] == again.as_str() && r["status"] == 200),
        "the fresh consumer's request is audited"
    );
}

/// Waits until `trace` has its `res` record, every `req` record has its `res` and every request
/// the provider received has a `req`; returns the records then.
fn settle(proxy: &Proxy, provider: &ScriptedProvider, trace: &str) -> Vec<Value> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let records = audit_records(proxy);
        let mut open: HashMap<String, i64> = HashMap::new();
        for r in &records {
            let id = r["trace_id"].as_str().unwrap_or("").to_string();
            match r["type"].as_str() {
                Some("req") => *open.entry(id).or_default() += 1,
                Some("res") => *open.entry(id).or_default() -= 1,
                _ => {}
            }
        }
        let unanswered: Vec<&String> = open.iter().filter(|(_, n)| **n > 0).map(|(t, _)| t).collect();
        let unaudited: Vec<String> = provider
            .seen()
            .iter()
            .filter(|s| {
                !records
                    .iter()
                    .any(|r| r["type"] == "req" && r["trace_id"].as_str() == s.trace_id.as_deref())
            })
            .map(|s| format!("{:?} {}", s.trace_id, s.target))
            .collect();
        let ended = records
            .iter()
            .any(|r| r["type"] == "res" && r["trace_id"] == trace);
        if ended && unanswered.is_empty() && unaudited.is_empty() {
            assert!(open.values().all(|n| *n == 0), "a res without its req: {open:?}");
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "after {SETTLE:?}: {trace} has a res record: {ended}; req records without a res: \
             {unanswered:?}; requests the provider received without a req record: {unaudited:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every complete record in the audit folder (a line being written is skipped).
fn audit_records(proxy: &Proxy) -> Vec<Value> {
    let dir = proxy.dir().join("audit");
    let mut records = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("the audit folder") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "jsonl") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            records.push(
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: {e}: {line}", path.display())),
            );
        }
    }
    records
}

#[track_caller]
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLE;
    while !check() {
        assert!(Instant::now() < deadline, "not within {SETTLE:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
