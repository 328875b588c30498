//! SPEC section 5, fail closed: when the audit cannot be written the proxy is told (durable
//! answers without a seq, `healthy()` false), nothing unwritten is acknowledged, and writing
//! resumes by itself with a chain that still verifies.

#[path = "common/audit.rs"]
mod common;
#[path = "common/tmpfs.rs"]
mod tmpfs;

use std::time::Duration;

use common::*;
use ssp::audit::Audit;

#[test]
fn a_full_disk_fails_closed_and_recovers_by_itself() {
    let dir = TempDir::new("full");
    keygen(&dir);
    let Some(_mount) = tmpfs::tmpfs(&dir.audit(), "256k") else {
        return;
    };
    let mut settings = settings(&dir, true);
    settings.seal_interval = Duration::from_millis(100);
    let audit = Audit::start(settings).unwrap();
    assert!(durable(&audit, req("ok-before")).is_some());
    let filler = tmpfs::fill(&dir.audit());

    // The last page of the file may still have room for a record or two.
    let mut refused = Vec::new();
    for i in 0..100 {
        let trace = format!("refused-{i}");
        if durable(&audit, req(&trace)).is_none() {
            refused.push(trace);
            break;
        }
    }
    assert_eq!(refused.len(), 1, "a full disk refused a durable record");
    assert!(!audit.healthy());
    for i in 0..3 {
        let trace = format!("refused-{}", i + 100);
        assert_eq!(durable(&audit, req(&trace)), None, "still refused while full");
        refused.push(trace);
    }
    audit.record(deny("held-back"));
    let cpu_before = audit_threads_cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let cpu = audit_threads_cpu_ticks() - cpu_before;
    assert!(!audit.healthy(), "still failing while the disk is full");
    // Waiting out an outage is a timed retry, not a busy loop (it once spun a core).
    assert!(
        cpu < 30,
        "the audit thread used {cpu} ticks of CPU in a second of outage"
    );

    std::fs::remove_file(filler).unwrap();
    assert!(
        eventually(5, || audit.healthy()),
        "healthy again once there is room"
    );
    assert!(durable(&audit, req("ok-after")).is_some());
    audit.shutdown("test over");

    let records = records(&dir.audit());
    for trace in ["ok-before", "held-back", "ok-after"] {
        assert!(
            records.iter().any(|r| r["trace_id"] == trace),
            "{trace} is in the audit"
        );
    }
    for trace in &refused {
        assert!(
            !records.iter().any(|r| r["trace_id"] == trace.as_str()),
            "{trace} was refused, not audited"
        );
    }
    let alarms = of_type(&records, "alarm");
    assert!(
        alarms.iter().any(|a| a["message"]
            .as_str()
            .unwrap()
            .contains("4 durable records were refused")),
        "{alarms:?}"
    );
    assert_eq!(verify(&dir, true, true), 0);
}

#[test]
fn a_key_that_cannot_be_evolved_skips_the_seal_loudly_and_keeps_auditing() {
    let dir = TempDir::new("stuckkey");
    keygen(&dir);
    let mut settings = settings(&dir, true);
    settings.seal_interval = Duration::from_millis(50);
    let audit = Audit::start(settings).unwrap();
    // A directory where the key file was: the atomic replace cannot succeed.
    std::fs::remove_file(dir.key()).unwrap();
    std::fs::create_dir(dir.key()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(durable(&audit, req("still-audited")).is_some());
    assert!(audit.healthy(), "seals failing does not stop admission");
    audit.shutdown("test over");
    let records = records(&dir.audit());
    assert!(of_type(&records, "seal").is_empty());
    assert!(
        of_type(&records, "alarm")
            .iter()
            .any(|a| a["message"].as_str().unwrap().contains("could not be evolved"))
    );
    assert_eq!(verify(&dir, true, false), 0);
    assert_eq!(verify(&dir, true, true), 2, "nothing is sealed");
}

/// CPU time (user + system, in clock ticks) of this process's audit writer threads.
fn audit_threads_cpu_ticks() -> u64 {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "ssp-audit"))
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .map(|stat| {
            // Fields after the `(comm)`: state is the first, utime the 12th, stime the 13th.
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let fields: Vec<u64> = after.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
            fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0)
        })
        .sum()
}
