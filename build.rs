//! What `ssp --version` says about the build: the commit, the build date, rustc and the
//! target. No crate: git, rustc and cargo's own variables, each "unknown" when absent (a
//! source tarball has no git).

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let output = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let commit = output("git", &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc = output(&rustc, &["--version"]).unwrap_or_else(|| "unknown".into());
    // SOURCE_DATE_EPOCH for reproducible builds (Debian sets it), else now.
    let seconds = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    println!("cargo:rustc-env=SSP_COMMIT={commit}");
    println!("cargo:rustc-env=SSP_BUILD_DATE={}", date(seconds));
    println!("cargo:rustc-env=SSP_RUSTC={rustc}");
    println!(
        "cargo:rustc-env=SSP_TARGET={}",
        std::env::var("TARGET").unwrap_or_else(|_| "unknown".into())
    );
    // A new commit moves the branch HEAD names; a checkout moves HEAD itself.
    let branch = output("git", &["rev-parse", "--symbolic-full-name", "HEAD"]);
    for file in ["HEAD"].into_iter().chain(branch.as_deref()) {
        if let Some(path) = output("git", &["rev-parse", "--git-path", file]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
}

/// `YYYY-MM-DD` (UTC) of a time in seconds since the epoch (Howard Hinnant's civil_from_days).
fn date(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
