//! SPEC section 4 row 8: the certificate is re-checked on every request, against the CRLs in
//! force and the clock, so a certificate revoked or expired while its connection is open (or
//! its TLS session resumable) is refused on its next request, and other consumers'
//! connections carry on.

mod common;

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
