//! SPEC section 5, forward security: whoever takes the box holds only the current key. A seal
//! epoch may jump only where a crash lost a seal, one epoch per restart that declares it, so
//! that key cannot be used to cut sealed records away and seal what is left.

#[path = "common/audit.rs"]
mod common;

use std::path::Path;

use common::*;
use ssp::audit::Audit;
use ssp::audit::record::{self, Entry};
use ssp::audit::seal::{self, Key};

const TS: &str = "2026-03-21T10:04:05.123Z";

fn lines(path: &Path) -> Vec<Vec<u8>> {
    std::fs::read(path)
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn start(key_epoch: u64) -> Entry {
    Entry::Start {
        version: "test".into(),
        config_hash: [7; 32],
        boot_id: [1; 16],
        pid: 9,
        sync: "batch",
        key_epoch: Some(key_epoch),
    }
}

/// What the writer would append after `last`: `entries`, a `None` being a seal with `key`.
fn append_after(last: &[u8], entries: Vec<Option<Entry>>, key: &Key) -> Vec<u8> {
    let last = record::parse(last).unwrap();
    let (mut seq, mut prev) = (last.seq + 1, last.h);
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.unwrap_or_else(|| Entry::Seal {
            epoch: key.epoch(),
            mac: key.mac(seq, &prev, TS),
        });
        let line = record::line(seq, TS, &entry, &prev);
        out.extend_from_slice(&line.bytes);
        (seq, prev) = (seq + 1, line.h);
    }
    out
}

#[test]
fn the_box_key_cannot_cut_sealed_files_away_behind_one_declared_restart() {
    let dir = rotated_set("keyholder", 20);

    // The thief reads the key file (epoch n), keeps the first rotated file, removes every
    // later one, and writes a new active file: open, a start declaring epoch n, a seal.
    let stolen = Key::parse(&std::fs::read_to_string(dir.key()).unwrap()).unwrap();
    let files = audit_files(&dir.audit());
    assert!(files.len() >= 4, "{files:?}");
    for file in &files[1..] {
        std::fs::remove_file(file).unwrap();
    }
    let name = files[0].file_name().unwrap().to_str().unwrap().to_owned();
    let forged = append_after(
        lines(&files[0]).last().unwrap(),
        vec![
            Some(Entry::Open { previous: Some(name) }),
            Some(start(stolen.epoch())),
            None,
        ],
        &stolen,
    );
    std::fs::write(dir.audit().join("audit.jsonl"), forged).unwrap();
    assert_eq!(verify(&dir, true, true), 1);
    assert_eq!(verify(&dir, true, false), 1);
}

#[test]
fn each_restart_after_a_lost_seal_may_skip_one_epoch() {
    let dir = TempDir::new("lost-seals");
    keygen(&dir);
    let run = || {
        let audit = Audit::start(settings(&dir, true)).unwrap();
        durable(&audit, req("trace"));
        audit.shutdown("test over");
    };
    run();
    let evolve = || {
        let key = seal::load(&dir.key()).unwrap();
        seal::store(&dir.key(), &key.next()).unwrap();
    };
    // A crash after the key file evolved and before its seal was written: the key file is one
    // epoch ahead of the seals, and the next start declares it.
    evolve();
    // That start crashes the same way: cut its final stop and seal, whose key is spent.
    run();
    let active = dir.audit().join("audit.jsonl");
    let mut kept = lines(&active);
    let cut = kept.split_off(kept.len() - 2);
    assert_eq!(record::parse(&cut[1]).unwrap().kind, "seal");
    let bytes: Vec<u8> = kept.iter().flat_map(|l| l.iter().chain(b"\n")).copied().collect();
    std::fs::write(&active, bytes).unwrap();
    // The last start declares two epochs past the last seal, after two restarts: allowed.
    run();
    let records = records(&dir.audit());
    let epochs: Vec<u64> = of_type(&records, "seal")
        .iter()
        .map(|s| s["epoch"].as_u64().unwrap())
        .collect();
    assert!(epochs.windows(2).any(|w| w[1] == w[0] + 3), "{epochs:?}");
    assert_eq!(verify(&dir, true, true), 0);
}
