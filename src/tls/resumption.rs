//! The consumer-facing TLS configuration for an address under the refused-handshake limit
//! (`[limits] refused_handshakes`): the same certificate, session cache and ticket keys, but a
//! private key that will not sign. A resumed handshake needs no signature, so a consumer
//! resuming a session it was given earlier is served; a full handshake fails at the point it
//! would sign, before any private-key work. So someone else's failed handshakes from a shared
//! (NAT) address cannot lock out a consumer that has been served from it, and a flood of them
//! still costs no RSA work.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{ServerConfig, SignatureAlgorithm, SignatureScheme};

/// `server` with its certificate resolver wrapped so that full handshakes fail.
pub fn resumption_only(server: &Arc<ServerConfig>) -> Arc<ServerConfig> {
    let mut only = ServerConfig::clone(server);
    only.cert_resolver = Arc::new(WillNotSign(server.cert_resolver.clone()));
    Arc::new(only)
}

#[derive(Debug)]
struct WillNotSign(Arc<dyn ResolvesServerCert>);

impl ResolvesServerCert for WillNotSign {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // rustls resolves the certificate before it looks at resumption (the suite depends on
        // the key's algorithm), so the certificate must be there; only its key is withheld.
        let real = self.0.resolve(hello)?;
        Some(Arc::new(CertifiedKey::new(
            real.cert.clone(),
            Arc::new(Unsigning(real.key.algorithm())),
        )))
    }
}

/// A key of the real one's algorithm that offers no signature scheme.
#[derive(Debug)]
struct Unsigning(SignatureAlgorithm);

impl SigningKey for Unsigning {
    fn choose_scheme(&self, _offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        None
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.0
    }
}
