//! TLS configuration both ways, built from the configuration's files: the consumer-facing
//! server (client certificate required, CRLs in memory) and the provider-facing client (our
//! own certificate, provider hostname verified).

pub mod crl;
pub mod files;
pub mod resumption;
pub mod verifier;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::{Config, CrlCheck, CrlExpired};
use crate::policy::revocation::Revocations;
pub use crl::{CrlSummary, Issuers};
pub use files::FileError;
use files::error;

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

pub fn load(cfg: &Config) -> Result<Tls, FileError> {
    let s = &cfg.server;
    let provider = crypto_provider();
    let chain = files::certificates(&s.certificate)?;
    let key = files::private_key(&s.private_key)?;
    let anchors = files::certificates(&s.client_ca)?;
    let client_roots = roots(&s.client_ca, &anchors)?;
    let extra = s
        .crl
        .iter()
        .filter_map(|c| c.issuer.as_ref())
        .map(|path| Ok((path.clone(), crl::issuer_file(path)?)))
        .collect::<Result<Vec<_>, FileError>>()?;
    let issuers = Issuers::new(&anchors, &extra, &provider.signature_verification_algorithms)
        .map_err(|(path, why)| error(&path, why))?;

    let mut crls: Vec<CrlSummary> = Vec::new();
    for source in &s.crl {
        let path = &source.path;
        let summary = crl::parse(source, &files::read(path)?).map_err(|e| error(path, e))?;
        if let Some(first) = crls.iter().find(|c| c.issuer == summary.issuer) {
            return Err(error(
                path,
                format!(
                    "a second CRL for issuer \"{}\" (the first is {}); keep one per issuer",
                    summary.issuer,
                    first.path.display()
                ),
            ));
        }
        // webpki would refuse every consumer of this issuer at the handshake; say so now.
        if issuers.knows(&summary.issuer_der) {
            issuers
                .verify(
                    &summary.der,
                    &summary.issuer_der,
                    &provider.signature_verification_algorithms,
                )
                .map_err(|why| error(path, format!("CRL signature check failed: {why}")))?;
        }
        // A CRL that is fetched must be checkable, or every fetch would fail at 3 a.m.
        if source.url.is_some() && !issuers.knows(&summary.issuer_der) {
            return Err(error(
                path,
                format!(
                    "its issuer \"{}\" is not a certificate in client_ca; name its certificate with `issuer` so fetched CRLs can be verified",
                    summary.issuer
                ),
            ));
        }
        crls.push(summary);
    }

    let material = Arc::new(Material {
        chain: chain.clone(),
        key: key.clone_key(),
        client_roots: Arc::new(client_roots),
        provider: provider.clone(),
        issuers,
    });
    let ConsumerSide {
        server,
        verifier,
        revocations,
    } = consumer_side(cfg, &material, &crls, None)?;

    let upstream_roots = roots(&cfg.upstream.ca, &files::certificates(&cfg.upstream.ca)?)?;
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(|e| error(&cfg.upstream.ca, e.to_string()))?
        .with_root_certificates(upstream_roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| error(&s.private_key, format!("cannot use as a client certificate: {e}")))?;
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
            .map_err(|e| error(&crl.path, format!("invalid CRL: {e:?}")))?;
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
    let inner = builder
        .build()
        .map_err(|e| error(&s.client_ca, format!("cannot build verifier: {e}")))?;
    let verifier = Arc::new(verifier::ConsumerVerifier {
        inner,
        required_subject: s.client_subject.clone(),
        crl_next_updates: crls.iter().map(|c| (c.issuer.clone(), c.next_update)).collect(),
        deny_stale_crl: s.crl_expired == CrlExpired::Deny,
        warned_stale: AtomicBool::new(false),
    });

    let mut server = ServerConfig::builder_with_provider(material.provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| error(&s.certificate, e.to_string()))?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(material.chain.clone(), material.key.clone_key())
        .map_err(|e| {
            error(
                &s.private_key,
                format!("certificate and key do not work together: {e}"),
            )
        })?;
    match previous {
        Some(previous) => {
            server.session_storage = previous.session_storage.clone();
            server.ticketer = previous.ticketer.clone();
        }
        None => {
            server.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
            server.ticketer = ring::Ticketer::new().map_err(|e| error(&s.certificate, e.to_string()))?;
        }
    }
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ConsumerSide {
        server: Arc::new(server),
        verifier,
        revocations: Revocations::new(owned, s.crl_expired == CrlExpired::Deny),
    })
}

fn roots(path: &std::path::Path, certs: &[CertificateDer<'static>]) -> Result<RootCertStore, FileError> {
    let mut store = RootCertStore::empty();
    for cert in certs {
        store
            .add(cert.clone())
            .map_err(|e| error(path, format!("not a usable trust anchor: {e}")))?;
    }
    Ok(store)
}
