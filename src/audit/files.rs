//! The audit directory's names and the few file operations every part shares.

use std::fs::File;
use std::io::{self, BufRead, Read, Seek, SeekFrom};
use std::path::Path;

/// The file being written. `tail -F audit.jsonl` follows it across rotations.
pub const ACTIVE: &str = "audit.jsonl";
const TORN_PREFIX: &str = "audit.jsonl.torn-";

/// `audit-<yyyymmddThhmmssZ>-<first seq>.jsonl`: sorts by time in a listing, and says which
/// records it holds. The time is the `ts` of its `close` record.
pub fn rotated_name(compact_ts: &str, first_seq: u64) -> String {
    format!("audit-{compact_ts}-{first_seq}.jsonl")
}

/// The time and first seq a rotated file's name claims.
pub fn parse_rotated(name: &str) -> Option<(&str, u64)> {
    let (time, seq) = name
        .strip_prefix("audit-")?
        .strip_suffix(".jsonl")?
        .split_once('-')?;
    let seq_ok = !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit());
    (time.len() == 16 && seq_ok).then_some(())?;
    Some((time, seq.parse().ok()?))
}

/// Where the bytes found after the last valid record are kept when the next record is `seq`.
pub fn torn_name(seq: u64) -> String {
    format!("{TORN_PREFIX}{seq}")
}

/// Whether a `torn` record's `file` names a side file in the directory (and nothing else: the
/// verifier must not be pointed outside it).
pub fn is_torn_name(name: &str) -> bool {
    name.strip_prefix(TORN_PREFIX)
        .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
}

pub use crate::durable_file::sync_dir;

/// The rotated files in `dir`, with the first seq their names claim.
pub fn rotated_files(dir: &Path) -> io::Result<Vec<(String, u64)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some((_, seq)) = name.to_str().and_then(parse_rotated) {
            found.push((name.to_string_lossy().into_owned(), seq));
        }
    }
    Ok(found)
}

/// The last `max` bytes of `file` and the offset they start at.
pub fn read_tail(file: &mut File, max: u64) -> io::Result<(Vec<u8>, u64)> {
    let len = file.metadata()?.len();
    let base = len.saturating_sub(max);
    file.seek(SeekFrom::Start(base))?;
    let mut buf = Vec::with_capacity(usize::try_from(len - base).unwrap_or(0));
    file.take(len - base).read_to_end(&mut buf)?;
    Ok((buf, base))
}

/// What [`next_line`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineRead {
    /// `buf` holds a line; `complete` is false when the file ended before its newline.
    Line {
        complete: bool,
    },
    /// More than `max` bytes without a newline: not something the writer produces.
    TooLong,
    Eof,
}

/// Reads one line into `buf` (without its newline), never holding more than `max` bytes.
pub fn next_line(reader: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<LineRead> {
    buf.clear();
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(if buf.is_empty() {
                LineRead::Eof
            } else {
                LineRead::Line { complete: false }
            });
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (available.len(), false),
        };
        if buf.len() + take > max {
            return Ok(LineRead::TooLong);
        }
        buf.extend_from_slice(&available[..take]);
        reader.consume(take + usize::from(done));
        if done {
            return Ok(LineRead::Line { complete: true });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names_round_trip_and_strangers_are_ignored() {
        let name = rotated_name("20260321T100405Z", 1234);
        assert_eq!(name, "audit-20260321T100405Z-1234.jsonl");
        assert_eq!(parse_rotated(&name), Some(("20260321T100405Z", 1234)));
        for other in [
            "audit.jsonl",
            "audit-x-1.jsonl",
            "audit-20260321T100405Z-.jsonl",
            "audit-20260321T100405Z-1.json",
        ] {
            assert_eq!(parse_rotated(other), None, "{other}");
        }
    }

    #[test]
    fn torn_names_stay_inside_the_directory() {
        assert!(is_torn_name(&torn_name(5)));
        assert!(!is_torn_name("audit.jsonl.torn-../../etc/passwd"));
        assert!(!is_torn_name("/tmp/audit.jsonl.torn-5"));
        assert!(!is_torn_name("audit.jsonl.torn-"));
    }

    #[test]
    fn next_line_reports_complete_partial_and_overlong_lines() {
        let mut input: &[u8] = b"one\ntwo\nthree";
        let mut buf = Vec::new();
        assert_eq!(
            next_line(&mut input, &mut buf, 16).unwrap(),
            LineRead::Line { complete: true }
        );
        assert_eq!(buf, b"one");
        assert_eq!(
            next_line(&mut input, &mut buf, 16).unwrap(),
            LineRead::Line { complete: true }
        );
        assert_eq!(
            next_line(&mut input, &mut buf, 16).unwrap(),
            LineRead::Line { complete: false }
        );
        assert_eq!(buf, b"three");
        assert_eq!(next_line(&mut input, &mut buf, 16).unwrap(), LineRead::Eof);
        let mut long: &[u8] = b"0123456789\n";
        assert_eq!(next_line(&mut long, &mut buf, 4).unwrap(), LineRead::TooLong);
        let mut empty_line: &[u8] = b"\n";
        assert_eq!(
            next_line(&mut empty_line, &mut buf, 4).unwrap(),
            LineRead::Line { complete: true }
        );
        assert!(buf.is_empty());
    }
}
