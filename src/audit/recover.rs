//! Start-up: where the chain stands, and what a crash left at the end of the active file.
//!
//! A crash (kill -9, power loss) can leave the last write partial: some complete records, then
//! a line without its newline, or one whose bytes do not hash. Those trailing bytes are never
//! silently dropped: they are copied to a side file and declared by a `torn` record (length
//! and SHA-256) that `verify` checks. Anything worse than a torn tail is refused, so that a
//! damaged file is looked at by a person rather than "repaired".

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::AuditError;
use super::files::{self, ACTIVE, LineRead};
use super::record::{self, Entry, Head, MAX_LINE, Parsed};

/// How far back from the end of the active file a valid record is looked for. One crash tears
/// at most one batch; more than this is damage, not a torn write.
const MAX_TORN: u64 = 4 << 20;

/// The end of a file: where its valid records stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    /// Bytes up to and including the last valid record's newline (file offset).
    pub good_len: u64,
    pub last: Option<Parsed>,
    /// Where the bytes after the last valid record start in the scanned buffer.
    pub torn_from: usize,
}

/// Scans `buf`, the end of a file starting at offset `base`, backwards for the last complete
/// line that is a valid record. Lines after it are torn.
pub fn scan_tail(buf: &[u8], base: u64) -> Result<Tail, String> {
    let mut end = buf.len();
    loop {
        if end == 0 && base == 0 {
            return Ok(Tail {
                good_len: 0,
                last: None,
                torn_from: 0,
            });
        }
        let complete = end > 0 && buf[end - 1] == b'\n';
        let content_end = if complete { end - 1 } else { end };
        let start = buf[..content_end]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        if start == 0 && base > 0 {
            return Err(format!("no valid record in its last {} bytes", buf.len()));
        }
        if complete && let Ok(parsed) = record::parse(&buf[start..content_end]) {
            return Ok(Tail {
                good_len: base + end as u64,
                last: Some(parsed),
                torn_from: end,
            });
        }
        end = start;
    }
}

/// What start-up found in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The chain head: after the active file's last valid record, else the newest rotated
    /// file's, else genesis.
    pub head: Head,
    /// The active file's valid length (0 when it is missing or holds no valid record).
    pub good_len: u64,
    /// Bytes after the last valid record of the active file.
    pub torn: Vec<u8>,
    /// The active file's first and last valid records.
    pub first: Option<Parsed>,
    pub last: Option<Parsed>,
    /// The newest rotated file, which a new active file continues.
    pub previous: Option<String>,
}

pub fn inspect(dir: &Path) -> Result<Found, AuditError> {
    let path = dir.join(ACTIVE);
    let (tail, torn, first) = match File::open(&path) {
        Ok(mut file) => {
            let (buf, base) = files::read_tail(&mut file, MAX_TORN).map_err(|e| AuditError::io(&path, e))?;
            let tail = scan_tail(&buf, base).map_err(|m| {
                AuditError::new(&path, format!("{m}: damaged, not torn; move it aside to start"))
            })?;
            let first = if tail.good_len > 0 {
                first_record(&path)?
            } else {
                None
            };
            let torn = buf[tail.torn_from..].to_vec();
            (tail, torn, first)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => (
            Tail {
                good_len: 0,
                last: None,
                torn_from: 0,
            },
            vec![],
            None,
        ),
        Err(e) => return Err(AuditError::io(&path, e)),
    };
    let (head, previous) = match &tail.last {
        Some(last) => (
            Head {
                next_seq: last.seq + 1,
                prev: last.h,
            },
            None,
        ),
        None => newest_rotated(dir)?,
    };
    // A side file for the next seq is an earlier start's that crashed after cutting its bytes
    // from the active file, before the `torn` record declaring them was durable: declare them.
    let torn = if torn.is_empty() && tail.good_len > 0 {
        undeclared(dir, head.next_seq)?.unwrap_or(torn)
    } else {
        torn
    };
    Ok(Found {
        head,
        good_len: tail.good_len,
        torn,
        first,
        last: tail.last,
        previous,
    })
}

/// The bytes of the side file the `torn` record at `next_seq` would name, if there is one.
fn undeclared(dir: &Path, next_seq: u64) -> Result<Option<Vec<u8>>, AuditError> {
    let side = dir.join(files::torn_name(next_seq));
    match std::fs::read(&side) {
        Ok(bytes) if !bytes.is_empty() => Ok(Some(bytes)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AuditError::io(&side, e)),
    }
}

fn first_record(path: &Path) -> Result<Option<Parsed>, AuditError> {
    let file = File::open(path).map_err(|e| AuditError::io(path, e))?;
    let mut buf = Vec::new();
    let read = files::next_line(&mut BufReader::new(file), &mut buf, MAX_LINE)
        .map_err(|e| AuditError::io(path, e))?;
    Ok(match read {
        LineRead::Line { complete: true } => record::parse(&buf).ok(),
        _ => None,
    })
}

/// The head after the rotated file with the highest first seq, when the active file has none.
fn newest_rotated(dir: &Path) -> Result<(Head, Option<String>), AuditError> {
    let rotated = files::rotated_files(dir).map_err(|e| AuditError::io(dir, e))?;
    let Some((name, _)) = rotated.into_iter().max_by_key(|(_, seq)| *seq) else {
        return Ok((Head::GENESIS, None));
    };
    let path = dir.join(&name);
    let mut file = File::open(&path).map_err(|e| AuditError::io(&path, e))?;
    let (buf, base) = files::read_tail(&mut file, MAX_TORN).map_err(|e| AuditError::io(&path, e))?;
    match scan_tail(&buf, base) {
        Ok(Tail {
            last: Some(last),
            torn_from,
            ..
        }) if torn_from == buf.len() => Ok((
            Head {
                next_seq: last.seq + 1,
                prev: last.h,
            },
            Some(name),
        )),
        _ => Err(AuditError::new(
            &path,
            "the newest rotated file does not end with a valid record",
        )),
    }
}

/// Copies the torn bytes to their side file (durably), then cuts them from the active file,
/// and returns the record that declares them. Copy before cut: a crash in between repeats the
/// copy at the next start rather than losing the bytes. A side file already there holds bytes
/// an earlier start moved aside and never declared: they are kept, and declared with these.
pub fn set_aside(dir: &Path, found: &Found, name: &str) -> Result<Entry, AuditError> {
    let side = dir.join(name);
    let write_side = || -> io::Result<Vec<u8>> {
        let mut kept = match std::fs::read(&side) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut file = OpenOptions::new().append(true).create(true).open(&side)?;
        // Already there when a crash came between copy and cut.
        if !kept.ends_with(&found.torn) {
            file.write_all(&found.torn)?;
            kept.extend_from_slice(&found.torn);
        }
        file.sync_all()?;
        files::sync_dir(dir)?;
        Ok(kept)
    };
    let kept = write_side().map_err(|e| AuditError::io(&side, e))?;
    let active = dir.join(ACTIVE);
    let cut = || -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(&active)?;
        file.set_len(found.good_len)?;
        file.sync_all()
    };
    cut().map_err(|e| AuditError::io(&active, e))?;
    log::warn!(
        "{}: {} torn bytes after seq {} moved to {name}",
        active.display(),
        kept.len(),
        found.head.next_seq.wrapping_sub(1)
    );
    Ok(Entry::Torn {
        file: name.to_owned(),
        length: kept.len() as u64,
        sha256: Sha256::digest(&kept).into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{GENESIS, line};

    fn chain(n: u64) -> (Vec<u8>, Vec<[u8; 32]>) {
        let mut out = Vec::new();
        let mut hashes = Vec::new();
        let mut prev = GENESIS;
        for seq in 0..n {
            let l = line(
                seq,
                "2026-03-21T10:04:05.123Z",
                &Entry::Close { reason: "x" },
                &prev,
            );
            out.extend_from_slice(&l.bytes);
            hashes.push(l.h);
            prev = l.h;
        }
        (out, hashes)
    }

    #[test]
    fn a_clean_file_has_no_torn_bytes() {
        let (buf, hashes) = chain(3);
        let tail = scan_tail(&buf, 0).unwrap();
        assert_eq!((tail.good_len, tail.torn_from), (buf.len() as u64, buf.len()));
        assert_eq!(tail.last.unwrap().h, hashes[2]);
    }

    #[test]
    fn a_partial_last_line_is_torn() {
        let (mut buf, hashes) = chain(2);
        let good = buf.len();
        buf.extend_from_slice(b"{\"seq\":2,\"ts\":\"20");
        let tail = scan_tail(&buf, 0).unwrap();
        assert_eq!((tail.good_len, tail.torn_from), (good as u64, good));
        assert_eq!(tail.last.unwrap().h, hashes[1]);
    }

    #[test]
    fn complete_lines_that_do_not_hash_are_torn_too() {
        let (mut buf, _) = chain(2);
        let good = buf.len();
        buf.extend_from_slice(&[0u8; 100]);
        buf.extend_from_slice(b"\ngarbage\n");
        assert_eq!(scan_tail(&buf, 0).unwrap().torn_from, good);
    }

    #[test]
    fn nothing_valid_is_an_empty_chain_at_the_start_of_a_file_and_an_error_later() {
        assert_eq!(scan_tail(b"half a li", 0).unwrap().good_len, 0);
        assert_eq!(scan_tail(b"", 0).unwrap().torn_from, 0);
        assert!(scan_tail(b"xx\nhalf a li", 100).is_err());
    }

    #[test]
    fn a_window_that_starts_mid_file_skips_its_cut_first_line() {
        let (buf, hashes) = chain(3);
        let base = 10;
        let tail = scan_tail(&buf[base..], base as u64).unwrap();
        assert_eq!(tail.good_len, buf.len() as u64);
        assert_eq!(tail.last.unwrap().h, hashes[2]);
    }
}
