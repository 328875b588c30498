//! Row 7: the `Ssp-*` headers and the JWT, each present exactly once and well-formed.

use super::jwt;
use super::refusal::Refusal;
use crate::http::head::trim_ows;
use crate::http::request::RequestHead;

/// The routing headers of one request, validated, borrowed from its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SspHeaders<'a> {
    pub trace_id: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub interaction: &'a str,
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

/// How often a checked header appeared, and its value when once.
#[derive(Clone, Copy)]
enum Seen<'a> {
    Never,
    Once(&'a [u8]),
    More,
}

pub fn check(head: &RequestHead, require_jwt: bool) -> Result<SspHeaders<'_>, Refusal> {
    // One pass over the fields finds every checked header, and any given twice.
    let mut seen = [Seen::Never; CHECKED.len()];
    for (name, value) in head.fields() {
        if let Some(i) = checked_index(name) {
            seen[i] = match seen[i] {
                Seen::Never => Seen::Once(value),
                _ => Seen::More,
            };
        }
    }
    // Only SP and HTAB are optional whitespace around a field value (RFC 9110 section 5.6.3);
    // the rules run on bytes, and the text they pass is turned into `&str` once.
    let valid = |i: usize, rule: fn(&[u8]) -> bool| match seen[i] {
        Seen::Once(v) => Some(trim_ows(v))
            .filter(|v| rule(v))
            .and_then(|v| std::str::from_utf8(v).ok())
            .ok_or(Refusal::InvalidHeader(CHECKED[i])),
        _ => Err(Refusal::InvalidHeader(CHECKED[i])),
    };
    let ssp = SspHeaders {
        trace_id: valid(0, is_uuid)?,
        from: valid(1, is_asid)?,
        to: valid(2, is_asid)?,
        interaction: valid(3, |v| !v.is_empty() && !v.contains(&b' '))?,
    };
    let jwt_ok = match seen[AUTHORIZATION] {
        Seen::Never => !require_jwt,
        Seen::Once(v) => jwt::is_valid_bearer(v),
        Seen::More => false,
    };
    if !jwt_ok {
        return Err(Refusal::InvalidHeader(CHECKED[AUTHORIZATION]));
    }
    Ok(ssp)
}

/// Which of `CHECKED` a field name is. The checked names differ in length (a test holds
/// this), so the length picks the one candidate and the other fields (`Host`, `Accept`, ...)
/// cost no byte comparison at all.
fn checked_index(name: &[u8]) -> Option<usize> {
    let i = CHECKED.iter().position(|c| c.len() == name.len())?;
    // Senders mostly spell the names as written here: an exact comparison answers at once.
    let want = CHECKED[i].as_bytes();
    (name == want || name.eq_ignore_ascii_case(want)).then_some(i)
}

/// 8-4-4-4-12 hexadecimal digits.
pub fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && [0..8, 9..13, 14..18, 19..23, 24..36]
            .into_iter()
            .all(|group| b[group].iter().all(u8::is_ascii_hexdigit))
}

/// ASIDs are numeric strings; 12 digits in every known example, 1–20 accepted.
pub fn is_asid(v: &[u8]) -> bool {
    (1..=20).contains(&v.len()) && v.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request;

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
        assert_eq!(h.interaction, "urn:nhs:names:services:x");
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
                assert!(!h.from.ends_with('\t') && !h.interaction.ends_with('\t'));
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
