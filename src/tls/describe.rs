//! rustls errors in words, for the log and the audit. rustls' own `Display` shows several of
//! them as Rust values (`Other(OtherError(SubjectMismatch))`, `KeyMismatch`, times as
//! `1796171838 (UNIX)`), which an operator should not have to decode.

use rustls::pki_types::UnixTime;
use rustls::{AlertDescription, CertificateError, Error, InconsistentKeys};

use crate::policy::identity::Identity;
use crate::x509::format_utc;

/// What went wrong, in a phrase an operator can act on.
pub fn describe(error: &Error) -> String {
    match error {
        Error::NoCertificatesPresented => "no client certificate was presented".into(),
        Error::InvalidCertificate(e) => certificate(e),
        Error::PeerIncompatible(_) => {
            "the peer offers nothing we accept (TLS 1.3, or TLS 1.2 with ECDHE and AES-GCM)".into()
        }
        Error::PeerMisbehaved(_) => "the peer broke the TLS protocol".into(),
        Error::InvalidMessage(_)
        | Error::InappropriateMessage { .. }
        | Error::InappropriateHandshakeMessage { .. } => {
            "the peer sent a malformed or unexpected TLS message (is it speaking TLS?)".into()
        }
        Error::AlertReceived(alert) => format!(
            "the peer ended the handshake with the TLS alert \"{}\"",
            alert_name(*alert)
        ),
        Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => {
            "the private key is not the key of the certificate (the first one in the chain file)".into()
        }
        Error::InconsistentKeys(_) => "cannot tell whether the private key belongs to the certificate".into(),
        Error::InvalidCertRevocationList(_) => {
            "a CRL cannot be used (damaged, or not signed by its issuer)".into()
        }
        Error::DecryptError => "a TLS record could not be decrypted".into(),
        Error::General(text) => text.clone(),
        other => other.to_string(),
    }
}

fn certificate(error: &CertificateError) -> String {
    use CertificateError as C;
    let at = |t: &UnixTime| format_utc(i64::try_from(t.as_secs()).unwrap_or(i64::MAX));
    match error {
        C::BadEncoding => "the certificate cannot be parsed".into(),
        C::Expired => "the certificate has expired".into(),
        C::ExpiredContext { time, not_after } => {
            format!(
                "the certificate expired at {} (it is now {})",
                at(not_after),
                at(time)
            )
        }
        C::NotValidYet => "the certificate is not valid yet".into(),
        C::NotValidYetContext { time, not_before } => format!(
            "the certificate is not valid before {} (it is now {})",
            at(not_before),
            at(time)
        ),
        C::Revoked => "the certificate is revoked (on its issuer's CRL)".into(),
        C::UnknownIssuer => "the certificate does not chain to a trusted CA (unknown issuer)".into(),
        C::UnknownRevocationStatus => {
            "no CRL is loaded for the certificate's issuer, so whether it is revoked is unknown (refused)"
                .into()
        }
        C::ExpiredRevocationList => {
            "a CRL is past its nextUpdate and crl_expired = \"deny\": every certificate is refused".into()
        }
        C::ExpiredRevocationListContext { next_update, .. } => format!(
            "the CRL of the certificate's issuer is past its nextUpdate ({}) and crl_expired = \"deny\"",
            at(next_update)
        ),
        C::BadSignature => "a signature in the certificate chain does not verify".into(),
        C::UnsupportedSignatureAlgorithmContext { .. }
        | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "the certificate is signed with an algorithm we do not support".into()
        }
        C::NotValidForName => "the certificate is not for this host name".into(),
        C::NotValidForNameContext { expected, presented } => format!(
            "the certificate is for {} but the host is {}",
            presented.join(", "),
            expected.to_str()
        ),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            "the certificate is not meant for this use (its extended key usage)".into()
        }
        C::UnhandledCriticalExtension => "the certificate has a critical extension we do not know".into(),
        // Ours (`tls::verifier::ExtraRefusal`) and webpki's say it in words.
        C::Other(other) => other.0.to_string(),
        _ => "the certificate is not acceptable".into(),
    }
}

fn alert_name(alert: AlertDescription) -> String {
    use AlertDescription as A;
    match alert {
        A::BadCertificate => "bad certificate".into(),
        A::UnsupportedCertificate => "unsupported certificate".into(),
        A::CertificateRevoked => "certificate revoked".into(),
        A::CertificateExpired => "certificate expired".into(),
        A::CertificateUnknown => "certificate unknown".into(),
        A::UnknownCA => "unknown CA".into(),
        A::AccessDenied => "access denied".into(),
        A::HandshakeFailure => "handshake failure".into(),
        A::ProtocolVersion => "protocol version".into(),
        A::DecryptError => "decrypt error".into(),
        A::CertificateRequired => "certificate required".into(),
        other => format!("number {}", u8::from(other)),
    }
}

/// The certificate a refused handshake presented, for its log line and `tls` record.
pub fn presented(identity: &Identity) -> String {
    format!(
        "subject \"{}\", issuer \"{}\", serial {}, expires {}",
        identity.subject,
        identity.issuer,
        identity.serial_hex,
        format_utc(identity.not_after)
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn errors_are_words_with_iso_dates_not_rust_values() {
        let t = |s| UnixTime::since_unix_epoch(std::time::Duration::from_secs(s));
        let cases = [
            (
                Error::InvalidCertificate(CertificateError::ExpiredContext {
                    time: t(1_796_171_838),
                    not_after: t(1_609_459_200),
                }),
                "expired at 2021-01-01T00:00:00Z",
            ),
            (
                Error::InconsistentKeys(InconsistentKeys::KeyMismatch),
                "private key is not the key of the certificate",
            ),
            (
                Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
                    crate::tls::verifier::ExtraRefusal::SubjectMismatch,
                )))),
                "lacks the attributes of client_subject",
            ),
            (
                Error::InvalidCertificate(CertificateError::UnknownRevocationStatus),
                "no CRL is loaded",
            ),
            (
                Error::AlertReceived(AlertDescription::UnknownCA),
                "\"unknown CA\"",
            ),
        ];
        for (error, words) in cases {
            let text = describe(&error);
            assert!(text.contains(words), "{error:?}: {text}");
            for rust in ["Context", "OtherError", "KeyMismatch", "(UNIX)", "UnknownCA"] {
                assert!(!text.contains(rust), "{error:?}: {text}");
            }
        }
    }
}
