//! A CRL as `ssp` holds it, and the checks a CRL from the network must pass before it may
//! replace one: it parses, it names an issuer we know, and that issuer signed it.
//!
//! rustls-webpki verifies a CRL's signature only inside path building, against the issuer it
//! found for a certificate being verified (`CertRevocationList::verify_signature` is
//! crate-private). A fetched CRL must be checked before any handshake sees it, or one bad
//! download would make every handshake fail. So the signature is checked here the way
//! webpki's `signed_data` does it: split the DER into tbsCertList, algorithm and signature,
//! pick the `SignatureVerificationAlgorithm`s of our rustls crypto provider (ring) whose
//! signature and public-key AlgorithmIdentifiers match, and let ring verify. No new crate.

use std::path::{Path, PathBuf};

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};

use crate::config::{CrlSource, HttpUrl};
use crate::x509::{self, CrlInfo};

/// One CRL in force: where it came from, what it says, and its bytes (for a rebuild).
#[derive(Debug, Clone)]
pub struct CrlSummary {
    pub path: PathBuf,
    pub url: Option<HttpUrl>,
    /// RFC 4514 text of the issuer, for logs, metrics and `ssp check`.
    pub issuer: String,
    pub this_update: i64,
    pub next_update: Option<i64>,
    /// CRL number, when the CRL carries one.
    pub number: Option<Vec<u8>>,
    pub revoked: usize,
    pub der: CertificateRevocationListDer<'static>,
    /// The issuer's name as DER contents, to find its certificate.
    pub issuer_der: Vec<u8>,
}

/// PEM (`BEGIN X509 CRL`) or DER bytes to DER.
pub fn decode(bytes: &[u8]) -> Result<CertificateRevocationListDer<'static>, String> {
    if bytes.starts_with(b"-----BEGIN") {
        CertificateRevocationListDer::from_pem_slice(bytes)
            .map_err(|e| format!("invalid PEM CRL: {}", super::files::pem_problem(&e)))
    } else {
        Ok(CertificateRevocationListDer::from(bytes.to_vec()))
    }
}

/// Parses a CRL (PEM or DER) as webpki will use it and reads what webpki does not expose.
pub fn parse(source: &CrlSource, bytes: &[u8]) -> Result<CrlSummary, String> {
    let der = decode(bytes)?;
    // webpki's reasons are Rust values (`TrailingData(CertRevocationList)`, also for plain
    // garbage); what the operator needs is that this file is not a CRL.
    webpki::OwnedCertRevocationList::from_der(&der)
        .map_err(|_| "not a CRL (expected PEM \"BEGIN X509 CRL\" or DER), or a damaged one")?;
    let CrlInfo {
        issuer,
        this_update,
        next_update,
        number,
        revoked,
    } = x509::crl_info(&der).ok_or("not a CRL: cannot read its dates")?;
    Ok(CrlSummary {
        path: source.path.clone(),
        url: source.url.clone(),
        issuer: x509::parse_name(&issuer)
            .map(|n| x509::format_name(&n))
            .unwrap_or_default(),
        this_update,
        next_update,
        number,
        revoked,
        der,
        issuer_der: issuer,
    })
}

/// A certificate that may sign CRLs: its subject and SubjectPublicKeyInfo contents.
#[derive(Debug, Clone)]
pub struct Issuer {
    pub subject: Vec<u8>,
    pub spki: Vec<u8>,
}

/// The certificates CRLs are checked against: the trust anchors of `client_ca`; each `issuer`
/// file named by a `crl` entry, which must be signed by one of those anchors; and the CA
/// certificates of the proxy's own chain that chain to one of them (an NHS gateway's own
/// certificate comes from the same Level 1C as its consumers').
#[derive(Debug, Clone, Default)]
pub struct Issuers(Vec<Issuer>);

/// A certificate's subject, SubjectPublicKeyInfo and issuer name, as DER contents.
fn parts(cert: &CertificateDer<'_>) -> Result<(Issuer, Vec<u8>), String> {
    let unusable = |_| "not a usable certificate (it cannot be parsed)".to_string();
    let anchor = webpki::anchor_from_trusted_cert(cert).map_err(unusable)?;
    let issuer_name = webpki::EndEntityCert::try_from(cert)
        .map(|c| c.issuer().to_vec())
        .map_err(unusable)?;
    let issuer = Issuer {
        subject: anchor.subject.to_vec(),
        spki: anchor.subject_public_key_info.to_vec(),
    };
    Ok((issuer, issuer_name))
}

impl Issuers {
    pub fn new(
        anchors: &[CertificateDer<'static>],
        named: &[(PathBuf, CertificateDer<'static>)],
        held: &[CertificateDer<'static>],
        algorithms: &WebPkiSupportedAlgorithms,
    ) -> Result<Issuers, (PathBuf, String)> {
        let mut issuers = Vec::new();
        for cert in anchors {
            // `client_ca` was loaded as trust anchors already; one that is not is skipped here.
            if let Ok(anchor) = webpki::anchor_from_trusted_cert(cert) {
                issuers.push(Issuer {
                    subject: anchor.subject.to_vec(),
                    spki: anchor.subject_public_key_info.to_vec(),
                });
            }
        }
        let anchors = Issuers(issuers.clone());
        for (path, cert) in named {
            let (issuer, issuer_name) = parts(cert).map_err(|why| (path.clone(), why))?;
            anchors.verify(cert, &issuer_name, algorithms).map_err(|why| {
                (
                    path.clone(),
                    format!("not signed by a trust anchor of client_ca: {why}"),
                )
            })?;
            issuers.push(issuer);
        }
        let mut known = Issuers(issuers);
        // Below an anchor directly or through another held certificate, in any order.
        let mut pending: Vec<_> = held
            .iter()
            .filter_map(|cert| Some((cert, parts(cert).ok()?)))
            .collect();
        while let Some(at) = pending
            .iter()
            .position(|(cert, (_, issuer_name))| known.verify(cert, issuer_name, algorithms).is_ok())
        {
            let (_, (issuer, _)) = pending.swap_remove(at);
            known.0.push(issuer);
        }
        Ok(known)
    }

    pub fn knows(&self, name: &[u8]) -> bool {
        self.0.iter().any(|i| i.subject == name)
    }

    /// Whether `signed` (a certificate or CRL in DER) carries a valid signature by a known
    /// certificate whose subject is `issuer_name`. Several certificates may share a name
    /// (a renewed CA key): any of them will do.
    pub fn verify(
        &self,
        signed: &[u8],
        issuer_name: &[u8],
        algorithms: &WebPkiSupportedAlgorithms,
    ) -> Result<(), String> {
        let parts = x509::signed_parts(signed).ok_or("cannot find its signature")?;
        let mut candidates = self.0.iter().filter(|i| i.subject == issuer_name).peekable();
        if candidates.peek().is_none() {
            return Err("its issuer is not a known certificate".into());
        }
        let mut supported = false;
        for issuer in candidates {
            let Some((key_algorithm, key)) = x509::spki_parts(&issuer.spki) else {
                continue;
            };
            for alg in algorithms.all.iter().filter(|a| {
                a.signature_alg_id().as_ref() == parts.algorithm
                    && a.public_key_alg_id().as_ref() == key_algorithm
            }) {
                supported = true;
                if alg.verify_signature(key, parts.tbs, parts.signature).is_ok() {
                    return Ok(());
                }
            }
        }
        Err(if supported {
            "bad signature (not signed by its issuer's key)".into()
        } else {
            "unsupported signature algorithm".into()
        })
    }
}

/// The file of one `issuer` key, read once at load.
pub fn issuer_file(path: &Path) -> Result<CertificateDer<'static>, super::FileError> {
    super::files::certificates(path)?
        .into_iter()
        .next()
        .ok_or_else(|| super::files::error(path, "no certificate"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CrlSource;

    fn pem(name: &str) -> Vec<CertificateDer<'static>> {
        crate::tls::files::certificates(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/pki")
                .join(name),
        )
        .unwrap()
    }

    fn crl(name: &str) -> CrlSummary {
        let bytes = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/pki")
                .join(name),
        )
        .unwrap();
        parse(&CrlSource::file(name.into()), &bytes).unwrap()
    }

    fn algorithms() -> WebPkiSupportedAlgorithms {
        crate::tls::crypto_provider().signature_verification_algorithms
    }

    #[test]
    fn crl_signatures_are_checked_against_their_issuer() {
        let level1c = pem("level1c.pem").remove(0);
        let issuers = Issuers::new(
            &pem("root.pem"),
            &[("level1c.pem".into(), level1c)],
            &[],
            &algorithms(),
        )
        .unwrap();
        for name in [
            "level1c.crl",
            "level1c.crl.pem",
            "root.crl",
            "level1c-expired.crl",
        ] {
            let c = crl(name);
            assert_eq!(
                issuers.verify(&c.der, &c.issuer_der, &algorithms()),
                Ok(()),
                "{name}"
            );
        }
        // One flipped bit in the signed part, then in the signature.
        let c = crl("level1c.crl");
        for at in [40, c.der.len() - 5] {
            let mut der = c.der.to_vec();
            der[at] ^= 0x01;
            let error = issuers.verify(&der, &c.issuer_der, &algorithms()).unwrap_err();
            assert!(
                error.contains("bad signature") || error.contains("cannot find"),
                "at {at}: {error}"
            );
        }
        // Without Level 1C's certificate, its CRLs cannot be checked.
        let roots_only = Issuers::new(&pem("root.pem"), &[], &[], &algorithms()).unwrap();
        let error = roots_only
            .verify(&c.der, &c.issuer_der, &algorithms())
            .unwrap_err();
        assert!(error.contains("not a known certificate"), "{error}");
        assert!(
            issuers
                .verify(&c.der[..c.der.len() - 1], &c.issuer_der, &algorithms())
                .is_err()
        );
    }

    #[test]
    fn an_issuer_file_must_be_signed_by_a_trust_anchor() {
        let level1c = pem("level1c.pem").remove(0);
        let (path, error) = Issuers::new(
            &pem("other-root.pem"),
            &[("level1c.pem".into(), level1c)],
            &[],
            &algorithms(),
        )
        .unwrap_err();
        assert_eq!(path, Path::new("level1c.pem"));
        assert!(error.contains("not signed by a trust anchor"), "{error}");
    }

    #[test]
    fn a_held_ca_certificate_is_an_issuer_only_when_it_chains_to_an_anchor() {
        // ssp.pem: the proxy's leaf, then Level 1C, which the root signed.
        let chain = pem("ssp.pem");
        let c = crl("level1c.crl");
        let under_root = Issuers::new(&pem("root.pem"), &[], &chain[1..], &algorithms()).unwrap();
        assert!(under_root.knows(&c.issuer_der));
        assert_eq!(under_root.verify(&c.der, &c.issuer_der, &algorithms()), Ok(()));
        let under_other = Issuers::new(&pem("other-root.pem"), &[], &chain[1..], &algorithms()).unwrap();
        assert!(!under_other.knows(&c.issuer_der));
    }

    #[test]
    fn garbage_is_not_a_crl() {
        let source = CrlSource::file("x.crl".into());
        for bytes in [
            &b"<html><body>Not Found</body></html>"[..],
            b"",
            b"-----BEGIN X509 CRL-----\nAAAA\n",
        ] {
            let why = parse(&source, bytes).unwrap_err();
            assert!(
                why.contains("not a CRL") || why.contains("invalid PEM CRL"),
                "{why}"
            );
            assert!(!why.contains("TrailingData") && !why.contains("(["), "{why}");
        }
        let good =
            std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki/level1c.crl")).unwrap();
        assert!(parse(&source, &good[..good.len() / 2]).is_err());
        let summary = parse(&source, &good).unwrap();
        assert_eq!(
            (summary.revoked, summary.number.as_deref()),
            (1, Some(&[1u8][..]))
        );
        assert_eq!(summary.issuer, "CN=SSP Test NHS Level 1C, O=nhs");
    }
}
