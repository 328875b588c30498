//! The provider's response head: a provider is trusted less than the consumer is protected,
//! so its bytes must never panic the proxy. Byte 0 picks the request method (HEAD and
//! CONNECT change the framing rules).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssp::http::response;

const METHODS: [&str; 5] = ["GET", "HEAD", "POST", "CONNECT", "DELETE"];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, buf)) = data.split_first() else {
        return;
    };
    let method = METHODS[usize::from(pick) % METHODS.len()];
    if let Ok(Some(head)) = response::parse(buf, 32768, method) {
        assert!(head.len() <= buf.len());
        let _ = head.fields().count();
        let _ = head.connection_tokens().count();
        let _ = head.is_interim();
        let _ = head.reason();
    }
});
