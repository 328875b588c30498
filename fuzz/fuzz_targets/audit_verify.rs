//! The audit verifier (SPEC section 5) reads files an attacker may have edited: whatever they
//! hold, it must report, never panic or hang. This drives the pure `Verifier` exactly as
//! `ssp audit verify` (src/audit/cli.rs) does, without the file system.
//!
//! Every record carries its own SHA-256 (`h`) and its predecessor's (`prev`), so a mutated line
//! almost always stops at "hash mismatch". To reach the checks behind that gate (seq order,
//! placement, seal epochs and MACs, torn declarations) the harness can play the attacker who
//! rewrites the chain: recompute each line's `h`, and relink each `prev` to the line before.
//!
//! Input: byte 0 is flags (bit 0: check seals with a key, bit 1: require sealing, bit 2: a
//! rotated file before the active one, split at the first form feed, bit 3: recompute `h`,
//! bit 4: relink `prev`); the rest is the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use ssp::audit::record::MAX_LINE;
use ssp::audit::seal::Key;
use ssp::audit::verify::{Role, Verifier};

/// `,"h":"` + 64 hex + `"}`: the end of every record.
const H_SUFFIX: usize = 72;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Rewrites each line's `h` to the hash of its bytes and, with `relink`, its `prev` to the
/// hash of the line before, as `record::line` would have written them.
fn forge(text: &[u8], relink: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut prev = [0u8; 32];
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        let n = line.len();
        if n < H_SUFFIX + 2 || &line[n - H_SUFFIX..n - 66] != b",\"h\":\"" {
            out.extend_from_slice(line);
            continue;
        }
        let mut body = line[..n - H_SUFFIX].to_vec();
        if relink && let Some(at) = find(&body, b"\"prev\":\"") {
            let start = at + 8;
            if body.len() >= start + 64 {
                body.splice(start..start + 64, hex(&prev).into_bytes());
            }
        }
        let h: [u8; 32] = Sha256::new()
            .chain_update(&body)
            .chain_update(b"}")
            .finalize()
            .into();
        prev = h;
        out.extend_from_slice(&body);
        out.extend_from_slice(format!(",\"h\":\"{}\"}}", hex(&h)).as_bytes());
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

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
    let Some((&flags, text)) = data.split_first() else {
        return;
    };
    let forged;
    let text = if flags & 8 != 0 {
        forged = forge(text, flags & 16 != 0);
        &forged[..]
    } else {
        text
    };
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
