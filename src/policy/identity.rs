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
    /// The subject's CN, when it has exactly one (see `common_name`).
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
        let cn = match common_name(&subject_attrs) {
            CommonName::One(cn) => Some(cn.to_string()),
            CommonName::Missing | CommonName::Several => None,
        };
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

/// How a subject names its holder for the allowlist (SPEC section 1: "its CN equals the FQDN
/// registered for the `Ssp-From` ASID").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommonName<'a> {
    One(&'a str),
    Missing,
    /// Names several hosts: which one the allowlist compared would be our choice, not the
    /// CA's, so such a certificate is refused at the handshake (`tls::verifier`).
    Several,
}

/// The subject's CN attributes, wherever they sit (a multi-valued RDN included).
pub fn common_name(subject: &Name) -> CommonName<'_> {
    let mut cns = subject.iter().filter(|(k, _)| k == "CN").map(|(_, v)| v.as_str());
    match (cns.next(), cns.next()) {
        (Some(cn), None) => CommonName::One(cn),
        (None, _) => CommonName::Missing,
        (Some(_), Some(_)) => CommonName::Several,
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
    fn only_a_subject_with_exactly_one_cn_has_a_common_name() {
        assert_eq!(
            common_name(&name(&[("O", "nhs"), ("CN", "a.example")])),
            CommonName::One("a.example")
        );
        assert_eq!(common_name(&name(&[("O", "nhs")])), CommonName::Missing);
        for two in [
            name(&[("O", "nhs"), ("CN", "b.example"), ("CN", "a.example")]),
            name(&[("CN", "a.example"), ("O", "nhs"), ("CN", "a.example")]),
        ] {
            assert_eq!(common_name(&two), CommonName::Several, "{two:?}");
        }
    }

    #[test]
    fn the_identity_of_a_fixture_consumer_carries_its_cn() {
        use rustls::pki_types::pem::PemObject;
        let pem = include_bytes!("../../fixtures/pki/consumer-a.pem");
        let cert = CertificateDer::pem_slice_iter(pem).next().unwrap().unwrap();
        let identity = Identity::from_certificate(&cert).unwrap();
        assert_eq!(identity.cn.as_deref(), Some("dispenser-a.example.nhs.uk"));
        assert_eq!(
            &*identity.subject,
            "CN=dispenser-a.example.nhs.uk, OU=Devices, O=nhs"
        );
    }

    #[test]
    fn garbage_is_not_an_identity() {
        assert!(Identity::from_certificate(b"not a certificate").is_none());
    }
}
