//! Loader tests, grouped as SPEC §3 is: the example file and its defaults, then errors
//! (syntax and unknown keys, values, required keys, entries), then paths.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const FILE: &str = "/etc/ssp/ssp.toml";

/// The example of SPEC §3, verbatim.
const SPEC_EXAMPLE: &str = r#"[server]
listen = ["0.0.0.0:443"]                 # consumer-facing TLS addresses
workers = 0                              # event-loop threads; 0 = one per CPU
certificate = "tls/ssp.pem"              # the proxy's chain (leaf first); also its client certificate to providers
private_key = "tls/ssp.key"              # PKCS#8, PKCS#1 or SEC1 PEM
client_ca = "tls/nhs-ca.pem"             # trust anchors for consumer certificates
crl = ["tls/level1c.crl"]                # PEM or DER; [] disables revocation checks (loud warning)
crl_expired = "deny"                     # a CRL past nextUpdate: "deny" (fail closed) or "allow"
crl_check = "leaf"                       # "leaf": the consumer's certificate; "chain": every certificate
                                         # below a trust anchor. A certificate whose issuer has no CRL
                                         # loaded is refused (unknown status is denied) unless crl = [].
client_subject = { O = "nhs", OU = "Devices" }   # attributes every consumer subject must carry
forwarded = true                         # add RFC 7239 Forwarded
require_jwt = true

[upstream]
ca = "tls/nhs-ca.pem"                    # trust anchors for provider certificates
connect_timeout = "5s"
response_timeout = "30s"                 # until the provider's response head; then 504
pool_idle_timeout = "60s"
pool_max_idle = 32                       # idle keep-alive connections kept per provider, per worker

[limits]
max_connections = 10000
max_header_bytes = 32768
max_body_bytes = 10485760
header_timeout = "10s"                   # to receive a complete request head (slowloris)
idle_timeout = "60s"                     # keep-alive idle
methods = ["GET", "POST", "PUT"]

[throttle]
rate = 20                                # requests/second per consumer ASID (default)
burst = 40
max_in_flight = 64                       # concurrent requests per provider (default)

[audit]
dir = "/var/log/ssp"
key = "/var/lib/ssp/audit.key"           # from `ssp audit keygen`
sync = "batch"                           # "always" | "batch" | "off"
rotate_bytes = 67108864
seal_interval = "60s"

[transactions]
path = "/var/log/ssp/transactions.log"   # performance log, one JSON line per request

[admin]
listen = "127.0.0.1:9901"                # plain HTTP, loopback: /healthz, /readyz, /metrics

[[consumer]]
asid = "200000000001"
fqdn = "dispenser-a.example.nhs.uk"      # must equal the CN of this consumer's certificate
interactions = ["urn:nhs:names:services:prescription-exemptions:custom:operation:search:prescription-exemptions"]
providers = ["200000000999"]             # data-sharing agreements: provider ASIDs it may call
rate = 50                                # optional override
burst = 100                              # optional override

[[provider]]
asid = "200000000999"
endpoint = "https://pecs.example.nhs.uk/Prescription-Exemptions/1.0.0"   # registered service root URL
interactions = ["urn:nhs:names:services:prescription-exemptions:custom:operation:search:prescription-exemptions"]
connect = "10.0.0.7:443"                 # optional: fixed address instead of DNS (like curl --resolve)
max_in_flight = 128                      # optional override

[jwt]
mode = "shape"                           # "shape": well-formed, logged; "enforce": the published rules too
leeway = "60s"
bind_sender = false                      # enforce: iss / requesting_device must equal Ssp-From
scopes = { "urn:nhs:names:services:prescription-exemptions:custom:operation:search:prescription-exemptions" = ["Prescription-Exemption/1.0.0/search"] }
"#;

/// Only what has no default. Line numbers in the tests below count from `[server]` = 1.
const MINIMAL: &str = r#"[server]
certificate = "tls/ssp.pem"
private_key = "tls/ssp.key"
client_ca = "tls/nhs-ca.pem"
crl = ["tls/level1c.crl"]

[upstream]
ca = "tls/nhs-ca.pem"

[[consumer]]
asid = "200000000001"
fqdn = "dispenser-a.example.nhs.uk"
interactions = ["urn:x"]
providers = ["200000000999"]

[[provider]]
asid = "200000000999"
endpoint = "https://pecs.example.nhs.uk/Prescription-Exemptions/1.0.0"
interactions = ["urn:x"]
"#;

const PECS_SEARCH: &str =
    "urn:nhs:names:services:prescription-exemptions:custom:operation:search:prescription-exemptions";

fn parse_text(text: &str) -> Result<Config, ConfigErrors> {
    parse(text, Path::new(FILE))
}

/// The one problem `text` has.
fn refused(text: &str) -> ConfigError {
    match parse_text(text) {
        Ok(config) => panic!("should be refused, loaded {config:#?}"),
        Err(ConfigErrors(mut errors, _)) if errors.len() == 1 => errors.remove(0),
        Err(errors) => panic!("expected one problem, found:\n{errors}"),
    }
}

/// `MINIMAL` with one edit; the edit must apply, or the test would test nothing.
fn minimal_with(from: &str, to: &str) -> String {
    assert!(MINIMAL.contains(from), "MINIMAL has no {from:?}");
    MINIMAL.replacen(from, to, 1)
}

fn assert_error(error: &ConfigError, line: Option<usize>, key: &str, message_part: &str) {
    assert_eq!(error.file, Path::new(FILE), "{error}");
    assert_eq!(error.line, line, "{error}");
    assert_eq!(error.key.as_deref(), Some(key), "{error}");
    assert!(error.message.contains(message_part), "{error}");
}

fn etc(path: &str) -> PathBuf {
    Path::new("/etc/ssp").join(path)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Everything but the entries.
type Sections = (Server, Upstream, Limits, Throttle, Audit, Transactions, Admin);

/// Every section the SPEC example spells out, which is also every default: the example
/// writes each default value explicitly.
fn spec_sections() -> Sections {
    (
        Server {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 443))],
            workers: 0,
            certificate: etc("tls/ssp.pem"),
            private_key: etc("tls/ssp.key"),
            client_ca: etc("tls/nhs-ca.pem"),
            crl: vec![CrlSource::file(etc("tls/level1c.crl"))],
            crl_expired: CrlExpired::Deny,
            crl_check: CrlCheck::Leaf,
            crl_refresh: CrlRefresh {
                interval: secs(3600),
                jitter: secs(300),
                margin: secs(4 * 3600),
                retry: secs(300),
                proxy: None,
                connect_timeout: secs(10),
                read_timeout: secs(30),
                max_bytes: 16 << 20,
            },
            client_subject: vec![("O".into(), "nhs".into()), ("OU".into(), "Devices".into())],
            forwarded: true,
            require_jwt: true,
            clock_unsynced: ClockUnsynced::Warn,
            hsts: Some("max-age=31536000".into()),
            proxy_protocol: false,
            stop_delay: secs(5),
        },
        Upstream {
            ca: etc("tls/nhs-ca.pem"),
            connect_timeout: secs(5),
            response_timeout: secs(30),
            pool_idle_timeout: secs(60),
            pool_max_idle: Some(32),
        },
        Limits {
            max_connections: 10_000,
            max_header_bytes: 32_768,
            max_body_bytes: 10_485_760,
            header_timeout: secs(10),
            idle_timeout: secs(60),
            drain_timeout: secs(30),
            refused_handshakes: 20,
            refusals: 20,
            min_upload_rate: 1024,
            methods: vec!["GET".into(), "POST".into(), "PUT".into()],
        },
        Throttle {
            rate: 20.0,
            burst: 40,
            max_in_flight: 64,
            consumer_share: 0.5,
        },
        Audit {
            dir: PathBuf::from("/var/log/ssp"),
            key: Some(PathBuf::from("/var/lib/ssp/audit.key")),
            sync: AuditSync::Batch,
            rotate_bytes: 67_108_864,
            seal_interval: secs(60),
        },
        Transactions {
            path: Some(PathBuf::from("/var/log/ssp/transactions.log")),
        },
        Admin {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9901))),
            allow_remote: false,
        },
    )
}

fn sections(c: &Config) -> Sections {
    (
        c.server.clone(),
        c.upstream.clone(),
        c.limits.clone(),
        c.throttle.clone(),
        c.audit.clone(),
        c.transactions.clone(),
        c.admin.clone(),
    )
}

// SPEC §3: the example file and the defaults.

#[test]
fn spec_example_loads_with_every_value() {
    let config = parse_text(SPEC_EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.path, Path::new(FILE));
    assert_eq!(sections(&config), spec_sections());
    assert_eq!(
        config.consumers,
        vec![Consumer {
            asid: "200000000001".into(),
            fqdn: "dispenser-a.example.nhs.uk".into(),
            interactions: vec![PECS_SEARCH.into()],
            providers: vec!["200000000999".into()],
            rate: Some(50.0),
            burst: Some(100),
            line: 49,
        }]
    );
    assert_eq!(
        config.providers,
        vec![Provider {
            asid: "200000000999".into(),
            endpoints: vec![ProviderEndpoint {
                url: Endpoint {
                    url: "https://pecs.example.nhs.uk/Prescription-Exemptions/1.0.0".into(),
                    host: "pecs.example.nhs.uk".into(),
                    port: None,
                    path: "/Prescription-Exemptions/1.0.0".into(),
                },
                cpaid: None,
                interactions: vec![PECS_SEARCH.into()],
            }],
            interactions: vec![PECS_SEARCH.into()],
            connect: vec![SocketAddr::from(([10, 0, 0, 7], 443))],
            max_in_flight: Some(128),
            line: 57,
        }]
    );
}

#[test]
fn absent_keys_and_sections_take_the_spec_defaults() {
    let config = parse_text(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
    let mut defaults = spec_sections();
    // The SPEC's 32 sized a shared pool; a provider connection now serves one consumer
    // connection, and a cap of 32 would close the 33rd one's (README, `pool_max_idle`).
    defaults.1.pool_max_idle = None;
    assert_eq!(sections(&config), defaults);
    let consumer = &config.consumers[0];
    assert_eq!((consumer.rate, consumer.burst, consumer.line), (None, None, 10));
    let provider = &config.providers[0];
    assert_eq!(
        (provider.connect.as_slice(), provider.max_in_flight, provider.line),
        (&[][..], None, 16)
    );
}

#[test]
fn empty_strings_switch_off_the_transactions_log_and_admin_endpoint_but_not_the_audit_key() {
    let text = format!("{MINIMAL}[transactions]\npath = \"\"\n[admin]\nlisten = \"\"\n[audit]\nkey = \"\"\n");
    let config = parse_text(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.transactions.path, None);
    assert_eq!(config.admin.listen, None);
    assert_eq!(config.audit.key, Some(PathBuf::from("/var/lib/ssp/audit.key")));
}

#[test]
fn explicit_values_replace_the_defaults() {
    let server_keys = r#"[server]
crl_expired = "allow"
crl_check = "chain"
client_subject = { OU = "Devices", C = "GB", O = "nhs" }
listen = ["0.0.0.0:443", "[::]:8443"]
workers = 1024
forwarded = false
require_jwt = false
"#;
    let upstream_keys = "[upstream]\npool_idle_timeout = \"0s\"\npool_max_idle = 0\n";
    let other_sections = r#"
[limits]
methods = ["GET"]
max_header_bytes = 1024
max_body_bytes = 0
header_timeout = "500ms"

[throttle]
rate = 0.5

[audit]
sync = "always"
seal_interval = "2m"
"#;
    let text =
        minimal_with("[server]\n", server_keys).replacen("[upstream]\n", upstream_keys, 1) + other_sections;
    let config = parse_text(&text).unwrap_or_else(|e| panic!("{e}"));
    let server = &config.server;
    assert_eq!(server.crl_expired, CrlExpired::Allow);
    assert_eq!(server.crl_check, CrlCheck::Chain);
    let subject: Vec<(&str, &str)> = server
        .client_subject
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(subject, [("C", "GB"), ("O", "nhs"), ("OU", "Devices")]);
    assert_eq!(server.listen[1], "[::]:8443".parse().unwrap());
    assert_eq!(
        (server.workers, server.forwarded, server.require_jwt),
        (1024, false, false)
    );
    assert_eq!(config.upstream.pool_idle_timeout, Duration::ZERO);
    assert_eq!(config.upstream.pool_max_idle, Some(0));
    assert_eq!(config.limits.methods, ["GET"]);
    assert_eq!(config.limits.max_header_bytes, 1024);
    assert_eq!(config.limits.max_body_bytes, 0);
    assert_eq!(config.limits.header_timeout, Duration::from_millis(500));
    assert_eq!(config.throttle.rate, 0.5);
    assert_eq!(config.audit.sync, AuditSync::Always);
    assert_eq!(config.audit.seal_interval, secs(120));
}

// SPEC §3 "Unknown keys are errors", and other problems found while reading the TOML.

#[test]
fn unknown_top_level_key_is_named_with_its_line() {
    let error = refused("# ssp\nlisten = [\"0.0.0.0:443\"]\n[server]\n");
    assert_error(&error, Some(2), "listen", "unknown key `listen`");
}

#[test]
fn unknown_key_in_server_is_named_with_its_line() {
    let error = refused(&minimal_with("crl = ", "certficate = \"x\"\ncrl = "));
    assert_error(&error, Some(5), "server.certficate", "unknown key `certficate`");
}

#[test]
fn unknown_key_in_a_consumer_is_named_with_its_entry_and_line() {
    let text = format!("{MINIMAL}\n[[consumer]]\nasid = \"200000000002\"\nfavourite_colour = \"blue\"\n");
    let error = refused(&text);
    assert_error(
        &error,
        Some(23),
        "consumer[2].favourite_colour",
        "unknown key `favourite_colour`",
    );
}

#[test]
fn unknown_key_in_an_inline_table_is_named() {
    let error = refused("[server]\nclient_subject = { O = \"nhs\" }\n[limits.extra]\nx = 1\n");
    assert_error(&error, Some(3), "limits.extra", "unknown key `extra`");
}

#[test]
fn wrong_type_is_named_with_its_line() {
    let error = refused("[server]\n\n[limits]\nmax_connections = \"many\"\n");
    assert_error(&error, Some(4), "limits.max_connections", "invalid type");
    let error = refused("server = 3\n");
    assert_error(&error, Some(1), "server", "expected a table");
}

#[test]
fn toml_syntax_error_has_a_line() {
    let error = refused("[server]\ncertificate = \"tls/ssp.pem\n");
    assert_eq!(error.line, Some(2), "{error}");
    assert!(error.to_string().starts_with("/etc/ssp/ssp.toml:2: "), "{error}");
}

// Values.

#[test]
fn bad_duration_is_named_with_key_and_line() {
    let error = refused(&minimal_with(
        "[upstream]\n",
        "[upstream]\nconnect_timeout = \"1.5s\"\n",
    ));
    assert_error(&error, Some(8), "upstream.connect_timeout", "\"1.5s\"");
}

#[test]
fn zero_timeouts_are_refused_where_zero_makes_no_sense() {
    let error = refused(&minimal_with(
        "[upstream]\n",
        "[upstream]\nresponse_timeout = \"0s\"\n",
    ));
    assert_error(&error, Some(8), "upstream.response_timeout", "longer than zero");
    let error = refused(&format!("{MINIMAL}[audit]\nseal_interval = \"0ms\"\n"));
    assert_error(&error, Some(21), "audit.seal_interval", "longer than zero");
}

#[test]
fn crl_expired_bad_value_lists_the_choices() {
    let error = refused(&minimal_with("[server]\n", "[server]\ncrl_expired = \"maybe\"\n"));
    assert_eq!(
        error.to_string(),
        "/etc/ssp/ssp.toml:2: `server.crl_expired`: expected \"deny\" or \"allow\", found \"maybe\""
    );
    let error = refused(&format!("{MINIMAL}[audit]\nsync = \"sometimes\"\n"));
    assert_error(
        &error,
        Some(21),
        "audit.sync",
        "expected \"always\", \"batch\" or \"off\"",
    );
}

#[test]
fn numbers_outside_their_range_are_refused() {
    let cases = [
        ("[server]\nworkers = 1025\n", "server.workers", "at most 1024"),
        (
            "[limits]\nmax_connections = 0\n",
            "limits.max_connections",
            "at least 1",
        ),
        (
            "[limits]\nmax_header_bytes = 1023\n",
            "limits.max_header_bytes",
            "between 1024 and 1048576",
        ),
        (
            "[limits]\nmax_header_bytes = 1048577\n",
            "limits.max_header_bytes",
            "between",
        ),
        ("[throttle]\nrate = 0\n", "throttle.rate", "above zero"),
        ("[throttle]\nrate = inf\n", "throttle.rate", "above zero"),
        ("[throttle]\nrate = nan\n", "throttle.rate", "above zero"),
        ("[throttle]\nburst = 0\n", "throttle.burst", "at least 1"),
        (
            "[throttle]\nmax_in_flight = 0\n",
            "throttle.max_in_flight",
            "at least 1",
        ),
        ("[audit]\nrotate_bytes = 0\n", "audit.rotate_bytes", "at least 1"),
    ];
    for (section, key, message) in cases {
        let text = match section.strip_prefix("[server]\n") {
            Some(line) => minimal_with("[server]\n", &format!("[server]\n{line}")),
            None => format!("{MINIMAL}{section}"),
        };
        let error = refused(&text);
        let line = if key.starts_with("server.") { 2 } else { 21 };
        assert_error(&error, Some(line), key, message);
    }
}

#[test]
fn methods_must_be_uppercase_tokens() {
    for (methods, key) in [
        ("[\"GET\", \"post\"]", "limits.methods[2]"),
        ("[\"\"]", "limits.methods[1]"),
        ("[\"GE T\"]", "limits.methods[1]"),
    ] {
        let error = refused(&format!("{MINIMAL}[limits]\nmethods = {methods}\n"));
        assert_error(&error, Some(21), key, "uppercase HTTP method");
    }
    let error = refused(&format!("{MINIMAL}[limits]\nmethods = []\n"));
    assert_error(&error, Some(21), "limits.methods", "must not be empty");
}

#[test]
fn listen_addresses_must_be_present_distinct_and_numeric() {
    let error = refused(&minimal_with("[server]\n", "[server]\nlisten = []\n"));
    assert_error(&error, Some(2), "server.listen", "must not be empty");
    let error = refused(&minimal_with(
        "[server]\n",
        "[server]\nlisten = [\n  \"0.0.0.0:443\",\n  \"0.0.0.0:443\",\n]\n",
    ));
    assert_error(&error, Some(4), "server.listen[2]", "listed twice");
    let error = refused(&minimal_with(
        "[server]\n",
        "[server]\nlisten = [\"localhost:443\"]\n",
    ));
    assert_error(&error, Some(2), "server.listen[1]", "IP address and port");
    let error = refused(&format!("{MINIMAL}[admin]\nlisten = \"127.0.0.1\"\n"));
    assert_error(&error, Some(21), "admin.listen", "IP address and port");
}

#[test]
fn client_subject_attributes_are_checked() {
    let error = refused(&minimal_with(
        "[server]\n",
        "[server]\nclient_subject = { O = \"nhs\", ou = \"Devices\" }\n",
    ));
    assert_error(
        &error,
        Some(2),
        "server.client_subject.ou",
        "CN, O, OU, C, L, ST, DC",
    );
    let error = refused(&minimal_with(
        "[server]\n",
        "[server]\nclient_subject = { O = \"\" }\n",
    ));
    assert_error(&error, Some(2), "server.client_subject.O", "must not be empty");
}

// Required keys: the certificate paths and CRLs, at least one consumer and one provider.

#[test]
fn missing_certificate_is_reported_at_the_server_header() {
    let error = refused(&minimal_with("certificate = \"tls/ssp.pem\"\n", ""));
    assert_error(&error, Some(1), "server.certificate", "missing required key");
}

#[test]
fn missing_server_section_is_reported_without_a_line() {
    // Also without consumers and providers: three problems, none with a line.
    let errors = parse_text("[upstream]\nca = \"ca.pem\"\n")
        .expect_err("refused")
        .0;
    let keys: Vec<_> = errors.iter().map(|e| e.key.as_deref()).collect();
    assert_eq!(
        keys,
        [Some("server.certificate"), Some("provider"), Some("consumer")]
    );
    let error = &errors[0];
    assert_error(error, None, "server.certificate", "missing required key");
    assert_eq!(
        error.to_string(),
        "/etc/ssp/ssp.toml: `server.certificate`: missing required key"
    );
}

#[test]
fn missing_crl_fails_closed_and_an_empty_list_disables_it() {
    let error = refused(&minimal_with("crl = [\"tls/level1c.crl\"]\n", ""));
    assert_error(&error, Some(1), "server.crl", "crl = []");
    let config = parse_text(&minimal_with("crl = [\"tls/level1c.crl\"]", "crl = []")).unwrap();
    assert!(config.server.crl.is_empty());
    let error = refused(&minimal_with(
        "crl = [\"tls/level1c.crl\"]",
        "crl = [\"a.crl\", \"\"]",
    ));
    assert_error(&error, Some(5), "server.crl[2]", "must not be empty");
}

#[test]
fn missing_upstream_ca_is_refused() {
    let error = refused(&minimal_with(
        "[upstream]\nca = \"tls/nhs-ca.pem\"\n",
        "[upstream]\n",
    ));
    assert_error(&error, Some(7), "upstream.ca", "missing required key");
}

#[test]
fn no_consumer_is_refused() {
    let consumer = &MINIMAL[MINIMAL.find("[[consumer]]").unwrap()..MINIMAL.find("[[provider]]").unwrap()];
    let error = refused(&minimal_with(consumer, ""));
    assert_eq!((error.line, error.key.as_deref()), (None, Some("consumer")));
    assert!(error.message.contains("at least one [[consumer]]"), "{error}");
}

#[test]
fn no_provider_is_refused() {
    let provider = &MINIMAL[MINIMAL.find("[[provider]]").unwrap()..];
    let errors = parse_text(&minimal_with(provider, "")).expect_err("refused").0;
    // The consumer's agreement names the provider that is gone, too.
    let found: Vec<_> = errors.iter().map(|e| (e.line, e.key.as_deref())).collect();
    assert_eq!(
        found,
        [
            (Some(14), Some("consumer[1].providers[1]")),
            (None, Some("provider"))
        ]
    );
}

#[test]
fn missing_entry_keys_are_reported_at_the_entry_header() {
    let error = refused(&minimal_with("fqdn = \"dispenser-a.example.nhs.uk\"\n", ""));
    assert_error(&error, Some(10), "consumer[1].fqdn", "missing required key");
    let error = refused(&minimal_with("providers = [\"200000000999\"]\n", ""));
    assert_error(&error, Some(10), "consumer[1].providers", "missing required key");
    let error = refused(&minimal_with(
        "endpoint = \"https://pecs.example.nhs.uk/Prescription-Exemptions/1.0.0\"\n",
        "",
    ));
    assert_error(&error, Some(16), "provider[1].endpoint", "missing required key");
}

// Entries: ASIDs, agreements, interactions, endpoints.

#[test]
fn duplicate_consumer_asid_is_reported_at_the_second() {
    let second = r#"
[[consumer]]
asid = "200000000001"
fqdn = "b.example"
interactions = ["urn:x"]
providers = []
"#;
    let text = format!("{MINIMAL}{second}");
    let error = refused(&text);
    assert_error(
        &error,
        Some(22),
        "consumer[2].asid",
        "duplicate consumer ASID 200000000001",
    );
    assert!(error.message.contains("line 10"), "{error}");
}

#[test]
fn duplicate_provider_asid_is_reported_at_the_second() {
    let second = r#"
[[provider]]
asid = "200000000999"
endpoint = "https://other.example/"
interactions = ["urn:x"]
"#;
    let text = format!("{MINIMAL}{second}");
    let error = refused(&text);
    assert_error(
        &error,
        Some(22),
        "provider[2].asid",
        "duplicate provider ASID 200000000999",
    );
    assert!(error.message.contains("line 16"), "{error}");
}

#[test]
fn asids_are_one_to_twenty_digits() {
    for bad in ["", "20000000000a", " 200000000001", "123456789012345678901", "-1"] {
        let error = refused(&minimal_with(
            "asid = \"200000000001\"",
            &format!("asid = {bad:?}"),
        ));
        assert_error(&error, Some(11), "consumer[1].asid", "1 to 20 digits");
    }
    let twenty = "12345678901234567890";
    let text = minimal_with("asid = \"200000000001\"", &format!("asid = \"{twenty}\""));
    assert_eq!(parse_text(&text).unwrap().consumers[0].asid, twenty);
}

#[test]
fn agreement_naming_an_unknown_provider_is_refused() {
    let error = refused(&minimal_with(
        "providers = [\"200000000999\"]",
        "providers = [\"200000000999\", \"200000000998\"]",
    ));
    assert_error(&error, Some(14), "consumer[1].providers[2]", "\"200000000998\"");
}

#[test]
fn consumer_with_no_agreements_is_allowed() {
    let config = parse_text(&minimal_with("providers = [\"200000000999\"]", "providers = []")).unwrap();
    assert!(config.consumers[0].providers.is_empty());
}

#[test]
fn interactions_need_at_least_one_non_empty_entry() {
    let error = refused(&minimal_with("interactions = [\"urn:x\"]", "interactions = []"));
    assert_error(&error, Some(13), "consumer[1].interactions", "must not be empty");
    let error = refused(&minimal_with(
        "interactions = [\"urn:x\"]",
        "interactions = [\"urn:x\", \"\"]",
    ));
    assert_error(&error, Some(13), "consumer[1].interactions[2]", "interaction ID");
    let provider = &MINIMAL[MINIMAL.find("[[provider]]").unwrap()..];
    let text = minimal_with(provider, &provider.replace("[\"urn:x\"]", "[\"urn: x\"]"));
    assert_error(
        &refused(&text),
        Some(19),
        "provider[1].interactions[1]",
        "without spaces",
    );
}

#[test]
fn fqdn_is_checked_and_lowercased() {
    let text = minimal_with("dispenser-a.example.nhs.uk", "Dispenser-A.Example.NHS.uk");
    assert_eq!(
        parse_text(&text).unwrap().consumers[0].fqdn,
        "dispenser-a.example.nhs.uk"
    );
    for bad in [
        "",
        "dispenser a.example",
        "https://dispenser-a.example",
        "dispenser-a.example.",
        "host:443",
    ] {
        let error = refused(&minimal_with(
            "\"dispenser-a.example.nhs.uk\"",
            &format!("{bad:?}"),
        ));
        assert_error(&error, Some(12), "consumer[1].fqdn", "DNS name");
    }
}

#[test]
fn http_endpoint_is_refused() {
    let error = refused(&minimal_with("https://pecs", "http://pecs"));
    assert_error(&error, Some(18), "provider[1].endpoint", "plain http");
}

#[test]
fn endpoint_with_query_is_refused() {
    let error = refused(&minimal_with("1.0.0\"", "1.0.0?_format=json\""));
    assert_error(&error, Some(18), "provider[1].endpoint", "query");
}

#[test]
fn provider_connect_and_max_in_flight_are_checked() {
    let error = refused(&format!("{MINIMAL}connect = \"pecs.example.nhs.uk:443\"\n"));
    assert_error(&error, Some(20), "provider[1].connect", "IP address and port");
    for (value, complaint) in [
        ("10.0.0.7:443,", "IP address and port"),
        ("10.0.0.7:443, pecs.example.nhs.uk:443", "IP address and port"),
        ("10.0.0.7:443, 10.0.0.7:443", "twice"),
        (
            &(1..=17)
                .map(|i| format!("10.0.0.{i}:443"))
                .collect::<Vec<_>>()
                .join(","),
            "at most 16",
        ),
    ] {
        let error = refused(&format!("{MINIMAL}connect = \"{value}\"\n"));
        assert_error(&error, Some(20), "provider[1].connect", complaint);
    }
    let config = parse_text(&format!(
        "{MINIMAL}connect = \"10.0.0.7:443, [2001:db8::7]:8443\"\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.providers[0].connect,
        [
            "10.0.0.7:443".parse::<SocketAddr>().unwrap(),
            "[2001:db8::7]:8443".parse().unwrap()
        ]
    );
    let error = refused(&format!("{MINIMAL}max_in_flight = 0\n"));
    assert_error(&error, Some(20), "provider[1].max_in_flight", "at least 1");
}

#[test]
fn entries_may_be_written_as_inline_tables() {
    let consumer = &MINIMAL[MINIMAL.find("[[consumer]]").unwrap()..MINIMAL.find("[[provider]]").unwrap()];
    let inline = r#"consumer = [
  { asid = "7", fqdn = "a.example", interactions = ["urn:x"], providers = [], rate = 2 },
]
"#;
    let text = format!("{inline}{}", minimal_with(consumer, ""));
    let config = parse_text(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (config.consumers[0].asid.as_str(), config.consumers[0].line),
        ("7", 2)
    );
    assert_eq!(config.consumers[0].rate, Some(2.0));
}

// CRL sources and their refresh.

#[test]
fn crl_entries_mix_paths_and_tables_with_urls() {
    let text = minimal_with(
        "crl = [\"tls/level1c.crl\"]",
        "crl = [\"tls/root.crl\", { path = \"tls/level1c.crl\", url = \"http://crl.nhs.uk/live/1c/crlc4519.crl\", issuer = \"tls/level1c.pem\" }]\n\
         crl_refresh = \"200ms\"\ncrl_refresh_jitter = \"0s\"\ncrl_refresh_margin = \"1h\"\ncrl_retry = \"100ms\"\n\
         crl_proxy = \"http://proxy.example:3128\"\ncrl_connect_timeout = \"2s\"\ncrl_read_timeout = \"3s\"\ncrl_max_bytes = 4096",
    );
    let config = parse_text(&text).unwrap_or_else(|e| panic!("{e}"));
    let crl = &config.server.crl;
    assert_eq!(crl[0], CrlSource::file(etc("tls/root.crl")));
    assert_eq!(crl[1].path, etc("tls/level1c.crl"));
    assert_eq!(crl[1].url.as_ref().map(|u| u.host.as_str()), Some("crl.nhs.uk"));
    assert_eq!(crl[1].issuer, Some(etc("tls/level1c.pem")));
    let r = &config.server.crl_refresh;
    assert_eq!(
        (r.interval, r.jitter, r.margin, r.retry),
        (
            Duration::from_millis(200),
            Duration::ZERO,
            secs(3600),
            Duration::from_millis(100)
        )
    );
    assert_eq!(
        r.proxy.as_ref().map(HttpUrl::authority).as_deref(),
        Some("proxy.example:3128")
    );
    assert_eq!(
        (r.connect_timeout, r.read_timeout, r.max_bytes),
        (secs(2), secs(3), 4096)
    );
}

#[test]
fn crl_refresh_errors_name_line_and_key() {
    let table = [
        (
            "crl = [{ url = \"http://a.example/x.crl\" }]",
            5,
            "server.crl[1].path",
            "missing required key",
        ),
        (
            "crl = [{ path = \"a.crl\", url = \"https://a.example/x.crl\" }]",
            5,
            "server.crl[1].url",
            "CRLs are signed",
        ),
        (
            "crl = [\"a.crl\",\n  { path = \"b.crl\", url = \"ldap://a.example/x\" }]",
            6,
            "server.crl[2].url",
            "http://",
        ),
        (
            "crl = [{ path = \"a.crl\", uri = \"http://a.example/x.crl\" }]",
            5,
            "server.crl[1].uri",
            "unknown key",
        ),
        (
            "crl = [{ path = \"\", url = \"http://a.example/x.crl\" }]",
            5,
            "server.crl[1].path",
            "must not be empty",
        ),
        ("crl = [7]", 5, "server.crl[1]", "a path or a table"),
        (
            "crl = []\ncrl_refresh = \"0s\"",
            6,
            "server.crl_refresh",
            "longer than zero",
        ),
        (
            "crl = []\ncrl_refresh = \"1 h\"",
            6,
            "server.crl_refresh",
            "expected a duration",
        ),
        (
            "crl = []\ncrl_refresh_jitter = \"x\"",
            6,
            "server.crl_refresh_jitter",
            "expected a duration",
        ),
        (
            "crl = []\ncrl_refresh_margin = \"-1s\"",
            6,
            "server.crl_refresh_margin",
            "expected a duration",
        ),
        (
            "crl = []\ncrl_retry = \"0ms\"",
            6,
            "server.crl_retry",
            "longer than zero",
        ),
        (
            "crl = []\ncrl_proxy = \"https://p.example:3128\"",
            6,
            "server.crl_proxy",
            "http://",
        ),
        (
            "crl = []\ncrl_proxy = \"http://p.example:3128/x\"",
            6,
            "server.crl_proxy",
            "forward proxy",
        ),
        (
            "crl = []\ncrl_connect_timeout = \"0s\"",
            6,
            "server.crl_connect_timeout",
            "longer than zero",
        ),
        (
            "crl = []\ncrl_read_timeout = \"0s\"",
            6,
            "server.crl_read_timeout",
            "longer than zero",
        ),
        (
            "crl = []\ncrl_max_bytes = 10",
            6,
            "server.crl_max_bytes",
            "at least 1024",
        ),
    ];
    for (edit, line, key, message) in table {
        let error = refused(&minimal_with("crl = [\"tls/level1c.crl\"]", edit));
        assert_error(&error, Some(line), key, message);
    }
}

// Paths: relative to the configuration file's folder.

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let text = minimal_with("\"tls/ssp.key\"", "\"/srv/keys/ssp.key\"")
        + "[audit]\ndir = \"audit\"\nkey = \"../keys/audit.key\"\n[transactions]\npath = \"tx.log\"\n";
    let config = parse_text(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.server.certificate, Path::new("/etc/ssp/tls/ssp.pem"));
    assert_eq!(config.server.private_key, Path::new("/srv/keys/ssp.key"));
    assert_eq!(config.server.crl, [CrlSource::file(etc("tls/level1c.crl"))]);
    assert_eq!(config.upstream.ca, Path::new("/etc/ssp/tls/nhs-ca.pem"));
    assert_eq!(config.audit.dir, Path::new("/etc/ssp/audit"));
    assert_eq!(
        config.audit.key.as_deref(),
        Some(Path::new("/etc/ssp/../keys/audit.key"))
    );
    assert_eq!(
        config.transactions.path.as_deref(),
        Some(Path::new("/etc/ssp/tx.log"))
    );

    // A bare file name means the current directory, as the shell would have it.
    let config = parse(MINIMAL, Path::new("ssp.toml")).unwrap();
    assert_eq!(config.server.certificate, Path::new("tls/ssp.pem"));
    assert_eq!(config.path, Path::new("ssp.toml"));
    let config = parse(MINIMAL, Path::new("conf/ssp.toml")).unwrap();
    assert_eq!(config.server.certificate, Path::new("conf/tls/ssp.pem"));
}

#[test]
fn empty_path_is_refused() {
    let error = refused(&minimal_with("\"tls/ssp.key\"", "\"\""));
    assert_error(&error, Some(3), "server.private_key", "must not be empty");
}

// Reading the file.

#[test]
fn load_reads_the_file_it_is_given() {
    let folder = std::env::temp_dir().join(format!("ssp-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&folder).unwrap();
    let file = folder.join("ssp.toml");
    std::fs::write(&file, MINIMAL).unwrap();
    let loaded = load(&file);
    std::fs::remove_dir_all(&folder).unwrap();
    let config = loaded.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.path, file);
    assert_eq!(config.server.certificate, folder.join("tls/ssp.pem"));
}

#[test]
fn unreadable_file_is_named_in_the_error() {
    let file = Path::new("/nonexistent/ssp/ssp.toml");
    let errors = load(file).unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
    let error = &errors.0[0];
    assert_eq!(
        (error.file.as_path(), error.line, error.key.as_deref()),
        (file, None, None)
    );
    assert!(
        error
            .to_string()
            .starts_with("/nonexistent/ssp/ssp.toml: cannot read"),
        "{error}"
    );
}

#[test]
fn packaged_example_parses_with_and_without_its_crl_table() {
    let text = include_str!("../../packaging/ssp.toml");
    let config = parse_text(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.server.crl_refresh.interval, secs(3600));
    let table = text
        .lines()
        .find_map(|l| l.strip_prefix("# crl = [{"))
        .expect("the commented CRL table");
    let uncommented = text.replacen("crl = [\"tls/level1c.crl\"]", &format!("crl = [{{{table}"), 1);
    let config = parse_text(&uncommented).unwrap_or_else(|e| panic!("{e}"));
    let crl = &config.server.crl[0];
    assert_eq!(crl.path, Path::new("/var/lib/ssp/level1c.crl"));
    assert_eq!(
        crl.url.as_ref().map(|u| u.path.as_str()),
        Some("/live/1c/crlc4519.crl")
    );
    assert_eq!(crl.issuer, Some(etc("tls/level1c.pem")));
}

#[test]
fn hsts_takes_a_max_age_or_nothing() {
    let with = |value: &str| {
        minimal_with(
            "crl = [\"tls/level1c.crl\"]",
            &format!("crl = [\"tls/level1c.crl\"]\nhsts = {value:?}"),
        )
    };
    assert_eq!(
        parse_text(MINIMAL).unwrap().server.hsts.as_deref(),
        Some("max-age=31536000"),
        "on by default"
    );
    let config = parse_text(&with("max-age=600; includeSubDomains")).unwrap();
    assert_eq!(
        config.server.hsts.as_deref(),
        Some("max-age=600; includeSubDomains")
    );
    assert_eq!(parse_text(&with("")).unwrap().server.hsts, None);
    for bad in [
        "600",
        "max-age=",
        "max-age=1y",
        "includeSubDomains",
        "max-age=1\r\nX: y",
    ] {
        assert_error(
            &refused(&with(bad)),
            Some(6),
            "server.hsts",
            "Strict-Transport-Security",
        );
    }
}

/// SDS's endpoint model: `endpoints`, one per MHS record, each with its interactions and CPA id.
#[test]
fn a_provider_may_list_an_endpoint_per_interaction() {
    let two = "endpoints = [\n  { url = \"https://gp.example.nhs.uk/A/STU3/1/gpconnect\", cpaid = \"S918999494042\", interactions = [\"urn:a\"] },\n  { url = \"https://gp.example.nhs.uk/A/STU3/1/structured\", interactions = [\"urn:b\", \"urn:c\"] },\n]";
    let single = "endpoint = \"https://pecs.example.nhs.uk/Prescription-Exemptions/1.0.0\"\ninteractions = [\"urn:x\"]";
    let config = parse_text(&minimal_with(single, two)).unwrap_or_else(|e| panic!("{e}"));
    let p = &config.providers[0];
    assert_eq!(p.interactions, ["urn:a", "urn:b", "urn:c"]);
    assert_eq!(p.endpoints.len(), 2);
    assert_eq!(p.endpoints[0].cpaid.as_deref(), Some("S918999494042"));
    assert_eq!(p.endpoints[1].url.path, "/A/STU3/1/structured");
    assert_eq!(p.endpoints[1].cpaid, None);
    let routes: Vec<(usize, &str)> = all_endpoints(&config.providers)
        .map(|(i, e)| (i, e.url.path.as_str()))
        .collect();
    assert_eq!(routes, [(0, "/A/STU3/1/gpconnect"), (0, "/A/STU3/1/structured")]);

    // The one `endpoint` takes a `cpaid` of its own.
    let config = parse_text(&minimal_with(single, &format!("{single}\ncpaid = \"S1\""))).unwrap();
    assert_eq!(config.providers[0].endpoints[0].cpaid.as_deref(), Some("S1"));

    let bad = |edit: &str| refused(&minimal_with(single, edit));
    let e = bad(
        "endpoints = [\n  { url = \"https://h/a\", interactions = [\"urn:a\"] },\n  { url = \"https://h/b\", interactions = [\"urn:b\", \"urn:a\"] },\n]",
    );
    assert_error(
        &e,
        Some(20),
        "provider[1].endpoints[2].interactions[2]",
        "already served by endpoints[1]",
    );
    let e = bad(&format!(
        "{single}\nendpoints = [{{ url = \"https://h/a\", interactions = [\"urn:a\"] }}]"
    ));
    assert_error(&e, Some(18), "provider[1].endpoint", "not both");
    let e = bad("endpoints = []");
    assert_error(&e, Some(18), "provider[1].endpoints", "must not be empty");
    let e = bad(
        "interactions = [\"urn:x\"]\nendpoints = [{ url = \"https://h/a\", interactions = [\"urn:a\"] }]",
    );
    assert_error(&e, Some(18), "provider[1].interactions", "in each endpoint");
    let e = bad("endpoints = [{ url = \"https://h/a\" }]");
    assert_error(
        &e,
        Some(18),
        "provider[1].endpoints[1].interactions",
        "missing required key",
    );
    let e = bad("endpoints = [{ url = \"https://h/a\", cpaid = \"S 1\", interactions = [\"urn:a\"] }]");
    assert_error(&e, Some(18), "provider[1].endpoints[1].cpaid", "SDS CPA id");
    let e = bad("interactions = [\"urn:x\"]");
    assert_error(&e, Some(16), "provider[1].endpoint", "missing required key");
}

// One pass, every problem.

#[test]
fn every_problem_is_reported_in_one_pass_in_file_order() {
    // Line numbers: MINIMAL's [server] is line 1; the additions follow it.
    let text = minimal_with(
        "[server]\n",
        "[server]\nworkers = 2000\ncrl_expired = \"never\"\n",
    ) + "[limits]\nheader_timeout = \"soon\"\n[admin]\nlisten = \"0.0.0.0:9901\"\n"
        + "[[consumer]]\nasid = \"x\"\nfqdn = \"b.example\"\ninteractions = [\"urn:x\"]\nproviders = []\n";
    let errors = parse_text(&text).expect_err("five problems").0;
    let keys: Vec<&str> = errors.iter().filter_map(|e| e.key.as_deref()).collect();
    assert_eq!(
        keys,
        [
            "server.workers",
            "server.crl_expired",
            "limits.header_timeout",
            "admin.listen",
            "consumer[2].asid"
        ],
        "{}",
        ConfigErrors(errors.clone(), None)
    );
    let lines: Vec<usize> = errors.iter().filter_map(|e| e.line).collect();
    assert!(lines.windows(2).all(|w| w[0] < w[1]), "{lines:?}");
}

#[test]
fn type_errors_name_the_kind_of_value_not_the_rust_type() {
    for (line, expected) in [
        ("workers = -1", "whole number"),
        ("workers = \"two\"", "whole number"),
        ("forwarded = \"yes\"", "true or false"),
    ] {
        let error = refused(&minimal_with("[server]\n", &format!("[server]\n{line}\n")));
        assert!(error.message.contains(expected), "{line}: {error}");
        for rust in ["usize", "u32", "u64", "f64", "boolean"] {
            assert!(!error.message.contains(rust), "{line}: {error}");
        }
    }
}

#[test]
fn a_non_loopback_admin_address_needs_allow_remote() {
    let error = refused(&format!("{MINIMAL}[admin]\nlisten = \"0.0.0.0:9901\"\n"));
    assert_error(&error, Some(21), "admin.listen", "not a loopback address");
    assert!(error.message.contains("allow_remote = true"), "{error}");
    let allowed = parse_text(&format!(
        "{MINIMAL}[admin]\nlisten = \"0.0.0.0:9901\"\nallow_remote = true\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(allowed.admin.allow_remote);
    for ip in ["127.0.0.1:1", "127.1.2.3:1", "[::1]:1", "[::ffff:127.0.0.1]:1"] {
        assert_eq!(admin_exposure(ip.parse().unwrap(), false), Ok(()), "{ip}");
    }
    for ip in ["0.0.0.0:1", "10.0.0.7:1", "[::]:1", "[::ffff:10.0.0.7]:1"] {
        assert!(admin_exposure(ip.parse().unwrap(), false).is_err(), "{ip}");
    }
}

// Issue 17 item 3: `[jwt]`.

#[test]
fn jwt_is_shape_only_by_default_and_takes_the_spec_example() {
    let shape = |scopes: &[(&str, &[&str])]| Jwt {
        mode: JwtMode::Shape,
        leeway: secs(60),
        bind_sender: false,
        scopes: scopes
            .iter()
            .map(|(urn, s)| (urn.to_string(), s.iter().map(|s| s.to_string()).collect()))
            .collect(),
    };
    assert_eq!(parse_text(MINIMAL).unwrap().jwt, shape(&[]));
    assert_eq!(
        parse_text(SPEC_EXAMPLE).unwrap().jwt,
        shape(&[(PECS_SEARCH, &["Prescription-Exemption/1.0.0/search"])])
    );
    let text = format!(
        "{MINIMAL}[jwt]\nmode = \"enforce\"\nleeway = \"0s\"\nbind_sender = true\n[jwt.scopes]\n\"urn:x\" = [\"a\", \"b c\"]\n"
    );
    let jwt = parse_text(&text).unwrap_or_else(|e| panic!("{e}")).jwt;
    assert_eq!(
        jwt,
        Jwt {
            mode: JwtMode::Enforce,
            leeway: secs(0),
            bind_sender: true,
            ..shape(&[("urn:x", &["a", "b c"])])
        }
    );
}

#[test]
fn jwt_errors_name_line_and_key() {
    // `[jwt]` is line 20, the first key under it 21.
    let jwt = |lines: &str| format!("{MINIMAL}[jwt]\n{lines}\n");
    let cases: [(&str, usize, &str, &str); 12] = [
        (
            "mode = \"strict\"",
            21,
            "jwt.mode",
            "expected \"shape\" or \"enforce\"",
        ),
        ("mode = true", 21, "jwt.mode", "expected \"shape\" or \"enforce\""),
        ("leeway = \"soon\"", 21, "jwt.leeway", "\"soon\""),
        ("leeway = 60", 21, "jwt.leeway", "expected a duration"),
        (
            "bind_sender = \"yes\"",
            21,
            "jwt.bind_sender",
            "expected true or false",
        ),
        ("scopes = [\"a\"]", 21, "jwt.scopes", "expected a table"),
        (
            "scopes = { \"urn:x\" = [] }",
            21,
            "jwt.scopes.\"urn:x\"",
            "expected a list",
        ),
        (
            "scopes = { \"urn:x\" = \"a\" }",
            21,
            "jwt.scopes.\"urn:x\"",
            "expected a list",
        ),
        (
            "scopes = { \"urn:x\" = [\"a\", \"\"] }",
            21,
            "jwt.scopes.\"urn:x\"",
            "not empty",
        ),
        (
            "[jwt.scopes]\n\"urn x\" = [\"a\"]",
            22,
            "jwt.scopes.\"urn x\"",
            "without spaces",
        ),
        ("strict = true", 21, "jwt.strict", "unknown key `strict`"),
        // Fail closed at load: under enforce, a served interaction with no allowed scope
        // would refuse every request for it.
        (
            "mode = \"enforce\"\nscopes = { \"urn:y\" = [\"a\"] }",
            22,
            "jwt.scopes",
            "none for \"urn:x\" (provider 200000000999 at line 16)",
        ),
    ];
    for (lines, line, key, message) in cases {
        assert_error(&refused(&jwt(lines)), Some(line), key, message);
    }
    // Without scopes, the complaint is at the line that says enforce.
    assert_error(
        &refused(&jwt("mode = \"enforce\"")),
        Some(21),
        "jwt.scopes",
        "urn:x",
    );
    assert_error(
        &refused(&format!("jwt = 3\n{MINIMAL}")),
        Some(1),
        "jwt",
        "expected a table",
    );
    // Shape needs no scopes, and may name interactions no provider serves.
    assert!(parse_text(&jwt("scopes = { \"urn:y\" = [\"a\"] }")).is_ok());
}

// [sds]: consumers and providers from an SDS export (issue 18).

const SDS_HEAD: &str = r#"[server]
certificate = "tls/ssp.pem"
private_key = "tls/ssp.key"
client_ca = "tls/nhs-ca.pem"
crl = []

[upstream]
ca = "tls/nhs-ca.pem"

[sds]
ldif = "sds.ldif"
"#;

/// Provider 200000000999 (one endpoint, CPA id) and consumers 200000000001 and 200000000002.
const SDS_EXPORT: &str = "\
dn: uniqueIdentifier=200000000999,ou=services,o=nhs
objectClass: nhsAs
uniqueIdentifier: 200000000999
nhsMhsPartyKey: P-1
nhsAsSvcIA: urn:x

dn: uniqueIdentifier=m1,ou=services,o=nhs
objectClass: nhsMhs
nhsMhsPartyKey: P-1
nhsMhsFQDN: pecs.example.nhs.uk
nhsMHSEndPoint: https://pecs.example.nhs.uk/Prescription-Exemptions/1.0.0
nhsMhsCPAId: S1
nhsMhsSvcIA: urn:x

dn: uniqueIdentifier=200000000001,ou=services,o=nhs
objectClass: nhsAs
uniqueIdentifier: 200000000001
nhsMhsPartyKey: C-1
nhsAsSvcIA: urn:x

dn: uniqueIdentifier=200000000002,ou=services,o=nhs
objectClass: nhsAs
uniqueIdentifier: 200000000002
nhsMhsPartyKey: C-1
nhsAsSvcIA: urn:x

dn: uniqueIdentifier=m2,ou=services,o=nhs
objectClass: nhsMhs
nhsMhsPartyKey: C-1
nhsMhsFQDN: Dispenser-A.example.nhs.uk
";

/// `text` validated with `ldif` as the bytes of any export it names.
fn with_export(text: &str, ldif: &str) -> Result<Config, ConfigErrors> {
    let source = Source::new(text, Path::new(FILE));
    let raw: raw::RawConfig = toml::from_str(text).map_err(|e| source.toml_error(&e))?;
    validate::validate(raw, &source, &|path| {
        Ok((path.to_path_buf(), ldif.as_bytes().to_vec()))
    })
}

#[test]
fn sds_consumers_and_providers_come_from_the_export_and_agreements_stay_local() {
    let text = format!(
        "{SDS_HEAD}\n[[consumer]]\nasid = \"200000000001\"\nproviders = [\"200000000999\"]\nrate = 5\n"
    );
    let c = with_export(&text, SDS_EXPORT).unwrap_or_else(|e| panic!("{e}"));
    let sds = c.sds.as_ref().expect("[sds]");
    assert_eq!(sds.ldif, etc("sds.ldif"));
    assert_eq!(sds.max_shrink, 0.10);
    assert_eq!(sds.asids, ["200000000999", "200000000001", "200000000002"]);
    assert_eq!((sds.records, sds.skipped), (5, 0));
    let consumers: Vec<(&str, &str, &[String], Option<f64>)> = c
        .consumers
        .iter()
        .map(|c| (c.asid.as_str(), c.fqdn.as_str(), c.providers.as_slice(), c.rate))
        .collect();
    let agreed = ["200000000999".to_string()];
    assert_eq!(
        consumers,
        [
            (
                "200000000001",
                "dispenser-a.example.nhs.uk",
                &agreed[..],
                Some(5.0)
            ),
            // In the export without a local entry: known, but they can call nothing. A provider
            // whose AS record lists interactions is a consumer too (GP Connect: a provider's
            // interactions are on its AS record as well).
            ("200000000999", "pecs.example.nhs.uk", &[][..], None),
            ("200000000002", "dispenser-a.example.nhs.uk", &[][..], None),
        ]
    );
    assert_eq!(c.consumers[0].interactions, ["urn:x"]);
    assert_eq!(c.providers.len(), 1);
    assert_eq!(c.providers[0].asid, "200000000999");
    assert_eq!(c.providers[0].endpoints[0].cpaid.as_deref(), Some("S1"));
    assert_eq!(c.providers[0].interactions, ["urn:x"]);
    assert_eq!(c.providers[0].line, 1, "the AS record's line in the export");
}

#[test]
fn sds_local_entries_override_the_export_per_asid() {
    let text = format!(
        "{SDS_HEAD}\n[[consumer]]\nasid = \"200000000002\"\nfqdn = \"other.example.nhs.uk\"\ninteractions = [\"urn:y\"]\nproviders = []\n\n\
         [[provider]]\nasid = \"200000000999\"\nconnect = \"10.0.0.7:443\"\nmax_in_flight = 3\n\n\
         [[provider]]\nasid = \"200000000777\"\nendpoint = \"https://local.example.nhs.uk/api\"\ninteractions = [\"urn:y\"]\n"
    );
    let c = with_export(&text, SDS_EXPORT).unwrap_or_else(|e| panic!("{e}"));
    let b = c.consumers.iter().find(|c| c.asid == "200000000002").unwrap();
    assert_eq!(
        (b.fqdn.as_str(), b.interactions.as_slice()),
        ("other.example.nhs.uk", &["urn:y".to_string()][..])
    );
    let p = c.providers.iter().find(|p| p.asid == "200000000999").unwrap();
    // `connect` and `max_in_flight` are local, the endpoints the export's.
    assert_eq!(p.connect, ["10.0.0.7:443".parse::<SocketAddr>().unwrap()]);
    assert_eq!(p.max_in_flight, Some(3));
    assert_eq!(
        p.endpoints[0].url.url,
        "https://pecs.example.nhs.uk/Prescription-Exemptions/1.0.0"
    );
    assert_eq!(c.providers.len(), 2);
    assert_eq!(c.consumers.len(), 3);
}

#[test]
fn sds_a_short_local_entry_whose_asid_is_not_in_the_export_is_refused_at_its_line() {
    let text = format!("{SDS_HEAD}\n[[consumer]]\nasid = \"200000000003\"\nproviders = []\n");
    let errors = with_export(&text, SDS_EXPORT).expect_err("refused");
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert_error(
        &errors.0[0],
        Some(13),
        "consumer[1].fqdn",
        "the SDS export has no consumer 200000000003",
    );
    let text = format!("{SDS_HEAD}\n[[consumer]]\nasid = \"200000000001\"\nproviders = [\"200000000555\"]\n");
    let errors = with_export(&text, SDS_EXPORT).expect_err("refused");
    assert_error(
        &errors.0[0],
        Some(15),
        "consumer[1].providers[1]",
        "no [[provider]] has the ASID",
    );
}

#[test]
fn sds_an_export_that_does_not_parse_is_refused_with_its_own_file_and_lines() {
    let errors = with_export(
        SDS_HEAD,
        "dn: cn=a\nobjectClass: nhsAs\nbroken\n\ndn: cn=b\nx:: !!\n",
    )
    .expect_err("refused");
    let shown: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 2, "{errors}");
    assert!(
        shown[0].starts_with("/etc/ssp/sds.ldif:3: SDS export: expected `name: value`"),
        "{}",
        shown[0]
    );
    assert!(
        shown[1].starts_with("/etc/ssp/sds.ldif:6: SDS export: the base64 value"),
        "{}",
        shown[1]
    );
}

#[test]
fn sds_an_empty_export_is_refused_so_an_outage_cannot_empty_the_allowlist() {
    for empty in ["", "# nothing\n", "dn: cn=x\nobjectClass: person\n"] {
        let errors = with_export(SDS_HEAD, empty).expect_err("refused");
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert_error(
            &errors.0[0],
            Some(11),
            "sds.ldif",
            "yields no consumer and no provider",
        );
    }
}

#[test]
fn sds_keys_are_checked() {
    let text = SDS_HEAD.replace(
        "ldif = \"sds.ldif\"",
        "ldif = \"sds.ldif\"\nmax_shrink = 1.5\ninteractions = []",
    );
    let errors = with_export(&text, SDS_EXPORT).expect_err("refused");
    assert_error(&errors.0[0], Some(12), "sds.max_shrink", "between 0 and 1");
    assert_error(&errors.0[1], Some(13), "sds.interactions", "must not be empty");
    let text = SDS_HEAD.replace("ldif = \"sds.ldif\"", "ldfi = \"sds.ldif\"");
    let errors = with_export(&text, SDS_EXPORT).expect_err("refused");
    assert_error(&errors.0[0], Some(10), "sds.ldif", "missing required key");
    assert_error(&errors.0[1], Some(11), "sds.ldfi", "unknown key");
    let text = SDS_HEAD.replace(
        "ldif = \"sds.ldif\"",
        "ldif = 7\nmax_shrink = 1\ninteractions = [\"urn:a\", \"with space\"]",
    );
    let errors = with_export(&text, SDS_EXPORT).expect_err("refused");
    assert_eq!(errors.0.len(), 2, "{errors}");
    assert_error(&errors.0[0], Some(11), "sds.ldif", "expected a path");
    let text = SDS_HEAD.replace(
        "ldif = \"sds.ldif\"",
        "ldif = \"sds.ldif\"\nmax_shrink = 1\ninteractions = [\"urn:x\", \"with space\"]",
    );
    let errors = with_export(&text, SDS_EXPORT).expect_err("refused");
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert_error(&errors.0[0], Some(13), "sds.interactions[2]", "without spaces");
    let errors = parse_text(SDS_HEAD).expect_err("parse reads no export");
    assert_error(&errors.0[0], Some(11), "sds.ldif", "cannot read the SDS export");
}

#[test]
fn sds_the_interactions_filter_narrows_the_export() {
    let text = SDS_HEAD.replace(
        "ldif = \"sds.ldif\"",
        "ldif = \"sds.ldif\"\ninteractions = [\"urn:x\"]",
    );
    let c = with_export(
        &text,
        &SDS_EXPORT.replace(
            "nhsAsSvcIA: urn:x\n\ndn: uniqueIdentifier=200000000002",
            "nhsAsSvcIA: urn:z\n\ndn: uniqueIdentifier=200000000002",
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.sds.as_ref().unwrap().skipped, 1);
    assert!(
        c.consumers.iter().all(|c| c.asid != "200000000001"),
        "{:?}",
        c.consumers
    );
}
