//! SPEC section 5, issue 24 item 15: the newest records cut off the active file at a seal
//! boundary leave a chain that verifies on its own; the box's key file, which only moves
//! forward, shows the cut (`ssp audit verify --current-key`). A live folder (running, stopped
//! cleanly or crashed) never looks cut.

#[path = "common/audit.rs"]
mod common;
#[path = "common/tmpfs.rs"]
mod tmpfs;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use ssp::audit::Audit;
use ssp::audit::seal::{self, Key};

/// `ssp audit verify DIR [--key-file K0] --current-key KEY [--require-sealed]`, the binary:
/// its exit code and summary line.
fn verify_with_box_key(dir: &TempDir, key: &Path, k0: bool, require_sealed: bool) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ssp"));
    command.args(["audit", "verify"]).arg(dir.audit());
    if k0 {
        command.arg("--key-file").arg(dir.k0());
    }
    command.arg("--current-key").arg(key);
    if require_sealed {
        command.arg("--require-sealed");
    }
    let out = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn key_epoch(path: &Path) -> u64 {
    seal::load(path).unwrap().epoch()
}

/// The active file's lines, each with its record type.
fn active_lines(dir: &TempDir) -> Vec<(String, String)> {
    std::fs::read_to_string(dir.audit().join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let record: serde_json::Value = serde_json::from_str(l).unwrap();
            (record["type"].as_str().unwrap().to_owned(), l.to_owned())
        })
        .collect()
}

/// Epochs of the seals in every audit file, skipping what does not parse (a torn last line).
fn seal_epochs(dir: &TempDir) -> Vec<u64> {
    audit_files(&dir.audit())
        .iter()
        .flat_map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|r| r["type"] == "seal")
                .filter_map(|r| r["epoch"].as_u64())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether, of the seal and start records, the audit's last is a seal.
fn last_type_is_seal_not_start(dir: &TempDir) -> bool {
    let mut last = None;
    for p in audit_files(&dir.audit()) {
        let text = std::fs::read_to_string(p).unwrap();
        for r in text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        {
            if r["type"] == "seal" || r["type"] == "start" {
                last = r["type"].as_str().map(str::to_string);
            }
        }
    }
    last.as_deref() == Some("seal")
}

/// Keeps the active file's first `keep` lines.
fn cut_active(dir: &TempDir, lines: &[(String, String)], keep: usize) {
    let text: String = lines[..keep].iter().map(|(_, l)| format!("{l}\n")).collect();
    std::fs::write(dir.audit().join("audit.jsonl"), text).unwrap();
}

#[test]
fn records_cut_at_a_seal_boundary_are_truncation_against_the_box_key() {
    let dir = TempDir::new("cut-sealed");
    keygen(&dir);
    let mut settings = settings(&dir, true);
    settings.seal_interval = Duration::from_millis(20);
    let audit = Audit::start(settings).unwrap();
    for i in 0..5 {
        let trace = format!("trace-{i}");
        let seq = durable(&audit, req(&trace));
        audit.record(res(&trace, seq));
        std::thread::sleep(Duration::from_millis(50));
    }
    // Idle seals after the last request, then `stop` and the final seal.
    std::thread::sleep(Duration::from_millis(50));
    audit.shutdown("test over");
    let lines = active_lines(&dir);
    let kinds: Vec<&str> = lines.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds[kinds.len() - 2..], ["stop", "seal"]);

    // Cut at the last seal before the last request: that request, the seals after it, the
    // stop and the final seal go.
    let last_req = kinds.iter().rposition(|&k| k == "req").unwrap();
    let keep = kinds[..last_req].iter().rposition(|&k| k == "seal").unwrap() + 1;
    let cut_seals = kinds[keep..].iter().filter(|&&k| k == "seal").count();
    assert!(cut_seals >= 2, "{kinds:?}");
    cut_active(&dir, &lines, keep);
    let epochs = seal_epochs(&dir);
    let (n, m) = (*epochs.last().unwrap(), key_epoch(&dir.key()));

    // The chain alone is intact: every line links, every seal verifies, nothing is unsealed.
    assert_eq!(verify(&dir, true, true), 0);
    let (code, out) = verify_with_box_key(&dir, &dir.key(), true, true);
    assert_eq!(code, Some(2), "{out}");
    let expected = format!(
        "TRUNCATED: audit.jsonl seq {}: the audit ends at seal epoch {n} but the box's key is at \
         epoch {m}, so records sealed after epoch {n} are missing",
        keep - 1
    );
    assert!(out.starts_with(&expected), "{out}");
    assert_eq!(
        verify_with_box_key(&dir, &dir.key(), false, false).0,
        Some(2),
        "without K0 too"
    );

    // Without the key file the cut shows once the proxy restarts on the folder: its first seal
    // jumps further than one restart can explain.
    let audit = Audit::start(common::settings(&dir, true)).unwrap();
    audit.shutdown("test over");
    assert_eq!(verify(&dir, true, false), 1);
}

#[test]
fn a_run_cut_after_an_earlier_clean_stop_is_truncation_against_the_box_key() {
    let dir = TempDir::new("cut-run");
    keygen(&dir);
    let run = |trace: &str| {
        let audit = Audit::start(settings(&dir, true)).unwrap();
        let seq = durable(&audit, req(trace));
        audit.record(res(trace, seq));
        audit.shutdown("test over");
    };
    run("first");
    let keep = active_lines(&dir).len();
    run("second");
    // Only the second run's start, request, stop and its one seal go: after a clean stop the
    // key is exactly one epoch past its seal, so even one cut seal shows.
    let lines = active_lines(&dir);
    cut_active(&dir, &lines, keep);
    assert_eq!(verify(&dir, true, true), 0);
    let (code, out) = verify_with_box_key(&dir, &dir.key(), true, true);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("the audit ends at seal epoch 0 but the box's key is at epoch 2"),
        "{out}"
    );
}

#[test]
fn a_running_folder_that_cannot_be_written_is_not_taken_for_a_cut() {
    let dir = TempDir::new("outage");
    keygen(&dir);
    let Some(_mount) = tmpfs::tmpfs(&dir.audit(), "256k") else {
        return;
    };
    let mut settings = settings(&dir, true);
    settings.seal_interval = Duration::from_millis(20);
    let audit = Audit::start(settings).unwrap();
    durable(&audit, req("before"));
    // Only seals are written now; once the disk is full one fails after its key evolved, and
    // no seal is tried again until writing works: the key stays two epochs past the last seal.
    let filler = tmpfs::fill(&dir.audit());
    assert!(eventually(10, || !audit.healthy()), "the audit never failed");
    let last = *seal_epochs(&dir).last().unwrap();
    assert_eq!(key_epoch(&dir.key()), last + 2);
    let (code, out) = verify_with_box_key(&dir, &dir.key(), true, false);
    assert_eq!(code, Some(0), "during the outage: {out}");
    assert!(out.contains("two epochs past the last seal"), "{out}");

    std::fs::remove_file(filler).unwrap();
    assert!(eventually(10, || audit.healthy()), "the audit never recovered");
    audit.shutdown("test over");
    let (code, out) = verify_with_box_key(&dir, &dir.key(), true, true);
    assert_eq!(code, Some(0), "after the outage: {out}");
}

/// Not a test on its own: the child process `a_crashed_folder_is_not_taken_for_a_cut` starts
/// and kills. Without its environment variable it returns at once.
#[test]
fn child_seals_until_killed() {
    let Ok(base) = std::env::var("SSP_AUDIT_CUT_DIR") else {
        return;
    };
    let dir = TempDir(base.into());
    let mut settings = settings(&dir, true);
    settings.seal_interval = Duration::from_millis(2);
    let audit = Audit::start(settings).unwrap();
    println!("started");
    for i in 0u64.. {
        let trace = format!("child-{i}");
        let seq = durable(&audit, req(&trace));
        audit.record(res(&trace, seq));
    }
}

#[test]
fn a_running_or_cleanly_stopped_folder_is_not_taken_for_a_cut() {
    let dir = TempDir::new("live");
    keygen(&dir);
    let mut settings = settings(&dir, true);
    settings.seal_interval = Duration::from_millis(2);
    let audit = std::sync::Arc::new(Audit::start(settings).unwrap());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (audit, stop) = (audit.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let trace = format!("live-{i}");
                let seq = durable(&audit, req(&trace));
                audit.record(res(&trace, seq));
                i += 1;
            }
        })
    };
    // Verified while seals are being made: the key file is read before the audit.
    for round in 0..20 {
        let (code, out) = verify_with_box_key(&dir, &dir.key(), true, false);
        assert_eq!(code, Some(0), "running, round {round}: {out}");
        std::thread::sleep(Duration::from_millis(7));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().unwrap();
    audit.shutdown("test over");
    let (code, out) = verify_with_box_key(&dir, &dir.key(), true, true);
    assert_eq!(code, Some(0), "stopped cleanly: {out}");
    assert!(!out.contains("note"), "{out}");
    assert_eq!(key_epoch(&dir.key()), seal_epochs(&dir).last().unwrap() + 1);
}

#[test]
fn a_crashed_folder_is_not_taken_for_a_cut() {
    let dir = TempDir::new("crashed");
    keygen(&dir);
    for round in 0..3u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "child_seals_until_killed",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SSP_AUDIT_CUT_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !String::from_utf8_lossy(&seen).contains("started") {
            assert_eq!(out.read(&mut byte).unwrap(), 1, "child died before starting");
            seen.push(byte[0]);
        }
        std::thread::sleep(Duration::from_millis(30 + 20 * round));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (code, text) = verify_with_box_key(&dir, &dir.key(), true, false);
        assert_eq!(code, Some(0), "round {round}, after the kill: {text}");

        // The kill may also land after the key evolved for a seal not yet written: the key is
        // then two epochs past the last seal. Make it so if the kill did not.
        let last = *seal_epochs(&dir).last().unwrap();
        let key = seal::load(&dir.key()).unwrap();
        if key.epoch() == last + 1 {
            seal::store(&dir.key(), &key.next()).unwrap();
        }
        let (code, text) = verify_with_box_key(&dir, &dir.key(), true, false);
        assert_eq!(code, Some(0), "round {round}, the key two on: {text}");
        // Said when the last seal ends the audit; a start record after it (the kill came
        // before this run's first seal, as on a slow box) declares the key itself.
        if key_epoch(&dir.key()) == last + 2 && last_type_is_seal_not_start(&dir) {
            assert!(text.contains("two epochs past the last seal"), "{text}");
        }
    }
    // The restart declares the key it found, seals with it and stops cleanly.
    let audit = Audit::start(settings(&dir, true)).unwrap();
    audit.shutdown("test over");
    let (code, text) = verify_with_box_key(&dir, &dir.key(), true, true);
    assert_eq!(code, Some(0), "after the restart: {text}");
}

#[test]
fn another_chains_key_is_named_as_such_not_taken_for_a_cut() {
    let dir = TempDir::new("stranger");
    keygen(&dir);
    let audit = Audit::start(settings(&dir, true)).unwrap();
    durable(&audit, req("t"));
    audit.shutdown("test over");
    let stranger = dir.path().join("stranger.key");
    let key = Key::new(0, [3; 32]).advance_to(40).unwrap();
    std::fs::write(&stranger, key.to_file_text()).unwrap();
    let (code, out) = verify_with_box_key(&dir, &stranger, true, true);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("does not derive from the initial key"), "{out}");
    assert!(!out.contains("TRUNCATED"), "{out}");
    // Without the initial key its epoch is all there is to go on.
    assert_eq!(verify_with_box_key(&dir, &stranger, false, true).0, Some(2));
}
