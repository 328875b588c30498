//! Configuration: the TOML file of SPEC §3, loaded at start, by `ssp check` and on SIGHUP.
//!
//! Loading is two steps. `raw` deserializes the text into serde structs that mirror the file,
//! every value carrying its span; `validate` then checks meaning and produces the types below,
//! with defaults filled in and relative paths resolved against the config file's folder. Every
//! problem becomes one [`ConfigError`] naming file, line and dotted key.
//!
//! Nothing here opens the certificates, keys or CRLs it names: `parse` is pure so that a reload
//! can be validated before anything is swapped, and the TLS layer loads the files itself. The
//! one file it reads besides its own is the SDS export of `[sds] ldif` (issue 18), because the
//! consumers and providers it yields are part of what is validated, with the same errors.

mod duration;
mod endpoint;
mod error;
mod raw;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use duration::parse_duration;
pub use endpoint::{Endpoint, HttpUrl};
pub use error::{ConfigError, ConfigErrors};
pub(crate) use validate::{
    asid as check_asid, cpaid as check_cpaid, fqdn as check_fqdn, interaction as check_interaction,
};

use error::Source;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The configuration file, as given on the command line.
    pub path: PathBuf,
    /// SHA-256 of the text this was loaded from: what the audit and `/metrics` name it by.
    pub sha256: [u8; 32],
    pub server: Server,
    pub upstream: Upstream,
    pub limits: Limits,
    pub throttle: Throttle,
    pub audit: Audit,
    pub transactions: Transactions,
    pub admin: Admin,
    pub jwt: Jwt,
    /// At least one.
    pub consumers: Vec<Consumer>,
    /// At least one.
    pub providers: Vec<Provider>,
    /// `[sds]`: the export the consumers and providers were (partly) derived from.
    pub sds: Option<Sds>,
}

/// `[sds]`, and what the export held when it was loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Sds {
    /// The LDIF export (`ldapsearch -LLL`), resolved against the config file's folder.
    pub ldif: PathBuf,
    /// A reload whose export drops more than this share of the known ASIDs is refused; in [0, 1].
    pub max_shrink: f64,
    /// Only these interactions are taken from the export; `None`: all of them.
    pub interactions: Option<Vec<String>>,
    /// SHA-256 of the export's bytes, for the audit's `config` record.
    pub sha256: [u8; 32],
    /// Every ASID the export registers (consumers and providers), once each: the known ASIDs
    /// the next reload's export is compared with.
    pub asids: Vec<String>,
    /// nhsAs and nhsMhs records read, and how many were skipped (`ssp sds show` says why).
    pub records: usize,
    pub skipped: usize,
}

/// `[server]`: the consumer-facing side.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Never empty, no duplicates. IP addresses only: names are not resolved.
    pub listen: Vec<SocketAddr>,
    /// Event-loop threads; 0 means one per CPU. At most 1024.
    pub workers: usize,
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub client_ca: PathBuf,
    /// Required, so that running without revocation checks is a written decision (`crl = []`).
    pub crl: Vec<CrlSource>,
    pub crl_expired: CrlExpired,
    pub crl_check: CrlCheck,
    /// How CRLs with a `url` are kept fresh.
    pub crl_refresh: CrlRefresh,
    /// Attributes every consumer subject must carry, ordered by attribute name.
    pub client_subject: Vec<(String, String)>,
    pub forwarded: bool,
    pub require_jwt: bool,
    /// What an unsynchronised clock (the kernel's NTP state) does to admission.
    pub clock_unsynced: ClockUnsynced,
    /// The `Strict-Transport-Security` value of the proxy's own answers; `None` when set to "".
    pub hsts: Option<String>,
    /// Every connection starts with a PROXY protocol v2 header (behind an L4 balancer).
    pub proxy_protocol: bool,
    /// SIGTERM: how long `/readyz` says "stopping" while the proxy still serves as usual, so
    /// that a balancer health-checking it takes it out before it stops accepting; zero stops
    /// accepting at once. Only with an admin endpoint (nothing else could tell a balancer).
    pub stop_delay: Duration,
}

/// One CRL: the file it is loaded from and, when it is kept fresh, where it is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlSource {
    pub path: PathBuf,
    /// Plain `http://`: a CRL is signed by its issuer, so the transport adds nothing to trust.
    pub url: Option<HttpUrl>,
    /// The certificate of the CRL's issuer, when it is not a trust anchor in `client_ca`;
    /// it must itself be signed by one of them.
    pub issuer: Option<PathBuf>,
}

impl CrlSource {
    /// A CRL that is only read from disk.
    pub fn file(path: PathBuf) -> CrlSource {
        CrlSource {
            path,
            url: None,
            issuer: None,
        }
    }
}

/// `crl_refresh*`, `crl_retry`, `crl_proxy` and the fetch limits of `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlRefresh {
    /// How often a CRL with a `url` is fetched; longer than zero.
    pub interval: Duration,
    /// Up to this much is added at random to each wait, so gateways do not fetch in step.
    pub jitter: Duration,
    /// Once less than this is left before a CRL's nextUpdate, it is fetched every `retry`.
    pub margin: Duration,
    /// The wait after a failed fetch (and inside the margin); longer than zero.
    pub retry: Duration,
    /// A forward proxy (`http://host:port`) asked with absolute-form GETs.
    pub proxy: Option<HttpUrl>,
    pub connect_timeout: Duration,
    /// For each read of the answer, and for the whole answer at most ten times as long.
    pub read_timeout: Duration,
    /// The largest CRL accepted, in bytes; at least 1024.
    pub max_bytes: u64,
}

/// What to do while the kernel says the clock is not synchronised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockUnsynced {
    /// Log, alarm and show it in `/metrics`; keep serving.
    Warn,
    /// Also not ready, and every request refused (503 `CLOCK_NOT_SYNCHRONISED`).
    Deny,
}

/// What to do with a CRL past its nextUpdate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrlExpired {
    /// Fail closed: refuse certificates the stale CRL would vouch for.
    Deny,
    Allow,
}

/// Which certificates of a consumer's chain are checked against CRLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrlCheck {
    Leaf,
    Chain,
}

/// `[upstream]`: connections to providers.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub ca: PathBuf,
    /// Longer than zero.
    pub connect_timeout: Duration,
    /// Until the provider's response head; longer than zero.
    pub response_timeout: Duration,
    /// Zero is allowed and means idle connections are not kept.
    pub pool_idle_timeout: Duration,
    /// A cap on the provider connections kept by idle consumer connections, per provider and
    /// worker; `None` (the default): one per consumer connection that has one. Zero: none kept.
    pub pool_max_idle: Option<usize>,
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// At least 1.
    pub max_connections: usize,
    /// 1024 to 1048576.
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    /// Longer than zero.
    pub header_timeout: Duration,
    /// Longer than zero.
    pub idle_timeout: Duration,
    /// How long SIGTERM waits for requests in flight; zero stops at once.
    pub drain_timeout: Duration,
    /// Refused TLS handshakes tolerated from one address at once (then one a second) before
    /// it is served resumed sessions only; 0 switches the limit off.
    pub refused_handshakes: u32,
    /// Refused requests tolerated from one consumer certificate at once (then one a second)
    /// before each refusal closes its connection and the audit counts them in one record a
    /// second; 0 switches the limit off.
    pub refusals: u32,
    /// Bytes a second a request body must average, after a first `header_timeout`, so that a
    /// body trickled in cannot hold a provider's place for ever; 0 switches it off.
    pub min_upload_rate: u64,
    /// Uppercase HTTP tokens; never empty.
    pub methods: Vec<String>,
}

/// `[throttle]`: defaults for per-consumer rates and per-provider concurrency.
#[derive(Debug, Clone, PartialEq)]
pub struct Throttle {
    /// Requests per second per consumer ASID; finite and above zero.
    pub rate: f64,
    /// At least 1.
    pub burst: u32,
    /// Concurrent requests per provider; at least 1.
    pub max_in_flight: u32,
    /// The share of a provider's `max_in_flight` one consumer may hold, in (0, 1].
    pub consumer_share: f64,
}

/// `[audit]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Audit {
    pub dir: PathBuf,
    /// An absent key or `key = ""` means the default `/var/lib/ssp/audit.key`, so sealing
    /// cannot be switched off by omission; `None` only with `sealed = false`.
    pub key: Option<PathBuf>,
    pub sync: AuditSync,
    /// At least 1.
    pub rotate_bytes: u64,
    /// Longer than zero.
    pub seal_interval: Duration,
}

/// When audit records are fdatasync'ed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditSync {
    Always,
    Batch,
    Off,
}

/// `[transactions]`: the performance log.
#[derive(Debug, Clone, PartialEq)]
pub struct Transactions {
    /// `None` when the operator writes `path = ""` to switch the log off.
    pub path: Option<PathBuf>,
}

/// `[admin]`: the plain-HTTP health and metrics endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    /// `None` when the operator writes `listen = ""` to switch the endpoint off.
    pub listen: Option<SocketAddr>,
    /// The endpoint is plain HTTP: a non-loopback address is refused unless this says so.
    pub allow_remote: bool,
}

/// `[jwt]`: what row 7 asks of a consumer's JWT besides its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Jwt {
    pub mode: JwtMode,
    /// The clock skew allowed on `exp` and `iat`, in whole seconds.
    pub leeway: Duration,
    /// Under enforce, `iss` and the `requesting_device` identifier must be `Ssp-From`.
    pub bind_sender: bool,
    /// The `requested_scope` values allowed per interaction, none empty. Under enforce, every
    /// interaction a provider serves has an entry.
    pub scopes: BTreeMap<String, Vec<String>>,
}

/// How much of the JWT row 7 checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum JwtMode {
    /// Well-formed (base64url JSON, an `alg`), logged, not trusted.
    #[default]
    Shape,
    /// Also the published rules: times, reason, scope, and with `bind_sender` the sender.
    Enforce,
}

/// A `[[consumer]]`: a dispensing system allowed to call through the proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct Consumer {
    /// 1 to 20 digits; unique among consumers.
    pub asid: String,
    /// Lowercased; compared with the CN of the consumer's certificate.
    pub fqdn: String,
    /// At least one, none empty: a consumer that may send nothing is a configuration mistake.
    pub interactions: Vec<String>,
    /// Provider ASIDs it may call (its data-sharing agreements). The key is required, so the
    /// allowlist is always written down, but it may be `[]` to suspend a consumer.
    pub providers: Vec<String>,
    /// Overrides `throttle.rate`.
    pub rate: Option<f64>,
    /// Overrides `throttle.burst`.
    pub burst: Option<u32>,
    /// Line of its `[[consumer]]` header, for later messages; of its AS record in the SDS
    /// export when it has no `[[consumer]]`.
    pub line: usize,
}

/// A `[[provider]]`: a FHIR API the proxy may forward to.
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    /// 1 to 20 digits; unique among providers.
    pub asid: String,
    /// Where each of its interactions is served: one per SDS MHS record (`endpoints`), or the
    /// one `endpoint` for all of them. At least one; each interaction on exactly one.
    pub endpoints: Vec<ProviderEndpoint>,
    /// Every interaction of its endpoints, in order.
    pub interactions: Vec<String>,
    /// Fixed addresses instead of DNS, tried in order, like `curl --resolve host:port:a,b`;
    /// empty: the endpoint's host is resolved.
    pub connect: Vec<SocketAddr>,
    /// Overrides `throttle.max_in_flight`.
    pub max_in_flight: Option<u32>,
    /// Line of its `[[provider]]` header, for later messages; of its AS record in the SDS
    /// export when it has no `[[provider]]`.
    pub line: usize,
}

/// A provider's service root for some of its interactions, as an SDS MHS record registers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEndpoint {
    pub url: Endpoint,
    /// The MHS record's CPA id (`nhsMhsCPAId`), named in row 12's token.
    pub cpaid: Option<String>,
    /// At least one.
    pub interactions: Vec<String>,
}

/// Every provider endpoint with its provider's position, in the one order both the allowlist
/// (row 12's `Route::endpoint`) and the proxy's routes (`proxy::Shared::routes`) number them by.
pub fn all_endpoints(providers: &[Provider]) -> impl Iterator<Item = (usize, &ProviderEndpoint)> {
    providers
        .iter()
        .enumerate()
        .flat_map(|(index, p)| p.endpoints.iter().map(move |e| (index, e)))
}

/// Reads and validates the configuration file at `path`, reporting every problem it finds.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with(path, None)
}

/// `load`, with the SDS export read from `sds_ldif` instead of `[sds] ldif` when given: what
/// `ssp check --sds NEW` checks before the refresh moves NEW into place.
pub fn load_with(path: &Path, sds_ldif: Option<&Path>) -> Result<Config, ConfigErrors> {
    let text = crate::regular_file::read_to_string(path)
        .map_err(|e| Source::whole_file(path, format!("cannot read the configuration: {e}")))?;
    let source = Source::new(&text, path);
    let raw: raw::RawConfig = toml::from_str(&text).map_err(|e| source.toml_error(&e))?;
    validate::validate(raw, &source, &|ldif| {
        crate::regular_file::read(sds_ldif.unwrap_or(ldif))
            .map(|bytes| (sds_ldif.unwrap_or(ldif).to_path_buf(), bytes))
    })
}

/// Validates configuration `text` as if read from `path`, without touching the file system:
/// `path` only names the file in errors and anchors relative paths. An `[sds] ldif` export
/// cannot be read here (use `load`).
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let source = Source::new(text, path);
    let raw: raw::RawConfig = toml::from_str(text).map_err(|e| source.toml_error(&e))?;
    validate::validate(raw, &source, &|_| {
        Err(std::io::Error::other(
            "`parse` reads no files; load the configuration with `load`",
        ))
    })
}

/// The admin endpoint is plain HTTP without authentication, and its metrics name consumers'
/// refusals: beyond this host only when `[admin] allow_remote` says so. Checked when the
/// configuration is loaded and again by the endpoint itself.
pub fn admin_exposure(listen: SocketAddr, allow_remote: bool) -> Result<(), String> {
    let loopback = match listen.ip() {
        IpAddr::V4(v4) => v4.is_loopback(),
        // `::ffff:127.x.y.z` is what a dual-stack socket shows for IPv4 loopback.
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    };
    if loopback || allow_remote {
        Ok(())
    } else {
        Err(format!(
            "{listen} is not a loopback address, and the admin endpoint is plain HTTP without \
             authentication; listen on 127.0.0.1, or set `allow_remote = true` in [admin] to \
             serve it beyond this host"
        ))
    }
}
