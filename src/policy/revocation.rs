//! Row 8: the consumer's certificate is checked on every request (in date, then looked up in
//! the CRLs), because a resumed TLS session is not re-verified, a connection can outlive its
//! certificate, and a CRL can change (or go stale) while a connection is open.

use webpki::{CertRevocationList, OwnedCertRevocationList};

use super::identity::Identity;
use super::refusal::Refusal;

/// Why a connection's certificate chain no longer stands, found by verifying it again in full
/// (`tls::verifier::ConsumerVerifier::judge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Past the notAfter of a certificate in the chain.
    Expired,
    /// On a CRL in force, or of unknown status (no CRL for its issuer, a stale CRL under
    /// `crl_expired = "deny"`), for every certificate `crl_check` covers.
    Revoked,
    /// No longer under a configured trust anchor, or no longer satisfying `client_subject`.
    Untrusted,
}

impl Fault {
    /// SPEC row 8 has two tokens: a certificate the configuration no longer trusts is refused
    /// as revoked (its trust was withdrawn); the log says which.
    pub fn refusal(self) -> Refusal {
        match self {
            Fault::Expired => Refusal::CertificateExpired,
            Fault::Revoked | Fault::Untrusted => Refusal::CertificateRevoked,
        }
    }
}

/// The last full verification of a connection's chain: under which configuration (the
/// runtime's generation, which every reload and CRL refresh changes) and what it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judgement {
    pub generation: u64,
    pub fault: Option<Fault>,
}

impl Judgement {
    /// `last` if it still holds under the configuration `generation`; `None` when the chain
    /// must be verified again: the configuration changed since (anchors, `client_subject`,
    /// CRLs), or it never was under this process's eyes (a resumed session). Verifying costs
    /// signatures, so it is done once per configuration, not per request.
    pub fn holding(last: Option<Judgement>, generation: u64) -> Option<Judgement> {
        last.filter(|j| j.generation == generation)
    }
}

/// Row 8 for one request at `now` (seconds since the epoch): the chain still stands under
/// the configuration in force (`judgement`), the certificate is still in date, and it is not
/// revoked by the CRLs in force. The date and the CRLs hold for every request, not only at
/// the handshake: a resumed session carries the chain verified when it began, and resumption
/// hands out a new ticket each time, so a date checked only at the handshake would never
/// close; and a CRL can go stale without any change of configuration.
pub fn check(
    revocations: &Revocations,
    identity: &Identity,
    judgement: Judgement,
    now: i64,
) -> Result<(), Refusal> {
    if let Some(fault) = judgement.fault {
        return Err(fault.refusal());
    }
    // The comparison webpki makes at the handshake: valid through the second of notAfter.
    if now > identity.not_after {
        return Err(Refusal::CertificateExpired);
    }
    if revocations.refuses(identity, now) {
        return Err(Refusal::CertificateRevoked);
    }
    Ok(())
}

/// The CRLs in force, one per issuer. Replaced as a whole on reload.
#[derive(Debug, Default)]
pub struct Revocations {
    lists: Vec<Crl>,
    /// `crl_expired = "deny"`: a CRL past its nextUpdate refuses everyone, as at the handshake.
    deny_stale: bool,
}

#[derive(Debug)]
struct Crl {
    list: CertRevocationList<'static>,
    /// Seconds since the epoch; `None` when the CRL names no nextUpdate.
    next_update: Option<i64>,
}

impl Revocations {
    pub fn new(lists: Vec<(OwnedCertRevocationList, Option<i64>)>, deny_stale: bool) -> Self {
        let lists = lists
            .into_iter()
            .map(|(list, next_update)| Crl {
                list: CertRevocationList::from(list),
                next_update,
            })
            .collect();
        Revocations { lists, deny_stale }
    }

    /// Whether a request from `identity` must be refused at `now` (seconds since the epoch).
    pub fn refuses(&self, identity: &Identity, now: i64) -> bool {
        let stale = self.deny_stale
            && self
                .lists
                .iter()
                .any(|crl| crl.next_update.is_some_and(|n| n < now));
        stale
            || self.lists.iter().any(|crl| {
                // A CRL entry we cannot parse is treated as revoking: fail closed.
                crl.list.issuer() == identity.issuer_der.as_slice()
                    && !matches!(crl.list.find_serial(&identity.serial_der), Ok(None))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x509;

    const CRL: &[u8] = include_bytes!("../../fixtures/pki/level1c.crl");
    const EXPIRED_CRL: &[u8] = include_bytes!("../../fixtures/pki/level1c-expired.crl");

    fn identity(pem: &str) -> Identity {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let cert = CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        Identity::from_certificate(&cert).unwrap()
    }

    fn revocations(der: &[u8], deny_stale: bool) -> Revocations {
        let next = x509::crl_info(der).unwrap().next_update;
        Revocations::new(
            vec![(OwnedCertRevocationList::from_der(der).unwrap(), next)],
            deny_stale,
        )
    }

    const NOW: i64 = 1_795_623_784; // 2026-11-25

    #[test]
    fn revoked_serial_is_refused_and_others_pass() {
        let r = revocations(CRL, true);
        assert!(r.refuses(
            &identity(include_str!("../../fixtures/pki/consumer-revoked.pem")),
            NOW
        ));
        assert!(!r.refuses(&identity(include_str!("../../fixtures/pki/consumer-a.pem")), NOW));
    }

    #[test]
    fn stale_crl_refuses_everyone_only_under_deny() {
        let a = identity(include_str!("../../fixtures/pki/consumer-a.pem"));
        assert!(revocations(EXPIRED_CRL, true).refuses(&a, NOW));
        assert!(!revocations(EXPIRED_CRL, false).refuses(&a, NOW));
        // The current CRL goes stale too, once the clock passes its nextUpdate.
        assert!(revocations(CRL, true).refuses(&a, x509::days_from_civil(2050, 1, 1) * 86_400));
    }

    const STANDING: Judgement = Judgement {
        generation: 7,
        fault: None,
    };

    #[test]
    fn a_judgement_holds_only_under_the_configuration_it_was_made_under() {
        assert_eq!(Judgement::holding(Some(STANDING), 7), Some(STANDING));
        assert_eq!(Judgement::holding(Some(STANDING), 8), None);
        assert_eq!(Judgement::holding(None, 7), None, "a resumed session is judged");
    }

    #[test]
    fn a_chain_judged_at_fault_is_refused_whatever_the_crls_and_date_say() {
        let r = revocations(CRL, true);
        let a = identity(include_str!("../../fixtures/pki/consumer-a.pem"));
        let judged = |fault| Judgement {
            generation: 7,
            fault: Some(fault),
        };
        assert_eq!(
            check(&r, &a, judged(Fault::Expired), NOW),
            Err(Refusal::CertificateExpired)
        );
        for fault in [Fault::Revoked, Fault::Untrusted] {
            assert_eq!(
                check(&r, &a, judged(fault), NOW),
                Err(Refusal::CertificateRevoked),
                "{fault:?}"
            );
        }
        assert_eq!(check(&r, &a, STANDING, NOW), Ok(()));
    }

    #[test]
    fn a_certificate_is_in_date_through_its_not_after_second_and_expired_after() {
        // Consumer A runs to the end of 2049, past the fixture CRL's nextUpdate: a stale CRL
        // is tolerated here so that only the date decides.
        let tolerant = revocations(CRL, false);
        let a = identity(include_str!("../../fixtures/pki/consumer-a.pem"));
        assert_eq!(check(&tolerant, &a, STANDING, a.not_after - 1), Ok(()));
        assert_eq!(check(&tolerant, &a, STANDING, a.not_after), Ok(()));
        assert_eq!(
            check(&tolerant, &a, STANDING, a.not_after + 1),
            Err(Refusal::CertificateExpired)
        );
        let r = revocations(CRL, true);
        // The fixture's expired consumer, 2020-2021, at a time its Level 1C CRL is current.
        let expired = identity(include_str!("../../fixtures/pki/consumer-expired.pem"));
        assert_eq!(
            check(&r, &expired, STANDING, NOW),
            Err(Refusal::CertificateExpired)
        );
        let revoked = identity(include_str!("../../fixtures/pki/consumer-revoked.pem"));
        assert_eq!(
            check(&r, &revoked, STANDING, NOW),
            Err(Refusal::CertificateRevoked)
        );
        assert_eq!(check(&r, &a, STANDING, NOW), Ok(()));
    }

    #[test]
    fn certificates_of_other_issuers_are_not_looked_up_in_this_crl() {
        let other = identity(include_str!("../../fixtures/pki/consumer-other-ca.pem"));
        assert!(!revocations(CRL, true).refuses(&other, NOW));
    }
}
