//! The active file's life: created with an `open` record, reopened and cut back after a
//! failure, rotated by renaming (never copy-truncate, so `tail -F` follows), and rescued if
//! someone deletes it while it is open.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Item, Writer};
use crate::audit::files::{self, ACTIVE};
use crate::audit::record::{self, Entry, format_ts};

/// Where the file we were writing went, if not where it should be.
pub(super) enum Displaced {
    No,
    Deleted,
    Moved,
}

impl Writer {
    /// Seals, closes, renames, and starts the next file with an `open` record.
    pub(super) fn rotate(&mut self, reason: &'static str, now: SystemTime) {
        let mut items = Vec::new();
        if self.prepare_seal() {
            items.push(Item::seal());
        }
        items.push(Item::entry(Entry::Close { reason }));
        if !self.write(items, now, true) {
            return;
        }
        let time = record::compact_ts(&format_ts(now)).unwrap_or_default();
        let name = files::rotated_name(&time, self.file_first_seq);
        let displaced = self.displaced().unwrap_or_else(|e| {
            // The rename will find out for sure; treating our file as a stranger would not.
            log::warn!("audit: cannot check {}: {e}", self.dir.join(ACTIVE).display());
            Displaced::No
        });
        let placed = match displaced {
            Displaced::No => {
                self.closed_as = Some(name);
                Ok(())
            }
            Displaced::Deleted => self.rescue(&name).map(|()| {
                self.alarm(format!(
                    "{ACTIVE} was deleted while open; its records were saved as {name}"
                ));
                self.opening = Some(Some(name));
            }),
            Displaced::Moved => {
                self.alarm(format!(
                    "{ACTIVE} was moved away while open; it is no longer in the audit directory"
                ));
                self.opening = Some(None);
                Ok(())
            }
        };
        self.forget_file();
        self.ident = None;
        self.good_len = 0;
        match placed.and_then(|()| self.ensure_file(now)) {
            Ok(()) => {
                self.write(Vec::new(), now, true);
            }
            Err(e) => self.fail(e, Vec::new(), now),
        }
    }

    /// Copies a deleted active file (still open) under its rotated name.
    fn rescue(&self, name: &str) -> io::Result<()> {
        let Some(file) = &self.file else { return Ok(()) };
        let tmp = self.dir.join(format!("{name}.tmp"));
        let mut out = File::create(&tmp)?;
        let mut source = file;
        source.seek(SeekFrom::Start(0))?;
        io::copy(&mut source.take(self.good_len), &mut out)?;
        out.sync_all()?;
        fs::rename(&tmp, self.dir.join(name))?;
        files::sync_dir(&self.dir)
    }

    pub(super) fn displaced(&self) -> io::Result<Displaced> {
        let Some(file) = &self.file else {
            return Ok(Displaced::No);
        };
        let ours = file.metadata()?;
        let gone = if ours.nlink() == 0 {
            Displaced::Deleted
        } else {
            Displaced::Moved
        };
        match fs::metadata(self.dir.join(ACTIVE)) {
            Ok(m) if (m.dev(), m.ino()) == (ours.dev(), ours.ino()) => Ok(Displaced::No),
            Ok(_) => Ok(gone),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(gone),
            Err(e) => Err(e),
        }
    }

    /// Gets the active file ready for appending: finishes a pending rename, starts a new file,
    /// or reopens the current one and cuts it back to its last good byte.
    pub(super) fn ensure_file(&mut self, now: SystemTime) -> io::Result<()> {
        if self.file.is_some() {
            return Ok(());
        }
        if let Some(name) = self.closed_as.clone() {
            match fs::rename(self.dir.join(ACTIVE), self.dir.join(&name)) {
                Ok(()) => {}
                // Renamed before a failed directory sync.
                Err(e) if e.kind() == io::ErrorKind::NotFound && self.dir.join(&name).exists() => {}
                Err(e) => return Err(e),
            }
            files::sync_dir(&self.dir)?;
            self.closed_as = None;
            self.opening = Some(Some(name));
            self.ident = None;
            self.good_len = 0;
        }
        // No file of ours yet (a rotation, a fresh directory): make one. Otherwise reopen ours,
        // which may be the new file whose `open` record failed.
        if self.ident.is_none() && self.good_len == 0 {
            return self.create_file(now);
        }
        self.reopen(now)
    }

    fn create_file(&mut self, now: SystemTime) -> io::Result<()> {
        let path = self.dir.join(ACTIVE);
        let open = || {
            OpenOptions::new()
                .read(true)
                .append(true)
                .create_new(true)
                .mode(0o640)
                .open(&path)
        };
        let file = match open() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.set_aside_stranger()?;
                open()?
            }
            other => other?,
        };
        files::sync_dir(&self.dir)?;
        let meta = file.metadata()?;
        self.ident = Some((meta.dev(), meta.ino()));
        self.file = Some(file);
        self.good_len = 0;
        self.file_first_seq = self.head.next_seq;
        self.rotate_at = next_midnight(now);
        Ok(())
    }

    fn reopen(&mut self, now: SystemTime) -> io::Result<()> {
        let path = self.dir.join(ACTIVE);
        let file = match OpenOptions::new().read(true).append(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.alarm(format!(
                    "{ACTIVE} disappeared; records up to seq {} were in it",
                    self.last_seq()
                ));
                self.opening = Some(None);
                return self.create_file(now);
            }
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        let ours = self.ident.is_none_or(|id| id == (meta.dev(), meta.ino()));
        if !ours || meta.len() < self.good_len {
            drop(file);
            self.set_aside_stranger()?;
            self.alarm(format!(
                "{ACTIVE} was replaced or cut short behind the writer's back; records up to seq {} were in it",
                self.last_seq()
            ));
            self.opening = Some(None);
            return self.create_file(now);
        }
        file.set_len(self.good_len)?;
        file.sync_data()?;
        self.ident = Some((meta.dev(), meta.ino()));
        self.file = Some(file);
        Ok(())
    }

    /// Something at `audit.jsonl` that is not the file being written: never overwritten, kept
    /// beside it for a person to look at (an empty one is simply removed).
    fn set_aside_stranger(&mut self) -> io::Result<()> {
        let path = self.dir.join(ACTIVE);
        if fs::metadata(&path)?.len() == 0 {
            return fs::remove_file(&path);
        }
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let aside = format!("{ACTIVE}.foreign-{secs}");
        fs::rename(&path, self.dir.join(&aside))?;
        self.alarm(format!("an unexpected {ACTIVE} was moved to {aside}"));
        Ok(())
    }

    fn last_seq(&self) -> String {
        self.head
            .next_seq
            .checked_sub(1)
            .map_or_else(|| "none".into(), |s| s.to_string())
    }
}

/// The next 00:00:00 UTC after `t`.
pub(super) fn next_midnight(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    UNIX_EPOCH + Duration::from_secs((secs / 86_400 + 1) * 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_rotation_is_at_the_next_utc_midnight() {
        let t = UNIX_EPOCH + Duration::from_secs(1_774_087_445); // 2026-03-21T10:04:05Z
        assert_eq!(format_ts(next_midnight(t)), "2026-03-22T00:00:00.000Z");
        let midnight = UNIX_EPOCH + Duration::from_secs(1_774_137_600);
        assert_eq!(format_ts(next_midnight(midnight)), "2026-03-23T00:00:00.000Z");
    }
}
