//! SPEC section 5: byte-level and file-level tamperings the other tamper tests do not cover,
//! each detected as tampering (exit 1) with and without the key.

#[path = "common/audit.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::*;
use ssp::audit::record::{self, Entry};
use ssp::audit::seal::Key;

fn second_file(dir: &TempDir) -> PathBuf {
    audit_files(&dir.audit())[1].clone()
}

/// Edits the third line of the second file, as bytes.
fn edit_line(dir: &TempDir, edit: impl FnOnce(&mut Vec<u8>)) {
    let path = second_file(dir);
    let text = std::fs::read(&path).unwrap();
    let mut lines: Vec<Vec<u8>> = text
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    edit(&mut lines[2]);
    std::fs::write(&path, lines.concat()).unwrap();
}

fn insert_line(path: &Path, line: &[u8]) {
    let text = std::fs::read(path).unwrap();
    let mut lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
    lines.insert(2, line);
    std::fs::write(path, lines.concat()).unwrap();
}

#[test]
fn byte_and_file_level_tamperings_are_detected() {
    let original = rotated_set("bytes", 12);
    assert!(audit_files(&original.audit()).len() >= 3);
    type Tamper = fn(&TempDir);
    let cases: [(&str, Tamper); 8] = [
        ("a CRLF line ending", |d| {
            edit_line(d, |l| l.insert(l.len() - 1, b'\r'))
        }),
        ("a NUL byte", |d| edit_line(d, |l| l.insert(5, 0))),
        ("invalid UTF-8", |d| edit_line(d, |l| l[10] = 0xff)),
        ("an empty line", |d| insert_line(&second_file(d), b"\n")),
        ("a line over the maximum length", |d| {
            insert_line(&second_file(d), &[b'x'; 5000]);
        }),
        ("a rotated file without its last newline", |d| {
            let path = second_file(d);
            let mut bytes = std::fs::read(&path).unwrap();
            bytes.pop();
            std::fs::write(&path, bytes).unwrap();
        }),
        ("a rotated file copied under a name with a leading zero", |d| {
            let path = second_file(d);
            let name = path.file_name().unwrap().to_str().unwrap();
            let (time, seq) = name.rsplit_once('-').unwrap();
            std::fs::copy(&path, d.audit().join(format!("{time}-0{seq}"))).unwrap();
        }),
        ("a seal made with a later key and no restart declaring it", |d| {
            let active = d.audit().join("audit.jsonl");
            let mut bytes = std::fs::read(&active).unwrap();
            let last = bytes[..bytes.len() - 1].rsplit(|&b| b == b'\n').next().unwrap();
            let last = record::parse(last).unwrap();
            let stolen = Key::parse(&std::fs::read_to_string(d.key()).unwrap()).unwrap();
            let later = stolen.advance_to(stolen.epoch() + 3).unwrap();
            let ts = "2026-03-21T10:04:05.123Z";
            let seal = Entry::Seal {
                epoch: later.epoch(),
                mac: later.mac(last.seq + 1, &last.h, ts),
            };
            bytes.extend_from_slice(&record::line(last.seq + 1, ts, &seal, &last.h).bytes);
            std::fs::write(&active, bytes).unwrap();
        }),
    ];
    for (what, tamper) in cases {
        let dir = copy_of(&original, "bytes-case");
        tamper(&dir);
        assert_eq!(verify(&dir, true, false), 1, "{what} (with key)");
        assert_eq!(verify(&dir, false, false), 1, "{what} (without key)");
    }
}
