//! SPEC section 5 through the proxy: every request leaves a record, the `req` record is
//! durable before the provider sees the request, and the directory verifies with the key.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ssp::demo::provider::{Handler, Reply, SeenRequest};

fn audit_text(proxy: &Proxy) -> String {
    std::fs::read_to_string(proxy.dir().join("audit/audit.jsonl")).unwrap()
}

fn records(proxy: &Proxy) -> Vec<serde_json::Value> {
    audit_text(proxy)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

const OTHER_TRACE: &str = "0f0e0d0c-0b0a-4998-8776-655443322110";

#[test]
fn allowed_refused_and_handshake_refusals_are_recorded_and_the_chain_verifies() {
    let proxy = Proxy::start();
    assert_eq!(proxy.consumer(&CONSUMER_A).exchange(&proxy.get()).status, 200);
    let refused = proxy
        .get()
        .set("Ssp-From", CONSUMER_B.asid)
        .set("Ssp-TraceID", OTHER_TRACE);
    assert_eq!(proxy.consumer(&CONSUMER_B).exchange(&refused).status, 403);
    let mut revoked = proxy.consumer(&REVOKED);
    assert!(
        revoked
            .send(&proxy.get())
            .and_then(|_| revoked.read_response())
            .is_err()
    );
    // The worker records the refused handshake just after its alert went out, so the consumer
    // can see the alert first: wait for the record before stopping the audit.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !audit_text(&proxy).contains("\"type\":\"tls\"") {
        assert!(Instant::now() < deadline, "no tls record within 5 s");
        std::thread::sleep(Duration::from_millis(20));
    }

    proxy.stop();

    let all = records(&proxy);
    let of_type = |t: &str| all.iter().filter(|r| r["type"] == t).collect::<Vec<_>>();
    assert_eq!(of_type("start").len(), 1);
    let req = of_type("req");
    assert_eq!(req.len(), 1);
    assert_eq!(req[0]["trace_id"], TRACE_ID);
    let res = of_type("res");
    assert_eq!(res.len(), 1);
    assert_eq!(res[0]["status"], 200);
    let deny = of_type("deny");
    assert_eq!(deny.len(), 1);
    assert_eq!(deny[0]["trace_id"], OTHER_TRACE);
    assert_eq!(deny[0]["status"], 403);
    assert!(
        deny[0]["token"]
            .as_str()
            .unwrap()
            .starts_with("FOT_CHECK_FAILED_MESSAGESENDER_")
    );
    assert_eq!(of_type("tls").len(), 1, "the revoked certificate's handshake");
    assert!(!of_type("seal").is_empty(), "shutdown seals");
    // `stop`, then a seal over it, so the end of the chain is sealed too.
    assert_eq!(all[all.len() - 2]["type"], "stop");
    assert_eq!(all[all.len() - 1]["type"], "seal");

    let out = Command::new(env!("CARGO_BIN_EXE_ssp"))
        .args(["audit", "verify"])
        .arg(proxy.dir().join("audit"))
        .arg("--key-file")
        .arg(proxy.dir().join("audit.k0"))
        .arg("--require-sealed")
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{summary}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ssp audit ARGS...`, which must succeed: its stdout.
fn audit_command(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ssp"))
        .arg("audit")
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_proxys_audit_is_found_proved_and_counted() {
    let proxy = Proxy::start();
    assert_eq!(proxy.consumer(&CONSUMER_A).exchange(&proxy.get()).status, 200);
    let refused = proxy
        .get()
        .set("Ssp-From", CONSUMER_B.asid)
        .set("Ssp-TraceID", OTHER_TRACE);
    assert_eq!(proxy.consumer(&CONSUMER_B).exchange(&refused).status, 403);
    proxy.stop();
    let (audit, k0) = (proxy.dir().join("audit"), proxy.dir().join("audit.k0"));
    let extract = proxy.dir().join("trace.extract");
    let os = |s: &'static str| std::ffi::OsStr::new(s);

    let found = audit_command(&[
        os("find"),
        audit.as_os_str(),
        os("--trace-id"),
        os(TRACE_ID),
        os("--key-file"),
        k0.as_os_str(),
        os("--proof"),
        extract.as_os_str(),
    ]);
    let types: Vec<String> = found
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["type"].to_string())
        .collect();
    assert_eq!(types, ["\"req\"", "\"res\""], "{found}");
    let checked = audit_command(&[
        os("verify-extract"),
        extract.as_os_str(),
        os("--key-file"),
        k0.as_os_str(),
    ]);
    assert!(checked.starts_with("intact: 2 records"), "{checked}");

    let csv = audit_command(&[os("stats"), audit.as_os_str(), os("--by"), os("from,status")]);
    assert_eq!(
        csv,
        format!(
            "from,status,requests\n{},200,1\n{},403,1\n",
            CONSUMER_A.asid, CONSUMER_B.asid
        )
    );
}

#[test]
fn req_record_is_durable_before_the_provider_sees_the_request() {
    // The provider looks in the audit file for the request it is handed.
    let audit_file = Arc::new(std::sync::Mutex::new(None::<std::path::PathBuf>));
    let looked_up = audit_file.clone();
    let handler: Handler = Arc::new(move |req: &SeenRequest| {
        let path = looked_up.lock().unwrap().clone().expect("audit path set");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let trace = req.field("ssp-traceid").unwrap_or("");
        let recorded = text
            .lines()
            .any(|l| l.contains("\"type\":\"req\"") && l.contains(trace));
        Reply::json(if recorded { 200 } else { 500 }, "{}")
    });
    let proxy = Proxy::with(Options {
        handler,
        ..Options::default()
    });
    *audit_file.lock().unwrap() = Some(proxy.dir().join("audit/audit.jsonl"));
    let mut consumer = proxy.consumer(&CONSUMER_A);
    for i in 0..5 {
        let trace = format!("5b6f3f8e-7a1d-4c1e-9d3a-2f0b6c1e8a4{i}");
        let r = consumer.exchange(&proxy.get().set("Ssp-TraceID", &trace));
        assert_eq!(
            r.status, 200,
            "request {i} reached the provider before its req record"
        );
    }
}

/// The `id` of every answer the proxy makes itself is fresh, and its audit record names it: a
/// consumer quoting the id to support finds the record (a `deny` for a refusal, the `res` for a
/// provider failure). XML answers carry it too.
#[test]
fn the_id_of_our_own_answer_is_in_its_audit_record() {
    let proxy = Proxy::with(Options {
        dead_provider: true,
        ..Options::default()
    });
    let refused = proxy.get().set("Ssp-From", CONSUMER_B.asid);
    let json = proxy.consumer(&CONSUMER_B).exchange(&refused);
    let xml = proxy
        .consumer(&CONSUMER_B)
        .exchange(&refused.clone().set("Accept", "application/fhir+xml"));
    let failed = proxy.consumer(&CONSUMER_A).exchange(&proxy.get());
    assert_eq!((json.status, xml.status, failed.status), (403, 403, 502));
    proxy.stop();

    let json_id = json.json()["id"].as_str().unwrap().to_string();
    let xml_text = xml.text();
    let xml_id = xml_text
        .split("<id value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no id in {xml_text}"))
        .to_string();
    let failed_id = failed.json()["id"].as_str().unwrap().to_string();
    for id in [&json_id, &xml_id, &failed_id] {
        assert!(is_uuid(id), "{id}");
    }
    assert!(
        json_id != xml_id && xml_id != failed_id,
        "ids are fresh per answer"
    );

    let all = records(&proxy);
    let named = |id: &str| all.iter().filter(|r| r["outcome_id"] == id).collect::<Vec<_>>();
    for id in [&json_id, &xml_id] {
        let found = named(id);
        assert_eq!(found.len(), 1, "{id}");
        assert_eq!(
            (found[0]["type"].as_str(), found[0]["status"].as_u64()),
            (Some("deny"), Some(403))
        );
    }
    let found = named(&failed_id);
    assert_eq!(found.len(), 1, "{failed_id}");
    assert_eq!(
        (found[0]["type"].as_str(), found[0]["status"].as_u64()),
        (Some("res"), Some(502))
    );
}
