//! Row 7: the `Ssp-*` headers and the JWT, each present exactly once and well-formed.

use super::jwt;
use super::refusal::Refusal;
use crate::http::head::trim_ows;
use crate::http::request::RequestHead;
use std::fmt::Write as _;

/// The routing headers of one request, validated, borrowed from its head. They stay bytes:
/// the allowlist looks them up as bytes, and only a refusal or the audit writes them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SspHeaders<'a> {
    /// 8-4-4-4-12 hexadecimal digits (`is_uuid`).
    pub trace_id: &'a [u8],
    pub from: Asid<'a>,
    pub to: Asid<'a>,
    /// UTF-8 without a space (`is_interaction`).
    pub interaction: &'a [u8],
}

/// An ASID as sent: 1 to 20 ASCII digits (`is_asid` checked it). Written out (`Display`) only
/// for a refusal's token; the decision compares its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asid<'a>(&'a [u8]);

impl<'a> Asid<'a> {
    /// `None` unless `v` is an ASID.
    pub fn new(v: &'a [u8]) -> Option<Asid<'a>> {
        is_asid(v).then_some(Asid(v))
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
}

impl std::fmt::Display for Asid<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Digits only, so each byte is its own character.
        self.0.iter().try_for_each(|&b| f.write_char(char::from(b)))
    }
}

impl PartialEq<&str> for Asid<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

/// The checked headers, in the order their refusals are reported.
const CHECKED: [&str; 5] = [
    "Ssp-TraceID",
    "Ssp-From",
    "Ssp-To",
    "Ssp-InteractionID",
    "Authorization",
];
const AUTHORIZATION: usize = 4;

/// The index in `CHECKED` of the name of each length, if there is one.
const BY_LENGTH: [Option<usize>; 18] = {
    let mut table = [None; 18];
    let mut i = 0;
    while i < CHECKED.len() {
        table[CHECKED[i].len()] = Some(i);
        i += 1;
    }
    table
};

/// Row 7: each checked header present once and well-formed (the JWT only when present or
/// required, and kept to `jwt`'s rules at `now`). The refusal names the first header found
/// wanting.
pub fn check<'h>(
    head: &'h RequestHead,
    require_jwt: bool,
    jwt: &jwt::Policy,
    now: i64,
) -> Result<SspHeaders<'h>, Refusal> {
    let refused = |i: usize| Refusal::InvalidHeader(CHECKED[i]);
    // One pass over the fields finds every checked header. A second instance of any of them
    // is refused here, one rule for all five: the proxy checks and audits one value while a
    // provider may read the other, or both joined into a list. A lookalike is such a second
    // instance to the stacks that read it as the checked field, or one nobody checked.
    let mut seen: [Option<&[u8]>; CHECKED.len()] = [None; CHECKED.len()];
    for (name, value) in head.fields() {
        match classify(name) {
            Name::Checked(i) if seen[i].is_none() => seen[i] = Some(value),
            Name::Checked(i) | Name::Lookalike(i) => return Err(refused(i)),
            Name::Other => {}
        }
    }
    // Only SP and HTAB are optional whitespace around a field value (RFC 9110 section 5.6.3).
    // The rules run on the bytes; none of them needs a `&str`.
    let once = |i: usize| seen[i].map(trim_ows).ok_or_else(|| refused(i));
    let ssp = SspHeaders {
        trace_id: Some(once(0)?).filter(|v| is_uuid(v)).ok_or_else(|| refused(0))?,
        from: Asid::new(once(1)?).ok_or_else(|| refused(1))?,
        to: Asid::new(once(2)?).ok_or_else(|| refused(2))?,
        interaction: Some(once(3)?)
            .filter(|v| is_interaction(v))
            .ok_or_else(|| refused(3))?,
    };
    match seen[AUTHORIZATION] {
        None if require_jwt => Err(refused(AUTHORIZATION)),
        None => Ok(ssp),
        Some(v) => jwt::check(jwt, v, &ssp, now).map(|()| ssp),
    }
}

/// What a field name is to row 7.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    /// `CHECKED[i]`, in any case.
    Checked(usize),
    /// `CHECKED[i]` with `_` for `-` (`Ssp_From`): CGI, WSGI and PHP map both to `HTTP_SSP_FROM`,
    /// so a provider on such a stack may read it as the checked field.
    Lookalike(usize),
    Other,
}

/// Which of `CHECKED` a field name is, or imitates. The checked names differ in length (a test
/// holds this), so the length picks the one candidate and most other fields (`Host`, ...)
/// cost no byte comparison at all.
fn classify(name: &[u8]) -> Name {
    let Some(&Some(i)) = BY_LENGTH.get(name.len()) else {
        return Name::Other;
    };
    // Senders mostly spell the names as written here: an exact comparison answers at once.
    let want = CHECKED[i].as_bytes();
    if name == want || name.eq_ignore_ascii_case(want) {
        return Name::Checked(i);
    }
    let imitates = name
        .iter()
        .zip(want)
        .all(|(&b, &w)| b.eq_ignore_ascii_case(&w) || (b, w) == (b'_', b'-'));
    match imitates {
        true => Name::Lookalike(i),
        false => Name::Other,
    }
}

/// 8-4-4-4-12 hexadecimal digits.
pub fn is_uuid(b: &[u8]) -> bool {
    const SHAPE: &[u8; 36] = b"xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
    let Ok(b) = <&[u8; 36]>::try_from(b) else {
        return false;
    };
    // No early exit: the fixed length lets the compiler unroll this into straight-line code.
    b.iter().zip(SHAPE).fold(true, |ok, (&c, &shape)| {
        ok & if shape == b'-' {
            c == b'-'
        } else {
            c.is_ascii_hexdigit()
        }
    })
}

/// Not empty, no space, UTF-8. Interaction URNs are ASCII: 8 bytes at a time show that there
/// is no space and nothing beyond ASCII; only a value with a byte beyond ASCII goes through
/// the full UTF-8 check.
pub fn is_interaction(v: &[u8]) -> bool {
    const LOW: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    const SPACES: u64 = u64::from_ne_bytes([b' '; 8]);
    // Per byte, the top bit of the result is set where the byte is a space or beyond ASCII
    // (a zero byte after `^ SPACES`, found as in Hacker's Delight 6-1, also sets it: harmless
    // false alarms go to the exact check below).
    let flags = |w: u64| ((w ^ SPACES).wrapping_sub(LOW) | w) & HIGH;
    let mut words = v.chunks_exact(8);
    let mut seen = 0;
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        seen |= flags(u64::from_ne_bytes(w));
    }
    let rest = words.remainder();
    let mut w = [b'x'; 8];
    w[..rest.len()].copy_from_slice(rest);
    seen |= flags(u64::from_ne_bytes(w));
    !v.is_empty() && (seen == 0 || !v.contains(&b' ') && std::str::from_utf8(v).is_ok())
}

/// ASIDs are numeric strings; 12 digits in every known example, 1–20 accepted.
pub fn is_asid(v: &[u8]) -> bool {
    // No early exit: a branch-free loop over a dozen digits.
    (1..=20).contains(&v.len()) && v.iter().fold(true, |ok, b| ok & b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request;

    /// Row 7 under `[jwt] mode = "shape"`, the default: the JWT's rules are `jwt.rs`'s tests.
    fn check(head: &RequestHead, require_jwt: bool) -> Result<SspHeaders<'_>, Refusal> {
        super::check(head, require_jwt, &jwt::Policy::default(), 0)
    }

    const JWT: &str = "Bearer eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.";

    fn head(fields: &[(&str, &str)]) -> RequestHead {
        let mut raw = String::from("GET /https://h/p HTTP/1.1\r\nHost: proxy\r\n");
        for (n, v) in fields {
            raw.push_str(&format!("{n}: {v}\r\n"));
        }
        raw.push_str("\r\n");
        request::parse(raw.as_bytes(), 65536).unwrap().unwrap()
    }

    fn valid() -> Vec<(&'static str, &'static str)> {
        vec![
            ("Ssp-TraceID", "5b6f3f8e-7a1d-4c1e-9d3a-2f0b6c1e8a44"),
            ("Ssp-From", "200000000001"),
            ("Ssp-To", "200000000999"),
            ("Ssp-InteractionID", "urn:nhs:names:services:x"),
            ("Authorization", JWT),
        ]
    }

    #[test]
    fn valid_headers_pass() {
        let head = head(&valid());
        let h = check(&head, true).unwrap();
        assert_eq!(h.from, "200000000001");
        assert_eq!(h.from.to_string(), "200000000001");
        assert_eq!(h.interaction, b"urn:nhs:names:services:x");
        assert_eq!(h.trace_id, b"5b6f3f8e-7a1d-4c1e-9d3a-2f0b6c1e8a44");
    }

    #[test]
    fn each_missing_header_is_named_in_the_refusal() {
        for name in [
            "Ssp-TraceID",
            "Ssp-From",
            "Ssp-To",
            "Ssp-InteractionID",
            "Authorization",
        ] {
            let fields: Vec<_> = valid().into_iter().filter(|(n, _)| *n != name).collect();
            assert_eq!(
                check(&head(&fields), true),
                Err(Refusal::InvalidHeader(name)),
                "{name}"
            );
        }
    }

    #[test]
    fn invalid_or_duplicated_values_are_refused() {
        let cases = [
            ("Ssp-TraceID", "not-a-uuid"),
            ("Ssp-TraceID", "5b6f3f8e7a1d4c1e9d3a2f0b6c1e8a44"),
            ("Ssp-TraceID", "5b6f3f8e-7a1d-4c1e-9d3a-2f0b6c1e8a4g"),
            ("Ssp-TraceID", "5b6f3f8e-7a1d-4c1e-9d3a2-f0b6c1e8a44"),
            ("Ssp-TraceID", "5b6f3f8e-7a1d-4c1e-9d3a--f0b6c1e8a4"),
            ("Ssp-TraceID", "5b6f3f8e-7a1d-4c1e-9d3a-2f0b6c1e8a44-"),
            ("Ssp-TraceID", "-5b6f3f8-7a1d-4c1e-9d3a-2f0b6c1e8a44"),
            ("Ssp-From", "20000000000a"),
            ("Ssp-From", "123456789012345678901"),
            ("Ssp-To", ""),
            ("Ssp-InteractionID", ""),
            ("Authorization", "Bearer nonsense"),
        ];
        for (name, value) in cases {
            let fields: Vec<_> = valid()
                .into_iter()
                .map(|(n, v)| if n == name { (n, value) } else { (n, v) })
                .collect();
            assert_eq!(
                check(&head(&fields), true),
                Err(Refusal::InvalidHeader(name)),
                "{name}: {value}"
            );
        }
        let mut doubled = valid();
        doubled.push(("ssp-from", "200000000002"));
        assert_eq!(
            check(&head(&doubled), true),
            Err(Refusal::InvalidHeader("Ssp-From"))
        );
    }

    /// Issue 24 item 3a: one rule for all five; a second instance is refused whatever its
    /// value (the same one, another valid one, an empty one) and however its name is spelt.
    #[test]
    fn each_checked_header_given_twice_is_refused() {
        for (name, value) in valid() {
            for second in [
                name.to_string(),
                name.to_ascii_lowercase(),
                name.to_ascii_uppercase(),
            ] {
                for second_value in [value, "", "x"] {
                    let mut fields = valid();
                    fields.push((&second, second_value));
                    for require_jwt in [true, false] {
                        assert_eq!(
                            check(&head(&fields), require_jwt),
                            Err(Refusal::InvalidHeader(name)),
                            "{second}: {second_value:?}"
                        );
                    }
                }
            }
        }
    }

    /// Issue 24 item 11: CGI, WSGI and PHP read `Ssp_From` as `Ssp-From` (both become
    /// `HTTP_SSP_FROM`), so a field named as a checked one with `_` for `-` is refused, named
    /// after the field it imitates, beside the real one or in its place.
    #[test]
    fn underscore_lookalikes_of_checked_headers_are_refused() {
        for (name, value) in valid().into_iter().filter(|(n, _)| n.contains('-')) {
            let lookalike = name.replace('-', "_");
            for spelling in [
                lookalike.clone(),
                lookalike.to_ascii_lowercase(),
                lookalike.to_ascii_uppercase(),
            ] {
                let mut beside = valid();
                beside.push((&spelling, value));
                let mut first = vec![(spelling.as_str(), value)];
                first.extend(valid());
                let instead: Vec<_> = valid()
                    .into_iter()
                    .map(|(n, v)| if n == name { (spelling.as_str(), v) } else { (n, v) })
                    .collect();
                for fields in [beside, first, instead] {
                    assert_eq!(
                        check(&head(&fields), true),
                        Err(Refusal::InvalidHeader(name)),
                        "{spelling}"
                    );
                }
            }
        }
        // Other names with underscores are not the checked ones.
        let mut fields = valid();
        fields.extend([
            ("Ssp_Fromx", "1"),
            ("X_Ssp_From", "1"),
            ("Ssp__From", "1"),
            ("Ssp_Frm", "1"),
        ]);
        assert!(check(&head(&fields), true).is_ok());
    }

    #[test]
    fn checked_names_differ_in_length() {
        for (i, a) in CHECKED.iter().enumerate() {
            assert!(CHECKED[i + 1..].iter().all(|b| b.len() != a.len()), "{a}");
        }
    }

    #[test]
    fn values_are_trimmed_of_http_whitespace_only() {
        // httparse has already dropped the SP/HTAB around a value; `trim_ows` makes this
        // check not depend on that. Unicode spaces (here NBSP) are part of the value.
        let cases = [
            ("Ssp-From", "200000000001\t", true),
            ("Ssp-From", "\t200000000001", true),
            ("Ssp-From", "200000000001\u{a0}", false),
            ("Ssp-TraceID", "\u{a0}5b6f3f8e-7a1d-4c1e-9d3a-2f0b6c1e8a44", false),
            ("Ssp-InteractionID", "urn:x\t", true),
            ("Ssp-InteractionID", "urn:\u{e9}", true),
            ("Ssp-InteractionID", "urn:a b", false),
            ("Ssp-InteractionID", "\u{3000}", true),
        ];
        for (name, value, ok) in cases {
            let fields: Vec<_> = valid()
                .into_iter()
                .map(|(n, v)| if n == name { (n, value) } else { (n, v) })
                .collect();
            let head = head(&fields);
            let got = check(&head, true);
            assert_eq!(got.is_ok(), ok, "{name}: {value:?}: {got:?}");
            if let Ok(h) = got {
                assert!(!h.from.as_bytes().ends_with(b"\t") && !h.interaction.ends_with(b"\t"));
            }
        }
    }

    #[test]
    fn non_utf8_interaction_is_refused() {
        let mut raw = b"GET /https://h/p HTTP/1.1\r\nHost: proxy\r\n".to_vec();
        for (n, v) in valid() {
            let v = if n == "Ssp-InteractionID" { "urn:\u{e9}" } else { v };
            raw.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        // é is C3 A9 in UTF-8; A9 alone is a continuation byte with nothing to continue.
        let at = raw.windows(2).position(|w| w == [0xc3, 0xa9]).unwrap();
        raw.remove(at);
        let head = request::parse(&raw, 65536).unwrap().unwrap();
        assert_eq!(
            check(&head, true),
            Err(Refusal::InvalidHeader("Ssp-InteractionID"))
        );
    }

    #[test]
    fn uuid_rule_table() {
        let cases: [(&[u8], bool); 12] = [
            (b"5b6f3f8e-7a1d-4c1e-9d3a-2f0b6c1e8a44", true),
            (b"5B6F3F8E-7A1D-4C1E-9D3A-2F0B6C1E8A44", true),
            (b"00000000-0000-0000-0000-000000000000", true),
            (b"", false),
            (b"5b6f3f8e-7a1d-4c1e-9d3a-2f0b6c1e8a4", false),
            (b"5b6f3f8e-7a1d-4c1e-9d3a-2f0b6c1e8a444", false),
            (b"5b6f3f8e-7a1d-4c1e-9d3a-2f0b6c1e8a4g", false),
            (b"g5b6f3f8-7a1d-4c1e-9d3a-2f0b6c1e8a44", false),
            (b"5b6f3f8e_7a1d-4c1e-9d3a-2f0b6c1e8a44", false),
            (b"5b6f3f8e-7a1d-4c1e-9d3a-2f0b6c1e8a\xc3\xa9", false),
            (b"5b6f3f8e-7a1d-4c1e-9d3a-2f0b6c1e8a\x00\x00", false),
            (b"------------------------------------", false),
        ];
        for (v, want) in cases {
            assert_eq!(is_uuid(v), want, "{:?}", String::from_utf8_lossy(v));
        }
    }

    #[test]
    fn asid_rule_table() {
        let cases: [(&[u8], bool); 9] = [
            (b"0", true),
            (b"200000000001", true),
            (b"12345678901234567890", true),
            (b"", false),
            (b"123456789012345678901", false),
            (b"20000000000a", false),
            (b" 1", false),
            (b"1\xd9\xa1", false),
            (b"\xef\xbc\x91", false),
        ];
        for (v, want) in cases {
            assert_eq!(Asid::new(v).is_some(), want, "{:?}", String::from_utf8_lossy(v));
            assert_eq!(is_asid(v), want);
        }
        assert_eq!(Asid::new(b"0042").unwrap().to_string(), "0042");
    }

    #[test]
    fn interaction_rule_table() {
        let long = "urn:nhs:names:services:prescription-exemptions:custom:operation:search:x".repeat(20);
        let cases: Vec<(Vec<u8>, bool)> = vec![
            (b"u".to_vec(), true),
            (b"urn:x".to_vec(), true),
            (b"urn:nhs:names:services:x".to_vec(), true),
            (long.clone().into_bytes(), true),
            (format!("{long} ").into_bytes(), false),
            (format!(" {long}").into_bytes(), false),
            (b"urn:\tx".to_vec(), true),
            ("urn:\u{e9}".as_bytes().to_vec(), true),
            ("\u{3000}".as_bytes().to_vec(), true),
            ("urn:\u{1f600}:12345678".as_bytes().to_vec(), true),
            (b"".to_vec(), false),
            (b" ".to_vec(), false),
            (b"12345678 ".to_vec(), false),
            (b"1234567 8".to_vec(), false),
            (b"urn:a b".to_vec(), false),
            // `!` follows a space in ASCII: the word trick must not lose either.
            (b" !!!!!!!!".to_vec(), false),
            (b"!!!!!!! !".to_vec(), false),
            (b"urn:\xa9".to_vec(), false),
            (b"urn:x\xc3".to_vec(), false),
            (b"12345678\xff".to_vec(), false),
            (b"\xed\xa0\x80".to_vec(), false),
            (b"\xc3\xa9 ".to_vec(), false),
        ];
        for (v, want) in cases {
            assert_eq!(is_interaction(&v), want, "{:?}", String::from_utf8_lossy(&v));
            // The rule is "not empty, no space, UTF-8", spelled plainly.
            let plain = !v.is_empty() && !v.contains(&b' ') && std::str::from_utf8(&v).is_ok();
            assert_eq!(plain, want);
        }
        // Every position of a space or a non-ASCII byte, in and past the 8-byte words.
        for len in 1..=24 {
            for at in 0..len {
                for bad in [b' ', 0x80, 0xff] {
                    let mut v = vec![b'a'; len];
                    v[at] = bad;
                    assert!(!is_interaction(&v), "{len} {at} {bad}");
                }
            }
            assert!(is_interaction(&vec![b'~'; len]));
        }
    }

    #[test]
    fn jwt_is_optional_only_when_not_required() {
        let fields: Vec<_> = valid()
            .into_iter()
            .filter(|(n, _)| *n != "Authorization")
            .collect();
        assert!(check(&head(&fields), false).is_ok());
        let mut bad = fields.clone();
        bad.push(("Authorization", "Bearer x"));
        assert_eq!(
            check(&head(&bad), false),
            Err(Refusal::InvalidHeader("Authorization"))
        );
    }
}
