//! The audit verifier (SPEC section 5) reads files an attacker may have edited: whatever they
//! hold, it must report, never panic or hang. This drives the pure `Verifier` exactly as
//! `ssp audit verify` (src/audit/cli.rs) does, without the file system.
//!
//! Input: byte 0 is flags (bit 0: check seals with a key, bit 1: require sealing, bit 2: a
//! rotated file before the active one, split at the first form feed); the rest is the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssp::audit::record::MAX_LINE;
use ssp::audit::seal::Key;
use ssp::audit::verify::{Role, Verifier};

/// Feeds one file's bytes as `cli::check` does: complete lines, a partial last line, and an
/// overlong line ends the file.
fn feed(verifier: &mut Verifier, name: &str, role: Role, text: &[u8]) {
    verifier.begin_file(name, role);
    let mut rest = text;
    while !rest.is_empty() {
        let (line, complete, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], true, &rest[i + 1..]),
            None => (rest, false, &rest[rest.len()..]),
        };
        if line.len() > MAX_LINE {
            verifier.overlong_line();
            return;
        }
        if complete {
            verifier.line(line);
        } else {
            verifier.partial_line();
        }
        rest = next;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, text)) = data.split_first() else { return };
    let k0 = (flags & 1 != 0).then(|| Key::new(0, [7; 32]));
    let mut verifier = Verifier::new(k0);
    let split = text.iter().position(|&b| b == 0x0c).filter(|_| flags & 4 != 0);
    let active = match split {
        Some(i) => {
            let role = Role::Rotated {
                time: "20261125T173451Z".into(),
                first_seq: 0,
            };
            feed(&mut verifier, "audit-20261125T173451Z-0.jsonl", role, &text[..i]);
            &text[i + 1..]
        }
        None => text,
    };
    feed(&mut verifier, "audit.jsonl", Role::Active, active);
    let mut report = verifier.finish(flags & 2 != 0);
    // A side file that matches nothing, then the summary an operator reads.
    report.check_torn(|name| (name.len() % 2 == 0).then_some((0, [0; 32])));
    let _ = report.summary();
    let code = report.exit_code();
    assert!(code <= 2);
    assert_eq!(code == 0, report.worst().is_none());
});
