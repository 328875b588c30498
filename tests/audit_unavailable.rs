//! SPEC section 4 row 16 through the proxy: while the audit cannot be written nothing is
//! admitted (503 AUDIT_UNAVAILABLE, nothing reaches the provider), `/readyz`'s source says so,
//! and admission resumes by itself when writing works again.

mod common;
#[path = "common/tmpfs.rs"]
mod tmpfs;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn full_disk_refuses_admission_and_service_resumes_when_space_returns() {
    let setup = Setup::new(&Options::default());
    let audit_dir = setup.dir.path().join("audit");
    let Some(_mount) = tmpfs::tmpfs(&audit_dir, "256k") else {
        return;
    };
    let proxy = Proxy::on(setup);
    let mut consumer = proxy.consumer(&CONSUMER_A);
    assert_eq!(consumer.exchange(&proxy.get()).status, 200);

    let filler = tmpfs::fill(&audit_dir);
    let mut refused = None;
    // The first write into the full disk fails; from then on nothing is admitted.
    for _ in 0..20 {
        let r = proxy.consumer(&CONSUMER_A).exchange(&proxy.get());
        if r.status == 503 {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status, 200);
    }
    let refused = refused.expect("a 503 once the audit cannot be written");
    assert_outcome(&refused, 503, "transient", "AUDIT_UNAVAILABLE", Some(TRACE_ID));
    assert!(!proxy.runtime.audit.healthy());
    let forwarded = proxy.seen().len();
    assert_eq!(proxy.consumer(&CONSUMER_A).exchange(&proxy.get()).status, 503);
    assert_eq!(
        proxy.seen().len(),
        forwarded,
        "nothing reaches the provider unaudited"
    );

    std::fs::remove_file(filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = proxy.consumer(&CONSUMER_A).exchange(&proxy.get());
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "admission never resumed: {}", r.status);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(proxy.runtime.audit.healthy());

    proxy.stop();
    let out = Command::new(env!("CARGO_BIN_EXE_ssp"))
        .args(["audit", "verify"])
        .arg(&audit_dir)
        .arg("--key-file")
        .arg(proxy.dir().join("audit.k0"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The audit accounts for every request the provider received, and each has its `res`.
    let text: String = std::fs::read_dir(&audit_dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    let count = |kind: &str| {
        text.lines()
            .filter(|l| l.contains(&format!("\"type\":\"{kind}\"")))
            .count()
    };
    assert_eq!(count("req"), proxy.seen().len(), "one req per forwarded request");
    assert_eq!(count("res"), count("req"), "every req has its res");
}
