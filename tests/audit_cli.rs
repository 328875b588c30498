//! SPEC section 2: `ssp audit keygen` (the functions `main.rs` calls).

#[path = "common/audit.rs"]
mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;

#[test]
fn keygen_writes_an_epoch_zero_key_with_mode_0600_and_never_overwrites() {
    let dir = TempDir::new("keygen");
    let key = dir.key();
    assert_eq!(ssp::audit::cli::keygen(&key), 0);
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&key).unwrap();
    let words: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(&words[..2], ["ssp-audit-key-v1", "0"]);
    assert_eq!(words[2].len(), 64);
    assert!(words[2].bytes().all(|b| b.is_ascii_hexdigit()));

    assert_eq!(
        ssp::audit::cli::keygen(&key),
        3,
        "an existing key is never replaced"
    );
    assert_eq!(std::fs::read_to_string(&key).unwrap(), text);

    let other = dir.path().join("other.key");
    assert_eq!(ssp::audit::cli::keygen(&other), 0);
    assert_ne!(std::fs::read_to_string(&other).unwrap(), text, "keys are random");
    assert_eq!(ssp::audit::cli::keygen(&dir.path().join("missing/dir/key")), 3);
}

#[test]
fn the_bare_initial_key_verifies_like_the_key_file_copy() {
    let dir = TempDir::new("barekey");
    keygen(&dir);
    let audit = ssp::audit::Audit::start(settings(&dir, true)).unwrap();
    audit.record(deny("t"));
    audit.shutdown("test over");
    // What keygen printed: just the hex.
    let text = std::fs::read_to_string(dir.k0()).unwrap();
    std::fs::write(dir.k0(), format!("{}\n", text.split_whitespace().nth(2).unwrap())).unwrap();
    assert_eq!(verify(&dir, true, true), 0);
}
