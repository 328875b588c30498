//! The consumer's JWT: logged for audit, never trusted (PECS and GP Connect JWTs are often
//! `alg: none`). Its shape is checked so that a malformed one is refused (SPEC section 1).

use serde_json::{Map, Value};

/// The claims the audit record keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    pub iss: Option<String>,
    pub sub: Option<String>,
    /// The ODS code of `requesting_organization.identifier[0].value`, or the claim if a string.
    pub requesting_organization: Option<String>,
    /// `requesting_practitioner.id`, or the claim if a string.
    pub requesting_practitioner: Option<String>,
    pub reason_for_request: Option<String>,
}

/// Parses an `Authorization` value of the form `Bearer <header>.<payload>.<signature>`.
/// The signature may be empty (`alg: none`); header and payload must be base64url JSON objects.
pub fn parse_bearer(value: &[u8]) -> Option<Claims> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut parts = token.trim_start().split('.');
    let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !signature.bytes().all(is_base64url) {
        return None;
    }
    let header = json_object(header)?;
    if !header.get("alg").is_some_and(Value::is_string) {
        return None;
    }
    let claims = json_object(payload)?;
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let claim = |name: &str| claims.get(name).and_then(text);
    let organization = claims
        .get("requesting_organization")
        .and_then(|v| text(v).or_else(|| v.get("identifier")?.get(0)?.get("value").and_then(text)));
    let practitioner = claims
        .get("requesting_practitioner")
        .and_then(|v| text(v).or_else(|| v.get("id").and_then(text)));
    Some(Claims {
        iss: claim("iss"),
        sub: claim("sub"),
        requesting_organization: organization,
        requesting_practitioner: practitioner,
        reason_for_request: claim("reason_for_request"),
    })
}

fn json_object(segment: &str) -> Option<Map<String, Value>> {
    match serde_json::from_slice(&base64url_decode(segment)?).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Unpadded base64url (RFC 7515 section 2); trailing `=` padding is tolerated.
fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    if s.is_empty() || s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in s.as_bytes().chunks(3) {
            let n = chunk.iter().fold(0u32, |a, &b| (a << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    fn token(header: &str, payload: &str, sig: &str) -> String {
        format!("Bearer {}.{}.{sig}", b64(header), b64(payload))
    }

    #[test]
    fn unsigned_gp_connect_style_jwt_yields_its_claims() {
        let payload = r#"{"iss":"https://consumer.example","sub":"1","reason_for_request":"directcare",
            "requesting_organization":{"resourceType":"Organization","identifier":[{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"FA123"}]},
            "requesting_practitioner":{"resourceType":"Practitioner","id":"10019"}}"#;
        let claims = parse_bearer(token(r#"{"alg":"none","typ":"JWT"}"#, payload, "").as_bytes()).unwrap();
        assert_eq!(claims.iss.as_deref(), Some("https://consumer.example"));
        assert_eq!(claims.sub.as_deref(), Some("1"));
        assert_eq!(claims.requesting_organization.as_deref(), Some("FA123"));
        assert_eq!(claims.requesting_practitioner.as_deref(), Some("10019"));
        assert_eq!(claims.reason_for_request.as_deref(), Some("directcare"));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good_header = r#"{"alg":"none"}"#;
        let cases = [
            "Basic abc".to_string(),
            "Bearer".to_string(),
            "Bearer abc".to_string(),
            "Bearer a.b".to_string(),
            token(good_header, "{}", "") + ".extra",
            token(good_header, "[1,2]", ""),
            token(good_header, "not json", ""),
            token(r#"{"typ":"JWT"}"#, "{}", ""),
            token(good_header, "{}", "sig!"),
            format!("Bearer {}.%%%.", b64(good_header)),
        ];
        for case in cases {
            assert!(parse_bearer(case.as_bytes()).is_none(), "{case}");
        }
        assert!(parse_bearer(token(good_header, "{}", "c2ln").as_bytes()).is_some());
    }
}
