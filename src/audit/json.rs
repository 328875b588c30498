//! A tiny JSON writer with a fixed field order. Audit records are hashed over their exact
//! bytes, so the writer must be deterministic and cheap; serde_json's map order and float
//! formatting are not ours to pin. Output never contains a raw control character, so a record
//! is always one line.

use std::borrow::Cow;
use std::fmt::Write;

/// A field value, borrowing its strings from the event where it can: a record costs no copy
/// of them before its bytes are written. Strings are the only values that can grow without
/// bound, so they are the only ones [`shrink`] cuts.
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    Str(Cow<'a, str>),
    Null,
    U64(u64),
    /// Written with three decimals (milliseconds to the microsecond); not finite → `null`.
    F64(f64),
    Bool(bool),
    Obj(Vec<(&'static str, Val<'a>)>),
    List(Vec<Val<'a>>),
    /// JSON text written as it is (a value read back from a record, already escaped).
    Raw(String),
}

impl<'a> Val<'a> {
    pub fn str(s: &'a str) -> Val<'a> {
        Val::Str(Cow::Borrowed(s))
    }

    pub fn owned(s: String) -> Val<'a> {
        Val::Str(Cow::Owned(s))
    }

    pub fn opt(s: &'a Option<String>) -> Val<'a> {
        Val::opt_str(s.as_deref())
    }

    pub fn opt_str(s: Option<&'a str>) -> Val<'a> {
        s.map_or(Val::Null, Val::str)
    }

    pub fn opt_u64(n: Option<u64>) -> Val<'a> {
        n.map_or(Val::Null, Val::U64)
    }

    pub fn opt_f64(n: Option<f64>) -> Val<'a> {
        n.map_or(Val::Null, Val::F64)
    }
}

/// Appends `,"name":value` for every field.
pub fn write_fields(out: &mut String, fields: &[(&'static str, Val)]) {
    for (name, val) in fields {
        out.push(',');
        write_field(out, name, val);
    }
}

fn write_field(out: &mut String, name: &str, val: &Val) {
    write_str(out, name);
    out.push(':');
    write_val(out, val);
}

/// `{"name":value,…}`.
pub fn write_obj(out: &mut String, fields: &[(&'static str, Val)]) {
    out.push('{');
    for (i, (name, val)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_field(out, name, val);
    }
    out.push('}');
}

/// Decimal digits of `n`, without `core::fmt` (a few times faster, and every record has some).
fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
}

/// `x` with three decimals (every float in a record is a duration in milliseconds), `null`
/// when not finite. Integer arithmetic where the thousandths fit a float's 53-bit mantissa:
/// `{:.3}` formatting was the transactions thread's largest cost. The two can differ only
/// on an exact tie at the fourth decimal, which either rounding represents faithfully.
fn push_thousandths(out: &mut String, x: f64) {
    const EXACT_BELOW: f64 = (1u64 << 53) as f64 / 1000.0;
    if (0.0..EXACT_BELOW).contains(&x) {
        let thousandths = (x * 1000.0).round() as u64;
        push_u64(out, thousandths / 1000);
        let frac = thousandths % 1000;
        out.push('.');
        for digit in [frac / 100, frac / 10 % 10, frac % 10] {
            out.push(char::from(b'0' + digit as u8));
        }
    } else if x.is_finite() {
        let _ = write!(out, "{x:.3}");
    } else {
        out.push_str("null");
    }
}

pub fn write_val(out: &mut String, val: &Val) {
    // Writing to a String cannot fail.
    match val {
        Val::Str(s) => write_str(out, s),
        Val::Null => out.push_str("null"),
        Val::U64(n) => push_u64(out, *n),
        Val::F64(x) => push_thousandths(out, *x),
        Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Val::Raw(text) => out.push_str(text),
        Val::Obj(fields) => write_obj(out, fields),
        Val::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_val(out, item);
            }
            out.push(']');
        }
    }
}

/// A JSON string literal. Control characters are escaped, so no raw newline can split a record.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    // Copy runs of plain text whole; only the bytes that need escaping are handled one by one.
    // They are all ASCII, so every cut is on a character boundary.
    let bytes = s.as_bytes();
    let mut plain = 0;
    loop {
        let i = next_special(bytes, plain);
        let Some(&b) = bytes.get(i) else { break };
        out.push_str(&s[plain..i]);
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            // Writing to a String cannot fail.
            _ => {
                let _ = write!(out, "\\u{:04x}", b);
            }
        }
        plain = i + 1;
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

/// The top-level members of one object this module wrote (a record, an extract's line), read
/// back without building anything: each name, and the raw text of its value (a string with
/// its quotes and escapes as [`write_str`] wrote them, `null`, a number, an object or a list
/// whole). Only for these lines: names are never escaped and there is no whitespace. `None`
/// at anything else. (serde_json's derive for the same was 7 KiB of a binary at its budget.)
pub fn members(s: &str) -> Option<Vec<(&str, &str)>> {
    let mut out = Vec::with_capacity(24);
    let mut i = 1;
    if !s.starts_with('{') {
        return None;
    }
    while s.get(i..i + 1) != Some("}") {
        let name_end = skip(s.as_bytes(), i)?;
        let name = s.get(i + 1..name_end - 1)?;
        let value_end =
            skip(s.as_bytes(), name_end + 1).filter(|_| s.get(name_end..name_end + 1) == Some(":"))?;
        out.push((name, s.get(name_end + 1..value_end)?));
        i = value_end + usize::from(s.get(value_end..value_end + 1) == Some(","));
    }
    (i + 1 == s.len()).then_some(out)
}

/// The raw text of member `name` among `members`.
pub fn member<'a>(members: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    members.iter().find(|(n, _)| *n == name).map(|(_, raw)| *raw)
}

/// A string's raw text without its quotes (escapes kept); `None` for anything else (`null`).
pub fn unquoted(raw: &str) -> Option<&str> {
    raw.strip_prefix('"')?.strip_suffix('"')
}

/// Where the value that starts at `i` ends: a string (escapes skipped), an object or a list
/// (strings in it skipped, brackets counted), or anything else up to the next `,`, `}` or `]`.
fn skip(s: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    loop {
        match *s.get(i)? {
            b'"' => loop {
                i += 1;
                match *s.get(i)? {
                    b'\\' => i += 1,
                    b'"' => break,
                    _ => {}
                }
            },
            b'{' | b'[' => depth += 1,
            b',' | b'}' | b']' if depth == 0 => return Some(i),
            b'}' | b']' => depth -= 1,
            _ => {}
        }
        i += 1;
        if depth == 0 && matches!(s.get(i - 1), Some(b'"' | b'}' | b']')) {
            return Some(i);
        }
    }
}

/// Whether JSON needs `b` escaped here: quote, backslash, control characters and DEL.
fn is_special(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f
}

/// The position of the first byte from `from` on that must be escaped, or `bytes.len()`.
/// Records are mostly long plain runs, so eight bytes are tested at once (the "has a zero
/// byte" and "has a byte less than n" word tricks); a word that may hold one is then looked
/// at byte by byte. The tricks never miss a byte, they can only flag a word needlessly.
fn next_special(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut i = from;
    while let Some(word) = bytes.get(i..i + 8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        let w = u64::from_le_bytes(w);
        let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
        let quote = has_zero(w ^ (ONES * u64::from(b'"')));
        let backslash = has_zero(w ^ (ONES * u64::from(b'\\')));
        let delete = has_zero(w ^ (ONES * 0x7f));
        if control | quote | backslash | delete != 0 {
            break;
        }
        i += 8;
    }
    while i < bytes.len() && !is_special(bytes[i]) {
        i += 1;
    }
    i
}

/// The largest index at most `at` (and at most `s.len()`) that starts a character: where a
/// string may be cut without splitting one.
pub(crate) fn floor_char_boundary(s: &str, at: usize) -> usize {
    let mut end = at.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// Cuts the longest string among `fields` (nested ones included) by at least `excess` bytes and
/// returns its dotted name, or `None` when no string is left to cut.
pub fn shrink(fields: &mut [(&'static str, Val)], excess: usize) -> Option<String> {
    let second = nth_longest(fields, 1);
    let (path, s) = longest(fields, String::new())?;
    // Level the longest down to the next one rather than wiping it out, so that one huge field
    // does not cost the others everything; halve when they are level.
    let mut keep = s.len().saturating_sub(excess).max(second);
    if keep >= s.len() {
        keep = s.len().saturating_sub(excess).max(s.len() / 2);
    }
    let keep = floor_char_boundary(s, keep);
    match s {
        Cow::Borrowed(b) => *b = &b[..keep],
        Cow::Owned(o) => o.truncate(keep),
    }
    Some(path)
}

/// The length of the `n`th longest string (0 = longest), or 0.
fn nth_longest(fields: &[(&'static str, Val)], n: usize) -> usize {
    fn collect(fields: &[(&'static str, Val)], out: &mut Vec<usize>) {
        for (_, val) in fields {
            match val {
                Val::Str(s) => out.push(s.len()),
                Val::Obj(inner) => collect(inner, out),
                _ => {}
            }
        }
    }
    let mut lengths = Vec::new();
    collect(fields, &mut lengths);
    lengths.sort_unstable_by(|a, b| b.cmp(a));
    lengths.get(n).copied().unwrap_or(0)
}

fn longest<'f, 'a>(
    fields: &'f mut [(&'static str, Val<'a>)],
    prefix: String,
) -> Option<(String, &'f mut Cow<'a, str>)> {
    let mut best: Option<(String, &'f mut Cow<'a, str>)> = None;
    for (name, val) in fields.iter_mut() {
        let path = if prefix.is_empty() {
            (*name).to_owned()
        } else {
            format!("{prefix}.{name}")
        };
        let found = match val {
            Val::Str(s) if !s.is_empty() => Some((path, s)),
            Val::Obj(inner) => longest(inner, path),
            _ => None,
        };
        if let Some((p, s)) = found
            && best.as_ref().is_none_or(|(_, b)| s.len() > b.len())
        {
            best = Some((p, s));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(fields: &[(&'static str, Val)]) -> String {
        let mut out = String::new();
        write_val(&mut out, &Val::Obj(fields.to_vec()));
        out
    }

    #[test]
    fn milliseconds_are_written_as_fmt_would_write_them_with_three_decimals() {
        let render_one = |x: f64| render(&[("x", Val::F64(x))]);
        for x in [
            0.0, 0.0004, 0.0006, 1.0, 9.9995e-3, 999.9996, 1234.5678, -2.5, 1e13, 1e300,
        ] {
            assert_eq!(render_one(x), format!("{{\"x\":{x:.3}}}"), "{x}");
        }
        // Durations as the proxy makes them (nanoseconds / 1e6), over several magnitudes;
        // exact ties at the fourth decimal are the one place the roundings may differ.
        let mut nanos = 1u64;
        while nanos < 1 << 50 {
            for n in [nanos, nanos + 1, nanos * 7 + 3] {
                if n % 1000 != 500 {
                    let x = n as f64 / 1e6;
                    assert_eq!(render_one(x), format!("{{\"x\":{x:.3}}}"), "{n} ns");
                }
            }
            nanos = nanos * 3 + 1;
        }
        assert_eq!(
            render_one(u64::MAX as f64),
            format!("{{\"x\":{:.3}}}", u64::MAX as f64)
        );
    }

    #[test]
    fn integers_are_written_in_full() {
        for n in [0, 7, 10, 99, 100, 12345, u64::MAX] {
            assert_eq!(render(&[("n", Val::U64(n))]), format!("{{\"n\":{n}}}"));
        }
    }

    #[test]
    fn fields_keep_their_order_and_types() {
        let fields = [
            ("b", Val::U64(7)),
            ("a", Val::str("x")),
            ("n", Val::Null),
            ("ms", Val::F64(1.23456)),
            ("ok", Val::Bool(true)),
            ("o", Val::Obj(vec![("k", Val::str("v"))])),
            ("l", Val::List(vec![Val::str("p"), Val::U64(1)])),
            ("e", Val::Obj(vec![])),
        ];
        assert_eq!(
            render(&fields),
            r#"{"b":7,"a":"x","n":null,"ms":1.235,"ok":true,"o":{"k":"v"},"l":["p",1],"e":{}}"#
        );
    }

    #[test]
    fn non_finite_numbers_are_null() {
        assert_eq!(
            render(&[("x", Val::F64(f64::NAN)), ("y", Val::F64(f64::INFINITY))]),
            r#"{"x":null,"y":null}"#
        );
    }

    #[test]
    fn strings_never_contain_a_raw_control_character() {
        let mut out = String::new();
        write_str(&mut out, "a\"b\\c\nd\re\tf\u{0}g\u{1b}h\u{7f}é");
        assert_eq!(out, r#""a\"b\\c\nd\re\tf\u0000g\u001bh\u007fé""#);
        assert!(!out.bytes().any(|b| b < 0x20));
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, "a\"b\\c\nd\re\tf\u{0}g\u{1b}h\u{7f}é");
    }

    /// The escaping as the JSON grammar states it, one byte at a time.
    fn escaped_slowly(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    #[test]
    fn word_at_a_time_escaping_finds_every_special_byte_at_every_offset() {
        // Each byte that needs escaping, and its neighbours in value (which must not be
        // flagged), at each position of a word, among plain ASCII and multi-byte UTF-8.
        let probes = [
            '"', '\\', '\n', '\u{0}', '\u{1f}', '\u{7f}', ' ', '!', '#', '[', ']', '~', 'é', '€',
        ];
        for probe in probes {
            for offset in 0..17 {
                for len in [offset + 1, offset + 9, 24] {
                    let s: String = (0..len).map(|i| if i == offset { probe } else { 'a' }).collect();
                    let mut out = String::new();
                    write_str(&mut out, &s);
                    assert_eq!(out, escaped_slowly(&s), "{probe:?} at {offset} in {len}");
                }
            }
        }
        let mixed = "plain text, then \"quotes\" and \\ and a tab\there, é and € and \u{1}\u{7f}!";
        let mut out = String::new();
        write_str(&mut out, mixed);
        assert_eq!(out, escaped_slowly(mixed));
    }

    #[test]
    fn shrink_cuts_the_longest_string_at_a_char_boundary() {
        let sub = "é".repeat(10);
        let mut fields = vec![
            ("short", Val::str("abc")),
            ("jwt", Val::Obj(vec![("sub", Val::str(&sub))])),
        ];
        assert_eq!(shrink(&mut fields, 5).as_deref(), Some("jwt.sub"));
        // 20 bytes minus 5 is 15, inside a two-byte character: cut back to 14.
        assert_eq!(fields[1].1, Val::Obj(vec![("sub", Val::str(&"é".repeat(7)))]));
        // Never below the next longest at once: 14 bytes minus 100 levels to 3 ("abc").
        assert_eq!(shrink(&mut fields, 100).as_deref(), Some("jwt.sub"));
        assert_eq!(fields[1].1, Val::Obj(vec![("sub", Val::str("é"))]));
    }

    #[test]
    fn members_read_back_what_was_written() {
        let mut out = String::new();
        write_obj(
            &mut out,
            &[
                ("a", Val::str("x,\"y\":\\\"}")),
                ("n", Val::Null),
                (
                    "o",
                    Val::Obj(vec![("k", Val::List(vec![Val::str("]"), Val::U64(1)]))]),
                ),
                ("e", Val::Obj(vec![])),
                ("l", Val::List(vec![])),
                ("ms", Val::F64(1.5)),
            ],
        );
        assert_eq!(
            members(&out).unwrap(),
            [
                ("a", r#""x,\"y\":\\\"}""#),
                ("n", "null"),
                ("o", r#"{"k":["]",1]}"#),
                ("e", "{}"),
                ("l", "[]"),
                ("ms", "1.500")
            ]
        );
        assert_eq!(members("{}"), Some(vec![]));
        for bad in ["", "[]", "{\"a\":1", "{\"a\":1}x", "{\"a\"}", "{\"a\":\"x}"] {
            assert_eq!(members(bad), None, "{bad}");
        }
    }

    #[test]
    fn shrink_reports_when_nothing_is_left_to_cut() {
        let mut fields = vec![("a", Val::str("")), ("b", Val::U64(1))];
        assert_eq!(shrink(&mut fields, 10), None);
    }
}
