//! A small tmpfs for disk-full tests: mounted on a folder, unmounted when dropped. Mounting
//! needs root; without it the test says so and skips.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Mounts a tmpfs of `size` (e.g. "256k") on `dir`, creating it; `None` when not permitted.
pub fn tmpfs(dir: &Path, size: &str) -> Option<Mount> {
    std::fs::create_dir_all(dir).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        println!("note: cannot mount a tmpfs here (not root?); the disk-full test is skipped");
    }
    mounted.then(|| Mount(dir.to_owned()))
}

/// Takes every free byte of the file system holding `dir`; returns the filler to remove.
pub fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
    filler
}
