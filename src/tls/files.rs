//! Reading certificates, keys and CRLs from disk. Every error names the file.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub path: PathBuf,
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for FileError {}

pub fn error(path: &Path, message: impl Into<String>) -> FileError {
    FileError {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

pub fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    crate::regular_file::read(path).map_err(|e| error(path, format!("cannot read: {e}")))
}

/// A PEM file of one or more certificates, in file order.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, FileError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(path, format!("invalid PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(error(
            path,
            "no certificate found (expected PEM \"BEGIN CERTIFICATE\")",
        ));
    }
    Ok(certs)
}

/// A PKCS#8, PKCS#1 or SEC1 private key in PEM.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, FileError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        error(
            path,
            format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
        )
    })
}

/// A CRL in PEM or DER.
pub fn crl(path: &Path) -> Result<CertificateRevocationListDer<'static>, FileError> {
    super::crl::decode(&read(path)?).map_err(|e| error(path, e))
}
