//! The configuration loader (SPEC section 3): an operator's typo must give a `FILE:LINE: key`
//! error, never a panic. `parse` does not touch the file system.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = ssp::config::parse(text, Path::new("/fuzz/ssp.toml")) {
        // Rendering the error is part of the path an operator sees.
        let _ = e.to_string();
    }
});
