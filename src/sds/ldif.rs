//! An LDIF reader (RFC 2849) for directory exports such as `ldapsearch -LLL` writes: bytes in,
//! entries out, every problem with its line. Sans-I/O: the caller reads the file.
//!
//! What it takes: `version: 1`, comments (`#`, folded too), folded lines (a continuation starts
//! with one space), `attr: value`, `attr:: base64`, attribute options (`cn;lang-en`, ignored),
//! any number of blank lines between entries, CRLF line ends, `-` lines (change-record
//! separators, skipped), and `changetype: add`. What it refuses, with the line: a line that is
//! not `name: value`, an entry that does not start with `dn:`, bad base64, `attr:< URL` values
//! (nothing is fetched), and other change types (a change record is not an export).
//!
//! Attribute names are compared case-insensitively (`nhsMHSPartyKey` is `nhsmhspartykey`):
//! they are kept lowercased. Values are kept as they are (UTF-8, lossily: SDS values are text).

use std::fmt;

/// Most problems reported for one file: past that, it is not LDIF and more lines say nothing.
const MAX_ERRORS: usize = 20;

/// One entry of the export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line of its `dn:`.
    pub line: usize,
    pub dn: String,
    /// Every lowercased name and value, back to back: one allocation per entry rather than two
    /// per attribute (an export of 40,000 records peaked at 88 MB with a `String` each).
    text: String,
    /// (start, end of name, end of value) in `text`, in file order; a multi-valued attribute
    /// appears once per value.
    spans: Vec<(u32, u32, u32)>,
}

impl Entry {
    fn new(line: usize, dn: String) -> Entry {
        Entry {
            line,
            dn,
            text: String::new(),
            spans: Vec::new(),
        }
    }

    fn push(&mut self, name: &str, value: &str) -> Result<(), String> {
        let at = |n: usize| u32::try_from(n).map_err(|_| "an entry over 4 GiB".to_string());
        let start = at(self.text.len())?;
        self.text.push_str(name);
        let name_end = at(self.text.len())?;
        self.text.push_str(value);
        self.spans.push((start, name_end, at(self.text.len())?));
        Ok(())
    }

    /// (lowercased name, value) of every attribute, in file order.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.spans.iter().map(|&(start, name_end, end)| {
            let cut = |from: u32, to: u32| self.text.get(from as usize..to as usize).unwrap_or_default();
            (cut(start, name_end), cut(name_end, end))
        })
    }

    /// Every value of attribute `name` (lowercase), in file order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.attributes().filter(move |(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The first value of attribute `name` (lowercase).
    pub fn first(&self, name: &str) -> Option<&str> {
        self.attributes().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Whether one of its `objectClass` values is `class`, in any case.
    pub fn is(&self, class: &str) -> bool {
        self.all("objectclass").any(|c| c.eq_ignore_ascii_case(class))
    }
}

/// A problem at a line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdifError {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for LdifError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Every entry of `bytes`, or every problem found (at most `MAX_ERRORS`), in line order.
pub fn parse(bytes: &[u8]) -> Result<Vec<Entry>, Vec<LdifError>> {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    // The entry being read; `None` after a problem until the next blank line.
    let mut current: Option<Entry> = None;
    let mut broken = false;
    let mut first_record = true;
    for (line, text) in logical_lines(bytes) {
        let Some(text) = text else {
            // A blank line ends an entry.
            if let Some(entry) = current.take() {
                entries.push(entry);
            }
            broken = false;
            continue;
        };
        if broken || text.starts_with(b"#") || text == b"-" {
            continue;
        }
        let outcome = (|| {
            let (name, value) = attribute(&text)?;
            match current.as_mut() {
                None if first_record && name == "version" => {
                    first_record = false;
                    if value != "1" {
                        return Err(format!("LDIF version {value:?}; only version 1 is known"));
                    }
                    Ok(())
                }
                None if name == "dn" => {
                    first_record = false;
                    current = Some(Entry::new(line, value));
                    Ok(())
                }
                None => Err(format!(
                    "an entry starts with `dn:`, found `{name}:` (is a blank line missing, or a continuation not indented?)"
                )),
                Some(_) if name == "changetype" && !value.eq_ignore_ascii_case("add") => Err(format!(
                    "changetype {value:?}: a change record is not an export (ldapsearch writes none)"
                )),
                Some(_) if name == "changetype" => Ok(()),
                Some(entry) => entry.push(&name, &value),
            }
        })();
        if let Err(message) = outcome {
            errors.push(LdifError { line, message });
            if errors.len() == MAX_ERRORS {
                break;
            }
            current = None;
            broken = true;
        }
    }
    if let Some(entry) = current.take() {
        entries.push(entry);
    }
    if errors.is_empty() {
        Ok(entries)
    } else {
        Err(errors)
    }
}

/// The file's logical lines (continuations joined), each with the number of its first physical
/// line; `None` for a blank line. A comment's continuations stay part of the comment.
fn logical_lines(bytes: &[u8]) -> impl Iterator<Item = (usize, Option<Vec<u8>>)> + '_ {
    let mut physical = bytes
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .peekable();
    // `split` yields one empty piece after a final newline: it is no line of the file.
    let lines = bytes.iter().filter(|&&b| b == b'\n').count() + usize::from(!bytes.ends_with(b"\n"));
    std::iter::from_fn(move || {
        let (number, first) = physical.next().filter(|(n, _)| *n <= lines)?;
        if first.is_empty() {
            return Some((number, None));
        }
        let mut joined = first.to_vec();
        while let Some((_, next)) = physical.peek() {
            match next.strip_prefix(b" ") {
                Some(rest) => {
                    joined.extend_from_slice(rest);
                    physical.next();
                }
                None => break,
            }
        }
        Some((number, Some(joined)))
    })
}

/// `name: value`, `name:: base64` or `name:< url`: the lowercased name without options, and
/// the value.
fn attribute(text: &[u8]) -> Result<(String, String), String> {
    let Some(colon) = text.iter().position(|&b| b == b':') else {
        return Err(format!(
            "expected `name: value`, found {:?}",
            shorten(&String::from_utf8_lossy(text))
        ));
    };
    let description = &text[..colon];
    // `cn;lang-en`: options name a variant; the attribute is the part before them.
    let name = description.split(|&b| b == b';').next().unwrap_or(description);
    let valid_name = !name.is_empty()
        && name[0].is_ascii_alphabetic()
        && name.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        || !name.is_empty() && name.iter().all(|b| b.is_ascii_digit() || *b == b'.');
    if !valid_name {
        return Err(format!(
            "expected an attribute name before `:`, found {:?}",
            shorten(&String::from_utf8_lossy(description))
        ));
    }
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    let rest = &text[colon + 1..];
    let value = match rest.first() {
        Some(b':') => {
            let encoded = trim_start(&rest[1..]);
            let decoded = base64(encoded).map_err(|why| format!("the base64 value of `{name}` {why}"))?;
            String::from_utf8_lossy(&decoded).into_owned()
        }
        Some(b'<') => {
            return Err(format!(
                "`{name}:<` names a URL to fetch the value from; ssp reads values only"
            ));
        }
        _ => String::from_utf8_lossy(trim_start(rest)).into_owned(),
    };
    Ok((name, value))
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != b' ').unwrap_or(bytes.len());
    &bytes[start..]
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

/// RFC 4648 base64 (standard alphabet), `=` padding optional, no spaces inside.
pub fn base64(text: &[u8]) -> Result<Vec<u8>, String> {
    let text = match text.iter().position(|&b| b == b'=') {
        Some(at)
            if text[at..].iter().all(|&b| b == b'=')
                && text[at..].len() <= 2
                && text.len().is_multiple_of(4) =>
        {
            &text[..at]
        }
        Some(_) => return Err("has `=` where only padding may be".into()),
        None => text,
    };
    if text.len() % 4 == 1 {
        return Err("is cut short (a length no base64 text has)".into());
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in text {
        let six = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => {
                return Err(format!("has {:?}, not a base64 character", char::from(b)));
            }
        };
        acc = (acc << 6) | u32::from(six);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Entry {
        let mut entries = parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(entries.len(), 1, "{entries:?}");
        entries.remove(0)
    }

    fn errors(text: &str) -> Vec<LdifError> {
        parse(text.as_bytes()).expect_err("should be refused")
    }

    #[test]
    fn plain_entries_are_separated_by_blank_lines() {
        let text = "dn: uniqueIdentifier=1,ou=services,o=nhs\nobjectClass: nhsAs\nuniqueIdentifier: 200000000001\n\n\n\ndn: uniqueIdentifier=2,ou=services,o=nhs\nobjectClass: nhsMhs\n";
        let entries = parse(text.as_bytes()).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].line, 1);
        assert_eq!(entries[0].dn, "uniqueIdentifier=1,ou=services,o=nhs");
        assert_eq!(entries[0].first("uniqueidentifier"), Some("200000000001"));
        assert_eq!(entries[1].line, 7);
        assert!(entries[1].is("NHSMHS"));
    }

    #[test]
    fn folded_lines_are_joined_and_keep_their_first_line_number() {
        let e = one("dn: cn=x\nnhsMhsEndPoint: https://gp.example.nhs.uk/A1\n 2345/STU3/1\n  /gpconnect\n");
        assert_eq!(
            e.first("nhsmhsendpoint"),
            Some("https://gp.example.nhs.uk/A12345/STU3/1 /gpconnect")
        );
        let e = one("dn: cn=x,\n o=nhs\n");
        assert_eq!(e.dn, "cn=x,o=nhs");
    }

    #[test]
    fn base64_values_are_decoded() {
        // "Pharmacy Ltd" and a UTF-8 "é".
        let e = one("dn:: Y249eA==\no:: UGhhcm1hY3kgTHRk\nl::w6k=\n");
        assert_eq!(e.dn, "cn=x");
        assert_eq!(e.first("o"), Some("Pharmacy Ltd"));
        assert_eq!(e.first("l"), Some("é"));
    }

    #[test]
    fn base64_decodes_every_length_with_and_without_padding() {
        for (encoded, plain) in [
            ("", ""),
            ("YQ==", "a"),
            ("YQ", "a"),
            ("YWI=", "ab"),
            ("YWI", "ab"),
            ("YWJj", "abc"),
            ("YWJjZA==", "abcd"),
            ("Pz8/Pz4+", "????>>"),
        ] {
            assert_eq!(
                base64(encoded.as_bytes()).as_deref(),
                Ok(plain.as_bytes()),
                "{encoded}"
            );
        }
        for bad in ["Y", "YQ=", "Y=Q=", "YQ===", "YQ==YQ==", "Y Q=", "YQ*="] {
            assert!(base64(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn comments_and_their_continuations_are_skipped() {
        let e = one("# an export\n#  folded\n  comment line\ndn: cn=x\n# inside\nnhsIDCode: A1\n");
        assert_eq!(e.attributes().collect::<Vec<_>>(), [("nhsidcode", "A1")]);
    }

    #[test]
    fn multi_valued_attributes_keep_every_value_in_order() {
        let e = one("dn: cn=x\nnhsAsSvcIA: urn:a\nnhsAsSvcIA: urn:b\nNHSASSVCIA: urn:c\n");
        assert_eq!(
            e.all("nhsassvcia").collect::<Vec<_>>(),
            ["urn:a", "urn:b", "urn:c"]
        );
    }

    #[test]
    fn attribute_names_and_classes_are_case_insensitive_and_options_are_dropped() {
        let e = one("dn: cn=x\nobjectclass: NHSas\nnhsMHSPartyKey: K-1\ncn;lang-en: X\n");
        assert!(e.is("nhsAs"));
        assert_eq!(e.first("nhsmhspartykey"), Some("K-1"));
        assert_eq!(e.first("cn"), Some("X"));
    }

    #[test]
    fn version_crlf_dashes_and_changetype_add_are_accepted() {
        let entries = parse(b"version: 1\r\n\r\ndn: cn=x\r\nchangetype: add\r\ncn: x\r\n-\r\n\r\n").unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].attributes().collect::<Vec<_>>(), [("cn", "x")]);
        assert_eq!(entries[0].line, 3);
    }

    #[test]
    fn values_keep_inner_spaces_and_lose_leading_ones() {
        let e = one("dn: cn=x\ndescription:    two  words \n");
        assert_eq!(e.first("description"), Some("two  words "));
    }

    #[test]
    fn a_file_without_entries_has_none() {
        assert_eq!(parse(b""), Ok(vec![]));
        assert_eq!(parse(b"\n\n# nothing\n"), Ok(vec![]));
        assert_eq!(parse(b"version: 1\n"), Ok(vec![]));
    }

    #[test]
    fn malformed_lines_are_refused_with_their_line() {
        let e = errors("dn: cn=x\ncn: x\nthis is not ldif\n");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, 3);
        assert!(e[0].message.contains("expected `name: value`"), "{}", e[0]);
        let e = errors("cn: x\n");
        assert_eq!(e[0].line, 1);
        assert!(e[0].message.contains("starts with `dn:`"), "{}", e[0]);
        let e = errors("dn: cn=x\nphoto:: ###\n");
        assert_eq!(e[0].line, 2);
        assert!(e[0].message.contains("base64"), "{}", e[0]);
        let e = errors("dn: cn=x\njpegPhoto:< file:///etc/passwd\n");
        assert!(e[0].message.contains("URL"), "{}", e[0]);
        let e = errors("dn: cn=x\nchangetype: delete\n");
        assert!(e[0].message.contains("change record"), "{}", e[0]);
        let e = errors("version: 2\n");
        assert!(e[0].message.contains("version"), "{}", e[0]);
        let e = errors("dn: cn=x\n: novalue\n");
        assert!(e[0].message.contains("attribute name"), "{}", e[0]);
    }

    #[test]
    fn every_problem_is_reported_and_parsing_resumes_at_the_next_entry() {
        let e = errors("dn: cn=a\nbad line\nmore: fine\n\ndn: cn=b\n\nalso bad\n");
        assert_eq!(e.iter().map(|e| e.line).collect::<Vec<_>>(), [2, 7]);
        let many = "x\n\n".repeat(100);
        assert_eq!(errors(&many).len(), MAX_ERRORS);
    }

    #[test]
    fn an_entry_cut_at_every_byte_never_panics() {
        let text = "version: 1\n# c\n\ndn:: Y249eA==\nobjectClass: nhsMhs\nnhsMhsEndPoint: https://a.example/\n x\n-\n";
        for cut in 0..=text.len() {
            let _ = parse(&text.as_bytes()[..cut]);
        }
    }
}
