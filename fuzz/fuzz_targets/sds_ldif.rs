//! The SDS export reader (issue 18): an export is fetched from a directory over the network,
//! so any bytes must give `line N` errors or entries, never a panic; and whatever entries come
//! out, deriving consumers and providers from them and diffing the result must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match ssp::sds::ldif::parse(data) {
        Ok(entries) => {
            let export = ssp::sds::derive(&entries, None);
            let asids = export.asids();
            let _ = ssp::sds::diff(&export, &ssp::sds::Export::default());
            let _ = ssp::sds::check_shrink(&asids, &[], 0.1);
            for skipped in &export.skipped {
                let _ = skipped.reason.to_string();
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            for e in errors {
                let _ = e.to_string();
            }
        }
    }
});
