//! TLS configuration both ways, built from the configuration's files: the consumer-facing
//! server (client certificate required, CRLs in memory) and the provider-facing client (our
//! own certificate, provider hostname verified).

pub mod crl;
mod describe;
pub mod files;
pub mod resumption;
pub mod verifier;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use sha2::{Digest, Sha256};

use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::{Config, CrlCheck, CrlExpired};
use crate::policy::revocation::Revocations;
pub use crl::{CrlSummary, Issuers};
pub use describe::{describe, presented};
use files::error;
pub use files::{FileError, FileErrors};

/// Sessions remembered for resumption by session ID (TLS 1.2); TLS 1.3 uses tickets.
const SESSION_CACHE: usize = 8192;

/// Everything TLS, loaded together so a reload swaps it as one.
pub struct Tls {
    pub server: Arc<ServerConfig>,
    /// The client certificate check `server` runs, also run on open connections (row 8).
    pub verifier: Arc<verifier::ConsumerVerifier>,
    pub client: Arc<ClientConfig>,
    pub revocations: Revocations,
    pub crls: Vec<CrlSummary>,
    pub material: Arc<Material>,
}

/// What the consumer-facing config is built from, kept so that a refreshed CRL can rebuild
/// it without reading any file again (a refresh must not pick up a half-edited key).
pub struct Material {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    pub issuers: Issuers,
    /// Every file read for this configuration and the SHA-256 of the bytes used, in the
    /// order read: what the audit's `config` record lists.
    pub files: Vec<(PathBuf, [u8; 32])>,
}

impl Material {
    /// Checks a CRL's signature against the certificate of its issuer.
    pub fn verify_crl(&self, crl: &CrlSummary) -> Result<(), String> {
        self.issuers.verify(
            &crl.der,
            &crl.issuer_der,
            &self.provider.signature_verification_algorithms,
        )
    }
}

/// ring with the suites NHS guidance allows: TLS 1.3's, and ECDHE with AES-GCM for TLS 1.2.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    use rustls::CipherSuite as S;
    let mut provider = ring::default_provider();
    provider.cipher_suites.retain(|s| {
        matches!(
            s.suite(),
            S::TLS13_AES_128_GCM_SHA256
                | S::TLS13_AES_256_GCM_SHA384
                | S::TLS13_CHACHA20_POLY1305_SHA256
                | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
                | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
        )
    });
    Arc::new(provider)
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Reads every file `load` needs, keeping each one's digest and every problem: loading goes on
/// past a bad file, so that one `ssp check` names them all.
#[derive(Default)]
struct Reader {
    problems: Vec<FileError>,
    files: Vec<(PathBuf, [u8; 32])>,
}

impl Reader {
    fn keep<T>(&mut self, result: Result<T, FileError>) -> Option<T> {
        result.map_err(|e| self.problems.push(e)).ok()
    }

    fn read(&mut self, path: &Path) -> Option<Vec<u8>> {
        let bytes = self.keep(files::read(path))?;
        if !self.files.iter().any(|(p, _)| p == path) {
            self.files
                .push((path.to_path_buf(), Sha256::digest(bytes.as_slice()).into()));
        }
        Some(bytes)
    }

    fn certificates(&mut self, path: &Path) -> Option<Vec<CertificateDer<'static>>> {
        let bytes = self.read(path)?;
        self.keep(files::certificates_in(path, &bytes))
    }
}

pub fn load(cfg: &Config) -> Result<Tls, FileErrors> {
    let s = &cfg.server;
    let provider = crypto_provider();
    let mut r = Reader::default();
    let chain = r.certificates(&s.certificate);
    let key = r
        .read(&s.private_key)
        .and_then(|bytes| r.keep(files::private_key_in(&s.private_key, &bytes)));
    let anchors = r.certificates(&s.client_ca);
    let client_roots = anchors.as_ref().and_then(|a| r.keep(roots(&s.client_ca, a)));
    let named: Vec<_> = s
        .crl
        .iter()
        .filter_map(|c| c.issuer.as_ref())
        .filter_map(|path| Some((path.clone(), r.certificates(path)?.remove(0))))
        .collect();
    let held = chain.as_deref().and_then(|c| c.get(1..)).unwrap_or_default();
    let issuers = anchors.as_ref().and_then(|anchors| {
        let issuers = Issuers::new(anchors, &named, held, &provider.signature_verification_algorithms);
        r.keep(issuers.map_err(|(path, why)| error(&path, why)))
    });
    let mut crls: Vec<CrlSummary> = Vec::new();
    for source in &s.crl {
        let path = &source.path;
        let Some(summary) = r
            .read(path)
            .and_then(|bytes| r.keep(crl::parse(source, &bytes).map_err(|e| error(path, e))))
        else {
            continue;
        };
        if let Some(first) = crls.iter().find(|c| c.issuer == summary.issuer) {
            r.problems.push(error(
                path,
                format!(
                    "a second CRL for issuer \"{}\" (the first is {}); keep one per issuer",
                    summary.issuer,
                    first.path.display()
                ),
            ));
        }
        if let Some(issuers) = &issuers {
            r.keep(crl_issuer_known(cfg, issuers, &summary, &provider));
        }
        crls.push(summary);
    }
    if let Some(anchors) = &anchors {
        r.problems.extend(anchors_without_crl(cfg, anchors, &crls));
    }
    let upstream_roots = r
        .certificates(&cfg.upstream.ca)
        .and_then(|certs| r.keep(roots(&cfg.upstream.ca, &certs)));
    let (Some(chain), Some(key), Some(client_roots), Some(issuers), Some(upstream_roots), []) = (
        chain,
        key,
        client_roots,
        issuers,
        upstream_roots,
        r.problems.as_slice(),
    ) else {
        return Err(FileErrors(r.problems));
    };

    let material = Arc::new(Material {
        chain: chain.clone(),
        key: key.clone_key(),
        client_roots: Arc::new(client_roots),
        provider: provider.clone(),
        issuers,
        files: r.files,
    });
    let ConsumerSide {
        server,
        verifier,
        revocations,
    } = consumer_side(cfg, &material, &crls, None).map_err(|e| FileErrors(vec![e]))?;

    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(|e| FileErrors(vec![error(&cfg.upstream.ca, describe(&e))]))?
        .with_root_certificates(upstream_roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            FileErrors(vec![error(
                &s.private_key,
                format!("cannot use as a client certificate: {}", describe(&e)),
            )])
        })?;
    client.alpn_protocols = vec![b"http/1.1".to_vec()];

    Ok(Tls {
        server,
        verifier,
        client: Arc::new(client),
        revocations,
        crls,
        material,
    })
}

/// A CRL is only of use when its issuer is a CA we can place under `client_ca`: then its
/// signature is checked now, not at the first handshake. A CRL from anywhere else covers no
/// consumer, and the consumers of the CA it was meant for are refused at every handshake
/// (unknown revocation status): `ssp check` said "ok" and then every consumer was refused.
fn crl_issuer_known(
    cfg: &Config,
    issuers: &Issuers,
    crl: &CrlSummary,
    provider: &CryptoProvider,
) -> Result<(), FileError> {
    if !issuers.knows(&crl.issuer_der) {
        return Err(error(
            &crl.path,
            format!(
                "this CRL is issued by \"{}\", which is neither a trust anchor in client_ca ({}) \
                 nor a CA certificate that chains to one (the CA certificates after the first in \
                 `certificate`, or the entry's `issuer`): it covers no consumer, and consumers \
                 whose issuer has no CRL are refused at every handshake. If it is an \
                 intermediate CA's CRL, write the entry as {{ path = \"...\", issuer = \"<that \
                 CA's certificate>\" }}",
                crl.issuer,
                cfg.server.client_ca.display()
            ),
        ));
    }
    issuers
        .verify(
            &crl.der,
            &crl.issuer_der,
            &provider.signature_verification_algorithms,
        )
        .map_err(|why| error(&crl.path, format!("CRL signature check failed: {why}")))
}

/// Under `crl_check = "chain"` the certificate right below each trust anchor needs the
/// anchor's CRL, or every consumer under it is refused (unknown revocation status).
fn anchors_without_crl(cfg: &Config, anchors: &[CertificateDer<'_>], crls: &[CrlSummary]) -> Vec<FileError> {
    if cfg.server.crl_check != CrlCheck::Chain || cfg.server.crl.is_empty() {
        return Vec::new();
    }
    anchors
        .iter()
        .filter_map(|cert| webpki::anchor_from_trusted_cert(cert).ok())
        .filter(|anchor| !crls.iter().any(|c| c.issuer_der == *anchor.subject))
        .map(|anchor| {
            let name = crate::x509::parse_name(&anchor.subject)
                .map_or_else(String::new, |n| crate::x509::format_name(&n));
            error(
                &cfg.server.client_ca,
                format!(
                    "crl_check = \"chain\" checks every certificate below a trust anchor, but no \
                     CRL in `crl` is issued by the trust anchor \"{name}\": every consumer under \
                     it would be refused. Add its CRL, or use crl_check = \"leaf\""
                ),
            )
        })
        .collect()
}

/// The consumer-facing half of `Tls`, rebuilt together for a new CRL set.
pub struct ConsumerSide {
    pub server: Arc<ServerConfig>,
    pub verifier: Arc<verifier::ConsumerVerifier>,
    pub revocations: Revocations,
}

/// The consumer-facing server config, its client certificate verifier and the row-8
/// revocation store for `crls`. With `previous`, its session cache and ticket keys are kept,
/// so a CRL refresh does not end every consumer's session resumption (row 8 judges resumed
/// connections again anyway).
pub fn consumer_side(
    cfg: &Config,
    material: &Material,
    crls: &[CrlSummary],
    previous: Option<&ServerConfig>,
) -> Result<ConsumerSide, FileError> {
    let s = &cfg.server;
    let mut owned = Vec::with_capacity(crls.len());
    for crl in crls {
        let parsed = webpki::OwnedCertRevocationList::from_der(&crl.der)
            .map_err(|_| error(&crl.path, "not a CRL webpki can use"))?;
        owned.push((parsed, crl.next_update));
    }
    let crl_ders: Vec<_> = crls.iter().map(|c| c.der.clone()).collect();
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(material.client_roots.clone(), material.provider.clone())
            .with_crls(crl_ders);
    if s.crl_check == CrlCheck::Leaf {
        builder = builder.only_check_end_entity_revocation();
    }
    if s.crl_expired == CrlExpired::Deny {
        builder = builder.enforce_revocation_expiration();
    }
    let inner = builder.build().map_err(|e| {
        let why = match e {
            rustls::server::VerifierBuilderError::NoRootAnchors => "it holds no trust anchor",
            _ => "a CRL cannot be used with it",
        };
        error(&s.client_ca, format!("cannot check consumer certificates: {why}"))
    })?;
    let verifier = Arc::new(verifier::ConsumerVerifier {
        inner,
        required_subject: s.client_subject.clone(),
        crl_next_updates: crls.iter().map(|c| (c.issuer.clone(), c.next_update)).collect(),
        deny_stale_crl: s.crl_expired == CrlExpired::Deny,
        warned_stale: AtomicBool::new(false),
    });

    let mut server = ServerConfig::builder_with_provider(material.provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| error(&s.certificate, describe(&e)))?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(material.chain.clone(), material.key.clone_key())
        .map_err(|e| {
            error(
                &s.private_key,
                format!("certificate and key do not work together: {}", describe(&e)),
            )
        })?;
    match previous {
        Some(previous) => {
            server.session_storage = previous.session_storage.clone();
            server.ticketer = previous.ticketer.clone();
        }
        None => {
            server.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
            server.ticketer = ring::Ticketer::new().map_err(|e| error(&s.certificate, describe(&e)))?;
        }
    }
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ConsumerSide {
        server: Arc::new(server),
        verifier,
        revocations: Revocations::new(owned, s.crl_expired == CrlExpired::Deny),
    })
}

fn roots(path: &Path, certs: &[CertificateDer<'static>]) -> Result<RootCertStore, FileError> {
    let mut store = RootCertStore::empty();
    for cert in certs {
        store
            .add(cert.clone())
            .map_err(|e| error(path, format!("not a usable trust anchor: {}", describe(&e))))?;
    }
    Ok(store)
}
