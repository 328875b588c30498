//! Replacing a file so that a crash or a concurrent reader sees the old file or the new one,
//! never a torn one: write a temporary file in the same folder, fsync it, rename it over the
//! old one, fsync the folder (so the rename itself survives a power cut). Used for fetched
//! CRLs and for the evolving audit key.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Replaces `path` with `bytes`; a new file gets `mode` (e.g. 0o600 for a key).
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let temp = folder_of(path).join(format!(".{name}.tmp"));
    // A leftover from a crash would make `create_new` fail; it holds nothing we still need.
    let _ = fs::remove_file(&temp);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written?;
    sync_dir(folder_of(path))
}

/// Makes renames and creations in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The folder a path's file is in (`.` for a bare name).
pub fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_swaps_the_contents_and_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("ssp-durable-file-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("level1c.crl");
        fs::write(&path, b"old").unwrap();
        replace(&path, b"new", 0o644).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["level1c.crl"]);
        assert!(replace(&dir.join("missing/x.crl"), b"x", 0o644).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
