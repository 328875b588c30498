//! Replacing a file so that a crash or a concurrent reader sees the old file or the new one,
//! never a torn one: write a temporary file in the same folder, fsync it, rename it over the
//! old one, fsync the folder (so the rename itself survives a power cut). Used for fetched
//! CRLs and for the evolving audit key. Also: starting writeback early for a file that is
//! appended to without syncs (the audit with `sync = "off"`).

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

/// A file written but not synced gets [`start_writeback`] every this many bytes.
pub const WRITEBACK_EVERY: u64 = 1 << 20;

/// Asks the kernel to start writing `file`'s dirty pages to disk, without waiting for it. A
/// file that is written but never synced would otherwise collect up to the kernel's dirty
/// limits: the one fdatasync that must come (an audit rotation or seal) would stall for all of
/// it, and the kernel's own writeback 30 s later goes out in one burst whose block work stalls
/// whatever shares its CPU for tens of milliseconds (seen in `scripts/bench` as a p99.9 of
/// 40 ms). Best effort: where this is not available, that sync is just slower.
pub fn start_writeback(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain system call on a descriptor `file` keeps open for the duration; a
        // zero length means "to the end of the file".
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
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
