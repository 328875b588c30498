//! SPEC section 4 row 1 and section 1's TLS facts: who may complete a handshake, with which
//! protocol versions and suites. A refused handshake never reaches the provider.

mod common;

use std::process::Command;
use std::sync::Arc;

use common::*;
use rustls::CipherSuite;
use rustls::version::{TLS12, TLS13};

/// A request from `who` with its own ASID as `Ssp-From`, so that only the certificate is wrong.
fn request_from(proxy: &Proxy, who: &Who) -> Request {
    proxy.get().set("Ssp-From", who.asid)
}

#[track_caller]
fn assert_allowed(proxy: &Proxy, who: &Who) {
    let r = proxy.consumer(who).exchange(&request_from(proxy, who));
    assert_eq!(r.status, 200, "{}: {}", who.file, r.text());
}

/// The handshake fails with a TLS alert whose name contains `alert` ("" for any).
#[track_caller]
fn assert_refused(proxy: &Proxy, who: &Who, alert: &str) {
    let e = proxy
        .consumer(who)
        .assert_refused_at_handshake(&request_from(proxy, who));
    assert!(
        e.to_string().contains(alert),
        "{}: expected alert {alert}, got {e}",
        who.file
    );
    proxy.assert_nothing_forwarded(who.file);
}

#[test]
fn consumer_without_a_certificate_is_refused_at_handshake() {
    let proxy = Proxy::start();
    let e =
        Consumer::connect(proxy.addr, anonymous_client_config()).assert_refused_at_handshake(&proxy.get());
    assert!(e.to_string().contains("CertificateRequired"), "{e}");
    proxy.assert_nothing_forwarded("no certificate");
}

#[test]
fn certificate_from_another_root_is_refused_at_handshake() {
    assert_refused(&Proxy::start(), &OTHER_CA, "UnknownCA");
}

#[test]
fn revoked_certificate_is_refused_at_handshake() {
    assert_refused(&Proxy::start(), &REVOKED, "CertificateRevoked");
}

#[test]
fn expired_certificate_is_refused_at_handshake() {
    assert_refused(&Proxy::start(), &EXPIRED, "CertificateExpired");
}

#[test]
fn certificate_without_the_required_ou_is_refused_at_handshake() {
    assert_refused(&Proxy::start(), &WRONG_OU, "");
}

#[test]
fn ecdsa_and_rsa_4096_consumers_are_accepted() {
    let proxy = Proxy::start();
    assert_allowed(&proxy, &ECDSA);
    assert_allowed(&proxy, &RSA4096);
    let seen = proxy.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].field("ssp-from"), Some(ECDSA.asid));
    assert_eq!(seen[1].field("ssp-from"), Some(RSA4096.asid));
}

#[test]
fn stale_crl_refuses_every_consumer_when_crl_expired_is_deny() {
    let proxy = Proxy::with(Options {
        crl: vec!["level1c-expired.crl"],
        server: "crl_expired = \"deny\"".into(),
        ..Options::default()
    });
    assert_refused(&proxy, &CONSUMER_A, "");
}

#[test]
fn stale_crl_is_tolerated_when_crl_expired_is_allow() {
    let proxy = Proxy::with(Options {
        crl: vec!["level1c-expired.crl"],
        server: "crl_expired = \"allow\"".into(),
        ..Options::default()
    });
    // The stale CRL still revokes what it lists (consumer-revoked is on it too).
    assert_refused(&proxy, &REVOKED, "CertificateRevoked");
    assert_allowed(&proxy, &CONSUMER_A);
}

#[test]
fn stale_crl_is_refused_by_default() {
    let proxy = Proxy::with(Options {
        crl: vec!["level1c-expired.crl"],
        ..Options::default()
    });
    assert_refused(&proxy, &CONSUMER_A, "");
}

fn ring_with_suites(keep: &[CipherSuite]) -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.retain(|s| keep.contains(&s.suite()));
    assert!(!provider.cipher_suites.is_empty());
    Arc::new(provider)
}

#[test]
fn tls_1_2_and_1_3_are_both_accepted() {
    let proxy = Proxy::start();
    let ring = || Arc::new(rustls::crypto::ring::default_provider());
    for (version, want) in [
        (&TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let config = client_config_with(&CONSUMER_A, ring(), &[version]);
        let mut consumer = Consumer::connect(proxy.addr, config);
        let r = consumer.exchange(&proxy.get());
        assert_eq!(r.status, 200, "{want:?}: {}", r.text());
        assert_eq!(consumer.tls.conn.protocol_version(), Some(want));
    }
    assert_eq!(proxy.seen().len(), 2);
}

#[test]
fn tls_1_2_with_ecdhe_aes_gcm_is_accepted() {
    let proxy = Proxy::start();
    let suites = [
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ];
    for suite in suites {
        let config = client_config_with(&CONSUMER_A, ring_with_suites(&[suite]), &[&TLS12]);
        let mut consumer = Consumer::connect(proxy.addr, config);
        assert_eq!(consumer.exchange(&proxy.get()).status, 200, "{suite:?}");
        assert_eq!(
            consumer.tls.conn.negotiated_cipher_suite().map(|s| s.suite()),
            Some(suite)
        );
    }
}

#[test]
fn tls_1_2_with_only_chacha20_is_refused() {
    let proxy = Proxy::start();
    let chacha = ring_with_suites(&[
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ]);
    let config = client_config_with(&CONSUMER_A, chacha, &[&TLS12]);
    let e = Consumer::connect(proxy.addr, config).assert_refused_at_handshake(&proxy.get());
    assert!(e.to_string().contains("HandshakeFailure"), "{e}");
    proxy.assert_nothing_forwarded("TLS 1.2 CHACHA20");
}

/// rustls has no CBC suites, so curl (OpenSSL) offers one. The same command with an AES-GCM
/// suite succeeds first, so the refusal is the suite's and not the command's.
#[test]
fn tls_1_2_with_only_cbc_suites_is_refused() {
    let Some(curl) = curl() else {
        eprintln!("note: curl not on PATH; skipping the CBC suite test");
        return;
    };
    let proxy = Proxy::start();
    let url = format!("https://localhost:{}{}", proxy.addr.port(), proxy.target(SEARCH));
    let run = |ciphers: &str| {
        let mut cmd = Command::new(&curl);
        cmd.args(["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["--tlsv1.2", "--tls-max", "1.2", "--ciphers", ciphers])
            .arg("--cacert")
            .arg(pki("nhs-ca.pem"))
            .arg("--cert")
            .arg(pki("consumer-a.pem"))
            .arg("--key")
            .arg(pki("consumer-a.key"));
        for (n, v) in &proxy.get().fields {
            if n != "Host" {
                cmd.arg("-H").arg(format!("{n}: {v}"));
            }
        }
        cmd.arg(&url).output().expect("run curl")
    };
    let gcm = run("ECDHE-RSA-AES128-GCM-SHA256");
    assert_eq!(
        String::from_utf8_lossy(&gcm.stdout),
        "200",
        "control request with AES-GCM failed: {}",
        String::from_utf8_lossy(&gcm.stderr)
    );
    assert_eq!(proxy.seen().len(), 1);
    for cbc in ["ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA384"] {
        let out = run(cbc);
        // 35: curl's "SSL connect error", a failed handshake.
        assert_eq!(
            out.status.code(),
            Some(35),
            "{cbc}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_ne!(String::from_utf8_lossy(&out.stdout), "200", "{cbc}");
    }
    assert_eq!(proxy.seen().len(), 1, "a CBC request reached the provider");
}

#[test]
fn chain_check_refuses_when_an_issuer_has_no_crl() {
    // (Name kept: SECURITY.md cites it.) Level 1C has a CRL; the root that issued Level 1C
    // does not: every consumer's status would be unknown, which is denied. That refused
    // everyone after a green `ssp check` (issue 23); now the configuration does not load.
    let setup = Setup::new(&Options {
        server: "crl_check = \"chain\"".into(),
        ..Options::default()
    });
    let config = ssp::config::load(&setup.config).unwrap_or_else(|e| panic!("{e}"));
    let Err(error) = ssp::proxy::Shared::load(config) else {
        panic!("a chain check without the root's CRL loaded");
    };
    assert!(
        error.to_string().contains(
            "no CRL in `crl` is issued by the trust anchor \"CN=SSP Test NHS Root Authority, O=nhs\""
        ),
        "{error}"
    );
}

#[test]
fn chain_check_with_every_crl_loaded_admits_and_revokes() {
    let proxy = Proxy::with(Options {
        server: "crl_check = \"chain\"".into(),
        crl: vec!["level1c.crl", "root.crl.pem"],
        ..Options::default()
    });
    assert_refused(&proxy, &REVOKED, "CertificateRevoked");
    assert_allowed(&proxy, &CONSUMER_A);
}

#[test]
fn leaf_whose_issuer_has_no_crl_is_refused() {
    let proxy = Proxy::with(Options {
        crl: vec!["root.crl"],
        ..Options::default()
    });
    assert_refused(&proxy, &CONSUMER_A, "");
}

#[test]
fn empty_crl_list_disables_revocation_checks() {
    let proxy = Proxy::with(Options {
        crl: vec![],
        ..Options::default()
    });
    assert_allowed(&proxy, &REVOKED);
}

#[test]
fn client_subject_is_taken_from_the_configuration() {
    let proxy = Proxy::with(Options {
        server: "client_subject = { O = \"nhs\", OU = \"Staff\" }".into(),
        ..Options::default()
    });
    assert_allowed(&proxy, &WRONG_OU);
    proxy.seen.lock().unwrap().clear();
    assert_refused(&proxy, &CONSUMER_A, "");
}

/// A resumed session skips certificate verification, so the identity must survive in the
/// session: resumed consumers are still known by their certificate.
#[test]
fn resumed_sessions_keep_the_consumer_identity() {
    let proxy = Proxy::start();
    let ring = || Arc::new(rustls::crypto::ring::default_provider());
    for version in [&TLS12, &TLS13] {
        let config = client_config_with(&CONSUMER_A, ring(), &[version]);
        let mut first = Consumer::connect(proxy.addr, config.clone());
        assert_eq!(first.exchange(&proxy.get()).status, 200);
        let mut second = Consumer::connect(proxy.addr, config.clone());
        let r = second.exchange(&proxy.get());
        assert_eq!(
            second.tls.conn.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed),
            "{version:?}"
        );
        assert_eq!(r.status, 200, "{version:?}: {}", r.text());
        // And the allowlist still sees the certificate's CN on the resumed connection.
        let r = second.exchange(&proxy.get().set("Ssp-From", CONSUMER_B.asid));
        let token = format!("ASID_CHECK_FAILED_MESSAGESENDER_{}", CONSUMER_B.asid);
        assert_outcome(&r, 403, "forbidden", &token, Some(TRACE_ID));
    }
    assert_eq!(proxy.seen().len(), 4);
}

/// SPEC section 1: "its CN equals the FQDN registered for the `Ssp-From` ASID". A subject with
/// two CNs names two hosts; whichever one the allowlist compared would be the proxy's choice,
/// not the CA's, so such a certificate is refused at the handshake, as `client_subject` is.
#[test]
fn a_subject_with_two_cns_is_refused_at_handshake_whichever_cn_is_asked_for() {
    use common::mint::{self, unix_now};
    let proxy = Proxy::start();
    let valid = (unix_now() - 60, unix_now() + 3600);
    // The same kind of certificate with one CN gets in: only the second CN is wrong.
    let single = mint::consumer(&[CONSUMER_A.fqdn], valid.0, valid.1);
    let r = Consumer::connect(proxy.addr, single.client_config(&[&TLS13])).exchange(&proxy.get());
    assert_eq!(r.status, 200, "one CN: {}", r.text());

    for cns in [
        [CONSUMER_B.fqdn, CONSUMER_A.fqdn],
        [CONSUMER_A.fqdn, CONSUMER_B.fqdn],
    ] {
        let two = mint::consumer(&cns, valid.0, valid.1);
        for who in [&CONSUMER_A, &CONSUMER_B] {
            Consumer::connect(proxy.addr, two.client_config(&[&TLS13]))
                .assert_refused_at_handshake(&request_from(&proxy, who));
        }
    }
    assert_eq!(proxy.seen().len(), 1, "only the one-CN request was forwarded");
}
