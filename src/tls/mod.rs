//! TLS configuration both ways, built from the configuration's files: the consumer-facing
//! server (client certificate required, CRLs in memory) and the provider-facing client (our
//! own certificate, provider hostname verified).

pub mod files;
pub mod verifier;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use rustls::crypto::{CryptoProvider, ring};
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::{Config, CrlCheck, CrlExpired};
use crate::policy::revocation::Revocations;
use crate::x509;
pub use files::FileError;
use files::error;

/// Sessions remembered for resumption by session ID (TLS 1.2); TLS 1.3 uses tickets.
const SESSION_CACHE: usize = 8192;

/// Everything TLS, loaded together so a reload swaps it as one.
pub struct Tls {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
    pub revocations: Revocations,
    pub crls: Vec<CrlSummary>,
}

/// What `ssp check` and the logs say about each CRL.
#[derive(Debug, Clone)]
pub struct CrlSummary {
    pub path: PathBuf,
    pub issuer: String,
    pub this_update: i64,
    pub next_update: Option<i64>,
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
    let client_roots = roots(&s.client_ca)?;

    let mut crl_ders = Vec::new();
    let mut owned = Vec::new();
    let mut crls: Vec<CrlSummary> = Vec::new();
    for path in &s.crl {
        let der = files::crl(path)?;
        let parsed = webpki::OwnedCertRevocationList::from_der(&der)
            .map_err(|e| error(path, format!("invalid CRL: {e:?}")))?;
        let info = x509::crl_info(&der).ok_or_else(|| error(path, "invalid CRL: cannot read its dates"))?;
        let issuer = x509::parse_name(&info.issuer)
            .map(|n| x509::format_name(&n))
            .unwrap_or_default();
        if let Some(first) = crls.iter().find(|c| c.issuer == issuer) {
            return Err(error(
                path,
                format!(
                    "a second CRL for issuer \"{issuer}\" (the first is {}); keep one per issuer",
                    first.path.display()
                ),
            ));
        }
        crls.push(CrlSummary {
            path: path.clone(),
            issuer,
            this_update: info.this_update,
            next_update: info.next_update,
        });
        crl_ders.push(der);
        owned.push((parsed, info.next_update));
    }

    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(client_roots), provider.clone())
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
    let verifier = verifier::ConsumerVerifier {
        inner,
        required_subject: s.client_subject.clone(),
        crl_next_updates: crls.iter().map(|c| (c.issuer.clone(), c.next_update)).collect(),
        deny_stale_crl: s.crl_expired == CrlExpired::Deny,
        warned_stale: AtomicBool::new(false),
    };

    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| error(&s.certificate, e.to_string()))?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| {
            error(
                &s.private_key,
                format!("certificate and key do not work together: {e}"),
            )
        })?;
    server.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    server.ticketer = ring::Ticketer::new().map_err(|e| error(&s.certificate, e.to_string()))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];

    let upstream_roots = roots(&cfg.upstream.ca)?;
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(|e| error(&cfg.upstream.ca, e.to_string()))?
        .with_root_certificates(upstream_roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| error(&s.private_key, format!("cannot use as a client certificate: {e}")))?;
    client.alpn_protocols = vec![b"http/1.1".to_vec()];

    Ok(Tls {
        server: Arc::new(server),
        client: Arc::new(client),
        revocations: Revocations::new(owned, s.crl_expired == CrlExpired::Deny),
        crls,
    })
}

fn roots(path: &std::path::Path) -> Result<RootCertStore, FileError> {
    let mut store = RootCertStore::empty();
    for cert in files::certificates(path)? {
        store
            .add(cert)
            .map_err(|e| error(path, format!("not a usable trust anchor: {e}")))?;
    }
    Ok(store)
}
