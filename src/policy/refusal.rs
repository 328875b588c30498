//! SPEC section 4 as one table: every way the proxy refuses or fails a request, with its
//! status, FHIR issue code, token and whether the connection closes.

use crate::http::answer::{Answer, IssueCode, OutcomeId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Row 2.
    RequestTimeout,
    /// Row 3.
    InvalidRequest,
    /// Row 4.
    HeadTooLarge,
    /// Row 5.
    InvalidTarget,
    /// Row 6; carries the allowed methods for the `Allow` field.
    MethodNotAllowed { allowed: String },
    /// Row 7; the header's canonical name, e.g. `Ssp-From`.
    InvalidHeader(&'static str),
    /// Row 7 under `[jwt] mode = "enforce"`: a well-formed JWT that breaks a published rule.
    Jwt(JwtRule),
    /// Row 8: on a CRL in force (or no longer trusted).
    CertificateRevoked,
    /// Row 8: past its notAfter.
    CertificateExpired,
    /// Row 9.
    SenderCheckFailed { from: String },
    /// Row 10.
    ReceiverCheckFailed { to: String },
    /// Row 11.
    NoAgreement { from: String, to: String },
    /// Row 12.
    EndpointMismatch {
        endpoint: String,
        /// The endpoint's SDS CPA id, when configured: Spine names it in the token.
        cpaid: Option<String>,
        target: String,
    },
    /// Row 13.
    PayloadTooLarge,
    /// Row 14, with the figures for `Retry-After` and `X-Rate-Limit-*` (seconds, rounded up).
    Throttled {
        from: String,
        limit: u32,
        retry_after: u64,
        reset: u64,
    },
    /// Row 15.
    ProviderBusy { to: String },
    /// Row 16: the `req` record could not be made durable.
    AuditUnavailable,
    /// Beside row 16, under `[server] clock_unsynced = "deny"`: the kernel says the clock is
    /// not synchronised, and dates cannot be judged by it.
    ClockNotSynchronised,
    /// Row 17.
    ProviderFailed { target: String },
    /// Row 18.
    ProviderTimeout { target: String },
}

/// The rules `[jwt] mode = "enforce"` adds to row 7 (`policy::jwt`), one token each. Neither
/// the Spine SSP nor GP Connect publishes tokens for them (GP Connect providers answer
/// `BAD_REQUEST` for any bad claim), so these are ours, in Spine's style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtRule {
    /// `exp` absent, not an integer, or before `iat`.
    Exp,
    /// `iat` absent or not an integer.
    Iat,
    /// `exp` passed, beyond the leeway.
    Expired,
    /// `iat` ahead of the clock, beyond the leeway.
    IssuedInTheFuture,
    /// `exp - iat` over 300 seconds.
    LifetimeTooLong,
    ReasonNotDirectCare,
    /// No `[jwt] scopes` entry for the interaction: refused, as nothing says what is allowed.
    NoScopes,
    /// `requested_scope` absent or not one of the interaction's.
    ScopeNotAllowed,
    /// `bind_sender`: `iss` is not `Ssp-From`.
    IssNotSender {
        from: String,
    },
    /// `bind_sender`: the `requesting_device` identifier is not `Ssp-From`.
    DeviceNotSender {
        from: String,
    },
}

impl JwtRule {
    pub fn token(&self) -> String {
        let (token, from) = match self {
            JwtRule::Exp => ("MISSING_OR_INVALID_JWT_CLAIM_exp", None),
            JwtRule::Iat => ("MISSING_OR_INVALID_JWT_CLAIM_iat", None),
            JwtRule::Expired => ("JWT_EXPIRED", None),
            JwtRule::IssuedInTheFuture => ("JWT_ISSUED_IN_THE_FUTURE", None),
            JwtRule::LifetimeTooLong => ("JWT_LIFETIME_TOO_LONG", None),
            JwtRule::ReasonNotDirectCare => ("JWT_REASON_FOR_REQUEST_NOT_DIRECTCARE", None),
            JwtRule::NoScopes => ("JWT_NO_SCOPES_FOR_INTERACTION", None),
            JwtRule::ScopeNotAllowed => ("JWT_REQUESTED_SCOPE_NOT_ALLOWED", None),
            JwtRule::IssNotSender { from } => ("JWT_ISS_VARIES_FROM_MESSAGESENDER_", Some(from)),
            JwtRule::DeviceNotSender { from } => {
                ("JWT_REQUESTING_DEVICE_VARIES_FROM_MESSAGESENDER_", Some(from))
            }
        };
        token.to_string() + from.map_or("", String::as_str)
    }
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::RequestTimeout => 408,
            Refusal::InvalidRequest
            | Refusal::InvalidTarget
            | Refusal::InvalidHeader(_)
            | Refusal::Jwt(_)
            | Refusal::EndpointMismatch { .. } => 400,
            Refusal::HeadTooLarge => 431,
            Refusal::MethodNotAllowed { .. } => 405,
            Refusal::CertificateRevoked
            | Refusal::CertificateExpired
            | Refusal::SenderCheckFailed { .. }
            | Refusal::ReceiverCheckFailed { .. }
            | Refusal::NoAgreement { .. } => 403,
            Refusal::PayloadTooLarge => 413,
            Refusal::Throttled { .. } => 429,
            Refusal::ProviderBusy { .. } | Refusal::AuditUnavailable | Refusal::ClockNotSynchronised => 503,
            Refusal::ProviderFailed { .. } => 502,
            Refusal::ProviderTimeout { .. } => 504,
        }
    }

    pub fn issue_code(&self) -> IssueCode {
        match self.status() {
            408 | 504 => IssueCode::Timeout,
            431 | 413 => IssueCode::TooCostly,
            405 => IssueCode::NotSupported,
            429 => IssueCode::Throttled,
            403 => IssueCode::Forbidden,
            502 | 503 => IssueCode::Transient,
            _ => IssueCode::Invalid,
        }
    }

    pub fn token(&self) -> String {
        match self {
            Refusal::RequestTimeout => "REQUEST_TIMEOUT".into(),
            Refusal::InvalidRequest => "INVALID_REQUEST".into(),
            Refusal::HeadTooLarge => "REQUEST_HEADER_FIELDS_TOO_LARGE".into(),
            Refusal::InvalidTarget => "INVALID_TARGET_URL".into(),
            Refusal::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED".into(),
            Refusal::InvalidHeader(name) => format!("MISSING_OR_INVALID_HEADER_{name}"),
            Refusal::Jwt(rule) => rule.token(),
            Refusal::CertificateRevoked => "CERTIFICATE_REVOKED".into(),
            Refusal::CertificateExpired => "CERTIFICATE_EXPIRED".into(),
            Refusal::SenderCheckFailed { from } => format!("ASID_CHECK_FAILED_MESSAGESENDER_{from}"),
            Refusal::ReceiverCheckFailed { to } => {
                format!("PARTYKEY_INTERACTION_CHECK_FAILED_MESSAGERECEIVER_{to}")
            }
            Refusal::NoAgreement { from, to } => {
                format!("FOT_CHECK_FAILED_MESSAGESENDER_{from}_MESSAGERECEIVER_{to}")
            }
            Refusal::EndpointMismatch {
                endpoint,
                cpaid: Some(cpaid),
                target,
            } => format!("ENDPOINT_{endpoint}_CPAID_{cpaid}_VARIES_FROM_TARGETURL_{target}"),
            Refusal::EndpointMismatch {
                endpoint,
                cpaid: None,
                target,
            } => format!("ENDPOINT_{endpoint}_VARIES_FROM_TARGETURL_{target}"),
            Refusal::PayloadTooLarge => "PAYLOAD_TOO_LARGE".into(),
            Refusal::Throttled { from, .. } => format!("THROTTLED_MESSAGESENDER_{from}"),
            Refusal::ProviderBusy { to } => format!("PROVIDER_BUSY_{to}"),
            Refusal::AuditUnavailable => "AUDIT_UNAVAILABLE".into(),
            Refusal::ClockNotSynchronised => "CLOCK_NOT_SYNCHRONISED".into(),
            Refusal::ProviderFailed { target } => format!("ERROR_COMMUNICATING_TO_ENDPOINT_URL_{target}"),
            Refusal::ProviderTimeout { target } => format!("TIMEOUT_COMMUNICATING_TO_ENDPOINT_URL_{target}"),
        }
    }

    /// Rows that leave the connection in a state we cannot trust, or that the SPEC closes.
    pub fn closes(&self) -> bool {
        matches!(
            self,
            Refusal::RequestTimeout
                | Refusal::InvalidRequest
                | Refusal::HeadTooLarge
                | Refusal::CertificateRevoked
                | Refusal::CertificateExpired
        )
    }

    /// The answer, under the `OperationOutcome` id `id`.
    pub fn answer(&self, id: OutcomeId) -> Answer {
        let fields = match self {
            Refusal::MethodNotAllowed { allowed } => vec![("Allow", allowed.clone())],
            Refusal::Throttled {
                limit,
                retry_after,
                reset,
                ..
            } => vec![
                ("Retry-After", retry_after.to_string()),
                ("X-Rate-Limit-Limit", limit.to_string()),
                ("X-Rate-Limit-Remaining", "0".to_string()),
                ("X-Rate-Limit-Reset", reset.to_string()),
            ],
            // Providers answer within seconds (SPEC section 1): a place frees up soon.
            Refusal::ProviderBusy { .. } => vec![("Retry-After", "1".to_string())],
            _ => Vec::new(),
        };
        Answer {
            id,
            status: self.status(),
            code: self.issue_code(),
            token: self.token(),
            close: self.closes(),
            fields,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: OutcomeId = OutcomeId::ZERO;

    /// The table of SPEC section 4, row by row.
    #[test]
    fn every_row_has_its_status_code_and_token() {
        let t = || "https://h/p".to_string();
        let rows: Vec<(Refusal, u16, &str, &str, bool)> = vec![
            (Refusal::RequestTimeout, 408, "timeout", "REQUEST_TIMEOUT", true),
            (Refusal::InvalidRequest, 400, "invalid", "INVALID_REQUEST", true),
            (
                Refusal::HeadTooLarge,
                431,
                "too-costly",
                "REQUEST_HEADER_FIELDS_TOO_LARGE",
                true,
            ),
            (
                Refusal::InvalidTarget,
                400,
                "invalid",
                "INVALID_TARGET_URL",
                false,
            ),
            (
                Refusal::MethodNotAllowed {
                    allowed: "GET".into(),
                },
                405,
                "not-supported",
                "METHOD_NOT_ALLOWED",
                false,
            ),
            (
                Refusal::InvalidHeader("Ssp-From"),
                400,
                "invalid",
                "MISSING_OR_INVALID_HEADER_Ssp-From",
                false,
            ),
            (
                Refusal::CertificateRevoked,
                403,
                "forbidden",
                "CERTIFICATE_REVOKED",
                true,
            ),
            (
                Refusal::CertificateExpired,
                403,
                "forbidden",
                "CERTIFICATE_EXPIRED",
                true,
            ),
            (
                Refusal::SenderCheckFailed { from: "1".into() },
                403,
                "forbidden",
                "ASID_CHECK_FAILED_MESSAGESENDER_1",
                false,
            ),
            (
                Refusal::ReceiverCheckFailed { to: "2".into() },
                403,
                "forbidden",
                "PARTYKEY_INTERACTION_CHECK_FAILED_MESSAGERECEIVER_2",
                false,
            ),
            (
                Refusal::NoAgreement {
                    from: "1".into(),
                    to: "2".into(),
                },
                403,
                "forbidden",
                "FOT_CHECK_FAILED_MESSAGESENDER_1_MESSAGERECEIVER_2",
                false,
            ),
            (
                Refusal::EndpointMismatch {
                    endpoint: "https://e".into(),
                    cpaid: None,
                    target: t(),
                },
                400,
                "invalid",
                "ENDPOINT_https://e_VARIES_FROM_TARGETURL_https://h/p",
                false,
            ),
            (
                Refusal::EndpointMismatch {
                    endpoint: "https://e".into(),
                    cpaid: Some("S918999494042".into()),
                    target: t(),
                },
                400,
                "invalid",
                "ENDPOINT_https://e_CPAID_S918999494042_VARIES_FROM_TARGETURL_https://h/p",
                false,
            ),
            (
                Refusal::PayloadTooLarge,
                413,
                "too-costly",
                "PAYLOAD_TOO_LARGE",
                false,
            ),
            (
                Refusal::Throttled {
                    from: "1".into(),
                    limit: 5,
                    retry_after: 1,
                    reset: 2,
                },
                429,
                "throttled",
                "THROTTLED_MESSAGESENDER_1",
                false,
            ),
            (
                Refusal::ProviderBusy { to: "2".into() },
                503,
                "transient",
                "PROVIDER_BUSY_2",
                false,
            ),
            (
                Refusal::AuditUnavailable,
                503,
                "transient",
                "AUDIT_UNAVAILABLE",
                false,
            ),
            (
                Refusal::ClockNotSynchronised,
                503,
                "transient",
                "CLOCK_NOT_SYNCHRONISED",
                false,
            ),
            (
                Refusal::ProviderFailed { target: t() },
                502,
                "transient",
                "ERROR_COMMUNICATING_TO_ENDPOINT_URL_https://h/p",
                false,
            ),
            (
                Refusal::ProviderTimeout { target: t() },
                504,
                "timeout",
                "TIMEOUT_COMMUNICATING_TO_ENDPOINT_URL_https://h/p",
                false,
            ),
        ];
        // Row 7 under `[jwt] mode = "enforce"`: 400, invalid, the connection kept.
        let from = || "200000000001".to_string();
        let jwt = [
            (JwtRule::Exp, "MISSING_OR_INVALID_JWT_CLAIM_exp"),
            (JwtRule::Iat, "MISSING_OR_INVALID_JWT_CLAIM_iat"),
            (JwtRule::Expired, "JWT_EXPIRED"),
            (JwtRule::IssuedInTheFuture, "JWT_ISSUED_IN_THE_FUTURE"),
            (JwtRule::LifetimeTooLong, "JWT_LIFETIME_TOO_LONG"),
            (
                JwtRule::ReasonNotDirectCare,
                "JWT_REASON_FOR_REQUEST_NOT_DIRECTCARE",
            ),
            (JwtRule::NoScopes, "JWT_NO_SCOPES_FOR_INTERACTION"),
            (JwtRule::ScopeNotAllowed, "JWT_REQUESTED_SCOPE_NOT_ALLOWED"),
            (
                JwtRule::IssNotSender { from: from() },
                "JWT_ISS_VARIES_FROM_MESSAGESENDER_200000000001",
            ),
            (
                JwtRule::DeviceNotSender { from: from() },
                "JWT_REQUESTING_DEVICE_VARIES_FROM_MESSAGESENDER_200000000001",
            ),
        ];
        let rows = rows
            .into_iter()
            .chain(jwt.map(|(rule, token)| (Refusal::Jwt(rule), 400, "invalid", token, false)));
        for (refusal, status, code, token, close) in rows {
            let a = refusal.answer(ID);
            assert_eq!(
                (a.status, a.code.as_str(), a.token.as_str(), a.close),
                (status, code, token, close)
            );
        }
    }

    #[test]
    fn throttled_answer_says_when_to_retry() {
        let a = Refusal::Throttled {
            from: "1".into(),
            limit: 40,
            retry_after: 3,
            reset: 9,
        }
        .answer(ID);
        assert_eq!(
            a.fields,
            vec![
                ("Retry-After", "3".to_string()),
                ("X-Rate-Limit-Limit", "40".to_string()),
                ("X-Rate-Limit-Remaining", "0".to_string()),
                ("X-Rate-Limit-Reset", "9".to_string()),
            ]
        );
        assert_eq!(
            Refusal::ProviderBusy { to: "2".into() }.answer(ID).fields,
            vec![("Retry-After", "1".to_string())]
        );
    }

    #[test]
    fn method_not_allowed_lists_the_allowed_methods() {
        let a = Refusal::MethodNotAllowed {
            allowed: "GET, POST".into(),
        }
        .answer(ID);
        assert_eq!(a.fields, vec![("Allow", "GET, POST".to_string())]);
    }
}
