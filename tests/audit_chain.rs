//! SPEC section 5: the writer's chain, records, durability, seals and sync modes, on real files.

#[path = "common/audit.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ssp::audit::{Audit, Event, Notifier};
use ssp::config::AuditSync;

#[test]
fn a_mixed_run_verifies_and_every_trace_id_appears() {
    let dir = TempDir::new("mixed");
    keygen(&dir);
    let audit = Audit::start(settings(&dir, true)).unwrap();
    assert!(audit.healthy());
    let mut traces = Vec::new();
    for i in 0..60 {
        let trace = format!("00000000-0000-4000-8000-{i:012}");
        match i % 4 {
            0 => audit.record(deny(&trace)),
            1 => audit.record(tls()),
            _ => {
                let seq = durable(&audit, req(&trace));
                assert!(seq.is_some());
                audit.record(res(&trace, seq));
            }
        }
        if i % 4 != 1 {
            traces.push(trace);
        }
    }
    audit.record(Event::Alarm {
        message: "operator test".into(),
    });
    audit.shutdown("test over");
    assert!(!audit.healthy(), "a stopped audit admits nothing");

    let records = records(&dir.audit());
    for trace in &traces {
        assert!(
            records.iter().any(|r| r["trace_id"] == trace.as_str()),
            "{trace} missing"
        );
    }
    for kind in [
        "open", "start", "tls", "deny", "req", "res", "alarm", "stop", "seal",
    ] {
        assert!(!of_type(&records, kind).is_empty(), "no {kind} record");
    }
    let req = of_type(&records, "req")[0];
    assert_eq!(req["jwt"]["requesting_organization"], "FA123");
    assert_eq!(req["fingerprint"], "ab".repeat(32));
    let res = of_type(&records, "res")[0];
    assert_eq!(
        res["req_seq"],
        records.iter().find(|r| r["trace_id"] == res["trace_id"]).unwrap()["seq"]
    );
    // A clean stop ends with `stop` and the seal over it.
    let n = records.len();
    assert_eq!(
        (records[n - 2]["type"].as_str(), records[n - 1]["type"].as_str()),
        (Some("stop"), Some("seal"))
    );
    assert_eq!(verify(&dir, true, true), 0);
}

#[test]
fn every_record_links_to_the_one_before_and_seq_never_resets() {
    let dir = TempDir::new("restart");
    for round in 0..3 {
        let audit = Audit::start(settings(&dir, false)).unwrap();
        audit.record(deny(&format!("round-{round}")));
        audit.shutdown("restart");
    }
    let records = records(&dir.audit());
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["seq"], i as u64);
        let prev = if i == 0 {
            "0".repeat(64)
        } else {
            records[i - 1]["h"].as_str().unwrap().to_owned()
        };
        assert_eq!(r["prev"], prev.as_str());
    }
    let starts = of_type(&records, "start");
    assert_eq!(starts.len(), 3);
    assert_ne!(starts[0]["boot_id"], starts[1]["boot_id"]);
    assert_eq!(starts[0]["config_hash"], "07".repeat(32));
    assert_eq!(starts[0]["sealing"], false);
    assert_eq!(
        of_type(&records, "open").len(),
        1,
        "restarts continue the same file"
    );
    assert_eq!(verify(&dir, false, false), 0);
}

#[test]
fn a_durable_record_is_in_the_file_before_the_worker_is_told() {
    let dir = TempDir::new("durable");
    let audit = Audit::start(settings(&dir, false)).unwrap();
    let file = dir.audit().join("audit.jsonl");
    let seen: Arc<Mutex<Vec<bool>>> = Arc::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let notifier = {
        let seen = seen.clone();
        let file = file.clone();
        Notifier {
            replies: tx,
            wake: Arc::new(move || {
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                let last_trace = (0..20).rev().find(|i| text.contains(&format!("trace-{i}\"")));
                seen.lock().unwrap().push(last_trace.is_some());
            }),
        }
    };
    for i in 0..20 {
        audit.record_durable(req(&format!("trace-{i}")), i, &notifier);
    }
    let mut answers: Vec<_> = (0..20)
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    answers.sort_by_key(|d| d.ticket);
    let text = std::fs::read_to_string(&file).unwrap();
    for (i, answer) in answers.iter().enumerate() {
        let seq = answer.seq.expect("durable");
        let line = text
            .lines()
            .find(|l| l.contains(&format!("\"trace-{i}\"")))
            .unwrap();
        assert!(
            line.starts_with(&format!("{{\"seq\":{seq},")),
            "ticket {i} got seq {seq}: {line}"
        );
    }
    // The writer sends the answers, then wakes the worker: the wake may come after them.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    // A copy: the writer may still be waking (another batch of the 20), and its wake takes
    // this lock, so holding it across `shutdown`, which joins the writer, would deadlock.
    let seen = seen.lock().unwrap().clone();
    assert!(
        !seen.is_empty() && seen.iter().all(|s| *s),
        "woken before the record was written: {seen:?}"
    );
    audit.shutdown("test over");
}

#[test]
fn seals_are_written_on_time_even_when_idle_and_the_key_evolves() {
    let dir = TempDir::new("seals");
    keygen(&dir);
    let mut settings = settings(&dir, true);
    settings.seal_interval = Duration::from_millis(40);
    let audit = Audit::start(settings).unwrap();
    assert!(eventually(5, || of_type(&records(&dir.audit()), "seal").len() >= 3));
    audit.shutdown("test over");
    let records = records(&dir.audit());
    let seals = of_type(&records, "seal");
    let epochs: Vec<u64> = seals.iter().map(|s| s["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, (0..epochs.len() as u64).collect::<Vec<_>>());
    // The key file holds the next epoch only: every key that made a seal is gone.
    let key = std::fs::read_to_string(dir.key()).unwrap();
    assert!(
        key.starts_with(&format!("ssp-audit-key-v1 {} ", epochs.len())),
        "{key}"
    );
    assert_eq!(verify(&dir, true, true), 0);
}

#[test]
fn without_keys_there_are_no_seals_and_require_sealed_fails() {
    let dir = TempDir::new("nokeys");
    let audit = Audit::start(settings(&dir, false)).unwrap();
    audit.record(deny("t"));
    audit.shutdown("test over");
    assert!(of_type(&records(&dir.audit()), "seal").is_empty());
    assert_eq!(verify(&dir, false, false), 0);
    assert_eq!(verify(&dir, false, true), 2);
}

#[test]
fn a_configured_key_that_cannot_be_read_refuses_to_start() {
    let dir = TempDir::new("nokeyfile");
    let error = Audit::start(settings(&dir, true)).unwrap_err();
    assert_eq!(error.path, dir.key());
    std::fs::write(dir.key(), "not a key").unwrap();
    let error = Audit::start(settings(&dir, true)).unwrap_err();
    assert!(error.to_string().contains("not an audit key"), "{error}");
}

#[test]
fn sync_modes_sync_per_record_per_batch_or_never() {
    for (sync, label) in [
        (AuditSync::Always, "always"),
        (AuditSync::Batch, "batch"),
        (AuditSync::Off, "off"),
    ] {
        let dir = TempDir::new(label);
        let mut settings = settings(&dir, false);
        settings.sync = sync;
        let audit = Audit::start(settings).unwrap();
        let before = audit.stats();
        for i in 0..50 {
            audit.record(deny(&format!("t{i}")));
        }
        assert!(durable(&audit, req("last")).is_some());
        let after = audit.stats();
        let syncs = after.syncs - before.syncs;
        match sync {
            AuditSync::Always => assert!(syncs >= 51, "{label}: {syncs}"),
            AuditSync::Batch => assert!((1..51).contains(&syncs), "{label}: {syncs}"),
            AuditSync::Off => assert_eq!(syncs, 0, "{label}"),
        }
        assert_eq!(after.records - before.records, 51, "{label}");
        assert!(after.sync_seconds >= before.sync_seconds);
        audit.shutdown("test over");
        assert_eq!(verify(&dir, false, false), 0, "{label}");
    }
}

#[test]
fn records_are_single_lines_of_at_most_4_kib() {
    let dir = TempDir::new("long");
    let audit = Audit::start(settings(&dir, false)).unwrap();
    let mut facts = facts("long");
    let target = format!("/https://pecs.example.nhs.uk/{}", "x".repeat(20_000));
    facts.text = ssp::audit::RequestText::new(&ssp::audit::Text {
        target: &target,
        ..facts.text.get()
    });
    facts.subject = "CN=evil\nforged: line\r\n".repeat(100).into();
    audit.record(Event::Deny {
        request: facts.into(),
        status: 431,
        token: "REQUEST_HEADER_FIELDS_TOO_LARGE".into(),
        refusals: 1,
        outcome_id: ssp::http::answer::OutcomeId::ZERO,
    });
    audit.shutdown("test over");
    let text = std::fs::read_to_string(dir.audit().join("audit.jsonl")).unwrap();
    for line in text.lines() {
        assert!(line.len() < 4096, "{}", line.len());
    }
    let records = records(&dir.audit());
    let deny = of_type(&records, "deny")[0];
    assert_eq!(deny["truncated"], serde_json::json!(["target", "subject"]));
    assert!(deny["subject"].as_str().unwrap().starts_with("CN=evil\nforged"));
    assert_eq!(verify(&dir, false, false), 0);
}
