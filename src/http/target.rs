//! The request-target of a proxied request: `/https://host[:port]/path?query`, raw or with the
//! whole URL percent-encoded (`/https%3A%2F%2Fhost%2Fpath`). SPEC section 1.

use std::borrow::Cow;
use std::fmt;

/// A provider URL taken from a request-target. It borrows from the head it came from, so
/// deciding a request copies nothing; only a percent-encoded target, an uppercase host or a
/// query without a path (all rare) make owned parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// Lowercased; an IPv6 literal keeps its brackets.
    pub host: Cow<'a, str>,
    /// Only when written in the target: `:443` is not the same as nothing (SPEC section 1).
    pub port: Option<u16>,
    /// Starts with `/`; the query, if any, included.
    pub path_and_query: Cow<'a, str>,
    /// Where the path ends in `path_and_query`: at its `?`, or its end. Found by the parser,
    /// so that row 12 does not look for it again.
    path_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetError {
    NotProxyForm,
    NotHttps,
    BadEncoding,
    BadAuthority,
    BadPath,
}

impl Target<'_> {
    /// The path without the query.
    pub fn path(&self) -> &str {
        &self.path_and_query[..self.path_len]
    }

    /// `host[:port]` as it goes in a `Host` header, written without an allocation.
    pub fn authority(&self) -> Authority<'_> {
        Authority(self)
    }

    pub fn into_owned(self) -> Target<'static> {
        Target {
            host: Cow::Owned(self.host.into_owned()),
            port: self.port,
            path_and_query: Cow::Owned(self.path_and_query.into_owned()),
            path_len: self.path_len,
        }
    }
}

pub struct Authority<'t>(&'t Target<'t>);

impl fmt::Display for Authority<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.port {
            Some(p) => write!(f, "{}:{p}", self.0.host),
            None => f.write_str(&self.0.host),
        }
    }
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}{}", self.authority(), self.path_and_query)
    }
}

pub fn parse(raw: &str) -> Result<Target<'_>, TargetError> {
    let url = raw.strip_prefix('/').ok_or(TargetError::NotProxyForm)?;
    // The raw form, as it is mostly sent, is told from the percent-encoded one at once.
    if !url.starts_with("https://") && starts_with_ignore_case(url, "https%3a%2f%2f") {
        let decoded = percent_decode(url).ok_or(TargetError::BadEncoding)?;
        return parse_url(&decoded).map(Target::into_owned);
    }
    parse_url(url)
}

/// `https://host[:port][/path][?query]`, already decoded.
fn parse_url(url: &str) -> Result<Target<'_>, TargetError> {
    if !starts_with_ignore_case(url, "https://") {
        return Err(if url.contains("://") {
            TargetError::NotHttps
        } else {
            TargetError::NotProxyForm
        });
    }
    let rest = &url["https://".len()..];
    let (host, port, authority_end) = parse_authority(rest)?;
    let path_and_query = &rest[authority_end..];
    let path_len = check_path_and_query(path_and_query)?;
    let (path_and_query, path_len) = match path_and_query {
        "" => (Cow::Borrowed("/"), 1),
        p if p.starts_with('?') => (Cow::Owned(format!("/{p}")), 1),
        p => (Cow::Borrowed(p), path_len),
    };
    Ok(Target {
        host,
        port,
        path_and_query,
        path_len,
    })
}

/// One pass over the path and query. Refused anywhere: bytes outside RFC 3986 (`CLASS`) and
/// IIS `%u` escapes (not percent-encoding, but IIS decodes them). Refused in the path: dot
/// segments (`is_dot_segment`), which would let a provider resolve a path outside the
/// registered endpoint after our prefix check passed; and encoded `/`, `\\` and controls,
/// which a provider that decodes them would see as different segments than the prefix check
/// did.
///
/// Returns the length of the path: where the query starts, or the whole of `p`.
fn check_path_and_query(p: &str) -> Result<usize, TargetError> {
    let bytes = p.as_bytes();
    // Where the current path segment starts.
    let mut segment = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Most of a path is plain bytes: skip a run of them in one tight scan.
        i += bytes[i..]
            .iter()
            .position(|&b| CLASS[usize::from(b)] != Class::Plain)
            .unwrap_or(bytes.len() - i);
        let Some(&b) = bytes.get(i) else { break };
        match CLASS[usize::from(b)] {
            Class::Plain => i += 1,
            Class::Slash | Class::Query if is_dot_segment(&bytes[segment..i]) => {
                return Err(TargetError::BadPath);
            }
            Class::Slash => {
                i += 1;
                segment = i;
            }
            Class::Query => {
                let query = &bytes[i + 1..];
                let refused = query.iter().enumerate().any(|(at, &b)| {
                    CLASS[usize::from(b)] == Class::Refused || b == b'%' && is_u_escape(query, at)
                });
                return match refused {
                    true => Err(TargetError::BadPath),
                    false => Ok(i),
                };
            }
            Class::Refused | Class::QueryOnly => return Err(TargetError::BadPath),
            Class::Percent => match escaped(bytes, i) {
                Some(b'/' | b'\\' | 0..0x20 | 0x7f) => return Err(TargetError::BadPath),
                Some(_) => i += 3,
                None if is_u_escape(bytes, i) => return Err(TargetError::BadPath),
                None => i += 1,
            },
        }
    }
    match is_dot_segment(&bytes[segment..]) {
        true => Err(TargetError::BadPath),
        false => Ok(bytes.len()),
    }
}

/// Whether a path segment is `.` or `..` to some provider stack. Tomcat and Jetty drop a
/// `;params` suffix before resolving (`..;jsessionid=1`), so the segment is cut at its first
/// `;`, raw or encoded; what is left, percent-decoded once, is one or two dots in any of the
/// spellings of `DOTS`. Nothing is allocated: a dot segment decodes to at most 6 bytes.
fn is_dot_segment(segment: &[u8]) -> bool {
    // Every spelling starts with `.`, an escape, or a UTF-8 lead byte: ordinary segments
    // (`Prescription-Exemptions`, `1.0.0`) are told at their first byte.
    if !matches!(segment.first(), Some(b'.' | b'%' | 0xc0..)) {
        return false;
    }
    let mut decoded = [0u8; 6];
    let mut len = 0;
    let mut i = 0;
    while i < segment.len() {
        let (b, used) = match segment[i] {
            b'%' => match escaped(segment, i) {
                Some(b) => (b, 3),
                None => return false,
            },
            b => (b, 1),
        };
        if b == b';' {
            break;
        }
        let Some(slot) = decoded.get_mut(len) else {
            return false;
        };
        *slot = b;
        len += 1;
        i += used;
    }
    matches!(dots(&decoded[..len]), Some(1 | 2))
}

/// How many dots `s` spells, if it is nothing but dots.
fn dots(mut s: &[u8]) -> Option<u32> {
    let mut n = 0;
    while !s.is_empty() {
        let (spelling, count) = DOTS.iter().find(|(spelling, _)| s.starts_with(spelling))?;
        s = &s[spelling.len()..];
        n += count;
    }
    Some(n)
}

/// The spellings of `.` that provider stacks resolve as one (or, U+2025, two): ASCII; the
/// characters NFKC normalisation turns into dots (fullwidth U+FF0E, small U+FE52, one- and
/// two-dot leaders U+2024 and U+2025), as UTF-8; and the overlong UTF-8 forms of `.` that
/// lenient decoders accept.
const DOTS: [(&[u8], u32); 7] = [
    (b".", 1),
    ("\u{ff0e}".as_bytes(), 1),
    ("\u{fe52}".as_bytes(), 1),
    ("\u{2024}".as_bytes(), 1),
    ("\u{2025}".as_bytes(), 2),
    (b"\xc0\xae", 1),
    (b"\xe0\x80\xae", 1),
];

/// The byte a `%XX` escape at `at` stands for, if it is one.
fn escaped(bytes: &[u8], at: usize) -> Option<u8> {
    match bytes.get(at + 1..at + 3)? {
        &[hi, lo] => Some(hex_digit(hi)? << 4 | hex_digit(lo)?),
        _ => None,
    }
}

/// `%u` or `%U` at `at` (where a `%` is): IIS reads `%uXXXX` as a UTF-16 code unit (`%u002e` is `.`).
fn is_u_escape(bytes: &[u8], at: usize) -> bool {
    bytes[at..].starts_with(b"%u") || bytes[at..].starts_with(b"%U")
}

/// What a byte means to `check_path_and_query`. The one character rule of a target, raw or
/// decoded from the percent-encoded form: RFC 3986's (unreserved, sub-delims, `:`, `@`, `/`,
/// `?` and escapes). httparse lets any visible ASCII and any byte beyond ASCII into a
/// request-target; forwarded as they came, quotes, angle brackets and braces reach the
/// provider's request line and logs, and bytes beyond ASCII reach parsers that disagree about
/// what they are (Latin-1, UTF-8, NFKC).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Plain,
    Slash,
    Query,
    Percent,
    /// `|`: refused in the path, allowed in the query, where FHIR token searches
    /// (`identifier=system|value`) send it unescaped. It means nothing to a request-line parser.
    QueryOnly,
    /// Everything else: controls, space, `" # < > [ \\ ] ^ ` { }`, DEL, and every byte beyond
    /// ASCII.
    Refused,
}

const CLASS: [Class; 256] = {
    let mut table = [Class::Refused; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match b as u8 {
            b'/' => Class::Slash,
            b'?' => Class::Query,
            b'%' => Class::Percent,
            b'|' => Class::QueryOnly,
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => Class::Plain,
            b'-' | b'.' | b'_' | b'~' => Class::Plain,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => Class::Plain,
            b':' | b'@' => Class::Plain,
            _ => Class::Refused,
        };
        b += 1;
    }
    table
};

/// The authority at the start of `rest`, which ends at the first `/` or `?` (or with `rest`):
/// the host, lowercased, the port if written, and where the authority ends.
///
/// Userinfo (`user@host`) is refused without a scan of its own: `@` is neither a name, a port
/// nor an IPv6 literal character, so the checks below refuse it wherever it is.
fn parse_authority(rest: &str) -> Result<(Cow<'_, str>, Option<u16>, usize), TargetError> {
    let bytes = rest.as_bytes();
    if bytes.first() == Some(&b'[') {
        let end = bytes
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .unwrap_or(bytes.len());
        let (host, port) = parse_ipv6_authority(&rest[..end])?;
        return Ok((host, port, end));
    }
    // A name is letters, digits, `-` and `.`: one pass finds where it ends, noting any
    // uppercase to fold.
    let mut uppercase = false;
    let name_end = bytes
        .iter()
        .position(|&b| {
            let class = NAME[usize::from(b)];
            uppercase |= class == NameByte::Upper;
            class == NameByte::Other
        })
        .unwrap_or(bytes.len());
    if name_end == 0 {
        return Err(TargetError::BadAuthority);
    }
    let (port, end) = match bytes.get(name_end) {
        Some(b':') => {
            let digits = &bytes[name_end + 1..];
            let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
            (Some(port_number(&digits[..len])?), name_end + 1 + len)
        }
        _ => (None, name_end),
    };
    // Whatever follows the host and port must start the path or the query.
    if !matches!(bytes.get(end), None | Some(b'/' | b'?')) {
        return Err(TargetError::BadAuthority);
    }
    let host = &rest[..name_end];
    let host = match uppercase {
        true => Cow::Owned(host.to_ascii_lowercase()),
        false => Cow::Borrowed(host),
    };
    Ok((host, port, end))
}

/// `[literal]` or `[literal]:port`, the whole authority.
fn parse_ipv6_authority(authority: &str) -> Result<(Cow<'_, str>, Option<u16>), TargetError> {
    let close = authority.find(']').ok_or(TargetError::BadAuthority)?;
    if authority[1..close].parse::<std::net::Ipv6Addr>().is_err() {
        return Err(TargetError::BadAuthority);
    }
    let port = match &authority[close + 1..] {
        "" => None,
        after => match after.strip_prefix(':') {
            Some(p) => Some(port_number(p.as_bytes())?),
            None => return Err(TargetError::BadAuthority),
        },
    };
    // Brackets kept; the literal's hex digits folded to lowercase.
    let host = &authority[..close + 1];
    let host = match host.bytes().any(|b| b.is_ascii_uppercase()) {
        true => Cow::Owned(host.to_ascii_lowercase()),
        false => Cow::Borrowed(host),
    };
    Ok((host, port))
}

/// 1 to 5 decimal digits making 1 to 65535.
fn port_number(digits: &[u8]) -> Result<u16, TargetError> {
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(TargetError::BadAuthority);
    }
    let n = digits.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    match u16::try_from(n) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(TargetError::BadAuthority),
    }
}

/// What a byte is to a host name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NameByte {
    /// Lowercase letters, digits, `-` and `.`.
    Plain,
    Upper,
    /// Anything else ends the name.
    Other,
}

const NAME: [NameByte; 256] = {
    let mut table = [NameByte::Other; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match b as u8 {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' => NameByte::Plain,
            b'A'..=b'Z' => NameByte::Upper,
            _ => NameByte::Other,
        };
        b += 1;
    }
    table
};

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    // Mostly written as given (lowercase): the exact comparison answers at once.
    s.as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| head == prefix.as_bytes() || head.eq_ignore_ascii_case(prefix.as_bytes()))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            out.push(value);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_form_is_split_into_host_port_and_path() {
        let t = parse("/https://PECS.example.nhs.uk/Prescription-Exemptions/1.0.0/search?a=1").unwrap();
        assert_eq!(t.host, "pecs.example.nhs.uk");
        assert_eq!(t.port, None);
        assert_eq!(t.path_and_query, "/Prescription-Exemptions/1.0.0/search?a=1");
        assert_eq!(t.path(), "/Prescription-Exemptions/1.0.0/search");
        assert_eq!(
            t.to_string(),
            "https://pecs.example.nhs.uk/Prescription-Exemptions/1.0.0/search?a=1"
        );
    }

    #[test]
    fn percent_encoded_form_is_the_same_target() {
        let raw = parse("/https://localhost:9443/P/1.0.0/search?x=y").unwrap();
        let enc = parse("/https%3A%2F%2Flocalhost%3A9443%2FP%2F1.0.0%2Fsearch%3Fx%3Dy").unwrap();
        assert_eq!(raw, enc);
        assert_eq!(enc.port, Some(9443));
    }

    #[test]
    fn explicit_port_and_ip_literals_are_kept_as_written() {
        assert_eq!(parse("/https://h:443/p").unwrap().port, Some(443));
        assert_eq!(parse("/https://10.0.0.7/p").unwrap().host, "10.0.0.7");
        let v6 = parse("/https://[::1]:8443/p").unwrap();
        assert_eq!((&*v6.host, v6.port), ("[::1]", Some(8443)));
        assert_eq!(parse("/https://[FE80::aB]/p").unwrap().host, "[fe80::ab]");
        assert_eq!(
            parse("/https://Host-1.Example:8443/p").unwrap().host,
            "host-1.example"
        );
        assert_eq!(parse("/https://h").unwrap().path_and_query, "/");
        assert_eq!(parse("/https://h?q").unwrap().path_and_query, "/?q");
        // Dots are only refused as whole segments of the path, not in names or the query.
        for fine in [
            "/https://h/a/...",
            "/https://h/a/.b",
            "/https://h/a?x/../y",
            "/https://h/a?%2F",
        ] {
            assert!(parse(fine).is_ok(), "{fine}");
        }
        for bad in [
            "/https://h/a/.%2e/b",
            "/https://h/a/..?x",
            "/https://h/%2e",
            "/https://h/a%3F/..",
        ] {
            assert_eq!(parse(bad), Err(TargetError::BadPath), "{bad}");
        }
        // Encoded separators are fine in the query: they never become path segments.
        assert_eq!(parse("/https://h/p?next=%2Fa%2Fb").unwrap().path(), "/p");
        assert_eq!(parse("/https://h/p%20q").unwrap().path(), "/p%20q");
    }

    /// Issue 24 item 9: segments that common provider stacks resolve as `.` or `..` are refused
    /// as those are: Tomcat and Jetty drop a `;params` suffix before resolving, IIS decodes
    /// `%u` escapes, and stacks that normalise Unicode (NFKC) read fullwidth and other
    /// compatibility dots as `.`; lenient UTF-8 decoders read overlong forms of `.`.
    #[test]
    fn segments_that_providers_resolve_as_dot_segments_are_refused() {
        for bad in [
            "/https://h/a/..;/admin",
            "/https://h/a/.;/admin",
            "/https://h/a/%2e%2e;/admin",
            "/https://h/a/..;jsessionid=1/admin",
            "/https://h/a/..;a=b;c=d/admin",
            "/https://h/a/..%3B/admin",
            "/https://h/a/..%3bx/admin",
            "/https://h/a/..;",
            "/https://h/a/..;?q",
            "/https://h/a/%EF%BC%8E%EF%BC%8E/admin",
            "/https://h/a/%ef%bc%8e/admin",
            "/https://h/a/.%EF%BC%8E/admin",
            "/https://h/a/%EF%BC%8E.;x/admin",
            "/https://h/a/\u{ff0e}\u{ff0e}/admin",
            "/https://h/a/%EF%B9%92%EF%B9%92/admin",
            "/https://h/a/%E2%80%A4%E2%80%A4/admin",
            "/https://h/a/%E2%80%A5/admin",
            "/https://h/a/%C0%AE%C0%AE/admin",
            "/https://h/a/%E0%80%AE./admin",
            // IIS `%u` escapes: refused wherever they are, a dot or not.
            "/https://h/a/%u002e%u002e/admin",
            "/https://h/a/%U002E./admin",
            "/https://h/a/b%u0041",
            "/https://h/a?q=%u002e",
            // The percent-encoded form, decoded once, is held to the same rule.
            "/https%3A%2F%2Fh%2Fa%2F..%3B%2Fadmin",
            "/https%3A%2F%2Fh%2Fa%2F%252e%252e%3Bx%2Fadmin",
            "/https%3A%2F%2Fh%2Fa%2F%25EF%25BC%258E%25EF%25BC%258E%2Fadmin",
        ] {
            assert_eq!(parse(bad), Err(TargetError::BadPath), "{bad}");
        }
        // Dots, parameters and those characters beside other bytes make ordinary segments.
        for fine in [
            "/https://h/a/...;/b",
            "/https://h/a/..a;/b",
            "/https://h/a/;/b",
            "/https://h/a/b;..",
            "/https://h/a/;../b",
            "/https://h/1.0.0;v=1/b",
            "/https://h/a/x%EF%BC%8E/b",
            "/https://h/a/%EF%BC%8E%EF%BC%8E%EF%BC%8E/b",
            "/https://h/a/%25u002e/b",
        ] {
            assert!(parse(fine).is_ok(), "{fine}: {:?}", parse(fine));
        }
    }

    /// Issue 24 item 10: one character rule for both forms of the target. The percent-encoded
    /// form, decoded once, may carry nothing to the provider's request line that the raw
    /// form may not: RFC 3986 characters only (and `|` in the query, see `CLASS`).
    #[test]
    fn both_forms_of_the_target_are_held_to_the_same_characters() {
        let rfc3986 = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b);
        for b in (0u8..0x80).filter(|b| !b"%/?".contains(b)) {
            let c = char::from(b);
            for (place, want) in [("a", rfc3986(b)), ("a?q=", rfc3986(b) || b == b'|')] {
                let (raw, encoded) = (
                    format!("/https://h/{place}{c}"),
                    format!("/https%3A%2F%2Fh%2F{place}%{b:02X}"),
                );
                let (raw, encoded) = (parse(&raw).map(Target::into_owned), parse(&encoded));
                assert_eq!(raw.is_ok(), want, "{c:?} after {place:?}: {raw:?}");
                assert_eq!(raw, encoded, "{c:?} after {place:?}, the two forms");
            }
        }
        for c in ['\u{e9}', '\u{ff0e}', '\u{a0}', '\u{2028}'] {
            let mut utf8 = [0u8; 4];
            let escaped: String = c
                .encode_utf8(&mut utf8)
                .bytes()
                .map(|b| format!("%{b:02X}"))
                .collect();
            for place in ["a", "a?q="] {
                assert_eq!(
                    parse(&format!("/https://h/{place}{c}")),
                    Err(TargetError::BadPath)
                );
                let encoded = format!("/https%3A%2F%2Fh%2F{place}{escaped}");
                assert_eq!(parse(&encoded), Err(TargetError::BadPath), "{encoded}");
            }
        }
        // Escapes of those characters pass, as escapes, in both forms.
        let raw = parse("/https://h/a%7B%22%C3%A9?q=%7C%3C").unwrap();
        let encoded = parse("/https%3A%2F%2Fh%2Fa%257B%2522%25C3%25A9%3Fq%3D%257C%253C").unwrap();
        assert_eq!(raw, encoded);
        assert_eq!(raw.path_and_query, "/a%7B%22%C3%A9?q=%7C%3C");
    }

    #[test]
    fn dot_segment_rule_table() {
        let cases: [(&[u8], bool); 16] = [
            (b".", true),
            (b"..", true),
            (b"%2E", true),
            (b".%2e;", true),
            (b"..;jsessionid=1", true),
            (b"\xef\xbc\x8e", true),
            (b"%E2%80%A5;", true),
            (b"", false),
            (b";", false),
            (b"...", false),
            (b"%E2%80%A5.", false),
            (b"..a", false),
            (b"a..", false),
            (b"%2", false),
            (b"%2e%2", false),
            (b"%EF%BC", false),
        ];
        for (segment, want) in cases {
            assert_eq!(
                is_dot_segment(segment),
                want,
                "{:?}",
                String::from_utf8_lossy(segment)
            );
        }
    }

    #[test]
    fn path_ends_at_the_first_question_mark() {
        for raw in [
            "/https://h",
            "/https://h/",
            "/https://h?",
            "/https://h?q=1?2",
            "/https://h/a/b?x/../y",
            "/https://h/a%3Fb/c?d",
            "/https://h:8443/a.b/c",
            "/https://[::1]/p?",
            "/https%3A%2F%2Fh%2Fa%3Fb",
        ] {
            let t = parse(raw).unwrap();
            let want = t.path_and_query.split('?').next().unwrap();
            assert_eq!(t.path(), want, "{raw}");
            assert_eq!(t.clone().into_owned().path(), want, "{raw}");
        }
    }

    #[test]
    fn authority_table() {
        type Host = (&'static str, Option<u16>);
        let cases: [(&str, Result<Host, TargetError>); 20] = [
            ("h", Ok(("h", None))),
            ("h:1", Ok(("h", Some(1)))),
            ("h:65535", Ok(("h", Some(65535)))),
            ("h:00443", Ok(("h", Some(443)))),
            ("H-1.Example.NHS.uk:9443", Ok(("h-1.example.nhs.uk", Some(9443)))),
            ("[::1]", Ok(("[::1]", None))),
            ("[FE80::1]:1", Ok(("[fe80::1]", Some(1)))),
            ("", Err(TargetError::BadAuthority)),
            (":443", Err(TargetError::BadAuthority)),
            ("h:", Err(TargetError::BadAuthority)),
            ("h:0", Err(TargetError::BadAuthority)),
            ("h:000443", Err(TargetError::BadAuthority)),
            ("h:65536", Err(TargetError::BadAuthority)),
            ("h:99999", Err(TargetError::BadAuthority)),
            ("h:1:2", Err(TargetError::BadAuthority)),
            ("h:12a", Err(TargetError::BadAuthority)),
            ("h\u{e9}", Err(TargetError::BadAuthority)),
            ("\u{e9}h", Err(TargetError::BadAuthority)),
            ("h%41", Err(TargetError::BadAuthority)),
            ("[::1]x", Err(TargetError::BadAuthority)),
        ];
        for (authority, want) in cases {
            for rest in ["", "/p", "?q"] {
                let raw = format!("/https://{authority}{rest}");
                let got = parse(&raw);
                let got = got.as_ref().map(|t| (&*t.host, t.port)).map_err(|e| *e);
                assert_eq!(got, want, "{authority}{rest}");
            }
        }
        let long = "a".repeat(300);
        assert_eq!(parse(&format!("/https://{long}:8443/p")).unwrap().host, long);
    }

    #[test]
    fn targets_that_are_not_proxied_https_urls_are_refused() {
        let cases = [
            ("https://h/p", TargetError::NotProxyForm),
            ("*", TargetError::NotProxyForm),
            ("/Prescription-Exemptions/1.0.0", TargetError::NotProxyForm),
            ("/http://h/p", TargetError::NotHttps),
            ("/ftp://h/p", TargetError::NotHttps),
            ("/https://user@h/p", TargetError::BadAuthority),
            ("/https://h@/p", TargetError::BadAuthority),
            ("/https://h:443@x/p", TargetError::BadAuthority),
            ("/https://[::1]@x/p", TargetError::BadAuthority),
            ("/https://[::1@]/p", TargetError::BadAuthority),
            ("/https://@/p", TargetError::BadAuthority),
            ("/https:///p", TargetError::BadAuthority),
            ("/https://h:0/p", TargetError::BadAuthority),
            ("/https://h:65536/p", TargetError::BadAuthority),
            ("/https://h:-1/p", TargetError::BadAuthority),
            ("/https://h_x/p", TargetError::BadAuthority),
            ("/https://[zz]/p", TargetError::BadAuthority),
            ("/https://h/p#frag", TargetError::BadPath),
            ("/https://h/a/../admin", TargetError::BadPath),
            ("/https://h/a/%2E%2e/admin", TargetError::BadPath),
            ("/https://h/./a", TargetError::BadPath),
            ("/https://h/P/1.0.0/x%2F..%2F..%2Fadmin", TargetError::BadPath),
            ("/https://h/P/1.0.0/x%2f..", TargetError::BadPath),
            ("/https://h/P/1.0.0/..%5Cadmin", TargetError::BadPath),
            ("/https://h/P/1.0.0/a%00b", TargetError::BadPath),
            ("/https%3A%2F%2Fh%2FP%2F1.0.0%2Fx%252F..", TargetError::BadPath),
            ("/https%3A%2F%2Fh%2Fa%2G", TargetError::BadEncoding),
            ("/https%3A%2F%2Fh%2F%0D%0A", TargetError::BadPath),
        ];
        for (raw, want) in cases {
            assert_eq!(parse(raw), Err(want), "{raw}");
        }
    }
}
