//! Every decision about a request, as pure functions of values: no I/O, no clock, no sockets.
//! `admit` runs SPEC section 4 rows 5–13 in the published order; the event loop only acts on
//! the result.

pub mod allowlist;
pub mod headers;
pub mod identity;
pub mod json;
pub mod jwt;
pub mod limits;
pub mod refusal;
pub mod revocation;
pub mod throttle;

use crate::http::request::{BodyFraming, RequestHead};
use crate::http::target::{self, Target};
use allowlist::Allowlist;
use headers::SspHeaders;
use identity::Identity;
use refusal::Refusal;
use revocation::{Judgement, Revocations};

/// The rules in force, built once per configuration load and shared by every worker.
#[derive(Debug, Default)]
pub struct Rules {
    pub methods: Vec<String>,
    pub require_jwt: bool,
    /// `[jwt]`: shape only, or the published rules too.
    pub jwt: jwt::Policy,
    pub max_body_bytes: u64,
    pub allowlist: Allowlist,
    pub revocations: Revocations,
}

/// A request that may be forwarded, borrowed from its head: deciding allocates nothing.
#[derive(Debug, Clone)]
pub struct Admission<'h> {
    pub target: Target<'h>,
    /// Indexes of the consumer and the provider in the configuration.
    pub route: allowlist::Route,
    pub ssp: SspHeaders<'h>,
}

/// Decides one request. `judgement` is the last full verification of the connection's chain,
/// made under the configuration of `rules`; `now` is the wall clock in seconds since the epoch
/// (the JWT's `exp` and `iat`, the certificate's notAfter, CRL freshness).
pub fn admit<'h>(
    rules: &Rules,
    head: &'h RequestHead,
    identity: &Identity,
    judgement: Judgement,
    now: i64,
) -> Result<Admission<'h>, Refusal> {
    // Row 5.
    let target = target::parse(head.target()).map_err(|_| Refusal::InvalidTarget)?;
    // Row 6.
    let method = head.method();
    if !rules.methods.iter().any(|m| m == method) {
        return Err(Refusal::MethodNotAllowed {
            allowed: rules.methods.join(", "),
        });
    }
    // Row 7.
    let ssp = headers::check(head, rules.require_jwt, &rules.jwt, now)?;
    // Row 8.
    revocation::check(&rules.revocations, identity, judgement, now)?;
    // Rows 9–12.
    let route = rules.allowlist.check(identity.cn.as_deref(), &ssp, &target)?;
    // Row 13, for bodies whose size is declared; chunked bodies are counted as they stream.
    if let BodyFraming::Length(n) = head.framing
        && n > rules.max_body_bytes
    {
        return Err(Refusal::PayloadTooLarge);
    }
    Ok(Admission { target, route, ssp })
}
