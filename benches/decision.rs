//! The cost of deciding one request: parsing its head and running SPEC section 4 rows 5–13
//! (`policy::admit`) against an allowlist of hundreds of consumers.
//! `cargo bench --bench decision`

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use ssp::http::request;
use ssp::policy::allowlist::Allowlist;
use ssp::policy::identity::Identity;
use ssp::policy::revocation::{Judgement, Revocations};
use ssp::policy::{Rules, admit};

const CONSUMERS: usize = 500;
/// 2026-11-25, while the fixture CRL is current.
const NOW: i64 = 1_795_623_784;
const PROVIDERS: usize = 50;
const INTERACTION: &str =
    "urn:nhs:names:services:prescription-exemptions:custom:operation:search:prescription-exemptions";

fn config_text() -> String {
    let mut text = String::from(
        "[server]\ncertificate = \"a\"\nprivate_key = \"a\"\nclient_ca = \"a\"\ncrl = []\n[upstream]\nca = \"a\"\n",
    );
    for p in 0..PROVIDERS {
        text.push_str(&format!(
            "[[provider]]\nasid = \"2000000009{p:02}\"\nendpoint = \"https://provider{p}.example.nhs.uk/Prescription-Exemptions/1.0.0\"\ninteractions = [\"{INTERACTION}\"]\n"
        ));
    }
    for c in 0..CONSUMERS {
        // dispenser-a is the one whose certificate the benchmark presents.
        let fqdn = if c == CONSUMERS / 2 {
            "dispenser-a.example.nhs.uk".to_string()
        } else {
            format!("d{c}.example.nhs.uk")
        };
        text.push_str(&format!(
            "[[consumer]]\nasid = \"200000{c:06}\"\nfqdn = \"{fqdn}\"\ninteractions = [\"{INTERACTION}\"]\nproviders = [\"200000000907\"]\n"
        ));
    }
    text
}

fn bench(c: &mut Criterion) {
    let cfg = ssp::config::parse(&config_text(), Path::new("/bench/ssp.toml")).expect("config");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki");
    let crl = ssp::tls::files::crl(&fixtures.join("level1c.crl")).expect("crl");
    let rules = Rules {
        methods: cfg.limits.methods.clone(),
        require_jwt: true,
        jwt: Default::default(),
        max_body_bytes: cfg.limits.max_body_bytes,
        allowlist: Allowlist::new(&cfg.consumers, &cfg.providers),
        revocations: Revocations::new(
            vec![(
                webpki::OwnedCertRevocationList::from_der(&crl).expect("crl der"),
                ssp::x509::crl_info(&crl).and_then(|i| i.next_update),
            )],
            true,
        ),
    };
    let cert = ssp::tls::files::certificates(&fixtures.join("consumer-a.pem")).expect("cert");
    let identity = Identity::from_certificate(&cert[0]).expect("identity");
    // The connection's chain verified under this configuration: the per-request case.
    let judged = Judgement {
        generation: 0,
        fault: None,
    };
    let from = format!("200000{:06}", CONSUMERS / 2);
    let raw = format!(
        "GET /https://provider7.example.nhs.uk/Prescription-Exemptions/1.0.0/search?patient=9000000009 HTTP/1.1\r\n\
         Host: proxy\r\nSsp-TraceID: 5b6f3f8e-7a1d-4c1e-9d3a-2f0b6c1e8a44\r\nSsp-From: {from}\r\nSsp-To: 200000000907\r\n\
         Ssp-InteractionID: {INTERACTION}\r\nAuthorization: Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2Rpc3BlbnNlci1hLmV4YW1wbGUubmhzLnVrIiwic3ViIjoiMSJ9.\r\n\
         Accept: application/fhir+json\r\n\r\n"
    );
    let head = request::parse(raw.as_bytes(), 32768)
        .expect("valid")
        .expect("complete");
    assert!(
        admit(&rules, &head, &identity, judged, NOW).is_ok(),
        "the benchmarked request must be admitted"
    );

    c.bench_function("admit (rows 5-13, 500 consumers)", |b| {
        b.iter(|| {
            admit(
                black_box(&rules),
                black_box(&head),
                black_box(&identity),
                judged,
                NOW,
            )
        })
    });
    let auth = head.field("authorization").expect("jwt").to_vec();
    c.bench_function("row 7: JWT well-formed", |b| {
        b.iter(|| ssp::policy::jwt::is_valid_bearer(black_box(&auth)))
    });
    c.bench_function("audit: JWT claims read", |b| {
        b.iter(|| ssp::policy::jwt::parse_bearer(black_box(&auth)))
    });
    // A JWT as GP Connect's audit and provenance page shapes it: FHIR resources for the
    // device, organisation, practitioner and record, about 1.4 KiB once encoded.
    let full = format!("Bearer {}.{}.", b64(JWT_HEADER), b64(&full_payload(NOW, &from)));
    c.bench_function("row 7: JWT well-formed (GP Connect-sized)", |b| {
        b.iter(|| ssp::policy::jwt::is_valid_bearer(black_box(full.as_bytes())))
    });
    c.bench_function("audit: JWT claims read (GP Connect-sized)", |b| {
        b.iter(|| ssp::policy::jwt::parse_bearer(black_box(full.as_bytes())))
    });
    c.bench_function("row 5: target URL", |b| {
        b.iter(|| ssp::http::target::parse(black_box(head.target())))
    });
    c.bench_function("row 7: Ssp headers + JWT", |b| {
        b.iter(|| ssp::policy::headers::check(black_box(&head), true, &rules.jwt, NOW))
    });
    let enforce = ssp::policy::jwt::Policy::new(&ssp::config::Jwt {
        mode: ssp::config::JwtMode::Enforce,
        leeway: std::time::Duration::from_secs(60),
        bind_sender: true,
        scopes: [(
            INTERACTION.to_string(),
            vec!["Prescription-Exemption/1.0.0/search".to_string()],
        )]
        .into(),
    });
    let ssp_headers = ssp::policy::headers::check(&head, true, &rules.jwt, NOW).expect("row 7");
    assert_eq!(
        ssp::policy::jwt::check(&enforce, full.as_bytes(), &ssp_headers, NOW),
        Ok(())
    );
    c.bench_function("row 7: JWT enforce (GP Connect-sized)", |b| {
        b.iter(|| ssp::policy::jwt::check(&enforce, black_box(full.as_bytes()), &ssp_headers, NOW))
    });
    let limits =
        ssp::policy::throttle::RateLimits::new(vec![
            ssp::policy::throttle::Limit::new(1e9, 1_000_000);
            CONSUMERS
        ]);
    let mut clock = 0u64;
    c.bench_function("row 14: rate limit (GCRA, one atomic)", |b| {
        b.iter(|| {
            clock += 1_000;
            limits.acquire(black_box(CONSUMERS / 2), clock)
        })
    });
    let in_flight = ssp::policy::throttle::InFlight::new(vec![64; PROVIDERS], 0.5, CONSUMERS);
    c.bench_function("row 15: in-flight permit, taken and released", |b| {
        b.iter(|| in_flight.try_acquire(black_box(CONSUMERS / 2), black_box(7)))
    });
    c.bench_function("parse head + admit", |b| {
        b.iter(|| {
            let head = request::parse(black_box(raw.as_bytes()), 32768)
                .expect("valid")
                .expect("complete");
            admit(&rules, &head, &identity, judged, NOW).is_ok()
        })
    });
}

const JWT_HEADER: &str = r#"{"alg":"none","typ":"JWT"}"#;

/// The payload of GP Connect's published example, issued at `now`, valid five minutes, from
/// `asid` (its `iss` and device identifier, as PECS has them).
fn full_payload(now: i64, asid: &str) -> String {
    format!(
        r#"{{"iss":"{asid}","sub":"G13579135","aud":"https://provider7.example.nhs.uk/Prescription-Exemptions/1.0.0/search","exp":{exp},"iat":{now},"reason_for_request":"directcare","requested_scope":"Prescription-Exemption/1.0.0/search","requested_record":{{"resourceType":"Patient","identifier":[{{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9000000009"}}]}},"requesting_device":{{"resourceType":"Device","identifier":[{{"system":"https://dispenser-a.example.nhs.uk","value":"{asid}"}}],"model":"Dispenser","version":"1.0","url":"https://dispenser-a.example.nhs.uk"}},"requesting_organization":{{"resourceType":"Organization","identifier":[{{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"FA123"}}],"name":"A Pharmacy"}},"requesting_practitioner":{{"resourceType":"Practitioner","id":"10019","identifier":[{{"system":"https://fhir.nhs.uk/Id/sds-user-id","value":"G13579135"}},{{"system":"https://fhir.nhs.uk/Id/sds-role-profile-id","value":"R8000"}}],"name":{{"family":["Smith"],"given":["Jo"],"prefix":["Mx"]}}}}}}"#,
        exp = now + 300
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

criterion_group!(benches, bench);
criterion_main!(benches);
