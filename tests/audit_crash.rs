//! SPEC section 5, crash safety: a torn last line is declared, never dropped; kill -9 at any
//! moment leaves a chain that verifies after the next start; a crash in the middle of a
//! rotation is finished at the next start.

#[path = "common/audit.rs"]
mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};
use ssp::audit::Audit;

fn append(path: &std::path::Path, bytes: &[u8]) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

#[test]
fn a_torn_last_line_is_moved_aside_declared_and_verified() {
    let dir = TempDir::new("torn");
    keygen(&dir);
    let audit = Audit::start(settings(&dir, true)).unwrap();
    audit.record(deny("before"));
    audit.shutdown("test over");
    let active = dir.audit().join("audit.jsonl");
    let torn = b"{\"seq\":9,\"ts\":\"2026-03-21T10:04:05.123Z\",\"type\":\"req\",\"trace_id\":\"half";
    append(&active, torn);
    // Before the restart the verifier sees an incomplete line: not tampering, not sealed.
    assert_eq!(verify(&dir, true, false), 0);
    assert_eq!(verify(&dir, true, true), 2);

    let audit = Audit::start(settings(&dir, true)).unwrap();
    audit.shutdown("test over");
    let records = records(&dir.audit());
    let declared = of_type(&records, "torn");
    assert_eq!(declared.len(), 1);
    let declared = declared[0];
    assert_eq!(declared["length"], torn.len() as u64);
    assert_eq!(declared["sha256"], hex(&Sha256::digest(torn)));
    let side = dir.audit().join(declared["file"].as_str().unwrap());
    assert_eq!(std::fs::read(&side).unwrap(), torn);
    assert_eq!(verify(&dir, true, true), 0);

    // The side file is checked against its declaration; without it the declaration stands.
    std::fs::write(&side, b"something else").unwrap();
    assert_eq!(verify(&dir, true, false), 1);
    std::fs::remove_file(&side).unwrap();
    assert_eq!(verify(&dir, true, true), 0);
}

#[test]
fn garbage_after_the_last_record_is_torn_too() {
    let dir = TempDir::new("garbage");
    let audit = Audit::start(settings(&dir, false)).unwrap();
    audit.record(deny("before"));
    audit.shutdown("test over");
    let active = dir.audit().join("audit.jsonl");
    append(&active, &[0u8; 300]);
    append(&active, b"\n{\"not\":\"a record\"}\n");
    let audit = Audit::start(settings(&dir, false)).unwrap();
    audit.record(deny("after"));
    audit.shutdown("test over");
    let records = records(&dir.audit());
    assert_eq!(of_type(&records, "torn")[0]["length"], 300 + 20);
    assert_eq!(verify(&dir, false, false), 0);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Not a test on its own: the child process `kill_9_at_any_moment_then_restart_verifies`
/// starts and kills. Without its environment variable it returns at once.
#[test]
fn child_writes_until_killed() {
    let Ok(base) = std::env::var("SSP_AUDIT_CRASH_DIR") else {
        return;
    };
    let dir = TempDir(base.into());
    let mut settings = settings(&dir, true);
    settings.rotate_bytes = 8192;
    settings.seal_interval = Duration::from_millis(3);
    let audit = Audit::start(settings).unwrap();
    println!("started");
    let mut i = 0u64;
    loop {
        let trace = format!("child-{i}");
        if i.is_multiple_of(8) {
            let seq = durable(&audit, req(&trace));
            audit.record(res(&trace, seq));
        } else {
            audit.record(deny(&trace));
        }
        i += 1;
    }
}

#[test]
fn kill_9_at_any_moment_then_restart_verifies() {
    let dir = TempDir::new("kill9");
    keygen(&dir);
    for round in 0..6u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "child_writes_until_killed",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SSP_AUDIT_CRASH_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !String::from_utf8_lossy(&seen).contains("started") {
            assert_eq!(
                std::io::Read::read(&mut out, &mut byte).unwrap(),
                1,
                "child died before starting"
            );
            seen.push(byte[0]);
        }
        std::thread::sleep(Duration::from_millis(15 + 23 * round));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // The next start must accept whatever the kill left.
        let audit = Audit::start(settings(&dir, true)).unwrap();
        audit.shutdown("after kill");
        assert_eq!(verify(&dir, true, true), 0, "round {round}");
    }
    let records = records(&dir.audit());
    assert_eq!(of_type(&records, "start").len(), 12);
    assert!(audit_files(&dir.audit()).len() > 2, "the children rotated");
}

/// Runs a rotating audit and stops it: several files.
fn rotated(label: &str) -> TempDir {
    let dir = TempDir::new(label);
    let mut settings = settings(&dir, false);
    settings.rotate_bytes = 2000;
    let audit = Audit::start(settings).unwrap();
    for i in 0..12 {
        durable(&audit, req(&format!("r{i}")));
    }
    audit.shutdown("test over");
    dir
}

#[test]
fn a_crash_between_close_and_rename_is_finished_at_the_next_start() {
    let dir = rotated("close-rename");
    let files = audit_files(&dir.audit());
    let (last_rotated, active) = (&files[files.len() - 2], &files[files.len() - 1]);
    // Undo the last rotation: the closed file is back under the active name.
    std::fs::remove_file(active).unwrap();
    std::fs::rename(last_rotated, active).unwrap();
    let audit = Audit::start(settings(&dir, false)).unwrap();
    audit.shutdown("test over");
    assert!(last_rotated.exists(), "the closed file got its rotated name");
    assert_eq!(verify(&dir, false, false), 0);
    let records = records(&dir.audit());
    let open = of_type(&records, "open").last().copied().unwrap();
    assert_eq!(
        open["previous"],
        last_rotated.file_name().unwrap().to_str().unwrap()
    );
}

#[test]
fn a_crash_between_rename_and_the_new_file_is_finished_at_the_next_start() {
    let dir = rotated("rename-create");
    let files = audit_files(&dir.audit());
    std::fs::remove_file(&files[files.len() - 1]).unwrap();
    let audit = Audit::start(settings(&dir, false)).unwrap();
    audit.shutdown("test over");
    assert_eq!(verify(&dir, false, false), 0);
}

#[test]
fn a_damaged_active_file_refuses_to_start_rather_than_being_repaired() {
    let dir = TempDir::new("damaged");
    let active = dir.audit().join("audit.jsonl");
    std::fs::create_dir_all(dir.audit()).unwrap();
    std::fs::write(&active, vec![b'x'; 5 << 20]).unwrap();
    let error = Audit::start(settings(&dir, false)).unwrap_err();
    assert!(error.to_string().contains("damaged, not torn"), "{error}");
    assert_eq!(
        std::fs::metadata(&active).unwrap().len(),
        5 << 20,
        "left as it was"
    );
}
