//! Inputs found by the fuzz targets in fuzz/ (issue 8, item 1), or found while writing them,
//! each pinned as a test on the same public entry point the target drives. A test marked
//! `#[ignore = "bug: ..."]` reproduces a bug not fixed yet: run it with `--ignored`.

use std::sync::mpsc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use ssp::audit::seal::Key;
use ssp::audit::verify::{Kind, Report, Role, Verifier};

const TS: &str = "2026-11-25T17:34:51.148Z";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A record with a correct `h` over its bytes, linked to `prev`, as `record::line` writes it:
/// `{"seq":..,"ts":..,"type":..<extra>,"prev":"..","h":".."}`. `extra` starts with a comma.
fn record(seq: u64, kind: &str, extra: &str, prev: &[u8; 32]) -> (Vec<u8>, [u8; 32]) {
    let body = format!(
        "{{\"seq\":{seq},\"ts\":\"{TS}\",\"type\":\"{kind}\"{extra},\"prev\":\"{}\"",
        hex(prev)
    );
    let h: [u8; 32] = Sha256::new()
        .chain_update(body.as_bytes())
        .chain_update(b"}")
        .finalize()
        .into();
    (format!("{body},\"h\":\"{}\"}}", hex(&h)).into_bytes(), h)
}

/// The records `(seq, type, extra)` chained one after the other, each linked to the last.
fn chain(records: &[(u64, &str, &str)]) -> Vec<Vec<u8>> {
    let mut prev = [0u8; 32];
    records
        .iter()
        .map(|&(seq, kind, extra)| {
            let (line, h) = record(seq, kind, extra, &prev);
            prev = h;
            line
        })
        .collect()
}

/// Verifies `lines` as the active file, in a thread: `None` if it has not finished within
/// `limit` (a hang), else its report. A panic in the verifier fails the test with its message.
fn verify(lines: Vec<Vec<u8>>, k0: Option<Key>, limit: Duration) -> Option<Report> {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let mut verifier = Verifier::new(k0);
        verifier.begin_file("audit.jsonl", Role::Active);
        for line in &lines {
            verifier.line(line);
        }
        let _ = tx.send(verifier.finish(false));
    });
    match rx.recv_timeout(limit) {
        Ok(report) => Some(report),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let panic = worker.join().expect_err("the verifier ended without a report");
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            panic!("the verifier panicked: {message:?}");
        }
        // The thread is left running: the test process ends with the test.
        Err(mpsc::RecvTimeoutError::Timeout) => None,
    }
}

/// The control for the tests below: a forged-but-consistent chain with a seal at epoch 0 and
/// the right key verifies, so the helpers build records the verifier accepts.
#[test]
fn forged_records_with_consistent_hashes_verify() {
    let key = Key::new(0, [7; 32]);
    let mut prev = [0u8; 32];
    let mut lines = Vec::new();
    for (seq, kind) in [(0, "open"), (1, "start")] {
        let extra = if kind == "start" { ",\"key_epoch\":0" } else { "" };
        let (line, h) = record(seq, kind, extra, &prev);
        lines.push(line);
        prev = h;
    }
    let mac = hex(&key.mac(2, &prev, TS));
    lines.push(record(2, "seal", &format!(",\"epoch\":0,\"mac\":\"{mac}\""), &prev).0);
    let report = verify(lines, Some(key), Duration::from_secs(5)).expect("verified in time");
    assert_eq!(report.findings, [], "{}", report.summary());
    assert_eq!((report.records, report.sealed_through), (3, Some(2)));
}

/// A seal claiming a far epoch makes the verifier evolve the initial key that many times, one
/// SHA-256 each, before it can say the MAC is wrong: `ssp audit verify --key-file` on an
/// edited file spins for hours instead of reporting the tampering.
/// Where: `Verifier::check_seal` -> `key_at` -> `seal::Key::advance_to` (src/audit/verify.rs,
/// src/audit/seal.rs); the first seal has no expected epoch to compare with, and nothing bounds
/// the jump (nor the one a `start` record's `key_epoch` declares).
#[test]

fn seal_with_a_far_epoch_is_reported_not_computed() {
    let lines = chain(&[
        (0, "open", ""),
        (
            1,
            "seal",
            &format!(",\"epoch\":{},\"mac\":\"{}\"", 1u64 << 40, "0".repeat(64)),
        ),
    ]);
    let report = verify(lines, Some(Key::new(0, [7; 32])), Duration::from_secs(5))
        .expect("the verifier hung on a seal at epoch 2^40");
    assert_eq!(report.exit_code(), 1, "{}", report.summary());
}

/// A seal at epoch u64::MAX, then a seal at epoch 0: the verifier computes the next expected
/// epoch as `epoch + 1`, which overflows: a panic in a debug build; in release it wraps to 0,
/// so the second seal's epoch going backwards (an old key reused) is accepted as "intact".
/// Where: `Verifier::check_seal`, `self.expected_epoch = Some(epoch + 1)` (src/audit/verify.rs).
#[test]

fn seal_at_the_last_epoch_does_not_overflow() {
    let zeros = "0".repeat(64);
    let lines = chain(&[
        (0, "open", ""),
        (1, "seal", &format!(",\"epoch\":{},\"mac\":\"{zeros}\"", u64::MAX)),
        (2, "seal", &format!(",\"epoch\":0,\"mac\":\"{zeros}\"")),
    ]);
    let report = verify(lines, None, Duration::from_secs(5)).expect("verified in time");
    assert_eq!(report.exit_code(), 1, "{}", report.summary());
}

/// A record at seq u64::MAX (reported as a gap: the chain resumes there), then one at seq 0:
/// the verifier computes `seq + 1` to check the next one, which overflows: a panic in a debug
/// build; in release it wraps to 0, and seq 0 is taken as the next link (only the gap is
/// reported, not the chain running backwards).
/// Where: `Verifier::line` (`seq + 1` for `expected`) and `Verifier::follows`
/// (`p.seq == seq + 1`), src/audit/verify.rs.
#[test]

fn record_at_the_last_seq_does_not_overflow() {
    let lines = chain(&[(u64::MAX, "open", ""), (0, "req", "")]);
    let report = verify(lines, None, Duration::from_secs(5)).expect("verified in time");
    assert!(
        report.findings.iter().any(|f| f.kind == Kind::Tampered),
        "{}",
        report.summary()
    );
}
/// fuzz/artifacts/response_head/crash-no-reason-phrase and crash-reason-obs-text: a
/// provider's status line with no reason phrase (`HTTP/1.1 200`, which httparse accepts), or
/// with a byte above 0x7f in it (`HTTP/1.1 404 Non trouv\xe9`). httparse then gives the reason
/// as a `""` that does not point into the buffer, and `response::parse` takes its offset as
/// `r.as_ptr() - base`: "attempt to subtract with overflow" in a debug build. In release (no
/// overflow checks, `panic = "abort"`) the offset wraps, and `ResponseHead::reason()`, which
/// `forward::write_response` calls for every response, slices out of range: a panic that
/// aborts the whole proxy, from one provider response.
/// Where: src/http/response.rs, `parse`, the `reason` range (line 88).
#[test]

fn response_reason_outside_the_buffer_does_not_panic() {
    for status_line in [
        &b"HTTP/1.1 200"[..],
        b"HTTP/1.1 100 Cont\xe9nue",
        b"HTTP/1.1 404 Non trouv\xe9",
    ] {
        let mut raw = status_line.to_vec();
        raw.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
        let outcome = std::panic::catch_unwind(|| {
            ssp::http::response::parse(&raw, 32768, "GET").map(|h| h.map(|h| h.reason().to_vec()))
        });
        let outcome = outcome.unwrap_or_else(|_| panic!("panicked on {:?}", String::from_utf8_lossy(&raw)));
        // Refusing it (a 502 to the consumer) or keeping an empty or lossy reason are both fine.
        assert!(
            matches!(&outcome, Err(_) | Ok(Some(_))),
            "{outcome:?} for {:?}",
            String::from_utf8_lossy(&raw)
        );
    }
}

/// Found by review on 2026-11-26 (`fuzz/artifacts/request_head/review-target-cut-mid-character`),
/// then added to the `request_head` target. The audit keeps the first 512 bytes of a request's
/// target; the cut sliced the `str` at byte 512 even inside a character, so a target with one
/// across that point panicked the worker building the record, for refused and admitted
/// requests alike: one request from any consumer holding a valid certificate aborted the proxy.
/// Where: src/proxy/report.rs, the target in `facts` (before 4286484).
#[test]
fn a_target_cut_for_the_audit_inside_a_character_does_not_panic() {
    use ssp::audit::Event;
    use ssp::audit::record::{self, Entry};
    use std::sync::Arc;

    let raw = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/artifacts/request_head/review-target-cut-mid-character"
    ))
    .expect("the artifact");
    let head = ssp::http::request::parse(&raw, 32768)
        .expect("a valid head")
        .expect("a complete head");
    let peer = "192.0.2.1:4711".parse().unwrap();
    let facts = ssp::proxy::request_facts(Some(&head), &raw, peer, None);
    let target = facts.text.target();
    assert!(
        target.len() <= 512 && head.target().starts_with(target),
        "{target:?}"
    );
    let entry = Entry::Event(Box::new(Event::Req {
        request: Arc::new(facts),
    }));
    let line = record::line(1, TS, &entry, &[0; 32]);
    assert!(line.bytes.ends_with(b"}\n"));
}
