//! Helpers for the audit tests (`tests/audit_*.rs`): fresh directories, events, notifiers, and
//! reading back what the writer wrote. Included with `#[path]` so that the audit tests do not
//! build the proxy harness they do not use.

// Each test binary uses a different part of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ssp::audit::cli::VerifyOptions;
use ssp::audit::{Audit, Durable, Event, Notifier, RequestFacts, RequestText, Settings, Text};
use ssp::config::AuditSync;
use ssp::policy::jwt::Claims;

/// A directory under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let n = N.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("ssp-audit-{label}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The audit directory inside (the key lives beside it, not in it).
    pub fn audit(&self) -> PathBuf {
        self.0.join("audit")
    }

    pub fn key(&self) -> PathBuf {
        self.0.join("audit.key")
    }

    /// The initial key, as the auditor keeps it.
    pub fn k0(&self) -> PathBuf {
        self.0.join("k0")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs keygen into `dir.key()` and keeps a copy of the initial key as `dir.k0()`.
pub fn keygen(dir: &TempDir) {
    assert_eq!(ssp::audit::cli::keygen(&dir.key()), 0);
    std::fs::copy(dir.key(), dir.k0()).unwrap();
}

pub fn settings(dir: &TempDir, keyed: bool) -> Settings {
    Settings {
        dir: dir.audit(),
        key: keyed.then(|| dir.key()),
        sync: AuditSync::Batch,
        rotate_bytes: 64 << 20,
        seal_interval: Duration::from_secs(3600),
        config_hash: [7; 32],
        version: "test",
    }
}

pub fn facts(trace_id: &str) -> RequestFacts {
    RequestFacts {
        text: RequestText::new(&Text {
            trace_id: Some(trace_id),
            from: Some("200000000001"),
            to: Some("200000000999"),
            interaction: Some("urn:nhs:names:services:prescription-exemptions:custom:operation:search"),
            method: "GET",
            target: "/https://pecs.example.nhs.uk/Prescription-Exemptions/1.0.0/search?patient=9000000009",
        }),
        peer: "10.1.2.3:50000".parse().unwrap(),
        subject: "CN=dispenser-a.example.nhs.uk, OU=Devices, O=nhs".into(),
        issuer: "CN=NHS Level 1C, O=nhs".into(),
        serial: "1a2b3c".into(),
        fingerprint: "ab".repeat(32).into(),
        claims: Some(Claims {
            iss: Some("https://dispenser-a.example.nhs.uk".into()),
            sub: Some("user-1".into()),
            requesting_organization: Some("FA123".into()),
            requesting_practitioner: Some("pract-1".into()),
            reason_for_request: Some("directcare".into()),
            ..Claims::default()
        }),
    }
}

pub fn req(trace_id: &str) -> Event {
    Event::Req {
        request: facts(trace_id).into(),
    }
}

pub fn deny(trace_id: &str) -> Event {
    Event::Deny {
        request: facts(trace_id).into(),
        status: 403,
        token: "ASID_CHECK_FAILED_MESSAGESENDER_200000000001".into(),
        refusals: 1,
        outcome_id: ssp::http::answer::OutcomeId::from_random([1; 16]),
    }
}

pub fn res(trace_id: &str, req_seq: Option<u64>) -> Event {
    Event::Res {
        request: facts(trace_id).into(),
        req_seq,
        status: 200,
        token: None,
        outcome_id: None,
        bytes_in: 0,
        bytes_out: 1234,
        duration_ms: 12.5,
        upstream_ms: Some(10.25),
    }
}

pub fn tls() -> Event {
    Event::Tls {
        peer: "10.9.9.9:4444".parse().unwrap(),
        reason: "certificate revoked".into(),
        certificate: None,
    }
}

/// A notifier like a worker's: replies on a channel, wakes count calls.
pub struct Waiter {
    pub notifier: Notifier,
    pub replies: mpsc::Receiver<Durable>,
    pub wakes: Arc<AtomicUsize>,
}

pub fn waiter() -> Waiter {
    let (tx, rx) = mpsc::channel();
    let wakes = Arc::new(AtomicUsize::new(0));
    let counter = wakes.clone();
    let notifier = Notifier {
        replies: tx,
        wake: Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }),
    };
    Waiter {
        notifier,
        replies: rx,
        wakes,
    }
}

impl Waiter {
    pub fn next(&self) -> Durable {
        self.replies
            .recv_timeout(Duration::from_secs(10))
            .expect("a durable answer within 10 s")
    }
}

/// Records `event` durably and returns its seq (or None).
pub fn durable(audit: &Audit, event: Event) -> Option<u64> {
    let w = waiter();
    audit.record_durable(event, 1, &w.notifier);
    let answer = w.next();
    assert_eq!(answer.ticket, 1);
    answer.seq
}

/// Every audit file in `dir`, oldest first by the seq in the name (`audit.jsonl` last).
pub fn audit_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            if name == "audit.jsonl" {
                return Some((u64::MAX, p));
            }
            let seq = name
                .strip_prefix("audit-")?
                .strip_suffix(".jsonl")?
                .rsplit('-')
                .next()?
                .parse()
                .ok()?;
            Some((seq, p))
        })
        .collect();
    files.sort();
    files.into_iter().map(|(_, p)| p).collect()
}

/// Every record in `dir`, in chain order, as JSON.
pub fn records(dir: &Path) -> Vec<serde_json::Value> {
    audit_files(dir)
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", p.display())))
                .collect::<Vec<_>>()
        })
        .collect()
}

pub fn of_type<'a>(records: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    records.iter().filter(|r| r["type"] == kind).collect()
}

/// `ssp audit verify` in process.
pub fn verify(dir: &TempDir, keyed: bool, require_sealed: bool) -> u8 {
    let k0 = dir.k0();
    let options = VerifyOptions {
        key_file: keyed.then_some(k0.as_path()),
        require_sealed,
        ..VerifyOptions::default()
    };
    ssp::audit::cli::verify(&dir.audit(), &options)
}

/// `ssp audit verify DIR [--key-file K0]` in process, on any folder.
pub fn verify_folder(dir: &Path, key_file: Option<&Path>) -> u8 {
    let options = VerifyOptions {
        key_file,
        ..VerifyOptions::default()
    };
    ssp::audit::cli::verify(dir, &options)
}

/// Polls `check` until it is true or `secs` pass.
pub fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// Copies every file of `from` into a new directory `to` (flat: the audit directory has no
/// subdirectories).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A sealed, rotated audit directory written by the real writer: `requests` requests (a
/// durable `req` and its `res` each), small files, a seal in each; it verifies as intact.
pub fn rotated_set(label: &str, requests: usize) -> TempDir {
    let dir = TempDir::new(label);
    keygen(&dir);
    let mut settings = settings(&dir, true);
    settings.rotate_bytes = 3000;
    settings.seal_interval = Duration::from_millis(1);
    let audit = Audit::start(settings).unwrap();
    for i in 0..requests {
        let trace = format!("trace-{i}");
        let seq = durable(&audit, req(&trace));
        audit.record(res(&trace, seq));
    }
    audit.shutdown("test over");
    assert_eq!(verify(&dir, true, true), 0);
    dir
}

/// A fresh copy of `original`'s audit, its initial key and its current key, to tamper with.
pub fn copy_of(original: &TempDir, label: &str) -> TempDir {
    let copy = TempDir::new(label);
    copy_dir(&original.audit(), &copy.audit());
    std::fs::copy(original.k0(), copy.k0()).unwrap();
    std::fs::copy(original.key(), copy.key()).unwrap();
    copy
}
