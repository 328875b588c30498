//! SPEC section 4 row 8: the certificate is re-checked against the CRLs in force on every
//! request, so a certificate revoked while its connection is open is refused on its next
//! request, and other consumers' connections carry on.

mod common;

use common::*;

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
