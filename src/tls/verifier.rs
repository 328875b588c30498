//! The consumer certificate check of SPEC section 4 row 1: rustls-webpki verifies the chain,
//! dates and CRLs; this wrapper adds what webpki does not know: the required subject
//! attributes, and refusing every handshake while any CRL is stale under `crl_expired = "deny"`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, SignatureScheme,
};

use crate::policy::identity::subject_satisfies;
use crate::x509;

/// Why a certificate that webpki accepted is still refused; shown in logs and audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraRefusal {
    SubjectMismatch,
    Unparseable,
}

impl fmt::Display for ExtraRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExtraRefusal::SubjectMismatch => "certificate subject lacks the attributes of client_subject",
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

fn other(reason: ExtraRefusal) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(reason))))
}
