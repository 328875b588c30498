//! Generates the test PKI used by ssp's tests and `ssp demo` (fixtures/pki/).
//!
//! Usage: gen-fixtures OUT_DIR   (normally run through `scripts/gen-fixtures`)
//!
//! Shape of the PKI, mirroring the NHS one:
//!
//!   SSP Test NHS Root Authority (self-signed)        root.pem, root.crl
//!     └── SSP Test NHS Level 1C (intermediate)        level1c.pem, level1c.crl
//!           ├── ssp.localhost, localhost (servers)
//!           └── dispenser-*.example.nhs.uk (consumers)
//!   Other Root (unrelated self-signed CA)             other-root.pem
//!     └── dispenser-a.example.nhs.uk (impostor)
//!
//! Every run makes fresh keys and serial numbers and overwrites everything. After writing, the
//! output is checked with rustls-webpki (the verifier ssp itself uses) and the run fails loudly
//! if any certificate or CRL does not behave as the tests expect.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rand::Rng as _;
use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams, CertificateRevocationList,
    CertificateRevocationListParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams, SerialNumber,
};
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, LineEnding};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use time::{Duration, OffsetDateTime};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;
/// How a certificate fared under rustls-webpki.
type Outcome = std::result::Result<(), webpki::Error>;
/// A set of loaded CRLs, as rustls-webpki takes them.
type Crls<'a> = &'a [&'a webpki::CertRevocationList<'a>];

const NHS_O: &str = "nhs";
const DEVICES_OU: &str = "Devices";

/// The algorithm and size of a generated key.
#[derive(Clone, Copy)]
enum KeyKind {
    Rsa(usize),
    EcdsaP256,
}

/// A certificate authority: its certificate plus what is needed to sign with it.
struct Ca {
    cert: Certificate,
    issuer: Issuer<'static, KeyPair>,
}

/// What distinguishes one leaf certificate from another.
struct LeafSpec<'a> {
    cn: &'a str,
    ou: &'a str,
    sans: &'a [&'a str],
    key: KeyKind,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl<'a> LeafSpec<'a> {
    /// A consumer (dispensing system): `CN=<fqdn>, OU=Devices, O=nhs`, SAN DNS:<fqdn>, RSA-2048,
    /// valid over the standard period.
    fn consumer(fqdn: &'a str, sans: &'a [&'a str]) -> Self {
        let (not_before, not_after) = standard_validity();
        LeafSpec {
            cn: fqdn,
            ou: DEVICES_OU,
            sans,
            key: KeyKind::Rsa(2048),
            not_before,
            not_after,
        }
    }
}

struct Leaf {
    key: KeyPair,
    serial: SerialNumber,
}

/// Everything written, in order, with a line of description: printed and put in the README.
struct Output {
    dir: PathBuf,
    written: Vec<(String, String)>,
}

impl Output {
    fn write(&mut self, name: &str, contents: impl AsRef<[u8]>, what: impl Into<String>) -> Result<()> {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).map_err(|e| format!("writing {}: {e}", path.display()))?;
        self.written.push((name.to_owned(), what.into()));
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn main() -> Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: gen-fixtures OUT_DIR")?;
    std::fs::create_dir_all(&dir)?;
    let mut out = Output {
        dir,
        written: Vec::new(),
    };
    let now = OffsetDateTime::now_utc().replace_nanosecond(0)?;

    // Certificate authorities.
    let root = self_signed_ca(&mut out, "root", "SSP Test NHS Root Authority", NHS_O)?;
    let level1c = intermediate_ca(&mut out, "level1c", "SSP Test NHS Level 1C", NHS_O, &root)?;
    out.write(
        "nhs-ca.pem",
        root.cert.pem(),
        "trust anchors for consumers and providers (= root.pem)",
    )?;
    let other_root = self_signed_ca(&mut out, "other-root", "Other Root", "other")?;

    // Servers: the proxy (also its client certificate to providers) and the demo/test provider.
    let (not_before, not_after) = standard_validity();
    let ssp = LeafSpec {
        cn: "ssp.localhost",
        ou: DEVICES_OU,
        sans: &["localhost", "ssp.localhost", "127.0.0.1"],
        key: KeyKind::Rsa(2048),
        not_before,
        not_after,
    };
    write_leaf(
        &mut out,
        "ssp",
        &ssp,
        &level1c,
        "the proxy's server and client certificate",
    )?;
    let provider = LeafSpec {
        cn: "localhost",
        sans: &["localhost", "127.0.0.1"],
        ..ssp
    };
    write_leaf(
        &mut out,
        "provider",
        &provider,
        &level1c,
        "a provider's server certificate",
    )?;

    // Consumers.
    let consumer_a = write_consumer(
        &mut out,
        "consumer-a",
        "dispenser-a.example.nhs.uk",
        &level1c,
        "consumer A",
    )?;
    write_consumer(
        &mut out,
        "consumer-b",
        "dispenser-b.example.nhs.uk",
        &level1c,
        "consumer B",
    )?;
    let revoked = write_consumer(
        &mut out,
        "consumer-revoked",
        "dispenser-revoked.example.nhs.uk",
        &level1c,
        "consumer whose serial is on level1c.crl",
    )?;
    write_leaf(
        &mut out,
        "consumer-expired",
        &LeafSpec {
            not_before: date_time_ymd(2020, 1, 1),
            not_after: date_time_ymd(2021, 1, 1),
            ..LeafSpec::consumer(
                "dispenser-expired.example.nhs.uk",
                &["dispenser-expired.example.nhs.uk"],
            )
        },
        &level1c,
        "consumer, expired (valid 2020-01-01 to 2021-01-01)",
    )?;
    write_leaf(
        &mut out,
        "consumer-wrong-ou",
        &LeafSpec {
            ou: "Staff",
            ..LeafSpec::consumer(
                "dispenser-wrong-ou.example.nhs.uk",
                &["dispenser-wrong-ou.example.nhs.uk"],
            )
        },
        &level1c,
        "consumer with OU=Staff instead of OU=Devices",
    )?;
    let ecdsa = write_leaf(
        &mut out,
        "consumer-ecdsa",
        &LeafSpec {
            key: KeyKind::EcdsaP256,
            ..LeafSpec::consumer(
                "dispenser-ecdsa.example.nhs.uk",
                &["dispenser-ecdsa.example.nhs.uk"],
            )
        },
        &level1c,
        "consumer with an ECDSA P-256 key",
    )?;
    write_leaf(
        &mut out,
        "consumer-rsa4096",
        &LeafSpec {
            key: KeyKind::Rsa(4096),
            ..LeafSpec::consumer("dispenser-c.example.nhs.uk", &["dispenser-c.example.nhs.uk"])
        },
        &level1c,
        "consumer C with an RSA-4096 key",
    )?;
    write_leaf(
        &mut out,
        "consumer-other-ca",
        &LeafSpec::consumer("dispenser-a.example.nhs.uk", &["dispenser-a.example.nhs.uk"]),
        &other_root,
        "impostor: consumer A's name, issued by Other Root",
    )?;

    // The same keys in the other PEM encodings ssp accepts.
    write_pkcs1_key(&mut out, "consumer-a.rsa.key", &consumer_a.key)?;
    write_sec1_key(&mut out, "consumer-ecdsa.sec1.key", &ecdsa.key)?;

    // Revocation lists.
    let day_ago = now - Duration::days(1);
    let crl_next_update = date_time_ymd(2049, 12, 1);
    let level1c_crl = crl(
        &level1c,
        day_ago,
        crl_next_update,
        1,
        &[(&revoked.serial, day_ago)],
    )?;
    write_crl(
        &mut out,
        "level1c",
        &level1c_crl,
        "Level 1C's CRL, current, revoking consumer-revoked",
    )?;
    let jan_2020 = date_time_ymd(2020, 1, 1);
    let expired_crl = crl(
        &level1c,
        jan_2020,
        date_time_ymd(2020, 2, 1),
        0,
        &[(&revoked.serial, jan_2020)],
    )?;
    write_crl(
        &mut out,
        "level1c-expired",
        &expired_crl,
        "Level 1C's CRL, past nextUpdate (2020-02-01)",
    )?;
    let root_crl = crl(&root, day_ago, crl_next_update, 1, &[])?;
    write_crl(
        &mut out,
        "root",
        &root_crl,
        "the root's CRL, empty (for crl_check = \"chain\")",
    )?;

    write_readme(&mut out, &revoked.serial)?;
    for (name, what) in &out.written {
        println!("wrote {:<40} {what}", out.path(name).display());
    }

    check(&out.dir)?;
    println!("checked: every certificate and CRL behaves as expected under rustls-webpki");
    Ok(())
}

/// 2024-01-01 to 2049-12-31, the validity of the CAs and of every leaf but the expired one.
fn standard_validity() -> (OffsetDateTime, OffsetDateTime) {
    (date_time_ymd(2024, 1, 1), date_time_ymd(2049, 12, 31))
}

fn generate_key(kind: KeyKind) -> Result<KeyPair> {
    match kind {
        KeyKind::Rsa(bits) => {
            // ring cannot generate RSA keys: generate with the pure-Rust rsa crate, then hand
            // the PKCS#8 encoding to rcgen (which signs with ring).
            let rsa = rsa::PrivateKey::new(&mut rand::rng(), bits)?;
            Ok(KeyPair::from_pem(&rsa.to_pkcs8_pem(LineEnding::LF)?)?)
        }
        KeyKind::EcdsaP256 => Ok(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?),
    }
}

/// A random, positive, 16-byte serial number (top bit clear, first byte non-zero).
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

/// `CN=<cn>, OU=<ou>, O=<o>` (encoded O, OU, CN: most significant first).
fn distinguished_name(cn: &str, ou: Option<&str>, o: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, o);
    if let Some(ou) = ou {
        dn.push(DnType::OrganizationalUnitName, ou);
    }
    dn.push(DnType::CommonName, cn);
    dn
}

fn ca_params(cn: &str, o: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    (params.not_before, params.not_after) = standard_validity();
    params.serial_number = Some(random_serial());
    params.distinguished_name = distinguished_name(cn, None, o);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = KeyIdMethod::Sha256;
    params
}

/// Writes `<name>.pem` and `<name>.key` for a self-signed RSA-2048 CA.
fn self_signed_ca(out: &mut Output, name: &str, cn: &str, o: &str) -> Result<Ca> {
    let key = generate_key(KeyKind::Rsa(2048))?;
    let params = ca_params(cn, o);
    let cert = params.self_signed(&key)?;
    finish_ca(out, name, cn, "self-signed root CA", params, cert, key)
}

/// Writes `<name>.pem` and `<name>.key` for an RSA-2048 intermediate CA issued by `parent`.
fn intermediate_ca(out: &mut Output, name: &str, cn: &str, o: &str, parent: &Ca) -> Result<Ca> {
    let key = generate_key(KeyKind::Rsa(2048))?;
    let params = ca_params(cn, o);
    let cert = params.signed_by(&key, &parent.issuer)?;
    finish_ca(
        out,
        name,
        cn,
        "intermediate CA issued by the root",
        params,
        cert,
        key,
    )
}

fn finish_ca(
    out: &mut Output,
    name: &str,
    cn: &str,
    kind: &str,
    params: CertificateParams,
    cert: Certificate,
    key: KeyPair,
) -> Result<Ca> {
    out.write(&format!("{name}.pem"), cert.pem(), format!("\"{cn}\": {kind}"))?;
    out.write(
        &format!("{name}.key"),
        key.serialize_pem(),
        "its private key (PKCS#8)",
    )?;
    Ok(Ca {
        cert,
        issuer: Issuer::new(params, key),
    })
}

/// Issues a leaf certificate (serverAuth + clientAuth) and writes `<name>.pem` (leaf, then the
/// issuer, so that it can be sent as a chain) and `<name>.key` (PKCS#8).
fn write_leaf(out: &mut Output, name: &str, spec: &LeafSpec, issuer: &Ca, what: &str) -> Result<Leaf> {
    let key = generate_key(spec.key)?;
    let serial = random_serial();
    let mut params = CertificateParams::new(spec.sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    params.not_before = spec.not_before;
    params.not_after = spec.not_after;
    params.serial_number = Some(serial.clone());
    params.distinguished_name = distinguished_name(spec.cn, Some(spec.ou), NHS_O);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = match spec.key {
        KeyKind::Rsa(_) => vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ],
        KeyKind::EcdsaP256 => vec![KeyUsagePurpose::DigitalSignature],
    };
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer.issuer)?;

    let key_desc = match spec.key {
        KeyKind::Rsa(bits) => format!("RSA-{bits}"),
        KeyKind::EcdsaP256 => "ECDSA P-256".to_owned(),
    };
    let subject = format!("CN={}, OU={}, O={NHS_O}", spec.cn, spec.ou);
    out.write(
        &format!("{name}.pem"),
        format!("{}{}", cert.pem(), issuer.cert.pem()),
        format!("{what}: {subject}, {key_desc}; chain file (leaf, then its issuer)"),
    )?;
    out.write(
        &format!("{name}.key"),
        key.serialize_pem(),
        "its private key (PKCS#8)",
    )?;
    Ok(Leaf { key, serial })
}

fn write_consumer(out: &mut Output, name: &str, fqdn: &str, issuer: &Ca, what: &str) -> Result<Leaf> {
    write_leaf(out, name, &LeafSpec::consumer(fqdn, &[fqdn]), issuer, what)
}

/// The same RSA key re-encoded as PKCS#1 ("BEGIN RSA PRIVATE KEY").
fn write_pkcs1_key(out: &mut Output, name: &str, key: &KeyPair) -> Result<()> {
    let rsa = rsa::PrivateKey::from_pkcs8_der(key.serialized_der())?;
    let from = name.split('.').next().unwrap_or(name);
    out.write(
        name,
        rsa.to_pkcs1_pem(LineEnding::LF)?.as_bytes(),
        format!("{from}.key as PKCS#1"),
    )
}

/// The same EC key re-encoded as SEC1 ("BEGIN EC PRIVATE KEY"), with the named curve in the
/// parameters field as `openssl ec` writes it (PKCS#8 carries the curve outside the SEC1 body).
fn write_sec1_key(out: &mut Output, name: &str, key: &KeyPair) -> Result<()> {
    use sec1::der::EncodePem as _;
    let pkcs8 = rsa::pkcs8::PrivateKeyInfoRef::try_from(key.serialized_der())?;
    let mut ec = sec1::EcPrivateKey::try_from(pkcs8.private_key.as_bytes())?;
    ec.parameters = Some(sec1::EcParameters::NamedCurve(pkcs8.algorithm.parameters_oid()?));
    let from = name.split('.').next().unwrap_or(name);
    out.write(name, ec.to_pem(LineEnding::LF)?, format!("{from}.key as SEC1"))
}

/// A version 2 CRL (authority key identifier, CRL number) revoking `revoked` for key compromise.
fn crl(
    issuer: &Ca,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
    number: u64,
    revoked: &[(&SerialNumber, OffsetDateTime)],
) -> Result<CertificateRevocationList> {
    let params = CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|(serial, when)| RevokedCertParams {
                serial_number: (*serial).clone(),
                revocation_time: *when,
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    Ok(params.signed_by(&issuer.issuer)?)
}

/// Writes `<name>.crl` (DER) and `<name>.crl.pem`.
fn write_crl(out: &mut Output, name: &str, crl: &CertificateRevocationList, what: &str) -> Result<()> {
    out.write(
        &format!("{name}.crl"),
        crl.der().as_ref(),
        format!("{what} (DER)"),
    )?;
    out.write(&format!("{name}.crl.pem"), crl.pem()?, "the same CRL in PEM")
}

fn write_readme(out: &mut Output, revoked_serial: &SerialNumber) -> Result<()> {
    let mut readme = String::from(
        "# Test PKI\n\n\
         Generated by `scripts/gen-fixtures` (source: `scripts/gen-fixtures-rs/`). **Test use only**:\n\
         every private key here is public. Regenerate everything (fresh keys and serials,\n\
         overwriting these files) from the repository root with:\n\n\
         ```sh\nscripts/gen-fixtures\n```\n\n\
         Certificates: CAs and leaves are valid 2024-01-01 to 2049-12-31 (except\n\
         `consumer-expired.pem`). Leaves carry EKU serverAuth + clientAuth and serial numbers are\n\
         random, positive, 16 bytes. Leaf `.pem` files hold the leaf first and then its issuing CA,\n\
         so that `curl --cert` and rustls send the whole chain. Private keys are PKCS#8 unless\n\
         stated. CRLs are version 2 with authority key identifier and CRL number; current ones run\n\
         from the day before generation to 2049-12-01.\n\n",
    );
    writeln!(
        readme,
        "The revoked serial (consumer-revoked) in this generation: `{}`.\n",
        hex(revoked_serial)
    )?;
    readme.push_str("| file | what it is |\n| --- | --- |\n");
    for (name, what) in &out.written {
        writeln!(readme, "| `{name}` | {what} |")?;
    }
    readme.push_str(
        "\nQuick checks:\n\n```sh\n\
         openssl verify -CAfile fixtures/pki/root.pem -untrusted fixtures/pki/level1c.pem fixtures/pki/consumer-a.pem\n\
         openssl crl -in fixtures/pki/level1c.crl -inform DER -noout -text\n\
         cat fixtures/pki/root.pem fixtures/pki/root.crl.pem fixtures/pki/level1c.crl.pem > /tmp/ca+crls.pem\n\
         openssl verify -crl_check -CAfile /tmp/ca+crls.pem -untrusted fixtures/pki/level1c.pem fixtures/pki/consumer-revoked.pem  # refused\n\
         ```\n",
    );
    out.write("README.md", readme, "this file")
}

fn hex(serial: &SerialNumber) -> String {
    serial
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

// ---------------------------------------------------------------------------------------------
// Self-check: read the files back and verify them the way ssp will, with rustls-webpki.

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    use rustls_pki_types::pem::PemObject as _;
    let certs = CertificateDer::pem_file_iter(path)?.collect::<std::result::Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(format!("{}: no certificates", path.display()).into());
    }
    Ok(certs)
}

fn read_crl(path: &Path) -> Result<webpki::CertRevocationList<'static>> {
    let der = std::fs::read(path)?;
    let crl = webpki::OwnedCertRevocationList::from_der(&der)
        .map_err(|e| format!("{}: rustls-webpki rejects the CRL: {e:?}", path.display()))?;
    Ok(crl.into())
}

fn check(dir: &Path) -> Result<()> {
    use rustls_pki_types::pem::PemObject as _;
    use webpki::{ExpirationPolicy, RevocationCheckDepth, UnknownStatusPolicy};

    let anchor_der = read_pem_certs(&dir.join("nhs-ca.pem"))?.remove(0);
    let anchors = [webpki::anchor_from_trusted_cert(&anchor_der)?];
    let level1c_crl = read_crl(&dir.join("level1c.crl"))?;
    let expired_crl = read_crl(&dir.join("level1c-expired.crl"))?;
    let root_crl = read_crl(&dir.join("root.crl"))?;
    for name in ["level1c.crl.pem", "level1c-expired.crl.pem", "root.crl.pem"] {
        let der = rustls_pki_types::CertificateRevocationListDer::from_pem_file(dir.join(name))?;
        webpki::OwnedCertRevocationList::from_der(&der).map_err(|e| format!("{name}: {e:?}"))?;
    }
    let now = UnixTime::now();

    // Verifies `<name>.pem` as a client (or, with a name, server) certificate against nhs-ca.pem
    // with the given CRLs, checking the whole chain and denying unknown revocation status.
    let verify = |name: &str, crls: Crls<'_>, server_name: Option<&str>| -> Result<Outcome> {
        let chain = read_pem_certs(&dir.join(format!("{name}.pem")))?;
        let ee = webpki::EndEntityCert::try_from(&chain[0])
            .map_err(|e| format!("{name}.pem: not a valid end-entity certificate: {e:?}"))?;
        let revocation = webpki::RevocationOptionsBuilder::new(crls)
            .map_err(|_| "no CRLs")?
            .with_depth(RevocationCheckDepth::Chain)
            .with_status_policy(UnknownStatusPolicy::Deny)
            .with_expiration_policy(ExpirationPolicy::Enforce)
            .build();
        let usage = match server_name {
            Some(_) => webpki::KeyUsage::server_auth(),
            None => webpki::KeyUsage::client_auth(),
        };
        let verified = ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &chain[1..],
            now,
            usage,
            Some(revocation),
            None,
        );
        Ok(match (verified, server_name) {
            (Err(e), _) => Err(e),
            (Ok(_), None) => Ok(()),
            (Ok(_), Some(host)) => ee.verify_is_valid_for_subject_name(&ServerName::try_from(host)?),
        })
    };

    // Each case: certificate, CRLs loaded, server name (None: client auth), expected outcome.
    type Expect = fn(&Outcome) -> bool;
    let ok: Expect = |r| r.is_ok();
    let revoked: Expect = |r| matches!(r, Err(webpki::Error::CertRevoked));
    let expired: Expect = |r| matches!(r, Err(webpki::Error::CertExpired { .. }));
    let unknown_issuer: Expect = |r| matches!(r, Err(webpki::Error::UnknownIssuer));
    let crl_expired: Expect = |r| matches!(r, Err(webpki::Error::CrlExpired { .. }));
    let unknown_status: Expect = |r| matches!(r, Err(webpki::Error::UnknownRevocationStatus));
    let current: Crls = &[&level1c_crl, &root_crl];
    #[rustfmt::skip]
    let cases: &[(&str, Crls, Option<&str>, Expect, &str)] = &[
        ("consumer-a", current, None, ok, "to verify"),
        ("consumer-b", current, None, ok, "to verify"),
        ("consumer-wrong-ou", current, None, ok, "to verify (the OU is ssp's check)"),
        ("consumer-ecdsa", current, None, ok, "to verify"),
        ("consumer-rsa4096", current, None, ok, "to verify"),
        ("ssp", current, None, ok, "to verify as a client"),
        ("ssp", current, Some("ssp.localhost"), ok, "to verify as ssp.localhost"),
        ("ssp", current, Some("localhost"), ok, "to verify as localhost"),
        ("ssp", current, Some("127.0.0.1"), ok, "to verify as 127.0.0.1"),
        ("provider", current, None, ok, "to verify as a client"),
        ("provider", current, Some("localhost"), ok, "to verify as localhost"),
        ("provider", current, Some("127.0.0.1"), ok, "to verify as 127.0.0.1"),
        ("consumer-revoked", current, None, revoked, "CertRevoked"),
        ("consumer-expired", current, None, expired, "CertExpired"),
        ("consumer-other-ca", current, None, unknown_issuer, "UnknownIssuer"),
        ("consumer-a", &[&expired_crl, &root_crl], None, crl_expired, "CrlExpired (level1c-expired.crl)"),
        ("consumer-a", &[&level1c_crl], None, unknown_status, "UnknownRevocationStatus (no root.crl)"),
    ];
    for (name, crls, server_name, expected, want) in cases {
        let outcome = verify(name, crls, *server_name)?;
        if !expected(&outcome) {
            return Err(format!("{name}.pem: expected {want}, got {outcome:?}").into());
        }
    }

    // Each key must match its certificate and load as rcgen (ring) does.
    for name in [
        "ssp",
        "provider",
        "consumer-a",
        "consumer-b",
        "consumer-revoked",
        "consumer-expired",
        "consumer-wrong-ou",
        "consumer-ecdsa",
        "consumer-rsa4096",
        "consumer-other-ca",
    ] {
        let key = KeyPair::from_pem(&std::fs::read_to_string(dir.join(format!("{name}.key")))?)?;
        let cert = &read_pem_certs(&dir.join(format!("{name}.pem")))?[0];
        let ee = webpki::EndEntityCert::try_from(cert)?;
        // webpki's SPKI ends with the subjectPublicKey BIT STRING's content: the raw public key.
        if !ee
            .subject_public_key_info()
            .as_ref()
            .ends_with(key.public_key_raw())
        {
            return Err(format!("{name}.key does not match {name}.pem").into());
        }
    }
    Ok(())
}
