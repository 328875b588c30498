//! The consumer certificate check of SPEC section 4 row 1: rustls-webpki verifies the chain,
//! dates and CRLs; this wrapper adds what webpki does not know: the required subject
//! attributes, exactly one CN, and refusing every handshake while any CRL is stale under
//! `crl_expired = "deny"`.
//! Row 8 runs the same check again (`judge`) on an open connection's chain when the
//! configuration it was verified under has been replaced.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, SignatureScheme,
};

use crate::policy::identity::{CommonName, Identity, common_name, subject_satisfies};
use crate::policy::revocation::Fault;
use crate::x509;

/// Why a certificate that webpki accepted is still refused; shown in logs and audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraRefusal {
    SubjectMismatch,
    SeveralCommonNames,
    Unparseable,
}

impl fmt::Display for ExtraRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExtraRefusal::SubjectMismatch => "certificate subject lacks the attributes of client_subject",
            ExtraRefusal::SeveralCommonNames => "certificate subject has more than one CN",
            ExtraRefusal::Unparseable => "certificate subject cannot be parsed",
        })
    }
}

impl std::error::Error for ExtraRefusal {}

#[derive(Debug)]
pub struct ConsumerVerifier {
    pub inner: Arc<dyn ClientCertVerifier>,
    pub required_subject: Vec<(String, String)>,
    /// nextUpdate of every loaded CRL (seconds since the epoch); `None` when a CRL has none.
    pub crl_next_updates: Vec<(String, Option<i64>)>,
    pub deny_stale_crl: bool,
    pub warned_stale: AtomicBool,
}

impl ConsumerVerifier {
    /// Verifies a chain as the handshake does (`chain`: the leaf first, then what the consumer
    /// sent with it; `fault` reads the error). For a connection whose handshake was verified
    /// under another configuration, or that resumed a session verified who knows when.
    pub fn judge(&self, chain: &[CertificateDer<'_>], now: UnixTime) -> Result<(), Error> {
        let (leaf, intermediates) = chain.split_first().ok_or(Error::NoCertificatesPresented)?;
        self.check(leaf, intermediates, now)
    }

    /// The whole check of row 1, for a handshake and for row 8 alike.
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), Error> {
        if let Some(issuer) = self.stale_crl(now) {
            if self.deny_stale_crl {
                return Err(Error::InvalidCertificate(CertificateError::ExpiredRevocationList));
            }
            if !self.warned_stale.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "CRL of {issuer} is past its nextUpdate; admitting anyway (crl_expired = \"allow\")"
                );
            }
        }
        self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let cert =
            webpki::EndEntityCert::try_from(end_entity).map_err(|_| other(ExtraRefusal::Unparseable))?;
        let subject = x509::parse_name(cert.subject()).ok_or_else(|| other(ExtraRefusal::Unparseable))?;
        if !subject_satisfies(&subject, &self.required_subject) {
            return Err(other(ExtraRefusal::SubjectMismatch));
        }
        if common_name(&subject) == CommonName::Several {
            return Err(other(ExtraRefusal::SeveralCommonNames));
        }
        Ok(())
    }

    /// The first CRL past its nextUpdate at `now`, by issuer name.
    fn stale_crl(&self, now: UnixTime) -> Option<&str> {
        let now = now.as_secs() as i64;
        self.crl_next_updates
            .iter()
            .find(|(_, next)| next.is_some_and(|n| n < now))
            .map(|(issuer, _)| issuer.as_str())
    }
}

impl ClientCertVerifier for ConsumerVerifier {
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.check(end_entity, intermediates, now).inspect_err(|_| {
            // rustls keeps no certificate it refused: kept here for the connection's log line
            // and `tls` record, on this thread, which is the one rustls returns the error on.
            REFUSED.with(|r| *r.borrow_mut() = Some(end_entity.as_ref().to_vec()));
        })?;
        Ok(ClientCertVerified::assertion())
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }
}

thread_local! {
    /// The certificate the last handshake this thread verified presented, if it was refused.
    static REFUSED: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// The certificate of the handshake refused on this thread just now (`None` when none was
/// presented, or it was refused before it was looked at); to be taken at its error.
pub fn take_refused() -> Option<Identity> {
    REFUSED
        .with(|r| r.borrow_mut().take())
        .and_then(|der| Identity::from_certificate(&der))
}

/// Row 8's reading of a verification error: expired, revoked (or of unknown status, which is
/// denied), or no longer trusted at all (anchor, signature, `client_subject`).
pub fn fault(error: &Error) -> Fault {
    use CertificateError as C;
    match error {
        Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => Fault::Expired,
        Error::InvalidCertificate(
            C::Revoked
            | C::UnknownRevocationStatus
            | C::ExpiredRevocationList
            | C::ExpiredRevocationListContext { .. },
        ) => Fault::Revoked,
        _ => Fault::Untrusted,
    }
}

fn other(reason: ExtraRefusal) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(reason))))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use rustls::pki_types::pem::PemObject;

    use super::*;

    const PKI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/pki");
    /// 2026-11-25, while the fixture certificates and CRLs are current.
    const NOW: u64 = 1_795_623_784;

    /// The consumer certificate check a configuration builds, with `server` lines added.
    fn verifier(crls: &[&str], server: &str) -> Arc<ConsumerVerifier> {
        crate::tls::load(&config(crls, server)).expect("tls").verifier
    }

    fn config(crls: &[&str], server: &str) -> crate::config::Config {
        let crls: Vec<String> = crls.iter().map(|c| format!("\"{PKI}/{c}\"")).collect();
        let text = format!(
            "[server]\ncertificate = \"{PKI}/ssp.pem\"\nprivate_key = \"{PKI}/ssp.key\"\n\
             client_ca = \"{PKI}/nhs-ca.pem\"\ncrl = [{}]\n{server}\n[upstream]\nca = \"{PKI}/nhs-ca.pem\"\n\
             [[provider]]\nasid = \"2\"\nendpoint = \"https://p.example/x\"\ninteractions = [\"i\"]\n\
             [[consumer]]\nasid = \"1\"\nfqdn = \"c.example\"\ninteractions = [\"i\"]\nproviders = [\"2\"]\n",
            crls.join(", ")
        );
        crate::config::parse(&text, Path::new("/test/ssp.toml")).expect("config")
    }

    fn chain(file: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_file_iter(format!("{PKI}/{file}.pem"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn at(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(secs))
    }

    fn judged(v: &ConsumerVerifier, file: &str, now: u64) -> Option<Fault> {
        v.judge(&chain(file), at(now)).err().map(|e| fault(&e))
    }

    #[test]
    fn judging_a_chain_again_finds_what_the_handshake_would() {
        let v = verifier(&["level1c.crl"], "");
        assert_eq!(judged(&v, "consumer-a", NOW), None);
        assert_eq!(judged(&v, "consumer-revoked", NOW), Some(Fault::Revoked));
        assert_eq!(judged(&v, "consumer-expired", NOW), Some(Fault::Expired));
        assert_eq!(judged(&v, "consumer-other-ca", NOW), Some(Fault::Untrusted));
        assert_eq!(judged(&v, "consumer-wrong-ou", NOW), Some(Fault::Untrusted));
        assert_eq!(
            v.judge(&[], at(NOW)).err().map(|e| fault(&e)),
            Some(Fault::Untrusted),
            "no chain at all"
        );
        // In 2100, past consumer A's notAfter (without CRLs, which would be stale by then).
        assert_eq!(
            judged(&verifier(&[], ""), "consumer-a", 4_102_444_800),
            Some(Fault::Expired)
        );
    }

    #[test]
    fn judging_under_chain_checks_covers_the_intermediate() {
        let chain_checked = "crl_check = \"chain\"";
        assert_eq!(
            judged(
                &verifier(&["level1c.crl", "root.crl"], chain_checked),
                "consumer-a",
                NOW
            ),
            None
        );
        // Level 1C's issuer (the root) has no CRL: its status would be unknown, which is
        // denied, so every consumer would be refused; such a configuration does not load.
        let Err(errors) = crate::tls::load(&config(&["level1c.crl"], chain_checked)) else {
            panic!("a chain check without the anchor's CRL loaded");
        };
        assert!(
            errors
                .to_string()
                .contains("no CRL in `crl` is issued by the trust anchor"),
            "{errors}"
        );
        assert_eq!(
            judged(&verifier(&["level1c.crl"], ""), "consumer-a", NOW),
            None,
            "leaf checks look at the leaf only"
        );
    }

    #[test]
    fn verification_errors_read_as_row_8_faults() {
        use CertificateError as C;
        let table = [
            (Error::InvalidCertificate(C::Expired), Fault::Expired),
            (Error::InvalidCertificate(C::Revoked), Fault::Revoked),
            (
                Error::InvalidCertificate(C::UnknownRevocationStatus),
                Fault::Revoked,
            ),
            (
                Error::InvalidCertificate(C::ExpiredRevocationList),
                Fault::Revoked,
            ),
            (Error::InvalidCertificate(C::UnknownIssuer), Fault::Untrusted),
            (Error::InvalidCertificate(C::BadSignature), Fault::Untrusted),
            (Error::InvalidCertificate(C::NotValidYet), Fault::Untrusted),
            (other(ExtraRefusal::SubjectMismatch), Fault::Untrusted),
            (other(ExtraRefusal::SeveralCommonNames), Fault::Untrusted),
            (Error::NoCertificatesPresented, Fault::Untrusted),
        ];
        for (error, want) in table {
            assert_eq!(fault(&error), want, "{error}");
        }
    }
}
