//! Keeping CRLs fresh (`crl = [{ path, url }]`): fetch over HTTP, check, store, put in force.
//!
//! `decide` holds the decisions (accept or not, when next) as pure functions; `http` the
//! request and the parsing of the answer; `store` the atomic file write; `refresher` the one
//! thread that does the I/O while the proxy runs. `ssp crl fetch` runs the same `fetch`
//! pipeline once in the foreground.

pub mod decide;
pub mod http;
pub mod refresher;

use std::fmt;

use crate::config::CrlRefresh;
use crate::tls::{self, CrlSummary, Material};
use crate::x509::format_utc;
use decide::Judgement;

/// The wall clock in seconds since the epoch, as CRL dates are; read at the edges (the
/// refresher, `/readyz`, the command line) and passed into the decisions.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Why a fetched CRL was not put in force. The CRL held stays in force in every case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Name resolution, connection, I/O or a timeout.
    Unreachable(String),
    HttpStatus(u16),
    /// The HTTP answer could not be framed (truncated, ambiguous).
    BadResponse(String),
    TooLarge(u64),
    /// The body is not a CRL (garbage, an HTML page, truncated DER).
    NotACrl(String),
    /// Signed by another issuer than the CRL held (its name).
    WrongIssuer(String),
    BadSignature(String),
    /// thisUpdate or the CRL number goes backwards.
    Older,
    /// Already past its nextUpdate (seconds since the epoch).
    Expired(i64),
    /// Put in force, but the file could not be replaced: a reload or restart would bring the
    /// older file back.
    Write(String),
}

impl Failure {
    /// The `reason` label of `ssp_crl_refresh_failures_total` (see `metrics::CRL_FAILURES`).
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Unreachable(_) => "unreachable",
            Failure::HttpStatus(_) => "http_status",
            Failure::BadResponse(_) => "bad_response",
            Failure::TooLarge(_) => "too_large",
            Failure::NotACrl(_) => "not_a_crl",
            Failure::WrongIssuer(_) => "wrong_issuer",
            Failure::BadSignature(_) => "bad_signature",
            Failure::Older => "older",
            Failure::Expired(_) => "expired",
            Failure::Write(_) => "write",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Unreachable(why) => write!(f, "unreachable: {why}"),
            Failure::HttpStatus(status) => write!(f, "HTTP status {status}"),
            Failure::BadResponse(why) => write!(f, "bad HTTP answer: {why}"),
            Failure::TooLarge(max) => write!(f, "larger than crl_max_bytes ({max} bytes)"),
            Failure::NotACrl(why) => write!(f, "not a CRL: {why}"),
            Failure::WrongIssuer(issuer) => {
                write!(f, "issued by \"{issuer}\", not by the issuer of the CRL held")
            }
            Failure::BadSignature(why) => write!(f, "signature check failed: {why}"),
            Failure::Older => {
                f.write_str("older than the CRL held (thisUpdate or CRL number goes backwards)")
            }
            Failure::Expired(next) => write!(f, "already past its nextUpdate ({})", format_utc(*next)),
            Failure::Write(why) => write!(f, "in force, but the file was not replaced: {why}"),
        }
    }
}

/// Fetches the CRL published for `held` and checks it: parsed, signed by its issuer,
/// newer than `held`, not stale at `now`. `Ok(None)` means the same issue is still published.
/// Returns the candidate and the bytes to store.
pub fn fetch(
    held: &CrlSummary,
    material: &Material,
    settings: &CrlRefresh,
    now: i64,
) -> Result<Option<(CrlSummary, Vec<u8>)>, Failure> {
    let Some(url) = &held.url else { return Ok(None) };
    let bytes = http::get(url, settings)?;
    let source = crate::config::CrlSource {
        path: held.path.clone(),
        url: held.url.clone(),
        issuer: None,
    };
    let candidate = tls::crl::parse(&source, &bytes).map_err(Failure::NotACrl)?;
    // Refusing on unverified fields is harmless; only accepting needs the signature.
    match decide::judge(held, &candidate, now) {
        Judgement::Newer => {
            material.verify_crl(&candidate).map_err(Failure::BadSignature)?;
            Ok(Some((candidate, bytes)))
        }
        Judgement::Unchanged => Ok(None),
        Judgement::Refused(failure) => Err(failure),
    }
}

/// What one refresh of one CRL came to, for logs and `ssp crl fetch`.
#[derive(Debug)]
pub enum Outcome {
    Updated(CrlSummary),
    Unchanged,
    Failed(Failure),
}

impl Outcome {
    pub fn line(&self, held: &CrlSummary) -> String {
        let url = held.url.as_ref().map_or(String::new(), ToString::to_string);
        match self {
            Outcome::Updated(new) => format!(
                "{}: updated from {url} (thisUpdate {}, nextUpdate {}, {} revoked)",
                held.path.display(),
                format_utc(new.this_update),
                new.next_update.map_or("none".into(), format_utc),
                new.revoked
            ),
            Outcome::Unchanged => format!("{}: unchanged ({url})", held.path.display()),
            Outcome::Failed(why) => format!("{}: failed: {url}: {why}", held.path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_label_is_a_metrics_reason() {
        let all = [
            Failure::Unreachable(String::new()),
            Failure::HttpStatus(404),
            Failure::BadResponse(String::new()),
            Failure::TooLarge(1),
            Failure::NotACrl(String::new()),
            Failure::WrongIssuer(String::new()),
            Failure::BadSignature(String::new()),
            Failure::Older,
            Failure::Expired(0),
            Failure::Write(String::new()),
        ];
        for failure in all {
            assert!(
                crate::metrics::CRL_FAILURES.contains(&failure.label()),
                "{failure}"
            );
        }
    }
}
