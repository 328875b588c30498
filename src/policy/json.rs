//! Just enough JSON (RFC 8259) to read a JWT: whether a part is an object, and the members
//! of one as slices of its text, building nothing. It is the one reader of the JWT: row 7
//! checks the token's shape (and, under `[jwt] mode = "enforce"`, its claims) with it, and
//! the audit takes the claims it keeps from the same slices (`policy::jwt`).
//!
//! It is at least as strict as serde_json: strings must be UTF-8 without control characters
//! or lone surrogates, numbers must fit an f64, nesting stops at 127 levels (the `jwt` fuzz
//! target holds it to that).

use std::borrow::Cow;

/// serde_json refuses the 128th level of nesting.
const MAX_DEPTH: usize = 127;

/// A value as it stands in the text, already checked: a string's raw content (between its
/// quotes, escapes undecoded), or the whole text of anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    String(&'a [u8]),
    Number(&'a [u8]),
    Object(&'a [u8]),
    Array(&'a [u8]),
    /// `true`, `false` or `null`.
    Literal,
}

/// Calls `visit` with the raw name and the value of each member of `json`, in order, if
/// `json` is one object (whitespace around it allowed); `None` when it is not.
pub fn members<'a>(json: &'a [u8], mut visit: impl FnMut(&'a [u8], Value<'a>)) -> Option<()> {
    let r = Reader(json);
    let i = r.ws(0);
    if *json.get(i)? != b'{' {
        return None;
    }
    let end = r.object(i, 1, &mut visit)?;
    (r.ws(end) == json.len()).then_some(())
}

/// `Some(has_key)` when `json` is one object, where `has_key` says whether its last member
/// named `key` has a string value; `None` when it is not an object.
pub fn object_with_string(json: &[u8], key: &str) -> Option<bool> {
    let mut found = false;
    members(json, |name, value| {
        if unescaped_equals(name, key.as_bytes()) {
            found = matches!(value, Value::String(_));
        }
    })?;
    Some(found)
}

/// The value of the last member named `key` of an object `members` has read.
pub fn member<'a>(object: Value<'a>, key: &str) -> Option<Value<'a>> {
    let Value::Object(text) = object else { return None };
    let mut found = None;
    members(text, |name, value| {
        if unescaped_equals(name, key.as_bytes()) {
            found = Some(value);
        }
    })?;
    found
}

/// The first element of an array `members` has read.
pub fn first(array: Value<'_>) -> Option<Value<'_>> {
    let Value::Array(text) = array else { return None };
    let r = Reader(text);
    let i = r.ws(1);
    if *text.get(i)? == b']' {
        return None;
    }
    r.value(i, 1).map(|(_, value)| value)
}

/// A string's raw content as text, its escapes decoded: borrowed when it has none.
pub fn unescape(raw: &[u8]) -> Option<Cow<'_, str>> {
    let text = std::str::from_utf8(raw).ok()?;
    if !raw.contains(&b'\\') {
        return Some(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = text;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at + 1..)?;
        let hex = |from: usize| u16::from_str_radix(escape.get(from..from + 4)?, 16).ok();
        let (c, used) = match escape.as_bytes().first()? {
            b'u' => match hex(1)? {
                // A surrogate comes as a pair (`Reader::unicode_escape` checked it).
                high @ 0xd800..=0xdbff => {
                    let units = [high, hex(7)?];
                    (char::decode_utf16(units).next()?.ok()?, 11)
                }
                unit => (char::from_u32(u32::from(unit))?, 5),
            },
            b'b' => ('\u{8}', 1),
            b'f' => ('\u{c}', 1),
            b'n' => ('\n', 1),
            b'r' => ('\r', 1),
            b't' => ('\t', 1),
            &other => (char::from(other), 1),
        };
        out.push(c);
        rest = escape.get(used..)?;
    }
    out.push_str(rest);
    Some(Cow::Owned(out))
}

/// Bytes that end a run of plain string content: the closing quote, an escape, a control
/// character (refused) and anything beyond ASCII (to be checked as UTF-8).
const NOT_PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = b < 0x20 || b >= 0x80 || b == b'"' as usize || b == b'\\' as usize;
        b += 1;
    }
    table
};

/// Where the first byte of `s` that is `NOT_PLAIN` is; `None` if there is none.
fn plain_prefix(s: &[u8]) -> Option<usize> {
    const LOW: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    // Per byte, the top bit set where a byte is zero (Hacker's Delight 6-1). A borrow only
    // starts at a zero byte, so the lowest flag is exact; flags above it may be false.
    let zero = |x: u64| x.wrapping_sub(LOW) & !x & HIGH;
    let mut words = s.chunks_exact(8);
    let mut skipped = 0;
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        // Little-endian: the first byte in memory is the lowest in the word.
        let w = u64::from_le_bytes(w);
        let control = w.wrapping_sub(0x20 * LOW) & !w & HIGH;
        let flags =
            zero(w ^ (u64::from(b'"') * LOW)) | zero(w ^ (u64::from(b'\\') * LOW)) | control | (w & HIGH);
        if flags != 0 {
            return Some(skipped + flags.trailing_zeros() as usize / 8);
        }
        skipped += 8;
    }
    let rest = words.remainder();
    let at = rest.iter().position(|&c| NOT_PLAIN[usize::from(c)])?;
    Some(skipped + at)
}

/// The JSON text. Each step takes the index where it starts and returns the index where it
/// ended (`None`: not JSON), so the position lives in a register, not in memory.
#[derive(Clone, Copy)]
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// The first index from `i` on that is not whitespace.
    #[inline(always)]
    fn ws(self, mut i: usize) -> usize {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.0.get(i) {
            i += 1;
        }
        i
    }

    /// The index after `want`, which must be at `i`.
    #[inline(always)]
    fn expect(self, i: usize, want: u8) -> Option<usize> {
        (*self.0.get(i)? == want).then_some(i + 1)
    }

    fn literal(self, i: usize, word: &[u8]) -> Option<(usize, Value<'a>)> {
        self.0
            .get(i..)?
            .starts_with(word)
            .then(|| (i + word.len(), Value::Literal))
    }

    /// A value at `i`, whitespace before it skipped.
    #[inline(always)]
    fn value(self, i: usize, depth: usize) -> Option<(usize, Value<'a>)> {
        let i = self.ws(i);
        let text = |end: usize| &self.0[i..end];
        match *self.0.get(i)? {
            b'{' => self
                .object(i, depth + 1, &mut |_, _| {})
                .map(|end| (end, Value::Object(text(end)))),
            b'[' => self.array(i, depth + 1).map(|end| (end, Value::Array(text(end)))),
            b'"' => self.string(i).map(|(end, raw)| (end, Value::String(raw))),
            b't' => self.literal(i, b"true"),
            b'f' => self.literal(i, b"false"),
            b'n' => self.literal(i, b"null"),
            _ => self.number(i).map(|end| (end, Value::Number(text(end)))),
        }
    }

    /// At `{`: each member's raw name and value go to `visit`.
    /// One copy of the reader whoever visits (`dyn`): the binary is near its size budget.
    fn object(self, i: usize, depth: usize, visit: &mut dyn FnMut(&'a [u8], Value<'a>)) -> Option<usize> {
        if depth > MAX_DEPTH {
            return None;
        }
        let mut i = self.ws(i + 1);
        if *self.0.get(i)? == b'}' {
            return Some(i + 1);
        }
        loop {
            i = self.ws(i);
            if *self.0.get(i)? != b'"' {
                return None;
            }
            let (after_name, name) = self.string(i)?;
            let colon = self.ws(after_name);
            let (after_value, value) = self.value(self.expect(colon, b':')?, depth)?;
            visit(name, value);
            i = self.ws(after_value);
            match *self.0.get(i)? {
                b',' => i += 1,
                b'}' => return Some(i + 1),
                _ => return None,
            }
        }
    }

    /// At `[`.
    fn array(self, i: usize, depth: usize) -> Option<usize> {
        if depth > MAX_DEPTH {
            return None;
        }
        let mut i = self.ws(i + 1);
        if *self.0.get(i)? == b']' {
            return Some(i + 1);
        }
        loop {
            let (after, _) = self.value(i, depth)?;
            i = self.ws(after);
            match *self.0.get(i)? {
                b',' => i += 1,
                b']' => return Some(i + 1),
                _ => return None,
            }
        }
    }

    /// At `"`. Also returns the raw content between the quotes, escapes checked but not
    /// decoded.
    #[inline(always)]
    fn string(self, i: usize) -> Option<(usize, &'a [u8])> {
        let start = i + 1;
        let mut i = start;
        let mut ascii = true;
        loop {
            // Plain ASCII is most of a string: skip it 8 bytes at a time.
            let rest = self.0.get(i..)?;
            let plain = plain_prefix(rest)?;
            let stop = rest[plain];
            i += plain + 1;
            match stop {
                b'"' => break,
                b'\\' => i = self.escape(i)?,
                0x80.. => ascii = false,
                _ => return None,
            }
        }
        let raw = &self.0[start..i - 1];
        // Escapes are ASCII, so the raw content is UTF-8 exactly when the string is; only a
        // string with a byte above 0x7f needs the full check.
        if !ascii {
            std::str::from_utf8(raw).ok()?;
        }
        Some((i, raw))
    }

    /// After `\\`.
    fn escape(self, i: usize) -> Option<usize> {
        match *self.0.get(i)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(i + 1),
            b'u' => self.unicode_escape(i + 1),
            _ => None,
        }
    }

    /// After `\u`: four hex digits; a surrogate only as a high-low pair.
    fn unicode_escape(self, i: usize) -> Option<usize> {
        match self.hex4(i)? {
            0xd800..=0xdbff => {
                let low = self.expect(self.expect(i + 4, b'\\')?, b'u')?;
                matches!(self.hex4(low)?, 0xdc00..=0xdfff).then_some(low + 4)
            }
            0xdc00..=0xdfff => None,
            _ => Some(i + 4),
        }
    }

    fn hex4(self, i: usize) -> Option<u32> {
        self.0
            .get(i..)?
            .get(..4)?
            .iter()
            .try_fold(0, |n, &c| Some(n << 4 | char::from(c).to_digit(16)?))
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, finite as an f64.
    fn number(self, start: usize) -> Option<usize> {
        let b = self.0;
        let mut i = start;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        i = match *b.get(i)? {
            b'0' => i + 1,
            b'1'..=b'9' => self.digits(i + 1),
            _ => return None,
        };
        let mut plain = true;
        if b.get(i) == Some(&b'.') {
            i = self.at_least_one_digit(i + 1)?;
            plain = false;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            i = self.at_least_one_digit(i)?;
            plain = false;
        }
        let text = &b[start..i];
        // Short integers always fit; anything else is checked the way a reader would see it.
        if plain && text.len() <= 18 {
            return Some(i);
        }
        let value: f64 = std::str::from_utf8(text).ok()?.parse().ok()?;
        value.is_finite().then_some(i)
    }

    fn digits(self, mut i: usize) -> usize {
        while let Some(b'0'..=b'9') = self.0.get(i) {
            i += 1;
        }
        i
    }

    fn at_least_one_digit(self, i: usize) -> Option<usize> {
        let end = self.digits(i);
        (end > i).then_some(end)
    }
}

/// Whether a string's raw content (escapes undecoded) is `want`, which has no `\\`.
fn unescaped_equals(raw: &[u8], want: &[u8]) -> bool {
    // An escape is longer than what it stands for: content no longer than `want` can only
    // match as it is, and only longer content need be looked at for escapes.
    if raw.len() <= want.len() || !raw.contains(&b'\\') {
        return raw == want;
    }
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'\\' {
            decoded.push(raw[i]);
            i += 1;
            continue;
        }
        let c = match raw.get(i + 1) {
            Some(b'u') => {
                let hex = raw.get(i + 2..i + 6).and_then(|h| std::str::from_utf8(h).ok());
                let Some(code) = hex.and_then(|h| u32::from_str_radix(h, 16).ok()) else {
                    return false;
                };
                i += 6;
                // `want` is ASCII: any escape beyond it cannot match.
                match u8::try_from(code) {
                    Ok(b) if b.is_ascii() => b,
                    _ => return false,
                }
            }
            Some(&e) => {
                i += 2;
                match e {
                    b'b' => 8,
                    b'f' => 12,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    other => other,
                }
            }
            None => return false,
        };
        decoded.push(c);
    }
    decoded == want
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_accepted_and_the_key_found() {
        let cases: [(&str, Option<bool>); 14] = [
            (r#"{"alg":"none"}"#, Some(true)),
            (" {\n\"alg\" : \"RS256\" , \"typ\":\"JWT\"}\t", Some(true)),
            (r#"{"typ":"JWT"}"#, Some(false)),
            (r#"{"alg":null}"#, Some(false)),
            (r#"{"alg":"x","alg":1}"#, Some(false)),
            (r#"{"alg":1,"alg":"x"}"#, Some(true)),
            (r#"{"a\u006cg":"x"}"#, Some(true)),
            (r#"{}"#, Some(false)),
            (
                r#"{"n":[1,-2.5e3,0,true,false,null,{"x":[]}],"s":"\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"}"#,
                Some(false),
            ),
            (r#"{"big":123456789012345678901234567890}"#, Some(false)),
            (r#"{"x":"é"}"#, Some(false)),
            (r#"{"alg":"x"} x"#, None),
            (r#"{"alg":"x",}"#, None),
            (r#"["alg"]"#, None),
        ];
        for (json, want) in cases {
            assert_eq!(object_with_string(json.as_bytes(), "alg"), want, "{json}");
        }
    }

    #[test]
    fn members_are_slices_of_the_text() {
        let json = br#" {"s":"a\"b", "n":-1.5e3, "o":{"k":[1,{"v":"x"}]}, "a":[ "f" , 2], "t":true, "e\u0073":null} "#;
        let mut seen = Vec::new();
        members(json, |name, value| seen.push((name, value))).unwrap();
        let want: [(&[u8], Value); 6] = [
            (b"s", Value::String(br#"a\"b"#)),
            (b"n", Value::Number(b"-1.5e3")),
            (b"o", Value::Object(br#"{"k":[1,{"v":"x"}]}"#)),
            (b"a", Value::Array(br#"[ "f" , 2]"#)),
            (b"t", Value::Literal),
            (br"e\u0073", Value::Literal),
        ];
        assert_eq!(seen, want);
        let k = member(seen[2].1, "k").unwrap();
        assert_eq!(first(k), Some(Value::Number(b"1")));
        assert_eq!(first(seen[3].1), Some(Value::String(b"f")));
        assert_eq!(first(Value::Array(b"[ ]")), None);
        assert_eq!(member(seen[2].1, "v"), None, "members of members are not members");
        assert_eq!(member(seen[0].1, "s"), None, "a string has no members");
        assert_eq!(members(b"[]", |_, _| {}), None);
    }

    #[test]
    fn unescape_decodes_what_the_reader_accepted() {
        assert!(matches!(unescape(b"plain"), Some(Cow::Borrowed("plain"))));
        let cases: [(&[u8], &str); 4] = [
            (br#"a\"b\\c\/d\b\f\n\r\t"#, "a\"b\\c/d\u{8}\u{c}\n\r\t"),
            (br"\u00e9\u20AC\ud83d\ude00!", "\u{e9}\u{20ac}\u{1f600}!"),
            (br"x\u0041", "xA"),
            ("\u{e9}\\n".as_bytes(), "\u{e9}\n"),
        ];
        for (raw, want) in cases {
            assert_eq!(
                unescape(raw).as_deref(),
                Some(want),
                "{}",
                String::from_utf8_lossy(raw)
            );
            // Whatever the reader accepts as a string, `unescape` decodes.
            let quoted = [b"{\"k\":\"", raw, b"\"}"].concat();
            assert_eq!(object_with_string(&quoted, "k"), Some(true));
        }
        // Text the reader would refuse is refused here too, never a panic.
        let refused: [&[u8]; 6] = [
            br"\",
            br"\u12",
            br"\ud800",
            br"\ud800\u0041",
            b"\xff",
            b"\\\xc3\xa9",
        ];
        for raw in refused {
            assert_eq!(unescape(raw), None, "{raw:?}");
        }
    }

    #[test]
    fn plain_prefix_stops_at_the_first_byte_that_is_not_plain() {
        let bytewise = |s: &[u8]| s.iter().position(|&c| NOT_PLAIN[usize::from(c)]);
        let cases: [&[u8]; 10] = [
            b"",
            b"a",
            b"abcdefg",
            b"abcdefgh",
            b"abcdefghijklmnopqrstuvwxyz0123456789",
            b"abc\"",
            b"\"",
            b"https://dispenser-a.example.nhs.uk\",\"sub\":\"1\"}",
            "caf\u{e9}\"".as_bytes(),
            b"~!#$%&'()*+,-./:;<=>?@[]^_`{|}\x7f",
        ];
        for s in cases {
            assert_eq!(plain_prefix(s), bytewise(s), "{:?}", String::from_utf8_lossy(s));
        }
        // Every stop byte at every place in and after the words, after every plain byte
        // (a borrow from one byte must not hide or fake the next).
        let stops: Vec<u8> = (0..=255u8).filter(|&c| NOT_PLAIN[usize::from(c)]).collect();
        for len in 1..=20 {
            for at in 0..len {
                for &stop in &stops {
                    for before in [b' ', b'!', b'#', b'[', b']', b'~', 0x7f] {
                        let mut s = vec![before; len];
                        s[at] = stop;
                        assert_eq!(plain_prefix(&s), Some(at), "{len} {at} {stop:#x} {before:#x}");
                    }
                }
            }
            let plain: Vec<u8> = (0x20..0x80u8).filter(|&c| !NOT_PLAIN[usize::from(c)]).collect();
            for &c in &plain {
                assert_eq!(plain_prefix(&vec![c; len]), None, "{c:#x}");
            }
        }
    }

    #[test]
    fn keys_compare_after_unescaping() {
        let cases: [(&[u8], bool); 12] = [
            (b"alg", true),
            (br"a\u006cg", true),
            (br"\u0061\u006C\u0067", true),
            (br"al\u0067", true),
            (b"", false),
            (b"al", false),
            (b"alG", false),
            (b"algx", false),
            (br"al\u0067x", false),
            (br"\/lg", false),
            (br"a\\lg", false),
            (br"alg\u00e9", false),
        ];
        for (raw, want) in cases {
            assert_eq!(
                unescaped_equals(raw, b"alg"),
                want,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn malformed_json_is_refused() {
        let cases = [
            "",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{a:1}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":.5}",
            "{\"a\":1e}",
            "{\"a\":-}",
            "{\"a\":+1}",
            "{\"a\":1e400}",
            "{\"a\":tru}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12\"}",
            "{\"a\":\"\\ud800\"}",
            "{\"a\":\"\\udc00\"}",
            "{\"a\":\"\\ud800\\u0041\"}",
            "{\"a\":\"tab\there\"}",
            "{\"a\":[1,]}",
            "{\"a\":[1 2]}",
            "{\"a\":1}}",
            "{\"a\":1,\"b\"}",
        ];
        for json in cases {
            assert_eq!(object_with_string(json.as_bytes(), "alg"), None, "{json:?}");
        }
        // Bytes beyond ASCII must make UTF-8: a lone byte, a truncated or overlong sequence,
        // an encoded surrogate.
        let not_utf8: [&[u8]; 5] = [
            b"{\"a\":\"\xff\"}",
            b"{\"a\":\"x\xc3\"}",
            b"{\"\xa9\":1}",
            b"{\"a\":\"\xc0\xaf\"}",
            b"{\"a\":\"\xed\xa0\x80\"}",
        ];
        for json in not_utf8 {
            assert_eq!(object_with_string(json, "alg"), None, "{json:?}");
        }
        assert_eq!(
            object_with_string("{\"alg\":\"\u{e9}\\n\u{1f600}\"}".as_bytes(), "alg"),
            Some(true)
        );
    }

    #[test]
    fn nesting_stops_where_serde_json_stops() {
        let nested = |levels: usize| {
            let inner = levels - 1;
            format!("{{\"a\":{}{}}}", "[".repeat(inner), "]".repeat(inner))
        };
        assert_eq!(
            object_with_string(nested(MAX_DEPTH).as_bytes(), "alg"),
            Some(false)
        );
        assert_eq!(object_with_string(nested(MAX_DEPTH + 1).as_bytes(), "alg"), None);
        assert!(serde_json::from_str::<serde_json::Value>(&nested(MAX_DEPTH)).is_ok());
        assert!(serde_json::from_str::<serde_json::Value>(&nested(MAX_DEPTH + 1)).is_err());
    }
}
