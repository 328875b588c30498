//! Who is on the other end of a consumer connection, taken once from its verified certificate.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use crate::x509::{self, Name};

/// The texts every audit record of the connection repeats are shared, not copied, per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// RFC 4514 text, e.g. `CN=dispenser-a.example.nhs.uk, OU=Devices, O=nhs`.
    pub subject: Arc<str>,
    pub subject_attrs: Name,
    /// The last CN of the subject, if any.
    pub cn: Option<String>,
    pub issuer: Arc<str>,
    /// DER contents of the issuer name, to find the issuer's CRL.
    pub issuer_der: Vec<u8>,
    /// DER contents of the serial INTEGER, as CRLs list it.
    pub serial_der: Vec<u8>,
    /// Lowercase hex, colon-free.
    pub serial_hex: Arc<str>,
    /// SHA-256 of the whole certificate, lowercase hex.
    pub fingerprint: Arc<str>,
    /// notAfter, seconds since the epoch: row 8 refuses every request past it.
    pub not_after: i64,
}

impl Identity {
    /// `None` if the certificate cannot be parsed; a handshake that verified it never gives that.
    pub fn from_certificate(der: &[u8]) -> Option<Identity> {
        let cert_der = CertificateDer::from(der);
        let cert = webpki::EndEntityCert::try_from(&cert_der).ok()?;
        let subject_attrs = x509::parse_name(cert.subject())?;
        let issuer_attrs = x509::parse_name(cert.issuer())?;
        let (_, not_after) = x509::validity(der)?;
        let cn = subject_attrs
            .iter()
            .rev()
            .find(|(k, _)| k == "CN")
            .map(|(_, v)| v.clone());
        Some(Identity {
            subject: x509::format_name(&subject_attrs).into(),
            cn,
            issuer: x509::format_name(&issuer_attrs).into(),
            issuer_der: cert.issuer().to_vec(),
            serial_der: cert.serial().to_vec(),
            serial_hex: hex(cert.serial()).into(),
            fingerprint: hex(&Sha256::digest(der)).into(),
            not_after,
            subject_attrs,
        })
    }
}

/// Whether a subject carries every required attribute. Values compare case-insensitively, as
/// X.520 `caseIgnoreMatch` does for the attributes operators configure (O, OU, C, ...).
pub fn subject_satisfies(subject: &Name, required: &[(String, String)]) -> bool {
    required.iter().all(|(key, want)| {
        subject
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case(key) && v.eq_ignore_ascii_case(want))
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(pairs: &[(&str, &str)]) -> Name {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn required_subject_attributes_must_all_be_present() {
        let required = name(&[("O", "nhs"), ("OU", "Devices")]);
        assert!(subject_satisfies(
            &name(&[("O", "NHS"), ("OU", "Devices"), ("CN", "a")]),
            &required
        ));
        assert!(!subject_satisfies(
            &name(&[("O", "nhs"), ("OU", "Staff"), ("CN", "a")]),
            &required
        ));
        assert!(!subject_satisfies(&name(&[("CN", "a")]), &required));
        assert!(subject_satisfies(&name(&[("CN", "a")]), &[]));
    }

    #[test]
    fn garbage_is_not_an_identity() {
        assert!(Identity::from_certificate(b"not a certificate").is_none());
    }
}
