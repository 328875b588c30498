//! What request and response heads share: finding the end of a head under the strict
//! line-ending rules, and header lookups over the raw bytes.

use std::ops::Range;

/// Why a head was refused. `TooLarge` answers 431, `Malformed` 400 (SPEC section 4, rows 3–4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    TooLarge,
    Malformed(&'static str),
}

/// For logs and CRL fetch failures: what was wrong, in words.
impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::TooLarge => f.write_str("the head is too large"),
            HeadError::Malformed(why) => f.write_str(why),
        }
    }
}

/// Finds the end of a head (the index just past the blank line), refusing bare CR or LF line
/// endings and obsolete line folding as soon as they are seen, so a sender cannot make us
/// wait for a head that will be refused anyway.
///
/// Returns `Ok(None)` while the head is incomplete.
pub fn find_head_end(buf: &[u8]) -> Result<Option<usize>, HeadError> {
    Ok(match scan_head(buf, 0)? {
        HeadEnd::At(end) => Some(end),
        HeadEnd::NotYet { .. } => None,
    })
}

/// Where a head ends, or where to look again once more bytes have come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadEnd {
    At(usize),
    NotYet { resume: usize },
}

/// [`find_head_end`] from `from`, the `resume` an earlier call returned for a prefix of `buf`:
/// a head that arrives a byte at a time is then scanned once, not once per byte. A consumer
/// trickling a 30 KB head one byte per TLS record over 10 s cost 1.16 s of CPU rescanning it,
/// 0.51 s since (`/tmp` script, 2026-11-26). Every check looks only forward from where it
/// stands, and `resume` is never past a CR whose next bytes were missing.
pub fn scan_head(buf: &[u8], from: usize) -> Result<HeadEnd, HeadError> {
    let mut i = from;
    while i < buf.len() {
        match buf[i] {
            b'\n' => return Err(HeadError::Malformed("bare LF line ending")),
            b'\r' => {
                let Some(&next) = buf.get(i + 1) else {
                    return Ok(HeadEnd::NotYet { resume: i });
                };
                if next != b'\n' {
                    return Err(HeadError::Malformed("bare CR in head"));
                }
                // The byte after CRLF starts the next line.
                match buf.get(i + 2) {
                    None => return Ok(HeadEnd::NotYet { resume: i }),
                    Some(b' ' | b'\t') => {
                        return Err(HeadError::Malformed("obsolete line folding"));
                    }
                    Some(b'\r') => match buf.get(i + 3) {
                        None => return Ok(HeadEnd::NotYet { resume: i }),
                        Some(b'\n') => return Ok(HeadEnd::At(i + 4)),
                        Some(_) => return Err(HeadError::Malformed("bare CR in head")),
                    },
                    Some(_) => i += 2,
                }
            }
            0 => return Err(HeadError::Malformed("NUL byte in head")),
            _ => i += 1,
        }
    }
    Ok(HeadEnd::NotYet { resume: buf.len() })
}

/// Header fields as byte ranges into the raw head they were parsed from.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    ranges: Vec<(Range<usize>, Range<usize>)>,
}

impl Fields {
    /// Records the fields httparse found, as offsets into `raw` (which they borrow from).
    pub fn from_parsed(raw: &[u8], parsed: &[httparse::Header<'_>]) -> Fields {
        let ranges = parsed
            .iter()
            .map(|h| (range_in(raw, h.name.as_bytes()), range_in(raw, h.value)))
            .collect();
        Fields { ranges }
    }

    /// Names and values, in order. Names are ASCII tokens (httparse checked them) and are
    /// compared as bytes, so no UTF-8 work per field.
    pub fn iter<'a>(&'a self, raw: &'a [u8]) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        self.ranges
            .iter()
            .map(move |(n, v)| (&raw[n.clone()], &raw[v.clone()]))
    }

    /// All values of a header, case-insensitively by name, in order. Compares bytes: names
    /// are ASCII tokens (httparse checked them), so no UTF-8 work per lookup.
    pub fn all<'a, 'n>(
        &'a self,
        raw: &'a [u8],
        name: &'n str,
    ) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.ranges
            .iter()
            .filter(move |(n, _)| raw[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(move |(_, v)| &raw[v.clone()])
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// Where `part` lies in `raw`. httparse returns slices of the buffer it parsed, except for a
/// static empty string in some cases (a missing reason phrase): that, or anything else not
/// inside `raw`, is an empty range rather than an out-of-bounds offset.
pub fn range_in(raw: &[u8], part: &[u8]) -> Range<usize> {
    (part.as_ptr() as usize)
        .checked_sub(raw.as_ptr() as usize)
        .filter(|start| start + part.len() <= raw.len())
        .map_or(0..0, |start| start..start + part.len())
}

/// Trims optional whitespace (SP and HTAB) from both ends of a field value.
pub fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|b| !matches!(b, b' ' | b'\t'));
    let Some(start) = start else { return &[] };
    let end = value
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &value[start..end]
}

/// Iterates the comma-separated tokens of a list-valued field, trimmed, empty ones skipped.
pub fn list_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

/// A decimal Content-Length: digits only (no sign, no list, no spaces inside), at most 19
/// digits so it always fits in a u64.
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    let digits = trim_ows(value);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits
        .iter()
        .try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// Headers that describe one hop and are never forwarded (RFC 9110 section 7.6.1), plus
/// whatever the message's own `Connection` header names.
/// `connection_tokens` is only walked when `name` is none of the fixed ones.
pub fn is_hop_by_hop<'t>(name: &[u8], mut connection_tokens: impl Iterator<Item = &'t [u8]>) -> bool {
    const FIXED: &[&str] = &[
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
    ];
    FIXED.iter().any(|h| h.as_bytes().eq_ignore_ascii_case(name))
        || name.len() > 6 && name[..6].eq_ignore_ascii_case(b"proxy-")
        || connection_tokens.any(|t| t.eq_ignore_ascii_case(name))
}

/// Finds a field in a head that could not be parsed, so that an answer to a malformed request
/// can still echo `Ssp-TraceID` and honour `Accept`. Only values of visible ASCII are returned:
/// they go into our answer's head.
pub fn sniff_field<'a>(buf: &'a [u8], name: &str) -> Option<&'a [u8]> {
    buf.split(|&b| b == b'\n')
        .skip(1)
        .take_while(|line| !line.is_empty() && *line != b"\r")
        .find_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|&b| b == b':')?;
            let value = trim_ows(&line[colon + 1..]);
            let visible = !value.is_empty() && value.iter().all(|b| matches!(b, b' '..=b'~'));
            (line[..colon].eq_ignore_ascii_case(name.as_bytes()) && visible).then_some(value)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scanning a growing buffer from each `resume` decides every head as one scan of the whole
    /// does, at every byte it may arrive at.
    #[test]
    fn a_resumed_scan_decides_as_a_whole_scan_does() {
        let heads: [&[u8]; 9] = [
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\r\n\tc\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rX\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\rX",
            b"GET / HTTP/1.1\r\nHost: \0\r\n\r\n",
            b"\r\n\r\n",
        ];
        for head in heads {
            let whole = find_head_end(head);
            for step in 1..=3 {
                let mut resume = 0;
                let mut got = Ok(None);
                for len in (step..head.len() + step).step_by(step) {
                    let buf = &head[..len.min(head.len())];
                    got = match scan_head(buf, resume) {
                        Ok(HeadEnd::At(end)) => Ok(Some(end)),
                        Ok(HeadEnd::NotYet { resume: r }) => {
                            assert!(r >= resume && r <= buf.len());
                            resume = r;
                            Ok(None)
                        }
                        Err(e) => Err(e),
                    };
                    if !matches!(got, Ok(None)) {
                        break;
                    }
                }
                assert_eq!(
                    got,
                    whole,
                    "{:?} fed {step} bytes at a time",
                    String::from_utf8_lossy(head)
                );
            }
        }
    }

    #[test]
    fn head_end_is_found_after_blank_line() {
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY"),
            Ok(Some(27))
        );
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r"), Ok(None));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r"), Ok(None));
    }

    #[test]
    fn bare_lf_cr_and_folding_are_refused_early() {
        assert!(find_head_end(b"GET / HTTP/1.1\nHost").is_err());
        assert!(find_head_end(b"GET / HTTP/1.1\rHost").is_err());
        assert!(find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n").is_err());
        assert!(find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n\tc\r\n\r\n").is_err());
        assert!(find_head_end(b"GET / HTTP/1.1\r\nA: b\0\r\n\r\n").is_err());
        assert!(find_head_end(b"GET / HTTP/1.1\r\n\r\rx").is_err());
    }

    #[test]
    fn fields_are_sniffed_from_heads_that_do_not_parse() {
        let raw = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\nssp-traceid: abc\r\n\r\nX: y";
        assert_eq!(sniff_field(raw, "Ssp-TraceID"), Some(&b"abc"[..]));
        assert_eq!(sniff_field(raw, "X"), None);
        assert_eq!(
            sniff_field(b"GET / HTTP/1.1\r\nSsp-TraceID: a\x01b\r\n", "ssp-traceid"),
            None
        );
        assert_eq!(sniff_field(b"Ssp-TraceID: a\r\n", "ssp-traceid"), None);
    }

    #[test]
    fn content_length_is_strict_decimal() {
        assert_eq!(parse_content_length(b"42"), Some(42));
        assert_eq!(parse_content_length(b" 7 "), Some(7));
        assert_eq!(parse_content_length(b"0"), Some(0));
        for bad in [
            &b"+5"[..],
            b"-5",
            b"0x10",
            b"5,5",
            b"5 5",
            b"",
            b"99999999999999999999",
            b"1e3",
        ] {
            assert_eq!(
                parse_content_length(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn hop_by_hop_includes_connection_named_fields() {
        let none = || std::iter::empty::<&[u8]>();
        assert!(is_hop_by_hop(b"Connection", none()));
        assert!(is_hop_by_hop(b"Proxy-Whatever", none()));
        assert!(is_hop_by_hop(
            b"X-Secret",
            [b"close".as_slice(), b"x-secret"].into_iter()
        ));
        assert!(!is_hop_by_hop(b"Ssp-From", [b"close".as_slice()].into_iter()));
        assert!(!is_hop_by_hop(b"Authorization", none()));
        assert!(!is_hop_by_hop(b"Transfer-Encoding", none()));
    }
}
