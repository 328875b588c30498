//! The `Authorization: Bearer` JWT (row 7): base64url and JSON from the consumer, which must
//! never panic. The one JSON reader (`policy::json`) must never accept what serde_json
//! refuses; a token the decision admits must yield its claims for the audit, and `enforce`
//! must call malformed exactly what the shape check does.
//!
//! The first byte picks what the rest is: 0, a whole `Authorization` value; 1, the JWT
//! header's JSON; anything else, the payload's JSON (the other part fixed and valid).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use ssp::policy::headers::{Asid, SspHeaders};
use ssp::policy::refusal::Refusal;
use ssp::policy::{json, jwt};

static ENFORCE: LazyLock<jwt::Policy> = LazyLock::new(|| {
    jwt::Policy::new(&ssp::config::Jwt {
        mode: ssp::config::JwtMode::Enforce,
        leeway: std::time::Duration::from_secs(60),
        bind_sender: true,
        scopes: [("urn:x".to_string(), vec!["s".to_string()])].into(),
    })
});

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
    let ssp = SspHeaders {
        trace_id: b"5b6f3f8e-7a1d-4c1e-9d3a-2f0b6c1e8a44",
        from: Asid::new(b"200000000001").unwrap(),
        to: Asid::new(b"200000000999").unwrap(),
        interaction: b"urn:x",
    };
    let enforced = jwt::check(&ENFORCE, &token, &ssp, 1_800_000_000);
    assert_eq!(
        enforced == Err(Refusal::InvalidHeader("Authorization")),
        !admitted,
        "enforce and shape disagree on {token:?}"
    );
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
