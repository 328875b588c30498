//! Row 7: the `Ssp-*` headers and the JWT, each present exactly once and well-formed.

use super::jwt::{self, Claims};
use super::refusal::Refusal;
use crate::http::request::RequestHead;

/// The routing headers of one request, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SspHeaders {
    pub trace_id: String,
    pub from: String,
    pub to: String,
    pub interaction: String,
    pub claims: Option<Claims>,
}

pub fn check(head: &RequestHead, require_jwt: bool) -> Result<SspHeaders, Refusal> {
    let trace_id = single(head, "Ssp-TraceID", is_uuid)?;
    let from = single(head, "Ssp-From", is_asid)?;
    let to = single(head, "Ssp-To", is_asid)?;
    let interaction = single(head, "Ssp-InteractionID", |v| !v.is_empty() && !v.contains(' '))?;
    let invalid_jwt = Refusal::InvalidHeader("Authorization");
    let claims = match head.field_count("authorization") {
        0 if require_jwt => return Err(invalid_jwt),
        0 => None,
        1 => Some(jwt::parse_bearer(head.field("authorization").unwrap_or_default()).ok_or(invalid_jwt)?),
        _ => return Err(invalid_jwt),
    };
    Ok(SspHeaders {
        trace_id,
        from,
        to,
        interaction,
        claims,
    })
}

/// The value of a header that must appear once and pass `valid`.
fn single(head: &RequestHead, name: &'static str, valid: fn(&str) -> bool) -> Result<String, Refusal> {
    let mut values = head.field_values(name);
    match (values.next(), values.next()) {
        (Some(v), None) => std::str::from_utf8(v)
            .ok()
            .map(str::trim)
            .filter(|v| valid(v))
            .map(str::to_string)
            .ok_or(Refusal::InvalidHeader(name)),
        _ => Err(Refusal::InvalidHeader(name)),
    }
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
    fn valid_headers_pass_and_carry_the_claims() {
        let h = check(&head(&valid()), true).unwrap();
        assert_eq!(h.from, "200000000001");
        assert_eq!(h.claims.unwrap().iss.as_deref(), Some("x"));
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
        assert_eq!(check(&head(&fields), false).unwrap().claims, None);
        let mut bad = fields.clone();
        bad.push(("Authorization", "Bearer x"));
        assert_eq!(
            check(&head(&bad), false),
            Err(Refusal::InvalidHeader("Authorization"))
        );
    }
}
