//! Certificates and CRLs made at test time with the fixture CAs' keys (`fixtures/pki`), for
//! what the fixtures cannot hold: a certificate that expires within the test, a subject the
//! generator would not write, a CRL revoking an intermediate.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::pki;

pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A fixture CA as an issuer: its name as the generator wrote it (O, then CN) and its key.
fn fixture_ca(file: &str, cn: &str) -> Issuer<'static, KeyPair> {
    let key = KeyPair::from_pem(&std::fs::read_to_string(pki(&format!("{file}.key"))).unwrap()).unwrap();
    named(cn, key)
}

/// An issuer named `O=nhs, CN=<cn>` signing with `key`.
fn named(cn: &str, key: KeyPair) -> Issuer<'static, KeyPair> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "nhs");
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.key_identifier_method = KeyIdMethod::Sha256;
    Issuer::new(params, key)
}

/// "SSP Test NHS Level 1C", the consumers' issuer.
pub fn level1c() -> Issuer<'static, KeyPair> {
    fixture_ca("level1c", "SSP Test NHS Level 1C")
}

/// Level 1C's name with somebody else's key.
pub fn level1c_impostor() -> Issuer<'static, KeyPair> {
    named(
        "SSP Test NHS Level 1C",
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
    )
}

/// A CA under "Other Root" (`fixtures/pki/other-root.key`), which no configuration trusts.
pub fn other_root() -> Issuer<'static, KeyPair> {
    fixture_ca("other-root", "Other Root")
}

/// "SSP Test NHS Root Authority", the trust anchor, Level 1C's issuer.
pub fn root() -> Issuer<'static, KeyPair> {
    fixture_ca("root", "SSP Test NHS Root Authority")
}

/// A consumer certificate from Level 1C, with its chain (leaf, then Level 1C) and key.
pub struct Minted {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Minted {
    /// A TLS client presenting this certificate and chain, trusting the fixture root, limited
    /// to `versions`; its session store (rustls' in-memory default) lets a second connection
    /// with the same config resume.
    pub fn client_config(&self, versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for cert in ssp::tls::files::certificates(&pki("nhs-ca.pem")).unwrap() {
            roots.add(cert).unwrap();
        }
        let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .unwrap();
        Arc::new(config)
    }
}

/// A consumer certificate like the fixtures' (`OU=Devices, O=nhs`, ECDSA P-256, clientAuth)
/// whose subject ends with `cns` (in encoding order: the last is the most specific), valid
/// from `not_before` to `not_after` (seconds since the epoch).
pub fn consumer(cns: &[&str], not_before: i64, not_after: i64) -> Minted {
    let at = |t: i64| rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(t as u64);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.not_before = at(not_before);
    params.not_after = at(not_after);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "nhs");
    dn.push(DnType::OrganizationalUnitName, "Devices");
    // rcgen keeps one value per attribute type; a second CN goes in under CN's OID spelled
    // out, which encodes the same.
    for (i, cn) in cns.iter().enumerate() {
        let ty = if i == 0 {
            DnType::CommonName
        } else {
            DnType::CustomDnType(vec![2, 5, 4, 3])
        };
        dn.push(ty, *cn);
    }
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &level1c()).unwrap();
    let level1c_pem = ssp::tls::files::certificates(&pki("level1c.pem")).unwrap();
    Minted {
        chain: vec![cert.der().clone(), level1c_pem[0].clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// A DER CRL from `issuer` valid from `this_update` to `next_update` (seconds since the
/// epoch), numbered `number`, revoking `revoked` serials.
pub fn crl(
    issuer: &Issuer<'_, KeyPair>,
    this_update: i64,
    next_update: i64,
    number: u64,
    revoked: &[&[u8]],
) -> Vec<u8> {
    let at = |t: i64| rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(t as u64);
    let params = CertificateRevocationListParams {
        this_update: at(this_update),
        next_update: at(next_update),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|serial| RevokedCertParams {
                serial_number: SerialNumber::from_slice(serial),
                revocation_time: at(this_update),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    params.signed_by(issuer).unwrap().der().to_vec()
}

/// The serial of the first certificate in `fixtures/pki/<file>.pem`, as CRLs list it.
pub fn serial_of(file: &str) -> Vec<u8> {
    let chain = ssp::tls::files::certificates(&pki(&format!("{file}.pem"))).unwrap();
    webpki::EndEntityCert::try_from(&chain[0])
        .unwrap()
        .serial()
        .to_vec()
}
