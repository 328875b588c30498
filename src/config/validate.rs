//! From the file as written (`raw`) to a checked `Config`: defaults, value checks, paths, and
//! the checks that span entries (unique ASIDs, agreements naming known providers).

use std::collections::hash_map::{Entry, HashMap};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Display;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::endpoint::{Endpoint, HttpUrl, is_dns_name};
use super::error::{ConfigError, ConfigErrors, Source};
use super::raw::{self, Field, List};
use super::{
    Admin, Audit, AuditSync, ClockUnsynced, Config, Consumer, CrlCheck, CrlExpired, CrlRefresh, CrlSource,
    Jwt, JwtMode, Limits, Provider, ProviderEndpoint, Sds, Server, Throttle, Transactions, Upstream,
    parse_duration,
};
use crate::sds::{self, Export};

/// Reads the SDS export `[sds] ldif` names: the path it read (`ssp check --sds` reads another)
/// and the bytes.
pub(super) type ReadExport<'a> = &'a dyn Fn(&Path) -> std::io::Result<(PathBuf, Vec<u8>)>;

const DEFAULT_AUDIT_DIR: &str = "/var/log/ssp";
const DEFAULT_AUDIT_KEY: &str = "/var/lib/ssp/audit.key";
const DEFAULT_TRANSACTIONS_LOG: &str = "/var/log/ssp/transactions.log";
const SUBJECT_ATTRIBUTES: [&str; 7] = ["CN", "O", "OU", "C", "L", "ST", "DC"];

/// Checks every section and entry, noting each problem and carrying on, so that one pass
/// reports them all (within one table, a missing or malformed required key still stops that
/// table: what follows may depend on it).
pub(super) fn validate(
    raw: raw::RawConfig,
    src: &Source<'_>,
    read_export: ReadExport<'_>,
) -> Result<Config, ConfigErrors> {
    let server = src.keep(server(src, raw.server));
    let upstream = src.keep(upstream(src, raw.upstream));
    let limits = src.keep(limits(src, raw.limits));
    let throttle = src.keep(throttle(src, raw.throttle));
    let audit = src.keep(audit(src, raw.audit));
    let transactions = src.keep(transactions(src, raw.transactions));
    let admin = src.keep(admin(src, raw.admin));
    let sds_given = raw.sds.is_some();
    let sds = src.keep(sds_export(src, sds_given, read_export)).flatten();
    let export = sds.as_ref().map(|(_, export)| export);
    // Consumers' agreements must name providers: any ASID a [[provider]] gives, so that a
    // provider entry with a problem elsewhere is reported once, not again by each agreement;
    // and with [sds], any provider of the export.
    let mut provider_asids: HashSet<String> = raw
        .provider
        .iter()
        .filter_map(|p| p.get_ref().asid.as_ref().map(|a| a.get_ref().clone()))
        .collect();
    provider_asids.extend(
        export
            .iter()
            .flat_map(|e| e.providers.iter().map(|p| p.asid.clone())),
    );
    // An [sds] export that did not load leaves the entries that lean on it unchecked: its
    // problems come first.
    let (providers, consumers) = match (sds_given, export) {
        (true, None) => (None, None),
        _ => (
            src.keep(providers(src, raw.provider, export)),
            src.keep(consumers(src, raw.consumer, &provider_asids, export)),
        ),
    };
    let sds = sds.map(|(sds, _)| sds);
    let jwt = providers
        .as_ref()
        .and_then(|providers| src.keep(jwt(src, raw.jwt.is_some(), providers)));
    let config = match (
        server,
        upstream,
        limits,
        throttle,
        audit,
        transactions,
        admin,
        providers,
        consumers,
        jwt,
    ) {
        (
            Some(server),
            Some(upstream),
            Some(limits),
            Some(throttle),
            Some(audit),
            Some(transactions),
            Some(admin),
            Some(providers),
            Some(consumers),
            Some(jwt),
        ) => Some(Config {
            path: src.file.to_path_buf(),
            sha256: Sha256::digest(src.text.as_bytes()).into(),
            server,
            upstream,
            limits,
            throttle,
            audit,
            transactions,
            admin,
            jwt,
            consumers,
            providers,
            sds,
        }),
        _ => None,
    };
    match (src.finish(), config) {
        (problems, Some(config)) if problems.is_empty() => Ok(config),
        (problems, config) => Err(ConfigErrors(problems, config.map(Box::new))),
    }
}

fn server(src: &Source<'_>, raw: Field<raw::RawServer>) -> Result<Server, ConfigError> {
    let (t, s) = Table::open(src, "server", raw);
    let mut listening = HashSet::new();
    Ok(Server {
        listen: t
            .list(s.listen, "listen", Empty::Refused, |text| {
                let addr = socket_addr(text)?;
                if listening.insert(addr) {
                    Ok(addr)
                } else {
                    Err(format!("{addr} is listed twice"))
                }
            })?
            .unwrap_or_else(|| vec![SocketAddr::from(([0, 0, 0, 0], 443))]),
        workers: t.or(s.workers, "workers", 0, at_most(1024))?,
        certificate: t.required(s.certificate, "certificate", |p| src.path(p))?,
        private_key: t.required(s.private_key, "private_key", |p| src.path(p))?,
        client_ca: t.required(s.client_ca, "client_ca", |p| src.path(p))?,
        // No default: revocation checking must not be switched off by forgetting a line.
        crl: crls(&t, s.crl)?.ok_or_else(|| {
            t.missing(
                "crl",
                "missing required key; write `crl = []` to run without revocation checks",
            )
        })?,
        crl_expired: t.or(
            s.crl_expired,
            "crl_expired",
            CrlExpired::Deny,
            choice(&[("deny", CrlExpired::Deny), ("allow", CrlExpired::Allow)]),
        )?,
        crl_check: t.or(
            s.crl_check,
            "crl_check",
            CrlCheck::Leaf,
            choice(&[("leaf", CrlCheck::Leaf), ("chain", CrlCheck::Chain)]),
        )?,
        crl_refresh: CrlRefresh {
            interval: t.or(s.crl_refresh, "crl_refresh", secs(3600), positive_duration)?,
            jitter: t.or(s.crl_refresh_jitter, "crl_refresh_jitter", secs(300), duration)?,
            margin: t.or(
                s.crl_refresh_margin,
                "crl_refresh_margin",
                secs(4 * 3600),
                duration,
            )?,
            retry: t.or(s.crl_retry, "crl_retry", secs(300), positive_duration)?,
            proxy: t.or(s.crl_proxy, "crl_proxy", None, |text| {
                if text.is_empty() {
                    return Ok(None);
                }
                match HttpUrl::parse(&text)? {
                    url if url.path.is_empty() || url.path == "/" => Ok(Some(url)),
                    _ => Err(format!(
                        "expected a forward proxy such as \"http://proxy.example:3128\", found {text:?}"
                    )),
                }
            })?,
            connect_timeout: t.or(
                s.crl_connect_timeout,
                "crl_connect_timeout",
                secs(10),
                positive_duration,
            )?,
            read_timeout: t.or(
                s.crl_read_timeout,
                "crl_read_timeout",
                secs(30),
                positive_duration,
            )?,
            max_bytes: t.or(s.crl_max_bytes, "crl_max_bytes", 16 << 20, at_least(1024))?,
        },
        client_subject: client_subject(&t, s.client_subject)?,
        forwarded: t.or(s.forwarded, "forwarded", true, Ok)?,
        require_jwt: t.or(s.require_jwt, "require_jwt", true, Ok)?,
        clock_unsynced: t.or(
            s.clock_unsynced,
            "clock_unsynced",
            ClockUnsynced::Warn,
            choice(&[("warn", ClockUnsynced::Warn), ("deny", ClockUnsynced::Deny)]),
        )?,
        hsts: t.or(s.hsts, "hsts", Some(DEFAULT_HSTS.to_string()), hsts)?,
        proxy_protocol: t.or(s.proxy_protocol, "proxy_protocol", false, Ok)?,
        stop_delay: t.or(s.stop_delay, "stop_delay", secs(5), duration)?,
    })
}

/// `crl`: plain paths and `{ path, url, issuer }` tables, mixed as the operator likes.
fn crls(t: &Table<'_>, raw: List<raw::RawCrl>) -> Result<Option<Vec<CrlSource>>, ConfigError> {
    let Some(list) = raw else { return Ok(None) };
    let mut out = Vec::with_capacity(list.get_ref().len());
    for (i, item) in list.into_inner().into_iter().enumerate() {
        let key = format!("crl[{}]", i + 1);
        let span = item.span();
        let source = match item.into_inner() {
            raw::RawCrl::Path(p) => CrlSource::file(t.value(Spanned::new(span, p), &key, |p| t.src.path(p))?),
            raw::RawCrl::Entry(e) => {
                let path = e.path.ok_or_else(|| {
                    t.src.error(
                        Some(span.clone()),
                        Some(format!("{}.{key}.path", t.name)),
                        "missing required key",
                    )
                })?;
                CrlSource {
                    path: t.value(path, &format!("{key}.path"), |p| t.src.path(p))?,
                    url: t.optional(e.url, &format!("{key}.url"), |u| HttpUrl::parse(&u))?,
                    issuer: t.optional(e.issuer, &format!("{key}.issuer"), |p| t.src.path(p))?,
                }
            }
        };
        out.push(source);
    }
    Ok(Some(out))
}

type RawSubject = BTreeMap<Spanned<String>, Spanned<String>>;

fn client_subject(t: &Table<'_>, raw: Field<RawSubject>) -> Result<Vec<(String, String)>, ConfigError> {
    let Some(attributes) = raw else {
        return Ok(vec![("O".into(), "nhs".into()), ("OU".into(), "Devices".into())]);
    };
    attributes
        .into_inner()
        .into_iter()
        .map(|(name, value)| {
            let key = format!("client_subject.{}", name.get_ref());
            let name = t.value(name, &key, |name| {
                if SUBJECT_ATTRIBUTES.contains(&name.as_str()) {
                    Ok(name)
                } else {
                    Err(format!(
                        "expected one of the attributes {}, found {name:?}",
                        SUBJECT_ATTRIBUTES.join(", ")
                    ))
                }
            })?;
            let value = t.value(value, &key, non_empty)?;
            Ok((name, value))
        })
        .collect()
}

fn upstream(src: &Source<'_>, raw: Field<raw::RawUpstream>) -> Result<Upstream, ConfigError> {
    let (t, u) = Table::open(src, "upstream", raw);
    Ok(Upstream {
        ca: t.required(u.ca, "ca", |p| src.path(p))?,
        connect_timeout: t.or(u.connect_timeout, "connect_timeout", secs(5), positive_duration)?,
        response_timeout: t.or(
            u.response_timeout,
            "response_timeout",
            secs(30),
            positive_duration,
        )?,
        pool_idle_timeout: t.or(u.pool_idle_timeout, "pool_idle_timeout", secs(60), duration)?,
        pool_max_idle: t.optional(u.pool_max_idle, "pool_max_idle", Ok)?,
    })
}

fn limits(src: &Source<'_>, raw: Field<raw::RawLimits>) -> Result<Limits, ConfigError> {
    let (t, l) = Table::open(src, "limits", raw);
    Ok(Limits {
        max_connections: t.or(l.max_connections, "max_connections", 10_000, at_least(1))?,
        max_header_bytes: t.or(
            l.max_header_bytes,
            "max_header_bytes",
            32_768,
            between(1024, 1_048_576),
        )?,
        max_body_bytes: t.or(l.max_body_bytes, "max_body_bytes", 10_485_760, Ok)?,
        header_timeout: t.or(l.header_timeout, "header_timeout", secs(10), positive_duration)?,
        idle_timeout: t.or(l.idle_timeout, "idle_timeout", secs(60), positive_duration)?,
        drain_timeout: t.or(l.drain_timeout, "drain_timeout", secs(30), duration)?,
        refused_handshakes: t.or(l.refused_handshakes, "refused_handshakes", 20, Ok)?,
        refusals: t.or(l.refusals, "refusals", 20, Ok)?,
        min_upload_rate: t.or(l.min_upload_rate, "min_upload_rate", 1024, Ok)?,
        methods: t
            .list(l.methods, "methods", Empty::Refused, method)?
            .unwrap_or_else(|| vec!["GET".into(), "POST".into(), "PUT".into()]),
    })
}

fn throttle(src: &Source<'_>, raw: Field<raw::RawThrottle>) -> Result<Throttle, ConfigError> {
    let (t, th) = Table::open(src, "throttle", raw);
    Ok(Throttle {
        rate: t.or(th.rate, "rate", 20.0, rate)?,
        burst: t.or(th.burst, "burst", 40, at_least(1))?,
        max_in_flight: t.or(th.max_in_flight, "max_in_flight", 64, at_least(1))?,
        consumer_share: t.or(th.consumer_share, "consumer_share", 0.5, share)?,
    })
}

fn audit(src: &Source<'_>, raw: Field<raw::RawAudit>) -> Result<Audit, ConfigError> {
    let (t, a) = Table::open(src, "audit", raw);
    let key = t.or(a.key, "key", PathBuf::from(DEFAULT_AUDIT_KEY), |p| {
        Ok(if p.is_empty() {
            PathBuf::from(DEFAULT_AUDIT_KEY)
        } else {
            src.resolve(&p)
        })
    })?;
    // Sealing is on unless switched off in so many words; ssp warns loudly when it is off.
    let sealed = t.or(a.sealed, "sealed", true, Ok)?;
    Ok(Audit {
        dir: t.or(a.dir, "dir", PathBuf::from(DEFAULT_AUDIT_DIR), |p| src.path(p))?,
        key: sealed.then_some(key),
        sync: t.or(
            a.sync,
            "sync",
            AuditSync::Batch,
            choice(&[
                ("always", AuditSync::Always),
                ("batch", AuditSync::Batch),
                ("off", AuditSync::Off),
            ]),
        )?,
        rotate_bytes: t.or(a.rotate_bytes, "rotate_bytes", 67_108_864, at_least(1))?,
        seal_interval: t.or(a.seal_interval, "seal_interval", secs(60), positive_duration)?,
    })
}

fn transactions(src: &Source<'_>, raw: Field<raw::RawTransactions>) -> Result<Transactions, ConfigError> {
    let (t, x) = Table::open(src, "transactions", raw);
    let default = Some(PathBuf::from(DEFAULT_TRANSACTIONS_LOG));
    Ok(Transactions {
        path: t.or(x.path, "path", default, |p| {
            Ok((!p.is_empty()).then(|| src.resolve(&p)))
        })?,
    })
}

fn admin(src: &Source<'_>, raw: Field<raw::RawAdmin>) -> Result<Admin, ConfigError> {
    let (t, a) = Table::open(src, "admin", raw);
    let default = Some(SocketAddr::from(([127, 0, 0, 1], 9901)));
    let listen_span = a.listen.as_ref().map(Spanned::span);
    let admin = Admin {
        listen: t.or(a.listen, "listen", default, |s| {
            if s.is_empty() {
                Ok(None)
            } else {
                socket_addr(s).map(Some)
            }
        })?,
        allow_remote: t.or(a.allow_remote, "allow_remote", false, Ok)?,
    };
    if let Some(listen) = admin.listen
        && let Err(message) = super::admin_exposure(listen, admin.allow_remote)
    {
        src.note(src.error(listen_span, Some("admin.listen".into()), message));
    }
    Ok(admin)
}

/// Every entry that checks out; each one that does not is noted, and checking goes on with the
/// next.
fn providers(
    src: &Source<'_>,
    raw: Vec<Spanned<raw::RawProvider>>,
    export: Option<&Export>,
) -> Result<Vec<Provider>, ConfigError> {
    let none = Vec::new();
    let exported = export.map_or(&none, |e| &e.providers);
    let position = sds::index(exported.iter().map(|p| &p.asid));
    if raw.is_empty() && exported.is_empty() {
        return Err(src.error(
            None,
            Some("provider".into()),
            "at least one [[provider]] is required",
        ));
    }
    let mut first_lines = HashMap::new();
    let mut providers = Vec::with_capacity(raw.len());
    for (i, entry) in raw.into_iter().enumerate() {
        let line = src.line(entry.span().start);
        let (t, p) = Table::open(src, format!("provider[{}]", i + 1), Some(entry));
        let provider = (|| {
            let asid = t.required(p.asid, "asid", |s| {
                unique_asid(s, &mut first_lines, line, "provider")
            })?;
            let endpoints = match (p.endpoint, p.endpoints) {
                (Some(url), None) => vec![ProviderEndpoint {
                    url: t.value(url, "endpoint", |s| Endpoint::parse(&s))?,
                    cpaid: t.optional(p.cpaid, "cpaid", cpaid)?,
                    interactions: t.required_list(
                        p.interactions,
                        "interactions",
                        Empty::Refused,
                        interaction,
                    )?,
                }],
                (None, Some(list)) => {
                    // With `endpoints`, interactions and CPA ids belong to each endpoint.
                    for (stray, key) in [
                        (p.interactions.map(|l| l.span()), "interactions"),
                        (p.cpaid.map(|c| c.span()), "cpaid"),
                    ] {
                        if let Some(span) = stray {
                            return Err(t.src.error(
                                Some(span),
                                Some(format!("{}.{key}", t.name)),
                                "with `endpoints`, give it in each endpoint instead",
                            ));
                        }
                    }
                    provider_endpoints(&t, list)?
                }
                (Some(url), Some(_)) => {
                    return Err(t.src.error(
                        Some(url.span()),
                        Some(format!("{}.endpoint", t.name)),
                        "give either `endpoint` (one service root) or `endpoints` (one per SDS MHS record), not both",
                    ));
                }
                // With [sds], the export's endpoints; `connect` and `max_in_flight` stay local.
                (None, None) => match (
                    sds::find(&position, &asid).map(|i| &exported[i]),
                    p.interactions,
                    p.cpaid,
                ) {
                    (Some(from_sds), None, None) => from_sds.endpoints.clone(),
                    (Some(_), Some(stray), _) => {
                        return Err(t.located(
                            stray.span(),
                            "interactions",
                            "give `endpoint` with them, or leave both to the SDS export".into(),
                        ));
                    }
                    (Some(_), None, Some(stray)) => {
                        return Err(t.located(
                            stray.span(),
                            "cpaid",
                            "give `endpoint` with it, or leave both to the SDS export".into(),
                        ));
                    }
                    (None, ..) if export.is_some() => {
                        return Err(t.missing(
                            "endpoint",
                            &format!(
                                "missing required key (or `endpoints`); the SDS export has no provider {asid}"
                            ),
                        ));
                    }
                    (None, ..) => return Err(t.missing("endpoint", "missing required key (or `endpoints`)")),
                },
            };
            let interactions = endpoints
                .iter()
                .flat_map(|e| e.interactions.iter().cloned())
                .collect();
            Ok(Provider {
                asid,
                endpoints,
                interactions,
                connect: t.or(p.connect, "connect", Vec::new(), socket_addrs)?,
                max_in_flight: t.optional(p.max_in_flight, "max_in_flight", at_least(1))?,
                line,
            })
        })();
        providers.extend(src.keep(provider));
    }
    // The export's providers that no [[provider]] overrides, in the export's order.
    for p in export.iter().flat_map(|e| e.providers.iter()) {
        if !first_lines.contains_key(&p.asid) {
            providers.push(Provider {
                asid: p.asid.clone(),
                endpoints: p.endpoints.clone(),
                interactions: p.interactions().cloned().collect(),
                connect: Vec::new(),
                max_in_flight: None,
                line: p.line,
            });
        }
    }
    Ok(providers)
}

/// A provider's `endpoints`: each with its URL and interactions, an interaction on one only.
fn provider_endpoints(
    t: &Table<'_>,
    list: Spanned<Vec<Spanned<raw::RawEndpoint>>>,
) -> Result<Vec<ProviderEndpoint>, ConfigError> {
    if list.get_ref().is_empty() {
        return Err(t.src.error(
            Some(list.span()),
            Some(format!("{}.endpoints", t.name)),
            "must not be empty",
        ));
    }
    let mut served_by: HashMap<String, usize> = HashMap::new();
    let mut endpoints = Vec::with_capacity(list.get_ref().len());
    for (j, entry) in list.into_inner().into_iter().enumerate() {
        let (e, raw) = Table::open(t.src, format!("{}.endpoints[{}]", t.name, j + 1), Some(entry));
        let url = e.required(raw.url, "url", |s| Endpoint::parse(&s))?;
        let cpaid = e.optional(raw.cpaid, "cpaid", cpaid)?;
        let interactions = e.required_list(raw.interactions, "interactions", Empty::Refused, |urn| {
            let urn = interaction(urn)?;
            match served_by.insert(urn.clone(), j + 1) {
                Some(other) if other != j + 1 => Err(format!(
                    "{urn:?} is already served by endpoints[{other}]: row 12 needs one endpoint per interaction"
                )),
                _ => Ok(urn),
            }
        })?;
        endpoints.push(ProviderEndpoint {
            url,
            cpaid,
            interactions,
        });
    }
    Ok(endpoints)
}

/// An SDS CPA id (`nhsMhsCPAId`, e.g. `S918999494042`): it is quoted in answers, so letters,
/// digits, `-` and `_` only.
pub(crate) fn cpaid(id: String) -> Result<String, String> {
    let fits = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if fits {
        Ok(id)
    } else {
        Err(format!(
            "must be an SDS CPA id (letters, digits, - and _, at most 64), found {id:?}"
        ))
    }
}

/// As `providers`; `known` holds the ASIDs the [[provider]] entries give.
fn consumers(
    src: &Source<'_>,
    raw: Vec<Spanned<raw::RawConsumer>>,
    known: &HashSet<String>,
    export: Option<&Export>,
) -> Result<Vec<Consumer>, ConfigError> {
    let none = Vec::new();
    let exported = export.map_or(&none, |e| &e.consumers);
    let position = sds::index(exported.iter().map(|c| &c.asid));
    if raw.is_empty() && exported.is_empty() {
        return Err(src.error(
            None,
            Some("consumer".into()),
            "at least one [[consumer]] is required",
        ));
    }
    let mut first_lines = HashMap::new();
    let mut consumers = Vec::with_capacity(raw.len());
    for (i, entry) in raw.into_iter().enumerate() {
        let line = src.line(entry.span().start);
        let (t, c) = Table::open(src, format!("consumer[{}]", i + 1), Some(entry));
        let consumer = (|| {
            let asid = t.required(c.asid, "asid", |s| {
                unique_asid(s, &mut first_lines, line, "consumer")
            })?;
            // With [sds], what the [[consumer]] leaves out comes from the export.
            let from_sds = sds::find(&position, &asid).map(|i| &exported[i]);
            let missing = |key: &str| match export {
                Some(_) => t.missing(
                    key,
                    &format!("missing required key; the SDS export has no consumer {asid}"),
                ),
                None => t.missing(key, "missing required key"),
            };
            let fqdn = match (t.optional(c.fqdn, "fqdn", fqdn)?, from_sds) {
                (Some(name), _) => name,
                (None, Some(sds)) => sds.fqdn.clone(),
                (None, None) => return Err(missing("fqdn")),
            };
            let interactions = match (
                t.list(c.interactions, "interactions", Empty::Refused, interaction)?,
                from_sds,
            ) {
                (Some(list), _) => list,
                (None, Some(sds)) => sds.interactions.clone(),
                (None, None) => return Err(missing("interactions")),
            };
            Ok(Consumer {
                asid,
                fqdn,
                interactions,
                providers: t.required_list(c.providers, "providers", Empty::Allowed, |asid| {
                    if known.contains(&asid) {
                        Ok(asid)
                    } else {
                        Err(format!("no [[provider]] has the ASID {asid:?}"))
                    }
                })?,
                rate: t.optional(c.rate, "rate", rate)?,
                burst: t.optional(c.burst, "burst", at_least(1))?,
                line,
            })
        })();
        consumers.extend(src.keep(consumer));
    }
    // The export's consumers without a [[consumer]]: known (row 9 passes) but with no
    // agreement, so they can call nothing (row 11): agreements are not in SDS.
    for c in export.iter().flat_map(|e| e.consumers.iter()) {
        if !first_lines.contains_key(&c.asid) {
            consumers.push(Consumer {
                asid: c.asid.clone(),
                fqdn: c.fqdn.clone(),
                interactions: c.interactions.clone(),
                providers: Vec::new(),
                rate: None,
                burst: None,
                line: c.line,
            });
        }
    }
    Ok(consumers)
}

/// `[sds]` as written: `ldif` (and the span to report the export's problems at).
struct SdsSettings {
    ldif: (PathBuf, Option<Range<usize>>),
    max_shrink: f64,
    interactions: Option<Vec<String>>,
}

/// `[sds]`, read from toml's own tree of the document as `[jwt]` is (serde's code for one more
/// table costs the static binary about 14 KiB). Every problem is noted; a missing or bad
/// `ldif` stops the table.
fn sds_settings(src: &Source<'_>) -> Result<SdsSettings, ConfigError> {
    let document = DeTable::parse(src.text).map_err(|e| src.toml_error(&e))?;
    let table = document.get_ref().get("sds");
    let span = table.map(Spanned::span);
    let Some(DeValue::Table(keys)) = table.map(Spanned::get_ref) else {
        return Err(src.error(span, Some("sds".into()), "expected a table"));
    };
    let mut settings = SdsSettings {
        ldif: (PathBuf::new(), None),
        max_shrink: 0.10,
        interactions: None,
    };
    let mut ldif = None;
    for (key, value) in keys {
        let name = key.get_ref();
        let at = |suffix: &str, span| src.error(Some(span), Some(format!("sds.{name}{suffix}")), "");
        let note = |suffix: &str, span, message: String| {
            src.note(ConfigError {
                message,
                ..at(suffix, span)
            });
        };
        match (name.as_ref(), value.get_ref()) {
            ("ldif", DeValue::String(path)) => match src.path(path.to_string()) {
                Ok(path) => ldif = Some((path, Some(value.span()))),
                Err(m) => {
                    return Err(ConfigError {
                        message: m,
                        ..at("", value.span())
                    });
                }
            },
            ("max_shrink", DeValue::Float(n)) => match n.as_str().replace('_', "").parse::<f64>() {
                Ok(share) if (0.0..=1.0).contains(&share) => settings.max_shrink = share,
                _ => note(
                    "",
                    value.span(),
                    format!("must be a share between 0 and 1 (0.10 is 10 %), found {n}"),
                ),
            },
            ("max_shrink", DeValue::Integer(n)) => match n.as_str() {
                "0" => settings.max_shrink = 0.0,
                "1" => settings.max_shrink = 1.0,
                _ => note(
                    "",
                    value.span(),
                    format!("must be a share between 0 and 1 (0.10 is 10 %), found {n}"),
                ),
            },
            ("interactions", DeValue::Array(list)) if list.is_empty() => {
                note("", value.span(), "must not be empty".into())
            }
            ("interactions", DeValue::Array(list)) => {
                let mut urns = Vec::new();
                for (i, item) in list.iter().enumerate() {
                    let urn = match item.get_ref() {
                        DeValue::String(urn) => interaction(urn.to_string()),
                        _ => Err("expected an interaction ID".to_string()),
                    };
                    match urn {
                        Ok(urn) => urns.push(urn),
                        Err(m) => note(&format!("[{}]", i + 1), item.span(), m),
                    }
                }
                settings.interactions = Some(urns);
            }
            ("ldif", _) => {
                return Err(ConfigError {
                    message: "expected a path".into(),
                    ..at("", value.span())
                });
            }
            ("max_shrink", _) => note("", value.span(), "expected a share such as 0.10".into()),
            ("interactions", _) => note("", value.span(), "expected a list of interaction IDs".into()),
            _ => note(
                "",
                key.span(),
                format!("unknown key `{name}`, expected `ldif`, `max_shrink` or `interactions`"),
            ),
        }
    }
    settings.ldif = ldif.ok_or_else(|| src.error(span, Some("sds.ldif".into()), "missing required key"))?;
    Ok(settings)
}

/// `[sds]`: reads and derives the export. An export that does not parse, or yields no consumer
/// and no provider, is refused whole (an LDAP outage must never empty the allowlist).
fn sds_export(
    src: &Source<'_>,
    present: bool,
    read: ReadExport<'_>,
) -> Result<Option<(Sds, Export)>, ConfigError> {
    if !present {
        return Ok(None);
    }
    let settings = sds_settings(src)?;
    let (ldif, at) = settings.ldif;
    let (max_shrink, interactions) = (settings.max_shrink, settings.interactions);
    let refuse = |message: String| src.error(at.clone(), Some("sds.ldif".into()), message);
    let (read_from, bytes) =
        read(&ldif).map_err(|e| refuse(format!("cannot read the SDS export {}: {e}", ldif.display())))?;
    let sha256 = Sha256::digest(&bytes).into();
    let parsed = sds::ldif::parse(&bytes);
    // Not held while the export is derived: a national export is tens of megabytes.
    drop(bytes);
    let entries = parsed.map_err(|mut errors| {
        let located = |e: sds::ldif::LdifError| ConfigError {
            file: read_from.clone(),
            line: Some(e.line),
            key: None,
            message: format!("SDS export: {}", e.message),
        };
        let last = errors.pop().map(located);
        for e in errors {
            src.note(located(e));
        }
        last.unwrap_or_else(|| refuse("the SDS export does not parse".into()))
    })?;
    let export = sds::derive(&entries, interactions.as_deref());
    let asids = export.asids();
    if asids.is_empty() {
        return Err(refuse(format!(
            "the SDS export {} yields no consumer and no provider ({} nhsAs/nhsMhs records, {} skipped): refused, so that an empty or failed export cannot empty the allowlist",
            read_from.display(),
            export.records,
            export.skipped.len()
        )));
    }
    let sds = Sds {
        ldif,
        max_shrink,
        interactions,
        sha256,
        asids,
        records: export.records,
        skipped: export.skipped.len(),
    };
    Ok(Some((sds, export)))
}

/// `[jwt]`, read from toml's own tree of the document (the one `ConfigError` walks for key
/// paths) rather than through serde: serde's code for this table and its table of lists took
/// 27 KiB of a binary at its size budget. Under enforce, every interaction a provider serves
/// needs its `scopes`: without them row 7 would refuse each of its requests, better said at load.
fn jwt(src: &Source<'_>, present: bool, providers: &[Provider]) -> Result<Jwt, ConfigError> {
    const EXPECTED: [(&str, &str); 4] = [
        ("mode", "\"shape\" or \"enforce\""),
        ("leeway", "a duration such as \"60s\""),
        ("bind_sender", "true or false"),
        (
            "scopes",
            "a table of interaction URN = [\"requested_scope\", ...]",
        ),
    ];
    let mut jwt = Jwt {
        mode: JwtMode::Shape,
        leeway: secs(60),
        bind_sender: false,
        scopes: BTreeMap::new(),
    };
    let document = match present {
        true => DeTable::parse(src.text).map_err(|e| src.toml_error(&e))?,
        false => return Ok(jwt),
    };
    let Some(table) = document.get_ref().get("jwt") else {
        return Ok(jwt);
    };
    let DeValue::Table(keys) = table.get_ref() else {
        return Err(src.error(Some(table.span()), Some("jwt".into()), "expected a table"));
    };
    // Where a missing scope is reported: the scopes, or else the line that says enforce.
    let mut at = None;
    for (key, value) in keys {
        let name = key.get_ref();
        let error = |message: &str| src.error(Some(value.span()), Some(format!("jwt.{name}")), message);
        match (name.as_ref(), value.get_ref()) {
            ("mode", DeValue::String(text)) => {
                let modes = choice(&[("shape", JwtMode::Shape), ("enforce", JwtMode::Enforce)]);
                jwt.mode = modes(text.to_string()).map_err(|m| error(&m))?;
                at = at.or(Some(value.span()));
            }
            ("leeway", DeValue::String(text)) => {
                jwt.leeway = duration(text.to_string()).map_err(|m| error(&m))?
            }
            ("bind_sender", DeValue::Boolean(on)) => jwt.bind_sender = *on,
            ("scopes", DeValue::Table(scopes)) => {
                jwt.scopes = scopes_in(src, scopes)?;
                at = Some(value.span());
            }
            _ => {
                return Err(match EXPECTED.iter().find(|(known, _)| known == name) {
                    Some((_, expected)) => error(&format!("expected {expected}")),
                    None => src.error(
                        Some(key.span()),
                        Some(format!("jwt.{name}")),
                        format!("unknown key `{name}`, expected `mode`, `leeway`, `bind_sender` or `scopes`"),
                    ),
                });
            }
        }
    }
    let unscoped = providers.iter().find_map(|p| {
        let urn = p.interactions.iter().find(|i| !jwt.scopes.contains_key(*i))?;
        Some((p, urn))
    });
    if let (JwtMode::Enforce, Some((p, urn))) = (jwt.mode, unscoped) {
        return Err(src.error(
            at,
            Some("jwt.scopes".into()),
            format!(
                "mode = \"enforce\" needs the requested_scope values allowed for every interaction a provider serves; none for {urn:?} (provider {} at line {})",
                p.asid, p.line
            ),
        ));
    }
    Ok(jwt)
}

/// `[jwt] scopes`: interaction URN -> the `requested_scope` values allowed, none empty.
fn scopes_in(src: &Source<'_>, table: &DeTable<'_>) -> Result<BTreeMap<String, Vec<String>>, ConfigError> {
    let mut scopes = BTreeMap::new();
    for (urn, values) in table {
        let key = Some(format!("jwt.scopes.\"{}\"", urn.get_ref()));
        let error = |span, message: &str| src.error(Some(span), key.clone(), message);
        let urn = interaction(urn.get_ref().to_string()).map_err(|m| error(urn.span(), &m))?;
        let list: &[_] = match values.get_ref() {
            DeValue::Array(list) => list,
            _ => &[],
        };
        let allowed = list.iter().map(|value| match value.get_ref() {
            DeValue::String(scope) if !scope.is_empty() => Ok(scope.to_string()),
            _ => Err(error(value.span(), "expected a requested_scope value, not empty")),
        });
        let allowed: Vec<String> = allowed.collect::<Result<_, _>>()?;
        if allowed.is_empty() {
            return Err(error(
                values.span(),
                "expected a list of the requested_scope values allowed",
            ));
        }
        scopes.insert(urn, allowed);
    }
    Ok(scopes)
}

/// One table of the file being checked. It knows its dotted name and where its header is, so
/// that each check only says what is wrong and the table says where.
struct Table<'a> {
    src: &'a Source<'a>,
    name: String,
    span: Option<Range<usize>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Empty {
    Allowed,
    Refused,
}

impl<'a> Table<'a> {
    /// An absent table reads as an empty one, so every key takes its default.
    fn open<T: Default>(src: &'a Source<'a>, name: impl Into<String>, raw: Field<T>) -> (Self, T) {
        let (span, content) = match raw {
            Some(table) => (Some(table.span()), table.into_inner()),
            None => (None, T::default()),
        };
        (
            Table {
                src,
                name: name.into(),
                span,
            },
            content,
        )
    }

    /// Runs `check` on a value; its complaint is reported at the value's line.
    fn value<T, U>(
        &self,
        value: Spanned<T>,
        field: &str,
        check: impl FnOnce(T) -> Result<U, String>,
    ) -> Result<U, ConfigError> {
        let span = value.span();
        check(value.into_inner()).map_err(|message| self.located(span, field, message))
    }

    /// Out of line: one copy, not one in each of the many instances of `value`.
    #[inline(never)]
    fn located(&self, span: Range<usize>, field: &str, message: String) -> ConfigError {
        self.src
            .error(Some(span), Some(format!("{}.{field}", self.name)), message)
    }

    fn optional<T, U>(
        &self,
        value: Field<T>,
        field: &str,
        check: impl FnOnce(T) -> Result<U, String>,
    ) -> Result<Option<U>, ConfigError> {
        value.map(|value| self.value(value, field, check)).transpose()
    }

    /// A key with a default: a bad value is noted and the default stands in for it, so the
    /// rest of the table is still checked (`validate` refuses the file in the end).
    fn or<T, U>(
        &self,
        value: Field<T>,
        field: &str,
        default: U,
        check: impl FnOnce(T) -> Result<U, String>,
    ) -> Result<U, ConfigError> {
        match self.optional(value, field, check) {
            Ok(value) => Ok(value.unwrap_or(default)),
            Err(e) => {
                self.src.note(e);
                Ok(default)
            }
        }
    }

    fn required<T, U>(
        &self,
        value: Field<T>,
        field: &str,
        check: impl FnOnce(T) -> Result<U, String>,
    ) -> Result<U, ConfigError> {
        self.optional(value, field, check)?
            .ok_or_else(|| self.missing(field, "missing required key"))
    }

    /// Reported at the table header, or without a line when the whole table is absent.
    #[inline(never)]
    fn missing(&self, field: &str, message: &str) -> ConfigError {
        self.src
            .error(self.span.clone(), Some(format!("{}.{field}", self.name)), message)
    }

    /// Checks each element; complaints name the element as `field[n]`, counting from 1.
    fn list<T, U>(
        &self,
        value: List<T>,
        field: &str,
        empty: Empty,
        mut check: impl FnMut(T) -> Result<U, String>,
    ) -> Result<Option<Vec<U>>, ConfigError> {
        let Some(list) = value else { return Ok(None) };
        if empty == Empty::Refused && list.get_ref().is_empty() {
            return Err(self.located(list.span(), field, "must not be empty".into()));
        }
        let items = list.into_inner().into_iter().enumerate();
        items
            .map(|(i, item)| self.value(item, &format!("{field}[{}]", i + 1), &mut check))
            .collect::<Result<_, _>>()
            .map(Some)
    }

    fn required_list<T, U>(
        &self,
        value: List<T>,
        field: &str,
        empty: Empty,
        check: impl FnMut(T) -> Result<U, String>,
    ) -> Result<Vec<U>, ConfigError> {
        self.list(value, field, empty, check)?
            .ok_or_else(|| self.missing(field, "missing required key"))
    }
}

// Checks of single values. Each returns the converted value or a message for the operator.

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn duration(text: String) -> Result<Duration, String> {
    parse_duration(&text)
}

fn positive_duration(text: String) -> Result<Duration, String> {
    match parse_duration(&text)? {
        d if d.is_zero() => Err(format!("must be longer than zero, found {text:?}")),
        d => Ok(d),
    }
}

fn at_least<N: PartialOrd + Display>(min: N) -> impl Fn(N) -> Result<N, String> {
    move |n| {
        if n >= min {
            Ok(n)
        } else {
            Err(format!("must be at least {min}, found {n}"))
        }
    }
}

fn at_most<N: PartialOrd + Display>(max: N) -> impl Fn(N) -> Result<N, String> {
    move |n| {
        if n <= max {
            Ok(n)
        } else {
            Err(format!("must be at most {max}, found {n}"))
        }
    }
}

fn between<N: PartialOrd + Display>(min: N, max: N) -> impl Fn(N) -> Result<N, String> {
    move |n| {
        if min <= n && n <= max {
            Ok(n)
        } else {
            Err(format!("must be between {min} and {max}, found {n}"))
        }
    }
}

/// One year, as the Spine SSP implementation guide's "HSTS SHALL be employed" is usually met.
const DEFAULT_HSTS: &str = "max-age=31536000";

/// RFC 6797 section 6.1: `max-age=<seconds>`, then optional `; includeSubDomains` and the like.
/// Empty: no header. The value goes on the wire as it is, so only visible ASCII and spaces.
fn hsts(value: String) -> Result<Option<String>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    let printable = value.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
    let max_age = value.split(';').map(str::trim).any(|d| {
        d.strip_prefix("max-age=")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    });
    if printable && max_age {
        Ok(Some(value))
    } else {
        Err(format!(
            "must be a Strict-Transport-Security value with max-age in seconds, e.g. \"{DEFAULT_HSTS}\", or \"\" for none; found {value:?}"
        ))
    }
}

fn share(s: f64) -> Result<f64, String> {
    if s > 0.0 && s <= 1.0 {
        Ok(s)
    } else {
        Err(format!("must be a fraction above 0 and at most 1, found {s}"))
    }
}

fn rate(r: f64) -> Result<f64, String> {
    // TOML allows `inf` and `nan`; neither is a rate a token bucket can use.
    if r.is_finite() && r > 0.0 {
        Ok(r)
    } else {
        Err(format!(
            "must be a number of requests per second above zero, found {r}"
        ))
    }
}

/// Maps a string onto one of `options`; the complaint lists them all.
fn choice<T: Copy + 'static>(options: &'static [(&'static str, T)]) -> impl Fn(String) -> Result<T, String> {
    move |text| {
        options
            .iter()
            .find(|(name, _)| *name == text)
            .map(|&(_, value)| value)
            .ok_or_else(|| not_a_choice(&options.iter().map(|(name, _)| *name).collect::<Vec<_>>(), &text))
    }
}

/// The complaint of `choice`, out of its many instances.
fn not_a_choice(names: &[&str], text: &str) -> String {
    let names: Vec<String> = names.iter().map(|name| format!("{name:?}")).collect();
    let expected = match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    format!("expected {expected}, found {text:?}")
}

fn socket_addr(text: String) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("expected an IP address and port such as \"0.0.0.0:443\", found {text:?}"))
}

/// Most addresses a provider's `connect` may list.
const MAX_CONNECT: usize = 16;

/// `connect`: one address, or several separated by commas as in `curl --resolve`.
fn socket_addrs(text: String) -> Result<Vec<SocketAddr>, String> {
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for part in text.split(',') {
        let addr = socket_addr(part.trim().to_string())?;
        if addrs.contains(&addr) {
            return Err(format!("lists {addr} twice"));
        }
        addrs.push(addr);
    }
    if addrs.len() > MAX_CONNECT {
        return Err(format!("lists {} addresses; at most {MAX_CONNECT}", addrs.len()));
    }
    Ok(addrs)
}

fn non_empty(text: String) -> Result<String, String> {
    if text.is_empty() {
        Err("must not be empty".to_string())
    } else {
        Ok(text)
    }
}

pub(crate) fn asid(text: String) -> Result<String, String> {
    if (1..=20).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit()) {
        Ok(text)
    } else {
        Err(format!("an ASID is 1 to 20 digits, found {text:?}"))
    }
}

/// ASIDs identify parties in every decision, so two entries with one ASID would make the
/// allowlist ambiguous. `first_lines` remembers where each was first seen.
fn unique_asid(
    text: String,
    first_lines: &mut HashMap<String, usize>,
    line: usize,
    kind: &str,
) -> Result<String, String> {
    match first_lines.entry(asid(text)?) {
        Entry::Occupied(first) => Err(format!(
            "duplicate {kind} ASID {}; the [[{kind}]] at line {} has it already",
            first.key(),
            first.get()
        )),
        Entry::Vacant(slot) => {
            let asid = slot.key().clone();
            slot.insert(line);
            Ok(asid)
        }
    }
}

/// Lowercased because certificate CNs are compared case-insensitively, as DNS names are.
pub(crate) fn fqdn(text: String) -> Result<String, String> {
    if is_dns_name(&text) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!(
            "expected a DNS name such as \"dispenser-a.example.nhs.uk\", found {text:?}"
        ))
    }
}

/// Interaction IDs are URNs matched against the `Ssp-InteractionID` header, whose value never
/// carries whitespace; one that does could never match.
pub(crate) fn interaction(text: String) -> Result<String, String> {
    if !text.is_empty() && !text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Ok(text)
    } else {
        Err(format!(
            "expected an interaction ID without spaces, found {text:?}"
        ))
    }
}

/// A request method is compared byte for byte, and methods are case-sensitive (RFC 9110 §9.1):
/// a lowercase `get` in the file would silently allow nothing.
fn method(text: String) -> Result<String, String> {
    let token = |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !text.is_empty() && text.bytes().all(token) {
        Ok(text)
    } else {
        Err(format!(
            "expected an uppercase HTTP method such as \"GET\", found {text:?}"
        ))
    }
}
