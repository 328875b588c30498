//! Row 8: the consumer's certificate is looked up in the CRLs on every request, because a
//! resumed TLS session is not re-verified and a CRL can change while a connection is open.

use webpki::{CertRevocationList, OwnedCertRevocationList};

use super::identity::Identity;

/// The CRLs in force, one per issuer. Swapped as a whole on reload.
#[derive(Debug, Default)]
pub struct Revocations {
    lists: Vec<CertRevocationList<'static>>,
}

impl Revocations {
    pub fn new(lists: Vec<OwnedCertRevocationList>) -> Self {
        Revocations {
            lists: lists.into_iter().map(CertRevocationList::from).collect(),
        }
    }

    pub fn is_revoked(&self, identity: &Identity) -> bool {
        self.lists.iter().any(|crl| {
            // A CRL entry we cannot parse is treated as revoking: fail closed.
            crl.issuer() == identity.issuer_der.as_slice()
                && !matches!(crl.find_serial(&identity.serial_der), Ok(None))
        })
    }
}
