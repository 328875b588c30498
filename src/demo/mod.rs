//! `ssp demo`: the proxy and a PECS-like provider on loopback with the fixture PKI, and the
//! curl commands to try them.

pub mod provider;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config;
use crate::proxy::{self, Runtime, Shared};
use crate::service;

const INTERACTION: &str =
    "urn:nhs:names:services:prescription-exemptions:custom:operation:search:prescription-exemptions";
/// An unsigned (`alg: none`) JWT as PECS consumers send: {"alg":"none","typ":"JWT"} and
/// {"iss":"https://dispenser-a.example.nhs.uk","sub":"1","reason_for_request":"directcare",
/// "requesting_organization":"FA123"}.
const DEMO_JWT: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2Rpc3BlbnNlci1hLmV4YW1wbGUubmhzLnVrIiwic3ViIjoiMSIsInJlYXNvbl9mb3JfcmVxdWVzdCI6ImRpcmVjdGNhcmUiLCJyZXF1ZXN0aW5nX29yZ2FuaXphdGlvbiI6IkZBMTIzIn0.";

/// Where the fixtures are: under the working directory when run from the repository, else
/// where the binary was built from.
fn fixtures() -> Option<PathBuf> {
    [
        PathBuf::from("fixtures"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures"),
    ]
    .into_iter()
    .find(|dir| dir.join("demo.toml").is_file())
}

pub fn run() -> Result<(), String> {
    let dir = fixtures().ok_or("cannot find fixtures/demo.toml: run `ssp demo` from the repository")?;
    let cfg = config::load(&dir.join("demo.toml")).map_err(|e| e.to_string())?;
    let provider_addr = cfg
        .providers
        .first()
        .and_then(|p| p.connect.first().copied())
        .ok_or("fixtures/demo.toml: the demo provider needs a `connect` address")?;
    let pki = dir.join("pki");
    let provider_tls = provider::server_config(
        &pki.join("provider.pem"),
        &pki.join("provider.key"),
        &pki.join("nhs-ca.pem"),
    )
    .map_err(|e| e.to_string())?;
    let handler: provider::Handler = Arc::new(|req: &provider::SeenRequest| {
        let answer = if req.method == "POST" {
            pecs_post_answer()
        } else {
            pecs_answer()
        };
        let mut reply = provider::Reply::json(200, answer);
        reply.fields.push((
            "Demo-Seen-Client".into(),
            req.client_subject.clone().unwrap_or_default(),
        ));
        reply.fields.push((
            "Demo-Seen-Forwarded".into(),
            req.field("forwarded").unwrap_or("").into(),
        ));
        reply
    });
    let demo_provider = provider::start(provider_addr, provider_tls, handler)
        .map_err(|e| format!("demo provider on {provider_addr}: {e}"))?;
    if let Some(key) = &cfg.audit.key
        && !key.exists()
    {
        if let Some(folder) = key.parent() {
            std::fs::create_dir_all(folder).map_err(|e| format!("{}: {e}", folder.display()))?;
        }
        println!(
            "ssp demo: a new audit key for the demo (a real one is made once, with `ssp audit keygen`):"
        );
        if crate::audit::cli::keygen(key) != 0 {
            return Err(format!("cannot create the demo audit key {}", key.display()));
        }
    }
    let config_path = cfg.path.clone();
    let audit_dir = cfg.audit.dir.clone();
    let shared = Shared::load(cfg).map_err(|e| e.to_string())?;
    let listeners = proxy::bind(&shared).map_err(|e| e.to_string())?;
    let proxy_addr = listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .ok_or("no listen address")?;
    let provider_url = shared.config.providers[0].endpoints[0].url.url.clone();
    println!(
        "ssp demo: proxy on https://localhost:{}, provider on {}",
        proxy_addr.port(),
        demo_provider.addr
    );
    println!("{}", instructions(&pki, proxy_addr.port(), &provider_url));
    println!(
        "\nThe audit is in {0}: `tail -F {0}/audit.jsonl`; verify it with \
         `cargo run --release -- audit verify {0}`.",
        audit_dir.display()
    );
    let runtime = Arc::new(Runtime::start(shared)?);
    let reopen = runtime.clone();
    service::handle_signals(
        runtime.clone(),
        config_path,
        Box::new(move || reopen.transactions.reopen()),
    )
    .map_err(|e| e.to_string())?;
    service::start_admin(&runtime).map_err(|e| e.to_string())?;
    service::watch_clock(runtime.clone(), Box::new(crate::clock::Adjtimex)).map_err(|e| e.to_string())?;
    let served = proxy::serve(runtime.clone(), listeners).map_err(|e| e.to_string());
    runtime.shutdown("demo stopped");
    served
}

fn pecs_answer() -> String {
    r#"{"resourceType":"Bundle","type":"searchset","total":1,"entry":[{"resource":{"resourceType":"Basic","id":"exemption-1","code":{"coding":[{"system":"https://fhir.nhs.uk/CodeSystem/prescription-exemption-type","code":"MatEx","display":"Maternity exemption"}]},"extension":[{"url":"https://fhir.nhs.uk/StructureDefinition/valid-until","valueDate":"2027-03-31"}]}}]}"#
        .to_string()
}

/// What the PECS API answers its POST search (NHSEPS/prescription-exemptions,
/// `swagger/RTEC-api-docs_1.0.0.json`, `SearchResponse`).
fn pecs_post_answer() -> String {
    r#"{"expiry":"2027-03-31","message":"Exemption has been found","type":"9005"}"#.to_string()
}

/// A PECS `SearchRequest`: the later API searches by POST with the patient in the body.
const PECS_SEARCH_BODY: &str =
    r#"{"dob":"1993-06-22","nhsNumber":"9000000009","postcode":"NE32JH","surname":"Johnson"}"#;

fn instructions(pki: &Path, port: u16, provider_url: &str) -> String {
    let curl = |consumer: &str, from: &str, post: bool| {
        let (body, query) = if post {
            (
                format!("-H 'Content-Type: application/json' -d '{PECS_SEARCH_BODY}' \\\n  "),
                "",
            )
        } else {
            (String::new(), "?patient=9000000009")
        };
        format!(
            "curl -i --cacert {ca} --cert {pki}/{consumer}.pem --key {pki}/{consumer}.key \\\n  \
             -H 'Ssp-TraceID: 5b6f3f8e-7a1d-4c1e-9d3a-2f0b6c1e8a44' -H 'Ssp-From: {from}' -H 'Ssp-To: 200000000999' \\\n  \
             -H 'Ssp-InteractionID: {INTERACTION}' \\\n  \
             -H 'Authorization: Bearer {DEMO_JWT}' \\\n  {body}\
             'https://localhost:{port}/{provider_url}/search{query}'",
            ca = pki.join("nhs-ca.pem").display(),
            pki = pki.display(),
        )
    };
    format!(
        "\nAllowed (dispenser-a has an agreement with the provider):\n\n{}\n\n\
         The same search as the PECS API makes it, by POST with the patient in a JSON body:\n\n{}\n\n\
         Refused with 403 FOT_CHECK_FAILED (dispenser-b has no agreement):\n\n{}\n\n\
         Refused at the TLS handshake (a revoked certificate):\n\n{}\n\nCtrl-C stops the demo.",
        curl("consumer-a", "200000000001", false),
        curl("consumer-a", "200000000001", true),
        curl("consumer-b", "200000000002", false),
        curl("consumer-revoked", "200000000005", false),
    )
}
