//! The file as written: serde structs mirroring SPEC §3, before defaults and checks.
//!
//! Every value is `Option<Spanned<_>>` so that `validate` can tell "absent" (take the default,
//! or report a missing key at the table header) from "present" (check it, and report problems
//! at the value's own line). `deny_unknown_fields` makes a misspelt key an error, not a
//! silently ignored setting.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub(super) type Field<T> = Option<Spanned<T>>;
/// A list whose elements keep their own spans, for errors such as a duplicate address.
pub(super) type List<T> = Field<Vec<Spanned<T>>>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawConfig {
    pub server: Field<RawServer>,
    pub upstream: Field<RawUpstream>,
    pub limits: Field<RawLimits>,
    pub throttle: Field<RawThrottle>,
    pub audit: Field<RawAudit>,
    pub transactions: Field<RawTransactions>,
    pub admin: Field<RawAdmin>,
    /// Read by `validate::jwt` from toml's own tree, not through serde (see there).
    pub jwt: Option<serde::de::IgnoredAny>,
    /// Read by `validate::sds_settings` from toml's own tree, as `[jwt]` is.
    pub sds: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub consumer: Vec<Spanned<RawConsumer>>,
    #[serde(default)]
    pub provider: Vec<Spanned<RawProvider>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawServer {
    pub listen: List<String>,
    pub workers: Field<usize>,
    pub certificate: Field<String>,
    pub private_key: Field<String>,
    pub client_ca: Field<String>,
    pub crl: List<RawCrl>,
    pub crl_expired: Field<String>,
    pub crl_check: Field<String>,
    pub crl_refresh: Field<String>,
    pub crl_refresh_jitter: Field<String>,
    pub crl_refresh_margin: Field<String>,
    pub crl_retry: Field<String>,
    pub crl_proxy: Field<String>,
    pub crl_connect_timeout: Field<String>,
    pub crl_read_timeout: Field<String>,
    pub crl_max_bytes: Field<u64>,
    pub client_subject: Field<BTreeMap<Spanned<String>, Spanned<String>>>,
    pub forwarded: Field<bool>,
    pub require_jwt: Field<bool>,
    pub hsts: Field<String>,
    pub clock_unsynced: Field<String>,
    pub proxy_protocol: Field<bool>,
    pub stop_delay: Field<String>,
}

/// One `crl` element: a path, or `{ path, url, issuer }` for a CRL that is kept fresh.
pub(super) enum RawCrl {
    Path(String),
    Entry(RawCrlEntry),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawCrlEntry {
    pub path: Field<String>,
    pub url: Field<String>,
    pub issuer: Field<String>,
}

/// By hand rather than `#[serde(untagged)]`: untagged buffers the value and loses the spans
/// of the table's keys, so an error could not name the line of a bad `url`.
impl<'de> Deserialize<'de> for RawCrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawCrl;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a path or a table such as { path = \"tls/level1c.crl\", url = \"http://...\" }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawCrl, E> {
                Ok(RawCrl::Path(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawCrl, A::Error> {
                RawCrlEntry::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(RawCrl::Entry)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawUpstream {
    pub ca: Field<String>,
    pub connect_timeout: Field<String>,
    pub response_timeout: Field<String>,
    pub pool_idle_timeout: Field<String>,
    pub pool_max_idle: Field<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawLimits {
    pub max_connections: Field<usize>,
    pub max_header_bytes: Field<usize>,
    pub max_body_bytes: Field<u64>,
    pub header_timeout: Field<String>,
    pub idle_timeout: Field<String>,
    pub drain_timeout: Field<String>,
    pub refused_handshakes: Field<u32>,
    pub refusals: Field<u32>,
    pub min_upload_rate: Field<u64>,
    pub methods: List<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawThrottle {
    pub rate: Field<f64>,
    pub burst: Field<u32>,
    pub max_in_flight: Field<u32>,
    pub consumer_share: Field<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawAudit {
    pub dir: Field<String>,
    pub key: Field<String>,
    pub sealed: Field<bool>,
    pub sync: Field<String>,
    pub rotate_bytes: Field<u64>,
    pub seal_interval: Field<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawTransactions {
    pub path: Field<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawAdmin {
    pub listen: Field<String>,
    pub allow_remote: Field<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawConsumer {
    pub asid: Field<String>,
    pub fqdn: Field<String>,
    pub interactions: List<String>,
    pub providers: List<String>,
    pub rate: Field<f64>,
    pub burst: Field<u32>,
}

/// One of a provider's `endpoints`: an SDS MHS record's service root, CPA id and interactions.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawEndpoint {
    pub url: Field<String>,
    pub cpaid: Field<String>,
    pub interactions: List<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawProvider {
    pub asid: Field<String>,
    pub endpoint: Field<String>,
    pub cpaid: Field<String>,
    pub interactions: List<String>,
    pub endpoints: List<RawEndpoint>,
    pub connect: Field<String>,
    pub max_in_flight: Field<u32>,
}
