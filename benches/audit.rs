//! Audit records per second for each `sync` mode: 1,000 `req`-like records queued at once by
//! four "workers", timed until the last is durable. `cargo bench --bench audit`

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ssp::audit::{Audit, Durable, Event, Notifier, RequestFacts, RequestText, Settings, Text};
use ssp::config::AuditSync;

const RECORDS: u64 = 1_000;

fn facts(i: u64) -> RequestFacts {
    let trace_id = format!("5b6f3f8e-7a1d-4c1e-9d3a-{i:012}");
    RequestFacts {
        text: RequestText::new(&Text {
            trace_id: Some(&trace_id),
            from: Some("200000000001"),
            to: Some("200000000999"),
            interaction: Some(
                "urn:nhs:names:services:prescription-exemptions:custom:operation:search:prescription-exemptions",
            ),
            method: "GET",
            target: "/https://pecs.example.nhs.uk/Prescription-Exemptions/1.0.0/search?patient=9000000009",
        }),
        peer: SocketAddr::from(([10, 0, 0, 1], 50000)),
        subject: "CN=dispenser-a.example.nhs.uk, OU=Devices, O=nhs".into(),
        issuer: "CN=SSP Test NHS Level 1C, O=nhs".into(),
        serial: "0d1a73eddbefc3dce5ee89ec7b4266af".into(),
        fingerprint: "f".repeat(64).into(),
        claims: None,
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("audit records durable");
    group.throughput(Throughput::Elements(RECORDS));
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    for (name, sync) in [
        ("sync=always", AuditSync::Always),
        ("sync=batch", AuditSync::Batch),
        ("sync=off", AuditSync::Off),
    ] {
        let dir = std::env::temp_dir().join(format!("ssp-bench-audit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let audit = Audit::start(Settings {
            dir: dir.clone(),
            key: None,
            sync,
            rotate_bytes: 1 << 30,
            seal_interval: Duration::from_secs(3600),
            config_hash: [0; 32],
            version: "bench",
        })
        .expect("audit");
        let (tx, rx) = mpsc::channel::<Durable>();
        let notifier = Notifier {
            replies: tx,
            wake: Arc::new(|| {}),
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                for i in 0..RECORDS {
                    audit.record_durable(
                        Event::Req {
                            request: facts(i).into(),
                        },
                        i,
                        &notifier,
                    );
                }
                for _ in 0..RECORDS {
                    black_box(rx.recv().expect("an answer").seq.expect("durable"));
                }
            })
        });
        audit.shutdown("bench over");
        let _ = std::fs::remove_dir_all(&dir);
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
