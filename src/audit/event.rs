//! What the proxy reports to the audit (SPEC section 5). The writer adds `seq`, `ts`, `prev`
//! and `h`; everything else in a record comes from here.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::http::answer::OutcomeId;
use crate::policy::identity::Identity;
use crate::policy::jwt::Claims;

/// One auditable happening, as the proxy sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A refused TLS handshake (row 1), and the certificate it presented, if any.
    Tls {
        peer: SocketAddr,
        reason: String,
        certificate: Option<Box<Identity>>,
    },
    /// A refused request (rows 2–16), with the status and token it was answered with.
    Deny {
        request: Arc<RequestFacts>,
        status: u16,
        token: String,
        /// How many refusals of this certificate's requests the record stands for: 1, or, past
        /// `[limits] refusals`, all of them in the last second, this one the last.
        refusals: u64,
        /// The `id` of the `OperationOutcome` the consumer was answered with.
        outcome_id: OutcomeId,
    },
    /// An admitted request, recorded before it is forwarded.
    /// The facts are shared with the exchange that forwards the request.
    Req { request: Arc<RequestFacts> },
    /// A completed exchange; status 499 when the consumer went away first.
    Res {
        /// Shared with the exchange; the record carries its trace id.
        request: Arc<RequestFacts>,
        /// The `seq` of the matching `req` record, when it was made durable.
        req_seq: Option<u64>,
        status: u16,
        token: Option<String>,
        /// When the proxy answered itself (502, 504, ...): its `OperationOutcome`'s `id`.
        outcome_id: Option<OutcomeId>,
        bytes_in: u64,
        bytes_out: u64,
        duration_ms: f64,
        upstream_ms: Option<f64>,
    },
    /// Something an operator must look at.
    Alarm { message: String },
    /// The configuration put in force, at start and after every successful reload.
    Config(Box<ConfigFacts>),
}

/// What a `config` record says about the configuration in force: enough to tell, from the
/// audit alone, which allowlist and which certificates and CRLs any later record was judged
/// under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFacts {
    /// `"start"` or `"reload"`.
    pub cause: &'static str,
    /// The configuration file and the SHA-256 of the text loaded.
    pub path: String,
    pub sha256: [u8; 32],
    /// Every file it names that was read (certificates, keys, trust anchors, CRLs), with the
    /// SHA-256 of the bytes used.
    pub files: Vec<(String, [u8; 32])>,
    pub consumers: usize,
    pub providers: usize,
    pub crls: Vec<CrlFacts>,
}

/// One CRL in force; times in seconds since the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlFacts {
    pub path: String,
    pub issuer: String,
    pub this_update: i64,
    pub next_update: Option<i64>,
}

/// Who asked for what, as far as the proxy had parsed it when it decided.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestFacts {
    /// The request's own fields: trace id, ASIDs, interaction, method, target.
    pub text: RequestText,
    pub peer: SocketAddr,
    /// The consumer certificate's, shared with its connection.
    pub subject: Arc<str>,
    pub issuer: Arc<str>,
    pub serial: Arc<str>,
    /// SHA-256 of the consumer certificate's DER, hex.
    pub fingerprint: Arc<str>,
    pub claims: Option<Claims>,
}

/// The request's own text fields, borrowed: what [`RequestText`] is made from and gives back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Text<'a> {
    pub trace_id: Option<&'a str>,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub interaction: Option<&'a str>,
    pub method: &'a str,
    pub target: &'a str,
}

/// [`Text`] owned, in one allocation: facts are made for every request, and six strings of
/// their own were six allocations on the worker's hot path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestText {
    buf: Box<str>,
    /// Where each field ends in `buf`, in [`Text`]'s order; each starts where the one before
    /// ends.
    ends: [usize; 6],
    /// Bit `i`: field `i` is present (method and target always are).
    present: u8,
}

impl RequestText {
    pub fn new(text: &Text) -> RequestText {
        let parts = [
            text.trace_id,
            text.from,
            text.to,
            text.interaction,
            Some(text.method),
            Some(text.target),
        ];
        let mut buf = String::with_capacity(parts.iter().flatten().map(|p| p.len()).sum());
        let mut ends = [0; 6];
        let mut present = 0;
        for (i, part) in parts.iter().enumerate() {
            if let Some(part) = part {
                buf.push_str(part);
                present |= 1 << i;
            }
            ends[i] = buf.len();
        }
        RequestText {
            buf: buf.into_boxed_str(),
            ends,
            present,
        }
    }

    pub fn get(&self) -> Text<'_> {
        Text {
            trace_id: self.field(0),
            from: self.field(1),
            to: self.field(2),
            interaction: self.field(3),
            method: self.field(4).unwrap_or_default(),
            target: self.field(5).unwrap_or_default(),
        }
    }

    pub fn trace_id(&self) -> Option<&str> {
        self.field(0)
    }

    pub fn method(&self) -> &str {
        self.field(4).unwrap_or_default()
    }

    pub fn target(&self) -> &str {
        self.field(5).unwrap_or_default()
    }

    fn field(&self, i: usize) -> Option<&str> {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        (self.present & (1 << i) != 0).then(|| &self.buf[start..self.ends[i]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_comes_back_as_it_went_in() {
        let cases = [
            Text::default(),
            Text {
                trace_id: Some("t-1"),
                from: Some("200000000001"),
                to: None,
                interaction: Some(""),
                method: "GET",
                target: "/https://p.example/R?x=é",
            },
            Text {
                trace_id: None,
                from: None,
                to: Some("2"),
                interaction: None,
                method: "",
                target: "",
            },
        ];
        for text in cases {
            assert_eq!(RequestText::new(&text).get(), text);
        }
    }
}
