//! The `Authorization: Bearer` JWT (row 7): base64url and JSON from the consumer, which must
//! never panic. The admission's own JSON reader (`policy::json`) must never accept what
//! serde_json refuses: a token the decision admits must yield its claims for the audit.
//!
//! The first byte picks what the rest is: 0, a whole `Authorization` value; 1, the JWT
//! header's JSON; anything else, the payload's JSON (the other part fixed and valid).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssp::policy::{json, jwt};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let token = match mode {
        0 => rest.to_vec(),
        1 => format!("Bearer {}.{}.", b64(rest), b64(b"{}")).into_bytes(),
        _ => format!("Bearer {}.{}.", b64(br#"{"alg":"none"}"#), b64(rest)).into_bytes(),
    };
    let admitted = jwt::is_valid_bearer(&token);
    let claims = jwt::parse_bearer(&token);
    assert!(!admitted || claims.is_some(), "admitted without claims: {token:?}");
    if json::object_with_string(rest, "alg").is_some() {
        assert!(
            serde_json::from_slice::<serde_json::Value>(rest).is_ok(),
            "accepted what serde_json refuses: {:?}",
            String::from_utf8_lossy(rest)
        );
    }
});

fn b64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |a, &b| (a << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}
