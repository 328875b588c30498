//! Just enough JSON (RFC 8259) to check that a JWT part is an object, building nothing: the
//! admission decision needs the JWT to be well-formed, not its claims (those are read once,
//! with serde_json, for the audit).
//!
//! It is at least as strict as serde_json reading the claims: strings must be UTF-8 without
//! control characters or lone surrogates, numbers must fit an f64, nesting stops at 127
//! levels. So a token the decision admits always yields its claims (the `jwt` fuzz target
//! checks this).

/// serde_json refuses the 128th level of nesting.
const MAX_DEPTH: usize = 127;

/// `Some(has_key)` when `json` is one object (whitespace around it allowed), where `has_key`
/// says whether its last member named `key` has a string value; `None` when it is not.
pub fn object_with_string(json: &[u8], key: &str) -> Option<bool> {
    let r = Reader(json);
    let i = r.ws(0);
    if *json.get(i)? != b'{' {
        return None;
    }
    let (end, found) = r.object(i, 1, key.as_bytes())?;
    (r.ws(end) == json.len()).then_some(found)
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

#[derive(PartialEq, Eq)]
enum Kind {
    String,
    Other,
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

    fn literal(self, i: usize, word: &[u8]) -> Option<(usize, Kind)> {
        self.0
            .get(i..)?
            .starts_with(word)
            .then(|| (i + word.len(), Kind::Other))
    }

    /// A value at `i`, whitespace before it skipped.
    #[inline(always)]
    fn value(self, i: usize, depth: usize) -> Option<(usize, Kind)> {
        let i = self.ws(i);
        match *self.0.get(i)? {
            b'{' => self.object(i, depth + 1, b"").map(|(i, _)| (i, Kind::Other)),
            b'[' => self.array(i, depth + 1).map(|i| (i, Kind::Other)),
            b'"' => self.string(i).map(|(i, _)| (i, Kind::String)),
            b't' => self.literal(i, b"true"),
            b'f' => self.literal(i, b"false"),
            b'n' => self.literal(i, b"null"),
            _ => self.number(i).map(|i| (i, Kind::Other)),
        }
    }

    /// At `{`. Also returns whether the last member named `key` has a string value.
    fn object(self, i: usize, depth: usize, key: &[u8]) -> Option<(usize, bool)> {
        if depth > MAX_DEPTH {
            return None;
        }
        let mut i = self.ws(i + 1);
        if *self.0.get(i)? == b'}' {
            return Some((i + 1, false));
        }
        let mut found = false;
        loop {
            i = self.ws(i);
            if *self.0.get(i)? != b'"' {
                return None;
            }
            let (after_name, name) = self.string(i)?;
            let colon = self.ws(after_name);
            let (after_value, kind) = self.value(self.expect(colon, b':')?, depth)?;
            if !key.is_empty() && unescaped_equals(name, key) {
                found = kind == Kind::String;
            }
            i = self.ws(after_value);
            match *self.0.get(i)? {
                b',' => i += 1,
                b'}' => return Some((i + 1, found)),
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
