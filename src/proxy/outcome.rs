//! How a request that became an exchange ended, as a value: the `res` record, the
//! transactions line, the log line and the metrics all render this one value.

use crate::policy::refusal::Refusal;

/// Why a provider could not answer (row 17's 502, or a response cut short).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderFailure {
    /// Its host name did not resolve.
    Resolve(String),
    /// The TCP connect failed on every address.
    Connect(String),
    /// No address took the connect and the TLS handshake within `connect_timeout`.
    ConnectTimeout,
    /// Its TLS failed (a bad certificate, a protocol error).
    Tls(String),
    /// Writing to it failed.
    Write(String),
    /// It closed without a byte of its answer.
    ClosedWithoutAnswer,
    /// It closed in the middle of its response head.
    ClosedMidHead,
    /// Its response head was not HTTP.
    InvalidHead(String),
    /// It answered 101 Switching Protocols, which a proxy of requests cannot relay.
    SwitchedProtocols,
    /// It broke the framing of its response body, or closed before its end.
    BrokenBody(String),
    /// Its response stopped moving for `response_timeout` once it had begun.
    Stalled,
    /// It sent bytes on a new connection before it was sent a request.
    Unasked,
}

impl ProviderFailure {
    /// A bounded name, for `ssp_provider_failures_total{reason}`.
    pub fn label(&self) -> &'static str {
        match self {
            ProviderFailure::Resolve(_) => "resolve",
            ProviderFailure::Connect(_) => "connect",
            ProviderFailure::ConnectTimeout => "connect_timeout",
            ProviderFailure::Tls(_) => "tls",
            ProviderFailure::Write(_) => "write",
            ProviderFailure::ClosedWithoutAnswer => "closed",
            ProviderFailure::ClosedMidHead => "closed_mid_head",
            ProviderFailure::InvalidHead(_) => "invalid_head",
            ProviderFailure::SwitchedProtocols => "switched_protocols",
            ProviderFailure::BrokenBody(_) => "broken_body",
            ProviderFailure::Stalled => "stalled",
            ProviderFailure::Unasked => "unasked",
        }
    }
}

impl std::fmt::Display for ProviderFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProviderFailure::Resolve(why) => write!(f, "resolve: {why}"),
            ProviderFailure::Connect(why) => write!(f, "{why}"),
            ProviderFailure::ConnectTimeout => f.write_str("connect timeout"),
            ProviderFailure::Tls(why) => write!(f, "tls: {why}"),
            ProviderFailure::Write(why) => write!(f, "write: {why}"),
            ProviderFailure::ClosedWithoutAnswer => f.write_str("closed without answering"),
            ProviderFailure::ClosedMidHead => f.write_str("closed mid-head"),
            ProviderFailure::InvalidHead(why) => write!(f, "invalid response head: {why}"),
            ProviderFailure::SwitchedProtocols => f.write_str("provider switched protocols"),
            ProviderFailure::BrokenBody(why) => write!(f, "response body: {why}"),
            ProviderFailure::Stalled => f.write_str("response stalled"),
            ProviderFailure::Unasked => f.write_str("sent bytes before the request"),
        }
    }
}

/// The end of an exchange.
#[derive(Debug)]
pub enum Outcome {
    /// The provider's response went to the consumer whole.
    Relayed { status: u16 },
    /// The proxy answered instead (rows 3 and 13 while the body streamed, 16 when the `req`
    /// record could not be made durable, 17, 18), with `failure` when the provider was why.
    Answered {
        refusal: Refusal,
        failure: Option<ProviderFailure>,
    },
    /// The provider's response was cut off after it began: the connection was closed
    /// mid-answer, and the record keeps the status the consumer was given.
    Cut { status: u16, failure: ProviderFailure },
    /// A request body broke its framing or its limit after the response had begun.
    BrokenRequest { status: u16 },
    /// The consumer went away before its answer was complete (SPEC section 4's 499).
    ConsumerGone,
    /// SIGTERM's `drain_timeout` ran out with the exchange in flight; `status` is what the
    /// consumer was given (503 if nothing yet).
    Drained { status: u16 },
}

impl Outcome {
    pub fn status(&self) -> u16 {
        match self {
            Outcome::Relayed { status }
            | Outcome::Cut { status, .. }
            | Outcome::BrokenRequest { status }
            | Outcome::Drained { status } => *status,
            Outcome::Answered { refusal, .. } => refusal.status(),
            Outcome::ConsumerGone => 499,
        }
    }

    /// The SPEC section 4 token, when the proxy (not the provider) had the last word.
    pub fn token(&self) -> Option<String> {
        match self {
            Outcome::Answered { refusal, .. } => Some(refusal.token()),
            Outcome::Drained { .. } => Some("DRAIN_TIMEOUT".to_string()),
            _ => None,
        }
    }

    pub fn failure(&self) -> Option<&ProviderFailure> {
        match self {
            Outcome::Answered { failure, .. } => failure.as_ref(),
            Outcome::Cut { failure, .. } => Some(failure),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_renders_its_status_and_token() {
        let timeout = Outcome::Answered {
            refusal: Refusal::ProviderTimeout { target: "t".into() },
            failure: None,
        };
        assert_eq!(
            (timeout.status(), timeout.token().as_deref()),
            (504, Some("TIMEOUT_COMMUNICATING_TO_ENDPOINT_URL_t"))
        );
        let drained = Outcome::Drained { status: 503 };
        assert_eq!(
            (drained.status(), drained.token().as_deref()),
            (503, Some("DRAIN_TIMEOUT"))
        );
        assert_eq!(
            (Outcome::ConsumerGone.status(), Outcome::ConsumerGone.token()),
            (499, None)
        );
        let cut = Outcome::Cut {
            status: 200,
            failure: ProviderFailure::Stalled,
        };
        assert_eq!(
            (cut.status(), cut.failure().map(|f| f.label())),
            (200, Some("stalled"))
        );
    }
}
