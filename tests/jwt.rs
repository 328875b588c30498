//! SPEC section 4 row 7, the JWT under `[jwt]` (issue 17 item 3), over real TLS: `enforce`
//! refuses each broken published rule with its own token, recorded in the `deny` record, and
//! lets a good JWT through; `shape` (the default) admits what it admitted before.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{Value, json};

const SCOPE: &str = "Prescription-Exemption/1.0.0/search";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A JWT as the PECS page publishes it, from consumer A, issued a minute ago, valid four more
/// minutes; with a FHIR `requested_record` as GP Connect's has.
fn published(now: i64) -> Value {
    json!({
        "iss": CONSUMER_A.asid,
        "sub": "313175813564",
        "aud": "https://proxy.example/https://pecs.example.nhs.uk/Prescription-Exemption/1.0.0/search",
        "exp": now + 240,
        "iat": now - 60,
        "reason_for_request": "directcare",
        "requested_scope": SCOPE,
        "requested_record": {"resourceType": "Patient", "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9000000009"}]},
        "requesting_device": CONSUMER_A.asid,
        "requesting_organization": "FML84",
        "requesting_practitioner": "313175813564"
    })
}

/// `published(now)` with each claim set as given (`null`: removed).
fn with(now: i64, edits: &[(&str, Value)]) -> Value {
    let mut claims = published(now);
    let map = claims.as_object_mut().unwrap();
    for (name, value) in edits {
        match value {
            Value::Null => map.remove(*name),
            v => map.insert(name.to_string(), v.clone()),
        };
    }
    claims
}

fn bearer(claims: &Value) -> String {
    format!(
        "Bearer {}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&claims.to_string())
    )
}

fn b64(text: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let n = chunk.iter().fold(0u32, |a, &b| (a << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

fn enforcing(extra: &str) -> Options {
    Options {
        jwt: format!(
            "mode = \"enforce\"\nbind_sender = true\nscopes = {{ \"{INTERACTION}\" = [\"{SCOPE}\"] }}\n{extra}"
        ),
        ..Options::default()
    }
}

fn audit_records(proxy: &Proxy) -> Vec<Value> {
    std::fs::read_to_string(proxy.dir().join("audit/audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Each rule broken alone, and the token `enforce` answers it with.
fn broken(now: i64) -> Vec<(Value, &'static str)> {
    let device = |asid: &str| json!({"resourceType": "Device", "identifier": [{"system": "https://d", "value": asid}]});
    vec![
        (
            with(now, &[("exp", Value::Null)]),
            "MISSING_OR_INVALID_JWT_CLAIM_exp",
        ),
        (
            with(now, &[("iat", json!("a minute ago"))]),
            "MISSING_OR_INVALID_JWT_CLAIM_iat",
        ),
        (
            with(now, &[("exp", json!(now - 120)), ("iat", json!(now - 400))]),
            "JWT_EXPIRED",
        ),
        (
            with(now, &[("exp", json!(now + 400)), ("iat", json!(now + 120))]),
            "JWT_ISSUED_IN_THE_FUTURE",
        ),
        (
            with(now, &[("exp", json!(now + 301)), ("iat", json!(now))]),
            "JWT_LIFETIME_TOO_LONG",
        ),
        (
            with(now, &[("reason_for_request", json!("secondaryuses"))]),
            "JWT_REASON_FOR_REQUEST_NOT_DIRECTCARE",
        ),
        (
            with(now, &[("requested_scope", json!("patient/*.read"))]),
            "JWT_REQUESTED_SCOPE_NOT_ALLOWED",
        ),
        (
            with(now, &[("iss", json!(CONSUMER_B.asid))]),
            "JWT_ISS_VARIES_FROM_MESSAGESENDER_200000000001",
        ),
        (
            with(now, &[("requesting_device", device(CONSUMER_B.asid))]),
            "JWT_REQUESTING_DEVICE_VARIES_FROM_MESSAGESENDER_200000000001",
        ),
    ]
}

#[test]
fn enforce_refuses_each_broken_rule_with_its_token_and_lets_a_good_jwt_through() {
    let proxy = Proxy::with(enforcing(""));
    let now = now();
    let mut refused = Vec::new();
    for (claims, token) in broken(now) {
        let request = proxy.get().set("Authorization", &bearer(&claims));
        let r = proxy.consumer(&CONSUMER_A).exchange(&request);
        assert_outcome(&r, 400, "invalid", token, Some(TRACE_ID));
        proxy.assert_nothing_forwarded(token);
        refused.push(token);
    }
    // Fail closed: an interaction with no `scopes` entry has no scope to allow.
    let other = proxy
        .get()
        .set("Authorization", &bearer(&published(now)))
        .set("Ssp-InteractionID", "urn:nhs:names:services:other");
    let r = proxy.consumer(&CONSUMER_A).exchange(&other);
    assert_outcome(
        &r,
        400,
        "invalid",
        "JWT_NO_SCOPES_FOR_INTERACTION",
        Some(TRACE_ID),
    );
    refused.push("JWT_NO_SCOPES_FOR_INTERACTION");
    // Malformed is still row 7's Authorization refusal.
    let r = proxy
        .consumer(&CONSUMER_A)
        .exchange(&proxy.get().set("Authorization", "Bearer e30.e30"));
    let malformed = "MISSING_OR_INVALID_HEADER_Authorization";
    assert_outcome(&r, 400, "invalid", malformed, Some(TRACE_ID));
    refused.push(malformed);
    proxy.assert_nothing_forwarded("the refused JWTs");

    // The good one, also with a GP Connect-style Device naming the sender.
    let good = bearer(&published(now));
    let device =
        json!({"resourceType": "Device", "identifier": [{"system": "https://d", "value": CONSUMER_A.asid}]});
    let as_device = bearer(&with(now, &[("requesting_device", device)]));
    for jwt in [&good, &as_device] {
        let r = proxy
            .consumer(&CONSUMER_A)
            .exchange(&proxy.get().set("Authorization", jwt));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let seen = proxy.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].field("authorization"),
        Some(good.as_str()),
        "forwarded as sent"
    );

    proxy.stop();
    let records = audit_records(&proxy);
    let of = |kind: &str| records.iter().filter(|r| r["type"] == kind).collect::<Vec<_>>();
    let denied: Vec<&str> = of("deny").iter().map(|r| r["token"].as_str().unwrap()).collect();
    assert_eq!(denied, refused, "one deny record per refusal, with its token");
    // The claims a refused JWT carried are in its record: here the expired one's times.
    let expired = of("deny")[2];
    assert_eq!(expired["jwt"]["exp"], (now - 120).to_string());
    assert_eq!(expired["jwt"]["iat"], (now - 400).to_string());
    let req = &of("req")[0]["jwt"];
    assert_eq!(req["aud"], published(now)["aud"]);
    assert_eq!(req["exp"], (now + 240).to_string());
    assert_eq!(req["iat"], (now - 60).to_string());
    assert_eq!(req["requested_scope"], SCOPE);
    assert_eq!(req["requesting_device"], CONSUMER_A.asid);
    assert_eq!(req["requested_record"], "9000000009");
    assert_eq!(req["iss"], CONSUMER_A.asid);
    assert_eq!(req["reason_for_request"], "directcare");
}

/// `shape`, the default and as written, is the behaviour from before issue 17: every JWT
/// that `enforce` refuses above is admitted, and only a malformed one is refused.
#[test]
fn shape_admits_what_it_admitted_before() {
    let written = Options {
        jwt: format!("mode = \"shape\"\nscopes = {{ \"{INTERACTION}\" = [\"{SCOPE}\"] }}"),
        ..Options::default()
    };
    for options in [Options::default(), written] {
        let proxy = Proxy::with(options);
        let now = now();
        let mut jwts: Vec<String> = broken(now).iter().map(|(claims, _)| bearer(claims)).collect();
        jwts.push(JWT.to_string());
        for jwt in &jwts {
            let r = proxy
                .consumer(&CONSUMER_A)
                .exchange(&proxy.get().set("Authorization", jwt));
            assert_eq!(r.status, 200, "{jwt}: {}", r.text());
        }
        assert_eq!(proxy.seen().len(), jwts.len());
        let r = proxy
            .consumer(&CONSUMER_A)
            .exchange(&proxy.get().set("Authorization", "Bearer e30.e30"));
        let token = "MISSING_OR_INVALID_HEADER_Authorization";
        assert_outcome(&r, 400, "invalid", token, Some(TRACE_ID));
    }
}

/// `leeway` is the configured clock skew: a JWT that expired five seconds ago is still good
/// under the default 60 s, and expired under `leeway = "0s"`.
#[test]
fn the_leeway_is_the_configured_one() {
    let now = now();
    let just_expired = bearer(&with(now, &[("exp", json!(now - 5)), ("iat", json!(now - 100))]));
    let lenient = Proxy::with(enforcing(""));
    let r = lenient
        .consumer(&CONSUMER_A)
        .exchange(&lenient.get().set("Authorization", &just_expired));
    assert_eq!(r.status, 200, "{}", r.text());
    let strict = Proxy::with(enforcing("leeway = \"0s\""));
    let r = strict
        .consumer(&CONSUMER_A)
        .exchange(&strict.get().set("Authorization", &just_expired));
    assert_outcome(&r, 400, "invalid", "JWT_EXPIRED", Some(TRACE_ID));
    strict.assert_nothing_forwarded("JWT_EXPIRED");
}
