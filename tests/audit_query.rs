//! Issue 20 items 2 and 3: `ssp audit stats`, `ssp audit find` and the extracts `find --proof`
//! writes, on audit folders the writer made (rotated, sealed, with a crash-torn tail), and on
//! tampered copies of them.

#[path = "common/audit.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use ssp::audit::{Audit, Event, RequestFacts, RequestText, Text};
use ssp::config::AuditSync;

const A: &str = "200000000001";
const B: &str = "200000000002";
const SEARCH: &str = "urn:nhs:names:services:pecs:search";
const READ: &str = "urn:nhs:names:services:pecs:read";

/// The binary: exit code, stdout, stderr.
fn ssp(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ssp"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn facts_of(trace: &str, from: &str, interaction: &str, target: &str) -> RequestFacts {
    let mut facts = facts(trace);
    facts.text = RequestText::new(&Text {
        trace_id: Some(trace),
        from: Some(from),
        to: Some("200000000999"),
        interaction: Some(interaction),
        method: "GET",
        target,
    });
    facts
}

fn search(patient: &str) -> String {
    format!("/https://pecs.example.nhs.uk/Prescription-Exemptions/1.0.0/search?patient={patient}")
}

/// A request the writer records as the proxy does: `req` durable, then `res` naming it.
fn request(audit: &Audit, facts: RequestFacts, status: u16) {
    let facts = std::sync::Arc::new(facts);
    let seq = durable(
        audit,
        Event::Req {
            request: facts.clone(),
        },
    );
    audit.record(Event::Res {
        request: facts,
        req_seq: seq,
        status,
        token: None,
        outcome_id: None,
        bytes_in: 0,
        bytes_out: 100,
        duration_ms: 1.0,
        upstream_ms: Some(0.5),
    });
}

fn refused(audit: &Audit, facts: RequestFacts, status: u16, refusals: u64) {
    audit.record(Event::Deny {
        request: facts.into(),
        status,
        token: "T".into(),
        refusals,
        outcome_id: ssp::http::answer::OutcomeId::ZERO,
    });
}

/// A sealed, rotated folder with a crash-torn tail declared by the next start:
/// - A, search, patient 9000000009: 4 requests answered 200, and one refusal record standing
///   for 5 refusals (429);
/// - A, read, patient 9000000017: 2 answered 404;
/// - B, search, patient 9000000009: 3 answered 200; B, read: one refusal (403);
/// - a crash tears the last line; after the restart B, search, patient 9000000025 in a
///   percent-encoded identifier: 2 answered 200; A, search: 1 request never answered.
fn folder(label: &str) -> TempDir {
    let dir = TempDir::new(label);
    keygen(&dir);
    let mut settings = settings(&dir, true);
    settings.rotate_bytes = 4000;
    settings.seal_interval = Duration::from_millis(1);
    let audit = Audit::start(settings.clone()).unwrap();
    for i in 0..4 {
        let facts = facts_of(&format!("a-search-{i}"), A, SEARCH, &search("9000000009"));
        request(&audit, facts, 200);
    }
    refused(
        &audit,
        facts_of("a-storm", A, SEARCH, &search("9000000009")),
        429,
        5,
    );
    for i in 0..2 {
        let facts = facts_of(&format!("a-read-{i}"), A, READ, &search("9000000017"));
        request(&audit, facts, 404);
    }
    for i in 0..3 {
        let facts = facts_of(&format!("b-search-{i}"), B, SEARCH, &search("9000000009"));
        request(&audit, facts, 200);
    }
    refused(&audit, facts_of("b-read", B, READ, &search("9000000017")), 403, 1);
    audit.shutdown("test over");
    // The crash: half a record at the end of the active file.
    let active = dir.audit().join("audit.jsonl");
    let mut bytes = std::fs::read(&active).unwrap();
    bytes.extend_from_slice(b"{\"seq\":999,\"ts\":\"2026-03-21T10:04:05.123Z\",\"type\":\"req\",\"tr");
    std::fs::write(&active, bytes).unwrap();
    let audit = Audit::start(settings).unwrap();
    for i in 0..2 {
        let target = "/https://pecs.example.nhs.uk/Prescription-Exemptions/1.0.0/search?identifier=\
                      https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C9000000025";
        request(&audit, facts_of(&format!("b-later-{i}"), B, SEARCH, target), 200);
    }
    durable(
        &audit,
        Event::Req {
            request: facts_of("a-unanswered", A, SEARCH, &search("9000000033")).into(),
        },
    );
    audit.shutdown("test over");
    assert!(audit_files(&dir.audit()).len() >= 3);
    assert_eq!(of_type(&records(&dir.audit()), "torn").len(), 1);
    assert_eq!(verify(&dir, true, true), 0);
    dir
}

const BY_FROM_INTERACTION_STATUS: &str = "\
from,interaction,status,requests
200000000001,urn:nhs:names:services:pecs:read,404,2
200000000001,urn:nhs:names:services:pecs:search,,1
200000000001,urn:nhs:names:services:pecs:search,200,4
200000000001,urn:nhs:names:services:pecs:search,429,5
200000000002,urn:nhs:names:services:pecs:read,403,1
200000000002,urn:nhs:names:services:pecs:search,200,5
";

#[test]
fn stats_count_requests_from_the_verified_records_and_say_what_was_read() {
    let dir = folder("stats");
    let audit = dir.audit();
    let k0 = dir.k0();
    let (code, csv, err) = ssp(&[
        "audit",
        "stats",
        path(&audit),
        "--by",
        "from,interaction,status",
        "--key-file",
        path(&k0),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(csv, BY_FROM_INTERACTION_STATUS);
    let records = records(&audit).len();
    assert!(
        err.starts_with(&format!(
            "18 requests counted, every record sealed; {records} records read and verified (seq 0..{})",
            records - 1
        )),
        "{err}"
    );
    assert!(err.contains("the folder: intact;"), "{err}");

    let (code, json, _) = ssp(&["audit", "stats", path(&audit), "--format", "json"]);
    assert_eq!(code, Some(0));
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (&value["records"], &value["verified"], &value["requests"]),
        (
            &serde_json::json!(records),
            &serde_json::json!(true),
            &serde_json::json!(18)
        )
    );
    let today = &records_ts(&audit)[..10];
    let rows = value["rows"].as_array().unwrap();
    assert!(rows.iter().all(|r| r["day"] == today), "{json}");
    assert!(
        rows.contains(&serde_json::json!({"day": today, "from": A, "to": "200000000999",
            "interaction": SEARCH, "status": 429, "requests": 5})),
        "{json}"
    );

    let (code, _, err) = ssp(&["audit", "stats", path(&audit), "--by", "day,patient"]);
    assert_eq!(code, Some(3));
    assert!(err.contains("\"patient\" is not one of day, from, to"), "{err}");
}

fn records_ts(audit: &Path) -> String {
    records(audit)[0]["ts"].as_str().unwrap().to_owned()
}

#[test]
fn stats_on_a_tampered_folder_count_only_what_a_seal_before_the_tampering_covers() {
    let dir = TempDir::new("stats-tampered");
    keygen(&dir);
    // Two runs, each sealed only at its clean stop: a request answered 200 and a record of
    // refusals (3, then 7).
    for refusals in [3, 7] {
        let audit = Audit::start(settings(&dir, true)).unwrap();
        request(&audit, facts_of("r", A, SEARCH, &search("9000000009")), 200);
        refused(
            &audit,
            facts_of("d", B, READ, &search("9000000017")),
            429,
            refusals,
        );
        audit.shutdown("test over");
    }
    let stats = || ssp(&["audit", "stats", path(&dir.audit()), "--by", "from,status"]);
    let (code, csv, err) = stats();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        csv,
        "from,status,requests\n200000000001,200,2\n200000000002,429,10\n"
    );
    // The second run's refusals made 70: that record no longer verifies, and the request
    // before it, which no seal covers, is not counted either.
    let active = dir.audit().join("audit.jsonl");
    let text = std::fs::read_to_string(&active).unwrap();
    std::fs::write(&active, text.replace("\"refusals\":7,", "\"refusals\":70,")).unwrap();
    let (code, csv, err) = stats();
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(
        csv,
        "from,status,requests\n200000000001,200,1\n200000000002,429,3\n"
    );
    assert!(
        err.starts_with("4 requests counted, only from records sealed before the tampering"),
        "{err}"
    );
    assert!(err.contains("the folder: TAMPERED"), "{err}");
}

#[test]
fn find_prints_the_records_of_the_requests_that_match() {
    let dir = folder("find");
    let audit = dir.audit();
    let find = |filters: &[&str]| {
        let mut args = vec!["audit", "find", path(&audit)];
        args.extend_from_slice(filters);
        let (code, out, err) = ssp(&args);
        assert_eq!(code, Some(0), "{filters:?}: {err}");
        let found: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert!(
            err.starts_with(&format!("{} records found;", found.len())),
            "{err}"
        );
        found
    };
    let kinds = |found: &[serde_json::Value]| -> Vec<String> {
        found
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r["type"].as_str().unwrap(),
                    r["trace_id"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(
        kinds(&find(&["--trace-id", "a-read-1"])),
        ["req a-read-1", "res a-read-1"]
    );
    // A patient's accesses: requests naming them, with their answers, and refusals.
    let patient = find(&["--subject", "9000000009"]);
    assert_eq!(patient.len(), 4 * 2 + 1 + 3 * 2, "{:?}", kinds(&patient));
    assert!(kinds(&patient).contains(&"deny a-storm".to_owned()));
    assert_eq!(
        kinds(&find(&["--subject", "9000000025"])),
        ["req b-later-0", "res b-later-0", "req b-later-1", "res b-later-1"]
    );
    assert!(find(&["--subject", "900000002"]).is_empty());
    // A status is carried by `res` and `deny` records.
    assert_eq!(
        kinds(&find(&["--status", "404"])),
        ["res a-read-0", "res a-read-1"]
    );
    assert_eq!(
        kinds(&find(&["--from", B, "--interaction", READ, "--status", "403"])),
        ["deny b-read"]
    );
    assert_eq!(
        find(&["--from", B, "--to", "200000000999"]).len(),
        3 * 2 + 1 + 2 * 2
    );
    let ts = records_ts(&audit);
    // 12 `req`, 11 `res` and 2 `deny` records.
    assert_eq!(find(&["--since", &ts[..10], "--until", &ts[..10]]).len(), 25);
    assert!(find(&["--until", "2000-01-01"]).is_empty());
    assert_eq!(
        kinds(&find(&["--trace-id", "a-unanswered"])),
        ["req a-unanswered"]
    );

    let (code, _, err) = ssp(&["audit", "find", path(&audit), "--since", "yesterday"]);
    assert_eq!(code, Some(3));
    assert!(
        err.contains("\"yesterday\" is not a UTC time like 2026-03-21"),
        "{err}"
    );
}

/// `find FILTERS --key-file K0 --proof OUT` on `dir`: exit code and stderr.
fn prove(dir: &TempDir, filters: &[&str], out: &Path) -> (Option<i32>, String) {
    let (audit, k0) = (dir.audit(), dir.k0());
    let mut args = vec!["audit", "find", path(&audit)];
    args.extend_from_slice(filters);
    args.extend(["--key-file", path(&k0), "--proof", path(out)]);
    let (code, _, err) = ssp(&args);
    (code, err)
}

fn verify_extract(extract: &Path, k0: &Path) -> (Option<i32>, String) {
    let (code, out, err) = ssp(&["audit", "verify-extract", path(extract), "--key-file", path(k0)]);
    (code, out + &err)
}

#[test]
fn an_extract_proves_its_records_with_the_initial_key_alone() {
    let dir = folder("extract");
    let extract = dir.path().join("patient.extract");
    let (code, err) = prove(&dir, &["--subject", "9000000009"], &extract);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("extract"), "{err}");
    assert!(
        err.contains(": 15 records with the seals that prove them"),
        "{err}"
    );
    // Another machine: only the extract and the initial key.
    let elsewhere = TempDir::new("elsewhere");
    let (copy, k0) = (elsewhere.path().join("x"), elsewhere.path().join("k0"));
    std::fs::copy(&extract, &copy).unwrap();
    std::fs::copy(dir.k0(), &k0).unwrap();
    drop(dir);
    let (code, out) = verify_extract(&copy, &k0);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("intact: 15 records, seq "), "{out}");
    assert!(
        out.contains("chosen by: ssp audit find --subject 9000000009"),
        "{out}"
    );

    // It never names another patient: the records between are links.
    let text = std::fs::read_to_string(&copy).unwrap();
    assert!(!text.contains("9000000017") && !text.contains("b-read"), "{text}");
    assert!(text.contains("{\"link\":"), "{text}");
}

#[test]
fn an_extract_changed_cut_reordered_or_from_another_box_fails() {
    let dir = folder("extract-bad");
    let extract = dir.path().join("a.extract");
    assert_eq!(prove(&dir, &["--from", A], &extract).0, Some(0));
    let good: Vec<String> = std::fs::read_to_string(&extract)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let record_lines: Vec<usize> = (0..good.len())
        .filter(|&i| good[i].starts_with("{\"seq\":"))
        .collect();
    let req = record_lines
        .iter()
        .copied()
        .find(|&i| good[i].contains("\"type\":\"req\""))
        .unwrap();
    let bad = dir.path().join("bad.extract");
    let fails = |lines: &[String], k0: &Path, what: &str| {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&bad, text).unwrap();
        let (code, out) = verify_extract(&bad, k0);
        assert_eq!(code, Some(1), "{what}: {out}");
        assert!(out.starts_with("TAMPERED: "), "{what}: {out}");
    };
    let mut changed = good.clone();
    changed[req] = changed[req].replace("9000000009", "9000000010");
    fails(&changed, &dir.k0(), "a record changed");
    for &i in &record_lines {
        let mut dropped = good.clone();
        dropped.remove(i);
        fails(&dropped, &dir.k0(), &format!("line {} dropped", i + 1));
    }
    let mut reordered = good.clone();
    reordered.swap(req, req + 1);
    fails(&reordered, &dir.k0(), "two lines swapped");
    let mut moved = good.clone();
    let line = moved.remove(req);
    moved.insert(moved.len() - 1, line);
    fails(&moved, &dir.k0(), "a record moved to the end");

    // Another box: its own genuine extract, checked with this box's initial key.
    let other = folder("extract-other");
    let theirs = other.path().join("theirs.extract");
    assert_eq!(prove(&other, &["--from", A], &theirs).0, Some(0));
    assert_eq!(verify_extract(&theirs, &other.k0()).0, Some(0));
    let (code, out) = verify_extract(&theirs, &dir.k0());
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("does not verify with the initial key"), "{out}");
    assert_eq!(verify_extract(&extract, &dir.k0()).0, Some(0), "the genuine one");
}

#[test]
fn find_proof_needs_the_key_never_overwrites_and_leaves_out_what_no_seal_covers() {
    let dir = folder("extract-args");
    let out = dir.path().join("x.extract");
    let (audit, k0) = (dir.audit(), dir.k0());
    let (code, _, err) = ssp(&["audit", "find", path(&audit), "--proof", path(&out)]);
    assert_eq!(code, Some(3));
    assert!(err.contains("--proof needs --key-file K0"), "{err}");
    std::fs::write(&out, "keep me").unwrap();
    assert_eq!(prove(&dir, &["--from", A], &out).0, Some(3));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep me");
    std::fs::remove_file(&out).unwrap();

    // A record after the last seal: what followed the unanswered request cut away.
    let active = audit.join("audit.jsonl");
    let text = std::fs::read_to_string(&active).unwrap();
    let last = text.lines().position(|l| l.contains("a-unanswered")).unwrap();
    let kept: String = text.lines().take(last + 1).map(|l| format!("{l}\n")).collect();
    std::fs::write(&active, kept).unwrap();
    let (code, err) = prove(&dir, &["--trace-id", "a-unanswered"], &out);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("1 records found after the last seal are not in it"),
        "{err}"
    );
    let (code, out) = verify_extract(&out, &k0);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("intact: 0 records"), "{out}");
}

#[test]
fn an_extract_of_one_record_from_a_large_folder_is_small() {
    let dir = TempDir::new("extract-size");
    keygen(&dir);
    let mut settings = settings(&dir, true);
    settings.sync = AuditSync::Off;
    settings.rotate_bytes = 1 << 20;
    settings.seal_interval = Duration::from_millis(5);
    let audit = Audit::start(settings).unwrap();
    for i in 0..4000 {
        let patient = format!("{:010}", 9_100_000_000u64 + i);
        request(
            &audit,
            facts_of(&format!("t-{i}"), A, SEARCH, &search(&patient)),
            200,
        );
    }
    audit.shutdown("test over");
    let folder: u64 = audit_files(&dir.audit())
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    let extract = dir.path().join("one.extract");
    let (code, err) = prove(&dir, &["--subject", "9100002000"], &extract);
    assert_eq!(code, Some(0), "{err}");
    let size = std::fs::metadata(&extract).unwrap().len();
    let seals = of_type(&records(&dir.audit()), "seal").len();
    eprintln!("folder {folder} bytes, {seals} seals; extract {size} bytes");
    assert!(folder > 3_000_000, "{folder}");
    assert!(size < 64 * 1024 && size * 100 < folder, "{size} of {folder}");
    assert_eq!(verify_extract(&extract, &dir.k0()).0, Some(0));
}
