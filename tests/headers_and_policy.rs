//! SPEC section 4 rows 5–13: target, method, Ssp headers and JWT, the allowlist, the
//! registered endpoint and the body size. Every refusal is an OperationOutcome with the exact
//! token, and none reaches the provider.

mod common;

use common::*;

/// Sends `request` as `who` on a new connection and checks the OperationOutcome and that the
/// provider saw nothing.
#[track_caller]
fn assert_refused(
    proxy: &Proxy,
    who: &Who,
    request: &Request,
    status: u16,
    code: &str,
    token: &str,
) -> Response {
    let r = proxy.consumer(who).exchange(request);
    let trace = request
        .fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("ssp-traceid"))
        .map(|(_, v)| v.as_str());
    assert_outcome(&r, status, code, token, trace);
    proxy.assert_nothing_forwarded(token);
    r
}

#[test]
fn targets_that_are_not_proxied_https_urls_are_refused() {
    let proxy = Proxy::start();
    let port = proxy.provider_addr.port();
    let cases = [
        format!("{ROOT}{SEARCH}"),
        format!("/http://localhost:{port}{ROOT}{SEARCH}"),
        format!("https://localhost:{port}{ROOT}{SEARCH}"),
        format!(
            "https://localhost:{}/https://localhost:{port}{ROOT}{SEARCH}",
            proxy.addr.port()
        ),
        format!("/https://localhost:{port}{ROOT}/../admin"),
        format!("/https://localhost:{port}{ROOT}/%2e%2E/admin"),
        format!("/https://localhost:{port}/Prescription-Exemptions/./1.0.0/search"),
        format!("/https://user@localhost:{port}{ROOT}{SEARCH}"),
        format!("/https://localhost:{port}{ROOT}/search#fragment"),
        format!("/https%3A%2F%2Flocalhost%3A{port}%2FPrescription-Exemptions%2F1.0.0%2F%2E%2E%2Fadmin"),
        // Encoded separators a provider might decode into segments outside its root.
        format!("/https://localhost:{port}{ROOT}/x%2F..%2F..%2Fadmin"),
        format!("/https://localhost:{port}{ROOT}/..%5C..%5Cadmin"),
        format!("/https://localhost:{port}{ROOT}/search%00"),
    ];
    for target in cases {
        let r = proxy.consumer(&CONSUMER_A).exchange(&proxy.get().target(&target));
        assert_eq!(r.status, 400, "{target}: {}", r.text());
        assert_outcome(&r, 400, "invalid", "INVALID_TARGET_URL", Some(TRACE_ID));
        proxy.assert_nothing_forwarded(&target);
    }
}

/// The audit keeps the first 512 bytes of a target. A target whose 512th byte fell inside a
/// character once panicked the worker building the record (and, with `panic = "abort"`,
/// stopped the whole proxy) for any consumer holding a valid certificate.
#[test]
fn a_target_with_a_character_across_the_audit_cut_is_refused_and_the_proxy_serves_on() {
    let proxy = Proxy::start();
    for filler in [510, 511] {
        let target = format!("/{}é€", "a".repeat(filler));
        let r = proxy.consumer(&CONSUMER_A).exchange(&proxy.get().target(&target));
        assert_outcome(&r, 400, "invalid", "INVALID_TARGET_URL", Some(TRACE_ID));
    }
    let r = proxy.consumer(&CONSUMER_A).exchange(&proxy.get());
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn method_not_configured_gets_405_with_allow() {
    let proxy = Proxy::start();
    let request = proxy.valid_request("DELETE", SEARCH, &[], b"");
    let r = assert_refused(
        &proxy,
        &CONSUMER_A,
        &request,
        405,
        "not-supported",
        "METHOD_NOT_ALLOWED",
    );
    let allow = r.field("allow").expect("an Allow field");
    for method in ["GET", "POST", "PUT"] {
        assert!(allow.contains(method), "Allow: {allow}");
    }
    assert!(!allow.contains("DELETE"), "Allow: {allow}");
}

#[test]
fn each_missing_header_is_named_in_the_refusal() {
    let proxy = Proxy::start();
    for name in [
        "Ssp-TraceID",
        "Ssp-From",
        "Ssp-To",
        "Ssp-InteractionID",
        "Authorization",
    ] {
        let request = proxy.get().remove(name);
        let token = format!("MISSING_OR_INVALID_HEADER_{name}");
        assert_refused(&proxy, &CONSUMER_A, &request, 400, "invalid", &token);
    }
}

#[test]
fn invalid_header_values_are_refused() {
    let proxy = Proxy::start();
    let cases = [
        ("Ssp-TraceID", "not-a-uuid"),
        ("Ssp-TraceID", "5b6f3f8e7a1d4c1e9d3a2f0b6c1e8a44"),
        ("Ssp-From", "20000000000a"),
        ("Ssp-From", "123456789012345678901"),
        ("Ssp-To", "provider"),
        ("Authorization", "Bearer not-a-jwt"),
        ("Authorization", "Bearer e30.e30.e30.e30"),
        ("Authorization", "Basic eDp5"),
    ];
    for (name, value) in cases {
        let request = proxy.get().set(name, value);
        let token = format!("MISSING_OR_INVALID_HEADER_{name}");
        assert_refused(&proxy, &CONSUMER_A, &request, 400, "invalid", &token);
    }
    let doubled = proxy.get().add("Ssp-From", CONSUMER_B.asid);
    assert_refused(
        &proxy,
        &CONSUMER_A,
        &doubled,
        400,
        "invalid",
        "MISSING_OR_INVALID_HEADER_Ssp-From",
    );
}

#[test]
fn jwt_may_be_absent_only_when_not_required() {
    let proxy = Proxy::with(Options {
        server: "require_jwt = false".into(),
        ..Options::default()
    });
    let malformed = proxy.get().set("Authorization", "Bearer x");
    let token = "MISSING_OR_INVALID_HEADER_Authorization";
    assert_refused(&proxy, &CONSUMER_A, &malformed, 400, "invalid", token);
    let r = proxy
        .consumer(&CONSUMER_A)
        .exchange(&proxy.get().remove("Authorization"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(proxy.seen()[0].field("authorization"), None);
}

#[test]
fn unknown_sender_is_refused() {
    let proxy = Proxy::start();
    let request = proxy.get().set("Ssp-From", "200000000777");
    let token = "ASID_CHECK_FAILED_MESSAGESENDER_200000000777";
    assert_refused(&proxy, &CONSUMER_A, &request, 403, "forbidden", token);
}

#[test]
fn sender_whose_certificate_cn_is_not_its_fqdn_is_refused() {
    let proxy = Proxy::start();
    // Consumer B's certificate claiming consumer A's ASID.
    let request = proxy.get().set("Ssp-From", CONSUMER_A.asid);
    let token = format!("ASID_CHECK_FAILED_MESSAGESENDER_{}", CONSUMER_A.asid);
    assert_refused(&proxy, &CONSUMER_B, &request, 403, "forbidden", &token);
}

#[test]
fn interaction_the_sender_does_not_have_is_refused() {
    let proxy = Proxy::start();
    let request = proxy
        .get()
        .set("Ssp-InteractionID", "urn:nhs:names:services:other");
    let token = format!("ASID_CHECK_FAILED_MESSAGESENDER_{}", CONSUMER_A.asid);
    assert_refused(&proxy, &CONSUMER_A, &request, 403, "forbidden", &token);
}

#[test]
fn unknown_receiver_is_refused() {
    let proxy = Proxy::start();
    let request = proxy.get().set("Ssp-To", "200000000998");
    let token = "PARTYKEY_INTERACTION_CHECK_FAILED_MESSAGERECEIVER_200000000998";
    assert_refused(&proxy, &CONSUMER_A, &request, 403, "forbidden", token);
}

#[test]
fn sender_without_an_agreement_is_refused() {
    let proxy = Proxy::start();
    let request = proxy.get().set("Ssp-From", CONSUMER_B.asid);
    let token = format!(
        "FOT_CHECK_FAILED_MESSAGESENDER_{}_MESSAGERECEIVER_{PROVIDER_ASID}",
        CONSUMER_B.asid
    );
    assert_refused(&proxy, &CONSUMER_B, &request, 403, "forbidden", &token);
}

#[test]
fn target_that_varies_from_the_registered_endpoint_is_refused() {
    let proxy = Proxy::start();
    let port = proxy.provider_addr.port();
    let other_port = if port == 1 { 2 } else { port - 1 };
    let targets = [
        format!("https://127.0.0.1:{port}{ROOT}{SEARCH}"),
        format!("https://localhost:{port}/Prescription-Exemptions/1.0.0search"),
        format!("https://localhost:{port}/Prescription-Exemptions/2.0.0{SEARCH}"),
        format!("https://localhost:{other_port}{ROOT}{SEARCH}"),
        format!("https://localhost{ROOT}{SEARCH}"),
        format!("https://localhost.evil:{port}{ROOT}{SEARCH}"),
    ];
    for url in targets {
        let request = proxy.get().target(&format!("/{url}"));
        let token = format!("ENDPOINT_{}_VARIES_FROM_TARGETURL_{url}", proxy.endpoint);
        assert_refused(&proxy, &CONSUMER_A, &request, 400, "invalid", &token);
    }
}

#[test]
fn added_default_port_varies_from_an_endpoint_without_one() {
    let proxy = Proxy::with(Options {
        endpoint: format!("https://localhost{ROOT}"),
        ..Options::default()
    });
    let url = format!("https://localhost:443{ROOT}{SEARCH}");
    let request = proxy.get().target(&format!("/{url}"));
    let token = format!("ENDPOINT_https://localhost{ROOT}_VARIES_FROM_TARGETURL_{url}");
    assert_refused(&proxy, &CONSUMER_A, &request, 400, "invalid", &token);
}

#[test]
fn body_over_max_body_bytes_is_refused_with_413() {
    let proxy = Proxy::with(Options {
        limits: "max_body_bytes = 1024".into(),
        ..Options::default()
    });
    let at_limit = proxy.valid_request("POST", "/search", &[], &[b'x'; 1024]);
    assert_eq!(proxy.consumer(&CONSUMER_A).exchange(&at_limit).status, 200);
    assert_eq!(proxy.seen().len(), 1);

    let over = proxy.valid_request("POST", "/search", &[], &[b'x'; 1025]);
    let mut consumer = proxy.consumer(&CONSUMER_A);
    let r = consumer.exchange(&over);
    assert_outcome(&r, 413, "too-costly", "PAYLOAD_TOO_LARGE", Some(TRACE_ID));
    assert_eq!(proxy.seen().len(), 1, "the oversized body reached the provider");
    // Its body was never read: the connection cannot carry another request.
    assert_eq!(r.field("connection"), Some("close"));
    consumer.assert_closed();
}

#[test]
fn chunked_body_over_max_body_bytes_is_refused_with_413() {
    let proxy = Proxy::with(Options {
        limits: "max_body_bytes = 1024".into(),
        ..Options::default()
    });
    let chunked_post = |payload: &[u8]| {
        proxy
            .valid_request("POST", "/search", &[("Transfer-Encoding", "chunked")], b"")
            .raw_body(&chunked(payload, 512))
    };
    let r = proxy.consumer(&CONSUMER_A).exchange(&chunked_post(&[b'x'; 1024]));
    assert_eq!(r.status, 200, "a chunked body at the limit: {}", r.text());
    assert_eq!(proxy.seen().len(), 1);

    // Small enough to arrive whole, and big enough to be cut off while it streams.
    for size in [4096, 512 * 1024] {
        let mut consumer = proxy.consumer(&CONSUMER_A);
        let r = consumer.exchange(&chunked_post(&vec![b'x'; size]));
        assert_outcome(&r, 413, "too-costly", "PAYLOAD_TOO_LARGE", Some(TRACE_ID));
        assert_eq!(
            proxy.seen().len(),
            1,
            "a {size}-byte body over the limit reached the provider"
        );
        if size > 4096 {
            // The rest of the body was never read: the connection cannot carry another request.
            assert_eq!(r.field("connection"), Some("close"));
            consumer.assert_closed();
        }
    }
}

#[test]
fn xml_is_answered_when_accept_prefers_it() {
    let proxy = Proxy::start();
    let request = proxy
        .get()
        .set("Ssp-From", "200000000777")
        .add("Accept", "application/fhir+xml");
    let r = proxy.consumer(&CONSUMER_A).exchange(&request);
    assert_eq!(r.status, 403);
    assert_eq!(r.field("content-type"), Some("application/fhir+xml"));
    assert_eq!(r.field("ssp-traceid"), Some(TRACE_ID));
    let xml = r.text();
    assert!(
        xml.starts_with("<OperationOutcome xmlns=\"http://hl7.org/fhir\">"),
        "{xml}"
    );
    assert!(xml.contains("<code value=\"forbidden\"/>"), "{xml}");
    let token = "ASID_CHECK_FAILED_MESSAGESENDER_200000000777";
    assert!(
        xml.contains(&format!("<code value=\"403\"/><display value=\"{token}\"/>")),
        "{xml}"
    );
    assert!(
        xml.contains(&format!("<diagnostics value=\"{token}\"/>")),
        "{xml}"
    );
    proxy.assert_nothing_forwarded("xml");
}

#[test]
fn refused_get_leaves_the_connection_usable() {
    let proxy = Proxy::start();
    let mut consumer = proxy.consumer(&CONSUMER_A);
    let r = consumer.exchange(&proxy.get().remove("Ssp-To"));
    assert_outcome(
        &r,
        400,
        "invalid",
        "MISSING_OR_INVALID_HEADER_Ssp-To",
        Some(TRACE_ID),
    );
    assert_eq!(r.field("connection"), None);
    proxy.assert_nothing_forwarded("missing Ssp-To");
    let r = consumer.exchange(&proxy.get());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(proxy.seen().len(), 1);
}

#[test]
fn pipelined_request_after_a_refusal_is_still_served() {
    let proxy = Proxy::start();
    let mut consumer = proxy.consumer(&CONSUMER_A);
    let mut both = proxy.get().remove("Ssp-To").bytes();
    both.extend(proxy.valid_request("GET", "/search?second", &[], b"").bytes());
    consumer.send_raw(&both).unwrap();
    let r = consumer.read_response().unwrap();
    assert_outcome(
        &r,
        400,
        "invalid",
        "MISSING_OR_INVALID_HEADER_Ssp-To",
        Some(TRACE_ID),
    );
    let r = consumer.read_response().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let targets: Vec<String> = proxy.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(targets, [format!("{ROOT}/search?second")]);
}

/// SPEC section 4: the checks run in the table's order and the first failure answers.
#[test]
fn checks_run_in_the_published_order() {
    let proxy = Proxy::start();
    let bad_target = format!("/http://localhost:{}{ROOT}{SEARCH}", proxy.provider_addr.port());
    let cases = [
        // Row 5 before row 6.
        (
            proxy
                .valid_request("DELETE", SEARCH, &[], b"")
                .target(&bad_target),
            400,
            "INVALID_TARGET_URL".to_string(),
        ),
        // Row 6 before row 7.
        (
            proxy.valid_request("DELETE", SEARCH, &[], b"").remove("Ssp-From"),
            405,
            "METHOD_NOT_ALLOWED".into(),
        ),
        // Row 7 before row 9.
        (
            proxy.get().set("Ssp-From", "200000000777").remove("Ssp-To"),
            400,
            "MISSING_OR_INVALID_HEADER_Ssp-To".into(),
        ),
        // Row 9 before row 10.
        (
            proxy
                .get()
                .set("Ssp-From", "200000000777")
                .set("Ssp-To", "200000000998"),
            403,
            "ASID_CHECK_FAILED_MESSAGESENDER_200000000777".into(),
        ),
        // Row 12 before row 13.
        (
            proxy
                .valid_request("POST", "/search", &[], b"")
                .target(&format!(
                    "/https://127.0.0.1:{}{ROOT}/search",
                    proxy.provider_addr.port()
                ))
                .add("Content-Length", "99999999999")
                .add("Connection", "close"),
            400,
            format!(
                "ENDPOINT_{}_VARIES_FROM_TARGETURL_https://127.0.0.1:{}{ROOT}/search",
                proxy.endpoint,
                proxy.provider_addr.port()
            ),
        ),
    ];
    for (request, status, token) in cases {
        let r = proxy.consumer(&CONSUMER_A).exchange(&request);
        assert_eq!(r.status, status, "{token}: {}", r.text());
        assert_eq!(r.json()["issue"][0]["diagnostics"], token.as_str());
        proxy.assert_nothing_forwarded(&token);
    }
}

/// Issue 24 item 3a: a checked field given twice is refused, whichever it is: the proxy would
/// check and audit one value and the provider might read the other, or both as a list.
#[test]
fn each_checked_header_given_twice_is_refused() {
    let proxy = Proxy::start();
    let valid = proxy.get();
    let others = [
        ("Ssp-TraceID", "6b6f3f8e-7a1d-4c1e-9d3a-2f0b6c1e8a44"),
        ("Ssp-From", CONSUMER_B.asid),
        ("Ssp-To", "200000000998"),
        ("Ssp-InteractionID", "urn:nhs:names:services:other"),
        ("Authorization", "Bearer eyJhbGciOiJub25lIn0.eyJpc3MiOiJ5In0."),
    ];
    for (name, other) in others {
        let token = format!("MISSING_OR_INVALID_HEADER_{name}");
        let (_, same) = valid.fields.iter().find(|(n, _)| n == name).unwrap();
        // The same value again is still two fields.
        for value in [other, same.as_str()] {
            for spelling in [name.to_string(), name.to_ascii_lowercase()] {
                let request = valid.clone().add(&spelling, value);
                assert_refused(&proxy, &CONSUMER_A, &request, 400, "invalid", &token);
            }
        }
    }
}

/// Issue 24 item 9: segments that common provider stacks resolve as `..` (Tomcat and Jetty
/// path parameters, IIS `%u` escapes, fullwidth dots) are refused as `..` is, in both forms
/// of the target; ordinary segments with dots and parameters still pass.
#[test]
fn segments_that_providers_resolve_as_dot_dot_are_refused() {
    let proxy = Proxy::start();
    let port = proxy.provider_addr.port();
    let raw = |path: &str| format!("/https://localhost:{port}{ROOT}{path}");
    let encoded =
        |path: &str| format!("/https%3A%2F%2Flocalhost%3A{port}%2FPrescription-Exemptions%2F1.0.0{path}");
    let refused = [
        raw("/x/..;/admin"),
        raw("/x/%2e%2e;/admin"),
        raw("/x/..;jsessionid=1/admin"),
        raw("/x/.;/search"),
        raw("/x/%u002e%u002e/admin"),
        raw("/search%u0041"),
        raw("/x/%EF%BC%8E%EF%BC%8E/admin"),
        raw("/x/\u{ff0e}\u{ff0e}/admin"),
        raw("/x/..;"),
        encoded("%2Fx%2F..%3B%2Fadmin"),
        encoded("%2Fx%2F%252e%252e%3Bjsessionid%3D1%2Fadmin"),
        encoded("%2Fx%2F%25EF%25BC%258E%25EF%25BC%258E%2Fadmin"),
    ];
    for target in refused {
        let r = proxy.consumer(&CONSUMER_A).exchange(&proxy.get().target(&target));
        assert_outcome(&r, 400, "invalid", "INVALID_TARGET_URL", Some(TRACE_ID));
        proxy.assert_nothing_forwarded(&target);
    }
    for path in ["/search;v=1?patient=9000000009", "/...;/search"] {
        let r = proxy
            .consumer(&CONSUMER_A)
            .exchange(&proxy.get().target(&raw(path)));
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    let seen: Vec<String> = proxy.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(
        seen,
        [
            format!("{ROOT}/search;v=1?patient=9000000009"),
            format!("{ROOT}/...;/search")
        ]
    );
}

/// Issue 24 item 10: the percent-encoded form of the target, decoded once, carries nothing to
/// the provider's request line that the raw form may not, and neither form carries bytes
/// outside RFC 3986 (`|` in the query excepted: FHIR token searches send it unescaped).
#[test]
fn both_forms_of_the_target_are_held_to_the_same_characters() {
    let proxy = Proxy::start();
    let port = proxy.provider_addr.port();
    let raw = |path: &str| format!("/https://localhost:{port}{ROOT}{path}");
    let encoded = |path: &str| {
        let escaped: String = path.bytes().map(|b| format!("%{b:02X}")).collect();
        format!("/https%3A%2F%2Flocalhost%3A{port}%2FPrescription-Exemptions%2F1.0.0{escaped}")
    };
    let refused = [
        "/search\"",
        "/se<a>rch",
        "/s{x}",
        "/s|x",
        "/s^x",
        "/s`x",
        "/s[x]",
        "/s\u{e9}",
        "/search?patient=\"9000000009\"",
        "/search?p=<script>",
        "/search?p={x}",
        "/search?p=^",
        "/search?p=`",
        "/search?p=\u{e9}",
        "/search?p=\u{a0}",
    ];
    for path in refused {
        for target in [raw(path), encoded(path)] {
            let r = proxy.consumer(&CONSUMER_A).exchange(&proxy.get().target(&target));
            assert_outcome(&r, 400, "invalid", "INVALID_TARGET_URL", Some(TRACE_ID));
            proxy.assert_nothing_forwarded(&target);
        }
    }
    let path = "/search?identifier=https://fhir.nhs.uk/Id/nhs-number|9000000009";
    for target in [raw(path), encoded(path)] {
        let r = proxy.consumer(&CONSUMER_A).exchange(&proxy.get().target(&target));
        assert_eq!(r.status, 200, "{target}: {}", r.text());
    }
    let seen: Vec<String> = proxy.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(seen, [format!("{ROOT}{path}"), format!("{ROOT}{path}")]);
}

/// Issue 24 item 11: CGI, WSGI and PHP stacks read `_` in a field name as `-`, so a field
/// named as a checked one with `_` for `-` is refused, beside the checked one or alone.
#[test]
fn underscore_lookalikes_of_checked_headers_are_refused() {
    let proxy = Proxy::start();
    let cases = [
        (
            "Ssp-TraceID",
            "Ssp_TraceID",
            "6b6f3f8e-7a1d-4c1e-9d3a-2f0b6c1e8a44",
        ),
        ("Ssp-From", "Ssp_From", CONSUMER_B.asid),
        ("Ssp-To", "ssp_to", "200000000998"),
        (
            "Ssp-InteractionID",
            "SSP_INTERACTIONID",
            "urn:nhs:names:services:other",
        ),
    ];
    for (name, lookalike, value) in cases {
        let token = format!("MISSING_OR_INVALID_HEADER_{name}");
        let beside = proxy.get().add(lookalike, value);
        assert_refused(&proxy, &CONSUMER_A, &beside, 400, "invalid", &token);
        let instead = proxy.get().remove(name).add(lookalike, value);
        assert_refused(&proxy, &CONSUMER_A, &instead, 400, "invalid", &token);
    }
    // An underscore elsewhere is an ordinary field, forwarded.
    let r = proxy
        .consumer(&CONSUMER_A)
        .exchange(&proxy.get().add("X_Ssp_From", "1"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(proxy.seen()[0].field("x_ssp_from"), Some("1"));
}

/// The Spine SSP implementation guide: "HSTS SHALL be employed". The proxy's own answers carry
/// `Strict-Transport-Security` (a year by default, `[server] hsts`); a provider's answers are
/// relayed as the provider made them.
#[test]
fn our_own_answers_carry_hsts_and_the_providers_are_relayed_as_they_are() {
    let proxy = Proxy::start();
    let refused = proxy
        .consumer(&CONSUMER_A)
        .exchange(&proxy.get().set("Ssp-To", "200000000777"));
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.field("strict-transport-security"),
        Some("max-age=31536000")
    );
    let relayed = proxy.consumer(&CONSUMER_A).exchange(&proxy.get());
    assert_eq!(relayed.status, 200);
    assert_eq!(relayed.field("strict-transport-security"), None);

    let configured = Proxy::with(Options {
        server: "hsts = \"max-age=600; includeSubDomains\"".into(),
        ..Options::default()
    });
    let r = configured
        .consumer(&CONSUMER_A)
        .exchange(&configured.get().set("Ssp-To", "200000000777"));
    assert_eq!(
        r.field("strict-transport-security"),
        Some("max-age=600; includeSubDomains")
    );
    let off = Proxy::with(Options {
        server: "hsts = \"\"".into(),
        ..Options::default()
    });
    let r = off
        .consumer(&CONSUMER_A)
        .exchange(&off.get().set("Ssp-To", "200000000777"));
    assert_eq!((r.status, r.field("strict-transport-security")), (403, None));
}
