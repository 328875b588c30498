//! Issue 20 item 1: `ssp audit verify DIR --witness W`. Records a log shipper carried off the
//! box show a chain cut back to a seal (exit 4, CUT), a rotated file removed from the end, a
//! rolled-back copy, and a copy rolled back and written again (exit 5, FORKED), none of which
//! the folder alone can show; a witness with gaps, duplicates and a shipper's own prefixes
//! passes, and one from another box is refused.

#[path = "common/audit.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use ssp::audit::Audit;

/// `ssp audit verify DIR --key-file K0 [--witness W]`, the binary: exit code and output.
fn verify_against(dir: &TempDir, witness: Option<&Path>) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ssp"));
    command.args(["audit", "verify"]).arg(dir.audit());
    command.arg("--key-file").arg(dir.k0());
    if let Some(w) = witness {
        command.arg("--witness").arg(w);
    }
    let out = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Every line of every audit file in `dir`, in chain order.
fn all_lines(dir: &Path) -> Vec<String> {
    audit_files(dir)
        .iter()
        .flat_map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            text.lines().map(str::to_owned).collect::<Vec<_>>()
        })
        .collect()
}

/// Ships every line of `from` into the file `to`, as a shipper that keeps them whole would.
fn ship(from: &TempDir, to: &Path) {
    let text: String = all_lines(&from.audit())
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(to, text).unwrap();
}

/// A sealed audit in the active file only: requests a few milliseconds apart, a seal every
/// 2 ms between them, a clean stop.
fn sealed_run(label: &str, requests: usize) -> TempDir {
    let dir = TempDir::new(label);
    keygen(&dir);
    let mut settings = settings(&dir, true);
    settings.seal_interval = Duration::from_millis(2);
    let audit = Audit::start(settings).unwrap();
    for i in 0..requests {
        let trace = format!("trace-{i}");
        let seq = durable(&audit, req(&trace));
        audit.record(res(&trace, seq));
        std::thread::sleep(Duration::from_millis(5));
    }
    audit.shutdown("test over");
    dir
}

#[test]
fn a_witness_with_gaps_duplicates_and_a_shippers_prefixes_passes() {
    let dir = rotated_set("witness-pass", 30);
    let lines = all_lines(&dir.audit());
    let shipped = dir.path().join("shipped");
    std::fs::create_dir(&shipped).unwrap();
    // Every other record, under a syslog prefix, in one file; some again, newest first, with
    // CR LF endings, in another; a line of the shipper's own.
    let first: String = lines
        .iter()
        .step_by(2)
        .map(|l| format!("Mar 21 10:04:05 gw ssp[7003]: {l}\n"))
        .collect();
    std::fs::write(shipped.join("a.log"), first).unwrap();
    let second: String = lines[..lines.len() / 2]
        .iter()
        .rev()
        .map(|l| format!("{l}\r\n"))
        .chain(["-- shipper restarted --\n".to_owned(), "\n".to_owned()])
        .collect();
    std::fs::write(shipped.join("b.log"), second).unwrap();
    let (code, out) = verify_against(&dir, Some(&shipped));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("intact;"), "{out}");
    assert!(out.contains("seals found here"), "{out}");
    assert!(out.contains("1 witness lines are not audit records"), "{out}");
    // The whole audit shipped as one file.
    let one = dir.path().join("all.log");
    ship(&dir, &one);
    let (code, out) = verify_against(&dir, Some(&one));
    assert_eq!(code, Some(0), "{out}");
    let seals = lines.iter().filter(|l| l.contains("\"type\":\"seal\"")).count();
    assert!(
        out.contains(&format!("{seals} of the witness's {seals} seals found here")),
        "{out}"
    );
}

#[test]
fn records_cut_back_to_a_seal_verify_alone_but_not_against_the_witness() {
    let dir = sealed_run("witness-cut", 6);
    let witness = dir.path().join("shipped.log");
    ship(&dir, &witness);
    // Keep the active file up to the last seal before the last request.
    let lines = all_lines(&dir.audit());
    let last_req = lines
        .iter()
        .rposition(|l| l.contains("\"type\":\"req\""))
        .unwrap();
    let keep = lines[..last_req]
        .iter()
        .rposition(|l| l.contains("\"type\":\"seal\""))
        .unwrap()
        + 1;
    let text: String = lines[..keep].iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.audit().join("audit.jsonl"), text).unwrap();

    assert_eq!(verify(&dir, true, true), 0, "the chain alone is intact");
    let (code, out) = verify_against(&dir, Some(&witness));
    assert_eq!(code, Some(4), "{out}");
    let expected = format!(
        "CUT: audit.jsonl seq {0}: this folder ends at seq {0} but the witness holds",
        keep - 1
    );
    assert!(out.starts_with(&expected), "{out}");
    assert!(out.contains("records were cut from the end"), "{out}");
}

#[test]
fn the_newest_files_removed_verify_alone_but_not_against_the_witness() {
    let dir = rotated_set("witness-files", 30);
    let witness = dir.path().join("shipped.log");
    ship(&dir, &witness);
    let files = audit_files(&dir.audit());
    // The active file and the rotated file before it: the folder now ends with a `close`.
    for file in &files[files.len() - 2..] {
        std::fs::remove_file(file).unwrap();
    }
    assert_eq!(verify(&dir, true, false), 0, "the chain alone is intact");
    let (code, out) = verify_against(&dir, Some(&witness));
    assert_eq!(code, Some(4), "{out}");
    assert!(out.starts_with("CUT: audit.jsonl seq"), "{out}");

    // A rotated file removed from the middle is a gap already; the witness says sealed
    // records were in it.
    let dir = rotated_set("witness-middle", 30);
    ship(&dir, &witness);
    let files = audit_files(&dir.audit());
    std::fs::remove_file(&files[files.len() / 2]).unwrap();
    assert_eq!(verify(&dir, true, false), 2);
    let (code, out) = verify_against(&dir, Some(&witness));
    assert_eq!(code, Some(4), "{out}");
    assert!(out.contains("seals this folder lacks within its span"), "{out}");
}

/// Requests from one more run of the writer on `dir`.
fn run_more(dir: &TempDir, label: &str, requests: usize) {
    let audit = Audit::start(settings(dir, true)).unwrap();
    for i in 0..requests {
        let trace = format!("{label}-{i}");
        let seq = durable(&audit, req(&trace));
        audit.record(res(&trace, seq));
    }
    audit.shutdown("test over");
}

#[test]
fn a_rolled_back_copy_is_cut_and_one_written_again_is_forked() {
    let dir = TempDir::new("witness-box");
    keygen(&dir);
    run_more(&dir, "first", 3);
    // A backup of the folder and the key, taken between two runs.
    let backup = copy_of(&dir, "witness-backup");
    run_more(&dir, "second", 3);
    let witness = dir.path().join("shipped.log");
    ship(&dir, &witness);
    assert_eq!(verify_against(&dir, Some(&witness)).0, Some(0));

    // The backup put back: it ends before the witness does.
    let (code, out) = verify_against(&backup, Some(&witness));
    assert_eq!(code, Some(4), "{out}");
    assert!(out.starts_with("CUT:"), "{out}");

    // The backup put back with its key, and the proxy run on it: a chain every seal of which
    // verifies, but not the one the box shipped. (Had it stopped short of the witness's last
    // seal, it would be a cut: the witness compares the seqs both hold.)
    run_more(&backup, "other", 5);
    assert_eq!(verify(&backup, true, true), 0, "the forked chain alone is intact");
    let (code, out) = verify_against(&backup, Some(&witness));
    assert_eq!(code, Some(5), "{out}");
    assert!(out.starts_with("FORKED: audit.jsonl line"), "{out}");
    assert!(
        out.contains("the folder was rolled back and written again, or its chain forked, after seal seq"),
        "{out}"
    );
}

#[test]
fn a_witness_from_another_box_is_refused_not_read_as_a_fork() {
    let ours = rotated_set("witness-ours", 10);
    let theirs = rotated_set("witness-theirs", 10);
    let witness = theirs.path().join("shipped.log");
    ship(&theirs, &witness);
    let (code, out) = verify_against(&ours, Some(&witness));
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains("does not verify with the initial key: it is another box's"),
        "{out}"
    );
    // Without the initial key the witness's seals are taken at their word: they differ.
    let options = ssp::audit::cli::VerifyOptions {
        witness: Some(&witness),
        ..Default::default()
    };
    assert_eq!(ssp::audit::cli::verify(&ours.audit(), &options), 5);
    // A witness that cannot be read is an error, as any other.
    let missing = ours.path().join("missing");
    assert_eq!(verify_against(&ours, Some(&missing)).0, Some(3));
}
