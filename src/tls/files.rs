//! Reading certificates, keys and CRLs from disk. Every error names the file.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{self, PemObject};
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

/// Several files' problems, one a line: loading reads every file before it gives up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileErrors(pub Vec<FileError>);

impl fmt::Display for FileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FileErrors {}

/// A PEM file of one or more certificates, in file order.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, FileError> {
    certificates_in(path, &read(path)?)
}

/// As `certificates`, from the bytes of `path`.
pub fn certificates_in(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, FileError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(path, format!("invalid PEM certificate: {}", pem_problem(&e))))?;
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
    private_key_in(path, &read(path)?)
}

/// As `private_key`, from the bytes of `path`.
pub fn private_key_in(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, FileError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| {
        let why = match e {
            pem::Error::NoItemsFound => "none found".to_string(),
            e => pem_problem(&e),
        };
        error(
            path,
            format!(
                "no usable private key (expected PEM \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\"): {why}"
            ),
        )
    })
}

/// A CRL in PEM or DER.
pub fn crl(path: &Path) -> Result<CertificateRevocationListDer<'static>, FileError> {
    super::crl::decode(&read(path)?).map_err(|e| error(path, e))
}

/// A PEM problem in words: the library's own text shows the offending line as a list of
/// byte values (`[88, 53, 48, ...]`).
pub fn pem_problem(e: &pem::Error) -> String {
    let text = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .chars()
            .take(64)
            .collect::<String>()
    };
    match e {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "a PEM block has no \"-----END {}-----\" line: the file is cut short or damaged",
            text(end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => format!("a malformed PEM line \"{}\"", text(line)),
        pem::Error::Base64Decode(_) => {
            "a PEM block holds characters that are not base64: the file is damaged".to_string()
        }
        pem::Error::NoItemsFound => "nothing of the expected kind".to_string(),
        pem::Error::Io(e) => e.to_string(),
        _ => "not valid PEM".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 23: the PEM library's own words were `[88, 53, 48, ...]` (the line as byte values)
    /// and `InvalidCharacter(33)`.
    #[test]
    fn damaged_pem_is_described_in_words() {
        let good = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki/ssp.pem")).unwrap();
        let text = String::from_utf8(good.clone()).unwrap();
        let bad_base64 = text.replacen("-----\n", "-----\n!!!!", 1);
        for (bytes, words) in [
            (&good[..300], "no \"-----END CERTIFICATE-----\" line"),
            (bad_base64.as_bytes(), "not base64"),
        ] {
            let error = certificates_in(Path::new("x.pem"), bytes)
                .unwrap_err()
                .to_string();
            assert!(error.contains(words), "{error}");
            assert!(
                !error.contains('[') && !error.contains("InvalidCharacter"),
                "{error}"
            );
        }
    }
}
