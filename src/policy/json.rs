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
    let mut r = Reader { b: json, i: 0 };
    r.ws();
    if r.peek()? != b'{' {
        return None;
    }
    let found = r.object(1, key.as_bytes())?;
    r.ws();
    (r.i == json.len()).then_some(found)
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

#[derive(PartialEq, Eq)]
enum Kind {
    String,
    Other,
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline(always)]
    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    #[inline(always)]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<Kind> {
        let end = self.i.checked_add(word.len())?;
        (self.b.get(self.i..end)? == word).then(|| {
            self.i = end;
            Kind::Other
        })
    }

    #[inline(always)]
    fn value(&mut self, depth: usize) -> Option<Kind> {
        self.ws();
        match self.peek()? {
            b'{' => self.object(depth + 1, b"").map(|_| Kind::Other),
            b'[' => self.array(depth + 1).map(|_| Kind::Other),
            b'"' => self.string().map(|_| Kind::String),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number().map(|_| Kind::Other),
        }
    }

    /// At `{`. Returns whether the last member named `key` has a string value.
    fn object(&mut self, depth: usize, key: &[u8]) -> Option<bool> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        self.ws();
        let mut found = false;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(false);
        }
        loop {
            self.ws();
            if self.peek()? != b'"' {
                return None;
            }
            let name = self.string()?;
            self.ws();
            if self.next()? != b':' {
                return None;
            }
            let kind = self.value(depth)?;
            if !key.is_empty() && unescaped_equals(name, key) {
                found = kind == Kind::String;
            }
            self.ws();
            match self.next()? {
                b',' => continue,
                b'}' => return Some(found),
                _ => return None,
            }
        }
    }

    /// At `[`.
    fn array(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.value(depth)?;
            self.ws();
            match self.next()? {
                b',' => continue,
                b']' => return Some(()),
                _ => return None,
            }
        }
    }

    /// At `"`. Returns the raw content between the quotes, escapes checked but not decoded.
    #[inline(always)]
    fn string(&mut self) -> Option<&'a [u8]> {
        self.i += 1;
        let start = self.i;
        let mut ascii = true;
        loop {
            // Plain ASCII is most of a string: skip it in one tight scan.
            let plain = self.b[self.i..].iter().position(|&c| NOT_PLAIN[usize::from(c)])?;
            self.i += plain;
            match self.next()? {
                b'"' => break,
                b'\\' => match self.next()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' => self.unicode_escape()?,
                    _ => return None,
                },
                0x80.. => ascii = false,
                _ => return None,
            }
        }
        let raw = &self.b[start..self.i - 1];
        // Escapes are ASCII, so the raw content is UTF-8 exactly when the string is; only a
        // string with a byte above 0x7f needs the full check.
        if !ascii {
            std::str::from_utf8(raw).ok()?;
        }
        Some(raw)
    }

    /// After `\u`: four hex digits; a surrogate only as a high-low pair.
    fn unicode_escape(&mut self) -> Option<()> {
        match self.hex4()? {
            0xd800..=0xdbff => {
                if self.next()? != b'\\' || self.next()? != b'u' {
                    return None;
                }
                matches!(self.hex4()?, 0xdc00..=0xdfff).then_some(())
            }
            0xdc00..=0xdfff => None,
            _ => Some(()),
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let mut n = 0;
        for _ in 0..4 {
            n = n << 4 | char::from(self.next()?).to_digit(16)?;
        }
        Some(n)
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, finite as an f64.
    fn number(&mut self) -> Option<()> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let mut plain = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.at_least_one_digit()?;
            plain = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.at_least_one_digit()?;
            plain = false;
        }
        let text = &self.b[start..self.i];
        // Short integers always fit; anything else is checked the way a reader would see it.
        if plain && text.len() <= 18 {
            return Some(());
        }
        let value: f64 = std::str::from_utf8(text).ok()?.parse().ok()?;
        value.is_finite().then_some(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    fn at_least_one_digit(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
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
