//! The provider's response head: a provider is trusted less than the consumer is protected,
//! so its bytes must never panic the proxy. Byte 0 picks the request method (HEAD and
//! CONNECT change the framing rules).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ssp::http::response;

const METHODS: [&str; 5] = ["GET", "HEAD", "POST", "CONNECT", "DELETE"];

/// `SSP_FUZZ_SKIP_KNOWN=1` steps around the bug pinned by
/// `tests/fuzz_regressions.rs::response_reason_outside_the_buffer_does_not_panic` (a status
/// line with no reason phrase, or a non-ASCII byte in it, panics in `response::parse`), so the
/// rest can still be fuzzed. Remove with the fix.
fn skip_known(buf: &[u8]) -> bool {
    static SKIP: OnceLock<bool> = OnceLock::new();
    let status_line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let no_reason = status_line.iter().filter(|&&b| b == b' ').count() < 2;
    let obs_text = status_line.iter().any(|&b| b >= 0x80);
    *SKIP.get_or_init(|| std::env::var_os("SSP_FUZZ_SKIP_KNOWN").is_some()) && (no_reason || obs_text)
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, buf)) = data.split_first() else {
        return;
    };
    if skip_known(buf) {
        return;
    }
    let method = METHODS[usize::from(pick) % METHODS.len()];
    if let Ok(Some(head)) = response::parse(buf, 32768, method) {
        assert!(head.len() <= buf.len());
        let _ = head.fields().count();
        let _ = head.connection_tokens();
        let _ = head.is_interim();
        let _ = head.reason();
    }
});
