//! Row 7: the `Ssp-*` headers and the JWT, each present exactly once and well-formed.

use super::jwt;
use super::refusal::Refusal;
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
        if let Some(i) = CHECKED
            .iter()
            .position(|c| c.as_bytes().eq_ignore_ascii_case(name))
        {
            seen[i] = match seen[i] {
                Seen::Never => Seen::Once(value),
                _ => Seen::More,
            };
        }
    }
    let valid = |i: usize, rule: fn(&str) -> bool| match seen[i] {
        Seen::Once(v) => std::str::from_utf8(v)
            .ok()
            .map(str::trim)
            .filter(|v| rule(v))
            .ok_or(Refusal::InvalidHeader(CHECKED[i])),
        _ => Err(Refusal::InvalidHeader(CHECKED[i])),
    };
    let ssp = SspHeaders {
        trace_id: valid(0, is_uuid)?,
        from: valid(1, is_asid)?,
        to: valid(2, is_asid)?,
        interaction: valid(3, |v| !v.is_empty() && !v.contains(' '))?,
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

/// 8-4-4-4-12 hexadecimal digits.
pub fn is_uuid(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                *c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// ASIDs are numeric strings; 12 digits in every known example, 1–20 accepted.
pub fn is_asid(v: &str) -> bool {
    (1..=20).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit())
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
