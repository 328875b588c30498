//! What the proxy tells the audit and the transactions log about a connection or a request:
//! the translation from connection state to `audit::Event` and `audit::Transaction`, in one
//! place. Nothing here decides anything.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Instant;

use super::consumer::Consumer;
use crate::audit::{Event, RequestFacts, RequestText, Text, floor_char_boundary};
use crate::http::answer::OutcomeId;
use crate::http::head;
use crate::http::request::RequestHead;
use crate::policy::identity::Identity;
use crate::policy::jwt;
use crate::policy::refusal::Refusal;

/// Longest header value copied into a record; the audit caps records anyway.
const MAX_VALUE: usize = 512;

fn text(value: Option<&[u8]>) -> Option<Cow<'_, str>> {
    value.map(|v| {
        let v = head::trim_ows(v);
        String::from_utf8_lossy(&v[..v.len().min(MAX_VALUE)])
    })
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    &s[..floor_char_boundary(s, max)]
}

/// The facts of a request as far as it was parsed: all of it when a head was read, the
/// sniffed trace id only when the head was refused before parsing.
pub fn facts(con: &Consumer, head: Option<&RequestHead>) -> RequestFacts {
    request_facts(head, &con.inbuf, con.peer, con.identity.as_ref())
}

/// [`facts`] from values: the parsed head if there is one, else the bytes received, which are
/// only sniffed for the trace id and the `Ssp-*` fields. Any bytes a consumer sends end up
/// here (the `request_head` fuzz target drives it).
pub fn request_facts(
    head: Option<&RequestHead>,
    received: &[u8],
    peer: SocketAddr,
    identity: Option<&Identity>,
) -> RequestFacts {
    let field = |name: &str| match head {
        Some(h) => text(h.field(name)),
        None => text(head::sniff_field(received, name)),
    };
    let (trace_id, from, to, interaction) = (
        field("ssp-traceid"),
        field("ssp-from"),
        field("ssp-to"),
        field("ssp-interactionid"),
    );
    RequestFacts {
        text: RequestText::new(&Text {
            trace_id: trace_id.as_deref(),
            from: from.as_deref(),
            to: to.as_deref(),
            interaction: interaction.as_deref(),
            method: head.map_or("", |h| h.method()),
            target: head.map_or("", |h| cut(h.target(), MAX_VALUE)),
        }),
        peer,
        subject: identity.map_or_else(|| "".into(), |i| i.subject.clone()),
        issuer: identity.map_or_else(|| "".into(), |i| i.issuer.clone()),
        serial: identity.map_or_else(|| "".into(), |i| i.serial_hex.clone()),
        fingerprint: identity.map_or_else(|| "".into(), |i| i.fingerprint.clone()),
        claims: head
            .and_then(|h| h.field("authorization"))
            .and_then(jwt::parse_bearer),
    }
}

/// A bounded name for why a handshake was refused, for `ssp_tls_handshake_failures_total`.
pub fn handshake_reason(error: &rustls::Error) -> &'static str {
    use rustls::{CertificateError as C, Error as E};
    match error {
        E::NoCertificatesPresented => "no_certificate",
        E::InvalidCertificate(C::Revoked) => "revoked",
        E::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => "expired",
        E::InvalidCertificate(C::ExpiredRevocationList | C::ExpiredRevocationListContext { .. }) => {
            "crl_expired"
        }
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => "unknown_ca",
        E::InvalidCertificate(C::Other(_) | C::ApplicationVerificationFailure) => "subject",
        E::InvalidMessage(_)
        | E::PeerIncompatible(_)
        | E::PeerMisbehaved(_)
        | E::InappropriateMessage { .. } => "protocol",
        _ => "other",
    }
}

pub fn deny(con: &Consumer, head: Option<&RequestHead>, refusal: &Refusal, outcome_id: OutcomeId) -> Event {
    Event::Deny {
        request: facts(con, head).into(),
        status: refusal.status(),
        token: refusal.token(),
        refusals: 1,
        outcome_id,
    }
}

pub fn ms(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_whole_characters() {
        assert_eq!(cut("abc", 512), "abc");
        assert_eq!(cut("abc", 2), "ab");
        assert_eq!(cut("aé", 2), "a");
        assert_eq!(cut("aé", 3), "aé");
        assert_eq!(cut("", 0), "");
    }
}
