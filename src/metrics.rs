//! SPEC section 6 metrics: the counters and histograms the event loops bump on every request,
//! rendered in the Prometheus text exposition format 0.0.4 when `/metrics` is scraped.
//!
//! Updating is a few relaxed atomic adds: no lock and no allocation, so it can sit on the
//! proxy's path. Rendering happens seconds apart on the admin thread and does all the
//! allocating. Every label set is bounded by construction (decision tokens are labelled by
//! family, handshake reasons come from a fixed list, request statuses live in a fixed table)
//! so neither a consumer nor a provider can grow the scrape or the memory behind it.
//!
//! Counters are read one by one while workers keep writing, so a scrape is not a snapshot:
//! a histogram's `_sum` may run one observation ahead of its buckets. Its `_count` is derived
//! from the buckets, so `+Inf` and `_count` always agree.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a decision token is recognised as belonging to a family.
enum Shape {
    /// Not a token: the forwarded answer and the catch-all.
    Never,
    /// The token is the family.
    Exact,
    /// `<family>_<ASID or URL>`.
    Suffixed,
    /// `<prefix><variable><middle><variable>`.
    Two(&'static str, &'static str),
}

/// Label values of `ssp_requests_total{token}`, tried in order: index 0 is a forwarded answer
/// (no token), the last is anything unrecognised. The rest are the SPEC section 4 tokens with
/// their variable parts (ASIDs, URLs) removed.
const FAMILIES: &[(&str, Shape)] = &[
    ("", Shape::Never),
    ("REQUEST_TIMEOUT", Shape::Exact),
    ("INVALID_REQUEST", Shape::Exact),
    ("REQUEST_HEADER_FIELDS_TOO_LARGE", Shape::Exact),
    ("INVALID_TARGET_URL", Shape::Exact),
    ("METHOD_NOT_ALLOWED", Shape::Exact),
    // Row 7 keeps the header's name: a fixed set, and the first thing an operator asks.
    ("MISSING_OR_INVALID_HEADER_Ssp-TraceID", Shape::Exact),
    ("MISSING_OR_INVALID_HEADER_Ssp-From", Shape::Exact),
    ("MISSING_OR_INVALID_HEADER_Ssp-To", Shape::Exact),
    ("MISSING_OR_INVALID_HEADER_Ssp-InteractionID", Shape::Exact),
    ("MISSING_OR_INVALID_HEADER_Authorization", Shape::Exact),
    // Row 7 naming a header outside the five above: still row 7, and still bounded.
    ("MISSING_OR_INVALID_HEADER", Shape::Suffixed),
    ("CERTIFICATE_REVOKED", Shape::Exact),
    ("CERTIFICATE_EXPIRED", Shape::Exact),
    ("ASID_CHECK_FAILED_MESSAGESENDER", Shape::Suffixed),
    (
        "PARTYKEY_INTERACTION_CHECK_FAILED_MESSAGERECEIVER",
        Shape::Suffixed,
    ),
    (
        "FOT_CHECK_FAILED_MESSAGESENDER_MESSAGERECEIVER",
        Shape::Two("FOT_CHECK_FAILED_MESSAGESENDER_", "_MESSAGERECEIVER_"),
    ),
    (
        "ENDPOINT_VARIES_FROM_TARGETURL",
        Shape::Two("ENDPOINT_", "_VARIES_FROM_TARGETURL_"),
    ),
    ("PAYLOAD_TOO_LARGE", Shape::Exact),
    ("THROTTLED_MESSAGESENDER", Shape::Suffixed),
    ("PROVIDER_BUSY", Shape::Suffixed),
    ("SERVICE_UNAVAILABLE", Shape::Exact),
    ("AUDIT_UNAVAILABLE", Shape::Exact),
    ("CLOCK_NOT_SYNCHRONISED", Shape::Exact),
    ("ERROR_COMMUNICATING_TO_ENDPOINT_URL", Shape::Suffixed),
    ("TIMEOUT_COMMUNICATING_TO_ENDPOINT_URL", Shape::Suffixed),
    // Row 7 under `[jwt] mode = "enforce"`; last, so the other refusals find theirs as soon.
    ("MISSING_OR_INVALID_JWT_CLAIM_exp", Shape::Exact),
    ("MISSING_OR_INVALID_JWT_CLAIM_iat", Shape::Exact),
    ("JWT_EXPIRED", Shape::Exact),
    ("JWT_ISSUED_IN_THE_FUTURE", Shape::Exact),
    ("JWT_LIFETIME_TOO_LONG", Shape::Exact),
    ("JWT_REASON_FOR_REQUEST_NOT_DIRECTCARE", Shape::Exact),
    ("JWT_NO_SCOPES_FOR_INTERACTION", Shape::Exact),
    ("JWT_REQUESTED_SCOPE_NOT_ALLOWED", Shape::Exact),
    ("JWT_ISS_VARIES_FROM_MESSAGESENDER", Shape::Suffixed),
    ("JWT_REQUESTING_DEVICE_VARIES_FROM_MESSAGESENDER", Shape::Suffixed),
    ("DRAIN_TIMEOUT", Shape::Exact),
    ("OTHER", Shape::Never),
];
const FORWARDED: usize = 0;
const OTHER: usize = FAMILIES.len() - 1;

/// The family of a SPEC section 4 decision token: the token with its ASIDs and URLs removed,
/// e.g. `ASID_CHECK_FAILED_MESSAGESENDER_200000000001` -> `ASID_CHECK_FAILED_MESSAGESENDER`.
/// Row 7 keeps its header name (a fixed set). Anything unrecognised is `OTHER`.
pub fn token_family(token: &str) -> &'static str {
    FAMILIES[family_index(token)].0
}

fn family_index(token: &str) -> usize {
    let matches = |(family, shape): &(&str, Shape)| match shape {
        Shape::Never => false,
        Shape::Exact => token == *family,
        Shape::Suffixed => token
            .strip_prefix(family)
            .is_some_and(|rest| rest.starts_with('_')),
        Shape::Two(prefix, middle) => token
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.contains(middle)),
    };
    FAMILIES.iter().position(matches).unwrap_or(OTHER)
}

/// Reasons for `ssp_tls_handshake_failures_total{reason}`; anything else counts as `other`.
const REASONS: [&str; 9] = [
    "unknown_ca",
    "revoked",
    "expired",
    "no_certificate",
    "subject",
    "crl_expired",
    "protocol",
    // A full handshake from an address past `[limits] refused_handshakes` (resumption only).
    "blocked",
    "other",
];

/// Reasons for `ssp_provider_failures_total{reason}` (`proxy::outcome::ProviderFailure::label`).
pub const PROVIDER_FAILURES: [&str; 13] = [
    "resolve",
    "connect",
    "connect_timeout",
    "tls",
    "write",
    "closed",
    "closed_mid_head",
    "invalid_head",
    "switched_protocols",
    "broken_body",
    "stalled",
    "unasked",
    "other",
];

/// Reasons for `ssp_crl_refresh_failures_total{reason}` (`crl::Failure::label`).
pub const CRL_FAILURES: [&str; 11] = [
    "unreachable",
    "http_status",
    "bad_response",
    "too_large",
    "not_a_crl",
    "wrong_issuer",
    "bad_signature",
    "older",
    "expired",
    "write",
    "other",
];

/// Histogram bounds: a proxy adding well under 1 ms, providers answering within 3 s (SPEC
/// section 1) and a 30 s response timeout that lands in `+Inf`. Nanoseconds so observing
/// needs no floating point; the labels are written out so rendering needs no formatting.
const BOUNDS_NANOS: [u64; 14] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];
const BOUND_LABELS: [&str; 14] = [
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
    "10",
];

/// One observation is capped at a day so a clock glitch cannot wrap `_sum`.
const MAX_OBSERVATION_NANOS: u64 = 86_400 * 1_000_000_000;

struct Histogram {
    /// Per-bucket (not cumulative) counts; the last slot is above every bound.
    buckets: [AtomicU64; BOUNDS_NANOS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BOUNDS_NANOS.len() + 1],
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn observe(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos())
            .map_or(MAX_OBSERVATION_NANOS, |n| n.min(MAX_OBSERVATION_NANOS));
        // `le` is inclusive: the first bound at or above the observation.
        let slot = BOUNDS_NANOS.partition_point(|&bound| bound < nanos);
        self.buckets[slot].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, help, "histogram");
        let mut cumulative = 0;
        for (slot, count) in self.buckets.iter().enumerate() {
            cumulative += count.load(Relaxed);
            let le = BOUND_LABELS.get(slot).copied().unwrap_or("+Inf");
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// `ssp_requests_total{status,token}` without a lock: an open-addressing table whose keys are
/// claimed once by compare-and-swap and never removed. Providers may answer with any status,
/// so the table is bounded and what does not fit after a few probes is counted per family
/// under `status="other"` rather than growing anything.
const SLOTS: usize = 512;
const MAX_PROBES: usize = 16;
/// Marks a slot as claimed, so status 0 with family 0 is still a valid key.
const CLAIMED: u32 = 1 << 31;
// The key packs the family into 8 bits; the hash takes the top bits of a power of two.
const _: () = assert!(SLOTS.is_power_of_two() && FAMILIES.len() <= 0x100);

struct RequestCounts {
    keys: [AtomicU32; SLOTS],
    counts: [AtomicU64; SLOTS],
    overflow: [AtomicU64; FAMILIES.len()],
}

impl RequestCounts {
    fn new() -> RequestCounts {
        RequestCounts {
            keys: [const { AtomicU32::new(0) }; SLOTS],
            counts: [const { AtomicU64::new(0) }; SLOTS],
            overflow: [const { AtomicU64::new(0) }; FAMILIES.len()],
        }
    }

    fn add(&self, status: u16, family: usize) {
        let key = CLAIMED | u32::from(status) << 8 | family as u32;
        // Fibonacci hashing: statuses are clustered (200, 201, 400, 403...) and this spreads them.
        let start = (key.wrapping_mul(0x9E37_79B9) >> (32 - SLOTS.trailing_zeros())) as usize;
        for probe in 0..MAX_PROBES {
            let slot = (start + probe) % SLOTS;
            let mut current = self.keys[slot].load(Relaxed);
            if current == 0 {
                // Another worker may claim the slot first, possibly for this very key.
                current = match self.keys[slot].compare_exchange(0, key, Relaxed, Relaxed) {
                    Ok(_) => key,
                    Err(theirs) => theirs,
                };
            }
            if current == key {
                self.counts[slot].fetch_add(1, Relaxed);
                return;
            }
        }
        self.overflow[family].fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String) {
        header(
            out,
            "ssp_requests_total",
            "Requests answered, forwarded (token=\"\") or refused (token = the SPEC section 4 decision token without its ASIDs and URLs).",
            "counter",
        );
        let mut rows: Vec<(u16, usize, u64)> = (0..SLOTS)
            .filter_map(|slot| {
                let key = self.keys[slot].load(Relaxed);
                let family = (key & 0xFF) as usize;
                (key != 0 && family < FAMILIES.len())
                    .then(|| ((key >> 8) as u16, family, self.counts[slot].load(Relaxed)))
            })
            .collect();
        rows.sort_unstable();
        for (status, family, count) in rows {
            let _ = writeln!(
                out,
                "ssp_requests_total{{status=\"{status}\",token=\"{}\"}} {count}",
                FAMILIES[family].0
            );
        }
        for (family, count) in self.overflow.iter().enumerate() {
            let count = count.load(Relaxed);
            if count > 0 {
                let _ = writeln!(
                    out,
                    "ssp_requests_total{{status=\"other\",token=\"{}\"}} {count}",
                    FAMILIES[family].0
                );
            }
        }
    }
}

/// Whether a scrape-time sample is a counter or a gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// A figure another module owns (the audit's record count, its sync time...) handed to
/// [`Metrics::render`] at scrape time. Samples sharing a name form one metric family; the
/// first one's `help` and `kind` are used.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// The proxy's metrics registry; share it as `Arc<Metrics>` between the workers and the
/// admin endpoint.
pub struct Metrics {
    requests: RequestCounts,
    request_duration: Histogram,
    upstream_duration: Histogram,
    connections: AtomicI64,
    handshake_failures: [AtomicU64; REASONS.len()],
    throttled: AtomicU64,
    provider_busy: AtomicU64,
    provider_failures: [AtomicU64; PROVIDER_FAILURES.len()],
    crl_refresh_failures: [AtomicU64; CRL_FAILURES.len()],
    crl_updates: AtomicU64,
    config: Mutex<ConfigLoad>,
}

/// The outcome of the last load of the configuration, at start or on SIGHUP.
#[derive(Debug, Clone, Copy, Default)]
struct ConfigLoad {
    success: bool,
    /// Seconds since the epoch.
    at: i64,
    /// SHA-256 of the configuration in force.
    sha256: [u8; 32],
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics {
            requests: RequestCounts::new(),
            request_duration: Histogram::new(),
            upstream_duration: Histogram::new(),
            connections: AtomicI64::new(0),
            handshake_failures: [const { AtomicU64::new(0) }; REASONS.len()],
            throttled: AtomicU64::new(0),
            provider_busy: AtomicU64::new(0),
            provider_failures: [const { AtomicU64::new(0) }; PROVIDER_FAILURES.len()],
            crl_refresh_failures: [const { AtomicU64::new(0) }; CRL_FAILURES.len()],
            crl_updates: AtomicU64::new(0),
            config: Mutex::new(ConfigLoad::default()),
        })
    }

    /// One answered request, forwarded (`token` is `None`) or refused: counts it under its
    /// status and token family and observes its duration.
    pub fn request(&self, status: u16, token: Option<&str>, duration: Duration) {
        let family = token.map_or(FORWARDED, family_index);
        self.requests.add(status, family);
        self.request_duration.observe(duration);
    }

    /// Time from forwarding the request to the provider's response head.
    pub fn upstream(&self, duration: Duration) {
        self.upstream_duration.observe(duration);
    }

    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Relaxed);
    }

    /// A refused TLS handshake; `reason` is one of `unknown_ca`, `revoked`, `expired`,
    /// `no_certificate`, `subject`, `crl_expired`, `protocol`, `other` (anything else counts
    /// as `other`).
    pub fn handshake_failed(&self, reason: &str) {
        let slot = REASONS
            .iter()
            .position(|&r| r == reason)
            .unwrap_or(REASONS.len() - 1);
        self.handshake_failures[slot].fetch_add(1, Relaxed);
    }

    /// A 429 (row 14). Not bumped by [`Metrics::request`]: the throttle calls it.
    pub fn throttled(&self) {
        self.throttled.fetch_add(1, Relaxed);
    }

    /// A 503 `PROVIDER_BUSY` (row 15); kept apart from `ssp_throttled_total` because it is the
    /// provider's cap, not the consumer's rate, that refused.
    pub fn provider_busy(&self) {
        self.provider_busy.fetch_add(1, Relaxed);
    }

    /// A provider that could not answer (a 502) or whose answer was cut off; `reason` is one
    /// of [`PROVIDER_FAILURES`] (anything else counts as `other`).
    pub fn provider_failed(&self, reason: &str) {
        let slot = PROVIDER_FAILURES
            .iter()
            .position(|&r| r == reason)
            .unwrap_or(PROVIDER_FAILURES.len() - 1);
        self.provider_failures[slot].fetch_add(1, Relaxed);
    }

    /// A fetched CRL that was not put in force (or not stored); `reason` is one of
    /// [`CRL_FAILURES`] (anything else counts as `other`).
    pub fn crl_refresh_failed(&self, reason: &str) {
        let slot = CRL_FAILURES
            .iter()
            .position(|&r| r == reason)
            .unwrap_or(CRL_FAILURES.len() - 1);
        self.crl_refresh_failures[slot].fetch_add(1, Relaxed);
    }

    /// A newer CRL put in force by the refresher.
    pub fn crl_updated(&self) {
        self.crl_updates.fetch_add(1, Relaxed);
    }

    /// A configuration put in force at `at` (seconds since the epoch), at start or by a
    /// reload, whose file has the SHA-256 `sha256`.
    pub fn config_loaded(&self, at: i64, sha256: [u8; 32]) {
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = ConfigLoad {
            success: true,
            at,
            sha256,
        };
    }

    /// A reload refused at `at`: the configuration in force stays, and so does its hash.
    pub fn config_refused(&self, at: i64) {
        let mut config = self.config.lock().unwrap_or_else(|e| e.into_inner());
        config.success = false;
        config.at = at;
    }

    /// Everything in the Prometheus text format 0.0.4, followed by the caller's `extra`
    /// samples. An extra sample with an invalid metric or label name is left out (and
    /// logged) rather than spoiling the whole scrape.
    pub fn render(&self, extra: &[Sample]) -> String {
        let mut out = String::with_capacity(4096);
        self.requests.render(&mut out);
        self.request_duration.render(
            &mut out,
            "ssp_request_duration_seconds",
            "Time the proxy took to answer a request, forwarded or refused.",
        );
        self.upstream_duration.render(
            &mut out,
            "ssp_upstream_duration_seconds",
            "Time from forwarding a request to the provider's response head.",
        );
        header(
            &mut out,
            "ssp_connections_active",
            "Consumer connections open now.",
            "gauge",
        );
        let _ = writeln!(out, "ssp_connections_active {}", self.connections.load(Relaxed));
        header(
            &mut out,
            "ssp_tls_handshake_failures_total",
            "Consumer TLS handshakes refused (SPEC section 4 row 1), by reason.",
            "counter",
        );
        for (reason, count) in REASONS.iter().zip(&self.handshake_failures) {
            let _ = writeln!(
                out,
                "ssp_tls_handshake_failures_total{{reason=\"{reason}\"}} {}",
                count.load(Relaxed)
            );
        }
        header(
            &mut out,
            "ssp_throttled_total",
            "Requests refused with 429 because the consumer exceeded its rate (row 14); 503 PROVIDER_BUSY is counted in ssp_provider_busy_total.",
            "counter",
        );
        let _ = writeln!(out, "ssp_throttled_total {}", self.throttled.load(Relaxed));
        header(
            &mut out,
            "ssp_provider_busy_total",
            "Requests refused with 503 PROVIDER_BUSY because the provider had max_in_flight requests in flight (row 15).",
            "counter",
        );
        let _ = writeln!(
            out,
            "ssp_provider_busy_total {}",
            self.provider_busy.load(Relaxed)
        );
        header(
            &mut out,
            "ssp_provider_failures_total",
            "Exchanges a provider failed, by cause: 502s (row 17) and responses cut off after they began.",
            "counter",
        );
        for (reason, count) in PROVIDER_FAILURES.iter().zip(&self.provider_failures) {
            let _ = writeln!(
                out,
                "ssp_provider_failures_total{{reason=\"{reason}\"}} {}",
                count.load(Relaxed)
            );
        }
        header(
            &mut out,
            "ssp_crl_refresh_failures_total",
            "CRL fetches that left the CRL held in force (or could not store a new one), by reason.",
            "counter",
        );
        for (reason, count) in CRL_FAILURES.iter().zip(&self.crl_refresh_failures) {
            let _ = writeln!(
                out,
                "ssp_crl_refresh_failures_total{{reason=\"{reason}\"}} {}",
                count.load(Relaxed)
            );
        }
        header(
            &mut out,
            "ssp_crl_updates_total",
            "Newer CRLs fetched and put in force without a reload.",
            "counter",
        );
        let _ = writeln!(out, "ssp_crl_updates_total {}", self.crl_updates.load(Relaxed));
        let config = *self.config.lock().unwrap_or_else(|e| e.into_inner());
        header(
            &mut out,
            "ssp_config_last_reload_success",
            "1 if the last load of the configuration (start or SIGHUP) put it in force, 0 if it was refused and the one before keeps serving.",
            "gauge",
        );
        let _ = writeln!(out, "ssp_config_last_reload_success {}", u8::from(config.success));
        header(
            &mut out,
            "ssp_config_last_reload_timestamp_seconds",
            "When the configuration was last loaded or refused (start or SIGHUP), seconds since the epoch.",
            "gauge",
        );
        let _ = writeln!(out, "ssp_config_last_reload_timestamp_seconds {}", config.at);
        header(
            &mut out,
            "ssp_config_hash",
            "The configuration in force, by the SHA-256 of its file (as sha256sum and the audit's config records show it); always 1.",
            "gauge",
        );
        out.push_str("ssp_config_hash{sha256=\"");
        for byte in config.sha256 {
            let _ = write!(out, "{byte:02x}");
        }
        out.push_str("\"} 1\n");
        header(
            &mut out,
            "ssp_build_info",
            "The running binary, as ssp --version says it; always 1.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "ssp_build_info{{version=\"{}\",commit=\"{}\",rustc=\"{}\",target=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            env!("SSP_COMMIT"),
            env!("SSP_RUSTC"),
            env!("SSP_TARGET")
        );
        render_extra(&mut out, extra);
        out
    }
}

/// Writes the caller's samples grouped by name, because the format wants every line of a
/// metric family together under one `# TYPE`.
fn render_extra(out: &mut String, extra: &[Sample]) {
    let mut names: Vec<&'static str> = Vec::new();
    for sample in extra {
        if names.contains(&sample.name) {
            continue;
        }
        if !valid_name(sample.name, true) || sample.labels.iter().any(|(l, _)| !valid_name(l, false)) {
            log::warn!(
                "metrics: sample {:?} has an invalid metric or label name; left out",
                sample.name
            );
            continue;
        }
        names.push(sample.name);
        let kind = match sample.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        header(out, sample.name, sample.help, kind);
        for same in extra.iter().filter(|s| s.name == sample.name) {
            out.push_str(same.name);
            if !same.labels.is_empty() {
                out.push('{');
                for (i, (label, value)) in same.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{label}=\"");
                    escape(out, value, true);
                    out.push('"');
                }
                out.push('}');
            }
            out.push(' ');
            write_value(out, same.value);
            out.push('\n');
        }
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = write!(out, "# HELP {name} ");
    escape(out, help, false);
    let _ = writeln!(out, "\n# TYPE {name} {kind}");
}

/// Exposition format escaping: `\` and newline everywhere, `"` in label values too.
fn escape(out: &mut String, text: &str, quotes: bool) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quotes => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

fn write_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{value}");
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*` for metric names; label names may not contain `:`.
fn valid_name(name: &str, metric: bool) -> bool {
    let ok = |c: char| c.is_ascii_alphabetic() || c == '_' || (metric && c == ':');
    let mut chars = name.chars();
    chars.next().is_some_and(ok) && chars.all(|c| ok(c) || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    type Labels = Vec<(String, String)>;

    /// Parses exposition text strictly enough to catch malformed output: every comment is a
    /// well-formed HELP or TYPE, every family is typed before its samples and only once, and
    /// every other line is `name{labels} value`. Returns the samples.
    fn parse(text: &str) -> Vec<(String, Labels, f64)> {
        let mut typed: HashMap<String, String> = HashMap::new();
        let mut samples = Vec::new();
        assert!(text.ends_with('\n'), "exposition text ends with a newline");
        for line in text.lines() {
            if let Some(comment) = line.strip_prefix("# ") {
                let mut parts = comment.splitn(3, ' ');
                let (what, name) = (parts.next().unwrap(), parts.next().unwrap());
                assert!(valid_name(name, true), "{line}");
                if what == "TYPE" {
                    let kind = parts.next().unwrap();
                    assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                    assert!(
                        typed.insert(name.to_string(), kind.to_string()).is_none(),
                        "typed twice: {line}"
                    );
                } else {
                    assert_eq!(what, "HELP", "{line}");
                }
                continue;
            }
            let name_end = line.find(['{', ' ']).expect(line);
            let name = &line[..name_end];
            assert!(valid_name(name, true), "{line}");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(name);
            assert!(typed.contains_key(family), "sample before its TYPE: {line}");
            let mut rest = &line[name_end..];
            let mut labels = Vec::new();
            if let Some(inner) = rest.strip_prefix('{') {
                rest = inner;
                while !rest.starts_with('}') {
                    let eq = rest.find("=\"").expect(line);
                    let label = &rest[..eq];
                    assert!(valid_name(label, false), "{line}");
                    let mut value = String::new();
                    let mut chars = rest[eq + 2..].char_indices();
                    let end = loop {
                        match chars.next().expect(line) {
                            (i, '"') => break eq + 2 + i + 1,
                            (_, '\\') => match chars.next().expect(line).1 {
                                'n' => value.push('\n'),
                                c @ ('\\' | '"') => value.push(c),
                                c => panic!("bad escape \\{c} in {line}"),
                            },
                            (_, c) => value.push(c),
                        }
                    };
                    labels.push((label.to_string(), value));
                    rest = &rest[end..];
                    rest = rest.strip_prefix(',').unwrap_or(rest);
                }
                rest = &rest[1..];
            }
            let value = rest.strip_prefix(' ').expect(line);
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse::<f64>().unwrap_or_else(|_| panic!("bad value in {line}")),
            };
            samples.push((name.to_string(), labels, value));
        }
        samples
    }

    fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        parse(text).into_iter().find_map(|(n, l, v)| {
            let same = l.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, w)| l.iter().any(|(a, b)| a == k && b == w));
            (n == name && same).then_some(v)
        })
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn every_spec_section_4_token_is_labelled_by_its_family() {
        let table = [
            ("REQUEST_TIMEOUT", "REQUEST_TIMEOUT"),
            ("INVALID_REQUEST", "INVALID_REQUEST"),
            (
                "REQUEST_HEADER_FIELDS_TOO_LARGE",
                "REQUEST_HEADER_FIELDS_TOO_LARGE",
            ),
            ("INVALID_TARGET_URL", "INVALID_TARGET_URL"),
            ("METHOD_NOT_ALLOWED", "METHOD_NOT_ALLOWED"),
            (
                "MISSING_OR_INVALID_HEADER_Ssp-TraceID",
                "MISSING_OR_INVALID_HEADER_Ssp-TraceID",
            ),
            (
                "MISSING_OR_INVALID_HEADER_Ssp-From",
                "MISSING_OR_INVALID_HEADER_Ssp-From",
            ),
            (
                "MISSING_OR_INVALID_HEADER_Ssp-To",
                "MISSING_OR_INVALID_HEADER_Ssp-To",
            ),
            (
                "MISSING_OR_INVALID_HEADER_Ssp-InteractionID",
                "MISSING_OR_INVALID_HEADER_Ssp-InteractionID",
            ),
            (
                "MISSING_OR_INVALID_HEADER_Authorization",
                "MISSING_OR_INVALID_HEADER_Authorization",
            ),
            (
                "MISSING_OR_INVALID_HEADER_X-Anything",
                "MISSING_OR_INVALID_HEADER",
            ),
            ("CERTIFICATE_REVOKED", "CERTIFICATE_REVOKED"),
            ("CERTIFICATE_EXPIRED", "CERTIFICATE_EXPIRED"),
            (
                "ASID_CHECK_FAILED_MESSAGESENDER_200000000001",
                "ASID_CHECK_FAILED_MESSAGESENDER",
            ),
            (
                "PARTYKEY_INTERACTION_CHECK_FAILED_MESSAGERECEIVER_200000000999",
                "PARTYKEY_INTERACTION_CHECK_FAILED_MESSAGERECEIVER",
            ),
            (
                "FOT_CHECK_FAILED_MESSAGESENDER_200000000001_MESSAGERECEIVER_200000000999",
                "FOT_CHECK_FAILED_MESSAGESENDER_MESSAGERECEIVER",
            ),
            (
                "ENDPOINT_https://pecs.example.nhs.uk/P/1.0.0_VARIES_FROM_TARGETURL_https://10.0.0.7/P/1.0.0/x",
                "ENDPOINT_VARIES_FROM_TARGETURL",
            ),
            ("PAYLOAD_TOO_LARGE", "PAYLOAD_TOO_LARGE"),
            ("THROTTLED_MESSAGESENDER_200000000001", "THROTTLED_MESSAGESENDER"),
            ("PROVIDER_BUSY_200000000999", "PROVIDER_BUSY"),
            ("SERVICE_UNAVAILABLE", "SERVICE_UNAVAILABLE"),
            ("AUDIT_UNAVAILABLE", "AUDIT_UNAVAILABLE"),
            ("CLOCK_NOT_SYNCHRONISED", "CLOCK_NOT_SYNCHRONISED"),
            // Not an answer but a `res` record's word for an exchange SIGTERM cut short.
            ("DRAIN_TIMEOUT", "DRAIN_TIMEOUT"),
            (
                "ENDPOINT_https://h/a_CPAID_S1_VARIES_FROM_TARGETURL_https://h/b",
                "ENDPOINT_VARIES_FROM_TARGETURL",
            ),
            (
                "ERROR_COMMUNICATING_TO_ENDPOINT_URL_https://h/p?a=\"1\"",
                "ERROR_COMMUNICATING_TO_ENDPOINT_URL",
            ),
            (
                "TIMEOUT_COMMUNICATING_TO_ENDPOINT_URL_https://h/p",
                "TIMEOUT_COMMUNICATING_TO_ENDPOINT_URL",
            ),
            (
                "MISSING_OR_INVALID_JWT_CLAIM_exp",
                "MISSING_OR_INVALID_JWT_CLAIM_exp",
            ),
            (
                "MISSING_OR_INVALID_JWT_CLAIM_iat",
                "MISSING_OR_INVALID_JWT_CLAIM_iat",
            ),
            ("JWT_EXPIRED", "JWT_EXPIRED"),
            ("JWT_ISSUED_IN_THE_FUTURE", "JWT_ISSUED_IN_THE_FUTURE"),
            ("JWT_LIFETIME_TOO_LONG", "JWT_LIFETIME_TOO_LONG"),
            (
                "JWT_REASON_FOR_REQUEST_NOT_DIRECTCARE",
                "JWT_REASON_FOR_REQUEST_NOT_DIRECTCARE",
            ),
            ("JWT_NO_SCOPES_FOR_INTERACTION", "JWT_NO_SCOPES_FOR_INTERACTION"),
            (
                "JWT_REQUESTED_SCOPE_NOT_ALLOWED",
                "JWT_REQUESTED_SCOPE_NOT_ALLOWED",
            ),
            (
                "JWT_ISS_VARIES_FROM_MESSAGESENDER_200000000001",
                "JWT_ISS_VARIES_FROM_MESSAGESENDER",
            ),
            (
                "JWT_REQUESTING_DEVICE_VARIES_FROM_MESSAGESENDER_200000000001",
                "JWT_REQUESTING_DEVICE_VARIES_FROM_MESSAGESENDER",
            ),
            // Unknown, or a known word with a variable part it should not have, or lacking one.
            ("", "OTHER"),
            ("NO_SUCH_TOKEN", "OTHER"),
            ("REQUEST_TIMEOUT_5", "OTHER"),
            ("PROVIDER_BUSY", "OTHER"),
            ("PROVIDER_BUSYX", "OTHER"),
            ("FOT_CHECK_FAILED_MESSAGESENDER_1", "OTHER"),
            ("ENDPOINT_https://e", "OTHER"),
        ];
        for (token, family) in table {
            assert_eq!(token_family(token), family, "{token}");
        }
        // Every family but the forwarded one is reachable, so the table above misses none.
        for (family, _) in &FAMILIES[1..] {
            assert!(table.iter().any(|(_, f)| f == family), "{family} untested");
        }
    }

    #[test]
    fn rendering_is_valid_exposition_text_with_escaped_labels() {
        let m = Metrics::new();
        m.request(200, None, MS);
        m.request(403, Some("ASID_CHECK_FAILED_MESSAGESENDER_1"), MS);
        m.connection_opened();
        let extra = [
            Sample {
                name: "ssp_audit_records_total",
                help: "Audit records written.\nBy type, with a \\ in it.",
                kind: Kind::Counter,
                labels: vec![("type", "req".into())],
                value: 3.0,
            },
            Sample {
                name: "ssp_audit_sync_seconds",
                help: "Last fdatasync.",
                kind: Kind::Gauge,
                labels: vec![
                    ("file", "a \"quoted\"\\path\nline".into()),
                    ("dir", "/var/log/ssp".into()),
                ],
                value: 0.25,
            },
            // Not adjacent to its sibling: still rendered under the one TYPE.
            Sample {
                name: "ssp_audit_records_total",
                help: "",
                kind: Kind::Counter,
                labels: vec![("type", "res".into())],
                value: 2.0,
            },
            Sample {
                name: "ssp_nan",
                help: "",
                kind: Kind::Gauge,
                labels: vec![],
                value: f64::NAN,
            },
            Sample {
                name: "ssp_inf",
                help: "",
                kind: Kind::Gauge,
                labels: vec![],
                value: f64::INFINITY,
            },
            Sample {
                name: "bad name",
                help: "",
                kind: Kind::Gauge,
                labels: vec![],
                value: 1.0,
            },
            Sample {
                name: "ssp_bad_label",
                help: "",
                kind: Kind::Gauge,
                labels: vec![("a:b", "x".into())],
                value: 1.0,
            },
        ];
        let text = m.render(&extra);
        let samples = parse(&text);
        assert!(
            samples
                .iter()
                .all(|(n, _, _)| n != "bad name" && n != "ssp_bad_label"),
            "{text}"
        );
        assert_eq!(
            value(&text, "ssp_requests_total", &[("status", "200"), ("token", "")]),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "ssp_requests_total",
                &[("status", "403"), ("token", "ASID_CHECK_FAILED_MESSAGESENDER")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "ssp_audit_records_total", &[("type", "res")]),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                "ssp_audit_sync_seconds",
                &[("file", "a \"quoted\"\\path\nline"), ("dir", "/var/log/ssp")]
            ),
            Some(0.25)
        );
        assert!(text.contains(
            "# HELP ssp_audit_records_total Audit records written.\\nBy type, with a \\\\ in it.\n"
        ));
        assert!(
            text.contains("ssp_nan NaN\n") && text.contains("ssp_inf +Inf\n"),
            "{text}"
        );
        assert_eq!(value(&text, "ssp_connections_active", &[]), Some(1.0));
        for name in ["ssp_throttled_total", "ssp_provider_busy_total"] {
            assert_eq!(value(&text, name, &[]), Some(0.0), "{name}");
        }
    }

    #[test]
    fn counters_and_the_gauge_follow_the_calls() {
        let m = Metrics::new();
        let count = |m: &Metrics, status: &str, token: &str| {
            value(
                &m.render(&[]),
                "ssp_requests_total",
                &[("status", status), ("token", token)],
            )
        };
        assert_eq!(count(&m, "200", ""), None);
        m.request(200, None, MS);
        m.request(200, None, MS);
        m.request(429, Some("THROTTLED_MESSAGESENDER_200000000001"), MS);
        m.request(429, Some("THROTTLED_MESSAGESENDER_200000000002"), MS);
        m.request(999, Some("who knows"), MS);
        assert_eq!(count(&m, "200", ""), Some(2.0));
        assert_eq!(count(&m, "429", "THROTTLED_MESSAGESENDER"), Some(2.0));
        assert_eq!(count(&m, "999", "OTHER"), Some(1.0));

        m.throttled();
        m.throttled();
        m.provider_busy();
        m.handshake_failed("revoked");
        m.handshake_failed("revoked");
        m.handshake_failed("something the lead made up");
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        let text = m.render(&[]);
        assert_eq!(value(&text, "ssp_throttled_total", &[]), Some(2.0));
        assert_eq!(value(&text, "ssp_provider_busy_total", &[]), Some(1.0));
        assert_eq!(
            value(
                &text,
                "ssp_tls_handshake_failures_total",
                &[("reason", "revoked")]
            ),
            Some(2.0)
        );
        assert_eq!(
            value(&text, "ssp_tls_handshake_failures_total", &[("reason", "other")]),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "ssp_tls_handshake_failures_total",
                &[("reason", "expired")]
            ),
            Some(0.0)
        );
        assert_eq!(value(&text, "ssp_connections_active", &[]), Some(1.0));
    }

    #[test]
    fn histograms_are_cumulative_with_inclusive_bounds_sum_and_count() {
        let m = Metrics::new();
        for ms in [0.2, 0.5, 0.7, 3.0, 3.0, 1_200.0, 30_000.0] {
            m.request(200, None, Duration::from_secs_f64(ms / 1000.0));
        }
        m.upstream(Duration::from_millis(40));
        let text = m.render(&[]);
        let bucket = |name: &str, le: &str| value(&text, &format!("{name}_bucket"), &[("le", le)]);
        let name = "ssp_request_duration_seconds";
        assert_eq!(bucket(name, "0.0005"), Some(2.0), "0.5 ms is in le=0.0005");
        assert_eq!(bucket(name, "0.001"), Some(3.0));
        assert_eq!(bucket(name, "0.0025"), Some(3.0));
        assert_eq!(bucket(name, "0.005"), Some(5.0));
        assert_eq!(bucket(name, "1"), Some(5.0));
        assert_eq!(bucket(name, "2.5"), Some(6.0));
        assert_eq!(bucket(name, "10"), Some(6.0));
        assert_eq!(bucket(name, "+Inf"), Some(7.0));
        assert_eq!(value(&text, &format!("{name}_count"), &[]), Some(7.0));
        let sum = value(&text, &format!("{name}_sum"), &[]).unwrap();
        assert!((sum - 31.2074).abs() < 1e-6, "{sum}");
        let mut previous = 0.0;
        for le in BOUND_LABELS.iter().chain(["+Inf"].iter()) {
            let b = bucket(name, le).unwrap();
            assert!(b >= previous, "le={le} decreases");
            previous = b;
        }
        assert_eq!(bucket("ssp_upstream_duration_seconds", "0.025"), Some(0.0));
        assert_eq!(bucket("ssp_upstream_duration_seconds", "0.05"), Some(1.0));
        assert_eq!(value(&text, "ssp_upstream_duration_seconds_sum", &[]), Some(0.04));
    }

    #[test]
    fn a_huge_duration_neither_panics_nor_wraps_the_sum() {
        let m = Metrics::new();
        m.upstream(Duration::MAX);
        m.upstream(Duration::MAX);
        let text = m.render(&[]);
        assert_eq!(
            value(&text, "ssp_upstream_duration_seconds_sum", &[]),
            Some(2.0 * 86_400.0)
        );
        assert_eq!(
            value(&text, "ssp_upstream_duration_seconds_bucket", &[("le", "10")]),
            Some(0.0)
        );
    }

    #[test]
    fn statuses_beyond_the_table_are_counted_under_status_other() {
        let m = Metrics::new();
        for status in 0..=u16::MAX {
            m.request(status, None, MS);
        }
        let samples = parse(&m.render(&[]));
        let total: f64 = samples
            .iter()
            .filter(|(n, _, _)| n == "ssp_requests_total")
            .map(|(_, _, v)| v)
            .sum();
        assert_eq!(total, 65_536.0);
        let rows = samples
            .iter()
            .filter(|(n, _, _)| n == "ssp_requests_total")
            .count();
        assert!(rows <= SLOTS + FAMILIES.len(), "bounded: {rows} rows");
        assert!(
            samples
                .iter()
                .any(|(_, l, _)| l.iter().any(|(k, v)| k == "status" && v == "other")),
            "overflow row"
        );
    }

    #[test]
    fn four_threads_updating_at_once_lose_nothing() {
        const N: u64 = 10_000;
        let m = Metrics::new();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    for i in 0..N {
                        // Each thread claims table slots for the same keys as the others.
                        let status = [200, 404, 403, 429][(i % 4) as usize];
                        let token = (status != 200).then_some("PROVIDER_BUSY_200000000999");
                        m.request(status, token, MS);
                        m.upstream(MS);
                        m.connection_opened();
                        m.handshake_failed(if t % 2 == 0 { "expired" } else { "?" });
                        m.throttled();
                        m.connection_closed();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = m.render(&[]);
        for status in ["200", "404", "403", "429"] {
            let token = if status == "200" { "" } else { "PROVIDER_BUSY" };
            assert_eq!(
                value(
                    &text,
                    "ssp_requests_total",
                    &[("status", status), ("token", token)]
                ),
                Some(N as f64)
            );
        }
        assert_eq!(
            value(&text, "ssp_request_duration_seconds_count", &[]),
            Some(4.0 * N as f64)
        );
        assert_eq!(
            value(&text, "ssp_upstream_duration_seconds_count", &[]),
            Some(4.0 * N as f64)
        );
        assert_eq!(value(&text, "ssp_request_duration_seconds_sum", &[]), Some(40.0));
        assert_eq!(value(&text, "ssp_throttled_total", &[]), Some(4.0 * N as f64));
        assert_eq!(
            value(
                &text,
                "ssp_tls_handshake_failures_total",
                &[("reason", "expired")]
            ),
            Some(2.0 * N as f64)
        );
        assert_eq!(
            value(&text, "ssp_tls_handshake_failures_total", &[("reason", "other")]),
            Some(2.0 * N as f64)
        );
        assert_eq!(value(&text, "ssp_connections_active", &[]), Some(0.0));
    }
}
