//! The consumer's JWT: logged for audit, never trusted (PECS and GP Connect JWTs are often
//! `alg: none`). Its shape is checked so that a malformed one is refused (SPEC section 1).

use super::json;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

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
/// The signature may be empty (`alg: none`); header and payload must be base64url JSON objects,
/// and the header must name an `alg`.
pub fn parse_bearer(value: &[u8]) -> Option<Claims> {
    read_bearer::<Claims>(value)
}

/// Whether `value` is a well-formed bearer JWT, read without keeping (or allocating) anything:
/// the admission decision needs only this; the claims are read once, for the audit. Never
/// looser than `parse_bearer` (see `json`).
pub fn is_valid_bearer(value: &[u8]) -> bool {
    let Some((header, payload)) = segments(value) else {
        return false;
    };
    with_decoded(header, |json| json::object_with_string(json, "alg")) == Some(true)
        && with_decoded(payload, |json| json::object_with_string(json, "")).is_some()
}

fn read_bearer<T: Fields>(value: &[u8]) -> Option<T> {
    let (header, payload) = segments(value)?;
    let header: Object<HeaderFields> = with_decoded(header, |json| serde_json::from_slice(json).ok())?;
    if !header.0.has_alg {
        return None;
    }
    let payload: Object<T> = with_decoded(payload, |json| serde_json::from_slice(json).ok())?;
    Some(payload.0)
}

/// The header and payload of `Bearer <header>.<payload>.<signature>`, still encoded.
fn segments(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let value = value.trim_ascii();
    let space = value.iter().position(|&b| b == b' ')?;
    if !value[..space].eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let mut parts = value[space + 1..].trim_ascii().split(|&b| b == b'.');
    let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !signature.iter().all(|&b| is_base64url(b)) {
        return None;
    }
    Some((header, payload))
}

/// Runs `read` on the base64url decoding of `s`, decoded on the stack when it is small (as
/// JWT headers and payloads are).
fn with_decoded<R>(s: &[u8], read: impl FnOnce(&[u8]) -> Option<R>) -> Option<R> {
    let mut stack = [0u8; 1024];
    let room = decoded_room(s.len());
    if room <= stack.len() {
        let n = base64url_decode_into(s, &mut stack)?;
        read(&stack[..n])
    } else {
        let mut heap = vec![0u8; room];
        let n = base64url_decode_into(s, &mut heap)?;
        read(&heap[..n])
    }
}

/// A JSON object read key by key into `T`, without building a map of everything in it.
struct Object<T>(T);

trait Fields: Default {
    /// Reads the value of `key` if it is one of ours; returns false to have it skipped.
    fn read<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error>;
}

impl<'de, T: Fields> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Fields> Visitor<'de> for ObjectVisitor<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object<T>, A::Error> {
                let mut fields = T::default();
                while let Some(Key(key)) = map.next_key::<Key>()? {
                    if !fields.read(key, &mut map)? {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Object(fields))
            }
        }
        d.deserialize_map(ObjectVisitor(std::marker::PhantomData))
    }
}

/// An object key, borrowed from the input when it has no escapes (serde's `Cow<str>` would
/// always allocate). Keys the claims do not use are not kept at all.
struct Key(&'static str);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                const KNOWN: [&str; 6] = [
                    "alg",
                    "iss",
                    "sub",
                    "reason_for_request",
                    "requesting_organization",
                    "requesting_practitioner",
                ];
                Ok(Key(KNOWN.iter().find(|k| **k == v).copied().unwrap_or("")))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[derive(Default)]
struct HeaderFields {
    has_alg: bool,
}

impl Fields for HeaderFields {
    fn read<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        if key != "alg" {
            return Ok(false);
        }
        self.has_alg = matches!(map.next_value::<Scalar>()?, Scalar::Text(_));
        Ok(true)
    }
}

impl Fields for Claims {
    fn read<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        let slot = match key {
            "iss" => &mut self.iss,
            "sub" => &mut self.sub,
            "reason_for_request" => &mut self.reason_for_request,
            "requesting_organization" => {
                let org: serde_json::Value = map.next_value()?;
                self.requesting_organization =
                    text(&org).or_else(|| org.get("identifier")?.get(0)?.get("value").and_then(text));
                return Ok(true);
            }
            "requesting_practitioner" => {
                let who: serde_json::Value = map.next_value()?;
                self.requesting_practitioner = text(&who).or_else(|| who.get("id").and_then(text));
                return Ok(true);
            }
            _ => return Ok(false),
        };
        *slot = map.next_value::<Scalar>()?.into_text();
        Ok(true)
    }
}

/// A claim value: text kept, numbers as text, anything else skipped.
enum Scalar {
    Text(String),
    Other,
}

impl Scalar {
    fn into_text(self) -> Option<String> {
        match self {
            Scalar::Text(t) => Some(t),
            Scalar::Other => None,
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl<'de> Visitor<'de> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        d.deserialize_any(ScalarVisitor)
    }
}

/// A claim as text: strings as they are, numbers written out.
fn text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn is_base64url(b: u8) -> bool {
    BASE64URL[usize::from(b)] != INVALID
}

/// Bytes enough to decode `len` base64url characters into.
fn decoded_room(len: usize) -> usize {
    len / 4 * 3 + 3
}

/// Unpadded base64url (RFC 7515 section 2) into `out`, which has `decoded_room` bytes;
/// trailing `=` padding is tolerated. Returns the decoded length.
fn base64url_decode_into(s: &[u8], out: &mut [u8]) -> Option<usize> {
    let end = s.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    let s = &s[..end];
    if s.is_empty() || s.len() % 4 == 1 || out.len() < decoded_room(s.len()) {
        return None;
    }
    let mut n_out = 0;
    let quads = s.chunks_exact(4);
    let tail = quads.remainder();
    for q in quads {
        let v = [
            BASE64URL[usize::from(q[0])],
            BASE64URL[usize::from(q[1])],
            BASE64URL[usize::from(q[2])],
            BASE64URL[usize::from(q[3])],
        ];
        // Valid sextets are below 64; INVALID has the top bits set.
        if (v[0] | v[1] | v[2] | v[3]) & 0xc0 != 0 {
            return None;
        }
        let n = u32::from(v[0]) << 18 | u32::from(v[1]) << 12 | u32::from(v[2]) << 6 | u32::from(v[3]);
        out[n_out..n_out + 3].copy_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
        n_out += 3;
    }
    if !tail.is_empty() {
        // 2 or 3 characters left: 1 or 2 more bytes, at the top of the 24 bits.
        let mut n = 0u32;
        for &b in tail {
            let v = BASE64URL[usize::from(b)];
            if v == INVALID {
                return None;
            }
            n = n << 6 | u32::from(v);
        }
        n <<= 6 * (4 - tail.len() as u32);
        let extra = tail.len() - 1;
        out[n_out..n_out + extra].copy_from_slice(&[(n >> 16) as u8, (n >> 8) as u8][..extra]);
        n_out += extra;
    }
    Some(n_out)
}

const INVALID: u8 = 0xff;

/// Sextet value of each byte in the base64url alphabet; `INVALID` for the rest.
const BASE64URL: [u8; 256] = {
    let mut table = [INVALID; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut i = 0;
    while i < alphabet.len() {
        table[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    table
};

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
        let plain = parse_bearer(
            token(
                r#"{"alg":"none"}"#,
                r#"{"requesting_practitioner":"G1","sub":7}"#,
                "",
            )
            .as_bytes(),
        );
        let plain = plain.unwrap();
        assert_eq!(
            (plain.requesting_practitioner.as_deref(), plain.sub.as_deref()),
            (Some("G1"), Some("7"))
        );
        assert_eq!(claims.iss.as_deref(), Some("https://consumer.example"));
        assert_eq!(claims.sub.as_deref(), Some("1"));
        assert_eq!(claims.requesting_organization.as_deref(), Some("FA123"));
        assert_eq!(claims.requesting_practitioner.as_deref(), Some("10019"));
        assert_eq!(claims.reason_for_request.as_deref(), Some("directcare"));
    }

    fn base64url_decode(s: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![0; decoded_room(s.len())];
        let n = base64url_decode_into(s, &mut out)?;
        out.truncate(n);
        Some(out)
    }

    #[test]
    fn base64url_decodes_every_tail_length() {
        assert_eq!(base64url_decode(b"YWJj").unwrap(), b"abc");
        assert_eq!(base64url_decode(b"YWJjZA").unwrap(), b"abcd");
        assert_eq!(base64url_decode(b"YWJjZGU").unwrap(), b"abcde");
        assert_eq!(base64url_decode(b"YWJjZA==").unwrap(), b"abcd");
        assert_eq!(base64url_decode(b"_-8").unwrap(), [0xff, 0xef]);
        assert!(base64url_decode(b"YWJjZ").is_none());
        assert!(base64url_decode(b"YW+j").is_none());
        assert!(base64url_decode(b"").is_none());
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
            assert!(!is_valid_bearer(case.as_bytes()), "{case}");
        }
        let good = token(good_header, "{}", "c2ln");
        assert!(parse_bearer(good.as_bytes()).is_some());
        assert!(is_valid_bearer(good.as_bytes()));
        // Larger than the stack buffer: decoded on the heap, same answer.
        let big = token(good_header, &format!(r#"{{"sub":"{}"}}"#, "x".repeat(3000)), "");
        assert_eq!(parse_bearer(big.as_bytes()).unwrap().sub.unwrap().len(), 3000);
        assert!(is_valid_bearer(big.as_bytes()));
    }
}
