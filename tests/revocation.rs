//! SPEC section 4 row 8: the certificate is re-checked on every request, against the CRLs in
//! force and the clock, so a certificate revoked or expired while its connection is open (or
//! its TLS session resumable) is refused on its next request, and other consumers'
//! connections carry on.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::mint::{self, unix_now};
use common::*;
use rustls::HandshakeKind;
use rustls::client::Resumption;
use rustls::client::Tls12Resumption;
use rustls::version::{TLS12, TLS13};

/// No revocation at first, so the (later revoked) consumer gets in.
fn without_crls() -> Options {
    Options {
        crl: vec![],
        ..Options::default()
    }
}

#[test]
fn certificate_revoked_while_connected_is_refused_on_its_next_request() {
    let proxy = Proxy::with(without_crls());
    let mut revoked = proxy.consumer(&REVOKED);
    let request = proxy.get().set("Ssp-From", REVOKED.asid);
    assert_eq!(
        revoked.exchange(&request).status,
        200,
        "admitted while no CRL is loaded"
    );

    proxy.reload(&Options::default());

    let r = revoked.exchange(&request);
    assert_outcome(&r, 403, "forbidden", "CERTIFICATE_REVOKED", Some(TRACE_ID));
    revoked.assert_closed();
    assert_eq!(
        proxy.seen().len(),
        1,
        "the refused request must not reach the provider"
    );
}

#[test]
fn connections_of_good_consumers_survive_a_crl_change() {
    let proxy = Proxy::with(without_crls());
    let mut good = proxy.consumer(&CONSUMER_A);
    assert_eq!(good.exchange(&proxy.get()).status, 200);

    proxy.reload(&Options::default());

    for _ in 0..3 {
        assert_eq!(
            good.exchange(&proxy.get()).status,
            200,
            "same connection after the change"
        );
    }
    assert_eq!(proxy.seen().len(), 4);
}

#[test]
fn new_handshakes_use_the_new_crls() {
    let proxy = Proxy::with(without_crls());
    assert_eq!(
        proxy
            .consumer(&REVOKED)
            .exchange(&proxy.get().set("Ssp-From", REVOKED.asid))
            .status,
        200
    );

    proxy.reload(&Options::default());

    let request = proxy.get().set("Ssp-From", REVOKED.asid);
    let e = proxy.consumer(&REVOKED).assert_refused_at_handshake(&request);
    assert!(e.to_string().contains("CertificateRevoked"), "{e}");
    assert_eq!(proxy.seen().len(), 1);
}

/// A certificate that expires while its connection is open is refused on the connection's
/// next request, and so is every session resumed from it (TLS 1.3 ticket, TLS 1.2 session id
/// or ticket): a resumed handshake verifies nothing, so without the per-request date check an
/// expired certificate would be served for as long as each resumption hands out a new ticket.
#[test]
fn certificate_expired_while_connected_or_resumable_is_refused_on_its_next_request() {
    let proxy = Proxy::start();
    let not_after = unix_now() + 3;
    let cert = mint::consumer(&[CONSUMER_A.fqdn], unix_now() - 60, not_after);
    let tls12_session_id = {
        let mut config = (*cert.client_config(&[&TLS12])).clone();
        config.resumption =
            Resumption::in_memory_sessions(16).tls12_resumption(Tls12Resumption::SessionIdOnly);
        Arc::new(config)
    };
    let configs = [
        ("TLS 1.3 ticket", cert.client_config(&[&TLS13])),
        ("TLS 1.2 ticket", cert.client_config(&[&TLS12])),
        ("TLS 1.2 session id", tls12_session_id),
    ];
    let mut open: Vec<Consumer> = configs
        .iter()
        .map(|(what, config)| {
            let mut c = Consumer::connect(proxy.addr, config.clone());
            let r = c.exchange(&proxy.get());
            assert_eq!(r.status, 200, "{what}, in date: {}", r.text());
            c
        })
        .collect();
    assert!(
        unix_now() <= not_after,
        "the test machine took too long to get here"
    );
    while unix_now() <= not_after {
        std::thread::sleep(Duration::from_millis(100));
    }

    for c in &mut open {
        let r = c.exchange(&proxy.get());
        assert_outcome(&r, 403, "forbidden", "CERTIFICATE_EXPIRED", Some(TRACE_ID));
        c.assert_closed();
    }
    for (what, config) in &configs {
        let mut c = Consumer::connect(proxy.addr, config.clone());
        let r = c.exchange(&proxy.get());
        assert_eq!(
            c.tls.conn.handshake_kind(),
            Some(HandshakeKind::Resumed),
            "{what}: the session resumed"
        );
        assert_outcome(&r, 403, "forbidden", "CERTIFICATE_EXPIRED", Some(TRACE_ID));
        c.assert_closed();
    }
    // A full handshake is refused outright (row 1).
    let e = Consumer::connect(proxy.addr, cert.client_config(&[&TLS13]))
        .assert_refused_at_handshake(&proxy.get());
    assert!(e.to_string().contains("CertificateExpired"), "{e}");
    assert_eq!(
        proxy.seen().len(),
        3,
        "only the requests made in date were forwarded"
    );
}

// ---------------------------------------------------------------------------------------------
// `crl_check = "chain"`, and reloads that change who is trusted: an open connection is judged
// again, on its next request, against the configuration in force.

/// Chain checks with `client_ca` holding only the root: consumers send their leaf and Level
/// 1C, and both are looked up, Level 1C in the root's CRL.
fn chain_checked(root_crl: &'static str) -> Options {
    Options {
        server: "crl_check = \"chain\"".into(),
        crl: vec!["level1c.crl", root_crl],
        ..Options::default()
    }
}

/// A root CRL revoking Level 1C, written to `dir`, as a `crl` entry for `Options`.
fn root_crl_revoking_level1c(dir: &TempDir) -> (&'static str, std::path::PathBuf) {
    let path = dir.path().join("root-revoking-level1c.crl");
    let now = unix_now();
    let crl = mint::crl(
        &mint::root(),
        now - 60,
        now + 86_400,
        2,
        &[&mint::serial_of("level1c")],
    );
    std::fs::write(&path, crl).unwrap();
    let entry = format!("{{ path = \"{}\" }}", path.display());
    (Box::leak(entry.into_boxed_str()), path)
}

/// Puts CRLs in force as the `ssp-crl` thread does after a fetch: same configuration, same
/// session cache and ticket keys, so sessions made before stay resumable.
fn refresh_crls(proxy: &Proxy, paths: &[&Path]) {
    let current = proxy.runtime.current();
    let crls = paths
        .iter()
        .map(|p| {
            let source = ssp::config::CrlSource::file(p.to_path_buf());
            ssp::tls::crl::parse(&source, &std::fs::read(p).unwrap()).unwrap()
        })
        .collect();
    let next = current.with_crls(crls).unwrap();
    assert!(proxy.runtime.replace_if_current(&current, next));
}

fn tls13(who: &Who) -> Arc<rustls::ClientConfig> {
    client_config_with(who, Arc::new(rustls::crypto::ring::default_provider()), &[&TLS13])
}

#[test]
fn intermediate_revoked_by_a_reloaded_crl_is_refused_on_open_connections_under_chain_check() {
    let proxy = Proxy::with(chain_checked("root.crl.pem"));
    let mut a = proxy.consumer(&CONSUMER_A);
    assert_eq!(a.exchange(&proxy.get()).status, 200);

    let dir = TempDir::new("root-crl");
    let (revoking, _) = root_crl_revoking_level1c(&dir);
    proxy.reload(&chain_checked(revoking));

    let r = a.exchange(&proxy.get());
    assert_outcome(&r, 403, "forbidden", "CERTIFICATE_REVOKED", Some(TRACE_ID));
    a.assert_closed();
    let e = proxy
        .consumer(&CONSUMER_A)
        .assert_refused_at_handshake(&proxy.get());
    assert!(e.to_string().contains("CertificateRevoked"), "{e}");
    assert_eq!(proxy.seen().len(), 1);
}

/// A CRL refresh keeps the ticket keys, so a session begun before it resumes after it:
/// resumed connections are judged again too.
#[test]
fn intermediate_revoked_by_a_crl_refresh_is_refused_on_open_and_resumed_connections() {
    let proxy = Proxy::with(chain_checked("root.crl.pem"));
    let config = tls13(&CONSUMER_A);
    let mut full = Consumer::connect(proxy.addr, config.clone());
    assert_eq!(full.exchange(&proxy.get()).status, 200);
    let mut resumed = Consumer::connect(proxy.addr, config.clone());
    assert_eq!(resumed.exchange(&proxy.get()).status, 200);
    assert_eq!(resumed.tls.conn.handshake_kind(), Some(HandshakeKind::Resumed));

    let dir = TempDir::new("root-crl");
    let (_, revoking) = root_crl_revoking_level1c(&dir);
    refresh_crls(&proxy, &[&pki("level1c.crl"), &revoking]);

    for c in [&mut full, &mut resumed] {
        let r = c.exchange(&proxy.get());
        assert_outcome(&r, 403, "forbidden", "CERTIFICATE_REVOKED", Some(TRACE_ID));
        c.assert_closed();
    }
    let mut again = Consumer::connect(proxy.addr, config);
    let r = again.exchange(&proxy.get());
    assert_eq!(again.tls.conn.handshake_kind(), Some(HandshakeKind::Resumed));
    assert_outcome(&r, 403, "forbidden", "CERTIFICATE_REVOKED", Some(TRACE_ID));
    again.assert_closed();
    let e = proxy
        .consumer(&CONSUMER_A)
        .assert_refused_at_handshake(&proxy.get());
    assert!(e.to_string().contains("CertificateRevoked"), "{e}");
    assert_eq!(proxy.seen().len(), 2);
}

#[test]
fn trust_anchor_withdrawn_by_a_reload_refuses_open_connections_under_it() {
    let proxy = Proxy::start();
    let mut a = proxy.consumer(&CONSUMER_A);
    assert_eq!(a.exchange(&proxy.get()).status, 200);

    // Only Other Root is trusted now (no CRLs: it has none).
    proxy.reload(&Options {
        client_ca: "other-root.pem",
        crl: vec![],
        ..Options::default()
    });

    let r = a.exchange(&proxy.get());
    assert_outcome(&r, 403, "forbidden", "CERTIFICATE_REVOKED", Some(TRACE_ID));
    a.assert_closed();
    proxy
        .consumer(&CONSUMER_A)
        .assert_refused_at_handshake(&proxy.get());
    // The reload took: a certificate from the new anchor gets in.
    assert_eq!(proxy.consumer(&OTHER_CA).exchange(&proxy.get()).status, 200);
    assert_eq!(proxy.seen().len(), 2);
}

#[test]
fn client_subject_tightened_by_a_reload_refuses_open_connections_it_excludes() {
    let proxy = Proxy::start();
    let mut a = proxy.consumer(&CONSUMER_A);
    let mut b = proxy.consumer(&CONSUMER_B);
    assert_eq!(a.exchange(&proxy.get()).status, 200);
    let from_b = proxy.get().set("Ssp-From", CONSUMER_B.asid);
    // B has no agreement with the provider; what matters is that it is answered, not refused.
    let token = format!(
        "FOT_CHECK_FAILED_MESSAGESENDER_{}_MESSAGERECEIVER_{PROVIDER_ASID}",
        CONSUMER_B.asid
    );
    assert_outcome(&b.exchange(&from_b), 403, "forbidden", &token, Some(TRACE_ID));

    // Consumer A's subject is CN=dispenser-a..., OU=Devices, O=nhs; B's is alike.
    proxy.reload(&Options {
        server: "client_subject = { O = \"nhs\", OU = \"Devices\", CN = \"dispenser-b.example.nhs.uk\" }"
            .into(),
        ..Options::default()
    });

    let r = a.exchange(&proxy.get());
    assert_outcome(&r, 403, "forbidden", "CERTIFICATE_REVOKED", Some(TRACE_ID));
    a.assert_closed();
    proxy
        .consumer(&CONSUMER_A)
        .assert_refused_at_handshake(&proxy.get());
    // B still satisfies it, on its open connection and on a new one.
    assert_outcome(&b.exchange(&from_b), 403, "forbidden", &token, Some(TRACE_ID));
    assert_outcome(
        &proxy.consumer(&CONSUMER_B).exchange(&from_b),
        403,
        "forbidden",
        &token,
        Some(TRACE_ID),
    );
    assert_eq!(proxy.seen().len(), 1);
}
