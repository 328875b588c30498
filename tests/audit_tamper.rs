//! SPEC sections 2 and 5: `ssp audit verify` detects every kind of tampering, with the exit
//! code the SPEC gives it (1 tampered, 2 gap / truncation / unsealed tail, 3 error).

#[path = "common/audit.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::*;
use sha2::{Digest, Sha256};

/// A sealed, rotated audit directory: several files, seals in each.
fn rotated_set(label: &str) -> TempDir {
    let dir = common::rotated_set(label, 30);
    assert!(
        audit_files(&dir.audit()).len() >= 4,
        "{:?}",
        audit_files(&dir.audit())
    );
    dir
}

fn middle_file(dir: &TempDir) -> PathBuf {
    let files = audit_files(&dir.audit());
    files[files.len() / 2].clone()
}

fn edit_lines(path: &Path, edit: impl FnOnce(&mut Vec<String>)) {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    edit(&mut lines);
    std::fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

#[test]
fn every_tampering_is_detected_with_its_exit_code() {
    let original = rotated_set("original");
    type Tamper = fn(&TempDir);
    let cases: [(&str, Tamper, u8); 10] = [
        (
            "a changed byte",
            |d| {
                let path = middle_file(d);
                let mut bytes = std::fs::read(&path).unwrap();
                let i = bytes.iter().position(|&b| b == b'G').unwrap(); // GET -> FET
                bytes[i] = b'F';
                std::fs::write(&path, bytes).unwrap();
            },
            1,
        ),
        (
            "a deleted line",
            |d| edit_lines(&middle_file(d), |l| drop(l.remove(2))),
            1,
        ),
        (
            "an inserted line",
            |d| {
                let other = std::fs::read_to_string(&audit_files(&d.audit())[0]).unwrap();
                let stranger = other.lines().nth(2).unwrap().to_owned();
                edit_lines(&middle_file(d), |l| l.insert(2, stranger));
            },
            1,
        ),
        (
            "a duplicated line",
            |d| edit_lines(&middle_file(d), |l| l.insert(2, l[2].clone())),
            1,
        ),
        (
            "reordered lines",
            |d| edit_lines(&middle_file(d), |l| l.swap(1, 2)),
            1,
        ),
        (
            "a deleted middle file",
            |d| std::fs::remove_file(middle_file(d)).unwrap(),
            2,
        ),
        (
            "two rotated files swapped",
            |d| {
                let files = audit_files(&d.audit());
                let tmp = d.path().join("swap");
                std::fs::rename(&files[1], &tmp).unwrap();
                std::fs::rename(&files[2], &files[1]).unwrap();
                std::fs::rename(&tmp, &files[2]).unwrap();
            },
            1,
        ),
        (
            "the active file swapped with a rotated one",
            |d| {
                let files = audit_files(&d.audit());
                let (rotated, active) = (&files[1], &files[files.len() - 1]);
                let tmp = d.path().join("swap");
                std::fs::rename(rotated, &tmp).unwrap();
                std::fs::rename(active, rotated).unwrap();
                std::fs::rename(&tmp, active).unwrap();
            },
            1,
        ),
        (
            "the last lines of a rotated file cut",
            |d| edit_lines(&audit_files(&d.audit())[0], |l| l.truncate(l.len() - 2)),
            2,
        ),
        (
            "whitespace added inside a record",
            |d| {
                edit_lines(&middle_file(d), |l| l[1] = l[1].replace("\"seq\":", "\"seq\": "));
            },
            1,
        ),
    ];
    for (what, tamper, code) in cases {
        let dir = copy_of(&original, "case");
        tamper(&dir);
        assert_eq!(verify(&dir, true, false), code, "{what} (with key)");
        assert_eq!(verify(&dir, false, false), code, "{what} (without key)");
    }
}

/// Rewrites every record from the first `req` on, as someone without the key would: the
/// change is made, and every hash and link after it recomputed (the seals cannot be).
fn rewrite_chain(dir: &TempDir) {
    let mut prev: Option<String> = None;
    let mut changed = false;
    for path in audit_files(&dir.audit()) {
        edit_lines(&path, |lines| {
            for line in lines.iter_mut() {
                let mut body = line[..line.len() - 72].to_owned();
                if let Some(p) = &prev {
                    body.replace_range(body.len() - 65..body.len() - 1, p);
                }
                if !changed && body.contains("\"type\":\"req\"") {
                    body = body.replace("patient=9000000009", "patient=9999999999");
                    changed = true;
                }
                let h = hex(&Sha256::digest(format!("{body}}}").as_bytes()));
                *line = format!("{body},\"h\":\"{h}\"}}");
                prev = Some(h);
            }
        });
    }
    assert!(changed);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_chain_rewritten_without_the_key_fails_its_seals() {
    let original = rotated_set("rewrite");
    let dir = copy_of(&original, "rewritten");
    rewrite_chain(&dir);
    // Hashes and links are consistent again: only the seals can tell.
    assert_eq!(verify(&dir, false, false), 0);
    assert_eq!(verify(&dir, true, false), 1);
}

#[test]
fn a_cut_tail_fails_only_when_sealing_is_required() {
    let original = rotated_set("cut");
    let dir = copy_of(&original, "cut-tail");
    let active = dir.audit().join("audit.jsonl");
    // Drop the final seal (and whatever came after the previous one would be unsealed).
    edit_lines(&active, |l| drop(l.pop()));
    assert_eq!(verify(&dir, true, false), 0);
    assert_eq!(verify(&dir, true, true), 2);
}

#[test]
fn a_wrong_key_is_tampering_and_bad_arguments_are_errors() {
    let original = rotated_set("args");
    let wrong = TempDir::new("wrong");
    keygen(&wrong);
    let k0 = wrong.k0();
    assert_eq!(verify_folder(&original.audit(), Some(&k0)), 1);
    // Usage and I/O errors: 3.
    assert_eq!(verify_folder(&original.path().join("missing"), None), 3);
    let empty = TempDir::new("empty");
    assert_eq!(verify_folder(empty.path(), None), 3);
    assert_eq!(
        verify_folder(&original.audit(), Some(&original.path().join("nokey"))),
        3
    );
    // The evolved key file is not the initial key.
    assert_eq!(verify_folder(&original.audit(), Some(&original.key())), 3);
    std::fs::write(wrong.k0(), "garbage").unwrap();
    assert_eq!(verify_folder(&original.audit(), Some(&k0)), 3);
}
