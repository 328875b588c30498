//! What the proxy reports to the audit (SPEC section 5). The writer adds `seq`, `ts`, `prev`
//! and `h`; everything else in a record comes from here.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::policy::jwt::Claims;

/// One auditable happening, as the proxy sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A refused TLS handshake (row 1).
    Tls {
        peer: SocketAddr,
        reason: String,
        subject: Option<String>,
    },
    /// A refused request (rows 2–16), with the status and token it was answered with.
    Deny {
        request: Arc<RequestFacts>,
        status: u16,
        token: String,
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
        bytes_in: u64,
        bytes_out: u64,
        duration_ms: f64,
        upstream_ms: Option<f64>,
    },
    /// Something an operator must look at.
    Alarm { message: String },
}

/// Who asked for what, as far as the proxy had parsed it when it decided.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestFacts {
    pub trace_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub interaction: Option<String>,
    pub method: String,
    pub target: String,
    pub peer: SocketAddr,
    /// The consumer certificate's, shared with its connection.
    pub subject: Arc<str>,
    pub issuer: Arc<str>,
    pub serial: Arc<str>,
    /// SHA-256 of the consumer certificate's DER, hex.
    pub fingerprint: Arc<str>,
    pub claims: Option<Claims>,
}
