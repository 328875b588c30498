//! The `Authorization: Bearer` JWT claims parser (row 7): base64url and JSON from the
//! consumer, which must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ssp::policy::jwt::parse_bearer(data);
});
