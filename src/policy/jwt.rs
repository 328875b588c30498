//! The consumer's JWT (row 7). PECS and GP Connect JWTs are often `alg: none`: it is never
//! trusted as a credential. Under `[jwt] mode = "shape"` (the default) it must be well-formed
//! and is logged; under `"enforce"` its claims must also keep the rules the NHS audit and
//! provenance pages publish (`Policy::judge`). One reader (`policy::json`) serves the
//! decision and the audit: a token is read the same way by both.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::headers::SspHeaders;
use super::json::{self, Value};
use super::refusal::{JwtRule, Refusal};
use crate::config::{self, JwtMode};

/// The claims the audit record keeps, as text (numbers as written).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub aud: Option<String>,
    pub exp: Option<String>,
    pub iat: Option<String>,
    /// The ODS code of `requesting_organization.identifier[0].value`, or the claim if a string.
    pub requesting_organization: Option<String>,
    /// `requesting_practitioner.id`, or the claim if a string.
    pub requesting_practitioner: Option<String>,
    pub reason_for_request: Option<String>,
    pub requested_scope: Option<String>,
    /// `requesting_device.identifier[0].value`, or the claim if a string (PECS: the ASID).
    pub requesting_device: Option<String>,
    /// `requested_record.identifier[0].value` (the NHS number or ODS code), or the claim if a
    /// string.
    pub requested_record: Option<String>,
}

/// `[jwt]` as row 7 applies it. The default is shape only.
#[derive(Debug, Default)]
pub struct Policy {
    pub mode: JwtMode,
    /// Seconds of clock skew allowed on `exp` and `iat`.
    pub leeway: i64,
    pub bind_sender: bool,
    /// The allowed `requested_scope` values of each interaction.
    scopes: BTreeMap<String, Vec<String>>,
}

/// The longest a token may live, `exp - iat`: "(now + 5 minutes)" in both published pages.
pub const MAX_LIFETIME: i64 = 300;

impl Policy {
    pub fn new(c: &config::Jwt) -> Policy {
        Policy {
            mode: c.mode,
            leeway: i64::try_from(c.leeway.as_secs()).unwrap_or(i64::MAX),
            bind_sender: c.bind_sender,
            scopes: c.scopes.clone(),
        }
    }

    /// The published rules, in the order they are reported, for the claims of a well-formed
    /// token sent by `ssp` at `now` (seconds since the epoch).
    fn judge(&self, claims: &Payload<'_>, ssp: &SspHeaders<'_>, now: i64) -> Result<(), JwtRule> {
        let exp = claims.exp.and_then(integer).ok_or(JwtRule::Exp)?;
        let iat = claims.iat.and_then(integer).ok_or(JwtRule::Iat)?;
        if exp < iat {
            return Err(JwtRule::Exp);
        }
        if now > exp.saturating_add(self.leeway) {
            return Err(JwtRule::Expired);
        }
        if iat > now.saturating_add(self.leeway) {
            return Err(JwtRule::IssuedInTheFuture);
        }
        if exp.abs_diff(iat) > MAX_LIFETIME as u64 {
            return Err(JwtRule::LifetimeTooLong);
        }
        if claims.reason_for_request.and_then(text).as_deref() != Some("directcare") {
            return Err(JwtRule::ReasonNotDirectCare);
        }
        // Row 7 checked the interaction is UTF-8.
        let interaction = std::str::from_utf8(ssp.interaction).unwrap_or_default();
        let allowed = self.scopes.get(interaction).ok_or(JwtRule::NoScopes)?;
        let scope = claims.requested_scope.and_then(text);
        if !scope.is_some_and(|s| allowed.iter().any(|a| **a == *s)) {
            return Err(JwtRule::ScopeNotAllowed);
        }
        if self.bind_sender {
            let sender = |claim: Option<Cow<'_, str>>| claim.is_some_and(|c| ssp.from == &*c);
            let from = || ssp.from.to_string();
            if !sender(claims.iss.and_then(text)) {
                return Err(JwtRule::IssNotSender { from: from() });
            }
            if !sender(claims.requesting_device.and_then(identifier)) {
                return Err(JwtRule::DeviceNotSender { from: from() });
            }
        }
        Ok(())
    }
}

/// Row 7 for a present `Authorization` value: well-formed, and under enforce the rules.
pub fn check(policy: &Policy, value: &[u8], ssp: &SspHeaders<'_>, now: i64) -> Result<(), Refusal> {
    let judged = match policy.mode {
        JwtMode::Shape => is_valid_bearer(value).then_some(Ok(())),
        JwtMode::Enforce => read_bearer(value, |claims| policy.judge(claims, ssp, now)),
    };
    match judged {
        Some(verdict) => verdict.map_err(Refusal::Jwt),
        None => Err(Refusal::InvalidHeader("Authorization")),
    }
}

/// Parses an `Authorization` value of the form `Bearer <header>.<payload>.<signature>` for the
/// audit. The signature may be empty (`alg: none`); header and payload must be base64url JSON
/// objects, and the header must name an `alg`.
pub fn parse_bearer(value: &[u8]) -> Option<Claims> {
    read_bearer(value, |claims| claims.to_claims())
}

/// Whether `value` is a well-formed bearer JWT, read without keeping (or allocating) anything:
/// the shape-only decision needs no more.
pub fn is_valid_bearer(value: &[u8]) -> bool {
    with_decoded(value, |header, payload| {
        (has_alg(header) && json::members(payload, |_, _| {}).is_some()).then_some(())
    })
    .is_some()
}

/// Runs `read` on the claims of a well-formed bearer JWT.
fn read_bearer<R>(value: &[u8], read: impl FnOnce(&Payload<'_>) -> R) -> Option<R> {
    with_decoded(value, |header, payload| {
        has_alg(header).then_some(())?;
        Some(read(&Payload::read(payload)?))
    })
}

fn has_alg(header: &[u8]) -> bool {
    json::object_with_string(header, "alg") == Some(true)
}

/// The claims of interest, as they stand in the decoded payload; the last of a repeated name.
#[derive(Default)]
struct Payload<'a> {
    iss: Option<Value<'a>>,
    sub: Option<Value<'a>>,
    aud: Option<Value<'a>>,
    exp: Option<Value<'a>>,
    iat: Option<Value<'a>>,
    reason_for_request: Option<Value<'a>>,
    requested_scope: Option<Value<'a>>,
    requesting_device: Option<Value<'a>>,
    requesting_organization: Option<Value<'a>>,
    requesting_practitioner: Option<Value<'a>>,
    requested_record: Option<Value<'a>>,
}

impl<'a> Payload<'a> {
    fn read(json: &'a [u8]) -> Option<Payload<'a>> {
        let mut p = Payload::default();
        json::members(json, |name, value| {
            let slot = match json::unescape(name).as_deref() {
                Some("iss") => &mut p.iss,
                Some("sub") => &mut p.sub,
                Some("aud") => &mut p.aud,
                Some("exp") => &mut p.exp,
                Some("iat") => &mut p.iat,
                Some("reason_for_request") => &mut p.reason_for_request,
                Some("requested_scope") => &mut p.requested_scope,
                Some("requesting_device") => &mut p.requesting_device,
                Some("requesting_organization") => &mut p.requesting_organization,
                Some("requesting_practitioner") => &mut p.requesting_practitioner,
                Some("requested_record") => &mut p.requested_record,
                _ => return,
            };
            *slot = Some(value);
        })?;
        Some(p)
    }

    fn to_claims(&self) -> Claims {
        let own = |v: Option<Value<'_>>, read: fn(Value<'_>) -> Option<Cow<'_, str>>| {
            v.and_then(read).map(Cow::into_owned)
        };
        Claims {
            iss: own(self.iss, text),
            sub: own(self.sub, text),
            aud: own(self.aud, text),
            exp: own(self.exp, text),
            iat: own(self.iat, text),
            requesting_organization: own(self.requesting_organization, identifier),
            requesting_practitioner: own(self.requesting_practitioner, practitioner),
            reason_for_request: own(self.reason_for_request, text),
            requested_scope: own(self.requested_scope, text),
            requesting_device: own(self.requesting_device, identifier),
            requested_record: own(self.requested_record, identifier),
        }
    }
}

/// A claim as text: strings decoded, numbers as written, anything else `None`.
fn text(v: Value<'_>) -> Option<Cow<'_, str>> {
    match v {
        Value::String(raw) => json::unescape(raw),
        Value::Number(raw) => std::str::from_utf8(raw).ok().map(Cow::Borrowed),
        _ => None,
    }
}

/// `requesting_practitioner`: the resource's `id`, or the claim if it is text.
fn practitioner(v: Value<'_>) -> Option<Cow<'_, str>> {
    text(v).or_else(|| text(json::member(v, "id")?))
}

/// A FHIR resource's business identifier, `identifier[0].value`, or the claim if it is text.
fn identifier(v: Value<'_>) -> Option<Cow<'_, str>> {
    let first = || json::first(json::member(v, "identifier")?);
    text(v).or_else(|| text(json::member(first()?, "value")?))
}

/// A NumericDate (RFC 7519 section 2) in whole seconds, as both pages publish it.
fn integer(v: Value<'_>) -> Option<i64> {
    match v {
        Value::Number(raw) => std::str::from_utf8(raw).ok()?.parse().ok(),
        _ => None,
    }
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

    /// Issue 17 item 3: the audit keeps what both published payloads carry, whether the
    /// resources are FHIR objects (GP Connect) or plain ASIDs and codes (PECS).
    #[test]
    fn the_audit_keeps_the_published_claims_in_either_form() {
        let gp_connect = r#"{"aud":"https://provider.thirdparty.nhs.uk/GP0001/STU3/1","exp":1469436987,"iat":1469436687,
            "requested_scope":"patient/*.read",
            "requested_record":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9000000033"}]},
            "requesting_device":{"resourceType":"Device","identifier":[{"system":"Web Interface","value":"GP Connect Demonstrator"}],"model":"v1"}}"#;
        let c = parse_bearer(token(HEADER, gp_connect, "").as_bytes()).unwrap();
        assert_eq!(
            [
                &c.aud,
                &c.exp,
                &c.iat,
                &c.requested_scope,
                &c.requesting_device,
                &c.requested_record
            ]
            .map(|v| v.as_deref()),
            [
                Some("https://provider.thirdparty.nhs.uk/GP0001/STU3/1"),
                Some("1469436987"),
                Some("1469436687"),
                Some("patient/*.read"),
                Some("GP Connect Demonstrator"),
                Some("9000000033"),
            ]
        );
        let c = parse_bearer(token(HEADER, &pecs().to_string(), "").as_bytes()).unwrap();
        assert_eq!(c.requesting_device.as_deref(), Some(FROM));
        assert_eq!(c.requesting_organization.as_deref(), Some("FML84"));
        assert_eq!(c.requested_record, None);
        // Escaped names and values read as what they stand for; the last of a repeated claim.
        let escaped = r#"{"i\u0073s":"a\/b \u00e9\ud83d\ude00","sub":"1","sub":"2"}"#;
        let c = parse_bearer(token(HEADER, escaped, "").as_bytes()).unwrap();
        assert_eq!(c.iss.as_deref(), Some("a/b \u{e9}\u{1f600}"));
        assert_eq!(c.sub.as_deref(), Some("2"));
    }

    const HEADER: &str = r#"{"alg":"none","typ":"JWT"}"#;
    const NOW: i64 = 1_800_000_000;
    const FROM: &str = "200000000001";
    const SEARCH: &str = "urn:nhs:names:services:prescription-exemptions:custom:operation:search";
    const SCOPE: &str = "Prescription-Exemption/1.0.0/search";

    /// The PECS page's payload, issued a minute ago, valid four more.
    fn pecs() -> serde_json::Value {
        serde_json::json!({
            "iss": FROM,
            "sub": "313175813564",
            "aud": "https://proxy.int.spine2.ncrs.nhs.uk/https://apps.nhsbsa.nhs.uk/Prescription-Exemption/1.0.0/search",
            "exp": NOW + 240,
            "iat": NOW - 60,
            "reason_for_request": "directcare",
            "requested_scope": SCOPE,
            "requesting_device": FROM,
            "requesting_organization": "FML84",
            "requesting_practitioner": "313175813564"
        })
    }

    /// `pecs()` with each claim set to the value given (`null`: removed).
    fn pecs_with(edits: &[(&str, serde_json::Value)]) -> serde_json::Value {
        let mut claims = pecs();
        for (name, value) in edits {
            match value {
                serde_json::Value::Null => claims.as_object_mut().unwrap().remove(*name),
                v => claims
                    .as_object_mut()
                    .unwrap()
                    .insert(name.to_string(), v.clone()),
            };
        }
        claims
    }

    fn enforce(leeway: u64, bind_sender: bool) -> Policy {
        Policy::new(&config::Jwt {
            mode: JwtMode::Enforce,
            leeway: std::time::Duration::from_secs(leeway),
            bind_sender,
            scopes: [(SEARCH.to_string(), vec!["patient/*.read".into(), SCOPE.into()])].into(),
        })
    }

    fn judged(
        policy: &Policy,
        interaction: &str,
        claims: &serde_json::Value,
        now: i64,
    ) -> Result<(), Refusal> {
        let ssp = SspHeaders {
            trace_id: b"5b6f3f8e-7a1d-4c1e-9d3a-2f0b6c1e8a44",
            from: super::super::headers::Asid::new(FROM.as_bytes()).unwrap(),
            to: super::super::headers::Asid::new(b"200000000999").unwrap(),
            interaction: interaction.as_bytes(),
        };
        check(
            policy,
            token(HEADER, &claims.to_string(), "").as_bytes(),
            &ssp,
            now,
        )
    }

    /// Every rule `enforce` adds, each broken alone, with the token it is answered with.
    #[test]
    fn enforce_refuses_each_broken_rule_with_its_own_token() {
        use serde_json::json;
        let other = "200000000002";
        let device = |value: &str| json!({"resourceType": "Device", "identifier": [{"system": "https://d", "value": value}]});
        type Edits = Vec<(&'static str, serde_json::Value)>;
        let cases: Vec<(Edits, Result<(), JwtRule>)> = vec![
            (vec![], Ok(())),
            (vec![("requested_scope", json!("patient/*.read"))], Ok(())),
            (vec![("requesting_device", device(FROM))], Ok(())),
            (vec![("exp", json!(null))], Err(JwtRule::Exp)),
            (vec![("exp", json!("1800000240"))], Err(JwtRule::Exp)),
            (vec![("exp", json!(1_800_000_240.5))], Err(JwtRule::Exp)),
            (
                vec![("exp", json!(NOW - 70)), ("iat", json!(NOW - 60))],
                Err(JwtRule::Exp),
            ),
            (vec![("iat", json!(null))], Err(JwtRule::Iat)),
            (vec![("iat", json!(true))], Err(JwtRule::Iat)),
            (
                vec![("exp", json!(NOW - 61)), ("iat", json!(NOW - 300))],
                Err(JwtRule::Expired),
            ),
            (
                vec![("exp", json!(NOW + 300)), ("iat", json!(NOW + 61))],
                Err(JwtRule::IssuedInTheFuture),
            ),
            (
                vec![("exp", json!(NOW + 241)), ("iat", json!(NOW - 60))],
                Err(JwtRule::LifetimeTooLong),
            ),
            (
                vec![("reason_for_request", json!(null))],
                Err(JwtRule::ReasonNotDirectCare),
            ),
            (
                vec![("reason_for_request", json!("DirectCare"))],
                Err(JwtRule::ReasonNotDirectCare),
            ),
            (
                vec![("reason_for_request", json!("secondaryuses"))],
                Err(JwtRule::ReasonNotDirectCare),
            ),
            (
                vec![("requested_scope", json!(null))],
                Err(JwtRule::ScopeNotAllowed),
            ),
            (
                vec![("requested_scope", json!("patient/*.write"))],
                Err(JwtRule::ScopeNotAllowed),
            ),
            (
                vec![("requested_scope", json!([SCOPE]))],
                Err(JwtRule::ScopeNotAllowed),
            ),
            (
                vec![("iss", json!(null))],
                Err(JwtRule::IssNotSender { from: FROM.into() }),
            ),
            (
                vec![("iss", json!(other))],
                Err(JwtRule::IssNotSender { from: FROM.into() }),
            ),
            (
                vec![("iss", json!(" 200000000001"))],
                Err(JwtRule::IssNotSender { from: FROM.into() }),
            ),
            (
                vec![("requesting_device", json!(null))],
                Err(JwtRule::DeviceNotSender { from: FROM.into() }),
            ),
            (
                vec![("requesting_device", json!(other))],
                Err(JwtRule::DeviceNotSender { from: FROM.into() }),
            ),
            (
                vec![("requesting_device", device(other))],
                Err(JwtRule::DeviceNotSender { from: FROM.into() }),
            ),
        ];
        let policy = enforce(60, true);
        for (edits, want) in cases {
            let claims = pecs_with(&edits);
            assert_eq!(
                judged(&policy, SEARCH, &claims, NOW),
                want.clone().map_err(Refusal::Jwt),
                "{claims}"
            );
            // The same token under shape only, as before issue 17: well-formed, so admitted.
            assert_eq!(
                judged(&Policy::default(), SEARCH, &claims, NOW),
                Ok(()),
                "{claims}"
            );
            // Without bind_sender, iss and requesting_device are only logged.
            let unbound = match want {
                Err(JwtRule::IssNotSender { .. } | JwtRule::DeviceNotSender { .. }) => Ok(()),
                other => other.map_err(Refusal::Jwt),
            };
            assert_eq!(
                judged(&enforce(60, false), SEARCH, &claims, NOW),
                unbound,
                "{claims}"
            );
        }
        // Fail closed: an interaction with no `scopes` entry has no allowed scope.
        assert_eq!(
            judged(&policy, "urn:nhs:names:services:other", &pecs(), NOW),
            Err(Refusal::Jwt(JwtRule::NoScopes))
        );
    }

    /// The leeway covers clock skew both ways, to the second; the 300 s window is not skew
    /// and has none.
    #[test]
    fn leeway_and_lifetime_edges() {
        use serde_json::json;
        let times = |exp: i64, iat: i64| pecs_with(&[("exp", json!(exp)), ("iat", json!(iat))]);
        let rule = |leeway: u64, claims: &serde_json::Value, now: i64| {
            judged(&enforce(leeway, false), SEARCH, claims, now).map_err(|r| match r {
                Refusal::Jwt(rule) => rule,
                other => panic!("{other:?}"),
            })
        };
        for leeway in [0, 60, 300] {
            let l = leeway as i64;
            // exp: still good at exp + leeway, expired a second later.
            let claims = times(NOW, NOW - 100);
            assert_eq!(rule(leeway, &claims, NOW + l), Ok(()), "leeway {l}");
            assert_eq!(
                rule(leeway, &claims, NOW + l + 1),
                Err(JwtRule::Expired),
                "leeway {l}"
            );
            // iat: good up to leeway ahead of the clock.
            assert_eq!(
                rule(leeway, &times(NOW + l + 100, NOW + l), NOW),
                Ok(()),
                "leeway {l}"
            );
            assert_eq!(
                rule(leeway, &times(NOW + l + 101, NOW + l + 1), NOW),
                Err(JwtRule::IssuedInTheFuture),
                "leeway {l}"
            );
            // exp - iat: 300 s exactly is allowed, 301 is not, whatever the leeway.
            assert_eq!(rule(leeway, &times(NOW + 300, NOW), NOW), Ok(()), "leeway {l}");
            assert_eq!(
                rule(leeway, &times(NOW + 301, NOW), NOW),
                Err(JwtRule::LifetimeTooLong),
                "leeway {l}"
            );
            assert_eq!(rule(leeway, &times(NOW, NOW), NOW), Ok(()), "leeway {l}");
        }
        // Extreme values neither wrap nor panic.
        assert_eq!(
            rule(60, &times(i64::MAX, i64::MIN), NOW),
            Err(JwtRule::LifetimeTooLong)
        );
        assert_eq!(
            rule(60, &times(i64::MAX, NOW), i64::MIN),
            Err(JwtRule::IssuedInTheFuture)
        );
        assert_eq!(
            rule(60, &times(i64::MIN, i64::MIN), i64::MAX),
            Err(JwtRule::Expired)
        );
    }

    /// A token that is not well-formed is row 7's `Authorization` refusal in both modes.
    #[test]
    fn malformed_tokens_are_the_same_refusal_in_both_modes() {
        let bad = Err(Refusal::InvalidHeader("Authorization"));
        for policy in [Policy::default(), enforce(60, true)] {
            let ssp = SspHeaders {
                trace_id: b"5b6f3f8e-7a1d-4c1e-9d3a-2f0b6c1e8a44",
                from: super::super::headers::Asid::new(FROM.as_bytes()).unwrap(),
                to: super::super::headers::Asid::new(b"200000000999").unwrap(),
                interaction: SEARCH.as_bytes(),
            };
            for value in [
                "Bearer x",
                "Basic eDp5",
                &token(r#"{"typ":"JWT"}"#, &pecs().to_string(), ""),
            ] {
                assert_eq!(check(&policy, value.as_bytes(), &ssp, NOW), bad, "{value}");
            }
        }
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
