//! Replacing a CRL file so that a crash or a concurrent reload sees the old file or the new
//! one, never a torn one: write a temporary file in the same folder, fsync it, rename it over
//! the old one, fsync the folder (so the rename itself survives a power cut).

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let temp = folder.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written?;
    File::open(folder)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_swaps_the_contents_and_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("ssp-crl-store-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("level1c.crl");
        fs::write(&path, b"old").unwrap();
        replace(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["level1c.crl"]);
        assert!(replace(&dir.join("missing/x.crl"), b"x").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
