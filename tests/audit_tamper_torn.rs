//! SPEC section 5, "a torn last line is never silently dropped", across two crashes: a start
//! that moved torn bytes aside and crashed before its `torn` record was durable must not lose
//! them at the next start.

#[path = "common/audit.rs"]
mod common;

use common::*;
use ssp::audit::Audit;

const TORN_A: &[u8] =
    b"{\"seq\":5,\"ts\":\"2026-03-21T10:04:05.123Z\",\"type\":\"req\",\"trace_id\":\"first crash";
const TORN_B: &[u8] = b"{\"seq\":5,\"ts\":\"2026-03-21T10:04:06.000Z\",\"type\":\"torn\",\"fi";

/// A stopped audit, then the state a start leaves when it crashes after moving `TORN_A` to its
/// side file and cutting it from the active file, before its `torn` record is durable; the
/// crash tore `then` (that record's first bytes) onto the active file.
fn crashed_while_declaring(label: &str, then: &[u8]) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new(label);
    keygen(&dir);
    let audit = Audit::start(settings(&dir, true)).unwrap();
    audit.record(deny("before"));
    audit.shutdown("test over");
    let next_seq = records(&dir.audit()).len();
    let side = dir.audit().join(format!("audit.jsonl.torn-{next_seq}"));
    std::fs::write(&side, TORN_A).unwrap();
    let active = dir.audit().join("audit.jsonl");
    let mut bytes = std::fs::read(&active).unwrap();
    bytes.extend_from_slice(then);
    std::fs::write(&active, bytes).unwrap();
    (dir, side)
}

#[test]
fn torn_bytes_moved_aside_by_a_start_that_crashed_are_declared_at_the_next() {
    for (label, then) in [("torn-again", TORN_B), ("nothing-torn-after", &b""[..])] {
        let (dir, side) = crashed_while_declaring(label, then);
        let audit = Audit::start(settings(&dir, true)).unwrap();
        audit.shutdown("test over");
        let records = records(&dir.audit());
        let declared = of_type(&records, "torn");
        assert_eq!(declared.len(), 1, "{label}");
        assert_eq!(
            dir.audit().join(declared[0]["file"].as_str().unwrap()),
            side,
            "{label}"
        );
        let kept = std::fs::read(&side).unwrap();
        assert_eq!(kept, [TORN_A, then].concat(), "{label}");
        assert_eq!(declared[0]["length"], kept.len() as u64, "{label}");
        assert_eq!(verify(&dir, true, true), 0, "{label}");
    }
}
