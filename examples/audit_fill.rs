//! Fills an audit folder with the real writer, for measuring `ssp audit find`, `stats` and
//! `verify` on a large folder (README, "Audit").
//!
//!     cargo run --release --example audit_fill -- DIR RECORDS [SEAL_MS]
//!
//! Writes `DIR/k0` (the initial key), `DIR/audit.key` and `DIR/audit/`: requests as the proxy
//! records them (a durable `req`, then its `res` naming it), from 20 consumers to 3
//! providers over 2 interactions, a patient in each target, a refusal record (of 1 to 40
//! refusals) every 50th request; `sync = "off"`, files rotated at 64 MiB, a seal every SEAL_MS
//! milliseconds (default 60000, as `[audit] seal_interval`), until RECORDS records are written.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use ssp::audit::{Audit, Durable, Event, Notifier, RequestFacts, RequestText, Settings, Text};
use ssp::config::AuditSync;
use ssp::policy::jwt::Claims;

const INTERACTIONS: [&str; 2] = [
    "urn:nhs:names:services:prescription-exemptions:custom:operation:search:prescription-exemptions",
    "urn:nhs:names:services:gpconnect:fhir:rest:read:metadata-1",
];

fn facts(i: u64) -> RequestFacts {
    let trace_id = format!("5b6f3f8e-7a1d-4c1e-9d3a-{i:012}");
    let from = format!("2000000000{:02}", i % 20);
    let to = format!("20000000099{}", i % 3);
    let target = format!(
        "/https://pecs.example.nhs.uk/Prescription-Exemptions/1.0.0/search?patient={}",
        9_000_000_000 + i % 1_000_000
    );
    RequestFacts {
        text: RequestText::new(&Text {
            trace_id: Some(&trace_id),
            from: Some(&from),
            to: Some(&to),
            interaction: Some(INTERACTIONS[usize::from(i.is_multiple_of(7))]),
            method: "GET",
            target: &target,
        }),
        peer: SocketAddr::from(([10, 0, 0, (i % 20) as u8], 50000)),
        subject: format!("CN=dispenser-{}.example.nhs.uk, OU=Devices, O=nhs", i % 20).into(),
        issuer: "CN=NHS Level 1C, O=nhs".into(),
        serial: "0d1a73eddbefc3dce5ee89ec7b4266af".into(),
        fingerprint: "f".repeat(64).into(),
        claims: Some(Claims {
            iss: Some("https://dispenser.example.nhs.uk".into()),
            sub: Some("user-1".into()),
            requesting_organization: Some("FA123".into()),
            requesting_practitioner: Some("pract-1".into()),
            reason_for_request: Some("directcare".into()),
            ..Claims::default()
        }),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(dir), Some(Ok(records))) = (args.first(), args.get(1).map(|n| n.parse::<u64>())) else {
        eprintln!("usage: audit_fill DIR RECORDS [SEAL_MS]");
        std::process::exit(2);
    };
    let seal_ms = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(60_000);
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("DIR");
    let key = dir.join("audit.key");
    assert_eq!(ssp::audit::cli::keygen(&key), 0, "keygen");
    std::fs::copy(&key, dir.join("k0")).expect("k0");
    let audit = Audit::start(Settings {
        dir: dir.join("audit"),
        key: Some(key),
        sync: AuditSync::Off,
        rotate_bytes: 64 << 20,
        seal_interval: Duration::from_millis(seal_ms),
        config_hash: [0; 32],
        version: "audit_fill",
    })
    .expect("audit");
    let (tx, rx) = mpsc::channel::<Durable>();
    let notifier = Notifier {
        replies: tx,
        wake: Arc::new(|| {}),
    };
    let started = Instant::now();
    let (mut i, mut written) = (0u64, 0u64);
    // Batches of durable `req` records, then their `res` records: the writer is never idle.
    while written < records {
        let batch: Vec<Arc<RequestFacts>> = (i..i + 1000).map(|n| Arc::new(facts(n))).collect();
        for (n, request) in batch.iter().enumerate() {
            let event = Event::Req {
                request: request.clone(),
            };
            audit.record_durable(event, n as u64, &notifier);
        }
        for _ in 0..batch.len() {
            let answer = rx.recv().expect("an answer");
            let Some(request) = usize::try_from(answer.ticket).ok().and_then(|t| batch.get(t)) else {
                continue;
            };
            audit.record(Event::Res {
                request: request.clone(),
                req_seq: answer.seq,
                status: if answer.ticket.is_multiple_of(9) { 404 } else { 200 },
                token: None,
                outcome_id: None,
                bytes_in: 0,
                bytes_out: 1234,
                duration_ms: 12.5,
                upstream_ms: Some(10.25),
            });
        }
        audit.record(Event::Deny {
            request: Arc::new(facts(i + 1_000_000_000)),
            status: 429,
            token: "THROTTLED_MESSAGESENDER_200000000001".into(),
            refusals: 1 + i % 40,
            outcome_id: ssp::http::answer::OutcomeId::ZERO,
        });
        i += 1000;
        written += 2001;
    }
    audit.shutdown("filled");
    eprintln!(
        "{written} records (and the writer's own) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
