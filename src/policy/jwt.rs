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
    with_decoded(value, |header, payload| {
        (json::object_with_string(header, "alg")? && json::object_with_string(payload, "").is_some())
            .then_some(())
    })
    .is_some()
}

fn read_bearer<T: Fields>(value: &[u8]) -> Option<T> {
    with_decoded(value, |header, payload| {
        let header: Object<HeaderFields> = serde_json::from_slice(header).ok()?;
        if !header.0.has_alg {
            return None;
        }
        let payload: Object<T> = serde_json::from_slice(payload).ok()?;
        Some(payload.0)
    })
}

/// `<header>.<payload>.<signature>` out of `Bearer <token>`, still encoded.
fn token(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let space = value.iter().position(|&b| b == b' ')?;
    if !value[..space].eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    Some(value[space + 1..].trim_ascii())
}

/// Runs `read` on the decoded header and payload of a bearer token. Both are decoded on the
/// stack when small (as JWTs are): decoding shrinks base64, so the token's length is room
/// enough, and a buffer near that size keeps the zeroing cheap.
fn with_decoded<R>(value: &[u8], read: impl FnOnce(&[u8], &[u8]) -> Option<R>) -> Option<R> {
    let token = token(value)?;
    let read = |out: &mut [u8]| {
        let (header, payload) = decode_parts(token, out)?;
        read(header, payload)
    };
    if token.len() <= 512 {
        read(&mut [0u8; 512])
    } else if token.len() <= 4096 {
        read(&mut [0u8; 4096])
    } else {
        read(&mut vec![0u8; token.len()])
    }
}

/// Decodes header and payload into `out` (at least `token.len()` bytes), each in one pass
/// that also finds where it ends, and checks the signature's alphabet (it may be empty, as
/// with `alg: none`).
fn decode_parts<'o>(token: &[u8], out: &'o mut [u8]) -> Option<(&'o [u8], &'o [u8])> {
    let (header_used, header_len) = decode_segment(token, out)?;
    let rest = after_dot(token, header_used)?;
    let (payload_used, payload_len) = decode_segment(rest, &mut out[header_len..])?;
    let signature = after_dot(rest, payload_used)?;
    if !signature.iter().all(|&b| is_base64url(b)) {
        return None;
    }
    let (header, payload) = out.split_at(header_len);
    Some((header, &payload[..payload_len]))
}

/// What follows the `.` at `at`, if there is one there.
fn after_dot(s: &[u8], at: usize) -> Option<&[u8]> {
    match s.get(at..)? {
        [b'.', rest @ ..] => Some(rest),
        _ => None,
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
    PLACED[0][usize::from(b)] & INVALID == 0
}

/// Decodes the run of base64url characters (RFC 7515 section 2, unpadded) at the start of
/// `s` into `out`; `=` padding after it is tolerated. Returns how many bytes of `s` it took,
/// padding included, and how many it wrote. The run is empty or has a length of 1 mod 4: not
/// base64. `out` must have room for the decoding of all of `s`, which is never longer.
fn decode_segment(s: &[u8], out: &mut [u8]) -> Option<(usize, usize)> {
    let (mut used, mut written) = (0, 0);
    // 8 characters to 6 bytes at a time, then 4 to 3, until one is outside the alphabet.
    for (chars, bytes) in s.chunks_exact(8).zip(out.chunks_exact_mut(6)) {
        let (a, b) = (quad(&chars[..4]), quad(&chars[4..]));
        if (a | b) & INVALID != 0 {
            break;
        }
        bytes[..3].copy_from_slice(&a.to_be_bytes()[1..]);
        bytes[3..].copy_from_slice(&b.to_be_bytes()[1..]);
        used += 8;
        written += 6;
    }
    let four = s.get(used..used + 4).map(quad);
    if let (Some(n), Some(bytes)) = (four, out.get_mut(written..written + 3))
        && n & INVALID == 0
    {
        bytes.copy_from_slice(&n.to_be_bytes()[1..]);
        used += 4;
        written += 3;
    }
    // The run's last 2 or 3 characters make 1 or 2 more bytes, at the top of 24 bits.
    let rest = &s[used..];
    let tail = rest.iter().position(|&b| !is_base64url(b)).unwrap_or(rest.len());
    match tail {
        0 if used > 0 => {}
        2 | 3 => {
            // `A` is the sextet 0: padding the quad with it leaves the bits as they are.
            let mut chars = [b'A'; 4];
            chars[..tail].copy_from_slice(&rest[..tail]);
            let n = quad(&chars);
            let extra = tail - 1;
            out.get_mut(written..written + extra)?
                .copy_from_slice(&n.to_be_bytes()[1..1 + extra]);
            written += extra;
        }
        // Empty, 1 mod 4, or (had `out` been too short) 4 or more: refused, never a panic.
        _ => return None,
    }
    used += tail;
    let padding = s[used..].iter().take_while(|&&b| b == b'=').count();
    Some((used + padding, written))
}

/// The 24 bits of 4 characters (fewer: the missing ones count as sextet 0), with `INVALID`
/// set if one is outside the alphabet. One table lookup and an OR per character.
fn quad(chars: &[u8]) -> u32 {
    chars
        .iter()
        .zip(&PLACED)
        .fold(0, |n, (&c, placed)| n | placed[usize::from(c)])
}

/// Set, in the tables below, for a byte outside the alphabet; above the 24 bits of a quad.
const INVALID: u32 = 0xff00_0000;

/// `PLACED[k][c]`: the sextet of `c` in the base64url alphabet, already shifted to where it
/// goes as the `k`-th character of four; `INVALID` for a byte outside the alphabet.
const PLACED: [[u32; 256]; 4] = {
    let mut tables = [[INVALID; 256]; 4];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut k = 0;
    while k < 4 {
        let mut i = 0;
        while i < alphabet.len() {
            tables[k][alphabet[i] as usize] = (i as u32) << (6 * (3 - k));
            i += 1;
        }
        k += 1;
    }
    tables
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
        let mut out = vec![0; s.len()];
        let (used, n) = decode_segment(s, &mut out)?;
        out.truncate(n);
        (used == s.len()).then_some(out)
    }

    #[test]
    fn base64url_decodes_every_tail_length() {
        assert_eq!(base64url_decode(b"YWJj").unwrap(), b"abc");
        assert_eq!(base64url_decode(b"YWJjZA").unwrap(), b"abcd");
        assert_eq!(base64url_decode(b"YWJjZGU").unwrap(), b"abcde");
        assert_eq!(base64url_decode(b"YWJjZA==").unwrap(), b"abcd");
        assert_eq!(base64url_decode(b"YWJjZGU=").unwrap(), b"abcde");
        assert_eq!(base64url_decode(b"_-8").unwrap(), [0xff, 0xef]);
        // Across the 8-character groups: every length from 8 to 19 that base64 allows.
        let text = b"abcdefghijklmn";
        for n in 6..=14 {
            let encoded = b64(std::str::from_utf8(&text[..n]).unwrap());
            assert_eq!(
                base64url_decode(encoded.as_bytes()).unwrap(),
                &text[..n],
                "{encoded}"
            );
        }
        // Padding is tolerated in any amount, as before; only after the run.
        assert_eq!(base64url_decode(b"YWJjZA=").unwrap(), b"abcd");
        assert_eq!(base64url_decode(b"YQ===").unwrap(), b"a");
        let refused: [&[u8]; 9] = [
            b"YWJjZ",   // length 1 mod 4
            b"YWJjZ==", // still 1 mod 4 once the padding is set aside
            b"Y",
            b"YW+j", // standard base64, not base64url
            b"",
            b"==",
            b"YW=j",
            b"YW\xc3\xa9",
            b"YWJjZGVm+2hp", // outside the alphabet in an 8-character group
        ];
        for s in refused {
            assert!(base64url_decode(s).is_none(), "{s:?}");
        }
    }

    #[test]
    fn a_segment_ends_at_its_dot() {
        let mut out = [0u8; 16];
        assert_eq!(decode_segment(b"YWJj.x", &mut out), Some((4, 3)));
        assert_eq!(decode_segment(b"YWI=.x", &mut out), Some((4, 2)));
        assert_eq!(decode_segment(b"YWJjZ.x", &mut out), None);
        assert_eq!(decode_segment(b".x", &mut out), None);
        // A run longer than `out` can hold is refused, not a panic.
        assert_eq!(decode_segment(b"YWJjYWJjYWJj", &mut out[..5]), None);
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
            format!("Bearer {}.{}QQ.", b64(good_header), b64("{}")),
            format!("Bearer {}=.{}.", b64(good_header), b64("{}")) + "=",
            format!("Bearer {}.{}.", b64(good_header), b64("{}")).replace('.', "=.="),
            format!("Bearer {}..{}.", b64(good_header), b64("{}")),
            format!("Bearer .{}.", b64("{}")),
            format!("Bearer {}.{}", b64(good_header), b64("{}")),
        ];
        for case in cases {
            assert!(parse_bearer(case.as_bytes()).is_none(), "{case}");
            assert!(!is_valid_bearer(case.as_bytes()), "{case}");
        }
        let good = token(good_header, "{}", "c2ln");
        assert!(parse_bearer(good.as_bytes()).is_some());
        assert!(is_valid_bearer(good.as_bytes()));
        // Padded segments, and the token's whitespace and scheme's case, are as before.
        let padded = format!("  bEARER \t{}==.{}=.c2ln ", b64(good_header), b64("{ }"));
        assert!(parse_bearer(padded.as_bytes()).is_some());
        assert!(is_valid_bearer(padded.as_bytes()));
        // Larger than the small stack buffer, and than the large one (decoded on the heap):
        // same answer.
        for len in [3000, 6000] {
            let big = token(good_header, &format!(r#"{{"sub":"{}"}}"#, "x".repeat(len)), "");
            assert_eq!(parse_bearer(big.as_bytes()).unwrap().sub.unwrap().len(), len);
            assert!(is_valid_bearer(big.as_bytes()));
        }
    }
}
