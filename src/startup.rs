//! What `ssp check`, `ssp run` and a SIGHUP reload all do before anything serves: one code
//! path, so that a configuration `ssp check` passes also starts and reloads, and one it
//! refuses is refused by them with the same words (nginx `-t`, HAProxy `-c`).
//!
//! Every problem found is reported, not only the first: the configuration's (each section
//! and entry), then every file it names (certificates, keys, CRLs, the audit key) and the
//! folders the proxy will write to. Nothing is created or changed.

use std::ffi::CString;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::config::{self, ConfigErrors};
use crate::proxy::Shared;

/// Every reason a configuration cannot run, one line each (`FILE:LINE: ...` or `PATH: ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<String>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

/// Loads the configuration at `path` and everything it names, as `run` will use it.
pub fn load(path: &Path) -> Result<Shared, Problems> {
    load_with(path, None)
}

/// `load`, with the SDS export read from `sds_ldif` instead of `[sds] ldif` (`ssp check --sds`).
pub fn load_with(path: &Path, sds_ldif: Option<&Path>) -> Result<Shared, Problems> {
    let (cfg, mut problems) = match config::load_with(path, sds_ldif) {
        Ok(cfg) => (cfg, Vec::new()),
        // Defaults stand in for the bad values: the files are checked all the same.
        Err(ConfigErrors(errors, Some(cfg))) => (*cfg, lines(&errors)),
        Err(ConfigErrors(errors, None)) => return Err(Problems(lines(&errors))),
    };
    let mut audit = Vec::new();
    if let Some(key) = &cfg.audit.key
        && let Err(e) = crate::audit::seal::load(key)
    {
        audit.push(e.to_string());
    }
    let dir = &cfg.audit.dir;
    if let Err(why) = writable(dir, true) {
        audit.push(format!("{}: the audit folder ([audit] dir) {why}", dir.display()));
    }
    if let Some(log) = &cfg.transactions.path
        && let Err(why) = writable(log, false)
    {
        audit.push(format!(
            "{}: the transactions log ([transactions] path) {why}",
            log.display()
        ));
    }
    // In the order an operator reads the file: its own lines, the files it names, the audit.
    let loaded = Shared::load(cfg);
    if let Err(files) = &loaded {
        problems.extend(files.to_string().lines().map(String::from));
    }
    problems.extend(audit);
    match loaded {
        Ok(shared) if problems.is_empty() => Ok(shared),
        _ => Err(Problems(problems)),
    }
}

fn lines(errors: &[config::ConfigError]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

/// Whether the proxy will be able to write `path` (a folder it creates if missing, or a file
/// it appends to), as the user running this: what exists must be of that kind and writable,
/// and what does not must be creatable in the nearest folder that does.
fn writable(path: &Path, folder: bool) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) if folder && !meta.is_dir() => return Err("is not a folder".into()),
        Ok(meta) if !folder && !meta.is_file() => return Err("is not a regular file".into()),
        Ok(_) => return access(path, folder).map_err(|e| format!("cannot be written: {e}")),
        Err(_) => {}
    }
    let mut above = path.parent();
    while let Some(dir) = above {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {
                return access(dir, true).map_err(|e| format!("cannot be created in {}: {e}", dir.display()));
            }
            Ok(_) => return Err(format!("cannot be created: {} is not a folder", dir.display())),
            Err(_) => above = dir.parent(),
        }
    }
    Err("cannot be created: no folder above it exists".into())
}

/// access(2) for writing (and, for a folder, entering): also says "read-only file system",
/// which a unit's `ProtectSystem=strict` makes of every path it does not list.
fn access(path: &Path, folder: bool) -> std::io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mode = if folder {
        libc::W_OK | libc::X_OK
    } else {
        libc::W_OK
    };
    // SAFETY: access(2) reads the NUL-terminated path and nothing else.
    if unsafe { libc::access(c_path.as_ptr(), mode) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_to_write_must_be_one_or_creatable_under_one() {
        let tmp = std::env::temp_dir();
        assert_eq!(writable(&tmp, true), Ok(()));
        assert_eq!(writable(&tmp.join("ssp-not-yet/audit"), true), Ok(()));
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        assert_eq!(writable(&file, true), Err("is not a folder".into()));
        let under_file = writable(&file.join("audit"), true).unwrap_err();
        assert!(under_file.contains("is not a folder"), "{under_file}");
        assert_eq!(writable(&tmp, false), Err("is not a regular file".into()));
    }
}
