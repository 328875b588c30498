//! `/https://host[:port]/path`: the URL the proxy connects to and checks against the
//! registered endpoint (rows 5 and 12). What it prints must be what it parsed, or the check
//! and the connection could disagree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssp::http::target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = target::parse(raw) else { return };
    let printed = format!("/{parsed}");
    let again = target::parse(&printed);
    assert_eq!(again, Ok(parsed.clone()), "{raw:?} printed as {printed:?}");
    let _ = parsed.path();
    let _ = parsed.authority().to_string();
});
